//! Shared set-up of the end-to-end tests: a lab (network namespaces with
//! resshd in the server namespace, a user with a key, an ssh_config for
//! ressh in the client namespace), background clients whose output is read
//! with arrival times, the counter program and its checker, timing
//! statistics, a recording TCP proxy and /proc readers.
//!
//! Everything made here is removed on drop: clients (their process
//! groups), daemons, users, temp dirs and namespaces.

#![allow(dead_code)]

pub use ressh_testkit::{peak_rss, random_file, rss, sha256_file, text, wait_for};
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

#[allow(unused_imports)]
pub use ressh_testkit::{
    free_port, require_cmd, require_netns, require_root, resshd_bin, run_files, run_ok,
    run_timeout, run_with_stdin, ssh_audit, ssh_keygen, Net, NewSsh, Resshd, Sshd, TempDir,
    TestUser, Tmux, SSHD_BIN, SSH_AUDIT_VERSION,
};

/// How long one short command (an exec, a small transfer) may take.
pub const T: Duration = Duration::from_secs(60);

/// The port resshd (or sshd) listens on inside a lab's server namespace.
pub const PORT: u16 = 22;

/// The client binary, next to resshd: `target/<profile>/ressh`.
pub fn ressh_bin() -> PathBuf {
    let bin = resshd_bin();
    for b in ["resshd", "resshd-kex", "resshd-session", "ressh"] {
        let p = bin.with_file_name(b);
        assert!(
            p.exists(),
            "{} is missing: run `cargo build --workspace` (or `cargo test --workspace`) so \
             that the binaries are built next to the tests",
            p.display()
        );
    }
    bin.with_file_name("ressh")
}

/// `known_hosts` lines for `server`'s three host keys as seen at
/// `[127.0.0.1]:port` (a proxy's port in front of it).
pub fn known_hosts_at(server: &Resshd, port: u16) -> String {
    ["ed25519", "rsa", "ecdsa"]
        .iter()
        .map(|kind| format!("[127.0.0.1]:{port} {}\n", server.server.host_key_pub(kind)))
        .collect()
}

/// Shell-quotes one word.
pub fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Runs `f` while another thread kills the client's connections to the
/// server every `every`; returns `f`'s result and when each kill hit
/// something.
pub fn with_kills<R>(net: &Net, every: Duration, f: impl FnOnce() -> R) -> (R, Vec<Instant>) {
    with_kills_on(net, PORT, every, f)
}

/// [`with_kills`] of the client's connections to the server's `port`
/// (a balancer's, a proxy's).
pub fn with_kills_on<R>(
    net: &Net,
    port: u16,
    every: Duration,
    f: impl FnOnce() -> R,
) -> (R, Vec<Instant>) {
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        let killer = scope.spawn(|| {
            let mut kills = Vec::new();
            let mut next = Instant::now() + every;
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now < next {
                    thread::sleep((next - now).min(Duration::from_millis(50)));
                    continue;
                }
                next += every;
                let t = Instant::now();
                if net.try_kill_tcp(port) > 0 {
                    kills.push(t);
                }
            }
            kills
        });
        // Stop the killer even if f panics.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let guard = Stop(&stop);
        let r = f();
        drop(guard);
        (r, killer.join().unwrap())
    })
}

// ----- the lab ---------------------------------------------------------------

/// A user with a key, and the ssh_config (`-F`) that makes ressh log in as
/// it to the host alias `server`.
pub struct Login {
    pub key: PathBuf,
    pub config: PathBuf,
    pub user: TestUser,
}

/// Writes an ssh_config for `user` with `key` at `path`: host alias
/// `server` is `hostname` port `port`, strict host key checking against
/// `known_hosts`, no agent, batch mode, and `extra` lines first (the first
/// value of a keyword wins).
pub fn write_client_config(
    path: &Path,
    user: &str,
    key: &Path,
    known_hosts: &Path,
    hostname: &str,
    port: u16,
    extra: &str,
) {
    fs::write(
        path,
        format!(
            "{extra}\nHost *\n    HostName {hostname}\n    Port {port}\n    User {user}\n    \
             IdentityFile {}\n    IdentitiesOnly yes\n    IdentityAgent none\n    \
             UserKnownHostsFile {}\n    GlobalKnownHostsFile none\n    \
             StrictHostKeyChecking yes\n    BatchMode yes\n    ConnectTimeout 20\n",
            key.display(),
            known_hosts.display()
        ),
    )
    .unwrap();
}

/// Client settings of the lab: keepalives every second, so a silent path is
/// noticed within about two seconds (PROTOCOL.md §4), and "connection lost" /
/// "reconnected" lines on stderr.
pub const CLIENT_EXTRA: &str = "ServerAliveInterval 1\nLogLevel VERBOSE\n";

/// A three-namespace lab ([`Net`]) with resshd listening on 198.18.0.1:22 in
/// the server namespace, and a user who logs in with ressh from the client
/// namespace. Field order is drop order: the namespaces go last.
pub struct Lab {
    pub resshd: Resshd,
    pub login: Login,
    pub known_hosts: PathBuf,
    pub dir: TempDir,
    pub net: Net,
}

impl Lab {
    /// `server_extra`: resshd_config lines (they win over the defaults);
    /// `{USER}` in them becomes the lab user's name.
    pub fn new(tag: &str, server_extra: &str) -> Lab {
        require_netns();
        let ressh = ressh_bin();
        let net = Net::new(tag);
        let dir = TempDir::new("e2e");
        let known_hosts = dir.join("known_hosts");
        let login = Lab::make_login(&dir, &known_hosts, "u", CLIENT_EXTRA);
        let resshd = Resshd::start_in(
            &ressh.with_file_name("resshd"),
            &net,
            &server_extra.replace("{USER}", &login.user.name),
        );
        fs::write(&known_hosts, resshd.server.known_hosts()).unwrap();
        Lab {
            resshd,
            login,
            known_hosts,
            dir,
            net,
        }
    }

    /// Another user with its own key and config (`tag` names the files).
    pub fn make_login(dir: &TempDir, known_hosts: &Path, tag: &str, extra: &str) -> Login {
        Lab::make_login_to(dir, known_hosts, tag, extra, ("198.18.0.1", PORT))
    }

