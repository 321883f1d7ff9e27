//! Pseudo-terminals: allocation (as the user, with openpty), terminal modes
//! from pty-req (RFC 4254 §8) and window sizes.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use ressh_proto::msg::{mode, parse_modes};

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

/// Control characters: RFC 4254 opcode → c_cc index.
const CHARS: &[(u8, usize)] = &[
    (mode::VINTR, libc::VINTR),
    (mode::VQUIT, libc::VQUIT),
    (mode::VERASE, libc::VERASE),
    (mode::VKILL, libc::VKILL),
    (mode::VEOF, libc::VEOF),
    (6, libc::VEOL),
    (7, libc::VEOL2),
    (8, libc::VSTART),
    (9, libc::VSTOP),
    (10, libc::VSUSP),
    (12, libc::VREPRINT),
    (13, libc::VWERASE),
    (14, libc::VLNEXT),
    (16, libc::VSWTC),
    (18, libc::VDISCARD),
];

#[derive(Clone, Copy)]
enum Field {
    I,
    L,
    O,
    C,
}

/// Flags: RFC 4254 opcode → termios field and bits.
const FLAGS: &[(u8, Field, libc::tcflag_t)] = &[
    (30, Field::I, libc::IGNPAR),
    (31, Field::I, libc::PARMRK),
    (32, Field::I, libc::INPCK),
    (33, Field::I, libc::ISTRIP),
    (34, Field::I, libc::INLCR),
    (35, Field::I, libc::IGNCR),
    (36, Field::I, libc::ICRNL),
    (37, Field::I, libc::IUCLC),
    (38, Field::I, libc::IXON),
    (39, Field::I, libc::IXANY),
    (40, Field::I, libc::IXOFF),
    (41, Field::I, libc::IMAXBEL),
    (42, Field::I, libc::IUTF8),
    (mode::ISIG, Field::L, libc::ISIG),
    (mode::ICANON, Field::L, libc::ICANON),
    (52, Field::L, libc::XCASE),
    (mode::ECHO, Field::L, libc::ECHO),
    (54, Field::L, libc::ECHOE),
    (55, Field::L, libc::ECHOK),
    (56, Field::L, libc::ECHONL),
    (57, Field::L, libc::NOFLSH),
    (58, Field::L, libc::TOSTOP),
    (59, Field::L, libc::IEXTEN),
    (60, Field::L, libc::ECHOCTL),
    (61, Field::L, libc::ECHOKE),
    (62, Field::L, libc::PENDIN),
    (mode::OPOST, Field::O, libc::OPOST),
    (71, Field::O, libc::OLCUC),
    (72, Field::O, libc::ONLCR),
    (73, Field::O, libc::OCRNL),
    (74, Field::O, libc::ONOCR),
    (75, Field::O, libc::ONLRET),
    (90, Field::C, libc::CS7),
    (mode::CS8, Field::C, libc::CS8),
    (92, Field::C, libc::PARENB),
    (93, Field::C, libc::PARODD),
];

/// The termios speed constant for a baud rate, if it is a standard one.
fn speed(baud: u32) -> Option<libc::speed_t> {
    Some(match baud {
        0 => libc::B0,
        50 => libc::B50,
        75 => libc::B75,
        110 => libc::B110,
        134 => libc::B134,
        150 => libc::B150,
        200 => libc::B200,
        300 => libc::B300,
        600 => libc::B600,
        1200 => libc::B1200,
        1800 => libc::B1800,
        2400 => libc::B2400,
        4800 => libc::B4800,
        9600 => libc::B9600,
        19200 => libc::B19200,
        38400 => libc::B38400,
        57600 => libc::B57600,
        115200 => libc::B115200,
        230400 => libc::B230400,
        460800 => libc::B460800,
        921600 => libc::B921600,
        _ => return None,
    })
}

/// Applies parsed modes to a termios, like OpenSSH's tty_parse_modes:
/// unknown opcodes are ignored, a character of 255 disables it.
pub fn modes_to_termios(t: &mut libc::termios, modes: &[(u8, u32)]) {
    for &(op, val) in modes {
        if let Some(&(_, idx)) = CHARS.iter().find(|(o, _)| *o == op) {
            t.c_cc[idx] = if val == 255 { 0 } else { val as libc::cc_t };
        } else if let Some(&(_, field, bits)) = FLAGS.iter().find(|(o, _, _)| *o == op) {
            let f = match field {
                Field::I => &mut t.c_iflag,
                Field::L => &mut t.c_lflag,
                Field::O => &mut t.c_oflag,
                Field::C => &mut t.c_cflag,
            };
            if val != 0 {
                *f |= bits;
            } else {
                *f &= !bits;
            }
        } else if op == mode::TTY_OP_ISPEED || op == mode::TTY_OP_OSPEED {
            if let Some(s) = speed(val) {
                // SAFETY: t is a valid termios.
                unsafe {
                    if op == mode::TTY_OP_ISPEED {
                        libc::cfsetispeed(t, s);
                    } else {
                        libc::cfsetospeed(t, s);
                    }
                }
            }
        }
    }
}

fn apply_modes(fd: RawFd, modes: &[(u8, u32)]) -> io::Result<()> {
    if modes.is_empty() {
        return Ok(());
    }
    // SAFETY: termios is plain data, filled in by tcgetattr.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut t) } < 0 {
        return Err(io::Error::last_os_error());
    }
    modes_to_termios(&mut t, modes);
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
    fn modes_map_to_termios() {
        // SAFETY: plain data.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        t.c_lflag = libc::ECHO;
        let modes = [
            (mode::VINTR, 3),
            (mode::VEOF, 255),
            (mode::ECHO, 0),
            (mode::ICANON, 1),
            (mode::ISIG, 1),
            (mode::OPOST, 1),
            (72, 1),
            (36, 1),
            (mode::CS8, 1),
            (mode::TTY_OP_OSPEED, 38400),
            (mode::TTY_OP_ISPEED, 12345),
            (159, 1),
        ];
        modes_to_termios(&mut t, &modes);
        assert_eq!(t.c_cc[libc::VINTR], 3);
        assert_eq!(t.c_cc[libc::VEOF], 0);
        assert_eq!(t.c_lflag & libc::ECHO, 0);
        assert_ne!(t.c_lflag & libc::ICANON, 0);
        assert_ne!(t.c_lflag & libc::ISIG, 0);
        assert_ne!(t.c_oflag & libc::OPOST, 0);
        assert_ne!(t.c_oflag & libc::ONLCR, 0);
        assert_ne!(t.c_iflag & libc::ICRNL, 0);
        assert_eq!(t.c_cflag & libc::CSIZE, libc::CS8);
        assert_eq!(unsafe { libc::cfgetospeed(&t) }, libc::B38400);
    }

    #[test]
    fn openpty_applies_size_and_modes() {
        let size = WinSize {
            cols: 100,
            rows: 30,
            width_px: 0,
            height_px: 0,
        };
        let modes = ressh_proto::msg::encode_modes(&[(mode::ECHO, 0), (mode::VINTR, 7)]);
        let p = open(size, &modes).unwrap();
        assert!(p.path.starts_with("/dev/pts/"), "{}", p.path);
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        assert!(unsafe { libc::ioctl(p.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } >= 0);
        assert_eq!((ws.ws_col, ws.ws_row), (100, 30));
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        assert!(unsafe { libc::tcgetattr(p.slave.as_raw_fd(), &mut t) } >= 0);
        assert_eq!(t.c_lflag & libc::ECHO, 0);
        assert_eq!(t.c_cc[libc::VINTR], 7);
    }
}
