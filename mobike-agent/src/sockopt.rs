//! Socket options the runtime sets on its UDP sockets: a receive buffer
//! large enough for a burst of IKE requests (many peers, or many IKE SAs
//! to one peer, starting at once), so the kernel does not drop datagrams
//! while the engine computes Diffie-Hellman for the ones before them.
//! Nothing else lives here.

use std::os::fd::AsRawFd;

/// Receive buffer asked for on every IKE socket.
pub const RECV_BUFFER: usize = 4 << 20;

/// Sets the socket receive buffer to `bytes`: `SO_RCVBUFFORCE` when the
/// process may (root or CAP_NET_ADMIN), else `SO_RCVBUF`, which the kernel
/// caps at `net.core.rmem_max`. Returns the size in effect.
pub fn set_recv_buffer(sock: &impl AsRawFd, bytes: usize) -> std::io::Result<usize> {
    let fd = sock.as_raw_fd();
    let val = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
        .map_err(|_| std::io::Error::other("socklen_t overflow"))?;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: `fd` is an open socket borrowed from `sock` for the call;
        // the option value points at a live c_int of the given length.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                std::ptr::from_ref(&val).cast(),
                len,
            )
        };
        if rc == 0 {
            break;
        }
        if opt == libc::SO_RCVBUF {
            return Err(std::io::Error::last_os_error());
        }
    }
    let mut got: libc::c_int = 0;
    let mut got_len = len;
    // SAFETY: as above; `got` and `got_len` are live and writable.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            std::ptr::from_mut(&mut got).cast(),
            &raw mut got_len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(usize::try_from(got).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_buffer_grows_at_least_to_the_default() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let got = set_recv_buffer(&s, 1 << 20).unwrap();
        assert!(got >= 4096, "{got}");
    }
}
