//! The control tree over real sockets on IPv4 loopback, through the C API:
//! repair agents (ECTP_RA) under a TO with ECTP_TCO_TREE, ECTP_PARENT and
//! ECTP_TREE_LEVEL on the TUs, ectp_get_member / ectp_list_members and
//! ECTP_LEAVE_CALLBACK on the TO, byte-identical delivery through two
//! levels, a leaf leaving and one ejected, and the errnos of the new calls.
//! The namespace tests with loss and a killed RA are in tests/netns_tree.rs.
#![allow(unsafe_code)]

mod common;

use std::collections::HashMap;
use std::mem::size_of;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::thread;

use common::*;
use ectp::ffi::*;
use libc::{c_int, socklen_t};

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn group(n: u8) -> SocketAddr {
    format!("239.255.102.{n}:{}", unique_port()).parse().unwrap()
}

/// Departures the leave callback reported: (sd, user id) -> reasons.
static LEFT: Mutex<Vec<(c_int, u32, c_int)>> = Mutex::new(Vec::new());

extern "C" fn on_leave(sd: c_int, user_id: u32, reason: c_int) {
    LEFT.lock().unwrap().push((sd, user_id, reason));
}

fn departures(sd: c_int) -> HashMap<u32, Vec<c_int>> {
    let mut d: HashMap<u32, Vec<c_int>> = HashMap::new();
    for &(s, id, r) in LEFT.lock().unwrap().iter() {
        if s == sd {
            d.entry(id).or_default().push(r);
        }
    }
    d
}

/// A tree TO with fan-out `fanout` and the leave callback.
fn tree_owner(g: SocketAddr, fanout: c_int) -> c_int {
    let sd = new_socket(local());
    for (o, v) in [(ECTP_TCO, ECTP_TCO_TREE), (ECTP_MAX_CHILDREN, fanout), (ECTP_HGT, 300), (ECTP_RXT, 50)] {
        assert_eq!(set_int(sd, o, v), 0, "option {o}: errno {}", errno());
    }
    let cb: ectp_leave_callback = Some(on_leave);
    let r = msetsockopt(
        sd,
        SOL_ECTP,
        ECTP_LEAVE_CALLBACK,
        (&cb as *const ectp_leave_callback).cast(),
        size_of::<ectp_leave_callback>() as socklen_t,
    );
    assert_eq!(r, 0, "ECTP_LEAVE_CALLBACK: errno {}", errno());
    create_on(sd, local(), g).expect("mcreate");
    sd
}

fn member(to: c_int, id: u32) -> Result<ectp_member, c_int> {
    // SAFETY: all-zero is a valid ectp_member.
    let mut m: ectp_member = unsafe { std::mem::zeroed() };
    if ectp_get_member(to, id, &mut m) == 0 { Ok(m) } else { Err(errno()) }
}

fn list(to: c_int) -> Vec<u32> {
    let n = ectp_list_members(to, std::ptr::null_mut(), 0);
    assert!(n >= 0, "ectp_list_members: errno {}", errno());
    let mut ids = vec![0u32; n as usize + 2];
    let m = ectp_list_members(to, ids.as_mut_ptr(), ids.len());
    assert_eq!(m, n, "the count does not depend on the room");
    ids.truncate(n as usize);
    ids
}

fn uid(sd: c_int) -> u32 {
    get_int(sd, ECTP_USER_ID).unwrap() as u32
}

