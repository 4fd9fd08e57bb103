//! The daemon's configuration file (TOML). Every key is optional and has the
//! default documented here; unknown keys and wrong types are errors that
//! name the key and the line. Command-line flags override the file.
//!
//! ```toml
//! socket = "/run/trigger-db/trigger.sock"
//! database = "/var/lib/trigger-db/triggers.db"  # or a sqlite: or postgres:// URL
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
//! # Source triggers (rtnetlink, NetworkManager) go to subscribers at once
//! # and to the store up to this much later, with what came in meanwhile
//! # (a link going down and its addresses and routes: one commit); "0s"
//! # stores each as it comes. Add replies are never delayed.
//! source_store_delay = "50ms"
//! readers = 4                 # read connections
//! host_id = "gw-paris-1"      # PostgreSQL: the host rows are written under;
//!                             # absent: /etc/machine-id (SQLite does not store
//!                             # it, only answers queries that name it)
//! # PostgreSQL only: where writes go while the server is unreachable
//! # (shipped in order when it is back; see the store's spool docs).
//! # Default: spool-<hash of database and host>.db beside the default
//! # database (/var/lib/trigger-db as root).
//! spool_path = "/var/lib/trigger-db/spool.db"
//! spool_max_bytes = 67108864  # 64 MiB; at least 262144; when full,
//!                             # writes are refused (RESOURCE_EXHAUSTED)
//!
//! [subscribers]
//! queue = 4096                # per-subscriber queue, triggers
//! max = 10000                 # concurrent subscriptions at most
//!
//! [limits]                   # what one local peer can make the daemon hold
//! max_connections = 1024      # open connections at most (root's not refused)
//! max_connections_per_uid = 64 # per non-root uid
//! max_streams_per_connection = 128 # concurrent requests on one connection
//! read_request_bytes = 65536  # largest request of a read verb
//! write_request_bytes = 16777216 # largest Add / Modify / Delete / Flush /
//!                             # ConfigureThresholds request
//! idle_timeout = "5min"       # a connection that sends nothing (keepalive
//!                             # ping answers count) this long is closed
//!
//! [sources.rtnetlink]
//! enabled = true
//!
//! [sources.networkmanager]
//! enabled = true
//! # D-Bus address of the system bus NetworkManager is on; absent:
//! # DBUS_SYSTEM_BUS_ADDRESS, else the standard system bus
//! bus_address = "unix:path=/run/dbus/system_bus_socket"
//!
//! [damping]
//! flap_window = "60s"         # link-downs per interface counted over this
//! # Trailing-edge debounce per trigger type (humantime), for source
//! # triggers only (rtnetlink, networkmanager); absent = not damped.
//! # link-up and link-down are one class and share the larger value.
//! debounce = { link-down = "200ms", link-up = "200ms", if-addr-changed = "1s" }
//! ```

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer};

use crate::{model::TriggerType, store::Durability};

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
    #[serde(default)]
    pub damping: DampingConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// `[limits]`: bounds on what local peers can make the daemon hold, so an
/// unprivileged user cannot exhaust its memory or file descriptors and lock
/// root's writers out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_connections: usize,
    pub max_connections_per_uid: usize,
    pub max_streams_per_connection: u32,
    pub read_request_bytes: usize,
    pub write_request_bytes: usize,
    #[serde(deserialize_with = "required_duration")]
    pub idle_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_uid: 64,
            max_streams_per_connection: 128,
            read_request_bytes: 64 * 1024,
            write_request_bytes: 16 * 1024 * 1024,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// `[damping]`: debounce of source triggers and the flap window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DampingConfig {
    #[serde(deserialize_with = "required_duration")]
    pub flap_window: Duration,
    /// Quiet period per trigger type; keys are trigger type names.
    #[serde(deserialize_with = "debounce_map")]
    pub debounce: BTreeMap<TriggerType, Duration>,
}

impl Default for DampingConfig {
    fn default() -> Self {
        Self {
            flap_window: Duration::from_secs(60),
            debounce: BTreeMap::new(),
        }
    }
}

fn required_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
}

