//! Unit tests of the extension elements: layouts, round trips, and each malformed case.

use super::*;
use std::net::SocketAddrV4;

fn conn() -> ConnectionParams {
    ConnectionParams {
        tco: Tco::Tree,
        ro: Ro::Reliable,
        agn: 4,
        fdn: 3,
        mss: 1400,
        hgt_ms: 3000,
        window: 1024,
        cc: true,
    }
}

fn ack_info() -> AckInfo {
    let mut a = AckInfo::new(0xFFFF_FFF0, 17);
    a.stable = 0xFFFF_FF00;
    a.lsn_lost = true;
    for i in [0, 3, 31, 32, 40] {
        a.set_received(i, true);
    }
    a
}

fn member() -> Membership {
    Membership { tree_level: 2, child_id: 0x1234, member_id: 0xDEAD_BEEF, parent_id: 0x0102_0304 }
}

fn v4() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 7), 5000))
}

fn v6() -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x42), 6000, 0, 0))
}

/// Emits `e`, checks the length, parses it back with trailing data and compares.
fn round_trip(e: &Elements) {
    let mut buf = [0xAAu8; 256];
    let n = e.emit(&mut buf).unwrap();
    assert_eq!(n, e.len());
    buf[n] = 0x5A;
    let (back, rest) = Elements::parse(e.first_code(), &buf[..n + 1]).unwrap();
    assert_eq!(&back, e);
    assert_eq!(rest, &[0x5A]);
}

fn share() -> KeyShare {
    KeyShare { salt: core::array::from_fn(|i| i as u8), public: core::array::from_fn(|i| 0xA0 ^ i as u8) }
}

fn auth() -> Auth {
    Auth { kind: KeyKind::Link, sender: 0x0102_0304, counter: 0x1112_1314_1516_1718, tag: [0xEE; TAG_LEN] }
}

fn rate_info() -> RateInfo {
    RateInfo {
        slow_start: true,
        round: 7,
        max_rtt_us: 12_300,
        rate: 20_000_000,
        suppress: 1_600,
        clr: 0x0A0B_0C0D,
        echo: Some(Echo { member: 0x0102_0304, timestamp: 0xCAFE_F00D, delay: 250 }),
    }
}

fn rate_report() -> RateReport {
    RateReport {
        loss: true,
        measured: false,
        round: 9,
        member: 0x1122_3344,
        calc: 3_200,
        recv: 48_000_000_000,
        p: 0x0100_0000,
        rtt_us: 450,
        timestamp: 0x0BAD_CAFE,
        delay: 77,
    }
}

#[test]
fn rate_and_report_layouts() {
    let e = Elements { rate: Some(rate_info()), report: Some(rate_report()), auth: Some(auth()), ..Default::default() };
    let mut buf = [0u8; 92];
    assert_eq!(e.emit(&mut buf), Ok(92));
    assert_eq!(e.first_code(), RATE);
    // Rate: NE = 10 (Report), E and S set; round; max RTT in 100 us; rates in 16 B/s.
    assert_eq!(buf[..4], [0xA3, 7, 0, 123]);
    assert_eq!(buf[4..8], (20_000_000u32 / 16).to_be_bytes());
    assert_eq!(buf[8..12], 100u32.to_be_bytes());
    assert_eq!(buf[12..16], 0x0A0B_0C0Du32.to_be_bytes());
    assert_eq!(buf[16..28], [1, 2, 3, 4, 0xCA, 0xFE, 0xF0, 0x0D, 0, 0, 0, 250]);
    // Report: NE = 8 (Authentication, last), L set, M clear.
    let r = &buf[28..60];
    assert_eq!(r[..8], [0x81, 9, 0, 0, 0x11, 0x22, 0x33, 0x44]);
    assert_eq!(r[8..12], 200u32.to_be_bytes());
    assert_eq!(r[12..16], 3_000_000_000u32.to_be_bytes());
    assert_eq!(r[16..20], 0x0100_0000u32.to_be_bytes());
    assert_eq!(r[20..32], [0, 0, 1, 0xC2, 0x0B, 0xAD, 0xCA, 0xFE, 0, 0, 0, 77]);
    assert_eq!(buf[60] >> 4, END, "Authentication comes last");
    let (back, _) = Elements::parse(RATE, &buf).unwrap();
    assert_eq!(back.rate, Some(rate_info()));
    assert_eq!(back.report, Some(rate_report()));
    // A rate beyond 2^32 units saturates.
    let fast = Elements { report: Some(RateReport { recv: 100_000_000_000, ..rate_report() }), ..Default::default() };
    fast.emit(&mut buf).unwrap();
    assert_eq!(buf[12..16], u32::MAX.to_be_bytes());
    // No echo: the E bit is clear and the echo fields are zero.
    let quiet = Elements { rate: Some(RateInfo { echo: None, ..rate_info() }), ..Default::default() };
    quiet.emit(&mut buf).unwrap();
    assert_eq!(buf[0], 0x01);
    assert_eq!(buf[16..28], [0; 12]);
    assert_eq!(parse(RATE, &buf[..27]), Err(ParseError::Truncated));
    assert_eq!(parse(REPORT, &buf[..31]), Err(ParseError::Truncated));
}

