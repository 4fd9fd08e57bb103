//! Linux XFRM over netlink for the mobility stack: SAs and policies (add,
//! update, delete, get, dump, flush), ALLOCSPI, XFRM_MSG_MIGRATE (SAs and
//! policies move to a new outer address pair in one kernel call, IPv4 <->
//! IPv6 included, with optional UDP encapsulation), the kernel's event
//! stream, a capability probe, and [`ChildSaBackend`]: the operations the
//! MOBIKE agent needs, over the kernel or an in-memory fake.
//!
//! This is the "PF_KEY extensions to support IPsec SA movement" of the
//! MOBIKE charter, done the Linux way. It does not speak IKE, derive keys,
//! choose addresses or depend on trigger-db; it never touches the host's
//! XFRM state unless the caller asks it to (tests and the capability probe
//! work in private network namespaces).
//!
//! Layers (rust-netlink style): [`codec`] (bytes <-> structs, lossless),
//! [`netlink`] (framing and the async socket), [`handle`] (one method per
//! operation), [`types`] (IPsec-level types), [`monitor`], [`caps`],
//! [`child`] (the agent-facing trait).

pub mod caps;
pub mod child;
pub mod codec;
pub mod error;
pub mod handle;
pub mod monitor;
pub mod netlink;
pub mod netns;
pub mod types;

pub use child::{
    ChildSaBackend, ChildSaCounters, ChildSaHandle, ChildSaSpec, FakeBackend, KernelBackend,
    SelectorError, SelectorPair,
};
pub use error::{Error, KernelError, NetlinkError};
pub use handle::{PolicyKey, SaKey, XfrmHandle};
pub use monitor::{XfrmEvent, XfrmMonitor};
