//! One ECTP endpoint: its sockets, its protocol core behind a lock, and the
//! driver thread that runs the core.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use socket2::Domain;

use super::Error;
use super::socket::{self, RawOption};
use super::sys::{self, EventFd};
use crate::proto::{
    Config, Dest, End, Event, JoinStatus, MAX_DATAGRAM, MemberInfo, Node, Owner, OwnerError, Rng, Stats, TokenOp,
    Transmit, User, UserError,
};

/// Most datagrams read from one socket, or written, in one round of the
/// driver before it looks at the rest again.
const BATCH: usize = 64;
/// How long a check that the application's descriptor is still ours holds:
/// a descriptor closed behind the library's back is detected at the first
/// call after that (a system call per call would cost the data path dearly).
const FD_CHECK: Duration = Duration::from_millis(10);

/// Nanoseconds since the first call (a monotonic clock for [`Endpoint::owns_fd`]).
fn clock() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Datagrams per recvmmsg.
const RX_BATCH: usize = 16;
/// How long `leave` waits for its ULR to go out.
const LEAVE_FLUSH: Duration = Duration::from_secs(1);

/// Called on the driver thread, with no lock held, for each TO event.
pub type EventHandler = Box<dyn FnMut(Event) + Send>;

/// One message handed to the application by [`Endpoint::recv`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Bytes copied into the caller's buffer.
    pub len: usize,
    /// The message was longer than the buffer; the rest was discarded.
    pub truncated: bool,
    /// Data was lost before this message.
    pub gap: bool,
    /// TO side: the sending member; TU side: 0.
    pub user_id: u32,
    /// 0 for the TO's data, else the SU's token.
    pub token_id: u8,
    /// The sender's unicast address.
    pub from: Option<SocketAddr>,
    /// The connection ended normally: no message, `len` is 0.
    pub end: bool,
}

#[derive(Debug)]
struct State {
    /// The TO or TU, once `create` or `join` made it one.
    node: Option<Node>,
    /// The driver thread panicked: every call fails (the core may be inconsistent).
    failed: bool,
    /// Testing aid: make the driver thread panic in its next round.
    inject_panic: bool,
    cfg: Config,
    opts: Vec<RawOption>,
    group: Option<SocketAddr>,
    shutdown: bool,
    ready_set: bool,
    /// The wake-up eventfd is set and the driver has not taken it yet: an
    /// application call need not set it again (one system call saved per
    /// msendm while the driver is busy).
    wake_pending: bool,
    loss: Loss,
    /// The latest time handed to the core: a datagram read later, though
    /// stamped earlier by the kernel, is handled as of this time, not before
    /// (the core's clock never goes back).
    clock: Instant,
}

impl State {
    /// The time for a call into the core now.
    fn stamp(&mut self) -> Instant {
        self.clock = Instant::now().max(self.clock);
        self.clock
    }
}

/// Testing aid (as NORM's NormSetRxLoss / NormSetTxLoss): drop this fraction
/// of the datagrams received and sent, before the protocol sees them.
#[derive(Debug)]
struct Loss {
    rx: f64,
    tx: f64,
    /// Fraction of sent datagrams with one byte flipped (checksum tests).
    corrupt: f64,
    rng: Rng,
    dropped: u64,
}

impl Loss {
    fn drop(&mut self, fraction: f64) -> bool {
        let d = fraction > 0.0 && self.rng.unit() < fraction;
        self.dropped += u64::from(d);
        d
    }
}

/// An endpoint, shared by the application's threads and its driver thread.
#[derive(Debug)]
pub struct Endpoint {
    domain: Domain,
    state: Mutex<State>,
    cond: Condvar,
    /// Readable while `recv` would not block. The library sets and clears it
    /// through its own descriptor only.
    ready: EventFd,
    /// The application's copy of `ready` (what `msocket` returns): closed by
    /// the library at release only if it still refers to `ready`, so that a
    /// number the application closed and reused is never touched.
    app_fd: RawFd,
    /// When `app_fd` was last found to be ours (ns since [`clock`]): checked
    /// again only after [`FD_CHECK`], so that the data path makes no system
    /// call for it.
    fd_checked: AtomicU64,
    /// Wakes the driver thread after an application call.
    wake: EventFd,
    primary: UdpSocket,
    multicast: OnceLock<UdpSocket>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The driver thread's id: a call from it (a callback) that would wait
    /// for the driver fails with [`Error::Deadlock`] instead of hanging.
    driver: OnceLock<std::thread::ThreadId>,
}

