//! The TC-Owner (TO): creates the connection, admits members, multicasts the
//! forward data, hands out tokens and receives the SUs' backward data.
//!
//! Draft clauses: "Connection creation", "Late join", "Forward data",
//! "Tokens", "Backward data", "Leave, pause, termination". The TO is the
//! root of the control tree: its [`Parent`] role keeps the DATA until its
//! children have it; its [`Tokens`] table runs the backward channels.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::parent::Parent;
use super::receiver::Message;
use super::retry::Key;
use super::sender::{QueueError, Sender};
use super::timer::Timer;
use super::tokens::Tokens;
use super::{Config, Ctl, Dest, Event, Io, Rng, Stats, Transmit};
use crate::wire::{Header, Membership, Packet, PacketType, Psn, Ro};

/// How often CTR is multicast at termination, RXT/2 apart (it has no
/// confirm; a TU that misses every copy sees ECONNRESET after FDN x HGT).
const CTR_SENDS: u32 = 6;
/// How often an ejection's ULR is sent (it has no confirm).
const ULR_SENDS: u32 = 3;

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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MemberState {
    /// Asked to join; waiting for the application's confirm.
    Pending,
    /// Accepted (LJC sent); waiting for its TJR.
    Admitted,
    /// In the control tree (TJC sent).
    Active,
}

/// What the TO knows of one member: the membership is owned at the top.
#[derive(Debug)]
struct Member {
    addr: SocketAddr,
    state: MemberState,
    /// Joined by TJR in the creation phase rather than by LJR.
    creation: bool,
    child_id: u16,
    /// First PSN this member delivers (LJC's and TJC's PSN).
    start: Psn,
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
    members: BTreeMap<u32, Member>,
    by_addr: HashMap<SocketAddr, u32>,
    next_user_id: u32,
    /// Addresses refused recently (until when), so that a resent LJR gets the same answer.
    refused: HashMap<SocketAddr, Instant>,
    tokens: Tokens,
    events: VecDeque<Event>,
    /// NDATA: the current interval while idle.
    ndata_interval: Duration,
    io: Io,
}

impl Owner {
    /// A new connection owned by the TO at `local` (its unicast address and
    /// the group port). Draws the connection ID and ISN from `rng`. With a
    /// creation time, CCR goes out at once and every RXT until CCT expires.
    pub fn new(cfg: Config, local: SocketAddr, rng: &mut Rng, now: Instant) -> Owner {
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
            members: BTreeMap::new(),
            by_addr: HashMap::new(),
            next_user_id: 1,
            refused: HashMap::new(),
            tokens: Tokens::new(),
            events: VecDeque::new(),
            ndata_interval: cfg.rxt,
            io: Io::default(),
            cfg,
        };
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

    /// Members in the control tree.
    pub fn active_members(&self) -> usize {
        self.members.values().filter(|m| m.state == MemberState::Active).count()
    }

    /// The round-trip time measured to member `user_id`, once known.
    pub fn rtt(&self, user_id: u32) -> Option<Duration> {
        self.parent.get(user_id).and_then(|c| c.rtt)
    }

    /// DATA packets queued or kept for repair: what the window bounds.
    pub fn in_window(&self) -> usize {
        self.sender.unsent() + self.parent.store.len()
    }

    /// Member ids in the control tree, in order.
    pub fn member_ids(&self) -> Vec<u32> {
        self.members.iter().filter(|(_, m)| m.state == MemberState::Active).map(|(id, _)| *id).collect()
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
        match self.members.get(&user_id) {
            Some(m) if m.state == MemberState::Pending => {}
            _ => return Err(OwnerError::NotFound),
        }
        if accept {
            self.admit(user_id, now);
        } else if let Some(m) = self.members.remove(&user_id) {
            self.by_addr.remove(&m.addr);
            self.refused.insert(m.addr, now + self.cfg.rxt * self.cfg.retries.max(1) * 2);
            let ty = if m.creation { PacketType::Tjc } else { PacketType::Ljc };
            self.refuse(m.addr, ty);
        }
        Ok(())
    }

    /// Answer a token request (`mtoken_confirm`). A grant fails into a
    /// refusal when all `max_tokens` tokens are in use.
    pub fn confirm_token(&mut self, user_id: u32, accept: bool) -> Result<(), OwnerError> {
        let addr = self.members.get(&user_id).ok_or(OwnerError::NotFound)?.addr;
        self.tokens.confirm(&self.cfg, self.conn_id, user_id, addr, accept, &mut self.io.ctl)
    }

