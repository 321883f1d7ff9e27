//! The terminal modes of a pty-req (RFC 4254 §8), one table for both
//! directions, as OpenSSH's `ttymodes.h` and `ttymodes.c`: ressh encodes
//! its terminal's termios with [`from_termios`], resshd applies what it
//! received to the pty with [`to_termios`].
//!
//! The opcodes here are what the table says; the wire encoding (a byte
//! opcode and a uint32 each, ended by TTY_OP_END) is the protocol crate's.
#![allow(unsafe_code)] // libc cfget/cfset*speed on the libc::termios the table works on

use libc::{tcflag_t, termios};

/// TTY_OP_ISPEED: the input baud rate.
pub const TTY_OP_ISPEED: u8 = 128;
/// TTY_OP_OSPEED: the output baud rate.
pub const TTY_OP_OSPEED: u8 = 129;

/// Where a mode lives in a termios.
#[derive(Clone, Copy, Debug)]
enum Slot {
    /// A control character: its index in `c_cc`.
    Char(usize),
    Iflag(tcflag_t),
    Lflag(tcflag_t),
    Oflag(tcflag_t),
    Cflag(tcflag_t),
}

/// RFC 4254 §8's opcodes with Linux's termios: OpenSSH's table, plus
/// VSWTCH (opcode 16), which Linux calls VSWTC (OpenSSH looks for the name
/// VSWTCH, which glibc does not define, so Debian's ssh neither sends nor
/// applies it).
const MODES: &[(u8, Slot)] = &[
    (1, Slot::Char(libc::VINTR)),
    (2, Slot::Char(libc::VQUIT)),
    (3, Slot::Char(libc::VERASE)),
    (4, Slot::Char(libc::VKILL)),
    (5, Slot::Char(libc::VEOF)),
    (6, Slot::Char(libc::VEOL)),
    (7, Slot::Char(libc::VEOL2)),
    (8, Slot::Char(libc::VSTART)),
    (9, Slot::Char(libc::VSTOP)),
    (10, Slot::Char(libc::VSUSP)),
    (12, Slot::Char(libc::VREPRINT)),
    (13, Slot::Char(libc::VWERASE)),
    (14, Slot::Char(libc::VLNEXT)),
    (16, Slot::Char(libc::VSWTC)),
    (18, Slot::Char(libc::VDISCARD)),
    (30, Slot::Iflag(libc::IGNPAR)),
    (31, Slot::Iflag(libc::PARMRK)),
    (32, Slot::Iflag(libc::INPCK)),
    (33, Slot::Iflag(libc::ISTRIP)),
    (34, Slot::Iflag(libc::INLCR)),
    (35, Slot::Iflag(libc::IGNCR)),
    (36, Slot::Iflag(libc::ICRNL)),
    (37, Slot::Iflag(libc::IUCLC)),
    (38, Slot::Iflag(libc::IXON)),
    (39, Slot::Iflag(libc::IXANY)),
    (40, Slot::Iflag(libc::IXOFF)),
    (41, Slot::Iflag(libc::IMAXBEL)),
    (42, Slot::Iflag(libc::IUTF8)),
    (50, Slot::Lflag(libc::ISIG)),
    (51, Slot::Lflag(libc::ICANON)),
    (52, Slot::Lflag(libc::XCASE)),
    (53, Slot::Lflag(libc::ECHO)),
    (54, Slot::Lflag(libc::ECHOE)),
    (55, Slot::Lflag(libc::ECHOK)),
    (56, Slot::Lflag(libc::ECHONL)),
    (57, Slot::Lflag(libc::NOFLSH)),
    (58, Slot::Lflag(libc::TOSTOP)),
    (59, Slot::Lflag(libc::IEXTEN)),
    (60, Slot::Lflag(libc::ECHOCTL)),
    (61, Slot::Lflag(libc::ECHOKE)),
    (62, Slot::Lflag(libc::PENDIN)),
    (70, Slot::Oflag(libc::OPOST)),
    (71, Slot::Oflag(libc::OLCUC)),
    (72, Slot::Oflag(libc::ONLCR)),
    (73, Slot::Oflag(libc::OCRNL)),
    (74, Slot::Oflag(libc::ONOCR)),
    (75, Slot::Oflag(libc::ONLRET)),
    (90, Slot::Cflag(libc::CS7)),
    (91, Slot::Cflag(libc::CS8)),
    (92, Slot::Cflag(libc::PARENB)),
    (93, Slot::Cflag(libc::PARODD)),
];

/// Baud rates and their termios speeds (OpenSSH's `speed_to_baud`).
const SPEEDS: &[(u32, libc::speed_t)] = &[
    (0, libc::B0),
    (50, libc::B50),
    (75, libc::B75),
    (110, libc::B110),
    (134, libc::B134),
    (150, libc::B150),
    (200, libc::B200),
    (300, libc::B300),
    (600, libc::B600),
    (1200, libc::B1200),
    (1800, libc::B1800),
    (2400, libc::B2400),
    (4800, libc::B4800),
    (9600, libc::B9600),
    (19200, libc::B19200),
    (38400, libc::B38400),
    (57600, libc::B57600),
    (115200, libc::B115200),
    (230400, libc::B230400),
    (460800, libc::B460800),
    (921600, libc::B921600),
];

/// The flag field a slot names and its bits (None for a character).
fn flags(t: &mut termios, slot: Slot) -> Option<(&mut tcflag_t, tcflag_t)> {
    match slot {
        Slot::Char(_) => None,
        Slot::Iflag(b) => Some((&mut t.c_iflag, b)),
        Slot::Lflag(b) => Some((&mut t.c_lflag, b)),
        Slot::Oflag(b) => Some((&mut t.c_oflag, b)),
        Slot::Cflag(b) => Some((&mut t.c_cflag, b)),
    }
}

