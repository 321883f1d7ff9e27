//! Issue 23: a silently dead path is noticed in about a second. With ressh's
//! DEFAULT settings (only `LogLevel VERBOSE` added, for its "reconnected"
//! lines and counts), the router drops every packet of the session's TCP
//! flow, both ways, and only those (a NAT or firewall that forgot the flow,
//! [`Net::drop_flow`]); a new connection gets through. ressh suspects the
//! path after a few round trips without an answer and resumes on a new
//! connection made beside the old one (docs/PROTOCOL.md §4, "Path
//! suspicion").
//!
//! - output: a remote loop prints a numbered line every 100 ms; the flow is
//!   dropped [`runs`] times; output resumes within 3 s each time, the median
//!   within 2 s, and the numbers arrive exactly once and in order;
//! - typing: the same while the user types a numbered line every 100 ms
//!   and the remote `cat` echoes it;
//! - idle: nothing flows; the stall is noticed within the keepalive
//!   interval (15 s by default) plus the suspicion timeout, not twice it;
//! - a path that comes back: the flow passes again while the attempt
//!   beside it cannot connect; ressh keeps the old connection, resshd
//!   commits no reconnect, the output is exact;
//! - a slow healthy path: an upload through a relay with 100 ms round trip
//!   and a 100 kB/s bottleneck for [`slow_secs`]: no reconnect on
//!   suspicion (ressh's counts at exit), and the upload arrives intact;
//! - a healthy path on a machine with no CPU to spare: in its own test
//!   binary (tests/loaded.rs), since it loads every core.
//!
//! Printed: the time from the drop to output flowing again, per drop and
//! as a distribution (`RESSH_E2E_SUSPECT_RUNS=10` for bench/README.md).

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ressh_testkit::DelayRelay;

use crate::common::*;
use crate::suspect_kit::*;

/// The resume bound for every drop, and for their median.
const EVERY: Duration = Duration::from_secs(3);
const MEDIAN: Duration = Duration::from_secs(2);
/// ressh's default keepalive interval (ServerAliveInterval unset).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Drops per scenario (`RESSH_E2E_SUSPECT_RUNS`, default 5).
fn runs() -> usize {
    env_number("RESSH_E2E_SUSPECT_RUNS", 5)
}

/// Seconds of the slow-path upload (`RESSH_E2E_SLOW_SECS`, default 30).
fn slow_secs() -> usize {
    env_number("RESSH_E2E_SLOW_SECS", 30)
}

/// The client's one established connection to the server.
fn session_port(lab: &Lab) -> u16 {
    let ports = lab.net.client_ports(PORT);
    assert_eq!(
        ports.len(),
        1,
        "expected one connection, got ports {ports:?}"
    );
    ports[0]
}

