//! Congestion control: TFMCC, TCP-friendly multicast congestion control
//! (RFC 4654), as ECTP carries it (`docs/congestion.md`).
//!
//! Receivers measure their loss event rate `p` (RFC 5348 §5: losses within
//! one RTT are one event; the weighted mean of the last eight intervals) and
//! their round trip to the sender, and compute the TCP throughput equation
//! (RFC 5348 §3.1). They report in feedback rounds the sender announces;
//! a receiver that is not the current limiting receiver (CLR) waits a
//! random, rate-biased time before it reports and keeps quiet if somebody
//! reported a clearly lower rate meanwhile, so that the sender hears O(1)
//! reports per round whatever the group size; in a tree, repair agents pass
//! up only the lowest. The sender follows the CLR (at once down, at most one
//! packet per RTT per RTT up), starts in slow start (doubling, at most twice
//! the lowest receive rate reported, until a receiver sees loss), and paces
//! its packets by a token bucket.
//!
//! The same pieces run the SU's backward channel: the TO is its only
//! receiver and reports in the HBACKs it sends the SU.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::wire::{Echo, Psn, RateInfo, RateReport};

/// Congestion control of a connection (ECTP_CC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CcMode {
    /// As fast as the window allows, capped by ECTP_MAX_RATE only.
    None = 0,
    /// TFMCC (RFC 4654).
    Tfmcc = 1,
}

/// Receivers a feedback round's timers are spread for (RFC 4654 §4.4: N).
const FEEDBACK_N: f64 = 10_000.0;
/// A receiver reports only if its rate is below this share of the lowest
/// reported in the round (RFC 4654 §4.4).
const SUPPRESS_SHARE: f64 = 0.9;
/// The slowest the sender ever goes: one segment per second (see [`RateControl::floor`]).
const MIN_SEGMENTS_PER_S: f64 = 1.0;
/// A CLR silent for this many rounds is dropped.
const CLR_ROUNDS: u32 = 6;
/// With a standing queue, the rate is at most this many times the CLR's
/// receive rate (else twice it).
const QUEUE_CAP: f64 = 1.25;
/// Segments the sender is woken for, at most, once the pacer held packets
/// back (fewer at low rates: a millisecond's worth, see [`Pacer`]).
const PACE_BATCH: f64 = 16.0;
/// Credit left unused beyond which the sender counts as data-limited: a
/// millisecond's worth, at least this many segments, twice over.
const LIMITED_SEGMENTS: f64 = 16.0;
/// How far back the CLR's best receive rate counts for the cap (at least
/// its last three reports).
const RECV_HORIZON: Duration = Duration::from_millis(100);
/// The shortest span a receive rate is measured over in slow start.
const RECV_SPAN_SLOW_START: Duration = Duration::from_millis(2);
/// The shortest span a receive rate is measured over.
const RECV_SPAN: Duration = Duration::from_millis(10);
/// Weights of a new RTT sample in the smoothed RTT, above and below it.
/// Slowly up: a busy host's scheduling adds a few hundred microseconds to
/// one sample now and then, which at 0.25 halved the rate of a receiver
/// with a 100 us round trip and made it the CLR (near RFC 4654's 0.05 for
/// the CLR; a real queue still shows within a few reports).
const RTT_WEIGHT_UP: f64 = 0.1;
const RTT_WEIGHT_DOWN: f64 = 0.5;
/// Children's reports a repair agent holds to pass up at once, at most.
pub(crate) const FORWARD_CAP: usize = 8;
/// Bytes of the Rate element.
pub(crate) const RATE_LEN: usize = 28;
/// Round trip assumed before anything is measured.
pub(crate) const DEFAULT_RTT: Duration = Duration::from_millis(100);

/// The shortest feedback round: slow start doubles at most this often.
const MIN_ROUND: Duration = Duration::from_millis(3);
/// Slow start ends when the round trip grows by this much (and doubles).
const SLOW_START_QUEUE: Duration = Duration::from_millis(2);
/// Slow start begins at most this fast, however short the round trip.
const MAX_INITIAL_RATE: f64 = 4_000_000.0;

/// Whether a round trip `rtt` shows a standing queue: well above the least
/// seen, `min_rtt` (twice it, and [`SLOW_START_QUEUE`] more).
fn queue_stands(rtt: Duration, min_rtt: Duration) -> bool {
    rtt > (min_rtt * 2).max(min_rtt + SLOW_START_QUEUE)
}

/// Whether a round trip shows the queue full: within a tenth of the deepest
/// it was lately (`max_rtt`) above the least round trip. A TCP that only
/// loss slows (Reno, CUBIC) keeps a drop-tail queue full; one that models
/// the path (BBR) keeps it partly full, and its bursts overflow it for a
/// moment.
fn queue_full(rtt: Duration, min_rtt: Duration, max_rtt: Duration) -> bool {
    rtt >= min_rtt + max_rtt.saturating_sub(min_rtt).mul_f64(0.9)
}

/// How long [`WindowedMax`] remembers: between this and twice it.
const MAX_RTT_WINDOW: Duration = Duration::from_secs(5);

/// The largest of values pushed over the last 5-10 s: two buckets, the
/// older dropped when the newer is a window old.
#[derive(Debug, Default)]
struct WindowedMax {
    buckets: [Option<Duration>; 2],
    since: Option<Instant>,
}

impl WindowedMax {
    fn push(&mut self, now: Instant, v: Duration) {
        let age = self.since.map(|t| now.saturating_duration_since(t));
        if age.is_none_or(|a| a >= MAX_RTT_WINDOW) {
            // After a silence of two windows the newer bucket is stale too.
            let kept = if age.is_some_and(|a| a < MAX_RTT_WINDOW * 2) { self.buckets[0] } else { None };
            self.buckets = [None, kept];
            self.since = Some(now);
        }
        self.buckets[0] = Some(self.buckets[0].map_or(v, |m| m.max(v)));
    }

    fn get(&self) -> Option<Duration> {
        self.buckets[0].max(self.buckets[1])
    }
}

/// The first rate: four segments per round trip (RFC 5348 §4.2), at most
/// [`MAX_INITIAL_RATE`], at least one segment per second.
fn initial_rate(s: f64, rtt: Duration) -> f64 {
    (4.0 * s / rtt.as_secs_f64().max(1e-6)).min(MAX_INITIAL_RATE).max(MIN_SEGMENTS_PER_S * s)
}

/// How long one feedback round lasts for a largest RTT `max_rtt`: receivers
/// spread their reports over its first two thirds ([`feedback_window`]), so
/// that the lowest report is echoed to all before most timers run out.
pub(crate) fn round_length(max_rtt: Duration) -> Duration {
    (max_rtt * 6).clamp(MIN_ROUND, Duration::from_secs(6))
}

/// The span receivers' feedback timers are drawn in.
fn feedback_window(max_rtt: Duration) -> Duration {
    round_length(max_rtt) * 2 / 3
}

/// The TCP throughput equation (RFC 5348 §3.1) in bytes per second, for
/// segments of `s` bytes, a round trip `rtt` and a loss event rate `p`;
/// t_RTO = 4 RTT, b = 1. Infinite without loss.
pub(crate) fn tcp_rate(s: f64, rtt: Duration, p: f64) -> f64 {
    if p <= 0.0 {
        return f64::INFINITY;
    }
    let r = rtt.as_secs_f64().max(1e-6);
    let denom = r * (2.0 * p / 3.0).sqrt() + 4.0 * r * (3.0 * (3.0 * p / 8.0).sqrt()) * p * (1.0 + 32.0 * p * p);
    s / denom
}

