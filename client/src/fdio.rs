//! Local descriptors of the data path: our copies of stdin/stdout/stderr and
//! forwarded sockets.
//!
//! Pipes and sockets are made non-blocking and polled (their original flags
//! are restored on drop: the open file may be shared with other programs).
//! Terminals stay blocking, as ssh leaves them: they are read only when
//! poll(2) says so and written with blocking writes. Regular files and
//! devices epoll refuses (/dev/null) are always ready.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

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
    // SAFETY: fcntl on a valid descriptor.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl)
}

fn setfl(fd: RawFd, fl: i32) -> io::Result<()> {
    // SAFETY: fcntl on a valid descriptor.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, fl) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn is_regular(fd: RawFd) -> bool {
    // SAFETY: stat is plain data filled by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    unsafe { libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFREG }
}

/// Whether `fd` is readable (or writable) right now.
pub fn poll_now(fd: RawFd, write: bool) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: if write { libc::POLLOUT } else { libc::POLLIN },
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents != 0
}

impl LocalFd {
    /// A copy of standard descriptor `fd` (or of /dev/null when `devnull`),
    /// prepared for the event loop and registered under `token`.
    pub fn stdio(fd: RawFd, write: bool, reg: &Registry, token: Token) -> io::Result<LocalFd> {
        // SAFETY: dup of a standard descriptor; the copy is owned here.
        let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if d < 0 {
            return Err(io::Error::last_os_error());
        }
        let owned = unsafe { OwnedFd::from_raw_fd(d) };
        Self::prepare(owned, write, reg, token)
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

    /// Reads; `WouldBlock` when nothing is there.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if self.mode == Mode::Tty && !poll_now(self.raw(), false) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        loop {
            // SAFETY: buf is a valid writable slice.
            let n = unsafe { libc::read(self.raw(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: buf is a valid slice.
            let n = unsafe { libc::write(self.raw(), buf.as_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// shutdown(SHUT_WR) for sockets; a no-op for others.
    pub fn shutdown_write(&self) {
        // SAFETY: shutdown on our descriptor; ENOTSOCK is ignored.
        unsafe { libc::shutdown(self.raw(), libc::SHUT_WR) };
    }

    pub fn deregister(&mut self, reg: &Registry) {
        if self.registered {
            let _ = reg.deregister(&mut SourceFd(&self.raw()));
            self.registered = false;
        }
    }

    /// Waits until the descriptor can be written (for the final flush).
    pub fn wait_writable(&self, ms: i32) {
        let mut p = libc::pollfd {
            fd: self.raw(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, ms) };
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
            let l = LocalFd::stdio(r.as_raw_fd(), false, poll.registry(), Token(1)).unwrap();
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
        let l = LocalFd::stdio(f.as_raw_fd(), false, poll.registry(), Token(1)).unwrap();
        assert_eq!(l.mode, Mode::Always);
        let n = std::fs::File::open("/dev/null").unwrap();
        let l = LocalFd::stdio(n.as_raw_fd(), false, poll.registry(), Token(2)).unwrap();
        assert_eq!(l.mode, Mode::Always);
        let mut b = [0u8; 4];
        assert_eq!(l.read(&mut b).unwrap(), 0);
    }
}
