//! The C API contract (shared/spec/API.md), function by function and errno by
//! errno, over IPv4 loopback: TOs on 127.0.0.1, groups 239.255.101.n (one per
//! test), a distinct port per test.
#![allow(unsafe_code)]

mod common;

use std::mem::size_of;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use ectp::ffi::*;
use libc::{c_int, c_void, sockaddr, socklen_t};

const LOCAL: &str = "127.0.0.1:0";

/// TO options for most tests: heartbeats every 500 ms, so that mterminate,
/// which waits for every TU's acknowledgement in the reliable mode, is quick.
const FAST: &[(c_int, c_int)] = &[(ECTP_HGT, 500)];

fn local() -> SocketAddr {
    LOCAL.parse().unwrap()
}

/// Group 239.255.101.`n` on a port of its own.
fn group(n: u8) -> SocketAddr {
    format!("239.255.101.{n}:{}", unique_port()).parse().unwrap()
}

fn strerror(e: c_int) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

/// `$call` must return -1 and set errno to `$errno`.
macro_rules! fails {
    ($call:expr, $errno:expr) => {{
        let r = $call;
        let e = errno();
        assert_eq!(r as i64, -1, "{} returned {} instead of -1", stringify!($call), r);
        assert_eq!(
            e,
            $errno,
            "{}: errno {} ({}), expected {} ({})",
            stringify!($call),
            e,
            strerror(e),
            $errno,
            strerror($errno)
        );
    }};
}

/// `$call` must return 0.
macro_rules! ok {
    ($call:expr) => {{
        let r = $call;
        let e = errno();
        assert_eq!(r as i64, 0, "{} returned {}, errno {} ({})", stringify!($call), r, e, strerror(e));
    }};
}

fn joined(to_group: SocketAddr) -> c_int {
    user(local(), to_group, &[]).unwrap_or_else(|(_, e)| panic!("mjoin: errno {e} ({})", strerror(e)))
}

/// Send `msg` from the TO and check that every TU in `tus` receives it.
fn check_flow(to: c_int, tus: &[c_int], msg: &[u8]) {
    assert_eq!(send(to, msg), msg.len() as isize, "msendm: errno {}", errno());
    for &tu in tus {
        let (got, info) = recv(tu, 1 << 20, 0).expect("mrecvmsg");
        assert_eq!(got, msg);
        assert_eq!(info.flags, 0);
    }
}

/// Release an endpoint that has no role (the contract has no call for it;
/// the library releases it on mleave or mterminate).
/// An IPv4 endpoint with no role yet, with the FAST options.
fn fast_socket() -> c_int {
    let sd = new_socket(local());
    for &(o, v) in FAST {
        assert_eq!(set_int(sd, o, v), 0);
    }
    sd
}

fn release_unbound(sd: c_int) {
    let _ = mleave(sd, 0);
}

fn int_ptr(v: &c_int) -> *const c_void {
    (v as *const c_int).cast()
}

const INT_LEN: socklen_t = size_of::<c_int>() as socklen_t;

// ---------------------------------------------------------------- msocket

#[test]
fn msocket_rejects_bad_domain_type_and_protocol() {
    for domain in [libc::AF_UNIX, libc::AF_PACKET, libc::AF_UNSPEC, -1, 12345] {
        fails!(msocket(domain, libc::SOCK_DGRAM, 0), libc::EINVAL);
    }
    for ty in [libc::SOCK_STREAM, libc::SOCK_RAW, libc::SOCK_SEQPACKET, -1] {
        fails!(msocket(libc::AF_INET, ty, 0), libc::EINVAL);
        fails!(msocket(libc::AF_INET6, ty, 0), libc::EINVAL);
    }
    for proto in [libc::IPPROTO_TCP, libc::IPPROTO_ICMP, -1, 9999] {
        fails!(msocket(libc::AF_INET, libc::SOCK_DGRAM, proto), libc::EINVAL);
    }
    // The valid spellings: each a real, open file descriptor.
    for (d, t, p) in [
        (libc::AF_INET, libc::SOCK_DGRAM, 0),
        (libc::AF_INET, 0, 0),
        (libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_UDP),
        (libc::AF_INET6, libc::SOCK_DGRAM, 0),
        (libc::AF_INET6, 0, libc::IPPROTO_UDP),
    ] {
        let sd = msocket(d, t, p);
        assert!(sd >= 0, "msocket({d}, {t}, {p}): errno {}", errno());
        assert!(fd_identity(sd).is_some(), "msocket returned {sd}, which is not an open descriptor");
        assert!(!poll_readable(sd, 0), "a fresh endpoint must not poll readable");
        release_unbound(sd);
    }
}

// ---------------------------------------------------------------- EBADF

fn every_call_gives_ebadf(sd: c_int) {
    let g = group(250); // never used: every call fails before it matters
    let (l, ll) = c_addr(local());
    let (ga, gl) = c_addr(g);
    let v: c_int = 1;
    let mut out: c_int = 0;
    let mut len = INT_LEN;
    let mut buf = [0u8; 64];
    let mut info = empty_info();
    let mut st = ectp_stats::default();
    fails!(msetsockopt(sd, SOL_ECTP, ECTP_RO, int_ptr(&v), INT_LEN), libc::EBADF);
    fails!(msetsockopt(sd, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, int_ptr(&v), INT_LEN), libc::EBADF);
    fails!(mgetsockopt(sd, SOL_ECTP, ECTP_RO, (&mut out as *mut c_int).cast(), &mut len), libc::EBADF);
    fails!(mgetsockopt(sd, libc::SOL_SOCKET, libc::SO_RCVBUF, (&mut out as *mut c_int).cast(), &mut len), libc::EBADF);
    fails!(mgetesockopt(sd, SOL_ECTP, ECTP_MSS, (&mut out as *mut c_int).cast(), &mut len), libc::EBADF);
    fails!(mcreate(sd, ptr(&l), ll, ptr(&ga), gl), libc::EBADF);
    fails!(mjoin(sd, ptr(&l), ll, ptr(&ga), gl), libc::EBADF);
    fails!(msendm(sd, b"hello".as_ptr().cast(), 5, 0), libc::EBADF);
    fails!(msendmsg(sd, b"hello".as_ptr().cast(), 5, 0), libc::EBADF);
    fails!(mrecvmsg(sd, buf.as_mut_ptr().cast(), buf.len(), 0, &mut info), libc::EBADF);
    fails!(mrecvmsg(sd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT, std::ptr::null_mut()), libc::EBADF);
    fails!(mtoken_get(sd), libc::EBADF);
    fails!(mtoken_return(sd), libc::EBADF);
    fails!(mjoin_confirm(sd, 1, 1), libc::EBADF);
    fails!(mtoken_confirm(sd, 1, 1), libc::EBADF);
    fails!(mleave(sd, 0), libc::EBADF);
    fails!(mleave(sd, 1), libc::EBADF);
    fails!(mterminate(sd), libc::EBADF);
    fails!(ectp_get_stats(sd, &mut st), libc::EBADF);
}

#[test]
fn unknown_descriptors_give_ebadf() {
    every_call_gives_ebadf(999_999);
    every_call_gives_ebadf(-1);
    every_call_gives_ebadf(c_int::MIN);
    // A real descriptor that is not an ECTP endpoint.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    every_call_gives_ebadf(std::os::fd::AsRawFd::as_raw_fd(&udp));
}

// ---------------------------------------------------------------- EFAULT

