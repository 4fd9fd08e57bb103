//! IPsec-level types for SAs, policies and MIGRATE, and their conversion to
//! and from the raw XFRM structs of [`crate::codec`].
//!
//! These are what callers build and what dumps return. They do not talk to
//! the kernel. Keys are plain bytes here; nothing in this module zeroizes.
//! [`Dir`], [`Prefix`] and [`TrafficSelector`] live in [`crate::selector`]
//! (the crate's error names them) and are re-exported here.

use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::codec::{
    self, Algo, Attr, EncapTmpl, LifetimeCfg, LifetimeCur, ReplayEsn, Selector, Stats, UserMigrate,
    UserPolicyInfo, UserSaInfo, UserTmpl, XfrmAddress, XfrmId, family_of,
};
use crate::error::Error;
pub use crate::selector::{Dir, Prefix, TrafficSelector};

/// IPsec mode (`XFRM_MODE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Transport mode (0).
    Transport,
    /// Tunnel mode (1).
    Tunnel,
    /// Bound end-to-end tunnel (4), RFC 7402 style reduced-overhead tunnel.
    Beet,
}

impl Mode {
    /// Kernel number.
    pub fn to_raw(self) -> u8 {
        match self {
            Mode::Transport => 0,
            Mode::Tunnel => 1,
            Mode::Beet => 4,
        }
    }
    /// From the kernel number.
    pub fn from_raw(v: u8) -> Option<Self> {
        match v {
            0 => Some(Mode::Transport),
            1 => Some(Mode::Tunnel),
            4 => Some(Mode::Beet),
            _ => None,
        }
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "transport" => Ok(Mode::Transport),
            "tunnel" => Ok(Mode::Tunnel),
            "beet" => Ok(Mode::Beet),
            _ => Err(format!("unknown mode {s:?} (transport, tunnel, beet)")),
        }
    }
}

/// IPsec protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// ESP (50).
    Esp,
    /// AH (51).
    Ah,
    /// IPComp (108).
    Comp,
}

impl Proto {
    /// IP protocol number.
    pub fn to_raw(self) -> u8 {
        match self {
            Proto::Esp => 50,
            Proto::Ah => 51,
            Proto::Comp => 108,
        }
    }
    /// From the IP protocol number.
    pub fn from_raw(v: u8) -> Option<Self> {
        match v {
            50 => Some(Proto::Esp),
            51 => Some(Proto::Ah),
            108 => Some(Proto::Comp),
            _ => None,
        }
    }
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "esp" => Ok(Proto::Esp),
            "ah" => Ok(Proto::Ah),
            "comp" => Ok(Proto::Comp),
            _ => Err(format!("unknown proto {s:?} (esp, ah, comp)")),
        }
    }
}

/// Hex-encoded bytes in serde (keys).
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&super::hex(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        super::unhex(&s).map_err(serde::de::Error::custom)
    }
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parse hex (an optional `0x` prefix is accepted).
pub fn unhex(s: &str) -> Result<Vec<u8>, String> {
    let s = s.strip_prefix("0x").unwrap_or(s).as_bytes();
    if !s.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    let digit = |c: u8| {
        (c as char)
            .to_digit(16)
            .ok_or_else(|| format!("not a hex digit: {:?}", c as char))
    };
    s.chunks(2)
        .map(|p| Ok((digit(p[0])? * 16 + digit(p[1])?) as u8))
        .collect()
}

/// The transform of an SA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Crypto {
    /// AEAD, e.g. `rfc4106(gcm(aes))` (key = AES key + 4-byte salt) or
    /// `rfc7539esp(chacha20,poly1305)` (32-byte key + 4-byte salt).
    Aead {
        /// Kernel algorithm name.
        alg: String,
        /// Key material (hex in JSON).
        #[serde(with = "hex_bytes")]
        key: Vec<u8>,
        /// ICV length in bits (128 for both).
        icv_bits: u32,
    },
    /// Encryption plus truncated HMAC, e.g. `cbc(aes)` + `hmac(sha256)`/128.
    EncAuth {
        /// Encryption algorithm name.
        enc: String,
        /// Encryption key (hex in JSON).
        #[serde(with = "hex_bytes")]
        enc_key: Vec<u8>,
        /// Authentication algorithm name.
        auth: String,
        /// Authentication key (hex in JSON).
        #[serde(with = "hex_bytes")]
        auth_key: Vec<u8>,
        /// ICV truncation in bits (128 for hmac(sha256) per RFC 4868).
        trunc_bits: u32,
    },
}

