//! A whole TO fed packets (well formed or not), timer runs and application
//! calls decoded from the input: it never panics, never loops forever, and
//! keeps its bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ectp_fuzz::run_owner(data));
