//! The agent's TOML configuration file and its translation into the
//! engine's [`EndpointConfig`]. Unknown keys are rejected everywhere;
//! proposals use strongSwan's syntax. This module only reads and checks;
//! it does not open sockets or talk to the kernel.
//!
//! ```toml
//! [kernel]
//! backend = "none"            # or "xfrm"
//! install_routes = true       # xfrm: routes for tunnel CHILD_SAs (table 220)
//! routing_table = 220
//! routing_table_priority = 220
//!
//! [control]
//! socket = "/run/mobike-agent/control.sock"   # the default as root
//!
//! [ike]                       # the responder's defences; the defaults shown
//! half_open_timeout = "30s"   # a half-open IKE SA without IKE_AUTH goes
//! half_open_limit = 1000      # half-open IKE SAs at most in all; 0: no limit
//! half_open_per_source = 5    # ... from one address (strongSwan's block_threshold)
//! cookie_threshold = 30       # demand cookies from this many half-open SAs on (RFC 7296 §2.6)
//! cookie_rotation = "2m"      # the cookie secret changes this often
//!
//! [connections.home]
//! local_addrs = ["192.0.2.1"]   # optional; empty or absent: any; more
//!                               # than one: the first initiates, the others
//!                               # are announced to a MOBIKE peer
//! remote_addrs = ["192.0.2.2"]  # the first initiates, the others are
//!                               # candidates for MOBIKE moves
//! local_id = "a.test"        # with local_auth = "pubkey": optional, must be
//!                             # in the certificate; default its subject
//! remote_id = "b.test"        # with remote_auth = "pubkey": must be in the
//!                             # peer's certificate (subjectAltName)
//! psk_file = "/etc/mobike-agent/home.psk"   # or psk = "..."; for a side that uses psk
//! local_auth = "psk"          # or "pubkey": cert and key below
//! remote_auth = "psk"         # default: as local_auth; "pubkey": cacerts below
//! cert = "/etc/mobike-agent/x509/a.pem"     # ours, then its intermediates
//! key = "/etc/mobike-agent/private/a.key"   # PKCS#8, SEC1 or PKCS#1; mode 600
//! cacerts = ["/etc/mobike-agent/x509ca"]    # CA files or directories
//! crls = []                   # CRL files; none: no revocation check
//! send_cert = "ifasked"       # or "always", "never": CERT payloads only when
//!                             # the peer sent a CERTREQ (swanctl's default)
//! send_certreq = true         # CERTREQ naming our cacerts (RFC 7296 §3.7)
//! proposals = ["aes256gcm16-prfsha256-x25519"]
//! mobike = true
//! mobike_verify = "unlisted" # or "always", "never" (charon's way): check new peer addresses before ESP moves
//! no_nats = false             # true: NO_NATS_ALLOWED in our address updates (RFC 4555 §3.9)
//! start = "initiate"          # or "listen"
//! dpd_delay = "30s"
//! retransmit_timeout = "2s"  # doubles per retry
//! retransmit_tries = 5
//! dpd_action = "restart"      # or "clear" (default): the peer stopped answering
//! close_action = "start"      # or "none" (default): the peer deleted the IKE SA
//! keyingtries = 0             # unanswered attempts before giving up; 0: never (default 1)
//! vips = ["0.0.0.0"]          # ask the peer for a virtual IP (children may then leave out local_ts)
//! pools = ["10.9.0.0/24"]     # as a gateway: hand out virtual IPs from these
//!
//! [connections.home.children.net]
//! local_ts = ["10.1.0.0/24"]
//! remote_ts = ["10.2.0.0/24"]
//! esp_proposals = ["aes256gcm16"]
//! mode = "tunnel"            # or "transport": host to host (single addresses), mobike = false
//! rekey_time = "1h"           # the default; "0": never
//! life_time = "66m"           # kernel hard limit; default rekey_time + 10%
//! rekey_bytes = 500000000     # kernel soft limit: rekey (default none)
//! life_bytes = 550000000      # kernel hard limit; default rekey_bytes + 10%
//! rekey_packets = 1000000     # likewise in packets
//! ```

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{
    engine::{
        self, ChildConfig, ChildLimits, ConnectionConfig, EndpointConfig, Mode, Recovery, Timers,
    },
    proposal::{EspProposal, IkeProposal, ProposalError},
    proto::IKE_PORT,
};

