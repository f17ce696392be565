//! The TO's controls over real sockets, IPv4 on loopback and IPv6 in a
//! network namespace (root; skipped elsewhere): tokens given and withdrawn
//! (`ectp_token_give`, `ectp_token_withdraw`), `ectp_pause` and
//! `ectp_resume` with ECTP_PAUSED on both sides, `ectp_abort`; their
//! errnos; and the figures `ectp_get_stats` gives.

mod common;
use common::*;
use ectp::ffi::*;
use libc::c_int;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

const FAST: [(c_int, c_int); 3] = [(ECTP_HGT, 200), (ECTP_RXT, 40), (ECTP_RETRIES, 20)];

fn v4(n: u8) -> (SocketAddr, SocketAddr) {
    ("127.0.0.1:0".parse().unwrap(), format!("239.255.78.{n}:{}", unique_port()).parse().unwrap())
}

fn v6(n: u8) -> (SocketAddr, SocketAddr) {
    ("[fd00::1]:0".parse().unwrap(), format!("[ff15::ec7c:{n:x}]:{}", unique_port()).parse().unwrap())
}

fn tu(local: SocketAddr, group: SocketAddr) -> c_int {
    user(local, group, &FAST).unwrap_or_else(|(_, e)| panic!("mjoin: errno {e}"))
}

fn member_id(tu: c_int) -> u32 {
    get_int(tu, ECTP_USER_ID).expect("ECTP_USER_ID") as u32
}

/// -1 and this errno.
#[track_caller]
fn fails_with(r: c_int, e: c_int) {
    assert_eq!((r, if r < 0 { errno() } else { 0 }), (-1, e));
}

/// A token given and withdrawn: the TU sends with it, what it queued
/// before the withdrawal arrives whole, later sends fail with EPERM.
fn give_and_withdraw((local, group): (SocketAddr, SocketAddr)) {
    let to = owner(local, group, &[(ECTP_HGT, 200), (ECTP_RXT, 40), (ECTP_RETRIES, 20), (ECTP_MAX_TOKENS, 1)]);
    let (a, b) = (tu(local, group), tu(local, group));
    let (ida, idb) = (member_id(a), member_id(b));
    fails_with(ectp_token_give(to, 7), libc::ENOENT);
    fails_with(ectp_token_withdraw(to, ida), libc::ENOENT);
    let token = ectp_token_give(to, ida);
    assert!((1..=255).contains(&token), "ectp_token_give: {token}, errno {}", errno());
    assert_eq!(get_int(a, ECTP_TOKEN_ID), Ok(token), "the TU holds it");
    fails_with(ectp_token_give(to, ida), libc::EALREADY);
    fails_with(ectp_token_give(to, idb), libc::EBUSY);
    fails_with(mtoken_get(a), libc::EALREADY);
    let msgs: Vec<Vec<u8>> = (0..40).map(|i| pattern(1 + i * 997 % 5000, i as u32)).collect();
    for m in &msgs {
        assert_eq!(send_su(a, m), m.len() as isize, "msendmsg: errno {}", errno());
    }
    assert_eq!(ectp_token_withdraw(to, ida), 0, "ectp_token_withdraw: errno {}", errno());
    for (i, m) in msgs.iter().enumerate() {
        let (got, info) = recv(to, 1 << 16, libc::MSG_DONTWAIT).unwrap_or_else(|e| panic!("message {i}: errno {e}"));
        assert!(got == *m && info.user_id == ida && i32::from(info.token_id) == token, "message {i}");
    }
    fails_with(recv(to, 16, libc::MSG_DONTWAIT).map_or_else(|e| (-1, e), |_| (0, 0)).0, libc::EAGAIN);
    assert_eq!(get_int(a, ECTP_TOKEN_ID), Ok(0));
    fails_with(send_su(a, b"late") as c_int, libc::EPERM);
    // Free again: B may have it now, by asking.
    assert_eq!(mtoken_get(b), token);
    // Not for a TU, and not before mcreate.
    fails_with(ectp_token_give(a, idb), libc::EOPNOTSUPP);
    fails_with(ectp_token_withdraw(a, idb), libc::EOPNOTSUPP);
    let fresh = msocket(family(local), libc::SOCK_DGRAM, 0);
    fails_with(ectp_token_give(fresh, 1), libc::ENOTCONN);
    fails_with(ectp_token_give(-1, 1), libc::EBADF);
    assert_eq!(mterminate(fresh), 0);
    assert_eq!(mterminate(to), 0);
    for sd in [a, b] {
        assert_eq!(recv(sd, 16, 0).map(|r| r.0.len()), Ok(0));
        assert_eq!(mleave(sd, 0), 0);
    }
}

