//! The server role: accepting connections, the table of resilient
//! connections by token, reconnect validation and the handoff of a validated
//! new connection to the thread that owns the old one (paper §5.2).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use openssl::ssl::{Ssl, SslContext, SslVersion};

use crate::core::Core;
use crate::ctx;
use crate::engine::Tls;
use crate::frame::{self, MAC_LEN};
use crate::pump::{self, Events, Local, Resilient, Side};
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

/// One handshake in progress, counted in [`Server::startups`] until dropped.
struct Startup<'a>(&'a AtomicUsize);

impl Drop for Startup<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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
pub struct Handoff {
    tls: Tls,
    count: u64,
    mac: [u8; MAC_LEN],
}

/// One resilient connection, as the table sees it.
pub struct Entry {
    auth: Mutex<Auth>,
    handoff: Sender<Handoff>,
    wake: UnixStream,
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

/// A restls server: one context and table shared by every connection.
pub struct Server {
    ctx: SslContext,
    table: Arc<Table>,
    config: ServerConfig,
    /// Handshakes in progress.
    startups: AtomicUsize,
    limits: Arc<Limits>,
}

impl Server {
    pub fn new(
        cert: &std::path::Path,
        key: &std::path::Path,
        config: ServerConfig,
    ) -> Result<Server, openssl::error::ErrorStack> {
        let table = Arc::new(Table::default());
        let ctx = ctx::server_context(cert, key, table.clone(), config.ticket_lifetime)?;
        let limits = Arc::new(Limits {
            counts: Mutex::default(),
            max_connections: config.max_connections,
            max_detached: config.max_detached,
            max_per_source: config.max_per_source,
        });
        Ok(Server {
            ctx,
            table,
            config,
            startups: AtomicUsize::new(0),
            limits,
        })
    }

    /// Serves one accepted TCP connection on the calling thread: a new
    /// connection is relayed to the local stream `open_local` makes, until it
    /// ends; a reconnect is validated and handed to its owner.
    pub fn serve<L: Local>(
        &self,
        tcp: TcpStream,
        open_local: impl FnOnce() -> io::Result<L>,
        events: &dyn Events,
    ) -> Result<(), String> {
        let startup = Startup(&self.startups);
        if self.startups.fetch_add(1, Ordering::SeqCst) >= self.config.max_startups {
            return Err(format!(
                "refused: {} TLS handshakes in progress already (max startups)",
                self.config.max_startups
            ));
        }
        let mut ssl = Ssl::new(&self.ctx).map_err(|e| e.to_string())?;
        ssl.set_accept_state();
        let mut tls = Tls::new(ssl, tcp).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + HANDSHAKE_TIME;
        let handshake = tls.handshake(deadline);
        drop(startup);
        let answer = ctx::answer(tls.ssl.ssl());
        if let Err(e) = handshake {
            return Err(match answer {
                Some(a @ (Answer::Unknown | Answer::Refused)) => {
                    format!("reconnect refused: {a:?} ({e})")
                }
                _ => e.to_string(),
            });
        }
        if answer.is_some() && !ctx::secure_version(tls.ssl.ssl()) {
            tls.close();
            return Err(
                "refused: TLS 1.2 without extended master secret (RFC 7627) for a resilient \
                 connection"
                    .into(),
            );
        }
        let version = tls.ssl.ssl().version_str();
        let served = match answer {
            None | Some(Answer::New) => match self.limits.admit(tls.peer.ip()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tls.close();
                    return Err(e);
                }
            },
            _ => None,
        };
        if !matches!(answer, Some(Answer::Accepted)) {
            events.established(version, answer == Some(Answer::New));
        }
        match answer {
            None => {
                let mut local = open_local().map_err(|e| format!("forward: {e}"))?;
                let r = pump::run_plain(&mut local, tls, self.config.queue);
                drop(served);
                r
            }
            Some(Answer::New) => {
                let secret = Secret::initial(tls.ssl.ssl()).map_err(|e| e.to_string())?;
                let mut local = match open_local() {
                    Ok(l) => l,
                    Err(e) => {
                        tls.close();
                        return Err(format!("forward: {e}"));
                    }
                };
                let r = self.own(&mut local, tls, secret, events);
                drop(served);
                r
            }
            Some(Answer::Accepted) => self.hand_over(tls, deadline),
            Some(a) => {
                tls.close();
                Err(format!("reconnect refused: {a:?}"))
            }
        }
    }

