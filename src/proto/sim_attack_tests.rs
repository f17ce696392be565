//! The attacks of issue 7 on a connection without a key, in the
//! deterministic simulation: each one as the issue found it, and what the
//! connection does about it now. An attacker on the TO's host (its IP, another
//! port), or with the exact address of the TO or a TU; the keyed versions
//! are in `sim_key_tests`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use super::sim::{OWNER_ADDR, Sim, keyed_run, messages, user_addr};
use super::{Config, End, Event, LeaveReason, Message, Rng, Stats};
use crate::wire::{AckInfo, Elements, Header, Membership, Packet, PacketType, Psn, Ro};

const SEC: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Another port of the TO's host: any unprivileged process there.
fn neighbour() -> SocketAddr {
    SocketAddr::new(OWNER_ADDR.ip(), 6000)
}

#[track_caller]
fn assert_exactly(who: &str, got: &[Message], sent: &[Vec<u8>]) {
    assert_eq!(got.len(), sent.len(), "{who}: number of messages delivered");
    for (k, (g, s)) in got.iter().zip(sent).enumerate() {
        assert!(g.data == *s, "{who}: message {k} differs ({} bytes delivered, {} sent)", g.data.len(), s.len());
        assert!(!g.gap, "{who}: message {k} has the gap flag");
    }
}

fn forged(ty: PacketType, conn: u32, psn: u32, flag: bool, data: &[u8], f: impl FnOnce(&mut Elements)) -> Vec<u8> {
    let mut elements = Elements::default();
    f(&mut elements);
    let header = Header { packet_type: ty, connection_id: conn, psn, flag, token_id: 0 };
    let mut buf = vec![0u8; super::MAX_DATAGRAM];
    let n = Packet { header, elements, data }.emit(&mut buf).expect("emit");
    buf.truncate(n);
    buf
}

/// PSN the TO's next DATA will carry.
fn next_psn(sim: &Sim) -> u32 {
    let last = sim.sent.iter().rev().find(|r| r.from == OWNER_ADDR && r.packet_type == PacketType::Data);
    Psn(last.expect("DATA sent").psn).next().0
}

fn drops(s: &Stats) -> [u64; 4] {
    [s.dropped_source, s.dropped_length, s.dropped_range, s.dropped_unexpected]
}

fn cfg() -> Config {
    Config { hgt: ms(200), rxt: ms(50), fdn: 3, ..Config::default() }
}

#[test]
fn data_ctr_ulr_and_far_jumps_from_another_port_of_the_tos_host_are_dropped() {
    if keyed_run() {
        return; // bare forgeries: see sim_key_tests
    }
    for ro in [Ro::Reliable, Ro::SemiReliable, Ro::Unreliable] {
        let cfg = Config { ro, ..cfg() };
        let mut sim = Sim::joined(cfg, 2, 81);
        let conn = sim.owner().connection_id();
        let ids: Vec<u32> = (0..2).map(|i| sim.user(i).member_id()).collect();
        let msgs = messages(&mut Rng::new(81), 0, 300, 1..=2000);
        let mut per_tu = 0;
        for chunk in msgs.chunks(30) {
            sim.owner_send_all(chunk);
            sim.run_for(ms(5));
            let psn = next_psn(&sim);
            for (i, &id) in ids.iter().enumerate() {
                for f in [
                    // DATA in place of the next real segment, without a gap flag.
                    forged(PacketType::Data, conn, psn, true, b"forged", |_| {}),
                    // A normal-looking end, and the TU's ejection.
                    forged(PacketType::Ctr, conn, Psn(psn).sub(1).0, false, b"", |_| {}),
                    forged(PacketType::Ulr, conn, 0, false, b"", |e| e.membership = Some(Membership::of(id))),
                    // Jumps far ahead: HB, NDATA, DATA.
                    forged(PacketType::Hb, conn, Psn(psn).add(1 << 30).0, false, b"", |_| {}),
                    forged(PacketType::Ndata, conn, Psn(psn).add(60_000).0, false, b"", |_| {}),
                    forged(PacketType::Data, conn, Psn(psn).add(60_000).0, true, b"far", |_| {}),
                ] {
                    sim.inject(neighbour(), user_addr(i), &f);
                    if i == 0 {
                        per_tu += 1;
                    }
                }
            }
        }
        sim.run_until_delivered(&[0, 1], msgs.len(), 10 * SEC);
        sim.owner_mut().terminate();
        sim.run_until(5 * SEC, "the TO closes", |s| s.owner().is_closed());
        for i in 0..2 {
            assert_exactly(&format!("{ro:?} TU {i}"), &sim.users[i].delivered, &msgs);
            assert_eq!(sim.user(i).end(), Some(End::Terminated), "{ro:?} TU {i}");
            assert_eq!(sim.user(i).stats().dropped_source, per_tu, "{ro:?} TU {i}: each forgery dropped");
        }
    }
}

