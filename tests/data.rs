//! Data over IPv4 loopback: the forward stream to several TUs (unreliable and
//! the default reliable mode), late joiners, the creation phase, backward data
//! under tokens, and garbage datagrams. Groups 239.255.102.n, one per test.
#![allow(unsafe_code)]

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use common::*;
use ectp::ffi::*;
use libc::{c_int, sockaddr, socklen_t};

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn group(n: u8) -> SocketAddr {
    format!("239.255.102.{n}:{}", unique_port()).parse().unwrap()
}

/// Heartbeats every 500 ms: quick acknowledgements of the last data, so that
/// mterminate in the reliable mode does not wait long.
const HGT: (c_int, c_int) = (ECTP_HGT, 500);

fn joined(g: SocketAddr) -> c_int {
    user(local(), g, &[]).unwrap_or_else(|(_, e)| panic!("mjoin: errno {e}"))
}

/// Message `i` of a test stream: sizes cycle through 1 byte, MSS, MSS+1,
/// 2 MSS, 64 KiB, 200 KiB and odd sizes; every message of 4 bytes or more
/// starts with its index, so that no two are alike.
fn message(i: usize, mss: usize) -> Vec<u8> {
    let len = match i % 12 {
        0 => 1,
        1 => mss,
        2 => mss + 1,
        3 => 2 * mss,
        4 => 2 * mss + 1,
        5 if i % 24 == 5 => 64 * 1024,
        6 if i % 36 == 6 => 200 * 1024,
        7 => mss - 1,
        _ => 2 + (i * 7919) % 5000,
    };
    let mut m = pattern(len, i as u32 + 1);
    if len >= 4 {
        m[..4].copy_from_slice(&(i as u32).to_be_bytes());
    }
    m
}

/// What a TU received until the end of the connection (mrecvmsg = 0).
struct Received {
    msgs: Vec<Vec<u8>>,
    flags: Vec<u32>,
    from: Vec<Option<SocketAddr>>,
    token_ids: Vec<u8>,
    user_ids: Vec<u32>,
}

/// Receive on `tu` until the end of the connection, counting in `count`.
fn receive_all(tu: c_int, count: Arc<AtomicUsize>) -> thread::JoinHandle<Received> {
    thread::spawn(move || {
        let mut r = Received {
            msgs: Vec::new(),
            flags: Vec::new(),
            from: Vec::new(),
            token_ids: Vec::new(),
            user_ids: Vec::new(),
        };
        loop {
            match recv(tu, 256 * 1024, 0) {
                Ok((m, _)) if m.is_empty() => break,
                Ok((m, info)) => {
                    r.msgs.push(m);
                    r.flags.push(info.flags);
                    r.from.push(info_from(&info));
                    r.token_ids.push(info.token_id);
                    r.user_ids.push(info.user_id);
                    count.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => panic!("TU mrecvmsg: errno {e}"),
            }
        }
        r
    })
}

fn check_stream(name: &str, got: &Received, want: &[Vec<u8>], to_addr: SocketAddr) {
    assert_eq!(
        got.msgs.len(),
        want.len(),
        "{name}: number of messages (gaps: {:?})",
        got.flags.iter().filter(|f| **f != 0).count()
    );
    for (i, (g, w)) in got.msgs.iter().zip(want).enumerate() {
        assert!(g == w, "{name}: message {i} differs (got {} bytes, want {})", g.len(), w.len());
        assert_eq!(got.flags[i], 0, "{name}: message {i} flags");
        assert_eq!(got.token_ids[i], 0, "{name}: token id of the TO's data");
        assert_eq!(got.user_ids[i], 0, "{name}: user id on the TU side");
        assert_eq!(got.from[i].map(|a| a.ip()), Some(to_addr.ip()), "{name}: from of message {i}");
    }
}

/// The TO sends `n` messages to three TUs; each receives all of them, in
/// order, byte for byte. With `pace`, the TO keeps at most that many messages
/// ahead of the slowest TU (the unreliable mode repairs nothing, so the test
/// must not overrun the receivers' socket buffers).
fn forward_to_three(g: SocketAddr, ro: c_int, n: usize, pace: Option<usize>) {
    let to = owner(local(), g, &[(ECTP_RO, ro), HGT]);
    let tus: Vec<c_int> = (0..3).map(|_| joined(g)).collect();
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(3));
    for &tu in &tus {
        assert_eq!(get_int(tu, ECTP_RO), Ok(ro));
    }
    let mss = get_int(to, ECTP_MSS).unwrap() as usize;
    let msgs: Vec<Vec<u8>> = (0..n).map(|i| message(i, mss)).collect();
    let counts: Vec<Arc<AtomicUsize>> = tus.iter().map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let handles: Vec<_> = tus.iter().zip(&counts).map(|(&tu, c)| receive_all(tu, Arc::clone(c))).collect();
    for (i, m) in msgs.iter().enumerate() {
        if let Some(k) = pace {
            let slowest = || counts.iter().map(|c| c.load(Ordering::SeqCst)).min().unwrap();
            assert!(wait_for(30, || slowest() + k > i), "TUs stuck at {} of {i} messages", slowest());
        }
        assert_eq!(send(to, m), m.len() as isize, "msendm {i}: errno {}", errno());
    }
    assert_eq!(mterminate(to), 0);
    let to_addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), g.port());
    for (k, h) in handles.into_iter().enumerate() {
        let got = h.join().expect("receiver thread");
        check_stream(&format!("TU {k}"), &got, &msgs, to_addr);
        assert_eq!(mleave(tus[k], 0), 0);
    }
}

