//! The TO's membership table: every member of the connection wherever it is
//! in the control tree, its parent and children, and the policy that places
//! a joiner under a parent ("Membership is owned at the top": every LJR comes
//! to the TO, which admits the member and names its parent in LJC).
//!
//! Placement policy (`docs/tree.md`):
//! - a leaf goes under an active repair agent (RA) with room, preferring one
//!   in the same address prefix (an IPv4 /24, an IPv6 /64), then the
//!   shallowest, then the one with the fewest children, then the earliest;
//!   the TO takes it only when no RA has room;
//! - an RA goes under the TO while the TO has room, else as a leaf would;
//! - an orphan (its parent died) goes to the nearest ancestor of its old
//!   parent with room, and to the TO, whatever its limit, when none has:
//!   only an ancestor is sure to still hold what the orphan lacks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::wire::Psn;

/// The TO itself, as a parent id.
pub(crate) const TO: u32 = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MemberState {
    /// Asked to join; waiting for the application's confirm.
    Pending,
    /// Accepted (LJC sent); waiting for it to attach to its parent.
    Admitted,
    /// In the control tree.
    Active,
}

/// What the TO knows of one member.
#[derive(Debug)]
pub(crate) struct Member {
    /// Its exact unicast address.
    pub addr: SocketAddr,
    pub state: MemberState,
    /// Joined by TJR in the creation phase rather than by LJR.
    pub creation: bool,
    /// The Child ID its parent gave it.
    pub child_id: u16,
    /// First PSN it delivers (LJC's and TJC's PSN), or where it rebinds from.
    pub start: Psn,
    /// Its parent's member id ([`TO`] for the TO).
    pub parent: u32,
    /// Members whose parent it is (admitted or active).
    pub children: BTreeSet<u32>,
    /// As a repair agent, the most children it takes; 0 for a leaf.
    pub ra: u16,
    /// Round-trip time to its parent, as its parent last reported it.
    pub rtt: Option<Duration>,
    /// Its parent is gone (since when, and the nearest ancestor left): it
    /// must rebind within the grace period.
    pub orphan: Option<(Instant, u32)>,
    /// Order of arrival (member ids are random): the last tie-break of placement.
    pub seq: u64,
    /// Admitted (or rebinding) and not attached yet, or asking to join and
    /// not answered yet by the application: dropped if still so by then.
    pub attach_by: Option<Instant>,
}

impl Member {
    pub(crate) fn new(addr: SocketAddr, creation: bool, child_id: u16, start: Psn, ra: u16) -> Member {
        Member {
            addr,
            state: MemberState::Pending,
            creation,
            child_id,
            start,
            parent: TO,
            children: BTreeSet::new(),
            ra,
            rtt: None,
            orphan: None,
            seq: 0,
            attach_by: None,
        }
    }

    /// Whether it counts as a member (in the tree, or rebinding into it).
    pub(crate) fn is_member(&self) -> bool {
        self.state == MemberState::Active
    }
}

/// Every member, and the tree they form.
#[derive(Debug, Default)]
pub(crate) struct Members {
    map: BTreeMap<u32, Member>,
    by_addr: HashMap<SocketAddr, u32>,
    /// Active repair agents: the candidate parents.
    ras: BTreeSet<u32>,
    /// Members inserted so far.
    inserted: u64,
}

impl Members {
    pub(crate) fn insert(&mut self, id: u32, mut m: Member) {
        self.inserted += 1;
        m.seq = self.inserted;
        self.by_addr.insert(m.addr, id);
        self.map.insert(id, m);
    }

    pub(crate) fn get(&self, id: u32) -> Option<&Member> {
        self.map.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut Member> {
        self.map.get_mut(&id)
    }

    /// The member at exactly `addr`.
    pub(crate) fn at(&self, addr: SocketAddr) -> Option<u32> {
        self.by_addr.get(&addr).copied()
    }

    /// Every member, in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Member)> {
        self.map.iter().map(|(&id, m)| (id, m))
    }

    /// Remove `id`: it leaves its parent's children; its own children stay
    /// (they are orphans now: see [`Members::orphan_children`]).
    pub(crate) fn remove(&mut self, id: u32) -> Option<Member> {
        let m = self.map.remove(&id)?;
        self.by_addr.remove(&m.addr);
        self.ras.remove(&id);
        if let Some(p) = self.map.get_mut(&m.parent) {
            p.children.remove(&id);
        }
        Some(m)
    }

