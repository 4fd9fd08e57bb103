//! A deterministic network simulator for two IKE endpoints, after quinn's
//! `Pair`: virtual time, a seeded RNG deciding loss, duplication and
//! reordering (random extra latency), an optional NAT in front of the
//! initiator, and a model of each side's kernel SAD built from the engine's
//! kernel actions. Everything is driven from the engine's own deadlines;
//! there is no wall clock.

#![allow(dead_code)]

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use mobike_agent::{
    engine::{
        ChildConfig, ChildSaInstall, ConnectionConfig, DeleteReason, Endpoint, EndpointConfig,
        Entropy, Event, KernelAction, Mode, SaId, Timers, Transmit, parse_identity, parse_ts,
    },
    proposal::{EspProposal, IkeProposal, parse_list},
    proto::{ExchangeType, Header},
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

/// Seeded SPIs and nonces, so a seed replays the same run (only the DH
/// keys, and so the key bytes, differ between runs).
#[derive(Debug)]
pub struct SeededEntropy(pub Rng);

impl Entropy for SeededEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        for chunk in buf.chunks_mut(8) {
            let v = self.0.next().to_be_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        true
    }
}

/// How the network treats datagrams.
#[derive(Debug, Clone)]
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

/// A NAPT in front of node 0: rewrites its private source to `public`.
#[derive(Debug)]
pub struct Nat {
    pub private: IpAddr,
    pub public: IpAddr,
    next_port: u16,
    out: HashMap<SocketAddr, u16>,
    back: HashMap<u16, SocketAddr>,
}

impl Nat {
    pub fn new(private: IpAddr, public: IpAddr) -> Self {
        Nat {
            private,
            public,
            next_port: 40000,
            out: HashMap::new(),
            back: HashMap::new(),
        }
    }
    fn outbound(&mut self, src: SocketAddr) -> SocketAddr {
        let port = *self.out.entry(src).or_insert_with(|| {
            self.next_port += 1;
            self.back.insert(self.next_port, src);
            self.next_port
        });
        SocketAddr::new(self.public, port)
    }
    fn inbound(&self, dst: SocketAddr) -> Option<SocketAddr> {
        self.back.get(&dst.port()).copied()
    }
}

/// One endpoint plus what it told the outside world.
#[derive(Debug)]
pub struct Node {
    pub ep: Endpoint,
    pub addr: IpAddr,
    pub events: Vec<Event>,
    /// Kernel SAD model: inbound SPI -> install.
    pub kernel: BTreeMap<u32, ChildSaInstall>,
    pub kernel_log: Vec<KernelAction>,
    /// Every datagram it sent, as sent.
    pub sent: Vec<Transmit>,
}

impl Node {
    fn drain(&mut self, now: Instant) -> Vec<Transmit> {
        while let Some(e) = self.ep.poll_event() {
            // As the runtime does: a restart is an initiate.
            if let Event::RestartDue { connection } = &e {
                let cmd = mobike_agent::engine::Command::Initiate {
                    connection: connection.clone(),
                    local: None,
                };
                self.ep.handle_command(now, cmd).expect("restart");
            }
            self.events.push(e);
        }
        while let Some(k) = self.ep.poll_kernel_action() {
            match &k {
                KernelAction::InstallChildSa(i) => {
                    assert!(
                        self.kernel.insert(i.inbound.spi, (**i).clone()).is_none(),
                        "SPI installed twice"
                    );
                }
                KernelAction::MigrateChildSa {
                    inbound_spi,
                    from,
                    to,
                    encap,
                    ..
                } => {
                    let sa = self
                        .kernel
                        .get_mut(inbound_spi)
                        .expect("migrate of an SA never installed");
                    assert_eq!((sa.local, sa.remote), *from, "migrated from where it was");
                    (sa.local, sa.remote) = *to;
                    sa.encap = *encap;
                }
                KernelAction::DeleteChildSa { inbound_spi, .. } => {
                    assert!(
                        self.kernel.remove(inbound_spi).is_some(),
                        "delete of an SA never installed"
                    );
                }
            }
            self.kernel_log.push(k);
        }
        let mut v = Vec::new();
        while let Some(t) = self.ep.poll_transmit() {
            self.sent.push(t.clone());
            v.push(t);
        }
        v
    }

