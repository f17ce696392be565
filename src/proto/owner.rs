//! The TC-Owner (TO): creates the connection, admits members, multicasts the
//! forward data, hands out tokens and receives the SUs' backward data.
//!
//! Draft clauses: "Connection creation", "Late join", "Forward data",
//! "Tokens", "Backward data", "Leave, pause, termination".

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::ack::{RepairLimiter, ack_of};
use super::receiver::{Accept, Message, Receiver};
use super::sender::{QueueError, Sender};
use super::{Config, Ctl, Dest, Event, MAX_MESSAGE, MAX_WINDOW, Rng, Stats, Transmit};
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
    /// Empty message, or longer than [`MAX_MESSAGE`].
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokenState {
    None,
    /// Asked with this initial PSN; waiting for the application's confirm.
    Pending(Psn),
    /// Holds token `id`, granted for initial PSN `isn`.
    Held {
        id: u8,
        isn: Psn,
    },
    /// The last request with this initial PSN was refused.
    Refused(Psn),
}

#[derive(Debug)]
struct Member {
    addr: SocketAddr,
    state: MemberState,
    /// Joined by TJR in the creation phase rather than by LJR.
    creation: bool,
    child_id: u16,
    /// First PSN this member delivers (LJC's and TJC's PSN).
    start: Psn,
    token: TokenState,
    /// Lowest PSN it has not received, from its ACKs (its start before any).
    lsn: Psn,
    /// When a packet from it last arrived (failure detection).
    heard: Instant,
    /// Round-trip time measured by HB/HBACK.
    rtt: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Connection creation: CCR is multicast every RXT until `ends`.
    Creating {
        ends: Instant,
    },
    Open,
    /// `mterminate`: the data still queued goes out, then CTR.
    Draining,
    /// CTR sent `sent` times; the next at `next`.
    Terminating {
        sent: u32,
        next: Instant,
    },
    Closed,
}

/// A scheduled unconfirmed packet sent a few times (ejection's ULR).
#[derive(Clone, Copy, Debug)]
struct Repeat {
    ctl: Ctl,
    left: u32,
    next: Instant,
}

/// The TO's state machine. See the [module docs](super) for the call order.
#[derive(Debug)]
pub struct Owner {
    cfg: Config,
    conn_id: u32,
    local: SocketAddr,
    phase: Phase,
    ccr_next: Instant,
    isn: Psn,
    sender: Sender,
    members: BTreeMap<u32, Member>,
    by_addr: HashMap<SocketAddr, u32>,
    next_user_id: u32,
    /// Addresses refused recently, so that a resent LJR gets the same answer.
    refused: HashMap<SocketAddr, Instant>,
    /// Which member holds each token id (index 0 unused: the TO itself).
    tokens: Vec<Option<u32>>,
    backward: BTreeMap<u8, Receiver>,
    inbox: VecDeque<Incoming>,
    ctl: VecDeque<Ctl>,
    repeats: Vec<Repeat>,
    events: VecDeque<Event>,
    /// NDATA: when to send the next one while idle, and the current interval.
    ndata_next: Option<Instant>,
    ndata_interval: Duration,
    /// Forward repair: PSNs to send again as RDATA, and the back-off.
    rdata: VecDeque<Psn>,
    repairs: RepairLimiter,
    /// Timestamps are microseconds since this instant.
    epoch: Instant,
    hb_next: Instant,
    /// Which member the next HB asks to answer (round robin).
    hb_turn: u32,
    stats: Stats,
}

