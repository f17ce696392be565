//! A request that is sent again after RXT until answered, at most `retries`
//! times in all (draft: "LJR and TJR are resent after RXT without an answer";
//! "TGR is resent after RTO").

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Ctl;

/// What a due retry asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// Send this packet (again).
    Send(Ctl),
    /// Sent `retries` times without an answer: give up.
    Exhausted,
}

/// One outstanding request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retry {
    pub ctl: Ctl,
    sent: u32,
    next: Instant,
}

impl Retry {
    /// A request to send now.
    pub(crate) fn new(ctl: Ctl, now: Instant) -> Retry {
        Retry { ctl, sent: 0, next: now }
    }

    /// When it next needs attention.
    pub(crate) fn deadline(&self) -> Instant {
        self.next
    }

    /// If due at `now`: send it (again), or give up after `retries` sends.
    pub(crate) fn poll(&mut self, now: Instant, rxt: Duration, retries: u32) -> Option<Due> {
        if now < self.next {
            return None;
        }
        if self.sent >= retries.max(1) {
            return Some(Due::Exhausted);
        }
        self.sent += 1;
        self.next = now + rxt;
        Some(Due::Send(self.ctl))
    }

    /// Whether this is a resend (for the retransmission counter).
    pub(crate) fn is_resend(&self) -> bool {
        self.sent > 1
    }
}

/// Run the request in `slot`, if any: queue it on `out` when due (counting
/// resends in `retransmissions`). Returns true, and empties the slot, when it
/// was given up after `retries` sends.
pub(crate) fn drive(
    slot: &mut Option<Retry>,
    now: Instant,
    rxt: Duration,
    retries: u32,
    out: &mut VecDeque<Ctl>,
    retransmissions: &mut u64,
) -> bool {
    let Some(r) = slot.as_mut() else { return false };
    match r.poll(now, rxt, retries) {
        Some(Due::Send(ctl)) => {
            *retransmissions += u64::from(r.is_resend());
            out.push_back(ctl);
            false
        }
        Some(Due::Exhausted) => {
            *slot = None;
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Dest;
    use crate::wire::{Header, PacketType};

    #[test]
    fn sends_retries_times_then_gives_up() {
        let t0 = Instant::now();
        let rxt = Duration::from_millis(100);
        let mut r = Retry::new(Ctl::new(Dest::Group, Header::new(PacketType::Ljr, 0)), t0);
        assert!(matches!(r.poll(t0, rxt, 3), Some(Due::Send(_))));
        assert!(r.poll(t0 + Duration::from_millis(99), rxt, 3).is_none());
        assert!(matches!(r.poll(t0 + rxt, rxt, 3), Some(Due::Send(_))));
        assert!(r.is_resend());
        assert!(matches!(r.poll(t0 + rxt * 2, rxt, 3), Some(Due::Send(_))));
        assert_eq!(r.poll(t0 + rxt * 3, rxt, 3), Some(Due::Exhausted));
    }
}
