//! Extension elements: the chain between the base header and the user data.
//!
//! draft-dykim-ectp-00 §5.2 and its Table 1 name the elements and their 4-bit codes, but give
//! only nominal sizes; the byte layouts below are the project's (see `docs/wire-format.md`).
//! Every element starts with a byte whose high 4 bits are the Next Element code, the code of the
//! element that follows it (0 = none: the user data follows). The base header's Next Element
//! names the first one.
//!
//! | code | element | bytes |
//! |---|---|---|
//! | 1 | Connection | 12 |
//! | 2 | Acknowledgement | 16 + 4 * ceil(n / 32), n = valid bitmap bits |
//! | 3 | Membership | 12 |
//! | 4 | Timestamp | 12 |
//! | 6 | Address | 8 (IPv4) or 20 (IPv6) |
//! | 7 | Key | 52 |
//! | 8 | Authentication | 32, always the last |
//! | 9 | Rate | 28 |
//! | 10 | Rate Report | 32 |
//!
//! Code 5 is the QoS element, which the draft reserves for ECTP-4 and which ECTP-3 does not use: it
//! is an unknown element here, as are 11..=15. Key and Authentication are the project's, for a
//! connection with a group key (ECTP_GROUP_KEY); Rate and Rate Report are the project's too, for
//! congestion control (ECTP_CC, TFMCC). At most one element of each kind may appear. Parse
//! accepts them in any order, except that Authentication must be the last; emit writes them in
//! code order, Authentication last. Reserved bytes and bits are sent as zero and ignored on receipt.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use super::packet::{EmitError, ParseError};
use super::{array, put};

/// Next Element code meaning "no further element" (Table 1, "End of Element").
const END: u8 = 0;
/// Element codes (draft-dykim-ectp-00 Table 1; Address is 6 because 5 is reserved for QoS).
const CONNECTION: u8 = 1;
const ACK: u8 = 2;
const MEMBERSHIP: u8 = 3;
const TIMESTAMP: u8 = 4;
const ADDRESS: u8 = 6;
const KEY: u8 = 7;
const AUTH: u8 = 8;
const RATE: u8 = 9;
const REPORT: u8 = 10;

/// Offset of the byte every element starts with: Next Element in its high 4 bits.
const NEXT: usize = 0;

/// Connection element layout.
mod connection {
    use core::ops::Range;
    /// Bits 3-2 of byte 0: TCO; bits 1-0: RO.
    pub const OPTIONS: usize = 0;
    pub const AGN: usize = 1;
    pub const FDN: usize = 2;
    /// Bit 0: C, congestion control (TFMCC) on.
    pub const FLAGS: usize = 3;
    pub const CC: u8 = 0x01;
    pub const MSS: Range<usize> = 4..6;
    /// The window less one (1..=65536 in 16 bits).
    pub const WINDOW: Range<usize> = 6..8;
    pub const HGT: Range<usize> = 8..12;
    pub const LEN: usize = 12;
}

/// Acknowledgement element layout (the fixed part; the bitmap follows).
mod ack {
    use core::ops::Range;
    pub const BITMAP_LEN: usize = 1;
    /// Bit 7: L, the LSN is known lost.
    pub const FLAGS: usize = 2;
    pub const LSN_LOST: u8 = 0x80;
    /// Which 255 PSNs the bitmap covers: block k starts at LSN + 1 + 255 k.
    pub const BLOCK: usize = 3;
    pub const LSN: Range<usize> = 4..8;
    pub const ADN: Range<usize> = 8..12;
    pub const STABLE: Range<usize> = 12..16;
    pub const FIXED_LEN: usize = 16;
}

/// Membership element layout.
mod membership {
    use core::ops::Range;
    pub const TREE_LEVEL: usize = 1;
    pub const CHILD_ID: Range<usize> = 2..4;
    pub const MEMBER_ID: Range<usize> = 4..8;
    pub const PARENT_ID: Range<usize> = 8..12;
    pub const LEN: usize = 12;
}

/// Timestamp element layout.
mod timestamp {
    use core::ops::Range;
    pub const VALUE: Range<usize> = 4..12;
    pub const LEN: usize = 12;
}

/// Address element layout (the fixed part; 4 or 16 address bytes follow).
mod address {
    use core::ops::Range;
    pub const FAMILY: usize = 1;
    pub const PORT: Range<usize> = 2..4;
    pub const FIXED_LEN: usize = 4;
    pub const FAMILY_V4: u8 = 4;
    pub const FAMILY_V6: u8 = 6;
}

/// Key element layout.
mod key {
    use core::ops::Range;
    pub const SALT: Range<usize> = 4..20;
    pub const PUBLIC: Range<usize> = 20..52;
    pub const LEN: usize = 52;
}

/// Authentication element layout.
mod auth {
    use core::ops::Range;
    pub const KIND: usize = 1;
    pub const SENDER: Range<usize> = 4..8;
    pub const COUNTER: Range<usize> = 8..16;
    pub const TAG: Range<usize> = 16..32;
    pub const LEN: usize = 32;
}

