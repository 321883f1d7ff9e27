//! Issue 24 / issue 13 hole 9: ressh keeps a session through seconds of
//! reconnects the server refuses, and resumes it once the server answers
//! again.
//!
//! A counter runs through ressh; then two rounds:
//! 1. "unknown session": the session's monitor is stopped (SIGSTOP) and
//!    resshd reloaded (SIGHUP): the new broker knows no tokens until the
//!    monitor registers again, so every reconnect is answered
//!    SSH_MSG_RECONNECT_FAILURE UNKNOWN_SESSION — unauthenticated, as after
//!    any reload, only for longer than the ~1 s a reload normally takes.
//!    The connection is cut (`ss -K`), ressh is refused for 5 s, then the
//!    monitor continues (SIGCONT), registers, and ressh must reconnect;
//! 2. refused connections: the router answers every segment with a reset
//!    (nftables REJECT) for 5 s, then lets traffic through.
//!
//! ressh must not quit in either, must tell on stderr what it is waiting
//! for, and at the end the counter's output holds every number exactly
//! once. Printed: how many attempts were refused, and the time from the
//! server answering again to the reconnect.

use std::fs;
use std::time::{Duration, Instant};

use crate::common::*;

/// How long the server refuses in each round.
const REFUSING: Duration = Duration::from_secs(5);

fn ppid(pid: u32) -> u32 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    after.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Reconnects resshd logged as refused, whatever the reason.
fn refusals(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("Reconnect ") && l.contains(" refused: "))
        .count()
}

/// Waits `d` while checking that ressh is still running.
fn still_running_for(client: &mut Client, d: Duration, what: &str) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if let Some(st) = client.try_status() {
            panic!("{what}: ressh quit ({st})\n{}", client.describe());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ressh_keeps_the_session_while_reconnects_are_refused() {
    let mut lab = Lab::new("refused", "DetachTimeout 300\n");
    let stop = lab.user().home.join("stop-counter");
    let mut client = Client::spawn(&mut lab.ressh(&["server", &counter_cmd(&stop, 1_000_000)]));
    client.wait_lines(50, T);

    // Round 1: reconnects answered UNKNOWN_SESSION.
    let workers = lab.session_workers();
    assert_eq!(workers.len(), 1, "session workers: {workers:?}");
    let monitor = ppid(workers[0]);
    assert_eq!(
        comm(monitor).as_deref(),
        Some("resshd"),
        "parent of the worker"
    );
    let refused_before = refusals(&lab.log());
    let unknown_before = count(&lab.log(), "refused: unknown session");
    let relinked = count(&lab.log(), "registered with the broker again");
    let reconnected = reconnects(&lab.log());
    signal(monitor, "STOP");
    lab.resshd.reload();
    let since = Instant::now();
    lab.net.kill_tcp(22);
    client.wait_err("connection lost", since, Duration::from_secs(5));
    still_running_for(&mut client, REFUSING, "reconnects answered unknown session");
    // Today's resshd says "unknown session"; one that says "try again"
    // while its broker fills tests the same.
    let refused = refusals(&lab.log()) - refused_before;
    let unknown = count(&lab.log(), "refused: unknown session") - unknown_before;
    assert!(
        refused >= 2,
        "resshd refused {refused} reconnects; the test needs >= 2\n{}",
        lab.log()
    );
    let stderr = client.stderr();
    assert!(
        stderr.contains("unauthenticated)") && stderr.contains("retrying in "),
        "ressh does not say what it waits for:\n{stderr}"
    );
    signal(monitor, "CONT");
    let answering = Instant::now();
    lab.wait_log(
        "the session's monitor to register with the new broker",
        Duration::from_secs(30),
        |l| count(l, "registered with the broker again") > relinked,
    );
    let at = client.wait_err("reconnected to ", since, Duration::from_secs(30));
    let log = wait_reconnects(&lab.resshd, reconnected + 1, Duration::from_secs(10));
    assert!(log.contains("Reconnected: user "), "{log}");
    let seen = client.line_count();
    client.wait_lines(seen + 20, T);
    report(
        "refused",
        &format!(
            "broker without the session for {:.1} s: {refused} attempts refused ({unknown} \
             as unknown session); monitor back -> reconnected {:.0} ms",
            REFUSING.as_secs_f64(),
            at.duration_since(answering).as_secs_f64() * 1000.0
        ),
    );

    // Round 2: every connection reset by the router.
    let reconnected = reconnects(&lab.log());
    let since = Instant::now();
    lab.net.reject(true);
    client.wait_err("connection lost", since, Duration::from_secs(10));
    still_running_for(&mut client, REFUSING, "connections refused");
    let failed = client
        .err_lines()
        .iter()
        .filter(|(t, l)| *t >= since && l.contains("failed") && l.contains("retrying in "))
        .count();
    assert!(failed >= 2, "{}", client.describe());
    let lifted = Instant::now();
    lab.net.reject(false);
    let at = client.wait_err("reconnected to ", lifted, Duration::from_secs(30));
    wait_reconnects(&lab.resshd, reconnected + 1, Duration::from_secs(10));
    let seen = client.line_count();
    client.wait_lines(seen + 20, T);
    report(
        "refused",
        &format!(
            "connections reset for {:.1} s: {failed} attempts failed; lifted -> reconnected {:.0} ms",
            REFUSING.as_secs_f64(),
            at.duration_since(lifted).as_secs_f64() * 1000.0
        ),
    );

    fs::write(&stop, "").unwrap();
    let status = client.wait_exit(T);
    assert!(status.success(), "ressh: {status}\n{}", client.describe());
    let n = check_counter(&client.out_lines());
    report("refused", &format!("{n} numbers, each exactly once"));
}