#[test]
fn member_and_connection_ids_are_unpredictable() {
    let mut sim = Sim::new(82);
    sim.add_owner(cfg());
    for _ in 0..60 {
        sim.add_user(cfg());
    }
    sim.run_until(5 * SEC, "joined", |s| s.all_joined(60));
    let ids: Vec<u32> = (0..60).map(|i| sim.user(i).member_id()).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 60, "distinct");
    assert!(ids.iter().all(|&id| (1..1 << 31).contains(&id)), "positive as an int: {ids:?}");
    // Not a count: no two in a row close together, none small.
    assert!(ids.windows(2).all(|w| w[0].abs_diff(w[1]) > 1000), "{ids:?}");
    assert!(ids.iter().all(|&id| id > 1000), "{ids:?}");
    // Another seed, other identifiers.
    let other = Sim::joined(cfg(), 1, 83);
    assert_ne!(other.owner().connection_id(), sim.owner().connection_id());
    assert_ne!(other.user(0).member_id(), sim.user(0).member_id());
}

#[test]
fn oversize_data_and_data_on_control_packets_are_dropped_even_from_the_exact_address() {
    if keyed_run() {
        return;
    }
    let mut sim = Sim::joined(Config { mss: 1400, ..cfg() }, 1, 84);
    let msgs = messages(&mut Rng::new(84), 0, 20, 1..=3000);
    sim.owner_send_all(&msgs[..10]);
    sim.run_until_delivered(&[0], 10, SEC);
    let conn = sim.owner().connection_id();
    let psn = next_psn(&sim);
    let before = drops(sim.user(0).stats());
    // 65,491 bytes of DATA: far over the MSS (the legacy library delivered it as a message).
    sim.inject(OWNER_ADDR, user_addr(0), &forged(PacketType::Data, conn, psn, true, &vec![7; 65_491], |_| {}));
    // Control packets with user data.
    sim.inject(OWNER_ADDR, user_addr(0), &forged(PacketType::Hb, conn, psn, false, b"extra", |_| {}));
    sim.inject(OWNER_ADDR, user_addr(0), &forged(PacketType::Ndata, conn, psn, false, b"extra", |_| {}));
    // And to the TO: an ACK with data from the TU's exact address.
    let id = sim.user(0).member_id();
    let ack = forged(PacketType::Ack, conn, 0, false, b"x", |e| {
        e.membership = Some(Membership::of(id));
        e.ack = Some(AckInfo::new(psn, 1));
    });
    let owner_before = drops(sim.owner().stats());
    sim.inject(user_addr(0), OWNER_ADDR, &ack);
    sim.owner_send_all(&msgs[10..]);
    sim.run_until_delivered(&[0], 20, SEC);
    assert_exactly("TU", &sim.users[0].delivered, &msgs);
    let after = drops(sim.user(0).stats());
    assert_eq!(after[1] - before[1], 3, "dropped for their length");
    assert_eq!(drops(sim.owner().stats())[1] - owner_before[1], 1);
}

