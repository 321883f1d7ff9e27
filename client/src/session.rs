//! The session core and its event loop.
//!
//! [`Session`] owns the engine's [`Connection`] and hands everything else
//! to the part that owns it: [`Channels`] (the session or stdio channel,
//! its stdin/stdout/stderr and the terminal, and the data path of every
//! channel), [`Forwards`] (-L/-D listeners and their SOCKS handshakes, -R
//! requests and connections), [`Keepalive`] (ServerAlive probes and the
//! watch for network changes and suspend) and [`Link`] (the transport, its
//! readiness and its replacement when resilience reconnects). [`Login`]
//! keeps the state of the way to an authenticated connection. One `mio`
//! loop, no threads. Backpressure everywhere: local input is read only
//! while the channel window and the transport's output backlog allow, and
//! received data is acknowledged to the engine (`consume`) only once
//! written out.

use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use ressh_proto::cert;
use ressh_proto::error::reason;
use ressh_proto::keys::KeyType;
use ressh_proto::msg;
use ressh_proto::{Connection, Event};

use crate::auth;
use crate::config::{self, Config};
use crate::hostkey;
use crate::sig::Signals;
use crate::transport;

mod agent;
mod channels;
mod forwards;
mod keepalive;
mod link;
mod login;
mod mux;
mod muxproxy;
mod resume;
mod retry;
mod x11;

use channels::Channels;
use forwards::Forwards;
use keepalive::Keepalive;
use link::Link;
use login::Login;
use mux::Mux;

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
    poll: Poll,
    sig: &'static Signals,
    next_token: usize,
    login: Login,
    chans: Channels,
    fwd: Forwards,
    /// X11 forwarding, once requested.
    x11: Option<x11::X11Fwd>,
    alive: Keepalive,
    link: Link,
    mux: Mux,
    /// ControlPersist: what the foreground process does once the master
    /// went to the background (its session through the master); its
    /// result is the exit code.
    foreground: Option<Box<dyn FnOnce() -> i32>>,
    quit: Option<Quit>,
}

/// The plain key type name an algorithm (plain or certificate) signs with.
fn plain_key_type(alg: &str) -> Option<&'static str> {
    let plain = cert::plain_algorithm(alg.as_bytes()).unwrap_or(alg);
    KeyType::from_signature_algorithm(plain).map(KeyType::name)
}

/// ssh's order_hostkeyalgs: when known_hosts has a plain key of the type
/// of the first algorithm, the list as it is; otherwise the algorithms of
/// the key types it has for the host first (and every certificate
/// algorithm when a @cert-authority line covers the host), each group in
/// the list's order.
fn order_host_key_algs(algs: Vec<String>, known: &hostkey::Known) -> Vec<String> {
    let known_type =
        |a: &str| plain_key_type(a).is_some_and(|t| known.types.iter().any(|k| k == t));
    if algs.first().is_some_and(|a| known_type(a)) {
        return algs;
    }
    let (mut first, rest): (Vec<String>, Vec<String>) = algs
        .into_iter()
        .partition(|a| (known.ca && cert::is_cert_name(a.as_bytes())) || known_type(a));
    first.extend(rest);
    first
}

fn proto_config(cfg: &Config, known: &hostkey::Known) -> Result<ressh_proto::Config, String> {
    let mut pc = ressh_proto::Config {
        // As ssh: host certificates first, then plain keys.
        host_key_algs: KeyType::ALL
            .into_iter()
            .flat_map(cert::signature_algorithms)
            .chain(KeyType::all_signature_algorithms())
            .map(String::from)
            .collect(),
        ..Default::default()
    };
    // The defaults are the lists `pc` starts with; what may be named is the
    // same but for key exchange, where some methods are off by default.
    let spec_in = |what: &str,
                   spec: &Option<String>,
                   list: &mut Vec<String>,
                   known: &[String]|
     -> Result<(), String> {
        if let Some(s) = spec {
            *list = config::algorithm_list(what, s, list, known).map_err(|e| e.0)?;
        }
        Ok(())
    };
    let spec = |what: &str, spec: &Option<String>, list: &mut Vec<String>| {
        let known = list.clone();
        spec_in(what, spec, list, &known)
    };
    pc.resilience = cfg.resilience;
    pc.compression = ressh_proto::zlib::offer(true, cfg.compression);
    pc.suspect_floor = Duration::from_millis(cfg.suspect_floor_ms);
    pc.window_max = cfg.channel_window_max;
    pc.suspect_cap = match cfg.suspect_cap_ms {
        None => Some(Duration::MAX),
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(ms)),
    };
    spec("cipher", &cfg.ciphers, &mut pc.ciphers)?;
    spec("MAC", &cfg.macs, &mut pc.macs)?;
    let all_kex: Vec<String> = ressh_proto::kex::KEX_SUPPORTED
        .iter()
        .map(|k| k.to_string())
        .collect();
    spec_in("key exchange", &cfg.kex_algorithms, &mut pc.kex, &all_kex)?;
    spec("host key", &cfg.host_key_algorithms, &mut pc.host_key_algs)?;
    if cfg.host_key_algorithms.is_none() {
        pc.host_key_algs = order_host_key_algs(std::mem::take(&mut pc.host_key_algs), known);
    }
    Ok(pc)
}

