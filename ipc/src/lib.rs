//! Typed, length-checked messages between resshd's processes over Unix
//! socketpairs, with file descriptors passed by SCM_RIGHTS.
//!
//! A frame is a 4-byte big-endian length and a postcard-encoded message.
//! The receiver checks the length against [`MAX_FRAME`] before it allocates,
//! decodes strictly (no trailing bytes) and receives descriptors
//! close-on-exec. Every message from a less privileged process is hostile
//! input: the receiver still checks it against its own state.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::cmsg_space;
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use nix::sys::time::TimeVal;
use serde::de::DeserializeOwned;
use serde::Serialize;
use zeroize::Zeroizing;

pub mod harden;
pub mod msg;
pub mod permit;
pub mod sandbox;

/// Largest frame accepted.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Most descriptors one message may carry.
pub const MAX_FDS: usize = 4;

#[derive(Debug)]
pub enum Error {
    Io(io::Error),
    /// The peer closed the socket.
    Closed,
    /// A frame larger than [`MAX_FRAME`] was announced.
    TooLarge(usize),
    /// The frame did not decode as the expected message.
    Decode,
    /// More descriptors than allowed, or truncated control data.
    BadFds,
    /// A message arrived that the receiver's state does not allow.
    Unexpected(&'static str),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "ipc: {e}"),
            Error::Closed => write!(f, "ipc: peer closed"),
            Error::TooLarge(n) => write!(f, "ipc: frame of {n} bytes exceeds the limit"),
            Error::Decode => write!(f, "ipc: undecodable message"),
            Error::BadFds => write!(f, "ipc: bad descriptor passing"),
            Error::Unexpected(what) => write!(f, "ipc: unexpected message: {what}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::Io(e.into())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// One end of a socketpair.
#[derive(Debug)]
pub struct Endpoint {
    sock: OwnedFd,
}

impl Endpoint {
    /// A connected pair, both ends close-on-exec.
    pub fn pair() -> Result<(Endpoint, Endpoint)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Endpoint { sock: a }, Endpoint { sock: b }))
    }

    pub fn from_fd(sock: OwnedFd) -> Endpoint {
        Endpoint { sock }
    }

    pub fn into_fd(self) -> OwnedFd {
        self.sock
    }

    /// Bounds how long a receive may block (None: forever).
    pub fn set_timeout(&self, t: Option<Duration>) -> Result<()> {
        setsockopt(&self.sock, sockopt::ReceiveTimeout, &timeval(t))?;
        Ok(())
    }

    /// Bounds how long a send may block (None: forever).
    pub fn set_send_timeout(&self, t: Option<Duration>) -> Result<()> {
        setsockopt(&self.sock, sockopt::SendTimeout, &timeval(t))?;
        Ok(())
    }

    /// Sends `msg` with `fds` attached, blocking until all of it is sent
    /// (or the send timeout passes). Root processes use an [`Outbox`]
    /// towards a peer that might not read.
    pub fn send<T: Serialize>(&self, msg: &T, fds: &[BorrowedFd<'_>]) -> Result<()> {
        if fds.len() > MAX_FDS {
            return Err(Error::BadFds);
        }
        let body = encode(msg)?;
        let header = (body.len() as u32).to_be_bytes();
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsg };
        let iov = [IoSlice::new(&header), IoSlice::new(&body)];
        let mut sent = loop {
            match sendmsg::<()>(
                self.sock.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => break r?,
            }
        };
        let total = header.len() + body.len();
        while sent < total {
            let rest: &[u8] = if sent < 4 {
                &header[sent..]
            } else {
                &body[sent - 4..]
            };
            let n = loop {
                match nix::sys::socket::send(self.sock.as_raw_fd(), rest, MsgFlags::MSG_NOSIGNAL) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    r => break r?,
                }
            };
            sent += n;
        }
        Ok(())
    }

    /// Receives one message and the descriptors that came with it.
    #[allow(unsafe_code)] // taking ownership of the descriptors SCM_RIGHTS delivered
    pub fn recv<T: DeserializeOwned>(&self) -> Result<(T, Vec<OwnedFd>)> {
        let mut header = [0u8; 4];
        let mut fds = Vec::new();
        let mut got = 0;
        while got < 4 {
            let mut space = cmsg_space!([RawFd; MAX_FDS]);
            let mut iov = [IoSliceMut::new(&mut header[got..])];
            let r = loop {
                match recvmsg::<()>(
                    self.sock.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    r => break r,
                }
            };
            let r = r.map_err(|e| match e {
                nix::errno::Errno::EAGAIN => Error::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "ipc receive timed out",
                )),
                e => e.into(),
            })?;
            // Take ownership of every descriptor first, so none leaks on error.
            for c in r.cmsgs().map_err(|_| Error::BadFds)? {
                if let ControlMessageOwned::ScmRights(list) = c {
                    // SAFETY: the kernel just installed these descriptors in
                    // this process for us; nothing else owns them.
                    fds.extend(
                        list.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            if r.flags.contains(MsgFlags::MSG_CTRUNC) || fds.len() > MAX_FDS {
                return Err(Error::BadFds);
            }
            if r.bytes == 0 {
                return Err(Error::Closed);
            }
            got += r.bytes;
        }
        let len = u32::from_be_bytes(header) as usize;
        if len > MAX_FRAME {
            return Err(Error::TooLarge(len));
        }
        let mut body = Zeroizing::new(vec![0u8; len]);
        let mut off = 0;
        while off < len {
            let n = loop {
                match nix::unistd::read(self.sock.as_raw_fd(), &mut body[off..]) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    r => break r,
                }
            }
            .map_err(|e| match e {
                nix::errno::Errno::EAGAIN => Error::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "ipc receive timed out",
                )),
                e => e.into(),
            })?;
            if n == 0 {
                return Err(Error::Closed);
            }
            off += n;
        }
        let (msg, rest) = postcard::take_from_bytes::<T>(&body).map_err(|_| Error::Decode)?;
        if !rest.is_empty() {
            return Err(Error::Decode);
        }
        Ok((msg, fds))
    }
}