#[test]
fn null_pointers_give_efault() {
    let g = group(1);
    let (l, ll) = c_addr(local());
    let (ga, gl) = c_addr(g);
    let null_addr: *const sockaddr = std::ptr::null();

    // Option calls, on an endpoint with no role yet.
    let sd = fast_socket();
    let mut out: c_int = 0;
    let mut len = INT_LEN;
    fails!(msetsockopt(sd, SOL_ECTP, ECTP_RO, std::ptr::null(), INT_LEN), libc::EFAULT);
    fails!(
        msetsockopt(sd, SOL_ECTP, ECTP_JOIN_CALLBACK, std::ptr::null(), size_of::<ectp_join_callback>() as socklen_t),
        libc::EFAULT
    );
    fails!(msetsockopt(sd, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, std::ptr::null(), INT_LEN), libc::EFAULT);
    fails!(mgetsockopt(sd, SOL_ECTP, ECTP_RO, std::ptr::null_mut(), &mut len), libc::EFAULT);
    fails!(mgetsockopt(sd, SOL_ECTP, ECTP_RO, (&mut out as *mut c_int).cast(), std::ptr::null_mut()), libc::EFAULT);
    fails!(mgetesockopt(sd, SOL_ECTP, ECTP_RO, std::ptr::null_mut(), &mut len), libc::EFAULT);
    fails!(mgetesockopt(sd, SOL_ECTP, ECTP_RO, (&mut out as *mut c_int).cast(), std::ptr::null_mut()), libc::EFAULT);
    len = INT_LEN;
    fails!(mgetsockopt(sd, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, std::ptr::null_mut(), &mut len), libc::EFAULT);
    fails!(
        mgetsockopt(
            sd,
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_TTL,
            (&mut out as *mut c_int).cast(),
            std::ptr::null_mut()
        ),
        libc::EFAULT
    );
    fails!(ectp_get_stats(sd, std::ptr::null_mut()), libc::EFAULT);
    assert_eq!(get_int(sd, ECTP_RO), Ok(ECTP_RO_RELIABLE), "a failed call must not change the option");

    // mcreate: NULL local or NULL group; then the endpoint still works.
    fails!(mcreate(sd, null_addr, ll, ptr(&ga), gl), libc::EFAULT);
    fails!(mcreate(sd, ptr(&l), ll, null_addr, gl), libc::EFAULT);
    fails!(mcreate(sd, null_addr, 0, null_addr, 0), libc::EFAULT);
    ok!(mcreate(sd, ptr(&l), ll, ptr(&ga), gl));
    let to = sd;

    // mjoin: NULL owner or NULL group; then it still joins.
    let tu = fast_socket();
    fails!(mjoin(tu, null_addr, ll, ptr(&ga), gl), libc::EFAULT);
    fails!(mjoin(tu, ptr(&l), ll, null_addr, gl), libc::EFAULT);
    ok!(mjoin(tu, ptr(&l), ll, ptr(&ga), gl));

    // Data calls: NULL buffers with a length.
    let mut info = empty_info();
    fails!(msendm(to, std::ptr::null(), 10, 0), libc::EFAULT);
    fails!(msendm(to, std::ptr::null(), 10, libc::MSG_DONTWAIT), libc::EFAULT);
    fails!(mrecvmsg(tu, std::ptr::null_mut(), 10, libc::MSG_DONTWAIT, &mut info), libc::EFAULT);
    fails!(mrecvmsg(to, std::ptr::null_mut(), 10, libc::MSG_DONTWAIT, &mut info), libc::EFAULT);
    let id = mtoken_get(tu);
    assert!(id >= 1, "mtoken_get: errno {}", errno());
    fails!(msendmsg(tu, std::ptr::null(), 10, 0), libc::EFAULT);
    fails!(ectp_get_stats(to, std::ptr::null_mut()), libc::EFAULT);
    fails!(ectp_get_stats(tu, std::ptr::null_mut()), libc::EFAULT);

    // None of it disturbed the connection.
    assert_eq!(send_su(tu, b"back"), 4);
    let (got, _) = recv(to, 100, 0).unwrap();
    assert_eq!(got, b"back");
    ok!(mtoken_return(tu));
    check_flow(to, &[tu], b"still fine");
    // info may be NULL.
    assert_eq!(send(to, b"no info"), 7);
    let mut buf = [0u8; 16];
    assert_eq!(mrecvmsg(tu, buf.as_mut_ptr().cast(), buf.len(), 0, std::ptr::null_mut()), 7);
    assert_eq!(&buf[..7], b"no info");
    ok!(mterminate(to));
    ok!(mleave(tu, 0));
}

// ---------------------------------------------------------------- EINVAL: lengths

#[test]
fn bad_lengths_give_einval() {
    let g = group(2);
    let (l, ll) = c_addr(local());
    let (ga, gl) = c_addr(g);
    let sin = size_of::<libc::sockaddr_in>() as socklen_t;
    let sd = fast_socket();

    for bad in [0, 1, 2, sin - 1] {
        fails!(mcreate(sd, ptr(&l), bad, ptr(&ga), gl), libc::EINVAL);
        fails!(mcreate(sd, ptr(&l), ll, ptr(&ga), bad), libc::EINVAL);
    }
    // Option lengths other than sizeof(int).
    let long: i64 = 1;
    for bad in [0, 1, 2, 3, 5, 8] {
        fails!(msetsockopt(sd, SOL_ECTP, ECTP_RO, (&long as *const i64).cast(), bad), libc::EINVAL);
        fails!(msetsockopt(sd, SOL_ECTP, ECTP_MSS, (&long as *const i64).cast(), bad), libc::EINVAL);
    }
    let cb: ectp_join_callback = None;
    fails!(msetsockopt(sd, SOL_ECTP, ECTP_JOIN_CALLBACK, (&cb as *const ectp_join_callback).cast(), 4), libc::EINVAL);
    let mut out: c_int = 0;
    for room in [0, 1, 2, 3] {
        let mut len: socklen_t = room;
        fails!(mgetsockopt(sd, SOL_ECTP, ECTP_RO, (&mut out as *mut c_int).cast(), &mut len), libc::EINVAL);
    }
    assert_eq!(get_int(sd, ECTP_RO), Ok(ECTP_RO_RELIABLE));
    assert_eq!(set_int(sd, ECTP_RO, ECTP_RO_UNRELIABLE), 0);

    ok!(mcreate(sd, ptr(&l), ll, ptr(&ga), gl));
    let to = sd;
    let tu = fast_socket();
    for bad in [0, 1, sin - 1] {
        fails!(mjoin(tu, ptr(&l), bad, ptr(&ga), gl), libc::EINVAL);
        fails!(mjoin(tu, ptr(&l), ll, ptr(&ga), bad), libc::EINVAL);
    }
    ok!(mjoin(tu, ptr(&l), ll, ptr(&ga), gl));

    // Zero-length messages.
    fails!(msendm(to, b"x".as_ptr().cast(), 0, 0), libc::EINVAL);
    fails!(msendm(to, std::ptr::null(), 0, 0), libc::EINVAL);
    assert!(mtoken_get(tu) >= 1);
    fails!(msendmsg(tu, b"x".as_ptr().cast(), 0, 0), libc::EINVAL);
    ok!(mtoken_return(tu));

    check_flow(to, &[tu], b"lengths checked");
    ok!(mterminate(to));
    ok!(mleave(tu, 0));
}

// ---------------------------------------------------------------- EINVAL: addresses

#[test]
fn bad_addresses_give_einval() {
    let g = group(3);
    let p = g.port();
    let sd = fast_socket();
    let bad_pairs: Vec<(SocketAddr, SocketAddr)> = vec![
        // Not a multicast group.
        (local(), format!("127.0.0.1:{p}").parse().unwrap()),
        (local(), format!("10.1.2.3:{p}").parse().unwrap()),
        (local(), format!("255.255.255.255:{p}").parse().unwrap()),
        // Family mismatch on an AF_INET endpoint.
        ("[::1]:0".parse().unwrap(), g),
        (local(), format!("[ff15::ec7b:1]:{p}").parse().unwrap()),
        ("[::1]:0".parse().unwrap(), format!("[ff15::ec7b:1]:{p}").parse().unwrap()),
        // Group port 0.
        (local(), "239.255.101.3:0".parse().unwrap()),
    ];
    for (a, b) in &bad_pairs {
        assert_eq!(create_on(sd, *a, *b), Err(libc::EINVAL), "mcreate({a}, {b})");
    }
    // A multicast or unspecified address is no TO unicast address.
    assert_eq!(create_on(sd, "239.255.101.9:0".parse().unwrap(), g), Err(libc::EINVAL));
    assert_eq!(create_on(sd, "0.0.0.0:0".parse().unwrap(), g), Err(libc::EINVAL));
    // A family the library does not know.
    let mut un: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    un.ss_family = libc::AF_UNIX as libc::sa_family_t;
    let (ga, gl) = c_addr(g);
    let (l, ll) = c_addr(local());
    fails!(mcreate(sd, ptr(&un), ll, ptr(&ga), gl), libc::EINVAL);
    fails!(mcreate(sd, ptr(&l), ll, ptr(&un), gl), libc::EINVAL);

    // An AF_INET6 endpoint given IPv4 addresses.
    let sd6 = new_socket("[::1]:0".parse().unwrap());
    assert_eq!(create_on(sd6, local(), g), Err(libc::EINVAL));
    assert_eq!(join_on(sd6, local(), g), Err(libc::EINVAL));
    release_unbound(sd6);

    // None of it disturbed the endpoint: it still creates.
    assert_eq!(create_on(sd, local(), g), Ok(()));
    let to = sd;
    let tu = fast_socket();
    for (a, b) in &bad_pairs {
        assert_eq!(join_on(tu, *a, *b), Err(libc::EINVAL), "mjoin({a}, {b})");
    }
    assert_eq!(join_on(tu, "239.255.101.9:0".parse().unwrap(), g), Err(libc::EINVAL));
    assert_eq!(join_on(tu, "0.0.0.0:0".parse().unwrap(), g), Err(libc::EINVAL));
    assert_eq!(join_on(tu, local(), g), Ok(()));
    check_flow(to, &[tu], b"addresses checked");
    ok!(mterminate(to));
    ok!(mleave(tu, 0));
}

// ---------------------------------------------------------------- ENOTCONN

#[test]
fn role_calls_before_create_or_join_give_enotconn() {
    let sd = fast_socket();
    let mut buf = [0u8; 32];
    let mut info = empty_info();
    fails!(msendm(sd, b"data".as_ptr().cast(), 4, 0), libc::ENOTCONN);
    fails!(msendm(sd, b"data".as_ptr().cast(), 4, libc::MSG_DONTWAIT), libc::ENOTCONN);
    fails!(msendmsg(sd, b"data".as_ptr().cast(), 4, 0), libc::ENOTCONN);
    fails!(mrecvmsg(sd, buf.as_mut_ptr().cast(), buf.len(), 0, &mut info), libc::ENOTCONN);
    fails!(mrecvmsg(sd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT, &mut info), libc::ENOTCONN);
    fails!(mtoken_get(sd), libc::ENOTCONN);
    fails!(mtoken_return(sd), libc::ENOTCONN);
    fails!(mjoin_confirm(sd, 1, 1), libc::ENOTCONN);
    fails!(mjoin_confirm(sd, 1, 0), libc::ENOTCONN);
    fails!(mtoken_confirm(sd, 1, 1), libc::ENOTCONN);
    fails!(mtoken_confirm(sd, 1, 0), libc::ENOTCONN);
    assert_eq!(get_int(sd, ECTP_MEMBERS), Err(libc::ENOTCONN));
    assert_eq!(get_int(sd, ECTP_USER_ID), Err(libc::ENOTCONN));
    assert_eq!(get_int(sd, ECTP_TOKEN_ID), Err(libc::ENOTCONN));
    assert_eq!(get_int_e(sd, ECTP_MEMBERS), Err(libc::ENOTCONN));
    assert_eq!(get_int_e(sd, ECTP_USER_ID), Err(libc::ENOTCONN));
    // The endpoint is still fresh: it can become a TO.
    let g = group(4);
    assert_eq!(create_on(sd, local(), g), Ok(()));
    assert_eq!(get_int(sd, ECTP_MEMBERS), Ok(0));
    ok!(mterminate(sd));
}

