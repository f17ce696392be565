//! # ectp — ECTP-3 duplex multicast transport
//!
//! An implementation of the Enhanced Communications Transport Protocol, part 3
//! (ITU-T X.607 | ISO/IEC 14476-3): one TC-Owner (TO) multicasts data to many
//! TS-users (TUs) over UDP, IPv4 or IPv6; a TU that holds a token may send
//! unicast data back to the TO.
//!
//! The crate is built as `libectp.so` and `libectp.a` with the C API of the
//! legacy library (`include/ectp.h`); Rust programs may use the layers
//! directly. Data flows one way through four layers:
//!
//! - [`wire`]: packet views, parse and emit, sequence numbers, checksum. No state.
//! - [`proto`]: the sans-IO protocol: the TO ([`proto::Owner`]) and TU
//!   ([`proto::User`]) state machines. They take received datagrams and the
//!   current time and hand back datagrams to send, the next deadline and events.
//! - [`driver`]: one thread per endpoint owning the UDP sockets; it feeds the
//!   core, sends what it returns and sleeps until the next deadline.
//! - [`ffi`]: the `extern "C"` functions of the contract; the only place, with
//!   the driver's small `sys` module, where `unsafe` is allowed.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod driver;
pub mod ffi;
pub mod proto;
pub mod wire;
