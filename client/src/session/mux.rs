//! The master's side of connection sharing in the event loop: the control
//! socket, its clients, and their requests (PROTOCOL.mux). A mux client's
//! session is a channel like any other ([`Kind::Mux`]) on the descriptors
//! it passed, so it rides the resilient connection and survives its
//! reconnects.
//!
//! A bad message (a length over the bound, a malformed request, a request
//! before the hello, descriptors nobody asked for) ends that client only.
//!
//! [`Kind::Mux`]: super::channels::Kind::Mux

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Token};
use ressh_proto::msg::{ChannelKind, ChannelReq};
use ressh_proto::wire::{Put, Reader};

use super::channels::Chan;
use super::muxproxy::{self, Proxy};
use super::Session;
use crate::mux::{self as proto, NewSession};

/// Read at most this much from a client per turn.
const READ: usize = 16 * 1024;
/// A client that lets this much of our replies pile up is dropped.
const OUT_MAX: usize = 64 * 1024;

/// What a client asked for that takes its descriptors.
enum Want {
    /// MUX_C_NEW_SESSION: stdin, stdout and stderr.
    Session(NewSession),
    /// MUX_C_NEW_STDIO_FWD (-W): stdin and stdout to a direct-tcpip
    /// channel.
    Stdio { host: String, port: u16 },
}

impl Want {
    fn fds(&self) -> usize {
        match self {
            Want::Session(_) => 3,
            Want::Stdio { .. } => 2,
        }
    }
}

/// A request waiting for its descriptors, or for its channel.
struct Pending {
    rid: u32,
    want: Want,
}

struct Client {
    sock: UnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    fds: Vec<OwnedFd>,
    hello: bool,
    /// NEW_SESSION read, its three descriptor bytes not yet.
    want_fds: Option<Pending>,
    /// The session asked for, until its channel is open.
    opening: Option<Pending>,
    /// The session's id once asked for (one per client, as ssh).
    session: bool,
    readable: bool,
    /// Close once `out` is written.
    closing: bool,
    dead: bool,
    /// In proxy mode (MUX_C_PROXY): its channels.
    proxy: Option<Proxy>,
}

/// The control socket and its clients.
#[derive(Default)]
pub(super) struct Mux {
    listener: Option<(UnixListener, Token, PathBuf)>,
    clients: HashMap<Token, Client>,
    /// Since when no client and no session are there.
    idle_since: Option<Instant>,
}

impl Mux {
    /// Proxy client `t`'s channels.
    pub(super) fn proxy(&mut self, t: Token) -> Option<&mut Proxy> {
        self.clients.get_mut(&t)?.proxy.as_mut()
    }

    /// What goes out to client `t`.
    pub(super) fn client_out(&mut self, t: Token) -> Option<&mut Vec<u8>> {
        self.clients.get_mut(&t).map(|c| &mut c.out)
    }

    /// What goes out to proxy client `t`, and its channels.
    pub(super) fn client_parts(&mut self, t: Token) -> Option<(&mut Vec<u8>, &mut Proxy)> {
        let c = self.clients.get_mut(&t)?;
        Some((&mut c.out, c.proxy.as_mut()?))
    }

    /// The proxy client whose channel engine channel `id` is.
    pub(super) fn proxy_owner(&self, id: u32) -> Option<Token> {
        self.clients
            .iter()
            .find(|(_, c)| c.proxy.as_ref().is_some_and(|p| p.has(id)))
            .map(|(t, _)| *t)
    }

    /// Whether `t` is ours; readiness noted.
    pub(super) fn mark(&mut self, t: Token, readable: bool) -> bool {
        if self.listener.as_ref().is_some_and(|l| l.1 == t) {
            return true;
        }
        match self.clients.get_mut(&t) {
            Some(c) => {
                c.readable |= readable;
                true
            }
            None => false,
        }
    }

