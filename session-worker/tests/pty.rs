//! A pty shell driven like a person would: stock `ssh -tt` inside tmux.

mod common;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{default_policy, Harness};
use ressh_testkit::{require_cmd, run, Tmux};

#[test]
fn pty_shell_through_tmux() {
    let h = Harness::start("pty", default_policy());
    let tmux = Tmux::new(&format!("pty{}", h.port));
    tmux.start(80, 24, &h.ssh_shell_line(&["-tt"]));
    // dash's prompt for a login shell.
    tmux.wait("the prompt", |s| s.lines().any(|l| l.trim_end() == "$"));
    tmux.keys(&["stty size; tty; echo \"T=$TERM H=$HOME\"", "Enter"]);
    let home = h.user.home.display().to_string();
    let s = tmux.wait("stty output", |s| {
        s.contains("24 80") && s.contains(&format!("H={home}"))
    });
    assert!(s.contains("/dev/pts/"), "{s}");
    assert!(!s.contains("T= "), "TERM must come from pty-req: {s}");

    // Resizing the terminal sends window-change.
    tmux.resize_until_seen(100, 30);

    // ^C reaches the foreground job through the terminal (ISIG, VINTR);
    // sent once the sleep runs (before, it could hit `clear`, and the
    // sleep would then hold the shell for 100 s).
    tmux.keys(&["clear; sleep 100", "Enter"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let pgrep = require_cmd("pgrep");
    while !run(Command::new(&pgrep).args(["-u", &h.user.name, "-x", "sleep"]))
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "the sleep never started");
        thread::sleep(Duration::from_millis(50));
    }
    tmux.keys(&["C-c"]);
    tmux.keys(&["echo interrupted-ok", "Enter"]);
    tmux.wait("the shell after ^C", |s| s.contains("\ninterrupted-ok"));

    tmux.keys(&["exit", "Enter"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while tmux.alive() {
        assert!(
            Instant::now() < deadline,
            "ssh did not end after exit:\n{}",
            tmux.screen()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let log = h.finish();
    assert!(log.contains("shell on /dev/pts/"), "{log}");
}

#[test]
fn a_lost_connection_hangs_up_pty_sessions() {
    let h = Harness::start("hup", default_policy());
    let mut ssh = h
        .ssh_with(&["-tt"])
        .arg("exec sleep 1000")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    h.wait_log(
        |l| l.contains("exec \"exec sleep 1000\" on /dev/pts/"),
        Duration::from_secs(15),
    );
    // Only the worker and the command run as the user.
    assert_eq!(h.user.processes().len(), 2, "{:?}", h.user.processes());
    // The client vanishes without a word: the worker sees the TCP
    // connection end, hangs up the pty session and exits.
    ssh.kill().unwrap();
    ssh.wait().unwrap();
    let log = h.finish();
    assert!(log.contains("Connection closed by 127.0.0.1"), "{log}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !h.user.processes().is_empty() {
        assert!(
            Instant::now() < deadline,
            "left running: {:?}",
            h.user.processes()
        );
        thread::sleep(Duration::from_millis(50));
    }
}