    /// [`Lab::make_login`] whose ssh_config points at `host` port `port`
    /// (a loopback resshd, or a proxy in front of it).
    pub fn make_login_to(
        dir: &TempDir,
        known_hosts: &Path,
        tag: &str,
        extra: &str,
        (host, port): (&str, u16),
    ) -> Login {
        let user = TestUser::create(&format!("e2e{tag}"));
        let keydir = dir.join(format!("keys-{tag}"));
        fs::create_dir_all(&keydir).unwrap();
        let (key, pub_line) = ssh_keygen(&keydir, "ed25519", "");
        user.authorize_key(&pub_line);
        let config = dir.join(format!("ssh_config-{tag}"));
        write_client_config(&config, &user.name, &key, known_hosts, host, port, extra);
        Login { key, config, user }
    }

    pub fn user(&self) -> &TestUser {
        &self.login.user
    }

    pub fn log(&self) -> String {
        self.resshd.log()
    }

    /// `ressh -F <config> <args...>` inside the client namespace.
    pub fn ressh(&self, args: &[&str]) -> Command {
        ressh_cmd(&self.net, &self.login.config, args)
    }

    /// Waits until resshd's log satisfies `pred`; returns the log.
    pub fn wait_log(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.resshd.wait_log(what, timeout, pred)
    }

    /// The resshd-session processes of the lab's user.
    pub fn session_workers(&self) -> Vec<u32> {
        worker_pids(self.user())
    }

    /// A recording proxy on the client namespace's loopback in front of
    /// resshd; the lab user's ssh_config and known_hosts now point ressh at
    /// it.
    pub fn via_proxy(&self) -> Proxy {
        let target = std::net::SocketAddr::from((self.net.server_addr(), PORT));
        let proxy = self.net.enter_client(|| Proxy::start(target));
        let login = &self.login;
        write_client_config(
            &login.config,
            &login.user.name,
            &login.key,
            &self.known_hosts,
            "127.0.0.1",
            proxy.port,
            CLIENT_EXTRA,
        );
        fs::write(&self.known_hosts, known_hosts_at(&self.resshd, proxy.port)).unwrap();
        proxy
    }
}

/// A resshd on loopback (`DetachTimeout 300`, then `server_extra`) and a
/// user whose ssh_config (`client_extra`) points at it, with their files in
/// a new directory `e2e-TAG`.
pub fn loopback_login(
    tag: &str,
    server_extra: &str,
    client_extra: &str,
) -> (Resshd, Login, TempDir) {
    require_root();
    let server = Resshd::start(
        &ressh_bin().with_file_name("resshd"),
        &format!("DetachTimeout 300\n{server_extra}"),
    );
    let dir = TempDir::new(&format!("e2e-{tag}"));
    let known_hosts = dir.join("known_hosts");
    fs::write(&known_hosts, server.server.known_hosts()).unwrap();
    let login = Lab::make_login_to(
        &dir,
        &known_hosts,
        tag,
        client_extra,
        ("127.0.0.1", server.port()),
    );
    (server, login, dir)
}

/// An echo server: every connection that `accept` returns gets back what
/// it sends, each in a thread of its own, for as long as the test runs.
pub fn serve_echo<S>(mut accept: impl FnMut() -> std::io::Result<S> + Send + 'static)
where
    S: Send + 'static,
    for<'a> &'a S: Read + Write,
{
    thread::spawn(move || loop {
        if let Ok(c) = accept() {
            thread::spawn(move || {
                let _ = std::io::copy(&mut &c, &mut &c);
            });
        }
    });
}

/// `ressh -F config args...` in `net`'s client namespace, with a clean
/// agent/askpass environment.
pub fn ressh_cmd(net: &Net, config: &Path, args: &[&str]) -> Command {
    let mut c = ressh_here(config, args);
    net.in_client(&mut c);
    c
}

/// `ressh -F config args...` in the test's own namespace (loopback tests).
pub fn ressh_here(config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(ressh_bin());
    c.arg("-F").arg(config).args(args);
    c.env_remove("SSH_AUTH_SOCK")
        .env_remove("SSH_ASKPASS")
        .env_remove("DISPLAY");
    c
}

/// The resshd-session processes running as `user`.
pub fn worker_pids(user: &TestUser) -> Vec<u32> {
    user.processes()
        .into_iter()
        .filter(|p| comm(*p).as_deref() == Some("resshd-session"))
        .collect()
}

/// `/proc/<pid>/comm`.
pub fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// `pid`'s open descriptors and what each points to (`socket:[inode]`, a
/// path, ...), as /proc/PID/fd shows them; empty if it is gone.
fn fd_targets(pid: u32) -> Vec<(u32, String)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let fd: u32 = e.file_name().to_str()?.parse().ok()?;
            let target = fs::read_link(e.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect()
}

/// The sockets among `pid`'s descriptors above stderr, as `fd -> socket:[inode]`.
pub fn sockets_above_stderr(pid: u32) -> Vec<String> {
    fd_targets(pid)
        .into_iter()
        .filter(|(fd, target)| *fd > 2 && target.starts_with("socket:"))
        .map(|(fd, target)| format!("{fd} -> {target}"))
        .collect()
}

/// A TCP socket among a process's descriptors: its descriptor, ports, and
/// state as /proc/net/tcp gives it (1: established, 10: listening).
#[derive(Debug)]
pub struct TcpSocket {
    pub fd: u32,
    pub local_port: u16,
    pub remote_port: u16,
    pub state: u8,
}

/// `pid`'s TCP sockets, as its own network namespace lists them
/// (/proc/PID/net/tcp and tcp6).
pub fn tcp_sockets(pid: u32) -> Vec<TcpSocket> {
    let port = |a: &str| u16::from_str_radix(a.rsplit(':').next()?, 16).ok();
    // inode -> (local port, remote port, state)
    let mut table = std::collections::HashMap::new();
    for f in ["tcp", "tcp6"] {
        let text = fs::read_to_string(format!("/proc/{pid}/net/{f}")).unwrap_or_default();
        for l in text.lines().skip(1) {
            let w: Vec<&str> = l.split_whitespace().collect();
            if let (Some(local), Some(remote), Some(state), Some(inode)) = (
                w.get(1).and_then(|a| port(a)),
                w.get(2).and_then(|a| port(a)),
                w.get(3).and_then(|s| u8::from_str_radix(s, 16).ok()),
                w.get(9),
            ) {
                table.insert(format!("socket:[{inode}]"), (local, remote, state));
            }
        }
    }
    fd_targets(pid)
        .into_iter()
        .filter_map(|(fd, target)| {
            let &(local_port, remote_port, state) = table.get(&target)?;
            Some(TcpSocket {
                fd,
                local_port,
                remote_port,
                state,
            })
        })
        .collect()
}

pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s[i + 1..].trim_start().chars().next())
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// Sends `sig` (`"STOP"`, `"KILL"`, ...) to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let st = Command::new(require_cmd("kill"))
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success(), "kill -{sig} {pid}");
}

