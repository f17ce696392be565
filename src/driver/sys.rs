//! The few system calls socket2 and std do not wrap: eventfd, poll,
//! getrandom and the interface lookup for IPv6 multicast. The only module of
//! the driver where `unsafe` is allowed.
#![allow(unsafe_code)]

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A Linux eventfd used as a level-triggered flag: readable while set.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A new, unset, non-blocking eventfd.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; a negative return is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a freshly created descriptor that nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Make it readable (idempotent while set).
    pub fn set(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own descriptor.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Make it unreadable again.
    pub fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; EAGAIN when unset is fine.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    /// The descriptor, for poll.
    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Wait until one of `fds` is readable or `timeout` passes (None: forever).
/// Returns, for each descriptor, whether it is readable.
/// With `write` = Some(i), also until `fds[i]` is writable, which the
/// returned flag tells.
pub fn poll_readable(
    fds: &[RawFd],
    timeout: Option<Duration>,
    ready: &mut [bool],
    write: Option<usize>,
) -> io::Result<bool> {
    let mut pfds: [libc::pollfd; 4] = [libc::pollfd { fd: -1, events: 0, revents: 0 }; 4];
    let n = fds.len().min(pfds.len());
    for (i, (p, &fd)) in pfds.iter_mut().zip(fds).enumerate() {
        p.fd = fd;
        p.events = if write == Some(i) { libc::POLLIN | libc::POLLOUT } else { libc::POLLIN };
    }
    // ppoll, not poll: microsecond deadlines, which the pacer needs (a
    // packet every few microseconds at full rate).
    let ts = timeout.map(|d| {
        let d = d.min(Duration::from_secs(86_400));
        libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: libc::c_long::from(d.subsec_nanos() as i32) }
    });
    let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: pfds is a live array of at least n pollfd structs; tsp is NULL
    // or points at a live timespec; no signal mask is passed.
    let r = unsafe { libc::ppoll(pfds.as_mut_ptr(), n as libc::nfds_t, tsp, std::ptr::null()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    for (r, p) in ready.iter_mut().zip(&pfds[..n]) {
        *r = r_ok(p.revents);
    }
    Ok(write.and_then(|i| pfds.get(i)).is_some_and(|p| p.revents & (libc::POLLOUT | libc::POLLERR) != 0))
}

fn r_ok(revents: libc::c_short) -> bool {
    revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0
}

/// A duplicate of `fd` (close-on-exec), for the application: the library
/// keeps the original, so that the application closing its copy can never
/// make the library write to, or close, a descriptor that is not its own.
pub fn dup_cloexec(fd: RawFd) -> io::Result<RawFd> {
    // SAFETY: fcntl on our own descriptor; a negative return is an error.
    let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if d < 0 { Err(io::Error::last_os_error()) } else { Ok(d) }
}

/// Close `fd` (a descriptor this library created and still owns).
pub fn close(fd: RawFd) {
    // SAFETY: the caller checked that fd is still the library's.
    let _ = unsafe { libc::close(fd) };
}

/// Whether descriptors `a` and `b` of this process refer to the same open
/// file: kcmp(KCMP_FILE) where the kernel allows it, else the eventfd id of
/// /proc/self/fdinfo. None when neither can tell.
pub fn same_file(a: RawFd, b: RawFd) -> Option<bool> {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp reads nothing from our memory; getpid has no preconditions.
    let r = unsafe {
        let pid = libc::getpid();
        libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, a as libc::c_long, b as libc::c_long)
    };
    match r {
        0 => Some(true),
        1..=3 => Some(false),
        _ if io::Error::last_os_error().raw_os_error() == Some(libc::EBADF) => Some(false),
        _ => {
            let id = |fd: RawFd| {
                let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
                info.lines().find(|l| l.starts_with("eventfd-id")).map(str::to_string)
            };
            match (id(a), id(b)) {
                (Some(x), Some(y)) => Some(x == y),
                (Some(_), None) => Some(false),
                _ => None,
            }
        }
    }
}

/// 64 random bits from the kernel, to seed the protocol's generator.
pub fn random_seed() -> u64 {
    let mut v: u64 = 0;
    // SAFETY: writes at most 8 bytes into a live u64.
    let n = unsafe { libc::getrandom((&mut v as *mut u64).cast(), 8, 0) };
    if n != 8 {
        // No entropy source: fall back to the clock, still unique enough for IDs.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        v = t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32;
    }
    v
}

/// 256 random bits from the kernel, for the keys of a keyed connection.
/// Errors (no entropy source) rather than fall back to anything weaker.
pub fn random_key_seed() -> std::io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    let mut got = 0;
    while got < seed.len() {
        let rest = &mut seed[got..];
        // SAFETY: writes at most rest.len() bytes into a live buffer.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match n {
            n if n > 0 => got += n as usize,
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(seed)
}

/// Index of the interface that holds address `ip`, if any.
pub fn interface_index_of(ip: IpAddr) -> Option<u32> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills head with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr of its family.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let addr = match family {
            libc::AF_INET => {
                // SAFETY: the family says this is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
            }
            libc::AF_INET6 => {
                // SAFETY: the family says this is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                IpAddr::from(sin6.sin6_addr.s6_addr)
            }
            _ => continue,
        };
        if addr == ip {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let idx = unsafe { libc::if_nametoindex(ifa.ifa_name) };
            if idx != 0 {
                found = Some(idx);
                break;
            }
        }
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found
}

