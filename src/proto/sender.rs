//! The sending half of a data channel: segmentation of messages into DATA
//! packets of at most MSS bytes, PSN assignment and the flow-control window
//! (draft: "Forward data", "Backward data").
//!
//! The TO uses one for its multicast data; an SU uses one for the unicast data
//! it sends back with its token. Each message is copied once, into an
//! `Arc<[u8]>` that all its segments share; emitting a segment copies its bytes
//! into the caller's datagram buffer and allocates nothing. What was sent is
//! kept, if at all, in a [`super::store::RepairStore`]; the window counts both.

use std::collections::VecDeque;
use std::sync::Arc;

use super::store::Segment;
use crate::wire::Psn;

/// Why a message could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The window is full: try again when packets have left or been acknowledged.
    WouldBlock,
    /// Empty, or longer than [`super::config::MAX_MESSAGE`].
    BadLength,
}

/// Segments and numbers the messages of one sender.
#[derive(Debug)]
pub struct Sender {
    mss: usize,
    window: usize,
    token_id: u8,
    next_psn: Psn,
    /// Segments waiting for their first transmission, in PSN order.
    unsent: VecDeque<Segment>,
}

impl Sender {
    /// A sender whose first DATA will carry `isn`, tagged with `token_id`
    /// (0 for the TO).
    pub fn new(isn: Psn, mss: u16, window: u32, token_id: u8) -> Sender {
        Sender {
            mss: usize::from(mss.max(1)),
            window: window.max(1) as usize,
            token_id,
            next_psn: isn,
            unsent: VecDeque::new(),
        }
    }

    /// The token id its DATA carries.
    pub fn token_id(&self) -> u8 {
        self.token_id
    }

    /// The PSN the next new segment will get.
    pub fn next_psn(&self) -> Psn {
        self.next_psn
    }

    /// PSN of the last segment handed out (the one before `next_psn`).
    pub fn last_psn(&self) -> Psn {
        self.next_psn.sub(1)
    }

    /// Number of segments `len` bytes make.
    fn segments_for(&self, len: usize) -> usize {
        len.div_ceil(self.mss)
    }

    /// Whether a message of `len` bytes fits the window now, with `kept`
    /// segments sent and kept for repair. A message larger than the whole
    /// window is let in when the window is empty, so that it can never block
    /// forever.
    pub fn has_room(&self, len: usize, kept: usize) -> bool {
        let used = self.unsent.len() + kept;
        used == 0 || used + self.segments_for(len) <= self.window
    }

    /// Queue one message; it is split into segments numbered from `next_psn`.
    pub fn queue(&mut self, msg: &[u8], kept: usize) -> Result<(), QueueError> {
        if msg.is_empty() || msg.len() > super::config::MAX_MESSAGE {
            return Err(QueueError::BadLength);
        }
        if !self.has_room(msg.len(), kept) {
            return Err(QueueError::WouldBlock);
        }
        let shared: Arc<[u8]> = Arc::from(msg);
        let mut start = 0;
        while start < msg.len() {
            let end = (start + self.mss).min(msg.len());
            self.unsent.push_back(Segment::new(self.next_psn, end == msg.len(), Arc::clone(&shared), start, end));
            self.next_psn = self.next_psn.next();
            start = end;
        }
        Ok(())
    }

    /// Whether some segment waits for its first transmission.
    pub fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Segments waiting for their first transmission.
    pub fn unsent(&self) -> usize {
        self.unsent.len()
    }

    /// Bytes of user data of the next segment to send for the first time.
    pub fn next_unsent_len(&self) -> Option<usize> {
        self.unsent.front().map(|s| s.data().len())
    }

    /// The next segment to send for the first time.
    pub fn next_unsent(&mut self) -> Option<Segment> {
        self.unsent.pop_front()
    }

    /// PSN of the first segment not sent yet (`next_psn` when all were).
    pub fn first_unsent(&self) -> Psn {
        self.unsent.front().map_or(self.next_psn, |s| s.psn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Packet, PacketType};

    fn drain(s: &mut Sender) -> Vec<(u32, bool, Vec<u8>)> {
        let token = s.token_id();
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        while let Some(seg) = s.next_unsent() {
            let n = seg.emit(PacketType::Data, 42, token, &mut buf).unwrap();
            let p = Packet::parse(&buf[..n]).unwrap();
            assert_eq!(p.header.packet_type, PacketType::Data);
            assert_eq!(p.header.connection_id, 42);
            assert_eq!(p.header.token_id, token);
            got.push((p.header.psn, p.header.flag, p.data.to_vec()));
        }
        got
    }

    #[test]
    fn segments_at_mss_and_marks_last() {
        let mut s = Sender::new(Psn(u32::MAX - 1), 100, 64, 3);
        let msg: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
        s.queue(&msg, 0).unwrap();
        s.queue(b"x", 0).unwrap();
        let got = drain(&mut s);
        let psns: Vec<u32> = got.iter().map(|g| g.0).collect();
        assert_eq!(psns, vec![u32::MAX - 1, u32::MAX, 1, 2], "PSN wraps past 0");
        let flags: Vec<bool> = got.iter().map(|g| g.1).collect();
        assert_eq!(flags, vec![false, false, true, true]);
        let joined: Vec<u8> = got[..3].iter().flat_map(|g| g.2.clone()).collect();
        assert_eq!(joined, msg);
        assert!(!s.has_unsent());
    }

    #[test]
    fn window_counts_kept_segments_and_big_message_passes_when_empty() {
        let mut s = Sender::new(Psn(1), 10, 3, 0);
        assert_eq!(s.queue(&[1; 100], 0), Ok(()), "10 segments > window, but window empty");
        assert_eq!(s.queue(&[1; 5], 0), Err(QueueError::WouldBlock));
        assert_eq!(s.queue(&[], 0), Err(QueueError::BadLength));
        assert_eq!(drain(&mut s).len(), 10);
        assert_eq!(s.queue(&[1; 5], 10), Err(QueueError::WouldBlock), "10 kept for repair");
        assert_eq!(s.queue(&[1; 5], 2), Ok(()));
        assert_eq!(s.first_unsent(), Psn(11));
    }
}
