//! Issue 5, item 4: a long disconnection. The path is blackholed for 10
//! minutes with the client stopped (SIGSTOP, as a suspended laptop), then
//! restored and the client continued (SIGCONT): the session resumes.
//!
//! resshd runs with `DetachTimeout 15m` (more than the outage) and
//! ClientAlive every 15 s, 3 missed. The lab's ressh announces a keepalive
//! interval of 1 s, so resshd detaches the session 10 s into the outage
//! (3 silent intervals, at least 10 s; ClientAlive alone would take about a
//! minute): the resume is a real reconnect to a detached session, not an
//! old TCP connection that simply survived. The remote
//! counter goes on printing meanwhile (about 0.4 MB in 10 minutes, well
//! under the retransmit buffer's cap); at the end its output must hold
//! every number exactly once.
//!
//! This test takes about 10.5 minutes; it runs beside the others (see
//! e2e.rs). `RESSH_E2E_LONG_SECS` shortens the outage for development
//! runs; CI uses the default, 600.
//!
//! Printed: the time from SIGCONT to ressh's "reconnected" line and to the
//! first new number.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn session_resumes_after_10_minutes_blackholed_and_stopped() {
    let outage = Duration::from_secs(
        std::env::var("RESSH_E2E_LONG_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600),
    );
    let lab = Lab::new(
        "long",
        "DetachTimeout 15m\nClientAliveInterval 15\nClientAliveCountMax 3\n",
    );
    let user = lab.user().name.clone();
    let stop = lab.user().home.join("stop-counter");
    let mut client = Client::spawn(&mut lab.ressh(&["server", &counter_cmd(&stop, 10_000_000)]));
    client.wait_lines(100, T);

    lab.net.blackhole(true);
    signal(client.pid(), "STOP");
    let start = Instant::now();
    let mut detached_after = None;
    while start.elapsed() < outage {
        if detached_after.is_none() && lab.log().contains(&format!("Detached: user {user}")) {
            detached_after = Some(start.elapsed());
        }
        assert!(
            client.try_status().is_none(),
            "ressh exited while stopped\n{}",
            client.describe()
        );
        thread::sleep(Duration::from_secs(1).min(outage.saturating_sub(start.elapsed())));
    }
    let before = client.line_count();
    lab.net.blackhole(false);
    let cont = Instant::now();
    signal(client.pid(), "CONT");

    let reconnected = client.wait_err("reconnected to ", cont, Duration::from_secs(60));
    client.wait_lines(before + 20, Duration::from_secs(60));
    let data = first_after(&client.out_lines(), cont).expect("a line after SIGCONT");
    let log = wait_reconnects(&lab.resshd, 1, T);
    let detached_after = detached_after
        .unwrap_or_else(|| panic!("resshd never detached the session during the outage\n{log}"));
    assert!(
        log.lines().any(|l| l.starts_with("resshd-session[")
            && l.contains(&format!("Reconnected: user {user} from 198.18.1.2"))),
        "{log}"
    );

    fs::write(&stop, "").unwrap();
    let status = client.wait_exit(T);
    assert!(status.success(), "ressh: {status}\n{}", client.describe());
    let n = check_counter(&client.out_lines());
    report(
        "long disconnection",
        &format!(
            "{:.0} s blackholed and stopped; resshd detached the session after {:.0} s; \
             SIGCONT -> reconnected {:.0} ms, -> data {:.0} ms; {n} numbers, each exactly once",
            outage.as_secs_f64(),
            detached_after.as_secs_f64(),
            reconnected.duration_since(cont).as_secs_f64() * 1000.0,
            data.saturating_duration_since(cont).as_secs_f64() * 1000.0
        ),
    );
}
