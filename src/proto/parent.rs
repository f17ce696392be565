//! The parent role of the control tree (draft-dykim-ectp-00 §6.2, §6.4, §6.5):
//! the children table, the stable point, the repair store and its repairs,
//! the heartbeats to the children and the detection of silent ones.
//!
//! The TO is the parent of its children; a repair agent (RA) is a parent of
//! its own. What to do with a dead child (eject it, tell the TO) is the
//! node's business: the role only reports which children fell silent.
//!
//! The invariant that makes failover safe (see `docs/tree.md`): a parent
//! releases a DATA packet only when every child reported, in the Stable field
//! of its Acknowledgement element, that its whole subtree holds it; and a
//! parent keeps a *pin* at the stable point of a child that was admitted but
//! has not attached yet, or that died with descendants who must rebind.
//! Every ancestor therefore still holds whatever any descendant lacks.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::ack::{RepairLimiter, missing};
use super::store::RepairStore;
use super::{Ctl, Dest};
use crate::wire::{AckInfo, Header, Membership, PacketType, Psn};

/// What a parent knows of one child.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChildState {
    /// Its exact unicast address: the only one its packets may come from.
    pub addr: SocketAddr,
    /// The Child ID this parent gave it (the AGN rule uses it).
    pub child_id: u16,
    /// In the tree (TJC sent); before that it was only admitted.
    pub active: bool,
    /// Lowest PSN it has not received, from its ACKs (its start before any).
    pub lsn: Psn,
    /// Lowest PSN its subtree does not hold (its LSN for a leaf).
    pub stable: Psn,
    /// Active TUs in its subtree, itself included (ADN), from its ACKs.
    pub adn: u32,
    /// When a packet from it last arrived (failure detection).
    pub heard: Instant,
    /// Round-trip time measured by HB/HBACK.
    pub rtt: Option<Duration>,
    /// When an HB naming it was last sent (see [`Parent::probe`]).
    pub probed: Option<Instant>,
    /// When its LSN last moved, or it last had everything: a child that
    /// acknowledges nothing new while data waits for it is stuck, whatever
    /// else it sends. (Its own LSN, not its subtree's Stable: a stuck
    /// descendant is for its own parent to drop.)
    pub progress: Instant,
}

/// A point below which nothing may be released yet: a child admitted and not
/// attached yet, or the last stable point of a dead child whose descendants
/// are rebinding.
#[derive(Clone, Copy, Debug)]
struct Pin {
    /// The member it is kept for.
    key: u32,
    psn: Psn,
    until: Instant,
}

/// The parent role of one node.
#[derive(Debug)]
pub(crate) struct Parent {
    children: BTreeMap<u32, ChildState>,
    by_addr: HashMap<SocketAddr, u32>,
    /// DATA kept until every child's subtree has it.
    pub store: RepairStore,
    repairs: RepairLimiter,
    /// Repairs to send: the PSN and where it goes.
    rdata: VecDeque<(Psn, Dest)>,
    /// Children that asked for a PSN this parent does not have yet (a
    /// repair agent that lost it too): served as soon as it arrives.
    wanted: HashMap<u32, Vec<u32>>,
    pins: Vec<Pin>,
    /// Timestamps are microseconds since this instant.
    epoch: Instant,
    /// Which child the next multicast HB asks to answer (round robin).
    hb_turn: u32,
    /// When [`Parent::quiet_laggards`] was last asked (the last NDATA).
    ndata_at: Option<Instant>,
    /// The next Child ID a repair agent gives.
    next_child_id: u16,
}

impl Parent {
    /// A parent with no child, whose store starts at `base`.
    pub(crate) fn new(base: Psn, capacity: usize, now: Instant) -> Parent {
        Parent {
            children: BTreeMap::new(),
            by_addr: HashMap::new(),
            store: RepairStore::new(base, capacity),
            repairs: RepairLimiter::default(),
            rdata: VecDeque::new(),
            wanted: HashMap::new(),
            pins: Vec::new(),
            epoch: now,
            hb_turn: 0,
            ndata_at: None,
            next_child_id: 1,
        }
    }

    /// A fresh Child ID (a repair agent's; the TO derives them from member ids).
    pub(crate) fn new_child_id(&mut self) -> u16 {
        let id = self.next_child_id;
        self.next_child_id = self.next_child_id.wrapping_add(1).max(1);
        id
    }

