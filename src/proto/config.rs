//! Connection and endpoint parameters (draft clause "Timers and parameters").
//!
//! The connection parameters (TCO, RO, AGN, MSS, FDN, HGT) are chosen by the TO
//! and announced in the Connection element of CCR and LJC; a TU adopts them.
//! The local parameters (RXT, retries, window...) are each endpoint's own.

use std::time::Duration;

use super::{CcMode, Security};
use crate::wire::{ConnectionParams, Ro, Tco};

/// Largest message `Owner::send`/`User::send` accept, and a receiver reassembles.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Default bytes of user data per DATA packet: fits a 1500-byte MTU over IPv6
/// (40 IP + 8 UDP + 16 ECTP + 1400 = 1464) with room to spare.
pub const DEFAULT_MSS: u16 = 1400;
/// Largest flow-control window (packets). Receivers size their window to it,
/// whatever window the sender chose.
pub const MAX_WINDOW: u32 = 65536;
/// Smallest and largest MSS accepted.
pub const MSS_RANGE: (u16, u16) = (64, 65000);
/// Largest ECTP_MAX_CHILDREN.
pub const MAX_CHILDREN: u16 = 4096;
/// Default most children of a repair agent.
pub const DEFAULT_RA_CHILDREN: u16 = 32;
/// Default most children of the TO: as many as ECTP_MAX_CHILDREN allows, so
/// that a flat tree takes everybody; in a tree the TO takes repair agents
/// first and leaves only when no agent has room (`docs/tree.md`).
pub const DEFAULT_TO_CHILDREN: u16 = MAX_CHILDREN;

/// Every parameter of an endpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// Tree configuration option.
    pub tco: Tco,
    /// Reliability option.
    pub ro: Ro,
    /// ACK generation number.
    pub agn: u8,
    /// Maximum segment size: user bytes per DATA packet.
    pub mss: u16,
    /// Failure detection number.
    pub fdn: u8,
    /// Heartbeat generation time.
    pub hgt: Duration,
    /// Connection creation time (TO); zero means every join is late.
    pub cct: Duration,
    /// Request retransmission timeout (RXT/RTO) for LJR, TJR, TGR, TRR, CTR...
    pub rxt: Duration,
    /// How many times a request is sent before it is given up.
    pub retries: u32,
    /// Most tokens the TO hands out at once (1..=255).
    pub max_tokens: u8,
    /// Flow-control window: DATA packets queued or unacknowledged at most.
    pub window: u32,
    /// The connection's window as the TO announced it: no DATA of the TO is
    /// more than this many PSNs ahead of what a receiver lacks, nor an SU's
    /// ahead of what the TO lacks; a receiver holds at most that many ahead,
    /// and takes a jump beyond it for a lie.
    pub rx_window: u32,
    /// TO: report join requests as events and wait for a confirm (else accept all).
    pub ask_joins: bool,
    /// TO: report token requests as events and wait for a confirm (else accept all).
    pub ask_tokens: bool,
    /// TU: offer to be a repair agent when the connection is a tree (ECTP_RA).
    pub ra: bool,
    /// Most children this node takes as a parent (ECTP_MAX_CHILDREN); None:
    /// the default of its role ([`DEFAULT_TO_CHILDREN`], [`DEFAULT_RA_CHILDREN`]).
    pub max_children: Option<u16>,
    /// ECTP_GROUP_KEY: every packet authenticated, user data encrypted.
    pub security: Option<Security>,
    /// ECTP_CC: congestion control of the connection (TO; a TU follows the TO's).
    pub cc: CcMode,
    /// ECTP_MAX_RATE: bytes per second this node sends its data at most (0: no cap).
    pub max_rate: u64,
    /// ECTP_SLOW_TIMEOUT (TO): a member that acknowledges nothing new while
    /// data waits for it this long is ejected (None: FDN x HGT).
    pub slow_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            tco: Tco::Flat,
            ro: Ro::Reliable,
            agn: 8,
            mss: DEFAULT_MSS,
            fdn: 3,
            hgt: Duration::from_millis(3000),
            cct: Duration::ZERO,
            rxt: Duration::from_millis(250),
            retries: 8,
            max_tokens: 255,
            window: 1024,
            rx_window: 1024,
            ask_joins: false,
            ask_tokens: false,
            ra: false,
            max_children: None,
            security: None,
            cc: CcMode::Tfmcc,
            max_rate: 0,
            slow_timeout: None,
        }
    }
}

