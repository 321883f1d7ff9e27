//! Detaching and reconnecting (docs/PROTOCOL.md §5–6), and the monitor's
//! endpoint as a source of messages.
//!
//! A transport that ends without DISCONNECT (EOF, an error, a reset, or
//! ClientAlive finding it dead) detaches the session when the extension is
//! active and DetachTimeout is not zero: the socket is closed, the monitor
//! told (`FromSession::Detached`), and everything else stays. What children
//! write waits in the engine's retransmit buffer until its cap closes the
//! send windows; then they are not read (and block), so memory stays
//! bounded. The session ends when the detach timeout passes.
//!
//! A reconnect comes in two steps from the monitor. `ToSession::Reconnect`
//! carries the request the new connection's kex worker received: the engine
//! validates it ([`Connection::accept_reconnect`]) and the verdict goes
//! back; nothing in the session changes. After a positive verdict
//! `ToSession::Transport` brings the new socket: the reply goes out on it,
//! and once the client's key confirmation arrives the session moves there
//! ([`Connection::commit_reconnect`]), dropping the old socket if it was
//! still open (make-before-break). A failed or late attempt is abandoned
//! ([`Connection::drop_reconnect`]) and the session is as it was. Several
//! accepted attempts may wait at once (bounded by the engine); none evicts
//! another, the first confirmed commits and voids the rest, and a replayed
//! request is refused before it becomes one (docs/PROTOCOL.md §8).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use ressh_ipc::msg::{FromSession, ToSession};
use ressh_ipc::Endpoint;
use ressh_proto::wire::printable;
use ressh_proto::{ReconnectRequest, ServerReconnect};

use super::{io_err, Session, Wire, NEW_SOCK, NEW_SOCKS, SOCK};
use crate::Error;

/// How long an accepted reconnect may wait for its transport, and then for
/// the client's key confirmation.
pub const PENDING_TIMEOUT: Duration = Duration::from_secs(10);

/// The monitor's endpoint, read without blocking the loop.
pub struct Monitor {
    endpoint: Arc<Endpoint>,
    /// Edge-triggered readiness; cleared when poll(2) finds nothing.
    pub readable: bool,
}

type Incoming = (ToSession, Vec<OwnedFd>);

impl Monitor {
    pub fn new(endpoint: Arc<Endpoint>) -> Monitor {
        Monitor {
            endpoint,
            readable: true,
        }
    }

    pub fn send(&self, m: &FromSession) -> ressh_ipc::Result<()> {
        self.endpoint.send(m, &[])
    }

    /// The next message; None when nothing waits.
    fn try_recv(&mut self) -> ressh_ipc::Result<Option<Incoming>> {
        if !self.readable {
            return Ok(None);
        }
        let mut fds = [PollFd::new(self.endpoint.as_fd(), PollFlags::POLLIN)];
        let ready = loop {
            match poll(&mut fds, PollTimeout::ZERO) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => break r?,
            }
        };
        if ready == 0 {
            self.readable = false;
            return Ok(None);
        }
        // A frame has begun (or the monitor hung up, which recv reports):
        // the monitor writes whole frames, so this does not wait long.
        self.endpoint.recv::<ToSession>().map(Some)
    }
}

/// A detached session's timer.
pub struct Detached {
    pub since: Instant,
    /// None: DetachTimeout too large to represent, i.e. wait forever.
    pub deadline: Option<Instant>,
}

/// An accepted reconnect attempt.
pub struct Pending {
    pub id: u64,
    /// The monitor's name for it (the broker's route).
    route: u64,
    /// The poll token of its transport.
    pub token: Token,
    sr: ServerReconnect,
    pub deadline: Instant,
    /// The new transport, once the monitor sent it.
    pub wire: Option<Wire>,
    peer_addr: String,
    peer_port: u16,
}

/// A connected socket from the monitor, made non-blocking and registered.
pub fn into_mio(
    sock: std::net::TcpStream,
    registry: &Registry,
    token: Token,
) -> Result<TcpStream, Error> {
    sock.set_nonblocking(true).map_err(io_err("socket"))?;
    let _ = sock.set_nodelay(true);
    let mut sock = TcpStream::from_std(sock);
    registry
        .register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)
        .map_err(io_err("poll"))?;
    Ok(sock)
}

