//! resshd with `UsePAM yes` and real PAM (Debian's pam_unix through
//! common-auth, common-account, common-session; pam_env; pam_nologin):
//! stock ssh logs in with a password and with keyboard-interactive (typed
//! by sshpass); locked and expired accounts are refused with sshd's log
//! lines; pam_env's variables reach the session; a pty session shows in
//! `who` while it lives and in `last` after; an interactive login shows
//! the last login and the motd.
//!
//! The tests install a PAM service file /etc/pam.d/resshd for the time
//! they run (one test at a time; an existing file is put back after),
//! with pam_env and pam_nologin pointed at files of the test.
//!
//! Every test needs root (users, /etc/pam.d) and fails without it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::{describe, text, wait_for, LiveSession, Login, Server, SSH_TIMEOUT};
use ressh_testkit::{require_cmd, require_root, run_ok, run_timeout, TempDir, TestUser};

const PAM_FILE: &str = "/etc/pam.d/resshd";
const PASSWORD: &str = "c0rrect-h0rse-battery";

/// One test at a time owns /etc/pam.d/resshd.
static PAM_LOCK: Mutex<()> = Mutex::new(());

/// /etc/pam.d/resshd for one test, like Debian's /etc/pam.d/sshd (without
/// the SELinux, loginuid, keyinit and motd modules), with pam_nologin's
/// file and pam_env's envfile in the test's own directory. The previous
/// file (if any) is restored on drop.
struct PamService {
    dir: TempDir,
    saved: Option<Vec<u8>>,
    _lock: MutexGuard<'static, ()>,
}

impl PamService {
    fn install() -> PamService {
        require_root();
        let lock = PAM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = TempDir::new("pam");
        fs::write(
            dir.join("environment"),
            "RESSH_PAM_TEST=from-pam-env\nRESSH_PAM_OTHER=\"quoted value\"\n",
        )
        .unwrap();
        let saved = fs::read(PAM_FILE).ok();
        let text = format!(
            "# written by ressh's tests (daemon/tests/pam.rs); removed after them\n\
             @include common-auth\n\
             auth       optional     pam_group.so\n\
             account    required     pam_nologin.so file={nologin}\n\
             @include common-account\n\
             @include common-session\n\
             session    required     pam_env.so readenv=1 envfile={env}\n\
             @include common-password\n",
            nologin = dir.join("nologin").display(),
            env = dir.join("environment").display(),
        );
        fs::write(PAM_FILE, text).unwrap();
        PamService {
            dir,
            saved,
            _lock: lock,
        }
    }

    fn nologin(&self) -> PathBuf {
        self.dir.join("nologin")
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        match &self.saved {
            Some(b) => {
                let _ = fs::write(PAM_FILE, b);
            }
            None => {
                let _ = fs::remove_file(PAM_FILE);
            }
        }
    }
}

fn pam_server(extra: &str) -> Server {
    Server::start(&format!(
        "UsePAM yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication yes\n{extra}"
    ))
}

/// `sshpass -e ssh ...` as `user` with only `method` (password or
/// keyboard-interactive), the password typed by sshpass.
fn ssh_with_password(srv: &Server, user: &str, password: &str, method: &str) -> Command {
    let mut c = Command::new(require_cmd("sshpass"));
    c.env("SSHPASS", password).arg("-e").arg(require_cmd("ssh"));
    c.args([
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        &format!("UserKnownHostsFile={}", srv.known_hosts.display()),
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        &format!("PreferredAuthentications={method}"),
        "-o",
        "NumberOfPasswordPrompts=1",
        "-o",
        "IdentityAgent=none",
        "-o",
        &format!("User={user}"),
        "-o",
        "ConnectTimeout=20",
        "-o",
        "LogLevel=ERROR",
        "-p",
        &srv.port().to_string(),
        "127.0.0.1",
    ]);
    c
}

fn run_pw(srv: &Server, user: &str, password: &str, method: &str, command: &str) -> Output {
    run_timeout(
        ssh_with_password(srv, user, password, method).arg(command),
        SSH_TIMEOUT,
    )
}