    /// Stops listening and removes the socket.
    pub(super) fn stop_listening(&mut self, reg: &mio::Registry) {
        if let Some((l, _, path)) = self.listener.take() {
            let _ = reg.deregister(&mut SourceFd(&l.as_raw_fd()));
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Drops every client and the socket (the master is ending).
    pub(super) fn close(&mut self, reg: &mio::Registry) {
        self.stop_listening(reg);
        for (_, c) in self.clients.drain() {
            let _ = reg.deregister(&mut SourceFd(&c.sock.as_raw_fd()));
        }
    }
}

fn reply(c: &mut Client, bytes: Vec<u8>) {
    c.out.extend_from_slice(&bytes);
}

impl Session {
    /// Becomes the master: listens on ControlPath. With ControlMaster auto
    /// an existing socket means sharing is off for this connection (as in
    /// ssh); with yes it is fatal.
    pub(super) fn mux_listen(&mut self) -> Result<(), String> {
        let Some(path) = self.cfg.control_path.clone() else {
            return Ok(());
        };
        if self.cfg.control_master == crate::config::ControlMaster::No {
            return Ok(());
        }
        let l = match proto::listen(&path) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                crate::info!(
                    "ControlSocket {} already exists, disabling multiplexing",
                    path.display()
                );
                return Ok(());
            }
            Err(e) => return Err(format!("ControlSocket {}: {e}", path.display())),
        };
        let t = self.token();
        self.poll
            .registry()
            .register(&mut SourceFd(&l.as_raw_fd()), t, Interest::READABLE)
            .map_err(|e| format!("ControlSocket {}: {e}", path.display()))?;
        crate::debug1!("setting up multiplex master socket {}", path.display());
        self.mux.listener = Some((l, t, path));
        Ok(())
    }

    /// ControlPersist with a time: when a master without a session of its
    /// own, idle that long (no mux client, no session), ends.
    pub(super) fn mux_idle_deadline(&self) -> Option<Instant> {
        let secs = self.cfg.control_persist.filter(|&s| s > 0)?;
        if self.plan != super::Plan::None || self.mux.listener.is_none() {
            return None;
        }
        Some(self.mux.idle_since? + Duration::from_secs(secs))
    }

