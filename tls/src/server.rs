//! The server role: one event loop (mio, edge-triggered) for every
//! connection, no thread per connection: accepting, non-blocking TLS
//! handshakes, the table of resilient connections by token, reconnect
//! validation, and the handoff of a validated new TCP connection to the
//! connection it continues (paper §5.2), which commits.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, TcpListener};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};
use openssl::ssl::{Ssl, SslContext, SslVersion};

use crate::core::Core;
use crate::ctx::{self, Identity};
use crate::engine::{ResumeRead, Tls};
use crate::frame::{self, MAC_LEN};
use crate::pump::{Events, Local, Plain, Pump, Resilient, Side, Step};
use crate::secret::{self, Answer, Role, Secret, LEN};

/// Nonces remembered per connection (across its secrets), to refuse a
/// replayed ClientHello before any further work. Older replays fail later:
/// they cannot finish the handshake.
const NONCES: usize = 256;
/// Longest a handshake (and, for a reconnect, the RESUME) may take.
const HANDSHAKE_TIME: Duration = Duration::from_secs(10);

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How long a connection whose TCP connection broke waits for its client.
    pub detach_timeout: Duration,
    /// Most unacknowledged bytes kept per connection.
    pub buffer: usize,
    /// Most TLS handshakes in progress at once (sshd's MaxStartups, without
    /// its random early drop): a connection beyond them is closed at once,
    /// so that a flood of slow handshakes cannot take every thread and
    /// descriptor.
    pub max_startups: usize,
    /// Most bytes waiting for one destination of a connection (its local
    /// stream, or TCP to its client) before the server stops reading what
    /// feeds it.
    pub queue: usize,
    /// Most connections served at once, attached or detached (handshakes
    /// count in `max_startups` instead; a reconnect is not a new one).
    pub max_connections: usize,
    /// Most connections detached at once: one that breaks beyond them ends.
    pub max_detached: usize,
    /// Most connections served at once whose first TCP connection came
    /// from one IP address.
    pub max_per_source: usize,
    /// Lifetime of the session tickets a reconnect resumes with (at most 7
    /// days). A TLS 1.3 connection is sent a fresh one every half lifetime
    /// while attached; a TLS 1.2 one can reconnect only within this long
    /// after its last (re)connect.
    pub ticket_lifetime: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            detach_timeout: Duration::from_secs(3600),
            buffer: 8 << 20,
            max_startups: 64,
            queue: 1 << 20,
            max_connections: 10_000,
            max_detached: 1_000,
            max_per_source: 100,
            ticket_lifetime: ctx::MAX_TICKET_LIFETIME,
        }
    }
}

/// Connections served, detached, and by source address, against the caps.
#[derive(Default)]
struct Counts {
    served: usize,
    detached: usize,
    by_source: HashMap<IpAddr, usize>,
}

struct Limits {
    counts: Mutex<Counts>,
    max_connections: usize,
    max_detached: usize,
    max_per_source: usize,
}

impl Limits {
    /// Takes a place for a new connection from `ip`, or says which cap is
    /// reached.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Served, String> {
        let mut c = lock(&self.counts);
        if c.served >= self.max_connections {
            return Err(format!(
                "refused: {} connections already (max connections)",
                c.served
            ));
        }
        let from = c.by_source.entry(ip).or_default();
        if *from >= self.max_per_source {
            return Err(format!(
                "refused: {} connections from {ip} already (max per source)",
                *from
            ));
        }
        *from += 1;
        c.served += 1;
        Ok(Served(self.clone(), ip))
    }

    /// Takes a place for a connection that just broke, or says the cap is
    /// reached (the connection then ends).
    fn detach(self: &Arc<Self>) -> Result<Detached, String> {
        let mut c = lock(&self.counts);
        if c.detached >= self.max_detached {
            return Err(format!(
                "ended: {} connections detached already (max detached)",
                c.detached
            ));
        }
        c.detached += 1;
        Ok(Detached(self.clone()))
    }
}

/// A connection's place in [`Limits`], given back on drop.
struct Served(Arc<Limits>, IpAddr);

impl Drop for Served {
    fn drop(&mut self) {
        let mut c = lock(&self.0.counts);
        c.served -= 1;
        if let Some(n) = c.by_source.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                c.by_source.remove(&self.1);
            }
        }
    }
}

