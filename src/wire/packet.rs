//! The base header, the packet types, and parsing and emitting a whole packet.
//!
//! draft-dykim-ectp-00 §5.1 defines the 16-byte base header, §5.3 (Table 2) the 18 packet types.
//! The draft leaves the packet type codes open; the project numbers them 1..=18 in Table 2 order
//! (`docs/wire-format.md`). Layout, network byte order:
//!
//! ```text
//!  0       1       2       3       4               8              12      14      15
//! +-------+-------+-------+-------+---------------+---------------+-------+-------+-------+
//! |NE|V|CT| Type  |   Checksum    | Connection ID |      PSN      |PayLen |F|rsvd | Token |
//! +-------+-------+-------+-------+---------------+---------------+-------+-------+-------+
//! ```
//!
//! Byte 0 is Next Element (high 4 bits) | Version (2 bits, 0) | CT (low 2 bits, binary 10 =
//! duplex). Payload Length counts every byte after the base header (elements and user data).

use core::fmt;

use super::checksum;
use super::element::{AUTH_LEN, Elements, TAG_LEN};
use super::{array, put};

/// Length in bytes of the ECTP base header (draft-dykim-ectp-00 §5.1).
pub const HEADER_LEN: usize = 16;

/// Byte offsets of the base header fields.
mod field {
    use core::ops::Range;
    /// Next Element << 4 | Version << 2 | CT.
    pub const NE_VER_CT: usize = 0;
    pub const PACKET_TYPE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const CONNECTION_ID: Range<usize> = 4..8;
    pub const PSN: Range<usize> = 8..12;
    pub const PAYLOAD_LEN: Range<usize> = 12..14;
    /// F in the most significant bit; the other 7 bits are reserved.
    pub const FLAGS: usize = 14;
    pub const TOKEN_ID: usize = 15;
}

/// The only protocol version (§5.1: "Its current version is encoded as '00'").
const VERSION: u8 = 0b00;
/// CT for a duplex multicast connection, ECTP-3 (§5.1: "the CT must be set as 10").
const CT_DUPLEX: u8 = 0b10;
/// The F flag in the flags byte.
const F_BIT: u8 = 0x80;

/// The 18 ECTP-3 packet types (draft-dykim-ectp-00 §5.3, Table 2), with the project's codes.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// Connection Creation Request (TO → TUs, multicast).
    Ccr = 1,
    /// Connection Creation Confirm (TU → TO).
    Ccc = 2,
    /// Tree Join Request (child → parent).
    Tjr = 3,
    /// Tree Join Confirm (parent → child).
    Tjc = 4,
    /// Data (TO → TUs multicast, SU → TO unicast).
    Data = 5,
    /// Null Data, sent while the TO pauses (TO → TUs, multicast).
    Ndata = 6,
    /// Retransmission Data (parent → children multicast, SU → TO unicast).
    Rdata = 7,
    /// Acknowledgement (child → parent).
    Ack = 8,
    /// Heartbeat (parent → children multicast, SU → TO unicast).
    Hb = 9,
    /// Heartbeat Acknowledgement (child → parent, TO → SU).
    Hback = 10,
    /// Late Join Request (TU → TO).
    Ljr = 11,
    /// Late Join Confirm (TO → TU).
    Ljc = 12,
    /// User Leave Request (child → parent to leave, parent → child to eject).
    Ulr = 13,
    /// Connection Termination Request (TO → TUs, multicast).
    Ctr = 14,
    /// Token Get Request (SU → TO, or TO → TU when the TO gives a token).
    Tgr = 15,
    /// Token Get Confirm (answer to TGR).
    Tgc = 16,
    /// Token Return Request (SU → TO, or TO → SU to withdraw a token).
    Trr = 17,
    /// Token Return Confirm (answer to TRR).
    Trc = 18,
}

impl PacketType {
    /// Every packet type, in code order.
    pub const ALL: [PacketType; 18] = [
        PacketType::Ccr,
        PacketType::Ccc,
        PacketType::Tjr,
        PacketType::Tjc,
        PacketType::Data,
        PacketType::Ndata,
        PacketType::Rdata,
        PacketType::Ack,
        PacketType::Hb,
        PacketType::Hback,
        PacketType::Ljr,
        PacketType::Ljc,
        PacketType::Ulr,
        PacketType::Ctr,
        PacketType::Tgr,
        PacketType::Tgc,
        PacketType::Trr,
        PacketType::Trc,
    ];

