//! Issue 17: X11 forwarding by resshd, with Debian's ssh as the client and
//! Debian's Xvfb as the client's X server (local connections only).
//!
//! `ssh -Y` to resshd (and, for comparison, to Debian's sshd, both with
//! `X11Forwarding yes`): the session's DISPLAY is `localhost:N.0` (N from
//! X11DisplayOffset on), `xdpyinfo` through the forward names the Xvfb
//! screen, and `xwd -root` through the forward is the same image as taken
//! directly from Xvfb. A key with `no-x11-forwarding`, or a server without
//! `X11Forwarding yes`, gives no DISPLAY.
//!
//! `ressh -Y` to resshd and to Debian's sshd the same; `ressh -X` with
//! `ForwardX11Trusted no` sends a cookie `xauth generate ... untrusted`
//! made, as ssh does: the session can no longer read the screen (and
//! xdpyinfo fares as it does under stock ssh the same way). A server that
//! opens an x11 channel nobody asked for is refused by ressh as by ssh.
//!
//! An interactive shell (`ressh -A -X` in a terminal, tmux) to resshd in a
//! network namespace: `ssh-add -l` through the forwarded agent and
//! `xdpyinfo`/`xwd -root` through the X11 forward work before a cut of the
//! connection (`ss -K`) and, in the same shell, after it.

use std::fs;
use std::process::Command;

use crate::agent_forwarding::fingerprint;
use crate::common::*;
use crate::hostile_user::resshd_with_hostile_worker;

/// What the session sees of its display (the image: the pixels at the end
/// of `xwd -root`'s output, 1280x1024 of 32 bits; the header names the
/// display, which differs).
pub(crate) const PROBE: &str = r#"echo "display=${DISPLAY-unset}"; if [ -n "$DISPLAY" ]; then xdpyinfo | grep -E '^(name of display|  dimensions)'; f=$(mktemp); xwd -root -silent > "$f"; echo "xwd=$(tail -c 5242880 "$f" | sha256sum | cut -d' ' -f1) of $(wc -c < "$f") bytes"; rm -f "$f"; fi"#;

pub(crate) fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// The hash of the screen's pixels taken directly from Xvfb, once two
/// consecutive shots agree (a fresh Xvfb paints its root window after it
/// accepts the first client).
pub(crate) fn local_screen(x: &Xvfb) -> String {
    let shot = || {
        let out = run_ok(x.env(Command::new("sh").args([
            "-c",
            "xwd -root -silent | tail -c 5242880 | sha256sum | cut -d' ' -f1",
        ])));
        text(&out.stdout).trim().to_string()
    };
    let mut last = shot();
    wait_for(
        "two equal shots of Xvfb's screen",
        std::time::Duration::from_secs(10),
        || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let now = shot();
            let same = now == last;
            last = now;
            same.then(|| last.clone())
        },
        String::new,
    )
}

/// The probe's hash of the screen's pixels.
pub(crate) fn xwd(out: &str) -> Option<&str> {
    field(out, "xwd").and_then(|v| v.split(' ').next())
}

