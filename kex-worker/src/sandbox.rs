//! Confinement of the pre-auth worker: an empty chroot, the privsep user,
//! no_new_privs, and a seccomp allow-list that kills on anything else.

use std::collections::BTreeMap;
use std::path::Path;

use nix::unistd::{chdir, chroot};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

/// Drops to `uid`/`gid` inside `root` (when running as root).
pub fn drop_privileges(root: &Path, uid: u32, gid: u32) -> Result<(), String> {
    chroot(root).map_err(|e| format!("chroot {}: {e}", root.display()))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    ressh_ipc::harden::become_user(uid, gid, &[gid])?;
    // Kex workers share the privsep user: none may trace another.
    ressh_ipc::harden::non_dumpable()
}

/// Sets no_new_privs and installs the seccomp filter.
pub fn confine() -> Result<(), String> {
    // SAFETY: prctl with these constant arguments has no memory effects.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if r != 0 {
        return Err(format!(
            "PR_SET_NO_NEW_PRIVS: {}",
            std::io::Error::last_os_error()
        ));
    }
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
        libc::SYS_fcntl,
        libc::SYS_setsockopt,
        libc::SYS_getsockopt,
        libc::SYS_sched_yield,
    ];
    let rules: BTreeMap<i64, Vec<SeccompRule>> = allowed.iter().map(|&n| (n, Vec::new())).collect();
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| format!("seccomp: {e}"))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        arch,
    )
    .map_err(|e| format!("seccomp: {e}"))?;
    let prog: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("seccomp: {e}"))?;
    seccompiler::apply_filter(&prog).map_err(|e| format!("seccomp: {e}"))?;
    Ok(())
}