// ---------------------------------------------------------------- EOPNOTSUPP

#[test]
fn calls_for_the_other_role_give_eopnotsupp() {
    let g = group(5);
    let to = owner(local(), g, FAST);
    let tu = joined(g);
    let id = get_int(tu, ECTP_USER_ID).unwrap();
    assert!(id >= 1);

    // TU calls on the TO.
    fails!(msendmsg(to, b"data".as_ptr().cast(), 4, 0), libc::EOPNOTSUPP);
    fails!(mtoken_get(to), libc::EOPNOTSUPP);
    fails!(mtoken_return(to), libc::EOPNOTSUPP);
    assert_eq!(get_int(to, ECTP_USER_ID), Err(libc::EOPNOTSUPP));
    assert_eq!(get_int(to, ECTP_TOKEN_ID), Err(libc::EOPNOTSUPP));

    // TO calls on the TU.
    fails!(msendm(tu, b"data".as_ptr().cast(), 4, 0), libc::EOPNOTSUPP);
    fails!(mjoin_confirm(tu, id as u32, 1), libc::EOPNOTSUPP);
    fails!(mtoken_confirm(tu, id as u32, 1), libc::EOPNOTSUPP);
    fails!(mterminate(tu), libc::EOPNOTSUPP);
    assert_eq!(get_int(tu, ECTP_MEMBERS), Err(libc::EOPNOTSUPP));

    // Nothing was disturbed: the TU is still a member, both ways work.
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(1));
    check_flow(to, &[tu], b"roles checked");
    assert!(mtoken_get(tu) >= 1);
    assert_eq!(send_su(tu, b"up"), 2);
    assert_eq!(recv(to, 16, 0).unwrap().0, b"up");
    ok!(mtoken_return(tu));
    ok!(mterminate(to));
    assert_eq!(recv(tu, 16, 0).unwrap().0, b"");
    ok!(mleave(tu, 0));
}

// ---------------------------------------------------------------- EISCONN

#[test]
fn second_create_or_join_gives_eisconn() {
    let g = group(6);
    let other = group(7);
    let to = owner(local(), g, FAST);
    let tu = joined(g);
    assert_eq!(create_on(to, local(), g), Err(libc::EISCONN));
    assert_eq!(create_on(to, local(), other), Err(libc::EISCONN));
    assert_eq!(join_on(to, local(), g), Err(libc::EISCONN));
    assert_eq!(join_on(to, local(), other), Err(libc::EISCONN));
    assert_eq!(join_on(tu, local(), g), Err(libc::EISCONN));
    assert_eq!(join_on(tu, local(), other), Err(libc::EISCONN));
    assert_eq!(create_on(tu, local(), g), Err(libc::EISCONN));
    assert_eq!(create_on(tu, local(), other), Err(libc::EISCONN));
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(1));
    check_flow(to, &[tu], b"still one connection");
    ok!(mterminate(to));
    ok!(mleave(tu, 0));
}

// ---------------------------------------------------------------- tokens

#[test]
fn token_errors_eperm_and_ealready() {
    let g = group(8);
    let to = owner(local(), g, FAST);
    let tu = joined(g);
    assert_eq!(get_int(tu, ECTP_TOKEN_ID), Ok(0));
    fails!(msendmsg(tu, b"no token".as_ptr().cast(), 8, 0), libc::EPERM);
    fails!(msendmsg(tu, b"no token".as_ptr().cast(), 8, libc::MSG_DONTWAIT), libc::EPERM);
    fails!(mtoken_return(tu), libc::EPERM);
    let id = mtoken_get(tu);
    assert!((1..=255).contains(&id), "mtoken_get = {id}, errno {}", errno());
    fails!(mtoken_get(tu), libc::EALREADY);
    assert_eq!(get_int(tu, ECTP_TOKEN_ID), Ok(id));
    assert_eq!(send_su(tu, b"with token"), 10);
    let (got, info) = recv(to, 64, 0).unwrap();
    assert_eq!(got, b"with token");
    assert_eq!(i32::from(info.token_id), id);
    ok!(mtoken_return(tu));
    assert_eq!(get_int(tu, ECTP_TOKEN_ID), Ok(0));
    fails!(msendmsg(tu, b"returned".as_ptr().cast(), 8, 0), libc::EPERM);
    fails!(mtoken_return(tu), libc::EPERM);
    // It can take one again.
    let id2 = mtoken_get(tu);
    assert!(id2 >= 1, "second mtoken_get: errno {}", errno());
    ok!(mtoken_return(tu));
    ok!(mterminate(to));
    ok!(mleave(tu, 0));
}

// ---------------------------------------------------------------- ENOENT, EINVAL flags

#[test]
fn confirms_and_ejections_without_a_request_give_enoent() {
    let g = group(9);
    let to = owner(local(), g, FAST);
    let tu = joined(g);
    let id = get_int(tu, ECTP_USER_ID).unwrap() as u32;
    // Nothing pending: no such id, and the joined member's requests were
    // already answered (no callback: the library accepted them).
    for uid in [0, id + 1000, u32::MAX] {
        fails!(mjoin_confirm(to, uid, 1), libc::ENOENT);
        fails!(mjoin_confirm(to, uid, 0), libc::ENOENT);
        fails!(mtoken_confirm(to, uid, 1), libc::ENOENT);
        fails!(mtoken_confirm(to, uid, 0), libc::ENOENT);
        fails!(mleave(to, uid), libc::ENOENT);
    }
    fails!(mjoin_confirm(to, id, 1), libc::ENOENT);
    fails!(mtoken_confirm(to, id, 1), libc::ENOENT);
    // Flags other than 0 and 1.
    for flag in [2, -1, 100] {
        fails!(mjoin_confirm(to, id, flag), libc::EINVAL);
        fails!(mtoken_confirm(to, id, flag), libc::EINVAL);
    }
    // The member is still there.
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(1));
    check_flow(to, &[tu], b"confirms checked");
    ok!(mterminate(to));
    ok!(mleave(tu, 0));
}

// ---------------------------------------------------------------- EAGAIN, flags

#[test]
fn dontwait_gives_eagain_and_unknown_flags_give_einval() {
    let g = group(10);
    let to = owner(local(), g, FAST);
    let tu = joined(g);
    let mut buf = [0u8; 64];
    let mut info = empty_info();
    fails!(mrecvmsg(tu, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT, &mut info), libc::EAGAIN);
    fails!(mrecvmsg(to, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT, &mut info), libc::EAGAIN);
    fails!(mrecvmsg(tu, std::ptr::null_mut(), 0, libc::MSG_DONTWAIT, std::ptr::null_mut()), libc::EINVAL);

    assert!(mtoken_get(tu) >= 1);
    for bad in [libc::MSG_OOB, libc::MSG_PEEK, libc::MSG_TRUNC, libc::MSG_WAITALL, 0x4000_0000, -1] {
        fails!(msendm(to, b"x".as_ptr().cast(), 1, bad), libc::EINVAL);
        fails!(msendmsg(tu, b"x".as_ptr().cast(), 1, bad), libc::EINVAL);
        fails!(mrecvmsg(tu, buf.as_mut_ptr().cast(), buf.len(), bad, &mut info), libc::EINVAL);
        fails!(mrecvmsg(to, buf.as_mut_ptr().cast(), buf.len(), bad, &mut info), libc::EINVAL);
    }
    // Nothing was sent by the rejected calls; the known flags work.
    assert_eq!(msendm(to, b"dontwait".as_ptr().cast(), 8, libc::MSG_DONTWAIT), 8);
    assert_eq!(msendm(to, b"nosignal".as_ptr().cast(), 8, libc::MSG_NOSIGNAL), 8);
    assert_eq!(recv(tu, 64, 0).unwrap().0, b"dontwait");
    assert_eq!(recv(tu, 64, 0).unwrap().0, b"nosignal");
    assert_eq!(msendmsg(tu, b"su".as_ptr().cast(), 2, libc::MSG_DONTWAIT), 2);
    assert_eq!(recv(to, 64, 0).unwrap().0, b"su");
    ok!(mtoken_return(tu));
    fails!(mrecvmsg(tu, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT, &mut info), libc::EAGAIN);
    fails!(mrecvmsg(to, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT, &mut info), libc::EAGAIN);
    ok!(mterminate(to));
    ok!(mleave(tu, 0));
}

