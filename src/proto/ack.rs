//! Acknowledgements and repair requests (draft: "ACK generation", "Backward
//! data"): building the Acknowledgement element from a receive window, and,
//! on the sending side, turning one into the list of PSNs to repair, each at
//! most once per RXT.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Dest;
use super::receiver::Receiver;
use crate::wire::{ACK_BITMAP_BITS, AckInfo, Psn};

/// The Acknowledgement element describing `rx`: LSN, whether the LSN is
/// known to exist (then it is lost, not in flight), then one bit per PSN
/// after it (1 received, 0 lost) up to the highest PSN known to exist, for
/// the first 255 of them.
pub fn ack_of(rx: &Receiver, adn: u32) -> AckInfo {
    ack_block(rx, adn, 0)
}

/// [`ack_of`] with the bitmap of block `k`: the 255 PSNs from
/// LSN + 1 + 255 k on.
pub fn ack_block(rx: &Receiver, adn: u32, k: u8) -> AckInfo {
    let lsn = rx.lsn();
    let mut ack = AckInfo::new(lsn.0, adn);
    ack.lsn_lost = rx.known_end().diff(lsn) > 0;
    ack.block = k;
    let first = 1 + ACK_BITMAP_BITS as i64 * i64::from(k);
    let span = rx.known_end().diff(lsn) - first;
    let bits = span.clamp(0, ACK_BITMAP_BITS as i64) as usize;
    for i in 0..bits {
        ack.set_received(i, rx.has(Psn(ack.psn_of_bit(i))));
    }
    ack
}

/// The bitmap block (see [`ack_block`]) that holds `psn`, if any (None for
/// the LSN itself and before it).
pub fn block_of(rx: &Receiver, psn: Psn) -> Option<u8> {
    let d = psn.diff(rx.lsn()) - 1;
    if d < 0 {
        return None;
    }
    u8::try_from(d / ACK_BITMAP_BITS as i64).ok()
}

/// Every block after the first that has a hole, up to what is known to exist.
pub fn blocks_with_holes(rx: &Receiver) -> Vec<u8> {
    let lsn = rx.lsn();
    let span = rx.known_end().diff(lsn) - 1;
    let mut blocks = Vec::new();
    let mut k: i64 = 1;
    while ACK_BITMAP_BITS as i64 * k < span && k <= i64::from(u8::MAX) {
        let from = ACK_BITMAP_BITS as i64 * k;
        let to = (from + ACK_BITMAP_BITS as i64).min(span);
        if (from..to).any(|i| !rx.has(lsn.add(1 + i as u32))) {
            blocks.push(k as u8);
        }
        k += 1;
    }
    blocks
}

/// Every PSN `ack` reports missing, before `end` (one past the last sent):
/// the LSN when it is known lost, and the bitmap's 0 bits. An LSN that may
/// just be in flight is not a loss: repairing it would send it twice.
pub fn missing(ack: &AckInfo, end: Psn) -> impl Iterator<Item = Psn> + '_ {
    let lsn = Psn(ack.lsn);
    let bits = (0..usize::from(ack.bitmap_len)).filter(|&i| !ack.is_received(i)).map(move |i| Psn(ack.psn_of_bit(i)));
    ack.lsn_lost.then_some(lsn).into_iter().chain(bits).filter(move |p| p.is_valid() && p.is_before(end))
}

/// Remembers when each PSN was last repaired to each destination, so that
/// repeated requests for the same PSN within the back-off are ignored (the
/// draft's parent back-off: "it will ignore any subsequent retransmission
/// requests for the same packet during the RXT period").
#[derive(Debug, Default)]
pub struct RepairLimiter {
    last: HashMap<(u32, Dest), Instant>,
}

impl RepairLimiter {
    /// Whether `psn` may be repaired to `dest` now; if so, remember it.
    pub fn allow(&mut self, psn: Psn, dest: Dest, now: Instant, backoff: Duration) -> bool {
        match self.last.get(&(psn.0, dest)) {
            Some(&t) if now.saturating_duration_since(t) < backoff => false,
            _ => {
                self.last.insert((psn.0, dest), now);
                true
            }
        }
    }

    /// Forget PSNs that can no longer be requested (released).
    pub fn forget_before(&mut self, lowest: Psn) {
        if !self.last.is_empty() {
            self.last.retain(|&(p, _), _| !Psn(p).is_before(lowest));
        }
    }