#[test]
fn forward_data_unreliable_to_three_tus() {
    forward_to_three(group(1), ECTP_RO_UNRELIABLE, 300, Some(4));
}

#[test]
fn forward_data_reliable_default_to_three_tus() {
    // The default mode: no pacing, the library's flow control and repair
    // must deliver everything.
    let g = group(2);
    let probe = new_socket(local());
    assert_eq!(get_int(probe, ECTP_RO), Ok(ECTP_RO_RELIABLE), "the default mode is reliable");
    let _ = mleave(probe, 0);
    forward_to_three(g, ECTP_RO_RELIABLE, 300, None);
}

#[test]
fn late_joiner_receives_a_suffix_starting_at_a_message_boundary() {
    let g = group(3);
    let to = owner(local(), g, &[HGT]);
    let tus: Vec<c_int> = (0..2).map(|_| joined(g)).collect();
    let mss = get_int(to, ECTP_MSS).unwrap() as usize;
    let msgs: Vec<Vec<u8>> = (0..300).map(|i| message(i, mss)).collect();
    let counts: Vec<Arc<AtomicUsize>> = tus.iter().map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let handles: Vec<_> = tus.iter().zip(&counts).map(|(&tu, c)| receive_all(tu, Arc::clone(c))).collect();

    // 100 messages, sent and received by the first TUs.
    for m in &msgs[..100] {
        assert_eq!(send(to, m), m.len() as isize);
    }
    assert!(
        wait_for(30, || counts.iter().all(|c| c.load(Ordering::SeqCst) >= 100)),
        "the first TUs did not receive the first 100 messages"
    );
    // A late joiner joins while the next 100 go out.
    let (tx, rx) = mpsc::channel();
    let late_count = Arc::new(AtomicUsize::new(0));
    let lc = Arc::clone(&late_count);
    let late = thread::spawn(move || {
        let tu = joined(g);
        let _ = tx.send(tu);
        receive_all(tu, lc).join().expect("late receiver")
    });
    for m in &msgs[100..200] {
        assert_eq!(send(to, m), m.len() as isize);
    }
    let late_sd = rx.recv_timeout(Duration::from_secs(20)).expect("the late join did not complete");
    assert!(get_int(late_sd, ECTP_USER_ID).unwrap() >= 1);
    // The last 100 are sent after the late joiner is in.
    for m in &msgs[200..] {
        assert_eq!(send(to, m), m.len() as isize);
    }
    assert_eq!(mterminate(to), 0);
    let to_addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), g.port());
    for (k, h) in handles.into_iter().enumerate() {
        check_stream(&format!("TU {k}"), &h.join().unwrap(), &msgs, to_addr);
        assert_eq!(mleave(tus[k], 0), 0);
    }
    let got = late.join().expect("late joiner thread");
    let n = got.msgs.len();
    assert!(n >= 100, "the late joiner received {n} messages, fewer than were sent after it joined");
    assert!(n <= 200, "the late joiner received {n} messages, some sent before it asked to join");
    let first =
        msgs.iter().position(|m| *m == got.msgs[0]).expect("the late joiner's first message is none the TO sent");
    assert_eq!(first, 300 - n, "the late joiner's messages are not a suffix of the stream");
    check_stream("late TU", &got, &msgs[300 - n..], to_addr);
    assert_eq!(mleave(late_sd, 0), 0);
}

