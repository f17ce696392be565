//! Scenarios of the control tree in the deterministic simulation: repair
//! agents at levels 1 to 3, loss on every link, an RA killed mid-stream, an
//! RA leaving, a leaf ejected by the TO, late joiners under RAs, the three
//! reliability modes, and replay from a seed (issue 6, §3).

use std::collections::BTreeMap;
use std::time::Duration;

use super::sim::{Direction, OWNER_ADDR, STRANGER_ADDR, Sim, message_id, messages, user_addr};
use super::{CcMode, Config, Dest, End, Event, JoinStatus, LeaveReason, Message, Rng};
use crate::wire::{Header, Membership, Packet, PacketType, Psn, Ro, Tco};

const SEC: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `got` is exactly `sent`: same bytes, same order, no gap flag.
#[track_caller]
fn assert_exactly(who: &str, got: &[Message], sent: &[Vec<u8>]) {
    assert_eq!(got.len(), sent.len(), "{who}: number of messages delivered");
    for (k, (g, s)) in got.iter().zip(sent).enumerate() {
        assert!(g.data == *s, "{who}: message {k} differs ({} bytes delivered, {} sent)", g.data.len(), s.len());
        assert!(!g.gap, "{who}: message {k} has the gap flag");
    }
}

/// The TO's configuration for a tree of fan-out `fanout`.
fn tree_cfg(fanout: u16, ro: Ro) -> Config {
    Config {
        tco: Tco::Tree,
        ro,
        max_children: Some(fanout),
        hgt: ms(500),
        rxt: ms(50),
        retries: 10,
        mss: 500,
        ..Config::default()
    }
}

fn ra_cfg(cfg: Config) -> Config {
    Config { ra: true, ..cfg }
}

/// A tree: `ras` repair agents joined first (fan-out `fanout`: with 2, RAs
/// fill levels 1, 2, 3...), then `leaves` leaves.
fn tree(fanout: u16, ras: usize, leaves: usize, ro: Ro, seed: u64) -> Sim {
    tree_of(tree_cfg(fanout, ro), ras, leaves, seed)
}

/// [`tree`], of TUs and a TO configured as `cfg`.
fn tree_of(cfg: Config, ras: usize, leaves: usize, seed: u64) -> Sim {
    let mut sim = Sim::new(seed);
    sim.add_owner(cfg);
    for _ in 0..ras {
        sim.join_one(ra_cfg(cfg));
    }
    for _ in 0..leaves {
        sim.join_one(cfg);
    }
    // The last joins reach the TO's count hop by hop, an RTT per level.
    let n = (ras + leaves) as u32;
    sim.run_until(SEC, "the ADN sums up the tree", move |s| s.owner().adn() == n);
    sim
}

/// Every TU's (level, parent index or None for the TO), as the TUs see it,
/// checked against the TO's table.
#[track_caller]
fn shape(sim: &Sim) -> Vec<(u8, Option<usize>)> {
    sim.users
        .iter()
        .enumerate()
        .filter(|(_, u)| u.alive && u.user().end().is_none())
        .map(|(i, u)| {
            let user = u.user();
            let info = sim.owner().member(user.member_id()).unwrap_or_else(|| panic!("TU {i} unknown to the TO"));
            assert_eq!(info.parent_id, user.parent_id(), "TU {i}: parent as the TO and the TU see it");
            assert_eq!(info.tree_level, user.tree_level(), "TU {i}: level as the TO and the TU see it");
            let parent = (user.parent_id() != 0).then(|| sim.index_of(user.parent_id()).expect("a known parent"));
            (user.tree_level(), parent)
        })
        .collect()
}

/// Stream `msgs` from the TO, a message per `gap` of virtual time.
fn stream(sim: &mut Sim, msgs: &[Vec<u8>], gap: Duration) {
    for m in msgs {
        sim.owner_send_all(std::slice::from_ref(m));
        sim.run_for(gap);
    }
}

