//! TCP forwarding: "direct-tcpip" channels (ssh -L) and remote forwards
//! ("tcpip-forward" listeners whose connections become "forwarded-tcpip"
//! channels, ssh -R).

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrStorage,
};
use ressh_proto::msg::{open_failure, ChannelKind};
use ressh_proto::Connection;

use super::relay::{OnEof, Relay};
use super::{Ctx, Target};
use crate::log;

enum State {
    /// Waiting for the resolver thread.
    Resolving,
    /// A non-blocking connect to one address; the rest follow on failure.
    Connecting {
        sock: TcpStream,
        token: Token,
        addr: SocketAddr,
        rest: VecDeque<SocketAddr>,
    },
    /// We opened a forwarded-tcpip channel; the client has not answered.
    Opening,
    Open,
    /// We sent CLOSE (or never opened); nothing more moves.
    Closing,
}

/// What the caller must do with the channel after a step.
#[derive(Debug, PartialEq, Eq)]
pub enum Status {
    Alive,
    /// Refused or failed before it opened: forget it.
    Gone,
}

pub struct TcpChan {
    id: u32,
    state: State,
    relay: Relay,
    sent_eof: bool,
    /// The channel type, for log lines.
    kind: &'static str,
    /// "host port N" of the target or originator, for log lines.
    desc: String,
    port: u16,
    last_error: Option<io::Error>,
}

/// The addresses of `host` if they can be had without a lookup: a numeric
/// address, or `localhost` (127.0.0.1 and ::1). Other names go to the
/// resolver thread, so the loop never blocks on DNS.
pub fn quick_resolve(host: &str, port: u16) -> Option<Vec<SocketAddr>> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Some(vec![SocketAddr::new(ip, port)]);
    }
    if h.eq_ignore_ascii_case("localhost") {
        return Some(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ]);
    }
    None
}

impl TcpChan {
    /// A direct-tcpip channel whose target is being resolved.
    pub fn resolving(id: u32, host: &str, port: u16) -> TcpChan {
        TcpChan {
            id,
            state: State::Resolving,
            relay: Relay::new(id, OnEof::Shutdown),
            sent_eof: false,
            kind: "direct-tcpip",
            desc: format!(
                "{} port {port}",
                ressh_proto::wire::printable(host.as_bytes())
            ),
            port,
            last_error: None,
        }
    }

    /// A channel we open for an accepted connection (`kind`:
    /// forwarded-tcpip, auth-agent@openssh.com), waiting for the client to
    /// confirm it.
    pub fn forwarded(
        id: u32,
        ctx: &mut Ctx,
        fd: OwnedFd,
        kind: &'static str,
        desc: String,
    ) -> io::Result<TcpChan> {
        let mut relay = Relay::new(id, OnEof::Shutdown);
        let slot = relay.add(ctx, fd, Interest::READABLE | Interest::WRITABLE)?;
        relay.add_out(slot, None);
        relay.set_input(slot);
        Ok(TcpChan {
            id,
            state: State::Opening,
            relay,
            sent_eof: false,
            kind,
            desc,
            port: 0,
            last_error: None,
        })
    }

