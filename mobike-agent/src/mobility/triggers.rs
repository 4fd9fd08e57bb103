//! trigger-db's triggers and links (`trigger.v1` protobuf) as the agent's
//! own [`LinkEvent`]s: the one place where the agent reads the wire form.
//!
//! Every field that is used is checked; a trigger that cannot be used says
//! which field was wrong ([`TriggerError`]) so that the caller can log and
//! count it. Predictive triggers (Link_Going_Down, IF_REMOVEDSOON,
//! Link_Handover_Imminent) whose time interval has already passed when they
//! arrive (replayed after a reconnect) are [`Mapped::Stale`]: not acted on.

use std::{
    net::IpAddr,
    time::{Duration, SystemTime},
};

use trigger_proto::v1::{
    self as pb, AddressFlag, InterfaceKind, LinkParameterType, OperState as PbOper, ParameterUnit,
    TriggerType, trigger::Detail,
};

use super::links::{
    AddrFlags, IfaceKind, Interface, LinkEvent, LinkParameter, LinkTable, LocalAddr, OperState,
};

/// The warning a predictive trigger without a time interval (or with 0)
/// is taken to give.
pub const DEFAULT_WARNING: Duration = Duration::from_millis(500);

/// Why a trigger or link could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error("trigger {id}: unknown type {ty}")]
    UnknownType { id: u64, ty: i32 },
    #[error("trigger {id} ({ty}): no interface (neither index nor a known name)")]
    NoInterface { id: u64, ty: &'static str },
    #[error("trigger {id} ({ty}): address {value:?} is not an IP address")]
    BadAddress {
        id: u64,
        ty: &'static str,
        value: String,
    },
    #[error("trigger {id} ({ty}): prefix length {len} is out of range for {addr}")]
    BadPrefix {
        id: u64,
        ty: &'static str,
        addr: IpAddr,
        len: u32,
    },
    #[error("link {index}: address {value:?} is not an IP address")]
    BadLinkAddress { index: u32, value: String },
}

/// What a trigger means to the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// A change to the link table.
    Event(LinkEvent),
    /// DEST_UNREACHABLE: paths to this peer address are suspect.
    Unreachable(IpAddr),
    /// trigger-db re-read the host (RESYNC): rebuild from ListLinks.
    Resync,
    /// A prediction whose time has passed.
    Stale,
    /// Nothing the agent acts on (e.g. CONN_ESTABLISHED, connectivity,
    /// its own LINK_HANDOVER_COMPLETE).
    Ignored,
}

fn kind_of(k: i32) -> IfaceKind {
    match InterfaceKind::try_from(k).unwrap_or(InterfaceKind::Other) {
        InterfaceKind::Ethernet => IfaceKind::Ethernet,
        InterfaceKind::Wlan => IfaceKind::Wlan,
        InterfaceKind::Wwan => IfaceKind::Wwan,
        InterfaceKind::Tunnel => IfaceKind::Tunnel,
        InterfaceKind::Loopback => IfaceKind::Loopback,
        InterfaceKind::Veth => IfaceKind::Veth,
        InterfaceKind::Bridge => IfaceKind::Bridge,
        InterfaceKind::Vlan => IfaceKind::Vlan,
        InterfaceKind::Bond => IfaceKind::Bond,
        InterfaceKind::Unspecified | InterfaceKind::Other => IfaceKind::Other,
    }
}

fn oper_of(o: i32) -> OperState {
    match PbOper::try_from(o).unwrap_or(PbOper::Unknown) {
        PbOper::Unspecified | PbOper::Unknown => OperState::Unknown,
        PbOper::NotPresent => OperState::NotPresent,
        PbOper::Down => OperState::Down,
        PbOper::LowerLayerDown => OperState::LowerLayerDown,
        PbOper::Testing => OperState::Testing,
        PbOper::Dormant => OperState::Dormant,
        PbOper::Up => OperState::Up,
    }
}

fn flags_of(flags: &[i32]) -> AddrFlags {
    let has = |f: AddressFlag| flags.contains(&(f as i32));
    AddrFlags {
        tentative: has(AddressFlag::Tentative),
        dadfailed: has(AddressFlag::Dadfailed),
        deprecated: has(AddressFlag::Deprecated),
    }
}

