//! The resilience extension (docs/PROTOCOL.md) in the session worker:
//! detaching when the TCP connection breaks, reconnects routed by the
//! harness (playing the broker, the monitors and the new connection's kex
//! worker) over real sockets, refusals, the detach timeout, backpressure
//! while detached, and an explicit DISCONNECT. Driven by ressh-proto's
//! client, since stock `ssh` does not speak the extension.

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use common::{default_policy, flip_request_mac, rss_kib, Cut, Harness, MonitorEvent, ProtoClient};
use ressh_ipc::msg::SessionPolicy;
use ressh_proto::msg::{ChannelKind, ChannelReq};
use ressh_proto::resilience::failure;
use ressh_proto::{Config, Connection, Event};

const T: Duration = Duration::from_secs(60);

fn policy(detach_secs: u64) -> SessionPolicy {
    SessionPolicy {
        detach_timeout_secs: detach_secs,
        ..default_policy()
    }
}

/// Connects and waits until the worker has told the monitor its resume
/// tokens (the harness routes reconnects by them).
fn connect(h: &Harness) -> ProtoClient {
    let c = ProtoClient::connect(h);
    h.wait_events(1, |e| matches!(e, MonitorEvent::Tokens(_)), T);
    c
}

/// Opens a session channel (with a pty if asked) and runs `cmd`.
fn exec(c: &mut ProtoClient, cmd: &str, pty: bool) -> u32 {
    let id = c.conn.open_channel(ChannelKind::Session).unwrap();
    c.until(
        T,
        |_, ev| matches!(ev, Event::ChannelOpened { id: i } if i == id),
    );
    if pty {
        let req = ChannelReq::PtyReq {
            term: "xterm".into(),
            cols: 80,
            rows: 24,
            width_px: 0,
            height_px: 0,
            modes: vec![0],
        };
        c.conn.channel_request(id, req, true).unwrap();
        c.until(T, |_, ev| match ev {
            Event::ChannelReply { success, .. } => {
                assert!(success, "pty refused");
                true
            }
            _ => false,
        });
    }
    c.conn
        .channel_request(id, ChannelReq::Exec(cmd.as_bytes().to_vec()), true)
        .unwrap();
    c.until(T, |_, ev| match ev {
        Event::ChannelReply { success, .. } => {
            assert!(success, "exec refused");
            true
        }
        _ => false,
    });
    id
}

/// What arrived on each channel.
#[derive(Default, Debug)]
struct Chan {
    out: Vec<u8>,
    status: Option<u32>,
    closed: bool,
}

/// The client's side of a few channels: collects output, answers EOF, and
/// feeds `input` to the channel `feed` (then EOF).
#[derive(Default)]
struct Streams {
    chans: HashMap<u32, Chan>,
    feed: Option<u32>,
    input: Vec<u8>,
    sent: usize,
}

impl Streams {
    fn on(&mut self, conn: &mut Connection, ev: Event) {
        match ev {
            Event::Data { id, data } => {
                conn.consume(id, data.len()).unwrap();
                self.chans
                    .entry(id)
                    .or_default()
                    .out
                    .extend_from_slice(&data);
            }
            Event::ChannelRequest {
                id,
                request: ChannelReq::ExitStatus(s),
                ..
            } => self.chans.entry(id).or_default().status = Some(s),
            Event::Eof { id } => conn.send_eof(id).unwrap(),
            Event::Closed { id } => self.chans.entry(id).or_default().closed = true,
            _ => {}
        }
        self.push(conn);
    }

    /// Offers more input than the window takes, so that the engine reports
    /// `Writable` when the window opens again.
    fn push(&mut self, conn: &mut Connection) {
        let Some(id) = self.feed else { return };
        if self.sent < self.input.len() {
            let end = self.input.len().min(self.sent + 64 * 1024);
            self.sent += conn.send_data(id, &self.input[self.sent..end]).unwrap();
            if self.sent == self.input.len() {
                conn.send_eof(id).unwrap();
            }
        }
    }

    fn out(&self, id: u32) -> usize {
        self.chans.get(&id).map_or(0, |c| c.out.len())
    }

