//! The client role: the first connection, and reconnects when the
//! connection breaks, goes silent, the route or source address changes, or
//! the machine resumes from suspend (docs/restls.md §6).

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssl::ssl::SslContext;
use ressh_resilience::netwatch::{self, Netlink, SuspendDetector};
use ressh_resilience::suspect::Watch;

use crate::core::{self, Core};
use crate::ctx::{self, TicketSlot};
use crate::engine::Tls;
use crate::frame;
use crate::pump::{self, Events, Local, Resilient, Side};
use crate::secret::{self, Answer, Hello, Role, Secret};

const CONNECT_TIME: Duration = Duration::from_secs(5);
const HANDSHAKE_TIME: Duration = Duration::from_secs(10);
/// The least time a probe goes unanswered before the path is suspect
/// (docs/restls.md §6); at most the keepalive interval.
const SUSPECT_FLOOR: Duration = Duration::from_millis(500);
/// Unacknowledged bytes from which a probe may wait behind our own data:
/// the server's ACKs of it (due within 50 ms of arrival) are awaited instead.
const BULK_UNACKED: usize = 64 << 10;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// HOST:PORT of the server, resolved again on every reconnect.
    pub connect: String,
    /// The name the server's certificate must carry (and SNI), or an IP.
    pub servername: String,
    /// CA certificates (PEM); None: the system's.
    pub ca: Option<PathBuf>,
    /// Silence after which a keepalive is sent; twice this, the connection
    /// counts as broken.
    pub keepalive: Duration,
    /// How long to keep trying to reconnect.
    pub give_up: Duration,
    /// Most unacknowledged bytes kept.
    pub buffer: usize,
    /// Most bytes waiting for one destination (the local stream, or TCP
    /// to the server) before the client stops reading what feeds it.
    pub queue: usize,
    /// The highest TLS version offered (None: TLS 1.3).
    pub max_version: Option<openssl::ssl::SslVersion>,
}

impl ClientConfig {
    pub fn new(connect: &str, servername: &str) -> ClientConfig {
        ClientConfig {
            connect: connect.to_string(),
            servername: servername.to_string(),
            ca: None,
            keepalive: Duration::from_secs(10),
            give_up: Duration::from_secs(3600),
            buffer: 8 << 20,
            queue: 1 << 20,
            max_version: None,
        }
    }
}

/// A connection made by [`Client::connect`], not yet relaying.
pub struct Connection {
    tls: Tls,
    /// Some: the extension was negotiated.
    resilient: Option<(Secret, TicketSlot)>,
}

impl Connection {
    pub fn is_resilient(&self) -> bool {
        self.resilient.is_some()
    }

    pub fn peer(&self) -> SocketAddr {
        self.tls.peer
    }
}

pub struct Client {
    ctx: SslContext,
    config: ClientConfig,
}

fn tcp_connect(to: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{to}: no address"));
    for a in to.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, CONNECT_TIME) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client, openssl::error::ErrorStack> {
        let ctx = ctx::client_context(config.ca.as_deref(), config.max_version)?;
        Ok(Client { ctx, config })
    }

    /// Opens the first connection: TLS with the extension offered.
    pub fn connect(&self) -> Result<Connection, String> {
        let tcp = tcp_connect(&self.config.connect).map_err(|e| e.to_string())?;
        let ticket: TicketSlot = Arc::new(Mutex::new(None));
        let ssl = ctx::client_ssl(&self.ctx, &self.config.servername, &Hello::New, &ticket)
            .map_err(|e| e.to_string())?;
        let mut tls = Tls::new(ssl, tcp).map_err(|e| e.to_string())?;
        tls.handshake(Instant::now() + HANDSHAKE_TIME)
            .map_err(|e| e.to_string())?;
        let answer = ctx::answer(tls.ssl.ssl());
        if answer.is_some() && !ctx::secure_version(tls.ssl.ssl()) {
            return Err("server negotiated TLS 1.2 without extended master secret".into());
        }
        let resilient = match answer {
            None => None,
            Some(Answer::New) => {
                let s = Secret::initial(tls.ssl.ssl()).map_err(|e| e.to_string())?;
                Some((s, ticket))
            }
            Some(a) => return Err(format!("server answered {a:?} to a new connection")),
        };
        Ok(Connection { tls, resilient })
    }

    /// Relays `conn` to `local` until the connection ends.
    pub fn relay(
        &self,
        conn: Connection,
        local: &mut dyn Local,
        events: Arc<dyn Events>,
    ) -> Result<(), String> {
        let Some((secret, ticket)) = conn.resilient else {
            return pump::run_plain(local, conn.tls, self.config.queue);
        };
        let source = conn.tls.tcp.local_addr().ok().map(|a| a.ip());
        let mut side = ClientSide {
            client: self,
            secret,
            ticket,
            netlink: Netlink::open().ok(),
            suspend: SuspendDetector::default(),
            source,
            watch: Watch::default(),
            probe_sent: None,
            seen: Seen::default(),
        };
        let core = Core::new(self.config.buffer);
        let r = Resilient::new(core, conn.tls, events, self.config.queue);
        pump::run_resilient(local, r, &mut side)
    }

    /// The stream form: connects, and returns a socket the application reads
    /// and writes as if it were the connection; a thread relays it.
    pub fn stream(self: &Arc<Self>, events: Arc<dyn Events>) -> Result<UnixStream, String> {
        let conn = self.connect()?;
        let (app, mut ours) = UnixStream::pair().map_err(|e| e.to_string())?;
        let me = self.clone();
        std::thread::spawn(move || me.relay(conn, &mut ours, events));
        Ok(app)
    }
}

