//! The event loop of one connection: moves bytes between the application's
//! local stream and the TLS connection, through the resilience [`Core`]
//! when the extension was negotiated, plainly otherwise. What differs
//! between the roles (how a broken connection is replaced) is [`Side`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::core::Core;
use crate::engine::{Status, Tls};

const CHUNK: usize = 64 * 1024;

/// What happens to a connection, for applications that care (paper §5.4).
/// Called on the connection's own thread; keep them short.
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
    /// A descriptor to watch besides the sockets (netlink, a waker).
    fn extra_fd(&self) -> Option<RawFd>;
    /// The next time [`Side::act`] must run.
    fn deadline(&self, r: &Resilient<'_>) -> Option<Instant>;
    /// Called after every poll while the connection works. May replace the
    /// connection (a reconnect), declare it broken (Ok(Some(why))), or end
    /// everything (Err).
    fn act(
        &mut self,
        r: &mut Resilient<'_>,
        extra_ready: bool,
        now: Instant,
    ) -> Result<Option<String>, String>;
    /// The connection broke.
    fn broken(&mut self, r: &mut Resilient<'_>, why: &str, now: Instant) -> Result<(), String>;
    /// The session ended (close or error): forget it.
    fn ended(&mut self);
}

/// The state [`Side`] works on.
pub(crate) struct Resilient<'a> {
    pub core: Core,
    pub conn: Option<Tls>,
    /// Frames waiting to be encrypted on `conn`.
    pub tx: Vec<u8>,
    /// Application bytes waiting for the local stream.
    pub to_local: Vec<u8>,
    pub last_rx: Instant,
    pub events: &'a dyn Events,
    /// The queue cap: above this much waiting for one destination (the
    /// local stream, or TCP to the peer), stop reading what feeds it.
    pub queue: usize,
}

impl Resilient<'_> {
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
fn pfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: if events == 0 { -1 } else { fd },
        events,
        revents: 0,
    }
}

const READY: libc::c_short = libc::POLLIN | libc::POLLHUP | libc::POLLERR;

/// Reads at most `max` bytes from the local stream: None on WouldBlock,
/// Some(empty) at end of stream (an error counts as the end).
fn read_local(local: &mut dyn Local, max: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; max.min(CHUNK)];
    match local.read(&mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
        Err(_) => Some(Vec::new()),
    }
}

