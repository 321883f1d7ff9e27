//! The session core and its event loop.
//!
//! [`Session`] owns the engine's [`Connection`], every channel and the local
//! descriptors (stdin/stdout/stderr, forward listeners and sockets); it
//! talks to the [`Transport`] only through read/write readiness, so the
//! transport can later be replaced under a live session. One `mio` loop, no
//! threads. Backpressure everywhere: local input is read only while the
//! channel window and the transport's output backlog allow, and received
//! data is acknowledged to the engine (`consume`) only once written out.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use ressh_proto::error::reason;
use ressh_proto::msg::{self, ChannelKind, ChannelReq, GlobalReq};
use ressh_proto::{Connection, Event};

use crate::auth::{self, Auth};
use crate::config::{self, Config};
use crate::escape::{self, Escape};
use crate::fdio::{LocalFd, Mode};
use crate::forward::{self, Forward};
use crate::hostkey::{self, Outcome};
use crate::identity::{self, Agent};
use crate::sig::Signals;
use crate::socks;
use crate::transport::{self, Transport};
use crate::tty::{self, RawGuard};

mod data;
mod forwards;
mod resume;
mod retry;
mod setup;

const T_READ: Token = Token(0);
const T_WRITE: Token = Token(1);
const T_SIGNAL: Token = Token(2);
const T_STDIN: Token = Token(3);
const T_STDOUT: Token = Token(4);
const T_STDERR: Token = Token(5);
const FIRST_DYNAMIC: usize = 16;

/// Stop reading local input while this much is waiting for the transport.
const OUT_HIGH: usize = 1 << 20;
/// Read size for local input and the transport.
const BUF: usize = 256 * 1024;
/// Transport bytes handled per wake-up before local I/O gets a turn.
const READ_BUDGET: usize = 4 << 20;