#[test]
fn creation_phase_joins_tus_that_were_waiting() {
    let g = group(4);
    // Two TUs that start joining before the TO exists.
    let tus: Vec<c_int> = (0..2)
        .map(|_| {
            let sd = new_socket(local());
            assert_eq!(set_int(sd, ECTP_RETRIES, 40), 0);
            sd
        })
        .collect();
    let (tx, rx) = mpsc::channel();
    for &tu in &tus {
        let tx = tx.clone();
        thread::spawn(move || {
            let _ = tx.send((tu, join_on(tu, local(), g)));
        });
    }
    // Both have asked at least once (their sockets are set up).
    assert!(wait_for(10, || tus.iter().all(|&tu| stats(tu).packets_sent >= 1)), "the TUs did not start joining");
    let to = new_socket(local());
    assert_eq!(set_int(to, ECTP_CCT, 1500), 0);
    assert_eq!(set_int(to, HGT.0, HGT.1), 0);
    assert_eq!(create_on(to, local(), g), Ok(()));
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(2), "both TUs are members when mcreate returns");
    for _ in 0..2 {
        let (tu, r) = rx.recv_timeout(Duration::from_secs(20)).expect("mjoin did not return");
        assert_eq!(r, Ok(()), "mjoin of TU {tu}");
        assert!(get_int(tu, ECTP_USER_ID).unwrap() >= 1);
    }
    assert_eq!(send(to, b"the very first message"), 22);
    assert_eq!(send(to, &pattern(3000, 4)), 3000);
    for &tu in &tus {
        assert_eq!(recv(tu, 4096, 0).unwrap().0, b"the very first message");
        assert_eq!(recv(tu, 4096, 0).unwrap().0, pattern(3000, 4));
    }
    assert_eq!(mterminate(to), 0);
    for &tu in &tus {
        assert_eq!(recv(tu, 4096, 0).unwrap().0, b"");
        assert_eq!(mleave(tu, 0), 0);
    }
}

// ----- backward data -----

/// (TO descriptor, user id, address) of every join request seen.
static JOINS: Mutex<Vec<(c_int, u32, SocketAddr)>> = Mutex::new(Vec::new());

extern "C" fn record_and_accept(sd: c_int, user_id: u32, addr: *const sockaddr, len: socklen_t) {
    if let Some(a) = sockaddr_to_rust(addr, len)
        && let Ok(mut j) = JOINS.lock()
    {
        j.push((sd, user_id, a));
    }
    mjoin_confirm(sd, user_id, 1);
}

fn owner_recording_joins(g: SocketAddr, opts: &[(c_int, c_int)]) -> c_int {
    let to = new_socket(local());
    JOINS.lock().unwrap().retain(|j| j.0 != to);
    let cb: ectp_join_callback = Some(record_and_accept);
    assert_eq!(
        msetsockopt(
            to,
            SOL_ECTP,
            ECTP_JOIN_CALLBACK,
            (&cb as *const ectp_join_callback).cast(),
            std::mem::size_of::<ectp_join_callback>() as socklen_t
        ),
        0
    );
    for &(o, v) in opts {
        assert_eq!(set_int(to, o, v), 0);
    }
    assert_eq!(create_on(to, local(), g), Ok(()));
    to
}

