//! One connection's relay: moves bytes between the application's local
//! stream and the TLS connection, through the resilience [`Core`] when the
//! extension was negotiated, plainly otherwise. What differs between the
//! roles (how a broken connection is replaced) is [`Side`].
//!
//! A relay is a state machine stepped by an event loop ([`Pump::step`],
//! [`Plain::step`]): the server's one loop steps every connection (mio,
//! edge-triggered), a client's thread steps its one connection (poll(2)).
//! Readiness is remembered in flags, set by the loop and cleared when a
//! call would block, so both kinds of loop drive the same code.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::Core;
use crate::engine::{Status, Tls};

const CHUNK: usize = 64 * 1024;

/// What happens to a connection, for applications that care (paper §5.4).
/// Called from the event loop; keep them short.
pub trait Events: Send + Sync {
    /// Server: a new connection's handshake completed, with the extension
    /// (`resilient`) or as plain TLS.
    fn established(&self, _tls_version: &str, _resilient: bool) {}
    /// The TCP connection broke; the client is reconnecting, the server waits.
    fn lost(&self, _why: &str) {}
    /// A reconnect completed over a new TCP connection from or to `peer`.
    fn reconnected(&self, _peer: SocketAddr) {}
    /// The peer's address differs from the previous connection's.
    fn peer_address_changed(&self, _old: SocketAddr, _new: SocketAddr) {}
    /// Server: the connection ended, cleanly (None) or why not; also for a
    /// TCP connection refused before or after its handshake.
    fn closed(&self, _error: Option<&str>) {}
}

/// [`Events`] that ignores everything.
pub struct NoEvents;
impl Events for NoEvents {}

/// The application's end: a local socket.
pub trait Local: Read + Write + AsRawFd + Send {
    fn shutdown_write(&self) -> io::Result<()>;
    fn set_nonblocking(&self, on: bool) -> io::Result<()>;
}

impl Local for TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        TcpStream::set_nonblocking(self, on)
    }
}

impl Local for mio::net::TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    /// Always non-blocking.
    fn set_nonblocking(&self, _on: bool) -> io::Result<()> {
        Ok(())
    }
}

impl Local for UnixStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        UnixStream::set_nonblocking(self, on)
    }
}

/// What a role does about connections (client: reconnect; server: wait for
/// a handoff).
pub(crate) trait Side {
    /// A descriptor to watch besides the sockets (netlink).
    fn extra_fd(&self) -> Option<RawFd>;
    /// The next time [`Side::act`] must run.
    fn deadline(&self, r: &Resilient) -> Option<Instant>;
    /// Called on every step while the connection works. May replace the
    /// connection (a reconnect), declare it broken (Ok(Some(why))), or end
    /// everything (Err).
    fn act(
        &mut self,
        r: &mut Resilient,
        extra_ready: bool,
        now: Instant,
    ) -> Result<Option<String>, String>;
    /// The connection broke.
    fn broken(&mut self, r: &mut Resilient, why: &str, now: Instant) -> Result<(), String>;
    /// The session ended (close or error): forget it.
    fn ended(&mut self);
}

/// The state [`Side`] works on.
pub(crate) struct Resilient {
    pub core: Core,
    pub conn: Option<Tls>,
    /// Frames waiting to be encrypted on `conn`.
    pub tx: Vec<u8>,
    /// Application bytes waiting for the local stream.
    pub to_local: Vec<u8>,
    pub last_rx: Instant,
    pub events: Arc<dyn Events>,
    /// The queue cap: above this much waiting for one destination (the
    /// local stream, or TCP to the peer), stop reading what feeds it.
    pub queue: usize,
}

impl Resilient {
    pub fn new(core: Core, tls: Tls, events: Arc<dyn Events>, queue: usize) -> Resilient {
        Resilient {
            core,
            conn: Some(tls),
            tx: Vec::new(),
            to_local: Vec::new(),
            last_rx: Instant::now(),
            events,
            queue,
        }
    }

