//! Who is on the other end of the Unix socket: SO_PEERCRED (uid, gid, pid)
//! and SO_PEERGROUPS (supplementary groups), read once at accept time and
//! handed to every request of the connection as its connect info.
//!
//! This module reports identities; the policy (who may write) lives in the
//! gRPC adapter. It also bounds what peers can hold open: connections in
//! all and per uid ([`Admission`]; root is never refused, so a local user
//! who opens many connections cannot lock root's writers out), and how
//! long a connection may stay silent (the idle timeout: server keepalive
//! pings make a live client answer, so only a peer that sends nothing at
//! all, not even those answers, is closed).

use std::{
    collections::HashMap,
    future::Future as _,
    io,
    os::fd::{AsRawFd, RawFd},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use daemon_support::h2_authority::AuthorityFix;

use crate::coalesce::{Coalesce, InFlight};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{UnixListener, UnixStream},
};
use tonic::transport::server::Connected;

/// The kernel's view of the connecting process, taken when it connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// Supplementary groups (SO_PEERGROUPS); empty if the kernel has none.
    pub groups: Vec<u32>,
}

impl PeerCred {
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

impl std::fmt::Display for PeerCred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uid={} gid={}", self.uid, self.gid)?;
        if let Some(pid) = self.pid {
            write!(f, " pid={pid}")?;
        }
        Ok(())
    }
}

/// What every request of a connection gets as its connect info: the
/// peer's credentials, and the connection's count of requests in flight
/// (the server counts each request there while it is open; the
/// connection's write coalescing reads it).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub cred: PeerCred,
    pub in_flight: InFlight,
}

/// SO_PEERGROUPS (Linux 4.13); the same number on every architecture we
/// build for but sparc and mips.
const SO_PEERGROUPS: libc::c_int = 59;

fn peer_groups(fd: RawFd) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is a valid writable buffer of `len` bytes and `fd`
        // is an open socket for the duration of the call.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 {
            groups.truncate(len as usize / std::mem::size_of::<libc::gid_t>());
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && groups.len() < 65_536 {
            // `len` now holds the size needed.
            let need = (len as usize / std::mem::size_of::<libc::gid_t>()).max(groups.len() * 2);
            groups.resize(need, 0);
            continue;
        }
        if err.raw_os_error() == Some(libc::ENOPROTOOPT) {
            return Ok(Vec::new());
        }
        return Err(err);
    }
}

/// How many connections peers may hold open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// In all (root's connections count, but are never refused).
    pub total: usize,
    /// Per non-root uid.
    pub per_uid: usize,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_uid: HashMap<u32, usize>,
}

/// The connection count, shared by the accept loop and every connection's
/// [`Permit`].
#[derive(Debug, Clone)]
pub struct Admission {
    limits: ConnectionLimits,
    open: Arc<Mutex<Open>>,
}

/// One admitted connection; the count goes down when it is dropped.
#[derive(Debug)]
pub struct Permit {
    uid: u32,
    open: Arc<Mutex<Open>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut o = self.open.lock().unwrap_or_else(|p| p.into_inner());
        o.total = o.total.saturating_sub(1);
        if let Some(n) = o.by_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                o.by_uid.remove(&self.uid);
            }
        }
    }
}

impl Admission {
    pub fn new(limits: ConnectionLimits) -> Self {
        Self {
            limits,
            open: Default::default(),
        }
    }

