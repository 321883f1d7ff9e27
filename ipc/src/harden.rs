//! What a worker does before it trusts anything it got: become its user
//! for good, and make itself impossible to trace.
//!
//! A worker that runs as the logged-in user (resshd-session) is that user's
//! process: were it dumpable, the user could ptrace it or copy its monitor
//! link with pidfd_getfd(2) and speak to the root monitor in its name. The
//! monitor therefore execs it as root, and the worker changes its own
//! credentials: the kernel makes a process non-dumpable the moment its
//! credentials change, so there is no window between exec and
//! [`forbid_tracing`] in which the user could attach.

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::resource::{getrlimit, Resource};
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

/// Becomes `uid`/`gid` with the supplementary `groups`, irrevocably.
pub fn become_user(uid: u32, gid: u32, groups: &[u32]) -> Result<(), String> {
    let gids: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
    setgroups(&gids).map_err(|e| format!("setgroups: {e}"))?;
    let (g, u) = (Gid::from_raw(gid), Uid::from_raw(uid));
    setresgid(g, g, g).map_err(|e| format!("setresgid: {e}"))?;
    setresuid(u, u, u).map_err(|e| format!("setresuid: {e}"))?;
    // Regaining root must be impossible now.
    if uid != 0
        && (nix::unistd::setuid(Uid::from_raw(0)).is_ok() || nix::unistd::geteuid().is_root())
    {
        return Err("privileges could be regained".into());
    }
    Ok(())
}

/// Makes this process non-dumpable (no ptrace, no pidfd_getfd, no core,
/// the files in /proc/PID owned by root) and refuses to go on if a tracer is attached.
pub fn forbid_tracing() -> Result<(), String> {
    non_dumpable()?;
    match tracer_pid()? {
        0 => Ok(()),
        pid => Err(format!("traced by process {pid}: refusing to run")),
    }
}

/// PR_SET_DUMPABLE 0, also where fs.suid_dumpable would leave it set.
#[allow(unsafe_code)] // prctl(2)
pub fn non_dumpable() -> Result<(), String> {
    // SAFETY: prctl with constant arguments has no memory effects.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(format!(
            "PR_SET_DUMPABLE: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The TracerPid of this process, from /proc/self/status.
fn tracer_pid() -> Result<u32, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "/proc/self/status has no TracerPid".to_string())
}

/// `--uid N --gid N --groups A,B,...` as a worker's command line carries
/// them; None where `--uid` is absent (resshd runs unprivileged).
pub fn user_args(args: &[String]) -> Result<Option<(u32, u32, Vec<u32>)>, String> {
    let (mut uid, mut gid, mut groups) = (None, None, Vec::new());
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        let num = |s: &str| s.parse::<u32>().map_err(|_| format!("bad {k} {s:?}"));
        match k.as_str() {
            "--uid" => uid = Some(num(v)?),
            "--gid" => gid = Some(num(v)?),
            "--groups" => {
                groups = v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(num)
                    .collect::<Result<_, _>>()?
            }
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    match (uid, gid) {
        (Some(u), Some(g)) => Ok(Some((u, g, groups))),
        (None, None) if groups.is_empty() => Ok(None),
        _ => Err("--uid and --gid go together".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn user_arguments() {
        assert_eq!(user_args(&[]).unwrap(), None);
        assert_eq!(
            user_args(&v(&["--uid", "5", "--gid", "6", "--groups", "6,7"])).unwrap(),
            Some((5, 6, vec![6, 7]))
        );
        assert!(user_args(&v(&["--uid", "5"])).is_err());
        assert!(user_args(&v(&["--uid", "x", "--gid", "1"])).is_err());
        assert!(user_args(&v(&["--bogus", "1"])).is_err());
        assert!(user_args(&v(&["--uid"])).is_err());
    }
}

/// Marks every descriptor from `lowest` up close-on-exec: the next exec
/// takes none of them along, whoever opened them (the environment resshd
/// was started from, a PAM module, a library). For the `pre_exec` hooks of
/// the processes resshd starts, so async-signal-safe: raw system calls
/// only. Marking rather than closing keeps std's own close-on-exec pipe,
/// which reports a failed exec to the parent, working.
pub fn cloexec_from(lowest: i32) -> std::io::Result<()> {
    close_range(lowest, libc::CLOSE_RANGE_CLOEXEC, |fd| {
        // A closed descriptor fails (EBADF) and is skipped.
        if let Ok(f) = fcntl(fd, FcntlArg::F_GETFD) {
            let f = FdFlag::from_bits_retain(f);
            if !f.contains(FdFlag::FD_CLOEXEC) {
                let _ = fcntl(fd, FcntlArg::F_SETFD(f | FdFlag::FD_CLOEXEC));
            }
        }
    })
}

/// Closes every descriptor from `lowest` up (resshd at startup, before it
/// opens anything: whatever it inherited beyond stdin, stdout and stderr
/// is not meant for it nor for anything it starts; resshd-session's
/// in-process children, which never use their parent's descriptors).
pub fn close_from(lowest: i32) -> std::io::Result<()> {
    // The callers use none of them afterwards; a closed one fails harmlessly.
    close_range(lowest, 0, |fd| {
        let _ = nix::unistd::close(fd);
    })
}

/// close_range(2) from `lowest` up with `flags`; on kernels before 5.11,
/// `each` for every descriptor the process may have.
#[allow(unsafe_code)] // close_range(2), which nix does not wrap
fn close_range(lowest: i32, flags: u32, each: impl Fn(i32)) -> std::io::Result<()> {
    // SAFETY: close_range(2) on descriptors the callers own (see them).
    let r = unsafe {
        libc::close_range(
            lowest.max(0) as libc::c_uint,
            libc::c_uint::MAX,
            flags as libc::c_int,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) {
        return Err(e);
    }
    for fd in lowest.max(0)..fd_limit() {
        each(fd);
    }
    Ok(())
}

/// One past the highest descriptor the process can have (RLIMIT_NOFILE,
/// capped): for the loops where close_range(2) is missing.
fn fd_limit() -> i32 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) if soft != libc::RLIM_INFINITY => soft.min(1 << 20) as i32,
        _ => 1 << 20,
    }
}

#[cfg(test)]
mod fd_tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn is_cloexec(fd: i32) -> bool {
        let f = fcntl(fd, FcntlArg::F_GETFD).unwrap_or_else(|e| panic!("fd {fd}: {e}"));
        FdFlag::from_bits_retain(f).contains(FdFlag::FD_CLOEXEC)
    }

    #[test]
    fn descriptors_from_the_lowest_up_become_close_on_exec() {
        let f = std::fs::File::open("/dev/null").unwrap();
        // Copies of our own descriptor, without CLOEXEC.
        let low = fcntl(f.as_raw_fd(), FcntlArg::F_DUPFD(600)).unwrap();
        let high = fcntl(f.as_raw_fd(), FcntlArg::F_DUPFD(700)).unwrap();
        assert!((600..650).contains(&low) && high >= 700, "{low} {high}");
        assert!(!is_cloexec(low) && !is_cloexec(high));
        cloexec_from(650).unwrap();
        assert!(is_cloexec(high), "above the bound");
        assert!(!is_cloexec(low), "below the bound: untouched");
        nix::unistd::close(high).unwrap();
        nix::unistd::close(low).unwrap();
    }
}