    /// The children of `m`, which is gone, are orphans from `now`: they may
    /// rebind to `m`'s parent or above.
    pub(crate) fn orphan_children(&mut self, m: &Member, now: Instant) {
        for &c in &m.children {
            if let Some(child) = self.map.get_mut(&c) {
                child.orphan = Some((now, m.parent));
            }
        }
    }

    /// Make `id` active (attached to its parent); an RA becomes a candidate
    /// parent. Whether it was not active before (it joins now).
    pub(crate) fn activate(&mut self, id: u32) -> bool {
        let Some(m) = self.map.get_mut(&id) else { return false };
        let joins = m.state != MemberState::Active;
        m.state = MemberState::Active;
        m.attach_by = None;
        if m.ra > 0 {
            self.ras.insert(id);
        }
        joins
    }

    /// Move `id` under `parent`.
    pub(crate) fn set_parent(&mut self, id: u32, parent: u32) {
        let Some(old) = self.map.get(&id).map(|m| m.parent) else { return };
        if let Some(p) = self.map.get_mut(&old) {
            p.children.remove(&id);
        }
        if let Some(p) = self.map.get_mut(&parent) {
            p.children.insert(id);
        }
        if let Some(m) = self.map.get_mut(&id) {
            m.parent = parent;
            m.orphan = None;
        }
    }

    /// Its tree level: 1 for a child of the TO (0 for the TO itself).
    pub(crate) fn level(&self, id: u32) -> u8 {
        let mut level = 0u8;
        let mut cur = id;
        while cur != TO && level < u8::MAX {
            match self.map.get(&cur) {
                Some(m) => cur = m.parent,
                None => break,
            }
            level += 1;
        }
        level
    }

    /// Active members below `id` (not counting it).
    pub(crate) fn descendants(&self, id: u32) -> u32 {
        let mut n = 0u32;
        let mut stack: Vec<u32> = self.map.get(&id).map(|m| m.children.iter().copied().collect()).unwrap_or_default();
        while let Some(c) = stack.pop() {
            if let Some(m) = self.map.get(&c) {
                n += u32::from(m.is_member());
                stack.extend(m.children.iter().copied());
            }
        }
        n
    }

    /// Whether `id` can take one more child.
    fn has_room(&self, id: u32) -> bool {
        self.has_room_without(id, None)
    }

    /// Whether `id` can take one more child, not counting child `gone`
    /// (a parent its orphans report dead before its own parent does).
    fn has_room_without(&self, id: u32, gone: Option<u32>) -> bool {
        self.map.get(&id).is_some_and(|m| {
            let used = m.children.len() - gone.map_or(0, |g| usize::from(m.children.contains(&g)));
            m.is_member() && m.ra > 0 && used < usize::from(m.ra)
        })
    }

    /// The parent for a new member at `addr` (an RA when `ra`); `to_room`:
    /// the TO has room for one more child. None: nobody has room.
    pub(crate) fn place(&self, addr: SocketAddr, ra: bool, to_room: bool) -> Option<u32> {
        if ra && to_room {
            return Some(TO);
        }
        let best = self
            .ras
            .iter()
            .copied()
            .filter(|&id| self.has_room(id) && self.map.get(&id).is_some_and(|m| m.addr != addr))
            .min_by_key(|&id| {
                let m = &self.map[&id];
                (!same_prefix(m.addr.ip(), addr.ip()), self.level(id), m.children.len(), m.seq)
            });
        best.or(to_room.then_some(TO))
    }

    /// The parent for `id`, which rebinds because its parent is gone or
    /// silent: the nearest ancestor of that parent with room, from `from`
    /// up, never `id` itself or one of its descendants; the TO in the end.
    /// The old parent's own place (under `from`) counts as free: its orphan
    /// knows it is gone before its parent does.
    pub(crate) fn place_orphan(&self, id: u32, from: u32) -> u32 {
        let old = self.map.get(&id).map(|m| m.parent);
        let mut cur = from;
        for _ in 0..=u8::MAX {
            if cur == TO {
                return TO;
            }
            if cur != id && !self.is_below(cur, id) && self.has_room_without(cur, old) {
                return cur;
            }
            match self.map.get(&cur) {
                Some(m) => cur = m.parent,
                None => return TO,
            }
        }
        TO
    }