/// setsockopt with the caller's bytes.
pub fn setsockopt(s: &impl AsRawFd, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    let len = libc::socklen_t::try_from(value.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: value is a live slice of len bytes; the kernel only reads it.
    let r = unsafe { libc::setsockopt(s.as_raw_fd(), level, name, value.as_ptr().cast(), len) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// getsockopt into the caller's bytes; returns the length written.
pub fn getsockopt(s: &impl AsRawFd, level: i32, name: i32, out: &mut [u8]) -> io::Result<usize> {
    let mut len = libc::socklen_t::try_from(out.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: out is a live, writable slice of len bytes; len is updated by the kernel.
    let r = unsafe { libc::getsockopt(s.as_raw_fd(), level, name, out.as_mut_ptr().cast(), &mut len) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(len as usize) }
}

/// UDP generic segmentation offload (Linux 4.18+): one message carries
/// several datagrams of one size to one destination, which the kernel cuts
/// (`UDP_SEGMENT`, level `SOL_UDP`; the `libc` crate lacks them for glibc).
const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
/// Most datagrams and bytes in one segmented message (the kernel's limits
/// are 64 segments and 64 KiB).
const GSO_SEGMENTS: usize = 64;
const GSO_BYTES: usize = 65_000;
/// Cleared for good the first time the kernel refuses a segmented message.
static GSO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Runs of `batch` that one message can carry: (first, count). With GSO, a
/// run is consecutive datagrams to one destination of one size, the last
/// of them possibly shorter; without, every datagram is its own run.
fn runs(batch: &[(std::net::SocketAddr, &[u8])], gso: bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < batch.len() {
        let (to, first) = batch[i];
        let (mut j, mut bytes) = (i + 1, first.len());
        while gso && j < batch.len() && j - i < GSO_SEGMENTS {
            let (next_to, next) = batch[j];
            if next_to != to || next.len() > first.len() || bytes + next.len() > GSO_BYTES {
                break;
            }
            bytes += next.len();
            j += 1;
            if next.len() < first.len() {
                break; // only the last segment may be shorter
            }
        }
        out.push((i, j - i));
        i = j;
    }
    out
}

/// Send the datagrams of `batch` (destination, bytes) on `fd` in order, with
/// as few `sendmmsg` calls as the kernel allows and, where it can, several
/// datagrams per message (UDP GSO); returns how many left. It stops at the
/// first the kernel cannot take now (EAGAIN: the socket's queue is full,
/// e.g. behind a slow qdisc): the caller keeps the rest and waits for
/// POLLOUT. A datagram refused for another reason is skipped (logged), as a
/// single `send_to` would have failed it.
pub fn send_batch(fd: RawFd, batch: &[(std::net::SocketAddr, &[u8])]) -> usize {
    use std::sync::atomic::Ordering::Relaxed;
    let gso = GSO.load(Relaxed);
    let runs = runs(batch, gso);
    let addrs: Vec<socket2::SockAddr> = runs.iter().map(|&(i, _)| socket2::SockAddr::from(batch[i].0)).collect();
    let mut iov: Vec<libc::iovec> = batch
        .iter()
        .map(|(_, b)| libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() })
        .collect();
    // One control buffer per run (8-byte aligned), holding the segment size.
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    let mut control: Vec<[u64; 4]> = vec![[0; 4]; runs.len()];
    // SAFETY: all-zero is a valid mmsghdr; the pointers are filled in below.
    let mut msgs: Vec<libc::mmsghdr> = (0..runs.len()).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (k, (m, &(i, n))) in msgs.iter_mut().zip(&runs).enumerate() {
        m.msg_hdr.msg_name = addrs[k].as_ptr() as *mut libc::c_void;
        m.msg_hdr.msg_namelen = addrs[k].len();
        m.msg_hdr.msg_iov = &mut iov[i];
        m.msg_hdr.msg_iovlen = n;
        if n > 1 {
            let buf = &mut control[k];
            m.msg_hdr.msg_control = buf.as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = space;
            // SAFETY: the control buffer has `space` bytes (32 >= CMSG_SPACE(2)),
            // so CMSG_FIRSTHDR is non-null and its data holds a u16.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&m.msg_hdr);
                (*c).cmsg_level = SOL_UDP;
                (*c).cmsg_type = UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
                let size = u16::try_from(batch[i].1.len()).unwrap_or(u16::MAX);
                libc::CMSG_DATA(c).cast::<u16>().write_unaligned(size);
            }
        }
    }
    let (mut done, mut sent) = (0, 0);
    while done < msgs.len() {
        let rest = &mut msgs[done..];
        let chunk = rest.len().min(GSO_SEGMENTS);
        // SAFETY: `rest` points at live mmsghdrs whose names, iovecs and
        // control buffers outlive the call; the kernel writes only msg_len.
        let r = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), chunk as libc::c_uint, 0) };
        if r > 0 {
            sent += runs[done..done + r as usize].iter().map(|&(_, n)| n).sum::<usize>();
            done += r as usize;
            continue;
        }
        let e = io::Error::last_os_error();
        let (first, n) = runs[done];
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => return sent,
            _ if n > 1 => {
                // The kernel (or the device) does not take segmented
                // messages: never again; the rest goes one datagram each.
                log::info!("UDP GSO refused ({e}): sending datagram by datagram");
                GSO.store(false, Relaxed);
                return sent + send_batch(fd, &batch[first..]);
            }
            _ => {
                log::debug!("send to {}: {e}", batch[first].0);
                sent += 1;
                done += 1;
            }
        }
    }
    sent
}

