//! The sending TU (SU): a TU holding a token sends unicast data back to the
//! TO (draft-dykim-ectp-00 §6.3, "Tokens", "Backward data"): TGR/TGC to get
//! the token, DATA and RDATA to the TO, HB so the TO acknowledges in its
//! HBACK, and TRR/TRC to return the token once everything was acknowledged.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::ack::RepairLimiter;
use super::cc::{CcMode, RateControl};
use super::child::Me;
use super::retry::Key;
use super::sender::{QueueError, Sender};
use super::store::RepairStore;
use super::timer::Timer;
use super::user::{TokenStatus, UserError};
use super::{Config, Dest, Io, Rng, Transmit};
use crate::wire::{Packet, PacketType, Psn, Ro};

/// The backward channel of a token holder: what it sends and keeps.
#[derive(Debug)]
struct Channel {
    sender: Sender,
    /// Sent DATA kept until the TO acknowledged it (not in the unreliable mode).
    store: RepairStore,
    keep_sent: bool,
}

impl Channel {
    fn lowest_kept(&self) -> Psn {
        self.store.lowest().unwrap_or(self.sender.first_unsent())
    }

    /// Nothing queued and nothing unacknowledged.
    fn is_empty(&self) -> bool {
        !self.sender.has_unsent() && self.store.is_empty()
    }
}

/// The SU role of a TU.
#[derive(Debug)]
pub(crate) struct Su {
    status: TokenStatus,
    /// Initial PSN of the last token request (TGR's PSN).
    isn: Psn,
    channel: Option<Channel>,
    /// One past the last PSN sent before the last HB: links are FIFO, so the
    /// TO's HBACK to it has seen everything before this (a missing LSN below
    /// it is lost, not in flight).
    hb_sent_end: Psn,
    /// Repairs the TO's HBACKs asked for, and their back-off.
    rdata: VecDeque<Psn>,
    repairs: RepairLimiter,
    result: Option<Result<u8, UserError>>,
    /// Timestamps of its HBs are microseconds since this instant; the TO
    /// echoes them in its HBACK, which measures the round trip.
    epoch: Option<Instant>,
    rtt: Option<Duration>,
    /// When the last TGR went out.
    asked_at: Option<Instant>,
    /// The round trip averaged (TFMCC's equation); `rtt` above follows its
    /// peaks (repairs and heartbeats).
    rtt_avg: Option<Duration>,
    /// The backward channel's rate: TFMCC (from the TO's reports) and
    /// ECTP_MAX_RATE, and the pacer.
    cc: Option<RateControl>,
    /// The TO takes the token back (TRR with F=1): once everything queued
    /// was sent and acknowledged, TRC answers it.
    withdrawn: bool,
    /// The application waits in `mtoken_return` for the token to go back.
    app_return: bool,
}

impl Su {
    pub(crate) fn new() -> Su {
        Su {
            status: TokenStatus::None,
            isn: Psn(1),
            channel: None,
            hb_sent_end: Psn(1),
            rdata: VecDeque::new(),
            repairs: RepairLimiter::default(),
            result: None,
            epoch: None,
            rtt: None,
            cc: None,
            asked_at: None,
            rtt_avg: None,
            withdrawn: false,
            app_return: false,
        }
    }

    /// Where the token stands.
    pub(crate) fn status(&self) -> TokenStatus {
        self.status
    }

    /// The token held, or 0.
    pub(crate) fn token_id(&self) -> u8 {
        match self.status {
            TokenStatus::Held(id) => id,
            _ => 0,
        }
    }

    /// The token held or being returned (0 if none).
    /// The backward rate in force, bytes per second (infinite: no limit).
    pub(crate) fn rate(&self) -> f64 {
        self.cc.as_ref().map_or(f64::INFINITY, |c| c.rate())
    }

    fn token_id_any(&self) -> u8 {
        match self.status {
            TokenStatus::Held(id) | TokenStatus::Returning(id) => id,
            _ => 0,
        }
    }

    /// How the last request or return ended, once it has.
    pub(crate) fn take_result(&mut self) -> Option<Result<u8, UserError>> {
        self.result.take()
    }

    /// TGR with a fresh initial PSN (`mtoken_get`).
    pub(crate) fn request(
        &mut self,
        me: &Me,
        cfg: &Config,
        rng: &mut Rng,
        now: Instant,
        io: &mut Io,
    ) -> Result<(), UserError> {
        match self.status {
            TokenStatus::None => {}
            TokenStatus::Held(_) => return Err(UserError::AlreadyHeld),
            TokenStatus::Requesting | TokenStatus::Returning(_) => return Err(UserError::Busy),
        }
        self.isn = Psn(rng.nonzero_u32());
        let mut h = me.header(PacketType::Tgr);
        h.psn = self.isn.0;
        let ctl = me.ctl(me.owner, h);
        self.status = TokenStatus::Requesting;
        self.result = None;
        self.app_return = false;
        self.asked_at = Some(now);
        io.repeat(Key::Token, ctl, cfg.retries, cfg.rxt, now);
        Ok(())
    }

