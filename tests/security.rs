//! Attacks on a connection over real sockets on IPv4 loopback (issue 7): an
//! attacker on the same host sends forged packets from a socket of its own,
//! and, as root, with the exact address of the TO or a TU (a raw socket), and
//! replays what it captured. Each test asserts that the TUs still deliver
//! byte-identical data, that nobody is ejected or ended, that the TO
//! finishes, and that the drops are counted by reason. Groups 239.255.107.n.
//!
//! The tests that need raw sockets say so and skip elsewhere.
#![allow(unsafe_code)]

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::spoof::{Sniffed, Sniffer, Spoofer, datagram, header, hear, listen_to_group, own_socket};
use common::*;
use ectp::ffi::*;
use ectp::wire::{AckInfo, Elements, Membership, Packet, PacketType};
use libc::{c_int, socklen_t};

const KEY: &[u8; 32] = b"the group key of these tests...!";

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn group(n: u8) -> SocketAddr {
    format!("239.255.107.{n}:{}", unique_port()).parse().unwrap()
}

fn set_key(sd: c_int, key: &[u8]) -> c_int {
    msetsockopt(sd, SOL_ECTP, ECTP_GROUP_KEY, key.as_ptr().cast(), key.len() as socklen_t)
}

/// Quick failure detection, so that the attacks' bounds show within seconds.
const OPTS: [(c_int, c_int); 4] = [(ECTP_HGT, 200), (ECTP_FDN, 3), (ECTP_RXT, 50), (ECTP_WINDOW, 256)];

/// A TO and `n` TUs on `g`, keyed with `key` if any.
struct Conn {
    to: c_int,
    tus: Vec<c_int>,
    group: SocketAddr,
    /// The TO's address as its packets show it: its IP and the group port.
    to_addr: SocketAddr,
    /// The TUs' unicast addresses and member ids, as the TO knows them.
    tu_addrs: Vec<SocketAddr>,
    ids: Vec<u32>,
}

fn connection(g: SocketAddr, n: usize, key: Option<&[u8]>) -> Conn {
    let to = msocket(libc::AF_INET, libc::SOCK_DGRAM, 0);
    for (o, v) in OPTS {
        assert_eq!(set_int(to, o, v), 0);
    }
    if let Some(k) = key {
        assert_eq!(set_key(to, k), 0);
    }
    let (l, ll) = c_addr(local());
    let (ga, gl) = c_addr(g);
    assert_eq!(mcreate(to, ptr(&l), ll, ptr(&ga), gl), 0, "mcreate: errno {}", errno());
    let to_addr: SocketAddr = format!("127.0.0.1:{}", g.port()).parse().unwrap();
    let mut tus = Vec::new();
    for _ in 0..n {
        let sd = msocket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        for (o, v) in &OPTS[..3] {
            assert_eq!(set_int(sd, *o, *v), 0);
        }
        if let Some(k) = key {
            assert_eq!(set_key(sd, k), 0);
        }
        let (a, al) = c_addr(to_addr);
        assert_eq!(mjoin(sd, ptr(&a), al, ptr(&ga), gl), 0, "mjoin: errno {}", errno());
        tus.push(sd);
    }
    let ids: Vec<u32> = tus.iter().map(|&sd| get_int(sd, ECTP_USER_ID).unwrap() as u32).collect();
    let tu_addrs = ids.iter().map(|&id| member_addr(to, id).expect("a member")).collect();
    Conn { to, tus, group: g, to_addr, tu_addrs, ids }
}

/// Member `id`'s unicast address, if it is one.
fn member_addr(to: c_int, id: u32) -> Option<SocketAddr> {
    // SAFETY: all-zero is a valid ectp_member.
    let mut m: ectp_member = unsafe { std::mem::zeroed() };
    if ectp_get_member(to, id, &mut m) != 0 {
        return None;
    }
    let info = ectp_rcvinfo { from: m.addr, fromlen: m.addrlen, ..empty_info() };
    info_from(&info)
}

