//! The keys of a node of a keyed connection (ECTP_GROUP_KEY), and the
//! sealing and opening of every packet it sends and receives.
//!
//! Which key a packet is sealed with follows from where it goes: the group
//! key for what the TO multicasts; between a TU and the TO, the TU's member
//! key (its join key until the TO's answer gave it the member key); between
//! a child and its repair agent, their link key. A packet is opened with the
//! key its Authentication element names, looked up by the exact address it
//! came from; its sender id must be the one that key's peer has, and its
//! counter must be new (see [`Window`]). The key schedule is in
//! [`super::crypto`] and `docs/wire-format.md`.
//!
//! The TO learns a TU's join key from the salt of its join request, checks
//! the request with it, and derives the member key from the request's
//! X25519 share and its own; it answers with its share, from which the TU
//! derives the same member key, and the group key. A stranger without the
//! group key can neither join nor make the TO do a key agreement; a member
//! cannot compute another member's member or link key.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Dest;
use super::crypto::{self, Cipher, Entropy, Security, Share, Window};
use super::stats::Outcome;
use crate::wire::{self, Auth, KeyKind, KeyShare, Packet, PacketType, TAG_LEN};

/// Sender id of a TU that has no member id yet (its join requests).
pub(crate) const NO_ID: u32 = u32::MAX;
/// Sender id of the TO.
const TO: u32 = 0;
/// Most keys kept for addresses that are not members (joiners that were
/// not admitted, departed members still answered): beyond, new joins are
/// dropped until some expire.
const MAX_STRANGERS: usize = 8192;
/// Join salts remembered, so that a replayed join request is recognised.
const MAX_SALTS: usize = 65536;
/// Group packets a TU keeps while it does not have the group key yet
/// (they are opened once the TO's answer gave it).
const MAX_STASH: usize = 256;

/// One key shared with one peer: sealing (our counter) and opening (its).
#[derive(Debug)]
struct Channel {
    cipher: Cipher,
    /// Counter of the last packet sealed.
    sent: u64,
    /// Counters received.
    window: Window,
}

impl Channel {
    fn new(key: &[u8; 32]) -> Option<Channel> {
        Some(Channel { cipher: Cipher::new(key)?, sent: 0, window: Window::default() })
    }
}

/// What a node shares with one peer, by its exact address.
#[derive(Debug)]
struct Peer {
    /// The peer's sender id (0: the TO; a member id; [`NO_ID`] while unknown).
    id: u32,
    /// Member key (with the TO) or link key (between a child and its repair
    /// agent), and its raw bytes (a TO derives link keys from member keys).
    main: Option<(Channel, [u8; 32])>,
    /// [`KeyKind::Member`] or [`KeyKind::Link`]: what `main` is.
    kind: KeyKind,
    /// The join key of the TU's join, and its salt.
    join: Option<(Channel, [u8; 16])>,
    /// TO: the TU has used its member key, so its join key is no longer used
    /// for answers.
    proven: bool,
    /// Not (or no longer) a member: forgotten then.
    until: Option<Instant>,
}

impl Peer {
    fn new(id: u32, kind: KeyKind) -> Peer {
        Peer { id, main: None, kind, join: None, proven: false, until: None }
    }
}

/// The keys of one node, and the scratch space to open packets in.
#[derive(Debug)]
pub(crate) struct Keyring {
    security: Security,
    is_owner: bool,
    /// This node's sender id (0 for the TO, its member id for a TU).
    me: u32,
    /// This node's salt and X25519 key pair (the TO's for the connection, a
    /// TU's for its join).
    share: Share,
    /// The connection, once known.
    conn_id: Option<u32>,
    /// The group key: the TO seals with it, TUs open with it.
    group: Option<Channel>,
    /// By exact address.
    peers: HashMap<SocketAddr, Peer>,
    /// TO: join salts seen, oldest first.
    salts: HashSet<[u8; 16]>,
    salt_order: VecDeque<[u8; 16]>,
    /// TU: group packets that came before the group key.
    stash: VecDeque<(SocketAddr, Vec<u8>)>,
    /// The group key came: the stash is due.
    stash_ready: bool,
    /// How long a departed member's or a joiner's keys are kept.
    linger: Duration,
}

impl Keyring {
    /// The TO's keys for connection `conn_id`; `extra` is mixed into the seed.
    pub(crate) fn owner(security: Security, conn_id: u32, extra: u64, linger: Duration) -> Keyring {
        let mut k = Keyring::new(security, true, TO, extra, linger);
        let key = crypto::group_key(security.key(), &k.share.public.salt, conn_id);
        k.group = Channel::new(&key);
        k.conn_id = Some(conn_id);
        k
    }