impl Crypto {
    /// AES-GCM with a 16-byte ICV (`rfc4106(gcm(aes))`); `key` is the AES
    /// key (16 or 32 bytes) followed by the 4-byte salt.
    pub fn aes_gcm(key: &[u8]) -> Self {
        Crypto::Aead {
            alg: "rfc4106(gcm(aes))".into(),
            key: key.to_vec(),
            icv_bits: 128,
        }
    }
    /// ChaCha20-Poly1305 (RFC 7634); `key` is 32 bytes + 4-byte salt.
    pub fn chacha20_poly1305(key: &[u8]) -> Self {
        Crypto::Aead {
            alg: "rfc7539esp(chacha20,poly1305)".into(),
            key: key.to_vec(),
            icv_bits: 128,
        }
    }
    /// AES-CBC + HMAC-SHA-256-128 (RFC 4868).
    pub fn aes_cbc_hmac_sha256(enc_key: &[u8], auth_key: &[u8]) -> Self {
        Crypto::EncAuth {
            enc: "cbc(aes)".into(),
            enc_key: enc_key.to_vec(),
            auth: "hmac(sha256)".into(),
            auth_key: auth_key.to_vec(),
            trunc_bits: 128,
        }
    }
    fn attrs(&self, out: &mut Vec<Attr>) {
        match self {
            Crypto::Aead { alg, key, icv_bits } => {
                out.push(Attr::AlgAead(Algo::new(alg, key, *icv_bits)));
            }
            Crypto::EncAuth {
                enc,
                enc_key,
                auth,
                auth_key,
                trunc_bits,
            } => {
                // iproute2 order: crypt first, then auth-trunc.
                out.push(Attr::AlgCrypt(Algo::new(enc, enc_key, 0)));
                out.push(Attr::AlgAuthTrunc(Algo::new(auth, auth_key, *trunc_bits)));
            }
        }
    }
}

/// ESP-in-UDP encapsulation (RFC 3948, `UDP_ENCAP_ESPINUDP`), ports as seen
/// by the SA: `sport` is the sender's port, `dport` the receiver's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Encap {
    /// Source UDP port.
    pub sport: u16,
    /// Destination UDP port.
    pub dport: u16,
}

impl Encap {
    /// The same encapsulation seen from the other end.
    pub fn reversed(self) -> Self {
        Self {
            sport: self.dport,
            dport: self.sport,
        }
    }
    /// To the kernel struct.
    pub fn to_raw(self) -> EncapTmpl {
        EncapTmpl {
            encap_type: 2,
            sport: self.sport,
            dport: self.dport,
            oa: XfrmAddress::default(),
        }
    }
}

/// A netfilter mark match (`struct xfrm_mark`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mark {
    /// Value.
    pub value: u32,
    /// Mask.
    pub mask: u32,
}

/// `XFRM_STATE_ESN` in `xfrm_usersa_info.flags`.
pub const XFRM_STATE_ESN: u8 = 128;
/// `XFRM_STATE_AF_UNSPEC`.
pub const XFRM_STATE_AF_UNSPEC: u8 = 32;

/// The anti-replay window of an SA when none is given, in packets.
pub(crate) fn default_replay() -> u32 {
    32
}

