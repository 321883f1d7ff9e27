//! Issue 15: sshd_config `SetEnv` with sshd's semantics, compared with
//! Debian's sshd given the same configuration, on loopback.
//!
//! Both servers accept the client's `T15_*` variables (AcceptEnv), and
//! set some themselves: the first SetEnv line wins (a later line, and a
//! later value of the same name on the first line, are ignored), a Match
//! block's SetEnv replaces the global one, and the server's value wins over
//! what stock `ssh -o SetEnv=...` sends. The `T15_*` environment of a
//! session must be the same under resshd as under sshd, for a user outside
//! and a user inside the Match block.

use std::fs;

use crate::common::*;

const CLIENT_SETENV: &str = "SetEnv T15_A=client T15_C=client T15_D=client\n";

#[test]
fn set_env_as_sshd_sets_it() {
    let dir = TempDir::new("e2e-setenv");
    let plain = TestUser::create("e2ese");
    let matched = TestUser::create("e2esm");
    let (key, line) = ssh_keygen(dir.path(), "ed25519", "");
    plain.authorize_key(&line);
    matched.authorize_key(&line);
    let config = format!(
        "AcceptEnv T15_*\n\
         SetEnv T15_A=server \"T15_B=two words\" T15_A=ignored\n\
         SetEnv T15_C=second-line-ignored\n\
         Match User {}\n    SetEnv T15_A=match\n",
        matched.name
    );
    let resshd = Resshd::start(&ressh_bin().with_file_name("resshd"), &config);
    let sshd = Sshd::start(&config);
    let ssh = require_cmd("ssh");
    let envs = |user: &TestUser, port: u16, known: String| {
        let known_hosts = dir.join(format!("known_hosts-{port}"));
        fs::write(&known_hosts, known).unwrap();
        let cfg = dir.join(format!("ssh_config-{port}-{}", user.name));
        write_client_config(
            &cfg,
            &user.name,
            &key,
            &known_hosts,
            "127.0.0.1",
            port,
            CLIENT_SETENV,
        );
        let out = run_timeout(
            std::process::Command::new(&ssh)
                .arg("-F")
                .arg(&cfg)
                .args(["server", "env | grep ^T15_ | sort"]),
            T,
        );
        assert!(
            out.status.success(),
            "ssh to port {port}: {}\n{}",
            out.status,
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    for (user, want) in [
        (
            &plain,
            "T15_A=server\nT15_B=two words\nT15_C=client\nT15_D=client\n",
        ),
        (&matched, "T15_A=match\nT15_C=client\nT15_D=client\n"),
    ] {
        let by_sshd = envs(user, sshd.port(), sshd.known_hosts());
        let by_resshd = envs(user, resshd.port(), known_hosts_at(&resshd, resshd.port()));
        assert_eq!(
            by_resshd, by_sshd,
            "{}: resshd's session environment differs from sshd's",
            user.name
        );
        assert_eq!(by_sshd, want, "{}: sshd itself", user.name);
        report(
            "set_env",
            &format!(
                "{}: {}",
                user.name,
                by_resshd.trim_end().replace('\n', ", ")
            ),
        );
    }
}
