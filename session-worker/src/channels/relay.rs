//! Moving bytes between a channel and local fds, with backpressure both ways:
//! a local fd is read only while the client's window is open (and the
//! client's output queue is short), and data from the client is handed to
//! the proto engine as consumed only once written, so what is buffered here
//! is bounded by the window we granted.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use mio::event::Event;
use mio::{Interest, Token};
use nix::errno::Errno;
use ressh_proto::Connection;

use super::{Ctx, Target, OUT_HIGH};

/// What to do with the input fd once the client sent EOF and everything
/// before it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnEof {
    /// Close it (a child's stdin pipe).
    Close,
    /// shutdown(SHUT_WR) (a TCP socket).
    Shutdown,
    /// Nothing (a pty, like OpenSSH).
    Ignore,
}

struct Stream {
    fd: OwnedFd,
    token: Token,
    readable: bool,
    writable: bool,
}

/// Bytes from a local fd to the channel (`code`: extended data type).
struct Out {
    slot: usize,
    code: Option<u32>,
    eof: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    /// No fd yet (a session before its command starts): data waits.
    Waiting,
    Open(usize),
    /// Closed or failed: data from the client is dropped.
    Closed,
}

pub struct Relay {
    id: u32,
    streams: Vec<Option<Stream>>,
    outs: Vec<Out>,
    input: Input,
    buf: Vec<u8>,
    pos: usize,
    on_eof: OnEof,
    peer_eof: bool,
    /// A read or write failed for another reason than EOF.
    pub failed: bool,
    /// The channel is gone (its id may be reused): nothing is reported to
    /// the engine any more.
    detached: bool,
    /// Bytes sent as channel data before anything read from the outputs
    /// (the login message of an interactive login).
    prefix: Vec<u8>,
    /// An in-process child's log pipe: lines go to resshd's log.
    log: Option<LogIn>,
}

/// Log lines from a child: the slot, and an unfinished line (at most
/// [`MAX_LOG_LINE`] bytes; a longer one is cut there).
struct LogIn {
    slot: usize,
    line: Vec<u8>,
    eof: bool,
}

/// The longest log line taken from a child (the monitor cuts at 1024).
const MAX_LOG_LINE: usize = 1024;

impl Relay {
    pub fn new(id: u32, on_eof: OnEof) -> Relay {
        Relay {
            id,
            streams: Vec::new(),
            outs: Vec::new(),
            input: Input::Waiting,
            buf: Vec::new(),
            pos: 0,
            on_eof,
            peer_eof: false,
            failed: false,
            detached: false,
            prefix: Vec::new(),
            log: None,
        }
    }

    /// Logs the lines `slot` reads (an in-process child's log pipe).
    pub fn set_log(&mut self, slot: usize) {
        self.log = Some(LogIn {
            slot,
            line: Vec::new(),
            eof: false,
        });
    }

    pub fn set_on_eof(&mut self, on_eof: OnEof) {
        self.on_eof = on_eof;
    }

    /// Registers a non-blocking fd and returns its slot.
    pub fn add(&mut self, ctx: &mut Ctx, fd: OwnedFd, interest: Interest) -> io::Result<usize> {
        let token = ctx.register(fd.as_raw_fd(), interest, Target::Chan(self.id))?;
        Ok(self.add_registered(fd, token))
    }

    /// Adds an fd already registered for this channel under `token`.
    pub fn add_registered(&mut self, fd: OwnedFd, token: Token) -> usize {
        // Readiness is edge-triggered: assume ready until an I/O call says not.
        self.streams.push(Some(Stream {
            fd,
            token,
            readable: true,
            writable: true,
        }));
        self.streams.len() - 1
    }

    /// Sends what `slot` reads to the channel (`code`: extended data).
    pub fn add_out(&mut self, slot: usize, code: Option<u32>) {
        self.outs.push(Out {
            slot,
            code,
            eof: false,
        });
    }

    /// Sends `bytes` as channel data before what the outputs read.
    pub fn push_prefix(&mut self, bytes: &[u8]) {
        self.prefix.extend_from_slice(bytes);
    }

    /// Writes the channel's data to `slot`.
    pub fn set_input(&mut self, slot: usize) {
        if self.input == Input::Waiting {
            self.input = Input::Open(slot);
        }
    }

    pub fn raw_fd(&self, slot: usize) -> Option<RawFd> {
        self.streams
            .get(slot)
            .and_then(|s| s.as_ref())
            .map(|s| s.fd.as_raw_fd())
    }

