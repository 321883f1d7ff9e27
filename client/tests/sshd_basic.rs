//! ressh against Debian's stock sshd: exec and exit codes, stdin, identities
//! (key files of each type, a passphrase-protected key through SSH_ASKPASS,
//! ssh-agent), password auth, and known_hosts handling.

mod common;
use common::*;

use std::fs;
use std::process::Command;

#[test]
fn exec_output_exit_code_and_stdin() {
    let env = Env::sshd("");
    let out = env.exec(&["echo", "hello;", "echo", "oops", ">&2;", "exit", "7"]);
    assert_eq!(
        text(&out.stdout),
        "hello\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stderr), "oops\n");
    assert_eq!(out.status.code(), Some(7));

    // stdin reaches the remote command, and its EOF too.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut c = env.ressh();
    c.args(["127.0.0.1", "wc", "-c"]);
    let out = run_with_stdin(&mut c, &data, T);
    check(&out, &env, "stdin to wc");
    assert_eq!(text(&out.stdout).trim(), "3000000");

    // -n: stdin from /dev/null; ssh://user@host:port form; -l and -p.
    let mut c = env.ressh();
    c.args([
        "-n",
        &format!("ssh://{}@127.0.0.1:{}", env.user.name, env.server.port()),
    ]);
    c.args(["cat;", "id", "-un"]);
    let out = run_with_stdin(&mut c, b"not read", T);
    check(&out, &env, "-n and ssh:// URI");
    assert_eq!(text(&out.stdout), format!("{}\n", env.user.name));

    // A command killed by a signal: 255, as ssh.
    let out = env.exec(&["kill", "-9", "$$"]);
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));

    // The reader of stdout goes away: the session ends, the remote command
    // does not run on.
    let started = std::time::Instant::now();
    let out = run_timeout(
        Command::new("sh").arg("-c").arg(format!(
            "{RESSH} -F {} 127.0.0.1 yes | head -n 2",
            env.config.display()
        )),
        T,
    );
    assert_eq!(text(&out.stdout), "y\ny\n");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));

    // -s: a subsystem.
    let mut c = env.ressh();
    c.args(["-s", "127.0.0.1", "sftp"]);
    let out = run_with_stdin(&mut c, b"", T);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut c = env.ressh();
    c.args(["-s", "127.0.0.1", "no-such-subsystem"]);
    let out = run_timeout(&mut c, T);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("subsystem request failed"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn environment_sendenv_setenv() {
    let env = Env::sshd("AcceptEnv RT_*");
    env.write_config("Host *\n    SendEnv RT_A\n    SetEnv RT_B=two");
    let mut c = env.ressh();
    c.env("RT_A", "one").env("RT_C", "three");
    c.args(["127.0.0.1", "echo", "${RT_A}-${RT_B}-${RT_C}"]);
    let out = run_timeout(&mut c, T);
    check(&out, &env, "env");
    assert_eq!(text(&out.stdout), "one-two-\n");
}

/// Authenticates with `-i key` and returns ressh's -v output.
fn login_with(
    env: &Env,
    config: &std::path::Path,
    key: &std::path::Path,
    extra_env: &[(&str, &str)],
) -> std::process::Output {
    let mut c = env.ressh_with(config);
    c.arg("-v").arg("-i").arg(key).args(["-o", "BatchMode=no"]);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.args(["127.0.0.1", "id", "-un"]);
    run_timeout(&mut c, T)
}

#[test]
fn key_files_of_each_type() {
    let env = Env::sshd("");
    let bare = env.alt_config("nokey", "", false);
    for kind in ["rsa", "ecdsa", "ed25519"] {
        let (key, line) = ssh_keygen(env.dir.path(), kind, "");
        // Not authorized yet: refused.
        let out = login_with(&env, &bare, &key, &[]);
        assert_eq!(
            out.status.code(),
            Some(255),
            "{kind}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("Permission denied (publickey,password)"),
            "{}",
            text(&out.stderr)
        );
        env.user.authorize_key(&line);
        // A key file others can read is ignored, as ssh does.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let out = login_with(&env, &bare, &key, &[]);
        assert_eq!(
            out.status.code(),
            Some(255),
            "{kind}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("are too open"),
            "{}",
            text(&out.stderr)
        );
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        let out = login_with(&env, &bare, &key, &[]);
        check(&out, &env, kind);
        assert_eq!(text(&out.stdout), format!("{}\n", env.user.name));
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("using publickey ({})", key.display())),
            "{kind}: {err}"
        );
    }
}

