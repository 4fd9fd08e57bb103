//! A deterministic network simulator for IKE endpoints, after quinn's
//! `Pair`: virtual time; nodes with several addresses (IPv4 and IPv6),
//! added and removed at run time; a link model per address pair (latency,
//! loss, duplication, reordering by random extra latency, up/down) with
//! one default for the pairs without their own; NATs in front of node
//! addresses, which can rebind; scheduled events that fire at a virtual
//! time and act on the whole simulation (link events, address changes,
//! engine commands); and a model of each node's kernel SAD built from the
//! engine's kernel actions. Datagrams go to the node that has their
//! destination address (through the NAT in front of it, if any).
//! A node may run the mobility manager, driven as the runtime drives it.
//! Everything is driven from the engines' (and managers') own deadlines and
//! the scheduled events; there is no wall clock.
//!
//! - [`net`]: the RNG, link models, NATs;
//! - [`node`]: one engine, its addresses and kernel model;
//! - [`mobility`]: a node's mobility manager, its simulated interfaces
//!   and the network changes it is told of (or not);
//! - [`config`]: the usual configurations, addresses and seeds;
//! - [`wire`]: the record of IKE messages, scripted losses and the
//!   accounting of outages.

mod config;
mod mobility;
mod net;
mod node;
mod wire;

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use mobike_agent::engine::{Command, EndpointConfig, Transmit};

pub use config::*;
pub use net::{LinkModel, Links, Nat, Rng};
pub use node::{Node, SeededEntropy};
pub use wire::{Fate, ScriptedLoss, Wire, ike_header};

#[derive(Debug)]
struct InFlight {
    at: Instant,
    seq: u64,
    from: usize,
    src: SocketAddr,
    dst: SocketAddr,
    payload: Vec<u8>,
}

/// What a scheduled event does, with the whole simulation at hand.
pub type Action = Box<dyn FnOnce(&mut Sim)>;

/// An entry of the event queue: `action` runs at `at` of virtual time.
pub struct Scheduled {
    pub at: Instant,
    seq: u64,
    pub label: String,
    action: Action,
}

impl fmt::Debug for Scheduled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduled")
            .field("at", &self.at)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// The nodes and the network between them. Node 0 initiates.
#[derive(Debug)]
pub struct Sim {
    pub start: Instant,
    pub now: Instant,
    pub rng: Rng,
    /// The model of every address pair without one of its own.
    pub link: LinkModel,
    /// The pairs with their own model, and the addresses that are down.
    pub links: Links,
    pub nats: Vec<Nat>,
    pub nodes: Vec<Node>,
    flight: Vec<InFlight>,
    seq: u64,
    /// Events still to fire.
    scheduled: Vec<Scheduled>,
    /// Events fired, with the time they fired.
    pub fired: Vec<(Instant, String)>,
    /// Optional tap: called with every delivered datagram (for tests that
    /// capture and replay).
    pub delivered: Vec<(usize, SocketAddr, SocketAddr, Vec<u8>)>,
    /// Every IKE message on the wire, with its fate and the time, so the
    /// fate of any exchange can be counted (see [`Sim::explain_unreachable`]).
    pub wire: Vec<Wire>,
    /// Losses on top of the link model, for tests that need one exchange
    /// to fail in a precise way.
    pub scripted_losses: Vec<ScriptedLoss>,
}