/// A socket timeout: None (0) waits forever.
fn timeval(t: Option<Duration>) -> TimeVal {
    match t {
        Some(d) => TimeVal::new(d.as_secs() as i64, d.subsec_micros() as i64),
        None => TimeVal::new(0, 0),
    }
}

/// A message's body, checked against [`MAX_FRAME`].
fn encode<T: Serialize>(msg: &T) -> Result<Zeroizing<Vec<u8>>> {
    let body = Zeroizing::new(postcard::to_stdvec(msg).map_err(|_| Error::Decode)?);
    if body.len() > MAX_FRAME {
        return Err(Error::TooLarge(body.len()));
    }
    Ok(body)
}

/// Messages waiting to be sent to a peer that is not made to be trusted to
/// read: sending never blocks. Frames leave whole and in order, each with
/// its descriptors on its first byte; the queue is bounded in bytes, and
/// [`Outbox::stalled_for`] tells how long the peer has read nothing.
#[derive(Debug)]
pub struct Outbox {
    frames: std::collections::VecDeque<Frame>,
    bytes: usize,
    limit: usize,
    /// Since when the queue has not been empty without progress.
    stalled_since: Option<std::time::Instant>,
}

#[derive(Debug)]
struct Frame {
    data: Zeroizing<Vec<u8>>,
    off: usize,
    fds: Vec<OwnedFd>,
}

impl Outbox {
    /// An empty queue that holds at most `limit` bytes.
    pub fn new(limit: usize) -> Outbox {
        Outbox {
            frames: Default::default(),
            bytes: 0,
            limit,
            stalled_since: None,
        }
    }

