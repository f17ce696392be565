//! Reliable delivery over a real network with real loss: three network
//! namespaces (TO, TU1, TU2) on a bridge in a fourth, and in each of the
//! three an iptables rule dropping 5% of incoming UDP at random. The TO
//! streams about 3 MB to both TUs while both send messages back through the
//! token (ECTP_MAX_TOKENS=1: one after the other). Everything must arrive
//! whole, in order, byte-identical; the iptables counters show that packets
//! really were dropped and the TO's counters that it repaired.
//!
//! Needs root, `ip` (iproute2) and `iptables`; skips otherwise. The roles
//! run in child processes (`ip netns exec <ns> <this binary> --exact role_...`).

mod common;
use common::netns::{Net, can_build};
use common::*;
use ectp::ffi::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const GROUP: &str = "239.255.77.7";
const TO_ADDR: &str = "10.77.0.1";
/// Forward stream: this many messages of 1..=30000 bytes (about 3 MB).
const COUNT: usize = 200;
/// Backward: messages each SU sends through the token.
const BACK: usize = 50;
const DROP_PROBABILITY: &str = "0.05";

fn xorshift(seed: u64) -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..3 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

fn msg_len(i: usize) -> usize {
    1 + (xorshift(i as u64 + 1) % 30000) as usize
}

fn msg(i: usize) -> Vec<u8> {
    pattern(msg_len(i), 0x5eed + i as u32)
}

/// Message `j` that the SU with member id `uid` sends back.
fn back_msg(uid: u32, j: usize) -> Vec<u8> {
    pattern(1 + (j * 1237 + uid as usize * 411) % 8000, uid.wrapping_mul(1000).wrapping_add(j as u32))
}

fn addrs(port: u16) -> (SocketAddr, SocketAddr) {
    (format!("{TO_ADDR}:0").parse().unwrap(), format!("{GROUP}:{port}").parse().unwrap())
}

fn stats_line(who: &str, s: &ectp_stats) -> String {
    format!(
        "stats {who} packets_sent={} packets_received={} data_sent={} data_received={} rdata_sent={} duplicates={} retransmissions={} gaps={}",
        s.packets_sent,
        s.packets_received,
        s.data_sent,
        s.data_received,
        s.rdata_sent,
        s.duplicates,
        s.retransmissions,
        s.gaps
    )
}

// ----- roles (child processes inside the namespaces) -----

/// The TO, in namespace A: waits for both TUs, streams, checks what each SU
/// sent back (identity by user id, order, content), terminates.
#[test]
#[ignore = "helper: a child process role, run by netns_reliable_with_real_loss"]
fn role_net_to() {
    if !is_role("net_to") {
        return;
    }
    let (local, group) = addrs(env_num("ECTP_PORT"));
    let to = owner(
        local,
        group,
        &[(ECTP_HGT, 200), (ECTP_FDN, 5), (ECTP_RXT, 50), (ECTP_RETRIES, 50), (ECTP_MAX_TOKENS, 1)],
    );
    tell("ready");
    assert!(wait_for(30, || get_int(to, ECTP_MEMBERS) == Ok(2)), "members {:?}", get_int(to, ECTP_MEMBERS));
    tell("members 2");
    let backward = thread::spawn(move || {
        let mut next: HashMap<u32, usize> = HashMap::new();
        for k in 0..2 * BACK {
            let (got, info) = recv(to, 1 << 16, 0).unwrap_or_else(|e| panic!("TO recv {k}: errno {e}"));
            assert_eq!(info.flags, 0, "flags of backward message {k}");
            assert!(info.token_id > 0, "token id of backward message {k}");
            let j = next.entry(info.user_id).or_insert(0);
            assert!(*j < BACK, "more than {BACK} messages from user {}", info.user_id);
            assert!(
                got == back_msg(info.user_id, *j),
                "backward message {j} of user {}: {} bytes",
                info.user_id,
                got.len()
            );
            *j += 1;
        }
        next
    });
    let t0 = Instant::now();
    for i in 0..COUNT {
        let m = msg(i);
        assert_eq!(send(to, &m), m.len() as isize, "msendm {i}: errno {}", errno());
    }
    let bytes: usize = (0..COUNT).map(msg_len).sum();
    tell(&format!("sent {COUNT} messages, {bytes} bytes in {:?}", t0.elapsed()));
    let next = backward.join().expect("backward checks");
    let mut users: Vec<_> = next.into_iter().collect();
    users.sort();
    for (uid, n) in &users {
        tell(&format!("su {uid} {n}"));
    }
    assert_eq!(users.len(), 2, "messages from two SUs: {users:?}");
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(2), "nobody was ejected");
    tell(&stats_line("to", &stats(to)));
    // mterminate does not wait for tokens being returned: the parent says
    // when both SUs have returned theirs.
    tell("waiting");
    assert_eq!(hear(), "terminate");
    assert_eq!(mterminate(to), 0, "mterminate: errno {}", errno());
    tell("terminated");
}