impl Config {
    /// Most children of the TO.
    pub fn owner_children(&self) -> u16 {
        self.max_children.unwrap_or(DEFAULT_TO_CHILDREN)
    }

    /// Most children of a repair agent, or 0 when this TU does not offer to be one.
    pub fn ra_children(&self) -> u16 {
        if self.ra { self.max_children.unwrap_or(DEFAULT_RA_CHILDREN) } else { 0 }
    }

    /// How long a member may stay silent before it is taken for dead: FDN x HGT.
    pub fn failure_time(&self) -> Duration {
        self.hgt * u32::from(self.fdn.max(1))
    }

    /// How long a parent waits for the answer to an HB naming a child whose
    /// round trip it has not measured before it asks again: RXT/8.
    pub fn probe_interval(&self) -> Duration {
        self.rxt / 8
    }

    /// Shortest join request (LJR, TJR) the TO answers, as sent.
    pub fn min_request(&self) -> usize {
        if self.security.is_some() { super::MIN_KEYED_REQUEST } else { super::MIN_REQUEST }
    }

    /// The connection parameters as the Connection element carries them.
    pub fn connection_params(&self) -> ConnectionParams {
        ConnectionParams {
            tco: self.tco,
            ro: self.ro,
            agn: self.agn,
            fdn: self.fdn,
            mss: self.mss,
            hgt_ms: u32::try_from(self.hgt.as_millis()).unwrap_or(u32::MAX),
            window: self.window,
            cc: self.cc == CcMode::Tfmcc,
        }
    }

    /// Adopt the TO's connection parameters (TU, on CCR or LJC). Values a
    /// hostile TO could use to make us misbehave are clamped to sane ranges.
    pub fn adopt(&mut self, p: &ConnectionParams) {
        self.tco = p.tco;
        self.ro = p.ro;
        self.agn = p.agn.max(1);
        self.fdn = p.fdn.max(1);
        self.mss = p.mss.clamp(MSS_RANGE.0, MSS_RANGE.1);
        self.hgt = Duration::from_millis(u64::from(p.hgt_ms.max(10)));
        self.rx_window = p.window.clamp(16, MAX_WINDOW);
        self.cc = if p.cc { CcMode::Tfmcc } else { CcMode::None };
        // Our own sending (as an SU) must fit what the TO receives.
        self.window = self.window.min(self.rx_window);
    }

    /// How long a member may make no progress while data waits for it
    /// before it is ejected (ECTP_SLOW_TIMEOUT; FDN x HGT by default).
    pub fn slow_time(&self) -> Duration {
        self.slow_timeout.unwrap_or_else(|| self.failure_time())
    }

    /// The most bytes of whole messages a TU keeps for its application
    /// before it stops taking data: the window's worth (at least 1 MiB).
    pub fn app_queue_bytes(&self) -> usize {
        (self.rx_window as usize).saturating_mul(usize::from(self.mss)).max(1 << 20)
    }

    /// How far ahead of its LSN a receiver holds data: the connection's
    /// window in the reliable mode (nothing can be further ahead); more in
    /// the other modes, where the sender does not wait for the slowest.
    pub fn rx_capacity(&self) -> usize {
        let w = self.rx_window.max(16);
        let w = if self.ro == Ro::Reliable { w } else { w.saturating_mul(4).min(MAX_WINDOW) };
        w as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopt_round_trips_and_clamps() {
        let sent = Config { ro: Ro::SemiReliable, mss: 900, hgt: Duration::from_millis(500), ..Config::default() };
        let mut got = Config::default();
        got.adopt(&sent.connection_params());
        assert_eq!(got.ro, Ro::SemiReliable);
        assert_eq!(got.mss, 900);
        assert_eq!(got.hgt, Duration::from_millis(500));

        let mut hostile = sent.connection_params();
        hostile.mss = 1;
        hostile.agn = 0;
        hostile.hgt_ms = 0;
        got.adopt(&hostile);
        assert_eq!(got.mss, MSS_RANGE.0);
        assert_eq!(got.agn, 1);
        assert_eq!(got.hgt, Duration::from_millis(10));
    }
}
