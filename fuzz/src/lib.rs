//! What the fuzz targets run: the input is decoded into a script of
//! datagrams (raw bytes, or well-formed packets with fields chosen near the
//! node's own sequence numbers and identifiers, so that the fuzzer reaches
//! deep into the state machines instead of failing the checksum), timer
//! runs, application calls and replays of what the node itself sent.
//!
//! A target fails on a panic, on a node that keeps emitting without end,
//! and on a parsed packet that does not write back to itself.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ectp::proto::{Config, MAX_DATAGRAM, Node, Owner, Rng, Security, User};
use ectp::wire::{
    AckInfo, Auth, ConnectionParams, Echo, Elements, Header, KeyKind, KeyShare, Membership, Packet, PacketType, Psn,
    RateInfo, RateReport, Ro, Tco, sealed_parts,
};

/// Most datagrams a node may emit after one input step: far more than any
/// legitimate burst of a small window, far less than a loop without end.
const MAX_BURST: usize = 20_000;
/// Most steps of one input (keeps each run short).
const MAX_STEPS: usize = 3000;

const OWNER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)), 5000);

fn addr(i: u8) -> SocketAddr {
    match i % 6 {
        0 => OWNER,
        1 => SocketAddr::from(([10, 0, 0, 1], 6000)),
        2..=4 => SocketAddr::from(([10, 0, 0, 2 + i % 3], 40000)),
        _ => SocketAddr::from(([192, 0, 2, 9], 7)),
    }
}

/// Parse the bytes as they are, and again with their length and checksum
/// fields made right (so that the element parser sees every input); what
/// parses writes back to the same packet.
pub fn parse_round_trip(data: &[u8]) {
    round_trip(data);
    if data.len() >= 16 && data.len() - 16 <= usize::from(u16::MAX) {
        let mut fixed = data.to_vec();
        fixed[12..14].copy_from_slice(&((data.len() - 16) as u16).to_be_bytes());
        fixed[2..4].copy_from_slice(&[0, 0]);
        let sum = ectp::wire::checksum::internet_checksum(&fixed);
        fixed[2..4].copy_from_slice(&sum.to_be_bytes());
        round_trip(&fixed);
    }
}

fn round_trip(data: &[u8]) {
    let Ok(p) = Packet::parse(data) else { return };
    let mut buf = vec![0u8; data.len() + 64];
    let n = p.emit(&mut buf).expect("a parsed packet can be written");
    let q = Packet::parse(&buf[..n]).expect("what was written parses");
    assert_eq!((p.header, p.elements, p.data), (q.header, q.elements, q.data));
    assert_eq!(n, data.len(), "same length");
    if p.elements.auth.is_some() {
        let mut copy = data.to_vec();
        assert!(sealed_parts(&mut copy, &p).is_some());
    }
}

/// The fuzzer's bytes, read front to back; zeros once they run out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn byte(&mut self) -> u8 {
        self.u8().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b.to_vec()
    }
}

/// A small, quick configuration, keyed or not.
fn config(inp: &mut Input<'_>) -> Config {
    let b = inp.byte();
    Config {
        tco: if b & 1 == 0 { Tco::Flat } else { Tco::Tree },
        ro: [Ro::Reliable, Ro::SemiReliable, Ro::Unreliable][usize::from(b >> 1) % 3],
        ra: b & 8 != 0,
        ask_joins: b & 16 != 0,
        ask_tokens: b & 32 != 0,
        mss: 200,
        window: 32,
        rx_window: 32,
        hgt: Duration::from_millis(100),
        rxt: Duration::from_millis(20),
        fdn: 2,
        retries: 3,
        cct: if b & 64 != 0 { Duration::from_millis(200) } else { Duration::ZERO },
        security: (b & 128 != 0).then(|| Security::new(b"the fuzzer's group key, 32 bytes").unwrap()),
        ..Config::default()
    }
}

/// What a node knows that well-formed forgeries draw their fields from.
#[derive(Default)]
struct Seen {
    conn: u32,
    psn: u32,
    ids: Vec<u32>,
    sent: Vec<(SocketAddr, Vec<u8>)>,
}

impl Seen {
    /// Note what a node sent.
    fn note(&mut self, bytes: &[u8]) {
        if let Ok(p) = Packet::parse(bytes) {
            self.conn = p.header.connection_id;
            if matches!(p.header.packet_type, PacketType::Data | PacketType::Ndata | PacketType::Hb) {
                self.psn = p.header.psn;
            }
            if let Some(m) = p.elements.membership
                && !self.ids.contains(&m.member_id)
                && self.ids.len() < 16
            {
                self.ids.push(m.member_id);
            }
        }
        if self.sent.len() < 64 {
            self.sent.push((OWNER, bytes.to_vec()));
        }
    }