/// One datagram [`recv_batch`] read: its length, its source, and when the
/// kernel received it (CLOCK_REALTIME, see [`enable_rx_timestamps`]).
#[derive(Clone, Copy, Debug)]
pub struct Got {
    pub len: usize,
    pub from: std::net::SocketAddr,
    pub kernel_rx: Option<Duration>,
}

/// Ask the kernel to stamp each datagram `s` receives with the time it came
/// in (SO_TIMESTAMPNS): the round trips TFMCC measures then leave out the
/// time a datagram waited in the socket for a busy driver thread, as TCP's,
/// measured in the kernel, do. Best effort: without it, the time the driver
/// read the datagram stands in.
pub fn enable_rx_timestamps(s: &impl AsRawFd) {
    let on: libc::c_int = 1;
    if let Err(e) = setsockopt(s, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &on.to_ne_bytes()) {
        log::debug!("SO_TIMESTAMPNS: {e}");
    }
}

/// CLOCK_REALTIME now, the clock of the kernel's receive timestamps.
pub fn realtime() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a live timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// Room for one SCM_TIMESTAMPNS control message (a 16-byte timespec).
const CMSG_ROOM: usize = 64;

/// The SCM_TIMESTAMPNS time in a received message's control data, if any
/// (none if the control data was cut short).
fn kernel_rx_time(h: &libc::msghdr) -> Option<Duration> {
    if h.msg_flags & libc::MSG_CTRUNC != 0 {
        return None;
    }
    // SAFETY: `h` is a msghdr recvmmsg filled in, its control buffer live and
    // `msg_controllen` long; the CMSG_* macros stay within it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let data = libc::CMSG_DATA(c);
                let len = (*c).cmsg_len as usize - (data as usize - c as usize);
                // Two 64-bit fields (a timespec on 64-bit hosts, and what
                // SO_TIMESTAMPNS_NEW, libc's choice on 32-bit ones with a
                // 64-bit time_t, gives), or two 32-bit ones (SO_TIMESTAMPNS_OLD there).
                let (sec, nsec) = if len == 16 {
                    (data.cast::<i64>().read_unaligned(), data.add(8).cast::<i64>().read_unaligned())
                } else if len == 8 && std::mem::size_of::<libc::timespec>() == 8 {
                    let sec = data.cast::<i32>().read_unaligned();
                    (i64::from(sec), i64::from(data.add(4).cast::<i32>().read_unaligned()))
                } else {
                    return None;
                };
                return (sec > 0 && (0..1_000_000_000).contains(&nsec)).then(|| Duration::new(sec as u64, nsec as u32));
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// Up to `bufs.len()` datagrams at once from `fd` (non-blocking), with
/// `recvmmsg`: their lengths, sources and kernel receive times in `got`.
/// Ok(0) when none waits.
pub fn recv_batch(fd: RawFd, bufs: &mut [Vec<u8>], got: &mut Vec<Got>) -> io::Result<usize> {
    got.clear();
    let n = bufs.len();
    // SAFETY: all-zero sockaddr_storage values are valid.
    let mut names: Vec<libc::sockaddr_storage> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
    let mut iov: Vec<libc::iovec> =
        bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() }).collect();
    // u64s: the control buffers must be aligned for cmsghdr.
    let mut control = vec![0u64; n * CMSG_ROOM / 8];
    // SAFETY: all-zero is a valid mmsghdr; the pointers are filled in below.
    let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (i, m) in msgs.iter_mut().enumerate() {
        m.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
        m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        m.msg_hdr.msg_iov = &mut iov[i];
        m.msg_hdr.msg_iovlen = 1;
        m.msg_hdr.msg_control = control[i * CMSG_ROOM / 8..].as_mut_ptr().cast();
        m.msg_hdr.msg_controllen = CMSG_ROOM as _;
    }
    // SAFETY: `msgs` points at live mmsghdrs whose names, buffers and control
    // buffers outlive the call; MSG_DONTWAIT makes it return at once when
    // nothing waits.
    let r =
        unsafe { libc::recvmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
            _ => Err(e),
        };
    }
    for (i, m) in msgs.iter().take(r as usize).enumerate() {
        if let Some(from) = socket_addr(&names[i]) {
            let len = (m.msg_len as usize).min(bufs[i].len());
            got.push(Got { len, from, kernel_rx: kernel_rx_time(&m.msg_hdr) });
        }
    }
    Ok(got.len())
}

