//! The cryptography of a keyed connection (ECTP_GROUP_KEY), and nothing
//! else: AES-256-GCM, HKDF-SHA-256 and X25519, all from well-kept crates
//! (`ring`'s AES-GCM, RustCrypto's `hkdf` and `sha2`, and `x25519-dalek`,
//! whose key pairs can be drawn from a seeded source); no cryptographic
//! primitive is written here.
//!
//! The key schedule (`docs/wire-format.md`, "Keyed connections"), with GK
//! the group key, `s_TO` the TO's salt for the connection and `s_TU` a TU's
//! salt for one join, each drawn afresh:
//!
//! | key | HKDF-SHA-256 input keying material | salt | info |
//! |---|---|---|---|
//! | join | GK | `s_TU` | "ECTP-3 join" |
//! | group | GK | `s_TO` | "ECTP-3 group", connection id |
//! | member | X25519(TU, TO) ‖ GK | `s_TU` ‖ `s_TO` | "ECTP-3 member", connection id |
//! | link | member key of the child | (none) | "ECTP-3 link", connection id, child id, parent id |
//!
//! Every key is new for every connection or join, and every packet sent
//! under a key has a nonce of its own (sender id and a counter), so no
//! nonce is ever used twice under one key, across retransmissions and
//! restarts alike.

use std::fmt;

use hkdf::Hkdf;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::wire::{KeyShare, TAG_LEN};

/// A group key (ECTP_GROUP_KEY) and the randomness an endpoint draws its
/// salts and key shares from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Security {
    key: [u8; 32],
    key_len: u8,
    seed: [u8; 32],
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Security {{ key: <{} bytes>, seed: <hidden> }}", self.key_len)
    }
}

impl Security {
    /// Lengths of a group key accepted.
    pub const KEY_LENGTHS: [usize; 2] = [16, 32];

    /// The group key `key` (16 or 32 bytes; `None` otherwise). Its seed is
    /// zero: see [`Security::with_seed`].
    pub fn new(key: &[u8]) -> Option<Security> {
        if !Self::KEY_LENGTHS.contains(&key.len()) {
            return None;
        }
        let mut k = [0u8; 32];
        k.iter_mut().zip(key).for_each(|(d, s)| *d = *s);
        Some(Security { key: k, key_len: key.len() as u8, seed: [0; 32] })
    }

    /// The same key, with 256 bits of fresh randomness (the driver's
    /// getrandom) for the salts and key shares. A node mixes its own random
    /// source into it as well, so that nodes of a simulation that share one
    /// seed still draw apart.
    pub fn with_seed(self, seed: [u8; 32]) -> Security {
        Security { seed, ..self }
    }

    /// The seed.
    pub(crate) fn seed(&self) -> [u8; 32] {
        self.seed
    }

    /// The group key's bytes.
    pub(crate) fn key(&self) -> &[u8] {
        self.key.get(..usize::from(self.key_len)).unwrap_or(&self.key)
    }
}

/// HKDF-SHA-256 of `ikm` with `salt`, expanded with the concatenation of
/// `info` into 32 bytes.
pub(crate) fn derive(ikm: &[&[u8]], salt: &[u8], info: &[&[u8]]) -> [u8; 32] {
    let ikm: Vec<u8> = ikm.concat();
    let hk = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF's limit of 255 hash lengths.
    let _ = hk.expand_multi_info(info, &mut out);
    out
}

/// A deterministic random bit generator: HKDF-SHA-256 expansion of a seed,
/// block after block. It draws the salts and X25519 secrets of one node.
pub(crate) struct Entropy {
    prk: [u8; 32],
    block: u64,
}

impl fmt::Debug for Entropy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Entropy")
    }
}

impl Entropy {
    /// A generator seeded with `seed` and `extra` (the node's own random source).
    pub(crate) fn new(seed: &[u8; 32], extra: u64) -> Entropy {
        Entropy { prk: derive(&[seed], &extra.to_be_bytes(), &[b"ECTP-3 entropy"]), block: 0 }
    }

