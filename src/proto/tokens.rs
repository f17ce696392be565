//! The TO's token table and the backward channels of the SUs
//! (draft-dykim-ectp-00 §6.3): who asked for a token, who holds which, and
//! for each token held the receive window of that SU's unicast data.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::ack::{ack_block, ack_of, blocks_with_holes};
use super::cc::{CcMode, CcReceiver};
use super::owner::{Incoming, OwnerError};
use super::receiver::{Accept, Receiver};
use super::stats::Outcome;
use super::{Config, Ctl, Dest, Event, MAX_MESSAGE, Stats};
use crate::wire::{Header, Packet, PacketType, Psn, Ro};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokenState {
    /// Asked with this initial PSN; waiting for the application's confirm.
    Pending(Psn),
    /// Holds token `id`, granted for initial PSN `isn`.
    Held { id: u8, isn: Psn },
    /// The last request with this initial PSN was refused.
    Refused(Psn),
    /// The TO offers token `id` (`ectp_token_give`): TGR with F=1 sent,
    /// waiting for the TU's TGC. The id is reserved meanwhile.
    Offered(u8),
    /// Held, and the TO asked for it back (`ectp_token_withdraw`): TRR with
    /// F=1 sent; the SU still sends what it queued, then answers TRC.
    Withdrawing { id: u8, isn: Psn },
}

/// Tokens and backward channels, on the TO.
#[derive(Debug)]
pub(crate) struct Tokens {
    /// Which member, at which address, holds each token id (0 unused: the TO).
    holders: Vec<Option<(u32, SocketAddr)>>,
    /// Where each member's token stands (absent: holds none, asked none).
    state: HashMap<u32, TokenState>,
    backward: BTreeMap<u8, Receiver>,
    /// TFMCC: what the TO measures of each SU's stream, reported in its HBACKs.
    cc: BTreeMap<u8, CcReceiver>,
    /// Whole messages received from SUs, for `recv`.
    pub inbox: VecDeque<Incoming>,
    /// Members whose withdrawal timed out: they still give the token back
    /// by themselves (TRC) once their data is acknowledged.
    late_return: HashSet<u32>,
    /// The give or withdrawal under way for each member (one at a time).
    ops: HashMap<u32, TokenOp>,
    next_op: u64,
    /// How each give or withdrawal ended: Ok(token id) for a give, Ok(0)
    /// for a withdrawal; taken by its waiting call, so that two calls on
    /// the same member (from two threads) never take each other's.
    outcomes: HashMap<TokenOp, Result<u8, OwnerError>>,
}

/// One give or withdrawal by the TO, whose outcome its caller waits for
/// ([`super::Owner::take_token_outcome`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenOp(u64);

impl Tokens {
    pub(crate) fn new() -> Tokens {
        Tokens {
            holders: vec![None; 256],
            state: HashMap::new(),
            backward: BTreeMap::new(),
            cc: BTreeMap::new(),
            inbox: VecDeque::new(),
            late_return: HashSet::new(),
            ops: HashMap::new(),
            next_op: 0,
            outcomes: HashMap::new(),
        }
    }

    /// The token member `user_id` holds, or 0.
    pub(crate) fn token_of(&self, user_id: u32) -> u8 {
        match self.state.get(&user_id) {
            Some(TokenState::Held { id, .. } | TokenState::Withdrawing { id, .. }) => *id,
            _ => 0,
        }
    }

    /// Whether the TO is taking member `user_id`'s token back (its TRR with
    /// F=1 is being repeated).
    pub(crate) fn is_withdrawing(&self, user_id: u32) -> bool {
        matches!(self.state.get(&user_id), Some(TokenState::Withdrawing { .. }))
    }

