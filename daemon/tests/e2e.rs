//! resshd end to end with Debian's stock OpenSSH clients (`ssh`, `sftp`,
//! `scp`), real users made by the test, real ptys (tmux) and real sockets
//! on 127.0.0.1: login with ed25519 and RSA keys, exec, the user's groups,
//! a pty shell with window changes, AcceptEnv, forced commands, bulk
//! transfers and TCP forwarding in both directions.
//!
//! Every test needs root (it creates users) and fails without it.

mod common;

use std::fs;
use std::thread;
use std::time::Duration;

use common::{
    describe, echo_round_trip, random_bytes, sha256_file, text, wait_listening, Bg, EchoServer,
    Login, Server, TestGroup, SSH_TIMEOUT,
};
use ressh_testkit::{free_port, require_root, run_timeout, TempDir, Tmux};

/// Item 1: ed25519 and RSA logins; exec's stdout, stderr and exit status; the
/// session's uid, gid and supplementary groups.
#[test]
fn login_with_ed25519_and_rsa_exec_and_groups() {
    require_root();
    let login = Login::new("login");
    let group = TestGroup::create("lg");
    group.add(&login.user);
    let rsa = login.add_key("rsa", "");
    let srv = Server::start("");

    // ed25519: stdout, stderr and the exit status come through separately.
    let out = srv.exec(&login, "echo out; echo err >&2; exit 7");
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}\n--- resshd log ---\n{}",
        describe(&out),
        srv.log()
    );
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");
    assert!(
        srv.log().contains(&format!(
            "Accepted publickey for {} from 127.0.0.1",
            login.user.name
        )),
        "{}",
        srv.log()
    );

    // The session is the user, with the user's primary and supplementary groups.
    let ids = srv.exec_ok(&login, "id -un; id -u; id -g; id -G; echo $HOME; pwd");
    let lines: Vec<&str> = ids.lines().collect();
    assert_eq!(lines.len(), 6, "{ids}");
    assert_eq!(lines[0], login.user.name);
    assert_eq!(lines[1], login.user.uid.to_string());
    assert_eq!(lines[2], login.user.gid.to_string());
    let mut groups: Vec<u32> = lines[3]
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    groups.sort_unstable();
    let mut want = vec![login.user.gid, group.gid];
    want.sort_unstable();
    assert_eq!(groups, want, "id -G: {}", lines[3]);
    let home = login.user.home.display().to_string();
    assert_eq!(lines[4], home);
    assert_eq!(lines[5], home, "the session starts in the home directory");

    // RSA (ssh-keygen's default size); ssh signs with rsa-sha2-*.
    let out = run_timeout(
        srv.ssh_key(&login.with_key(&rsa), &[])
            .arg("echo rsa-ok; id -un"),
        SSH_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "RSA login failed\n{}\n--- resshd log ---\n{}",
        describe(&out),
        srv.log()
    );
    assert_eq!(text(&out.stdout), format!("rsa-ok\n{}\n", login.user.name));
    let log = srv.log();
    assert!(
        log.lines().any(|l| l.contains(&format!(
            "Accepted publickey for {} from 127.0.0.1",
            login.user.name
        )) && l.to_ascii_lowercase().contains("rsa")),
        "{log}"
    );

    // A bigger output through exec.
    let out = run_timeout(
        srv.ssh(&login, &[]).arg("head -c 3000000 /dev/zero"),
        SSH_TIMEOUT,
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(out.stdout.len(), 3_000_000);
    assert!(out.stdout.iter().all(|&b| b == 0));
    srv.assert_healthy();
}

/// Item 2: A pty shell in tmux: commands run, `stty size` shows the window's
/// size, and a resize reaches the pty (window-change).
#[test]
fn pty_shell_through_tmux_with_resize() {
    require_root();
    let login = Login::new("pty");
    let srv = Server::start("");
    let tmux = Tmux::new(&format!("pty{}", srv.port()));
    tmux.start(100, 30, &srv.ssh_shell_line(&login, &["-tt"]));
    // dash's prompt.
    tmux.wait("the shell prompt", |s| {
        s.lines().any(|l| l.trim_end().ends_with('$'))
    });
    tmux.keys(&["echo \"U=$(id -un) T=$TERM\"; tty; stty size", "Enter"]);
    let s = tmux.wait("the first stty size", |s| s.contains("30 100"));
    assert!(
        s.contains(&format!("U={} T=xterm", login.user.name))
            || s.contains(&format!("U={} T=screen", login.user.name))
            || s.contains(&format!("U={} T=tmux", login.user.name)),
        "user and TERM: {s}"
    );
    assert!(s.contains("/dev/pts/"), "{s}");

    tmux.resize_until_seen(120, 40);
    tmux.resize_until_seen(90, 25);

    tmux.keys(&["clear; echo $((6*7))", "Enter"]);
    tmux.wait("arithmetic", |s| s.lines().any(|l| l.trim() == "42"));

    tmux.keys(&["exit", "Enter"]);
    common::wait_for(
        "ssh to end after exit",
        Duration::from_secs(20),
        || (!tmux.alive()).then_some(()),
        || srv.log(),
    );
    srv.wait_log(
        "the monitor's disconnect line",
        Duration::from_secs(10),
        |l| l.contains(&format!("Disconnected from user {}", login.user.name)),
    );
    srv.assert_healthy();
}