    fn all_closed(&self, ids: &[u32]) -> bool {
        ids.iter()
            .all(|id| self.chans.get(id).is_some_and(|c| c.closed))
    }
}

/// Sends `line` through a `cat` channel and waits for its echo.
fn echo(c: &mut ProtoClient, st: &mut Streams, id: u32, line: &[u8]) {
    let before = st.out(id);
    c.conn.send_data(id, line).unwrap();
    let deadline = Instant::now() + T;
    while st.out(id) < before + line.len() {
        assert!(Instant::now() < deadline, "no echo of {line:?}");
        c.step(|conn, ev| st.on(conn, ev));
    }
    assert_eq!(&st.chans[&id].out[before..], line);
}

fn seq_output(n: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 1..=n {
        v.extend_from_slice(i.to_string().as_bytes());
        v.push(b'\n');
    }
    v
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn detached(e: &MonitorEvent) -> bool {
    matches!(e, MonitorEvent::Detached)
}

fn attached(e: &MonitorEvent) -> bool {
    matches!(e, MonitorEvent::Attached { .. })
}

fn wait_gone(h: &Harness, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !h.user.processes().is_empty() {
        assert!(
            Instant::now() < deadline,
            "left running: {:?}",
            h.user.processes()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn wait_exit(h: &Harness, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !h.workers_exited() {
        assert!(
            Instant::now() < deadline,
            "the worker is still running; log:\n{}",
            h.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// (a) Output of `seq` and an echo through `cat` flow while the client's
/// TCP connection is cut several times (EOF, reset, and a make-before-break
/// reconnect over a connection that never broke): every byte arrives once
/// and in order, and so do the exit statuses.
#[test]
fn streams_survive_broken_connections() {
    let h = Harness::start("rcut", policy(30));
    let mut c = connect(&h);
    const N: u32 = 2_000_000;
    let expected = seq_output(N);
    let cat = exec(&mut c, "cat", false);
    let seq = exec(&mut c, &format!("seq 1 {N}"), false);
    let mut st = Streams {
        feed: Some(cat),
        input: pattern(6 << 20),
        ..Default::default()
    };
    st.push(&mut c.conn);
    let cuts = [
        (expected.len() / 10, Some(Cut::Shutdown)),
        (expected.len() * 3 / 10, Some(Cut::Reset)),
        (expected.len() / 2, None),
        (expected.len() * 7 / 10, Some(Cut::Reset)),
    ];
    let mut kills = 0;
    for (k, (at, how)) in cuts.iter().enumerate() {
        let deadline = Instant::now() + T;
        while st.out(seq) < *at {
            assert!(Instant::now() < deadline, "stalled before cut {k}");
            c.step(|conn, ev| st.on(conn, ev));
        }
        if let Some(how) = how {
            c.kill_transport(*how);
            kills += 1;
            // The worker notices, detaches and tells the monitor.
            h.wait_events(kills, detached, T);
        }
        c.reconnect()
            .unwrap_or_else(|r| panic!("reconnect {k} refused: {r:?}\n{}", h.log()));
        st.push(&mut c.conn);
    }
    let deadline = Instant::now() + T;
    while !st.all_closed(&[cat, seq]) {
        assert!(
            Instant::now() < deadline,
            "streams did not finish: seq {} of {}, cat {} of {}",
            st.out(seq),
            expected.len(),
            st.out(cat),
            st.input.len()
        );
        c.step(|conn, ev| st.on(conn, ev));
    }
    assert!(
        st.chans[&seq].out == expected,
        "seq output corrupted: {} bytes of {}",
        st.out(seq),
        expected.len()
    );
    assert!(
        st.chans[&cat].out == st.input,
        "echo corrupted: {} bytes of {}",
        st.out(cat),
        st.input.len()
    );
    assert_eq!(st.chans[&seq].status, Some(0));
    assert_eq!(st.chans[&cat].status, Some(0));
    c.bye();
    let log = h.finish();
    assert_eq!(h.count_events(detached), 3, "{:?}", h.monitor_events());
    assert_eq!(h.count_events(attached), 4, "{:?}", h.monitor_events());
    // After start and after every reconnect; then the current and the
    // previous token.
    assert_eq!(
        h.count_events(|e| matches!(e, MonitorEvent::Tokens(2))),
        4,
        "{:?}",
        h.monitor_events()
    );
    assert_eq!(log.matches("Reconnected: user ").count(), 4, "{log}");
    assert_eq!(
        log.matches("; waiting up to 30 s for a reconnect").count(),
        3,
        "{log}"
    );
    let user = &h.user.name;
    assert!(
        log.contains(&format!("Reconnected: user {user} from 127.0.0.1 port ")),
        "{log}"
    );
    assert!(log.contains("(was 127.0.0.1 port "), "{log}");
    assert!(log.contains("Received disconnect"), "{log}");
    assert!(!log.contains("failed"), "{log}");
}

/// (b) A forged request (a flipped MAC byte) is refused with
/// AUTHENTICATION_FAILED and the live session carries on; so does it after
/// attempts abandoned before the key confirmation.
#[test]
fn forged_and_abandoned_reconnects_change_nothing() {
    let h = Harness::start("rforge", policy(30));
    let mut c = connect(&h);
    let cat = exec(&mut c, "cat", false);
    let mut st = Streams::default();
    echo(&mut c, &mut st, cat, b"before\n");

    let r = c
        .reconnect_tampered(|b| flip_request_mac(b), false)
        .expect_err("a forged request must be refused");
    assert_eq!(r.code, failure::AUTHENTICATION_FAILED, "{r:?}");
    assert_eq!(
        h.count_events(|e| matches!(e, MonitorEvent::Verdict(Err((2, _))))),
        1
    );
    echo(&mut c, &mut st, cat, b"after a forgery\n");

    // The client closes the new connection once the reply arrived.
    c.reconnect_tampered(|_| {}, true)
        .expect_err("the attempt was given up");
    h.wait_log(
        |l| l.contains("failed: connection closed before the key confirmation"),
        T,
    );
    echo(&mut c, &mut st, cat, b"after an abandoned attempt\n");

    // The client sends the request and then nothing: the attempt times out
    // after 10 s (PENDING_TIMEOUT, counted from the request's arrival), and
    // the server closes the connection then, not before and not much later.
    let held = c.reconnect_unconfirmed();
    let log = h.wait_log(|l| l.contains("failed: timed out"), T);
    assert!(
        held >= Duration::from_secs(10) && held <= Duration::from_secs(12),
        "the unconfirmed attempt was closed {held:?} after its request\n{log}"
    );
    echo(&mut c, &mut st, cat, b"after a timeout\n");

    // A real reconnect still works after all of it.
    c.reconnect().unwrap();
    echo(&mut c, &mut st, cat, b"after a reconnect\n");
    c.bye();
    let log = h.finish();
    assert!(
        log.contains("reconnect refused: authentication failed (code 2)"),
        "{log}"
    );
    assert_eq!(h.count_events(detached), 0, "{:?}", h.monitor_events());
    assert_eq!(h.count_events(attached), 1, "{:?}", h.monitor_events());
    assert_eq!(log.matches("Reconnected: user ").count(), 1, "{log}");
}

/// (c) A client that vanishes: after DetachTimeout the worker tears the
/// session down as on a disconnect and exits; the user's processes are gone.
#[test]
fn detach_timeout_ends_the_session() {
    let h = Harness::start("rtimeout", policy(2));
    let mut c = connect(&h);
    exec(&mut c, "sleep 1000", true);
    exec(&mut c, "cat", false);
    h.wait_log(|l| l.contains("exec \"cat\""), T);
    assert!(h.user.processes().len() >= 3, "{:?}", h.user.processes());
    let t0 = Instant::now();
    c.kill_transport(Cut::Reset);
    h.wait_events(1, detached, T);
    wait_exit(&h, Duration::from_secs(15));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(6),
        "the worker exited after {took:?}"
    );
    let log = h.finish();
    let user = &h.user.name;
    assert!(
        log.contains(&format!(
            "Detached: user {user} from 127.0.0.1 port {}; waiting up to 2 s for a reconnect",
            c_port(&log)
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("Detach timeout: user {user} from 127.0.0.1 port ")),
        "{log}"
    );
    wait_gone(&h, Duration::from_secs(10));
    // The session is gone: a reconnect names an unknown session.
    let r = c.reconnect().expect_err("no session to resume");
    assert_eq!(r.code, failure::UNKNOWN_SESSION, "{r:?}");
}

/// The client's port from the worker's first log line.
fn c_port(log: &str) -> String {
    let l = log.lines().next().unwrap();
    let after = l.split(" port ").nth(1).unwrap();
    after.split(':').next().unwrap().to_string()
}

/// (d) The remote side writes as fast as it can while the client is gone:
/// the worker stops reading it once the retransmit buffer is full, its
/// memory stays bounded, and after the reconnect everything arrives intact.
#[test]
fn backpressure_while_detached() {
    const CAP: u32 = 1 << 20;
    let proto = Config {
        resilience_buffer: CAP,
        detach_timeout: 60,
        ..Config::default()
    };
    let h = Harness::start_with("rbp", policy(60), proto);
    let mut c = connect(&h);
    let pid = h.worker_pids()[0];
    // About 48 MB: far more than the cap, the window and the pipe hold.
    const N: u32 = 6_000_000;
    let expected = seq_output(N);
    let base = rss_kib(pid);
    let seq = exec(&mut c, &format!("seq 1 {N}"), false);
    let log = h.wait_log(|l| l.contains("exec \"seq 1 "), T);
    let child: i32 = log
        .split(&format!("exec \"seq 1 {N}\", pid "))
        .nth(1)
        .and_then(|r| r.lines().next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap();
    let mut st = Streams::default();
    let deadline = Instant::now() + T;
    while st.out(seq) < 2 << 20 {
        assert!(Instant::now() < deadline);
        c.step(|conn, ev| st.on(conn, ev));
    }
    c.kill_transport(Cut::Reset);
    h.wait_events(1, detached, T);
    // Let the worker fill its buffer, then watch its memory.
    thread::sleep(Duration::from_millis(500));
    let mut samples = Vec::new();
    for _ in 0..20 {
        samples.push(rss_kib(pid));
        thread::sleep(Duration::from_millis(100));
    }
    let max = *samples.iter().max().unwrap();
    let limit = base + u64::from(CAP) / 1024 + 6 * 1024;
    assert!(
        max <= limit,
        "worker RSS {max} KiB while detached (base {base} KiB, cap {} KiB): {samples:?}",
        CAP / 1024
    );
    // Not growing: the child is blocked, not buffered.
    assert!(
        samples[samples.len() - 1] <= samples[0] + 1024,
        "RSS grows while detached: {samples:?}"
    );
    // Not finished but blocked writing: its output waits in its pipe.
    let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap();
    let state = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(state, "S", "seq should sleep on its full pipe: {stat}");
    assert!(st.out(seq) < expected.len() / 2);
    c.reconnect().unwrap();
    let deadline = Instant::now() + T;
    while !st.all_closed(&[seq]) {
        assert!(
            Instant::now() < deadline,
            "got {} of {}",
            st.out(seq),
            expected.len()
        );
        c.step(|conn, ev| st.on(conn, ev));
    }
    assert_eq!(st.out(seq), expected.len());
    assert!(st.chans[&seq].out == expected, "output corrupted");
    assert_eq!(st.chans[&seq].status, Some(0));
    c.bye();
    h.finish();
}

/// (e) An explicit DISCONNECT ends the session at once, detach timeout or
/// not, and hangs up its pty session.
#[test]
fn disconnect_ends_the_session_at_once() {
    let h = Harness::start("rbye", policy(60));
    let mut c = connect(&h);
    exec(&mut c, "sleep 1000", true);
    h.wait_log(|l| l.contains("exec \"sleep 1000\" on /dev/pts/"), T);
    let t0 = Instant::now();
    c.bye();
    wait_exit(&h, Duration::from_secs(15));
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let log = h.finish();
    assert!(log.contains("Received disconnect"), "{log}");
    assert!(!log.contains("Detached"), "{log}");
    assert_eq!(h.count_events(detached), 0);
    wait_gone(&h, Duration::from_secs(10));
}

/// ClientAlive leaves a detached session alone; attached, it runs as
/// before, and a client that stops answering detaches the session (the
/// transport is dead) instead of ending it.
#[test]
fn client_alive_and_detached_sessions() {
    let mut p = policy(30);
    p.client_alive_interval_secs = 1;
    p.client_alive_count_max = 2;
    let h = Harness::start("ralive", p);
    let mut c = connect(&h);
    let cat = exec(&mut c, "cat", false);
    let mut st = Streams::default();
    echo(&mut c, &mut st, cat, b"one\n");
    c.kill_transport(Cut::Shutdown);
    h.wait_events(1, detached, T);
    // Longer than Interval × (CountMax + 1).
    thread::sleep(Duration::from_millis(4500));
    c.reconnect().unwrap();
    echo(&mut c, &mut st, cat, b"two\n");
    // Attached and answering: kept.
    let until = Instant::now() + Duration::from_millis(4500);
    while Instant::now() < until {
        c.step(|conn, ev| st.on(conn, ev));
    }
    echo(&mut c, &mut st, cat, b"three\n");
    assert!(!h.log().contains("Timeout, client not responding"));
    // A client that stops answering (its socket still open).
    let log = h.wait_log(|l| l.contains("Timeout, client not responding"), T);
    assert!(!log.contains("Detach timeout"), "{log}");
    h.wait_events(2, detached, T);
    c.reconnect().unwrap();
    echo(&mut c, &mut st, cat, b"four\n");
    c.bye();
    let log = h.finish();
    assert_eq!(log.matches("Reconnected: user ").count(), 2, "{log}");
}

/// A reconnect routed while the worker blocks on a rekey signature is
/// queued and handled right after it, in order.
#[test]
fn reconnect_while_waiting_for_a_signature() {
    let h = Harness::start("rsign", policy(30));
    let mut c = connect(&h);
    let cat = exec(&mut c, "cat", false);
    let mut st = Streams::default();
    echo(&mut c, &mut st, cat, b"one\n");
    h.set_sign_delay(Duration::from_millis(1500));
    let before = h.sign_requests();
    c.conn.rekey().unwrap();
    let deadline = Instant::now() + T;
    while h.sign_requests() == before {
        assert!(Instant::now() < deadline, "no signature requested");
        c.step(|conn, ev| st.on(conn, ev));
    }
    // The worker now waits for the signature; the reconnect's messages
    // reach it meanwhile (make-before-break: the old transport is open).
    let t0 = Instant::now();
    c.reconnect().unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
    h.set_sign_delay(Duration::ZERO);
    echo(&mut c, &mut st, cat, b"two\n");
    c.bye();
    let log = h.finish();
    assert_eq!(h.signs(), before + 1);
    assert_eq!(log.matches("Reconnected: user ").count(), 1, "{log}");
    assert_eq!(h.count_events(detached), 0);
}

/// A monitor that goes away ends the session, detached or not.
#[test]
fn a_vanished_monitor_ends_the_session() {
    let h = Harness::start("rmon", policy(60));
    let mut c = connect(&h);
    exec(&mut c, "sleep 1000", true);
    h.wait_log(|l| l.contains("exec \"sleep 1000\" on /dev/pts/"), T);
    c.kill_transport(Cut::Reset);
    h.wait_events(1, detached, T);
    h.close_monitor(0);
    wait_exit(&h, Duration::from_secs(10));
    let log = h.finish();
    // With the monitor gone the worker's last line falls back to its
    // stderr: the harness's log (a real monitor gives it /dev/null).
    assert!(
        log.contains("the monitor closed its endpoint; ending the session"),
        "{log}"
    );
    wait_gone(&h, Duration::from_secs(10));
}
