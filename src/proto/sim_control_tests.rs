//! The TO's controls in the simulation: tokens given (TGR from the TO) and
//! withdrawn (TRR from the TO), with their packets lost; pause and resume
//! (NDATA with F=1) longer than FDN x HGT; abort (CTR with F=1).

use std::time::Duration;

use super::sim::{Answer, OWNER_ADDR, Sim, messages, user_addr};
use super::{Config, Dest, End, Event, JoinStatus, OwnerError, Rng, TokenOp, TokenStatus, UserError};
use crate::wire::PacketType;

const SEC: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Run until the TO's give or withdrawal `op` has ended; its outcome.
#[track_caller]
pub(super) fn outcome(sim: &mut Sim, op: TokenOp) -> Result<u8, OwnerError> {
    for _ in 0..2000 {
        if let Some(r) = sim.owner_mut().take_token_outcome(op) {
            return r;
        }
        sim.run_for(ms(5));
    }
    panic!("no outcome for {op:?} after 10 s:\n{}", sim.summary());
}

/// The TO gives TU `i` a token; the outcome.
#[track_caller]
fn give(sim: &mut Sim, i: usize) -> Result<u8, OwnerError> {
    let (id, now) = (sim.user(i).member_id(), sim.now);
    let op = sim.owner_mut().give_token(id, now)?;
    outcome(sim, op)
}

/// The TO withdraws TU `i`'s token; the outcome.
#[track_caller]
fn withdraw(sim: &mut Sim, i: usize) -> Result<u8, OwnerError> {
    let (id, now) = (sim.user(i).member_id(), sim.now);
    let op = sim.owner_mut().withdraw_token(id, now)?;
    outcome(sim, op)
}

fn sent(sim: &Sim, ty: PacketType, flag: bool) -> usize {
    sim.sent.iter().filter(|r| r.packet_type == ty && r.flag == flag).count()
}

#[test]
fn a_given_token_works_like_a_requested_one() {
    let mut sim = Sim::joined(Config::default(), 2, 91);
    let token = give(&mut sim, 1).expect("give");
    assert_eq!(sim.user(1).token(), TokenStatus::Held(token));
    assert_eq!(sim.user(0).token(), TokenStatus::None);
    let tgr = sim.sent.iter().find(|r| r.packet_type == PacketType::Tgr).expect("a TGR");
    assert!(tgr.flag && tgr.from == OWNER_ADDR && tgr.dest == Dest::Unicast(user_addr(1)) && tgr.token_id == token);
    let tgc = sim.sent.iter().find(|r| r.packet_type == PacketType::Tgc).expect("a TGC");
    assert!(tgc.flag && tgc.from == user_addr(1) && tgc.token_id == token && tgc.psn != 0, "{tgc:?}");
    // The TU sends with it, reliably, like after mtoken_get.
    let msgs = messages(&mut Rng::new(91), 0, 30, 1..=3000);
    sim.user_send_all(1, &msgs);
    sim.run_until(2 * SEC, "the TO receives 30 messages", |s| s.incoming.len() >= 30);
    let member = sim.user(1).member_id();
    for (k, inc) in sim.incoming.iter().enumerate() {
        assert!(inc.user_id == member && inc.token_id == token && inc.message.data == msgs[k], "message {k}");
    }
    // Its own request now: it holds one already.
    let now = sim.now;
    assert_eq!(sim.user_mut(1).request_token(now), Err(UserError::AlreadyHeld));
}

#[test]
fn lost_tgr_and_tgc_of_a_give_are_sent_again() {
    let mut sim = Sim::joined(Config::default(), 1, 92);
    sim.drop_next(PacketType::Tgr, 2);
    sim.drop_next(PacketType::Tgc, 1);
    let token = give(&mut sim, 0).expect("give through the losses");
    assert_eq!(sim.user(0).token(), TokenStatus::Held(token));
    assert_eq!(sent(&sim, PacketType::Tgr, true), 4, "two TGRs lost, the third's TGC lost, the fourth answered");
    assert_eq!(sent(&sim, PacketType::Tgc, true), 2, "the same answer twice");
    let psns: Vec<u32> = sim.sent.iter().filter(|r| r.packet_type == PacketType::Tgc).map(|r| r.psn).collect();
    assert_eq!(psns[0], psns[1], "one channel, one initial PSN");
    assert!(sim.owner().stats().retransmissions >= 3);
}

