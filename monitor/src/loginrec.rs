//! Login records, written by the monitor (root) for pty sessions as sshd
//! writes them: utmp (what `who` shows while the session lives), wtmp
//! (what `last` shows after) and lastlog (what `lastlog` and the next
//! login's "Last login:" line show).
//!
//! A missing utmp, wtmp or lastlog file is not created (the system's boot
//! or packaging makes them); failures are returned for the caller to log.
#![allow(unsafe_code)] // libc's utmpx/wtmp functions, which nix does not wrap

use std::ffi::{c_char, CString};
use std::net::IpAddr;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const UTMP_FILE: &str = "/var/run/utmp";
pub const WTMP_FILE: &str = "/var/log/wtmp";
pub const LASTLOG_FILE: &str = "/var/log/lastlog";

extern "C" {
    fn updwtmpx(wtmpx_file: *const c_char, utmpx: *const libc::utmpx);
}

/// One login on a pty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// `/dev/pts/N`.
    pub tty: String,
    pub pid: i32,
    pub user: String,
    pub uid: u32,
    /// The peer's address as text (resshd never resolves names).
    pub host: String,
    pub addr: IpAddr,
}

/// The tty without `/dev/` (utmp's ut_line).
fn line_name(tty: &str) -> &str {
    tty.strip_prefix("/dev/").unwrap_or(tty)
}

/// utmp's ut_id: the last four characters of the line (sshd's
/// line_abbrevname): `pts/3` → `ts/3`.
fn line_id(line: &str) -> &str {
    let b = line.as_bytes();
    let start = b.len().saturating_sub(4);
    // Lines are ASCII (pts/N); be safe on char boundaries all the same.
    let mut s = start;
    while !line.is_char_boundary(s) {
        s += 1;
    }
    &line[s..]
}

fn copy_c(dst: &mut [c_char], src: &str) {
    for (d, s) in dst.iter_mut().zip(src.bytes().chain(std::iter::repeat(0))) {
        *d = s as c_char;
    }
    // Not necessarily NUL-terminated when full, as in utmp.
}

fn now() -> (i64, i64) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, d.subsec_micros() as i64)
}

fn entry(l: &Login, login: bool) -> libc::utmpx {
    // SAFETY: utmpx is plain data; all-zero is a valid (empty) entry.
    let mut ut: libc::utmpx = unsafe { std::mem::zeroed() };
    let line = line_name(&l.tty);
    ut.ut_type = if login {
        libc::USER_PROCESS
    } else {
        libc::DEAD_PROCESS
    };
    ut.ut_pid = l.pid;
    copy_c(&mut ut.ut_line, line);
    copy_c(&mut ut.ut_id, line_id(line));
    let (sec, usec) = now();
    ut.ut_tv.tv_sec = sec as _;
    ut.ut_tv.tv_usec = usec as _;
    if login {
        copy_c(&mut ut.ut_user, &l.user);
        copy_c(&mut ut.ut_host, &l.host);
        match l.addr {
            IpAddr::V4(a) => ut.ut_addr_v6[0] = i32::from_ne_bytes(a.octets()),
            IpAddr::V6(a) => {
                let o = a.octets();
                for i in 0..4 {
                    ut.ut_addr_v6[i] =
                        i32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]);
                }
            }
        }
    }
    ut
}

/// A login record that could not be written (logged; the login goes on).
#[derive(Debug, thiserror::Error)]
#[error("{file}: {source}")]
pub struct Error {
    file: &'static str,
    source: std::io::Error,
}

/// Writes `ut` to utmp (replacing the entry of its line) and appends it
/// to wtmp.
fn write_utmp_wtmp(ut: &libc::utmpx) -> Result<(), Error> {
    let mut result = Ok(());
    if Path::new(UTMP_FILE).exists() {
        let name = CString::new(UTMP_FILE).expect("no NUL");
        // SAFETY: glibc's utmp API, used from this single-threaded process.
        let ok = unsafe {
            libc::utmpxname(name.as_ptr());
            libc::setutxent();
            let r = libc::pututxline(ut);
            libc::endutxent();
            !r.is_null()
        };
        if !ok {
            result = Err(Error {
                file: UTMP_FILE,
                source: std::io::Error::last_os_error(),
            });
        }
    }
    if Path::new(WTMP_FILE).exists() {
        let name = CString::new(WTMP_FILE).expect("no NUL");
        // SAFETY: appends one record under glibc's lock.
        unsafe { updwtmpx(name.as_ptr(), ut) };
    }
    result
}

/// Records the login in utmp, wtmp and lastlog.
pub fn record_login(l: &Login) -> Result<(), Error> {
    let ut = entry(l, true);
    let r = write_utmp_wtmp(&ut);
    let r2 = write_lastlog(l);
    r.and(r2)
}

