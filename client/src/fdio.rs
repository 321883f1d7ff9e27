//! Local descriptors of the data path: our copies of stdin/stdout/stderr and
//! forwarded sockets.
//!
//! Pipes and sockets are made non-blocking and polled (their original flags
//! are restored on drop: the open file may be shared with other programs).
//! Terminals stay blocking, as ssh leaves them: they are read only when
//! poll(2) says so and written with blocking writes. Regular files and
//! devices epoll refuses (/dev/null) are always ready.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Non-blocking, registered with the event loop.
    Poll,
    /// A terminal: blocking, registered, checked with poll(2) before reads.
    Tty,
    /// Never blocks for long and cannot be polled: always ready.
    Always,
}

pub struct LocalFd {
    fd: OwnedFd,
    pub mode: Mode,
    orig_flags: Option<i32>,
    registered: bool,
}

fn getfl(fd: RawFd) -> io::Result<i32> {
    Ok(fcntl(fd, FcntlArg::F_GETFL)?)
}

fn setfl(fd: RawFd, fl: i32) -> io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFL(OFlag::from_bits_retain(fl)))?;
    Ok(())
}

/// Makes `fd` non-blocking.
pub fn set_nonblocking(fd: &impl AsFd) -> io::Result<()> {
    let fd = fd.as_fd().as_raw_fd();
    setfl(fd, getfl(fd)? | libc::O_NONBLOCK)
}

fn is_regular(fd: RawFd) -> bool {
    nix::sys::stat::fstat(fd).is_ok_and(|st| (st.st_mode & libc::S_IFMT) == libc::S_IFREG)
}

/// Waits up to `ms` (0: not at all) until `fd` is readable (or writable);
/// returns whether it is.
fn wait_ready(fd: BorrowedFd, write: bool, ms: u16) -> bool {
    let events = if write {
        PollFlags::POLLOUT
    } else {
        PollFlags::POLLIN
    };
    let mut p = [PollFd::new(fd, events)];
    matches!(poll(&mut p, PollTimeout::from(ms)), Ok(n) if n > 0)
        && p[0].revents().is_some_and(|r| !r.is_empty())
}

/// Writes all of `buf` to `fd`, waiting out EAGAIN; errors are dropped
/// (diagnostics must never fail loudly).
pub fn write_all_quietly(fd: BorrowedFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) if n > 0 => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                wait_ready(fd, true, 1000);
            }
            _ => return,
        }
    }
}

impl LocalFd {
    /// A copy of standard descriptor `fd`, prepared for the event loop and
    /// registered under `token`.
    pub fn stdio(fd: BorrowedFd, write: bool, reg: &Registry, token: Token) -> io::Result<LocalFd> {
        // F_DUPFD_CLOEXEC from 3: the copy is never a standard descriptor.
        Self::prepare(fd.try_clone_to_owned()?, write, reg, token)
    }

    /// `fd` itself (passed by a mux client), prepared as [`LocalFd::stdio`]
    /// prepares a copy.
    pub fn adopt(fd: OwnedFd, write: bool, reg: &Registry, token: Token) -> io::Result<LocalFd> {
        Self::prepare(fd, write, reg, token)
    }

    /// /dev/null for reading (-n).
    pub fn devnull() -> io::Result<LocalFd> {
        let f = std::fs::File::open("/dev/null")?;
        Ok(LocalFd {
            fd: f.into(),
            mode: Mode::Always,
            orig_flags: None,
            registered: false,
        })
    }