/// Why a reconnect attempt failed.
enum Failed {
    /// Try again later.
    Transient(String),
    /// The connection cannot be continued.
    Fatal(String),
}

struct ClientSide<'c> {
    client: &'c Client,
    secret: Secret,
    ticket: TicketSlot,
    netlink: Option<Netlink>,
    suspend: SuspendDetector,
    /// Our address on the current connection.
    source: Option<IpAddr>,
    /// Round trips and what makes the path suspect (docs/restls.md §6).
    watch: Watch,
    /// The keepalive or suspicion probe awaiting any answer.
    probe_sent: Option<Instant>,
    seen: Seen,
}

/// What the connection had done at the last look, to tell what is new.
#[derive(Default)]
struct Seen {
    last_rx: Option<Instant>,
    recv: u64,
    sent: u64,
    peer_acked: u64,
    last_ack: Option<Instant>,
}

impl ClientSide<'_> {
    /// One reconnect attempt (docs/restls.md §5), beside the live connection
    /// if there is one: nothing changes unless it succeeds.
    fn attempt(&mut self, r: &mut Resilient) -> Result<(), Failed> {
        use Failed::{Fatal, Transient};
        let cfg = &self.client.config;
        let r_c = r.core.recv_count();
        let hello = self.secret.hello();
        let tcp = tcp_connect(&cfg.connect).map_err(|e| Transient(format!("connect: {e}")))?;
        let ssl = ctx::client_ssl(&self.client.ctx, &cfg.servername, &hello, &self.ticket)
            .map_err(|e| Transient(e.to_string()))?;
        let mut tls = Tls::new(ssl, tcp).map_err(|e| Transient(e.to_string()))?;
        let deadline = Instant::now() + HANDSHAKE_TIME;
        tls.handshake(deadline)
            .map_err(|e| Transient(e.to_string()))?;
        match ctx::answer(tls.ssl.ssl()) {
            Some(Answer::Accepted) => {}
            Some(Answer::Refused) => return Err(Transient("server refused the reconnect".into())),
            Some(Answer::Unknown) => {
                return Err(Fatal("server no longer knows the connection".into()))
            }
            _ => return Err(Fatal("server no longer offers resilience".into())),
        }
        if !tls.ssl.ssl().session_reused() {
            return Err(Transient("session not resumed".into()));
        }
        if !ctx::secure_version(tls.ssl.ssl()) {
            return Err(Fatal("TLS 1.2 without extended master secret".into()));
        }
        let e = secret::resume_binding(tls.ssl.ssl()).map_err(|e| Transient(e.to_string()))?;
        let mut out = Vec::new();
        frame::put_resume(
            &mut out,
            r_c,
            &self.secret.resume_mac(Role::Client, &e, r_c),
        );
        tls.encrypt(&out).map_err(|e| Transient(e.to_string()))?;
        tls.flush_blocking(deadline)
            .map_err(|e| Transient(e.to_string()))?;
        let (r_s, mac) = tls
            .read_resume(deadline)
            .map_err(|e| Transient(e.to_string()))?
            .ok_or_else(|| Transient("no RESUME from the server".into()))?;
        if !secret::mac_eq(&mac, &self.secret.resume_mac(Role::Server, &e, r_s)) {
            return Err(Transient("server's RESUME did not verify".into()));
        }
        let mut frames = Vec::new();
        r.core
            .resume(r_s, r_c, &mut frames)
            .map_err(|e| Fatal(e.to_string()))?;
        self.secret = self.secret.ratchet(&e);
        self.source = tls.tcp.local_addr().ok().map(|a| a.ip());
        let now = Instant::now();
        r.switch(tls, frames, now).map_err(Fatal)?;
        // A new path: measure its round trip afresh.
        self.probe_sent = None;
        self.watch = Watch::default();
        self.seen.last_rx = Some(r.last_rx);
        Ok(())
    }

    /// The suspicion timeout: a few smoothed round trips, within
    /// [`SUSPECT_FLOOR`] and the keepalive interval.
    fn suspect_timeout(&self) -> Duration {
        let ka = self.client.config.keepalive;
        self.watch.rtt.timeout(SUSPECT_FLOOR.min(ka), ka)
    }

    /// Feeds the watch with what happened since the last look (all of it
    /// at `now`: the pump read and sent it in this turn).
    fn observe(&mut self, r: &Resilient, now: Instant) {
        let ka = self.client.config.keepalive;
        if self.seen.last_rx != Some(r.last_rx) {
            self.seen.last_rx = Some(r.last_rx);
            self.watch.heard();
            self.probe_sent = None;
        }
        let recv = r.core.recv_count();
        if recv > self.seen.recv {
            self.watch.resilient_received(now);
        }
        let last_ack = r.core.last_ack();
        if let Some(t) = last_ack.filter(|_| last_ack != self.seen.last_ack) {
            self.watch.ack_received(t, ka);
        }
        let peer_acked = r.core.peer_acked();
        if peer_acked > self.seen.peer_acked {
            self.watch.progress(now);
        }
        let sent = r.core.sent_count();
        if sent > self.seen.sent {
            self.watch.resilient_sent(now);
        }
        self.seen.recv = recv;
        self.seen.last_ack = last_ack;
        self.seen.peer_acked = peer_acked;
        self.seen.sent = sent;
    }

    /// Keepalive, round-trip measurement and path suspicion.
    fn probe(&mut self, r: &mut Resilient, now: Instant) -> Probe {
        let ka = self.client.config.keepalive;
        let s = self.suspect_timeout();
        match self.probe_sent {
            None => {
                let idle = now.saturating_duration_since(r.last_rx) >= ka;
                let due = self.watch.probe_due(s).is_some_and(|t| now >= t);
                if idle || due {
                    r.core.ping(&mut r.tx);
                    self.probe_sent = Some(now);
                    self.watch.want_reply_sent(now, Some(s));
                } else if self.watch.wants_rtt(now) {
                    r.core.ping(&mut r.tx);
                    self.watch.want_reply_sent(now, None);
                }
            }
            Some(p) if now.saturating_duration_since(p) >= ka => return Probe::Dead,
            Some(_) => {
                if self.watch.take_suspicion(now) {
                    // During an upload the server's ACKs of it are the sign
                    // of life: suspect only once they stop.
                    let until = self
                        .watch
                        .progress_at()
                        .map(|p| p + core::ACK_DELAY + s)
                        .filter(|u| r.core.buffered() >= BULK_UNACKED && now < *u);
                    match until {
                        Some(u) => self.watch.rearm(u),
                        None => {
                            return Probe::Suspect(format!(
                                "path suspected: no answer to a probe for {} ms",
                                s.as_millis()
                            ))
                        }
                    }
                }
            }
        }
        Probe::Fine
    }
}