impl Owner {
    /// A new connection owned by the TO at `local` (its unicast address and
    /// the group port). Draws the connection ID and ISN from `rng`. With a
    /// creation time, CCR goes out at once and every RXT until CCT expires.
    pub fn new(cfg: Config, local: SocketAddr, rng: &mut Rng, now: Instant) -> Owner {
        let isn = Psn(rng.nonzero_u32());
        // Sent DATA is kept for repair, except in the unreliable mode.
        let keep_sent = cfg.ro != Ro::Unreliable;
        let phase = if cfg.cct.is_zero() { Phase::Open } else { Phase::Creating { ends: now + cfg.cct } };
        Owner {
            conn_id: rng.nonzero_u32(),
            local,
            phase,
            ccr_next: now,
            isn,
            sender: Sender::new(isn, cfg.mss, cfg.window, 0, keep_sent),
            members: BTreeMap::new(),
            by_addr: HashMap::new(),
            next_user_id: 1,
            refused: HashMap::new(),
            tokens: vec![None; 256],
            backward: BTreeMap::new(),
            inbox: VecDeque::new(),
            ctl: VecDeque::new(),
            repeats: Vec::new(),
            events: VecDeque::new(),
            ndata_next: None,
            ndata_interval: cfg.rxt,
            rdata: VecDeque::new(),
            repairs: RepairLimiter::default(),
            epoch: now,
            hb_next: now + cfg.hgt,
            hb_turn: 0,
            stats: Stats::default(),
            cfg,
        }
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
        &self.stats
    }

    /// Whether the creation phase (CCT) is still running.
    pub fn is_creating(&self) -> bool {
        matches!(self.phase, Phase::Creating { .. })
    }

    /// Members in the control tree.
    pub fn active_members(&self) -> usize {
        self.members.values().filter(|m| m.state == MemberState::Active).count()
    }

    /// The round-trip time measured to member `user_id`, once known.
    pub fn rtt(&self, user_id: u32) -> Option<Duration> {
        self.members.get(&user_id).and_then(|m| m.rtt)
    }

    /// DATA packets queued or kept for repair: what the window bounds.
    pub fn in_window(&self) -> usize {
        self.sender.in_window()
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
        if !matches!(self.phase, Phase::Open | Phase::Creating { .. }) {
            return Err(OwnerError::Terminated);
        }
        // Semi-reliable: the buffer is bounded, not the sending; the oldest
        // data goes (HB then tells receivers what is no longer repairable).
        if self.cfg.ro == Ro::SemiReliable {
            self.sender.make_room(msg.len());
        }
        self.sender.queue(msg).map_err(|e| match e {
            QueueError::WouldBlock => OwnerError::WouldBlock,
            QueueError::BadLength => OwnerError::BadLength,
        })
    }

    /// Whether a message of `len` bytes would be queued now.
    pub fn can_send(&self, len: usize) -> bool {
        self.sender.has_room(len) || self.cfg.ro == Ro::SemiReliable
    }

    /// The next whole message from an SU (`mrecvmsg` on the TO).
    pub fn recv(&mut self) -> Option<Incoming> {
        self.inbox.pop_front()
    }

    /// Whether `recv` has something.
    pub fn has_incoming(&self) -> bool {
        !self.inbox.is_empty()
    }

    /// Answer a join request (`mjoin_confirm`).
    pub fn confirm_join(&mut self, user_id: u32, accept: bool, now: Instant) -> Result<(), OwnerError> {
        match self.members.get(&user_id) {
            Some(m) if m.state == MemberState::Pending => {}
            _ => return Err(OwnerError::NotFound),
        }
        if accept {
            self.admit(user_id);
        } else if let Some(m) = self.members.remove(&user_id) {
            self.by_addr.remove(&m.addr);
            self.refused.insert(m.addr, now + self.cfg.rxt * self.cfg.retries.max(1) * 2);
            let ty = if m.creation { PacketType::Tjc } else { PacketType::Ljc };
            let mut h = Header::new(ty, self.conn_id);
            h.flag = false;
            self.ctl.push_back(Ctl::new(Dest::Unicast(m.addr), h));
        }
        Ok(())
    }

    /// Answer a token request (`mtoken_confirm`). A grant fails into a
    /// refusal when all `max_tokens` tokens are in use.
    pub fn confirm_token(&mut self, user_id: u32, accept: bool) -> Result<(), OwnerError> {
        let isn = match self.members.get(&user_id).map(|m| m.token) {
            Some(TokenState::Pending(isn)) => isn,
            _ => return Err(OwnerError::NotFound),
        };
        let id = if accept { self.free_token_id() } else { None };
        let Some(m) = self.members.get_mut(&user_id) else { return Err(OwnerError::NotFound) };
        match id {
            Some(id) => {
                m.token = TokenState::Held { id, isn };
                self.tokens[usize::from(id)] = Some(user_id);
                self.backward.insert(id, Receiver::new(isn, MAX_WINDOW as usize, MAX_MESSAGE));
            }
            None => m.token = TokenState::Refused(isn),
        }
        let addr = m.addr;
        self.ctl.push_back(self.tgc(addr, isn, id));
        Ok(())
    }

