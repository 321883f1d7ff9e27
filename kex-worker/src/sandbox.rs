//! Confinement of the pre-auth worker: an empty chroot, the privsep user,
//! no_new_privs, and a seccomp allow-list that kills on anything else
//! (the mechanism is ressh_ipc::sandbox, shared with the fleet link
//! processes; the list is the worker's own).
#![cfg_attr(test, allow(unsafe_code))] // its tests call raw system calls under the filter

use ressh_ipc::sandbox::{allow_list, only_with, BpfProgram, BASE};
pub use ressh_ipc::sandbox::{drop_privileges, Error};

/// Sets no_new_privs and installs the seccomp filter.
pub fn confine() -> Result<(), Error> {
    ressh_ipc::sandbox::install(&[filter()?])
}

/// The allow-list: anything else kills the process (SIGSYS).
fn filter() -> Result<BpfProgram, Error> {
    // fcntl only as std uses it (F_GETFD, checking a descriptor it closes):
    // nothing that could route signals (F_SETOWN, F_SETSIG, O_ASYNC via
    // F_SETFL), take leases or locks, or duplicate descriptors. The kernel
    // reads the command as a 32-bit int: so does the rule.
    allow_list(
        BASE,
        [only_with(libc::SYS_fcntl, 1, &[libc::F_GETFD as u64])?],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `probe` in a forked child under the kex worker's filter,
    /// installed as `confine` installs it: Ok(exit code) or Err(signal).
    fn under_filter(probe: impl Fn() -> libc::c_int) -> Result<i32, i32> {
        ressh_ipc::sandbox::probe::under(&[filter().unwrap()], probe)
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

    /// What an attacker who runs code in the worker would try first
    /// (ressh_ipc::sandbox::probe::escapes): each kills the worker
    /// outright (the filter's action is KillProcess), so none returns an
    /// error it could go on from.
    #[test]
    fn escapes_from_the_worker_are_killed_by_sigsys() {
        let survived = ressh_ipc::sandbox::probe::survivors(&[filter().unwrap()]);
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
