//! Unit tests of whole packets: every packet type round trips, each `ParseError` comes from a
//! specific malformed input, and no input makes parse panic.

use super::super::checksum::internet_checksum;
use super::super::element::{AckInfo, ConnectionParams, Membership, Ro, Tco};
use super::*;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

const CID: u32 = 0xC0FF_EE01;
const DATA: &[u8] = b"ectp payload";

fn conn() -> ConnectionParams {
    ConnectionParams {
        tco: Tco::Flat,
        ro: Ro::SemiReliable,
        agn: 2,
        fdn: 3,
        mss: 1024,
        hgt_ms: 3000,
        window: 1024,
        cc: true,
    }
}

fn member() -> Membership {
    Membership { tree_level: 1, child_id: 7, member_id: 42, parent_id: 0 }
}

fn ack() -> AckInfo {
    let mut a = AckInfo::new(1000, 12);
    a.set_received(1, true);
    a.set_received(70, true);
    a
}

/// Header and elements of each packet type as `docs/wire-format.md` describes them.
fn sample(t: PacketType) -> (Header, Elements) {
    let mut h = Header::new(t, CID);
    let mut e = Elements::default();
    match t {
        PacketType::Ccr => {
            h.psn = 0x1234_5678;
            e.connection = Some(conn());
        }
        PacketType::Ccc | PacketType::Tjr | PacketType::Ljr => e.membership = Some(member()),
        PacketType::Tjc => {
            h.flag = true;
            e.membership = Some(member());
        }
        PacketType::Data | PacketType::Rdata => {
            h.psn = u32::MAX;
            h.flag = true;
            h.token_id = if t == PacketType::Rdata { 9 } else { 0 };
        }
        PacketType::Ndata => h.psn = 77,
        PacketType::Ack => {
            e.ack = Some(ack());
            e.membership = Some(member());
        }
        PacketType::Hb => {
            h.psn = 990;
            e.timestamp = Some(1_700_000_000_123_456);
            e.membership = Some(member());
        }
        PacketType::Hback => {
            e.timestamp = Some(1_700_000_000_123_456);
            e.ack = Some(ack());
        }
        PacketType::Ljc => {
            h.flag = true;
            h.psn = 5000;
            e.connection = Some(conn());
            e.membership = Some(member());
            e.address = Some(SocketAddr::from(([198, 51, 100, 4], 7777)));
        }
        PacketType::Ulr => {
            h.flag = true;
            e.membership = Some(member());
        }
        PacketType::Ctr => {
            h.flag = true;
            h.psn = 4999;
        }
        PacketType::Tgr => h.psn = 31337,
        PacketType::Tgc | PacketType::Trr => {
            h.flag = true;
            h.token_id = 9;
        }
        PacketType::Trc => h.token_id = 9,
    }
    (h, e)
}

fn emit_vec(p: &Packet) -> Vec<u8> {
    let mut buf = vec![0u8; p.len()];
    assert_eq!(p.emit(&mut buf), Ok(p.len()));
    buf
}

fn round_trip(p: &Packet) {
    let buf = emit_vec(p);
    assert_eq!(Packet::parse(&buf).as_ref(), Ok(p), "{}", p.header.packet_type.name());
}

/// Rewrites Payload Length and Checksum so that only the field under test is wrong.
fn fix(buf: &mut [u8]) {
    let len = (buf.len() - HEADER_LEN) as u16;
    buf[field::PAYLOAD_LEN].copy_from_slice(&len.to_be_bytes());
    buf[field::CHECKSUM].fill(0);
    let sum = internet_checksum(buf);
    buf[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
}

/// A packet with a hand-made payload whose first element has code `ne`.
fn raw(ne: u8, packet_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER_LEN];
    buf[0] = ne << 4 | CT_DUPLEX;
    buf[1] = packet_type;
    buf.extend_from_slice(payload);
    fix(&mut buf);
    buf
}