impl Sim {
    /// Node addresses come from A's connection (its local and remote
    /// address), defaulting to [`A_ADDR`] and [`B_ADDR`].
    pub fn new(a: EndpointConfig, b: EndpointConfig, seed: u64, link: LinkModel) -> Self {
        let first = a.connections.first();
        let a_ip = first
            .and_then(|c| c.local_addr)
            .map_or(ip(A_ADDR), |s| s.ip());
        let b_ip = first
            .and_then(|c| c.remote_addr)
            .map_or(ip(B_ADDR), |s| s.ip());
        let start = Instant::now();
        let entropy = |n: u64| seed.wrapping_mul(1000).wrapping_add(n);
        Sim {
            start,
            now: start,
            rng: Rng::new(seed),
            link,
            links: Links::default(),
            nats: Vec::new(),
            nodes: vec![
                Node::new(a, a_ip, entropy(1)),
                Node::new(b, b_ip, entropy(2)),
            ],
            flight: Vec::new(),
            seq: 0,
            scheduled: Vec::new(),
            fired: Vec::new(),
            delivered: Vec::new(),
            wire: Vec::new(),
            scripted_losses: Vec::new(),
        }
    }

    /// Puts node 0 behind a NAT: `private` becomes its only address and
    /// the NAT rewrites it to [`A_ADDR`].
    pub fn with_nat(mut self, private: IpAddr) -> Self {
        self.nodes[0].addrs = vec![private];
        self.add_nat(ip(A_ADDR), &[private]);
        self
    }

    // ------------------------------------------------------------------
    // addresses, paths and NATs

    /// `node` gains `addr` (no other node may have it).
    pub fn add_addr(&mut self, node: usize, addr: IpAddr) {
        assert!(
            self.nodes.iter().all(|n| !n.has_addr(addr)),
            "{addr} is taken"
        );
        self.nodes[node].addrs.push(addr);
    }

    /// `node` loses `addr`: datagrams to it are dropped, also those in
    /// flight, and what the node still sends from it is lost.
    pub fn remove_addr(&mut self, node: usize, addr: IpAddr) {
        let n = &mut self.nodes[node];
        let before = n.addrs.len();
        n.addrs.retain(|a| *a != addr);
        assert!(n.addrs.len() < before, "node {node} has no {addr}");
    }

    /// Kills (`up` false) or revives a whole address, a node's or a NAT's
    /// public one: nothing from or to it gets through meanwhile. The node
    /// keeps the address.
    pub fn set_addr_up(&mut self, addr: IpAddr, up: bool) {
        self.links.set_addr_down(addr, !up);
    }

    /// Gives the path between `a` and `b` (both directions, addresses as
    /// on the wire: a NAT's public one for the addresses behind it) its own
    /// link model.
    pub fn set_link(&mut self, a: IpAddr, b: IpAddr, model: LinkModel) {
        self.links.set_one_way(a, b, model.clone());
        self.links.set_one_way(b, a, model);
    }

    /// Kills (`up` false) or revives the path between `a` and `b` (both
    /// directions, addresses as on the wire), whatever its link model.
    pub fn set_path_up(&mut self, a: IpAddr, b: IpAddr, up: bool) {
        self.links.set_pair_down(a, b, !up);
        self.links.set_pair_down(b, a, !up);
    }

    /// The model datagrams from `src` to `dst` (as on the wire) meet.
    pub fn link_model(&self, src: IpAddr, dst: IpAddr) -> &LinkModel {
        self.links.model(&self.link, src, dst)
    }

    /// Whether anything gets from `src` to `dst` (as on the wire): neither
    /// address nor the path is killed and the link model is not down.
    pub fn path_up(&self, src: IpAddr, dst: IpAddr) -> bool {
        !(self.links.addr_down(src)
            || self.links.addr_down(dst)
            || self.links.pair_down(src, dst)
            || self.link_model(src, dst).down)
    }

    /// Puts a NAT with address `public` in front of `inside` (addresses
    /// of nodes, now or later); returns its index in [`Sim::nats`].
    pub fn add_nat(&mut self, public: IpAddr, inside: &[IpAddr]) -> usize {
        self.nats.push(Nat::new(public, inside.iter().copied()));
        self.nats.len() - 1
    }

    /// NAT `nat` loses its mappings, and moves to `public` if given (see
    /// [`Nat::rebind`]).
    pub fn rebind_nat(&mut self, nat: usize, public: Option<IpAddr>) {
        self.nats[nat].rebind(public);
    }

