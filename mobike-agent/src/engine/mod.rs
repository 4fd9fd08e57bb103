//! The sans-IO IKEv2 engine (RFC 7296), shaped like quinn-proto: inputs are
//! [`Endpoint::handle_datagram`], [`Endpoint::handle_timeout`] and
//! [`Endpoint::handle_command`], each with `now` passed in; outputs are
//! polled: [`Endpoint::poll_transmit`] (datagrams), [`Endpoint::poll_kernel_action`]
//! (CHILD_SA installs and deletes as plain data), [`Endpoint::poll_timeout`]
//! (the next deadline) and [`Endpoint::poll_event`].
//!
//! It does IKE_SA_INIT (cookies, INVALID_KE_PAYLOAD retry, NAT detection),
//! IKE_AUTH with PSK and the first CHILD_SA (tunnel mode, §2.9 narrowing),
//! CREATE_CHILD_SA (new CHILD_SA, CHILD_SA rekey, IKE SA rekey, as initiator
//! and responder, including crossing rekeys by the nonce rules of §2.8.1 and
//! §2.8.2 and the TEMPORARY_FAILURE rules of §2.25), INFORMATIONAL
//! (liveness checks, Delete, AUTHENTICATION_FAILED), retransmission with
//! exponential backoff, a message-ID window of one with replay of the cached
//! response, the float to port 4500 and NAT keepalives, in both roles.
//! The address pair of an IKE SA is a field ([`Path`]) that MOBIKE moves;
//! MOBIKE_SUPPORTED is exchanged in IKE_AUTH. It has no sockets, no clock,
//! no tokio and no kernel access; SPIs and nonces come from an [`Entropy`]
//! (the system generator unless a simulator seeds one), DH keys from ring.
//! MOBIKE: the address update of RFC 4555 §3.5 in both roles
//! ([`Command::UpdateAddresses`] with ranked fallback pairs; UPDATE_SA_ADDRESSES
//! with NAT-D and COOKIE2, CHILD_SAs migrated as
//! [`KernelAction::MigrateChildSa`], UNACCEPTABLE_ADDRESSES sent and honoured),
//! path testing (§3.10, [`Command::TestPaths`]) and address lists (§3.4,
//! §3.6: ours in IKE_AUTH and on [`Command::AnnounceAddresses`], the peer's
//! reported as [`Event::PeerAddresses`]); as responder, a return
//! routability check (§5.2) before the CHILD_SAs follow an update to an
//! unlisted address; NAT-D in liveness checks (§3.8) and NO_NATS_ALLOWED
//! (§3.9); kernel MIGRATE refusals and NAT mappings come back as commands.
//! The engine reports, the caller chooses the pairs. It does not do EAP,
//! certificates, IKE fragmentation, BEET mode or SET_WINDOW_SIZE;
//! inbound SPIs are random (unique on the endpoint) rather than allocated by
//! the kernel.
//!
//! Layout: this module is the [`Endpoint`] (the SAs, the IKE_SA_INIT index,
//! dispatch of inputs to SAs and cross-SA work); `types` is the public
//! vocabulary re-exported here (commands, events, kernel actions, status);
//! `config` the configuration; `ctx` the per-call context an SA works with
//! and [`Entropy`]; `index` what the endpoint keeps about its SAs so that
//! no input costs a scan of them all (inbound SPIs, half-open SAs by
//! source, deadlines); `cookie` the IKE_SA_INIT cookies and their rotating
//! secret; `recovery` re-establishing connections; [`vip`] the address
//! pools; `sa` one IKE SA, split by exchange.

mod config;
mod cookie;
mod ctx;
mod index;
mod recovery;
mod sa;
mod types;
pub mod vip;

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use ring::rand::SystemRandom;
use tracing::{debug, trace};

pub use config::*;
pub use ctx::{Entropy, SystemEntropy};
pub use types::*;

