//! Failures of whole processes (SIGKILL, no goodbye): a TU killed mid-stream
//! is ejected and the TO finishes; a TO killed mid-stream makes the TUs'
//! mrecvmsg fail with ECONNRESET; an SU killed while holding the only token
//! frees it.
//!
//! The other side of each test runs in a child process: this very test
//! binary, re-executed to run one of the `role_*` helper tests below. Those
//! are `#[ignore]`d and return at once unless ECTP_ROLE names them, so a
//! plain `cargo test -- --include-ignored` runs them as no-ops.

mod common;
use common::*;
use ectp::ffi::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Short timers, so that failure detection (FDN x HGT = 300 ms) is quick.
const HGT: i32 = 100;
const FDN: i32 = 3;
const FAST: [(i32, i32); 4] = [(ECTP_HGT, HGT), (ECTP_FDN, FDN), (ECTP_RXT, 50), (ECTP_RETRIES, 40)];
const TU_OPTS: [(i32, i32); 2] = [(ECTP_RXT, 50), (ECTP_RETRIES, 40)];

// ----- the stream -----

/// Size of message `i` of the forward stream: varied, with segment boundaries.
fn msg_len(i: usize) -> usize {
    [1, 700, 1400, 1401, 2800, 5000, 12345, 20000][i % 8] + (i * 37) % 300
}

fn msg(i: usize) -> Vec<u8> {
    pattern(msg_len(i), 7 + i as u32)
}

fn loopback_group(group: &str, p: u16) -> (SocketAddr, SocketAddr) {
    ("127.0.0.1:0".parse().unwrap(), format!("{group}:{p}").parse().unwrap())
}

/// Runs `f` in a thread; panics if it has not finished within `secs`.
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: still blocked after {secs} s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the thread panicked"),
    }
}

// ----- role: a TU that reads and verifies the stream -----

/// Joins, then receives ECTP_COUNT messages, each checked against `msg(i)`,
/// then expects the end of the connection (mrecvmsg 0). Exits 0 only then.
#[test]
#[ignore = "helper: a child process role, run by the tests of this file"]
fn role_tu_stream() {
    if !is_role("tu_stream") {
        return;
    }
    let (owner_a, group) = loopback_group(&env_str("ECTP_GROUP"), env_num("ECTP_PORT"));
    let count: usize = env_num("ECTP_COUNT");
    let tu = user(owner_a, group, &TU_OPTS).unwrap_or_else(|(_, e)| panic!("mjoin: errno {e}"));
    tell(&format!("joined {}", get_int(tu, ECTP_USER_ID).unwrap()));
    for i in 0..count {
        let (got, info) = recv(tu, 1 << 16, 0).unwrap_or_else(|e| panic!("recv {i}: errno {e}"));
        assert_eq!(info.flags, 0, "flags of message {i}");
        assert!(got == msg(i), "message {i}: {} bytes, expected {}", got.len(), msg_len(i));
        if (i + 1) % 20 == 0 {
            tell(&format!("progress {}", i + 1));
        }
    }
    let (end, _) = recv(tu, 1 << 16, 0).unwrap_or_else(|e| panic!("end of connection: errno {e}"));
    assert!(end.is_empty(), "a message after the last one ({} bytes)", end.len());
    tell("done");
    assert_eq!(mleave(tu, 0), 0);
}

