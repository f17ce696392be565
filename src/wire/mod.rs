//! The ECTP-3 wire format: packets as bytes, and nothing else.
//!
//! ECTP-3 is ITU-T X.607 | ISO/IEC 14476-3, the duplex multicast part of the Enhanced
//! Communications Transport Protocol. A packet is one UDP datagram: a 16-byte base header
//! (draft-dykim-ectp-00 §5.1), a chain of extension elements (§5.2) and user data. Where the
//! draft leaves a code or a layout open, the project's choice is written down in
//! `docs/wire-format.md`; this module and that document must agree.
//!
//! - [`seq`]: PSN serial-number arithmetic (PSNs run 1..=2^32-1 and wrap to 1).
//! - [`checksum`]: the Internet checksum (RFC 1071) that covers the whole packet.
//! - [`packet`]: the base header, the 18 packet types, and [`Packet::parse`] / [`Packet::emit`].
//! - [`element`]: the extension elements (Connection, Acknowledgement, Membership, Timestamp,
//!   Address, and Key and Authentication for a keyed connection).
//!
//! Everything here is a pure function of its arguments: no state, no I/O, no clock, and no
//! allocation in parse or emit. Input from the network is untrusted: [`Packet::parse`] returns a
//! [`ParseError`] for any malformed datagram and never panics. Parse does not check which
//! elements a packet type must carry; the protocol layer asks for what it needs.

pub mod checksum;
pub mod element;
pub mod packet;
pub mod seq;

pub use element::{
    ACK_BITMAP_BITS, AUTH_LEN, AckInfo, Auth, ConnectionParams, Echo, Elements, KeyKind, KeyShare, Membership,
    RATE_UNIT, RateInfo, RateReport, Ro, TAG_LEN, Tco,
};
pub use packet::{EmitError, HEADER_LEN, Header, Packet, PacketType, ParseError, sealed_parts};
pub use seq::Psn;

/// Reads the first `N` bytes of `bytes` as an array (zero-filled if `bytes` is shorter).
///
/// Callers pass a field range of a buffer whose length they have already checked; going through
/// `zip` keeps this free of panics even if a range were wrong.
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    for (dst, src) in a.iter_mut().zip(bytes) {
        *dst = *src;
    }
    a
}

/// Copies `bytes` into the front of `out` (as much as fits; callers pass exact field ranges).
fn put(out: &mut [u8], bytes: &[u8]) {
    for (dst, src) in out.iter_mut().zip(bytes) {
        *dst = *src;
    }
}
