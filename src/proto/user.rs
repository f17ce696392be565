//! The TS-user (TU): joins the connection (creation phase or late), receives
//! the TO's multicast data in order, and, holding a token, sends unicast data
//! back as an SU.
//!
//! Draft clauses: "Connection creation", "Late join", "Forward data",
//! "Tokens", "Backward data", "Leave, pause, termination".

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::ack::{RepairLimiter, ack_of};
use super::receiver::{Accept, Message, Receiver};
use super::retry::{self, Retry};
use super::sender::{QueueError, Sender};
use super::{Config, Ctl, Dest, MAX_MESSAGE, MAX_WINDOW, Rng, Stats, Transmit};
use crate::wire::{Header, Membership, Packet, PacketType, Psn, Ro};

/// DATA kept while the TU does not yet know where its data starts (it
/// joined the group before the LJC arrived).
const EARLY_CAPACITY: usize = 256;

/// Where the join stands (`mjoin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinStatus {
    /// Still asking.
    Joining,
    /// In the connection and the control tree.
    Joined,
    /// The TO refused.
    Refused,
    /// Nobody answered after every retry.
    TimedOut,
}

/// Where the token stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenStatus {
    /// Holds none.
    None,
    /// TGR sent; waiting for TGC.
    Requesting,
    /// Holds this token id.
    Held(u8),
    /// TRR sent (or about to be); waiting for TRC.
    Returning(u8),
}

/// How the last token request or return ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserError {
    /// Already holds a token (`mtoken_get`).
    AlreadyHeld,
    /// Holds no token.
    NoToken,
    /// The TO refused the token.
    Refused,
    /// No answer after every retry.
    TimedOut,
    /// Not joined (yet, or any more).
    NotJoined,
    /// The flow-control window is full.
    WouldBlock,
    /// Empty message, or longer than [`MAX_MESSAGE`].
    BadLength,
    /// Another token request or return is under way.
    Busy,
}

/// How the connection ended for this TU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// CTR from the TO: normal end.
    Terminated,
    /// Ejected by the TO (ULR with F=0), or the TO ended abnormally.
    Reset,
    /// This TU left (`mleave`).
    Left,
}

#[derive(Debug)]
struct Early {
    conn_id: u32,
    psn: Psn,
    last: bool,
    data: Vec<u8>,
}

/// The TU's state machine. See the [module docs](super) for the call order.
#[derive(Debug)]
pub struct User {
    cfg: Config,
    /// The TO's unicast address and the group port: where requests go.
    owner: SocketAddr,
    /// The parent in the control tree (the TO while the tree is flat).
    parent: SocketAddr,
    conn_id: Option<u32>,
    status: JoinStatus,
    end: Option<End>,
    member_id: u32,
    child_id: u16,
    tree_level: u8,
    /// First PSN to deliver, from LJC or TJC (or CCR's ISN).
    start: Option<Psn>,
    /// Heard CCR: joining in the creation phase.
    creation: bool,
    join_retry: Option<Retry>,
    rx: Option<Receiver>,
    early: VecDeque<Early>,
    token: TokenStatus,
    token_retry: Option<Retry>,
    token_result: Option<Result<u8, UserError>>,
    isn: Psn,
    sender: Option<Sender>,
    ctl: VecDeque<Ctl>,
    rng: Rng,
    /// When the parent was last heard, and when we last sent to it.
    parent_heard: Instant,
    parent_sent: Instant,
    /// Highest PSN seen, for the AGN rule.
    highest: Option<Psn>,
    /// Reliable modes: the next ACK while a hole stays open.
    ack_next: Option<Instant>,
    /// The LSN the last ACK reported.
    acked_lsn: Option<Psn>,
    /// `leave` was called; the ULR follows the data queued before it.
    ulr_pending: bool,
    /// SU: the next HB to the TO, and the repairs its HBACKs asked for.
    su_hb_next: Option<Instant>,
    su_rdata: VecDeque<Psn>,
    su_repairs: RepairLimiter,
    stats: Stats,
}