#[test]
fn msendm_dontwait_gives_eagain_while_flow_control_holds_it_back() {
    let g = group(25);
    // A small window, and (default HGT and FDN) a failure detection slow
    // enough not to eject the silent TU during the test.
    let to = owner(local(), g, &[(ECTP_WINDOW, 16)]);
    let tu = joined(g);
    // The TU stops acknowledging: everything it sends is dropped.
    assert_eq!(set_int(tu, ECTP_TX_LOSS, 100), 0);
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut blocked = false;
    for i in 0..100_000u32 {
        let m = i.to_be_bytes().to_vec();
        let r = msendm(to, m.as_ptr().cast(), m.len(), libc::MSG_DONTWAIT);
        if r == -1 {
            assert_eq!(errno(), libc::EAGAIN, "msendm(MSG_DONTWAIT) with the window full");
            blocked = true;
            break;
        }
        assert_eq!(r, 4);
        sent.push(m);
    }
    assert!(blocked, "msendm(MSG_DONTWAIT) never gave EAGAIN although no TU acknowledged {} messages", sent.len());
    assert!(!sent.is_empty());
    // A blocking msendm waits; once the TU acknowledges again, it returns.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(msendm(to, b"after the wait".as_ptr().cast(), 14, 0));
    });
    assert_eq!(set_int(tu, ECTP_TX_LOSS, 0), 0);
    let r = rx.recv_timeout(Duration::from_secs(20)).expect("the blocking msendm never returned");
    assert_eq!(r, 14, "blocking msendm: errno {}", errno());
    sent.push(b"after the wait".to_vec());
    for (i, m) in sent.iter().enumerate() {
        let (got, info) = recv(tu, 64, 0).expect("mrecvmsg");
        assert_eq!(&got, m, "message {i}");
        assert_eq!(info.flags, 0, "message {i}: nothing may be lost in the reliable mode");
    }
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(1));
    ok!(mterminate(to));
    assert_eq!(recv(tu, 64, 0).unwrap().0, b"");
    ok!(mleave(tu, 0));
}

// ---------------------------------------------------------------- options

const DEFAULTS: [(c_int, c_int, &str); 10] = [
    (ECTP_TCO, ECTP_TCO_FLAT, "TCO"),
    (ECTP_RO, ECTP_RO_RELIABLE, "RO"),
    (ECTP_AGN, 8, "AGN"),
    (ECTP_MSS, 1400, "MSS"),
    (ECTP_FDN, 3, "FDN"),
    (ECTP_HGT, 3000, "HGT"),
    (ECTP_CCT, 0, "CCT"),
    (ECTP_RXT, 250, "RXT"),
    (ECTP_RETRIES, 8, "RETRIES"),
    (ECTP_MAX_TOKENS, 255, "MAX_TOKENS"),
];

#[test]
fn option_defaults() {
    for domain in [libc::AF_INET, libc::AF_INET6] {
        let sd = msocket(domain, libc::SOCK_DGRAM, 0);
        assert!(sd >= 0);
        for (opt, want, name) in DEFAULTS {
            assert_eq!(get_int(sd, opt), Ok(want), "default {name}");
            assert_eq!(get_int_e(sd, opt), Ok(want), "default {name} via mgetesockopt");
        }
        // mgetsockopt reports the length it wrote.
        let mut v: c_int = 0;
        let mut len: socklen_t = 64;
        ok!(mgetsockopt(sd, SOL_ECTP, ECTP_MSS, (&mut v as *mut c_int).cast(), &mut len));
        assert_eq!((v, len), (1400, INT_LEN));
        release_unbound(sd);
    }
}

#[test]
fn option_values_are_checked_and_read_back() {
    let valid: [(c_int, &[c_int]); 10] = [
        (ECTP_TCO, &[ECTP_TCO_TREE, ECTP_TCO_FLAT]),
        (ECTP_RO, &[ECTP_RO_UNRELIABLE, ECTP_RO_SEMIRELIABLE, ECTP_RO_RELIABLE]),
        (ECTP_AGN, &[1, 255, 16]),
        (ECTP_MSS, &[64, 65000, 1000]),
        (ECTP_FDN, &[1, 255, 5]),
        (ECTP_HGT, &[10, 3_600_000, 1500]),
        (ECTP_CCT, &[3_600_000, 0, 700]),
        (ECTP_RXT, &[10, 60_000, 50]),
        (ECTP_RETRIES, &[1, 100, 3]),
        (ECTP_MAX_TOKENS, &[1, 255, 7]),
    ];
    let invalid: [(c_int, &[c_int]); 10] = [
        (ECTP_TCO, &[-1, 2, 3]),
        (ECTP_RO, &[-1, 3, 4]),
        (ECTP_AGN, &[0, 256, -1]),
        (ECTP_MSS, &[0, 63, 65001, -1, c_int::MAX]),
        (ECTP_FDN, &[0, 256, -1]),
        (ECTP_HGT, &[0, 9, 3_600_001, -1]),
        (ECTP_CCT, &[-1, 3_600_001, c_int::MIN]),
        (ECTP_RXT, &[0, 9, 60_001, -1]),
        (ECTP_RETRIES, &[0, 101, -1]),
        (ECTP_MAX_TOKENS, &[0, 256, -1]),
    ];
    let sd = new_socket(local());
    for (opt, values) in valid {
        for &v in values {
            assert_eq!(set_int(sd, opt, v), 0, "option {opt} = {v}: errno {}", errno());
            assert_eq!(get_int(sd, opt), Ok(v), "option {opt} read back");
            assert_eq!(get_int_e(sd, opt), Ok(v), "option {opt} read back by mgetesockopt");
        }
    }
    for (opt, values) in invalid {
        let before = get_int(sd, opt).unwrap();
        for &v in values {
            fails!(set_int(sd, opt, v), libc::EINVAL);
            assert_eq!(get_int(sd, opt), Ok(before), "a rejected value of option {opt} changed it");
        }
    }
    // Unknown options, both ways.
    for opt in [0, 999, -1, c_int::MAX] {
        fails!(set_int(sd, opt, 1), libc::ENOPROTOOPT);
        assert_eq!(get_int(sd, opt), Err(libc::ENOPROTOOPT), "get unknown option {opt}");
        assert_eq!(get_int_e(sd, opt), Err(libc::ENOPROTOOPT), "mgetesockopt unknown option {opt}");
    }
    // Read-only options cannot be set, whatever the state.
    for opt in [ECTP_MEMBERS, ECTP_USER_ID, ECTP_TOKEN_ID] {
        fails!(set_int(sd, opt, 1), libc::ENOPROTOOPT);
    }
    let g = group(11);
    set_int(sd, ECTP_RO, ECTP_RO_RELIABLE);
    set_int(sd, ECTP_CCT, 0);
    assert_eq!(create_on(sd, local(), g), Ok(()));
    for opt in [ECTP_MEMBERS, ECTP_USER_ID, ECTP_TOKEN_ID] {
        fails!(set_int(sd, opt, 1), libc::ENOPROTOOPT);
    }
    fails!(set_int(sd, 999, 1), libc::ENOPROTOOPT);
    ok!(mterminate(sd));
}

extern "C" fn unused_callback(_sd: c_int, _id: u32, _a: *const sockaddr, _l: socklen_t) {}

fn set_callback(sd: c_int, opt: c_int, cb: ectp_join_callback) -> c_int {
    msetsockopt(
        sd,
        SOL_ECTP,
        opt,
        (&cb as *const ectp_join_callback).cast(),
        size_of::<ectp_join_callback>() as socklen_t,
    )
}

const CONNECTION_OPTS: [(c_int, c_int); 7] = [
    (ECTP_TCO, ECTP_TCO_FLAT),
    (ECTP_RO, ECTP_RO_UNRELIABLE),
    (ECTP_AGN, 4),
    (ECTP_MSS, 900),
    (ECTP_FDN, 4),
    (ECTP_HGT, 2000),
    (ECTP_CCT, 0),
];

#[test]
fn connection_options_after_create_or_join_give_eisconn() {
    let g = group(12);
    let to = owner(local(), g, &[(ECTP_MSS, 1200), (ECTP_RO, ECTP_RO_SEMIRELIABLE)]);
    let tu = joined(g);
    for sd in [to, tu] {
        let before: Vec<_> = CONNECTION_OPTS.iter().map(|&(o, _)| get_int(sd, o)).collect();
        for (opt, v) in CONNECTION_OPTS {
            fails!(set_int(sd, opt, v), libc::EISCONN);
        }
        // An invalid value is EINVAL whatever the state.
        fails!(set_int(sd, ECTP_RO, 7), libc::EINVAL);
        fails!(set_callback(sd, ECTP_JOIN_CALLBACK, Some(unused_callback)), libc::EISCONN);
        fails!(set_callback(sd, ECTP_TOKEN_CALLBACK, Some(unused_callback)), libc::EISCONN);
        let after: Vec<_> = CONNECTION_OPTS.iter().map(|&(o, _)| get_int(sd, o)).collect();
        assert_eq!(before, after, "a refused option changed the connection's values");
    }
    assert_eq!(get_int(tu, ECTP_MSS), Ok(1200));
    assert_eq!(get_int(tu, ECTP_RO), Ok(ECTP_RO_SEMIRELIABLE));
    // The connection was not disturbed.
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(1));
    check_flow(to, &[tu], &pattern(5000, 12));
    ok!(mterminate(to));
    ok!(mleave(tu, 0));
}

