//! The C API of libectp (`include/ectp.h`): the functions of the legacy
//! library, with the meanings and errnos of shared/spec/API.md.
//!
//! Every function returns -1 and sets `errno` on failure, and none lets a
//! panic cross into C (see [`error::guard`]). This module, with the driver's
//! `sys` module, is the only place where `unsafe` is allowed.
#![allow(unsafe_code)]
// The exported functions take raw pointers from C and must not be `unsafe fn`
// (C callers cannot see the difference, and cbindgen would still emit them):
// each one checks its pointers for NULL and documents the caller's promise in
// a `// SAFETY:` comment where it dereferences them (as rustls-ffi does).
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod addr;
mod error;
mod logging;
mod options;
mod table;
pub mod types;

use std::mem::size_of;
use std::sync::Arc;

use libc::{c_int, c_void, size_t, sockaddr, socklen_t, ssize_t};
use socket2::Domain;

use crate::driver::{Endpoint, Error, EventHandler};
use crate::proto::{Event, MAX_MESSAGE};
use error::{EFAULT, EINVAL, Errno, guard};
use table::Handle;
pub use types::*;

/// Longest option value passed through to the UDP sockets.
const MAX_RAW_OPTION: usize = 4096;

/// Flags `msendm`, `msendmsg` and `mrecvmsg` understand.
const KNOWN_FLAGS: c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

fn nonblocking(flags: c_int) -> Result<bool, Errno> {
    if flags & !KNOWN_FLAGS != 0 {
        return Err(EINVAL);
    }
    Ok(flags & libc::MSG_DONTWAIT != 0)
}

/// The caller's buffer as a slice: EFAULT for NULL with a length.
fn in_slice<'a>(buf: *const c_void, len: size_t) -> Result<&'a [u8], Errno> {
    if len == 0 {
        return Ok(&[]);
    }
    if buf.is_null() {
        return Err(EFAULT);
    }
    if len > isize::MAX as usize {
        return Err(EINVAL);
    }
    // SAFETY: the caller promises `len` readable bytes at the non-NULL `buf`.
    Ok(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) })
}

fn out_slice<'a>(buf: *mut c_void, len: size_t) -> Result<&'a mut [u8], Errno> {
    if len == 0 {
        return Ok(&mut []);
    }
    if buf.is_null() {
        return Err(EFAULT);
    }
    if len > isize::MAX as usize {
        return Err(EINVAL);
    }
    // SAFETY: the caller promises `len` writable bytes at the non-NULL `buf`.
    Ok(unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) })
}

/// Create a new ECTP-3 endpoint. `domain` is AF_INET or AF_INET6; `type`
/// SOCK_DGRAM or 0; `protocol` 0 or IPPROTO_UDP. Its role is decided later by
/// `mcreate` (TO) or `mjoin` (TU). Returns a descriptor that polls readable
/// exactly when `mrecvmsg` would not block; release it with `mterminate` (TO)
/// or `mleave` (TU), never with `close`: a descriptor closed behind the
/// library's back is detected at the next call on it (EBADF), which
/// releases the endpoint abruptly, and the library never closes a number the
/// program has reused.
#[unsafe(no_mangle)]
pub extern "C" fn msocket(domain: c_int, r#type: c_int, protocol: c_int) -> c_int {
    guard(-1, || {
        let domain = match domain {
            libc::AF_INET => Domain::IPV4,
            libc::AF_INET6 => Domain::IPV6,
            _ => return Err(EINVAL),
        };
        if !matches!(r#type, 0 | libc::SOCK_DGRAM) || !matches!(protocol, 0 | libc::IPPROTO_UDP) {
            return Err(EINVAL);
        }
        Ok(table::insert(Endpoint::new(domain)?))
    })
}

