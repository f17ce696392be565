//! Rate and congestion control at the C API (API.md, "Rate and congestion
//! control"): ECTP_CC, ECTP_MAX_RATE and ECTP_RATE, their errors, and a cap
//! that holds on a real transfer over IPv4 loopback; ECTP_SLOW_TIMEOUT and a
//! TU whose application stops reading.
#![allow(unsafe_code)]

mod common;

use std::mem::size_of;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use ectp::ffi::*;
use libc::{c_int, socklen_t};

fn group(n: u8) -> SocketAddr {
    format!("239.255.108.{n}:{}", unique_port()).parse().unwrap()
}

fn set_i64(sd: c_int, opt: c_int, v: i64) -> c_int {
    msetsockopt(sd, SOL_ECTP, opt, (&v as *const i64).cast(), size_of::<i64>() as socklen_t)
}

fn get_i64(sd: c_int, opt: c_int) -> Result<i64, c_int> {
    let mut v: i64 = -7;
    let mut len = size_of::<i64>() as socklen_t;
    let r = mgetsockopt(sd, SOL_ECTP, opt, (&mut v as *mut i64).cast(), &mut len);
    if r == 0 {
        assert_eq!(len as usize, size_of::<i64>());
        Ok(v)
    } else {
        Err(errno())
    }
}

#[test]
fn options_have_their_defaults_types_and_errors() {
    let sd = msocket(libc::AF_INET, libc::SOCK_DGRAM, 0);
    assert!(sd >= 0);
    assert_eq!(get_int(sd, ECTP_CC), Ok(ECTP_CC_TFMCC), "TFMCC by default");
    assert_eq!(get_i64(sd, ECTP_MAX_RATE), Ok(0), "no cap by default");
    assert_eq!(get_i64(sd, ECTP_RATE), Err(libc::ENOTCONN), "no rate before mcreate/mjoin");
    // ECTP_CC: an int, 0 or 1.
    assert_eq!(set_int(sd, ECTP_CC, 2), -1);
    assert_eq!(errno(), libc::EINVAL);
    assert_eq!(set_int(sd, ECTP_CC, ECTP_CC_NONE), 0);
    assert_eq!(get_int(sd, ECTP_CC), Ok(ECTP_CC_NONE));
    // ECTP_MAX_RATE: an int64, not negative.
    assert_eq!(set_int(sd, ECTP_MAX_RATE, 5), -1, "an int is not an int64");
    assert_eq!(errno(), libc::EINVAL);
    assert_eq!(set_i64(sd, ECTP_MAX_RATE, -1), -1);
    assert_eq!(errno(), libc::EINVAL);
    assert_eq!(msetsockopt(sd, SOL_ECTP, ECTP_MAX_RATE, std::ptr::null(), 8), -1);
    assert_eq!(errno(), libc::EFAULT);
    assert_eq!(set_i64(sd, ECTP_MAX_RATE, 3_000_000), 0);
    assert_eq!(get_i64(sd, ECTP_MAX_RATE), Ok(3_000_000));
    // A short buffer for an int64.
    let mut small: c_int = 0;
    let mut len = size_of::<c_int>() as socklen_t;
    assert_eq!(mgetsockopt(sd, SOL_ECTP, ECTP_MAX_RATE, (&mut small as *mut c_int).cast(), &mut len), -1);
    assert_eq!(errno(), libc::EINVAL);
    // ECTP_RATE is read only.
    assert_eq!(set_i64(sd, ECTP_RATE, 1), -1);
    assert_eq!(errno(), libc::ENOPROTOOPT);
    // ECTP_CC is a connection option: not after mcreate. ECTP_MAX_RATE is allowed any time.
    let (l, ll) = c_addr("127.0.0.1:0".parse().unwrap());
    let g = group(1);
    let (ga, gl) = c_addr(g);
    assert_eq!(mcreate(sd, ptr(&l), ll, ptr(&ga), gl), 0);
    assert_eq!(set_int(sd, ECTP_CC, ECTP_CC_TFMCC), -1);
    assert_eq!(errno(), libc::EISCONN);
    assert_eq!(get_i64(sd, ECTP_RATE), Ok(3_000_000), "CC_NONE: the cap is the rate");
    assert_eq!(set_i64(sd, ECTP_MAX_RATE, 0), 0);
    assert_eq!(get_i64(sd, ECTP_RATE), Ok(0), "nothing limits it");
    mterminate(sd);
}