#[test]
fn a_three_level_tree_builds_by_the_placement_policy() {
    // Fan-out 2: RAs 0, 1 under the TO; 2, 3 under 0; 4, 5 under 1; 6 under 2;
    // then leaves fill the shallowest RA with room (level 2 first).
    let sim = tree(2, 7, 9, Ro::Reliable, 1);
    let s = shape(&sim);
    let levels: Vec<u8> = s.iter().map(|x| x.0).collect();
    assert_eq!(&levels[..7], &[1, 1, 2, 2, 2, 2, 3]);
    assert_eq!(s[2].1, Some(0));
    assert_eq!(s[6].1, Some(2));
    // The level-2 RAs have 7 places left (6 took one), then the level-3 RA 6 takes 2.
    assert_eq!(&levels[7..], &[3, 3, 3, 3, 3, 3, 3, 4, 4], "leaves fill the shallowest RAs first");
    assert!(s[14].1 == Some(6) && s[15].1 == Some(6));
    for (i, u) in sim.users.iter().enumerate() {
        let children = u.user().ra_children();
        assert!(children.is_none_or(|c| c <= 2), "TU {i} has {children:?} children, more than its fan-out");
    }
    assert_eq!(sim.owner().children(), 2, "the TO takes two RAs and no leaf");
    assert_eq!(sim.owner().active_members(), 16);
    let info = sim.owner().member(sim.user(0).member_id()).unwrap();
    assert!(info.is_ra && info.descendants >= 3, "{info:?}");
}

#[test]
fn reliable_delivery_through_three_levels_with_loss_on_every_link() {
    let mut sim = tree(2, 7, 9, Ro::Reliable, 2);
    assert_eq!(sim.owner().adn(), 16, "ECTP_MEMBERS: the ADN summed up the tree");
    sim.set_loss(Direction::Forward, None, 0.02);
    sim.set_loss(Direction::Backward, None, 0.02);
    let msgs = messages(&mut Rng::new(2), 0, 400, 1..=3000);
    stream(&mut sim, &msgs, ms(2));
    let all: Vec<usize> = (0..sim.users.len()).collect();
    sim.run_until_delivered(&all, msgs.len(), 30 * SEC);
    sim.clear_loss();
    sim.run_for(2 * SEC);
    for (i, u) in sim.users.iter().enumerate() {
        assert_exactly(&format!("TU {i} (level {})", u.user().tree_level()), &u.delivered, &msgs);
        assert_eq!(u.user().end(), None, "TU {i}");
    }
    // The TO hears acknowledgements from its own children only; the others
    // acknowledge to their RA, which repairs them by unicast.
    let to_children: Vec<_> = (0..2).map(user_addr).collect();
    for r in sim.sent.iter().filter(|r| matches!(r.packet_type, PacketType::Ack | PacketType::Hback)) {
        if r.dest == Dest::Unicast(OWNER_ADDR) {
            assert!(to_children.contains(&r.from), "{:?} from {} went to the TO", r.packet_type, r.from);
        }
    }
    let ra_repairs = sim.sent.iter().filter(|r| r.packet_type == PacketType::Rdata && r.from != OWNER_ADDR).count();
    assert!(ra_repairs > 0, "the RAs repaired their children");
    assert!(sim.sent.iter().filter(|r| r.packet_type == PacketType::Rdata).all(|r| r.dest != Dest::Group));
    assert!(sim.lost > 0);
    assert_eq!(sim.owner().adn(), 16);
    assert!(sim.owner().in_window() == 0, "everything released once every subtree has it");
}

/// The departures the TO reported, by member id.
fn departures(sim: &Sim) -> BTreeMap<u32, Vec<LeaveReason>> {
    let mut d: BTreeMap<u32, Vec<LeaveReason>> = BTreeMap::new();
    for e in &sim.events {
        if let Event::Left { user_id, reason } = e {
            d.entry(*user_id).or_default().push(*reason);
        }
    }
    d
}