    /// Hand to `push`, at most once per `backoff` each, the PSNs `ack`
    /// reports missing that were sent (before `end`) and that `have` (the
    /// repair store still keeps them), to be repaired to `dest`.
    #[allow(clippy::too_many_arguments)]
    pub fn schedule(
        &mut self,
        ack: &AckInfo,
        end: Psn,
        dest: Dest,
        now: Instant,
        backoff: Duration,
        have: impl Fn(Psn) -> bool,
        mut push: impl FnMut(Psn),
    ) {
        for psn in missing(ack, end) {
            if have(psn) && self.allow(psn, dest, now, backoff) {
                push(psn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_describes_holes_and_missing_lists_them() {
        let mut rx = Receiver::new(Psn(10), 64, 1 << 20);
        for p in [10, 12, 13, 16] {
            rx.on_segment(Psn(p), true, b"x");
        }
        let ack = ack_of(&rx, 1);
        assert_eq!(ack.lsn, 11);
        assert!(ack.lsn_lost, "12 and later arrived: 11 is lost");
        assert_eq!(ack.bitmap_len, 5); // 12..=16
        let lost: Vec<u32> = missing(&ack, Psn(17)).map(|p| p.0).collect();
        assert_eq!(lost, vec![11, 14, 15]);
        let lost: Vec<u32> = missing(&ack, Psn(15)).map(|p| p.0).collect();
        assert_eq!(lost, vec![11, 14], "nothing at or after `end`");
        // Everything so far, the next one may be on its way: nothing to repair.
        let mut rx = Receiver::new(Psn(10), 64, 1 << 20);
        rx.on_segment(Psn(10), true, b"x");
        let ack = ack_of(&rx, 1);
        assert!(!ack.lsn_lost);
        assert_eq!(missing(&ack, Psn(100)).count(), 0, "an LSN in flight is not repaired");
        rx.note_end(Psn(12), true); // NDATA: 11 was sent
        assert_eq!(missing(&ack_of(&rx, 1), Psn(100)).map(|p| p.0).collect::<Vec<_>>(), vec![11]);
    }

    #[test]
    fn blocks_cover_the_window_past_the_first_255() {
        let mut rx = Receiver::new(Psn(1), 2048, 1 << 20);
        // 1..=1000 arrive except 1 (the LSN), 300 and 700.
        for p in 2..=1000 {
            if p != 300 && p != 700 {
                rx.on_segment(Psn(p), true, b"x");
            }
        }
        let a0 = ack_of(&rx, 1);
        assert_eq!((a0.block, a0.bitmap_len), (0, 255));
        assert_eq!(missing(&a0, Psn(2000)).map(|p| p.0).collect::<Vec<_>>(), vec![1], "block 0: 2..=256");
        assert_eq!(blocks_with_holes(&rx), vec![1, 2]);
        assert_eq!(block_of(&rx, Psn(300)), Some(1));
        assert_eq!(block_of(&rx, Psn(700)), Some(2));
        assert_eq!(block_of(&rx, Psn(1)), None);
        let a1 = ack_block(&rx, 1, 1);
        assert_eq!(a1.block, 1);
        assert_eq!(missing(&a1, Psn(2000)).map(|p| p.0).collect::<Vec<_>>(), vec![1, 300]);
        let a2 = ack_block(&rx, 1, 2);
        assert_eq!(missing(&a2, Psn(2000)).map(|p| p.0).collect::<Vec<_>>(), vec![1, 700]);
        // Block 3 (767..=1021) runs past the highest known (1000): no bits beyond it.
        let a3 = ack_block(&rx, 1, 3);
        assert_eq!(a3.bitmap_len, 234, "767..=1000");
        assert_eq!(missing(&a3, Psn(2000)).count(), 1);
    }

    #[test]
    fn repeats_within_rxt_are_ignored() {
        let t0 = Instant::now();
        let rxt = Duration::from_millis(100);
        let mut l = RepairLimiter::default();
        let ack = AckInfo { lsn_lost: true, ..AckInfo::new(5, 1) };
        let mut q = Vec::new();
        let all = |_: Psn| true;
        let g = Dest::Group;
        l.schedule(&ack, Psn(9), g, t0, rxt, all, |p| q.push(p));
        l.schedule(&ack, Psn(9), g, t0 + rxt / 2, rxt, all, |p| q.push(p));
        assert_eq!(q, vec![Psn(5)]);
        let other = Dest::Unicast("10.0.0.9:1".parse().unwrap());
        l.schedule(&ack, Psn(9), other, t0 + rxt / 2, rxt, all, |p| q.push(p));
        assert_eq!(q.len(), 2, "each destination has its own back-off");
        l.schedule(&ack, Psn(9), g, t0 + rxt, rxt, all, |p| q.push(p));
        assert_eq!(q.len(), 3);
        l.schedule(&ack, Psn(9), g, t0 + rxt * 3, rxt, |p| !p.is_before(Psn(6)), |p| q.push(p));
        assert_eq!(q.len(), 3, "released PSNs are not repaired");
    }
}