impl Session {
    /// Tells the monitor something; a monitor that is gone ends the session.
    pub(super) fn notify(&mut self, m: FromSession) {
        if let Err(e) = self.monitor.send(&m) {
            if !self.ended {
                log!("monitor: {e}; ending the session");
            }
            self.end();
        }
    }

    /// The tokens the broker routes reconnects by (with resilience only).
    pub(super) fn send_tokens(&mut self) {
        if self.conn.resilience_active() {
            let t = self.conn.resume_tokens();
            self.notify(FromSession::Tokens(t));
        }
    }

    /// Handles what the monitor sent; returns whether anything came.
    pub(super) fn service_monitor(&mut self) -> bool {
        let mut progress = false;
        while !self.ended {
            match self.monitor.try_recv() {
                Ok(Some((m, fds))) => {
                    progress = true;
                    self.monitor_message(m, fds);
                }
                Ok(None) => break,
                Err(ressh_ipc::Error::Closed) => {
                    log!("the monitor closed its endpoint; ending the session");
                    self.end();
                }
                Err(e) => {
                    log!("monitor: {e}; ending the session");
                    self.end();
                }
            }
        }
        progress
    }

    fn monitor_message(&mut self, m: ToSession, fds: Vec<OwnedFd>) {
        match m {
            ToSession::Reconnect { id, request } if fds.is_empty() => {
                self.reconnect_request(id, &request)
            }
            ToSession::Transport {
                id,
                leftover,
                peer_addr,
                peer_port,
            } => self.transport(id, leftover, peer_addr, peer_port, fds),
            ToSession::Reconnect { .. } => {
                log!("monitor: a reconnect request with descriptors; ignored")
            }
            ToSession::Refused { id } => self.refused(id),
            ToSession::Terminate => {
                if let Some(d) = self.detached.as_mut() {
                    log!("too many detached sessions for this user: ending this one");
                    d.deadline = Some(std::time::Instant::now());
                }
            }
            ToSession::Signature(answer) => match self.signer.answer(answer, &fds) {
                Some(signature) => self.signed(signature),
                None => log!("monitor: a signature nobody asked for; ignored"),
            },
            ToSession::HostKeyProofs(r) => self.host_key_proofs(r),
            ToSession::Start(_) => log!("monitor: a second Start; ignored"),
        }
    }

    /// Phase 1: validate. An accepted attempt joins those pending; none is
    /// ever evicted (a replayed or otherwise unconfirmable attempt must not
    /// displace the real client's), the engine bounds how many there are,
    /// and the first confirmed one commits. A refused one changes nothing.
    fn reconnect_request(&mut self, route: u64, req: &ReconnectRequest) {
        let verdict = match self.conn.accept_reconnect(req) {
            Ok(sr) => {
                let token = (0..NEW_SOCKS)
                    .map(|i| Token(NEW_SOCK.0 + i))
                    .find(|t| self.pending.iter().all(|p| p.token != *t));
                match token {
                    Some(token) => {
                        self.next_pending += 1;
                        self.pending.push(Pending {
                            id: self.next_pending,
                            route,
                            token,
                            sr,
                            deadline: Instant::now() + PENDING_TIMEOUT,
                            wire: None,
                            peer_addr: String::new(),
                            peer_port: 0,
                        });
                        Ok(())
                    }
                    None => {
                        // The engine bounds the attempts by the same number.
                        self.conn.drop_reconnect(sr);
                        Err((
                            ressh_proto::resilience::failure::TRY_AGAIN,
                            "too many reconnects in progress".to_string(),
                        ))
                    }
                }
            }
            Err(r) => Err((r.code, r.description)),
        };
        if let Err((code, description)) = &verdict {
            log!(
                "reconnect refused: {} (code {code})",
                printable(description.as_bytes())
            );
        }
        self.notify(FromSession::ReconnectVerdict {
            id: route,
            result: verdict,
        });
    }

    /// The monitor refused attempt `route`, which this worker accepted (the
    /// new address's policy, or a verdict that came too late): it is
    /// dropped before any transport came.
    fn refused(&mut self, route: u64) {
        match self
            .pending
            .iter()
            .position(|p| p.route == route && p.wire.is_none())
        {
            Some(i) => {
                let p = self.pending.remove(i);
                self.conn.drop_reconnect(p.sr);
            }
            None => log!("monitor: refused a reconnect that is not pending; ignored"),
        }
    }