/// What is wrong with the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML or not the expected shape (unknown key, wrong type).
    #[error("invalid configuration")]
    Parse(#[source] toml::de::Error),
    /// A proposal string is not understood.
    #[error("connection `{connection}`: bad proposal")]
    Proposal {
        /// Connection.
        connection: String,
        /// Cause.
        #[source]
        source: ProposalError,
    },
    /// A value of a connection is invalid.
    #[error("connection `{connection}`: {what}")]
    Invalid {
        /// Connection.
        connection: String,
        /// What is wrong.
        what: String,
    },
    /// Identity or traffic selector syntax.
    #[error("connection `{connection}`")]
    Value {
        /// Connection.
        connection: String,
        /// Cause.
        #[source]
        source: engine::ConfigError,
    },
    /// The psk_file cannot be read.
    #[error("connection `{connection}`: cannot read psk_file {path}")]
    PskFile {
        /// Connection.
        connection: String,
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A certificate, key or CRL file cannot be used.
    #[error("connection `{connection}`")]
    Pki {
        /// Connection.
        connection: String,
        /// Cause.
        #[source]
        source: crate::pki::files::FileError,
    },
    /// The CA certificates or CRLs cannot be used as trust anchors.
    #[error("connection `{connection}`")]
    Trust {
        /// Connection.
        connection: String,
        /// Cause.
        #[source]
        source: crate::pki::verify::TrustError,
    },
    /// A `[mobility]` setting is invalid.
    #[error(transparent)]
    Mobility(#[from] crate::mobility::config::MobilityConfigError),
    /// A `[kernel]` setting is out of range.
    #[error("[kernel] {0}")]
    Kernel(String),
    /// An `[ike]` setting is out of range.
    #[error("[ike] {0}")]
    Ike(String),
    /// A duration like `30s` is malformed.
    #[error("connection `{connection}`: bad duration `{value}`")]
    Duration {
        /// Connection.
        connection: String,
        /// The text.
        value: String,
    },
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Kernel backend.
    #[serde(default)]
    pub kernel: KernelSection,
    /// Connections by name.
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionSection>,
    /// Local control socket.
    #[serde(default)]
    pub control: ControlSection,
    /// Following the host's links.
    #[serde(default)]
    pub mobility: crate::mobility::config::MobilitySection,
    /// Endpoint-wide IKE settings: the responder's half-open limits.
    #[serde(default)]
    pub ike: IkeSection,
}

/// `[ike]`: the limits a responder puts on half-open IKE SAs, as strongSwan
/// users know them (`charon.half_open_timeout`, `init_limit_half_open`,
/// `block_threshold`, `cookie_threshold`). Absent keys take the engine's
/// defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IkeSection {
    /// A half-open IKE SA without IKE_AUTH is dropped after this long.
    pub half_open_timeout: Option<String>,
    /// Half-open IKE SAs at most in all; 0: no limit.
    pub half_open_limit: Option<usize>,
    /// Half-open IKE SAs at most from one peer address; 0: no limit.
    pub half_open_per_source: Option<usize>,
    /// Half-open IKE SAs from which on IKE_SA_INIT needs a cookie.
    pub cookie_threshold: Option<usize>,
    /// How often the cookie secret changes.
    pub cookie_rotation: Option<String>,
}

impl IkeSection {
    /// The engine's settings with these applied.
    fn apply(&self, mut e: EndpointConfig) -> Result<EndpointConfig, ConfigFileError> {
        let dur = |key: &str, v: &Option<String>, default: Duration| match v {
            None => Ok(default),
            Some(t) => match humantime::parse_duration(t) {
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err(ConfigFileError::Ike(format!(
                    "{key} = \"{t}\": must be more than 0"
                ))),
                Err(err) => Err(ConfigFileError::Ike(format!("{key} = \"{t}\": {err}"))),
            },
        };
        e.half_open_timeout = dur(
            "half_open_timeout",
            &self.half_open_timeout,
            e.half_open_timeout,
        )?;
        e.cookie_rotation = dur("cookie_rotation", &self.cookie_rotation, e.cookie_rotation)?;
        e.half_open_limit = self.half_open_limit.unwrap_or(e.half_open_limit);
        e.half_open_per_source = self.half_open_per_source.unwrap_or(e.half_open_per_source);
        e.cookie_threshold = self.cookie_threshold.unwrap_or(e.cookie_threshold);
        if e.half_open_limit != 0 && e.cookie_threshold > e.half_open_limit {
            return Err(ConfigFileError::Ike(format!(
                "cookie_threshold = {} is above half_open_limit = {}: cookies would never be asked for before the limit drops requests",
                e.cookie_threshold, e.half_open_limit
            )));
        }
        Ok(e)
    }
}

/// `[control]`: the local gRPC socket `mobike-agent status` talks to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    /// Socket path; unset: the default of `crate::control::default_socket`.
    pub socket: Option<PathBuf>,
}

