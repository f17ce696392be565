//! The TC-Owner (TO): creates the connection, admits members and places them
//! in the control tree, multicasts the forward data, hands out tokens and
//! receives the SUs' backward data.
//!
//! Draft clauses: "Connection creation", "Late join", "Forward data",
//! "Tokens", "Backward data", "Leave, pause, termination". The TO is the
//! root of the control tree: its [`Parent`] role keeps the DATA until its
//! children's subtrees have it and handles control traffic from its own
//! children only; its [`Members`] table owns the membership of the whole
//! tree; its [`Tokens`] table runs the backward channels. `docs/tree.md`
//! describes the tree's packets and policies.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::cc::{RATE_LEN, RateControl};
use super::keyring::Keyring;
use super::members::{Member, MemberState, Members, TO};
use super::parent::Parent;
use super::ra::rebind_grace;
use super::receiver::Message;
use super::retry::Key;
use super::sender::{QueueError, Sender};
use super::stats::Outcome;
use super::timer::Timer;
use super::tokens::{TokenOp, Tokens};
use super::{CcMode, Config, Ctl, Dest, Event, Io, LeaveReason, MAX_CHILDREN, Rng, Stats, Transmit};
use crate::wire::{Header, Membership, Packet, PacketType, Psn, Ro, Tco};

/// How often CTR is multicast at termination, at intervals that start at
/// two round trips and double (it has no confirm; a TU that misses every copy
/// sees ECONNRESET after FDN x HGT).
const CTR_SENDS: u32 = 5;
/// How often an ejection's ULR is sent (it has no confirm).
const ULR_SENDS: u32 = 3;
/// Shortest LJR or TJR the TO answers: a join request is padded (user
/// data of zeros) to at least the size of the largest answer (an LJC with an
/// IPv6 Address element), so that nobody can use the TO to reflect more
/// bytes than it sends.
pub const MIN_REQUEST: usize = 96;
/// The same on a keyed connection, Authentication element included: the
/// largest answer then has a Key element and an Authentication element too.
pub const MIN_KEYED_REQUEST: usize = 176;
/// Most members at a time that asked to join and are not in the tree yet
/// (a flood of LJRs costs bounded memory; beyond, LJRs are dropped).
const MAX_JOINING: usize = 1024;
/// Most of them from one IP address.
const MAX_JOINING_PER_IP: usize = 64;
/// Most departed members remembered, to tell them if they come back.
const MAX_DEPARTED: usize = 4096;

/// A member that was ejected or taken for dead: if it comes back not
/// knowing, it is told (ULR F=0).
#[derive(Clone, Copy, Debug)]
struct Departed {
    member_id: u32,
    until: Instant,
    next_reply: Instant,
}

/// A whole message received from an SU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The sending TU's member id.
    pub user_id: u32,
    /// The token it sent under.
    pub token_id: u8,
    /// Its unicast address.
    pub from: SocketAddr,
    /// The message.
    pub message: Message,
}

/// Why an application call on the TO failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerError {
    /// The flow-control window is full.
    WouldBlock,
    /// Empty message, or longer than [`super::MAX_MESSAGE`].
    BadLength,
    /// No such request pending, or no such member.
    NotFound,
    /// The connection is being or has been terminated.
    Terminated,
    /// Paused already, or resumed when not paused; the member holds a
    /// token already (or is being given one).
    Already,
    /// No token is free (ECTP_MAX_TOKENS are in use).
    Busy,
    /// The member did not answer after every retry.
    TimedOut,
}

/// A member as `ectp_get_member` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its member id.
    pub user_id: u32,
    /// Its parent's member id; 0 is the TO.
    pub parent_id: u32,
    /// Active TUs below it.
    pub descendants: u32,
    /// Round-trip time to its parent, last measured (by its parent).
    pub rtt: Option<Duration>,
    /// The Child ID its parent gave it.
    pub child_id: u16,
    /// Its tree level, 1 for a child of the TO.
    pub tree_level: u8,
    /// The token it holds, or 0.
    pub token_id: u8,
    /// A repair agent (a parent of other TUs, or ready to be one).
    pub is_ra: bool,
    /// Its unicast address.
    pub addr: SocketAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Connection creation: CCR is multicast every RXT until CCT is over.
    Creating,
    Open,
    /// `mterminate`: the data still queued goes out, then CTR.
    Draining,
    /// CTR is being sent.
    Terminating,
    Closed,
}

/// The TO's state machine. See the [module docs](super) for the call order.
#[derive(Debug)]
pub struct Owner {
    cfg: Config,
    conn_id: u32,
    local: SocketAddr,
    phase: Phase,
    isn: Psn,
    sender: Sender,
    /// Sent DATA is kept for repair, except in the unreliable mode.
    keep_sent: bool,
    parent: Parent,
    members: Members,
    /// Addresses refused recently (until when), so that a resent LJR gets the same answer.
    refused: HashMap<SocketAddr, Instant>,
    tokens: Tokens,
    events: VecDeque<Event>,
    /// NDATA: the current interval while idle.
    ndata_interval: Duration,
    /// `ectp_pause`: no new DATA leaves until `ectp_resume`; NDATA with F=1
    /// tells the TUs.
    paused: bool,
    /// Ejected or failed members lately, by address.
    departed: HashMap<SocketAddr, Departed>,
    /// Member ids are drawn from here: unpredictable, so that nobody can
    /// name a member it does not know.
    rng: Rng,
    /// The forward channel's rate: TFMCC and the pacer (ECTP_CC, ECTP_MAX_RATE).
    cc: RateControl,
    io: Io,
}

impl Owner {
    /// A new connection owned by the TO at `local` (its unicast address and
    /// the group port). Draws the connection ID and ISN from `rng`. With a
    /// creation time, CCR goes out at once and every RXT until CCT expires.
    pub fn new(cfg: Config, local: SocketAddr, rng: &mut Rng, now: Instant) -> Owner {
        // What SUs may send ahead is bounded by the window the TO announces.
        let cfg = Config { rx_window: cfg.window, ..cfg };
        let isn = Psn(rng.nonzero_u32());
        let mut o = Owner {
            conn_id: rng.nonzero_u32(),
            local,
            phase: Phase::Open,
            isn,
            sender: Sender::new(isn, cfg.mss, cfg.window, 0),
            keep_sent: cfg.ro != Ro::Unreliable,
            // The sender's window bounds what is kept, whatever the span.
            parent: Parent::new(isn, usize::MAX, now),
            members: Members::default(),
            refused: HashMap::new(),
            tokens: Tokens::new(),
            events: VecDeque::new(),
            ndata_interval: cfg.rxt,
            paused: false,
            departed: HashMap::new(),
            rng: Rng::new(rng.next_u64()),
            cc: RateControl::new(cfg.cc, cfg.max_rate, cfg.mss, None, now),
            io: Io::default(),
            cfg,
        };
        if let Some(sec) = cfg.security {
            let keys = Keyring::owner(sec, o.conn_id, rng.next_u64(), cfg.failure_time() * 10);
            o.io.keys = Some(Box::new(keys));
        }
        o.io.timers.set(Timer::Heartbeat, now + cfg.hgt);
        if !cfg.cct.is_zero() {
            o.phase = Phase::Creating;
            o.io.timers.set(Timer::CreationEnd, now + cfg.cct);
            o.send_ccr(now);
        }
        o
    }

    /// The connection ID announced in CCR and LJC.
    pub fn connection_id(&self) -> u32 {
        self.conn_id
    }

    /// The connection's parameters.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// What this endpoint counted.
    pub fn stats(&self) -> &Stats {
        &self.io.stats
    }

    /// Whether the creation phase (CCT) is still running.
    pub fn is_creating(&self) -> bool {
        self.phase == Phase::Creating
    }

