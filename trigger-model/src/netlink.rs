//! The rtnetlink source: an actor task that owns two NETLINK_ROUTE sockets,
//! keeps the authoritative [`LinkTable`] and turns every change of links,
//! IPv4/IPv6 addresses and default routes into triggers.
//!
//! It joins the multicast groups first (links, IPv4/IPv6 addresses, IPv4/IPv6
//! routes), sets a large receive buffer, then dumps links, addresses and
//! routes on a second socket to build the table, and sends one batch: a
//! RESYNC marker (cause "start") and the table, no per-interface triggers
//! (subscribers use the snapshot). From then on each datagram, and the
//! datagrams already queued behind it, are applied message by message; each
//! message's triggers come from [`diff`]ing the table before and after it,
//! and they go out as one [`SourceBatch`] with the new table. Messages that
//! changed nothing send nothing; a change that gives no trigger (the MTU or
//! name of a plain link) sends a batch with no triggers, so that the table
//! the hub publishes stays current. The mapping to trigger types is in
//! [`diff`]'s module.
//!
//! Messages are lost when the kernel finds the receive buffer full (the
//! store is slow, the channel is bounded, the host churns); the next read
//! then fails with ENOBUFS. The source logs it, discards what is still
//! queued (all of it older than what a dump will show), re-dumps, and sends
//! a RESYNC marker (cause "overrun") followed by the diff between the old
//! table and the dump, so nothing is lost silently.
//!
//! Why not netlink-proto / rtnetlink's connection for the multicast side:
//! it reports ENOBUFS as an NLMSG_OVERRUN on an unbounded channel, and ends
//! the whole stream on the first message its decoder rejects. Here a
//! malformed message is counted in [`NetlinkStats::parse_errors`], logged
//! with what failed, and skipped. Only datagrams from the kernel (port 0)
//! are read: another process may unicast to our port but not speak for the
//! kernel.
//!
//! This module does not store, number or fan out triggers, and does not
//! watch wireless quality or NetworkManager; other sources do.

mod decode;
mod diff;
mod table;
#[cfg(test)]
mod tests;

use std::{
    io,
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN,
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    RouteNetlinkMessage, address::AddressMessage, link::LinkMessage, route::RouteMessage,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

pub use self::{
    decode::{LinkUpdate, MalformedMessage, RtnlEvent, address_flags, decode, message_name},
    diff::{DiffMode, diff, resync_marker, resync_triggers},
    table::{
        Applied, DevType, DevTypeProbe, NoProbe, SysfsProbe, TUNNEL_KINDS, apply, classify,
        format_mac, link_type,
    },
};
use crate::{
    ingest::{SourceBatch, SourceSender},
    links::LinkTable,
    model::{Timestamp, Trigger},
};

// Multicast groups (linux/rtnetlink.h, enum rtnetlink_groups).
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;
/// The groups the source follows.
pub const GROUPS: &[u32] = &[
    RTNLGRP_LINK,
    RTNLGRP_IPV4_IFADDR,
    RTNLGRP_IPV6_IFADDR,
    RTNLGRP_IPV4_ROUTE,
    RTNLGRP_IPV6_ROUTE,
];

/// Receive buffer per read: larger than any datagram the kernel builds
/// (dump parts are at most 32 KiB, notifications one page).
const DATAGRAM_BUFFER: usize = 64 * 1024;
/// Most datagrams read into one batch before it is sent.
const MAX_DATAGRAMS_PER_BATCH: usize = 64;
/// Most queued datagrams thrown away before a re-dump.
const MAX_DISCARD: usize = 1 << 16;
/// Dumps interrupted by concurrent changes (NLM_F_DUMP_INTR) are retried
/// this often before the last one is taken as it is.
const DUMP_ATTEMPTS: u32 = 5;
/// Parse errors logged at warn before the rest go to debug.
const PARSE_ERRORS_WARNED: u64 = 10;

/// Counters the daemon's Stats RPC reads.
#[derive(Debug, Default)]
pub struct NetlinkStats {
    /// Link, address and default-route messages decoded (dumps included).
    pub events: AtomicU64,
    /// Messages (or datagrams) that could not be decoded and were skipped.
    pub parse_errors: AtomicU64,
    /// Re-dumps after lost messages (ENOBUFS or a truncated datagram).
    pub resyncs: AtomicU64,
    /// Batches sent to the store, the start batch included.
    pub batches: AtomicU64,
}

/// A copy of [`NetlinkStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetlinkStatsSnapshot {
    pub events: u64,
    pub parse_errors: u64,
    pub resyncs: u64,
    pub batches: u64,
}

