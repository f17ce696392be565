//! Counters kept by each endpoint: what was sent, received, dropped and why.

use crate::wire::{Packet, ParseError};

/// What an endpoint counted. Every datagram that is dropped is counted in
/// exactly one of the `dropped_*` fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams sent.
    pub packets_sent: u64,
    /// Datagrams received (before any check).
    pub packets_received: u64,
    /// DATA packets sent for the first time.
    pub data_sent: u64,
    /// DATA and RDATA packets received that were new.
    pub data_received: u64,
    /// RDATA packets sent (repairs).
    pub rdata_sent: u64,
    /// DATA/RDATA received again (already had it).
    pub duplicates: u64,
    /// Dropped as malformed, by reason (indexed by [`ParseError::index`]).
    pub dropped_malformed: [u64; 9],
    /// Dropped: well formed, but of another connection.
    pub dropped_foreign: u64,
    /// Dropped: well formed, but not expected from that sender in this state.
    pub dropped_unexpected: u64,
    /// Dropped: from an address that may not send it (not the TO's or the
    /// parent's exact address, not a member, not a child).
    pub dropped_source: u64,
    /// Dropped: user data longer than the MSS, user data on a control
    /// packet, or a request shorter than its answer would be.
    pub dropped_length: u64,
    /// Dropped: a sequence number, or a jump it would cause, out of what the
    /// window allows.
    pub dropped_range: u64,
    /// Dropped (keyed connection): no authentication element, or a tag that
    /// does not verify.
    pub dropped_auth: u64,
    /// Dropped (keyed connection): a replay of a packet received already.
    pub dropped_replay: u64,
    /// Whole messages delivered to the application.
    pub messages_delivered: u64,
    /// Messages delivered with the gap flag (data was given up before them).
    pub gaps: u64,
    /// Control requests sent again after RXT without an answer.
    pub retransmissions: u64,
    /// Datagrams dropped on purpose by the loss-injection testing aid.
    pub dropped_injected: u64,
    /// In-order DATA or RDATA not taken because the application's queue was
    /// full (a TU whose application does not read).
    pub dropped_full: u64,
    /// TFMCC: HBs sent to announce the rate (TO).
    pub rate_announcements: u64,
    /// TFMCC: rate reports sent (a TU's own and those it passed up as a
    /// repair agent; the TO's to an SU).
    pub rate_reports: u64,
    /// User-data bytes of the DATA sent for the first time.
    pub bytes_sent: u64,
    /// User-data bytes of the new DATA and RDATA received.
    pub bytes_received: u64,
    /// Acknowledgements sent that ask for a repair (they report a hole):
    /// a TU's ACKs to its parent, the TO's HBACKs to an SU.
    pub repairs_requested: u64,
    /// TO: members that entered the control tree, wherever in it.
    pub members_joined: u64,
    /// TO: members that left (ULR from the TU).
    pub members_left: u64,
    /// TO: members ejected by the application (`mleave` on the TO).
    pub members_ejected: u64,
    /// TO: members taken for dead or lost with their subtree, and slow
    /// receivers ejected by ECTP_SLOW_TIMEOUT.
    pub members_failed: u64,
}

/// What became of one received, well-formed datagram: taken, or dropped for
/// one reason (counted in exactly one `dropped_*` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Taken (it may still have changed nothing, as a duplicate).
    Taken,
    /// Not expected from that sender in this state.
    Unexpected,
    /// From an address that may not send it.
    Source,
    /// A bad length.
    Length,
    /// Out of the window's range.
    Range,
    /// Authentication missing or failed.
    Auth,
    /// A replay.
    Replay,
}

impl From<bool> for Outcome {
    fn from(taken: bool) -> Outcome {
        if taken { Outcome::Taken } else { Outcome::Unexpected }
    }
}

impl Stats {
    /// Count a datagram that was not taken.
    pub(crate) fn record(&mut self, o: Outcome) {
        let c = match o {
            Outcome::Taken => return,
            Outcome::Unexpected => &mut self.dropped_unexpected,
            Outcome::Source => &mut self.dropped_source,
            Outcome::Length => &mut self.dropped_length,
            Outcome::Range => &mut self.dropped_range,
            Outcome::Auth => &mut self.dropped_auth,
            Outcome::Replay => &mut self.dropped_replay,
        };
        *c += 1;
    }

    /// Count a received datagram and parse it; a malformed one is counted
    /// by reason and dropped.
    pub fn parse<'a>(&mut self, datagram: &'a [u8]) -> Option<Packet<'a>> {
        self.packets_received += 1;
        Packet::parse(datagram).map_err(|e| self.malformed(e)).ok()
    }

    /// Count one malformed datagram.
    pub fn malformed(&mut self, e: ParseError) {
        if let Some(c) = self.dropped_malformed.get_mut(e.index()) {
            *c += 1;
        }
    }

    /// Every malformed datagram, whatever the reason.
    pub fn dropped_malformed_total(&self) -> u64 {
        self.dropped_malformed.iter().sum()
    }
}