fn system_time(ts: &prost_types::Timestamp) -> Option<SystemTime> {
    let secs = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// A `trigger.v1.Address` as a [`LocalAddr`], or why not.
fn local_addr(a: &pb::Address) -> Result<LocalAddr, (String, Option<u32>)> {
    let addr: IpAddr = a.address.parse().map_err(|_| (a.address.clone(), None))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if a.prefix_len > max {
        return Err((a.address.clone(), Some(a.prefix_len)));
    }
    Ok(LocalAddr {
        addr,
        prefix_len: a.prefix_len as u8,
        flags: flags_of(&a.flags),
    })
}

/// The meaning of `t`, received at wall-clock time `now`; `table` resolves
/// interfaces named only by name (triggers added by clients).
pub fn map(t: &pb::Trigger, table: &LinkTable, now: SystemTime) -> Result<Mapped, TriggerError> {
    let ty = TriggerType::try_from(t.r#type).map_err(|_| TriggerError::UnknownType {
        id: t.id,
        ty: t.r#type,
    })?;
    let name = ty.as_str_name();
    let no_iface = pb::Interface::default();
    let iface = t.interface.as_ref().unwrap_or(&no_iface);
    let index = || -> Result<u32, TriggerError> {
        if iface.index != 0 {
            return Ok(iface.index);
        }
        table
            .by_name(&iface.name)
            .map(|i| i.index)
            .ok_or(TriggerError::NoInterface { id: t.id, ty: name })
    };
    let address = || -> Result<LocalAddr, TriggerError> {
        let no_addr = pb::Address::default();
        local_addr(t.address.as_ref().unwrap_or(&no_addr)).map_err(|(value, len)| {
            match (len, value.parse::<IpAddr>()) {
                (Some(len), Ok(addr)) => TriggerError::BadPrefix {
                    id: t.id,
                    ty: name,
                    addr,
                    len,
                },
                _ => TriggerError::BadAddress {
                    id: t.id,
                    ty: name,
                    value,
                },
            }
        })
    };
    let observed = t.observed_at.as_ref().and_then(system_time).unwrap_or(now);
    let age = now.duration_since(observed).unwrap_or(Duration::ZERO);
    Ok(match ty {
        TriggerType::IfAdded
        | TriggerType::TunnelAdded
        | TriggerType::TunnelChanged
        | TriggerType::LinkUp
        | TriggerType::LinkDown
        | TriggerType::LinkDetected => {
            let index = index()?;
            match &t.detail {
                Some(Detail::LinkState(s)) => Mapped::Event(LinkEvent::Link {
                    index,
                    name: iface.name.clone(),
                    kind: kind_of(iface.kind),
                    driver_kind: iface.driver_kind.clone(),
                    admin_up: s.admin_up,
                    carrier: s.carrier,
                    oper: oper_of(s.oper_state),
                }),
                // An 802.21 client reports up or down without rtnetlink's
                // state: the carrier is what it speaks of.
                _ if ty == TriggerType::LinkDown => {
                    Mapped::Event(LinkEvent::Carrier { index, up: false })
                }
                _ if ty == TriggerType::LinkUp => {
                    Mapped::Event(LinkEvent::Carrier { index, up: true })
                }
                _ => Mapped::Ignored,
            }
        }
        TriggerType::IfRemoved | TriggerType::TunnelRemoved => {
            Mapped::Event(LinkEvent::Removed { index: index()? })
        }
        TriggerType::ConnLost => Mapped::Event(LinkEvent::Carrier {
            index: index()?,
            up: false,
        }),
        TriggerType::IfRemovedsoon
        | TriggerType::LinkGoingDown
        | TriggerType::LinkHandoverImminent => {
            let interval = match &t.detail {
                Some(Detail::GoingDown(g)) if g.time_interval_ms > 0 => {
                    Duration::from_millis(u64::from(g.time_interval_ms))
                }
                _ => DEFAULT_WARNING,
            };
            if age > interval {
                return Ok(Mapped::Stale);
            }
            Mapped::Event(LinkEvent::GoingDown {
                index: index()?,
                within: interval.saturating_sub(age),
            })
        }
        TriggerType::IfAddradded | TriggerType::IfAddrchanged => Mapped::Event(LinkEvent::Addr {
            index: index()?,
            addr: address()?,
        }),
        TriggerType::IfAddrremoved => Mapped::Event(LinkEvent::AddrRemoved {
            index: index()?,
            addr: address()?.addr,
        }),
        TriggerType::LinkParametersReport => {
            let params = match &t.detail {
                Some(Detail::ParametersReport(r)) => {
                    r.parameters.iter().filter_map(parameter).collect()
                }
                _ => Vec::new(),
            };
            if params.is_empty() {
                Mapped::Ignored
            } else {
                Mapped::Event(LinkEvent::Parameters {
                    index: index()?,
                    params,
                })
            }
        }
        TriggerType::DefaultRouteAdded | TriggerType::DefaultRouteRemoved => {
            Mapped::Event(LinkEvent::RoutesChanged {
                index: index().ok(),
            })
        }
        TriggerType::DestUnreachable => Mapped::Unreachable(address()?.addr),
        TriggerType::Resync => Mapped::Resync,
        TriggerType::Unspecified
        | TriggerType::ConnEstablished
        | TriggerType::LinkHandoverComplete => Mapped::Ignored,
    })
}

