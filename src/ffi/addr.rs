//! `struct sockaddr` <-> `SocketAddr`, checked.
#![allow(unsafe_code)]

use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use libc::{sockaddr, sockaddr_storage, socklen_t};
use socket2::SockAddr;

use super::error::{EFAULT, EINVAL, Errno};

/// Read a caller's IPv4 or IPv6 address of `len` bytes.
pub fn from_c(addr: *const sockaddr, len: socklen_t) -> Result<SocketAddr, Errno> {
    if addr.is_null() {
        return Err(EFAULT);
    }
    let len = len as usize;
    if len < size_of::<libc::sa_family_t>() || len > size_of::<sockaddr_storage>() {
        return Err(EINVAL);
    }
    // SAFETY: the caller promises `len` readable bytes at `addr`; we checked
    // it is not NULL and that `len` fits a sockaddr_storage.
    let storage = unsafe {
        let mut s: sockaddr_storage = std::mem::zeroed();
        std::ptr::copy_nonoverlapping(addr.cast::<u8>(), (&mut s as *mut sockaddr_storage).cast::<u8>(), len);
        s
    };
    match i32::from(storage.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family and length say storage holds a sockaddr_in.
            let sin = unsafe { &*(&storage as *const sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family and length say storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(&storage as *const sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, u32::from_be(sin6.sin6_flowinfo), sin6.sin6_scope_id)))
        }
        _ => Err(EINVAL),
    }
}

/// Write `addr` into a sockaddr_storage; returns its length.
pub fn to_c(addr: SocketAddr, out: &mut sockaddr_storage) -> socklen_t {
    let sa = SockAddr::from(addr);
    let len = (sa.len() as usize).min(size_of::<sockaddr_storage>());
    // SAFETY: both are sockaddr_storage-sized, and len is at most that.
    unsafe {
        std::ptr::copy_nonoverlapping(sa.as_ptr().cast::<u8>(), (out as *mut sockaddr_storage).cast::<u8>(), len);
    }
    len as socklen_t
}