#[test]
fn a_tu_reads_the_tos_connection_options_after_mjoin() {
    let g = group(13);
    let to = owner(
        local(),
        g,
        &[
            (ECTP_MSS, 1000),
            (ECTP_RO, ECTP_RO_SEMIRELIABLE),
            (ECTP_HGT, 1500),
            (ECTP_AGN, 16),
            (ECTP_FDN, 5),
            (ECTP_TCO, ECTP_TCO_TREE),
        ],
    );
    // The TU asks for other values before joining: the TO's win.
    let tu = user(
        local(),
        g,
        &[(ECTP_MSS, 500), (ECTP_RO, ECTP_RO_UNRELIABLE), (ECTP_HGT, 100), (ECTP_AGN, 2), (ECTP_FDN, 1)],
    )
    .expect("join");
    assert_eq!(get_int(tu, ECTP_MSS), Ok(1000));
    assert_eq!(get_int(tu, ECTP_RO), Ok(ECTP_RO_SEMIRELIABLE));
    assert_eq!(get_int(tu, ECTP_HGT), Ok(1500));
    assert_eq!(get_int(tu, ECTP_AGN), Ok(16));
    assert_eq!(get_int(tu, ECTP_FDN), Ok(5));
    assert_eq!(get_int(tu, ECTP_TCO), Ok(ECTP_TCO_TREE));
    assert_eq!(get_int_e(tu, ECTP_MSS), Ok(1000));
    // The TO reads its own values back.
    assert_eq!(get_int(to, ECTP_MSS), Ok(1000));
    assert_eq!(get_int(to, ECTP_HGT), Ok(1500));
    // A message of several 1000-byte segments arrives whole.
    check_flow(to, &[tu], &pattern(4321, 13));
    ok!(mterminate(to));
    ok!(mleave(tu, 0));
}

#[test]
fn options_of_other_levels_pass_through() {
    let g = group(14);
    let sd = fast_socket();
    assert_eq!(set_raw_int(sd, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, 3), 0, "errno {}", errno());
    assert_eq!(get_raw_int(sd, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL), Ok(3));
    assert_eq!(set_raw_int(sd, libc::SOL_SOCKET, libc::SO_RCVBUF, 65536), 0, "errno {}", errno());
    let rcvbuf = get_raw_int(sd, libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap();
    assert!(rcvbuf >= 65536, "SO_RCVBUF read back {rcvbuf}");
    // The alias reads them too.
    let mut v: c_int = 0;
    let mut len = INT_LEN;
    ok!(mgetesockopt(sd, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, (&mut v as *mut c_int).cast(), &mut len));
    assert_eq!((v, len), (3, INT_LEN));
    // The kernel's errors come back as they are.
    let r = set_raw_int(sd, libc::SOL_SOCKET, 0x7fff, 1);
    assert_eq!(r, -1);
    assert_eq!(errno(), libc::ENOPROTOOPT);
    // They survive mcreate, and can be set after it.
    assert_eq!(create_on(sd, local(), g), Ok(()));
    let to = sd;
    assert_eq!(get_raw_int(to, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL), Ok(3));
    assert_eq!(set_raw_int(to, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, 4), 0);
    assert_eq!(get_raw_int(to, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL), Ok(4));
    // A TU's option, set before mjoin, read after it.
    let tu = fast_socket();
    assert_eq!(set_raw_int(tu, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, 5), 0);
    assert_eq!(join_on(tu, local(), g), Ok(()));
    assert_eq!(get_raw_int(tu, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL), Ok(5));
    assert_eq!(set_raw_int(tu, libc::SOL_SOCKET, libc::SO_RCVBUF, 1 << 20), 0);
    check_flow(to, &[tu], b"options passed through");
    ok!(mterminate(to));
    ok!(mleave(tu, 0));
}

// ---------------------------------------------------------------- join outcomes

#[test]
fn join_with_nobody_answering_times_out() {
    let g = group(15);
    let tu = fast_socket();
    assert_eq!(set_int(tu, ECTP_RXT, 50), 0);
    assert_eq!(set_int(tu, ECTP_RETRIES, 3), 0);
    assert_eq!(join_on(tu, local(), g), Err(libc::ETIMEDOUT));
    // It is not connected, and can be released.
    let mut buf = [0u8; 8];
    fails!(mrecvmsg(tu, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT, std::ptr::null_mut()), libc::ENOTCONN);
    fails!(mtoken_get(tu), libc::ENOTCONN);
    let before = fd_identity(tu);
    ok!(mleave(tu, 0));
    assert_released(tu, &before);
}

static REFUSED_JOIN_ID: AtomicU32 = AtomicU32::new(0);
static REFUSED_JOIN_PORT: AtomicU32 = AtomicU32::new(0);
static REFUSED_JOIN_CALLS: AtomicU32 = AtomicU32::new(0);

extern "C" fn refuse_join(sd: c_int, user_id: u32, addr: *const sockaddr, len: socklen_t) {
    REFUSED_JOIN_CALLS.fetch_add(1, Ordering::SeqCst);
    REFUSED_JOIN_ID.store(user_id, Ordering::SeqCst);
    if let Some(a) = sockaddr_to_rust(addr, len)
        && a.ip() == std::net::Ipv4Addr::LOCALHOST
    {
        REFUSED_JOIN_PORT.store(u32::from(a.port()), Ordering::SeqCst);
    }
    mjoin_confirm(sd, user_id, 0);
}

#[test]
fn refused_join_gives_econnrefused() {
    let g = group(16);
    let to = fast_socket();
    assert_eq!(set_callback(to, ECTP_JOIN_CALLBACK, Some(refuse_join)), 0, "errno {}", errno());
    assert_eq!(create_on(to, local(), g), Ok(()));
    match user(local(), g, &[]) {
        Err((tu, e)) => {
            assert_eq!(e, libc::ECONNREFUSED, "mjoin errno {} ({})", e, strerror(e));
            let mut buf = [0u8; 8];
            fails!(
                mrecvmsg(tu, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT, std::ptr::null_mut()),
                libc::ENOTCONN
            );
            ok!(mleave(tu, 0));
        }
        Ok(_) => panic!("the join was accepted although the callback refused it"),
    }
    assert!(REFUSED_JOIN_CALLS.load(Ordering::SeqCst) >= 1);
    assert!(REFUSED_JOIN_ID.load(Ordering::SeqCst) >= 1, "the callback saw no user id");
    let port = REFUSED_JOIN_PORT.load(Ordering::SeqCst);
    assert!(port != 0 && port != u32::from(g.port()), "the callback saw address port {port}");
    // The refused request is no longer pending.
    fails!(mjoin_confirm(to, REFUSED_JOIN_ID.load(Ordering::SeqCst), 1), libc::ENOENT);
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(0));
    ok!(mterminate(to));
}

static TOKEN_REFUSALS: AtomicU32 = AtomicU32::new(0);
static TOKEN_REFUSED_ID: AtomicU32 = AtomicU32::new(0);

extern "C" fn refuse_token(sd: c_int, user_id: u32, _addr: *const sockaddr, _len: socklen_t) {
    TOKEN_REFUSED_ID.store(user_id, Ordering::SeqCst);
    TOKEN_REFUSALS.fetch_add(1, Ordering::SeqCst);
    mtoken_confirm(sd, user_id, 0);
}

#[test]
fn refused_token_gives_eacces() {
    let g = group(17);
    let to = fast_socket();
    assert_eq!(set_callback(to, ECTP_TOKEN_CALLBACK, Some(refuse_token)), 0);
    assert_eq!(create_on(to, local(), g), Ok(()));
    // No join callback: the join is accepted.
    let tu = joined(g);
    let uid = get_int(tu, ECTP_USER_ID).unwrap() as u32;
    fails!(mtoken_get(tu), libc::EACCES);
    assert_eq!(TOKEN_REFUSED_ID.load(Ordering::SeqCst), uid, "the token callback saw another user id");
    assert_eq!(get_int(tu, ECTP_TOKEN_ID), Ok(0));
    fails!(msendmsg(tu, b"x".as_ptr().cast(), 1, 0), libc::EPERM);
    fails!(mtoken_return(tu), libc::EPERM);
    // Asking again asks the callback again.
    fails!(mtoken_get(tu), libc::EACCES);
    assert!(TOKEN_REFUSALS.load(Ordering::SeqCst) >= 2);
    fails!(mtoken_confirm(to, uid, 1), libc::ENOENT);
    check_flow(to, &[tu], b"still a member");
    ok!(mterminate(to));
    ok!(mleave(tu, 0));
}

static LATER_JOIN_ID: AtomicU32 = AtomicU32::new(0);
static LATER_JOIN_IP: AtomicU32 = AtomicU32::new(0);
static LATER_TOKEN_ID: AtomicU32 = AtomicU32::new(0);

extern "C" fn remember_join(_sd: c_int, user_id: u32, addr: *const sockaddr, len: socklen_t) {
    if let Some(std::net::SocketAddr::V4(a)) = sockaddr_to_rust(addr, len) {
        LATER_JOIN_IP.store(u32::from(*a.ip()), Ordering::SeqCst);
    }
    LATER_JOIN_ID.store(user_id, Ordering::SeqCst);
}

extern "C" fn remember_token(_sd: c_int, user_id: u32, _addr: *const sockaddr, _len: socklen_t) {
    LATER_TOKEN_ID.store(user_id, Ordering::SeqCst);
}

