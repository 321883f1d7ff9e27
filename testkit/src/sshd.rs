//! Debian's stock OpenSSH server on loopback, as the reference peer.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd::{self, require_cmd, require_root, run_ok};
use crate::keys::read_pub;
use crate::{Net, TempDir};

/// The server binary started by [`Sshd::start`].
pub const SSHD_BIN: &str = "/usr/sbin/sshd";

/// sshd's privilege-separation directory; Debian's package creates it at boot only.
const PRIVSEP_DIR: &str = "/run/sshd";

const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Host key kinds generated for every server, in `HostKey` order.
const HOST_KEY_KINDS: [&str; 3] = ["ed25519", "rsa", "ecdsa"];

/// Settings written unless the caller's extra configuration sets the same keyword.
const DEFAULTS: &[(&str, &str)] = &[
    ("UsePAM", "no"),
    ("StrictModes", "yes"),
    ("PasswordAuthentication", "yes"),
    ("KbdInteractiveAuthentication", "no"),
    ("Subsystem", "sftp /usr/lib/openssh/sftp-server"),
    ("LogLevel", "DEBUG1"),
    ("AllowTcpForwarding", "yes"),
    ("PrintMotd", "no"),
    ("PrintLastLog", "no"),
];

/// A free TCP port on 127.0.0.1, never one it returned before in this process (the
/// kernel may hand out a port just released again: a test's forward and the server it
/// goes through would then share one). It is taken below the kernel's ephemeral range
/// (`ip_local_port_range`), from which bind(0) and outgoing connections draw theirs: a
/// port returned here and left unbound for a while (a forward's, or one meant to refuse
/// connections) is not taken meanwhile by another process's listener on port 0 or by
/// the source port of some connection. It is free when chosen: no socket of any state
/// uses it (`/proc/net/tcp*`) and it can be bound. Another program binding fixed ports
/// can still take it; [`Sshd::start`] retries on that.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = ephemeral_low.saturating_sub(16384).max(1024);
    if ephemeral_low < low + 1024 {
        // No room below the ephemeral range: let the kernel choose.
        loop {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0: {e}"));
            if !given.contains(&port) {
                given.push(port);
                return port;
            }
        }
    }
    let used = ports_in_use();
    let span = u32::from(ephemeral_low - low);
    // Another start at each call, in each process (test binaries run one after another).
    let seed = std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    for i in 0..span {
        let port = low + ((seed.wrapping_add(i)) % span) as u16;
        if !given.contains(&port)
            && !used.contains(&port)
            && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in {low}..{ephemeral_low}");
}

/// The local ports of every TCP socket of this network namespace, in any state.
fn ports_in_use() -> Vec<u16> {
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let port = line
                .split_whitespace()
                .nth(1)
                .and_then(|local| local.rsplit(':').next())
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            ports.extend(port);
        }
    }
    ports
}

/// Debian's `/usr/sbin/sshd -D -e -f <config>` listening on `127.0.0.1:<port>`, with
/// fresh host keys in its own temp dir. On drop it and all its children (connection
/// handlers, user sessions) are killed and the dir is removed.
///
/// [`Sshd::start_binary_in`] starts one inside a [`Net`]'s server namespace instead,
/// listening on the lab's server address; [`Sshd::restart`] and [`Sshd::reload`] stop
/// and start it again, or send it SIGHUP, with the same configuration.
#[derive(Debug)]
pub struct Sshd {
    child: Child,
    bin: PathBuf,
    addr: Ipv4Addr,
    port: u16,
    /// The network namespace it runs in (by name); None: the caller's.
    netns: Option<String>,
    logs_listening: bool,
    /// Processes an earlier instance left running (stopped by [`Sshd::stop`]: its
    /// established sessions carry on); killed with their descendants on drop.
    previous: Vec<u32>,
    config_path: PathBuf,
    log_path: PathBuf,
    dir: TempDir,
}

/// The keyword of a config line (`Keyword value` or `Keyword=value`), lowercased.
pub(crate) fn keyword(line: &str) -> Option<String> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    Some(line[..end].to_ascii_lowercase())
}

