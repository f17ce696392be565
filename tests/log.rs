//! `ectp_set_log`: the library's log lines reach a C callback, filtered by
//! level, and stop at level 0. The logger is process-wide, so this binary
//! holds a single test that runs its steps in order. (ECTP_LOG, which sets
//! the level for standard error, is tested from C in c-examples/ctest.sh.)

mod common;
use common::*;
use ectp::ffi::*;
use libc::{c_char, c_int, c_void};
use std::ffi::CStr;
use std::net::SocketAddr;
use std::sync::Mutex;

/// Every line the callback got: (level, message, arg).
static LINES: Mutex<Vec<(c_int, String, usize)>> = Mutex::new(Vec::new());

unsafe extern "C" fn collect(level: c_int, message: *const c_char, arg: *mut c_void) {
    // SAFETY: the library passes a NUL-terminated line valid for this call.
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned();
    LINES.lock().unwrap().push((level, text, arg as usize));
}

/// A callback that sets the log again from inside itself (to `collect`,
/// argument 0x22): it must not deadlock, and the next lines go there.
unsafe extern "C" fn switch(level: c_int, message: *const c_char, arg: *mut c_void) {
    ectp_set_log(ECTP_LOG_INFO, Some(collect), 0x22 as *mut c_void);
    // SAFETY: passing on the library's arguments, valid for this call.
    unsafe { collect(level, message, arg) };
}

fn take_lines() -> Vec<(c_int, String, usize)> {
    std::mem::take(&mut *LINES.lock().unwrap())
}

/// A TO on loopback with one TU that joins and leaves; returns the TU's
/// member id and the TO's descriptor (still open).
fn join_and_leave(p: u16) -> (u32, c_int) {
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let group: SocketAddr = format!("239.255.77.{}:{p}", p % 200 + 1).parse().unwrap();
    let fast = [(ECTP_HGT, 200), (ECTP_RXT, 40)];
    let to = owner(local, group, &fast);
    let tu = user(local, group, &fast).expect("join");
    let id = get_int(tu, ECTP_USER_ID).expect("user id") as u32;
    assert_eq!(mleave(tu, 0), 0);
    assert!(wait_for(5, || get_int(to, ECTP_MEMBERS) == Ok(0)), "the TO saw the TU leave");
    (id, to)
}

#[test]
fn log_lines_reach_the_callback_by_level() {
    // Bad levels: EINVAL, and nothing changes.
    for bad in [-1, 6, 100] {
        assert_eq!(ectp_set_log(bad, Some(collect), std::ptr::null_mut()), -1);
        assert_eq!(errno(), libc::EINVAL);
    }

    // Info: the life of the connection, with the program's argument.
    assert_eq!(ectp_set_log(ECTP_LOG_INFO, Some(collect), 0x5eed as *mut c_void), 0);
    let (id, to) = join_and_leave(port());
    let lines = take_lines();
    let created = lines.iter().find(|(_, m, _)| m.contains("created connection"));
    assert!(created.is_some(), "a creation line in {lines:?}");
    let joined = format!("member {id} at 127.0.0.1:");
    let of_member: Vec<_> = lines.iter().filter(|(_, m, _)| m.starts_with(&joined)).collect();
    assert!(of_member.iter().any(|(_, m, _)| m.ends_with("joined under parent 0")), "a join line in {lines:?}");
    assert!(of_member.iter().any(|(_, m, _)| m.ends_with(" left")), "a leave line in {lines:?}");
    for (level, _, arg) in &lines {
        assert!((ECTP_LOG_ERROR..=ECTP_LOG_INFO).contains(level), "level {level} at info");
        assert_eq!(*arg, 0x5eed, "the program's argument comes back");
    }
    assert_eq!(mterminate(to), 0);

    // Warn: the same run logs nothing at info.
    assert_eq!(ectp_set_log(ECTP_LOG_WARN, Some(collect), std::ptr::null_mut()), 0);
    let (_, to) = join_and_leave(port());
    assert_eq!(mterminate(to), 0);
    let lines = take_lines();
    assert!(lines.iter().all(|(l, _, _)| *l <= ECTP_LOG_WARN), "only warnings and errors: {lines:?}");
    assert!(!lines.iter().any(|(_, m, _)| m.contains("joined")), "no info lines: {lines:?}");

    // A warning does come through at that level: a descriptor closed
    // behind the library's back.
    let sd = msocket(libc::AF_INET, libc::SOCK_DGRAM, 0);
    assert!(sd >= 0);
    // SAFETY: closing a descriptor this test owns, to provoke the warning.
    assert_eq!(unsafe { libc::close(sd) }, 0);
    assert_eq!(mleave(sd, 0), -1);
    assert_eq!(errno(), libc::EBADF);
    let lines = take_lines();
    let warned = lines.iter().find(|(_, m, _)| m.contains(&format!("descriptor {sd} was closed")));
    assert_eq!(warned.map(|(l, _, _)| *l), Some(ECTP_LOG_WARN), "the warning, at its level: {lines:?}");

    // A callback that calls ectp_set_log (from the library's thread and
    // from the application's): no deadlock, the last call wins.
    assert_eq!(ectp_set_log(ECTP_LOG_INFO, Some(switch), 0x11 as *mut c_void), 0);
    let (_, to) = join_and_leave(port());
    assert_eq!(mterminate(to), 0);
    let lines = take_lines();
    let args: Vec<usize> = lines.iter().map(|l| l.2).collect();
    assert!(args.len() > 1 && args[0] == 0x11 && args[1..].iter().all(|&a| a == 0x22), "{lines:?}");

    // Off: nothing at all.
    assert_eq!(ectp_set_log(ECTP_LOG_OFF, Some(collect), std::ptr::null_mut()), 0);
    let (_, to) = join_and_leave(port());
    assert_eq!(mterminate(to), 0);
    assert_eq!(take_lines(), vec![], "level 0 logs nothing");

    // Back to standard error (NULL callback): the callback hears nothing more.
    assert_eq!(ectp_set_log(ECTP_LOG_INFO, None, std::ptr::null_mut()), 0);
    let (_, to) = join_and_leave(port());
    assert_eq!(mterminate(to), 0);
    assert_eq!(take_lines(), vec![], "lines go to standard error now");
    assert_eq!(ectp_set_log(ECTP_LOG_OFF, None, std::ptr::null_mut()), 0);
}