    /// A TU's keys for a join to the TO at `owner`.
    pub(crate) fn user(security: Security, owner: SocketAddr, extra: u64, linger: Duration) -> Keyring {
        let mut k = Keyring::new(security, false, NO_ID, extra, linger);
        let salt = k.share.public.salt;
        let mut p = Peer::new(TO, KeyKind::Member);
        p.join = Channel::new(&crypto::join_key(security.key(), &salt)).map(|c| (c, salt));
        k.peers.insert(owner, p);
        k
    }

    fn new(security: Security, is_owner: bool, me: u32, extra: u64, linger: Duration) -> Keyring {
        let mut entropy = Entropy::new(&security.seed(), extra);
        Keyring {
            share: Share::new(&mut entropy),
            security,
            is_owner,
            me,
            conn_id: None,
            group: None,
            peers: HashMap::new(),
            salts: HashSet::new(),
            salt_order: VecDeque::new(),
            stash: VecDeque::new(),
            stash_ready: false,
            linger,
        }
    }

    /// This node's key share, for the Key element of CCR, LJC and TJC (TO)
    /// or of LJR and TJR (TU).
    pub(crate) fn share(&self) -> KeyShare {
        self.share.public
    }

    // ----- what the roles tell it -----

    /// TU: the member id the TO gave it.
    pub(crate) fn set_me(&mut self, id: u32) {
        self.me = id;
    }

    /// TO: the joiner at `addr` is member `id`.
    pub(crate) fn set_member(&mut self, addr: SocketAddr, id: u32) {
        if let Some(p) = self.peers.get_mut(&addr) {
            p.id = id;
            p.until = None;
        }
    }

    /// The peer at `addr` is no member (any more): its keys are kept a while,
    /// to answer it, then forgotten.
    pub(crate) fn retire(&mut self, addr: SocketAddr, now: Instant) {
        if let Some(p) = self.peers.get_mut(&addr) {
            p.until = Some(now + self.linger);
        }
    }

    /// Forget the keys of peers retired long enough.
    pub(crate) fn expire(&mut self, now: Instant) {
        self.peers.retain(|_, p| p.until.is_none_or(|t| t > now));
    }

    /// TO: the link key of member `child` (at `addr`) under repair agent
    /// `parent`, for the agent's admission notice.
    pub(crate) fn link_for(&self, addr: SocketAddr, child: u32, parent: u32) -> Option<[u8; 32]> {
        let (_, member) = self.peers.get(&addr)?.main.as_ref()?;
        Some(crypto::link_key(member, self.conn_id?, child, parent))
    }

    /// TU: its parent is now repair agent `parent` at `addr`; the link key
    /// comes from this TU's own member key.
    pub(crate) fn link_parent(&mut self, owner: SocketAddr, addr: SocketAddr, parent: u32) {
        let Some(conn_id) = self.conn_id else { return };
        let Some((_, member)) = self.peers.get(&owner).and_then(|p| p.main.as_ref()) else { return };
        let key = crypto::link_key(member, conn_id, self.me, parent);
        let mut p = Peer::new(parent, KeyKind::Link);
        p.main = Channel::new(&key).map(|c| (c, key));
        self.peers.insert(addr, p);
    }

    /// Repair agent: the TO announced child `id` at `addr` with link key `key`.
    pub(crate) fn add_child(&mut self, addr: SocketAddr, id: u32, key: [u8; 32]) {
        if self.peers.get(&addr).is_some_and(|p| p.main.as_ref().is_some_and(|(_, k)| *k == key)) {
            return; // a resent notice: keep the counters
        }
        let mut p = Peer::new(id, KeyKind::Link);
        p.main = Channel::new(&key).map(|c| (c, key));
        self.peers.insert(addr, p);
    }

    /// TU: the group packets that came before the group key, now openable.
    pub(crate) fn take_stash(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        if !self.stash_ready {
            return Vec::new();
        }
        self.stash_ready = false;
        self.stash.drain(..).collect()
    }

    // ----- sealing -----

    /// The Authentication element for a packet of type `ty` to `dest`, and
    /// the key to seal it with; `None` if there is no key for `dest`.
    fn sealer(&mut self, dest: Dest, ty: PacketType) -> Option<(Auth, &Cipher)> {
        let (me, is_owner) = (self.me, self.is_owner);
        let (kind, ch) = match dest {
            Dest::Group => (KeyKind::Group, self.group.as_mut()?),
            Dest::Unicast(addr) => {
                let p = self.peers.get_mut(&addr)?;
                // The TO answers a join with the joiner's join key until the
                // member used its member key; a TU uses its join key until
                // it has the member key.
                let answer = matches!(ty, PacketType::Ljc | PacketType::Tjc) && !p.proven;
                let join = p.join.is_some() && if is_owner { answer } else { p.main.is_none() };
                if join {
                    (KeyKind::Join, p.join.as_mut().map(|(j, _)| j)?)
                } else {
                    (p.kind, p.main.as_mut().map(|(m, _)| m)?)
                }
            }
        };
        ch.sent += 1;
        let sender = if kind == KeyKind::Join && !is_owner { NO_ID } else { me };
        Some((Auth { kind, sender, counter: ch.sent, tag: [0; TAG_LEN] }, &ch.cipher))
    }