fn full() -> Vec<u8> {
    let (header, elements) = sample(PacketType::Ljc);
    let elements = Elements { ack: Some(ack()), timestamp: Some(5), ..elements };
    emit_vec(&Packet { header, elements, data: DATA })
}

#[test]
fn every_packet_type_round_trips() {
    for t in PacketType::ALL {
        let (header, elements) = sample(t);
        round_trip(&Packet { header, elements, data: DATA });
        round_trip(&Packet { header, elements, data: &[] });
    }
}

#[test]
fn variants_round_trip() {
    let (header, elements) = sample(PacketType::Ljc);
    let v6 = SocketAddrV6::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 1, 2, 3, 4), 65535, 0, 0);
    round_trip(&Packet { header, elements: Elements { address: Some(SocketAddr::V6(v6)), ..elements }, data: DATA });
    round_trip(&Packet { header: Header::new(PacketType::Ljr, 0), elements: Elements::default(), data: &[] });
    let (header, elements) = sample(PacketType::Hback);
    round_trip(&Packet { header, elements: Elements { ack: None, ..elements }, data: &[] });
    let header = Header { psn: 0, flag: false, token_id: 255, ..Header::new(PacketType::Rdata, u32::MAX) };
    round_trip(&Packet { header, elements: Elements::default(), data: &[0xFF; 1500] });
    // Odd lengths exercise the checksum's padding byte.
    round_trip(&Packet { header, elements: Elements::default(), data: b"odd" });
}

#[test]
fn header_layout() {
    let header = Header { psn: 0x0A0B_0C0D, flag: true, token_id: 7, ..Header::new(PacketType::Data, 0x0102_0304) };
    let p = Packet { header, elements: Elements::default(), data: b"ab" };
    let buf = emit_vec(&p);
    assert_eq!(buf.len(), 18);
    assert_eq!(buf[0], 0b0000_0010, "NE 0, version 0, CT 10");
    assert_eq!(buf[1], 5);
    assert_eq!(buf[4..16], [1, 2, 3, 4, 0x0A, 0x0B, 0x0C, 0x0D, 0, 2, 0x80, 7]);
    assert_eq!(&buf[16..], b"ab");
    let mut zeroed = buf.clone();
    zeroed[2..4].fill(0);
    assert_eq!(buf[2..4], internet_checksum(&zeroed).to_be_bytes());
    assert!(checksum::verify(&buf));

    // The first element's code goes into the high nibble of byte 0.
    let (header, elements) = sample(PacketType::Hb);
    let buf = emit_vec(&Packet { header, elements, data: &[] });
    assert_eq!(buf[0], 3 << 4 | 0b10, "membership comes before timestamp");
    assert_eq!(buf[16] >> 4, 4, "membership's next element is the timestamp");
}

#[test]
fn reserved_flag_bits_are_ignored() {
    let mut buf = full();
    buf[field::FLAGS] = 0x7F;
    fix(&mut buf);
    let p = Packet::parse(&buf).unwrap();
    assert!(!p.header.flag);
}

#[test]
fn packet_type_codes_and_names() {
    for (i, t) in PacketType::ALL.into_iter().enumerate() {
        assert_eq!(t as usize, i + 1);
        assert_eq!(PacketType::from_u8(t as u8), Some(t));
    }
    assert_eq!(PacketType::from_u8(0), None);
    for v in 19..=255 {
        assert_eq!(PacketType::from_u8(v), None);
    }
    let names: Vec<_> = PacketType::ALL.iter().map(|t| t.name()).collect();
    assert_eq!(
        names,
        [
            "CCR", "CCC", "TJR", "TJC", "DATA", "NDATA", "RDATA", "ACK", "HB", "HBACK", "LJR", "LJC", "ULR", "CTR",
            "TGR", "TGC", "TRR", "TRC"
        ]
    );
}

