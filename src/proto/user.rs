//! The TS-user (TU): joins the connection (creation phase or late), receives
//! the TO's multicast data in order, and, holding a token, sends unicast data
//! back as an SU.
//!
//! Draft clauses: "Connection creation", "Late join", "Forward data",
//! "Tokens", "Backward data", "Leave, pause, termination".

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::child::{Child, Me};
use super::receiver::{Accept, Message};
use super::retry::Key;
use super::su::Su;
use super::timer::Timer;
use super::{Config, Ctl, Dest, Io, MAX_WINDOW, Rng, Stats, Transmit};
use crate::wire::{Header, Membership, Packet, PacketType, Psn};

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
    /// Its identity and addresses (the TO's, its parent's).
    me: Me,
    status: JoinStatus,
    end: Option<End>,
    /// First PSN to deliver, from LJC or TJC (or CCR's ISN).
    start: Option<Psn>,
    /// Heard CCR: joining in the creation phase.
    creation: bool,
    /// The child role: the forward data, from the start PSN on.
    child: Option<Child>,
    /// DATA heard before the start PSN was known.
    early: VecDeque<Early>,
    su: Su,
    rng: Rng,
    /// `leave` was called; the ULR follows the data queued before it.
    ulr_pending: bool,
    io: Io,
}

impl User {
    /// A TU that joins the connection of the TO at `owner` (its unicast IP and
    /// the group port). The LJR goes out at the first `poll_transmit`.
    pub fn new(cfg: Config, owner: SocketAddr, rng: Rng, now: Instant) -> User {
        let me = Me {
            conn_id: None,
            owner,
            parent: owner,
            membership: Membership { tree_level: 0, child_id: 0, member_id: 0 },
        };
        let mut u = User {
            cfg,
            me,
            status: JoinStatus::Joining,
            end: None,
            start: None,
            creation: false,
            child: None,
            early: VecDeque::new(),
            su: Su::new(),
            rng,
            ulr_pending: false,
            io: Io::default(),
        };
        let ljr = Ctl::new(Dest::Unicast(owner), Header::new(PacketType::Ljr, 0));
        u.io.repeat(Key::Join, ljr, cfg.retries, cfg.rxt, now);
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
        self.me.owner
    }

    /// The member id the TO gave this TU (0 before joining).
    pub fn member_id(&self) -> u32 {
        self.me.membership.member_id
    }

    /// The connection's parameters (the TO's, once joined).
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// What this endpoint counted.
    pub fn stats(&self) -> &Stats {
        &self.io.stats
    }

    /// Where the token stands.
    pub fn token(&self) -> TokenStatus {
        self.su.status()
    }

    /// The token id held, or 0.
    pub fn token_id(&self) -> u8 {
        self.su.token_id()
    }

    // ----- application calls -----

    /// The next whole message from the TO, in order.
    pub fn recv(&mut self) -> Option<Message> {
        let m = self.child.as_mut()?.rx.pop_message()?;
        self.io.stats.messages_delivered += 1;
        self.io.stats.gaps += u64::from(m.gap);
        Some(m)
    }

    /// Whether `recv` has something.
    pub fn has_message(&self) -> bool {
        self.child.as_ref().is_some_and(|c| c.rx.has_message())
    }

    /// Ask the TO for a token (`mtoken_get`): TGR with a fresh initial PSN;
    /// poll [`User::take_token_result`].
    pub fn request_token(&mut self, now: Instant) -> Result<(), UserError> {
        if !self.is_connected() {
            return Err(UserError::NotJoined);
        }
        self.su.request(&self.me, &self.cfg, &mut self.rng, now, &mut self.io)
    }

    /// Return the token (`mtoken_return`): the data still queued goes out
    /// first, then TRR; poll [`User::take_token_result`].
    pub fn return_token(&mut self) -> Result<(), UserError> {
        self.su.return_token()
    }

