//! Helpers for the integration tests: C-API calls with Rust types.
#![allow(dead_code, unsafe_code)]

use std::mem::size_of;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};

use ectp::ffi::*;
use libc::{c_int, sockaddr, sockaddr_storage, socklen_t};

/// A port for this test, distinct per call and per process.
pub fn port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20000 + (std::process::id() % 2000) as u16 * 10;
    base + NEXT.fetch_add(1, Ordering::Relaxed) % 10 + 1
}

pub fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub fn c_addr(a: SocketAddr) -> (sockaddr_storage, socklen_t) {
    // SAFETY: zeroed sockaddr_storage is valid.
    let mut s: sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut s as *mut sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut s as *mut sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (s, len as socklen_t)
}

pub fn ptr(s: &sockaddr_storage) -> *const sockaddr {
    (s as *const sockaddr_storage).cast()
}

pub fn family(a: SocketAddr) -> c_int {
    if a.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 }
}

pub fn set_int(sd: c_int, opt: c_int, v: c_int) -> c_int {
    msetsockopt(sd, SOL_ECTP, opt, (&v as *const c_int).cast(), size_of::<c_int>() as socklen_t)
}

pub fn get_int(sd: c_int, opt: c_int) -> Result<c_int, c_int> {
    let mut v: c_int = -7;
    let mut len = size_of::<c_int>() as socklen_t;
    if mgetsockopt(sd, SOL_ECTP, opt, (&mut v as *mut c_int).cast(), &mut len) == 0 { Ok(v) } else { Err(errno()) }
}

/// A TO endpoint, created (mcreate done) on `local` for `group`.
pub fn owner(local: SocketAddr, group: SocketAddr, opts: &[(c_int, c_int)]) -> c_int {
    let sd = msocket(family(local), libc::SOCK_DGRAM, 0);
    assert!(sd >= 0, "msocket: errno {}", errno());
    for &(o, v) in opts {
        assert_eq!(set_int(sd, o, v), 0, "option {o}={v}: errno {}", errno());
    }
    let (l, ll) = c_addr(local);
    let (g, gl) = c_addr(group);
    assert_eq!(mcreate(sd, ptr(&l), ll, ptr(&g), gl), 0, "mcreate: errno {}", errno());
    sd
}

/// A TU endpoint and the result of mjoin (Ok(sd) or Err((sd, errno))).
pub fn user(owner: SocketAddr, group: SocketAddr, opts: &[(c_int, c_int)]) -> Result<c_int, (c_int, c_int)> {
    let sd = msocket(family(owner), libc::SOCK_DGRAM, 0);
    assert!(sd >= 0, "msocket: errno {}", errno());
    for &(o, v) in opts {
        assert_eq!(set_int(sd, o, v), 0, "option {o}={v}: errno {}", errno());
    }
    let (a, al) = c_addr(owner);
    let (g, gl) = c_addr(group);
    if mjoin(sd, ptr(&a), al, ptr(&g), gl) == 0 { Ok(sd) } else { Err((sd, errno())) }
}

pub fn send(sd: c_int, data: &[u8]) -> isize {
    msendm(sd, data.as_ptr().cast(), data.len(), 0)
}

pub fn send_su(sd: c_int, data: &[u8]) -> isize {
    msendmsg(sd, data.as_ptr().cast(), data.len(), 0)
}

pub fn empty_info() -> ectp_rcvinfo {
    // SAFETY: all-zero is a valid ectp_rcvinfo.
    unsafe { std::mem::zeroed() }
}

/// Receive one message: Ok((bytes, info)) or Err(errno); Ok with empty bytes at the end.
pub fn recv(sd: c_int, cap: usize, flags: c_int) -> Result<(Vec<u8>, ectp_rcvinfo), c_int> {
    let mut buf = vec![0u8; cap];
    let mut info = empty_info();
    let n = mrecvmsg(sd, buf.as_mut_ptr().cast(), cap, flags, &mut info);
    if n < 0 {
        return Err(errno());
    }
    buf.truncate(n as usize);
    Ok((buf, info))
}

pub fn info_from(info: &ectp_rcvinfo) -> Option<SocketAddr> {
    let s = &info.from;
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let sin = unsafe { &*(s as *const sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((u32::from_be(sin.sin_addr.s_addr).to_be_bytes(), u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let sin6 = unsafe { &*(s as *const sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::from((sin6.sin6_addr.s6_addr, u16::from_be(sin6.sin6_port))))
        }
        _ => None,
    }
}

pub fn stats(sd: c_int) -> ectp_stats {
    let mut s = ectp_stats::default();
    assert_eq!(ectp_get_stats(sd, &mut s), 0);
    s
}

/// Deterministic test data.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
