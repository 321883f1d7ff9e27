//! The forwarded connections: -L listeners accepting, and -R connections
//! the server opens and ressh connects to their local target.

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

    /// Accepts connections on -L listeners.
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
                    id,
                    Kind::Local(i),
                    format!("port {} to {}:{} from {peer}", f.port, f.host, f.host_port),
                );
                ch.input = Some(l.clone());
                ch.out = Some(Sink::new(l));
                ch.in_ready = true;
                ch.tokens.push(t);
                let key = self.insert_chan(ch);
                self.tokens.insert(t, key);
            }
        }
    }
}
