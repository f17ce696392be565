//! The TO's controls under adversarial timing, found in review: a given
//! token whose TGC was lost, a withdrawal whose TRC was lost meeting the
//! SU's next request, overlapping gives and withdrawals.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use super::sim::{OWNER_ADDR, STRANGER_ADDR, Sim, messages, user_addr};
use super::sim_control_tests::outcome;
use super::{Config, End, Rng, Security, Stats, TokenStatus};
use crate::wire::{Elements, Header, Packet, PacketType, Ro, Tco};

const SEC: Duration = Duration::from_secs(1);

/// The token TU `i` holds; panics when it holds none.
#[track_caller]
fn held(sim: &Sim, i: usize) -> u8 {
    match sim.user(i).token() {
        TokenStatus::Held(t) => t,
        s => panic!("TU {i} holds no token: {s:?}"),
    }
}

/// The TO gives a token, its TGC is lost, and the SU sends a message and
/// returns the token before the TO's TGR comes again: that TGR must be
/// answered as the first was (the SU still holds the token until its TRC),
/// not refused, or the TO frees the token while the SU waits in
/// `mtoken_return` for an acknowledgement that never comes.
#[test]
fn a_given_token_returned_before_the_lost_tgc_is_resent() {
    let mut sim = Sim::joined(Config::default(), 1, 201);
    let (id, now) = (sim.user(0).member_id(), sim.now);
    sim.drop_next(PacketType::Tgc, 1);
    let op = sim.owner_mut().give_token(id, now).expect("give");
    sim.run_until(SEC, "the TU takes the token", |s| matches!(s.user(0).token(), TokenStatus::Held(_)));
    let token = held(&sim, 0);
    sim.user_mut(0).send(b"sent at once").expect("send");
    sim.user_mut(0).return_token().expect("return");
    assert_eq!(outcome(&mut sim, op), Ok(token), "the give succeeded: the TU took the token");
    sim.run_until(5 * SEC, "mtoken_return returns", |s| s.user(0).token() == TokenStatus::None);
    assert_eq!(sim.user_mut(0).take_token_result(), Some(Ok(0)));
    assert_eq!(sim.incoming.len(), 1, "the message came in");
    assert_eq!(sim.incoming[0].message.data, b"sent at once");
    assert_eq!(sim.owner().member(id).map(|m| m.token_id), Some(0));
}

/// The TO withdraws a token and the SU's TRC is lost; the SU asks for a
/// token again at once and gets the same id. The TO's TRR, sent again for
/// the withdrawal that its TGR already ended, must not take the new token.
#[test]
fn a_resent_trr_does_not_withdraw_the_next_token() {
    let mut sim = Sim::joined(Config::default(), 1, 202);
    let first = sim.get_token(0).expect("token");
    let (id, now) = (sim.user(0).member_id(), sim.now);
    sim.drop_next(PacketType::Trc, 1);
    let op = sim.owner_mut().withdraw_token(id, now).expect("withdraw");
    sim.run_until(SEC, "the SU gives the token back", |s| s.user(0).token() == TokenStatus::None);
    let now = sim.now;
    sim.user_mut(0).request_token(now).expect("request");
    sim.run_until(SEC, "the SU holds a token again", |s| matches!(s.user(0).token(), TokenStatus::Held(_)));
    assert_eq!(sim.owner_mut().take_token_outcome(op), Some(Ok(0)), "the withdrawal ended");
    let second = held(&sim, 0);
    assert_eq!(second, first, "the same id (the lowest free)");
    sim.run_for(5 * SEC);
    assert_eq!(sim.user(0).token(), TokenStatus::Held(second), "the SU keeps its new token");
    assert_eq!(sim.owner().member(id).map(|m| m.token_id), Some(second), "and the TO agrees");
    let msgs = messages(&mut Rng::new(202), 0, 5, 1..=500);
    sim.user_send_all(0, &msgs);
    sim.run_until(2 * SEC, "the TO receives 5 messages", |s| s.incoming.len() >= 5);
}