#[test]
fn passphrase_protected_key_through_askpass() {
    let env = Env::sshd("");
    let bare = env.alt_config("nokey", "", false);
    for kind in ["ed25519", "rsa", "ecdsa"] {
        let (key, line) = ssh_keygen(env.dir.path(), kind, "correct horse");
        env.user.authorize_key(&line);
        let (ap, log) = askpass(env.dir.path(), &format!("ap-{kind}"), "correct horse");
        let ap = ap.to_string_lossy().into_owned();
        let out = login_with(
            &env,
            &bare,
            &key,
            &[("SSH_ASKPASS", &ap), ("SSH_ASKPASS_REQUIRE", "force")],
        );
        check(&out, &env, kind);
        assert_eq!(text(&out.stdout), format!("{}\n", env.user.name));
        let asked = fs::read_to_string(&log).unwrap();
        assert_eq!(
            asked.trim(),
            format!("Enter passphrase for key '{}':", key.display()),
            "{kind}"
        );
        // The wrong passphrase: asked again (three times), then refused.
        let (bad, badlog) = askpass(env.dir.path(), &format!("bad-{kind}"), "wrong");
        let bad = bad.to_string_lossy().into_owned();
        let out = login_with(
            &env,
            &bare,
            &key,
            &[("SSH_ASKPASS", &bad), ("SSH_ASKPASS_REQUIRE", "force")],
        );
        assert_eq!(out.status.code(), Some(255));
        let asked = fs::read_to_string(&badlog).unwrap();
        // Three passphrase prompts, then the password method's three.
        assert_eq!(
            asked.lines().filter(|l| l.contains("passphrase")).count(),
            3,
            "{asked}"
        );
        assert_eq!(
            asked.lines().filter(|l| l.contains("password:")).count(),
            3,
            "{asked}"
        );
        assert!(asked.contains("Bad passphrase, try again"), "{asked}");
        // BatchMode: no prompt at all.
        let mut c = env.ressh_with(&bare);
        c.arg("-i")
            .arg(&key)
            .env("SSH_ASKPASS", &ap)
            .env("SSH_ASKPASS_REQUIRE", "force");
        c.args(["127.0.0.1", "true"]);
        let before = fs::read_to_string(&log).unwrap();
        let out = run_timeout(&mut c, T);
        assert_eq!(out.status.code(), Some(255));
        assert_eq!(
            fs::read_to_string(&log).unwrap(),
            before,
            "asked in batch mode"
        );
    }
}

#[test]
fn keys_from_ssh_agent() {
    let env = Env::sshd("");
    let agent = SshAgent::start();
    let sock = &agent.sock;
    let agent_dir = TempDir::new("agent-keys");
    // An RSA key (sha2 signature flags) and an ed25519 key, both only in the agent.
    for kind in ["rsa", "ed25519"] {
        let (key, line) = ssh_keygen(agent_dir.path(), kind, "");
        agent.add(&key);
        fs::remove_file(&key).unwrap();
        fs::remove_file(format!("{}.pub", key.display())).unwrap();
        env.user.authorize_key(&line);
        let cfg = env.alt_config(
            &format!("agent-{kind}"),
            "Host *\n    IdentityAgent SSH_AUTH_SOCK\n    IdentitiesOnly no",
            false,
        );
        let mut c = env.ressh_with(&cfg);
        c.env("SSH_AUTH_SOCK", sock)
            .args(["-v", "127.0.0.1", "id", "-un"]);
        let out = run_timeout(&mut c, T);
        check(&out, &env, kind);
        assert_eq!(text(&out.stdout), format!("{}\n", env.user.name));
        assert!(
            text(&out.stderr).contains("using publickey"),
            "{}",
            text(&out.stderr)
        );
        // The ed25519 key is tried second: remove the RSA one from
        // authorized_keys by re-creating the file.
        fs::remove_file(env.user.home.join(".ssh/authorized_keys")).unwrap();
    }
}