/// Message `i`: its index, then a pattern; 1 to 3000 bytes.
fn message(i: usize) -> Vec<u8> {
    let mut m = pattern(4 + (i * 7919) % 2997, i as u32 + 1);
    m[..4].copy_from_slice(&(i as u32).to_be_bytes());
    m
}

/// The messages a TU received, and how its connection ended.
type Received = (Vec<Vec<u8>>, Result<(), c_int>);

/// Everything a TU received until the end of the connection, and how it
/// ended: Ok(()) for a normal end (mrecvmsg returned 0), Err(errno).
/// `count` follows how many messages arrived.
fn receive_all(sd: c_int, count: Arc<AtomicUsize>) -> thread::JoinHandle<Received> {
    thread::spawn(move || {
        let mut got = Vec::new();
        loop {
            match recv(sd, 1 << 16, 0) {
                Ok((m, _)) if m.is_empty() => return (got, Ok(())),
                Ok((m, info)) => {
                    assert_eq!(info.flags & ECTP_MSG_GAP, 0, "no gap in the reliable mode");
                    got.push(m);
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return (got, Err(e)),
            }
        }
    })
}

/// Send `n` messages, calling `attack(k)` before message k, then end the
/// connection; every TU must have received exactly the messages, and ended
/// normally. Returns the TO's counters as they were once every TU had
/// everything, just before the end.
fn stream_under_attack(c: &Conn, n: usize, mut attack: impl FnMut(usize)) -> ectp_stats {
    let counts: Vec<Arc<AtomicUsize>> = c.tus.iter().map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let rx: Vec<_> = c.tus.iter().zip(&counts).map(|(&sd, n)| receive_all(sd, n.clone())).collect();
    for k in 0..n {
        attack(k);
        assert!(send(c.to, &message(k)) > 0, "msendm {k}: errno {}", errno());
        if k % 50 == 0 {
            thread::sleep(Duration::from_millis(5));
        }
    }
    wait_for(30, || counts.iter().all(|c| c.load(Ordering::Relaxed) >= n));
    let to_stats = stats(c.to);
    assert_eq!(mterminate(c.to), 0, "the TO finishes: errno {}", errno());
    for (i, h) in rx.into_iter().enumerate() {
        let (got, end) = h.join().unwrap();
        assert_eq!(end, Ok(()), "TU {i} ends normally, neither ejected nor reset");
        assert_eq!(got.len(), n, "TU {i}: every message");
        for (k, m) in got.iter().enumerate() {
            assert!(*m == message(k), "TU {i}: message {k} byte-identical");
        }
    }
    to_stats
}

fn release(c: &Conn) {
    for &sd in &c.tus {
        mleave(sd, 0);
    }
}

// ----- the option -----

#[test]
fn the_group_key_option_takes_16_or_32_bytes_before_the_connection_and_is_write_only() {
    let sd = msocket(libc::AF_INET, libc::SOCK_DGRAM, 0);
    for len in [0usize, 1, 15, 17, 31, 33, 64] {
        let k = vec![7u8; len];
        assert_eq!(set_key(sd, &k), -1, "{len} bytes");
        assert_eq!(errno(), libc::EINVAL, "{len} bytes");
    }
    assert_eq!(msetsockopt(sd, SOL_ECTP, ECTP_GROUP_KEY, std::ptr::null(), 16), -1);
    assert_eq!(errno(), libc::EFAULT);
    assert_eq!(set_key(sd, &[1; 16]), 0);
    assert_eq!(set_key(sd, &[2; 32]), 0);
    let mut buf = [0u8; 32];
    let mut len = buf.len() as socklen_t;
    assert_eq!(mgetsockopt(sd, SOL_ECTP, ECTP_GROUP_KEY, buf.as_mut_ptr().cast(), &mut len), -1);
    assert_eq!(errno(), libc::ENOPROTOOPT, "write only");
    assert_eq!(buf, [0; 32], "nothing of the key read back");
    let g = group(1);
    let (l, ll) = c_addr(local());
    let (ga, gl) = c_addr(g);
    assert_eq!(mcreate(sd, ptr(&l), ll, ptr(&ga), gl), 0);
    assert_eq!(set_key(sd, &[3; 32]), -1, "not once the connection exists");
    assert_eq!(errno(), libc::EISCONN);
    assert_eq!(mterminate(sd), 0);
}

// ----- keyed connections -----

#[test]
fn a_keyed_connection_delivers_byte_identical_data_both_ways() {
    let c = connection(group(2), 2, Some(KEY));
    // Backward data under a token, sealed with the SU's member key.
    let su = c.tus[1];
    assert!(mtoken_get(su) > 0, "token: errno {}", errno());
    let back: Vec<Vec<u8>> = (0..50).map(|i| message(10_000 + i)).collect();
    let sender = {
        let back = back.clone();
        thread::spawn(move || {
            for m in &back {
                assert!(send_su(su, m) > 0);
            }
            assert_eq!(mtoken_return(su), 0);
        })
    };
    let mut got_back = Vec::new();
    while got_back.len() < back.len() {
        let (m, _) = recv(c.to, 1 << 16, 0).expect("backward data");
        got_back.push(m);
    }
    sender.join().unwrap();
    assert_eq!(got_back, back, "backward data byte-identical");
    let to = stream_under_attack(&c, 1000, |_| {});
    assert_eq!((to.dropped_auth, to.dropped_replay), (0, 0), "TO: nothing dropped on a clean keyed run");
    for &sd in &c.tus {
        let s = stats(sd);
        assert_eq!((s.dropped_auth, s.dropped_replay), (0, 0), "TU: nothing dropped on a clean keyed run");
    }
    release(&c);
}

#[test]
fn a_tu_with_another_key_or_none_cannot_join_a_keyed_connection() {
    let g = group(3);
    let to = msocket(libc::AF_INET, libc::SOCK_DGRAM, 0);
    assert_eq!(set_key(to, KEY), 0);
    let (l, ll) = c_addr(local());
    let (ga, gl) = c_addr(g);
    assert_eq!(mcreate(to, ptr(&l), ll, ptr(&ga), gl), 0);
    let to_addr: SocketAddr = format!("127.0.0.1:{}", g.port()).parse().unwrap();
    for key in [Some(&b"another key, also thirty-two b.."[..]), None] {
        let sd = msocket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert_eq!(set_int(sd, ECTP_RXT, 50), 0);
        assert_eq!(set_int(sd, ECTP_RETRIES, 4), 0);
        if let Some(k) = key {
            assert_eq!(set_key(sd, k), 0);
        }
        let (a, al) = c_addr(to_addr);
        assert_eq!(mjoin(sd, ptr(&a), al, ptr(&ga), gl), -1, "keyed {}", key.is_some());
        assert_eq!(errno(), libc::ETIMEDOUT);
    }
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(0));
    assert_eq!(stats(to).dropped_auth, 8, "every join request dropped as unauthenticated");
    assert_eq!(mterminate(to), 0);
}

