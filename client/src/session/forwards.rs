//! The forwards: -L and -D listeners accepting (a -D connection first
//! tells where it goes, in SOCKS), -R requests to the server and the
//! connections it then opens, which ressh connects to their local target.
//! Once a forwarded connection has its channel, [`super::channels`] carries
//! its data.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use ressh_proto::msg::{self, ChannelKind, GlobalReq};

use super::channels::{Chan, Kind};
use super::{fatal, Quit, Session};
use crate::fdio::LocalFd;
use crate::forward::{self, Forward};
use crate::socks;
use crate::transport;

/// A -L or -D listener.
struct Listener {
    /// None once cancelled (through a mux client): the indexes stay.
    sock: Option<TcpListener>,
    bind: Option<String>,
    port: u16,
    /// -L: where every connection goes; None (-D): where each connection's
    /// SOCKS request says.
    to: Option<(String, u16)>,
}

/// Why a listener could not be set up: nothing bound (a forward failure),
/// or worse.
pub(super) enum ListenError {
    Unbound(String),
    Fatal(String),
}

/// A -D connection whose SOCKS request is still coming.
struct SocksConn {
    sock: TcpStream,
    peer: std::net::SocketAddr,
    listener: usize,
    hs: socks::Handshake,
    readable: bool,
}

struct RemoteFwd {
    fwd: Forward,
    /// The port the server said it listens on.
    bound: Option<u32>,
    /// Asked for by a mux client (its token and request id): the answer
    /// goes to it.
    origin: Option<(Token, u32)>,
    /// Cancelled, or refused by the server.
    cancelled: bool,
}

/// A global request awaiting the server's reply.
pub(super) enum Global {
    Keepalive,
    RemoteForward(usize),
}

/// A -R connection being made to the local target.
struct Connecting {
    id: u32,
    rfwd: usize,
    sock: TcpStream,
}

#[derive(Default)]
pub(super) struct Forwards {
    listeners: Vec<Listener>,
    socks: HashMap<Token, SocksConn>,
    rfwds: Vec<RemoteFwd>,
    /// Our global requests in the order the replies come.
    globals: VecDeque<Global>,
    connecting: HashMap<Token, Connecting>,
}

impl Forwards {
    /// A global request wanting a reply was sent.
    pub(super) fn expect_reply(&mut self, g: Global) {
        self.globals.push_back(g);
    }

    pub(super) fn is_connecting(&self, t: Token) -> bool {
        self.connecting.contains_key(&t)
    }

    pub(super) fn connecting_any(&self) -> bool {
        !self.connecting.is_empty()
    }

    /// Readiness of a SOCKS handshake; false if `t` is none of ours.
    pub(super) fn mark(&mut self, t: Token, readable: bool) -> bool {
        match self.socks.get_mut(&t) {
            Some(s) => {
                s.readable |= readable;
                true
            }
            None => false,
        }
    }

    /// Whether replies to -R requests are still to come.
    pub(super) fn remote_pending(&self) -> bool {
        self.globals
            .iter()
            .any(|g| matches!(g, Global::RemoteForward(_)))
    }

    /// The -R forward the server opens a connection for: the one bound to
    /// `port` on `address`, else the one bound to `port`. A forward of a
    /// fixed port is taken as bound to it from the request on, as ssh
    /// does: through an OpenSSH master in proxy mode the server's reply
    /// never comes (the master relays the request, not the reply), while
    /// the server listens and its opens reach us.
    fn remote_for(&self, address: &str, port: u32) -> Option<usize> {
        let bound = |r: &&RemoteFwd| {
            let asked = (r.fwd.port != 0).then_some(u32::from(r.fwd.port));
            r.bound.or(asked) == Some(port) && !r.cancelled && r.fwd.listen_path.is_none()
        };
        let i = self
            .rfwds
            .iter()
            .position(|r| bound(&r) && forward::remote_bind(&r.fwd) == address);
        i.or_else(|| self.rfwds.iter().position(|r| bound(&r)))
    }
}