/// The modes of `t` as (opcode, value), in the order ssh sends them: the
/// output and input speeds, then the table; a disabled control character
/// as 255, a flag as 1 when any of its bits is set.
pub fn from_termios(t: &termios) -> Vec<(u8, u32)> {
    // SAFETY: cfget*speed only read the termios, which is valid.
    let (ospeed, ispeed) = unsafe { (libc::cfgetospeed(t), libc::cfgetispeed(t)) };
    let baud = |s: libc::speed_t| {
        SPEEDS
            .iter()
            .find(|&&(_, sp)| sp == s)
            .map_or(9600, |&(b, _)| b)
    };
    let mut out = vec![(TTY_OP_OSPEED, baud(ospeed)), (TTY_OP_ISPEED, baud(ispeed))];
    let mut copy = *t;
    for &(op, slot) in MODES {
        let v = match (slot, flags(&mut copy, slot)) {
            (_, Some((f, bits))) => u32::from(*f & bits != 0),
            (Slot::Char(i), None) => match t.c_cc[i] {
                0 => 255, // _POSIX_VDISABLE
                c => u32::from(c),
            },
            _ => continue,
        };
        out.push((op, v));
    }
    out
}

/// Applies received modes to `t`, like OpenSSH's `tty_parse_modes`:
/// unknown opcodes and speeds are ignored, a character of 255 disables
/// it, a flag's value 0 clears its bits and anything else sets them.
pub fn to_termios(t: &mut termios, modes: &[(u8, u32)]) {
    for &(op, val) in modes {
        if op == TTY_OP_ISPEED || op == TTY_OP_OSPEED {
            if let Some(&(_, s)) = SPEEDS.iter().find(|&&(b, _)| b == val) {
                // SAFETY: t is a valid termios and s a speed constant.
                unsafe {
                    if op == TTY_OP_ISPEED {
                        libc::cfsetispeed(t, s);
                    } else {
                        libc::cfsetospeed(t, s);
                    }
                }
            }
            continue;
        }
        let Some(&(_, slot)) = MODES.iter().find(|(o, _)| *o == op) else {
            continue;
        };
        if let Slot::Char(i) = slot {
            t.c_cc[i] = if val == 255 { 0 } else { val as libc::cc_t };
        } else if let Some((f, bits)) = flags(t, slot) {
            if val != 0 {
                *f |= bits;
            } else {
                *f &= !bits;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn attrs(fd: impl AsFd) -> termios {
        nix::sys::termios::tcgetattr(fd).unwrap().into()
    }

    #[test]
    fn applied_modes_reach_termios() {
        // SAFETY: plain data.
        let mut t: termios = unsafe { std::mem::zeroed() };
        t.c_lflag = libc::ECHO;
        let modes = [
            (1, 3),
            (5, 255),
            (53, 0),
            (51, 1),
            (50, 1),
            (70, 1),
            (72, 1),
            (36, 1),
            (91, 1),
            (16, 26),
            (TTY_OP_OSPEED, 38400),
            (TTY_OP_ISPEED, 12345),
            (159, 1),
        ];
        to_termios(&mut t, &modes);
        assert_eq!(t.c_cc[libc::VINTR], 3);
        assert_eq!(t.c_cc[libc::VEOF], 0);
        assert_eq!(t.c_cc[libc::VSWTC], 26);
        assert_eq!(t.c_lflag & libc::ECHO, 0);
        assert_ne!(t.c_lflag & libc::ICANON, 0);
        assert_ne!(t.c_lflag & libc::ISIG, 0);
        assert_ne!(t.c_oflag & libc::OPOST, 0);
        assert_ne!(t.c_oflag & libc::ONLCR, 0);
        assert_ne!(t.c_iflag & libc::ICRNL, 0);
        assert_eq!(t.c_cflag & libc::CSIZE, libc::CS8);
        // SAFETY: reads a valid termios.
        assert_eq!(unsafe { libc::cfgetospeed(&t) }, libc::B38400);
    }

    /// The modes of a real terminal, sent and applied to another, arrive
    /// whole: every control character (VSWTC, which the client's old table
    /// lacked, included), flag and speed.
    #[test]
    fn a_terminal_survives_the_round_trip() {
        let a = nix::pty::openpty(None, None).unwrap();
        let mut t = attrs(&a.slave);
        t.c_cc[libc::VSWTC] = 0x1a;
        t.c_cc[libc::VINTR] = 0x07;
        t.c_lflag &= !libc::ECHO;
        t.c_iflag |= libc::IXANY;
        let sent = from_termios(&t);
        assert!(sent.contains(&(16, 0x1a)), "VSWTC sent: {sent:?}");
        assert!(sent.contains(&(1, 0x07)));
        assert!(sent.contains(&(53, 0)));
        assert!(sent.contains(&(39, 1)));
        assert_eq!(sent[0].0, TTY_OP_OSPEED);

        let b = nix::pty::openpty(None, None).unwrap();
        let mut u = attrs(&b.slave);
        to_termios(&mut u, &sent);
        for &(op, slot) in MODES {
            match slot {
                Slot::Char(i) => assert_eq!(u.c_cc[i], t.c_cc[i], "opcode {op}"),
                _ => {
                    let (mut tt, mut uu) = (t, u);
                    let (tf, bits) = flags(&mut tt, slot).unwrap();
                    let tv = *tf & bits != 0;
                    let (uf, _) = flags(&mut uu, slot).unwrap();
                    assert_eq!(*uf & bits != 0, tv, "opcode {op}");
                }
            }
        }
    }
}
