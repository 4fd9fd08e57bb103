//! The `[mobility]` section of the agent's configuration: where link
//! events come from and how address pairs are chosen. Reading and checking
//! only; [`MobilitySection::to_config`] gives the checked form.
//!
//! ```toml
//! [mobility]
//! source = "automatic"        # trigger-db while it runs, else the agent's own
//!                             # rtnetlink watch; or "trigger-db", "netlink", "off"
//! trigger_db_socket = "/run/trigger-db/trigger.sock"   # default: trigger-db's
//! kernel_hints = true         # while following trigger-db, act on a link down or
//!                             # an address removed as soon as the kernel says it
//! prefer_family = "none"      # or "ipv4", "ipv6"
//! family_bonus = 20           # points for the preferred family
//! hysteresis = 50             # points a better pair must win by (voluntary moves)
//! min_dwell = "5s"            # time on a pair before a voluntary move
//! flap_penalty = 30           # points off per recent link-down (ten at most)
//! probe_interval = "30s"      # background tests of the best alternates (and of
//!                             # one that has just become a candidate); "0": off
//! probe_alternates = 2        # how many alternates are kept tested
//!
//! [mobility.kinds.wwan]       # by interface kind: ethernet, wlan, wwan, veth,
//! cost = 100                  # bridge, vlan, bond, other
//!
//! [mobility.interfaces.wlan0] # by name; wins over the kind
//! priority = 400              # default by kind: wired 300, wlan 200, wwan 100
//! exclude = false             # never used for IKE
//! ```

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{
    links::IfaceKind,
    policy::{FamilyPreference, IfaceMatch, IfaceRule, PolicyConfig},
};

/// What is wrong with `[mobility]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MobilityConfigError {
    #[error("[mobility] {key}: bad duration `{value}`")]
    Duration { key: &'static str, value: String },
    #[error(
        "[mobility.kinds.{0}]: unknown interface kind (ethernet, wlan, wwan, veth, bridge, vlan, bond, other)"
    )]
    Kind(String),
    #[error("[mobility.kinds.{0}]: tunnel and loopback interfaces are never used")]
    NeverUsedKind(String),
    #[error("[mobility] {key} = {value}: {why}")]
    Range {
        key: &'static str,
        value: i64,
        why: &'static str,
    },
}

/// Where the agent learns of link changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// trigger-db when it is running, else the agent's own rtnetlink watch,
    /// switching back to trigger-db when it appears.
    #[default]
    Automatic,
    /// Only trigger-db (waiting for it while it is not running).
    TriggerDb,
    /// Only the agent's own rtnetlink watch.
    Netlink,
    /// Do not follow links (addresses move only by `mobike-agent move`).
    Off,
}

impl Source {
    /// As written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Automatic => "automatic",
            Source::TriggerDb => "trigger-db",
            Source::Netlink => "netlink",
            Source::Off => "off",
        }
    }
}

/// `[mobility.kinds.KIND]` and `[mobility.interfaces.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSection {
    pub priority: Option<i64>,
    #[serde(default)]
    pub cost: i64,
    #[serde(default)]
    pub exclude: bool,
}

/// `[mobility]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MobilitySection {
    pub source: Source,
    pub trigger_db_socket: Option<PathBuf>,
    pub kernel_hints: bool,
    pub prefer_family: Family,
    pub family_bonus: i64,
    pub hysteresis: i64,
    pub min_dwell: String,
    pub flap_penalty: i64,
    pub probe_interval: String,
    pub probe_alternates: u32,
    pub kinds: BTreeMap<String, InterfaceSection>,
    pub interfaces: BTreeMap<String, InterfaceSection>,
}

/// `prefer_family`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    #[default]
    None,
    Ipv4,
    Ipv6,
}

impl Default for MobilitySection {
    fn default() -> Self {
        let p = PolicyConfig::default();
        Self {
            source: Source::default(),
            trigger_db_socket: None,
            kernel_hints: true,
            prefer_family: Family::None,
            family_bonus: p.family_bonus,
            hysteresis: p.hysteresis,
            min_dwell: humantime::format_duration(p.min_dwell).to_string(),
            flap_penalty: p.flap_penalty,
            probe_interval: "30s".into(),
            probe_alternates: 2,
            kinds: BTreeMap::new(),
            interfaces: BTreeMap::new(),
        }
    }
}

/// The checked `[mobility]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct MobilityConfig {
    pub source: Source,
    /// `None`: trigger-db's default socket.
    pub trigger_db_socket: Option<PathBuf>,
    /// While following trigger-db, losses the agent's own rtnetlink watch
    /// sees first are acted on at once ([`super::hints`]).
    pub kernel_hints: bool,
    pub policy: PolicyConfig,
    /// `None`: no background tests.
    pub probe_interval: Option<Duration>,
    pub probe_alternates: u32,
}

impl Default for MobilityConfig {
    fn default() -> Self {
        MobilitySection::default()
            .to_config()
            .expect("the defaults are valid")
    }
}