/// Item 3: AcceptEnv FOO_*: FOO_X set by the client arrives, BAR does not.
#[test]
fn accept_env_passes_only_matching_variables() {
    require_root();
    let login = Login::new("env");
    let srv = Server::start("AcceptEnv FOO_*\n");
    // ssh takes the first SetEnv option only (first-match-wins), so both
    // variables go in one option; SendEnv adds one from ssh's environment.
    let out = run_timeout(
        srv.ssh(
            &login,
            &["-v", "-o", "SetEnv=FOO_X=1 BAR=2", "-o", "SendEnv=FOO_Y"],
        )
        .env("FOO_Y", "from-sendenv")
        .arg("echo \"FOO_X=${FOO_X-unset} BAR=${BAR-unset} FOO_Y=${FOO_Y-unset}\""),
        SSH_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "{}\n--- resshd log ---\n{}",
        describe(&out),
        srv.log()
    );
    // ssh -v logs each variable it sends (`setting env BAR = "2"`).
    let err = text(&out.stderr);
    let sent = |name: &str, value: &str| {
        err.lines()
            .any(|l| l.contains(&format!("setting env {name} = \"{value}\"")))
    };
    assert!(
        sent("FOO_X", "1") && sent("BAR", "2") && sent("FOO_Y", "from-sendenv"),
        "ssh must have sent all three variables:\n{err}"
    );
    assert_eq!(text(&out.stdout), "FOO_X=1 BAR=unset FOO_Y=from-sendenv\n");
    srv.assert_healthy();
}

/// Item 4: A forced command from authorized_keys replaces the requested one,
/// which it sees in SSH_ORIGINAL_COMMAND.
#[test]
fn forced_command_from_authorized_keys() {
    require_root();
    let login = Login::new("force");
    let forced = login.add_key("ed25519", "command=\"echo forced $SSH_ORIGINAL_COMMAND\"");
    let srv = Server::start("");
    let out = run_timeout(
        srv.ssh_key(&login.with_key(&forced), &[])
            .arg("echo requested; exit 3"),
        SSH_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "{}\n--- resshd log ---\n{}",
        describe(&out),
        srv.log()
    );
    assert_eq!(text(&out.stdout), "forced echo requested; exit 3\n");
    // Without a command the forced one runs too.
    let out = run_timeout(
        &mut srv.ssh_key(&login.with_key(&forced), &["-T"]),
        SSH_TIMEOUT,
    );
    assert_eq!(text(&out.stdout), "forced\n", "{}", describe(&out));
    // The unrestricted key still runs what is asked.
    assert_eq!(srv.exec_ok(&login, "echo free"), "free\n");
    srv.assert_healthy();
}

/// Item 5a: sftp puts and gets a 64 MiB random file intact.
#[test]
fn sftp_put_and_get_64_mib() {
    require_root();
    let login = Login::new("sftp");
    let srv = Server::start("");
    let local = TempDir::new("e2e-sftp");
    let src = local.join("src.bin");
    fs::write(&src, random_bytes(64 << 20)).unwrap();
    let back = local.join("back.bin");
    let remote = login.user.home.join("up.bin");
    let batch = local.join("batch");
    fs::write(
        &batch,
        format!(
            "put {} up.bin\nget up.bin {}\nls -l up.bin\n",
            src.display(),
            back.display()
        ),
    )
    .unwrap();
    let out = run_timeout(
        srv.sftp(&login).arg("-b").arg(&batch).arg("127.0.0.1"),
        Duration::from_secs(300),
    );
    assert!(
        out.status.success(),
        "{}\n--- resshd log ---\n{}",
        describe(&out),
        srv.log()
    );
    let want = sha256_file(&src);
    assert_eq!(sha256_file(&remote), want, "uploaded file differs");
    assert_eq!(sha256_file(&back), want, "downloaded file differs");
    let md = fs::metadata(&remote).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(md.uid(), login.user.uid, "the upload belongs to the user");
    srv.assert_healthy();
}