/// Drops the session's flow [`runs`] times while lines flow; returns the
/// time from each drop to lines flowing again, each checked against
/// [`EVERY`].
fn drop_flow_repeatedly(lab: &Lab, client: &Client, what: &str) -> Stats {
    let mut took = Stats::default();
    for i in 0..runs() {
        let port = session_port(lab);
        lab.net.drop_flow(port, true);
        let dropped = Instant::now();
        // Today's behaviour (no suspicion) takes twice the keepalive.
        let reconnected = client.wait_err("reconnected to ", dropped, KEEPALIVE * 3);
        client.wait_lines(client.line_count() + 10, Duration::from_secs(20));
        lab.net.drop_flow(port, false);
        let lines = client.out_lines();
        let back = resumed_at(&lines, dropped, reconnected, normal_interval(&lines))
            .expect("a line after the reconnect");
        let t = back.saturating_duration_since(dropped);
        report(
            "suspicion",
            &format!(
                "{what}, drop {i}: lines again after {:.0} ms (reconnected after {:.0} ms)",
                ms(t),
                ms(reconnected.saturating_duration_since(dropped))
            ),
        );
        assert!(
            t <= EVERY,
            "{what}, drop {i}: lines flowed again only {t:?} after the flow was dropped \
             (bound {EVERY:?})\n{}",
            client.describe()
        );
        assert_ne!(session_port(lab), port, "still on the dropped flow");
        took.add(t);
    }
    assert!(
        took.quantile(0.5) <= MEDIAN,
        "{what}: median time to resume {:?} above {MEDIAN:?}: {}",
        took.quantile(0.5),
        took.summary()
    );
    took
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[test]
fn output_resumes_within_seconds_when_the_flow_is_dropped() {
    let lab = Lab::new("susp_out", "DetachTimeout 300\n");
    let cfg = default_config(&lab, "default_config", PORT);
    let stop = lab.user().home.join("stop-counter");
    let cmd = ticker(&stop);
    let mut client = Client::spawn(&mut ressh_cmd(&lab.net, &cfg, &["server", &cmd]));
    client.wait_lines(10, T);
    let took = drop_flow_repeatedly(&lab, &client, "output");
    fs::write(&stop, "").unwrap();
    let status = client.wait_exit(T);
    assert!(status.success(), "ressh: {status}\n{}", client.describe());
    let n = check_counter(&client.out_lines());
    check_counts(&client, runs());
    let log = wait_reconnects(&lab.resshd, runs(), T);
    assert_eq!(reconnects(&log), runs(), "resshd's reconnect count\n{log}");
    report(
        "suspicion",
        &format!(
            "output: {n} lines, each exactly once; drop -> lines again: {}",
            took.summary()
        ),
    );
}

#[test]
fn typing_echoes_again_within_seconds_when_the_flow_is_dropped() {
    let lab = Lab::new("susp_type", "DetachTimeout 300\n");
    let cfg = default_config(&lab, "default_config", PORT);
    let (mut client, mut stdin) =
        Client::spawn_typed(&mut ressh_cmd(&lab.net, &cfg, &["-T", "server", "cat"]));
    // The user types a numbered line every 100 ms; the remote cat echoes.
    let stop = Arc::new(AtomicBool::new(false));
    let typist = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                stdin.write_all(format!("{i}\n").as_bytes()).unwrap();
                i += 1;
                thread::sleep(Duration::from_millis(100));
            }
            stdin.write_all(format!("END {i}\n").as_bytes()).unwrap();
        })
    };
    client.wait_lines(10, T);
    let took = drop_flow_repeatedly(&lab, &client, "typing");
    stop.store(true, Ordering::Relaxed);
    typist.join().unwrap();
    let status = client.wait_exit(T);
    assert!(status.success(), "ressh: {status}\n{}", client.describe());
    let n = check_counter(&client.out_lines());
    check_counts(&client, runs());
    report(
        "suspicion",
        &format!(
            "typing: {n} lines echoed, each exactly once; drop -> echo again: {}",
            took.summary()
        ),
    );
}

/// A path that was only slow: the flow is dropped long enough for a
/// suspicion, and new connections cannot get through, so the attempt
/// beside it hangs; then the old flow passes again. Its bytes arrive
/// before the attempt completed: ressh abandons the attempt and keeps the
/// old connection (the same local port), resshd commits no reconnect, and
/// the counter's output is complete and in order.
#[test]
fn a_path_that_comes_back_first_keeps_the_old_connection() {
    let lab = Lab::new("susp_back", "DetachTimeout 300\n");
    let cfg = config_with(&lab, "debug_config", PORT, "LogLevel DEBUG1\n");
    let stop = lab.user().home.join("stop-counter");
    let cmd = ticker(&stop);
    let mut client = Client::spawn(&mut ressh_cmd(&lab.net, &cfg, &["server", &cmd]));
    client.wait_lines(10, T);
    let port = session_port(&lab);
    lab.net.drop_new_connections(true);
    lab.net.drop_flow(port, true);
    let dropped = Instant::now();
    client.wait_err("reconnect attempt 1", dropped, Duration::from_secs(10));
    lab.net.drop_flow(port, false);
    let kept = client.wait_err("keeping it", dropped, Duration::from_secs(20));
    lab.net.drop_new_connections(false);
    report(
        "suspicion",
        &format!(
            "slow path: the old connection answered first, {:.0} ms after the drop",
            ms(kept.saturating_duration_since(dropped))
        ),
    );
    client.wait_lines(client.line_count() + 10, Duration::from_secs(20));
    assert_eq!(session_port(&lab), port, "ressh left the old connection");
    fs::write(&stop, "").unwrap();
    let status = client.wait_exit(T);
    assert!(status.success(), "ressh: {status}\n{}", client.describe());
    check_counter(&client.out_lines());
    let want = "path suspicions: 1 reconnects (0 switched, 1 kept the old connection";
    assert!(
        client.stderr().lines().any(|l| l.starts_with(want)),
        "ressh's counts do not say {want:?}\n{}",
        client.describe()
    );
    assert_eq!(reconnects(&lab.log()), 0, "resshd committed a reconnect");
}

