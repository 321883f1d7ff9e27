//! Issue 22 (regress `multiplex`): Unix-domain socket forwarding
//! (`direct-streamlocal@openssh.com`, `streamlocal-forward@openssh.com`),
//! with Debian's ssh as the client and Debian's sshd, configured alike,
//! as the yardstick:
//!
//! - `ssh -L /local.sock:/remote.sock` and `ssh -R /remote.sock:/local.sock`
//!   carry bytes both ways to a Unix echo server; the socket resshd makes
//!   for `-R` belongs to the user, with the mode StreamLocalBindMask leaves
//!   (the same as sshd's); a file already at the path makes `-R` fail
//!   unless StreamLocalBindUnlink (a Match block) removes it first;
//! - `AllowStreamLocalForwarding no` (Match), `local` (Match: `-L` only),
//!   and a key's `restrict`: refused, on each server the same;
//! - `ressh -R /path:host:port` (the three-namespace lab): the socket resshd
//!   made keeps working through a cut (the connection reset, new ones
//!   dropped until resshd's session is detached), and a connection made to
//!   it during the cut gets its echo once ressh reconnected (the listener
//!   lives in the session worker, which waits for the reconnect).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// A Unix echo server at `path` that anyone may connect to.
fn unix_echo(path: &Path) {
    let _ = fs::remove_file(path);
    let l = UnixListener::bind(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o777)).unwrap();
    serve_echo(move || l.accept().map(|(c, _)| c));
}

/// Whether a message sent to the socket at `path` comes back (the socket
/// must be listening within 20 s).
fn echoes(path: &Path) -> bool {
    let msg = format!("through {}\n", path.display());
    let mut c = wait_for(
        "the forwarded socket to listen",
        Duration::from_secs(20),
        || UnixStream::connect(path).ok(),
        || path.display().to_string(),
    );
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut back = vec![0u8; msg.len()];
    c.write_all(msg.as_bytes()).is_ok() && c.read_exact(&mut back).is_ok() && back == msg.as_bytes()
}

/// resshd and sshd with the same configuration.
struct Servers {
    resshd: Resshd,
    sshd: Sshd,
}

impl Servers {
    fn start(extra: &str) -> Servers {
        Servers {
            resshd: Resshd::start(&ressh_bin().with_file_name("resshd"), extra),
            sshd: Sshd::start(extra),
        }
    }

    /// `(server name, ssh_config)` for `user` against each server.
    fn configs(&self, dir: &Path, user: &TestUser, key: &Path) -> Vec<(&'static str, PathBuf)> {
        let mut v = Vec::new();
        for (name, port, known) in [
            (
                "resshd",
                self.resshd.port(),
                known_hosts_at(&self.resshd, self.resshd.port()),
            ),
            ("sshd", self.sshd.port(), self.sshd.known_hosts()),
        ] {
            let kh = dir.join(format!("known_hosts-{name}"));
            fs::write(&kh, known).unwrap();
            let cfg = dir.join(format!("ssh_config-{}-{name}", user.name));
            write_client_config(
                &cfg,
                &user.name,
                key,
                &kh,
                "127.0.0.1",
                port,
                "ExitOnForwardFailure yes\n",
            );
            v.push((name, cfg));
        }
        v
    }
}

/// `ssh -N` with a forward (`-L`/`-R` and its spec), running.
fn forward(cfg: &Path, flag: &str, spec: &str) -> Client {
    Client::spawn(
        Command::new(require_cmd("ssh"))
            .arg("-F")
            .arg(cfg)
            .args(["-N", flag, spec, "server"]),
    )
}

/// A `-L` forward works: bytes to `local` come back from the server's echo.
fn local_works(cfg: &Path, dir: &Path, remote_echo: &Path, tag: &str) -> bool {
    let local = dir.join(format!("l-{tag}.sock"));
    let _ = fs::remove_file(&local);
    let _ssh = forward(
        cfg,
        "-L",
        &format!("{}:{}", local.display(), remote_echo.display()),
    );
    echoes(&local)
}