    /// The next 32 random bytes.
    pub(crate) fn next(&mut self) -> [u8; 32] {
        self.block += 1;
        derive(&[&self.prk], &[], &[b"ECTP-3 block", &self.block.to_be_bytes()])
    }

    /// 16 random bytes.
    pub(crate) fn salt(&mut self) -> [u8; 16] {
        let b = self.next();
        let mut s = [0u8; 16];
        s.iter_mut().zip(b).for_each(|(d, v)| *d = v);
        s
    }
}

/// This node's X25519 key pair and salt for a connection (TO) or a join (TU).
pub(crate) struct Share {
    secret: StaticSecret,
    /// What goes in the Key element.
    pub(crate) public: KeyShare,
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Share").field("public", &self.public).finish_non_exhaustive()
    }
}

impl Share {
    /// A fresh salt and key pair.
    pub(crate) fn new(entropy: &mut Entropy) -> Share {
        let secret = StaticSecret::from(entropy.next());
        let public = PublicKey::from(&secret).to_bytes();
        Share { secret, public: KeyShare { salt: entropy.salt(), public } }
    }

    /// The X25519 shared secret with `peer`'s public key; `None` for a
    /// public key of small order (the result would not depend on our secret).
    pub(crate) fn agree(&self, peer: &[u8; 32]) -> Option<[u8; 32]> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*peer));
        shared.was_contributory().then(|| shared.to_bytes())
    }
}

/// The join key of a TU's join with salt `tu_salt`.
pub(crate) fn join_key(gk: &[u8], tu_salt: &[u8; 16]) -> [u8; 32] {
    derive(&[gk], tu_salt, &[b"ECTP-3 join"])
}

/// The group key of connection `conn_id` whose TO drew `to_salt`.
pub(crate) fn group_key(gk: &[u8], to_salt: &[u8; 16], conn_id: u32) -> [u8; 32] {
    derive(&[gk], to_salt, &[b"ECTP-3 group", &conn_id.to_be_bytes()])
}

/// The member key of a TU's join: from the X25519 secret shared by the TU
/// and the TO, the group key, and both salts.
pub(crate) fn member_key(
    shared: &[u8; 32],
    gk: &[u8],
    tu_salt: &[u8; 16],
    to_salt: &[u8; 16],
    conn_id: u32,
) -> [u8; 32] {
    derive(&[shared, gk], &[&tu_salt[..], &to_salt[..]].concat(), &[b"ECTP-3 member", &conn_id.to_be_bytes()])
}

/// The key of the link between child `child` and its repair agent `parent`,
/// from the child's member key: the TO hands it to the agent, the child
/// derives it itself.
pub(crate) fn link_key(member: &[u8; 32], conn_id: u32, child: u32, parent: u32) -> [u8; 32] {
    derive(&[member], &[], &[b"ECTP-3 link", &conn_id.to_be_bytes(), &child.to_be_bytes(), &parent.to_be_bytes()])
}

/// An AES-256-GCM key, ready to seal and open.
pub(crate) struct Cipher(LessSafeKey);

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher")
    }
}

impl Cipher {
    /// `None` only if ring refused a 32-byte AES-256 key, which it does not.
    pub(crate) fn new(key: &[u8; 32]) -> Option<Cipher> {
        UnboundKey::new(&AES_256_GCM, key).ok().map(|k| Cipher(LessSafeKey::new(k)))
    }

    /// Encrypt `data` in place; the tag authenticates `aad` and `data`.
    pub(crate) fn seal(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; TAG_LEN] {
        let nonce = Nonce::assume_unique_for_key(*nonce);
        match self.0.seal_in_place_separate_tag(nonce, Aad::from(aad), data) {
            Ok(tag) => {
                let mut t = [0u8; TAG_LEN];
                t.iter_mut().zip(tag.as_ref()).for_each(|(d, s)| *d = *s);
                t
            }
            // Only for data beyond 64 GiB; a datagram never is. A zero tag
            // never verifies, so the packet is dropped by its receiver.
            Err(_) => [0; TAG_LEN],
        }
    }