    /// Switches to `tls`, which completed the RESUME exchange: `frames` are
    /// its first frames (the RESUME, when ours is sent after the switch).
    pub fn switch(&mut self, tls: Tls, frames: Vec<u8>, now: Instant) -> Result<(), String> {
        let old = self.conn.take().map(|c| c.peer);
        tls.set_nonblocking().map_err(|e| e.to_string())?;
        let peer = tls.peer;
        self.tx = frames;
        self.conn = Some(tls);
        self.last_rx = now;
        self.events.reconnected(peer);
        if let Some(old) = old.filter(|o| o.ip() != peer.ip()) {
            self.events.peer_address_changed(old, peer);
        }
        // Frames that arrived with the RESUME.
        self.process(now).map_err(|e| e.to_string())
    }

    fn process(&mut self, now: Instant) -> Result<(), crate::core::ProtocolError> {
        if let Some(c) = &mut self.conn {
            self.core
                .receive(&mut c.plain, &mut self.to_local, &mut self.tx, now)?;
        }
        Ok(())
    }

    /// Whether the peer may be read: nothing backs up towards the local
    /// stream or towards the peer (reading makes output to it too: ACK
    /// replies).
    fn want_tcp_read(&self, c: &Tls) -> bool {
        self.to_local.len() < self.queue && c.pending_out() < self.queue
    }
}

#[allow(unsafe_code)] // poll(2) (tls does not depend on nix)
fn poll(fds: &mut [libc::pollfd], deadline: Option<Instant>, now: Instant) -> io::Result<()> {
    let ms: i32 = match deadline {
        None => -1,
        // Rounded up, so that the deadline has passed when poll returns.
        Some(d) => {
            let left = d.saturating_duration_since(now);
            i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
        }
    };
    // SAFETY: fds is a valid slice of pollfd.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
        for f in fds.iter_mut() {
            f.revents = 0;
        }
    }
    Ok(())
}

/// A pollfd; no interest means the descriptor is left out (a hung-up socket
/// would otherwise wake every poll).
fn pfd(fd: RawFd, read: bool, write: bool) -> libc::pollfd {
    let events = if read { libc::POLLIN } else { 0 } | if write { libc::POLLOUT } else { 0 };
    libc::pollfd {
        fd: if events == 0 { -1 } else { fd },
        events,
        revents: 0,
    }
}