#[test]
fn an_ra_killed_mid_stream_does_not_take_its_subtree_with_it() {
    let mut sim = tree(2, 7, 9, Ro::Reliable, 3);
    let victim = 0; // level 1: RAs 2 and 3 below it, and their subtrees
    let victim_id = sim.user(victim).member_id();
    let orphans: Vec<usize> = (0..sim.users.len()).filter(|&i| sim.user(i).parent_id() == victim_id).collect();
    assert_eq!(orphans.len(), 2, "two RAs below the victim: {orphans:?}");
    let below = sim.owner().member(victim_id).unwrap().descendants;
    assert!(below >= 6, "the victim's subtree: {below}");
    sim.set_loss(Direction::Forward, None, 0.02);
    sim.set_loss(Direction::Backward, None, 0.02);
    let msgs = messages(&mut Rng::new(3), 0, 900, 1..=2000);
    stream(&mut sim, &msgs[..300], ms(5));
    sim.kill_user(victim);
    let killed_at = sim.elapsed();
    stream(&mut sim, &msgs[300..], ms(5));
    let alive: Vec<usize> = (1..sim.users.len()).collect();
    sim.run_until_delivered(&alive, msgs.len(), 30 * SEC);
    sim.clear_loss();
    sim.run_for(3 * SEC);
    for &i in &alive {
        let u = &sim.users[i];
        assert_exactly(&format!("TU {i}"), &u.delivered, &msgs);
        assert_eq!(u.user().end(), None, "TU {i} is still connected");
        assert!(!u.user().is_rebinding(), "TU {i}");
    }
    // The orphans rebound to the nearest ancestor with room: the TO.
    for &o in &orphans {
        assert_eq!((sim.user(o).parent_id(), sim.user(o).tree_level()), (0, 1), "orphan {o}");
    }
    let s = shape(&sim);
    assert_eq!(s.len(), 15, "every TU but the victim is in the tree");
    assert_eq!(sim.owner().adn(), 15);
    assert_eq!(departures(&sim), BTreeMap::from([(victim_id, vec![LeaveReason::Failed])]), "one departure, once");
    let rebinds = sim.sent.iter().filter(|r| r.packet_type == PacketType::Ljr && r.flag).collect::<Vec<_>>();
    assert!(rebinds.len() >= 2 && rebinds.iter().all(|r| r.at > killed_at), "the orphans asked the TO: {rebinds:?}");
    assert_eq!(sim.owner().in_window(), 0);
}

#[test]
fn an_ra_that_leaves_hands_its_children_to_its_ancestors() {
    let mut sim = tree(2, 7, 9, Ro::Reliable, 4);
    let leaver = 1;
    let leaver_id = sim.user(leaver).member_id();
    let orphans: Vec<usize> = (0..sim.users.len()).filter(|&i| sim.user(i).parent_id() == leaver_id).collect();
    assert_eq!(orphans.len(), 2);
    let msgs = messages(&mut Rng::new(4), 0, 400, 1..=2000);
    stream(&mut sim, &msgs[..100], ms(5));
    sim.user_mut(leaver).leave();
    stream(&mut sim, &msgs[100..], ms(5));
    let rest: Vec<usize> = (0..sim.users.len()).filter(|&i| i != leaver).collect();
    sim.run_until_delivered(&rest, msgs.len(), 20 * SEC);
    sim.run_for(2 * SEC);
    for &i in &rest {
        assert_exactly(&format!("TU {i}"), &sim.users[i].delivered, &msgs);
    }
    assert_eq!(departures(&sim), BTreeMap::from([(leaver_id, vec![LeaveReason::Left])]));
    for &o in &orphans {
        assert_eq!(sim.user(o).parent_id(), 0, "orphan {o} rebound to the TO");
    }
    assert_eq!(sim.owner().adn(), 15);
}

#[test]
fn the_to_ejects_a_leaf_deep_in_the_tree() {
    let mut sim = tree(2, 7, 9, Ro::Reliable, 5);
    let victim = 15; // a level-4 leaf under the level-3 RA 6
    assert_eq!(sim.user(victim).tree_level(), 4);
    let victim_id = sim.user(victim).member_id();
    let msgs = messages(&mut Rng::new(5), 0, 200, 1..=2000);
    stream(&mut sim, &msgs[..50], ms(5));
    assert_eq!(sim.user(6).ra_children(), Some(2));
    let now = sim.now;
    sim.owner_mut().eject(victim_id, now).expect("eject");
    sim.run_until(SEC, "the leaf sees it", |s| s.user(15).end().is_some());
    assert_eq!(sim.user(victim).end(), Some(End::Reset));
    sim.run_until(SEC, "its RA drops it", |s| s.user(6).ra_children() == Some(1));
    stream(&mut sim, &msgs[50..], ms(5));
    let rest: Vec<usize> = (0..sim.users.len()).filter(|&i| i != victim).collect();
    sim.run_until_delivered(&rest, msgs.len(), 10 * SEC);
    for &i in &rest {
        assert_exactly(&format!("TU {i}"), &sim.users[i].delivered, &msgs);
    }
    assert_eq!(departures(&sim), BTreeMap::from([(victim_id, vec![LeaveReason::Ejected])]));
    assert!(sim.owner().member(victim_id).is_none());
    // The RA's departure report stopped the TO's order, and the TO confirmed it.
    let orders = sim
        .sent
        .iter()
        .filter(|r| r.packet_type == PacketType::Ulr && r.from == OWNER_ADDR && r.dest == Dest::Unicast(user_addr(6)))
        .count();
    assert!((1..=3).contains(&orders), "ejection orders to the RA: {orders}");
    sim.run_until(SEC, "the TO's count follows", |s| s.owner().adn() == 15);
}