/// While the TO takes a token back, a late copy of the TGR that got it
/// (same initial PSN) comes in: it is the old request, not a new one, and
/// must not end the withdrawal early, before the SU's data came in (in the
/// reliable mode that lost the data still in flight).
#[test]
fn a_late_copy_of_the_tgr_does_not_cut_a_withdrawal_short() {
    let mut sim = Sim::joined(Config { mss: 500, ..Config::default() }, 1, 203);
    let copy: Rc<RefCell<Option<Vec<u8>>>> = Rc::default();
    let keep = Rc::clone(&copy);
    sim.set_filter(move |w| {
        if w.packet_type() == Some(PacketType::Tgr) && w.from == user_addr(0) {
            *keep.borrow_mut() = Some(w.bytes.to_vec());
        }
        false
    });
    let token = sim.get_token(0).expect("token");
    sim.clear_filter();
    let tgr = copy.borrow().clone().expect("the TU's TGR");
    // The first half comes in and is acknowledged; some of the second is lost.
    let msgs = messages(&mut Rng::new(203), 0, 40, 1..=2000);
    sim.user_send_all(0, &msgs[..20]);
    sim.run_until(2 * SEC, "the first half comes in", |s| s.incoming.len() == 20);
    sim.run_for(SEC);
    sim.user_send_all(0, &msgs[20..]);
    sim.drop_next(PacketType::Data, 3);
    let (id, now) = (sim.user(0).member_id(), sim.now);
    let op = sim.owner_mut().withdraw_token(id, now).expect("withdraw");
    sim.run_for(Duration::from_millis(3));
    sim.inject(user_addr(0), OWNER_ADDR, &tgr);
    assert_eq!(outcome(&mut sim, op), Ok(0), "the withdrawal ended");
    sim.run_for(SEC);
    assert_eq!(sim.incoming.len(), 40, "every message came in:\n{}", sim.summary());
    for (k, inc) in sim.incoming.iter().enumerate() {
        assert!(inc.message.data == msgs[k] && inc.token_id == token && !inc.message.gap, "message {k}");
    }
    assert_eq!(sim.user(0).token(), TokenStatus::None);
    assert_eq!(sim.owner().member(id).map(|m| m.token_id), Some(0), "the TO agrees");
}

/// Two application threads: one gives member M a token and is slow to
/// wake up; meanwhile another starts withdrawing it. Each call must get
/// its own outcome: the give's was dropped when the withdrawal began, so
/// the giver took the withdrawal's and the withdrawer waited forever.
#[test]
fn overlapping_calls_each_get_their_own_outcome() {
    let mut sim = Sim::joined(Config::default(), 1, 204);
    let (id, now) = (sim.user(0).member_id(), sim.now);
    let give = sim.owner_mut().give_token(id, now).expect("give");
    sim.run_until(SEC, "the TO has the TGC", |s| s.owner().member(id).is_some_and(|m| m.token_id != 0));
    let token = held(&sim, 0);
    let now = sim.now;
    let withdrawal = sim.owner_mut().withdraw_token(id, now).expect("withdraw");
    sim.run_until(SEC, "the TO has the TRC", |s| s.owner().member(id).is_some_and(|m| m.token_id == 0));
    assert_eq!(sim.owner_mut().take_token_outcome(withdrawal), Some(Ok(0)));
    assert_eq!(sim.owner_mut().take_token_outcome(give), Some(Ok(token)), "the giver's, kept for it");
    assert_eq!(sim.owner_mut().take_token_outcome(give), None, "taken once");
    // A later give of the same member: its own outcome, not a stale one.
    let now = sim.now;
    let again = sim.owner_mut().give_token(id, now).expect("give again");
    assert_eq!(sim.owner_mut().take_token_outcome(again), None, "not answered yet");
    assert_eq!(outcome(&mut sim, again), Ok(token));
}

/// `ectp_abort` ends at once: after it, the TO sends nothing but its CTR
/// (F=1), not the TGR of a give under way nor the ULRs of an ejection.
#[test]
fn after_an_abort_only_ctr_leaves_the_to() {
    let mut sim = Sim::joined(Config::default(), 2, 205);
    sim.set_filter(|w| w.packet_type() == Some(PacketType::Tgr));
    let (a, b, now) = (sim.user(0).member_id(), sim.user(1).member_id(), sim.now);
    sim.owner_mut().give_token(a, now).expect("give");
    sim.owner_mut().eject(b, now).expect("eject");
    sim.run_for(Duration::from_millis(20));
    let before = sim.sent.len();
    let now = sim.now;
    sim.owner_mut().abort(now);
    sim.run_until(SEC, "closed", |s| s.owner().is_closed());
    sim.run_for(SEC);
    let after: Vec<_> = sim.sent[before..].iter().filter(|r| r.from == OWNER_ADDR).collect();
    assert!(!after.is_empty() && after.iter().all(|r| r.packet_type == PacketType::Ctr && r.flag), "{after:#?}");
}

