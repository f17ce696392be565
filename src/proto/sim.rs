//! A deterministic simulation of one TO and any number of TUs in virtual time.
//!
//! The nodes are the real sans-IO state machines (one [`Node`] type for the
//! TO and every TU); only the network and the clock are fake. Every node has
//! a fake unicast address that never touches a socket: the TO is
//! 10.0.0.1:5000, TU `i` is 10.x.y.z:40000 with x.y.z = i + 2 written in
//! base 256 ([`user_addr`]). A TU is a member of the multicast group from
//! its start until it leaves or is killed; [`Dest::Group`] reaches the
//! members at the time of arrival.
//!
//! Time is a value: `now` starts at one [`Instant`] captured once per process
//! and moves only when [`Sim::run_until`] or [`Sim::run_for`] jump to the next
//! thing that happens (a datagram arriving or a node's deadline). Nothing here
//! sleeps. Only the nodes that something happened to are visited in a step,
//! so a step costs what happens in it, not the number of nodes: trees of
//! 100,000 TUs run (see `examples/scale.rs`).
//!
//! The network delays every datagram by a fixed one-way delay, keeps each
//! link in FIFO order, and loses datagrams on purpose: by a seeded random
//! probability per direction and packet type, by "drop the next N of type X",
//! or by a test's own filter. The same seed always gives the same run;
//! [`Sim::trace_hash`] summarizes a run to compare two of them.
//!
//! Each [`Sim::step`] follows the sans-IO call order of the [module docs](super):
//! deliver the due datagrams (`handle`), run the due timers
//! (`handle_timeout`), hand the TO's events to the test (answering them if
//! told to), drain `poll_transmit` into the network, and collect the whole
//! messages every node delivers.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{Config, Dest, Event, Incoming, JoinStatus, MAX_DATAGRAM, Message, Node, Owner, Rng, TokenStatus, User};
use crate::wire::{Header, Packet, PacketType};

/// The TO's fake unicast address (its IP and the group port).
pub const OWNER_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 5000);

/// TU `i`'s fake unicast address (for up to 2^24 - 3 TUs).
pub fn user_addr(i: usize) -> SocketAddr {
    let host = u32::try_from(i + 2).ok().filter(|h| *h < (1 << 24) - 1).expect("at most 2^24 - 3 simulated TUs");
    let [_, a, b, c] = host.to_be_bytes();
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, a, b, c)), 40000)
}

/// An address no node has: a stranger on the network.
pub const STRANGER_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 255, 255, 255)), 6666);

/// The one instant every simulation starts at, so that runs compare equal.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Which way a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Sent by the TO (multicast or unicast to a TU).
    Forward,
    /// Sent by a TU (to the TO, or to another TU of the tree).
    Backward,
}

/// How the harness answers the TO's join or token requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `confirm_*(.., true)` at once.
    Accept,
    /// `confirm_*(.., false)` at once.
    Refuse,
    /// Leave the event in [`Sim::events`] for the test to answer.
    Manual,
}

/// One datagram on one link, as the loss rules see it.
#[derive(Debug)]
pub struct Wire<'a> {
    /// Source address.
    pub from: SocketAddr,
    /// The receiver this copy goes to.
    pub to: SocketAddr,
    /// Sent to the group rather than unicast.
    pub group: bool,
    /// Its header, if it parses.
    pub header: Option<Header>,
    /// The whole datagram.
    pub bytes: &'a [u8],
}

impl Wire<'_> {
    /// Its packet type, if it parses.
    pub fn packet_type(&self) -> Option<PacketType> {
        self.header.map(|h| h.packet_type)
    }
}

/// A datagram a node sent, as the harness logged it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentRecord {
    /// Virtual time since the start.
    pub at: Duration,
    /// The sending node.
    pub from: SocketAddr,
    /// Where it was sent.
    pub dest: Dest,
    /// Its type.
    pub packet_type: PacketType,
    /// The header's F flag.
    pub flag: bool,
    /// The header's PSN.
    pub psn: u32,
    /// The header's token id.
    pub token_id: u8,
    /// Datagram length.
    pub len: usize,
    /// Dropped as a whole by a `drop_next` rule (no receiver got it).
    pub dropped: bool,
}

