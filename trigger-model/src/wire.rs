//! The `trigger.v1` wire form of the domain model: conversion of the
//! protobuf messages into [`crate::model`] types and back.
//!
//! Conversion from the wire is where external input is checked: every
//! problem is a [`ValidationError`] naming the field
//! (`triggers[3].address.prefix_len`), which the adapter answers with
//! INVALID_ARGUMENT; nothing here panics. Enumerations unknown to this
//! build, and unspecified ones where a value is required, are errors.
//! Conversion to the wire cannot fail.
//!
//! Besides the gRPC adapter, the store uses this form for its rows (each
//! trigger's protobuf body and the enumerations' numbers in the columns),
//! and triggerctl to build requests and read answers.

use std::net::IpAddr;

use trigger_proto::v1 as pb;

use crate::{
    links::LinkTable,
    model::{
        Address, AddressFlag, Connectivity, DefaultRoute, Detail, FieldPath, Filter, Handover,
        Interface, InterfaceKind, LinkParameter, LinkParameterType, LinkState, LinkType,
        MAX_FILTER_ENTRIES, MAX_PARAMETERS, OperState, ParameterUnit, Reason, ReasonSpace, Resync,
        Source, Sub, Timestamp, Trigger, TriggerType, ValidationError, check_name, validation::sub,
    },
};

/// Implements the wire conversion of a domain enum and the proto enum of
/// the same name: checked from the wire's i32 (unspecified and unknown
/// values are errors), infallible back. Both matches are exhaustive, so a
/// value added on one side only does not compile.
macro_rules! wire_enum {
    ($name:ident { $($v:ident = $pv:ident),+ $(,)? }) => {
        impl $name {
            pub fn to_wire(self) -> i32 {
                (match self { $($name::$v => pb::$name::$pv),+ }) as i32
            }

            /// The wire value, checked: unknown and unspecified are errors.
            pub fn from_wire(value: i32, field: impl FieldPath) -> Result<Self, ValidationError> {
                match pb::$name::try_from(value) {
                    $(Ok(pb::$name::$pv) => Ok($name::$v),)+
                    Ok(pb::$name::Unspecified) => Err(ValidationError::new(field.path(), "must be set")),
                    Err(_) => Err(ValidationError::new(field.path(), format!("unknown value {value}"))),
                }
            }

            /// Like [`Self::from_wire`], but unspecified gives `None`.
            pub fn from_wire_opt(value: i32, field: impl FieldPath) -> Result<Option<Self>, ValidationError> {
                if value == 0 { Ok(None) } else { Self::from_wire(value, field).map(Some) }
            }
        }
    };
}

wire_enum! {
    TriggerType {
        IfAdded = IfAdded,
        IfRemoved = IfRemoved,
        IfRemovedSoon = IfRemovedsoon,
        IfAddrAdded = IfAddradded,
        IfAddrRemoved = IfAddrremoved,
        IfAddrChanged = IfAddrchanged,
        TunnelAdded = TunnelAdded,
        TunnelChanged = TunnelChanged,
        TunnelRemoved = TunnelRemoved,
        ConnEstablished = ConnEstablished,
        ConnLost = ConnLost,
        DestUnreachable = DestUnreachable,
        LinkDetected = LinkDetected,
        LinkUp = LinkUp,
        LinkDown = LinkDown,
        LinkGoingDown = LinkGoingDown,
        LinkParametersReport = LinkParametersReport,
        LinkHandoverImminent = LinkHandoverImminent,
        LinkHandoverComplete = LinkHandoverComplete,
        DefaultRouteAdded = DefaultRouteAdded,
        DefaultRouteRemoved = DefaultRouteRemoved,
        Resync = Resync,
    }
}

wire_enum! {
    Source {
        Rtnetlink = Rtnetlink,
        NetworkManager = Networkmanager,
        Client = Client,
        Ieee802_21 = Ieee80221,
        Threshold = Threshold,
        TriggerDb = TriggerDb,
    }
}