fn duration(key: &'static str, value: &str) -> Result<Duration, MobilityConfigError> {
    if value.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(value).map_err(|_| MobilityConfigError::Duration {
        key,
        value: value.into(),
    })
}

fn non_negative(key: &'static str, value: i64) -> Result<i64, MobilityConfigError> {
    if value < 0 {
        return Err(MobilityConfigError::Range {
            key,
            value,
            why: "must not be negative",
        });
    }
    Ok(value)
}

impl MobilitySection {
    /// Checks the section.
    pub fn to_config(&self) -> Result<MobilityConfig, MobilityConfigError> {
        let mut rules = Vec::new();
        for (name, s) in &self.interfaces {
            rules.push(IfaceRule {
                matches: IfaceMatch::Name(name.clone()),
                priority: s.priority,
                cost: s.cost,
                exclude: s.exclude,
            });
        }
        for (kind, s) in &self.kinds {
            let k =
                IfaceKind::parse(kind).ok_or_else(|| MobilityConfigError::Kind(kind.clone()))?;
            if matches!(k, IfaceKind::Tunnel | IfaceKind::Loopback) {
                return Err(MobilityConfigError::NeverUsedKind(kind.clone()));
            }
            rules.push(IfaceRule {
                matches: IfaceMatch::Kind(k),
                priority: s.priority,
                cost: s.cost,
                exclude: s.exclude,
            });
        }
        let probe = duration("probe_interval", &self.probe_interval)?;
        Ok(MobilityConfig {
            source: self.source,
            trigger_db_socket: self.trigger_db_socket.clone(),
            kernel_hints: self.kernel_hints,
            policy: PolicyConfig {
                rules,
                prefer_family: match self.prefer_family {
                    Family::None => FamilyPreference::None,
                    Family::Ipv4 => FamilyPreference::Ipv4,
                    Family::Ipv6 => FamilyPreference::Ipv6,
                },
                family_bonus: non_negative("family_bonus", self.family_bonus)?,
                hysteresis: non_negative("hysteresis", self.hysteresis)?,
                min_dwell: duration("min_dwell", &self.min_dwell)?,
                flap_penalty: non_negative("flap_penalty", self.flap_penalty)?,
                ..PolicyConfig::default()
            },
            probe_interval: (!probe.is_zero()).then_some(probe),
            probe_alternates: self.probe_alternates,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MobilityConfig, String> {
        let s: MobilitySection = toml::from_str(text).map_err(|e| e.to_string())?;
        s.to_config().map_err(|e| e.to_string())
    }

    #[test]
    fn the_defaults_match_the_policy_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.source, Source::Automatic);
        assert!(c.kernel_hints);
        assert_eq!(c.policy, PolicyConfig::default());
        assert_eq!(c.probe_interval, Some(Duration::from_secs(30)));
        assert_eq!(c, MobilityConfig::default());
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(
            r#"
            source = "trigger-db"
            trigger_db_socket = "/tmp/t.sock"
            kernel_hints = false
            prefer_family = "ipv6"
            family_bonus = 7
            hysteresis = 11
            min_dwell = "2s"
            flap_penalty = 3
            probe_interval = "0"
            probe_alternates = 4
            [kinds.wwan]
            cost = 100
            [interfaces.wlan0]
            priority = 400
            exclude = true
            "#,
        )
        .unwrap();
        assert_eq!(c.source, Source::TriggerDb);
        assert_eq!(c.trigger_db_socket, Some(PathBuf::from("/tmp/t.sock")));
        assert!(!c.kernel_hints);
        assert_eq!(c.policy.prefer_family, FamilyPreference::Ipv6);
        assert_eq!(
            (
                c.policy.family_bonus,
                c.policy.hysteresis,
                c.policy.flap_penalty
            ),
            (7, 11, 3)
        );
        assert_eq!(c.policy.min_dwell, Duration::from_secs(2));
        assert_eq!(c.probe_interval, None);
        assert_eq!(c.probe_alternates, 4);
        assert_eq!(
            c.policy.rules,
            vec![
                IfaceRule {
                    matches: IfaceMatch::Name("wlan0".into()),
                    priority: Some(400),
                    cost: 0,
                    exclude: true
                },
                IfaceRule {
                    matches: IfaceMatch::Kind(IfaceKind::Wwan),
                    priority: None,
                    cost: 100,
                    exclude: false
                },
            ]
        );
    }

    #[test]
    fn bad_values_are_named() {
        assert!(
            parse("[kinds.lte]\ncost = 1")
                .unwrap_err()
                .contains("[mobility.kinds.lte]")
        );
        assert!(
            parse("[kinds.tunnel]\npriority = 1")
                .unwrap_err()
                .contains("never used")
        );
        assert!(
            parse("min_dwell = \"soon\"")
                .unwrap_err()
                .contains("min_dwell: bad duration `soon`")
        );
        assert!(
            parse("hysteresis = -1")
                .unwrap_err()
                .contains("hysteresis = -1")
        );
        assert!(parse("source = \"dbus\"").unwrap_err().contains("source"));
        assert!(
            parse("roam_delay = \"100ms\"")
                .unwrap_err()
                .contains("roam_delay")
        );
    }
}