impl Session {
    /// Dials and builds a session for `cfg`; nothing is read yet.
    pub fn connect(cfg: Config, plan: Plan) -> Result<Session, Quit> {
        let known = hostkey::known(&cfg);
        let mut pc = proto_config(&cfg, &known).map_err(|e| fatal(format!("ressh: {e}")))?;
        // Resilience keepalives (docs/PROTOCOL.md §4): ServerAliveInterval,
        // else 15 s; a silent server then means reconnecting.
        pc.keepalive = keepalive::resilience_interval(&cfg);
        let transport = transport::dial(&cfg).map_err(|e| fatal(format!("ressh: {}", e.0)))?;
        let now = Instant::now();
        let conn = Connection::client(pc, now).map_err(|e| fatal(format!("ressh: {e}")))?;
        Session::assemble(cfg, plan, conn, transport, now)
    }

    /// A session of `conn` on `transport`, registered for readiness.
    fn assemble(
        cfg: Config,
        plan: Plan,
        conn: Connection,
        mut transport: transport::Transport,
        now: Instant,
    ) -> Result<Session, Quit> {
        let sig = crate::sig::install().map_err(|e| fatal(format!("ressh: signals: {e}")))?;
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
        let login = Login::new(&cfg, now);
        let alive = Keepalive::new(poll.registry());
        Ok(Session {
            cfg,
            plan,
            conn,
            poll,
            sig,
            next_token: FIRST_DYNAMIC,
            login,
            chans: Channels::default(),
            fwd: Forwards::default(),
            x11: None,
            alive,
            link: Link::new(transport),
            mux: Mux::default(),
            foreground: None,
            quit: None,
        })
    }

    /// A session through a master's control socket in proxy mode (`-O
    /// proxy`, `sock` past MUX_S_PROXY): the engine speaks the connection
    /// protocol on it with no key exchange and no authentication
    /// ([`Connection::mux_proxy_client`]), and the session goes on as
    /// after authentication on a connection of its own: forwards, then
    /// the main channel. `desc` names the socket in messages.
    pub fn proxy(
        cfg: Config,
        plan: Plan,
        sock: std::os::unix::net::UnixStream,
        desc: String,
    ) -> Result<Session, Quit> {
        let pc = proto_config(&cfg, &hostkey::Known::default())
            .map_err(|e| fatal(format!("ressh: {e}")))?;
        let now = Instant::now();
        let conn = Connection::mux_proxy_client(pc, &cfg.user, now);
        let transport = transport::Transport::Mux {
            sock: mio::net::UnixStream::from_std(sock),
            desc,
        };
        let mut s = Session::assemble(cfg, plan, conn, transport, now)?;
        // No key exchange to time out.
        s.login.kex_deadline = None;
        s.on_auth_success();
        Ok(s)
    }