fn address_seen(to: c_int, user_id: u32) -> SocketAddr {
    JOINS
        .lock()
        .unwrap()
        .iter()
        .find(|j| j.0 == to && j.1 == user_id)
        .map(|j| j.2)
        .expect("the join callback saw this user")
}

#[test]
fn backward_data_from_two_tus_taking_the_token_in_turn() {
    let g = group(5);
    let to = owner_recording_joins(g, &[HGT]);
    let tus = [joined(g), joined(g)];
    for round in 0..2 {
        for &tu in &tus {
            let uid = get_int(tu, ECTP_USER_ID).unwrap() as u32;
            let addr = address_seen(to, uid);
            assert_eq!(addr.ip(), Ipv4Addr::LOCALHOST);
            assert_ne!(addr.port(), 0);
            assert_ne!(addr.port(), g.port(), "a TU's unicast port is not the group port");
            let id = mtoken_get(tu);
            assert!((1..=255).contains(&id), "mtoken_get: {id}, errno {}", errno());
            assert_eq!(get_int(tu, ECTP_TOKEN_ID), Ok(id));
            assert_eq!(send_su(tu, b"token data"), 10);
            assert_eq!(send_su(tu, b"good transmit"), 13);
            assert_eq!(mtoken_return(tu), 0, "mtoken_return: errno {}", errno());
            assert_eq!(get_int(tu, ECTP_TOKEN_ID), Ok(0));
            for want in [&b"token data"[..], b"good transmit"] {
                let (got, info) = recv(to, 100, 0).expect("TO mrecvmsg");
                assert_eq!(got, want, "round {round}");
                assert_eq!(info.user_id, uid, "user_id");
                assert_eq!(i32::from(info.token_id), id, "token_id");
                assert_eq!(info.flags, 0);
                assert_eq!(info_from(&info), Some(addr), "from");
                assert_eq!(info.fromlen as usize, std::mem::size_of::<libc::sockaddr_in>());
            }
        }
    }
    // Nothing else arrived.
    let mut buf = [0u8; 16];
    assert_eq!(mrecvmsg(to, buf.as_mut_ptr().cast(), 16, libc::MSG_DONTWAIT, std::ptr::null_mut()), -1);
    assert_eq!(errno(), libc::EAGAIN);
    assert_eq!(mterminate(to), 0);
    for tu in tus {
        assert_eq!(recv(tu, 16, 0).unwrap().0, b"");
        assert_eq!(mleave(tu, 0), 0);
    }
}

#[test]
fn large_backward_messages_arrive_intact() {
    let g = group(6);
    let to = owner(local(), g, &[HGT]);
    let tu = joined(g);
    let uid = get_int(tu, ECTP_USER_ID).unwrap() as u32;
    let msgs: Vec<Vec<u8>> = (0..8).map(|i| pattern(100 * 1024 + i * 333, 600 + i as u32)).collect();
    let id = mtoken_get(tu);
    assert!(id >= 1);
    for m in &msgs {
        assert_eq!(send_su(tu, m), m.len() as isize, "msendmsg: errno {}", errno());
    }
    assert_eq!(mtoken_return(tu), 0);
    for (i, m) in msgs.iter().enumerate() {
        let (got, info) = recv(to, 200 * 1024, 0).expect("TO mrecvmsg");
        assert!(got == *m, "backward message {i}: got {} bytes, want {}", got.len(), m.len());
        assert_eq!(info.flags, 0);
        assert_eq!(info.user_id, uid);
        assert_eq!(i32::from(info.token_id), id);
    }
    assert_eq!(mterminate(to), 0);
    assert_eq!(mleave(tu, 0), 0);
}

