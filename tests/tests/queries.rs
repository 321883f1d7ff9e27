//! Issue 15: the algorithm names ressh and resshd print, beside OpenSSH's.
//!
//! - `ressh -Q kind` for each of `ssh -Q`'s kinds ressh answers: one name a
//!   line, each one the newest OpenSSH (testkit's `NewSsh`) also prints
//!   for that kind (so the shape and the names are `ssh -Q`'s; new names in
//!   ressh's registries show up without edits here), the new key types
//!   among them; an unknown kind fails as `ssh -Q` does.
//! - `resshd -T`'s `hostkeyalgorithms`, `pubkeyacceptedalgorithms` and
//!   `casignaturealgorithms` are Debian's `sshd -T`'s defaults without what
//!   resshd does not do (security keys as host keys, webauthn), in sshd's
//!   order, certificate algorithms included.

use std::fs;
use std::process::Command;

use crate::common::*;

const KINDS: &[&str] = &[
    "cipher",
    "cipher-auth",
    "kex",
    "key",
    "key-plain",
    "key-sig",
    "mac",
    "sig",
];

fn lines(out: &std::process::Output, what: &str) -> Vec<String> {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout).lines().map(String::from).collect()
}

#[test]
fn ressh_q_prints_what_the_newest_ssh_q_prints() {
    require_root();
    let new = NewSsh::get();
    for kind in KINDS {
        let ours = lines(
            &run_timeout(Command::new(ressh_bin()).args(["-Q", kind]), T),
            &format!("ressh -Q {kind}"),
        );
        let theirs = lines(
            &run_timeout(new.command("/usr/bin/ssh").args(["-Q", kind]), T),
            &format!("ssh -Q {kind}"),
        );
        assert!(!ours.is_empty(), "ressh -Q {kind} printed nothing");
        for name in &ours {
            assert!(
                theirs.contains(name),
                "ressh -Q {kind} prints {name:?}, which ssh -Q {kind} does not:\n{}",
                theirs.join("\n")
            );
        }
        report("queries", &format!("-Q {kind}: {}", ours.join(",")));
    }
    let keys = lines(
        &run_timeout(Command::new(ressh_bin()).args(["-Q", "key"]), T),
        "ressh -Q key",
    );
    let sigs = lines(
        &run_timeout(Command::new(ressh_bin()).args(["-Q", "sig"]), T),
        "ressh -Q sig",
    );
    for curve in ["ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"] {
        assert!(keys.iter().any(|k| k == curve), "-Q key: {keys:?}");
        assert!(sigs.iter().any(|k| k == curve), "-Q sig: {sigs:?}");
    }
    // An unknown kind: both refuse alike.
    let ours = run_timeout(Command::new(ressh_bin()).args(["-Q", "nope"]), T);
    let theirs = run_timeout(new.command("/usr/bin/ssh").args(["-Q", "nope"]), T);
    assert_eq!(ours.status.code(), theirs.status.code());
    // (ssh ends its lines on stderr with "\r\n".)
    assert_eq!(
        text(&ours.stderr).trim_end(),
        text(&theirs.stderr).trim_end()
    );
    assert!(ours.stdout.is_empty());
}

#[test]
fn resshd_t_lists_key_algorithms_as_sshd_t() {
    let dir = TempDir::new("e2e-queries");
    let (host_key, _) = ssh_keygen(dir.path(), "ed25519", "");
    let empty = dir.join("empty");
    fs::create_dir(&empty).unwrap();
    let common = format!("HostKey {}\n", host_key.display());
    let sshd_cfg = dir.join("sshd_config");
    fs::write(&sshd_cfg, &common).unwrap();
    let resshd_cfg = dir.join("resshd_config");
    fs::write(
        &resshd_cfg,
        format!(
            "{common}PrivilegeSeparationUser nobody\nPrivilegeSeparationDirectory {}\n",
            empty.display()
        ),
    )
    .unwrap();
    let dump = |bin: &std::path::Path, cfg: &std::path::Path| {
        let out = lines(
            &run_timeout(Command::new(bin).arg("-T").arg("-f").arg(cfg), T),
            &format!("{} -T", bin.display()),
        );
        move |key: &str| -> Vec<String> {
            let prefix = format!("{key} ");
            let l = out
                .iter()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no {key} in -T output"));
            l.split(',').map(String::from).collect()
        }
    };
    let sshd = dump(std::path::Path::new(SSHD_BIN), &sshd_cfg);
    let resshd = dump(&ressh_bin().with_file_name("resshd"), &resshd_cfg);
    let no_webauthn = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .filter(|a| !a.starts_with("webauthn-"))
            .collect()
    };
    let want_user = no_webauthn(sshd("pubkeyacceptedalgorithms"));
    assert_eq!(resshd("pubkeyacceptedalgorithms"), want_user);
    let want_host: Vec<String> = no_webauthn(sshd("hostkeyalgorithms"))
        .into_iter()
        .filter(|a| !a.starts_with("sk-"))
        .collect();
    assert_eq!(resshd("hostkeyalgorithms"), want_host);
    assert_eq!(
        resshd("casignaturealgorithms"),
        no_webauthn(sshd("casignaturealgorithms"))
    );
    report(
        "queries",
        &format!("resshd -T pubkeyacceptedalgorithms {}", want_user.join(",")),
    );
}