    /// Accepts, reads and answers the mux clients; drops the dead.
    pub(super) fn pump_mux(&mut self) {
        self.accept_mux();
        let tokens: Vec<Token> = self.mux.clients.keys().copied().collect();
        for t in tokens {
            if let Err(e) = self.read_mux(t) {
                crate::debug1!("mux client: {e}; dropping it");
                if let Some(c) = self.mux.clients.get_mut(&t) {
                    c.dead = true;
                }
            }
            // A proxy client's data moves as windows and its socket allow.
            self.proxy_pump(t);
            self.write_mux(t);
        }
        let dead: Vec<Token> = self
            .mux
            .clients
            .iter()
            .filter(|(_, c)| c.dead || (c.closing && c.out.is_empty()))
            .map(|(t, _)| *t)
            .collect();
        for t in dead {
            let mut proxied = Vec::new();
            if let Some(c) = self.mux.clients.remove(&t) {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&c.sock.as_raw_fd()));
                proxied = c.proxy.map(|p| p.engine_ids()).unwrap_or_default();
            }
            // A client gone with its session open: the session ends, and
            // so do a proxy client's channels.
            if let Some(id) = self.chans.mux_session(t) {
                self.close_chan(id);
            }
            for id in proxied {
                let r = self.conn.close_channel(id);
                self.engine("closing a proxied channel", r);
            }
        }
        let idle = self.mux.clients.is_empty() && !self.chans.mux_sessions();
        match (idle, self.mux.idle_since) {
            (true, None) => self.mux.idle_since = Some(Instant::now()),
            (false, Some(_)) => self.mux.idle_since = None,
            _ => {}
        }
    }

    fn accept_mux(&mut self) {
        loop {
            let Some((l, _, _)) = &self.mux.listener else {
                return;
            };
            let sock = match l.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    crate::debug1!("mux accept: {e}");
                    return;
                }
            };
            match proto::peer_uid(&sock) {
                Ok(uid) if proto::peer_allowed(uid) => {}
                Ok(uid) => {
                    crate::error!("multiplex uid mismatch: peer uid {uid}, refused");
                    continue;
                }
                Err(e) => {
                    crate::debug1!("mux peer credentials: {e}");
                    continue;
                }
            }
            if sock.set_nonblocking(true).is_err() {
                continue;
            }
            let t = self.token();
            if self
                .poll
                .registry()
                .register(
                    &mut SourceFd(&sock.as_raw_fd()),
                    t,
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                continue;
            }
            crate::debug2!("new mux client");
            self.mux.clients.insert(
                t,
                Client {
                    sock,
                    inbuf: Vec::new(),
                    out: proto::hello(),
                    fds: Vec::new(),
                    hello: false,
                    want_fds: None,
                    opening: None,
                    session: false,
                    readable: true,
                    closing: false,
                    dead: false,
                    proxy: None,
                },
            );
        }
    }

    fn read_mux(&mut self, t: Token) -> Result<(), String> {
        let mut buf = [0u8; READ];
        loop {
            let Some(c) = self.mux.clients.get_mut(&t) else {
                return Ok(());
            };
            if c.dead || c.closing || !c.readable {
                return Ok(());
            }
            // A whole packet plus the descriptor bytes at most.
            if c.inbuf.len() > proto::MAX_PACKET + 8 {
                return Err("too much input".into());
            }
            match proto::recv_with_fds(c.sock.as_raw_fd(), &mut buf, &mut c.fds) {
                Ok(0) => {
                    c.dead = true;
                    return Ok(());
                }
                Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.readable = false;
                    return Ok(());
                }
                Err(e) => return Err(e.to_string()),
            }
            if c.fds.len() > 3 {
                return Err("too many descriptors".into());
            }
            self.process_mux(t)?;
        }
    }

    /// Handles the whole packets read.
    fn process_mux(&mut self, t: Token) -> Result<(), String> {
        loop {
            let Some(c) = self.mux.clients.get_mut(&t) else {
                return Ok(());
            };
            if c.proxy.is_some() {
                if !c.fds.is_empty() {
                    return Err("descriptors in proxy mode".into());
                }
                let Some(p) = muxproxy::take(&mut c.inbuf)? else {
                    return Ok(());
                };
                self.proxy_packet(t, &p)?;
                continue;
            }
            if let Some(n) = c.want_fds.as_ref().map(|p| p.want.fds()) {
                // The descriptors come with a byte each.
                if c.inbuf.len() < n {
                    return Ok(());
                }
                if c.fds.len() != n {
                    return Err("did not receive the descriptors".into());
                }
                c.inbuf.drain(..n);
                let fds: Vec<OwnedFd> = c.fds.drain(..).collect();
                let p = c.want_fds.take().expect("checked above");
                self.mux_open_session(t, p, fds);
                continue;
            }
            // Descriptors may come in the same read as the request that
            // asks for them; with no request left to read, nobody did.
            let Some(p) = proto::take_packet(&mut c.inbuf)? else {
                if !c.fds.is_empty() {
                    return Err("descriptors nobody asked for".into());
                }
                return Ok(());
            };
            self.mux_request(t, &p)?;
        }
    }

    /// One request.
    fn mux_request(&mut self, t: Token, p: &[u8]) -> Result<(), String> {
        let e = |e: ressh_proto::Error| e.to_string();
        let mut r = Reader::new(p);
        let kind = r.u32().map_err(e)?;
        let Some(c) = self.mux.clients.get_mut(&t) else {
            return Ok(());
        };
        if kind == proto::HELLO {
            if c.hello {
                return Err("hello received twice".into());
            }
            let v = r.u32().map_err(e)?;
            if v != proto::VERSION {
                return Err(format!("unsupported multiplexing protocol version {v}"));
            }
            // Extensions: none known; each must be well formed.
            while r.remaining() > 0 {
                proto::cstring(&mut r)?;
                r.string().map_err(e)?;
            }
            c.hello = true;
            return Ok(());
        }
        if !c.hello {
            return Err(format!("expected a hello, got 0x{kind:08x}"));
        }
        let rid = r.u32().map_err(e)?;
        crate::debug2!("mux request 0x{kind:08x} id {rid}");
        match kind {
            proto::C_ALIVE_CHECK => {
                r.finish().map_err(e)?;
                let mut b = Vec::new();
                b.put_u32(proto::S_ALIVE);
                b.put_u32(rid);
                b.put_u32(std::process::id());
                reply(c, proto::frame(&b));
            }
            proto::C_TERMINATE => {
                r.finish().map_err(e)?;
                reply(c, proto::status(proto::S_OK, rid, None));
                // Sent before the master goes (ssh's is often lost).
                let _ = c.sock.write(&c.out);
                c.out.clear();
                crate::debug1!("mux client asked the master to exit");
                self.set_quit(super::Quit { code: 0, msg: None });
            }
            proto::C_STOP_LISTENING => {
                r.finish().map_err(e)?;
                reply(c, proto::status(proto::S_OK, rid, None));
                self.mux.stop_listening(self.poll.registry());
            }
            proto::C_NEW_SESSION | proto::C_NEW_STDIO_FWD => {
                let want = if kind == proto::C_NEW_SESSION {
                    Want::Session(NewSession::decode(&mut r)?)
                } else {
                    r.string().map_err(e)?; // reserved
                    let host = proto::cstring(&mut r)?;
                    let port = r.u32().map_err(e)?;
                    r.finish().map_err(e)?;
                    if port == proto::PORT_STREAMLOCAL {
                        reply(
                            c,
                            proto::status(
                                proto::S_FAILURE,
                                rid,
                                Some("forwarding to Unix sockets is not supported by ressh"),
                            ),
                        );
                        c.closing = true;
                        return Ok(());
                    }
                    let port = u16::try_from(port).map_err(|_| format!("bad port {port}"))?;
                    Want::Stdio { host, port }
                };
                if c.session || c.opening.is_some() {
                    // Its descriptors still come: taken and closed.
                    reply(
                        c,
                        proto::status(
                            proto::S_FAILURE,
                            rid,
                            Some("Multiple sessions not supported"),
                        ),
                    );
                    c.closing = true;
                    return Ok(());
                }
                c.want_fds = Some(Pending { rid, want });
            }
            proto::C_PROXY => {
                r.finish().map_err(e)?;
                if c.session || c.opening.is_some() {
                    return Err("proxy mode after a session".into());
                }
                let mut b = Vec::new();
                b.put_u32(proto::S_PROXY);
                b.put_u32(rid);
                reply(c, proto::frame(&b));
                c.proxy = Some(Proxy::default());
            }
            proto::C_OPEN_FWD | proto::C_CLOSE_FWD => {
                let f = proto::FwdReq::decode(&mut r)?;
                let answer = self.mux_forward(t, rid, kind == proto::C_OPEN_FWD, f);
                if let (Some(a), Some(c)) = (answer, self.mux.clients.get_mut(&t)) {
                    reply(c, a);
                }
            }
            _ => {
                reply(
                    c,
                    proto::status(proto::S_FAILURE, rid, Some("unsupported request")),
                );
            }
        }
        Ok(())
    }

    /// A forward opened or closed for client `t`: the reply, or None when
    /// it comes later (a remote forward waits for the server).
    fn mux_forward(&mut self, t: Token, rid: u32, open: bool, f: proto::FwdReq) -> Option<Vec<u8>> {
        let fail = |why: &str| Some(proto::status(proto::S_FAILURE, rid, Some(why)));
        if ![proto::FWD_LOCAL, proto::FWD_REMOTE, proto::FWD_DYNAMIC].contains(&f.ftype) {
            return fail("Invalid forwarding request");
        }
        if f.listen_port == proto::PORT_STREAMLOCAL || f.connect_port == proto::PORT_STREAMLOCAL {
            return fail("forwarding of Unix sockets is not supported by ressh");
        }
        let dynamic = f.ftype == proto::FWD_DYNAMIC;
        if !dynamic
            && (f.connect_host.is_empty() || (f.ftype == proto::FWD_LOCAL && f.connect_port == 0))
        {
            return fail("Invalid forwarding request");
        }
        let ask = matches!(
            self.cfg.control_master,
            crate::config::ControlMaster::Ask | crate::config::ControlMaster::AutoAsk
        );
        let verb = if open { "Open" } else { "Close" };
        let prompt = format!(
            "{verb} forward of port {} on {}? ",
            f.listen_port, self.cfg.host
        );
        if ask && !crate::askpass::confirm(&prompt, self.cfg.batch_mode).is_ok_and(|a| a == "yes") {
            return Some(proto::status(
                proto::S_PERMISSION_DENIED,
                rid,
                Some("Permission denied"),
            ));
        }
        let bind = (!f.listen_host.is_empty()).then(|| f.listen_host.clone());
        // Ports were checked to be at most 65535.
        let lport = f.listen_port as u16;
        let to = (!dynamic).then(|| (f.connect_host.clone(), f.connect_port as u16));
        let ok = Some(proto::status(proto::S_OK, rid, None));
        if f.ftype == proto::FWD_REMOTE {
            let fwd = crate::forward::Forward {
                bind,
                port: lport,
                host: f.connect_host,
                host_port: f.connect_port as u16,
                listen_path: None,
            };
            if !open {
                return if self.cancel_remote(&fwd) {
                    ok
                } else {
                    fail("port not forwarded")
                };
            }
            return match self.request_remote(fwd, Some((t, rid))) {
                Ok(()) => None,
                Err(e) => fail(&e),
            };
        }
        if !open {
            return if self.cancel_listen(bind.as_deref(), lport, &to) {
                ok
            } else {
                fail("port not forwarded")
            };
        }
        match self.bind_forward(bind.as_deref(), lport, to) {
            Ok(()) => ok,
            Err(
                super::forwards::ListenError::Unbound(m) | super::forwards::ListenError::Fatal(m),
            ) => {
                crate::debug1!("mux forward: {m}");
                fail("Port forwarding failed")
            }
        }
    }

    /// The server answered a remote forward of client `t` (request `rid`):
    /// bound on `port`, or refused (None).
    pub(super) fn mux_remote_forward_reply(
        &mut self,
        t: Token,
        rid: u32,
        allocated: bool,
        port: Option<u32>,
    ) {
        let Some(c) = self.mux.clients.get_mut(&t) else {
            return;
        };
        let r = match port {
            None => proto::status(proto::S_FAILURE, rid, Some("remote port forwarding failed")),
            Some(p) if allocated => {
                let mut b = Vec::new();
                b.put_u32(proto::S_REMOTE_PORT);
                b.put_u32(rid);
                b.put_u32(p);
                proto::frame(&b)
            }
            Some(_) => proto::status(proto::S_OK, rid, None),
        };
        reply(c, r);
    }

    /// Opens the session channel of a request whose descriptors came.
    fn mux_open_session(&mut self, t: Token, p: Pending, fds: Vec<OwnedFd>) {
        let ask = matches!(
            self.cfg.control_master,
            crate::config::ControlMaster::Ask | crate::config::ControlMaster::AutoAsk
        );
        let prompt = format!("Allow shared connection to {}? ", self.cfg.host);
        if ask && !crate::askpass::confirm(&prompt, self.cfg.batch_mode).is_ok_and(|a| a == "yes") {
            if let Some(c) = self.mux.clients.get_mut(&t) {
                reply(
                    c,
                    proto::status(proto::S_PERMISSION_DENIED, p.rid, Some("Permission denied")),
                );
            }
            return;
        }
        let kind = match &p.want {
            Want::Session(_) => ChannelKind::Session,
            Want::Stdio { host, port } => ChannelKind::DirectTcpip {
                host: host.clone(),
                port: u32::from(*port),
                originator: "127.0.0.1".into(),
                originator_port: 65535,
            },
        };
        let id = match self.conn.open_channel(kind) {
            Ok(id) => id,
            Err(e) => {
                if let Some(c) = self.mux.clients.get_mut(&t) {
                    let why = format!("cannot open a session: {e}");
                    reply(c, proto::status(proto::S_FAILURE, p.rid, Some(&why)));
                }
                return;
            }
        };
        let tokens: Vec<Token> = fds.iter().map(|_| self.token()).collect();
        match Chan::mux(id, t, fds, &tokens, self.poll.registry()) {
            Ok(ch) => {
                self.chans.insert(ch);
            }
            Err(e) => {
                crate::debug1!("mux session descriptors: {e}");
                self.close_chan(id);
                return;
            }
        }
        if let Some(c) = self.mux.clients.get_mut(&t) {
            c.session = true;
            c.opening = Some(p);
        }
    }

    /// The session channel of client `t` (engine id `id`) is open: its
    /// requests go out and the client is told.
    pub(super) fn mux_session_opened(&mut self, t: Token, id: u32) {
        let Some(p) = self.mux.clients.get_mut(&t).and_then(|c| c.opening.take()) else {
            return;
        };
        let mut b = Vec::new();
        b.put_u32(proto::S_SESSION_OPENED);
        b.put_u32(p.rid);
        b.put_u32(id);
        if let Some(c) = self.mux.clients.get_mut(&t) {
            reply(c, proto::frame(&b));
        }
        let Want::Session(req) = p.want else {
            return; // stdio forwarding: nothing to ask for
        };
        let tty_fd = self.chans.mux_input_fd(id);
        let pty = (req.want_tty)
            .then(|| tty_fd.map(|fd| (req.term.clone(), fd, crate::tty::terminal_modes(fd))))
            .flatten();
        // The environment the client sent, as far as our SendEnv allows
        // (as mux.c's env_permitted).
        let env = req
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| {
                self.cfg
                    .send_env
                    .iter()
                    .any(|pat| ressh_compat::pattern::match_pattern(k, pat))
            })
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        let command = if req.command.is_empty() && !req.subsystem {
            None
        } else {
            Some(req.command)
        };
        if pty.is_some() {
            // Escapes in an ASCII byte only; anything else is none.
            let esc = req
                .escape
                .and_then(|c| u8::try_from(c).ok())
                .filter(u8::is_ascii);
            self.chans.set_mux_pty(id, esc);
        }
        // X11 and the agent when the client wants them and our own
        // ForwardX11 (with our $DISPLAY) and ForwardAgent allow them, as
        // mux.c's mux_session_confirm.
        let mut forwarding = Vec::new();
        if req.want_x11 {
            forwarding.extend(self.x11_request());
        }
        if req.want_agent && self.cfg.forward_agent.is_some() {
            crate::debug1!("Requesting authentication agent forwarding.");
            forwarding.push(ChannelReq::AuthAgentReq);
        }
        self.send_session_requests(id, pty, forwarding, env, command, req.subsystem);
    }

    /// The server refused the session channel of client `t`.
    pub(super) fn mux_session_refused(&mut self, t: Token) {
        if let Some(c) = self.mux.clients.get_mut(&t) {
            if let Some(p) = c.opening.take() {
                reply(
                    c,
                    proto::status(
                        proto::S_FAILURE,
                        p.rid,
                        Some("Session open refused by peer"),
                    ),
                );
            }
            c.closing = true;
        }
    }

    /// The server refused the pty of client `t`'s session `sid`.
    pub(super) fn mux_tty_failed(&mut self, t: Token, sid: u32) {
        if let Some(c) = self.mux.clients.get_mut(&t) {
            let mut b = Vec::new();
            b.put_u32(proto::S_TTY_ALLOC_FAIL);
            b.put_u32(sid);
            reply(c, proto::frame(&b));
        }
    }

    /// Client `t`'s session `sid` ended: its exit status (if the server
    /// sent one), then the control connection is closed, as ssh's master
    /// does.
    pub(super) fn mux_session_ended(&mut self, t: Token, sid: u32, exit: Option<u32>) {
        let Some(c) = self.mux.clients.get_mut(&t) else {
            return;
        };
        if let Some(x) = exit {
            let mut b = Vec::new();
            b.put_u32(proto::S_EXIT_MESSAGE);
            b.put_u32(sid);
            b.put_u32(x);
            reply(c, proto::frame(&b));
        }
        c.closing = true;
        self.write_mux(t);
    }

    fn write_mux(&mut self, t: Token) {
        let Some(c) = self.mux.clients.get_mut(&t) else {
            return;
        };
        while !c.out.is_empty() && !c.dead {
            match c.sock.write(&c.out) {
                Ok(0) => c.dead = true,
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => c.dead = true,
            }
        }
        // 4 MiB for a proxy client: its channel data stops being queued
        // at 256 KiB (muxproxy::OUT_SOFT), so only a client that never
        // reads gets there.
        let max = if c.proxy.is_some() { 4 << 20 } else { OUT_MAX };
        if c.out.len() > max {
            c.dead = true;
        }
    }
}
