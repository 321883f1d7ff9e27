//! Issue 16: AuthorizedKeysCommand and RevokedKeys, with stock `ssh`
//! against resshd (and against Debian's sshd given the same configuration
//! where sshd is the reference), on loopback.
//!
//! - `keys_command_as_sshd_runs_it`: the command (a shell script in a
//!   root-owned directory) prints a key line with a `command=` option; the
//!   login succeeds and runs that forced command under both servers; the
//!   command ran as AuthorizedKeysCommandUser (it records `id -u`) with the
//!   same arguments under both (every `%` token, quoting, `%%`), but `%C`,
//!   which names each server's own port.
//! - `keys_command_bounds`: while one user's command hangs, another user
//!   logs in through the command at once; the hanging login fails after
//!   resshd's 30 s and the command's process group is gone. A command
//!   that floods 50 MB of valid key lines (through a pipe), prints one
//!   100 KB line, exits 1 after printing the key, or is writable by the
//!   user, does not let the user in, and resshd logs why.
//! - `revoked_keys_as_sshd`: RevokedKeys as a plain key list, as KRLs
//!   made by `ssh-keygen -k` (a key; a SHA-256 hash), a KRL cut short, a
//!   missing file and a list with a line that is no key: for each, which
//!   of two keys logs in is the same under resshd as under sshd (and is
//!   what sshd(8) documents).
//! - `revoked_certificates_as_sshd`: user certificates of a trusted CA
//!   (TrustedUserCAKeys), revoked by KRLs `ssh-keygen -k -s CA` made (a
//!   serial; a key id), by a KRL listing the CA key, and by a plain list
//!   holding one certificate: which certificate logs in is the same under
//!   resshd as under sshd.
//! - `a_key_revoked_while_detached_resumes_nothing` (namespaces): a ressh
//!   session resumes after a cut; its key is then listed in RevokedKeys and
//!   the connection cut again: the reconnect is refused, resshd logs that
//!   the key is revoked, and ressh gives up at the detach timeout.
//! - `two_keys_keep_the_first_keys_restrictions`: with
//!   `AuthenticationMethods publickey,publickey`, one key's line forces a
//!   command and the other's does not; whichever key stock ssh offers
//!   first, the forced command runs under both servers (sshd merges the
//!   options of every key step; a later key must not lift an earlier one's
//!   restrictions).
//! - `one_key_and_its_certificate_are_not_two_keys`: with the same
//!   AuthenticationMethods, a listed key that is also certified by a
//!   TrustedUserCAKeys CA, offered by stock ssh as its certificate and as
//!   itself, does not log in under either server (one key, whatever its
//!   encoding); the key with a second one does.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// The test's AuthorizedKeysCommand. It records its uid and arguments in
/// `rec/TAG-USER` (TAG its first argument, USER its second), then does
/// what `mode-USER` says, printing `keys-USER`.
const SCRIPT: &str = r#"#!/bin/sh
d=$(dirname "$0")
{ id -u; for a in "$@"; do printf '%s\n' "$a"; done; } > "$d/rec/$1-$2"
keys="$d/keys-$2"
case "$(cat "$d/mode-$2" 2>/dev/null)" in
hang) sleep 1000 ;;
flood) yes "$(cat "$keys")" | head -c 50000000 ;;
longline) cat "$keys"; head -c 100000 /dev/zero | tr '\0' a; echo ;;
fail) cat "$keys"; exit 1 ;;
*) cat "$keys" ;;
esac
"#;

/// A directory for commands: root-owned, mode 0755, under /run (every
/// directory above it root-owned and not group or world writable, as
/// sshd's checks want: /tmp is world-writable), with the script as
/// `keys.sh` and a `rec` directory `runner` may write.
fn command_dir(runner: &TestUser) -> TempDir {
    let dir = TempDir::new_in(Path::new("/run"), "akc");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let script = dir.join("keys.sh");
    fs::write(&script, SCRIPT).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let rec = dir.join("rec");
    fs::create_dir(&rec).unwrap();
    runner.own(&rec, 0o700);
    dir
}

/// Gives `user` a fresh key that the command prints (with `options`).
fn command_key(dir: &TempDir, keys: &TempDir, user: &TestUser, options: &str) -> PathBuf {
    let (key, line) = ssh_keygen(keys.path(), "ed25519", "");
    let f = dir.join(format!("keys-{}", user.name));
    fs::write(&f, format!("{options}{line}\n")).unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
    key
}

