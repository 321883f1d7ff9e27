//! A private tmux server: a real pty for interactive clients, driven by
//! keys and read back as a screen.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd::{require_cmd, run};
use crate::util::{text, wait_for};

/// A private tmux server (own socket, no config) whose one session is
/// `main`; killed on drop.
pub struct Tmux {
    socket: String,
    /// Lines of history above the window that [`Tmux::screen`] includes.
    history: u32,
}

impl Tmux {
    /// `tag` goes into the socket name beside this process's id and a number of its
    /// own: two tests of one process running at once with the same tag (as a helper
    /// both call) get a server each, not one (where the second's `main` session
    /// cannot be made, and the first to end kills the other's).
    pub fn new(tag: &str) -> Tmux {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        require_cmd("tmux");
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Tmux {
            socket: format!("ressh-test-{tag}-{}-{n}", std::process::id()),
            history: 0,
        }
    }

    /// Makes [`Tmux::screen`] include `lines` of history above the window.
    pub fn with_history(mut self, lines: u32) -> Tmux {
        self.history = lines;
        self
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(require_cmd("tmux"));
        c.env("TERM", "xterm")
            .args(["-f", "/dev/null", "-L", &self.socket]);
        c
    }

    /// Runs `tmux args...`; panics unless it succeeds. Returns its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = run(self.cmd().args(args));
        assert!(
            out.status.success(),
            "tmux {args:?}: {}\n{}",
            out.status,
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Starts session `main`, `cols` x `rows`, running the shell command `line`.
    pub fn start(&self, cols: u16, rows: u16, line: &str) {
        self.run(&[
            "new-session",
            "-d",
            "-s",
            "main",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            line,
        ]);
    }

    /// The window's text (with the history asked for).
    pub fn screen(&self) -> String {
        let start = format!("-{}", self.history);
        self.run(&["capture-pane", "-p", "-t", "main", "-S", &start])
    }

    /// Waits (20 s at most) until the screen satisfies `pred`; returns it.
    pub fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_for(
            what,
            Duration::from_secs(20),
            || {
                let s = self.screen();
                pred(&s).then_some(s)
            },
            || format!("--- screen ---\n{}", self.screen()),
        )
    }

    /// Whether the screen satisfies `pred` within `within`.
    pub fn poll(&self, within: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if pred(&self.screen()) {
                return true;
            }
            thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Resizes the window to `cols`x`rows` and types `clear; stty size` into the shell
    /// in it until that shows the new size (20 s): the change travels tmux -> ssh
    /// (SIGWINCH) -> server -> pty while the shell may already run the command, so one
    /// `stty size` after a pause can still show the old size on a loaded machine.
    pub fn resize_until_seen(&self, cols: u16, rows: u16) {
        let (x, y) = (cols.to_string(), rows.to_string());
        self.run(&["resize-window", "-t", "main", "-x", &x, "-y", &y]);
        let want = format!("{rows} {cols}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.keys(&["clear; stty size", "Enter"]);
            if self.poll(Duration::from_secs(2), |s| s.contains(&want)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "stty size never showed {want}:\n{}",
                self.screen()
            );
        }
    }

    /// `send-keys -t main keys...` (tmux key names: "Enter", "C-c", ...).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "main"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Whether session `main` still exists (its program has not exited).
    pub fn alive(&self) -> bool {
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
