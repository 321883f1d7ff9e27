//! Running commands with a time limit, finding binaries, root checks, process trees.

use std::env;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Time limit of [`run`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the output pipes may stay open after the child itself has exited (a
/// grandchild that inherited them), before its process group is killed.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// Directories searched after `$PATH`: a test run by a non-login root shell may lack the
/// sbin directories where `useradd` and `sshd` live.
const SYSTEM_DIRS: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Whether the effective uid is 0 (read from `/proc/self/status`).
pub fn is_root() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// Panics unless running as root. Call it first in every test that creates users,
/// starts sshd or touches the network stack: such a test must fail, not pass empty.
pub fn require_root() {
    if !is_root() {
        panic!(
            "this test needs root (it creates Unix users, runs sshd or changes the network); \
             run the suite as root, e.g. `sudo .ci/run`"
        );
    }
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Finds an executable: `name` itself if it contains a `/`, else the first match in
/// `$PATH` followed by the usual system bin and sbin directories.
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(SYSTEM_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// Like [`which`], but panics with a clear message when the binary is missing.
pub fn require_cmd(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| {
        panic!(
            "required command `{name}` not found (searched $PATH and {}); install its Debian \
             package: `sudo .ci/run` installs everything the tests need",
            SYSTEM_DIRS.join(":")
        )
    })
}

/// Runs `cmd` to completion with stdin from `/dev/null`, capturing stdout and stderr,
/// and kills it after [`DEFAULT_TIMEOUT`]. See [`run_timeout`].
pub fn run(cmd: &mut Command) -> Output {
    run_inner(cmd, Io::Null, DEFAULT_TIMEOUT)
}

/// Runs `cmd` like [`run`] and panics (with its output) unless it exits with status 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    if !out.status.success() {
        panic!("{cmd:?} failed: {}\n{}", out.status, describe_output(&out));
    }
    out
}

/// Runs `cmd` with stdin from `/dev/null`, capturing stdout and stderr.
///
/// The child runs in its own process group. If it has not exited after `timeout`, it,
/// its process group and all its descendants are killed with SIGKILL and this function
/// panics, printing what the child wrote so far: a hung child fails its test instead of
/// hanging the suite. If the child
/// exits but something it started keeps the output pipes open for more than a few
/// seconds, that process group is killed too.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    run_inner(cmd, Io::Null, timeout)
}

/// Like [`run_timeout`], with stdin read from `input` and stdout written to `output`
/// (bulk data the test checks afterwards); the returned stdout is empty.
pub fn run_files(cmd: &mut Command, input: File, output: File, timeout: Duration) -> Output {
    run_inner(cmd, Io::Files(input, output), timeout)
}

/// The child's stdin and stdout.
enum Io<'a> {
    Null,
    Input(&'a [u8]),
    Files(File, File),
}

/// Like [`run_timeout`], with `input` written to the child's stdin, which is then closed.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8], timeout: Duration) -> Output {
    run_inner(cmd, Io::Input(input), timeout)
}

fn run_inner(cmd: &mut Command, io: Io<'_>, timeout: Duration) -> Output {
    let input = match io {
        Io::Null => {
            cmd.stdin(Stdio::null()).stdout(Stdio::piped());
            None
        }
        Io::Input(input) => {
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
            Some(input)
        }
        Io::Files(i, o) => {
            cmd.stdin(i).stdout(o);
            None
        }
    };
    cmd.stderr(Stdio::piped()).process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let pid = child.id();

    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        let input = input.to_vec();
        // A child that exits without reading gives EPIPE here: not an error of ours.
        thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let (tx, rx) = mpsc::channel::<(bool, Vec<u8>)>();
    let mut pending = 0;
    if let Some(out) = child.stdout.take() {
        read_in_thread(out, true, tx.clone());
        pending += 1;
    }
    if let Some(err) = child.stderr.take() {
        read_in_thread(err, false, tx.clone());
        pending += 1;
    }
    drop(tx);

    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => {
                thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(50));
            }
            Err(e) => panic!("waiting for {cmd:?}: {e}"),
        }
    };
    if status.is_none() {
        kill_tree(pid); // also what left the group with setsid
        kill_group(pid);
        let _ = child.kill();
        let _ = child.wait();
    }

    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut grace_end = Instant::now() + PIPE_GRACE;
    let mut group_killed = status.is_none();
    while pending > 0 {
        match rx.recv_timeout(grace_end.saturating_duration_since(Instant::now())) {
            Ok((true, buf)) => (stdout, pending) = (buf, pending - 1),
            Ok((false, buf)) => (stderr, pending) = (buf, pending - 1),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) if !group_killed => {
                // The child exited but a process it left behind holds the pipes open.
                kill_group(pid);
                group_killed = true;
                grace_end = Instant::now() + Duration::from_secs(1);
            }
            // Someone outside the group holds the pipes (it called setsid): give up on
            // the rest of the output rather than hang.
            Err(mpsc::RecvTimeoutError::Timeout) => break,
        }
    }

    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => {
            let out = Output {
                status: std::process::ExitStatus::default(),
                stdout,
                stderr,
            };
            panic!(
                "{cmd:?} did not finish within {timeout:?}; killed its process group.\n{}",
                describe_output(&out)
            )
        }
    }
}

