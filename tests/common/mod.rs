//! Helpers for the integration tests: C-API calls with Rust types.
#![allow(dead_code, unsafe_code)]

use std::mem::size_of;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};

use ectp::ffi::*;
use libc::{c_int, sockaddr, sockaddr_storage, socklen_t};

pub mod netns;
pub mod spoof;

/// The library's log on stderr when ECTP_TEST_LOG is set (e.g. `info`,
/// `debug`), to see why a test failed.
pub fn log_to_stderr() {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, r: &log::Record<'_>) {
            eprintln!("{:?} {} {}: {}", std::time::SystemTime::now(), r.level(), r.target(), r.args());
        }
        fn flush(&self) {}
    }
    static LOGGER: Stderr = Stderr;
    let Some(level) = std::env::var("ECTP_TEST_LOG").ok().and_then(|l| l.parse().ok()) else { return };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

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

// ----- helpers added for api_errors.rs, data.rs and ipv6.rs -----

/// A port below the kernel's ephemeral range (32768..), distinct for each call
/// of this process (up to 60 calls) and, through the process id, from other
/// test processes running at the same time.
pub fn unique_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 10000 + (std::process::id() % 370) as u16 * 60;
    base + NEXT.fetch_add(1, Ordering::Relaxed) % 60
}

/// Read an int option with `mgetesockopt` (the legacy alias).
pub fn get_int_e(sd: c_int, opt: c_int) -> Result<c_int, c_int> {
    let mut v: c_int = -7;
    let mut len = size_of::<c_int>() as socklen_t;
    if mgetesockopt(sd, SOL_ECTP, opt, (&mut v as *mut c_int).cast(), &mut len) == 0 { Ok(v) } else { Err(errno()) }
}

/// Set an int option at another level (IPPROTO_IP, SOL_SOCKET...).
pub fn set_raw_int(sd: c_int, level: c_int, opt: c_int, v: c_int) -> c_int {
    msetsockopt(sd, level, opt, (&v as *const c_int).cast(), size_of::<c_int>() as socklen_t)
}

/// Read an int option at another level.
pub fn get_raw_int(sd: c_int, level: c_int, opt: c_int) -> Result<c_int, c_int> {
    let mut v: c_int = -7;
    let mut len = size_of::<c_int>() as socklen_t;
    if mgetsockopt(sd, level, opt, (&mut v as *mut c_int).cast(), &mut len) == 0 { Ok(v) } else { Err(errno()) }
}

/// poll(2) the descriptor for POLLIN, waiting at most `timeout_ms` (0: now).
pub fn poll_readable(sd: c_int, timeout_ms: c_int) -> bool {
    let mut p = libc::pollfd { fd: sd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one live pollfd.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    assert!(r >= 0, "poll: errno {}", errno());
    r == 1 && p.revents & libc::POLLIN != 0
}

/// Wait (sleeping a little between tries) until `cond` holds, for at most
/// `secs` seconds. Returns whether it held. Not a timing assertion: the
/// limit only keeps a broken library from hanging the test.
pub fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// What identifies the open file behind `fd` (its eventfd id for an
/// eventfd), from /proc/self/fdinfo; None when it is not open.
pub fn fd_identity(fd: c_int) -> Option<String> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    let id: Vec<&str> = info.lines().filter(|l| l.starts_with("eventfd-id") || l.starts_with("ino")).collect();
    Some(id.join(";"))
}

/// Assert that a released endpoint's descriptor gives EBADF. `before` is
/// `fd_identity(sd)` taken before the release. The number may already have
/// been reused by another test thread (the kernel hands out the lowest free
/// one); then the call may succeed on that other endpoint, and nothing can be
/// checked.
pub fn assert_released(sd: c_int, before: &Option<String>) {
    let mut s = ectp_stats::default();
    let r = ectp_get_stats(sd, &mut s);
    let e = errno();
    if r == 0 {
        let now = fd_identity(sd);
        assert!(
            now.is_some() && now != *before,
            "descriptor {sd} still works after it was released (same open file: {now:?})"
        );
        eprintln!("descriptor {sd} was reused by another endpoint; release not checked");
        return;
    }
    assert_eq!(e, libc::EBADF, "descriptor {sd} after release");
}

/// An unbound endpoint of the family of `a`.
pub fn new_socket(a: SocketAddr) -> c_int {
    let sd = msocket(family(a), libc::SOCK_DGRAM, 0);
    assert!(sd >= 0, "msocket: errno {}", errno());
    sd
}

/// mcreate with Rust addresses: 0 or the errno.
pub fn create_on(sd: c_int, local: SocketAddr, group: SocketAddr) -> Result<(), c_int> {
    let (l, ll) = c_addr(local);
    let (g, gl) = c_addr(group);
    if mcreate(sd, ptr(&l), ll, ptr(&g), gl) == 0 { Ok(()) } else { Err(errno()) }
}

/// mjoin with Rust addresses: 0 or the errno.
pub fn join_on(sd: c_int, owner: SocketAddr, group: SocketAddr) -> Result<(), c_int> {
    let (o, ol) = c_addr(owner);
    let (g, gl) = c_addr(group);
    if mjoin(sd, ptr(&o), ol, ptr(&g), gl) == 0 { Ok(()) } else { Err(errno()) }
}

