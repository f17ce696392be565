//! The TS-user (TU): joins the connection (creation phase or late), receives
//! the TO's multicast data in order, and, holding a token, sends unicast data
//! back as an SU.
//!
//! Draft clauses: "Connection creation", "Late join", "Forward data",
//! "Tokens", "Backward data", "Leave, pause, termination", "Control Tree
//! Maintenance". Every TU has the [`Child`] role; one that offered to be a
//! repair agent in a tree has the [`Ra`] role too; one holding a token has
//! the [`Su`] role's channel. A TU whose repair-agent parent falls silent
//! rebinds: it asks the TO for a new parent and keeps delivering.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::cc::CcReceiver;
use super::child::{Child, Me, Subtree};
use super::keyring::Keyring;
use super::ra::Ra;
use super::receiver::{Accept, Message};
use super::retry::Key;
use super::stats::Outcome;
use super::su::Su;
use super::timer::Timer;
use super::{CcMode, Config, Ctl, Dest, Io, MSS_RANGE, Rng, Stats, Transmit};
use crate::wire::{Header, Membership, Packet, PacketType, Psn, Tco};

/// DATA kept while the TU does not yet know where its data starts (it
/// joined the group before the LJC arrived).
const EARLY_CAPACITY: usize = 256;
/// Rate Reports a TU sends up in one round of the driver, at most: the
/// children's it passes up (see `CcReceiver::on_child_report`) and its own.
const MAX_REPORTS_PER_ROUND: usize = super::cc::FORWARD_CAP + 1;

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
    /// The repair-agent role, when this TU offered it in a tree.
    ra: Option<Ra>,
    /// Its parent fell silent: it is asking the TO for a new one.
    rebinding: bool,
    rng: Rng,
    /// `leave` was called; the ULR follows the data queued before it.
    ulr_pending: bool,
    /// When the TJR to the parent last went out: its TJC measures the round trip.
    tjr_sent: Option<Instant>,
    /// TFMCC: what this TU measures of the forward channel, and its reports.
    cc: Option<CcReceiver>,
    /// The TO said it paused (NDATA with F=1).
    paused: bool,
    /// The application read from a full queue: acknowledge at once.
    ack_after_read: bool,
    io: Io,
}

/// Whether `a` and `b` are the same IP and port (the flow label and scope
/// of an IPv6 address do not tell peers apart).
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip() == b.ip() && a.port() == b.port()
}