/// `[kernel]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSection {
    /// Which backend applies kernel actions.
    #[serde(default)]
    pub backend: Backend,
    /// Route the remote selectors of tunnel-mode CHILD_SAs through a table
    /// of their own, with a local address inside the local selectors as
    /// source (strongSwan's `install_routes`; backend `xfrm` only).
    #[serde(default = "yes")]
    pub install_routes: bool,
    /// That table (strongSwan's `routing_table`).
    #[serde(default = "table_220")]
    pub routing_table: u32,
    /// Priority of the rule that looks it up (`routing_table_prio`).
    #[serde(default = "table_220")]
    pub routing_table_priority: u32,
    /// Put the virtual IPs peers assign on the host (backend `xfrm` only;
    /// strongSwan's `install_virtual_ip`).
    #[serde(default = "yes")]
    pub install_virtual_ip: bool,
    /// On this interface (strongSwan's `install_virtual_ip_on`).
    #[serde(default = "lo")]
    pub virtual_ip_interface: String,
}

fn lo() -> String {
    "lo".into()
}

fn table_220() -> u32 {
    220
}

impl Default for KernelSection {
    fn default() -> Self {
        Self {
            backend: Backend::default(),
            install_routes: true,
            routing_table: 220,
            routing_table_priority: 220,
            install_virtual_ip: true,
            virtual_ip_interface: lo(),
        }
    }
}

/// Kernel backend choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Linux XFRM through ipsec-backend.
    Xfrm,
    /// Log kernel actions only (tests, IKE-only use).
    #[default]
    None,
}

/// What to do with a connection at start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// Bring the IKE SA up at once.
    Initiate,
    /// Wait for the peer.
    #[default]
    Listen,
}

/// `[connections.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSection {
    /// Local addresses; the first is used to initiate, all are listened
    /// on, and the others are announced to a MOBIKE peer (RFC 4555 §3.4). Empty: any (the wildcards are listened on, and an initiator
    /// starts from the address the kernel routes towards the peer).
    #[serde(default)]
    pub local_addrs: Vec<IpAddr>,
    /// Peer addresses; the first is used to initiate, the others are
    /// candidates for MOBIKE, and a responder accepts any of them.
    #[serde(default)]
    pub remote_addrs: Vec<IpAddr>,
    /// Our identity; with `local_auth = "pubkey"` it defaults to our
    /// certificate's subject.
    pub local_id: Option<String>,
    /// The peer's identity.
    pub remote_id: String,
    /// How we authenticate: `psk` (the default) or `pubkey`.
    #[serde(default)]
    pub local_auth: AuthSetting,
    /// How the peer must authenticate; default: as we do.
    pub remote_auth: Option<AuthSetting>,
    /// Pre-shared key inline (for whichever side uses `psk`).
    pub psk: Option<String>,
    /// Pre-shared key in a file (trailing newline stripped).
    pub psk_file: Option<PathBuf>,
    /// Our certificate, then its intermediates (PEM or DER), for
    /// `local_auth = "pubkey"`.
    pub cert: Option<PathBuf>,
    /// Our private key (PKCS#8, SEC1 or PKCS#1; readable by its owner
    /// only), for `local_auth = "pubkey"`.
    pub key: Option<PathBuf>,
    /// CA certificates (files, or directories of them) the peer's
    /// certificate must validate to, for `remote_auth = "pubkey"`.
    #[serde(default)]
    pub cacerts: Vec<PathBuf>,
    /// CRL files; none: revocation is not checked.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// When our certificate chain goes out in CERT payloads (swanctl's
    /// `send_cert`); default `ifasked`: when the peer sent a CERTREQ.
    pub send_cert: Option<SendCertSetting>,
    /// Whether we send CERTREQ naming our `cacerts` (swanctl's
    /// `send_certreq`); default true.
    pub send_certreq: Option<bool>,
    /// IKE proposals.
    pub proposals: Vec<String>,
    /// Offer MOBIKE.
    #[serde(default = "yes")]
    pub mobike: bool,
    /// Which new peer addresses are checked before ESP moves there on the
    /// peer's UPDATE_SA_ADDRESSES (RFC 4555 §3.7).
    #[serde(default)]
    pub mobike_verify: MobikeVerifySetting,
    /// Send NO_NATS_ALLOWED in our address updates (RFC 4555 §3.9).
    #[serde(default)]
    pub no_nats: bool,
    /// Start action.
    #[serde(default)]
    pub start: Start,
    /// Liveness check interval, e.g. `30s`; `0s` disables.
    pub dpd_delay: Option<String>,
    /// IKE SA rekey interval, e.g. `4h`.
    pub rekey_time: Option<String>,
    /// At most this much is taken off each IKE rekey, at random; default
    /// 10% of rekey_time.
    pub rand_time: Option<String>,
    /// First retransmission timeout, e.g. `2s`; doubles with every retry.
    pub retransmit_timeout: Option<String>,
    /// Retransmissions before the peer is declared dead.
    pub retransmit_tries: Option<u32>,
    /// What to do when the peer stops answering an established IKE SA.
    #[serde(default)]
    pub dpd_action: DpdAction,
    /// What to do when the peer deletes the IKE SA.
    #[serde(default)]
    pub close_action: CloseAction,
    /// Unanswered attempts to establish before giving up; 0: never.
    pub keyingtries: Option<u32>,
    /// Virtual IPs to ask the peer for: `0.0.0.0` / `::` for any of the
    /// family, or a specific one.
    #[serde(default)]
    pub vips: Vec<IpAddr>,
    /// Address pools (CIDR) to hand out virtual IPs from, as a gateway.
    #[serde(default)]
    pub pools: Vec<String>,
    /// CHILD_SAs by name; the first by name comes with IKE_AUTH.
    #[serde(default)]
    pub children: BTreeMap<String, ChildSection>,
}