type Filter = Box<dyn FnMut(&Wire<'_>) -> bool>;

/// A node of the simulation: the TO or TU `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeId {
    /// The TO.
    Owner,
    /// TU `i` (its index in [`Sim::users`]).
    User(usize),
}

#[derive(Debug)]
enum Target {
    One(SocketAddr),
    Group,
}

struct InFlight {
    at: Instant,
    /// Sending order: with a fixed delay it keeps every link FIFO.
    seq: u64,
    from: SocketAddr,
    to: Target,
    header: Option<Header>,
    bytes: Rc<[u8]>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// One simulated node and what its application saw.
pub struct SimNode {
    /// The state machine under test.
    pub node: Node,
    /// Its fake unicast address.
    pub addr: SocketAddr,
    /// A member of the multicast group (TUs, until they leave or die).
    pub in_group: bool,
    /// Running: a killed node gets nothing, sends nothing, has no timers.
    pub alive: bool,
    /// Whole messages `recv` returned, in order (kept when [`Sim::keep_messages`]).
    pub delivered: Vec<Message>,
    /// How many messages `recv` returned, and a digest of their bytes in order.
    pub delivered_count: usize,
    /// See `delivered_count`.
    pub delivered_digest: u64,
    /// Control packets (not DATA or RDATA) handed to this node.
    pub ctl_received: u64,
    /// Its application reads what the node delivers (false: it stopped).
    pub reading: bool,
    /// Its deadline as the harness last registered it.
    deadline: Option<Instant>,
}

impl SimNode {
    fn new(node: Node, addr: SocketAddr, in_group: bool) -> SimNode {
        SimNode {
            node,
            addr,
            in_group,
            alive: true,
            delivered: Vec::new(),
            reading: true,
            delivered_count: 0,
            delivered_digest: FNV_OFFSET,
            ctl_received: 0,
            deadline: None,
        }
    }