#[test]
fn parse_error_table() {
    for (i, e) in ParseError::ALL.into_iter().enumerate() {
        assert_eq!(e.index(), i);
        assert!(!e.name().is_empty());
        assert!(!e.to_string().is_empty());
    }
    let mut names: Vec<_> = ParseError::ALL.iter().map(|e| e.name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 9);
    let boxed: Box<dyn std::error::Error> = Box::new(ParseError::BadChecksum);
    assert_eq!(boxed.to_string(), "bad checksum");
    let boxed: Box<dyn std::error::Error> = Box::new(EmitError::TooLong);
    assert!(!boxed.to_string().is_empty());
}

#[test]
fn truncated_header() {
    let buf = full();
    for n in 0..HEADER_LEN {
        assert_eq!(Packet::parse(&buf[..n]), Err(ParseError::Truncated), "n = {n}");
    }
}

#[test]
fn bad_version() {
    for version in 1..4u8 {
        let mut buf = full();
        buf[0] = (buf[0] & !0b1100) | version << 2;
        fix(&mut buf);
        assert_eq!(Packet::parse(&buf), Err(ParseError::BadVersion));
    }
}

#[test]
fn bad_connection_type() {
    for ct in [0b00, 0b01, 0b11] {
        let mut buf = full();
        buf[0] = (buf[0] & !0b11) | ct;
        fix(&mut buf);
        assert_eq!(Packet::parse(&buf), Err(ParseError::BadConnectionType), "CT {ct:#04b}");
    }
}

