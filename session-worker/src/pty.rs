//! Pseudo-terminals: allocation (as the user, with openpty), terminal modes
//! from pty-req (RFC 4254 §8) and window sizes.
#![allow(unsafe_code)] // pty ioctls (TIOCSWINSZ) and termios on raw descriptors

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use ressh_compat::ttymodes;
use ressh_proto::msg::parse_modes;

/// A fresh pty; the slave is closed in this process once the child has it.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    /// The slave's path, e.g. `/dev/pts/3`.
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WinSize {
    pub cols: u32,
    pub rows: u32,
    pub width_px: u32,
    pub height_px: u32,
}

fn cloexec(fd: &OwnedFd) -> io::Result<()> {
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// Opens a pty with `size` and the encoded terminal `modes` of a pty-req.
/// Both ends are close-on-exec; the master is non-blocking.
pub fn open(size: WinSize, modes: &[u8]) -> io::Result<Pty> {
    let r = nix::pty::openpty(None, None)?;
    // No other thread forks, so nothing can inherit the fds before this.
    cloexec(&r.master)?;
    cloexec(&r.slave)?;
    let flags = OFlag::from_bits_truncate(fcntl(r.master.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(
        r.master.as_raw_fd(),
        FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK),
    )?;
    let path = nix::unistd::ttyname(&r.slave)?
        .to_string_lossy()
        .into_owned();
    let modes = parse_modes(modes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    apply_modes(r.slave.as_raw_fd(), &modes)?;
    set_winsize(r.master.as_raw_fd(), size)?;
    Ok(Pty {
        master: r.master,
        slave: r.slave,
        path,
    })
}

/// TIOCSWINSZ; values beyond u16 are clamped.
pub fn set_winsize(fd: RawFd, s: WinSize) -> io::Result<()> {
    let clamp = |v: u32| v.min(u16::MAX as u32) as u16;
    let ws = libc::winsize {
        ws_row: clamp(s.rows),
        ws_col: clamp(s.cols),
        ws_xpixel: clamp(s.width_px),
        ws_ypixel: clamp(s.height_px),
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which is valid.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn apply_modes(fd: RawFd, modes: &[(u8, u32)]) -> io::Result<()> {
    if modes.is_empty() {
        return Ok(());
    }
    // SAFETY: termios is plain data, filled in by tcgetattr.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr writes one termios to a valid pointer.
    if unsafe { libc::tcgetattr(fd, &mut t) } < 0 {
        return Err(io::Error::last_os_error());
    }
    ttymodes::to_termios(&mut t, modes);
    // SAFETY: fd is a terminal, t a valid termios.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openpty_applies_size_and_modes() {
        let size = WinSize {
            cols: 100,
            rows: 30,
            width_px: 0,
            height_px: 0,
        };
        let modes = ressh_proto::msg::encode_modes(&[(53, 0), (1, 7)]);
        let p = open(size, &modes).unwrap();
        assert!(p.path.starts_with("/dev/pts/"), "{}", p.path);
        // SAFETY: winsize is plain data; all zeros is a valid value.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes one winsize to a valid pointer.
        assert!(unsafe { libc::ioctl(p.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } >= 0);
        assert_eq!((ws.ws_col, ws.ws_row), (100, 30));
        // SAFETY: termios is plain data; all zeros is a valid value.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr writes one termios to a valid pointer.
        assert!(unsafe { libc::tcgetattr(p.slave.as_raw_fd(), &mut t) } >= 0);
        assert_eq!(t.c_lflag & libc::ECHO, 0);
        assert_eq!(t.c_cc[libc::VINTR], 7);
    }
}
