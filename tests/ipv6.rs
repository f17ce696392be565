//! IPv6: the core scenario (a TO and two TUs, data both ways, tokens,
//! termination) inside a private network namespace, where fd00::1 sits on a
//! veth interface that carries multicast; and the IPv6 errnos, which need no
//! network and run anywhere.
//!
//! A namespace test re-runs its own test binary under `unshare -n` with
//! ECTP_IN_NETNS=1. Without root or `unshare`, it prints
//! "skipped: needs root and unshare -n" and passes.
#![allow(unsafe_code)]

mod common;

use std::mem::size_of;
use std::net::{Ipv6Addr, SocketAddr};

use common::*;
use ectp::ffi::*;
use libc::{c_int, socklen_t};

fn to_addr() -> SocketAddr {
    "[fd00::1]:0".parse().unwrap()
}

fn group(n: u16) -> SocketAddr {
    SocketAddr::new(format!("ff15::ec7b:{n:x}").parse::<Ipv6Addr>().unwrap().into(), unique_port())
}

fn joined(g: SocketAddr) -> c_int {
    user(to_addr(), g, &[]).unwrap_or_else(|(_, e)| panic!("mjoin over IPv6: errno {e}"))
}

fn message(i: usize, mss: usize) -> Vec<u8> {
    let len = match i % 6 {
        0 => 1,
        1 => mss,
        2 => mss + 1,
        3 if i % 18 == 3 => 64 * 1024,
        _ => 2 + (i * 4099) % 9000,
    };
    pattern(len, 7000 + i as u32)
}