// ----- without a key: an attacker with a socket of its own -----

#[test]
fn forgeries_from_another_port_of_the_tos_host_are_dropped() {
    let c = connection(group(4), 2, None);
    let ear = listen_to_group(c.group);
    let (h, _) = hear(&ear, PacketType::Hb);
    let conn = h.connection_id;
    ear.set_nonblocking(true).unwrap();
    let me = own_socket();
    let mut sent = 0u64;
    let mut next_psn = 0u32;
    let mut buf = vec![0u8; 70000];
    stream_under_attack(&c, 2000, |k| {
        // Learn where the stream stands, as any process on the host can.
        while let Ok(n) = ear.recv(&mut buf) {
            if let Ok(p) = Packet::parse(&buf[..n])
                && p.header.packet_type == PacketType::Data
            {
                next_psn = p.header.psn.wrapping_add(1);
            }
        }
        if k % 100 != 50 || next_psn == 0 {
            return;
        }
        let forged = [
            // DATA that would replace the next real segment, without a gap flag.
            datagram(header(PacketType::Data, conn, next_psn, true), Elements::default(), b"forged data"),
            // A normal-looking end.
            datagram(header(PacketType::Ctr, conn, next_psn, false), Elements::default(), &[]),
            // An HB and an NDATA far ahead.
            datagram(header(PacketType::Hb, conn, next_psn.wrapping_add(1 << 30), false), Elements::default(), &[]),
            datagram(header(PacketType::Ndata, conn, next_psn.wrapping_add(60_000), false), Elements::default(), &[]),
        ];
        for f in &forged {
            me.send_to(f, c.group).unwrap();
            sent += 1;
        }
        // The ejection of each TU, to its own address.
        for (i, &a) in c.tu_addrs.iter().enumerate() {
            let e = Elements { membership: Some(Membership::of(c.ids[i])), ..Default::default() };
            me.send_to(&datagram(header(PacketType::Ulr, conn, 0, false), e, &[]), a).unwrap();
        }
        sent += 1;
    });
    assert!(sent >= 20, "the attack ran: {sent} forgeries per TU");
    for &sd in &c.tus {
        let s = stats(sd);
        assert!(s.dropped_source >= sent, "dropped as from the wrong address: {} of {sent}", s.dropped_source);
    }
    release(&c);
}

