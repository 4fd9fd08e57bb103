//! Virtual IPs on the host: the addresses peers assigned us (RFC 7296
//! §2.19) go on an interface of this host, `lo` by default, as /32 or
//! /128, so that the host owns them and the tunnel routes (`crate::routes`)
//! can take them as source; they stay put however the outer addresses
//! move (MOBIKE). Only addresses this agent added are removed again; one
//! the host had already is used and left alone. What this module does not
//! do: DNS servers (they are reported in `status`, not written to
//! resolv.conf) or anything for addresses we hand out as a gateway.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use futures::TryStreamExt as _;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::Handle;
use tracing::{info, warn};

use crate::routes::errno;

/// What removing an address that is gone returns.
const GONE: [i32; 3] = [libc::ENOENT, libc::ESRCH, libc::EADDRNOTAVAIL];

/// What went wrong with a virtual IP.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    /// The rtnetlink socket could not be opened.
    #[error("cannot open an rtnetlink socket")]
    Open(#[source] std::io::Error),
    /// The interface does not exist.
    #[error("no interface `{0}` for virtual IPs")]
    NoInterface(String),
    /// The kernel refused.
    #[error("cannot {what} virtual IP {addr} on `{interface}`")]
    Kernel {
        /// add or remove.
        what: &'static str,
        /// The address.
        addr: IpAddr,
        /// The interface.
        interface: String,
        /// Cause.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// Looking the interface up failed.
    #[error("cannot look up interface `{0}`")]
    Lookup(String, #[source] Box<rtnetlink::Error>),
}

/// The virtual IPs this agent put on the host.
#[derive(Debug)]
pub struct VirtualIps {
    handle: Handle,
    interface: String,
    /// Address -> whether this agent added it (else the host had it).
    present: BTreeMap<IpAddr, bool>,
}

impl VirtualIps {
    /// Opens an rtnetlink socket in the calling thread's network namespace.
    pub fn new(interface: &str) -> Result<Self, VipError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(VipError::Open)?;
        tokio::spawn(conn);
        Ok(Self {
            handle,
            interface: interface.to_owned(),
            present: BTreeMap::new(),
        })
    }

    async fn index(&self) -> Result<u32, VipError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(self.interface.clone())
            .execute();
        match links.try_next().await {
            Ok(Some(l)) => Ok(l.header.index),
            Ok(None) => Err(VipError::NoInterface(self.interface.clone())),
            Err(e) if errno(&e) == Some(libc::ENODEV) => {
                Err(VipError::NoInterface(self.interface.clone()))
            }
            Err(e) => Err(VipError::Lookup(self.interface.clone(), Box::new(e))),
        }
    }

    /// Makes the host have exactly `wanted` of the virtual IPs: adds the
    /// missing ones, removes the ones this agent added that are no longer
    /// wanted. Every failure is returned (and nothing else stops).
    pub async fn sync(&mut self, wanted: &BTreeSet<IpAddr>) -> Vec<VipError> {
        let mut errors = Vec::new();
        let gone: Vec<IpAddr> = self
            .present
            .keys()
            .filter(|a| !wanted.contains(a))
            .copied()
            .collect();
        for a in gone {
            if self.present.remove(&a) == Some(true)
                && let Err(e) = self.del(a).await
            {
                errors.push(e);
            }
        }
        let missing: Vec<IpAddr> = wanted
            .iter()
            .filter(|a| !self.present.contains_key(a))
            .copied()
            .collect();
        if missing.is_empty() {
            return errors;
        }
        let index = match self.index().await {
            Ok(i) => i,
            Err(e) => {
                errors.push(e);
                return errors;
            }
        };
        for a in missing {
            let len = if a.is_ipv4() { 32 } else { 128 };
            match self.handle.address().add(index, a, len).execute().await {
                Ok(()) => {
                    info!(vip = %a, interface = %self.interface, "virtual IP installed");
                    self.present.insert(a, true);
                }
                Err(e) if errno(&e) == Some(libc::EEXIST) => {
                    info!(vip = %a, interface = %self.interface, "virtual IP already on the host; left as it is");
                    self.present.insert(a, false);
                }
                Err(source) => errors.push(VipError::Kernel {
                    what: "add",
                    addr: a,
                    interface: self.interface.clone(),
                    source: Box::new(source),
                }),
            }
        }
        errors
    }

    async fn del(&self, a: IpAddr) -> Result<(), VipError> {
        let err = |source| VipError::Kernel {
            what: "remove",
            addr: a,
            interface: self.interface.clone(),
            source: Box::new(source),
        };
        let index = self.index().await?;
        let mut msgs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut found: Option<AddressMessage> = None;
        while let Some(m) = msgs.try_next().await.map_err(err)? {
            let is = m.attributes.iter().any(|x| {
                matches!(x, AddressAttribute::Local(ip) | AddressAttribute::Address(ip) if *ip == a)
            });
            if is {
                found = Some(m);
                break;
            }
        }
        let Some(m) = found else { return Ok(()) };
        match self.handle.address().del(m).execute().await {
            Ok(()) => {
                info!(vip = %a, interface = %self.interface, "virtual IP removed");
                Ok(())
            }
            Err(e) if errno(&e).is_some_and(|n| GONE.contains(&n)) => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    /// Removes every address this agent added (on exit).
    pub async fn remove_all(&mut self) -> Vec<VipError> {
        let errors = self.sync(&BTreeSet::new()).await;
        if !errors.is_empty() {
            warn!(count = errors.len(), "virtual IPs left on the host");
        }
        errors
    }
}