#[test]
fn an_idle_session_notices_within_the_keepalive_interval() {
    let lab = Lab::new("susp_idle", "DetachTimeout 300\n");
    let cfg = default_config(&lab, "default_config", PORT);
    let (mut client, mut stdin) =
        Client::spawn_typed(&mut ressh_cmd(&lab.net, &cfg, &["-T", "server", "cat"]));
    stdin.write_all(b"0\n").unwrap();
    client.wait_lines(0, T);
    // Idle: let the round-trip measurement and the delayed ACKs settle.
    thread::sleep(Duration::from_secs(2));
    let port = session_port(&lab);
    lab.net.drop_flow(port, true);
    let dropped = Instant::now();
    let reconnected = client.wait_err("reconnected to ", dropped, KEEPALIVE * 3);
    lab.net.drop_flow(port, false);
    let noticed = reconnected.saturating_duration_since(dropped);
    report(
        "suspicion",
        &format!(
            "idle: reconnected {:.0} ms after the drop (keepalive interval {KEEPALIVE:?})",
            ms(noticed)
        ),
    );
    // The probe goes at most the keepalive interval after the drop, the
    // suspicion (at most 1 s before any measurement) after that; 1 s of slack.
    let bound = KEEPALIVE + Duration::from_secs(2);
    assert!(
        noticed <= bound,
        "an idle session noticed the dead flow only after {noticed:?} (bound {bound:?})\n{}",
        client.describe()
    );
    // The session works on the new connection.
    stdin.write_all(b"1\nEND 2\n").unwrap();
    drop(stdin);
    let status = client.wait_exit(T);
    assert!(status.success(), "ressh: {status}\n{}", client.describe());
    check_counter(&client.out_lines());
    check_counts(&client, 1);
}

#[test]
fn a_slow_healthy_path_is_not_suspected_during_an_upload() {
    const RATE: u64 = 100_000;
    let lab = Lab::new("susp_slow", "DetachTimeout 300\n");
    // 50 ms each way (100 ms round trip) and a 1 MB/s bottleneck in front
    // of resshd, in the server namespace.
    let target: SocketAddr = format!("198.18.0.1:{PORT}").parse().unwrap();
    let relay = lab.net.enter_server(|| {
        let l = TcpListener::bind(("198.18.0.1", 0)).expect("bind the relay");
        DelayRelay::start(l, target, Duration::from_millis(50), RATE).expect("start the relay")
    });
    let cfg = default_config(&lab, "slow_config", relay.addr.port());
    let secs = slow_secs();
    let file = lab.dir.join("upload");
    random_file(&file, RATE as usize * secs);
    let started = Instant::now();
    let mut client = Client::spawn_with(
        &mut ressh_cmd(&lab.net, &cfg, &["server", "sha256sum"]),
        Stdio::from(fs::File::open(&file).unwrap()),
    );
    let status = client.wait_exit(Duration::from_secs(secs as u64 * 3 + 60));
    let took = started.elapsed();
    assert!(status.success(), "ressh: {status}\n{}", client.describe());
    let want = sha256_file(&file);
    let got = client.out_lines();
    assert!(
        got.first().is_some_and(|(_, l)| l.starts_with(&want)),
        "the upload arrived changed: {want} sent, {got:?} received"
    );
    check_counts(&client, 0);
    assert_eq!(reconnects(&lab.log()), 0, "resshd saw reconnects");
    let summary = counts_line(&client);
    report(
        "suspicion",
        &format!(
            "slow path: {} kB uploaded in {:.1} s through 100 ms RTT and {} kB/s; {summary}",
            RATE as usize * secs / 1000,
            took.as_secs_f64(),
            RATE / 1000
        ),
    );
}
