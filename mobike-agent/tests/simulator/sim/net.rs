//! The network between the nodes: the seeded RNG deciding each datagram's
//! fate, link models, and NATs in front of node addresses.

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

/// splitmix64: small, seedable, good enough to decide packet fates.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// True with probability `per_mille`/1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// How the network treats datagrams between two addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkModel {
    pub latency: Duration,
    /// Extra random delay up to this, which reorders datagrams.
    pub jitter: Duration,
    pub loss_per_mille: u64,
    pub dup_per_mille: u64,
    /// Nothing gets through.
    pub down: bool,
}

impl LinkModel {
    pub fn clean() -> Self {
        LinkModel {
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss_per_mille: 0,
            dup_per_mille: 0,
            down: false,
        }
    }
    pub fn lossy() -> Self {
        LinkModel {
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(300),
            loss_per_mille: 150,
            dup_per_mille: 100,
            down: false,
        }
    }
}

/// The link models of the address pairs that have their own, and the
/// pairs and addresses that are down, whatever their model. Pairs are
/// (source, destination) as on the wire between the NATs and the peer.
#[derive(Debug, Default)]
pub struct Links {
    pairs: HashMap<(IpAddr, IpAddr), LinkModel>,
    /// Nothing from the first to the second gets through.
    down_pairs: BTreeSet<(IpAddr, IpAddr)>,
    /// Nothing from or to these addresses gets through.
    down: BTreeSet<IpAddr>,
}

impl Links {
    /// The model for datagrams from `src` to `dst`, `default` unless the
    /// pair has its own.
    pub fn model<'a>(&'a self, default: &'a LinkModel, src: IpAddr, dst: IpAddr) -> &'a LinkModel {
        self.pairs.get(&(src, dst)).unwrap_or(default)
    }

    /// Gives datagrams from `src` to `dst` (one direction) their own model.
    pub fn set_one_way(&mut self, src: IpAddr, dst: IpAddr, model: LinkModel) {
        self.pairs.insert((src, dst), model);
    }

    pub fn set_pair_down(&mut self, src: IpAddr, dst: IpAddr, down: bool) {
        if down {
            self.down_pairs.insert((src, dst));
        } else {
            self.down_pairs.remove(&(src, dst));
        }
    }

    pub fn pair_down(&self, src: IpAddr, dst: IpAddr) -> bool {
        self.down_pairs.contains(&(src, dst))
    }

    pub fn set_addr_down(&mut self, addr: IpAddr, down: bool) {
        if down {
            self.down.insert(addr);
        } else {
            self.down.remove(&addr);
        }
    }

    pub fn addr_down(&self, addr: IpAddr) -> bool {
        self.down.contains(&addr)
    }
}

/// A NAPT: rewrites the source of datagrams from the addresses behind it
/// (`inside`) to `public` and a port of its own, and lets in only what
/// comes to a port it handed out.
#[derive(Debug)]
pub struct Nat {
    pub public: IpAddr,
    pub inside: BTreeSet<IpAddr>,
    next_port: u16,
    out: HashMap<SocketAddr, u16>,
    back: HashMap<u16, SocketAddr>,
}

impl Nat {
    pub fn new(public: IpAddr, inside: impl IntoIterator<Item = IpAddr>) -> Self {
        Nat {
            public,
            inside: inside.into_iter().collect(),
            next_port: 40000,
            out: HashMap::new(),
            back: HashMap::new(),
        }
    }

    /// The public address and port for `src`, mapping it now if needed.
    pub(super) fn outbound(&mut self, src: SocketAddr) -> SocketAddr {
        let port = *self.out.entry(src).or_insert_with(|| {
            self.next_port += 1;
            self.back.insert(self.next_port, src);
            self.next_port
        });
        SocketAddr::new(self.public, port)
    }

    /// The inside address and port a datagram to `dst` (the public
    /// address) goes to, if that port is mapped.
    pub(super) fn inbound(&self, dst: SocketAddr) -> Option<SocketAddr> {
        self.back.get(&dst.port()).copied()
    }

    /// The current public address and port of `src`, if it is mapped.
    pub fn mapped(&self, src: SocketAddr) -> Option<SocketAddr> {
        self.out.get(&src).map(|p| SocketAddr::new(self.public, *p))
    }

    /// The NAT loses its mappings (a reboot, a mapping timed out, a new
    /// uplink): the next datagram from inside gets a new port, on `public`
    /// if given, and datagrams to the old ports are dropped.
    pub fn rebind(&mut self, public: Option<IpAddr>) {
        self.out.clear();
        self.back.clear();
        if let Some(p) = public {
            self.public = p;
        }
    }
}