#[test]
fn join_and_token_confirmed_later_from_another_thread() {
    let g = group(18);
    let to = fast_socket();
    assert_eq!(set_callback(to, ECTP_JOIN_CALLBACK, Some(remember_join)), 0);
    assert_eq!(set_callback(to, ECTP_TOKEN_CALLBACK, Some(remember_token)), 0);
    assert_eq!(create_on(to, local(), g), Ok(()));

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = user(local(), g, &[(ECTP_RETRIES, 40)]);
        let _ = tx.send(r);
    });
    assert!(wait_for(10, || LATER_JOIN_ID.load(Ordering::SeqCst) != 0), "the join callback was not called");
    let id = LATER_JOIN_ID.load(Ordering::SeqCst);
    assert_eq!(LATER_JOIN_IP.load(Ordering::SeqCst), u32::from(std::net::Ipv4Addr::LOCALHOST));
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(0), "a pending join is not a member yet");
    ok!(mjoin_confirm(to, id, 1));
    fails!(mjoin_confirm(to, id, 1), libc::ENOENT);
    let tu = rx.recv_timeout(Duration::from_secs(10)).expect("mjoin did not return").expect("mjoin failed");
    assert_eq!(get_int(tu, ECTP_USER_ID), Ok(id as c_int));
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(1));

    // The token, granted from this thread while mtoken_get waits.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(mtoken_get(tu));
    });
    assert!(wait_for(10, || LATER_TOKEN_ID.load(Ordering::SeqCst) != 0), "the token callback was not called");
    assert_eq!(LATER_TOKEN_ID.load(Ordering::SeqCst), id);
    ok!(mtoken_confirm(to, id, 1));
    fails!(mtoken_confirm(to, id, 1), libc::ENOENT);
    let token = rx.recv_timeout(Duration::from_secs(10)).expect("mtoken_get did not return");
    assert!(token >= 1, "mtoken_get: {token}");
    assert_eq!(get_int(tu, ECTP_TOKEN_ID), Ok(token));
    assert_eq!(send_su(tu, b"granted later"), 13);
    let (got, info) = recv(to, 64, 0).unwrap();
    assert_eq!(got, b"granted later");
    assert_eq!(info.user_id, id);
    assert_eq!(i32::from(info.token_id), token);
    ok!(mtoken_return(tu));
    ok!(mterminate(to));
    ok!(mleave(tu, 0));
}

// ---------------------------------------------------------------- mrecvmsg

#[test]
fn truncated_message_is_flagged_and_the_next_is_intact() {
    let g = group(19);
    let to = owner(local(), g, FAST);
    let tu = joined(g);
    let long = pattern(1000, 19);
    let next = pattern(500, 20);
    assert_eq!(send(to, &long), 1000);
    assert_eq!(send(to, &next), 500);
    // A 200-byte buffer of which the call may use 100.
    let mut buf = [0xAAu8; 200];
    let mut info = empty_info();
    let n = mrecvmsg(tu, buf.as_mut_ptr().cast(), 100, 0, &mut info);
    assert_eq!(n, 100, "errno {}", errno());
    assert_eq!(&buf[..100], &long[..100]);
    assert!(buf[100..].iter().all(|&b| b == 0xAA), "mrecvmsg wrote past the length it was given");
    assert_ne!(info.flags & ECTP_MSG_TRUNC, 0, "ECTP_MSG_TRUNC not set");
    assert_eq!(info.flags & ECTP_MSG_GAP, 0);
    assert_eq!(info.token_id, 0);
    assert_eq!(info.user_id, 0);
    let (got, info) = recv(tu, 2000, 0).unwrap();
    assert_eq!(got, next, "the message after a truncated one");
    assert_eq!(info.flags, 0);

    // The same on the TO, for backward data.
    assert!(mtoken_get(tu) >= 1);
    assert_eq!(send_su(tu, &long), 1000);
    assert_eq!(send_su(tu, &next), 500);
    let mut info = empty_info();
    let n = mrecvmsg(to, buf.as_mut_ptr().cast(), 100, 0, &mut info);
    assert_eq!(n, 100);
    assert_eq!(&buf[..100], &long[..100]);
    assert_ne!(info.flags & ECTP_MSG_TRUNC, 0);
    let (got, info) = recv(to, 2000, 0).unwrap();
    assert_eq!(got, next);
    assert_eq!(info.flags, 0);
    // A zero-length buffer is a bad argument (0 means only the end of the
    // connection), and takes nothing away.
    assert_eq!(send_su(tu, b"still here"), 10);
    let mut info = empty_info();
    fails!(mrecvmsg(to, buf.as_mut_ptr().cast(), 0, 0, &mut info), libc::EINVAL);
    fails!(mrecvmsg(to, std::ptr::null_mut(), 0, libc::MSG_DONTWAIT, &mut info), libc::EINVAL);
    assert_eq!(recv(to, 64, 0).map(|(b, _)| b), Ok(b"still here".to_vec()));
    ok!(mtoken_return(tu));
    ok!(mterminate(to));
    ok!(mleave(tu, 0));
}

#[test]
fn descriptor_polls_readable_exactly_when_a_message_is_pending() {
    let g = group(20);
    let to = owner(local(), g, FAST);
    let tu = joined(g);
    assert!(!poll_readable(tu, 0), "TU readable with nothing pending");
    assert!(!poll_readable(to, 0), "TO readable with nothing pending");

    assert_eq!(send(to, b"one"), 3);
    assert!(poll_readable(tu, 5000), "TU not readable with a message pending");
    let mut buf = [0u8; 16];
    assert_eq!(mrecvmsg(tu, buf.as_mut_ptr().cast(), 16, libc::MSG_DONTWAIT, std::ptr::null_mut()), 3);
    assert!(!poll_readable(tu, 0), "TU still readable after its only message was read");
    fails!(mrecvmsg(tu, buf.as_mut_ptr().cast(), 16, libc::MSG_DONTWAIT, std::ptr::null_mut()), libc::EAGAIN);

    // Two pending: readable until both were read.
    let base = stats(tu).messages_delivered;
    assert_eq!(send(to, b"two"), 3);
    assert_eq!(send(to, b"three"), 5);
    assert!(wait_for(10, || stats(tu).data_received >= 3), "the TU did not receive the data");
    assert!(poll_readable(tu, 0));
    assert_eq!(mrecvmsg(tu, buf.as_mut_ptr().cast(), 16, libc::MSG_DONTWAIT, std::ptr::null_mut()), 3);
    assert!(poll_readable(tu, 0), "TU not readable with a second message pending");
    assert_eq!(mrecvmsg(tu, buf.as_mut_ptr().cast(), 16, libc::MSG_DONTWAIT, std::ptr::null_mut()), 5);
    assert_eq!(&buf[..5], b"three");
    assert!(!poll_readable(tu, 0));
    assert_eq!(stats(tu).messages_delivered, base + 2);

    // The TO's descriptor, for backward data.
    assert!(mtoken_get(tu) >= 1);
    assert!(!poll_readable(to, 0));
    assert_eq!(send_su(tu, b"up"), 2);
    assert!(poll_readable(to, 5000), "TO not readable with a message pending");
    assert_eq!(mrecvmsg(to, buf.as_mut_ptr().cast(), 16, libc::MSG_DONTWAIT, std::ptr::null_mut()), 2);
    assert!(!poll_readable(to, 0), "TO still readable after its only message was read");
    ok!(mtoken_return(tu));

    // End of connection: readable, mrecvmsg returns 0, and keeps doing so.
    assert_eq!(send(to, b"last"), 4);
    ok!(mterminate(to));
    assert!(poll_readable(tu, 5000));
    assert_eq!(mrecvmsg(tu, buf.as_mut_ptr().cast(), 16, libc::MSG_DONTWAIT, std::ptr::null_mut()), 4);
    assert!(poll_readable(tu, 5000), "TU not readable at the end of the connection");
    assert_eq!(mrecvmsg(tu, buf.as_mut_ptr().cast(), 16, libc::MSG_DONTWAIT, std::ptr::null_mut()), 0);
    assert!(poll_readable(tu, 0), "TU no longer readable after reading the end");
    assert_eq!(mrecvmsg(tu, buf.as_mut_ptr().cast(), 16, 0, std::ptr::null_mut()), 0);
    ok!(mleave(tu, 0));
}

// ---------------------------------------------------------------- leaving

#[test]
fn mleave_on_a_tu_releases_it_and_the_to_counts_it_out() {
    let g = group(21);
    let to = owner(local(), g, FAST);
    let tu1 = joined(g);
    let tu2 = joined(g);
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(2));
    check_flow(to, &[tu1, tu2], b"both");
    let before = fd_identity(tu1);
    ok!(mleave(tu1, 0));
    assert_released(tu1, &before);
    assert!(
        wait_for(10, || get_int(to, ECTP_MEMBERS) == Ok(1)),
        "ECTP_MEMBERS = {:?} after a TU left",
        get_int(to, ECTP_MEMBERS)
    );
    check_flow(to, &[tu2], b"the other stays");
    ok!(mterminate(to));
    ok!(mleave(tu2, 0));
}

