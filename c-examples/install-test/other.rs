// other.rs -- a second Rust static library for the install test (../ctest.sh):
// built with `rustc --crate-type staticlib`, it carries its own copy of the
// Rust standard library. A C program links it together with the installed
// libectp.a; that works only because libectp.a keeps its copy local.
use std::panic;

/// 2 * x + 1 for x >= 0; for x < 0 a panic, caught: -1. The panic unwinds
/// (the personality routine and the unwinder of this copy of std).
#[unsafe(no_mangle)]
pub extern "C" fn other_answer(x: i32) -> i32 {
    panic::set_hook(Box::new(|_| {}));
    let r = panic::catch_unwind(|| if x < 0 { panic!("negative") } else { 2 * x });
    match r {
        Ok(v) => v + std::env::args().count().min(1) as i32,
        Err(_) => -1,
    }
}