#[test]
fn tu_killed_mid_stream_is_ejected_and_to_finishes() {
    let p = unique_port();
    let g = "239.255.78.1";
    let (local, group) = loopback_group(g, p);
    let to = owner(local, group, &FAST);
    let count = 8000usize; // long enough to outlast the kill at any speed
    let env = [("ECTP_GROUP", g.to_string()), ("ECTP_PORT", p.to_string()), ("ECTP_COUNT", count.to_string())];
    let mut victim = ChildRole::spawn(None, "tu_stream", &env);
    let mut survivor = ChildRole::spawn(None, "tu_stream", &env);
    victim.expect_line("joined", 15);
    survivor.expect_line("joined", 15);
    assert!(wait_for(10, || get_int(to, ECTP_MEMBERS) == Ok(2)), "members: {:?}", get_int(to, ECTP_MEMBERS));

    // The TO streams in a thread; the test kills the victim once it has
    // received part of the stream.
    let sent = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = mpsc::channel();
    {
        let sent = sent.clone();
        thread::spawn(move || {
            for i in 0..count {
                let m = msg(i);
                let n = send(to, &m);
                if n != m.len() as isize {
                    let _ = done_tx.send(Err(format!("msendm {i}: {n}, errno {}", errno())));
                    return;
                }
                sent.store(i + 1, Ordering::SeqCst);
            }
            let _ = done_tx.send(Ok(()));
        });
    }
    victim.expect_line("progress 60", 20);
    victim.kill();
    let at_kill = sent.load(Ordering::SeqCst);
    eprintln!("victim killed after {at_kill} of {count} messages sent");
    assert!(at_kill < count, "the stream was over before the kill; make it longer");

    // msendm must not block for ever on the dead member.
    match done_rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!("msendm still blocked 20 s after the kill ({} of {count} sent)", sent.load(Ordering::SeqCst)),
    }
    assert!(
        wait_for(10, || get_int(to, ECTP_MEMBERS) == Ok(1)),
        "the killed TU was not ejected: members {:?}",
        get_int(to, ECTP_MEMBERS)
    );
    assert_eq!(within(20, "mterminate", move || mterminate(to)), 0, "mterminate");
    survivor.expect_line("done", 20);
    let st = survivor.wait(20).expect("the surviving TU did not exit");
    assert!(st.success(), "the surviving TU failed: {st:?}");
}

// ----- role: a TO that streams until it is killed -----