#[test]
fn orphans_of_a_deep_ra_rebind_to_their_grandparent_not_the_to() {
    let mut sim = tree(2, 7, 9, Ro::Reliable, 6);
    let victim = 6; // the level-3 RA, with two level-4 leaves
    let grandparent = sim.user(victim).parent_id();
    assert_ne!(grandparent, 0);
    // Room for them: the grandparent RA has its other child only after 6 goes.
    let msgs = messages(&mut Rng::new(6), 0, 600, 1..=2000);
    stream(&mut sim, &msgs[..200], ms(5));
    sim.kill_user(victim);
    stream(&mut sim, &msgs[200..], ms(5));
    let rest: Vec<usize> = (0..sim.users.len()).filter(|&i| i != victim).collect();
    sim.run_until_delivered(&rest, msgs.len(), 30 * SEC);
    sim.run_for(3 * SEC);
    for &i in &rest {
        assert_exactly(&format!("TU {i}"), &sim.users[i].delivered, &msgs);
    }
    let parents: Vec<u32> = [14, 15].iter().map(|&i| sim.user(i).parent_id()).collect();
    assert!(
        parents.contains(&grandparent),
        "an orphan went to its grandparent: {parents:?}, grandparent {grandparent}"
    );
    shape(&sim);
    let victim_id = sim.user(victim).member_id();
    assert_eq!(departures(&sim), BTreeMap::from([(victim_id, vec![LeaveReason::Failed])]));
}

#[test]
fn late_joiners_attach_under_ras_and_deliver_from_a_message_boundary() {
    let mut sim = tree(3, 3, 0, Ro::Reliable, 7);
    let cfg = tree_cfg(3, Ro::Reliable);
    let msgs = messages(&mut Rng::new(7), 0, 300, 8..=3000);
    let mut joined = Vec::new();
    for (k, m) in msgs.iter().enumerate() {
        if k % 40 == 20 {
            joined.push((sim.add_user(cfg), k));
        }
        sim.owner_send_all(std::slice::from_ref(m));
        sim.run_for(ms(3));
    }
    sim.run_until(10 * SEC, "the last message everywhere", |s| {
        s.users.iter().all(|u| u.delivered.last().is_some_and(|m| m.data == msgs[299]))
    });
    for (i, k) in joined {
        let u = &sim.users[i];
        assert!(u.user().parent_id() != 0, "late joiner {i} attached under an RA");
        let first = message_id(&u.delivered[0].data).unwrap() as usize;
        assert!((k..k + 10).contains(&first), "joined at message {k}, delivers from {first}");
        assert_exactly(&format!("late joiner {i}"), &u.delivered, &msgs[first..]);
    }
    for i in 0..3 {
        assert_exactly(&format!("RA {i}"), &sim.users[i].delivered, &msgs);
    }
}

#[test]
fn when_the_to_dies_every_tu_of_the_tree_is_reset() {
    let mut sim = tree(2, 3, 4, Ro::Reliable, 8);
    let msgs = messages(&mut Rng::new(8), 0, 50, 8..=1000);
    stream(&mut sim, &msgs, ms(2));
    sim.run_until_delivered(&(0..7).collect::<Vec<_>>(), 50, 5 * SEC);
    // The TO stops: nothing from it any more.
    sim.set_filter(|w| w.from == OWNER_ADDR);
    let cfg = *sim.user(0).config();
    let limit = cfg.hgt * u32::from(cfg.fdn) * 3;
    sim.run_until(limit, "every TU reset", |s| s.users.iter().all(|u| u.user().end() == Some(End::Reset)));
}

