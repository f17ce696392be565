//! A tree of many simulated TUs in virtual time, for `examples/scale.rs` and
//! its small case in the tests (issue 6: "Scale, as a program anyone can run").
//!
//! The TO and every TU are the real state machines on the simulated network
//! of [`super::sim`], with independent loss on every link. The TUs join in
//! waves: first the repair agents, as many as a tree of fan-out F needs
//! (ceil(N / F) - 1, placed by the TO's policy under the TO and then under
//! one another), then the leaves; then the TO streams M messages and the run
//! ends when every TU delivered them all, or gave up.
//!
//! What it measures per data packet, during the data phase only (joining is
//! O(1) per member at the TO, and is not what a tree must bound): the control
//! packets the TO received, and those the busiest parent received.

use std::time::{Duration, Instant};

use super::sim::{Direction, Sim, digest_of, messages};
use super::{CcMode, Config, JoinStatus, Rng};
use crate::wire::{Ro, Tco};

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// TUs.
    pub tus: usize,
    /// Most children of the TO and of every repair agent.
    pub fanout: u16,
    /// Independent loss on every link, in percent.
    pub loss_pct: f64,
    /// Messages the TO streams.
    pub messages: usize,
    /// Bytes per message (one DATA packet up to the MSS).
    pub message_len: usize,
    /// Virtual time between two messages.
    pub gap: Duration,
    /// Reliability option.
    pub ro: Ro,
    /// Seed of everything.
    pub seed: u64,
    /// Congestion control (ECTP_CC).
    pub cc: CcMode,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            tus: 1000,
            fanout: 32,
            loss_pct: 2.0,
            messages: 1000,
            message_len: 1000,
            gap: Duration::from_millis(1),
            ro: Ro::Reliable,
            seed: 1,
            cc: CcMode::Tfmcc,
        }
    }
}

/// What came out.
#[derive(Clone, Debug)]
pub struct Report {
    /// TUs that joined.
    pub tus: usize,
    /// Deepest tree level.
    pub levels: u8,
    /// TUs that delivered every message.
    pub delivered: usize,
    /// Every TU that delivered them all delivered exactly the bytes sent, in order.
    pub identical: bool,
    /// Control packets received by the TO per DATA packet sent, in the data phase.
    pub to_ctl_per_data: f64,
    /// The same at the busiest parent (the TO or a repair agent).
    pub max_parent_ctl_per_data: f64,
    /// Repair agents.
    pub ras: usize,
    /// DATA packets the TO sent.
    pub data_packets: u64,
    /// RDATA sent by anybody, per DATA packet.
    pub repairs_per_data: f64,
    /// Copies lost by the network.
    pub lost: u64,
    /// Virtual seconds the data phase lasted.
    pub sim_s: f64,
    /// Wall-clock seconds of the whole run.
    pub wall_s: f64,
    /// TFMCC: rate reports the TO took in all.
    pub reports: u64,
    /// TFMCC: the most reports the TO took in one feedback round.
    pub max_round_reports: u32,
}

impl Report {
    /// The line `examples/scale.rs` prints last.
    pub fn line(&self) -> String {
        format!(
            "scale: tus={} levels={} delivered={}/{} identical={} to_ctl_per_data={:.2} max_parent_ctl_per_data={:.2} rate_reports={} max_per_round={} sim_s={:.1} wall_s={:.1}",
            self.tus,
            self.levels,
            self.delivered,
            self.tus,
            if self.identical { "yes" } else { "no" },
            self.to_ctl_per_data,
            self.max_parent_ctl_per_data,
            self.reports,
            self.max_round_reports,
            self.sim_s,
            self.wall_s
        )
    }
}

/// Join `n` more TUs with `cfg` at once; run until each joined (the TO
/// counts it) or the wave timed out.
fn wave(sim: &mut Sim, cfg: Config, n: usize) {
    let first = sim.users.len();
    for _ in 0..n {
        sim.add_user(cfg);
    }
    let mut waiting: Vec<usize> = (first..first + n).collect();
    let limit = Instant::now();
    for _ in 0..600 {
        sim.run_for(Duration::from_millis(50));
        waiting.retain(|&i| {
            let u = sim.user(i);
            u.join_status() == JoinStatus::Joining
                || (u.join_status() == JoinStatus::Joined && sim.owner().member(u.member_id()).is_none())
        });
        if waiting.is_empty() {
            return;
        }
    }
    log::warn!("{} TUs did not join in {:?}", waiting.len(), limit.elapsed());
}