/// Item 5b: scp both ways, in legacy (-O) and default (sftp) mode.
#[test]
fn scp_both_ways_legacy_and_sftp_mode() {
    require_root();
    let login = Login::new("scp");
    let srv = Server::start("");
    let local = TempDir::new("e2e-scp");
    let src = local.join("src.bin");
    fs::write(&src, random_bytes(5 << 20)).unwrap();
    let want = sha256_file(&src);
    for (mode, flag) in [("legacy", Some("-O")), ("sftp", None)] {
        let remote_name = format!("scp-{mode}.bin");
        let mut up = srv.scp(&login);
        if let Some(f) = flag {
            up.arg(f);
        }
        up.arg(&src).arg(format!("127.0.0.1:{remote_name}"));
        let out = run_timeout(&mut up, Duration::from_secs(120));
        assert!(
            out.status.success(),
            "scp up ({mode}): {}\n--- resshd log ---\n{}",
            describe(&out),
            srv.log()
        );
        assert_eq!(
            sha256_file(&login.user.home.join(&remote_name)),
            want,
            "scp up ({mode})"
        );
        let back = local.join(format!("back-{mode}.bin"));
        let mut down = srv.scp(&login);
        if let Some(f) = flag {
            down.arg(f);
        }
        down.arg(format!("127.0.0.1:{remote_name}")).arg(&back);
        let out = run_timeout(&mut down, Duration::from_secs(120));
        assert!(
            out.status.success(),
            "scp down ({mode}): {}\n--- resshd log ---\n{}",
            describe(&out),
            srv.log()
        );
        assert_eq!(sha256_file(&back), want, "scp down ({mode})");
    }
    srv.assert_healthy();
}

/// Item 5c: `ssh -L` carries a TCP stream to an echo server intact.
#[test]
fn local_forward_carries_a_stream() {
    require_root();
    let login = Login::new("fwdl");
    let srv = Server::start("");
    let echo = EchoServer::start();
    let lport = free_port();
    let spec = format!("127.0.0.1:{lport}:127.0.0.1:{}", echo.port);
    let mut ssh = srv.ssh(
        &login,
        &["-N", "-o", "ExitOnForwardFailure=yes", "-L", &spec],
    );
    let fwd = Bg::spawn(&mut ssh);
    wait_listening(lport, || {
        format!("ssh: {}\nresshd:\n{}", fwd.stderr(), srv.log())
    });
    for size in [1, 3 << 20] {
        let data = random_bytes(size);
        let got = echo_round_trip(lport, &data);
        assert!(
            got == data,
            "{size} bytes through ssh -L came back different ({} bytes)\n{}",
            got.len(),
            srv.log()
        );
    }
    // Two streams at once.
    let a = thread::spawn(move || {
        let d = random_bytes(1 << 20);
        echo_round_trip(lport, &d) == d
    });
    let d = random_bytes(1 << 20);
    assert!(echo_round_trip(lport, &d) == d);
    assert!(a.join().unwrap());
    drop(fwd);
    srv.assert_healthy();
}

/// Item 5d: `ssh -R` carries a TCP stream from resshd's side to an echo server
/// on the client's side intact.
#[test]
fn remote_forward_carries_a_stream() {
    require_root();
    let login = Login::new("fwdr");
    let srv = Server::start("");
    let echo = EchoServer::start();
    let rport = free_port();
    let spec = format!("{rport}:127.0.0.1:{}", echo.port);
    let mut ssh = srv.ssh(
        &login,
        &["-N", "-o", "ExitOnForwardFailure=yes", "-R", &spec],
    );
    let fwd = Bg::spawn(&mut ssh);
    srv.wait_log("the remote forward", Duration::from_secs(20), |l| {
        l.contains(&format!("port {rport}")) && l.contains("remote forward")
    });
    wait_listening(rport, || {
        format!("ssh: {}\nresshd:\n{}", fwd.stderr(), srv.log())
    });
    for size in [1, 3 << 20] {
        let data = random_bytes(size);
        let got = echo_round_trip(rport, &data);
        assert!(
            got == data,
            "{size} bytes through ssh -R came back different ({} bytes)\nssh: {}\nresshd:\n{}",
            got.len(),
            fwd.stderr(),
            srv.log()
        );
    }
    drop(fwd);
    srv.assert_healthy();
}
