//! Proves the harness against the real peer: a real user logs in with a real key to
//! Debian's stock sshd through Debian's stock ssh, and everything is cleaned up.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ressh_testkit::{
    require_cmd, require_root, run, run_with_stdin, ssh_keygen, Sshd, TempDir, TestUser,
};

/// Stock `ssh` with no user config and no host key checks, key auth only.
fn stock_ssh(sshd: &Sshd, key: &Path, user: &TestUser) -> Command {
    let mut cmd = Command::new(require_cmd("ssh"));
    cmd.args([
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-i",
    ])
    .arg(key)
    .args(["-p", &sshd.port().to_string()])
    .arg(format!("{}@127.0.0.1", user.name));
    cmd
}

fn user_exists(name: &str) -> bool {
    run(Command::new(require_cmd("getent")).args(["passwd", name]))
        .status
        .success()
}

#[test]
fn stock_ssh_to_stock_sshd_as_test_user() {
    require_root();
    let keys = TempDir::new("smoke");
    let user = TestUser::create("smoke");
    assert!(user.name.len() <= 31, "{}", user.name);
    assert!(user_exists(&user.name));
    let (key, pub_line) = ssh_keygen(keys.path(), "ed25519", "");
    user.authorize_key(&pub_line);
    let sshd = Sshd::start("");

    let out = run(stock_ssh(&sshd, &key, &user).arg("echo hi; id -un; exit 3"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "ssh failed.\nstdout: {stdout}\nstderr: {}\nsshd log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
    assert_eq!(stdout, format!("hi\n{}\n", user.name));
    assert!(sshd
        .log()
        .contains(&format!("Accepted publickey for {}", user.name)));

    let name = user.name.clone();
    let home = user.home.clone();
    drop(user);
    assert!(!user_exists(&name), "user {name} must be deleted on drop");
    assert!(!home.exists(), "{} must be removed on drop", home.display());
}

#[test]
fn stock_sftp_and_host_keys() {
    require_root();
    let keys = TempDir::new("smoke");
    let user = TestUser::create("sftp");
    let (key, pub_line) = ssh_keygen(keys.path(), "ecdsa", "");
    user.authorize_key(&pub_line);
    let sshd = Sshd::start("");
    for kind in ["ed25519", "rsa", "ecdsa"] {
        assert!(sshd.host_key_pub(kind).starts_with(match kind {
            "ed25519" => "ssh-ed25519 ",
            "rsa" => "ssh-rsa ",
            _ => "ecdsa-sha2-nistp256 ",
        }));
    }

    // Strict host key checking against the server's own known_hosts lines.
    let known = keys.join("known_hosts");
    std::fs::write(&known, sshd.known_hosts()).unwrap();
    let mut sftp = Command::new(require_cmd("sftp"));
    sftp.args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o"])
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .args(["-o", "BatchMode=yes", "-i"])
        .arg(&key)
        .args(["-P", &sshd.port().to_string(), "-b", "-"])
        .arg(format!("{}@127.0.0.1", user.name));
    let out = run_with_stdin(&mut sftp, b"pwd\nmkdir made\n", Duration::from_secs(60));
    assert!(
        out.status.success(),
        "sftp failed: {}\nsshd log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&user.home.display().to_string()),
        "{stdout}"
    );
    assert!(user.home.join("made").is_dir());
}

#[test]
fn sshd_drop_kills_sessions() {
    require_root();
    let keys = TempDir::new("smoke");
    let user = TestUser::create("kill");
    let (key, pub_line) = ssh_keygen(keys.path(), "ed25519", "");
    user.authorize_key(&pub_line);
    let sshd = Sshd::start("LogLevel INFO");
    assert!(
        !sshd.log().contains("debug1:"),
        "caller's LogLevel must win"
    );
    // A session that would outlive the test by far.
    let mut ssh = stock_ssh(&sshd, &key, &user)
        .arg("sleep 600")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let has_sleep = |u: &TestUser| {
        u.processes().iter().any(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep")
        })
    };
    while !has_sleep(&user) {
        assert!(
            Instant::now() < deadline,
            "remote sleep never started:\n{}",
            sshd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(sshd);
    // SIGKILL is delivered asynchronously: allow a moment, bounded.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !user.processes().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = user.processes();
    let _ = ssh.kill();
    let _ = ssh.wait();
    assert!(
        left.is_empty(),
        "dropping Sshd must end its sessions; left: {left:?}"
    );
}