/// Set an option. With `level == SOL_ECTP`, an ECTP option (connection
/// options only before `mcreate`/`mjoin`: EISCONN after); any other level is
/// applied to the underlying UDP socket(s) (IP_MULTICAST_TTL, SO_RCVBUF...).
#[unsafe(no_mangle)]
pub extern "C" fn msetsockopt(
    sd: c_int,
    level: c_int,
    optname: c_int,
    optval: *const c_void,
    optlen: socklen_t,
) -> c_int {
    guard(-1, || {
        let h = table::get(sd)?;
        if level == SOL_ECTP {
            options::set(&h, optname, optval, optlen)?;
        } else {
            // No socket option is this large; a huge length is a bad argument,
            // not a reason to read far past the caller's value.
            if optlen as usize > MAX_RAW_OPTION {
                return Err(EINVAL);
            }
            let value = in_slice(optval, optlen as size_t)?;
            h.ep.set_raw_option(level, optname, value)?;
        }
        Ok(0)
    })
}

/// Read an option: an ECTP option with `level == SOL_ECTP` (every one but
/// the write-only ECTP_GROUP_KEY: the connection's values, and the
/// read-only ones such as ECTP_MEMBERS, ECTP_USER_ID, ECTP_RATE,
/// ECTP_PAUSED), else an option of the underlying UDP socket. `*optlen` is the room at `optval` on entry and the
/// length written on return.
#[unsafe(no_mangle)]
pub extern "C" fn mgetsockopt(
    sd: c_int,
    level: c_int,
    optname: c_int,
    optval: *mut c_void,
    optlen: *mut socklen_t,
) -> c_int {
    guard(-1, || {
        let h = table::get(sd)?;
        if level == SOL_ECTP {
            options::get(&h, optname, optval, optlen)?;
        } else {
            if optlen.is_null() {
                return Err(EFAULT);
            }
            // SAFETY: optlen is non-NULL and points to the caller's socklen_t.
            let room = unsafe { optlen.read_unaligned() } as size_t;
            let out = out_slice(optval, room)?;
            let n = h.ep.get_raw_option(level, optname, out)?;
            // SAFETY: as above.
            unsafe { optlen.write_unaligned(n as socklen_t) };
        }
        Ok(0)
    })
}

/// Alias of `mgetsockopt`: a spelling found in the legacy documentation.
#[unsafe(no_mangle)]
pub extern "C" fn mgetesockopt(
    sd: c_int,
    level: c_int,
    optname: c_int,
    optval: *mut c_void,
    optlen: *mut socklen_t,
) -> c_int {
    mgetsockopt(sd, level, optname, optval, optlen)
}

/// TO only: become the TC-Owner of a new connection. `local` is the TO's
/// unicast address (its port is ignored: the TO listens on the group port)
/// and selects the interface the multicast leaves by; `group` is the
/// multicast address and group port. Multicasts CCR and, if ECTP_CCT > 0,
/// blocks for CCT while listening TUs join. Returns 0.
#[unsafe(no_mangle)]
pub extern "C" fn mcreate(
    sd: c_int,
    local: *const sockaddr,
    locallen: socklen_t,
    group: *const sockaddr,
    grouplen: socklen_t,
) -> c_int {
    guard(-1, || {
        let h = table::get(sd)?;
        let local = addr::from_c(local, locallen)?;
        let group = addr::from_c(group, grouplen)?;
        let cbs = *h.callbacks.lock();
        if h.ep.is_owner().is_some() {
            return Err(Error::AlreadyConnected.into());
        }
        h.ep.configure(|c| {
            c.ask_joins = cbs.join.is_some();
            c.ask_tokens = cbs.token.is_some();
            Ok(())
        })?;
        let handler = callback_handler(sd, &h);
        h.ep.create(local, group, handler)?;
        Ok(0)
    })
}