wire_enum! {
    InterfaceKind {
        Ethernet = Ethernet,
        Wlan = Wlan,
        Wwan = Wwan,
        Tunnel = Tunnel,
        Loopback = Loopback,
        Veth = Veth,
        Bridge = Bridge,
        Vlan = Vlan,
        Bond = Bond,
        Other = Other,
    }
}

wire_enum! {
    LinkType {
        Gsm = Gsm,
        Gprs = Gprs,
        Edge = Edge,
        Ethernet = Ethernet,
        WirelessOther = WirelessOther,
        Ieee802_11 = Ieee80211,
        Cdma2000 = Cdma2000,
        Umts = Umts,
        Cdma2000Hrpd = Cdma2000Hrpd,
        Ieee802_16 = Ieee80216,
        Ieee802_20 = Ieee80220,
        Ieee802_22 = Ieee80222,
        Lte = Lte,
    }
}

wire_enum! {
    ReasonSpace {
        LinkDown = LinkDown,
        LinkGoingDown = LinkGoingDown,
        NmDevice = NmDevice,
        NmActiveConnection = NmActiveConnection,
        TriggerDb = TriggerDb,
    }
}

wire_enum! {
    AddressFlag {
        Secondary = Secondary,
        NoDad = Nodad,
        Optimistic = Optimistic,
        DadFailed = Dadfailed,
        HomeAddress = Homeaddress,
        Deprecated = Deprecated,
        Tentative = Tentative,
        Permanent = Permanent,
        ManageTempAddr = Managetempaddr,
        NoPrefixRoute = Noprefixroute,
        McAutoJoin = Mcautojoin,
        StablePrivacy = StablePrivacy,
    }
}

wire_enum! {
    OperState {
        Unknown = Unknown,
        NotPresent = NotPresent,
        Down = Down,
        LowerLayerDown = LowerLayerDown,
        Testing = Testing,
        Dormant = Dormant,
        Up = Up,
    }
}

wire_enum! {
    LinkParameterType {
        DataRate = DataRate,
        SignalStrength = SignalStrength,
        Sinr = Sinr,
        Throughput = Throughput,
        PacketErrorRate = PacketErrorRate,
    }
}

wire_enum! {
    ParameterUnit {
        Dbm = Dbm,
        Percent = Percent,
        Db = Db,
        Kbps = Kbps,
    }
}

impl Timestamp {
    pub fn to_wire(self) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: self.0.div_euclid(1_000_000_000),
            nanos: self.0.rem_euclid(1_000_000_000) as i32,
        }
    }

    pub fn from_wire(ts: &prost_types::Timestamp, field: &str) -> Result<Self, ValidationError> {
        if !(0..1_000_000_000).contains(&ts.nanos) {
            return Err(ValidationError::new(
                field,
                format!("nanos {} out of range 0..1e9", ts.nanos),
            ));
        }
        ts.seconds
            .checked_mul(1_000_000_000)
            .and_then(|n| n.checked_add(i64::from(ts.nanos)))
            .filter(|n| *n >= 0)
            .map(Timestamp)
            .ok_or_else(|| ValidationError::new(field, "outside 1970..2262"))
    }
}

impl Interface {
    pub fn to_wire(&self) -> pb::Interface {
        pb::Interface {
            index: self.index,
            name: self.name.clone(),
            kind: self.kind.map_or(0, InterfaceKind::to_wire),
            driver_kind: self.driver_kind.clone(),
            link_type: self.link_type.map_or(0, LinkType::to_wire),
        }
    }

    pub fn from_wire(w: &pb::Interface, field: &str) -> Result<Self, ValidationError> {
        check_name(&w.name, Sub(field, "name"))?;
        if w.name.is_empty() && w.index == 0 {
            return Err(ValidationError::new(field, "needs a name or an index"));
        }
        if w.driver_kind.len() > 32 {
            return Err(ValidationError::new(
                sub(field, "driver_kind"),
                "longer than 32 bytes",
            ));
        }
        Ok(Self {
            index: w.index,
            name: w.name.clone(),
            kind: InterfaceKind::from_wire_opt(w.kind, Sub(field, "kind"))?,
            driver_kind: w.driver_kind.clone(),
            link_type: LinkType::from_wire_opt(w.link_type, Sub(field, "link_type"))?,
        })
    }
}

