//! The descriptor table: which `msocket` descriptor is which endpoint.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use libc::c_int;
use parking_lot::Mutex;

use super::error::{EBADF, Errno};
use super::types::{ectp_join_callback, ectp_leave_callback, ectp_token_callback};
use crate::driver::Endpoint;

/// The TO's callbacks, as the program set them.
#[derive(Clone, Copy, Default)]
pub struct Callbacks {
    /// ECTP_JOIN_CALLBACK.
    pub join: ectp_join_callback,
    /// ECTP_TOKEN_CALLBACK.
    pub token: ectp_token_callback,
    /// ECTP_LEAVE_CALLBACK.
    pub leave: ectp_leave_callback,
}

/// An open descriptor: its endpoint and the callbacks set on it.
pub struct Handle {
    /// The endpoint.
    pub ep: Arc<Endpoint>,
    /// The callbacks set with ECTP_JOIN_CALLBACK, ECTP_TOKEN_CALLBACK, ECTP_LEAVE_CALLBACK.
    pub callbacks: Mutex<Callbacks>,
}

static TABLE: LazyLock<Mutex<HashMap<c_int, Arc<Handle>>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Register a new endpoint; its descriptor is the key. An endpoint found
/// under the same number had its descriptor closed behind the library's back
/// (the kernel handed the number out again): it is released.
pub fn insert(ep: Arc<Endpoint>) -> c_int {
    let fd = ep.fd();
    let h = Arc::new(Handle { ep, callbacks: Mutex::new(Callbacks::default()) });
    let stale = TABLE.lock().insert(fd, h);
    if let Some(old) = stale {
        log::warn!("descriptor {fd} was closed behind the library's back: its endpoint is released");
        old.ep.shutdown();
    }
    fd
}

/// The handle of `sd`, or EBADF: also when the program closed `sd` behind
/// the library's back (checked at every call), which releases the endpoint
/// at once, without leaving or terminating properly.
pub fn get(sd: c_int) -> Result<Arc<Handle>, Errno> {
    let h = TABLE.lock().get(&sd).cloned().ok_or(EBADF)?;
    if h.ep.owns_fd() {
        return Ok(h);
    }
    log::warn!("descriptor {sd} was closed behind the library's back: its endpoint is released");
    let mut table = TABLE.lock();
    if table.get(&sd).is_some_and(|x| Arc::ptr_eq(x, &h)) {
        table.remove(&sd);
    }
    drop(table);
    h.ep.shutdown();
    Err(EBADF)
}

/// Forget `sd`; the endpoint closes once no call uses it any more.
pub fn remove(sd: c_int) {
    TABLE.lock().remove(&sd);
}