/// The address a callback was given.
pub fn sockaddr_to_rust(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    if addr.is_null() || (len as usize) < size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: the library passes a valid sockaddr of `len` bytes.
    let family = i32::from(unsafe { (*addr).sa_family });
    match family {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: family and length say it is a sockaddr_in.
            let sin = unsafe { &*addr.cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((u32::from_be(sin.sin_addr.s_addr).to_be_bytes(), u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: family and length say it is a sockaddr_in6.
            let sin6 = unsafe { &*addr.cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::from((sin6.sin6_addr.s6_addr, u16::from_be(sin6.sin6_port))))
        }
        _ => None,
    }
}

// ----- helpers added for failures.rs and netns_loss.rs: child processes -----
//
// A test re-executes its own binary to run one `#[ignore]`d helper test
// `role_<name>` in a child process (optionally inside a network namespace);
// the helper returns at once unless ECTP_ROLE=<name>.

#[allow(unused_imports)]
pub use child_role::*;

mod child_role {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::mpsc;
    use std::thread;
    use std::time::{Duration, Instant};

    /// A child process running one role; killed (SIGKILL) and reaped when dropped.
    /// Its stdout lines starting with "ECTP " arrive on `lines` (without the prefix).
    pub struct ChildRole {
        pub child: Child,
        pub lines: mpsc::Receiver<String>,
    }

    impl ChildRole {
        pub fn spawn(netns: Option<&str>, role: &str, env: &[(&str, String)]) -> ChildRole {
            let exe = std::env::current_exe().expect("current_exe");
            let mut cmd = match netns {
                Some(ns) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", ns]).arg(exe);
                    c
                }
                None => Command::new(exe),
            };
            cmd.args(["--exact", &format!("role_{role}"), "--nocapture", "--test-threads=1", "--include-ignored"])
                .env("ECTP_ROLE", role)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("spawn role");
            let out = child.stdout.take().unwrap();
            let (tx, rx) = mpsc::channel();
            let name = role.to_string();
            thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[{name}] {line}");
                    // The harness may print "test role_x ... " before the first line.
                    if let Some(at) = line.find("ECTP ")
                        && tx.send(line[at + 5..].to_string()).is_err()
                    {
                        break;
                    }
                }
            });
            ChildRole { child, lines: rx }
        }

        /// Write one line to the child's stdin (see `hear`).
        pub fn say(&mut self, line: &str) {
            use std::io::Write as _;
            let stdin = self.child.stdin.as_mut().expect("stdin");
            writeln!(stdin, "{line}").and_then(|_| stdin.flush()).expect("write to the child");
        }

        /// The next line starting with `prefix` (others are skipped), within `secs`.
        pub fn expect_line(&self, prefix: &str, secs: u64) -> String {
            let until = Instant::now() + Duration::from_secs(secs);
            loop {
                let left = until.saturating_duration_since(Instant::now());
                match self.lines.recv_timeout(left) {
                    Ok(l) if l.starts_with(prefix) => return l,
                    Ok(_) => continue,
                    Err(e) => panic!("no line {prefix:?} from the child within {secs} s ({e:?})"),
                }
            }
        }

        pub fn kill(&mut self) {
            // SAFETY: a plain kill(2) of our own child, which has not been reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = self.child.wait();
        }

        /// Its exit status, waiting at most `secs` (then it is killed: None).
        pub fn wait(&mut self, secs: u64) -> Option<ExitStatus> {
            let until = Instant::now() + Duration::from_secs(secs);
            loop {
                if let Some(s) = self.child.try_wait().expect("try_wait") {
                    return Some(s);
                }
                if Instant::now() >= until {
                    self.kill();
                    return None;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    impl Drop for ChildRole {
        fn drop(&mut self) {
            if let Ok(None) = self.child.try_wait() {
                self.kill();
            }
        }
    }

    /// Is this process the child meant to run `role`?
    pub fn is_role(role: &str) -> bool {
        std::env::var("ECTP_ROLE").as_deref() == Ok(role)
    }

    pub fn env_str(k: &str) -> String {
        std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"))
    }

    pub fn env_num<T: std::str::FromStr>(k: &str) -> T {
        env_str(k).parse().ok().unwrap_or_else(|| panic!("{k} is not a number"))
    }

    /// Say something to the parent (one line on stdout).
    pub fn tell(s: &str) {
        println!("ECTP {s}");
    }

    /// In a child: the next line the parent says (`ChildRole::say`); panics at end of input.
    pub fn hear() -> String {
        let mut l = String::new();
        let n = std::io::stdin().read_line(&mut l).expect("read stdin");
        assert!(n > 0, "the parent closed stdin");
        l.trim_end().to_string()
    }
}

pub const SKIP: &str = "skipped: needs root and unshare -n";
/// Exit code of the namespace setup script when it cannot build the network.
pub const SETUP_FAILED: i32 = 77;

/// IPv6 multicast needs a real interface: the test runs in a private
/// network namespace with fd00::1 on a veth pair (needs root and unshare).
/// Inside the namespace already? Otherwise run `test` there, in a child
/// process, and report its outcome. Returns true when the caller must run
/// the scenario itself (it is the child).
pub fn in_ipv6_netns(test: &str) -> bool {
    if std::env::var_os("ECTP_IN_NETNS").is_some() {
        return true;
    }
    // SAFETY: geteuid takes no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let probe = Command::new("unshare").args(["-n", "true"]).output();
    if !root || !matches!(probe, Ok(ref o) if o.status.success()) {
        println!("{SKIP}");
        return false;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let script = format!(
        "ip link set lo up && ip link add va type veth peer name vb && ip link set va up && ip link set vb up \
         && ip -6 addr add fd00::1/64 dev va nodad || exit {SETUP_FAILED}; \
         exec \"$0\" --exact {test} --nocapture --test-threads=1"
    );
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .arg(&exe)
        .env("ECTP_IN_NETNS", "1")
        .output()
        .expect("run unshare");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.code() == Some(SETUP_FAILED) {
        println!("{SKIP} (the namespace's network could not be set up)\n{text}");
        return false;
    }
    assert!(out.status.success(), "the test failed in the network namespace ({}):\n{text}", out.status);
    assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
    false
}