/// A pause longer than FDN x HGT: nothing flows, nobody is ejected, both
/// sides read ECTP_PAUSED; after the resume everything arrives in order.
fn pause_and_resume((local, group): (SocketAddr, SocketAddr)) {
    let opts = [(ECTP_HGT, 100), (ECTP_FDN, 2), (ECTP_RXT, 40)];
    let to = owner(local, group, &opts);
    let tus: Vec<c_int> = (0..2).map(|_| user(local, group, &opts).expect("join")).collect();
    assert_eq!(get_int(to, ECTP_PAUSED), Ok(0));
    fails_with(ectp_resume(to), libc::EALREADY);
    assert_eq!(ectp_pause(to), 0);
    fails_with(ectp_pause(to), libc::EALREADY);
    assert_eq!(get_int(to, ECTP_PAUSED), Ok(1));
    let msgs: Vec<Vec<u8>> = (0..30).map(|i| pattern(100 + i * 331, 50 + i as u32)).collect();
    for m in &msgs {
        assert_eq!(send(to, m), m.len() as isize, "msendm queues while paused");
    }
    assert!(wait_for(2, || tus.iter().all(|&t| get_int(t, ECTP_PAUSED) == Ok(1))), "the TUs learn of the pause");
    // Three times FDN x HGT: heartbeats and NDATA keep everyone in.
    thread::sleep(Duration::from_millis(600));
    for &t in &tus {
        assert!(!poll_readable(t, 0), "nothing delivered while paused");
    }
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(2), "nobody ejected");
    assert_eq!(stats(to).data_sent, 0, "no DATA left the TO");
    assert_eq!(ectp_resume(to), 0);
    assert_eq!(get_int(to, ECTP_PAUSED), Ok(0));
    for &t in &tus {
        for (i, m) in msgs.iter().enumerate() {
            let (got, _) = recv(t, 1 << 16, 0).unwrap_or_else(|e| panic!("message {i}: errno {e}"));
            assert!(got == *m, "message {i}");
        }
        assert_eq!(get_int(t, ECTP_PAUSED), Ok(0), "and of the resume");
        fails_with(ectp_pause(t), libc::EOPNOTSUPP);
    }
    assert_eq!(mterminate(to), 0);
    for t in tus {
        assert_eq!(mleave(t, 0), 0);
    }
}

/// ectp_abort: returns at once with data still queued; every TU's next
/// mrecvmsg gives ECONNRESET; the descriptor is released.
fn abort((local, group): (SocketAddr, SocketAddr)) {
    let to = owner(local, group, &FAST);
    let tus: Vec<c_int> = (0..2).map(|_| tu(local, group)).collect();
    assert_eq!(ectp_pause(to), 0);
    for i in 0..20 {
        assert_eq!(send(to, &pattern(1000, i)), 1000);
    }
    fails_with(ectp_abort(tus[0]), libc::EOPNOTSUPP);
    let t0 = Instant::now();
    assert_eq!(ectp_abort(to), 0, "errno {}", errno());
    let took = t0.elapsed();
    println!("ectp_abort returned in {took:?}");
    fails_with(ectp_abort(to), libc::EBADF);
    fails_with(ectp_pause(to), libc::EBADF);
    for &t in &tus {
        assert!(poll_readable(t, 5000), "the TU learns it");
        assert_eq!(recv(t, 1 << 16, 0).map(|r| r.0.len()), Err(libc::ECONNRESET));
        assert_eq!(mleave(t, 0), 0);
    }
    let fresh = msocket(family(local), libc::SOCK_DGRAM, 0);
    fails_with(ectp_abort(fresh), libc::ENOTCONN);
    assert_eq!(mterminate(fresh), 0);
}