#[test]
fn give_errors_and_a_give_that_times_out() {
    let cfg = Config { max_tokens: 1, retries: 3, ..Config::default() };
    let mut sim = Sim::joined(cfg, 2, 93);
    let now = sim.now;
    assert_eq!(sim.owner_mut().give_token(12345, now), Err(OwnerError::NotFound));
    // Every TGR lost: ETIMEDOUT after `retries` sends, and the token is free again.
    sim.set_filter(|w| w.packet_type() == Some(PacketType::Tgr));
    assert_eq!(give(&mut sim, 0), Err(OwnerError::TimedOut));
    assert_eq!(sent(&sim, PacketType::Tgr, true), 3);
    assert_eq!(sim.user(0).token(), TokenStatus::None);
    sim.clear_filter();
    let token = give(&mut sim, 0).expect("a later give");
    assert_eq!(give(&mut sim, 0), Err(OwnerError::Already), "it holds one");
    assert_eq!(give(&mut sim, 1), Err(OwnerError::Busy), "max_tokens 1, in use");
    assert_eq!(sim.get_token(1), Err(UserError::Refused), "and a request is refused");
    withdraw(&mut sim, 0).expect("withdraw");
    assert_eq!(give(&mut sim, 1), Ok(token), "free again");
}

#[test]
fn a_give_meets_the_tus_own_request() {
    let mut sim = Sim::joined(Config::default(), 1, 94);
    let (id, now) = (sim.user(0).member_id(), sim.now);
    sim.user_mut(0).request_token(now).expect("request");
    sim.drop_next(PacketType::Tgr, 1); // the TU's TGR is lost: the TO's offer comes first
    let op = sim.owner_mut().give_token(id, now).expect("give");
    let token = outcome(&mut sim, op).expect("give");
    assert_eq!(sim.user_mut(0).take_token_result(), Some(Ok(token)), "its mtoken_get returns the given token");
    sim.run_for(SEC);
    assert_eq!(sim.user(0).token(), TokenStatus::Held(token), "its resent TGR changes nothing");
    assert_eq!(sim.owner().member(id).map(|m| m.token_id), Some(token));
}

#[test]
fn a_withdrawn_token_delivers_what_was_queued_first() {
    let mut sim = Sim::joined(Config { mss: 500, ..Config::default() }, 1, 95);
    let token = sim.get_token(0).expect("token");
    let msgs = messages(&mut Rng::new(95), 0, 40, 1..=2000);
    sim.user_send_all(0, &msgs);
    sim.drop_next(PacketType::Data, 3); // and some of it must be repaired
    sim.drop_next(PacketType::Trr, 1);
    sim.drop_next(PacketType::Trc, 1);
    assert_eq!(withdraw(&mut sim, 0), Ok(0));
    assert_eq!(sim.incoming.len(), 40, "everything queued before came in");
    for (k, inc) in sim.incoming.iter().enumerate() {
        assert!(inc.message.data == msgs[k] && inc.token_id == token && !inc.message.gap, "message {k}");
    }
    assert_eq!(sim.user(0).token(), TokenStatus::None);
    assert_eq!(sim.user_mut(0).send(b"late"), Err(UserError::NoToken), "EPERM after the withdrawal");
    assert!(sent(&sim, PacketType::Trr, true) >= 2, "the lost TRR was sent again");
    assert!(sent(&sim, PacketType::Trc, true) >= 2, "the lost TRC was answered again");
    assert_eq!(sim.owner().member(sim.user(0).member_id()).map(|m| m.token_id), Some(0));
    assert_eq!(withdraw(&mut sim, 0), Err(OwnerError::NotFound), "holds none now");
    assert_eq!(sim.get_token(0), Ok(token), "it may ask again");
}

#[test]
fn a_withdrawal_meets_the_sus_own_return() {
    let mut sim = Sim::joined(Config::default(), 1, 96);
    sim.get_token(0).expect("token");
    let (id, now) = (sim.user(0).member_id(), sim.now);
    sim.user_mut(0).return_token().expect("return");
    let op = sim.owner_mut().withdraw_token(id, now).expect("withdraw");
    assert_eq!(outcome(&mut sim, op), Ok(0));
    sim.run_until(SEC, "returned", |s| s.user(0).token() == TokenStatus::None);
    assert_eq!(sim.user_mut(0).take_token_result(), Some(Ok(0)), "its mtoken_return returns");
}

#[test]
fn a_withdrawal_of_a_member_that_leaves_succeeds() {
    let mut sim = Sim::joined(Config::default(), 1, 97);
    sim.get_token(0).expect("token");
    sim.set_filter(|w| w.packet_type() == Some(PacketType::Trr));
    let (id, now) = (sim.user(0).member_id(), sim.now);
    let op = sim.owner_mut().withdraw_token(id, now).expect("withdraw");
    sim.run_for(ms(300));
    sim.user_mut(0).leave();
    assert_eq!(outcome(&mut sim, op), Ok(0), "0 once it left");
}