impl NetlinkStats {
    pub fn snapshot(&self) -> NetlinkStatsSnapshot {
        NetlinkStatsSnapshot {
            events: self.events.load(Ordering::Relaxed),
            parse_errors: self.parse_errors.load(Ordering::Relaxed),
            resyncs: self.resyncs.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
        }
    }

    fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed)
    }
}

/// Why the source stopped.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening a NETLINK_ROUTE socket")]
    Open(#[source] io::Error),
    #[error("binding the NETLINK_ROUTE socket")]
    Bind(#[source] io::Error),
    #[error("joining rtnetlink multicast group {group}")]
    Subscribe {
        group: u32,
        #[source]
        source: io::Error,
    },
    #[error("registering the NETLINK_ROUTE socket with the runtime")]
    Register(#[source] io::Error),
    #[error("receiving rtnetlink notifications")]
    Receive(#[source] io::Error),
    #[error("requesting the {what} dump")]
    DumpRequest {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("reading the {what} dump")]
    Dump {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("sending a batch: the trigger channel is closed")]
    ChannelClosed,
}

/// Settings of the source; [`Default`] is what the daemon uses.
#[derive(Debug, Clone)]
pub struct Options {
    /// SO_RCVBUF(FORCE) of the multicast socket, in bytes (the kernel
    /// doubles it for bookkeeping). 0 keeps the system default.
    pub receive_buffer: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            receive_buffer: 4 << 20,
        }
    }
}

/// Runs the rtnetlink source until `shutdown` is cancelled (then `Ok`).
pub async fn run(
    tx: SourceSender,
    stats: Arc<NetlinkStats>,
    shutdown: CancellationToken,
) -> Result<(), NetlinkError> {
    run_with(Options::default(), tx, stats, shutdown).await
}

/// [`run`] with explicit [`Options`].
#[instrument(name = "rtnetlink", skip_all)]
pub async fn run_with(
    options: Options,
    tx: SourceSender,
    stats: Arc<NetlinkStats>,
    shutdown: CancellationToken,
) -> Result<(), NetlinkError> {
    let mcast = multicast_socket(options.receive_buffer)?;
    let mut actor = Actor {
        tx,
        stats,
        shutdown,
        mcast,
        table: LinkTable::default(),
        probe: SysfsProbe::default(),
        buf: Vec::with_capacity(DATAGRAM_BUFFER),
        seq: 0,
    };
    match actor.run().await {
        Ok(()) | Err(Stop::Shutdown) => {
            debug!("rtnetlink source stopped");
            Ok(())
        }
        Err(Stop::Failed(e)) => Err(e),
    }
}

/// How the actor's loop ends.
#[derive(Debug)]
enum Stop {
    Shutdown,
    Failed(NetlinkError),
}

impl From<NetlinkError> for Stop {
    fn from(e: NetlinkError) -> Self {
        Stop::Failed(e)
    }
}

/// One read from a socket.
enum Datagram {
    /// `len` bytes from `sender`; `truncated` if the datagram was longer.
    Data {
        len: usize,
        sender: u32,
        truncated: bool,
    },
    /// ENOBUFS: the kernel dropped messages for us.
    Overrun,
}

fn is_enobufs(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOBUFS)
}

