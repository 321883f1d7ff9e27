//! Shared helpers of resshd's end-to-end tests: a resshd started with the
//! testkit, stock OpenSSH clients pointed at it, real users and groups,
//! an echo server for forwarding, and /proc readers.
//!
//! Everything made here is removed on drop: the daemon and its children,
//! users, groups, temp dirs and background clients.

#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use ressh_testkit::{
    require_cmd, require_root, resshd_bin, run, run_timeout, ssh_keygen, Resshd, TempDir, TestUser,
};
pub use ressh_testkit::{text, wait_for};

/// How long one stock client command may take before it counts as hung.
pub const SSH_TIMEOUT: Duration = Duration::from_secs(60);

pub fn describe(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

// ----- the server ------------------------------------------------------------

/// resshd (via [`Resshd::start`]) plus a client-side known_hosts for it.
pub struct Server {
    pub resshd: Resshd,
    pub known_hosts: PathBuf,
    _dir: TempDir,
}

impl Server {
    /// Starts target/<profile>/resshd with `extra` sshd_config lines.
    pub fn start(extra: &str) -> Server {
        require_root();
        for c in ["ssh", "ssh-keygen"] {
            require_cmd(c);
        }
        let bin = resshd_bin();
        for b in ["resshd", "resshd-kex", "resshd-session"] {
            let p = bin.with_file_name(b);
            assert!(
                p.exists(),
                "{} is missing: run `cargo build --workspace` (or `cargo test --workspace`) \
                 so that resshd's workers are built next to it",
                p.display()
            );
        }
        let resshd = Resshd::start(&bin, extra);
        let dir = TempDir::new("e2e-client");
        let known_hosts = dir.join("known_hosts");
        fs::write(&known_hosts, resshd.server.known_hosts()).unwrap();
        Server {
            resshd,
            known_hosts,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.resshd.port()
    }

    /// resshd's pid (the listener/broker).
    pub fn pid(&self) -> u32 {
        self.resshd.server.pid()
    }

    pub fn log(&self) -> String {
        self.resshd.log()
    }

    /// The host private key file of `kind` (ed25519, rsa, ecdsa).
    pub fn host_key_file(&self, kind: &str) -> PathBuf {
        self.resshd
            .server
            .dir()
            .join(format!("ssh_host_{kind}_key"))
    }

    /// Waits until resshd's log satisfies `pred`; returns the log.
    pub fn wait_log(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.resshd.wait_log(what, timeout, pred)
    }

    /// No process of resshd panicked or was killed by a signal (a seccomp
    /// violation kills the kex worker), and resshd itself still runs.
    pub fn assert_healthy(&self) {
        let log = self.log();
        assert!(
            !log.contains("panicked"),
            "a resshd process panicked:\n{log}"
        );
        assert!(
            !log.contains("killed by signal"),
            "a resshd worker was killed:\n{log}"
        );
        assert!(
            Path::new(&format!("/proc/{}", self.pid())).exists()
                && proc_state(self.pid()).is_some_and(|s| s != 'Z'),
            "resshd (pid {}) is gone:\n{log}",
            self.pid()
        );
    }

    /// Options for stock clients: no config, strict host key checking
    /// against this server's keys, only `key`, as `user`.
    pub fn client_opts(&self, user: &str, key: &Path) -> Vec<String> {
        [
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            &format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            &format!("IdentityFile={}", key.display()),
            "-o",
            &format!("User={user}"),
            "-o",
            "ConnectTimeout=20",
            "-o",
            "LogLevel=ERROR",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// `ssh` as `login` with `opts` before the host; append the command.
    pub fn ssh(&self, login: &Login, opts: &[&str]) -> Command {
        self.ssh_as(&login.user.name, &login.key, opts)
    }

    pub fn ssh_as(&self, user: &str, key: &Path, opts: &[&str]) -> Command {
        let mut c = Command::new(require_cmd("ssh"));
        c.args(self.client_opts(user, key)).args(opts).args([
            "-p",
            &self.port().to_string(),
            "127.0.0.1",
        ]);
        c
    }

    /// Runs `ssh ... command` to completion (bounded).
    pub fn exec(&self, login: &Login, command: &str) -> Output {
        run_timeout(self.ssh(login, &[]).arg(command), SSH_TIMEOUT)
    }

    /// Runs `command` and asserts it exits 0; returns its stdout.
    pub fn exec_ok(&self, login: &Login, command: &str) -> String {
        let out = self.exec(login, command);
        assert!(
            out.status.success(),
            "ssh {command:?} failed\n{}\n--- resshd log ---\n{}",
            describe(&out),
            self.log()
        );
        text(&out.stdout)
    }

    /// The ssh command line as one shell string (for tmux).
    pub fn ssh_shell_line(&self, login: &Login, opts: &[&str]) -> String {
        let mut parts = vec![require_cmd("ssh").display().to_string()];
        parts.extend(self.client_opts(&login.user.name, &login.key));
        parts.extend(opts.iter().map(|s| s.to_string()));
        parts.extend([
            "-p".to_string(),
            self.port().to_string(),
            "127.0.0.1".into(),
        ]);
        parts
            .iter()
            .map(|p| format!("'{}'", p.replace('\'', "'\\''")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn sftp(&self, login: &Login) -> Command {
        let mut c = Command::new(require_cmd("sftp"));
        c.args(self.client_opts(&login.user.name, &login.key))
            .args(["-P", &self.port().to_string()]);
        c
    }

    pub fn scp(&self, login: &Login) -> Command {
        let mut c = Command::new(require_cmd("scp"));
        c.args(self.client_opts(&login.user.name, &login.key))
            .args(["-P", &self.port().to_string()]);
        c
    }

    /// Pids of resshd's monitors (its direct children).
    /// Waits for a session worker below resshd; returns its pid.
    pub fn session_worker(&self) -> u32 {
        wait_for(
            "the session worker",
            Duration::from_secs(20),
            || {
                descendants_named(self.pid(), "resshd-session")
                    .first()
                    .copied()
            },
            || self.log(),
        )
    }

    pub fn monitors(&self) -> Vec<u32> {
        children(self.pid())
    }
}

/// `ssh ... command` as `login`, bounded by [`SSH_TIMEOUT`].
pub fn run_ssh(srv: &Server, login: &Login, command: &str) -> Output {
    srv.exec(login, command)
}

/// A real user with an ed25519 key in ~/.ssh/authorized_keys.
pub struct Login {
    /// The private key the clients use.
    pub key: PathBuf,
    pub pub_line: String,
    pub dir: TempDir,
    // Dropped last: kills the user's processes and deletes the user.
    pub user: TestUser,
}

impl Login {
    pub fn new(prefix: &str) -> Login {
        let user = TestUser::create(prefix);
        let dir = TempDir::new(&format!("e2e-{prefix}"));
        let (key, pub_line) = ssh_keygen(dir.path(), "ed25519", "");
        user.authorize_key(&pub_line);
        Login {
            key,
            pub_line,
            dir,
            user,
        }
    }

    /// A new key of `kind` authorized with the authorized_keys `options`
    /// (may be empty); returns its private key file.
    pub fn add_key(&self, kind: &str, options: &str) -> PathBuf {
        let (key, pub_line) = ssh_keygen(self.dir.path(), kind, "");
        if options.is_empty() {
            self.user.authorize_key(&pub_line);
        } else {
            self.user.authorize_key(&format!("{options} {pub_line}"));
        }
        key
    }

    /// A new key of `kind` that is NOT authorized.
    pub fn stray_key(&self, kind: &str) -> PathBuf {
        ssh_keygen(self.dir.path(), kind, "").0
    }

    /// The same user with another key.
    pub fn with_key<'a>(&'a self, key: &'a Path) -> KeyedLogin<'a> {
        KeyedLogin { login: self, key }
    }
}

pub struct KeyedLogin<'a> {
    pub login: &'a Login,
    pub key: &'a Path,
}

impl Server {
    pub fn ssh_key(&self, k: &KeyedLogin<'_>, opts: &[&str]) -> Command {
        self.ssh_as(&k.login.user.name, k.key, opts)
    }
}

// ----- groups ------------------------------------------------------------------

static GROUP_SEQ: AtomicU32 = AtomicU32::new(0);

/// A real group made with groupadd; removed (groupdel) on drop.
pub struct TestGroup {
    pub name: String,
    pub gid: u32,
}

/// Runs a shadow tool, retrying while another one holds the databases' lock.
fn shadow(make: impl Fn() -> Command) -> Output {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = run(&mut make());
        if out.status.success() || !text(&out.stderr).contains("lock") || Instant::now() >= deadline
        {
            return out;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

impl TestGroup {
    pub fn create(prefix: &str) -> TestGroup {
        require_root();
        let name = format!(
            "rtg{prefix}_{}_{}",
            std::process::id(),
            GROUP_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let out = shadow(|| {
            let mut c = Command::new(require_cmd("groupadd"));
            c.arg(&name);
            c
        });
        assert!(out.status.success(), "groupadd {name}: {}", describe(&out));
        let out = run(Command::new(require_cmd("getent")).args(["group", &name]));
        let line = text(&out.stdout);
        let gid = line
            .split(':')
            .nth(2)
            .and_then(|g| g.trim().parse().ok())
            .unwrap_or_else(|| panic!("getent group {name}: {line:?}"));
        TestGroup { name, gid }
    }

    /// Adds `user` to this group as a supplementary group.
    pub fn add(&self, user: &TestUser) {
        let out = shadow(|| {
            let mut c = Command::new(require_cmd("usermod"));
            c.args(["-a", "-G", &self.name, &user.name]);
            c
        });
        assert!(
            out.status.success(),
            "usermod -aG {} {}: {}",
            self.name,
            user.name,
            describe(&out)
        );
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let out = shadow(|| {
            let mut c = Command::new(require_cmd("groupdel"));
            c.arg(&self.name);
            c
        });
        // 6: no such group.
        if !out.status.success() && out.status.code() != Some(6) {
            let msg = format!("groupdel {}: {}", self.name, describe(&out));
            if thread::panicking() {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}

// ----- background processes ------------------------------------------------------

/// A background child in its own process group; the group is killed on drop.
pub struct Bg {
    pub child: Child,
    pub stderr_path: PathBuf,
    _dir: TempDir,
}

impl Bg {
    /// Starts `cmd` with stdin and stdout from/to /dev/null and stderr to a file.
    pub fn spawn(cmd: &mut Command) -> Bg {
        let dir = TempDir::new("e2e-bg");
        let stderr_path = dir.join("stderr");
        let f = fs::File::create(&stderr_path).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Bg {
            child,
            stderr_path,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Some(status) once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    pub fn signal(&self, sig: i32) {
        let sig = Signal::try_from(sig).expect("a signal number");
        kill(Pid::from_raw(self.child.id() as i32), sig).expect("kill");
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let pg = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(pg, Signal::SIGCONT);
        let _ = killpg(pg, Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A long-running `ssh ... command` with its stdin open: started before
/// some trouble, finished after it, to show that the session lived on.
pub struct LiveSession {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
}

impl LiveSession {
    pub fn start(mut cmd: Command) -> LiveSession {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let mut so = child.stdout.take().unwrap();
        let mut se = child.stderr.take().unwrap();
        let out = thread::spawn(move || {
            let mut v = Vec::new();
            let _ = so.read_to_end(&mut v);
            v
        });
        let err = thread::spawn(move || {
            let mut v = Vec::new();
            let _ = se.read_to_end(&mut v);
            v
        });
        LiveSession {
            child,
            stdin,
            out: Some(out),
            err: Some(err),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Writes `input`, closes stdin, and waits (bounded) for the end.
    pub fn finish(mut self, input: &[u8]) -> Output {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.write_all(input);
        }
        let deadline = Instant::now() + SSH_TIMEOUT;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
                let _ = self.child.wait();
                panic!("the live session did not finish within {SSH_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(20));
        };
        let stdout = self.out.take().unwrap().join().unwrap();
        let stderr = self.err.take().unwrap().join().unwrap();
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

// ----- TCP -----------------------------------------------------------------------------

/// An echo server on 127.0.0.1 (one thread per connection), stopped on drop.
pub struct EchoServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    pub fn start() -> EchoServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        thread::spawn(move || {
                            let mut r = c.try_clone().unwrap();
                            let mut w = c;
                            let _ = std::io::copy(&mut r, &mut w);
                            let _ = w.shutdown(std::net::Shutdown::Write);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        EchoServer {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    openssl::rand::rand_bytes(&mut v).unwrap();
    v
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn sha256_file(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = openssl::sha::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finish())
}

/// Sends `data` to 127.0.0.1:`port` and reads back as many bytes (the
/// peer is an echo), with a writer thread so neither side stalls.
pub fn echo_round_trip(port: u16, data: &[u8]) -> Vec<u8> {
    let sock = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut w = sock.try_clone().unwrap();
    let data2 = data.to_vec();
    let writer = thread::spawn(move || {
        w.write_all(&data2).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = Vec::with_capacity(data.len());
    let mut r = sock;
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < data.len() {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "reading the echo through 127.0.0.1:{port} after {} of {} bytes: {e}",
                got.len(),
                data.len()
            ),
        }
    }
    writer.join().unwrap();
    got
}

/// Reads from `sock` until the server closes it (EOF or reset); panics if
/// that takes longer than `timeout`. Returns what was read.
pub fn read_until_closed(sock: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return got, // reset: closed too
        }
        assert!(
            Instant::now() < deadline,
            "the server did not close the connection within {timeout:?}"
        );
    }
}

/// Waits until 127.0.0.1:`port` accepts a TCP connection.
pub fn wait_listening(port: u16, context: impl Fn() -> String) {
    wait_for(
        &format!("127.0.0.1:{port} to accept connections"),
        Duration::from_secs(20),
        || TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()),
        context,
    );
}

// ----- /proc -----------------------------------------------------------------------------

pub fn proc_status(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

/// The value of `Key:` in /proc/PID/status, trimmed ("" if absent).
pub fn status_field(pid: u32, key: &str) -> String {
    proc_status(pid)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Whitespace-separated numbers of a status field (Uid:, Gid:, Groups:).
pub fn status_ids(pid: u32, key: &str) -> Vec<u32> {
    status_field(pid, key)
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

pub fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

pub fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Alive and not a zombie.
pub fn alive(pid: u32) -> bool {
    proc_state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// `(pid, ppid)` of every process.
fn links() -> Vec<(u32, u32)> {
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        if let Some(ppid) = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
        {
            v.push((pid, ppid));
        }
    }
    v
}

/// Live (non-zombie) children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    links()
        .into_iter()
        .filter(|(_, pp)| *pp == pid)
        .map(|(p, _)| p)
        .filter(|p| alive(*p))
        .collect()
}

pub fn ppid(pid: u32) -> Option<u32> {
    links()
        .into_iter()
        .find(|(p, _)| *p == pid)
        .map(|(_, pp)| pp)
}

/// Live descendants of `root` whose comm is `name`.
pub fn descendants_named(root: u32, name: &str) -> Vec<u32> {
    let l = links();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(l.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
        .into_iter()
        .filter(|p| alive(*p) && comm(*p) == name)
        .collect()
}

/// Where each open fd of `pid` points (readlink /proc/PID/fd/N).
pub fn fd_targets(pid: u32) -> Vec<String> {
    let dir = format!("/proc/{pid}/fd");
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
    entries
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .collect()
}

/// Scans every readable mapping of `pid` for `needle` through
/// /proc/PID/mem. Returns whether it was found and how many bytes were read.
pub fn memory_contains(pid: u32, needle: &[u8]) -> (bool, u64) {
    assert!(!needle.is_empty());
    let maps = fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/maps: {e}"));
    let mem = fs::File::open(format!("/proc/{pid}/mem"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/mem: {e}"));
    let mut scanned = 0u64;
    const CHUNK: u64 = 1 << 20;
    let overlap = needle.len() as u64 - 1;
    let mut buf = vec![0u8; (CHUNK + overlap) as usize];
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vvar_vclock]") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        let mut pos = start;
        while pos < end {
            let len = (end - pos).min(CHUNK + overlap) as usize;
            let n = match mem.read_at(&mut buf[..len], pos) {
                Ok(n) if n > 0 => n,
                _ => break,
            };
            scanned += n as u64;
            if buf[..n].windows(needle.len()).any(|w| w == needle) {
                return (true, scanned);
            }
            if (n as u64) <= overlap {
                break;
            }
            pos += n as u64 - overlap;
            if pos + overlap >= end {
                break;
            }
        }
    }
    (false, scanned)
}

/// The 32-byte private seed of an OpenSSH ed25519 private key file.
pub fn ed25519_seed(path: &Path) -> Vec<u8> {
    let pem = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let k = ressh_proto::keys::PrivateKey::from_openssh_pem(&pem)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let seed = k.pkey().raw_private_key().unwrap();
    assert_eq!(seed.len(), 32);
    seed
}
