//! `msetsockopt` / `mgetsockopt` at level SOL_ECTP.
#![allow(unsafe_code)]

use std::mem::size_of;
use std::time::Duration;

use libc::{c_int, c_void, socklen_t};

use super::error::{EFAULT, EINVAL, Errno};
use super::table::Handle;
use super::types::*;
use crate::driver::Error;
use crate::proto::{CcMode, DEFAULT_RA_CHILDREN, DEFAULT_TO_CHILDREN, MAX_CHILDREN, MSS_RANGE, Security};
use crate::wire::{Ro, Tco};

const ENOPROTOOPT: Errno = Errno(libc::ENOPROTOOPT);

/// The option value of type `T` (an int or an int64) at `optval`, which
/// must be exactly `size_of::<T>()` bytes long.
fn read_value<T: Copy>(optval: *const c_void, optlen: socklen_t) -> Result<T, Errno> {
    if optval.is_null() {
        return Err(EFAULT);
    }
    if optlen as usize != size_of::<T>() {
        return Err(EINVAL);
    }
    // SAFETY: optval is non-NULL and the caller says it holds a T (its
    // length was checked); T is a plain integer, valid for any bytes.
    Ok(unsafe { optval.cast::<T>().read_unaligned() })
}

fn read_int(optval: *const c_void, optlen: socklen_t) -> Result<c_int, Errno> {
    read_value::<c_int>(optval, optlen)
}

fn read_i64(optval: *const c_void, optlen: socklen_t) -> Result<i64, Errno> {
    read_value::<i64>(optval, optlen)
}

fn in_range(v: c_int, lo: c_int, hi: c_int) -> Result<c_int, Errno> {
    if (lo..=hi).contains(&v) { Ok(v) } else { Err(EINVAL) }
}

fn ms(v: c_int) -> Duration {
    Duration::from_millis(v as u64)
}

