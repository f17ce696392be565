//! Errors at the C boundary: every failure becomes -1 plus one errno, here,
//! and no panic crosses the boundary.

use std::panic::{AssertUnwindSafe, catch_unwind};

use libc::c_int;

use crate::driver::Error;

/// An errno value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub c_int);

impl From<Error> for Errno {
    fn from(e: Error) -> Errno {
        Errno(match e {
            Error::Invalid => libc::EINVAL,
            Error::WrongRole => libc::EOPNOTSUPP,
            Error::NotConnected => libc::ENOTCONN,
            Error::AlreadyConnected => libc::EISCONN,
            Error::WouldBlock => libc::EAGAIN,
            Error::Refused => libc::ECONNREFUSED,
            Error::TimedOut => libc::ETIMEDOUT,
            Error::Reset => libc::ECONNRESET,
            Error::NoToken => libc::EPERM,
            Error::TokenRefused => libc::EACCES,
            Error::AlreadyHeld => libc::EALREADY,
            Error::NotFound => libc::ENOENT,
            Error::Busy => libc::EBUSY,
            Error::Already => libc::EALREADY,
            Error::Deadlock => libc::EDEADLK,
            Error::TooLong => libc::EMSGSIZE,
            Error::Closed => libc::EBADF,
            Error::Failed => libc::EIO,
            Error::Io(io) => io.raw_os_error().unwrap_or(libc::EIO),
        })
    }
}

/// Shorthands for the contract's errnos.
pub const EBADF: Errno = Errno(libc::EBADF);
/// NULL pointer.
pub const EFAULT: Errno = Errno(libc::EFAULT);
/// Invalid value or length.
pub const EINVAL: Errno = Errno(libc::EINVAL);

fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot.
    #[allow(unsafe_code)]
    unsafe {
        *libc::__errno_location() = e;
    }
}

/// Run `f` behind a panic boundary: Ok(v) returns v, Err sets errno and
/// returns `fail` (-1); a panic is logged and reported as EIO.
pub fn guard<T: Copy>(fail: T, f: impl FnOnce() -> Result<T, Errno>) -> T {
    super::logging::init();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(Errno(e))) => {
            set_errno(e);
            fail
        }
        Err(_) => {
            log::error!("internal error (panic) caught at the C boundary");
            set_errno(libc::EIO);
            fail
        }
    }
}
