//! Issue 15: the newest OpenSSH that Debian ships (sid's, or trixie's),
//! from the test root of testkit's `NewSsh` (made once with debootstrap,
//! then cached), against resshd on loopback, both directions.
//!
//! Its `ssh -V` is 10.1 or newer (the first to warn of a key exchange that
//! is not post-quantum). Against resshd (`RekeyLimit 64K`, holding every
//! host key type of [`HOST_KEY_ALGS`]), one connection per method ×
//! host key algorithm: with its default settings, then with
//! `KexAlgorithms` set to each sntrup761x25519 name, every exchange, the
//! first and the rekeys, uses that method and host key algorithm, the
//! output arrives whole, and ssh prints no post-quantum warning. Against a
//! second resshd configured with curve25519 only, the same ssh does warn
//! (so the absence above is not a missed message). Prints the version,
//! how long getting the root took (the first run builds it) and the
//! matrix.
//!
//! ressh against its sshd (chrooted, [`NewSsh::sshd_wrapper`],
//! `RekeyLimit 64K`, every host key type) likewise: each method × each host
//! key algorithm, rekeys included; with ressh's defaults the method is
//! mlkem768x25519-sha256, its first choice and OpenSSH's.

use std::fs;
use std::time::Instant;

use crate::common::*;

/// What OpenSSH 10.1+ prints when the key exchange is not post-quantum.
const PQ_WARNING: &str = "WARNING: connection is not using a post-quantum key exchange algorithm";

/// The newest OpenSSH's methods, both ways: the client's default
/// (mlkem768x25519-sha256 first on either side), then each sntrup761x25519
/// name set.
const NEWEST_METHODS: [KexCase; 3] = [
    (None, "mlkem768x25519-sha256"),
    (Some("sntrup761x25519-sha512"), "sntrup761x25519-sha512"),
    (
        Some("sntrup761x25519-sha512@openssh.com"),
        "sntrup761x25519-sha512@openssh.com",
    ),
];

/// "OpenSSH_10.6p1 Debian-1, OpenSSL ..." → (10, 6).
fn version(v: &str) -> (u32, u32) {
    let num = v
        .strip_prefix("OpenSSH_")
        .unwrap_or_else(|| panic!("not an OpenSSH version: {v:?}"));
    let mut parts = num.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse().ok());
    let minor = parts.next().and_then(|p| p.parse().ok());
    match (major, minor) {
        (Some(a), Some(b)) => (a, b),
        _ => panic!("cannot read the version of {v:?}"),
    }
}