/// A member of the attacker's own making: it joins by the book (LJR, then
/// TJR to the parent the LJC names), then never acknowledges anything, and
/// keeps itself "alive" with `keepalive` packets until `until`. Returns its
/// member id, and whether the TO told it it was out (ULR with F=0).
fn fake_member(c: &Conn, keepalive: PacketType, until: Instant) -> thread::JoinHandle<(u32, bool)> {
    let to_addr = c.to_addr;
    thread::spawn(move || {
        let s = own_socket();
        let mut buf = vec![0u8; 70000];
        // Send `req` until an answer of type `ty` comes; its header and membership.
        let mut ask = |req: &[u8], ty: PacketType| loop {
            s.send_to(req, to_addr).unwrap();
            if let Ok(n) = s.recv(&mut buf)
                && let Ok(p) = Packet::parse(&buf[..n])
                && p.header.packet_type == ty
            {
                return (p.header, p.elements.membership.expect("a Membership element"));
            }
        };
        let ljr = datagram(header(PacketType::Ljr, 0, 0, false), Elements::default(), &[0; 80]);
        let (ljc, m) = ask(&ljr, PacketType::Ljc);
        let (conn, id) = (ljc.connection_id, m.member_id);
        let me = Elements { membership: Some(Membership::of(id)), ..Default::default() };
        ask(&datagram(header(PacketType::Tjr, conn, 0, false), me, &[0; 68]), PacketType::Tjc);
        let mut told = false;
        while Instant::now() < until {
            let (h, pad): (_, &[u8]) = match keepalive {
                PacketType::Ljr => (header(PacketType::Ljr, 0, 0, false), &[0; 68]),
                ty => (header(ty, conn, 0, false), &[]),
            };
            s.send_to(&datagram(h, me, pad), to_addr).unwrap();
            while let Ok(n) = s.recv(&mut buf) {
                told |=
                    Packet::parse(&buf[..n]).is_ok_and(|p| p.header.packet_type == PacketType::Ulr && !p.header.flag);
            }
            thread::sleep(Duration::from_millis(100));
        }
        (id, told)
    })
}