/// Messages delivered in order, each whole and as sent, none twice; the gap
/// flag wherever one is missing. Returns how many were delivered.
#[track_caller]
fn check_subsequence(who: &str, got: &[Message], sent: &[Vec<u8>]) -> usize {
    let mut prev: Option<u32> = None;
    for (k, m) in got.iter().enumerate() {
        let id = message_id(&m.data).unwrap_or_else(|| panic!("{who}: message {k} carries no id"));
        let Some(orig) = sent.get(id as usize) else { panic!("{who}: message {k} has id {id}, never sent") };
        assert!(m.data == *orig, "{who}: message {k} (id {id}) is corrupted");
        assert!(prev.is_none_or(|p| id > p), "{who}: id {id} after {prev:?}");
        if prev.is_some_and(|p| id != p + 1) {
            assert!(m.gap, "{who}: message {id} follows {prev:?} without the gap flag");
        }
        prev = Some(id);
    }
    got.len()
}

#[test]
fn semi_reliable_and_unreliable_trees_never_stall() {
    for (ro, seed) in [(Ro::SemiReliable, 9), (Ro::Unreliable, 10)] {
        let mut sim = tree(2, 3, 5, ro, seed);
        sim.set_loss(Direction::Forward, Some(PacketType::Data), 0.05);
        sim.set_loss(Direction::Backward, None, 0.05);
        let msgs = messages(&mut Rng::new(seed), 0, 400, 8..=1500);
        stream(&mut sim, &msgs, ms(2));
        sim.clear_loss();
        let tail = messages(&mut Rng::new(seed + 100), 400, 5, 8..=400);
        sim.run_for(SEC);
        stream(&mut sim, &tail, ms(2));
        sim.run_for(2 * SEC);
        let all: Vec<Vec<u8>> = msgs.iter().chain(&tail).cloned().collect();
        for (i, u) in sim.users.iter().enumerate() {
            let n = check_subsequence(&format!("{ro:?} TU {i}"), &u.delivered, &all);
            assert!(n > 300, "{ro:?} TU {i} delivered {n} of {}", all.len());
            assert!(u.delivered.last().is_some_and(|m| m.data == all[404]), "{ro:?} TU {i} stalled");
            assert_eq!(u.user().end(), None);
        }
        if ro == Ro::SemiReliable {
            let ra_repairs =
                sim.sent.iter().filter(|r| r.packet_type == PacketType::Rdata && r.from != OWNER_ADDR).count();
            assert!(ra_repairs > 0, "semi-reliable RAs repair what they still have");
        } else {
            assert_eq!(sim.sent_count(PacketType::Rdata), 0, "no repair in the unreliable mode");
        }
    }
}

fn lossy_tree_run(seed: u64) -> (u64, u64, Vec<u64>) {
    let mut sim = tree(2, 3, 5, Ro::Reliable, seed);
    sim.set_loss(Direction::Forward, None, 0.03);
    sim.set_loss(Direction::Backward, None, 0.03);
    let msgs = messages(&mut Rng::new(seed), 0, 150, 8..=2000);
    stream(&mut sim, &msgs[..75], ms(2));
    sim.kill_user(1);
    stream(&mut sim, &msgs[75..], ms(2));
    sim.run_for(5 * SEC);
    (sim.trace_hash(), sim.lost, sim.users.iter().map(|u| u.delivered_digest).collect())
}

#[test]
fn a_tree_run_replays_exactly_from_its_seed() {
    let a = lossy_tree_run(11);
    assert_eq!(a, lossy_tree_run(11));
    assert_ne!(a.0, lossy_tree_run(12).0);
}

fn packet(header: Header, f: impl FnOnce(&mut crate::wire::Elements)) -> Vec<u8> {
    let mut elements = crate::wire::Elements::default();
    f(&mut elements);
    let mut buf = vec![0u8; 2048];
    let n = Packet { header, elements, data: b"" }.emit(&mut buf).expect("emit");
    buf.truncate(n);
    buf
}