/// A stock `ssh` login of `user` with `key` to 127.0.0.1:`port`, running
/// `cmd`.
fn ssh_login(
    dir: &TempDir,
    port: u16,
    known: &str,
    user: &TestUser,
    key: &Path,
    cmd: &str,
) -> Output {
    let known_hosts = dir.join(format!("known_hosts-{port}"));
    fs::write(&known_hosts, known).unwrap();
    let cfg = dir.join(format!("ssh_config-{port}-{}", user.name));
    write_client_config(&cfg, &user.name, key, &known_hosts, "127.0.0.1", port, "");
    run_timeout(
        Command::new(require_cmd("ssh"))
            .arg("-F")
            .arg(&cfg)
            .args(["server", cmd]),
        Duration::from_secs(90),
    )
}

/// What the command recorded for `tag` and `user`: its uid, then its
/// arguments.
fn recorded(dir: &TempDir, tag: &str, user: &TestUser) -> Vec<String> {
    let p = dir.join("rec").join(format!("{tag}-{}", user.name));
    let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines().map(str::to_string).collect()
}

#[test]
fn keys_command_as_sshd_runs_it() {
    let keys = TempDir::new("e2e-akc-keys");
    let runner = TestUser::create("akcrun");
    let user = TestUser::create("akcu");
    let dir = command_dir(&runner);
    let key = command_key(&dir, &keys, &user, "command=\"echo forced by its line\" ");
    // Debian's sshd (9.2) knows these tokens; %C and %D came in 9.4 and
    // are checked for resshd alone, after the others.
    let config = |tag: &str, newer: &str| {
        format!(
            "AuthorizedKeysCommand {} {tag} %u %U %h %t %f %k %% x%%y \"two words\" a\\ b #c{newer}\n\
             AuthorizedKeysCommandUser {}\n",
            dir.join("keys.sh").display(),
            runner.name
        )
    };
    let resshd = Resshd::start(&resshd_bin(), &config("resshd", " %C \"%D\""));
    let sshd = Sshd::start(&config("sshd", ""));
    for (tag, port, known) in [
        ("sshd", sshd.port(), sshd.known_hosts()),
        (
            "resshd",
            resshd.port(),
            known_hosts_at(&resshd, resshd.port()),
        ),
    ] {
        let out = ssh_login(&keys, port, &known, &user, &key, "echo not forced");
        assert!(
            out.status.success(),
            "{tag}: {}\n{}\n{}",
            out.status,
            text(&out.stderr),
            if tag == "resshd" {
                resshd.log()
            } else {
                sshd.log()
            }
        );
        assert_eq!(text(&out.stdout), "forced by its line\n", "{tag}");
    }
    let by_sshd = recorded(&dir, "sshd", &user);
    let by_resshd = recorded(&dir, "resshd", &user);
    assert_eq!(
        by_resshd[0],
        runner.uid.to_string(),
        "resshd ran the command as"
    );
    assert_eq!(
        by_sshd[0],
        runner.uid.to_string(),
        "sshd ran the command as"
    );
    // The tokens sshd 9.2 knows: as under sshd.
    let (common, newer) = by_resshd.split_at(by_sshd.len());
    assert_eq!(common[2..], by_sshd[2..], "arguments differ from sshd's");
    let pubkey = fs::read_to_string(format!("{}.pub", key.display())).unwrap();
    let b64 = pubkey.split(' ').nth(1).unwrap();
    assert_eq!(
        common[2..],
        [
            user.name.clone(),
            user.uid.to_string(),
            user.home.display().to_string(),
            "ssh-ed25519".to_string(),
            common[6].clone(),
            b64.to_string(),
            "%".into(),
            "x%y".into(),
            "two words".into(),
            "a b".into(),
            "#c".into(),
        ]
    );
    assert!(common[6].starts_with("SHA256:"), "{:?}", by_resshd);
    // %C: "local-address local-port remote-address remote-port"; %D empty.
    assert_eq!(newer.len(), 2, "{by_resshd:?}");
    let c = &newer[0];
    let fields: Vec<&str> = c.split(' ').collect();
    assert_eq!(fields.len(), 4, "%C: {c}");
    assert_eq!(
        (fields[0], fields[1], fields[2]),
        ("127.0.0.1", resshd.port().to_string().as_str(), "127.0.0.1"),
        "%C: {c}"
    );
    assert_eq!(newer[1], "", "%D");
    report(
        "keys_command",
        &format!("same arguments as sshd: {:?}", &by_resshd[1..]),
    );
}

