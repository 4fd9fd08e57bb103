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
//! Layers, each using only the ones above it in this list (rust-netlink
//! style); every error type lives with its layer or below it:
//!
//! 1. [`codec`]: the wire format, bytes <-> `struct xfrm_*` and XFRMA_*
//!    attributes, lossless; the netlink header flags; [`codec::DecodeError`].
//! 2. [`selector`]: policy direction, traffic selectors and the CHILD_SA's
//!    selector pairs ([`SelectorError`]).
//! 3. [`error`]: the crate's [`Error`], and [`NetlinkError`] /
//!    [`KernelError`] for a failed netlink exchange.
//! 4. [`types`]: IPsec-level SAs, policies and MIGRATE over the codec.
//! 5. [`netns`]: running code in a network namespace.
//! 6. [`netlink`]: netlink framing and the async NETLINK_XFRM socket.
//! 7. [`handle`]: [`XfrmHandle`], one method per SA/policy operation.
//! 8. [`monitor`] (the kernel's event stream) and [`caps`] (the capability
//!    probe), over the socket and the handle.
//! 9. [`child`]: the agent-facing [`ChildSaBackend`] and its kernel and
//!    in-memory implementations.

pub mod caps;
pub mod child;
pub mod codec;
pub mod error;
pub mod handle;
pub mod monitor;
pub mod netlink;
pub mod netns;
pub mod selector;
pub mod types;

pub use child::{
    ChildSaBackend, ChildSaCounters, ChildSaHandle, ChildSaSpec, FakeBackend, KernelBackend,
    Leftovers,
};
pub use error::{Error, KernelError, NetlinkError};
pub use handle::{PolicyKey, SaKey, XfrmHandle};
pub use monitor::{XfrmEvent, XfrmMonitor};
pub use selector::{SelectorError, SelectorPair};