/// The closure the driver thread calls for TO events: it calls the C
/// callbacks with no library lock held.
fn callback_handler(sd: c_int, h: &Arc<Handle>) -> Option<EventHandler> {
    let cbs = *h.callbacks.lock();
    if cbs.join.is_none() && cbs.token.is_none() && cbs.leave.is_none() {
        return None;
    }
    Some(Box::new(move |e: Event| {
        let (cb, user_id, a) = match e {
            Event::JoinRequest { user_id, addr } => (cbs.join, user_id, addr),
            Event::TokenRequest { user_id, addr } => (cbs.token, user_id, addr),
            Event::Left { user_id, reason } => {
                if let Some(cb) = cbs.leave {
                    // SAFETY: the program gave us this function for exactly this call.
                    unsafe { cb(sd, user_id, c_int::from(reason as u8)) };
                }
                return;
            }
        };
        let Some(cb) = cb else { return };
        // SAFETY: a zeroed sockaddr_storage is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = addr::to_c(a, &mut storage);
        // SAFETY: the program gave us this function for exactly this call;
        // the address lives until it returns.
        unsafe { cb(sd, user_id, (&storage as *const libc::sockaddr_storage).cast(), len) };
    }))
}

/// TU only: join the connection that the TO at `owner` runs on `group`.
/// Joins in the creation phase if the TO's CCR is heard, else late, then
/// joins the control tree. Blocks until accepted (0), refused (-1,
/// ECONNREFUSED) or unanswered after its retries (-1, ETIMEDOUT).
#[unsafe(no_mangle)]
pub extern "C" fn mjoin(
    sd: c_int,
    owner: *const sockaddr,
    ownerlen: socklen_t,
    group: *const sockaddr,
    grouplen: socklen_t,
) -> c_int {
    guard(-1, || {
        let h = table::get(sd)?;
        let owner = addr::from_c(owner, ownerlen)?;
        let group = addr::from_c(group, grouplen)?;
        h.ep.join(owner, group)?;
        Ok(0)
    })
}

fn send(sd: c_int, buf: *const c_void, len: size_t, flags: c_int, as_owner: bool) -> Result<ssize_t, Errno> {
    let h = table::get(sd)?;
    let nb = nonblocking(flags)?;
    match h.ep.is_owner() {
        None => return Err(Error::NotConnected.into()),
        Some(o) if o != as_owner => return Err(Error::WrongRole.into()),
        Some(_) => {}
    }
    if len == 0 {
        return Err(EINVAL);
    }
    if len > MAX_MESSAGE {
        return Err(Errno(libc::EMSGSIZE));
    }
    let msg = in_slice(buf, len)?;
    h.ep.send(msg, as_owner, nb)?;
    Ok(len as ssize_t)
}

/// TO only: multicast one message (1 byte to 16 MiB) to every TU. Blocks
/// while flow control holds it back, unless `flags` has MSG_DONTWAIT (-1,
/// EAGAIN). Returns `len`.
#[unsafe(no_mangle)]
pub extern "C" fn msendm(sd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    guard(-1, || send(sd, buf, len, flags, true))
}

/// SU only (a TU holding a token): send one message (1 byte to 16 MiB) by
/// unicast to the TO. -1 with EPERM when the caller holds no token.
#[unsafe(no_mangle)]
pub extern "C" fn msendmsg(sd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    guard(-1, || send(sd, buf, len, flags, false))
}

/// The next whole message: on a TU, the TO's multicast data in order; on the
/// TO, unicast data from any SU. Blocks unless MSG_DONTWAIT (-1, EAGAIN).
/// Returns the bytes copied (the rest of a longer message is discarded and
/// ECTP_MSG_TRUNC set); 0 only at the normal end of the connection; -1 with
/// ECONNRESET when this TU was ejected or the TO is gone, EINVAL when `len`
/// is 0. `info` may be NULL.
#[unsafe(no_mangle)]
pub extern "C" fn mrecvmsg(sd: c_int, buf: *mut c_void, len: size_t, flags: c_int, info: *mut ectp_rcvinfo) -> ssize_t {
    guard(-1, || {
        let h = table::get(sd)?;
        let nb = nonblocking(flags)?;
        // 0 means the end of the connection: a zero-length buffer is a bad argument.
        if len == 0 {
            return Err(EINVAL);
        }
        let out = out_slice(buf, len)?;
        let r = h.ep.recv(out, nb)?;
        if !info.is_null() {
            // SAFETY: info is non-NULL and points to the caller's ectp_rcvinfo;
            // every field is written.
            unsafe {
                let info = &mut *info;
                info.user_id = r.user_id;
                info.token_id = r.token_id;
                info.flags = (if r.truncated { ECTP_MSG_TRUNC } else { 0 }) | (if r.gap { ECTP_MSG_GAP } else { 0 });
                info.from = std::mem::zeroed();
                info.fromlen = match r.from {
                    Some(a) => addr::to_c(a, &mut info.from),
                    None => 0,
                };
            }
        }
        Ok(r.len as ssize_t)
    })
}

