//! A small seedable random source (SplitMix64), so that a simulation replays
//! exactly: connection IDs and initial sequence numbers come from here.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, good enough for
/// identifiers that must only be unpredictable enough not to collide.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator that always yields the same sequence for the same seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random value that is never zero (PSNs and connection IDs avoid 0).
    pub fn nonzero_u32(&mut self) -> u32 {
        loop {
            let v = self.next_u64() as u32;
            if v != 0 {
                return v;
            }
        }
    }

    /// A uniformly distributed float in [0, 1), for loss injection.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn nonzero_and_unit_in_range() {
        let mut r = Rng::new(0);
        for _ in 0..1000 {
            assert_ne!(r.nonzero_u32(), 0);
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