fn log_has(srv: &Server, what: &str) -> String {
    srv.wait_log(what, Duration::from_secs(10), |l| l.contains(what))
}

/// Password and keyboard-interactive logins through PAM; pam_env's
/// variables in the session; a wrong password fails with sshd's line.
#[test]
fn password_and_keyboard_interactive_through_pam() {
    let pam = PamService::install();
    let user = TestUser::create("pampw");
    user.set_password(PASSWORD);
    let srv = pam_server("");

    for (method, label) in [
        ("password", "password"),
        ("keyboard-interactive", "keyboard-interactive/pam"),
    ] {
        let out = run_pw(
            &srv,
            &user.name,
            PASSWORD,
            method,
            "id -un; echo \"$RESSH_PAM_TEST|$RESSH_PAM_OTHER\"",
        );
        assert!(
            out.status.success(),
            "{method}: {}\n--- resshd log ---\n{}",
            describe(&out),
            srv.log()
        );
        assert_eq!(
            text(&out.stdout),
            format!("{}\nfrom-pam-env|quoted value\n", user.name),
            "{method}"
        );
        log_has(
            &srv,
            &format!("Accepted {label} for {} from 127.0.0.1 port", user.name),
        );
        let out = run_pw(&srv, &user.name, "wrong-password", method, "true");
        assert!(!out.status.success(), "{method}: {}", describe(&out));
        log_has(
            &srv,
            &format!("Failed {label} for {} from 127.0.0.1 port", user.name),
        );
    }
    // Unknown users go through PAM too, and fail.
    let out = run_pw(&srv, "no-such-user-ressh", PASSWORD, "password", "true");
    assert!(!out.status.success(), "{}", describe(&out));
    log_has(
        &srv,
        "Failed password for invalid user no-such-user-ressh from 127.0.0.1",
    );
    // The password never reaches the log.
    assert!(!srv.log().contains(PASSWORD), "{}", srv.log());
    srv.assert_healthy();
    drop(pam);
}

/// /etc/security/group.conf (pam_group has no option for another file)
/// with one rule of the test; the previous file is restored on drop. Only
/// taken while the test holds the PAM service, so under PAM_LOCK.
struct GroupConf {
    saved: Option<Vec<u8>>,
}

const GROUP_CONF: &str = "/etc/security/group.conf";

impl GroupConf {
    fn install(_pam: &PamService, rule: &str) -> GroupConf {
        let saved = fs::read(GROUP_CONF).ok();
        fs::write(
            GROUP_CONF,
            format!(
                "# written by ressh's tests (daemon/tests/pam.rs); removed after them\n{rule}\n"
            ),
        )
        .unwrap();
        GroupConf { saved }
    }
}

impl Drop for GroupConf {
    fn drop(&mut self) {
        match &self.saved {
            Some(b) => {
                let _ = fs::write(GROUP_CONF, b);
            }
            None => {
                let _ = fs::remove_file(GROUP_CONF);
            }
        }
    }
}

