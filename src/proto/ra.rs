//! The repair agent (RA): a TU that is also a parent in the control tree
//! (draft-dykim-ectp-00 §4.2, §6.2, §6.4, §6.5). It keeps what it receives
//! for its children, repairs them by unicast RDATA, heartbeats them, sends
//! its own parent one aggregated acknowledgement for its whole subtree, and
//! tells the TO about the children that attach, leave or fail.
//!
//! Who may attach is the TO's decision: the TO sends the RA an admission
//! notice (TJR with F=1: member id, address, start PSN) before the joiner's
//! own TJR can arrive, and the RA takes only the member it was told about,
//! from exactly that address. See `docs/tree.md` for the packets.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::child::{Me, Subtree};
use super::parent::Parent;
use super::retry::Key;
use super::store::Segment;
use super::{Config, Ctl, Dest, Io, LeaveReason, Transmit};
use crate::wire::{Membership, Packet, PacketType, Psn, Ro};

/// How often an RA's ejection ULR to a child is sent (it has no confirm).
const ULR_SENDS: u32 = 3;

/// A member the TO announced, not attached yet.
#[derive(Clone, Copy, Debug)]
struct Notice {
    addr: SocketAddr,
    level: u8,
    start: Psn,
    until: Instant,
}

/// The repair-agent role of a TU.
#[derive(Debug)]
pub(crate) struct Ra {
    pub parent: Parent,
    pending: HashMap<u32, Notice>,
    /// RTT last reported to the TO for each child, and when.
    rtt_reported: HashMap<u32, (Duration, Instant)>,
}

impl Ra {
    /// An RA whose store starts at `start`, its own first PSN.
    pub(crate) fn new(start: Psn, now: Instant) -> Ra {
        Ra {
            parent: Parent::new(start, super::MAX_WINDOW as usize, now),
            pending: HashMap::new(),
            rtt_reported: HashMap::new(),
        }
    }

    /// Its subtree as its acknowledgements describe it.
    pub(crate) fn subtree(&self) -> Subtree {
        Subtree { adn: 1u32.saturating_add(self.parent.descendants()), needed: self.parent.lowest_needed() }
    }

    /// Keep a segment this RA received, for its children (not in the
    /// unreliable mode; in the semi-reliable mode at most `cfg.window`).
    pub(crate) fn keep_copy(&mut self, cfg: &Config, now: Instant, psn: Psn, last: bool, data: &[u8]) {
        if cfg.ro == Ro::Unreliable {
            return;
        }
        if cfg.ro == Ro::SemiReliable {
            while self.parent.store.len() >= cfg.window as usize && self.parent.store.pop_oldest().is_some() {}
        }
        if self.parent.store.insert(Segment::copy(psn, last, data)) {
            self.parent.on_stored(psn, now, cfg.rxt);
        }
    }

    /// Whether the RA could repair a child from `start` on.
    fn can_serve(&self, cfg: &Config, start: Psn) -> bool {
        cfg.ro != Ro::Reliable || !start.is_before(self.parent.store.base())
    }

    /// TJR with F=1 from the TO: member `M` at `A` will attach, from PSN `start`.
    pub(crate) fn on_notice(&mut self, me: &Me, cfg: &Config, now: Instant, p: &Packet<'_>, io: &mut Io) -> bool {
        let (Some(m), Some(addr)) = (p.elements.membership, p.elements.address) else { return false };
        let start = Psn(p.header.psn);
        if m.member_id == 0 || m.member_id == me.membership.member_id || !start.is_valid() {
            return false;
        }
        if let Some(keys) = io.keys.as_mut() {
            // Keyed: the notice carries the link key of this agent and its new child.
            let Ok(key) = <[u8; 32]>::try_from(p.data) else { return false };
            keys.add_child(addr, m.member_id, key);
        }
        if let Some(c) = self.parent.get(m.member_id).filter(|c| c.addr == addr) {
            // Attached already: the report was lost.
            let report = Membership { tree_level: m.tree_level, child_id: c.child_id, ..m };
            io.ctl.push_back(to_owner(me, PacketType::Tjc, true, 0, report));
            return true;
        }
        if !self.can_serve(cfg, start) {
            log::info!("RA {}: cannot repair member {} from {start:?}: refused", me.membership.member_id, m.member_id);
            io.ctl.push_back(to_owner(me, PacketType::Tjc, false, 0, m));
            return true;
        }
        // Kept for it a little while (its TJR normally comes within an RTT): a
        // joiner that never attaches does not hold the window.
        let until = now + cfg.rxt * 4;
        self.pending.insert(
            m.member_id,
            Notice { addr, level: m.tree_level, start, until: now + cfg.rxt * cfg.retries.max(1) * 2 },
        );
        self.parent.pin(m.member_id, start, until);
        true
    }