/// A detached connection's place in [`Limits`], given back on drop.
struct Detached(Arc<Limits>);

impl Drop for Detached {
    fn drop(&mut self) {
        lock(&self.0.counts).detached -= 1;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The secrets that a reconnect may name: the current one, and the one
/// before the last reconnect (its client may not have seen our RESUME).
struct Auth {
    cur: Secret,
    prev: Option<Secret>,
    nonces: VecDeque<[u8; LEN]>,
}

impl Auth {
    fn secrets(&self) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.cur).chain(self.prev.as_ref())
    }
}

/// A validated new TCP connection on its way to its owner.
struct Handoff {
    tls: Tls,
    count: u64,
    mac: [u8; MAC_LEN],
}

/// One resilient connection, as the table sees it.
pub struct Entry {
    auth: Mutex<Auth>,
    /// The event loop's slot of the connection.
    owner: usize,
}

/// Resilient connections by current (and previous) token.
#[derive(Default)]
pub struct Table {
    map: Mutex<HashMap<[u8; LEN], Arc<Entry>>>,
}

impl Table {
    /// Checks a reconnect's ClientHello: known token, MAC, fresh nonce.
    /// Touches nothing of the connection but its nonce memory.
    pub(crate) fn check(
        &self,
        token: &[u8; LEN],
        nonce: &[u8; LEN],
        mac: &[u8; LEN],
    ) -> Result<Arc<Entry>, Answer> {
        let entry = lock(&self.map).get(token).cloned().ok_or(Answer::Unknown)?;
        let mut auth = lock(&entry.auth);
        let ok = auth
            .secrets()
            .any(|s| s.token() == *token && secret::mac_eq(mac, &s.hello_mac(token, nonce)));
        if !ok || auth.nonces.contains(nonce) {
            return Err(Answer::Refused);
        }
        if auth.nonces.len() == NONCES {
            auth.nonces.pop_front();
        }
        auth.nonces.push_back(*nonce);
        drop(auth);
        Ok(entry)
    }

    fn insert(&self, token: [u8; LEN], e: &Arc<Entry>) {
        lock(&self.map).insert(token, e.clone());
    }

    fn remove(&self, token: &[u8; LEN]) {
        lock(&self.map).remove(token);
    }
}

/// A restls server: one context, table and set of caps for every
/// connection, served by [`Server::run`].
pub struct Server {
    ctx: SslContext,
    /// The certificate and key new connections get ([`Server::reload`]).
    identity: RwLock<Arc<Identity>>,
    table: Arc<Table>,
    config: ServerConfig,
    limits: Arc<Limits>,
}

/// A connection in the event loop, by what it is doing.
enum State {
    /// The TLS handshake (counts in max startups).
    Handshake { tls: Tls, deadline: Instant },
    /// A reconnect whose ClientHello passed the checks, reading the
    /// client's RESUME (counts in max startups).
    Resume {
        tls: Tls,
        entry: Arc<Entry>,
        deadline: Instant,
    },
    Plain {
        pump: Plain,
        local: Box<dyn Local>,
        _served: Served,
    },
    Resilient {
        pump: Box<Pump>,
        side: Box<ServerSide>,
        local: Box<dyn Local>,
        _served: Served,
    },
    /// Ending, or handed over (never seen by the loop between steps but
    /// in a removed connection).
    Done,
}

struct Conn {
    events: Arc<dyn Events>,
    state: State,
    /// When it must be stepped at the latest (in the loop's timers).
    deadline: Option<Instant>,
    /// In the loop's queue of connections to step.
    queued: bool,
}

impl Conn {
    fn in_startup(&self) -> bool {
        matches!(self.state, State::Handshake { .. } | State::Resume { .. })
    }

