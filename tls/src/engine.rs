//! One TLS connection over one TCP connection. OpenSSL works on memory
//! buffers ([`MemIo`]); this module moves bytes between them and the socket,
//! so the same object serves a blocking handshake and a non-blocking event
//! loop, and can be handed to another thread whole.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use openssl::ssl::{ErrorCode, ShutdownState, Ssl, SslStream};

use crate::frame::{self, Frame, MAC_LEN};

/// Most TCP bytes read per call.
const READ_CHUNK: usize = 64 * 1024;

/// OpenSSL's transport: what TCP delivered, and what to send to TCP.
#[derive(Debug, Default)]
pub struct MemIo {
    rx: Vec<u8>,
    pos: usize,
    tx: Vec<u8>,
    /// Bytes of `tx` already written to TCP.
    tx_pos: usize,
    eof: bool,
}

impl Read for MemIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = &self.rx[self.pos..];
        if avail.is_empty() {
            self.rx.clear();
            self.pos = 0;
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for MemIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How the peer's side of the TLS connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Open,
    /// close_notify: an explicit close.
    Closed,
}

fn broken(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, format!("{what}: {e}"))
}

pub struct Tls {
    pub ssl: SslStream<MemIo>,
    pub tcp: TcpStream,
    pub peer: SocketAddr,
    /// Decrypted bytes not yet consumed.
    pub plain: Vec<u8>,
    /// The socket may have input, or room for output: set by the event
    /// loop's readiness, cleared when a call would block (edge-triggered
    /// readiness is remembered here until used up).
    pub readable: bool,
    pub writable: bool,
}

/// How far a non-blocking read of the peer's RESUME got.
pub enum ResumeRead {
    /// Not complete yet.
    Pending,
    Got(u64, [u8; MAC_LEN]),
    /// The first frame is something else, or malformed.
    Bad,
}

impl Tls {
    pub fn new(ssl: Ssl, tcp: TcpStream) -> io::Result<Tls> {
        let peer = tcp.peer_addr()?;
        tcp.set_nodelay(true)?;
        let ssl = SslStream::new(ssl, MemIo::default()).map_err(io::Error::other)?;
        Ok(Tls {
            ssl,
            tcp,
            peer,
            plain: Vec::new(),
            readable: true,
            writable: true,
        })
    }

    /// Bytes waiting to go to TCP.
    pub fn pending_out(&self) -> usize {
        let io = self.ssl.get_ref();
        io.tx.len() - io.tx_pos
    }