    /// TJR from a joiner: taken if the TO announced exactly this member at
    /// exactly this address (or resent, if it is a child already).
    pub(crate) fn on_tjr(
        &mut self,
        me: &Me,
        cfg: &Config,
        now: Instant,
        from: SocketAddr,
        p: &Packet<'_>,
        io: &mut Io,
    ) -> bool {
        let Some(m) = p.elements.membership else { return false };
        let id = m.member_id;
        let mine = me.membership;
        if let Some(c) = self.parent.get(id).filter(|c| c.addr == from) {
            let level = mine.tree_level.saturating_add(1);
            io.ctl.push_back(tjc(
                me,
                from,
                c.lsn,
                Membership { tree_level: level, child_id: c.child_id, member_id: id, parent_id: mine.member_id },
            ));
            return true;
        }
        let Some(n) = self.pending.get(&id).copied().filter(|n| n.addr == from) else { return false };
        self.pending.remove(&id);
        if !self.can_serve(cfg, n.start) {
            // Too late: what it needs was released meanwhile. The TO places it elsewhere.
            self.parent.unpin(id);
            io.ctl.push_back(to_owner(me, PacketType::Tjc, false, 0, Membership::of(id)));
            return true;
        }
        let child_id = self.parent.new_child_id();
        self.parent.add(id, from, child_id, n.start, now);
        self.parent.activate(id, n.start, now);
        let m = Membership { tree_level: n.level, child_id, member_id: id, parent_id: mine.member_id };
        io.ctl.push_back(tjc(me, from, n.start, m));
        // Its round trip, measured at once (repairs are timed by it).
        let conn_id = me.conn_id.unwrap_or(0);
        io.ctl.extend(self.parent.probe(conn_id, n.start, id, n.level, mine.member_id, now));
        // Attach report: the TO marks it active and stops its notices.
        io.ctl.push_back(to_owner(me, PacketType::Tjc, true, 0, m));
        true
    }

    /// ACK or HBACK from child `id`: its LSN, Stable and ADN, and repairs by
    /// unicast. Returns the new stable point of the subtree, if the ACK was
    /// believable.
    pub(crate) fn on_child_ack(
        &mut self,
        cfg: &Config,
        now: Instant,
        id: u32,
        p: &Packet<'_>,
        own_lsn: Psn,
        known_end: Psn,
    ) -> Option<Psn> {
        let ack = p.elements.ack?;
        let addr = self.parent.get(id)?.addr;
        let repair = (cfg.ro != Ro::Unreliable).then_some(Dest::Unicast(addr));
        // A child may be ahead of this RA by up to a window: its LSN is believable there.
        let next = known_end.add(super::MAX_WINDOW);
        if !self.parent.on_ack(id, &ack, known_end, next, repair, now, cfg.rxt) {
            return None;
        }
        self.parent.release(own_lsn);
        Some(self.parent.stable(own_lsn))
    }

    /// The child at exactly `from`, with the packet counted as a sign of life.
    pub(crate) fn child_at(&mut self, from: SocketAddr, now: Instant) -> Option<u32> {
        let id = self.parent.at(from)?;
        self.parent.heard(id, now);
        Some(id)
    }