/// `f` costs one step per segment held whatever the jump: a receiver that
/// walked the distance would spend minutes here (2^30 PSNs), and the
/// simulation would not end.
#[test]
fn far_jumps_from_the_exact_address_cost_a_window_at_most_in_every_mode() {
    if keyed_run() {
        return;
    }
    for ro in [Ro::Reliable, Ro::SemiReliable, Ro::Unreliable] {
        let cfg = Config { ro, window: 64, ..cfg() };
        let mut sim = Sim::joined(cfg, 2, 85);
        let conn = sim.owner().connection_id();
        let msgs = messages(&mut Rng::new(85), 0, 40, 1..=1000);
        sim.owner_send_all(&msgs[..20]);
        sim.run_until_delivered(&[0, 1], 20, SEC);
        let psn = next_psn(&sim);
        let far = Psn(psn).add(1 << 30).0;
        let before = drops(sim.user(0).stats());
        for f in [
            forged(PacketType::Hb, conn, far, false, b"", |_| {}),
            forged(PacketType::Ndata, conn, far, false, b"", |_| {}),
            forged(PacketType::Data, conn, far, true, b"far", |_| {}),
            forged(PacketType::Ctr, conn, far, false, b"", |_| {}),
        ] {
            sim.inject(OWNER_ADDR, user_addr(0), &f);
        }
        sim.run_for(ms(10));
        let after = drops(sim.user(0).stats());
        if ro == Ro::Reliable {
            // Nothing can be that far ahead: each one is a lie, and dropped.
            assert_eq!(after[2] - before[2], 3, "{ro:?}: NDATA, DATA and CTR beyond the window");
            sim.owner_send_all(&msgs[20..]);
            sim.run_until_delivered(&[0, 1], 40, 2 * SEC);
            assert_exactly("reliable TU 0", &sim.users[0].delivered, &msgs);
            assert_eq!(sim.user(0).end(), None);
        } else {
            // The TO does not wait in these modes: a receiver takes the jump, a
            // window at most per packet (one step per segment held), and the
            // forged CTR ends the connection (it cannot be told from the TO's
            // without a key). The other TU is not touched.
            assert!(sim.user(0).end().is_some(), "{ro:?}");
        }
        sim.owner_send_all(&msgs[20..]);
        sim.run_until_delivered(&[1], 40, 2 * SEC);
        assert_exactly(&format!("{ro:?} TU 1"), &sim.users[1].delivered, &msgs);
    }
}

/// A member of the attacker's making at `addr`: it joined by the book, and
/// from now on only sends `keepalive` (HBACK or LJR) every 100 ms, never an
/// acknowledgement.
fn stall(sim: &mut Sim, victim: usize, keepalive: PacketType, until: Duration) {
    let conn = sim.owner().connection_id();
    let id = sim.user(victim).member_id();
    let addr = user_addr(victim);
    sim.kill_user(victim);
    let p = match keepalive {
        PacketType::Ljr => forged(PacketType::Ljr, 0, 0, false, &[0; 84], |e| e.membership = Some(Membership::of(id))),
        ty => forged(ty, conn, 0, false, b"", |e| e.membership = Some(Membership::of(id))),
    };
    let end = sim.elapsed() + until;
    while sim.elapsed() < end {
        sim.inject(addr, OWNER_ADDR, &p);
        sim.run_for(ms(100));
    }
}

#[test]
fn a_member_that_never_acknowledges_is_ejected_within_fdn_x_hgt_whatever_else_it_sends() {
    for keepalive in [PacketType::Hback, PacketType::Ljr] {
        let cfg = Config { window: 64, ..cfg() };
        let mut sim = Sim::joined(cfg, 3, 86);
        let id = sim.user(2).member_id();
        let msgs = messages(&mut Rng::new(86), 0, 400, 100..=1000);
        // Data waits for the staller from here.
        sim.owner_send_all(&msgs[..50]);
        let t0 = sim.elapsed();
        stall(&mut sim, 2, keepalive, ms(1500));
        let left = sim.events.iter().position(|e| matches!(e, Event::Left { user_id, .. } if *user_id == id));
        assert!(left.is_some(), "{keepalive:?}: the staller is ejected");
        assert!(
            matches!(sim.events[left.unwrap()], Event::Left { reason: LeaveReason::Failed, .. }),
            "{keepalive:?}: as failed"
        );
        // It was out within FDN x HGT of the data it did not acknowledge, plus a heartbeat tick.
        let sent_ulr = sim
            .sent
            .iter()
            .find(|r| {
                r.from == OWNER_ADDR && r.packet_type == PacketType::Ulr && r.dest == super::Dest::Unicast(user_addr(2))
            })
            .map(|r| r.at);
        let bound = cfg.failure_time() + cfg.hgt + ms(5);
        assert!(sent_ulr.is_some_and(|at| at - t0 <= bound), "{keepalive:?}: ejected at {sent_ulr:?}, bound {bound:?}");
        sim.owner_send_all(&msgs[50..]);
        sim.run_until_delivered(&[0, 1], msgs.len(), 10 * SEC);
        for i in 0..2 {
            assert_exactly(&format!("{keepalive:?} TU {i}"), &sim.users[i].delivered, &msgs);
        }
    }
}