fn yes() -> bool {
    true
}

/// swanctl's `auth` of a `local` or `remote` section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthSetting {
    /// Pre-shared key.
    #[default]
    Psk,
    /// Public key: a certificate and a signature.
    Pubkey,
}

/// swanctl's `send_cert`: when our CERT payloads go out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SendCertSetting {
    /// In every IKE_AUTH.
    Always,
    /// When the peer sent a CERTREQ (the default).
    #[default]
    IfAsked,
    /// Never: the peer has our certificate locally.
    Never,
}

impl From<SendCertSetting> for engine::SendCert {
    fn from(v: SendCertSetting) -> Self {
        match v {
            SendCertSetting::Always => engine::SendCert::Always,
            SendCertSetting::IfAsked => engine::SendCert::IfAsked,
            SendCertSetting::Never => engine::SendCert::Never,
        }
    }
}

/// `mobike_verify`: which new peer addresses a MOBIKE responder checks
/// with a return routability check before moving ESP (RFC 4555 §3.7).
/// charon has no such option and never checks (`"never"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MobikeVerifySetting {
    /// Every new address.
    Always,
    /// Addresses neither in `remote_addrs` nor announced by the peer (the
    /// default).
    #[default]
    Unlisted,
    /// None (charon's behaviour).
    Never,
}

impl From<MobikeVerifySetting> for engine::MobikeVerify {
    fn from(v: MobikeVerifySetting) -> Self {
        match v {
            MobikeVerifySetting::Always => engine::MobikeVerify::Always,
            MobikeVerifySetting::Unlisted => engine::MobikeVerify::Unlisted,
            MobikeVerifySetting::Never => engine::MobikeVerify::Never,
        }
    }
}

/// swanctl's `dpd_action` (`trap` is not supported).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DpdAction {
    /// Remove the SAs (the default).
    #[default]
    Clear,
    /// Remove them and establish the connection again.
    Restart,
}

/// swanctl's `close_action` (`trap` is not supported).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloseAction {
    /// Nothing (the default).
    #[default]
    None,
    /// The same as `none`: the SAs are gone.
    Clear,
    /// Establish the connection again.
    Start,
}