#[test]
fn a_member_that_never_acknowledges_is_ejected_and_does_not_stall_the_to() {
    let c = connection(group(5), 2, None);
    for keepalive in [PacketType::Hback, PacketType::Ljr] {
        let until = Instant::now() + Duration::from_secs(3);
        let fake = fake_member(&c, keepalive, until);
        assert!(wait_for(5, || get_int(c.to, ECTP_MEMBERS) == Ok(3)), "{keepalive:?}: the fake member joined");
        let rx: Vec<_> = c.tus.iter().map(|&sd| receive_some(sd, 1500)).collect();
        // The window is 256 packets: the fake member pins it until it is ejected.
        let start = Instant::now();
        for k in 0..1500 {
            assert!(send(c.to, &message(k)) > 0);
        }
        let blocked = start.elapsed();
        for (i, h) in rx.into_iter().enumerate() {
            let got = h.join().unwrap();
            assert!(got.iter().enumerate().all(|(k, m)| *m == message(k)), "TU {i}: byte-identical");
        }
        let (id, told) = fake.join().unwrap();
        assert!(member_addr(c.to, id).is_none(), "{keepalive:?}: the member that acknowledged nothing is ejected");
        assert!(told, "{keepalive:?}: and told so when it went on sending");
        println!(
            "{keepalive:?} keep-alives: msendm of 1500 messages took {blocked:?} (the stall lasts at most FDN x HGT + HGT = 800 ms)"
        );
    }
    assert_eq!(get_int(c.to, ECTP_MEMBERS), Ok(2));
    stream_under_attack(&c, 10, |_| {});
    release(&c);
}

/// The first `n` messages a TU receives.
fn receive_some(sd: c_int, n: usize) -> thread::JoinHandle<Vec<Vec<u8>>> {
    thread::spawn(move || (0..n).map(|_| recv(sd, 1 << 16, 0).expect("a message").0).collect())
}

#[test]
fn a_flood_of_join_requests_costs_bounded_answers_and_holds_nothing() {
    let c = connection(group(6), 2, None);
    let sockets: Vec<_> = (0..300).map(|_| own_socket()).collect();
    let ljr = datagram(header(PacketType::Ljr, 0, 0, false), Elements::default(), &[0; 80]);
    let (mut asked, mut answered, mut answers) = (0usize, 0usize, 0usize);
    stream_under_attack(&c, 1500, |k| {
        if k == 100 {
            for s in &sockets {
                s.send_to(&ljr, c.to_addr).unwrap();
                asked += ljr.len();
            }
        }
        if k == 1400 {
            // The stream went on meanwhile; none of them became a member.
            assert_eq!(get_int(c.to, ECTP_MEMBERS), Ok(2));
            assert_eq!(ectp_list_members(c.to, std::ptr::null_mut(), 0), 2);
            let mut buf = vec![0u8; 70000];
            for s in &sockets {
                while let Ok(n) = s.recv(&mut buf) {
                    answered += n;
                    answers += 1;
                }
            }
        }
    });
    println!("300 join requests, {asked} bytes: {answers} answers, {answered} bytes");
    assert!(answered <= asked, "no reflection larger than the requests");
    assert!(answers <= 64, "at most 64 joiners at a time from one IP are answered: {answers}");
    release(&c);
}

#[test]
fn a_tu_cut_off_longer_than_fdn_x_hgt_is_reset_and_never_delivers_with_holes() {
    let c = connection(group(7), 2, None);
    let victim = c.tus[1];
    let rx = receive_all(victim, Arc::default());
    let other = receive_all(c.tus[0], Arc::default());
    for k in 0..300 {
        if k == 100 {
            assert_eq!(set_int(victim, ECTP_RX_LOSS, 100), 0);
            assert_eq!(set_int(victim, ECTP_TX_LOSS, 100), 0);
        }
        if k == 200 {
            // Cut off for three times FDN x HGT, then healed.
            thread::sleep(Duration::from_millis(1800));
            assert_eq!(set_int(victim, ECTP_RX_LOSS, 0), 0);
            assert_eq!(set_int(victim, ECTP_TX_LOSS, 0), 0);
        }
        assert!(send(c.to, &message(k)) > 0);
    }
    let (got, end) = rx.join().unwrap();
    assert_eq!(end, Err(libc::ECONNRESET), "the cut-off TU learns it is out");
    assert!(got.iter().enumerate().all(|(k, m)| *m == message(k)), "what it delivered has no hole");
    assert!(member_addr(c.to, c.ids[1]).is_none(), "ejected");
    assert_eq!(mterminate(c.to), 0);
    let (got, end) = other.join().unwrap();
    assert_eq!((got.len(), end), (300, Ok(())), "the other TU is not disturbed");
    release(&c);
}

