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
use crate::transport::{self, Transport};
use crate::tty::{self, RawGuard};

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
const BUF: usize = 64 * 1024;
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
    /// A -L connection (listener index).
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
}

impl Chan {
    fn new(kind: Kind, desc: String) -> Chan {
        Chan {
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

struct Listener {
    sock: TcpListener,
    fwd: Forward,
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
    chans: BTreeMap<u32, Chan>,
    tokens: HashMap<Token, u32>,
    next_token: usize,
    listeners: Vec<(Token, Listener)>,
    rfwds: Vec<RemoteFwd>,
    globals: VecDeque<Global>,
    connecting: HashMap<Token, Connecting>,
    auth: Option<Auth>,
    main: Option<u32>,
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
        let pc = proto_config(&cfg, &known).map_err(|e| fatal(format!("ressh: {e}")))?;
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
            tokens: HashMap::new(),
            next_token: FIRST_DYNAMIC,
            listeners: Vec::new(),
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
            quit: None,
        })
    }

    fn token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        t
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
            self.handle_timeouts();
            self.accept_local();
            self.pump_inputs(&mut buf);
            self.flush_outputs();
            self.reap_channels();
            self.check_done();
        }
        self.finish()
    }

    fn mark(&mut self, t: Token, readable: bool, writable: bool) {
        match t {
            T_READ => {
                self.t_read |= readable;
                // A TCP transport has one token for both directions.
                self.t_write |= writable;
            }
            T_WRITE => self.t_write |= writable,
            T_SIGNAL => {}
            _ => {
                if let Some(c) = self.connecting.get(&t) {
                    let _ = c;
                    if writable || readable {
                        self.finish_connect(t);
                    }
                    return;
                }
                let Some(&id) = self.tokens.get(&t) else {
                    return;
                };
                let Some(ch) = self.chans.get_mut(&id) else {
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
        for d in [self.kex_deadline, self.next_alive].into_iter().flatten() {
            t = Some(t.map_or(d, |x| x.min(d)));
        }
        // Inputs that cannot be polled (regular files) are read whenever the
        // channel can take data: no waiting then.
        let busy = self.conn.output().len() < OUT_HIGH
            && self.chans.iter().any(|(&id, c)| {
                c.open
                    && !c.closed
                    && !c.sent_eof
                    && c.in_ready
                    && c.input.as_ref().is_some_and(|f| f.mode == Mode::Always)
                    && (c.in_eof || self.conn.send_window(id) > 0)
            });
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
                    self.drain_events();
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
        if self.conn.poll_timeout().is_some_and(|t| now >= t) {
            if let Err(e) = self.conn.handle_timeout(now) {
                self.protocol_error(e);
                return;
            }
            self.drain_events();
        }
        if self.next_alive.is_some_and(|t| now >= t) {
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
        let Some(id) = self.main else { return };
        if !matches!(self.plan, Plan::Session { pty: true, .. }) {
            return;
        }
        if !self.chans.get(&id).is_some_and(|c| c.open && !c.closed) {
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
            Event::KexDone { first, algorithms } => {
                crate::debug1!(
                    "kex: {} host key {} cipher {} / {} mac {} / {}",
                    algorithms.kex,
                    algorithms.host_key,
                    algorithms.cipher_c2s,
                    algorithms.cipher_s2c,
                    algorithms.mac_c2s,
                    algorithms.mac_s2c
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
                if Some(id) == self.main {
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
                if let Some(c) = self.chans.get_mut(&id) {
                    c.recv_eof = true;
                }
            }
            Event::Closed { id } => {
                if let Some(c) = self.chans.get_mut(&id) {
                    c.closed = true;
                    c.close_sent = true;
                }
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

    fn start_auth(&mut self) {
        let mut agent = match &self.cfg.identity_agent {
            Some(p) if self.cfg.pubkey_authentication => match Agent::connect(p) {
                Ok(a) => Some(a),
                Err(e) => {
                    crate::debug1!("cannot reach agent at {}: {e}", p.display());
                    None
                }
            },
            _ => None,
        };
        let ids = if self.cfg.pubkey_authentication {
            identity::collect(&self.cfg, agent.as_mut())
        } else {
            Vec::new()
        };
        let mut a = Auth::new(&self.cfg, ids, agent);
        if self.untrusted {
            a.disable_interactive();
        }
        if let Err(m) = a.start(&mut self.conn) {
            self.set_quit(fatal(m));
        }
        self.auth = Some(a);
    }

    fn on_auth_success(&mut self) {
        if let Some(a) = self.auth.take() {
            crate::verbose!(
                "Authenticated to {} ({}) using {}.",
                self.cfg.host,
                self.transport.describe(),
                a.describe_success()
            );
        }
        self.authenticated = true;
        if self.cfg.server_alive_interval > 0 {
            self.next_alive =
                Some(Instant::now() + Duration::from_secs(self.cfg.server_alive_interval));
        }
        if let Err(q) = self.setup_forwards() {
            self.set_quit(q);
            return;
        }
        if let Err(q) = self.open_main() {
            self.set_quit(q);
        }
    }

    // ----- setting up -------------------------------------------------------

    fn setup_forwards(&mut self) -> Result<(), Quit> {
        if self.untrusted
            && (!self.cfg.local_forwards.is_empty() || !self.cfg.remote_forwards.is_empty())
        {
            crate::error!("Port forwarding is disabled to avoid man-in-the-middle attacks.");
            return Ok(());
        }
        for spec in self.cfg.local_forwards.clone() {
            let f = forward::parse(&spec, false).map_err(|e| fatal(format!("ressh: {e}")))?;
            let addrs = forward::bind_addrs(&f, self.cfg.gateway_ports)
                .map_err(|e| fatal(format!("ressh: {e}")))?;
            let mut bound = 0;
            let mut last_err = None;
            for a in addrs {
                match TcpListener::bind(a) {
                    Ok(mut l) => {
                        let t = self.token();
                        self.poll
                            .registry()
                            .register(&mut l, t, Interest::READABLE)
                            .map_err(|e| fatal(format!("ressh: {e}")))?;
                        crate::debug1!("Local forwarding listening on {a}.");
                        self.listeners.push((
                            t,
                            Listener {
                                sock: l,
                                fwd: f.clone(),
                            },
                        ));
                        bound += 1;
                    }
                    Err(e) => {
                        crate::debug1!("bind {a}: {e}");
                        last_err = Some(format!(
                            "bind [{}]:{}: {}",
                            a.ip(),
                            a.port(),
                            transport::strip_os_error(&e)
                        ));
                    }
                }
            }
            if bound == 0 {
                let m = format!(
                    "{}\nCould not request local forwarding.",
                    last_err.unwrap_or_else(|| "no address to bind".into())
                );
                if self.cfg.exit_on_forward_failure {
                    return Err(fatal(m));
                }
                crate::error!("{m}");
            }
        }
        for spec in self.cfg.remote_forwards.clone() {
            let f = forward::parse(&spec, true).map_err(|e| fatal(format!("ressh: {e}")))?;
            let req = GlobalReq::TcpipForward {
                address: forward::remote_bind(&f),
                port: f.port as u32,
            };
            self.conn
                .global_request(req, true)
                .map_err(|e| fatal(format!("ressh: {e}")))?;
            self.globals
                .push_back(Global::RemoteForward(self.rfwds.len()));
            self.rfwds.push(RemoteFwd {
                fwd: f,
                bound: None,
            });
        }
        Ok(())
    }

    fn attach_stdio(&mut self, id: u32, stderr: bool) -> Result<(), Quit> {
        let reg = self.poll.registry();
        let input = if self.cfg.stdin_null {
            LocalFd::devnull()
        } else {
            LocalFd::stdio(0, false, reg, T_STDIN)
        }
        .map_err(|e| fatal(format!("ressh: stdin: {e}")))?;
        let out = LocalFd::stdio(1, true, reg, T_STDOUT)
            .map_err(|e| fatal(format!("ressh: stdout: {e}")))?;
        let ch = self.chans.get_mut(&id).expect("channel just made");
        ch.in_ready = true;
        ch.input = Some(std::rc::Rc::new(input));
        ch.out = Some(Sink::new(std::rc::Rc::new(out)));
        ch.tokens.extend([T_STDIN, T_STDOUT]);
        if stderr {
            let err = LocalFd::stdio(2, true, reg, T_STDERR)
                .map_err(|e| fatal(format!("ressh: stderr: {e}")))?;
            ch.err = Some(Sink::new(std::rc::Rc::new(err)));
            ch.tokens.push(T_STDERR);
        }
        for t in [T_STDIN, T_STDOUT, T_STDERR] {
            self.tokens.insert(t, id);
        }
        Ok(())
    }

    fn open_main(&mut self) -> Result<(), Quit> {
        match self.plan.clone() {
            Plan::None => Ok(()),
            Plan::Stdio { host, port } => {
                let kind = ChannelKind::DirectTcpip {
                    host: host.clone(),
                    port: port as u32,
                    originator: "127.0.0.1".into(),
                    originator_port: 65535,
                };
                let id = self
                    .conn
                    .open_channel(kind)
                    .map_err(|e| fatal(format!("ressh: {e}")))?;
                self.chans.insert(
                    id,
                    Chan::new(Kind::Stdio, format!("stdio forward to {host}:{port}")),
                );
                self.main = Some(id);
                self.attach_stdio(id, false)
            }
            Plan::Session { pty, .. } => {
                self.modes = tty::terminal_modes(0);
                if pty && tty::isatty(0) {
                    match RawGuard::new(0) {
                        Ok(g) => self.raw = Some(g),
                        Err(e) => crate::debug1!("raw mode: {e}"),
                    }
                }
                if pty {
                    if let Some(c) = self.cfg.escape_char {
                        self.escape = Some(Escape::new(c));
                    }
                }
                let id = self
                    .conn
                    .open_channel(ChannelKind::Session)
                    .map_err(|e| fatal(format!("ressh: {e}")))?;
                self.chans
                    .insert(id, Chan::new(Kind::Main, "the session".into()));
                self.main = Some(id);
                self.attach_stdio(id, true)
            }
        }
    }

    fn on_opened(&mut self, id: u32) {
        let Some(ch) = self.chans.get_mut(&id) else {
            return;
        };
        ch.open = true;
        if ch.kind != Kind::Main {
            return;
        }
        let Plan::Session {
            command,
            subsystem,
            pty,
        } = self.plan.clone()
        else {
            return;
        };
        let mut reqs: Vec<(ChannelReq, Option<Req>)> = Vec::new();
        if pty {
            let term = std::env::var("TERM").unwrap_or_default();
            let fd = if tty::isatty(0) { 0 } else { 1 };
            let (cols, rows, w, h) = tty::window_size(fd).unwrap_or((80, 24, 0, 0));
            reqs.push((
                ChannelReq::PtyReq {
                    term,
                    cols,
                    rows,
                    width_px: w,
                    height_px: h,
                    modes: self.modes.clone(),
                },
                Some(Req::Pty),
            ));
        }
        let mut sent_env: Vec<String> = Vec::new();
        for pat in &self.cfg.send_env {
            for (k, v) in std::env::vars_os() {
                let k = k.to_string_lossy().into_owned();
                if config::match_pattern_list(&k, pat, false) && !sent_env.contains(&k) {
                    crate::debug1!("Sending env {k}");
                    use std::os::unix::ffi::OsStrExt;
                    reqs.push((
                        ChannelReq::Env {
                            name: k.clone(),
                            value: v.as_bytes().to_vec(),
                        },
                        None,
                    ));
                    sent_env.push(k);
                }
            }
        }
        for (k, v) in &self.cfg.set_env {
            crate::debug1!("Setting env {k} = {v}");
            reqs.push((
                ChannelReq::Env {
                    name: k.clone(),
                    value: v.as_bytes().to_vec(),
                },
                None,
            ));
        }
        match (command, subsystem) {
            (Some(c), true) => {
                crate::debug1!("Sending subsystem: {c}");
                reqs.push((ChannelReq::Subsystem(c), Some(Req::Subsystem)));
            }
            (Some(c), false) => {
                crate::debug1!("Sending command: {c}");
                reqs.push((ChannelReq::Exec(c.into_bytes()), Some(Req::Exec)));
            }
            (None, _) => reqs.push((ChannelReq::Shell, Some(Req::Shell))),
        }
        for (r, kind) in reqs {
            if let Err(e) = self.conn.channel_request(id, r, kind.is_some()) {
                self.set_quit(fatal(format!("ressh: {e}")));
                return;
            }
            if let Some(k) = kind {
                if let Some(ch) = self.chans.get_mut(&id) {
                    ch.replies.push_back(k);
                }
            }
        }
    }

    fn on_reply(&mut self, id: u32, success: bool) {
        let Some(ch) = self.chans.get_mut(&id) else {
            return;
        };
        let Some(r) = ch.replies.pop_front() else {
            return;
        };
        if success {
            return;
        }
        match r {
            Req::Pty => crate::error!("PTY allocation request failed on channel {id}"),
            Req::Shell => self.set_quit(fatal(format!("shell request failed on channel {id}"))),
            Req::Exec => self.set_quit(fatal(format!("exec request failed on channel {id}"))),
            Req::Subsystem => {
                self.set_quit(fatal(format!("subsystem request failed on channel {id}")))
            }
        }
    }

    fn on_open_failed(&mut self, id: u32, r: u32, description: &str) {
        let why = match r {
            msg::open_failure::ADMINISTRATIVELY_PROHIBITED => "administratively prohibited",
            msg::open_failure::CONNECT_FAILED => "connect failed",
            msg::open_failure::UNKNOWN_CHANNEL_TYPE => "unknown channel type",
            msg::open_failure::RESOURCE_SHORTAGE => "resource shortage",
            _ => "unknown reason",
        };
        let text = format!(
            "channel {id}: open failed: {why}: {}",
            auth::clean(description)
        );
        let kind = self.chans.get(&id).map(|c| c.kind);
        match kind {
            Some(Kind::Main) => self.set_quit(fatal(text)),
            Some(Kind::Stdio) => self.set_quit(fatal(format!("{text}\nstdio forwarding failed"))),
            Some(_) => {
                crate::info!("{text}");
                self.drop_chan(id);
            }
            None => {}
        }
    }

    fn on_global_reply(&mut self, success: bool, data: &[u8]) {
        match self.globals.pop_front() {
            Some(Global::Keepalive) | None => {}
            Some(Global::RemoteForward(i)) => {
                let f = self.rfwds[i].fwd.clone();
                if success {
                    if f.port == 0 {
                        let port = msg::RequestSuccess(data.to_vec()).bound_port().unwrap_or(0);
                        self.rfwds[i].bound = Some(port);
                        crate::info!(
                            "Allocated port {port} for remote forward to {}:{}",
                            f.host,
                            f.host_port
                        );
                    } else {
                        self.rfwds[i].bound = Some(f.port as u32);
                    }
                    crate::debug1!("remote forward success for: listen {}", f.port);
                } else {
                    let m = format!(
                        "Warning: remote port forwarding failed for listen port {}",
                        f.port
                    );
                    if self.cfg.exit_on_forward_failure {
                        self.set_quit(fatal(m));
                    } else {
                        crate::error!("{m}");
                    }
                }
            }
        }
    }

    fn on_open_request(&mut self, id: u32, kind: ChannelKind) {
        let ChannelKind::ForwardedTcpip {
            address,
            port,
            originator,
            originator_port,
        } = kind
        else {
            crate::debug1!("refusing a {} channel from the server", kind.name());
            let _ = self.conn.reject_channel(
                id,
                msg::open_failure::ADMINISTRATIVELY_PROHIBITED,
                "open refused by client",
            );
            return;
        };
        let idx = self
            .rfwds
            .iter()
            .position(|r| r.bound == Some(port) && forward::remote_bind(&r.fwd) == address);
        let idx = idx.or_else(|| self.rfwds.iter().position(|r| r.bound == Some(port)));
        let Some(idx) = idx else {
            crate::info!("WARNING: server requests forwarding for unknown listen_port {port}");
            let _ = self.conn.reject_channel(
                id,
                msg::open_failure::ADMINISTRATIVELY_PROHIBITED,
                "unknown port",
            );
            return;
        };
        let f = self.rfwds[idx].fwd.clone();
        crate::debug1!(
            "client_request_forwarded_tcpip: listen {address} port {port}, originator \
             {originator} port {originator_port} -> {}:{}",
            f.host,
            f.host_port
        );
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(f.host.as_str(), f.host_port))
            .ok()
            .and_then(|mut a| a.next());
        let sock = addr.and_then(|a| mio::net::TcpStream::connect(a).ok());
        let Some(mut sock) = sock else {
            crate::info!("connect_to {} port {}: failed.", f.host, f.host_port);
            let _ = self.conn.reject_channel(
                id,
                msg::open_failure::CONNECT_FAILED,
                "Connection refused",
            );
            return;
        };
        let t = self.token();
        if self
            .poll
            .registry()
            .register(&mut sock, t, Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            let _ =
                self.conn
                    .reject_channel(id, msg::open_failure::RESOURCE_SHORTAGE, "cannot poll");
            return;
        }
        self.connecting.insert(
            t,
            Connecting {
                id,
                rfwd: idx,
                sock,
            },
        );
    }

    /// A -R connection attempt made progress.
    fn finish_connect(&mut self, t: Token) {
        let Some(c) = self.connecting.get(&t) else {
            return;
        };
        let done = match c.sock.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match c.sock.peer_addr() {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Err(e),
            },
        };
        let mut c = self.connecting.remove(&t).expect("present");
        let _ = self.poll.registry().deregister(&mut c.sock);
        let f = self.rfwds[c.rfwd].fwd.clone();
        match done {
            Err(e) => {
                crate::info!(
                    "connect_to {} port {}: failed: {}",
                    f.host,
                    f.host_port,
                    transport::strip_os_error(&e)
                );
                let _ = self.conn.reject_channel(
                    c.id,
                    msg::open_failure::CONNECT_FAILED,
                    "Connection refused",
                );
            }
            Ok(()) => {
                // SAFETY: the socket's fd moves into an OwnedFd; mio no longer owns it.
                let fd = unsafe { OwnedFd::from_raw_fd(c.sock.into_raw_fd()) };
                let t2 = self.token();
                match LocalFd::socket(fd, self.poll.registry(), t2) {
                    Ok(l) => {
                        if self.conn.accept_channel(c.id).is_err() {
                            return;
                        }
                        let mut ch = Chan::new(
                            Kind::Remote(c.rfwd),
                            format!("remote forward to {}:{}", f.host, f.host_port),
                        );
                        let l = std::rc::Rc::new(l);
                        ch.open = true;
                        ch.input = Some(l.clone());
                        ch.out = Some(Sink::new(l));
                        ch.tokens.push(t2);
                        self.tokens.insert(t2, c.id);
                        self.chans.insert(c.id, ch);
                    }
                    Err(_) => {
                        let _ = self.conn.reject_channel(
                            c.id,
                            msg::open_failure::RESOURCE_SHORTAGE,
                            "cannot poll",
                        );
                    }
                }
            }
        }
    }

    /// Accepts connections on -L listeners.
    fn accept_local(&mut self) {
        if !self.authenticated || self.quit.is_some() {
            return;
        }
        for i in 0..self.listeners.len() {
            loop {
                let (sock, peer) = match self.listeners[i].1.sock.accept() {
                    Ok(x) => x,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        crate::debug1!("accept: {e}");
                        break;
                    }
                };
                let f = self.listeners[i].1.fwd.clone();
                let kind = ChannelKind::DirectTcpip {
                    host: f.host.clone(),
                    port: f.host_port as u32,
                    originator: peer.ip().to_string(),
                    originator_port: peer.port() as u32,
                };
                let id = match self.conn.open_channel(kind) {
                    Ok(id) => id,
                    Err(e) => {
                        crate::info!("cannot open a channel for {peer}: {e}");
                        continue;
                    }
                };
                crate::debug1!(
                    "Connection to port {} forwarding to {}:{} requested (channel {id}).",
                    f.port,
                    f.host,
                    f.host_port
                );
                // SAFETY: the accepted socket's fd moves into an OwnedFd.
                let fd = unsafe { OwnedFd::from_raw_fd(sock.into_raw_fd()) };
                let t = self.token();
                let Ok(l) = LocalFd::socket(fd, self.poll.registry(), t) else {
                    let _ = self.conn.close_channel(id);
                    continue;
                };
                let l = std::rc::Rc::new(l);
                let mut ch = Chan::new(
                    Kind::Local(i),
                    format!("port {} to {}:{} from {peer}", f.port, f.host, f.host_port),
                );
                ch.input = Some(l.clone());
                ch.out = Some(Sink::new(l));
                ch.in_ready = true;
                ch.tokens.push(t);
                self.tokens.insert(t, id);
                self.chans.insert(id, ch);
            }
        }
    }

    // ----- the data path -----------------------------------------------------

    fn on_data(&mut self, id: u32, ext: bool, data: Vec<u8>) {
        let n = data.len();
        let Some(ch) = self.chans.get_mut(&id) else {
            let _ = self.conn.consume(id, n);
            return;
        };
        let sink = if ext {
            ch.err.as_mut()
        } else {
            ch.out.as_mut()
        };
        match sink {
            Some(s) if !s.dead => {
                if s.off > 0 && s.off == s.buf.len() {
                    s.buf.clear();
                    s.off = 0;
                }
                s.buf.extend_from_slice(&data);
            }
            _ => {
                let _ = self.conn.consume(id, n);
            }
        }
    }

    fn flush_outputs(&mut self) {
        let ids: Vec<u32> = self.chans.keys().copied().collect();
        for id in ids {
            self.flush_chan(id);
        }
    }

    fn flush_chan(&mut self, id: u32) {
        let Some(ch) = self.chans.get_mut(&id) else {
            return;
        };
        let mut consumed = 0;
        let mut failed = false;
        for s in [ch.out.as_mut(), ch.err.as_mut()].into_iter().flatten() {
            while s.ready && !s.dead && s.pending() > 0 {
                match s.fd.write(&s.buf[s.off..]) {
                    Ok(n) => {
                        s.off += n;
                        consumed += n;
                        if s.fd.mode == Mode::Poll && n == 0 {
                            s.ready = false;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.ready = false,
                    Err(e) => {
                        crate::debug1!("channel {id}: write failed: {e}");
                        consumed += s.pending();
                        s.dead = true;
                        s.buf.clear();
                        s.off = 0;
                        failed = true;
                    }
                }
            }
            if s.pending() == 0 && s.off > 0 {
                s.buf.clear();
                s.off = 0;
            } else if s.off > (1 << 20) {
                s.buf.drain(..s.off);
                s.off = 0;
            }
        }
        let forward = matches!(ch.kind, Kind::Local(_) | Kind::Remote(_));
        if ch.recv_eof && !ch.out_shut && ch.drained() {
            ch.out_shut = true;
            if forward {
                if let Some(s) = &ch.out {
                    s.fd.shutdown_write();
                }
            }
        }
        let want_close =
            forward && !ch.close_sent && ch.open && (failed || (ch.sent_eof && ch.out_shut));
        if consumed > 0 && !ch.closed {
            let _ = self.conn.consume(id, consumed);
        }
        if want_close {
            if let Some(ch) = self.chans.get_mut(&id) {
                ch.close_sent = true;
            }
            let _ = self.conn.close_channel(id);
        }
    }

    fn pump_inputs(&mut self, buf: &mut [u8]) {
        let ids: Vec<u32> = self.chans.keys().copied().collect();
        for id in ids {
            if self.quit.is_some() {
                return;
            }
            self.pump_chan(id, buf);
        }
    }

    fn pump_chan(&mut self, id: u32, buf: &mut [u8]) {
        loop {
            let Some(ch) = self.chans.get_mut(&id) else {
                return;
            };
            if !ch.open || ch.closed || ch.sent_eof || ch.close_sent {
                return;
            }
            if !ch.unsent.is_empty() {
                match self.conn.send_data(id, &ch.unsent) {
                    Ok(n) => {
                        ch.unsent.drain(..n);
                    }
                    Err(_) => return,
                }
                if !ch.unsent.is_empty() {
                    return;
                }
            }
            if ch.in_eof {
                ch.sent_eof = true;
                let _ = self.conn.send_eof(id);
                return;
            }
            let window = self.conn.send_window(id);
            if !ch.in_ready || window == 0 || self.conn.output().len() >= OUT_HIGH {
                return;
            }
            let Some(input) = ch.input.clone() else {
                return;
            };
            let want = window.min(buf.len());
            match input.read(&mut buf[..want]) {
                Ok(0) => {
                    ch.in_eof = true;
                    ch.in_ready = false;
                    crate::debug2!("channel {id}: local input at EOF");
                }
                Ok(n) => {
                    if input.mode == Mode::Tty && !crate::fdio::poll_now(input.raw(), false) {
                        ch.in_ready = false;
                    }
                    let is_main = ch.kind == Kind::Main;
                    if is_main && self.escape.is_some() {
                        let outs = self.escape.as_mut().expect("checked").feed(&buf[..n]);
                        for o in outs {
                            match o {
                                escape::Out::Data(d) => {
                                    if let Some(ch) = self.chans.get_mut(&id) {
                                        ch.unsent.extend_from_slice(&d);
                                    }
                                }
                                escape::Out::Cmd(c) => {
                                    // Send what came before the escape first.
                                    self.send_unsent(id);
                                    self.escape_cmd(c);
                                    if self.quit.is_some() {
                                        return;
                                    }
                                }
                            }
                        }
                    } else {
                        ch.unsent.extend_from_slice(&buf[..n]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ch.in_ready = false;
                    return;
                }
                Err(e) => {
                    crate::debug1!("channel {id}: read failed: {e}");
                    ch.in_eof = true;
                    if matches!(ch.kind, Kind::Local(_) | Kind::Remote(_)) {
                        ch.close_sent = true;
                        let _ = self.conn.close_channel(id);
                        return;
                    }
                }
            }
        }
    }

    fn send_unsent(&mut self, id: u32) {
        if let Some(ch) = self.chans.get_mut(&id) {
            if !ch.unsent.is_empty() {
                if let Ok(n) = self.conn.send_data(id, &ch.unsent) {
                    ch.unsent.drain(..n);
                }
            }
        }
    }

    fn escape_cmd(&mut self, c: escape::Cmd) {
        let esc = self.escape.as_ref().map(|e| e.char()).unwrap_or(b'~');
        let e = if esc < 0x20 {
            format!("^{}", (esc + b'@') as char)
        } else {
            (esc as char).to_string()
        };
        match c {
            escape::Cmd::Disconnect => {
                crate::log::raw_text(&format!("{e}.\n"));
                self.set_quit(Quit {
                    code: 255,
                    msg: Some(format!("Connection to {} closed.", self.cfg.host)),
                });
            }
            escape::Cmd::Suspend => {
                crate::log::raw_text(&format!("{e}^Z [suspend ressh]\n"));
                if let Some(g) = &self.raw {
                    g.suspend();
                }
                // SAFETY: stopping ourselves; the default action of SIGTSTP.
                unsafe { libc::raise(libc::SIGTSTP) };
                if let Some(g) = &self.raw {
                    g.resume();
                }
                self.send_window_change();
            }
            escape::Cmd::ListConnections => {
                let mut s = String::from("The following connections are open:\n");
                for (id, ch) in &self.chans {
                    s.push_str(&format!("  #{id} {}\n", ch.desc));
                }
                crate::log::raw_text(&s);
            }
            escape::Cmd::Help => {
                let h = self.escape.as_ref().map(|x| x.help()).unwrap_or_default();
                crate::log::raw_text(&h);
            }
            escape::Cmd::Rekey => {
                crate::log::raw_text(&format!("{e}R\n"));
                let _ = self.conn.rekey();
            }
            escape::Cmd::Break => {
                if let Some(id) = self.main {
                    let mut data = Vec::new();
                    data.extend_from_slice(&1000u32.to_be_bytes());
                    let _ = self.conn.channel_request(
                        id,
                        ChannelReq::Other {
                            name: "break".into(),
                            data,
                        },
                        false,
                    );
                }
            }
            escape::Cmd::MoreVerbose | escape::Cmd::LessVerbose => {
                use crate::log::{level, set_level, Level};
                let l = level() as u8;
                let n = if c == escape::Cmd::MoreVerbose {
                    (l + 1).min(Level::Debug3 as u8)
                } else {
                    l.saturating_sub(1).max(Level::Error as u8)
                };
                let lv = [
                    Level::Quiet,
                    Level::Fatal,
                    Level::Error,
                    Level::Info,
                    Level::Verbose,
                    Level::Debug1,
                    Level::Debug2,
                    Level::Debug3,
                ][n as usize];
                set_level(lv);
                crate::log::raw_text(&format!("{e}V [LogLevel {lv:?}]\n"));
            }
            escape::Cmd::Unsupported(b) => {
                crate::log::raw_text(&format!("{e}{} is not supported by ressh\n", b as char));
            }
        }
    }

    /// Drops channels that are closed and drained.
    fn reap_channels(&mut self) {
        let done: Vec<u32> = self
            .chans
            .iter()
            .filter(|(_, c)| c.closed && c.drained())
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if Some(id) == self.main {
                continue; // kept until exit for its status
            }
            self.drop_chan(id);
        }
    }

    fn drop_chan(&mut self, id: u32) {
        if let Some(mut ch) = self.chans.remove(&id) {
            for t in &ch.tokens {
                self.tokens.remove(t);
            }
            let reg = self.poll.registry();
            let mut fds: Vec<std::rc::Rc<LocalFd>> = Vec::new();
            fds.extend(ch.input.take());
            fds.extend(ch.out.take().map(|s| s.fd));
            fds.extend(ch.err.take().map(|s| s.fd));
            for f in fds {
                if let Ok(mut f) = std::rc::Rc::try_unwrap(f) {
                    f.deregister(reg);
                }
            }
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
        let others = self.chans.keys().any(|&id| id != main) || !self.connecting.is_empty();
        if others && !self.t_dead {
            return;
        }
        let code = match (self.exit_status, &self.exit_signal) {
            (Some(s), _) => s,
            (None, Some(sig)) => {
                crate::info!("Remote command killed by signal {sig}.");
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
        let ids: Vec<u32> = self.chans.keys().copied().collect();
        for id in ids {
            self.drop_chan(id);
        }
        self.transport.deregister(self.poll.registry());
        self.transport.close();
        self.raw = None; // restores the terminal
        q
    }
}