use crate::proto::{self, DecodeError, Header, NatTDatagram};
use cookie::CookieSecrets;
use ctx::{Ctx, Outputs};
use index::SaIndex;
use recovery::ConnRecovery;

/// The reqids of our CHILD_SAs' kernel SAs and policies: a range of our
/// own, far above the small numbers charon counts up from, so that at
/// start the agent can tell the state a killed run of it left behind from
/// other daemons' and remove it (`Kernel::remove_leftovers`).
pub const REQIDS: std::ops::RangeInclusive<u32> = 0x6d00_0001..=0x6dff_ffff;

/// The IKEv2 endpoint: all IKE SAs of this host.
#[derive(Debug)]
pub struct Endpoint {
    /// Shared with the endpoint's copies ([`Endpoint::try_clone`]); a
    /// reload puts a new one in place.
    config: Arc<EndpointConfig>,
    rng: SystemRandom,
    entropy: Box<dyn Entropy>,
    sas: BTreeMap<SaId, sa::IkeSa>,
    /// Responder SAs by the (peer, SPIi) of their IKE_SA_INIT, to recognise
    /// retransmitted or duplicated IKE_SA_INIT requests (§2.1).
    init_index: HashMap<(SocketAddr, u64), SaId>,
    /// Inbound SPIs, half-open SAs by source and deadlines, kept as the
    /// SAs change so that no input costs a scan of all SAs.
    index: SaIndex,
    /// The secrets of our IKE_SA_INIT cookies (§2.6).
    cookies: CookieSecrets,
    next_reqid: u32,
    out: Outputs,
    stats: Stats,
    /// Re-establishment state by connection index ([`Recovery`]).
    recovery: HashMap<usize, ConnRecovery>,
    /// Virtual IPs handed out from the connections' pools.
    leases: vip::Leases,
    /// Our usable local addresses, once announced
    /// ([`Command::AnnounceAddresses`]).
    usable_addrs: Option<Vec<IpAddr>>,
    /// `usable_addrs` came with [`Command::UsableAddresses`]: the next
    /// [`Command::AnnounceAddresses`] checks every IKE SA.
    usable_unannounced: bool,
    /// An `Instant` and the wall-clock time at it: certificate validity is
    /// in wall-clock time, the engine's clock is `now: Instant`.
    clock: (Instant, std::time::SystemTime),
}

impl Endpoint {
    /// A new endpoint with no SAs.
    pub fn new(config: EndpointConfig) -> Result<Self, CommandError> {
        Self::with_entropy(config, Box::new(SystemEntropy::default()))
    }

    /// A new endpoint drawing SPIs, nonces and its cookie secret from
    /// `entropy`.
    pub fn with_entropy(
        config: EndpointConfig,
        mut entropy: Box<dyn Entropy>,
    ) -> Result<Self, CommandError> {
        let mut cookie_secret = [0u8; 32];
        if !entropy.fill(&mut cookie_secret) {
            return Err(CommandError::Random);
        }
        Ok(Endpoint {
            config: Arc::new(config),
            rng: SystemRandom::new(),
            entropy,
            sas: BTreeMap::new(),
            init_index: HashMap::new(),
            index: SaIndex::default(),
            cookies: CookieSecrets::new(cookie_secret),
            next_reqid: 0,
            out: Outputs::default(),
            stats: Stats::default(),
            recovery: HashMap::new(),
            leases: vip::Leases::default(),
            usable_addrs: None,
            usable_unannounced: false,
            clock: (Instant::now(), std::time::SystemTime::now()),
        })
    }

    /// Sets which wall-clock time an `Instant` is (certificates are valid
    /// between wall-clock times); by default the times at construction.
    pub fn set_wall_clock(&mut self, at: Instant, wall: std::time::SystemTime) {
        self.clock = (at, wall);
    }