impl Session {
    pub(super) fn on_open_request(&mut self, id: u32, kind: ChannelKind) {
        if kind == ChannelKind::AuthAgent {
            return self.on_agent_open(id);
        }
        if matches!(kind, ChannelKind::X11 { .. }) {
            return self.on_x11_open(id);
        }
        if let ChannelKind::ForwardedStreamlocal { path, .. } = &kind {
            let found = self.fwd.rfwds.iter().position(|r| {
                !r.cancelled && r.bound.is_some() && r.fwd.listen_path.as_ref() == Some(path)
            });
            let Some(idx) = found else {
                crate::info!("WARNING: server requests forwarding for unknown path {path}");
                self.refuse_open(
                    id,
                    msg::open_failure::ADMINISTRATIVELY_PROHIBITED,
                    "unknown path",
                );
                return;
            };
            return self.connect_remote_target(id, idx);
        }
        let ChannelKind::ForwardedTcpip {
            address,
            port,
            originator,
            originator_port,
        } = kind
        else {
            crate::debug1!("refusing a {} channel from the server", kind.name());
            self.refuse_open(
                id,
                msg::open_failure::ADMINISTRATIVELY_PROHIBITED,
                "open refused by client",
            );
            return;
        };
        let Some(idx) = self.fwd.remote_for(&address, port) else {
            crate::info!("WARNING: server requests forwarding for unknown listen_port {port}");
            self.refuse_open(
                id,
                msg::open_failure::ADMINISTRATIVELY_PROHIBITED,
                "unknown port",
            );
            return;
        };
        let f = &self.fwd.rfwds[idx].fwd;
        crate::debug1!(
            "client_request_forwarded_tcpip: listen {address} port {port}, originator \
             {originator} port {originator_port} -> {}:{}",
            f.host,
            f.host_port
        );
        self.connect_remote_target(id, idx);
    }

