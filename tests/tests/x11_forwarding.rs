//! Issue 17: X11 forwarding by resshd, with Debian's ssh as the client and
//! Debian's Xvfb as the client's X server (local connections only).
//!
//! `ssh -Y` to resshd (and, for comparison, to Debian's sshd, both with
//! `X11Forwarding yes`): the session's DISPLAY is `localhost:N.0` (N from
//! X11DisplayOffset on), `xdpyinfo` through the forward names the Xvfb
//! screen, and `xwd -root` through the forward is the same image as taken
//! directly from Xvfb. A key with `no-x11-forwarding`, or a server without
//! `X11Forwarding yes`, gives no DISPLAY.

use std::fs;
use std::process::Command;

use crate::common::*;

/// What the session sees of its display (the image: the pixels at the end
/// of `xwd -root`'s output, 1280x1024 of 32 bits; the header names the
/// display, which differs).
const PROBE: &str = r#"echo "display=${DISPLAY-unset}"; if [ -n "$DISPLAY" ]; then xdpyinfo | grep -E '^(name of display|  dimensions)'; f=$(mktemp); xwd -root -silent > "$f"; echo "xwd=$(tail -c 5242880 "$f" | sha256sum | cut -d' ' -f1) of $(wc -c < "$f") bytes"; rm -f "$f"; fi"#;

fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn stock_ssh_forwards_x11_through_resshd() {
    let dir = TempDir::new("e2e-x11");
    let x = Xvfb::start(dir.path());
    let local = run_ok(x.env(Command::new("sh").args([
        "-c",
        "xwd -root -silent | tail -c 5242880 | sha256sum | cut -d' ' -f1",
    ])));
    let local_xwd = text(&local.stdout).trim().to_string();
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
            field(out, "xwd").and_then(|v| v.split(' ').next()),
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