/// Rate element layout.
mod rate {
    use core::ops::Range;
    /// Low bits of byte 0: S (slow start), E (the echo fields are valid).
    pub const SLOW_START: u8 = 0x01;
    pub const ECHO: u8 = 0x02;
    pub const ROUND: usize = 1;
    pub const MAX_RTT: Range<usize> = 2..4;
    pub const RATE: Range<usize> = 4..8;
    pub const SUPPRESS: Range<usize> = 8..12;
    pub const CLR: Range<usize> = 12..16;
    pub const ECHO_ID: Range<usize> = 16..20;
    pub const ECHO_TS: Range<usize> = 20..24;
    pub const ECHO_DELAY: Range<usize> = 24..28;
    pub const LEN: usize = 28;
}

/// Rate Report element layout.
mod report {
    use core::ops::Range;
    /// Low bits of byte 0: L (a loss event was seen), M (the RTT was measured).
    pub const LOSS: u8 = 0x01;
    pub const MEASURED: u8 = 0x02;
    pub const ROUND: usize = 1;
    pub const MEMBER: Range<usize> = 4..8;
    pub const CALC: Range<usize> = 8..12;
    pub const RECV: Range<usize> = 12..16;
    pub const P: Range<usize> = 16..20;
    pub const RTT: Range<usize> = 20..24;
    pub const TS: Range<usize> = 24..28;
    pub const DELAY: Range<usize> = 28..32;
    pub const LEN: usize = 32;
}

/// Rates travel in units of this many bytes per second (32 bits: up to 68 GB/s).
pub const RATE_UNIT: u64 = 16;

fn rate_to_wire(r: u64) -> u32 {
    u32::try_from(r.div_ceil(RATE_UNIT)).unwrap_or(u32::MAX)
}

fn rate_from_wire(b: &[u8]) -> u64 {
    u64::from(u32::from_be_bytes(array(b))) * RATE_UNIT
}

fn u32_at(b: &[u8]) -> u32 {
    u32::from_be_bytes(array(b))
}

/// Length in bytes of the Authentication element.
pub const AUTH_LEN: usize = auth::LEN;
/// Length in bytes of the tag at the end of the Authentication element.
pub const TAG_LEN: usize = 16;

/// The extension elements of one packet, each present at most once (draft-dykim-ectp-00 §5.2).
///
/// Which packet type carries which elements is listed in `docs/wire-format.md`; parsing does not
/// enforce it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Elements {
    /// Connection element (code 1): connection parameters, in CCR, LJC and TGR.
    pub connection: Option<ConnectionParams>,
    /// Acknowledgement element (code 2): reception status, in ACK (and HBACK from the TO to an SU).
    pub ack: Option<AckInfo>,
    /// Membership element (code 3): tree membership, in TJC, HB, ACK and others.
    pub membership: Option<Membership>,
    /// Timestamp element (microseconds).
    ///
    /// Code 4: the sender's clock, in HB, echoed unchanged in HBACK to measure the RTT.
    pub timestamp: Option<u64>,
    /// Address element (code 6): e.g. the repair agent an LJC recommends as parent. An IPv6
    /// address is sent without flow info or scope id, and parsed with both 0.
    pub address: Option<SocketAddr>,
    /// Key element (code 7): a key share, in join requests and their answers and in CCR
    /// (ECTP_GROUP_KEY).
    pub key: Option<KeyShare>,
    /// Authentication element (code 8, always the last): the tag and counter of a packet of a
    /// keyed connection.
    pub auth: Option<Auth>,
    /// Rate element (code 9): the sender's congestion-control state, in the TO's HB and NDATA
    /// and in an SU's HB (ECTP_CC_TFMCC).
    pub rate: Option<RateInfo>,
    /// Rate Report element (code 10): a receiver's TCP-friendly rate, in ACK and HBACK.
    pub report: Option<RateReport>,
}

/// The echo of a receiver's report in a [`RateInfo`]: whose report, its timestamp, and how
/// long the report was held on its way (at repair agents and at the sender) before this echo
/// left; the receiver takes `now - timestamp - delay` as its round trip to the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Echo {
    /// The member whose report is echoed (0: the TO, in an SU's Rate element).
    pub member: u32,
    /// The report's timestamp (the receiver's clock, microseconds, low 32 bits).
    pub timestamp: u32,
    /// Microseconds the report was held before this echo was sent.
    pub delay: u32,
}

