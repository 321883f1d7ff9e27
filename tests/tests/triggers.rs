//! Issue 21: what makes ressh reconnect before TCP notices anything, each
//! proven by the reconnect it causes and by nothing else being able to
//! cause it: a working loopback path, keepalives every 600 s
//! (`-o ServerAliveInterval=600`), and ressh's own reason for the
//! reconnect ("reconnected to server after X s (<reason>)") asserted.
//! (The netlink trigger, a route or address change, is `roaming`.)
//!
//! - `~R` typed in a real pty (tmux) while the remote counter runs: ressh
//!   reconnects at once (make-before-break), resshd logs the reconnect, and
//!   the counter's output holds every number exactly once.
//! - A resume from suspend (CLOCK_BOOTTIME jumping ahead of CLOCK_MONOTONIC):
//!   see [`suspend_detector_reconnects_at_once`] for how, and why so.

use std::fs;
use std::time::{Duration, Instant};

use crate::common::*;

/// From the trigger to ressh's "reconnected" line: the reconnect starts at
/// once (milliseconds, unloaded); the keepalive fallback would take 600 s.
const BOUND: Duration = Duration::from_secs(3);

/// The counter's lines in `path` (a pty's output: `\r\n` line ends).
fn counter_lines(path: &std::path::Path) -> Vec<Line> {
    let now = Instant::now();
    text(&fs::read(path).unwrap_or_default())
        .lines()
        .map(|l| (now, l.trim_end_matches('\r').to_string()))
        .collect()
}

#[test]
fn tilde_r_in_a_pty_reconnects() {
    let (server, login, dir) = loopback_login("tilder", "", CLIENT_EXTRA);
    let stop = login.user.home.join("stop-counter");
    let (out, err, status) = (dir.join("out"), dir.join("err"), dir.join("status"));
    // ressh's stdin is tmux's pty (raw mode, escapes); its stdout and
    // stderr go to files, so the counter's output is not mixed with ressh's
    // status lines.
    let line = format!(
        "{} -F {} -tt -o ServerAliveInterval=600 server {} >{} 2>{}; echo $? >{}",
        sq(&ressh_bin().to_string_lossy()),
        sq(&login.config.to_string_lossy()),
        sq(&counter_cmd(&stop, 1_000_000)),
        sq(&out.to_string_lossy()),
        sq(&err.to_string_lossy()),
        sq(&status.to_string_lossy()),
    );
    let tmux = Tmux::new("tilder");
    tmux.start(80, 24, &line);
    let lines = || counter_lines(&out).len();
    wait_for(
        "the counter to run",
        T,
        || (lines() > 100).then_some(()),
        || {
            format!(
                "{}\n{}",
                text(&fs::read(&err).unwrap_or_default()),
                server.log()
            )
        },
    );
    assert_eq!(reconnects(&server.log()), 0, "{}", server.log());

    // `~` at the start of the input (nothing typed yet), then `R`.
    let typed = Instant::now();
    tmux.keys(&["-l", "~R"]);
    let stderr = || text(&fs::read(&err).unwrap_or_default());
    let took = wait_for(
        "ressh's \"reconnected ... (~R)\"",
        BOUND,
        || {
            stderr()
                .contains("reconnected to ")
                .then(|| typed.elapsed())
        },
        || format!("{}\n--- resshd log ---\n{}", stderr(), server.log()),
    );
    let msg = stderr();
    assert!(
        msg.contains("(~R)]"),
        "the reconnect names another reason:\n{msg}"
    );
    server.wait_log("resshd to log the reconnect", T, |l| reconnects(l) == 1);
    let seen = lines();
    wait_for(
        "the counter to go on after the reconnect",
        T,
        || (lines() > seen + 50).then_some(()),
        || msg.clone(),
    );

    fs::write(&stop, "").unwrap();
    wait_for(
        "ressh to exit",
        T,
        || {
            fs::read_to_string(&status)
                .ok()
                .filter(|s| s.ends_with('\n'))
        },
        || format!("{}\n--- screen ---\n{}", stderr(), tmux.screen()),
    );
    let code = fs::read_to_string(&status).unwrap();
    assert_eq!(code.trim(), "0", "ressh's exit status\n{}", stderr());
    let msg = stderr();
    assert!(!msg.contains("connection lost"), "{msg}");
    assert_eq!(count(&msg, "reconnected to "), 1, "{msg}");
    assert_eq!(reconnects(&server.log()), 1, "{}", server.log());
    let n = check_counter(&counter_lines(&out));
    report(
        "triggers",
        &format!(
            "~R typed in a pty: reconnected {} ms after the keys; {n} numbers, each exactly once",
            took.as_millis()
        ),
    );
}

