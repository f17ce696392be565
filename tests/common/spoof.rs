//! An attacker on the same host, for the security tests: a UDP socket of
//! its own (any user), and, where the test runs as root, a raw socket that
//! sends IPv4 UDP datagrams with any source address and port, and a sniffer
//! that sees every IPv4 datagram on `lo`.
#![allow(dead_code, unsafe_code)]

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use ectp::wire::{Elements, Header, Packet, PacketType};

/// A datagram of the test's own making.
pub fn datagram(h: Header, e: Elements, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 70000];
    let n = Packet { header: h, elements: e, data }.emit(&mut buf).expect("emit");
    buf.truncate(n);
    buf
}

/// A header of type `ty` on connection `conn`.
pub fn header(ty: PacketType, conn: u32, psn: u32, flag: bool) -> Header {
    Header { packet_type: ty, connection_id: conn, psn, flag, token_id: 0 }
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(v) => v,
        SocketAddr::V6(_) => panic!("IPv4 only"),
    }
}

/// Sends UDP datagrams with a forged IPv4 source (needs CAP_NET_RAW).
pub struct Spoofer {
    fd: OwnedFd,
}

impl Spoofer {
    /// `None` where raw sockets are not allowed (not root): the test skips.
    pub fn new() -> Option<Spoofer> {
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd is a new, open descriptor that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let lo = libc::in_addr { s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be() };
        // SAFETY: a valid in_addr of the size given.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_IF,
                (&lo as *const libc::in_addr).cast(),
                std::mem::size_of::<libc::in_addr>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "IP_MULTICAST_IF on the raw socket");
        Some(Spoofer { fd })
    }

    /// Send `payload` from `from` to `to` (unicast or multicast, IPv4).
    pub fn send(&self, from: SocketAddr, to: SocketAddr, payload: &[u8]) {
        let (from, to) = (v4(from), v4(to));
        let mut pkt = vec![0u8; 28 + payload.len()];
        pkt[0] = 0x45; // IPv4, 20-byte header; the kernel fills length, id and checksum
        pkt[8] = 1; // TTL
        pkt[9] = libc::IPPROTO_UDP as u8;
        let total = pkt.len() as u16;
        pkt[2..4].copy_from_slice(&total.to_be_bytes());
        pkt[12..16].copy_from_slice(&from.ip().octets());
        pkt[16..20].copy_from_slice(&to.ip().octets());
        pkt[20..22].copy_from_slice(&from.port().to_be_bytes());
        pkt[22..24].copy_from_slice(&to.port().to_be_bytes());
        pkt[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        // UDP checksum 0: none (allowed over IPv4).
        pkt[28..].copy_from_slice(payload);
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from(*to.ip()).to_be() },
            sin_zero: [0; 8],
        };
        // SAFETY: a live buffer and a valid sockaddr_in of the size given.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(n, pkt.len() as isize, "raw sendto: {}", io::Error::last_os_error());
    }
}

/// One UDP datagram seen on `lo`.
#[derive(Clone, Debug)]
pub struct Sniffed {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub payload: Vec<u8>,
}

/// Every IPv4 UDP datagram delivered on `lo` (needs CAP_NET_RAW).
pub struct Sniffer {
    fd: OwnedFd,
}

impl Sniffer {
    /// `None` where packet sockets are not allowed (not root).
    pub fn new() -> Option<Sniffer> {
        let proto = (libc::ETH_P_IP as u16).to_be();
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK, i32::from(proto)) };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd is a new, open descriptor that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new("lo").unwrap();
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        // SAFETY: zeroed sockaddr_ll is valid; then filled in.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: a valid sockaddr_ll of the size given.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "bind the packet socket to lo");
        Some(Sniffer { fd })
    }

    /// What arrived since the last call, each datagram once (the outgoing
    /// copy `lo` also shows is skipped), for which `keep` is true.
    pub fn drain(&self, keep: impl Fn(&Sniffed) -> bool) -> Vec<Sniffed> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 70000];
        loop {
            // SAFETY: zeroed sockaddr_ll is valid.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: a live buffer; sll and len valid for recvfrom to fill.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut sll as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                return out;
            }
            if sll.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let ip = &buf[..n as usize];
            if ip.len() < 28 || ip[0] >> 4 != 4 || ip[9] != libc::IPPROTO_UDP as u8 {
                continue;
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let Some(udp) = ip.get(ihl..) else { continue };
            if udp.len() < 8 {
                continue;
            }
            let addr = |a: &[u8], p: &[u8]| {
                SocketAddr::from((Ipv4Addr::new(a[0], a[1], a[2], a[3]), u16::from_be_bytes([p[0], p[1]])))
            };
            let s = Sniffed {
                from: addr(&ip[12..16], &udp[0..2]),
                to: addr(&ip[16..20], &udp[2..4]),
                payload: udp[8..].to_vec(),
            };
            if keep(&s) {
                out.push(s);
            }
        }
    }
}

/// A socket of the attacker's own, bound to 127.0.0.1 (another port).
pub fn own_socket() -> std::net::UdpSocket {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    socket2::SockRef::from(&s).set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
    s
}

/// A socket that hears the group, as any process of the host can.
pub fn listen_to_group(group: SocketAddr) -> std::net::UdpSocket {
    let g = v4(group);
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&SocketAddr::V4(g).into()).unwrap();
    s.join_multicast_v4(g.ip(), &Ipv4Addr::LOCALHOST).unwrap();
    let s: std::net::UdpSocket = s.into();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    s
}

/// The first ECTP packet of type `ty` heard on `s` within a few seconds:
/// (header, bytes).
pub fn hear(s: &std::net::UdpSocket, ty: PacketType) -> (Header, Vec<u8>) {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 70000];
    while std::time::Instant::now() < until {
        if let Ok(n) = s.recv(&mut buf)
            && let Ok(p) = Packet::parse(&buf[..n])
            && p.header.packet_type == ty
        {
            return (p.header, buf[..n].to_vec());
        }
    }
    panic!("no {ty:?} heard on the group");
}