    /// The packet type with code `v`; `None` for 0 and 19..=255.
    pub fn from_u8(v: u8) -> Option<PacketType> {
        PacketType::ALL.into_iter().find(|t| *t as u8 == v)
    }

    /// The draft's acronym: "CCR", "DATA", "HBACK", ...
    pub fn name(self) -> &'static str {
        match self {
            PacketType::Ccr => "CCR",
            PacketType::Ccc => "CCC",
            PacketType::Tjr => "TJR",
            PacketType::Tjc => "TJC",
            PacketType::Data => "DATA",
            PacketType::Ndata => "NDATA",
            PacketType::Rdata => "RDATA",
            PacketType::Ack => "ACK",
            PacketType::Hb => "HB",
            PacketType::Hback => "HBACK",
            PacketType::Ljr => "LJR",
            PacketType::Ljc => "LJC",
            PacketType::Ulr => "ULR",
            PacketType::Ctr => "CTR",
            PacketType::Tgr => "TGR",
            PacketType::Tgc => "TGC",
            PacketType::Trr => "TRR",
            PacketType::Trc => "TRC",
        }
    }
}

/// The base header fields a sender chooses (draft-dykim-ectp-00 §5.1).
///
/// Next Element, Version, CT, Checksum and Payload Length are not here: [`Packet::emit`] derives
/// them and [`Packet::parse`] checks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Packet Type.
    pub packet_type: PacketType,
    /// Connection ID, chosen by the TO and announced in CCR and LJC; every packet carries it.
    pub connection_id: u32,
    /// Raw PSN field (meaning depends on the packet type; 0 allowed where not a DATA PSN).
    pub psn: u32,
    /// The F flag; its meaning depends on the packet type (§5.1, and `docs/wire-format.md`).
    pub flag: bool,
    /// Token ID: in DATA and RDATA, 0 from the TO, else the sending SU's token (1..=255).
    pub token_id: u8,
}

impl Header {
    /// A header of type `packet_type` on connection `connection_id`, with PSN 0, F clear and
    /// Token ID 0.
    pub fn new(packet_type: PacketType, connection_id: u32) -> Header {
        Header { packet_type, connection_id, psn: 0, flag: false, token_id: 0 }
    }
}

