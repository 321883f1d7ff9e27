//! Issue 24, targets: a mass reconnect. Many ressh sessions (of 10 users,
//! or of one user) run a slow counter; every connection is killed at once
//! (`ss -K` in the client namespace, [`Net::kill_tcp`]); every session must
//! resume with nothing lost, under resshd's default MaxStartups
//! (10:30:100), MaxDetachedSessions (10) and DetachGraceTime (10m).
//! A third test does the same while a flood of new connections from
//! another address (the server namespace's own, 198.18.0.1) holds every
//! startup slot: the reconnects still complete and the flood stays bounded
//! by MaxStartups.
//!
//! Size: `RESSH_MASS_SESSIONS` sessions (default 100, which fits CI's time
//! on two cores; the 1,000 and 500 were run by hand for
//! bench/README.md); the one-user test uses half as many.
//!
//! Printed: the time from the kill to each client's "reconnected" line
//! (min, median, p95, max = when all had resumed) and the flood's counts.

use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// The bound on the time until all sessions have resumed (the issue's
/// target is 10 s for 1,000 sessions on this 2-core machine).
const ALL_RESUMED: Duration = Duration::from_secs(10);

fn size() -> usize {
    std::env::var("RESSH_MASS_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

/// A counter that prints a number a second until `stop` exists.
fn slow_counter(stop: &std::path::Path) -> String {
    format!(
        "i=0; while [ ! -e {stop} ]; do echo $i; i=$((i+1)); sleep 1; done; echo END $i",
        stop = sq(&stop.to_string_lossy())
    )
}

struct Mass {
    lab: Lab,
    /// Extra users beyond the lab's own.
    logins: Vec<Login>,
    clients: Vec<Client>,
    stops: Vec<std::path::PathBuf>,
}

/// Starts `n` sessions spread over `users` users, a few logins at a time
/// (new logins are what MaxStartups limits).
fn start(tag: &str, n: usize, users: usize) -> Mass {
    let lab = Lab::new(tag, "DetachTimeout 600\nLogLevel VERBOSE\n");
    let logins: Vec<Login> = (1..users)
        .map(|i| Lab::make_login(&lab.dir, &lab.known_hosts, &format!("m{i}"), CLIENT_EXTRA))
        .collect();
    let mut clients = Vec::new();
    let mut stops = Vec::new();
    let t0 = Instant::now();
    for i in 0..n {
        let u = i % users;
        let (config, home) = if u == 0 {
            (&lab.login.config, &lab.user().home)
        } else {
            (&logins[u - 1].config, &logins[u - 1].user.home)
        };
        let stop = home.join(format!("stop-{i}"));
        let c = Client::spawn(&mut ressh_cmd(
            &lab.net,
            config,
            &["server", &slow_counter(&stop)],
        ));
        clients.push(c);
        stops.push(stop);
        // At most 8 logins in flight.
        if clients.len() >= 8 {
            clients[clients.len() - 8].wait_lines(0, T);
        }
    }
    for c in &clients {
        c.wait_lines(0, T);
    }
    report(
        tag,
        &format!(
            "{n} sessions of {users} users started in {:.1} s",
            t0.elapsed().as_secs_f64()
        ),
    );
    Mass {
        lab,
        logins,
        clients,
        stops,
    }
}

impl Mass {
    /// Kills every connection; waits until every client has reconnected;
    /// returns the time from the kill to each client's "reconnected" line.
    fn kill_all_and_wait(&self, tag: &str) -> Stats {
        // Let every counter print a line or two more first.
        thread::sleep(Duration::from_millis(1500));
        let killed_at = Instant::now();
        // One `ss -K` run: the first reconnects are up before a second look.
        let killed = self.lab.net.try_kill_tcp(PORT);
        let kill_took = killed_at.elapsed();
        // At least every session's; with many, the first clients are back
        // before `ss` is done, and their new connections go too.
        assert!(
            killed >= self.clients.len(),
            "{killed} connections killed for {} sessions",
            self.clients.len()
        );
        let mut times = Stats::default();
        let deadline = killed_at + Duration::from_secs(60);
        for (i, c) in self.clients.iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            let at = c.wait_err(
                "reconnected to",
                killed_at,
                left.max(Duration::from_millis(1)),
            );
            let _ = i;
            times.add(at.duration_since(killed_at));
        }
        report(
            tag,
            &format!(
                "{} sessions killed at once (`ss -K` took {} ms), time to the client's \"reconnected\": {}",
                self.clients.len(),
                kill_took.as_millis(),
                times.summary()
            ),
        );
        times
    }

    /// Stops every counter and checks that each printed every number once,
    /// in order, over the cut.
    fn finish(mut self, killed_seen: Instant) {
        let before: Vec<usize> = self.clients.iter().map(|c| c.line_count()).collect();
        // Each counter prints again after the reconnect.
        for (i, c) in self.clients.iter().enumerate() {
            c.wait_lines(before[i], Duration::from_secs(30));
        }
        for s in &self.stops {
            fs::write(s, "").unwrap();
        }
        let mut lost = Vec::new();
        for (i, c) in self.clients.iter_mut().enumerate() {
            let st = c.wait_exit(T);
            assert!(st.success(), "client {i}: {st}\n{}", c.describe());
            let n = check_counter(&c.out_lines());
            let after: usize = c
                .out_lines()
                .iter()
                .filter(|(t, _)| *t > killed_seen)
                .count();
            if after == 0 {
                lost.push(i);
            }
            assert!(n >= 2, "client {i}: {n} lines");
        }
        assert!(lost.is_empty(), "no output after the cut: {lost:?}");
        let log = self.lab.log();
        assert_eq!(
            count(&log, "too many detached sessions"),
            0,
            "sessions ended by the detached cap"
        );
        drop(self.logins);
    }
}

fn run(tag: &str, n: usize, users: usize) {
    let m = start(tag, n, users);
    let killed = Instant::now();
    let times = m.kill_all_and_wait(tag);
    let log = m.lab.log();
    report(
        tag,
        &format!(
            "resshd: {} dropped past MaxStartups, {} reconnects refused with TRY_AGAIN",
            count(&log, "past MaxStartups"),
            count(&log, "refused")
        ),
    );
    let all = times.quantile(1.0);
    m.finish(killed);
    assert!(
        all <= ALL_RESUMED,
        "all {n} sessions resumed only after {all:?}: {}",
        times.summary()
    );
}

#[test]
fn mass_reconnect_of_ten_users_sessions() {
    run("mass10", size(), 10);
}

#[test]
fn mass_reconnect_of_one_users_sessions() {
    run("mass1", size() / 2, 1);
}

/// Holds as many connections to the server as it takes, from the server
/// namespace (source 198.18.0.1), sending nothing: each one the server
/// greets stays open (a startup until LoginGraceTime), each one it drops
/// is opened again. Returns (greeted, dropped) when `stop` is set.
fn flood(net: &Net, stop: Arc<AtomicBool>) -> thread::JoinHandle<(usize, usize)> {
    net.spawn_in_server(move || {
        let mut held = Vec::new();
        let mut dropped = 0;
        // Bounded in count and time.
        let until = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed)
            && Instant::now() < until
            && held.len() + dropped < 50_000
        {
            let Ok(mut s) = TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([198, 18, 0, 1], PORT)),
                Duration::from_secs(2),
            ) else {
                thread::sleep(Duration::from_millis(5));
                continue;
            };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut b = [0u8; 4];
            match s.read(&mut b) {
                Ok(n) if n > 0 => held.push(s),
                _ => dropped += 1,
            }
        }
        (held.len(), dropped)
    })
}

#[test]
fn mass_reconnect_during_a_flood_of_new_connections() {
    let tag = "massflood";
    let m = start(tag, size(), 10);
    let stop = Arc::new(AtomicBool::new(false));
    let f = flood(&m.lab.net, stop.clone());
    // The flood fills MaxStartups (full: 100) before the cut.
    m.lab.wait_log("the flood to reach MaxStartups", T, |l| {
        count(l, "past MaxStartups") >= 20
    });
    let killed = Instant::now();
    let times = m.kill_all_and_wait(tag);
    stop.store(true, Ordering::Relaxed);
    let (greeted, dropped) = f.join().unwrap();
    report(
        tag,
        &format!(
            "flood from 198.18.0.1: {greeted} connections admitted (held open), {dropped} dropped"
        ),
    );
    // Bounded: never more admitted than MaxStartups's full.
    assert!(greeted <= 100, "the flood got {greeted} connections in");
    assert!(dropped > 0, "the flood was never dropped");
    let all = times.quantile(1.0);
    m.finish(killed);
    assert!(
        all <= ALL_RESUMED,
        "all sessions resumed only after {all:?} during the flood: {}",
        times.summary()
    );
}