impl Address {
    pub fn to_wire(&self) -> pb::Address {
        pb::Address {
            address: self.address.to_string(),
            prefix_len: u32::from(self.prefix_len),
            family: match self.address {
                IpAddr::V4(_) => pb::AddressFamily::Ipv4,
                IpAddr::V6(_) => pb::AddressFamily::Ipv6,
            } as i32,
            flags: self.flags.iter().map(|f| f.to_wire()).collect(),
            valid_lifetime_s: self.valid_lifetime_s,
            preferred_lifetime_s: self.preferred_lifetime_s,
            scope: u32::from(self.scope),
        }
    }

    pub fn from_wire(w: &pb::Address, field: &str) -> Result<Self, ValidationError> {
        let address: IpAddr = w.address.parse().map_err(|_| {
            ValidationError::new(
                sub(field, "address"),
                format!("not an IP address: {:?}", w.address),
            )
        })?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        if w.prefix_len > max {
            return Err(ValidationError::new(
                sub(field, "prefix_len"),
                format!("{} exceeds {max}", w.prefix_len),
            ));
        }
        match pb::AddressFamily::try_from(w.family) {
            Ok(pb::AddressFamily::Unspecified) => {}
            Ok(pb::AddressFamily::Ipv4) if address.is_ipv4() => {}
            Ok(pb::AddressFamily::Ipv6) if address.is_ipv6() => {}
            Ok(_) => {
                return Err(ValidationError::new(
                    sub(field, "family"),
                    "does not match the address",
                ));
            }
            Err(_) => {
                return Err(ValidationError::new(
                    sub(field, "family"),
                    format!("unknown value {}", w.family),
                ));
            }
        }
        if w.scope > 255 {
            return Err(ValidationError::new(
                sub(field, "scope"),
                format!("{} exceeds 255", w.scope),
            ));
        }
        let flags = w
            .flags
            .iter()
            .enumerate()
            .map(|(i, f)| AddressFlag::from_wire(*f, format!("{field}.flags[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            address,
            prefix_len: w.prefix_len as u8,
            flags,
            valid_lifetime_s: w.valid_lifetime_s,
            preferred_lifetime_s: w.preferred_lifetime_s,
            scope: w.scope as u8,
        })
    }
}

impl Reason {
    pub fn to_wire(&self) -> pb::Reason {
        pb::Reason {
            space: self.space.to_wire(),
            code: self.code,
            name: self.name.clone(),
        }
    }

    pub fn from_wire(w: &pb::Reason, field: &str) -> Result<Self, ValidationError> {
        let space = ReasonSpace::from_wire(w.space, Sub(field, "space"))?;
        let ieee_max = space.code_book().map(|names| names.len() as u32);
        if let Some(max) = ieee_max
            && !(w.code < max || (128..=255).contains(&w.code))
        {
            return Err(ValidationError::new(
                sub(field, "code"),
                format!(
                    "{} is not a {space} reason (0..{} or vendor 128..255)",
                    w.code,
                    max - 1
                ),
            ));
        }
        if w.name.len() > 128 {
            return Err(ValidationError::new(
                sub(field, "name"),
                "longer than 128 bytes",
            ));
        }
        let mut r = Self {
            space,
            code: w.code,
            name: w.name.clone(),
        };
        if r.name.is_empty() && ieee_max.is_some() {
            r.name = Self::ieee(space, w.code).name;
        }
        Ok(r)
    }
}

impl LinkState {
    pub fn to_wire(&self) -> pb::LinkState {
        pb::LinkState {
            admin_up: self.admin_up,
            carrier: self.carrier,
            oper_state: self.oper_state.map_or(0, OperState::to_wire),
            mtu: self.mtu,
            mac: self.mac.clone(),
        }
    }

