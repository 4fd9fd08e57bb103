//! What the MOBIKE agent asks of the kernel, as one trait: install a
//! CHILD_SA pair with its policies, move it to a new outer address pair
//! (RFC 4555 §3.5 "Updating Address Set"), delete it, read its counters and
//! follow kernel events. [`KernelBackend`] does it with XFRM netlink,
//! [`FakeBackend`] in memory with the same invariants (unique SPI per
//! destination and protocol, unique policy per selector and direction,
//! migrating a missing SA or policy fails, counters survive a move) so the
//! agent's tests run without root or a kernel.
//!
//! Traffic selectors (RFC 7296 §2.9): a CHILD_SA carries a list of
//! [`SelectorPair`]s, each one (local prefix, remote prefix) of one address
//! family for any protocol and port. Like strongSwan's kernel-netlink, every
//! pair gets its own policy set (out, in and fwd; out and in in transport
//! mode), all with the same reqid template; the two SAs serve all pairs, so
//! their selector is the pair itself when there is one, otherwise a wildcard
//! (`0.0.0.0/0` or `::/0` both ways) of the pairs' family, or an AF_UNSPEC
//! one when the pairs mix IPv4 and IPv6. Not supported: protocol or port
//! restrictions in a selector, and address ranges that are not a prefix
//! (the caller splits or refuses them).
//!
//! Inside: the trait (here), the pair's values and the SAs, policies and
//! MIGRATE calls a pair consists of (`spec`, shared by both backends), the
//! JSON forms they are read from (`wire`), and the two backends (`kernel`,
//! `fake`).
//!
//! Not here: IKE, key derivation, rekeying policy, choosing addresses.

mod fake;
mod kernel;
mod spec;
mod wire;

use std::future::Future;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::pin::Pin;

use futures::stream::BoxStream;

use crate::error::Error;
use crate::monitor::XfrmEvent;
use crate::types::{Encap, OuterPair};

pub use crate::selector::{SelectorError, SelectorPair};
pub use fake::FakeBackend;
pub use kernel::KernelBackend;
pub use spec::{ChildSaCounters, ChildSaHandle, ChildSaSpec};

/// A boxed future, so the trait is object-safe (`dyn ChildSaBackend`).
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// The counters of many pairs ([`ChildSaBackend::counters_of`]).
pub type ManyCounters<'a> =
    Pin<Box<dyn Future<Output = Vec<Result<ChildSaCounters, Error>>> + Send + 'a>>;