    /// Where a datagram sent from `local` appears to come from on the wire:
    /// its NAT mapping if a NAT is in front of it (None if not mapped yet).
    pub fn wire_addr(&self, local: SocketAddr) -> Option<SocketAddr> {
        match self.nats.iter().find(|n| n.inside.contains(&local.ip())) {
            Some(nat) => nat.mapped(local),
            None => Some(local),
        }
    }

    /// The node and address (behind a NAT, the inside one) a datagram to
    /// `dst` reaches now, if any.
    fn resolve(&self, dst: SocketAddr) -> Option<(usize, SocketAddr)> {
        let dst = match self.nats.iter().find(|n| n.public == dst.ip()) {
            Some(nat) => nat.inbound(dst)?,
            None => dst,
        };
        let to = self.nodes.iter().position(|n| n.has_addr(dst.ip()))?;
        Some((to, dst))
    }

    // ------------------------------------------------------------------
    // scheduled events

    /// Schedules `action` to run `after` from now of virtual time (between
    /// steps, before the datagrams due at the same instant are delivered).
    /// Events due at one instant run in the order they were scheduled; an
    /// action may schedule more.
    pub fn schedule(
        &mut self,
        after: Duration,
        label: impl Into<String>,
        action: impl FnOnce(&mut Sim) + 'static,
    ) {
        self.seq += 1;
        self.scheduled.push(Scheduled {
            at: self.now + after,
            seq: self.seq,
            label: label.into(),
            action: Box::new(action),
        });
    }

    /// Events scheduled and not fired yet.
    pub fn pending_events(&self) -> impl Iterator<Item = &Scheduled> {
        self.scheduled.iter()
    }

    /// Runs every scheduled event due by `now`.
    fn fire_due(&mut self) {
        while let Some(i) = self
            .scheduled
            .iter()
            .enumerate()
            .filter(|(_, e)| e.at <= self.now)
            .min_by_key(|(_, e)| (e.at, e.seq))
            .map(|(i, _)| i)
        {
            let e = self.scheduled.swap_remove(i);
            self.fired.push((self.now, e.label));
            (e.action)(self);
            self.pump_outputs();
        }
    }

    // ------------------------------------------------------------------
    // the event loop

    fn send(&mut self, from: usize, t: Transmit) {
        // A node cannot send from an address it does not have (the
        // kernel refuses); a NAT in front of the address maps it.
        let owned = self.nodes[from].has_addr(t.local.ip());
        let mut src = t.local;
        if owned && let Some(nat) = self.nats.iter_mut().find(|n| n.inside.contains(&src.ip())) {
            src = nat.outbound(src);
        }
        let inside_dst = self.resolve(t.remote).map(|(_, d)| d.ip());
        let cut = !owned
            || [
                Some(t.local.ip()),
                Some(src.ip()),
                Some(t.remote.ip()),
                inside_dst,
            ]
            .into_iter()
            .flatten()
            .any(|a| self.links.addr_down(a))
            || self.links.pair_down(src.ip(), t.remote.ip());
        let link = self
            .links
            .model(&self.link, src.ip(), t.remote.ip())
            .clone();
        let header = ike_header(&t.payload);
        let scripted = header.is_some_and(|h| {
            self.scripted_losses.iter_mut().any(|l| {
                let hit = l.count > 0
                    && l.from == from
                    && l.exchange == h.exchange
                    && l.response == h.is_response();
                if hit {
                    l.count -= 1;
                }
                hit
            })
        });
        let lost = scripted || cut || link.down || self.rng.chance(link.loss_per_mille);
        if let Some(header) = header {
            for fate in [Fate::Sent, Fate::Lost].into_iter().take(1 + lost as usize) {
                self.wire.push(Wire {
                    at: self.now,
                    from,
                    fate,
                    header,
                });
            }
        }
        if lost {
            return;
        }
        let copies = if self.rng.chance(link.dup_per_mille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = Duration::from_micros(self.rng.below(link.jitter.as_micros() as u64 + 1));
            self.seq += 1;
            self.flight.push(InFlight {
                at: self.now + link.latency + jitter,
                seq: self.seq,
                from,
                src,
                dst: t.remote,
                payload: t.payload.clone(),
            });
        }
    }