    /// An echoed timestamp from child `id`: its RTT, reported to the TO when
    /// first measured and when it changed by half, at most every 16 HGT.
    pub(crate) fn on_timestamp(&mut self, me: &Me, cfg: &Config, now: Instant, id: u32, ts: u64, io: &mut Io) {
        let Some(rtt) = self.parent.on_timestamp(id, ts, now) else { return };
        let due = match self.rtt_reported.get(&id) {
            None => true,
            Some(&(last, at)) => {
                let changed = rtt > last + last / 2 || rtt < last / 2;
                changed && now.saturating_duration_since(at) >= cfg.hgt * 16
            }
        };
        let Some(c) = self.parent.get(id) else { return };
        if due {
            self.rtt_reported.insert(id, (rtt, now));
            let level = me.membership.tree_level.saturating_add(1);
            let m = Membership {
                tree_level: level,
                child_id: c.child_id,
                member_id: id,
                parent_id: me.membership.member_id,
            };
            let mut ctl = to_owner(me, PacketType::Ccc, false, 0, m);
            ctl.elements.timestamp = Some(u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX));
            io.ctl.push_back(ctl);
        }
    }

    /// ULR with F=1 from child `id`: it leaves.
    pub(crate) fn on_child_leave(&mut self, me: &Me, cfg: &Config, now: Instant, id: u32, io: &mut Io) {
        self.drop_child(me, cfg, now, id, LeaveReason::Left, io);
    }

    /// ULR with F=0 from the TO naming member `x`, not us: eject that child.
    /// The departure report answers, even for a member that is not here, so
    /// that the TO stops asking.
    pub(crate) fn on_eject_order(&mut self, me: &Me, cfg: &Config, now: Instant, x: u32, io: &mut Io) {
        if let Some(c) = self.parent.get(x).copied() {
            io.repeat(Key::Eject(x), ulr(me, c.addr, false, 0, Membership::of(x)), ULR_SENDS, cfg.rxt, now);
        }
        self.drop_child(me, cfg, now, x, LeaveReason::Ejected, io);
    }

    /// ULR with F=1 from the TO naming member `x`: our report about it arrived.
    pub(crate) fn on_report_confirm(&mut self, x: u32, io: &mut Io) -> bool {
        io.stop_repeat(Key::Departure(x))
    }

    /// Child `id` is gone for `reason`: what was kept only for it goes,
    /// except that a child with descendants leaves a pin at its last stable
    /// point while they rebind; the TO is told, until it confirms.
    fn drop_child(&mut self, me: &Me, cfg: &Config, now: Instant, id: u32, reason: LeaveReason, io: &mut Io) {
        if let Some(c) = self.parent.remove(id) {
            if c.adn > 1 {
                self.parent.pin(id, c.stable, now + rebind_grace(cfg));
            }
            if let Some(keys) = io.keys.as_mut() {
                keys.retire(c.addr, now);
            }
        }
        self.pending.remove(&id);
        self.rtt_reported.remove(&id);
        let report = ulr(
            me,
            me.owner,
            true,
            reason as u32,
            Membership { parent_id: me.membership.member_id, ..Membership::of(id) },
        );
        io.repeat(Key::Departure(id), report, cfg.retries, cfg.rxt, now);
    }

    /// The heartbeat tick (every HGT): an HB to each child, and the children
    /// silent for FDN x HGT ejected and reported failed.
    pub(crate) fn heartbeat(&mut self, me: &Me, cfg: &Config, now: Instant, own_lsn: Psn, io: &mut Io) {
        let lowest = self.repairable_from(own_lsn);
        let level = me.membership.tree_level.saturating_add(1);
        let conn_id = me.conn_id.unwrap_or(0);
        let hbs = self.parent.heartbeat_each(conn_id, lowest, me.membership.member_id, level, now);
        io.ctl.extend(hbs);
        let limit = cfg.hgt * u32::from(cfg.fdn.max(1));
        let mut gone = self.parent.silent(now, limit);
        for id in self.parent.stuck(now, own_lsn, limit) {
            if !gone.contains(&id) {
                gone.push(id);
            }
        }
        for id in gone {
            log::info!("RA {}: child {id} silent for {limit:?}: ejected", me.membership.member_id);
            if let Some(c) = self.parent.get(id).copied() {
                io.repeat(Key::Eject(id), ulr(me, c.addr, false, 0, Membership::of(id)), ULR_SENDS, cfg.rxt, now);
            }
            self.drop_child(me, cfg, now, id, LeaveReason::Failed, io);
        }
        if let Some(keys) = io.keys.as_mut() {
            for n in self.pending.values().filter(|n| n.until <= now) {
                keys.retire(n.addr, now);
            }
            keys.expire(now);
        }
        self.pending.retain(|_, n| n.until > now);
        self.parent.expire_pins(now);
        self.parent.release(own_lsn);
    }

    /// NDATA from the TO (it is idle): an HB to each child whose subtree
    /// lacks something before this RA's own LSN and that was heard from
    /// neither since the previous NDATA nor for two of its round trips. Its
    /// answer carries its acknowledgement: a lost last ACK would otherwise
    /// hold the TO's window, or the end of the connection, until the
    /// child's keep-alive, HGT/2 later.
    pub(crate) fn probe_laggards(&mut self, me: &Me, cfg: &Config, now: Instant, own_lsn: Psn, io: &mut Io) {
        let laggards = self.parent.quiet_laggards(own_lsn, now, cfg.probe_interval());
        if cfg.ro == Ro::Unreliable {
            return;
        }
        for id in laggards {
            self.probe(me, now, own_lsn, id, io);
        }
    }

    /// Child `id` sent an acknowledgement: if its round trip is still not
    /// measured, ask again (every `cfg.probe_interval()`), for its repairs
    /// are backed off by RXT until it is.
    pub(crate) fn probe_unmeasured(&mut self, me: &Me, cfg: &Config, now: Instant, own_lsn: Psn, id: u32, io: &mut Io) {
        if self.parent.unmeasured(id, now, cfg.probe_interval()) {
            self.probe(me, now, own_lsn, id, io);
        }
    }

    /// An HB to child `id` alone, naming it: its answer measures the round
    /// trip and carries its acknowledgement.
    fn probe(&mut self, me: &Me, now: Instant, own_lsn: Psn, id: u32, io: &mut Io) {
        let (lowest, level) = (self.repairable_from(own_lsn), me.membership.tree_level.saturating_add(1));
        let conn_id = me.conn_id.unwrap_or(0);
        io.ctl.extend(self.parent.probe(conn_id, lowest, id, level, me.membership.member_id, now));
    }

    /// The lowest PSN from which this RA can repair everything a child may
    /// lack below its own LSN: HB's PSN (semi-reliable children give up
    /// below it).
    fn repairable_from(&self, own_lsn: Psn) -> Psn {
        let mut p = own_lsn;
        while self.parent.store.contains(p.sub(1)) {
            p = p.sub(1);
        }
        p
    }

    /// The next repair (RDATA, unicast to a child), if any.
    pub(crate) fn poll_transmit(&mut self, me: &Me, buf: &mut [u8], io: &mut Io) -> Option<Transmit> {
        let conn_id = me.conn_id?;
        while let Some((psn, dest)) = self.parent.next_repair() {
            if let Some(seg) = self.parent.store.get(psn) {
                io.stats.rdata_sent += 1;
                return io.send(seg.packet(PacketType::Rdata, conn_id, 0), dest, buf);
            }
        }
        None
    }
}