    /// Queues `msg` with `fds`; Err(TooLarge) when the queue would pass its
    /// limit (the peer reads too little: drop it).
    pub fn push<T: Serialize>(&mut self, msg: &T, fds: Vec<OwnedFd>) -> Result<()> {
        if fds.len() > MAX_FDS {
            return Err(Error::BadFds);
        }
        let body = encode(msg)?;
        let mut data = Zeroizing::new(Vec::with_capacity(4 + body.len()));
        data.extend_from_slice(&(body.len() as u32).to_be_bytes());
        data.extend_from_slice(&body);
        if self.bytes + data.len() > self.limit {
            return Err(Error::TooLarge(self.bytes + data.len()));
        }
        self.bytes += data.len();
        if self.frames.is_empty() {
            self.stalled_since = Some(std::time::Instant::now());
        }
        self.frames.push_back(Frame { data, off: 0, fds });
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// How long the queue has waited without the peer taking anything.
    pub fn stalled_for(&self, now: std::time::Instant) -> Option<Duration> {
        self.stalled_since.map(|t| now.saturating_duration_since(t))
    }

    /// Sends what the socket takes now, without blocking.
    pub fn flush(&mut self, sock: BorrowedFd<'_>) -> Result<()> {
        let mut progress = false;
        while let Some(f) = self.frames.front_mut() {
            let raw: Vec<RawFd> = f.fds.iter().map(|d| d.as_raw_fd()).collect();
            let cmsg = [ControlMessage::ScmRights(&raw)];
            let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsg };
            let iov = [IoSlice::new(&f.data[f.off..])];
            match sendmsg::<()>(
                sock.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                None,
            ) {
                Ok(n) => {
                    progress = true;
                    f.fds.clear();
                    f.off += n;
                    self.bytes -= n;
                    if f.off == f.data.len() {
                        self.frames.pop_front();
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => return Err(e.into()),
            }
        }
        if self.frames.is_empty() {
            self.stalled_since = None;
        } else if progress {
            self.stalled_since = Some(std::time::Instant::now());
        }
        Ok(())
    }
}

impl AsFd for Endpoint {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl AsRawFd for Endpoint {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn messages_and_fds_cross() {
        let (a, b) = Endpoint::pair().unwrap();
        let (p, q) = Endpoint::pair().unwrap();
        a.send(&("hello".to_string(), 7u32), &[p.as_fd()]).unwrap();
        let ((s, n), fds): ((String, u32), _) = b.recv().unwrap();
        assert_eq!((s.as_str(), n), ("hello", 7));
        assert_eq!(fds.len(), 1);
        // The passed descriptor is the same socket, and close-on-exec.
        let flags = nix::fcntl::fcntl(fds[0].as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(flags & libc_cloexec() != 0);
        let mut f = std::fs::File::from(fds.into_iter().next().unwrap());
        f.write_all(b"x").unwrap();
        let mut buf = [0u8; 1];
        std::fs::File::from(q.into_fd())
            .read_exact(&mut buf)
            .unwrap();
        assert_eq!(&buf, b"x");
    }

    fn libc_cloexec() -> i32 {
        nix::fcntl::FdFlag::FD_CLOEXEC.bits()
    }

    #[test]
    fn hostile_frames_are_refused() {
        let (a, b) = Endpoint::pair().unwrap();
        // A 4 GiB length: refused before allocation.
        nix::unistd::write(&a, &[0xff, 0xff, 0xff, 0xff]).unwrap();
        assert!(matches!(b.recv::<u32>(), Err(Error::TooLarge(_))));
        // Trailing bytes after a valid message.
        let (a, b) = Endpoint::pair().unwrap();
        nix::unistd::write(&a, &[0, 0, 0, 2, 5, 9]).unwrap();
        assert!(matches!(b.recv::<u8>(), Err(Error::Decode)));
        // EOF mid-frame.
        let (a, b) = Endpoint::pair().unwrap();
        nix::unistd::write(&a, &[0, 0, 0, 9, 1]).unwrap();
        drop(a);
        assert!(matches!(b.recv::<u8>(), Err(Error::Closed)));
        // A stalled sender times out instead of hanging the receiver.
        let (a, b) = Endpoint::pair().unwrap();
        b.set_timeout(Some(Duration::from_millis(50))).unwrap();
        nix::unistd::write(&a, &[0, 0]).unwrap();
        assert!(matches!(b.recv::<u8>(), Err(Error::Io(_))));
    }

    #[test]
    fn an_outbox_never_blocks_and_keeps_frames_whole() {
        let (a, b) = Endpoint::pair().unwrap();
        let (p, q) = Endpoint::pair().unwrap();
        let mut out = Outbox::new(4 * 1024 * 1024);
        // Far more than the socket holds: a peer that does not read.
        let big = vec![7u8; 64 * 1024];
        out.push(&(1u32, big.clone()), vec![p.into_fd()]).unwrap();
        for i in 2..40u32 {
            out.push(&(i, big.clone()), vec![]).unwrap();
        }
        out.flush(a.as_fd()).unwrap();
        assert!(!out.is_empty(), "the socket took it all");
        assert!(out.stalled_for(std::time::Instant::now()).is_some());
        // The limit bounds what waits.
        let mut small = Outbox::new(1000);
        assert!(matches!(small.push(&big, vec![]), Err(Error::TooLarge(_))));
        // The reader gets every frame whole, in order, the fd with the first.
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            for _ in 1..40u32 {
                let ((i, v), fds): ((u32, Vec<u8>), _) = b.recv().unwrap();
                assert_eq!(v.len(), 64 * 1024);
                got.push((i, fds.len()));
            }
            got
        });
        while !out.is_empty() {
            out.flush(a.as_fd()).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        let got = reader.join().unwrap();
        assert_eq!(got[0], (1, 1));
        assert!(got.iter().enumerate().all(|(k, (i, _))| *i == k as u32 + 1));
        assert!(got[1..].iter().all(|(_, n)| *n == 0));
        drop(q);
    }

    #[test]
    fn too_many_fds_are_refused_and_closed() {
        let (a, b) = Endpoint::pair().unwrap();
        let (p, _q) = Endpoint::pair().unwrap();
        let raw = [p.as_raw_fd(); MAX_FDS + 1];
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let iov = [IoSlice::new(&[0, 0, 0, 1, 1])];
        sendmsg::<()>(a.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).unwrap();
        assert!(matches!(b.recv::<u8>(), Err(Error::BadFds)));
    }
}
