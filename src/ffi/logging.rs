//! The library's log lines for C programs: `ectp_set_log`, and the
//! environment variable ECTP_LOG.
//!
//! The library logs through the `log` crate; this module is its logger. A
//! line goes to the program's callback when it set one, else to standard
//! error as `ectp: <level>: <message>`. Until the program calls
//! `ectp_set_log`, the level comes from ECTP_LOG (read once, at the first
//! ECTP call), and nothing is printed when it is unset.

use std::ffi::CString;
use std::io::Write;
use std::sync::Once;

use libc::{c_int, c_void};
use log::{LevelFilter, Log, Metadata, Record};
use parking_lot::RwLock;

use super::types::ectp_log_callback;

/// Where log lines go: the callback and its argument, or standard error.
#[derive(Clone, Copy)]
struct Sink {
    cb: ectp_log_callback,
    /// The program's `arg`, handed back untouched (kept as an address).
    arg: usize,
}

static SINK: RwLock<Sink> = RwLock::new(Sink { cb: None, arg: 0 });
static INIT: Once = Once::new();
static LOGGER: Logger = Logger;

struct Logger;

impl Log for Logger {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // Copied out, so that a callback that sets the log again cannot
        // deadlock on the lock.
        let sink = *SINK.read();
        let level = record.level();
        match sink.cb {
            Some(cb) => {
                let text = record.args().to_string().replace('\0', " ");
                let Ok(msg) = CString::new(text) else { return };
                // SAFETY: the program gave this callback for exactly this call;
                // `msg` outlives it and `arg` is the program's own value.
                unsafe { cb(level as c_int, msg.as_ptr(), sink.arg as *mut c_void) };
            }
            None => {
                let name = level.as_str().to_ascii_lowercase();
                let _ = writeln!(std::io::stderr().lock(), "ectp: {name}: {}", record.args());
            }
        }
    }

    fn flush(&self) {}
}

/// A level by its C number (0 off .. 5 trace).
fn filter_of(level: c_int) -> Option<LevelFilter> {
    Some(match level {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        5 => LevelFilter::Trace,
        _ => return None,
    })
}

/// ECTP_LOG's value: a level's name or number, any case; None otherwise.
fn filter_of_env(value: &str) -> Option<LevelFilter> {
    let v = value.trim().to_ascii_lowercase();
    let named = match v.as_str() {
        "off" | "none" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warn" | "warning" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return v.parse().ok().and_then(filter_of),
    };
    Some(named)
}

/// Install the logger once, its level from ECTP_LOG. Cheap after the first
/// call: every C entry point calls it. When the program (a Rust one using
/// the library as a crate) installed a logger of its own, that one stays.
pub fn init() {
    INIT.call_once(|| {
        if log::set_logger(&LOGGER).is_err() {
            return;
        }
        let level = match std::env::var("ECTP_LOG") {
            Ok(v) => filter_of_env(&v).unwrap_or_else(|| {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "ectp: warn: ECTP_LOG={v:?} is not a level (error, warn, info, debug, trace): logging stays off"
                );
                LevelFilter::Off
            }),
            Err(_) => LevelFilter::Off,
        };
        log::set_max_level(level);
    });
}

/// `ectp_set_log`: the level (0..5) and where lines go (`cb`, or standard
/// error when None). Err for a level out of range.
pub fn set(level: c_int, cb: ectp_log_callback, arg: *mut c_void) -> Result<(), ()> {
    let filter = filter_of(level).ok_or(())?;
    init();
    *SINK.write() = Sink { cb, arg: arg as usize };
    log::set_max_level(filter);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_by_number_and_by_name() {
        assert_eq!(filter_of(0), Some(LevelFilter::Off));
        assert_eq!(filter_of(5), Some(LevelFilter::Trace));
        assert_eq!(filter_of(6), None);
        assert_eq!(filter_of(-1), None);
        assert_eq!(filter_of_env(" Info "), Some(LevelFilter::Info));
        assert_eq!(filter_of_env("WARNING"), Some(LevelFilter::Warn));
        assert_eq!(filter_of_env("4"), Some(LevelFilter::Debug));
        assert_eq!(filter_of_env("loud"), None);
        assert_eq!(filter_of_env("9"), None);
    }
}
