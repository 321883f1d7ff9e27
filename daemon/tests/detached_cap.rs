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

#[test]
fn the_oldest_detached_session_of_a_user_is_ended_past_the_cap() {
    let srv = Server::start("DetachTimeout 600\nMaxDetachedSessions 1\nDetachGraceTime 3\n");
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
    let mut first = start();
    wait("the first session", &|| sleepers(&login) == 1);
    let first_sleeper = sleeper_pids(&login)[0];
    let mut second = start();
    wait("the second session", &|| sleepers(&login) == 2);
    // The clients vanish without DISCONNECT: both sessions detach, the
    // first one first.
    first.kill().unwrap();
    first.wait().unwrap();
    wait("the first detach", &|| {
        srv.log().matches("Detached: user").count() >= 1
    });
    second.kill().unwrap();
    second.wait().unwrap();
    let both = Instant::now();
    wait("the second detach", &|| {
        srv.log().matches("Detached: user").count() >= 2
    });
    // Within the grace period both are kept, though over the cap.
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(sleepers(&login), 2, "ended within the grace\n{}", srv.log());
    wait("the oldest session ended", &|| sleepers(&login) == 1);
    assert!(
        both.elapsed() >= Duration::from_secs(2),
        "ended {:?} after the detaches, before the grace",
        both.elapsed()
    );
    let log = srv.log();
    assert!(log.contains("too many detached sessions"), "{log}");
    // It was the first one (detached longest); the younger one is still
    // there, waiting for its client.
    assert!(
        !sleeper_pids(&login).contains(&first_sleeper),
        "the younger session was ended\n{log}"
    );
    thread::sleep(Duration::from_millis(500));
    assert_eq!(sleepers(&login), 1, "{log}");
}