    /// How the last token request or return ended, once it has: Ok(token id)
    /// for a grant, Ok(0) for a completed return.
    pub fn take_token_result(&mut self) -> Option<Result<u8, UserError>> {
        self.su.take_result()
    }

    /// Queue one message for the TO (`msendmsg`); needs the token.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), UserError> {
        if self.end.is_some() {
            return Err(UserError::NotJoined);
        }
        self.su.send(msg)
    }

    /// Whether a message of `len` bytes would be queued now.
    pub fn can_send(&self, len: usize) -> bool {
        self.su.can_send(len)
    }

    /// Leave (`mleave`): ULR with F=1 to the parent, no confirm.
    /// The ULR goes out after the data already queued, which is sent first.
    pub fn leave(&mut self) {
        self.ulr_pending = self.is_connected();
        if self.end.is_none() {
            self.finish(End::Left);
        }
    }

    /// Whether nothing waits to be sent (so that the endpoint may close).
    pub fn is_flushed(&self) -> bool {
        self.io.ctl.is_empty() && !self.ulr_pending
    }

    /// Whether DATA may still go out: while connected, and after `leave`
    /// until the ULR (the data queued before it is delivered first).
    fn may_send_data(&self) -> bool {
        self.end.is_none() || self.ulr_pending
    }

    // ----- driver calls -----

    /// Take one received datagram (multicast or unicast).
    pub fn handle(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Some(packet) = self.io.stats.parse(datagram) else { return };
        let h = packet.header;
        if self.end.is_some() {
            self.io.stats.dropped_unexpected += 1;
            return;
        }
        let ours = self.me.conn_id.is_none_or(|c| c == h.connection_id);
        if ours && self.is_connected() && (from.ip() == self.me.parent.ip() || self.is_owner(from)) {
            self.io.timers.set(Timer::ParentSilence, now + self.failure_time());
        }
        // The forward channel is the TO's (or the parent's): not a stranger's.
        let forward = matches!(
            h.packet_type,
            PacketType::Data | PacketType::Rdata | PacketType::Ndata | PacketType::Ctr | PacketType::Hb
        );
        if forward && from.ip() != self.me.parent.ip() && !self.is_owner(from) {
            self.io.stats.dropped_unexpected += 1;
            return;
        }
        let handled = match h.packet_type {
            // Data may arrive before the LJC tells us the connection ID.
            PacketType::Data | PacketType::Rdata if h.token_id == 0 => {
                if !ours {
                    self.io.stats.dropped_foreign += 1;
                    return;
                }
                self.on_data(now, &packet)
            }
            _ if !ours => {
                self.io.stats.dropped_foreign += 1;
                return;
            }
            PacketType::Ccr => self.on_ccr(now, from, &packet),
            PacketType::Ljc => self.on_ljc(now, from, &packet),
            PacketType::Tjc => self.on_tjc(now, from, &packet),
            PacketType::Ndata => self.on_ndata(now, Psn(h.psn)),
            PacketType::Ctr => self.on_ctr(Psn(h.psn), h.flag),
            PacketType::Ulr if !h.flag => self.on_ejected(from, &packet),
            PacketType::Tgc => self.is_owner(from) && self.su.on_tgc(&self.cfg, now, &packet, &mut self.io),
            PacketType::Trc => self.is_owner(from) && self.su.on_trc(h.token_id, &mut self.io),
            PacketType::Hb => self.on_heartbeat(now, from, &packet),
            PacketType::Hback => self.is_owner(from) && self.su.on_hback(&self.cfg, now, &packet),
            _ => false,
        };
        if !handled {
            self.io.stats.dropped_unexpected += 1;
        }
    }

    /// Next datagram to send, written into `buf`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.progress(now);
        if let Some(t) = self.io.poll_ctl(buf) {
            return t;
        }
        if !self.may_send_data() {
            return None;
        }
        self.su.poll_transmit(&self.me, &self.cfg, now, buf, &mut self.io)
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.io.timers.next()
    }

    /// Run the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in self.io.timers.expired(now) {
            match t {
                Timer::Repeat => {
                    for key in self.io.poll_repeats(now) {
                        match key {
                            Key::Join => self.status = JoinStatus::TimedOut,
                            Key::Token => self.su.timed_out(&mut self.io),
                            _ => {}
                        }
                    }
                }
                Timer::HoleExpiry | Timer::AckRepeat => {
                    if let Some(c) = self.child.as_mut() {
                        c.on_timer(t, &self.me, &self.cfg, now, &mut self.io);
                    }
                }
                Timer::Keepalive if self.is_connected() => {
                    if let Some(c) = self.child.as_mut() {
                        c.on_timer(t, &self.me, &self.cfg, now, &mut self.io);
                    }
                }
                Timer::ParentSilence if self.is_connected() => {
                    log::info!("parent silent for {:?}: connection reset", self.failure_time());
                    self.finish(End::Reset);
                }
                Timer::SuHeartbeat => self.su.heartbeat(&self.me, &self.cfg, now, &mut self.io),
                _ => {}
            }
        }
        self.progress(now);
    }

    // ----- internals -----

    /// What follows from the state rather than from a timer: the ULR once
    /// the data queued before `leave` is out, the TRR once everything sent
    /// was acknowledged.
    fn progress(&mut self, now: Instant) {
        if self.ulr_pending && !self.su.has_unsent() {
            self.ulr_pending = false;
            let mut h = self.me.header(PacketType::Ulr);
            h.flag = true;
            let ctl = self.me.ctl(self.me.parent, h);
            self.io.ctl.push_back(ctl);
        }
        if self.end.is_none() {
            self.su.progress(&self.me, &self.cfg, now, &mut self.io);
        }
    }

    /// The connection is over for this TU: no timer, no request any more.
    fn finish(&mut self, end: End) {
        self.end = Some(end);
        self.io.timers.stop_all();
        self.io.repeats.clear();
    }

    fn failure_time(&self) -> Duration {
        self.cfg.hgt * u32::from(self.cfg.fdn.max(1))
    }

    /// Whether the connection is up for this TU (joined, not ended).
    fn is_connected(&self) -> bool {
        self.status == JoinStatus::Joined && self.end.is_none()
    }

    fn is_owner(&self, from: SocketAddr) -> bool {
        from.ip() == self.me.owner.ip()
    }

    /// HB from the parent: answer if named, and in the semi-reliable mode
    /// give up what the parent no longer keeps.
    fn on_heartbeat(&mut self, now: Instant, from: SocketAddr, p: &Packet<'_>) -> bool {
        if from.ip() != self.me.parent.ip() || self.status != JoinStatus::Joined {
            return false;
        }
        if let Some(c) = self.child.as_mut() {
            c.on_heartbeat(&self.me, &self.cfg, now, p, &mut self.io);
        }
        true
    }

    /// CCR: the TO is creating the connection; join its tree directly.
    fn on_ccr(&mut self, now: Instant, from: SocketAddr, p: &Packet<'_>) -> bool {
        if self.status != JoinStatus::Joining || self.start.is_some() || self.creation {
            return true; // heard again, or too late for us: nothing to do
        }
        let Some(params) = p.elements.connection else { return false };
        if !self.is_owner(from) || !Psn(p.header.psn).is_valid() {
            return false;
        }
        self.cfg.adopt(&params);
        self.me.conn_id = Some(p.header.connection_id);
        self.creation = true;
        let ctl = self.me.ctl(self.me.owner, self.me.header(PacketType::Tjr));
        self.io.repeat(Key::Join, ctl, self.cfg.retries, self.cfg.rxt, now);
        true
    }

    /// LJC: the late join is accepted (F=1) or refused (F=0).
    fn on_ljc(&mut self, now: Instant, from: SocketAddr, p: &Packet<'_>) -> bool {
        if !self.is_owner(from) || self.status != JoinStatus::Joining {
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
        self.me.conn_id = Some(p.header.connection_id);
        self.me.membership.member_id = m.member_id;
        self.set_start(start, now);
        if let Some(parent) = p.elements.address {
            self.me.parent = parent;
        }
        let ctl = self.me.ctl(self.me.parent, self.me.header(PacketType::Tjr));
        self.io.repeat(Key::Join, ctl, self.cfg.retries, self.cfg.rxt, now);
        true
    }

    /// TJC: the parent took us into the tree (F=1), or refused (F=0).
    fn on_tjc(&mut self, now: Instant, from: SocketAddr, p: &Packet<'_>) -> bool {
        if from.ip() != self.me.parent.ip() && !self.is_owner(from) {
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
        let known = self.me.membership.member_id;
        if !start.is_valid() || m.member_id == 0 || (known != 0 && m.member_id != known) {
            return false;
        }
        self.me.membership = m;
        if self.start.is_none() {
            self.set_start(start, now);
        }
        self.status = JoinStatus::Joined;
        self.io.stop_repeat(Key::Join);
        self.io.timers.set(Timer::ParentSilence, now + self.failure_time());
        self.io.timers.set(Timer::Keepalive, now + self.cfg.hgt / 2);
        if self.creation {
            let ctl = self.me.ctl(self.me.owner, self.me.header(PacketType::Ccc));
            self.io.ctl.push_back(ctl);
        }
        true
    }

    fn refused(&mut self) {
        self.status = JoinStatus::Refused;
        self.io.stop_repeat(Key::Join);
    }

    /// The receive window starts at `start`; DATA heard before it is replayed.
    fn set_start(&mut self, start: Psn, now: Instant) {
        self.start = Some(start);
        let mut child = Child::new(start);
        let conn_id = self.me.conn_id;
        for e in self.early.drain(..) {
            if Some(e.conn_id) == conn_id && !e.psn.is_before(start) {
                child.rx.on_segment(e.psn, e.last, &e.data);
            }
        }
        child.refresh(&self.cfg, now, &mut self.io);
        self.child = Some(child);
    }

    /// DATA/RDATA from the TO on the group.
    fn on_data(&mut self, now: Instant, p: &Packet<'_>) -> bool {
        let h = p.header;
        let psn = Psn(h.psn);
        if !psn.is_valid() {
            return false;
        }
        let joined = self.status == JoinStatus::Joined;
        let Some(child) = self.child.as_mut() else {
            if self.early.len() == EARLY_CAPACITY {
                self.early.pop_front();
            }
            self.early.push_back(Early { conn_id: h.connection_id, psn, last: h.flag, data: p.data.to_vec() });
            return true;
        };
        child.on_data(&self.me, &self.cfg, joined, now, p, &mut self.io) != Accept::TooFarAhead
    }

    /// NDATA: the TO is idle; its PSN is the next it will use.
    fn on_ndata(&mut self, now: Instant, next: Psn) -> bool {
        let joined = self.status == JoinStatus::Joined;
        match self.child.as_mut() {
            Some(c) => c.on_ndata(&self.me, &self.cfg, joined, now, next, &mut self.io),
            None => true,
        }
    }

    /// CTR: the TO ends the connection; its PSN is the last it sent.
    fn on_ctr(&mut self, last: Psn, abnormal: bool) -> bool {
        if let Some(c) = self.child.as_mut()
            && last.next().diff(c.rx.lsn()) <= i64::from(MAX_WINDOW)
        {
            c.rx.give_up_before(last.next(), true);
        }
        if self.status == JoinStatus::Joining {
            self.status = JoinStatus::TimedOut;
        }
        self.finish(if abnormal { End::Reset } else { End::Terminated });
        true
    }

    /// ULR with F=0: the TO ejected us.
    fn on_ejected(&mut self, from: SocketAddr, p: &Packet<'_>) -> bool {
        let ours = p.elements.membership.is_some_and(|m| m.member_id == self.me.membership.member_id);
        if !self.is_owner(from) || !ours || self.status != JoinStatus::Joined {
            return false;
        }
        self.finish(End::Reset);
        true
    }
}