/// Set one SOL_ECTP option.
pub fn set(h: &Handle, optname: c_int, optval: *const c_void, optlen: socklen_t) -> Result<(), Errno> {
    if matches!(optname, ECTP_JOIN_CALLBACK | ECTP_TOKEN_CALLBACK | ECTP_LEAVE_CALLBACK) {
        if optval.is_null() {
            return Err(EFAULT);
        }
        if optlen as usize != size_of::<ectp_join_callback>() {
            return Err(EINVAL);
        }
        // Only before mcreate, like the connection options.
        h.ep.configure(|_| Ok(()))?;
        let mut cbs = h.callbacks.lock();
        // SAFETY (each read): optval is non-NULL and the caller says it holds
        // a function pointer of the option's type (NULL removes the callback).
        match optname {
            ECTP_JOIN_CALLBACK => cbs.join = unsafe { optval.cast::<ectp_join_callback>().read_unaligned() },
            ECTP_TOKEN_CALLBACK => cbs.token = unsafe { optval.cast::<ectp_token_callback>().read_unaligned() },
            _ => cbs.leave = unsafe { optval.cast::<ectp_leave_callback>().read_unaligned() },
        }
        return Ok(());
    }
    if matches!(optname, ECTP_MEMBERS | ECTP_USER_ID | ECTP_TOKEN_ID | ECTP_PARENT | ECTP_TREE_LEVEL | ECTP_PAUSED) {
        return Err(ENOPROTOOPT); // read only
    }
    if optname == ECTP_GROUP_KEY {
        if optval.is_null() {
            return Err(EFAULT);
        }
        if !Security::KEY_LENGTHS.contains(&(optlen as usize)) {
            return Err(EINVAL);
        }
        // SAFETY: optval is non-NULL and the caller says it holds optlen bytes.
        let key = unsafe { std::slice::from_raw_parts(optval.cast::<u8>(), optlen as usize) };
        let security = Security::new(key).ok_or(EINVAL)?;
        h.ep.configure(|c| {
            c.security = Some(security);
            Ok(())
        })?;
        return Ok(());
    }
    if matches!(optname, ECTP_RX_LOSS | ECTP_TX_LOSS) {
        // Testing aids: local, allowed at any time.
        let v = f64::from(in_range(read_int(optval, optlen)?, 0, 100)?) / 100.0;
        let (rx, tx) = if optname == ECTP_RX_LOSS { (Some(v), None) } else { (None, Some(v)) };
        h.ep.set_loss(rx, tx);
        return Ok(());
    }
    if optname == ECTP_MAX_RATE {
        let v = read_i64(optval, optlen)?;
        h.ep.set_max_rate(u64::try_from(v).map_err(|_| EINVAL)?);
        return Ok(());
    }
    if optname == ECTP_RATE {
        return Err(ENOPROTOOPT); // read only
    }
    if optname == ECTP_CC {
        let v = in_range(read_int(optval, optlen)?, ECTP_CC_NONE, ECTP_CC_TFMCC)?;
        h.ep.configure(|c| {
            c.cc = if v == ECTP_CC_TFMCC { CcMode::Tfmcc } else { CcMode::None };
            Ok(())
        })?;
        return Ok(());
    }
    if optname == ECTP_TX_CORRUPT {
        h.ep.set_corruption(f64::from(in_range(read_int(optval, optlen)?, 0, 100)?) / 100.0);
        return Ok(());
    }
    if !(ECTP_TCO..=ECTP_MAX_TOKENS).contains(&optname)
        && !matches!(optname, ECTP_WINDOW | ECTP_RA | ECTP_MAX_CHILDREN | ECTP_SLOW_TIMEOUT)
    {
        return Err(ENOPROTOOPT);
    }
    let v = read_int(optval, optlen)?;
    // Validate before taking the endpoint's lock, so that a bad value is
    // EINVAL whatever the state.
    let v = match optname {
        ECTP_TCO => in_range(v, 0, 1)?,
        ECTP_RO => in_range(v, 0, 2)?,
        ECTP_AGN | ECTP_FDN | ECTP_MAX_TOKENS => in_range(v, 1, 255)?,
        ECTP_MSS => in_range(v, c_int::from(MSS_RANGE.0), c_int::from(MSS_RANGE.1))?,
        ECTP_HGT => in_range(v, 10, 3_600_000)?,
        ECTP_CCT => in_range(v, 0, 3_600_000)?,
        ECTP_RXT => in_range(v, 10, 60_000)?,
        ECTP_RETRIES => in_range(v, 1, 100)?,
        ECTP_WINDOW => in_range(v, 16, 65536)?,
        ECTP_RA => in_range(v, 0, 1)?,
        ECTP_MAX_CHILDREN => in_range(v, 1, c_int::from(MAX_CHILDREN))?,
        ECTP_SLOW_TIMEOUT => in_range(v, 0, 3_600_000)?,
        _ => return Err(ENOPROTOOPT),
    };
    h.ep.configure(|c| {
        match optname {
            ECTP_TCO => c.tco = if v == ECTP_TCO_TREE { Tco::Tree } else { Tco::Flat },
            ECTP_RO => c.ro = Ro::from_u8(v as u8).ok_or(Error::Invalid)?,
            ECTP_AGN => c.agn = v as u8,
            ECTP_FDN => c.fdn = v as u8,
            ECTP_MAX_TOKENS => c.max_tokens = v as u8,
            ECTP_MSS => c.mss = v as u16,
            ECTP_HGT => c.hgt = ms(v),
            ECTP_CCT => c.cct = ms(v),
            ECTP_RXT => c.rxt = ms(v),
            ECTP_RETRIES => c.retries = v as u32,
            ECTP_WINDOW => c.window = v as u32,
            ECTP_RA => c.ra = v == 1,
            ECTP_MAX_CHILDREN => c.max_children = Some(v as u16),
            ECTP_SLOW_TIMEOUT => c.slow_timeout = (v > 0).then(|| ms(v)),
            _ => return Err(Error::Invalid),
        }
        Ok(())
    })?;
    Ok(())
}