/// The IPv4 or IPv6 address in `s`, as recvmmsg wrote it.
fn socket_addr(s: &libc::sockaddr_storage) -> Option<std::net::SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(std::net::SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let a =
                std::net::SocketAddrV6::new(ip, u16::from_be(sin6.sin6_port), sin6.sin6_flowinfo, sin6.sin6_scope_id);
            Some(std::net::SocketAddr::V6(a))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_is_a_level_flag() {
        let e = EventFd::new().unwrap();
        let mut r = [false];
        poll_readable(&[e.raw()], Some(Duration::ZERO), &mut r, None).unwrap();
        assert!(!r[0]);
        e.set();
        e.set();
        poll_readable(&[e.raw()], Some(Duration::ZERO), &mut r, None).unwrap();
        assert!(r[0]);
        e.clear();
        poll_readable(&[e.raw()], Some(Duration::ZERO), &mut r, None).unwrap();
        assert!(!r[0]);
    }

    #[test]
    fn a_duplicate_is_the_same_file_until_closed_and_reused() {
        let e = EventFd::new().unwrap();
        let d = dup_cloexec(e.raw()).unwrap();
        assert_eq!(same_file(e.raw(), d), Some(true));
        close(d);
        assert_eq!(same_file(e.raw(), d), Some(false), "closed");
        let other = EventFd::new().unwrap();
        let reused = dup_cloexec(other.raw()).unwrap();
        assert_eq!(same_file(e.raw(), reused), Some(false), "another file");
        close(reused);
    }

    #[test]
    fn loopback_has_an_interface_index() {
        assert!(interface_index_of("127.0.0.1".parse().unwrap()).is_some());
        assert!(interface_index_of("192.0.2.77".parse().unwrap()).is_none());
        assert_ne!(random_seed(), random_seed());
    }

    #[test]
    fn a_datagram_read_carries_the_time_the_kernel_took_it_in() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut bufs = vec![vec![0u8; 64]; 4];
        let mut got = Vec::new();
        // Without SO_TIMESTAMPNS: the bytes and the source, no time.
        tx.send_to(b"plain", rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(recv_batch(rx.as_raw_fd(), &mut bufs, &mut got).unwrap(), 1);
        assert_eq!((&bufs[0][..got[0].len], got[0].from), (&b"plain"[..], tx.local_addr().unwrap()));
        assert_eq!(got[0].kernel_rx, None);

        enable_rx_timestamps(&rx);
        // The kernel turns receive stamping on in a work item of its own the
        // first time a socket asks; until then a datagram is stamped when
        // read. So: up to 20 tries, on a busy machine.
        let mut waited = Vec::new();
        for _ in 0..20 {
            let before = realtime();
            tx.send_to(b"stamped", rx.local_addr().unwrap()).unwrap();
            tx.send_to(b"second", rx.local_addr().unwrap()).unwrap();
            // Read 50 ms later: the stamps say when they came in, not when read.
            std::thread::sleep(Duration::from_millis(50));
            let read_at = realtime();
            assert_eq!(recv_batch(rx.as_raw_fd(), &mut bufs, &mut got).unwrap(), 2);
            assert_eq!(&bufs[0][..got[0].len], b"stamped");
            assert_eq!(&bufs[1][..got[1].len], b"second");
            let (a, b) = (got[0].kernel_rx.unwrap(), got[1].kernel_rx.unwrap());
            assert!(before <= a && a <= b, "{before:?} {a:?} {b:?}");
            // (Stamped when read, a stamp comes after `read_at`.)
            waited.push(read_at.saturating_sub(a));
            if read_at.saturating_sub(a) >= Duration::from_millis(40) {
                break;
            }
        }
        assert!(waited.iter().any(|w| *w >= Duration::from_millis(40)), "waited {waited:?}");
        assert_eq!(recv_batch(rx.as_raw_fd(), &mut bufs, &mut got).unwrap(), 0);
    }
}