/// `[connections.NAME.children.CHILD]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildSection {
    /// Our selectors (CIDR); may be left out with `vips`: then the
    /// addresses the peer assigns.
    #[serde(default)]
    pub local_ts: Vec<String>,
    /// The peer's selectors.
    pub remote_ts: Vec<String>,
    /// ESP proposals.
    pub esp_proposals: Vec<String>,
    /// `tunnel` (the default) or `transport` (host to host, without
    /// MOBIKE).
    #[serde(default = "tunnel")]
    pub mode: String,
    /// CHILD_SA rekey interval, e.g. `1h` (the default; `0` never).
    pub rekey_time: Option<String>,
    /// Hard age limit of each ESP SA; default `rekey_time` + 10%.
    pub life_time: Option<String>,
    /// At most this much is taken off each rekey, at random; default
    /// `life_time` - `rekey_time`.
    pub rand_time: Option<String>,
    /// Bytes after which the CHILD_SA is rekeyed (default none).
    pub rekey_bytes: Option<u64>,
    /// Hard byte limit; default `rekey_bytes` + 10%.
    pub life_bytes: Option<u64>,
    /// Packets after which the CHILD_SA is rekeyed (default none).
    pub rekey_packets: Option<u64>,
    /// Hard packet limit; default `rekey_packets` + 10%.
    pub life_packets: Option<u64>,
}

/// swanctl's CHILD_SA rekey_time default.
const CHILD_REKEY_TIME: Duration = Duration::from_secs(3600);

/// A limit and its hard counterpart as swanctl has them: the hard one
/// defaults to the soft one + 10% and must exceed it; 0 is no limit.
fn soft_and_hard<T>(
    soft: Option<T>,
    hard: Option<T>,
    plus_ten_percent: impl Fn(T) -> T,
    names: (&str, &str),
    show: impl Fn(&T) -> String,
) -> Result<(Option<T>, Option<T>), String>
where
    T: Copy + PartialOrd,
{
    let hard = hard.or(soft.map(plus_ten_percent));
    if let (Some(s), Some(h)) = (soft, hard)
        && h <= s
    {
        return Err(format!(
            "{} ({}) must be more than {} ({})",
            names.1,
            show(&h),
            names.0,
            show(&s)
        ));
    }
    Ok((soft, hard))
}

fn tunnel() -> String {
    "tunnel".into()
}

/// The engine configuration plus what the runtime needs besides.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// For the engine.
    pub endpoint: EndpointConfig,
    /// Connections to initiate at start.
    pub initiate: Vec<String>,
    /// Local addresses to listen on (ports 500 and 4500).
    pub listen: Vec<IpAddr>,
    /// A connection takes "any" local address: listen on the wildcards
    /// (which serve the addresses in `listen` too).
    pub listen_any: bool,
    /// Kernel backend.
    pub backend: Backend,
    /// Tunnel routes (backend `xfrm` with `install_routes`), else `None`.
    pub routes: Option<crate::routes::RouteConfig>,
    /// Control socket to serve `AgentControl` on; `None`: no control socket.
    pub control_socket: Option<PathBuf>,
    /// The interface for virtual IPs (backend `xfrm` with
    /// `install_virtual_ip`), else `None`.
    pub virtual_ip_interface: Option<String>,
    /// `[mobility]`.
    pub mobility: crate::mobility::config::MobilityConfig,
}