/// One non-blocking read into `buf` (cleared first).
fn recv_datagram(sock: &Socket, buf: &mut Vec<u8>) -> io::Result<Datagram> {
    buf.clear();
    let capacity = buf.capacity();
    match sock.recv_from(buf, libc::MSG_TRUNC) {
        Ok((len, addr)) => Ok(Datagram::Data {
            len: len.min(buf.len()),
            sender: addr.port_number(),
            truncated: len > capacity,
        }),
        Err(e) if is_enobufs(&e) => Ok(Datagram::Overrun),
        Err(e) => Err(e),
    }
}

fn multicast_socket(receive_buffer: usize) -> Result<AsyncFd<Socket>, NetlinkError> {
    let mut sock = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Open)?;
    sock.bind_auto().map_err(NetlinkError::Bind)?;
    for &group in GROUPS {
        sock.add_membership(group)
            .map_err(|source| NetlinkError::Subscribe { group, source })?;
    }
    if receive_buffer > 0 {
        set_receive_buffer(&sock, receive_buffer);
    }
    register(sock)
}

/// SO_RCVBUFFORCE (CAP_NET_ADMIN, ignores rmem_max), else SO_RCVBUF.
fn set_receive_buffer(sock: &Socket, bytes: usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the fd is open for the lifetime of `sock`; the option value
    // is a c_int that outlives the call and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const value).cast::<libc::c_void>(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        debug!(error = %e, "SO_RCVBUFFORCE refused, trying SO_RCVBUF");
        if let Err(e) = sock.set_rx_buf_sz(value) {
            warn!(error = %e, bytes, "cannot enlarge the rtnetlink receive buffer");
        }
    }
    match sock.get_rx_buf_sz() {
        Ok(actual) => debug!(requested = bytes, actual, "rtnetlink receive buffer"),
        Err(e) => debug!(error = %e, "cannot read the rtnetlink receive buffer size"),
    }
}

fn dump_request(seq: u32, message: RouteNetlinkMessage) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(message));
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// Applies live events one by one, each diffed against the table before
/// it, so that a transition and its reversal in one batch both show;
/// `None` if no event changed the table.
pub fn apply_live(
    table: &mut LinkTable,
    events: &[RtnlEvent],
    now: Timestamp,
    probe: &dyn DevTypeProbe,
) -> Option<Vec<Trigger>> {
    let mut triggers = Vec::new();
    let mut changed = false;
    for event in events {
        let before = table.clone();
        match apply(table, event, now, probe) {
            Applied::Changed => {
                changed = true;
                triggers.extend(diff(&before, table, now, DiffMode::Live));
            }
            Applied::Unchanged => {}
            Applied::UnknownLink(index) => {
                debug!(index, "address event for an unknown link ignored");
            }
        }
    }
    changed.then_some(triggers)
}

/// What [`read_datagram`] found besides events.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DatagramRead {
    /// Why the source must re-dump: "overrun" (NLMSG_OVERRUN) or
    /// "truncated" (the datagram did not fit the buffer).
    pub lost: Option<&'static str>,
    /// One line per message (or datagram) that was skipped.
    pub problems: Vec<String>,
}

/// Decodes one multicast datagram of `sender` (0 = the kernel) into
/// `events`. Datagrams from other ports are skipped: any process may send
/// to our port, only the kernel speaks for the kernel. A broken message is
/// a problem and skipped; the messages around it still count.
pub fn read_datagram(
    data: &[u8],
    sender: u32,
    truncated: bool,
    events: &mut Vec<RtnlEvent>,
) -> DatagramRead {
    let mut read = DatagramRead::default();
    if sender != 0 {
        read.problems.push(format!(
            "datagram from port {sender}, not the kernel: ignored"
        ));
        return read;
    }
    if truncated {
        read.problems
            .push("datagram larger than the receive buffer: truncated".into());
        read.lost = Some("truncated");
        return read;
    }
    let (messages, broken) = split_messages(data);
    for m in messages {
        match m.message_type {
            NLMSG_NOOP | NLMSG_DONE | NLMSG_ERROR => {}
            NLMSG_OVERRUN => read.lost = Some("overrun"),
            t => match decode(t, m.flags, m.payload) {
                Ok(Some(event)) => events.push(event),
                Ok(None) => {}
                Err(e) => read.problems.push(e.to_string()),
            },
        }
    }
    read.problems.extend(broken);
    read
}