#[test]
fn an_ra_takes_only_the_children_the_to_announced_and_only_from_their_address() {
    if super::sim::keyed_run() {
        return; // unkeyed forgeries: a keyed node drops them all as unauthenticated (sim_key_tests)
    }
    let mut sim = tree(2, 1, 1, Ro::Reliable, 13);
    let ra = 0;
    let conn = sim.owner().connection_id();
    let leaf_id = sim.user(1).member_id();
    let dropped = |s: &super::Stats| s.dropped_unexpected + s.dropped_source;
    let before = dropped(sim.user(ra).stats());
    let mut forged = Vec::new();
    // A stranger's TJR, with a made-up member id and with the leaf's.
    for id in [77, leaf_id] {
        forged.push(packet(Header::new(PacketType::Tjr, conn), |e| e.membership = Some(Membership::of(id))));
    }
    // An admission notice that does not come from the TO.
    forged.push(packet(Header { flag: true, psn: 5, ..Header::new(PacketType::Tjr, conn) }, |e| {
        e.membership = Some(Membership::of(78));
        e.address = Some(STRANGER_ADDR);
    }));
    // An ACK claiming everything, a leave and an ejection order, from a stranger.
    forged.push(packet(Header::new(PacketType::Ack, conn), |e| {
        let mut a = crate::wire::AckInfo::new(u32::MAX, 1000);
        a.stable = u32::MAX;
        e.ack = Some(a);
    }));
    forged.push(packet(Header { flag: true, ..Header::new(PacketType::Ulr, conn) }, |e| {
        e.membership = Some(Membership::of(leaf_id))
    }));
    forged.push(packet(Header::new(PacketType::Ulr, conn), |e| e.membership = Some(Membership::of(leaf_id))));
    let n = forged.len() as u64;
    for f in &forged {
        sim.inject(STRANGER_ADDR, user_addr(ra), f);
    }
    // RDATA "from the parent" (the TO's IP) on another port, to the leaf.
    let psn = Psn(sim.owner().stats().data_sent as u32 + 1);
    let rdata = packet(Header { psn: psn.0, flag: true, ..Header::new(PacketType::Rdata, conn) }, |_| {});
    let mut spoof = OWNER_ADDR;
    spoof.set_port(OWNER_ADDR.port() + 1);
    sim.inject(spoof, user_addr(1), &rdata);
    sim.run_for(SEC);
    assert_eq!(dropped(sim.user(ra).stats()) - before, n, "every forged packet dropped and counted");
    assert_eq!(sim.user(ra).stats().dropped_source, 4, "the notice, ACK and ULRs: not from the TO or a child");
    assert_eq!(sim.user(ra).ra_children(), Some(1));
    assert_eq!(sim.user(1).stats().dropped_source, 1, "RDATA from another port of the TO's host");
    assert_eq!(sim.owner().adn(), 2);
    let msgs = messages(&mut Rng::new(13), 0, 20, 8..=1000);
    stream(&mut sim, &msgs, ms(2));
    sim.run_until_delivered(&[0, 1], 20, SEC);
    assert_exactly("leaf", &sim.users[1].delivered, &msgs);
    assert_eq!(sim.user(1).join_status(), JoinStatus::Joined);
}

#[test]
fn in_the_creation_phase_of_a_tree_the_to_sends_joiners_on_to_its_ras() {
    let cfg = Config { cct: 2 * SEC, ..tree_cfg(2, Ro::Reliable) };
    let mut sim = Sim::new(14);
    // Only the CCR path: the TUs' LJRs never arrive.
    sim.set_filter(|w| w.packet_type() == Some(PacketType::Ljr));
    sim.add_user(ra_cfg(cfg));
    sim.add_user(ra_cfg(cfg));
    sim.run_for(ms(1));
    sim.add_owner(cfg);
    sim.run_until(SEC, "the RAs join by CCR", |s| s.all_joined(2));
    for _ in 0..3 {
        sim.add_user(cfg);
    }
    sim.run_until(SEC, "the leaves join by CCR", |s| s.all_joined(5));
    assert!(sim.owner().is_creating());
    assert_eq!(sim.sent_count(PacketType::Ljc), 0, "everybody joined in the creation phase");
    let redirects = sim.sent.iter().filter(|r| r.packet_type == PacketType::Tjc && r.from == OWNER_ADDR).count();
    assert_eq!(redirects, 5, "one TJC from the TO each (for the leaves: the RA to go on to)");
    for i in 2..5 {
        assert_ne!(sim.user(i).parent_id(), 0, "leaf {i} under an RA");
    }
    assert_eq!(sim.sent_count(PacketType::Ccc), 5, "each TU confirms the creation");
    let msgs = messages(&mut Rng::new(14), 0, 50, 8..=2000);
    stream(&mut sim, &msgs, ms(2));
    sim.run_until_delivered(&[0, 1, 2, 3, 4], 50, 5 * SEC);
    for (i, u) in sim.users.iter().enumerate() {
        assert_exactly(&format!("TU {i}"), &u.delivered, &msgs);
    }
}