    /// Members in the control tree, wherever they are in it (as the TO's
    /// table knows them).
    pub fn active_members(&self) -> usize {
        self.members.iter().filter(|(_, m)| m.is_member()).count()
    }

    /// Active TUs in the whole tree as the acknowledgements count them: the
    /// sum of the ADN its children report (ECTP_MEMBERS).
    pub fn adn(&self) -> u32 {
        self.parent.descendants()
    }

    /// The TO's own children.
    pub fn children(&self) -> usize {
        self.parent.len()
    }

    /// The largest round trip measured to one of its children.
    pub fn max_rtt(&self) -> Option<Duration> {
        self.parent.max_rtt()
    }

    /// The round-trip time measured to member `user_id`, once known.
    pub fn rtt(&self, user_id: u32) -> Option<Duration> {
        self.member(user_id).and_then(|m| m.rtt)
    }

    /// Member `user_id` as `ectp_get_member` shows it.
    pub fn member(&self, user_id: u32) -> Option<MemberInfo> {
        let m = self.members.get(user_id).filter(|m| m.is_member())?;
        let rtt = if m.parent == TO { self.parent.get(user_id).and_then(|c| c.rtt) } else { m.rtt };
        Some(MemberInfo {
            user_id,
            parent_id: m.parent,
            descendants: self.members.descendants(user_id),
            rtt,
            child_id: m.child_id,
            tree_level: self.members.level(user_id),
            token_id: self.tokens.token_of(user_id),
            is_ra: m.ra > 0 && self.is_tree(),
            addr: m.addr,
        })
    }

    /// DATA packets queued or kept for repair: what the window bounds.
    pub fn in_window(&self) -> usize {
        self.sender.unsent() + self.parent.store.len()
    }

    /// Member ids in the control tree, in order.
    pub fn member_ids(&self) -> Vec<u32> {
        self.members.iter().filter(|(_, m)| m.is_member()).map(|(id, _)| id).collect()
    }

    /// Whether CTR has gone out as often as it will: the endpoint may close.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    // ----- application calls -----

    /// Queue one message for multicast (`msendm`).
    pub fn send(&mut self, msg: &[u8]) -> Result<(), OwnerError> {
        if !matches!(self.phase, Phase::Open | Phase::Creating) {
            return Err(OwnerError::Terminated);
        }
        // Semi-reliable: the buffer is bounded, not the sending; the oldest
        // data goes (HB then tells receivers what is no longer repairable).
        if self.cfg.ro == Ro::SemiReliable {
            while !self.sender.has_room(msg.len(), self.parent.store.len()) && self.parent.store.pop_oldest().is_some()
            {
            }
        }
        self.sender.queue(msg, self.parent.store.len()).map_err(|e| match e {
            QueueError::WouldBlock => OwnerError::WouldBlock,
            QueueError::BadLength => OwnerError::BadLength,
        })
    }

    /// Whether a message of `len` bytes would be queued now.
    pub fn can_send(&self, len: usize) -> bool {
        self.sender.has_room(len, self.parent.store.len()) || self.cfg.ro == Ro::SemiReliable
    }

    /// The next whole message from an SU (`mrecvmsg` on the TO).
    pub fn recv(&mut self) -> Option<Incoming> {
        self.tokens.inbox.pop_front()
    }

    /// Whether `recv` has something.
    pub fn has_incoming(&self) -> bool {
        !self.tokens.inbox.is_empty()
    }

    /// Answer a join request (`mjoin_confirm`).
    pub fn confirm_join(&mut self, user_id: u32, accept: bool, now: Instant) -> Result<(), OwnerError> {
        match self.members.get(user_id) {
            Some(m) if m.state == MemberState::Pending => {}
            _ => return Err(OwnerError::NotFound),
        }
        if accept {
            self.admit(user_id, now);
        } else {
            self.refuse_member(user_id, now);
        }
        Ok(())
    }

    /// Answer a token request (`mtoken_confirm`). A grant fails into a
    /// refusal when all `max_tokens` tokens are in use.
    pub fn confirm_token(&mut self, user_id: u32, accept: bool) -> Result<(), OwnerError> {
        let addr = self.members.get(user_id).ok_or(OwnerError::NotFound)?.addr;
        self.tokens.confirm(&self.cfg, self.conn_id, user_id, addr, accept, &mut self.io.ctl)
    }

    /// Give member `user_id` a token without its asking (`ectp_token_give`):
    /// TGR with F=1, resent every RXT until its TGC; poll
    /// [`Owner::take_token_outcome`].
    pub fn give_token(&mut self, user_id: u32, now: Instant) -> Result<TokenOp, OwnerError> {
        if !matches!(self.phase, Phase::Open | Phase::Creating) {
            return Err(OwnerError::Terminated);
        }
        let addr = self.members.get(user_id).filter(|m| m.is_member()).ok_or(OwnerError::NotFound)?.addr;
        let (ctl, op) = self.tokens.give(&self.cfg, self.conn_id, user_id, addr)?;
        self.io.repeat(Key::Give(user_id), ctl, self.cfg.retries, self.cfg.rxt, now);
        Ok(op)
    }

    /// Take member `user_id`'s token back (`ectp_token_withdraw`): TRR with
    /// F=1, resent every RXT until its TRC, which comes once everything it
    /// sent was acknowledged; poll [`Owner::take_token_outcome`].
    pub fn withdraw_token(&mut self, user_id: u32, now: Instant) -> Result<TokenOp, OwnerError> {
        let addr = self.members.get(user_id).ok_or(OwnerError::NotFound)?.addr;
        let (ctl, op) = self.tokens.withdraw(self.conn_id, user_id, addr)?;
        self.io.repeat(Key::Withdraw(user_id), ctl, self.cfg.retries, self.cfg.rxt, now);
        Ok(op)
    }

    /// How give `op` (Ok(token id)) or withdrawal `op` (Ok(0)) ended, once
    /// it has; each outcome is taken once.
    pub fn take_token_outcome(&mut self, op: TokenOp) -> Option<Result<u8, OwnerError>> {
        self.tokens.take_outcome(op)
    }

    /// Eject a member (`mleave` on the TO), wherever it is in the tree: ULR
    /// with F=0 to it, sent a few times since it has no confirm, and, when
    /// its parent is a repair agent, the order to drop it to that agent
    /// until it reports the departure. Its token is freed.
    pub fn eject(&mut self, user_id: u32, now: Instant) -> Result<(), OwnerError> {
        let m = self.depart(user_id, LeaveReason::Ejected, now).ok_or(OwnerError::NotFound)?;
        self.send_ejection(user_id, &m, now);
        Ok(())
    }

    /// Pause (`ectp_pause`): no new DATA leaves until [`Owner::resume`];
    /// `send` still queues. Repairs go on, and NDATA (F=1) with heartbeats
    /// keeps the TUs informed, so that nobody is ejected for the pause.
    pub fn pause(&mut self, now: Instant) -> Result<(), OwnerError> {
        if !matches!(self.phase, Phase::Open | Phase::Creating) {
            return Err(OwnerError::Terminated);
        }
        if self.paused {
            return Err(OwnerError::Already);
        }
        self.paused = true;
        log::info!("connection {:#x} paused", self.conn_id);
        self.tell_pause(now);
        Ok(())
    }

    /// Resume after [`Owner::pause`]: the queued data goes out again; an
    /// NDATA (F=0) tells the TUs at once, even with nothing queued.
    pub fn resume(&mut self, now: Instant) -> Result<(), OwnerError> {
        if !self.paused {
            return Err(OwnerError::Already);
        }
        self.paused = false;
        log::info!("connection {:#x} resumed", self.conn_id);
        self.tell_pause(now);
        Ok(())
    }

