//! -f: ressh goes to the background once authenticated. The parent returns
//! 0; the child carries on in its own session with stdin on /dev/null,
//! runs the command (its output still reaching the original stdout) or,
//! with -N, serves its forwards, and reconnects (SIGUSR2, a cut TCP
//! connection) against resshd, replacing (and ending) a proxy command the
//! parent started. With ExitOnForwardFailure it waits for the server's
//! answer to -R first.

mod common;
use common::*;

use std::fs;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

/// The live processes whose command line contains `needle` (a path unique
/// to the test, such as its -E file); zombies have none.
fn pids_with(needle: &Path) -> Vec<u32> {
    let want = needle.as_os_str().as_encoded_bytes();
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline.windows(want.len()).any(|w| w == want) {
            v.push(pid);
        }
    }
    v
}

/// Kills, on drop, what is left of the processes [`pids_with`] finds (in
/// rounds: a background ressh may start a new proxy command meanwhile).
struct Reap<'a>(&'a Path);

impl Drop for Reap<'_> {
    fn drop(&mut self) {
        for _ in 0..20 {
            let pids = pids_with(self.0);
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// Runs the parent ressh to its exit (it must not wait for the session).
fn run_parent(cmd: &mut Command) -> ExitStatus {
    let mut child = cmd.stdin(Stdio::null()).spawn().unwrap();
    wait_for(
        "ressh -f to return",
        T,
        || child.try_wait().unwrap(),
        String::new,
    )
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success(), "kill -{sig} {pid}");
}

/// Field `n` (1-based, as in proc(5)) of /proc/pid/stat.
fn stat_field(pid: u32, n: usize) -> String {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    after.split(' ').nth(n - 3).unwrap().to_string()
}

#[test]
fn background_after_authentication_sshd() {
    let env = Env::sshd("AllowTcpForwarding local");
    // Without a command (or -N): refused, as by ssh.
    let out = env.exec_to(&["-f"], &[]);
    assert_eq!(out.status.code(), Some(255));
    assert_eq!(
        text(&out.stderr),
        "Cannot fork into background without a command to execute.\n"
    );

    // The command waits for a file the test makes after ressh returned.
    let flag = env.user.home.join("go");
    let out_file = env.dir.join("out");
    let log = env.dir.join("bg.log");
    let mut c = env.ressh();
    c.arg("-f")
        .arg("-E")
        .arg(&log)
        .arg("127.0.0.1")
        .arg(format!(
            "while [ ! -e {} ]; do sleep 0.1; done; echo done; echo to-stderr >&2",
            flag.display()
        ))
        .stdout(fs::File::create(&out_file).unwrap())
        .stderr(fs::File::create(env.dir.join("err")).unwrap());
    let _reap = Reap(&log);
    let st = run_parent(&mut c);
    let ctx = || {
        format!(
            "--- ressh log ---\n{}\n--- sshd log ---\n{}",
            fs::read_to_string(&log).unwrap_or_default(),
            env.server.log()
        )
    };
    assert!(st.success(), "ressh -f: {st}\n{}", ctx());
    let pids = pids_with(&log);
    assert_eq!(pids.len(), 1, "{pids:?}\n{}", ctx());
    let pid = pids[0];
    // Its own session (the parent exits right after fork, so the child may
    // not have called setsid yet); stdin on /dev/null.
    wait_for(
        "the background ressh to lead its own session, stdin on /dev/null",
        T,
        || {
            let fd0 = fs::read_link(format!("/proc/{pid}/fd/0")).ok();
            (stat_field(pid, 6) == pid.to_string()
                && fd0.as_deref() == Some(Path::new("/dev/null")))
            .then_some(())
        },
        ctx,
    );
    assert_eq!(fs::read_to_string(&out_file).unwrap(), "");
    fs::write(&flag, "").unwrap();
    wait_for(
        "the background command's output",
        T,
        || (fs::read_to_string(&out_file).unwrap() == "done\n").then_some(()),
        ctx,
    );
    wait_for(
        "the background ressh to exit",
        T,
        || pids_with(&log).is_empty().then_some(()),
        ctx,
    );
    // The remote command's stderr reached the original stderr too.
    assert_eq!(
        fs::read_to_string(env.dir.join("err")).unwrap(),
        "to-stderr\n"
    );

    // With ExitOnForwardFailure, -f waits for the server's answer to -R: its
    // refusal ends ressh in the foreground with 255.
    let out = env.exec_to(
        &[
            "-f",
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            "0:127.0.0.1:1",
        ],
        &["sleep", "5"],
    );
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("remote port forwarding failed"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn background_socks_proxy_survives_reconnects_resshd() {
    let env = Env::resshd("");
    let echo = echo_server();
    let dport = ressh_testkit::free_port();
    let log = env.dir.join("bg.log");
    let mut c = env.ressh();
    c.args(["-f", "-N", "-o", "LogLevel=VERBOSE", "-E"])
        .arg(&log)
        .args(["-D", &format!("127.0.0.1:{dport}"), "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _reap = Reap(&log);
    let st = run_parent(&mut c);
    let ctx = || {
        format!(
            "--- ressh log ---\n{}\n--- resshd log ---\n{}",
            fs::read_to_string(&log).unwrap_or_default(),
            env.server.log()
        )
    };
    assert!(st.success(), "ressh -f -N: {st}\n{}", ctx());
    let pids = pids_with(&log);
    assert_eq!(pids.len(), 1, "{pids:?}\n{}", ctx());
    let pid = pids[0];
    // The listener was up before the parent returned.
    let (mut s, rep) = socks5(dport, "127.0.0.1", echo);
    assert_eq!(rep, 0, "{}", ctx());
    echo_roundtrip(&mut s, b"one");

    // SIGUSR2 (its handler came along), then a cut TCP connection: the
    // background ressh reconnects each time, the SOCKS connection lives on.
    signal(pid, "USR2");
    wait_for(
        "the reconnect on SIGUSR2",
        T,
        || (count_in_file(&log, "reconnected to") >= 1).then_some(()),
        ctx,
    );
    echo_roundtrip(&mut s, b"two");
    assert!(kill_tcp_to(env.server.port()) >= 1, "{}", ctx());
    wait_for(
        "the reconnect after the cut",
        T,
        || (count_in_file(&log, "reconnected to") >= 2).then_some(()),
        ctx,
    );
    echo_roundtrip(&mut s, b"three");
    let (mut s4, rep) = socks4(dport, "127.0.0.1", echo);
    assert_eq!(rep, 90, "{}", ctx());
    echo_roundtrip(&mut s4, b"four");
    assert_eq!(pids_with(&log), vec![pid]);

    // SIGTERM ends it.
    signal(pid, "TERM");
    wait_for(
        "the background ressh to exit",
        T,
        || pids_with(&log).is_empty().then_some(()),
        ctx,
    );
}

#[test]
fn background_replaces_the_parents_proxy_command_resshd() {
    let env = Env::resshd("");
    let echo = echo_server();
    let dport = ressh_testkit::free_port();
    let log = env.dir.join("bg.log");
    // A proxy command that outlives the end of its input (it sleeps after
    // the relay, longer than the test waits): only a signal ends it early.
    let marker = env.dir.join("proxy-marker");
    let pc = format!(
        "ProxyCommand=sh -c ': {}; {RESSH} -F {} -W %h:%p 127.0.0.1; sleep 100'",
        marker.display(),
        env.config.display()
    );
    // As `nohup ressh -f ...` runs it: SIGHUP ignored in ressh and in what
    // it starts, which must not keep the old proxy command alive.
    let plain = env.ressh();
    let mut c = Command::new("nohup");
    c.arg(plain.get_program()).args(plain.get_args());
    for (k, v) in plain.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.args(["-f", "-N", "-o", "LogLevel=VERBOSE", "-o", &pc, "-E"])
        .arg(&log)
        .args(["-D", &format!("127.0.0.1:{dport}"), "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _reap = Reap(env.dir.path());
    let st = run_parent(&mut c);
    let ctx = || {
        format!(
            "--- ressh log ---\n{}\n--- resshd log ---\n{}",
            fs::read_to_string(&log).unwrap_or_default(),
            env.server.log()
        )
    };
    assert!(st.success(), "ressh -f -N: {st}\n{}", ctx());
    let pid = pids_with(&log)[0];
    // ressh's own command line has the marker too.
    let proxies = || -> Vec<u32> {
        let mut v = pids_with(&marker);
        v.retain(|p| *p != pid);
        v
    };
    let first = proxies();
    assert_eq!(first.len(), 1, "{first:?}");
    // The parent that started it has gone.
    assert_ne!(stat_field(first[0], 4), pid.to_string());
    let (mut s, rep) = socks5(dport, "127.0.0.1", echo);
    assert_eq!(rep, 0, "{}", ctx());
    echo_roundtrip(&mut s, b"through the proxy");

    // The reconnect runs a new proxy command; the old one gets its SIGHUP
    // although it is not the background ressh's child.
    signal(pid, "USR2");
    let second = wait_for(
        "the first proxy command to end and a second to run",
        T,
        || {
            let now = proxies();
            (now.len() == 1 && now != first).then_some(now)
        },
        || format!("proxies {:?}\n{}", proxies(), ctx()),
    );
    assert_eq!(stat_field(second[0], 4), pid.to_string());
    // The new proxy command runs before the reconnect through it is done and logged.
    wait_for(
        "the reconnect through the second proxy",
        T,
        || (count_in_file(&log, "reconnected to") >= 1).then_some(()),
        ctx,
    );
    echo_roundtrip(&mut s, b"through the second proxy");

    signal(pid, "TERM");
    wait_for(
        "ressh and its proxy command to exit",
        T,
        || (pids_with(&log).is_empty() && pids_with(&marker).is_empty()).then_some(()),
        ctx,
    );
}