// ----- background clients ----------------------------------------------------

/// One line of output and when the test read it.
pub type Line = (Instant, String);

/// A child process in its own process group (killed with it on drop) whose
/// stdout and stderr lines are collected with their arrival times.
pub struct Client {
    child: Child,
    pub out: Arc<Mutex<Vec<Line>>>,
    pub err: Arc<Mutex<Vec<Line>>>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

fn read_lines(mut r: impl Read + Send + 'static, into: Arc<Mutex<Vec<Line>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        let mut partial = Vec::new();
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let now = Instant::now();
            partial.extend_from_slice(&buf[..n]);
            let mut lines = Vec::new();
            while let Some(i) = partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = partial.drain(..=i).collect();
                lines.push((now, text(&line[..line.len() - 1])));
            }
            into.lock().unwrap().extend(lines);
        }
        if !partial.is_empty() {
            into.lock().unwrap().push((Instant::now(), text(&partial)));
        }
    })
}

impl Client {
    /// Starts `cmd` with stdin from /dev/null.
    pub fn spawn(cmd: &mut Command) -> Client {
        Client::spawn_with(cmd, Stdio::null())
    }

    /// Starts `cmd` with a pipe as stdin, for the test to type into.
    pub fn spawn_typed(cmd: &mut Command) -> (Client, std::process::ChildStdin) {
        let mut c = Client::spawn_with(cmd, Stdio::piped());
        let stdin = c.child.stdin.take().unwrap();
        (c, stdin)
    }

    /// Starts `cmd` with `stdin`.
    pub fn spawn_with(cmd: &mut Command, stdin: Stdio) -> Client {
        Client::spawn_io(cmd, stdin, None)
    }

    /// A client whose standard output (binary data) goes to `file`, not
    /// into lines; its stderr is read as usual.
    pub fn spawn_into(cmd: &mut Command, file: fs::File) -> Client {
        Client::spawn_io(cmd, Stdio::null(), Some(file))
    }

    fn spawn_io(cmd: &mut Command, stdin: Stdio, stdout: Option<fs::File>) -> Client {
        let to_file = stdout.is_some();
        cmd.stdin(stdin)
            .stdout(stdout.map_or_else(Stdio::piped, Stdio::from))
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        let mut readers = vec![read_lines(child.stderr.take().unwrap(), err.clone())];
        if !to_file {
            readers.push(read_lines(child.stdout.take().unwrap(), out.clone()));
        }
        Client {
            child,
            out,
            err,
            readers,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn out_lines(&self) -> Vec<Line> {
        self.out.lock().unwrap().clone()
    }

    pub fn err_lines(&self) -> Vec<Line> {
        self.err.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.err_lines()
            .iter()
            .map(|(_, l)| format!("{l}\n"))
            .collect()
    }

    pub fn line_count(&self) -> usize {
        self.out.lock().unwrap().len()
    }

    /// Stdout's last line and when it arrived.
    pub fn last_line(&self) -> Option<Line> {
        self.out.lock().unwrap().last().cloned()
    }

    /// Waits until stdout has more than `n` lines.
    pub fn wait_lines(&self, n: usize, timeout: Duration) {
        wait_for(
            &format!("more than {n} lines of output"),
            timeout,
            || (self.line_count() > n).then_some(()),
            || self.describe(),
        );
    }

    /// Waits until stdout has the line `line` (a pty's `\r` aside).
    pub fn wait_line(&self, line: &str, timeout: Duration) {
        wait_for(
            &format!("the line \"{line}\" of output"),
            timeout,
            || {
                self.out_lines()
                    .iter()
                    .any(|(_, l)| l.trim_end_matches('\r') == line)
                    .then_some(())
            },
            || self.describe(),
        );
    }

    /// Waits until a stderr line contains `needle` at or after `since`;
    /// returns when that line arrived.
    pub fn wait_err(&self, needle: &str, since: Instant, timeout: Duration) -> Instant {
        wait_for(
            &format!("\"{needle}\" on the client's stderr"),
            timeout,
            || {
                self.err_lines()
                    .into_iter()
                    .find(|(t, l)| *t >= since && l.contains(needle))
                    .map(|(t, _)| t)
            },
            || self.describe(),
        )
    }

    /// Exit status, if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits for the process to exit and for its output to end.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.try_status() {
                break s;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not exit within {timeout:?}\n{}",
                    self.pid(),
                    self.describe()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            // The pipes close when the last holder exits: our own children are gone.
            let _ = r.join();
        }
        status
    }