impl Endpoint {
    /// A new endpoint of `domain` (IPv4 or IPv6) with no role yet.
    pub fn new(domain: Domain) -> Result<Arc<Endpoint>, Error> {
        let ready = EventFd::new()?;
        let app_fd = sys::dup_cloexec(ready.raw())?;
        Ok(Arc::new(Endpoint {
            domain,
            state: Mutex::new(State {
                node: None,
                failed: false,
                inject_panic: false,
                cfg: Config::default(),
                opts: Vec::new(),
                group: None,
                shutdown: false,
                ready_set: false,
                wake_pending: false,
                loss: Loss { rx: 0.0, tx: 0.0, corrupt: 0.0, rng: Rng::new(sys::random_seed()), dropped: 0 },
                clock: Instant::now(),
            }),
            cond: Condvar::new(),
            ready,
            app_fd,
            fd_checked: AtomicU64::new(0),
            wake: EventFd::new()?,
            primary: socket::udp(domain)?,
            multicast: OnceLock::new(),
            thread: Mutex::new(None),
            driver: OnceLock::new(),
        }))
    }

    /// The application's pollable descriptor.
    pub fn fd(&self) -> RawFd {
        self.app_fd
    }

    /// Whether the application's descriptor still refers to this endpoint
    /// (false once the program closed it behind the library's back, whatever
    /// the number refers to now).
    pub fn owns_fd(&self) -> bool {
        let now = clock();
        let last = self.fd_checked.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < FD_CHECK.as_nanos() as u64 {
            return true;
        }
        let ours = sys::same_file(self.app_fd, self.ready.raw()) != Some(false);
        if ours {
            self.fd_checked.store(now.max(1), Ordering::Relaxed);
        }
        ours
    }

    // ----- options -----

    /// Change the configuration; only before `create`/`join`.
    pub fn configure(&self, f: impl FnOnce(&mut Config) -> Result<(), Error>) -> Result<(), Error> {
        let mut st = self.state.lock();
        if st.node.is_some() {
            return Err(Error::AlreadyConnected);
        }
        f(&mut st.cfg)
    }

    /// The configuration in force: the connection's once created or joined.
    pub fn config(&self) -> Config {
        let st = self.state.lock();
        st.node.as_ref().map_or(st.cfg, |n| *n.config())
    }

    /// Testing aid: drop `rx` and `tx` (fractions 0..=1) of the datagrams
    /// received and sent; None leaves a direction as it is.
    pub fn set_loss(&self, rx: Option<f64>, tx: Option<f64>) {
        let mut st = self.state.lock();
        if let Some(rx) = rx {
            st.loss.rx = rx.clamp(0.0, 1.0);
        }
        if let Some(tx) = tx {
            st.loss.tx = tx.clamp(0.0, 1.0);
        }
    }

    /// Testing aid: flip one byte in `fraction` (0..=1) of the datagrams sent.
    pub fn set_corruption(&self, fraction: f64) {
        self.state.lock().loss.corrupt = fraction.clamp(0.0, 1.0);
    }

    /// The corruption fraction in force.
    pub fn corruption(&self) -> f64 {
        self.state.lock().loss.corrupt
    }

    /// The loss fractions in force (received, sent).
    pub fn loss(&self) -> (f64, f64) {
        let st = self.state.lock();
        (st.loss.rx, st.loss.tx)
    }

    /// Set an option of another level on every socket, now and later.
    pub fn set_raw_option(&self, level: i32, name: i32, value: &[u8]) -> Result<(), Error> {
        let mut st = self.state.lock();
        let o = RawOption { level, name, value: value.to_vec() };
        socket::apply(&self.primary, &o)?;
        if let Some(m) = self.multicast.get() {
            socket::apply(m, &o)?;
        }
        st.opts.retain(|x| !(x.level == level && x.name == name));
        st.opts.push(o);
        Ok(())
    }

    /// Read an option of another level from the main socket.
    pub fn get_raw_option(&self, level: i32, name: i32, out: &mut [u8]) -> Result<usize, Error> {
        Ok(sys::getsockopt(&self.primary, level, name, out)?)
    }

    // ----- roles -----

    /// Become the TO of a new connection (`mcreate`); blocks for CCT.
    pub fn create(
        self: &Arc<Self>,
        local: SocketAddr,
        group: SocketAddr,
        handler: Option<EventHandler>,
    ) -> Result<(), Error> {
        self.check_addrs(local, group)?;
        if local.ip().is_unspecified() || local.ip().is_multicast() {
            return Err(Error::Invalid);
        }
        let mut st = self.state.lock();
        if st.node.is_some() {
            return Err(Error::AlreadyConnected);
        }
        let cfg = seeded(st.cfg)?;
        socket::setup_owner(&self.primary, local, group, &st.opts)?;
        let mut rng = Rng::new(sys::random_seed());
        let owner = Owner::new(cfg, SocketAddr::new(local.ip(), group.port()), &mut rng, st.stamp());
        log::info!("TO {} created connection {:#x} on {group}", local.ip(), owner.connection_id());
        st.node = Some(owner.into());
        st.group = Some(group);
        self.spawn(handler)?;
        self.wait_while(&mut st, |st| st.node.as_ref().and_then(Node::owner).is_some_and(Owner::is_creating));
        live(&st)
    }

