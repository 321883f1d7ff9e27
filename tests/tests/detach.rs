//! Issue 5, item 5: a session whose client vanished is torn down after the
//! configured detach time, with all its processes.
//!
//! resshd runs with `DetachTimeout 3`. The remote command leaves a
//! background `sleep` and waits on another. ressh is killed with SIGKILL:
//! 1. on an open path: its kernel closes the connection (FIN), resshd sees
//!    the end without DISCONNECT and detaches the session at once;
//! 2. behind a blackhole: nothing reaches resshd, whose ClientAlive
//!    (interval 1 s, 2 missed) finds the connection dead and detaches.
//!
//! Either way, about 3 s after "Detached" the session worker, the user's
//! programs and the monitor are gone, and resshd logs the detach timeout.
//! The time is measured from when resshd wrote "Detached" (the log file's
//! modification time, [`wait_logged`]), not from when the test read it:
//! at least 2.5 s from then until the processes were last seen alive, at
//! most 6 s until they were first seen gone. Printed: both.

use std::time::{Duration, Instant, SystemTime};

use crate::common::*;

#[test]
fn vanished_client_session_is_torn_down_after_detach_timeout() {
    let lab = Lab::new(
        "detach",
        "DetachTimeout 3\nClientAliveInterval 1\nClientAliveCountMax 2\n",
    );
    let user = lab.user().name.clone();
    for (round, blackhole) in [(1, false), (2, true)] {
        let mut client = Client::spawn(&mut lab.ressh(&[
            "server",
            "sleep 1000 & echo started; sleep 1001; echo never",
        ]));
        client.wait_line("started", T);
        let workers = lab.session_workers();
        assert_eq!(workers.len(), 1, "session workers: {workers:?}");
        let procs = lab.user().processes();
        assert!(
            procs.len() >= 3,
            "expected the worker, its shell and two sleeps: {procs:?}"
        );
        // The user's programs hold no socket of resshd's (the monitor's
        // endpoint once leaked into them and kept the monitor waiting).
        for p in procs.iter().filter(|p| !workers.contains(p)) {
            let s = sockets_above_stderr(*p);
            assert!(
                s.is_empty(),
                "process {p} ({:?}) holds sockets {s:?}",
                comm(*p)
            );
        }
        let detached_before = count(&lab.log(), "Detached: user ");
        let timeouts_before = count(&lab.log(), "Detach timeout: user ");
        let disconnected = format!("Disconnected from user {user}");
        let disconnected_before = count(&lab.log(), &disconnected);
        let since = SystemTime::now();
        if blackhole {
            lab.net.blackhole(true);
        }
        signal(client.pid(), "KILL");
        client.wait_exit(T);
        // When resshd wrote "Detached" (from its log file's times, not when
        // the test noticed), and when the processes were last seen alive and
        // first seen gone: the teardown took between `least` and `most`.
        let (detached_from, detached_by) = wait_logged(
            &lab.resshd,
            "Detached: user ",
            detached_before,
            since,
            Duration::from_secs(20),
        );
        let log = lab.log();
        assert!(
            log.contains(&format!("Detached: user {user} from 198.18.1.2")),
            "{log}"
        );
        let mut alive_at = detached_by;
        let gone_at = wait_for(
            &format!("round {round}: the session's processes to end"),
            Duration::from_secs(20),
            || {
                let t = SystemTime::now();
                if lab.user().processes().is_empty() {
                    Some(SystemTime::now())
                } else {
                    alive_at = t;
                    None
                }
            },
            || {
                format!(
                    "still running: {:?}\n--- resshd log ---\n{}",
                    lab.user().processes(),
                    lab.log()
                )
            },
        );
        let since_detach = |t: SystemTime, d: SystemTime| t.duration_since(d).unwrap_or_default();
        let least = since_detach(alive_at, detached_by);
        let most = since_detach(gone_at, detached_from);
        for p in &procs {
            assert!(!alive(*p), "process {p} of the session survived");
        }
        // The worker's "Detach timeout" (relayed by its monitor), then the
        // monitor's own "Disconnected", written after it has reaped the
        // worker: possibly after the processes are gone.
        lab.wait_log(
            "the monitor to log the end of the session",
            Duration::from_secs(10),
            |l| {
                count(l, "Detach timeout: user ") > timeouts_before
                    && count(l, &disconnected) > disconnected_before
            },
        );
        report(
            "detach timeout",
            &format!(
                "round {round} ({}): detached -> all processes gone in {:.2}..{:.2} s \
                 (DetachTimeout 3)",
                if blackhole {
                    "blackhole, ClientAlive"
                } else {
                    "FIN"
                },
                least.as_secs_f64(),
                most.as_secs_f64()
            ),
        );
        assert!(
            least >= Duration::from_millis(2500) && most <= Duration::from_secs(6),
            "round {round}: torn down between {least:?} and {most:?} after the detach; \
             DetachTimeout is 3 s\n{}",
            lab.log()
        );
        if blackhole {
            lab.net.blackhole(false);
        }
    }
    assert!(!lab.log().contains("Reconnected"), "{}", lab.log());
}

