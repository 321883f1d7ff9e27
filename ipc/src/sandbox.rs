//! Confinement of the processes that talk to hostile peers before any
//! authentication (the kex worker, the fleet link processes): an empty
//! chroot, the privsep user, non-dumpable, no_new_privs, and a seccomp
//! allow-list that kills the process on any other system call (SIGSYS, which
//! its parent logs). Each such process names its own list; building and
//! installing it is done here, once.
#![allow(unsafe_code)] // no_new_privs

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nix::unistd::{chdir, chroot};
pub use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule,
};
use seccompiler::{SeccompFilter, TargetArch};

/// Why confinement failed.
#[derive(Debug)]
pub enum Error {
    Chroot(PathBuf, nix::Error),
    Chdir(nix::Error),
    /// Becoming the privsep user, or making the process non-dumpable.
    User(String),
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

impl std::error::Error for Error {}

impl From<seccompiler::BackendError> for Error {
    fn from(e: seccompiler::BackendError) -> Self {
        Error::Filter(e)
    }
}

/// Drops to `uid`/`gid` (no other group) inside `root`, for good, and makes
/// the process non-dumpable: the processes confined so share the privsep
/// user, and none may trace another.
pub fn drop_privileges(root: &Path, uid: u32, gid: u32) -> Result<(), Error> {
    chroot(root).map_err(|e| Error::Chroot(root.to_path_buf(), e))?;
    chdir("/").map_err(Error::Chdir)?;
    crate::harden::become_user(uid, gid, &[gid]).map_err(Error::User)?;
    crate::harden::non_dumpable().map_err(Error::User)
}

/// System calls every confined process needs: its descriptors' reads and
/// writes, waiting, memory, randomness, time, ending.
pub const BASE: &[libc::c_long] = &[
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

/// `nr` allowed only when its argument `arg` (a 32-bit int to the kernel)
/// equals one of `values`.
pub fn only_with(
    nr: libc::c_long,
    arg: u8,
    values: &[u64],
) -> Result<(i64, Vec<SeccompRule>), Error> {
    let rules = values
        .iter()
        .map(|&v| {
            let c = SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v)?;
            Ok(SeccompRule::new(vec![c])?)
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok((nr, rules))
}

/// An allow-list: the calls of `allowed` whatever their arguments, those of
/// `rules` when one of their rules matches; anything else kills the process.
pub fn allow_list(
    allowed: &[libc::c_long],
    rules: impl IntoIterator<Item = (i64, Vec<SeccompRule>)>,
) -> Result<BpfProgram, Error> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> =
        allowed.iter().map(|&n| (n, Vec::new())).collect();
    map.extend(rules);
    program(map, SeccompAction::KillProcess, SeccompAction::Allow)
}

/// A filter that makes `calls` fail with `errno` and lets the rest through
/// (to be stacked with an [`allow_list`] that allows them: the stricter
/// verdict wins).
pub fn fail_with(calls: &[libc::c_long], errno: u32) -> Result<BpfProgram, Error> {
    let map = calls.iter().map(|&n| (n, Vec::new())).collect();
    program(map, SeccompAction::Allow, SeccompAction::Errno(errno))
}

fn program(
    map: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, Error> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)?;
    Ok(SeccompFilter::new(map, mismatch, matched, arch)?.try_into()?)
}

/// Sets no_new_privs and installs `progs` in order (an [`allow_list`]
/// last: it forbids installing more), in this thread and the threads it
/// starts from now on. Only system calls: a forked child can run it.
pub fn install(progs: &[BpfProgram]) -> Result<(), Error> {
    no_new_privs()?;
    for p in progs {
        seccompiler::apply_filter(p).map_err(Error::Install)?;
    }
    Ok(())
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

/// For the tests of each confined process's filter: what an attacker who
/// runs code in it would try, each tried in a forked child under the
/// filter. Behind the `probe` feature, which only tests turn on.
#[cfg(any(test, feature = "probe"))]
pub mod probe {
    use std::ffi::CString;

    use super::{install, BpfProgram};

    /// One attempt: its name and the call, 0 if it went through, 1 if it
    /// failed (either way the child lived).
    pub type Probe = (&'static str, Box<dyn Fn() -> libc::c_int>);

    /// Runs `probe` in a forked child under `progs`, installed as the
    /// confined process installs them, and returns how the child ended:
    /// Ok(exit code) or Err(signal). Between fork and exit only
    /// async-signal-safe calls run (the programs are built before the fork).
    pub fn under(progs: &[BpfProgram], probe: impl Fn() -> libc::c_int) -> Result<i32, i32> {
        // SAFETY: the child makes only raw system calls and _exits.
        match unsafe { libc::fork() } {
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            0 => {
                let code = if install(progs).is_ok() { probe() } else { 99 };
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

    fn lived(r: libc::c_int) -> libc::c_int {
        (r < 0) as libc::c_int
    }

    /// What an attacker who runs code in a confined process would try
    /// first: a new connection (network or to a local daemon), a program,
    /// a secret file, another process, root's identity, a child.
    pub fn escapes() -> Vec<Probe> {
        // Leaked: the probes outlive this call, in each forked child.
        let shadow = CString::new("/etc/shadow").unwrap().into_raw() as *const libc::c_char;
        // A program that is not there: exec fails with ENOENT if the call
        // is let through (a real program would die of the inherited filter
        // on its first system call, looking like a kill by the filter).
        let prog = CString::new("/nonexistent/ressh-probe").unwrap().into_raw() as *const _;
        let argv: &'static [*const libc::c_char; 2] = Box::leak(Box::new([prog, std::ptr::null()]));
        let (shadow, prog, argv) = (shadow as usize, prog as usize, argv.as_ptr() as usize);
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // Attaching to the test itself would stop it: a pid above any
        // pid_max answers ESRCH if the call is let through.
        const NO_PID: libc::pid_t = libc::pid_t::MAX;
        vec![
            (
                "socket AF_INET",
                // SAFETY: integer arguments only.
                Box::new(|| lived(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) })),
            ),
            (
                "socket AF_UNIX",
                // SAFETY: integer arguments only.
                Box::new(|| lived(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) })),
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
                Box::new(move || {
                    // SAFETY: prog and argv are NUL-terminated and leaked.
                    lived(unsafe {
                        libc::execve(
                            prog as *const libc::c_char,
                            argv as *const *const libc::c_char,
                            std::ptr::null(),
                        )
                    })
                }),
            ),
            (
                "openat /etc/shadow",
                Box::new(move || {
                    // SAFETY: shadow is a NUL-terminated path, leaked.
                    lived(unsafe {
                        libc::openat(
                            libc::AT_FDCWD,
                            shadow as *const libc::c_char,
                            libc::O_RDONLY,
                        )
                    })
                }),
            ),
            (
                "open /etc/shadow",
                Box::new(move || {
                    lived(
                        // SAFETY: shadow is a NUL-terminated path, leaked.
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
            // SAFETY: the child of a probe returns into `under`, which _exits.
            ("fork", Box::new(|| lived(unsafe { libc::fork() }))),
            // SAFETY: no preconditions.
            ("getppid", Box::new(|| lived(unsafe { libc::getppid() }))),
        ]
    }

    /// The probes of [`escapes`] that did not die of SIGSYS under `progs`,
    /// with how they ended (Ok(exit code) or Err(signal)): empty when
    /// every escape kills the process.
    pub fn survivors(progs: &[BpfProgram]) -> Vec<String> {
        escapes()
            .iter()
            .map(|(name, probe)| (name, under(progs, probe)))
            .filter(|(_, end)| *end != Err(libc::SIGSYS))
            .map(|(name, end)| format!("{name}: {end:?}"))
            .collect()
    }
}