#[test]
fn ejected_tu_gets_econnreset() {
    let g = group(22);
    let to = owner(local(), g, FAST);
    let tu1 = joined(g);
    let tu2 = joined(g);
    let id1 = get_int(tu1, ECTP_USER_ID).unwrap() as u32;
    let id2 = get_int(tu2, ECTP_USER_ID).unwrap() as u32;
    assert_ne!(id1, id2);
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(2));
    // tu1 waits in mrecvmsg while it is ejected.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = recv(tu1, 64, 0);
        let _ = tx.send(r);
    });
    ok!(mleave(to, id1));
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(1));
    fails!(mleave(to, id1), libc::ENOENT);
    let r = rx.recv_timeout(Duration::from_secs(10)).expect("the ejected TU's mrecvmsg did not return");
    assert_eq!(r.err(), Some(libc::ECONNRESET), "the ejected TU's mrecvmsg");
    // And again, without blocking.
    let mut buf = [0u8; 8];
    fails!(mrecvmsg(tu1, buf.as_mut_ptr().cast(), 8, 0, std::ptr::null_mut()), libc::ECONNRESET);
    assert!(poll_readable(tu1, 0), "an ejected TU's descriptor must poll readable (mrecvmsg does not block)");
    // The other TU is not affected.
    check_flow(to, &[tu2], b"after the ejection");
    ok!(mleave(tu1, 0));
    ok!(mterminate(to));
    assert_eq!(recv(tu2, 64, 0).unwrap().0, b"");
    ok!(mleave(tu2, 0));
}

#[test]
fn termination_ends_every_tu_after_the_data() {
    let g = group(23);
    let to = owner(local(), g, FAST);
    let tus = [joined(g), joined(g)];
    let msgs: Vec<Vec<u8>> = (0..20).map(|i| pattern(10 + i * 300, 2300 + i as u32)).collect();
    for m in &msgs {
        assert_eq!(send(to, m), m.len() as isize);
    }
    let before = fd_identity(to);
    ok!(mterminate(to));
    for tu in tus {
        for m in &msgs {
            let (got, info) = recv(tu, 1 << 16, 0).expect("data before the end");
            assert_eq!(&got, m);
            assert_eq!(info.flags, 0);
        }
        assert_eq!(recv(tu, 1 << 16, 0).unwrap().0, b"", "end of connection");
        assert_eq!(recv(tu, 1 << 16, 0).unwrap().0, b"", "end of connection, again");
        ok!(mleave(tu, 0));
    }
    // The TO's descriptor was released: msendm on it is EBADF (unless the
    // number was reused meanwhile, see assert_released).
    if fd_identity(to).is_none() {
        fails!(msendm(to, b"late".as_ptr().cast(), 4, 0), libc::EBADF);
    }
    assert_released(to, &before);
}

// ---------------------------------------------------------------- no crash

#[test]
fn absurd_lengths_fail_cleanly() {
    let g = group(24);
    let to = owner(local(), g, FAST);
    let tu = joined(g);
    let one = [7u8; 16];
    for len in [usize::MAX, isize::MAX as usize, 1 << 40, ectp::proto::MAX_MESSAGE + 1] {
        let r = msendm(to, one.as_ptr().cast(), len, 0);
        let e = errno();
        assert_eq!(r, -1, "msendm(len {len})");
        assert!(e == libc::EMSGSIZE || e == libc::EINVAL, "msendm(len {len}): errno {e} ({})", strerror(e));
    }
    assert!(mtoken_get(tu) >= 1);
    for len in [usize::MAX, 1 << 40] {
        let r = msendmsg(tu, one.as_ptr().cast(), len, 0);
        let e = errno();
        assert_eq!(r, -1);
        assert!(e == libc::EMSGSIZE || e == libc::EINVAL, "msendmsg(len {len}): errno {e}");
    }
    let mut buf = [0u8; 16];
    for len in [usize::MAX, isize::MAX as usize + 1] {
        let r = mrecvmsg(tu, buf.as_mut_ptr().cast(), len, libc::MSG_DONTWAIT, std::ptr::null_mut());
        let e = errno();
        assert_eq!(r, -1, "mrecvmsg(len {len})");
        assert!(e == libc::EMSGSIZE || e == libc::EINVAL, "mrecvmsg(len {len}): errno {e}");
    }
    // Address and option lengths larger than any address.
    let (l, _) = c_addr(local());
    let (ga, gl) = c_addr(g);
    let sd = fast_socket();
    fails!(mcreate(sd, ptr(&l), socklen_t::MAX, ptr(&ga), gl), libc::EINVAL);
    fails!(mjoin(sd, ptr(&l), socklen_t::MAX, ptr(&ga), gl), libc::EINVAL);
    let v: c_int = 1;
    fails!(msetsockopt(sd, SOL_ECTP, ECTP_RO, int_ptr(&v), socklen_t::MAX), libc::EINVAL);
    release_unbound(sd);
    // A message of the largest size the library takes still goes through.
    let big = pattern(ectp::proto::MAX_MESSAGE / 64, 24);
    assert_eq!(send(to, &big), big.len() as isize);
    let (got, _) = recv(tu, big.len() + 1, 0).unwrap();
    assert_eq!(got.len(), big.len());
    assert!(got == big);
    ok!(mtoken_return(tu));
    ok!(mterminate(to));
    ok!(mleave(tu, 0));
}