#[test]
fn password_through_askpass() {
    let env = Env::sshd("PasswordAuthentication yes");
    env.user.set_password("Pa55-word-for-ressh");
    let bare = env.alt_config("nokey", "", false);
    let (ap, log) = askpass(env.dir.path(), "pw", "Pa55-word-for-ressh");
    let mut c = env.ressh_with(&bare);
    c.env("SSH_ASKPASS", &ap)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .args(["-o", "BatchMode=no", "127.0.0.1", "id", "-un"]);
    let out = run_timeout(&mut c, T);
    check(&out, &env, "password");
    assert_eq!(text(&out.stdout), format!("{}\n", env.user.name));
    assert_eq!(
        fs::read_to_string(&log).unwrap().trim(),
        format!("{}@127.0.0.1's password:", env.user.name)
    );
    // A wrong password: three prompts, then "Permission denied".
    let (bad, badlog) = askpass(env.dir.path(), "badpw", "nope");
    let mut c = env.ressh_with(&bare);
    c.env("SSH_ASKPASS", &bad)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .args(["-o", "BatchMode=no", "127.0.0.1", "true"]);
    let out = run_timeout(&mut c, T);
    assert_eq!(out.status.code(), Some(255));
    assert_eq!(fs::read_to_string(&badlog).unwrap().lines().count(), 3);
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    // SSH_ASKPASS without SSH_ASKPASS_REQUIRE and without a terminal or
    // display: not used.
    let mut c = env.ressh_with(&bare);
    c.env("SSH_ASKPASS", &ap)
        .args(["-o", "BatchMode=no", "127.0.0.1", "true"]);
    let before = fs::read_to_string(&log).unwrap();
    let out = run_timeout(&mut c, T);
    assert_eq!(out.status.code(), Some(255));
    assert_eq!(fs::read_to_string(&log).unwrap(), before);
}

