//! Starting the user's commands: the login shell, `shell -c command`, with a
//! pty or with pipes, in a new session.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::unistd::Pid;

/// What to run.
pub struct Spec<'a> {
    /// The shell binary (absolute path).
    pub shell: &'a str,
    /// `shell -c command`; None runs the shell as a login shell.
    pub command: Option<&'a [u8]>,
    pub env: &'a [(String, Vec<u8>)],
    pub home: &'a str,
    /// With a pty: its slave becomes stdin, stdout, stderr and the
    /// controlling terminal.
    pub pty_slave: Option<&'a OwnedFd>,
    /// Inside ChrootDirectory: a missing home directory is not reported
    /// (sshd's behaviour), the child starts in `/`.
    pub chrooted: bool,
}

/// A started child and this side's ends of its pipes (non-blocking).
pub struct Spawned {
    pub pid: Pid,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// An in-process child's log lines ([`spawn_in_process`]).
    pub log: Option<OwnedFd>,
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(
        std::os::fd::AsRawFd::as_raw_fd(fd),
        FcntlArg::F_GETFL,
    )?);
    fcntl(
        std::os::fd::AsRawFd::as_raw_fd(fd),
        FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK),
    )?;
    Ok(())
}

/// Bytes a child's stdin and stdout pipes hold (64 KiB by default): bulk
/// transfers then wake this process and the child 16 times less often.
/// `/proc/sys/fs/pipe-max-size` allows 1 MiB to anyone; past the per-user
/// pipe budget the kernel refuses, and the pipe keeps its size.
const PIPE_SIZE: libc::c_int = 1 << 20;

/// Best effort: a failure leaves the pipe as it was.
fn grow_pipe(fd: &OwnedFd) {
    let _ = nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(fd),
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE),
    );
}

fn basename(path: &str) -> &str {
    path.rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(path)
}

/// Signals 1..NSIG exist on Linux (64 of them).
const NSIG: libc::c_int = 65;

/// A short text for the errors chdir can give (strerror is not safe after fork).
fn chdir_error_text(errno: i32) -> &'static [u8] {
    match errno {
        libc::ENOENT => b"No such file or directory\n",
        libc::EACCES => b"Permission denied\n",
        libc::ENOTDIR => b"Not a directory\n",
        _ => b"Error\n",
    }
}

/// What every child does first, in the forked process (so only
/// async-signal-safe calls, on data prepared before the fork): lead a new
/// session, take the pty as controlling terminal, chdir home (else `/`,
/// with sshd's message on stderr unless `quiet`), default signal
/// dispositions and an empty signal mask.
#[allow(unsafe_code)] // raw system calls between fork and exec
fn setup(with_pty: bool, home: &CStr, msg: &[u8], quiet: bool) -> io::Result<()> {
    // SAFETY: async-signal-safe calls on valid pointers to data the caller
    // owns; sigemptyset initializes the zeroed set before it is used.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        if with_pty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::chdir(home.as_ptr()) != 0 {
            let errno = *libc::__errno_location();
            if !quiet {
                let text = chdir_error_text(errno);
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::write(2, text.as_ptr().cast(), text.len());
            }
            libc::chdir(c"/".as_ptr());
        }
        for sig in 1..NSIG {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
    Ok(())
}

/// The home directory as a C string, and sshd's message for a failed chdir.
fn home_dir(spec: &Spec<'_>) -> (CString, Vec<u8>) {
    let home = CString::new(spec.home).unwrap_or_else(|_| CString::from(c"/"));
    let mut msg = b"Could not chdir to home directory ".to_vec();
    msg.extend_from_slice(spec.home.as_bytes());
    msg.extend_from_slice(b": ");
    (home, msg)
}

/// Starts the child. Between fork and exec only async-signal-safe calls run:
/// [`setup`], and every descriptor above stderr close-on-exec.
#[allow(unsafe_code)] // pre_exec (the child's session, terminal and credentials)
pub fn spawn(spec: &Spec<'_>) -> io::Result<Spawned> {
    let mut cmd = Command::new(spec.shell);
    match spec.command {
        Some(c) => {
            cmd.arg0(basename(spec.shell));
            cmd.arg("-c").arg(OsStr::from_bytes(c));
        }
        None => {
            cmd.arg0(format!("-{}", basename(spec.shell)));
        }
    }
    cmd.env_clear();
    for (n, v) in spec.env {
        cmd.env(n, OsStr::from_bytes(v));
    }
    let with_pty = spec.pty_slave.is_some();
    match spec.pty_slave {
        Some(slave) => {
            cmd.stdin(Stdio::from(slave.try_clone()?))
                .stdout(Stdio::from(slave.try_clone()?))
                .stderr(Stdio::from(slave.try_clone()?));
        }
        None => {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
    }
    let (home, msg) = home_dir(spec);
    let quiet = spec.chrooted;
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            setup(with_pty, &home, &msg, quiet)?;
            // Only stdin, stdout and stderr reach the user's command:
            // nothing this process holds or inherited without close-on-exec.
            ressh_ipc::harden::cloexec_from(3)
        });
    }
    let mut child = cmd.spawn()?;
    // Drop the Command now: it holds this side's copies of the pty slave.
    drop(cmd);
    let pid = Pid::from_raw(child.id() as i32);
    let stdin = child.stdin.take().map(OwnedFd::from);
    let stdout = child.stdout.take().map(OwnedFd::from);
    let stderr = child.stderr.take().map(OwnedFd::from);
    finish(Spawned {
        pid,
        stdin,
        stdout,
        stderr,
        log: None,
    })
}

