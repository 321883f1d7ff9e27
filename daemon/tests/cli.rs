//! resshd's everyday sshd command line: -i (inetd mode, as ssh's
//! ProxyCommand and with a socket on stdin), -T with and without -C, -t
//! on Debian's default /etc/ssh/sshd_config, -V.
//!
//! Every test needs root (it creates users) and fails without it.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{describe, text, Login, SSH_TIMEOUT};
use ressh_testkit::{
    require_cmd, require_root, resshd_bin, run_timeout, ssh_keygen, TempDir, TestUser,
};

/// A resshd configuration for inetd mode: its own privsep user, chroot,
/// broker socket and host key, in a temp dir.
struct InetdSetup {
    config: PathBuf,
    known_hosts: PathBuf,
    log: PathBuf,
    _dir: TempDir,
    _privsep: TestUser,
}

impl InetdSetup {
    fn new(extra: &str) -> InetdSetup {
        require_root();
        let privsep = TestUser::create("ips");
        let dir = TempDir::new("inetd");
        let (host_key, host_pub) = ssh_keygen(dir.path(), "ed25519", "");
        let config = dir.join("resshd_config");
        fs::write(
            &config,
            format!(
                "{extra}HostKey {}\nPrivilegeSeparationUser {}\nPrivilegeSeparationDirectory {}\n\
                 BrokerSocket {}\nPidFile none\nUsePAM no\nPrintMotd no\nPrintLastLog no\nLogLevel DEBUG\n",
                host_key.display(),
                privsep.name,
                dir.join("empty").display(),
                dir.join("broker.sock").display(),
            ),
        )
        .unwrap();
        let known_hosts = dir.join("known_hosts");
        // The ProxyCommand's host name, and the address of the socket test.
        fs::write(
            &known_hosts,
            format!("inetd-host {host_pub}\n[127.0.0.1]:* {host_pub}\n"),
        )
        .unwrap();
        InetdSetup {
            config,
            known_hosts,
            log: dir.join("resshd.log"),
            _dir: dir,
            _privsep: privsep,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `resshd -i` on this configuration, logging to [`Self::log`], as
    /// ssh's ProxyCommand.
    fn proxy_command(&self) -> String {
        format!(
            "ProxyCommand={} -i -f {} -E {}",
            resshd_bin().display(),
            self.config.display(),
            self.log.display()
        )
    }

    fn ssh(&self, login: &Login) -> Command {
        self.ssh_as(login, &login.user.name)
    }

    /// Like [`Self::ssh`] with another login name (`User`).
    fn ssh_as(&self, login: &Login, user: &str) -> Command {
        let mut c = Command::new(require_cmd("ssh"));
        c.args(["-F", "/dev/null", "-o", "BatchMode=yes"])
            .args(["-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args(["-o", "GlobalKnownHostsFile=/dev/null"])
            .args(["-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"])
            .arg("-o")
            .arg(format!("IdentityFile={}", login.key.display()))
            .arg("-o")
            .arg(format!("User={user}"))
            .args(["-o", "LogLevel=ERROR"]);
        c
    }
}

/// `ssh -o ProxyCommand="resshd -i -f CONFIG" user@host command`: the
/// monitor runs on the pipes ssh gives its ProxyCommand.
#[test]
fn inetd_mode_as_a_proxy_command() {
    let setup = InetdSetup::new("");
    let login = Login::new("inetd");
    let out = run_timeout(
        setup
            .ssh(&login)
            .arg("-o")
            .arg(setup.proxy_command())
            .arg("inetd-host")
            .arg("echo ok; id -un; echo \"$SSH_CONNECTION\""),
        SSH_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "{}\n--- resshd log ---\n{}",
        describe(&out),
        setup.log()
    );
    // No socket, so no address: shown as sshd shows it.
    assert_eq!(
        text(&out.stdout),
        format!("ok\n{}\nUNKNOWN 65535 UNKNOWN 65535\n", login.user.name)
    );
    let log = setup.log();
    assert!(
        log.contains("Connection from UNKNOWN port 65535 on UNKNOWN port 65535"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "Accepted publickey for {} from UNKNOWN port 65535 ssh2",
            login.user.name
        )),
        "{log}"
    );
    // "user:style" (a BSD authentication style, OpenSSH's proxy-connect
    // test): the style is dropped, as sshd drops it on Linux.
    let out = run_timeout(
        setup
            .ssh_as(&login, &format!("{}:bsdstyle", login.user.name))
            .arg("-o")
            .arg(setup.proxy_command())
            .arg("inetd-host")
            .arg("id -un"),
        SSH_TIMEOUT,
    );
    assert_eq!(
        text(&out.stdout),
        format!("{}\n", login.user.name),
        "{}",
        describe(&out)
    );
    // Without -e or -E nothing reaches ssh's stderr (sshd -i logs to
    // syslog).
    let proxy = format!(
        "{} -i -f {}",
        resshd_bin().display(),
        setup.config.display()
    );
    let out = run_timeout(
        setup
            .ssh(&login)
            .arg("-o")
            .arg(format!("ProxyCommand={proxy}"))
            .arg("inetd-host")
            .arg("echo quiet"),
        SSH_TIMEOUT,
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(text(&out.stdout), "quiet\n");
    assert!(!text(&out.stderr).contains("resshd"), "{}", describe(&out));
}

/// `resshd -i` with a TCP socket on stdin and stdout (as inetd runs it):
/// the peer's address is known.
#[test]
fn inetd_mode_on_a_socket() {
    let setup = InetdSetup::new("");
    let login = Login::new("inetds");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut client = setup.ssh(&login);
    client
        .args(["-p", &port.to_string(), "127.0.0.1", "echo via-socket"])
        .stdin(Stdio::null());
    let client = std::thread::spawn(move || run_timeout(&mut client, SSH_TIMEOUT));
    let (sock, peer) = listener.accept().unwrap();
    let fd = OwnedFd::from(sock);
    let mut daemon = Command::new(resshd_bin())
        .args(["-i", "-f"])
        .arg(&setup.config)
        .arg("-E")
        .arg(&setup.log)
        .stdin(Stdio::from(fd.try_clone().unwrap()))
        .stdout(Stdio::from(fd))
        .spawn()
        .unwrap();
    let out: Output = client.join().unwrap();
    let status = daemon.wait().unwrap();
    assert!(
        out.status.success(),
        "{}\n--- resshd log ---\n{}",
        describe(&out),
        setup.log()
    );
    assert_eq!(text(&out.stdout), "via-socket\n");
    assert_eq!(status.code(), Some(0), "after a session resshd -i exits 0");
    let log = setup.log();
    assert!(
        log.contains(&format!("Connection from 127.0.0.1 port {}", peer.port())),
        "{log}"
    );
}

/// `resshd -i` exits as sshd does when the connection ends before
/// authentication: 255. Here the client speaks SSH-1.5 (OpenSSH's
/// proto-mismatch regress test); resshd still sends its own version line.
#[test]
fn inetd_mode_exits_255_before_authentication() {
    let setup = InetdSetup::new("");
    let out = run_timeout(
        Command::new("sh")
            .arg("-c")
            .arg("echo SSH-1.5-HALLO | \"$0\" -i -f \"$1\" -E \"$2\"")
            .arg(resshd_bin())
            .arg(&setup.config)
            .arg(&setup.log),
        SSH_TIMEOUT,
    );
    assert_eq!(
        out.status.code(),
        Some(255),
        "{}\n{}",
        describe(&out),
        setup.log()
    );
    assert!(
        text(&out.stdout).starts_with("SSH-2.0-"),
        "{}",
        describe(&out)
    );
}

/// ExposeAuthInfo (OpenSSH's authinfo test, and as sshd writes the file):
/// SSH_USER_AUTH names a file of the user's, mode 0600, whose line names
/// the method and the key the user logged in with; the file is gone when
/// the session ends. Without it (the default) there is no SSH_USER_AUTH.
#[test]
fn expose_auth_info() {
    let login = Login::new("authinfo");
    let run = |extra: &str, command: &str| {
        let setup = InetdSetup::new(extra);
        let out = run_timeout(
            setup
                .ssh(&login)
                .arg("-o")
                .arg(setup.proxy_command())
                .arg("inetd-host")
                .arg(command),
            SSH_TIMEOUT,
        );
        (out, setup)
    };
    let (out, setup) = run(
        "ExposeAuthInfo yes\n",
        "echo \"$SSH_USER_AUTH\"; stat -c '%a %U' \"$SSH_USER_AUTH\"; cat \"$SSH_USER_AUTH\"",
    );
    assert!(out.status.success(), "{}\n{}", describe(&out), setup.log());
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    let path = lines.next().unwrap_or_default().to_string();
    assert!(path.starts_with("/tmp/sshauth."), "{stdout}");
    assert_eq!(
        lines.next(),
        Some(format!("600 {}", login.user.name).as_str())
    );
    let key: Vec<&str> = login.pub_line.split_whitespace().take(2).collect();
    assert_eq!(
        lines.next(),
        Some(format!("publickey {}", key.join(" ")).as_str())
    );
    assert!(!Path::new(&path).exists(), "{path} left behind");
    let (out, setup) = run("", "echo \"[${SSH_USER_AUTH-unset}]\"");
    assert!(out.status.success(), "{}\n{}", describe(&out), setup.log());
    assert_eq!(text(&out.stdout), "[unset]\n");
}

/// HostKeyAgent: a HostKey file with only the public key, its private half
/// in a stock ssh-agent; the monitor has the agent sign, and stock ssh
/// checks the key against known_hosts. Without HostKeyAgent the same
/// configuration has no such host key, and the login fails.
#[test]
fn host_key_in_an_agent() {
    let login = Login::new("hkagent");
    let dir = TempDir::new("hkagent");
    let (key, key_pub) = ssh_keygen(dir.path(), "ecdsa", "");
    let sock = dir.join("agent.sock");
    let mut agent = Command::new(require_cmd("ssh-agent"))
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + SSH_TIMEOUT;
    // Connectable, not just there: ssh-agent binds the socket, then listens.
    while std::os::unix::net::UnixStream::connect(&sock).is_err()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let added = run_timeout(
        Command::new(require_cmd("ssh-add"))
            .env("SSH_AUTH_SOCK", &sock)
            .arg(&key),
        SSH_TIMEOUT,
    );
    assert!(added.status.success(), "{}", describe(&added));
    fs::remove_file(&key).unwrap();
    let login_with = |extra: &str| {
        let setup = InetdSetup::new(&format!("{extra}HostKey {}.pub\n", key.display()));
        let mut kh = fs::read_to_string(&setup.known_hosts).unwrap();
        kh.push_str(&format!("inetd-host {key_pub}\n"));
        fs::write(&setup.known_hosts, kh).unwrap();
        let out = run_timeout(
            setup
                .ssh(&login)
                .args(["-o", "HostKeyAlgorithms=ecdsa-sha2-nistp256"])
                .arg("-o")
                .arg(setup.proxy_command())
                .arg("inetd-host")
                .arg("echo signed-by-agent"),
            SSH_TIMEOUT,
        );
        (out, setup.log())
    };
    let (out, log) = login_with(&format!("HostKeyAgent {}\n", sock.display()));
    let (without, without_log) = login_with("");
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(out.status.success(), "{}\n{log}", describe(&out));
    assert_eq!(text(&out.stdout), "signed-by-agent\n");
    assert!(!without.status.success(), "{}", describe(&without));
    assert!(
        without_log.contains("Unable to load host key"),
        "{without_log}"
    );
}

/// `resshd -T` output as keyword → values.
fn dump(args: &[&str]) -> BTreeMap<String, Vec<String>> {
    let out = run_timeout(Command::new(resshd_bin()).args(args), SSH_TIMEOUT);
    assert!(out.status.success(), "resshd {args:?}: {}", describe(&out));
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in text(&out.stdout).lines() {
        let (k, v) = l.split_once(' ').unwrap_or((l, ""));
        m.entry(k.to_string()).or_default().push(v.to_string());
    }
    m
}

fn one<'a>(m: &'a BTreeMap<String, Vec<String>>, k: &str) -> &'a str {
    m.get(k)
        .and_then(|v| v.first())
        .unwrap_or_else(|| panic!("no {k} in {m:?}"))
}

/// -T prints the effective configuration; -C applies Match (user, host,
/// address, local address and port) like sshd -T -C.
#[test]
fn dump_with_and_without_connection_spec() {
    require_root();
    let dir = TempDir::new("dump");
    let (key, _) = ssh_keygen(dir.path(), "ed25519", "");
    let cfg = dir.join("cfg");
    fs::write(
        &cfg,
        format!(
            "HostKey {key}\nPrivilegeSeparationUser nobody\nPrivilegeSeparationDirectory {d}/empty\n\
             BrokerSocket {d}/b.sock\nPidFile none\nUsePAM yes\nMaxSessions 7\n\
             PasswordAuthentication yes\nPrintMotd no\n\
             Match User alice Address 10.0.0.0/8\n  MaxSessions 2\n  PasswordAuthentication no\n\
             Match Host gw.example\n  AllowTcpForwarding no\n\
             Match LocalPort 2222\n  ForceCommand /bin/echo hi\n\
             Match RDomain vrf*\n  MaxAuthTries 4\n\
             Match All\n  PermitTTY no\n",
            key = key.display(),
            d = dir.path().display()
        ),
    )
    .unwrap();
    let c = cfg.display().to_string();
    let g = dump(&["-T", "-f", &c]);
    assert_eq!(one(&g, "usepam"), "yes");
    assert_eq!(one(&g, "printmotd"), "no");
    assert_eq!(one(&g, "printlastlog"), "yes");
    assert_eq!(one(&g, "maxsessions"), "7");
    assert_eq!(one(&g, "passwordauthentication"), "yes");
    assert_eq!(one(&g, "permittty"), "no");
    assert_eq!(one(&g, "forcecommand"), "none");
    let m = dump(&[
        "-T",
        "-f",
        &c,
        "-C",
        "user=alice,host=gw.example,addr=10.1.2.3,laddr=127.0.0.1,lport=2222",
    ]);
    assert_eq!(one(&m, "maxsessions"), "2");
    assert_eq!(one(&m, "passwordauthentication"), "no");
    assert_eq!(one(&m, "allowtcpforwarding"), "no");
    assert_eq!(one(&m, "forcecommand"), "/bin/echo hi");
    let other = dump(&["-T", "-f", &c, "-C", "user=bob,addr=10.1.2.3,lport=22"]);
    assert_eq!(one(&other, "maxsessions"), "7");
    assert_eq!(one(&other, "allowtcpforwarding"), "yes");
    assert_eq!(one(&other, "maxauthtries"), "6");
    // A routing domain, and a trailing comma (which ends the list, as in
    // sshd: OpenSSH's cfgmatch test writes one).
    let vrf = dump(&["-T", "-f", &c, "-C", "rdomain=vrf1,user=bob,"]);
    assert_eq!(one(&vrf, "maxauthtries"), "4");
    // -p and -o apply to -T as to the daemon.
    let p = dump(&["-T", "-f", &c, "-p", "2200", "-o", "MaxAuthTries=3"]);
    assert_eq!(p["port"], vec!["2200"]);
    assert_eq!(one(&p, "maxauthtries"), "3");
    // A bad specification is an error.
    let out = run_timeout(
        Command::new(resshd_bin()).args(["-T", "-f", &c, "-C", "bogus=1"]),
        SSH_TIMEOUT,
    );
    assert!(!out.status.success(), "{}", describe(&out));

    // Where sshd is there, its -T agrees on the keywords both print.
    let sshd = Path::new("/usr/sbin/sshd");
    if sshd.exists() {
        let plain = dir.join("sshd_cfg");
        let text_cfg = fs::read_to_string(&cfg).unwrap();
        let sshd_text: String = text_cfg
            .lines()
            .filter(|l| !l.starts_with("PrivilegeSeparation") && !l.starts_with("BrokerSocket"))
            .map(|l| format!("{l}\n"))
            .collect();
        fs::write(&plain, sshd_text).unwrap();
        let spec = "user=alice,host=gw.example,addr=10.1.2.3,laddr=127.0.0.1,lport=2222";
        let out = run_timeout(
            Command::new(sshd)
                .args(["-T", "-f"])
                .arg(&plain)
                .args(["-C", spec]),
            SSH_TIMEOUT,
        );
        if out.status.success() {
            let theirs = text(&out.stdout);
            for k in [
                "maxsessions",
                "passwordauthentication",
                "allowtcpforwarding",
                "forcecommand",
                "permittty",
                "usepam",
                "printmotd",
                "printlastlog",
            ] {
                let line = theirs
                    .lines()
                    .find(|l| l.split(' ').next() == Some(k))
                    .unwrap_or_else(|| panic!("sshd -T has no {k}"));
                assert_eq!(line, format!("{k} {}", one(&m, k)), "{k}");
            }
        }
    }
}

/// `resshd -t -f /etc/ssh/sshd_config` on Debian's default file passes
/// with warnings only; `-T` shows its values.
#[test]
fn debian_default_sshd_config() {
    require_root();
    let path = Path::new("/etc/ssh/sshd_config");
    assert!(
        path.exists(),
        "/etc/ssh/sshd_config is missing: install openssh-server (.ci/run does)"
    );
    let dir = TempDir::new("debcfg");
    let (key, _) = ssh_keygen(dir.path(), "ed25519", "");
    let args = [
        "-f".to_string(),
        path.display().to_string(),
        "-o".to_string(),
        format!("HostKey={}", key.display()),
        "-o".to_string(),
        "PrivilegeSeparationUser=nobody".to_string(),
        "-o".to_string(),
        format!(
            "PrivilegeSeparationDirectory={}",
            dir.join("empty").display()
        ),
    ];
    let out = run_timeout(
        Command::new(resshd_bin()).arg("-t").args(&args),
        SSH_TIMEOUT,
    );
    assert!(out.status.success(), "{}", describe(&out));
    for l in text(&out.stderr).lines() {
        assert!(
            l.contains("unsupported option") && l.contains("ignored")
                || l.contains("Deprecated option"),
            "not a warning: {l}\n{}",
            describe(&out)
        );
    }
    let mut dump_args = vec!["-T"];
    dump_args.extend(args.iter().map(|s| s.as_str()));
    let d = dump(&dump_args);
    // What Debian's file sets, as its lines say.
    let file = fs::read_to_string(path).unwrap();
    let set = |kw: &str| {
        file.lines()
            .map(|l| l.trim())
            .find(|l| l.split_whitespace().next() == Some(kw))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(|v| v.to_ascii_lowercase())
    };
    for (kw, key) in [
        ("UsePAM", "usepam"),
        (
            "KbdInteractiveAuthentication",
            "kbdinteractiveauthentication",
        ),
        ("PrintMotd", "printmotd"),
        ("PasswordAuthentication", "passwordauthentication"),
    ] {
        if let Some(v) = set(kw) {
            assert_eq!(one(&d, key), v, "{kw}");
        }
    }
    if file.lines().any(|l| l.starts_with("AcceptEnv LANG LC_*")) {
        assert_eq!(d["acceptenv"], vec!["LANG", "LC_*"]);
    }
    if file.contains("/usr/lib/openssh/sftp-server") {
        assert!(d["subsystem"].contains(&"sftp /usr/lib/openssh/sftp-server".to_string()));
    }
}

/// -V prints the version and exits.
#[test]
fn version() {
    let out = run_timeout(
        Command::new(resshd_bin()).arg("-V"),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stderr).starts_with("ressh_"),
        "{}",
        describe(&out)
    );
}

/// `Subsystem sftp internal-sftp` and `ForceCommand internal-sftp` (common
/// in existing sshd_configs) run resshd's in-process sftp server: stock
/// sftp works. A client's exec "internal-sftp" is a shell command like any
/// other; under ForceCommand internal-sftp an exec is refused with sshd's
/// words.
#[test]
fn internal_sftp_runs_the_sftp_server() {
    require_root();
    let login = Login::new("isftp");
    fs::write(login.user.home.join("hello.txt"), "hi\n").unwrap();
    for (extra, exec_out, exec_code) in [
        ("Subsystem sftp internal-sftp\n", "", 127),
        (
            "Subsystem sftp internal-sftp -l INFO\nForceCommand internal-sftp\n",
            "This service allows sftp connections only.\n",
            1,
        ),
    ] {
        let srv = common::Server::start(extra);
        let out = ressh_testkit::run_with_stdin(
            srv.sftp(&login).args(["-b", "-", "127.0.0.1"]),
            b"ls\n",
            SSH_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "{extra}: {}\n--- resshd log ---\n{}",
            describe(&out),
            srv.log()
        );
        assert!(
            text(&out.stdout).contains("hello.txt"),
            "{}",
            describe(&out)
        );
        let out = srv.exec(&login, "internal-sftp");
        assert_eq!(
            out.status.code(),
            Some(exec_code),
            "{extra}: {}",
            describe(&out)
        );
        assert_eq!(text(&out.stdout), exec_out, "{extra}: {}", describe(&out));
        srv.assert_healthy();
    }
}