    /// Write `packet` to `dest` into `buf`, sealed: its Authentication
    /// element added, its user data encrypted. `None` if there is no key
    /// for `dest` (the packet is not sent).
    pub(crate) fn emit(&mut self, mut packet: Packet<'_>, dest: Dest, buf: &mut [u8]) -> Option<usize> {
        let Some((auth, cipher)) = self.sealer(dest, packet.header.packet_type) else {
            log::debug!("no key for {dest:?}: {:?} not sent", packet.header.packet_type);
            return None;
        };
        packet.elements.auth = Some(auth);
        let nonce = auth.nonce();
        match packet.emit_sealed(buf, |aad, data| cipher.seal(&nonce, aad, data)) {
            Ok(len) => Some(len),
            Err(e) => {
                log::error!("cannot emit {:?}: {e}", packet.header.packet_type);
                None
            }
        }
    }

    // ----- opening -----

    /// Open a received packet `p` (parsed from `datagram`, which came from
    /// `from`): verify its tag with the key its Authentication element
    /// names, check its counter is new, decrypt its user data into
    /// `scratch`. Returns the packet with the plaintext, or why it is dropped.
    /// A TU's group packet that comes before the group key is kept for later
    /// (`Err(Outcome::Taken)`: neither delivered nor dropped yet).
    pub(crate) fn open<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        p: &Packet<'_>,
        datagram: &'a [u8],
        scratch: &'a mut Vec<u8>,
    ) -> Result<Packet<'a>, Outcome> {
        let auth = p.elements.auth.ok_or(Outcome::Auth)?;
        // Each key only for the packets it is for: a member that has the
        // group key cannot pass a unicast packet off as the TO's multicast,
        // nor one that saw a join request anything but a join as the joiner's.
        let ty = p.header.packet_type;
        let fits = match auth.kind {
            KeyKind::Group => matches!(
                ty,
                PacketType::Ccr
                    | PacketType::Data
                    | PacketType::Ndata
                    | PacketType::Rdata
                    | PacketType::Hb
                    | PacketType::Ctr
            ),
            KeyKind::Join if self.is_owner => matches!(ty, PacketType::Ljr | PacketType::Tjr) && !p.header.flag,
            KeyKind::Join => matches!(ty, PacketType::Ljc | PacketType::Tjc),
            KeyKind::Member | KeyKind::Link => true,
        };
        if !fits {
            return Err(Outcome::Auth);
        }
        scratch.clear();
        scratch.extend_from_slice(datagram);
        let (aad, data) = wire::sealed_parts(scratch, p).ok_or(Outcome::Auth)?;
        let nonce = auth.nonce();
        let gk = self.security.key();
        match auth.kind {
            KeyKind::Group => {
                if self.is_owner || auth.sender != TO {
                    return Err(Outcome::Auth);
                }
                if self.group.is_none() {
                    // CCR carries the TO's share: the group key follows from its salt.
                    let Some(share) = p.elements.key.filter(|_| p.header.packet_type == PacketType::Ccr) else {
                        if self.stash.len() < MAX_STASH {
                            self.stash.push_back((from, datagram.to_vec()));
                        }
                        return Err(Outcome::Taken);
                    };
                    let ch = Channel::new(&crypto::group_key(gk, &share.salt, p.header.connection_id))
                        .ok_or(Outcome::Auth)?;
                    if !ch.cipher.open(&nonce, aad, data, &auth.tag) {
                        return Err(Outcome::Auth);
                    }
                    self.group = Some(ch);
                    self.conn_id = Some(p.header.connection_id);
                    return self.accept_group(auth, p, scratch);
                }
                let ch = self.group.as_mut().ok_or(Outcome::Auth)?;
                if !ch.window.is_fresh(auth.counter) {
                    return Err(Outcome::Replay);
                }
                if !ch.cipher.open(&nonce, aad, data, &auth.tag) {
                    return Err(Outcome::Auth);
                }
                ch.window.accept(auth.counter);
            }
            KeyKind::Join if self.is_owner => {
                let share = p.elements.key.ok_or(Outcome::Auth)?;
                if auth.sender != NO_ID {
                    return Err(Outcome::Auth);
                }
                let known = self.peers.get(&from).and_then(|q| q.join.as_ref()).is_some_and(|(_, s)| *s == share.salt);
                if known {
                    let Some((ch, _)) = self.peers.get_mut(&from).and_then(|q| q.join.as_mut()) else {
                        return Err(Outcome::Auth);
                    };
                    open_on(ch, &auth, &nonce, aad, data)?;
                } else {
                    if self.salts.contains(&share.salt) {
                        return Err(Outcome::Replay);
                    }
                    // A member's keys are not replaced by another join from its address.
                    if self.peers.get(&from).is_some_and(|q| q.until.is_none() && q.id != NO_ID) {
                        return Err(Outcome::Unexpected);
                    }
                    let mut ch = Channel::new(&crypto::join_key(gk, &share.salt)).ok_or(Outcome::Auth)?;
                    open_on(&mut ch, &auth, &nonce, aad, data)?;
                    // Authentic: now, and only now, the key agreement.
                    let conn_id = self.conn_id.ok_or(Outcome::Auth)?;
                    let shared = self.share.agree(&share.public).ok_or(Outcome::Auth)?;
                    let member = crypto::member_key(&shared, gk, &share.salt, &self.share.public.salt, conn_id);
                    self.make_room(now)?;
                    self.remember_salt(share.salt);
                    let mut q = Peer::new(NO_ID, KeyKind::Member);
                    q.main = Channel::new(&member).map(|c| (c, member));
                    q.join = Some((ch, share.salt));
                    q.until = Some(now + self.linger);
                    self.peers.insert(from, q);
                }
            }
            KeyKind::Join => {
                let q = self.peers.get_mut(&from).ok_or(Outcome::Auth)?;
                if auth.sender != TO {
                    return Err(Outcome::Auth);
                }
                let (ch, salt) = q.join.as_mut().ok_or(Outcome::Auth)?;
                let salt = *salt;
                open_on(ch, &auth, &nonce, aad, data)?;
                // The TO's answer carries its share: the member key and the group key.
                if q.main.is_none()
                    && let Some(share) = p.elements.key
                {
                    let conn_id = p.header.connection_id;
                    let shared = self.share.agree(&share.public).ok_or(Outcome::Auth)?;
                    let member = crypto::member_key(&shared, gk, &salt, &share.salt, conn_id);
                    q.main = Channel::new(&member).map(|c| (c, member));
                    if self.group.is_none() {
                        self.group = Channel::new(&crypto::group_key(gk, &share.salt, conn_id));
                    }
                    self.conn_id = Some(conn_id);
                    self.stash_ready = !self.stash.is_empty();
                }
            }
            KeyKind::Member | KeyKind::Link => {
                let q = self.peers.get_mut(&from).ok_or(Outcome::Auth)?;
                if q.kind != auth.kind || auth.sender != q.id || q.id == NO_ID {
                    return Err(Outcome::Auth);
                }
                let (ch, _) = q.main.as_mut().ok_or(Outcome::Auth)?;
                open_on(ch, &auth, &nonce, aad, data)?;
                q.proven = true;
            }
        }
        let data = scratch.get(wire::HEADER_LEN + p.elements.len()..).unwrap_or_default();
        Ok(Packet { header: p.header, elements: p.elements, data })
    }

    fn accept_group<'a>(&mut self, auth: Auth, p: &Packet<'_>, scratch: &'a [u8]) -> Result<Packet<'a>, Outcome> {
        if let Some(ch) = self.group.as_mut() {
            ch.window.accept(auth.counter);
        }
        self.stash_ready = !self.stash.is_empty();
        let data = scratch.get(wire::HEADER_LEN + p.elements.len()..).unwrap_or_default();
        Ok(Packet { header: p.header, elements: p.elements, data })
    }

    /// Room for one more key of a non-member.
    fn make_room(&mut self, now: Instant) -> Result<(), Outcome> {
        let strangers = |k: &Keyring| k.peers.values().filter(|p| p.until.is_some()).count();
        if strangers(self) >= MAX_STRANGERS {
            self.expire(now);
            if strangers(self) >= MAX_STRANGERS {
                return Err(Outcome::Unexpected);
            }
        }
        Ok(())
    }

    fn remember_salt(&mut self, salt: [u8; 16]) {
        if self.salt_order.len() >= MAX_SALTS
            && let Some(old) = self.salt_order.pop_front()
        {
            self.salts.remove(&old);
        }
        self.salts.insert(salt);
        self.salt_order.push_back(salt);
    }
}

/// Check the counter, verify and decrypt, then record the counter.
fn open_on(ch: &mut Channel, auth: &Auth, nonce: &[u8; 12], aad: &[u8], data: &mut [u8]) -> Result<(), Outcome> {
    if !ch.window.is_fresh(auth.counter) {
        return Err(Outcome::Replay);
    }
    if !ch.cipher.open(nonce, aad, data, &auth.tag) {
        return Err(Outcome::Auth);
    }
    ch.window.accept(auth.counter);
    Ok(())
}