/// Writes what it can of `buf` to the local stream; Err: the application
/// is gone.
fn write_local(local: &mut dyn Local, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut done = 0;
    let r = loop {
        if done == buf.len() {
            break Ok(());
        }
        match local.write(&buf[done..]) {
            Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    buf.drain(..done);
    r
}

/// Runs a resilient connection until it is closed for good.
pub(crate) fn run_resilient(
    local: &mut dyn Local,
    mut r: Resilient<'_>,
    side: &mut dyn Side,
) -> Result<(), String> {
    local.set_nonblocking(true).map_err(|e| e.to_string())?;
    if let Some(c) = &r.conn {
        c.set_nonblocking().map_err(|e| e.to_string())?;
    }
    let mut local_eof = false;
    let mut local_shut = false;
    let result = loop {
        let now = Instant::now();
        // What to wait for.
        let mut fds = Vec::with_capacity(3);
        let want_local_read = !local_eof
            && r.core.room() > 0
            && r.conn.as_ref().is_none_or(|c| c.pending_out() < r.queue);
        let mut ev = 0;
        if want_local_read {
            ev |= libc::POLLIN;
        }
        if !r.to_local.is_empty() {
            ev |= libc::POLLOUT;
        }
        fds.push(pfd(local.as_raw_fd(), ev));
        if let Some(c) = &r.conn {
            // Reading from the peer makes output to it too (ACK replies):
            // while that backs up, stop reading it, as for the local stream.
            let mut ev = 0;
            if r.to_local.len() < r.queue && c.pending_out() < r.queue {
                ev |= libc::POLLIN;
            }
            if c.pending_out() > 0 {
                ev |= libc::POLLOUT;
            }
            fds.push(pfd(c.tcp.as_raw_fd(), ev));
        } else {
            fds.push(pfd(-1, 0));
        }
        if let Some(fd) = side.extra_fd() {
            fds.push(pfd(fd, libc::POLLIN));
        }
        // Do not wait while input is buffered or frames are unsent (the
        // retransmission after a reconnect).
        let now_if_input = r
            .conn
            .as_ref()
            .filter(|c| c.has_input() || !r.tx.is_empty())
            .map(|_| now);
        let deadline = [r.core.timeout(), side.deadline(&r), now_if_input]
            .into_iter()
            .flatten()
            .min();
        if let Err(e) = poll(&mut fds, deadline, now) {
            break Err(format!("poll: {e}"));
        }
        let now = Instant::now();

        // The local stream.
        if fds[0].revents & (READY | libc::POLLNVAL) != 0 && want_local_read {
            let max = r.core.room();
            if let Some(data) = read_local(local, max) {
                if data.is_empty() {
                    local_eof = true;
                    r.core.send_fin(&mut r.tx);
                } else {
                    r.core.send(&data, &mut r.tx);
                }
            }
        }
        if !r.to_local.is_empty()
            && fds[0].revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0
        {
            if let Err(e) = write_local(local, &mut r.to_local) {
                break Err(format!("local stream: {e}"));
            }
        }

        // The TLS connection.
        let mut why = None;
        let mut closed = false;
        if let Some(c) = &mut r.conn {
            if fds[1].revents & READY != 0 {
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
            if let Some(c) = r.conn.take() {
                c.close();
            }
            break Err(e.to_string());
        }
        if closed {
            // close_notify: the peer ended the connection for good.
            let _ = write_blocking(local, &mut r.to_local);
            break if r.core.peer_fin() && r.core.fin_sent() {
                Ok(())
            } else {
                Err("closed by the peer before the end of the streams".into())
            };
        }
        r.core.on_timeout(now, &mut r.tx);
        if r.core.peer_fin() && r.to_local.is_empty() && !local_shut {
            local_shut = true;
            let _ = local.shutdown_write();
        }
        if why.is_none() {
            let ready = fds.get(2).is_some_and(|f| f.revents & READY != 0);
            match side.act(&mut r, ready, now) {
                Ok(w) => why = w,
                Err(e) => break Err(e),
            }
        }
        if let Some(c) = &mut r.conn {
            if why.is_none() && !r.tx.is_empty() {
                if let Err(e) = c.encrypt(&r.tx) {
                    why = Some(e.to_string());
                }
                r.tx.clear();
            }
            if why.is_none() && c.pending_out() > 0 {
                if let Err(e) = c.push() {
                    why = Some(format!("TCP write: {e}"));
                }
            }
        } else {
            // Detached: the frames are lost anyway; the buffer has the data.
            r.tx.clear();
        }
        if let Some(why) = why {
            r.conn = None;
            r.tx.clear();
            r.events.lost(&why);
            if let Err(e) = side.broken(&mut r, &why, now) {
                break Err(e);
            }
            continue;
        }
        if r.core.finished() && r.to_local.is_empty() {
            if let Some(c) = r.conn.take() {
                c.close();
            }
            break Ok(());
        }
    };
    side.ended();
    if result.is_err() {
        // An explicit close: the peer ends the connection too.
        if let Some(c) = r.conn.take() {
            c.close();
        }
    }
    result
}

/// Writes all of `buf` to the local stream, briefly blocking (the session is
/// ending; the application gets what arrived).
fn write_blocking(local: &mut dyn Local, buf: &mut Vec<u8>) -> io::Result<()> {
    local.set_nonblocking(false)?;
    let r = local.write_all(buf);
    buf.clear();
    r
}

/// Relays plain TLS (the extension was not negotiated): a broken connection
/// ends it, as with any TLS. End of the local stream sends close_notify;
/// the peer's close_notify ends the local stream.
/// `queue`: as [`Resilient::queue`].
pub(crate) fn run_plain(local: &mut dyn Local, mut c: Tls, queue: usize) -> Result<(), String> {
    local.set_nonblocking(true).map_err(|e| e.to_string())?;
    c.set_nonblocking().map_err(|e| e.to_string())?;
    let mut to_local = std::mem::take(&mut c.plain);
    let (mut local_eof, mut peer_closed, mut local_shut) = (false, false, false);
    loop {
        if local_eof && local_shut && c.pending_out() == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let want_local = !local_eof && c.pending_out() < queue;
        let mut ev = if want_local { libc::POLLIN } else { 0 };
        if !to_local.is_empty() {
            ev |= libc::POLLOUT;
        }
        // TLS answers some records itself (KeyUpdate): stop reading the
        // peer while output to it backs up.
        let mut tev = if !peer_closed && to_local.len() < queue && c.pending_out() < queue {
            libc::POLLIN
        } else {
            0
        };
        if c.pending_out() > 0 {
            tev |= libc::POLLOUT;
        }
        let mut fds = [pfd(local.as_raw_fd(), ev), pfd(c.tcp.as_raw_fd(), tev)];
        let deadline = (!peer_closed && c.has_input()).then_some(now);
        poll(&mut fds, deadline, now).map_err(|e| format!("poll: {e}"))?;
        if want_local && fds[0].revents & READY != 0 {
            if let Some(data) = read_local(local, CHUNK) {
                if data.is_empty() {
                    local_eof = true;
                    let _ = c.ssl.shutdown();
                } else {
                    c.encrypt(&data).map_err(|e| e.to_string())?;
                }
            }
        }
        if !to_local.is_empty() {
            write_local(local, &mut to_local).map_err(|e| format!("local stream: {e}"))?;
        }
        if !peer_closed {
            if fds[1].revents & READY != 0 {
                match c.pull() {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(format!("TCP read: {e}")),
                }
            }
            let (st, _) = c.decrypt().map_err(|e| e.to_string())?;
            to_local.append(&mut c.plain);
            if st == Status::Closed {
                peer_closed = true;
            }
        }
        if peer_closed && to_local.is_empty() && !local_shut {
            local_shut = true;
            let _ = local.shutdown_write();
        }
        c.push().map_err(|e| format!("TCP write: {e}"))?;
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