/// What the connection is for, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A session channel: shell (command None), exec or subsystem.
    Session {
        command: Option<String>,
        subsystem: bool,
        pty: bool,
    },
    /// -W host:port: stdin/stdout to a direct-tcpip channel.
    Stdio { host: String, port: u16 },
    /// -N: forwarding only.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Main,
    Stdio,
    /// A -L or -D connection (listener index).
    Local(usize),
    /// A -R connection (remote forward index).
    Remote(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Req {
    Pty,
    Shell,
    Exec,
    Subsystem,
}

/// A local sink: bytes received on the channel waiting to be written.
struct Sink {
    fd: std::rc::Rc<LocalFd>,
    ready: bool,
    buf: Vec<u8>,
    off: usize,
    dead: bool,
}

impl Sink {
    fn new(fd: std::rc::Rc<LocalFd>) -> Sink {
        Sink {
            ready: true,
            fd,
            buf: Vec::new(),
            off: 0,
            dead: false,
        }
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.off
    }
}

struct Chan {
    /// The engine's channel id (reused by the engine once closed).
    id: u32,
    kind: Kind,
    open: bool,
    closed: bool,
    /// Local input (stdin, or the socket).
    input: Option<std::rc::Rc<LocalFd>>,
    in_ready: bool,
    in_eof: bool,
    /// Bytes read but not yet taken by the channel window.
    unsent: Vec<u8>,
    out: Option<Sink>,
    err: Option<Sink>,
    /// Our tokens, for deregistration.
    tokens: Vec<Token>,
    sent_eof: bool,
    recv_eof: bool,
    out_shut: bool,
    close_sent: bool,
    replies: VecDeque<Req>,
    desc: String,
    /// A -D connection owed its SOCKS reply: sent when the server answers
    /// the channel open.
    socks: Option<socks::Version>,
}

impl Chan {
    fn new(id: u32, kind: Kind, desc: String) -> Chan {
        Chan {
            id,
            kind,
            open: false,
            closed: false,
            input: None,
            in_ready: false,
            in_eof: false,
            unsent: Vec::new(),
            out: None,
            err: None,
            tokens: Vec::new(),
            sent_eof: false,
            recv_eof: false,
            out_shut: false,
            close_sent: false,
            replies: VecDeque::new(),
            desc,
            socks: None,
        }
    }

    fn drained(&self) -> bool {
        self.out
            .as_ref()
            .map_or(true, |s| s.pending() == 0 || s.dead)
            && self
                .err
                .as_ref()
                .map_or(true, |s| s.pending() == 0 || s.dead)
    }
}

/// A -L or -D listener.
struct Listener {
    sock: TcpListener,
    port: u16,
    /// -L: where every connection goes; None (-D): where each connection's
    /// SOCKS request says.
    to: Option<(String, u16)>,
}

/// A -D connection whose SOCKS request is still coming.
struct SocksConn {
    sock: mio::net::TcpStream,
    peer: std::net::SocketAddr,
    listener: usize,
    hs: socks::Handshake,
    readable: bool,
}

struct RemoteFwd {
    fwd: Forward,
    bound: Option<u32>,
}

enum Global {
    Keepalive,
    RemoteForward(usize),
}

/// A -R connection being made to the local target.
struct Connecting {
    id: u32,
    rfwd: usize,
    sock: mio::net::TcpStream,
}

/// Our key of a channel.
type Key = u64;

/// How the session ended: exit code and a message for stderr.
#[derive(Debug)]
pub struct Quit {
    pub code: i32,
    pub msg: Option<String>,
}

fn fatal(msg: impl Into<String>) -> Quit {
    Quit {
        code: 255,
        msg: Some(msg.into()),
    }
}

pub struct Session {
    cfg: Config,
    plan: Plan,
    conn: Connection,
    transport: Transport,
    poll: Poll,
    t_read: bool,
    t_write: bool,
    /// The transport reported EOF or an error.
    t_dead: bool,
    sig: &'static Signals,
    /// Channels by our own key: a closed channel still writing out its
    /// last data keeps its key while the engine reuses its id.
    chans: BTreeMap<Key, Chan>,
    /// Live engine channel ids to keys.
    live: HashMap<u32, Key>,
    next_key: Key,
    tokens: HashMap<Token, Key>,
    next_token: usize,
    listeners: Vec<(Token, Listener)>,
    socks: HashMap<Token, SocksConn>,
    rfwds: Vec<RemoteFwd>,
    globals: VecDeque<Global>,
    connecting: HashMap<Token, Connecting>,
    auth: Option<Auth>,
    main: Option<Key>,
    exit_status: Option<i32>,
    exit_signal: Option<String>,
    escape: Option<Escape>,
    raw: Option<RawGuard>,
    /// The local terminal's modes, taken before raw mode, for pty-req.
    modes: Vec<u8>,
    untrusted: bool,
    authenticated: bool,
    kex_deadline: Option<Instant>,
    last_recv: Instant,
    alive_missed: u32,
    next_alive: Option<Instant>,
    /// A transport being replaced (resilience).
    resume: Option<resume::Resume>,
    watch: resume::Watch,
    suspicions: resume::Suspicions,
    /// -f: to go to the background once authenticated and, with
    /// ExitOnForwardFailure, once the remote forwards are confirmed.
    fork_pending: bool,
    quit: Option<Quit>,
}

fn proto_config(cfg: &Config, known_types: &[String]) -> Result<ressh_proto::Config, String> {
    let mut pc = ressh_proto::Config::default();
    let known_hk = pc.host_key_algs.clone();
    let spec = |what: &str, spec: &Option<String>, list: &mut Vec<String>| -> Result<(), String> {
        if let Some(s) = spec {
            let known = list.clone();
            *list = config::algorithm_list(what, s, &known, &known).map_err(|e| e.0)?;
        }
        Ok(())
    };
    pc.resilience = cfg.resilience;
    pc.suspect_floor = Duration::from_millis(cfg.suspect_floor_ms);
    pc.suspect_cap = match cfg.suspect_cap_ms {
        None => Some(Duration::MAX),
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(ms)),
    };
    spec("cipher", &cfg.ciphers, &mut pc.ciphers)?;
    spec("MAC", &cfg.macs, &mut pc.macs)?;
    spec("key exchange", &cfg.kex_algorithms, &mut pc.kex)?;
    spec("host key", &cfg.host_key_algorithms, &mut pc.host_key_algs)?;
    if cfg.host_key_algorithms.is_none() && !known_types.is_empty() {
        // Prefer the key types known_hosts has for this host (ssh's
        // order_hostkeyalgs), so a known host is not asked for a new type.
        let alg_type = |a: &str| {
            ressh_proto::keys::KeyType::from_signature_algorithm(a)
                .map(|t| t.name().to_string())
                .unwrap_or_default()
        };
        let (mut first, rest): (Vec<String>, Vec<String>) = known_hk
            .into_iter()
            .partition(|a| known_types.contains(&alg_type(a)));
        first.extend(rest);
        pc.host_key_algs = first;
    }
    Ok(pc)
}