    /// Join the connection of the TO at `owner` on `group` (`mjoin`); blocks
    /// until accepted, refused or timed out.
    pub fn join(self: &Arc<Self>, owner: SocketAddr, group: SocketAddr) -> Result<(), Error> {
        self.check_addrs(owner, group)?;
        if owner.ip().is_unspecified() || owner.ip().is_multicast() {
            return Err(Error::Invalid);
        }
        let mut st = self.state.lock();
        if st.node.is_some() {
            return Err(Error::AlreadyConnected);
        }
        let cfg = seeded(st.cfg)?;
        let m = socket::setup_user(&self.primary, owner, group, &st.opts)?;
        let _ = self.multicast.set(m);
        // Requests go to the TO's unicast IP and the group port.
        let to = SocketAddr::new(owner.ip(), group.port());
        let user = User::new(cfg, to, Rng::new(sys::random_seed()), st.stamp());
        st.node = Some(user.into());
        st.group = Some(group);
        self.spawn(None)?;
        self.wait_while(&mut st, |st| {
            st.node.as_ref().and_then(Node::user).is_some_and(|u| u.join_status() == JoinStatus::Joining)
        });
        match user_mut(&mut st)?.join_status() {
            JoinStatus::Joined => Ok(()),
            JoinStatus::Refused => Err(Error::Refused),
            _ => Err(Error::TimedOut),
        }
    }

    fn check_addrs(&self, unicast: SocketAddr, group: SocketAddr) -> Result<(), Error> {
        let family_ok = |a: SocketAddr| Domain::for_address(a) == self.domain;
        if !family_ok(unicast) || !family_ok(group) || !group.ip().is_multicast() || group.port() == 0 {
            return Err(Error::Invalid);
        }
        Ok(())
    }

    // ----- data -----

    /// Queue one message: multicast on the TO (`msendm`), or unicast to the
    /// TO on an SU (`msendmsg`). Blocks while the window is full unless
    /// `nonblocking`.
    pub fn send(&self, msg: &[u8], as_owner: bool, nonblocking: bool) -> Result<(), Error> {
        let mut st = self.state.lock();
        loop {
            let r = if as_owner {
                owner_mut(&mut st)?.send(msg).map_err(owner_error)
            } else {
                let u = user_mut(&mut st)?;
                if let Some(e) = user_gone(u) {
                    return Err(e);
                }
                u.send(msg).map_err(user_error)
            };
            match r {
                Err(Error::WouldBlock) if !nonblocking && !st.shutdown => {
                    self.not_on_driver()?;
                    self.cond.wait(&mut st);
                }
                Err(e) => return Err(e),
                Ok(()) => {
                    self.wake_driver(&mut st);
                    return Ok(());
                }
            }
        }
    }

    /// The next whole message (`mrecvmsg`), copied into `buf`.
    pub fn recv(&self, buf: &mut [u8], nonblocking: bool) -> Result<Received, Error> {
        let mut st = self.state.lock();
        loop {
            live(&st)?;
            let got = match st.node.as_mut() {
                None => return Err(Error::NotConnected),
                Some(Node::Owner(o)) => o.recv().map(|m| {
                    let mut r = copy_out(&m.message.data, buf, m.message.gap);
                    r.user_id = m.user_id;
                    r.token_id = m.token_id;
                    r.from = Some(m.from);
                    r
                }),
                Some(Node::User(u)) => match u.recv() {
                    Some(m) => {
                        let mut r = copy_out(&m.data, buf, m.gap);
                        r.from = Some(u.owner_addr());
                        Some(r)
                    }
                    None => match (u.join_status(), u.end()) {
                        (_, Some(End::Terminated)) => Some(Received { end: true, ..Received::default() }),
                        // Another thread released it (mleave) meanwhile.
                        (_, Some(End::Left)) => return Err(Error::Closed),
                        (_, Some(_)) => return Err(Error::Reset),
                        (JoinStatus::Joined, None) => None,
                        _ => return Err(Error::NotConnected),
                    },
                },
            };
            if let Some(r) = got {
                self.update_ready(&mut st);
                return Ok(r);
            }
            if st.shutdown {
                // Another thread released the endpoint while this one waited.
                return Err(Error::Closed);
            }
            if nonblocking {
                return Err(Error::WouldBlock);
            }
            self.not_on_driver()?;
            self.cond.wait(&mut st);
        }
    }

    // ----- tokens (TU) -----

    /// Ask for a token and wait for the answer (`mtoken_get`).
    pub fn token_get(&self) -> Result<u8, Error> {
        let mut st = self.state.lock();
        let now = st.stamp();
        let u = user_mut(&mut st)?;
        if let Some(e) = user_gone(u) {
            return Err(e);
        }
        u.request_token(now).map_err(user_error)?;
        self.wake.set();
        self.wait_token(&mut st)
    }

    /// Return the token once all sent data is out, and wait (`mtoken_return`).
    pub fn token_return(&self) -> Result<(), Error> {
        let mut st = self.state.lock();
        user_mut(&mut st)?.return_token().map_err(user_error)?;
        self.wake.set();
        self.wait_token(&mut st).map(|_| ())
    }