#[test]
fn a_join_is_refused_when_no_parent_has_room() {
    let mut sim = tree(1, 1, 1, Ro::Reliable, 15);
    let cfg = tree_cfg(1, Ro::Reliable);
    let i = sim.add_user(cfg);
    sim.run_until(5 * SEC, "an answer", |s| s.user(2).join_status() != JoinStatus::Joining);
    assert_eq!(sim.user(i).join_status(), JoinStatus::Refused);
    assert_eq!(sim.owner().active_members(), 2);
}

#[test]
fn ectp_ra_is_ignored_in_a_flat_tree() {
    let cfg = Config { tco: Tco::Flat, ..tree_cfg(2, Ro::Reliable) };
    let mut sim = Sim::new(16);
    sim.add_owner(Config { max_children: None, ..cfg });
    sim.join_one(ra_cfg(cfg));
    sim.join_one(cfg);
    assert_eq!(sim.user(1).parent_id(), 0);
    assert_eq!(sim.user(0).ra_children(), None, "no RA role in a flat tree");
    assert!(!sim.owner().member(sim.user(0).member_id()).unwrap().is_ra);
}

#[test]
fn scale_small_case_cost_per_parent_is_bounded_by_the_fanout_not_by_n() {
    use super::scale::{Params, run};
    // The cost of the tree's acknowledgements alone (TFMCC's reports: the next test).
    let base = Params {
        fanout: 6,
        loss_pct: 2.0,
        messages: 100,
        message_len: 600,
        cc: crate::proto::CcMode::None,
        ..Params::default()
    };
    let small = run(&Params { tus: 100, ..base });
    let large = run(&Params { tus: 400, ..base });
    for r in [&small, &large] {
        assert_eq!(r.delivered, r.tus, "{}", r.line());
        assert!(r.identical, "{}", r.line());
        assert!(r.levels >= 3, "{}", r.line());
        // Fan-out 6 and AGN 8: about 6/8 ACKs per packet, plus repairs' ACKs and heartbeats.
        assert!(r.max_parent_ctl_per_data < 6.0, "{}", r.line());
    }
    assert!(
        large.max_parent_ctl_per_data < small.max_parent_ctl_per_data * 1.5 + 0.5,
        "the busiest parent's cost grew with N:\n{}\n{}",
        small.line(),
        large.line()
    );
    assert!(large.to_ctl_per_data < small.to_ctl_per_data * 1.5 + 0.5, "{}\n{}", small.line(), large.line());
}

#[test]
fn nothing_lost_nothing_repaired_flat_or_tree() {
    for tco in [Tco::Flat, Tco::Tree] {
        let cfg = Config { tco, ..tree_cfg(4, Ro::Reliable) };
        let mut sim = Sim::new(17);
        sim.add_owner(Config { max_children: if tco == Tco::Flat { None } else { Some(4) }, ..cfg });
        for i in 0..16 {
            sim.join_one(if i < 4 { ra_cfg(cfg) } else { cfg });
        }
        let msgs = messages(&mut Rng::new(17), 0, 500, 1..=3000);
        sim.owner_send_all(&msgs);
        sim.run_until_delivered(&(0..16).collect::<Vec<_>>(), msgs.len(), 20 * SEC);
        sim.run_for(2 * SEC);
        assert_eq!(sim.sent_count(PacketType::Rdata), 0, "{tco:?}: repairs with nothing lost");
        for (i, u) in sim.users.iter().enumerate() {
            assert_exactly(&format!("{tco:?} TU {i}"), &u.delivered, &msgs);
        }
        assert_eq!(sim.owner().in_window(), 0, "{tco:?}: everything acknowledged and released");
    }
}

#[test]
fn tfmcc_reports_per_round_stay_few_whatever_the_group_size() {
    use super::scale::{Params, run};
    let base = Params { fanout: 6, loss_pct: 2.0, messages: 400, message_len: 600, ..Params::default() };
    let small = run(&Params { tus: 50, ..base });
    let large = run(&Params { tus: 400, ..base });
    for r in [&small, &large] {
        assert_eq!(r.delivered, r.tus, "{}", r.line());
        assert!(r.identical, "{}", r.line());
        assert!(r.reports > 0, "the TO hears reports: {}", r.line());
    }
    println!("{}\n{}", small.line(), large.line());
    // Eight times the receivers: the TO's busiest round grows by a few reports at most.
    assert!(
        large.max_round_reports <= small.max_round_reports + 6 && large.max_round_reports <= 16,
        "reports per round grew with N:\n{}\n{}",
        small.line(),
        large.line()
    );
}