/// ectp_get_stats: bytes both ways, RTT, rate, repairs and membership.
fn statistics((local, group): (SocketAddr, SocketAddr)) {
    let to = owner(local, group, &FAST);
    let tus: Vec<c_int> = (0..3).map(|_| tu(local, group)).collect();
    assert_eq!(set_int(tus[0], ECTP_RX_LOSS, 5), 0);
    let msgs: Vec<Vec<u8>> = (0..200).map(|i| pattern(1 + i * 113 % 4000, i as u32)).collect();
    let total: u64 = msgs.iter().map(|m| m.len() as u64).sum();
    let readers: Vec<_> = tus
        .iter()
        .map(|&t| {
            let n = msgs.len();
            thread::spawn(move || (0..n).for_each(|i| assert!(recv(t, 1 << 16, 0).is_ok(), "message {i}")))
        })
        .collect();
    for m in &msgs {
        assert_eq!(send(to, m), m.len() as isize);
    }
    readers.into_iter().for_each(|r| r.join().expect("reader"));
    assert_eq!(mtoken_get(tus[1]), 1);
    assert_eq!(send_su(tus[1], &pattern(5000, 9)), 5000);
    assert_eq!(recv(to, 1 << 16, 0).map(|r| r.0.len()), Ok(5000));
    let s = stats(to);
    assert_eq!(s.bytes_sent, total, "the TO's user bytes");
    assert_eq!(s.bytes_received, 5000, "the SU's bytes, at the TO");
    assert!(s.rtt_us > 0 && s.rtt_us < 1_000_000, "TO rtt {} us", s.rtt_us);
    assert_eq!(s.repairs_sent, s.rdata_sent);
    assert!(s.repairs_sent > 0, "the lossy TU was repaired");
    assert_eq!(s.members_joined, 3);
    for (k, &t) in tus.iter().enumerate() {
        let u = stats(t);
        assert!(u.bytes_received >= total, "TU {k} received {} of {total}", u.bytes_received);
        assert!(u.rtt_us > 0 && u.rtt_us < 1_000_000, "TU {k} rtt {} us", u.rtt_us);
        assert_eq!(u.members_joined, 0, "membership is the TO's to count");
    }
    assert!(stats(tus[0]).repairs_requested > 0, "the lossy TU asked for repairs");
    assert_eq!(stats(tus[1]).bytes_sent, 5000, "the SU's own bytes");
    // Leave, eject, and the figures follow.
    let ejected = member_id(tus[2]);
    assert_eq!(mleave(tus[0], 0), 0);
    assert_eq!(mleave(to, ejected), 0);
    assert!(wait_for(5, || stats(to).members_left == 1), "one left");
    let s = stats(to);
    assert_eq!((s.members_left, s.members_ejected, s.members_failed), (1, 1, 0));
    assert_eq!(mterminate(to), 0);
    assert_eq!(mleave(tus[1], 0), 0);
    assert_eq!(mleave(tus[2], 0), 0);
}

