//! The sans-IO protocol core: the TO ([`Owner`]) and TU ([`User`]) state
//! machines of ECTP-3.
//!
//! Nothing here touches a socket, a thread or a clock. A driver calls, in this
//! order, as in quinn-proto:
//!
//! 1. `handle(now, from, datagram)` for each received datagram, and
//!    `handle_timeout(now)` when the deadline from `poll_timeout` has passed;
//! 2. `poll_transmit(now, buf)` until it returns `None`, sending each datagram
//!    to its [`Dest`];
//! 3. `poll_event()` (TO) until `None`, handing the events to the application;
//! 4. `poll_timeout()` for the next deadline, and sleeps until then or until
//!    a datagram or an application call arrives.
//!
//! Application calls (`send`, `recv`, `confirm_join`, `request_token`...)
//! change the state directly; the driver must then run steps 2 to 4 again.

mod ack;
mod cc;
mod child;
mod config;
mod crypto;
mod keyring;
mod members;
mod node;
mod owner;
mod parent;
mod ra;
mod receiver;
mod retry;
mod rng;
pub mod scale;
mod sender;
pub mod sim;
#[cfg(test)]
mod sim_attack_tests;
#[cfg(test)]
mod sim_control_review_tests;
#[cfg(test)]
mod sim_control_tests;
#[cfg(test)]
mod sim_key_tests;
#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod sim_tree_tests;
mod stats;
mod store;
mod su;
mod timer;
mod tokens;
mod user;

use std::collections::VecDeque;
use std::net::SocketAddr;

pub use cc::CcMode;
pub use config::{
    Config, DEFAULT_MSS, DEFAULT_RA_CHILDREN, DEFAULT_TO_CHILDREN, MAX_CHILDREN, MAX_MESSAGE, MAX_WINDOW, MSS_RANGE,
};
pub use crypto::Security;
pub use node::Node;
pub use owner::{Incoming, MIN_KEYED_REQUEST, MIN_REQUEST, MemberInfo, Owner, OwnerError};
pub use receiver::{Accept, Message, Receiver};
pub use rng::Rng;
pub use sender::{QueueError, Sender};
pub use stats::Stats;
pub use store::{RepairStore, Segment};
pub use tokens::TokenOp;
pub use user::{End, JoinStatus, TokenStatus, User, UserError};

use retry::Repeats;
use timer::TimerTable;

use crate::wire::{self, Elements, Header, Packet};

/// Where a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dest {
    /// The multicast group: group IP and group port (forward channel).
    Group,
    /// One unicast address.
    Unicast(SocketAddr),
}

/// A datagram written by `poll_transmit` into the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub dest: Dest,
    /// Its length in the buffer.
    pub len: usize,
}

/// An application event of the TO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A TU asks to join; answer with [`Owner::confirm_join`].
    JoinRequest {
        /// The member id the TU will have.
        user_id: u32,
        /// Its unicast address.
        addr: SocketAddr,
    },
    /// A member asks for a token; answer with [`Owner::confirm_token`].
    TokenRequest {
        /// The member asking.
        user_id: u32,
        /// Its unicast address.
        addr: SocketAddr,
    },
    /// A member stopped being one, wherever it was in the tree; reported
    /// once per member.
    Left {
        /// The member.
        user_id: u32,
        /// Why.
        reason: LeaveReason,
    },
}

/// Why a member stopped being one (and, on the wire, the PSN field of a
/// repair agent's departure report, see `docs/tree.md`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveReason {
    /// It left (`mleave` on the TU: ULR with F=1).
    Left = 1,
    /// The TO ejected it (`mleave` on the TO).
    Ejected = 2,
    /// It fell silent for FDN x HGT, or its subtree was lost (it did not
    /// rebind in time after its parent died).
    Failed = 3,
}

impl LeaveReason {
    /// What happened, for a log line ("member 7 at ... left").
    pub fn describe(self) -> &'static str {
        match self {
            LeaveReason::Left => "left",
            LeaveReason::Ejected => "was ejected",
            LeaveReason::Failed => "failed (silent, or its subtree was lost)",
        }
    }

    /// The reason with wire code `v`.
    pub fn from_u8(v: u8) -> Option<LeaveReason> {
        match v {
            1 => Some(LeaveReason::Left),
            2 => Some(LeaveReason::Ejected),
            3 => Some(LeaveReason::Failed),
            _ => None,
        }
    }
}

/// A control packet waiting to be sent: no user data, so it is kept by value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ctl {
    pub dest: Dest,
    pub header: Header,
    pub elements: Elements,
    /// Shortest length of the datagram as sent (with its Authentication
    /// element on a keyed connection): zero bytes of padding are added as
    /// user data up to it (join requests, see `owner::MIN_REQUEST`).
    pub min_len: usize,
    /// User data of a control packet: the link key in a repair agent's
    /// admission notice (encrypted, as every user data of a keyed connection).
    pub payload: Option<[u8; 32]>,
}

/// Zeros for padding.
static PADDING: [u8; 256] = [0; 256];

impl Ctl {
    pub(crate) fn new(dest: Dest, header: Header) -> Ctl {
        Ctl { dest, header, elements: Elements::default(), min_len: 0, payload: None }
    }

    /// Pad it to at least `len` bytes.
    pub(crate) fn padded(self, len: usize) -> Ctl {
        Ctl { min_len: len, ..self }
    }

