//! Issue 5, item 9: resshd restarted while a session is detached; the
//! client reconnects afterwards through the new daemon and the session
//! goes on.
//!
//! The counter runs; the path is blackholed until resshd (ClientAlive, 1 s
//! times 2) has detached the session; then resshd is restarted, and the
//! blackhole lifted:
//! 1. stop and start: SIGTERM (established sessions carry on), then the
//!    same binary, configuration and BrokerSocket again;
//! 2. SIGHUP: resshd re-executes itself.
//!
//! Each time the session's monitor registers with the new broker, ressh
//! reconnects, and at the end the counter's output holds every number
//! exactly once. Printed: the time from lifting the blackhole to the
//! reconnect and to data flowing.

use std::fs;
use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn detached_session_survives_resshd_restarts() {
    let mut lab = Lab::new(
        "restart",
        "DetachTimeout 300\nClientAliveInterval 1\nClientAliveCountMax 2\n",
    );
    let user = lab.user().name.clone();
    let stop = lab.user().home.join("stop-counter");
    let mut client = Client::spawn(&mut lab.ressh(&["server", &counter_cmd(&stop, 1_000_000)]));
    client.wait_lines(50, T);
    let pid_before = lab.resshd.server.pid();

    for how in ["SIGTERM and start", "SIGHUP"] {
        let detached = count(&lab.log(), "Detached: user ");
        let relinked = count(&lab.log(), "registered with the broker again");
        let reconnected = reconnects(&lab.log());
        lab.net.blackhole(true);
        lab.wait_log(
            &format!("{how}: resshd to detach the session"),
            Duration::from_secs(30),
            |l| count(l, "Detached: user ") > detached,
        );
        match how {
            "SIGHUP" => lab.resshd.reload(),
            _ => lab.resshd.restart(),
        }
        lab.wait_log(
            &format!("{how}: the session's monitor to register with the new broker"),
            Duration::from_secs(30),
            |l| count(l, "registered with the broker again") > relinked,
        );
        let off = Instant::now();
        lab.net.blackhole(false);
        let log = wait_reconnects(&lab.resshd, reconnected + 1, Duration::from_secs(60));
        assert!(
            log.lines().any(|l| l.starts_with("resshd-session[")
                && l.contains(&format!("Reconnected: user {user} from 198.18.1.2 port "))),
            "{log}"
        );
        let at = client.wait_err("reconnected to ", off, Duration::from_secs(30));
        let seen = client.line_count();
        client.wait_lines(seen + 20, T);
        let lines = client.out_lines();
        let data = first_after(&lines, at).unwrap();
        report(
            "restart",
            &format!(
                "{how}: blackhole lifted -> reconnected {:.0} ms, -> data {:.0} ms",
                at.duration_since(off).as_secs_f64() * 1000.0,
                data.saturating_duration_since(off).as_secs_f64() * 1000.0
            ),
        );
        assert!(client.try_status().is_none(), "{}", client.describe());
    }
    match lab.resshd.server.pid() {
        // SIGHUP keeps the pid; stop and start made a new one.
        p if p == pid_before => panic!("resshd was not restarted"),
        _ => {}
    }

    fs::write(&stop, "").unwrap();
    let status = client.wait_exit(T);
    assert!(status.success(), "ressh: {status}\n{}", client.describe());
    let n = check_counter(&client.out_lines());
    report("restart", &format!("{n} numbers, each exactly once"));
}