/// This side's ends made non-blocking, the pipes grown.
fn finish(s: Spawned) -> io::Result<Spawned> {
    for fd in [&s.stdin, &s.stdout, &s.stderr, &s.log]
        .into_iter()
        .flatten()
    {
        set_nonblocking(fd)?;
    }
    for fd in [&s.stdin, &s.stdout].into_iter().flatten() {
        grow_pipe(fd);
    }
    // The child is reaped by the event loop (waitpid on SIGCHLD); std's
    // handle is dropped without waiting.
    Ok(s)
}

/// The descriptor an in-process child writes its log lines to.
const LOG_FD: i32 = 3;

/// Runs `serve` in a forked child instead of executing a program (sshd's
/// in-process `internal-sftp`): the child is set up as [`spawn`]'s, keeps
/// a log pipe on descriptor 3 ([`Spawned::log`] reads it) and closes every
/// descriptor above it (the monitor link, the client's socket, the other
/// channels'), runs `serve` on its stdin and stdout as the user with the
/// log pipe, and exits with what it returns. Nothing is executed, so
/// nothing need exist inside a ChrootDirectory. This process has a single
/// thread, so the child may allocate.
#[allow(unsafe_code)] // fork(2), dup2(2), adopting descriptor 3, _exit(2)
pub fn spawn_in_process(
    spec: &Spec<'_>,
    serve: impl FnOnce(std::fs::File) -> i32,
) -> io::Result<Spawned> {
    use nix::unistd::{dup2, fork, pipe2, ForkResult};
    use std::os::fd::FromRawFd;
    let (log_r, log_w) = pipe2(OFlag::O_CLOEXEC)?;
    let with_pty = spec.pty_slave.is_some();
    // The child's stdin, stdout and stderr, and this side's pipe ends.
    let (child_ends, ours): (Vec<OwnedFd>, Option<[OwnedFd; 3]>) = match spec.pty_slave {
        Some(slave) => (
            vec![slave.try_clone()?, slave.try_clone()?, slave.try_clone()?],
            None,
        ),
        None => {
            let (i_r, i_w) = pipe2(OFlag::O_CLOEXEC)?;
            let (o_r, o_w) = pipe2(OFlag::O_CLOEXEC)?;
            let (e_r, e_w) = pipe2(OFlag::O_CLOEXEC)?;
            (vec![i_r, o_w, e_w], Some([i_w, o_r, e_r]))
        }
    };
    let (home, msg) = home_dir(spec);
    // SAFETY: this process has one thread, so the child may run any code;
    // it never returns from this function (it exits).
    match unsafe { fork() }? {
        ForkResult::Child => {
            let mut ok = true;
            for (to, from) in child_ends.iter().chain([&log_w]).enumerate() {
                ok &= dup2(from.as_raw_fd(), to as i32).is_ok();
            }
            ok = ok
                && setup(with_pty, &home, &msg, spec.chrooted).is_ok()
                && ressh_ipc::harden::close_from(LOG_FD + 1).is_ok();
            let code = if ok {
                // SAFETY: descriptor 3 is the log pipe just placed there;
                // nothing else in this child owns it.
                serve(unsafe { std::fs::File::from_raw_fd(LOG_FD) })
            } else {
                1
            };
            // SAFETY: ends the child without running this process's
            // atexit handlers or flushing buffers that belong to the parent.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(child_ends);
            drop(log_w);
            let (stdin, stdout, stderr) = match ours {
                Some([i, o, e]) => (Some(i), Some(o), Some(e)),
                None => (None, None, None),
            };
            finish(Spawned {
                pid: child,
                stdin,
                stdout,
                stderr,
                log: Some(log_r),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basenames() {
        assert_eq!(basename("/bin/bash"), "bash");
        assert_eq!(basename("sh"), "sh");
    }
}