/// A TU, in namespace B or C: checks the whole stream and its end; once a
/// few messages have arrived, takes the token (retrying while the other SU
/// holds it), sends BACK messages, returns it.
#[test]
#[ignore = "helper: a child process role, run by netns_reliable_with_real_loss"]
fn role_net_tu() {
    if !is_role("net_tu") {
        return;
    }
    let (owner_a, group) = addrs(env_num("ECTP_PORT"));
    let tu =
        user(owner_a, group, &[(ECTP_RXT, 50), (ECTP_RETRIES, 50)]).unwrap_or_else(|(_, e)| panic!("mjoin: errno {e}"));
    let uid = get_int(tu, ECTP_USER_ID).unwrap() as u32;
    tell(&format!("joined {uid}"));
    let received = Arc::new(AtomicUsize::new(0));
    let reader = {
        let received = received.clone();
        thread::spawn(move || {
            for i in 0..COUNT {
                let (got, info) = recv(tu, 1 << 16, 0).unwrap_or_else(|e| panic!("recv {i}: errno {e}"));
                assert_eq!(info.flags, 0, "flags of message {i}");
                assert!(got == msg(i), "message {i}: {} bytes, expected {}", got.len(), msg_len(i));
                received.store(i + 1, Ordering::SeqCst);
            }
            let (end, _) = recv(tu, 1 << 16, 0).unwrap_or_else(|e| panic!("end of connection: errno {e}"));
            assert!(end.is_empty(), "a message after the last one ({} bytes)", end.len());
        })
    };
    assert!(wait_for(30, || received.load(Ordering::SeqCst) >= 5), "the stream does not come");
    let until = Instant::now() + Duration::from_secs(40);
    let mut refused = 0;
    let id = loop {
        let id = mtoken_get(tu);
        if id > 0 {
            break id;
        }
        let e = errno();
        assert!(e == libc::EACCES || e == libc::ETIMEDOUT, "mtoken_get: errno {e}");
        assert!(Instant::now() < until, "no token within 40 s");
        refused += 1;
        thread::sleep(Duration::from_millis(20));
    };
    tell(&format!("token {id} after {refused} refusals, at message {}", received.load(Ordering::SeqCst)));
    for j in 0..BACK {
        let m = back_msg(uid, j);
        assert_eq!(send_su(tu, &m), m.len() as isize, "msendmsg {j}: errno {}", errno());
    }
    assert_eq!(mtoken_return(tu), 0, "mtoken_return: errno {}", errno());
    tell(&format!("returned the token at message {}", received.load(Ordering::SeqCst)));
    reader.join().expect("the stream was not received whole");
    tell(&stats_line("tu", &stats(tu)));
    assert_eq!(mleave(tu, 0), 0);
    tell("done");
}

#[test]
fn netns_reliable_with_real_loss() {
    if !can_build() {
        println!("skipped: needs root, ip netns and iptables");
        return;
    }
    // Namespaces for the TO, TU1, TU2 on 10.77.0.1, .2, .3, each dropping 5% of its incoming UDP.
    let net = match Net::new("L", 3, 77, false, DROP_PROBABILITY) {
        Ok(n) => n,
        Err(e) => {
            // Root without the right to create namespaces (some containers).
            println!("skipped: needs root, ip netns and iptables ({e})");
            return;
        }
    };
    let t0 = Instant::now();
    let port = 7700 + (std::process::id() % 100) as u16;
    let env = [("ECTP_PORT", port.to_string())];
    let mut to = ChildRole::spawn(Some(&net.hosts[0]), "net_to", &env);
    to.expect_line("ready", 20);
    let mut tus: Vec<ChildRole> = net.hosts[1..].iter().map(|ns| ChildRole::spawn(Some(ns), "net_tu", &env)).collect();
    let mut uids = vec![];
    for tu in &tus {
        let l = tu.expect_line("joined", 30);
        uids.push(l["joined ".len()..].parse::<u32>().unwrap());
    }
    to.expect_line("members 2", 30);

    // Every role must finish well within a minute; a hang is a failure.
    let deadline = t0 + Duration::from_secs(50);
    let left = || deadline.saturating_duration_since(Instant::now()).as_secs().max(1);
    let mut su_counts = vec![];
    let mut to_stats = String::new();
    loop {
        let l = to.expect_line("", left());
        if let Some(c) = l.strip_prefix("su ") {
            su_counts.push(c.to_string());
        } else if l.starts_with("stats to") {
            to_stats = l.clone();
        } else if l == "waiting" {
            break;
        }
    }
    for tu in &tus {
        tu.expect_line("returned the token", left());
    }
    to.say("terminate");
    to.expect_line("terminated", left());
    let st = to.wait(left()).expect("the TO did not exit");
    assert!(st.success(), "the TO role failed: {st:?}");
    for (k, tu) in tus.iter_mut().enumerate() {
        tu.expect_line("done", left());
        let st = tu.wait(left()).expect("a TU did not exit");
        assert!(st.success(), "TU {k} failed: {st:?}");
    }
    let mut want: Vec<String> = uids.iter().map(|u| format!("{u} {BACK}")).collect();
    want.sort();
    su_counts.sort();
    assert_eq!(su_counts, want, "backward messages per SU");

    // The loss was real, and repaired.
    let dropped: Vec<u64> = (0..net.hosts.len()).map(|k| net.dropped(k)).collect();
    eprintln!("iptables drops (TO, TU1, TU2): {dropped:?}; {to_stats}; {:?} in all", t0.elapsed());
    assert!(dropped[1] > 0 && dropped[2] > 0, "iptables dropped nothing at the TUs: {dropped:?}");
    let rdata: u64 = to_stats
        .split_whitespace()
        .find_map(|f| f.strip_prefix("rdata_sent="))
        .and_then(|v| v.parse().ok())
        .expect("the TO's stats");
    assert!(rdata > 0, "the TO repaired nothing: {to_stats}");
    drop(net);
}