/// Blocked `ectp_token_give` / `ectp_token_withdraw` calls end when their
/// member is ejected (ENOENT for a give, 0 for a withdrawal) or the TO
/// aborts (EBADF), long before their retries run out (ETIMEDOUT); a second
/// call for the same member meanwhile gives EALREADY or ENOENT at once.
fn blocked_token_calls((local, group): (SocketAddr, SocketAddr)) {
    // Retries for 10 s; nobody goes silent for FDN x HGT meanwhile.
    let opts = [(ECTP_HGT, 1000), (ECTP_RXT, 100), (ECTP_RETRIES, 100)];
    let to = owner(local, group, &opts);
    let tus: Vec<c_int> = (0..3).map(|_| user(local, group, &opts).expect("join")).collect();
    let ids: Vec<u32> = tus.iter().map(|&t| member_id(t)).collect();
    // The TO asks again and again: a call is under way.
    let retried = |n: u64| wait_for(5, || stats(to).retransmissions >= n);
    let blocked = |f: extern "C" fn(c_int, u32) -> c_int, id: u32| thread::spawn(move || (f(to, id), errno()));

    // A give to a TU that answers nothing, ended by the ejection of that TU.
    assert_eq!(set_int(tus[0], ECTP_TX_LOSS, 100), 0);
    let give = blocked(ectp_token_give, ids[0]);
    assert!(retried(2), "the TGR is sent again");
    fails_with(ectp_token_give(to, ids[0]), libc::EALREADY);
    fails_with(ectp_token_withdraw(to, ids[0]), libc::ENOENT);
    assert_eq!(mleave(to, ids[0]), 0);
    assert_eq!(give.join().expect("giver"), (-1, libc::ENOENT), "ended by the ejection");

    // A withdrawal from an SU that answers nothing, ended by its ejection.
    let token = mtoken_get(tus[1]);
    assert!(token > 0, "mtoken_get: errno {}", errno());
    assert_eq!(set_int(tus[1], ECTP_TX_LOSS, 100), 0);
    let before = stats(to).retransmissions;
    let withdrawal = blocked(ectp_token_withdraw, ids[1]);
    assert!(retried(before + 2), "the TRR is sent again");
    fails_with(ectp_token_withdraw(to, ids[1]), libc::ENOENT);
    fails_with(ectp_token_give(to, ids[1]), libc::EALREADY);
    assert_eq!(mleave(to, ids[1]), 0);
    assert_eq!(withdrawal.join().expect("withdrawer"), (0, 0), "0 once it was ejected");

    // A give under way when another thread aborts the connection.
    assert_eq!(set_int(tus[2], ECTP_TX_LOSS, 100), 0);
    let before = stats(to).retransmissions;
    let give = blocked(ectp_token_give, ids[2]);
    assert!(retried(before + 2), "the TGR is sent again");
    assert_eq!(ectp_abort(to), 0, "errno {}", errno());
    assert_eq!(give.join().expect("giver"), (-1, libc::EBADF), "released by the abort");
    for t in tus {
        assert_eq!(mleave(t, 0), 0);
    }
}

/// `ectp_abort` from another thread while `mterminate` waits for a TU that
/// receives nothing: both return, at once rather than when that TU would be
/// ejected, and the TUs see ECONNRESET (CTR with F=1), not the normal end.
fn abort_while_terminating((local, group): (SocketAddr, SocketAddr)) {
    let opts = [(ECTP_HGT, 1000), (ECTP_RXT, 100), (ECTP_RETRIES, 100)];
    let to = owner(local, group, &opts);
    let tus: Vec<c_int> = (0..2).map(|_| user(local, group, &opts).expect("join")).collect();
    assert_eq!(set_int(tus[0], ECTP_RX_LOSS, 100), 0);
    for i in 0..20 {
        assert_eq!(send(to, &pattern(1000, i)), 1000);
    }
    let terminating = thread::spawn(move || (mterminate(to), errno()));
    // The other TU has everything: the drain now waits for the deaf one.
    for i in 0..20 {
        assert!(recv(tus[1], 1 << 16, 0).is_ok(), "message {i}");
    }
    assert_eq!(stats(to).members_failed, 0, "nobody ejected yet");
    assert_eq!(ectp_abort(to), 0, "errno {}", errno());
    let (r, e) = terminating.join().expect("mterminate");
    assert!(r == 0 || e == libc::EBADF, "mterminate: {r}, errno {e}");
    assert_eq!(set_int(tus[0], ECTP_RX_LOSS, 0), 0);
    assert_eq!(recv(tus[1], 16, 0).map(|r| r.0.len()), Err(libc::ECONNRESET), "an abnormal end");
    for t in tus {
        assert_eq!(mleave(t, 0), 0);
    }
}