/// TU only: ask the TO for a token and wait for the answer. Returns the
/// token id (1..255), or -1 with EACCES (refused), ETIMEDOUT, or EALREADY
/// (already holds one).
#[unsafe(no_mangle)]
pub extern "C" fn mtoken_get(sd: c_int) -> c_int {
    guard(-1, || Ok(c_int::from(table::get(sd)?.ep.token_get()?)))
}

/// TU only: send what is still queued, return the token, and wait for the
/// TO's confirm. 0 on success; -1 with EPERM when no token is held.
#[unsafe(no_mangle)]
pub extern "C" fn mtoken_return(sd: c_int) -> c_int {
    guard(-1, || {
        table::get(sd)?.ep.token_return()?;
        Ok(0)
    })
}

fn flag(flag: c_int) -> Result<bool, Errno> {
    match flag {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(EINVAL),
    }
}

/// TO only: answer a join request reported by the join callback: `flag` 1
/// accepts, 0 refuses. -1 with ENOENT when no such request is pending.
#[unsafe(no_mangle)]
pub extern "C" fn mjoin_confirm(sd: c_int, user_id: u32, flag: c_int) -> c_int {
    guard(-1, || {
        let accept = self::flag(flag)?;
        table::get(sd)?.ep.confirm_join(user_id, accept)?;
        Ok(0)
    })
}

/// TO only: answer a token request reported by the token callback: `flag` 1
/// grants, 0 refuses. -1 with ENOENT when no such request is pending.
#[unsafe(no_mangle)]
pub extern "C" fn mtoken_confirm(sd: c_int, user_id: u32, flag: c_int) -> c_int {
    guard(-1, || {
        let accept = self::flag(flag)?;
        table::get(sd)?.ep.confirm_token(user_id, accept)?;
        Ok(0)
    })
}

/// On a TU: leave the connection (ULR to its parent) and release `sd`;
/// `user_id` is ignored. On the TO: eject the TU `user_id` (-1 with ENOENT
/// if there is none); `sd` stays open. On an endpoint with no role yet:
/// release it.
#[unsafe(no_mangle)]
pub extern "C" fn mleave(sd: c_int, user_id: u32) -> c_int {
    guard(-1, || {
        let h = table::get(sd)?;
        if h.ep.is_owner() == Some(true) {
            h.ep.eject(user_id)?;
            return Ok(0);
        }
        // Released even when the endpoint had failed (the error is reported).
        let r = h.ep.leave();
        table::remove(sd);
        r?;
        Ok(0)
    })
}

/// TO only: deliver what is still queued, multicast CTR, and release `sd`.
/// On an endpoint with no role yet: release it.
#[unsafe(no_mangle)]
pub extern "C" fn mterminate(sd: c_int) -> c_int {
    guard(-1, || {
        let h = table::get(sd)?;
        let r = h.ep.terminate();
        // Released even when the endpoint had failed (the error is reported).
        if !matches!(r, Err(Error::WrongRole | Error::Deadlock)) {
            table::remove(sd);
        }
        r?;
        Ok(0)
    })
}

/// Extension, TO only: give member `user_id` a token without its asking
/// (TGR from the TO, answered by the TU's TGC) and wait for the answer.
/// Returns the token id (1..255); the TU then holds it exactly as after
/// `mtoken_get`. -1 with ENOENT (no such member), EALREADY (it holds one,
/// or is being given one), EBUSY (ECTP_MAX_TOKENS in use), ETIMEDOUT (no
/// answer after ECTP_RETRIES sends, ECTP_RXT apart).
#[unsafe(no_mangle)]
pub extern "C" fn ectp_token_give(sd: c_int, user_id: u32) -> c_int {
    guard(-1, || Ok(c_int::from(table::get(sd)?.ep.token_give(user_id)?)))
}