    /// The last lines of stdout and all of stderr, for failure messages.
    pub fn describe(&self) -> String {
        let out = self.out_lines();
        let tail: String = out
            .iter()
            .skip(out.len().saturating_sub(20))
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        format!(
            "--- stdout ({} lines, last 20) ---\n{tail}--- stderr ---\n{}",
            out.len(),
            self.stderr()
        )
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ----- the counter -------------------------------------------------------------

/// A remote program that prints 0, 1, 2, ... one number every 10 ms (the
/// shell's loop and `sleep 0.01`), until `max` or until `stop` exists, then
/// `END <count>`.
pub fn counter_cmd(stop: &Path, max: u64) -> String {
    format!(
        "i=0; while [ $i -lt {max} ] && [ ! -e {stop} ]; do echo $i; i=$((i+1)); sleep 0.01; \
         done; echo END $i",
        stop = sq(&stop.to_string_lossy())
    )
}

/// Checks that `lines` are 0, 1, ..., n-1 followed by `END n`: every number
/// exactly once, in order. Returns n.
pub fn check_counter(lines: &[Line]) -> u64 {
    let mut want = 0u64;
    for (i, (_, l)) in lines.iter().enumerate() {
        if let Some(end) = l.strip_prefix("END ") {
            assert_eq!(
                end.parse::<u64>().ok(),
                Some(want),
                "the counter ended at {end} after printing 0..{want}"
            );
            assert_eq!(
                i + 1,
                lines.len(),
                "output after END: {:?}",
                &lines[i + 1..]
            );
            return want;
        }
        let got: Option<u64> = l.parse().ok();
        if got != Some(want) {
            let from = i.saturating_sub(5);
            let around: Vec<&str> = lines[from..(i + 5).min(lines.len())]
                .iter()
                .map(|(_, l)| l.as_str())
                .collect();
            panic!(
                "line {i}: expected {want}, got {l:?} (a number lost, repeated or out of order); \
                 lines {from}..: {around:?}"
            );
        }
        want += 1;
    }
    panic!("the counter's output has no END line (it printed 0..{want})");
}

/// The biggest silence in `lines` (arrival times) between `from` and
/// `until`: (the gap, when the line after it arrived). Lines arriving in one
/// read share their time, so a burst after an outage counts once.
pub fn biggest_gap(lines: &[Line], from: Instant, until: Instant) -> Option<(Duration, Instant)> {
    let mut prev: Option<Instant> = None;
    let mut best: Option<(Duration, Instant)> = None;
    for (t, _) in lines {
        if *t > until {
            break;
        }
        if let Some(p) = prev {
            if *t >= from {
                let gap = t.saturating_duration_since(p.max(from));
                if best.is_none_or(|(g, _)| gap > g) {
                    best = Some((gap, *t));
                }
            }
        }
        prev = Some(*t);
    }
    best
}

/// When output flowed again after a disruption that began at `from` and
/// that ressh recovered from at `reconnected` (its "reconnected" line):
/// the end of the longest pause between the two (plus 300 ms), if that
/// pause is a real one (over three `normal` intervals); else, when the
/// output never visibly paused, the first line after `reconnected`.
pub fn resumed_at(
    lines: &[Line],
    from: Instant,
    reconnected: Instant,
    normal: Duration,
) -> Option<Instant> {
    match biggest_gap(lines, from, reconnected + Duration::from_millis(300)) {
        Some((gap, back)) if gap > normal * 3 => Some(back),
        _ => first_after(lines, reconnected),
    }
}

/// The median interval between consecutive lines among the first 200.
pub fn normal_interval(lines: &[Line]) -> Duration {
    let mut s = Stats::default();
    for w in lines.windows(2).take(200) {
        s.add(w[1].0.duration_since(w[0].0));
    }
    s.quantile(0.5)
}

/// The first line that arrived after `t`.
pub fn first_after(lines: &[Line], t: Instant) -> Option<Instant> {
    lines.iter().map(|(at, _)| *at).find(|at| *at > t)
}

// ----- statistics --------------------------------------------------------------

/// Durations of one kind, printed as count, min, median, p95 and max.
#[derive(Default)]
pub struct Stats {
    pub samples: Vec<Duration>,
}

impl Stats {
    pub fn add(&mut self, d: Duration) {
        self.samples.push(d);
    }

    pub fn quantile(&self, q: f64) -> Duration {
        let mut s = self.samples.clone();
        s.sort();
        if s.is_empty() {
            return Duration::ZERO;
        }
        let i = ((s.len() - 1) as f64 * q).round() as usize;
        s[i]
    }

    pub fn summary(&self) -> String {
        if self.samples.is_empty() {
            return "no samples".into();
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "n={} min={:.0} ms median={:.0} ms p95={:.0} ms max={:.0} ms",
            self.samples.len(),
            ms(self.quantile(0.0)),
            ms(self.quantile(0.5)),
            ms(self.quantile(0.95)),
            ms(self.quantile(1.0))
        )
    }
}

/// Prints a measurement line (shown with `-- --nocapture`).
pub fn report(test: &str, what: &str) {
    println!("[e2e {test}] {what}");
}

/// Client-side reconnect times from ressh's own "reconnected ... after X s"
/// lines (from noticing the loss to the reconnect exchange done).
pub fn client_reconnect_times(stderr: &str) -> Stats {
    let mut s = Stats::default();
    for l in stderr.lines() {
        if let Some(rest) = l.split("reconnected to ").nth(1) {
            if let Some(x) = rest
                .split(" after ")
                .nth(1)
                .and_then(|r| r.split(" s").next())
                .and_then(|v| v.parse::<f64>().ok())
            {
                s.add(Duration::from_secs_f64(x));
            }
        }
    }
    s
}

/// How many reconnects resshd's monitors logged. Counted from the
/// monitor's own line (`resshd[PID]: Reconnected: user ...`), written once
/// the session runs on the new transport: a session worker's lines go
/// through its monitor's log budget, and on a busy run some are dropped.
pub fn reconnects(log: &str) -> usize {
    log.lines()
        .filter(|l| l.starts_with("resshd[") && l.contains("]: Reconnected: user "))
        .count()
}

/// resshd's log once it counts at least `n` reconnects. The monitor writes
/// its line when the session tells it that it resumed, which can be after
/// the session's data flows again: a test that has just seen its data come
/// back waits for the line rather than reading the log once. Panics after
/// `timeout`.
pub fn wait_reconnects(resshd: &Resshd, n: usize, timeout: Duration) -> String {
    resshd.wait_log(&format!("{n} reconnects in resshd's log"), timeout, |l| {
        reconnects(l) >= n
    })
}

/// Whether session worker `pid` said `what`: a line of its own (its
/// monitor writes them into resshd's log) containing it.
pub fn worker_said(log: &str, pid: u32, what: &str) -> bool {
    let mine = format!("resshd-session[{pid}]: ");
    log.lines()
        .any(|l| l.starts_with(&mine) && l.contains(what))
}

/// resshd's log once session worker `pid` has said `what`
/// ([`worker_said`]): its monitor writes the worker's lines, possibly after
/// the worker has exited. Panics after 20 s.
pub fn wait_worker_said(resshd: &Resshd, pid: u32, what: &str) -> String {
    resshd.wait_log(
        &format!("resshd-session[{pid}] to say \"{what}\""),
        Duration::from_secs(20),
        |l| worker_said(l, pid, what),
    )
}

/// Waits until resshd's log holds more than `seen` lines containing
/// `needle`, the next of which was written after `since` (both taken before
/// what makes resshd write it); returns when that line was written, as
/// (not before, not after) in the kernel's real-time clock (a few ms
/// granular), from the log file's modification times rather than from when
/// the test noticed the line: exact (both the same) when it was still the
/// last line at the poll that found it, else between the start of the
/// previous poll (it was not there yet) and the time of the last write.
pub fn wait_logged(
    resshd: &Resshd,
    needle: &str,
    seen: usize,
    since: SystemTime,
    timeout: Duration,
) -> (SystemTime, SystemTime) {
    let path = resshd.server.log_path();
    let mtime = || fs::metadata(path).and_then(|m| m.modified()).unwrap();
    let mut before = since;
    let deadline = Instant::now() + timeout;
    loop {
        let now = SystemTime::now();
        let m1 = mtime();
        let log = resshd.log();
        if mtime() == m1 {
            let lines: Vec<&str> = log.lines().collect();
            match lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.contains(needle))
                .nth(seen)
            {
                Some((i, _)) if i + 1 == lines.len() => return (m1, m1),
                Some(_) => return (before, m1),
                // Not written when this read began (the file times lag the
                // clock by up to a tick).
                None => before = before.max(now - Duration::from_millis(10)),
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for line {} with \"{needle}\" in resshd's \
             log\n{log}",
            seen + 1
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// How many lines of `log` contain `needle`.
pub fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// Waits (for `what`) until resshd's log holds more than `seen` lines
/// containing `needle` (`seen`: how many it held before); returns the next.
pub fn wait_next_line(
    resshd: &Resshd,
    what: &str,
    needle: &str,
    seen: usize,
    timeout: Duration,
) -> String {
    let log = resshd.wait_log(what, timeout, |l| count(l, needle) > seen);
    let next = log.lines().filter(|l| l.contains(needle)).nth(seen);
    next.expect("counted above").to_string()
}

// ----- a recording TCP proxy ---------------------------------------------------

/// One proxied connection: what each side sent, and the two sockets.
pub struct Proxied {
    pub from_client: Arc<Mutex<Vec<u8>>>,
    pub from_server: Arc<Mutex<Vec<u8>>>,
    client: TcpStream,
    server: TcpStream,
}

/// A TCP proxy on 127.0.0.1 (of the namespace it was made in: started
/// inside [`Net::enter_client`], it listens and connects from there) that
/// forwards to `target`, records every byte each side sends, and can cut
/// all its connections (both sides see EOF, like a broken path that a RST
/// ends).
pub struct Proxy {
    pub port: u16,
    pub conns: Arc<Mutex<Vec<Proxied>>>,
    stop: Arc<AtomicBool>,
    /// While set, new connections are accepted and recorded but go nowhere
    /// (a path that swallows the client's attempts): see [`Proxy::held`].
    pub blackhole: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<Held>>>,
    hold: Arc<Hold>,
}

/// What becomes of the server's bytes (see [`Proxy::hold_after`]).
#[derive(Default)]
struct Hold {
    /// Forwarded (0), forwarded up to and with the next chunk of at least
    /// this many bytes, or recorded only ([`HOLDING`]).
    state: AtomicUsize,
    /// The largest chunk recorded only.
    withheld: AtomicUsize,
}

/// [`Hold::state`]: the server's bytes go no further.
const HOLDING: usize = usize::MAX;

/// A swallowed connection and what its client sent.
type Held = (TcpStream, Arc<Mutex<Vec<u8>>>);

impl Proxy {
    pub fn start(target: std::net::SocketAddr) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let conns: Arc<Mutex<Vec<Proxied>>> = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let blackhole = Arc::new(AtomicBool::new(false));
        let held: Arc<Mutex<Vec<Held>>> = Arc::default();
        let hold: Arc<Hold> = Arc::default();
        let (c2, s2, b2, h2) = (conns.clone(), stop.clone(), blackhole.clone(), held.clone());
        let hold2 = hold.clone();
        thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                let (client, _) = match listener.accept() {
                    Ok(x) => x,
                    Err(_) => {
                        thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                if b2.load(Ordering::Relaxed) {
                    let rec = Arc::new(Mutex::new(Vec::new()));
                    let (mut from, r2) = (client.try_clone().unwrap(), rec.clone());
                    thread::spawn(move || {
                        let mut buf = [0u8; 4096];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            r2.lock().unwrap().extend_from_slice(&buf[..n]);
                        }
                    });
                    h2.lock().unwrap().push((client, rec));
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let rec = Arc::new(Mutex::new(Vec::new()));
                let answers = Arc::new(Mutex::new(Vec::new()));
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    rec.clone(),
                    None,
                );
                pump(
                    server.try_clone().unwrap(),
                    client.try_clone().unwrap(),
                    answers.clone(),
                    Some(hold2.clone()),
                );
                c2.lock().unwrap().push(Proxied {
                    from_client: rec,
                    from_server: answers,
                    client,
                    server,
                });
            }
        });
        Proxy {
            port,
            conns,
            stop,
            blackhole,
            held,
            hold,
        }
    }

    /// From now on, the server's next chunk of at least `min` bytes still
    /// reaches the client; what the server sends after it is recorded but
    /// goes no further (a path that dies in one direction), until
    /// [`Proxy::release`].
    pub fn hold_after(&self, min: usize) {
        self.hold.state.store(min, Ordering::SeqCst);
    }

    /// Whether the server's bytes are being held back.
    pub fn holding(&self) -> bool {
        self.hold.state.load(Ordering::SeqCst) == HOLDING
    }

    /// The size of the largest chunk (one read: what the server wrote at
    /// once, at most 64 KiB) held back so far.
    pub fn biggest_withheld(&self) -> usize {
        self.hold.withheld.load(Ordering::SeqCst)
    }

    /// The server's bytes are forwarded again (on connections made from now
    /// on: what was held is gone).
    pub fn release(&self) {
        self.hold.state.store(0, Ordering::SeqCst);
    }

    /// What the client sent on the connections swallowed while
    /// [`Proxy::blackhole`] was set, in order.
    pub fn held(&self) -> Vec<Vec<u8>> {
        self.held
            .lock()
            .unwrap()
            .iter()
            .map(|(_, r)| r.lock().unwrap().clone())
            .collect()
    }

    /// How many connections it has accepted.
    pub fn accepted(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// What the client sent on connection `i` so far.
    pub fn recorded(&self, i: usize) -> Vec<u8> {
        self.conns.lock().unwrap()[i]
            .from_client
            .lock()
            .unwrap()
            .clone()
    }

    /// What the server sent on connection `i` so far.
    pub fn answered(&self, i: usize) -> Vec<u8> {
        self.conns.lock().unwrap()[i]
            .from_server
            .lock()
            .unwrap()
            .clone()
    }

    /// The bytes both sides sent on all its connections so far.
    pub fn bytes(&self) -> usize {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.from_client.lock().unwrap().len() + c.from_server.lock().unwrap().len())
            .sum()
    }

    /// Shuts down every connection made so far, both ways.
    pub fn cut(&self) {
        for c in self.conns.lock().unwrap().iter() {
            let _ = c.client.shutdown(Shutdown::Both);
            let _ = c.server.shutdown(Shutdown::Both);
        }
        for (c, _) in self.held.lock().unwrap().iter() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, rec: Arc<Mutex<Vec<u8>>>, hold: Option<Arc<Hold>>) {
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            rec.lock().unwrap().extend_from_slice(&buf[..n]);
            let min = hold.as_ref().map_or(0, |h| h.state.load(Ordering::SeqCst));
            if min == HOLDING {
                if let Some(h) = &hold {
                    h.withheld.fetch_max(n, Ordering::SeqCst);
                }
                continue;
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            if min != 0 && n >= min {
                if let Some(h) = &hold {
                    h.state.store(HOLDING, Ordering::SeqCst);
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
        let _ = from.shutdown(Shutdown::Read);
    });
}

// ----- SSH packets in clear ------------------------------------------------------

/// The start of an SSH connection as sent in clear: the version line and
/// the binary packets up to the first NEWKEYS (RFC 4253 §6; no MAC and no
/// encryption before it), as payloads; `rest` is everything after them.
pub struct Clear {
    pub version: Vec<u8>,
    pub payloads: Vec<Vec<u8>>,
    pub rest: Vec<u8>,
}

pub fn parse_clear(bytes: &[u8]) -> Clear {
    let eol = bytes
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("a version line");
    let version = bytes[..eol + 2].to_vec();
    let mut at = eol + 2;
    let mut payloads = Vec::new();
    while at + 5 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let pad = bytes[at + 4] as usize;
        assert!(len > pad && at + 4 + len <= bytes.len(), "bad clear packet");
        let payload = bytes[at + 5..at + 4 + len - pad].to_vec();
        at += 4 + len;
        let newkeys = payload.first() == Some(&21);
        payloads.push(payload);
        if newkeys {
            break;
        }
    }
    Clear {
        version,
        payloads,
        rest: bytes[at..].to_vec(),
    }
}

/// One binary packet in clear carrying `payload` (block size 8, 4+ bytes of
/// padding, here zeros: nobody checks).
pub fn clear_packet(payload: &[u8]) -> Vec<u8> {
    let mut pad = 8 - (5 + payload.len()) % 8;
    if pad < 4 {
        pad += 8;
    }
    let len = 1 + payload.len() + pad;
    let mut p = Vec::with_capacity(4 + len);
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.push(pad as u8);
    p.extend_from_slice(payload);
    p.resize(p.len() + pad, 0);
    p
}

/// SSH_MSG_RECONNECT_REQUEST.
pub const REQUEST: u8 = 242;

/// What a client sent on the first connection `proxy` swallowed (while
/// [`Proxy::blackhole`] is set) that carries a whole reconnect request;
/// waits 30 s for it, then panics with `context()`.
pub fn swallowed_reconnect(proxy: &Proxy, context: impl Fn() -> String) -> Vec<u8> {
    wait_for(
        "a swallowed reconnect request",
        Duration::from_secs(30),
        || {
            proxy.held().into_iter().find(|b| {
                b.windows(2).any(|w| w == b"\r\n")
                    && parse_clear(b).payloads.get(1).map(|p| p[0]) == Some(REQUEST)
            })
        },
        context,
    )
}

/// The token (`string T_i`) of a request payload: its byte range.
pub fn token_range(request: &[u8]) -> std::ops::Range<usize> {
    let len = u32::from_be_bytes(request[1..5].try_into().unwrap()) as usize;
    assert_eq!(len, 32, "token length");
    5..5 + len
}

/// Reads what a server sends on `s` until it closes (or `timeout`):
/// (bytes, whether it closed).
pub fn read_until_closed(s: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, false);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (got, false)
            }
            // A reset is a close too.
            Err(_) => return (got, true),
        }
    }
}

