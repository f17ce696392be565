//! The sending half of a data channel: segmentation of messages into DATA
//! packets of at most MSS bytes, PSN assignment and the flow-control window
//! (draft: "Forward data", "Backward data").
//!
//! The TO uses one for its multicast data; an SU uses one for the unicast data
//! it sends back with its token. Each message is copied once, into an
//! `Arc<[u8]>` that all its segments share; emitting a segment copies its bytes
//! into the caller's datagram buffer and allocates nothing.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::wire::{EmitError, Header, Packet, PacketType, Psn};

/// One DATA packet's worth of a message.
#[derive(Clone, Debug)]
struct Segment {
    psn: Psn,
    msg: Arc<[u8]>,
    start: usize,
    end: usize,
    /// Last segment of its message: carried as the F flag of DATA.
    last: bool,
}

/// Why a message could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The window is full: try again when packets have left or been acknowledged.
    WouldBlock,
    /// Empty, or longer than [`super::config::MAX_MESSAGE`].
    BadLength,
}

/// Segments, numbers and keeps the DATA of one sender.
#[derive(Debug)]
pub struct Sender {
    mss: usize,
    window: usize,
    token_id: u8,
    next_psn: Psn,
    /// Segments in PSN order: `[..unsent]` were sent and are kept for repair,
    /// `[unsent..]` wait for their first transmission.
    segments: VecDeque<Segment>,
    unsent: usize,
    /// Keep sent segments until acknowledged (reliable modes) or drop them.
    keep_sent: bool,
}