/// One ECTP-3 packet (one UDP datagram): base header, extension elements and user data.
///
/// `data` borrows from the parsed buffer; nothing is copied or allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The base header.
    pub header: Header,
    /// The extension elements.
    pub elements: Elements,
    /// The user data after the last element (possibly empty).
    pub data: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Parse untrusted bytes (one UDP datagram = one packet). Checks, in this order: length >= 16
    /// (Truncated); version 0 (BadVersion); CT == 0b10 (BadConnectionType); payload length field ==
    /// buf.len()-16 (LengthMismatch); checksum (BadChecksum); packet type known
    /// (UnknownPacketType); then the element chain (UnknownElement, DuplicateElement, Truncated if
    /// an element runs past the end, BadElement for invalid field values such as TCO/RO codes 3,
    /// an address family byte other than 4/6, or ACK bitmap padding bits that are not zero); the
    /// rest is `data`.
    ///
    /// The reserved bits of the header and elements are ignored. Which elements the packet type
    /// should carry is not checked here.
    pub fn parse(buf: &'a [u8]) -> Result<Packet<'a>, ParseError> {
        let (hdr, payload) = buf.split_first_chunk::<HEADER_LEN>().ok_or(ParseError::Truncated)?;
        let first = hdr[field::NE_VER_CT];
        if (first >> 2) & 0b11 != VERSION {
            return Err(ParseError::BadVersion);
        }
        if first & 0b11 != CT_DUPLEX {
            return Err(ParseError::BadConnectionType);
        }
        let payload_len = u16::from_be_bytes(array(&hdr[field::PAYLOAD_LEN]));
        if usize::from(payload_len) != payload.len() {
            return Err(ParseError::LengthMismatch);
        }
        if !checksum::verify(buf) {
            return Err(ParseError::BadChecksum);
        }
        let packet_type = PacketType::from_u8(hdr[field::PACKET_TYPE]).ok_or(ParseError::UnknownPacketType)?;
        let (elements, data) = Elements::parse(first >> 4, payload)?;
        let header = Header {
            packet_type,
            connection_id: u32::from_be_bytes(array(&hdr[field::CONNECTION_ID])),
            psn: u32::from_be_bytes(array(&hdr[field::PSN])),
            flag: hdr[field::FLAGS] & F_BIT != 0,
            token_id: hdr[field::TOKEN_ID],
        };
        Ok(Packet { header, elements, data })
    }

    /// Bytes emit() will write.
    #[allow(clippy::len_without_is_empty)] // a packet is never empty: it has a 16-byte header
    pub fn len(&self) -> usize {
        HEADER_LEN.saturating_add(self.elements.len()).saturating_add(self.data.len())
    }

    /// Write the packet (header, elements in code order connection, ack, membership, timestamp,
    /// address; then data), fill payload length and checksum. Err(EmitError::BufferTooSmall) if
    /// out is short, Err(EmitError::TooLong) if the payload exceeds u16::MAX.
    ///
    /// Returns the number of bytes written, [`Packet::len`]; bytes of `out` after them are left
    /// untouched. Version is 0, CT binary 10, reserved bits 0.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, EmitError> {
        // An Authentication element is written as it is, tag included.
        let tag = self.elements.auth.map_or([0; TAG_LEN], |a| a.tag);
        self.emit_sealed(out, |_, _| tag)
    }

    /// [`Packet::emit`] for a keyed connection: after the packet is written with the checksum
    /// and the tag of its Authentication element zero, `seal` gets the bytes before the user data
    /// (base header and elements: what the tag authenticates as associated data) and the user
    /// data, which it encrypts in place, and returns the tag; then the checksum is computed over
    /// the result. Without an Authentication element `seal` is not called.
    pub fn emit_sealed(
        &self,
        out: &mut [u8],
        seal: impl FnOnce(&[u8], &mut [u8]) -> [u8; TAG_LEN],
    ) -> Result<usize, EmitError> {
        let elements_len = self.elements.len();
        let payload_len = elements_len.saturating_add(self.data.len());
        let payload_len16 = u16::try_from(payload_len).map_err(|_| EmitError::TooLong)?;
        let total = HEADER_LEN + payload_len;
        let out = out.get_mut(..total).ok_or(EmitError::BufferTooSmall)?;
        let (hdr, payload) = out.split_first_chunk_mut::<HEADER_LEN>().ok_or(EmitError::BufferTooSmall)?;

        let h = &self.header;
        hdr[field::NE_VER_CT] = self.elements.first_code() << 4 | VERSION << 2 | CT_DUPLEX;
        hdr[field::PACKET_TYPE] = h.packet_type as u8;
        put(&mut hdr[field::CHECKSUM], &[0, 0]);
        put(&mut hdr[field::CONNECTION_ID], &h.connection_id.to_be_bytes());
        put(&mut hdr[field::PSN], &h.psn.to_be_bytes());
        put(&mut hdr[field::PAYLOAD_LEN], &payload_len16.to_be_bytes());
        hdr[field::FLAGS] = if h.flag { F_BIT } else { 0 };
        hdr[field::TOKEN_ID] = h.token_id;

        let (elements, data) = payload.split_at_mut_checked(elements_len).ok_or(EmitError::BufferTooSmall)?;
        self.elements.emit(elements)?;
        put(data, self.data);
        if self.elements.auth.is_some() {
            let (aad, data) = out.split_at_mut(HEADER_LEN + elements_len);
            let tag_at = aad.len().saturating_sub(TAG_LEN);
            put(aad.get_mut(tag_at..).unwrap_or_default(), &[0; TAG_LEN]);
            let tag = seal(aad, data);
            put(aad.get_mut(tag_at..).unwrap_or_default(), &tag);
        }

        let sum = checksum::internet_checksum(out);
        put(out.get_mut(field::CHECKSUM).ok_or(EmitError::BufferTooSmall)?, &sum.to_be_bytes());
        Ok(total)
    }
}