    /// Starts connecting the channel `id` the server opened for the -R
    /// forward `idx` to that forward's local target.
    fn connect_remote_target(&mut self, id: u32, idx: usize) {
        let f = self.fwd.rfwds[idx].fwd.clone();
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(f.host.as_str(), f.host_port))
            .ok()
            .and_then(|mut a| a.next());
        let sock = addr.and_then(|a| TcpStream::connect(a).ok());
        let Some(mut sock) = sock else {
            crate::info!("connect_to {} port {}: failed.", f.host, f.host_port);
            self.refuse_open(id, msg::open_failure::CONNECT_FAILED, "Connection refused");
            return;
        };
        let t = self.token();
        if self
            .poll
            .registry()
            .register(&mut sock, t, Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            self.refuse_open(id, msg::open_failure::RESOURCE_SHORTAGE, "cannot poll");
            return;
        }
        self.fwd.connecting.insert(
            t,
            Connecting {
                id,
                rfwd: idx,
                sock,
            },
        );
    }

    /// Refuses a channel the server opens (it awaits this answer).
    pub(super) fn refuse_open(&mut self, id: u32, reason: u32, why: &str) {
        let r = self.conn.reject_channel(id, reason, why);
        self.engine("reject_channel", r);
    }

    /// A -R connection attempt made progress.
    pub(super) fn finish_connect(&mut self, t: Token) {
        let Some(c) = self.fwd.connecting.get(&t) else {
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
        let Some(mut c) = self.fwd.connecting.remove(&t) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.sock);
        let f = self.fwd.rfwds[c.rfwd].fwd.clone();
        if let Err(e) = done {
            crate::info!(
                "connect_to {} port {}: failed: {}",
                f.host,
                f.host_port,
                transport::strip_os_error(&e)
            );
            self.refuse_open(
                c.id,
                msg::open_failure::CONNECT_FAILED,
                "Connection refused",
            );
            return;
        }
        let t2 = self.token();
        let Ok(l) = LocalFd::socket(c.sock.into(), self.poll.registry(), t2) else {
            self.refuse_open(c.id, msg::open_failure::RESOURCE_SHORTAGE, "cannot poll");
            return;
        };
        let r = self.conn.accept_channel(c.id);
        if self.engine("accept_channel", r).is_none() {
            return;
        }
        let desc = format!("remote forward to {}:{}", f.host, f.host_port);
        let ch = Chan::socket(c.id, Kind::Remote(c.rfwd), desc, l, t2, true);
        self.chans.insert(ch);
    }

    /// Accepts connections on -L and -D listeners.
    pub(super) fn accept_local(&mut self) {
        if !self.login.authenticated || self.quit.is_some() {
            return;
        }
        for i in 0..self.fwd.listeners.len() {
            // A cancelled listener (None) accepts nothing.
            while let Some(l) = &self.fwd.listeners[i].sock {
                let (sock, peer) = match l.accept() {
                    Ok(x) => x,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        crate::debug1!("accept: {e}");
                        break;
                    }
                };
                let port = self.fwd.listeners[i].port;
                match self.fwd.listeners[i].to.clone() {
                    Some((host, host_port)) => {
                        crate::debug1!(
                            "Connection to port {port} forwarding to {host}:{host_port} requested."
                        );
                        self.open_forward(i, sock, peer, (host, host_port), None);
                    }
                    None => {
                        crate::debug1!(
                            "Dynamic forwarding: connection to port {port} from {peer}."
                        );
                        let mut sock = sock;
                        let t = self.token();
                        if let Err(e) =
                            self.poll
                                .registry()
                                .register(&mut sock, t, Interest::READABLE)
                        {
                            crate::debug1!("cannot poll a SOCKS connection: {e}");
                            continue;
                        }
                        self.fwd.socks.insert(
                            t,
                            SocksConn {
                                sock,
                                peer,
                                listener: i,
                                hs: socks::Handshake::default(),
                                readable: true,
                            },
                        );
                    }
                }
            }
        }
    }

    /// Opens the direct-tcpip channel of a -L or -D connection to `to`.
    /// `socks`: the SOCKS reply it is owed and the data it sent after its
    /// request.
    fn open_forward(
        &mut self,
        listener: usize,
        sock: TcpStream,
        peer: std::net::SocketAddr,
        to: (String, u16),
        socks: Option<(socks::Version, Vec<u8>)>,
    ) {
        let (host, host_port) = to;
        let kind = ChannelKind::DirectTcpip {
            host: host.clone(),
            port: host_port as u32,
            originator: peer.ip().to_string(),
            originator_port: peer.port() as u32,
        };
        let id = match self.conn.open_channel(kind) {
            Ok(id) => id,
            Err(e) => {
                crate::info!("cannot open a channel for {peer}: {e}");
                if let Some((v, _)) = socks {
                    let _ = (&sock).write(&socks::reply(v, socks::Rep::GeneralFailure));
                }
                return;
            }
        };
        let t = self.token();
        let l = match LocalFd::socket(sock.into(), self.poll.registry(), t) {
            Ok(l) => l,
            Err(e) => {
                crate::debug1!("cannot poll the connection from {peer}: {e}");
                let r = self.conn.close_channel(id);
                self.engine("close_channel", r);
                return;
            }
        };
        let via = if socks.is_some() { " (SOCKS)" } else { "" };
        let port = self.fwd.listeners[listener].port;
        let desc = format!("port {port}{via} to {host}:{host_port} from {peer}");
        let mut ch = Chan::socket(id, Kind::Local(listener), desc, l, t, false);
        if let Some((v, first)) = socks {
            ch.owe_socks_reply(v, first);
        }
        self.chans.insert(ch);
    }

    /// Reads the SOCKS requests of -D connections; a complete one opens its
    /// channel, a bad one is answered (where SOCKS can say why) and closed.
    pub(super) fn pump_socks(&mut self) {
        let ready: Vec<Token> = self
            .fwd
            .socks
            .iter()
            .filter(|(_, c)| c.readable)
            .map(|(t, _)| *t)
            .collect();
        let mut buf = [0u8; socks::MAX_REQUEST];
        for t in ready {
            let Some(c) = self.fwd.socks.get_mut(&t) else {
                continue;
            };
            let mut out = Vec::new();
            let step = loop {
                let room = c.hs.room();
                match (&c.sock).read(&mut buf[..room]) {
                    Ok(0) => break Err(None),
                    Ok(n) => match c.hs.feed(&buf[..n], &mut out) {
                        Ok(socks::Progress::More) => continue,
                        Ok(socks::Progress::Connect { request, rest }) => {
                            break Ok(Some((request, rest)))
                        }
                        Err(r) => break Err(Some(r)),
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        c.readable = false;
                        break Ok(None);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        crate::debug1!("SOCKS client {}: {e}", c.peer);
                        break Err(None);
                    }
                }
            };
            // The method choice of SOCKS5, or the reply to a bad request.
            let refusal_reply: &[u8] = match &step {
                Err(Some(r)) => r.reply.as_slice(),
                _ => &[],
            };
            out.extend_from_slice(refusal_reply);
            // Small answers to a client that waits for them: they fit the
            // socket's buffer, or the client is not worth keeping.
            let written =
                out.is_empty() || matches!((&c.sock).write(&out), Ok(n) if n == out.len());
            if matches!(step, Ok(None)) && written {
                continue;
            }
            let Some(mut c) = self.fwd.socks.remove(&t) else {
                continue;
            };
            let _ = self.poll.registry().deregister(&mut c.sock);
            match step {
                Ok(Some((request, rest))) if written => {
                    crate::debug1!(
                        "Dynamic forwarding: {} asks for {}:{} ({:?})",
                        c.peer,
                        request.host,
                        request.port,
                        request.version
                    );
                    self.open_forward(
                        c.listener,
                        c.sock,
                        c.peer,
                        (request.host, request.port),
                        Some((request.version, rest)),
                    );
                }
                Err(Some(r)) => crate::info!("SOCKS client {}: {}; closing it", c.peer, r.why),
                Err(None) => crate::debug1!("SOCKS client {} left before its request", c.peer),
                Ok(_) => crate::debug1!("SOCKS client {}: cannot answer it", c.peer),
            }
        }
    }

    /// Binds the listener of a -L (`to` Some) or -D forward; a failure to
    /// bind ends ressh only with ExitOnForwardFailure.
    fn listen(
        &mut self,
        bind: Option<&str>,
        port: u16,
        to: Option<(String, u16)>,
    ) -> Result<(), Quit> {
        match self.bind_forward(bind, port, to) {
            Ok(()) => Ok(()),
            Err(ListenError::Fatal(m)) => Err(fatal(format!("ressh: {m}"))),
            Err(ListenError::Unbound(m)) if self.cfg.exit_on_forward_failure => Err(fatal(m)),
            Err(ListenError::Unbound(m)) => {
                crate::error!("{m}");
                Ok(())
            }
        }
    }

    /// Binds the listener of a -L (`to` Some) or -D forward.
    pub(super) fn bind_forward(
        &mut self,
        bind: Option<&str>,
        port: u16,
        to: Option<(String, u16)>,
    ) -> Result<(), ListenError> {
        let addrs =
            forward::bind_addrs(bind, port, self.cfg.gateway_ports).map_err(ListenError::Fatal)?;
        let what = if to.is_some() {
            "Local forwarding"
        } else {
            "Dynamic forwarding (SOCKS)"
        };
        let mut bound = 0;
        let mut last_err = None;
        for a in addrs {
            match TcpListener::bind(a) {
                Ok(mut l) => {
                    let t = self.token();
                    self.poll
                        .registry()
                        .register(&mut l, t, Interest::READABLE)
                        .map_err(|e| ListenError::Fatal(e.to_string()))?;
                    crate::debug1!("{what} listening on {a}.");
                    self.fwd.listeners.push(Listener {
                        sock: Some(l),
                        bind: bind.map(str::to_string),
                        port,
                        to: to.clone(),
                    });
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
            return Err(ListenError::Unbound(format!(
                "{}\nCould not request local forwarding.",
                last_err.unwrap_or_else(|| "no address to bind".into())
            )));
        }
        Ok(())
    }

    /// Closes the listeners of the -L or -D forward on `bind:port` going
    /// to `to`; whether there was one.
    pub(super) fn cancel_listen(
        &mut self,
        bind: Option<&str>,
        port: u16,
        to: &Option<(String, u16)>,
    ) -> bool {
        let mut found = false;
        for l in &mut self.fwd.listeners {
            if l.sock.is_some() && l.bind.as_deref() == bind && l.port == port && &l.to == to {
                if let Some(mut sock) = l.sock.take() {
                    let _ = self.poll.registry().deregister(&mut sock);
                }
                found = true;
            }
        }
        found
    }

    /// Asks the server for a -R forward; the answer goes to `origin` (a
    /// mux client and its request id) when given.
    pub(super) fn request_remote(
        &mut self,
        f: Forward,
        origin: Option<(Token, u32)>,
    ) -> Result<(), String> {
        let req = match &f.listen_path {
            Some(path) => GlobalReq::StreamlocalForward { path: path.clone() },
            None => GlobalReq::TcpipForward {
                address: forward::remote_bind(&f),
                port: f.port as u32,
            },
        };
        self.conn
            .global_request(req, true)
            .map_err(|e| e.to_string())?;
        let i = self.fwd.rfwds.len();
        self.fwd.expect_reply(Global::RemoteForward(i));
        self.fwd.rfwds.push(RemoteFwd {
            fwd: f,
            bound: None,
            origin,
            cancelled: false,
        });
        Ok(())
    }

    /// Cancels the -R forward `f` (cancel-tcpip-forward); whether there
    /// was one.
    pub(super) fn cancel_remote(&mut self, f: &Forward) -> bool {
        let Some(r) = self
            .fwd
            .rfwds
            .iter_mut()
            .find(|r| !r.cancelled && r.bound.is_some() && &r.fwd == f)
        else {
            return false;
        };
        r.cancelled = true;
        let req = match &f.listen_path {
            Some(path) => GlobalReq::CancelStreamlocalForward { path: path.clone() },
            None => GlobalReq::CancelTcpipForward {
                address: forward::remote_bind(f),
                port: r.bound.unwrap_or(f.port as u32),
            },
        };
        let sent = self.conn.global_request(req, false);
        self.engine("cancel-tcpip-forward", sent).is_some()
    }

    pub(super) fn setup_forwards(&mut self) -> Result<(), Quit> {
        if self.login.untrusted
            && (!self.cfg.local_forwards.is_empty()
                || !self.cfg.remote_forwards.is_empty()
                || !self.cfg.dynamic_forwards.is_empty())
        {
            crate::error!("Port forwarding is disabled to avoid man-in-the-middle attacks.");
            return Ok(());
        }
        for spec in self.cfg.local_forwards.clone() {
            let f = forward::parse(&spec, false).map_err(|e| fatal(format!("ressh: {e}")))?;
            self.listen(f.bind.as_deref(), f.port, Some((f.host, f.host_port)))?;
        }
        for spec in self.cfg.dynamic_forwards.clone() {
            let (bind, port) =
                forward::parse_dynamic(&spec).map_err(|e| fatal(format!("ressh: {e}")))?;
            self.listen(bind.as_deref(), port, None)?;
        }
        for spec in self.cfg.remote_forwards.clone() {
            let f = forward::parse(&spec, true).map_err(|e| fatal(format!("ressh: {e}")))?;
            self.request_remote(f, None)
                .map_err(|e| fatal(format!("ressh: {e}")))?;
        }
        Ok(())
    }

    pub(super) fn on_global_reply(&mut self, success: bool, data: &[u8]) {
        let Some(Global::RemoteForward(i)) = self.fwd.globals.pop_front() else {
            return; // a keepalive's, or none expected
        };
        let f = self.fwd.rfwds[i].fwd.clone();
        if let Some((client, rid)) = self.fwd.rfwds[i].origin {
            let port = if !success {
                None
            } else if f.port == 0 {
                msg::RequestSuccess(data.to_vec()).bound_port().ok()
            } else {
                Some(f.port as u32)
            };
            self.fwd.rfwds[i].bound = port;
            self.fwd.rfwds[i].cancelled = port.is_none();
            self.mux_remote_forward_reply(client, rid, f.port == 0, port);
            return;
        }
        if success {
            if let Some(path) = &f.listen_path {
                self.fwd.rfwds[i].bound = Some(0);
                crate::debug1!("remote forward success for: listen path {path}");
            } else {
                if f.port == 0 {
                    let port = msg::RequestSuccess(data.to_vec()).bound_port().unwrap_or(0);
                    self.fwd.rfwds[i].bound = Some(port);
                    crate::info!(
                        "Allocated port {port} for remote forward to {}:{}",
                        f.host,
                        f.host_port
                    );
                } else {
                    self.fwd.rfwds[i].bound = Some(f.port as u32);
                }
                crate::debug1!("remote forward success for: listen {}", f.port);
            }
        } else {
            self.fwd.rfwds[i].cancelled = true;
            let m = match &f.listen_path {
                Some(path) => {
                    format!("Warning: remote port forwarding failed for listen path {path}")
                }
                None => format!(
                    "Warning: remote port forwarding failed for listen port {}",
                    f.port
                ),
            };
            if self.cfg.exit_on_forward_failure {
                self.set_quit(fatal(m));
                return;
            }
            crate::error!("{m}");
        }
        self.background_when_ready();
    }
}
