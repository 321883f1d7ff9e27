//! Runs the helper commands the configuration names (AuthorizedKeysCommand,
//! later AuthorizedPrincipalsCommand) for the monitor, as OpenSSH's
//! `subprocess()` (misc.c) does, and with the bounds sshd lacks.
//!
//! As sshd: the program must be an absolute path to a regular file that,
//! with every directory above it, is owned by root and writable by neither
//! group nor others; it runs as the given user (its groups from the group
//! database when resshd is root), with stdin on /dev/null, a minimal
//! environment (`PATH`, `USER`, `LOGNAME`, `HOME`, and `LANG` if resshd has
//! it) and default signal dispositions; no other descriptor reaches it.
//!
//! Unlike sshd, which waits for ever and reads without limit, the runner
//! bounds the command: [`Limits::timeout`] for the whole run (the command's
//! process group is then killed with SIGKILL), [`Limits::max_output`] bytes
//! of output and [`Limits::max_line`] bytes a line. A command over any
//! bound, or exiting other than with status 0, yields an error and none of
//! its output: what it printed is never half-believed. Its stderr goes to
//! the log, at most [`STDERR_LOGGED`] bytes of it (sshd discards it).
//!
//! Each connection has its own monitor process (resshd forks one per
//! connection), so a command that hangs holds up that login only, for at
//! most the timeout.

use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::User;

use crate::log;

/// At most this many bytes of a command's stderr are logged.
pub const STDERR_LOGGED: usize = 4096;

/// The bounds of one run.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// For the whole run, from start to exit.
    pub timeout: Duration,
    /// Total bytes on stdout.
    pub max_output: usize,
    /// Bytes in one line of stdout (its newline excluded).
    pub max_line: usize,
}

/// Runs `argv` (`argv[0]` the program) as `user` within `limits`; `tag`
/// names the command in messages ("AuthorizedKeysCommand"). Ok with
/// everything the command wrote to stdout if it exited with status 0 within
/// the limits; Err with the reason otherwise (to be logged by the caller).
pub fn run(tag: &str, argv: &[String], user: &User, limits: &Limits) -> Result<Vec<u8>, String> {
    let Some(program) = argv.first() else {
        return Err(format!("{tag} yielded no arguments"));
    };
    let path = Path::new(program);
    if !path.is_absolute() {
        return Err(format!("{tag} path is not absolute"));
    }
    crate::authkeys::secure_path(path, 0, Path::new("/"))
        .map_err(|e| format!("Unsafe {tag} \"{program}\": {e}"))?;
    let root = nix::unistd::geteuid().is_root();
    if !root && nix::unistd::geteuid() != user.uid {
        return Err(format!(
            "{tag}: cannot run as {} (resshd does not run as root)",
            user.name
        ));
    }
    let groups: Vec<libc::gid_t> = if root {
        crate::monitor::user_groups(user)
    } else {
        Vec::new()
    };
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    let mut cmd = Command::new(path);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .env("USER", &user.name)
        .env("LOGNAME", &user.name)
        .env("HOME", &user.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(lang) = std::env::var_os("LANG") {
        cmd.env("LANG", lang);
    }
    // SAFETY: only async-signal-safe calls (signal, setgroups, setresgid,
    // setresuid, fcntl) on memory allocated before the fork.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            for sig in 1..32 {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            ressh_ipc::harden::cloexec_from(3)?;
            if root
                && (libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setresgid(gid, gid, gid) != 0
                    || libc::setresuid(uid, uid, uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let deadline = started + limits.timeout;
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{tag}: cannot run \"{program}\": {e}"))?;
    let result = collect(&mut child, deadline, limits);
    if result.is_err() {
        kill_group(&child);
    }
    let (stdout, stderr) = match result {
        Ok(r) => r,
        Err(why) => {
            let _ = child.wait();
            return Err(format!("{tag} \"{program}\": {why}; its output is ignored"));
        }
    };
    log_stderr(tag, &stderr);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                kill_group(&child);
                let _ = child.wait();
                return Err(format!(
                    "{tag} \"{program}\": timed out after {} s; its output is ignored",
                    limits.timeout.as_secs()
                ));
            }
            Err(e) => return Err(format!("{tag}: wait: {e}")),
        }
    };
    if let Some(sig) = status.signal() {
        return Err(format!("{tag} \"{program}\" killed by signal {sig}"));
    }
    match status.code() {
        Some(0) => Ok(stdout),
        Some(c) => Err(format!("{tag} \"{program}\" exited with status {c}")),
        None => Err(format!("{tag} \"{program}\" ended abnormally")),
    }
}

fn kill_group(child: &Child) {
    // The child leads its own process group (process_group(0)).
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

fn log_stderr(tag: &str, stderr: &[u8]) {
    for line in stderr.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        log::info(&format!(
            "{tag} stderr: {}",
            ressh_proto::wire::printable(line)
        ));
    }
}

fn nonblocking(fd: std::os::fd::BorrowedFd<'_>) -> Result<(), String> {
    let fl = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(|e| format!("fcntl: {e}"))?;
    fcntl(
        fd.as_raw_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_retain(fl) | OFlag::O_NONBLOCK),
    )
    .map_err(|e| format!("fcntl: {e}"))?;
    Ok(())
}

/// Reads the child's stdout and stderr to their ends within the limits.
fn collect(
    child: &mut Child,
    deadline: Instant,
    limits: &Limits,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    for fd in [
        out_pipe.as_ref().map(|p| p.as_fd()),
        err_pipe.as_ref().map(|p| p.as_fd()),
    ]
    .into_iter()
    .flatten()
    {
        nonblocking(fd)?;
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut line_len = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while out_pipe.is_some() || err_pipe.is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("timed out after {} s", limits.timeout.as_secs()));
        }
        let wait = PollTimeout::try_from(left.as_millis().min(60_000) as i32 + 1)
            .unwrap_or(PollTimeout::MAX);
        let mut fds = Vec::with_capacity(2);
        if let Some(p) = &out_pipe {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        if let Some(p) = &err_pipe {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, wait) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        drop(fds);
        if let Some(p) = &mut out_pipe {
            match p.read(&mut buf) {
                Ok(0) => out_pipe = None,
                Ok(n) => {
                    if out.len() + n > limits.max_output {
                        return Err(format!("output exceeds {} bytes", limits.max_output));
                    }
                    for &b in &buf[..n] {
                        line_len = if b == b'\n' { 0 } else { line_len + 1 };
                        if line_len > limits.max_line {
                            return Err(format!("a line exceeds {} bytes", limits.max_line));
                        }
                    }
                    out.extend_from_slice(&buf[..n]);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        if let Some(p) = &mut err_pipe {
            match p.read(&mut buf) {
                Ok(0) => err_pipe = None,
                Ok(n) => {
                    let room = STDERR_LOGGED.saturating_sub(err.len());
                    err.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
    Ok((out, err))
}
