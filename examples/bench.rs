//! Throughput of the library against raw UDP multicast. A benchmark, not a
//! test: it prints figures and asserts no timing. See tools/README.md.
//!
//! ```sh
//! cargo run --release --example bench -- matrix --net lo --tus 1,4 --tco flat,tree --bytes 16M
//! cargo run --release --example bench -- matrix --net ns --tus 2 --loss 0,5 --tco flat --bytes 32M  # as root
//! ```
//!
//! `matrix` runs this same binary in the roles below as child processes
//! (inside network namespaces with `--net ns`) and reads what each prints on
//! stdout: `READY ...` once it is set up, one `RESULT k=v ...` line at the
//! end, or `FAIL why` when it cannot go on. The roles can be run by hand too:
//!
//! - `send`: the TO, through the C API (`ectp::ffi`) exactly as C programs
//!   and the tests call it;
//! - `recv`: a TU, checking every message (index, length, last byte);
//! - `udp-send`, `udp-recv`: the raw UDP multicast baseline (socket2).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead as _, BufReader};
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::ops::Range;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use ectp::ffi::*;
use libc::{c_int, sockaddr, sockaddr_storage, socklen_t};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// The group of every run; a fresh port per run keeps runs apart.
const GROUP_V4: Ipv4Addr = Ipv4Addr::new(239, 255, 90, 1);
/// First group port: below the kernel's ephemeral range (32768..).
const PORT_BASE: u16 = 30000;
/// Ports used in turn from PORT_BASE on.
const PORT_SPAN: u16 = 2500;
/// How long the TO waits for its TUs to join.
const MEMBERS_WAIT: Duration = Duration::from_secs(60);
/// A raw UDP receiver stops after this much silence following the first datagram.
const UDP_SILENCE: Duration = Duration::from_secs(2);
/// A raw UDP receiver gives up when nothing at all came for this long.
const UDP_FIRST_WAIT: Duration = Duration::from_secs(60);
/// SO_RCVBUF of the raw UDP receivers: what the library asks for its TUs' multicast socket.
const UDP_RCVBUF: usize = 4 << 20;
/// Largest UDP payload over IPv4.
const UDP_MAX: usize = 65507;
/// The sequence number of the raw UDP sender's end markers.
const END_MARK: u64 = u64::MAX;
/// End markers sent, spaced so that a receiver still draining its buffer gets one.
const END_MARKERS: usize = 5;
/// Largest ECTP message.
const MAX_MESSAGE: usize = 16 << 20;
/// Addresses of the namespace hosts: 10.NS_SUBNET.0.k/24.
const NS_SUBNET: u8 = 91;
/// A finished child gets this long to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(5);

const USAGE: &str = "\
usage: bench send --local IP --group IP:PORT --bytes N --size S --tus K [--tco flat|tree] [--fanout F]
                 [--rxt MS] [--hgt MS] [--window PACKETS] [--cc 0|1] [--key]
       bench recv --owner IP --group IP:PORT [--ra] [--fanout F] [--rx-loss PCT] [--bytes N] [--size S] [--key]
       bench udp-send --local IP --group IP:PORT --bytes N --size S
       bench udp-recv --group IP:PORT --local IP [--bytes N] [--size S]
       bench matrix [--net lo|ns] [--tus 1,4,16,32] [--tco flat,tree] [--loss 0] [--bytes 64M] [--size 1400]
                    [--runs 1] [--fanout 8] [--timeout 120] [--rxt MS] [--hgt MS] [--window PACKETS] [--cc 0|1]
                    [--key off|on|both] [--split-gso]
sizes take a K, M or G suffix (powers of 1024); --key: a group key (ECTP_GROUP_KEY) on every node;
--split-gso (--net ns): every host's eth0 splits UDP GSO messages (gso_max_segs 1), so that
the loss rules drop single datagrams, not whole GSO messages";

/// The group key of keyed runs.
const BENCH_KEY: &[u8; 32] = b"libectp benchmark group key, 32B";

/// A mode: its name, its flags taking a value and its switches (each list
/// space-separated), and what runs it (Ok(false): it completed but found
/// something wrong).
type Mode = (&'static str, &'static str, &'static str, fn(&Args) -> Result<bool, String>);

const MODES: &[Mode] = &[
    ("send", "--local --group --bytes --size --tus --tco --fanout --rxt --hgt --window --cc", "--key", role_send),
    ("recv", "--owner --group --fanout --rx-loss --bytes --size", "--ra --key", role_recv),
    ("udp-send", "--local --group --bytes --size", "", role_udp_send),
    ("udp-recv", "--group --local --bytes --size", "", role_udp_recv),
    (
        "matrix",
        "--net --tus --tco --loss --bytes --size --runs --fanout --timeout --rxt --hgt --window --cc --key",
        "--split-gso",
        matrix,
    ),
];

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mode = argv.first().map(String::as_str).unwrap_or("");
    let Some(&(_, valued, switches, run)) = MODES.iter().find(|m| m.0 == mode) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let args = match Args::from_argv(&argv[1..], valued, switches) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench {mode}: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench {mode}: {e}");
            if mode != "matrix" {
                // The driver reports this as the reason the run failed.
                println!("FAIL {e}");
            }
            ExitCode::FAILURE
        }
    }
}

// ----- arguments -----

/// `--flag value` pairs and `--switch`es.
struct Args {
    vals: HashMap<String, String>,
    switches: HashSet<String>,
}

impl Args {
    fn from_argv(argv: &[String], valued: &str, switches: &str) -> Result<Args, String> {
        let mut a = Args { vals: HashMap::new(), switches: HashSet::new() };
        let mut it = argv.iter();
        while let Some(flag) = it.next() {
            if switches.split_whitespace().any(|s| s == flag) {
                a.switches.insert(flag.clone());
            } else if valued.split_whitespace().any(|s| s == flag) {
                let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
                a.vals.insert(flag.clone(), v.clone());
            } else {
                return Err(format!("unknown argument {flag:?}"));
            }
        }
        Ok(a)
    }

    fn has(&self, switch: &str) -> bool {
        self.switches.contains(switch)
    }

    fn get(&self, flag: &str) -> Option<&str> {
        self.vals.get(flag).map(String::as_str)
    }

    /// A required value.
    fn parse<T: FromStr>(&self, flag: &str) -> Result<T, String> {
        let v = self.get(flag).ok_or_else(|| format!("{flag} is required"))?;
        v.parse().map_err(|_| format!("{flag}: bad value {v:?}"))
    }

    /// An optional value.
    fn opt<T: FromStr>(&self, flag: &str) -> Result<Option<T>, String> {
        self.get(flag).map(|_| self.parse(flag)).transpose()
    }

    fn parse_or<T: FromStr>(&self, flag: &str, default: T) -> Result<T, String> {
        Ok(self.opt(flag)?.unwrap_or(default))
    }

    /// An optional byte count, with an optional K, M or G suffix.
    fn bytes(&self, flag: &str) -> Result<Option<u64>, String> {
        self.get(flag).map(|v| parse_bytes(v).ok_or_else(|| format!("{flag}: bad size {v:?}"))).transpose()
    }

    fn bytes_req(&self, flag: &str) -> Result<u64, String> {
        self.bytes(flag)?.ok_or_else(|| format!("{flag} is required"))
    }

    /// A comma-separated list.
    fn list<T: FromStr>(&self, flag: &str, default: &str) -> Result<Vec<T>, String> {
        let v = self.get(flag).unwrap_or(default);
        v.split(',').map(|x| x.trim().parse().map_err(|_| format!("{flag}: bad item {x:?}"))).collect()
    }
}

