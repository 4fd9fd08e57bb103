//! The serde forms [`ChildSaSpec`] and [`ChildSaHandle`] are read from:
//! the selectors as the list `selectors`, or as `local_ts` and `remote_ts`,
//! each one prefix or a list of prefixes, which mean their
//! [`SelectorPair::product`]. Both forms are documented in the README for
//! `xfrmctl child install --spec`; the VM scenarios write the second.

use std::net::IpAddr;

use serde::Deserialize;

use super::spec::{ChildSaHandle, ChildSaSpec};
use crate::codec::LifetimeCfg;
use crate::selector::SelectorPair;
use crate::types::default_replay;
use crate::types::{Crypto, Encap, Mark, Mode, OuterPair, Prefix};

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Prefix),
    Many(Vec<Prefix>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<Prefix> {
        match self {
            OneOrMany::One(p) => vec![p],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Resolves the three optional fields into the pair list.
fn resolve(
    selectors: Option<Vec<SelectorPair>>,
    local_ts: Option<OneOrMany>,
    remote_ts: Option<OneOrMany>,
) -> Result<Vec<SelectorPair>, String> {
    match (selectors, local_ts, remote_ts) {
        (Some(s), None, None) => Ok(s),
        (None, Some(l), Some(r)) => {
            let (l, r) = (l.into_vec(), r.into_vec());
            let pairs = SelectorPair::product(&l, &r);
            if pairs.is_empty() {
                let list = |v: &[Prefix]| {
                    v.iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                return Err(format!(
                    "local_ts [{}] and remote_ts [{}] have no pair of one address family",
                    list(&l),
                    list(&r)
                ));
            }
            Ok(pairs)
        }
        (Some(_), _, _) => {
            Err("give either `selectors` or `local_ts`/`remote_ts`, not both".into())
        }
        (None, Some(_), None) => Err("`local_ts` without `remote_ts`".into()),
        (None, None, Some(_)) => Err("`remote_ts` without `local_ts`".into()),
        (None, None, None) => Err("missing `selectors` (or `local_ts` and `remote_ts`)".into()),
    }
}

/// [`ChildSaSpec`] as read (private): selectors in either form.
#[derive(Deserialize)]
pub(super) struct ChildSaSpecWire {
    outer: OuterPair,
    #[serde(default)]
    selectors: Option<Vec<SelectorPair>>,
    #[serde(default)]
    local_ts: Option<OneOrMany>,
    #[serde(default)]
    remote_ts: Option<OneOrMany>,
    mode: Mode,
    reqid: u32,
    spi_out: u32,
    spi_in: u32,
    crypto_out: Crypto,
    crypto_in: Crypto,
    #[serde(default)]
    encap: Option<Encap>,
    #[serde(default)]
    mark: Option<Mark>,
    #[serde(default)]
    if_id: Option<u32>,
    #[serde(default = "default_replay")]
    replay_window: u32,
    #[serde(default)]
    esn: bool,
    #[serde(default)]
    priority: u32,
    #[serde(default)]
    lifetime: Option<LifetimeCfg>,
}

impl TryFrom<ChildSaSpecWire> for ChildSaSpec {
    type Error = String;
    fn try_from(w: ChildSaSpecWire) -> Result<Self, String> {
        Ok(Self {
            outer: w.outer,
            selectors: resolve(w.selectors, w.local_ts, w.remote_ts)?,
            mode: w.mode,
            reqid: w.reqid,
            spi_out: w.spi_out,
            spi_in: w.spi_in,
            crypto_out: w.crypto_out,
            crypto_in: w.crypto_in,
            encap: w.encap,
            mark: w.mark,
            if_id: w.if_id,
            replay_window: w.replay_window,
            esn: w.esn,
            priority: w.priority,
            lifetime: w.lifetime,
        })
    }
}

/// [`ChildSaHandle`] as read (private): selectors in either form.
#[derive(Deserialize)]
pub(super) struct ChildSaHandleWire {
    outer: OuterPair,
    #[serde(default)]
    selectors: Option<Vec<SelectorPair>>,
    #[serde(default)]
    local_ts: Option<OneOrMany>,
    #[serde(default)]
    remote_ts: Option<OneOrMany>,
    mode: Mode,
    reqid: u32,
    spi_out: u32,
    spi_in: u32,
    #[serde(default)]
    encap: Option<Encap>,
    #[serde(default)]
    mark: Option<Mark>,
    #[serde(default)]
    if_id: Option<u32>,
    #[serde(default)]
    inbound_copy: Option<IpAddr>,
}

impl TryFrom<ChildSaHandleWire> for ChildSaHandle {
    type Error = String;
    fn try_from(w: ChildSaHandleWire) -> Result<Self, String> {
        Ok(Self {
            outer: w.outer,
            selectors: resolve(w.selectors, w.local_ts, w.remote_ts)?,
            mode: w.mode,
            reqid: w.reqid,
            spi_out: w.spi_out,
            spi_in: w.spi_in,
            encap: w.encap,
            mark: w.mark,
            if_id: w.if_id,
            inbound_copy: w.inbound_copy,
        })
    }
}