/// Groups that pam_setcred grants (pam_group) are the session's, as with
/// sshd, besides the user's own.
#[test]
fn groups_from_pam_setcred_reach_the_session() {
    let pam = PamService::install();
    let user = TestUser::create("pamgrp");
    user.set_password(PASSWORD);
    // A group the user is not in: Debian's base-passwd always has `games`
    // (gid 60), with no members.
    let group = "games".to_string();
    let conf = GroupConf::install(&pam, &format!("resshd;*;{};Al0000-2400;{group}", user.name));
    let srv = pam_server("");
    let out = run_pw(&srv, &user.name, PASSWORD, "password", "id -Gn");
    assert!(
        out.status.success(),
        "{}\n--- resshd log ---\n{}",
        describe(&out),
        srv.log()
    );
    let groups: Vec<String> = text(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert!(groups.contains(&group), "id -Gn: {groups:?}");
    assert!(groups.contains(&user.name), "id -Gn: {groups:?}");
    srv.assert_healthy();
    drop(conf);
    drop(pam);
}

/// Without UsePAM, password authentication stays off (as before PAM).
#[test]
fn without_pam_passwords_are_refused() {
    require_root();
    let user = TestUser::create("nopam");
    user.set_password(PASSWORD);
    let srv = Server::start("PasswordAuthentication yes\nKbdInteractiveAuthentication yes\n");
    for method in ["password", "keyboard-interactive"] {
        let out = run_pw(&srv, &user.name, PASSWORD, method, "true");
        assert!(!out.status.success(), "{method}: {}", describe(&out));
        assert!(
            text(&out.stderr).contains("Permission denied (publickey)"),
            "{method}: {}",
            describe(&out)
        );
    }
    srv.assert_healthy();
}

/// Locked (usermod -L) and expired (chage -E 0) accounts, and
/// pam_nologin: refused with sshd's log lines, with PAM and without.
#[test]
fn locked_expired_and_nologin_are_refused() {
    let pam = PamService::install();
    let login = Login::new("pamacct");
    login.user.set_password(PASSWORD);
    let name = login.user.name.clone();
    let srv = pam_server("");
    // Before anything: the key and the password both work.
    srv.exec_ok(&login, "true");
    let out = run_pw(&srv, &name, PASSWORD, "password", "true");
    assert!(out.status.success(), "{}", describe(&out));

    // pam_nologin: its file's text reaches the client.
    fs::write(pam.nologin(), "ressh maintenance window\n").unwrap();
    let out = srv.exec(&login, "true");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("ressh maintenance window"),
        "{}",
        describe(&out)
    );
    log_has(
        &srv,
        &format!("Access denied for user {name} by PAM account configuration"),
    );
    fs::remove_file(pam.nologin()).unwrap();
    srv.exec_ok(&login, "true");

    // Locked: the password no longer matches (pam_unix); with PAM, sshd
    // leaves keys to PAM's account modules, which allow them.
    run_ok(Command::new(require_cmd("usermod")).args(["-L", &name]));
    let out = run_pw(&srv, &name, PASSWORD, "password", "true");
    assert!(!out.status.success(), "{}", describe(&out));
    log_has(&srv, &format!("Failed password for {name} from 127.0.0.1"));
    srv.exec_ok(&login, "true");
    // Without PAM, sshd refuses a locked account outright, keys included.
    let plain = Server::start("");
    let out = plain.exec(&login, "true");
    assert!(!out.status.success(), "{}", describe(&out));
    log_has(
        &plain,
        &format!("User {name} not allowed because account is locked"),
    );
    run_ok(Command::new(require_cmd("usermod")).args(["-U", &name]));

    // Expired: the password is right, PAM's account management refuses.
    run_ok(Command::new(require_cmd("chage")).args(["-E", "0", &name]));
    let out = run_pw(&srv, &name, PASSWORD, "password", "true");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("Your account has expired"),
        "{}",
        describe(&out)
    );
    let log = log_has(&srv, "Your account has expired");
    assert_eq!(
        log.matches(&format!(
            "Access denied for user {name} by PAM account configuration"
        ))
        .count(),
        2,
        "{log}"
    );
    // Only the first password login (before the lock) got in.
    assert_eq!(
        log.matches(&format!("Accepted password for {name}"))
            .count(),
        1,
        "{log}"
    );
    let out = srv.exec(&login, "true");
    assert!(!out.status.success(), "{}", describe(&out));
    // Without PAM: sshd's own check.
    let out = plain.exec(&login, "true");
    assert!(!out.status.success(), "{}", describe(&out));
    log_has(&plain, &format!("Account {name} has expired"));
    run_ok(Command::new(require_cmd("chage")).args(["-E", "-1", &name]));
    srv.exec_ok(&login, "true");
    srv.assert_healthy();
    plain.assert_healthy();
}

/// Creates /run/utmp (as systemd does at boot) if it is missing; removes
/// it again on drop if it made it.
struct Utmp {
    made: bool,
}