// ----- as root: the exact address of the TO or a TU -----

#[test]
fn root_spoofed_forgeries_without_a_key_that_the_window_and_lengths_rule_out() {
    let Some(spoofer) = Spoofer::new() else {
        eprintln!("skipped: raw sockets need root (CAP_NET_RAW)");
        return;
    };
    let c = connection(group(8), 2, None);
    let ear = listen_to_group(c.group);
    let (h, _) = hear(&ear, PacketType::Hb);
    let conn = h.connection_id;
    let mut rounds = 0u64;
    stream_under_attack(&c, 2000, |k| {
        if k % 200 != 100 {
            return;
        }
        rounds += 1;
        let base = k as u32 * 1000; // far from anything real, whatever the ISN
        let big = vec![0x41u8; 65_000];
        for f in [
            // Far over the MSS.
            datagram(header(PacketType::Data, conn, base, true), Elements::default(), &big),
            // Far ahead of any window: DATA, NDATA and CTR.
            datagram(header(PacketType::Data, conn, h.psn.wrapping_add(1 << 30), true), Elements::default(), b"x"),
            datagram(header(PacketType::Ndata, conn, h.psn.wrapping_add(1 << 30), false), Elements::default(), &[]),
            datagram(header(PacketType::Ctr, conn, h.psn.wrapping_add(1 << 30), false), Elements::default(), &[]),
        ] {
            spoofer.send(c.to_addr, c.group, &f);
        }
    });
    for (i, &sd) in c.tus.iter().enumerate() {
        let s = stats(sd);
        assert!(s.dropped_length >= rounds, "TU {i}: oversize DATA dropped ({} of {rounds})", s.dropped_length);
        assert!(s.dropped_range >= 3 * rounds, "TU {i}: far jumps dropped ({} of {})", s.dropped_range, 3 * rounds);
    }
    release(&c);
}

#[test]
fn root_spoofed_and_replayed_packets_have_no_effect_on_a_keyed_connection() {
    let (Some(spoofer), Some(sniffer)) = (Spoofer::new(), Sniffer::new()) else {
        eprintln!("skipped: raw and packet sockets need root (CAP_NET_RAW)");
        return;
    };
    let c = connection(group(9), 2, Some(KEY));
    let ports: HashSet<u16> = c.tu_addrs.iter().map(|a| a.port()).chain([c.group.port()]).collect();
    let ours = move |s: &Sniffed| ports.contains(&s.to.port()) && ports.contains(&s.from.port());
    let ear = listen_to_group(c.group);
    let (h, _) = hear(&ear, PacketType::Hb);
    let conn = h.connection_id;
    let mut captured: Vec<Sniffed> = Vec::new();
    let mut mine: HashSet<Vec<u8>> = HashSet::new();
    let mut forged = (0u64, 0u64); // (to the TO, to each TU)
    let s = stream_under_attack(&c, 2000, |k| {
        captured.extend(sniffer.drain(&ours).into_iter().filter(|s| !mine.contains(&s.payload)));
        if k % 200 != 100 {
            return;
        }
        // Exact addresses, no key: an ACK claiming everything and a leave in
        // TU 0's name; an ejection of TU 1 and an end in the TO's name.
        let mut ack = Elements { membership: Some(Membership::of(c.ids[0])), ..Default::default() };
        ack.ack = Some(AckInfo::new(h.psn.wrapping_add(k as u32 * 10), 1));
        let leave = Elements { membership: Some(Membership::of(c.ids[0])), ..Default::default() };
        spoofer.send(c.tu_addrs[0], c.to_addr, &datagram(header(PacketType::Ack, conn, 0, false), ack, &[]));
        spoofer.send(c.tu_addrs[0], c.to_addr, &datagram(header(PacketType::Ulr, conn, 0, true), leave, &[]));
        forged.0 += 2;
        for (i, &a) in c.tu_addrs.iter().enumerate() {
            let eject = Elements { membership: Some(Membership::of(c.ids[i])), ..Default::default() };
            spoofer.send(c.to_addr, a, &datagram(header(PacketType::Ulr, conn, 0, false), eject, &[]));
        }
        spoofer.send(
            c.to_addr,
            c.group,
            &datagram(header(PacketType::Ctr, conn, h.psn, false), Elements::default(), &[]),
        );
        forged.1 += 2;
        // And everything captured so far, again, from where it came.
        for s in captured.drain(..) {
            spoofer.send(s.from, s.to, &s.payload);
            mine.insert(s.payload);
        }
    });
    assert!(
        s.dropped_auth >= forged.0,
        "TO: forgeries dropped as unauthenticated ({} of {})",
        s.dropped_auth,
        forged.0
    );
    assert!(s.dropped_replay > 100, "TO: replays dropped ({})", s.dropped_replay);
    for (i, &sd) in c.tus.iter().enumerate() {
        let s = stats(sd);
        assert!(s.dropped_auth >= forged.1, "TU {i}: forgeries dropped ({} of {})", s.dropped_auth, forged.1);
        assert!(s.dropped_replay > 100, "TU {i}: replays dropped ({})", s.dropped_replay);
    }
    release(&c);
}