    /// The packet, its user data the payload or the padding up to
    /// `min_len`, with `auth` bytes of Authentication element still to come.
    fn packet(&self, auth: usize) -> Packet<'_> {
        let bare = wire::HEADER_LEN + self.elements.len() + auth;
        let data = match &self.payload {
            Some(p) => &p[..],
            None => PADDING.get(..self.min_len.saturating_sub(bare)).unwrap_or(&PADDING),
        };
        Packet { header: self.header, elements: self.elements, data }
    }
}

/// What every role of a node writes to: the control packets to send, the
/// timers, the repeated packets, the counters, and the keys of a keyed
/// connection, through which every packet goes out and comes in.
#[derive(Debug, Default)]
pub(crate) struct Io {
    /// Control packets waiting for `poll_transmit`, in order.
    pub ctl: VecDeque<Ctl>,
    /// The node's deadlines.
    pub timers: TimerTable,
    /// Packets sent several times.
    pub repeats: Repeats,
    /// What the node counted.
    pub stats: Stats,
    /// ECTP_GROUP_KEY: the keys. `None`: packets are neither sealed nor opened.
    pub keys: Option<Box<keyring::Keyring>>,
    /// Where keyed packets are opened.
    scratch: Vec<u8>,
}

impl Io {
    /// Emit the next control packet into `buf`, counting it. A packet that
    /// cannot be sealed (no key for its destination any more) is skipped.
    pub(crate) fn poll_ctl(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(ctl) = self.ctl.pop_front() {
            let auth = if self.keys.is_some() { wire::AUTH_LEN } else { 0 };
            if let Some(t) = self.send(ctl.packet(auth), ctl.dest, buf) {
                return Some(t);
            }
        }
        None
    }

    /// Write `packet` to `dest` into `buf` (sealed on a keyed connection),
    /// counting it; `None` if it cannot be written.
    pub(crate) fn send(&mut self, packet: Packet<'_>, dest: Dest, buf: &mut [u8]) -> Option<Transmit> {
        let len = match self.keys.as_mut() {
            Some(k) => k.emit(packet, dest, buf)?,
            None => match packet.emit(buf) {
                Ok(len) => len,
                Err(e) => {
                    log::error!("cannot emit {:?}: {e}", packet.header.packet_type);
                    return None;
                }
            },
        };
        self.stats.packets_sent += 1;
        Some(Transmit { dest, len })
    }

    /// Take the buffer keyed packets are opened in (give it back with
    /// [`Io::put_scratch`]), so that the packet may borrow it while the node
    /// handles it.
    pub(crate) fn take_scratch(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.scratch)
    }

    pub(crate) fn put_scratch(&mut self, scratch: Vec<u8>) {
        self.scratch = scratch;
    }

    /// A received packet `p`, parsed from `datagram`, as the node may take it:
    /// on a keyed connection verified, fresh and decrypted into `scratch`;
    /// otherwise as it is, unless it carries an Authentication element. A
    /// packet dropped is counted.
    pub(crate) fn open<'a>(
        &mut self,
        now: std::time::Instant,
        from: SocketAddr,
        p: Packet<'a>,
        datagram: &'a [u8],
        scratch: &'a mut Vec<u8>,
    ) -> Option<Packet<'a>> {
        let Some(keys) = self.keys.as_mut() else {
            if p.elements.auth.is_some() {
                self.stats.record(stats::Outcome::Auth);
                return None;
            }
            return Some(p);
        };
        match keys.open(now, from, &p, datagram, scratch) {
            Ok(p) => Some(p),
            Err(stats::Outcome::Taken) => None,
            Err(o) => {
                self.stats.record(o);
                None
            }
        }
    }

    /// Send `ctl` now and every `interval` until stopped, `limit` times in
    /// all (see [`Repeats::start`]).
    pub(crate) fn repeat(
        &mut self,
        key: retry::Key,
        ctl: Ctl,
        limit: u32,
        interval: std::time::Duration,
        now: std::time::Instant,
    ) {
        self.repeats.start(key, ctl, limit, interval, now, &mut self.ctl);
        self.timers.set_opt(timer::Timer::Repeat, self.repeats.next());
    }

    /// [`Io::repeat`] with the interval doubling after each copy, up to `max`.
    pub(crate) fn repeat_growing(
        &mut self,
        key: retry::Key,
        ctl: Ctl,
        limit: u32,
        interval: std::time::Duration,
        max: std::time::Duration,
        now: std::time::Instant,
    ) {
        self.repeats.start_growing(key, ctl, limit, interval, max, now, &mut self.ctl);
        self.timers.set_opt(timer::Timer::Repeat, self.repeats.next());
    }

    /// Stop repeating `key` (its answer came). Returns whether it was running.
    pub(crate) fn stop_repeat(&mut self, key: retry::Key) -> bool {
        let running = self.repeats.stop(key);
        self.timers.set_opt(timer::Timer::Repeat, self.repeats.next());
        running
    }

    /// Queue the repeated packets due at `now`; returns the keys that ran out.
    pub(crate) fn poll_repeats(&mut self, now: std::time::Instant) -> Vec<retry::Key> {
        let done = self.repeats.poll(now, &mut self.ctl, &mut self.stats.retransmissions);
        self.timers.set_opt(timer::Timer::Repeat, self.repeats.next());
        done
    }
}

/// Largest datagram the core ever emits: the base header, the largest set of
/// elements, and an MSS of at most `MSS_RANGE.1`. Buffers passed to
/// `poll_transmit` must have at least this many bytes.
pub const MAX_DATAGRAM: usize = 65535;