    /// An independent endpoint in the same state: its SAs, indexes, cookie
    /// secrets, leases, counters and queued outputs are copied, and the
    /// configuration (immutable: a reload replaces it) is shared, so that
    /// what one is given from now on does not touch the other. For running
    /// many inputs from one prepared state (the engine fuzz target); the
    /// daemon never copies its endpoint. Randomness drawn afterwards comes
    /// from a copy of the [`Entropy`] (the system generator: fresh numbers
    /// in each; a seeded source: the same ones in both). None while an SA
    /// holds a Diffie-Hellman private key of its own outstanding
    /// IKE_SA_INIT or CREATE_CHILD_SA request (ring's ephemeral keys cannot
    /// be copied), or when the entropy source cannot be copied.
    pub fn try_clone(&self) -> Option<Endpoint> {
        let mut sas = BTreeMap::new();
        for (id, sa) in &self.sas {
            sas.insert(*id, sa.try_clone()?);
        }
        Some(Endpoint {
            config: Arc::clone(&self.config),
            rng: self.rng.clone(),
            entropy: self.entropy.try_clone()?,
            sas,
            init_index: self.init_index.clone(),
            index: self.index.clone(),
            cookies: self.cookies.clone(),
            next_reqid: self.next_reqid,
            out: self.out.clone(),
            stats: self.stats.clone(),
            recovery: self.recovery.clone(),
            leases: self.leases.clone(),
            usable_addrs: self.usable_addrs.clone(),
            usable_unannounced: self.usable_unannounced,
            clock: self.clock,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The context an IKE SA works with during one call at `now`.
    fn ctx(&mut self, now: Instant) -> Ctx<'_> {
        Ctx {
            now,
            config: &self.config,
            rng: &self.rng,
            entropy: self.entropy.as_mut(),
            out: &mut self.out,
            stats: &mut self.stats,
            next_reqid: &mut self.next_reqid,
            new_sas: Vec::new(),
            sa_ops: Vec::new(),
            spis: &mut self.index.spis,
            leases: &mut self.leases,
            usable_addrs: self.usable_addrs.as_deref(),
            wall: match now.checked_duration_since(self.clock.0) {
                Some(d) => self.clock.1 + d,
                None => self.clock.1 - self.clock.0.duration_since(now),
            },
        }
    }

    /// Number of IKE SAs in any state.
    pub fn ike_sa_count(&self) -> usize {
        self.sas.len()
    }

    /// Number of responder half-open SAs.
    pub fn half_open_count(&self) -> usize {
        self.index.half_open()
    }

    /// Number of responder half-open SAs from `source`.
    pub fn half_open_from(&self, source: IpAddr) -> usize {
        self.index.half_open_from(source)
    }

    /// Whether the endpoint's indexes (inbound SPIs, half-open SAs,
    /// deadlines) agree with its SAs, recomputed by a scan; for tests.
    #[doc(hidden)]
    pub fn indexes_agree(&self) -> bool {
        let spis: usize = self.sas.values().map(|s| s.inbound_spis().count()).sum();
        let spis_ok = spis == self.index.spis.len()
            && self.sas.iter().all(|(id, s)| {
                s.inbound_spis()
                    .all(|spi| self.index.spis.owner(spi) == Some(*id))
            });
        let half_open = self.sas.values().filter(|s| s.is_half_open()).count();
        let deadline = self
            .sas
            .values()
            .filter_map(|s| s.next_deadline(&self.config))
            .min();
        spis_ok && half_open == self.index.half_open() && deadline == self.index.next_deadline()
    }

    /// Summary of every IKE SA, for status output and tests.
    pub fn ike_sas(&self) -> Vec<IkeSaInfo> {
        self.sas.values().map(|s| s.info(&self.config)).collect()
    }

    /// Summary of one IKE SA.
    pub fn ike_sa(&self, id: SaId) -> Option<IkeSaInfo> {
        self.sas.get(&id).map(|s| s.info(&self.config))
    }

    /// The address pair of one IKE SA (without building its whole
    /// [`IkeSaInfo`]).
    pub fn ike_sa_path(&self, id: SaId) -> Option<Path> {
        self.sas.get(&id).map(|s| s.path())
    }

    /// Whether datagrams, events or kernel actions wait to be polled.
    pub fn has_output(&self) -> bool {
        !self.out.transmits.is_empty()
            || !self.out.events.is_empty()
            || !self.out.kernel.is_empty()
            || !self.out.kernel_after_send.is_empty()
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    /// Next kernel action, in the order the engine asked for them.
    pub fn poll_kernel_action(&mut self) -> Option<KernelAction> {
        self.out
            .kernel
            .pop_front()
            .or_else(|| self.out.kernel_after_send.pop_front())
    }

    /// Next kernel action that must be applied before the queued
    /// datagrams are sent; the rest ([`Endpoint::poll_kernel_action`]) may
    /// follow the datagrams. A runtime that does not care polls
    /// `poll_kernel_action` alone.
    pub fn poll_kernel_action_before_send(&mut self) -> Option<KernelAction> {
        self.out.kernel.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let restarts = self.recovery.values().filter_map(|r| r.due);
        self.index.next_deadline().into_iter().chain(restarts).min()
    }

    fn with_sa<R>(
        &mut self,
        now: Instant,
        id: SaId,
        f: impl FnOnce(&mut sa::IkeSa, &mut Ctx<'_>) -> R,
    ) -> Option<R> {
        let mut sa = self.sas.remove(&id)?;
        let before: Vec<u32> = sa.inbound_spis().collect();
        // One span per IKE SA: every log line of its processing carries it.
        let _span = tracing::info_span!("ike_sa", sa = format_args!("{id:016x}")).entered();
        let mut ctx = self.ctx(now);
        let r = f(&mut sa, &mut ctx);
        let new_sas = std::mem::take(&mut ctx.new_sas);
        let ops = std::mem::take(&mut ctx.sa_ops);
        // Who holds which inbound SPI now: this SA, the SAs it made, and
        // the IKE SAs CHILD_SAs are handed to.
        let mut after = vec![(sa.id(), sa.live_spis())];
        after.extend(new_sas.iter().map(|n| (n.id(), n.live_spis())));
        for op in &ops {
            if let sa::SaOp::HandOff { to, children } = op {
                after.push((*to, children.iter().map(sa::Child::inbound_spi).collect()));
            }
        }
        self.index.spis.settle(before, &after);
        self.put_back(now, sa);
        for n in new_sas {
            self.put_back(now, n);
        }
        self.apply_sa_ops(now, ops);
        Some(r)
    }

    /// The IKE SA that has the CHILD_SA with our inbound SPI `inbound_spi`.
    fn sa_of_child(&self, inbound_spi: u32) -> Result<SaId, CommandError> {
        self.index
            .spis
            .owner(inbound_spi)
            .filter(|id| self.sas.contains_key(id))
            .ok_or(CommandError::NoChildSa(inbound_spi))
    }

    /// IKE SA `to` takes over `children` and goes on with its queue; if it
    /// vanished meanwhile, they are lost, said so.
    fn adopt(&mut self, now: Instant, to: SaId, children: Vec<sa::Child>) {
        match self.sas.get_mut(&to) {
            Some(t) => {
                t.adopt_children(children);
                self.with_sa(now, to, |s, ctx| s.kick(ctx));
            }
            None => {
                tracing::warn!(
                    to,
                    lost = children.len(),
                    "CHILD_SAs handed to a vanished IKE SA"
                );
                self.index
                    .spis
                    .settle(children.iter().map(sa::Child::inbound_spi), &[]);
            }
        }
    }

    /// Cross-SA work of §2.8.2 (simultaneous IKE SA rekey).
    fn apply_sa_ops(&mut self, now: Instant, ops: Vec<sa::SaOp>) {
        for op in ops {
            match op {
                sa::SaOp::HandOff { to, children } => self.adopt(now, to, children),
                sa::SaOp::MoveChildren { from, to } => {
                    let children = match self.sas.get_mut(&from) {
                        // The redundant SA only waits for its creator's Delete.
                        Some(f) => f.surrender_children(now, self.config.half_open_timeout),
                        None => continue,
                    };
                    self.refresh(from);
                    self.adopt(now, to, children);
                }
                sa::SaOp::Delete(id) => {
                    self.with_sa(now, id, |s, ctx| s.delete(ctx));
                }
                sa::SaOp::PurgeStale { keep, conn } => {
                    let stale: Vec<SaId> = self
                        .sas
                        .iter()
                        .filter(|(id, s)| {
                            **id != keep && s.conn_index() == conn && s.is_authenticated()
                        })
                        .map(|(id, _)| *id)
                        .collect();
                    for id in stale {
                        self.with_sa(now, id, |s, ctx| s.forget(ctx, DeleteReason::PeerRestarted));
                    }
                }
                sa::SaOp::ClearCollision(id) => {
                    if let Some(s) = self.sas.get_mut(&id) {
                        s.clear_collision();
                    }
                    self.refresh(id);
                }
                sa::SaOp::PeerHasIt(id) => {
                    self.with_sa(now, id, |s, ctx| s.peer_has_it(ctx));
                }
            }
        }
    }

    /// Brings the indexes up to date with SA `id` after a change made in
    /// place.
    fn refresh(&mut self, id: SaId) {
        if let Some(s) = self.sas.get(&id) {
            self.index.set_deadline(id, s.next_deadline(&self.config));
            self.index.set_half_open(id, s.half_open_source());
        }
    }

    fn put_back(&mut self, now: Instant, sa: sa::IkeSa) {
        let id = sa.id();
        match sa.init_key() {
            Some(key) => {
                self.init_index.insert(key, id);
            }
            None => {
                if let Some(key) = sa.init_peer()
                    && self.init_index.get(&key) == Some(&id)
                {
                    self.init_index.remove(&key);
                }
            }
        }
        if sa.ended().is_some() {
            self.index.set_half_open(id, None);
            self.index.set_deadline(id, None);
        } else {
            self.index.set_half_open(id, sa.half_open_source());
            self.index.set_deadline(id, sa.next_deadline(&self.config));
        }
        if let Some(ended) = sa.ended() {
            // An address another IKE SA of the peer holds too (after an IKE
            // SA rekey, or a collision's redundant SA) stays online with it.
            for a in sa.peer_vips() {
                match self.sas.values().find(|o| o.peer_vips().contains(a)) {
                    Some(other) => self.leases.hold(other.id(), &[*a]),
                    None => self.leases.release(sa.id(), &[*a]),
                }
            }
            self.after_end(now, ended);
            return;
        }
        if !sa.peer_vips().is_empty() {
            self.leases.hold(sa.id(), sa.peer_vips());
        }
        if sa.is_authenticated()
            && let Some(r) = self.recovery.get_mut(&sa.conn_index())
        {
            r.failed_attempts = 0;
        }
        self.sas.insert(sa.id(), sa);
    }

    /// The virtual IPs peers assigned us, over every IKE SA (what the host
    /// should have).
    pub fn virtual_ips(&self) -> std::collections::BTreeSet<IpAddr> {
        self.sas
            .values()
            .flat_map(|s| s.vips().iter().copied())
            .collect()
    }

    /// Virtual IPs handed out that an IKE SA holds now (tests check they
    /// are given back).
    pub fn leases_online(&self) -> usize {
        self.leases.online()
    }

    /// Size of the IKE_SA_INIT index (tests check it does not leak).
    pub fn init_index_len(&self) -> usize {
        self.init_index.len()
    }

    /// Takes a new configuration while running (SIGHUP): a connection
    /// whose configuration is unchanged keeps its IKE SAs; one that
    /// changed or is gone has its IKE SAs deleted (with the peer), and a
    /// changed or new one is there for new SAs (the caller initiates the
    /// ones to start). Endpoint-wide settings take the new values.
    /// Connections keep their place, so SAs always find theirs: a gone one
    /// stays as a nameless entry that matches nothing.
    pub fn reload(&mut self, now: Instant, new: EndpointConfig) -> ReloadReport {
        let mut report = ReloadReport::default();
        let mut incoming = new.connections;
        let mut conns = self.config.connections.clone();
        let mut retired = Vec::new();
        for (i, c) in conns.iter_mut().enumerate() {
            if c.name.is_empty() {
                continue;
            }
            match incoming.iter().position(|n| n.name == c.name) {
                Some(j) if incoming[j] == *c => {
                    incoming.remove(j);
                    report.unchanged.push(c.name.clone());
                }
                found => {
                    if found.is_some() {
                        report.changed.push(c.name.clone());
                    } else {
                        report.removed.push(c.name.clone());
                    }
                    retire(c);
                    retired.push(i);
                }
            }
        }
        for c in incoming {
            if !report.changed.contains(&c.name) {
                report.added.push(c.name.clone());
            }
            conns.push(c);
        }
        self.config = Arc::new(EndpointConfig {
            connections: conns,
            ..new
        });
        // Timers may have changed.
        let ids: Vec<SaId> = self.sas.keys().copied().collect();
        for id in ids {
            self.refresh(id);
        }
        for i in retired {
            self.recovery.remove(&i);
            let ids: Vec<SaId> = self
                .sas
                .iter()
                .filter(|(_, s)| s.conn_index() == i)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                self.with_sa(now, id, |sa, ctx| sa.delete(ctx));
            }
        }
        report
    }

    /// The configuration of connection `name`.
    pub fn connection(&self, name: &str) -> Option<&ConnectionConfig> {
        self.config.connections.iter().find(|c| c.name == name)
    }

    /// Handles a command.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) -> Result<(), CommandError> {
        match cmd {
            Command::Initiate { connection, local } => {
                let conn = self
                    .config
                    .connections
                    .iter()
                    .position(|c| c.name == connection)
                    .ok_or(CommandError::UnknownConnection(connection.clone()))?;
                let c = &self.config.connections[conn];
                let (Some(local), Some(remote)) = (c.local_addr.or(local), c.remote_addr) else {
                    // No way towards the peer right now (no route): a
                    // failed attempt, tried again as keyingtries allow.
                    let retry = c.remote_addr.is_some()
                        && (c.recovery.keyingtries != 1
                            || self.recovery.get(&conn).is_some_and(|r| r.restarting));
                    if retry {
                        self.attempt_failed(now, conn, "no local address towards the peer");
                    }
                    return Err(CommandError::NoAddresses(connection));
                };
                if let Some(r) = self.recovery.get_mut(&conn) {
                    r.restarting = false;
                }
                let initial_contact = !self.sas.values().any(|s| s.conn_index() == conn);
                let mut ctx = self.ctx(now);
                let sa =
                    sa::IkeSa::initiate(&mut ctx, conn, Path { local, remote }, initial_contact);
                self.settle_new(now, sa).ok_or(CommandError::Random)
            }
            Command::DeleteAll => {
                // Nothing is to come back either.
                self.recovery.clear();
                let ids: Vec<SaId> = self.sas.keys().copied().collect();
                for id in ids {
                    self.with_sa(now, id, |sa, ctx| sa.delete(ctx));
                }
                Ok(())
            }
            Command::DeleteIkeSa(id) => self
                .with_sa(now, id, |sa, ctx| sa.delete(ctx))
                .ok_or(CommandError::UnknownSa(id)),
            Command::RekeyIkeSa(id) => self
                .with_sa(now, id, |sa, ctx| sa.command_rekey_ike(ctx))
                .ok_or(CommandError::UnknownSa(id))?,
            Command::RekeyChildSa { sa, inbound_spi } => self
                .with_sa(now, sa, |s, ctx| s.command_rekey_child(ctx, inbound_spi))
                .ok_or(CommandError::UnknownSa(sa))?,
            Command::DeleteChildSa { sa, inbound_spi } => self
                .with_sa(now, sa, |s, ctx| s.command_delete_child(ctx, inbound_spi))
                .ok_or(CommandError::UnknownSa(sa))?,
            Command::CreateChildSa { sa, child } => self
                .with_sa(now, sa, |s, ctx| s.command_create_child(ctx, child))
                .ok_or(CommandError::UnknownSa(sa))?,
            Command::ChildSaExpired { inbound_spi, hard } => {
                let sa = self.sa_of_child(inbound_spi)?;
                self.with_sa(now, sa, |s, ctx| s.child_expired(ctx, inbound_spi, hard))
                    .ok_or(CommandError::UnknownSa(sa))?
            }
            Command::MigrateFailed { inbound_spi } => {
                let sa = self.sa_of_child(inbound_spi)?;
                self.with_sa(now, sa, |s, ctx| s.migrate_failed(ctx, inbound_spi))
                    .ok_or(CommandError::UnknownSa(sa))?
            }
            Command::NatMapping {
                inbound_spi,
                remote,
            } => {
                let sa = self.sa_of_child(inbound_spi)?;
                self.with_sa(now, sa, |s, ctx| s.nat_mapping(ctx, remote))
                    .ok_or(CommandError::UnknownSa(sa))?
            }
            Command::Dpd(id) => self
                .with_sa(now, id, |sa, ctx| sa.command_dpd(ctx))
                .ok_or(CommandError::UnknownSa(id))?,
            Command::UpdateAddresses {
                sa,
                local,
                remote,
                fallback,
            } => self
                .with_sa(now, sa, |s, ctx| {
                    let mut paths = vec![Path { local, remote }];
                    paths.extend(fallback);
                    s.command_update_addresses(ctx, paths)
                })
                .ok_or(CommandError::UnknownSa(sa))?,
            Command::PathLost { sa } => self
                .with_sa(now, sa, |s, _| s.command_path_lost())
                .ok_or(CommandError::UnknownSa(sa))?,
            Command::TestPaths { sa, paths } => self
                .with_sa(now, sa, |s, ctx| s.command_test_paths(ctx, paths))
                .ok_or(CommandError::UnknownSa(sa))?,
            Command::UsableAddresses { addrs } => {
                if self.usable_addrs.as_ref() != Some(&addrs) {
                    self.usable_addrs = Some(addrs);
                    self.usable_unannounced = true;
                }
                Ok(())
            }
            Command::AnnounceAddresses { addrs, sas } => {
                let unchanged = self.usable_addrs.as_ref() == Some(&addrs);
                let ids: Vec<SaId> = if unchanged && !self.usable_unannounced {
                    sas
                } else {
                    self.usable_addrs = Some(addrs);
                    self.usable_unannounced = false;
                    self.sas.keys().copied().collect()
                };
                for id in ids {
                    self.with_sa(now, id, |s, ctx| s.command_announce_addresses(ctx));
                }
                Ok(())
            }
        }
    }

    /// Handles timer expiry: retransmissions, liveness checks, rekeys,
    /// keepalives and half-open expiry due at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.restarts_due(now);
        for id in self.index.due(now) {
            self.with_sa(now, id, |sa, ctx| sa.handle_timeout(ctx));
        }
    }

    /// Handles a received UDP datagram. `local` is the address it arrived
    /// on (its port tells whether the non-ESP marker is present), `remote`
    /// where it came from. Never panics; garbage is counted in [`Stats`].
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) {
        self.stats.datagrams_received += 1;
        let ike = if local.port() == self.config.nat_t_port {
            match proto::classify_nat_t(data) {
                NatTDatagram::Ike(b) => b,
                NatTDatagram::Keepalive => {
                    self.stats.keepalives_received += 1;
                    return;
                }
                NatTDatagram::Esp | NatTDatagram::Runt => {
                    self.stats.malformed += 1;
                    return;
                }
            }
        } else {
            data
        };
        let msg = match proto::Message::decode(ike) {
            Ok(m) => m,
            Err(e) => {
                self.drop_malformed(remote, &e);
                return;
            }
        };
        let h = msg.header;
        let path = Path { local, remote };
        if h.exchange == proto::ExchangeType::IKE_SA_INIT {
            sa::refuse_in_init(&mut self.stats, &msg);
        }
        // The I flag says who sent it; our SPI is the other one (§3.1).
        let our_spi = if h.from_initiator() { h.spi_r } else { h.spi_i };
        if h.exchange == proto::ExchangeType::IKE_SA_INIT
            && !h.is_response()
            && h.from_initiator()
            && h.spi_r == 0
        {
            self.handle_init_request(now, path, ike, msg);
            return;
        }
        if !self.sas.contains_key(&our_spi) {
            trace!(spi = our_spi, %remote, "message for unknown IKE SA");
            self.stats.unknown_sa += 1;
            return;
        }
        self.with_sa(now, our_spi, |sa, ctx| {
            sa.handle_message(ctx, path, ike, msg)
        });
    }