#[test]
fn tokens_held_at_the_same_time_are_distinct() {
    let g = group(7);
    let to = owner(local(), g, &[HGT]);
    let tus = [joined(g), joined(g), joined(g)];
    let ids: Vec<c_int> = tus.iter().map(|&tu| mtoken_get(tu)).collect();
    for (k, &id) in ids.iter().enumerate() {
        assert!((1..=255).contains(&id), "TU {k}: mtoken_get {id}, errno {}", errno());
    }
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2], "token ids {ids:?}");
    // Each SU's data is told apart by the TO.
    for (k, &tu) in tus.iter().enumerate() {
        assert_eq!(send_su(tu, format!("from SU {k}").as_bytes()), 9);
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (got, info) = recv(to, 64, 0).unwrap();
        let k = (got[8] - b'0') as usize;
        assert_eq!(got, format!("from SU {k}").as_bytes());
        assert_eq!(i32::from(info.token_id), ids[k]);
        assert_eq!(info.user_id, get_int(tus[k], ECTP_USER_ID).unwrap() as u32);
        seen.push(k);
    }
    seen.sort();
    assert_eq!(seen, vec![0, 1, 2]);
    for &tu in &tus {
        assert_eq!(mtoken_return(tu), 0);
    }
    // A returned id can be handed out again.
    let again = mtoken_get(tus[0]);
    assert!(again >= 1);
    assert_eq!(mtoken_return(tus[0]), 0);
    assert_eq!(mterminate(to), 0);
    for tu in tus {
        assert_eq!(mleave(tu, 0), 0);
    }
}

#[test]
fn max_tokens_one_refuses_a_second_concurrent_request() {
    let g = group(8);
    let to = owner(local(), g, &[HGT, (ECTP_MAX_TOKENS, 1)]);
    let a = joined(g);
    let b = joined(g);
    let id = mtoken_get(a);
    assert!(id >= 1, "first mtoken_get: errno {}", errno());
    assert_eq!(mtoken_get(b), -1);
    assert_eq!(errno(), libc::EACCES);
    assert_eq!(get_int(b, ECTP_TOKEN_ID), Ok(0));
    assert_eq!(send_su(b, b"x"), -1);
    assert_eq!(errno(), libc::EPERM);
    // Once returned, the other TU gets it.
    assert_eq!(send_su(a, b"from a"), 6);
    assert_eq!(mtoken_return(a), 0);
    let id_b = mtoken_get(b);
    assert!(id_b >= 1, "mtoken_get after the return: errno {}", errno());
    assert_eq!(send_su(b, b"from b"), 6);
    assert_eq!(mtoken_return(b), 0);
    assert_eq!(recv(to, 64, 0).unwrap().0, b"from a");
    assert_eq!(recv(to, 64, 0).unwrap().0, b"from b");
    assert_eq!(mterminate(to), 0);
    assert_eq!(mleave(a, 0), 0);
    assert_eq!(mleave(b, 0), 0);
}

// ----- garbage -----

/// RFC 1071 sum of `data`, as the wire format's checksum uses it.
fn ones_sum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { u16::from_be_bytes([c[0], 0]) };
        sum += u32::from(w);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// A 16-byte DATA header (version 0, CT binary 10, type 5, no payload) of
/// connection `conn`, with its checksum right or wrong.
fn data_header(conn: u32, psn: u32, good_checksum: bool) -> Vec<u8> {
    let mut h = vec![0u8; 16];
    h[0] = 0x02;
    h[1] = 5;
    h[4..8].copy_from_slice(&conn.to_be_bytes());
    h[8..12].copy_from_slice(&psn.to_be_bytes());
    h[12..14].copy_from_slice(&0u16.to_be_bytes());
    h[14] = 0x80;
    let c = !ones_sum(&h);
    let c = if good_checksum { c } else { c.wrapping_add(0x1111) };
    h[2..4].copy_from_slice(&c.to_be_bytes());
    assert_eq!(ones_sum(&h) == 0xffff, good_checksum);
    h
}

