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
mod config;
mod owner;
mod receiver;
mod retry;
mod rng;
mod sender;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod sim_tests;
mod stats;
mod user;

use std::net::SocketAddr;

pub use config::{Config, DEFAULT_MSS, MAX_MESSAGE, MAX_WINDOW, MSS_RANGE};
pub use owner::{Incoming, Owner, OwnerError};
pub use receiver::{Accept, Message, Receiver};
pub use rng::Rng;
pub use sender::{QueueError, Sender};
pub use stats::Stats;
pub use user::{End, JoinStatus, TokenStatus, User, UserError};

use crate::wire::{Elements, Header, Packet};

/// Where a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

/// A control packet waiting to be sent: no user data, so it is kept by value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ctl {
    pub dest: Dest,
    pub header: Header,
    pub elements: Elements,
}

impl Ctl {
    pub(crate) fn new(dest: Dest, header: Header) -> Ctl {
        Ctl { dest, header, elements: Elements::default() }
    }

    /// Write the packet into `buf`. A control packet always fits a
    /// datagram buffer of `MAX_DATAGRAM` bytes.
    pub(crate) fn emit(&self, buf: &mut [u8]) -> Option<Transmit> {
        let packet = Packet { header: self.header, elements: self.elements, data: &[] };
        match packet.emit(buf) {
            Ok(len) => Some(Transmit { dest: self.dest, len }),
            Err(e) => {
                log::error!("cannot emit {:?}: {e}", self.header.packet_type);
                None
            }
        }
    }
}

/// Largest datagram the core ever emits: the base header, the largest set of
/// elements, and an MSS of at most `MSS_RANGE.1`. Buffers passed to
/// `poll_transmit` must have at least this many bytes.
pub const MAX_DATAGRAM: usize = 65535;