/// An SA to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaSpec {
    /// Outer source address.
    pub src: IpAddr,
    /// Outer destination address.
    pub dst: IpAddr,
    /// SPI (host order).
    pub spi: u32,
    /// Protocol.
    #[serde(default = "default_proto")]
    pub proto: Proto,
    /// Mode.
    pub mode: Mode,
    /// Request id tying the SA to policy templates.
    pub reqid: u32,
    /// Transform and keys.
    pub crypto: Crypto,
    /// Selector (None: any, like iproute2's default).
    #[serde(default)]
    pub selector: Option<TrafficSelector>,
    /// With `selector: None`: set XFRM_STATE_AF_UNSPEC, so the empty
    /// selector keeps family AF_UNSPEC and the SA carries inner traffic of
    /// either family (a tunnel-mode SA serving IPv4 and IPv6 selectors, as
    /// strongSwan installs them). Without it the kernel gives an empty
    /// selector the SA's outer family, and output lookups for inner traffic
    /// of the other family pass the SA by.
    #[serde(default)]
    pub selector_af_unspec: bool,
    /// ESP-in-UDP.
    #[serde(default)]
    pub encap: Option<Encap>,
    /// Mark.
    #[serde(default)]
    pub mark: Option<Mark>,
    /// XFRM interface id.
    #[serde(default)]
    pub if_id: Option<u32>,
    /// Anti-replay window in packets (0 disables).
    #[serde(default = "default_replay")]
    pub replay_window: u32,
    /// Extended sequence numbers (RFC 4303 §2.2.1).
    #[serde(default)]
    pub esn: bool,
    /// Soft/hard limits (None: no limits). Soft expiry produces an
    /// XFRM_MSG_EXPIRE with hard=0 (time to rekey), hard expiry removes the SA.
    #[serde(default)]
    pub lifetime: Option<LifetimeCfg>,
}

fn default_proto() -> Proto {
    Proto::Esp
}

impl SaSpec {
    /// The XFRM_MSG_NEWSA/UPDSA body.
    pub fn to_raw(&self) -> Result<(UserSaInfo, Vec<Attr>), Error> {
        if self.src.is_ipv4() != self.dst.is_ipv4() {
            return Err(Error::Invalid(format!(
                "SA outer addresses of different families: {} -> {}",
                self.src, self.dst
            )));
        }
        let family = family_of(&self.dst);
        let sel = match &self.selector {
            Some(s) => s.to_raw(),
            None => Selector::default(),
        };
        let mut flags = 0;
        let mut attrs = Vec::new();
        self.crypto.attrs(&mut attrs);
        // Narrow windows go in the struct; wide or ESN ones need the
        // XFRMA_REPLAY_ESN_VAL attribute (the u8 field caps at 255).
        let esn_attr = self.esn || self.replay_window > 255;
        let replay_window = if esn_attr {
            0
        } else {
            u8::try_from(self.replay_window).unwrap_or(0)
        };
        if self.esn {
            flags |= XFRM_STATE_ESN;
        }
        if self.selector_af_unspec {
            if self.selector.is_some() {
                return Err(Error::Invalid(
                    "an SA selector with XFRM_STATE_AF_UNSPEC must be empty".into(),
                ));
            }
            flags |= XFRM_STATE_AF_UNSPEC;
        }
        if let Some(e) = self.encap {
            attrs.push(Attr::Encap(e.to_raw()));
        }
        if esn_attr {
            // Header only, like iproute2: the kernel allocates the bitmap.
            attrs.push(Attr::ReplayEsnVal(ReplayEsn {
                bmp_len: self.replay_window.div_ceil(32),
                replay_window: self.replay_window,
                ..Default::default()
            }));
        }
        if let Some(m) = self.mark {
            attrs.push(Attr::Mark(m.value, m.mask));
        }
        if let Some(id) = self.if_id {
            attrs.push(Attr::IfId(id));
        }
        let info = UserSaInfo {
            sel,
            id: XfrmId {
                daddr: self.dst.into(),
                spi: self.spi,
                proto: self.proto.to_raw(),
            },
            saddr: self.src.into(),
            lft: self.lifetime.unwrap_or(LifetimeCfg::INFINITE),
            family,
            mode: self.mode.to_raw(),
            reqid: self.reqid,
            replay_window,
            flags,
            ..Default::default()
        };
        Ok((info, attrs))
    }
}

/// An SA as the kernel reports it (get/dump/events). No keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaInfo {
    /// Outer source.
    pub src: Option<IpAddr>,
    /// Outer destination.
    pub dst: Option<IpAddr>,
    /// SPI.
    pub spi: u32,
    /// Protocol number.
    pub proto: u8,
    /// Mode (None if the kernel reports one this crate does not know).
    pub mode: Option<Mode>,
    /// Request id.
    pub reqid: u32,
    /// Selector.
    pub selector: Option<TrafficSelector>,
    /// Algorithm names in the kernel's attribute order, each once.
    pub algs: Vec<String>,
    /// ESP-in-UDP.
    pub encap: Option<Encap>,
    /// Mark.
    pub mark: Option<Mark>,
    /// Interface id.
    pub if_id: Option<u32>,
    /// Replay window (struct field or ESN attribute).
    pub replay_window: u32,
    /// ESN flag.
    pub esn: bool,
    /// Byte/packet counters and times.
    pub current: LifetimeCur,
    /// Configured soft and hard limits (all ones / zero: none).
    #[serde(default = "no_limits")]
    pub limits: LifetimeCfg,
    /// Replay/integrity failure counters.
    pub stats: Stats,
}