/// Read one SOL_ECTP option.
pub fn get(h: &Handle, optname: c_int, optval: *mut c_void, optlen: *mut socklen_t) -> Result<(), Errno> {
    if optval.is_null() || optlen.is_null() {
        return Err(EFAULT);
    }
    if optname == ECTP_GROUP_KEY {
        return Err(ENOPROTOOPT); // write only
    }
    // SAFETY: optlen is non-NULL; the caller says it points to a socklen_t.
    let room = unsafe { optlen.read_unaligned() } as usize;
    if matches!(optname, ECTP_JOIN_CALLBACK | ECTP_TOKEN_CALLBACK | ECTP_LEAVE_CALLBACK) {
        if room < size_of::<ectp_join_callback>() {
            return Err(EINVAL);
        }
        let cbs = *h.callbacks.lock();
        // SAFETY (each write): optval has room for a function pointer (checked above).
        unsafe {
            match optname {
                ECTP_JOIN_CALLBACK => optval.cast::<ectp_join_callback>().write_unaligned(cbs.join),
                ECTP_TOKEN_CALLBACK => optval.cast::<ectp_token_callback>().write_unaligned(cbs.token),
                _ => optval.cast::<ectp_leave_callback>().write_unaligned(cbs.leave),
            }
            optlen.write_unaligned(size_of::<ectp_join_callback>() as socklen_t);
        }
        return Ok(());
    }
    if matches!(optname, ECTP_MAX_RATE | ECTP_RATE) {
        if room < size_of::<i64>() {
            return Err(EINVAL);
        }
        let v = if optname == ECTP_MAX_RATE { h.ep.config().max_rate } else { h.ep.rate()? };
        // No limit (u64::MAX) reads as 0, as ECTP_MAX_RATE's "no cap".
        let v = if v == u64::MAX { 0 } else { i64::try_from(v).unwrap_or(i64::MAX) };
        // SAFETY: optval has room for an int64 (checked above); optlen is valid.
        unsafe {
            optval.cast::<i64>().write_unaligned(v);
            optlen.write_unaligned(size_of::<i64>() as socklen_t);
        }
        return Ok(());
    }
    if room < size_of::<c_int>() {
        return Err(EINVAL);
    }
    let c = h.ep.config();
    let ms = |d: Duration| c_int::try_from(d.as_millis()).unwrap_or(c_int::MAX);
    let v: c_int = match optname {
        ECTP_TCO => c.tco as c_int,
        ECTP_RO => c.ro as c_int,
        ECTP_AGN => c_int::from(c.agn),
        ECTP_FDN => c_int::from(c.fdn),
        ECTP_MAX_TOKENS => c_int::from(c.max_tokens),
        ECTP_MSS => c_int::from(c.mss),
        ECTP_HGT => ms(c.hgt),
        ECTP_CCT => ms(c.cct),
        ECTP_RXT => ms(c.rxt),
        ECTP_RETRIES => c_int::try_from(c.retries).unwrap_or(c_int::MAX),
        ECTP_WINDOW => c_int::try_from(c.window).unwrap_or(c_int::MAX),
        ECTP_RX_LOSS => (h.ep.loss().0 * 100.0).round() as c_int,
        ECTP_TX_CORRUPT => (h.ep.corruption() * 100.0).round() as c_int,
        ECTP_TX_LOSS => (h.ep.loss().1 * 100.0).round() as c_int,
        ECTP_MEMBERS => c_int::try_from(h.ep.members()?).unwrap_or(c_int::MAX),
        ECTP_USER_ID => h.ep.user_info()?.0 as c_int,
        ECTP_TOKEN_ID => c_int::from(h.ep.user_info()?.1),
        ECTP_RA => c_int::from(c.ra),
        ECTP_MAX_CHILDREN => c_int::from(c.max_children.unwrap_or(if h.ep.is_owner() == Some(false) || c.ra {
            DEFAULT_RA_CHILDREN
        } else {
            DEFAULT_TO_CHILDREN
        })),
        // The member id is a uint32: the same four bytes as an int.
        ECTP_PARENT => h.ep.tree_info()?.0 as c_int,
        ECTP_TREE_LEVEL => c_int::from(h.ep.tree_info()?.1),
        ECTP_CC => c.cc as c_int,
        ECTP_SLOW_TIMEOUT => ms(c.slow_time()),
        ECTP_PAUSED => c_int::from(h.ep.is_paused()?),
        _ => return Err(ENOPROTOOPT),
    };
    // SAFETY: optval has room for an int (checked above); optlen is valid.
    unsafe {
        optval.cast::<c_int>().write_unaligned(v);
        optlen.write_unaligned(size_of::<c_int>() as socklen_t);
    }
    Ok(())
}
