//! The forwarded connections: -L and -D listeners accepting (a -D
//! connection first tells where it goes, in SOCKS), and -R connections the
//! server opens and ressh connects to their local target.

use std::io::{Read, Write};

use super::*;

impl Session {
    pub(super) fn on_open_request(&mut self, id: u32, kind: ChannelKind) {
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
    pub(super) fn finish_connect(&mut self, t: Token) {
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
                            c.id,
                            Kind::Remote(c.rfwd),
                            format!("remote forward to {}:{}", f.host, f.host_port),
                        );
                        let l = std::rc::Rc::new(l);
                        ch.open = true;
                        ch.input = Some(l.clone());
                        ch.out = Some(Sink::new(l));
                        ch.tokens.push(t2);
                        let key = self.insert_chan(ch);
                        self.tokens.insert(t2, key);
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

    /// Accepts connections on -L and -D listeners.
    pub(super) fn accept_local(&mut self) {
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
                let port = self.listeners[i].1.port;
                match self.listeners[i].1.to.clone() {
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
                        self.socks.insert(
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
        sock: mio::net::TcpStream,
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
        // SAFETY: the accepted socket's fd moves into an OwnedFd.
        let fd = unsafe { OwnedFd::from_raw_fd(sock.into_raw_fd()) };
        let t = self.token();
        let Ok(l) = LocalFd::socket(fd, self.poll.registry(), t) else {
            let _ = self.conn.close_channel(id);
            return;
        };
        let l = std::rc::Rc::new(l);
        let via = if socks.is_some() { " (SOCKS)" } else { "" };
        let port = self.listeners[listener].1.port;
        let mut ch = Chan::new(
            id,
            Kind::Local(listener),
            format!("port {port}{via} to {host}:{host_port} from {peer}"),
        );
        ch.input = Some(l.clone());
        ch.out = Some(Sink::new(l));
        ch.in_ready = true;
        if let Some((v, first)) = socks {
            ch.socks = Some(v);
            ch.unsent = first;
        }
        ch.tokens.push(t);
        let key = self.insert_chan(ch);
        self.tokens.insert(t, key);
    }

    /// Reads the SOCKS requests of -D connections; a complete one opens its
    /// channel, a bad one is answered (where SOCKS can say why) and closed.
    pub(super) fn pump_socks(&mut self) {
        let ready: Vec<Token> = self
            .socks
            .iter()
            .filter(|(_, c)| c.readable)
            .map(|(t, _)| *t)
            .collect();
        let mut buf = [0u8; socks::MAX_REQUEST];
        for t in ready {
            let Some(c) = self.socks.get_mut(&t) else {
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
            match step {
                Ok(None) if written => {}
                Ok(Some((request, rest))) if written => {
                    let mut c = self.socks.remove(&t).expect("present");
                    let _ = self.poll.registry().deregister(&mut c.sock);
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
                _ => {
                    let mut c = self.socks.remove(&t).expect("present");
                    let _ = self.poll.registry().deregister(&mut c.sock);
                    match step {
                        Err(Some(r)) => {
                            crate::info!("SOCKS client {}: {}; closing it", c.peer, r.why)
                        }
                        Err(None) => {
                            crate::debug1!("SOCKS client {} left before its request", c.peer)
                        }
                        Ok(_) => crate::debug1!("SOCKS client {}: cannot answer it", c.peer),
                    }
                }
            }
        }
    }
}