    /// ControlPersist: `job` runs in the foreground process once the master
    /// forked to the background after authentication.
    pub fn persist(&mut self, job: Box<dyn FnOnce() -> i32>) {
        self.foreground = Some(job);
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

    /// Takes the result of a call into the engine. A call that ended the
    /// connection (the peer stopped acknowledging, a rekey failed, or it
    /// had already ended) ends the session as any protocol error does. A
    /// call refused while the connection goes on (`Error::Misuse`) is a
    /// bug of this client: it is logged and the session goes on, the
    /// engine unchanged by the refused call.
    fn engine<T>(&mut self, what: &str, r: ressh_proto::Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) if self.conn.is_closed() => {
                self.protocol_error(e);
                None
            }
            Err(e) => {
                crate::debug1!("bug: the engine refused {what}: {e}");
                None
            }
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
            self.pump_mux();
            self.pump_socks();
            self.pump_inputs(&mut buf);
            self.flush_outputs();
            self.reap_channels();
            if let Some(w) = self.conn.window_grown() {
                crate::debug1!("channel receive window grew to {w} bytes");
            }
            self.check_done();
        }
        self.finish()
    }

    /// Readiness of `t`, to the part that owns it.
    fn mark(&mut self, t: Token, readable: bool, writable: bool) {
        if self.link.mark(t, readable, writable) || self.alive.mark(t) {
            return;
        }
        if t == T_SIGNAL || self.mux.mark(t, readable) {
            return;
        }
        if self.fwd.is_connecting(t) {
            if writable || readable {
                self.finish_connect(t);
            }
            return;
        }
        if !self.fwd.mark(t, readable) {
            self.chans.mark(t, readable, writable);
        }
    }

    fn next_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut t: Option<Instant> = self.conn.poll_timeout();
        let alive = self.alive.timeout(self.resilient());
        let idle = self.mux_idle_deadline();
        for d in [self.login.kex_deadline, alive, self.resume_timeout(), idle]
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
        if self.link.read_pending() || (room && self.chans.input_pending(&self.conn)) {
            return Some(Duration::ZERO);
        }
        t.map(|t| t.saturating_duration_since(now))
    }

    // ----- timers and signals ---------------------------------------------

    fn handle_timeouts(&mut self) {
        let now = Instant::now();
        if self.login.kex_deadline.is_some_and(|d| now >= d) {
            self.set_quit(fatal(format!(
                "ressh: Connection timed out during banner exchange with {}",
                self.link.describe()
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
        if !self.resilient() {
            self.server_alive(now);
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
        // The channels of mux proxy clients are theirs.
        if let Some(t) = self.proxy_owner(&ev) {
            self.proxy_event(t, ev);
            return;
        }
        match ev {
            Event::HostKey(key) => self.on_host_key(&key),
            Event::KexDone { first, algorithms } => self.on_kex_done(first, &algorithms),
            Event::AuthReady => self.start_auth(),
            Event::Banner(text) => {
                if crate::log::enabled(crate::log::Level::Info) {
                    crate::log::raw_text(&auth::clean(&text));
                }
            }
            Event::AuthSuccess => self.on_auth_success(),
            ev @ (Event::AuthFailure { .. }
            | Event::AuthPkOk
            | Event::AuthInfoRequest { .. }
            | Event::AuthPasswordChange { .. }) => self.on_auth_event(ev),
            Event::ResilienceReady { detach_timeout } => {
                crate::debug1!(
                    "resilience on; the server keeps a lost session for {detach_timeout} s"
                );
                let t = keepalive::resilience_interval(&self.cfg);
                self.link.transport.set_user_timeout(t * 2);
            }
            Event::ConnectionDead => {
                let why = format!("no answer from {} to keepalives", self.cfg.host);
                self.detach(&why);
            }
            Event::PathSuspect => self.path_suspect(),
            Event::Reconnected => crate::debug1!("session resumed on the new connection"),
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
            } => self.on_channel_request(id, want_reply, &request),
            Event::ChannelReply { id, success } => self.on_reply(id, success),
            Event::Data { id, data } => self.on_data(id, false, data),
            Event::ExtendedData { id, code, data } if code == msg::EXTENDED_DATA_STDERR => {
                self.on_data(id, true, data)
            }
            // Nothing else has a local sink: discarded.
            Event::ExtendedData { id, data, .. } => self.discard(id, data.len()),
            Event::Writable { .. } => {}
            Event::Eof { id } => self.chans.on_eof(id),
            Event::Closed { id } => self.chans.on_closed(id),
            Event::GlobalRequest { want_reply, .. } => {
                if want_reply {
                    // Owed: the engine counted the request.
                    let r = self.conn.global_reply(false, &[]);
                    self.engine("a global reply", r);
                }
            }
            Event::GlobalReply { success, data } => self.on_global_reply(success, &data),
            Event::Disconnected {
                reason: r,
                description,
            } => {
                let msg = format!(
                    "Received disconnect from {}: {r}: {}",
                    self.link.describe(),
                    auth::clean(&description)
                );
                self.set_quit(fatal(msg));
            }
            // Server-side events and extensions this client does not use yet.
            other => crate::debug3!("ignored event {other:?}"),
        }
    }

    fn on_kex_done(&mut self, first: bool, algorithms: &ressh_proto::kex::Negotiated) {
        let mac = |m: &str| {
            if m.is_empty() {
                "<implicit>".to_string()
            } else {
                m.to_string()
            }
        };
        crate::debug1!(
            "kex: {} host key {} cipher {} / {} mac {} / {} compression {} / {}",
            algorithms.kex,
            algorithms.host_key,
            algorithms.cipher_c2s,
            algorithms.cipher_s2c,
            mac(&algorithms.mac_c2s),
            mac(&algorithms.mac_s2c),
            algorithms.comp_c2s,
            algorithms.comp_s2c
        );
        if first {
            self.login.kex_deadline = None;
            crate::debug1!(
                "Remote protocol version: {}",
                self.conn.peer_version().unwrap_or("")
            );
        }
    }

    fn check_done(&mut self) {
        if self.quit.is_some() {
            return;
        }
        if self
            .mux_idle_deadline()
            .is_some_and(|d| Instant::now() >= d)
        {
            crate::debug1!("ControlPersist timeout expired");
            self.set_quit(Quit { code: 0, msg: None });
            return;
        }
        // Wait for forwarded connections still open, as ssh does.
        let Some(main) = self.chans.main_done() else {
            return;
        };
        let others = self.chans.others_open() || self.fwd.connecting_any();
        if others && !self.link.dead() {
            return;
        }
        let code = match (main.exit_status, main.exit_signal) {
            (Some(s), _) => s,
            (None, None) if main.stdio => 0,
            (None, Some(sig)) => {
                crate::debug1!("Remote command killed by signal {sig}.");
                255
            }
            (None, None) => 255,
        };
        let msg = if matches!(self.plan, Plan::Session { pty: true, .. })
            && crate::log::enabled(crate::log::Level::Info)
        {
            Some(format!("Connection to {} closed.", self.cfg.host))
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
        self.chans
            .write_out_blocking(Instant::now() + Duration::from_secs(10));
        let st = self.conn.stats();
        crate::debug1!(
            "Transferred: sent {}, received {} bytes of channel data",
            st.data_sent,
            st.data_received
        );
        if st.window_max > 0 {
            crate::debug1!("largest channel receive window: {} bytes", st.window_max);
        }
        if self.conn.resilience_active() {
            crate::debug1!(
                "resilience: sent {} ACKs ({} bytes on the wire), received {}",
                st.acks_sent,
                st.ack_wire_bytes,
                st.acks_received
            );
            crate::verbose!("{}", self.link.suspicions.summary());
        }
        if !self.conn.is_closed() {
            self.conn
                .disconnect(reason::BY_APPLICATION, "disconnected by user");
        }
        self.link
            .write_out_blocking(&mut self.conn, Instant::now() + Duration::from_millis(500));
        self.chans.drop_all(self.poll.registry());
        self.mux.close(self.poll.registry());
        self.link.close(self.poll.registry());
        self.chans.restore_terminal();
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ssh's order_hostkeyalgs on ressh's default list.
    #[test]
    fn host_key_algorithms_follow_known_hosts() {
        let base = || {
            crate::config::resolve(&crate::args::Args {
                destination: Some("h".into()),
                config_file: Some("none".into()),
                ..Default::default()
            })
            .unwrap()
        };
        let pc = |known: hostkey::Known| proto_config(&base(), &known).unwrap().host_key_algs;
        let types = |t: &[&str]| t.iter().map(|s| s.to_string()).collect();
        // Nothing known: certificates first, then plain keys.
        let all = pc(hostkey::Known::default());
        assert_eq!(all[0], "ssh-ed25519-cert-v01@openssh.com");
        let first_plain = all.iter().position(|a| a == "ssh-ed25519").unwrap();
        assert!(all[..first_plain]
            .iter()
            .all(|a| cert::is_cert_name(a.as_bytes())));
        assert!(all[first_plain..]
            .iter()
            .all(|a| !cert::is_cert_name(a.as_bytes())));
        // An ed25519 key known: the type of the first algorithm, list as is.
        let known = |t: &[&str], ca: bool| hostkey::Known {
            types: types(t),
            ca,
        };
        assert_eq!(pc(known(&["ssh-ed25519"], false)), all);
        // An RSA key known: RSA certificates and keys first.
        let rsa = pc(known(&["ssh-rsa"], false));
        assert_eq!(
            rsa[..4],
            [
                "rsa-sha2-512-cert-v01@openssh.com",
                "rsa-sha2-256-cert-v01@openssh.com",
                "rsa-sha2-512",
                "rsa-sha2-256"
            ]
        );
        // An RSA key and a CA: every certificate algorithm, then RSA.
        let ca = pc(known(&["ssh-rsa"], true));
        assert_eq!(ca[..first_plain], all[..first_plain]);
        assert_eq!(
            ca[first_plain..first_plain + 2],
            ["rsa-sha2-512", "rsa-sha2-256"]
        );
        // HostKeyAlgorithms names certificate algorithms too, and is then
        // taken as it is.
        let mut cfg = base();
        cfg.host_key_algorithms = Some("rsa-sha2-256-cert-v01@openssh.com,ssh-ed25519".into());
        assert_eq!(
            proto_config(&cfg, &known(&["ssh-ed25519"], true))
                .unwrap()
                .host_key_algs,
            ["rsa-sha2-256-cert-v01@openssh.com", "ssh-ed25519"]
        );
    }
}