    /// Phase 2: the new socket for accepted attempt `route`.
    fn transport(
        &mut self,
        route: u64,
        leftover: Vec<u8>,
        peer_addr: String,
        peer_port: u16,
        mut fds: Vec<OwnedFd>,
    ) {
        let shown = format!("{} port {peer_port}", printable(peer_addr.as_bytes()));
        if fds.len() != 1 {
            log!(
                "monitor: a transport from {shown} with {} descriptors; ignored",
                fds.len()
            );
            return;
        }
        let fd = fds.remove(0);
        let Some(p) = self.pending.iter_mut().find(|p| p.route == route) else {
            log!("monitor: a transport from {shown} without a pending reconnect; closed");
            return;
        };
        if p.wire.is_some() {
            log!("monitor: a second transport from {shown} for one reconnect; closed");
            return;
        }
        let id = p.id;
        let sock = std::net::TcpStream::from(fd);
        let stream = match into_mio(sock, self.poll.registry(), p.token) {
            Ok(s) => s,
            Err(e) => {
                p.peer_addr = peer_addr;
                p.peer_port = peer_port;
                self.abandon_pending(id, &e.to_string());
                return;
            }
        };
        let mut wire = Wire::new(stream);
        wire.pre = p.sr.take_output();
        p.wire = Some(wire);
        p.peer_addr = peer_addr;
        p.peer_port = peer_port;
        p.deadline = Instant::now() + PENDING_TIMEOUT;
        self.feed_pending(id, &leftover);
    }

    /// Bytes from the new transport for attempt `id`; commits once the
    /// client's key confirmation verified.
    fn feed_pending(&mut self, id: u64, data: &[u8]) {
        let Some(p) = self.pending.iter_mut().find(|p| p.id == id) else {
            return;
        };
        if let Err(e) = p.sr.handle_input(data) {
            self.abandon_pending(id, &e.to_string());
            return;
        }
        let out = p.sr.take_output();
        if let Some(w) = p.wire.as_mut() {
            w.pre.extend_from_slice(&out);
        }
        if p.sr.is_confirmed() {
            self.commit(id);
        }
    }

    /// Moves bytes on the new transports of pending attempts.
    pub(super) fn pump_pending(&mut self, buf: &mut [u8]) -> bool {
        let ids: Vec<u64> = self.pending.iter().map(|p| p.id).collect();
        let mut progress = false;
        for id in ids {
            progress |= self.pump_one(id, buf);
        }
        progress
    }