#[test]
fn ipv6_core_scenario_in_a_network_namespace() {
    if !in_ipv6_netns("ipv6_core_scenario_in_a_network_namespace") {
        return;
    }
    let g = group(1);
    let to = owner(to_addr(), g, &[(ECTP_HGT, 500)]);
    let tus = [joined(g), joined(g)];
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(2));
    let ids: Vec<u32> = tus.iter().map(|&tu| get_int(tu, ECTP_USER_ID).unwrap() as u32).collect();
    assert!(ids[0] >= 1 && ids[1] >= 1 && ids[0] != ids[1], "user ids {ids:?}");
    let mss = get_int(tus[0], ECTP_MSS).unwrap() as usize;
    assert_eq!(mss, 1400);

    // Forward data: every TU gets every message, in order, from fd00::1.
    let msgs: Vec<Vec<u8>> = (0..60).map(|i| message(i, mss)).collect();
    let receivers: Vec<_> = tus
        .iter()
        .map(|&tu| {
            let n = msgs.len();
            std::thread::spawn(move || {
                (0..n)
                    .map(|_| {
                        let (m, info) = recv(tu, 128 * 1024, 0).expect("TU mrecvmsg");
                        (m, info.flags, info_from(&info))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for m in &msgs {
        assert_eq!(send(to, m), m.len() as isize, "msendm: errno {}", errno());
    }
    for (k, r) in receivers.into_iter().enumerate() {
        let got = r.join().expect("receiver");
        for (i, ((m, flags, from), want)) in got.iter().zip(&msgs).enumerate() {
            assert!(m == want, "TU {k}: message {i} differs ({} bytes, want {})", m.len(), want.len());
            assert_eq!(*flags, 0);
            assert_eq!(from.map(|a| a.ip()), Some(to_addr().ip()));
        }
    }

    // Backward data: each TU in turn, then both at once.
    for (k, &tu) in tus.iter().enumerate() {
        let id = mtoken_get(tu);
        assert!((1..=255).contains(&id), "mtoken_get over IPv6: {id}, errno {}", errno());
        assert_eq!(send_su(tu, b"token data"), 10);
        let big = pattern(100 * 1024, 80 + k as u32);
        assert_eq!(send_su(tu, &big), big.len() as isize);
        assert_eq!(mtoken_return(tu), 0);
        let (got, info) = recv(to, 200 * 1024, 0).unwrap();
        assert_eq!(got, b"token data");
        assert_eq!(info.user_id, ids[k]);
        assert_eq!(i32::from(info.token_id), id);
        let from = info_from(&info).expect("an IPv6 from address");
        assert_eq!(from.ip(), to_addr().ip(), "the TU sends from fd00::1");
        assert_ne!(from.port(), 0);
        assert_eq!(info.fromlen as usize, size_of::<libc::sockaddr_in6>());
        let (got, _) = recv(to, 200 * 1024, 0).unwrap();
        assert!(got == big, "100 KiB backward message over IPv6");
    }
    let a = mtoken_get(tus[0]);
    let b = mtoken_get(tus[1]);
    assert!(a >= 1 && b >= 1 && a != b, "tokens {a} and {b}");
    assert_eq!(send_su(tus[1], b"from b"), 6);
    assert_eq!(send_su(tus[0], b"from a"), 6);
    let mut got: Vec<(Vec<u8>, u8)> = (0..2).map(|_| recv(to, 64, 0).map(|(m, i)| (m, i.token_id)).unwrap()).collect();
    got.sort();
    assert_eq!(got, vec![(b"from a".to_vec(), a as u8), (b"from b".to_vec(), b as u8)]);
    assert_eq!(mtoken_return(tus[0]), 0);
    assert_eq!(mtoken_return(tus[1]), 0);

    // Termination: the last data, then the end, for both.
    assert_eq!(send(to, b"goodbye"), 7);
    assert_eq!(mterminate(to), 0);
    for tu in tus {
        assert_eq!(recv(tu, 64, 0).unwrap().0, b"goodbye");
        assert_eq!(recv(tu, 64, 0).unwrap().0, b"");
        assert_eq!(mleave(tu, 0), 0);
    }
}

#[test]
fn ipv6_late_joiner_and_ejection_in_a_network_namespace() {
    if !in_ipv6_netns("ipv6_late_joiner_and_ejection_in_a_network_namespace") {
        return;
    }
    let g = group(2);
    let to = owner(to_addr(), g, &[(ECTP_HGT, 500), (ECTP_MSS, 1200)]);
    let first = joined(g);
    for i in 0..20 {
        assert_eq!(send(to, &pattern(3000, i)), 3000);
    }
    for i in 0..20 {
        assert_eq!(recv(first, 8192, 0).unwrap().0, pattern(3000, i));
    }
    let late = joined(g);
    assert_eq!(get_int(late, ECTP_MSS), Ok(1200));
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(2));
    assert_eq!(send(to, b"after the late join"), 19);
    assert_eq!(recv(late, 64, 0).unwrap().0, b"after the late join", "the late joiner starts at the next message");
    assert_eq!(recv(first, 64, 0).unwrap().0, b"after the late join");
    // Eject the first TU.
    let id = get_int(first, ECTP_USER_ID).unwrap() as u32;
    assert_eq!(mleave(to, id), 0);
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(1));
    assert_eq!(recv(first, 64, 0).err(), Some(libc::ECONNRESET));
    assert_eq!(mleave(first, 0), 0);
    assert_eq!(send(to, b"only one left"), 13);
    assert_eq!(recv(late, 64, 0).unwrap().0, b"only one left");
    assert_eq!(mterminate(to), 0);
    assert_eq!(recv(late, 64, 0).unwrap().0, b"");
    assert_eq!(mleave(late, 0), 0);
}

// ----- errnos: no network needed -----

#[test]
fn ipv6_family_mismatches_give_einval() {
    let p = unique_port();
    let v4_local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let v4_group: SocketAddr = format!("239.255.103.1:{p}").parse().unwrap();
    let v6_local: SocketAddr = "[fd00::1]:0".parse().unwrap();
    let v6_group: SocketAddr = format!("[ff15::ec7b:99]:{p}").parse().unwrap();

    let sd6 = new_socket(v6_local);
    for (a, b) in [(v4_local, v4_group), (v6_local, v4_group), (v4_local, v6_group)] {
        assert_eq!(create_on(sd6, a, b), Err(libc::EINVAL), "AF_INET6 mcreate({a}, {b})");
        assert_eq!(join_on(sd6, a, b), Err(libc::EINVAL), "AF_INET6 mjoin({a}, {b})");
    }
    let sd4 = new_socket(v4_local);
    for (a, b) in [(v6_local, v6_group), (v4_local, v6_group), (v6_local, v4_group)] {
        assert_eq!(create_on(sd4, a, b), Err(libc::EINVAL), "AF_INET mcreate({a}, {b})");
        assert_eq!(join_on(sd4, a, b), Err(libc::EINVAL), "AF_INET mjoin({a}, {b})");
    }
    // Not a multicast group; an unspecified or multicast TO address.
    let unicast: SocketAddr = format!("[fd00::2]:{p}").parse().unwrap();
    assert_eq!(create_on(sd6, v6_local, unicast), Err(libc::EINVAL));
    assert_eq!(join_on(sd6, v6_local, unicast), Err(libc::EINVAL));
    assert_eq!(create_on(sd6, "[::]:0".parse().unwrap(), v6_group), Err(libc::EINVAL));
    assert_eq!(join_on(sd6, "[ff15::1]:0".parse().unwrap(), v6_group), Err(libc::EINVAL));
    // A sockaddr_in6 cut short, or only as long as a sockaddr_in.
    let (l, _) = c_addr(v6_local);
    let (g, gl) = c_addr(v6_group);
    for bad in [size_of::<libc::sockaddr_in6>() - 1, size_of::<libc::sockaddr_in>(), 2] {
        let bad = bad as socklen_t;
        assert_eq!(mcreate(sd6, ptr(&l), bad, ptr(&g), gl), -1);
        assert_eq!(errno(), libc::EINVAL, "mcreate with locallen {bad}");
        assert_eq!(mjoin(sd6, ptr(&l), gl, ptr(&g), bad), -1);
        assert_eq!(errno(), libc::EINVAL, "mjoin with grouplen {bad}");
    }
    // Still no role: a role call is ENOTCONN.
    assert_eq!(get_int(sd6, ECTP_MEMBERS), Err(libc::ENOTCONN));
    assert_eq!(get_int(sd4, ECTP_MEMBERS), Err(libc::ENOTCONN));
    let _ = mleave(sd6, 0);
    let _ = mleave(sd4, 0);
}

#[test]
fn ipv6_options_of_other_levels_pass_through() {
    let sd = new_socket("[::1]:0".parse().unwrap());
    assert_eq!(set_raw_int(sd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, 7), 0, "errno {}", errno());
    assert_eq!(get_raw_int(sd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS), Ok(7));
    assert_eq!(set_raw_int(sd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, 1), 0);
    assert_eq!(get_raw_int(sd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP), Ok(1));
    // The defaults are those of an IPv4 endpoint.
    assert_eq!(get_int(sd, ECTP_MSS), Ok(1400));
    assert_eq!(get_int(sd, ECTP_RO), Ok(ECTP_RO_RELIABLE));
    let _ = mleave(sd, 0);
}