/// The full sshd_config: the caller's global lines first (sshd takes the first value
/// of most keywords), then the fixed lines, the defaults the caller did not set, and
/// last the caller's `Match` blocks (which must end the file).
fn build_config(dir: &Path, addr: Ipv4Addr, port: u16, extra: &str) -> String {
    let mut global = Vec::new();
    let mut matches = Vec::new();
    for line in extra.lines() {
        if !matches.is_empty() || keyword(line).as_deref() == Some("match") {
            matches.push(line);
        } else {
            global.push(line);
        }
    }
    let set: Vec<String> = global.iter().filter_map(|l| keyword(l)).collect();

    let mut cfg = String::from("# written by ressh-testkit\n");
    if !global.is_empty() {
        cfg += "# caller's settings\n";
        for line in &global {
            cfg += line;
            cfg += "\n";
        }
    }
    cfg += "# fixed\n";
    cfg += &format!("Port {port}\nListenAddress {addr}\nPidFile none\n");
    for kind in HOST_KEY_KINDS {
        cfg += &format!("HostKey {}\n", host_key_path(dir, kind).display());
    }
    cfg += "# defaults\n";
    for (key, value) in DEFAULTS {
        if !set.contains(&key.to_ascii_lowercase()) {
            cfg += &format!("{key} {value}\n");
        }
    }
    for line in matches {
        cfg += line;
        cfg += "\n";
    }
    cfg
}

fn host_key_path(dir: &Path, kind: &str) -> PathBuf {
    dir.join(format!("ssh_host_{kind}_key"))
}

/// Creates `/run/sshd` (root, 0755) if it is missing; sshd refuses to start without it.
fn ensure_privsep_dir() {
    let dir = Path::new(PRIVSEP_DIR);
    if !dir.exists() {
        match DirBuilder::new().recursive(true).mode(0o755).create(dir) {
            Ok(()) => {}
            Err(e) if dir.is_dir() => drop(e), // created concurrently
            Err(e) => panic!("cannot create {PRIVSEP_DIR}: {e}"),
        }
    }
    let meta = fs::metadata(dir).unwrap_or_else(|e| panic!("{PRIVSEP_DIR}: {e}"));
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        std::os::unix::fs::chown(dir, Some(0), Some(0))
            .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o755)))
            .unwrap_or_else(|e| panic!("cannot fix owner/mode of {PRIVSEP_DIR}: {e}"));
    }
}

impl Sshd {
    /// Starts the server with `extra_config` (sshd_config lines, may be empty) added to
    /// the generated configuration. The caller's lines win over the defaults (`UsePAM no`,
    /// `StrictModes yes`, `PasswordAuthentication yes`, `KbdInteractiveAuthentication no`,
    /// `Subsystem sftp /usr/lib/openssh/sftp-server`, `LogLevel DEBUG1`,
    /// `AllowTcpForwarding yes`, `PrintMotd no`, `PrintLastLog no`): a default is left
    /// out when the caller sets its keyword. `Port`, `ListenAddress 127.0.0.1`,
    /// `PidFile none` and the three `HostKey`s are always written. `Match` blocks go
    /// last. Waits (at most 10 s) until the port accepts connections; panics with the
    /// server's log if it does not. Requires root.
    pub fn start(extra_config: &str) -> Sshd {
        require_cmd(SSHD_BIN);
        Sshd::start_binary(Path::new(SSHD_BIN), extra_config)
    }

    /// Like [`Sshd::start`] with another sshd-compatible server binary
    /// (`resshd`), started with the same flags and generated configuration.
    pub fn start_binary(bin: &Path, extra_config: &str) -> Sshd {
        Sshd::start_inner(bin, extra_config, None)
    }

    /// Like [`Sshd::start_binary`], but the server runs inside `net`'s server
    /// namespace ([`Net::in_server`]) and listens on `net.server_addr()` port `port`
    /// (a fresh namespace has every port free: 22 is a natural choice) instead of
    /// 127.0.0.1. Everything else (host keys, defaults, log, drop) is the same.
    pub fn start_binary_in(bin: &Path, extra_config: &str, net: &Net, port: u16) -> Sshd {
        Sshd::start_inner(
            bin,
            extra_config,
            Some((net.server_ns().to_string(), net.server_addr(), port)),
        )
    }