    /// Notes readiness of its TCP connection (`local` false) or local stream.
    fn mark(&mut self, local: bool, read: bool, write: bool) {
        let flags = match (&mut self.state, local) {
            (State::Handshake { tls, .. } | State::Resume { tls, .. }, false) => {
                Some((&mut tls.readable, &mut tls.writable))
            }
            (State::Plain { pump, .. }, false) => {
                Some((&mut pump.c.readable, &mut pump.c.writable))
            }
            (State::Plain { pump, .. }, true) => {
                Some((&mut pump.local.readable, &mut pump.local.writable))
            }
            (State::Resilient { pump, .. }, false) => pump
                .r
                .conn
                .as_mut()
                .map(|c| (&mut c.readable, &mut c.writable)),
            (State::Resilient { pump, .. }, true) => {
                Some((&mut pump.local.readable, &mut pump.local.writable))
            }
            _ => None,
        };
        if let Some((r, w)) = flags {
            *r |= read;
            *w |= write;
        }
    }
}

/// What stepping a connection came to.
enum Outcome {
    Again,
    Wait(Option<Instant>),
    /// It ended: None cleanly, else why.
    End(Option<String>),
    /// A reconnect for the connection in slot `owner`.
    Handoff(Arc<Entry>, Handoff),
}

fn tcp_token(slot: usize) -> Token {
    Token(slot << 1)
}

fn local_token(slot: usize) -> Token {
    Token(slot << 1 | 1)
}

const LISTENER: Token = Token(usize::MAX);
/// The descriptor [`Server::run`]'s caller controls it by.
const CONTROL: Token = Token(usize::MAX - 1);
/// Most connections accepted in one turn of the loop (the others wait
/// for the next turn, after the connections ready now were served).
const ACCEPT_BATCH: usize = 256;
/// After an accept error (out of descriptors), try again after this.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Raises the soft limit on descriptors to the hard one: a connection
/// takes two (TLS and the local stream).
#[allow(unsafe_code)] // getrlimit/setrlimit (tls does not depend on nix)
fn raise_nofile() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit for the calls to fill and read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// The event loop's connections by slot, and which to step.
#[derive(Default)]
struct Slots {
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    timers: BTreeSet<(Instant, usize)>,
    ready: VecDeque<usize>,
    startups: usize,
}

impl Slots {
    fn insert(&mut self, c: Conn) -> usize {
        if c.in_startup() {
            self.startups += 1;
        }
        match self.free.pop() {
            Some(i) => {
                self.conns[i] = Some(c);
                i
            }
            None => {
                self.conns.push(Some(c));
                self.conns.len() - 1
            }
        }
    }

    fn remove(&mut self, slot: usize) -> Option<Conn> {
        let c = self.conns.get_mut(slot)?.take()?;
        if let Some(d) = c.deadline {
            self.timers.remove(&(d, slot));
        }
        if c.in_startup() {
            self.startups -= 1;
        }
        self.free.push(slot);
        Some(c)
    }

    fn queue(&mut self, slot: usize) {
        if let Some(Some(c)) = self.conns.get_mut(slot) {
            if !c.queued {
                c.queued = true;
                self.ready.push_back(slot);
            }
        }
    }

    fn set_deadline(&mut self, slot: usize, d: Option<Instant>) {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        if c.deadline == d {
            return;
        }
        if let Some(old) = c.deadline {
            self.timers.remove(&(old, slot));
        }
        c.deadline = d;
        if let Some(d) = d {
            self.timers.insert((d, slot));
        }
    }
}

impl Server {
    /// `cert`: the PEM certificate chain, the server's first; `key`: its
    /// PEM private key.
    pub fn new(
        cert: &std::path::Path,
        key: &std::path::Path,
        config: ServerConfig,
    ) -> Result<Server, String> {
        let identity = Identity::load(cert, key)?;
        let table = Arc::new(Table::default());
        let ctx = ctx::server_context(table.clone(), config.ticket_lifetime)
            .map_err(|e| e.to_string())?;
        let limits = Arc::new(Limits {
            counts: Mutex::default(),
            max_connections: config.max_connections,
            max_detached: config.max_detached,
            max_per_source: config.max_per_source,
        });
        Ok(Server {
            ctx,
            identity: RwLock::new(Arc::new(identity)),
            table,
            config,
            limits,
        })
    }

    /// Loads a new certificate chain and key for the connections accepted
    /// from now on; connections made before keep theirs, and reconnect as
    /// before (the session ticket keys do not change). On an error nothing
    /// changes.
    pub fn reload(&self, cert: &std::path::Path, key: &std::path::Path) -> Result<(), String> {
        let identity = Arc::new(Identity::load(cert, key)?);
        *self.identity.write().unwrap_or_else(|p| p.into_inner()) = identity;
        Ok(())
    }

