//! The control tree across real hosts (issue 6, "Real sockets"): three
//! network namespaces on a bridge, the TO in the first, two repair agents in
//! the second, four leaves in the third, and iptables dropping 2% of every
//! host's incoming UDP. The TO streams while iptables counts what reaches it
//! from the leaves' host (nothing: their ACKs go to their RA, which the count
//! on the RAs' host shows); then one RA is killed with SIGKILL mid-stream,
//! and its leaves must rebind and deliver every byte, identical, in order.
//! IPv4 and IPv6.
//!
//! Needs root, `ip`, `iptables` and `ip6tables`; skips otherwise. The roles
//! run in child processes (`ip netns exec <ns> <this binary> --exact role_...`).

mod common;
use common::netns::{Net, can_build};
use common::*;
use ectp::ffi::*;
use libc::{c_int, socklen_t};
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Messages the TO streams, 1..=12000 bytes each.
const COUNT: usize = 600;

fn msg(i: usize) -> Vec<u8> {
    pattern(1 + (i * 7919) % 12000, 0x7ee + i as u32)
}

fn addrs() -> (SocketAddr, SocketAddr) {
    let owner: IpAddr = env_str("ECTP_OWNER").parse().unwrap();
    let port: u16 = env_num("ECTP_PORT");
    let group: IpAddr = if owner.is_ipv6() { "ff15::7ee".parse().unwrap() } else { "239.255.78.8".parse().unwrap() };
    (SocketAddr::new(owner, 0), SocketAddr::new(group, port))
}

static LEFT: Mutex<Vec<(u32, c_int)>> = Mutex::new(Vec::new());

extern "C" fn on_leave(_sd: c_int, user_id: u32, reason: c_int) {
    LEFT.lock().unwrap().push((user_id, reason));
}

// ----- roles (child processes inside the namespaces) -----

/// The TO: a tree; streams COUNT messages, paced, once told; reports the
/// departures its leave callback saw; terminates when told.
#[test]
#[ignore = "helper: a child process role, run by the netns_tree tests"]
fn role_tree_to() {
    if !is_role("tree_to") {
        return;
    }
    let (local, group) = addrs();
    let sd = new_socket(local);
    for (o, v) in [(ECTP_TCO, ECTP_TCO_TREE), (ECTP_HGT, 200), (ECTP_FDN, 3), (ECTP_RXT, 40), (ECTP_RETRIES, 20)] {
        assert_eq!(set_int(sd, o, v), 0);
    }
    let cb: ectp_leave_callback = Some(on_leave);
    let r = msetsockopt(
        sd,
        SOL_ECTP,
        ECTP_LEAVE_CALLBACK,
        (&cb as *const ectp_leave_callback).cast(),
        size_of::<ectp_leave_callback>() as socklen_t,
    );
    assert_eq!(r, 0);
    create_on(sd, local, group).expect("mcreate");
    tell("ready");
    assert_eq!(hear(), "stream");
    for i in 0..COUNT {
        let m = msg(i);
        assert_eq!(send(sd, &m), m.len() as isize, "msendm {i}: errno {}", errno());
        thread::sleep(Duration::from_millis(4));
    }
    tell("sent");
    assert_eq!(hear(), "report");
    for (id, reason) in LEFT.lock().unwrap().iter() {
        tell(&format!("left {id} {reason}"));
    }
    tell(&format!("members {}", get_int(sd, ECTP_MEMBERS).unwrap()));
    tell("reported");
    assert_eq!(hear(), "terminate");
    assert_eq!(mterminate(sd), 0);
    tell("terminated");
}

/// A TU (an RA when ECTP_RA_ROLE=1): reports its id and parent, then checks
/// the whole stream, reporting progress, and its end; reports its parent again.
#[test]
#[ignore = "helper: a child process role, run by the netns_tree tests"]
fn role_tree_tu() {
    if !is_role("tree_tu") {
        return;
    }
    let (owner, group) = addrs();
    let owner = SocketAddr::new(owner.ip(), 0);
    let ra: c_int = env_num("ECTP_RA_ROLE");
    let tu = user(owner, group, &[(ECTP_RA, ra), (ECTP_MAX_CHILDREN, 2), (ECTP_RXT, 40), (ECTP_RETRIES, 20)])
        .unwrap_or_else(|(_, e)| panic!("mjoin: errno {e}"));
    let me = get_int(tu, ECTP_USER_ID).unwrap() as u32;
    tell(&format!("joined {me} parent {}", get_int(tu, ECTP_PARENT).unwrap() as u32));
    let received = Arc::new(AtomicUsize::new(0));
    let progress = {
        let received = received.clone();
        thread::spawn(move || {
            let mut last = 0;
            while last < COUNT {
                thread::sleep(Duration::from_millis(20));
                let now = received.load(Ordering::SeqCst);
                if now / 50 != last / 50 {
                    tell(&format!("at {}", now / 50 * 50));
                }
                last = now;
            }
        })
    };
    for i in 0..COUNT {
        let (got, info) = recv(tu, 1 << 16, 0).unwrap_or_else(|e| panic!("recv {i}: errno {e}"));
        assert_eq!(info.flags, 0, "flags of message {i}");
        assert!(got == msg(i), "message {i}: {} bytes, expected {}", got.len(), msg(i).len());
        received.store(i + 1, Ordering::SeqCst);
    }
    progress.join().unwrap();
    tell(&format!(
        "parent {} level {}",
        get_int(tu, ECTP_PARENT).unwrap() as u32,
        get_int(tu, ECTP_TREE_LEVEL).unwrap()
    ));
    tell("done");
    let (end, _) = recv(tu, 64, 0).unwrap_or_else(|e| panic!("end of connection: errno {e}"));
    assert!(end.is_empty(), "a message after the last one");
    tell("ended");
}

