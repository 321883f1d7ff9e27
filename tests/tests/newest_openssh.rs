//! Issue 15: the newest OpenSSH that Debian ships (sid's, or trixie's),
//! from the test root of testkit's `NewSsh` (made once with debootstrap,
//! then cached), against resshd on loopback.
//!
//! Today: its `ssh -V` runs, it logs in to resshd and runs `echo ok`, and
//! it warns that the connection does not use a post-quantum key exchange
//! (OpenSSH 10.1+ does, to every server without one). Prints the version
//! and how long getting the root took (the first run builds it).

use std::fs;
use std::time::Instant;

use crate::common::*;

/// What OpenSSH 10.1+ prints when the key exchange is not post-quantum.
const PQ_WARNING: &str = "WARNING: connection is not using a post-quantum key exchange algorithm";

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
fn newest_openssh_logs_in_and_warns_of_no_post_quantum_kex() {
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

    let server = Resshd::start(&ressh_bin().with_file_name("resshd"), "");
    let dir = TempDir::new("e2e-newssh");
    let known_hosts = dir.join("known_hosts");
    let login = Lab::make_login_to(&dir, &known_hosts, "nq", "", ("127.0.0.1", server.port()));
    fs::write(&known_hosts, known_hosts_at(&server, server.port())).unwrap();
    let out = run_timeout(
        new.command("/usr/bin/ssh")
            .arg("-F")
            .arg(&login.config)
            .args(["server", "echo ok"]),
        T,
    );
    let stderr = text(&out.stderr);
    assert!(
        out.status.success() && text(&out.stdout) == "ok\n",
        "{v} against resshd: {}\nstdout: {:?}\nstderr: {stderr}\nresshd log:\n{}",
        out.status,
        text(&out.stdout),
        server.log()
    );
    // Issue 15's key exchanges (mlkem768x25519-sha256 first, as OpenSSH)
    // flip this: then the warning must be absent.
    assert!(
        stderr.contains(PQ_WARNING),
        "{v} did not warn of a key exchange that is not post-quantum: {stderr}"
    );
}