    fn wait_token(&self, st: &mut MutexGuard<'_, State>) -> Result<u8, Error> {
        loop {
            let u = user_mut(st)?;
            if let Some(r) = u.take_token_result() {
                return r.map_err(user_error);
            }
            if let Some(e) = user_gone(u) {
                return Err(e);
            }
            self.cond.wait(st);
        }
    }

    // ----- TO calls -----

    /// Answer a join request (`mjoin_confirm`).
    pub fn confirm_join(&self, user_id: u32, accept: bool) -> Result<(), Error> {
        self.with_owner(|o, now| o.confirm_join(user_id, accept, now).map_err(owner_error))
    }

    /// Answer a token request (`mtoken_confirm`).
    pub fn confirm_token(&self, user_id: u32, accept: bool) -> Result<(), Error> {
        self.with_owner(|o, _| o.confirm_token(user_id, accept).map_err(owner_error))
    }

    /// Eject a member (`mleave` on the TO).
    pub fn eject(&self, user_id: u32) -> Result<(), Error> {
        self.with_owner(|o, now| o.eject(user_id, now).map_err(owner_error))
    }

    /// Run `f` on the TO with the time for it, and wake the driver.
    fn with_owner<R>(&self, f: impl FnOnce(&mut Owner, Instant) -> Result<R, Error>) -> Result<R, Error> {
        let mut st = self.state.lock();
        let now = st.stamp();
        let r = owner_mut(&mut st).and_then(|o| f(o, now));
        self.wake.set();
        r
    }

    /// Give member `user_id` a token and wait for its answer
    /// (`ectp_token_give`): the token id.
    pub fn token_give(&self, user_id: u32) -> Result<u8, Error> {
        self.not_on_driver()?;
        let mut st = self.state.lock();
        let now = st.stamp();
        let op = owner_mut(&mut st)?.give_token(user_id, now).map_err(owner_error)?;
        self.wake.set();
        self.wait_token_outcome(&mut st, op)
    }

    /// Take member `user_id`'s token back and wait until it gave it back
    /// or left (`ectp_token_withdraw`).
    pub fn token_withdraw(&self, user_id: u32) -> Result<(), Error> {
        self.not_on_driver()?;
        let mut st = self.state.lock();
        let now = st.stamp();
        let op = owner_mut(&mut st)?.withdraw_token(user_id, now).map_err(owner_error)?;
        self.wake.set();
        self.wait_token_outcome(&mut st, op).map(|_| ())
    }

    fn wait_token_outcome(&self, st: &mut MutexGuard<'_, State>, op: TokenOp) -> Result<u8, Error> {
        loop {
            live(st)?;
            if st.shutdown {
                return Err(Error::Closed);
            }
            if let Some(r) = owner_mut(st)?.take_token_outcome(op) {
                return r.map_err(owner_error);
            }
            self.cond.wait(st);
        }
    }

    /// Stop new forward DATA until `resume` (`ectp_pause`).
    pub fn pause(&self) -> Result<(), Error> {
        self.with_owner(|o, now| o.pause(now).map_err(owner_error))
    }

    /// Let the queued data go again (`ectp_resume`).
    pub fn resume(&self) -> Result<(), Error> {
        self.with_owner(|o, now| o.resume(now).map_err(owner_error))
    }

    /// ECTP_PAUSED, on either side: whether the TO has paused.
    pub fn is_paused(&self) -> Result<bool, Error> {
        match self.state.lock().node.as_ref() {
            Some(Node::Owner(o)) => Ok(o.is_paused()),
            Some(Node::User(u)) => Ok(u.is_paused()),
            None => Err(Error::NotConnected),
        }
    }

    /// Active TUs in the whole tree (TO), for ECTP_MEMBERS: the ADN sum.
    pub fn members(&self) -> Result<usize, Error> {
        self.with_owner(|o, _| Ok(o.adn() as usize))
    }

    /// What the TO knows of member `user_id` (`ectp_get_member`).
    pub fn member(&self, user_id: u32) -> Result<MemberInfo, Error> {
        self.with_owner(|o, _| o.member(user_id).ok_or(Error::NotFound))
    }

    /// Every member id, ascending (`ectp_list_members`).
    pub fn member_ids(&self) -> Result<Vec<u32>, Error> {
        self.with_owner(|o, _| Ok(o.member_ids()))
    }

    /// This TU's parent id and tree level, for ECTP_PARENT / ECTP_TREE_LEVEL.
    pub fn tree_info(&self) -> Result<(u32, u8), Error> {
        let mut st = self.state.lock();
        let u = user_mut(&mut st)?;
        Ok((u.parent_id(), u.tree_level()))
    }

    /// This TU's member id and held token, for ECTP_USER_ID / ECTP_TOKEN_ID.
    pub fn user_info(&self) -> Result<(u32, u8), Error> {
        let mut st = self.state.lock();
        let u = user_mut(&mut st)?;
        Ok((u.member_id(), u.token_id()))
    }