/// Records the logout in utmp and wtmp.
pub fn record_logout(l: &Login) -> Result<(), Error> {
    write_utmp_wtmp(&entry(l, false))
}

// lastlog: struct lastlog { int32_t ll_time; char ll_line[32]; char ll_host[256]; }
// at offset uid * sizeof(struct lastlog) (glibc on 64-bit Linux keeps a
// 32-bit time there for compatibility).
const LL_LINE: usize = 32;
const LL_HOST: usize = 256;
const LL_SIZE: usize = 4 + LL_LINE + LL_HOST;

fn write_lastlog(l: &Login) -> Result<(), Error> {
    let path = Path::new(LASTLOG_FILE);
    if !path.exists() {
        return Ok(());
    }
    let mut rec = [0u8; LL_SIZE];
    let (sec, _) = now();
    rec[..4].copy_from_slice(&(sec as i32).to_ne_bytes());
    let line = line_name(&l.tty).as_bytes();
    let n = line.len().min(LL_LINE);
    rec[4..4 + n].copy_from_slice(&line[..n]);
    let host = l.host.as_bytes();
    let n = host.len().min(LL_HOST);
    rec[4 + LL_LINE..4 + LL_LINE + n].copy_from_slice(&host[..n]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.write_all_at(&rec, l.uid as u64 * LL_SIZE as u64))
        .map_err(|source| Error {
            file: LASTLOG_FILE,
            source,
        })
}

/// The user's last login from lastlog: (time, line, host).
pub fn last_login(uid: u32) -> Option<(i64, String, String)> {
    let f = std::fs::File::open(LASTLOG_FILE).ok()?;
    let mut rec = [0u8; LL_SIZE];
    f.read_exact_at(&mut rec, uid as u64 * LL_SIZE as u64)
        .ok()?;
    let t = i32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]) as i64;
    if t == 0 {
        return None;
    }
    let text = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    Some((t, text(&rec[4..4 + LL_LINE]), text(&rec[4 + LL_LINE..])))
}

/// sshd's "Last login: Tue Nov 25 20:12:00 2025 from 192.0.2.1" line
/// (local time), without a line end.
pub fn last_login_message(uid: u32) -> Option<String> {
    let (t, _line, host) = last_login(uid)?;
    let when = ctime(t)?;
    Some(if host.is_empty() {
        format!("Last login: {when}")
    } else {
        format!("Last login: {when} from {host}")
    })
}

/// ctime(3)'s text, without the newline.
fn ctime(t: i64) -> Option<String> {
    let t = t as libc::time_t;
    // SAFETY: localtime_r and strftime write into our buffers.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return None;
        }
        let mut buf = [0u8; 64];
        let n = libc::strftime(
            buf.as_mut_ptr() as *mut c_char,
            buf.len(),
            c"%a %b %e %H:%M:%S %Y".as_ptr(),
            &tm,
        );
        (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

/// Whether `tty` is a pty slave path (`/dev/pts/N`), the only kind a
/// session worker opens.
pub fn valid_tty(tty: &str) -> bool {
    tty.strip_prefix("/dev/pts/")
        .is_some_and(|n| !n.is_empty() && n.len() <= 9 && n.bytes().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(line_name("/dev/pts/3"), "pts/3");
        assert_eq!(line_id("pts/3"), "ts/3");
        assert_eq!(line_id("pts/12"), "s/12");
        assert_eq!(line_id("x"), "x");
        assert!(valid_tty("/dev/pts/0"));
        assert!(!valid_tty("/dev/pts/"));
        assert!(!valid_tty("/dev/tty1"));
        assert!(!valid_tty("/dev/pts/../sda"));
    }

    #[test]
    fn entries() {
        let l = Login {
            tty: "/dev/pts/7".into(),
            pid: 42,
            user: "alice".into(),
            uid: 1000,
            host: "192.0.2.1".into(),
            addr: "192.0.2.1".parse().unwrap(),
        };
        let ut = entry(&l, true);
        assert_eq!(ut.ut_type, libc::USER_PROCESS);
        assert_eq!(ut.ut_pid, 42);
        assert_eq!(
            ut.ut_line[..6].iter().map(|&c| c as u8).collect::<Vec<_>>(),
            b"pts/7\0"
        );
        assert_eq!(
            ut.ut_id.iter().map(|&c| c as u8).collect::<Vec<_>>(),
            b"ts/7"
        );
        assert_eq!(ut.ut_addr_v6[0], i32::from_ne_bytes([192, 0, 2, 1]));
        let out = entry(&l, false);
        assert_eq!(out.ut_type, libc::DEAD_PROCESS);
        assert_eq!(out.ut_user[0], 0);
        assert!(ctime(0).is_some());
    }
}
