//! The announcement sockets: one IPv4 and (if the host has IPv6) one IPv6 UDP socket on the
//! announce port, shared with other peers on the same host (`SO_REUSEADDR`/`SO_REUSEPORT`),
//! joined to the multicast groups, allowed to broadcast.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::Error;

/// The IPv4 multicast group (administratively scoped, RFC 2365).
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(239, 255, 70, 77);
/// The IPv6 multicast group (link-local scope, RFC 4291 §2.7).
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff12, 0, 0, 0, 0, 0, 0, 0x7077);
/// The default announce port.
pub const DEFAULT_PORT: u16 = 4434;

/// Where announcements go by default: IPv4 broadcast, and both multicast groups.
pub fn default_targets(port: u16) -> Vec<SocketAddr> {
    vec![
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, port)),
        SocketAddr::V4(SocketAddrV4::new(GROUP_V4, port)),
        SocketAddr::V6(SocketAddrV6::new(GROUP_V6, port, 0, 0)),
    ]
}

/// The bound sockets.
#[derive(Debug)]
pub struct Sockets {
    /// IPv4.
    pub v4: UdpSocket,
    /// IPv6, when the host has it.
    pub v6: Option<UdpSocket>,
}

fn shared_socket(domain: Domain) -> std::io::Result<Socket> {
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Receive buffers, one per socket (larger than any announcement, so an oversized datagram
/// is seen whole and refused rather than truncated into something else).
#[derive(Debug)]
pub struct Buffers {
    v4: Vec<u8>,
    v6: Vec<u8>,
}

impl Sockets {
    /// Binds the announce port (0: any free port, the same on both families).
    pub fn bind(port: u16) -> Result<Self, Error> {
        let cannot = |e: std::io::Error| Error::Config(format!("announce port {port}: {e}"));
        let v4 = shared_socket(Domain::IPV4).map_err(cannot)?;
        v4.set_broadcast(true).map_err(cannot)?;
        v4.set_multicast_loop_v4(true).map_err(cannot)?;
        v4.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())
            .map_err(cannot)?;
        if let Err(e) = v4.join_multicast_v4(&GROUP_V4, &Ipv4Addr::UNSPECIFIED) {
            tracing::info!("not joining {GROUP_V4}: {e}");
        }
        let v4 = UdpSocket::from_std(v4.into())?;
        let port = v4.local_addr()?.port();
        let v6 = match Self::bind_v6(port) {
            Ok(s) => Some(UdpSocket::from_std(s.into())?),
            Err(e) => {
                tracing::info!("no IPv6 announcements: {e}");
                None
            }
        };
        Ok(Self { v4, v6 })
    }

    fn bind_v6(port: u16) -> std::io::Result<Socket> {
        let s = shared_socket(Domain::IPV6)?;
        s.set_only_v6(true)?;
        s.set_multicast_loop_v6(true)?;
        s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
        if let Err(e) = s.join_multicast_v6(&GROUP_V6, 0) {
            tracing::info!("not joining {GROUP_V6}: {e}");
        }
        Ok(s)
    }

    /// The announce port.
    pub fn port(&self) -> u16 {
        self.v4.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Fresh receive buffers.
    pub fn buffers() -> Buffers {
        Buffers {
            v4: vec![0; 2048],
            v6: vec![0; 2048],
        }
    }

    /// Receives the next datagram on either socket. Cancel-safe.
    pub async fn recv<'b>(&self, buf: &'b mut Buffers) -> std::io::Result<(&'b [u8], SocketAddr)> {
        let v6 = async {
            match &self.v6 {
                Some(s) => s.recv_from(&mut buf.v6).await.map(|(n, a)| (n, a, true)),
                None => std::future::pending().await,
            }
        };
        let (n, from, is_v6) = tokio::select! {
            r = self.v4.recv_from(&mut buf.v4) => r.map(|(n, a)| (n, a, false))?,
            r = v6 => r?,
        };
        let data = if is_v6 { &buf.v6[..n] } else { &buf.v4[..n] };
        Ok((data, from))
    }

    /// Sends one datagram to every target; failures of single targets are logged only.
    pub async fn send(&self, datagram: &[u8], targets: &[SocketAddr]) {
        for t in targets {
            let sock = match t {
                SocketAddr::V4(_) => Some(&self.v4),
                SocketAddr::V6(_) => self.v6.as_ref(),
            };
            if let Some(sock) = sock
                && let Err(e) = sock.send_to(datagram, t).await
            {
                tracing::debug!("announcement to {t} failed: {e}");
            }
        }
    }
}
