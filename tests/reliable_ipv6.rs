//! Reliable delivery under in-library loss over IPv6, both directions.
//! IPv6 multicast does not work on `lo`, so the test re-runs itself inside a
//! private network namespace with a veth pair (`unshare -n`, needs root);
//! elsewhere it says so and skips.

mod common;
use common::*;
use ectp::ffi::*;
use std::net::SocketAddr;
use std::thread;

fn lossy_ipv6(loss: i32, group: &str) {
    let p = port();
    let local: SocketAddr = "[fd00::1]:0".parse().unwrap();
    let group: SocketAddr = format!("[{group}]:{p}").parse().unwrap();
    let fast = [(ECTP_HGT, 200), (ECTP_FDN, 5), (ECTP_RXT, 40), (ECTP_RETRIES, 50)];
    let to = owner(local, group, &fast);
    let tu = user(local, group, &fast).expect("join over IPv6");
    for sd in [to, tu] {
        assert_eq!(set_int(sd, ECTP_RX_LOSS, loss), 0);
        assert_eq!(set_int(sd, ECTP_TX_LOSS, loss), 0);
    }
    let msgs: Vec<Vec<u8>> = (0..150).map(|i| pattern([1, 1400, 1401, 9000][i % 4], i as u32)).collect();
    let expect = msgs.clone();
    let reader = thread::spawn(move || {
        for (i, m) in expect.iter().enumerate() {
            let (got, info) = recv(tu, 1 << 16, 0).unwrap_or_else(|e| panic!("recv {i}: errno {e}"));
            assert_eq!(info.flags, 0);
            assert!(&got == m, "message {i} byte-identical");
        }
        let id = mtoken_get(tu);
        assert!(id > 0, "mtoken_get: errno {}", errno());
        for j in 0..30u32 {
            assert!(send_su(tu, &pattern(50 + j as usize * 400, 7000 + j)) > 0);
        }
        assert_eq!(mtoken_return(tu), 0);
        tu
    });
    for m in &msgs {
        assert_eq!(send(to, m), m.len() as isize);
    }
    for j in 0..30u32 {
        let (got, info) = recv(to, 1 << 16, 0).expect("TO recv");
        assert!(got == pattern(50 + j as usize * 400, 7000 + j), "backward message {j}");
        assert_eq!(info_from(&info).map(|a| a.ip()), Some("fd00::1".parse().unwrap()));
    }
    let tu = reader.join().expect("reader");
    assert!(stats(to).rdata_sent > 0 && stats(to).dropped_injected > 0);
    assert_eq!(mterminate(to), 0);
    assert_eq!(recv(tu, 16, 0).map(|r| r.0.len()), Ok(0));
    assert_eq!(mleave(tu, 0), 0);
}

macro_rules! ipv6_loss_test {
    ($name:ident, $loss:expr, $group:expr) => {
        #[test]
        fn $name() {
            if in_ipv6_netns(stringify!($name)) {
                lossy_ipv6($loss, $group);
            }
        }
    };
}

ipv6_loss_test!(reliable_ipv6_with_1_percent_loss, 1, "ff15::ec7b:31");
ipv6_loss_test!(reliable_ipv6_with_5_percent_loss, 5, "ff15::ec7b:35");
ipv6_loss_test!(reliable_ipv6_with_20_percent_loss, 20, "ff15::ec7b:320");