    /// Return the token (`mtoken_return`): the TRR follows once everything
    /// sent was acknowledged (see [`Su::progress`]).
    pub(crate) fn return_token(&mut self) -> Result<(), UserError> {
        match self.status {
            TokenStatus::Held(id) => {
                self.status = TokenStatus::Returning(id);
                self.result = None;
                self.app_return = true;
                Ok(())
            }
            // The TO is taking it back already: wait for that to end.
            TokenStatus::Returning(_) if self.withdrawn && !self.app_return => {
                self.result = None;
                self.app_return = true;
                Ok(())
            }
            TokenStatus::Returning(_) | TokenStatus::Requesting => Err(UserError::Busy),
            TokenStatus::None => Err(UserError::NoToken),
        }
    }

    /// The TGR or TRR went unanswered after every retry.
    pub(crate) fn timed_out(&mut self, io: &mut Io) {
        self.status = TokenStatus::None;
        self.channel = None;
        io.timers.stop(Timer::SuHeartbeat);
        self.result = Some(Err(UserError::TimedOut));
    }

    /// The TRR goes out once everything sent before it was acknowledged;
    /// when the TO withdraws the token, the TRC that answers it instead.
    pub(crate) fn progress(&mut self, me: &Me, cfg: &Config, now: Instant, io: &mut Io) {
        if let TokenStatus::Returning(id) = self.status
            && self.withdrawn
            && self.channel.as_ref().is_none_or(Channel::is_empty)
        {
            io.stop_repeat(Key::Token);
            self.give_back(me, id, io);
            log::info!("member {}: token {id} withdrawn by the TO", me.membership.member_id);
            self.end_channel(io);
            return;
        }
        if let TokenStatus::Returning(id) = self.status
            && !io.repeats.is_running(Key::Token)
            && self.channel.as_ref().is_none_or(Channel::is_empty)
        {
            let mut h = me.header(PacketType::Trr);
            h.token_id = id;
            let ctl = me.ctl(me.owner, h);
            io.repeat(Key::Token, ctl, cfg.retries, cfg.rxt, now);
        }
    }

    /// Queue one message for the TO (`msendmsg`); needs the token.
    pub(crate) fn send(&mut self, msg: &[u8]) -> Result<(), UserError> {
        let (TokenStatus::Held(_), Some(c)) = (self.status, self.channel.as_mut()) else {
            return Err(UserError::NoToken);
        };
        c.sender.queue(msg, c.store.len()).map_err(|e| match e {
            QueueError::WouldBlock => UserError::WouldBlock,
            QueueError::BadLength => UserError::BadLength,
        })
    }

    /// Whether a message of `len` bytes would be queued now.
    pub(crate) fn can_send(&self, len: usize) -> bool {
        self.channel.as_ref().is_some_and(|c| c.sender.has_room(len, c.store.len()))
    }

    /// Whether data waits for its first transmission.
    pub(crate) fn has_unsent(&self) -> bool {
        self.channel.as_ref().is_some_and(|c| c.sender.has_unsent())
    }

    /// TGC: the token is granted (F=1, Token ID) or refused (F=0).
    pub(crate) fn on_tgc(&mut self, cfg: &Config, now: Instant, p: &Packet<'_>, io: &mut Io) -> bool {
        let h = p.header;
        if self.status != TokenStatus::Requesting || h.psn != self.isn.0 {
            return false;
        }
        // The TGC answers the TGR: a first round trip (a resent TGR makes it
        // longer, never shorter), until the HBs' timestamps measure it.
        if let Some(at) = self.asked_at.take()
            && self.rtt.is_none()
        {
            self.rtt = Some(now.saturating_duration_since(at));
        }
        io.stop_repeat(Key::Token);
        if h.flag && h.token_id != 0 {
            self.open_channel(cfg, now, h.token_id, io);
            self.result = Some(Ok(h.token_id));
        } else {
            self.status = TokenStatus::None;
            self.result = Some(Err(UserError::Refused));
        }
        true
    }

    /// TRC: the TO took the token back.
    pub(crate) fn on_trc(&mut self, token_id: u8, io: &mut Io) -> bool {
        if self.status != TokenStatus::Returning(token_id) {
            return false;
        }
        io.stop_repeat(Key::Token);
        self.end_channel(io);
        true
    }