#[test]
fn garbage_datagrams_are_counted_and_ignored() {
    let g = group(9);
    let to = owner(local(), g, &[HGT]);
    let tu = joined(g);
    check_flow_both_ways(to, tu, 1);
    let to_addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), g.port());

    let mut garbage: Vec<Vec<u8>> = Vec::new();
    // Random bytes, of assorted lengths.
    for i in 0..20 {
        garbage.push(pattern(1 + i * 37, 9000 + i as u32));
    }
    // Truncated headers.
    for n in 0..16 {
        let mut h = data_header(1, 1, true);
        h.truncate(n);
        garbage.push(h);
    }
    // Bad version, bad connection type, payload length that does not match.
    let mut h = data_header(1, 1, true);
    h[0] = 0x06;
    garbage.push(h);
    let mut h = data_header(1, 1, true);
    h[0] = 0x01;
    garbage.push(h);
    let mut h = data_header(1, 1, true);
    h.extend_from_slice(b"extra");
    garbage.push(h);
    // Valid-looking headers with a wrong checksum.
    let bad_checksums = 3;
    for psn in 0..bad_checksums {
        garbage.push(data_header(0x1234_5678, psn + 1, false));
    }
    let malformed = garbage.len() as u64;

    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    raw.set_multicast_loop_v4(true).unwrap();
    let s = std::os::fd::AsRawFd::as_raw_fd(&raw);
    let ifaddr = libc::in_addr { s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be() };
    // SAFETY: setsockopt with a live in_addr.
    let r = unsafe {
        libc::setsockopt(
            s,
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            (&ifaddr as *const libc::in_addr).cast(),
            std::mem::size_of::<libc::in_addr>() as socklen_t,
        )
    };
    assert_eq!(r, 0);

    let to_before = stats(to);
    let tu_before = stats(tu);
    for d in &garbage {
        raw.send_to(d, to_addr).unwrap();
        raw.send_to(d, g).unwrap();
    }
    // A well-formed packet of another connection: foreign, not malformed.
    let foreign = data_header(0x0bad_c0de, 7, true);
    raw.send_to(&foreign, to_addr).unwrap();

    let grew = |before: &ectp_stats, now: &ectp_stats| {
        now.dropped_malformed - before.dropped_malformed >= malformed
            && now.dropped_checksum - before.dropped_checksum >= bad_checksums as u64
    };
    assert!(
        wait_for(10, || grew(&to_before, &stats(to))),
        "TO counters: malformed {} -> {}, checksum {} -> {}",
        to_before.dropped_malformed,
        stats(to).dropped_malformed,
        to_before.dropped_checksum,
        stats(to).dropped_checksum
    );
    assert!(
        wait_for(10, || grew(&tu_before, &stats(tu))),
        "TU counters: malformed {} -> {}, checksum {} -> {}",
        tu_before.dropped_malformed,
        stats(tu).dropped_malformed,
        tu_before.dropped_checksum,
        stats(tu).dropped_checksum
    );
    assert!(
        wait_for(10, || stats(to).dropped_foreign > to_before.dropped_foreign),
        "the foreign packet was not counted"
    );
    let (ta, tb) = (stats(to), stats(tu));
    assert_eq!(ta.dropped_malformed - to_before.dropped_malformed, malformed, "TO: each garbage datagram counted once");
    assert_eq!(ta.dropped_checksum - to_before.dropped_checksum, bad_checksums as u64);
    assert_eq!(tb.dropped_malformed - tu_before.dropped_malformed, malformed, "TU: each garbage datagram counted once");
    assert_eq!(tb.dropped_checksum - tu_before.dropped_checksum, bad_checksums as u64);

    // The connection still works, both ways, and no garbage was delivered.
    check_flow_both_ways(to, tu, 2);
    let mut buf = [0u8; 16];
    assert_eq!(mrecvmsg(tu, buf.as_mut_ptr().cast(), 16, libc::MSG_DONTWAIT, std::ptr::null_mut()), -1);
    assert_eq!(errno(), libc::EAGAIN);
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(1));
    assert_eq!(mterminate(to), 0);
    assert_eq!(recv(tu, 16, 0).unwrap().0, b"");
    assert_eq!(mleave(tu, 0), 0);
}