/// Reads `reader` to its end in a new thread and sends `(tag, bytes)` on `tx`.
fn read_in_thread(
    mut reader: impl Read + Send + 'static,
    tag: bool,
    tx: mpsc::Sender<(bool, Vec<u8>)>,
) {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = reader.read_to_end(&mut buf);
        let _ = tx.send((tag, buf));
    });
}

pub(crate) fn describe_output(out: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// SIGKILLs every process in process group `pgid`; errors (no such group) are ignored.
pub(crate) fn kill_group(pgid: u32) {
    signal_pids("KILL", &[format!("-{pgid}")]);
}

/// Sends `signal` (`"KILL"`, `"STOP"`, ...) to the given pids (or `-pgid`s) with kill(1);
/// errors (no such process) are ignored.
pub(crate) fn signal_pids(signal: &str, targets: &[String]) {
    if targets.is_empty() {
        return;
    }
    let Some(kill) = which("kill") else { return };
    let _ = Command::new(kill)
        .arg(format!("-{signal}"))
        .arg("--")
        .args(targets)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The state letter of a process (`R`, `S`, `T`, `Z`, ...) from `/proc/<pid>/stat`.
fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// `(pid, ppid)` of every process, read from `/proc`.
fn process_links() -> Vec<(u32, u32)> {
    let mut links = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                links.push((pid, ppid));
            }
        }
    }
    links
}

/// All descendants of `root` (children, their children, ...), read from `/proc`.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    for (p, pp) in process_links() {
        children.entry(pp).or_default().push(p);
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        if let Some(c) = children.get(&found[i]) {
            found.extend(c);
        }
        i += 1;
    }
    found.remove(0);
    found
}

/// SIGKILLs `root` and every process below it. The tree is frozen first (SIGSTOP,
/// level by level, until a scan finds no new process), because a process still forking
/// while its parent is killed would escape: its child is re-parented and can no longer
/// be found from `root`. `root` itself is not reaped here.
pub fn kill_tree(root: u32) {
    let stopped = |pid: u32| !matches!(proc_state(pid), Some('R' | 'S' | 'D' | 'I' | 'W'));
    let mut frozen = vec![root];
    signal_pids("STOP", &[root.to_string()]);
    for _ in 0..100 {
        // SIGSTOP is asynchronous: wait (briefly) until it has taken effect.
        let until = Instant::now() + Duration::from_millis(200);
        while !frozen.iter().all(|&p| stopped(p)) && Instant::now() < until {
            thread::sleep(Duration::from_millis(1));
        }
        let new: Vec<u32> = descendants(root)
            .into_iter()
            .filter(|p| !frozen.contains(p))
            .collect();
        if new.is_empty() {
            break;
        }
        signal_pids("STOP", &new.iter().map(u32::to_string).collect::<Vec<_>>());
        frozen.extend(new);
    }
    signal_pids(
        "KILL",
        &frozen.iter().map(u32::to_string).collect::<Vec<_>>(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_captures_output_and_status() {
        let out = run(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 4"]));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status.code(), Some(4));
    }

    #[test]
    fn run_with_stdin_feeds_input() {
        let out = run_with_stdin(&mut Command::new("cat"), b"abc", Duration::from_secs(10));
        assert_eq!(out.stdout, b"abc");
    }

    #[test]
    fn run_timeout_kills_and_panics() {
        let started = Instant::now();
        let result = std::panic::catch_unwind(|| {
            run_timeout(
                Command::new("sh").args(["-c", "sleep 30 & sleep 30; wait"]),
                Duration::from_millis(300),
            )
        });
        assert!(result.is_err(), "a hung child must make run_timeout panic");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn run_does_not_wait_for_leftover_grandchild() {
        let started = Instant::now();
        // The background sleep keeps stdout open after sh exits.
        let out = run(Command::new("sh").args(["-c", "sleep 30 & echo done"]));
        assert!(out.status.success());
        assert_eq!(out.stdout, b"done\n");
        assert!(started.elapsed() < Duration::from_secs(15));
    }

    #[test]
    fn which_finds_sh_and_not_nonsense() {
        assert!(which("sh").is_some());
        assert!(which("ressh-no-such-binary-here").is_none());
        let r = std::panic::catch_unwind(|| require_cmd("ressh-no-such-binary-here"));
        assert!(r.is_err());
    }
}