/// The sender's side of TFMCC (RFC 4654), carried in the Rate element (code 9; the project's,
/// see `docs/wire-format.md`).
///
/// Layout (28 bytes): `[0]` Next Element << 4 | E << 1 | S; `[1]` feedback round; `[2-3]` the
/// largest RTT the sender knows, in units of 100 microseconds; `[4-7]` sending rate; `[8-11]`
/// suppression rate (the lowest reported in this round, 0: none yet); `[12-15]` the current
/// limiting receiver (CLR, 0: none); `[16-19]` echo member; `[20-23]` echo timestamp; `[24-27]`
/// echo delay (microseconds). Rates in units of [`RATE_UNIT`] bytes per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateInfo {
    /// S: the sender is in slow start (receivers report their receive rate).
    pub slow_start: bool,
    /// Feedback round: a new number starts a round, in which receivers may report once.
    pub round: u8,
    /// The largest RTT the sender knows, in microseconds (a receiver without its own uses it).
    pub max_rtt_us: u32,
    /// The sending rate, bytes per second.
    pub rate: u64,
    /// The lowest rate reported in this round (0: none yet): a receiver whose rate is not
    /// clearly lower keeps quiet.
    pub suppress: u64,
    /// The current limiting receiver's member id (0: none).
    pub clr: u32,
    /// The echo of the last report the sender took.
    pub echo: Option<Echo>,
}

/// A receiver's report (TFMCC, RFC 4654), carried in the Rate Report element (code 10; the
/// project's, see `docs/wire-format.md`).
///
/// Layout (32 bytes): `[0]` Next Element << 4 | M << 1 | L; `[1]` the feedback round it
/// answers; `[2-3]` reserved; `[4-7]` the member it is about (a repair agent forwards its
/// children's); `[8-11]` the TCP-friendly rate it calculated; `[12-15]` the rate it receives at;
/// `[16-19]` loss event rate x 2^32; `[20-23]` the RTT used, microseconds; `[24-27]` timestamp
/// (the member's clock, microseconds, low 32 bits); `[28-31]` delay so far, microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateReport {
    /// L: a loss event was seen (else `calc` is meaningless and `recv` rules, slow start).
    pub loss: bool,
    /// M: the RTT was measured (echoed), not estimated.
    pub measured: bool,
    /// The feedback round answered.
    pub round: u8,
    /// The member the report is about.
    pub member: u32,
    /// The TCP-friendly rate calculated, bytes per second.
    pub calc: u64,
    /// The receive rate, bytes per second.
    pub recv: u64,
    /// The loss event rate, times 2^32.
    pub p: u32,
    /// The RTT used, microseconds.
    pub rtt_us: u32,
    /// The member's clock when it sent the report, microseconds (low 32 bits).
    pub timestamp: u32,
    /// Microseconds the report has been held so far (repair agents add theirs).
    pub delay: u32,
}

/// A key share, carried in the Key element (code 7; the project's, see `docs/wire-format.md`).
///
/// Layout (52 bytes): `[0]` Next Element << 4; `[1-3]` reserved; `[4-19]` salt; `[20-51]` an
/// X25519 public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyShare {
    /// Random bytes drawn for this connection (TO) or this join (TU): the keys derived from them
    /// are new each time, so that no nonce is ever used twice under one key.
    pub salt: [u8; 16],
    /// The sender's X25519 public key for this connection or join.
    pub public: [u8; 32],
}

/// Which key authenticates a packet: the Authentication element's Kind byte.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// A join request and its answer (LJR, TJR in the creation phase, LJC, TJC).
    Join = 1,
    /// The connection's group key: what the TO multicasts.
    Group = 2,
    /// A member's own key, shared with the TO only.
    Member = 3,
    /// The key of one link of the tree, shared by a child and its repair agent.
    Link = 4,
}

impl KeyKind {
    /// The kind with wire code `v`.
    pub fn from_u8(v: u8) -> Option<KeyKind> {
        match v {
            1 => Some(KeyKind::Join),
            2 => Some(KeyKind::Group),
            3 => Some(KeyKind::Member),
            4 => Some(KeyKind::Link),
            _ => None,
        }
    }
}

/// The Authentication element (code 8; the project's, see `docs/wire-format.md`): which key,
/// who sent it, its counter, and the AEAD tag over the whole packet.
///
/// Layout (32 bytes): `[0]` Next Element << 4, always 0 (it is the last element); `[1]` kind;
/// `[2-3]` reserved; `[4-7]` sender (0: the TO; a member id; 0xFFFFFFFF: a TU that has none
/// yet); `[8-15]` counter; `[16-31]` tag. Sender and counter form the 96-bit nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Auth {
    /// The key it was sealed with.
    pub kind: KeyKind,
    /// The sender's id under that key.
    pub sender: u32,
    /// The sender's counter under that key: new for every packet sent.
    pub counter: u64,
    /// The AEAD tag (all zeros while the packet is being sealed or opened).
    pub tag: [u8; TAG_LEN],
}

impl Auth {
    /// The 96-bit AEAD nonce: sender and counter.
    pub fn nonce(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        put(&mut n, &self.sender.to_be_bytes());
        put(n.get_mut(4..).unwrap_or_default(), &self.counter.to_be_bytes());
        n
    }
}