    fn drop_malformed(&mut self, remote: SocketAddr, e: &DecodeError) {
        self.stats.malformed += 1;
        debug!(%remote, error = %e, "dropping malformed datagram");
    }

    fn handle_init_request(&mut self, now: Instant, path: Path, bytes: &[u8], msg: proto::Message) {
        let h: Header = msg.header;
        if let Some(&id) = self.init_index.get(&(path.remote, h.spi_i)) {
            // A retransmitted IKE_SA_INIT: resend the same response (§2.1).
            self.with_sa(now, id, |sa, ctx| sa.replay_init_response(ctx, bytes));
            return;
        }
        // §2.6: the secret changes periodically; cookies made with the
        // previous one stay good for a while.
        self.cookies
            .rotate_if_due(now, self.config.cookie_rotation, self.entropy.as_mut());
        let admission = sa::Admission {
            half_open: self.index.half_open(),
            from_source: self.index.half_open_from(path.remote.ip()),
        };
        let cookies = std::mem::take(&mut self.cookies);
        let mut ctx = self.ctx(now);
        let sa = sa::IkeSa::respond_init(&mut ctx, path, bytes, &msg, admission, &cookies);
        self.cookies = cookies;
        self.settle_new(now, sa);
    }

    /// A new IKE SA made outside [`Endpoint::with_sa`] (initiated, or
    /// answering IKE_SA_INIT) joins the others; the SPIs drawn for it are
    /// settled. None if there is none.
    fn settle_new(&mut self, now: Instant, sa: Option<sa::IkeSa>) -> Option<()> {
        let after: Vec<(SaId, Vec<u32>)> = sa.iter().map(|s| (s.id(), s.live_spis())).collect();
        self.index.spis.settle([], &after);
        self.put_back(now, sa?);
        Some(())
    }
}

/// A connection taken out by a reload, kept in its place for the SAs still
/// winding down: no name (no command finds it), no proposals and no key
/// (no peer matches it), nothing to restart.
fn retire(c: &mut ConnectionConfig) {
    c.name.clear();
    c.ike_proposals.clear();
    c.psk.clear();
    c.local_auth = LocalAuth::Psk;
    c.remote_auth = RemoteAuth::Psk;
    c.remote_addr = None;
    c.recovery = Recovery::default();
    c.pools.clear();
    c.vips.clear();
}