    /// NDATA at once with the pause flag as it now is, then on the idle
    /// schedule (two round trips, doubling up to HGT).
    fn tell_pause(&mut self, now: Instant) {
        self.send_ndata();
        self.ndata_interval = self.round_trips(2);
        self.io.timers.set(Timer::Ndata, now + self.ndata_interval);
    }

    /// Whether the TO is paused (ECTP_PAUSED).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Abort (`ectp_abort`): end at once, without draining. What is queued
    /// or unacknowledged is dropped; CTR with F=1 (abnormal) goes to the
    /// group a few times within a few milliseconds; poll [`Owner::is_closed`].
    pub fn abort(&mut self, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        log::info!("connection {:#x} aborted", self.conn_id);
        self.phase = Phase::Terminating;
        self.paused = false;
        self.io.timers.stop_all();
        self.io.ctl.clear();
        let mut h = Header::new(PacketType::Ctr, self.conn_id);
        h.psn = self.sender.last_psn().0;
        h.flag = true;
        let ctr = Ctl::new(Dest::Group, h);
        self.io.repeat_growing(Key::Ctr, ctr, CTR_SENDS, Duration::from_millis(1), Duration::from_millis(8), now);
    }

    /// Terminate (`mterminate`): the data already queued still goes out, then
    /// CTR (F=0) is multicast; poll [`Owner::is_closed`]. A pause ends here.
    pub fn terminate(&mut self) {
        if matches!(self.phase, Phase::Open | Phase::Creating) {
            self.phase = Phase::Draining;
            self.paused = false;
            // Everything is out: an NDATA now, so that the tail is
            // acknowledged at once rather than after the idle interval.
            if !self.sender.has_unsent() {
                self.send_ndata();
            }
            self.io.timers.stop(Timer::CreationEnd);
            self.io.timers.stop(Timer::Ccr);
        }
    }

    // ----- driver calls -----