fn check_flow_both_ways(to: c_int, tu: c_int, seed: u32) {
    let m = pattern(5000, seed);
    assert_eq!(send(to, &m), 5000);
    assert_eq!(recv(tu, 8192, 0).unwrap().0, m);
    assert!(mtoken_get(tu) >= 1);
    let b = pattern(3000, seed + 100);
    assert_eq!(send_su(tu, &b), 3000);
    assert_eq!(mtoken_return(tu), 0);
    assert_eq!(recv(to, 8192, 0).unwrap().0, b);
}

// ----- losses, reliability of backward data, threads -----

#[test]
fn unreliable_losses_are_flagged_with_gap() {
    let g = group(10);
    let to = owner(local(), g, &[(ECTP_RO, ECTP_RO_UNRELIABLE), HGT]);
    let tu = joined(g);
    // The TU loses 30% of what reaches it while the first 200 messages go
    // out; then nothing for the last 4.
    assert_eq!(set_int(tu, ECTP_RX_LOSS, 30), 0);
    let msgs: Vec<Vec<u8>> = (0..204u32)
        .map(|i| {
            let mut m = pattern(100, i + 1);
            m[..4].copy_from_slice(&i.to_be_bytes());
            m
        })
        .collect();
    let count = Arc::new(AtomicUsize::new(0));
    let h = receive_all(tu, Arc::clone(&count));
    for m in &msgs[..200] {
        assert_eq!(send(to, m), 100);
    }
    assert!(
        wait_for(10, || {
            let st = stats(tu);
            st.dropped_injected + st.data_received >= 200
        }),
        "the TU heard too little"
    );
    assert_eq!(set_int(tu, ECTP_RX_LOSS, 0), 0);
    for m in &msgs[200..] {
        assert_eq!(send(to, m), 100);
    }
    assert_eq!(mterminate(to), 0);
    let got = h.join().unwrap();
    assert!(stats(tu).dropped_injected > 0, "no loss was injected");
    // What was delivered: messages the TO sent, each whole, in order, with
    // ECTP_MSG_GAP exactly where messages are missing before it. (The first
    // message after a hole may be missing too: without a first-segment flag
    // a receiver cannot tell whether it begins a message.)
    let mut prev: i64 = -1;
    let mut gaps = 0;
    let mut delivered = Vec::new();
    for (k, m) in got.msgs.iter().enumerate() {
        assert_eq!(m.len(), 100, "a message of another size was delivered");
        let idx = i64::from(u32::from_be_bytes([m[0], m[1], m[2], m[3]]));
        assert!(idx > prev && idx < 204, "message {idx} delivered after {prev}: out of order, twice or unknown");
        assert_eq!(*m, msgs[idx as usize], "message {idx} corrupted");
        let gap = got.flags[k] & ECTP_MSG_GAP != 0;
        assert_eq!(gap, idx != prev + 1, "message {idx} after {prev}: ECTP_MSG_GAP is {gap}");
        assert_eq!(got.flags[k] & ECTP_MSG_TRUNC, 0);
        gaps += usize::from(gap);
        delivered.push(idx);
        prev = idx;
    }
    assert!(delivered.len() < 200, "30% loss lost nothing");
    assert!(gaps >= 1);
    // Sent after the losses stopped: all but at most the first arrive.
    for idx in 201..204 {
        assert!(delivered.contains(&idx), "message {idx}, sent with no loss, was not delivered");
    }
    assert_eq!(stats(tu).gaps as usize, gaps, "ectp_stats.gaps counts the messages flagged");
    assert_eq!(mleave(tu, 0), 0);
}