/// The parts of a keyed packet, for opening it: `buf` is a copy of the datagram that parsed as
/// `p` (with an Authentication element, the last one). Zeroes its checksum and its tag and splits
/// it into the bytes before the user data (associated data) and the user data, as
/// [`Packet::emit_sealed`] gave them to its sealer. `None` if `p` has no Authentication element
/// or `buf` is not its datagram.
pub fn sealed_parts<'b>(buf: &'b mut [u8], p: &Packet<'_>) -> Option<(&'b [u8], &'b mut [u8])> {
    p.elements.auth?;
    let data_at = HEADER_LEN + p.elements.len();
    if buf.len() != data_at + p.data.len() || data_at < HEADER_LEN + AUTH_LEN {
        return None;
    }
    put(buf.get_mut(field::CHECKSUM)?, &[0, 0]);
    let (aad, data) = buf.split_at_mut(data_at);
    put(aad.get_mut(data_at - TAG_LEN..)?, &[0; TAG_LEN]);
    Some((aad, data))
}

/// Why [`Packet::parse`] rejected a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// Shorter than the base header, or an element runs past the end of the datagram.
    Truncated,
    /// Version field is not 0.
    BadVersion,
    /// CT field is not binary 10 (duplex, ECTP-3).
    BadConnectionType,
    /// Payload Length field disagrees with the datagram length.
    LengthMismatch,
    /// Checksum does not verify.
    BadChecksum,
    /// Packet Type is not one of the 18 codes.
    UnknownPacketType,
    /// A Next Element code names no supported element (5 = QoS, 7..=15).
    UnknownElement,
    /// The same element appears twice.
    DuplicateElement,
    /// An element field holds an invalid value (TCO or RO code, address family, ACK padding).
    BadElement,
}

impl ParseError {
    /// Every parse error, in [`ParseError::index`] order.
    pub const ALL: [ParseError; 9] = [
        ParseError::Truncated,
        ParseError::BadVersion,
        ParseError::BadConnectionType,
        ParseError::LengthMismatch,
        ParseError::BadChecksum,
        ParseError::UnknownPacketType,
        ParseError::UnknownElement,
        ParseError::DuplicateElement,
        ParseError::BadElement,
    ];

    /// Position in [`ParseError::ALL`], 0..9: an index into an array of counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Short name for statistics and logs, e.g. "truncated", "bad_checksum".
    pub fn name(self) -> &'static str {
        match self {
            ParseError::Truncated => "truncated",
            ParseError::BadVersion => "bad_version",
            ParseError::BadConnectionType => "bad_connection_type",
            ParseError::LengthMismatch => "length_mismatch",
            ParseError::BadChecksum => "bad_checksum",
            ParseError::UnknownPacketType => "unknown_packet_type",
            ParseError::UnknownElement => "unknown_element",
            ParseError::DuplicateElement => "duplicate_element",
            ParseError::BadElement => "bad_element",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Truncated => "packet truncated",
            ParseError::BadVersion => "unsupported ECTP version",
            ParseError::BadConnectionType => "connection type is not duplex (ECTP-3)",
            ParseError::LengthMismatch => "payload length field disagrees with packet length",
            ParseError::BadChecksum => "bad checksum",
            ParseError::UnknownPacketType => "unknown packet type",
            ParseError::UnknownElement => "unknown extension element",
            ParseError::DuplicateElement => "duplicate extension element",
            ParseError::BadElement => "invalid extension element field",
        })
    }
}

impl std::error::Error for ParseError {}

/// Why [`Packet::emit`] could not write a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmitError {
    /// The output buffer is shorter than [`Packet::len`].
    BufferTooSmall,
    /// Elements and data exceed the 16-bit Payload Length field (65535 bytes).
    TooLong,
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EmitError::BufferTooSmall => "output buffer too small for packet",
            EmitError::TooLong => "packet payload longer than 65535 bytes",
        })
    }
}

impl std::error::Error for EmitError {}

#[cfg(test)]
mod tests;
