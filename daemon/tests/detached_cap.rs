//! MaxDetachedSessions: when a user has more detached sessions than the
//! cap, resshd ends the oldest (issue 5, server policy).

mod common;

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Login, Server};
use ressh_testkit::resshd_bin;

fn sleepers(login: &Login) -> usize {
    login
        .user
        .processes()
        .iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| c.starts_with(b"sleep\x003099"))
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn the_oldest_detached_session_of_a_user_is_ended_past_the_cap() {
    let srv = Server::start("DetachTimeout 600\nMaxDetachedSessions 1\n");
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
    wait("the oldest session ended", &|| sleepers(&login) == 1);
    let log = srv.log();
    assert!(log.contains("too many detached sessions"), "{log}");
    // The younger one is still there, waiting for its client.
    thread::sleep(Duration::from_millis(500));
    assert_eq!(sleepers(&login), 1, "{log}");
}
