//! Issue 15: FIDO security keys (`sk-ssh-ed25519@openssh.com`,
//! `sk-ecdsa-sha2-nistp256@openssh.com`) as user keys of resshd, made and
//! used by the newest Debian OpenSSH (testkit's `NewSsh` root, chrooted so
//! that ssh finds its own ssh-sk-helper) with OpenSSH's test provider
//! `sk-dummy.so`, which signs with the flags the key asks for.
//!
//! Each case (key, authorized_keys line, server setting) runs against
//! resshd and against Debian's sshd, and both must decide alike:
//! - keys that ask for a touch log in (ed25519-sk, ecdsa-sk);
//! - a `-O no-touch-required` key signs without the user-presence flag: it
//!   is refused, unless its line says `no-touch-required`, and still refused
//!   when the server says `PubkeyAuthOptions touch-required` (in a Match
//!   block);
//! - a line saying `verify-required` refuses a key that did not verify the
//!   user.
//!
//! resshd's refusals name the requirement not met.

use std::fs;

use crate::common::*;

/// One login attempt.
struct Case {
    what: &'static str,
    /// The key's file name in the scratch directory.
    key: &'static str,
    /// authorized_keys options before the key ("" for none).
    options: &'static str,
    /// The user under `PubkeyAuthOptions touch-required`.
    strict: bool,
    /// None: logs in. Some(why): refused, resshd logging `why`.
    refused: Option<&'static str>,
}

const TOUCH: &str = "rejected: user presence (authenticator touch) requirement not met";
const VERIFY: &str = "rejected: user verification requirement not met";

const CASES: &[Case] = &[
    Case {
        what: "ed25519-sk, touched",
        key: "ed",
        options: "",
        strict: false,
        refused: None,
    },
    Case {
        what: "ecdsa-sk, touched",
        key: "ec",
        options: "",
        strict: false,
        refused: None,
    },
    Case {
        what: "ed25519-sk, not touched",
        key: "ednt",
        options: "",
        strict: false,
        refused: Some(TOUCH),
    },
    Case {
        what: "ed25519-sk, not touched, no-touch-required",
        key: "ednt",
        options: "no-touch-required ",
        strict: false,
        refused: None,
    },
    Case {
        what: "ecdsa-sk, not touched, no-touch-required",
        key: "ecnt",
        options: "no-touch-required ",
        strict: false,
        refused: None,
    },
    Case {
        what: "ed25519-sk, not touched, no-touch-required, PubkeyAuthOptions touch-required",
        key: "ednt",
        options: "no-touch-required ",
        strict: true,
        refused: Some(TOUCH),
    },
    Case {
        what: "ecdsa-sk, touched, user not verified, verify-required",
        key: "ec",
        options: "verify-required ",
        strict: false,
        refused: Some(VERIFY),
    },
];

/// Replaces `user`'s authorized_keys with `line`.
fn authorize_only(user: &TestUser, line: &str) {
    let path = user.home.join(".ssh/authorized_keys");
    fs::write(&path, format!("{line}\n")).unwrap();
    user.own(&path, 0o600);
}

#[test]
fn fido_keys_of_the_newest_openssh_against_resshd_and_sshd() {
    require_root();
    let new = NewSsh::get();
    let scratch = new.scratch("e2e-sk");
    let provider = new.inside(&new.sk_dummy());
    let provider = provider.to_str().unwrap();
    let mut lines = std::collections::HashMap::new();
    for (name, args) in [
        ("ed", &["-t", "ed25519-sk"][..]),
        ("ec", &["-t", "ecdsa-sk"]),
        ("ednt", &["-t", "ed25519-sk", "-O", "no-touch-required"]),
        ("ecnt", &["-t", "ecdsa-sk", "-O", "no-touch-required"]),
    ] {
        let key = scratch.join(name);
        run_ok(
            new.chrooted("/usr/bin/ssh-keygen")
                .args(["-q", "-N", "", "-C", "ressh-sk", "-w", provider, "-f"])
                .arg(new.inside(&key))
                .args(args),
        );
        let line = fs::read_to_string(key.with_extension("pub")).unwrap();
        lines.insert(name, line.trim_end().to_string());
    }

    let user = TestUser::create("e2esk");
    let strict = TestUser::create("e2esks");
    let match_strict = format!(
        "Match User {}\n    PubkeyAuthOptions touch-required\n",
        strict.name
    );
    let resshd = Resshd::start(&ressh_bin().with_file_name("resshd"), &match_strict);
    let sshd = Sshd::start(&match_strict);
    let servers: [(&str, u16, String, &dyn Fn() -> String); 2] = [
        (
            "resshd",
            resshd.port(),
            known_hosts_at(&resshd, resshd.port()),
            &|| resshd.log(),
        ),
        ("sshd", sshd.port(), sshd.known_hosts(), &|| sshd.log()),
    ];
    for (i, case) in CASES.iter().enumerate() {
        let u = if case.strict { &strict } else { &user };
        authorize_only(u, &format!("{}{}", case.options, lines[case.key]));
        for (server, port, known, log) in &servers {
            let known_hosts = scratch.join(format!("known_hosts-{server}"));
            fs::write(&known_hosts, known).unwrap();
            let config = scratch.join(format!("ssh_config-{server}-{i}"));
            write_client_config(
                &config,
                &u.name,
                &new.inside(&scratch.join(case.key)),
                &new.inside(&known_hosts),
                "127.0.0.1",
                *port,
                &format!("SecurityKeyProvider {provider}\n"),
            );
            let out = run_timeout(
                new.chrooted("/usr/bin/ssh")
                    .arg("-F")
                    .arg(new.inside(&config))
                    .args(["-v", "server", "echo sk $(id -un)"]),
                T,
            );
            let err = text(&out.stderr);
            let what = format!("{} → {server}", case.what);
            match case.refused {
                None => {
                    assert!(
                        out.status.success(),
                        "{what}: refused\n{err}\n--- server log ---\n{}",
                        log()
                    );
                    assert_eq!(text(&out.stdout), format!("sk {}\n", u.name), "{what}");
                }
                Some(why) => {
                    assert!(
                        !out.status.success() && err.contains("Permission denied"),
                        "{what}: not refused: {}\n{err}",
                        out.status
                    );
                    if *server == "resshd" {
                        let log = log();
                        assert!(
                            log.lines().any(|l| l.contains(why) && l.contains(&u.name)),
                            "{what}: resshd did not log {why:?}:\n{log}\n--- ssh ---\n{err}"
                        );
                    }
                }
            }
            report(
                "security_keys",
                &format!(
                    "{what}: {}",
                    if case.refused.is_some() {
                        "refused"
                    } else {
                        "logged in"
                    }
                ),
            );
        }
    }
}
