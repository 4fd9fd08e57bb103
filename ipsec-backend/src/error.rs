//! The crate's one error type, [`Error`], and the causes of a failed
//! netlink exchange it carries ([`NetlinkError`], [`KernelError`]).
//! Variants are named after the operation that failed; the cause (kernel
//! errno + extended-ack text, socket I/O, or a malformed reply) is in
//! `#[source]` and not repeated in the message. It sits below the IPsec
//! types and the socket, so every layer above returns it; it uses only the
//! codec's [`DecodeError`] and the selectors of [`crate::selector`].
//!
//! This module does not log, retry or map errors to other protocols.

use std::fmt;
use std::net::IpAddr;

use crate::codec::DecodeError;
use crate::selector::{Dir, SelectorError, TrafficSelector};

/// An error reported by the kernel in an `NLMSG_ERROR` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    /// Positive errno (e.g. `libc::ENOENT`).
    pub errno: i32,
    /// The kernel's extended-ack message (`NLMSGERR_ATTR_MSG`), if any.
    pub ext_ack: Option<String>,
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = std::io::Error::from_raw_os_error(self.errno);
        write!(f, "kernel: {text}")?;
        if let Some(m) = &self.ext_ack {
            write!(f, ": {m}")?;
        }
        Ok(())
    }
}

impl std::error::Error for KernelError {}

/// Why a netlink exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel refused the request.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Socket I/O failed.
    #[error("netlink socket I/O")]
    Io(#[from] std::io::Error),
    /// The reply was truncated or malformed.
    #[error("malformed netlink message")]
    Decode(#[from] DecodeError),
    /// The reply was well-formed but not what the request calls for.
    #[error("unexpected netlink reply (type {0:#x})")]
    Unexpected(u16),
}

/// Everything that can go wrong in this crate.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening the XFRM netlink socket")]
    Open(#[source] std::io::Error),
    #[error("adding SA spi {spi:#x} dst {dst}")]
    AddSa {
        spi: u32,
        dst: IpAddr,
        #[source]
        source: NetlinkError,
    },
    #[error("updating SA spi {spi:#x} dst {dst}")]
    UpdateSa {
        spi: u32,
        dst: IpAddr,
        #[source]
        source: NetlinkError,
    },
    #[error("deleting SA spi {spi:#x} dst {dst}")]
    DeleteSa {
        spi: u32,
        dst: IpAddr,
        #[source]
        source: NetlinkError,
    },
    #[error("getting SA spi {spi:#x} dst {dst}")]
    GetSa {
        spi: u32,
        dst: IpAddr,
        #[source]
        source: NetlinkError,
    },
    #[error("dumping SAs")]
    DumpSa(#[source] NetlinkError),
    #[error("flushing SAs")]
    FlushSa(#[source] NetlinkError),
    #[error("allocating an SPI")]
    AllocSpi(#[source] NetlinkError),
    #[error("adding policy ({dir} {selector})")]
    AddPolicy {
        dir: Dir,
        selector: TrafficSelector,
        #[source]
        source: NetlinkError,
    },
    #[error("updating policy ({dir} {selector})")]
    UpdatePolicy {
        dir: Dir,
        selector: TrafficSelector,
        #[source]
        source: NetlinkError,
    },
    #[error("deleting policy ({dir} {selector})")]
    DeletePolicy {
        dir: Dir,
        selector: TrafficSelector,
        #[source]
        source: NetlinkError,
    },
    #[error("getting policy ({dir} {selector})")]
    GetPolicy {
        dir: Dir,
        selector: TrafficSelector,
        #[source]
        source: NetlinkError,
    },
    #[error("dumping policies")]
    DumpPolicy(#[source] NetlinkError),
    #[error("flushing policies")]
    FlushPolicy(#[source] NetlinkError),
    /// XFRM_MSG_MIGRATE failed; the kernel has rolled back every SA and
    /// policy it touched in this call (`xfrm_migrate` restores on error).
    #[error("migrating SAs and policies ({dir} {selector})")]
    Migrate {
        dir: Dir,
        selector: TrafficSelector,
        #[source]
        source: NetlinkError,
    },
    #[error("receiving XFRM events")]
    Monitor(#[source] NetlinkError),
    /// The monitor socket overflowed (ENOBUFS): events were lost.
    #[error("XFRM event queue overflowed; events were lost")]
    MonitorOverrun,
    #[error("entering a private network namespace")]
    Netns(#[source] std::io::Error),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The traffic selectors of a CHILD_SA cannot be installed.
    #[error("CHILD_SA traffic selectors")]
    Selectors(#[from] SelectorError),
}

impl Error {
    /// The kernel errno behind this error, if the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        self.kernel().map(|k| k.errno)
    }

    /// Whether the kernel said the SA or policy is not there (ENOENT,
    /// ESRCH): what deleting one that is gone already returns.
    pub fn is_gone(&self) -> bool {
        matches!(self.errno(), Some(libc::ENOENT | libc::ESRCH))
    }

    /// The kernel error behind this error, if any.
    pub fn kernel(&self) -> Option<&KernelError> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(k) = e.downcast_ref::<KernelError>() {
                return Some(k);
            }
            if let Some(NetlinkError::Kernel(k)) = e.downcast_ref::<NetlinkError>() {
                return Some(k);
            }
            cur = e.source();
        }
        None
    }
}