#[test]
fn a_pause_longer_than_fdn_hgt_ejects_nobody() {
    let cfg = Config { hgt: ms(200), fdn: 3, ..Config::default() };
    let mut sim = Sim::joined(cfg, 3, 98);
    let first = messages(&mut Rng::new(98), 0, 20, 1..=3000);
    sim.owner_send_all(&first);
    sim.run_until_delivered(&[0, 1, 2], 20, 2 * SEC);
    let now = sim.now;
    sim.owner_mut().pause(now).expect("pause");
    assert_eq!(sim.owner_mut().pause(now), Err(OwnerError::Already));
    let data_before = sent(&sim, PacketType::Data, false) + sent(&sim, PacketType::Data, true);
    let rest = messages(&mut Rng::new(99), 20, 20, 1..=3000);
    sim.owner_send_all(&rest); // queued while paused
    sim.run_for(cfg.failure_time() * 4);
    let data_after = sent(&sim, PacketType::Data, false) + sent(&sim, PacketType::Data, true);
    assert_eq!(data_after, data_before, "no DATA while paused");
    assert!(sent(&sim, PacketType::Ndata, true) >= 5, "NDATA with F=1 keeps the TUs informed");
    for i in 0..3 {
        assert!(sim.user(i).is_paused(), "TU {i} knows");
        assert_eq!(sim.user(i).end(), None, "TU {i} still in");
        assert_eq!(sim.users[i].delivered_count, 20);
    }
    assert_eq!(sim.owner().active_members(), 3, "nobody ejected:\n{}", sim.summary());
    assert!(sim.owner().is_paused());
    let now = sim.now;
    sim.owner_mut().resume(now).expect("resume");
    assert_eq!(sim.owner_mut().resume(now), Err(OwnerError::Already));
    sim.run_until_delivered(&[0, 1, 2], 40, 2 * SEC);
    for i in 0..3 {
        assert!(!sim.user(i).is_paused(), "TU {i} knows it is over");
        let got: Vec<_> = sim.users[i].delivered.iter().map(|m| m.data.clone()).collect();
        assert_eq!(got, [first.clone(), rest.clone()].concat(), "TU {i} got everything, in order");
    }
}

#[test]
fn resume_with_nothing_queued_tells_the_tus_at_once() {
    let mut sim = Sim::joined(Config::default(), 1, 100);
    let now = sim.now;
    sim.owner_mut().pause(now).expect("pause");
    sim.run_for(ms(50));
    assert!(sim.user(0).is_paused());
    let now = sim.now;
    sim.owner_mut().resume(now).expect("resume");
    sim.run_for(ms(50));
    assert!(!sim.user(0).is_paused(), "NDATA with F=0 at the resume");
}

#[test]
fn abort_resets_every_tu_without_draining() {
    let mut sim = Sim::joined(Config::default(), 2, 101);
    let msgs = messages(&mut Rng::new(101), 0, 10, 1..=1000);
    sim.owner_send_all(&msgs);
    sim.run_until_delivered(&[0, 1], 10, 2 * SEC);
    let now = sim.now;
    sim.owner_mut().pause(now).expect("pause");
    sim.owner_send_all(&messages(&mut Rng::new(102), 10, 10, 1..=1000));
    let data_before = sent(&sim, PacketType::Data, false) + sent(&sim, PacketType::Data, true);
    let now = sim.now;
    sim.owner_mut().abort(now);
    sim.run_until(ms(100), "closed", |s| s.owner().is_closed());
    assert!(sim.elapsed() < Duration::from_secs(60));
    for i in 0..2 {
        assert_eq!(sim.user(i).end(), Some(End::Reset), "TU {i}");
    }
    assert!(sent(&sim, PacketType::Ctr, true) >= 1 && sent(&sim, PacketType::Ctr, false) == 0, "CTR with F=1");
    let data_after = sent(&sim, PacketType::Data, false) + sent(&sim, PacketType::Data, true);
    assert_eq!(data_after, data_before, "nothing queued went out");
}

#[test]
fn a_join_request_never_answered_is_forgotten() {
    let cfg = Config { ask_joins: true, retries: 4, ..Config::default() };
    let mut sim = Sim::new(103);
    sim.answer_joins = Answer::Manual;
    sim.add_owner(cfg);
    sim.add_user(cfg);
    sim.run_until(10 * SEC, "the TU gives up", |s| s.user(0).join_status() != JoinStatus::Joining);
    assert_eq!(sim.user(0).join_status(), JoinStatus::TimedOut);
    let Event::JoinRequest { user_id, .. } = sim.events[0] else { panic!("{:?}", sim.events) };
    // Still answerable while the TU may be waiting ...
    let now = sim.now;
    assert!(sim.owner().member_ids().is_empty());
    sim.run_for(cfg.rxt * cfg.retries * 2 + cfg.hgt);
    // ... forgotten afterwards: a late answer finds nothing.
    let now2 = sim.now;
    assert!(now2 > now);
    assert_eq!(sim.owner_mut().confirm_join(user_id, true, now2), Err(OwnerError::NotFound));
    assert_eq!(sim.owner().stats().members_joined, 0);
}
