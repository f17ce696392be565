// other.rs -- a second Rust static library for the install test (../ctest.sh):
// built with `rustc --crate-type staticlib`, it carries its own copy of the
// Rust standard library. A C program links it together with the installed
// libectp.a; that works only because libectp.a keeps its copy local.
use std::panic;

#[unsafe(no_mangle)]
pub extern "C" fn other_answer(x: i32) -> i32 {
    // Unwinding and a standard-library call, so that the personality
    // routine and std are really linked in.
    let r = panic::catch_unwind(|| if x < 0 { panic!("negative") } else { x * 2 });
    r.unwrap_or(-1) + std::env::args().count().min(1) as i32
}
