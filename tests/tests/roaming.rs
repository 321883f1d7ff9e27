//! Issue 5, item 3: roaming. The client's namespace moves from uplink A
//! (198.18.1.2) to uplink B (198.18.2.2) and the old uplink disappears
//! ([`Net::roam`]: make the new, move the default route, delete the old);
//! then back, six moves in all. The session goes on (the counter's output
//! is complete and in order), resshd logs each reconnect with the new
//! address, and the time from the route change to data flowing again is
//! measured.
//!
//! What makes ressh move is its netlink watch (a route or source address
//! change on the path to the server), not a dead connection: keepalives
//! are every 600 s (`-o ServerAliveInterval=600`), so the fallback cannot
//! notice a stranded connection within the test's time; each reconnect must
//! name the netlink trigger ("route or address changed"), ressh must never
//! say "connection lost", and it must have reconnected within [`BOUND`] of
//! the route change.
//!
//! Printed per move and as median/p95: route change -> ressh's
//! "reconnected" line; route change -> data flowing (the end of the pause
//! in the counter's output around the move, or, with make-before-break
//! hiding it within the counter's own 10 ms interval, the first line after
//! the reconnect: [`resumed_at`]); and the longest pause itself.

use std::fs;
use std::time::{Duration, Instant};

use crate::common::*;

const MOVES: usize = 6;

/// The route change -> "reconnected" bound: the netlink trigger acts at
/// once (milliseconds, unloaded); the keepalive fallback would take 600 s.
const BOUND: Duration = Duration::from_secs(3);

/// ressh's reason for a reconnect that its netlink watch started.
const NETLINK_REASON: &str = "(route or address changed)";

#[test]
fn session_follows_the_client_to_a_new_address() {
    let lab = Lab::new("roam", "DetachTimeout 300\n");
    let stop = lab.user().home.join("stop-counter");
    let mut client = Client::spawn(&mut lab.ressh(&[
        "-o",
        "ServerAliveInterval=600",
        "server",
        &counter_cmd(&stop, 1_000_000),
    ]));
    client.wait_lines(100, T);
    let user = lab.user().name.clone();

    let mut to_reconnected = Stats::default();
    let mut to_data = Stats::default();
    let mut pauses = Stats::default();
    let mut moves = Vec::new();
    for i in 0..MOVES {
        let (old, new) = if i % 2 == 0 {
            ("198.18.1.2", "198.18.2.2")
        } else {
            ("198.18.2.2", "198.18.1.2")
        };
        assert_eq!(lab.net.client_addr().to_string(), old);
        let before = reconnects(&lab.log());
        let route = lab.net.roam_timed();
        let done = Instant::now();
        assert_eq!(lab.net.client_addr().to_string(), new);
        // Within the bound from the route change (roam() itself, which
        // checks the new path, may have used part of it).
        let reconnected = client.wait_err(
            "reconnected to ",
            route,
            BOUND.saturating_sub(route.elapsed()),
        );
        let took = reconnected.saturating_duration_since(route);
        assert!(
            took <= BOUND,
            "move {i}: reconnected {took:?} after the route change (bound {BOUND:?})\n{}",
            client.describe()
        );
        let why = client
            .err_lines()
            .into_iter()
            .find(|(t, l)| *t >= route && l.contains("reconnected to "))
            .map(|(_, l)| l)
            .unwrap();
        assert!(
            why.contains(NETLINK_REASON),
            "move {i}: the reconnect was not started by the netlink watch: {why}\n{}",
            client.describe()
        );
        let needle = format!("Reconnected: user {user} from {new} port ");
        let log = lab.wait_log(
            &format!("resshd to log the reconnect from {new} (move {i})"),
            Duration::from_secs(30),
            |l| reconnects(l) > before && l.contains(&needle),
        );
        let line = log
            .lines()
            .rfind(|l| l.contains(&needle))
            .unwrap()
            .to_string();
        assert!(
            line.contains(&format!("(was {old} port ")),
            "the reconnect line does not name the old address {old}: {line}"
        );
        let seen = client.line_count();
        client.wait_lines(seen + 20, Duration::from_secs(30));
        let lines = client.out_lines();
        let from = route.min(reconnected) - Duration::from_millis(50);
        let (pause, _) = biggest_gap(&lines, from, reconnected + Duration::from_millis(300))
            .expect("lines around the move");
        let back = resumed_at(&lines, from, reconnected, normal_interval(&lines))
            .expect("a line after the reconnect");
        to_reconnected.add(reconnected.saturating_duration_since(route));
        to_data.add(back.saturating_duration_since(route));
        pauses.add(pause);
        moves.push(format!(
            "{old} -> {new}: route change -> reconnected {:.0} ms, -> data {:.0} ms, longest \
             pause {:.0} ms (roam() itself took {:.0} ms)",
            ms(reconnected.saturating_duration_since(route)),
            ms(back.saturating_duration_since(route)),
            ms(pause),
            ms(done.duration_since(route))
        ));
        assert!(
            client.try_status().is_none(),
            "ressh exited after move {i}\n{}",
            client.describe()
        );
    }

    fs::write(&stop, "").unwrap();
    let status = client.wait_exit(T);
    assert!(status.success(), "ressh: {status}\n{}", client.describe());
    let err = client.stderr();
    assert!(
        !err.contains("connection lost") && count(&err, NETLINK_REASON) == MOVES,
        "ressh took another path than the netlink watch:\n{err}"
    );
    let n = check_counter(&client.out_lines());
    for m in &moves {
        report("roaming", m);
    }
    report(
        "roaming",
        &format!(
            "{n} numbers, each exactly once; route change -> reconnected: {}; route change -> \
             data flowing: {}; longest pause: {}",
            to_reconnected.summary(),
            to_data.summary(),
            pauses.summary()
        ),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