    /// Serves every connection `listener` accepts, on the calling thread,
    /// until `on_control` says stop: a new connection is relayed to the
    /// local stream `open_local` makes (it must not block: a non-blocking
    /// connect), a reconnect is validated and handed to its connection.
    /// `events_for` gives each accepted TCP connection, numbered from 0, its
    /// [`Events`].
    /// When `control` becomes readable (a signal's self-pipe, say),
    /// `on_control` runs in the loop; it must read `control` until it would
    /// block (the loop is edge-triggered). When it returns false, `run`
    /// returns, closing every connection. Raises the soft limit on
    /// descriptors to the hard one.
    pub fn run<L: Local + 'static>(
        &self,
        listener: TcpListener,
        control: BorrowedFd<'_>,
        mut on_control: impl FnMut() -> bool,
        mut open_local: impl FnMut() -> io::Result<L>,
        mut events_for: impl FnMut(u64) -> Arc<dyn Events>,
    ) -> io::Result<()> {
        raise_nofile();
        listener.set_nonblocking(true)?;
        let mut poll = Poll::new()?;
        poll.registry().register(
            &mut SourceFd(&listener.as_raw_fd()),
            LISTENER,
            Interest::READABLE,
        )?;
        poll.registry().register(
            &mut SourceFd(&control.as_raw_fd()),
            CONTROL,
            Interest::READABLE,
        )?;
        let mut slots = Slots::default();
        let mut evs = mio::Events::with_capacity(1024);
        let mut next_id = 0u64;
        let mut accept_at = Some(Instant::now());
        loop {
            let now = Instant::now();
            let wake = [slots.timers.first().map(|t| t.0), accept_at]
                .into_iter()
                .flatten()
                .min();
            let timeout = if slots.ready.is_empty() {
                wake.map(|w| w.saturating_duration_since(now))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = poll.poll(&mut evs, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            for ev in evs.iter() {
                if ev.token() == LISTENER {
                    accept_at = Some(Instant::now());
                    continue;
                }
                if ev.token() == CONTROL {
                    if !on_control() {
                        return Ok(());
                    }
                    continue;
                }
                let (slot, local) = (ev.token().0 >> 1, ev.token().0 & 1 == 1);
                if let Some(Some(c)) = slots.conns.get_mut(slot) {
                    let gone = ev.is_error() || ev.is_read_closed();
                    c.mark(local, ev.is_readable() || gone, ev.is_writable() || gone);
                    slots.queue(slot);
                }
            }
            let now = Instant::now();
            while let Some(&(t, slot)) = slots.timers.first() {
                if t > now {
                    break;
                }
                slots.timers.pop_first();
                if let Some(Some(c)) = slots.conns.get_mut(slot) {
                    c.deadline = None;
                }
                slots.queue(slot);
            }
            if accept_at.is_some_and(|t| t <= now) {
                accept_at =
                    self.accept(&listener, &poll, &mut slots, &mut next_id, &mut events_for);
            }
            let round = std::mem::take(&mut slots.ready);
            for slot in round {
                self.step(slot, &poll, &mut slots, &mut open_local);
            }
        }
    }

    /// Accepts what waits, up to a batch; returns when to accept again.
    fn accept(
        &self,
        listener: &TcpListener,
        poll: &Poll,
        slots: &mut Slots,
        next_id: &mut u64,
        events_for: &mut impl FnMut(u64) -> Arc<dyn Events>,
    ) -> Option<Instant> {
        for _ in 0..ACCEPT_BATCH {
            let tcp = match listener.accept() {
                Ok((tcp, _)) => tcp,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    events_for(*next_id).closed(Some(&format!("accept: {e}")));
                    *next_id += 1;
                    return Some(Instant::now() + ACCEPT_RETRY);
                }
            };
            let events = events_for(*next_id);
            *next_id += 1;
            if slots.startups >= self.config.max_startups {
                events.closed(Some(&format!(
                    "refused: {} TLS handshakes in progress already (max startups)",
                    self.config.max_startups
                )));
                continue;
            }
            let identity = self
                .identity
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let tls = tcp.set_nonblocking(true).and_then(|()| {
                let mut ssl = Ssl::new(&self.ctx).map_err(io::Error::other)?;
                identity.apply(&mut ssl).map_err(io::Error::other)?;
                ssl.set_accept_state();
                Tls::new(ssl, tcp)
            });
            let tls = match tls {
                Ok(t) => t,
                Err(e) => {
                    events.closed(Some(&e.to_string()));
                    continue;
                }
            };
            let fd = tls.tcp.as_raw_fd();
            let slot = slots.insert(Conn {
                events,
                state: State::Handshake {
                    tls,
                    deadline: Instant::now() + HANDSHAKE_TIME,
                },
                deadline: None,
                queued: false,
            });
            let both = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = poll
                .registry()
                .register(&mut SourceFd(&fd), tcp_token(slot), both)
            {
                if let Some(c) = slots.remove(slot) {
                    c.events.closed(Some(&format!("epoll: {e}")));
                }
                continue;
            }
            slots.queue(slot);
        }
        Some(Instant::now())
    }

    /// Steps the connection in `slot` and acts on the outcome.
    fn step<L: Local + 'static>(
        &self,
        slot: usize,
        poll: &Poll,
        slots: &mut Slots,
        open_local: &mut impl FnMut() -> io::Result<L>,
    ) {
        let Some(Some(c)) = slots.conns.get_mut(slot) else {
            return;
        };
        c.queued = false;
        let was_startup = c.in_startup();
        let now = Instant::now();
        let state = std::mem::replace(&mut c.state, State::Done);
        let (state, outcome) = self.advance(slot, state, &c.events, poll, open_local, now);
        c.state = state;
        if was_startup && !c.in_startup() {
            slots.startups -= 1;
        }
        match outcome {
            Outcome::Again => {
                slots.set_deadline(slot, None);
                slots.queue(slot);
            }
            Outcome::Wait(d) => slots.set_deadline(slot, d),
            Outcome::End(why) => {
                if let Some(c) = slots.remove(slot) {
                    c.events.closed(why.as_deref());
                }
            }
            Outcome::Handoff(entry, h) => {
                let removed = slots.remove(slot);
                let owner = entry.owner;
                let taker = match slots.conns.get_mut(owner) {
                    Some(Some(Conn {
                        state: State::Resilient { side, .. },
                        ..
                    })) if Arc::ptr_eq(&side.entry, &entry) => Some(side),
                    _ => None,
                };
                let fd = h.tls.tcp.as_raw_fd();
                let both = Interest::READABLE | Interest::WRITABLE;
                let moved = poll
                    .registry()
                    .reregister(&mut SourceFd(&fd), tcp_token(owner), both);
                let why = match (taker, moved) {
                    (Some(side), Ok(())) => {
                        side.handoff = Some(h);
                        slots.queue(owner);
                        None
                    }
                    (None, _) => {
                        h.tls.close();
                        Some("reconnect refused: the connection just ended".to_string())
                    }
                    (Some(_), Err(e)) => Some(format!("epoll: {e}")),
                };
                if let Some(c) = removed {
                    c.events.closed(why.as_deref());
                }
            }
        }
    }

    /// Steps one connection: its next state, and what the loop does next.
    fn advance<L: Local + 'static>(
        &self,
        slot: usize,
        state: State,
        events: &Arc<dyn Events>,
        poll: &Poll,
        open_local: &mut impl FnMut() -> io::Result<L>,
        now: Instant,
    ) -> (State, Outcome) {
        match state {
            State::Handshake { mut tls, deadline } => {
                match tls.handshake_step() {
                    Ok(true) => {}
                    Ok(false) if now < deadline => {
                        return (
                            State::Handshake { tls, deadline },
                            Outcome::Wait(Some(deadline)),
                        )
                    }
                    r => {
                        let e = r
                            .err()
                            .map_or("TLS handshake: timed out".into(), |e| e.to_string());
                        let why = match ctx::answer(tls.ssl.ssl()) {
                            Some(a @ (Answer::Unknown | Answer::Refused)) => {
                                format!("reconnect refused: {a:?} ({e})")
                            }
                            _ => e,
                        };
                        return (State::Done, Outcome::End(Some(why)));
                    }
                }
                match self.handshaken(slot, tls, deadline, events, poll, open_local) {
                    Ok(state) => (state, Outcome::Again),
                    Err(e) => (State::Done, Outcome::End(Some(e))),
                }
            }
            State::Resume {
                mut tls,
                entry,
                deadline,
            } => match tls.resume_step() {
                Ok(ResumeRead::Got(count, mac)) => (
                    State::Done,
                    Outcome::Handoff(entry, Handoff { tls, count, mac }),
                ),
                Ok(ResumeRead::Pending) if now < deadline => (
                    State::Resume {
                        tls,
                        entry,
                        deadline,
                    },
                    Outcome::Wait(Some(deadline)),
                ),
                Ok(ResumeRead::Pending) => (
                    State::Done,
                    Outcome::End(Some("reconnect: timed out".into())),
                ),
                Ok(ResumeRead::Bad) => {
                    tls.close();
                    (
                        State::Done,
                        Outcome::End(Some("reconnect refused: no RESUME".into())),
                    )
                }
                Err(e) => (State::Done, Outcome::End(Some(format!("reconnect: {e}")))),
            },
            State::Plain {
                mut pump,
                mut local,
                _served,
            } => {
                let o = match pump.step(&mut *local) {
                    Step::Again => Outcome::Again,
                    Step::Wait(d) => Outcome::Wait(d),
                    Step::Ended(r) => Outcome::End(r.err()),
                };
                (
                    State::Plain {
                        pump,
                        local,
                        _served,
                    },
                    o,
                )
            }
            State::Resilient {
                mut pump,
                mut side,
                mut local,
                _served,
            } => {
                let o = match pump.step(&mut *local, &mut *side, false, now) {
                    Step::Again => Outcome::Again,
                    Step::Wait(d) => Outcome::Wait(d),
                    Step::Ended(r) => Outcome::End(r.err()),
                };
                (
                    State::Resilient {
                        pump,
                        side,
                        local,
                        _served,
                    },
                    o,
                )
            }
            State::Done => (State::Done, Outcome::End(None)),
        }
    }

    /// What a connection becomes once its handshake completed.
    fn handshaken<L: Local + 'static>(
        &self,
        slot: usize,
        tls: Tls,
        deadline: Instant,
        events: &Arc<dyn Events>,
        poll: &Poll,
        open_local: &mut impl FnMut() -> io::Result<L>,
    ) -> Result<State, String> {
        let answer = ctx::answer(tls.ssl.ssl());
        if answer.is_some() && !ctx::secure_version(tls.ssl.ssl()) {
            tls.close();
            return Err(
                "refused: TLS 1.2 without extended master secret (RFC 7627) for a resilient \
                 connection"
                    .into(),
            );
        }
        let new = match answer {
            None | Some(Answer::New) => true,
            Some(Answer::Accepted) => false,
            Some(a) => {
                tls.close();
                return Err(format!("reconnect refused: {a:?}"));
            }
        };
        if !new {
            let entry = ctx::entry(tls.ssl.ssl()).ok_or("reconnect without entry")?;
            if !tls.ssl.ssl().session_reused() {
                tls.close();
                return Err("reconnect refused: no valid resumption".into());
            }
            return Ok(State::Resume {
                tls,
                entry,
                deadline,
            });
        }
        let served = match self.limits.admit(tls.peer.ip()) {
            Ok(s) => s,
            Err(e) => {
                tls.close();
                return Err(e);
            }
        };
        events.established(tls.ssl.ssl().version_str(), answer.is_some());
        let local = match open_local() {
            Ok(l) => l,
            Err(e) => {
                tls.close();
                return Err(format!("forward: {e}"));
            }
        };
        let fd = local.as_raw_fd();
        let both = Interest::READABLE | Interest::WRITABLE;
        poll.registry()
            .register(&mut SourceFd(&fd), local_token(slot), both)
            .map_err(|e| format!("epoll: {e}"))?;
        let local: Box<dyn Local> = Box::new(local);
        if answer.is_none() {
            return Ok(State::Plain {
                pump: Plain::new(tls, self.config.queue),
                local,
                _served: served,
            });
        }
        let secret = Secret::initial(tls.ssl.ssl()).map_err(|e| e.to_string())?;
        let token = secret.token();
        let entry = Arc::new(Entry {
            auth: Mutex::new(Auth {
                cur: secret,
                prev: None,
                nonces: VecDeque::new(),
            }),
            owner: slot,
        });
        self.table.insert(token, &entry);
        let lifetime = self.config.ticket_lifetime;
        let side = ServerSide {
            table: self.table.clone(),
            entry,
            detach: self.config.detach_timeout,
            detached_since: None,
            limits: self.limits.clone(),
            detached: None,
            ticket_every: lifetime / 2,
            ticket_due: Instant::now() + lifetime / 2,
            handoff: None,
        };
        let core = Core::new(self.config.buffer);
        let r = Resilient::new(core, tls, events.clone(), self.config.queue);
        Ok(State::Resilient {
            pump: Box::new(Pump::new(r)),
            side: Box::new(side),
            local,
            _served: served,
        })
    }
}

