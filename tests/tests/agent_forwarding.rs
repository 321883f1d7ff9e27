//! Issue 17: agent forwarding both ways, with Debian's ssh-agent, ssh-add,
//! ssh and sshd as the peers.
//!
//! - stock `ssh -A` to resshd: `ssh-add -l` on the server lists the key of
//!   the client's agent, and a second `ssh` from the server to Debian's
//!   sshd logs in with the forwarded agent alone; the socket sits in a
//!   directory of mode 0700 owned by the user, gone after logout;
//! - `ressh -A` (and `ForwardAgent <path>`) to Debian's sshd and to
//!   resshd the same; without `-A` no agent is forwarded;
//! - `AllowAgentForwarding no` (in a Match block) and a key's
//!   `no-agent-forwarding`: no SSH_AUTH_SOCK;
//! - an agent request made on the server while the ressh→resshd path is
//!   cut is answered after the reconnect;
//! - a server that opens an agent channel the client never asked for (a
//!   session worker taken over, `src/bin/hostile-session.rs`) is refused by
//!   ressh, as by stock ssh; with `-A` the same channel is accepted.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::hostile_user::resshd_with_hostile_worker;

/// Prints the session's agent socket, its directory's mode and owner, the
/// keys `ssh-add -l` lists and its exit status.
pub(crate) const PROBE: &str = r#"s=${SSH_AUTH_SOCK-unset}; echo "sock=$s"; if [ "$s" != unset ]; then stat -c "dir=%a %U" "${s%/*}"; ssh-add -l; echo "add=$?"; fi"#;

