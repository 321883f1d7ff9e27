//! Keys, the two servers (resshd and OpenSSH's sshd) with the same
//! configuration, and client command lines that behave the same for
//! `ressh` and `ssh`.

use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ressh_proto::keys::{KeyType, PrivateKey};

use crate::proc;

/// The host key's name in every client's known_hosts (`HostKeyAlias`), so
/// that the port and address do not matter.
pub const HOST_ALIAS: &str = "ressh-bench-server";

/// Which implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ressh,
    OpenSsh,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ressh => "ressh",
            Kind::OpenSsh => "OpenSSH",
        }
    }
}

/// An Ed25519 host key and an Ed25519 user key, made with ressh's own code
/// (no `ssh-keygen` needed), written in OpenSSH's format.
pub struct Keys {
    pub host_key: PathBuf,
    pub host_pub: String,
    pub user_key: PathBuf,
    pub user_pub: String,
}

fn write_private(path: &Path, text: &str) -> io::Result<()> {
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

impl Keys {
    pub fn generate(dir: &Path) -> Result<Keys, String> {
        let mk = |name: &str| -> Result<(PathBuf, String), String> {
            let k = PrivateKey::generate(KeyType::Ed25519).map_err(|e| e.to_string())?;
            let path = dir.join(name);
            let pem = k.to_openssh_pem("ressh-bench").map_err(|e| e.to_string())?;
            write_private(&path, &pem).map_err(|e| format!("{}: {e}", path.display()))?;
            let line = k.public_key().to_openssh("ressh-bench");
            fs::write(dir.join(format!("{name}.pub")), format!("{line}\n"))
                .map_err(|e| e.to_string())?;
            Ok((path, line))
        };
        let (host_key, host_pub) = mk("host_ed25519_key")?;
        let (user_key, user_pub) = mk("id_ed25519")?;
        Ok(Keys {
            host_key,
            host_pub,
            user_key,
            user_pub,
        })
    }
}

/// What a server is started with.
pub struct ServerSpec {
    pub kind: Kind,
    /// `resshd` or `/usr/sbin/sshd`.
    pub bin: PathBuf,
    /// Its own directory: config, log, broker socket, chroot.
    pub dir: PathBuf,
    pub listen: Ipv4Addr,
    /// None: a free port on 127.0.0.1 is picked (loopback only).
    pub port: Option<u16>,
    pub host_key: PathBuf,
    pub authorized_keys: PathBuf,
    /// resshd as root: the unprivileged user of its pre-auth worker.
    pub privsep_user: Option<String>,
    /// More configuration lines (both servers get the same ones).
    pub extra: String,
}

/// A running server; it and everything below it (connections, sessions,
/// detached sessions) are killed on drop.
pub struct Server {
    child: Child,
    pub kind: Kind,
    pub port: u16,
    pub addr: Ipv4Addr,
    pub log: PathBuf,
    pub config: PathBuf,
}

fn config_text(s: &ServerSpec, port: u16) -> String {
    let mut c = format!(
        "# written by ressh-bench\n{extra}\nPort {port}\nListenAddress {listen}\nHostKey {hk}\n\
         PidFile none\nAuthorizedKeysFile {ak}\nStrictModes no\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nUsePAM no\nLogLevel INFO\n",
        extra = s.extra,
        listen = s.listen,
        hk = s.host_key.display(),
        ak = s.authorized_keys.display()
    );
    if Path::new("/usr/lib/openssh/sftp-server").exists() {
        c += "Subsystem sftp /usr/lib/openssh/sftp-server\n";
    }
    if s.kind == Kind::Ressh {
        c += &format!("BrokerSocket {}\n", s.dir.join("broker.sock").display());
        if let Some(u) = &s.privsep_user {
            c += &format!(
                "PrivilegeSeparationUser {u}\nPrivilegeSeparationDirectory {}\n",
                s.dir.join("empty").display()
            );
        }
    } else {
        c += "PrintMotd no\nPrintLastLog no\n";
    }
    c
}

impl Server {
    /// Starts the server (`wrap` may adjust the command, e.g. to run it in
    /// a network namespace) and waits until it logs that it listens.
    pub fn start(spec: &ServerSpec, wrap: &dyn Fn(&mut Command)) -> Result<Server, String> {
        fs::create_dir_all(&spec.dir).map_err(|e| format!("{}: {e}", spec.dir.display()))?;
        if spec.kind == Kind::OpenSsh && crate::is_root() {
            // Debian's sshd wants its privsep directory, made at boot only.
            let _ = fs::create_dir_all("/run/sshd");
        }
        let config = spec.dir.join("server_config");
        let log = spec.dir.join("server.log");
        let mut last = String::new();
        for _ in 0..5 {
            let port = spec.port.unwrap_or_else(ressh_testkit::free_port);
            fs::write(&config, config_text(spec, port)).map_err(|e| e.to_string())?;
            let out = File::create(&log).map_err(|e| e.to_string())?;
            let err = out.try_clone().map_err(|e| e.to_string())?;
            let mut cmd = Command::new(&spec.bin);
            // Its own process group: a Ctrl-C at the terminal reaches only
            // us, and we take the whole tree down in order.
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            cmd.args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            wrap(&mut cmd);
            let child = cmd
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", spec.bin.display()))?;
            let mut server = Server {
                child,
                kind: spec.kind,
                port,
                addr: spec.listen,
                log: log.clone(),
                config: config.clone(),
            };
            let needle = format!("Server listening on {} port {port}", spec.listen);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let text = fs::read_to_string(&log).unwrap_or_default();
                if text.contains(&needle) {
                    if spec.listen.is_loopback() {
                        let addr = SocketAddr::from((spec.listen, port));
                        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
                            thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    }
                    return Ok(server);
                }
                if let Ok(Some(st)) = server.child.try_wait() {
                    last = format!("{} exited at start ({st}):\n{text}", spec.bin.display());
                    break;
                }
                if Instant::now() > deadline {
                    last = format!("{} did not start listening:\n{text}", spec.bin.display());
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            drop(server);
            if !last.contains("in use") || spec.port.is_some() {
                break;
            }
        }
        Err(last)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server and every process below it.
    pub fn tree(&self) -> Vec<u32> {
        let mut v = vec![self.pid()];
        v.extend(proc::descendants(self.pid()));
        v
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        proc::kill_tree(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How clients reach a server: the same options for `ressh`, `ssh` and
/// `sftp` (which passes them on to its transport).
#[derive(Clone)]
pub struct ClientSetup {
    pub kind: Kind,
    /// `ressh` or `/usr/bin/ssh`.
    pub bin: PathBuf,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// `-F` and `-o` options.
    pub opts: Vec<String>,
}

impl ClientSetup {
    /// Writes an empty ssh_config and a known_hosts with the host key into
    /// `dir`; the client reads nothing of the user's own files.
    pub fn new(
        kind: Kind,
        bin: &Path,
        dir: &Path,
        keys: &Keys,
        host: &str,
        port: u16,
        user: &str,
    ) -> Result<ClientSetup, String> {
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let cfg = dir.join("ssh_config");
        let kh = dir.join("known_hosts");
        fs::write(&cfg, "").map_err(|e| e.to_string())?;
        fs::write(&kh, format!("{HOST_ALIAS} {}\n", keys.host_pub)).map_err(|e| e.to_string())?;
        let o = |s: String| ["-o".to_string(), s];
        let mut opts = vec!["-F".to_string(), cfg.display().to_string()];
        for s in [
            format!("UserKnownHostsFile={}", kh.display()),
            "GlobalKnownHostsFile=/dev/null".into(),
            "StrictHostKeyChecking=yes".into(),
            format!("HostKeyAlias={HOST_ALIAS}"),
            format!("IdentityFile={}", keys.user_key.display()),
            "IdentitiesOnly=yes".into(),
            "IdentityAgent=none".into(),
            "BatchMode=yes".into(),
            "LogLevel=ERROR".into(),
            "KexAlgorithms=curve25519-sha256".into(),
            "HostKeyAlgorithms=ssh-ed25519".into(),
            "UpdateHostKeys=no".into(),
            "ControlMaster=no".into(),
        ] {
            opts.extend(o(s));
        }
        Ok(ClientSetup {
            kind,
            bin: bin.to_path_buf(),
            host: host.to_string(),
            port,
            user: user.to_string(),
            opts,
        })
    }

    /// `user@host`.
    pub fn dest(&self) -> String {
        format!("{}@{}", self.user, self.host)
    }

    /// `ressh|ssh <extra> <opts> -p PORT user@host` (append the command).
    /// `extra` comes first: its `-o` options win (the first value counts).
    pub fn ssh(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(extra)
            .args(&self.opts)
            .arg("-p")
            .arg(self.port.to_string())
            .arg(self.dest());
        c
    }

    /// `sftp [-S ressh] <extra> <opts> -P PORT` (append the destination).
    pub fn sftp(&self, extra: &[&str]) -> Command {
        let mut c = Command::new("sftp");
        if self.kind == Kind::Ressh {
            c.arg("-S").arg(&self.bin);
        }
        c.args(extra)
            .args(&self.opts)
            .arg("-P")
            .arg(self.port.to_string());
        c
    }
}