    /// A reconnect that passed the ClientHello checks: needs a resumed
    /// session and the client's RESUME, then goes to its owner, which
    /// verifies the RESUME and commits.
    fn hand_over(&self, mut tls: Tls, deadline: Instant) -> Result<(), String> {
        let entry = ctx::entry(tls.ssl.ssl()).ok_or("reconnect without entry")?;
        if !tls.ssl.ssl().session_reused() {
            tls.close();
            return Err("reconnect refused: no valid resumption".into());
        }
        let Some((count, mac)) = tls
            .read_resume(deadline)
            .map_err(|e| format!("reconnect: {e}"))?
        else {
            tls.close();
            return Err("reconnect refused: no RESUME".into());
        };
        entry
            .handoff
            .send(Handoff { tls, count, mac })
            .map_err(|_| "reconnect refused: the connection just ended".to_string())?;
        (&entry.wake)
            .write_all(&[1])
            .map_err(|e| format!("waking the owner: {e}"))
    }

    /// Owns a new resilient connection until it ends.
    fn own(
        &self,
        local: &mut dyn Local,
        tls: Tls,
        secret: Secret,
        events: &dyn Events,
    ) -> Result<(), String> {
        let (wake_r, wake_w) = UnixStream::pair().map_err(|e| e.to_string())?;
        wake_r.set_nonblocking(true).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel();
        let token = secret.token();
        let entry = Arc::new(Entry {
            auth: Mutex::new(Auth {
                cur: secret,
                prev: None,
                nonces: VecDeque::new(),
            }),
            handoff: tx,
            wake: wake_w,
        });
        self.table.insert(token, &entry);
        let mut side = ServerSide {
            table: self.table.clone(),
            entry,
            handoffs: rx,
            wake: wake_r,
            detach: self.config.detach_timeout,
            detached_since: None,
            limits: self.limits.clone(),
            detached: None,
            ticket_every: self.config.ticket_lifetime / 2,
            ticket_due: Instant::now() + self.config.ticket_lifetime / 2,
        };
        let r = Resilient {
            core: Core::new(self.config.buffer),
            conn: Some(tls),
            tx: Vec::new(),
            to_local: Vec::new(),
            last_rx: Instant::now(),
            events,
            queue: self.config.queue,
        };
        pump::run_resilient(local, r, &mut side)
    }
}

struct ServerSide {
    table: Arc<Table>,
    entry: Arc<Entry>,
    handoffs: Receiver<Handoff>,
    wake: UnixStream,
    detach: Duration,
    detached_since: Option<Instant>,
    limits: Arc<Limits>,
    /// Our place among the detached connections, while detached.
    detached: Option<Detached>,
    /// How often, and when next, a live TLS 1.3 connection gets a fresh
    /// session ticket.
    ticket_every: Duration,
    ticket_due: Instant,
}

impl ServerSide {
    /// Verifies a handed-over connection's RESUME and switches to it; a bad
    /// one is dropped and changes nothing.
    fn commit(&mut self, r: &mut Resilient<'_>, h: Handoff, now: Instant) -> Result<(), String> {
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
    fn extra_fd(&self) -> Option<RawFd> {
        Some(self.wake.as_raw_fd())
    }

    fn deadline(&self, r: &Resilient<'_>) -> Option<Instant> {
        match self.detached_since {
            Some(t) => Some(t + self.detach),
            None => r.conn.as_ref().map(|_| self.ticket_due),
        }
    }

    fn act(
        &mut self,
        r: &mut Resilient<'_>,
        extra_ready: bool,
        now: Instant,
    ) -> Result<Option<String>, String> {
        if extra_ready {
            let mut b = [0u8; 64];
            while matches!((&self.wake).read(&mut b), Ok(n) if n > 0) {}
            while let Ok(h) = self.handoffs.try_recv() {
                self.commit(r, h, now)?;
            }
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

    /// Waits (detached) for a handoff, until the detach timeout.
    fn broken(&mut self, _r: &mut Resilient<'_>, _why: &str, now: Instant) -> Result<(), String> {
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
