//! The event loop of one connection: the client's socket, every child's
//! pipes or pty, forwarded sockets and listeners, SIGCHLD, the monitor's
//! endpoint, and timers (rekey by time, ClientAlive, detach, reconnect).
//!
//! Readiness is edge-triggered (mio): each fd keeps "readable"/"writable"
//! flags that an event sets and an EAGAIN clears, so an fd is never
//! re-registered. After every batch of input the loop pumps every channel
//! again; a channel's fds are read only while its send window is open, which
//! also notices a window reopened by WINDOW_ADJUST or by an ACK of the
//! resilience extension even when the engine raised no `Event::Writable`
//! (it does so only after a cut-short send). Reading from the client stops
//! while more than [`OUT_HIGH`] bytes wait to be sent to it, and so does
//! reading from local fds.
//!
//! With the resilience extension active, a transport that ends without
//! DISCONNECT detaches the session (see [`resume`]): channels, children and
//! forwards stay, and what they produce waits in the engine's retransmit
//! buffer, whose cap closes the send windows; nothing is read from them
//! beyond it.
//!
//! Names in direct-tcpip requests are resolved on a short-lived thread
//! (numeric addresses and `localhost` directly), so DNS never blocks the
//! loop; nor do host-key signatures for a rekey (see [`crate::signer`]).

mod resume;

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ressh_ipc::msg::FromSession;
use ressh_ipc::Endpoint;

use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use ressh_proto::error::reason;
use ressh_proto::msg::{open_failure, ChannelKind, ChannelReq, GlobalReq};
use ressh_proto::wire::printable;

use crate::idle::Idle;
use ressh_proto::{Connection, Event};

use crate::channels::relay::Relay;
use crate::channels::session::{ExitKind, SessionChan};
use crate::channels::streamlocal::{self, UnixForward};
use crate::channels::tcpip::{quick_resolve, Listener, Status, TcpChan};
use crate::channels::{Ctx, Info, Target, OUT_HIGH};
use crate::signer::Signer;
use crate::Error;
use ressh_ipc::permit::PORT_STREAMLOCAL;

use resume::{Detached, Monitor, Pending};

/// The client's transport.
const SOCK: Token = Token(0);
const SIGNALS: Token = Token(1);
const WAKER: Token = Token(2);
/// The monitor's endpoint.
const IPC: Token = Token(3);
/// The transport of a reconnect not yet confirmed.
const NEW_SOCK: Token = Token(4);
/// Tokens NEW_SOCK.. for the transports of pending reconnects, one each.
const NEW_SOCKS: usize = ressh_proto::resilience::MAX_PENDING_RECONNECTS;
const FIRST_TOKEN: usize = 16;

/// Bytes read from the client or a local fd at once.
const CHUNK: usize = 256 * 1024;
/// Rounds of work between polls, so that a busy transfer does not starve
/// signals, listeners and timers.
const MAX_ROUNDS: usize = 64;
/// How long queued output may take to drain once the session ends.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// A resilient client that announced its keepalive interval K is taken for
/// gone after this many intervals without a packet from it
/// (docs/PROTOCOL.md §4): the transport is lost and the session detaches.
const SILENT_INTERVALS: u32 = 3;
/// ... but never after less than this.
const SILENCE_FLOOR: Duration = Duration::from_secs(10);

enum Chan {
    Session(SessionChan),
    Tcp(TcpChan),
}

/// ClientAliveInterval / ClientAliveCountMax, and when the client was last
/// heard from (for its announced keepalive interval).
struct Alive {
    interval: Option<Duration>,
    max: u32,
    missed: u32,
    deadline: Option<Instant>,
    last_heard: Instant,
}

impl Alive {
    fn heard(&mut self, now: Instant) {
        self.missed = 0;
        self.deadline = self.interval.map(|i| now + i);
        self.last_heard = now;
    }
}

type Resolved = (u32, io::Result<Vec<SocketAddr>>);

/// A TCP connection to the client and its readiness.
struct Wire {
    stream: TcpStream,
    readable: bool,
    writable: bool,
    /// Bytes to send before the engine's output (the tail of a reconnect
    /// reply that was not written yet when the session moved here).
    pre: Vec<u8>,
}

impl Wire {
    fn new(stream: TcpStream) -> Wire {
        Wire {
            stream,
            readable: true,
            writable: true,
            pre: Vec::new(),
        }
    }

    fn note(&mut self, ev: &mio::event::Event) {
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.readable = true;
        }
        if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
            self.writable = true;
        }
    }
}

pub struct Session {
    poll: Poll,
    conn: Connection,
    /// The client's transport; None while detached.
    wire: Option<Wire>,
    /// The monitor's endpoint: signatures, tokens, routed reconnects.
    monitor: Monitor,
    /// A rekey's host-key signature asked of the monitor.
    signer: Signer,
    /// Set while the session waits for a reconnect.
    detached: Option<Detached>,
    /// Reconnects accepted by [`Connection::accept_reconnect`] and not yet
    /// committed or abandoned, oldest first (at most
    /// [`ressh_proto::resilience::MAX_PENDING_RECONNECTS`]).
    pending: Vec<Pending>,
    next_pending: u64,
    ctx: Ctx,
    chans: HashMap<u32, Chan>,
    listeners: HashMap<u64, Listener>,
    /// streamlocal-forward listeners (ids from `next_listener` too).
    unix_forwards: HashMap<u64, UnixForward>,
    next_listener: u64,
    /// Relays of closed channels still writing what the client sent.
    lingering: HashMap<u64, Relay>,
    next_linger: u64,
    signal_pipe: UnixStream,
    term_signal: Arc<AtomicUsize>,
    waker: Arc<Waker>,
    resolved_tx: Sender<Resolved>,
    resolved_rx: Receiver<Resolved>,
    alive: Alive,
    /// ChannelTimeout and UnusedConnectionTimeout.
    idle: Idle,
    /// Replies to the client's global requests, in the order they came
    /// (RFC 4254 §4): a host key proof waits for the monitor's signatures
    /// (None), and the replies behind it wait with it.
    global_replies: VecDeque<Option<(bool, Vec<u8>)>>,
    scratch: Vec<u8>,
    /// Set when the session is over; the loop then flushes and returns.
    ended: bool,
}