    /// The TU of this node (panics for the TO).
    pub fn user(&self) -> &User {
        self.node.user().expect("a TU")
    }
}

/// One TO, many TUs and the network between them.
pub struct Sim {
    /// Virtual now: what every call into a node is given.
    pub now: Instant,
    seed: u64,
    owner: Option<SimNode>,
    /// The TUs, in the order they were added.
    pub users: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, NodeId>,
    /// Every event the TO reported, answered by the harness or not (see
    /// `answer_joins`, `answer_tokens`).
    pub events: Vec<Event>,
    /// What the TO's `recv` returned, in order.
    pub incoming: Vec<Incoming>,
    /// How join requests are answered (when the TO's `ask_joins` is set).
    pub answer_joins: Answer,
    /// How token requests are answered (when the TO's `ask_tokens` is set).
    pub answer_tokens: Answer,
    /// One-way delay of every link.
    pub delay: Duration,
    /// Keep every delivered message in [`SimNode::delivered`] (large runs
    /// keep only the count and digest).
    pub keep_messages: bool,
    /// Log every datagram sent in [`Sim::sent`] (large runs only count them).
    pub record_sent: bool,
    /// A group key given to every node added whose configuration has none.
    pub key: Option<super::Security>,
    net: BinaryHeap<Reverse<InFlight>>,
    next_seq: u64,
    timers: BinaryHeap<Reverse<(Instant, NodeId)>>,
    dirty: Vec<NodeId>,
    loss_rng: Rng,
    /// Random loss per delivery: (direction, packet type or any, probability).
    loss: Vec<(Direction, Option<PacketType>, f64)>,
    /// Drop the next N sends of a type, whole (every receiver of a group send).
    drop_next: BTreeMap<u8, u32>,
    /// Drop the next N copies of a type to one receiver.
    drop_next_to: Vec<(PacketType, SocketAddr, u32)>,
    filter: Option<Filter>,
    /// Every datagram any node sent (when [`Sim::record_sent`]).
    pub sent: Vec<SentRecord>,
    sent_by_type: [u64; 256],
    /// Copies dropped on their way (rules, filter, random loss).
    pub lost: u64,
    /// Copies delivered to a node.
    pub delivered: u64,
    /// Copies sent to an address no running node has.
    pub undeliverable: u64,
    steps: u64,
    trace: u64,
    buf: Vec<u8>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// An FNV-1a-like digest taken 8 bytes at a time (delivered messages are
/// hashed at every node: gigabytes in a large run), then the tail bytewise.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(a)).wrapping_mul(FNV_PRIME).rotate_left(23);
    }
    for b in words.remainder() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

fn addr_bytes(a: SocketAddr) -> [u8; 6] {
    let ip = match a.ip() {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    let p = a.port().to_be_bytes();
    [ip[0], ip[1], ip[2], ip[3], p[0], p[1]]
}

/// Whether the environment variable ECTP_SIM_KEY asks for every simulation
/// to run keyed (`tests/run_all.sh` runs the scenarios both ways). A
/// scenario that looks at user data on the wire runs only without it.
pub fn keyed_run() -> bool {
    std::env::var_os("ECTP_SIM_KEY").is_some()
}

impl Sim {
    /// Bytes a keyed connection adds to every packet (its Authentication element).
    pub fn overhead(&self) -> usize {
        if self.key.is_some() { crate::wire::AUTH_LEN } else { 0 }
    }

    /// An empty simulation: no TO, no TU, a 1 ms lossless network.
    pub fn new(seed: u64) -> Sim {
        Sim {
            now: epoch(),
            seed,
            owner: None,
            users: Vec::new(),
            by_addr: HashMap::new(),
            events: Vec::new(),
            incoming: Vec::new(),
            answer_joins: Answer::Accept,
            answer_tokens: Answer::Accept,
            delay: Duration::from_millis(1),
            keep_messages: true,
            record_sent: true,
            key: keyed_run().then(|| super::Security::new(b"ECTP_SIM_KEY: every node keyed!!").expect("32 bytes")),
            net: BinaryHeap::new(),
            next_seq: 0,
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            loss_rng: Rng::new(seed ^ 0x6e65_7477_6f72_6b21),
            loss: Vec::new(),
            drop_next: BTreeMap::new(),
            drop_next_to: Vec::new(),
            filter: None,
            sent: Vec::new(),
            sent_by_type: [0; 256],
            lost: 0,
            delivered: 0,
            undeliverable: 0,
            steps: 0,
            trace: FNV_OFFSET,
            buf: vec![0; MAX_DATAGRAM],
        }
    }

    /// A TO with `cfg` and `n` TUs (each with `cfg` as its local
    /// parameters), all joined late; the TO answers joins by itself unless
    /// `cfg.ask_joins`, then the harness accepts them.
    pub fn joined(cfg: Config, n: usize, seed: u64) -> Sim {
        let mut sim = Sim::new(seed);
        sim.add_owner(cfg);
        for _ in 0..n {
            sim.add_user(cfg);
        }
        sim.run_until(Duration::from_secs(5), "every TU joined", |s| s.all_joined(n));
        sim
    }

    /// Start the TO now.
    pub fn add_owner(&mut self, cfg: Config) {
        assert!(self.owner.is_none(), "the simulation has a TO already");
        let cfg = Config { security: cfg.security.or(self.key), ..cfg };
        let o = Owner::new(cfg, OWNER_ADDR, &mut Rng::new(self.seed), self.now);
        self.owner = Some(SimNode::new(o.into(), OWNER_ADDR, false));
        self.by_addr.insert(OWNER_ADDR, NodeId::Owner);
        self.touch(NodeId::Owner);
    }

    /// Start one more TU now; returns its index.
    pub fn add_user(&mut self, cfg: Config) -> usize {
        let i = self.users.len();
        let rng = Rng::new(self.seed.wrapping_add(1 + i as u64));
        let addr = user_addr(i);
        let cfg = Config { security: cfg.security.or(self.key), ..cfg };
        self.users.push(SimNode::new(User::new(cfg, OWNER_ADDR, rng, self.now).into(), addr, true));
        self.by_addr.insert(addr, NodeId::User(i));
        self.touch(NodeId::User(i));
        i
    }

    /// Start one more TU with `cfg` and run until it is in the tree (the TO
    /// counts it active); returns its index. Joining one after the other
    /// makes the tree's shape a function of the placement policy alone.
    #[track_caller]
    pub fn join_one(&mut self, cfg: Config) -> usize {
        let i = self.add_user(cfg);
        self.run_until(Duration::from_secs(10), &format!("TU {i} joins"), move |s| {
            let id = s.user(i).member_id();
            let status = s.user(i).join_status();
            status != JoinStatus::Joining && (status != JoinStatus::Joined || s.owner().member(id).is_some())
        });
        assert_eq!(self.user(i).join_status(), JoinStatus::Joined, "TU {i} did not join");
        i
    }

    /// The index of the TU whose member id is `id`.
    pub fn index_of(&self, id: u32) -> Option<usize> {
        self.users.iter().position(|u| u.user().member_id() == id)
    }

    /// Kill TU `i` now (as SIGKILL would): it leaves the group, gets
    /// nothing and sends nothing more.
    pub fn kill_user(&mut self, i: usize) {
        let u = &mut self.users[i];
        u.alive = false;
        u.in_group = false;
        u.deadline = None;
    }

    /// The TO.
    pub fn owner(&self) -> &Owner {
        self.owner.as_ref().and_then(|o| o.node.owner()).expect("the simulation has no TO yet")
    }

    /// The TO, for application calls.
    pub fn owner_mut(&mut self) -> &mut Owner {
        self.touch(NodeId::Owner);
        self.owner.as_mut().and_then(|o| o.node.owner_mut()).expect("the simulation has no TO yet")
    }

    /// The TO's simulation node (its counters).
    pub fn owner_node(&self) -> &SimNode {
        self.owner.as_ref().expect("the simulation has no TO yet")
    }

    /// TU `i`.
    pub fn user(&self, i: usize) -> &User {
        self.users[i].user()
    }

    /// TU `i`, for application calls.
    pub fn user_mut(&mut self, i: usize) -> &mut User {
        self.touch(NodeId::User(i));
        self.users[i].node.user_mut().expect("a TU")
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - epoch()
    }

    /// TUs 0..n have joined and the TO counts them active.
    pub fn all_joined(&self, n: usize) -> bool {
        self.users[..n].iter().all(|u| u.user().join_status() == JoinStatus::Joined)
            && self.owner.as_ref().is_some_and(|o| o.node.owner().is_some_and(|o| o.active_members() >= n))
    }

    fn node_mut(&mut self, id: NodeId) -> Option<&mut SimNode> {
        match id {
            NodeId::Owner => self.owner.as_mut(),
            NodeId::User(i) => self.users.get_mut(i),
        }
    }

    /// Something happened to `id` (a datagram, a timer, an application
    /// call): it is flushed and its deadline read again at the end of the step.
    fn touch(&mut self, id: NodeId) {
        self.dirty.push(id);
    }

    // ----- loss -----

    /// Lose copies going `dir` (of `ty`, or of any type) with probability `p`,
    /// drawn from the simulation's seeded generator, per receiver.
    pub fn set_loss(&mut self, dir: Direction, ty: Option<PacketType>, p: f64) {
        self.loss.retain(|(d, t, _)| !(*d == dir && *t == ty));
        if p > 0.0 {
            self.loss.push((dir, ty, p));
        }
    }

    /// Lose the next `n` datagrams of type `ty` whoever sends them, to every receiver.
    pub fn drop_next(&mut self, ty: PacketType, n: u32) {
        *self.drop_next.entry(ty as u8).or_default() += n;
    }

    /// Lose the next `n` copies of type `ty` on their way to `to`.
    pub fn drop_next_to(&mut self, ty: PacketType, to: SocketAddr, n: u32) {
        self.drop_next_to.push((ty, to, n));
    }

    /// Lose every copy for which `f` returns true (until cleared).
    pub fn set_filter(&mut self, f: impl FnMut(&Wire<'_>) -> bool + 'static) {
        self.filter = Some(Box::new(f));
    }

    /// Remove the filter of [`Sim::set_filter`].
    pub fn clear_filter(&mut self) {
        self.filter = None;
    }

    /// No more loss of any kind.
    pub fn clear_loss(&mut self) {
        self.loss.clear();
        self.drop_next.clear();
        self.drop_next_to.clear();
        self.filter = None;
    }

    // ----- what was sent -----

    /// Datagrams of type `ty` sent by anybody (dropped ones included).
    pub fn sent_count(&self, ty: PacketType) -> usize {
        self.sent_by_type[ty as usize] as usize
    }

    /// Datagrams of type `ty` sent by the node at `from` (needs [`Sim::record_sent`]).
    pub fn sent_count_from(&self, from: SocketAddr, ty: PacketType) -> usize {
        self.sent.iter().filter(|r| r.packet_type == ty && r.from == from).count()
    }

    /// A digest of everything delivered so far: datagrams (when, from, to,
    /// header with its checksum over the whole packet) and application
    /// messages. Equal for equal runs.
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    // ----- the network -----

    /// Put `bytes` on the wire from any address (a stranger, a spoofer) to
    /// `to`; it arrives after the usual delay and passes the loss rules.
    pub fn inject(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let bytes: Rc<[u8]> = Rc::from(bytes);
        let header = Packet::parse(&bytes).ok().map(|p| p.header);
        self.route(from, Dest::Unicast(to), header, bytes);
    }

    fn direction(from: SocketAddr) -> Direction {
        if from == OWNER_ADDR { Direction::Forward } else { Direction::Backward }
    }

    /// Log a datagram a node sent, and put it on the wire.
    fn send(&mut self, from: SocketAddr, dest: Dest, bytes: Rc<[u8]>) {
        let header = Packet::parse(&bytes).ok().map(|p| p.header);
        let mut dropped = false;
        if let Some(h) = header {
            if let Some(n) = self.drop_next.get_mut(&(h.packet_type as u8)).filter(|n| **n > 0) {
                *n -= 1;
                dropped = true;
            }
            self.sent_by_type[h.packet_type as usize] += 1;
            if self.record_sent {
                self.sent.push(SentRecord {
                    at: self.elapsed(),
                    from,
                    dest,
                    packet_type: h.packet_type,
                    flag: h.flag,
                    psn: h.psn,
                    token_id: h.token_id,
                    len: bytes.len(),
                    dropped,
                });
            }
        }
        if dropped {
            self.lost += 1;
            return;
        }
        self.route(from, dest, header, bytes);
    }

    fn route(&mut self, from: SocketAddr, dest: Dest, header: Option<Header>, bytes: Rc<[u8]>) {
        let to = match dest {
            Dest::Group => Target::Group,
            Dest::Unicast(a) => Target::One(a),
        };
        let at = self.now + self.delay;
        self.net.push(Reverse(InFlight { at, seq: self.next_seq, from, to, header, bytes }));
        self.next_seq += 1;
    }

    /// Whether the loss rules take this copy.
    fn lose(&mut self, dir: Direction, w: &Wire<'_>) -> bool {
        let ty = w.packet_type();
        if let Some(rule) = self.drop_next_to.iter_mut().find(|(t, a, n)| Some(*t) == ty && *a == w.to && *n > 0) {
            rule.2 -= 1;
            return true;
        }
        if self.filter.as_mut().is_some_and(|f| f(w)) {
            return true;
        }
        // One draw per matching rule, whatever the outcome of the others.
        let mut lost = false;
        for &(d, t, p) in &self.loss {
            if d == dir && (t.is_none() || t == ty) {
                lost |= self.loss_rng.unit() < p;
            }
        }
        lost
    }

    fn deliver(&mut self, f: InFlight) {
        match f.to {
            Target::One(to) => self.deliver_to(&f, to, false),
            Target::Group => {
                // The members at the time of arrival, in a fixed order.
                let members: Vec<SocketAddr> =
                    self.users.iter().filter(|u| u.in_group && u.addr != f.from).map(|u| u.addr).collect();
                for to in members {
                    self.deliver_to(&f, to, true);
                }
            }
        }
    }

    fn deliver_to(&mut self, f: &InFlight, to: SocketAddr, group: bool) {
        let wire = Wire { from: f.from, to, group, header: f.header, bytes: &f.bytes };
        if self.lose(Sim::direction(f.from), &wire) {
            self.lost += 1;
            return;
        }
        let id = self.by_addr.get(&to).copied();
        let now = self.now;
        let Some(n) = id.and_then(|id| self.node_mut(id)).filter(|n| n.alive) else {
            self.undeliverable += 1;
            return;
        };
        n.node.handle(now, f.from, &f.bytes);
        let data = f.header.is_some_and(|h| matches!(h.packet_type, PacketType::Data | PacketType::Rdata));
        n.ctl_received += u64::from(!data);
        self.delivered += 1;
        let mut h = fnv(self.trace, &(now - epoch()).as_nanos().to_be_bytes());
        h = fnv(h, &f.seq.to_be_bytes());
        h = fnv(h, &addr_bytes(f.from));
        h = fnv(h, &addr_bytes(to));
        self.trace = fnv(h, &f.bytes[..f.bytes.len().min(16)]);
        if let Some(id) = id {
            self.touch(id);
        }
    }

    // ----- driving -----

    /// One round at the current virtual time, in the sans-IO call order.
    pub fn step(&mut self) {
        self.steps += 1;
        let now = self.now;
        // 1. handle: the datagrams that have arrived.
        while self.net.peek().is_some_and(|f| f.0.at <= now) {
            if let Some(Reverse(f)) = self.net.pop() {
                self.deliver(f);
            }
        }
        // 1. handle_timeout: the nodes whose deadline has come. A node is
        // woken at the earliest deadline it was registered with; if its
        // deadline moved later meanwhile, it is only registered again.
        while let Some(&Reverse((t, id))) = self.timers.peek()
            && t <= now
        {
            self.timers.pop();
            if let Some(n) = self.node_mut(id)
                && n.alive
                && n.deadline == Some(t)
            {
                n.deadline = None;
                if n.node.poll_timeout().is_some_and(|d| d <= now) {
                    n.node.handle_timeout(now);
                }
                self.touch(id);
            }
        }
        // 3. poll_event, answered before poll_transmit: an answer queues
        // packets that go out in this same step, as with a real driver.
        self.answer_events();
        // 2. poll_transmit until None, from every node something happened to;
        // the applications read what was delivered; the deadlines are read again.
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for &id in &dirty {
            self.flush(id);
        }
        for &id in &dirty {
            self.collect(id);
            self.register(id);
        }
        self.dirty = dirty;
        self.dirty.clear();
    }

    /// Register `id`'s deadline, unless an earlier registration will wake it
    /// first anyway (deadlines mostly move later: pushing each move would
    /// fill the heap with stale entries).
    fn register(&mut self, id: NodeId) {
        let Some(n) = self.node_mut(id) else { return };
        let t = if n.alive { n.node.poll_timeout() } else { None };
        if let Some(t) = t
            && n.deadline.is_none_or(|d| t < d)
        {
            n.deadline = Some(t);
            self.timers.push(Reverse((t, id)));
        }
    }

    fn answer_events(&mut self) {
        let now = self.now;
        let Some(o) = self.owner.as_mut().and_then(|o| o.node.owner_mut()) else { return };
        let mut any = false;
        while let Some(ev) = o.poll_event() {
            any = true;
            let result = match ev {
                Event::JoinRequest { user_id, .. } => match self.answer_joins {
                    Answer::Manual => Ok(()),
                    a => o.confirm_join(user_id, a == Answer::Accept, now),
                },
                Event::TokenRequest { user_id, .. } => match self.answer_tokens {
                    Answer::Manual => Ok(()),
                    a => o.confirm_token(user_id, a == Answer::Accept),
                },
                Event::Left { .. } => Ok(()),
            };
            assert_eq!(result, Ok(()), "answering {ev:?}");
            self.events.push(ev);
        }
        if any {
            self.touch(NodeId::Owner);
        }
    }

    /// How many join requests the TO reported to the application.
    pub fn join_requests(&self) -> usize {
        self.events.iter().filter(|e| matches!(e, Event::JoinRequest { .. })).count()
    }

    /// How many token requests the TO reported to the application.
    pub fn token_requests(&self) -> usize {
        self.events.iter().filter(|e| matches!(e, Event::TokenRequest { .. })).count()
    }

    fn flush(&mut self, id: NodeId) {
        let now = self.now;
        let mut buf = std::mem::take(&mut self.buf);
        let mut out: Vec<(SocketAddr, Dest, Rc<[u8]>)> = Vec::new();
        if let Some(n) = self.node_mut(id).filter(|n| n.alive) {
            while let Some(t) = n.node.poll_transmit(now, &mut buf) {
                out.push((n.addr, t.dest, Rc::from(&buf[..t.len])));
            }
        }
        self.buf = buf;
        for (from, dest, bytes) in out {
            self.send(from, dest, bytes);
        }
    }

    fn collect(&mut self, id: NodeId) {
        let keep = self.keep_messages;
        let mut trace = self.trace;
        match id {
            NodeId::Owner => {
                if let Some(o) = self.owner.as_mut().and_then(|o| o.node.owner_mut()) {
                    while let Some(m) = o.recv() {
                        let mut h = fnv(trace, b"incoming");
                        h = fnv(h, &m.user_id.to_be_bytes());
                        h = fnv(h, &[m.token_id, u8::from(m.message.gap)]);
                        trace = fnv(h, &m.message.data);
                        self.incoming.push(m);
                    }
                }
            }
            NodeId::User(i) => {
                let n = &mut self.users[i];
                if let Some(u) = n.node.user_mut().filter(|_| n.reading) {
                    while let Some(m) = u.recv() {
                        let mut h = fnv(trace, b"delivered");
                        h = fnv(h, &(i as u64).to_be_bytes());
                        h = fnv(h, &[u8::from(m.gap)]);
                        trace = fnv(h, &m.data);
                        n.delivered_count += 1;
                        n.delivered_digest = fnv(fnv(n.delivered_digest, &[u8::from(m.gap)]), &m.data);
                        if keep {
                            n.delivered.push(m);
                        }
                    }
                }
            }
        }
        self.trace = trace;
    }

    /// When something next happens: a datagram arrives or a deadline passes.
    pub fn next_event(&mut self) -> Option<Instant> {
        // Drop the registrations that were replaced, whose node died, or
        // that are earlier than the node's deadline now (registered again).
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            let Some(n) = self.node_mut(id) else {
                self.timers.pop();
                continue;
            };
            if n.alive && n.deadline == Some(t) && n.node.poll_timeout().is_some_and(|d| d <= t) {
                break;
            }
            let current = n.deadline == Some(t);
            if current {
                n.deadline = None;
            }
            self.timers.pop();
            if current {
                self.register(id);
            }
        }
        let net = self.net.peek().map(|f| f.0.at);
        let timer = self.timers.peek().map(|t| t.0.0);
        net.into_iter().chain(timer).min()
    }

    /// Step, jumping virtual time from event to event, until `cond` holds.
    /// Fails the test, naming `what`, when `limit` of virtual time passes
    /// first or when nothing is left that could make `cond` true.
    #[track_caller]
    pub fn run_until(&mut self, limit: Duration, what: &str, cond: impl Fn(&Sim) -> bool) {
        let deadline = self.now + limit;
        let mut stuck = 0u32;
        loop {
            self.step();
            if cond(self) {
                return;
            }
            match self.next_event() {
                None => panic!("{what}: nothing left to happen at {:?}\n{}", self.elapsed(), self.summary()),
                Some(t) if t > deadline => {
                    panic!(
                        "{what}: not done within {limit:?} of virtual time (at {:?})\n{}",
                        self.elapsed(),
                        self.summary()
                    )
                }
                Some(t) if t <= self.now => {
                    // A deadline that handle_timeout does not move would make a
                    // real driver spin.
                    stuck += 1;
                    assert!(stuck < 1000, "{what}: a deadline stays due at {:?}\n{}", self.elapsed(), self.summary());
                }
                Some(t) => {
                    stuck = 0;
                    self.now = t;
                }
            }
        }
    }

    /// Let `d` of virtual time pass, handling everything that happens in it.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        let mut stuck = 0u32;
        loop {
            self.step();
            match self.next_event() {
                Some(t) if t <= self.now => {
                    stuck += 1;
                    assert!(stuck < 1000, "a deadline stays due at {:?}\n{}", self.elapsed(), self.summary());
                }
                Some(t) if t <= end => {
                    stuck = 0;
                    self.now = t;
                }
                _ => break,
            }
        }
        self.now = end;
        self.step();
    }

    /// Queue `msgs` on the TO in order, letting the simulation run whenever
    /// the flow-control window is full.
    #[track_caller]
    pub fn owner_send_all(&mut self, msgs: &[Vec<u8>]) {
        for m in msgs {
            if !self.owner().can_send(m.len()) {
                self.run_until(Duration::from_secs(10), "TO window opens", |s| s.owner().can_send(m.len()));
            }
            self.owner_mut().send(m).expect("Owner::send");
        }
    }

    /// Queue `msgs` on TU `i` (which holds a token), as [`Sim::owner_send_all`].
    #[track_caller]
    pub fn user_send_all(&mut self, i: usize, msgs: &[Vec<u8>]) {
        for m in msgs {
            if !self.user(i).can_send(m.len()) {
                self.run_until(Duration::from_secs(10), "SU window opens", |s| s.user(i).can_send(m.len()));
            }
            self.user_mut(i).send(m).expect("User::send");
        }
    }

    /// Every TU in `who` has delivered at least `n` messages.
    #[track_caller]
    pub fn run_until_delivered(&mut self, who: &[usize], n: usize, limit: Duration) {
        let who = who.to_vec();
        self.run_until(limit, &format!("TUs {who:?} deliver {n} messages"), move |s| {
            who.iter().all(|&i| s.users[i].delivered_count >= n)
        });
    }

    /// TU `i` asks for a token; runs until it has an answer and returns it.
    #[track_caller]
    pub fn get_token(&mut self, i: usize) -> Result<u8, super::UserError> {
        let now = self.now;
        self.user_mut(i).request_token(now).expect("request_token");
        self.run_until(Duration::from_secs(5), "token answer", |s| {
            !matches!(s.user(i).token(), TokenStatus::Requesting)
        });
        self.user_mut(i).take_token_result().expect("a token result")
    }

    /// A readable account of the state, for failure messages (the first 20 TUs).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        if let Some(o) = self.owner.as_ref().and_then(|o| o.node.owner()) {
            let _ = writeln!(
                s,
                "TO: creating {} closed {} active {:?} incoming {} stats {:?}",
                o.is_creating(),
                o.is_closed(),
                o.member_ids(),
                self.incoming.len(),
                o.stats()
            );
        }
        for (i, u) in self.users.iter().enumerate().take(20) {
            let user = u.user();
            let _ = writeln!(
                s,
                "TU {i} ({}{}): {:?} end {:?} member {} token {:?} delivered {} stats {:?}",
                u.addr,
                if u.alive { "" } else { ", dead" },
                user.join_status(),
                user.end(),
                user.member_id(),
                user.token(),
                u.delivered_count,
                user.stats()
            );
        }
        let counts: BTreeMap<&str, u64> = PacketType::ALL
            .iter()
            .filter(|t| self.sent_by_type[**t as usize] > 0)
            .map(|t| (t.name(), self.sent_by_type[*t as usize]))
            .collect();
        let _ = writeln!(
            s,
            "sent {counts:?}; in flight {}, lost {}, delivered {}, undeliverable {}, steps {}",
            self.net.len(),
            self.lost,
            self.delivered,
            self.undeliverable,
            self.steps
        );
        s
    }
}