    /// Give member `user_id` at `addr` a token without its asking
    /// (`ectp_token_give`): the TGR (F=1) to repeat until its TGC.
    pub(crate) fn give(
        &mut self,
        cfg: &Config,
        conn_id: u32,
        user_id: u32,
        addr: SocketAddr,
    ) -> Result<(Ctl, TokenOp), OwnerError> {
        match self.state.get(&user_id) {
            Some(TokenState::Held { .. } | TokenState::Withdrawing { .. } | TokenState::Offered(_)) => {
                return Err(OwnerError::Already);
            }
            None | Some(TokenState::Pending(_) | TokenState::Refused(_)) => {}
        }
        let id = self.free_token_id(cfg.max_tokens).ok_or(OwnerError::Busy)?;
        self.state.insert(user_id, TokenState::Offered(id));
        self.holders[usize::from(id)] = Some((user_id, addr));
        let mut h = Header::new(PacketType::Tgr, conn_id);
        h.flag = true;
        h.token_id = id;
        Ok((Ctl::new(Dest::Unicast(addr), h), self.start_op(user_id)))
    }

    /// TGC from member `user_id`: its answer to a give, F=1 with its
    /// initial PSN (it holds the token now), F=0 (it cannot take one).
    /// Whether it answered a give.
    pub(crate) fn on_tgc(&mut self, cfg: &Config, user_id: u32, p: &Packet<'_>) -> bool {
        let h = p.header;
        let id = match self.state.get(&user_id).copied() {
            Some(TokenState::Offered(id)) => id,
            // Its answer again, to a TGR sent again: taken already.
            Some(TokenState::Held { id, .. }) => return id == h.token_id,
            _ => return false,
        };
        if h.token_id != id {
            return false;
        }
        let isn = Psn(h.psn);
        if h.flag && isn.is_valid() {
            self.hold(cfg, user_id, id, isn);
            self.finish(user_id, Ok(id));
            log::info!("member {user_id} took token {id} given by the TO");
        } else {
            self.holders[usize::from(id)] = None;
            self.state.remove(&user_id);
            self.finish(user_id, Err(OwnerError::Already));
        }
        true
    }

    /// Take member `user_id`'s token back (`ectp_token_withdraw`): the TRR
    /// (F=1) to repeat until its TRC.
    pub(crate) fn withdraw(
        &mut self,
        conn_id: u32,
        user_id: u32,
        addr: SocketAddr,
    ) -> Result<(Ctl, TokenOp), OwnerError> {
        let Some(TokenState::Held { id, isn }) = self.state.get(&user_id).copied() else {
            return Err(OwnerError::NotFound);
        };
        self.state.insert(user_id, TokenState::Withdrawing { id, isn });
        let mut h = Header::new(PacketType::Trr, conn_id);
        h.flag = true;
        h.token_id = id;
        Ok((Ctl::new(Dest::Unicast(addr), h), self.start_op(user_id)))
    }

    /// TRC from member `user_id`: it gave back the token being withdrawn,
    /// everything it sent acknowledged. Whether it answered a withdrawal.
    pub(crate) fn on_trc(&mut self, user_id: u32, token_id: u8, stats: &mut Stats) -> bool {
        match self.state.get(&user_id).copied() {
            Some(TokenState::Withdrawing { id, .. }) if id == token_id => {
                self.release(user_id, id, stats);
                self.finish(user_id, Ok(0));
                log::info!("member {user_id} gave token {id} back to the TO");
                true
            }
            // After a withdrawal that timed out: it gave the token back later.
            // Unasked, it changes nothing.
            Some(TokenState::Held { id, .. }) if id == token_id && self.late_return.contains(&user_id) => {
                self.release(user_id, id, stats);
                true
            }
            _ => false,
        }
    }

    /// A give or withdrawal for `user_id` went unanswered after every retry:
    /// an offered token is free again; a token being withdrawn stays held
    /// (the SU still sends what it queued, then returns it by itself).
    pub(crate) fn timed_out(&mut self, user_id: u32) {
        match self.state.get(&user_id).copied() {
            Some(TokenState::Offered(id)) => {
                self.holders[usize::from(id)] = None;
                self.state.remove(&user_id);
            }
            Some(TokenState::Withdrawing { id, isn }) => {
                self.state.insert(user_id, TokenState::Held { id, isn });
                self.late_return.insert(user_id);
            }
            _ => return,
        }
        self.finish(user_id, Err(OwnerError::TimedOut));
    }

    /// A give or withdrawal for `user_id` begins.
    fn start_op(&mut self, user_id: u32) -> TokenOp {
        self.next_op += 1;
        let op = TokenOp(self.next_op);
        self.ops.insert(user_id, op);
        op
    }