/// A lost last acknowledgement does not hold the TO's window (or the end of
/// the connection) until the child's keep-alive, HGT/2 later: while the TO
/// is idle, each parent asks a child that lags and fell quiet (an HB naming
/// it), whether that parent is the TO or a repair agent.
#[test]
fn a_lost_last_acknowledgement_is_asked_for_not_waited_for() {
    for ras in [0, 1] {
        // Without TFMCC: its reports would carry an acknowledgement too, when due.
        let cfg = Config { cc: CcMode::None, ..tree_cfg(8, Ro::Reliable) };
        let mut sim = tree_of(cfg, ras, 1, 7);
        let leaf = user_addr(ras);
        // Its round trip measured (its answer to the parent's first HB).
        sim.run_for(ms(10));
        let parent = if ras == 0 { OWNER_ADDR } else { user_addr(0) };
        // Everything the leaf acknowledges is lost while the data flows.
        sim.set_filter(move |w| w.from == leaf && matches!(w.packet_type(), Some(PacketType::Ack | PacketType::Hback)));
        let msgs = messages(&mut Rng::new(7), 0, 20, 100..=1200);
        sim.owner_send_all(&msgs);
        let all: Vec<usize> = (0..sim.users.len()).collect();
        sim.run_until_delivered(&all, msgs.len(), SEC);
        // And its answer to the TO's first NDATA (the TO is idle now).
        let ndata = sim.sent_count(PacketType::Ndata);
        sim.run_until(SEC, "NDATA", |s| s.sent_count(PacketType::Ndata) > ndata);
        sim.run_for(ms(3));
        assert!(sim.owner().in_window() > 0, "{ras} RA: the TO still waits for the leaf");
        sim.clear_filter();
        let asked_from = sim.elapsed();
        sim.run_until(SEC, "everything released", |s| s.owner().in_window() == 0);
        let waited = sim.elapsed() - asked_from;
        assert!(
            waited < cfg.hgt / 10,
            "{ras} RA: released {waited:?} after the last ACK was lost (keep-alive: {:?})",
            cfg.hgt / 2
        );
        let probes = sim.sent.iter().filter(|r| {
            r.at >= asked_from && r.from == parent && r.packet_type == PacketType::Hb && r.dest == Dest::Unicast(leaf)
        });
        assert!(probes.count() >= 1, "{ras} RA: the leaf's parent asked it");
        for u in &sim.users {
            assert_exactly("the leaf", &u.delivered, &msgs);
        }
    }
}

/// A child whose round trip its parent could not measure (the answer to
/// the first HB was lost) is asked again on its next acknowledgement: its
/// repairs are then backed off by that round trip, not by RXT, and a lost
/// repair is sent again within a few round trips.
#[test]
fn a_child_whose_first_probe_was_lost_is_measured_on_its_next_ack() {
    for ras in [0, 1] {
        let cfg = Config { cc: CcMode::None, ..tree_cfg(8, Ro::Reliable) };
        let mut sim = tree_of(cfg, ras, 0, 9);
        let (leaf, parent) = (user_addr(ras), if ras == 0 { OWNER_ADDR } else { user_addr(0) });
        sim.drop_next_to(PacketType::Hback, parent, 1);
        sim.join_one(cfg);
        sim.run_for(ms(20));
        let id = sim.user(ras).member_id();
        if ras == 0 {
            assert_eq!(sim.owner().rtt(id), None, "the answer to the first HB was lost");
        }
        // The leaf's copy of the first DATA is lost, and so is its first repair.
        sim.drop_next_to(PacketType::Data, leaf, 1);
        sim.drop_next_to(PacketType::Rdata, leaf, 1);
        let msgs = messages(&mut Rng::new(9), 0, 2, 100..=400);
        let sent_at = sim.elapsed();
        sim.owner_send_all(&msgs);
        sim.run_until_delivered(&[ras], msgs.len(), SEC);
        let took = sim.elapsed() - sent_at;
        assert!(took < cfg.rxt / 2, "{ras} RA: repaired {took:?} after sending (RXT {:?})", cfg.rxt);
        assert_exactly("the leaf", &sim.users[ras].delivered, &msgs);
        if ras == 0 {
            assert!(sim.owner().rtt(id).is_some(), "measured since");
        }
    }
}