/// Message `id` of `len` bytes: starts with `id` (as many of its 4
/// big-endian bytes as fit), then bytes that depend on both, so that any
/// mix-up of messages or of segments shows.
pub fn message(id: u32, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(u64::from(id) << 32 | len as u64);
    let mut m: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    for (d, s) in m.iter_mut().zip(id.to_be_bytes()) {
        *d = s;
    }
    m
}

/// The id [`message`] put first (messages of at least 4 bytes).
pub fn message_id(m: &[u8]) -> Option<u32> {
    m.first_chunk::<4>().map(|b| u32::from_be_bytes(*b))
}

/// `count` messages with ids from `first`, of lengths drawn from `lens` by `rng`.
pub fn messages(rng: &mut Rng, first: u32, count: usize, lens: std::ops::RangeInclusive<usize>) -> Vec<Vec<u8>> {
    let span = (lens.end() - lens.start() + 1) as u64;
    (0..count)
        .map(|k| {
            let len = lens.start() + (rng.next_u64() % span) as usize;
            message(first + k as u32, len)
        })
        .collect()
}

/// The digest [`SimNode::delivered_digest`] has after delivering `msgs`
/// whole and in order, without gaps.
pub fn digest_of(msgs: &[Vec<u8>]) -> u64 {
    msgs.iter().fold(FNV_OFFSET, |d, m| fnv(fnv(d, &[0]), m))
}