/// Connection parameters carried in the Connection element (code 1; draft-dykim-ectp-00 §5.2,
/// §6.1).
///
/// Layout (12 bytes): `[0]` Next Element << 4 | TCO << 2 | RO; `[1]` AGN; `[2]` FDN;
/// `[3]` flags (bit 0: C, TFMCC); `[4-5]` MSS; `[6-7]` the window less one; `[8-11]` HGT in
/// milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionParams {
    /// Tree configuration option.
    pub tco: Tco,
    /// Reliability option.
    pub ro: Ro,
    /// ACK generation number: a child with Child ID c acknowledges PSNs with PSN % AGN == c % AGN.
    pub agn: u8,
    /// Failure detection number: heartbeats missed before a parent or child is given up.
    pub fdn: u8,
    /// Maximum segment size: the largest user data of one DATA packet, in bytes.
    pub mss: u16,
    /// Heartbeat generation time (the HB period), in milliseconds.
    pub hgt_ms: u32,
    /// The TO's flow-control window, in DATA packets (1..=65536): no DATA is ever more than this
    /// many PSNs ahead of what a receiver lacks, so a receiver holds at most that many and takes
    /// any jump beyond it for a lie. Carried less one (0..=65535).
    pub window: u32,
    /// C: the connection is congestion controlled (ECTP_CC_TFMCC): receivers report, and an SU
    /// paces its backward data by the TO's reports.
    pub cc: bool,
}

/// Tree configuration option, TCO (2 bits of the Connection element; draft-dykim-ectp-00 §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Tco {
    /// Flat tree: every TU is a child of the TO.
    Flat = 0,
    /// Multi-level tree: repair agents (RAs) act as parents of local groups.
    Tree = 1,
}

impl Tco {
    /// The TCO for a 2-bit field value; `None` for 2 and 3 (and anything larger).
    pub fn from_u8(v: u8) -> Option<Tco> {
        match v {
            0 => Some(Tco::Flat),
            1 => Some(Tco::Tree),
            _ => None,
        }
    }
}

/// Reliability option, RO (2 bits of the Connection element; draft-dykim-ectp-00 §6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Ro {
    /// Binary 00: no retransmission; ACKs only report status.
    Unreliable = 0,
    /// Binary 01: a parent repairs only what it still buffers.
    SemiReliable = 1,
    /// Binary 10: every loss is repaired.
    Reliable = 2,
}

impl Ro {
    /// The RO for a 2-bit field value; `None` for 3 (and anything larger).
    pub fn from_u8(v: u8) -> Option<Ro> {
        match v {
            0 => Some(Ro::Unreliable),
            1 => Some(Ro::SemiReliable),
            2 => Some(Ro::Reliable),
            _ => None,
        }
    }
}

/// Largest number of valid bits in an ACK bitmap (the bitmap length field is one byte).
pub const ACK_BITMAP_BITS: usize = 255;

/// Reception status carried in the Acknowledgement element (code 2; draft-dykim-ectp-00 §5.2,
/// §6.4).
///
/// Layout (16 + 4 * ceil(n / 32) bytes, n = `bitmap_len`): `[0]` Next Element << 4; `[1]` n;
/// `[2]` flags (bit 7: L, the LSN is known lost; the rest reserved); `[3]` block; `[4-7]` LSN;
/// `[8-11]` ADN; `[12-15]` stable; `[16..]` the bitmap padded with
/// zero bits to a 32-bit boundary. Bits of `bitmap` at or beyond `bitmap_len` are always zero after a parse or
/// [`AckInfo::set_received`], so two equal reports compare equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckInfo {
    /// Lowest sequence number (LSN): the lowest PSN not yet received.
    pub lsn: u32,
    /// Active descendants number (ADN): active members in the sender's subtree, summed up the tree.
    pub adn: u32,
    /// The lowest PSN that the sender's whole subtree (itself included) does not hold: what its
    /// parent may release below. Equal to `lsn` for a leaf; a repair agent's may be lower (a child
    /// lacks it) while its own `lsn` and bitmap ask only for what the agent itself lacks.
    pub stable: u32,
    /// L: the LSN is known to have been sent (a later PSN was received, or NDATA or CTR
    /// announced past it): it is lost, not merely in flight, and the parent repairs it. Without
    /// L, only the bitmap's 0 bits ask for repairs.
    pub lsn_lost: bool,
    /// valid bits in `bitmap`
    pub bitmap_len: u8,
    /// Which PSNs the bitmap covers: block k starts at LSN + 1 + 255 k, so that a window of
    /// up to 65,280 PSNs past the LSN is reported in several ACKs (0: right after the LSN).
    pub block: u8,
    /// Bit i (byte i / 8, most significant bit first) is 1 if PSN LSN + 1 + 255 block + i was
    /// received, 0 if it is lost.
    pub bitmap: [u8; 32],
}

impl AckInfo {
    /// A report with the given LSN and ADN and an empty bitmap.
    pub fn new(lsn: u32, adn: u32) -> AckInfo {
        AckInfo { lsn, adn, stable: lsn, lsn_lost: false, bitmap_len: 0, block: 0, bitmap: [0; 32] }
    }