    pub fn established(&self) -> usize {
        self.ep
            .ike_sas()
            .iter()
            .filter(|s| s.state == "established")
            .count()
    }

    /// Nothing at all is left: no IKE SA, no half-open, no index entry, no
    /// kernel SA, no virtual IP held.
    pub fn is_clean(&self) -> bool {
        self.ep.ike_sa_count() == 0
            && self.ep.init_index_len() == 0
            && self.kernel.is_empty()
            && self.ep.leases_online() == 0
    }
}

#[derive(Debug)]
struct InFlight {
    at: Instant,
    seq: u64,
    to: usize,
    src: SocketAddr,
    dst: SocketAddr,
    payload: Vec<u8>,
}

/// Two nodes and the network between them. Node 0 initiates.
#[derive(Debug)]
pub struct Sim {
    pub start: Instant,
    pub now: Instant,
    pub rng: Rng,
    pub link: LinkModel,
    pub nat: Option<Nat>,
    pub nodes: [Node; 2],
    flight: Vec<InFlight>,
    seq: u64,
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

/// Lose the next `count` IKE messages of `exchange` sent by node `from`
/// (requests or responses), whatever the link model says.
#[derive(Debug, Clone)]
pub struct ScriptedLoss {
    pub from: usize,
    pub exchange: ExchangeType,
    pub response: bool,
    pub count: u32,
}

/// What happened to an IKE message: sent by `from`, then lost or delivered
/// to the other node (duplication can deliver one twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Sent,
    Lost,
    Delivered,
}

/// One entry of [`Sim::wire`].
#[derive(Debug, Clone, Copy)]
pub struct Wire {
    pub at: Instant,
    pub from: usize,
    pub fate: Fate,
    pub header: Header,
}

/// The IKE header of a datagram as sent (after the non-ESP marker on the
/// NAT-T port); None for keepalives and anything else.
pub fn ike_header(payload: &[u8]) -> Option<Header> {
    match payload {
        [0, 0, 0, 0, rest @ ..] => Header::decode(rest).or_else(|_| Header::decode(payload)),
        _ => Header::decode(payload),
    }
    .ok()
}

/// What the network did to one request and to the peer's answers to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestFate {
    /// Transmissions of the request (the first and every retransmission).
    pub sent: usize,
    /// Of those, lost by the link.
    pub lost: usize,
    /// Copies delivered to the peer (duplication may deliver two of one).
    pub delivered: usize,
    /// Answers the peer sent (a fresh one or a replay from its cache).
    pub answers_sent: usize,
    /// Of those, lost by the link.
    pub answers_lost: usize,
    /// Answers delivered back to the requester.
    pub answers_delivered: usize,
}

/// Seeds for a randomized test: `0..default`, or `MOBIKE_SIM_SEEDS=N`
/// (`0..N`, soak runs) or `=A..B` (replay some).
pub fn seeds(default: u64) -> std::ops::Range<u64> {
    let v = std::env::var("MOBIKE_SIM_SEEDS").unwrap_or_default();
    if let Some((a, b)) = v.split_once("..")
        && let (Ok(a), Ok(b)) = (a.parse(), b.parse())
    {
        return a..b;
    }
    0..v.parse().unwrap_or(default)
}

pub const A_ADDR: &str = "192.0.2.1";
pub const B_ADDR: &str = "192.0.2.2";

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

pub fn sock(a: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(a, port)
}

