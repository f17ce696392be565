//! The constants and structures of `ectp.h` (see docs/c-constants.md).
#![allow(non_camel_case_types)]

use libc::{c_char, c_int, c_void, sockaddr, sockaddr_storage, socklen_t};

/// Option level of the ECTP options of `msetsockopt`/`mgetsockopt`.
pub const SOL_ECTP: c_int = 0x4543;

/// Tree configuration: ECTP_TCO_FLAT or ECTP_TCO_TREE (int). Default flat.
pub const ECTP_TCO: c_int = 1;
/// Reliability: ECTP_RO_UNRELIABLE, ECTP_RO_SEMIRELIABLE, ECTP_RO_RELIABLE (int). Default reliable.
pub const ECTP_RO: c_int = 2;
/// ACK generation number, 1..255 (int). Default 8.
pub const ECTP_AGN: c_int = 3;
/// Bytes of user data per DATA packet, 64..65000 (int). Default 1400, which fits a 1500-byte MTU.
pub const ECTP_MSS: c_int = 4;
/// Failure detection number, 1..255 (int). Default 3.
pub const ECTP_FDN: c_int = 5;
/// Heartbeat generation time in milliseconds, 10..3600000 (int). Default 3000.
pub const ECTP_HGT: c_int = 6;
/// Connection creation time in milliseconds, 0..3600000 (int); 0: every join is late. Default 0.
pub const ECTP_CCT: c_int = 7;
/// The TO's join callback (ectp_join_callback); set before mcreate.
pub const ECTP_JOIN_CALLBACK: c_int = 8;
/// The TO's token callback (ectp_token_callback); set before mcreate.
pub const ECTP_TOKEN_CALLBACK: c_int = 9;
/// Read only, TO: the number of active TUs (int).
pub const ECTP_MEMBERS: c_int = 10;
/// Read only, TU: its member id (int).
pub const ECTP_USER_ID: c_int = 11;
/// Read only, TU: the token it holds, or 0 (int).
pub const ECTP_TOKEN_ID: c_int = 12;
/// Request retransmission timeout in milliseconds, 10..60000 (int): how long a
/// join or token request waits for its answer before it is sent again. Default 250.
pub const ECTP_RXT: c_int = 13;
/// How many times a join or token request is sent before the call fails with
/// ETIMEDOUT, 1..100 (int). Default 8.
pub const ECTP_RETRIES: c_int = 14;
/// Most tokens the TO hands out at once, 1..255 (int). Default 255.
pub const ECTP_MAX_TOKENS: c_int = 15;
/// Testing aid (like NORM's NormSetRxLoss): percentage of received datagrams
/// dropped on purpose, 0..100 (int). Default 0. May be set at any time.
pub const ECTP_RX_LOSS: c_int = 16;
/// Testing aid (like NORM's NormSetTxLoss): percentage of datagrams to send
/// dropped on purpose, 0..100 (int). Default 0. May be set at any time.
pub const ECTP_TX_LOSS: c_int = 17;
/// Testing aid: percentage of datagrams sent with one bit flipped, 0..100
/// (int), so that receivers' checksums must catch them. Default 0. Any time.
pub const ECTP_TX_CORRUPT: c_int = 18;
/// Flow-control window in DATA packets, 16..65536 (int): how many packets a
/// sender (the TO, or an SU) keeps unacknowledged or queued at most; msendm
/// and msendmsg block when it is full. In the semi-reliable mode it bounds
/// the TO's repair buffer instead. Default 1024. Set before mcreate/mjoin.
pub const ECTP_WINDOW: c_int = 19;

/// TU, before mjoin: 1 offers to be a repair agent (a parent of later
/// joiners) when the connection is ECTP_TCO_TREE; 0 a leaf (int). Default 0.
/// Ignored in a flat tree.
pub const ECTP_RA: c_int = 20;
/// TO before mcreate, TU before mjoin: most children this node takes as a
/// parent, 1..4096 (int). Default: 4096 for the TO (which, in a tree, takes
/// repair agents first and leaves only when no agent has room), 32 for a
/// repair agent.
pub const ECTP_MAX_CHILDREN: c_int = 21;
/// Read only, TU: the member id of its current parent, 0 = the TO (uint32).
pub const ECTP_PARENT: c_int = 22;
/// Read only, TU: its tree level, 1 = a child of the TO (int).
pub const ECTP_TREE_LEVEL: c_int = 23;
/// The TO's leave callback (ectp_leave_callback); set before mcreate.
pub const ECTP_LEAVE_CALLBACK: c_int = 24;
/// Write only, before mcreate/mjoin: a group key of 16 or 32 bytes (else
/// EINVAL), the same on the TO and its TUs. Every packet is then
/// authenticated and DATA/RDATA payloads are encrypted (AES-256-GCM); a
/// packet that fails is dropped and counted (ectp_stats dropped_auth,
/// dropped_replay). A TU without the key, or with another one, cannot join
/// (ETIMEDOUT). Reading it gives ENOPROTOOPT.
pub const ECTP_GROUP_KEY: c_int = 25;
/// TO, before mcreate: congestion control (int), ECTP_CC_TFMCC (default) or
/// ECTP_CC_NONE; TUs follow the connection's choice.
pub const ECTP_CC: c_int = 26;
/// TO or TU, at any time: the most bytes per second this endpoint sends its
/// data at (int64; TO: forward, TU: backward as an SU); 0 = no cap (default).
pub const ECTP_MAX_RATE: c_int = 27;
/// Read only, once created or joined: the current sending rate in bytes per
/// second (int64; TO: forward, TU: backward); 0 when nothing limits it.
pub const ECTP_RATE: c_int = 28;
/// TO, before mcreate: milliseconds (int, 0..3600000) a member may
/// acknowledge nothing new while data waits for it (its application stopped
/// reading, or it is stuck) before it is ejected, so that it does not stall
/// everyone; 0 (default) means FDN x HGT. Checked once per HGT.
pub const ECTP_SLOW_TIMEOUT: c_int = 29;