    /// The PSN bit `i` of the bitmap stands for.
    pub fn psn_of_bit(&self, i: usize) -> u32 {
        let off = 1 + ACK_BITMAP_BITS as u64 * u64::from(self.block) + i as u64;
        crate::wire::Psn(self.lsn).add(off as u32).0
    }

    /// Records whether PSN LSN + 1 + `i` was received. Extends `bitmap_len` to `i + 1` if needed
    /// (the bits in between stay 0, "lost"); ignores `i >= ACK_BITMAP_BITS`.
    pub fn set_received(&mut self, i: usize, received: bool) {
        if i >= ACK_BITMAP_BITS {
            return;
        }
        let Some(byte) = self.bitmap.get_mut(i / 8) else {
            return;
        };
        let mask = 0x80u8 >> (i % 8);
        if received {
            *byte |= mask;
        } else {
            *byte &= !mask;
        }
        if i >= usize::from(self.bitmap_len) {
            self.bitmap_len = u8::try_from(i + 1).unwrap_or(u8::MAX);
        }
    }

    /// Whether bit `i` says PSN LSN + 1 + `i` was received; false at or beyond `bitmap_len`.
    pub fn is_received(&self, i: usize) -> bool {
        i < usize::from(self.bitmap_len) && self.bitmap.get(i / 8).is_some_and(|byte| byte & (0x80 >> (i % 8)) != 0)
    }

    /// Bitmap bytes on the wire: the valid bits rounded up to whole 32-bit words.
    fn wire_bitmap_bytes(&self) -> usize {
        4 * usize::from(self.bitmap_len).div_ceil(32)
    }
}

/// Mask of the bits of bitmap byte `j` that are below `bitmap_len` (the others are padding).
fn valid_bits(bitmap_len: u8, j: usize) -> u8 {
    match usize::from(bitmap_len).saturating_sub(8 * j) {
        0 => 0,
        n @ 1..=7 => !(0xFFu8 >> n),
        _ => 0xFF,
    }
}

/// Tree membership carried in the Membership element (code 3; draft-dykim-ectp-00 §5.2).
///
/// Layout (12 bytes): `[0]` Next Element << 4; `[1]` Tree Level; `[2-3]` Child ID;
/// `[4-7]` Member ID; `[8-11]` Parent ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Membership {
    /// Tree Level: depth in the control tree, as the parent assigns it in TJC.
    pub tree_level: u8,
    /// Child ID given by the parent in TJC; in HB, the child that must answer with HBACK.
    pub child_id: u16,
    /// Member ID assigned by the TO (in LJC) and presented in TJR.
    pub member_id: u32,
    /// Member ID of the member's parent in the control tree; 0 is the TO.
    pub parent_id: u32,
}

impl Membership {
    /// Member `member_id` with every other field 0.
    pub fn of(member_id: u32) -> Membership {
        Membership { tree_level: 0, child_id: 0, member_id, parent_id: 0 }
    }
}

/// One element, as the parse and emit loops see it.
enum Item {
    Connection(ConnectionParams),
    Ack(AckInfo),
    Membership(Membership),
    Timestamp(u64),
    Address(SocketAddr),
    Key(KeyShare),
    Auth(Auth),
    Rate(RateInfo),
    Report(RateReport),
}

impl Item {
    fn code(&self) -> u8 {
        match self {
            Item::Connection(_) => CONNECTION,
            Item::Ack(_) => ACK,
            Item::Membership(_) => MEMBERSHIP,
            Item::Timestamp(_) => TIMESTAMP,
            Item::Address(_) => ADDRESS,
            Item::Key(_) => KEY,
            Item::Auth(_) => AUTH,
            Item::Rate(_) => RATE,
            Item::Report(_) => REPORT,
        }
    }

    fn len(&self) -> usize {
        match self {
            Item::Connection(_) => connection::LEN,
            Item::Ack(a) => ack::FIXED_LEN + a.wire_bitmap_bytes(),
            Item::Membership(_) => membership::LEN,
            Item::Timestamp(_) => timestamp::LEN,
            Item::Address(SocketAddr::V4(_)) => address::FIXED_LEN + 4,
            Item::Address(SocketAddr::V6(_)) => address::FIXED_LEN + 16,
            Item::Key(_) => key::LEN,
            Item::Auth(_) => auth::LEN,
            Item::Rate(_) => rate::LEN,
            Item::Report(_) => report::LEN,
        }
    }