    fn start_inner(bin: &Path, extra_config: &str, netns: Option<(String, Ipv4Addr, u16)>) -> Sshd {
        require_root();
        assert!(
            bin.exists(),
            "{} is missing (build the workspace first)",
            bin.display()
        );
        ensure_privsep_dir();
        let dir = TempDir::new("sshd");
        let keygen = require_cmd("ssh-keygen");
        for kind in HOST_KEY_KINDS {
            run_ok(
                Command::new(&keygen)
                    .args(["-q", "-N", "", "-C", "", "-t", kind, "-f"])
                    .arg(host_key_path(dir.path(), kind)),
            );
        }
        let config_path = dir.join("sshd_config");
        let log_path = dir.join("sshd.log");

        // sshd logs "Server listening on ..." at INFO; a caller may have silenced it.
        let logs_listening = !extra_config.lines().any(|l| {
            keyword(l).as_deref() == Some("loglevel")
                && ["quiet", "fatal", "error"]
                    .iter()
                    .any(|q| l.to_ascii_lowercase().contains(q))
        });

        // The free port can be taken by someone else before sshd binds it: retry.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (ns, addr, port) = match &netns {
                Some((ns, addr, port)) => (Some(ns.clone()), *addr, *port),
                None => (None, Ipv4Addr::LOCALHOST, free_port()),
            };
            fs::write(
                &config_path,
                build_config(dir.path(), addr, port, extra_config),
            )
            .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
            File::create(&log_path)
                .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
            let mut child = spawn_daemon(bin, &config_path, &log_path, ns.as_deref());
            let ready = wait_ready(
                &mut child,
                (addr, port),
                ns.as_deref(),
                &log_path,
                logs_listening,
                0,
            );
            match ready {
                Ok(()) => {
                    return Sshd {
                        child,
                        bin: bin.to_path_buf(),
                        addr,
                        port,
                        netns: ns,
                        logs_listening,
                        previous: Vec::new(),
                        config_path,
                        log_path,
                        dir,
                    }
                }
                Err(why) => {
                    kill_tree(&mut child);
                    let log = read_log(&log_path);
                    if log.contains("Address already in use") && attempt < 3 && ns.is_none() {
                        continue;
                    }
                    let cfg = fs::read_to_string(&config_path).unwrap_or_default();
                    panic!(
                        "{} on {addr}:{port} {why}\n--- sshd_config ---\n{cfg}\
                         --- log ---\n{log}",
                        bin.display()
                    );
                }
            }
        }
    }

    fn wait_ready(&mut self, listening_before: usize) -> Result<(), String> {
        wait_ready(
            &mut self.child,
            (self.addr, self.port),
            self.netns.as_deref(),
            &self.log_path,
            self.logs_listening,
            listening_before,
        )
    }

    fn listening_lines(&self) -> usize {
        let listening = format!("Server listening on {} port {}.", self.addr, self.port);
        read_log(&self.log_path).matches(&listening).count()
    }

    /// Stops the server with SIGTERM and waits (at most 10 s) until it has exited; its
    /// children (established sessions) are left running, as a daemon restart leaves
    /// them, and are killed on drop. Panics if it does not exit. See [`Sshd::restart`].
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id();
        self.previous.extend(cmd::descendants(pid));
        cmd::signal_pids("TERM", &[pid.to_string()]);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => panic!(
                    "{} (pid {pid}) did not exit within {READY_TIMEOUT:?} of SIGTERM\n--- log ---\n{}",
                    self.bin.display(),
                    self.log()
                ),
            }
        }
    }

    /// [`Sshd::stop`], then starts the same binary again with the same configuration
    /// file, address and port (the log file goes on), and waits until it accepts
    /// connections. Panics (with the log) if it does not.
    pub fn restart(&mut self) {
        self.stop();
        let before = self.listening_lines();
        self.child = spawn_daemon(
            &self.bin,
            &self.config_path,
            &self.log_path,
            self.netns.as_deref(),
        );
        if let Err(why) = self.wait_ready(before) {
            panic!(
                "{} restarted on {}:{} {why}\n--- log ---\n{}",
                self.bin.display(),
                self.addr,
                self.port,
                self.log()
            );
        }
    }

    /// Sends SIGHUP (sshd and resshd re-execute themselves, keeping their pid) and waits
    /// until the new image has logged that it listens again and accepts connections.
    /// Panics (with the log) if it does not.
    pub fn reload(&mut self) {
        let before = self.listening_lines();
        cmd::signal_pids("HUP", &[self.child.id().to_string()]);
        if let Err(why) = self.wait_ready(before) {
            panic!(
                "{} after SIGHUP on {}:{} {why}\n--- log ---\n{}",
                self.bin.display(),
                self.addr,
                self.port,
                self.log()
            );
        }
    }

    /// The address it listens on: 127.0.0.1, or the lab's server address
    /// ([`Sshd::start_binary_in`]).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The TCP port (on 127.0.0.1, or on [`Sshd::addr`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temp dir holding the config, host keys and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Everything sshd has written to stderr so far (`-e`, `LogLevel DEBUG1`).
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    /// The file sshd's stderr goes to (its modification time is when the last
    /// line was written).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The host public key line (`"ssh-ed25519 AAAA..."`) of `kind`: `ed25519`, `rsa`
    /// or `ecdsa` (nistp256).
    pub fn host_key_pub(&self, kind: &str) -> String {
        assert!(
            HOST_KEY_KINDS.contains(&kind),
            "host_key_pub: unknown kind {kind:?} (ed25519, rsa, ecdsa)"
        );
        let mut path = host_key_path(self.dir.path(), kind).into_os_string();
        path.push(".pub");
        read_pub(Path::new(&path)).unwrap_or_else(|e| panic!("read host key {kind}: {e}"))
    }

    /// `known_hosts` lines for all three host keys (`[127.0.0.1]:PORT keytype base64`;
    /// `ADDR keytype base64` on port 22), each ending in a newline.
    pub fn known_hosts(&self) -> String {
        let host = match self.port {
            22 => self.addr.to_string(),
            port => format!("[{}]:{port}", self.addr),
        };
        HOST_KEY_KINDS
            .iter()
            .map(|k| format!("{host} {}\n", self.host_key_pub(k)))
            .collect()
    }
}

fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Waits until the server accepts TCP connections on `addr` (from inside `netns` if
/// given) and, when its log level shows it, has logged that it listens there more
/// than `listening_before` times: then the listener is surely this instance's.
fn wait_ready(
    child: &mut Child,
    addr: (Ipv4Addr, u16),
    netns: Option<&str>,
    log_path: &Path,
    logs_listening: bool,
    listening_before: usize,
) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let listening = format!("Server listening on {} port {}.", addr.0, addr.1);
    let addr = SocketAddr::from(addr);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("exited at start: {status}"));
        }
        let logged =
            !logs_listening || read_log(log_path).matches(&listening).count() > listening_before;
        let connect = || TcpStream::connect_timeout(&addr, Duration::from_millis(200));
        let accepts = logged
            && match netns {
                Some(ns) => crate::netns::enter_ns(ns, connect).is_ok(),
                None => connect().is_ok(),
            };
        if accepts {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("not accepting connections after {READY_TIMEOUT:?}"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `bin -D -e -f config` with stdout and stderr appended to `log` (O_APPEND:
/// the processes of an earlier instance may still write there), inside network
/// namespace `netns` if given.
fn spawn_daemon(bin: &Path, config: &Path, log: &Path, netns: Option<&str>) -> Child {
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let log2 = log_file.try_clone().expect("dup log fd");
    let mut cmd = Command::new(bin);
    cmd.arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log2);
    if let Some(ns) = netns {
        crate::netns::in_ns(ns, &mut cmd);
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
}

/// Kills `child` and every process below it, and reaps it. Idempotent.
fn kill_tree(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        // Already exited and reaped: its children were re-parented, not findable by pid.
        return;
    }
    cmd::kill_tree(child.id());
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Sshd {
    fn drop(&mut self) {
        kill_tree(&mut self.child);
        for &pid in &self.previous {
            if Path::new(&format!("/proc/{pid}")).exists() {
                cmd::kill_tree(pid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_puts_caller_first_and_match_last() {
        let extra = "PasswordAuthentication no\nSubsystem=sftp internal-sftp\n\
                     Match User bob\n  ForceCommand true\n";
        let cfg = build_config(Path::new("/x"), Ipv4Addr::LOCALHOST, 2222, extra);
        let pos = |s: &str| {
            cfg.find(s)
                .unwrap_or_else(|| panic!("{s} missing in\n{cfg}"))
        };
        assert!(pos("PasswordAuthentication no") < pos("Port 2222"));
        assert!(!cfg.contains("PasswordAuthentication yes"));
        assert!(!cfg.contains("sftp-server"));
        assert!(cfg.contains("UsePAM no\n"));
        assert!(cfg.contains("HostKey /x/ssh_host_rsa_key\n"));
        assert!(pos("Match User bob") > pos("UsePAM no"));
        assert!(cfg.trim_end().ends_with("ForceCommand true"));
    }
}