impl Session {
    /// Dials and builds a session for `cfg`; nothing is read yet.
    pub fn connect(cfg: Config, plan: Plan) -> Result<Session, Quit> {
        let sig = crate::sig::install().map_err(|e| fatal(format!("ressh: signals: {e}")))?;
        let known = hostkey::known_types(&cfg);
        let mut pc = proto_config(&cfg, &known).map_err(|e| fatal(format!("ressh: {e}")))?;
        // Resilience keepalives (docs/PROTOCOL.md §4): ServerAliveInterval,
        // else 15 s; a silent server then means reconnecting.
        pc.keepalive = Duration::from_secs(if cfg.server_alive_interval > 0 {
            cfg.server_alive_interval
        } else {
            15
        });
        let mut transport = transport::dial(&cfg).map_err(|e| fatal(format!("ressh: {}", e.0)))?;
        let now = Instant::now();
        let conn = Connection::client(pc, now).map_err(|e| fatal(format!("ressh: {e}")))?;
        let poll = Poll::new().map_err(|e| fatal(format!("ressh: poll: {e}")))?;
        transport
            .register(poll.registry(), T_READ, T_WRITE)
            .map_err(|e| fatal(format!("ressh: {e}")))?;
        poll.registry()
            .register(
                &mut mio::unix::SourceFd(&sig.fd()),
                T_SIGNAL,
                Interest::READABLE,
            )
            .map_err(|e| fatal(format!("ressh: {e}")))?;
        let kex_deadline = cfg.connect_timeout.map(|t| now + t);
        let watch = resume::Watch::new(poll.registry());
        let fork_pending = cfg.fork_after_authentication;
        Ok(Session {
            cfg,
            plan,
            conn,
            transport,
            poll,
            t_read: true,
            t_write: true,
            t_dead: false,
            sig,
            chans: BTreeMap::new(),
            live: HashMap::new(),
            next_key: 0,
            tokens: HashMap::new(),
            next_token: FIRST_DYNAMIC,
            listeners: Vec::new(),
            socks: HashMap::new(),
            rfwds: Vec::new(),
            globals: VecDeque::new(),
            connecting: HashMap::new(),
            auth: None,
            main: None,
            exit_status: None,
            exit_signal: None,
            escape: None,
            raw: None,
            modes: Vec::new(),
            untrusted: false,
            authenticated: false,
            kex_deadline,
            last_recv: now,
            alive_missed: 0,
            next_alive: None,
            resume: None,
            watch,
            suspicions: resume::Suspicions::default(),
            fork_pending,
            quit: None,
        })
    }