    /// Take member `id` at `addr` as a child that delivers from `start`;
    /// it becomes active with [`Parent::activate`].
    pub(crate) fn add(&mut self, id: u32, addr: SocketAddr, child_id: u16, start: Psn, now: Instant) {
        let c = ChildState {
            addr,
            child_id,
            active: false,
            lsn: start,
            stable: start,
            adn: 1,
            heard: now,
            rtt: None,
            probed: None,
            progress: now,
        };
        if let Some(old) = self.children.insert(id, c) {
            self.by_addr.remove(&old.addr);
        }
        self.by_addr.insert(addr, id);
    }

    /// The admitted child `id` is now in the tree, delivering from `start`:
    /// from now on what it lacks is kept for it (until then only its join
    /// pin kept it, for a short while).
    pub(crate) fn activate(&mut self, id: u32, start: Psn, now: Instant) {
        if let Some(c) = self.children.get_mut(&id) {
            if !c.active {
                c.lsn = start;
                c.stable = start;
                c.progress = now;
            }
            c.active = true;
        }
        self.unpin(id);
    }

    /// Drop child `id`.
    pub(crate) fn remove(&mut self, id: u32) -> Option<ChildState> {
        let c = self.children.remove(&id)?;
        self.by_addr.remove(&c.addr);
        Some(c)
    }

    /// The child at exactly `addr`.
    pub(crate) fn at(&self, addr: SocketAddr) -> Option<u32> {
        self.by_addr.get(&addr).copied()
    }

    /// Child `id`.
    pub(crate) fn get(&self, id: u32) -> Option<&ChildState> {
        self.children.get(&id)
    }

    /// Number of children (admitted or active).
    pub(crate) fn len(&self) -> usize {
        self.children.len()
    }

    /// Active TUs below this parent: the sum of its active children's ADN.
    pub(crate) fn descendants(&self) -> u32 {
        self.children.values().filter(|c| c.active).map(|c| c.adn.max(1)).fold(0u32, u32::saturating_add)
    }

    /// Something arrived from child `id`.
    pub(crate) fn heard(&mut self, id: u32, now: Instant) {
        if let Some(c) = self.children.get_mut(&id) {
            c.heard = now;
        }
    }