/// "1400", "64K", "16M", "1G" (powers of 1024).
fn parse_bytes(v: &str) -> Option<u64> {
    let (num, mult) = match v.chars().last()? {
        'k' | 'K' => (&v[..v.len() - 1], 1 << 10),
        'm' | 'M' => (&v[..v.len() - 1], 1 << 20),
        'g' | 'G' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// `--size` within `range`.
fn message_size(a: &Args, range: Range<usize>) -> Result<usize, String> {
    let s = a.bytes_req("--size")?;
    usize::try_from(s)
        .ok()
        .filter(|s| range.contains(s))
        .ok_or_else(|| format!("--size must be {}..={}", range.start, range.end - 1))
}

/// The 1-based length of message `i` of a stream of `bytes` bytes cut into `size`-byte messages.
fn message_len(i: u64, bytes: u64, size: usize) -> usize {
    let left = bytes - i * size as u64;
    left.min(size as u64) as usize
}

// ----- the C API from Rust (as tests/common/mod.rs does it) -----

fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn errno_text(e: c_int) -> String {
    format!("errno {e} ({})", std::io::Error::from_raw_os_error(e))
}

fn c_addr(a: SocketAddr) -> (sockaddr_storage, socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
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

fn ptr(s: &sockaddr_storage) -> *const sockaddr {
    (s as *const sockaddr_storage).cast()
}

fn family(a: IpAddr) -> c_int {
    if a.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 }
}

fn set_int(sd: c_int, opt: c_int, v: c_int) -> Result<(), String> {
    let r = msetsockopt(sd, SOL_ECTP, opt, (&v as *const c_int).cast(), size_of::<c_int>() as socklen_t);
    if r == 0 { Ok(()) } else { Err(format!("msetsockopt({opt}, {v}): {}", errno_text(errno()))) }
}

fn get_int(sd: c_int, opt: c_int) -> Result<c_int, String> {
    let mut v: c_int = 0;
    let mut len = size_of::<c_int>() as socklen_t;
    if mgetsockopt(sd, SOL_ECTP, opt, (&mut v as *mut c_int).cast(), &mut len) == 0 {
        Ok(v)
    } else {
        Err(format!("mgetsockopt({opt}): {}", errno_text(errno())))
    }
}

fn stats(sd: c_int) -> ectp_stats {
    let mut s = ectp_stats::default();
    // Fails only for a bad descriptor; the counters then stay 0.
    ectp_get_stats(sd, &mut s);
    s
}

/// A new endpoint of the family of `a`.
fn new_endpoint(a: IpAddr) -> Result<c_int, String> {
    let sd = msocket(family(a), libc::SOCK_DGRAM, 0);
    if sd < 0 { Err(format!("msocket: {}", errno_text(errno()))) } else { Ok(sd) }
}

// ----- what every role reports -----

/// CPU seconds (user + system, all threads) and peak RSS in KiB of this process.
fn usage() -> (f64, i64) {
    // SAFETY: an all-zero rusage is valid, and getrusage only writes it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime) + secs(ru.ru_stime), ru.ru_maxrss as i64)
}

/// Megabytes (10^6 bytes) per second; 0 for no time.
fn mbps(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 { bytes as f64 / secs / 1e6 } else { 0.0 }
}

// ----- message contents -----

/// The byte at `offset` of every message before it is stamped.
fn fill_byte(offset: usize) -> u8 {
    (offset as u8).wrapping_mul(31) ^ 0x5c
}

fn message_buffer(len: usize) -> Vec<u8> {
    (0..len).map(fill_byte).collect()
}

/// Make `msg` message `i`: its index in the first 8 bytes (little endian,
/// cut to the length) and mixed into the last byte. Cheap to write and to
/// check, yet a receiver sees loss, reordering, duplication, truncation and
/// messages glued together or cut apart.
fn stamp(msg: &mut [u8], i: u64) {
    let head = msg.len().min(8);
    msg[..head].copy_from_slice(&i.to_le_bytes()[..head]);
    if msg.len() > 8 {
        let last = msg.len() - 1;
        msg[last] = fill_byte(last) ^ i as u8;
    }
}

/// The index `msg` carries, None when its last byte disagrees.
fn message_index(msg: &[u8]) -> Option<u64> {
    let head = msg.len().min(8);
    let mut b = [0u8; 8];
    b[..head].copy_from_slice(&msg[..head]);
    let i = u64::from_le_bytes(b);
    if msg.len() > 8 {
        let last = msg.len() - 1;
        if msg[last] != fill_byte(last) ^ i as u8 {
            return None;
        }
    }
    Some(i)
}

/// What a TU checks of the stream: every message whole, once, in order.
#[derive(Default)]
struct Check {
    /// S: from --size, else the first message's length.
    size: Option<usize>,
    next: u64,
    bytes: u64,
    gaps: u64,
    duplicates: u64,
    bad: u64,
    gap_flags: u64,
    short_seen: bool,
}

impl Check {
    fn message(&mut self, msg: &[u8], flags: u32) {
        self.bytes += msg.len() as u64;
        if flags & ECTP_MSG_GAP != 0 {
            self.gap_flags += 1;
        }
        let size = *self.size.get_or_insert(msg.len());
        // Only the last message may be shorter than S, and none longer.
        if msg.len() > size || self.short_seen || flags & ECTP_MSG_TRUNC != 0 {
            self.bad += 1;
        }
        self.short_seen |= msg.len() < size;
        match message_index(msg) {
            None => self.bad += 1,
            Some(i) if i < self.next => self.duplicates += 1,
            Some(i) => {
                self.gaps += i - self.next;
                self.next = i + 1;
            }
        }
    }

    /// At the end of a stream of `bytes` bytes: the messages missing after the last one.
    fn finish(&mut self, bytes: u64) {
        if let Some(s) = self.size {
            self.gaps += bytes.div_ceil(s as u64).saturating_sub(self.next);
        }
    }

    fn ok(&self, expected: Option<u64>) -> bool {
        self.gaps == 0
            && self.duplicates == 0
            && self.bad == 0
            && self.gap_flags == 0
            && expected.is_none_or(|b| b == self.bytes)
    }
}

// ----- role: the TO -----

fn role_send(a: &Args) -> Result<bool, String> {
    let local: IpAddr = a.parse("--local")?;
    let sd = new_endpoint(local)?;
    let result = send_stream(sd, a, local);
    if result.is_err() {
        // Release the endpoint; the error is what matters.
        mterminate(sd);
    }
    result
}

/// Create the connection on `sd`, wait for the TUs, stream, terminate.
fn send_stream(sd: c_int, a: &Args, local: IpAddr) -> Result<bool, String> {
    let group: SocketAddr = a.parse("--group")?;
    let bytes = a.bytes_req("--bytes")?;
    let size = message_size(a, 1..MAX_MESSAGE + 1)?;
    let tus: c_int = a.parse("--tus")?;
    let tree = match a.get("--tco").unwrap_or("flat") {
        "flat" => false,
        "tree" => true,
        other => return Err(format!("--tco: flat or tree, not {other:?}")),
    };
    // Library defaults for everything else: the benchmark measures them.
    if tree {
        set_int(sd, ECTP_TCO, ECTP_TCO_TREE)?;
        set_int(sd, ECTP_MAX_CHILDREN, a.parse_or("--fanout", 8)?)?;
    }
    if let Some(ms) = a.opt("--rxt")? {
        set_int(sd, ECTP_RXT, ms)?;
    }
    if let Some(ms) = a.opt("--hgt")? {
        set_int(sd, ECTP_HGT, ms)?;
    }
    if let Some(packets) = a.opt("--window")? {
        set_int(sd, ECTP_WINDOW, packets)?;
    }
    if let Some(cc) = a.opt("--cc")? {
        set_int(sd, ECTP_CC, cc)?;
    }
    set_key(sd, a)?;
    let (l, ll) = c_addr(SocketAddr::new(local, 0));
    let (g, gl) = c_addr(group);
    if mcreate(sd, ptr(&l), ll, ptr(&g), gl) != 0 {
        return Err(format!("mcreate: {}", errno_text(errno())));
    }
    println!("READY created");

    // Every TU joins before the first message, so each must get all of them.
    let until = Instant::now() + MEMBERS_WAIT;
    loop {
        let members = get_int(sd, ECTP_MEMBERS)?;
        if members >= tus {
            break;
        }
        if Instant::now() >= until {
            return Err(format!("{members}/{tus} members after {} s", MEMBERS_WAIT.as_secs()));
        }
        thread::sleep(Duration::from_millis(5));
    }

    let mut buf = message_buffer(size);
    let start = Instant::now();
    for i in 0..bytes.div_ceil(size as u64) {
        let msg = &mut buf[..message_len(i, bytes, size)];
        stamp(msg, i);
        if msendm(sd, msg.as_ptr().cast(), msg.len(), 0) != msg.len() as isize {
            return Err(format!("msendm of message {i}: {}", errno_text(errno())));
        }
    }
    let send_secs = start.elapsed().as_secs_f64();
    // mterminate releases the descriptor: the counters are read before it,
    // so the last window's first sends and repairs may be missing from them.
    let st = stats(sd);
    if mterminate(sd) != 0 {
        return Err(format!("mterminate: {}", errno_text(errno())));
    }
    let secs = start.elapsed().as_secs_f64();
    let (cpu, rss) = usage();
    println!(
        "RESULT role=send bytes={bytes} secs={secs:.3} mbps={:.2} cpu_s={cpu:.3} rss_kb={rss} data_sent={} \
         rdata_sent={} packets_received={} packets_sent={} send_secs={send_secs:.3}",
        mbps(bytes, secs),
        st.data_sent,
        st.rdata_sent,
        st.packets_received,
        st.packets_sent
    );
    Ok(true)
}

// ----- role: a TU -----

fn role_recv(a: &Args) -> Result<bool, String> {
    let owner: IpAddr = a.parse("--owner")?;
    let group: SocketAddr = a.parse("--group")?;
    let rx_loss: c_int = a.parse_or("--rx-loss", 0)?;
    let expected = a.bytes("--bytes")?;
    let size = a.get("--size").map(|_| message_size(a, 1..MAX_MESSAGE + 1)).transpose()?;

    let sd = new_endpoint(owner)?;
    let joined = join(sd, a, owner, group, rx_loss);
    if let Err(e) = joined {
        mleave(sd, 0);
        return Err(e);
    }

    let mut check = Check { size, ..Check::default() };
    let mut buf = vec![0u8; size.unwrap_or(0).max(64 << 10)];
    // SAFETY: all-zero is a valid ectp_rcvinfo.
    let mut info: ectp_rcvinfo = unsafe { std::mem::zeroed() };
    let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
    let mut error = None;
    loop {
        let n = mrecvmsg(sd, buf.as_mut_ptr().cast(), buf.len(), 0, &mut info);
        if n == 0 {
            break; // the TO terminated: the normal end
        }
        if n < 0 {
            match errno() {
                libc::EINTR => continue,
                e => {
                    error = Some(e);
                    break;
                }
            }
        }
        let now = Instant::now();
        first.get_or_insert(now);
        last = Some(now);
        check.message(&buf[..n as usize], info.flags);
    }
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    // First to last message: the data alone, without the wait for the end.
    let data_secs = first.zip(last).map_or(0.0, |(f, l)| (l - f).as_secs_f64());
    let st = stats(sd);
    mleave(sd, 0);
    if let Some(b) = expected {
        check.finish(b);
    }
    if let Some(e) = error {
        eprintln!("bench recv: mrecvmsg: {}", errno_text(e));
    }
    let ok = error.is_none() && check.ok(expected);
    let (cpu, rss) = usage();
    println!(
        "RESULT role=recv bytes={} secs={secs:.3} mbps={:.2} cpu_s={cpu:.3} rss_kb={rss} ok={} gaps={} duplicates={} \
         data_received={} dropped={} bad={} gap_flags={} packet_duplicates={} malformed={} errno={} \
         data_secs={data_secs:.3} data_mbps={:.2}",
        check.bytes,
        mbps(check.bytes, secs),
        if ok { "yes" } else { "no" },
        check.gaps,
        check.duplicates,
        st.data_received,
        st.dropped_injected,
        check.bad,
        check.gap_flags,
        st.duplicates,
        st.dropped_malformed,
        error.unwrap_or(0),
        mbps(check.bytes, data_secs)
    );
    Ok(ok)
}

/// With --key: the benchmark's group key.
fn set_key(sd: c_int, a: &Args) -> Result<(), String> {
    if a.has("--key")
        && msetsockopt(sd, SOL_ECTP, ECTP_GROUP_KEY, BENCH_KEY.as_ptr().cast(), BENCH_KEY.len() as socklen_t) != 0
    {
        return Err(format!("ECTP_GROUP_KEY: {}", errno_text(errno())));
    }
    Ok(())
}

/// Set the TU's options, join, and say READY with its place in the tree.
fn join(sd: c_int, a: &Args, owner: IpAddr, group: SocketAddr, rx_loss: c_int) -> Result<(), String> {
    if a.has("--ra") {
        set_int(sd, ECTP_RA, 1)?;
        set_int(sd, ECTP_MAX_CHILDREN, a.parse_or("--fanout", 8)?)?;
    }
    set_key(sd, a)?;
    let (o, ol) = c_addr(SocketAddr::new(owner, 0));
    let (g, gl) = c_addr(group);
    if mjoin(sd, ptr(&o), ol, ptr(&g), gl) != 0 {
        return Err(format!("mjoin: {}", errno_text(errno())));
    }
    // Loss starts after the join: the figures are about the data, and a lost
    // join request would only delay the start by RXT.
    if rx_loss > 0 {
        set_int(sd, ECTP_RX_LOSS, rx_loss)?;
    }
    let user = get_int(sd, ECTP_USER_ID)?;
    let parent = get_int(sd, ECTP_PARENT)? as u32;
    let level = get_int(sd, ECTP_TREE_LEVEL)?;
    println!("READY user={user} parent={parent} level={level}");
    Ok(())
}

// ----- roles: the raw UDP baseline -----

/// The interface index that holds `ip` (IPV6_MULTICAST_IF and IPv6 joins want an index).
fn interface_index(ip: Ipv6Addr) -> Result<u32, String> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(format!("getifaddrs: {}", errno_text(errno())));
    }
    let mut found = 0;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        // SAFETY: a non-null ifa_addr points to a sockaddr.
        if ifa.ifa_addr.is_null() || i32::from(unsafe { (*ifa.ifa_addr).sa_family }) != libc::AF_INET6 {
            continue;
        }
        // SAFETY: the family says it is a sockaddr_in6.
        let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
        if Ipv6Addr::from(sin6.sin6_addr.s6_addr) == ip {
            // SAFETY: ifa_name is a NUL-terminated name.
            found = unsafe { libc::if_nametoindex(ifa.ifa_name) };
            break;
        }
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(head) };
    if found == 0 { Err(format!("no interface holds {ip}")) } else { Ok(found) }
}