/// The code and description of an SSH_MSG_RECONNECT_FAILURE (244) among
/// the clear packets a server sent.
pub fn reconnect_failure(server_bytes: &[u8]) -> Option<(u32, String)> {
    if !server_bytes.windows(2).any(|w| w == b"\r\n") {
        return None;
    }
    let c = parse_clear(server_bytes);
    c.payloads
        .iter()
        .find(|p| p.first() == Some(&244))
        .map(|p| {
            let code = u32::from_be_bytes(p[1..5].try_into().unwrap());
            let len = u32::from_be_bytes(p[5..9].try_into().unwrap()) as usize;
            (code, text(&p[9..9 + len.min(p.len() - 9)]))
        })
}

/// Formats a byte count as MiB.
pub fn mib(n: u64) -> String {
    let mut s = String::new();
    let _ = write!(s, "{:.1} MiB", n as f64 / (1 << 20) as f64);
    s
}

// ----- key exchanges seen by a client ----------------------------------------

/// Every host key algorithm resshd supports: those of testkit's three
/// host keys (ed25519, ECDSA P-256, RSA with both SHA-2 signatures) and of
/// the bigger curves' keys of [`BigCurveHostKeys`].
pub const HOST_KEY_ALGS: [&str; 6] = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
];

/// The ECDSA curves testkit's servers have no host key of:
/// ([`ssh_keygen`] kind, key and signature algorithm).
pub const BIG_CURVES: [(&str, &str); 2] = [
    ("ecdsa-384", "ecdsa-sha2-nistp384"),
    ("ecdsa-521", "ecdsa-sha2-nistp521"),
];