    /// An Acknowledgement element from child `id`: its Stable field moves the
    /// stable point, and (with `repair`) the losses its LSN and bitmap report
    /// are queued for `repair`, each at most once per `backoff` per
    /// destination (draft: "ACK generation", "Retransmissions and ACK
    /// Aggregation by RA"). `sent_end` is one past the last PSN this parent
    /// could have (it repairs nothing at or after it); `next` is one past the
    /// last PSN that exists: an LSN beyond it is a lie. Returns false for one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_ack(
        &mut self,
        id: u32,
        ack: &AckInfo,
        sent_end: Psn,
        next: Psn,
        repair: Option<Dest>,
        now: Instant,
        backoff: Duration,
    ) -> bool {
        let Some(c) = self.children.get_mut(&id) else { return false };
        // A repair in flight is not sent again: the back-off is the child's
        // round trip (and a half), once measured, RXT at most.
        let backoff = repair_backoff(c.rtt, backoff);
        let lsn = Psn(ack.lsn);
        if !lsn.is_valid() || next.is_before(lsn) {
            return false;
        }
        // A subtree cannot hold more than its root: a Stable after the LSN is clamped.
        let stable = if Psn(ack.stable).is_valid() && !lsn.is_before(Psn(ack.stable)) { Psn(ack.stable) } else { lsn };
        // One behind what it already reported is an old ACK overtaken by a newer one.
        if c.lsn.is_before(lsn) {
            c.lsn = lsn;
            c.progress = now;
        }
        if c.stable.is_before(stable) {
            c.stable = stable;
        }
        c.adn = ack.adn.max(1);
        let Some(dest) = repair else { return true };
        for psn in missing(ack, sent_end) {
            if self.store.contains(psn) {
                if self.repairs.allow(psn, dest, now, backoff) {
                    self.rdata.push_back((psn, dest));
                }
            } else if !psn.is_before(self.store.base()) {
                // Not here yet (lost on the way to this parent too): served on arrival.
                let w = self.wanted.entry(psn.0).or_default();
                if !w.contains(&id) {
                    w.push(id);
                }
            }
        }
        true
    }

    /// `psn` was just added to the store: repair it to the children waiting for it.
    pub(crate) fn on_stored(&mut self, psn: Psn, now: Instant, backoff: Duration) {
        let Some(waiting) = self.wanted.remove(&psn.0) else { return };
        for id in waiting {
            if let Some(c) = self.children.get(&id) {
                let dest = Dest::Unicast(c.addr);
                if self.repairs.allow(psn, dest, now, repair_backoff(c.rtt, backoff)) {
                    self.rdata.push_back((psn, dest));
                }
            }
        }
    }

    /// The longest round-trip time measured to an active child, if any.
    pub(crate) fn max_rtt(&self) -> Option<Duration> {
        self.children.values().filter(|c| c.active).filter_map(|c| c.rtt).max()
    }

    /// An HB to child `id` alone, naming it: its answer (HBACK) measures the
    /// round trip at once and carries its acknowledgement. Sent when it
    /// attaches (repairs and the end of a transfer are then timed by it, not
    /// by RXT), again while that is not measured, and to a quiet laggard.
    pub(crate) fn probe(
        &mut self,
        conn_id: u32,
        lowest: Psn,
        id: u32,
        level: u8,
        me: u32,
        now: Instant,
    ) -> Option<Ctl> {
        let c = self.children.get_mut(&id)?;
        c.probed = Some(now);
        let c = *c;
        let mut ctl = self.hb(conn_id, lowest, Dest::Unicast(c.addr), now);
        ctl.elements.membership =
            Some(Membership { tree_level: level, child_id: c.child_id, member_id: id, parent_id: me });
        Some(ctl)
    }

    /// Whether child `id` is to be probed again: its round trip is still not
    /// measured (the first HB or its answer was lost) and the last probe
    /// went `every` ago. Until it is measured its repairs are backed off by
    /// RXT, which stalls a window at any loss.
    pub(crate) fn unmeasured(&self, id: u32, now: Instant, every: Duration) -> bool {
        self.children.get(&id).is_some_and(|c| {
            c.active && c.rtt.is_none() && c.probed.is_none_or(|t| now.saturating_duration_since(t) >= every)
        })
    }

    /// An echoed Timestamp from child `id`: its round-trip time.
    pub(crate) fn on_timestamp(&mut self, id: u32, ts: u64, now: Instant) -> Option<Duration> {
        let sent = self.epoch + Duration::from_micros(ts);
        let c = self.children.get_mut(&id)?;
        if sent > now {
            return None;
        }
        c.rtt = Some(now - sent);
        c.rtt
    }

    /// A round trip to child `id` measured by other means (its TFMCC
    /// reports): repairs are then backed off by the path as it is now, a
    /// queue included.
    pub(crate) fn note_rtt(&mut self, id: u32, rtt: Duration) {
        if let Some(c) = self.children.get_mut(&id) {
            c.rtt = Some(rtt);
        }
    }

    /// Keep everything from `psn` on for member `key` until `until` (or
    /// [`Parent::unpin`]).
    pub(crate) fn pin(&mut self, key: u32, psn: Psn, until: Instant) {
        self.pins.retain(|p| p.key != key);
        self.pins.push(Pin { key, psn, until });
    }

    /// Drop the pin kept for `key`.
    pub(crate) fn unpin(&mut self, key: u32) {
        self.pins.retain(|p| p.key != key);
    }

    /// Drop the pins that expired.
    pub(crate) fn expire_pins(&mut self, now: Instant) {
        self.pins.retain(|p| p.until > now);
    }

    /// The lowest PSN some active child's subtree (or a pin) lacks, if any
    /// child or pin there is. A child admitted and not attached yet counts
    /// only through its join pin, which expires: a joiner that never
    /// attaches does not hold the window.
    pub(crate) fn lowest_needed(&self) -> Option<Psn> {
        let children = self.children.values().filter(|c| c.active).map(|c| c.stable);
        let pins = self.pins.iter().map(|p| p.psn);
        children.chain(pins).reduce(|low, l| if l.is_before(low) { l } else { low })
    }

    /// The stable point: the lowest PSN needed below this parent, or `end`
    /// when nothing before it is needed.
    pub(crate) fn stable(&self, end: Psn) -> Psn {
        match self.lowest_needed() {
            Some(l) if l.is_before(end) => l,
            _ => end,
        }
    }

    /// Release what every child's subtree has (everything before the stable
    /// point, and at most up to `end`).
    pub(crate) fn release(&mut self, end: Psn) {
        let stable = self.stable(end);
        self.store.release_before(stable);
        let base = self.store.base();
        self.repairs.forget_before(base);
        if !self.wanted.is_empty() {
            self.wanted.retain(|&p, _| !Psn(p).is_before(base));
        }
    }

    /// The next repair to send.
    pub(crate) fn next_repair(&mut self) -> Option<(Psn, Dest)> {
        self.rdata.pop_front()
    }

    /// Whether a repair waits.
    pub(crate) fn has_repair(&self) -> bool {
        !self.rdata.is_empty()
    }

    /// HB to `dest` (draft: "Tree maintenance"): `lowest`, the lowest PSN
    /// still repairable, a timestamp, and the active child that must answer
    /// (round robin).
    pub(crate) fn heartbeat(&mut self, conn_id: u32, lowest: Psn, dest: Dest, now: Instant) -> Ctl {
        let mut ctl = self.hb(conn_id, lowest, dest, now);
        let active: Vec<(u32, u16)> =
            self.children.iter().filter(|(_, c)| c.active).map(|(&id, c)| (id, c.child_id)).collect();
        if !active.is_empty() {
            let (member_id, child_id) = active[self.hb_turn as usize % active.len()];
            self.hb_turn = self.hb_turn.wrapping_add(1);
            ctl.elements.membership = Some(Membership { tree_level: 0, child_id, member_id, parent_id: 0 });
        }
        ctl
    }

    /// A repair agent's HBs: one to each active child, naming it, with the
    /// tree level it has (`level`) and its parent (`me`).
    pub(crate) fn heartbeat_each(&self, conn_id: u32, lowest: Psn, me: u32, level: u8, now: Instant) -> Vec<Ctl> {
        self.children
            .iter()
            .filter(|(_, c)| c.active)
            .map(|(&id, c)| {
                let mut ctl = self.hb(conn_id, lowest, Dest::Unicast(c.addr), now);
                let m = Membership { tree_level: level, child_id: c.child_id, member_id: id, parent_id: me };
                ctl.elements.membership = Some(m);
                ctl
            })
            .collect()
    }

    fn hb(&self, conn_id: u32, lowest: Psn, dest: Dest, now: Instant) -> Ctl {
        let mut h = Header::new(PacketType::Hb, conn_id);
        h.psn = lowest.0;
        let mut ctl = Ctl::new(dest, h);
        ctl.elements.timestamp = Some(micros(now, self.epoch));
        ctl
    }

    /// The active children stuck for longer than `limit`: data before `end`
    /// waits for them, and their LSN did not move. A child that has
    /// everything before `end` is making progress.
    pub(crate) fn stuck(&mut self, now: Instant, end: Psn, limit: Duration) -> Vec<u32> {
        let mut stuck = Vec::new();
        for (&id, c) in self.children.iter_mut().filter(|(_, c)| c.active) {
            if !c.lsn.is_before(end) {
                c.progress = now;
            } else if now.saturating_duration_since(c.progress) > limit {
                stuck.push(id);
            }
        }
        stuck
    }

    /// NDATA (the sender is idle): the active children whose subtree still
    /// lacks something before `end` and that were heard from neither since
    /// the previous NDATA (a child answers NDATA itself when its last ACK
    /// did not cover the tail) nor for two of their round trips (`unknown`
    /// while that is not measured yet). Such a child's last acknowledgement
    /// may have been lost, and a child with no hole sends no other, so its
    /// parent asks it (an HB naming it) rather than wait for its keep-alive,
    /// HGT/2 later. None at the first NDATA.
    pub(crate) fn quiet_laggards(&mut self, end: Psn, now: Instant, unknown: Duration) -> Vec<u32> {
        let Some(since) = self.ndata_at.replace(now) else { return Vec::new() };
        self.children
            .iter()
            .filter(|(_, c)| c.active && c.stable.is_before(end) && c.heard < since)
            .filter(|(_, c)| {
                let quiet = c.rtt.map_or(unknown, |r| (r * 2).max(Duration::from_millis(1)));
                now.saturating_duration_since(c.heard) >= quiet
            })
            .map(|(&id, _)| id)
            .collect()
    }

    /// The active children silent for longer than `limit` (one that has
    /// not attached yet has its own deadline, see `Members::unattached`).
    pub(crate) fn silent(&self, now: Instant, limit: Duration) -> Vec<u32> {
        self.children
            .iter()
            .filter(|(_, c)| c.active && now.saturating_duration_since(c.heard) > limit)
            .map(|(&id, _)| id)
            .collect()
    }
}

