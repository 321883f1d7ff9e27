//! A pty shell driven like a person would: stock `ssh -tt` inside tmux.

mod common;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{default_policy, Harness};
use ressh_testkit::text;
use ressh_testkit::{require_cmd, run};

/// A private tmux server, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new(require_cmd("tmux"));
        c.env("TERM", "xterm")
            .args(["-f", "/dev/null", "-L", &self.socket]);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = run(self.cmd().args(args));
        assert!(out.status.success(), "tmux {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "main"])
    }

    /// Waits until the screen satisfies `pred`.
    fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "waiting for {what}; screen:\n{s}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the screen satisfies `pred` within `within`.
    fn poll(&self, within: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if pred(&self.screen()) {
                return true;
            }
            thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "main"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn alive(&self) -> bool {
        run(self.cmd().args(["has-session", "-t", "main"]))
            .status
            .success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = run(self.cmd().arg("kill-server"));
    }
}

#[test]
fn pty_shell_through_tmux() {
    let h = Harness::start("pty", default_policy());
    let tmux = Tmux {
        socket: format!("ressh-pty-{}-{}", std::process::id(), h.port),
    };
    let line = h.ssh_shell_line(&["-tt"]);
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "main",
        "-x",
        "80",
        "-y",
        "24",
        &line,
    ]);
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
    // The change travels tmux -> ssh -> worker -> pty while the shell may
    // already run `stty`: asked again until it shows.
    tmux.run(&["resize-window", "-t", "main", "-x", "100", "-y", "30"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tmux.keys(&["clear; stty size", "Enter"]);
        if tmux.poll(Duration::from_secs(2), |s| s.contains("30 100")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stty size never showed 30 100:\n{}",
            tmux.screen()
        );
    }

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