#[test]
fn a_two_level_tree_through_the_c_api() {
    let g = group(1);
    let to = tree_owner(g, 1);
    // One RA under the TO (fan-out 1), then two leaves under the RA (its fan-out 2).
    let ra = user(local(), g, &[(ECTP_RA, 1), (ECTP_MAX_CHILDREN, 2)]).expect("RA joins");
    assert!(wait_for(5, || member(to, uid(ra)).is_ok()), "the RA is in the tree");
    let leaves: Vec<c_int> = (0..2).map(|_| user(local(), g, &[]).expect("leaf joins")).collect();
    let ra_id = uid(ra);
    assert_eq!((get_int(ra, ECTP_PARENT), get_int(ra, ECTP_TREE_LEVEL)), (Ok(0), Ok(1)));
    for &l in &leaves {
        assert_eq!(get_int(l, ECTP_PARENT), Ok(ra_id as c_int), "a leaf's parent is the RA");
        assert_eq!(get_int(l, ECTP_TREE_LEVEL), Ok(2));
    }
    assert!(wait_for(5, || get_int(to, ECTP_MEMBERS) == Ok(3)), "ECTP_MEMBERS {:?}", get_int(to, ECTP_MEMBERS));
    let mut ids = vec![ra_id, uid(leaves[0]), uid(leaves[1])];
    ids.sort();
    assert_eq!(list(to), ids);
    let m = member(to, ra_id).unwrap();
    assert_eq!((m.parent_id, m.tree_level, m.descendants, m.is_ra), (0, 1, 2, 1));
    assert_eq!(info_from_storage(&m.addr, m.addrlen).map(|a| a.ip()), Some("127.0.0.1".parse().unwrap()));
    let lm = member(to, uid(leaves[0])).unwrap();
    assert_eq!((lm.parent_id, lm.tree_level, lm.descendants, lm.is_ra, lm.token_id), (ra_id, 2, 0, 0, 0));
    // The RA measures its children's RTT and reports it to the TO.
    assert!(wait_for(5, || member(to, uid(leaves[0])).is_ok_and(|m| m.rtt_us > 0)), "the leaf's RTT");

    // Data through two levels: byte-identical everywhere.
    let msgs: Vec<Vec<u8>> = (0..200).map(|i| pattern(1 + (i * 997) % 20000, i as u32)).collect();
    let readers: Vec<_> = std::iter::once(ra)
        .chain(leaves.iter().copied())
        .map(|sd| {
            let msgs = msgs.clone();
            thread::spawn(move || {
                for (i, m) in msgs.iter().enumerate() {
                    let (got, info) = recv(sd, 1 << 16, 0).unwrap_or_else(|e| panic!("recv {i}: errno {e}"));
                    assert_eq!(info.flags, 0);
                    assert!(got == *m, "message {i} differs");
                }
            })
        })
        .collect();
    for m in &msgs {
        assert_eq!(send(to, m), m.len() as isize);
    }
    for r in readers {
        r.join().expect("every TU received every message");
    }

    // A leaf leaves, the TO ejects the other; each reported once with its reason.
    let (gone, ejected) = (uid(leaves[0]), uid(leaves[1]));
    assert_eq!(mleave(leaves[0], 0), 0);
    assert_eq!(mleave(to, ejected), 0, "eject: errno {}", errno());
    assert_eq!(recv(leaves[1], 64, 0).map(|_| ()), Err(libc::ECONNRESET), "the ejected leaf is told");
    assert!(wait_for(5, || departures(to).len() == 2), "departures {:?}", departures(to));
    assert_eq!(departures(to), HashMap::from([(gone, vec![ECTP_LEAVE_LEFT]), (ejected, vec![ECTP_LEAVE_EJECTED])]));
    assert_eq!(member(to, gone).map(|_| ()), Err(libc::ENOENT));
    assert!(wait_for(5, || member(to, ra_id).is_ok_and(|m| m.descendants == 0)));
    assert!(wait_for(5, || get_int(to, ECTP_MEMBERS) == Ok(1)));
    assert_eq!(list(to), vec![ra_id]);
    assert_eq!(mleave(leaves[1], 0), 0, "an ejected TU still releases its descriptor");
    assert_eq!(mleave(ra, 0), 0);
    assert!(wait_for(5, || departures(to).len() == 3));
    assert_eq!(departures(to).get(&ra_id), Some(&vec![ECTP_LEAVE_LEFT]));
    assert_eq!(mterminate(to), 0);
}