    /// Admits a connection of `uid`, or says which limit it hit.
    pub fn admit(&self, uid: u32) -> Result<Permit, &'static str> {
        let mut o = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if uid != 0 {
            if o.total >= self.limits.total {
                return Err("max_connections");
            }
            if o.by_uid.get(&uid).copied().unwrap_or(0) >= self.limits.per_uid {
                return Err("max_connections_per_uid");
            }
        }
        o.total += 1;
        *o.by_uid.entry(uid).or_default() += 1;
        Ok(Permit {
            uid,
            open: self.open.clone(),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// A Unix stream with its peer's credentials, its admission and its idle
/// timer; what the server writes to it is coalesced ([`Coalesce`]).
#[derive(Debug)]
pub struct PeerStream {
    /// Writes are coalesced per burst (see [`Coalesce`]).
    inner: Coalesce<UnixStream>,
    cred: PeerCred,
    in_flight: InFlight,
    _permit: Option<Permit>,
    idle_after: Duration,
    /// When the connection counts as idle; moved on by every read.
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl PeerStream {
    /// The stream and its peer's credentials, with no limits.
    pub fn new(inner: UnixStream) -> io::Result<Self> {
        Self::with_idle_timeout(inner, Duration::from_secs(86_400 * 365))
    }

    fn with_idle_timeout(inner: UnixStream, idle_after: Duration) -> io::Result<Self> {
        let c = inner.peer_cred()?;
        let groups = peer_groups(inner.as_raw_fd())?;
        let in_flight = InFlight::default();
        Ok(Self {
            cred: PeerCred {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
                groups,
            },
            inner: Coalesce::new(inner).with_in_flight(in_flight.clone()),
            in_flight,
            _permit: None,
            idle_after,
            idle: Box::pin(tokio::time::sleep(idle_after)),
        })
    }
}

impl Connected for PeerStream {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            cred: self.cred.clone(),
            in_flight: self.in_flight.clone(),
        }
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let next = tokio::time::Instant::now() + this.idle_after;
                this.idle.as_mut().reset(next);
                Poll::Ready(r)
            }
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{}: nothing received for {:?}; connection closed",
                        this.cred, this.idle_after
                    ),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepted connections with their credentials, admitted by `admission`
/// (a connection over a limit is closed at once and logged at debug level:
/// whoever floods the socket must not flood the log too) and closed after
/// `idle_timeout` without a byte from the peer. Accept errors (e.g. out of
/// file descriptors) are logged and retried after a pause, never fatal.
///
/// Each connection reads through [`AuthorityFix`], so clients that send the
/// socket path as `:authority` (grpcio, grpc-java...) are served too; the
/// connect info stays the [`ConnInfo`].
pub fn incoming(
    listener: UnixListener,
    admission: Admission,
    idle_timeout: Duration,
) -> impl futures::Stream<Item = Result<AuthorityFix<PeerStream>, io::Error>> {
    async_stream::stream! {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => match PeerStream::with_idle_timeout(stream, idle_timeout) {
                    Ok(mut s) => match admission.admit(s.cred.uid) {
                        Ok(permit) => {
                            s._permit = Some(permit);
                            let peer = s.cred.to_string();
                            yield Ok(AuthorityFix::new(s, peer));
                        }
                        Err(limit) => tracing::debug!(peer = %s.cred, limit, "connection refused: limit reached"),
                    },
                    Err(e) => tracing::warn!(error = %e, "cannot read peer credentials; connection dropped"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Looks up a group by name or number (getgrnam_r, so NSS is honoured).
pub fn resolve_group(name: &str) -> io::Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let cname = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "group name contains NUL"))?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // SAFETY: all pointers are valid for the call; `buf` outlives `grp`'s use.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if result.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no group named {name:?}"),
            ));
        }
        return Ok(grp.gr_gid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn credentials_of_a_socketpair_are_our_own() {
        let (a, _b) = UnixStream::pair().unwrap();
        let s = PeerStream::new(a).unwrap();
        // SAFETY: trivial libc getters.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert_eq!(s.cred.uid, uid);
        assert_eq!(s.cred.gid, gid);
        assert_eq!(s.cred.pid, Some(std::process::id() as i32));
    }

    #[test]
    fn connections_are_limited_per_uid_and_in_all_but_root_is_never_refused() {
        let a = Admission::new(ConnectionLimits {
            total: 3,
            per_uid: 2,
        });
        let p1 = a.admit(1000).unwrap();
        let _p2 = a.admit(1000).unwrap();
        assert_eq!(a.admit(1000).unwrap_err(), "max_connections_per_uid");
        let _p3 = a.admit(1001).unwrap();
        assert_eq!(a.admit(1002).unwrap_err(), "max_connections");
        let _root = a.admit(0).unwrap();
        assert_eq!(a.open(), 4);
        drop(p1);
        assert_eq!(a.admit(1000).unwrap_err(), "max_connections");
        drop(_root);
        let _again = a.admit(1000).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_after_the_idle_timeout() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut s = PeerStream::with_idle_timeout(a, Duration::from_secs(60)).unwrap();
        b.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf).await.unwrap(), 1);
        // With the clock paused, the runtime jumps to the timer.
        let e = s.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn groups_resolve_by_number_and_name() {
        assert_eq!(resolve_group("4242").unwrap(), 4242);
        assert_eq!(resolve_group("root").unwrap(), 0);
        assert!(resolve_group("no-such-group-xyz").is_err());
    }
}