/// Not fixed (see the review report): a give whose every TGC is lost times
/// out on the TO (ETIMEDOUT, the token free again) while the TU took the
/// token; what it sends is dropped by the TO, never acknowledged, and its
/// `mtoken_return` waits forever. The TGR/TGC exchange has no third
/// message that could tell the two sides apart.
#[test]
#[ignore = "known: a give that times out after the TU took the token leaves the SU with a token the TO freed"]
fn a_give_that_times_out_after_the_tu_took_the_token() {
    let cfg = Config { retries: 3, ..Config::default() };
    let mut sim = Sim::joined(cfg, 1, 206);
    sim.set_filter(|w| w.packet_type() == Some(PacketType::Tgc));
    let (id, now) = (sim.user(0).member_id(), sim.now);
    let op = sim.owner_mut().give_token(id, now).expect("give");
    assert_eq!(outcome(&mut sim, op), Err(super::OwnerError::TimedOut));
    sim.clear_filter();
    let token = held(&sim, 0);
    sim.user_mut(0).send(b"to a token the TO freed").expect("send");
    sim.user_mut(0).return_token().expect("return");
    sim.run_for(10 * SEC);
    assert_eq!(sim.user(0).token(), TokenStatus::None, "token {token} still returning");
}

/// A withdrawal in the semi-reliable and unreliable modes, with data lost
/// on the way: it ends, nothing comes twice or out of order, a message
/// after a loss is flagged (ECTP_MSG_GAP), and the semi-reliable SU repairs
/// everything before its TRC.
#[test]
fn a_withdrawal_in_the_weaker_modes_loses_nothing_silently() {
    for (ro, seed) in [(Ro::SemiReliable, 207), (Ro::Unreliable, 208)] {
        let mut sim = Sim::joined(Config { ro, mss: 500, ..Config::default() }, 1, seed);
        sim.get_token(0).expect("token");
        let msgs = messages(&mut Rng::new(seed), 0, 40, 1..=2000);
        sim.user_send_all(0, &msgs);
        sim.drop_next(PacketType::Data, 4);
        let (id, now) = (sim.user(0).member_id(), sim.now);
        let op = sim.owner_mut().withdraw_token(id, now).expect("withdraw");
        assert_eq!(outcome(&mut sim, op), Ok(0), "{ro:?}");
        sim.run_for(SEC);
        let mut next = 0;
        let mut lost = false;
        for inc in &sim.incoming {
            let k = msgs.iter().position(|m| *m == inc.message.data).expect("a message sent");
            assert!(k >= next, "{ro:?}: message {k} after {next}: out of order or twice");
            assert!(k == next || inc.message.gap, "{ro:?}: message {k} after a loss, not flagged");
            lost |= k > next;
            next = k + 1;
        }
        // Semi-reliable: the SU keeps what it sent until the TO has it.
        if ro == Ro::SemiReliable {
            assert!(next == 40 && !lost, "{ro:?}: {next} of 40, lost {lost}");
        } else {
            assert!(lost && next == 40, "{ro:?}: the 4 DATA lost show as gaps, the tail comes");
        }
        assert_eq!(sim.user(0).token(), TokenStatus::None, "{ro:?}");
    }
}

/// A pause in a keyed tree (repair agents, leaves under them), longer than
/// FDN x HGT and ECTP_SLOW_TIMEOUT, with data queued and lost: nobody is
/// ejected, every TU learns of the pause; `mterminate` while still paused
/// ends it, delivers everything to everyone, then CTR.
#[test]
fn a_long_pause_in_a_keyed_tree_then_terminate() {
    let cfg = Config {
        tco: Tco::Tree,
        max_children: Some(2),
        hgt: Duration::from_millis(200),
        rxt: Duration::from_millis(50),
        mss: 500,
        slow_timeout: Some(Duration::from_millis(400)),
        security: Security::new(b"a group key of thirty-two bytes!"),
        ..Config::default()
    };
    let mut sim = Sim::new(209);
    sim.add_owner(cfg);
    for _ in 0..2 {
        sim.join_one(Config { ra: true, ..cfg });
    }
    for _ in 0..3 {
        sim.join_one(cfg);
    }
    sim.run_until(SEC, "the ADN sums up the tree", |s| s.owner().adn() == 5);
    assert!((0..5).any(|i| sim.user(i).parent_id() != 0), "a TU under a repair agent");
    let all: Vec<usize> = (0..5).collect();
    let first = messages(&mut Rng::new(209), 0, 20, 1..=2000);
    sim.owner_send_all(&first);
    sim.run_until_delivered(&all, 20, 2 * SEC);
    let now = sim.now;
    sim.owner_mut().pause(now).expect("pause");
    let rest = messages(&mut Rng::new(210), 20, 20, 1..=2000);
    sim.owner_send_all(&rest);
    sim.run_for(cfg.failure_time() * 5);
    for &i in &all {
        assert!(sim.user(i).is_paused() && sim.user(i).end().is_none(), "TU {i}");
        assert_eq!(sim.users[i].delivered_count, 20, "TU {i}: nothing new while paused");
    }
    assert_eq!(sim.owner().adn(), 5, "nobody ejected:\n{}", sim.summary());
    assert_eq!(sim.owner().stats().members_failed, 0);
    sim.drop_next(PacketType::Data, 5);
    sim.owner_mut().terminate();
    assert!(!sim.owner().is_paused(), "mterminate ends the pause");
    sim.run_until(10 * SEC, "closed", |s| s.owner().is_closed());
    sim.run_for(SEC);
    let want = [first, rest].concat();
    for &i in &all {
        assert_eq!(sim.user(i).end(), Some(End::Terminated), "TU {i}");
        let got: Vec<_> = sim.users[i].delivered.iter().map(|m| m.data.clone()).collect();
        assert!(got == want, "TU {i}: {} of {} messages", got.len(), want.len());
    }
}