    /// The give or withdrawal under way for `user_id` ended so.
    fn finish(&mut self, user_id: u32, r: Result<u8, OwnerError>) {
        if let Some(op) = self.ops.remove(&user_id) {
            self.outcomes.insert(op, r);
        }
    }

    /// How give or withdrawal `op` ended, once it has.
    pub(crate) fn take_outcome(&mut self, op: TokenOp) -> Option<Result<u8, OwnerError>> {
        self.outcomes.remove(&op)
    }

    /// Member `user_id` holds token `id` (its holder entry set already): its
    /// backward channel starts at initial PSN `isn`.
    fn hold(&mut self, cfg: &Config, user_id: u32, id: u8, isn: Psn) {
        self.state.insert(user_id, TokenState::Held { id, isn });
        let rx = Receiver::new(isn, cfg.rx_capacity(), MAX_MESSAGE);
        self.backward.insert(id, if cfg.ro == Ro::Reliable { rx.reliable() } else { rx });
    }

    /// Whether member `user_id` holds token `token_id`.
    fn holds(&self, user_id: u32, token_id: u8) -> bool {
        token_id != 0 && self.holders[usize::from(token_id)].is_some_and(|(u, _)| u == user_id)
    }

    fn tgc(conn_id: u32, addr: SocketAddr, isn: Psn, id: Option<u8>) -> Ctl {
        let mut h = Header::new(PacketType::Tgc, conn_id);
        h.psn = isn.0;
        h.flag = id.is_some();
        h.token_id = id.unwrap_or(0);
        Ctl::new(Dest::Unicast(addr), h)
    }

    fn free_token_id(&self, max_tokens: u8) -> Option<u8> {
        let in_use = self.holders.iter().filter(|t| t.is_some()).count();
        if in_use >= usize::from(max_tokens) {
            return None;
        }
        (1..=255u8).find(|&id| self.holders[usize::from(id)].is_none())
    }

    /// TGR answered at once to an address that is no member: refused, so
    /// that it does not wait for nothing.
    pub(crate) fn refuse_stranger(conn_id: u32, addr: SocketAddr, isn: Psn) -> Ctl {
        Tokens::tgc(conn_id, addr, isn, None)
    }