/// A `-R` forward at `remote` to the client's echo at `local_echo`: whether
/// it works, and ssh's stderr.
fn remote_works(cfg: &Path, remote: &Path, local_echo: &Path) -> (bool, String) {
    let mut ssh = forward(
        cfg,
        "-R",
        &format!("{}:{}", remote.display(), local_echo.display()),
    );
    // Refused: ssh exits (ExitOnForwardFailure); accepted: the socket listens.
    let up = wait_for(
        "ssh -R to exit or its socket to listen",
        Duration::from_secs(20),
        || {
            if ssh.try_status().is_some() {
                Some(false)
            } else {
                UnixStream::connect(remote).ok().map(|_| true)
            }
        },
        || remote.display().to_string(),
    );
    let ok = up && echoes(remote);
    if !up {
        // ssh has exited: its stderr is read to the end (the reader thread
        // may not have taken the last lines yet).
        ssh.wait_exit(Duration::from_secs(5));
    }
    (ok, ssh.stderr())
}

#[test]
fn stock_ssh_forwards_unix_sockets_through_resshd_as_through_sshd() {
    let dir = TempDir::new("e2e-sl");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let user = TestUser::create("e2esl");
    let unlinker = TestUser::create("e2esu");
    let (key, line) = ssh_keygen(dir.path(), "ed25519", "");
    user.authorize_key(&line);
    unlinker.authorize_key(&line);
    let servers = Servers::start(&format!(
        "StreamLocalBindMask 0027\nMatch User {}\n    StreamLocalBindUnlink yes\n",
        unlinker.name
    ));
    // The server side's echo, in the user's home; the client side's here.
    let remote_echo = user.home.join("echo.sock");
    unix_echo(&remote_echo);
    let local_echo = dir.join("echo.sock");
    unix_echo(&local_echo);
    for (server, cfg) in servers.configs(dir.path(), &user, &key) {
        assert!(
            local_works(&cfg, dir.path(), &remote_echo, server),
            "{server}: no echo through ssh -L to a Unix socket"
        );
        let remote = user.home.join(format!("fwd-{server}.sock"));
        let (ok, err) = remote_works(&cfg, &remote, &local_echo);
        assert!(
            ok,
            "{server}: no echo through ssh -R from a Unix socket:\n{err}"
        );
        let meta = fs::metadata(&remote).unwrap();
        assert_eq!(
            (meta.uid(), format!("{:o}", meta.mode() & 0o7777)),
            (user.uid, "750".to_string()),
            "{server}: the -R socket's owner and mode (StreamLocalBindMask 0027)"
        );
        // The socket file stays after the forward, as with sshd: a second
        // -R on it fails without StreamLocalBindUnlink.
        let (ok, _) = remote_works(&cfg, &remote, &local_echo);
        assert!(
            !ok,
            "{server}: -R over an existing file without StreamLocalBindUnlink"
        );
    }
    // StreamLocalBindUnlink yes: a stale file at the path is replaced.
    for (server, cfg) in servers.configs(dir.path(), &unlinker, &key) {
        let remote = unlinker.home.join(format!("stale-{server}.sock"));
        fs::write(&remote, "stale").unwrap();
        unlinker.own(&remote, 0o600);
        let (ok, err) = remote_works(&cfg, &remote, &local_echo);
        assert!(
            ok,
            "{server}: -R over a stale file with StreamLocalBindUnlink:\n{err}"
        );
    }
    report(
        "streamlocal",
        "ssh -L and -R with Unix sockets: resshd as sshd (mode, owner, unlink)",
    );
}

