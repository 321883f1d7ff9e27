//! Debian's stock OpenSSH server on loopback, as the reference peer.

use std::fs::{self, DirBuilder, File};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd::{self, require_cmd, require_root, run_ok};
use crate::keys::read_pub;
use crate::TempDir;

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

/// A free TCP port on 127.0.0.1 (bound to port 0, read, and released). Another process
/// can take it before it is used; [`Sshd::start`] retries on that.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0: {e}"))
}

/// Debian's `/usr/sbin/sshd -D -e -f <config>` listening on `127.0.0.1:<port>`, with
/// fresh host keys in its own temp dir. On drop it and all its children (connection
/// handlers, user sessions) are killed and the dir is removed.
#[derive(Debug)]
pub struct Sshd {
    child: Child,
    port: u16,
    config_path: PathBuf,
    log_path: PathBuf,
    dir: TempDir,
}

/// The keyword of a config line (`Keyword value` or `Keyword=value`), lowercased.
fn keyword(line: &str) -> Option<String> {
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
fn build_config(dir: &Path, port: u16, extra: &str) -> String {
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
    cfg += &format!("Port {port}\nListenAddress 127.0.0.1\nPidFile none\n");
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
            let port = free_port();
            fs::write(&config_path, build_config(dir.path(), port, extra_config))
                .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
            let log = File::create(&log_path)
                .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
            let log2 = log.try_clone().expect("dup log fd");
            let mut child = Command::new(bin)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            match wait_ready(&mut child, port, &log_path, logs_listening) {
                Ok(()) => {
                    return Sshd {
                        child,
                        port,
                        config_path,
                        log_path,
                        dir,
                    }
                }
                Err(why) => {
                    kill_tree(&mut child);
                    let log = read_log(&log_path);
                    if log.contains("Address already in use") && attempt < 3 {
                        continue;
                    }
                    let cfg = fs::read_to_string(&config_path).unwrap_or_default();
                    panic!(
                        "{} on 127.0.0.1:{port} {why}\n--- sshd_config ---\n{cfg}\
                         --- log ---\n{log}",
                        bin.display()
                    );
                }
            }
        }
    }

    /// The TCP port on 127.0.0.1.
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

    /// `known_hosts` lines for all three host keys (`[127.0.0.1]:PORT keytype base64`),
    /// each ending in a newline.
    pub fn known_hosts(&self) -> String {
        HOST_KEY_KINDS
            .iter()
            .map(|k| format!("[127.0.0.1]:{} {}\n", self.port, self.host_key_pub(k)))
            .collect()
    }
}

fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Waits until the server accepts TCP connections on `port` (and, when its log level
/// shows it, has logged that it listens there: then the listener is surely sshd's).
fn wait_ready(
    child: &mut Child,
    port: u16,
    log_path: &Path,
    logs_listening: bool,
) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listening = format!("Server listening on 127.0.0.1 port {port}.");
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("exited at start: {status}"));
        }
        let logged = !logs_listening || read_log(log_path).contains(&listening);
        if logged && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("not accepting connections after {READY_TIMEOUT:?}"));
        }
        thread::sleep(Duration::from_millis(20));
    }
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_puts_caller_first_and_match_last() {
        let extra = "PasswordAuthentication no\nSubsystem=sftp internal-sftp\n\
                     Match User bob\n  ForceCommand true\n";
        let cfg = build_config(Path::new("/x"), 2222, extra);
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