struct ServerSide {
    table: Arc<Table>,
    entry: Arc<Entry>,
    detach: Duration,
    detached_since: Option<Instant>,
    limits: Arc<Limits>,
    /// Our place among the detached connections, while detached.
    detached: Option<Detached>,
    /// How often, and when next, a live TLS 1.3 connection gets a fresh
    /// session ticket.
    ticket_every: Duration,
    ticket_due: Instant,
    /// A reconnect that passed its checks, for [`Side::act`] to commit.
    handoff: Option<Handoff>,
}

impl ServerSide {
    /// Verifies a handed-over connection's RESUME and switches to it; a bad
    /// one is dropped and changes nothing.
    fn commit(&mut self, r: &mut Resilient, h: Handoff, now: Instant) -> Result<(), String> {
        let Ok(e) = secret::resume_binding(h.tls.ssl.ssl()) else {
            return Ok(());
        };
        let mut auth = lock(&self.entry.auth);
        let Some(used) = auth
            .secrets()
            .find(|s| secret::mac_eq(&h.mac, &s.resume_mac(Role::Client, &e, h.count)))
            .cloned()
        else {
            return Ok(());
        };
        let r_s = r.core.recv_count();
        let mut frames = Vec::new();
        frame::put_resume(&mut frames, r_s, &used.resume_mac(Role::Server, &e, r_s));
        if r.core.resume(h.count, r_s, &mut frames).is_err() {
            // Authenticated but inconsistent: refuse this attempt only.
            return Ok(());
        }
        let next = used.ratchet(&e);
        let old: Vec<[u8; LEN]> = auth.secrets().map(Secret::token).collect();
        let keep = [used.token(), next.token()];
        auth.cur = next;
        auth.prev = Some(used);
        drop(auth);
        for t in old.iter().filter(|t| !keep.contains(t)) {
            self.table.remove(t);
        }
        self.table.insert(keep[1], &self.entry);
        self.detached_since = None;
        self.detached = None;
        r.switch(h.tls, frames, now)
    }
}

