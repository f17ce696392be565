//! The child role of the control tree, which every TU has
//! (draft-dykim-ectp-00 §6.4, §6.5): the receive window of the forward data,
//! the acknowledgements to the parent (the AGN rule, again while a hole stays
//! open, on NDATA for the tail), the answers to its heartbeats and the
//! keep-alive that tells the parent this child lives.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::ack::{ack_block, ack_of, block_of, blocks_with_holes};
use super::receiver::{Accept, Receiver};
use super::stats::Outcome;
use super::timer::Timer;
use super::{Config, Ctl, Dest, Io, MAX_MESSAGE};
use crate::wire::{Header, Membership, Packet, PacketType, Psn, RateReport, Ro};

/// Who a TU is, as the packets it sends say, and where they go.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Me {
    /// The connection, once an answer of the TO told it.
    pub conn_id: Option<u32>,
    /// The TO's unicast address and the group port: where requests go.
    pub owner: SocketAddr,
    /// The parent in the control tree (the TO while the tree is flat).
    pub parent: SocketAddr,
    /// Member id, Child ID and tree level, as the TO and the parent gave them.
    pub membership: Membership,
}

impl Me {
    /// A header of type `ty` on this TU's connection.
    pub(crate) fn header(&self, ty: PacketType) -> Header {
        Header::new(ty, self.conn_id.unwrap_or(0))
    }

    /// A control packet to `to` with header `h` and this TU's Membership
    /// element, as every TU request and report carries.
    pub(crate) fn ctl(&self, to: SocketAddr, h: Header) -> Ctl {
        let mut ctl = Ctl::new(Dest::Unicast(to), h);
        ctl.elements.membership = Some(self.membership);
        ctl
    }
}

/// What a TU's acknowledgements say of its subtree: a leaf's is itself; a
/// repair agent's adds its children (see [`super::ra::Ra::subtree`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Subtree {
    /// Active TUs in the subtree, itself included (the ADN it reports).
    pub adn: u32,
    /// The lowest PSN somebody below it still lacks, if any.
    pub needed: Option<Psn>,
}

impl Subtree {
    /// A leaf: itself only.
    pub(crate) const LEAF: Subtree = Subtree { adn: 1, needed: None };
}

/// The forward data a TU receives and acknowledges to its parent.
#[derive(Debug)]
pub(crate) struct Child {
    /// Receive window and reassembly of the TO's data.
    pub rx: Receiver,
    /// Highest PSN seen, for the AGN rule.
    highest: Option<Psn>,
    /// The LSN and the Stable point the last ACK reported.
    acked_lsn: Option<Psn>,
    acked_stable: Option<Psn>,
    /// The PSN the first request for a repair named, and when: its arrival
    /// measures how long a repair takes.
    asked: Option<(Psn, Instant)>,
    /// How long a repair takes (smoothed), once measured: requests are
    /// repeated at twice that, not at RXT.
    repair_time: Option<Duration>,
}

impl Child {
    /// A child that delivers from `start`, which begins a message; in the
    /// reliable mode it never gives data up.
    pub(crate) fn new(start: Psn, reliable: bool, capacity: usize, queue_limit: usize) -> Child {
        let rx = Receiver::new(start, capacity, MAX_MESSAGE).with_queue_limit(queue_limit);
        Child {
            rx: if reliable { rx.reliable() } else { rx },
            highest: None,
            acked_lsn: None,
            acked_stable: None,
            asked: None,
            repair_time: None,
        }
    }