    /// Parses the element with code `code` at the start of `buf`; returns it and the bytes after
    /// it.
    fn parse(code: u8, buf: &[u8]) -> Result<(Item, &[u8]), ParseError> {
        match code {
            CONNECTION => {
                let (b, rest) = buf.split_first_chunk::<{ connection::LEN }>().ok_or(ParseError::Truncated)?;
                let options = b[connection::OPTIONS];
                let tco = Tco::from_u8((options >> 2) & 0b11).ok_or(ParseError::BadElement)?;
                let ro = Ro::from_u8(options & 0b11).ok_or(ParseError::BadElement)?;
                let params = ConnectionParams {
                    tco,
                    ro,
                    agn: b[connection::AGN],
                    fdn: b[connection::FDN],
                    mss: u16::from_be_bytes(array(&b[connection::MSS])),
                    hgt_ms: u32::from_be_bytes(array(&b[connection::HGT])),
                    window: u32::from(u16::from_be_bytes(array(&b[connection::WINDOW]))) + 1,
                    cc: b[connection::FLAGS] & connection::CC != 0,
                };
                Ok((Item::Connection(params), rest))
            }
            ACK => {
                let (b, rest) = buf.split_first_chunk::<{ ack::FIXED_LEN }>().ok_or(ParseError::Truncated)?;
                let mut info =
                    AckInfo::new(u32::from_be_bytes(array(&b[ack::LSN])), u32::from_be_bytes(array(&b[ack::ADN])));
                info.stable = u32::from_be_bytes(array(&b[ack::STABLE]));
                info.bitmap_len = b[ack::BITMAP_LEN];
                info.lsn_lost = b[ack::FLAGS] & ack::LSN_LOST != 0;
                info.block = b[ack::BLOCK];
                let (bits, rest) = rest.split_at_checked(info.wire_bitmap_bytes()).ok_or(ParseError::Truncated)?;
                // At most 32 bytes, so the zip covers every byte of `bits`.
                for (j, (dst, src)) in info.bitmap.iter_mut().zip(bits).enumerate() {
                    if src & !valid_bits(info.bitmap_len, j) != 0 {
                        return Err(ParseError::BadElement);
                    }
                    *dst = *src;
                }
                Ok((Item::Ack(info), rest))
            }
            MEMBERSHIP => {
                let (b, rest) = buf.split_first_chunk::<{ membership::LEN }>().ok_or(ParseError::Truncated)?;
                let m = Membership {
                    tree_level: b[membership::TREE_LEVEL],
                    child_id: u16::from_be_bytes(array(&b[membership::CHILD_ID])),
                    member_id: u32::from_be_bytes(array(&b[membership::MEMBER_ID])),
                    parent_id: u32::from_be_bytes(array(&b[membership::PARENT_ID])),
                };
                Ok((Item::Membership(m), rest))
            }
            TIMESTAMP => {
                let (b, rest) = buf.split_first_chunk::<{ timestamp::LEN }>().ok_or(ParseError::Truncated)?;
                Ok((Item::Timestamp(u64::from_be_bytes(array(&b[timestamp::VALUE]))), rest))
            }
            ADDRESS => {
                let (b, rest) = buf.split_first_chunk::<{ address::FIXED_LEN }>().ok_or(ParseError::Truncated)?;
                let port = u16::from_be_bytes(array(&b[address::PORT]));
                match b[address::FAMILY] {
                    address::FAMILY_V4 => {
                        let (ip, rest) = rest.split_first_chunk::<4>().ok_or(ParseError::Truncated)?;
                        Ok((Item::Address(SocketAddr::from((Ipv4Addr::from(*ip), port))), rest))
                    }
                    address::FAMILY_V6 => {
                        let (ip, rest) = rest.split_first_chunk::<16>().ok_or(ParseError::Truncated)?;
                        let sa = SocketAddrV6::new(Ipv6Addr::from(*ip), port, 0, 0);
                        Ok((Item::Address(SocketAddr::V6(sa)), rest))
                    }
                    _ => Err(ParseError::BadElement),
                }
            }
            KEY => {
                let (b, rest) = buf.split_first_chunk::<{ key::LEN }>().ok_or(ParseError::Truncated)?;
                Ok((Item::Key(KeyShare { salt: array(&b[key::SALT]), public: array(&b[key::PUBLIC]) }), rest))
            }
            AUTH => {
                let (b, rest) = buf.split_first_chunk::<{ auth::LEN }>().ok_or(ParseError::Truncated)?;
                // The last element: the tag's place is then known from the packet's length.
                if b[NEXT] >> 4 != END {
                    return Err(ParseError::BadElement);
                }
                let kind = KeyKind::from_u8(b[auth::KIND]).ok_or(ParseError::BadElement)?;
                let a = Auth {
                    kind,
                    sender: u32::from_be_bytes(array(&b[auth::SENDER])),
                    counter: u64::from_be_bytes(array(&b[auth::COUNTER])),
                    tag: array(&b[auth::TAG]),
                };
                Ok((Item::Auth(a), rest))
            }
            RATE => {
                let (b, rest) = buf.split_first_chunk::<{ rate::LEN }>().ok_or(ParseError::Truncated)?;
                let flags = b[NEXT] & 0x0F;
                let r = RateInfo {
                    slow_start: flags & rate::SLOW_START != 0,
                    round: b[rate::ROUND],
                    max_rtt_us: u32::from(u16::from_be_bytes(array(&b[rate::MAX_RTT]))) * 100,
                    rate: rate_from_wire(&b[rate::RATE]),
                    suppress: rate_from_wire(&b[rate::SUPPRESS]),
                    clr: u32_at(&b[rate::CLR]),
                    echo: (flags & rate::ECHO != 0).then(|| Echo {
                        member: u32_at(&b[rate::ECHO_ID]),
                        timestamp: u32_at(&b[rate::ECHO_TS]),
                        delay: u32_at(&b[rate::ECHO_DELAY]),
                    }),
                };
                Ok((Item::Rate(r), rest))
            }
            REPORT => {
                let (b, rest) = buf.split_first_chunk::<{ report::LEN }>().ok_or(ParseError::Truncated)?;
                let flags = b[NEXT] & 0x0F;
                let r = RateReport {
                    loss: flags & report::LOSS != 0,
                    measured: flags & report::MEASURED != 0,
                    round: b[report::ROUND],
                    member: u32_at(&b[report::MEMBER]),
                    calc: rate_from_wire(&b[report::CALC]),
                    recv: rate_from_wire(&b[report::RECV]),
                    p: u32_at(&b[report::P]),
                    rtt_us: u32_at(&b[report::RTT]),
                    timestamp: u32_at(&b[report::TS]),
                    delay: u32_at(&b[report::DELAY]),
                };
                Ok((Item::Report(r), rest))
            }
            _ => Err(ParseError::UnknownElement),
        }
    }

