//! The runtime's IKE sockets: UDP on 500 and the NAT-T port, bound either
//! to one address or to the wildcard of a family. A wildcard socket learns
//! the address each datagram was sent to (IP_PKTINFO / IPV6_RECVPKTINFO)
//! and sends from the address the engine names, so the engine always sees
//! the exact local address of a path, as RFC 7296 §2.23's NAT detection
//! and RFC 4555's address updates need. The ancillary data and GRO (UDP
//! receive offload may hand over several same-size datagrams at once,
//! split again here) are quinn-udp's, a maintained crate for exactly this.
//!
//! Not here: choosing addresses, or following them as they come and go.

use std::{
    io::{self, IoSliceMut},
    net::{IpAddr, SocketAddr},
};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;

/// One bound IKE socket.
#[derive(Debug)]
pub struct IkeSocket {
    sock: tokio::net::UdpSocket,
    state: UdpSocketState,
    bound: SocketAddr,
}

/// A received datagram: where it was sent to, where it came from, what.
pub type Datagram = (SocketAddr, SocketAddr, Vec<u8>);

impl IkeSocket {
    /// Binds `addr`; an IPv6 wildcard is IPv6 only (IPv4 gets its own).
    /// Must run inside a tokio runtime.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let domain = socket2::Domain::for_address(addr);
        let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        let sock = tokio::net::UdpSocket::from_std(s.into())?;
        let state = UdpSocketState::new((&sock).into())?;
        crate::sockopt::allow_fragmentation(&sock, addr.is_ipv6())?;
        let bound = sock.local_addr()?;
        Ok(Self { sock, state, bound })
    }

    /// The address it is bound to (with the port the kernel chose for 0).
    pub fn bound(&self) -> SocketAddr {
        self.bound
    }

    /// The raw socket (for socket options).
    pub fn socket(&self) -> &tokio::net::UdpSocket {
        &self.sock
    }

    /// Whether it is bound to a family's wildcard address.
    pub fn is_wildcard(&self) -> bool {
        self.bound.ip().is_unspecified()
    }

    /// Waits for the next datagram(s) and appends them to `out` (more than
    /// one when the kernel coalesced them). `buf` must hold 64 KiB.
    pub async fn recv(&self, buf: &mut [u8], out: &mut Vec<Datagram>) -> io::Result<()> {
        let mut meta = [RecvMeta::default()];
        let n = self
            .sock
            .async_io(Interest::READABLE, || {
                self.state
                    .recv((&self.sock).into(), &mut [IoSliceMut::new(buf)], &mut meta)
            })
            .await?;
        if n == 0 {
            return Ok(());
        }
        let m = meta[0];
        let local = SocketAddr::new(self.local_ip(m.dst_ip), self.bound.port());
        let remote = unmap(m.addr);
        let stride = if m.stride == 0 { m.len } else { m.stride };
        for chunk in buf[..m.len.min(buf.len())].chunks(stride.max(1)) {
            out.push((local, remote, chunk.to_vec()));
        }
        Ok(())
    }

    /// The local address of a datagram: the bound one, or on a wildcard
    /// socket the one the kernel reported (bound wildcard if it did not).
    fn local_ip(&self, dst: Option<IpAddr>) -> IpAddr {
        match dst {
            Some(ip) if self.is_wildcard() => unmap(SocketAddr::new(ip, 0)).ip(),
            _ => self.bound.ip(),
        }
    }

    /// Sends `data` from `local` (which must be the bound address, or any
    /// address of the family on a wildcard socket) to `remote`.
    pub async fn send(&self, local: IpAddr, remote: SocketAddr, data: &[u8]) -> io::Result<()> {
        let t = Transmit {
            destination: remote,
            ecn: None,
            contents: data,
            segment_size: None,
            src_ip: self.is_wildcard().then_some(local),
        };
        self.sock
            .async_io(Interest::WRITABLE, || {
                self.state.try_send((&self.sock).into(), &t)
            })
            .await
    }
}

/// The wildcard address of `ip`'s family.
pub fn wildcard_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// IPv4-mapped IPv6 addresses as plain IPv4.
fn unmap(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

/// The source address the kernel would use towards `remote` (a connected
/// UDP socket is asked; nothing is sent).
pub fn source_towards(remote: SocketAddr) -> io::Result<IpAddr> {
    let s = std::net::UdpSocket::bind(SocketAddr::new(wildcard_of(remote.ip()), 0))?;
    // As the IKE sockets: the route IKE takes, not the one a CHILD_SA's
    // (or a blocking) policy would give other traffic. Without XFRM there
    // is nothing to bypass.
    let _ = crate::sockopt::set_ipsec_bypass(&s, remote.is_ipv6());
    s.connect(remote)?;
    Ok(s.local_addr()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wildcard_socket_learns_and_uses_the_local_address() {
        let server = IkeSocket::bind("0.0.0.0:0".parse().unwrap()).unwrap();
        let port = server.bound().port();
        let client = IkeSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let client_addr = client.bound();
        // Sent to 127.0.0.2: the wildcard socket reports that address.
        let to: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
        client.send(client_addr.ip(), to, b"hello").await.unwrap();
        let mut buf = vec![0u8; 65536];
        let mut got = Vec::new();
        server.recv(&mut buf, &mut got).await.unwrap();
        assert_eq!(got.len(), 1);
        let (local, remote, data) = &got[0];
        assert_eq!(local.ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(*remote, client_addr);
        assert_eq!(data, b"hello");
        // The answer leaves from 127.0.0.2, so the client sees that source.
        server.send(local.ip(), *remote, b"back").await.unwrap();
        let mut got = Vec::new();
        client.recv(&mut buf, &mut got).await.unwrap();
        assert_eq!(got[0].1, to);
        assert_eq!(got[0].2, b"back");
    }

    #[test]
    fn the_kernel_names_a_source_towards_a_peer() {
        let ip = source_towards("127.0.0.2:500".parse().unwrap()).unwrap();
        assert!(ip.is_loopback(), "{ip}");
    }
}