/// The SHA256 fingerprint of a public key file, as `ssh-add -l` shows it.
pub(crate) fn fingerprint(pub_key: &Path) -> String {
    let out = run_ok(
        Command::new(require_cmd("ssh-keygen"))
            .arg("-lf")
            .arg(pub_key),
    );
    text(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string()
}

/// `key=value` from the probe's output.
pub(crate) fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// The probe's findings when an agent was forwarded: a socket named as
/// sshd names it, in a 0700 directory of `user`, listing `fp`.
pub(crate) fn assert_forwarded(out: &str, user: &str, fp: &str) -> String {
    let sock = field(out, "sock").unwrap_or_default().to_string();
    let name_ok = sock
        .strip_prefix("/tmp/ssh-")
        .and_then(|r| r.split_once("/agent."))
        .is_some_and(|(d, pid)| d.len() == 10 && pid.parse::<u32>().is_ok());
    assert!(
        name_ok,
        "SSH_AUTH_SOCK not /tmp/ssh-XXXXXXXXXX/agent.<pid>:\n{out}"
    );
    assert_eq!(field(out, "dir"), Some(&format!("700 {user}")[..]), "{out}");
    assert!(out.contains(fp), "ssh-add -l does not list {fp}:\n{out}");
    assert_eq!(field(out, "add"), Some("0"), "{out}");
    sock
}

/// The socket's directory disappears once the session is over.
fn assert_removed(sock: &str) {
    let dir = Path::new(sock).parent().unwrap().to_path_buf();
    wait_for(
        "the agent socket's directory to be removed",
        Duration::from_secs(10),
        || (!dir.exists()).then_some(()),
        || format!("{} still exists", dir.display()),
    );
}

/// A user's ssh_config at `~/hop_config` for host `hop`: Debian's sshd on
/// `port`, authenticated only by an agent (no key files, no password).
fn hop_config(user: &TestUser, port: u16, known_hosts: &str) -> String {
    let kh = user.home.join("hop_known_hosts");
    fs::write(&kh, known_hosts).unwrap();
    user.own(&kh, 0o644);
    let cfg = user.home.join("hop_config");
    fs::write(
        &cfg,
        format!(
            "Host hop\n    HostName 127.0.0.1\n    Port {port}\n    User {}\n    \
             UserKnownHostsFile {}\n    GlobalKnownHostsFile none\n    \
             StrictHostKeyChecking yes\n    BatchMode yes\n    \
             PreferredAuthentications publickey\n",
            user.name,
            kh.display()
        ),
    )
    .unwrap();
    user.own(&cfg, 0o644);
    format!("ssh -F {} hop echo hop-ok", cfg.display())
}

fn output(cmd: &mut Command) -> String {
    let out = run_timeout(cmd, T);
    let all = format!(
        "{}\n--- stderr ---\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(out.status.success(), "{:?}: {}\n{all}", cmd, out.status);
    all
}

#[test]
fn stock_ssh_forwards_an_agent_through_resshd() {
    let dir = TempDir::new("e2e-agent");
    let user = TestUser::create("e2eag");
    let (key, line) = ssh_keygen(dir.path(), "ed25519", "");
    user.authorize_key(&line);
    let fp = fingerprint(&key.with_extension("pub"));
    let agent = SshAgent::start(dir.path(), "agent.sock");
    agent.add(&key);
    let resshd = Resshd::start(&ressh_bin().with_file_name("resshd"), "");
    let sshd = Sshd::start("");
    let hop = hop_config(&user, sshd.port(), &sshd.known_hosts());
    let known_hosts = dir.join("known_hosts");
    fs::write(&known_hosts, known_hosts_at(&resshd, resshd.port())).unwrap();
    let cfg = dir.join("ssh_config");
    write_client_config(
        &cfg,
        &user.name,
        &key,
        &known_hosts,
        "127.0.0.1",
        resshd.port(),
        "",
    );
    let ssh = require_cmd("ssh");
    let out = output(
        Command::new(&ssh)
            .arg("-F")
            .arg(&cfg)
            .args(["-A", "-oIdentityAgent=SSH_AUTH_SOCK", "server"])
            .arg(format!("{PROBE}; {hop}"))
            .env("SSH_AUTH_SOCK", &agent.sock),
    );
    let sock = assert_forwarded(&out, &user.name, &fp);
    assert!(
        out.contains("hop-ok"),
        "no login through the forwarded agent:\n{out}"
    );
    assert_removed(&sock);
    // Not asked for: none.
    let out = output(
        Command::new(&ssh)
            .arg("-F")
            .arg(&cfg)
            .args(["server", PROBE])
            .env("SSH_AUTH_SOCK", &agent.sock),
    );
    assert_eq!(field(&out, "sock"), Some("unset"), "{out}");
    report(
        "agent_forwarding",
        "ssh -A to resshd: ssh-add -l and ssh to sshd through the agent",
    );
}

#[test]
fn ressh_forwards_an_agent_to_sshd_and_resshd() {
    let dir = TempDir::new("e2e-ragent");
    let user = TestUser::create("e2era");
    let (key, line) = ssh_keygen(dir.path(), "ed25519", "");
    user.authorize_key(&line);
    let fp = fingerprint(&key.with_extension("pub"));
    let agent = SshAgent::start(dir.path(), "agent.sock");
    agent.add(&key);
    let resshd = Resshd::start(&ressh_bin().with_file_name("resshd"), "");
    let sshd = Sshd::start("");
    let hop = hop_config(&user, sshd.port(), &sshd.known_hosts());
    let config_for = |name: &str, port: u16, known: String| {
        let kh = dir.join(format!("known_hosts-{name}"));
        fs::write(&kh, known).unwrap();
        let cfg = dir.join(format!("ssh_config-{name}"));
        write_client_config(&cfg, &user.name, &key, &kh, "127.0.0.1", port, "");
        cfg
    };
    let to_sshd = config_for("sshd", sshd.port(), sshd.known_hosts());
    let to_resshd = config_for(
        "resshd",
        resshd.port(),
        known_hosts_at(&resshd, resshd.port()),
    );
    let with_agent = |cfg: &Path, args: &[&str], remote: &str| {
        let mut c = ressh_here(cfg, args);
        c.arg("server")
            .arg(remote)
            .env("SSH_AUTH_SOCK", &agent.sock);
        output(&mut c)
    };
    // -A with the agent ressh uses (IdentityAgent $SSH_AUTH_SOCK).
    let out = with_agent(&to_sshd, &["-A", "-oIdentityAgent=SSH_AUTH_SOCK"], PROBE);
    assert_forwarded(&out, &user.name, &fp);
    // ForwardAgent <path>, ressh's own agent disabled (IdentityAgent none).
    let path_opt = format!("-oForwardAgent={}", agent.sock.display());
    let out = with_agent(&to_resshd, &[&path_opt], &format!("{PROBE}; {hop}"));
    let sock = assert_forwarded(&out, &user.name, &fp);
    assert!(
        out.contains("hop-ok"),
        "no login through the forwarded agent:\n{out}"
    );
    assert_removed(&sock);
    // Not asked for: none, against either server.
    for cfg in [&to_sshd, &to_resshd] {
        let out = with_agent(cfg, &["-oIdentityAgent=SSH_AUTH_SOCK"], PROBE);
        assert_eq!(field(&out, "sock"), Some("unset"), "{out}");
    }
    report(
        "agent_forwarding",
        "ressh -A to sshd and resshd: ssh-add -l, and a hop through resshd",
    );
}

#[test]
fn agent_forwarding_refused_by_configuration_and_key_options() {
    let dir = TempDir::new("e2e-noagent");
    let allowed = TestUser::create("e2eaa");
    let matched = TestUser::create("e2eam");
    let restricted = TestUser::create("e2ear");
    let (key, line) = ssh_keygen(dir.path(), "ed25519", "");
    allowed.authorize_key(&line);
    matched.authorize_key(&line);
    restricted.authorize_key(&format!("no-agent-forwarding {line}"));
    let agent = SshAgent::start(dir.path(), "agent.sock");
    agent.add(&key);
    let resshd = Resshd::start(
        &ressh_bin().with_file_name("resshd"),
        &format!("Match User {}\n    AllowAgentForwarding no\n", matched.name),
    );
    let known_hosts = dir.join("known_hosts");
    fs::write(&known_hosts, known_hosts_at(&resshd, resshd.port())).unwrap();
    let ssh = require_cmd("ssh");
    for (user, forwarded) in [(&allowed, true), (&matched, false), (&restricted, false)] {
        let cfg = dir.join(format!("ssh_config-{}", user.name));
        write_client_config(
            &cfg,
            &user.name,
            &key,
            &known_hosts,
            "127.0.0.1",
            resshd.port(),
            "",
        );
        let out = output(
            Command::new(&ssh)
                .arg("-F")
                .arg(&cfg)
                .args(["-A", "-oIdentityAgent=SSH_AUTH_SOCK", "server", PROBE])
                .env("SSH_AUTH_SOCK", &agent.sock),
        );
        assert_eq!(
            field(&out, "sock") != Some("unset"),
            forwarded,
            "{}: {out}",
            user.name
        );
    }
}

#[test]
fn agent_request_during_a_cut_is_answered_after_the_reconnect() {
    let lab = Lab::new("agentcut", "");
    let fp = fingerprint(&lab.login.key.with_extension("pub"));
    let agent = SshAgent::start(lab.dir.path(), "agent.sock");
    agent.add(&lab.login.key);
    // ssh-add starts when the test creates the file `go` (during the cut).
    let go = lab.user().home.join("go");
    let remote = format!(
        "echo ready; while [ ! -e {go} ]; do sleep 0.1; done; ssh-add -l; echo \"add=$?\"",
        go = go.display()
    );
    let mut cmd = lab.ressh(&["-A", "-oIdentityAgent=SSH_AUTH_SOCK", "server", &remote]);
    cmd.env("SSH_AUTH_SOCK", &agent.sock);
    let mut client = Client::spawn(&mut cmd);
    client.wait_lines(0, T);
    let since = Instant::now();
    lab.net.blackhole(true);
    client.wait_err("connection lost", since, Duration::from_secs(15));
    fs::write(&go, "").unwrap();
    // The request is made: ssh-add runs on the server, waiting.
    wait_for(
        "ssh-add to run on the server",
        Duration::from_secs(10),
        || {
            lab.user()
                .processes()
                .into_iter()
                .any(|p| comm(p).as_deref() == Some("ssh-add"))
                .then_some(())
        },
        || client.describe(),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        client.line_count(),
        1,
        "answered during the cut?\n{}",
        client.describe()
    );
    lab.net.blackhole(false);
    let status = client.wait_exit(T);
    let out: Vec<String> = client.out_lines().into_iter().map(|(_, l)| l).collect();
    let out = out.join("\n");
    assert!(status.success(), "{status}\n{}", client.describe());
    assert!(
        out.contains(&fp),
        "ssh-add -l does not list {fp}:\n{}",
        client.describe()
    );
    assert_eq!(field(&out, "add"), Some("0"), "{}", client.describe());
    wait_reconnects(&lab.resshd, 1, T);
    report(
        "agent_forwarding",
        "an agent request made during a cut answered after the reconnect",
    );
}

#[test]
fn an_agent_channel_nobody_asked_for_is_refused() {
    require_root();
    let dir = TempDir::new("e2e-unasked");
    let (server, script) = resshd_with_hostile_worker(&dir);
    let kh = dir.join("known_hosts");
    fs::write(&kh, known_hosts_at(&server, server.port())).unwrap();
    let who = Lab::make_login_to(&dir, &kh, "un", "", ("127.0.0.1", server.port()));
    let agent = SshAgent::start(dir.path(), "agent.sock");
    agent.add(&who.key);
    fs::write(
        &script,
        format!("{} open auth-agent@openssh.com\n", who.user.uid),
    )
    .unwrap();
    let said = "hostile: channel auth-agent@openssh.com ";
    let ressh = |args: &[&str]| {
        let mut c = ressh_here(&who.config, args);
        c.args(["-N", "server"]);
        c
    };
    // The client has an agent (and uses it), only not forwarded.
    let use_agent = "-oIdentityAgent=SSH_AUTH_SOCK";
    let mut ssh = Command::new(require_cmd("ssh"));
    ssh.arg("-F")
        .arg(&who.config)
        .args([use_agent, "-N", "server"]);
    let agent_opts = ["-A", use_agent];
    for (name, mut cmd, accepted) in [
        ("ressh", ressh(&[use_agent]), false),
        ("ssh", ssh, false),
        ("ressh -A", ressh(&agent_opts), true),
    ] {
        let before = count(&server.log(), said);
        cmd.env("SSH_AUTH_SOCK", &agent.sock);
        let client = Client::spawn(&mut cmd);
        let answer = wait_next_line(&server, "the hostile worker's answer", said, before, T);
        assert_eq!(
            answer.contains("accepted"),
            accepted,
            "{name}: {answer}\n{}",
            client.describe()
        );
        if !accepted {
            assert!(answer.contains("refused: 1 "), "{name}: {answer}");
            let since = Instant::now() - Duration::from_secs(60);
            client.wait_err("Warning: ssh server tried agent forwarding", since, T);
        }
    }
}
