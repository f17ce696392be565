//! One ECTP endpoint: its sockets, its protocol core behind a lock, and the
//! driver thread that runs the core.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use socket2::Domain;

use super::Error;
use super::socket::{self, RawOption};
use super::sys::{self, EventFd};
use crate::proto::{
    Config, Dest, End, Event, JoinStatus, MAX_DATAGRAM, Owner, OwnerError, Rng, Stats, Transmit, User, UserError,
};

/// Most datagrams read from one socket, or written, in one round of the
/// driver before it looks at the rest again.
const BATCH: usize = 64;
/// How long `leave` waits for its ULR to go out.
const LEAVE_FLUSH: Duration = Duration::from_secs(1);

/// Called on the driver thread, with no lock held, for each TO event.
pub type EventHandler = Box<dyn FnMut(Event) + Send>;

/// What the endpoint has become.
#[derive(Debug)]
pub enum Role {
    /// Neither `create` nor `join` yet.
    Unbound,
    /// The TC-Owner.
    Owner(Box<Owner>),
    /// A TS-user.
    User(Box<User>),
}

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
    role: Role,
    cfg: Config,
    opts: Vec<RawOption>,
    group: Option<SocketAddr>,
    shutdown: bool,
    ready_set: bool,
    loss: Loss,
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
    /// The application's descriptor: readable while `recv` would not block.
    ready: EventFd,
    /// Wakes the driver thread after an application call.
    wake: EventFd,
    primary: UdpSocket,
    multicast: OnceLock<UdpSocket>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Endpoint {
    /// A new endpoint of `domain` (IPv4 or IPv6) with no role yet.
    pub fn new(domain: Domain) -> Result<Arc<Endpoint>, Error> {
        Ok(Arc::new(Endpoint {
            domain,
            state: Mutex::new(State {
                role: Role::Unbound,
                cfg: Config::default(),
                opts: Vec::new(),
                group: None,
                shutdown: false,
                ready_set: false,
                loss: Loss { rx: 0.0, tx: 0.0, corrupt: 0.0, rng: Rng::new(sys::random_seed()), dropped: 0 },
            }),
            cond: Condvar::new(),
            ready: EventFd::new()?,
            wake: EventFd::new()?,
            primary: socket::udp(domain)?,
            multicast: OnceLock::new(),
            thread: Mutex::new(None),
        }))
    }

    /// The application's pollable descriptor.
    pub fn fd(&self) -> RawFd {
        self.ready.raw()
    }

    // ----- options -----

    /// Change the configuration; only before `create`/`join`.
    pub fn configure(&self, f: impl FnOnce(&mut Config) -> Result<(), Error>) -> Result<(), Error> {
        let mut st = self.state.lock();
        if !matches!(st.role, Role::Unbound) {
            return Err(Error::AlreadyConnected);
        }
        f(&mut st.cfg)
    }

    /// The configuration in force: the connection's once created or joined.
    pub fn config(&self) -> Config {
        let st = self.state.lock();
        match &st.role {
            Role::Unbound => st.cfg,
            Role::Owner(o) => *o.config(),
            Role::User(u) => *u.config(),
        }
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
        if !matches!(st.role, Role::Unbound) {
            return Err(Error::AlreadyConnected);
        }
        socket::setup_owner(&self.primary, local, group, &st.opts)?;
        let mut rng = Rng::new(sys::random_seed());
        let owner = Owner::new(st.cfg, SocketAddr::new(local.ip(), group.port()), &mut rng, Instant::now());
        log::info!("TO {local} created connection {:#x} on {group}", owner.connection_id());
        st.role = Role::Owner(Box::new(owner));
        st.group = Some(group);
        self.spawn(handler)?;
        self.wait_while(&mut st, |st| matches!(&st.role, Role::Owner(o) if o.is_creating()));
        Ok(())
    }

    /// Join the connection of the TO at `owner` on `group` (`mjoin`); blocks
    /// until accepted, refused or timed out.
    pub fn join(self: &Arc<Self>, owner: SocketAddr, group: SocketAddr) -> Result<(), Error> {
        self.check_addrs(owner, group)?;
        if owner.ip().is_unspecified() || owner.ip().is_multicast() {
            return Err(Error::Invalid);
        }
        let mut st = self.state.lock();
        if !matches!(st.role, Role::Unbound) {
            return Err(Error::AlreadyConnected);
        }
        let m = socket::setup_user(&self.primary, owner, group, &st.opts)?;
        let _ = self.multicast.set(m);
        // Requests go to the TO's unicast IP and the group port.
        let to = SocketAddr::new(owner.ip(), group.port());
        let user = User::new(st.cfg, to, Rng::new(sys::random_seed()), Instant::now());
        st.role = Role::User(Box::new(user));
        st.group = Some(group);
        self.spawn(None)?;
        self.wait_while(&mut st, |st| matches!(&st.role, Role::User(u) if u.join_status() == JoinStatus::Joining));
        match &st.role {
            Role::User(u) => match u.join_status() {
                JoinStatus::Joined => Ok(()),
                JoinStatus::Refused => Err(Error::Refused),
                _ => Err(Error::TimedOut),
            },
            _ => Err(Error::Closed),
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
            let r = match (&mut st.role, as_owner) {
                (Role::Unbound, _) => return Err(Error::NotConnected),
                (Role::Owner(o), true) => o.send(msg).map_err(owner_error),
                (Role::User(u), false) => {
                    if let Some(e) = user_gone(u) {
                        return Err(e);
                    }
                    u.send(msg).map_err(user_error)
                }
                _ => return Err(Error::WrongRole),
            };
            match r {
                Err(Error::WouldBlock) if !nonblocking && !st.shutdown => self.cond.wait(&mut st),
                Err(e) => return Err(e),
                Ok(()) => {
                    self.wake.set();
                    return Ok(());
                }
            }
        }
    }

    /// The next whole message (`mrecvmsg`), copied into `buf`.
    pub fn recv(&self, buf: &mut [u8], nonblocking: bool) -> Result<Received, Error> {
        let mut st = self.state.lock();
        loop {
            let got = match &mut st.role {
                Role::Unbound => return Err(Error::NotConnected),
                Role::Owner(o) => o.recv().map(|m| {
                    let mut r = copy_out(&m.message.data, buf, m.message.gap);
                    r.user_id = m.user_id;
                    r.token_id = m.token_id;
                    r.from = Some(m.from);
                    r
                }),
                Role::User(u) => match u.recv() {
                    Some(m) => {
                        let mut r = copy_out(&m.data, buf, m.gap);
                        r.from = Some(u.owner_addr());
                        Some(r)
                    }
                    None => match (u.join_status(), u.end()) {
                        (_, Some(End::Terminated)) => Some(Received { end: true, ..Received::default() }),
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
            if nonblocking || st.shutdown {
                return Err(Error::WouldBlock);
            }
            self.cond.wait(&mut st);
        }
    }

    // ----- tokens (TU) -----

    /// Ask for a token and wait for the answer (`mtoken_get`).
    pub fn token_get(&self) -> Result<u8, Error> {
        let mut st = self.state.lock();
        let u = user_mut(&mut st.role)?;
        if let Some(e) = user_gone(u) {
            return Err(e);
        }
        u.request_token(Instant::now()).map_err(user_error)?;
        self.wake.set();
        self.wait_token(&mut st)
    }

    /// Return the token once all sent data is out, and wait (`mtoken_return`).
    pub fn token_return(&self) -> Result<(), Error> {
        let mut st = self.state.lock();
        user_mut(&mut st.role)?.return_token().map_err(user_error)?;
        self.wake.set();
        self.wait_token(&mut st).map(|_| ())
    }

    fn wait_token(&self, st: &mut MutexGuard<'_, State>) -> Result<u8, Error> {
        loop {
            let u = user_mut(&mut st.role)?;
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
        self.with_owner(|o| o.confirm_join(user_id, accept, Instant::now()).map_err(owner_error))
    }

    /// Answer a token request (`mtoken_confirm`).
    pub fn confirm_token(&self, user_id: u32, accept: bool) -> Result<(), Error> {
        self.with_owner(|o| o.confirm_token(user_id, accept).map_err(owner_error))
    }

    /// Eject a member (`mleave` on the TO).
    pub fn eject(&self, user_id: u32) -> Result<(), Error> {
        self.with_owner(|o| o.eject(user_id, Instant::now()).map_err(owner_error))
    }

    fn with_owner<R>(&self, f: impl FnOnce(&mut Owner) -> Result<R, Error>) -> Result<R, Error> {
        let mut st = self.state.lock();
        let r = match &mut st.role {
            Role::Owner(o) => f(o),
            Role::User(_) => Err(Error::WrongRole),
            Role::Unbound => Err(Error::NotConnected),
        };
        self.wake.set();
        r
    }

    /// Active members (TO), for ECTP_MEMBERS.
    pub fn members(&self) -> Result<usize, Error> {
        self.with_owner(|o| Ok(o.active_members()))
    }

    /// This TU's member id and held token, for ECTP_USER_ID / ECTP_TOKEN_ID.
    pub fn user_info(&self) -> Result<(u32, u8), Error> {
        let mut st = self.state.lock();
        let u = user_mut(&mut st.role)?;
        Ok((u.member_id(), u.token_id()))
    }

    /// What the core counted.
    pub fn stats(&self) -> Stats {
        let st = self.state.lock();
        let mut s = match &st.role {
            Role::Owner(o) => *o.stats(),
            Role::User(u) => *u.stats(),
            Role::Unbound => Stats::default(),
        };
        s.dropped_injected = st.loss.dropped;
        s
    }

    /// Whether this endpoint is the TO (Some(true)), a TU (Some(false)), or
    /// has no role yet (None).
    pub fn is_owner(&self) -> Option<bool> {
        match self.state.lock().role {
            Role::Unbound => None,
            Role::Owner(_) => Some(true),
            Role::User(_) => Some(false),
        }
    }

    // ----- closing -----

    /// TO: deliver what is queued, multicast CTR, stop (`mterminate`).
    pub fn terminate(&self) -> Result<(), Error> {
        {
            let mut st = self.state.lock();
            match &mut st.role {
                Role::Owner(o) => o.terminate(),
                Role::User(_) => return Err(Error::WrongRole),
                Role::Unbound => {}
            }
            self.wake.set();
            self.wait_while(&mut st, |st| matches!(&st.role, Role::Owner(o) if !o.is_closed()));
        }
        self.shutdown();
        Ok(())
    }

    /// TU: ULR to the parent, then stop (`mleave` on a TU).
    pub fn leave(&self) -> Result<(), Error> {
        {
            let mut st = self.state.lock();
            match &mut st.role {
                Role::User(u) => u.leave(),
                Role::Owner(_) => return Err(Error::WrongRole),
                Role::Unbound => {}
            }
            self.wake.set();
            let until = Instant::now() + LEAVE_FLUSH;
            while matches!(&st.role, Role::User(u) if !u.is_flushed()) && !st.shutdown {
                if self.cond.wait_until(&mut st, until).timed_out() {
                    break;
                }
            }
        }
        self.shutdown();
        Ok(())
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

    fn wait_while(&self, st: &mut MutexGuard<'_, State>, cond: impl Fn(&State) -> bool) {
        while cond(st) && !st.shutdown {
            self.cond.wait(st);
        }
    }

    fn update_ready(&self, st: &mut State) {
        let want = match &st.role {
            Role::Unbound => false,
            Role::Owner(o) => o.has_incoming(),
            Role::User(u) => u.has_message() || u.end().is_some() || u.join_status() != JoinStatus::Joined,
        };
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
        *self.thread.lock() = Some(h);
        Ok(())
    }

    fn run(self: Arc<Self>, mut handler: Option<EventHandler>) {
        let mut rx_buf = vec![0u8; MAX_DATAGRAM];
        let mut tx = TxBatch::new();
        let mut events = Vec::new();
        let mut fds = vec![self.wake.raw(), self.primary.as_raw_fd()];
        let mut socks = vec![&self.primary];
        if let Some(m) = self.multicast.get() {
            fds.push(m.as_raw_fd());
            socks.push(m);
        }
        let mut readable = [false; 4];
        let mut timeout = Some(Duration::ZERO);
        loop {
            if let Err(e) = sys::poll_readable(&fds, timeout, &mut readable) {
                log::error!("poll: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            if readable[0] {
                self.wake.clear();
            }
            let now = Instant::now();
            let mut st = self.state.lock();
            if st.shutdown {
                break;
            }
            let mut busy = false;
            for (i, s) in socks.iter().enumerate() {
                if !readable[i + 1] {
                    continue;
                }
                let mut n = 0;
                while n < BATCH {
                    match socket::recv_from(s, &mut rx_buf) {
                        Ok(Some((len, from))) => {
                            n += 1;
                            let rx_loss = st.loss.rx;
                            if st.loss.drop(rx_loss) {
                                continue;
                            }
                            match &mut st.role {
                                Role::Owner(o) => o.handle(now, from, &rx_buf[..len]),
                                Role::User(u) => u.handle(now, from, &rx_buf[..len]),
                                Role::Unbound => {}
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            // ICMP errors (a TU asking a TO that is not up yet) land here.
                            log::debug!("recv: {e}");
                            break;
                        }
                    }
                }
                busy |= n == BATCH;
            }
            tx.clear();
            let group = st.group;
            match &mut st.role {
                Role::Owner(o) => {
                    o.handle_timeout(now);
                    while let Some(t) = tx.slot().and_then(|b| o.poll_transmit(now, b)) {
                        tx.commit(t);
                    }
                    events.extend(std::iter::from_fn(|| o.poll_event()));
                }
                Role::User(u) => {
                    u.handle_timeout(now);
                    while let Some(t) = tx.slot().and_then(|b| u.poll_transmit(now, b)) {
                        tx.commit(t);
                    }
                }
                Role::Unbound => {}
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
            let deadline = match &st.role {
                Role::Owner(o) => o.poll_timeout(),
                Role::User(u) => u.poll_timeout(),
                Role::Unbound => None,
            };
            drop(st);
            self.cond.notify_all();
            for (dest, bytes) in tx.iter() {
                let to = match dest {
                    Dest::Group => group,
                    Dest::Unicast(a) => Some(a),
                };
                if let (Some(to), false) = (to, bytes.is_empty())
                    && let Err(e) = self.primary.send_to(bytes, to)
                {
                    log::debug!("send to {to}: {e}");
                }
            }
            if let Some(h) = handler.as_mut() {
                for e in events.drain(..) {
                    h(e);
                }
            }
            events.clear();
            timeout =
                if busy { Some(Duration::ZERO) } else { deadline.map(|d| d.saturating_duration_since(Instant::now())) };
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

fn user_mut(role: &mut Role) -> Result<&mut User, Error> {
    match role {
        Role::User(u) => Ok(u),
        Role::Owner(_) => Err(Error::WrongRole),
        Role::Unbound => Err(Error::NotConnected),
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