/// `debounce = { TYPE = "DURATION", ... }`; an unknown type or a bad
/// duration names its key.
fn debounce_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<TriggerType, Duration>, D::Error> {
    let raw = BTreeMap::<String, String>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| {
            let kind = k
                .parse::<TriggerType>()
                .map_err(|e| serde::de::Error::custom(format!("debounce.{k}: {e}")))?;
            let d = humantime::parse_duration(&v)
                .map_err(|e| serde::de::Error::custom(format!("debounce.{k}: {v:?}: {e}")))?;
            Ok((kind, d))
        })
        .collect()
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
    /// How long published source triggers may wait for the store.
    #[serde(deserialize_with = "duration")]
    pub source_store_delay: Option<Duration>,
    /// Read connections.
    pub readers: u32,
    /// The host id rows are written under in a PostgreSQL database of many
    /// hosts; `None`: the machine id. SQLite (one host per file) does not
    /// store it; it answers Query and Flaps for this host id (and refuses
    /// other hosts).
    pub host_id: Option<String>,
    /// PostgreSQL: the local spool file (`None`: the default, see
    /// `store::spool::default_path`).
    pub spool_path: Option<PathBuf>,
    /// PostgreSQL: the most bytes the spool file may hold.
    pub spool_max_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            batch_max: 10_000,
            retention_max_age: None,
            retention_max_rows: None,
            retention_interval: None,
            source_store_delay: None,
            readers: 4,
            host_id: None,
            spool_path: None,
            spool_max_bytes: crate::store::spool::DEFAULT_MAX_BYTES,
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
        if self.store.spool_max_bytes < crate::store::spool::MIN_MAX_BYTES {
            return bad("store.spool_max_bytes", "must be at least 262144");
        }
        if self
            .store
            .spool_path
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return bad("store.spool_path", "must not be empty");
        }
        if !(16..=1_000_000).contains(&self.subscribers.queue) {
            return bad("subscribers.queue", "must be 16..=1000000");
        }
        if self.subscribers.max == 0 {
            return bad("subscribers.max", "must be at least 1");
        }
        let w = self.damping.flap_window;
        if w < Duration::from_secs(1) || w > Duration::from_secs(7 * 86_400) {
            return bad("damping.flap_window", "must be 1s..=7days");
        }
        if let Some((k, d)) = self
            .damping
            .debounce
            .iter()
            .find(|(_, d)| d.is_zero() || **d > Duration::from_secs(3_600))
        {
            return bad(
                "damping.debounce",
                &format!("{k}: {d:?} is outside 1ms..=1h"),
            );
        }
        let l = &self.limits;
        if !(1..=1_000_000).contains(&l.max_connections) {
            return bad("limits.max_connections", "must be 1..=1000000");
        }
        if !(1..=l.max_connections).contains(&l.max_connections_per_uid) {
            return bad(
                "limits.max_connections_per_uid",
                "must be 1..=limits.max_connections",
            );
        }
        if !(1..=10_000).contains(&l.max_streams_per_connection) {
            return bad("limits.max_streams_per_connection", "must be 1..=10000");
        }
        if !(1024..=(64 << 20)).contains(&l.read_request_bytes) {
            return bad("limits.read_request_bytes", "must be 1 KiB..=64 MiB");
        }
        if !(1024..=(256 << 20)).contains(&l.write_request_bytes) {
            return bad("limits.write_request_bytes", "must be 1 KiB..=256 MiB");
        }
        if l.idle_timeout < Duration::from_secs(5) || l.idle_timeout > Duration::from_secs(86_400) {
            return bad("limits.idle_timeout", "must be 5s..=1day");
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
    use std::path::Path;

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
        assert_eq!(c.writer_group.as_deref(), Some("trigger-db"));
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
        let e = Config::parse(
            "[sources.networkmanager]\nbus_address = \"nonsense\"\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sources.networkmanager.bus_address"), "{e}");
    }

    #[test]
    fn damping_defaults_off_and_parses_debounces() {
        let c = Config::parse("", "t").unwrap();
        assert!(c.damping.debounce.is_empty());
        assert_eq!(c.damping.flap_window, Duration::from_secs(60));
        let c = Config::parse(
            "[damping]\nflap_window = \"5m\"\n\
             debounce = { link-down = \"200ms\", LINK_UP = \"300ms\" }\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.damping.flap_window, Duration::from_secs(300));
        assert_eq!(
            c.damping.debounce.get(&TriggerType::LinkDown),
            Some(&Duration::from_millis(200))
        );
        assert_eq!(
            c.damping.debounce.get(&TriggerType::LinkUp),
            Some(&Duration::from_millis(300))
        );
    }

    #[test]
    fn bad_damping_keys_are_named() {
        let e = Config::parse("[damping]\ndebounce = { link-dwn = \"1s\" }\n", "t")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("debounce.link-dwn") && e.contains("line 2"),
            "{e}"
        );
        let e = Config::parse("[damping]\ndebounce = { link-up = \"soon\" }\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("debounce.link-up") && e.contains("soon"), "{e}");
        let e = Config::parse("[damping]\ndebounce = { link-up = \"0s\" }\n", "t")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("damping.debounce") && e.contains("link-up"),
            "{e}"
        );
        let e = Config::parse("[damping]\nflap_window = \"0s\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("damping.flap_window"), "{e}");
        let e = Config::parse("[damping]\nflap = \"1s\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("flap") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn out_of_range_values_are_named() {
        let e = Config::parse("[store]\nbatch_max = 0\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.batch_max"), "{e}");
        let e = Config::parse("[store]\nspool_max_bytes = 1000\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.spool_max_bytes"), "{e}");
        let e = Config::parse("[store]\nspool_path = \"\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.spool_path"), "{e}");
        let c = Config::parse(
            "[store]\nspool_path = \"/tmp/s.db\"\nspool_max_bytes = 1048576\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.store.spool_path.as_deref(), Some(Path::new("/tmp/s.db")));
        assert_eq!(c.store.spool_max_bytes, 1_048_576);
    }
}
