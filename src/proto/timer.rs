//! The timers of a node, as one table (as quinn-proto's `TimerTable`).
//!
//! Every deadline a node has is one slot here; `poll_timeout` is the earliest
//! set slot, and only `handle_timeout` fires them (the draft's timers: CCT,
//! HGT, RXT/RTO and the failure detection time FDN x HGT).

use std::time::Instant;

/// One kind of deadline. A node has at most one of each role, so at most one
/// timer of each kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// TO: the creation phase (CCT) is over.
    CreationEnd,
    /// TO: the next CCR of the creation phase (every RXT).
    Ccr,
    /// Parent: the next HB to the children, and the check of their silence.
    Heartbeat,
    /// TO: the next NDATA while the forward channel is idle.
    Ndata,
    /// The earliest due repeated packet (see [`super::retry::Repeats`]).
    Repeat,
    /// Unreliable mode: a hole has stayed open for RXT and is given up.
    HoleExpiry,
    /// Child (reliable modes): ACK again while a hole stays open.
    AckRepeat,
    /// Child: an HBACK of its own after HGT/2 without sending to the parent.
    Keepalive,
    /// Child: the parent has been silent for FDN x HGT.
    ParentSilence,
    /// TU whose parent is a repair agent: the TO's multicast has been
    /// silent for FDN x HGT.
    OwnerSilence,
    /// SU: the next HB to the TO on the backward channel.
    SuHeartbeat,
    /// Sender: the pacer lets the next packet go (TFMCC, ECTP_MAX_RATE).
    Pace,
    /// TO (TFMCC): the next Rate element, or the next feedback round.
    RateRound,
    /// Receiver (TFMCC): a report may be due.
    RateReport,
}

impl Timer {
    /// Every timer, in the order `handle_timeout` fires the due ones.
    pub(crate) const ALL: [Timer; 14] = [
        Timer::CreationEnd,
        Timer::Ccr,
        Timer::Heartbeat,
        Timer::Ndata,
        Timer::Repeat,
        Timer::HoleExpiry,
        Timer::AckRepeat,
        Timer::Keepalive,
        Timer::ParentSilence,
        Timer::OwnerSilence,
        Timer::SuHeartbeat,
        Timer::Pace,
        Timer::RateRound,
        Timer::RateReport,
    ];
}

/// When each timer of a node next fires, if it is set.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TimerTable {
    slots: [Option<Instant>; Timer::ALL.len()],
}

impl TimerTable {
    /// Fire `timer` at `at` (replacing any earlier setting).
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.slots[timer as usize] = Some(at);
    }

    /// Set `timer` to `at`, or stop it for None.
    pub(crate) fn set_opt(&mut self, timer: Timer, at: Option<Instant>) {
        self.slots[timer as usize] = at;
    }

    /// When `timer` fires, if it is set.
    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.slots[timer as usize]
    }

    /// Stop `timer`.
    pub(crate) fn stop(&mut self, timer: Timer) {
        self.slots[timer as usize] = None;
    }

    /// Stop every timer.
    pub(crate) fn stop_all(&mut self) {
        self.slots = [None; Timer::ALL.len()];
    }

    /// The earliest deadline of all.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.slots.iter().flatten().min().copied()
    }

    /// If `timer` is due at `now`: stop it and return true (the caller runs it).
    pub(crate) fn take_expired(&mut self, timer: Timer, now: Instant) -> bool {
        match self.slots[timer as usize] {
            Some(t) if t <= now => {
                self.slots[timer as usize] = None;
                true
            }
            _ => false,
        }
    }

    /// The timers due at `now`, each stopped (the caller runs them in order).
    pub(crate) fn expired(&mut self, now: Instant) -> impl Iterator<Item = Timer> + use<> {
        let mut due = [None; Timer::ALL.len()];
        for (slot, t) in due.iter_mut().zip(Timer::ALL) {
            if self.take_expired(t, now) {
                *slot = Some(t);
            }
        }
        due.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_due_timers_once_in_order() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Keepalive, t0 + Duration::from_millis(5));
        t.set(Timer::Ccr, t0 + Duration::from_millis(9));
        t.set(Timer::Heartbeat, t0 + Duration::from_millis(2));
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(2)));
        let due: Vec<Timer> = t.expired(t0 + Duration::from_millis(5)).collect();
        assert_eq!(due, vec![Timer::Heartbeat, Timer::Keepalive]);
        assert!(t.expired(t0 + Duration::from_millis(5)).next().is_none(), "fired once");
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(9)));
        t.stop_all();
        assert_eq!(t.get(Timer::Ccr), None);
    }
}
