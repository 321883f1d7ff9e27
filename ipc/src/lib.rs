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

pub mod msg;
pub mod permit;

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
        let tv = match t {
            Some(d) => TimeVal::new(d.as_secs() as i64, d.subsec_micros() as i64),
            None => TimeVal::new(0, 0),
        };
        setsockopt(&self.sock, sockopt::ReceiveTimeout, &tv)?;
        Ok(())
    }

    /// Sends `msg` with `fds` attached.
    pub fn send<T: Serialize>(&self, msg: &T, fds: &[BorrowedFd<'_>]) -> Result<()> {
        if fds.len() > MAX_FDS {
            return Err(Error::BadFds);
        }
        let body = Zeroizing::new(postcard::to_stdvec(msg).map_err(|_| Error::Decode)?);
        if body.len() > MAX_FRAME {
            return Err(Error::TooLarge(body.len()));
        }
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
