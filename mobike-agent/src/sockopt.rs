//! Socket options the runtime sets on its UDP sockets: a receive buffer
//! large enough for a burst of IKE requests (many peers, or many IKE SAs
//! to one peer, starting at once), so the kernel does not drop datagrams
//! while the engine computes Diffie-Hellman for the ones before them; and
//! on the NAT-T port, `UDP_ENCAP_ESPINUDP` (RFC 3948), without which the
//! kernel hands UDP-encapsulated ESP to the agent instead of decrypting it;
//! and on every IKE socket a per-socket XFRM policy that lets its datagrams
//! bypass IPsec both ways, as strongSwan sets on its own: without it, IKE
//! between addresses that a CHILD_SA's policies cover (a full tunnel,
//! `remote_ts = 0.0.0.0/0`, or host-to-host transport mode) would be sent
//! into the CHILD_SA, or dropped on the way in for not having come through
//! it; and fragmentation allowed for IKE datagrams larger than the path
//! MTU. Nothing else lives here.

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

/// `UDP_ENCAP_ESPINUDP` from `<linux/udp.h>` (libc has `UDP_ENCAP` only).
const UDP_ENCAP_ESPINUDP: libc::c_int = 2;

/// Marks `sock` (the NAT-T port) as an ESP-in-UDP socket (RFC 3948): the
/// kernel then decapsulates ESP arriving on it for its SAs, passes IKE
/// (non-ESP marker) through unchanged and drops NAT keepalives. Needs XFRM.
pub fn set_esp_in_udp(sock: &impl AsRawFd) -> std::io::Result<()> {
    let val: libc::c_int = UDP_ENCAP_ESPINUDP;
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
        .map_err(|_| std::io::Error::other("socklen_t overflow"))?;
    // SAFETY: the fd is an open socket borrowed from `sock` for the call;
    // the option value points at a live c_int of the given length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_UDP,
            libc::UDP_ENCAP,
            std::ptr::from_ref(&val).cast(),
            len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `IP_XFRM_POLICY` / `IPV6_XFRM_POLICY` from `<linux/in.h>` / `<linux/in6.h>`.
const IP_XFRM_POLICY: libc::c_int = 17;
const IPV6_XFRM_POLICY: libc::c_int = 35;

/// Gives `sock` an inbound and an outbound per-socket XFRM policy with
/// action allow (`xfrm_userpolicy_info`, any selector of the family):
/// its datagrams neither go into nor must come out of any IPsec SA,
/// whatever the host's policies say. Needs XFRM and CAP_NET_ADMIN.
pub fn set_ipsec_bypass(sock: &impl AsRawFd, ipv6: bool) -> std::io::Result<()> {
    use ipsec_backend::codec::{LifetimeCfg, Selector, UserPolicyInfo};
    let (level, opt, family) = if ipv6 {
        (libc::SOL_IPV6, IPV6_XFRM_POLICY, libc::AF_INET6)
    } else {
        (libc::SOL_IP, IP_XFRM_POLICY, libc::AF_INET)
    };
    for dir in [0u8, 1] {
        // XFRM_POLICY_IN, XFRM_POLICY_OUT; action XFRM_POLICY_ALLOW (0).
        let p = UserPolicyInfo {
            sel: Selector {
                family: u16::try_from(family).unwrap_or_default(),
                ..Selector::default()
            },
            lft: LifetimeCfg::INFINITE,
            dir,
            action: 0,
            ..UserPolicyInfo::default()
        }
        .to_bytes();
        let len = libc::socklen_t::try_from(p.len())
            .map_err(|_| std::io::Error::other("socklen_t overflow"))?;
        // SAFETY: the fd is an open socket borrowed from `sock` for the
        // call; the value points at `p`, live, of the given length.
        let rc = unsafe { libc::setsockopt(sock.as_raw_fd(), level, opt, p.as_ptr().cast(), len) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Lets the kernel fragment IKE datagrams larger than the path MTU
/// (`IP_PMTUDISC_WANT`, the kernel's own default for UDP): quinn-udp's
/// socket setup asks for `IP_PMTUDISC_PROBE`, which is right for QUIC but
/// makes an IKE_AUTH with certificates (often 2-4 kB) fail with EMSGSIZE.
/// charon sends such messages as IP fragments too unless both ends use IKE
/// fragmentation (RFC 7383).
pub fn allow_fragmentation(sock: &impl AsRawFd, ipv6: bool) -> std::io::Result<()> {
    let (level, opt, val) = if ipv6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_WANT,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_WANT,
        )
    };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
        .map_err(|_| std::io::Error::other("socklen_t overflow"))?;
    // SAFETY: the fd is an open socket borrowed from `sock` for the call;
    // the option value points at a live c_int of the given length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            std::ptr::from_ref(&val).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
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

    #[test]
    fn esp_in_udp_is_accepted_on_v4_and_v6() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        set_esp_in_udp(&s).unwrap();
        // An IKE datagram (non-ESP marker) still reaches the socket.
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        c.send_to(&[0, 0, 0, 0, 0x2e], s.local_addr().unwrap())
            .unwrap();
        let mut buf = [0u8; 16];
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let (n, _) = s.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[0, 0, 0, 0, 0x2e]);
        if let Ok(s6) = std::net::UdpSocket::bind("[::1]:0") {
            set_esp_in_udp(&s6).unwrap();
        }
    }

    #[test]
    fn ipsec_bypass_is_accepted_on_v4_and_v6() {
        // Root with XFRM (as the tests run); the kernel checks the struct
        // (family, direction, action) and refuses a malformed one.
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        set_ipsec_bypass(&s, false).unwrap();
        if let Ok(s6) = std::net::UdpSocket::bind("[::1]:0") {
            set_ipsec_bypass(&s6, true).unwrap();
        }
    }
}