/// One netlink message inside a datagram.
struct RawMessage<'a> {
    message_type: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

/// Splits a datagram into netlink messages; a broken header ends the walk
/// with an error (nothing after it can be located).
fn split_messages(data: &[u8]) -> (Vec<RawMessage<'_>>, Option<String>) {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        let Some(rest) = data.get(offset..) else {
            break;
        };
        let nl = match NetlinkBuffer::new_checked(rest) {
            Ok(nl) => nl,
            Err(e) => return (out, Some(format!("netlink header at byte {offset}: {e}"))),
        };
        let len = nl.length() as usize;
        out.push(RawMessage {
            message_type: nl.message_type(),
            flags: nl.flags(),
            seq: nl.sequence_number(),
            payload: nl.payload(),
        });
        // new_checked guarantees 16 <= len <= rest.len(): this advances.
        offset = offset.saturating_add(len.saturating_add(3) & !3);
    }
    (out, None)
}

/// The (negative errno) code of an NLMSG_ERROR payload; 0 is an ack.
fn error_code(payload: &[u8]) -> Option<i32> {
    let bytes: [u8; 4] = payload.get(..4)?.try_into().ok()?;
    Some(i32::from_ne_bytes(bytes))
}

struct Actor {
    tx: SourceSender,
    stats: Arc<NetlinkStats>,
    shutdown: CancellationToken,
    mcast: AsyncFd<Socket>,
    table: LinkTable,
    probe: SysfsProbe,
    buf: Vec<u8>,
    seq: u32,
}

