//! Several hosts on one machine: network namespaces joined by a bridge, with
//! iptables (ip6tables) dropping a share of each host's incoming UDP and
//! counting what arrives from a given source. Needs root, `ip` and
//! `iptables`; [`Net::new`] says why not when it cannot.

use std::net::IpAddr;
use std::process::Command;

/// Whether `tool` is on the PATH (or in /sbin, /usr/sbin).
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).chain(["/sbin".into(), "/usr/sbin".into()]).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Run a command; its standard output, or what went wrong.
pub fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether this process may build namespaces at all (root, ip, iptables).
pub fn can_build() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && have("ip") && have("iptables") && have("ip6tables")
}

/// Namespaces ectp<tag><host><pid>, host k holding address `addr(k)` on a
/// veth whose peer is in a bridge of its own namespace. Deleted when dropped.
pub struct Net {
    /// The hosts' namespaces, in order.
    pub hosts: Vec<String>,
    all: Vec<String>,
    /// IPv6 (fd<subnet>::k/64) rather than IPv4 (10.<subnet>.0.k/24).
    pub v6: bool,
    subnet: u8,
}

impl Net {
    /// `hosts` hosts on subnet `subnet`, each dropping `drop` (a probability,
    /// "0" for none) of its incoming UDP.
    pub fn new(tag: &str, hosts: usize, subnet: u8, v6: bool, drop: &str) -> Result<Net, String> {
        let pid = std::process::id();
        let names: Vec<String> = (0..hosts).map(|k| format!("ectp{tag}{k}x{pid}")).collect();
        let sw = format!("ectp{tag}S{pid}");
        let mut net = Net { hosts: vec![], all: vec![], v6, subnet };
        for ns in names.iter().chain([&sw]) {
            run(&["ip", "netns", "add", ns])?;
            net.all.push(ns.clone());
        }
        net.hosts = names.clone();
        run(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])?;
        run(&["ip", "-n", &sw, "link", "set", "br0", "up"])?;
        for (k, ns) in names.iter().enumerate() {
            let port = format!("p{k}");
            run(&["ip", "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns])?;
            run(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            let a = net.addr(k).to_string();
            if v6 {
                run(&["ip", "-n", ns, "-6", "addr", "add", &format!("{a}/64"), "dev", "eth0", "nodad"])?;
            } else {
                run(&["ip", "-n", ns, "addr", "add", &format!("{a}/24"), "dev", "eth0"])?;
            }
            run(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
            if v6 {
                run(&["ip", "-n", ns, "-6", "route", "add", "ff00::/8", "dev", "eth0", "table", "local"]).ok();
            } else {
                run(&["ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
            }
            if drop != "0" {
                net.iptables(
                    ns,
                    &[
                        "-A",
                        "INPUT",
                        "-p",
                        "udp",
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        drop,
                        "-j",
                        "DROP",
                    ],
                )?;
            }
        }
        Ok(net)
    }

    /// The namespace of the bridge; host k's link is its port `p<k>` there,
    /// whose egress is the traffic towards host k.
    #[allow(dead_code)]
    pub fn switch(&self) -> &str {
        self.all.last().map_or("", |s| s.as_str())
    }

    /// Host `k`'s address.
    pub fn addr(&self, k: usize) -> IpAddr {
        if self.v6 {
            format!("fd{:02x}::{}", self.subnet, k + 1).parse().unwrap()
        } else {
            format!("10.{}.0.{}", self.subnet, k + 1).parse().unwrap()
        }
    }

    fn iptables(&self, ns: &str, args: &[&str]) -> Result<String, String> {
        let tool = if self.v6 { "ip6tables" } else { "iptables" };
        let mut cmd = vec!["ip", "netns", "exec", ns, tool, "-t", "filter"];
        cmd.extend_from_slice(args);
        run(&cmd)
    }

    /// Count, on host `at`, the UDP packets arriving from host `from`
    /// (before the loss rule drops any).
    pub fn count_from(&self, at: usize, from: usize) {
        let src = self.addr(from).to_string();
        self.iptables(&self.hosts[at], &["-I", "INPUT", "1", "-s", &src, "-p", "udp"])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn counters(&self, at: usize) -> Vec<(String, u64)> {
        let out = self.iptables(&self.hosts[at], &["-L", "INPUT", "-v", "-n", "-x"]).unwrap_or_else(|e| panic!("{e}"));
        out.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((l.to_string(), f.first()?.parse::<u64>().ok()?))
            })
            .collect()
    }

    /// UDP packets that arrived on host `at` from host `from` (see [`Net::count_from`]).
    pub fn counted(&self, at: usize, from: usize) -> u64 {
        let src = self.addr(from).to_string();
        self.counters(at)
            .iter()
            .filter(|(l, _)| !l.contains("DROP") && l.split_whitespace().any(|w| w == src))
            .map(|(_, n)| n)
            .sum()
    }

    /// Packets dropped so far by the loss rule on host `at`.
    pub fn dropped(&self, at: usize) -> u64 {
        self.counters(at).iter().filter(|(l, _)| l.contains("DROP") && l.contains("statistic")).map(|(_, n)| n).sum()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.all.iter().rev() {
            if let Err(e) = run(&["ip", "netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}