    /// TGR: member `user_id` at `addr` asks for a token with initial PSN `isn`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_tgr(
        &mut self,
        cfg: &Config,
        conn_id: u32,
        user_id: u32,
        addr: SocketAddr,
        isn: Psn,
        events: &mut VecDeque<Event>,
        out: &mut VecDeque<Ctl>,
        stats: &mut Stats,
    ) {
        match self.state.get(&user_id).copied() {
            // The request granted (a copy sent again or late): the same TGC,
            // also while the TO takes the token back.
            Some(TokenState::Held { id, isn: held } | TokenState::Withdrawing { id, isn: held }) if held == isn => {
                out.push_back(Tokens::tgc(conn_id, addr, isn, Some(id)))
            }
            Some(TokenState::Refused(r)) if r == isn => out.push_back(Tokens::tgc(conn_id, addr, isn, None)),
            // The application has not answered yet; a TU that gave up and asks
            // again (new ISN) gets the answer to its newest request.
            Some(TokenState::Pending(_)) => {
                self.state.insert(user_id, TokenState::Pending(isn));
            }
            // The TO offers it one meanwhile: its TGC to that offer answers both.
            Some(TokenState::Offered(_)) => {}
            Some(TokenState::Held { id, .. } | TokenState::Withdrawing { id, .. }) => {
                // A TU asks with a new ISN only when it holds no token: it gave up
                // waiting for our TGC. That grant is void; this is a new request.
                if self.is_withdrawing(user_id) {
                    self.finish(user_id, Ok(0));
                }
                self.release(user_id, id, stats);
                self.on_tgr(cfg, conn_id, user_id, addr, isn, events, out, stats);
            }
            None | Some(TokenState::Refused(_)) => {
                self.state.insert(user_id, TokenState::Pending(isn));
                if cfg.ask_tokens {
                    events.push_back(Event::TokenRequest { user_id, addr });
                } else {
                    let _ = self.confirm(cfg, conn_id, user_id, addr, true, out);
                }
            }
        }
    }

    /// Answer a token request (`mtoken_confirm`). A grant fails into a
    /// refusal when all `max_tokens` tokens are in use.
    pub(crate) fn confirm(
        &mut self,
        cfg: &Config,
        conn_id: u32,
        user_id: u32,
        addr: SocketAddr,
        accept: bool,
        out: &mut VecDeque<Ctl>,
    ) -> Result<(), OwnerError> {
        let Some(TokenState::Pending(isn)) = self.state.get(&user_id).copied() else {
            return Err(OwnerError::NotFound);
        };
        let id = if accept { self.free_token_id(cfg.max_tokens) } else { None };
        match id {
            Some(id) => {
                self.holders[usize::from(id)] = Some((user_id, addr));
                self.hold(cfg, user_id, id, isn);
            }
            None => {
                self.state.insert(user_id, TokenState::Refused(isn));
            }
        }
        out.push_back(Tokens::tgc(conn_id, addr, isn, id));
        Ok(())
    }

    /// TRR: an SU returns its token. Whatever it sent has been delivered or
    /// given up by now; the TRC is sent again for a resent TRR.
    pub(crate) fn on_trr(
        &mut self,
        conn_id: u32,
        user_id: u32,
        addr: SocketAddr,
        token_id: u8,
        out: &mut VecDeque<Ctl>,
        stats: &mut Stats,
    ) {
        match self.state.get(&user_id).copied() {
            Some(TokenState::Held { id, .. }) if id == token_id => self.release(user_id, token_id, stats),
            // It returned the token by itself while the TO was taking it back.
            Some(TokenState::Withdrawing { id, .. }) if id == token_id => {
                self.release(user_id, token_id, stats);
                self.finish(user_id, Ok(0));
            }
            _ => {}
        }
        let mut h = Header::new(PacketType::Trc, conn_id);
        h.token_id = token_id;
        out.push_back(Ctl::new(Dest::Unicast(addr), h));
    }

    /// Member `user_id` is gone: what it sent is delivered, its token freed.
    /// A give under way ends with NotFound, a withdrawal with success.
    pub(crate) fn forget(&mut self, user_id: u32, stats: &mut Stats) {
        match self.state.get(&user_id).copied() {
            Some(TokenState::Held { id, .. }) => self.release(user_id, id, stats),
            Some(TokenState::Withdrawing { id, .. }) => {
                self.release(user_id, id, stats);
                self.finish(user_id, Ok(0));
            }
            Some(TokenState::Offered(id)) => {
                self.holders[usize::from(id)] = None;
                self.finish(user_id, Err(OwnerError::NotFound));
            }
            _ => {}
        }
        self.state.remove(&user_id);
    }

    /// Free token `token_id` of `user_id`, delivering what it sent before:
    /// every whole message; in the reliable mode only those before the first
    /// hole (no gap flag ever), the rest is lost with the SU's departure.
    fn release(&mut self, user_id: u32, token_id: u8, stats: &mut Stats) {
        self.cc.remove(&token_id);
        if let Some(mut rx) = self.backward.remove(&token_id) {
            let end = rx.known_end();
            rx.give_up_before(end, true);
            if let Some((_, addr)) = self.holders[usize::from(token_id)] {
                collect(&mut rx, user_id, token_id, addr, &mut self.inbox, stats);
            }
        }
        self.holders[usize::from(token_id)] = None;
        self.state.remove(&user_id);
        self.late_return.remove(&user_id);
    }

    /// DATA/RDATA from member `user_id`, tagged with its token id; `rtt`:
    /// the TO's round trip to it, if known.
    pub(crate) fn on_data(
        &mut self,
        cfg: &Config,
        now: Instant,
        user_id: u32,
        rtt: Option<Duration>,
        p: &Packet<'_>,
        stats: &mut Stats,
    ) -> Outcome {
        let h = p.header;
        if !self.holds(user_id, h.token_id) {
            return Outcome::Unexpected;
        }
        let Some(rx) = self.backward.get_mut(&h.token_id) else { return Outcome::Unexpected };
        match rx.on_segment(Psn(h.psn), h.flag, p.data) {
            Accept::New => {
                stats.data_received += 1;
                stats.bytes_received += p.data.len() as u64;
            }
            Accept::Duplicate => stats.duplicates += 1,
            Accept::TooFarAhead => return Outcome::Range,
            Accept::Full => return Outcome::Taken, // the TO's inbox is not bounded
        }
        if cfg.cc == CcMode::Tfmcc {
            let cc = self.cc.entry(h.token_id).or_insert_with(|| CcReceiver::new(cfg.mss, rtt, now));
            cc.on_data(now, Psn(h.psn), p.data.len(), h.packet_type == PacketType::Data);
        }
        if let Some((_, addr)) = self.holders[usize::from(h.token_id)] {
            collect(rx, user_id, h.token_id, addr, &mut self.inbox, stats);
        }
        Outcome::Taken
    }

    /// HB from an SU: its PSN is the lowest it still keeps; the answer is an
    /// HBACK with the Acknowledgement element of its backward stream
    /// (draft: "Backward data").
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_heartbeat(
        &mut self,
        cfg: &Config,
        now: Instant,
        conn_id: u32,
        user_id: u32,
        p: &Packet<'_>,
        out: &mut VecDeque<Ctl>,
        stats: &mut Stats,
    ) -> Outcome {
        let h = p.header;
        if !self.holds(user_id, h.token_id) {
            return Outcome::Unexpected;
        }
        let Some((_, addr)) = self.holders[usize::from(h.token_id)] else { return Outcome::Unexpected };
        let Some(rx) = self.backward.get_mut(&h.token_id) else { return Outcome::Unexpected };
        let lowest = Psn(h.psn);
        if cfg.ro == Ro::SemiReliable && lowest.is_valid() && rx.lsn().is_before(lowest) {
            // An SU does not wait in this mode: what it no longer keeps is
            // given up, a window per HB at most (one step per segment held).
            rx.give_up_before(rx.within_reach(lowest), false);
        }
        collect(rx, user_id, h.token_id, addr, &mut self.inbox, stats);
        let mut reply = Header::new(PacketType::Hback, conn_id);
        reply.token_id = h.token_id;
        let mut ctl = Ctl::new(Dest::Unicast(addr), reply);
        ctl.elements.timestamp = p.elements.timestamp;
        ctl.elements.ack = Some(ack_of(rx, 1));
        // TFMCC on the backward channel: the loss event rate and receive
        // rate the TO measures; the SU computes its rate with its own RTT.
        if let Some(cc) = self.cc.get(&h.token_id) {
            ctl.elements.report = Some(cc.report(now, 0));
            stats.rate_reports += 1;
        }
        out.push_back(ctl);
        stats.repairs_requested += u64::from(rx.has_hole());
        // And every hole further on, a block of 255 PSNs per HBACK.
        for k in blocks_with_holes(rx) {
            let mut more = Ctl::new(Dest::Unicast(addr), reply);
            more.elements.ack = Some(ack_block(rx, 1, k));
            out.push_back(more);
            stats.repairs_requested += 1;
        }
        Outcome::Taken
    }

    /// Unreliable mode: give up the holes open for `patience`.
    pub(crate) fn expire_holes(&mut self, now: Instant, patience: Duration, stats: &mut Stats) {
        for (&token_id, rx) in self.backward.iter_mut() {
            rx.expire_holes(now, patience);
            if let Some((user_id, addr)) = self.holders[usize::from(token_id)] {
                collect(rx, user_id, token_id, addr, &mut self.inbox, stats);
            }
        }
    }

    /// When [`Tokens::expire_holes`] next has work to do.
    pub(crate) fn hole_deadline(&self, patience: Duration) -> Option<Instant> {
        self.backward.values().filter_map(|rx| rx.hole_deadline(patience)).min()
    }
}

/// Move the whole messages of a backward receiver into the TO's inbox.
fn collect(
    rx: &mut Receiver,
    user_id: u32,
    token_id: u8,
    from: SocketAddr,
    inbox: &mut VecDeque<Incoming>,
    stats: &mut Stats,
) {
    while let Some(message) = rx.pop_message() {
        stats.messages_delivered += 1;
        stats.gaps += u64::from(message.gap);
        inbox.push_back(Incoming { user_id, token_id, from, message });
    }
}