#[test]
fn backward_data_is_all_at_the_to_when_mtoken_return_returns() {
    let g = group(11);
    // Failure detection effectively off: the SU loses many of its packets.
    let to = owner(local(), g, &[HGT, (ECTP_FDN, 255)]);
    let tu = joined(g);
    let uid = get_int(tu, ECTP_USER_ID).unwrap() as u32;
    assert_eq!(set_int(tu, ECTP_TX_LOSS, 20), 0);
    let id = mtoken_get(tu);
    assert!(id >= 1, "mtoken_get with 20% loss: errno {}", errno());
    let msgs: Vec<Vec<u8>> = (0..30).map(|i| pattern(1 + (i * 997) % 20_000, 1100 + i as u32)).collect();
    for m in &msgs {
        assert_eq!(send_su(tu, m), m.len() as isize, "msendmsg: errno {}", errno());
    }
    assert_eq!(mtoken_return(tu), 0, "mtoken_return with 20% loss: errno {}", errno());
    assert!(stats(tu).dropped_injected > 0);
    assert_eq!(set_int(tu, ECTP_TX_LOSS, 0), 0);
    // The TO acknowledged everything: all of it is there, without waiting.
    for (i, m) in msgs.iter().enumerate() {
        let (got, info) = recv(to, 32 * 1024, libc::MSG_DONTWAIT)
            .unwrap_or_else(|e| panic!("backward message {i} not at the TO after mtoken_return: errno {e}"));
        assert!(got == *m, "backward message {i}: {} bytes, want {}", got.len(), m.len());
        assert_eq!(info.flags, 0);
        assert_eq!(info.user_id, uid);
        assert_eq!(i32::from(info.token_id), id);
    }
    let mut buf = [0u8; 8];
    assert_eq!(mrecvmsg(to, buf.as_mut_ptr().cast(), 8, libc::MSG_DONTWAIT, std::ptr::null_mut()), -1);
    assert_eq!(errno(), libc::EAGAIN);
    assert_eq!(mterminate(to), 0);
    assert_eq!(mleave(tu, 0), 0);
}

#[test]
fn blocking_calls_block_only_their_thread() {
    let g = group(12);
    let to = owner(local(), g, &[HGT]);
    let tu = joined(g);
    // One thread waits on each side.
    let to_waiter = thread::spawn(move || recv(to, 64, 0));
    let tu_waiter = thread::spawn(move || recv(tu, 64, 0));
    thread::sleep(Duration::from_millis(100)); // let them block (not an assertion)
    // Meanwhile this thread uses both endpoints.
    let id = mtoken_get(tu);
    assert!(id >= 1);
    assert_eq!(send_su(tu, b"up"), 2);
    assert_eq!(mtoken_return(tu), 0);
    assert_eq!(send(to, b"down"), 4);
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(1));
    assert_eq!(to_waiter.join().unwrap().expect("TO mrecvmsg").0, b"up");
    assert_eq!(tu_waiter.join().unwrap().expect("TU mrecvmsg").0, b"down");

    // Two threads multicasting at once: every message arrives whole, each
    // thread's in its order.
    let senders: Vec<_> = (0..2u8)
        .map(|t| {
            thread::spawn(move || {
                for i in 0..100u32 {
                    let mut m = pattern(500 + (i as usize * 131) % 3000, i + 1000 * u32::from(t));
                    m[0] = t;
                    m[1..5].copy_from_slice(&i.to_be_bytes());
                    assert_eq!(send(to, &m), m.len() as isize);
                }
            })
        })
        .collect();
    let mut next = [0u32; 2];
    for _ in 0..200 {
        let (m, info) = recv(tu, 8192, 0).unwrap();
        assert_eq!(info.flags, 0);
        let t = m[0] as usize;
        let i = u32::from_be_bytes([m[1], m[2], m[3], m[4]]);
        assert_eq!(i, next[t], "thread {t}'s messages out of order");
        let mut want = pattern(500 + (i as usize * 131) % 3000, i + 1000 * t as u32);
        want[0] = t as u8;
        want[1..5].copy_from_slice(&i.to_be_bytes());
        assert!(m == want, "thread {t}'s message {i} corrupted");
        next[t] += 1;
    }
    for s in senders {
        s.join().unwrap();
    }
    assert_eq!(mterminate(to), 0);
    assert_eq!(recv(tu, 64, 0).unwrap().0, b"");
    assert_eq!(mleave(tu, 0), 0);
}