    fn token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        t
    }

    fn insert_chan(&mut self, ch: Chan) -> Key {
        let key = self.next_key;
        self.next_key += 1;
        self.live.insert(ch.id, key);
        self.chans.insert(key, ch);
        key
    }

    /// The live channel with engine id `id`.
    fn chan_mut(&mut self, id: u32) -> Option<&mut Chan> {
        let key = self.live.get(&id)?;
        self.chans.get_mut(key)
    }

    fn set_quit(&mut self, q: Quit) {
        if self.quit.is_none() {
            self.quit = Some(q);
        }
    }

    /// Runs until the session ends; returns the exit code and message.
    pub fn run(mut self) -> Quit {
        let mut events = Events::with_capacity(256);
        let mut buf = vec![0u8; BUF];
        while self.quit.is_none() {
            self.flush_transport();
            if self.quit.is_some() {
                break;
            }
            let timeout = self.next_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.set_quit(fatal(format!("ressh: poll: {e}")));
                    break;
                }
            }
            for ev in events.iter() {
                self.mark(
                    ev.token(),
                    ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                    ev.is_writable() || ev.is_write_closed() || ev.is_error(),
                );
            }
            self.handle_signals();
            self.read_transport(&mut buf);
            self.resume_tick(&mut buf);
            self.handle_timeouts();
            self.accept_local();
            self.pump_socks();
            self.pump_inputs(&mut buf);
            self.flush_outputs();
            self.reap_channels();
            self.check_done();
        }
        self.finish()
    }

    fn mark(&mut self, t: Token, readable: bool, writable: bool) {
        if self.mark_resume(t, readable, writable) {
            return;
        }
        match t {
            T_READ => {
                self.t_read |= readable;
                // A TCP transport has one token for both directions.
                self.t_write |= writable;
            }
            T_WRITE => self.t_write |= writable,
            T_SIGNAL => {}
            _ => {
                if self.connecting.contains_key(&t) {
                    if writable || readable {
                        self.finish_connect(t);
                    }
                    return;
                }
                if let Some(s) = self.socks.get_mut(&t) {
                    s.readable |= readable;
                    return;
                }
                let Some(&key) = self.tokens.get(&t) else {
                    return;
                };
                let Some(ch) = self.chans.get_mut(&key) else {
                    return;
                };
                let (is_stdout, is_stderr) = (t == T_STDOUT, t == T_STDERR);
                if t == T_STDIN || (!is_stdout && !is_stderr) {
                    ch.in_ready |= readable;
                }
                if is_stderr {
                    if let Some(s) = ch.err.as_mut() {
                        s.ready |= writable;
                    }
                } else if is_stdout || t != T_STDIN {
                    if let Some(s) = ch.out.as_mut() {
                        s.ready |= writable;
                    }
                }
            }
        }
    }

    fn next_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut t: Option<Instant> = self.conn.poll_timeout();
        // With resilience the engine's own keepalives watch the transport
        // and `next_alive` is not acted on (see the timers): waking for it
        // would spin once it has passed, as it does while detached.
        let alive = self.next_alive.filter(|_| !self.resilient());
        for d in [self.kex_deadline, alive, self.resume_timeout()]
            .into_iter()
            .flatten()
        {
            t = Some(t.map_or(d, |x| x.min(d)));
        }
        // Readiness is edge-triggered: while something is known to be
        // ready and can make progress, do not wait. That is the transport
        // when the read budget ran out, and local inputs the channel window
        // and the output backlog let us read (terminals and files included).
        let room = self.conn.output().len() < OUT_HIGH;
        let busy = (self.t_read && !self.t_dead)
            || (room
                && self.chans.values().any(|c| {
                    c.open
                        && !c.closed
                        && !c.sent_eof
                        && !c.close_sent
                        && (c.in_ready || c.in_eof || !c.unsent.is_empty())
                        && (c.in_eof || self.conn.send_window(c.id) > 0)
                }));
        if busy {
            return Some(Duration::ZERO);
        }
        t.map(|t| t.saturating_duration_since(now))
    }

    // ----- transport ------------------------------------------------------

    fn flush_transport(&mut self) {
        while !self.t_dead && self.t_write && !self.conn.output().is_empty() {
            match self.transport.write(self.conn.output()) {
                Ok(0) => {
                    self.t_write = false;
                    break;
                }
                Ok(n) => self.conn.consume_output(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.t_write = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let msg = format!(
                        "ressh: write to {}: {}",
                        self.transport.describe(),
                        transport::strip_os_error(&e)
                    );
                    self.lost(msg);
                    return;
                }
            }
        }
    }

    /// The transport broke. After the session ended that is no error: the
    /// remaining output is written and the exit status stands.
    fn lost(&mut self, msg: String) {
        if self.detach(&msg) {
            return;
        }
        self.t_dead = true;
        self.t_read = false;
        self.t_write = false;
        let main_closed = self
            .main
            .and_then(|m| self.chans.get(&m))
            .is_some_and(|c| c.closed);
        if !main_closed {
            self.set_quit(fatal(msg));
        }
    }

    fn read_transport(&mut self, buf: &mut [u8]) {
        let mut budget = READ_BUDGET;
        while self.t_read && budget > 0 && self.quit.is_none() {
            match self.transport.read(buf) {
                Ok(0) => {
                    self.t_read = false;
                    let msg = if self.conn.session_id().is_none() || !self.authenticated {
                        if self.conn.peer_version().is_none() {
                            format!(
                                "ressh: kex_exchange_identification: Connection closed by \
                                 remote host ({}) before it sent an SSH version line",
                                self.transport.describe()
                            )
                        } else {
                            format!("ressh: Connection closed by {}", self.transport.describe())
                        }
                    } else {
                        format!("Connection to {} closed by remote host.", self.cfg.host)
                    };
                    self.lost(msg);
                    return;
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    let now = Instant::now();
                    self.last_recv = now;
                    self.alive_missed = 0;
                    if self.next_alive.is_some() {
                        self.next_alive =
                            Some(now + Duration::from_secs(self.cfg.server_alive_interval));
                    }
                    if let Err(e) = self.conn.handle_input(&buf[..n], now) {
                        self.drain_events();
                        self.protocol_error(e);
                        return;
                    }
                    self.heard_on_old();
                    self.drain_events();
                    // Write out what arrived now: that returns the window
                    // to the server (WINDOW_ADJUST) while it is still
                    // sending, instead of after the whole read budget.
                    self.flush_outputs();
                    self.flush_transport();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.t_read = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let stage = if self.conn.peer_version().is_none() {
                        "kex_exchange_identification: "
                    } else {
                        ""
                    };
                    let msg = format!(
                        "ressh: {stage}read from {}: {}",
                        self.transport.describe(),
                        transport::strip_os_error(&e)
                    );
                    self.lost(msg);
                    return;
                }
            }
        }
    }

    fn protocol_error(&mut self, e: ressh_proto::Error) {
        if self.quit.is_some() {
            return;
        }
        // Send the DISCONNECT the engine queued, best effort.
        self.flush_transport();
        let msg = match &e {
            ressh_proto::Error::PeerDisconnected {
                reason,
                description,
            } => format!(
                "Received disconnect from {}: {reason}: {}",
                self.transport.describe(),
                auth::clean(description)
            ),
            _ if self.conn.peer_version().is_none() => format!(
                "ressh: kex_exchange_identification: {} did not send a valid SSH version \
                 line: {e}",
                self.transport.describe()
            ),
            _ => format!("ressh: {}: {e}", self.transport.describe()),
        };
        self.set_quit(fatal(msg));
    }

    // ----- timers and signals ---------------------------------------------

    fn handle_timeouts(&mut self) {
        let now = Instant::now();
        if self.kex_deadline.is_some_and(|d| now >= d) {
            self.set_quit(fatal(format!(
                "ressh: Connection timed out during banner exchange with {}",
                self.transport.describe()
            )));
            return;
        }
        // Every turn, not only when due: the engine times what is sent
        // next (the path suspicion's wait for an answer) from this clock.
        if self.conn.poll_timeout().is_some() {
            if let Err(e) = self.conn.handle_timeout(now) {
                self.protocol_error(e);
                return;
            }
            self.drain_events();
        }
        // With resilience, the engine's keepalives watch the transport and a
        // silent server means reconnecting, not giving up.
        if self.next_alive.is_some_and(|t| now >= t) && !self.resilient() {
            if self.alive_missed >= self.cfg.server_alive_count_max {
                self.set_quit(fatal(format!(
                    "Timeout, server {} not responding.",
                    self.cfg.host
                )));
                return;
            }
            self.alive_missed += 1;
            crate::debug1!("sending keepalive ({})", self.alive_missed);
            if self.conn.global_request(GlobalReq::Keepalive, true).is_ok() {
                self.globals.push_back(Global::Keepalive);
            }
            self.next_alive = Some(now + Duration::from_secs(self.cfg.server_alive_interval));
        }
    }

    fn handle_signals(&mut self) {
        self.sig.drain();
        if let Some(s) = self.sig.terminated() {
            crate::verbose!("Killed by signal {s}.");
            self.set_quit(Quit {
                code: 255,
                msg: None,
            });
            return;
        }
        if self.sig.take_winch() {
            self.send_window_change();
        }
    }

    fn send_window_change(&mut self) {
        let Some(id) = self
            .main
            .and_then(|k| self.chans.get(&k))
            .filter(|c| c.open && !c.closed)
            .map(|c| c.id)
        else {
            return;
        };
        if !matches!(self.plan, Plan::Session { pty: true, .. }) {
            return;
        }
        let fd = if tty::isatty(0) { 0 } else { 1 };
        if let Some((cols, rows, w, h)) = tty::window_size(fd) {
            let _ = self.conn.channel_request(
                id,
                ChannelReq::WindowChange {
                    cols,
                    rows,
                    width_px: w,
                    height_px: h,
                },
                false,
            );
        }
    }

    // ----- engine events ----------------------------------------------------

    fn drain_events(&mut self) {
        while let Some(ev) = self.conn.poll_event() {
            if self.quit.is_some() {
                continue;
            }
            self.on_event(ev);
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::HostKey(key) => {
                let peer = self.transport.describe().replace(" port ", ":");
                match hostkey::verify(&self.cfg, &key, &peer) {
                    Ok(o) => {
                        self.untrusted = o == Outcome::AcceptUntrusted;
                        if let Err(e) = self.conn.accept_host_key(Instant::now()) {
                            self.protocol_error(e);
                        }
                    }
                    Err(msg) => {
                        self.conn
                            .disconnect(reason::HOST_KEY_NOT_VERIFIABLE, "host key not verified");
                        self.flush_transport();
                        self.set_quit(fatal(msg));
                    }
                }
            }
            Event::ResilienceReady { detach_timeout } => {
                crate::debug1!(
                    "resilience on; the server keeps a lost session for {detach_timeout} s"
                );
                if let Some(t) = self.keepalive() {
                    self.transport.set_user_timeout(t * 2);
                }
            }
            Event::ConnectionDead => {
                let why = format!("no answer from {} to keepalives", self.cfg.host);
                self.detach(&why);
            }
            Event::PathSuspect => self.path_suspect(),
            Event::Reconnected => crate::debug1!("session resumed on the new connection"),
            Event::KexDone { first, algorithms } => {
                let mac = |m: &str| {
                    if m.is_empty() {
                        "<implicit>".to_string()
                    } else {
                        m.to_string()
                    }
                };
                crate::debug1!(
                    "kex: {} host key {} cipher {} / {} mac {} / {}",
                    algorithms.kex,
                    algorithms.host_key,
                    algorithms.cipher_c2s,
                    algorithms.cipher_s2c,
                    mac(&algorithms.mac_c2s),
                    mac(&algorithms.mac_s2c)
                );
                if first {
                    self.kex_deadline = None;
                    crate::debug1!(
                        "Remote protocol version: {}",
                        self.conn.peer_version().unwrap_or("")
                    );
                }
            }
            Event::AuthReady => self.start_auth(),
            Event::Banner(text) => {
                if crate::log::enabled(crate::log::Level::Info) {
                    crate::log::raw_text(&auth::clean(&text));
                }
            }
            Event::AuthSuccess => self.on_auth_success(),
            Event::AuthFailure { methods, partial } => {
                let r = match self.auth.as_mut() {
                    Some(a) => a.on_failure(&mut self.conn, methods, partial),
                    None => Err("unexpected auth failure".into()),
                };
                if let Err(m) = r {
                    self.conn
                        .disconnect(reason::NO_MORE_AUTH_METHODS_AVAILABLE, "no more methods");
                    self.flush_transport();
                    self.set_quit(fatal(m));
                }
            }
            Event::AuthPkOk => {
                let r = match self.auth.as_mut() {
                    Some(a) => a.on_pk_ok(&mut self.conn),
                    None => Err("unexpected PK_OK".into()),
                };
                if let Err(m) = r {
                    self.set_quit(fatal(m));
                }
            }
            Event::AuthInfoRequest {
                name,
                instruction,
                prompts,
            } => {
                let r = match self.auth.as_mut() {
                    Some(a) => a.on_info_request(&mut self.conn, &name, &instruction, &prompts),
                    None => Err("unexpected info request".into()),
                };
                if let Err(m) = r {
                    self.set_quit(fatal(m));
                }
            }
            Event::AuthPasswordChange { prompt } => {
                let r = match self.auth.as_mut() {
                    Some(a) => a.on_password_change(&mut self.conn, &prompt),
                    None => Err("unexpected password change request".into()),
                };
                if let Err(m) = r {
                    self.set_quit(fatal(m));
                }
            }
            Event::ChannelOpenRequest { id, kind } => self.on_open_request(id, kind),
            Event::ChannelOpened { id } => self.on_opened(id),
            Event::ChannelOpenFailed {
                id,
                reason: r,
                description,
            } => self.on_open_failed(id, r, &description),
            Event::ChannelRequest {
                id,
                want_reply,
                request,
            } => {
                if self.main.is_some() && self.main == self.live.get(&id).copied() {
                    match &request {
                        ChannelReq::ExitStatus(s) => self.exit_status = Some(*s as i32),
                        ChannelReq::ExitSignal {
                            signal, message, ..
                        } => {
                            self.exit_signal = Some(if message.is_empty() {
                                signal.clone()
                            } else {
                                format!("{signal} ({})", auth::clean(message))
                            })
                        }
                        _ => {}
                    }
                }
                if want_reply {
                    let _ = self.conn.channel_reply(id, false);
                }
            }
            Event::ChannelReply { id, success } => self.on_reply(id, success),
            Event::Data { id, data } => self.on_data(id, false, data),
            Event::ExtendedData { id, code, data } => {
                if code == msg::EXTENDED_DATA_STDERR {
                    self.on_data(id, true, data)
                } else {
                    let _ = self.conn.consume(id, data.len());
                }
            }
            Event::Writable { .. } => {}
            Event::Eof { id } => {
                if let Some(c) = self.chan_mut(id) {
                    c.recv_eof = true;
                }
            }
            Event::Closed { id } => {
                if let Some(c) = self.chan_mut(id) {
                    c.closed = true;
                    c.close_sent = true;
                }
                // The engine may hand this id to a new channel now.
                self.live.remove(&id);
            }
            Event::GlobalRequest { want_reply, .. } => {
                if want_reply {
                    let _ = self.conn.global_reply(false, &[]);
                }
            }
            Event::GlobalReply { success, data } => self.on_global_reply(success, &data),
            Event::Disconnected {
                reason: r,
                description,
            } => {
                let msg = format!(
                    "Received disconnect from {}: {r}: {}",
                    self.transport.describe(),
                    auth::clean(&description)
                );
                self.set_quit(fatal(msg));
            }
            // Server-side events and extensions this client does not use yet.
            other => crate::debug3!("ignored event {other:?}"),
        }
    }

    fn check_done(&mut self) {
        if self.quit.is_some() {
            return;
        }
        let Some(main) = self.main else {
            return;
        };
        let Some(ch) = self.chans.get(&main) else {
            return;
        };
        if !ch.closed || !ch.drained() {
            return;
        }
        // Wait for forwarded connections still open, as ssh does.
        let others = self.chans.keys().any(|&k| k != main) || !self.connecting.is_empty();
        if others && !self.t_dead {
            return;
        }
        let stdio = self.chans.get(&main).is_some_and(|c| c.kind == Kind::Stdio);
        let code = match (self.exit_status, &self.exit_signal) {
            (Some(s), _) => s,
            (None, None) if stdio => 0,
            (None, Some(sig)) => {
                crate::debug1!("Remote command killed by signal {sig}.");
                255
            }
            (None, None) => 255,
        };
        let msg = if matches!(self.plan, Plan::Session { pty: true, .. }) {
            if crate::log::enabled(crate::log::Level::Info) {
                Some(format!("Connection to {} closed.", self.cfg.host))
            } else {
                None
            }
        } else {
            None
        };
        self.set_quit(Quit { code, msg });
    }

    /// Ends the connection cleanly: remaining output flushed (bounded),
    /// DISCONNECT sent, terminal restored.
    fn finish(mut self) -> Quit {
        let q = self.quit.take().unwrap_or(Quit {
            code: 255,
            msg: None,
        });
        // Write out what the remote side sent before it ended (blocking).
        let deadline = Instant::now() + Duration::from_secs(10);
        for ch in self.chans.values_mut() {
            for s in [ch.out.as_mut(), ch.err.as_mut()].into_iter().flatten() {
                while !s.dead && s.pending() > 0 && Instant::now() < deadline {
                    match s.fd.write(&s.buf[s.off..]) {
                        Ok(n) => s.off += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.fd.wait_writable(100),
                        Err(_) => s.dead = true,
                    }
                }
            }
        }
        let st = self.conn.stats();
        crate::debug1!(
            "Transferred: sent {}, received {} bytes of channel data",
            st.data_sent,
            st.data_received
        );
        if self.conn.resilience_active() {
            crate::debug1!(
                "resilience: sent {} ACKs ({} bytes on the wire), received {}",
                st.acks_sent,
                st.ack_wire_bytes,
                st.acks_received
            );
            crate::verbose!("{}", self.suspicions.summary());
        }
        if !self.conn.is_closed() {
            self.conn
                .disconnect(reason::BY_APPLICATION, "disconnected by user");
        }
        let end = Instant::now() + Duration::from_millis(500);
        while !self.conn.output().is_empty() && Instant::now() < end {
            match self.transport.write(self.conn.output()) {
                Ok(n) if n > 0 => self.conn.consume_output(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => break,
            }
        }
        let keys: Vec<Key> = self.chans.keys().copied().collect();
        for key in keys {
            self.drop_chan(key);
        }
        self.transport.deregister(self.poll.registry());
        self.transport.close();
        self.raw = None; // restores the terminal
        q
    }
}
