//! The TO's controls under adversarial timing, found in review: a given
//! token whose TGC was lost, a withdrawal whose TRC was lost meeting the
//! SU's next request, overlapping gives and withdrawals.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use super::sim::{OWNER_ADDR, Sim, messages, user_addr};
use super::sim_control_tests::outcome;
use super::{Config, Rng, TokenStatus};
use crate::wire::PacketType;

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