/// A host key of each of [`BIG_CURVES`], made by `ssh-keygen` in a
/// directory of the caller's, to give a server beside its usual three.
pub struct BigCurveHostKeys {
    /// (private key path, public key line), in [`BIG_CURVES`] order.
    pub keys: Vec<(PathBuf, String)>,
}

impl BigCurveHostKeys {
    pub fn new(dir: &Path) -> BigCurveHostKeys {
        let keys = BIG_CURVES
            .iter()
            .map(|(kind, _)| ssh_keygen(dir, kind, ""))
            .collect();
        BigCurveHostKeys { keys }
    }

    /// `HostKey` lines for a server's configuration.
    pub fn config(&self) -> String {
        self.keys
            .iter()
            .map(|(p, _)| format!("HostKey {}\n", p.display()))
            .collect()
    }

    /// `known_hosts` lines for the keys at `host` (`198.18.0.1`,
    /// `[127.0.0.1]:PORT`).
    pub fn known_hosts(&self, host: &str) -> String {
        self.keys
            .iter()
            .map(|(_, line)| format!("{host} {line}\n"))
            .collect()
    }
}
/// Output of [`kex_run_command`]: with `RekeyLimit 64K`, several rekeys.
pub const KEX_RUN_OUTPUT: usize = 400_000;

