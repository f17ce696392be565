//! The packet parser on any bytes: it never panics, and what it accepts is
//! written back to the same packet.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ectp_fuzz::parse_round_trip(data));