fn no_limits() -> LifetimeCfg {
    LifetimeCfg::INFINITE
}

impl SaInfo {
    /// From a NEWSA body (dump reply, GETSA reply, event).
    pub fn from_raw(info: &UserSaInfo, attrs: &[Attr]) -> Self {
        let mut s = SaInfo {
            src: info.saddr.to_ip(info.family),
            dst: info.id.daddr.to_ip(info.family),
            spi: info.id.spi,
            proto: info.id.proto,
            mode: Mode::from_raw(info.mode),
            reqid: info.reqid,
            selector: TrafficSelector::from_raw(&info.sel),
            algs: Vec::new(),
            encap: None,
            mark: None,
            if_id: None,
            replay_window: u32::from(info.replay_window),
            esn: info.flags & XFRM_STATE_ESN != 0,
            current: info.curlft,
            limits: info.lft,
            stats: info.stats,
        };
        for a in attrs {
            match a {
                // The kernel reports an auth algorithm twice (XFRMA_ALG_AUTH
                // for old listeners and XFRMA_ALG_AUTH_TRUNC): name it once.
                Attr::AlgAead(x) | Attr::AlgAuthTrunc(x) | Attr::AlgCrypt(x) | Attr::AlgAuth(x) => {
                    let n = x.name_str();
                    if !s.algs.contains(&n) {
                        s.algs.push(n);
                    }
                }
                Attr::Encap(e) => {
                    s.encap = Some(Encap {
                        sport: e.sport,
                        dport: e.dport,
                    })
                }
                Attr::Mark(v, m) => {
                    s.mark = Some(Mark {
                        value: *v,
                        mask: *m,
                    })
                }
                Attr::IfId(i) => s.if_id = Some(*i),
                Attr::ReplayEsnVal(e) => s.replay_window = e.replay_window,
                Attr::LifetimeVal(l) => s.current = *l,
                _ => {}
            }
        }
        s
    }
}

/// Policy action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Allow (apply templates).
    #[default]
    Allow,
    /// Block.
    Block,
}

/// A policy template (`struct xfrm_user_tmpl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Template {
    /// Tunnel source (outer).
    pub src: IpAddr,
    /// Tunnel destination (outer).
    pub dst: IpAddr,
    /// Protocol.
    pub proto: Proto,
    /// Mode.
    pub mode: Mode,
    /// Request id.
    pub reqid: u32,
    /// SPI (0 = any).
    #[serde(default)]
    pub spi: u32,
    /// Optional ("level use").
    #[serde(default)]
    pub optional: bool,
}

impl Template {
    fn to_raw(self) -> UserTmpl {
        // iproute2 sends all-ones algorithm masks ("any").
        UserTmpl {
            id: XfrmId {
                daddr: self.dst.into(),
                spi: self.spi,
                proto: self.proto.to_raw(),
            },
            family: family_of(&self.dst),
            saddr: self.src.into(),
            reqid: self.reqid,
            mode: self.mode.to_raw(),
            share: 0,
            optional: u8::from(self.optional),
            aalgos: u32::MAX,
            ealgos: u32::MAX,
            calgos: u32::MAX,
        }
    }
    fn from_raw(t: &UserTmpl) -> Option<Self> {
        Some(Self {
            src: t.saddr.to_ip(t.family)?,
            dst: t.id.daddr.to_ip(t.family)?,
            proto: Proto::from_raw(t.id.proto)?,
            mode: Mode::from_raw(t.mode)?,
            reqid: t.reqid,
            spi: t.id.spi,
            optional: t.optional != 0,
        })
    }
}

/// A policy to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySpec {
    /// Selector.
    pub selector: TrafficSelector,
    /// Direction.
    pub dir: Dir,
    /// Priority (lower wins).
    #[serde(default)]
    pub priority: u32,
    /// Action.
    #[serde(default)]
    pub action: Action,
    /// Templates, outermost last.
    #[serde(default)]
    pub templates: Vec<Template>,
    /// Mark.
    #[serde(default)]
    pub mark: Option<Mark>,
    /// XFRM interface id.
    #[serde(default)]
    pub if_id: Option<u32>,
}