/// What [`ClientSide::probe`] concluded.
enum Probe {
    Fine,
    /// A probe had no answer for the suspicion timeout: try a new
    /// connection beside this one.
    Suspect(String),
    /// No answer for the keepalive interval: the connection is broken.
    Dead,
}

impl Side for ClientSide<'_> {
    fn extra_fd(&self) -> Option<RawFd> {
        self.netlink.as_ref().map(|n| n.as_raw_fd())
    }

    fn deadline(&self, r: &Resilient) -> Option<Instant> {
        let ka = self.client.config.keepalive;
        let s = self.suspect_timeout();
        let mut t = match self.probe_sent {
            Some(p) => p + ka,
            None => r.last_rx + ka,
        };
        let watch = match self.probe_sent {
            Some(_) => self.watch.suspect_due(),
            None => self.watch.probe_due(s),
        };
        if let Some(w) = watch {
            t = t.min(w);
        }
        // Wake at least every second to notice a resume from suspend.
        Some(t.min(Instant::now() + Duration::from_secs(1)))
    }

    fn act(
        &mut self,
        r: &mut Resilient,
        extra_ready: bool,
        now: Instant,
    ) -> Result<Option<String>, String> {
        let mut trigger = None;
        if extra_ready && self.netlink.as_ref().is_some_and(|n| n.drain()) {
            let peer = r.conn.as_ref().map(|c| c.peer);
            let now_src = peer.and_then(netwatch::preferred_source);
            if now_src != self.source {
                trigger = Some("route or source address changed".into());
            }
        }
        if self.suspend.resumed() {
            trigger = Some("resumed from suspend".into());
        }
        self.observe(r, now);
        match self.probe(r, now) {
            Probe::Fine => {}
            Probe::Suspect(why) => trigger = trigger.or(Some(why)),
            Probe::Dead => return Ok(Some("silent connection".into())),
        }
        if let Some(t) = trigger {
            // Make before break: the old connection stays until this works.
            match self.attempt(r) {
                Ok(()) => return Ok(None),
                // The old connection carries on; if it is dead too, the
                // keepalive finds out.
                Err(Failed::Transient(e)) => {
                    r.events.lost(&format!("{t}; reconnect failed: {e}"));
                }
                Err(Failed::Fatal(e)) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Reconnects until it works or the give-up time passes.
    fn broken(&mut self, r: &mut Resilient, why: &str, now: Instant) -> Result<(), String> {
        let give_up = now + self.client.config.give_up;
        let mut wait = Duration::ZERO;
        let mut last = why.to_string();
        while Instant::now() < give_up {
            pump::sleep_until(Instant::now() + wait);
            match self.attempt(r) {
                Ok(()) => return Ok(()),
                Err(Failed::Fatal(e)) => return Err(e),
                Err(Failed::Transient(e)) => last = e,
            }
            wait = pump::backoff(wait);
        }
        Err(format!("gave up reconnecting: {last}"))
    }

    fn ended(&mut self) {}
}
