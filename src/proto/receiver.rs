//! The receiving half of a data channel: the receive window, in-order
//! delivery and reassembly of messages (draft: "Forward data").
//!
//! A TU uses one for the TO's multicast data; the TO uses one per token for
//! the SUs' unicast data. A segment that arrives in order is appended straight
//! to the message being reassembled (one copy, no allocation); only segments
//! that arrive ahead of a hole are stored until the hole is filled or given up.
//!
//! Message boundaries: DATA's F flag marks the last segment of a message, so
//! a message begins after a segment with F=1. After data is given up (the
//! unreliable and semi-reliable modes), the receiver cannot know whether the
//! first segment after the hole begins a message; it discards segments up to
//! and including the next one with F=1 and flags the next whole message with
//! a gap.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::wire::Psn;

/// A whole message ready for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The message's bytes.
    pub data: Vec<u8>,
    /// Data was lost (given up) between the previous message and this one.
    pub gap: bool,
}

/// What became of a received segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    /// New data, taken.
    New,
    /// Already had it, or it lies before the window: dropped.
    Duplicate,
    /// Too far ahead of the window: dropped (the sender ignored flow control).
    TooFarAhead,
    /// The next segment in order, but the application's queue is full: not
    /// taken (it is asked for again once the application has read).
    Full,
}

#[derive(Debug)]
struct Stored {
    last: bool,
    data: Vec<u8>,
}

/// Receive window and reassembly for one sender.
#[derive(Debug)]
pub struct Receiver {
    /// Next PSN to deliver: everything before it was delivered or given up.
    expected: Psn,
    /// `ahead[i]` holds PSN `expected + i` if it arrived early (so
    /// `ahead[0]`, if present, is always empty: `expected` has not arrived).
    ahead: VecDeque<Option<Stored>>,
    /// Most segments held ahead of a hole.
    capacity: usize,
    max_message: usize,
    partial: Vec<u8>,
    /// Discarding until after the next segment with F=1.
    syncing: bool,
    /// The next message gets the gap flag.
    gap: bool,
    ready: VecDeque<Message>,
    /// Bytes in `ready`, and the most it holds before it takes nothing more
    /// in order (at least one message always fits).
    ready_bytes: usize,
    queue_limit: usize,
    /// One past the highest PSN known to exist (from DATA, NDATA, CTR).
    known_end: Psn,
    /// `known_end` begins a message (it follows a segment with F=1, or was
    /// announced by NDATA or CTR, which the TO sends between messages).
    end_is_boundary: bool,
    /// Since when a hole has been open (unreliable give-up timer).
    hole_since: Option<Instant>,
    /// Reliable mode: data may never be given up; a loss that cannot be
    /// repaired breaks the stream instead (the TU is then reset).
    reliable: bool,
    broken: bool,
    /// Steps `give_up_before` took, to check its cost in tests.
    #[cfg(test)]
    steps: usize,
}

impl Receiver {
    /// A receiver that delivers from `start` on; `start` begins a message.
    pub fn new(start: Psn, capacity: usize, max_message: usize) -> Receiver {
        Receiver {
            expected: start,
            ahead: VecDeque::new(),
            capacity: capacity.max(1),
            max_message,
            partial: Vec::new(),
            syncing: false,
            gap: false,
            ready: VecDeque::new(),
            ready_bytes: 0,
            queue_limit: usize::MAX,
            known_end: start,
            end_is_boundary: true,
            hole_since: None,
            reliable: false,
            broken: false,
            #[cfg(test)]
            steps: 0,
        }
    }

    /// A receiver of the reliable mode: it never gives data up and never
    /// flags a gap; what would have been a gap breaks it ([`Receiver::is_broken`]).
    pub fn reliable(mut self) -> Receiver {
        self.reliable = true;
        self
    }

    /// Bound the application's queue to about `bytes` (whole messages
    /// waiting to be read): once it holds that much, the next segment in
    /// order is not taken, so the LSN stops where the application stopped.
    pub fn with_queue_limit(mut self, bytes: usize) -> Receiver {
        self.queue_limit = bytes.max(1);
        self
    }

    /// Whether the application's queue is full (see [`Receiver::with_queue_limit`]).
    pub fn is_app_full(&self) -> bool {
        self.ready_bytes >= self.queue_limit
    }

    /// Bytes of whole messages waiting for the application.
    pub fn queued_bytes(&self) -> usize {
        self.ready_bytes
    }

    /// How far ahead of the LSN it holds data.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether this is a receiver of the reliable mode.
    pub fn is_reliable(&self) -> bool {
        self.reliable
    }