fn readable(f: &libc::pollfd) -> bool {
    f.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

fn writable(f: &libc::pollfd) -> bool {
    f.revents & (libc::POLLOUT | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// The local stream's readiness, remembered as [`Tls::readable`] is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalReady {
    pub readable: bool,
    pub writable: bool,
}

impl Default for LocalReady {
    /// Optimistic: a call that would block clears it.
    fn default() -> Self {
        LocalReady {
            readable: true,
            writable: true,
        }
    }
}

/// Reads at most `max` bytes from the local stream: None when it would
/// block (clearing `ready.readable`), Some(empty) at end of stream (an
/// error counts as the end).
fn read_local(local: &mut dyn Local, ready: &mut LocalReady, max: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; max.min(CHUNK)];
    match local.read(&mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            ready.readable = false;
            None
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
        Err(_) => Some(Vec::new()),
    }
}

/// Writes what it can of `buf` to the local stream; Err: the application
/// is gone.
fn write_local(local: &mut dyn Local, ready: &mut LocalReady, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut done = 0;
    let r = loop {
        if done == buf.len() {
            break Ok(());
        }
        match local.write(&buf[done..]) {
            Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready.writable = false;
                break Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    buf.drain(..done);
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = Vec::new();
    }
    r
}

/// What a step leaves to its event loop.
#[derive(Debug)]
pub(crate) enum Step {
    /// Step again at once: readiness is left that the step did not use up
    /// (it does a bounded amount of work per call, for fairness).
    Again,
    /// Wait for readiness, or until this time.
    Wait(Option<Instant>),
    /// The connection is over.
    Ended(Result<(), String>),
}

/// What a relay wants to do next, for a level-triggered loop's poll set.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Wants {
    pub local_read: bool,
    pub local_write: bool,
    pub tcp_read: bool,
    pub tcp_write: bool,
}

/// A resilient connection's relay.
pub(crate) struct Pump {
    pub r: Resilient,
    pub local: LocalReady,
    local_eof: bool,
    local_shut: bool,
    /// The peer's close_notify: what it sent still goes to the local
    /// stream, then the connection ends with this result.
    closing: Option<Result<(), String>>,
}

impl Pump {
    pub fn new(r: Resilient) -> Pump {
        Pump {
            r,
            local: LocalReady::default(),
            local_eof: false,
            local_shut: false,
            closing: None,
        }
    }

    fn want_local_read(&self) -> bool {
        let r = &self.r;
        !self.local_eof
            && self.closing.is_none()
            && r.core.room() > 0
            && r.conn.as_ref().is_none_or(|c| c.pending_out() < r.queue)
    }

    pub fn wants(&self) -> Wants {
        let r = &self.r;
        let c = r.conn.as_ref().filter(|_| self.closing.is_none());
        Wants {
            local_read: self.want_local_read(),
            local_write: !r.to_local.is_empty(),
            tcp_read: c.is_some_and(|c| r.want_tcp_read(c)),
            tcp_write: c.is_some_and(|c| c.pending_out() > 0),
        }
    }

    /// Does what readiness and time allow; an error ends the connection
    /// with close_notify.
    pub fn step(
        &mut self,
        local: &mut dyn Local,
        side: &mut dyn Side,
        extra_ready: bool,
        now: Instant,
    ) -> Step {
        let result = self.step_inner(local, side, extra_ready, now);
        if let Some(done) = result {
            side.ended();
            if let Some(c) = self.r.conn.take() {
                c.close();
            }
            return Step::Ended(done);
        }
        let w = self.wants();
        let r = &self.r;
        let again = (w.local_read && self.local.readable)
            || (w.local_write && self.local.writable)
            || r.conn
                .as_ref()
                .is_some_and(|c| (w.tcp_read && c.readable) || (w.tcp_write && c.writable));
        if again {
            return Step::Again;
        }
        if let Some(c) = &mut self.r.conn {
            c.trim();
        }
        Step::Wait(
            [self.r.core.timeout(), side.deadline(&self.r)]
                .into_iter()
                .flatten()
                .min(),
        )
    }

    fn step_inner(
        &mut self,
        local: &mut dyn Local,
        side: &mut dyn Side,
        extra_ready: bool,
        now: Instant,
    ) -> Option<Result<(), String>> {
        // The local stream.
        if self.want_local_read_now() {
            let max = self.r.core.room();
            if let Some(data) = read_local(local, &mut self.local, max) {
                let r = &mut self.r;
                if data.is_empty() {
                    self.local_eof = true;
                    r.core.send_fin(&mut r.tx);
                } else {
                    r.core.send(&data, &mut r.tx);
                }
            }
        }
        let r = &mut self.r;
        if !r.to_local.is_empty() && self.local.writable {
            if let Err(e) = write_local(local, &mut self.local, &mut r.to_local) {
                return Some(Err(format!("local stream: {e}")));
            }
        }
        if self.closing.is_some() {
            if !r.to_local.is_empty() {
                return None;
            }
            return self.closing.take();
        }

        // The TLS connection.
        let mut why = None;
        let mut closed = false;
        let want_tcp = r.conn.as_ref().is_some_and(|c| r.want_tcp_read(c));
        if let Some(c) = &mut r.conn {
            if c.readable && want_tcp {
                match c.pull() {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => why = Some(format!("TCP read: {e}")),
                }
            }
            // Always: records read during a handshake or a handoff wait here.
            if why.is_none() {
                match c.decrypt() {
                    Ok((st, n)) => {
                        if n > 0 {
                            r.last_rx = now;
                        }
                        closed = st == Status::Closed;
                    }
                    Err(e) => why = Some(e.to_string()),
                }
            }
        }
        if let Err(e) = r.process(now) {
            return Some(Err(e.to_string()));
        }
        if closed {
            // close_notify: the peer ended the connection for good.
            self.closing = Some(if r.core.peer_fin() && r.core.fin_sent() {
                Ok(())
            } else {
                Err("closed by the peer before the end of the streams".into())
            });
            if let Some(c) = r.conn.take() {
                c.close();
            }
            return if r.to_local.is_empty() {
                self.closing.take()
            } else {
                None
            };
        }
        r.core.on_timeout(now, &mut r.tx);
        if r.core.peer_fin() && r.to_local.is_empty() && !self.local_shut {
            self.local_shut = true;
            let _ = local.shutdown_write();
        }
        if why.is_none() {
            match side.act(r, extra_ready, now) {
                Ok(w) => why = w,
                Err(e) => return Some(Err(e)),
            }
        }
        if let Some(c) = &mut r.conn {
            if why.is_none() && !r.tx.is_empty() {
                if let Err(e) = c.encrypt(&r.tx) {
                    why = Some(e.to_string());
                }
                r.tx.clear();
            }
            if why.is_none() && c.pending_out() > 0 && c.writable {
                if let Err(e) = c.push() {
                    why = Some(format!("TCP write: {e}"));
                }
            }
        } else {
            // Detached: the frames are lost anyway; the buffer has the data.
            r.tx.clear();
        }
        if r.tx.is_empty() && r.tx.capacity() > 0 {
            r.tx = Vec::new();
        }
        if let Some(why) = why {
            r.conn = None;
            r.tx.clear();
            r.events.lost(&why);
            if let Err(e) = side.broken(r, &why, now) {
                return Some(Err(e));
            }
            return None;
        }
        if r.core.finished() && r.to_local.is_empty() {
            if let Some(c) = r.conn.take() {
                c.close();
            }
            return Some(Ok(()));
        }
        None
    }

    fn want_local_read_now(&self) -> bool {
        self.want_local_read() && self.local.readable
    }
}

/// Runs a resilient connection on the calling thread until it is closed
/// for good (a client's connection).
pub(crate) fn run_resilient(
    local: &mut dyn Local,
    r: Resilient,
    side: &mut dyn Side,
) -> Result<(), String> {
    local.set_nonblocking(true).map_err(|e| e.to_string())?;
    if let Some(c) = &r.conn {
        c.set_nonblocking().map_err(|e| e.to_string())?;
    }
    let mut p = Pump::new(r);
    let mut extra_ready = false;
    loop {
        let now = Instant::now();
        let deadline = match p.step(local, side, extra_ready, now) {
            Step::Ended(r) => return r,
            Step::Again => Some(now),
            Step::Wait(d) => d,
        };
        let w = p.wants();
        let tcp = p.r.conn.as_ref();
        let mut fds = vec![
            pfd(
                local.as_raw_fd(),
                w.local_read && !p.local.readable,
                w.local_write && !p.local.writable,
            ),
            match tcp {
                Some(c) => pfd(
                    c.tcp.as_raw_fd(),
                    w.tcp_read && !c.readable,
                    w.tcp_write && !c.writable,
                ),
                None => pfd(-1, false, false),
            },
        ];
        if let Some(fd) = side.extra_fd() {
            fds.push(pfd(fd, true, false));
        }
        poll(&mut fds, deadline, now).map_err(|e| format!("poll: {e}"))?;
        p.local.readable |= readable(&fds[0]);
        p.local.writable |= writable(&fds[0]);
        if let Some(c) = &mut p.r.conn {
            c.readable |= readable(&fds[1]);
            c.writable |= writable(&fds[1]);
        }
        extra_ready = fds.get(2).is_some_and(readable);
    }
}

/// Plain TLS (the extension was not negotiated): a broken connection ends
/// it, as with any TLS. End of the local stream sends close_notify; the
/// peer's close_notify ends the local stream.
pub(crate) struct Plain {
    pub c: Tls,
    pub local: LocalReady,
    to_local: Vec<u8>,
    local_eof: bool,
    peer_closed: bool,
    local_shut: bool,
    queue: usize,
}

impl Plain {
    /// `queue`: as [`Resilient::queue`].
    pub fn new(mut c: Tls, queue: usize) -> Plain {
        let to_local = std::mem::take(&mut c.plain);
        Plain {
            c,
            local: LocalReady::default(),
            to_local,
            local_eof: false,
            peer_closed: false,
            local_shut: false,
            queue,
        }
    }

    pub fn wants(&self) -> Wants {
        let c = &self.c;
        Wants {
            local_read: !self.local_eof && c.pending_out() < self.queue,
            local_write: !self.to_local.is_empty(),
            // TLS answers some records itself (KeyUpdate): stop reading the
            // peer while output to it backs up.
            tcp_read: !self.peer_closed
                && self.to_local.len() < self.queue
                && c.pending_out() < self.queue,
            tcp_write: c.pending_out() > 0,
        }
    }

    pub fn step(&mut self, local: &mut dyn Local) -> Step {
        match self.step_inner(local) {
            Ok(true) => return Step::Ended(Ok(())),
            Ok(false) => {}
            Err(e) => return Step::Ended(Err(e)),
        }
        let w = self.wants();
        let c = &self.c;
        if (w.local_read && self.local.readable)
            || (w.local_write && self.local.writable)
            || (w.tcp_read && c.readable)
            || (w.tcp_write && c.writable)
        {
            return Step::Again;
        }
        self.c.trim();
        Step::Wait(None)
    }

    /// Ok(true): done.
    fn step_inner(&mut self, local: &mut dyn Local) -> Result<bool, String> {
        if self.local_eof && self.local_shut && self.c.pending_out() == 0 {
            return Ok(true);
        }
        let w = self.wants();
        if w.local_read && self.local.readable {
            if let Some(data) = read_local(local, &mut self.local, CHUNK) {
                if data.is_empty() {
                    self.local_eof = true;
                    let _ = self.c.ssl.shutdown();
                } else {
                    self.c.encrypt(&data).map_err(|e| e.to_string())?;
                }
            }
        }
        if !self.to_local.is_empty() && self.local.writable {
            write_local(local, &mut self.local, &mut self.to_local)
                .map_err(|e| format!("local stream: {e}"))?;
        }
        if !self.peer_closed {
            if w.tcp_read && self.c.readable {
                match self.c.pull() {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(format!("TCP read: {e}")),
                }
            }
            let (st, _) = self.c.decrypt().map_err(|e| e.to_string())?;
            self.to_local.append(&mut self.c.plain);
            if st == Status::Closed {
                self.peer_closed = true;
            }
        }
        if self.peer_closed && self.to_local.is_empty() && !self.local_shut {
            self.local_shut = true;
            let _ = local.shutdown_write();
        }
        if self.c.writable {
            self.c.push().map_err(|e| format!("TCP write: {e}"))?;
        }
        Ok(false)
    }
}

/// Relays plain TLS on the calling thread (a client's connection).
pub(crate) fn run_plain(local: &mut dyn Local, c: Tls, queue: usize) -> Result<(), String> {
    local.set_nonblocking(true).map_err(|e| e.to_string())?;
    c.set_nonblocking().map_err(|e| e.to_string())?;
    let mut p = Plain::new(c, queue);
    loop {
        let now = Instant::now();
        let deadline = match p.step(local) {
            Step::Ended(r) => return r,
            Step::Again => Some(now),
            Step::Wait(d) => d,
        };
        let w = p.wants();
        let mut fds = [
            pfd(
                local.as_raw_fd(),
                w.local_read && !p.local.readable,
                w.local_write && !p.local.writable,
            ),
            pfd(
                p.c.tcp.as_raw_fd(),
                w.tcp_read && !p.c.readable,
                w.tcp_write && !p.c.writable,
            ),
        ];
        poll(&mut fds, deadline, now).map_err(|e| format!("poll: {e}"))?;
        p.local.readable |= readable(&fds[0]);
        p.local.writable |= writable(&fds[0]);
        p.c.readable |= readable(&fds[1]);
        p.c.writable |= writable(&fds[1]);
    }
}

/// Sleeps until `until` (reconnect back-off).
pub(crate) fn sleep_until(until: Instant) {
    let now = Instant::now();
    if until > now {
        std::thread::sleep(until - now);
    }
}

/// Doubles a back-off up to a second.
pub(crate) fn backoff(d: Duration) -> Duration {
    (d * 2).clamp(Duration::from_millis(20), Duration::from_secs(1))
}