    /// DATA or RDATA of the TO. `joined`: in the tree, so ACKs are due.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_data(
        &mut self,
        me: &Me,
        cfg: &Config,
        sub: Subtree,
        joined: bool,
        now: Instant,
        p: &Packet<'_>,
        io: &mut Io,
    ) -> Accept {
        let psn = Psn(p.header.psn);
        let before = self.rx.lsn();
        // A PSN past the next expected one shows a loss: reported at once,
        // in the ACK whose bitmap block holds the first PSN now missing.
        let first_missing = self.highest.map_or(before, |h| h.next());
        let gap = psn.diff(first_missing) > 0 && !self.rx.is_app_full();
        let accept = self.rx.on_segment(psn, p.header.flag, p.data);
        match accept {
            Accept::New => {
                io.stats.data_received += 1;
                io.stats.bytes_received += p.data.len() as u64;
            }
            Accept::Duplicate => io.stats.duplicates += 1,
            Accept::TooFarAhead => return accept,
            // The application's queue is full: nothing is acknowledged or
            // asked for until it reads (the TO's ECTP_SLOW_TIMEOUT bounds how long).
            Accept::Full => {
                io.stats.dropped_full += 1;
                return accept;
            }
        }
        self.repaired(now);
        if cfg.ro == Ro::Unreliable {
            self.rx.expire_holes(now, cfg.rxt);
        }
        let due = self.ack_due(me, cfg, psn);
        let block = if gap && cfg.ro != Ro::Unreliable { block_of(&self.rx, first_missing) } else { None };
        if joined {
            if due || block == Some(0) || (gap && block.is_none() && cfg.ro != Ro::Unreliable) {
                self.send_ack(me, cfg, sub, now, io);
            }
            if let Some(k) = block.filter(|&k| k > 0) {
                self.send_ack_block(me, cfg, sub, now, k, io);
            }
        }
        self.refresh(cfg, now, io);
        accept
    }

    /// NDATA: the TO is idle; `next` is the next PSN it will use. False for
    /// one beyond anything the window allows (not believable).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_ndata(
        &mut self,
        me: &Me,
        cfg: &Config,
        sub: Subtree,
        joined: bool,
        now: Instant,
        next: Psn,
        io: &mut Io,
    ) -> bool {
        // Reliable: the TO is never more than a window ahead of what we lack.
        if self.rx.is_reliable() && next.diff(self.rx.lsn()) > self.rx.capacity() as i64 + 1 {
            return false;
        }
        // A window at most per packet: a forged one costs little.
        let next = self.rx.within_reach(next);
        self.rx.note_end(next, true);
        if cfg.ro == Ro::Unreliable {
            self.rx.expire_holes(now, cfg.rxt);
        }
        // The TO is idle: acknowledge the tail if the last ACK did not cover it.
        if joined && (self.acked_lsn != Some(self.rx.lsn()) || self.acked_stable != Some(self.stable(sub))) {
            self.send_ack(me, cfg, sub, now, io);
        }
        self.refresh(cfg, now, io);
        true
    }

    /// HB from the parent: in the semi-reliable mode give up what the parent
    /// no longer keeps, and answer if it names us.
    pub(crate) fn on_heartbeat(
        &mut self,
        me: &Me,
        cfg: &Config,
        sub: Subtree,
        now: Instant,
        p: &Packet<'_>,
        io: &mut Io,
    ) -> Outcome {
        let lowest = Psn(p.header.psn);
        if cfg.ro == Ro::SemiReliable && lowest.is_valid() && self.rx.lsn().is_before(lowest) {
            // The TO does not wait in this mode: what it no longer keeps is
            // given up, a window per HB at most (one step per segment held).
            self.rx.give_up_before(self.rx.within_reach(lowest), false);
        }
        if p.elements.membership.is_some_and(|m| m.member_id == me.membership.member_id) {
            self.send_hback(me, cfg, sub, now, p.elements.timestamp, io);
        }
        self.refresh(cfg, now, io);
        Outcome::Taken
    }

    /// Run a due timer of this role.
    pub(crate) fn on_timer(&mut self, t: Timer, me: &Me, cfg: &Config, sub: Subtree, now: Instant, io: &mut Io) {
        match t {
            Timer::HoleExpiry => self.rx.expire_holes(now, cfg.rxt),
            // Reliable modes: ACKs every two repair times while a hole stays open, so that
            // a loss at the tail of a burst, a lost ACK or a lost RDATA is asked again.
            Timer::AckRepeat if self.rx.has_hole() && !self.rx.is_app_full() => {
                // Asked again: the first request is no measure of the repair any more.
                self.asked = None;
                self.send_ack(me, cfg, sub, now, io);
                // And every hole further on, a block of 255 PSNs per ACK.
                for k in blocks_with_holes(&self.rx) {
                    self.send_ack_block(me, cfg, sub, now, k, io);
                }
            }
            // A child silent for HGT/2 sends an HBACK of its own, so that its
            // parent hears every live child twice per HGT, whether or not HBs
            // get through (it is ejected after FDN x HGT of silence).
            Timer::Keepalive => self.send_hback(me, cfg, sub, now, None, io),
            _ => {}
        }
        self.refresh(cfg, now, io);
    }

    /// Set the hole timers from the state of the window.
    pub(crate) fn refresh(&mut self, cfg: &Config, now: Instant, io: &mut Io) {
        match cfg.ro {
            Ro::Unreliable => io.timers.set_opt(Timer::HoleExpiry, self.rx.hole_deadline(cfg.rxt)),
            _ if self.rx.has_hole() && !self.rx.is_app_full() => {
                if io.timers.get(Timer::AckRepeat).is_none() {
                    io.timers.set(Timer::AckRepeat, now + self.repeat_interval(cfg));
                }
            }
            _ => io.timers.stop(Timer::AckRepeat),
        }
    }

    /// The Stable point this TU reports: the lowest PSN its subtree lacks.
    fn stable(&self, sub: Subtree) -> Psn {
        let lsn = self.rx.lsn();
        match sub.needed {
            Some(n) if n.is_before(lsn) => n,
            _ => lsn,
        }
    }

    /// The Acknowledgement element: LSN and bitmap of what this TU itself
    /// lacks (what its parent repairs), ADN and Stable of its subtree (what
    /// its parent may release).
    fn ack(&mut self, sub: Subtree) -> crate::wire::AckInfo {
        let mut ack = ack_of(&self.rx, sub.adn);
        ack.stable = self.stable(sub).0;
        self.acked_lsn = Some(self.rx.lsn());
        self.acked_stable = Some(Psn(ack.stable));
        ack
    }

    /// The Acknowledgement element a rebinding TU sends the TO in its LJR.
    pub(crate) fn rebind_ack(&mut self, sub: Subtree) -> crate::wire::AckInfo {
        self.ack(sub)
    }

    /// The Stable point the last acknowledgement reported.
    pub(crate) fn acked_stable(&self) -> Option<Psn> {
        self.acked_stable
    }

    /// Whether no new data came since the last acknowledgement.
    pub(crate) fn is_acked(&self) -> bool {
        self.acked_lsn == Some(self.rx.lsn())
    }

    /// ACK to the parent: LSN, the bitmap after it, ADN and Stable (draft:
    /// "ACK generation", "ACK Aggregation by RA").
    pub(crate) fn send_ack(&mut self, me: &Me, cfg: &Config, sub: Subtree, now: Instant, io: &mut Io) {
        self.send_ack_with(me, cfg, sub, now, None, io);
    }

    /// [`Child::send_ack`], with a TFMCC report.
    pub(crate) fn send_ack_with(
        &mut self,
        me: &Me,
        cfg: &Config,
        sub: Subtree,
        now: Instant,
        report: Option<RateReport>,
        io: &mut Io,
    ) {
        let mut ctl = me.ctl(me.parent, me.header(PacketType::Ack));
        ctl.elements.ack = Some(self.ack(sub));
        ctl.elements.report = report;
        io.ctl.push_back(ctl);
        io.stats.repairs_requested += u64::from(self.rx.has_hole());
        if self.rx.has_hole() && self.asked.is_none() {
            self.asked = Some((self.rx.lsn(), now));
        }
        io.timers.set(Timer::Keepalive, now + cfg.hgt / 2);
        io.timers.set(Timer::AckRepeat, now + self.repeat_interval(cfg));
    }

    /// The round trip to the parent as last measured: the TJR answered by
    /// the TJC, then the time repairs take.
    pub(crate) fn round_trip(&self) -> Option<Duration> {
        self.repair_time
    }

    /// A first measure of the round trip to the parent (its TJR answered by
    /// its TJC), until repairs measure how long they take.
    pub(crate) fn set_round_trip(&mut self, rtt: Duration) {
        if self.repair_time.is_none() {
            self.repair_time = Some(rtt);
        }
    }

    /// An ACK whose bitmap is block `k` (the 255 PSNs from LSN + 1 + 255 k):
    /// what lies past the first block's reach.
    fn send_ack_block(&mut self, me: &Me, cfg: &Config, sub: Subtree, now: Instant, k: u8, io: &mut Io) {
        let mut ctl = me.ctl(me.parent, me.header(PacketType::Ack));
        let mut ack = ack_block(&self.rx, sub.adn, k);
        ack.stable = self.stable(sub).0;
        ctl.elements.ack = Some(ack);
        io.ctl.push_back(ctl);
        io.stats.repairs_requested += 1;
        io.timers.set(Timer::Keepalive, now + cfg.hgt / 2);
        if io.timers.get(Timer::AckRepeat).is_none() {
            io.timers.set(Timer::AckRepeat, now + self.repeat_interval(cfg));
        }
    }

    /// How long after a request for a repair it is asked again: twice the
    /// time a repair takes once measured (at least 2 ms), RXT before, and
    /// never more than RXT.
    fn repeat_interval(&self, cfg: &Config) -> Duration {
        self.repair_time.map_or(cfg.rxt, |t| (t * 2).max(Duration::from_millis(2)).min(cfg.rxt))
    }

    /// The LSN moved past the PSN the first request named: that request
    /// was answered, and its delay is a sample of the repair time.
    fn repaired(&mut self, now: Instant) {
        let Some((psn, at)) = self.asked else { return };
        if psn.is_before(self.rx.lsn()) {
            let sample = now.saturating_duration_since(at);
            self.repair_time = Some(match self.repair_time {
                Some(t) => (t * 7 + sample) / 8,
                None => sample,
            });
            self.asked = None;
        }
    }

    /// HBACK to the parent: the echoed timestamp (when answering an HB that
    /// named us) and the LSN, so the parent learns of a tail the AGN rule did
    /// not acknowledge.
    fn send_hback(&mut self, me: &Me, cfg: &Config, sub: Subtree, now: Instant, timestamp: Option<u64>, io: &mut Io) {
        let mut ctl = me.ctl(me.parent, me.header(PacketType::Hback));
        ctl.elements.timestamp = timestamp;
        ctl.elements.ack = Some(self.ack(sub));
        io.ctl.push_back(ctl);
        io.timers.set(Timer::Keepalive, now + cfg.hgt / 2);
    }

    /// The AGN rule: a child with Child ID c acknowledges each PSN p, received
    /// or detected lost, with p % AGN == c % AGN.
    fn ack_due(&mut self, me: &Me, cfg: &Config, psn: Psn) -> bool {
        let agn = u32::from(cfg.agn.max(1));
        let mine = u32::from(me.membership.child_id) % agn;
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
}