/// A resume from suspend makes ressh reconnect at once.
///
/// How the suspend is made, and why this way: ressh's detector compares
/// CLOCK_BOOTTIME with CLOCK_MONOTONIC, whose difference grows only while
/// the machine is suspended. Stopping ressh (SIGSTOP, then SIGCONT) would
/// prove nothing: both clocks advance alike while a process is stopped or
/// starved, so the detector rightly stays silent, and a test cannot suspend
/// the machine it shares. So ressh, unmodified, runs with a preloaded
/// `clock_gettime` (clockshift.c, built here with cc) that adds to
/// CLOCK_BOOTTIME the milliseconds written in a file and passes every
/// other clock through: writing 5000 makes ressh's clocks read exactly as
/// after a 5 s sleep. There is no test hook in ressh; the detector's
/// threshold on such readings is unit-tested in resilience::netwatch.
///
/// Asserted: nothing reconnects before the jump; within [`BOUND`] of it
/// ressh reconnects naming the suspend, resshd logs the reconnect, and the
/// counter's output holds every number exactly once.
#[test]
fn suspend_detector_reconnects_at_once() {
    let (server, login, dir) = loopback_login("suspend", "", CLIENT_EXTRA);
    let shim = dir.join("clockshift.so");
    let src = dir.join("clockshift.c");
    fs::write(&src, include_str!("clockshift.c")).unwrap();
    let cc = ressh_testkit::run_ok(
        std::process::Command::new(require_cmd("cc"))
            .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
            .arg(&shim)
            .arg(&src),
    );
    assert!(cc.status.success());
    let shift = dir.join("clockshift");
    fs::write(&shift, "0").unwrap();

    let stop = login.user.home.join("stop-counter");
    let mut cmd = ressh_here(
        &login.config,
        &[
            "-o",
            "ServerAliveInterval=600",
            "server",
            &counter_cmd(&stop, 1_000_000),
        ],
    );
    cmd.env("LD_PRELOAD", &shim)
        .env("RESSH_TEST_CLOCKSHIFT", &shift);
    let mut client = Client::spawn(&mut cmd);
    client.wait_lines(200, T);
    let maps = fs::read_to_string(format!("/proc/{}/maps", client.pid())).unwrap();
    assert!(
        maps.contains(&*shim.to_string_lossy()),
        "the clock shim is not loaded in ressh\n{}",
        client.describe()
    );
    assert!(
        !client.stderr().contains("reconnected to "),
        "ressh reconnected before any clock jump\n{}",
        client.describe()
    );

    fs::write(&shift, "5000").unwrap();
    let resumed = Instant::now();
    let reconnected = client.wait_err("reconnected to ", resumed, BOUND);
    let took = reconnected.duration_since(resumed);
    let err = client.stderr();
    assert!(
        err.contains("(resumed from suspend)"),
        "the reconnect names another reason:\n{err}"
    );
    server.wait_log("resshd to log the reconnect", T, |l| reconnects(l) == 1);
    let seen = client.line_count();
    client.wait_lines(seen + 50, T);

    fs::write(&stop, "").unwrap();
    let status = client.wait_exit(T);
    assert!(status.success(), "ressh: {status}\n{}", client.describe());
    let err = client.stderr();
    assert!(!err.contains("connection lost"), "{err}");
    assert_eq!(count(&err, "reconnected to "), 1, "{err}");
    assert_eq!(reconnects(&server.log()), 1, "{}", server.log());
    let n = check_counter(&client.out_lines());
    report(
        "triggers",
        &format!(
            "BOOTTIME 5 s ahead (a suspend): reconnected {} ms later; {n} numbers, each \
             exactly once",
            took.as_millis()
        ),
    );
}
