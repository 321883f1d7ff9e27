//! Descriptors and the log (issue 13, hole 7), as a local user and as an
//! admin who starts resshd from a shell would meet them:
//!
//! - a descriptor resshd was started with (not close-on-exec) reaches no
//!   process of resshd: not the broker, its monitors, the chrooted kex
//!   worker, the session worker, nor the user's shell and commands;
//! - no worker and no process of the user holds resshd's log (the workers
//!   log through their monitor), so a user cannot write lines into it, and
//!   text the user controls never makes a line of its own.
//!
//! Every test needs root, ssh and ssh-keygen, and fails without them.

mod common;

use std::fs;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg};

use common::{
    children, comm, descendants_named, describe, fd_targets, run_ssh, wait_for, Bg, Login, Server,
};
use ressh_testkit::{require_root, TempDir};

/// resshd and every live process below it (monitors, workers, the user's
/// commands), with their names.
fn tree(root: u32) -> Vec<(u32, String)> {
    let mut all = vec![root];
    let mut i = 0;
    while i < all.len() {
        let next = children(all[i]);
        all.extend(next);
        i += 1;
    }
    all.into_iter().map(|p| (p, comm(p))).collect()
}

/// A pre-auth connection (its kex worker waits for our version line) and
/// a session running `command` as the user; returns them with the pids of
/// the kex worker, the session worker and the user's shell.
struct Scene {
    _probe: TcpStream,
    _ssh: Bg,
    kex: u32,
    session: u32,
    shell: u32,
}

fn scene(srv: &Server, login: &Login, command: &str) -> Scene {
    let ssh = Bg::spawn(srv.ssh(login, &[]).arg(command));
    let session = srv.session_worker();
    let shell = wait_for(
        "the user's shell below the session worker",
        Duration::from_secs(20),
        || children(session).first().copied(),
        || srv.log(),
    );
    let probe = TcpStream::connect(("127.0.0.1", srv.port())).unwrap();
    let kex = wait_for(
        "a kex worker for the probe",
        Duration::from_secs(20),
        || descendants_named(srv.pid(), "resshd-kex").first().copied(),
        || srv.log(),
    );
    Scene {
        _probe: probe,
        _ssh: ssh,
        kex,
        session,
        shell,
    }
}

/// An admin's shell started resshd with an extra descriptor open (here at
/// fd 500 and later, not close-on-exec, on a file of ours): nothing of
/// resshd may hold it, least of all the chrooted, seccomp'd kex worker and
/// the processes of the user.
#[test]
fn a_descriptor_resshd_was_started_with_reaches_no_process() {
    require_root();
    let dir = TempDir::new("fds-stray");
    let marker = dir.join("stray-descriptor");
    let f = fs::File::create(&marker).unwrap();
    // A copy that is not close-on-exec.
    let stray = fcntl(f.as_raw_fd(), FcntlArg::F_DUPFD(500)).expect("F_DUPFD");
    assert!(stray >= 500, "F_DUPFD: {stray}");
    let srv = Server::start("");
    // resshd has it (or had it): only this test's copy may go now.
    nix::unistd::close(stray).unwrap();
    drop(f);
    let login = Login::new("fdstray");
    let s = scene(&srv, &login, "sleep 60; true");
    let want = marker.display().to_string();
    let procs = tree(srv.pid());
    for w in [s.kex, s.session, s.shell] {
        assert!(
            procs.iter().any(|(p, _)| *p == w),
            "{w} is not below resshd: {procs:?}"
        );
    }
    let mut holders = Vec::new();
    for (pid, name) in &procs {
        if let Some(t) = fd_targets(*pid).into_iter().find(|t| *t == want) {
            holders.push(format!("{name} (pid {pid}): {t}"));
        }
    }
    assert!(
        holders.is_empty(),
        "the stray descriptor reached:\n{}\n--- log ---\n{}",
        holders.join("\n"),
        srv.log()
    );
    // And the session works.
    let out = run_ssh(&srv, &login, "echo fine");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(common::text(&out.stdout), "fine\n");
    srv.assert_healthy();
}

/// resshd's log (its stderr: here the file of `-e` with stderr redirected,
/// as an admin or a unit file does) is held by resshd and its monitors
/// only. A user who looks for it in every process they own, and through
/// /proc of the session worker that runs as them, finds nothing to write
/// into; text the user controls (a command with newlines) stays inside
/// the worker's line; the workers' lines still reach the log, under their
/// names.
#[test]
fn no_worker_or_user_process_holds_the_log_and_no_line_is_forged() {
    require_root();
    let srv = Server::start("");
    let log_file = fs::read_link(format!("/proc/{}/fd/2", srv.pid()))
        .unwrap()
        .display()
        .to_string();
    assert!(
        fs::read_to_string(&log_file)
            .unwrap()
            .contains("Server listening"),
        "fd 2 of resshd is not its log: {log_file}"
    );
    let login = Login::new("fdlog");
    let s = scene(&srv, &login, "sleep 60; true");

    // No worker and no process of the user has the log open.
    let mut holders = Vec::new();
    let mut pids = vec![s.kex, s.session, s.shell];
    pids.extend(login.user.processes());
    pids.extend(srv.resshd.privsep_user.processes());
    for pid in pids {
        for t in fd_targets(pid) {
            if t == log_file {
                holders.push(format!("{} (pid {pid})", comm(pid)));
            }
        }
    }
    assert!(
        holders.is_empty(),
        "resshd's log {log_file} is open in: {}",
        holders.join(", ")
    );

    // The user tries to write through the session worker's fd 2 (and 1).
    let attempt = format!(
        "for fd in 1 2; do printf 'resshd[1]: Accepted publickey for root FORGED-%s\\n' $fd \
         > /proc/{}/fd/$fd && echo wrote $fd; done; true",
        s.session
    );
    let out = run_ssh(&srv, &login, &attempt);
    assert!(
        !common::text(&out.stdout).contains("wrote"),
        "the user wrote into the session worker's descriptors: {}",
        describe(&out)
    );

    // User-controlled text with newlines that the session worker logs
    // (an exec'd command, logged by the worker; `:` ignores the rest).
    let forged = ": x\nresshd[1]: Accepted publickey for root FORGED-EXEC\ntrue";
    let out = run_ssh(&srv, &login, forged);
    assert!(out.status.success(), "{}", describe(&out));
    srv.wait_log("the exec of the command", Duration::from_secs(20), |l| {
        l.contains("FORGED-EXEC")
    });

    // The kex worker's line for the probe, once it goes (unread, its
    // version line makes the close a reset).
    let probe_port = s._probe.local_addr().unwrap().port();
    drop(s);
    let log = srv.wait_log(
        "the kex worker's line about the probe",
        Duration::from_secs(20),
        |l| {
            l.lines().any(|x| {
                x.starts_with("resshd-kex[") && x.contains(&format!("127.0.0.1 port {probe_port}:"))
            })
        },
    );
    for line in log.lines().filter(|l| l.contains("FORGED")) {
        assert!(
            line.starts_with("resshd-session[")
                && !line.contains("FORGED-1")
                && !line.contains("FORGED-2"),
            "a forged or foreign line in resshd's log: {line:?}\n--- log ---\n{log}"
        );
    }
    // The session worker's own lines still arrive, under its name and pid.
    assert!(
        log.lines().any(|l| l.starts_with("resshd-session[")
            && l.contains(&format!("user {} from 127.0.0.1 port ", login.user.name))
            && l.contains("exec \"sleep 60; true\"")),
        "{log}"
    );
    srv.assert_healthy();
}