    /// Reliable mode: a loss could not be repaired (or a message overran the
    /// largest size): nothing more is delivered.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Lowest sequence number not yet received (the ACK's LSN).
    pub fn lsn(&self) -> Psn {
        self.expected
    }

    /// One past the highest PSN known to exist.
    pub fn known_end(&self) -> Psn {
        self.known_end
    }

    /// Whether `psn` was received, for PSNs at or after the LSN.
    pub fn has(&self, psn: Psn) -> bool {
        match psn.diff(self.expected) {
            d if d < 0 => true,
            0 => false,
            d => self.ahead.get(d as usize).is_some_and(Option::is_some),
        }
    }

    /// Whether a hole lies before the highest known PSN.
    pub fn has_hole(&self) -> bool {
        self.known_end.diff(self.expected) > 0
    }

    /// Learn that every PSN before `end` was sent; `boundary` when `end`
    /// begins a message (NDATA, CTR, or the PSN after a segment with F=1).
    pub fn note_end(&mut self, end: Psn, boundary: bool) {
        match end.diff(self.known_end) {
            d if d > 0 => {
                self.known_end = end;
                self.end_is_boundary = boundary;
            }
            0 => self.end_is_boundary |= boundary,
            _ => {}
        }
    }

    /// Take a DATA or RDATA segment.
    pub fn on_segment(&mut self, psn: Psn, last: bool, data: &[u8]) -> Accept {
        let d = psn.diff(self.expected);
        if d < 0 {
            return Accept::Duplicate;
        }
        if d as u64 >= self.capacity as u64 {
            if self.reliable {
                // The sender waits for the slowest: nothing can be this far ahead.
                return Accept::TooFarAhead;
            }
            // The sender does not wait in this mode and ran ahead: what no
            // longer fits is given up, at most a window per packet (one
            // step per segment held), so that one forged packet costs at
            // most a window of data; a sender far ahead is caught up with
            // in a few packets.
            let step = (d as u64 - self.capacity as u64 + 1).min(self.capacity as u64) as u32;
            self.give_up_before(self.expected.add(step), false);
            if psn.diff(self.expected) as u64 >= self.capacity as u64 {
                return Accept::TooFarAhead;
            }
            return self.on_segment(psn, last, data);
        }
        self.note_end(psn.next(), last);
        if d == 0 && self.is_app_full() {
            return Accept::Full;
        }
        if d == 0 {
            self.ahead.pop_front();
            self.consume(last, data);
            self.expected = self.expected.next();
            self.drain_ahead();
            return Accept::New;
        }
        let idx = d as usize;
        if self.ahead.len() <= idx {
            self.ahead.resize_with(idx + 1, || None);
        }
        match &mut self.ahead[idx] {
            Some(_) => Accept::Duplicate,
            slot => {
                *slot = Some(Stored { last, data: data.to_vec() });
                Accept::New
            }
        }
    }

    /// Deliver the stored segments that now follow in order.
    fn drain_ahead(&mut self) {
        while !self.is_app_full()
            && let Some(Some(_)) = self.ahead.front()
        {
            if let Some(Some(s)) = self.ahead.pop_front() {
                self.consume(s.last, &s.data);
                self.expected = self.expected.next();
            }
        }
    }

    /// Give up every PSN before `psn` that has not arrived (semi-reliable:
    /// the parent no longer buffers it; unreliable: it is presumed lost).
    /// `boundary`: `psn` is known to begin a message, so delivery resumes
    /// there without discarding a message to find the next boundary. Costs
    /// one step per segment held, never one per PSN skipped. A reliable
    /// receiver gives nothing up: it is broken instead.
    pub fn give_up_before(&mut self, psn: Psn, boundary: bool) {
        if psn.diff(self.expected) <= 0 {
            return;
        }
        if self.reliable {
            self.broken = true;
            return;
        }
        while psn.diff(self.expected) > 0 {
            #[cfg(test)]
            {
                self.steps += 1;
            }
            match self.ahead.pop_front() {
                Some(Some(s)) => self.consume(s.last, &s.data),
                Some(None) => self.lose(),
                None => {
                    // Nothing held beyond here: jump.
                    self.lose();
                    self.expected = psn;
                    break;
                }
            }
            self.expected = self.expected.next();
        }
        if boundary {
            self.syncing = false;
            self.partial.clear();
        }
        self.note_end(psn, boundary);
        self.drain_ahead();
    }

    /// `psn`, or the farthest a single packet may move this receiver if
    /// `psn` lies beyond it: a window past what it lacks.
    pub fn within_reach(&self, psn: Psn) -> Psn {
        let reach = self.expected.add(self.capacity as u32);
        if psn.diff(reach) > 0 { reach } else { psn }
    }