fn info_from_storage(s: &libc::sockaddr_storage, len: socklen_t) -> Option<SocketAddr> {
    sockaddr_to_rust((s as *const libc::sockaddr_storage).cast(), len)
}

#[test]
fn tree_options_and_calls_give_the_contract_errnos() {
    let sd = new_socket(local());
    for (opt, bad) in [(ECTP_RA, 2), (ECTP_RA, -1), (ECTP_MAX_CHILDREN, 0), (ECTP_MAX_CHILDREN, 4097)] {
        assert_eq!(set_int(sd, opt, bad), -1);
        assert_eq!(errno(), libc::EINVAL, "option {opt} = {bad}");
    }
    for opt in [ECTP_PARENT, ECTP_TREE_LEVEL] {
        assert_eq!(set_int(sd, opt, 1), -1);
        assert_eq!(errno(), libc::ENOPROTOOPT, "option {opt} is read only");
    }
    assert_eq!(get_int(sd, ECTP_RA), Ok(0));
    assert_eq!(get_int(sd, ECTP_MAX_CHILDREN), Ok(4096), "a TO-to-be takes up to 4096");
    assert_eq!(set_int(sd, ECTP_RA, 1), 0);
    assert_eq!(get_int(sd, ECTP_MAX_CHILDREN), Ok(32), "an RA takes up to 32 by default");
    assert_eq!(get_int(sd, ECTP_PARENT), Err(libc::ENOTCONN));
    assert_eq!(ectp_list_members(sd, std::ptr::null_mut(), 0), -1);
    assert_eq!(errno(), libc::ENOTCONN);
    let _ = mleave(sd, 0);

    let g = group(2);
    let to = tree_owner(g, 4);
    let tu = user(local(), g, &[(ECTP_RA, 1)]).expect("join");
    assert_eq!(set_int(tu, ECTP_RA, 0), -1);
    assert_eq!(errno(), libc::EISCONN);
    assert_eq!(set_int(to, ECTP_MAX_CHILDREN, 8), -1);
    assert_eq!(errno(), libc::EISCONN);
    assert_eq!(get_int(to, ECTP_PARENT), Err(libc::EOPNOTSUPP), "a TU option on the TO");
    assert_eq!(get_int(to, ECTP_TREE_LEVEL), Err(libc::EOPNOTSUPP));
    // SAFETY: all-zero is a valid ectp_member.
    let mut m: ectp_member = unsafe { std::mem::zeroed() };
    assert_eq!(ectp_get_member(tu, 1, &mut m), -1);
    assert_eq!(errno(), libc::EOPNOTSUPP, "a TO call on a TU");
    assert_eq!(ectp_get_member(to, uid(tu), std::ptr::null_mut()), -1);
    assert_eq!(errno(), libc::EFAULT);
    assert_eq!(ectp_get_member(to, 0xdead_beef, &mut m), -1);
    assert_eq!(errno(), libc::ENOENT);
    assert_eq!(ectp_get_member(-5, 1, &mut m), -1);
    assert_eq!(errno(), libc::EBADF);
    assert_eq!(ectp_list_members(to, std::ptr::null_mut(), 3), -1);
    assert_eq!(errno(), libc::EFAULT);
    assert_eq!(ectp_list_members(tu, std::ptr::null_mut(), 0), -1);
    assert_eq!(errno(), libc::EOPNOTSUPP);
    let mut one = [0u32; 1];
    assert!(wait_for(5, || ectp_list_members(to, one.as_mut_ptr(), 1) == 1));
    assert_eq!(one[0], uid(tu));
    assert_eq!(ectp_list_members(to, one.as_mut_ptr(), 0), 1, "max 0: the count, nothing written");
    assert_eq!(mleave(tu, 0), 0);
    assert_eq!(mterminate(to), 0);
}