    /// Notes readiness reported by poll.
    pub fn ready(&mut self, token: Token, ev: &Event) {
        for s in self.streams.iter_mut().flatten() {
            if s.token == token {
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    s.readable = true;
                }
                if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                    s.writable = true;
                }
            }
        }
    }

    /// Reports `n` bytes written to the engine (window credit).
    fn consume(&self, conn: &mut Connection, n: usize) -> ressh_proto::Result<()> {
        if self.detached {
            return Ok(());
        }
        conn.consume(self.id, n)
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Data from the client. Dropped (and consumed at once) when the input
    /// is closed.
    pub fn data(&mut self, conn: &mut Connection, data: &[u8]) -> ressh_proto::Result<()> {
        if self.input == Input::Closed {
            return self.consume(conn, data.len());
        }
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    pub fn peer_eof(&mut self) {
        self.peer_eof = true;
    }

    /// Every output fd has reached EOF (the log pipe too).
    pub fn outs_done(&self) -> bool {
        self.outs.iter().all(|o| o.eof) && self.log.as_ref().is_none_or(|l| l.eof)
    }

    /// The client sent EOF and everything before it was written (or dropped).
    pub fn input_done(&self) -> bool {
        self.peer_eof && (self.input == Input::Closed || self.pending() == 0)
    }

    fn slot_in_use(&self, slot: usize) -> bool {
        self.input == Input::Open(slot)
            || self.outs.iter().any(|o| o.slot == slot && !o.eof)
            || self.log.as_ref().is_some_and(|l| l.slot == slot && !l.eof)
    }

    fn drop_slot(&mut self, ctx: &mut Ctx, slot: usize) {
        if let Some(s) = self.streams.get_mut(slot).and_then(Option::take) {
            ctx.deregister(s.fd.as_raw_fd(), s.token);
        }
    }

    fn close_input(&mut self, conn: &mut Connection, ctx: &mut Ctx) -> ressh_proto::Result<()> {
        if let Input::Open(slot) = self.input {
            self.input = Input::Closed;
            if !self.slot_in_use(slot) {
                self.drop_slot(ctx, slot);
            }
        }
        self.input = Input::Closed;
        let rest = self.pending();
        self.buf.clear();
        self.pos = 0;
        self.consume(conn, rest)
    }

    /// Moves whatever can move now; returns whether anything did.
    pub fn pump(
        &mut self,
        conn: &mut Connection,
        ctx: &mut Ctx,
        scratch: &mut [u8],
    ) -> ressh_proto::Result<bool> {
        let mut progress = self.pump_input(conn, ctx)?;
        for i in 0..self.outs.len() {
            progress |= self.pump_out(i, conn, ctx, scratch)?;
        }
        progress |= self.pump_log(ctx, scratch);
        Ok(progress)
    }

    /// Reads the log pipe (at most one scratch buffer per call, so a child
    /// that floods its log cannot starve the rest) and logs its lines.
    fn pump_log(&mut self, ctx: &mut Ctx, scratch: &mut [u8]) -> bool {
        let Some(l) = self.log.as_mut().filter(|l| !l.eof) else {
            return false;
        };
        let Some(s) = self.streams.get_mut(l.slot).and_then(|s| s.as_mut()) else {
            l.eof = true;
            return true;
        };
        if !s.readable {
            return false;
        }
        let n = match nix::unistd::read(s.fd.as_raw_fd(), scratch) {
            Ok(0) => {
                l.eof = true;
                0
            }
            Ok(n) => n,
            Err(Errno::EAGAIN) => {
                s.readable = false;
                return false;
            }
            Err(Errno::EINTR) => return true,
            Err(_) => {
                l.eof = true;
                0
            }
        };
        for &b in &scratch[..n] {
            if b == b'\n' {
                crate::log!("internal-sftp: {}", String::from_utf8_lossy(&l.line));
                l.line.clear();
            } else if l.line.len() < MAX_LOG_LINE {
                l.line.push(b);
            }
        }
        if l.eof {
            if !l.line.is_empty() {
                crate::log!("internal-sftp: {}", String::from_utf8_lossy(&l.line));
                l.line.clear();
            }
            let slot = l.slot;
            if !self.slot_in_use(slot) {
                self.drop_slot(ctx, slot);
            }
        }
        true
    }

    fn pump_input(&mut self, conn: &mut Connection, ctx: &mut Ctx) -> ressh_proto::Result<bool> {
        let Input::Open(slot) = self.input else {
            return Ok(false);
        };
        let mut progress = false;
        while self.pending() > 0 {
            let Some(s) = self.streams.get_mut(slot).and_then(|s| s.as_mut()) else {
                break;
            };
            if !s.writable {
                break;
            }
            match nix::unistd::write(&s.fd, &self.buf[self.pos..]) {
                Ok(n) => {
                    self.pos += n;
                    self.consume(conn, n)?;
                    progress = true;
                }
                Err(Errno::EAGAIN) => s.writable = false,
                Err(Errno::EINTR) => {}
                Err(_) => {
                    // The reader is gone (EPIPE, EIO, a reset): drop the rest.
                    if self.on_eof == OnEof::Shutdown {
                        self.failed = true;
                    }
                    self.close_input(conn, ctx)?;
                    return Ok(true);
                }
            }
        }
        if self.pending() == 0 {
            self.buf.clear();
            self.pos = 0;
            if self.peer_eof {
                match self.on_eof {
                    OnEof::Close => {
                        self.close_input(conn, ctx)?;
                        progress = true;
                    }
                    OnEof::Shutdown => {
                        if let Some(fd) = self.raw_fd(slot) {
                            let _ =
                                nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Write);
                        }
                        self.close_input(conn, ctx)?;
                        progress = true;
                    }
                    OnEof::Ignore => {}
                }
            }
        }
        Ok(progress)
    }

    fn pump_out(
        &mut self,
        i: usize,
        conn: &mut Connection,
        ctx: &mut Ctx,
        scratch: &mut [u8],
    ) -> ressh_proto::Result<bool> {
        let mut progress = false;
        let (slot, code) = (self.outs[i].slot, self.outs[i].code);
        while !self.outs[i].eof {
            let window = conn.send_window(self.id);
            if window == 0 || conn.output().len() >= OUT_HIGH {
                break;
            }
            if code.is_none() && !self.prefix.is_empty() && !self.detached {
                let n = window.min(self.prefix.len());
                let sent = conn.send_data(self.id, &self.prefix[..n])?;
                self.prefix.drain(..sent);
                progress = true;
                continue;
            }
            let Some(s) = self.streams.get_mut(slot).and_then(|s| s.as_mut()) else {
                self.outs[i].eof = true;
                break;
            };
            if !s.readable {
                break;
            }
            let want = window.min(scratch.len());
            match nix::unistd::read(s.fd.as_raw_fd(), &mut scratch[..want]) {
                Ok(0) => self.outs[i].eof = true,
                Ok(n) => {
                    let sent = match code {
                        None => conn.send_data(self.id, &scratch[..n])?,
                        Some(c) => conn.send_extended_data(self.id, c, &scratch[..n])?,
                    };
                    debug_assert_eq!(sent, n, "read no more than the window");
                    progress = true;
                }
                Err(Errno::EAGAIN) => s.readable = false,
                Err(Errno::EINTR) => {}
                // A pty master reads EIO once every slave fd is closed.
                Err(Errno::EIO) => self.outs[i].eof = true,
                Err(_) => {
                    self.outs[i].eof = true;
                    self.failed = true;
                }
            }
            if self.outs[i].eof {
                progress = true;
                if !self.slot_in_use(slot) {
                    self.drop_slot(ctx, slot);
                }
            }
        }
        Ok(progress)
    }

    /// The channel closed while data from the client is still waiting to be
    /// written: stop reading, keep writing under `target` until the data is
    /// out (then act as on EOF). Returns false when nothing is left to do.
    pub fn linger(&mut self, ctx: &mut Ctx, target: Target) -> bool {
        self.detached = true;
        self.peer_eof = true;
        for o in &mut self.outs {
            o.eof = true;
        }
        if let Some(l) = &mut self.log {
            l.eof = true;
        }
        let keep = match self.input {
            Input::Open(slot) if self.pending() > 0 => Some(slot),
            _ => None,
        };
        for slot in 0..self.streams.len() {
            if Some(slot) != keep {
                self.drop_slot(ctx, slot);
            }
        }
        let Some(slot) = keep else {
            self.close(ctx);
            return false;
        };
        if let Some(s) = self.streams[slot].as_mut() {
            ctx.retarget(s.token, target);
        }
        true
    }

    /// A lingering relay has written everything (or failed).
    pub fn lingering_done(&self) -> bool {
        !matches!(self.input, Input::Open(_))
            || (self.pending() == 0 && self.on_eof == OnEof::Ignore)
    }

    /// Deregisters and closes every fd.
    pub fn close(&mut self, ctx: &mut Ctx) {
        for slot in 0..self.streams.len() {
            self.drop_slot(ctx, slot);
        }
        self.input = Input::Closed;
        self.buf = Vec::new();
        self.pos = 0;
        for o in &mut self.outs {
            o.eof = true;
        }
        if let Some(l) = &mut self.log {
            l.eof = true;
        }
    }
}