#[test]
fn a_flood_of_join_requests_costs_bounded_memory_and_answers_and_holds_nothing() {
    if keyed_run() {
        return;
    }
    let cfg = Config { window: 64, ..cfg() };
    let mut sim = Sim::joined(cfg, 1, 87);
    let msgs = messages(&mut Rng::new(87), 0, 200, 100..=1000);
    let ljr = forged(PacketType::Ljr, 0, 0, false, &[0; 80], |_| {});
    let mut asked = 0;
    // 3000 joiners from 1000 addresses of 3 hosts, who never attach.
    for host in 0..3u8 {
        for port in 0..1000u16 {
            let from = SocketAddr::from(([10, 9, host, 1], 20000 + port));
            sim.inject(from, OWNER_ADDR, &ljr);
            asked += ljr.len();
        }
        sim.run_for(ms(1));
    }
    for chunk in msgs.chunks(20) {
        sim.owner_send_all(chunk);
        sim.run_for(ms(50));
    }
    sim.run_until_delivered(&[0], msgs.len(), 10 * SEC);
    assert_exactly("TU", &sim.users[0].delivered, &msgs);
    let answers: Vec<_> = sim
        .sent
        .iter()
        .filter(|r| {
            r.from == OWNER_ADDR && r.dest != super::Dest::Group && r.dest != super::Dest::Unicast(user_addr(0))
        })
        .collect();
    let answered: usize = answers.iter().map(|r| r.len).sum();
    assert!(answers.len() <= 3 * 64, "at most 64 joiners at a time per IP: {} answers", answers.len());
    assert!(answered <= asked, "never more bytes out than in: {answered} for {asked}");
    assert!(answers.iter().all(|r| r.len <= ljr.len()), "no answer larger than its request");
    assert_eq!(sim.owner().active_members(), 1);
    assert_eq!(sim.owner().adn(), 1, "ECTP_MEMBERS counts nobody who did not attach");
    sim.run_for(5 * SEC);
    assert_eq!(sim.owner().in_window(), 0, "nothing held for them");
}

#[test]
fn a_spoofed_leave_is_answered_so_the_real_member_learns_it_is_out() {
    if keyed_run() {
        return;
    }
    let mut sim = Sim::joined(cfg(), 2, 88);
    let conn = sim.owner().connection_id();
    let id = sim.user(0).member_id();
    let leave = forged(PacketType::Ulr, conn, 0, true, b"", |e| e.membership = Some(Membership::of(id)));
    sim.inject(user_addr(0), OWNER_ADDR, &leave);
    sim.run_for(SEC);
    // Without a key the forgery cannot be told from the real thing; but the
    // member is not dropped silently: it is told, and its next mrecvmsg fails.
    assert!(sim.owner().member(id).is_none());
    assert_eq!(sim.user(0).end(), Some(End::Reset));
    assert_eq!(sim.user(1).end(), None);
}

#[test]
fn a_tu_cut_off_longer_than_fdn_x_hgt_and_healed_is_told_and_never_delivers_with_holes() {
    for ro in [Ro::Reliable, Ro::SemiReliable] {
        let cfg = Config { ro, ..cfg() };
        let mut sim = Sim::joined(cfg, 2, 89);
        let id = sim.user(0).member_id();
        let msgs = messages(&mut Rng::new(89), 0, 200, 100..=1000);
        sim.owner_send_all(&msgs[..50]);
        sim.run_until_delivered(&[0, 1], 50, SEC);
        let cut = std::rc::Rc::new(std::cell::Cell::new(true));
        let c = cut.clone();
        sim.set_filter(move |w| c.get() && (w.from == user_addr(0) || w.to == user_addr(0)));
        sim.owner_send_all(&msgs[50..100]);
        sim.run_for(cfg.failure_time() * 3);
        assert!(sim.owner().member(id).is_none(), "{ro:?}: ejected while cut off");
        cut.set(false);
        sim.owner_send_all(&msgs[100..]);
        sim.run_for(2 * SEC);
        assert_eq!(sim.user(0).end(), Some(End::Reset), "{ro:?}: it knows it is out");
        assert_exactly(&format!("{ro:?} cut-off TU"), &sim.users[0].delivered, &msgs[..50]);
        sim.run_until_delivered(&[1], msgs.len(), 5 * SEC);
        assert_exactly(&format!("{ro:?} TU 1"), &sim.users[1].delivered, &msgs);
    }
}