#[test]
fn streamlocal_forwarding_refused_as_by_sshd() {
    let dir = TempDir::new("e2e-slno");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let off = TestUser::create("e2eso");
    let local_only = TestUser::create("e2esl");
    let restricted = TestUser::create("e2esr");
    let (key, line) = ssh_keygen(dir.path(), "ed25519", "");
    off.authorize_key(&line);
    local_only.authorize_key(&line);
    restricted.authorize_key(&format!("restrict {line}"));
    let servers = Servers::start(&format!(
        "Match User {}\n    AllowStreamLocalForwarding no\n\
         Match User {}\n    AllowStreamLocalForwarding local\n",
        off.name, local_only.name
    ));
    let local_echo = dir.join("echo.sock");
    unix_echo(&local_echo);
    for (user, local_allowed) in [(&off, false), (&local_only, true), (&restricted, false)] {
        let remote_echo = user.home.join("echo.sock");
        unix_echo(&remote_echo);
        for (server, cfg) in servers.configs(dir.path(), user, &key) {
            assert_eq!(
                local_works(&cfg, dir.path(), &remote_echo, server),
                local_allowed,
                "{server}, {}: ssh -L to a Unix socket",
                user.name
            );
            let remote = user.home.join(format!("fwd-{server}.sock"));
            let (ok, err) = remote_works(&cfg, &remote, &local_echo);
            assert!(!ok, "{server}, {}: ssh -R allowed", user.name);
            assert!(
                err.contains("remote port forwarding failed"),
                "{server}, {}: ssh -R not refused:\n{err}",
                user.name
            );
            assert!(
                !remote.exists(),
                "{server}: a refused -R made {}",
                remote.display()
            );
        }
    }
    report(
        "streamlocal",
        "AllowStreamLocalForwarding no/local and restrict: refused as by sshd",
    );
}

#[test]
fn a_ressh_unix_socket_remote_forward_survives_a_cut() {
    let lab = Lab::new("slcut", "DetachTimeout 120\n");
    // A TCP echo server in the client's namespace: the forward's target.
    let listener = lab
        .net
        .enter_client(|| TcpListener::bind(("127.0.0.1", 0)))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    serve_echo(move || listener.accept().map(|(c, _)| c));
    let remote = lab.user().home.join("fwd.sock");
    let spec = format!("{}:127.0.0.1:{port}", remote.display());
    let mut tunnel = Client::spawn(&mut lab.ressh(&["-N", "-R", &spec, "server"]));
    assert!(
        echoes(&remote),
        "no echo before the cut\n{}",
        tunnel.describe()
    );
    let meta = fs::metadata(&remote).unwrap();
    assert_eq!(meta.uid(), lab.user().uid, "the socket is not the user's");

    // The cut: the connection reset (resshd's session worker detaches) and
    // no new one let through until the test says so.
    let since = Instant::now();
    lab.net.drop_new_connections(true);
    lab.net.kill_tcp(PORT);
    tunnel.wait_err("connection lost", since, Duration::from_secs(15));
    lab.wait_log("the session to detach", T, |l| l.contains("Detached: user"));
    // Made during the cut: resshd's listener takes it; its channel opens
    // once ressh is back.
    let msg = b"during the cut\n";
    let mut during = UnixStream::connect(&remote).expect("the socket during the cut");
    during.write_all(msg).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    lab.net.drop_new_connections(false);
    during
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut back = vec![0u8; msg.len()];
    during.read_exact(&mut back).unwrap_or_else(|e| {
        panic!(
            "no echo of the connection made during the cut: {e}\n{}",
            tunnel.describe()
        )
    });
    assert_eq!(back, msg);
    assert!(
        echoes(&remote),
        "no echo after the cut\n{}",
        tunnel.describe()
    );
    wait_reconnects(&lab.resshd, 1, T);
    assert!(
        tunnel.try_status().is_none(),
        "ressh exited\n{}",
        tunnel.describe()
    );
    report(
        "streamlocal",
        "ressh -R /path:host:port through a cut, a connection made during it",
    );
}
