//! One trigger and its parts: the interface it is about, an address, a
//! reason in a code book, and the typed parameters ([`Detail`]) its type
//! carries (link state, Link_Going_Down's time interval, a parameters
//! report, a handover's two links with, for a completed move, its address
//! pairs, duration, reason and cause, a default route, a resync marker,
//! connectivity). [`Trigger::check_complete`] holds the rules of which
//! fields a type needs and which parameters fit it.
//!
//! The serde attributes here define the JSON form (see [`super::json`]).

use std::{fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

use super::{
    enums::{
        AddressFlag, InterfaceKind, LinkParameterType, LinkType, OperState, ParameterUnit,
        ReasonSpace, Source, TriggerType,
    },
    json::is_zero,
    time::Timestamp,
    validation::{ValidationError, sub},
};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// Kernel ifindex; 0 if unknown.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub index: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<InterfaceKind>,
    /// rtnetlink IFLA_INFO_KIND ("veth", "wireguard", ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver_kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_type: Option<LinkType>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub address: IpAddr,
    pub prefix_len: u8,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<AddressFlag>,
    /// Seconds; `None` = forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_lifetime_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_lifetime_s: Option<u32>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub scope: u8,
}

impl Address {
    pub fn has(&self, flag: AddressFlag) -> bool {
        self.flags.contains(&flag)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    pub space: ReasonSpace,
    pub code: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

impl Reason {
    /// An IEEE 802.21 reason with its standard name.
    pub fn ieee(space: ReasonSpace, code: u32) -> Self {
        let name = space
            .code_book()
            .unwrap_or_default()
            .get(code as usize)
            .map(|s| (*s).to_owned())
            .unwrap_or_else(|| format!("vendor-{code}"));
        Self { space, code, name }
    }

    /// Parses a reason name or number of a code book (as `triggerctl add
    /// --reason` takes it).
    pub fn parse_in(space: ReasonSpace, s: &str) -> Result<Self, String> {
        if let Ok(code) = s.parse::<u32>() {
            return Ok(Self::ieee(space, code));
        }
        let names = space.code_book().unwrap_or_default();
        let norm = s.to_ascii_lowercase().replace('_', "-");
        names
            .iter()
            .position(|n| *n == norm)
            .map(|code| Self::ieee(space, code as u32))
            .ok_or_else(|| format!("unknown {space} reason {s:?}; one of: {}", names.join(", ")))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LinkState {
    pub admin_up: bool,
    pub carrier: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oper_state: Option<OperState>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtu: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
}

impl LinkState {
    /// Up for traffic: administratively up with carrier, and not reported
    /// down by the operational state.
    pub fn is_up(&self) -> bool {
        self.admin_up
            && self.carrier
            && !matches!(
                self.oper_state,
                Some(OperState::Down | OperState::LowerLayerDown | OperState::NotPresent)
            )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkParameter {
    #[serde(rename = "type")]
    pub kind: LinkParameterType,
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<ParameterUnit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_crossed: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultRoute {
    /// `None` for a device route (no gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    pub ipv6: bool,
    #[serde(default)]
    pub metric: u32,
    #[serde(default)]
    pub table: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resync {
    pub cause: String,
    pub links: u32,
    pub addresses: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connectivity {
    pub state: String,
    pub code: u32,
}

/// A handover: the link left and the link joined. A completed move as a
/// mobility agent reports it also carries the address pairs before and
/// after, how long it took, why, and the trigger that caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handover {
    pub old_link: Interface,
    pub new_link: Interface,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_local_address: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_remote_address: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_local_address: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_remote_address: Option<IpAddr>,
    /// Microseconds from the cause being received to the move complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    /// A short token: "link-down", "address-gone", "predicted", "better".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub move_reason: String,
    /// The stored trigger that caused the move; 0 = none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cause_trigger_id: u64,
}

impl Handover {
    /// Only the two links (what an 802.21 function reports).
    pub fn links(old_link: Interface, new_link: Interface) -> Self {
        Self {
            old_link,
            new_link,
            old_local_address: None,
            old_remote_address: None,
            new_local_address: None,
            new_remote_address: None,
            duration_us: None,
            move_reason: String::new(),
            cause_trigger_id: 0,
        }
    }
}

/// The typed parameters of a trigger; which one depends on its type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Detail {
    LinkState(LinkState),
    GoingDown { time_interval_ms: u32 },
    ParametersReport { parameters: Vec<LinkParameter> },
    Handover(Handover),
    DefaultRoute(DefaultRoute),
    Resync(Resync),
    Connectivity(Connectivity),
}

/// Most parameters one Link_Parameters_Report may carry.
pub const MAX_PARAMETERS: usize = 64;

/// One trigger: what happened, where, when, and who saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// Database-assigned, strictly increasing; 0 = not stored (yet).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub id: u64,
    pub observed_at: Timestamp,
    pub source: Source,
    #[serde(rename = "type")]
    pub kind: TriggerType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<Interface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Detail>,
}

impl Trigger {
    /// A new, unstored trigger observed now.
    pub fn new(source: Source, kind: TriggerType) -> Self {
        Self {
            id: 0,
            observed_at: Timestamp::now(),
            source,
            kind,
            interface: None,
            address: None,
            reason: None,
            origin: String::new(),
            detail: None,
        }
    }

    pub fn interface_name(&self) -> Option<&str> {
        self.interface.as_ref().map(|i| i.name.as_str())
    }

    /// The fields this trigger's type needs are present and fit it.
    pub fn check_complete(&self, field: &str) -> Result<(), ValidationError> {
        if self.kind.needs_interface() && self.interface.is_none() {
            return Err(ValidationError::new(
                sub(field, "interface"),
                format!("is required for {}", self.kind),
            ));
        }
        if self.kind.needs_address() && self.address.is_none() {
            return Err(ValidationError::new(
                sub(field, "address"),
                format!("is required for {}", self.kind),
            ));
        }
        match (self.kind, &self.detail) {
            (TriggerType::LinkGoingDown, Some(Detail::GoingDown { .. })) => {}
            (TriggerType::LinkGoingDown, _) => {
                return Err(ValidationError::new(
                    sub(field, "going_down"),
                    "is required for link-going-down (time interval)",
                ));
            }
            (TriggerType::LinkParametersReport, Some(Detail::ParametersReport { .. })) => {}
            (TriggerType::LinkParametersReport, _) => {
                return Err(ValidationError::new(
                    sub(field, "parameters_report"),
                    "is required for link-parameters-report",
                ));
            }
            (
                TriggerType::LinkHandoverImminent | TriggerType::LinkHandoverComplete,
                Some(Detail::Handover(_)),
            ) => {}
            (TriggerType::LinkHandoverImminent | TriggerType::LinkHandoverComplete, _) => {
                return Err(ValidationError::new(
                    sub(field, "handover"),
                    format!("is required for {} (old and new link)", self.kind),
                ));
            }
            (_, Some(Detail::GoingDown { .. })) => {
                return Err(ValidationError::new(
                    sub(field, "detail"),
                    format!("going_down does not fit {}", self.kind),
                ));
            }
            (_, Some(Detail::Handover(_))) => {
                return Err(ValidationError::new(
                    sub(field, "detail"),
                    format!("handover does not fit {}", self.kind),
                ));
            }
            _ => {}
        }
        if let Some(r) = &self.reason {
            let expected = match self.kind {
                TriggerType::LinkDown => Some(ReasonSpace::LinkDown),
                TriggerType::LinkGoingDown => Some(ReasonSpace::LinkGoingDown),
                _ => None,
            };
            if let Some(expected) = expected
                && r.space != expected
                && !matches!(
                    r.space,
                    ReasonSpace::NmDevice | ReasonSpace::NmActiveConnection
                )
            {
                return Err(ValidationError::new(
                    sub(field, "reason.space"),
                    format!("{} needs a {expected} reason, not {}", self.kind, r.space),
                ));
            }
        }
        Ok(())
    }
}

/// A complete client trigger for tests: link-going-down on wlan0, reason
/// link-parameter-degrading, 500 ms.
#[cfg(test)]
pub(crate) fn going_down_sample() -> Trigger {
    use super::enums::link_going_down_reason;
    Trigger {
        kind: TriggerType::LinkGoingDown,
        interface: Some(Interface {
            name: "wlan0".into(),
            ..Default::default()
        }),
        reason: Some(Reason::ieee(
            ReasonSpace::LinkGoingDown,
            link_going_down_reason::LINK_PARAMETER_DEGRADING,
        )),
        detail: Some(Detail::GoingDown {
            time_interval_ms: 500,
        }),
        ..Trigger::new(Source::Client, TriggerType::LinkGoingDown)
    }
}