/// How long a dead parent's descendants have to rebind: they notice within
/// FDN x HGT, then ask the TO and their new parent, each up to `retries`
/// times RXT apart.
pub(crate) fn rebind_grace(cfg: &Config) -> Duration {
    cfg.hgt * u32::from(cfg.fdn.max(1)) + cfg.rxt * cfg.retries.max(1) * 2
}

/// A packet of this RA to the TO about member `m`.
fn to_owner(me: &Me, ty: PacketType, flag: bool, psn: u32, m: Membership) -> Ctl {
    let mut h = me.header(ty);
    h.flag = flag;
    h.psn = psn;
    let mut ctl = Ctl::new(Dest::Unicast(me.owner), h);
    ctl.elements.membership = Some(m);
    ctl
}

/// TJC (F=1) to a child at `to`, delivering from `start`.
fn tjc(me: &Me, to: SocketAddr, start: Psn, m: Membership) -> Ctl {
    let mut h = me.header(PacketType::Tjc);
    h.flag = true;
    h.psn = start.0;
    let mut ctl = Ctl::new(Dest::Unicast(to), h);
    ctl.elements.membership = Some(m);
    ctl
}

fn ulr(me: &Me, to: SocketAddr, flag: bool, psn: u32, m: Membership) -> Ctl {
    let mut h = me.header(PacketType::Ulr);
    h.flag = flag;
    h.psn = psn;
    let mut ctl = Ctl::new(Dest::Unicast(to), h);
    ctl.elements.membership = Some(m);
    ctl
}
