//! Issue 15: ssh-audit ([`SSH_AUDIT_VERSION`] from PyPI, testkit's
//! [`ssh_audit`]) against resshd on loopback with its default algorithm
//! lists and the host keys every test server has (ed25519, RSA 3072,
//! ECDSA P-256: those `ssh-keygen -A` makes for sshd).
//!
//! resshd's report must name mlkem768x25519-sha256 first and hold no
//! `[fail]` or `[warn]` but
//! - the note that it does not know the resilience extension's name
//!   ([`ressh_proto::resilience::NAME`], in the key exchange list), and
//! - findings that the newest OpenSSH's sshd ([`NewSsh`], sid's), audited
//!   the same way with its defaults and the same host keys, gets too: the
//!   classic curve25519 methods kept for older peers (OpenSSH 10 keeps them
//!   in its default list) and the ECDSA P-256 host key.
//!
//! Prints both reports' findings.

use crate::common::*;

/// One `[fail]`/`[warn]` of an ssh-audit report: ("(kex) name", "[warn] why").
type Finding = (String, String);

/// The findings of a report (`--no-colors`): each with the algorithm of its
/// line or of the line it continues.
fn findings(report: &str) -> Vec<Finding> {
    let mut alg = String::new();
    let mut v = Vec::new();
    for l in report.lines() {
        if l.starts_with('(') {
            alg = l.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        }
        for level in ["[fail]", "[warn]"] {
            if let Some(i) = l.find(level) {
                v.push((alg.clone(), l[i..].trim().to_string()));
            }
        }
    }
    v
}

/// ssh-audit's report on the server at 127.0.0.1:`port`.
fn audit(port: u16) -> String {
    let out = run_timeout(
        ssh_audit()
            .args(["--no-colors", "--skip-rate-test", "-p"])
            .arg(port.to_string())
            .arg("127.0.0.1"),
        T,
    );
    let report = text(&out.stdout);
    assert!(
        report.contains("# key exchange algorithms"),
        "ssh-audit ({}) printed no report:\n{report}{}",
        out.status,
        text(&out.stderr)
    );
    report
}

fn show(f: &[Finding]) -> String {
    f.iter().map(|(a, w)| format!("  {a}: {w}\n")).collect()
}

#[test]
fn ssh_audit_flags_nothing_in_resshd_the_newest_sshd_passes() {
    require_root();
    let resshd = Resshd::start(&ressh_bin().with_file_name("resshd"), "");
    let ours = audit(resshd.port());
    let first_kex = ours
        .lines()
        .find(|l| l.starts_with("(kex) "))
        .and_then(|l| l.split_whitespace().nth(1));
    assert_eq!(
        first_kex,
        Some("mlkem768x25519-sha256"),
        "resshd's first key exchange per ssh-audit:\n{ours}"
    );

    let new = NewSsh::get();
    let dir = TempDir::new("e2e-sshaudit");
    let sshd = Sshd::start_binary(&new.sshd_wrapper(dir.path()), "");
    let theirs = findings(&audit(sshd.port()));

    let unknown = (
        format!("(kex) {}", ressh_proto::resilience::NAME),
        "[warn] unknown algorithm".to_string(),
    );
    let all = findings(&ours);
    assert!(
        all.contains(&unknown),
        "ssh-audit did not see the resilience extension's name: {all:?}\n{ours}"
    );
    let (shared, own): (Vec<Finding>, Vec<Finding>) = all
        .into_iter()
        .filter(|f| *f != unknown)
        .partition(|f| theirs.contains(f));
    report(
        "ssh_audit",
        &format!(
            "ssh-audit {SSH_AUDIT_VERSION}: resshd's findings that {}'s sshd has too:\n{}\
             resshd's own: {own:?}\n{}'s sshd's findings:\n{}",
            new.suite,
            show(&shared),
            new.suite,
            show(&theirs)
        ),
    );
    assert!(
        own.is_empty(),
        "ssh-audit flagged resshd for what it does not flag in {}'s sshd:\n{}\
         --- resshd's report ---\n{ours}",
        new.suite,
        show(&own)
    );
}