impl User {
    /// A TU that joins the connection of the TO at `owner` (its unicast IP and
    /// the group port). The LJR goes out at the first `poll_transmit`.
    pub fn new(cfg: Config, owner: SocketAddr, rng: Rng, now: Instant) -> User {
        let mut u = User {
            cfg,
            owner,
            parent: owner,
            conn_id: None,
            status: JoinStatus::Joining,
            end: None,
            member_id: 0,
            child_id: 0,
            tree_level: 0,
            start: None,
            creation: false,
            join_retry: None,
            rx: None,
            early: VecDeque::new(),
            token: TokenStatus::None,
            token_retry: None,
            token_result: None,
            isn: Psn(1),
            sender: None,
            ctl: VecDeque::new(),
            rng,
            parent_heard: now,
            parent_sent: now,
            highest: None,
            ack_next: None,
            acked_lsn: None,
            ulr_pending: false,
            su_hb_next: None,
            su_rdata: VecDeque::new(),
            su_repairs: RepairLimiter::default(),
            stats: Stats::default(),
        };
        let h = Header::new(PacketType::Ljr, 0);
        u.join_retry = Some(Retry::new(Ctl::new(Dest::Unicast(owner), h), now));
        u
    }

    /// Where the join stands.
    pub fn join_status(&self) -> JoinStatus {
        self.status
    }

    /// How the connection ended, once it has.
    pub fn end(&self) -> Option<End> {
        self.end
    }

    /// The TO's unicast address and group port.
    pub fn owner_addr(&self) -> SocketAddr {
        self.owner
    }

    /// The member id the TO gave this TU (0 before joining).
    pub fn member_id(&self) -> u32 {
        self.member_id
    }

    /// The connection's parameters (the TO's, once joined).
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// What this endpoint counted.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Where the token stands.
    pub fn token(&self) -> TokenStatus {
        self.token
    }

    /// The token id held, or 0.
    pub fn token_id(&self) -> u8 {
        match self.token {
            TokenStatus::Held(id) => id,
            _ => 0,
        }
    }

    // ----- application calls -----

    /// The next whole message from the TO, in order.
    pub fn recv(&mut self) -> Option<Message> {
        let m = self.rx.as_mut()?.pop_message()?;
        self.stats.messages_delivered += 1;
        self.stats.gaps += u64::from(m.gap);
        Some(m)
    }

    /// Whether `recv` has something.
    pub fn has_message(&self) -> bool {
        self.rx.as_ref().is_some_and(Receiver::has_message)
    }

    /// Ask the TO for a token (`mtoken_get`): TGR with a fresh initial PSN;
    /// poll [`User::take_token_result`].
    pub fn request_token(&mut self, now: Instant) -> Result<(), UserError> {
        if self.status != JoinStatus::Joined || self.end.is_some() {
            return Err(UserError::NotJoined);
        }
        match self.token {
            TokenStatus::None => {}
            TokenStatus::Held(_) => return Err(UserError::AlreadyHeld),
            TokenStatus::Requesting | TokenStatus::Returning(_) => return Err(UserError::Busy),
        }
        self.isn = Psn(self.rng.nonzero_u32());
        let mut h = self.header(PacketType::Tgr);
        h.psn = self.isn.0;
        let ctl = self.ctl_to(self.owner, h);
        self.token = TokenStatus::Requesting;
        self.token_result = None;
        self.token_retry = Some(Retry::new(ctl, now));
        Ok(())
    }

    /// Return the token (`mtoken_return`): the data still queued goes out
    /// first, then TRR; poll [`User::take_token_result`].
    pub fn return_token(&mut self) -> Result<(), UserError> {
        match self.token {
            TokenStatus::Held(id) => {
                self.token = TokenStatus::Returning(id);
                self.token_result = None;
                Ok(())
            }
            TokenStatus::Returning(_) | TokenStatus::Requesting => Err(UserError::Busy),
            TokenStatus::None => Err(UserError::NoToken),
        }
    }

    /// How the last token request or return ended, once it has: Ok(token id)
    /// for a grant, Ok(0) for a completed return.
    pub fn take_token_result(&mut self) -> Option<Result<u8, UserError>> {
        self.token_result.take()
    }