    /// Verify `tag` over `aad` and `data` and decrypt `data` in place.
    /// `false` (and `data` unspecified) if it does not verify.
    pub(crate) fn open(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
        let nonce = Nonce::assume_unique_for_key(*nonce);
        self.0.open_in_place_separate_tag(nonce, Aad::from(aad), Tag::from(*tag), data, 0..).is_ok()
    }
}

/// The counters received from one sender under one key: anything at or
/// below the highest minus [`Window::SPAN`], and anything seen already, is
/// a replay.
#[derive(Clone, Debug, Default)]
pub(crate) struct Window {
    /// Highest counter accepted (0: none yet; counters start at 1).
    top: u64,
    /// Bit i: counter `top - i` was accepted.
    seen: [u64; Window::WORDS],
}

impl Window {
    const WORDS: usize = 16;
    /// How far behind the highest counter a packet may arrive (reordering).
    pub(crate) const SPAN: u64 = 64 * Window::WORDS as u64;

    /// Whether `ctr` is new (neither seen nor too old).
    pub(crate) fn is_fresh(&self, ctr: u64) -> bool {
        if ctr == 0 {
            return false;
        }
        if ctr > self.top {
            return true;
        }
        let back = self.top - ctr;
        back < Self::SPAN && !self.bit(back)
    }

    /// Record `ctr` as received (call only after its tag verified).
    pub(crate) fn accept(&mut self, ctr: u64) {
        if ctr > self.top {
            let shift = ctr - self.top;
            self.shift(shift);
            self.top = ctr;
        }
        let back = self.top - ctr;
        if back < Self::SPAN {
            let (w, b) = ((back / 64) as usize, back % 64);
            if let Some(word) = self.seen.get_mut(w) {
                *word |= 1 << b;
            }
        }
    }

    fn bit(&self, back: u64) -> bool {
        let (w, b) = ((back / 64) as usize, back % 64);
        self.seen.get(w).is_some_and(|word| word & (1 << b) != 0)
    }

