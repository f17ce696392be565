//! The Internet checksum over a whole ECTP packet.
//!
//! draft-dykim-ectp-00 §5.1 ("Checksum"): it covers "the base header, extension header and/or user
//! data" and "is calculated by using the conventional complement arithmetic operation, as done in
//! TCP and UDP", i.e. RFC 1071. Unlike TCP and UDP there is no pseudo-header.

/// RFC 1071 checksum: the one's complement of the one's-complement sum of `data` taken as 16-bit
/// big-endian words, an odd trailing byte padded with a zero byte.
///
/// To fill the Checksum field, compute this over the packet with the field set to zero.
pub fn internet_checksum(data: &[u8]) -> u16 {
    !ones_complement_sum(data)
}

/// True when `data` (a whole packet, Checksum field included) sums to 0xFFFF, i.e. the checksum
/// is correct.
pub fn verify(data: &[u8]) -> bool {
    ones_complement_sum(data) == 0xFFFF
}

/// The 16-bit one's-complement sum of `data` as big-endian words (RFC 1071 §4.1).
///
/// Summed four bytes at a time (RFC 1071 §2 (C): the sum may be taken in
/// wider words and folded at the end), which the compiler vectorises.
fn ones_complement_sum(data: &[u8]) -> u16 {
    let mut words = data.chunks_exact(4);
    // A u64 cannot overflow: that would take more than 2^32 words.
    let mut sum: u64 = 0;
    for w in &mut words {
        if let [a, b, c, d] = *w {
            sum += u64::from(u32::from_be_bytes([a, b, c, d]));
        }
    }
    match *words.remainder() {
        [a, b, c] => sum += u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        [a, b] => sum += u64::from(u16::from_be_bytes([a, b])),
        [a] => sum += u64::from(a) << 8,
        _ => {}
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    // The loop leaves sum <= 0xFFFF.
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of RFC 1071 §3: words 0001 f203 f4f5 f6f7 sum to ddf2 after the
    /// end-around carry, so the checksum is its complement 220d.
    const RFC1071: [u8; 8] = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];

    /// RFC 1071 word by word, as the standard states it.
    fn by_16_bit_words(data: &[u8]) -> u16 {
        let mut sum: u64 = data.chunks(2).map(|w| u64::from(w[0]) << 8 | u64::from(*w.get(1).unwrap_or(&0))).sum();
        while sum > 0xFFFF {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn wide_words_sum_as_16_bit_ones() {
        let mut x = 0x1234_5678u32;
        for len in 0..300 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            assert_eq!(ones_complement_sum(&data), by_16_bit_words(&data), "{len} bytes");
        }
        assert_eq!(ones_complement_sum(&[0xFF; 1500]), by_16_bit_words(&[0xFF; 1500]));
    }

    #[test]
    fn rfc1071_example() {
        assert_eq!(ones_complement_sum(&RFC1071), 0xddf2);
        assert_eq!(internet_checksum(&RFC1071), 0x220d);
        let mut with_sum = [0u8; 10];
        with_sum[..8].copy_from_slice(&RFC1071);
        with_sum[8..].copy_from_slice(&0x220du16.to_be_bytes());
        assert!(verify(&with_sum));
        with_sum[3] ^= 0x10;
        assert!(!verify(&with_sum));
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(internet_checksum(&[0xab]), !0xab00);
        assert_eq!(internet_checksum(&[0x12, 0x34, 0x56]), !(0x1234 + 0x5600));
    }

    #[test]
    fn empty_and_zero_data() {
        assert_eq!(internet_checksum(&[]), 0xFFFF);
        assert!(verify(&[0xFF, 0xFF]));
        assert!(!verify(&[0, 0]));
    }

    #[test]
    fn placing_the_checksum_anywhere_even_verifies() {
        let mut data = [0u8; 64];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        data[20] = 0;
        data[21] = 0;
        let sum = internet_checksum(&data);
        data[20..22].copy_from_slice(&sum.to_be_bytes());
        assert!(verify(&data));
    }
}
