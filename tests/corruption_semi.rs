//! Corrupted packets are discarded by the checksum and recovered; the
//! semi-reliable mode under loss delivers what it can, flags gaps, never stalls.

mod common;
use common::*;
use ectp::ffi::*;
use std::net::SocketAddr;
use std::thread;

/// Message `i`: its index in the first 4 bytes, then deterministic content.
fn message(i: u32) -> Vec<u8> {
    let mut m = i.to_be_bytes().to_vec();
    m.extend(pattern(200 + (i as usize * 37) % 3000, i));
    m
}

#[test]
fn corrupted_packets_are_dropped_by_the_checksum_and_repaired() {
    let p = port();
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let group: SocketAddr = format!("239.255.41.1:{p}").parse().unwrap();
    let fast = [(ECTP_HGT, 200), (ECTP_FDN, 5), (ECTP_RXT, 40), (ECTP_RETRIES, 50)];
    let to = owner(local, group, &fast);
    let tu = user(local, group, &fast).expect("join");
    assert_eq!(set_int(to, ECTP_TX_CORRUPT, 10), 0);
    assert_eq!(set_int(tu, ECTP_TX_CORRUPT, 10), 0);
    assert_eq!(get_int(to, ECTP_TX_CORRUPT), Ok(10));
    let reader = thread::spawn(move || {
        for i in 0..300 {
            let (got, info) = recv(tu, 1 << 16, 0).expect("recv");
            assert_eq!(info.flags, 0);
            assert!(got == message(i), "message {i} intact");
        }
        let id = mtoken_get(tu);
        assert!(id > 0, "mtoken_get: errno {}", errno());
        for j in 0..20 {
            assert!(send_su(tu, &message(10_000 + j)) > 0);
        }
        assert_eq!(mtoken_return(tu), 0);
        tu
    });
    for i in 0..300 {
        assert!(send(to, &message(i)) > 0);
    }
    for j in 0..20 {
        let (got, _) = recv(to, 1 << 16, 0).expect("TO recv");
        assert!(got == message(10_000 + j), "backward message {j} intact");
    }
    let tu = reader.join().unwrap();
    let (s_to, s_tu) = (stats(to), stats(tu));
    assert!(s_tu.dropped_malformed > 0 && s_tu.dropped_checksum > 0, "the TU caught corrupted packets");
    assert!(s_to.dropped_malformed > 0, "the TO caught corrupted packets");
    assert!(s_to.rdata_sent > 0, "what was discarded was repaired");
    assert_eq!(mterminate(to), 0);
    assert_eq!(recv(tu, 16, 0).map(|r| r.0.len()), Ok(0));
    assert_eq!(mleave(tu, 0), 0);
}

#[test]
fn semi_reliable_under_loss_flags_gaps_and_never_stalls() {
    log_to_stderr();
    let p = port();
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let group: SocketAddr = format!("239.255.41.2:{p}").parse().unwrap();
    let opts = [
        (ECTP_RO, ECTP_RO_SEMIRELIABLE),
        (ECTP_WINDOW, 16),
        (ECTP_HGT, 100),
        (ECTP_FDN, 10),
        (ECTP_RXT, 40),
        (ECTP_RETRIES, 50),
    ];
    let to = owner(local, group, &opts);
    let tu = user(local, group, &opts[3..]).expect("join");
    assert_eq!(get_int(tu, ECTP_RO), Ok(ECTP_RO_SEMIRELIABLE));
    assert_eq!(set_int(tu, ECTP_RX_LOSS, 30), 0);
    const N: u32 = 2000;
    for i in 0..N {
        // Never blocks on acknowledgements in this mode: the buffer is bounded instead.
        assert!(send(to, &message(i)) > 0);
    }
    let mut last = None;
    let mut delivered = 0;
    let mut gaps = 0;
    while last != Some(N - 1) {
        let (got, info) = recv(tu, 1 << 16, 0).expect("the stream never stalls");
        let i = u32::from_be_bytes(got[..4].try_into().unwrap());
        assert!(got == message(i), "message {i} delivered intact");
        assert!(last.is_none_or(|l| i > l), "in order, no duplicates: {i} after {last:?}");
        if last.is_some_and(|l| i != l + 1) {
            assert_ne!(info.flags & ECTP_MSG_GAP, 0, "a gap before {i} is flagged");
            gaps += 1;
        }
        last = Some(i);
        delivered += 1;
    }
    println!("semi-reliable, 30% loss: {delivered} of {N} messages delivered, {gaps} gaps flagged");
    assert!(gaps > 0, "with a 16-packet buffer and 30% loss some data is given up");
    assert!(delivered > N / 10, "most of what the buffer held was repaired");
    assert_eq!(mterminate(to), 0);
    assert_eq!(recv(tu, 16, 0).map(|r| r.0.len()), Ok(0));
    assert_eq!(mleave(tu, 0), 0);
}