    /// The token is back with the TO: no channel, no heartbeats; a waiting
    /// `mtoken_return` returns.
    fn end_channel(&mut self, io: &mut Io) {
        self.status = TokenStatus::None;
        self.channel = None;
        io.timers.stop(Timer::SuHeartbeat);
        self.rdata.clear();
        if std::mem::take(&mut self.app_return) {
            self.result = Some(Ok(0));
        }
        self.withdrawn = false;
    }

    /// TRC (F=1) to the TO for token `id`: given back as it asked.
    fn give_back(&self, me: &Me, id: u8, io: &mut Io) {
        let mut h = me.header(PacketType::Trc);
        h.flag = true;
        h.token_id = id;
        io.ctl.push_back(me.ctl(me.owner, h));
    }

    /// TGR with F=1 from the TO: it gives this TU token `id` (answered by
    /// TGC: F=1 with the initial PSN of the channel, F=0 when this TU holds
    /// or returns another). A pending `mtoken_get` takes the given token.
    pub(crate) fn on_offer(&mut self, me: &Me, cfg: &Config, rng: &mut Rng, now: Instant, id: u8, io: &mut Io) -> bool {
        if id == 0 {
            return false;
        }
        let accept = match self.status {
            TokenStatus::None => {
                self.isn = Psn(rng.nonzero_u32());
                true
            }
            // Its own TGR is out: the channel starts at that request's PSN.
            TokenStatus::Requesting => {
                io.stop_repeat(Key::Token);
                self.result = Some(Ok(id));
                true
            }
            // Our TGC was lost: the same answer again, also while this SU
            // returns the token (the TO holds it for us only once it has it).
            TokenStatus::Held(held) | TokenStatus::Returning(held) if held == id => {
                self.send_tgc(me, id, true, io);
                return true;
            }
            TokenStatus::Held(_) | TokenStatus::Returning(_) => false,
        };
        if accept {
            self.open_channel(cfg, now, id, io);
            log::info!("member {}: token {id} given by the TO", me.membership.member_id);
        }
        self.send_tgc(me, id, accept, io);
        true
    }

    fn send_tgc(&self, me: &Me, id: u8, accept: bool, io: &mut Io) {
        let mut h = me.header(PacketType::Tgc);
        h.flag = accept;
        h.token_id = id;
        h.psn = if accept { self.isn.0 } else { 0 };
        io.ctl.push_back(me.ctl(me.owner, h));
    }

    /// Hold token `id`: a backward channel from the initial PSN on.
    fn open_channel(&mut self, cfg: &Config, now: Instant, id: u8, io: &mut Io) {
        self.status = TokenStatus::Held(id);
        let keep_sent = cfg.ro != Ro::Unreliable;
        let sender = Sender::new(self.isn, cfg.mss, cfg.window, id);
        self.channel = Some(Channel { sender, store: RepairStore::new(self.isn, usize::MAX), keep_sent });
        self.cc = None;
        self.withdrawn = false;
        io.timers.set(Timer::SuHeartbeat, now + cfg.hgt);
    }

    /// TRR with F=1 from the TO: it takes token `id` back. No new message
    /// is taken; what was queued still goes out and is acknowledged, then
    /// TRC answers (see [`Su::progress`]). Holding none (given back
    /// already, the TRC lost), TRC answers at once.
    pub(crate) fn on_withdraw(&mut self, me: &Me, id: u8, io: &mut Io) -> bool {
        match self.status {
            TokenStatus::Held(held) | TokenStatus::Returning(held) if held == id => {
                self.status = TokenStatus::Returning(id);
                self.withdrawn = true;
                true
            }
            TokenStatus::None => {
                self.give_back(me, id, io);
                true
            }
            _ => false,
        }
    }