#[test]
fn stock_ssh_forwards_x11_through_resshd() {
    let dir = TempDir::new("e2e-x11");
    let x = Xvfb::start(dir.path());
    let local_xwd = local_screen(&x);
    let user = TestUser::create("e2ex");
    let plain = TestUser::create("e2exn");
    let (key, line) = ssh_keygen(dir.path(), "ed25519", "");
    user.authorize_key(&line);
    plain.authorize_key(&format!("no-x11-forwarding {line}"));
    let server_config = "X11Forwarding yes\n";
    let resshd = Resshd::start(&ressh_bin().with_file_name("resshd"), server_config);
    let sshd = Sshd::start(server_config);
    let ssh = require_cmd("ssh");
    let probe = |user: &TestUser, name: &str, port: u16, known: String| {
        let kh = dir.join(format!("known_hosts-{name}"));
        fs::write(&kh, known).unwrap();
        let cfg = dir.join(format!("ssh_config-{name}-{}", user.name));
        write_client_config(&cfg, &user.name, &key, &kh, "127.0.0.1", port, "");
        let mut cmd = Command::new(&ssh);
        cmd.arg("-F").arg(&cfg).args(["-Y", "server", PROBE]);
        let out = run_timeout(x.env(&mut cmd), T);
        let all = format!(
            "{}\n--- stderr ---\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(out.status.success(), "{name}: {}\n{all}", out.status);
        all
    };
    let by_sshd = probe(&user, "sshd", sshd.port(), sshd.known_hosts());
    let by_resshd = probe(
        &user,
        "resshd",
        resshd.port(),
        known_hosts_at(&resshd, resshd.port()),
    );
    for (name, out) in [("sshd", &by_sshd), ("resshd", &by_resshd)] {
        let display = field(out, "display").unwrap_or_default();
        let n = display
            .strip_prefix("localhost:")
            .and_then(|d| d.strip_suffix(".0"))
            .and_then(|n| n.parse::<u32>().ok());
        assert!(
            n.is_some_and(|n| n >= 10),
            "{name}: DISPLAY {display:?}\n{out}"
        );
        assert!(
            out.contains(&format!("name of display:    {display}")),
            "{name}: xdpyinfo through the forward\n{out}"
        );
        assert!(
            out.contains("dimensions:    1280x1024 pixels"),
            "{name}: {out}"
        );
        assert_eq!(
            xwd(out),
            Some(local_xwd.as_str()),
            "{name}: xwd -root through the forward differs from Xvfb's own\n{out}"
        );
    }
    // Refused by the key's option: no display.
    let out = probe(
        &plain,
        "resshd",
        resshd.port(),
        known_hosts_at(&resshd, resshd.port()),
    );
    assert_eq!(field(&out, "display"), Some("unset"), "{out}");
    report(
        "x11_forwarding",
        "ssh -Y to resshd and sshd: xdpyinfo and xwd -root through the forward",
    );
}

/// `client` (ssh or ressh) with `args` to `server` on `port`, under `x`:
/// the probe's output.
fn probe_with(
    x: &Xvfb,
    dir: &std::path::Path,
    client: &std::path::Path,
    args: &[&str],
    user: &TestUser,
    key: &std::path::Path,
    (name, port, known): (&str, u16, String),
) -> String {
    let kh = dir.join(format!("known_hosts-{name}"));
    fs::write(&kh, known).unwrap();
    let cfg = dir.join(format!("ssh_config-{name}-{}", user.name));
    write_client_config(&cfg, &user.name, key, &kh, "127.0.0.1", port, "");
    let mut cmd = Command::new(client);
    cmd.arg("-F").arg(&cfg).args(args).args(["server", PROBE]);
    let out = run_timeout(x.env(&mut cmd), T);
    let all = format!(
        "{}\n--- stderr ---\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{name} {args:?}: {}\n{all}",
        out.status
    );
    all
}

#[test]
fn ressh_forwards_x11_trusted_and_untrusted() {
    let dir = TempDir::new("e2e-rx11");
    let x = Xvfb::start(dir.path());
    let local_xwd = local_screen(&x);
    let user = TestUser::create("e2erx");
    let (key, line) = ssh_keygen(dir.path(), "ed25519", "");
    user.authorize_key(&line);
    let resshd = Resshd::start(&ressh_bin().with_file_name("resshd"), "X11Forwarding yes\n");
    let sshd = Sshd::start("X11Forwarding yes\n");
    let ressh = ressh_bin();
    let ssh = require_cmd("ssh");
    let servers = || {
        [
            ("sshd", sshd.port(), sshd.known_hosts()),
            (
                "resshd",
                resshd.port(),
                known_hosts_at(&resshd, resshd.port()),
            ),
        ]
    };
    for server in servers() {
        let name = server.0;
        // Trusted: the screen as Xvfb shows it.
        let out = probe_with(&x, dir.path(), &ressh, &["-Y"], &user, &key, server.clone());
        let display = field(&out, "display").unwrap_or_default();
        assert!(display.starts_with("localhost:1"), "{name}: {out}");
        assert!(
            out.contains(&format!("name of display:    {display}")),
            "{name}: {out}"
        );
        assert_eq!(
            xwd(&out),
            Some(local_xwd.as_str()),
            "{name}: xwd -root through ressh's forward\n{out}"
        );
        // Untrusted: not the screen; xdpyinfo as under stock ssh.
        let untrusted = ["-X", "-oForwardX11Trusted=no"];
        let by_ressh = probe_with(
            &x,
            dir.path(),
            &ressh,
            &untrusted,
            &user,
            &key,
            server.clone(),
        );
        let by_ssh = probe_with(
            &x,
            dir.path(),
            &ssh,
            &untrusted,
            &user,
            &key,
            server.clone(),
        );
        assert!(field(&by_ressh, "display").is_some_and(|d| d.starts_with("localhost:1")));
        assert_ne!(
            xwd(&by_ressh),
            Some(local_xwd.as_str()),
            "{name}: {by_ressh}"
        );
        let named = |o: &str| o.contains("name of display:");
        assert_eq!(
            named(&by_ressh),
            named(&by_ssh),
            "{name}:\n{by_ressh}\n---\n{by_ssh}"
        );
        // Not asked for: none.
        let out = probe_with(&x, dir.path(), &ressh, &[], &user, &key, server);
        assert_eq!(field(&out, "display"), Some("unset"), "{name}: {out}");
    }
    report(
        "x11_forwarding",
        "ressh -Y and -X (untrusted) to sshd and resshd under Xvfb",
    );
}

#[test]
fn an_x11_channel_nobody_asked_for_is_refused() {
    require_root();
    let dir = TempDir::new("e2e-unaskedx");
    let x = Xvfb::start(dir.path());
    let (server, script) = resshd_with_hostile_worker(&dir);
    let kh = dir.join("known_hosts");
    fs::write(&kh, known_hosts_at(&server, server.port())).unwrap();
    let who = Lab::make_login_to(&dir, &kh, "ux", "", ("127.0.0.1", server.port()));
    fs::write(&script, format!("{} open x11\n", who.user.uid)).unwrap();
    let said = "hostile: channel x11 ";
    let mut ressh = ressh_here(&who.config, &["-N", "server"]);
    let mut ssh = Command::new(require_cmd("ssh"));
    ssh.arg("-F").arg(&who.config).args(["-N", "server"]);
    for (name, cmd) in [("ressh", &mut ressh), ("ssh", &mut ssh)] {
        let before = count(&server.log(), said);
        let client = Client::spawn(x.env(cmd));
        let answer = wait_next_line(&server, "the hostile worker's answer", said, before, T);
        assert!(
            answer.contains("refused: 1 "),
            "{name}: {answer}\n{}",
            client.describe()
        );
        let since = std::time::Instant::now() - std::time::Duration::from_secs(60);
        client.wait_err("Warning: ssh server tried X11 forwarding", since, T);
    }
}

#[test]
fn shell_with_agent_and_x11_through_a_cut() {
    let lab = Lab::new("ax11cut", "X11Forwarding yes\n");
    let x = Xvfb::start(lab.dir.path());
    let local_xwd = local_screen(&x);
    let fp = fingerprint(&lab.login.key.with_extension("pub"));
    let agent = SshAgent::start(lab.dir.path(), "agent.sock");
    agent.add(&lab.login.key);
    let line = format!(
        "ip netns exec {} env SSH_AUTH_SOCK={} DISPLAY={} XAUTHORITY={} {} -F {} -A -X \
         -oIdentityAgent=SSH_AUTH_SOCK server",
        lab.net.client_ns(),
        sq(&agent.sock.to_string_lossy()),
        x.display,
        sq(&x.xauthority.to_string_lossy()),
        sq(&ressh_bin().to_string_lossy()),
        sq(&lab.login.config.to_string_lossy()),
    );
    let tmux = Tmux::new("ax11cut");
    tmux.start(120, 40, &line);
    // Typed into the shell; the output goes to a file of the user, and
    // `done<n>` (typed `do""ne<n>`) says it is there.
    let probe = |n: u32| -> String {
        let file = lab.user().home.join(format!("probe{n}"));
        tmux.keys(&[
            "-l",
            &format!(
                "(ssh-add -l; echo add=$?; {PROBE}) > {} 2>&1; echo do\"\"ne{n}\n",
                file.display()
            ),
        ]);
        tmux.wait(&format!("probe {n}"), |sc| sc.contains(&format!("done{n}")));
        let out = fs::read_to_string(&file).unwrap_or_default();
        assert!(out.contains(&fp), "ssh-add -l does not list {fp}:\n{out}");
        assert_eq!(field(&out, "add"), Some("0"), "{out}");
        assert!(
            field(&out, "display").is_some_and(|d| d.starts_with("localhost:")),
            "{out}"
        );
        assert_eq!(
            xwd(&out),
            Some(local_xwd.as_str()),
            "xwd -root through the forward\n{out}"
        );
        out
    };
    probe(1);
    lab.net.kill_tcp(PORT);
    wait_reconnects(&lab.resshd, 1, T);
    probe(2);
    tmux.keys(&["-l", "exit\n"]);
    wait_for(
        "the shell to end",
        T,
        || (!tmux.alive()).then_some(()),
        || tmux.screen(),
    );
    assert_eq!(count(&lab.log(), "Accepted publickey"), 1, "{}", lab.log());
    report(
        "x11_forwarding",
        "ressh -A -X shell: ssh-add -l and xwd -root through the forwards before and after a cut",
    );
}
