//! Packet sequence numbers and their serial-number arithmetic.
//!
//! draft-dykim-ectp-00 §5.1 ("PSN"): a PSN "is a 32-bit unsigned number that starts with the
//! initial sequence number and increases by 1, and wraps back around to 1 after reaching 2^32-1".
//! So 0 is never a PSN, and the space has M = 2^32 - 1 values. The arithmetic below maps a PSN `v`
//! to `v - 1` in `0..M`, works modulo M there, and maps back. Serial numbers have no total order
//! (RFC 1982), so [`Psn`] has no `Ord`: compare with [`Psn::diff`] or [`Psn::is_before`].

/// Number of distinct PSN values (1..=u32::MAX).
const M: u64 = u32::MAX as u64;

/// A packet sequence number (draft-dykim-ectp-00 §5.1), valid values 1..=u32::MAX.
///
/// `Psn(0)` is not a valid PSN ([`Psn::is_valid`] is false). The arithmetic treats it like
/// `u32::MAX`, the PSN just before 1, so `Psn(0).next() == Psn(1)` and nothing panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Psn(pub u32);

impl Psn {
    /// Position of this PSN in `0..M`.
    fn index(self) -> u64 {
        (u64::from(self.0) + M - 1) % M
    }

    /// The PSN at position `i` (taken modulo M).
    fn from_index(i: u64) -> Psn {
        // i % M <= u32::MAX - 1, so the cast is exact and the + 1 cannot overflow.
        Psn((i % M) as u32 + 1)
    }

    /// The following PSN: `v + 1`, and 1 after `u32::MAX`.
    pub fn next(self) -> Psn {
        self.add(1)
    }

    /// The PSN `n` steps after this one, skipping 0 when it wraps.
    // Named methods, not `+`/`-` operators: the arithmetic is modulo 2^32-1 and skips 0, which an
    // operator would hide.
    #[allow(clippy::should_implement_trait)]
    pub fn add(self, n: u32) -> Psn {
        Psn::from_index(self.index() + u64::from(n))
    }

    /// The PSN `n` steps before this one, skipping 0 when it wraps
    /// (`Psn(1).sub(1) == Psn(u32::MAX)`).
    #[allow(clippy::should_implement_trait)]
    pub fn sub(self, n: u32) -> Psn {
        Psn::from_index(self.index() + M - u64::from(n) % M)
    }

    /// Signed serial distance `self - other`: how many steps forward `self` is from `other`.
    ///
    /// The result lies in `-(M/2) ..= M/2` with M = 2^32 - 1, so a PSN up to half the space ahead
    /// gives a positive number even across the wrap (`Psn(1).diff(Psn(u32::MAX)) == 1`).
    pub fn diff(self, other: Psn) -> i64 {
        let d = (self.index() + M - other.index()) % M;
        // Both values are below 2^32, so the conversions to i64 are exact.
        if d <= M / 2 { d as i64 } else { d as i64 - M as i64 }
    }

    /// True for every PSN except 0, which the draft never uses.
    pub fn is_valid(self) -> bool {
        self.0 != 0
    }

    /// True when `self` comes before `other` in serial order (`self.diff(other) < 0`).
    pub fn is_before(self, other: Psn) -> bool {
        self.diff(other) < 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HALF: u32 = (M / 2) as u32;

    #[test]
    fn next_wraps_to_one() {
        assert_eq!(Psn(1).next(), Psn(2));
        assert_eq!(Psn(u32::MAX - 1).next(), Psn(u32::MAX));
        assert_eq!(Psn(u32::MAX).next(), Psn(1));
        assert_eq!(Psn(0).next(), Psn(1));
    }

    #[test]
    fn add_and_sub_skip_zero() {
        assert_eq!(Psn(1).sub(1), Psn(u32::MAX));
        assert_eq!(Psn(2).sub(2), Psn(u32::MAX));
        assert_eq!(Psn(u32::MAX).add(2), Psn(2));
        assert_eq!(Psn(u32::MAX - 1).add(2), Psn(1));
        assert_eq!(Psn(u32::MAX - 1).add(3), Psn(2));
        assert_eq!(Psn(5).add(0), Psn(5));
        assert_eq!(Psn(5).sub(0), Psn(5));
        // A full turn of the PSN space is M = u32::MAX steps.
        assert_eq!(Psn(5).add(u32::MAX), Psn(5));
        assert_eq!(Psn(5).sub(u32::MAX), Psn(5));
        assert_eq!(Psn(1).add(u32::MAX - 1), Psn(u32::MAX));
        assert_eq!(Psn(u32::MAX).sub(u32::MAX - 1), Psn(1));
    }

    #[test]
    fn diff_across_the_wrap() {
        assert_eq!(Psn(1).diff(Psn(u32::MAX)), 1);
        assert_eq!(Psn(u32::MAX).diff(Psn(1)), -1);
        assert_eq!(Psn(3).diff(Psn(u32::MAX - 2)), 5);
        assert_eq!(Psn(u32::MAX - 2).diff(Psn(3)), -5);
        assert_eq!(Psn(10).diff(Psn(10)), 0);
        assert_eq!(Psn(10).diff(Psn(4)), 6);
    }

    #[test]
    fn diff_range_edges() {
        let a = Psn(100);
        assert_eq!(a.add(HALF).diff(a), i64::from(HALF));
        assert_eq!(a.add(HALF + 1).diff(a), -i64::from(HALF));
        assert_eq!(a.sub(HALF).diff(a), -i64::from(HALF));
        assert_eq!(a.sub(HALF + 1).diff(a), i64::from(HALF));
    }

    #[test]
    fn is_before_and_is_valid() {
        assert!(Psn(u32::MAX).is_before(Psn(1)));
        assert!(!Psn(1).is_before(Psn(u32::MAX)));
        assert!(Psn(7).is_before(Psn(8)));
        assert!(!Psn(8).is_before(Psn(8)));
        assert!(!Psn(0).is_valid());
        assert!(Psn(1).is_valid());
        assert!(Psn(u32::MAX).is_valid());
    }

    #[test]
    fn arithmetic_is_consistent_on_pseudo_random_values() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rand = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u32
        };
        for _ in 0..10_000 {
            let a = Psn(rand().max(1));
            let n = rand();
            assert!(a.add(n).is_valid());
            assert!(a.sub(n).is_valid());
            assert_eq!(a.add(n).sub(n), a);
            assert_eq!(a.sub(n).add(n), a);
            let small = n % (HALF + 1);
            assert_eq!(a.add(small).diff(a), i64::from(small));
            assert_eq!(a.diff(a.add(small)), -i64::from(small));
            let b = Psn(rand().max(1));
            assert_eq!(b.add(a.diff(b).rem_euclid(M as i64) as u32), a);
        }
    }
}
