//! Reliable delivery under in-library loss (ECTP_RX_LOSS / ECTP_TX_LOSS on
//! every endpoint, both directions): every message arrives, byte-identical,
//! in order, with no duplicates and no gap flag, forward and backward.

mod common;
use common::*;
use ectp::ffi::*;
use std::net::SocketAddr;
use std::thread;

const MESSAGES: usize = 150;
const BACK: usize = 30;

fn stream() -> Vec<Vec<u8>> {
    (0..MESSAGES).map(|i| pattern([1, 700, 1400, 1401, 5000, 20000][i % 6], i as u32)).collect()
}

fn lossy_round_trip(group_base: &str, loss: i32) {
    let p = port();
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let group: SocketAddr = format!("{group_base}:{p}").parse().unwrap();
    let fast = [(ECTP_HGT, 200), (ECTP_FDN, 5), (ECTP_RXT, 40), (ECTP_RETRIES, 50)];
    let to = owner(local, group, &fast);
    let tus: Vec<i32> = (0..2).map(|_| user(local, group, &fast).expect("join")).collect();
    for &sd in tus.iter().chain([&to]) {
        assert_eq!(set_int(sd, ECTP_RX_LOSS, loss), 0);
        assert_eq!(set_int(sd, ECTP_TX_LOSS, loss), 0);
    }
    let msgs = stream();
    let readers: Vec<_> = tus
        .iter()
        .map(|&tu| {
            let expect = msgs.clone();
            thread::spawn(move || {
                for (i, m) in expect.iter().enumerate() {
                    let (got, info) = recv(tu, 1 << 16, 0).unwrap_or_else(|e| panic!("TU recv {i}: errno {e}"));
                    assert_eq!(info.flags & ECTP_MSG_GAP, 0, "gap before message {i}");
                    assert!(&got == m, "message {i}: {} bytes, expected {}", got.len(), m.len());
                }
                // Backward: the token, then BACK messages, then return it.
                let id = mtoken_get(tu);
                assert!(id > 0, "mtoken_get: errno {}", errno());
                for j in 0..BACK {
                    let m = pattern(100 + j * 300, 1000 + tu as u32 * 100 + j as u32);
                    assert_eq!(send_su(tu, &m), m.len() as isize);
                }
                assert_eq!(mtoken_return(tu), 0, "mtoken_return: errno {}", errno());
                tu
            })
        })
        .collect();
    for m in &msgs {
        assert_eq!(send(to, m), m.len() as isize);
    }
    // The TO reads both SUs' streams; each in order, none lost or repeated.
    let mut next = std::collections::HashMap::new();
    for _ in 0..2 * BACK {
        let (got, info) = recv(to, 1 << 16, 0).expect("TO recv");
        let tu_sd =
            tus.iter().copied().find(|&sd| get_int(sd, ECTP_USER_ID) == Ok(info.user_id as i32)).unwrap_or_else(|| {
                panic!(
                    "unknown user {} ({:?} {:?}) len {}",
                    info.user_id,
                    get_int(tus[0], ECTP_USER_ID),
                    get_int(tus[1], ECTP_USER_ID),
                    got.len()
                )
            });
        let j = next.entry(info.user_id).or_insert(0usize);
        let want = pattern(100 + *j * 300, 1000 + tu_sd as u32 * 100 + *j as u32);
        assert!(got == want, "backward message {j} of user {}", info.user_id);
        assert_eq!(info.flags, 0);
        *j += 1;
    }
    for r in readers {
        r.join().expect("reader thread");
    }
    let s = stats(to);
    if loss > 0 {
        assert!(
            s.dropped_injected > 0 && s.rdata_sent > 0,
            "loss was injected and repaired: {} {}",
            s.dropped_injected,
            s.rdata_sent
        );
    }
    assert_eq!(get_int(to, ECTP_MEMBERS), Ok(2), "nobody was ejected");
    assert_eq!(mterminate(to), 0);
    for &tu in &tus {
        let (end, _) = recv(tu, 16, 0)
            .unwrap_or_else(|e| panic!("end of connection: errno {e}, {:?}", stats(tu).packets_received));
        assert!(end.is_empty());
        assert_eq!(stats(tu).gaps, 0);
        assert_eq!(mleave(tu, 0), 0);
    }
}

#[test]
fn reliable_with_1_percent_loss() {
    lossy_round_trip("239.255.31.1", 1);
}

#[test]
fn reliable_with_5_percent_loss() {
    lossy_round_trip("239.255.31.5", 5);
}

#[test]
fn reliable_with_20_percent_loss() {
    lossy_round_trip("239.255.31.20", 20);
}