    /// Give up the first hole and everything stored before the next hole.
    pub fn give_up_first_hole(&mut self) {
        if self.has_hole() {
            self.ahead.pop_front();
            self.lose();
            self.expected = self.expected.next();
            self.drain_ahead();
        }
    }

    /// Whether the stored segments fill the window (an unreliable receiver
    /// then gives up the first hole to make progress).
    pub fn is_full(&self) -> bool {
        self.ahead.len() >= self.capacity && self.has_hole()
    }

    /// Unreliable mode: give up holes that stayed open for `patience`, and
    /// the first hole at once when the stored segments fill the window.
    pub fn expire_holes(&mut self, now: Instant, patience: Duration) {
        while self.is_full() {
            self.give_up_first_hole();
        }
        if !self.has_hole() {
            self.hole_since = None;
            return;
        }
        match self.hole_since {
            None => self.hole_since = Some(now),
            Some(t) if now.saturating_duration_since(t) >= patience => {
                self.give_up_before(self.known_end, self.end_is_boundary);
                self.hole_since = None;
            }
            Some(_) => {}
        }
    }

    /// When [`Receiver::expire_holes`] next has work to do.
    pub fn hole_deadline(&self, patience: Duration) -> Option<Instant> {
        self.hole_since.map(|t| t + patience)
    }

    fn lose(&mut self) {
        if self.reliable {
            self.broken = true;
        }
        self.partial.clear();
        self.syncing = true;
        self.gap = true;
    }

    fn consume(&mut self, last: bool, data: &[u8]) {
        if self.broken {
            return;
        }
        if self.syncing {
            // Cannot tell where a message begins until a segment with F=1 ends one.
            self.syncing = !last;
            return;
        }
        if self.partial.len() + data.len() > self.max_message {
            self.lose();
            self.syncing = !last;
            return;
        }
        self.partial.extend_from_slice(data);
        if last {
            let data = std::mem::take(&mut self.partial);
            self.ready_bytes += data.len();
            self.ready.push_back(Message { data, gap: std::mem::take(&mut self.gap) });
        }
    }

    /// The next whole message, in order (a broken reliable receiver still
    /// delivers the whole messages before the break).
    pub fn pop_message(&mut self) -> Option<Message> {
        let m = self.ready.pop_front()?;
        self.ready_bytes -= m.data.len();
        // Room again: what waited ahead moves on.
        self.drain_ahead();
        Some(m)
    }

