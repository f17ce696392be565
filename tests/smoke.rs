mod common;
use common::*;
use ectp::ffi::*;
use std::net::SocketAddr;

#[test]
fn one_to_and_one_tu_over_ipv4() {
    let p = port();
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let group: SocketAddr = format!("239.255.77.1:{p}").parse().unwrap();
    let to = owner(local, group, &[(ECTP_RO, ECTP_RO_UNRELIABLE)]);
    let tu = user("127.0.0.1:0".parse().unwrap(), group, &[]).expect("join");
    let msgs: Vec<Vec<u8>> = (0..50).map(|i| pattern(100 + i * 997, i as u32)).collect();
    for m in &msgs {
        assert_eq!(send(to, m), m.len() as isize);
    }
    for m in &msgs {
        let (got, _) = recv(tu, 1 << 20, 0).expect("recv");
        assert_eq!(&got, m);
    }
    let id = mtoken_get(tu);
    assert!(id >= 1, "token errno {}", errno());
    assert_eq!(send_su(tu, b"token data"), 10);
    let (got, info) = recv(to, 100, 0).unwrap();
    assert_eq!(got, b"token data");
    assert_eq!(info.token_id as i32, id);
    assert_eq!(mtoken_return(tu), 0);
    assert_eq!(mterminate(to), 0);
    let (got, _) = recv(tu, 100, 0).unwrap();
    assert!(got.is_empty());
    assert_eq!(mleave(tu, 0), 0);
}