/// Extension, TO only: take member `user_id`'s token back (TRR from the TO).
/// What the SU sent (and queued) before is still delivered reliably, its
/// later `msendmsg` fails with EPERM; returns 0 once it confirmed (TRC,
/// after everything it sent was acknowledged) or left. -1 with ENOENT when
/// the member holds no token, ETIMEDOUT (no answer after ECTP_RETRIES
/// sends: it keeps the token until it has sent what it queued, then
/// returns it by itself).
#[unsafe(no_mangle)]
pub extern "C" fn ectp_token_withdraw(sd: c_int, user_id: u32) -> c_int {
    guard(-1, || {
        table::get(sd)?.ep.token_withdraw(user_id)?;
        Ok(0)
    })
}

/// Extension, TO only: no new forward DATA leaves until `ectp_resume`;
/// `msendm` still queues (and blocks when the window is full). The TO keeps
/// its TUs informed (NDATA with F=1, heartbeats), so nobody is ejected or
/// reset for the pause; both sides read ECTP_PAUSED. -1 with EALREADY when
/// paused already, EBADF after `mterminate` began.
#[unsafe(no_mangle)]
pub extern "C" fn ectp_pause(sd: c_int) -> c_int {
    guard(-1, || {
        table::get(sd)?.ep.pause()?;
        Ok(0)
    })
}

/// Extension, TO only: end a pause (`ectp_pause`): the queued data goes out
/// again. -1 with EALREADY when not paused.
#[unsafe(no_mangle)]
pub extern "C" fn ectp_resume(sd: c_int) -> c_int {
    guard(-1, || {
        table::get(sd)?.ep.resume()?;
        Ok(0)
    })
}

/// Extension, TO only: end the connection at once, without draining: what
/// is queued or unacknowledged is dropped, CTR with F=1 (abnormal) is
/// multicast, and every TU's next `mrecvmsg` gives -1 with ECONNRESET
/// (a TU that missed every CTR notices the TO's silence after FDN x HGT).
/// Releases `sd`. Returns within a few tens of milliseconds.
#[unsafe(no_mangle)]
pub extern "C" fn ectp_abort(sd: c_int) -> c_int {
    guard(-1, || {
        let h = table::get(sd)?;
        let r = h.ep.abort();
        // Released even when the endpoint had failed (the error is reported).
        if !matches!(r, Err(Error::WrongRole | Error::NotConnected | Error::Deadlock)) {
            table::remove(sd);
        }
        r?;
        Ok(0)
    })
}

/// Extension, TO only: fill `*out` with what the TO knows of member
/// `user_id`, wherever it is in the tree (its parent, level, descendants,
/// RTT to its parent, token, address). -1 with ENOENT for an unknown or
/// departed member.
#[unsafe(no_mangle)]
pub extern "C" fn ectp_get_member(sd: c_int, user_id: u32, out: *mut ectp_member) -> c_int {
    guard(-1, || {
        let h = table::get(sd)?;
        if out.is_null() {
            return Err(EFAULT);
        }
        let m = h.ep.member(user_id)?;
        // SAFETY: a zeroed ectp_member is a valid value.
        let mut v: ectp_member = unsafe { std::mem::zeroed() };
        v.user_id = m.user_id;
        v.parent_id = m.parent_id;
        v.descendants = m.descendants;
        v.rtt_us = m.rtt.map_or(0, |r| u32::try_from(r.as_micros()).unwrap_or(u32::MAX).max(1));
        v.child_id = m.child_id;
        v.tree_level = m.tree_level;
        v.token_id = m.token_id;
        v.is_ra = u8::from(m.is_ra);
        v.addrlen = addr::to_c(m.addr, &mut v.addr);
        // SAFETY: out is non-NULL and points to the caller's ectp_member.
        unsafe { out.write_unaligned(v) };
        Ok(0)
    })
}