/// Creates the connection, waits for ECTP_NTU members, then multicasts
/// `msg(i)` for ever (a little at a time) until it is killed.
#[test]
#[ignore = "helper: a child process role, run by the tests of this file"]
fn role_to_forever() {
    if !is_role("to_forever") {
        return;
    }
    let (local, group) = loopback_group(&env_str("ECTP_GROUP"), env_num("ECTP_PORT"));
    let ntu: i32 = env_num("ECTP_NTU");
    let to = owner(local, group, &FAST);
    tell("ready");
    assert!(wait_for(20, || get_int(to, ECTP_MEMBERS) == Ok(ntu)), "members {:?}", get_int(to, ECTP_MEMBERS));
    tell("members");
    for i in 0.. {
        let m = msg(i);
        assert_eq!(send(to, &m), m.len() as isize, "msendm {i}: errno {}", errno());
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn to_killed_mid_stream_gives_econnreset() {
    let p = unique_port();
    let g = "239.255.78.2";
    let (owner_a, group) = loopback_group(g, p);
    let ntu = 2;
    let mut to = ChildRole::spawn(
        None,
        "to_forever",
        &[("ECTP_GROUP", g.to_string()), ("ECTP_PORT", p.to_string()), ("ECTP_NTU", ntu.to_string())],
    );
    to.expect_line("ready", 15);
    let tus: Vec<i32> =
        (0..ntu).map(|_| user(owner_a, group, &TU_OPTS).unwrap_or_else(|(_, e)| panic!("mjoin: errno {e}"))).collect();
    assert_eq!(get_int(tus[0], ECTP_HGT), Ok(HGT), "the TU learnt HGT");
    assert_eq!(get_int(tus[0], ECTP_FDN), Ok(FDN), "the TU learnt FDN");
    to.expect_line("members", 15);

    let received = Arc::new(Mutex::new(vec![0usize; ntu]));
    let (res_tx, res_rx) = mpsc::channel();
    for (k, &tu) in tus.iter().enumerate() {
        let received = received.clone();
        let res_tx = res_tx.clone();
        thread::spawn(move || {
            let mut i = 0;
            let r = loop {
                match recv(tu, 1 << 16, 0) {
                    Ok((got, _)) if got.is_empty() => break Ok(i),
                    Ok((got, _)) => {
                        if got != msg(i) {
                            break Err(format!("message {i}: {} bytes, expected {}", got.len(), msg_len(i)));
                        }
                        i += 1;
                        received.lock().unwrap()[k] = i;
                    }
                    Err(e) => break Err(format!("errno {e}")),
                }
            };
            let _ = res_tx.send((k, i, r, Instant::now()));
        });
    }
    assert!(
        wait_for(20, || received.lock().unwrap().iter().all(|&n| n >= 30)),
        "the TUs did not receive the stream: {:?}",
        received.lock().unwrap()
    );
    to.kill();
    let killed_at = Instant::now();
    eprintln!("TO killed; received so far {:?}", received.lock().unwrap());
    for _ in 0..ntu {
        let (k, n, r, at) = res_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a TU's mrecvmsg still blocked 20 s after the TO was killed");
        eprintln!("TU {k}: after {n} messages: {r:?}, {:?} after the kill", at - killed_at);
        assert_eq!(r, Err(format!("errno {}", libc::ECONNRESET)), "TU {k} after {n} messages");
    }
    for &tu in &tus {
        // Still a descriptor to release.
        assert_eq!(mleave(tu, 0), 0, "mleave after ECONNRESET: errno {}", errno());
    }
}

// ----- role: a TU that takes the token and is then killed -----

/// Joins, takes a token, says so, then waits to be killed.
#[test]
#[ignore = "helper: a child process role, run by the tests of this file"]
fn role_tu_token_holder() {
    if !is_role("tu_token_holder") {
        return;
    }
    let (owner_a, group) = loopback_group(&env_str("ECTP_GROUP"), env_num("ECTP_PORT"));
    let tu = user(owner_a, group, &TU_OPTS).unwrap_or_else(|(_, e)| panic!("mjoin: errno {e}"));
    let id = mtoken_get(tu);
    assert!(id > 0, "mtoken_get: errno {}", errno());
    assert_eq!(send_su(tu, b"from the doomed SU"), 18, "msendmsg: errno {}", errno());
    tell(&format!("token {id} user {}", get_int(tu, ECTP_USER_ID).unwrap()));
    loop {
        thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn su_killed_holding_the_token_frees_it() {
    let p = unique_port();
    let g = "239.255.78.3";
    let (local, group) = loopback_group(g, p);
    let mut opts = FAST.to_vec();
    opts.push((ECTP_MAX_TOKENS, 1));
    let to = owner(local, group, &opts);
    let tu =
        user(local, group, &[(ECTP_RXT, 50), (ECTP_RETRIES, 3)]).unwrap_or_else(|(_, e)| panic!("mjoin: errno {e}"));
    let mut holder =
        ChildRole::spawn(None, "tu_token_holder", &[("ECTP_GROUP", g.to_string()), ("ECTP_PORT", p.to_string())]);
    let line = holder.expect_line("token", 15);
    eprintln!("child: {line}");
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(2));
    let (got, info) = within(10, "TO recv", move || recv(to, 1 << 16, 0)).expect("TO recv");
    assert_eq!(got, b"from the doomed SU");
    assert_eq!(line, format!("token {} user {}", info.token_id, info.user_id));

    // The only token is taken: this TU is refused (or not answered).
    let r = within(10, "mtoken_get while taken", move || (mtoken_get(tu), errno()));
    assert_eq!(r.0, -1, "a second token was handed out with ECTP_MAX_TOKENS=1");
    eprintln!("mtoken_get while the token is held: errno {}", r.1);

    holder.kill();
    let killed_at = Instant::now();
    let got = within(20, "mtoken_get loop", move || {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let id = mtoken_get(tu);
            if id > 0 {
                return Ok(id);
            }
            let e = errno();
            if Instant::now() >= until {
                return Err(e);
            }
            thread::sleep(Duration::from_millis(20));
        }
    });
    let id = got.unwrap_or_else(|e| panic!("no token within 10 s of the holder's death (last errno {e})"));
    eprintln!("token {id} got {:?} after the kill", killed_at.elapsed());
    assert_eq!(get_int(tu, ECTP_TOKEN_ID), Ok(id));
    assert!(wait_for(10, || get_int(to, ECTP_MEMBERS) == Ok(1)), "members {:?}", get_int(to, ECTP_MEMBERS));

    // The token works.
    assert_eq!(send_su(tu, b"alive"), 5);
    let (got, info) = within(10, "TO recv", move || recv(to, 1 << 16, 0)).expect("TO recv");
    assert_eq!(got, b"alive");
    assert_eq!(info.token_id as i32, id);
    assert_eq!(Ok(info.user_id as i32), get_int(tu, ECTP_USER_ID));
    assert_eq!(within(10, "mtoken_return", move || mtoken_return(tu)), 0);
    assert_eq!(within(10, "mterminate", move || mterminate(to)), 0);
    let (end, _) = within(10, "TU end", move || recv(tu, 16, 0)).expect("end of connection");
    assert!(end.is_empty());
    assert_eq!(mleave(tu, 0), 0);
}