    /// Eject a member (`mleave` on the TO): ULR with F=0, sent a few times
    /// since it has no confirm; its token is freed.
    pub fn eject(&mut self, user_id: u32, now: Instant) -> Result<(), OwnerError> {
        let m = self.remove_member(user_id).ok_or(OwnerError::NotFound)?;
        let mut h = Header::new(PacketType::Ulr, self.conn_id);
        h.flag = false;
        let mut ctl = Ctl::new(Dest::Unicast(m.addr), h);
        ctl.elements.membership = Some(Membership { tree_level: 1, child_id: m.child_id, member_id: user_id });
        self.io.repeat(Key::Eject(user_id), ctl, ULR_SENDS, self.cfg.rxt, now);
        self.update_stable();
        Ok(())
    }

    /// Terminate (`mterminate`): the data already queued still goes out, then
    /// CTR (F=0) is multicast; poll [`Owner::is_closed`].
    pub fn terminate(&mut self) {
        if matches!(self.phase, Phase::Open | Phase::Creating) {
            self.phase = Phase::Draining;
            self.io.timers.stop(Timer::CreationEnd);
            self.io.timers.stop(Timer::Ccr);
        }
    }

    // ----- driver calls -----

    /// Take one received datagram.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
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
        if let Some(id) = self.parent.at(from) {
            self.parent.heard(id, now);
        }
        let handled = match h.packet_type {
            PacketType::Ljr => self.on_ljr(now, from),
            PacketType::Tjr => self.on_tjr(now, from, &packet),
            PacketType::Ccc => self.member_at(from).is_some(),
            PacketType::Tgr => self.on_tgr(from, Psn(h.psn)),
            PacketType::Trr => self.on_trr(from, h.token_id),
            PacketType::Data | PacketType::Rdata => self.on_backward(from, &packet),
            PacketType::Ulr if h.flag => self.on_leave(from),
            PacketType::Ack => self.on_ack(now, from, &packet),
            PacketType::Hback => self.on_hback(now, from, &packet),
            PacketType::Hb => self.on_su_heartbeat(from, &packet),
            _ => false,
        };
        if !handled {
            self.io.stats.dropped_unexpected += 1;
        }
    }

    /// Next datagram to send, written into `buf` (at least
    /// [`super::MAX_DATAGRAM`] bytes). Control packets go first, then
    /// repairs, then new data.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if let Some(t) = self.io.poll_ctl(buf) {
            return t;
        }
        while let Some((psn, dest)) = self.parent.next_repair() {
            if let Some(seg) = self.parent.store.get(psn) {
                let res = seg.emit(PacketType::Rdata, self.conn_id, 0, buf);
                self.io.stats.rdata_sent += 1;
                return self.io.sent(res, dest);
            }
        }
        if let Some(seg) = self.sender.next_unsent() {
            let res = seg.emit(PacketType::Data, self.conn_id, 0, buf);
            self.ndata_interval = self.cfg.rxt;
            self.io.timers.set(Timer::Ndata, now + self.ndata_interval);
            self.io.stats.data_sent += 1;
            if self.keep_sent {
                self.parent.store.insert(seg);
            }
            // With no child to wait for, what was just sent is stable at once
            // (ACKs move the stable point otherwise).
            if self.parent.is_empty() {
                self.update_stable();
            }
            return self.io.sent(res, Dest::Group);
        }
        // Termination waits until every member has everything (or was ejected).
        if self.phase == Phase::Draining && self.parent.store.is_empty() {
            self.phase = Phase::Terminating;
            self.io.timers.stop(Timer::Heartbeat);
            let mut h = Header::new(PacketType::Ctr, self.conn_id);
            h.psn = self.sender.last_psn().0;
            self.io.repeat(Key::Ctr, Ctl::new(Dest::Group, h), CTR_SENDS, self.cfg.rxt / 2, now);
            return self.poll_transmit(now, buf);
        }
        None
    }

    /// The next application event (join and token requests).
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
                    self.refused.retain(|_, until| *until > now);
                    self.io.timers.set(Timer::Heartbeat, now + self.cfg.hgt);
                }
                // NDATA while idle: tells receivers the next PSN, so a lost tail shows.
                Timer::Ndata if !self.sender.has_unsent() && self.phase == Phase::Open => {
                    let mut h = Header::new(PacketType::Ndata, self.conn_id);
                    h.psn = self.sender.next_psn().0;
                    self.io.ctl.push_back(Ctl::new(Dest::Group, h));
                    self.ndata_interval = (self.ndata_interval * 2).min(self.cfg.hgt);
                    self.io.timers.set(Timer::Ndata, now + self.ndata_interval);
                }
                Timer::Repeat => {
                    for key in self.io.poll_repeats(now) {
                        if key == Key::Ctr {
                            self.phase = Phase::Closed;
                            self.io.timers.stop_all();
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
        self.io.ctl.push_back(ctl);
        self.io.timers.set(Timer::Ccr, now + self.cfg.rxt);
    }

    /// How long a member may stay silent before it is taken for dead.
    fn failure_time(&self) -> Duration {
        self.cfg.hgt * u32::from(self.cfg.fdn.max(1))
    }

    fn member_at(&self, addr: SocketAddr) -> Option<u32> {
        self.by_addr.get(&addr).copied()
    }

    fn membership(&self, user_id: u32) -> Option<Membership> {
        self.members.get(&user_id).map(|m| Membership { tree_level: 1, child_id: m.child_id, member_id: user_id })
    }

    /// LJC (F=1) or TJC (F=1) for an admitted member; both carry its start PSN.
    fn confirm_packet(&self, user_id: u32, ty: PacketType) -> Option<Ctl> {
        let m = self.members.get(&user_id)?;
        let mut h = Header::new(ty, self.conn_id);
        h.flag = true;
        h.psn = m.start.0;
        let mut ctl = Ctl::new(Dest::Unicast(m.addr), h);
        ctl.elements.membership = self.membership(user_id);
        if ty == PacketType::Ljc {
            ctl.elements.connection = Some(self.cfg.connection_params());
            // The recommended parent: the TO itself while the tree is flat.
            ctl.elements.address = Some(self.local);
        }
        Some(ctl)
    }

    fn new_member(&mut self, addr: SocketAddr, creation: bool, now: Instant) -> u32 {
        let user_id = self.next_user_id;
        self.next_user_id = self.next_user_id.wrapping_add(1).max(1);
        let start = if creation { self.isn } else { self.sender.next_psn() };
        let child_id = (user_id & 0xffff) as u16;
        self.members.insert(user_id, Member { addr, state: MemberState::Pending, creation, child_id, start });
        self.by_addr.insert(addr, user_id);
        if self.cfg.ask_joins {
            self.events.push_back(Event::JoinRequest { user_id, addr });
        } else {
            self.admit(user_id, now);
        }
        user_id
    }

    fn admit(&mut self, user_id: u32, now: Instant) {
        let next = self.sender.next_psn();
        let (creating, isn) = (self.is_creating(), self.isn);
        let Some(m) = self.members.get_mut(&user_id) else { return };
        let ty = if m.creation {
            m.state = MemberState::Active;
            PacketType::Tjc
        } else {
            // A late joiner starts at the next message boundary; during the
            // creation phase, an LJR joins from the ISN like a TJR would.
            m.start = if creating { isn } else { next };
            m.state = MemberState::Admitted;
            PacketType::Ljc
        };
        let (addr, child_id, start, active) = (m.addr, m.child_id, m.start, m.state == MemberState::Active);
        self.parent.add(user_id, addr, child_id, start, now);
        if active {
            self.parent.activate(user_id);
        }
        let ctl = self.confirm_packet(user_id, ty);
        self.io.ctl.extend(ctl);
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

    /// LJR: a late join request, or a resend of one.
    fn on_ljr(&mut self, now: Instant, from: SocketAddr) -> bool {
        if !matches!(self.phase, Phase::Open | Phase::Creating) {
            return false;
        }
        if self.is_refused(from, now) {
            self.refuse(from, PacketType::Ljc);
            return true;
        }
        match self.member_at(from) {
            None => {
                self.new_member(from, false, now);
            }
            // The LJC was lost: send it again (unless the application has not answered yet).
            Some(id) => {
                if self.members.get(&id).is_some_and(|m| m.state != MemberState::Pending) {
                    let ctl = self.confirm_packet(id, PacketType::Ljc);
                    self.io.ctl.extend(ctl);
                }
            }
        }
        true
    }

    /// TJR: a tree join, from a late joiner after LJC or, in the creation
    /// phase, from a TU that heard CCR.
    fn on_tjr(&mut self, now: Instant, from: SocketAddr, packet: &Packet<'_>) -> bool {
        if self.is_refused(from, now) {
            self.refuse(from, PacketType::Tjc);
            return true;
        }
        match self.member_at(from) {
            Some(id) => {
                let Some(m) = self.members.get_mut(&id) else { return false };
                if m.state != MemberState::Pending {
                    m.state = MemberState::Active;
                    self.parent.activate(id);
                    let ctl = self.confirm_packet(id, PacketType::Tjc);
                    self.io.ctl.extend(ctl);
                }
                true
            }
            None if self.is_creating() && packet.elements.membership.is_none_or(|m| m.member_id == 0) => {
                self.new_member(from, true, now);
                true
            }
            None => {
                // Not admitted: a TU must join late first.
                self.refuse(from, PacketType::Tjc);
                true
            }
        }
    }

    /// TGR: a member asks for a token with its initial PSN.
    fn on_tgr(&mut self, from: SocketAddr, isn: Psn) -> bool {
        let Some(user_id) = self.member_at(from) else {
            self.io.ctl.push_back(Tokens::refuse_stranger(self.conn_id, from, isn));
            return true;
        };
        if self.members.get(&user_id).is_none_or(|m| m.state != MemberState::Active) || !isn.is_valid() {
            return false;
        }
        let io = &mut self.io;
        self.tokens.on_tgr(&self.cfg, self.conn_id, user_id, from, isn, &mut self.events, &mut io.ctl, &mut io.stats);
        true
    }

    /// TRR: an SU returns its token.
    fn on_trr(&mut self, from: SocketAddr, token_id: u8) -> bool {
        let Some(user_id) = self.member_at(from) else { return false };
        self.tokens.on_trr(self.conn_id, user_id, from, token_id, &mut self.io.ctl, &mut self.io.stats);
        true
    }

    /// DATA/RDATA from an SU, tagged with its token id.
    fn on_backward(&mut self, from: SocketAddr, packet: &Packet<'_>) -> bool {
        let Some(user_id) = self.member_at(from) else { return false };
        let handled = self.tokens.on_data(user_id, packet, &mut self.io.stats);
        self.refresh_holes();
        handled
    }

    /// HB from an SU (see [`Tokens::on_heartbeat`]).
    fn on_su_heartbeat(&mut self, from: SocketAddr, packet: &Packet<'_>) -> bool {
        let Some(user_id) = self.member_at(from) else { return false };
        let io = &mut self.io;
        self.tokens.on_heartbeat(&self.cfg, self.conn_id, user_id, packet, &mut io.ctl, &mut io.stats)
    }

    /// ULR with F=1: a member leaves.
    fn on_leave(&mut self, from: SocketAddr) -> bool {
        match self.member_at(from) {
            Some(id) => {
                self.remove_member(id);
                self.update_stable();
                true
            }
            None => false,
        }
    }

    /// ACK from a child: its LSN moves the stable point, and the losses it
    /// reports are repaired by RDATA to the group, each at most once per RXT
    /// (draft: "ACK generation"). In the unreliable mode ACKs only report.
    fn on_ack(&mut self, now: Instant, from: SocketAddr, packet: &Packet<'_>) -> bool {
        let (Some(user_id), Some(ack)) = (self.parent.at(from), packet.elements.ack) else { return false };
        let repair = (self.cfg.ro != Ro::Unreliable).then_some(Dest::Group);
        let (end, next) = (self.sender.first_unsent(), self.sender.next_psn());
        if !self.parent.on_ack(user_id, &ack, end, next, repair, now, self.cfg.rxt) {
            return false;
        }
        self.update_stable();
        true
    }

    /// Release the DATA every child has.
    fn update_stable(&mut self) {
        self.parent.release(self.sender.first_unsent());
    }

    /// HB to the group every HGT: the lowest PSN still repairable, a
    /// timestamp, and the child that must answer (draft: "Tree maintenance").
    fn heartbeat(&mut self, now: Instant) {
        let lowest = self.parent.store.lowest().unwrap_or(self.sender.first_unsent());
        let ctl = self.parent.heartbeat(self.conn_id, lowest, Dest::Group, now);
        self.io.ctl.push_back(ctl);
    }

    /// HBACK from a child (an answer to HB, or its keep-alive): the echoed
    /// timestamp, if any, gives its RTT; the Acknowledgement element counts
    /// as an ACK.
    fn on_hback(&mut self, now: Instant, from: SocketAddr, packet: &Packet<'_>) -> bool {
        let Some(id) = self.member_at(from) else { return false };
        if packet.elements.ack.is_some() {
            self.on_ack(now, from, packet);
        }
        if let Some(ts) = packet.elements.timestamp {
            self.parent.on_timestamp(id, ts, now);
        }
        true
    }

    /// Eject every member silent for FDN x HGT: it is taken for dead, and
    /// what the TO kept only for it is released.
    fn detect_failures(&mut self, now: Instant) {
        let limit = self.failure_time();
        for id in self.parent.silent(now, limit) {
            log::info!("member {id} silent for {limit:?}: ejected");
            let _ = self.eject(id, now);
        }
    }

    fn remove_member(&mut self, user_id: u32) -> Option<Member> {
        let m = self.members.remove(&user_id)?;
        self.by_addr.remove(&m.addr);
        // Deliver what it sent before it left, then free its token.
        self.tokens.forget(user_id, &mut self.io.stats);
        self.parent.remove(user_id);
        Some(m)
    }
}