#[test]
fn newest_ssh_against_resshd_every_method_and_host_key_without_warning() {
    require_root();
    let t = Instant::now();
    let new = NewSsh::get();
    report(
        "newest_openssh",
        &format!(
            "{} root at {} ready in {:.1} s",
            new.suite,
            new.root().display(),
            t.elapsed().as_secs_f64()
        ),
    );
    assert!(
        new.sk_dummy().is_file(),
        "{} is missing from the root",
        new.sk_dummy().display()
    );

    let out = run_timeout(new.command("/usr/bin/ssh").arg("-V"), T);
    assert!(out.status.success(), "ssh -V: {}", text(&out.stderr));
    let v = text(&out.stderr).trim().to_string();
    report("newest_openssh", &v);
    assert!(
        version(&v) >= (10, 1),
        "{v}: older than 10.1, the first OpenSSH to warn of a key exchange that is not post-quantum"
    );

    let dir = TempDir::new("e2e-newssh");
    let big = BigCurveHostKeys::new(dir.path());
    let server = Resshd::start(
        &ressh_bin().with_file_name("resshd"),
        &format!("RekeyLimit 64K\n{}", big.config()),
    );
    let known_hosts = dir.join("known_hosts");
    let login = Lab::make_login_to(&dir, &known_hosts, "nq", "", ("127.0.0.1", server.port()));
    let server_hosts = known_hosts_at(&server, server.port())
        + &big.known_hosts(&format!("[127.0.0.1]:{}", server.port()));
    fs::write(&known_hosts, &server_hosts).unwrap();
    let ssh = |args: &[&str]| {
        let mut c = new.command("/usr/bin/ssh");
        c.arg("-F").arg(&login.config).args(args);
        c
    };
    let table = check_kex_matrix(
        &format!("{v} → resshd"),
        &NEWEST_METHODS,
        &ssh,
        &|| server.log(),
        &|cell, stderr| {
            assert!(
                !stderr.contains(PQ_WARNING),
                "{cell}: warned of a key exchange that is not post-quantum: {stderr}"
            );
        },
    );
    report("newest_openssh", &table);
    // Control: the same ssh warns of a resshd that offers no post-quantum
    // method (it stays silent when its own KexAlgorithms is set, so the
    // server's list is what changes).
    let classic = Resshd::start(
        &ressh_bin().with_file_name("resshd"),
        "KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org\n",
    );
    fs::write(
        &known_hosts,
        known_hosts_at(&classic, classic.port()) + &server_hosts,
    )
    .unwrap();
    let port = classic.port().to_string();
    let out = run_timeout(&mut ssh(&["-v", "-p", &port, "server", "echo ok"]), T);
    let stderr = text(&out.stderr);
    assert!(
        out.status.success() && text(&out.stdout) == "ok\n",
        "{v} against resshd with curve25519 only: {}\n{stderr}",
        out.status
    );
    assert!(
        kex_exchanges(&stderr)
            .iter()
            .all(|(m, _)| m == "curve25519-sha256")
            && stderr.contains(PQ_WARNING),
        "{v} did not warn of resshd with curve25519 only: {stderr}"
    );
    report(
        "newest_openssh",
        "every method with every host key, rekeys included, no warning; \
         curve25519 only: warned",
    );
}

/// ressh against the newest sshd (chrooted into the root,
/// [`NewSsh::sshd_wrapper`], with `RekeyLimit 64K` and every host key
/// type): each method × host key algorithm, rekeys included; with ressh's
/// defaults every exchange is mlkem768x25519-sha256, ressh's first choice
/// and OpenSSH's.
#[test]
fn ressh_against_newest_sshd_every_method_and_host_key() {
    require_root();
    let new = NewSsh::get();
    let dir = TempDir::new("e2e-newsshd");
    let big = BigCurveHostKeys::new(dir.path());
    let known_hosts = dir.join("known_hosts");
    // The user first: the chrooted sshd sees the host's passwd as it was
    // when it started (a bind mount of the file useradd then replaces).
    let login = Lab::make_login_to(&dir, &known_hosts, "ns", "", ("127.0.0.1", 0));
    let sshd = Sshd::start_binary(
        &new.sshd_wrapper(dir.path()),
        &format!("RekeyLimit 64K\n{}", big.config()),
    );
    write_client_config(
        &login.config,
        &login.user.name,
        &login.key,
        &known_hosts,
        "127.0.0.1",
        sshd.port(),
        "",
    );
    fs::write(
        &known_hosts,
        sshd.known_hosts() + &big.known_hosts(&format!("[127.0.0.1]:{}", sshd.port())),
    )
    .unwrap();
    let table = check_kex_matrix(
        &format!("ressh → {}'s sshd", new.suite),
        &NEWEST_METHODS,
        &|args| ressh_here(&login.config, args),
        &|| sshd.log(),
        &|_, _| {},
    );
    let log = sshd.log();
    for (_, method) in NEWEST_METHODS {
        assert!(
            log.lines().any(|l| l
                .split_once("kex: algorithm: ")
                .is_some_and(|(_, m)| m.trim_end_matches(" [preauth]") == method)),
            "the newest sshd did not log {method}:\n{log}"
        );
    }
    report("newest_openssh", &table);
}