/// The (method, host key algorithm) of every key exchange in a client's
/// `-v` log: OpenSSH's `kex: algorithm: M` and `kex: host key algorithm:
/// H` lines, or ressh's `kex: M host key H cipher ...`.
pub fn kex_exchanges(stderr: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    for l in stderr.lines().map(str::trim_end) {
        let Some(rest) = l.split_once("kex: ").map(|x| x.1) else {
            continue;
        };
        if let Some(m) = rest.strip_prefix("algorithm: ") {
            v.push((m.to_string(), String::new()));
        } else if let Some(h) = rest.strip_prefix("host key algorithm: ") {
            if let Some(last) = v.last_mut() {
                last.1 = h.to_string();
            }
        } else if let Some((m, h)) = rest.split_once(" host key ") {
            let h = h.split(' ').next().unwrap_or("");
            v.push((m.to_string(), h.to_string()));
        }
    }
    v
}

/// Runs `cmd`, a client with `-v` and [`kex_run_command`] against a server
/// with `RekeyLimit 64K`: the command must succeed with its whole output,
/// and the log must show the first exchange and at least two rekeys, all
/// with `method` and `host_key`. Returns the client's stderr.
pub fn check_kex_run(
    cmd: &mut Command,
    what: &str,
    method: &str,
    host_key: &str,
    server_log: &dyn Fn() -> String,
) -> String {
    let out = run_timeout(cmd, T);
    let err = text(&out.stderr);
    assert!(
        out.status.success(),
        "{what}: {}\n{err}\nserver log:\n{}",
        out.status,
        server_log()
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.len() == KEX_RUN_OUTPUT && stdout.bytes().all(|b| b == b'x'),
        "{what}: {} bytes of output, not {KEX_RUN_OUTPUT} x\n{err}",
        stdout.len()
    );
    let kex = kex_exchanges(&err);
    assert!(
        kex.len() >= 3,
        "{what}: {} key exchanges, not the first and two rekeys: {kex:?}\n{err}",
        kex.len()
    );
    for (m, h) in &kex {
        assert!(
            m == method && h == host_key,
            "{what}: an exchange used {m} / {h}, not {method} / {host_key}: {kex:?}"
        );
    }
    err
}

/// (the client's `KexAlgorithms` option, or None for its default; the
/// method every exchange must use).
pub type KexCase<'a> = (Option<&'a str>, &'a str);

/// [`check_kex_run`] once per case × [`HOST_KEY_ALGS`] (one connection
/// each, the server holding every host key type): `client(args)` is the
/// client with its config, `args` are `-v [-o KexAlgorithms=M] -o
/// HostKeyAlgorithms=H server CMD`; `check(what, stderr)` looks further at
/// each run's log. Returns a table of the cells.
pub fn check_kex_matrix(
    what: &str,
    cases: &[KexCase],
    client: &dyn Fn(&[&str]) -> Command,
    server_log: &dyn Fn() -> String,
    check: &dyn Fn(&str, &str),
) -> String {
    let mut table = String::new();
    let cmdline = kex_run_command();
    for (option, method) in cases {
        for hk in HOST_KEY_ALGS {
            let kex_opt = option.map(|m| format!("KexAlgorithms={m}"));
            let hk_opt = format!("HostKeyAlgorithms={hk}");
            let mut args = vec!["-v"];
            if let Some(o) = &kex_opt {
                args.extend(["-o", o]);
            }
            args.extend(["-o", &hk_opt, "server", &cmdline]);
            let cell = format!("{what} -o KexAlgorithms={option:?} / {hk}");
            let stderr = check_kex_run(&mut client(&args), &cell, method, hk, server_log);
            check(&cell, &stderr);
            let n = kex_exchanges(&stderr).len();
            table += &format!("{cell}: {method}, {n} exchanges\n");
        }
    }
    table
}

/// A remote command printing [`KEX_RUN_OUTPUT`] bytes `x`.
pub fn kex_run_command() -> String {
    format!("head -c {KEX_RUN_OUTPUT} /dev/zero | tr '\\0' x")
}

// ----- a stock ssh-agent -----------------------------------------------------

