//! The system calls of the client that neither std nor nix wraps safely,
//! each behind a safe function: going to the background (fork), a proxy
//! command's SIGHUP, pidfds,
//! and TCP_INFO.
#![allow(unsafe_code)] // fork, _exit, pre_exec, pidfd_open, pidfd_send_signal and TCP_INFO need it

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::unistd::ForkResult;

/// -f: forks; the parent exits 0 at once (or runs `job` and exits with
/// its result: ControlPersist's session through the master the child
/// becomes) and the child carries on in a
/// new session, stdin and stdout (and stderr unless `keep_stderr`) on
/// /dev/null (best effort, as ssh: the child goes on without). Returns in
/// the child only, or with the error of fork. The caller must be the only
/// thread (ressh never starts one).
pub fn go_background(keep_stderr: bool, job: Option<Box<dyn FnOnce() -> i32>>) -> io::Result<()> {
    // SAFETY: ressh is single-threaded (the caller's contract), so the
    // child is a complete copy: no lock held by another thread, no state
    // half-written.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { .. } => {
            let code = job.map_or(0, |j| {
                // The job starts afresh: the connection, its listeners and
                // the event loop are the child's now. Holding copies would
                // keep a replaced connection from closing.
                close_inherited();
                j()
            });
            // SAFETY: _exit ends the process at once and cannot fail. It
            // skips destructors on purpose: they would end the session the
            // child now owns (DISCONNECT, the proxy command's SIGHUP).
            unsafe { libc::_exit(code) }
        }
        ForkResult::Child => {}
    }
    // A child is no process group leader: setsid cannot fail.
    let _ = nix::unistd::setsid();
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null");
    if let Ok(null) = null {
        let to: &[i32] = if keep_stderr { &[0, 1] } else { &[0, 1, 2] };
        for &fd in to {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
    Ok(())
}

/// Closes the descriptors above stderr that belong to the connection and
/// the event loop (the parent of [`go_background`], whose owners of them
/// never run again): all but connected Unix-domain sockets, which the
/// signal handlers write to (closing those could hand their numbers to a
/// new socket the handlers would then write into).
fn close_inherited() {
    use nix::sys::socket::SockaddrStorage;
    use nix::sys::socket::{getsockname, getsockopt, sockopt, AddressFamily, SockaddrLike};
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    // Listed first: closing while reading the directory would close its
    // own descriptor.
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: `fd` is open (listed above) and only borrowed here.
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        let unix = getsockname::<SockaddrStorage>(fd)
            .ok()
            .and_then(|a| a.family())
            .is_some_and(|f| f == AddressFamily::Unix);
        let listening = getsockopt(&b, sockopt::AcceptConn).unwrap_or(false);
        if !unix || listening {
            let _ = nix::unistd::close(fd);
        }
    }
}

/// A pidfd of child `pid` (None on kernels without pidfd_open). The child
/// must not have been waited for, so that `pid` still names it.
pub fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes two integers and touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes `cmd` start with SIGHUP at its default action, whatever ressh
/// inherited (`nohup ressh ...` ignores it, and an ignored signal stays
/// ignored across exec): ressh ends a proxy command by hanging it up.
pub fn hangup_kills_on_exec(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only
    // calls signal(2), which is async-signal-safe; it touches no memory
    // shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::signal(libc::SIGHUP, libc::SIG_DFL) == libc::SIG_ERR {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sends `sig` to the process of `pidfd`.
pub fn pidfd_send_signal(pidfd: BorrowedFd, sig: i32) -> io::Result<()> {
    // SAFETY: integers and a null siginfo pointer, which the call allows
    // (it then fills in the info of kill(2)).
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel's TCP_INFO of socket `sock`, if it filled at least the
/// fields up to `tcpi_notsent_bytes` (older kernels fill less).
pub fn tcp_info(sock: &impl AsFd) -> Option<libc::tcp_info> {
    // SAFETY: tcp_info is plain old data, for which all zeroes is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which has
    // that many, and sets `len` to what it wrote.
    let r = unsafe {
        libc::getsockopt(
            sock.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_notsent_bytes) + 4;
    (r == 0 && len as usize >= needed).then_some(info)
}