/// The loss event rate for which [`tcp_rate`] gives `rate` (bisection): how
/// the first loss interval is set (RFC 5348 §6.3.1).
fn p_for_rate(s: f64, rtt: Duration, rate: f64) -> f64 {
    let (mut lo, mut hi) = (1e-9f64, 1.0f64);
    for _ in 0..60 {
        let mid = (lo * hi).sqrt();
        if tcp_rate(s, rtt, mid) > rate {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// Microseconds from `epoch` to `now`, low 32 bits: the clock of the
/// Rate and Rate Report elements' timestamps (differences wrap).
fn micros(now: Instant, epoch: Instant) -> u32 {
    super::parent::micros(now, epoch) as u32
}

/// The loss event rate as the Rate Report element carries it: times 2^32.
const P_SCALE: f64 = 4_294_967_296.0;

/// A Rate Report's loss event rate.
pub(crate) fn p_from_wire(p: u32) -> f64 {
    f64::from(p) / P_SCALE
}

/// How far past a missing PSN one must arrive before the missing one is taken
/// for lost (RFC 5348 §5.1's NDUPACK, counted in PSNs: with h+1..h+3 all
/// missing, h+4 makes h+1 lost): a datagram overtaken by a few others (veth
/// and multi-queue NICs reorder that much) is not a loss event.
const NDUPACK: i64 = 3;

/// While the receiver's round trip shows a queue standing and full, a loss
/// event lasts half its window in RTTs, at most this many (RFC 5348 §5.2:
/// one RTT, which still holds otherwise). A drop-tail queue that a TCP
/// keeps full drops TFMCC's paced packets while the TCP's ACK clock refills
/// each freed slot at once: TFMCC lost a packet every RTT or so until a
/// Reno lost one and halved (2-3 events where the TCP had one recovery),
/// and beside CUBIC, whose losses come in clusters up to a second long
/// every few seconds, 2-3 events per cluster (docs/congestion.md, "Beside
/// a TCP flow"). Half the window is how long a Reno of that window takes
/// to grow back after its one halving; a fixed 32 RTTs would count one
/// event where a Reno of 20 packets halves three times. Without a queue
/// (random loss), RFC 5348's rule alone; with one only partly full (BBR's),
/// too: its bursts overflow it now and then, and a TCP that loss does not
/// slow is not matched by counting less.
const EVENT_MAX_RTTS: f64 = 32.0;

/// Loss intervals (RFC 5348 §5), in packets.
#[derive(Debug, Default)]
pub(crate) struct LossHistory {
    highest: Option<Psn>,
    /// PSNs skipped and not taken for lost yet (none NDUPACK past them
    /// arrived), in order: at most NDUPACK - 1 of them.
    missing: VecDeque<Psn>,
    /// When the current loss event began, and how many RTTs it lasts
    /// while a queue stands full.
    event_at: Option<Instant>,
    event_rtts: f64,
    /// The receiver's window, packets per RTT at its receive rate.
    pub(crate) window: f64,
    /// The receiver's round trip shows a queue standing and full: a loss
    /// event lasts longer.
    pub(crate) queue: bool,
    /// Closed intervals, the most recent first, at most eight.
    intervals: VecDeque<f64>,
    /// Packets since the current event began (the open interval).
    open: f64,
}

const WEIGHTS: [f64; 8] = [1.0, 1.0, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2];

impl LossHistory {
    /// A packet first sent with `psn` arrived: a PSN skipped is lost once one
    /// NDUPACK past it arrived, and a skipped one that arrives meanwhile was
    /// only late. Returns whether a new loss event began; `first` gives
    /// the first interval then (from the receive rate, RFC 5348 §6.3.1).
    pub(crate) fn on_packet(&mut self, psn: Psn, now: Instant, rtt: Duration, first: impl FnOnce() -> f64) -> bool {
        let Some(h) = self.highest else {
            self.highest = Some(psn);
            self.open += 1.0;
            return false;
        };
        if !h.is_before(psn) {
            // Late: one of the missing ones, or a duplicate.
            if let Some(i) = self.missing.iter().position(|&m| m == psn) {
                self.missing.remove(i);
                self.open += 1.0;
            }
            return false;
        }
        self.highest = Some(psn);
        // Skipped PSNs this far behind are lost at once, however many.
        let skipped = psn.diff(h) - 1;
        let mut lost = (skipped - (NDUPACK - 1)).max(0) as f64;
        let mut p = psn.sub(skipped.min(NDUPACK - 1) as u32);
        while p.is_before(psn) {
            self.missing.push_back(p);
            p = p.next();
        }
        while self.missing.front().is_some_and(|&m| psn.diff(m) >= NDUPACK) {
            self.missing.pop_front();
            lost += 1.0;
        }
        let mut new_event = false;
        let same_event = self.event_at.is_some_and(|t| {
            let s = now.saturating_duration_since(t);
            s <= rtt || (self.queue && s <= rtt.mul_f64(self.event_rtts))
        });
        if lost > 0.0 && !same_event {
            if self.event_at.is_some() {
                self.intervals.push_front(self.open.max(1.0));
                self.intervals.truncate(WEIGHTS.len());
            } else {
                self.intervals.push_front(first().max(1.0));
            }
            self.event_at = Some(now);
            self.event_rtts = (self.window / 2.0).clamp(1.0, EVENT_MAX_RTTS);
            self.open = 0.0;
            new_event = true;
        }
        self.open += lost + 1.0;
        new_event
    }

    /// Whether a loss event was seen.
    pub(crate) fn has_loss(&self) -> bool {
        !self.intervals.is_empty()
    }

    /// The loss event rate: 1 / the weighted mean interval, the open one
    /// counted when that makes the mean longer; 0 without loss.
    pub(crate) fn p(&self) -> f64 {
        if self.intervals.is_empty() {
            return 0.0;
        }
        let mean = |xs: &mut dyn Iterator<Item = f64>| {
            let (mut sum, mut w) = (0.0, 0.0);
            for (x, wt) in xs.zip(WEIGHTS) {
                sum += x * wt;
                w += wt;
            }
            if w > 0.0 { sum / w } else { 0.0 }
        };
        let closed = mean(&mut self.intervals.iter().copied());
        let with_open = mean(&mut std::iter::once(self.open).chain(self.intervals.iter().copied()));
        1.0 / closed.max(with_open).max(1.0)
    }
}

/// The rate data arrives at, over the last interval of at least a round trip.
#[derive(Debug)]
struct RecvRate {
    since: Instant,
    bytes: f64,
    rate: f64,
}

impl RecvRate {
    fn new(now: Instant) -> RecvRate {
        RecvRate { since: now, bytes: 0.0, rate: 0.0 }
    }

    /// `span`: the shortest interval measured over.
    fn on_bytes(&mut self, now: Instant, len: usize, rtt: Duration, span_min: Duration) {
        self.bytes += len as f64;
        let span = now.saturating_duration_since(self.since);
        if span >= rtt.max(span_min) {
            self.rate = self.bytes / span.as_secs_f64();
            self.since = now;
            self.bytes = 0.0;
        }
    }
}

/// A receiver's side: what it measures, and when it reports.
#[derive(Debug)]
pub(crate) struct CcReceiver {
    loss: LossHistory,
    recv: RecvRate,
    /// Segment size, bytes.
    s: f64,
    /// The round trip to the sender, once an echo measured it, and the
    /// least sample.
    rtt: Option<Duration>,
    min_rtt: Option<Duration>,
    /// The largest round trip over the last 5-10 s.
    max_rtt: WindowedMax,

    /// The estimate used before: a round trip to the parent, or the
    /// sender's largest.
    rtt_hint: Duration,
    /// What the sender last announced.
    sender: Option<RateInfo>,
    /// The round this receiver reported in, and its feedback timer.
    reported: Option<u8>,
    timer: Option<Instant>,
    last_report: Option<Instant>,
    /// Reports of children to pass up (repair agents), with the time each
    /// arrived, in order: they go at the driver's next round, at most
    /// [`FORWARD_CAP`] of them (the oldest dropped beyond).
    forward: VecDeque<(RateReport, Instant)>,
    /// The lowest rate passed up in this round.
    forwarded: f64,
    /// Data packets since the last report: with none, nothing is reported.
    fresh: u32,
    epoch: Instant,
}

impl CcReceiver {
    pub(crate) fn new(mss: u16, rtt_hint: Option<Duration>, now: Instant) -> CcReceiver {
        CcReceiver {
            loss: LossHistory::default(),
            recv: RecvRate::new(now),
            s: f64::from(mss.max(1)),
            rtt: None,
            min_rtt: None,
            max_rtt: WindowedMax::default(),
            rtt_hint: rtt_hint.unwrap_or(DEFAULT_RTT),
            sender: None,
            reported: None,
            timer: None,
            last_report: None,
            forward: VecDeque::new(),
            forwarded: f64::INFINITY,
            fresh: 0,
            epoch: now,
        }
    }

    /// A better estimate of the round trip before one is measured.
    pub(crate) fn set_rtt_hint(&mut self, rtt: Duration) {
        self.rtt_hint = rtt;
    }

    /// The round trip measured by the sender's echoes, once there was one.
    pub(crate) fn measured_rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// The round trip in use.
    pub(crate) fn rtt(&self) -> Duration {
        self.rtt.unwrap_or(match self.sender {
            Some(s) => self.rtt_hint.max(Duration::from_micros(u64::from(s.max_rtt_us))),
            None => self.rtt_hint,
        })
    }

    /// Data arrived: `first` when it is a first transmission (DATA), whose
    /// PSN shows losses.
    pub(crate) fn on_data(&mut self, now: Instant, psn: Psn, len: usize, first: bool) {
        let rtt = self.rtt();
        self.fresh = self.fresh.saturating_add(1);
        // Short spans in slow start (the rate doubles every round), longer
        // ones after (a steadier measure for the sender's cap).
        let span = if self.sender.is_none_or(|s| s.slow_start) { RECV_SPAN_SLOW_START } else { RECV_SPAN };
        self.recv.on_bytes(now, len, rtt, span);
        if first {
            let (s, x_recv) = (self.s, self.recv.rate);
            self.loss.queue = self
                .rtt
                .zip(self.min_rtt)
                .is_some_and(|(r, m)| queue_stands(r, m) && queue_full(r, m, self.max_rtt.get().unwrap_or(r)));
            // f64::max drops a NaN: the span it sets goes to Duration::mul_f64,
            // which panics on one.
            self.loss.window = (x_recv * rtt.as_secs_f64() / s).max(0.0);
            self.loss.on_packet(psn, now, rtt, || {
                // The interval that gives the rate data came at (RFC 5348 §6.3.1).
                if x_recv > 0.0 { 1.0 / p_for_rate(s, rtt, x_recv) } else { 100.0 }
            });
        }
    }

    /// The TCP-friendly rate now (infinite without loss).
    pub(crate) fn calc_rate(&self) -> f64 {
        tcp_rate(self.s, self.rtt(), self.loss.p())
    }

    /// The rate this receiver would report: its calculated rate once it saw
    /// loss, its receive rate in the sender's slow start, else none.
    fn my_rate(&self) -> Option<f64> {
        if self.loss.has_loss() {
            Some(self.calc_rate())
        } else if self.sender.is_some_and(|s| s.slow_start) {
            Some(self.recv.rate.max(1.0))
        } else {
            None
        }
    }

    /// The sender's Rate element, from member `me`: an echo of our report
    /// measures the round trip; a new round may start our feedback timer
    /// (`coin` is a uniform draw in (0, 1]).
    pub(crate) fn on_rate(&mut self, now: Instant, info: RateInfo, me: u32, coin: f64) {
        if let Some(e) = info.echo.filter(|e| e.member == me) {
            let sample = micros(now, self.epoch).wrapping_sub(e.timestamp).wrapping_sub(e.delay);
            // A wrapped or absurd sample (more than a minute) is ignored.
            if sample < 60_000_000 {
                let sample = Duration::from_micros(u64::from(sample.max(1)));
                self.min_rtt = Some(self.min_rtt.map_or(sample, |m| m.min(sample)));
                // Smoothed: slowly up (a queue building), fast down (a queue
                // drained: the rate may rise again at once).
                self.rtt = Some(match self.rtt {
                    Some(r) => {
                        // In slow start a queue must show within a sample or two.
                        let w = if sample < r || info.slow_start { RTT_WEIGHT_DOWN } else { RTT_WEIGHT_UP };
                        r.mul_f64(1.0 - w) + sample.mul_f64(w)
                    }
                    None => sample,
                });
                if let Some(r) = self.rtt {
                    self.max_rtt.push(now, r);
                }
            }
        }
        let new_round = self.sender.is_none_or(|s| s.round != info.round);
        self.sender = Some(info);
        if new_round {
            self.forwarded = f64::INFINITY;
            self.timer = None;
            if info.clr != me
                && self.reported != Some(info.round)
                && let Some(x) = self.my_rate().filter(|&x| x < info.rate as f64 || info.slow_start)
            {
                // Biased exponential timers (RFC 4654 §4.4): lower rates report earlier.
                let t = feedback_window(Duration::from_micros(u64::from(info.max_rtt_us)));
                let bias = (x / (info.rate as f64).max(1.0)).clamp(0.0, 1.0);
                let spread = (1.0 + coin.clamp(1e-12, 1.0).ln() / FEEDBACK_N.ln()).max(0.0);
                self.timer = Some(now + t.mul_f64(0.25 * bias + 0.75 * spread));
            }
        }
    }

    /// A child's report (repair agents): passed up at the next round of the
    /// driver if it is the CLR's, or clearly the lowest this agent heard in
    /// the round.
    pub(crate) fn on_child_report(&mut self, now: Instant, r: RateReport) {
        let Some(info) = self.sender else { return };
        let x = if r.loss { r.calc } else { r.recv } as f64;
        let bar = if info.suppress > 0 { info.suppress as f64 * SUPPRESS_SHARE } else { info.rate as f64 };
        if r.member == info.clr || (x < bar.min(self.forwarded) && (x < info.rate as f64 || info.slow_start)) {
            self.forwarded = self.forwarded.min(x);
            if self.forward.len() == FORWARD_CAP {
                self.forward.pop_front();
            }
            self.forward.push_back((r, now));
        }
    }

    /// When a report may be due (the feedback timer, the CLR's period).
    pub(crate) fn deadline(&self, me: u32) -> Option<Instant> {
        let clr =
            (self.is_clr(me) && self.fresh > 0).then(|| self.last_report.map_or(self.epoch, |t| t + self.clr_period()));
        match (self.timer, clr) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn is_clr(&self, me: u32) -> bool {
        self.sender.is_some_and(|s| s.clr == me)
    }

    /// The CLR reports once per round trip (at least 2 ms apart).
    fn clr_period(&self) -> Duration {
        self.rtt().max(Duration::from_millis(2))
    }

    /// The report to send now, if one is due: a child's to pass up, the
    /// CLR's periodic one, or ours when our timer ran out and nobody
    /// reported a clearly lower rate meanwhile.
    pub(crate) fn poll_report(&mut self, now: Instant, me: u32) -> Option<RateReport> {
        if let Some((mut r, at)) = self.forward.pop_front() {
            r.delay = r.delay.saturating_add(micros(now, at));
            return Some(r);
        }
        let info = self.sender?;
        let due_clr =
            self.is_clr(me) && self.fresh > 0 && self.last_report.is_none_or(|t| now >= t + self.clr_period());
        let due_timer = self.timer.is_some_and(|t| now >= t);
        if !(due_clr || due_timer) {
            return None;
        }
        self.timer = None;
        let x = self.my_rate();
        if !due_clr {
            let bar = if info.suppress > 0 { info.suppress as f64 * SUPPRESS_SHARE } else { f64::INFINITY };
            if x.is_none_or(|x| x >= bar || x >= self.forwarded) {
                return None;
            }
        }
        self.reported = Some(info.round);
        self.last_report = Some(now);
        self.fresh = 0;
        Some(self.report(now, me))
    }

    /// This receiver's report, as of now.
    pub(crate) fn report(&self, now: Instant, me: u32) -> RateReport {
        let calc = self.calc_rate();
        RateReport {
            loss: self.loss.has_loss(),
            measured: self.rtt.is_some(),
            round: self.sender.map_or(0, |s| s.round),
            member: me,
            calc: if calc.is_finite() { calc as u64 } else { u64::MAX },
            recv: self.recv.rate as u64,
            p: (self.loss.p() * P_SCALE).min(f64::from(u32::MAX)) as u32,
            rtt_us: self.rtt().as_micros().min(u128::from(u32::MAX)) as u32,
            timestamp: micros(now, self.epoch),
            delay: 0,
        }
    }
}

/// A token bucket: bytes may leave at `rate`, in bursts of a millisecond's
/// worth (at least a segment), not of at least 16 segments: at 2-4 MB/s of
/// 1400-byte segments 2-3 packets leave together, below 1.4 MB/s one by one
/// (above 22 MB/s nothing changed). A bottleneck queue that TCP keeps nearly
/// full has room for a packet or two at a time, and a burst into it loses
/// its tail (against CUBIC, 16-segment bursts left TFMCC half the share
/// that millisecond bursts do).
#[derive(Debug)]
struct Pacer {
    tokens: f64,
    last: Instant,
    /// When the sender last left more credit unused than [`Pacer::limited`]:
    /// it had nothing it could send (its window full, or the application idle).
    limited_at: Option<Instant>,
}

impl Pacer {
    fn burst(rate: f64, s: f64) -> f64 {
        (rate / 1000.0).max(s)
    }

    /// Credit that shows the sender had nothing to send: two milliseconds'
    /// worth, at least 32 segments.
    fn limited(rate: f64, s: f64) -> f64 {
        2.0 * (rate / 1000.0).max(LIMITED_SEGMENTS * s)
    }

    fn refill(&mut self, now: Instant, rate: f64, s: f64) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let credit = self.tokens + rate * dt;
        if credit > Self::limited(rate, s) {
            self.limited_at = Some(now);
        }
        self.tokens = credit.min(Self::burst(rate, s));
    }
}

/// The sender's side: the rate, the CLR, the rounds, and the pacer.
#[derive(Debug)]
pub(crate) struct RateControl {
    mode: CcMode,
    /// ECTP_MAX_RATE, bytes per second (0: none).
    max_rate: u64,
    rate: f64,
    slow_start: bool,
    s: f64,
    /// The CLR, the rate it asks, and when it last reported.
    clr: Option<(u32, Instant)>,
    round: u8,
    round_start: Instant,
    /// Lowest rates reported in the current round: any, and receive rates (slow start).
    round_low: f64,
    round_low_recv: f64,
    /// Reports taken in the current round and in all.
    round_reports: u32,
    /// The largest round trip known.
    max_rtt: Duration,
    /// The largest round trip measured in the current round (zero: none).
    round_max_rtt: Duration,
    /// The last report, to echo: member, timestamp, delay so far, arrival.
    echo: Option<(u32, u32, u32, Instant)>,
    /// When the Rate element was last sent, and whether an echo waits.
    announced: Option<Instant>,
    echo_waiting: bool,
    /// Bytes sent in this round, and packets since the last announcement:
    /// rounds and announcements follow the data, not the clock alone.
    sent_in_round: u64,
    sent_since_announce: u32,
    pacer: Pacer,
    /// Time of the last rate increase (bounds the increase per RTT).
    last_increase: Instant,
    /// The CLR's measured round trip when the rate was last set (none
    /// before a measured report: a hinted one says nothing of a queue).
    rate_rtt: Option<Duration>,
    /// The least round trip reported in slow start.
    min_rtt: Duration,
    /// The CLR's receive rates lately, and when each came.
    clr_recv: VecDeque<(f64, Instant)>,
    /// Slow start: the best receive rate reported, and reports since it grew.
    ss_best_recv: f64,
    ss_flat: u32,
    ss_last_recv: f64,
    pub(crate) reports: u64,
    pub(crate) max_round_reports: u32,
}

impl RateControl {
    /// A sender of `mss`-byte segments whose largest known round trip is
    /// `rtt`, if any.
    pub(crate) fn new(mode: CcMode, max_rate: u64, mss: u16, rtt: Option<Duration>, now: Instant) -> RateControl {
        let s = f64::from(mss.max(1));
        let max_rtt = rtt.unwrap_or(DEFAULT_RTT);
        RateControl {
            mode,
            max_rate,
            rate: initial_rate(s, max_rtt),
            slow_start: true,
            s,
            clr: None,
            round: 0,
            round_start: now,
            round_low: f64::INFINITY,
            round_low_recv: f64::INFINITY,
            round_reports: 0,
            max_rtt,
            round_max_rtt: Duration::ZERO,
            echo: None,
            announced: None,
            echo_waiting: false,
            sent_in_round: 0,
            sent_since_announce: 0,
            pacer: Pacer { tokens: 4.0 * s, last: now, limited_at: None },
            last_increase: now,
            rate_rtt: None,
            min_rtt: Duration::MAX,
            clr_recv: VecDeque::new(),
            ss_best_recv: 0.0,
            ss_flat: 0,
            ss_last_recv: -1.0,
            reports: 0,
            max_round_reports: 0,
        }
    }

    pub(crate) fn mode(&self) -> CcMode {
        self.mode
    }

    pub(crate) fn set_max_rate(&mut self, max_rate: u64) {
        self.max_rate = max_rate;
    }

    /// The rate packets leave at, bytes per second (infinite: no limit).
    pub(crate) fn rate(&self) -> f64 {
        let cap = if self.max_rate > 0 { self.max_rate as f64 } else { f64::INFINITY };
        match self.mode {
            CcMode::None => cap,
            CcMode::Tfmcc => self.rate.min(cap),
        }
    }

    /// The largest round trip known: reports and the parent role's probes
    /// raise it; it decays slowly toward what is measured now.
    pub(crate) fn note_rtt(&mut self, rtt: Duration) {
        if self.max_rtt == DEFAULT_RTT && self.reports == 0 {
            self.max_rtt = rtt;
            self.rate = self.rate.max(initial_rate(self.s, rtt));
        } else {
            self.max_rtt = self.max_rtt.max(rtt);
        }
        self.round_max_rtt = self.round_max_rtt.max(rtt);
    }

    /// A receiver's report (the CLR's, or one lower than the CLR's).
    pub(crate) fn on_report(&mut self, now: Instant, r: RateReport) {
        self.reports += 1;
        self.round_reports += 1;
        self.max_round_reports = self.max_round_reports.max(self.round_reports);
        self.echo = Some((r.member, r.timestamp, r.delay, now));
        self.echo_waiting = true;
        let rtt = Duration::from_micros(u64::from(r.rtt_us.max(1)));
        if r.measured {
            self.max_rtt = self.max_rtt.max(rtt);
            self.round_max_rtt = self.round_max_rtt.max(rtt);
        }
        let recv = r.recv as f64;
        let x = if r.loss { r.calc as f64 } else { recv };
        self.round_low = self.round_low.min(x);
        if !r.loss {
            self.round_low_recv = self.round_low_recv.min(recv);
        }
        if self.slow_start {
            if r.measured {
                self.min_rtt = self.min_rtt.min(rtt);
            }
            // A queue building up ends slow start as a loss does (as TCP's
            // HyStart): the round trip well above the least seen.
            let queue = r.measured && queue_stands(rtt, self.min_rtt);
            // Or the receive rate stopped growing while the rate doubled (a
            // bottleneck without loss yet): three reports without 25% more.
            // (A report repeating the last measure counts for nothing.)
            if !r.loss && recv > 1.25 * self.ss_best_recv {
                self.ss_best_recv = recv;
                self.ss_flat = 0;
            } else if !r.loss && recv != self.ss_last_recv {
                self.ss_flat += 1;
            }
            self.ss_last_recv = recv;
            let plateau = self.ss_flat >= 3 && self.rate > 1.5 * self.ss_best_recv;
            if r.loss || queue || plateau {
                // The reporter's rate rules (its receive rate, for a queue).
                self.slow_start = false;
                let x = if r.loss { x } else { recv.max(self.ss_best_recv) };
                self.rate = self.rate.min(x).max(self.floor());
                self.clr = Some((r.member, now));
                self.last_increase = now;
                self.rate_rtt = r.measured.then_some(rtt);
            }
            return;
        }
        // A receiver that saw no loss (slow start ended by a queue) asks for
        // nothing but what its receive rate allows: only the CLR's counts.
        let x = if r.loss { x } else { f64::INFINITY };
        let is_clr = self.clr.is_some_and(|(id, _)| id == r.member);
        if is_clr || self.clr.is_none() || x < self.rate {
            if !is_clr {
                self.clr_recv.clear();
            }
            self.clr = Some((r.member, now));
            // The CLR's rate rules (RFC 4654 §3.6), never above twice what it
            // received lately (RFC 5348 §4.3: the best of its receive rates
            // of the last 100 ms or 8 RTTs, at least its last three, so that
            // a sender that paused, or a dip in one measure, does not hold
            // the rate back).
            // A receive rate measured while the sender had nothing to send
            // says nothing of the path: it does not lower the best one
            // (RFC 5348 §4.3, a data-limited interval). Otherwise a stall
            // for repairs would cap the rate at twice the trickle it left.
            let limited =
                self.pacer.limited_at.is_some_and(|t| now.saturating_duration_since(t) <= RECV_SPAN + rtt * 2);
            let counted = if limited { recv.max(self.best_clr_recv()) } else { recv };
            self.clr_recv.push_back((counted, now));
            let horizon = (self.max_rtt * 8).max(RECV_HORIZON);
            while self.clr_recv.len() > 3 && self.clr_recv.front().is_some_and(|&(_, t)| now - t > horizon) {
                self.clr_recv.pop_front();
            }
            while self.clr_recv.len() > 64 {
                self.clr_recv.pop_front();
            }
            let lately = self.best_clr_recv();
            // A standing queue (the round trip well above the least seen):
            // little more than what arrives, so that it grows slowly, if at
            // all, while the rate still probes upward.
            if r.measured {
                self.min_rtt = self.min_rtt.min(rtt);
            }
            let queue = r.measured && queue_stands(rtt, self.min_rtt);
            let cap = (if queue { QUEUE_CAP * lately } else { 2.0 * lately }).max(initial_rate(self.s, rtt));
            let target = x.min(cap);
            if target < self.rate {
                self.rate = target;
            } else {
                // At most one segment per RTT, per RTT (RFC 4654 §3.6), on
                // the window the rate makes with the CLR's round trip: when
                // that falls (a queue before it draining), the rate may rise
                // in proportion at once, as a TCP's window of packets in
                // flight, unchanged, goes faster. A rate-based sender that
                // kept its rate would leave the drained queue empty, and a
                // TCP sharing the path with it would take that moment for
                // its least RTT (BBR, whose window is twice its bandwidth
                // times that RTT, then got a fifth of TFMCC's share). Only
                // from a round trip that showed a standing queue: on an open
                // path, tens of microseconds vary by half from one report to
                // the next (ungated, the 2-TU bench at 5% random loss had a
                // third of its flat runs below 0.8 x raw UDP, against one in
                // twelve).
                let dt = now.saturating_duration_since(self.last_increase).as_secs_f64();
                let secs = rtt.as_secs_f64().max(1e-6);
                let held = match self.rate_rtt {
                    Some(was) if is_clr && r.measured && queue_stands(was, self.min_rtt) => {
                        self.rate * was.as_secs_f64() / secs
                    }
                    _ => self.rate,
                };
                self.rate = target.min(self.rate.max(held) + self.s * dt / (secs * secs));
            }
            self.last_increase = now;
            self.rate_rtt = r.measured.then_some(rtt);
        }
        self.rate = self.rate.max(self.floor());
    }

    /// The best receive rate the CLR reported lately (0 with none).
    fn best_clr_recv(&self) -> f64 {
        self.clr_recv.iter().map(|&(r, _)| r).fold(0.0, f64::max)
    }

    /// The slowest the sender goes: one segment per largest round trip, as
    /// TCP's window of one segment (at least one per second).
    fn floor(&self) -> f64 {
        (self.s / self.max_rtt.as_secs_f64().max(1e-6)).max(MIN_SEGMENTS_PER_S * self.s)
    }

    /// Start a new round when this one is over: slow start doubles (at most
    /// twice the lowest receive rate reported); a silent CLR is dropped.
    pub(crate) fn tick(&mut self, now: Instant) {
        let len = round_length(self.max_rtt);
        if now < self.round_start + len || self.sent_in_round == 0 {
            return;
        }
        if self.slow_start && self.round_low_recv.is_finite() {
            self.rate = (2.0 * self.rate).min(2.0 * self.round_low_recv).max(self.rate);
        }
        if let Some((_, at)) = self.clr
            && now.saturating_duration_since(at) > len * CLR_ROUNDS
        {
            self.clr = None;
        }
        // The largest RTT decays: quartered each round, down to the largest
        // measured in the round (one slow early sample, a join while the TO
        // was busy, must not make every round, and so the slow start, last
        // seconds). A round without a measure keeps it.
        if self.round_max_rtt > Duration::ZERO {
            self.max_rtt = self.round_max_rtt.max(self.max_rtt / 4);
        }
        self.round_max_rtt = Duration::ZERO;
        self.round = self.round.wrapping_add(1);
        self.round_start = now;
        self.round_low = f64::INFINITY;
        self.round_low_recv = f64::INFINITY;
        self.round_reports = 0;
        self.sent_in_round = 0;
        // A new round is announced at once.
        self.announced = None;
    }

    /// Whether the Rate element should go out now (a dedicated HB): at the
    /// start of every round, after a report (its echo), and every quarter
    /// round while data flows.
    pub(crate) fn announce_due(&self, now: Instant) -> bool {
        self.mode == CcMode::Tfmcc
            && self.announced.is_none_or(|t| {
                let since = now.saturating_duration_since(t);
                (self.sent_since_announce > 0 && since >= round_length(self.max_rtt) / 4)
                    || (self.echo_waiting && since >= Duration::from_micros(200))
            })
    }

    /// When [`RateControl::announce_due`] next turns true.
    pub(crate) fn announce_at(&self) -> Option<Instant> {
        if self.mode != CcMode::Tfmcc {
            return None;
        }
        let next_round = (self.sent_in_round > 0).then(|| self.round_start + round_length(self.max_rtt));
        let quarter = self.announced.filter(|_| self.sent_since_announce > 0).map(|t| {
            let gap = if self.echo_waiting { Duration::from_micros(200) } else { round_length(self.max_rtt) / 4 };
            t + gap
        });
        match (quarter, next_round) {
            (Some(q), Some(r)) => Some(q.min(r)),
            (q, r) => q.or(r),
        }
    }

    /// The Rate element as of now; marks it announced.
    pub(crate) fn info(&mut self, now: Instant) -> RateInfo {
        self.announced = Some(now);
        self.echo_waiting = false;
        self.sent_since_announce = 0;
        RateInfo {
            slow_start: self.slow_start,
            round: self.round,
            max_rtt_us: self.max_rtt.as_micros().min(u128::from(u32::MAX)) as u32,
            rate: if self.rate().is_finite() { self.rate() as u64 } else { u64::MAX },
            suppress: if self.round_low.is_finite() { self.round_low as u64 } else { 0 },
            clr: self.clr.map_or(u32::MAX, |(id, _)| id),
            echo: self.echo.map(|(member, timestamp, delay, at)| Echo {
                member,
                timestamp,
                delay: delay.saturating_add(micros(now, at)),
            }),
        }
    }

    /// Whether a packet may leave now (the bucket is not in debt).
    pub(crate) fn ready(&mut self, now: Instant) -> bool {
        let rate = self.rate();
        if !rate.is_finite() {
            return true;
        }
        self.pacer.refill(now, rate, self.s);
        self.pacer.tokens >= 0.0
    }

    /// `len` bytes left: a packet may overdraw the bucket, the debt is paid
    /// before the next.
    pub(crate) fn spend(&mut self, len: usize) {
        self.sent_in_round += len as u64;
        self.sent_since_announce = self.sent_since_announce.saturating_add(1);
        if self.rate().is_finite() {
            self.pacer.tokens -= len as f64;
        }
    }

    /// [`RateControl::ready`], and if so [`RateControl::spend`].
    #[cfg(test)]
    fn try_send(&mut self, now: Instant, len: usize) -> bool {
        let ok = self.ready(now);
        if ok {
            self.spend(len);
        }
        ok
    }

    /// When the next packet may leave, if the pacer holds it back now.
    pub(crate) fn next_send(&self, now: Instant) -> Option<Instant> {
        let rate = self.rate();
        if !rate.is_finite() || self.pacer.tokens >= 0.0 {
            return None;
        }
        // Woken when a batch's worth is due (at most a millisecond's worth):
        // the driver then sends it in one system call, and the receivers
        // take it in one, instead of a packet per wake-up.
        let batch = (PACE_BATCH * self.s).min(Pacer::burst(rate, self.s));
        let wait = Duration::from_secs_f64(((batch - self.pacer.tokens) / rate).min(10.0));
        Some(self.pacer.last.max(now) + wait.max(Duration::from_micros(50)))
    }

    pub(crate) fn is_slow_start(&self) -> bool {
        self.slow_start
    }

    pub(crate) fn clr(&self) -> Option<u32> {
        self.clr.map(|(id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equation_matches_rfc_5348() {
        // s = 1460, R = 100 ms, p = 1%: 1460 / (0.1 sqrt(0.02 / 3) + 0.4 (3 sqrt(0.03 / 8)) 0.01 (1 + 0.0032)).
        let x = tcp_rate(1460.0, Duration::from_millis(100), 0.01);
        assert!((163_900.0..164_100.0).contains(&x), "{x}");
        assert!(tcp_rate(1460.0, Duration::from_millis(100), 0.0).is_infinite());
        // Halving the RTT doubles the rate; more loss, less rate.
        let half = tcp_rate(1460.0, Duration::from_millis(50), 0.01);
        assert!((half / x - 2.0).abs() < 1e-9);
        assert!(tcp_rate(1460.0, Duration::from_millis(100), 0.05) < x / 2.0);
        let p = p_for_rate(1460.0, Duration::from_millis(100), x);
        assert!((p - 0.01).abs() < 1e-4, "{p}");
    }

    #[test]
    fn losses_within_one_rtt_are_one_event() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(10);
        let mut h = LossHistory::default();
        let mut psn = Psn(1);
        // 100 packets, then 3 lost in a row and 2 more lost within the RTT: one event.
        for _ in 0..100 {
            assert!(!h.on_packet(psn, t0, rtt, || 50.0));
            psn = psn.next();
        }
        assert!(h.on_packet(psn.add(3), t0, rtt, || 50.0));
        assert!(!h.on_packet(psn.add(6), t0 + Duration::from_millis(5), rtt, || 50.0));
        assert_eq!(h.intervals.len(), 1);
        assert_eq!(h.intervals[0], 50.0, "the first interval comes from the receive rate");
        // Then a loss every 100 packets, each more than two RTTs later: each
        // a new event, and p tends to 1%.
        let mut t = t0;
        let mut psn = psn.add(6);
        for _ in 0..20 {
            t += Duration::from_millis(30);
            psn = psn.add(100);
            assert!(h.on_packet(psn, t, rtt, || 0.0));
        }
        assert!((h.p() - 0.01).abs() < 0.0005, "{}", h.p());
        // A late packet (reordered) changes nothing.
        assert!(!h.on_packet(Psn(5), t, rtt, || 0.0));
    }

    #[test]
    fn a_queue_is_full_within_a_tenth_of_the_deepest_it_was_lately() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut m = WindowedMax::default();
        assert_eq!(m.get(), None);
        m.push(t0, ms(50));
        m.push(t0 + ms(100), ms(30));
        assert_eq!(m.get(), Some(ms(50)));
        // Remembered for one window at least, forgotten after two.
        m.push(t0 + MAX_RTT_WINDOW + ms(1), ms(20));
        assert_eq!(m.get(), Some(ms(50)));
        m.push(t0 + MAX_RTT_WINDOW * 2 + ms(2), ms(25));
        assert_eq!(m.get(), Some(ms(25)));
        // A silence of two windows forgets everything before it.
        m.push(t0 + MAX_RTT_WINDOW * 4 + ms(3), ms(10));
        assert_eq!(m.get(), Some(ms(10)));
        // 1 ms least, 51 ms deepest: full from 46 ms.
        assert!(queue_full(ms(51), ms(1), ms(51)));
        assert!(queue_full(ms(46), ms(1), ms(51)));
        assert!(!queue_full(ms(45), ms(1), ms(51)));
        assert!(!queue_full(ms(30), ms(1), ms(51)));
    }

    #[test]
    fn losses_into_a_queue_are_one_event_for_half_the_window_in_rtts() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let rtt = ms(10);
        let mut h = LossHistory { queue: true, window: 200.0, ..LossHistory::default() };
        let mut psn = Psn(1);
        let mut lose_one_at = |h: &mut LossHistory, t: Instant| {
            for _ in 0..50 {
                psn = psn.next();
                h.on_packet(psn, t, rtt, || 1000.0);
            }
            // One skipped, then enough to take it for lost (NDUPACK).
            psn = psn.next();
            let mut new = false;
            for _ in 0..3 {
                psn = psn.next();
                new |= h.on_packet(psn, t, rtt, || 1000.0);
            }
            new
        };
        assert!(lose_one_at(&mut h, t0), "the first loss begins an event");
        // A window of 200 packets: 100 RTTs, capped at EVENT_MAX_RTTS. Losses
        // every 3 RTTs up to then are one event, as a TCP has one recovery.
        let max = rtt.mul_f64(EVENT_MAX_RTTS);
        let mut t = t0;
        while t + rtt * 3 <= t0 + max {
            t += rtt * 3;
            assert!(!lose_one_at(&mut h, t), "at {:?}", t - t0);
        }
        // Past that: a new one, however close to the last loss.
        let start = t0 + max + ms(1);
        assert!(lose_one_at(&mut h, start));
        assert_eq!(h.intervals.len(), 2);
        // A window of 12 packets begins the next event: it lasts 6 RTTs.
        h.window = 12.0;
        let start = start + max + ms(1);
        assert!(lose_one_at(&mut h, start));
        assert!(!lose_one_at(&mut h, start + ms(59)));
        assert!(lose_one_at(&mut h, start + ms(61)));
        // The smallest window still has RFC 5348's one RTT.
        h.window = 0.5;
        let start = start + ms(200);
        assert!(lose_one_at(&mut h, start));
        assert!(!lose_one_at(&mut h, start + ms(9)));
        assert!(lose_one_at(&mut h, start + ms(11)));
        assert_eq!(h.intervals.len(), 6);
        // Without a standing queue (random loss on the path), RFC 5348's
        // rule alone, whatever the window: 1.5 RTTs after the start, a new
        // event.
        h.queue = false;
        h.window = 200.0;
        let start = start + ms(200);
        assert!(lose_one_at(&mut h, start));
        assert!(lose_one_at(&mut h, start + ms(15)));
        assert!(!lose_one_at(&mut h, start + ms(24)));
    }

    #[test]
    fn a_packet_overtaken_by_fewer_than_three_is_late_not_lost() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(10);
        let mut h = LossHistory::default();
        for k in 1..=100 {
            h.on_packet(Psn(k), t0, rtt, || 50.0);
        }
        // 101 comes after 102 and 103: reordered, no loss.
        assert!(!h.on_packet(Psn(102), t0, rtt, || 50.0));
        assert!(!h.on_packet(Psn(103), t0, rtt, || 50.0));
        assert!(!h.on_packet(Psn(101), t0, rtt, || 50.0));
        assert!(!h.has_loss());
        // 105 is missing while 106 and 107 arrive; 108, the third after it, makes it lost.
        for k in 104..=107 {
            if k != 105 {
                assert!(!h.on_packet(Psn(k), t0, rtt, || 50.0));
            }
        }
        assert!(!h.has_loss(), "two later packets: not lost yet");
        assert!(h.on_packet(Psn(108), t0, rtt, || 50.0), "the third later packet: lost");
        assert!(h.has_loss());
        // Arriving now changes nothing: it was counted lost.
        assert!(!h.on_packet(Psn(105), t0, rtt, || 50.0));
        assert_eq!(h.intervals.len(), 1);
        // 50 skipped: 48 lost at once (the event goes on), the last 2 pending.
        let open = h.open;
        assert!(!h.on_packet(Psn(159), t0, rtt, || 50.0));
        assert_eq!(h.open - open, 49.0, "48 lost and the one that came");
        assert_eq!(h.missing.len(), 2);
    }

    fn report(member: u32, calc: u64, recv: u64, loss: bool) -> RateReport {
        RateReport { loss, measured: true, round: 0, member, calc, recv, p: 0, rtt_us: 1000, timestamp: 0, delay: 0 }
    }

    #[test]
    fn slow_start_doubles_up_to_twice_the_receive_rate_then_follows_the_clr() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(10);
        let mut rc = RateControl::new(CcMode::Tfmcc, 0, 1000, Some(rtt), t0);
        assert_eq!(rc.rate(), 400_000.0, "4 segments per RTT");
        assert_eq!(RateControl::new(CcMode::Tfmcc, 0, 1000, Some(rtt / 100), t0).rate(), 4_000_000.0, "at most 4 MB/s");
        let round = round_length(rtt);
        // (Slow start reports at the RTT given, so that the largest RTT
        // stays 10 ms and with it the floor, 100 kB/s.)
        let at_rtt = |r: RateReport| RateReport { rtt_us: 10_000, ..r };
        rc.on_report(t0, at_rtt(report(7, u64::MAX, 300_000, false)));
        rc.spend(1000);
        rc.tick(t0 + round);
        assert_eq!(rc.rate(), 600_000.0, "twice the lowest receive rate");
        rc.on_report(t0 + round, at_rtt(report(8, u64::MAX, 100_000_000, false)));
        rc.spend(1000);
        rc.tick(t0 + round * 2);
        assert_eq!(rc.rate(), 1_200_000.0, "doubling");
        assert!(rc.is_slow_start());
        // A loss ends slow start; the reporter becomes the CLR.
        let t = t0 + round * 2;
        rc.on_report(t, report(9, 500_000, 10_000_000, true));
        assert!(!rc.is_slow_start());
        assert_eq!((rc.rate(), rc.clr()), (500_000.0, Some(9)));
        // A higher rate from somebody else changes nothing; a lower one takes over.
        rc.on_report(t, report(10, 800_000, 10_000_000, true));
        assert_eq!((rc.rate(), rc.clr()), (500_000.0, Some(9)));
        rc.on_report(t, report(11, 200_000, 10_000_000, true));
        assert_eq!((rc.rate(), rc.clr()), (200_000.0, Some(11)));
        // The CLR asking more: at most one segment per RTT per RTT (its RTT 1 ms: 1000 B per ms per ms).
        rc.on_report(t + Duration::from_millis(1), report(11, 9_000_000, 10_000_000, true));
        assert_eq!(rc.rate(), 1_200_000.0);
        // Never more than twice what the CLR received lately.
        rc.on_report(t + Duration::from_secs(1), report(11, 90_000_000, 3_000_000, true));
        assert_eq!(rc.rate(), 20_000_000.0, "twice the best receive rate of the last 100 ms (or last three)");
        for k in 2..4 {
            rc.on_report(t + Duration::from_secs(k), report(11, 90_000_000, 3_000_000, true));
        }
        assert_eq!(rc.rate(), 6_000_000.0);
        // A standing queue (RTT doubled and 2 ms more): 1.25 times what arrives.
        let queued = RateReport { rtt_us: 4000, ..report(11, 90_000_000, 3_000_000, true) };
        rc.on_report(t + Duration::from_secs(5), queued);
        assert_eq!(rc.rate(), 3_750_000.0);
        // ECTP_MAX_RATE caps it.
        rc.set_max_rate(1_000_000);
        assert_eq!(rc.rate(), 1_000_000.0);
    }

    #[test]
    fn the_rate_keeps_its_window_when_a_queue_before_the_clr_drains() {
        let t0 = Instant::now();
        let (ms, us) = (Duration::from_millis, Duration::from_micros);
        let at = |r: RateReport, rtt: Duration| RateReport { rtt_us: rtt.as_micros() as u32, ..r };
        // In slow start the path shows 1 ms; it ends at a loss with 40 ms
        // (a standing queue), at 1 MB/s.
        let start = || {
            let mut rc = RateControl::new(CcMode::Tfmcc, 0, 1000, Some(ms(1)), t0);
            rc.rate = 2_000_000.0;
            rc.on_report(t0, at(report(7, u64::MAX, 1_000_000, false), ms(1)));
            rc.on_report(t0, at(report(7, 1_000_000, 1_000_000, true), ms(40)));
            assert_eq!((rc.rate(), rc.clr(), rc.is_slow_start()), (1_000_000.0, Some(7), false));
            rc
        };
        let mut rc = start();
        // The queue drains to 10 ms: the same window (40 kB) at 10 ms is
        // 4 MB/s, and the 10 ms since add one segment per RTT per RTT.
        let t = t0 + ms(10);
        rc.on_report(t, at(report(7, 9_000_000, 4_000_000, true), ms(10)));
        assert_eq!(rc.rate(), 4_000_000.0 + 1000.0 * 0.01 / (0.01 * 0.01));
        // Still at most twice the receive rate, and what the CLR asks.
        rc.on_report(t + ms(10), at(report(7, 9_000_000, 4_000_000, true), ms(2)));
        assert_eq!(rc.rate(), 8_000_000.0);
        rc.on_report(t + ms(20), at(report(7, 5_000_000, 4_000_000, true), ms(2)));
        assert_eq!(rc.rate(), 5_000_000.0);
        // From a round trip that showed no queue (2 ms, the least 1 ms),
        // one segment per RTT per RTT only: on an open path the round trip
        // varies from one report to the next.
        rc.on_report(t + ms(20) + us(100), at(report(7, 9_000_000, 4_000_000, true), ms(1)));
        assert!((rc.rate() - 5_100_000.0).abs() < 1e-3, "{}", rc.rate());
        // Nor for a new CLR (the old one fell silent): the window was the old CLR's.
        let mut rc = start();
        rc.clr = None;
        rc.on_report(t, at(report(8, 9_000_000, 4_000_000, true), ms(10)));
        assert_eq!((rc.rate(), rc.clr()), (1_000_000.0 + 1000.0 * 0.01 / (0.01 * 0.01), Some(8)));
        // Nor from a round trip that was only a hint (the CLR's report
        // before its first echo): 40 ms hinted, then 10 ms measured.
        let mut rc = start();
        let hinted = RateReport { measured: false, ..at(report(7, 9_000_000, 4_000_000, true), ms(40)) };
        rc.on_report(t0 + ms(1), hinted);
        assert_eq!(rc.rate_rtt, None);
        rc.on_report(t, at(report(7, 9_000_000, 4_000_000, true), ms(10)));
        let added = 1000.0 * 0.001 / (0.04 * 0.04) + 1000.0 * 0.009 / (0.01 * 0.01);
        assert!((rc.rate() - (1_000_000.0 + added)).abs() < 1e-3, "{}", rc.rate());
    }

    #[test]
    fn the_largest_rtt_decays_to_what_the_rounds_measure() {
        let t0 = Instant::now();
        let mut rc = RateControl::new(CcMode::Tfmcc, 0, 1000, Some(Duration::from_millis(1)), t0);
        // One slow sample (250 ms), then reports at 1 ms: quartered each round.
        rc.on_report(t0, RateReport { rtt_us: 250_000, ..report(7, u64::MAX, 300_000, false) });
        assert_eq!(rc.max_rtt, Duration::from_millis(250));
        let mut t = t0;
        let mut rounds = 0;
        while rc.max_rtt > Duration::from_millis(1) {
            t += round_length(rc.max_rtt);
            rc.on_report(t, report(7, u64::MAX, 300_000, false));
            rc.spend(1000);
            rc.tick(t);
            rounds += 1;
            assert!(rounds < 20, "{:?}", rc.max_rtt);
        }
        assert_eq!(rc.max_rtt, Duration::from_millis(1));
        // Its own round and the next at 1.5 s each, then 0.4 s and less.
        assert!(t - t0 < Duration::from_secs(4), "{:?}", t - t0);
        // A round without a measure keeps it.
        rc.on_report(t, RateReport { rtt_us: 8000, ..report(7, u64::MAX, 300_000, false) });
        for _ in 0..2 {
            t += round_length(rc.max_rtt);
            rc.spend(1000);
            rc.tick(t);
        }
        assert_eq!(rc.max_rtt, Duration::from_millis(8));
    }

    #[test]
    fn slow_start_ends_when_the_receive_rate_stops_growing_or_a_queue_builds() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(10);
        let round = round_length(rtt);
        let mut rc = RateControl::new(CcMode::Tfmcc, 0, 1000, Some(rtt), t0);
        // At the RTT given: the largest RTT, and the floor, stay.
        let at_rtt = |r: RateReport| RateReport { rtt_us: 10_000, ..r };
        rc.on_report(t0, at_rtt(report(7, u64::MAX, 300_000, false)));
        rc.spend(1000);
        rc.tick(t0 + round);
        assert_eq!(rc.rate(), 600_000.0);
        for recv in [310_000, 310_000, 305_000, 320_000] {
            assert!(rc.is_slow_start(), "a repeated measure counts for nothing");
            rc.on_report(t0 + round, at_rtt(report(7, u64::MAX, recv, false)));
        }
        assert!(!rc.is_slow_start(), "three new measures without growth");
        assert_eq!((rc.rate(), rc.clr()), (320_000.0, Some(7)));
        // A round trip doubled (and 2 ms more) ends it too.
        let mut rc = RateControl::new(CcMode::Tfmcc, 0, 1000, Some(rtt), t0);
        rc.on_report(t0, report(7, u64::MAX, 300_000, false));
        let queued = RateReport { rtt_us: 3100, ..report(7, u64::MAX, 350_000, false) };
        rc.on_report(t0, queued);
        assert!(!rc.is_slow_start());
        assert_eq!(rc.rate(), 350_000.0);
    }

    #[test]
    fn pacer_spreads_packets_at_the_rate() {
        let t0 = Instant::now();
        let mut rc = RateControl::new(CcMode::None, 1_000_000, 1000, None, t0);
        // 1 MB/s: the burst is 4 segments, then one packet per millisecond.
        let mut sent = 0;
        let mut t = t0;
        while t < t0 + Duration::from_millis(100) {
            if rc.try_send(t, 1000) {
                sent += 1;
            } else {
                let next = rc.next_send(t).unwrap();
                assert!(next > t);
            }
            t += Duration::from_micros(100);
        }
        assert!((100..=106).contains(&sent), "{sent}");
        let mut free = RateControl::new(CcMode::None, 0, 1000, None, t0);
        assert!((0..10_000).all(|_| free.try_send(t0, 1000)), "no cap: never held");
    }

    #[test]
    fn receivers_report_by_rate_and_keep_quiet_above_the_lowest() {
        let t0 = Instant::now();
        let mut slow = CcReceiver::new(1000, Some(Duration::from_millis(1)), t0);
        let mut fast = CcReceiver::new(1000, Some(Duration::from_millis(1)), t0);
        // The slow one loses one packet in 20, the fast one in 1000.
        let mut t = t0;
        for i in 1..=20_000u32 {
            t += Duration::from_micros(100);
            if i % 20 != 0 {
                slow.on_data(t, Psn(i), 1000, true);
            }
            if i % 1000 != 0 {
                fast.on_data(t, Psn(i), 1000, true);
            }
        }
        assert!(slow.calc_rate() < fast.calc_rate() / 4.0);
        let info = RateInfo {
            slow_start: false,
            round: 1,
            max_rtt_us: 1000,
            rate: 100_000_000,
            suppress: 0,
            clr: u32::MAX,
            echo: None,
        };
        slow.on_rate(t, info, 1, 0.5);
        fast.on_rate(t, info, 2, 0.5);
        let (ts, tf) = (slow.deadline(1).unwrap(), fast.deadline(2).unwrap());
        assert!(ts < tf, "the lower rate reports first");
        let r = slow.poll_report(ts, 1).expect("slow reports");
        assert!(r.loss && r.member == 1 && (r.calc as f64 - slow.calc_rate()).abs() < 16.0);
        // The sender echoes the slow rate as the round's lowest: the fast one keeps quiet.
        fast.on_rate(ts, RateInfo { suppress: r.calc, ..info }, 2, 0.5);
        assert_eq!(fast.poll_report(tf, 2), None);
        // The echo measures the slow receiver's round trip.
        let echo = Echo { member: 1, timestamp: r.timestamp, delay: 300 };
        slow.on_rate(ts + Duration::from_micros(800), RateInfo { echo: Some(echo), ..info }, 1, 0.5);
        assert_eq!(slow.rtt(), Duration::from_micros(500));
    }

    #[test]
    fn a_repair_agent_passes_up_every_report_it_took_in_one_round() {
        let t0 = Instant::now();
        let mut ra = CcReceiver::new(1000, Some(Duration::from_millis(1)), t0);
        let info = RateInfo {
            slow_start: false,
            round: 3,
            max_rtt_us: 1000,
            rate: 100_000_000,
            suppress: 0,
            clr: 7,
            echo: None,
        };
        ra.on_rate(t0, info, 1, 0.5);
        // A child's lower report, then the CLR's, before the driver's next round.
        let lower = RateReport { delay: 40, ..report(9, 20_000_000, 30_000_000, true) };
        ra.on_child_report(t0, lower);
        ra.on_child_report(t0 + Duration::from_micros(10), report(7, 50_000_000, 60_000_000, true));
        // A report neither the CLR's nor lower than what went up: it stops here.
        ra.on_child_report(t0 + Duration::from_micros(20), report(11, 40_000_000, 60_000_000, true));
        let at = t0 + Duration::from_micros(100);
        let first = ra.poll_report(at, 1).expect("the lower report");
        assert_eq!((first.member, first.delay), (9, 140), "held 100 us at the agent");
        assert_eq!(ra.poll_report(at, 1).map(|r| (r.member, r.delay)), Some((7, 90)));
        assert_eq!(ra.poll_report(at, 1), None, "nothing else is due");
    }
}