    /// ECTP_MAX_RATE, at any time: before `mcreate`/`mjoin` it is kept for
    /// the node; after, the TO's forward rate or a TU's backward rate is
    /// capped from its next packet on.
    pub fn set_max_rate(&self, max_rate: u64) {
        let mut st = self.state.lock();
        st.cfg.max_rate = max_rate;
        match st.node.as_mut() {
            Some(Node::Owner(o)) => o.set_max_rate(max_rate),
            Some(Node::User(u)) => u.set_max_rate(max_rate),
            None => {}
        }
        self.wake_driver(&mut st);
    }

    /// ECTP_RATE: the current sending rate (TO: forward; TU: backward),
    /// bytes per second; `u64::MAX` when nothing limits it.
    pub fn rate(&self) -> Result<u64, Error> {
        let st = self.state.lock();
        match st.node.as_ref() {
            Some(Node::Owner(o)) => Ok(o.rate()),
            Some(Node::User(u)) => Ok(u.rate()),
            None => Err(Error::NotConnected),
        }
    }

    /// The smoothed round trip: a TU's to its parent, the TO's largest to
    /// one of its children; None before one is measured.
    pub fn rtt(&self) -> Option<Duration> {
        match self.state.lock().node.as_ref() {
            Some(Node::Owner(o)) => o.max_rtt(),
            Some(Node::User(u)) => u.rtt(),
            None => None,
        }
    }

    /// What the core counted.
    pub fn stats(&self) -> Stats {
        let st = self.state.lock();
        let mut s = st.node.as_ref().map_or_else(Stats::default, |n| *n.stats());
        s.dropped_injected = st.loss.dropped;
        s
    }

    /// Whether this endpoint is the TO (Some(true)), a TU (Some(false)), or
    /// has no role yet (None).
    pub fn is_owner(&self) -> Option<bool> {
        self.state.lock().node.as_ref().map(|n| n.owner().is_some())
    }

    // ----- closing -----

    /// TO: deliver what is queued, multicast CTR, stop (`mterminate`).
    /// On a failed endpoint the thread is stopped all the same, and the error
    /// returned.
    pub fn terminate(&self) -> Result<(), Error> {
        self.not_on_driver()?;
        let r = {
            let mut st = self.state.lock();
            match st.node.as_mut() {
                Some(Node::Owner(o)) => o.terminate(),
                Some(Node::User(_)) => return Err(Error::WrongRole),
                None => {}
            }
            self.wake.set();
            self.wait_while(&mut st, |st| st.node.as_ref().and_then(Node::owner).is_some_and(|o| !o.is_closed()));
            live(&st)
        };
        self.shutdown();
        r
    }

    /// TO: end at once, CTR with F=1, without draining (`ectp_abort`).
    pub fn abort(&self) -> Result<(), Error> {
        self.not_on_driver()?;
        let r = {
            let mut st = self.state.lock();
            let now = st.stamp();
            match st.node.as_mut() {
                Some(Node::Owner(o)) => o.abort(now),
                Some(Node::User(_)) => return Err(Error::WrongRole),
                None => return Err(Error::NotConnected),
            }
            self.wake.set();
            self.wait_while(&mut st, |st| st.node.as_ref().and_then(Node::owner).is_some_and(|o| !o.is_closed()));
            live(&st)
        };
        self.shutdown();
        r
    }

    /// TU: ULR to the parent, then stop (`mleave` on a TU).
    /// On a failed endpoint the thread is stopped all the same, and the error
    /// returned.
    pub fn leave(&self) -> Result<(), Error> {
        let r = {
            let mut st = self.state.lock();
            match st.node.as_mut() {
                Some(Node::User(u)) => u.leave(),
                Some(Node::Owner(_)) => return Err(Error::WrongRole),
                None => {}
            }
            self.wake.set();
            let until = Instant::now() + LEAVE_FLUSH;
            while st.node.as_ref().and_then(Node::user).is_some_and(|u| !u.is_flushed()) && !st.shutdown && !st.failed {
                if self.cond.wait_until(&mut st, until).timed_out() {
                    break;
                }
            }
            live(&st)
        };
        self.shutdown();
        r
    }