/// `what` the event loop needed of the system failed.
fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io { what, source }
}

impl Session {
    pub fn new(
        conn: Connection,
        sock: std::net::TcpStream,
        info: Info,
        endpoint: Arc<Endpoint>,
    ) -> Result<Session, Error> {
        let poll = Poll::new().map_err(io_err("poll"))?;
        let registry = poll.registry().try_clone().map_err(io_err("poll"))?;
        let sock = resume::into_mio(sock, poll.registry(), SOCK)?;
        poll.registry()
            .register(
                &mut SourceFd(&endpoint.as_raw_fd()),
                IPC,
                Interest::READABLE,
            )
            .map_err(io_err("poll"))?;

        // SIGCHLD and the terminating signals wake the loop through a pipe;
        // which terminating signal came is kept in a flag.
        let (signal_pipe, wr) = UnixStream::pair().map_err(io_err("signal pipe"))?;
        signal_pipe
            .set_nonblocking(true)
            .and_then(|_| wr.set_nonblocking(true))
            .map_err(io_err("signal pipe"))?;
        let term_signal = Arc::new(AtomicUsize::new(0));
        for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
            signal_hook::flag::register_usize(sig, term_signal.clone(), sig as usize)
                .map_err(io_err("signal"))?;
        }
        for sig in [libc::SIGCHLD, libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
            let w = wr.try_clone().map_err(io_err("signal pipe"))?;
            signal_hook::low_level::pipe::register(sig, w).map_err(io_err("signal"))?;
        }
        poll.registry()
            .register(
                &mut SourceFd(&signal_pipe.as_raw_fd()),
                SIGNALS,
                Interest::READABLE,
            )
            .map_err(io_err("poll"))?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(io_err("poll"))?);
        let (resolved_tx, resolved_rx) = mpsc::channel();

        let p = &info.policy;
        let interval = (p.client_alive_interval_secs > 0)
            .then(|| Duration::from_secs(p.client_alive_interval_secs));
        let mut alive = Alive {
            interval,
            max: p.client_alive_count_max,
            missed: 0,
            deadline: None,
            last_heard: Instant::now(),
        };
        alive.heard(Instant::now());
        let idle = Idle::new(
            p.channel_timeouts
                .iter()
                .map(|(t, s)| (t.clone(), Duration::from_secs(*s)))
                .collect(),
            p.unused_connection_timeout_secs
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            Instant::now(),
        );
        Ok(Session {
            poll,
            conn,
            wire: Some(Wire::new(sock)),
            monitor: Monitor::new(endpoint),
            signer: Signer::default(),
            detached: None,
            pending: Vec::new(),
            next_pending: 0,
            ctx: Ctx::new(registry, info, FIRST_TOKEN),
            chans: HashMap::new(),
            listeners: HashMap::new(),
            unix_forwards: HashMap::new(),
            next_listener: 0,
            lingering: HashMap::new(),
            next_linger: 0,
            signal_pipe,
            term_signal,
            waker,
            resolved_tx,
            resolved_rx,
            alive,
            idle,
            global_replies: VecDeque::new(),
            scratch: vec![0; CHUNK],
            ended: false,
        })
    }

    /// Runs until the client disconnects or the connection ends. Errors are
    /// internal failures (the caller logs them and exits non-zero).
    pub fn run(&mut self) -> Result<(), Error> {
        // Bytes the kex worker read past the end of authentication.
        let r = self.conn.handle_input(&[], Instant::now());
        self.after_input(r);
        self.send_tokens();
        self.announce_host_keys();
        let mut events = Events::with_capacity(256);
        while !self.ended {
            let more = self.work();
            if self.ended {
                break;
            }
            let timeout = match more {
                true => Some(Duration::ZERO),
                false => self
                    .next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now())),
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("poll")(e)),
            }
            for ev in events.iter() {
                self.dispatch(ev)?;
            }
            self.timers();
            if let Some(w) = self.conn.window_grown() {
                crate::log!("channel receive window grew to {w} bytes");
            }
        }
        self.flush();
        self.cleanup();
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        let pending = self.pending.iter().map(|p| p.deadline).min();
        match &self.detached {
            // Detached: no engine timers (nothing can be sent) and no
            // ClientAlive, only the detach timeout.
            Some(d) => [d.deadline, pending].into_iter().flatten().min(),
            None => [
                self.conn.poll_timeout(),
                self.alive.deadline,
                self.silence_deadline(),
                self.signer.deadline(),
                self.idle.deadline(),
                pending,
            ]
            .into_iter()
            .flatten()
            .min(),
        }
    }

    /// When an attached client that announced its keepalive interval K has
    /// been silent for [`SILENT_INTERVALS`] × K (at least
    /// [`SILENCE_FLOOR`]); None without an announcement (older clients,
    /// keepalives off, no resilience) or while detached.
    fn silence_deadline(&self) -> Option<Instant> {
        if self.wire.is_none() || self.detached.is_some() {
            return None;
        }
        let k = self.conn.peer_keepalive()?;
        let limit = k.checked_mul(SILENT_INTERVALS)?.max(SILENCE_FLOOR);
        // None (never) if a huge announced interval overflows the clock.
        self.alive.last_heard.checked_add(limit)
    }

    fn end(&mut self) {
        self.ended = true;
    }

    /// Logs a proto error that ended the connection.
    fn after_input(&mut self, r: ressh_proto::Result<()>) {
        if let Err(e) = r {
            log!("disconnecting: {e}");
            self.end();
        }
    }

    fn dispatch(&mut self, ev: &mio::event::Event) -> Result<(), Error> {
        match ev.token() {
            SOCK => {
                if let Some(w) = &mut self.wire {
                    w.note(ev);
                }
            }
            t if (NEW_SOCK.0..NEW_SOCK.0 + NEW_SOCKS).contains(&t.0) => {
                if let Some(w) = self
                    .pending
                    .iter_mut()
                    .find(|p| p.token == t)
                    .and_then(|p| p.wire.as_mut())
                {
                    w.note(ev);
                }
            }
            IPC => self.monitor.readable = true,
            SIGNALS => self.signals(),
            WAKER => self.resolutions(),
            token => match self.ctx.target(token) {
                Some(Target::Chan(id)) => match self.chans.get_mut(&id) {
                    Some(Chan::Session(s)) => s.relay().ready(token, ev),
                    Some(Chan::Tcp(t)) => {
                        let r = t.ready(&mut self.conn, &mut self.ctx, token, ev);
                        self.tcp_status(id, r);
                    }
                    None => {}
                },
                Some(Target::Linger(k)) => {
                    if let Some(r) = self.lingering.get_mut(&k) {
                        r.ready(token, ev);
                    }
                }
                Some(Target::X11(id)) => {
                    let new = match self.chans.get_mut(&id) {
                        Some(Chan::Session(s)) => s.x11_accept(&mut self.conn, &mut self.ctx),
                        _ => Vec::new(),
                    };
                    for c in new {
                        self.chans.insert(c.id(), Chan::Tcp(c));
                    }
                }
                Some(Target::Agent) => {
                    if let Some(mut a) = self.ctx.agent.take() {
                        for c in a.accept(&mut self.conn, &mut self.ctx) {
                            self.chans.insert(c.id(), Chan::Tcp(c));
                        }
                        self.ctx.agent = Some(a);
                    }
                }
                Some(Target::Listener(lid)) => {
                    if let Some(l) = self.listeners.get_mut(&lid) {
                        for c in l.accept(&mut self.conn, &mut self.ctx) {
                            self.idle.typed(c.id(), "forwarded-tcpip", Instant::now());
                            self.chans.insert(c.id(), Chan::Tcp(c));
                        }
                    }
                }
                Some(Target::StreamLocal(lid)) => {
                    if let Some(l) = self.unix_forwards.get_mut(&lid) {
                        for c in l.accept(&mut self.conn, &mut self.ctx) {
                            let kind = "forwarded-streamlocal@openssh.com";
                            self.idle.typed(c.id(), kind, Instant::now());
                            self.chans.insert(c.id(), Chan::Tcp(c));
                        }
                    }
                }
                None => {}
            },
        }
        Ok(())
    }

    fn tcp_status(&mut self, id: u32, r: ressh_proto::Result<Status>) {
        match r {
            Ok(Status::Alive) => {}
            Ok(Status::Gone) => self.forget(id),
            Err(e) => self.chan_error(id, e),
        }
    }

    /// A channel operation failed: with the connection gone the session
    /// ends, otherwise only the channel is closed.
    fn chan_error(&mut self, id: u32, e: ressh_proto::Error) {
        if self.conn.is_closed() {
            log!("connection closed: {e}");
            self.end();
            return;
        }
        log!("channel {id}: {e}");
        // Closing an open channel fails only when the connection ends with
        // it (what waits for the peer passed its bound: the session ends)
        // or by a misuse of the engine (a bug here: logged; the session
        // goes on).
        if let Err(e) = self.conn.close_channel(id) {
            log!("channel {id}: closing it: {e}");
            if self.conn.is_closed() {
                self.end();
            }
        }
    }

    /// The channel is closed on both sides: release it, but first let what
    /// the client sent reach the local side (as OpenSSH drains a channel's
    /// output buffer before closing its fd).
    fn closed(&mut self, id: u32) {
        self.idle.closed(id, Instant::now());
        self.ctx.children.retain(|_, c| *c != id);
        let mut relay = match self.chans.remove(&id) {
            Some(Chan::Session(s)) => s.into_relay(&mut self.ctx),
            Some(Chan::Tcp(t)) => t.into_relay(&mut self.ctx),
            None => return,
        };
        let key = self.next_linger;
        if relay.linger(&mut self.ctx, Target::Linger(key)) {
            self.next_linger += 1;
            self.lingering.insert(key, relay);
        }
    }

    fn forget(&mut self, id: u32) {
        self.idle.closed(id, Instant::now());
        // A child still running is reaped, but no longer reported.
        self.ctx.children.retain(|_, c| *c != id);
        match self.chans.remove(&id) {
            Some(Chan::Session(mut s)) => s.close(&mut self.ctx),
            Some(Chan::Tcp(mut t)) => t.close(&mut self.ctx),
            None => {}
        }
    }

    // ----- moving bytes ----------------------------------------------------

    /// Does what can be done without waiting; returns whether more work is
    /// left (the round limit was reached).
    fn work(&mut self) -> bool {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut more = false;
        for round in 0.. {
            let mut progress = self.service_monitor();
            progress |= self.pump_pending(&mut scratch);
            if self.ended {
                break;
            }
            progress |= self.read_socket(&mut scratch);
            self.drain_events();
            let ids: Vec<u32> = self.chans.keys().copied().collect();
            for id in ids {
                progress |= self.pump_chan(id, &mut scratch);
            }
            progress |= self.pump_lingering(&mut scratch);
            self.drain_events();
            for m in std::mem::take(&mut self.ctx.to_monitor) {
                if let Err(e) = self.monitor.send(&m) {
                    log!("monitor: {e}");
                }
            }
            progress |= self.write_socket();
            if self.conn.is_closed() {
                self.end();
            }
            if self.ended || !progress {
                break;
            }
            if round + 1 == MAX_ROUNDS {
                more = true;
                break;
            }
        }
        self.scratch = scratch;
        more
    }

    fn pump_chan(&mut self, id: u32, scratch: &mut [u8]) -> bool {
        let (conn, ctx) = (&mut self.conn, &mut self.ctx);
        let r = match self.chans.get_mut(&id) {
            Some(Chan::Session(s)) => s
                .relay()
                .pump(conn, ctx, scratch)
                .and_then(|p| s.poll_finish(conn).map(|_| p)),
            Some(Chan::Tcp(t)) => t.pump(conn, ctx, scratch),
            None => return false,
        };
        match r {
            Ok(p) => {
                if p {
                    self.idle.active(id, Instant::now());
                }
                p
            }
            Err(e) => {
                self.chan_error(id, e);
                true
            }
        }
    }

    fn pump_lingering(&mut self, scratch: &mut [u8]) -> bool {
        let mut progress = false;
        let keys: Vec<u64> = self.lingering.keys().copied().collect();
        for k in keys {
            let Some(r) = self.lingering.get_mut(&k) else {
                continue;
            };
            // Detached: the engine is not called, so this cannot fail.
            progress |= r
                .pump(&mut self.conn, &mut self.ctx, scratch)
                .unwrap_or(true);
            if r.lingering_done() {
                r.close(&mut self.ctx);
                self.lingering.remove(&k);
                progress = true;
            }
        }
        progress
    }

    fn read_socket(&mut self, buf: &mut [u8]) -> bool {
        // The engine reads nothing while a signature is outstanding: the
        // client's bytes wait in the socket, not in memory.
        if self.ended || self.conn.output().len() >= OUT_HIGH || self.signer.waiting() {
            return false;
        }
        let Some(w) = self.wire.as_mut().filter(|w| w.readable) else {
            return false;
        };
        match w.stream.read(buf) {
            Ok(0) => {
                let i = &self.ctx.info;
                let why = format!("Connection closed by {} port {}", i.peer_addr, i.peer_port);
                self.transport_lost(&why);
            }
            Ok(n) => {
                let now = Instant::now();
                self.alive.heard(now);
                let r = self.conn.handle_input(&buf[..n], now);
                self.after_input(r);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => w.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let i = &self.ctx.info;
                let why = format!(
                    "Read error from remote host {} port {}: {e}",
                    i.peer_addr, i.peer_port
                );
                self.transport_lost(&why);
            }
        }
        true
    }

    fn write_socket(&mut self) -> bool {
        let Some(w) = self.wire.as_mut() else {
            self.drop_output();
            return false;
        };
        let mut progress = false;
        let mut failed = None;
        while w.writable && (!w.pre.is_empty() || !self.conn.output().is_empty()) {
            let from_pre = !w.pre.is_empty();
            let data = if from_pre {
                &w.pre[..]
            } else {
                self.conn.output()
            };
            match w.stream.write(data) {
                Ok(n) => {
                    if from_pre {
                        w.pre.drain(..n);
                    } else {
                        self.conn.consume_output(n);
                    }
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => w.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    w.writable = false;
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            if self.ended {
                self.drop_output();
            } else {
                let i = &self.ctx.info;
                let why = format!(
                    "Write error to remote host {} port {}: {e}",
                    i.peer_addr, i.peer_port
                );
                self.transport_lost(&why);
            }
            progress = true;
        }
        progress
    }

    /// Drops what the engine queued for a transport that is gone (lost,
    /// or failed while the session ends); with resilience the retransmit
    /// buffer keeps what the client has not acknowledged.
    fn drop_output(&mut self) {
        self.conn.consume_output(self.conn.output().len());
    }

    /// Best effort: sends what is still queued (a DISCONNECT, final
    /// channel messages) for a short while.
    fn flush(&mut self) {
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        let mut events = Events::with_capacity(8);
        while self.wire.is_some() && !self.conn.output().is_empty() {
            self.write_socket();
            if self.conn.output().is_empty() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if self.poll.poll(&mut events, Some(deadline - now)).is_err() {
                break;
            }
            if events
                .iter()
                .any(|e| e.token() == SOCK && (e.is_writable() || e.is_error()))
            {
                if let Some(w) = &mut self.wire {
                    w.writable = true;
                }
            }
        }
    }

    /// SIGHUP to the process groups of pty sessions (like sshd), then every
    /// fd is closed. The same after a disconnect and a detach timeout.
    fn cleanup(&mut self) {
        self.abandon_all_pending("the session ended");
        if let Some(f) = self.ctx.info.auth_info_file.take() {
            let _ = std::fs::remove_file(f);
        }
        for chan in self.chans.values() {
            if let Chan::Session(s) = chan {
                if let Some((pid, true)) = s.running_child() {
                    let _ = killpg(pid, Signal::SIGHUP);
                }
            }
        }
        let ids: Vec<u32> = self.chans.keys().copied().collect();
        for id in ids {
            self.forget(id);
        }
        for (_, mut r) in self.lingering.drain() {
            r.close(&mut self.ctx);
        }
        if let Some(a) = self.ctx.agent.take() {
            a.close(&mut self.ctx);
        }
        let lids: Vec<u64> = self.listeners.keys().copied().collect();
        for lid in lids {
            if let Some(mut l) = self.listeners.remove(&lid) {
                l.close(&mut self.ctx);
            }
        }
        for (_, u) in std::mem::take(&mut self.unix_forwards) {
            u.close(&mut self.ctx);
        }
    }

    // ----- protocol events -------------------------------------------------

    fn drain_events(&mut self) {
        while let Some(ev) = self.conn.poll_event() {
            self.event(ev);
        }
    }

    fn event(&mut self, ev: Event) {
        match ev {
            Event::ChannelOpenRequest { id, kind } => self.open_request(id, kind),
            Event::ChannelOpened { id } => {
                if let Some(Chan::Tcp(t)) = self.chans.get_mut(&id) {
                    t.opened();
                }
            }
            Event::ChannelOpenFailed { id, .. } => self.forget(id),
            Event::ChannelRequest {
                id,
                want_reply,
                request,
            } => self.channel_request(id, want_reply, request),
            Event::Data { id, data } => {
                self.idle.active(id, Instant::now());
                let r = match self.chans.get_mut(&id) {
                    Some(Chan::Session(s)) => s.relay().data(&mut self.conn, &data),
                    Some(Chan::Tcp(t)) => t.relay().data(&mut self.conn, &data),
                    None => self.conn.consume(id, data.len()),
                };
                self.conn.reuse_buffer(data);
                if let Err(e) = r {
                    self.chan_error(id, e);
                }
            }
            // Nothing reads extended data from a client: drop it.
            Event::ExtendedData { id, data, .. } => {
                if let Err(e) = self.conn.consume(id, data.len()) {
                    self.chan_error(id, e);
                }
            }
            Event::Eof { id } => match self.chans.get_mut(&id) {
                Some(Chan::Session(s)) => s.relay().peer_eof(),
                Some(Chan::Tcp(t)) => t.relay().peer_eof(),
                None => {}
            },
            Event::Closed { id } => self.closed(id),
            Event::GlobalRequest {
                want_reply,
                request,
            } => self.global_request(want_reply, request),
            Event::Disconnected {
                reason,
                description,
            } => {
                let i = &self.ctx.info;
                log!(
                    "Received disconnect from {} port {}:{reason}: {}",
                    i.peer_addr,
                    i.peer_port,
                    printable(description.as_bytes())
                );
                self.end();
            }
            // The engine found the transport dead (it keeps no keepalive on
            // a server today, but a dead transport detaches all the same).
            Event::ConnectionDead if self.wire.is_some() => {
                let i = &self.ctx.info;
                let why = format!("Connection to {} port {} is dead", i.peer_addr, i.peer_port);
                self.transport_lost(&why);
            }
            // A rekey: the monitor signs its exchange hash.
            Event::SignHostKey(r) => {
                let m = self.signer.ask(r, Instant::now());
                self.notify(m);
            }
            // The monitor signs one exchange hash per key exchange: tell it
            // this one is done, so it signs the next. A reconnect (logged by
            // the commit itself) abandons the exchange that was running, on
            // both sides: that one is over too.
            Event::KexDone { .. } | Event::Reconnected => self.notify(FromSession::KexDone),
            // Replies to our keepalives: any input already reset the count.
            Event::GlobalReply { .. } | Event::ChannelReply { .. } | Event::Writable { .. } => {}
            _ => {}
        }
    }

    /// The monitor's answer to the engine's request for a signature (None:
    /// it could not sign, which ends the connection).
    fn signed(&mut self, signature: Option<Vec<u8>>) {
        match self.conn.host_key_signed(signature, Instant::now()) {
            // The exchange it was for is gone (a reconnect moved the
            // session meanwhile): nothing to do.
            Err(ressh_proto::Error::Misuse(what)) => {
                log!("monitor: a signature not for the running key exchange, dropped ({what})")
            }
            r => self.after_input(r),
        }
    }

    fn open_request(&mut self, id: u32, kind: ChannelKind) {
        // Counted from here; a refused channel is forgotten again.
        self.idle.typed(id, kind.name(), Instant::now());
        let r = match kind {
            ChannelKind::Session => {
                let sessions = self
                    .chans
                    .values()
                    .filter(|c| matches!(c, Chan::Session(_)))
                    .count();
                if sessions >= self.ctx.info.policy.max_sessions as usize {
                    log!("refused a session channel: MaxSessions reached");
                    self.conn.reject_channel(
                        id,
                        open_failure::ADMINISTRATIVELY_PROHIBITED,
                        "too many sessions",
                    )
                } else {
                    self.chans.insert(id, Chan::Session(SessionChan::new(id)));
                    self.conn.accept_channel(id)
                }
            }
            ChannelKind::DirectTcpip {
                host,
                port,
                originator,
                originator_port,
            } => self.direct_tcpip(id, &host, port, &originator, originator_port),
            ChannelKind::DirectStreamlocal { path, .. } => self.direct_streamlocal(id, &path),
            other => {
                log!(
                    "refused a channel of unknown type {}",
                    printable(other.name().as_bytes())
                );
                self.conn.reject_channel(
                    id,
                    open_failure::UNKNOWN_CHANNEL_TYPE,
                    "unknown channel type",
                )
            }
        };
        if let Err(e) = r {
            self.chan_error(id, e);
        }
        if !self.chans.contains_key(&id) {
            // Refused (or failed at once): not a channel.
            self.idle.closed(id, Instant::now());
        }
    }

    fn direct_tcpip(
        &mut self,
        id: u32,
        host: &str,
        port: u32,
        originator: &str,
        originator_port: u32,
    ) -> ressh_proto::Result<()> {
        use ressh_ipc::msg::Forwarding;
        let p = &self.ctx.info.policy;
        let shown = printable(host.as_bytes());
        let allowed = matches!(p.forwarding, Forwarding::All | Forwarding::Local);
        if !allowed {
            log!(
                "refused local port forward: originator {} port {originator_port}, target {shown} port {port}",
                printable(originator.as_bytes())
            );
            return self.conn.reject_channel(
                id,
                open_failure::ADMINISTRATIVELY_PROHIBITED,
                "port forwarding is disabled",
            );
        }
        let Ok(port16) = u16::try_from(port) else {
            return self
                .conn
                .reject_channel(id, open_failure::CONNECT_FAILED, "port out of range");
        };
        if !p.permit_open.allows(host, port) {
            log!(
                "Received request from {} port {originator_port} to connect to host {shown} port {port}, but the request was denied.",
                printable(originator.as_bytes())
            );
            return self.conn.reject_channel(
                id,
                open_failure::ADMINISTRATIVELY_PROHIBITED,
                "administratively prohibited: open failed",
            );
        }
        log!(
            "direct-tcpip to {shown} port {port} from {} port {originator_port}",
            printable(originator.as_bytes())
        );
        let mut chan = TcpChan::resolving(id, host, port16);
        let status = match quick_resolve(host, port16) {
            Some(addrs) => chan.connect_next(&mut self.conn, &mut self.ctx, addrs.into())?,
            None => {
                // Names are resolved on a short-lived thread so the loop never
                // blocks on DNS; its answer arrives through the waker.
                let (tx, waker, h) = (
                    self.resolved_tx.clone(),
                    self.waker.clone(),
                    host.to_string(),
                );
                let spawned = std::thread::Builder::new()
                    .name("resolve".into())
                    .spawn(move || {
                        use std::net::ToSocketAddrs;
                        let r = (h.as_str(), port16).to_socket_addrs().map(|a| a.collect());
                        let _ = tx.send((id, r));
                        let _ = waker.wake();
                    });
                if let Err(e) = spawned {
                    log!("cannot start a resolver thread: {e}");
                    self.conn.reject_channel(
                        id,
                        open_failure::RESOURCE_SHORTAGE,
                        "resource shortage",
                    )?;
                    return Ok(());
                }
                Status::Alive
            }
        };
        if status == Status::Alive {
            self.chans.insert(id, Chan::Tcp(chan));
        }
        Ok(())
    }

    fn direct_streamlocal(&mut self, id: u32, path: &str) -> ressh_proto::Result<()> {
        use ressh_ipc::msg::Forwarding;
        let p = &self.ctx.info.policy;
        let shown = printable(path.as_bytes());
        if !matches!(p.stream_local, Forwarding::All | Forwarding::Local) {
            log!("refused streamlocal port forward: target {shown}");
            return self.conn.reject_channel(
                id,
                open_failure::ADMINISTRATIVELY_PROHIBITED,
                "streamlocal forwarding is disabled",
            );
        }
        // PermitOpen and permitopen= apply to paths too, with sshd's
        // PORT_STREAMLOCAL as the port: only `any` or a `*` port matches.
        if !p.permit_open.allows(path, PORT_STREAMLOCAL) {
            log!("Received request to connect to path {shown}, but the request was denied.");
            return self.conn.reject_channel(
                id,
                open_failure::ADMINISTRATIVELY_PROHIBITED,
                "administratively prohibited: open failed",
            );
        }
        let fd = match streamlocal::connect_to(path) {
            Ok(fd) => fd,
            Err(e) => {
                log!("connect to path {shown} failed: {e}");
                return self
                    .conn
                    .reject_channel(id, open_failure::CONNECT_FAILED, &e.to_string());
            }
        };
        let kind = "direct-streamlocal@openssh.com";
        match TcpChan::connected(id, &mut self.ctx, fd, kind, format!("path {shown}")) {
            Ok(chan) => {
                log!("{kind} to {shown} connected");
                self.conn.accept_channel(id)?;
                self.chans.insert(id, Chan::Tcp(chan));
                Ok(())
            }
            Err(e) => {
                log!("cannot watch a forwarded connection: {e}");
                self.conn
                    .reject_channel(id, open_failure::RESOURCE_SHORTAGE, "resource shortage")
            }
        }
    }

    fn resolutions(&mut self) {
        while let Ok((id, addrs)) = self.resolved_rx.try_recv() {
            if let Some(Chan::Tcp(t)) = self.chans.get_mut(&id) {
                let r = t.resolved(&mut self.conn, &mut self.ctx, addrs);
                self.tcp_status(id, r);
            }
        }
    }

    fn channel_request(&mut self, id: u32, want_reply: bool, request: ChannelReq) {
        // The channel's type for ChannelTimeout, once it runs something.
        let kind = match &request {
            ChannelReq::Shell => Some("session:shell".to_string()),
            ChannelReq::Exec(_) => Some("session:command".to_string()),
            ChannelReq::Subsystem(name) => Some(format!("session:subsystem:{name}")),
            _ => None,
        };
        let ok = match self.chans.get_mut(&id) {
            Some(Chan::Session(s)) => s.request(&mut self.ctx, request),
            _ => false,
        };
        if let Some(kind) = kind.filter(|_| ok) {
            self.idle.typed(id, &kind, Instant::now());
        }
        if want_reply {
            if let Err(e) = self.conn.channel_reply(id, ok) {
                self.chan_error(id, e);
            }
        }
    }

    fn global_request(&mut self, want_reply: bool, request: GlobalReq) {
        let (ok, data) = match request {
            GlobalReq::TcpipForward { address, port } => match self.tcpip_forward(&address, port) {
                Some(bound) if port == 0 => (true, (bound as u32).to_be_bytes().to_vec()),
                Some(_) => (true, Vec::new()),
                None => (false, Vec::new()),
            },
            GlobalReq::CancelTcpipForward { address, port } => {
                let found = self
                    .listeners
                    .iter()
                    .find(|(_, l)| {
                        l.address == address && (l.port == port || l.bound as u32 == port)
                    })
                    .map(|(k, _)| *k);
                match found.and_then(|k| self.listeners.remove(&k)) {
                    Some(mut l) => {
                        l.close(&mut self.ctx);
                        log!(
                            "remote forward on {} port {} cancelled",
                            printable(address.as_bytes()),
                            l.bound
                        );
                        (true, Vec::new())
                    }
                    None => (false, Vec::new()),
                }
            }
            GlobalReq::StreamlocalForward { path } => (self.streamlocal_forward(&path), Vec::new()),
            GlobalReq::CancelStreamlocalForward { path } => {
                let found = self
                    .unix_forwards
                    .iter()
                    .find(|(_, u)| u.path == path)
                    .map(|(k, _)| *k);
                match found.and_then(|k| self.unix_forwards.remove(&k)) {
                    Some(u) => {
                        u.close(&mut self.ctx);
                        log!(
                            "remote forward on path {} cancelled",
                            printable(path.as_bytes())
                        );
                        (true, Vec::new())
                    }
                    None => (false, Vec::new()),
                }
            }
            GlobalReq::HostKeysProve(blobs) if want_reply => {
                self.global_replies.push_back(None);
                self.notify(FromSession::ProveHostKeys(blobs));
                return;
            }
            _ => (false, Vec::new()),
        };
        if want_reply {
            self.global_replies.push_back(Some((ok, data)));
            self.send_global_replies();
        }
    }

    /// Sends the replies that are ready, in order.
    fn send_global_replies(&mut self) {
        while let Some(Some(_)) = self.global_replies.front() {
            let Some(Some((ok, data))) = self.global_replies.pop_front() else {
                break;
            };
            if let Err(e) = self.conn.global_reply(ok, &data) {
                log!("global reply: {e}");
                self.end();
                return;
            }
        }
    }

    /// The monitor's answer to a host key proof: the reply it held up.
    pub(super) fn host_key_proofs(&mut self, r: Result<Vec<Vec<u8>>, String>) {
        let Some(slot) = self.global_replies.iter_mut().find(|r| r.is_none()) else {
            log!("monitor: host key proofs nobody asked for; ignored");
            return;
        };
        *slot = Some(match r {
            Ok(sigs) => {
                let mut data = Vec::new();
                for s in &sigs {
                    ressh_proto::wire::Put::put_string(&mut data, s);
                }
                (true, data)
            }
            Err(e) => {
                log!("host key proof: {}", printable(e.as_bytes()));
                (false, Vec::new())
            }
        });
        self.send_global_replies();
        // What ended meanwhile (see reap).
        self.reap();
    }

    /// OpenSSH's `hostkeys-00@openssh.com` (UpdateHostKeys): once the
    /// session starts, the client learns every host key the server has,
    /// and may ask for proof of the ones it does not know.
    fn announce_host_keys(&mut self) {
        let keys: Vec<Vec<u8>> = self.conn.host_keys().iter().map(|k| k.to_blob()).collect();
        if let Err(e) = self.conn.global_request(GlobalReq::HostKeys(keys), false) {
            log!("announcing host keys: {e}");
        }
    }

    /// Binds a remote forward; the bound port, or None when refused.
    fn tcpip_forward(&mut self, address: &str, port: u32) -> Option<u16> {
        use ressh_ipc::msg::Forwarding;
        let p = &self.ctx.info.policy;
        let shown = printable(address.as_bytes());
        if !matches!(p.forwarding, Forwarding::All | Forwarding::Remote) {
            log!("refused remote port forward on {shown} port {port}: forwarding is disabled");
            return None;
        }
        if !p.permit_listen.allows(address, port) {
            log!("refused remote port forward on {shown} port {port}: not permitted");
            return None;
        }
        let id = self.next_listener;
        self.next_listener += 1;
        match Listener::bind(&mut self.ctx, id, address, port) {
            Ok(l) => {
                log!("remote forward listening on {shown} port {}", l.bound);
                let bound = l.bound;
                self.listeners.insert(id, l);
                Some(bound)
            }
            Err(e) => {
                log!("remote forward on {shown} port {port} failed: {e}");
                None
            }
        }
    }

    /// Listens on a Unix-domain socket for a remote forward; whether it does.
    fn streamlocal_forward(&mut self, path: &str) -> bool {
        use ressh_ipc::msg::Forwarding;
        let p = &self.ctx.info.policy;
        let shown = printable(path.as_bytes());
        if !matches!(p.stream_local, Forwarding::All | Forwarding::Remote) {
            log!("refused remote streamlocal forward on {shown}: forwarding is disabled");
            return false;
        }
        let (mask, unlink) = (p.stream_local_bind_mask, p.stream_local_bind_unlink);
        let id = self.next_listener;
        self.next_listener += 1;
        match UnixForward::bind(&mut self.ctx, id, path, mask, unlink) {
            Ok(u) => {
                log!("remote forward listening on path {shown}");
                self.unix_forwards.insert(id, u);
                true
            }
            Err(e) => {
                log!("remote forward on path {shown} failed: {e}");
                false
            }
        }
    }

    // ----- signals and timers ----------------------------------------------

    fn signals(&mut self) {
        let mut buf = [0u8; 64];
        while matches!((&self.signal_pipe).read(&mut buf), Ok(n) if n > 0) {}
        let sig = self.term_signal.swap(0, Ordering::SeqCst);
        if sig != 0 {
            log!("Received signal {sig}; terminating.");
            self.end();
        }
        self.reap();
    }

    fn reap(&mut self) {
        // While the monitor signs host-key proofs, a command's end waits
        // (its zombie stays): the client must get the proofs before the
        // session closes, or it quits without learning the keys. sshd's
        // order, which answers the proof request before anything else.
        if self.global_replies.iter().any(Option::is_none) {
            return;
        }
        loop {
            let (pid, exit) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitKind::Status(code)),
                Ok(WaitStatus::Signaled(pid, sig, core)) => (pid, ExitKind::Signal(sig, core)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            };
            if let Some(tty) = self.ctx.logins.remove(&pid) {
                self.ctx
                    .to_monitor
                    .push(ressh_ipc::msg::FromSession::LoginEnded { tty });
            }
            if let Some(id) = self.ctx.children.remove(&pid) {
                if let Some(Chan::Session(s)) = self.chans.get_mut(&id) {
                    s.child_exited(exit);
                }
            }
        }
    }

    /// ChannelTimeout and UnusedConnectionTimeout (never while detached).
    fn idle_timeouts(&mut self, now: Instant) {
        let e = self.idle.expired(now);
        for (id, t) in e.channels {
            log!(
                "channel {id}: timed out after {} seconds of inactivity",
                t.as_secs()
            );
            if let Some(Chan::Session(s)) = self.chans.get(&id) {
                if let Some((pid, _)) = s.running_child() {
                    let _ = killpg(pid, Signal::SIGHUP);
                }
            }
            if let Err(e) = self.conn.close_channel(id) {
                self.chan_error(id, e);
            }
        }
        if e.connection {
            let i = &self.ctx.info;
            log!(
                "Unused connection timeout: user {} from {} port {}",
                printable(i.user.name.as_bytes()),
                i.peer_addr,
                i.peer_port
            );
            self.conn
                .disconnect(reason::BY_APPLICATION, "unused connection timeout");
            self.end();
        }
    }

    fn timers(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|p| p.deadline <= now)
            .map(|p| p.id)
            .collect();
        for id in late {
            self.abandon_pending(id, "timed out");
        }
        if let Some(d) = &self.detached {
            if d.deadline.is_some_and(|t| t <= now) {
                let i = &self.ctx.info;
                log!(
                    "Detach timeout: user {} from {} port {}",
                    printable(i.user.name.as_bytes()),
                    i.peer_addr,
                    i.peer_port
                );
                // Torn down with all its processes (issue 5): nobody will
                // come back for them. Each child leads its own process group
                // (setsid), which its shell's jobs share; cleanup() only
                // hangs up pty sessions, as sshd does after a disconnect.
                for chan in self.chans.values() {
                    if let Chan::Session(s) = chan {
                        if let Some((pid, _)) = s.running_child() {
                            let _ = killpg(pid, Signal::SIGKILL);
                        }
                    }
                }
                self.end();
            }
            // ClientAlive does not run while detached, nor do the
            // engine's timers: there is no transport to send on.
            return;
        }
        self.idle_timeouts(now);
        if self.ended {
            return;
        }
        if self.silence_deadline().is_some_and(|t| t <= now) {
            // Bytes waiting in the socket (unread while our output queue is
            // full, or while this process was stopped) are not silence.
            let mut b = [0u8; 1];
            let waiting = self
                .wire
                .as_ref()
                .is_some_and(|w| w.stream.peek(&mut b).is_ok());
            if waiting {
                self.alive.last_heard = now;
            } else {
                let i = &self.ctx.info;
                let why = format!(
                    "Timeout, nothing from {} port {} for {:.1} s (keepalive interval {} s)",
                    i.peer_addr,
                    i.peer_port,
                    now.saturating_duration_since(self.alive.last_heard)
                        .as_secs_f64(),
                    self.conn.peer_keepalive().unwrap_or_default().as_secs()
                );
                // Detaches (only a resilient client announces an interval);
                // with DetachTimeout 0 it ends, like any lost transport.
                self.transport_lost(&why);
                return;
            }
        }
        if self.signer.overdue(now) {
            log!("no host-key signature from the monitor in time");
            self.signed(None);
            return;
        }
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            let r = self.conn.handle_timeout(now);
            self.after_input(r);
        }
        if let (Some(deadline), Some(interval)) = (self.alive.deadline, self.alive.interval) {
            if deadline <= now {
                self.alive.missed += 1;
                if self.alive.max > 0 && self.alive.missed > self.alive.max {
                    log!("Timeout, client not responding");
                    if self.can_detach() {
                        // A dead transport, not a closed session: wait for
                        // the client to come back (docs/PROTOCOL.md §6).
                        self.detach();
                        return;
                    }
                    self.conn
                        .disconnect(reason::BY_APPLICATION, "Timeout, client not responding");
                    self.end();
                    return;
                }
                self.alive.deadline = Some(now + interval);
                if let Err(e) = self.conn.global_request(GlobalReq::Keepalive, true) {
                    log!("keepalive: {e}");
                    self.end();
                }
            }
        }
    }
}
