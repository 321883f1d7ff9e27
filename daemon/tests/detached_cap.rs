//! MaxDetachedSessions: when a user has more sessions detached for longer
//! than DetachGraceTime than the cap, resshd ends the one detached longest;
//! within the grace period none is ended (a blip cuts them all at once).

mod common;

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Login, Server};
use ressh_testkit::resshd_bin;

/// The pids of the user's `sleep 3099`, one per session.
fn sleeper_pids(login: &Login) -> Vec<u32> {
    login
        .user
        .processes()
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| c.starts_with(b"sleep\x003099"))
                .unwrap_or(false)
        })
        .collect()
}

fn sleepers(login: &Login) -> usize {
    sleeper_pids(login).len()
}

/// Three sessions A, B, C (started in that order) detach in the order B,
/// C, A; with `MaxDetachedSessions 2`, once all three are past the grace
/// the one detached longest, B, is ended, and A and C stay: neither the
/// oldest session (A), nor the newest (C), nor the last detached (A) is the
/// one chosen.
#[test]
fn the_oldest_detached_session_of_a_user_is_ended_past_the_cap() {
    let srv = Server::start("DetachTimeout 600\nMaxDetachedSessions 2\nDetachGraceTime 3\n");
    let login = Login::new("dc");
    let ressh = resshd_bin().with_file_name("ressh");
    assert!(
        ressh.exists(),
        "{} is missing: build the workspace",
        ressh.display()
    );
    let start = || {
        Command::new(&ressh)
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", srv.known_hosts.display()))
            .arg("-i")
            .arg(&login.key)
            .args(["-p", &srv.port().to_string()])
            .arg(format!("{}@127.0.0.1", login.user.name))
            .arg("sleep 3099")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                srv.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    };
    // Each session's client and the pid of its `sleep 3099`.
    let mut sessions = Vec::new();
    for n in 1..=3 {
        let client = start();
        wait("the session", &|| sleepers(&login) == n);
        let new = sleeper_pids(&login)
            .into_iter()
            .find(|p| sessions.iter().all(|(_, s)| s != p))
            .unwrap();
        sessions.push((client, new));
    }
    let [a, b, c] = [sessions[0].1, sessions[1].1, sessions[2].1];
    // The clients vanish without DISCONNECT, in the order B, C, A: each
    // session detaches before the next client goes.
    for (n, i) in [1, 2, 0].into_iter().enumerate() {
        let client = &mut sessions[i].0;
        client.kill().unwrap();
        client.wait().unwrap();
        wait("the detach", &|| {
            srv.log().matches("Detached: user").count() > n
        });
    }
    let all = Instant::now();
    // Within the grace period all are kept, though over the cap.
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(sleepers(&login), 3, "ended within the grace\n{}", srv.log());
    wait("a session ended", &|| sleepers(&login) == 2);
    assert!(
        all.elapsed() >= Duration::from_secs(2),
        "ended {:?} after the detaches, before the grace",
        all.elapsed()
    );
    let log = srv.log();
    assert!(log.contains("too many detached sessions"), "{log}");
    let left = sleeper_pids(&login);
    assert!(
        !left.contains(&b),
        "B, detached longest, was not the one ended (A {a}, B {b}, C {c} -> {left:?})\n{log}"
    );
    // A and C are still there, waiting for their clients; nothing more ends.
    thread::sleep(Duration::from_millis(500));
    let mut left = sleeper_pids(&login);
    left.sort();
    let mut want = vec![a, c];
    want.sort();
    assert_eq!(left, want, "A {a} and C {c} must stay\n{log}");
}
