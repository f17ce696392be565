//! The descriptor table: which `msocket` descriptor is which endpoint.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use libc::c_int;
use parking_lot::Mutex;

use super::error::{EBADF, Errno};
use super::types::{ectp_join_callback, ectp_token_callback};
use crate::driver::Endpoint;

/// An open descriptor: its endpoint and the callbacks set on it.
pub struct Handle {
    /// The endpoint.
    pub ep: Arc<Endpoint>,
    /// The callbacks set with ECTP_JOIN_CALLBACK / ECTP_TOKEN_CALLBACK.
    pub callbacks: Mutex<(ectp_join_callback, ectp_token_callback)>,
}

static TABLE: LazyLock<Mutex<HashMap<c_int, Arc<Handle>>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Register a new endpoint; its descriptor is the key.
pub fn insert(ep: Arc<Endpoint>) -> c_int {
    let fd = ep.fd();
    let h = Arc::new(Handle { ep, callbacks: Mutex::new((None, None)) });
    TABLE.lock().insert(fd, h);
    fd
}

/// The handle of `sd`, or EBADF.
pub fn get(sd: c_int) -> Result<Arc<Handle>, Errno> {
    TABLE.lock().get(&sd).cloned().ok_or(EBADF)
}

/// Forget `sd`; the endpoint closes once no call uses it any more.
pub fn remove(sd: c_int) {
    TABLE.lock().remove(&sd);
}