    /// Writes this element with Next Element `next` at the start of `out`; returns the rest of
    /// `out`, or `None` if `out` is too short.
    fn emit<'b>(&self, next: u8, out: &'b mut [u8]) -> Option<&'b mut [u8]> {
        let (b, rest) = out.split_at_mut_checked(self.len())?;
        b.fill(0);
        let mut first = next << 4;
        match self {
            Item::Connection(c) => {
                first |= (c.tco as u8) << 2 | c.ro as u8;
                *b.get_mut(connection::AGN)? = c.agn;
                *b.get_mut(connection::FDN)? = c.fdn;
                *b.get_mut(connection::FLAGS)? = if c.cc { connection::CC } else { 0 };
                put(b.get_mut(connection::MSS)?, &c.mss.to_be_bytes());
                put(b.get_mut(connection::HGT)?, &c.hgt_ms.to_be_bytes());
                let w = u16::try_from(c.window.clamp(1, 65536) - 1).unwrap_or(u16::MAX);
                put(b.get_mut(connection::WINDOW)?, &w.to_be_bytes());
            }
            Item::Ack(a) => {
                *b.get_mut(ack::BITMAP_LEN)? = a.bitmap_len;
                *b.get_mut(ack::FLAGS)? = if a.lsn_lost { ack::LSN_LOST } else { 0 };
                *b.get_mut(ack::BLOCK)? = a.block;
                put(b.get_mut(ack::LSN)?, &a.lsn.to_be_bytes());
                put(b.get_mut(ack::ADN)?, &a.adn.to_be_bytes());
                put(b.get_mut(ack::STABLE)?, &a.stable.to_be_bytes());
                // Bits beyond bitmap_len are padding: send them as zero whatever the caller left.
                let bits = b.get_mut(ack::FIXED_LEN..)?;
                for (j, (dst, src)) in bits.iter_mut().zip(a.bitmap).enumerate() {
                    *dst = src & valid_bits(a.bitmap_len, j);
                }
            }
            Item::Membership(m) => {
                *b.get_mut(membership::TREE_LEVEL)? = m.tree_level;
                put(b.get_mut(membership::CHILD_ID)?, &m.child_id.to_be_bytes());
                put(b.get_mut(membership::MEMBER_ID)?, &m.member_id.to_be_bytes());
                put(b.get_mut(membership::PARENT_ID)?, &m.parent_id.to_be_bytes());
            }
            Item::Timestamp(t) => put(b.get_mut(timestamp::VALUE)?, &t.to_be_bytes()),
            Item::Address(sa) => {
                *b.get_mut(address::FAMILY)? = match sa {
                    SocketAddr::V4(_) => address::FAMILY_V4,
                    SocketAddr::V6(_) => address::FAMILY_V6,
                };
                put(b.get_mut(address::PORT)?, &sa.port().to_be_bytes());
                let ip = b.get_mut(address::FIXED_LEN..)?;
                match sa {
                    SocketAddr::V4(v4) => put(ip, &v4.ip().octets()),
                    SocketAddr::V6(v6) => put(ip, &v6.ip().octets()),
                }
            }
            Item::Key(k) => {
                put(b.get_mut(key::SALT)?, &k.salt);
                put(b.get_mut(key::PUBLIC)?, &k.public);
            }
            Item::Auth(a) => {
                *b.get_mut(auth::KIND)? = a.kind as u8;
                put(b.get_mut(auth::SENDER)?, &a.sender.to_be_bytes());
                put(b.get_mut(auth::COUNTER)?, &a.counter.to_be_bytes());
                put(b.get_mut(auth::TAG)?, &a.tag);
            }
            Item::Rate(r) => {
                first |=
                    if r.slow_start { rate::SLOW_START } else { 0 } | if r.echo.is_some() { rate::ECHO } else { 0 };
                *b.get_mut(rate::ROUND)? = r.round;
                let max_rtt = u16::try_from(r.max_rtt_us.div_ceil(100)).unwrap_or(u16::MAX);
                put(b.get_mut(rate::MAX_RTT)?, &max_rtt.to_be_bytes());
                put(b.get_mut(rate::RATE)?, &rate_to_wire(r.rate).to_be_bytes());
                put(b.get_mut(rate::SUPPRESS)?, &rate_to_wire(r.suppress).to_be_bytes());
                put(b.get_mut(rate::CLR)?, &r.clr.to_be_bytes());
                if let Some(e) = r.echo {
                    put(b.get_mut(rate::ECHO_ID)?, &e.member.to_be_bytes());
                    put(b.get_mut(rate::ECHO_TS)?, &e.timestamp.to_be_bytes());
                    put(b.get_mut(rate::ECHO_DELAY)?, &e.delay.to_be_bytes());
                }
            }
            Item::Report(r) => {
                first |= if r.loss { report::LOSS } else { 0 } | if r.measured { report::MEASURED } else { 0 };
                *b.get_mut(report::ROUND)? = r.round;
                put(b.get_mut(report::MEMBER)?, &r.member.to_be_bytes());
                put(b.get_mut(report::CALC)?, &rate_to_wire(r.calc).to_be_bytes());
                put(b.get_mut(report::RECV)?, &rate_to_wire(r.recv).to_be_bytes());
                put(b.get_mut(report::P)?, &r.p.to_be_bytes());
                put(b.get_mut(report::RTT)?, &r.rtt_us.to_be_bytes());
                put(b.get_mut(report::TS)?, &r.timestamp.to_be_bytes());
                put(b.get_mut(report::DELAY)?, &r.delay.to_be_bytes());
            }
        }
        *b.get_mut(NEXT)? = first;
        Some(rest)
    }
}