    /// Whether `a` is somewhere below `b`.
    fn is_below(&self, a: u32, b: u32) -> bool {
        let mut cur = a;
        for _ in 0..=u8::MAX {
            match self.map.get(&cur) {
                Some(m) if m.parent == b => return true,
                Some(m) if m.parent != TO => cur = m.parent,
                _ => return false,
            }
        }
        false
    }

    /// The members that should have attached by `now` and did not.
    pub(crate) fn unattached(&self, now: Instant) -> Vec<u32> {
        self.map.iter().filter(|(_, m)| m.attach_by.is_some_and(|t| t <= now)).map(|(&id, _)| id).collect()
    }

    /// Members that asked to join and are not in the tree yet, all and from `ip`.
    pub(crate) fn joining(&self, ip: IpAddr) -> (usize, usize) {
        let joining = self.map.values().filter(|m| m.state != MemberState::Active);
        joining.fold((0, 0), |(all, here), m| (all + 1, here + usize::from(m.addr.ip() == ip)))
    }

    /// The orphans whose grace period is over.
    pub(crate) fn lost_orphans(&self, now: Instant, grace: Duration) -> Vec<u32> {
        self.map
            .iter()
            .filter(|(_, m)| m.orphan.is_some_and(|(since, _)| now.saturating_duration_since(since) > grace))
            .map(|(&id, _)| id)
            .collect()
    }
}

/// Whether `a` and `b` share an IPv4 /24 or an IPv6 /64.
fn same_prefix(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets()[..3] == b.octets()[..3],
        (IpAddr::V6(a), IpAddr::V6(b)) => a.octets()[..8] == b.octets()[..8],
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(a: u8, b: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, a, b], 4000))
    }

    fn active(ms: &mut Members, id: u32, at: SocketAddr, parent: u32, ra: u16) {
        ms.insert(id, Member::new(at, false, id as u16, Psn(1), ra));
        ms.set_parent(id, parent);
        ms.activate(id);
    }

    #[test]
    fn placement_prefers_prefix_then_level_then_room() {
        let mut ms = Members::default();
        assert_eq!(ms.place(addr(1, 9), false, true), Some(TO), "no RA: the TO");
        assert_eq!(ms.place(addr(1, 9), false, false), None, "and nobody when the TO is full");
        active(&mut ms, 1, addr(1, 1), TO, 2);
        active(&mut ms, 2, addr(2, 1), TO, 2);
        assert_eq!(ms.place(addr(2, 9), false, true), Some(2), "same /24");
        assert_eq!(ms.place(addr(3, 9), false, true), Some(1), "shallowest, fewest children, lowest id");
        assert_eq!(ms.place(addr(3, 9), true, true), Some(TO), "an RA goes under the TO while it has room");
        active(&mut ms, 3, addr(2, 2), 2, 2);
        active(&mut ms, 4, addr(2, 3), 2, 0);
        assert!(!ms.has_room(2));
        assert_eq!(ms.place(addr(2, 9), false, true), Some(3), "level 2 in the same prefix beats level 1 elsewhere");
        assert_eq!((ms.level(3), ms.level(4), ms.level(TO)), (2, 2, 0));
        assert_eq!(ms.descendants(2), 2);
        assert_eq!(ms.descendants(TO), 0, "the TO is not a member");
    }

    #[test]
    fn orphans_go_to_the_nearest_ancestor_with_room_never_below_themselves() {
        let mut ms = Members::default();
        active(&mut ms, 1, addr(1, 1), TO, 1);
        active(&mut ms, 2, addr(1, 2), 1, 2);
        active(&mut ms, 3, addr(1, 3), 2, 2);
        active(&mut ms, 4, addr(1, 4), 3, 2);
        // 3 dies: 4 may go to 2 (room: 1 of 2 used)...
        assert_eq!(ms.place_orphan(4, 2), 2);
        // ...but 2 itself, rebinding from 1 (full), goes to the TO.
        assert_eq!(ms.place_orphan(2, 1), TO);
        // 3 must not rebind below itself, even when asked to start there: it
        // walks up past itself to its own ancestor.
        assert_eq!(ms.place_orphan(3, 4), 2);
        let m3 = ms.remove(3).unwrap();
        ms.orphan_children(&m3, Instant::now());
        assert_eq!(ms.get(4).unwrap().orphan.map(|o| o.1), Some(2));
        assert!(!ms.get(2).unwrap().children.contains(&3));
    }
}