    /// A channel the client opened whose socket is already connected
    /// (direct-streamlocal): open at once.
    pub fn connected(
        id: u32,
        ctx: &mut Ctx,
        fd: OwnedFd,
        kind: &'static str,
        desc: String,
    ) -> io::Result<TcpChan> {
        let mut c = TcpChan::forwarded(id, ctx, fd, kind, desc)?;
        c.state = State::Open;
        Ok(c)
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn relay(&mut self) -> &mut Relay {
        &mut self.relay
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// The resolver's answer: start connecting.
    pub fn resolved(
        &mut self,
        conn: &mut Connection,
        ctx: &mut Ctx,
        addrs: io::Result<Vec<SocketAddr>>,
    ) -> ressh_proto::Result<Status> {
        match addrs {
            Ok(list) => {
                let list: Vec<SocketAddr> = list
                    .into_iter()
                    .map(|mut a| {
                        a.set_port(self.port);
                        a
                    })
                    .collect();
                self.connect_next(conn, ctx, list.into())
            }
            Err(e) => {
                log!("connect_to {}: unknown host ({e})", self.desc);
                conn.reject_channel(
                    self.id,
                    open_failure::CONNECT_FAILED,
                    "name resolution failed",
                )?;
                Ok(Status::Gone)
            }
        }
    }

    /// Tries the next address; rejects the channel when none is left.
    pub fn connect_next(
        &mut self,
        conn: &mut Connection,
        ctx: &mut Ctx,
        mut rest: VecDeque<SocketAddr>,
    ) -> ressh_proto::Result<Status> {
        while let Some(addr) = rest.pop_front() {
            let sock = match TcpStream::connect(addr) {
                Ok(s) => s,
                Err(e) => {
                    self.last_error = Some(e);
                    continue;
                }
            };
            match ctx.register(
                sock.as_raw_fd(),
                Interest::READABLE | Interest::WRITABLE,
                Target::Chan(self.id),
            ) {
                Ok(token) => {
                    self.state = State::Connecting {
                        sock,
                        token,
                        addr,
                        rest,
                    };
                    return Ok(Status::Alive);
                }
                Err(e) => self.last_error = Some(e),
            }
        }
        let why = self
            .last_error
            .take()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "no address".into());
        log!("connect_to {}: failed: {why}", self.desc);
        self.state = State::Closing;
        conn.reject_channel(self.id, open_failure::CONNECT_FAILED, &why)?;
        Ok(Status::Gone)
    }

    /// Poll reported readiness on one of the channel's fds.
    pub fn ready(
        &mut self,
        conn: &mut Connection,
        ctx: &mut Ctx,
        token: Token,
        ev: &mio::event::Event,
    ) -> ressh_proto::Result<Status> {
        let State::Connecting { sock, token: t, .. } = &self.state else {
            self.relay.ready(token, ev);
            return Ok(Status::Alive);
        };
        if *t != token {
            return Ok(Status::Alive);
        }
        let result = match sock.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match sock.peer_addr() {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotConnected && !ev.is_error() => Ok(false),
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(false) => Ok(Status::Alive),
            Ok(true) => {
                let State::Connecting {
                    sock, token, addr, ..
                } = std::mem::replace(&mut self.state, State::Open)
                else {
                    unreachable!()
                };
                let slot = self.relay.add_registered(OwnedFd::from(sock), token);
                self.relay.add_out(slot, None);
                self.relay.set_input(slot);
                log!("{} to {} connected ({addr})", self.kind, self.desc);
                conn.accept_channel(self.id)?;
                Ok(Status::Alive)
            }
            Err(e) => {
                let State::Connecting {
                    sock, token, rest, ..
                } = std::mem::replace(&mut self.state, State::Resolving)
                else {
                    unreachable!()
                };
                ctx.deregister(sock.as_raw_fd(), token);
                drop(sock);
                self.last_error = Some(e);
                self.connect_next(conn, ctx, rest)
            }
        }
    }

    /// The client confirmed a channel we opened.
    pub fn opened(&mut self) {
        if matches!(self.state, State::Opening) {
            self.state = State::Open;
            log!("{} from {} opened", self.kind, self.desc);
        }
    }

    /// Moves data; sends EOF when the socket read EOF, closes when both
    /// directions are done or the socket failed.
    pub fn pump(
        &mut self,
        conn: &mut Connection,
        ctx: &mut Ctx,
        scratch: &mut [u8],
    ) -> ressh_proto::Result<bool> {
        if !self.is_open() {
            return Ok(false);
        }
        let progress = self.relay.pump(conn, ctx, scratch)?;
        if self.relay.outs_done() && !self.sent_eof {
            self.sent_eof = true;
            conn.send_eof(self.id)?;
        }
        if self.relay.failed || (self.sent_eof && self.relay.input_done()) {
            self.state = State::Closing;
            conn.close_channel(self.id)?;
            return Ok(true);
        }
        Ok(progress)
    }

    /// The channel is closed: its relay, to drain what the client sent.
    pub fn into_relay(mut self, ctx: &mut Ctx) -> Relay {
        if let State::Connecting { sock, token, .. } =
            std::mem::replace(&mut self.state, State::Closing)
        {
            ctx.deregister(sock.as_raw_fd(), token);
        }
        std::mem::replace(&mut self.relay, Relay::new(self.id, OnEof::Shutdown))
    }

    /// The channel is gone: close the socket.
    pub fn close(&mut self, ctx: &mut Ctx) {
        if let State::Connecting { sock, token, .. } =
            std::mem::replace(&mut self.state, State::Closing)
        {
            ctx.deregister(sock.as_raw_fd(), token);
        }
        self.relay.close(ctx);
    }
}

/// One remote forward: its listening sockets (e.g. 127.0.0.1 and ::1).
pub struct Listener {
    /// The address and port as the client asked (the port may be 0).
    pub address: String,
    pub port: u32,
    /// The port actually bound.
    pub bound: u16,
    socks: Vec<(TcpListener, Token)>,
}

/// Where a tcpip-forward request listens: like OpenSSH, "", "*", "0.0.0.0"
/// and "::" mean every address and other addresses are used as given, but
/// only with GatewayPorts; otherwise (and for "localhost") loopback only.
fn listen_addrs(address: &str, gateway_ports: bool) -> Option<Vec<IpAddr>> {
    let loopback = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    if !gateway_ports || address.eq_ignore_ascii_case("localhost") {
        return Some(loopback);
    }
    if matches!(address, "" | "*" | "0.0.0.0" | "::") {
        return Some(vec![
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ]);
    }
    let h = address.trim_start_matches('[').trim_end_matches(']');
    h.parse::<IpAddr>().ok().map(|ip| vec![ip])
}

/// A non-blocking, close-on-exec listening socket (IPv6 sockets v6-only, so
/// 0.0.0.0 and :: can share a port).
pub(super) fn listen_on(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if family == AddressFamily::Inet6 {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    listen(&fd, Backlog::new(128).unwrap_or(Backlog::MAXCONN))?;
    Ok(TcpListener::from(fd))
}

impl Listener {
    /// Binds every address of the request (as the user: ports below 1024
    /// fail for others than root). Fails unless the first address binds.
    pub fn bind(ctx: &mut Ctx, id: u64, address: &str, port: u32) -> io::Result<Listener> {
        let port16 = u16::try_from(port)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "port out of range"))?;
        let addrs = listen_addrs(address, ctx.info.policy.gateway_ports).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "unsupported listen address")
        })?;
        let mut l = Listener {
            address: address.to_string(),
            port,
            bound: port16,
            socks: Vec::new(),
        };
        for (i, ip) in addrs.into_iter().enumerate() {
            let sock = match listen_on(SocketAddr::new(ip, l.bound)) {
                Ok(s) => s,
                // The first address decides; later ones (e.g. ::1 without
                // IPv6) are best effort, as in OpenSSH.
                Err(e) if i == 0 => return Err(e),
                Err(_) => continue,
            };
            if l.bound == 0 {
                l.bound = sock.local_addr()?.port();
            }
            let token =
                match ctx.register(sock.as_raw_fd(), Interest::READABLE, Target::Listener(id)) {
                    Ok(t) => t,
                    Err(e) => {
                        l.close(ctx);
                        return Err(e);
                    }
                };
            l.socks.push((sock, token));
        }
        Ok(l)
    }

    /// Accepts every pending connection and opens a forwarded-tcpip channel
    /// for each; connections beyond what the engine can open are dropped.
    pub fn accept(&mut self, conn: &mut Connection, ctx: &mut Ctx) -> Vec<TcpChan> {
        let mut out = Vec::new();
        for (sock, _) in &self.socks {
            loop {
                let (stream, peer) = match sock.accept() {
                    Ok(x) => x,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let kind = ChannelKind::ForwardedTcpip {
                    address: self.address.clone(),
                    port: self.bound as u32,
                    originator: peer.ip().to_string(),
                    originator_port: peer.port() as u32,
                };
                let Ok(id) = conn.open_channel(kind) else {
                    continue;
                };
                let desc = format!("{} port {}", peer.ip(), peer.port());
                match TcpChan::forwarded(id, ctx, OwnedFd::from(stream), "forwarded-tcpip", desc) {
                    Ok(c) => out.push(c),
                    Err(e) => {
                        log!("cannot watch a forwarded connection: {e}");
                        let _ = conn.close_channel(id);
                    }
                }
            }
        }
        out
    }

    pub fn close(&mut self, ctx: &mut Ctx) {
        for (sock, token) in self.socks.drain(..) {
            ctx.deregister(sock.as_raw_fd(), token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_resolution() {
        assert_eq!(
            quick_resolve("127.0.0.1", 80),
            Some(vec!["127.0.0.1:80".parse().unwrap()])
        );
        assert_eq!(
            quick_resolve("[::1]", 22),
            Some(vec!["[::1]:22".parse().unwrap()])
        );
        assert_eq!(quick_resolve("LocalHost", 1).map(|v| v.len()), Some(2));
        assert_eq!(quick_resolve("example.org", 1), None);
    }

    #[test]
    fn listen_addresses() {
        let lo = Some(vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]);
        assert_eq!(listen_addrs("", false), lo);
        assert_eq!(listen_addrs("0.0.0.0", false), lo);
        assert_eq!(listen_addrs("192.0.2.1", false), lo);
        assert_eq!(listen_addrs("localhost", true), lo);
        assert_eq!(listen_addrs("*", true).map(|v| v.len()), Some(2));
        assert_eq!(
            listen_addrs("127.0.0.2", true),
            Some(vec!["127.0.0.2".parse().unwrap()])
        );
        assert_eq!(listen_addrs("some.name", true), None);
    }
}