    fn pump_outputs(&mut self) {
        for i in 0..self.nodes.len() {
            for t in self.nodes[i].drain(self.now) {
                self.send(i, t);
            }
        }
    }

    fn next_time(&self) -> Option<Instant> {
        let f = self.flight.iter().map(|f| f.at).min();
        let t = self
            .nodes
            .iter()
            .flat_map(|n| {
                let m = n.mobility.as_ref();
                [
                    n.ep.poll_timeout(),
                    m.and_then(|m| m.driver.manager().poll_timeout()),
                ]
            })
            .flatten()
            .min();
        let e = self.scheduled.iter().map(|e| e.at).min();
        [f, t, e].into_iter().flatten().min()
    }

    /// One step: advance to the next event and process it. False when
    /// nothing is pending before `limit`.
    fn step(&mut self, limit: Instant) -> bool {
        self.pump_outputs();
        let Some(next) = self.next_time() else {
            return false;
        };
        if next > limit {
            return false;
        }
        self.now = self.now.max(next);
        let now = self.now;
        self.fire_due();
        let mut due: Vec<InFlight> = Vec::new();
        let mut rest = Vec::new();
        for f in self.flight.drain(..) {
            if f.at <= now {
                due.push(f)
            } else {
                rest.push(f)
            }
        }
        self.flight = rest;
        due.sort_by_key(|f| (f.at, f.seq));
        for f in due {
            let Some((to, dst)) = self.resolve(f.dst) else {
                continue;
            };
            if let Some(header) = ike_header(&f.payload) {
                self.wire.push(Wire {
                    at: now,
                    from: f.from,
                    fate: Fate::Delivered,
                    header,
                });
            }
            self.delivered.push((to, dst, f.src, f.payload.clone()));
            self.nodes[to]
                .ep
                .handle_datagram(now, dst, f.src, &f.payload);
        }
        for n in &mut self.nodes {
            if n.ep.poll_timeout().is_some_and(|t| t <= now) {
                n.ep.handle_timeout(now);
            }
        }
        self.pump_outputs();
        true
    }

    /// Runs until `cond` holds (checked between steps) or `within` of
    /// virtual time passes. Returns whether `cond` held.
    pub fn run_until(&mut self, within: Duration, mut cond: impl FnMut(&Sim) -> bool) -> bool {
        let limit = self.now + within;
        let mut same = (self.now, 0u32);
        loop {
            self.pump_outputs();
            // The engine's incremental indexes (inbound SPIs, half-open
            // SAs, deadlines) must match a scan of its SAs at every step.
            for (i, n) in self.nodes.iter().enumerate() {
                assert!(
                    n.ep.indexes_agree(),
                    "node {i}: engine indexes disagree with its SAs"
                );
            }
            if cond(self) {
                return true;
            }
            // A timer that stays due without being handled would spin here.
            same = if same.0 == self.now {
                (self.now, same.1 + 1)
            } else {
                (self.now, 0)
            };
            assert!(
                same.1 < 100_000,
                "no progress at {:?}: engine deadlines {:?}, managers' {:?}",
                self.now - self.start,
                self.nodes
                    .iter()
                    .map(|n| n.ep.poll_timeout())
                    .collect::<Vec<_>>(),
                self.nodes
                    .iter()
                    .map(|n| n
                        .mobility
                        .as_ref()
                        .map(|m| m.driver.manager().poll_timeout()))
                    .collect::<Vec<_>>(),
            );
            if !self.step(limit) {
                self.now = self.now.max(limit);
                return cond(self);
            }
        }
    }