impl PolicySpec {
    /// The XFRM_MSG_NEWPOLICY/UPDPOLICY body.
    pub fn to_raw(&self) -> (UserPolicyInfo, Vec<Attr>) {
        let info = UserPolicyInfo {
            sel: self.selector.to_raw(),
            lft: LifetimeCfg::INFINITE,
            priority: self.priority,
            dir: self.dir.to_raw(),
            action: match self.action {
                Action::Allow => 0,
                Action::Block => 1,
            },
            ..Default::default()
        };
        let mut attrs = Vec::new();
        if !self.templates.is_empty() {
            attrs.push(Attr::Tmpl(
                self.templates.iter().map(|t| t.to_raw()).collect(),
            ));
        }
        if let Some(m) = self.mark {
            attrs.push(Attr::Mark(m.value, m.mask));
        }
        if let Some(id) = self.if_id {
            attrs.push(Attr::IfId(id));
        }
        (info, attrs)
    }
}

/// A policy as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    /// Selector (None if the family is unspecified).
    pub selector: Option<TrafficSelector>,
    /// Direction (None for socket policies and unknown values).
    pub dir: Option<Dir>,
    /// Priority.
    pub priority: u32,
    /// Kernel index.
    pub index: u32,
    /// Action.
    pub action: Action,
    /// Templates.
    pub templates: Vec<Template>,
    /// Mark.
    pub mark: Option<Mark>,
    /// Interface id.
    pub if_id: Option<u32>,
}

impl PolicyInfo {
    /// From a NEWPOLICY body.
    pub fn from_raw(info: &UserPolicyInfo, attrs: &[Attr]) -> Self {
        let mut p = PolicyInfo {
            selector: TrafficSelector::from_raw(&info.sel),
            dir: Dir::from_raw(info.dir),
            priority: info.priority,
            index: info.index,
            action: if info.action == 1 {
                Action::Block
            } else {
                Action::Allow
            },
            templates: Vec::new(),
            mark: None,
            if_id: None,
        };
        for a in attrs {
            match a {
                Attr::Tmpl(v) => p.templates = v.iter().filter_map(Template::from_raw).collect(),
                Attr::Mark(v, m) => {
                    p.mark = Some(Mark {
                        value: *v,
                        mask: *m,
                    })
                }
                Attr::IfId(i) => p.if_id = Some(*i),
                _ => {}
            }
        }
        p
    }
}

/// An outer address pair (local, remote).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OuterPair {
    /// Our address.
    pub local: IpAddr,
    /// The peer's address.
    pub remote: IpAddr,
}

/// One SA/template to move (`struct xfrm_user_migrate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateEntry {
    /// Old outer source.
    pub old_src: IpAddr,
    /// Old outer destination.
    pub old_dst: IpAddr,
    /// New outer source.
    pub new_src: IpAddr,
    /// New outer destination.
    pub new_dst: IpAddr,
    /// Protocol.
    pub proto: Proto,
    /// Mode.
    pub mode: Mode,
    /// Request id.
    pub reqid: u32,
}

impl MigrateEntry {
    /// To the kernel struct.
    pub fn to_raw(&self) -> UserMigrate {
        UserMigrate {
            old_daddr: self.old_dst.into(),
            old_saddr: self.old_src.into(),
            new_daddr: self.new_dst.into(),
            new_saddr: self.new_src.into(),
            proto: self.proto.to_raw(),
            mode: self.mode.to_raw(),
            reqid: self.reqid,
            old_family: family_of(&self.old_dst),
            new_family: family_of(&self.new_dst),
        }
    }
    /// From the kernel struct.
    pub fn from_raw(m: &UserMigrate) -> Option<Self> {
        Some(Self {
            old_src: m.old_saddr.to_ip(m.old_family)?,
            old_dst: m.old_daddr.to_ip(m.old_family)?,
            new_src: m.new_saddr.to_ip(m.new_family)?,
            new_dst: m.new_daddr.to_ip(m.new_family)?,
            proto: Proto::from_raw(m.proto)?,
            mode: Mode::from_raw(m.mode)?,
            reqid: m.reqid,
        })
    }
}

