//! Issue 5, item 8: against stock OpenSSH, both sides behave as plain SSH,
//! with resilience off (docs/PROTOCOL.md §2).
//!
//! - Stock `ssh` and `sftp` against resshd: exec and a 16 MiB sftp round
//!   trip work; a killed connection ends the ssh session (no detach, no
//!   reconnect) and resshd logs no "Detached". As a control, ressh against
//!   the same resshd does negotiate resilience.
//! - ressh against stock sshd (Debian's `/usr/sbin/sshd`): exec and
//!   `sftp -S ressh` work; ressh reports no resilience, and a killed
//!   connection ends it with an error instead of a reconnect.
//!
//! Both in namespaces, so that `ss -K` can kill the connection.

use std::fs;
use std::time::{Duration, Instant};

use crate::common::*;

const SIZE: usize = 16 << 20;

/// put then get of a random file through `sftp` (with `-S ressh` when
/// `via_ressh`); checks both copies.
fn sftp_round_trip(
    net: &Net,
    config: &std::path::Path,
    dir: &TempDir,
    home: &std::path::Path,
    via_ressh: bool,
) {
    let local = dir.join("up.bin");
    random_file(&local, SIZE);
    let want = sha256_file(&local);
    let remote = home.join("legacy.bin");
    let back = dir.join("back.bin");
    let batch = dir.join("batch");
    fs::write(
        &batch,
        format!(
            "put {} {}\nget {} {}\n",
            local.display(),
            remote.display(),
            remote.display(),
            back.display()
        ),
    )
    .unwrap();
    let mut cmd = net.cmd_client(require_cmd("sftp"));
    if via_ressh {
        cmd.arg("-S").arg(ressh_bin());
    }
    cmd.arg("-F")
        .arg(config)
        .arg("-b")
        .arg(&batch)
        .arg("server");
    let out = run_timeout(&mut cmd, T);
    assert!(
        out.status.success(),
        "sftp: {}\n{}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(sha256_file(&remote), want, "uploaded file differs");
    assert_eq!(sha256_file(&back), want, "downloaded file differs");
}

/// Runs `cmd` (a client with `echo started; sleep 60` remotely), kills its
/// connection once it started, and returns the client after it exited and
/// how long that took after the kill.
fn killed_session(net: &Net, cmd: &mut std::process::Command) -> (Client, Duration) {
    let mut c = Client::spawn(cmd);
    c.wait_line("started", T);
    let t = Instant::now();
    net.kill_tcp(PORT);
    let status = c.wait_exit(Duration::from_secs(30));
    let took = t.elapsed();
    assert!(!status.success(), "the client survived the kill: {status}");
    (c, took)
}

#[test]
fn stock_openssh_clients_against_resshd_without_resilience() {
    let lab = Lab::new("legs", "DetachTimeout 300\n");
    let ssh = require_cmd("ssh");
    let out = run_timeout(
        lab.net
            .cmd_client(&ssh)
            .arg("-F")
            .arg(&lab.login.config)
            .args(["server", "echo hello from $(id -un)"]),
        T,
    );
    assert!(out.status.success(), "ssh: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("hello from {}\n", lab.user().name)
    );
    sftp_round_trip(
        &lab.net,
        &lab.login.config,
        &lab.dir,
        &lab.user().home,
        false,
    );

    let (c, took) = killed_session(
        &lab.net,
        lab.net
            .cmd_client(&ssh)
            .arg("-F")
            .arg(&lab.login.config)
            .args(["server", "echo started; sleep 60"]),
    );
    let log = lab.wait_log(
        "resshd to end the killed session",
        Duration::from_secs(10),
        |l| count(l, "Disconnected from user ") >= 3,
    );
    assert!(!log.contains("Detached"), "{log}");
    assert!(!log.contains("Reconnect"), "{log}");

    // Control: ressh against the same server negotiates resilience.
    let out = run_timeout(&mut lab.ressh(&["-v", "server", "true"]), T);
    assert!(out.status.success(), "ressh: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("resilience on"),
        "ressh -v against resshd: {}",
        text(&out.stderr)
    );
    report(
        "legacy",
        &format!(
            "stock ssh/sftp against resshd: exec and sftp fine; killed ssh exited after {:.0} \
             ms ({}), resshd: no detach",
            took.as_secs_f64() * 1000.0,
            c.stderr().lines().last().unwrap_or("")
        ),
    );
}

#[test]
fn ressh_against_stock_sshd_without_resilience() {
    require_netns();
    let net = Net::new("legc");
    let sshd = Sshd::start_binary_in(std::path::Path::new(SSHD_BIN), "", &net, PORT);
    let dir = TempDir::new("e2e-legacy");
    let known_hosts = dir.join("known_hosts");
    fs::write(&known_hosts, sshd.known_hosts()).unwrap();
    let login = Lab::make_login(&dir, &known_hosts, "l", CLIENT_EXTRA);

    let out = run_timeout(
        &mut ressh_cmd(
            &net,
            &login.config,
            &["-v", "server", "echo hello from $(id -un)"],
        ),
        T,
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "ressh: {err}\n{}", sshd.log());
    assert_eq!(
        text(&out.stdout),
        format!("hello from {}\n", login.user.name)
    );
    assert!(!err.contains("resilience on"), "{err}");
    sftp_round_trip(&net, &login.config, &dir, &login.user.home, true);

    let (c, took) = killed_session(
        &net,
        &mut ressh_cmd(
            &net,
            &login.config,
            &["-v", "server", "echo started; sleep 60"],
        ),
    );
    let err = c.stderr();
    assert!(!err.contains("resilience on"), "{err}");
    assert!(
        !err.contains("reconnect"),
        "ressh tried to reconnect: {err}"
    );
    report(
        "legacy",
        &format!(
            "ressh against stock sshd: exec and sftp -S ressh fine, no resilience; killed \
             ressh exited after {:.0} ms ({})",
            took.as_secs_f64() * 1000.0,
            err.lines().rfind(|l| !l.starts_with("debug")).unwrap_or("")
        ),
    );
}