/// Runs `case` in a child process (this test binary, this one test), so that
/// a crash is reported as a failure of this test instead of killing them all.
fn in_child(test: &str, case: impl FnOnce()) {
    if std::env::var_os("ECTP_CRASH_CHILD").is_some() {
        case();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1", "--include-ignored"])
        .env("ECTP_CRASH_CHILD", "1")
        .output()
        .expect("run the test binary");
    assert!(
        out.status.success(),
        "the call crashed or failed the child process ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn huge_optlen_at_another_level_fails_cleanly() {
    in_child("huge_optlen_at_another_level_fails_cleanly", || {
        let sd = fast_socket();
        let v: c_int = 3;
        let r = msetsockopt(sd, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, int_ptr(&v), socklen_t::MAX);
        let e = errno();
        assert_eq!(r, -1);
        assert!(e == libc::EINVAL || e == libc::EFAULT, "errno {e}");
        let mut out: c_int = 0;
        let mut len: socklen_t = socklen_t::MAX;
        let r = mgetsockopt(sd, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, (&mut out as *mut c_int).cast(), &mut len);
        assert!(
            r == -1 || (r == 0 && len as usize <= size_of::<c_int>()),
            "mgetsockopt with a huge optlen: {r}, len {len}"
        );
        release_unbound(sd);
    });
}

// ---------------------------------------------------------------- more token outcomes

#[test]
fn unanswered_token_request_times_out_and_a_later_one_succeeds() {
    let g = group(26);
    let to = owner(local(), g, FAST);
    let tu = user(local(), g, &[(ECTP_RXT, 50), (ECTP_RETRIES, 3)]).expect("join");
    // The TO goes silent: whatever it sends is dropped.
    assert_eq!(set_int(to, ECTP_TX_LOSS, 100), 0);
    fails!(mtoken_get(tu), libc::ETIMEDOUT);
    assert_eq!(get_int(tu, ECTP_TOKEN_ID), Ok(0));
    fails!(msendmsg(tu, b"x".as_ptr().cast(), 1, 0), libc::EPERM);
    // The TO speaks again: the TU can ask again and gets a token.
    assert_eq!(set_int(to, ECTP_TX_LOSS, 0), 0);
    let id = mtoken_get(tu);
    assert!(id >= 1, "mtoken_get after a timed-out one: errno {} ({})", errno(), strerror(errno()));
    assert_eq!(send_su(tu, b"finally"), 7);
    assert_eq!(recv(to, 16, 0).unwrap().0, b"finally");
    ok!(mtoken_return(tu));
    ok!(mterminate(to));
    ok!(mleave(tu, 0));
}

#[test]
fn a_tu_leaving_with_the_token_frees_it() {
    let g = group(27);
    let to = owner(local(), g, &[(ECTP_HGT, 500), (ECTP_MAX_TOKENS, 1)]);
    let a = joined(g);
    let b = joined(g);
    assert!(mtoken_get(a) >= 1);
    fails!(mtoken_get(b), libc::EACCES);
    assert_eq!(send_su(a, b"sent before leaving"), 19);
    ok!(mleave(a, 0));
    assert_eq!(recv(to, 64, 0).unwrap().0, b"sent before leaving");
    assert!(wait_for(10, || get_int(to, ECTP_MEMBERS) == Ok(1)));
    let id = mtoken_get(b);
    assert!(id >= 1, "the token of a TU that left was not freed: errno {}", errno());
    ok!(mtoken_return(b));
    ok!(mterminate(to));
    ok!(mleave(b, 0));
}

// ---------------------------------------------------------------- random calls

/// A small deterministic generator for the random calls.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

#[test]
fn random_calls_never_panic_and_give_contract_errnos() {
    let g = group(28);
    let to = owner(local(), g, FAST);
    let tu = joined(g);
    let unbound = fast_socket();
    let sds = [to, tu, unbound, -1, 999_999, c_int::MAX];
    let allowed = [
        libc::EBADF,
        libc::EFAULT,
        libc::EINVAL,
        libc::EOPNOTSUPP,
        libc::ENOTCONN,
        libc::EISCONN,
        libc::EAGAIN,
        libc::EPERM,
        libc::EALREADY,
        libc::ENOENT,
        libc::EMSGSIZE,
        libc::ENOPROTOOPT,
        libc::EACCES,
    ];
    let mut rng = Lcg(0x5eed_ec7b);
    let mut buf = vec![0u8; 70_000];
    let lens = [0usize, 1, 3, 4, 8, 100, 1400, 1401, 65_536, 70_000, usize::MAX];
    let flags = [0, libc::MSG_DONTWAIT, libc::MSG_NOSIGNAL, libc::MSG_PEEK, -1, 0x10_0000];
    let opts: Vec<c_int> = (-2..24).chain([999, c_int::MAX, c_int::MIN]).collect();
    let values = [0, 1, 2, 3, 63, 64, 255, 256, 1400, 65_000, 65_001, -1, c_int::MAX, c_int::MIN];
    for step in 0..20_000 {
        let sd = rng.pick(&sds);
        let null = rng.next().is_multiple_of(8);
        let len = rng.pick(&lens);
        let f = rng.pick(&flags) | if rng.next().is_multiple_of(2) { libc::MSG_DONTWAIT } else { 0 };
        let p: *mut c_void = if null { std::ptr::null_mut() } else { buf.as_mut_ptr().cast() };
        let (what, r): (&str, i64) = match rng.next() % 9 {
            0 => ("msendm", msendm(sd, p, len, f | libc::MSG_DONTWAIT) as i64),
            1 => {
                // Never a blocking receive: MSG_DONTWAIT is always there.
                let mut info = empty_info();
                let ip =
                    if rng.next().is_multiple_of(2) { &mut info as *mut ectp_rcvinfo } else { std::ptr::null_mut() };
                ("mrecvmsg", mrecvmsg(sd, p, len, f | libc::MSG_DONTWAIT, ip) as i64)
            }
            2 => ("msendmsg", msendmsg(sd, p, len, f | libc::MSG_DONTWAIT) as i64),
            3 => {
                let v = rng.pick(&values);
                let opt = rng.pick(&opts);
                let optlen = rng.pick(&[0u32, 1, 4, 8, 4096, u32::MAX]);
                let vp: *const c_void = if null { std::ptr::null() } else { int_ptr(&v) };
                let vb = [v; 2];
                let vp = if optlen == 8 && !null { (&vb as *const [c_int; 2]).cast() } else { vp };
                // Lengths over 8 are longer than the value: the library must
                // reject them before reading (SOL_ECTP options are ints or
                // function pointers).
                ("msetsockopt", msetsockopt(sd, SOL_ECTP, opt, vp, optlen) as i64)
            }
            4 => {
                let opt = rng.pick(&opts);
                let mut room: socklen_t = rng.pick(&[0u32, 1, 4, 8, 64]);
                let mut out = [0u8; 64];
                let op: *mut c_void = if null { std::ptr::null_mut() } else { out.as_mut_ptr().cast() };
                let lp: *mut socklen_t = if rng.next().is_multiple_of(8) { std::ptr::null_mut() } else { &mut room };
                if rng.next().is_multiple_of(2) {
                    ("mgetsockopt", mgetsockopt(sd, SOL_ECTP, opt, op, lp) as i64)
                } else {
                    ("mgetesockopt", mgetesockopt(sd, SOL_ECTP, opt, op, lp) as i64)
                }
            }
            5 => {
                let uid = rng.pick(&[0u32, 1, 2, 3, 77, u32::MAX]);
                let flag = rng.pick(&[0, 1, 2, -1]);
                if sd == to {
                    // Accepting or refusing nothing pending: ENOENT or EINVAL.
                    ("mjoin_confirm", mjoin_confirm(sd, uid, flag) as i64)
                } else {
                    ("mtoken_confirm", mtoken_confirm(sd, uid, flag) as i64)
                }
            }
            6 => {
                let mut st = ectp_stats::default();
                let sp: *mut ectp_stats = if null { std::ptr::null_mut() } else { &mut st };
                ("ectp_get_stats", ectp_get_stats(sd, sp) as i64)
            }
            7 if sd != tu && sd != unbound => {
                // mleave on the TO ejects; only ids that are no member.
                let uid = rng.pick(&[0u32, 1000, u32::MAX]);
                ("mleave", mleave(sd, uid) as i64)
            }
            _ => {
                // Addresses: lengths and families, on endpoints that are
                // already connected or not endpoints (no blocking join).
                let (l, _) = c_addr(local());
                let (ga, _) = c_addr(g);
                let alen = rng.pick(&[0u32, 2, 15, 16, 28, 128, 129, u32::MAX]);
                let a = if null { std::ptr::null() } else { ptr(&l) };
                let target = rng.pick(&[to, tu, -1]);
                if rng.next().is_multiple_of(2) {
                    ("mcreate", mcreate(target, a, alen, ptr(&ga), alen) as i64)
                } else {
                    ("mjoin", mjoin(target, a, alen, ptr(&ga), alen) as i64)
                }
            }
        };
        if r < 0 {
            let e = errno();
            assert_eq!(r, -1, "step {step}: {what} returned {r}");
            assert!(
                allowed.contains(&e),
                "step {step}: {what} on {sd}: errno {e} ({}), not one of the contract's",
                strerror(e)
            );
        }
    }
    // The endpoints still work, once the testing aids are off again.
    for sd in [to, tu] {
        for opt in [ECTP_RX_LOSS, ECTP_TX_LOSS, ECTP_TX_CORRUPT] {
            assert_eq!(set_int(sd, opt, 0), 0);
        }
    }
    let mut buf = [0u8; 70_000];
    // Drain what the random msendm calls sent (it may still be arriving).
    assert_eq!(send(to, b"marker"), 6);
    loop {
        let n = mrecvmsg(tu, buf.as_mut_ptr().cast(), buf.len(), 0, std::ptr::null_mut());
        assert!(n > 0, "mrecvmsg while draining: errno {}", errno());
        if &buf[..n as usize] == b"marker" {
            break;
        }
    }
    let _ = mtoken_return(tu);
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(1));
    check_flow(to, &[tu], b"after the random calls");
    ok!(mterminate(to));
    ok!(mleave(tu, 0));
    release_unbound(unbound);
}

#[test]
fn a_panic_in_the_driver_fails_blocked_and_later_calls_with_eio() {
    let g = group(29);
    let to = owner(local(), g, FAST);
    let tu = joined(g);
    check_flow(to, &[tu], b"before");
    // A TU blocked in mrecvmsg and a TO blocked in mrecvmsg (waiting for an
    // SU): their driver threads die; both calls return instead of hanging.
    let (done_tx, done_rx) = mpsc::channel();
    for (sd, who) in [(tu, "TU"), (to, "TO")] {
        let done = done_tx.clone();
        std::thread::spawn(move || {
            let r = recv(sd, 64, 0);
            let _ = done.send((who, r.map(|(b, _)| b)));
        });
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(test_inject_driver_panic(tu) && test_inject_driver_panic(to));
    for _ in 0..2 {
        let (who, r) = done_rx.recv_timeout(Duration::from_secs(5)).expect("a blocked mrecvmsg returns");
        assert_eq!(r, Err(libc::EIO), "{who}: blocked mrecvmsg");
    }
    assert!(poll_readable(tu, 0), "a failed endpoint polls readable, so that a poller learns it");
    fails!(recv(tu, 64, libc::MSG_DONTWAIT).map(|_| 0).unwrap_or(-1), libc::EIO);
    fails!(mtoken_get(tu), libc::EIO);
    fails!(send(to, b"after"), libc::EIO);
    fails!(get_int(to, ECTP_MEMBERS).map(|_| 0).unwrap_or(-1), libc::EIO);
    // Released all the same, with the error reported.
    let (before_tu, before_to) = (fd_identity(tu), fd_identity(to));
    fails!(mleave(tu, 0), libc::EIO);
    fails!(mterminate(to), libc::EIO);
    assert_released(tu, &before_tu);
    assert_released(to, &before_to);
}

#[test]
fn a_descriptor_closed_behind_the_librarys_back_is_detected_and_a_reused_number_never_closed() {
    let g = group(30);
    let to = owner(local(), g, FAST);
    let tu = joined(g);
    check_flow(to, &[tu], b"before");
    // The program wrongly closes the TU's descriptor; the number is reused by a pipe.
    // SAFETY: closing a descriptor this test owns the number of; pipe2 writes two ints.
    let mut pipe = [0 as c_int; 2];
    unsafe {
        libc::close(tu);
        assert_eq!(libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC), 0);
    }
    let reused = pipe.contains(&tu);
    // The library checks that the number is still its own every 10 ms at most.
    std::thread::sleep(std::time::Duration::from_millis(20));
    // The next call on the number: EBADF, and the endpoint is released.
    fails!(recv(tu, 64, libc::MSG_DONTWAIT).map(|_| 0).unwrap_or(-1), libc::EBADF);
    fails!(mleave(tu, 0), libc::EBADF);
    if reused {
        // The pipe behind that number still works: the library did not close it.
        // SAFETY: plain writes and reads on the test's own pipe.
        unsafe {
            assert_eq!(libc::write(pipe[1], b"x".as_ptr().cast(), 1), 1);
            let mut c = 0u8;
            assert_eq!(libc::read(pipe[0], (&mut c as *mut u8).cast(), 1), 1);
        }
    }
    // The TO takes the abandoned TU for dead after FDN x HGT (500 ms here), as if it had crashed.
    assert!(wait_for(10, || get_int(to, ECTP_MEMBERS) == Ok(0)), "the abandoned TU is dropped");
    // SAFETY: the test's own pipe.
    unsafe {
        libc::close(pipe[0]);
        libc::close(pipe[1]);
    }
    ok!(mterminate(to));
}