/// One XFRM_MSG_MIGRATE: the policy (selector + direction) whose templates
/// and matching SAs move, the moves, and optional KMADDRESS / ENCAP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateSpec {
    /// Policy selector.
    pub selector: TrafficSelector,
    /// Policy direction.
    pub dir: Dir,
    /// Up to 6 (XFRM_MAX_DEPTH) entries, moved atomically.
    pub entries: Vec<MigrateEntry>,
    /// XFRMA_KMADDRESS: the key manager's (local, remote) addresses.
    #[serde(default)]
    pub kmaddress: Option<OuterPair>,
    /// XFRMA_ENCAP: new UDP encapsulation for the moved SAs.
    #[serde(default)]
    pub encap: Option<Encap>,
    /// XFRMA_IF_ID of the policy and SAs.
    #[serde(default)]
    pub if_id: Option<u32>,
}

impl MigrateSpec {
    /// The XFRM_MSG_MIGRATE body.
    pub fn to_raw(&self) -> Result<(codec::UserPolicyId, Vec<Attr>), Error> {
        if self.entries.is_empty() || self.entries.len() > 6 {
            return Err(Error::Invalid(format!(
                "MIGRATE needs 1..=6 entries, got {}",
                self.entries.len()
            )));
        }
        let id = codec::UserPolicyId {
            sel: self.selector.to_raw(),
            index: 0,
            dir: self.dir.to_raw(),
        };
        let mut attrs = Vec::new();
        if let Some(k) = self.kmaddress {
            attrs.push(Attr::KmAddress(codec::UserKmAddress {
                local: k.local.into(),
                remote: k.remote.into(),
                family: family_of(&k.local),
            }));
        }
        attrs.push(Attr::Migrate(
            self.entries.iter().map(|e| e.to_raw()).collect(),
        ));
        if let Some(e) = self.encap {
            attrs.push(Attr::Encap(e.to_raw()));
        }
        if let Some(i) = self.if_id {
            attrs.push(Attr::IfId(i));
        }
        Ok((id, attrs))
    }
}

/// What moves when a CHILD_SA pair changes outer addresses: the selector
/// and addresses from the outbound point of view (`selector` = local ->
/// remote traffic), the proto/mode/reqid of its SAs and templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairMove {
    /// Outbound selector.
    pub selector: TrafficSelector,
    /// Current outer pair.
    pub from: OuterPair,
    /// New outer pair.
    pub to: OuterPair,
    /// Protocol.
    pub proto: Proto,
    /// Mode.
    pub mode: Mode,
    /// Request id.
    pub reqid: u32,
    /// New UDP encapsulation, our view (`sport` = our port).
    pub encap: Option<Encap>,
    /// Send XFRMA_KMADDRESS (= the new pair).
    pub kmaddress: bool,
    /// Interface id of the policies.
    pub if_id: Option<u32>,
}

impl PairMove {
    /// One MIGRATE per policy direction in `dirs`: the out policy moves the
    /// outbound SA (local -> remote), in and fwd move the inbound SA
    /// (remote -> local) with the reversed selector and encapsulation.
    pub fn specs(&self, dirs: &[Dir]) -> Vec<MigrateSpec> {
        dirs.iter()
            .map(|dir| {
                let out = *dir == Dir::Out;
                let (f, t) = if out {
                    (self.from, self.to)
                } else {
                    (
                        OuterPair {
                            local: self.from.remote,
                            remote: self.from.local,
                        },
                        OuterPair {
                            local: self.to.remote,
                            remote: self.to.local,
                        },
                    )
                };
                MigrateSpec {
                    selector: if out {
                        self.selector
                    } else {
                        self.selector.reversed()
                    },
                    dir: *dir,
                    entries: vec![MigrateEntry {
                        old_src: f.local,
                        old_dst: f.remote,
                        new_src: t.local,
                        new_dst: t.remote,
                        proto: self.proto,
                        mode: self.mode,
                        reqid: self.reqid,
                    }],
                    kmaddress: self.kmaddress.then_some(self.to),
                    encap: self.encap.map(|e| if out { e } else { e.reversed() }),
                    if_id: self.if_id,
                }
            })
            .collect()
    }
}