    /// Take one received datagram.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let mut scratch = self.io.take_scratch();
        self.handle_in(now, from, datagram, &mut scratch);
        self.io.put_scratch(scratch);
    }

    fn handle_in(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], scratch: &mut Vec<u8>) {
        let Some(packet) = self.io.stats.parse(datagram) else { return };
        let h = packet.header;
        // An LJR may come before the TU knows the connection ID.
        if h.connection_id != self.conn_id && !(h.packet_type == PacketType::Ljr && h.connection_id == 0) {
            self.io.stats.dropped_foreign += 1;
            return;
        }
        if self.phase == Phase::Closed {
            self.io.stats.dropped_unexpected += 1;
            return;
        }
        let Some(packet) = self.io.open(now, from, packet, datagram, scratch) else { return };
        let mut outcome = self.admissible(&packet, from);
        if outcome == Outcome::Source {
            self.tell_departed(now, from);
        }
        if outcome == Outcome::Taken {
            if let Some(id) = self.parent.at(from) {
                self.parent.heard(id, now);
            }
            outcome = self.dispatch(now, from, &packet);
        }
        self.io.stats.record(outcome);
    }

    /// Whether a packet of this type may come from this address (requests to
    /// join from anybody; everything else only from a member at exactly
    /// this address, acknowledgements only from a child), and carries user
    /// data only where it may: backward DATA and RDATA (at most MSS bytes),
    /// and the padding that makes a join request at least as long as its
    /// answer (no reflection larger than the request).
    fn admissible(&self, p: &Packet<'_>, from: SocketAddr) -> Outcome {
        let h = p.header;
        let member = self.member_at(from).is_some();
        let allowed = match h.packet_type {
            PacketType::Ljr | PacketType::Tgr => true,
            PacketType::Tjr => !h.flag,
            PacketType::Ack | PacketType::Hback => self.parent.at(from).is_some(),
            PacketType::Ccc | PacketType::Trr | PacketType::Data | PacketType::Rdata => member,
            // Answers to a give or a withdrawal by the TO.
            PacketType::Tgc | PacketType::Trc => member,
            PacketType::Ulr | PacketType::Hb | PacketType::Tjc => member,
            // Only the TO sends these.
            PacketType::Ccr | PacketType::Ljc | PacketType::Ndata | PacketType::Ctr => return Outcome::Unexpected,
        };
        if !allowed {
            return Outcome::Source;
        }
        let len = p.data.len();
        let ok = match h.packet_type {
            PacketType::Data | PacketType::Rdata => (1..=usize::from(self.cfg.mss)).contains(&len),
            PacketType::Ljr | PacketType::Tjr => p.len() >= self.cfg.min_request(),
            _ => len == 0,
        };
        if ok { Outcome::Taken } else { Outcome::Length }
    }

    fn dispatch(&mut self, now: Instant, from: SocketAddr, packet: &Packet<'_>) -> Outcome {
        let h = packet.header;
        match h.packet_type {
            PacketType::Ljr if h.flag => self.on_rebind(now, from, packet).into(),
            PacketType::Ljr => self.on_ljr(now, from, packet).into(),
            PacketType::Tjr => self.on_tjr(now, from, packet).into(),
            PacketType::Tjc => self.on_attach_report(now, from, packet).into(),
            PacketType::Ccc => self.on_ccc(from, packet).into(),
            PacketType::Tgr => self.on_tgr(from, Psn(h.psn)).into(),
            PacketType::Trr => self.on_trr(from, h.token_id).into(),
            PacketType::Tgc => self.on_tgc(from, packet).into(),
            PacketType::Trc => self.on_trc(from, h.token_id).into(),
            PacketType::Data | PacketType::Rdata => self.on_backward(now, from, packet),
            PacketType::Ulr if h.flag => self.on_ulr(now, from, packet).into(),
            PacketType::Ack => self.on_ack(now, from, packet),
            PacketType::Hback => self.on_hback(now, from, packet),
            PacketType::Hb => self.on_su_heartbeat(now, from, packet),
            _ => Outcome::Unexpected,
        }
    }

    /// A packet from an address that is no member: if it is a member this TO
    /// ejected (or took for dead) lately, it did not learn it; tell it again,
    /// ULR with F=0, at most once per RXT.
    fn tell_departed(&mut self, now: Instant, from: SocketAddr) {
        let Some(d) = self.departed.get_mut(&from) else { return };
        if d.until <= now || d.next_reply > now {
            return;
        }
        d.next_reply = now + self.cfg.rxt;
        let mut h = Header::new(PacketType::Ulr, self.conn_id);
        h.flag = false;
        let mut ctl = Ctl::new(Dest::Unicast(from), h);
        ctl.elements.membership = Some(Membership::of(d.member_id));
        self.io.ctl.push_back(ctl);
    }

    /// This TO's key share (keyed connections), for CCR and its join answers.
    fn key_share(&self) -> Option<crate::wire::KeyShare> {
        self.io.keys.as_ref().map(|k| k.share())
    }

    /// Next datagram to send, written into `buf` (at least
    /// [`super::MAX_DATAGRAM`] bytes). Control packets go first, then
    /// repairs, then new data.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let rate_on_data = self.announce_rate(now);
        if let Some(t) = self.io.poll_ctl(buf) {
            return Some(t);
        }
        // Terminating (normally, with nothing left; or aborted): only CTR.
        if matches!(self.phase, Phase::Terminating | Phase::Closed) {
            return None;
        }
        // Repairs and new data leave at the rate (TFMCC, ECTP_MAX_RATE).
        let unsent = self.sender.has_unsent() && !self.paused;
        if (self.parent.has_repair() || unsent) && !self.cc.ready(now) {
            self.io.timers.set_opt(Timer::Pace, self.cc.next_send(now));
            return None;
        }
        while let Some((psn, dest)) = self.parent.next_repair() {
            if let Some(seg) = self.parent.store.get(psn) {
                self.io.stats.rdata_sent += 1;
                let t = self.io.send(seg.packet(PacketType::Rdata, self.conn_id, 0), dest, buf);
                self.cc.spend(t.map_or(0, |t| t.len));
                return t;
            }
        }
        if !self.paused
            && let Some(seg) = self.sender.next_unsent()
        {
            let mut packet = seg.packet(PacketType::Data, self.conn_id, 0);
            // The Rate element rides on DATA with room for it.
            if rate_on_data {
                packet.elements.rate = Some(self.cc.info(now));
            }
            let t = self.io.send(packet, Dest::Group, buf);
            self.cc.spend(t.map_or(0, |t| t.len));
            // Idle for two round trips: NDATA shows the tail, so that it
            // is acknowledged (and repaired) without waiting for RXT.
            self.ndata_interval = self.round_trips(2);
            self.io.timers.set(Timer::Ndata, now + self.ndata_interval);
            self.io.stats.data_sent += 1;
            self.io.stats.bytes_sent += seg.data().len() as u64;
            if self.keep_sent {
                self.parent.store.insert(seg);
            }
            // With nothing to wait for, what was just sent is stable at once
            // (ACKs move the stable point otherwise).
            if self.parent.lowest_needed().is_none() {
                self.update_stable();
            }
            return t;
        }
        // Termination waits until every member has everything (or was ejected).
        if self.phase == Phase::Draining && self.parent.store.is_empty() {
            self.phase = Phase::Terminating;
            self.io.timers.stop(Timer::Heartbeat);
            let mut h = Header::new(PacketType::Ctr, self.conn_id);
            h.psn = self.sender.last_psn().0;
            // Two round trips, doubling up to RXT/2.
            let first = match self.parent.max_rtt() {
                Some(r) => (r * 2).max(Duration::from_millis(2)).min(self.cfg.rxt / 2),
                None => self.cfg.rxt / 8,
            };
            let ctr = Ctl::new(Dest::Group, h);
            self.io.repeat_growing(Key::Ctr, ctr, CTR_SENDS, first, self.cfg.rxt / 2, now);
            return self.poll_transmit(now, buf);
        }
        None
    }

    /// TFMCC: a new feedback round when one is over, and the Rate element
    /// due while data flows (at the start of each round, after each report
    /// taken, every quarter round): in an HB of its own to the group, or,
    /// when the next DATA has room for it within the MSS, on that DATA.
    /// Returns whether it is to ride on the next DATA.
    fn announce_rate(&mut self, now: Instant) -> bool {
        if self.cc.mode() != CcMode::Tfmcc || !matches!(self.phase, Phase::Open | Phase::Draining) {
            return false;
        }
        self.cc.tick(now);
        let flowing = (self.sender.has_unsent() && !self.paused) || !self.parent.store.is_empty();
        let due = flowing && self.cc.announce_due(now);
        let fits = !self.parent.has_repair()
            && self.sender.next_unsent_len().is_some_and(|n| n + RATE_LEN <= usize::from(self.cfg.mss));
        if due && !fits {
            let mut h = Header::new(PacketType::Hb, self.conn_id);
            h.psn = self.lowest_repairable().0;
            let mut ctl = Ctl::new(Dest::Group, h);
            ctl.elements.rate = Some(self.cc.info(now));
            self.io.ctl.push_back(ctl);
            self.io.stats.rate_announcements += 1;
        }
        // Never in the past: what is due now goes out with the next packet.
        let at = self.cc.announce_at().filter(|_| flowing).map(|t| t.max(now + Duration::from_micros(100)));
        self.io.timers.set_opt(Timer::RateRound, at);
        due && fits
    }

    /// The lowest PSN still repairable, as HBs announce it.
    fn lowest_repairable(&self) -> Psn {
        self.parent.store.lowest().unwrap_or(self.sender.first_unsent())
    }

    /// The forward sending rate now, bytes per second (ECTP_RATE; `u64::MAX`
    /// without a limit).
    pub fn rate(&self) -> u64 {
        let r = self.cc.rate();
        if r.is_finite() { r as u64 } else { u64::MAX }
    }

    /// ECTP_MAX_RATE: cap the forward rate (0: no cap).
    pub fn set_max_rate(&mut self, max_rate: u64) {
        self.cfg.max_rate = max_rate;
        self.cc.set_max_rate(max_rate);
    }

    /// TFMCC's view, for tests and statistics: the CLR, whether in slow
    /// start, the reports taken in all and the most in one round.
    pub fn cc_state(&self) -> (Option<u32>, bool, u64, u32) {
        (self.cc.clr(), self.cc.is_slow_start(), self.cc.reports, self.cc.max_round_reports)
    }

    /// The next application event (join and token requests, departures).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.io.timers.next()
    }

    /// Run the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in self.io.timers.expired(now) {
            match t {
                Timer::CreationEnd if self.phase == Phase::Creating => {
                    self.phase = Phase::Open;
                    self.io.timers.stop(Timer::Ccr);
                }
                Timer::Ccr if self.phase == Phase::Creating => self.send_ccr(now),
                Timer::Heartbeat => {
                    // Silence is checked on the heartbeat tick, once per HGT, not on
                    // every packet sent: a dead member goes at most an HGT late.
                    self.heartbeat(now);
                    self.detect_failures(now);
                    self.sweep_orphans(now);
                    self.parent.expire_pins(now);
                    self.update_stable();
                    self.refused.retain(|_, until| *until > now);
                    self.departed.retain(|_, d| d.until > now);
                    if let Some(k) = self.io.keys.as_mut() {
                        k.expire(now);
                    }
                    self.io.timers.set(Timer::Heartbeat, now + self.cfg.hgt);
                }
                // NDATA while idle (and while draining before CTR): tells receivers
                // the next PSN, so that a lost tail shows and is asked for.
                Timer::Ndata
                    if (self.paused || !self.sender.has_unsent())
                        && matches!(self.phase, Phase::Open | Phase::Creating | Phase::Draining) =>
                {
                    self.send_ndata();
                    self.probe_laggards(now);
                    self.ndata_interval = (self.ndata_interval * 2).min(self.cfg.hgt);
                    self.io.timers.set(Timer::Ndata, now + self.ndata_interval);
                }
                Timer::Repeat => {
                    for key in self.io.poll_repeats(now) {
                        match key {
                            Key::Ctr => {
                                self.phase = Phase::Closed;
                                self.io.timers.stop_all();
                            }
                            Key::Give(id) | Key::Withdraw(id) => self.tokens.timed_out(id),
                            // Admitted under a repair agent and never attached.
                            Key::Notice(id) => {
                                log::info!("member {id} did not attach to its parent: dropped");
                                if let Some(m) = self.depart(id, LeaveReason::Failed, now) {
                                    self.send_ejection(id, &m, now);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Timer::HoleExpiry => self.tokens.expire_holes(now, self.cfg.rxt, &mut self.io.stats),
                _ => {}
            }
        }
        self.refresh_holes();
    }

    // ----- internals -----

    fn is_tree(&self) -> bool {
        self.cfg.tco == Tco::Tree
    }

    /// Unreliable backward channels: when the next hole gives up.
    fn refresh_holes(&mut self) {
        if self.cfg.ro == Ro::Unreliable && self.phase != Phase::Closed {
            self.io.timers.set_opt(Timer::HoleExpiry, self.tokens.hole_deadline(self.cfg.rxt));
        }
    }

    fn send_ccr(&mut self, now: Instant) {
        let mut h = Header::new(PacketType::Ccr, self.conn_id);
        h.psn = self.isn.0;
        let mut ctl = Ctl::new(Dest::Group, h);
        ctl.elements.connection = Some(self.cfg.connection_params());
        ctl.elements.key = self.key_share();
        self.io.ctl.push_back(ctl);
        self.io.timers.set(Timer::Ccr, now + self.cfg.rxt);
    }

    /// `n` round trips to the farthest child of the TO, as measured (at
    /// least a millisecond), RXT at most and while none is measured.
    fn round_trips(&self, n: u32) -> Duration {
        self.parent.max_rtt().map_or(self.cfg.rxt, |r| (r * n).max(Duration::from_millis(1)).min(self.cfg.rxt))
    }

    /// NDATA to the group: the next PSN the TO will send; F=1 while paused.
    fn send_ndata(&mut self) {
        let mut h = Header::new(PacketType::Ndata, self.conn_id);
        h.psn = self.sender.first_unsent().0;
        h.flag = self.paused;
        self.io.ctl.push_back(Ctl::new(Dest::Group, h));
    }

    /// Idle, with data kept for some child: an HB to each child that lags
    /// and was heard from neither since the previous NDATA nor for two of
    /// its round trips; its answer (HBACK) carries its acknowledgement. A
    /// lost last ACK would otherwise hold the window, or the end of the
    /// connection, until its keep-alive.
    fn probe_laggards(&mut self, now: Instant) {
        let laggards = self.parent.quiet_laggards(self.sender.first_unsent(), now, self.cfg.probe_interval());
        if self.parent.store.is_empty() {
            return;
        }
        for id in laggards {
            self.probe(id, now);
        }
    }

    /// An HB to child `id` alone (it just attached, or it lags): its answer
    /// measures the round trip to it at once.
    fn probe(&mut self, id: u32, now: Instant) {
        let ctl = self.parent.probe(self.conn_id, self.lowest_repairable(), id, 0, TO, now);
        self.io.ctl.extend(ctl);
    }

    /// How long a member may stay silent before it is taken for dead.
    fn failure_time(&self) -> Duration {
        self.cfg.failure_time()
    }

    /// How long what an admitted member will need is kept before it attaches
    /// (its TJR normally comes within an RTT of the LJC): short, so that
    /// joiners that never attach cannot hold the window.
    fn join_pin(&self) -> Duration {
        self.cfg.rxt * 4
    }

    /// How long an admitted member has to attach: the span of its TJR
    /// retries, and the same again.
    fn join_timeout(&self) -> Duration {
        self.cfg.rxt * self.cfg.retries.max(1) * 2
    }

    fn member_at(&self, addr: SocketAddr) -> Option<u32> {
        self.members.at(addr)
    }

    /// Where a repair goes: in a flat tree the group is the TO's children; in
    /// a tree, the child that asked, so that repairs stay local.
    fn repair_dest(&self, child: SocketAddr) -> Dest {
        if self.is_tree() { Dest::Unicast(child) } else { Dest::Group }
    }

    /// Member `id`'s Membership element as its parent sees it.
    fn membership(&self, id: u32) -> Option<Membership> {
        let m = self.members.get(id)?;
        Some(Membership {
            tree_level: self.members.level(id),
            child_id: m.child_id,
            member_id: id,
            parent_id: m.parent,
        })
    }

    /// The unicast address of parent `p` (the TO's own for [`TO`]).
    fn parent_addr(&self, p: u32) -> SocketAddr {
        if p == TO { self.local } else { self.members.get(p).map_or(self.local, |m| m.addr) }
    }

    /// LJC (F=1) or TJC (F=1) for an admitted member; both carry its start
    /// PSN. LJC carries the connection parameters and names the parent to
    /// attach to; a TJC that names a parent other than the TO (creation
    /// phase in a tree) sends the TU on to it.
    fn confirm_packet(&self, user_id: u32, ty: PacketType) -> Option<Ctl> {
        let m = self.members.get(user_id)?;
        let mut h = Header::new(ty, self.conn_id);
        h.flag = true;
        h.psn = m.start.0;
        let mut ctl = Ctl::new(Dest::Unicast(m.addr), h);
        ctl.elements.membership = self.membership(user_id);
        ctl.elements.key = self.key_share();
        if ty == PacketType::Ljc {
            ctl.elements.connection = Some(self.cfg.connection_params());
            ctl.elements.address = Some(self.parent_addr(m.parent));
        } else if m.parent != TO {
            ctl.elements.address = Some(self.parent_addr(m.parent));
        }
        Some(ctl)
    }

    /// The admission notice to `id`'s repair agent: TJR with F=1, its member
    /// id, level and address, and the PSN it delivers from; repeated until
    /// the agent's attach report.
    fn send_notice(&mut self, id: u32, now: Instant) {
        let Some(m) = self.members.get(id) else { return };
        let (to, start, addr) = (self.parent_addr(m.parent), m.start, m.addr);
        let mut h = Header::new(PacketType::Tjr, self.conn_id);
        h.flag = true;
        h.psn = start.0;
        let mut ctl = Ctl::new(Dest::Unicast(to), h);
        ctl.elements.membership = self.membership(id);
        ctl.elements.address = Some(addr);
        // Keyed: the link key of the agent and its new child, encrypted for the agent.
        ctl.payload = self.io.keys.as_ref().and_then(|k| k.link_for(addr, id, m.parent));
        // Until it attaches, what it will need is kept here, a little while.
        self.parent.pin(id, start, now + self.join_pin());
        let (limit, rxt) = (self.cfg.retries, self.cfg.rxt);
        self.io.repeat(Key::Notice(id), ctl, limit, rxt, now);
    }

    /// A fresh member id: random in 1..2^31 (so that it reads as a positive
    /// int through ECTP_USER_ID), not in use.
    fn new_member_id(&mut self) -> u32 {
        loop {
            let id = self.rng.nonzero_u32() >> 1;
            if id != 0 && self.members.get(id).is_none() {
                return id;
            }
        }
    }

    fn new_member(&mut self, addr: SocketAddr, creation: bool, ra: u32, now: Instant) -> Option<u32> {
        let (all, here) = self.members.joining(addr.ip());
        if all >= MAX_JOINING || here >= MAX_JOINING_PER_IP {
            log::warn!("{all} members are joining already ({here} from {}): join request dropped", addr.ip());
            return None;
        }
        self.departed.remove(&addr);
        let user_id = self.new_member_id();
        let start = if creation { self.isn } else { self.sender.next_psn() };
        let child_id = (user_id & 0xffff) as u16;
        let ra =
            if self.is_tree() { u16::try_from(ra.min(u32::from(MAX_CHILDREN))).unwrap_or(MAX_CHILDREN) } else { 0 };
        self.members.insert(user_id, Member::new(addr, creation, child_id, start, ra));
        if let Some(k) = self.io.keys.as_mut() {
            k.set_member(addr, user_id);
        }
        if self.cfg.ask_joins {
            self.events.push_back(Event::JoinRequest { user_id, addr });
            // Unanswered for as long as the TU keeps asking (and as long
            // again): forgotten, so that a program that never answers does
            // not fill the table of joiners.
            let expires = now + self.join_timeout();
            if let Some(m) = self.members.get_mut(user_id) {
                m.attach_by = Some(expires);
            }
        } else {
            self.admit(user_id, now);
        }
        Some(user_id)
    }

    /// Admit `user_id`: place it in the tree (see [`Members::place`]), tell
    /// it where (LJC, or TJC in the creation phase) and tell its parent.
    fn admit(&mut self, user_id: u32, now: Instant) {
        let Some(m) = self.members.get(user_id) else { return };
        let (addr, creation, is_ra) = (m.addr, m.creation, m.ra > 0);
        let to_room = self.parent.len() < usize::from(self.cfg.owner_children());
        let place = if self.is_tree() { self.members.place(addr, is_ra, to_room) } else { to_room.then_some(TO) };
        let Some(parent) = place else {
            log::info!("no parent has room for {addr}: join refused");
            self.refuse_member(user_id, now);
            return;
        };
        let start = if creation || self.is_creating() { self.isn } else { self.sender.next_psn() };
        self.members.set_parent(user_id, parent);
        let attach_by = now + self.join_timeout();
        let Some(m) = self.members.get_mut(user_id) else { return };
        m.start = start;
        m.state = MemberState::Admitted;
        m.attach_by = Some(attach_by);
        let child_id = m.child_id;
        let ty = if creation { PacketType::Tjc } else { PacketType::Ljc };
        if parent == TO {
            self.parent.add(user_id, addr, child_id, start, now);
            if creation {
                self.activate(user_id);
                self.parent.activate(user_id, start, now);
            } else {
                // Kept for it a little while, until its TJR comes.
                self.parent.pin(user_id, start, now + self.join_pin());
            }
        } else {
            self.send_notice(user_id, now);
        }
        let ctl = self.confirm_packet(user_id, ty);
        self.io.ctl.extend(ctl);
        if creation && parent == TO {
            self.probe(user_id, now);
        }
    }

    /// Refuse `user_id`'s join: LJC or TJC with F=0, and the same answer to
    /// its resent requests for a while.
    fn refuse_member(&mut self, user_id: u32, now: Instant) {
        if let Some(m) = self.members.remove(user_id) {
            if let Some(k) = self.io.keys.as_mut() {
                k.retire(m.addr, now);
            }
            if self.refused.len() >= MAX_DEPARTED {
                self.refused.retain(|_, until| *until > now);
            }
            if self.refused.len() < MAX_DEPARTED {
                self.refused.insert(m.addr, now + self.cfg.rxt * self.cfg.retries.max(1) * 2);
            }
            let ty = if m.creation { PacketType::Tjc } else { PacketType::Ljc };
            self.refuse(m.addr, ty);
        }
    }

    /// A refusal: LJC or TJC with F=0.
    fn refuse(&mut self, addr: SocketAddr, ty: PacketType) {
        let mut h = Header::new(ty, self.conn_id);
        h.flag = false;
        self.io.ctl.push_back(Ctl::new(Dest::Unicast(addr), h));
    }

    fn is_refused(&self, addr: SocketAddr, now: Instant) -> bool {
        self.refused.get(&addr).is_some_and(|until| *until > now)
    }

    /// LJR: a late join request, or a resend of one. Its PSN is the most
    /// children the TU takes as a repair agent (0: a leaf).
    fn on_ljr(&mut self, now: Instant, from: SocketAddr, p: &Packet<'_>) -> bool {
        if !matches!(self.phase, Phase::Open | Phase::Creating) {
            return false;
        }
        if self.is_refused(from, now) {
            self.refuse(from, PacketType::Ljc);
            return true;
        }
        match self.member_at(from) {
            None => {
                return self.new_member(from, false, p.header.psn, now).is_some();
            }
            // The LJC was lost: send it again (unless the application has not answered yet).
            Some(id) => {
                if self.members.get(id).is_some_and(|m| m.state != MemberState::Pending) {
                    let ctl = self.confirm_packet(id, PacketType::Ljc);
                    self.io.ctl.extend(ctl);
                }
            }
        }
        true
    }

    /// LJR with F=1: member `M`, whose parent fell silent, asks for a new one
    /// (its Acknowledgement element says where its data stands). It goes to
    /// the nearest ancestor of its old parent with room, or to the TO: only
    /// an ancestor is sure to still hold what it lacks.
    fn on_rebind(&mut self, now: Instant, from: SocketAddr, p: &Packet<'_>) -> bool {
        let claimed = p.elements.membership.map(|m| m.member_id);
        let Some(id) = self.member_at(from).filter(|id| Some(*id) == claimed) else {
            // Not (or no longer) a member: it must not wait for nothing.
            self.refuse(from, PacketType::Ljc);
            return true;
        };
        let Some(m) = self.members.get(id).filter(|m| m.state != MemberState::Pending) else { return false };
        let old = m.parent;
        let from_ancestor = match m.orphan {
            Some((_, ancestor)) => ancestor,
            None => self.members.get(old).map_or(TO, |o| o.parent),
        };
        let lsn = p.elements.ack.map(|a| Psn(a.lsn)).filter(|l| l.is_valid()).unwrap_or(m.start);
        let new = if old == TO { TO } else { self.members.place_orphan(id, from_ancestor) };
        if new == TO && self.cfg.ro == Ro::Reliable && lsn.is_before(self.parent.store.base()) {
            // Released already: it cannot be repaired without a gap.
            log::info!("member {id} rebinds from {lsn:?}, released already: ejected");
            if let Some(m) = self.depart(id, LeaveReason::Failed, now) {
                self.send_ejection(id, &m, now);
            }
            return true;
        }
        if old != TO && old != new && self.members.get(old).is_some() {
            // Its old parent may only be silent to it: tell it to let go.
            self.send_eject_order(id, old, now);
        }
        self.io.stop_repeat(Key::Notice(id));
        self.parent.remove(id);
        self.members.set_parent(id, new);
        let attach_by = now + self.join_timeout();
        let Some(m) = self.members.get_mut(id) else { return false };
        m.start = lsn;
        m.rtt = None;
        m.attach_by = Some(attach_by);
        let (addr, child_id) = (m.addr, m.child_id);
        log::info!("member {id} rebinds from parent {old} to {new}");
        if new == TO {
            self.parent.add(id, addr, child_id, lsn, now);
            self.parent.pin(id, lsn, now + rebind_grace(&self.cfg));
        } else {
            self.send_notice(id, now);
        }
        let ctl = self.confirm_packet(id, PacketType::Ljc);
        self.io.ctl.extend(ctl);
        true
    }

    /// TJR: a tree join, from a late joiner after LJC or, in the creation
    /// phase, from a TU that heard CCR (its PSN: the most children it takes
    /// as a repair agent).
    fn on_tjr(&mut self, now: Instant, from: SocketAddr, packet: &Packet<'_>) -> bool {
        if self.is_refused(from, now) {
            self.refuse(from, PacketType::Tjc);
            return true;
        }
        match self.member_at(from) {
            Some(id) => {
                let Some(m) = self.members.get(id) else { return false };
                match (m.state, m.parent) {
                    (MemberState::Pending, _) => {}
                    (_, TO) => {
                        let (start, active) = (m.start, self.parent.get(id).is_some_and(|c| c.active));
                        if !active {
                            // Its join pin expired and what it was to start with was
                            // released: it starts at the next message instead.
                            let start = if self.keep_sent && start.is_before(self.parent.store.base()) {
                                self.sender.next_psn()
                            } else {
                                start
                            };
                            if let Some(m) = self.members.get_mut(id) {
                                m.start = start;
                            }
                            self.activate(id);
                            self.parent.activate(id, start, now);
                        }
                        let ctl = self.confirm_packet(id, PacketType::Tjc);
                        self.io.ctl.extend(ctl);
                        if !active {
                            self.probe(id, now);
                        }
                    }
                    // Sent on to a repair agent in the creation phase: that TJC was lost.
                    _ if m.creation => {
                        let ctl = self.confirm_packet(id, PacketType::Tjc);
                        self.io.ctl.extend(ctl);
                    }
                    _ => return false,
                }
                true
            }
            None if self.is_creating() && packet.elements.membership.is_none_or(|m| m.member_id == 0) => {
                self.new_member(from, true, packet.header.psn, now).is_some()
            }
            None => {
                // Not admitted: a TU must join late first.
                self.refuse(from, PacketType::Tjc);
                true
            }
        }
    }

    /// TJC from a repair agent: member `M` attached to it (F=1), or it cannot
    /// take `M` (F=0: it no longer holds what `M` needs), then `M` goes on up.
    fn on_attach_report(&mut self, now: Instant, from: SocketAddr, p: &Packet<'_>) -> bool {
        let (Some(ra), Some(r)) = (self.member_at(from), p.elements.membership) else { return false };
        let id = r.member_id;
        if self.members.get(id).is_none_or(|m| m.parent != ra) {
            return true; // late news of a member gone or moved
        }
        self.io.stop_repeat(Key::Notice(id));
        if p.header.flag {
            self.activate(id);
            if let Some(m) = self.members.get_mut(id) {
                m.child_id = r.child_id;
            }
            self.parent.unpin(id);
        } else {
            let up = self.members.get(ra).map_or(TO, |m| m.parent);
            let new = self.members.place_orphan(id, up);
            self.members.set_parent(id, new);
            let Some(m) = self.members.get(id) else { return true };
            let (addr, child_id, start) = (m.addr, m.child_id, m.start);
            if new == TO {
                self.parent.add(id, addr, child_id, start, now);
            } else {
                self.send_notice(id, now);
            }
            let ctl = self.confirm_packet(id, PacketType::Ljc);
            self.io.ctl.extend(ctl);
        }
        true
    }

    /// CCC: a creation-phase confirm from a member, or a repair agent's RTT
    /// report about one of its children (Membership + Timestamp: µs).
    fn on_ccc(&mut self, from: SocketAddr, p: &Packet<'_>) -> bool {
        let Some(sender) = self.member_at(from) else { return false };
        if let (Some(r), Some(us)) = (p.elements.membership, p.elements.timestamp)
            && let Some(m) = self.members.get_mut(r.member_id).filter(|m| m.parent == sender)
        {
            m.rtt = Some(Duration::from_micros(us));
        }
        true
    }

    /// TGR: a member asks for a token with its initial PSN.
    fn on_tgr(&mut self, from: SocketAddr, isn: Psn) -> bool {
        let Some(user_id) = self.member_at(from) else {
            self.io.ctl.push_back(Tokens::refuse_stranger(self.conn_id, from, isn));
            return true;
        };
        if self.members.get(user_id).is_none_or(|m| !m.is_member()) || !isn.is_valid() {
            return false;
        }
        let io = &mut self.io;
        self.tokens.on_tgr(&self.cfg, self.conn_id, user_id, from, isn, &mut self.events, &mut io.ctl, &mut io.stats);
        // A new request ends a withdrawal (the SU gave the token back, its
        // TRC lost): no TRR may follow, it would take the next token.
        if !self.tokens.is_withdrawing(user_id) {
            self.io.stop_repeat(Key::Withdraw(user_id));
        }
        true
    }

    /// TRR: an SU returns its token.
    fn on_trr(&mut self, from: SocketAddr, token_id: u8) -> bool {
        let Some(user_id) = self.member_at(from) else { return false };
        self.tokens.on_trr(self.conn_id, user_id, from, token_id, &mut self.io.ctl, &mut self.io.stats);
        if !self.tokens.is_withdrawing(user_id) {
            self.io.stop_repeat(Key::Withdraw(user_id));
        }
        true
    }

    /// TGC from a member: its answer to a token the TO gave.
    fn on_tgc(&mut self, from: SocketAddr, p: &Packet<'_>) -> bool {
        let Some(user_id) = self.member_at(from) else { return false };
        let answered = self.tokens.on_tgc(&self.cfg, user_id, p);
        if answered {
            self.io.stop_repeat(Key::Give(user_id));
        }
        answered
    }

    /// TRC from a member: it gave back the token the TO withdrew.
    fn on_trc(&mut self, from: SocketAddr, token_id: u8) -> bool {
        let Some(user_id) = self.member_at(from) else { return false };
        let answered = self.tokens.on_trc(user_id, token_id, &mut self.io.stats);
        if answered {
            self.io.stop_repeat(Key::Withdraw(user_id));
        }
        answered
    }

    /// DATA/RDATA from an SU, tagged with its token id.
    fn on_backward(&mut self, now: Instant, from: SocketAddr, packet: &Packet<'_>) -> Outcome {
        let Some(user_id) = self.member_at(from) else { return Outcome::Source };
        let rtt = self.rtt(user_id);
        let outcome = self.tokens.on_data(&self.cfg, now, user_id, rtt, packet, &mut self.io.stats);
        self.refresh_holes();
        outcome
    }

    /// HB from an SU (see [`Tokens::on_heartbeat`]).
    fn on_su_heartbeat(&mut self, now: Instant, from: SocketAddr, packet: &Packet<'_>) -> Outcome {
        let Some(user_id) = self.member_at(from) else { return Outcome::Source };
        let io = &mut self.io;
        self.tokens.on_heartbeat(&self.cfg, now, self.conn_id, user_id, packet, &mut io.ctl, &mut io.stats)
    }

    /// ULR with F=1: a child of the TO leaves, or a repair agent reports
    /// that one of its children is gone (Membership: that child; PSN: why),
    /// which the TO confirms by echoing it.
    fn on_ulr(&mut self, now: Instant, from: SocketAddr, p: &Packet<'_>) -> bool {
        let Some(sender) = self.member_at(from) else { return false };
        let about = p.elements.membership.map_or(sender, |m| m.member_id);
        if about == sender {
            // Answered once: if the leave was forged, the real member learns
            // it is no longer one (and is reset) instead of being dropped silently.
            if let Some(m) = self.depart(sender, LeaveReason::Left, now) {
                let mut h = Header::new(PacketType::Ulr, self.conn_id);
                h.flag = false;
                let mut ctl = Ctl::new(Dest::Unicast(m.addr), h);
                ctl.elements.membership = Some(Membership::of(sender));
                self.io.ctl.push_back(ctl);
            }
            return true;
        }
        let mut h = Header::new(PacketType::Ulr, self.conn_id);
        h.flag = true;
        let mut confirm = Ctl::new(Dest::Unicast(from), h);
        confirm.elements.membership = Some(Membership::of(about));
        self.io.ctl.push_back(confirm);
        self.io.stop_repeat(Key::EjectOrder(about));
        if self.members.get(about).is_some_and(|m| m.parent == sender) {
            let reason = u8::try_from(p.header.psn).ok().and_then(LeaveReason::from_u8).unwrap_or(LeaveReason::Failed);
            self.depart(about, reason, now);
        }
        true
    }

    /// ACK from a child: its Stable moves the stable point, and the losses it
    /// reports are repaired, each at most once per RXT per destination
    /// (draft: "ACK generation"). In the unreliable mode ACKs only report.
    fn on_ack(&mut self, now: Instant, from: SocketAddr, packet: &Packet<'_>) -> Outcome {
        let (Some(user_id), Some(ack)) = (self.parent.at(from), packet.elements.ack) else {
            return Outcome::Unexpected;
        };
        let repair = (self.cfg.ro != Ro::Unreliable).then(|| self.repair_dest(from));
        let (end, next) = (self.sender.first_unsent(), self.sender.next_psn());
        // An LSN beyond what was sent is a lie.
        if !self.parent.on_ack(user_id, &ack, end, next, repair, now, self.cfg.rxt) {
            return Outcome::Range;
        }
        // Its round trip still not measured (the first HB or its answer was
        // lost): asked again, for its repairs are backed off by RXT until then.
        if self.parent.unmeasured(user_id, now, self.cfg.probe_interval()) {
            self.probe(user_id, now);
        }
        if let Some(r) = packet.elements.report.filter(|_| self.cc.mode() == CcMode::Tfmcc) {
            self.cc.on_report(now, r);
            if r.measured && r.member == user_id {
                self.parent.note_rtt(user_id, Duration::from_micros(u64::from(r.rtt_us)));
            }
        }
        self.update_stable();
        Outcome::Taken
    }

    /// Release the DATA every child's subtree has.
    fn update_stable(&mut self) {
        self.parent.release(self.sender.first_unsent());
    }

    /// HB to the group every HGT: the lowest PSN still repairable, a
    /// timestamp, and the child that must answer (draft: "Tree maintenance").
    fn heartbeat(&mut self, now: Instant) {
        let mut ctl = self.parent.heartbeat(self.conn_id, self.lowest_repairable(), Dest::Group, now);
        if self.cc.mode() == CcMode::Tfmcc {
            ctl.elements.rate = Some(self.cc.info(now));
        }
        self.io.ctl.push_back(ctl);
    }

    /// HBACK from a child (an answer to HB, or its keep-alive): the echoed
    /// timestamp, if any, gives its RTT; the Acknowledgement element counts
    /// as an ACK.
    fn on_hback(&mut self, now: Instant, from: SocketAddr, packet: &Packet<'_>) -> Outcome {
        let Some(id) = self.parent.at(from) else { return Outcome::Unexpected };
        // The round trip first: the acknowledgement's repairs are backed off
        // by it, and a child just measured is not probed again.
        if let Some(ts) = packet.elements.timestamp
            && let Some(rtt) = self.parent.on_timestamp(id, ts, now)
        {
            self.cc.note_rtt(rtt);
        }
        if packet.elements.ack.is_some() && self.on_ack(now, from, packet) == Outcome::Range {
            return Outcome::Range;
        }
        Outcome::Taken
    }

    /// Eject every child silent for FDN x HGT, or stuck that long (data
    /// waits for it and it acknowledges nothing, whatever else it sends): it
    /// is taken for dead, and what the TO kept only for it is released.
    fn detect_failures(&mut self, now: Instant) {
        let limit = self.failure_time();
        let silent = self.parent.silent(now, limit);
        // A member that makes no progress (a dead one that still talks, or
        // one whose application stopped reading): ECTP_SLOW_TIMEOUT.
        let slow = self.cfg.slow_time();
        let stuck = self.parent.stuck(now, self.sender.first_unsent(), slow);
        let why =
            silent.into_iter().map(|id| (id, "silent", limit)).chain(stuck.into_iter().map(|id| (id, "stuck", slow)));
        for (id, why, limit) in why {
            log::info!("member {id} {why} for {limit:?}: ejected");
            if let Some(m) = self.depart(id, LeaveReason::Failed, now) {
                self.send_ejection(id, &m, now);
            }
        }
    }

    /// Members that did not attach in time (admitted, or rebinding, and no
    /// TJR came) are dropped; orphans that did not rebind within the grace
    /// period are lost, and their own children become orphans in turn.
    fn sweep_orphans(&mut self, now: Instant) {
        for id in self.members.unattached(now) {
            if self.members.get(id).is_some_and(|m| m.state == MemberState::Pending) {
                log::info!("the join request of member {id} was not answered in time: forgotten");
            } else {
                log::info!("member {id} did not attach in time");
            }
            // A joiner that never attached gave up by itself (its TJR retries
            // are over): nothing is sent to it. A member that was rebinding is told.
            let was_member = self.members.get(id).is_some_and(|m| m.is_member());
            if let Some(m) = self.depart(id, LeaveReason::Failed, now)
                && was_member
            {
                self.send_ejection(id, &m, now);
            }
        }
        for id in self.members.lost_orphans(now, rebind_grace(&self.cfg)) {
            log::info!("member {id} did not rebind after its parent was lost");
            if let Some(m) = self.depart(id, LeaveReason::Failed, now) {
                self.send_ejection(id, &m, now);
            }
        }
    }

    /// Member `id` is in the tree now (attached to its parent): counted and
    /// logged once.
    fn activate(&mut self, id: u32) {
        if self.members.activate(id) {
            self.io.stats.members_joined += 1;
            let (addr, parent) = self.members.get(id).map_or((self.local, TO), |m| (m.addr, m.parent));
            log::info!("member {id} at {addr} joined under parent {parent}");
        }
    }

    /// Member `user_id` stops being one, for `reason`: out of the table and,
    /// if it was the TO's child, out of the children (a child with
    /// descendants leaves a pin at its last stable point while they rebind);
    /// its children are orphans; what it sent comes in, its token is freed;
    /// the application hears of it once.
    fn depart(&mut self, user_id: u32, reason: LeaveReason, now: Instant) -> Option<Member> {
        let m = self.members.remove(user_id)?;
        if let Some(k) = self.io.keys.as_mut() {
            // Kept a while, to answer it if it comes back not knowing.
            k.retire(m.addr, now);
        }
        self.tokens.forget(user_id, &mut self.io.stats);
        self.io.stop_repeat(Key::Notice(user_id));
        self.io.stop_repeat(Key::Give(user_id));
        self.io.stop_repeat(Key::Withdraw(user_id));
        self.parent.unpin(user_id);
        if let Some(c) = self.parent.remove(user_id)
            && c.adn > 1
        {
            self.parent.pin(user_id, c.stable, now + rebind_grace(&self.cfg));
        }
        self.members.orphan_children(&m, now);
        // Only a member that was in the tree stops being one.
        if m.is_member() {
            self.events.push_back(Event::Left { user_id, reason });
            let count = match reason {
                LeaveReason::Left => &mut self.io.stats.members_left,
                LeaveReason::Ejected => &mut self.io.stats.members_ejected,
                LeaveReason::Failed => &mut self.io.stats.members_failed,
            };
            *count += 1;
            log::info!("member {user_id} at {} {}", m.addr, reason.describe());
        }
        if m.state != MemberState::Pending {
            if self.departed.len() >= MAX_DEPARTED {
                self.departed.retain(|_, d| d.until > now);
            }
            if self.departed.len() < MAX_DEPARTED {
                let until = now + self.failure_time() * 10;
                self.departed.insert(m.addr, Departed { member_id: user_id, until, next_reply: now });
            }
        }
        self.update_stable();
        Some(m)
    }

    /// The ULRs that end `user_id` (gone from the table as `m`): F=0 to it,
    /// a few times, and the order to drop it to its parent when that is a
    /// repair agent.
    fn send_ejection(&mut self, user_id: u32, m: &Member, now: Instant) {
        let mut h = Header::new(PacketType::Ulr, self.conn_id);
        h.flag = false;
        let mut ctl = Ctl::new(Dest::Unicast(m.addr), h);
        ctl.elements.membership = Some(Membership { tree_level: 1, child_id: m.child_id, ..Membership::of(user_id) });
        self.io.repeat(Key::Eject(user_id), ctl, ULR_SENDS, self.cfg.rxt, now);
        if m.parent != TO && self.members.get(m.parent).is_some() {
            self.send_eject_order(user_id, m.parent, now);
        }
    }

    /// ULR with F=0 to repair agent `parent`, naming its child `user_id`:
    /// drop it. Repeated until the agent's departure report.
    fn send_eject_order(&mut self, user_id: u32, parent: u32, now: Instant) {
        let mut h = Header::new(PacketType::Ulr, self.conn_id);
        h.flag = false;
        let mut ctl = Ctl::new(Dest::Unicast(self.parent_addr(parent)), h);
        ctl.elements.membership = Some(Membership { parent_id: parent, ..Membership::of(user_id) });
        let (limit, rxt) = (self.cfg.retries, self.cfg.rxt);
        self.io.repeat(Key::EjectOrder(user_id), ctl, limit, rxt, now);
    }
}