impl FileConfig {
    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigFileError> {
        toml::from_str(text).map_err(ConfigFileError::Parse)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// `[kernel]` routing: the main, local, default and unspecified tables
    /// are not ours to fill, and a rule at priority 0 would come before
    /// the local table.
    fn routes(&self) -> Result<Option<crate::routes::RouteConfig>, ConfigFileError> {
        let k = &self.kernel;
        if k.backend != Backend::Xfrm || !k.install_routes {
            return Ok(None);
        }
        if matches!(k.routing_table, 0 | 253..=255) {
            return Err(ConfigFileError::Kernel(format!(
                "routing_table = {}: 0, 253 (default), 254 (main) and 255 (local) are reserved",
                k.routing_table
            )));
        }
        if k.routing_table_priority == 0 {
            return Err(ConfigFileError::Kernel(
                "routing_table_priority = 0 would come before the local table".into(),
            ));
        }
        Ok(Some(crate::routes::RouteConfig {
            table: k.routing_table,
            priority: k.routing_table_priority,
        }))
    }

    /// Checks everything and builds the engine configuration.
    pub fn to_agent_config(&self) -> Result<AgentConfig, ConfigFileError> {
        let mut connections = Vec::new();
        let mut initiate = Vec::new();
        let mut listen: Vec<IpAddr> = Vec::new();
        let mut listen_any = false;
        for (name, c) in &self.connections {
            let invalid = |what: &str| ConfigFileError::Invalid {
                connection: name.clone(),
                what: what.into(),
            };
            let value = |source| ConfigFileError::Value {
                connection: name.clone(),
                source,
            };
            let proposal = |source| ConfigFileError::Proposal {
                connection: name.clone(),
                source,
            };
            let dur = |s: &Option<String>| -> Result<Option<Duration>, ConfigFileError> {
                match s {
                    None => Ok(None),
                    Some(v) => {
                        let d = humantime::parse_duration(v).map_err(|_| {
                            ConfigFileError::Duration {
                                connection: name.clone(),
                                value: v.clone(),
                            }
                        })?;
                        Ok((!d.is_zero()).then_some(d))
                    }
                }
            };
            let remote_setting = c.remote_auth.unwrap_or(c.local_auth);
            let uses_psk = c.local_auth == AuthSetting::Psk || remote_setting == AuthSetting::Psk;
            let psk = match (&c.psk, &c.psk_file) {
                (None, None) if !uses_psk => Vec::new(),
                (Some(p), None) => p.as_bytes().to_vec(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|source| ConfigFileError::PskFile {
                        connection: name.clone(),
                        path: f.clone(),
                        source,
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .as_bytes()
                    .to_vec(),
                _ => return Err(invalid("exactly one of psk and psk_file is required")),
            };
            if uses_psk && psk.is_empty() {
                return Err(invalid("the pre-shared key is empty"));
            }
            let (local_auth, local_id) = auth::local_auth(name, c)?;
            let remote_auth = auth::remote_auth(name, c, remote_setting)?;
            listen_any |= c.local_addrs.is_empty();
            if c.start == Start::Initiate && c.remote_addrs.is_empty() {
                return Err(invalid("start = \"initiate\" needs remote_addrs"));
            }
            if c.proposals.is_empty() {
                return Err(invalid("proposals must not be empty"));
            }
            let ike_proposals = c
                .proposals
                .iter()
                .map(|p| IkeProposal::parse(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(proposal)?;
            let mut children = Vec::new();
            for (cname, ch) in &c.children {
                let mode = match ch.mode.as_str() {
                    "tunnel" => Mode::Tunnel,
                    "transport" if c.mobike => {
                        return Err(invalid(&format!(
                            "child `{cname}`: mode `transport` needs mobike = false \
                             (MOBIKE moves tunnel-mode SAs only, RFC 4555 §1.1)"
                        )));
                    }
                    "transport" => Mode::Transport,
                    other => {
                        return Err(invalid(&format!(
                            "child `{cname}`: mode `{other}` is not supported (tunnel or transport)"
                        )));
                    }
                };
                if ch.local_ts.is_empty() && c.vips.is_empty() {
                    return Err(invalid(&format!(
                        "child `{cname}`: local_ts is missing (it may be left out only \
                         with vips, for the addresses the peer assigns)"
                    )));
                }
                if ch.remote_ts.is_empty() {
                    return Err(invalid(&format!("child `{cname}`: remote_ts is empty")));
                }
                if ch.esp_proposals.is_empty() {
                    return Err(invalid(&format!(
                        "child `{cname}`: esp_proposals must not be empty"
                    )));
                }
                let ts = |v: &Vec<String>| -> Result<Vec<_>, ConfigFileError> {
                    v.iter()
                        .map(|t| engine::parse_ts(t).map_err(value))
                        .collect()
                };
                if mode == Mode::Transport
                    && let Some(t) = ch
                        .local_ts
                        .iter()
                        .chain(&ch.remote_ts)
                        .find(|t| engine::parse_ts(t).is_ok_and(|x| x.start_addr != x.end_addr))
                {
                    return Err(invalid(&format!(
                        "child `{cname}`: transport mode is host to host, but selector `{t}` \
                         is more than one address"
                    )));
                }
                let child_invalid = |what: String| invalid(&format!("child `{cname}`: {what}"));
                let rekey_time = match &ch.rekey_time {
                    None => Some(CHILD_REKEY_TIME),
                    some => dur(some)?,
                };
                let (rekey_time, life_time) = soft_and_hard(
                    rekey_time,
                    dur(&ch.life_time)?,
                    |t| t + t / 10,
                    ("rekey_time", "life_time"),
                    |t| humantime::format_duration(*t).to_string(),
                )
                .map_err(child_invalid)?;
                let nonzero = |v: Option<u64>| v.filter(|n| *n != 0);
                let count = |(soft, hard): (Option<u64>, Option<u64>), names| {
                    soft_and_hard(
                        nonzero(soft),
                        nonzero(hard),
                        |n| n.saturating_add(n / 10),
                        names,
                        u64::to_string,
                    )
                    .map_err(child_invalid)
                };
                let (rekey_bytes, life_bytes) = count(
                    (ch.rekey_bytes, ch.life_bytes),
                    ("rekey_bytes", "life_bytes"),
                )?;
                let (rekey_packets, life_packets) = count(
                    (ch.rekey_packets, ch.life_packets),
                    ("rekey_packets", "life_packets"),
                )?;
                children.push(ChildConfig {
                    name: cname.clone(),
                    local_ts: ts(&ch.local_ts)?,
                    remote_ts: ts(&ch.remote_ts)?,
                    esp_proposals: ch
                        .esp_proposals
                        .iter()
                        .map(|p| EspProposal::parse(p))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(proposal)?,
                    mode,
                    rekey_time,
                    rand_time: match &ch.rand_time {
                        None => life_time.zip(rekey_time).map(|(l, r)| l.saturating_sub(r)),
                        some => dur(some)?,
                    },
                    limits: ChildLimits {
                        life_time,
                        rekey_bytes,
                        life_bytes,
                        rekey_packets,
                        life_packets,
                    },
                });
            }
            let ike_rekey_time = match &c.rekey_time {
                None => Timers::default().ike_rekey_time,
                some => dur(some)?,
            };
            let timers = Timers {
                dpd_delay: match &c.dpd_delay {
                    None => Timers::default().dpd_delay,
                    some => dur(some)?,
                },
                ike_rekey_time,
                // swanctl: over_time, 10% of rekey_time.
                ike_rand_time: match &c.rand_time {
                    None => ike_rekey_time.map(|t| t / 10),
                    some => dur(some)?,
                },
                retransmit_timeout: dur(&c.retransmit_timeout)?
                    .unwrap_or(Timers::default().retransmit_timeout),
                retransmit_tries: c
                    .retransmit_tries
                    .unwrap_or(Timers::default().retransmit_tries),
                ..Timers::default()
            };
            connections.push(ConnectionConfig {
                name: name.clone(),
                local_addr: c.local_addrs.first().map(|a| SocketAddr::new(*a, IKE_PORT)),
                remote_addr: c
                    .remote_addrs
                    .first()
                    .map(|a| SocketAddr::new(*a, IKE_PORT)),
                alt_local_addrs: c.local_addrs.iter().skip(1).copied().collect(),
                alt_remote_addrs: c
                    .remote_addrs
                    .iter()
                    .skip(1)
                    .map(|a| SocketAddr::new(*a, IKE_PORT))
                    .collect(),
                local_id,
                remote_id: engine::parse_identity(&c.remote_id).map_err(value)?,
                psk,
                local_auth,
                remote_auth,
                ike_proposals,
                mobike: c.mobike,
                mobike_verify: c.mobike_verify.into(),
                no_nats: c.no_nats,
                children,
                timers,
                vips: c.vips.clone(),
                pools: c
                    .pools
                    .iter()
                    .map(|p| engine::vip::AddrPool::parse(p))
                    .collect::<Result<_, _>>()
                    .map_err(|e| invalid(&e.to_string()))?,
                recovery: Recovery {
                    restart_on_dead_peer: c.dpd_action == DpdAction::Restart,
                    restart_on_peer_close: c.close_action == CloseAction::Start,
                    keyingtries: c.keyingtries.unwrap_or(Recovery::default().keyingtries),
                },
            });
            if c.start == Start::Initiate {
                initiate.push(name.clone());
            }
            for a in &c.local_addrs {
                if !listen.contains(a) {
                    listen.push(*a);
                }
            }
        }
        Ok(AgentConfig {
            endpoint: self.ike.apply(EndpointConfig {
                connections,
                ..EndpointConfig::default()
            })?,
            initiate,
            listen,
            listen_any,
            backend: self.kernel.backend,
            routes: self.routes()?,
            control_socket: self.control.socket.clone(),
            virtual_ip_interface: (self.kernel.backend == Backend::Xfrm
                && self.kernel.install_virtual_ip)
                .then(|| self.kernel.virtual_ip_interface.clone()),
            mobility: self.mobility.to_config()?,
        })
    }
}

mod auth;
#[cfg(test)]
mod tests;
