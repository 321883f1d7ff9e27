//! Issue 15: the ECDSA key types on the bigger curves
//! (`ecdsa-sha2-nistp384`, `ecdsa-sha2-nistp521`) end to end, as host keys
//! and as user keys, against Debian's OpenSSH on the other side, on
//! loopback.
//!
//! - Stock `ssh` → resshd holding a P-384 and a P-521 host key (HostKey
//!   files made by `ssh-keygen`): for each curve, `ssh` restricted to that
//!   host key algorithm and known_hosts line logs in with a user key of the
//!   same curve; its `-v` output names the server's key by the fingerprint
//!   `ssh-keygen -l` gives, and resshd logs the accepted key's type.
//!   ressh (its identity file and known_hosts) does the same against resshd.
//! - ressh → Debian's sshd holding the same kinds of keys: same checks,
//!   sshd's log naming the accepted user key.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::*;

/// `ssh-keygen -lf <private>.pub`'s "SHA256:..." field.
fn fingerprint(private: &Path) -> String {
    let out = run_ok(
        Command::new(require_cmd("ssh-keygen"))
            .arg("-lf")
            .arg(format!("{}.pub", private.display())),
    );
    text(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("ssh-keygen -l printed no fingerprint"))
        .to_string()
}

/// Logs in with `client(config, args)` (stock ssh or ressh, `-v`, config
/// from [`write_client_config`]) once per curve: host key and user key of that
/// curve, nothing else allowed. Checks the host key the client saw and
/// that the server logged accepting the user key.
fn login_per_curve(
    what: &str,
    client: &dyn Fn(&Path, &[&str]) -> Command,
    dir: &TempDir,
    user: &TestUser,
    hosts: &[(std::path::PathBuf, String)],
    port: u16,
    server_log: &dyn Fn() -> String,
) {
    // File names without the spaces and arrow of `what`.
    let tag: String = what.chars().filter(char::is_ascii_alphanumeric).collect();
    for (i, (kind, alg)) in BIG_CURVES.iter().enumerate() {
        let (host_key, host_pub) = &hosts[i];
        let known_hosts = dir.join(format!("known_hosts-{tag}-{kind}"));
        fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}\n")).unwrap();
        let (user_key, user_pub) = ssh_keygen(dir.path(), kind, "");
        user.authorize_key(&user_pub);
        let config = dir.join(format!("ssh_config-{tag}-{kind}"));
        write_client_config(
            &config,
            &user.name,
            &user_key,
            &known_hosts,
            "127.0.0.1",
            port,
            &format!("HostKeyAlgorithms {alg}\nPubkeyAcceptedAlgorithms {alg}\n"),
        );
        let out = run_timeout(
            &mut client(&config, &["-v", "server", "echo key $(id -un)"]),
            T,
        );
        let err = text(&out.stderr);
        assert!(
            out.status.success(),
            "{what} with {alg}: {}\n{err}\n--- server log ---\n{}",
            out.status,
            server_log()
        );
        assert_eq!(text(&out.stdout), format!("key {}\n", user.name), "{what}");
        let seen = format!("Server host key: {alg} {}", fingerprint(host_key));
        assert!(err.contains(&seen), "{what}: no {seen:?} in\n{err}");
        let accepted = format!("Accepted publickey for {} from 127.0.0.1 port", user.name);
        let user_fp = fingerprint(&user_key);
        let log = server_log();
        assert!(
            log.lines()
                .any(|l| l.contains(&accepted) && l.contains(&user_fp)),
            "{what}: the server did not log accepting the {alg} key {user_fp}:\n{log}"
        );
        report(
            "key_types",
            &format!("{what}: host and user key {alg} fine"),
        );
    }
}

#[test]
fn stock_ssh_and_ressh_log_in_to_resshd_with_p384_and_p521_keys() {
    let dir = TempDir::new("e2e-keytypes");
    let keydir = dir.join("host");
    fs::create_dir_all(&keydir).unwrap();
    let host_keys = BigCurveHostKeys::new(&keydir);
    let extra = host_keys.config();
    let hosts = host_keys.keys;
    let server = Resshd::start(&ressh_bin().with_file_name("resshd"), &extra);
    let user = TestUser::create("e2ekt");
    let log = || server.log();
    let ssh = require_cmd("ssh");
    login_per_curve(
        "stock ssh → resshd",
        &|config, args| {
            let mut c = Command::new(&ssh);
            c.arg("-F").arg(config).args(args);
            c
        },
        &dir,
        &user,
        &hosts,
        server.port(),
        &log,
    );
    login_per_curve(
        "ressh → resshd",
        &ressh_here,
        &dir,
        &user,
        &hosts,
        server.port(),
        &log,
    );
}

#[test]
fn ressh_logs_in_to_stock_sshd_with_p384_and_p521_keys() {
    let dir = TempDir::new("e2e-keytypes-sshd");
    let keydir = dir.join("host");
    fs::create_dir_all(&keydir).unwrap();
    let host_keys = BigCurveHostKeys::new(&keydir);
    let extra = host_keys.config();
    let hosts = host_keys.keys;
    let sshd = Sshd::start(&extra);
    let user = TestUser::create("e2eks");
    login_per_curve(
        "ressh → sshd",
        &ressh_here,
        &dir,
        &user,
        &hosts,
        sshd.port(),
        &|| sshd.log(),
    );
}