#[test]
fn keys_command_bounds() {
    let keys = TempDir::new("e2e-akcb-keys");
    let runner = TestUser::create("akcbrun");
    let dir = command_dir(&runner);
    let users: Vec<TestUser> = [
        "akchang",
        "akcok",
        "akcflood",
        "akclong",
        "akcfail",
        "akcunsafe",
    ]
    .iter()
    .map(|p| TestUser::create(p))
    .collect();
    let [hang, _ok, flood, long, fail, unsafe_] = &users[..] else {
        unreachable!()
    };
    let key_of: Vec<PathBuf> = users
        .iter()
        .map(|u| command_key(&dir, &keys, u, ""))
        .collect();
    for (u, mode) in [
        (hang, "hang"),
        (flood, "flood"),
        (long, "longline"),
        (fail, "fail"),
    ] {
        fs::write(dir.join(format!("mode-{}", u.name)), mode).unwrap();
    }
    // The unsafe user's command is a copy of the script that user owns.
    let owned = dir.join("owned.sh");
    fs::copy(dir.join("keys.sh"), &owned).unwrap();
    unsafe_.own(&owned, 0o755);
    let config = format!(
        "AuthorizedKeysCommand {} resshd %u\nAuthorizedKeysCommandUser {}\n\
         Match User {}\n    AuthorizedKeysCommand {} resshd %u\n",
        dir.join("keys.sh").display(),
        runner.name,
        unsafe_.name,
        owned.display()
    );
    let resshd = Resshd::start(&resshd_bin(), &config);
    let known = known_hosts_at(&resshd, resshd.port());
    let login = |i: usize| {
        ssh_login(
            &keys,
            resshd.port(),
            &known,
            &users[i],
            &key_of[i],
            "echo in",
        )
    };
    let started = Instant::now();
    let hanging = {
        let (known, keys_dir, port) = (known.clone(), keys.path().to_path_buf(), resshd.port());
        let (u, k) = (hang.name.clone(), key_of[0].clone());
        thread::spawn(move || {
            let kh = keys_dir.join("known_hosts-hang");
            fs::write(&kh, known).unwrap();
            let cfg = keys_dir.join("ssh_config-hang");
            write_client_config(&cfg, &u, &k, &kh, "127.0.0.1", port, "");
            let out = run_timeout(
                Command::new(require_cmd("ssh"))
                    .arg("-F")
                    .arg(&cfg)
                    .args(["server", "echo in"]),
                Duration::from_secs(90),
            );
            (out, started.elapsed())
        })
    };
    let hang_rec = dir.join("rec").join(format!("resshd-{}", hang.name));
    wait_for(
        "the hanging command to start",
        T,
        || hang_rec.exists().then_some(()),
        || resshd.log(),
    );
    // Meanwhile another login goes through the command at once.
    let t = Instant::now();
    let out = login(1);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        resshd.log()
    );
    assert_eq!(text(&out.stdout), "in\n");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    // Output over the bounds, a failing command, an unsafe one: refused.
    for (i, why) in [
        (2, "output exceeds 4194304 bytes"),
        (3, "a line exceeds 65536 bytes"),
        (4, "exited with status 1"),
        (5, "Unsafe AuthorizedKeysCommand"),
    ] {
        let out = login(i);
        assert!(
            !out.status.success(),
            "{} logged in: {}",
            users[i].name,
            text(&out.stdout)
        );
        resshd.wait_log(why, T, |l| l.contains(why));
    }
    assert!(
        !dir.join("rec")
            .join(format!("resshd-{}", unsafe_.name))
            .exists(),
        "the unsafe command ran"
    );
    let (out, took) = hanging.join().unwrap();
    assert!(!out.status.success(), "the hanging login got in");
    assert!(
        took >= Duration::from_secs(29) && took < Duration::from_secs(60),
        "the hanging login failed after {took:?}"
    );
    resshd.wait_log("the timeout", T, |l| l.contains("timed out after 30 s"));
    wait_for(
        "the hanging command's processes to be killed",
        Duration::from_secs(10),
        || runner.processes().is_empty().then_some(()),
        || format!("{:?}", runner.processes()),
    );
    report(
        "keys_command",
        &format!("a hanging command refused after {took:?}; flood, long line, exit 1, unsafe path refused"),
    );
}

