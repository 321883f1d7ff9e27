//! resshd started by an ordinary user (the personal-demo mode of issue 3):
//! it serves only that user, no process changes uid, and stock ssh logs in.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ressh_testkit::{
    free_port, require_cmd, require_root, resshd_bin, run_timeout, ssh_keygen, TempDir, TestUser,
};

#[test]
fn an_ordinary_user_runs_resshd_for_itself() {
    require_root();
    require_cmd("runuser");
    let owner = TestUser::create("nr");
    let other = TestUser::create("no");
    let dir = owner.home.join("resshd");
    fs::create_dir(&dir).unwrap();
    owner.own(&dir, 0o700);
    let (host_key, _) = ssh_keygen(&dir, "ed25519", "");
    owner.own(&host_key, 0o600);
    let keys = TempDir::new("nonroot-keys");
    let (client_key, pub_line) = ssh_keygen(keys.path(), "ed25519", "");
    owner.authorize_key(&pub_line);
    other.authorize_key(&pub_line);
    let port = free_port();
    let cfg = dir.join("resshd_config");
    fs::write(
        &cfg,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\nBrokerSocket {}\n",
            host_key.display(),
            dir.join("broker.sock").display()
        ),
    )
    .unwrap();
    owner.own(&cfg, 0o600);
    let log = dir.join("log");
    let mut daemon = Command::new("runuser")
        .args(["-u", &owner.name, "--"])
        .arg(resshd_bin())
        .args(["-D", "-e", "-f"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "resshd did not listen:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    fs::set_permissions(&client_key, fs::Permissions::from_mode(0o600)).unwrap();
    let ssh = |user: &str| {
        let mut c = Command::new("ssh");
        c.args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
        ])
        .args([
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
        ])
        .arg(&client_key)
        .args(["-p", &port.to_string()])
        .arg(format!("{user}@127.0.0.1"))
        .arg("id -un; echo $HOME");
        run_timeout(&mut c, Duration::from_secs(30))
    };
    let ok = ssh(&owner.name);
    // Nobody else: the daemon cannot become another user and does not try.
    let refused = ssh(&other.name);
    // runuser waits for resshd; the user's processes are resshd's tree.
    let _ = Command::new("pkill")
        .args(["-KILL", "-u", &owner.name])
        .status();
    let _ = daemon.kill();
    let _ = daemon.wait();
    let logtext = fs::read_to_string(&log).unwrap_or_default();
    let text = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert!(
        ok.status.success(),
        "{text}\n{}\n{logtext}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(text, format!("{}\n{}\n", owner.name, owner.home.display()));
    assert_eq!(refused.status.code(), Some(255));
    assert!(logtext.contains("Invalid user"), "{logtext}");
}