/// The kernel operations the MOBIKE agent needs.
pub trait ChildSaBackend: Send + Sync {
    /// Install the outbound and inbound SA and, for every selector pair,
    /// the out/in(/fwd) policies. All or nothing: on failure what was
    /// installed is removed again.
    fn install_child_sa<'a>(&'a self, spec: &'a ChildSaSpec) -> BoxFut<'a, ChildSaHandle>;
    /// Move both SAs and the policies of every selector pair to `to`, with
    /// the UDP encapsulation of the new path (our view; None: plain ESP,
    /// taking off any the pair had, as when a MOBIKE move leaves a NAT).
    /// Returns the updated handle. All or nothing, as far as the kernel
    /// allows.
    fn migrate_child_sa<'a>(
        &'a self,
        handle: &'a ChildSaHandle,
        to: OuterPair,
        encap: Option<Encap>,
    ) -> BoxFut<'a, ChildSaHandle>;
    /// Remove SAs and policies, and the inbound copy if there is one
    /// (continues past errors, returns the first).
    fn delete_child_sa<'a>(&'a self, handle: &'a ChildSaHandle) -> BoxFut<'a, ()>;
    /// Make-before-break for a move of our address (RFC 4555 §3.5, the
    /// old path still working): a copy of the inbound SA at our address
    /// `local` (same SPI, keys, replay state and counters), so the peer's
    /// ESP is taken there from the moment the peer switches, while the
    /// inbound SA at the current address takes what the peer still sends
    /// there. A copy at another address goes first; `local` being the
    /// current address only removes the copy. A later
    /// [`migrate_child_sa`](Self::migrate_child_sa) to `local` with the
    /// same peer address makes the copy the inbound SA (the old one is
    /// deleted, not moved; the kernel cannot move an SA onto an existing
    /// one); one to any other pair removes it first. Returns the handle
    /// naming the copy.
    ///
    /// Replay protection across the move: the copy starts from the
    /// original's replay state when it is made, so ESP the old address
    /// took after that (about one round trip) can be replayed once to the
    /// new address within the replay window.
    fn add_inbound_copy<'a>(
        &'a self,
        handle: &'a ChildSaHandle,
        local: IpAddr,
    ) -> BoxFut<'a, ChildSaHandle>;
    /// Removes the inbound copy (a move abandoned); returns the handle
    /// without it. A copy the kernel no longer has is not an error.
    fn remove_inbound_copy<'a>(&'a self, handle: &'a ChildSaHandle) -> BoxFut<'a, ChildSaHandle>;
    /// Read both SAs' counters.
    fn counters<'a>(&'a self, handle: &'a ChildSaHandle) -> BoxFut<'a, ChildSaCounters>;
    /// The counters of many pairs, in their order; a pair whose SAs are
    /// gone gets the error `counters` would give. The kernel backend reads
    /// them all with one SA dump instead of two requests per pair.
    fn counters_of<'a>(&'a self, handles: &'a [ChildSaHandle]) -> ManyCounters<'a> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(handles.len());
            for h in handles {
                out.push(self.counters(h).await);
            }
            out
        })
    }
    /// Subscribe to kernel events (expire, acquire, mapping, migrate, ...).
    fn events(&self) -> Result<BoxStream<'static, Result<XfrmEvent, Error>>, Error>;
    /// Subscribe to the events a key manager acts on only: SA expires and
    /// NAT-T mapping changes ([`crate::monitor::KEY_MANAGER_GROUPS`]), so
    /// that other XFRM notifications do not fill the queue. An overrun is
    /// still possible and comes as [`Error::MonitorOverrun`]: events were
    /// lost, and the caller re-reads the state it depends on. By default
    /// the same as [`Self::events`].
    fn key_manager_events(&self) -> Result<BoxStream<'static, Result<XfrmEvent, Error>>, Error> {
        self.events()
    }
    /// Removes the SAs whose reqid is in `reqids`, and the policies with a
    /// template of such a reqid: what an earlier run of the daemon that
    /// owns the range left behind when it was killed (charon flushes its
    /// own state at start the same way). Continues past errors, returns
    /// the first; state of other reqids (another daemon's) is untouched.
    fn remove_leftovers<'a>(&'a self, reqids: RangeInclusive<u32>) -> BoxFut<'a, Leftovers>;
}

/// What [`ChildSaBackend::remove_leftovers`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// SAs.
    pub sas: usize,
    /// Policies.
    pub policies: usize,
}

/// A shared backend is a backend: the caller keeps a handle (e.g. to a
/// [`FakeBackend`] it feeds traffic into) while the user owns a box.
impl<T: ChildSaBackend + ?Sized> ChildSaBackend for std::sync::Arc<T> {
    fn install_child_sa<'a>(&'a self, spec: &'a ChildSaSpec) -> BoxFut<'a, ChildSaHandle> {
        (**self).install_child_sa(spec)
    }
    fn migrate_child_sa<'a>(
        &'a self,
        handle: &'a ChildSaHandle,
        to: OuterPair,
        encap: Option<Encap>,
    ) -> BoxFut<'a, ChildSaHandle> {
        (**self).migrate_child_sa(handle, to, encap)
    }
    fn delete_child_sa<'a>(&'a self, handle: &'a ChildSaHandle) -> BoxFut<'a, ()> {
        (**self).delete_child_sa(handle)
    }
    fn add_inbound_copy<'a>(
        &'a self,
        handle: &'a ChildSaHandle,
        local: IpAddr,
    ) -> BoxFut<'a, ChildSaHandle> {
        (**self).add_inbound_copy(handle, local)
    }
    fn remove_inbound_copy<'a>(&'a self, handle: &'a ChildSaHandle) -> BoxFut<'a, ChildSaHandle> {
        (**self).remove_inbound_copy(handle)
    }
    fn counters<'a>(&'a self, handle: &'a ChildSaHandle) -> BoxFut<'a, ChildSaCounters> {
        (**self).counters(handle)
    }
    fn counters_of<'a>(&'a self, handles: &'a [ChildSaHandle]) -> ManyCounters<'a> {
        (**self).counters_of(handles)
    }
    fn events(&self) -> Result<BoxStream<'static, Result<XfrmEvent, Error>>, Error> {
        (**self).events()
    }
    fn remove_leftovers<'a>(&'a self, reqids: RangeInclusive<u32>) -> BoxFut<'a, Leftovers> {
        (**self).remove_leftovers(reqids)
    }
    fn key_manager_events(&self) -> Result<BoxStream<'static, Result<XfrmEvent, Error>>, Error> {
        (**self).key_manager_events()
    }
}
