//! Shared set-up for ressh's tests against real servers: a test user with a
//! key, a server (Debian's sshd or resshd), a known_hosts file and an
//! ssh_config for `ressh -F`.

#![allow(dead_code, unused_imports)]

pub use ressh_testkit::{random_file, sha256_file, text, wait_for};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use ressh_testkit::{
    require_cmd, require_root, resshd_bin, run_timeout, run_with_stdin, ssh_keygen, Resshd, Sshd,
    TempDir, TestUser, Tmux,
};

pub const RESSH: &str = env!("CARGO_BIN_EXE_ressh");
pub const T: Duration = Duration::from_secs(60);

pub enum Server {
    Sshd(Sshd),
    Resshd(Resshd),
}

impl Server {
    pub fn port(&self) -> u16 {
        match self {
            Server::Sshd(s) => s.port(),
            Server::Resshd(r) => r.port(),
        }
    }
    pub fn known_hosts(&self) -> String {
        match self {
            Server::Sshd(s) => s.known_hosts(),
            Server::Resshd(r) => r.server.known_hosts(),
        }
    }
    pub fn log(&self) -> String {
        match self {
            Server::Sshd(s) => s.log(),
            Server::Resshd(r) => r.log(),
        }
    }
    pub fn sshd(&self) -> &Sshd {
        match self {
            Server::Sshd(s) => s,
            Server::Resshd(r) => &r.server,
        }
    }
}

/// A user, a key authorized for it, a running server, and files for ressh.
/// Field order is drop order: the server goes before the user.
pub struct Env {
    pub server: Server,
    pub dir: TempDir,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub config: PathBuf,
    pub user: TestUser,
}

impl Env {
    /// Debian's sshd with `extra` sshd_config lines.
    pub fn sshd(extra: &str) -> Env {
        require_root();
        let user = TestUser::create("cl");
        let server = Server::Sshd(Sshd::start(extra));
        Env::finish(user, server)
    }

    /// ressh's own daemon.
    pub fn resshd(extra: &str) -> Env {
        require_root();
        let user = TestUser::create("cr");
        let server = Server::Resshd(Resshd::start(&resshd_bin(), extra));
        Env::finish(user, server)
    }

    fn finish(user: TestUser, server: Server) -> Env {
        let dir = TempDir::new("ressh-client");
        let (key, pub_line) = ssh_keygen(dir.path(), "ed25519", "");
        user.authorize_key(&pub_line);
        let known_hosts = dir.join("known_hosts");
        fs::write(&known_hosts, server.known_hosts()).unwrap();
        let config = dir.join("ssh_config");
        let env = Env {
            server,
            dir,
            key,
            known_hosts,
            config,
            user,
        };
        env.write_config("");
        env
    }

    /// Rewrites the -F file: `extra` lines first (first value wins), then
    /// the test defaults.
    pub fn write_config(&self, extra: &str) {
        fs::write(&self.config, self.config_text(extra, true)).unwrap();
    }

    /// A second config file `name` (without the test key when `with_key` is
    /// false); returns its path.
    pub fn alt_config(&self, name: &str, extra: &str, with_key: bool) -> PathBuf {
        let p = self.dir.join(name);
        fs::write(&p, self.config_text(extra, with_key)).unwrap();
        p
    }

    pub fn config_text(&self, extra: &str, with_key: bool) -> String {
        let key = if with_key {
            format!("    IdentityFile {}\n", self.key.display())
        } else {
            "    IdentityFile none\n".to_string()
        };
        format!(
            "{extra}\nHost *\n    User {}\n    Port {}\n{key}    \
             IdentitiesOnly yes\n    IdentityAgent none\n    UserKnownHostsFile {}\n    \
             GlobalKnownHostsFile none\n    StrictHostKeyChecking yes\n    BatchMode yes\n",
            self.user.name,
            self.server.port(),
            self.known_hosts.display()
        )
    }

    /// `ressh -F config` with a clean askpass environment.
    pub fn ressh(&self) -> Command {
        self.ressh_with(&self.config)
    }

    /// `ressh -F <config>` with a clean askpass environment.
    pub fn ressh_with(&self, config: &Path) -> Command {
        let mut c = Command::new(RESSH);
        c.arg("-F").arg(config);
        c.env_remove("SSH_AUTH_SOCK")
            .env_remove("SSH_ASKPASS")
            .env_remove("SSH_ASKPASS_REQUIRE")
            .env_remove("DISPLAY");
        c
    }

    /// Runs `ressh -F config 127.0.0.1 <args...>`.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut c = self.ressh();
        c.arg("127.0.0.1").args(args);
        run_timeout(&mut c, T)
    }

    /// Runs `ressh -F config <opts...> 127.0.0.1 <cmd...>`.
    pub fn exec_to(&self, opts: &[&str], cmd: &[&str]) -> Output {
        let mut c = self.ressh();
        c.args(opts).arg("127.0.0.1").args(cmd);
        run_timeout(&mut c, T)
    }

    /// Writes a file into the user's home, owned by the user.
    pub fn user_file(&self, rel: &str, data: &[u8], mode: u32) -> PathBuf {
        let p = self.user.home.join(rel);
        fs::write(&p, data).unwrap();
        self.user.own(&p, mode);
        p
    }
}