#[test]
fn payload_length_mismatch() {
    let buf = full();
    let actual = (buf.len() - HEADER_LEN) as u16;
    for claimed in [actual + 1, actual - 1, 0, u16::MAX] {
        let mut bad = buf.clone();
        bad[field::PAYLOAD_LEN].copy_from_slice(&claimed.to_be_bytes());
        bad[field::CHECKSUM].fill(0);
        let sum = internet_checksum(&bad);
        bad[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(Packet::parse(&bad), Err(ParseError::LengthMismatch), "claimed {claimed}");
    }
    // A datagram too long for any Payload Length.
    let mut huge = vec![0u8; HEADER_LEN + 65536];
    huge[0] = CT_DUPLEX;
    assert_eq!(Packet::parse(&huge), Err(ParseError::LengthMismatch));
}

#[test]
fn every_flipped_bit_is_caught() {
    let buf = full();
    for i in 0..buf.len() {
        for bit in 0..8 {
            let mut bad = buf.clone();
            bad[i] ^= 1 << bit;
            // Bits checked before the checksum report their own error.
            let expected = match (i, bit) {
                (0, 2 | 3) => ParseError::BadVersion,
                (0, 0 | 1) => ParseError::BadConnectionType,
                (12 | 13, _) => ParseError::LengthMismatch,
                _ => ParseError::BadChecksum,
            };
            assert_eq!(Packet::parse(&bad), Err(expected), "byte {i} bit {bit}");
        }
    }
}

#[test]
fn unknown_packet_type() {
    for t in [0u8, 19, 200, 255] {
        let buf = raw(0, t, b"x");
        assert_eq!(Packet::parse(&buf), Err(ParseError::UnknownPacketType), "type {t}");
    }
}

#[test]
fn unknown_element() {
    for code in [5u8, 11, 15] {
        let buf = raw(code, PacketType::Ack as u8, &[0; 24]);
        assert_eq!(Packet::parse(&buf), Err(ParseError::UnknownElement), "code {code}");
        // Named by a valid element's Next Element instead.
        let buf = raw(3, PacketType::Ack as u8, &[code << 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Packet::parse(&buf), Err(ParseError::UnknownElement), "code {code}");
    }
}

#[test]
fn duplicate_element() {
    let membership = [0x30, 0, 0, 1, 0, 0, 0, 1];
    let buf = raw(3, PacketType::Ulr as u8, &[membership, [0; 8]].concat());
    assert_eq!(Packet::parse(&buf), Err(ParseError::DuplicateElement));
}

#[test]
fn truncated_element() {
    let buf = full();
    let p = Packet::parse(&buf).unwrap();
    let elements_len = p.elements.len();
    // Every cut of the payload, with Payload Length and Checksum made to agree.
    for cut in HEADER_LEN..buf.len() {
        let mut short = buf[..cut].to_vec();
        fix(&mut short);
        let r = Packet::parse(&short);
        if cut < HEADER_LEN + elements_len {
            assert_eq!(r, Err(ParseError::Truncated), "cut {cut}");
        } else {
            let q = r.unwrap();
            assert_eq!(q.elements, p.elements);
            assert_eq!(q.data, &DATA[..cut - HEADER_LEN - elements_len]);
        }
    }
    // A first element named by the header with no bytes at all.
    assert_eq!(Packet::parse(&raw(1, 1, &[])), Err(ParseError::Truncated));
}

#[test]
fn bad_element_values() {
    let mut connection = [0u8; 12];
    connection[0] = 3 << 2; // TCO = 3
    assert_eq!(Packet::parse(&raw(1, 1, &connection)), Err(ParseError::BadElement));
    connection[0] = 3; // RO = 3
    assert_eq!(Packet::parse(&raw(1, 1, &connection)), Err(ParseError::BadElement));
    connection[0] = 1 << 2 | 2; // tree, reliable: fine
    assert!(Packet::parse(&raw(1, 1, &connection)).is_ok());

    let address = [0, 5, 0, 80, 10, 0, 0, 1];
    assert_eq!(Packet::parse(&raw(6, 12, &address)), Err(ParseError::BadElement));

    let mut ack = [0u8; 20];
    ack[1] = 4; // four valid bits, the rest of the word is padding
    ack[16] = 0xF0;
    assert!(Packet::parse(&raw(2, 8, &ack)).is_ok());
    ack[16] = 0xF8;
    assert_eq!(Packet::parse(&raw(2, 8, &ack)), Err(ParseError::BadElement));
}

/// xorshift64: a tiny deterministic generator, enough to shake the parser.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Parsing must not panic; whatever parses must emit and parse back to the same packet.
fn check_no_panic(buf: &[u8]) -> bool {
    match Packet::parse(buf) {
        Ok(p) => {
            let again = emit_vec(&p);
            assert_eq!(Packet::parse(&again), Ok(p));
            true
        }
        Err(_) => false,
    }
}

#[test]
fn every_prefix_is_rejected_without_panic() {
    let buf = full();
    for n in 0..buf.len() {
        assert!(!check_no_panic(&buf[..n]), "prefix {n}");
    }
    assert!(check_no_panic(&buf));
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let mut parsed = 0;
    for round in 0..100_000 {
        let len = (rng.next() % 96) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Half the time make the header plausible so the element parser sees the bytes.
        if round % 2 == 0 && len >= HEADER_LEN {
            buf[0] = (buf[0] & 0xF0) | CT_DUPLEX;
            buf[1] %= 20;
            if round % 4 == 0 {
                // Bias the first element code and the element bytes towards valid values.
                buf[0] = (buf[0] & 0x70) | CT_DUPLEX;
                for b in buf.iter_mut().skip(HEADER_LEN).step_by(4) {
                    *b &= 0x7F;
                }
            }
            fix(&mut buf);
        }
        if check_no_panic(&buf) {
            parsed += 1;
        }
    }
    // The generator does reach valid packets, so round trips are exercised too.
    assert!(parsed > 1000, "only {parsed} parsed");
}

#[test]
fn emit_buffer_too_small() {
    let (header, elements) = sample(PacketType::Ljc);
    let p = Packet { header, elements, data: DATA };
    let mut buf = vec![0u8; p.len() + 4];
    for n in 0..p.len() {
        assert_eq!(p.emit(&mut buf[..n]), Err(EmitError::BufferTooSmall), "n = {n}");
    }
    buf.fill(0xEE);
    assert_eq!(p.emit(&mut buf), Ok(p.len()));
    assert_eq!(buf[p.len()..], [0xEE; 4], "bytes after the packet are untouched");
}

#[test]
fn emit_too_long() {
    let (header, elements) = sample(PacketType::Ack);
    let max = vec![0x11u8; usize::from(u16::MAX) - elements.len()];
    let p = Packet { header, elements, data: &max };
    let mut buf = vec![0u8; HEADER_LEN + usize::from(u16::MAX) + 1];
    assert_eq!(p.emit(&mut buf), Ok(HEADER_LEN + usize::from(u16::MAX)));
    assert_eq!(Packet::parse(&buf[..p.len()]), Ok(p));
    let over = vec![0x11u8; max.len() + 1];
    let p = Packet { header, elements, data: &over };
    assert_eq!(p.emit(&mut buf), Err(EmitError::TooLong));
    assert_eq!(p.emit(&mut []), Err(EmitError::TooLong));
}

#[test]
fn sealed_packets_hand_the_sealer_what_the_opener_gets() {
    use super::super::element::{Auth, KeyKind, TAG_LEN};
    let mut header = Header::new(PacketType::Data, CID);
    header.psn = 9;
    let auth = Auth { kind: KeyKind::Group, sender: 0, counter: 3, tag: [0x55; TAG_LEN] };
    let elements = Elements { auth: Some(auth), ..Default::default() };
    let p = Packet { header, elements, data: DATA };
    let mut buf = [0u8; 128];
    let mut seen = Vec::new();
    let n = p
        .emit_sealed(&mut buf, |aad, data| {
            seen = aad.to_vec();
            assert_eq!(data, DATA);
            data.iter_mut().for_each(|b| *b ^= 0xFF); // "encrypt"
            [0x77; TAG_LEN]
        })
        .unwrap();
    assert_eq!(n, HEADER_LEN + 32 + DATA.len());
    // The associated data: header and elements, with the checksum and the tag zero.
    assert_eq!(seen.len(), HEADER_LEN + 32);
    assert_eq!(seen[2..4], [0, 0]);
    assert_eq!(seen[HEADER_LEN + 16..], [0; TAG_LEN]);
    assert_eq!(seen[HEADER_LEN + 4..HEADER_LEN + 16], auth.nonce());
    // On the wire: the tag, the "ciphertext", a valid checksum.
    let got = Packet::parse(&buf[..n]).unwrap();
    assert_eq!(got.elements.auth.map(|a| a.tag), Some([0x77; TAG_LEN]));
    assert!(got.data.iter().zip(DATA).all(|(c, d)| *c == d ^ 0xFF));
    // The opener gets exactly what the sealer got.
    let mut copy = buf[..n].to_vec();
    let (aad, data) = sealed_parts(&mut copy, &got).unwrap();
    assert_eq!(aad, &seen[..]);
    assert!(data.iter().zip(DATA).all(|(c, d)| *c == d ^ 0xFF));
    // Plain emit writes the element as it is, tag included.
    let mut plain_buf = [0u8; 128];
    let m = p.emit(&mut plain_buf).unwrap();
    assert_eq!(Packet::parse(&plain_buf[..m]).unwrap().elements.auth, Some(auth));
    // Not for a packet without Authentication element, nor for another buffer.
    let plain = Packet { header, elements: Elements::default(), data: DATA };
    let mut other = [0u8; 128];
    let m = plain.emit(&mut other).unwrap();
    let parsed = Packet::parse(&other[..m]).unwrap();
    assert!(sealed_parts(&mut other[..m].to_vec(), &parsed).is_none());
    assert!(sealed_parts(&mut vec![0; n + 1], &got).is_none());
}