    /// Move every bit `n` places older (losing those beyond the span).
    fn shift(&mut self, n: u64) {
        if n >= Self::SPAN {
            self.seen = [0; Self::WORDS];
            return;
        }
        let (words, bits) = ((n / 64) as usize, (n % 64) as u32);
        for i in (0..Self::WORDS).rev() {
            let lo = i.checked_sub(words).and_then(|j| self.seen.get(j)).copied().unwrap_or(0);
            let carry = if bits == 0 {
                0
            } else {
                i.checked_sub(words + 1).and_then(|j| self.seen.get(j)).copied().unwrap_or(0) >> (64 - bits)
            };
            if let Some(w) = self.seen.get_mut(i) {
                *w = (lo << bits) | carry;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_16_or_32_bytes_only() {
        assert!(Security::new(&[1; 16]).is_some());
        assert!(Security::new(&[1; 32]).is_some());
        for n in [0, 1, 15, 17, 24, 31, 33, 64] {
            assert!(Security::new(&vec![1; n]).is_none(), "{n} bytes");
        }
        assert_eq!(Security::new(&[7; 16]).unwrap().key(), &[7; 16]);
        // The key never shows in logs.
        let s = format!("{:?}", Security::new(&[0xAB; 32]).unwrap());
        assert!(!s.contains("171") && !s.to_lowercase().contains("ab, "), "{s}");
    }

    #[test]
    fn seal_then_open_and_any_change_fails() {
        let c = Cipher::new(&[9; 32]).unwrap();
        let nonce = [1; 12];
        let mut data = *b"the lecture notes";
        let tag = c.seal(&nonce, b"header", &mut data);
        assert_ne!(&data, b"the lecture notes", "encrypted");
        let mut copy = data;
        assert!(c.open(&nonce, b"header", &mut copy, &tag));
        assert_eq!(&copy, b"the lecture notes");
        let mut copy = data;
        assert!(!c.open(&nonce, b"headeR", &mut copy, &tag), "other associated data");
        let mut copy = data;
        copy[3] ^= 1;
        assert!(!c.open(&nonce, b"header", &mut copy, &tag), "other ciphertext");
        let mut copy = data;
        assert!(!c.open(&[2; 12], b"header", &mut copy, &tag), "other nonce");
        let mut copy = data;
        assert!(!Cipher::new(&[8; 32]).unwrap().open(&nonce, b"header", &mut copy, &tag), "other key");
    }

    #[test]
    fn the_key_schedule_separates_everything() {
        let gk = [5u8; 16];
        let (s1, s2) = ([1u8; 16], [2u8; 16]);
        assert_ne!(join_key(&gk, &s1), join_key(&gk, &s2));
        assert_ne!(join_key(&gk, &s1), join_key(&[6; 16], &s1));
        assert_ne!(group_key(&gk, &s1, 7), group_key(&gk, &s1, 8));
        assert_ne!(group_key(&gk, &s1, 7), join_key(&gk, &s1));
        let m = member_key(&[3; 32], &gk, &s1, &s2, 7);
        assert_ne!(m, member_key(&[3; 32], &gk, &s2, &s1, 7));
        assert_ne!(m, member_key(&[4; 32], &gk, &s1, &s2, 7));
        assert_ne!(link_key(&m, 7, 10, 20), link_key(&m, 7, 20, 10));
        assert_eq!(link_key(&m, 7, 10, 20), link_key(&m, 7, 10, 20));
    }

    #[test]
    fn both_ends_agree_and_small_order_keys_are_refused() {
        let mut e = Entropy::new(&[0; 32], 1);
        let (a, b) = (Share::new(&mut e), Share::new(&mut e));
        assert_ne!(a.public, b.public);
        assert_eq!(a.agree(&b.public.public), b.agree(&a.public.public));
        assert!(a.agree(&b.public.public).is_some());
        assert_eq!(a.agree(&[0; 32]), None, "the identity point");
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(a.agree(&one), None, "a point of small order");
    }

    #[test]
    fn entropy_is_seeded() {
        let next = |seed: u8, extra| Entropy::new(&[seed; 32], extra).next();
        assert_eq!(next(1, 1), next(1, 1));
        assert_ne!(next(1, 1), next(2, 1));
        assert_ne!(next(1, 1), next(1, 2));
        let mut e = Entropy::new(&[1; 32], 1);
        assert_ne!(e.next(), e.next());
    }

    #[test]
    fn the_replay_window_takes_each_counter_once() {
        let mut w = Window::default();
        assert!(!w.is_fresh(0), "counters start at 1");
        for c in [1, 2, 5, 3] {
            assert!(w.is_fresh(c), "{c}");
            w.accept(c);
            assert!(!w.is_fresh(c), "{c} again");
        }
        assert!(w.is_fresh(4));
        // Far ahead: what is too far behind it is old.
        w.accept(5000);
        assert!(!w.is_fresh(5000 - Window::SPAN));
        assert!(w.is_fresh(5001 - Window::SPAN));
        assert!(!w.is_fresh(4));
        // Shifts by any amount keep every bit in its place.
        let mut w = Window::default();
        let accepted: Vec<u64> = (1..3000).filter(|c| c % 7 == 0 || c % 11 == 0).collect();
        for &c in &accepted {
            w.accept(c);
        }
        for c in 3000 - Window::SPAN + 1..3000 {
            assert_eq!(w.is_fresh(c), !accepted.contains(&c), "{c}");
        }
    }
}