/// One TO, one TU on loopback: `bytes` in 1000-byte messages; returns the
/// seconds the TU took from the first byte to the last, and the TO's
/// ECTP_RATE read during the transfer.
fn transfer(opts: &[(c_int, c_int)], max_rate: i64, bytes: usize, n: u8) -> (f64, i64) {
    let g = group(n);
    let to = owner("127.0.0.1:0".parse().unwrap(), g, opts);
    assert_eq!(set_i64(to, ECTP_MAX_RATE, max_rate), 0);
    // The TO's address with port 0: the group's port.
    let tu = user("127.0.0.1:0".parse().unwrap(), g, &[]).expect("join");
    assert!(wait_for(5, || get_int(to, ECTP_MEMBERS) == Ok(1)));
    let msgs: Vec<Vec<u8>> = (0..bytes / 1000).map(|i| pattern(1000, i as u32)).collect();
    let receiver = std::thread::spawn(move || {
        let mut start = None;
        for (i, want) in msgs.iter().enumerate() {
            let (got, _) = recv(tu, 2000, 0).unwrap_or_else(|e| panic!("message {i}: errno {e}"));
            start.get_or_insert_with(Instant::now);
            assert_eq!(&got, want, "message {i}");
        }
        mleave(tu, 0);
        start.unwrap().elapsed().as_secs_f64()
    });
    let mut rate_seen = 0;
    for i in 0..bytes / 1000 {
        assert_eq!(send(to, &pattern(1000, i as u32)), 1000);
        if i == bytes / 2000 {
            rate_seen = get_i64(to, ECTP_RATE).unwrap();
        }
    }
    let secs = receiver.join().unwrap();
    mterminate(to);
    (secs, rate_seen)
}

#[test]
fn max_rate_caps_the_forward_data_and_rate_reports_it() {
    // 1 MB at 2 MB/s: at least about half a second whatever the machine
    // (a lower bound only: a slow machine can only make it longer).
    let (secs, rate) = transfer(&[(ECTP_HGT, 500), (ECTP_CC, ECTP_CC_NONE)], 2_000_000, 1_000_000, 2);
    assert_eq!(rate, 2_000_000);
    assert!(secs >= 0.4, "1 MB capped at 2 MB/s took {secs:.3} s");
    // With TFMCC the cap still holds, and the rate read never exceeds it.
    let (secs, rate) = transfer(&[(ECTP_HGT, 500)], 2_000_000, 1_000_000, 3);
    assert!(rate > 0 && rate <= 2_000_000, "ECTP_RATE {rate}");
    assert!(secs >= 0.4, "1 MB capped at 2 MB/s took {secs:.3} s");
}

#[test]
fn slow_timeout_has_its_default_range_and_ejects_a_tu_that_stops_reading() {
    let sd = msocket(libc::AF_INET, libc::SOCK_DGRAM, 0);
    assert!(sd >= 0);
    // Default: FDN x HGT (3 x 3000 ms).
    assert_eq!(get_int(sd, ECTP_SLOW_TIMEOUT), Ok(9000));
    assert_eq!(set_int(sd, ECTP_SLOW_TIMEOUT, -1), -1);
    assert_eq!(errno(), libc::EINVAL);
    assert_eq!(set_int(sd, ECTP_SLOW_TIMEOUT, 3_600_001), -1);
    assert_eq!(errno(), libc::EINVAL);
    assert_eq!(set_int(sd, ECTP_SLOW_TIMEOUT, 500), 0);
    assert_eq!(get_int(sd, ECTP_SLOW_TIMEOUT), Ok(500));
    mterminate(sd);

    // A TO, a TU that reads and one that never does: 4 MB, more than the
    // stalled TU's queue (about 1.4 MB) and the window.
    let g = group(4);
    let to = owner("127.0.0.1:0".parse().unwrap(), g, &[(ECTP_HGT, 200), (ECTP_SLOW_TIMEOUT, 500)]);
    let reader = user("127.0.0.1:0".parse().unwrap(), g, &[]).expect("join");
    let stalled = user("127.0.0.1:0".parse().unwrap(), g, &[]).expect("join");
    assert!(wait_for(5, || get_int(to, ECTP_MEMBERS) == Ok(2)));
    const N: usize = 4000;
    let reading = std::thread::spawn(move || {
        for i in 0..N {
            let (got, _) = recv(reader, 2000, 0).unwrap_or_else(|e| panic!("message {i}: errno {e}"));
            assert_eq!(got, pattern(1000, i as u32), "message {i}");
        }
        reader
    });
    let t0 = Instant::now();
    for i in 0..N {
        assert_eq!(send(to, &pattern(1000, i as u32)), 1000, "msendm {i}: errno {}", errno());
    }
    let stalled_for = t0.elapsed();
    let reader = reading.join().unwrap();
    assert!(wait_for(5, || get_int(to, ECTP_MEMBERS) == Ok(1)), "the stalled TU was not ejected");
    let s = stats(stalled);
    assert!(s.messages_delivered == 0, "its application read nothing");
    // What it queued is still there, whole and in order; then the reset.
    let mut k = 0;
    loop {
        match recv(stalled, 2000, 0) {
            Ok((got, _)) => {
                assert_eq!(got, pattern(1000, k), "queued message {k}");
                k += 1;
            }
            Err(e) => {
                assert_eq!(e, libc::ECONNRESET);
                break;
            }
        }
    }
    assert!(k > 500 && (k as usize) < N, "{k} messages were queued for the stalled TU");
    eprintln!(
        "the stalled TU queued {k} messages; the TO was held {stalled_for:?} (ECTP_SLOW_TIMEOUT 500 ms, HGT 200 ms)"
    );
    assert!(stalled_for < Duration::from_secs(20), "held {stalled_for:?}");
    mleave(reader, 0);
    mterminate(to);
}