/// Build the tree, stream, measure.
pub fn run(p: &Params) -> Report {
    let t0 = Instant::now();
    let fanout = p.fanout.max(1);
    let cfg = Config {
        tco: Tco::Tree,
        ro: p.ro,
        max_children: Some(fanout),
        mss: u16::try_from(p.message_len.clamp(64, 65000)).unwrap_or(1400),
        window: 4096,
        cc: p.cc,
        ..Config::default()
    };
    let mut sim = Sim::new(p.seed);
    sim.keep_messages = false;
    sim.record_sent = false;
    sim.add_owner(cfg);
    // Repair agents: enough places for everybody, ceil(N / F) - 1 of them,
    // joined level by level so that each wave finds the last one in the tree.
    let f = usize::from(fanout);
    let ras = p.tus.div_ceil(f).saturating_sub(1).min(p.tus);
    let ra_cfg = Config { ra: true, ..cfg };
    let (mut joined, mut level_size) = (0, f);
    while joined < ras {
        let n = level_size.min(ras - joined);
        wave(&mut sim, ra_cfg, n);
        joined += n;
        level_size = level_size.saturating_mul(f);
    }
    // Leaves, in waves of a few thousand (the TO answers each LJR at once).
    let mut left = p.tus - ras;
    while left > 0 {
        let n = left.min(5000);
        wave(&mut sim, cfg, n);
        left -= n;
    }
    // Let the joins settle (member reports, the ADN sum) before measuring.
    sim.run_for(cfg.hgt * 2);
    let tus = sim.users.iter().filter(|u| u.user().join_status() == JoinStatus::Joined).count();
    let levels = sim.users.iter().map(|u| u.user().tree_level()).max().unwrap_or(0);

    let loss = p.loss_pct / 100.0;
    sim.set_loss(Direction::Forward, None, loss);
    sim.set_loss(Direction::Backward, None, loss);
    let before: Vec<u64> = sim.users.iter().map(|u| u.ctl_received).collect();
    let to_before = sim.owner_node().ctl_received;
    let msgs = messages(&mut Rng::new(p.seed), 0, p.messages, p.message_len..=p.message_len);
    let data_start = sim.now;
    for m in &msgs {
        sim.owner_send_all(std::slice::from_ref(m));
        sim.run_for(p.gap);
    }
    let n = msgs.len();
    for _ in 0..600 {
        if sim.users.iter().filter(|u| u.user().join_status() == JoinStatus::Joined).all(|u| u.delivered_count >= n) {
            break;
        }
        sim.run_for(Duration::from_millis(100));
    }
    let sim_s = (sim.now - data_start).as_secs_f64();
    let data_packets = sim.owner().stats().data_sent.max(1);
    let to_ctl = sim.owner_node().ctl_received - to_before;
    let busiest = sim
        .users
        .iter()
        .zip(&before)
        .filter(|(u, _)| u.user().ra_children().is_some_and(|c| c > 0))
        .map(|(u, b)| u.ctl_received - b)
        .max()
        .unwrap_or(0)
        .max(to_ctl);
    let digest = digest_of(&msgs);
    let complete: Vec<_> = sim.users.iter().filter(|u| u.delivered_count >= n).collect();
    let identical = complete.iter().all(|u| u.delivered_count == n && u.delivered_digest == digest);
    let repairs = sim.sent_count(crate::wire::PacketType::Rdata) as f64;
    Report {
        tus,
        levels,
        delivered: complete.len(),
        identical,
        to_ctl_per_data: to_ctl as f64 / data_packets as f64,
        max_parent_ctl_per_data: busiest as f64 / data_packets as f64,
        ras,
        data_packets,
        repairs_per_data: repairs / data_packets as f64,
        lost: sim.lost,
        sim_s,
        wall_s: t0.elapsed().as_secs_f64(),
        reports: sim.owner().cc_state().2,
        max_round_reports: sim.owner().cc_state().3,
    }
}
