//! Confinement of the pre-auth worker: an empty chroot, the privsep user,
//! no_new_privs, and a seccomp allow-list that kills on anything else.
#![allow(unsafe_code)] // seccomp and no_new_privs; its tests call raw system calls under the filter

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nix::unistd::{chdir, chroot};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Why confinement failed.
#[derive(Debug)]
pub enum Error {
    Chroot(PathBuf, nix::Error),
    Chdir(nix::Error),
    /// Becoming the privsep user, or making the process non-dumpable.
    User(Box<dyn std::error::Error + Send + Sync>),
    NoNewPrivs(std::io::Error),
    /// Building the seccomp program.
    Filter(seccompiler::BackendError),
    /// Installing it.
    Install(seccompiler::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Chroot(root, e) => write!(f, "chroot {}: {e}", root.display()),
            Error::Chdir(e) => write!(f, "chdir /: {e}"),
            Error::User(e) => write!(f, "{e}"),
            Error::NoNewPrivs(e) => write!(f, "PR_SET_NO_NEW_PRIVS: {e}"),
            Error::Filter(e) => write!(f, "seccomp: {e}"),
            Error::Install(e) => write!(f, "seccomp: {e}"),
        }
    }
}

impl From<seccompiler::BackendError> for Error {
    fn from(e: seccompiler::BackendError) -> Self {
        Error::Filter(e)
    }
}

/// Drops to `uid`/`gid` inside `root` (when running as root).
pub fn drop_privileges(root: &Path, uid: u32, gid: u32) -> Result<(), Error> {
    chroot(root).map_err(|e| Error::Chroot(root.to_path_buf(), e))?;
    chdir("/").map_err(Error::Chdir)?;
    ressh_ipc::harden::become_user(uid, gid, &[gid]).map_err(|e| Error::User(e.into()))?;
    // Kex workers share the privsep user: none may trace another.
    ressh_ipc::harden::non_dumpable().map_err(|e| Error::User(e.into()))
}

/// Sets no_new_privs and installs the seccomp filter.
pub fn confine() -> Result<(), Error> {
    install(&filter()?)
}

/// The installation half of [`confine`], given the built program: only
/// system calls, so a forked child of the tests can run it as well.
fn install(prog: &BpfProgram) -> Result<(), Error> {
    no_new_privs()?;
    seccompiler::apply_filter(prog).map_err(Error::Install)
}