/// ECTP_CC: as fast as the window allows, capped by ECTP_MAX_RATE.
pub const ECTP_CC_NONE: c_int = 0;
/// ECTP_CC: TCP-friendly multicast congestion control (RFC 4654).
pub const ECTP_CC_TFMCC: c_int = 1;

/// ectp_leave_callback reason: the TU left (mleave).
pub const ECTP_LEAVE_LEFT: c_int = 1;
/// ectp_leave_callback reason: the TO ejected it (mleave on the TO).
pub const ECTP_LEAVE_EJECTED: c_int = 2;
/// ectp_leave_callback reason: silent for FDN x HGT, its subtree was lost
/// (it did not rebind in time after its parent failed), or too slow: it
/// acknowledged nothing for ECTP_SLOW_TIMEOUT while data waited for it.
pub const ECTP_LEAVE_FAILED: c_int = 3;

/// ECTP_TCO: every TU's parent is the TO.
pub const ECTP_TCO_FLAT: c_int = 0;
/// ECTP_TCO: TUs that offer to be repair agents become parents of later joiners.
pub const ECTP_TCO_TREE: c_int = 1;
/// ECTP_RO: no repair; losses are flagged with ECTP_MSG_GAP.
pub const ECTP_RO_UNRELIABLE: c_int = 0;
/// ECTP_RO: what the parent still buffers is repaired.
pub const ECTP_RO_SEMIRELIABLE: c_int = 1;
/// ECTP_RO: every loss is repaired.
pub const ECTP_RO_RELIABLE: c_int = 2;

/// ectp_rcvinfo.flags: the message was longer than the buffer; the rest was discarded.
pub const ECTP_MSG_TRUNC: u32 = 1;
/// ectp_rcvinfo.flags: data was lost before this message (unreliable or semi-reliable modes only).
pub const ECTP_MSG_GAP: u32 = 2;

/// What `mrecvmsg` reports about the message it returned.
#[repr(C)]
pub struct ectp_rcvinfo {
    /// TO side: the sending TU's member id; TU side: 0.
    pub user_id: u32,
    /// 0 for the TO's multicast data, else the SU's token id.
    pub token_id: u8,
    /// ECTP_MSG_TRUNC, ECTP_MSG_GAP.
    pub flags: u32,
    /// The sender's unicast address.
    pub from: sockaddr_storage,
    /// Length of `from`.
    pub fromlen: socklen_t,
}

