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
    /// Whole messages delivered to the application.
    pub messages_delivered: u64,
    /// Messages delivered with the gap flag (data was given up before them).
    pub gaps: u64,
    /// Control requests sent again after RXT without an answer.
    pub retransmissions: u64,
    /// Datagrams dropped on purpose by the loss-injection testing aid.
    pub dropped_injected: u64,
}

impl Stats {
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