/// PR_SET_NO_NEW_PRIVS (async-signal-safe).
fn no_new_privs() -> Result<(), Error> {
    // SAFETY: prctl with these constant arguments has no memory effects.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if r != 0 {
        return Err(Error::NoNewPrivs(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The allow-list: anything else kills the process (SIGSYS).
fn filter() -> Result<BpfProgram, Error> {
    let allowed: &[libc::c_long] = &[
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_writev,
        libc::SYS_recvmsg,
        libc::SYS_sendmsg,
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_poll,
        libc::SYS_ppoll,
        libc::SYS_close,
        libc::SYS_shutdown,
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_futex,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_mprotect,
        libc::SYS_brk,
        libc::SYS_madvise,
        libc::SYS_getrandom,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_gettimeofday,
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigprocmask,
        libc::SYS_sigaltstack,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_setsockopt,
        libc::SYS_getsockopt,
        libc::SYS_sched_yield,
    ];
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        allowed.iter().map(|&n| (n, Vec::new())).collect();
    // fcntl only as std uses it (F_GETFD, checking a descriptor it closes):
    // nothing that could route signals (F_SETOWN, F_SETSIG, O_ASYNC via
    // F_SETFL), take leases or locks, or duplicate descriptors. The kernel
    // reads the command as a 32-bit int: so does the rule.
    let getfd = SeccompCondition::new(
        1,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        libc::F_GETFD as u64,
    )?;
    rules.insert(libc::SYS_fcntl, vec![SeccompRule::new(vec![getfd])?]);
    let arch = TargetArch::try_from(std::env::consts::ARCH)?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        arch,
    )?;
    Ok(filter.try_into()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `probe` in a forked child under the kex worker's filter,
    /// installed as `confine` installs it, and returns how the child ended:
    /// Ok(exit code) or Err(signal). Between fork and exit only
    /// async-signal-safe calls run (the program is built before the fork).
    fn under_filter(probe: impl Fn() -> libc::c_int) -> Result<i32, i32> {
        let prog = filter().unwrap();
        // SAFETY: the child makes only raw system calls and _exits.
        match unsafe { libc::fork() } {
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            0 => {
                let code = if install(&prog).is_ok() { probe() } else { 99 };
                // SAFETY: ends the forked child without running destructors.
                unsafe { libc::_exit(code) }
            }
            pid => {
                let mut st = 0;
                // SAFETY: waiting for our own child.
                assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
                if libc::WIFSIGNALED(st) {
                    Err(libc::WTERMSIG(st))
                } else {
                    Ok(libc::WEXITSTATUS(st))
                }
            }
        }
    }

    /// fcntl(0, cmd, arg) in the child: 0 if it returned, 1 if it failed.
    fn fcntl(cmd: libc::c_int, arg: libc::c_long) -> impl Fn() -> libc::c_int {
        // SAFETY: fcntl on fd 0 with integer arguments only.
        move || (unsafe { libc::fcntl(0, cmd, arg) } < 0) as libc::c_int
    }

    /// Linux's values (asm-generic/fcntl.h); the libc crate lacks them.
    const F_SETSIG: libc::c_int = 10;
    const F_SETOWN_EX: libc::c_int = 15;

    #[test]
    fn fcntl_commands_the_worker_does_not_use_kill_it() {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() } as libc::c_long;
        let forbidden: &[(&str, libc::c_int, libc::c_long)] = &[
            ("F_SETOWN", libc::F_SETOWN, me),
            ("F_SETOWN_EX", F_SETOWN_EX, 0),
            ("F_SETSIG", F_SETSIG, libc::SIGIO as libc::c_long),
            (
                "F_SETFL O_ASYNC",
                libc::F_SETFL,
                libc::O_ASYNC as libc::c_long,
            ),
            (
                "F_SETFL O_NONBLOCK",
                libc::F_SETFL,
                libc::O_NONBLOCK as libc::c_long,
            ),
            ("F_GETFL", libc::F_GETFL, 0),
            ("F_DUPFD", libc::F_DUPFD, 100),
            ("F_DUPFD_CLOEXEC", libc::F_DUPFD_CLOEXEC, 100),
            ("F_SETFD", libc::F_SETFD, libc::FD_CLOEXEC as libc::c_long),
            ("F_SETLK", libc::F_SETLK, 0),
            (
                "F_SETLEASE",
                libc::F_SETLEASE,
                libc::F_RDLCK as libc::c_long,
            ),
            ("F_NOTIFY", libc::F_NOTIFY, 0),
            ("F_SETPIPE_SZ", libc::F_SETPIPE_SZ, 1 << 20),
        ];
        for &(name, cmd, arg) in forbidden {
            assert_eq!(
                under_filter(fcntl(cmd, arg)),
                Err(libc::SIGSYS),
                "fcntl {name} must kill the worker"
            );
        }
    }

    /// What an attacker who runs code in the worker would try first: a
    /// new connection, a program, a secret file, another process, root's
    /// identity, a child. Each kills the worker outright (the filter's
    /// action is KillProcess), so none returns an error it could go on from.
    #[test]
    fn escapes_from_the_worker_are_killed_by_sigsys() {
        use std::ffi::CString;
        let shadow = CString::new("/etc/shadow").unwrap();
        let shadow = shadow.as_ptr();
        // A program that is not there: exec fails with ENOENT if the call
        // is let through (a real program would die of the inherited filter
        // on its first system call, looking like a kill by the filter).
        let prog = CString::new("/nonexistent/ressh-probe").unwrap();
        let argv = [prog.as_ptr(), std::ptr::null()];
        let (prog, argv) = (prog.as_ptr(), argv.as_ptr());
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // Attaching to the test itself would stop it: a pid above any
        // pid_max answers ESRCH if the call is let through.
        const NO_PID: libc::pid_t = libc::pid_t::MAX;
        // Each probe exits 0 if the call went through, 1 if it failed:
        // either way the child lived, which is the failure under test.
        fn lived(r: libc::c_int) -> libc::c_int {
            (r < 0) as libc::c_int
        }
        type Probe<'a> = (&'a str, Box<dyn Fn() -> libc::c_int + 'a>);
        let probes: Vec<Probe> = vec![
            (
                "socket",
                // SAFETY: integer arguments only.
                Box::new(|| lived(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) })),
            ),
            (
                "socketpair",
                Box::new(|| {
                    let mut sv = [0; 2];
                    // SAFETY: sv has room for the two descriptors socketpair writes.
                    lived(unsafe {
                        libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr())
                    })
                }),
            ),
            (
                "execve",
                // SAFETY: prog and argv are NUL-terminated and outlive the call.
                Box::new(move || lived(unsafe { libc::execve(prog, argv, std::ptr::null()) })),
            ),
            (
                "openat /etc/shadow",
                Box::new(move || {
                    // SAFETY: shadow is a NUL-terminated path that outlives the call.
                    lived(unsafe { libc::openat(libc::AT_FDCWD, shadow, libc::O_RDONLY) })
                }),
            ),
            (
                "open /etc/shadow",
                Box::new(move || {
                    lived(
                        // SAFETY: shadow is a NUL-terminated path that outlives the call.
                        unsafe { libc::syscall(libc::SYS_open, shadow, libc::O_RDONLY) }
                            as libc::c_int,
                    )
                }),
            ),
            (
                "ptrace PTRACE_TRACEME",
                Box::new(|| {
                    // SAFETY: integer arguments only.
                    lived(unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) } as libc::c_int)
                }),
            ),
            (
                "ptrace PTRACE_ATTACH",
                Box::new(move || {
                    // SAFETY: integer arguments only; NO_PID names no process.
                    lived(unsafe { libc::ptrace(libc::PTRACE_ATTACH, NO_PID, 0, 0) } as libc::c_int)
                }),
            ),
            (
                "kill",
                // SAFETY: signal 0 only checks that the process exists.
                Box::new(move || lived(unsafe { libc::kill(parent, 0) })),
            ),
            // SAFETY: integer argument only.
            ("setuid", Box::new(|| lived(unsafe { libc::setuid(0) }))),
            // SAFETY: the child of a probe returns into under_filter, which _exits.
            ("fork", Box::new(|| lived(unsafe { libc::fork() }))),
            // SAFETY: no preconditions.
            ("getppid", Box::new(|| lived(unsafe { libc::getppid() }))),
        ];
        let survived: Vec<String> = probes
            .iter()
            .map(|(name, probe)| (name, under_filter(probe)))
            .filter(|(_, end)| *end != Err(libc::SIGSYS))
            .map(|(name, end)| format!("{name}: {end:?}"))
            .collect();
        assert!(
            survived.is_empty(),
            "each must kill the worker with SIGSYS (Err({})); these ended otherwise \
             (Ok(exit code) or Err(signal)): {survived:#?}",
            libc::SIGSYS
        );
    }

    #[test]
    fn the_fcntl_the_worker_uses_is_allowed() {
        // F_GETFD: std checks descriptors with it when it closes them.
        assert_eq!(under_filter(fcntl(libc::F_GETFD, 0)), Ok(0));
        // An upper half of the command word does not smuggle a command
        // through (the kernel reads cmd as a 32-bit int).
        let smuggled = (1 << 32) | libc::F_SETOWN as libc::c_long;
        let call = move || {
            // SAFETY: a raw fcntl system call with integer arguments.
            unsafe { libc::syscall(libc::SYS_fcntl, 0, smuggled, 0) };
            0
        };
        assert_eq!(under_filter(call), Err(libc::SIGSYS));
        // And the filter is not "kill everything": plain work goes on.
        assert_eq!(
            // SAFETY: getpid has no preconditions.
            under_filter(|| (unsafe { libc::getpid() } <= 0) as libc::c_int),
            Ok(0)
        );
    }
}