/// Panics with the command's output and the server log.
pub fn check(out: &Output, env: &Env, what: &str) {
    if !out.status.success() {
        panic!(
            "{what}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- server log ---\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr),
            env.server.log()
        );
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:port.
pub fn wait_port(port: u16, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A child process killed (with its group) on drop.
pub struct Bg(pub std::process::Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stock ssh-agent (`-D`) on a socket in a directory of its own, killed
/// on drop.
pub struct SshAgent {
    _agent: Bg,
    pub sock: PathBuf,
    _dir: TempDir,
}

impl SshAgent {
    pub fn start() -> SshAgent {
        let dir = TempDir::new("agent");
        let sock = dir.join("agent.sock");
        let agent = Bg(Command::new(require_cmd("ssh-agent"))
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap());
        wait_for(
            "ssh-agent's socket",
            Duration::from_secs(5),
            || sock.exists().then_some(()),
            || format!("no {}", sock.display()),
        );
        SshAgent {
            _agent: agent,
            sock,
            _dir: dir,
        }
    }

    /// `ssh-add key` (which adds `key-cert.pub` too when it is there).
    pub fn add(&self, key: &Path) {
        let out = run_timeout(
            Command::new(require_cmd("ssh-add"))
                .arg(key)
                .env("SSH_AUTH_SOCK", &self.sock),
            T,
        );
        assert!(out.status.success(), "ssh-add: {}", text(&out.stderr));
    }
}

/// Starts `cmd` in the background with piped stderr.
pub fn spawn(cmd: &mut Command) -> Bg {
    Bg(cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap())
}

/// Shell-quotes one word.
pub fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// An askpass script printing `answer` and logging its prompt to `log`.
pub fn askpass(dir: &Path, name: &str, answer: &str) -> (PathBuf, PathBuf) {
    let script = dir.join(name);
    let log = dir.join(format!("{name}.log"));
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" >> {}\nprintf '%s\\n' {}\n",
            sq(&log.to_string_lossy()),
            sq(answer)
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    (script, log)
}

/// An askpass script answering its prompts with `answers` in order (and
/// failing beyond them), logging each prompt to the returned log file.
pub fn askpass_answers(dir: &Path, name: &str, answers: &[&str]) -> (PathBuf, PathBuf) {
    let script = dir.join(name);
    let log = dir.join(format!("{name}.log"));
    let mut body = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$1\" >> {log}\nn=$(wc -l < {log})\ncase $n in\n",
        log = sq(&log.to_string_lossy())
    );
    for (i, a) in answers.iter().enumerate() {
        body.push_str(&format!("  {}) printf '%s\\n' {};;\n", i + 1, sq(a)));
    }
    body.push_str("  *) exit 1;;\nesac\n");
    fs::write(&script, body).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    (script, log)
}

/// An echo server on 127.0.0.1 for the life of the test process.
pub fn echo_server() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    port
}

/// A SOCKS5 CONNECT through the proxy on 127.0.0.1:`proxy` to `host`
/// (an IPv4 address or a name) and `port`: the stream and the reply code
/// (0: connected).
pub fn socks5(proxy: u16, host: &str, port: u16) -> (TcpStream, u8) {
    let mut s = TcpStream::connect(("127.0.0.1", proxy)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).unwrap();
    assert_eq!(m, [5, 0], "SOCKS5 method selection");
    let mut req = vec![5, 1, 0];
    match host.parse::<std::net::Ipv4Addr>() {
        Ok(ip) => {
            req.push(1);
            req.extend_from_slice(&ip.octets());
        }
        Err(_) => {
            req.extend_from_slice(&[3, host.len() as u8]);
            req.extend_from_slice(host.as_bytes());
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).unwrap();
    let mut r = [0u8; 10];
    s.read_exact(&mut r).unwrap();
    assert_eq!((r[0], r[2], r[3]), (5, 0, 1), "SOCKS5 reply {r:?}");
    (s, r[1])
}

/// A SOCKS4 (or, for a name, SOCKS4a) CONNECT: the stream and the reply
/// code (90: granted).
pub fn socks4(proxy: u16, host: &str, port: u16) -> (TcpStream, u8) {
    let mut s = TcpStream::connect(("127.0.0.1", proxy)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = vec![4, 1];
    req.extend_from_slice(&port.to_be_bytes());
    match host.parse::<std::net::Ipv4Addr>() {
        Ok(ip) => {
            req.extend_from_slice(&ip.octets());
            req.extend_from_slice(b"user\0");
        }
        Err(_) => {
            req.extend_from_slice(&[0, 0, 0, 1]);
            req.extend_from_slice(b"user\0");
            req.extend_from_slice(host.as_bytes());
            req.push(0);
        }
    }
    s.write_all(&req).unwrap();
    let mut r = [0u8; 8];
    s.read_exact(&mut r).unwrap();
    assert_eq!(r[0], 0, "SOCKS4 reply {r:?}");
    (s, r[1])
}

/// Writes `data` to an echoing stream and reads it back.
pub fn echo_roundtrip(s: &mut TcpStream, data: &[u8]) {
    s.write_all(data).unwrap();
    let mut got = vec![0u8; data.len()];
    s.read_exact(&mut got).unwrap();
    assert!(got == data, "the echo differs");
}

/// Everything the peer sends until it closes (with a time limit).
pub fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut v = Vec::new();
    let _ = s.read_to_end(&mut v);
    v
}

/// Aborts ressh's TCP connections to the server on 127.0.0.1:`port` (ss -K,
/// as a cut connection); returns how many.
pub fn kill_tcp_to(port: u16) -> usize {
    let out = run_timeout(
        Command::new(require_cmd("ss")).args([
            "-K",
            "-t",
            "-n",
            "-H",
            "state",
            "connected",
            "exclude",
            "time-wait",
            "dst",
            &format!("127.0.0.1:{port}"),
        ]),
        T,
    );
    assert!(out.status.success(), "ss -K: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// How many lines of the file at `path` contain `needle` (0 if missing).
pub fn count_in_file(path: &Path, needle: &str) -> usize {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}
