//! The repair store of a parent (the TO, or a repair agent) and of an SU:
//! DATA kept by PSN after it was sent or received, until every receiver it is
//! kept for has it, and emitted again as RDATA on request (draft: "a parent
//! frees a DATA packet once all its children have it").
//!
//! The TO fills it with the segments its sender sends; a repair agent with
//! the segments it receives (in any order, with holes). Each [`Segment`]
//! shares its message's bytes, so keeping a sent segment copies nothing.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::wire::{EmitError, Header, Packet, PacketType, Psn};

/// One DATA packet's worth of user data: a range of a message whose bytes are
/// shared by all its segments.
#[derive(Clone, Debug)]
pub struct Segment {
    /// Its sequence number.
    pub psn: Psn,
    /// Last segment of its message: carried as the F flag of DATA.
    pub last: bool,
    msg: Arc<[u8]>,
    start: usize,
    end: usize,
}

impl Segment {
    /// Bytes `start..end` of `msg`.
    pub fn new(psn: Psn, last: bool, msg: Arc<[u8]>, start: usize, end: usize) -> Segment {
        let end = end.min(msg.len());
        Segment { psn, last, msg, start: start.min(end), end }
    }

    /// A segment holding its own copy of `data` (a repair agent keeps what it received).
    pub fn copy(psn: Psn, last: bool, data: &[u8]) -> Segment {
        Segment { psn, last, msg: Arc::from(data), start: 0, end: data.len() }
    }

    /// Its user data.
    pub fn data(&self) -> &[u8] {
        self.msg.get(self.start..self.end).unwrap_or_default()
    }

    /// Write it as a packet of type `ty` (DATA or RDATA) of connection
    /// `conn_id` into `out`; returns the length.
    pub fn emit(&self, ty: PacketType, conn_id: u32, token_id: u8, out: &mut [u8]) -> Result<usize, EmitError> {
        self.packet(ty, conn_id, token_id).emit(out)
    }

    /// It as a packet of type `ty` (DATA or RDATA) of connection `conn_id`.
    pub fn packet(&self, ty: PacketType, conn_id: u32, token_id: u8) -> Packet<'_> {
        let mut header = Header::new(ty, conn_id);
        header.psn = self.psn.0;
        header.flag = self.last;
        header.token_id = token_id;
        Packet { header, elements: Default::default(), data: self.data() }
    }
}

/// Segments kept by PSN, from `base` on, with room for holes.
#[derive(Debug)]
pub struct RepairStore {
    /// PSN of `slots[0]`: everything before it was released.
    base: Psn,
    slots: VecDeque<Option<Segment>>,
    /// Segments present in `slots`.
    count: usize,
    /// Widest span of PSNs kept (from `base`).
    capacity: usize,
}

impl RepairStore {
    /// An empty store whose first PSN will be `base`, spanning at most
    /// `capacity` PSNs.
    pub fn new(base: Psn, capacity: usize) -> RepairStore {
        RepairStore { base, slots: VecDeque::new(), count: 0, capacity: capacity.max(1) }
    }

    /// Keep `seg`. Returns false (and keeps nothing) when its PSN was already
    /// released, is already kept, or lies beyond the capacity.
    pub fn insert(&mut self, seg: Segment) -> bool {
        let Ok(idx) = usize::try_from(seg.psn.diff(self.base)) else { return false };
        if idx >= self.capacity {
            return false;
        }
        if self.slots.len() <= idx {
            self.slots.resize_with(idx + 1, || None);
        }
        match &mut self.slots[idx] {
            Some(_) => false,
            slot => {
                *slot = Some(seg);
                self.count += 1;
                true
            }
        }
    }

    /// The kept segment `psn`, if any.
    pub fn get(&self, psn: Psn) -> Option<&Segment> {
        let idx = usize::try_from(psn.diff(self.base)).ok()?;
        self.slots.get(idx)?.as_ref()
    }

    /// Whether `psn` is kept.
    pub fn contains(&self, psn: Psn) -> bool {
        self.get(psn).is_some()
    }

    /// Release everything before `psn`. Costs one step per slot released,
    /// never per PSN skipped.
    pub fn release_before(&mut self, psn: Psn) {
        while psn.diff(self.base) > 0 {
            match self.slots.pop_front() {
                Some(slot) => {
                    self.count -= usize::from(slot.is_some());
                    self.base = self.base.next();
                }
                None => {
                    self.base = psn;
                    break;
                }
            }
        }
    }

    /// Release the oldest kept segment (semi-reliable: room is made by
    /// forgetting the oldest data, however unacknowledged).
    pub fn pop_oldest(&mut self) -> Option<Segment> {
        while let Some(slot) = self.slots.pop_front() {
            self.base = self.base.next();
            if let Some(seg) = slot {
                self.count -= 1;
                return Some(seg);
            }
        }
        None
    }

    /// The lowest PSN kept, if any.
    pub fn lowest(&self) -> Option<Psn> {
        self.slots.iter().position(Option::is_some).map(|i| self.base.add(i as u32))
    }

    /// The first PSN not released: everything before it is gone.
    pub fn base(&self) -> Psn {
        self.base
    }

    /// Segments kept.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Nothing kept.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(p: u32) -> Segment {
        Segment::copy(Psn(p), p.is_multiple_of(2), &p.to_be_bytes())
    }

    #[test]
    fn keeps_with_holes_releases_and_emits() {
        let mut s = RepairStore::new(Psn(u32::MAX - 1), 8);
        assert!(s.insert(seg(u32::MAX - 1)) && s.insert(seg(2)) && !s.insert(seg(2)));
        assert!(!s.insert(seg(9)), "beyond the capacity");
        assert_eq!((s.len(), s.lowest()), (2, Some(Psn(u32::MAX - 1))));
        assert!(!s.contains(Psn(1)) && s.contains(Psn(2)));
        let mut buf = [0u8; 64];
        let n = s.get(Psn(2)).unwrap().emit(PacketType::Rdata, 7, 3, &mut buf).unwrap();
        let p = Packet::parse(&buf[..n]).unwrap();
        assert_eq!((p.header.psn, p.header.flag, p.header.token_id, p.data), (2, true, 3, &2u32.to_be_bytes()[..]));
        s.release_before(Psn(2));
        assert_eq!((s.len(), s.lowest(), s.base()), (1, Some(Psn(2)), Psn(2)));
        assert!(!s.insert(seg(1)), "released already");
        s.release_before(Psn(1_000_000));
        assert!(s.is_empty());
        assert_eq!(s.base(), Psn(1_000_000), "an empty store jumps at once");
    }

    #[test]
    fn pop_oldest_skips_holes() {
        let mut s = RepairStore::new(Psn(10), 16);
        s.insert(seg(12));
        s.insert(seg(13));
        assert_eq!(s.pop_oldest().map(|g| g.psn), Some(Psn(12)));
        assert_eq!((s.base(), s.len()), (Psn(13), 1));
    }
}
