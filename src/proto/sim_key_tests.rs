//! Keyed connections (ECTP_GROUP_KEY) in the deterministic simulation:
//! everything delivered as without a key, every packet sealed, a wrong key
//! or no key kept out, and forged, spoofed and replayed packets of no effect
//! (issue 7).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use super::crypto::{self, Cipher};
use super::sim::{Direction, OWNER_ADDR, Sim, messages, user_addr};
use super::{Config, End, JoinStatus, Message, Rng, Security, Stats};
use crate::wire::{AckInfo, Auth, Elements, Header, KeyKind, Membership, Packet, PacketType, Tco};

const SEC: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[track_caller]
fn assert_exactly(who: &str, got: &[Message], sent: &[Vec<u8>]) {
    assert_eq!(got.len(), sent.len(), "{who}: number of messages delivered");
    for (k, (g, s)) in got.iter().zip(sent).enumerate() {
        assert!(g.data == *s, "{who}: message {k} differs ({} bytes delivered, {} sent)", g.data.len(), s.len());
        assert!(!g.gap, "{who}: message {k} has the gap flag");
    }
}

fn keyed(cfg: Config, key: &[u8]) -> Config {
    Config { security: Security::new(key), ..cfg }
}

const KEY: [u8; 32] = *b"a group key of thirty-two bytes!";

/// A datagram seen on the wire.
#[derive(Clone, Debug)]
struct Seen {
    from: std::net::SocketAddr,
    to: std::net::SocketAddr,
    bytes: Vec<u8>,
}

/// Record every datagram delivered on the wire (a copy per receiver).
fn capture(sim: &mut Sim) -> Rc<RefCell<Vec<Seen>>> {
    let log = Rc::new(RefCell::new(Vec::new()));
    capture_into(sim, &log);
    log
}

/// Record into `log` again (after `clear_loss`, which removes the filter).
fn capture_into(sim: &mut Sim, log: &Rc<RefCell<Vec<Seen>>>) {
    let l = log.clone();
    sim.set_filter(move |w| {
        l.borrow_mut().push(Seen { from: w.from, to: w.to, bytes: w.bytes.to_vec() });
        false
    });
}

#[test]
fn a_keyed_flat_connection_delivers_everything_and_seals_every_packet() {
    let cfg = keyed(Config { mss: 700, ..Config::default() }, &KEY);
    let mut sim = Sim::new(71);
    let log = capture(&mut sim);
    sim.add_owner(cfg);
    for _ in 0..3 {
        sim.add_user(cfg);
    }
    sim.run_until(5 * SEC, "every TU joined", |s| s.all_joined(3));
    let msgs = messages(&mut Rng::new(71), 0, 200, 1..=3000);
    sim.owner_send_all(&msgs);
    sim.run_until_delivered(&[0, 1, 2], 200, 10 * SEC);
    sim.run_for(SEC);
    for (i, u) in sim.users.iter().enumerate() {
        assert_exactly(&format!("TU {i}"), &u.delivered, &msgs);
    }
    let log = log.borrow();
    // What each DATA would begin with in clear: 16 bytes at each MSS boundary of each message.
    let clear: std::collections::HashSet<&[u8]> =
        msgs.iter().flat_map(|m| m.chunks(700)).filter_map(|c| c.get(..16)).collect();
    let mut kinds = std::collections::BTreeMap::new();
    for s in log.iter() {
        let p = Packet::parse(&s.bytes).expect("every datagram parses");
        let a = p.elements.auth.unwrap_or_else(|| panic!("{:?} without Authentication", p.header.packet_type));
        *kinds.entry((p.header.packet_type.name(), a.kind as u8)).or_insert(0) += 1;
        if p.header.packet_type == PacketType::Data {
            assert!(p.data.get(..16).is_none_or(|d| !clear.contains(d)), "DATA in clear");
        }
    }
    // The join under the join key, the data under the group key, the rest under member keys.
    let kind = |ty: &str, k: KeyKind| kinds.get(&(ty, k as u8)).copied().unwrap_or(0);
    assert_eq!(kind("LJR", KeyKind::Join), 3, "{kinds:?}");
    assert_eq!(kind("LJC", KeyKind::Join), 3, "{kinds:?}");
    assert_eq!(kind("TJR", KeyKind::Member), 3, "{kinds:?}");
    assert!(kind("DATA", KeyKind::Group) > 0, "{kinds:?}");
    assert!(kind("ACK", KeyKind::Member) > 0, "{kinds:?}");
    // Nonces never repeat under one key: per source and destination (a
    // group datagram reaches every TU, the same copy each), each (kind,
    // sender, counter) is one datagram only.
    let mut nonces = std::collections::HashMap::new();
    for s in log.iter() {
        let p = Packet::parse(&s.bytes).unwrap();
        let a = p.elements.auth.unwrap();
        let to = if a.kind == KeyKind::Group { None } else { Some(s.to) };
        let first = nonces.entry((s.from, to, a.kind as u8, a.sender, a.counter)).or_insert_with(|| s.bytes.clone());
        assert!(*first == s.bytes, "a nonce used for two different packets");
    }
    assert_eq!(sim.owner().stats().dropped_auth, 0);
    for u in &sim.users {
        assert_eq!(u.user().stats().dropped_auth, 0);
        assert_eq!(u.user().stats().dropped_replay, 0);
    }
}