    /// Reads once from TCP (non-blocking or with the socket's timeout).
    /// Ok(false): end of stream. WouldBlock clears [`Tls::readable`].
    pub fn pull(&mut self) -> io::Result<bool> {
        let io = self.ssl.get_mut();
        // What OpenSSL consumed goes; a partial record stays.
        io.rx.drain(..io.pos);
        io.pos = 0;
        let mut buf = [0u8; READ_CHUNK];
        match self.tcp.read(&mut buf) {
            Ok(0) => {
                io.eof = true;
                Ok(false)
            }
            Ok(n) => {
                io.rx.extend_from_slice(&buf[..n]);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => {
                if e.kind() == io::ErrorKind::WouldBlock {
                    self.readable = false;
                }
                Err(e)
            }
        }
    }

    /// Gives back the memory of buffers that are empty (an idle connection
    /// keeps none of its peak).
    pub fn trim(&mut self) {
        let io = self.ssl.get_mut();
        for v in [&mut io.rx, &mut io.tx] {
            if v.is_empty() && v.capacity() > 0 {
                *v = Vec::new();
            }
        }
        if self.plain.is_empty() && self.plain.capacity() > 0 {
            self.plain = Vec::new();
        }
    }

    /// Writes what it can of the pending output to TCP. WouldBlock clears
    /// [`Tls::writable`].
    pub fn push(&mut self) -> io::Result<()> {
        let io = self.ssl.get_mut();
        let r = loop {
            if io.tx_pos == io.tx.len() {
                break Ok(());
            }
            match self.tcp.write(&io.tx[io.tx_pos..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => io.tx_pos += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    break Ok(());
                }
                Err(e) => break Err(e),
            }
        };
        // Compact rarely: moving a large tail on every write would cost
        // quadratic time after a big retransmission.
        if io.tx_pos == io.tx.len() {
            io.tx.clear();
            io.tx_pos = 0;
        } else if io.tx_pos > io.tx.len() / 2 {
            io.tx.drain(..io.tx_pos);
            io.tx_pos = 0;
        }
        r
    }

    /// Decrypts everything that has arrived into `plain`; returns how it
    /// stands and how many bytes it added. An error is a broken connection
    /// (including EOF without close_notify).
    pub fn decrypt(&mut self) -> io::Result<(Status, usize)> {
        let mut buf = [0u8; 16384];
        let mut got = 0;
        loop {
            match self.ssl.ssl_read(&mut buf) {
                Ok(n) => {
                    self.plain.extend_from_slice(&buf[..n]);
                    got += n;
                }
                Err(e) => match e.code() {
                    ErrorCode::WANT_READ => return Ok((Status::Open, got)),
                    ErrorCode::ZERO_RETURN => return Ok((Status::Closed, got)),
                    _ => return Err(broken("TLS read", e)),
                },
            }
        }
    }

    /// Encrypts `data` into the pending output (never blocks).
    pub fn encrypt(&mut self, data: &[u8]) -> io::Result<()> {
        let mut at = 0;
        while at < data.len() {
            match self.ssl.ssl_write(&data[at..]) {
                Ok(n) => at += n,
                Err(e) => return Err(broken("TLS write", e)),
            }
        }
        Ok(())
    }

    /// Runs the handshake to completion with blocking socket calls.
    pub fn handshake(&mut self, deadline: Instant) -> io::Result<()> {
        loop {
            match self.ssl.do_handshake() {
                Ok(()) => {
                    return self.flush_blocking(deadline);
                }
                Err(e) if e.code() == ErrorCode::WANT_READ => {
                    self.flush_blocking(deadline)?;
                    self.read_blocking(deadline)?;
                }
                Err(e) => {
                    // Send the alert, if any, before giving up.
                    let _ = self.flush_blocking(deadline);
                    return Err(broken("TLS handshake", e));
                }
            }
        }
    }

    /// Advances the handshake with what the socket has, without blocking:
    /// Ok(true) once it completed (its last flight is in the pending
    /// output, pushed as far as the socket takes it).
    pub fn handshake_step(&mut self) -> io::Result<bool> {
        loop {
            let r = self.ssl.do_handshake();
            let pushed = self.push();
            match r {
                Ok(()) => return pushed.map(|()| true),
                Err(e) if e.code() == ErrorCode::WANT_READ => pushed?,
                Err(e) => return Err(broken("TLS handshake", e)),
            }
            if !self.readable {
                return Ok(false);
            }
            match self.pull() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the peer's first frame, which must be a RESUME, without
    /// blocking.
    pub fn resume_step(&mut self) -> io::Result<ResumeRead> {
        loop {
            if self.decrypt()?.0 == Status::Closed {
                return Err(broken("TLS", "closed by the peer"));
            }
            match frame::parse(&self.plain) {
                Ok(Some((Frame::Resume { count, mac }, n))) => {
                    let r = ResumeRead::Got(count, *mac);
                    self.plain.drain(..n);
                    return Ok(r);
                }
                Ok(None) => {}
                Ok(Some(_)) | Err(_) => return Ok(ResumeRead::Bad),
            }
            if !self.readable {
                return Ok(ResumeRead::Pending);
            }
            match self.pull() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ResumeRead::Pending),
                Err(e) => return Err(e),
            }
        }
    }

    /// Blocks until more plaintext arrived (or the deadline passed).
    pub fn read_plain_blocking(&mut self, deadline: Instant) -> io::Result<()> {
        let before = self.plain.len();
        while self.plain.len() == before {
            if self.decrypt()?.0 == Status::Closed {
                return Err(broken("TLS", "closed by the peer"));
            }
            if self.plain.len() == before {
                self.read_blocking(deadline)?;
            }
        }
        Ok(())
    }

    /// Blocks until the peer's first frame arrived; it must be a RESUME:
    /// its count and MAC, or None when the first frame is anything else or
    /// malformed.
    pub fn read_resume(&mut self, deadline: Instant) -> io::Result<Option<(u64, [u8; MAC_LEN])>> {
        loop {
            match frame::parse(&self.plain) {
                Ok(Some((Frame::Resume { count, mac }, n))) => {
                    let r = (count, *mac);
                    self.plain.drain(..n);
                    return Ok(Some(r));
                }
                Ok(None) => self.read_plain_blocking(deadline)?,
                Ok(Some(_)) | Err(_) => return Ok(None),
            }
        }
    }

    fn read_blocking(&mut self, deadline: Instant) -> io::Result<()> {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))?;
        self.tcp.set_read_timeout(Some(left))?;
        if !self.pull()? {
            // Let OpenSSL see the EOF (it fails the handshake or the read).
            return Ok(());
        }
        Ok(())
    }

    /// Writes all pending output, blocking.
    pub fn flush_blocking(&mut self, deadline: Instant) -> io::Result<()> {
        while self.pending_out() > 0 {
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))?;
            self.tcp.set_write_timeout(Some(left))?;
            self.push()?;
        }
        Ok(())
    }

    /// Switches the socket to non-blocking for an event loop.
    pub fn set_nonblocking(&self) -> io::Result<()> {
        self.tcp.set_read_timeout(None)?;
        self.tcp.set_write_timeout(None)?;
        self.tcp.set_nonblocking(true)
    }

    /// Sends close_notify and whatever is pending, as far as the socket
    /// takes it without blocking (the connection ends anyway).
    pub fn close(mut self) {
        let _ = self.ssl.shutdown();
        let _ = self.push();
        let _ = self.tcp.shutdown(std::net::Shutdown::Write);
    }
}

impl Drop for Tls {
    /// OpenSSL marks the session of a connection freed without close_notify
    /// as not resumable (`ssl_clear_bad_session`), and that session object is
    /// the newest ticket, the one the next reconnect needs. A broken
    /// connection is normal here: say the shutdown was sent (nothing is sent).
    fn drop(&mut self) {
        let st = self.ssl.get_shutdown();
        self.ssl.set_shutdown(st | ShutdownState::SENT);
    }
}