#[test]
fn known_hosts_first_use_match_and_modes() {
    let env = Env::sshd("");
    let name = format!("[127.0.0.1]:{}", env.server.port());
    // Unknown host, StrictHostKeyChecking yes: refused.
    fs::write(&env.known_hosts, "").unwrap();
    let out = env.exec(&["true"]);
    assert_eq!(out.status.code(), Some(255));
    let err = text(&out.stderr);
    assert!(err.contains("Host key verification failed"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // accept-new: added, with a warning; then it matches.
    let cfg = env.alt_config("acceptnew", "StrictHostKeyChecking accept-new", true);
    let out = run_timeout(env.ressh_with(&cfg).args(["127.0.0.1", "echo", "ok"]), T);
    check(&out, &env, "accept-new");
    assert!(
        text(&out.stderr).contains(&format!("Permanently added '{name}' (ED25519)")),
        "{}",
        text(&out.stderr)
    );
    let kh = fs::read_to_string(&env.known_hosts).unwrap();
    assert!(kh.starts_with(&format!("{name} ssh-ed25519 ")), "{kh}");
    assert!(kh.contains(
        env.server
            .sshd()
            .host_key_pub("ed25519")
            .split(' ')
            .nth(1)
            .unwrap()
    ));
    let out = env.exec(&["echo", "again"]);
    check(&out, &env, "match");
    assert_eq!(text(&out.stderr), "");

    // Hashed entries (HashKnownHosts) are written and matched.
    fs::write(&env.known_hosts, "").unwrap();
    let cfg = env.alt_config(
        "hashed",
        "StrictHostKeyChecking accept-new\nHashKnownHosts yes",
        true,
    );
    check(
        &run_timeout(env.ressh_with(&cfg).args(["127.0.0.1", "true"]), T),
        &env,
        "hash",
    );
    let kh = fs::read_to_string(&env.known_hosts).unwrap();
    assert!(kh.starts_with("|1|") && !kh.contains("127.0.0.1"), "{kh}");
    check(&env.exec(&["true"]), &env, "hashed match");
    // ssh-keygen finds the hashed entry too.
    let out = run_timeout(
        Command::new("ssh-keygen")
            .arg("-F")
            .arg(&name)
            .arg("-f")
            .arg(&env.known_hosts),
        T,
    );
    assert!(out.status.success(), "ssh-keygen -F: {}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains(&format!("# Host {name} found: line 1")),
        "{}",
        text(&out.stdout)
    );
    // UpdateHostKeys is accepted (sshd announces its keys after login);
    // ressh leaves known_hosts as it is.
    for v in ["yes", "ask", "no"] {
        check(
            &env.exec(&["-o", &format!("UpdateHostKeys={v}"), "true"]),
            &env,
            "UpdateHostKeys",
        );
    }
    assert_eq!(fs::read_to_string(&env.known_hosts).unwrap(), kh);

    // ask: the askpass program confirms (SSH_ASKPASS_PROMPT=confirm).
    fs::write(&env.known_hosts, "").unwrap();
    let cfg = env.alt_config("ask", "StrictHostKeyChecking ask\nBatchMode no", true);
    let (no, nolog) = askpass(env.dir.path(), "no", "no");
    let out = run_timeout(
        env.ressh_with(&cfg)
            .env("SSH_ASKPASS", &no)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .args(["127.0.0.1", "true"]),
        T,
    );
    assert_eq!(out.status.code(), Some(255));
    let asked = fs::read_to_string(&nolog).unwrap();
    assert!(asked.contains("The authenticity of host"), "{asked}");
    assert!(
        asked.contains("ED25519 key fingerprint is SHA256:"),
        "{asked}"
    );
    assert_eq!(fs::read_to_string(&env.known_hosts).unwrap(), "");
    let (yes, _) = askpass(env.dir.path(), "yes", "yes");
    let out = run_timeout(
        env.ressh_with(&cfg)
            .env("SSH_ASKPASS", &yes)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .args(["127.0.0.1", "echo", "confirmed"]),
        T,
    );
    check(&out, &env, "ask yes");
    assert_eq!(text(&out.stdout), "confirmed\n");
    assert!(fs::read_to_string(&env.known_hosts)
        .unwrap()
        .contains("ssh-ed25519"));

    // @revoked: refused in every mode.
    let revoked = format!("@revoked * {}\n", env.server.sshd().host_key_pub("ed25519"));
    fs::write(
        &env.known_hosts,
        format!("{revoked}{}", env.server.known_hosts()),
    )
    .unwrap();
    let cfg = env.alt_config("off", "StrictHostKeyChecking no", true);
    let out = run_timeout(env.ressh_with(&cfg).args(["127.0.0.1", "true"]), T);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("REVOKED"),
        "{}",
        text(&out.stderr)
    );

    // A @cert-authority line does not make a plain host key known
    // (certificates: tests/certs.rs).
    let ca = ssh_keygen(env.dir.path(), "ed25519", "").1;
    fs::write(
        &env.known_hosts,
        format!("@cert-authority [127.0.0.1]:* {ca}\n"),
    )
    .unwrap();
    let out = run_timeout(env.ressh().args(["127.0.0.1", "true"]), T);
    assert_eq!(out.status.code(), Some(255));
    let err = text(&out.stderr);
    assert!(err.contains("no ED25519 host key is known"), "{err}");
}

#[test]
fn changed_key_with_strict_no_connects_without_password_auth() {
    let env = Env::sshd("");
    let other = ssh_keygen(env.dir.path(), "ed25519", "").1;
    fs::write(
        &env.known_hosts,
        format!("[127.0.0.1]:{} {other}\n", env.server.port()),
    )
    .unwrap();
    let cfg = env.alt_config("off", "StrictHostKeyChecking no", true);
    let out = run_timeout(env.ressh_with(&cfg).args(["127.0.0.1", "echo", "in"]), T);
    check(&out, &env, "strict no");
    assert_eq!(text(&out.stdout), "in\n");
    let err = text(&out.stderr);
    assert!(
        err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{err}"
    );
    assert!(
        err.contains("Password and keyboard-interactive authentication"),
        "{err}"
    );
}