    pub fn from_wire(w: &pb::LinkState, field: &str) -> Result<Self, ValidationError> {
        if w.mac.len() > 64 {
            return Err(ValidationError::new(
                sub(field, "mac"),
                "longer than 64 bytes",
            ));
        }
        Ok(Self {
            admin_up: w.admin_up,
            carrier: w.carrier,
            oper_state: OperState::from_wire_opt(w.oper_state, Sub(field, "oper_state"))?,
            mtu: w.mtu,
            mac: w.mac.clone(),
        })
    }
}

impl LinkParameter {
    fn to_wire(&self) -> pb::LinkParameter {
        pb::LinkParameter {
            r#type: self.kind.to_wire(),
            value: self.value,
            unit: self.unit.map_or(0, ParameterUnit::to_wire),
            threshold_crossed: self.threshold_crossed,
        }
    }

    fn from_wire(w: &pb::LinkParameter, field: &str) -> Result<Self, ValidationError> {
        if !w.value.is_finite() {
            return Err(ValidationError::new(
                sub(field, "value"),
                "not a finite number",
            ));
        }
        if w.threshold_crossed.is_some_and(|t| !t.is_finite()) {
            return Err(ValidationError::new(
                sub(field, "threshold_crossed"),
                "not a finite number",
            ));
        }
        Ok(Self {
            kind: LinkParameterType::from_wire(w.r#type, Sub(field, "type"))?,
            value: w.value,
            unit: ParameterUnit::from_wire_opt(w.unit, Sub(field, "unit"))?,
            threshold_crossed: w.threshold_crossed,
        })
    }
}

/// An optional textual IP address: empty is `None`.
fn optional_ip(text: &str, field: &str) -> Result<Option<IpAddr>, ValidationError> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| ValidationError::new(field, format!("not an IP address: {text:?}")))
}

fn ip_text(ip: Option<IpAddr>) -> String {
    ip.map(|a| a.to_string()).unwrap_or_default()
}

impl Handover {
    fn to_wire(&self) -> pb::Handover {
        pb::Handover {
            old_link: Some(self.old_link.to_wire()),
            new_link: Some(self.new_link.to_wire()),
            old_local_address: ip_text(self.old_local_address),
            old_remote_address: ip_text(self.old_remote_address),
            new_local_address: ip_text(self.new_local_address),
            new_remote_address: ip_text(self.new_remote_address),
            duration_us: self.duration_us,
            move_reason: self.move_reason.clone(),
            cause_trigger_id: self.cause_trigger_id,
        }
    }

    /// `field` is the handover's own path (`triggers[0].handover`).
    fn from_wire(w: &pb::Handover, field: &str) -> Result<Self, ValidationError> {
        let link = |l: &Option<pb::Interface>, name: &str| {
            let f = sub(field, name);
            l.as_ref()
                .ok_or_else(|| ValidationError::new(&f, "is required"))
                .and_then(|l| Interface::from_wire(l, &f))
        };
        let ip = |text: &str, name: &str| optional_ip(text, &sub(field, name));
        let h = Self {
            old_link: link(&w.old_link, "old_link")?,
            new_link: link(&w.new_link, "new_link")?,
            old_local_address: ip(&w.old_local_address, "old_local_address")?,
            old_remote_address: ip(&w.old_remote_address, "old_remote_address")?,
            new_local_address: ip(&w.new_local_address, "new_local_address")?,
            new_remote_address: ip(&w.new_remote_address, "new_remote_address")?,
            duration_us: w.duration_us,
            move_reason: w.move_reason.clone(),
            cause_trigger_id: w.cause_trigger_id,
        };
        check_name(&h.move_reason, Sub(field, "move_reason"))?;
        // A pair is one family: RFC 4555 moves keep local and peer alike.
        for (local, remote, name) in [
            (
                h.old_local_address,
                h.old_remote_address,
                "old_remote_address",
            ),
            (
                h.new_local_address,
                h.new_remote_address,
                "new_remote_address",
            ),
        ] {
            if let (Some(l), Some(r)) = (local, remote)
                && l.is_ipv4() != r.is_ipv4()
            {
                return Err(ValidationError::new(
                    sub(field, name),
                    format!("{r} is not of the local address's family ({l})"),
                ));
            }
        }
        Ok(h)
    }
}