    /// Whether a whole message is ready.
    pub fn has_message(&self) -> bool {
        !self.ready.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(r: &mut Receiver) -> Vec<(Vec<u8>, bool)> {
        std::iter::from_fn(|| r.pop_message()).map(|m| (m.data, m.gap)).collect()
    }

    #[test]
    fn in_order_and_reordered_reassembly() {
        let mut r = Receiver::new(Psn(u32::MAX), 16, 1 << 20);
        assert_eq!(r.on_segment(Psn(1), false, b"cd"), Accept::New);
        assert!(r.has_hole());
        assert!(!r.has(Psn(u32::MAX)) && r.has(Psn(1)));
        assert_eq!(r.on_segment(Psn(2), true, b"e"), Accept::New);
        assert!(msgs(&mut r).is_empty());
        assert_eq!(r.on_segment(Psn(u32::MAX), false, b"ab"), Accept::New);
        assert_eq!(msgs(&mut r), vec![(b"abcde".to_vec(), false)]);
        assert_eq!(r.on_segment(Psn(1), false, b"cd"), Accept::Duplicate);
        assert_eq!(r.lsn(), Psn(3));
        // Far ahead: a sender that does not wait ran ahead; what no longer
        // fits is given up, a window per packet at most.
        assert_eq!(r.on_segment(Psn(100), true, b"z"), Accept::TooFarAhead);
        assert_eq!(r.lsn(), Psn(19));
        assert_eq!(r.on_segment(Psn(30), true, b"y"), Accept::New);
        assert_eq!(r.lsn(), Psn(19), "30 fits a window past 19");
        assert_eq!(r.on_segment(Psn(40), true, b"z"), Accept::New);
        assert_eq!(r.lsn(), Psn(25));
        assert!(r.has(Psn(40)) && r.has(Psn(30)));
        assert_eq!(r.within_reach(Psn(1000)), Psn(41));
        assert_eq!(r.within_reach(Psn(30)), Psn(30));
        // A reliable receiver takes it for a lie.
        let mut r = Receiver::new(Psn(1), 16, 1 << 20).reliable();
        assert_eq!(r.on_segment(Psn(17), true, b"z"), Accept::TooFarAhead);
        assert_eq!(r.on_segment(Psn(16), true, b"z"), Accept::New);
    }

    #[test]
    fn loss_discards_partial_message_and_flags_gap() {
        let mut r = Receiver::new(Psn(10), 16, 1 << 20);
        r.on_segment(Psn(10), true, b"one");
        r.on_segment(Psn(11), false, b"tw");
        // 12 ("o", last) lost; 13 is a whole message we cannot know begins one.
        r.on_segment(Psn(13), true, b"three");
        r.on_segment(Psn(14), true, b"four");
        r.give_up_before(Psn(13), false);
        assert_eq!(msgs(&mut r), vec![(b"one".to_vec(), false), (b"four".to_vec(), true)]);
        assert!(!r.has_hole());
    }

    #[test]
    fn oversize_message_is_dropped_not_grown() {
        let mut r = Receiver::new(Psn(1), 16, 4);
        r.on_segment(Psn(1), false, b"abc");
        r.on_segment(Psn(2), true, b"def");
        r.on_segment(Psn(3), true, b"ok");
        assert_eq!(msgs(&mut r), vec![(b"ok".to_vec(), true)]);
    }

    #[test]
    fn holes_expire_after_patience() {
        let t0 = Instant::now();
        let p = Duration::from_millis(50);
        let mut r = Receiver::new(Psn(1), 16, 1 << 20);
        r.on_segment(Psn(1), true, b"a");
        r.note_end(Psn(4), true); // NDATA: 2 and 3 were sent, 4 begins a message
        r.expire_holes(t0, p);
        assert_eq!(r.hole_deadline(p), Some(t0 + p));
        r.expire_holes(t0 + p / 2, p);
        assert!(r.has_hole());
        r.expire_holes(t0 + p, p);
        assert!(!r.has_hole());
        assert_eq!(r.lsn(), Psn(4));
        r.on_segment(Psn(4), true, b"b");
        assert_eq!(msgs(&mut r), vec![(b"a".to_vec(), false), (b"b".to_vec(), true)]);
        // Without a known boundary, the first message after a loss is discarded.
        r.on_segment(Psn(6), true, b"c");
        r.on_segment(Psn(7), true, b"d");
        r.expire_holes(t0, p);
        r.expire_holes(t0 + p, p);
        assert_eq!(msgs(&mut r), vec![(b"d".to_vec(), true)]);
    }

    #[test]
    fn a_far_jump_costs_what_is_held_not_the_distance() {
        let mut r = Receiver::new(Psn(1), 16, 1 << 20);
        r.on_segment(Psn(1), true, b"a");
        r.on_segment(Psn(3), true, b"c");
        r.give_up_before(Psn(2_000_000_000), true);
        assert!(r.steps <= 4, "one step per segment held, not per PSN skipped: {}", r.steps);
        assert_eq!(r.lsn(), Psn(2_000_000_000));
        // 3 followed a loss: where its message began is unknown, it is discarded.
        assert_eq!(msgs(&mut r), vec![(b"a".to_vec(), false)]);
        r.on_segment(Psn(2_000_000_000), true, b"d");
        assert_eq!(msgs(&mut r), vec![(b"d".to_vec(), true)]);
    }

    #[test]
    fn a_reliable_receiver_never_flags_a_gap_it_breaks() {
        let mut r = Receiver::new(Psn(1), 16, 4).reliable();
        r.on_segment(Psn(1), true, b"a");
        r.on_segment(Psn(3), true, b"c");
        r.give_up_before(Psn(4), true);
        assert!(r.is_broken());
        assert_eq!(msgs(&mut r), vec![(b"a".to_vec(), false)], "the whole messages before the break only");
        r.on_segment(Psn(2), true, b"b");
        assert!(msgs(&mut r).is_empty(), "nothing after a break");
        let mut big = Receiver::new(Psn(1), 16, 4).reliable();
        big.on_segment(Psn(1), false, b"abc");
        big.on_segment(Psn(2), true, b"def");
        assert!(big.is_broken() && msgs(&mut big).is_empty(), "an oversize message breaks it too");
    }

    #[test]
    fn give_up_first_hole_when_full() {
        let mut r = Receiver::new(Psn(1), 3, 1 << 20);
        r.on_segment(Psn(2), true, b"b");
        r.on_segment(Psn(3), true, b"c");
        assert!(r.is_full());
        r.give_up_first_hole();
        assert_eq!(msgs(&mut r), vec![(b"c".to_vec(), true)]);
        assert_eq!(r.lsn(), Psn(4));
    }
}