impl Elements {
    /// Encoded length in bytes of all present elements.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.items().map(|item| item.len()).sum()
    }

    /// The present elements in code order, the order emit writes them.
    fn items(&self) -> impl Iterator<Item = Item> {
        [
            self.connection.map(Item::Connection),
            self.ack.map(Item::Ack),
            self.membership.map(Item::Membership),
            self.timestamp.map(Item::Timestamp),
            self.address.map(Item::Address),
            self.key.map(Item::Key),
            self.rate.map(Item::Rate),
            self.report.map(Item::Report),
            self.auth.map(Item::Auth),
        ]
        .into_iter()
        .flatten()
    }

    /// Code of the first element emit writes, for the base header's Next Element (0 if none).
    pub(super) fn first_code(&self) -> u8 {
        self.items().next().map_or(END, |item| item.code())
    }

    /// Parses the element chain that starts with code `first` at the start of `buf`; returns the
    /// elements and the bytes after the last one (the user data).
    pub(super) fn parse(first: u8, buf: &[u8]) -> Result<(Elements, &[u8]), ParseError> {
        let mut elements = Elements::default();
        let mut code = first;
        let mut buf = buf;
        // Each round fills one more of nine slots or fails, so the loop ends.
        while code != END {
            if elements.has(code) {
                return Err(ParseError::DuplicateElement);
            }
            let (item, rest) = Item::parse(code, buf)?;
            code = buf.first().map_or(END, |b| b >> 4);
            buf = rest;
            match item {
                Item::Connection(c) => elements.connection = Some(c),
                Item::Ack(a) => elements.ack = Some(a),
                Item::Membership(m) => elements.membership = Some(m),
                Item::Timestamp(t) => elements.timestamp = Some(t),
                Item::Address(a) => elements.address = Some(a),
                Item::Key(k) => elements.key = Some(k),
                Item::Auth(a) => elements.auth = Some(a),
                Item::Rate(r) => elements.rate = Some(r),
                Item::Report(r) => elements.report = Some(r),
            }
        }
        Ok((elements, buf))
    }

    /// Whether the element with code `code` is already present (false for unknown codes).
    fn has(&self, code: u8) -> bool {
        match code {
            CONNECTION => self.connection.is_some(),
            ACK => self.ack.is_some(),
            MEMBERSHIP => self.membership.is_some(),
            TIMESTAMP => self.timestamp.is_some(),
            ADDRESS => self.address.is_some(),
            KEY => self.key.is_some(),
            AUTH => self.auth.is_some(),
            RATE => self.rate.is_some(),
            REPORT => self.report.is_some(),
            _ => false,
        }
    }

    /// Writes the chain at the start of `out`, each element's Next Element naming the one after it;
    /// returns the number of bytes written ([`Elements::len`]).
    pub(super) fn emit(&self, out: &mut [u8]) -> Result<usize, EmitError> {
        let mut items = self.items().peekable();
        let mut rest = out;
        while let Some(item) = items.next() {
            let next = items.peek().map_or(END, |n| n.code());
            rest = item.emit(next, rest).ok_or(EmitError::BufferTooSmall)?;
        }
        Ok(self.len())
    }
}

#[cfg(test)]
mod tests;