impl Side for ServerSide {
    fn extra_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    fn deadline(&self, r: &Resilient) -> Option<Instant> {
        match self.detached_since {
            Some(t) => Some(t + self.detach),
            None => r.conn.as_ref().map(|_| self.ticket_due),
        }
    }

    fn act(
        &mut self,
        r: &mut Resilient,
        _extra_ready: bool,
        now: Instant,
    ) -> Result<Option<String>, String> {
        if let Some(h) = self.handoff.take() {
            self.commit(r, h, now)?;
        }
        if let Some(c) = r.conn.as_mut().filter(|_| now >= self.ticket_due) {
            self.ticket_due = now + self.ticket_every;
            if c.ssl.ssl().version2() == Some(SslVersion::TLS1_3) && !ctx::new_ticket(&mut c.ssl) {
                return Ok(Some("could not issue a session ticket".into()));
            }
        }
        match self.detached_since {
            Some(t) if now >= t + self.detach => Err("detach timeout".into()),
            _ => Ok(None),
        }
    }

    fn broken(&mut self, _r: &mut Resilient, _why: &str, now: Instant) -> Result<(), String> {
        if self.detached.is_none() {
            self.detached = Some(self.limits.detach()?);
        }
        self.detached_since = Some(now);
        Ok(())
    }

    fn ended(&mut self) {
        let auth = lock(&self.entry.auth);
        for t in auth.secrets().map(Secret::token) {
            self.table.remove(&t);
        }
    }
}
