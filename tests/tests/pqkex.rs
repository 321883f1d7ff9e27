//! Issue 15: the post-quantum hybrid key exchanges against Debian 12's
//! OpenSSH 9.2 (which has sntrup761x25519 and not mlkem768x25519), both
//! directions, every method × every host key type ([`HOST_KEY_ALGS`]: the
//! servers hold P-384 and P-521 keys too), rekeys included.
//!
//! Each connection runs a command that prints 400 000 bytes while the
//! server (resshd, or Debian's sshd) has `RekeyLimit 64K`: the client's
//! `-v` log must name the expected method and host key algorithm for the
//! first exchange and for at least two rekeys, and the output must arrive
//! whole. Without a `KexAlgorithms` option both sides use their defaults:
//! resshd's and ressh's list mlkem768x25519-sha256 first, which Debian 12
//! does not know, so the exchange must fall to sntrup761x25519-sha512.
//! ressh offering mlkem768x25519-sha256 alone must fail cleanly against
//! Debian's sshd.

use std::fs;
use std::time::Instant;

use crate::common::*;

/// (option for the client, method expected) for Debian 12's OpenSSH.
const DEBIAN12_METHODS: [KexCase; 3] = [
    (None, "sntrup761x25519-sha512"),
    (Some("sntrup761x25519-sha512"), "sntrup761x25519-sha512"),
    (
        Some("sntrup761x25519-sha512@openssh.com"),
        "sntrup761x25519-sha512@openssh.com",
    ),
];

#[test]
fn debian12_ssh_against_resshd_every_method_and_host_key() {
    require_netns();
    let keydir = TempDir::new("e2e-pqks-keys");
    let big = BigCurveHostKeys::new(keydir.path());
    let lab = Lab::new("pqks", &format!("RekeyLimit 64K\n{}", big.config()));
    let addr = lab.net.server_addr().to_string();
    fs::write(
        &lab.known_hosts,
        lab.resshd.server.known_hosts() + &big.known_hosts(&addr),
    )
    .unwrap();
    let ssh = require_cmd("ssh");
    let table = check_kex_matrix(
        "Debian 12 ssh → resshd",
        &DEBIAN12_METHODS,
        &|args| {
            let mut cmd = lab.net.cmd_client(&ssh);
            cmd.arg("-F").arg(&lab.login.config).args(args);
            cmd
        },
        &|| lab.log(),
        &|_, _| {},
    );
    report("pqkex", &table);
}

#[test]
fn ressh_against_debian12_sshd_every_method_and_host_key() {
    require_netns();
    let net = Net::new("pqkc");
    let dir = TempDir::new("e2e-pqkex");
    let big = BigCurveHostKeys::new(dir.path());
    let sshd = Sshd::start_binary_in(
        std::path::Path::new(SSHD_BIN),
        &format!("RekeyLimit 64K\n{}", big.config()),
        &net,
        PORT,
    );
    let known_hosts = dir.join("known_hosts");
    fs::write(
        &known_hosts,
        sshd.known_hosts() + &big.known_hosts(&net.server_addr().to_string()),
    )
    .unwrap();
    let login = Lab::make_login(&dir, &known_hosts, "pq", CLIENT_EXTRA);
    let mut table = check_kex_matrix(
        "ressh → Debian 12 sshd",
        &DEBIAN12_METHODS,
        &|args| ressh_cmd(&net, &login.config, args),
        &|| sshd.log(),
        &|_, _| {},
    );
    // mlkem768x25519-sha256 alone: Debian 12 has no such method.
    let out = run_timeout(
        &mut ressh_cmd(
            &net,
            &login.config,
            &[
                "-o",
                "KexAlgorithms=mlkem768x25519-sha256",
                "server",
                "true",
            ],
        ),
        T,
    );
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "ressh with mlkem alone logged in: {err}"
    );
    assert!(
        err.contains("key exchange method"),
        "ressh with mlkem alone did not say why: {err}"
    );
    table += &format!("ressh mlkem768x25519-sha256 alone: {}\n", err.trim());
    report("pqkex", &table);
}

/// The resilience extension after a hybrid first exchange: K a string-hashed
/// 64-byte (sntrup761x25519-sha512) or 32-byte (mlkem768x25519-sha256)
/// hash, the session id 64 or 32 bytes, through resshd's monitor and
/// session worker. Each connection is killed three times; the counter's
/// output stays whole and in order, and resshd logs every reconnect.
#[test]
fn sessions_resume_after_a_hybrid_first_exchange() {
    let lab = Lab::new("pqkr", "DetachTimeout 300\n");
    let mut table = String::new();
    for method in ["sntrup761x25519-sha512", "mlkem768x25519-sha256"] {
        let stop = lab.user().home.join(format!("stop-{method}"));
        let kex = format!("KexAlgorithms={method}");
        let mut client = Client::spawn(&mut lab.ressh(&[
            "-v",
            "-o",
            &kex,
            "server",
            &counter_cmd(&stop, 1_000_000),
        ]));
        client.wait_lines(50, T);
        let before = reconnects(&lab.log());
        for i in 0..3 {
            let since = Instant::now();
            assert!(
                lab.net.try_kill_tcp(PORT) > 0,
                "{method}, kill {i}: no connection to kill\n{}",
                client.describe()
            );
            client.wait_err("reconnected to ", since, T);
            let n = client.line_count();
            client.wait_lines(n + 20, T);
        }
        fs::write(&stop, "").unwrap();
        let st = client.wait_exit(T);
        assert!(st.success(), "{method}: {st}\n{}", client.describe());
        let count = check_counter(&client.out_lines());
        let kexes = kex_exchanges(&client.stderr());
        assert!(
            !kexes.is_empty() && kexes.iter().all(|(m, _)| m == method),
            "{method}: exchanges {kexes:?}"
        );
        wait_reconnects(&lab.resshd, before + 3, T);
        table += &format!("{method}: 3 reconnects, counter whole ({count} lines)\n");
    }
    report("pqkex", &format!("resumed sessions:\n{table}"));
}