/// While a reconnect attempt waits on TCP (the server unreachable behind a
/// blackhole, SYNs lost), ressh keeps serving its event loop: SIGTERM ends
/// it at once rather than when the connect gives up (ConnectTimeout 20 in
/// the lab's config, the kernel's SYN retries without one). ressh must
/// still be running when the signal is sent, and exit through its own
/// handling of it ("Killed by signal 15.", status 255).
#[test]
fn ressh_stays_responsive_while_a_reconnect_waits_on_tcp() {
    let lab = Lab::new("attemptwait", "");
    let mut client = Client::spawn(&mut lab.ressh(&["-v", "server", "echo started; sleep 1000"]));
    client.wait_lines(0, T);
    let since = Instant::now();
    lab.net.blackhole(true);
    client.wait_err("connection lost", since, Duration::from_secs(15));
    client.wait_err("reconnect attempt 1", since, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    // Still running, waiting on the connect: the signal is what ends it.
    assert!(
        client.try_status().is_none(),
        "ressh exited before the signal\n{}",
        client.describe()
    );
    let sent = Instant::now();
    signal(client.pid(), "TERM");
    let status = client.wait_exit(Duration::from_secs(3));
    let took = sent.elapsed();
    lab.net.blackhole(false);
    // Through its own exit path (the signal handled by its event loop).
    assert_eq!(status.code(), Some(255), "{}", client.describe());
    client.wait_err("Killed by signal 15.", sent, Duration::ZERO);
    report(
        "reconnect",
        &format!(
            "SIGTERM during a connect to an unreachable server: exited after {} ms",
            took.as_millis()
        ),
    );
}

/// ressh's CPU time (user + system) in clock ticks, from /proc/PID/stat.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of proc(5) (utime, stime); `rest` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// A ressh that cannot reconnect waits quietly: its CPU time over 3 s of an
/// outage stays far below a core's (it spun at 100% when a keepalive
/// deadline it no longer acts on had passed, which starved the machine
/// when hundreds of clients were cut at once).
#[test]
fn a_detached_ressh_waits_without_spinning() {
    let lab = Lab::new("nospin", "");
    let mut client = Client::spawn(&mut lab.ressh(&["-v", "server", "echo started; sleep 1000"]));
    client.wait_lines(0, T);
    let since = Instant::now();
    lab.net.blackhole(true);
    client.wait_err("connection lost", since, Duration::from_secs(15));
    let before = cpu_ticks(client.pid());
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(client.pid()) - before;
    lab.net.blackhole(false);
    signal(client.pid(), "TERM");
    client.wait_exit(Duration::from_secs(5));
    // 100 ticks a second: 30 would be 10% of a core.
    assert!(
        used < 30,
        "ressh used {used} ticks of CPU in 3 s while detached"
    );
    report(
        "reconnect",
        &format!("detached ressh over 3 s: {used} ticks of CPU"),
    );
}