impl Detail {
    fn to_wire(&self) -> pb::trigger::Detail {
        use pb::trigger::Detail as D;
        match self {
            Detail::LinkState(s) => D::LinkState(s.to_wire()),
            Detail::GoingDown { time_interval_ms } => D::GoingDown(pb::GoingDown {
                time_interval_ms: *time_interval_ms,
            }),
            Detail::ParametersReport { parameters } => D::ParametersReport(pb::ParametersReport {
                parameters: parameters.iter().map(LinkParameter::to_wire).collect(),
            }),
            Detail::Handover(h) => D::Handover(h.to_wire()),
            Detail::DefaultRoute(r) => D::DefaultRoute(pb::DefaultRoute {
                family: if r.ipv6 {
                    pb::AddressFamily::Ipv6
                } else {
                    pb::AddressFamily::Ipv4
                } as i32,
                gateway: r.gateway.map(|g| g.to_string()).unwrap_or_default(),
                metric: r.metric,
                table: r.table,
            }),
            Detail::Resync(r) => D::Resync(pb::Resync {
                cause: r.cause.clone(),
                links: r.links,
                addresses: r.addresses,
            }),
            Detail::Connectivity(c) => D::Connectivity(pb::Connectivity {
                state: c.state.clone(),
                code: c.code,
            }),
        }
    }

    fn from_wire(w: &pb::trigger::Detail, field: &str) -> Result<Self, ValidationError> {
        use pb::trigger::Detail as D;
        Ok(match w {
            D::LinkState(s) => {
                Detail::LinkState(LinkState::from_wire(s, &sub(field, "link_state"))?)
            }
            D::GoingDown(g) => Detail::GoingDown {
                time_interval_ms: g.time_interval_ms,
            },
            D::ParametersReport(r) => {
                let f = sub(field, "parameters_report.parameters");
                if r.parameters.is_empty() {
                    return Err(ValidationError::new(f, "is empty"));
                }
                if r.parameters.len() > MAX_PARAMETERS {
                    return Err(ValidationError::new(
                        f,
                        format!("more than {MAX_PARAMETERS} entries"),
                    ));
                }
                Detail::ParametersReport {
                    parameters: r
                        .parameters
                        .iter()
                        .enumerate()
                        .map(|(i, p)| LinkParameter::from_wire(p, &format!("{f}[{i}]")))
                        .collect::<Result<_, _>>()?,
                }
            }
            D::Handover(h) => Detail::Handover(Handover::from_wire(h, &sub(field, "handover"))?),
            D::DefaultRoute(r) => {
                let f = sub(field, "default_route");
                let gateway = if r.gateway.is_empty() {
                    None
                } else {
                    Some(r.gateway.parse::<IpAddr>().map_err(|_| {
                        ValidationError::new(
                            sub(&f, "gateway"),
                            format!("not an IP address: {:?}", r.gateway),
                        )
                    })?)
                };
                let ipv6 = match pb::AddressFamily::try_from(r.family) {
                    Ok(pb::AddressFamily::Ipv4) => false,
                    Ok(pb::AddressFamily::Ipv6) => true,
                    Ok(pb::AddressFamily::Unspecified) => gateway.is_some_and(|g| g.is_ipv6()),
                    Err(_) => {
                        return Err(ValidationError::new(
                            sub(&f, "family"),
                            format!("unknown value {}", r.family),
                        ));
                    }
                };
                Detail::DefaultRoute(DefaultRoute {
                    gateway,
                    ipv6,
                    metric: r.metric,
                    table: r.table,
                })
            }
            D::Resync(r) => Detail::Resync(Resync {
                cause: r.cause.clone(),
                links: r.links,
                addresses: r.addresses,
            }),
            D::Connectivity(c) => Detail::Connectivity(Connectivity {
                state: c.state.clone(),
                code: c.code,
            }),
        })
    }
}

