//! The per-call context an IKE SA works with ([`Ctx`]): the time, the
//! configuration, randomness, the endpoint's output queues and counters,
//! and the cross-SA work it asks for; and where randomness comes from
//! ([`Entropy`]).

use std::{
    collections::VecDeque,
    net::IpAddr,
    time::{Duration, Instant},
};

use ring::rand::{SecureRandom, SystemRandom};
use tracing::debug;

use super::{EndpointConfig, Event, KernelAction, Path, Stats, Transmit, index::SpiTable, sa, vip};
use crate::proto;

/// Output queues, shared by all SAs.
#[derive(Debug, Clone, Default)]
pub(super) struct Outputs {
    pub(super) transmits: VecDeque<Transmit>,
    pub(super) events: VecDeque<Event>,
    pub(super) kernel: VecDeque<KernelAction>,
    /// Kernel actions the queued datagrams do not wait for (see
    /// [`Ctx::kernel_after_send`]); they stay behind every action in
    /// `kernel`.
    pub(super) kernel_after_send: VecDeque<KernelAction>,
}

/// Per-call context handed to an SA.
pub(super) struct Ctx<'a> {
    pub(super) now: Instant,
    pub(super) config: &'a EndpointConfig,
    pub(super) rng: &'a SystemRandom,
    pub(super) entropy: &'a mut dyn Entropy,
    pub(super) out: &'a mut Outputs,
    pub(super) stats: &'a mut Stats,
    /// The gateway's address leases (virtual IPs).
    pub(super) leases: &'a mut vip::Leases,
    pub(super) next_reqid: &'a mut u32,
    pub(super) new_sas: Vec<sa::IkeSa>,
    pub(super) sa_ops: Vec<sa::SaOp>,
    /// Inbound ESP SPIs in use anywhere on this endpoint.
    pub(super) spis: &'a mut SpiTable,
    /// Our usable local addresses as last announced
    /// ([`super::Command::AnnounceAddresses`]); None before that.
    pub(super) usable_addrs: Option<&'a [IpAddr]>,
    /// The wall-clock time at `now` (certificate validity).
    pub(super) wall: std::time::SystemTime,
}

impl Ctx<'_> {
    pub(super) fn send(&mut self, path: Path, nat_t_port: u16, msg: &[u8]) {
        let mut payload = Vec::with_capacity(msg.len() + 4);
        if path.local.port() == nat_t_port {
            payload.extend_from_slice(&proto::NON_ESP_MARKER);
        }
        payload.extend_from_slice(msg);
        self.out.transmits.push_back(Transmit {
            local: path.local,
            remote: path.remote,
            payload,
        });
    }

    pub(super) fn event(&mut self, e: Event) {
        debug!(event = ?e, "ike event");
        self.out.events.push_back(e);
    }

    pub(super) fn kernel(&mut self, k: KernelAction) {
        // Behind any action queued to go after the datagrams: the order
        // in which the engine asked is the order the kernel sees.
        let after = std::mem::take(&mut self.out.kernel_after_send);
        self.out.kernel.extend(after);
        self.out.kernel.push_back(k);
    }

    /// A kernel action that need not be done before the datagrams queued
    /// with it go out: the runtime sends first, then applies it
    /// ([`super::Endpoint::poll_kernel_action_before_send`]). For work
    /// the datagram's receiver does in parallel with ours, such as the
    /// CHILD_SAs of a lost pair migrated as the update goes out: the peer
    /// starts moving its SAs while ours move.
    pub(super) fn kernel_after_send(&mut self, k: KernelAction) {
        self.out.kernel_after_send.push_back(k);
    }

    /// When to rekey something made now: `base` later, less a random part
    /// of `rand` (RFC 7296 §2.8 asks for jitter to keep both ends from
    /// rekeying at once). None when `base` is.
    pub(super) fn rekey_at(
        &mut self,
        base: Option<Duration>,
        rand: Option<Duration>,
    ) -> Option<Instant> {
        let base = base?;
        let share = match rand {
            Some(r) if !r.is_zero() => self.random::<4>().map(|b| (r.min(base), b)),
            _ => None,
        };
        let jitter = share.map_or(Duration::ZERO, |(r, b)| {
            r.mul_f64(f64::from(u32::from_be_bytes(b)) / 4_294_967_296.0)
        });
        Some(self.now + (base - jitter))
    }

    pub(super) fn random<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        self.entropy.fill(&mut b).then_some(b)
    }

    pub(super) fn spi64(&mut self) -> Option<u64> {
        loop {
            let v = u64::from_be_bytes(self.random::<8>()?);
            if v != 0 {
                return Some(v);
            }
        }
    }

    pub(super) fn spi32(&mut self) -> Option<u32> {
        loop {
            // SPIs 1-255 are reserved by IANA (RFC 4303 §2.1); inbound SPIs
            // must be unique on this host.
            let v = u32::from_be_bytes(self.random::<4>()?);
            if v > 255 && self.spis.take(v) {
                return Some(v);
            }
        }
    }

    /// The next reqid, from [`super::REQIDS`], wrapping within it.
    pub(super) fn reqid(&mut self) -> u32 {
        let r = &super::REQIDS;
        *self.next_reqid = match *self.next_reqid {
            n if r.contains(&n) && n < *r.end() => n + 1,
            _ => *r.start(),
        };
        *self.next_reqid
    }
}

/// Where SPIs, nonces and the cookie secret come from. The default is the
/// system generator; a simulator can make runs reproducible with a seeded
/// source (ring's DH keys stay random, which changes key bytes but never
/// the course of an exchange).
pub trait Entropy: std::fmt::Debug + Send {
    /// Fills `buf`; false if no randomness is available.
    fn fill(&mut self, buf: &mut [u8]) -> bool;

    /// An independent source in the same state, for
    /// [`Endpoint::try_clone`](super::Endpoint::try_clone): a seeded source
    /// copied goes on with the same sequence in both. None (the default)
    /// if the source cannot be copied.
    fn try_clone(&self) -> Option<Box<dyn Entropy>> {
        None
    }
}

/// [`Entropy`] from the operating system (ring's `SystemRandom`).
#[derive(Debug, Clone)]
pub struct SystemEntropy(SystemRandom);

impl Default for SystemEntropy {
    fn default() -> Self {
        SystemEntropy(SystemRandom::new())
    }
}

impl Entropy for SystemEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        self.0.fill(buf).is_ok()
    }

    /// The system generator has no state of ours: the copy draws its own
    /// random numbers.
    fn try_clone(&self) -> Option<Box<dyn Entropy>> {
        Some(Box::new(self.clone()))
    }
}