#[test]
fn revoked_keys_as_sshd() {
    let dir = TempDir::new("e2e-revoked");
    let user = TestUser::create("krl");
    let (a, a_line) = ssh_keygen(dir.path(), "ed25519", "");
    let (b, b_line) = ssh_keygen(dir.path(), "ecdsa", "");
    user.authorize_key(&a_line);
    user.authorize_key(&b_line);
    let revoked = dir.join("revoked");
    let config = format!("RevokedKeys {}\n", revoked.display());
    let resshd = Resshd::start(&resshd_bin(), &config);
    let sshd = Sshd::start(&config);
    let keygen = require_cmd("ssh-keygen");
    let krl = |spec: &str| {
        let s = dir.join("spec");
        fs::write(&s, spec).unwrap();
        let _ = fs::remove_file(&revoked);
        run_ok(
            Command::new(&keygen)
                .args(["-q", "-k", "-f"])
                .arg(&revoked)
                .arg(&s),
        );
    };
    let b_fp = {
        let out = run_ok(
            Command::new(&keygen)
                .args(["-l", "-E", "sha256", "-f"])
                .arg(format!("{}.pub", b.display())),
        );
        text(&out.stdout).split(' ').nth(1).unwrap().to_string()
    };
    type Setup<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Setup, [bool; 2])> = vec![
        (
            "no such file",
            Box::new(|| {
                let _ = fs::remove_file(&revoked);
            }),
            [false, false],
        ),
        (
            "plain list of A",
            Box::new(|| fs::write(&revoked, format!("# revoked\n\n{a_line}\n")).unwrap()),
            [false, true],
        ),
        (
            "empty plain list",
            Box::new(|| fs::write(&revoked, "").unwrap()),
            [true, true],
        ),
        (
            "plain list with a bad line",
            Box::new(|| fs::write(&revoked, format!("{a_line}\nnot a key\n")).unwrap()),
            [false, false],
        ),
        (
            "KRL of key A",
            Box::new(|| krl(&format!("{a_line}\n"))),
            [false, true],
        ),
        (
            "KRL of B's SHA-256 hash",
            Box::new(|| krl(&format!("hash: {b_fp}\n"))),
            [true, false],
        ),
        (
            "KRL cut short",
            Box::new(|| {
                krl(&format!("{a_line}\n"));
                let mut data = fs::read(&revoked).unwrap();
                data.truncate(data.len() - 1);
                fs::write(&revoked, data).unwrap();
            }),
            [false, false],
        ),
    ];
    let resshd_known = known_hosts_at(&resshd, resshd.port());
    for (what, setup, want) in &cases {
        setup();
        for (tag, port, known) in [
            ("sshd", sshd.port(), sshd.known_hosts()),
            ("resshd", resshd.port(), resshd_known.clone()),
        ] {
            let got: Vec<bool> = [&a, &b]
                .iter()
                .map(|k| {
                    ssh_login(&dir, port, &known, &user, k, "true")
                        .status
                        .success()
                })
                .collect();
            assert_eq!(
                got,
                want,
                "{what}: {tag} let in [A, B] = {got:?}\n{}",
                if tag == "resshd" {
                    resshd.log()
                } else {
                    sshd.log()
                }
            );
        }
        report(
            "revoked_keys",
            &format!("{what}: [A, B] in = {want:?}, as sshd"),
        );
    }
    let log = resshd.log();
    assert!(log.contains("revoked by file"), "{log}");
    assert!(log.contains("Error checking authentication key"), "{log}");
}