impl Trigger {
    pub fn to_wire(&self) -> pb::Trigger {
        pb::Trigger {
            id: self.id,
            observed_at: Some(self.observed_at.to_wire()),
            source: self.source.to_wire(),
            r#type: self.kind.to_wire(),
            interface: self.interface.as_ref().map(Interface::to_wire),
            address: self.address.as_ref().map(Address::to_wire),
            reason: self.reason.as_ref().map(Reason::to_wire),
            origin: self.origin.clone(),
            detail: self.detail.as_ref().map(Detail::to_wire),
        }
    }

    /// Decodes a trigger the daemon itself wrote (the store's rows): the
    /// structure is checked as for any input, but no Add rules apply.
    pub fn from_stored(w: &pb::Trigger) -> Result<Self, ValidationError> {
        let observed_at = w
            .observed_at
            .as_ref()
            .ok_or_else(|| ValidationError::new("observed_at", "is required"))
            .and_then(|t| Timestamp::from_wire(t, "observed_at"))?;
        let mut t = Self::from_wire_parts(w, "", observed_at)?;
        t.id = w.id;
        t.source = Source::from_wire(w.source, "source")?;
        Ok(t)
    }

    /// Checks a trigger a client wants to add (`field` is its path, e.g.
    /// `triggers[3]`): id must be 0, source client or IEEE 802.21 (default
    /// client), observed_at defaults to `now`, and the fields its type needs
    /// must be there.
    pub fn from_client(
        w: &pb::Trigger,
        field: &str,
        now: Timestamp,
    ) -> Result<Self, ValidationError> {
        if w.id != 0 {
            return Err(ValidationError::new(
                sub(field, "id"),
                "must be 0: ids are assigned by the database",
            ));
        }
        let source = match Source::from_wire_opt(w.source, Sub(field, "source"))? {
            None => Source::Client,
            Some(s @ (Source::Client | Source::Ieee802_21)) => s,
            Some(other) => {
                return Err(ValidationError::new(
                    sub(field, "source"),
                    format!("{other} cannot be added over the API (only client or ieee802-21)"),
                ));
            }
        };
        let observed_at = match &w.observed_at {
            None => now,
            Some(t) => Timestamp::from_wire(t, &sub(field, "observed_at"))?,
        };
        let mut t = Self::from_wire_parts(w, field, observed_at)?;
        t.source = source;
        t.check_complete(field)?;
        Ok(t)
    }

    fn from_wire_parts(
        w: &pb::Trigger,
        field: &str,
        observed_at: Timestamp,
    ) -> Result<Self, ValidationError> {
        if w.origin.len() > 256 {
            return Err(ValidationError::new(
                sub(field, "origin"),
                "longer than 256 bytes",
            ));
        }
        Ok(Self {
            id: 0,
            observed_at,
            source: Source::Client,
            kind: TriggerType::from_wire(w.r#type, Sub(field, "type"))?,
            interface: w
                .interface
                .as_ref()
                .map(|i| Interface::from_wire(i, &sub(field, "interface")))
                .transpose()?,
            address: w
                .address
                .as_ref()
                .map(|a| Address::from_wire(a, &sub(field, "address")))
                .transpose()?,
            reason: w
                .reason
                .as_ref()
                .map(|r| Reason::from_wire(r, &sub(field, "reason")))
                .transpose()?,
            origin: w.origin.clone(),
            detail: w
                .detail
                .as_ref()
                .map(|d| Detail::from_wire(d, field))
                .transpose()?,
        })
    }
}

impl Filter {
    pub fn to_wire(&self) -> pb::TriggerFilter {
        pb::TriggerFilter {
            interfaces: self.interfaces.clone(),
            types: self.types.iter().map(|t| t.to_wire()).collect(),
            sources: self.sources.iter().map(|s| s.to_wire()).collect(),
        }
    }