fn udp_socket(group: SocketAddr) -> Result<Socket, String> {
    Socket::new(Domain::for_address(group), Type::DGRAM, Some(Protocol::UDP)).map_err(|e| format!("socket: {e}"))
}

fn role_udp_send(a: &Args) -> Result<bool, String> {
    let local: IpAddr = a.parse("--local")?;
    let group: SocketAddr = a.parse("--group")?;
    let bytes = a.bytes_req("--bytes")?;
    let size = message_size(a, 16..UDP_MAX + 1)?;
    let sock = udp_socket(group)?;
    let e = |what: &str, e: std::io::Error| format!("{what}: {e}");
    match (local, group.ip()) {
        (IpAddr::V4(l), IpAddr::V4(_)) => {
            sock.set_multicast_if_v4(&l).map_err(|x| e("IP_MULTICAST_IF", x))?;
            sock.set_multicast_loop_v4(true).map_err(|x| e("IP_MULTICAST_LOOP", x))?;
        }
        (IpAddr::V6(l), IpAddr::V6(_)) => {
            sock.set_multicast_if_v6(interface_index(l)?).map_err(|x| e("IPV6_MULTICAST_IF", x))?;
            sock.set_multicast_loop_v6(true).map_err(|x| e("IPV6_MULTICAST_LOOP", x))?;
        }
        _ => return Err("--local and --group are of different families".into()),
    }
    sock.bind(&SockAddr::from(SocketAddr::new(local, 0))).map_err(|x| e("bind", x))?;
    let sock: UdpSocket = sock.into();

    let mut buf = message_buffer(size);
    let (mut sent, mut retries) = (0u64, 0u64);
    let count = bytes.div_ceil(size as u64);
    let start = Instant::now();
    for i in 0..count {
        // At least the 8-byte sequence number, even in a short last datagram.
        let len = message_len(i, bytes, size).max(8);
        buf[..8].copy_from_slice(&i.to_le_bytes());
        loop {
            match sock.send_to(&buf[..len], group) {
                Ok(_) => break,
                // A full queue on the way out: wait a moment, as fast as it can.
                Err(x) if matches!(x.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR)) => {
                    retries += 1;
                    thread::yield_now();
                }
                Err(x) => return Err(e(&format!("send of datagram {i}"), x)),
            }
        }
        sent += len as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut mark = [0u8; 24];
    mark[..8].copy_from_slice(&END_MARK.to_le_bytes());
    mark[8..16].copy_from_slice(&count.to_le_bytes());
    mark[16..].copy_from_slice(&sent.to_le_bytes());
    for _ in 0..END_MARKERS {
        thread::sleep(Duration::from_millis(20));
        // Best effort: receivers also stop after UDP_SILENCE.
        let _ = sock.send_to(&mark, group);
    }
    let (cpu, rss) = usage();
    println!(
        "RESULT role=udp-send bytes={sent} secs={secs:.3} mbps={:.2} cpu_s={cpu:.3} rss_kb={rss} datagrams={count} \
         send_retries={retries}",
        mbps(sent, secs)
    );
    Ok(true)
}