    /// Queue one message for the TO (`msendmsg`); needs the token.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), UserError> {
        if self.end.is_some() {
            return Err(UserError::NotJoined);
        }
        let (TokenStatus::Held(_), Some(s)) = (self.token, self.sender.as_mut()) else {
            return Err(UserError::NoToken);
        };
        s.queue(msg).map_err(|e| match e {
            QueueError::WouldBlock => UserError::WouldBlock,
            QueueError::BadLength => UserError::BadLength,
        })
    }

    /// Whether a message of `len` bytes would be queued now.
    pub fn can_send(&self, len: usize) -> bool {
        self.sender.as_ref().is_some_and(|s| s.has_room(len))
    }

    /// Leave (`mleave`): ULR with F=1 to the parent, no confirm.
    /// The ULR goes out after the data already queued, which is sent first.
    pub fn leave(&mut self) {
        self.ulr_pending = self.status == JoinStatus::Joined && self.end.is_none();
        self.end.get_or_insert(End::Left);
        self.join_retry = None;
        self.token_retry = None;
    }

    /// Whether nothing waits to be sent (so that the endpoint may close).
    pub fn is_flushed(&self) -> bool {
        self.ctl.is_empty() && !self.ulr_pending
    }

    /// Whether DATA may still go out: while connected, and after `leave`
    /// until the ULR (the data queued before it is delivered first).
    fn may_send_data(&self) -> bool {
        self.end.is_none() || self.ulr_pending
    }

    // ----- driver calls -----

    /// Take one received datagram (multicast or unicast).
    pub fn handle(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Some(packet) = self.stats.parse(datagram) else { return };
        let h = packet.header;
        if self.end.is_some() {
            self.stats.dropped_unexpected += 1;
            return;
        }
        let ours = self.conn_id.is_none_or(|c| c == h.connection_id);
        if ours && (from.ip() == self.parent.ip() || self.from_owner(from)) {
            self.parent_heard = now;
        }
        // The forward channel is the TO's (or the parent's): not a stranger's.
        let forward = matches!(
            h.packet_type,
            PacketType::Data | PacketType::Rdata | PacketType::Ndata | PacketType::Ctr | PacketType::Hb
        );
        if forward && from.ip() != self.parent.ip() && !self.from_owner(from) {
            self.stats.dropped_unexpected += 1;
            return;
        }
        let handled = match h.packet_type {
            // Data may arrive before the LJC tells us the connection ID.
            PacketType::Data | PacketType::Rdata if h.token_id == 0 => {
                if !ours {
                    self.stats.dropped_foreign += 1;
                    return;
                }
                self.on_data(now, &packet)
            }
            _ if !ours => {
                self.stats.dropped_foreign += 1;
                return;
            }
            PacketType::Ccr => self.on_ccr(now, from, &packet),
            PacketType::Ljc => self.on_ljc(now, from, &packet),
            PacketType::Tjc => self.on_tjc(from, &packet),
            PacketType::Ndata => self.on_ndata(now, Psn(h.psn)),
            PacketType::Ctr => self.on_ctr(Psn(h.psn), h.flag),
            PacketType::Ulr if !h.flag => self.on_ejected(from, &packet),
            PacketType::Tgc => self.on_tgc(now, from, &packet),
            PacketType::Trc => self.on_trc(from, h.token_id),
            PacketType::Hb => self.on_heartbeat(now, from, &packet),
            PacketType::Hback => self.on_su_hback(now, from, &packet),
            _ => false,
        };
        if !handled {
            self.stats.dropped_unexpected += 1;
        }
    }

    /// Next datagram to send, written into `buf`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.run_timers(now);
        if let Some(ctl) = self.ctl.pop_front() {
            let t = ctl.emit(buf);
            self.stats.packets_sent += u64::from(t.is_some());
            return t;
        }
        if !self.may_send_data() {
            return None;
        }
        let conn_id = self.conn_id?;
        let sender = self.sender.as_mut()?;
        let mut res = None;
        while let Some(psn) = self.su_rdata.pop_front() {
            res = sender.emit_repair(psn, conn_id, buf);
            if res.is_some() {
                self.stats.rdata_sent += 1;
                break;
            }
        }
        if res.is_none() {
            res = sender.emit_next(conn_id, buf);
            self.stats.data_sent += u64::from(res.is_some());
            // Unacknowledged data: heartbeat soon, so that losses show.
            let soon = now + self.cfg.rxt;
            if res.is_some() && self.su_hb_next.is_none_or(|t| t > soon) {
                self.su_hb_next = Some(soon);
            }
        }
        match res? {
            Ok(len) => {
                self.stats.packets_sent += 1;
                Some(Transmit { dest: Dest::Unicast(self.owner), len })
            }
            Err(e) => {
                log::error!("cannot emit DATA: {e}");
                None
            }
        }
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let hole = match self.cfg.ro {
            Ro::Unreliable => self.rx.as_ref().and_then(|rx| rx.hole_deadline(self.cfg.rxt)),
            _ => self.ack_next,
        };
        let connected = self.is_connected();
        let parent = connected.then(|| self.parent_heard + self.failure_time());
        let keepalive = connected.then(|| self.keepalive_deadline());
        [
            self.join_retry.map(|r| r.deadline()),
            self.token_retry.map(|r| r.deadline()),
            hole,
            parent,
            keepalive,
            self.su_hb_next,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Run the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.run_timers(now);
    }

    // ----- internals -----

    fn header(&self, ty: PacketType) -> Header {
        Header::new(ty, self.conn_id.unwrap_or(0))
    }

    /// A control packet to `to` that carries this TU's Membership element,
    /// as every TU request and report does.
    fn ctl_to(&self, to: SocketAddr, h: Header) -> Ctl {
        let mut ctl = Ctl::new(Dest::Unicast(to), h);
        ctl.elements.membership = Some(self.membership());
        ctl
    }

    fn membership(&self) -> Membership {
        Membership { tree_level: self.tree_level, child_id: self.child_id, member_id: self.member_id }
    }

    fn run_timers(&mut self, now: Instant) {
        let (rxt, retries) = (self.cfg.rxt, self.cfg.retries);
        if self.ulr_pending && self.sender.as_ref().is_none_or(|s| !s.has_unsent()) {
            self.ulr_pending = false;
            let mut h = self.header(PacketType::Ulr);
            h.flag = true;
            let ctl = self.ctl_to(self.parent, h);
            self.ctl.push_back(ctl);
        }
        if retry::drive(&mut self.join_retry, now, rxt, retries, &mut self.ctl, &mut self.stats.retransmissions) {
            self.status = JoinStatus::TimedOut;
        }
        // The TRR goes out once everything sent before it was acknowledged.
        if let TokenStatus::Returning(id) = self.token {
            if self.token_retry.is_none() && self.sender.as_ref().is_none_or(Sender::is_empty) {
                let mut h = self.header(PacketType::Trr);
                h.token_id = id;
                let ctl = self.ctl_to(self.owner, h);
                self.token_retry = Some(Retry::new(ctl, now));
            }
        }
        if retry::drive(&mut self.token_retry, now, rxt, retries, &mut self.ctl, &mut self.stats.retransmissions) {
            self.token = TokenStatus::None;
            self.sender = None;
            self.token_result = Some(Err(UserError::TimedOut));
        }
        match self.rx.as_mut() {
            Some(rx) if self.cfg.ro == Ro::Unreliable => rx.expire_holes(now, rxt),
            // Reliable modes: an ACK every RXT while a hole stays open, so that
            // a loss at the tail of a burst, a lost ACK or a lost RDATA is asked again.
            Some(rx) if rx.has_hole() => match self.ack_next {
                Some(t) if now >= t => self.send_ack(now),
                None => self.ack_next = Some(now + rxt),
                Some(_) => {}
            },
            _ => self.ack_next = None,
        }
        // A child silent for HGT/2 sends an HBACK of its own, so that its
        // parent hears every live child twice per HGT, whether or not HBs
        // get through (it is ejected after FDN x HGT of silence).
        if self.is_connected() && now >= self.keepalive_deadline() {
            self.send_hback(now, None);
        }
        if self.is_connected() && now.saturating_duration_since(self.parent_heard) > self.failure_time() {
            log::info!("parent silent for {:?}: connection reset", self.failure_time());
            self.end = Some(End::Reset);
        }
        if let Some(t) = self.su_hb_next {
            if now >= t {
                self.su_heartbeat(now);
            }
        }
    }

    fn keepalive_deadline(&self) -> Instant {
        self.parent_sent + self.cfg.hgt / 2
    }

    fn failure_time(&self) -> Duration {
        self.cfg.hgt * u32::from(self.cfg.fdn.max(1))
    }

    /// ACK to the parent: LSN, the bitmap after it, ADN (draft: "ACK generation").
    fn send_ack(&mut self, now: Instant) {
        let Some(rx) = self.rx.as_ref() else { return };
        let mut ctl = self.ctl_to(self.parent, self.header(PacketType::Ack));
        ctl.elements.ack = Some(ack_of(rx, 1));
        self.acked_lsn = Some(rx.lsn());
        self.ctl.push_back(ctl);
        self.parent_sent = now;
        self.ack_next = Some(now + self.cfg.rxt);
    }

    /// The AGN rule: a child with Child ID c acknowledges each PSN p, received
    /// or detected lost, with p % AGN == c % AGN.
    fn ack_due(&mut self, psn: Psn) -> bool {
        let agn = u32::from(self.cfg.agn.max(1));
        let mine = u32::from(self.child_id) % agn;
        let first = match self.highest {
            Some(h) if h.is_before(psn) => h.next(),
            _ => psn,
        };
        if self.highest.is_none_or(|h| h.is_before(psn)) {
            self.highest = Some(psn);
        }
        let span = psn.diff(first).clamp(0, i64::from(agn)) as u32;
        (0..=span).any(|i| psn.sub(i).0 % agn == mine)
    }

    /// HB from the parent: answer if named, and in the semi-reliable mode
    /// give up what the parent no longer keeps.
    fn on_heartbeat(&mut self, now: Instant, from: SocketAddr, p: &Packet<'_>) -> bool {
        if from.ip() != self.parent.ip() || self.status != JoinStatus::Joined {
            return false;
        }
        let lowest = Psn(p.header.psn);
        if let Some(rx) = self.rx.as_mut() {
            if self.cfg.ro == Ro::SemiReliable && lowest.is_valid() && rx.lsn().is_before(lowest) {
                rx.give_up_before(lowest, false);
            }
        }
        if p.elements.membership.is_some_and(|m| m.member_id == self.member_id) {
            self.send_hback(now, p.elements.timestamp);
        }
        true
    }

    /// HBACK to the parent: the echoed timestamp (when answering an HB that
    /// named us) and the LSN, so the parent learns of a tail the AGN rule did
    /// not acknowledge.
    fn send_hback(&mut self, now: Instant, timestamp: Option<u64>) {
        let mut ctl = self.ctl_to(self.parent, self.header(PacketType::Hback));
        ctl.elements.timestamp = timestamp;
        ctl.elements.ack = self.rx.as_ref().map(|rx| ack_of(rx, 1));
        self.ctl.push_back(ctl);
        self.parent_sent = now;
    }

    /// Whether the connection is up for this TU (joined, not ended).
    fn is_connected(&self) -> bool {
        self.status == JoinStatus::Joined && self.end.is_none()
    }

    /// SU: HB to the TO with the lowest PSN it keeps, every RXT while data
    /// is unacknowledged, else every HGT (draft: "Backward data").
    fn su_heartbeat(&mut self, now: Instant) {
        let (id, Some(sender)) = (self.token_id_any(), self.sender.as_ref()) else {
            self.su_hb_next = None;
            return;
        };
        let mut h = self.header(PacketType::Hb);
        h.psn = sender.lowest_kept().0;
        h.token_id = id;
        let mut ctl = self.ctl_to(self.owner, h);
        ctl.elements.timestamp = Some(0);
        let idle = sender.is_empty();
        self.ctl.push_back(ctl);
        self.su_hb_next = Some(now + if idle { self.cfg.hgt } else { self.cfg.rxt });
    }

    /// The token held or being returned (0 if none).
    fn token_id_any(&self) -> u8 {
        match self.token {
            TokenStatus::Held(id) | TokenStatus::Returning(id) => id,
            _ => 0,
        }
    }

    /// SU: the TO's HBACK acknowledges what it received; resend what it lacks.
    fn on_su_hback(&mut self, now: Instant, from: SocketAddr, p: &Packet<'_>) -> bool {
        let id = self.token_id_any();
        if !self.from_owner(from) || id == 0 || p.header.token_id != id {
            return false;
        }
        let (Some(ack), Some(sender)) = (p.elements.ack, self.sender.as_mut()) else { return false };
        let lsn = Psn(ack.lsn);
        if lsn.is_valid() && !sender.first_unsent().is_before(lsn) {
            sender.release_before(lsn);
        }
        let (end, lowest) = (sender.first_unsent(), sender.lowest_kept());
        self.su_repairs.schedule(&ack, end, lowest, now, self.cfg.rxt, &mut self.su_rdata);
        self.su_repairs.forget_before(lowest);
        true
    }

    fn from_owner(&self, from: SocketAddr) -> bool {
        from.ip() == self.owner.ip()
    }

    /// CCR: the TO is creating the connection; join its tree directly.
    fn on_ccr(&mut self, now: Instant, from: SocketAddr, p: &Packet<'_>) -> bool {
        if self.status != JoinStatus::Joining || self.start.is_some() || self.creation {
            return true; // heard again, or too late for us: nothing to do
        }
        let Some(params) = p.elements.connection else { return false };
        if !self.from_owner(from) || !Psn(p.header.psn).is_valid() {
            return false;
        }
        self.cfg.adopt(&params);
        self.conn_id = Some(p.header.connection_id);
        self.creation = true;
        let h = self.header(PacketType::Tjr);
        let ctl = self.ctl_to(self.owner, h);
        self.join_retry = Some(Retry::new(ctl, now));
        true
    }

    /// LJC: the late join is accepted (F=1) or refused (F=0).
    fn on_ljc(&mut self, now: Instant, from: SocketAddr, p: &Packet<'_>) -> bool {
        if !self.from_owner(from) || self.status != JoinStatus::Joining {
            return false;
        }
        if !p.header.flag {
            self.refused();
            return true;
        }
        if self.start.is_some() {
            return true; // a resent LJC
        }
        let (Some(params), Some(m)) = (p.elements.connection, p.elements.membership) else { return false };
        let start = Psn(p.header.psn);
        if !start.is_valid() || m.member_id == 0 {
            return false;
        }
        self.cfg.adopt(&params);
        self.conn_id = Some(p.header.connection_id);
        self.member_id = m.member_id;
        self.set_start(start);
        if let Some(parent) = p.elements.address {
            self.parent = parent;
        }
        let h = self.header(PacketType::Tjr);
        let ctl = self.ctl_to(self.parent, h);
        self.join_retry = Some(Retry::new(ctl, now));
        true
    }

    /// TJC: the parent took us into the tree (F=1), or refused (F=0).
    fn on_tjc(&mut self, from: SocketAddr, p: &Packet<'_>) -> bool {
        if from.ip() != self.parent.ip() && !self.from_owner(from) {
            return false;
        }
        if self.status != JoinStatus::Joining {
            return true; // a resent TJC
        }
        if !p.header.flag {
            self.refused();
            return true;
        }
        let Some(m) = p.elements.membership else { return false };
        let start = Psn(p.header.psn);
        if !start.is_valid() || m.member_id == 0 || (self.member_id != 0 && m.member_id != self.member_id) {
            return false;
        }
        self.member_id = m.member_id;
        self.child_id = m.child_id;
        self.tree_level = m.tree_level;
        if self.start.is_none() {
            self.set_start(start);
        }
        self.status = JoinStatus::Joined;
        self.join_retry = None;
        self.parent_sent = self.parent_heard;
        if self.creation {
            let ctl = self.ctl_to(self.owner, self.header(PacketType::Ccc));
            self.ctl.push_back(ctl);
        }
        true
    }

    fn refused(&mut self) {
        self.status = JoinStatus::Refused;
        self.join_retry = None;
    }

    /// The receive window starts at `start`; DATA heard before it is replayed.
    fn set_start(&mut self, start: Psn) {
        self.start = Some(start);
        let mut rx = Receiver::new(start, MAX_WINDOW as usize, MAX_MESSAGE);
        let conn_id = self.conn_id;
        for e in self.early.drain(..) {
            if Some(e.conn_id) == conn_id && !e.psn.is_before(start) {
                rx.on_segment(e.psn, e.last, &e.data);
            }
        }
        self.rx = Some(rx);
    }

    /// DATA/RDATA from the TO on the group.
    fn on_data(&mut self, now: Instant, p: &Packet<'_>) -> bool {
        let h = p.header;
        let psn = Psn(h.psn);
        if !psn.is_valid() {
            return false;
        }
        let Some(rx) = self.rx.as_mut() else {
            if self.early.len() == EARLY_CAPACITY {
                self.early.pop_front();
            }
            self.early.push_back(Early { conn_id: h.connection_id, psn, last: h.flag, data: p.data.to_vec() });
            return true;
        };
        match rx.on_segment(psn, h.flag, p.data) {
            Accept::New => self.stats.data_received += 1,
            Accept::Duplicate => self.stats.duplicates += 1,
            Accept::TooFarAhead => return false,
        }
        if self.cfg.ro == Ro::Unreliable {
            rx.expire_holes(now, self.cfg.rxt);
        }
        if self.status == JoinStatus::Joined && self.ack_due(psn) {
            self.send_ack(now);
        }
        true
    }

    /// NDATA: the TO is idle; its PSN is the next it will use.
    fn on_ndata(&mut self, now: Instant, next: Psn) -> bool {
        let Some(rx) = self.rx.as_mut() else { return true };
        if next.diff(rx.lsn()) > i64::from(MAX_WINDOW) {
            return false; // beyond anything the window allows: not believable
        }
        rx.note_end(next, true);
        if self.cfg.ro == Ro::Unreliable {
            rx.expire_holes(now, self.cfg.rxt);
        }
        // The TO is idle: acknowledge the tail if the last ACK did not cover it.
        if self.status == JoinStatus::Joined && self.acked_lsn != Some(rx.lsn()) {
            self.send_ack(now);
        }
        true
    }

    /// CTR: the TO ends the connection; its PSN is the last it sent.
    fn on_ctr(&mut self, last: Psn, abnormal: bool) -> bool {
        if let Some(rx) = self.rx.as_mut() {
            if last.next().diff(rx.lsn()) <= i64::from(MAX_WINDOW) {
                rx.give_up_before(last.next(), true);
            }
        }
        if self.status == JoinStatus::Joining {
            self.status = JoinStatus::TimedOut;
            self.join_retry = None;
        }
        self.end = Some(if abnormal { End::Reset } else { End::Terminated });
        true
    }

    /// ULR with F=0: the TO ejected us.
    fn on_ejected(&mut self, from: SocketAddr, p: &Packet<'_>) -> bool {
        let ours = p.elements.membership.is_some_and(|m| m.member_id == self.member_id);
        if !self.from_owner(from) || !ours || self.status != JoinStatus::Joined {
            return false;
        }
        self.end = Some(End::Reset);
        true
    }

    /// TGC: the token is granted (F=1, Token ID) or refused (F=0).
    fn on_tgc(&mut self, now: Instant, from: SocketAddr, p: &Packet<'_>) -> bool {
        let h = p.header;
        if !self.from_owner(from) || self.token != TokenStatus::Requesting || h.psn != self.isn.0 {
            return false;
        }
        self.token_retry = None;
        if h.flag && h.token_id != 0 {
            self.token = TokenStatus::Held(h.token_id);
            let keep_sent = self.cfg.ro != Ro::Unreliable;
            self.sender = Some(Sender::new(self.isn, self.cfg.mss, self.cfg.window, h.token_id, keep_sent));
            self.su_hb_next = Some(now + self.cfg.hgt);
            self.token_result = Some(Ok(h.token_id));
        } else {
            self.token = TokenStatus::None;
            self.token_result = Some(Err(UserError::Refused));
        }
        true
    }

    /// TRC: the TO took the token back.
    fn on_trc(&mut self, from: SocketAddr, token_id: u8) -> bool {
        if !self.from_owner(from) || self.token != TokenStatus::Returning(token_id) {
            return false;
        }
        self.token_retry = None;
        self.token = TokenStatus::None;
        self.sender = None;
        self.su_hb_next = None;
        self.su_rdata.clear();
        self.token_result = Some(Ok(0));
        true
    }
}