macro_rules! both_families {
    ($scenario:ident, $v4:ident, $v6:ident, $n:expr) => {
        #[test]
        fn $v4() {
            $scenario(v4($n));
        }

        #[test]
        fn $v6() {
            if in_ipv6_netns(stringify!($v6)) {
                $scenario(v6($n));
            }
        }
    };
}

both_families!(give_and_withdraw, token_give_and_withdraw_ipv4, token_give_and_withdraw_ipv6, 1);
both_families!(pause_and_resume, pause_and_resume_ipv4, pause_and_resume_ipv6, 2);
both_families!(abort, abort_ipv4, abort_ipv6, 3);
both_families!(statistics, statistics_ipv4, statistics_ipv6, 4);
both_families!(blocked_token_calls, blocked_token_calls_ipv4, blocked_token_calls_ipv6, 5);
both_families!(abort_while_terminating, abort_while_terminating_ipv4, abort_while_terminating_ipv6, 6);

/// What the join callback below got from the calls that wait for the
/// library's thread: (return value, errno) for each.
static FROM_CALLBACK: std::sync::Mutex<Vec<(i64, c_int)>> = std::sync::Mutex::new(Vec::new());

unsafe extern "C" fn join_cb(sd: c_int, user_id: u32, _: *const libc::sockaddr, _: libc::socklen_t) {
    let mut got = vec![];
    let mut note = |r: i64| got.push((r, if r < 0 { errno() } else { 0 }));
    note(i64::from(ectp_token_give(sd, user_id)));
    note(i64::from(ectp_token_withdraw(sd, user_id)));
    note(i64::from(mterminate(sd)));
    note(i64::from(ectp_abort(sd)));
    let mut buf = [0u8; 16];
    note(mrecvmsg(sd, buf.as_mut_ptr().cast(), buf.len(), 0, std::ptr::null_mut()) as i64);
    FROM_CALLBACK.lock().unwrap().extend(got);
    assert_eq!(mjoin_confirm(sd, user_id, 1), 0);
}

/// A callback runs on the library's thread: a call that would wait for that
/// thread gives EDEADLK there instead of hanging, and changes nothing.
#[test]
fn blocking_calls_from_a_callback_give_edeadlk() {
    let (local, group) = v4(7);
    let sd = msocket(libc::AF_INET, libc::SOCK_DGRAM, 0);
    for (o, v) in FAST {
        assert_eq!(set_int(sd, o, v), 0);
    }
    let cb: ectp_join_callback = Some(join_cb);
    let len = std::mem::size_of::<ectp_join_callback>() as libc::socklen_t;
    assert_eq!(msetsockopt(sd, SOL_ECTP, ECTP_JOIN_CALLBACK, (&cb as *const ectp_join_callback).cast(), len), 0);
    let (l, ll) = c_addr(local);
    let (g, gl) = c_addr(group);
    assert_eq!(mcreate(sd, ptr(&l), ll, ptr(&g), gl), 0);
    let t = tu(local, group);
    let got = FROM_CALLBACK.lock().unwrap().clone();
    assert_eq!(got, vec![(-1, libc::EDEADLK); 5], "give, withdraw, terminate, abort, blocking recv");
    // The connection is intact: the TU is in, and data flows.
    assert_eq!(get_int(sd, ECTP_MEMBERS), Ok(1));
    assert_eq!(send(sd, b"still here"), 10);
    assert_eq!(recv(t, 64, 0).map(|r| r.0), Ok(b"still here".to_vec()));
    assert_eq!(mterminate(sd), 0);
    assert_eq!(mleave(t, 0), 0);
}