impl Utmp {
    fn ensure() -> Utmp {
        let p = Path::new("/run/utmp");
        if p.exists() {
            return Utmp { made: false };
        }
        fs::write(p, b"").unwrap();
        let _ = Command::new("chgrp").args(["utmp", "/run/utmp"]).status();
        let _ = Command::new("chmod").args(["664", "/run/utmp"]).status();
        Utmp { made: true }
    }
}

impl Drop for Utmp {
    fn drop(&mut self) {
        if self.made {
            let _ = fs::remove_file("/run/utmp");
        }
    }
}

/// A pty session: PAM's session opens and closes around it; `who` lists
/// it while it lives and `last` after; an interactive login shows the
/// last login (PrintLastLog) and /etc/motd (PrintMotd).
#[test]
fn pty_sessions_in_who_and_last_and_login_messages() {
    let pam = PamService::install();
    let _utmp = Utmp::ensure();
    let login = Login::new("pamwho");
    let name = login.user.name.clone();
    let srv = pam_server("PrintMotd yes\nPrintLastLog yes\n");

    let mut live = LiveSession::start({
        let mut c = srv.ssh(&login, &["-tt"]);
        c.arg("echo \"tty=$(tty)\"; read x");
        c
    });
    let who = wait_for(
        "who to list the session",
        Duration::from_secs(20),
        || {
            let out = run_ok(Command::new(require_cmd("who")).arg("-a"));
            let t = text(&out.stdout);
            t.lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.contains("pts/"))
                .then_some(t)
        },
        || srv.log(),
    );
    assert!(who.contains("127.0.0.1"), "{who}");
    assert!(live.running());
    let out = live.finish(b"\n");
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = text(&out.stdout);
    let tty = stdout
        .lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("tty=/dev/"))
        .unwrap_or_else(|| panic!("no tty in {stdout:?}"))
        .to_string();
    // A command is not an interactive login: no login message.
    assert!(!stdout.contains("Last login:"), "{stdout}");
    wait_for(
        "who to forget the session",
        Duration::from_secs(20),
        || {
            let out = run_ok(&mut Command::new(require_cmd("who")));
            (!text(&out.stdout)
                .lines()
                .any(|l| l.starts_with(&format!("{name} "))))
            .then_some(())
        },
        || srv.log(),
    );
    let last = wait_for(
        "last to show the session",
        Duration::from_secs(20),
        || {
            let out = run_ok(Command::new(require_cmd("last")).args(["-w", "-i", &name]));
            let t = text(&out.stdout);
            t.lines()
                .any(|l| {
                    l.starts_with(&format!("{name} "))
                        && l.contains(&tty)
                        && l.contains("127.0.0.1")
                        && !l.contains("still logged in")
                })
                .then_some(t)
        },
        || srv.log(),
    );
    assert!(!last.is_empty());

    // An interactive login: the last login (the session above) and the motd.
    let mut shell = LiveSession::start(srv.ssh(&login, &["-tt"]));
    std::thread::sleep(Duration::from_millis(500));
    assert!(shell.running());
    let out = shell.finish(b"exit\n");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Last login: ") && stdout.contains("from 127.0.0.1"),
        "{}",
        describe(&out)
    );
    if let Ok(motd) = fs::read_to_string("/etc/motd") {
        if let Some(first) = motd.lines().find(|l| !l.trim().is_empty()) {
            assert!(stdout.contains(first.trim()), "{stdout}");
        }
    }
    // With ~/.hushlogin: nothing.
    let hush = login.user.home.join(".hushlogin");
    fs::write(&hush, "").unwrap();
    login.user.own(&hush, 0o644);
    let shell = LiveSession::start(srv.ssh(&login, &["-tt"]));
    std::thread::sleep(Duration::from_millis(500));
    let out = shell.finish(b"exit\n");
    assert!(
        !text(&out.stdout).contains("Last login:"),
        "{}",
        describe(&out)
    );
    srv.assert_healthy();
    drop(pam);
}