/// A datagram of type `ty` with this header and no elements.
fn bare(ty: PacketType, conn: u32, psn: u32, flag: bool, token_id: u8) -> Vec<u8> {
    let header = Header { packet_type: ty, connection_id: conn, psn, flag, token_id };
    let mut buf = vec![0u8; super::MAX_DATAGRAM];
    let n = Packet { header, elements: Elements::default(), data: &[] }.emit(&mut buf).expect("emit");
    buf.truncate(n);
    buf
}

/// Answers nobody asked for: a TGC or TRC from a member the TO is neither
/// giving nor taking a token from changes nothing and is counted as
/// unexpected (a TRC released the token the SU was still using); a TGR or
/// TRR with F=1 from anybody but the TO is counted and changes nothing on
/// the TU.
#[test]
fn unasked_answers_and_forged_orders_change_nothing() {
    let mut sim = Sim::joined(Config::default(), 2, 211);
    let token = sim.get_token(0).expect("token");
    let (id, conn) = (sim.user(0).member_id(), sim.owner().connection_id());
    // Keyed runs (ECTP_SIM_KEY): these unsealed packets fail authentication.
    let dropped = |s: &Stats, n: u64| n + s.dropped_auth;
    let before = dropped(sim.owner().stats(), sim.owner().stats().dropped_unexpected);
    sim.inject(user_addr(0), OWNER_ADDR, &bare(PacketType::Trc, conn, 0, true, token));
    sim.inject(user_addr(1), OWNER_ADDR, &bare(PacketType::Tgc, conn, 77, true, 9));
    sim.inject(user_addr(1), OWNER_ADDR, &bare(PacketType::Trc, conn, 0, true, token));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.owner().member(id).map(|m| m.token_id), Some(token), "the token stays with its SU");
    assert_eq!(dropped(sim.owner().stats(), sim.owner().stats().dropped_unexpected), before + 3);
    // Orders from a stranger and from the other TU, on TU 1.
    let before = dropped(sim.user(1).stats(), sim.user(1).stats().dropped_source);
    for from in [STRANGER_ADDR, user_addr(0)] {
        sim.inject(from, user_addr(1), &bare(PacketType::Tgr, conn, 0, true, 5));
        sim.inject(from, user_addr(0), &bare(PacketType::Trr, conn, 0, true, token));
    }
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.user(1).token(), TokenStatus::None);
    assert_eq!(sim.user(0).token(), TokenStatus::Held(token));
    assert_eq!(dropped(sim.user(1).stats(), sim.user(1).stats().dropped_source), before + 2);
    let msgs = messages(&mut Rng::new(211), 0, 5, 1..=500);
    sim.user_send_all(0, &msgs);
    sim.run_until(2 * SEC, "the TO receives 5 messages", |s| s.incoming.len() >= 5);
}

/// A withdrawal that times out because the SU has much to send: the TO
/// still takes the TRC that comes later, and the token is free again.
#[test]
fn a_late_trc_after_a_withdrawal_timed_out_frees_the_token() {
    let cfg = Config { retries: 3, max_tokens: 1, ..Config::default() };
    let mut sim = Sim::joined(cfg, 2, 212);
    sim.get_token(0).expect("token");
    sim.user_mut(0).set_max_rate(50_000);
    let msgs = messages(&mut Rng::new(212), 0, 100, 1000..=3000);
    sim.user_send_all(0, &msgs);
    let (id, now) = (sim.user(0).member_id(), sim.now);
    let op = sim.owner_mut().withdraw_token(id, now).expect("withdraw");
    assert_eq!(outcome(&mut sim, op), Err(super::OwnerError::TimedOut));
    assert!(sim.incoming.len() < 100, "the SU was still sending");
    sim.run_until(20 * SEC, "the SU gives the token back", |s| s.user(0).token() == TokenStatus::None);
    sim.run_for(SEC);
    assert_eq!(sim.incoming.len(), 100);
    assert_eq!(sim.owner().member(id).map(|m| m.token_id), Some(0));
    assert!(sim.get_token(1).is_ok(), "the only token is free again");
}
