//! The parent role of the control tree (draft-dykim-ectp-00 §6.2, §6.4, §6.5):
//! the children table, the stable point, the repair store and its repairs,
//! the heartbeats to the children and the detection of silent ones.
//!
//! The TO is the parent of its children; a repair agent is a parent of its
//! own. What to do with a dead child (eject it, tell the TO) is the node's
//! business: the role only reports which children fell silent.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::ack::RepairLimiter;
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
    /// When a packet from it last arrived (failure detection).
    pub heard: Instant,
    /// Round-trip time measured by HB/HBACK.
    pub rtt: Option<Duration>,
}

/// The parent role of one node.
#[derive(Debug)]
pub(crate) struct Parent {
    children: BTreeMap<u32, ChildState>,
    by_addr: HashMap<SocketAddr, u32>,
    /// DATA kept until every child has it.
    pub store: RepairStore,
    repairs: RepairLimiter,
    /// Repairs to send: the PSN and where it goes.
    rdata: VecDeque<(Psn, Dest)>,
    /// Timestamps are microseconds since this instant.
    epoch: Instant,
    /// Which child the next HB asks to answer (round robin).
    hb_turn: u32,
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
            epoch: now,
            hb_turn: 0,
        }
    }

    /// Take member `id` at `addr` as a child that delivers from `start`;
    /// it becomes active with [`Parent::activate`].
    pub(crate) fn add(&mut self, id: u32, addr: SocketAddr, child_id: u16, start: Psn, now: Instant) {
        let c = ChildState { addr, child_id, active: false, lsn: start, heard: now, rtt: None };
        if let Some(old) = self.children.insert(id, c) {
            self.by_addr.remove(&old.addr);
        }
        self.by_addr.insert(addr, id);
    }

    /// The admitted child `id` is now in the tree.
    pub(crate) fn activate(&mut self, id: u32) {
        if let Some(c) = self.children.get_mut(&id) {
            c.active = true;
        }
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

    /// No child at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// Something arrived from child `id`.
    pub(crate) fn heard(&mut self, id: u32, now: Instant) {
        if let Some(c) = self.children.get_mut(&id) {
            c.heard = now;
        }
    }

    /// An Acknowledgement element from child `id`: its LSN moves the stable
    /// point, and with `repair` the losses it reports (that the store still
    /// has, sent before `sent_end`) are queued for `dest`, each at most once
    /// per `backoff` (draft: "ACK generation"). `next` is one past the last
    /// PSN that exists: an LSN beyond it is a lie. Returns false for one.
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
        let lsn = Psn(ack.lsn);
        if !lsn.is_valid() || next.is_before(lsn) {
            return false;
        }
        // One behind what it already reported is an old ACK overtaken by a newer one.
        if c.lsn.is_before(lsn) {
            c.lsn = lsn;
        }
        if let Some(dest) = repair {
            let (store, rdata) = (&self.store, &mut self.rdata);
            self.repairs.schedule(ack, sent_end, now, backoff, |p| store.contains(p), |p| rdata.push_back((p, dest)));
        }
        true
    }

    /// An echoed Timestamp from child `id`: its round-trip time.
    pub(crate) fn on_timestamp(&mut self, id: u32, ts: u64, now: Instant) {
        let sent = self.epoch + Duration::from_micros(ts);
        if let Some(c) = self.children.get_mut(&id)
            && sent <= now
        {
            c.rtt = Some(now - sent);
        }
    }

    /// The lowest PSN some child lacks, or `end` when all have everything
    /// before it.
    pub(crate) fn stable(&self, end: Psn) -> Psn {
        self.children.values().map(|c| c.lsn).fold(end, |low, l| if l.is_before(low) { l } else { low })
    }

    /// Release what every child has (everything before the stable point,
    /// and at most up to `end`).
    pub(crate) fn release(&mut self, end: Psn) {
        let stable = self.stable(end);
        self.store.release_before(stable);
        self.repairs.forget_before(self.store.base());
    }

    /// The next repair to send.
    pub(crate) fn next_repair(&mut self) -> Option<(Psn, Dest)> {
        self.rdata.pop_front()
    }

    /// HB to `dest` (draft: "Tree maintenance"): `lowest`, the lowest PSN
    /// still repairable, a timestamp, and the active child that must answer
    /// (round robin).
    pub(crate) fn heartbeat(&mut self, conn_id: u32, lowest: Psn, dest: Dest, now: Instant) -> Ctl {
        let mut h = Header::new(PacketType::Hb, conn_id);
        h.psn = lowest.0;
        let mut ctl = Ctl::new(dest, h);
        ctl.elements.timestamp = Some(micros(now, self.epoch));
        let active: Vec<(u32, u16)> =
            self.children.iter().filter(|(_, c)| c.active).map(|(&id, c)| (id, c.child_id)).collect();
        if !active.is_empty() {
            let (member_id, child_id) = active[self.hb_turn as usize % active.len()];
            self.hb_turn = self.hb_turn.wrapping_add(1);
            ctl.elements.membership = Some(Membership { tree_level: 0, child_id, member_id });
        }
        ctl
    }

    /// The children silent for longer than `limit`.
    pub(crate) fn silent(&self, now: Instant, limit: Duration) -> Vec<u32> {
        self.children
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.heard) > limit)
            .map(|(&id, _)| id)
            .collect()
    }
}

/// Microseconds from `epoch` to `now`, for the Timestamp element.
pub(crate) fn micros(now: Instant, epoch: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX)
}