impl User {
    /// A TU that joins the connection of the TO at `owner` (its unicast IP and
    /// the group port). The LJR goes out at the first `poll_transmit`; its
    /// PSN is the most children this TU takes as a repair agent (0: a leaf).
    pub fn new(cfg: Config, owner: SocketAddr, rng: Rng, now: Instant) -> User {
        let me = Me { conn_id: None, owner, parent: owner, membership: Membership::of(0) };
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
            ra: None,
            rebinding: false,
            rng,
            ulr_pending: false,
            tjr_sent: None,
            cc: None,
            paused: false,
            ack_after_read: false,
            io: Io::default(),
        };
        if let Some(sec) = cfg.security {
            let extra = u.rng.next_u64();
            u.io.keys = Some(Box::new(Keyring::user(sec, owner, extra, cfg.failure_time() * 10)));
        }
        let mut h = Header::new(PacketType::Ljr, 0);
        h.psn = u32::from(cfg.ra_children());
        let mut ljr = Ctl::new(Dest::Unicast(owner), h).padded(cfg.min_request());
        ljr.elements.key = u.key_share();
        u.io.repeat(Key::Join, ljr, cfg.retries, cfg.rxt, now);
        u
    }

    /// This TU's key share for its join requests (keyed connections).
    fn key_share(&self) -> Option<crate::wire::KeyShare> {
        self.io.keys.as_ref().map(|k| k.share())
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

    /// Its parent's member id (0: the TO), for ECTP_PARENT.
    pub fn parent_id(&self) -> u32 {
        self.me.membership.parent_id
    }

    /// The smoothed round trip to its parent: TFMCC's echo measure when the
    /// parent is the TO, else what the TJR and the repairs took.
    pub fn rtt(&self) -> Option<Duration> {
        let echo = self.cc.as_ref().and_then(CcReceiver::measured_rtt).filter(|_| self.parent_id() == 0);
        echo.or_else(|| self.child.as_ref().and_then(|c| c.round_trip()))
    }

    /// Whether the TO paused the connection (ECTP_PAUSED): NDATA with F=1
    /// says so, DATA or NDATA with F=0 that it is not.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Its parent's unicast address.
    pub fn parent_addr(&self) -> SocketAddr {
        self.me.parent
    }

    /// Its tree level (1: a child of the TO), for ECTP_TREE_LEVEL.
    pub fn tree_level(&self) -> u8 {
        self.me.membership.tree_level
    }

    /// Whether it is a repair agent, and how many children it has.
    pub fn ra_children(&self) -> Option<usize> {
        self.ra.as_ref().map(|r| r.parent.len())
    }

    /// Whether it is looking for a new parent.
    pub fn is_rebinding(&self) -> bool {
        self.rebinding
    }

    /// The connection's parameters (the TO's, once joined).
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// What this endpoint counted.
    pub fn stats(&self) -> &Stats {
        &self.io.stats
    }

    /// ECTP_MAX_RATE: cap the backward data (0: no cap).
    pub fn set_max_rate(&mut self, max_rate: u64) {
        self.cfg.max_rate = max_rate;
    }

    /// The backward sending rate in force, bytes per second (`u64::MAX`:
    /// no limit): TFMCC's once a token was held, else the cap.
    pub fn rate(&self) -> u64 {
        let cap = if self.cfg.max_rate > 0 { self.cfg.max_rate as f64 } else { f64::INFINITY };
        let r = self.su.rate().min(cap);
        if r.is_finite() { r as u64 } else { u64::MAX }
    }

    /// Bytes of whole messages waiting for the application (bounded by
    /// [`Config::app_queue_bytes`] and one message).
    pub fn queued_bytes(&self) -> usize {
        self.child.as_ref().map_or(0, |c| c.rx.queued_bytes())
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
        let c = self.child.as_mut()?;
        let was_full = c.rx.is_app_full();
        let m = c.rx.pop_message()?;
        // The application read after its queue filled: the LSN moves again,
        // and the parent hears it with the next poll_transmit.
        self.ack_after_read |= was_full;
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
    ///
    /// Forward-channel packets are taken only from the exact address (IP
    /// and port) that may send them: DATA, NDATA and CTR from the TO; RDATA,
    /// HB and ejections from the TO or the parent.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let mut scratch = self.io.take_scratch();
        let packet = self.io.stats.parse(datagram);
        self.handle_in(now, from, packet, datagram, &mut scratch);
        // Keyed: the group packets that came before the group key, now that it came.
        let stash = self.io.keys.as_mut().map(|k| k.take_stash()).unwrap_or_default();
        for (from, datagram) in stash {
            let packet = crate::wire::Packet::parse(&datagram).ok();
            self.handle_in(now, from, packet, &datagram, &mut scratch);
        }
        self.io.put_scratch(scratch);
    }

    fn handle_in(
        &mut self,
        now: Instant,
        from: SocketAddr,
        packet: Option<Packet<'_>>,
        datagram: &[u8],
        scratch: &mut Vec<u8>,
    ) {
        let Some(packet) = packet else { return };
        let h = packet.header;
        if self.end.is_some() {
            self.io.stats.dropped_unexpected += 1;
            return;
        }
        // Data and answers may arrive before the LJC tells us the connection ID.
        if self.me.conn_id.is_some_and(|c| c != h.connection_id) {
            self.io.stats.dropped_foreign += 1;
            return;
        }
        let Some(packet) = self.io.open(now, from, packet, datagram, scratch) else { return };
        let from_owner = same(from, self.me.owner);
        let from_parent = same(from, self.me.parent);
        // A child of this repair agent: alive.
        let child = self.ra.as_mut().and_then(|r| r.child_at(from, now));
        let mut outcome = self.admissible(&packet, from_owner, from_parent, child.is_some());
        if outcome == Outcome::Taken {
            if self.is_connected() {
                if from_parent {
                    self.io.timers.set(Timer::ParentSilence, now + self.failure_time());
                }
                if from_owner && !from_parent {
                    self.io.timers.set(Timer::OwnerSilence, now + self.failure_time());
                }
            }
            outcome = self.dispatch(now, from, from_owner, from_parent, child, &packet);
            if outcome == Outcome::Taken {
                self.on_rate_elements(now, from_owner, child.is_some(), &packet);
            }
        }
        self.io.stats.record(outcome);
        self.check_broken();
    }

    /// TFMCC: the TO's Rate element (its round, CLR and rate, and the echo
    /// of a report); a child's report, which a repair agent may pass up;
    /// then this TU's own report if one is due.
    fn on_rate_elements(&mut self, now: Instant, from_owner: bool, from_child: bool, p: &Packet<'_>) {
        let me = self.member_id();
        let Some(cc) = self.cc.as_mut() else { return };
        if let Some(info) = p.elements.rate.filter(|_| from_owner && p.header.token_id == 0) {
            cc.on_rate(now, info, me, 1.0 - self.rng.unit());
        }
        if let Some(r) = p.elements.report.filter(|_| from_child && self.ra.is_some()) {
            cc.on_child_report(now, r);
        }
        // A report that is due goes when the driver runs the timers, after
        // the datagrams it read with this one: stamped then (or, passed up,
        // held until then), its round trip does not count their handling.
        self.io.timers.set(Timer::RateReport, now);
    }

    /// Send the report due, if any, in an ACK to the parent; set the timer
    /// for the next.
    fn poll_rate_report(&mut self, now: Instant) {
        let me = self.member_id();
        let acks = self.acks();
        if self.child.is_none() {
            return;
        }
        if self.cc.is_none() {
            return;
        }
        if !acks {
            // Rebinding or not joined: nothing goes up; the next packet re-arms it.
            self.io.timers.stop(Timer::RateReport);
            return;
        }
        // Each report in an ACK of its own: the children's passed up (a
        // repair agent may have taken several since the last round), then
        // ours if due. The subtree (a walk over a repair agent's children)
        // only when a report does go up.
        let mut sub = None;
        for _ in 0..MAX_REPORTS_PER_ROUND {
            let Some(r) = self.cc.as_mut().and_then(|cc| cc.poll_report(now, me)) else { break };
            let sub = *sub.get_or_insert_with(|| self.subtree());
            if let Some(c) = self.child.as_mut() {
                c.send_ack_with(&self.me, &self.cfg, sub, now, Some(r), &mut self.io);
                self.io.stats.rate_reports += 1;
            }
        }
        let next = self.cc.as_ref().and_then(|cc| cc.deadline(me)).map(|t| t.max(now + Duration::from_micros(100)));
        self.io.timers.set_opt(Timer::RateReport, next);
    }

    /// Whether a packet of this type may come from this address (the exact
    /// IP and port: DATA, NDATA, CTR and the answers to requests from the TO;
    /// RDATA, HB, TJC and ejections from the TO or the parent; ACK, HBACK and
    /// ULR from a child of this repair agent), and carries user data only
    /// where it may: DATA and RDATA, at most MSS bytes.
    fn admissible(&self, p: &Packet<'_>, from_owner: bool, from_parent: bool, from_child: bool) -> Outcome {
        let h = p.header;
        let allowed = match h.packet_type {
            PacketType::Data | PacketType::Ndata | PacketType::Ctr | PacketType::Ccr => from_owner,
            PacketType::Ljc | PacketType::Tgc | PacketType::Trc => from_owner,
            PacketType::Rdata | PacketType::Hb | PacketType::Tjc => from_owner || from_parent,
            PacketType::Ulr => from_owner || from_parent || from_child,
            PacketType::Hback => from_owner || from_child,
            PacketType::Ack => from_child,
            // A joiner's TJR may come from anywhere: the RA takes only announced ones.
            PacketType::Tjr => !h.flag || from_owner,
            // The TO gives or withdraws a token (F=1: the TO started it).
            PacketType::Tgr | PacketType::Trr if h.flag => from_owner,
            // Only the TO receives these.
            PacketType::Ccc | PacketType::Ljr | PacketType::Tgr | PacketType::Trr => return Outcome::Unexpected,
        };
        if !allowed {
            return Outcome::Source;
        }
        let len = p.data.len();
        let ok = match h.packet_type {
            PacketType::Data | PacketType::Rdata => {
                // Before the LJC the connection's MSS is not known yet.
                let mss = if self.me.conn_id.is_some() { self.cfg.mss } else { MSS_RANGE.1 };
                (1..=usize::from(mss)).contains(&len)
            }
            // Padding, so that a request is never shorter than its answer.
            PacketType::Tjr => true,
            _ => len == 0,
        };
        if ok { Outcome::Taken } else { Outcome::Length }
    }

    fn dispatch(
        &mut self,
        now: Instant,
        from: SocketAddr,
        from_owner: bool,
        from_parent: bool,
        child: Option<u32>,
        packet: &Packet<'_>,
    ) -> Outcome {
        let h = packet.header;
        match h.packet_type {
            PacketType::Data | PacketType::Rdata if h.token_id == 0 => {
                // New DATA from the TO: it is not paused (any more).
                self.paused &= h.packet_type != PacketType::Data || !from_owner;
                self.on_data(now, packet)
            }
            PacketType::Ccr => self.on_ccr(now, packet).into(),
            PacketType::Ljc => self.on_ljc(now, packet).into(),
            PacketType::Tjc => self.on_tjc(now, from, packet).into(),
            PacketType::Ndata => {
                let o = self.on_ndata(now, Psn(h.psn));
                if o == Outcome::Taken {
                    self.paused = h.flag;
                }
                o
            }
            PacketType::Ctr => self.on_ctr(Psn(h.psn), h.flag),
            // The TO's HB, when the parent is a repair agent, only says the TO lives.
            PacketType::Hb if from_parent => self.on_heartbeat(now, packet),
            PacketType::Hb => Outcome::Taken,
            PacketType::Ulr => {
                self.subtree_change(now, |u| u.on_ulr(now, from_owner, from_parent, child, packet)).into()
            }
            PacketType::Tjr if h.flag => self.on_notice(now, packet).into(),
            PacketType::Tjr => self
                .subtree_change(now, |u| {
                    u.ra.as_mut().is_some_and(|r| r.on_tjr(&u.me, &u.cfg, now, from, packet, &mut u.io))
                })
                .into(),
            PacketType::Ack => child.is_some_and(|id| self.on_child_ack(now, id, packet)).into(),
            PacketType::Hback if from_owner => self.su.on_hback(&self.me, &self.cfg, now, packet).into(),
            PacketType::Hback => child.is_some_and(|id| self.on_child_hback(now, id, packet)).into(),
            PacketType::Tgc => self.su.on_tgc(&self.cfg, now, packet, &mut self.io).into(),
            PacketType::Trc => self.su.on_trc(h.token_id, &mut self.io).into(),
            PacketType::Tgr if self.is_connected() => {
                self.su.on_offer(&self.me, &self.cfg, &mut self.rng, now, h.token_id, &mut self.io).into()
            }
            PacketType::Trr => self.su.on_withdraw(&self.me, h.token_id, &mut self.io).into(),
            _ => Outcome::Unexpected,
        }
    }

    /// Reliable mode: a loss that can no longer be repaired ends the
    /// connection for this TU (ECONNRESET); it never delivers across a hole.
    fn check_broken(&mut self) {
        if self.end.is_none() && self.child.as_ref().is_some_and(|c| c.rx.is_broken()) {
            log::info!("member {}: data lost beyond repair: connection reset", self.member_id());
            self.finish(End::Reset);
        }
    }

    /// Next datagram to send, written into `buf`: control packets, then a
    /// repair agent's repairs, then backward data.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.progress(now);
        if std::mem::take(&mut self.ack_after_read) && self.acks() {
            let sub = self.subtree();
            if let Some(c) = self.child.as_mut() {
                c.send_ack(&self.me, &self.cfg, sub, now, &mut self.io);
                c.refresh(&self.cfg, now, &mut self.io);
            }
        }
        if let Some(t) = self.io.poll_ctl(buf) {
            return Some(t);
        }
        if !self.may_send_data() {
            return None;
        }
        if self.end.is_none()
            && let Some(t) = self.ra.as_mut().and_then(|r| r.poll_transmit(&self.me, buf, &mut self.io))
        {
            return Some(t);
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
            let sub = self.subtree();
            match t {
                Timer::Repeat => {
                    for key in self.io.poll_repeats(now) {
                        match key {
                            Key::Join if self.rebinding => {
                                log::info!("no new parent after every retry: connection reset");
                                self.finish(End::Reset);
                            }
                            Key::Join => self.status = JoinStatus::TimedOut,
                            Key::Token => self.su.timed_out(&mut self.io),
                            _ => {}
                        }
                    }
                }
                // While rebinding, nothing goes to the silent parent.
                Timer::AckRepeat if self.rebinding => {}
                Timer::HoleExpiry | Timer::AckRepeat => {
                    if let Some(c) = self.child.as_mut() {
                        c.on_timer(t, &self.me, &self.cfg, sub, now, &mut self.io);
                    }
                }
                Timer::Keepalive if self.is_connected() && !self.rebinding => {
                    if let Some(c) = self.child.as_mut() {
                        c.on_timer(t, &self.me, &self.cfg, sub, now, &mut self.io);
                    }
                }
                Timer::ParentSilence if self.is_connected() && self.me.parent != self.me.owner => {
                    self.start_rebind(now);
                }
                Timer::ParentSilence | Timer::OwnerSilence if self.is_connected() => {
                    log::info!("the TO silent for {:?}: connection reset", self.failure_time());
                    self.finish(End::Reset);
                }
                Timer::Heartbeat => {
                    if let (Some(ra), Some(c)) = (self.ra.as_mut(), self.child.as_ref()) {
                        ra.heartbeat(&self.me, &self.cfg, now, c.rx.lsn(), &mut self.io);
                    }
                    self.io.timers.set(Timer::Heartbeat, now + self.cfg.hgt);
                }
                Timer::SuHeartbeat => self.su.heartbeat(&self.me, &self.cfg, now, &mut self.io),
                Timer::RateReport => self.poll_rate_report(now),
                _ => {}
            }
        }
        self.progress(now);
        self.check_broken();
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
        self.cfg.failure_time()
    }

    /// Whether the connection is up for this TU (joined, not ended).
    fn is_connected(&self) -> bool {
        self.status == JoinStatus::Joined && self.end.is_none()
    }

    /// Whether acknowledgements go to the parent now.
    fn acks(&self) -> bool {
        self.status == JoinStatus::Joined && !self.rebinding
    }

    /// What this TU's acknowledgements say of its subtree.
    fn subtree(&self) -> Subtree {
        self.ra.as_ref().map_or(Subtree::LEAF, Ra::subtree)
    }

    /// HB from the parent: answer if named, and in the semi-reliable mode
    /// give up what the parent no longer keeps. A repair agent's HB also
    /// tells this TU its tree level.
    fn on_heartbeat(&mut self, now: Instant, p: &Packet<'_>) -> Outcome {
        if self.status != JoinStatus::Joined || self.rebinding {
            return Outcome::Unexpected;
        }
        if let Some(m) = p.elements.membership.filter(|m| m.member_id == self.member_id())
            && self.me.parent != self.me.owner
        {
            self.me.membership.tree_level = m.tree_level;
            self.me.membership.parent_id = m.parent_id;
        }
        let sub = self.subtree();
        match self.child.as_mut() {
            Some(c) => c.on_heartbeat(&self.me, &self.cfg, sub, now, p, &mut self.io),
            None => Outcome::Taken,
        }
    }

    /// ULR. F=0 naming this TU, from the TO or the parent: ejected. F=0 from
    /// the TO naming another member: this repair agent must drop that child.
    /// F=1 from the TO: it confirms a departure report. F=1 from a child: it leaves.
    fn on_ulr(
        &mut self,
        now: Instant,
        from_owner: bool,
        from_parent: bool,
        child: Option<u32>,
        p: &Packet<'_>,
    ) -> bool {
        let about = p.elements.membership.map(|m| m.member_id);
        let me = self.member_id();
        match (p.header.flag, about) {
            (false, Some(id)) if id == me => {
                if !(from_owner || from_parent) || self.status != JoinStatus::Joined {
                    return false;
                }
                self.finish(End::Reset);
                true
            }
            (false, Some(id)) if from_owner && id != 0 => {
                let Some(ra) = self.ra.as_mut() else { return false };
                ra.on_eject_order(&self.me, &self.cfg, now, id, &mut self.io);
                true
            }
            (true, Some(id)) if from_owner && id != me => {
                self.ra.as_mut().is_some_and(|r| r.on_report_confirm(id, &mut self.io))
            }
            (true, _) => {
                let (Some(id), Some(ra)) = (child, self.ra.as_mut()) else { return false };
                ra.on_child_leave(&self.me, &self.cfg, now, id, &mut self.io);
                true
            }
            _ => false,
        }
    }

    /// TJR with F=1 from the TO: an admission notice for this repair agent.
    fn on_notice(&mut self, now: Instant, p: &Packet<'_>) -> bool {
        self.status == JoinStatus::Joined
            && self.ra.as_mut().is_some_and(|r| r.on_notice(&self.me, &self.cfg, now, p, &mut self.io))
    }

    /// ACK from child `id` of this repair agent. When the whole subtree has
    /// caught up with this agent and no new data came since its last
    /// acknowledgement, it acknowledges upward at once, so that the end of a
    /// transfer reaches the TO within an RTT per level.
    fn on_child_ack(&mut self, now: Instant, id: u32, p: &Packet<'_>) -> bool {
        let before = self.subtree().adn;
        let acks = self.acks();
        let (Some(ra), Some(c)) = (self.ra.as_mut(), self.child.as_mut()) else { return false };
        let own = c.rx.lsn();
        let Some(stable) = ra.on_child_ack(&self.cfg, now, id, p, own, c.rx.known_end()) else { return false };
        ra.probe_unmeasured(&self.me, &self.cfg, now, own, id, &mut self.io);
        let sub = ra.subtree();
        let caught_up = c.is_acked() && stable == own && c.acked_stable() != Some(stable);
        if acks && (caught_up || sub.adn != before) {
            c.send_ack(&self.me, &self.cfg, sub, now, &mut self.io);
        }
        true
    }

    /// Run `f`; if it changed how many TUs this repair agent's subtree
    /// holds (a child attached or went), acknowledge upward at once, so that
    /// the TO's count (ECTP_MEMBERS) follows within an RTT per level.
    fn subtree_change(&mut self, now: Instant, f: impl FnOnce(&mut User) -> bool) -> bool {
        let before = self.subtree().adn;
        let handled = f(self);
        let sub = self.subtree();
        if sub.adn != before
            && self.acks()
            && let Some(c) = self.child.as_mut()
        {
            c.send_ack(&self.me, &self.cfg, sub, now, &mut self.io);
        }
        handled
    }

    /// HBACK from child `id`: its acknowledgement, and its RTT.
    fn on_child_hback(&mut self, now: Instant, id: u32, p: &Packet<'_>) -> bool {
        // The round trip first: the acknowledgement's repairs are backed off
        // by it, and a child just measured is not probed again.
        if let (Some(ts), Some(ra)) = (p.elements.timestamp, self.ra.as_mut()) {
            ra.on_timestamp(&self.me, &self.cfg, now, id, ts, &mut self.io);
        }
        if p.elements.ack.is_some() {
            self.on_child_ack(now, id, p);
        }
        true
    }

    /// The repair-agent parent fell silent for FDN x HGT: LJR with F=1 to the
    /// TO, with this TU's membership and where its data stands; the data from
    /// the TO keeps arriving meanwhile.
    fn start_rebind(&mut self, now: Instant) {
        log::info!(
            "member {}: parent {} silent for {:?}: rebinding",
            self.member_id(),
            self.me.parent,
            self.failure_time()
        );
        self.rebinding = true;
        let sub = self.subtree();
        let mut h = self.me.header(PacketType::Ljr);
        h.flag = true;
        h.psn = u32::from(self.cfg.ra_children());
        let mut ctl = self.me.ctl(self.me.owner, h).padded(self.cfg.min_request());
        if let Some(c) = self.child.as_mut() {
            ctl.elements.ack = Some(c.rebind_ack(sub));
        }
        self.io.timers.stop(Timer::Keepalive);
        self.io.timers.stop(Timer::AckRepeat);
        self.io.repeat(Key::Join, ctl, self.cfg.retries, self.cfg.rxt, now);
    }

    /// CCR: the TO is creating the connection; join its tree directly.
    fn on_ccr(&mut self, now: Instant, p: &Packet<'_>) -> bool {
        if self.status != JoinStatus::Joining || self.start.is_some() || self.creation {
            return true; // heard again, or too late for us: nothing to do
        }
        let Some(params) = p.elements.connection else { return false };
        if !Psn(p.header.psn).is_valid() {
            return false;
        }
        self.cfg.adopt(&params);
        self.me.conn_id = Some(p.header.connection_id);
        self.creation = true;
        let mut h = self.me.header(PacketType::Tjr);
        h.psn = u32::from(self.cfg.ra_children());
        let mut ctl = self.me.ctl(self.me.owner, h).padded(self.cfg.min_request());
        ctl.elements.key = self.key_share();
        self.io.repeat(Key::Join, ctl, self.cfg.retries, self.cfg.rxt, now);
        true
    }

    /// TJR to `parent` (repeated until its TJC).
    fn join_parent(&mut self, parent: SocketAddr, now: Instant) {
        self.me.parent = parent;
        if let Some(k) = self.io.keys.as_mut() {
            k.set_me(self.me.membership.member_id);
            if !same(parent, self.me.owner) {
                k.link_parent(self.me.owner, parent, self.me.membership.parent_id);
            }
        }
        let ctl = self.me.ctl(parent, self.me.header(PacketType::Tjr)).padded(self.cfg.min_request());
        self.io.repeat(Key::Join, ctl, self.cfg.retries, self.cfg.rxt, now);
        self.tjr_sent = Some(now);
    }

    /// LJC: the late join is accepted (F=1) or refused (F=0); its Address
    /// names the parent to attach to. While rebinding, it names the new parent.
    fn on_ljc(&mut self, now: Instant, p: &Packet<'_>) -> bool {
        let m = p.elements.membership;
        if self.rebinding {
            if !p.header.flag {
                log::info!("the TO refused the rebind: connection reset");
                self.finish(End::Reset);
                return true;
            }
            let (Some(m), Some(parent)) = (m, p.elements.address) else { return false };
            if m.member_id != self.member_id() {
                return false;
            }
            if !same(parent, self.me.parent) || !self.io.repeats.is_running(Key::Join) {
                self.me.membership.tree_level = m.tree_level;
                self.me.membership.parent_id = m.parent_id;
                self.join_parent(parent, now);
            }
            return true;
        }
        if self.status != JoinStatus::Joining {
            return false;
        }
        if !p.header.flag {
            self.refused();
            return true;
        }
        if self.start.is_some() {
            // A resent LJC, or the TO sending us on to another parent.
            if let (Some(m), Some(parent)) = (m, p.elements.address)
                && m.member_id == self.member_id()
                && !same(parent, self.me.parent)
            {
                self.me.membership.parent_id = m.parent_id;
                self.join_parent(parent, now);
            }
            return true;
        }
        let (Some(params), Some(m)) = (p.elements.connection, m) else { return false };
        let start = Psn(p.header.psn);
        if !start.is_valid() || m.member_id == 0 {
            return false;
        }
        self.cfg.adopt(&params);
        self.me.conn_id = Some(p.header.connection_id);
        self.me.membership.member_id = m.member_id;
        self.me.membership.parent_id = m.parent_id;
        self.set_start(start, now);
        let parent = p.elements.address.unwrap_or(self.me.owner);
        self.join_parent(parent, now);
        true
    }

    /// TJC: the parent took us into the tree (F=1), or refused (F=0). In the
    /// creation phase of a tree, the TO's TJC may name a repair agent to go
    /// on to (Address element). While rebinding, the new parent's TJC ends it.
    fn on_tjc(&mut self, now: Instant, from: SocketAddr, p: &Packet<'_>) -> bool {
        if self.rebinding {
            if !same(from, self.me.parent) {
                return false;
            }
            if !p.header.flag {
                log::info!("the new parent refused us: connection reset");
                self.finish(End::Reset);
                return true;
            }
            let Some(m) = p.elements.membership.filter(|m| m.member_id == self.member_id()) else { return false };
            self.me.membership = m;
            self.rebinding = false;
            self.io.stop_repeat(Key::Join);
            self.attached(now);
            // Tell the new parent at once where this TU stands.
            let sub = self.subtree();
            if let Some(c) = self.child.as_mut() {
                c.send_ack(&self.me, &self.cfg, sub, now, &mut self.io);
            }
            return true;
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
        if let Some(parent) = p.elements.address.filter(|a| !same(*a, from)) {
            // Creation phase in a tree: the TO sends us on to a repair agent.
            self.me.membership.member_id = m.member_id;
            self.me.membership.parent_id = m.parent_id;
            if self.start.is_none() {
                self.set_start(start, now);
            }
            self.join_parent(parent, now);
            return true;
        }
        self.me.membership = m;
        if let Some(k) = self.io.keys.as_mut() {
            k.set_me(m.member_id);
        }
        if self.start.is_none() {
            self.set_start(start, now);
        }
        self.status = JoinStatus::Joined;
        self.io.stop_repeat(Key::Join);
        self.attached(now);
        if self.creation {
            let ctl = self.me.ctl(self.me.owner, self.me.header(PacketType::Ccc));
            self.io.ctl.push_back(ctl);
        }
        true
    }

    /// In the tree under `me.parent`: the liveness timers start, and the
    /// TJR's answer is a first measure of the round trip to the parent.
    fn attached(&mut self, now: Instant) {
        if let (Some(at), Some(c)) = (self.tjr_sent.take(), self.child.as_mut()) {
            let rtt = now.saturating_duration_since(at);
            c.set_round_trip(rtt);
            if let Some(cc) = self.cc.as_mut() {
                // The TO is at least as far as the parent: a first estimate.
                cc.set_rtt_hint(rtt);
            }
        }
        let t = now + self.failure_time();
        self.io.timers.set(Timer::ParentSilence, t);
        if self.me.parent != self.me.owner {
            self.io.timers.set(Timer::OwnerSilence, t);
        } else {
            self.io.timers.stop(Timer::OwnerSilence);
        }
        self.io.timers.set(Timer::Keepalive, now + self.cfg.hgt / 2);
    }

    fn refused(&mut self) {
        self.status = JoinStatus::Refused;
        self.io.stop_repeat(Key::Join);
    }

    /// The receive window starts at `start`; DATA heard before it is
    /// replayed. A TU that offered to be a repair agent in a tree keeps what
    /// it receives from here on.
    fn set_start(&mut self, start: Psn, now: Instant) {
        self.start = Some(start);
        let mut child = Child::new(
            start,
            self.cfg.ro == crate::wire::Ro::Reliable,
            self.cfg.rx_capacity(),
            self.cfg.app_queue_bytes(),
        );
        let conn_id = self.me.conn_id;
        if self.cfg.ra && self.cfg.tco == Tco::Tree {
            self.ra = Some(Ra::new(start, now));
            self.io.timers.set(Timer::Heartbeat, now + self.cfg.hgt);
        }
        for e in self.early.drain(..) {
            if Some(e.conn_id) == conn_id && !e.psn.is_before(start) {
                child.rx.on_segment(e.psn, e.last, &e.data);
                if let Some(ra) = self.ra.as_mut() {
                    ra.keep_copy(&self.cfg, now, e.psn, e.last, &e.data);
                }
            }
        }
        child.refresh(&self.cfg, now, &mut self.io);
        self.child = Some(child);
        if self.cfg.cc == CcMode::Tfmcc {
            self.cc = Some(CcReceiver::new(self.cfg.mss, None, now));
        }
    }

    /// DATA/RDATA from the TO (or RDATA from the parent).
    fn on_data(&mut self, now: Instant, p: &Packet<'_>) -> Outcome {
        let h = p.header;
        let psn = Psn(h.psn);
        if !psn.is_valid() {
            return Outcome::Range;
        }
        let acks = self.acks();
        let sub = self.subtree();
        let Some(child) = self.child.as_mut() else {
            if self.early.len() == EARLY_CAPACITY {
                self.early.pop_front();
            }
            self.early.push_back(Early { conn_id: h.connection_id, psn, last: h.flag, data: p.data.to_vec() });
            return Outcome::Taken;
        };
        let accept = child.on_data(&self.me, &self.cfg, sub, acks, now, p, &mut self.io);
        if !matches!(accept, Accept::TooFarAhead | Accept::Full)
            && let Some(cc) = self.cc.as_mut()
        {
            cc.on_data(now, psn, p.data.len(), h.packet_type == PacketType::Data);
        }
        if accept == Accept::New
            && let Some(ra) = self.ra.as_mut()
        {
            ra.keep_copy(&self.cfg, now, psn, h.flag, p.data);
        }
        if accept == Accept::TooFarAhead { Outcome::Range } else { Outcome::Taken }
    }

    /// NDATA: the TO is idle; its PSN is the next it will use. A repair
    /// agent asks its quiet laggards where they stand (`Ra::probe_laggards`).
    fn on_ndata(&mut self, now: Instant, next: Psn) -> Outcome {
        let acks = self.acks();
        let sub = self.subtree();
        let believable = match self.child.as_mut() {
            Some(c) => c.on_ndata(&self.me, &self.cfg, sub, acks, now, next, &mut self.io),
            None => true,
        };
        if believable && let (Some(ra), Some(c)) = (self.ra.as_mut(), self.child.as_ref()) {
            ra.probe_laggards(&self.me, &self.cfg, now, c.rx.lsn(), &mut self.io);
        }
        if believable { Outcome::Taken } else { Outcome::Range }
    }

    /// CTR: the TO ends the connection; its PSN is the last it sent. In the
    /// reliable mode a TU that still lacks some of it ends with a reset: it
    /// never delivers across a hole.
    fn on_ctr(&mut self, last: Psn, abnormal: bool) -> Outcome {
        let end = last.next();
        let mut complete = true;
        if let Some(c) = self.child.as_mut() {
            if c.rx.is_reliable() && end.diff(c.rx.lsn()) > c.rx.capacity() as i64 + 1 {
                return Outcome::Range; // beyond anything the window allows: not believable
            }
            complete = end.diff(c.rx.lsn()) <= 0;
            if !complete && !c.rx.is_reliable() {
                c.rx.give_up_before(end, true);
                complete = true;
            }
        }
        if self.status == JoinStatus::Joining {
            self.status = JoinStatus::TimedOut;
        }
        if !complete {
            log::info!("member {}: the TO ended before this TU had everything: connection reset", self.member_id());
        }
        self.finish(if abnormal || !complete { End::Reset } else { End::Terminated });
        Outcome::Taken
    }
}