    /// Stop the driver thread. Sockets close when the endpoint is dropped.
    pub fn shutdown(&self) {
        self.state.lock().shutdown = true;
        self.wake.set();
        self.cond.notify_all();
        let handle = self.thread.lock().take();
        if let Some(h) = handle {
            // From a callback, the driver thread would wait for itself.
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }

    /// Wake the driver thread, unless a wake-up is already pending.
    fn wake_driver(&self, st: &mut State) {
        if !st.wake_pending {
            st.wake_pending = true;
            self.wake.set();
        }
    }

    fn wait_while(&self, st: &mut MutexGuard<'_, State>, cond: impl Fn(&State) -> bool) {
        while cond(st) && !st.shutdown && !st.failed {
            self.cond.wait(st);
        }
    }

    fn update_ready(&self, st: &mut State) {
        // A failed endpoint is readable, so that a poller calls and learns it.
        let want = st.failed || st.node.as_ref().is_some_and(Node::is_readable);
        if want != st.ready_set {
            if want {
                self.ready.set()
            } else {
                self.ready.clear()
            }
            st.ready_set = want;
        }
    }

    // ----- the driver thread -----

    fn spawn(self: &Arc<Self>, handler: Option<EventHandler>) -> Result<(), Error> {
        let ep = Arc::clone(self);
        let h = std::thread::Builder::new().name("ectp-driver".into()).spawn(move || ep.run(handler))?;
        let _ = self.driver.set(h.thread().id());
        *self.thread.lock() = Some(h);
        Ok(())
    }

    /// Err(Deadlock) when called on the driver thread (from a callback):
    /// a call that waits for the driver would wait for itself.
    fn not_on_driver(&self) -> Result<(), Error> {
        if self.driver.get().is_some_and(|id| *id == std::thread::current().id()) {
            Err(Error::Deadlock)
        } else {
            Ok(())
        }
    }

    /// The driver thread: rounds until shutdown, behind a panic boundary. A
    /// panic in the core fails the endpoint: every blocked and later call
    /// returns an error instead of hanging on a thread that is gone.
    fn run(self: Arc<Self>, mut handler: Option<EventHandler>) {
        let mut d = Rounds::new(&self);
        loop {
            match catch_unwind(AssertUnwindSafe(|| self.round(&mut d, &mut handler))) {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => {
                    log::error!("internal error (panic) in the driver thread: the endpoint is failed");
                    let mut st = self.state.lock();
                    st.failed = true;
                    self.update_ready(&mut st);
                    drop(st);
                    self.cond.notify_all();
                    break;
                }
            }
        }
    }

    /// One round: wait for a datagram, a wake-up or the next deadline; feed
    /// the core; send what it returns; call the event handler. Returns false
    /// once the endpoint shuts down.
    fn round(&self, d: &mut Rounds<'_>, handler: &mut Option<EventHandler>) -> bool {
        // Datagrams the kernel could not take last round: wait until it can.
        let write = (!d.pending.is_empty()).then_some(1);
        match sys::poll_readable(&d.fds, d.timeout, &mut d.readable, write) {
            Ok(true) => self.flush_pending(d),
            Ok(false) => {}
            Err(e) => {
                log::error!("poll: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let now = Instant::now();
        let real_now = sys::realtime();
        let mut st = self.state.lock();
        // A call into the core may have come in between.
        let now = now.max(st.clock);
        // Taken under the lock: a call that finds a wake-up pending has
        // queued its work before this round looks at it.
        if d.readable[0] || st.wake_pending {
            self.wake.clear();
            st.wake_pending = false;
        }
        if st.shutdown || st.failed {
            return false;
        }
        if std::mem::take(&mut st.inject_panic) {
            panic!("testing aid: a panic injected into the driver thread");
        }
        let mut busy = false;
        let mut handled = 0usize;
        for (i, s) in d.socks.iter().enumerate() {
            if !d.readable[i + 1] {
                continue;
            }
            let mut n = 0;
            while n < BATCH {
                // Several datagrams per system call (recvmmsg).
                match sys::recv_batch(s.as_raw_fd(), &mut d.rx_bufs, &mut d.rx_got) {
                    Ok(0) => break,
                    Ok(k) => {
                        n += k;
                        for (j, g) in d.rx_got.iter().enumerate() {
                            let rx_loss = st.loss.rx;
                            if st.loss.drop(rx_loss) {
                                continue;
                            }
                            let at = arrival(g.kernel_rx, real_now, now, st.clock);
                            st.clock = at;
                            handled += 1;
                            if let Some(node) = st.node.as_mut() {
                                node.handle(at, g.from, &d.rx_bufs[j][..g.len]);
                            }
                        }
                        if k < d.rx_bufs.len() {
                            break;
                        }
                    }
                    Err(e) => {
                        // ICMP errors (a TU asking a TO that is not up yet) land here.
                        log::debug!("recv: {e}");
                        break;
                    }
                }
            }
            busy |= n >= BATCH;
        }
        let tx = &mut d.tx;
        tx.clear();
        let group = st.group;
        // The clock again for what the core sends: a report's timestamp, or
        // the time an echo was held, is not stretched by the time this round
        // took to handle what it read.
        let now = if handled > 0 { Instant::now() } else { now };
        st.clock = now;
        if let Some(node) = st.node.as_mut() {
            node.handle_timeout(now);
            // Backpressure: while the socket's queue is full, the core keeps
            // its packets (and its pacer, its window, what waits).
            while d.pending.is_empty()
                && let Some(t) = tx.slot().and_then(|b| node.poll_transmit(now, b))
            {
                tx.commit(t);
            }
            d.events.extend(std::iter::from_fn(|| node.poll_event()));
        }
        busy |= tx.is_full();
        let tx_loss = st.loss.tx;
        tx.drop_some(|| st.loss.drop(tx_loss));
        if st.loss.corrupt > 0.0 {
            let (fraction, rng) = (st.loss.corrupt, &mut st.loss.rng);
            tx.corrupt_some(|len| {
                (rng.unit() < fraction).then(|| (rng.next_u64() as usize % len.max(1), 1 << (rng.next_u64() % 8)))
            });
        }
        self.update_ready(&mut st);
        let deadline = st.node.as_ref().and_then(Node::poll_timeout);
        drop(st);
        self.cond.notify_all();
        // Every datagram of the round in as few system calls as the kernel allows (sendmmsg).
        let batch: Vec<(SocketAddr, &[u8])> = tx
            .iter()
            .filter(|(_, bytes)| !bytes.is_empty())
            .filter_map(|(dest, bytes)| {
                let to = match dest {
                    Dest::Group => group,
                    Dest::Unicast(a) => Some(a),
                };
                to.map(|to| (to, bytes))
            })
            .collect();
        let sent = sys::send_batch(self.primary.as_raw_fd(), &batch);
        // What the kernel could not take now waits for POLLOUT, in order.
        d.pending.extend(batch[sent..].iter().map(|&(to, bytes)| (to, bytes.to_vec())));
        if let Some(h) = handler.as_mut() {
            for e in d.events.drain(..) {
                h(e);
            }
        }
        d.events.clear();
        d.timeout = if busy && d.pending.is_empty() {
            Some(Duration::ZERO)
        } else {
            deadline.map(|t| t.saturating_duration_since(Instant::now()))
        };
        true
    }

    /// Send what waited for the socket's queue, as far as it takes it now.
    fn flush_pending(&self, d: &mut Rounds<'_>) {
        let batch: Vec<(SocketAddr, &[u8])> = d.pending.iter().map(|(to, b)| (*to, &b[..])).collect();
        let sent = sys::send_batch(self.primary.as_raw_fd(), &batch);
        d.pending.drain(..sent);
    }

    /// Testing aid: make the driver thread panic in its next round, to check
    /// that blocked and later calls fail instead of hanging.
    #[doc(hidden)]
    pub fn inject_driver_panic(&self) {
        self.state.lock().inject_panic = true;
        self.wake.set();
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if self.owns_fd() {
            sys::close(self.app_fd);
        }
    }
}

/// When a datagram came in, on the core's clock: `now` (taken, with
/// `real_now` on the kernel's clock, before the datagram was read) less the
/// time it waited in the socket by its kernel timestamp, no earlier than
/// `floor`; `now` without a timestamp, or with one from after `real_now` or
/// more than a second old (the realtime clock was set meanwhile).
fn arrival(kernel_rx: Option<Duration>, real_now: Duration, now: Instant, floor: Instant) -> Instant {
    let waited = kernel_rx.and_then(|k| real_now.checked_sub(k)).filter(|w| *w < Duration::from_secs(1));
    waited.and_then(|w| now.checked_sub(w)).map_or(now, |t| t.max(floor).min(now))
}

/// What the driver thread keeps from one round to the next.
struct Rounds<'a> {
    /// recvmmsg's buffers, and what it wrote in them (length, source, the
    /// kernel's time of arrival).
    rx_bufs: Vec<Vec<u8>>,
    rx_got: Vec<sys::Got>,
    tx: TxBatch,
    events: Vec<Event>,
    fds: Vec<RawFd>,
    socks: Vec<&'a UdpSocket>,
    readable: [bool; 4],
    timeout: Option<Duration>,
    /// Datagrams the socket could not take (EAGAIN), sent first when it can.
    pending: VecDeque<(SocketAddr, Vec<u8>)>,
}

impl<'a> Rounds<'a> {
    fn new(ep: &'a Endpoint) -> Rounds<'a> {
        let mut fds = vec![ep.wake.raw(), ep.primary.as_raw_fd()];
        let mut socks = vec![&ep.primary];
        if let Some(m) = ep.multicast.get() {
            fds.push(m.as_raw_fd());
            socks.push(m);
        }
        Rounds {
            rx_bufs: (0..RX_BATCH).map(|_| vec![0u8; MAX_DATAGRAM]).collect(),
            rx_got: Vec::with_capacity(RX_BATCH),
            tx: TxBatch::new(),
            events: Vec::new(),
            fds,
            socks,
            readable: [false; 4],
            timeout: Some(Duration::ZERO),
            pending: VecDeque::new(),
        }
    }
}

/// Datagrams written by the core in one round, sent after the lock is released.
struct TxBatch {
    buf: Vec<u8>,
    sent: Vec<Transmit>,
}

impl TxBatch {
    const SLOTS: usize = 16;

    fn new() -> TxBatch {
        TxBatch { buf: vec![0; MAX_DATAGRAM * Self::SLOTS], sent: Vec::with_capacity(Self::SLOTS) }
    }

    fn clear(&mut self) {
        self.sent.clear();
    }

    fn is_full(&self) -> bool {
        self.sent.len() == Self::SLOTS
    }

    /// The buffer for the next datagram, if there is room.
    fn slot(&mut self) -> Option<&mut [u8]> {
        let i = self.sent.len();
        if i == Self::SLOTS {
            return None;
        }
        self.buf.get_mut(i * MAX_DATAGRAM..(i + 1) * MAX_DATAGRAM)
    }

    /// Testing aid: forget the datagrams `drop` picks.
    fn drop_some(&mut self, mut drop: impl FnMut() -> bool) {
        for t in &mut self.sent {
            if drop() {
                t.len = 0;
            }
        }
    }

    /// Testing aid: flip the bit `pick` names (byte index, mask) in some datagrams.
    fn corrupt_some(&mut self, mut pick: impl FnMut(usize) -> Option<(usize, u8)>) {
        for (i, t) in self.sent.iter().enumerate() {
            if let Some((at, mask)) = pick(t.len).filter(|_| t.len > 0) {
                self.buf[i * MAX_DATAGRAM + at % t.len] ^= mask;
            }
        }
    }

    fn commit(&mut self, t: Transmit) {
        self.sent.push(t);
    }

    fn iter(&self) -> impl Iterator<Item = (Dest, &[u8])> {
        self.sent.iter().enumerate().map(|(i, t)| (t.dest, &self.buf[i * MAX_DATAGRAM..i * MAX_DATAGRAM + t.len]))
    }
}

fn copy_out(data: &[u8], buf: &mut [u8], gap: bool) -> Received {
    let len = data.len().min(buf.len());
    buf[..len].copy_from_slice(&data[..len]);
    Received { len, truncated: len < data.len(), gap, ..Received::default() }
}

/// Ok unless the driver thread failed.
fn live(st: &State) -> Result<(), Error> {
    if st.failed { Err(Error::Failed) } else { Ok(()) }
}

/// The TU, or the error a TU call gets on this endpoint.
fn user_mut(st: &mut State) -> Result<&mut User, Error> {
    live(st)?;
    match st.node.as_mut() {
        Some(Node::User(u)) => Ok(u),
        Some(Node::Owner(_)) => Err(Error::WrongRole),
        None => Err(Error::NotConnected),
    }
}

/// The TO, or the error a TO call gets on this endpoint.
fn owner_mut(st: &mut State) -> Result<&mut Owner, Error> {
    live(st)?;
    match st.node.as_mut() {
        Some(Node::Owner(o)) => Ok(o),
        Some(Node::User(_)) => Err(Error::WrongRole),
        None => Err(Error::NotConnected),
    }
}

/// The error a TU call gets once the connection is over for it.
fn user_gone(u: &User) -> Option<Error> {
    match (u.join_status(), u.end()) {
        (_, Some(End::Terminated)) | (_, Some(End::Reset)) => Some(Error::Reset),
        (_, Some(End::Left)) => Some(Error::Closed),
        (JoinStatus::Joined, None) => None,
        _ => Some(Error::NotConnected),
    }
}

fn owner_error(e: OwnerError) -> Error {
    match e {
        OwnerError::WouldBlock => Error::WouldBlock,
        OwnerError::BadLength => Error::TooLong,
        OwnerError::NotFound => Error::NotFound,
        OwnerError::Terminated => Error::Closed,
        OwnerError::Already => Error::Already,
        OwnerError::Busy => Error::Busy,
        OwnerError::TimedOut => Error::TimedOut,
    }
}

fn user_error(e: UserError) -> Error {
    match e {
        UserError::AlreadyHeld | UserError::Busy => Error::AlreadyHeld,
        UserError::NoToken => Error::NoToken,
        UserError::Refused => Error::TokenRefused,
        UserError::TimedOut => Error::TimedOut,
        UserError::NotJoined => Error::NotConnected,
        UserError::WouldBlock => Error::WouldBlock,
        UserError::BadLength => Error::TooLong,
    }
}

/// `cfg` with fresh randomness for the keys of a keyed connection.
fn seeded(cfg: Config) -> Result<Config, Error> {
    let Some(sec) = cfg.security else { return Ok(cfg) };
    Ok(Config { security: Some(sec.with_seed(sys::random_key_seed()?)), ..cfg })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_is_handled_as_of_when_it_came_in_never_before_the_core_s_clock() {
        let floor = Instant::now();
        let now = floor + Duration::from_millis(10);
        let real_now = Duration::from_secs(1_800_000_000);
        let ms = Duration::from_millis;
        // It waited 3 ms in the socket.
        assert_eq!(arrival(Some(real_now - ms(3)), real_now, now, floor), now - ms(3));
        // It came in before the latest time the core was given: that time.
        assert_eq!(arrival(Some(real_now - ms(30)), real_now, now, floor), floor);
        // No stamp, a stamp after `now` (read after the clocks were taken),
        // one from more than a second back (the clock was set): `now`.
        assert_eq!(arrival(None, real_now, now, floor), now);
        assert_eq!(arrival(Some(real_now + ms(1)), real_now, now, floor), now);
        assert_eq!(arrival(Some(real_now - ms(1500)), real_now, now, floor), now);
    }
}