    /// The TO's HBACK acknowledges what it received; resend what it lacks.
    pub(crate) fn on_hback(&mut self, me: &Me, cfg: &Config, now: Instant, p: &Packet<'_>) -> bool {
        let id = self.token_id_any();
        if id == 0 || p.header.token_id != id {
            return false;
        }
        if let (Some(ts), Some(epoch)) = (p.elements.timestamp, self.epoch) {
            let sent = epoch + Duration::from_micros(ts);
            if sent <= now {
                // Up at once, down slowly: repairs and heartbeats are timed by
                // the path with its queue, not by its emptiest moment (a
                // repair sent again while the first waits in a queue is waste).
                let sample = now - sent;
                self.rtt = Some(match self.rtt {
                    Some(r) if sample < r => (r * 7 + sample) / 8,
                    _ => sample,
                });
                // The rate's RTT: the plain average (TCP-friendliness).
                self.rtt_avg = Some(self.rtt_avg.map_or(sample, |r| (r * 3 + sample) / 4));
                if let Some(cc) = self.cc.as_mut() {
                    cc.note_rtt(now - sent);
                }
            }
        }
        // TFMCC: the TO's report of what it receives; the rate follows from
        // its loss event rate and this SU's own round trip.
        if let (Some(mut r), Some(cc)) = (p.elements.report, self.cc.as_mut())
            && cfg.cc == CcMode::Tfmcc
        {
            if let Some(rtt) = self.rtt_avg.or(self.rtt) {
                let x = super::cc::tcp_rate(f64::from(cfg.mss), rtt, super::cc::p_from_wire(r.p));
                r.calc = if x.is_finite() { x as u64 } else { u64::MAX };
                r.rtt_us = rtt.as_micros().min(u128::from(u32::MAX)) as u32;
                r.measured = true;
            }
            cc.on_report(now, r);
        }
        let backoff = super::parent::repair_backoff(self.rtt, cfg.rxt);
        let (Some(mut ack), Some(c)) = (p.elements.ack, self.channel.as_mut()) else { return false };
        let lsn = Psn(ack.lsn);
        if lsn.is_before(self.hb_sent_end) {
            ack.lsn_lost = true;
        }
        if lsn.is_valid() && !c.sender.first_unsent().is_before(lsn) {
            c.store.release_before(lsn);
        }
        let (store, rdata) = (&c.store, &mut self.rdata);
        self.repairs.schedule(
            &ack,
            c.sender.first_unsent(),
            Dest::Unicast(me.owner),
            now,
            backoff,
            |p| store.contains(p),
            |p| rdata.push_back(p),
        );
        self.repairs.forget_before(c.lowest_kept());
        true
    }

    /// HB to the TO with the lowest PSN it keeps, every RXT while data is
    /// unacknowledged, else every HGT (draft: "Backward data").
    pub(crate) fn heartbeat(&mut self, me: &Me, cfg: &Config, now: Instant, io: &mut Io) {
        let (id, Some(c)) = (self.token_id_any(), self.channel.as_ref()) else { return };
        let mut h = me.header(PacketType::Hb);
        h.psn = c.lowest_kept().0;
        h.token_id = id;
        self.hb_sent_end = c.sender.first_unsent();
        let mut ctl = me.ctl(me.owner, h);
        let epoch = *self.epoch.get_or_insert(now);
        ctl.elements.timestamp = Some(super::parent::micros(now, epoch));
        io.ctl.push_back(ctl);
        let next = if c.is_empty() { cfg.hgt } else { self.while_unacknowledged(cfg) };
        io.timers.set(Timer::SuHeartbeat, now + next);
    }

    /// How often the SU heartbeats while data is unacknowledged: every two
    /// round trips once measured (at least 1 ms), RXT before and at most.
    fn while_unacknowledged(&self, cfg: &Config) -> Duration {
        self.rtt.map_or(cfg.rxt, |r| (r * 2).max(Duration::from_millis(1)).min(cfg.rxt))
    }

    /// The next backward DATA or RDATA, if any.
    pub(crate) fn poll_transmit(
        &mut self,
        me: &Me,
        cfg: &Config,
        now: Instant,
        buf: &mut [u8],
        io: &mut Io,
    ) -> Option<Transmit> {
        let conn_id = me.conn_id?;
        let c = self.channel.as_mut()?;
        let token_id = c.sender.token_id();
        let rtt = self.rtt;
        let cc = self.cc.get_or_insert_with(|| RateControl::new(cfg.cc, cfg.max_rate, cfg.mss, rtt, now));
        cc.set_max_rate(cfg.max_rate);
        cc.tick(now);
        if (!self.rdata.is_empty() || c.sender.has_unsent()) && !cc.ready(now) {
            io.timers.set_opt(Timer::Pace, cc.next_send(now));
            return None;
        }
        let dest = Dest::Unicast(me.owner);
        while let Some(psn) = self.rdata.pop_front() {
            if let Some(s) = c.store.get(psn) {
                io.stats.rdata_sent += 1;
                let t = io.send(s.packet(PacketType::Rdata, conn_id, token_id), dest, buf);
                cc.spend(t.map_or(0, |t| t.len));
                return t;
            }
        }
        let seg = c.sender.next_unsent()?;
        io.stats.data_sent += 1;
        io.stats.bytes_sent += seg.data().len() as u64;
        let t = io.send(seg.packet(PacketType::Data, conn_id, token_id), dest, buf);
        cc.spend(t.map_or(0, |t| t.len));
        if c.keep_sent {
            c.store.insert(seg);
        }
        // Unacknowledged data: heartbeat soon, so that losses show.
        let soon = now + self.while_unacknowledged(cfg);
        if io.timers.get(Timer::SuHeartbeat).is_none_or(|t| t > soon) {
            io.timers.set(Timer::SuHeartbeat, soon);
        }
        t
    }
}