// ----- the test -----

fn tree_across_namespaces(v6: bool) {
    if !can_build() {
        println!("skipped: needs root, ip netns, iptables and ip6tables");
        return;
    }
    let subnet = if v6 { 0x79 } else { 78 };
    let net = match Net::new(if v6 { "T6" } else { "T4" }, 3, subnet, v6, "0.02") {
        Ok(n) => n,
        Err(e) => {
            println!("skipped: cannot build the namespaces ({e})");
            return;
        }
    };
    let (to_host, ra_host, leaf_host) = (0, 1, 2);
    net.count_from(to_host, leaf_host);
    net.count_from(ra_host, leaf_host);
    let t0 = Instant::now();
    let port = 7800 + (std::process::id() % 100) as u16 + if v6 { 100 } else { 0 };
    let env = |ra: bool| {
        vec![
            ("ECTP_PORT", port.to_string()),
            ("ECTP_OWNER", net.addr(to_host).to_string()),
            ("ECTP_RA_ROLE", u8::from(ra).to_string()),
        ]
    };
    let mut to = ChildRole::spawn(Some(&net.hosts[to_host]), "tree_to", &env(false));
    to.expect_line("ready", 20);
    // The RAs first, one after the other, then the leaves: two under each RA.
    let mut ras = Vec::new();
    let mut ra_ids = Vec::new();
    for _ in 0..2 {
        let ra = ChildRole::spawn(Some(&net.hosts[ra_host]), "tree_tu", &env(true));
        let l = ra.expect_line("joined", 20);
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(f[3], "0", "an RA under the TO: {l}");
        ra_ids.push(f[1].parse::<u32>().unwrap());
        ras.push(ra);
    }
    let mut leaves = Vec::new();
    let mut leaf_parent = Vec::new();
    for _ in 0..4 {
        let leaf = ChildRole::spawn(Some(&net.hosts[leaf_host]), "tree_tu", &env(false));
        let l = leaf.expect_line("joined", 20);
        let p: u32 = l.split_whitespace().nth(3).unwrap().parse().unwrap();
        assert!(ra_ids.contains(&p), "a leaf under an RA: {l} (RAs {ra_ids:?})");
        leaf_parent.push(p);
        leaves.push(leaf);
    }
    for id in &ra_ids {
        assert_eq!(leaf_parent.iter().filter(|p| *p == id).count(), 2, "two leaves under RA {id}");
    }
    let (to_before, ra_before) = (net.counted(to_host, leaf_host), net.counted(ra_host, leaf_host));
    to.say("stream");
    // Kill the first RA when its leaves are well into the stream.
    let victim = 0;
    let watch = leaf_parent.iter().position(|p| *p == ra_ids[victim]).unwrap();
    leaves[watch].expect_line("at 150", 30);
    let (to_mid, ra_mid) = (net.counted(to_host, leaf_host), net.counted(ra_host, leaf_host));
    ras[victim].kill();
    let killed = Instant::now();
    for (k, leaf) in leaves.iter().enumerate() {
        let l = leaf.expect_line("parent", 60);
        let p: u32 = l.split_whitespace().nth(1).unwrap().parse().unwrap();
        if leaf_parent[k] == ra_ids[victim] {
            assert_eq!(p, 0, "an orphan of the killed RA rebound to the TO: {l}");
        } else {
            assert_eq!(p, leaf_parent[k], "a leaf of the surviving RA kept it: {l}");
        }
        leaf.expect_line("done", 30);
    }
    ras[1].expect_line("done", 30);
    to.expect_line("sent", 30);
    to.say("report");
    let mut left = Vec::new();
    loop {
        let l = to.expect_line("", 10);
        if l == "reported" {
            break;
        }
        left.push(l);
    }
    assert_eq!(
        left.iter().filter(|l| l.starts_with("left")).cloned().collect::<Vec<_>>(),
        vec![format!("left {} {ECTP_LEAVE_FAILED}", ra_ids[victim])],
        "the killed RA reported failed, once"
    );
    assert!(left.contains(&"members 5".to_string()), "{left:?}");
    to.say("terminate");
    to.expect_line("terminated", 20);
    for c in leaves.iter().chain(&ras[1..]) {
        c.expect_line("ended", 20);
    }
    // What iptables saw: while the tree was whole, nothing from the leaves'
    // host reached the TO; their acknowledgements reached the RAs' host.
    let to_streaming = to_mid - to_before;
    let ra_streaming = ra_mid - ra_before;
    println!(
        "from the leaves' host while the tree was whole: {to_streaming} packets to the TO, {ra_streaming} to the RAs; \
         dropped by iptables: {} {} {}; failover and the rest in {:?}; all in {:?}",
        net.dropped(0),
        net.dropped(1),
        net.dropped(2),
        killed.elapsed(),
        t0.elapsed()
    );
    assert_eq!(to_streaming, 0, "leaves sent packets to the TO while their RA was up");
    assert!(ra_streaming > 50, "the leaves' ACKs reached their RAs: {ra_streaming}");
    assert!(net.dropped(2) > 0, "iptables really dropped packets");
    assert!(net.counted(to_host, leaf_host) > to_mid, "after the failover the orphans talk to the TO");
    for c in leaves.iter_mut().chain(ras[1..].iter_mut()) {
        assert!(c.wait(20).is_some_and(|s| s.success()), "a TU failed");
    }
    assert!(to.wait(20).is_some_and(|s| s.success()), "the TO failed");
}

#[test]
fn netns_tree_ipv4_rebinds_after_sigkill_of_an_ra() {
    tree_across_namespaces(false);
}

#[test]
fn netns_tree_ipv6_rebinds_after_sigkill_of_an_ra() {
    tree_across_namespaces(true);
}