    /// Eject a member (`mleave` on the TO): ULR with F=0, sent a few times
    /// since it has no confirm; its token is freed.
    pub fn eject(&mut self, user_id: u32, now: Instant) -> Result<(), OwnerError> {
        let m = self.remove_member(user_id).ok_or(OwnerError::NotFound)?;
        let mut h = Header::new(PacketType::Ulr, self.conn_id);
        h.flag = false;
        let mut ctl = Ctl::new(Dest::Unicast(m.addr), h);
        ctl.elements.membership = Some(Membership { tree_level: 1, child_id: m.child_id, member_id: user_id });
        self.repeats.push(Repeat { ctl, left: ULR_SENDS, next: now });
        self.update_stable();
        Ok(())
    }

    /// Terminate (`mterminate`): the data already queued still goes out, then
    /// CTR (F=0) is multicast; poll [`Owner::is_closed`].
    pub fn terminate(&mut self) {
        if matches!(self.phase, Phase::Open | Phase::Creating { .. }) {
            self.phase = Phase::Draining;
        }
    }

    // ----- driver calls -----

    /// Take one received datagram.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Some(packet) = self.stats.parse(datagram) else { return };
        let h = packet.header;
        // An LJR may come before the TU knows the connection ID.
        if h.connection_id != self.conn_id && !(h.packet_type == PacketType::Ljr && h.connection_id == 0) {
            self.stats.dropped_foreign += 1;
            return;
        }
        if self.phase == Phase::Closed {
            self.stats.dropped_unexpected += 1;
            return;
        }
        if let Some(m) = self.member_at(from).and_then(|id| self.members.get_mut(&id)) {
            m.heard = now;
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
            self.stats.dropped_unexpected += 1;
        }
    }

    /// Next datagram to send, written into `buf` (at least
    /// [`super::MAX_DATAGRAM`] bytes). Control packets go before data.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.run_timers(now);
        if let Some(ctl) = self.ctl.pop_front() {
            let t = ctl.emit(buf);
            self.count_sent(t);
            return t;
        }
        while let Some(psn) = self.rdata.pop_front() {
            if let Some(res) = self.sender.emit_repair(psn, self.conn_id, buf) {
                self.stats.rdata_sent += 1;
                return self.sent(res, Dest::Group);
            }
        }
        if let Some(res) = self.sender.emit_next(self.conn_id, buf) {
            self.ndata_interval = self.cfg.rxt;
            self.ndata_next = Some(now + self.ndata_interval);
            self.stats.data_sent += 1;
            // With no member to wait for, what was just sent is stable at once
            // (ACKs move the stable point otherwise). Stops at the first member.
            if self.members.values().all(|m| m.state == MemberState::Pending) {
                self.update_stable();
            }
            return self.sent(res, Dest::Group);
        }
        // Termination waits until every member has everything (or was ejected).
        if self.phase == Phase::Draining && self.sender.is_empty() {
            self.phase = Phase::Terminating { sent: 0, next: now };
            self.run_timers(now);
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
        let mut t: Option<Instant> = None;
        let mut at = |d: Instant| t = Some(t.map_or(d, |t| t.min(d)));
        match self.phase {
            Phase::Creating { ends } => {
                at(ends);
                at(self.ccr_next);
            }
            Phase::Terminating { next, .. } => at(next),
            _ => {}
        }
        if matches!(self.phase, Phase::Open | Phase::Creating { .. } | Phase::Draining) {
            at(self.hb_next);
        }
        if let Some(n) = self.ndata_next {
            at(n);
        }
        for r in &self.repeats {
            at(r.next);
        }
        if self.cfg.ro == Ro::Unreliable {
            for rx in self.backward.values() {
                if let Some(d) = rx.hole_deadline(self.cfg.rxt) {
                    at(d);
                }
            }
        }
        t
    }

    /// How long a member may stay silent before it is taken for dead.
    fn failure_time(&self) -> Duration {
        self.cfg.hgt * u32::from(self.cfg.fdn.max(1))
    }

    /// Run the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.run_timers(now);
    }

    // ----- internals -----

    fn run_timers(&mut self, now: Instant) {
        match self.phase {
            Phase::Creating { ends } if now >= ends => self.phase = Phase::Open,
            Phase::Creating { .. } if now >= self.ccr_next => {
                let mut h = Header::new(PacketType::Ccr, self.conn_id);
                h.psn = self.isn.0;
                let mut ctl = Ctl::new(Dest::Group, h);
                ctl.elements.connection = Some(self.cfg.connection_params());
                self.ctl.push_back(ctl);
                self.ccr_next = now + self.cfg.rxt;
            }
            Phase::Terminating { sent, next } if now >= next => {
                if sent >= CTR_SENDS {
                    self.phase = Phase::Closed;
                } else {
                    let mut h = Header::new(PacketType::Ctr, self.conn_id);
                    h.psn = self.sender.last_psn().0;
                    self.ctl.push_back(Ctl::new(Dest::Group, h));
                    self.phase = Phase::Terminating { sent: sent + 1, next: now + self.cfg.rxt / 2 };
                }
            }
            _ => {}
        }
        // NDATA while idle: tells receivers the next PSN, so a lost tail shows.
        if let Some(n) = self.ndata_next {
            if now >= n && !self.sender.has_unsent() && matches!(self.phase, Phase::Open) {
                let mut h = Header::new(PacketType::Ndata, self.conn_id);
                h.psn = self.sender.next_psn().0;
                self.ctl.push_back(Ctl::new(Dest::Group, h));
                self.ndata_interval = (self.ndata_interval * 2).min(self.cfg.hgt);
                self.ndata_next = Some(now + self.ndata_interval);
            } else if now >= n {
                self.ndata_next = None;
            }
        }
        let mut i = 0;
        while i < self.repeats.len() {
            let r = &mut self.repeats[i];
            if now >= r.next {
                self.ctl.push_back(r.ctl);
                r.left -= 1;
                r.next = now + self.cfg.rxt;
                if r.left == 0 {
                    self.repeats.swap_remove(i);
                    continue;
                }
            }
            i += 1;
        }
        self.refused.retain(|_, until| *until > now);
        if matches!(self.phase, Phase::Open | Phase::Creating { .. } | Phase::Draining) {
            // Silence is checked on the heartbeat tick, once per HGT, not on
            // every packet sent: a dead member goes at most an HGT late.
            if now >= self.hb_next {
                self.heartbeat(now);
                self.detect_failures(now);
            }
        }
        let patience = self.cfg.rxt;
        let unreliable = self.cfg.ro == Ro::Unreliable;
        for (&token_id, rx) in self.backward.iter_mut() {
            if unreliable {
                rx.expire_holes(now, patience);
            }
            let user_id = self.tokens[usize::from(token_id)];
            collect(rx, user_id, token_id, &self.members, &mut self.inbox, &mut self.stats);
        }
    }

    fn sent(&mut self, res: Result<usize, crate::wire::EmitError>, dest: Dest) -> Option<Transmit> {
        match res {
            Ok(len) => {
                self.stats.packets_sent += 1;
                Some(Transmit { dest, len })
            }
            Err(e) => {
                log::error!("cannot emit DATA: {e}");
                None
            }
        }
    }

    fn count_sent(&mut self, t: Option<Transmit>) {
        if t.is_some() {
            self.stats.packets_sent += 1;
        }
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
        self.members.insert(
            user_id,
            Member {
                addr,
                state: MemberState::Pending,
                creation,
                child_id,
                start,
                token: TokenState::None,
                lsn: start,
                heard: now,
                rtt: None,
            },
        );
        self.by_addr.insert(addr, user_id);
        if self.cfg.ask_joins {
            self.events.push_back(Event::JoinRequest { user_id, addr });
        } else {
            self.admit(user_id);
        }
        user_id
    }

    fn admit(&mut self, user_id: u32) {
        let next = self.sender.next_psn();
        let (creating, isn) = (self.is_creating(), self.isn);
        let Some(m) = self.members.get_mut(&user_id) else { return };
        if m.creation {
            m.state = MemberState::Active;
            let ctl = self.confirm_packet(user_id, PacketType::Tjc);
            self.ctl.extend(ctl);
        } else {
            // A late joiner starts at the next message boundary; during the
            // creation phase, an LJR joins from the ISN like a TJR would.
            let start = if creating { isn } else { next };
            m.start = start;
            m.lsn = start;
            m.state = MemberState::Admitted;
            let ctl = self.confirm_packet(user_id, PacketType::Ljc);
            self.ctl.extend(ctl);
        }
    }

    fn refuse_again(&mut self, addr: SocketAddr, ty: PacketType) {
        let mut h = Header::new(ty, self.conn_id);
        h.flag = false;
        self.ctl.push_back(Ctl::new(Dest::Unicast(addr), h));
    }

    /// LJR: a late join request, or a resend of one.
    fn on_ljr(&mut self, now: Instant, from: SocketAddr) -> bool {
        if !matches!(self.phase, Phase::Open | Phase::Creating { .. }) {
            return false;
        }
        if self.refused.contains_key(&from) {
            self.refuse_again(from, PacketType::Ljc);
            return true;
        }
        match self.member_at(from) {
            None => {
                self.new_member(from, false, now);
            }
            Some(id) => match self.members.get(&id).map(|m| m.state) {
                // The LJC was lost: send it again.
                Some(MemberState::Admitted | MemberState::Active) => {
                    let ctl = self.confirm_packet(id, PacketType::Ljc);
                    self.ctl.extend(ctl);
                }
                _ => {} // the application has not answered yet
            },
        }
        true
    }

    /// TJR: a tree join, from a late joiner after LJC or, in the creation
    /// phase, from a TU that heard CCR.
    fn on_tjr(&mut self, now: Instant, from: SocketAddr, packet: &Packet<'_>) -> bool {
        if self.refused.contains_key(&from) {
            self.refuse_again(from, PacketType::Tjc);
            return true;
        }
        match self.member_at(from) {
            Some(id) => {
                let Some(m) = self.members.get_mut(&id) else { return false };
                match m.state {
                    MemberState::Pending => {}
                    MemberState::Admitted | MemberState::Active => {
                        m.state = MemberState::Active;
                        let ctl = self.confirm_packet(id, PacketType::Tjc);
                        self.ctl.extend(ctl);
                    }
                }
                true
            }
            None if self.is_creating() && packet.elements.membership.is_none_or(|m| m.member_id == 0) => {
                self.new_member(from, true, now);
                true
            }
            None => {
                // Not admitted: a TU must join late first.
                self.refuse_again(from, PacketType::Tjc);
                true
            }
        }
    }

    fn tgc(&self, addr: SocketAddr, isn: Psn, id: Option<u8>) -> Ctl {
        let mut h = Header::new(PacketType::Tgc, self.conn_id);
        h.psn = isn.0;
        h.flag = id.is_some();
        h.token_id = id.unwrap_or(0);
        Ctl::new(Dest::Unicast(addr), h)
    }

    fn free_token_id(&self) -> Option<u8> {
        let in_use = self.tokens.iter().filter(|t| t.is_some()).count();
        if in_use >= usize::from(self.cfg.max_tokens) {
            return None;
        }
        (1..=255u8).find(|&id| self.tokens[usize::from(id)].is_none())
    }

    /// TGR: a member asks for a token with its initial PSN.
    fn on_tgr(&mut self, from: SocketAddr, isn: Psn) -> bool {
        let Some(user_id) = self.member_at(from) else {
            // Not a member: refuse, so that it does not wait for nothing.
            self.ctl.push_back(self.tgc(from, isn, None));
            return true;
        };
        let Some(m) = self.members.get_mut(&user_id) else { return false };
        if m.state != MemberState::Active || !isn.is_valid() {
            return false;
        }
        match m.token {
            TokenState::Held { id, isn: held } if held == isn => self.ctl.push_back(self.tgc(from, isn, Some(id))),
            TokenState::Refused(r) if r == isn => self.ctl.push_back(self.tgc(from, isn, None)),
            // The application has not answered yet; a TU that gave up and asks
            // again (new ISN) gets the answer to its newest request.
            TokenState::Pending(_) => m.token = TokenState::Pending(isn),
            TokenState::Held { id, .. } => {
                // A TU asks with a new ISN only when it holds no token: it gave up
                // waiting for our TGC. That grant is void; this is a new request.
                m.token = TokenState::None;
                self.release_token(id, user_id);
                return self.on_tgr(from, isn);
            }
            TokenState::None | TokenState::Refused(_) => {
                m.token = TokenState::Pending(isn);
                if self.cfg.ask_tokens {
                    self.events.push_back(Event::TokenRequest { user_id, addr: from });
                } else {
                    let _ = self.confirm_token(user_id, true);
                }
            }
        }
        true
    }

    /// TRR: an SU returns its token. Whatever it sent has been delivered or
    /// given up by now; the TRC is sent again for a resent TRR.
    fn on_trr(&mut self, from: SocketAddr, token_id: u8) -> bool {
        let Some(user_id) = self.member_at(from) else { return false };
        if let Some(m) = self.members.get_mut(&user_id) {
            if matches!(m.token, TokenState::Held { id, .. } if id == token_id) {
                m.token = TokenState::None;
                self.release_token(token_id, user_id);
            }
        }
        let mut h = Header::new(PacketType::Trc, self.conn_id);
        h.token_id = token_id;
        self.ctl.push_back(Ctl::new(Dest::Unicast(from), h));
        true
    }

    fn release_token(&mut self, token_id: u8, user_id: u32) {
        if let Some(mut rx) = self.backward.remove(&token_id) {
            rx.give_up_before(rx.known_end(), true);
            collect(&mut rx, Some(user_id), token_id, &self.members, &mut self.inbox, &mut self.stats);
        }
        self.tokens[usize::from(token_id)] = None;
    }

    /// DATA/RDATA from an SU, tagged with its token id.
    fn on_backward(&mut self, from: SocketAddr, packet: &Packet<'_>) -> bool {
        let h = packet.header;
        let Some(user_id) = self.member_at(from) else { return false };
        if h.token_id == 0 || self.tokens[usize::from(h.token_id)] != Some(user_id) {
            return false;
        }
        let Some(rx) = self.backward.get_mut(&h.token_id) else { return false };
        match rx.on_segment(Psn(h.psn), h.flag, packet.data) {
            Accept::New => self.stats.data_received += 1,
            Accept::Duplicate => self.stats.duplicates += 1,
            Accept::TooFarAhead => return false,
        }
        collect(rx, Some(user_id), h.token_id, &self.members, &mut self.inbox, &mut self.stats);
        true
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
        let (Some(user_id), Some(ack)) = (self.member_at(from), packet.elements.ack) else { return false };
        let next = self.sender.next_psn();
        let Some(m) = self.members.get_mut(&user_id) else { return false };
        let lsn = Psn(ack.lsn);
        // An LSN beyond what was sent is a lie; one behind what it already
        // reported is an old ACK overtaken by a newer one.
        if !lsn.is_valid() || next.is_before(lsn) {
            return false;
        }
        if m.lsn.is_before(lsn) {
            m.lsn = lsn;
        }
        if self.cfg.ro != Ro::Unreliable {
            let (end, lowest) = (self.sender.first_unsent(), self.sender.lowest_kept());
            self.repairs.schedule(&ack, end, lowest, now, self.cfg.rxt, &mut self.rdata);
        }
        self.update_stable();
        true
    }

    /// Release the DATA every member has: everything before the lowest LSN.
    fn update_stable(&mut self) {
        let end = self.sender.first_unsent();
        let lowest = self
            .members
            .values()
            .filter(|m| m.state != MemberState::Pending)
            .map(|m| m.lsn)
            .fold(end, |low, l| if l.is_before(low) { l } else { low });
        self.sender.release_before(lowest);
        self.repairs.forget_before(self.sender.lowest_kept());
    }

    /// HB to the group every HGT: the lowest PSN still repairable, a
    /// timestamp, and the child that must answer (draft: "Tree maintenance").
    fn heartbeat(&mut self, now: Instant) {
        self.hb_next = now + self.cfg.hgt;
        let active: Vec<(u32, u16)> = self
            .members
            .iter()
            .filter(|(_, m)| m.state == MemberState::Active)
            .map(|(&id, m)| (id, m.child_id))
            .collect();
        let mut h = Header::new(PacketType::Hb, self.conn_id);
        h.psn = self.sender.lowest_kept().0;
        let mut ctl = Ctl::new(Dest::Group, h);
        ctl.elements.timestamp = Some(micros(now, self.epoch));
        if !active.is_empty() {
            let (member_id, child_id) = active[self.hb_turn as usize % active.len()];
            self.hb_turn = self.hb_turn.wrapping_add(1);
            ctl.elements.membership = Some(Membership { tree_level: 0, child_id, member_id });
        }
        self.ctl.push_back(ctl);
    }

    /// HBACK from a child (an answer to HB, or its keep-alive): the echoed
    /// timestamp, if any, gives its RTT; the Acknowledgement element counts
    /// as an ACK.
    fn on_hback(&mut self, now: Instant, from: SocketAddr, packet: &Packet<'_>) -> bool {
        let Some(id) = self.member_at(from) else { return false };
        if packet.elements.ack.is_some() {
            self.on_ack(now, from, packet);
        }
        if let (Some(ts), Some(m)) = (packet.elements.timestamp, self.members.get_mut(&id)) {
            let sent = self.epoch + Duration::from_micros(ts);
            if sent <= now {
                m.rtt = Some(now - sent);
            }
        }
        true
    }

    /// HB from an SU: its PSN is the lowest it still keeps; the answer is an
    /// HBACK with the Acknowledgement element of its backward stream
    /// (draft: "Backward data").
    fn on_su_heartbeat(&mut self, from: SocketAddr, packet: &Packet<'_>) -> bool {
        let h = packet.header;
        let Some(user_id) = self.member_at(from) else { return false };
        if h.token_id == 0 || self.tokens[usize::from(h.token_id)] != Some(user_id) {
            return false;
        }
        let Some(rx) = self.backward.get_mut(&h.token_id) else { return false };
        let lowest = Psn(h.psn);
        if self.cfg.ro == Ro::SemiReliable && lowest.is_valid() && rx.lsn().is_before(lowest) {
            rx.give_up_before(lowest, false);
        }
        collect(rx, Some(user_id), h.token_id, &self.members, &mut self.inbox, &mut self.stats);
        let Some(rx) = self.backward.get(&h.token_id) else { return false };
        let mut reply = Header::new(PacketType::Hback, self.conn_id);
        reply.token_id = h.token_id;
        let mut ctl = Ctl::new(Dest::Unicast(from), reply);
        ctl.elements.timestamp = packet.elements.timestamp;
        ctl.elements.ack = Some(ack_of(rx, 1));
        self.ctl.push_back(ctl);
        true
    }

    /// Eject every member silent for FDN x HGT: it is taken for dead, and
    /// what the TO kept only for it is released.
    fn detect_failures(&mut self, now: Instant) {
        let limit = self.failure_time();
        let dead: Vec<u32> = self
            .members
            .iter()
            .filter(|(_, m)| m.state != MemberState::Pending && now.saturating_duration_since(m.heard) > limit)
            .map(|(&id, _)| id)
            .collect();
        for id in dead {
            log::info!("member {id} silent for {limit:?}: ejected");
            let _ = self.eject(id, now);
        }
    }

    fn remove_member(&mut self, user_id: u32) -> Option<Member> {
        let m = self.members.remove(&user_id)?;
        self.by_addr.remove(&m.addr);
        if let TokenState::Held { id, .. } = m.token {
            // Deliver what it sent before it left, then free the token.
            self.members.insert(user_id, Member { token: TokenState::None, ..m });
            self.release_token(id, user_id);
            return self.members.remove(&user_id);
        }
        Some(m)
    }
}

/// Microseconds from `epoch` to `now`, for the Timestamp element.
fn micros(now: Instant, epoch: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX)
}

/// Move the whole messages of a backward receiver into the TO's inbox.
fn collect(
    rx: &mut Receiver,
    user_id: Option<u32>,
    token_id: u8,
    members: &BTreeMap<u32, Member>,
    inbox: &mut VecDeque<Incoming>,
    stats: &mut Stats,
) {
    let Some(user_id) = user_id else { return };
    let Some(from) = members.get(&user_id).map(|m| m.addr) else { return };
    while let Some(message) = rx.pop_message() {
        stats.messages_delivered += 1;
        stats.gaps += u64::from(message.gap);
        inbox.push_back(Incoming { user_id, token_id, from, message });
    }
}