#[test]
fn revoked_certificates_as_sshd() {
    let dir = TempDir::new("e2e-revoked-certs");
    let user = TestUser::create("krlc");
    let (ca, ca_line) = ssh_keygen(dir.path(), "ed25519", "");
    let ca_pub = format!("{}.pub", ca.display());
    // Two keys no authorized_keys lists, each with a certificate.
    let certified: Vec<(PathBuf, String)> = [("5", "one"), ("6", "two")]
        .iter()
        .map(|(serial, id)| {
            let (key, _) = ssh_keygen(dir.path(), "ecdsa", "");
            let (_, line) = ressh_testkit::ssh_keygen_sign(
                &ca,
                &key,
                &["-I", id, "-n", &user.name, "-z", serial],
            );
            (key, line)
        })
        .collect();
    let revoked = dir.join("revoked");
    let config = format!(
        "TrustedUserCAKeys {ca_pub}\nRevokedKeys {}\n",
        revoked.display()
    );
    let resshd = Resshd::start(&resshd_bin(), &config);
    let sshd = Sshd::start(&config);
    let keygen = require_cmd("ssh-keygen");
    let krl = |spec: &str, ca: bool| {
        let s = dir.join("spec");
        fs::write(&s, spec).unwrap();
        let _ = fs::remove_file(&revoked);
        let mut cmd = Command::new(&keygen);
        cmd.args(["-q", "-k", "-f"]).arg(&revoked);
        if ca {
            cmd.arg("-s").arg(&ca_pub);
        }
        run_ok(cmd.arg(&s));
    };
    type Setup<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Setup, [bool; 2])> = vec![
        ("empty KRL", Box::new(|| krl("", true)), [true, true]),
        (
            "KRL of serial 5",
            Box::new(|| krl("serial: 5\n", true)),
            [false, true],
        ),
        (
            "KRL of key id two",
            Box::new(|| krl("id: two\n", true)),
            [true, false],
        ),
        (
            "KRL of the CA key",
            Box::new(|| krl(&format!("{ca_line}\n"), false)),
            [false, false],
        ),
        (
            "plain list of certificate one",
            Box::new(|| fs::write(&revoked, format!("{}\n", certified[0].1)).unwrap()),
            [false, true],
        ),
    ];
    let resshd_known = known_hosts_at(&resshd, resshd.port());
    for (what, setup, want) in &cases {
        setup();
        for (tag, port, known) in [
            ("sshd", sshd.port(), sshd.known_hosts()),
            ("resshd", resshd.port(), resshd_known.clone()),
        ] {
            let got: Vec<bool> = certified
                .iter()
                .map(|(k, _)| {
                    ssh_login(&dir, port, &known, &user, k, "true")
                        .status
                        .success()
                })
                .collect();
            assert_eq!(
                got,
                want,
                "{what}: {tag} let in [one, two] = {got:?}\n{}",
                if tag == "resshd" {
                    resshd.log()
                } else {
                    sshd.log()
                }
            );
        }
        report(
            "revoked_keys",
            &format!("certificates, {what}: [one, two] in = {want:?}, as sshd"),
        );
    }
}

#[test]
fn a_key_revoked_while_detached_resumes_nothing() {
    let files = TempDir::new("e2e-revoked-resume");
    let revoked = files.join("revoked");
    fs::write(&revoked, "").unwrap();
    let lab = Lab::new(
        "revres",
        &format!("RevokedKeys {}\nDetachTimeout 5\n", revoked.display()),
    );
    let stop = lab.user().home.join("stop-counter");
    let mut client = Client::spawn(&mut lab.ressh(&["server", &counter_cmd(&stop, 1_000_000)]));
    client.wait_lines(20, T);
    // A cut: the session resumes.
    lab.net.kill_tcp(PORT);
    lab.wait_log("the reconnect", T, |l| reconnects(l) == 1);
    let seen = client.line_count();
    client.wait_lines(seen + 10, T);
    // The key revoked, another cut: the reconnect is refused.
    let pub_line = fs::read_to_string(format!("{}.pub", lab.login.key.display())).unwrap();
    fs::write(&revoked, pub_line).unwrap();
    lab.net.kill_tcp(PORT);
    let refused = |l: &str| {
        l.lines()
            .any(|l| l.contains(" refused: Authentication key ") && l.contains("revoked by file"))
    };
    lab.wait_log("the reconnect to be refused", T, refused);
    let status = client.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "ressh: {status}\n{}", client.stderr());
    assert_eq!(reconnects(&lab.log()), 1, "{}", lab.log());
    report(
        "revoked_keys",
        "a key revoked while detached: the reconnect refused, ressh gave up",
    );
}