fn role_udp_recv(a: &Args) -> Result<bool, String> {
    let group: SocketAddr = a.parse("--group")?;
    let local: IpAddr = a.parse("--local")?;
    let hinted = match (a.bytes("--bytes")?, a.get("--size")) {
        (Some(b), Some(_)) => Some(b.div_ceil(message_size(a, 16..UDP_MAX + 1)? as u64)),
        _ => None,
    };
    let sock = udp_socket(group)?;
    let e = |what: &str, e: std::io::Error| format!("{what}: {e}");
    // Several receivers on one host share the group port, as the library's TUs do.
    sock.set_reuse_address(true).map_err(|x| e("SO_REUSEADDR", x))?;
    sock.set_recv_buffer_size(UDP_RCVBUF).map_err(|x| e("SO_RCVBUF", x))?;
    // Bound to the group address, it hears only this group.
    sock.bind(&SockAddr::from(group)).map_err(|x| e("bind", x))?;
    match (group.ip(), local) {
        (IpAddr::V4(g), IpAddr::V4(l)) => sock.join_multicast_v4(&g, &l),
        (IpAddr::V6(g), IpAddr::V6(l)) => sock.join_multicast_v6(&g, interface_index(l)?),
        _ => return Err("--local and --group are of different families".into()),
    }
    .map_err(|x| e("join", x))?;
    let rcvbuf = sock.recv_buffer_size().unwrap_or(0);
    let sock: UdpSocket = sock.into();
    sock.set_read_timeout(Some(UDP_FIRST_WAIT)).map_err(|x| e("SO_RCVTIMEO", x))?;
    println!("READY rcvbuf={rcvbuf}");

    let mut buf = vec![0u8; 64 << 10];
    let (mut bytes, mut got, mut top) = (0u64, 0u64, 0u64);
    let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
    let mut marked = None;
    loop {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(x) if x.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(x) if matches!(x.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
            Err(x) => return Err(e("recv", x)),
        };
        if n < 8 {
            continue;
        }
        let seq = u64::from_le_bytes(buf[..8].try_into().unwrap_or_default());
        if seq == END_MARK && n >= 24 {
            marked = Some(u64::from_le_bytes(buf[8..16].try_into().unwrap_or_default()));
            break;
        }
        let now = Instant::now();
        if first.is_none() {
            first = Some(now);
            sock.set_read_timeout(Some(UDP_SILENCE)).map_err(|x| e("SO_RCVTIMEO", x))?;
        }
        last = Some(now);
        bytes += n as u64;
        got += 1;
        top = top.max(seq + 1);
    }
    let (Some(first), Some(last)) = (first, last) else {
        return Err(format!("no datagram within {} s", UDP_FIRST_WAIT.as_secs()));
    };
    // What was sent: the end marker says; else the arguments; else the highest number seen.
    let expected = marked.or(hinted).unwrap_or(top).max(got);
    let lost = expected - got;
    let secs = (last - first).as_secs_f64();
    let (cpu, rss) = usage();
    println!(
        "RESULT role=udp-recv bytes={bytes} secs={secs:.3} mbps={:.2} cpu_s={cpu:.3} lost_pct={:.3} rss_kb={rss} \
         datagrams={got} lost={lost} end_marker={} rcvbuf={rcvbuf}",
        mbps(bytes, secs),
        lost as f64 * 100.0 / expected as f64,
        if marked.is_some() { "yes" } else { "no" }
    );
    Ok(true)
}

// ----- the driver: child processes -----

/// Set by SIGINT/SIGTERM: the driver stops, kills its children and deletes its namespaces.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as extern "C" fn(c_int) as *const () as libc::sighandler_t) };
    }
}

/// `k=v` words of a READY or RESULT line.
type Fields = HashMap<String, String>;

