//! One mechanism for every packet that is sent several times: "send it N
//! times, an interval apart, or until answered".
//!
//! Requests are resent until their answer stops them (draft: "LJR and TJR are
//! resent after RXT without an answer"; "TGR is resent after RTO"); given up
//! after N sends, they report their key so the node can fail the call.
//! Packets that have no confirm (CTR, an ejection's ULR) are simply sent N
//! times; running out is their normal end.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Ctl;

/// What a repeated packet is for; at most one of each key runs at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// TU: LJR or TJR (whichever step of the join it is at).
    Join,
    /// SU: TGR or TRR.
    Token,
    /// TO: CTR at termination (no confirm).
    Ctr,
    /// A parent's ULR (F=0) ejecting this member (no confirm).
    Eject(u32),
    /// TO: the admission notice (TJR with F=1) telling a repair agent that
    /// this member will attach; stopped by the agent's attach report.
    Notice(u32),
    /// TO: the order (ULR with F=0) telling this member's parent to drop it;
    /// stopped by the parent's departure report.
    EjectOrder(u32),
    /// Repair agent: the departure report (ULR with F=1) about this former
    /// child; stopped by the TO's confirm.
    Departure(u32),
    /// TO: TGR with F=1 giving this member a token; stopped by its TGC.
    Give(u32),
    /// TO: TRR with F=1 taking this member's token back; stopped by its TRC.
    Withdraw(u32),
}

impl Key {
    /// Whether a resend counts as a retransmission of a request that went
    /// unanswered (`Stats::retransmissions`), rather than a planned copy.
    fn is_request(self) -> bool {
        matches!(self, Key::Join | Key::Token | Key::Give(_) | Key::Withdraw(_))
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: Key,
    ctl: Ctl,
    sent: u32,
    limit: u32,
    interval: Duration,
    /// The interval doubles after each copy, up to this.
    grow: Option<Duration>,
    next: Instant,
}

/// The repeated packets of one node.
#[derive(Debug, Default)]
pub(crate) struct Repeats {
    list: Vec<Entry>,
}

impl Repeats {
    /// Queue `ctl` on `out` now, and again every `interval` until [`Repeats::stop`],
    /// `limit` times in all. Replaces a running entry with the same key.
    pub(crate) fn start(
        &mut self,
        key: Key,
        ctl: Ctl,
        limit: u32,
        interval: Duration,
        now: Instant,
        out: &mut VecDeque<Ctl>,
    ) {
        self.stop(key);
        out.push_back(ctl);
        self.list.push(Entry { key, ctl, sent: 1, limit: limit.max(1), interval, grow: None, next: now + interval });
    }

    /// [`Repeats::start`], with the interval doubling after each copy
    /// (`interval`, 2 x, 4 x... up to `max`): quick copies first, a longer
    /// span in all. It ends with its last copy (for packets with no answer).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_growing(
        &mut self,
        key: Key,
        ctl: Ctl,
        limit: u32,
        interval: Duration,
        max: Duration,
        now: Instant,
        out: &mut VecDeque<Ctl>,
    ) {
        self.start(key, ctl, limit, interval, now, out);
        if let Some(e) = self.list.last_mut() {
            e.grow = Some(max);
        }
    }

    /// Stop `key` (its answer came). Returns whether it was running.
    pub(crate) fn stop(&mut self, key: Key) -> bool {
        let before = self.list.len();
        self.list.retain(|e| e.key != key);
        self.list.len() != before
    }

    /// Stop everything.
    pub(crate) fn clear(&mut self) {
        self.list.clear();
    }

    /// Whether `key` is running.
    pub(crate) fn is_running(&self, key: Key) -> bool {
        self.list.iter().any(|e| e.key == key)
    }

    /// Queue on `out` every copy due at `now`, counting resent requests in
    /// `retransmissions`. Returns the keys that ran out: sent `limit` times,
    /// and an interval has passed since the last.
    pub(crate) fn poll(&mut self, now: Instant, out: &mut VecDeque<Ctl>, retransmissions: &mut u64) -> Vec<Key> {
        let mut done = Vec::new();
        self.list.retain_mut(|e| {
            if now < e.next {
                return true;
            }
            if e.sent >= e.limit {
                done.push(e.key);
                return false;
            }
            e.sent += 1;
            if let Some(max) = e.grow {
                e.interval = (e.interval * 2).min(max);
            }
            e.next = now + e.interval;
            *retransmissions += u64::from(e.key.is_request());
            out.push_back(e.ctl);
            // Planned copies that grow end with the last one: nothing answers them.
            if e.grow.is_some() && e.sent >= e.limit {
                done.push(e.key);
                return false;
            }
            true
        });
        done
    }

    /// When [`Repeats::poll`] next has something to do.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.list.iter().map(|e| e.next).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Dest;
    use crate::wire::{Header, PacketType};

    #[test]
    fn sends_limit_times_then_gives_up() {
        let t0 = Instant::now();
        let rxt = Duration::from_millis(100);
        let mut r = Repeats::default();
        let mut out = VecDeque::new();
        let mut resent = 0;
        r.start(Key::Join, Ctl::new(Dest::Group, Header::new(PacketType::Ljr, 0)), 3, rxt, t0, &mut out);
        assert_eq!(out.len(), 1, "the first copy goes at once");
        assert!(r.poll(t0 + Duration::from_millis(99), &mut out, &mut resent).is_empty());
        assert_eq!((out.len(), r.next()), (1, Some(t0 + rxt)));
        assert!(r.poll(t0 + rxt, &mut out, &mut resent).is_empty());
        assert!(r.poll(t0 + rxt * 2, &mut out, &mut resent).is_empty());
        assert_eq!((out.len(), resent), (3, 2));
        assert_eq!(r.poll(t0 + rxt * 3, &mut out, &mut resent), vec![Key::Join]);
        assert!(!r.is_running(Key::Join) && r.next().is_none());
    }

    #[test]
    fn growing_copies_double_their_interval() {
        let t0 = Instant::now();
        let i = Duration::from_millis(2);
        let mut r = Repeats::default();
        let mut out = VecDeque::new();
        let mut resent = 0;
        let ctl = Ctl::new(Dest::Group, Header::new(PacketType::Ctr, 1));
        r.start_growing(Key::Ctr, ctl, 5, i, i * 4, t0, &mut out);
        let mut at = vec![];
        let mut t = t0;
        while r.is_running(Key::Ctr) {
            t = r.next().unwrap();
            let before = out.len();
            r.poll(t, &mut out, &mut resent);
            if out.len() > before {
                at.push(t - t0);
            }
        }
        assert_eq!(at, vec![i, i * 3, i * 7, i * 11], "copies at 2, 6, 14 and 22 ms: doubling up to 8 ms");
        assert_eq!(t - t0, i * 11, "and it ends with the last");
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn stopped_by_its_answer_and_planned_copies_are_not_retransmissions() {
        let t0 = Instant::now();
        let rxt = Duration::from_millis(10);
        let mut r = Repeats::default();
        let mut out = VecDeque::new();
        let mut resent = 0;
        let ctl = Ctl::new(Dest::Group, Header::new(PacketType::Ctr, 1));
        r.start(Key::Ctr, ctl, 2, rxt, t0, &mut out);
        r.start(Key::Token, ctl, 5, rxt, t0, &mut out);
        assert!(r.stop(Key::Token) && !r.stop(Key::Token));
        r.poll(t0 + rxt, &mut out, &mut resent);
        assert_eq!((out.len(), resent), (3, 0));
        assert_eq!(r.poll(t0 + rxt * 2, &mut out, &mut resent), vec![Key::Ctr]);
    }
}