/// Debian's `ssh-agent` in the foreground on a socket of its own, holding
/// the keys given to [`SshAgent::add`]; killed on drop.
pub struct SshAgent {
    child: Child,
    pub sock: PathBuf,
}

impl SshAgent {
    /// Starts the agent on `dir/<name>`.
    pub fn start(dir: &Path, name: &str) -> SshAgent {
        let sock = dir.join(name);
        let child = Command::new(require_cmd("ssh-agent"))
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent");
        let agent = SshAgent { child, sock };
        wait_for(
            "ssh-agent's socket",
            Duration::from_secs(10),
            || agent.sock.exists().then_some(()),
            String::new,
        );
        agent
    }

    /// `ssh-add key`.
    pub fn add(&self, key: &Path) {
        run_ok(
            Command::new(require_cmd("ssh-add"))
                .arg(key)
                .env("SSH_AUTH_SOCK", &self.sock),
        );
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----- an X server -------------------------------------------------------------

/// Debian's Xvfb on a free display (`-displayfd`), local connections only,
/// with a MIT-MAGIC-COOKIE-1 of its own; `xauthority` holds that cookie
/// for `display`, as a user's ~/.Xauthority would. Killed on drop.
pub struct Xvfb {
    _server: Client,
    /// `:N`.
    pub display: String,
    pub xauthority: PathBuf,
}

impl Xvfb {
    pub fn start(dir: &Path) -> Xvfb {
        let xauth = require_cmd("xauth");
        let mut raw = [0u8; 16];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut raw))
            .unwrap();
        let cookie: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let server_auth = dir.join("xvfb-auth");
        run_ok(
            Command::new(&xauth)
                .arg("-f")
                .arg(&server_auth)
                .args(["add", ":0", ".", &cookie]),
        );
        // -noreset: an X server resets when its last client leaves, and
        // drops the connections that arrive meanwhile (a client right
        // after another, through a forward, would see "unable to open
        // display" now and then).
        let server = Client::spawn(
            Command::new(require_cmd("Xvfb"))
                .args(["-displayfd", "1", "-nolisten", "tcp", "-noreset", "-auth"])
                .arg(&server_auth),
        );
        server.wait_lines(0, T);
        let display = format!(":{}", server.out_lines()[0].1.trim());
        let xauthority = dir.join("xauthority");
        run_ok(
            Command::new(&xauth)
                .arg("-f")
                .arg(&xauthority)
                .args(["add", &display, ".", &cookie]),
        );
        Xvfb {
            _server: server,
            display,
            xauthority,
        }
    }

    /// Sets DISPLAY and XAUTHORITY of `cmd` for this server.
    pub fn env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env("DISPLAY", &self.display)
            .env("XAUTHORITY", &self.xauthority)
    }
}

// ----- a client on ressh's own protocol engine -----------------------------------

/// A client on ressh's protocol engine (what an attacker could write
/// without running ressh), logged in to the loopback `server` as `login`'s
/// user with its key; `config` says what it offers. Returns it with its
/// non-blocking socket, right after USERAUTH_SUCCESS.
pub fn engine_login(
    config: ressh_proto::Config,
    server: &Resshd,
    login: &Login,
) -> (ressh_proto::Connection, TcpStream) {
    use ressh_proto::keys::PrivateKey;
    use ressh_proto::{Connection, Event};
    let key = PrivateKey::from_openssh_pem(&fs::read(&login.key).unwrap()).unwrap();
    let mut sock = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    sock.set_nonblocking(true).unwrap();
    let mut conn = Connection::client(config, Instant::now()).unwrap();
    let (mut pending, mut buf) = (Vec::new(), vec![0u8; 1 << 16]);
    let deadline = Instant::now() + T;
    let mut authenticated = false;
    while !authenticated || !pending.is_empty() {
        assert!(Instant::now() < deadline, "no login\n{}", server.log());
        let (progress, end) = pump_engine(&mut conn, &mut sock, &mut pending, &mut buf);
        assert!(end.is_none(), "{end:?} before the login\n{}", server.log());
        while let Some(e) = conn.poll_event() {
            match e {
                Event::HostKey(_) => conn.accept_host_key(Instant::now()).unwrap(),
                Event::AuthReady => {
                    let alg = key.public_key().signature_algorithms()[0];
                    conn.auth_publickey(&login.user.name, alg, &key).unwrap();
                }
                Event::AuthSuccess => authenticated = true,
                Event::AuthFailure { methods, .. } => panic!("auth refused: {methods:?}"),
                _ => {}
            }
        }
        if !progress {
            thread::sleep(Duration::from_millis(1));
        }
    }
    (conn, sock)
}

/// How a connection ended, as [`pump_engine`] saw it.
#[derive(Debug)]
pub enum End {
    /// The peer closed (FIN).
    Closed,
    /// The peer reset the connection.
    Reset,
    /// Another error of the socket, or of the protocol (a DISCONNECT
    /// received is one: see the connection's events).
    Error(String),
}

/// Moves one round of bytes between `conn` and the non-blocking `sock`:
/// writes what it can of its output (the rest waits in `pending`), feeds
/// it what arrived. Returns whether anything moved, and how the
/// connection ended if it did.
pub fn pump_engine(
    conn: &mut ressh_proto::Connection,
    sock: &mut std::net::TcpStream,
    pending: &mut Vec<u8>,
    buf: &mut [u8],
) -> (bool, Option<End>) {
    use std::io::{ErrorKind, Write};
    pending.extend(conn.take_output());
    let mut progress = false;
    while !pending.is_empty() {
        match sock.write(pending) {
            Ok(n) => {
                pending.drain(..n);
                progress = true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            // The server closed: what it sent last is still to be read.
            Err(_) => {
                pending.clear();
                break;
            }
        }
    }
    loop {
        match sock.read(buf) {
            Ok(0) => return (progress, Some(End::Closed)),
            Ok(n) => {
                progress = true;
                if let Err(e) = conn.handle_input(&buf[..n], Instant::now()) {
                    return (progress, Some(End::Error(e.to_string())));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return (progress, None),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                return (progress, Some(End::Reset))
            }
            Err(e) => return (progress, Some(End::Error(e.to_string()))),
        }
    }
}
