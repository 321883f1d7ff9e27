//! Sessions through stock `ssh`: exec, exit status and signals, stdin EOF,
//! the environment, AcceptEnv, forced commands, subsystems, the user's
//! identity, ClientAlive.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{default_policy, Harness};
use ressh_testkit::text;
use ressh_testkit::{require_cmd, run, run_with_stdin};

#[test]
fn exec_stdout_stderr_and_exit_status() {
    let h = Harness::start("exec", default_policy());
    let out = run(h.ssh().arg("echo out; echo err >&2; exit 3"));
    assert_eq!(
        text(&out.stdout),
        "out\n",
        "stderr: {}\nlog:\n{}",
        text(&out.stderr),
        h.log()
    );
    assert_eq!(text(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(3));
    let log = h.finish();
    assert!(
        log.contains(&format!("user {} from 127.0.0.1 port ", h.user.name)),
        "{log}"
    );
    assert!(
        log.contains("exec \"echo out; echo err >&2; exit 3\""),
        "{log}"
    );
}

#[test]
fn runs_as_the_user_with_sshd_environment() {
    let h = Harness::start("ident", default_policy());
    let script = "id -u; id -g; id -G; pwd; echo \"$HOME|$USER|$LOGNAME|$SHELL|$MAIL|$PATH\"; \
                  echo \"$SSH_CONNECTION\"; echo \"$SSH_CLIENT\"; echo \"${SSH_TTY-notty}|${TERM-noterm}\"; \
                  echo \"$0\"; env | wc -l";
    let out = run(h.ssh().arg(script));
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), h.log());
    let lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    let groups = text(&run(Command::new(require_cmd("id")).args(["-G", &h.user.name])).stdout);
    assert_eq!(lines[0], h.user.uid.to_string());
    assert_eq!(lines[1], h.user.gid.to_string());
    assert_eq!(lines[2], groups.trim());
    let home = h.user.home.display().to_string();
    assert_eq!(lines[3], home);
    let name = &h.user.name;
    assert_eq!(
        lines[4],
        format!(
            "{home}|{name}|{name}|/bin/sh|/var/mail/{name}|/usr/local/bin:/usr/bin:/bin:/usr/games"
        )
    );
    let conn: Vec<&str> = lines[5].split(' ').collect();
    assert_eq!(conn.len(), 4, "{}", lines[5]);
    assert_eq!(conn[0], "127.0.0.1");
    assert_eq!(conn[2], "127.0.0.1");
    assert_eq!(conn[3], h.port.to_string());
    assert_eq!(lines[6], format!("{} {} {}", conn[0], conn[1], conn[3]));
    assert_eq!(lines[7], "notty|noterm");
    assert_eq!(
        lines[8], "sh",
        "argv[0] of `shell -c` is the shell's basename"
    );
    h.finish();
}

#[test]
fn exit_signal_is_reported() {
    let h = Harness::start("sig", default_policy());
    let out = run(h.ssh().arg("echo before; kill -TERM $$; echo after"));
    assert_eq!(text(&out.stdout), "before\n");
    // OpenSSH's client exits 255 when the command died of a signal.
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    h.finish();
}

#[test]
fn stdin_reaches_the_command_and_eof_closes_it() {
    let h = Harness::start("eof", default_policy());
    let out = run_with_stdin(
        h.ssh().arg("cat; echo done"),
        b"abc",
        Duration::from_secs(30),
    );
    assert_eq!(text(&out.stdout), "abcdone\n", "{}", text(&out.stderr));
    assert!(out.status.success());
    // More than a window's worth through stdin and back.
    let data = common::random_bytes(5 << 20);
    let out = run_with_stdin(h.ssh().arg("cat"), &data, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "echoed data differs");
    h.finish();
}

#[test]
fn accept_env_filters_client_variables() {
    let h = Harness::start("env", default_policy());
    let out = run(h
        .ssh_with(&["-o", "SetEnv=LC_FOO=bar LANG=C.UTF-8 EVIL=x USER=mallory"])
        .arg("echo \"${LC_FOO-unset}|${LANG-unset}|${EVIL-unset}|$USER\""));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("bar|C.UTF-8|unset|{}\n", h.user.name)
    );
    h.finish();
}

#[test]
fn forced_command_gets_the_original_command() {
    let mut policy = default_policy();
    policy.force_command = Some("echo \"forced:${SSH_ORIGINAL_COMMAND-none}\"".into());
    policy.key_environment = vec![("FROM_KEY".into(), "yes".into())];
    let h = Harness::start("force", policy);
    let out = run(h.ssh().arg("echo hello world"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "forced:echo hello world\n");
    // A shell request runs the forced command too, without the variable.
    let out = run(h.ssh_with(&["-T"]).stdin(Stdio::null()));
    assert_eq!(text(&out.stdout), "forced:none\n", "{}", text(&out.stderr));
    let log = h.finish();
    assert!(log.contains("replaced by forced command"), "{log}");
}

#[test]
fn subsystems_and_refusals() {
    let mut policy = default_policy();
    policy.permit_pty = false;
    policy
        .subsystems
        .push(("echo".into(), "echo subsystem-ran".into()));
    let h = Harness::start("subsys", policy);
    let out = run(h.ssh_with(&["-s"]).arg("echo"));
    assert_eq!(
        text(&out.stdout),
        "subsystem-ran\n",
        "{}",
        text(&out.stderr)
    );
    let out = run(h.ssh_with(&["-s"]).arg("nosuch"));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("subsystem request failed"),
        "{}",
        text(&out.stderr)
    );
    // PermitTTY off: the pty is refused (OpenSSH's client then gives up,
    // as a forced tty was asked for).
    let out = run(h.ssh_with(&["-tt"]).arg("tty"));
    assert!(
        text(&out.stderr).contains("PTY allocation request failed"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("/dev/pts/"));
    let log = h.finish();
    assert!(log.contains("subsystem request for nosuch failed"), "{log}");
    assert!(log.contains("pty request refused"), "{log}");
}

#[test]
fn client_alive_timeout_disconnects() {
    let mut policy = default_policy();
    policy.client_alive_interval_secs = 1;
    policy.client_alive_count_max = 2;
    let h = Harness::start("alive", policy);
    // A responsive client is kept: keepalives are answered.
    let out = run(h.ssh().arg("sleep 4; echo still-here"));
    assert_eq!(text(&out.stdout), "still-here\n", "{}", text(&out.stderr));
    // A stopped client is dropped after CountMax unanswered keepalives.
    let mut ssh = h
        .ssh()
        .arg("sleep 60")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(ssh.id() as i32);
    h.wait_log(|l| l.contains("exec \"sleep 60\""), Duration::from_secs(10));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let log = h.wait_log(
        |l| l.contains("Timeout, client not responding"),
        Duration::from_secs(15),
    );
    let _ = ssh.kill();
    let _ = ssh.wait();
    assert!(!log.contains("fatal"), "{log}");
    h.finish();
}
