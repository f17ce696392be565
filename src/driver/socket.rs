//! The UDP sockets of an endpoint (draft: "Addresses").
//!
//! - TO: one socket bound to its unicast IP and the group port. It multicasts
//!   the forward channel to the group and receives the requests and the
//!   backward data that TUs send to TO-IP:group-port.
//! - TU: a unicast socket on an ephemeral port (its requests, answers and
//!   backward data) and a multicast socket bound to the group address and
//!   port, joined to the group on the interface that leads to the TO.
//!
//! Options the application set with a level other than SOL_ECTP are
//! recorded and applied to every socket, including those created later.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use super::sys;

/// Receive buffer asked for the multicast socket unless the application
/// set SO_RCVBUF itself: bursts of DATA must not overflow it.
const MULTICAST_RCVBUF: usize = 4 << 20;

/// An option set at a level other than SOL_ECTP.
#[derive(Clone, Debug)]
pub struct RawOption {
    /// Level (SOL_SOCKET, IPPROTO_IP...).
    pub level: i32,
    /// Option name.
    pub name: i32,
    /// Value bytes.
    pub value: Vec<u8>,
}

/// A fresh, unbound, non-blocking UDP socket of `domain`.
pub fn udp(domain: Domain) -> io::Result<UdpSocket> {
    let s = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    if domain == Domain::IPV6 {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    sys::enable_rx_timestamps(&s);
    Ok(s.into())
}

/// Apply one raw option (setsockopt with the application's bytes).
pub fn apply(s: &UdpSocket, o: &RawOption) -> io::Result<()> {
    sys::setsockopt(s, o.level, o.name, &o.value)
}

fn was_set(opts: &[RawOption], level: i32, name: i32) -> bool {
    opts.iter().any(|o| o.level == level && o.name == name)
}

/// Make `s` the TO's socket: bound to `local`'s IP and the group port,
/// multicasting on the interface that holds `local`, looped back so that TUs
/// on this host hear it.
pub fn setup_owner(s: &UdpSocket, local: SocketAddr, group: SocketAddr, opts: &[RawOption]) -> io::Result<()> {
    let s = SockRef::from(s);
    s.set_reuse_address(true)?;
    s.bind(&SockAddr::from(SocketAddr::new(local.ip(), group.port())))?;
    match local.ip() {
        IpAddr::V4(ip) => {
            if !was_set(opts, libc::IPPROTO_IP, libc::IP_MULTICAST_IF) {
                s.set_multicast_if_v4(&ip)?;
            }
            if !was_set(opts, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP) {
                s.set_multicast_loop_v4(true)?;
            }
        }
        IpAddr::V6(ip) => {
            if !was_set(opts, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF)
                && let Some(idx) = sys::interface_index_of(IpAddr::V6(ip))
            {
                s.set_multicast_if_v6(idx)?;
            }
            if !was_set(opts, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP) {
                s.set_multicast_loop_v6(true)?;
            }
        }
    }
    Ok(())
}

/// The local address this host would use to reach `peer`.
fn local_ip_towards(peer: SocketAddr) -> io::Result<IpAddr> {
    let domain = Domain::for_address(peer);
    let probe = Socket::new(domain, Type::DGRAM, None)?;
    probe.connect(&SockAddr::from(peer))?;
    probe
        .local_addr()?
        .as_socket()
        .map(|a| a.ip())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no local address"))
}

/// Make the TU's sockets: `unicast` bound to an ephemeral port, and a new
/// multicast socket joined to `group` on the interface that leads to `owner`.
pub fn setup_user(
    unicast: &UdpSocket,
    owner: SocketAddr,
    group: SocketAddr,
    opts: &[RawOption],
) -> io::Result<UdpSocket> {
    let domain = Domain::for_address(group);
    let any: SocketAddr = match group {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    SockRef::from(unicast).bind(&SockAddr::from(any))?;
    let local = local_ip_towards(owner)?;
    let udp_m = udp(domain)?;
    let m = SockRef::from(&udp_m);
    m.set_reuse_address(true)?;
    for o in opts {
        apply(&udp_m, o)?;
    }
    if !was_set(opts, libc::SOL_SOCKET, libc::SO_RCVBUF) {
        // Best effort: the kernel caps it at net.core.rmem_max.
        let _ = m.set_recv_buffer_size(MULTICAST_RCVBUF);
    }
    // Bound to the group address, the socket hears only this group's traffic.
    m.bind(&SockAddr::from(group))?;
    match (group.ip(), local) {
        (IpAddr::V4(g), IpAddr::V4(l)) => m.join_multicast_v4(&g, &l)?,
        (IpAddr::V6(g), l) => m.join_multicast_v6(&g, sys::interface_index_of(l).unwrap_or(0))?,
        _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "address families differ")),
    }
    Ok(udp_m)
}