fn parameter(p: &pb::LinkParameter) -> Option<LinkParameter> {
    let unit = ParameterUnit::try_from(p.unit).unwrap_or(ParameterUnit::Unspecified);
    if !p.value.is_finite() {
        return None;
    }
    match LinkParameterType::try_from(p.r#type).ok()? {
        LinkParameterType::SignalStrength if unit == ParameterUnit::Dbm => {
            Some(LinkParameter::SignalDbm(p.value))
        }
        LinkParameterType::SignalStrength => Some(LinkParameter::SignalPercent(p.value)),
        LinkParameterType::Sinr => Some(LinkParameter::SinrDb(p.value)),
        LinkParameterType::PacketErrorRate => Some(LinkParameter::PacketErrorPercent(p.value)),
        _ => None,
    }
}

/// `ListLinks` as the whole table ([`LinkEvent::Snapshot`]).
pub fn snapshot(links: &[pb::Link]) -> Result<LinkEvent, TriggerError> {
    let mut interfaces = Vec::with_capacity(links.len());
    for l in links {
        let i = l.interface.clone().unwrap_or_default();
        let s = l.state.clone().unwrap_or_default();
        let mut iface = Interface::new(i.index, i.name, kind_of(i.kind));
        iface.driver_kind = i.driver_kind;
        iface.admin_up = s.admin_up;
        iface.carrier = s.carrier;
        iface.oper = oper_of(s.oper_state);
        for a in &l.addresses {
            let a = local_addr(a).map_err(|(value, _)| TriggerError::BadLinkAddress {
                index: i.index,
                value,
            })?;
            iface.addrs.insert(a.addr, a);
        }
        interfaces.push(iface);
    }
    Ok(LinkEvent::Snapshot { interfaces })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn trigger(ty: TriggerType, index: u32, name: &str) -> pb::Trigger {
        pb::Trigger {
            id: 7,
            r#type: ty as i32,
            interface: Some(pb::Interface {
                index,
                name: name.into(),
                kind: InterfaceKind::Wlan as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn at(t: SystemTime) -> Option<prost_types::Timestamp> {
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        Some(prost_types::Timestamp {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        })
    }

    #[test]
    fn link_state_addresses_and_quality_become_events() {
        let now = SystemTime::now();
        let table = LinkTable::new();
        let mut t = trigger(TriggerType::LinkDown, 3, "wlan0");
        t.detail = Some(Detail::LinkState(pb::LinkState {
            admin_up: true,
            carrier: false,
            oper_state: PbOper::Down as i32,
            ..Default::default()
        }));
        assert_eq!(
            map(&t, &table, now).unwrap(),
            Mapped::Event(LinkEvent::Link {
                index: 3,
                name: "wlan0".into(),
                kind: IfaceKind::Wlan,
                driver_kind: String::new(),
                admin_up: true,
                carrier: false,
                oper: OperState::Down,
            })
        );
        let mut t = trigger(TriggerType::IfAddradded, 3, "wlan0");
        t.address = Some(pb::Address {
            address: "2001:db8::5".into(),
            prefix_len: 64,
            flags: vec![AddressFlag::Tentative as i32],
            ..Default::default()
        });
        let Mapped::Event(LinkEvent::Addr { index: 3, addr }) = map(&t, &table, now).unwrap()
        else {
            panic!()
        };
        assert!(addr.flags.tentative && !addr.flags.deprecated);
        let mut t = trigger(TriggerType::LinkParametersReport, 3, "wlan0");
        t.detail = Some(Detail::ParametersReport(pb::ParametersReport {
            parameters: vec![pb::LinkParameter {
                r#type: LinkParameterType::SignalStrength as i32,
                value: -70.0,
                unit: ParameterUnit::Dbm as i32,
                threshold_crossed: None,
            }],
        }));
        assert_eq!(
            map(&t, &table, now).unwrap(),
            Mapped::Event(LinkEvent::Parameters {
                index: 3,
                params: vec![LinkParameter::SignalDbm(-70.0)],
            })
        );
    }

    #[test]
    fn a_client_trigger_naming_only_the_interface_is_resolved_by_name() {
        let now = SystemTime::now();
        let mut table = LinkTable::new();
        let t = trigger(TriggerType::LinkGoingDown, 0, "wlan0");
        assert_eq!(
            map(&t, &table, now),
            Err(TriggerError::NoInterface {
                id: 7,
                ty: "TRIGGER_TYPE_LINK_GOING_DOWN"
            })
        );
        table.apply(
            LinkEvent::Link {
                index: 4,
                name: "wlan0".into(),
                kind: IfaceKind::Wlan,
                driver_kind: String::new(),
                admin_up: true,
                carrier: true,
                oper: OperState::Up,
            },
            Instant::now(),
        );
        assert!(matches!(
            map(&t, &table, now).unwrap(),
            Mapped::Event(LinkEvent::GoingDown { index: 4, .. })
        ));
    }

    #[test]
    fn a_prediction_whose_interval_has_passed_is_stale() {
        let now = SystemTime::now();
        let table = LinkTable::new();
        let mut t = trigger(TriggerType::LinkGoingDown, 3, "wlan0");
        t.detail = Some(Detail::GoingDown(pb::GoingDown {
            time_interval_ms: 500,
        }));
        t.observed_at = at(now - Duration::from_millis(200));
        assert_eq!(
            map(&t, &table, now).unwrap(),
            Mapped::Event(LinkEvent::GoingDown {
                index: 3,
                within: Duration::from_millis(300)
            })
        );
        t.observed_at = at(now - Duration::from_secs(5));
        assert_eq!(map(&t, &table, now).unwrap(), Mapped::Stale);
    }

    #[test]
    fn bad_fields_are_named() {
        let now = SystemTime::now();
        let table = LinkTable::new();
        let mut t = trigger(TriggerType::IfAddrremoved, 3, "wlan0");
        t.address = Some(pb::Address {
            address: "not-an-ip".into(),
            ..Default::default()
        });
        assert_eq!(
            map(&t, &table, now).unwrap_err().to_string(),
            "trigger 7 (TRIGGER_TYPE_IF_ADDRREMOVED): address \"not-an-ip\" is not an IP address"
        );
        t.address = Some(pb::Address {
            address: "192.0.2.1".into(),
            prefix_len: 33,
            ..Default::default()
        });
        assert!(matches!(
            map(&t, &table, now),
            Err(TriggerError::BadPrefix { len: 33, .. })
        ));
        let mut t = trigger(TriggerType::LinkUp, 3, "wlan0");
        t.r#type = 999;
        assert_eq!(
            map(&t, &table, now),
            Err(TriggerError::UnknownType { id: 7, ty: 999 })
        );
    }

    #[test]
    fn list_links_becomes_a_snapshot() {
        let links = vec![pb::Link {
            interface: Some(pb::Interface {
                index: 2,
                name: "eth0".into(),
                kind: InterfaceKind::Ethernet as i32,
                ..Default::default()
            }),
            state: Some(pb::LinkState {
                admin_up: true,
                carrier: true,
                oper_state: PbOper::Up as i32,
                ..Default::default()
            }),
            addresses: vec![pb::Address {
                address: "192.0.2.1".into(),
                prefix_len: 24,
                ..Default::default()
            }],
            last_change: None,
        }];
        let LinkEvent::Snapshot { interfaces } = snapshot(&links).unwrap() else {
            panic!()
        };
        assert!(interfaces[0].is_up());
        assert_eq!(interfaces[0].addrs.len(), 1);
    }
}
