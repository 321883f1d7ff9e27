//! resshd's configuration check (`-t`), LoginGraceTime and ClientAlive*.
//!
//! Every test needs root and fails without it.

mod common;

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    alive, descendants_named, describe, read_until_closed, text, wait_for, Bg, Login, Server,
};
use ressh_testkit::{require_cmd, require_root, resshd_bin, run, run_ok, TempDir, TestUser};

fn resshd_t(config: &Path) -> std::process::Output {
    let bin = resshd_bin();
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace`",
        bin.display()
    );
    run(Command::new(bin).arg("-t").arg("-f").arg(config))
}

/// Item 8: `resshd -t` exits 0 on a good configuration and non-zero on a broken
/// one, naming the file and line of the error (also inside an Include).
#[test]
fn config_test_mode_reports_file_and_line() {
    require_root();
    let dir = TempDir::new("e2e-conf");
    let host_key = dir.join("host_ed25519");
    run_ok(
        Command::new(require_cmd("ssh-keygen"))
            .args(["-q", "-N", "", "-t", "ed25519", "-f"])
            .arg(&host_key),
    );
    let ps = TestUser::create("cps");
    let empty = dir.join("empty");
    fs::create_dir(&empty).unwrap();
    fs::set_permissions(&empty, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let good = format!(
        "# a good configuration\n\
         Port 2222\n\
         ListenAddress 127.0.0.1\n\
         HostKey {}\n\
         PidFile none\n\
         PrivilegeSeparationUser {}\n\
         PrivilegeSeparationDirectory {}\n\
         AcceptEnv FOO_*\n\
         MaxStartups 10:30:100\n\
         LoginGraceTime 30\n\
         ClientAliveInterval 15\n\
         Match User nobody\n\
         \x20   ForceCommand /bin/true\n",
        host_key.display(),
        ps.name,
        empty.display()
    );
    let good_path = dir.join("good.conf");
    fs::write(&good_path, &good).unwrap();
    let out = resshd_t(&good_path);
    assert!(
        out.status.success(),
        "resshd -t on a good config: {}",
        describe(&out)
    );
    assert!(
        !text(&out.stderr).to_lowercase().contains("error"),
        "{}",
        describe(&out)
    );

    // An unknown keyword on line 4.
    let broken = dir.join("broken.conf");
    fs::write(
        &broken,
        format!(
            "Port 2222\nHostKey {}\n# comment\nNoSuchKeyword yes\n",
            host_key.display()
        ),
    )
    .unwrap();
    let out = resshd_t(&broken);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}:4", broken.display())) && err.contains("NoSuchKeyword"),
        "the error must name broken.conf:4 and the keyword:\n{err}"
    );

    // A bad value on line 3.
    let bad_value = dir.join("badvalue.conf");
    fs::write(
        &bad_value,
        format!(
            "HostKey {}\nPort 2222\nMaxStartups ten\n",
            host_key.display()
        ),
    )
    .unwrap();
    let out = resshd_t(&bad_value);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}:3", bad_value.display())),
        "the error must name badvalue.conf:3:\n{err}"
    );

    // An error inside an included file names that file and its line.
    let extra = dir.join("extra.conf");
    fs::write(&extra, "AcceptEnv LANG\nLoginGraceTime forever\n").unwrap();
    let main = dir.join("main.conf");
    fs::write(
        &main,
        format!("{good}Match All\nInclude {}\n", extra.display()),
    )
    .unwrap();
    let out = resshd_t(&main);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}:2", extra.display())),
        "the error must name extra.conf:2:\n{err}"
    );

    // A file that does not exist.
    let out = resshd_t(&dir.join("missing.conf"));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("missing.conf"),
        "{}",
        describe(&out)
    );
}

/// Item 9: LoginGraceTime 2: connections that do not authenticate are dropped
/// after about 2 s, logged as "Timeout before authentication"; an
/// authenticated session outlives the grace time.
#[test]
fn login_grace_time_drops_unauthenticated_connections() {
    require_root();
    let login = Login::new("grace");
    let srv = Server::start("LoginGraceTime 2\n");

    // One silent connection and one that stops after the version exchange.
    let t0 = Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", srv.port())).unwrap();
    let mut versioned = TcpStream::connect(("127.0.0.1", srv.port())).unwrap();
    versioned.write_all(b"SSH-2.0-probe\r\n").unwrap();
    let ports = [
        silent.local_addr().unwrap().port(),
        versioned.local_addr().unwrap().port(),
    ];
    read_until_closed(&mut silent, Duration::from_secs(15));
    let e1 = t0.elapsed();
    read_until_closed(&mut versioned, Duration::from_secs(15));
    let e2 = t0.elapsed();
    for e in [e1, e2] {
        assert!(
            e >= Duration::from_millis(1500) && e <= Duration::from_secs(6),
            "dropped after {e:?}, expected about 2 s\n{}",
            srv.log()
        );
    }
    for p in ports {
        srv.wait_log(
            &format!("the timeout of port {p}"),
            Duration::from_secs(10),
            |l| {
                l.lines().any(|line| {
                    line.contains(&format!("127.0.0.1 port {p}:"))
                        && line.contains("Timeout before authentication")
                })
            },
        );
    }

    // Authenticated: the grace time no longer applies.
    let t0 = Instant::now();
    let out = common::run_ssh(&srv, &login, "sleep 4; echo survived");
    assert!(out.status.success(), "{}\n{}", describe(&out), srv.log());
    assert_eq!(text(&out.stdout), "survived\n");
    assert!(t0.elapsed() >= Duration::from_secs(4));
    srv.assert_healthy();
}

/// Item 10: ClientAliveInterval 1 / ClientAliveCountMax 2: a client that answers
/// keepalives stays; one that is stopped (SIGSTOP) is disconnected within
/// a few seconds, and the session's processes are gone afterwards.
#[test]
fn client_alive_disconnects_a_stopped_client() {
    require_root();
    let login = Login::new("alive");
    let srv = Server::start("ClientAliveInterval 1\nClientAliveCountMax 2\n");

    // A live client answers the keepalives and keeps its session.
    let out = common::run_ssh(&srv, &login, "sleep 5; echo still-here");
    assert!(out.status.success(), "{}\n{}", describe(&out), srv.log());
    assert_eq!(text(&out.stdout), "still-here\n");
    assert!(!srv.log().contains("Timeout, client not responding"));

    let mut ssh = Bg::spawn(srv.ssh(&login, &["-tt"]).arg("sleep 60"));
    let session = srv.session_worker();
    let sleep = wait_for(
        "the user's sleep",
        Duration::from_secs(20),
        || descendants_named(session, "sleep").first().copied(),
        || srv.log(),
    );
    let monitor = common::ppid(session).unwrap();

    ssh.signal(libc::SIGSTOP);
    let t0 = Instant::now();
    srv.wait_log("the ClientAlive timeout", Duration::from_secs(20), |l| {
        l.contains("Timeout, client not responding")
    });
    let took = t0.elapsed();
    wait_for(
        "the session's processes to go",
        Duration::from_secs(10),
        || (!alive(session) && !alive(sleep) && !alive(monitor)).then_some(()),
        || {
            format!(
                "user processes: {:?}\n{}",
                login.user.processes(),
                srv.log()
            )
        },
    );
    assert!(
        took >= Duration::from_secs(2) && took <= Duration::from_secs(10),
        "disconnected {took:?} after the client stopped, expected about 3 s"
    );
    assert!(
        login.user.processes().is_empty(),
        "processes of the user left: {:?}",
        login.user.processes()
    );

    // The client, resumed, finds its connection gone.
    ssh.signal(libc::SIGCONT);
    let stderr_path = ssh.stderr_path.clone();
    let status = wait_for(
        "ssh to exit after SIGCONT",
        Duration::from_secs(20),
        || ssh.exited(),
        || fs::read_to_string(&stderr_path).unwrap_or_default(),
    );
    assert_eq!(status.code(), Some(255), "ssh: {}", ssh.stderr());
    srv.assert_healthy();
}