impl Sender {
    /// A sender whose first DATA will carry `isn`.
    pub fn new(isn: Psn, mss: u16, window: u32, token_id: u8, keep_sent: bool) -> Sender {
        Sender {
            mss: usize::from(mss.max(1)),
            window: window.max(1) as usize,
            token_id,
            next_psn: isn,
            segments: VecDeque::new(),
            unsent: 0,
            keep_sent,
        }
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

    /// Whether a message of `len` bytes fits the window now. A message larger
    /// than the whole window is let in when the window is empty, so that it
    /// can never block forever.
    pub fn has_room(&self, len: usize) -> bool {
        self.segments.is_empty() || self.segments.len() + self.segments_for(len) <= self.window
    }

    /// Queue one message; it is split into segments numbered from `next_psn`.
    pub fn queue(&mut self, msg: &[u8]) -> Result<(), QueueError> {
        if msg.is_empty() || msg.len() > super::config::MAX_MESSAGE {
            return Err(QueueError::BadLength);
        }
        if !self.has_room(msg.len()) {
            return Err(QueueError::WouldBlock);
        }
        let shared: Arc<[u8]> = Arc::from(msg);
        let mut start = 0;
        while start < msg.len() {
            let end = (start + self.mss).min(msg.len());
            self.segments.push_back(Segment {
                psn: self.next_psn,
                msg: Arc::clone(&shared),
                start,
                end,
                last: end == msg.len(),
            });
            self.next_psn = self.next_psn.next();
            start = end;
        }
        Ok(())
    }

    /// Whether some segment waits for its first transmission.
    pub fn has_unsent(&self) -> bool {
        self.unsent < self.segments.len()
    }

    /// Nothing queued and nothing kept.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Segments queued or kept: what counts against the window.
    pub fn in_window(&self) -> usize {
        self.segments.len()
    }

    /// Emit the next unsent segment as a DATA packet of connection `conn_id`
    /// into `out`. Returns the packet length, or None when all was sent.
    pub fn emit_next(&mut self, conn_id: u32, out: &mut [u8]) -> Option<Result<usize, EmitError>> {
        let seg = self.segments.get(self.unsent)?;
        let res = emit_segment(seg, PacketType::Data, conn_id, self.token_id, out);
        if self.keep_sent {
            self.unsent += 1;
        } else {
            self.segments.pop_front();
        }
        Some(res)
    }

    /// Emit the kept segment `psn` again as RDATA, if it is still kept.
    pub fn emit_repair(&self, psn: Psn, conn_id: u32, out: &mut [u8]) -> Option<Result<usize, EmitError>> {
        let first = self.segments.front()?.psn;
        let idx = usize::try_from(psn.diff(first)).ok()?;
        if idx >= self.unsent {
            return None;
        }
        let seg = self.segments.get(idx)?;
        Some(emit_segment(seg, PacketType::Rdata, conn_id, self.token_id, out))
    }

    /// Lowest PSN still kept for repair, or `next_psn` when none is.
    pub fn lowest_kept(&self) -> Psn {
        self.segments.front().map_or(self.next_psn, |s| s.psn)
    }

    /// Semi-reliable: forget the oldest sent segments until a message of
    /// `len` bytes fits, however unacknowledged they are. Returns whether
    /// it fits now (unsent segments are never dropped).
    pub fn make_room(&mut self, len: usize) -> bool {
        while !self.has_room(len) && self.unsent > 0 {
            self.segments.pop_front();
            self.unsent -= 1;
        }
        self.has_room(len)
    }

    /// PSN of the first segment not sent yet (`next_psn` when all were).
    pub fn first_unsent(&self) -> Psn {
        self.segments.get(self.unsent).map_or(self.next_psn, |s| s.psn)
    }

    /// Release every sent segment before `lsn`: all receivers have them.
    pub fn release_before(&mut self, lsn: Psn) {
        while self.unsent > 0 {
            match self.segments.front() {
                Some(s) if s.psn.is_before(lsn) => {
                    self.segments.pop_front();
                    self.unsent -= 1;
                }
                _ => break,
            }
        }
    }
}

fn emit_segment(seg: &Segment, ty: PacketType, conn_id: u32, token_id: u8, out: &mut [u8]) -> Result<usize, EmitError> {
    let mut header = Header::new(ty, conn_id);
    header.psn = seg.psn.0;
    header.flag = seg.last;
    header.token_id = token_id;
    let data = seg.msg.get(seg.start..seg.end).unwrap_or_default();
    Packet { header, elements: Default::default(), data }.emit(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: &mut Sender) -> Vec<(u32, bool, Vec<u8>)> {
        let token = s.token_id;
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        while let Some(r) = s.emit_next(42, &mut buf) {
            let n = r.unwrap();
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
        let mut s = Sender::new(Psn(u32::MAX - 1), 100, 64, 3, false);
        let msg: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
        s.queue(&msg).unwrap();
        s.queue(b"x").unwrap();
        let got = drain(&mut s);
        let psns: Vec<u32> = got.iter().map(|g| g.0).collect();
        assert_eq!(psns, vec![u32::MAX - 1, u32::MAX, 1, 2], "PSN wraps past 0");
        let flags: Vec<bool> = got.iter().map(|g| g.1).collect();
        assert_eq!(flags, vec![false, false, true, true]);
        let joined: Vec<u8> = got[..3].iter().flat_map(|g| g.2.clone()).collect();
        assert_eq!(joined, msg);
        assert!(s.is_empty(), "unreliable sender keeps nothing");
    }

    #[test]
    fn window_blocks_and_big_message_passes_when_empty() {
        let mut s = Sender::new(Psn(1), 10, 3, 0, true);
        assert_eq!(s.queue(&[1; 100]), Ok(()), "10 segments > window, but window empty");
        assert_eq!(s.queue(&[1; 5]), Err(QueueError::WouldBlock));
        assert_eq!(s.queue(&[]), Err(QueueError::BadLength));
        drain(&mut s);
        assert_eq!(s.in_window(), 10, "reliable sender keeps sent segments");
        let mut buf = [0u8; 64];
        let n = s.emit_repair(Psn(4), 42, &mut buf).unwrap().unwrap();
        let p = Packet::parse(&buf[..n]).unwrap();
        assert_eq!((p.header.packet_type, p.header.psn), (PacketType::Rdata, 4));
        s.release_before(Psn(11));
        assert!(s.is_empty());
        assert!(s.emit_repair(Psn(4), 42, &mut buf).is_none());
        assert_eq!(s.queue(&[1; 5]), Ok(()));
    }
}