#[test]
fn key_and_authentication_layouts() {
    let e = Elements { key: Some(share()), auth: Some(auth()), ..Default::default() };
    let mut buf = [0u8; 84];
    assert_eq!(e.emit(&mut buf), Ok(84));
    assert_eq!(e.first_code(), KEY);
    // Key: NE = 8 (Authentication), reserved, salt, public key.
    assert_eq!(buf[..4], [0x80, 0, 0, 0]);
    assert_eq!(buf[4..20], share().salt);
    assert_eq!(buf[20..52], share().public);
    // Authentication: NE = 0, kind 4 (link), reserved, sender, counter, tag.
    assert_eq!(buf[52..56], [0x00, 4, 0, 0]);
    assert_eq!(buf[56..60], [1, 2, 3, 4]);
    assert_eq!(buf[60..68], [0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
    assert_eq!(buf[68..84], [0xEE; 16]);
    assert_eq!(auth().nonce(), [1, 2, 3, 4, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
    // Kinds 0 and 5.. are invalid.
    for kind in [0, 5, 255] {
        let mut bad = buf;
        bad[53] = kind;
        assert_eq!(parse(KEY, &bad), Err(ParseError::BadElement), "kind {kind}");
    }
}

#[test]
fn authentication_must_be_the_last_element() {
    // Authentication -> Timestamp: refused, the tag's place would not be known.
    let mut chain = vec![0x40, 3, 0, 0];
    chain.extend_from_slice(&[0; 28]);
    chain.extend_from_slice(&[0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(parse(AUTH, &chain), Err(ParseError::BadElement));
    // Timestamp -> Authentication: fine.
    let mut chain = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    chain.extend_from_slice(&[0x00, 3, 0, 0]);
    chain.extend_from_slice(&[0; 28]);
    let e = parse(TIMESTAMP, &chain).unwrap();
    assert_eq!(e.timestamp, Some(1));
    assert_eq!(e.auth.map(|a| a.kind), Some(KeyKind::Member));
}

/// Parses a hand-made chain whose first element has code `first`.
fn parse(first: u8, bytes: &[u8]) -> Result<Elements, ParseError> {
    Elements::parse(first, bytes).map(|(e, _)| e)
}

#[test]
fn every_combination_round_trips() {
    for addr in [v4(), v6()] {
        for mask in 0u16..512 {
            let bit = |i: u16| mask & (1 << i) != 0;
            let e = Elements {
                connection: bit(0).then(conn),
                ack: bit(1).then(ack_info),
                membership: bit(2).then(member),
                timestamp: bit(3).then_some(0x0102_0304_0506_0708),
                address: bit(4).then_some(addr),
                key: bit(5).then(share),
                auth: bit(6).then(auth),
                rate: bit(7).then(rate_info),
                report: bit(8).then(rate_report),
            };
            round_trip(&e);
        }
    }
}

#[test]
fn empty_chain() {
    let e = Elements::default();
    assert_eq!(e.len(), 0);
    assert_eq!(e.first_code(), END);
    let (back, rest) = Elements::parse(END, &[1, 2, 3]).unwrap();
    assert_eq!(back, e);
    assert_eq!(rest, &[1, 2, 3]);
}

#[test]
fn connection_layout() {
    let e = Elements { connection: Some(conn()), membership: Some(member()), ..Default::default() };
    let mut buf = [0u8; 24];
    assert_eq!(e.emit(&mut buf), Ok(24));
    assert_eq!(e.first_code(), CONNECTION);
    // NE = 3 (membership), TCO = 1, RO = 2; AGN; FDN; C (TFMCC); MSS 1400; window - 1 (1023); HGT 3000.
    assert_eq!(buf[..12], [0x36, 4, 3, 1, 0x05, 0x78, 0x03, 0xFF, 0, 0, 0x0B, 0xB8]);
    // Membership: NE = 0; level 2; child 0x1234; member 0xDEADBEEF; parent 0x01020304.
    assert_eq!(buf[12..], [0x00, 2, 0x12, 0x34, 0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3, 4]);
}

#[test]
fn ack_layout_and_sizes() {
    let mut a = AckInfo::new(0x0A0B_0C0D, 5);
    assert_eq!(a.stable, a.lsn, "a leaf's subtree is itself");
    a.stable = 0x0A0B_0C00;
    a.lsn_lost = true;
    a.set_received(0, true);
    a.set_received(9, true);
    let e = Elements { ack: Some(a), ..Default::default() };
    let mut buf = [0u8; 20];
    assert_eq!(e.emit(&mut buf), Ok(20));
    assert_eq!(buf, [0x00, 10, 0x80, 0, 0x0A, 0x0B, 0x0C, 0x0D, 0, 0, 0, 5, 0x0A, 0x0B, 0x0C, 0, 0x80, 0x40, 0, 0]);
    for (n, len) in [(0u8, 16), (1, 20), (32, 20), (33, 24), (64, 24), (65, 28), (255, 48)] {
        let a = AckInfo { bitmap_len: n, ..AckInfo::new(1, 1) };
        assert_eq!(Elements { ack: Some(a), ..Default::default() }.len(), len, "n = {n}");
    }
}

#[test]
fn timestamp_and_address_layout() {
    let e = Elements { timestamp: Some(0x0102_0304_0506_0708), address: Some(v4()), ..Default::default() };
    let mut buf = [0u8; 20];
    assert_eq!(e.emit(&mut buf), Ok(20));
    assert_eq!(buf[..12], [0x60, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(buf[12..], [0x00, 4, 0x13, 0x88, 192, 0, 2, 7]);

    let e = Elements { address: Some(v6()), ..Default::default() };
    let mut buf = [0u8; 20];
    assert_eq!(e.emit(&mut buf), Ok(20));
    assert_eq!(buf[..4], [0x00, 6, 0x17, 0x70]);
    assert_eq!(buf[4..], Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x42).octets());
}

#[test]
fn ipv6_flowinfo_and_scope_are_not_sent() {
    let with_scope = SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 7, 3);
    let e = Elements { address: Some(SocketAddr::V6(with_scope)), ..Default::default() };
    let mut buf = [0u8; 20];
    e.emit(&mut buf).unwrap();
    let back = parse(ADDRESS, &buf).unwrap();
    assert_eq!(back.address, Some(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 0, 0))));
}

#[test]
fn parse_accepts_any_order() {
    // Address (v4) -> Membership -> Connection, NE codes 3, 1, 0.
    let mut chain = vec![0x30, 4, 0, 80, 10, 0, 0, 1];
    chain.extend_from_slice(&[0x10, 1, 0, 2, 0, 0, 0, 9, 0, 0, 0, 7]);
    // NE 0, TCO 0 (flat), RO 1 (semi-reliable); AGN 1; FDN 3; MSS 512; HGT 1000.
    let options = 0b0001;
    chain.extend_from_slice(&[options, 1, 3, 0, 0x02, 0x00, 0, 0, 0, 0, 0x03, 0xE8]);
    let e = parse(ADDRESS, &chain).unwrap();
    assert_eq!(e.address, Some(SocketAddr::from(([10, 0, 0, 1], 80))));
    assert_eq!(e.membership, Some(Membership { tree_level: 1, child_id: 2, member_id: 9, parent_id: 7 }));
    assert_eq!(
        e.connection,
        Some(ConnectionParams {
            tco: Tco::Flat,
            ro: Ro::SemiReliable,
            agn: 1,
            fdn: 3,
            mss: 512,
            hgt_ms: 1000,
            window: 1,
            cc: false
        })
    );
}

#[test]
fn reserved_bits_are_ignored() {
    let chain = [0x0F, 1, 0x7F, 0x00, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0];
    let e = parse(ACK, &chain).unwrap();
    assert_eq!(e.ack, Some(AckInfo { bitmap_len: 1, ..AckInfo::new(5, 0) }));
}

#[test]
fn unknown_codes() {
    let zeros = [0u8; 24];
    for code in [5, 11, 15] {
        assert_eq!(parse(code, &zeros), Err(ParseError::UnknownElement), "code {code}");
    }
    // An unknown code as the Next Element of a valid element.
    let chain = [0x50, 1, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(parse(MEMBERSHIP, &chain), Err(ParseError::UnknownElement));
    // Unknown even with nothing left to read.
    assert_eq!(parse(5, &[]), Err(ParseError::UnknownElement));
}

#[test]
fn duplicates() {
    let chain = [0x30, 1, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0x00, 1, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0];
    assert_eq!(parse(MEMBERSHIP, &chain), Err(ParseError::DuplicateElement));
    // Also when other elements come between: Timestamp -> Membership -> Timestamp.
    let mut chain = vec![0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    chain.extend_from_slice(&[0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    chain.extend_from_slice(&[0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    assert_eq!(parse(TIMESTAMP, &chain), Err(ParseError::DuplicateElement));
}

#[test]
fn truncated_elements() {
    let full = Elements {
        connection: Some(conn()),
        ack: Some(ack_info()),
        membership: Some(member()),
        timestamp: Some(7),
        address: Some(v6()),
        key: Some(share()),
        auth: Some(auth()),
        rate: Some(rate_info()),
        report: Some(rate_report()),
    };
    let mut buf = [0u8; 256];
    let n = full.emit(&mut buf).unwrap();
    for cut in 0..n {
        assert_eq!(parse(full.first_code(), &buf[..cut]), Err(ParseError::Truncated), "cut {cut}");
    }
    assert_eq!(parse(full.first_code(), &buf[..n]), Ok(full));
    // Each kind alone, one byte short.
    for e in [
        Elements { connection: Some(conn()), ..Default::default() },
        Elements { ack: Some(ack_info()), ..Default::default() },
        Elements { membership: Some(member()), ..Default::default() },
        Elements { timestamp: Some(1), ..Default::default() },
        Elements { address: Some(v4()), ..Default::default() },
        Elements { address: Some(v6()), ..Default::default() },
        Elements { key: Some(share()), ..Default::default() },
        Elements { auth: Some(auth()), ..Default::default() },
    ] {
        let n = e.emit(&mut buf).unwrap();
        assert_eq!(parse(e.first_code(), &buf[..n - 1]), Err(ParseError::Truncated), "{e:?}");
    }
}

#[test]
fn bad_connection_options() {
    let mut chain = [0u8; 12];
    for (options, ok) in
        [(0b0000, true), (0b0110, true), (0b1000, false), (0b1100, false), (0b0011, false), (0b0111, false)]
    {
        chain[0] = options;
        let r = parse(CONNECTION, &chain);
        assert_eq!(r.is_ok(), ok, "options {options:#06b}");
        if !ok {
            assert_eq!(r, Err(ParseError::BadElement));
        }
    }
}

#[test]
fn bad_address_family() {
    for family in [0, 5, 1, 255] {
        let chain = [0x00, family, 0, 80, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse(ADDRESS, &chain), Err(ParseError::BadElement), "family {family}");
    }
}

#[test]
fn ack_padding_bits_must_be_zero() {
    // n = 1: only the top bit of the first byte is valid.
    let mut chain = [0u8; 20];
    chain[1] = 1;
    chain[16] = 0x80;
    assert!(parse(ACK, &chain).is_ok());
    chain[16] = 0xC0;
    assert_eq!(parse(ACK, &chain), Err(ParseError::BadElement));
    chain[16] = 0x80;
    chain[19] = 0x01;
    assert_eq!(parse(ACK, &chain), Err(ParseError::BadElement));
    // n = 33: two words; bit 33 (second word) is padding.
    let mut chain = [0u8; 24];
    chain[1] = 33;
    chain[20] = 0x80;
    assert!(parse(ACK, &chain).is_ok());
    chain[20] = 0x40;
    assert_eq!(parse(ACK, &chain), Err(ParseError::BadElement));
    // n = 255: only the very last bit is padding.
    let mut chain = [0xFFu8; 48];
    chain[0] = 0;
    chain[1] = 255;
    assert_eq!(parse(ACK, &chain), Err(ParseError::BadElement));
    chain[47] = 0xFE;
    let e = parse(ACK, &chain).unwrap().ack.unwrap();
    assert!((0..255).all(|i| e.is_received(i)));
}

#[test]
fn ack_bitmap_helpers() {
    let mut a = AckInfo::new(10, 1);
    assert_eq!(a.bitmap_len, 0);
    assert!(!a.is_received(0));
    a.set_received(5, false);
    assert_eq!(a.bitmap_len, 6);
    assert_eq!(a.bitmap, [0; 32]);
    a.set_received(2, true);
    assert_eq!(a.bitmap_len, 6);
    assert!(a.is_received(2));
    assert!(!a.is_received(3));
    a.set_received(254, true);
    assert_eq!(a.bitmap_len, 255);
    assert!(a.is_received(254));
    assert_eq!(a.bitmap[31], 0x02);
    a.set_received(255, true);
    a.set_received(usize::MAX, true);
    assert_eq!(a.bitmap_len, 255);
    assert!(!a.is_received(255));
    assert_eq!(a.bitmap[31] & 0x01, 0);
    a.set_received(2, false);
    assert!(!a.is_received(2));
    assert_eq!(a.bitmap[0], 0);
}

#[test]
fn emit_zeroes_stray_bits_beyond_bitmap_len() {
    let a = AckInfo { bitmap_len: 3, bitmap: [0xFF; 32], ..AckInfo::new(1, 2) };
    let e = Elements { ack: Some(a), ..Default::default() };
    let mut buf = [0u8; 20];
    e.emit(&mut buf).unwrap();
    assert_eq!(buf[16..], [0xE0, 0, 0, 0]);
    let back = parse(ACK, &buf).unwrap().ack.unwrap();
    let mut expected = AckInfo::new(1, 2);
    (0..3).for_each(|i| expected.set_received(i, true));
    assert_eq!(back, expected);
}

#[test]
fn emit_into_short_buffer() {
    let e = Elements { connection: Some(conn()), timestamp: Some(3), ..Default::default() };
    let mut buf = [0u8; 24];
    for n in 0..24 {
        assert_eq!(e.emit(&mut buf[..n]), Err(EmitError::BufferTooSmall), "n = {n}");
    }
    assert_eq!(e.emit(&mut buf), Ok(24));
}

#[test]
fn option_codes() {
    assert_eq!(Tco::from_u8(0), Some(Tco::Flat));
    assert_eq!(Tco::from_u8(1), Some(Tco::Tree));
    assert_eq!(Tco::from_u8(2), None);
    assert_eq!(Tco::from_u8(3), None);
    assert_eq!(Ro::from_u8(0), Some(Ro::Unreliable));
    assert_eq!(Ro::from_u8(1), Some(Ro::SemiReliable));
    assert_eq!(Ro::from_u8(2), Some(Ro::Reliable));
    assert_eq!(Ro::from_u8(3), None);
    assert_eq!(Ro::from_u8(255), None);
}
