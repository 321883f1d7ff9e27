//! The local terminal: raw mode (restored on every exit path), window size,
//! and the terminal modes sent with a pty request.
//!
//! The saved settings live in a process-wide slot so that the panic hook,
//! the signal path and normal exit all restore the same state.
#![allow(unsafe_code)] // termios and TIOCGWINSZ on a raw descriptor, kept for the panic hook

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static SAVED: Mutex<Option<(RawFd, libc::termios)>> = Mutex::new(None);
static RAW: AtomicBool = AtomicBool::new(false);

pub fn isatty(fd: RawFd) -> bool {
    nix::unistd::isatty(fd).unwrap_or(false)
}

fn get_attr(fd: RawFd) -> io::Result<libc::termios> {
    // SAFETY: termios is plain old data, for which all zeroes is valid.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr writes one termios into `t`, which is one; a bad
    // descriptor is an error, not undefined behaviour.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(t)
}

fn set_attr(fd: RawFd, t: &libc::termios) -> io::Result<()> {
    // SAFETY: tcsetattr only reads the termios `t` points to, a valid one.
    if unsafe { libc::tcsetattr(fd, libc::TCSADRAIN, t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the terminal is in raw mode now (log lines then end in CR LF).
pub fn raw_active() -> bool {
    RAW.load(Ordering::Relaxed)
}

/// Puts the terminal on `fd` in raw mode, as ssh does (enter_raw_mode).
pub fn enter_raw(fd: RawFd) -> io::Result<()> {
    let orig = get_attr(fd)?;
    let mut t = orig;
    t.c_iflag |= libc::IGNPAR;
    t.c_iflag &= !(libc::ISTRIP
        | libc::INLCR
        | libc::IGNCR
        | libc::ICRNL
        | libc::IXON
        | libc::IXANY
        | libc::IXOFF
        | libc::IUCLC);
    t.c_lflag &= !(libc::ISIG
        | libc::ICANON
        | libc::ECHO
        | libc::ECHOE
        | libc::ECHOK
        | libc::ECHONL
        | libc::IEXTEN);
    t.c_oflag &= !libc::OPOST;
    t.c_cc[libc::VMIN] = 1;
    t.c_cc[libc::VTIME] = 0;
    {
        let mut saved = SAVED.lock().unwrap_or_else(|e| e.into_inner());
        if saved.is_none() {
            *saved = Some((fd, orig));
        }
    }
    set_attr(fd, &t)?;
    RAW.store(true, Ordering::Relaxed);
    Ok(())
}

/// Restores the settings saved by [`enter_raw`]; idempotent, callable from
/// the panic hook.
pub fn leave_raw() {
    let saved = match SAVED.try_lock() {
        Ok(mut g) => g.take(),
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner().take(),
        Err(_) => None,
    };
    if let Some((fd, t)) = saved {
        let _ = set_attr(fd, &t);
    }
    RAW.store(false, Ordering::Relaxed);
}

/// Restores the terminal before the default panic message is printed.
pub fn install_panic_hook() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        leave_raw();
        prev(info);
    }));
}

/// Raw mode for as long as the guard lives.
pub struct RawGuard {
    fd: RawFd,
}

impl RawGuard {
    pub fn new(fd: RawFd) -> io::Result<RawGuard> {
        enter_raw(fd)?;
        Ok(RawGuard { fd })
    }

    /// Leaves raw mode for a while (~^Z); [`Self::resume`] enters it again.
    pub fn suspend(&self) {
        leave_raw();
    }

    pub fn resume(&self) {
        let _ = enter_raw(self.fd);
    }
}

impl Drop for RawGuard {
    fn drop(&mut self) {
        leave_raw();
    }
}

/// (columns, rows, width px, height px) of the terminal on `fd`.
pub fn window_size(fd: RawFd) -> Option<(u32, u32, u32, u32)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`, which is one.
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } != 0 {
        return None;
    }
    Some((
        ws.ws_col as u32,
        ws.ws_row as u32,
        ws.ws_xpixel as u32,
        ws.ws_ypixel as u32,
    ))
}

/// The encoded terminal modes of RFC 4254 §8 for the terminal on `fd`
/// (only TTY_OP_END when `fd` is not a terminal).
pub fn terminal_modes(fd: RawFd) -> Vec<u8> {
    let Ok(t) = get_attr(fd) else {
        return ressh_proto::msg::encode_modes(&[]);
    };
    ressh_proto::msg::encode_modes(&ressh_compat::ttymodes::from_termios(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_of_a_non_terminal_are_empty() {
        let (r, _w) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(terminal_modes(r.as_raw_fd()), vec![0]);
        assert!(window_size(r.as_raw_fd()).is_none());
        assert!(!isatty(r.as_raw_fd()));
    }

    #[test]
    fn modes_of_a_pty_parse() {
        // A real pty pair from the kernel.
        let pty = nix::pty::openpty(None, None).unwrap();
        use std::os::fd::AsRawFd;
        let slave = pty.slave.as_raw_fd();
        let modes = terminal_modes(slave);
        let parsed = ressh_proto::msg::parse_modes(&modes).unwrap();
        assert!(parsed.iter().any(|&(op, _)| op == 53), "ECHO present");
        assert!(parsed.iter().any(|&(op, _)| op == 16), "VSWTC present");
        assert!(
            parsed.iter().any(|&(op, _)| op == 129),
            "output speed present"
        );
        // Raw mode on and off restores the settings.
        let before = get_attr(slave).unwrap();
        enter_raw(slave).unwrap();
        assert!(raw_active());
        assert_eq!(get_attr(slave).unwrap().c_lflag & libc::ECHO, 0);
        leave_raw();
        assert!(!raw_active());
        assert_eq!(get_attr(slave).unwrap().c_lflag, before.c_lflag);
        // A panic in raw mode: the hook restores the terminal.
        install_panic_hook();
        enter_raw(slave).unwrap();
        let r = std::panic::catch_unwind(|| panic!("boom"));
        assert!(r.is_err());
        assert!(!raw_active());
        assert_eq!(get_attr(slave).unwrap().c_lflag, before.c_lflag);
        // The guard restores on drop.
        {
            let _g = RawGuard::new(slave).unwrap();
            assert_eq!(get_attr(slave).unwrap().c_lflag & libc::ICANON, 0);
        }
        assert_eq!(get_attr(slave).unwrap().c_lflag, before.c_lflag);
    }
}
