//! Who is on the other end of the Unix socket: SO_PEERCRED (uid, gid, pid)
//! and SO_PEERGROUPS (supplementary groups), read once at accept time and
//! handed to every request of the connection as its connect info.
//!
//! This module only reports identities; the policy (who may write) lives in
//! the gRPC adapter.

use std::{
    io,
    os::fd::{AsRawFd, RawFd},
    pin::Pin,
    task::{Context, Poll},
};

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

/// A Unix stream with its peer's credentials.
#[derive(Debug)]
pub struct PeerStream {
    inner: UnixStream,
    cred: PeerCred,
}

impl PeerStream {
    pub fn new(inner: UnixStream) -> io::Result<Self> {
        let c = inner.peer_cred()?;
        let groups = peer_groups(inner.as_raw_fd())?;
        Ok(Self {
            cred: PeerCred {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
                groups,
            },
            inner,
        })
    }
}

impl Connected for PeerStream {
    type ConnectInfo = PeerCred;
    fn connect_info(&self) -> PeerCred {
        self.cred.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
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

/// Accepted connections with their credentials. Accept errors (e.g. out of
/// file descriptors) are logged and retried after a pause, never fatal.
pub fn incoming(
    listener: UnixListener,
) -> impl futures::Stream<Item = Result<PeerStream, io::Error>> {
    async_stream::stream! {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => match PeerStream::new(stream) {
                    Ok(s) => yield Ok(s),
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
    fn groups_resolve_by_number_and_name() {
        assert_eq!(resolve_group("4242").unwrap(), 4242);
        assert_eq!(resolve_group("root").unwrap(), 0);
        assert!(resolve_group("no-such-group-xyz").is_err());
    }
}
