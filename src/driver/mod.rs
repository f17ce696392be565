//! The I/O driver: one thread per endpoint that owns its UDP sockets, feeds
//! received datagrams and the time to the protocol core, sends what the core
//! returns and sleeps (poll) until the next deadline, a datagram, or a wake-up
//! from an application call.
//!
//! Application calls (from any thread) lock the endpoint, call the core, and
//! wake the driver; blocking calls wait on a condition variable that the
//! driver signals after every round. The application's descriptor is an
//! eventfd kept readable exactly while a receive would not block.

mod endpoint;
mod socket;
pub(crate) mod sys;

pub use endpoint::{Endpoint, EventHandler, Received};
pub use socket::RawOption;

use std::fmt;
use std::io;

/// Why a driver call failed. `ffi` maps each to one errno.
#[derive(Debug)]
pub enum Error {
    /// An invalid value or length.
    Invalid,
    /// A call meant for the other role.
    WrongRole,
    /// A role call before create/join.
    NotConnected,
    /// A second create/join, or a connection option after it.
    AlreadyConnected,
    /// Would block, and the caller asked not to.
    WouldBlock,
    /// The TO refused the join.
    Refused,
    /// Nobody answered after every retry.
    TimedOut,
    /// Ejected, or the TO is gone.
    Reset,
    /// A token call without a token.
    NoToken,
    /// The TO refused the token.
    TokenRefused,
    /// Already holds a token (or a request is under way).
    AlreadyHeld,
    /// No such pending request or member.
    NotFound,
    /// No token free (ECTP_MAX_TOKENS in use).
    Busy,
    /// Paused already, or resumed when not paused.
    Already,
    /// A call that waits for the library's thread, made on that thread (from
    /// a callback): it would wait for itself.
    Deadlock,
    /// The message is too long.
    TooLong,
    /// The endpoint is being closed.
    Closed,
    /// The driver thread failed (an internal error): the endpoint is unusable.
    Failed,
    /// A system call failed.
    Io(io::Error),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            other => write!(f, "{other:?}"),
        }
    }
}

impl std::error::Error for Error {}