    fn id(&self, inp: &mut Input<'_>) -> u32 {
        let b = inp.byte();
        match self.ids.get(usize::from(b) % (self.ids.len() + 2)) {
            Some(&id) => id,
            None if b & 1 == 0 => 0,
            None => inp.u32(),
        }
    }

    fn psn(&self, inp: &mut Input<'_>) -> u32 {
        let base = Psn(self.psn.max(1));
        match inp.byte() % 5 {
            0 => base.add(u32::from(inp.byte())).0,
            1 => base.sub(u32::from(inp.byte())).0,
            2 => base.add(u32::from(inp.u16()) * 64).0,
            3 => 0,
            _ => inp.u32(),
        }
    }
}

/// A well-formed packet with fields from `inp`, near what `seen` knows.
fn packet(inp: &mut Input<'_>, seen: &Seen) -> Vec<u8> {
    let ty = PacketType::ALL[usize::from(inp.byte()) % PacketType::ALL.len()];
    let which = inp.byte();
    let header = Header {
        packet_type: ty,
        connection_id: if which & 1 == 0 { seen.conn } else { inp.u32() },
        psn: seen.psn(inp),
        flag: which & 2 != 0,
        token_id: if which & 4 != 0 { inp.byte() % 4 } else { 0 },
    };
    let mut e = Elements::default();
    let bits = inp.byte();
    if bits & 1 != 0 {
        let b = inp.byte();
        e.connection = Some(ConnectionParams {
            tco: if b & 1 == 0 { Tco::Flat } else { Tco::Tree },
            ro: [Ro::Reliable, Ro::SemiReliable, Ro::Unreliable][usize::from(b >> 1) % 3],
            agn: inp.byte(),
            fdn: inp.byte(),
            mss: inp.u16(),
            hgt_ms: u32::from(inp.u16()),
            window: u32::from(inp.u16()) + 1,
            cc: b & 8 != 0,
        });
    }
    if bits & 2 != 0 {
        let mut a = AckInfo::new(seen.psn(inp), u32::from(inp.byte()));
        a.stable = seen.psn(inp);
        a.lsn_lost = inp.byte() & 1 != 0;
        let n = usize::from(inp.byte());
        for i in 0..n {
            a.set_received(i, inp.byte() & 1 != 0);
        }
        e.ack = Some(a);
    }
    if bits & 4 != 0 {
        e.membership = Some(Membership {
            tree_level: inp.byte(),
            child_id: inp.u16(),
            member_id: seen.id(inp),
            parent_id: seen.id(inp),
        });
    }
    if bits & 8 != 0 {
        e.timestamp = Some(u64::from(inp.u32()));
    }
    if bits & 16 != 0 {
        e.address = Some(addr(inp.byte()));
    }
    if bits & 32 != 0 {
        let mut salt = [0u8; 16];
        salt.iter_mut().for_each(|b| *b = inp.byte());
        e.key = Some(KeyShare { salt, public: [inp.byte(); 32] });
    }
    if bits & 64 != 0 {
        let kind = KeyKind::from_u8(inp.byte() % 4 + 1).unwrap_or(KeyKind::Group);
        e.auth = Some(Auth { kind, sender: seen.id(inp), counter: u64::from(inp.u32()), tag: [inp.byte(); 16] });
    }
    if bits & 128 != 0 {
        // TFMCC: the TO's Rate element, a receiver's report, or both.
        let which = inp.byte();
        if which & 1 != 0 {
            let echo = (which & 4 != 0).then(|| Echo { member: seen.id(inp), timestamp: inp.u32(), delay: inp.u32() });
            e.rate = Some(RateInfo {
                slow_start: which & 8 != 0,
                round: inp.byte(),
                max_rtt_us: u32::from(inp.u16()) * 100,
                rate: u64::from(inp.u32()) * 16,
                suppress: u64::from(inp.u32()) * 16,
                clr: seen.id(inp),
                echo,
            });
        }
        if which & 2 != 0 {
            e.report = Some(RateReport {
                loss: which & 16 != 0,
                measured: which & 32 != 0,
                round: inp.byte(),
                member: seen.id(inp),
                calc: u64::from(inp.u32()) * 16,
                recv: u64::from(inp.u32()) * 16,
                p: inp.u32(),
                rtt_us: inp.u32(),
                timestamp: inp.u32(),
                delay: inp.u32(),
            });
        }
    }
    let len = match inp.byte() % 4 {
        0 => 0,
        1 => usize::from(inp.byte()),
        2 => usize::from(inp.u16() % 1500),
        _ => 96,
    };
    let data = inp.bytes(len);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    match (Packet { header, elements: e, data: &data }).emit(&mut buf) {
        Ok(n) => buf[..n].to_vec(),
        Err(_) => Vec::new(),
    }
}

