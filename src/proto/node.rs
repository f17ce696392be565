//! One ECTP node, whatever its role: what the driver and the simulation run.
//!
//! The sans-IO calls (`handle`, `handle_timeout`, `poll_transmit`,
//! `poll_timeout`, `poll_event`) are the same for the TO and a TU; the
//! application calls are each role's own, reached through
//! [`Node::owner_mut`] and [`Node::user_mut`].

use std::net::SocketAddr;
use std::time::Instant;

use super::{Config, Event, Owner, Stats, Transmit, User};

/// A TO or a TU.
#[derive(Debug)]
pub enum Node {
    /// The TC-Owner.
    Owner(Box<Owner>),
    /// A TS-user.
    User(Box<User>),
}

impl Node {
    /// Take one received datagram.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        match self {
            Node::Owner(o) => o.handle(now, from, datagram),
            Node::User(u) => u.handle(now, from, datagram),
        }
    }

    /// Run the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self {
            Node::Owner(o) => o.handle_timeout(now),
            Node::User(u) => u.handle_timeout(now),
        }
    }

    /// The next datagram to send, written into `buf`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        match self {
            Node::Owner(o) => o.poll_transmit(now, buf),
            Node::User(u) => u.poll_transmit(now, buf),
        }
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Node::Owner(o) => o.poll_timeout(),
            Node::User(u) => u.poll_timeout(),
        }
    }

    /// The next application event (the TO's join and token requests).
    pub fn poll_event(&mut self) -> Option<Event> {
        match self {
            Node::Owner(o) => o.poll_event(),
            Node::User(_) => None,
        }
    }

    /// The parameters in force.
    pub fn config(&self) -> &Config {
        match self {
            Node::Owner(o) => o.config(),
            Node::User(u) => u.config(),
        }
    }

    /// What the node counted.
    pub fn stats(&self) -> &Stats {
        match self {
            Node::Owner(o) => o.stats(),
            Node::User(u) => u.stats(),
        }
    }

    /// Whether `mrecvmsg` would return something now: a message, or the end.
    pub fn is_readable(&self) -> bool {
        match self {
            Node::Owner(o) => o.has_incoming(),
            Node::User(u) => u.has_message() || u.end().is_some() || u.join_status() != super::JoinStatus::Joined,
        }
    }

    /// The TO, if this is it.
    pub fn owner(&self) -> Option<&Owner> {
        match self {
            Node::Owner(o) => Some(o),
            Node::User(_) => None,
        }
    }

    /// The TO, for application calls.
    pub fn owner_mut(&mut self) -> Option<&mut Owner> {
        match self {
            Node::Owner(o) => Some(o),
            Node::User(_) => None,
        }
    }

    /// The TU, if this is one.
    pub fn user(&self) -> Option<&User> {
        match self {
            Node::User(u) => Some(u),
            Node::Owner(_) => None,
        }
    }

    /// The TU, for application calls.
    pub fn user_mut(&mut self) -> Option<&mut User> {
        match self {
            Node::User(u) => Some(u),
            Node::Owner(_) => None,
        }
    }
}

impl From<Owner> for Node {
    fn from(o: Owner) -> Node {
        Node::Owner(Box::new(o))
    }
}

impl From<User> for Node {
    fn from(u: User) -> Node {
        Node::User(Box::new(u))
    }
}