#[test]
fn two_keys_keep_the_first_keys_restrictions() {
    let dir = TempDir::new("e2e-twokeys");
    let user = TestUser::create("twokey");
    let (restricted, r_line) = ssh_keygen(dir.path(), "ed25519", "");
    let (free, f_line) = ssh_keygen(dir.path(), "ecdsa", "");
    user.authorize_key(&format!("command=\"echo forced by its line\" {r_line}"));
    user.authorize_key(&f_line);
    let config = "AuthenticationMethods publickey,publickey\n";
    let resshd = Resshd::start(&resshd_bin(), config);
    let sshd = Sshd::start(config);
    let resshd_known = known_hosts_at(&resshd, resshd.port());
    for (tag, port, known) in [
        ("sshd", sshd.port(), sshd.known_hosts()),
        ("resshd", resshd.port(), resshd_known),
    ] {
        let known_hosts = dir.join(format!("known_hosts-{tag}"));
        fs::write(&known_hosts, known).unwrap();
        // ssh offers the -i key first, then the config's: each order once.
        for (first, second) in [(&restricted, &free), (&free, &restricted)] {
            let cfg = dir.join(format!("ssh_config-{tag}"));
            write_client_config(
                &cfg,
                &user.name,
                second,
                &known_hosts,
                "127.0.0.1",
                port,
                "",
            );
            let out = run_timeout(
                Command::new(require_cmd("ssh"))
                    .arg("-F")
                    .arg(&cfg)
                    .arg("-i")
                    .arg(first)
                    .args(["server", "echo not forced"]),
                T,
            );
            let first_name = first.file_name().unwrap().to_string_lossy();
            assert_eq!(
                (out.status.success(), text(&out.stdout).trim()),
                (true, "forced by its line"),
                "{tag}, {first_name} offered first: the restricted key's command= must hold \
                 whichever key a second step uses\nstderr: {}\nresshd:\n{}",
                text(&out.stderr),
                resshd.log()
            );
        }
    }
    report(
        "keys_command",
        "two keys (AuthenticationMethods publickey,publickey): the first key's command= holds, as sshd",
    );
}

#[test]
fn one_key_and_its_certificate_are_not_two_keys() {
    let dir = TempDir::new("e2e-keycert");
    let user = TestUser::create("keycert");
    let (ca, ca_line) = ssh_keygen(dir.path(), "ed25519", "");
    let (key, key_line) = ssh_keygen(dir.path(), "ed25519", "");
    let (other, other_line) = ssh_keygen(dir.path(), "ecdsa", "");
    // `key` is listed, and certified (ssh offers key-cert.pub, then key).
    ressh_testkit::ssh_keygen_sign(&ca, &key, &["-I", "keycert", "-n", &user.name]);
    user.authorize_key(&key_line);
    user.authorize_key(&other_line);
    let cas = dir.join("user_ca.pub");
    fs::write(&cas, format!("{ca_line}\n")).unwrap();
    let config = format!(
        "AuthenticationMethods publickey,publickey\nTrustedUserCAKeys {}\n",
        cas.display()
    );
    let resshd = Resshd::start(&resshd_bin(), &config);
    let sshd = Sshd::start(&config);
    let resshd_known = known_hosts_at(&resshd, resshd.port());
    for (tag, port, known) in [
        ("sshd", sshd.port(), sshd.known_hosts()),
        ("resshd", resshd.port(), resshd_known),
    ] {
        let known_hosts = dir.join(format!("known_hosts-{tag}"));
        fs::write(&known_hosts, known).unwrap();
        let cfg = dir.join(format!("ssh_config-{tag}"));
        write_client_config(&cfg, &user.name, &key, &known_hosts, "127.0.0.1", port, "");
        let ssh = |extra: &[&Path]| {
            let mut c = Command::new(require_cmd("ssh"));
            c.arg("-F").arg(&cfg);
            for k in extra {
                c.arg("-i").arg(k);
            }
            run_timeout(c.args(["server", "echo in"]), T)
        };
        // The certificate, the key itself (refused: used), then a second
        // key: in (the setup works, and a refused repeat ends nothing).
        let out = ssh(&[&key, &other]);
        assert_eq!(
            (out.status.success(), text(&out.stdout).trim()),
            (true, "in"),
            "{tag}: two keys must log in\nstderr: {}\nresshd:\n{}",
            text(&out.stderr),
            resshd.log()
        );
        // One key, offered as its certificate and as itself: not two keys.
        let out = ssh(&[]);
        assert!(
            !out.status.success() && !text(&out.stdout).contains("in"),
            "{tag}: one key and its certificate passed publickey,publickey\nstderr: {}\nresshd:\n{}",
            text(&out.stderr),
            resshd.log()
        );
    }
    report(
        "keys_command",
        "one key and its certificate are one key for publickey,publickey, as sshd",
    );
}
