//! Issue 15: the newest OpenSSH that Debian ships (sid's, or trixie's),
//! from the test root of testkit's `NewSsh` (made once with debootstrap,
//! then cached), against resshd on loopback.
//!
//! Its `ssh -V` is 10.1 or newer (the first to warn of a key exchange that
//! is not post-quantum). With its default settings it logs in to resshd
//! (`RekeyLimit 64K`) with each host key type, and every exchange, the
//! first and the rekeys, is mlkem768x25519-sha256, with no post-quantum
//! warning; against a second resshd configured with curve25519 only, the
//! same ssh does warn (so the absence above is not a missed message). Prints the version and
//! how long getting the root took (the first run builds it).
//!
//! ressh against its sshd (chrooted, [`NewSsh::sshd_wrapper`]) likewise:
//! mlkem768x25519-sha256 with each host key type, rekeys included.

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
fn newest_openssh_uses_mlkem768x25519_without_warning() {
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

    let server = Resshd::start(&ressh_bin().with_file_name("resshd"), "RekeyLimit 64K\n");
    let dir = TempDir::new("e2e-newssh");
    let known_hosts = dir.join("known_hosts");
    let login = Lab::make_login_to(&dir, &known_hosts, "nq", "", ("127.0.0.1", server.port()));
    fs::write(&known_hosts, known_hosts_at(&server, server.port())).unwrap();
    let ssh = |extra: &[&str]| {
        let mut c = new.command("/usr/bin/ssh");
        c.arg("-v").arg("-F").arg(&login.config).args(extra);
        c
    };
    for hk in HOST_KEY_ALGS {
        let hk_opt = format!("HostKeyAlgorithms={hk}");
        let stderr = check_kex_run(
            &mut ssh(&["-o", &hk_opt, "server", &kex_run_command()]),
            &format!("{v} / {hk} against resshd"),
            "mlkem768x25519-sha256",
            hk,
            &|| server.log(),
        );
        assert!(
            !stderr.contains(PQ_WARNING),
            "{v} / {hk} warned of a key exchange that is not post-quantum: {stderr}"
        );
    }
    // Control: the same ssh warns of a resshd that offers no post-quantum
    // method (it stays silent when its own KexAlgorithms is set, so the
    // server's list is what changes).
    let classic = Resshd::start(
        &ressh_bin().with_file_name("resshd"),
        "KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org\n",
    );
    fs::write(
        &known_hosts,
        known_hosts_at(&classic, classic.port()) + &known_hosts_at(&server, server.port()),
    )
    .unwrap();
    let port = classic.port().to_string();
    let out = run_timeout(&mut ssh(&["-p", &port, "server", "echo ok"]), T);
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
        "mlkem768x25519-sha256 with every host key, rekeys included, no warning; \
         curve25519 only: warned",
    );
}

/// ressh against the newest sshd (chrooted into the root,
/// [`NewSsh::sshd_wrapper`], with `RekeyLimit 64K`): with each host key
/// type, every exchange, the first and the rekeys, is
/// mlkem768x25519-sha256, ressh's first choice and OpenSSH's.
#[test]
fn ressh_against_newest_sshd_uses_mlkem768x25519() {
    require_root();
    let new = NewSsh::get();
    let dir = TempDir::new("e2e-newsshd");
    let known_hosts = dir.join("known_hosts");
    // The user first: the chrooted sshd sees the host's passwd as it was
    // when it started (a bind mount of the file useradd then replaces).
    let login = Lab::make_login_to(&dir, &known_hosts, "ns", "", ("127.0.0.1", 0));
    let sshd = Sshd::start_binary(&new.sshd_wrapper(dir.path()), "RekeyLimit 64K\n");
    write_client_config(
        &login.config,
        &login.user.name,
        &login.key,
        &known_hosts,
        "127.0.0.1",
        sshd.port(),
        "",
    );
    fs::write(&known_hosts, sshd.known_hosts()).unwrap();
    for hk in HOST_KEY_ALGS {
        let hk_opt = format!("HostKeyAlgorithms={hk}");
        check_kex_run(
            &mut ressh_here(
                &login.config,
                &["-v", "-o", &hk_opt, "server", &kex_run_command()],
            ),
            &format!("ressh / {hk} against the newest sshd"),
            "mlkem768x25519-sha256",
            hk,
            &|| sshd.log(),
        );
    }
    let log = sshd.log();
    assert!(
        log.contains("kex: algorithm: mlkem768x25519-sha256"),
        "the newest sshd did not log mlkem768x25519-sha256:\n{log}"
    );
    report(
        "newest_openssh",
        &format!(
            "ressh against {}'s sshd: mlkem768x25519-sha256 with every host key, rekeys included",
            new.suite
        ),
    );
}