/// Drain what the node sends now, noting it; fails on a burst without end.
fn drain(node: &mut Node, now: Instant, buf: &mut [u8], seen: &mut Seen) {
    for _ in 0..MAX_BURST {
        let Some(t) = node.poll_transmit(now, buf) else {
            while node.poll_event().is_some() {}
            return;
        };
        seen.note(&buf[..t.len]);
    }
    panic!("the node emits without end");
}

/// Run `node` through the script in `inp`.
fn run(mut node: Node, inp: &mut Input<'_>, mut now: Instant) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut seen = Seen::default();
    drain(&mut node, now, &mut buf, &mut seen);
    for _ in 0..MAX_STEPS {
        let Some(op) = inp.u8() else { break };
        match op % 10 {
            0 => {
                let from = addr(inp.byte());
                let len = usize::from(inp.u16() % 2048);
                let raw = inp.bytes(len);
                node.handle(now, from, &raw);
            }
            1..=4 => {
                let from = addr(inp.byte());
                let p = packet(inp, &seen);
                node.handle(now, from, &p);
            }
            5 => {
                now += Duration::from_millis(u64::from(inp.byte()) * 4);
                if node.poll_timeout().is_some_and(|t| t <= now) {
                    node.handle_timeout(now);
                }
            }
            6 => {
                // Straight to the next deadline.
                if let Some(t) = node.poll_timeout() {
                    now = now.max(t);
                    node.handle_timeout(now);
                }
            }
            7 => app_call(&mut node, inp, now, &seen),
            8 => {
                // Its own packets back, from anywhere.
                let i = usize::from(inp.byte());
                if let Some((_, p)) = seen.sent.get(i % seen.sent.len().max(1)).cloned() {
                    node.handle(now, addr(inp.byte()), &p);
                }
            }
            _ => {
                // A copy of an earlier packet with one byte changed.
                let i = usize::from(inp.byte());
                if let Some((_, mut p)) = seen.sent.get(i % seen.sent.len().max(1)).cloned() {
                    let at = usize::from(inp.u16()) % p.len().max(1);
                    if let Some(b) = p.get_mut(at) {
                        *b ^= inp.byte() | 1;
                    }
                    node.handle(now, addr(inp.byte()), &p);
                }
            }
        }
        drain(&mut node, now, &mut buf, &mut seen);
        if let Node::Owner(o) = &mut node {
            while o.recv().is_some() {}
        }
        if let Node::User(u) = &mut node {
            while u.recv().is_some() {}
        }
    }
}

fn app_call(node: &mut Node, inp: &mut Input<'_>, now: Instant, seen: &Seen) {
    let b = inp.byte();
    match node {
        Node::Owner(o) => match b % 6 {
            0 | 1 => {
                let len = usize::from(inp.u16() % 3000) + 1;
                let _ = o.send(&vec![b; len]);
            }
            2 => {
                let id = seen.id(inp);
                let _ = o.confirm_join(id, b & 8 != 0, now);
            }
            3 => {
                let id = seen.id(inp);
                let _ = o.confirm_token(id, b & 8 != 0);
            }
            4 => {
                let id = seen.id(inp);
                let _ = o.eject(id, now);
            }
            _ => o.terminate(),
        },
        Node::User(u) => match b % 5 {
            0 | 1 => {
                let len = usize::from(inp.u16() % 3000) + 1;
                let _ = u.send(&vec![b; len]);
            }
            2 => {
                let _ = u.request_token(now);
            }
            3 => {
                let _ = u.return_token();
            }
            _ => u.leave(),
        },
    }
}

/// A whole TO.
pub fn run_owner(data: &[u8]) {
    let mut inp = Input(data);
    let cfg = config(&mut inp);
    let now = Instant::now();
    let owner = Owner::new(cfg, OWNER, &mut Rng::new(u64::from(inp.byte())), now);
    run(owner.into(), &mut inp, now);
}

/// A whole TU.
pub fn run_user(data: &[u8]) {
    let mut inp = Input(data);
    let cfg = config(&mut inp);
    let now = Instant::now();
    let user = User::new(cfg, OWNER, Rng::new(u64::from(inp.byte())), now);
    run(user.into(), &mut inp, now);
}