/// A packet sealed with `key` as `kind` from `sender`: what an attacker who
/// holds that key can make.
#[allow(clippy::too_many_arguments)]
fn forge(h: Header, mut e: Elements, data: &[u8], kind: KeyKind, sender: u32, counter: u64, key: &[u8; 32]) -> Vec<u8> {
    let auth = Auth { kind, sender, counter, tag: [0; 16] };
    e.auth = Some(auth);
    let mut buf = vec![0u8; 2048];
    let c = Cipher::new(key).unwrap();
    let n =
        Packet { header: h, elements: e, data }.emit_sealed(&mut buf, |aad, d| c.seal(&auth.nonce(), aad, d)).unwrap();
    buf.truncate(n);
    buf
}

/// The same packet without any Authentication element.
fn bare(h: Header, e: Elements, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n = Packet { header: h, elements: e, data }.emit(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn header(ty: PacketType, conn: u32, psn: u32, flag: bool) -> Header {
    Header { packet_type: ty, connection_id: conn, psn, flag, token_id: 0 }
}

/// What an insider (a member, holding the group key) learns from the
/// first LJC it sees on the wire: the connection and the TO's salt, hence
/// the group key.
fn insider_group_key(log: &[Seen]) -> (u32, [u8; 32]) {
    let ljc = log
        .iter()
        .filter_map(|s| Packet::parse(&s.bytes).ok())
        .find(|p| p.header.packet_type == PacketType::Ljc)
        .expect("an LJC on the wire");
    let salt = ljc.elements.key.expect("the TO's key share").salt;
    let conn = ljc.header.connection_id;
    (conn, crypto::group_key(&KEY, &salt, conn))
}

/// Dropped counts as `(auth, replay)`.
fn drops(s: &Stats) -> (u64, u64) {
    (s.dropped_auth, s.dropped_replay)
}

#[test]
fn a_keyed_tree_with_loss_delivers_everything_over_link_keys() {
    let cfg = keyed(
        Config {
            tco: Tco::Tree,
            max_children: Some(3),
            hgt: ms(500),
            rxt: ms(50),
            retries: 10,
            mss: 500,
            ..Config::default()
        },
        &KEY,
    );
    let mut sim = Sim::new(72);
    let log = capture(&mut sim);
    sim.add_owner(cfg);
    for i in 0..12 {
        sim.join_one(if i < 3 { Config { ra: true, ..cfg } } else { cfg });
    }
    assert!(sim.users.iter().any(|u| u.user().parent_id() != 0), "some TUs are below repair agents");
    sim.set_loss(Direction::Forward, None, 0.02);
    sim.set_loss(Direction::Backward, None, 0.02);
    let msgs = messages(&mut Rng::new(72), 0, 400, 1..=2000);
    sim.owner_send_all(&msgs);
    sim.run_until_delivered(&(0..12).collect::<Vec<_>>(), msgs.len(), 30 * SEC);
    sim.clear_loss();
    capture_into(&mut sim, &log);
    sim.run_for(2 * SEC);
    for (i, u) in sim.users.iter().enumerate() {
        assert_exactly(&format!("TU {i}"), &u.delivered, &msgs);
        assert_eq!(u.user().end(), None);
        assert_eq!(u.user().stats().dropped_replay, 0, "TU {i}: nothing is sent twice under one counter");
    }
    assert_eq!(sim.owner().in_window(), 0);
    let links = log
        .borrow()
        .iter()
        .filter_map(|s| Packet::parse(&s.bytes).ok())
        .filter(|p| p.elements.auth.is_some_and(|a| a.kind == KeyKind::Link))
        .map(|p| p.header.packet_type)
        .collect::<std::collections::HashSet<_>>();
    for ty in [PacketType::Tjr, PacketType::Tjc, PacketType::Ack, PacketType::Hb, PacketType::Rdata] {
        assert!(links.contains(&ty), "{ty:?} between a child and its repair agent, under their link key: {links:?}");
    }

    // An insider cannot pass itself off as another child to that child's agent.
    let (conn, group) = insider_group_key(&log.borrow());
    let child = (0..12).find(|&i| sim.user(i).parent_id() != 0).unwrap();
    let (id, ra_addr) = (sim.user(child).member_id(), sim.user(child).parent_addr());
    let ra = sim.users.iter().position(|u| u.addr == ra_addr).unwrap();
    let before = drops(sim.user(ra).stats());
    let children = sim.user(ra).ra_children();
    let mut e = Elements { membership: Some(Membership::of(id)), ..Default::default() };
    e.ack = Some(AckInfo::new(0x7fff_0000, 1));
    for kind in [KeyKind::Link, KeyKind::Member, KeyKind::Group] {
        let bytes = forge(header(PacketType::Ulr, conn, 0, true), e, &[], kind, id, 1 << 40, &group);
        sim.inject(user_addr(child), ra_addr, &bytes);
    }
    sim.run_for(SEC);
    assert_eq!(drops(sim.user(ra).stats()), (before.0 + 3, before.1));
    assert_eq!(sim.user(child).end(), None);
    assert_eq!(sim.user(ra).ra_children(), children, "the agent kept every child");
}

#[test]
fn a_wrong_key_or_no_key_cannot_join() {
    let other = *b"not the group key, but 32 bytes!";
    let base = Config { rxt: ms(100), retries: 5, ..Config::default() };
    for (to, tu) in [(Some(&KEY[..]), Some(&other[..])), (Some(&KEY[..]), None), (None, Some(&KEY[..]))] {
        let mut sim = Sim::new(73);
        sim.key = None;
        sim.add_owner(Config { security: to.and_then(Security::new), ..base });
        sim.add_user(Config { security: tu.and_then(Security::new), ..base });
        sim.run_for(3 * SEC);
        let what = format!("TO keyed {}, TU keyed {}", to.is_some(), tu.is_some());
        assert_eq!(sim.user(0).join_status(), JoinStatus::TimedOut, "{what}");
        assert_eq!(sim.owner().active_members(), 0, "{what}");
        assert_eq!(sim.owner().stats().dropped_auth, 5, "{what}: each LJR dropped as unauthenticated");
        assert_eq!(sim.sent_count(PacketType::Ljc), 0, "{what}: no answer at all");
    }
    // A 16-byte key works as well as a 32-byte one.
    let mut sim = Sim::new(74);
    sim.key = None;
    let cfg = keyed(base, b"sixteen byte key");
    sim.add_owner(cfg);
    sim.add_user(cfg);
    sim.run_until(SEC, "joined with a 16-byte key", |s| s.all_joined(1));
}

#[test]
fn every_replayed_packet_is_dropped_and_changes_nothing() {
    let cfg = keyed(Config { mss: 600, ..Config::default() }, &KEY);
    let mut sim = Sim::new(75);
    let log = capture(&mut sim);
    sim.add_owner(cfg);
    sim.add_user(cfg);
    sim.add_user(cfg);
    sim.run_until(5 * SEC, "joined", |s| s.all_joined(2));
    sim.get_token(1).expect("token");
    let fwd = messages(&mut Rng::new(75), 0, 100, 1..=2000);
    let back = messages(&mut Rng::new(76), 1000, 30, 1..=2000);
    sim.owner_send_all(&fwd);
    sim.user_send_all(1, &back);
    sim.run_until_delivered(&[0, 1], fwd.len(), 10 * SEC);
    sim.run_until(5 * SEC, "backward data in", |s| s.incoming.len() == back.len());
    sim.run_for(SEC);
    sim.clear_filter();
    let captured = log.borrow().clone();
    let before: Vec<Stats> = (0..2).map(|i| *sim.user(i).stats()).collect();
    let owner_before = *sim.owner().stats();
    assert_eq!(owner_before.dropped_auth, 0);
    let delivered: Vec<usize> = sim.users.iter().map(|u| u.delivered.len()).collect();
    // Every datagram of the run, join requests and answers included, again.
    for s in &captured {
        sim.inject(s.from, s.to, &s.bytes);
    }
    sim.run_for(2 * SEC);
    let to_owner = captured.iter().filter(|s| s.to == OWNER_ADDR).count() as u64;
    let o = sim.owner().stats();
    assert_eq!(o.dropped_replay - owner_before.dropped_replay, to_owner, "TO: each replay dropped as one");
    assert_eq!(o.dropped_auth, 0);
    for i in 0..2 {
        let to_me = captured.iter().filter(|s| s.to == user_addr(i)).count() as u64;
        let s = sim.user(i).stats();
        assert_eq!(s.dropped_replay - before[i].dropped_replay, to_me, "TU {i}: each replay dropped as one");
        assert_eq!(s.messages_delivered, before[i].messages_delivered, "TU {i}: nothing delivered twice");
        assert_eq!(sim.users[i].delivered.len(), delivered[i]);
        assert_eq!(sim.user(i).end(), None);
    }
    assert_eq!(sim.incoming.len(), back.len(), "no backward message twice");
    assert_eq!(sim.owner().active_members(), 2);
    assert_exactly("TU 0", &sim.users[0].delivered, &fwd);
}

#[test]
fn forged_packets_from_exact_addresses_have_no_effect() {
    let cfg = keyed(Config { hgt: ms(500), rxt: ms(50), ..Config::default() }, &KEY);
    let mut sim = Sim::new(77);
    let log = capture(&mut sim);
    sim.add_owner(cfg);
    sim.add_user(cfg);
    sim.add_user(cfg);
    sim.run_until(5 * SEC, "joined", |s| s.all_joined(2));
    sim.clear_filter();
    let (conn, group) = insider_group_key(&log.borrow());
    // An insider also sees TU 0's join request go by: its join key.
    let ljr_salt = log
        .borrow()
        .iter()
        .filter(|s| s.from == user_addr(0))
        .filter_map(|s| Packet::parse(&s.bytes).ok())
        .find(|p| p.header.packet_type == PacketType::Ljr)
        .and_then(|p| p.elements.key)
        .unwrap()
        .salt;
    let join = crypto::join_key(&KEY, &ljr_salt);
    let stranger = [0x5Au8; 32];
    let (id0, id1) = (sim.user(0).member_id(), sim.user(1).member_id());
    let msgs = messages(&mut Rng::new(77), 0, 300, 1..=3000);
    let (o0, u0) = (sim.owner().stats().dropped_auth, sim.user(1).stats().dropped_auth);
    let mut to_owner = 0;
    let mut to_user = 0;
    for (k, chunk) in msgs.chunks(30).enumerate() {
        sim.owner_send_all(chunk);
        sim.run_for(ms(20));
        let ctr = 1u64 << 50 | k as u64;
        // As TU 0, to the TO: an ACK that claims everything, and its leave.
        let mut ack = Elements { membership: Some(Membership::of(id0)), ..Default::default() };
        ack.ack = Some(AckInfo::new(0x7fff_fff0, 1));
        let leave = Elements { membership: Some(Membership::of(id0)), ..Default::default() };
        for (h, e) in [(header(PacketType::Ack, conn, 0, false), ack), (header(PacketType::Ulr, conn, 0, true), leave)]
        {
            let mut forged = vec![bare(h, e, &[])];
            for (kind, key) in [(KeyKind::Member, &group), (KeyKind::Group, &group), (KeyKind::Member, &stranger)] {
                forged.push(forge(h, e, &[], kind, id0, ctr, key));
            }
            // With its join key, and its salt, as if it were a join request.
            let mut with_salt = e;
            with_salt.key = Some(crate::wire::KeyShare { salt: ljr_salt, public: [9; 32] });
            forged.push(forge(h, with_salt, &[], KeyKind::Join, u32::MAX, ctr, &join));
            for f in forged {
                sim.inject(user_addr(0), OWNER_ADDR, &f);
                to_owner += 1;
            }
        }
        // As the TO, to TU 1: its ejection, and the end of the connection.
        let eject = Elements { membership: Some(Membership::of(id1)), ..Default::default() };
        for h in [header(PacketType::Ulr, conn, 0, false), header(PacketType::Ctr, conn, 1, false)] {
            for f in [
                bare(h, eject, &[]),
                forge(h, eject, &[], KeyKind::Member, 0, ctr, &group),
                forge(h, eject, &[], KeyKind::Group, 0, ctr, &stranger),
            ] {
                sim.inject(OWNER_ADDR, user_addr(1), &f);
                to_user += 1;
            }
        }
        // DATA in TO's name from a stranger.
        sim.inject(
            OWNER_ADDR,
            user_addr(1),
            &forge(
                header(PacketType::Data, conn, 5, true),
                Elements::default(),
                b"forged",
                KeyKind::Group,
                0,
                ctr,
                &stranger,
            ),
        );
        to_user += 1;
    }
    sim.run_until_delivered(&[0, 1], msgs.len(), 10 * SEC);
    sim.owner_mut().terminate();
    sim.run_until(5 * SEC, "the TO closes", |s| s.owner().is_closed());
    sim.run_for(SEC);
    for i in 0..2 {
        assert_exactly(&format!("TU {i}"), &sim.users[i].delivered, &msgs);
        assert_eq!(sim.user(i).end(), Some(End::Terminated), "TU {i}: ended normally");
    }
    assert_eq!(sim.owner().stats().dropped_auth - o0, to_owner, "TO: every forgery dropped as unauthenticated");
    assert_eq!(sim.user(1).stats().dropped_auth - u0, to_user, "TU 1: every forgery dropped as unauthenticated");
    assert!(!sim.events.iter().any(|e| matches!(e, super::Event::Left { .. })), "nobody left: {:?}", sim.events);
}

#[test]
fn a_departed_tus_join_request_replayed_admits_nobody() {
    let cfg = keyed(Config { hgt: ms(100), rxt: ms(50), ..Config::default() }, &KEY);
    let mut sim = Sim::new(78);
    let log = capture(&mut sim);
    sim.add_owner(cfg);
    sim.add_user(cfg);
    sim.add_user(cfg);
    sim.run_until(5 * SEC, "joined", |s| s.all_joined(2));
    let ljr = log
        .borrow()
        .iter()
        .find(|s| {
            s.from == user_addr(0) && Packet::parse(&s.bytes).is_ok_and(|p| p.header.packet_type == PacketType::Ljr)
        })
        .unwrap()
        .clone();
    sim.clear_filter();
    sim.user_mut(0).leave();
    sim.run_until(SEC, "TU 0 gone", |s| s.owner().active_members() == 1);
    let replays = sim.owner().stats().dropped_replay;
    sim.inject(ljr.from, OWNER_ADDR, &ljr.bytes);
    sim.run_for(SEC);
    // And again once its keys are long forgotten (10 x FDN x HGT): the salt is remembered.
    sim.run_for(10 * cfg.failure_time());
    sim.inject(ljr.from, OWNER_ADDR, &ljr.bytes);
    sim.run_for(SEC);
    assert_eq!(sim.owner().stats().dropped_replay - replays, 2);
    assert_eq!(sim.owner().active_members(), 1);
    assert_eq!(sim.user(1).end(), None);
}

#[test]
fn a_keyed_tu_cut_off_and_ejected_is_told_when_it_comes_back() {
    let cfg = keyed(Config { hgt: ms(200), rxt: ms(50), fdn: 3, ..Config::default() }, &KEY);
    let mut sim = Sim::joined(cfg, 2, 79);
    let id0 = sim.user(0).member_id();
    let cut = std::rc::Rc::new(std::cell::Cell::new(true));
    let c = cut.clone();
    sim.set_filter(move |w| c.get() && (w.from == user_addr(0) || w.to == user_addr(0)));
    let msgs = messages(&mut Rng::new(79), 0, 50, 1..=1000);
    sim.owner_send_all(&msgs);
    sim.run_until(10 * SEC, "TU 0 ejected", move |s| s.owner().member(id0).is_none());
    cut.set(false);
    sim.run_until(5 * SEC, "TU 0 learns it", |s| s.user(0).end().is_some());
    assert_eq!(sim.user(0).end(), Some(End::Reset));
    sim.run_until_delivered(&[1], msgs.len(), 5 * SEC);
    assert_exactly("TU 1", &sim.users[1].delivered, &msgs);
    assert_eq!(sim.user(1).end(), None);
}
