//! Interactive sessions in a real terminal (tmux): a pty with TERM and the
//! window size, window-change on resize, the ~ escapes, and the local
//! terminal restored on every exit (normal, ~., SIGTERM); against Debian's
//! sshd and resshd.

mod common;
use common::*;

use std::process::Command;

/// The pane's command: print the local TERM, run ressh, then report its
/// exit status and whether the terminal is back in cooked mode.
fn pane(env: &Env, opts: &str) -> String {
    format!(
        "echo LOCALTERM=$TERM; sh -c 'echo $$ > {}; exec {} -F {} {opts} 127.0.0.1'; \
         echo EXIT=$?; \
         stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo \
         | tr '\\n' ' '; echo; sleep 120",
        env.dir.join("ressh.pid").display(),
        RESSH,
        env.config.display()
    )
}

fn prompt(s: &str) -> bool {
    s.lines().any(|l| l.trim_end().ends_with('$'))
}

fn shell_session(env: &Env) {
    let tmux = Tmux::new("pty").with_history(100);
    tmux.start(100, 30, &pane(env, ""));
    let s = tmux.wait("the remote prompt", prompt);
    let local_term = s
        .lines()
        .find_map(|l| l.strip_prefix("LOCALTERM="))
        .unwrap_or("")
        .trim()
        .to_string();
    assert!(!local_term.is_empty(), "{s}");
    tmux.keys(&["echo \"U=$(id -un) T=$TERM\"; tty; stty size", "Enter"]);
    let s = tmux.wait("stty size", |s| s.contains("30 100"));
    assert!(
        s.contains(&format!("U={} T={local_term}", env.user.name)),
        "user and TERM: {s}"
    );
    assert!(s.contains("/dev/pts/"), "{s}");
    // Output from the remote pty gets CR LF: lines start at column 0.
    assert!(s.lines().any(|l| l.starts_with("/dev/pts/")), "{s}");

    tmux.resize_until_seen(120, 40);

    // Input typed is echoed by the remote pty, not locally (raw mode).
    tmux.keys(&["clear; echo $((6*7))", "Enter"]);
    tmux.wait("arithmetic", |s| s.lines().any(|l| l.trim() == "42"));

    tmux.keys(&["exit 3", "Enter"]);
    let s = tmux.wait("the exit status", |s| s.contains("EXIT="));
    assert!(s.contains("EXIT=3"), "{s}");
    assert!(s.contains("Connection to 127.0.0.1 closed."), "{s}");
    let s = tmux.wait("the terminal modes", |s| s.contains("icanon"));
    assert!(
        s.contains("icanon echo") && !s.contains("-icanon"),
        "terminal not restored: {s}"
    );
}

#[test]
fn pty_shell_sshd() {
    let env = Env::sshd("");
    shell_session(&env);
}

#[test]
fn pty_shell_resshd() {
    let env = Env::resshd("");
    shell_session(&env);
}

#[test]
fn escapes_and_signals_restore_the_terminal() {
    let env = Env::sshd("");
    // ~. ends the session: 255, terminal restored.
    let tmux = Tmux::new("esc").with_history(100);
    tmux.start(100, 30, &pane(&env, ""));
    tmux.wait("the remote prompt", prompt);
    tmux.keys(&["echo a~b", "Enter"]);
    tmux.wait("a literal ~ mid-line", |s| {
        s.lines().any(|l| l.trim() == "a~b")
    });
    tmux.keys(&["~?"]);
    tmux.wait("the escape help", |s| {
        s.contains("Supported escape sequences")
    });
    tmux.keys(&["Enter", "~#"]);
    tmux.wait("the connection list", |s| s.contains("#0 the session"));
    tmux.keys(&["Enter", "~~"]);
    tmux.keys(&["echo tilde", "Enter"]);
    tmux.wait("~~ sends one ~", |s| s.contains("~echo: not found"));
    tmux.keys(&["Enter", "~."]);
    let s = tmux.wait("the exit status", |s| s.contains("icanon"));
    assert!(s.contains("EXIT=255"), "{s}");
    assert!(
        s.contains("icanon echo") && !s.contains("-icanon"),
        "terminal not restored: {s}"
    );
    drop(tmux);

    // SIGTERM while in raw mode.
    let tmux = Tmux::new("sig").with_history(100);
    tmux.start(100, 30, &pane(&env, "-o ServerAliveCountMax=7"));
    tmux.wait("the remote prompt", prompt);
    let pid = std::fs::read_to_string(env.dir.join("ressh.pid")).unwrap();
    let pid = pid.trim();
    assert!(run_timeout(Command::new("kill").args(["-TERM", pid]), T)
        .status
        .success());
    let s = tmux.wait("the exit status", |s| s.contains("icanon"));
    assert!(s.contains("EXIT=255"), "{s}");
    assert!(
        s.contains("icanon echo") && !s.contains("-icanon"),
        "terminal not restored: {s}"
    );
}

#[test]
fn tty_requests() {
    let env = Env::sshd("");
    // -t without a terminal on stdin: no pty, a warning.
    let out = env.exec_to(&["-t"], &["tty"]);
    assert_eq!(text(&out.stdout), "not a tty\n");
    assert!(
        text(&out.stderr).contains("Pseudo-terminal will not be allocated"),
        "{}",
        text(&out.stderr)
    );
    // -tt forces one; its output has CR LF.
    let out = env.exec_to(&["-tt"], &["tty"]);
    assert!(
        text(&out.stdout).starts_with("/dev/pts/"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).ends_with("\r\n"));
    // RequestTTY=force in the config, -T wins over it.
    let out = env.exec_to(&["-T", "-o", "RequestTTY=force"], &["tty"]);
    assert_eq!(text(&out.stdout), "not a tty\n");
}