    fn pump_one(&mut self, id: u64, buf: &mut [u8]) -> bool {
        let mut progress = false;
        loop {
            let Some(w) = self
                .pending
                .iter_mut()
                .find(|p| p.id == id)
                .and_then(|p| p.wire.as_mut())
            else {
                return progress;
            };
            if w.writable && !w.pre.is_empty() {
                match w.stream.write(&w.pre) {
                    Ok(n) => {
                        w.pre.drain(..n);
                        progress = true;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => w.writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.abandon_pending(id, &format!("write error: {e}"));
                        return true;
                    }
                }
            }
            if !w.readable {
                return progress;
            }
            match w.stream.read(buf) {
                Ok(0) => {
                    self.abandon_pending(id, "connection closed before the key confirmation");
                    return true;
                }
                Ok(n) => {
                    progress = true;
                    self.feed_pending(id, &buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => w.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.abandon_pending(id, &format!("read error: {e}"));
                    return true;
                }
            }
        }
    }

    fn drop_pending_wire(&mut self, p: &mut Pending) {
        if let Some(mut w) = p.wire.take() {
            let _ = self.poll.registry().deregister(&mut w.stream);
        }
    }

    fn log_abandoned(p: &Pending, why: &str) {
        match p.wire.is_some() {
            true => log!(
                "Reconnect from {} port {} failed: {why}",
                printable(p.peer_addr.as_bytes()),
                p.peer_port
            ),
            false => log!("Reconnect abandoned before its transport arrived: {why}"),
        }
    }

    /// Gives up attempt `id` (failed or timed out); the other attempts and
    /// the session go on as they were.
    pub(super) fn abandon_pending(&mut self, id: u64, why: &str) {
        let Some(i) = self.pending.iter().position(|p| p.id == id) else {
            return;
        };
        let mut p = self.pending.remove(i);
        Self::log_abandoned(&p, why);
        self.drop_pending_wire(&mut p);
        self.conn.drop_reconnect(p.sr);
    }

    /// Gives up every pending attempt (the session ends).
    pub(super) fn abandon_all_pending(&mut self, why: &str) {
        for mut p in std::mem::take(&mut self.pending) {
            Self::log_abandoned(&p, why);
            self.drop_pending_wire(&mut p);
        }
        self.conn.abort_reconnect();
    }

    /// The client confirmed the keys of attempt `id`: the session moves to
    /// its transport, and every other pending attempt is void.
    fn commit(&mut self, id: u64) {
        let Some(i) = self.pending.iter().position(|p| p.id == id) else {
            return;
        };
        let mut p = self.pending.remove(i);
        let Some(mut wire) = p.wire.take() else {
            return;
        };
        for mut other in std::mem::take(&mut self.pending) {
            Self::log_abandoned(&other, "another attempt confirmed first");
            self.drop_pending_wire(&mut other);
        }
        let registry = self.poll.registry();
        if let Some(mut old) = self.wire.take() {
            // Make-before-break: the old connection never broke, or this
            // loop has not noticed yet. It carries nothing more.
            let _ = registry.deregister(&mut old.stream);
        }
        if let Err(e) = registry.reregister(
            &mut wire.stream,
            SOCK,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log!("Reconnect failed: poll: {e}");
            self.conn.abort_reconnect();
            self.end();
            return;
        }
        wire.pre.extend(p.sr.take_output());
        wire.readable = true;
        wire.writable = true;
        let now = Instant::now();
        let r = self.conn.commit_reconnect(p.sr, now);
        self.wire = Some(wire);
        let away = self
            .detached
            .take()
            .map(|d| now.saturating_duration_since(d.since))
            .unwrap_or_default();
        let info = &mut self.ctx.info;
        let (old_addr, old_port) = (
            std::mem::replace(&mut info.peer_addr, p.peer_addr),
            std::mem::replace(&mut info.peer_port, p.peer_port),
        );
        log!(
            "Reconnected: user {} from {} port {} (was {} port {}) after {:.1} s",
            printable(info.user.name.as_bytes()),
            printable(info.peer_addr.as_bytes()),
            info.peer_port,
            printable(old_addr.as_bytes()),
            old_port,
            away.as_secs_f64()
        );
        self.alive.heard(now);
        self.idle.restart(now);
        if let Err(e) = r {
            log!("disconnecting: {e}");
            self.end();
            return;
        }
        self.notify(FromSession::Attached);
        self.send_tokens();
    }

    /// Whether a lost transport detaches the session rather than ending it.
    pub(super) fn can_detach(&self) -> bool {
        !self.ended
            && !self.conn.is_closed()
            && self.conn.resilience_active()
            && self.ctx.info.policy.detach_timeout_secs > 0
    }

    /// The transport ended without DISCONNECT (`why` is logged): detach, or
    /// end the session as without resilience.
    pub(super) fn transport_lost(&mut self, why: &str) {
        log!("{why}");
        if self.can_detach() {
            self.detach();
        } else {
            self.end();
        }
    }

    pub(super) fn detach(&mut self) {
        if let Some(mut w) = self.wire.take() {
            let _ = self.poll.registry().deregister(&mut w.stream);
        }
        self.drop_output();
        if self.detached.is_some() {
            return;
        }
        let secs = self.ctx.info.policy.detach_timeout_secs;
        let now = Instant::now();
        self.detached = Some(Detached {
            since: now,
            deadline: now.checked_add(Duration::from_secs(secs)),
        });
        self.alive.deadline = None;
        let i = &self.ctx.info;
        log!(
            "Detached: user {} from {} port {}; waiting up to {secs} s for a reconnect",
            printable(i.user.name.as_bytes()),
            i.peer_addr,
            i.peer_port
        );
        self.notify(FromSession::Detached);
    }
}