pub fn timers() -> Timers {
    Timers {
        retransmit_timeout: Duration::from_secs(1),
        retransmit_tries: 5,
        dpd_delay: Some(Duration::from_secs(30)),
        ike_rekey_time: None,
        ike_rand_time: None,
        nat_keepalive: Duration::from_secs(20),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn connection(
    name: &str,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    local_id: &str,
    remote_id: &str,
    psk: &str,
    ike: &str,
    esp: &str,
    local_ts: &str,
    remote_ts: &str,
) -> ConnectionConfig {
    ConnectionConfig {
        name: name.into(),
        local_addr: local,
        remote_addr: remote,
        local_id: parse_identity(local_id).expect("id"),
        remote_id: parse_identity(remote_id).expect("id"),
        psk: psk.as_bytes().to_vec(),
        ike_proposals: parse_list(ike, IkeProposal::parse).expect("ike proposal"),
        mobike: true,
        children: vec![ChildConfig {
            name: "net".into(),
            local_ts: vec![parse_ts(local_ts).expect("ts")],
            remote_ts: vec![parse_ts(remote_ts).expect("ts")],
            esp_proposals: parse_list(esp, EspProposal::parse).expect("esp proposal"),
            mode: Mode::Tunnel,
            rekey_time: None,
            rand_time: None,
            limits: Default::default(),
        }],
        timers: timers(),
        recovery: Default::default(),
        vips: Vec::new(),
        pools: Vec::new(),
    }
}

/// The usual pair: A (initiator, 10.1/24) and B (responder, 10.2/24).
pub fn configs(ike: &str, esp: &str) -> (EndpointConfig, EndpointConfig) {
    let a = connection(
        "ab",
        Some(sock(ip(A_ADDR), 500)),
        Some(sock(ip(B_ADDR), 500)),
        "a.test",
        "b.test",
        "sim-psk-0123456789",
        ike,
        esp,
        "10.1.0.0/24",
        "10.2.0.0/24",
    );
    let b = connection(
        "ab",
        None,
        None,
        "b.test",
        "a.test",
        "sim-psk-0123456789",
        ike,
        esp,
        "10.2.0.0/24",
        "10.1.0.0/24",
    );
    (
        EndpointConfig {
            connections: vec![a],
            ..EndpointConfig::default()
        },
        EndpointConfig {
            connections: vec![b],
            ..EndpointConfig::default()
        },
    )
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
        let node = |cfg, addr, n: u64| Node {
            ep: Endpoint::with_entropy(
                cfg,
                Box::new(SeededEntropy(Rng::new(
                    seed.wrapping_mul(1000).wrapping_add(n),
                ))),
            )
            .expect("endpoint"),
            addr,
            events: Vec::new(),
            kernel: BTreeMap::new(),
            kernel_log: Vec::new(),
            sent: Vec::new(),
        };
        Sim {
            start,
            now: start,
            rng: Rng::new(seed),
            link,
            nat: None,
            nodes: [node(a, a_ip, 1), node(b, b_ip, 2)],
            flight: Vec::new(),
            seq: 0,
            delivered: Vec::new(),
            wire: Vec::new(),
            scripted_losses: Vec::new(),
        }
    }

    /// Puts node 0 behind a NAT: it keeps `private` as its address and the
    /// NAT rewrites to its public address.
    pub fn with_nat(mut self, private: IpAddr) -> Self {
        let public = ip(A_ADDR);
        self.nodes[0].addr = private;
        self.nat = Some(Nat::new(private, public));
        self
    }

    fn schedule(&mut self, from: usize, t: Transmit) {
        let to = 1 - from;
        let mut src = t.local;
        if from == 0
            && let Some(nat) = self.nat.as_mut()
        {
            src = nat.outbound(src);
        }
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
        let lost = scripted || self.link.down || self.rng.chance(self.link.loss_per_mille);
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
        let copies = if self.rng.chance(self.link.dup_per_mille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter =
                Duration::from_micros(self.rng.below(self.link.jitter.as_micros() as u64 + 1));
            self.seq += 1;
            self.flight.push(InFlight {
                at: self.now + self.link.latency + jitter,
                seq: self.seq,
                to,
                src,
                dst: t.remote,
                payload: t.payload.clone(),
            });
        }
    }

    fn pump_outputs(&mut self) {
        for i in 0..2 {
            for t in self.nodes[i].drain(self.now) {
                self.schedule(i, t);
            }
        }
    }

    fn next_time(&self) -> Option<Instant> {
        let f = self.flight.iter().map(|f| f.at).min();
        let t = self.nodes.iter().filter_map(|n| n.ep.poll_timeout()).min();
        [f, t].into_iter().flatten().min()
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
            let mut dst = f.dst;
            if f.to == 0
                && let Some(nat) = self.nat.as_ref()
            {
                match nat.inbound(dst) {
                    Some(d) => dst = d,
                    None => continue,
                }
            }
            if dst.ip() != self.nodes[f.to].addr {
                continue;
            }
            if let Some(header) = ike_header(&f.payload) {
                self.wire.push(Wire {
                    at: now,
                    from: 1 - f.to,
                    fate: Fate::Delivered,
                    header,
                });
            }
            self.delivered.push((f.to, dst, f.src, f.payload.clone()));
            self.nodes[f.to]
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
        loop {
            self.pump_outputs();
            if cond(self) {
                return true;
            }
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

    pub fn initiate(&mut self) {
        self.nodes[0]
            .ep
            .handle_command(
                self.now,
                mobike_agent::engine::Command::Initiate {
                    connection: "ab".into(),
                    local: None,
                },
            )
            .expect("initiate");
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

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The last request `node` sent on its IKE SA `sa` (the one outstanding
    /// when the SA ended), the wire entries of its copies and of the peer's
    /// answers, and their count.
    pub fn last_request_fate(
        &self,
        node: usize,
        sa: SaId,
    ) -> Option<(Header, Vec<Wire>, RequestFate)> {
        let request = self
            .wire
            .iter()
            .filter(|w| w.from == node && w.fate == Fate::Sent && !w.header.is_response())
            .map(|w| w.header)
            .filter(|h| (if h.from_initiator() { h.spi_i } else { h.spi_r }) == sa)
            .max_by_key(|h| h.message_id)?;
        // An IKE_SA_INIT request has no responder SPI yet; its answers do.
        let exchange: Vec<Wire> = self
            .wire
            .iter()
            .filter(|w| {
                let h = &w.header;
                h.spi_i == request.spi_i
                    && (request.spi_r == 0 || h.spi_r == request.spi_r)
                    && h.exchange == request.exchange
                    && h.message_id == request.message_id
                    && h.is_response() == (w.from != node)
            })
            .copied()
            .collect();
        let count = |response: bool, fate: Fate| {
            exchange
                .iter()
                .filter(|w| w.header.is_response() == response && w.fate == fate)
                .count()
        };
        let fate = RequestFate {
            sent: count(false, Fate::Sent),
            lost: count(false, Fate::Lost),
            delivered: count(false, Fate::Delivered),
            answers_sent: count(true, Fate::Sent),
            answers_lost: count(true, Fate::Lost),
            answers_delivered: count(true, Fate::Delivered),
        };
        Some((request, exchange, fate))
    }

    /// Accounts for every IKE SA that ended as `PeerUnreachable`. Each must
    /// have used its whole retransmission budget with no answer delivered,
    /// and one of these must hold:
    ///
    /// - the link lost every attempt: each copy of the request was lost, or
    ///   delivered and answered (fresh or from the response cache) with
    ///   every answer lost;
    /// - it was IKE_AUTH and the peer's half-open SA expired first, a whole
    ///   half-open timeout after the peer's last IKE_SA_INIT answer, with no
    ///   copy of IKE_AUTH delivered before that;
    /// - the peer had given up on the same IKE SA in one of those ways, and
    ///   only copies delivered after its last attempt (when it had nothing
    ///   left to answer them with) went unanswered.
    ///
    /// Returns one line per such SA, or what the link does not explain.
    pub fn explain_unreachable(&self) -> Result<Vec<String>, String> {
        let ended = |n: usize, why: DeleteReason| {
            self.nodes[n].events.iter().filter_map(move |e| match e {
                Event::IkeSaDeleted { sa, reason } if *reason == why => Some(*sa),
                _ => None,
            })
        };
        let config = |n: usize| self.nodes[n].ep.config();
        let tries = |n: usize| {
            config(n)
                .connections
                .first()
                .map_or(0, |c| c.timers.retransmit_tries as usize)
        };
        // A death the link caused on its own (or with the peer's half-open
        // timeout); None when it needs the peer's death to explain it.
        type Verdict = (String, Option<&'static str>);
        let by_loss = |n: usize, sa: SaId| -> Result<Verdict, String> {
            let (h, exchange, f) = self
                .last_request_fate(n, sa)
                .ok_or_else(|| format!("node {n}: SA {sa:#018x} died without a request"))?;
            let what = format!(
                "node {n}: SA {sa:#018x} {:?} #{}: {} sends ({} lost, {} copies delivered), \
                 {} answers (all lost)",
                h.exchange, h.message_id, f.sent, f.lost, f.delivered, f.answers_sent
            );
            if f.sent != tries(n) + 1 {
                return Err(format!(
                    "{what}: gave up after {} sends, not {}",
                    f.sent,
                    tries(n) + 1
                ));
            }
            if f.answers_delivered > 0 || f.answers_lost != f.answers_sent {
                return Err(format!("{what}: an answer got through ({f:?})"));
            }
            if f.answers_sent == f.delivered && f.lost + f.answers_lost >= f.sent {
                return Ok((what, Some("the link lost every attempt")));
            }
            let peer = 1 - n;
            let last_init_answer = self
                .wire
                .iter()
                .filter(|w| {
                    w.from == peer
                        && w.fate == Fate::Sent
                        && w.header.exchange == ExchangeType::IKE_SA_INIT
                        && w.header.is_response()
                        && w.header.spi_i == h.spi_i
                        && w.header.spi_r == h.spi_r
                })
                .map(|w| w.at)
                .max();
            let first_delivery = exchange
                .iter()
                .filter(|w| w.fate == Fate::Delivered)
                .map(|w| w.at)
                .min();
            if h.exchange == ExchangeType::IKE_AUTH
                && f.answers_sent == 0
                && ended(peer, DeleteReason::HalfOpenTimeout).any(|p| p == h.spi_r)
                && last_init_answer.is_some_and(|t| {
                    first_delivery.is_none_or(|d| d >= t + config(peer).half_open_timeout)
                })
            {
                return Ok((
                    what,
                    Some("the link lost every attempt until the peer's half-open SA expired"),
                ));
            }
            Ok((what, None))
        };
        let mut out = Vec::new();
        for n in 0..2 {
            for sa in ended(n, DeleteReason::PeerUnreachable) {
                let (what, why) = by_loss(n, sa)?;
                if let Some(why) = why {
                    out.push(format!("{what}: {why}"));
                    continue;
                }
                let Some((h, exchange, _)) = self.last_request_fate(n, sa) else {
                    continue;
                };
                // The peer's SPI for the same IKE SA, and when it last tried
                // its own failing request there.
                let theirs = if h.from_initiator() { h.spi_r } else { h.spi_i };
                let peer_lost_it = ended(1 - n, DeleteReason::PeerUnreachable)
                    .any(|p| p == theirs && by_loss(1 - n, p).is_ok_and(|(_, w)| w.is_some()));
                let peer_last_try = self.last_request_fate(1 - n, theirs).and_then(|(_, e, _)| {
                    e.iter()
                        .filter(|w| w.from != n && w.fate == Fate::Sent)
                        .map(|w| w.at)
                        .max()
                });
                // Copies delivered while the peer still had the SA were
                // answered (the answer goes out at the same instant).
                let before = |response: bool, fate: Fate| {
                    exchange
                        .iter()
                        .filter(|w| {
                            w.header.is_response() == response
                                && w.fate == fate
                                && peer_last_try.is_some_and(|t| w.at <= t)
                        })
                        .count()
                };
                if !peer_lost_it || before(true, Fate::Sent) < before(false, Fate::Delivered) {
                    return Err(format!(
                        "{what}: delivered copies went unanswered and the peer did not \
                         lose the SA to the link first"
                    ));
                }
                out.push(format!("{what}: the peer had lost the SA to the link"));
            }
        }
        Ok(out)
    }
}
