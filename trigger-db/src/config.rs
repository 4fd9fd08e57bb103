//! The daemon's configuration file (TOML). Every key is optional and has the
//! default documented here; unknown keys and wrong types are errors that
//! name the key and the line. Command-line flags override the file.
//!
//! ```toml
//! socket = "/run/trigger-db/trigger.sock"
//! database = "/var/lib/trigger-db/triggers.db"
//! socket_mode = "0666"        # who may connect: readers
//! socket_group = "netdev"     # group owner of the socket (optional)
//! writer_group = "netdev"     # may Add/Modify/Delete/Flush besides root
//!
//! [store]
//! durability = "full"         # or "normal"
//! batch_max = 10000           # triggers per transaction at most
//! retention_max_age = "30d"   # humantime; absent = keep forever
//! retention_max_rows = 1000000
//! retention_interval = "60s"
//!
//! [subscribers]
//! queue = 4096                # per-subscriber queue, triggers
//! max = 10000                 # concurrent subscriptions at most
//!
//! [sources.rtnetlink]
//! enabled = true
//!
//! [sources.networkmanager]
//! enabled = true
//! # D-Bus address of the system bus NetworkManager is on; absent:
//! # DBUS_SYSTEM_BUS_ADDRESS, else the standard system bus
//! bus_address = "unix:path=/run/dbus/system_bus_socket"
//! ```

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer};

use crate::store::Durability;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config: {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

fn octal_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| {
        u32::from_str_radix(s.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("{s:?} is not an octal file mode like \"0660\""))
            })
    })
    .transpose()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub socket: Option<PathBuf>,
    pub database: Option<PathBuf>,
    #[serde(default, deserialize_with = "octal_mode")]
    pub socket_mode: Option<u32>,
    pub socket_group: Option<String>,
    pub writer_group: Option<String>,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub subscribers: SubscriberConfig,
    #[serde(default)]
    pub sources: SourcesConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub durability: Durability,
    pub batch_max: usize,
    #[serde(deserialize_with = "duration")]
    pub retention_max_age: Option<Duration>,
    pub retention_max_rows: Option<u64>,
    #[serde(deserialize_with = "duration")]
    pub retention_interval: Option<Duration>,
    /// Read connections.
    pub readers: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            batch_max: 10_000,
            retention_max_age: None,
            retention_max_rows: None,
            retention_interval: None,
            readers: 4,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriberConfig {
    pub queue: usize,
    pub max: usize,
}

impl Default for SubscriberConfig {
    fn default() -> Self {
        Self {
            queue: crate::hub::DEFAULT_QUEUE,
            max: 10_000,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    pub rtnetlink: SourceToggle,
    pub networkmanager: NetworkManagerConfig,
}

/// `[sources.networkmanager]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkManagerConfig {
    pub enabled: bool,
    /// D-Bus address of the system bus; `None`: `DBUS_SYSTEM_BUS_ADDRESS`,
    /// else the standard system bus.
    pub bus_address: Option<String>,
}

impl Default for NetworkManagerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bus_address: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceToggle {
    pub enabled: bool,
}

impl Default for SourceToggle {
    fn default() -> Self {
        Self { enabled: true }
    }
}

impl Config {
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        c.check()?;
        Ok(c)
    }

    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        if !(1..=100_000).contains(&self.store.batch_max) {
            return bad("store.batch_max", "must be 1..=100000");
        }
        if self.store.retention_max_rows == Some(0) {
            return bad("store.retention_max_rows", "must be at least 1");
        }
        if !(1..=64).contains(&self.store.readers) {
            return bad("store.readers", "must be 1..=64");
        }
        if !(16..=1_000_000).contains(&self.subscribers.queue) {
            return bad("subscribers.queue", "must be 16..=1000000");
        }
        if self.subscribers.max == 0 {
            return bad("subscribers.max", "must be at least 1");
        }
        if let Some(a) = &self.sources.networkmanager.bus_address
            && let Err(e) = a.parse::<zbus::Address>()
        {
            return bad(
                "sources.networkmanager.bus_address",
                &format!("{a:?} is not a D-Bus address: {e}"),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_in_module_doc_parses() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        let c = Config::parse(&example, "doc").unwrap();
        assert_eq!(c.socket_mode, Some(0o666));
        assert_eq!(
            c.store.retention_max_age,
            Some(Duration::from_secs(30 * 86400))
        );
        assert_eq!(c.store.retention_max_rows, Some(1_000_000));
    }

    #[test]
    fn example_in_deploy_parses() {
        let text = include_str!("../../deploy/trigger-db.toml");
        let c = Config::parse(text, "deploy/trigger-db.toml").unwrap();
        assert_eq!(c.writer_group.as_deref(), Some("netdev"));
        assert!(c.sources.rtnetlink.enabled);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = Config::parse(
            "socket = \"/tmp/x\"\n\n[store]\nretention_rows = 5\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("retention_rows"), "{e}");
        assert!(e.contains("line 4"), "{e}");
    }

    #[test]
    fn wrong_type_is_named_with_its_line() {
        let e = Config::parse("[subscribers]\nqueue = \"many\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("queue") || e.contains("integer"), "{e}");
        let e = Config::parse("socket_mode = \"0999\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("octal"), "{e}");
    }

    #[test]
    fn networkmanager_source_defaults_on_and_takes_a_bus_address() {
        let c = Config::parse("", "t").unwrap();
        assert!(c.sources.networkmanager.enabled);
        assert_eq!(c.sources.networkmanager.bus_address, None);
        let c = Config::parse(
            "[sources.networkmanager]\nenabled = false\nbus_address = \"unix:path=/tmp/bus\"\n",
            "t",
        )
        .unwrap();
        assert!(!c.sources.networkmanager.enabled);
        assert_eq!(
            c.sources.networkmanager.bus_address.as_deref(),
            Some("unix:path=/tmp/bus")
        );
        let e = Config::parse("[sources.networkmanager]\nbus = \"x\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bus") && e.contains("line 2"), "{e}");
        let e = Config::parse("[sources.networkmanager]\nbus_address = \"nonsense\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sources.networkmanager.bus_address"), "{e}");
    }

    #[test]
    fn out_of_range_values_are_named() {
        let e = Config::parse("[store]\nbatch_max = 0\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.batch_max"), "{e}");
    }
}