#[test]
fn a_keyed_tree_repairs_over_link_keys_through_the_c_api() {
    let g = group(10);
    let (ga, gl) = c_addr(g);
    let to_addr: SocketAddr = format!("127.0.0.1:{}", g.port()).parse().unwrap();
    let new = |opts: &[(c_int, c_int)]| {
        let sd = msocket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert_eq!(set_key(sd, KEY), 0);
        for &(o, v) in opts {
            assert_eq!(set_int(sd, o, v), 0);
        }
        sd
    };
    let to = new(&[(ECTP_TCO, ECTP_TCO_TREE), (ECTP_MAX_CHILDREN, 1), (ECTP_HGT, 300), (ECTP_RXT, 50)]);
    let (l, ll) = c_addr(local());
    assert_eq!(mcreate(to, ptr(&l), ll, ptr(&ga), gl), 0);
    let join = |sd: c_int| {
        let (a, al) = c_addr(to_addr);
        assert_eq!(mjoin(sd, ptr(&a), al, ptr(&ga), gl), 0, "mjoin: errno {}", errno());
        sd
    };
    let ra = join(new(&[(ECTP_RA, 1), (ECTP_MAX_CHILDREN, 2), (ECTP_RXT, 50)]));
    let ra_id = get_int(ra, ECTP_USER_ID).unwrap();
    let leaves: Vec<c_int> = (0..2).map(|_| join(new(&[(ECTP_RXT, 50)]))).collect();
    for &leaf in &leaves {
        assert_eq!(get_int(leaf, ECTP_PARENT), Ok(ra_id), "a leaf's parent is the RA");
        // Its losses are repaired by the RA, under their link key.
        assert_eq!(set_int(leaf, ECTP_RX_LOSS, 5), 0);
    }
    let c = Conn {
        to,
        tus: std::iter::once(ra).chain(leaves.iter().copied()).collect(),
        group: g,
        to_addr,
        tu_addrs: vec![],
        ids: vec![],
    };
    let s = stream_under_attack(&c, 1000, |_| {});
    assert_eq!(s.dropped_auth + s.dropped_replay, 0, "TO: nothing dropped");
    let ra_stats = stats(ra);
    assert!(ra_stats.rdata_sent > 0, "the RA repaired its children ({} RDATA)", ra_stats.rdata_sent);
    assert_eq!(ra_stats.dropped_replay, 0);
    release(&c);
}