impl Actor {
    async fn run(&mut self) -> Result<(), Stop> {
        self.table = self.dump().await?;
        info!(
            links = self.table.links.len(),
            addresses = self.table.address_count(),
            default_routes = self.table.default_routes.len(),
            "rtnetlink source started"
        );
        let marker = resync_marker("start", &self.table, Timestamp::now());
        self.send(vec![marker]).await?;
        let shutdown = self.shutdown.clone();
        loop {
            let first = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Err(Stop::Shutdown),
                d = self.recv() => d?,
            };
            let mut events = Vec::new();
            let mut lost = match first {
                Datagram::Overrun => Some("overrun"),
                Datagram::Data {
                    len,
                    sender,
                    truncated,
                } => self.take_datagram(len, sender, truncated, &mut events),
            };
            // Read what is already queued behind it, into the same batch.
            let mut datagrams = 1;
            while lost.is_none() && datagrams < MAX_DATAGRAMS_PER_BATCH {
                match recv_datagram(self.mcast.get_ref(), &mut self.buf) {
                    Ok(Datagram::Data {
                        len,
                        sender,
                        truncated,
                    }) => {
                        lost = self.take_datagram(len, sender, truncated, &mut events);
                        datagrams += 1;
                    }
                    Ok(Datagram::Overrun) => lost = Some("overrun"),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(NetlinkError::Receive(e).into()),
                }
            }
            let triggers = apply_live(&mut self.table, &events, Timestamp::now(), &self.probe);
            if let Some(triggers) = triggers {
                self.send(triggers).await?;
            }
            if let Some(cause) = lost {
                self.resync(cause).await?;
            }
        }
    }

    /// Waits for and reads one multicast datagram.
    async fn recv(&mut self) -> Result<Datagram, Stop> {
        loop {
            let mut guard = self.mcast.readable().await.map_err(NetlinkError::Receive)?;
            let buf = &mut self.buf;
            match guard.try_io(|fd| recv_datagram(fd.get_ref(), buf)) {
                Ok(Ok(d)) => return Ok(d),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(NetlinkError::Receive(e).into()),
                Err(_would_block) => {}
            }
        }
    }

    /// Decodes the datagram in `self.buf` into `events`, counting and
    /// logging what could not be read; returns a resync cause if it shows
    /// that messages were lost.
    fn take_datagram(
        &self,
        len: usize,
        sender: u32,
        truncated: bool,
        events: &mut Vec<RtnlEvent>,
    ) -> Option<&'static str> {
        let data = self.buf.get(..len).unwrap_or_default();
        let before = events.len();
        let read = read_datagram(data, sender, truncated, events);
        self.stats
            .events
            .fetch_add((events.len() - before) as u64, Ordering::Relaxed);
        for p in &read.problems {
            self.parse_error(p);
        }
        read.lost
    }

    fn parse_error(&self, what: &str) {
        let n = NetlinkStats::bump(&self.stats.parse_errors);
        if n < PARSE_ERRORS_WARNED {
            warn!(problem = what, "skipping an unreadable rtnetlink message");
        } else {
            debug!(problem = what, "skipping an unreadable rtnetlink message");
        }
    }

    /// Re-dumps after lost messages and sends the marker and the diff.
    async fn resync(&mut self, cause: &'static str) -> Result<(), Stop> {
        NetlinkStats::bump(&self.stats.resyncs);
        warn!(
            cause,
            "rtnetlink messages were lost; re-dumping links, addresses and routes"
        );
        let discarded = self.discard_queued()?;
        let fresh = self.dump().await?;
        let triggers = resync_triggers(cause, &self.table, &fresh, Timestamp::now());
        info!(
            cause,
            discarded,
            changes = triggers.len().saturating_sub(1),
            "rtnetlink state resynchronised"
        );
        self.table = fresh;
        self.send(triggers).await
    }

    /// Throws away the queued multicast datagrams: all of them are older
    /// than the dump that follows.
    fn discard_queued(&mut self) -> Result<usize, Stop> {
        let mut discarded = 0;
        while discarded < MAX_DISCARD {
            match recv_datagram(self.mcast.get_ref(), &mut self.buf) {
                Ok(_) => discarded += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(NetlinkError::Receive(e).into()),
            }
        }
        Ok(discarded)
    }

    async fn send(&mut self, triggers: Vec<Trigger>) -> Result<(), Stop> {
        let batch = SourceBatch {
            triggers,
            links: Some(Arc::new(self.table.clone())),
        };
        let shutdown = self.shutdown.clone();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => Err(Stop::Shutdown),
            r = self.tx.send(batch) => {
                r.map_err(|_| Stop::Failed(NetlinkError::ChannelClosed))?;
                NetlinkStats::bump(&self.stats.batches);
                Ok(())
            }
        }
    }

    /// Dumps links, addresses and routes into a fresh table, retrying when
    /// the kernel says a dump was interrupted by changes.
    async fn dump(&mut self) -> Result<LinkTable, Stop> {
        let shutdown = self.shutdown.clone();
        let mut attempt = 1;
        loop {
            let sock = dump_socket()?;
            let mut table = LinkTable::default();
            let mut interrupted = false;
            for (what, request) in [
                ("link", RouteNetlinkMessage::GetLink(LinkMessage::default())),
                (
                    "address",
                    RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                ),
                (
                    "route",
                    RouteNetlinkMessage::GetRoute(RouteMessage::default()),
                ),
            ] {
                let dumped = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Err(Stop::Shutdown),
                    r = self.dump_one(&sock, what, request, &mut table) => r?,
                };
                interrupted |= dumped;
            }
            if !interrupted {
                return Ok(table);
            }
            if attempt >= DUMP_ATTEMPTS {
                warn!(
                    attempts = attempt,
                    "dumps keep being interrupted; using the last one"
                );
                return Ok(table);
            }
            debug!(
                attempt,
                "dump interrupted by concurrent changes; dumping again"
            );
            attempt += 1;
        }
    }

    /// One dump request; returns whether the kernel flagged it interrupted.
    async fn dump_one(
        &mut self,
        sock: &AsyncFd<Socket>,
        what: &'static str,
        request: RouteNetlinkMessage,
        table: &mut LinkTable,
    ) -> Result<bool, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let request = dump_request(seq, request);
        let kernel = SocketAddr::new(0, 0);
        loop {
            let mut guard = sock
                .writable()
                .await
                .map_err(|source| NetlinkError::DumpRequest { what, source })?;
            match guard.try_io(|fd| fd.get_ref().send_to(&request, &kernel, 0)) {
                Ok(Ok(_)) => break,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(source)) => return Err(NetlinkError::DumpRequest { what, source }),
                Err(_would_block) => {}
            }
        }
        let dump_err = |source| NetlinkError::Dump { what, source };
        let mut buf = Vec::with_capacity(DATAGRAM_BUFFER);
        let mut interrupted = false;
        let now = Timestamp::now();
        loop {
            let mut guard = sock.readable().await.map_err(dump_err)?;
            let datagram = match guard.try_io(|fd| recv_datagram(fd.get_ref(), &mut buf)) {
                Ok(Ok(d)) => d,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(dump_err(e)),
                Err(_would_block) => continue,
            };
            let len = match datagram {
                Datagram::Data { sender, .. } if sender != 0 => continue,
                Datagram::Data {
                    truncated: true, ..
                } => {
                    return Err(dump_err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "dump datagram larger than the receive buffer",
                    )));
                }
                Datagram::Data { len, .. } => len,
                // Not expected on a socket without groups; the dump itself
                // is flow-controlled. Treat it like an interrupted dump.
                Datagram::Overrun => {
                    interrupted = true;
                    continue;
                }
            };
            let data = buf.get(..len).unwrap_or_default();
            let (messages, broken) = split_messages(data);
            let mut problems: Vec<String> = broken.into_iter().collect();
            let mut done = false;
            for m in messages.iter().filter(|m| m.seq == seq) {
                if m.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match m.message_type {
                    NLMSG_DONE => done = true,
                    NLMSG_ERROR => match error_code(m.payload) {
                        Some(0) => {}
                        Some(code) => {
                            return Err(dump_err(io::Error::from_raw_os_error(
                                code.saturating_neg(),
                            )));
                        }
                        None => problems.push("NLMSG_ERROR without a code".into()),
                    },
                    NLMSG_NOOP | NLMSG_OVERRUN => {}
                    t => match decode(t, m.flags, m.payload) {
                        Ok(Some(event)) => {
                            NetlinkStats::bump(&self.stats.events);
                            if let Applied::UnknownLink(index) =
                                apply(table, &event, now, &self.probe)
                            {
                                debug!(index, what, "dumped address of an unknown link ignored");
                            }
                        }
                        Ok(None) => {}
                        Err(e) => problems.push(e.to_string()),
                    },
                }
            }
            for p in problems {
                self.parse_error(&p);
            }
            if done {
                return Ok(interrupted);
            }
        }
    }
}

/// Makes the socket non-blocking and registers it with the runtime.
fn register(sock: Socket) -> Result<AsyncFd<Socket>, NetlinkError> {
    sock.set_non_blocking(true)
        .map_err(NetlinkError::Register)?;
    // SAFETY: `Socket` owns its fd: it stays open, and `as_raw_fd` keeps
    // returning it, until the socket (owned by the AsyncFd) is dropped.
    unsafe { AsyncFd::register(sock) }.map_err(|e| NetlinkError::Register(e.into_parts().1))
}

fn dump_socket() -> Result<AsyncFd<Socket>, NetlinkError> {
    let mut sock = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Open)?;
    sock.bind_auto().map_err(NetlinkError::Bind)?;
    register(sock)
}