    fn prepare(fd: OwnedFd, write: bool, reg: &Registry, token: Token) -> io::Result<LocalFd> {
        let raw = fd.as_raw_fd();
        let interest = if write {
            Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if is_regular(raw) {
            return Ok(LocalFd {
                fd,
                mode: Mode::Always,
                orig_flags: None,
                registered: false,
            });
        }
        if crate::tty::isatty(raw) {
            let registered = !write && reg.register(&mut SourceFd(&raw), token, interest).is_ok();
            return Ok(LocalFd {
                fd,
                mode: if registered { Mode::Tty } else { Mode::Always },
                orig_flags: None,
                registered,
            });
        }
        if reg.register(&mut SourceFd(&raw), token, interest).is_err() {
            return Ok(LocalFd {
                fd,
                mode: Mode::Always,
                orig_flags: None,
                registered: false,
            });
        }
        let fl = getfl(raw)?;
        if fl & libc::O_NONBLOCK == 0 {
            setfl(raw, fl | libc::O_NONBLOCK)?;
        }
        Ok(LocalFd {
            fd,
            mode: Mode::Poll,
            orig_flags: Some(fl),
            registered: true,
        })
    }

    /// A connected non-blocking socket, registered for both directions.
    pub fn socket(fd: OwnedFd, reg: &Registry, token: Token) -> io::Result<LocalFd> {
        let raw = fd.as_raw_fd();
        reg.register(
            &mut SourceFd(&raw),
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        Ok(LocalFd {
            fd,
            mode: Mode::Poll,
            orig_flags: None,
            registered: true,
        })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Whether it can be read right now without blocking.
    pub fn readable_now(&self) -> bool {
        wait_ready(self.fd.as_fd(), false, 0)
    }

    /// Reads; `WouldBlock` when nothing is there.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if self.mode == Mode::Tty && !self.readable_now() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        loop {
            match nix::unistd::read(self.raw(), buf) {
                Err(Errno::EINTR) => {}
                r => return Ok(r?),
            }
        }
    }

    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match nix::unistd::write(&self.fd, buf) {
                Err(Errno::EINTR) => {}
                r => return Ok(r?),
            }
        }
    }

    /// shutdown(SHUT_WR) for sockets; a no-op for others.
    pub fn shutdown_write(&self) {
        // ENOTSOCK for others: nothing to do.
        let _ = nix::sys::socket::shutdown(self.raw(), nix::sys::socket::Shutdown::Write);
    }

    pub fn deregister(&mut self, reg: &Registry) {
        if self.registered {
            let _ = reg.deregister(&mut SourceFd(&self.raw()));
            self.registered = false;
        }
    }

    /// Waits until the descriptor can be written (for the final flush).
    pub fn wait_writable(&self, ms: u16) {
        wait_ready(self.fd.as_fd(), true, ms);
    }
}

impl Drop for LocalFd {
    fn drop(&mut self) {
        if let Some(fl) = self.orig_flags {
            let _ = setfl(self.raw(), fl);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_become_nonblocking_and_are_restored() {
        let poll = mio::Poll::new().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        let before = getfl(r.as_raw_fd()).unwrap();
        assert_eq!(before & libc::O_NONBLOCK, 0);
        {
            let l = LocalFd::stdio(r.as_fd(), false, poll.registry(), Token(1)).unwrap();
            assert_eq!(l.mode, Mode::Poll);
            let mut b = [0u8; 4];
            assert_eq!(
                l.read(&mut b).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
            nix::unistd::write(&w, b"hi").unwrap();
            assert_eq!(l.read(&mut b).unwrap(), 2);
            let mut l = l;
            l.deregister(poll.registry());
        }
        assert_eq!(getfl(r.as_raw_fd()).unwrap() & libc::O_NONBLOCK, 0);
    }

    #[test]
    fn regular_files_and_devnull_are_always_ready() {
        let poll = mio::Poll::new().unwrap();
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let l = LocalFd::stdio(f.as_fd(), false, poll.registry(), Token(1)).unwrap();
        assert_eq!(l.mode, Mode::Always);
        let n = std::fs::File::open("/dev/null").unwrap();
        let l = LocalFd::stdio(n.as_fd(), false, poll.registry(), Token(2)).unwrap();
        assert_eq!(l.mode, Mode::Always);
        let mut b = [0u8; 4];
        assert_eq!(l.read(&mut b).unwrap(), 0);
    }
}