/// Counters of an endpoint, filled by `ectp_get_stats`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ectp_stats {
    /// Datagrams sent.
    pub packets_sent: u64,
    /// Datagrams received.
    pub packets_received: u64,
    /// DATA packets sent for the first time.
    pub data_sent: u64,
    /// New DATA/RDATA packets received.
    pub data_received: u64,
    /// RDATA packets sent.
    pub rdata_sent: u64,
    /// DATA/RDATA received again.
    pub duplicates: u64,
    /// Dropped as malformed (truncated, bad version or type, bad length, bad checksum, bad element).
    pub dropped_malformed: u64,
    /// Of those, dropped for a bad checksum.
    pub dropped_checksum: u64,
    /// Dropped: of another connection.
    pub dropped_foreign: u64,
    /// Dropped: not expected from that sender in this state.
    pub dropped_unexpected: u64,
    /// Messages delivered to the application.
    pub messages_delivered: u64,
    /// Messages delivered with ECTP_MSG_GAP.
    pub gaps: u64,
    /// Control requests sent again after RXT.
    pub retransmissions: u64,
    /// Datagrams dropped on purpose (ECTP_RX_LOSS, ECTP_TX_LOSS).
    pub dropped_injected: u64,
    /// Dropped: from an address that may not send it (not the TO's or the
    /// parent's exact IP and port, not a member, not a child).
    pub dropped_source: u64,
    /// Dropped: user data longer than the MSS, user data on a control
    /// packet, or a join request shorter than its answer would be.
    pub dropped_length: u64,
    /// Dropped: a sequence number, or the jump it would cause, beyond the
    /// connection's window.
    pub dropped_range: u64,
    /// Dropped (ECTP_GROUP_KEY): no authentication, or a tag that does not verify.
    pub dropped_auth: u64,
    /// Dropped (ECTP_GROUP_KEY): a replay of a packet received already.
    pub dropped_replay: u64,
    /// User-data bytes sent for the first time (TO: forward; SU: backward).
    pub bytes_sent: u64,
    /// User-data bytes received new (TU: the TO's; TO: the SUs').
    pub bytes_received: u64,
    /// The current sending rate, bytes per second (as ECTP_RATE); 0 = not limited.
    pub rate: u64,
    /// Repair requests sent: a TU's ACKs that report a hole, the TO's HBACKs
    /// that report one in an SU's data.
    pub repairs_requested: u64,
    /// Repairs sent (RDATA), the same as rdata_sent.
    pub repairs_sent: u64,
    /// Smoothed round trip in microseconds: a TU's to its parent; the TO's,
    /// the largest among its children; 0 = not measured yet.
    pub rtt_us: u64,
    /// TO: members that joined, wherever in the tree.
    pub members_joined: u64,
    /// TO: members that left (mleave on the TU).
    pub members_left: u64,
    /// TO: members ejected (mleave on the TO).
    pub members_ejected: u64,
    /// TO: members that failed: silent for FDN x HGT, lost with their
    /// subtree, or ejected as too slow (ECTP_SLOW_TIMEOUT).
    pub members_failed: u64,
    /// TU: in-order DATA/RDATA not taken because the application's queue
    /// was full (it does not read); asked for again once it reads.
    pub dropped_full: u64,
}

/// A member of the connection as the TO knows it, filled by `ectp_get_member`.
#[repr(C)]
pub struct ectp_member {
    /// Its member id.
    pub user_id: u32,
    /// Its parent's member id; 0 = the TO.
    pub parent_id: u32,
    /// Active TUs below it (ADN less itself).
    pub descendants: u32,
    /// Last RTT measured to its parent, in microseconds; 0 = not yet.
    pub rtt_us: u32,
    /// The Child ID its parent gave it.
    pub child_id: u16,
    /// Its tree level: 1 = a child of the TO.
    pub tree_level: u8,
    /// The token it holds, 0 = none.
    pub token_id: u8,
    /// 1 = a repair agent.
    pub is_ra: u8,
    /// Its unicast address.
    pub addr: sockaddr_storage,
    /// Length of `addr`.
    pub addrlen: socklen_t,
}

/// Called by the TO's library thread, with no library lock held, once for
/// every member that stops being one, wherever it was in the tree; `reason`
/// is ECTP_LEAVE_LEFT, ECTP_LEAVE_EJECTED or ECTP_LEAVE_FAILED.
pub type ectp_leave_callback = Option<unsafe extern "C" fn(sd: c_int, user_id: u32, reason: c_int)>;

/// Called by the TO's library thread, with no library lock held, for each
/// join request; answer with `mjoin_confirm` (now or later, from any thread).
pub type ectp_join_callback =
    Option<unsafe extern "C" fn(sd: c_int, user_id: u32, addr: *const sockaddr, addrlen: socklen_t)>;
/// Called by the TO's library thread, with no library lock held, for each
/// token request; answer with `mtoken_confirm` (now or later, from any thread).
pub type ectp_token_callback =
    Option<unsafe extern "C" fn(sd: c_int, user_id: u32, addr: *const sockaddr, addrlen: socklen_t)>;

/// Read only, both sides: 1 while the TO has paused the connection
/// (`ectp_pause`), else 0 (int). A TU learns it from the TO's NDATA.
pub const ECTP_PAUSED: c_int = 30;

/// ectp_set_log level: no log lines at all.
pub const ECTP_LOG_OFF: c_int = 0;
/// ectp_set_log level: errors only (a panic caught at the boundary, a poll
/// that failed).
pub const ECTP_LOG_ERROR: c_int = 1;
/// ectp_set_log level: and warnings (a descriptor closed behind the
/// library's back, joins dropped under a flood).
pub const ECTP_LOG_WARN: c_int = 2;
/// ectp_set_log level: and the life of the connection (created, members
/// joined, left, ejected, why a TU was reset, tokens, pause, resume).
pub const ECTP_LOG_INFO: c_int = 3;
/// ectp_set_log level: and details (send errors, packets not sent).
pub const ECTP_LOG_DEBUG: c_int = 4;
/// ectp_set_log level: everything.
pub const ECTP_LOG_TRACE: c_int = 5;

/// Called for each log line at or below the level of `ectp_set_log`, from
/// whichever thread logs it (often the library's own), possibly with a
/// library lock held: it must return quickly and must not call ECTP
/// functions. `message` is valid only during the call.
pub type ectp_log_callback = Option<unsafe extern "C" fn(level: c_int, message: *const c_char, arg: *mut c_void)>;