fn fields(line: &str) -> Fields {
    line.split_whitespace().skip(1).filter_map(|w| w.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect()
}

fn num(f: &Fields, k: &str) -> f64 {
    f.get(k).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

/// One child process running a role.
struct Kid {
    name: String,
    child: Child,
    ready: Option<Fields>,
    result: Option<Fields>,
    fail: Option<String>,
    /// Its stdout closed.
    gone: bool,
}

/// The children of one run, with one deadline for all of them. Whatever is
/// still running when it is dropped (timeout, failure) is killed.
struct Fleet {
    exe: PathBuf,
    kids: Vec<Kid>,
    tx: Sender<(usize, Option<String>)>,
    rx: Receiver<(usize, Option<String>)>,
    deadline: Instant,
    timeout: Duration,
}

impl Fleet {
    fn new(timeout: Duration) -> Result<Fleet, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let (tx, rx) = mpsc::channel();
        Ok(Fleet { exe, kids: vec![], tx, rx, deadline: Instant::now() + timeout, timeout })
    }

    /// Run this binary with `args`, in namespace `ns` if given. Returns its index.
    fn spawn(&mut self, name: String, ns: Option<&str>, args: &[String]) -> Result<usize, String> {
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.exe);
                c
            }
            None => Command::new(&self.exe),
        };
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().map_err(|e| format!("spawn {name}: {e}"))?;
        let idx = self.kids.len();
        let out = child.stdout.take();
        self.kids.push(Kid { name, child, ready: None, result: None, fail: None, gone: false });
        let out = out.ok_or("no stdout of the child")?;
        let tx = self.tx.clone();
        // One reader per child, all feeding one channel the driver waits on.
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send((idx, Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((idx, None));
        });
        Ok(idx)
    }

    fn hear(&mut self, idx: usize, line: Option<String>) {
        let kid = &mut self.kids[idx];
        match line {
            None => kid.gone = true,
            Some(l) if l.starts_with("READY") => kid.ready = Some(fields(&l)),
            Some(l) if l.starts_with("RESULT ") => kid.result = Some(fields(&l)),
            Some(l) if l.starts_with("FAIL ") => kid.fail = Some(l[5..].to_string()),
            Some(l) => eprintln!("[{}] {l}", kid.name),
        }
    }

    /// Read what the children say until every one in `range` has `what`
    /// (`has` tells); an error when one failed or exited without it, at the
    /// deadline, or on SIGINT.
    fn wait_all(&mut self, range: Range<usize>, what: &str, has: fn(&Kid) -> bool) -> Result<(), String> {
        loop {
            let mut all = true;
            for kid in &mut self.kids[range.clone()] {
                if let Some(f) = &kid.fail {
                    return Err(format!("{}: {f}", kid.name));
                }
                if !has(kid) {
                    if kid.gone {
                        let status = kid.child.try_wait().ok().flatten();
                        let status = status.map_or("still running".into(), |s| s.to_string());
                        return Err(format!("{} exited without {what} ({status})", kid.name));
                    }
                    all = false;
                }
            }
            if all {
                return Ok(());
            }
            if INTERRUPTED.load(Ordering::Relaxed) {
                return Err("interrupted".into());
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let waiting: Vec<&str> =
                    self.kids[range.clone()].iter().filter(|k| !has(k)).map(|k| k.name.as_str()).collect();
                return Err(format!(
                    "timeout ({} s) waiting for {what} of {}",
                    self.timeout.as_secs(),
                    waiting.join(",")
                ));
            }
            match self.rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok((idx, line)) => self.hear(idx, line),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err("lost the children's output".into()),
            }
        }
    }

    fn ready(&self, idx: usize) -> &Fields {
        static NONE: std::sync::OnceLock<Fields> = std::sync::OnceLock::new();
        self.kids[idx].ready.as_ref().unwrap_or_else(|| NONE.get_or_init(Fields::new))
    }

    fn result(&self, idx: usize) -> &Fields {
        static NONE: std::sync::OnceLock<Fields> = std::sync::OnceLock::new();
        self.kids[idx].result.as_ref().unwrap_or_else(|| NONE.get_or_init(Fields::new))
    }

    /// After the results: let the children exit (Drop kills those that do not).
    fn finish(&mut self) {
        let until = Instant::now() + EXIT_GRACE;
        for kid in &mut self.kids {
            while matches!(kid.child.try_wait(), Ok(None)) && Instant::now() < until {
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for kid in &mut self.kids {
            if matches!(kid.child.try_wait(), Ok(None)) {
                let _ = kid.child.kill();
                let _ = kid.child.wait();
            }
        }
    }
}

// ----- the driver: where the roles run -----

/// Run a command; its stdout, or what went wrong.
fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Network namespaces joined by a bridge (the recipe of tests/common/netns.rs):
/// hosts 0.. with 10.NS_SUBNET.0.(k+1)/24 on eth0, a veth whose peer is in
/// the bridge of a switch namespace. All deleted when dropped, also after a
/// failure or SIGINT.
struct Netns {
    hosts: Vec<String>,
    all: Vec<String>,
}

impl Netns {
    /// `split_gso`: each host's eth0 segments UDP GSO messages in software
    /// before they leave (gso_max_segs 1): else a GSO message crosses the
    /// veth pairs and the bridge as one packet, and a loss rule drops it
    /// whole.
    fn new(hosts: usize, split_gso: bool) -> Result<Netns, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("--net ns needs root (network namespaces, iptables)".into());
        }
        let pid = std::process::id();
        let mut net = Netns { hosts: vec![], all: vec![] };
        let sw = format!("ectpbench{pid}sw");
        let names: Vec<String> = (0..hosts).map(|k| format!("ectpbench{pid}h{k}")).collect();
        for ns in names.iter().chain([&sw]) {
            run(&["ip", "netns", "add", ns])?;
            net.all.push(ns.clone());
        }
        // No IGMP snooping: the bridge floods multicast to every port.
        run(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])?;
        run(&["ip", "-n", &sw, "link", "set", "br0", "up"])?;
        for (k, ns) in names.iter().enumerate() {
            let port = format!("p{k}");
            run(&["ip", "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns])?;
            run(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            run(&["ip", "-n", ns, "addr", "add", &format!("{}/24", Netns::addr(k)), "dev", "eth0"])?;
            if split_gso {
                run(&["ip", "-n", ns, "link", "set", "eth0", "gso_max_segs", "1"])?;
            }
            run(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
        }
        net.hosts = names;
        Ok(net)
    }

    fn addr(k: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, NS_SUBNET, 0, k as u8 + 1))
    }

    fn iptables(ns: &str, args: &[&str]) -> Result<String, String> {
        let mut cmd = vec!["ip", "netns", "exec", ns, "iptables", "-t", "filter"];
        cmd.extend_from_slice(args);
        run(&cmd)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in self.all.iter().rev() {
            if let Err(e) = run(&["ip", "netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// A place a role runs: a namespace (None: this one) and its address there.
struct Host {
    ns: Option<String>,
    addr: IpAddr,
}

/// Where the roles go: `--net lo`, everything on 127.0.0.1 here; `--net ns`,
/// the sender on one host and the receivers spread over two others.
struct Topology {
    sender: Host,
    receivers: Vec<Host>,
    netns: Option<Netns>,
}

impl Topology {
    fn new(net: &str, split_gso: bool) -> Result<Topology, String> {
        match net {
            "lo" => {
                let host = || Host { ns: None, addr: IpAddr::V4(Ipv4Addr::LOCALHOST) };
                Ok(Topology { sender: host(), receivers: vec![host()], netns: None })
            }
            "ns" => {
                let n = Netns::new(3, split_gso)?;
                let host = |k: usize| Host { ns: Some(n.hosts[k].clone()), addr: Netns::addr(k) };
                Ok(Topology { sender: host(0), receivers: vec![host(1), host(2)], netns: Some(n) })
            }
            other => Err(format!("--net: lo or ns, not {other:?}")),
        }
    }

    /// Where receiver `k` runs.
    fn receiver(&self, k: usize) -> &Host {
        &self.receivers[k % self.receivers.len()]
    }

    fn receiver_namespaces(&self) -> Vec<&str> {
        if self.netns.is_none() {
            return vec![];
        }
        self.receivers.iter().filter_map(|h| h.ns.as_deref()).collect()
    }

    /// `--net ns`: make the receivers' hosts drop `pct` % of their incoming
    /// UDP (every packet: data, repairs, and control between TUs).
    fn set_loss(&self, pct: f64) -> Result<(), String> {
        for ns in self.receiver_namespaces() {
            Netns::iptables(ns, &["-F", "INPUT"])?;
            if pct > 0.0 {
                let p = format!("{}", pct / 100.0);
                let rule = ["-A", "INPUT", "-p", "udp", "-m", "statistic", "--mode", "random", "--probability", &p];
                Netns::iptables(ns, &[&rule[..], &["-j", "DROP"]].concat())?;
            }
        }
        Ok(())
    }

    fn zero_drops(&self) -> Result<(), String> {
        for ns in self.receiver_namespaces() {
            Netns::iptables(ns, &["-Z", "INPUT"])?;
        }
        Ok(())
    }

    /// `--net ns`: packets the loss rules dropped since `zero_drops`.
    fn drops(&self) -> Result<Option<u64>, String> {
        if self.netns.is_none() {
            return Ok(None);
        }
        let mut sum = 0;
        for ns in self.receiver_namespaces() {
            let out = Netns::iptables(ns, &["-L", "INPUT", "-v", "-n", "-x"])?;
            for l in out.lines().filter(|l| l.contains("DROP") && l.contains("statistic")) {
                sum += l.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            }
        }
        Ok(Some(sum))
    }
}

// ----- the driver: runs -----

/// What the matrix was asked for.
struct Plan {
    net: String,
    tus: Vec<usize>,
    trees: Vec<bool>,
    /// Without and/or with a group key.
    keys: Vec<bool>,
    /// `--split-gso`: loss by datagram, not by GSO message.
    split_gso: bool,
    losses: Vec<f64>,
    bytes: u64,
    size: usize,
    runs: usize,
    fanout: usize,
    timeout: Duration,
    /// --rxt, --hgt, --window for the TO.
    to_extra: Vec<String>,
}

/// The figures of one completed run.
#[derive(Clone)]
struct Sample {
    mbps: f64,
    to_cpu_per_gb: f64,
    tu_cpu_per_gb: f64,
    to_rss_mb: f64,
    repair_pct: f64,
    lost: f64,
    /// The data phase alone: the TO's (sender's) bytes / time of its msendm loop ...
    send_mbps: f64,
    /// ... the slowest TU's (receiver's) bytes / time from its first to its last message ...
    slowest_tu_mbps: f64,
    /// ... and what the TO spent after its last msendm (mterminate).
    end_secs: f64,
    /// Why the data was not right, though the run completed.
    wrong: Option<String>,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn cpu_per_gb(f: &Fields) -> f64 {
    num(f, "cpu_s") / (num(f, "bytes") / 1e9)
}

/// The raw UDP baseline: K receivers, then one sender.
fn run_udp(p: &Plan, topo: &Topology, tus: usize, port: u16) -> Result<Sample, String> {
    let group = SocketAddr::new(GROUP_V4.into(), port).to_string();
    let (bytes, size) = (p.bytes.to_string(), p.size.to_string());
    let mut fleet = Fleet::new(p.timeout)?;
    topo.zero_drops()?;
    for k in 0..tus {
        let h = topo.receiver(k);
        let local = h.addr.to_string();
        let args = ["udp-recv", "--group", &group, "--local", &local, "--bytes", &bytes, "--size", &size];
        fleet.spawn(format!("udp-recv{k}"), h.ns.as_deref(), &strings(&args))?;
    }
    fleet.wait_all(0..tus, "READY", |k| k.ready.is_some())?;
    let local = topo.sender.addr.to_string();
    let args = ["udp-send", "--local", &local, "--group", &group, "--bytes", &bytes, "--size", &size];
    let s = fleet.spawn("udp-send".into(), topo.sender.ns.as_deref(), &strings(&args))?;
    fleet.wait_all(0..tus + 1, "RESULT", |k| k.result.is_some())?;
    fleet.finish();
    let rx: Vec<&Fields> = (0..tus).map(|k| fleet.result(k)).collect();
    Ok(Sample {
        mbps: median(rx.iter().map(|f| num(f, "mbps")).collect()),
        to_cpu_per_gb: cpu_per_gb(fleet.result(s)),
        tu_cpu_per_gb: median(rx.iter().map(|f| cpu_per_gb(f)).collect()),
        to_rss_mb: num(fleet.result(s), "rss_kb") / 1024.0,
        repair_pct: f64::NAN,
        lost: rx.iter().map(|f| num(f, "lost")).sum(),
        send_mbps: num(fleet.result(s), "mbps"),
        slowest_tu_mbps: rx.iter().map(|f| num(f, "mbps")).fold(f64::NAN, f64::min),
        end_secs: f64::NAN,
        wrong: None,
    })
}

/// The library: the TO, then (tree) the repair agents, then the other TUs.
fn run_ectp(
    p: &Plan,
    topo: &Topology,
    tus: usize,
    loss: f64,
    tree: bool,
    keyed: bool,
    port: u16,
) -> Result<Sample, String> {
    let group = SocketAddr::new(GROUP_V4.into(), port).to_string();
    let owner = topo.sender.addr.to_string();
    let (bytes, size, fanout) = (p.bytes.to_string(), p.size.to_string(), p.fanout.to_string());
    let mut fleet = Fleet::new(p.timeout)?;
    topo.zero_drops()?;

    let (k, tco) = (tus.to_string(), if tree { "tree" } else { "flat" });
    let mut args = strings(&[
        "send", "--local", &owner, "--group", &group, "--bytes", &bytes, "--size", &size, "--tus", &k, "--tco", tco,
        "--fanout", &fanout,
    ]);
    args.extend(p.to_extra.iter().cloned());
    if keyed {
        args.push("--key".into());
    }
    let to = fleet.spawn("to".into(), topo.sender.ns.as_deref(), &args)?;
    fleet.wait_all(to..to + 1, "READY", |k| k.ready.is_some())?;

    // No --net ns loss: inject it in the TUs (an int percent).
    let rx_loss = if topo.netns.is_none() && loss > 0.0 { Some(format!("{}", loss as i64)) } else { None };
    let tu_args = |ra: bool| {
        let mut a = strings(&[
            "recv", "--owner", &owner, "--group", &group, "--bytes", &bytes, "--size", &size, "--fanout", &fanout,
        ]);
        if ra {
            a.push("--ra".into());
        }
        if keyed {
            a.push("--key".into());
        }
        if let Some(l) = &rx_loss {
            a.extend(strings(&["--rx-loss", l]));
        }
        a
    };
    // In a tree the repair agents join, and are READY, before the leaves,
    // so that the TO (which takes agents first) places the leaves under them.
    let ras = if tree { tus.div_ceil(p.fanout + 1) } else { 0 };
    let first = fleet.kids.len();
    for k in 0..tus {
        if k == ras && ras > 0 {
            fleet.wait_all(first..first + ras, "READY", |k| k.ready.is_some())?;
        }
        let name = if k < ras { format!("ra{k}") } else { format!("tu{k}") };
        fleet.spawn(name, topo.receiver(k).ns.as_deref(), &tu_args(k < ras))?;
    }
    fleet.wait_all(first..first + tus, "READY", |k| k.ready.is_some())?;
    if tree {
        eprintln!("    tree levels: {}", levels(&fleet, first..first + tus));
    }
    fleet.wait_all(0..fleet.kids.len(), "RESULT", |k| k.result.is_some())?;
    fleet.finish();

    let tx = fleet.result(to);
    let rx: Vec<&Fields> = (first..first + tus).map(|k| fleet.result(k)).collect();
    let wrong = (first..first + tus).find(|&k| fleet.result(k).get("ok").map(String::as_str) != Some("yes")).map(|k| {
        let f = fleet.result(k);
        let g = |n: &str| f.get(n).cloned().unwrap_or_default();
        format!(
            "{}: gaps={} dups={} bad={} errno={}",
            fleet.kids[k].name,
            g("gaps"),
            g("duplicates"),
            g("bad"),
            g("errno")
        )
    });
    let lost = match topo.drops()? {
        Some(d) => d as f64,
        None => rx.iter().map(|f| num(f, "dropped")).sum(),
    };
    Ok(Sample {
        mbps: num(tx, "mbps"),
        to_cpu_per_gb: cpu_per_gb(tx),
        tu_cpu_per_gb: median(rx.iter().map(|f| cpu_per_gb(f)).collect()),
        to_rss_mb: num(tx, "rss_kb") / 1024.0,
        repair_pct: num(tx, "rdata_sent") * 100.0 / num(tx, "data_sent"),
        lost,
        send_mbps: mbps(p.bytes, num(tx, "send_secs")),
        slowest_tu_mbps: rx.iter().map(|f| num(f, "data_mbps")).fold(f64::NAN, f64::min),
        end_secs: num(tx, "secs") - num(tx, "send_secs"),
        wrong,
    })
}

/// "level:count ..." of the TUs in `range`, from their READY lines.
fn levels(fleet: &Fleet, range: Range<usize>) -> String {
    let mut count: std::collections::BTreeMap<String, usize> = Default::default();
    for k in range {
        *count.entry(fleet.ready(k).get("level").cloned().unwrap_or_default()).or_default() += 1;
    }
    count.iter().map(|(l, n)| format!("L{l}:{n}")).collect::<Vec<_>>().join(" ")
}

// ----- the driver: the matrix and its table -----

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

fn show(x: f64, decimals: usize) -> String {
    if x.is_finite() { format!("{x:.decimals$}") } else { "–".into() }
}

fn plan(a: &Args) -> Result<Plan, String> {
    let mut to_extra = vec![];
    for flag in ["--rxt", "--hgt", "--window", "--cc"] {
        if let Some(v) = a.opt::<u32>(flag)? {
            to_extra.extend([flag.to_string(), v.to_string()]);
        }
    }
    let trees = a
        .list::<String>("--tco", "flat,tree")?
        .iter()
        .map(|t| match t.as_str() {
            "flat" => Ok(false),
            "tree" => Ok(true),
            other => Err(format!("--tco: flat or tree, not {other:?}")),
        })
        .collect::<Result<_, _>>()?;
    let keys = match a.get("--key").unwrap_or("off") {
        "off" => vec![false],
        "on" => vec![true],
        "both" => vec![false, true],
        other => return Err(format!("--key: off, on or both, not {other:?}")),
    };
    let p = Plan {
        net: a.get("--net").unwrap_or("lo").to_string(),
        tus: a.list("--tus", "1,4,16,32")?,
        trees,
        keys,
        split_gso: a.has("--split-gso"),
        losses: a.list("--loss", "0")?,
        bytes: a.bytes("--bytes")?.unwrap_or(64 << 20),
        size: a.get("--size").map(|_| message_size(a, 16..UDP_MAX + 1)).transpose()?.unwrap_or(1400),
        runs: a.parse_or("--runs", 1)?,
        fanout: a.parse_or("--fanout", 8)?,
        timeout: Duration::from_secs(a.parse_or("--timeout", 120)?),
        to_extra,
    };
    if p.tus.contains(&0) || p.runs == 0 || p.fanout == 0 || p.bytes == 0 {
        return Err("--tus, --runs, --fanout and --bytes must be positive".into());
    }
    if p.losses.iter().any(|l| !(0.0..=100.0).contains(l)) {
        return Err("--loss is a percentage, 0..100".into());
    }
    if p.split_gso && p.net != "ns" {
        return Err("--split-gso needs --net ns".into());
    }
    if p.net == "lo" && p.losses.iter().any(|l| l.fract() != 0.0) {
        return Err("--net lo injects loss with ECTP_RX_LOSS, a whole percentage".into());
    }
    Ok(p)
}

fn shell_quote(a: &str) -> String {
    if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./,=:+".contains(c)) {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

fn print_header(p: &Plan) {
    let nproc = thread::available_parallelism().map_or("?".into(), |n| n.to_string());
    let kernel = run(&["uname", "-r"]).map_or("?".into(), |s| s.trim().to_string());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let command: Vec<String> = std::env::args().map(|a| shell_quote(&a)).collect();
    println!("# ectp bench\n");
    println!("- machine: nproc {nproc}, kernel {kernel} (uname -r), {cpu}");
    println!("- command: `{}`", command.join(" "));
    println!(
        "- each run: {} bytes in {}-byte messages, group {GROUP_V4}, a fresh port from {PORT_BASE}; median of {} \
         run(s); per-run timeout {} s; fan-out {} in tree mode",
        p.bytes,
        p.size,
        p.runs,
        p.timeout.as_secs(),
        p.fanout
    );
    println!();
    println!(
        "| net | TUs | loss % | config | MB/s (median) | ratio to raw UDP | TO CPU s/GB | TU CPU s/GB (median) | \
         TO peak RSS MB | repairs sent / data packets % | packets lost (iptables or injected) | ok |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
}

/// The rows of one configuration's runs: in the main table, and in the data-phase table.
fn rows(p: &Plan, tus: usize, loss: f64, config: &str, runs: &[Result<Sample, String>], udp_mbps: f64) -> [String; 2] {
    let done: Vec<&Sample> = runs.iter().filter_map(|r| r.as_ref().ok()).collect();
    let med = |f: fn(&Sample) -> f64| median(done.iter().map(|s| f(s)).collect());
    let mbps = med(|s| s.mbps);
    let rss = done.iter().map(|s| s.to_rss_mb).fold(f64::NAN, f64::max);
    let why: Vec<String> = runs
        .iter()
        .filter_map(|r| match r {
            Err(e) => Some(e.clone()),
            Ok(s) => s.wrong.clone(),
        })
        .collect();
    let ok = match why.first() {
        None => "yes".to_string(),
        Some(w) => {
            // Keep the table a table.
            let w: String = w.replace('|', "/").chars().take(120).collect();
            format!("no ({}/{} runs): {w}", why.len(), runs.len())
        }
    };
    let cell = format!("| {} | {tus} | {} | {config} |", p.net, show(loss, if loss.fract() == 0.0 { 0 } else { 1 }));
    let main = format!(
        "{cell} {} | {} | {} | {} | {} | {} | {} | {ok} |",
        show(mbps, 1),
        show(mbps / udp_mbps, 2),
        show(med(|s| s.to_cpu_per_gb), 2),
        show(med(|s| s.tu_cpu_per_gb), 2),
        show(rss, 1),
        show(med(|s| s.repair_pct), 2),
        show(med(|s| s.lost), 0),
    );
    let phase = format!(
        "{cell} {} | {} | {} |",
        show(med(|s| s.send_mbps), 1),
        show(med(|s| s.slowest_tu_mbps), 1),
        show(med(|s| s.end_secs), 3)
    );
    [main, phase]
}

fn progress(what: &str, r: &Result<Sample, String>) {
    match r {
        Ok(s) => eprintln!(
            "    {what}: {:.1} MB/s{}",
            s.mbps,
            s.wrong.as_ref().map_or(String::new(), |w| format!(" WRONG {w}"))
        ),
        Err(e) => eprintln!("    {what}: FAILED: {e}"),
    }
}

fn matrix(a: &Args) -> Result<bool, String> {
    let p = plan(a)?;
    catch_signals();
    let topo = Topology::new(&p.net, p.split_gso)?;
    print_header(&p);
    let started = Instant::now();
    let mut port_counter = 0u16;
    let mut next_port = || {
        let port = PORT_BASE + port_counter;
        port_counter = (port_counter + 1) % PORT_SPAN;
        port
    };
    let mut all_ok = true;
    let mut phase_rows = vec![];
    for &tus in &p.tus {
        for &loss in &p.losses {
            topo.set_loss(loss)?;
            // Per configuration (raw UDP first, then each --tco): its runs.
            let configs: Vec<(bool, bool)> =
                p.trees.iter().flat_map(|&t| p.keys.iter().map(move |&k| (t, k))).collect();
            let mut results: Vec<Vec<Result<Sample, String>>> = vec![vec![]; configs.len() + 1];
            for run in 0..p.runs {
                eprintln!("{} TUs, loss {loss} %, run {}/{}", tus, run + 1, p.runs);
                let r = run_udp(&p, &topo, tus, next_port());
                progress("raw UDP", &r);
                results[0].push(r);
                for (c, &(tree, keyed)) in configs.iter().enumerate() {
                    let r = run_ectp(&p, &topo, tus, loss, tree, keyed, next_port());
                    progress(config_name(&p, tree, keyed).as_str(), &r);
                    results[c + 1].push(r);
                }
                if INTERRUPTED.load(Ordering::Relaxed) {
                    return Err("interrupted".into());
                }
            }
            let udp = median(results[0].iter().filter_map(|r| r.as_ref().ok()).map(|s| s.mbps).collect());
            let names =
                std::iter::once("raw UDP".to_string()).chain(configs.iter().map(|&(t, k)| config_name(&p, t, k)));
            for (name, runs) in names.zip(&results) {
                let [main, phase] = rows(&p, tus, loss, &name, runs, udp);
                println!("{main}");
                phase_rows.push(phase);
            }
            all_ok &= results.iter().flatten().all(|r| r.as_ref().is_ok_and(|s| s.wrong.is_none()));
        }
    }
    println!("\nThe data phase alone (medians), without the end of the connection:\n");
    println!(
        "| net | TUs | loss % | config | TO (sender) MB/s, msendm loop | slowest TU (receiver) MB/s, first to last \
         message | TO s in mterminate after the last msendm |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &phase_rows {
        println!("{r}");
    }
    print_notes(&p);
    eprintln!("done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(all_ok)
}

fn config_name(p: &Plan, tree: bool, keyed: bool) -> String {
    let name = if tree { format!("ECTP tree (fan-out {})", p.fanout) } else { "ECTP flat".into() };
    if keyed { format!("{name}, keyed") } else { name }
}

fn print_notes(p: &Plan) {
    println!();
    println!(
        "MB/s: 10^6 bytes/s. ECTP: bytes / TO time from the first msendm to the return of mterminate (which waits \
         until every TU acknowledged everything). Raw UDP: the median receiver's bytes received / time from its first \
         to its last datagram (the sender sends as fast as it can; losses are not repaired)."
    );
    println!(
        "CPU s/GB: user+system CPU of the process per 10^9 bytes (sent for the TO / raw UDP sender, received for a \
         TU / receiver). Repairs: RDATA / DATA packets the TO sent, read just before mterminate."
    );
    if p.net == "lo" {
        println!(
            "Packets lost: ECTP, datagrams the TUs dropped on purpose (ECTP_RX_LOSS); raw UDP, datagrams its \
             receivers missed (socket buffer overflow)."
        );
        if p.losses.iter().any(|&l| l > 0.0) {
            println!("Loss on lo is injected in the TUs only (ECTP_RX_LOSS): raw UDP has no loss applied.");
        }
    } else {
        println!(
            "Packets lost: ECTP, UDP packets iptables dropped in the receivers' namespaces (data, repairs and \
             control); raw UDP, datagrams its receivers missed (iptables and socket buffer overflow)."
        );
        if p.split_gso {
            println!("--split-gso: the hosts split UDP GSO messages, so iptables dropped single datagrams.");
        } else {
            println!(
                "The library sends with UDP GSO: a GSO message crosses the veth pairs as one packet, and iptables \
                 drops it whole (up to 64 datagrams; --split-gso drops single datagrams)."
            );
        }
    }
}

#[cfg(test)]
mod tests {
    //! The checks a TU makes (`cargo test --example bench`).
    use super::*;

    fn msg(i: u64, len: usize) -> Vec<u8> {
        let mut m = message_buffer(len);
        stamp(&mut m, i);
        m
    }

    #[test]
    fn a_stamped_message_gives_its_index_back() {
        for len in [1, 7, 8, 9, 1400] {
            let i = 0x0102_0304_0506_0708u64 & (u64::MAX >> (64 - 8 * len.min(8) as u32));
            assert_eq!(message_index(&msg(i, len)), Some(i), "len {len}");
        }
        let mut m = msg(5, 100);
        m[99] ^= 1;
        assert_eq!(message_index(&m), None, "a wrong last byte");
    }

    #[test]
    fn check_counts_gaps_duplicates_and_bad_lengths() {
        let mut c = Check { size: Some(100), ..Check::default() };
        for i in [0, 1, 3, 3, 2] {
            c.message(&msg(i, 100), 0);
        }
        assert_eq!((c.gaps, c.duplicates, c.bad), (1, 2, 0));
        c.message(&msg(4, 50), 0); // a short one: only the last may be
        c.message(&msg(5, 100), 0);
        assert_eq!(c.bad, 1);
        c.finish(100 * 8);
        assert_eq!(c.gaps, 1 + 2, "messages 6 and 7 never came");
        assert!(!c.ok(None));

        let mut good = Check::default();
        for i in 0..3 {
            good.message(&msg(i, if i == 2 { 40 } else { 100 }), 0);
        }
        good.finish(240);
        assert!(good.ok(Some(240)));
        assert!(!good.ok(Some(241)));
    }

    #[test]
    fn sizes_take_suffixes() {
        assert_eq!(parse_bytes("1400"), Some(1400));
        assert_eq!(parse_bytes("64K"), Some(64 << 10));
        assert_eq!(parse_bytes("16M"), Some(16 << 20));
        assert_eq!(parse_bytes("1g"), Some(1 << 30));
        assert_eq!(parse_bytes("M"), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, f64::NAN]), 2.0);
        assert!(median(vec![]).is_nan());
    }
}