    pub fn from_wire(w: Option<&pb::TriggerFilter>, field: &str) -> Result<Self, ValidationError> {
        let Some(w) = w else {
            return Ok(Self::default());
        };
        for (name, len) in [
            ("interfaces", w.interfaces.len()),
            ("types", w.types.len()),
            ("sources", w.sources.len()),
        ] {
            if len > MAX_FILTER_ENTRIES {
                return Err(ValidationError::new(
                    sub(field, name),
                    format!("more than {MAX_FILTER_ENTRIES} entries"),
                ));
            }
        }
        for (i, n) in w.interfaces.iter().enumerate() {
            check_name(n, format!("{}[{i}]", sub(field, "interfaces")))?;
            if n.is_empty() {
                return Err(ValidationError::new(
                    format!("{}[{i}]", sub(field, "interfaces")),
                    "is empty",
                ));
            }
        }
        Ok(Self {
            interfaces: w.interfaces.clone(),
            types: w
                .types
                .iter()
                .enumerate()
                .map(|(i, t)| TriggerType::from_wire(*t, format!("{}[{i}]", sub(field, "types"))))
                .collect::<Result<_, _>>()?,
            sources: w
                .sources
                .iter()
                .enumerate()
                .map(|(i, s)| Source::from_wire(*s, format!("{}[{i}]", sub(field, "sources"))))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl LinkTable {
    pub fn to_wire(&self) -> Vec<pb::Link> {
        self.links
            .values()
            .map(|l| pb::Link {
                interface: Some(l.interface.to_wire()),
                state: Some(l.state.to_wire()),
                addresses: l.addresses.iter().map(Address::to_wire).collect(),
                last_change: Some(l.last_change.to_wire()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::trigger::going_down_sample;

    fn going_down_wire() -> pb::Trigger {
        going_down_sample().to_wire()
    }

    #[test]
    fn client_trigger_round_trips_through_the_wire() {
        let w = going_down_wire();
        let t = Trigger::from_client(&w, "triggers[0]", Timestamp(5)).unwrap();
        assert_eq!(t.to_wire(), w);
        assert_eq!(t.reason.as_ref().unwrap().name, "link-parameter-degrading");
    }

    #[test]
    fn out_of_range_enum_names_the_field() {
        let mut w = going_down_wire();
        w.r#type = 99;
        let e = Trigger::from_client(&w, "triggers[3]", Timestamp(0)).unwrap_err();
        assert_eq!(e.field, "triggers[3].type");
        assert!(e.problem.contains("99"), "{e}");
        let mut w = going_down_wire();
        w.interface.as_mut().unwrap().kind = 1234;
        let e = Trigger::from_client(&w, "t", Timestamp(0)).unwrap_err();
        assert_eq!(e.field, "t.interface.kind");
    }

    #[test]
    fn missing_required_fields_are_named() {
        let mut w = going_down_wire();
        w.detail = None;
        let e = Trigger::from_client(&w, "triggers[1]", Timestamp(0)).unwrap_err();
        assert_eq!(e.field, "triggers[1].going_down");
        let mut w = going_down_wire();
        w.interface = None;
        let e = Trigger::from_client(&w, "triggers[1]", Timestamp(0)).unwrap_err();
        assert_eq!(e.field, "triggers[1].interface");
        let mut w = going_down_wire();
        w.r#type = 0;
        let e = Trigger::from_client(&w, "x", Timestamp(0)).unwrap_err();
        assert_eq!(e.to_string(), "x.type: must be set");
    }

    #[test]
    fn reason_codes_outside_the_code_book_are_rejected() {
        let mut w = going_down_wire();
        w.reason.as_mut().unwrap().code = 7;
        let e = Trigger::from_client(&w, "t", Timestamp(0)).unwrap_err();
        assert_eq!(e.field, "t.reason.code");
        w.reason.as_mut().unwrap().code = 200; // vendor range
        Trigger::from_client(&w, "t", Timestamp(0)).unwrap();
    }

    #[test]
    fn clients_cannot_forge_kernel_sources_or_ids() {
        let mut w = going_down_wire();
        w.source = Source::Rtnetlink.to_wire();
        assert_eq!(
            Trigger::from_client(&w, "t", Timestamp(0))
                .unwrap_err()
                .field,
            "t.source"
        );
        let mut w = going_down_wire();
        w.id = 7;
        assert_eq!(
            Trigger::from_client(&w, "t", Timestamp(0))
                .unwrap_err()
                .field,
            "t.id"
        );
    }

    fn handover_complete_wire() -> pb::Trigger {
        let link = |name: &str, index| Interface {
            index,
            name: name.into(),
            kind: Some(InterfaceKind::Ethernet),
            ..Default::default()
        };
        Trigger {
            detail: Some(Detail::Handover(Handover {
                old_local_address: Some("192.0.2.1".parse().unwrap()),
                old_remote_address: Some("198.51.100.7".parse().unwrap()),
                new_local_address: Some("2001:db8::1".parse().unwrap()),
                new_remote_address: Some("2001:db8:1::7".parse().unwrap()),
                duration_us: Some(1_234),
                move_reason: "link-down".into(),
                cause_trigger_id: 42,
                ..Handover::links(link("eth0", 2), link("eth1", 3))
            })),
            interface: Some(link("eth1", 3)),
            ..Trigger::new(Source::Client, TriggerType::LinkHandoverComplete)
        }
        .to_wire()
    }

    fn handover_of(w: &mut pb::Trigger) -> &mut pb::Handover {
        match w.detail.as_mut() {
            Some(pb::trigger::Detail::Handover(h)) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn handover_with_addresses_round_trips_and_bad_fields_are_named() {
        let w = handover_complete_wire();
        let t = Trigger::from_client(&w, "triggers[0]", Timestamp(5)).unwrap();
        assert_eq!(t.to_wire(), w);
        let Some(Detail::Handover(h)) = &t.detail else {
            panic!("{t:?}")
        };
        assert_eq!(h.cause_trigger_id, 42);
        assert_eq!(h.duration_us, Some(1_234));

        let mut w = handover_complete_wire();
        handover_of(&mut w).new_local_address = "2001:db8::zz".into();
        let e = Trigger::from_client(&w, "triggers[2]", Timestamp(0)).unwrap_err();
        assert_eq!(e.field, "triggers[2].handover.new_local_address");
        assert!(e.problem.contains("2001:db8::zz"), "{e}");

        let mut w = handover_complete_wire();
        handover_of(&mut w).old_remote_address = "2001:db8::9".into();
        let e = Trigger::from_client(&w, "t", Timestamp(0)).unwrap_err();
        assert_eq!(e.field, "t.handover.old_remote_address");

        let mut w = handover_complete_wire();
        handover_of(&mut w).move_reason = "link down".into();
        let e = Trigger::from_client(&w, "t", Timestamp(0)).unwrap_err();
        assert_eq!(e.field, "t.handover.move_reason");

        // Only the links, as before the address fields: still valid.
        let mut w = handover_complete_wire();
        let h = handover_of(&mut w);
        *h = pb::Handover {
            old_link: h.old_link.clone(),
            new_link: h.new_link.clone(),
            ..Default::default()
        };
        Trigger::from_client(&w, "t", Timestamp(0)).unwrap();
    }

    #[test]
    fn address_prefix_and_family_are_checked() {
        let mut a = pb::Address {
            address: "192.0.2.1".into(),
            prefix_len: 33,
            ..Default::default()
        };
        assert_eq!(
            Address::from_wire(&a, "a").unwrap_err().field,
            "a.prefix_len"
        );
        a.prefix_len = 24;
        a.family = pb::AddressFamily::Ipv6 as i32;
        assert_eq!(Address::from_wire(&a, "a").unwrap_err().field, "a.family");
        a.address = "nonsense".into();
        assert_eq!(Address::from_wire(&a, "a").unwrap_err().field, "a.address");
    }
}