/// How long a repair to a child whose round trip is `rtt` is not sent again:
/// one and a half round trips (and a millisecond of slack), RXT at most and
/// while the round trip is not known yet.
pub(crate) fn repair_backoff(rtt: Option<Duration>, rxt: Duration) -> Duration {
    rtt.map_or(rxt, |r| (r + r / 2 + Duration::from_millis(1)).min(rxt))
}

/// Microseconds from `epoch` to `now`, for the Timestamp element.
pub(crate) fn micros(now: Instant, epoch: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::store::Segment;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 4000))
    }

    #[test]
    fn stable_is_the_lowest_subtree_point_and_pins_hold_it() {
        let t0 = Instant::now();
        let mut p = Parent::new(Psn(1), 1000, t0);
        for i in 1..=20 {
            p.store.insert(Segment::copy(Psn(i), true, b"x"));
        }
        p.add(7, addr(7), 1, Psn(1), t0);
        p.add(8, addr(8), 2, Psn(1), t0);
        let mut a = AckInfo::new(15, 3);
        a.stable = 9; // an RA child holding 1..14 itself, a grandchild lacking 9
        assert!(p.on_ack(7, &a, Psn(21), Psn(21), None, t0, Duration::ZERO));
        assert!(p.on_ack(8, &AckInfo::new(12, 1), Psn(21), Psn(21), None, t0, Duration::ZERO));
        assert_eq!(p.stable(Psn(21)), Psn(21), "children admitted, not attached, hold nothing");
        assert_eq!(p.descendants(), 0, "no child is active yet");
        p.activate(7, Psn(1), t0);
        let mut a = AckInfo::new(15, 3);
        a.stable = 9;
        assert!(p.on_ack(7, &a, Psn(21), Psn(21), None, t0, Duration::ZERO));
        p.activate(8, Psn(1), t0);
        assert!(p.on_ack(8, &AckInfo::new(12, 1), Psn(21), Psn(21), None, t0, Duration::ZERO));
        assert_eq!(p.descendants(), 4);
        assert_eq!(p.stable(Psn(21)), Psn(9));
        p.release(Psn(21));
        assert_eq!(p.store.base(), Psn(9), "what a grandchild lacks is still kept");
        p.pin(99, Psn(5), t0 + Duration::from_secs(1));
        assert_eq!(p.stable(Psn(21)), Psn(5));
        p.expire_pins(t0 + Duration::from_secs(1));
        assert_eq!(p.stable(Psn(21)), Psn(9));
        let mut lie = AckInfo::new(22, 1);
        lie.stable = 22;
        assert!(!p.on_ack(8, &lie, Psn(21), Psn(21), None, t0, Duration::ZERO), "an LSN beyond what exists");
        // Stuck after the limit when data waits for them, whatever their subtree.
        let limit = Duration::from_secs(3);
        assert!(p.stuck(t0 + limit, Psn(21), limit).is_empty());
        assert_eq!(p.stuck(t0 + limit + Duration::from_millis(1), Psn(21), limit), vec![7, 8]);
        assert!(p.stuck(t0 + limit * 9, Psn(12), limit).is_empty(), "nothing waits for them before 12");
    }

    #[test]
    fn a_request_for_what_the_store_lacks_is_served_on_arrival() {
        let t0 = Instant::now();
        let rxt = Duration::from_millis(100);
        let mut p = Parent::new(Psn(1), 1000, t0);
        p.store.insert(Segment::copy(Psn(1), true, b"a"));
        p.add(7, addr(7), 1, Psn(1), t0);
        p.activate(7, Psn(1), t0);
        let mut a = AckInfo { lsn_lost: true, ..AckInfo::new(1, 1) };
        a.set_received(0, false); // 2 lost too
        let dest = Dest::Unicast(addr(7));
        assert!(p.on_ack(7, &a, Psn(3), Psn(3), Some(dest), t0, rxt));
        assert_eq!(p.next_repair(), Some((Psn(1), dest)));
        assert_eq!(p.next_repair(), None, "2 is not here yet");
        p.store.insert(Segment::copy(Psn(2), true, b"b"));
        p.on_stored(Psn(2), t0, rxt);
        assert_eq!(p.next_repair(), Some((Psn(2), dest)));
    }
}