    /// Runs for exactly `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    // ------------------------------------------------------------------
    // commands and checks

    pub fn initiate(&mut self) {
        self.nodes[0]
            .ep
            .handle_command(
                self.now,
                Command::Initiate {
                    connection: "ab".into(),
                    local: None,
                },
            )
            .expect("initiate");
    }

    /// Nothing is left on any node (see [`Node::is_clean`]).
    pub fn all_clean(&self) -> bool {
        self.nodes.iter().all(Node::is_clean)
    }

    pub fn both_established(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| n.established() == 1 && n.kernel.len() == 1)
    }

    /// Every CHILD_SA of A has its mirror on B: A's outbound SPI and key
    /// are B's inbound ones, and the other way round.
    pub fn children_pair_up(&self) -> bool {
        let (a, b) = (&self.nodes[0].kernel, &self.nodes[1].kernel);
        a.len() == b.len()
            && a.values().all(|x| {
                b.get(&x.outbound.spi).is_some_and(|y| {
                    y.outbound.spi == x.inbound.spi
                        && y.inbound.key == x.outbound.key
                        && y.outbound.key == x.inbound.key
                        && y.inbound.aead == x.outbound.aead
                        && y.local_ts == x.remote_ts
                        && y.remote_ts == x.local_ts
                })
            })
    }

    /// A's and B's established IKE SAs and the kernel models agree on the
    /// paths: each IKE SA is on addresses its node has, A's path as seen
    /// on the wire (through its NAT) is B's path the other way round, each
    /// CHILD_SA in the kernel model is on its IKE SA's addresses, and UDP
    /// encapsulation goes to the IKE SA's ports.
    pub fn paths_agree(&self) -> Result<(), String> {
        let (a, b) = (self.nodes[0].ep.ike_sas(), self.nodes[1].ep.ike_sas());
        let a: Vec<_> = a.iter().filter(|s| s.state == "established").collect();
        if a.is_empty() {
            return Err("A has no established IKE SA".into());
        }
        for sa_a in a {
            let sa_b = b
                .iter()
                .find(|s| s.spi_i == sa_a.spi_i && s.spi_r == sa_a.spi_r)
                .ok_or_else(|| format!("B has no IKE SA {:#018x}", sa_a.id))?;
            for (n, sa) in [(0, sa_a), (1, sa_b)] {
                let node = &self.nodes[n];
                if !node.has_addr(sa.path.local.ip()) {
                    return Err(format!("node {n} is on {} it does not have", sa.path.local));
                }
                for (spi, _) in &sa.children {
                    let k = node.kernel.get(spi).ok_or_else(|| {
                        format!("node {n}: CHILD_SA {spi:#010x} not in the kernel")
                    })?;
                    if (k.local, k.remote) != (sa.path.local.ip(), sa.path.remote.ip()) {
                        return Err(format!(
                            "node {n}: CHILD_SA {spi:#010x} on {} -> {}, its IKE SA on {:?}",
                            k.local, k.remote, sa.path
                        ));
                    }
                    if let Some(e) = k.encap
                        && (e.local_port, e.remote_port)
                            != (sa.path.local.port(), sa.path.remote.port())
                    {
                        return Err(format!(
                            "node {n}: CHILD_SA {spi:#010x} encapsulates {e:?}, its IKE SA is \
                             on {:?}",
                            sa.path
                        ));
                    }
                }
            }
            let a_seen = self.wire_addr(sa_a.path.local);
            if a_seen != Some(sa_b.path.remote) || sa_a.path.remote != sa_b.path.local {
                return Err(format!(
                    "A is on {:?} (seen as {a_seen:?}), B on {:?}",
                    sa_a.path, sa_b.path
                ));
            }
        }
        Ok(())
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }
}