/// Extension, TO only: write up to `max` member ids, ascending, into `ids`
/// and return how many members there are (which may be more than `max`).
/// `ids` may be NULL when `max` is 0.
#[unsafe(no_mangle)]
pub extern "C" fn ectp_list_members(sd: c_int, ids: *mut u32, max: size_t) -> c_int {
    guard(-1, || {
        let h = table::get(sd)?;
        if ids.is_null() && max > 0 {
            return Err(EFAULT);
        }
        if max > isize::MAX as usize / size_of::<u32>() {
            return Err(EINVAL);
        }
        let all = h.ep.member_ids()?;
        let n = all.len().min(max);
        if n > 0 {
            // SAFETY: ids is non-NULL and the caller promises room for `max` >= n ids.
            let out = unsafe { std::slice::from_raw_parts_mut(ids, n) };
            out.copy_from_slice(&all[..n]);
        }
        Ok(c_int::try_from(all.len()).unwrap_or(c_int::MAX))
    })
}

/// Testing aid for the project's own tests: make the driver thread of `sd`
/// panic, to check that the endpoint's calls then fail with EIO instead of
/// hanging. Not part of the C API.
#[doc(hidden)]
pub fn test_inject_driver_panic(sd: c_int) -> bool {
    table::get(sd).map(|h| h.ep.inject_driver_panic()).is_ok()
}

/// Extension: copy the endpoint's counters into `*out`. Returns 0.
#[unsafe(no_mangle)]
pub extern "C" fn ectp_get_stats(sd: c_int, out: *mut ectp_stats) -> c_int {
    guard(-1, || {
        let h = table::get(sd)?;
        if out.is_null() {
            return Err(EFAULT);
        }
        let s = h.ep.stats();
        let v = ectp_stats {
            packets_sent: s.packets_sent,
            packets_received: s.packets_received,
            data_sent: s.data_sent,
            data_received: s.data_received,
            rdata_sent: s.rdata_sent,
            duplicates: s.duplicates,
            dropped_malformed: s.dropped_malformed_total(),
            dropped_checksum: s.dropped_malformed[crate::wire::ParseError::BadChecksum.index()],
            dropped_foreign: s.dropped_foreign,
            dropped_unexpected: s.dropped_unexpected,
            messages_delivered: s.messages_delivered,
            gaps: s.gaps,
            retransmissions: s.retransmissions,
            dropped_injected: s.dropped_injected,
            dropped_source: s.dropped_source,
            dropped_length: s.dropped_length,
            dropped_range: s.dropped_range,
            dropped_auth: s.dropped_auth,
            dropped_replay: s.dropped_replay,
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            rate: h.ep.rate().map_or(0, |r| if r == u64::MAX { 0 } else { r }),
            repairs_requested: s.repairs_requested,
            repairs_sent: s.rdata_sent,
            rtt_us: h.ep.rtt().map_or(0, |r| u64::try_from(r.as_micros()).unwrap_or(u64::MAX).max(1)),
            members_joined: s.members_joined,
            members_left: s.members_left,
            members_ejected: s.members_ejected,
            members_failed: s.members_failed,
            dropped_full: s.dropped_full,
        };
        // SAFETY: out is non-NULL and points to the caller's ectp_stats.
        unsafe { out.write_unaligned(v) };
        Ok(0)
    })
}

/// Extension: where the library's log lines go, process-wide. `level`:
/// ECTP_LOG_OFF (0) .. ECTP_LOG_TRACE (5), lines at or below it are kept;
/// `cb` NULL sends them to standard error (`ectp: <level>: <message>`),
/// else each goes to `cb(level, message, arg)`. Without any call, the
/// environment variable ECTP_LOG (error, warn, info, debug, trace) sets the
/// level for standard error, and nothing is printed when it is unset.
/// -1 with EINVAL for a level out of range.
#[unsafe(no_mangle)]
pub extern "C" fn ectp_set_log(level: c_int, cb: ectp_log_callback, arg: *mut c_void) -> c_int {
    guard(-1, || logging::set(level, cb, arg).map(|()| 0).map_err(|()| EINVAL))
}
