//! Issue 16: OpenSSH user certificates, made at test time by stock
//! `ssh-keygen -s`, used by stock `ssh` against resshd on loopback.
//!
//! One resshd trusts a user CA (TrustedUserCAKeys); a second user has an
//! AuthorizedPrincipalsFile (Match User), a third a `cert-authority,
//! principals=` line for another CA in authorized_keys. Each certificate is
//! a fresh key certified with other `ssh-keygen -s` options; stock ssh
//! offers it (`<key>-cert.pub` beside the key) and the key itself, which no
//! authorized_keys lists, so a login succeeds only through the certificate.
//! Checked: the accepted certificate (resshd logs its ID), expired, not yet
//! valid, another principal, the principals file (its principal accepted,
//! the user's own name not), the cert-authority line (its principal only),
//! a CA not trusted at all, `force-command` (the command runs instead),
//! `source-address` excluding 127.0.0.1, `no-pty` (`ssh -tt` gets no
//! terminal; with `permit-pty` it does), `no-port-forwarding` (`ssh -W`
//! refused; allowed by default), an unknown critical option (refused), and
//! a CA signature algorithm outside CASignatureAlgorithms (refused). Each
//! refusal is checked by resshd's log line giving sshd's reason.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ressh_testkit::ssh_keygen_sign;

use crate::common::*;

/// A user, their certificates' CA, and what a login as them needs.
struct CertLab {
    dir: TempDir,
    server: Resshd,
    known_hosts: PathBuf,
    /// Key and certificate files are numbered: each certificate its key.
    n: std::cell::Cell<u32>,
}

impl CertLab {
    /// A fresh key in its own file, certified by `ca` with `args`; the
    /// private key's path (ssh finds `<key>-cert.pub` beside it).
    fn cert(&self, ca: &Path, args: &[&str]) -> PathBuf {
        let n = self.n.get();
        self.n.set(n + 1);
        let key = self.dir.join(format!("key{n}"));
        run_ok(
            Command::new(require_cmd("ssh-keygen"))
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "cert-test", "-f"])
                .arg(&key),
        );
        ssh_keygen_sign(ca, &key, args);
        key
    }

    /// Stock ssh as `user` with `key` (and its certificate), `ssh_args`
    /// before the host and `command` after it.
    fn ssh(&self, user: &TestUser, key: &Path, ssh_args: &[&str], command: &str) -> Output {
        let cfg = self.dir.join(format!(
            "ssh_config-{}-{}",
            user.name,
            key.file_name().unwrap().to_string_lossy()
        ));
        write_client_config(
            &cfg,
            &user.name,
            key,
            &self.known_hosts,
            "127.0.0.1",
            self.server.port(),
            "",
        );
        run_timeout(
            Command::new(require_cmd("ssh"))
                .arg("-F")
                .arg(&cfg)
                .args(ssh_args)
                .args(["server", command]),
            T,
        )
    }

    /// Logs in and runs `command`: its stdout; fails the test otherwise.
    fn accepted(
        &self,
        what: &str,
        user: &TestUser,
        key: &Path,
        args: &[&str],
        cmd: &str,
    ) -> String {
        let out = self.ssh(user, key, args, cmd);
        assert!(
            out.status.success(),
            "{what}: login refused: {}\n{}\nresshd:\n{}",
            out.status,
            text(&out.stderr),
            self.server.log()
        );
        let id = key.file_name().unwrap().to_string_lossy().to_string();
        self.server.wait_log(
            &format!("{what}: resshd accepting certificate ID {id}"),
            T,
            |l| {
                l.lines().any(|l| {
                    l.contains(&format!("Accepted publickey for {}", user.name))
                        && l.contains(&format!(" ID {id} "))
                })
            },
        );
        text(&out.stdout)
    }

    /// `ssh -tt` (a terminal or nothing) gets no terminal: ssh gives up
    /// when the pty request fails, and resshd says why.
    fn no_pty(&self, what: &str, user: &TestUser, key: &Path) {
        let out = self.ssh(user, key, &["-tt"], "tty");
        assert!(
            !out.status.success()
                && !text(&out.stdout).contains("/dev/pts")
                && text(&out.stderr).contains("PTY allocation request failed"),
            "{what}: {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        self.server
            .wait_log(&format!("{what}: resshd refusing the pty"), T, |l| {
                l.contains(&format!("user {} from", user.name)) && l.contains("pty request refused")
            });
        report("certs", &format!("{what}: no pty"));
    }

    /// The login is refused, and resshd logs `reason` about the
    /// certificate of `key`.
    fn refused(&self, what: &str, user: &TestUser, key: &Path, reason: &str) {
        let out = self.ssh(user, key, &[], "echo logged-in");
        assert!(
            !out.status.success() && !text(&out.stdout).contains("logged-in"),
            "{what}: a login went through: {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let id = key.file_name().unwrap().to_string_lossy().to_string();
        self.server.wait_log(
            &format!("{what}: resshd refusing certificate ID {id}: {reason}"),
            T,
            |l| {
                l.lines().any(|l| {
                    l.contains(reason)
                        && (l.contains(&format!("\"{id}\""))
                            || l.contains(&format!(" ID {id} "))
                            || reason == NOT_LISTED)
                })
            },
        );
        report("certs", &format!("{what}: refused ({reason})"));
    }
}

/// sshd's words for a CA that TrustedUserCAKeys does not list (the line
/// names the CA, not the certificate).
const NOT_LISTED: &str = "is not listed in";

/// A TCP listener on loopback that writes `hello-through-forward` to each
/// connection: the target of `ssh -W`.
fn greeter() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(b"hello-through-forward\n");
        }
    });
    port
}

#[test]
fn user_certificates_as_sshd_judges_them() {
    let dir = TempDir::new("e2e-certs");
    let (ca, ca_pub) = ssh_keygen(dir.path(), "ed25519", "");
    let (other_ca, other_ca_pub) = ssh_keygen(dir.path(), "ecdsa", "");
    let (rsa_ca, rsa_ca_pub) = ssh_keygen(dir.path(), "rsa-2048", "");
    let cas = dir.join("user_ca.pub");
    fs::write(&cas, format!("# trusted\n{ca_pub}\n{rsa_ca_pub}\n")).unwrap();
    let user = TestUser::create("e2ec");
    let with_file = TestUser::create("e2ecp");
    let with_line = TestUser::create("e2eca");
    let two_keys = TestUser::create("e2ec2");
    // The principals file: options, then the principal.
    let principals = with_file.home.join(".ssh/principals");
    fs::write(&principals, "# who may log in\nops\nno-pty   deploy\n").unwrap();
    with_file.own(&principals, 0o600);
    with_line.authorize_key(&format!(
        "cert-authority,principals=\"deploy,ci\" {other_ca_pub}"
    ));
    let config = format!(
        "TrustedUserCAKeys {}\nCASignatureAlgorithms ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512\n\
         Match User {}\n    AuthorizedPrincipalsFile %h/.ssh/principals\n\
         Match User {}\n    AuthenticationMethods publickey,publickey\n",
        cas.display(),
        with_file.name,
        two_keys.name
    );
    let server = Resshd::start(&ressh_bin().with_file_name("resshd"), &config);
    let known_hosts = dir.join("known_hosts");
    fs::write(&known_hosts, known_hosts_at(&server, server.port())).unwrap();
    let lab = CertLab {
        dir,
        server,
        known_hosts,
        n: std::cell::Cell::new(0),
    };
    let u = user.name.as_str();
    let id = |n: u32| format!("key{n}");
    // Each certificate's ID is its key's file name.
    let next = || id(lab.n.get());

    // Accepted: the user's name among the principals.
    let i = next();
    let k = lab.cert(&ca, &["-I", &i, "-n", &format!("x,{u}"), "-V", "-5m:+1h"]);
    let out = lab.accepted("accepted", &user, &k, &[], "echo certified");
    assert_eq!(out, "certified\n");
    // Expired; not yet valid; another principal; a CA nobody trusts.
    let i = next();
    let k = lab.cert(&ca, &["-I", &i, "-n", u, "-V", "20200101:20200102"]);
    lab.refused("expired", &user, &k, "Certificate invalid: expired");
    let i = next();
    let k = lab.cert(&ca, &["-I", &i, "-n", u, "-V", "+1d:+2d"]);
    lab.refused(
        "not yet valid",
        &user,
        &k,
        "Certificate invalid: not yet valid",
    );
    let i = next();
    let k = lab.cert(&ca, &["-I", &i, "-n", "someone-else"]);
    lab.refused(
        "wrong principal",
        &user,
        &k,
        "Certificate invalid: name is not a listed principal",
    );
    let i = next();
    let k = lab.cert(&other_ca, &["-I", &i, "-n", u]);
    lab.refused("untrusted CA", &user, &k, NOT_LISTED);

    // AuthorizedPrincipalsFile: its principals, not the user's name; its
    // options apply.
    let i = next();
    let k = lab.cert(&ca, &["-I", &i, "-n", "ops"]);
    assert_eq!(
        lab.accepted("principals file", &with_file, &k, &[], "echo ops-in"),
        "ops-in\n"
    );
    let i = next();
    let k = lab.cert(&ca, &["-I", &i, "-n", "deploy"]);
    lab.no_pty("principals file options", &with_file, &k);
    let i = next();
    let k = lab.cert(&ca, &["-I", &i, "-n", &with_file.name]);
    lab.refused(
        "principals file without the user's principal",
        &with_file,
        &k,
        "Certificate does not contain an authorized principal",
    );

    // cert-authority,principals= in authorized_keys.
    let i = next();
    let k = lab.cert(&other_ca, &["-I", &i, "-n", "ci"]);
    assert_eq!(
        lab.accepted("cert-authority line", &with_line, &k, &[], "echo ca-line"),
        "ca-line\n"
    );
    let i = next();
    let k = lab.cert(&other_ca, &["-I", &i, "-n", &with_line.name]);
    lab.refused(
        "cert-authority line, principal not listed",
        &with_line,
        &k,
        "Certificate does not contain an authorized principal",
    );

    // Critical options and extensions.
    let i = next();
    let k = lab.cert(&ca, &["-I", &i, "-n", u, "-O", "force-command=echo forced"]);
    assert_eq!(
        lab.accepted("force-command", &user, &k, &[], "echo asked"),
        "forced\n"
    );
    let i = next();
    let k = lab.cert(
        &ca,
        &["-I", &i, "-n", u, "-O", "source-address=198.18.0.0/15"],
    );
    lab.refused(
        "source-address",
        &user,
        &k,
        "Refused by certificate options",
    );
    assert!(
        lab.server.log().contains(&format!(
            "Authentication tried for {u} with valid certificate but not from a permitted \
             source address (127.0.0.1)"
        )),
        "source-address: no reason logged"
    );
    let i = next();
    let k = lab.cert(
        &ca,
        &[
            "-I",
            &i,
            "-n",
            u,
            "-O",
            "source-address=198.18.0.0/15,127.0.0.1/32",
        ],
    );
    lab.accepted("source-address admitting", &user, &k, &[], "true");
    let i = next();
    let k = lab.cert(&ca, &["-I", &i, "-n", u, "-O", "no-pty"]);
    lab.no_pty("no-pty", &user, &k);
    let i = next();
    let k = lab.cert(&ca, &["-I", &i, "-n", u]);
    let out = lab.accepted("permit-pty", &user, &k, &["-tt"], "tty; true");
    assert!(out.contains("/dev/pts/"), "permit-pty: {out:?}");
    let target = greeter();
    let w = format!("127.0.0.1:{target}");
    let i = next();
    let k = lab.cert(&ca, &["-I", &i, "-n", u]);
    let out = lab.ssh(&user, &k, &["-W", &w], "");
    assert!(
        text(&out.stdout).contains("hello-through-forward"),
        "permit-port-forwarding: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let i = next();
    let k = lab.cert(&ca, &["-I", &i, "-n", u, "-O", "no-port-forwarding"]);
    let out = lab.ssh(&user, &k, &["-W", &w], "");
    assert!(
        !text(&out.stdout).contains("hello-through-forward")
            && text(&out.stderr).contains("administratively prohibited"),
        "no-port-forwarding: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let i = next();
    let k = lab.cert(
        &ca,
        &["-I", &i, "-n", u, "-O", "critical:made-up@example.test=1"],
    );
    lab.refused(
        "unknown critical option",
        &user,
        &k,
        "Certificate critical option \"made-up@example.test\" is not supported",
    );
    // AuthenticationMethods publickey,publickey: a certificate and its own
    // key are one key (refused); with another key it is two.
    let t = two_keys.name.as_str();
    let i = next();
    let k = lab.cert(&ca, &["-I", &i, "-n", t]);
    let own = fs::read_to_string(format!("{}.pub", k.display())).unwrap();
    two_keys.authorize_key(&own);
    let out = lab.ssh(&two_keys, &k, &[], "echo both");
    assert!(
        !out.status.success(),
        "a certificate and its own key passed as two keys: {}",
        text(&out.stderr)
    );
    let (other, other_pub) = ssh_keygen(lab.dir.path(), "ed25519", "");
    two_keys.authorize_key(&other_pub);
    let other = other.display().to_string();
    let out = lab.ssh(&two_keys, &k, &["-i", &other], "echo both");
    assert_eq!(
        text(&out.stdout),
        "both\n",
        "a certificate and another key: {}",
        text(&out.stderr)
    );
    report(
        "certs",
        "publickey,publickey: the certificate's own key refused, another key accepted",
    );
    // CASignatureAlgorithms has rsa-sha2-512 but not rsa-sha2-256.
    let i = next();
    let k = lab.cert(&rsa_ca, &["-I", &i, "-n", u, "-t", "rsa-sha2-512"]);
    lab.accepted("rsa-sha2-512 CA signature", &user, &k, &[], "true");
    let i = next();
    let k = lab.cert(&rsa_ca, &["-I", &i, "-n", u, "-t", "rsa-sha2-256"]);
    lab.refused(
        "rsa-sha2-256 CA signature",
        &user,
        &k,
        "with signature type rsa-sha2-256",
    );
}

/// HostCertificate: resshd offers the certificate of its P-384 host key;
/// stock ssh, whose known_hosts has only an `@cert-authority` line for the
/// host CA (StrictHostKeyChecking yes), accepts it and logs in, also across
/// rekeys (the session worker offers the certificate again). A certificate
/// for another host name, and one the CA did not sign, are refused.
#[test]
fn host_certificate_accepted_by_stock_ssh() {
    let dir = TempDir::new("e2e-hostcert");
    let (host_ca, host_ca_pub) = ssh_keygen(dir.path(), "ed25519", "");
    let (other_ca, _) = ssh_keygen(dir.path(), "ed25519", "");
    let (host_key, _) = ssh_keygen(dir.path(), "ecdsa-384", "");
    let (cert, _) = ssh_keygen_sign(
        &host_ca,
        &host_key,
        &["-h", "-I", "resshd-host", "-n", "127.0.0.1"],
    );
    let user = TestUser::create("e2ehc");
    let (key, key_pub) = ssh_keygen(dir.path(), "ed25519", "");
    user.authorize_key(&key_pub);
    let login = |what: &str, server: &Resshd, ssh_extra: &[&str]| {
        let known_hosts = dir.join(format!("known_hosts-{}", server.port()));
        fs::write(
            &known_hosts,
            format!(
                "@cert-authority [127.0.0.1]:{} {host_ca_pub}\n",
                server.port()
            ),
        )
        .unwrap();
        let cfg = dir.join(format!("ssh_config-{}", server.port()));
        write_client_config(
            &cfg,
            &user.name,
            &key,
            &known_hosts,
            "127.0.0.1",
            server.port(),
            "",
        );
        let out = run_timeout(
            Command::new(require_cmd("ssh"))
                .arg("-F")
                .arg(&cfg)
                .args(["-v"])
                .args(ssh_extra)
                .args(["server", "head -c 1000000 /dev/zero"]),
            T,
        );
        report("certs", &format!("{what}: ssh exit {}", out.status));
        out
    };
    let config = |cert: &Path| {
        format!(
            "HostKey {}\nHostCertificate {}\n",
            host_key.display(),
            cert.display()
        )
    };
    let server = Resshd::start(&ressh_bin().with_file_name("resshd"), &config(&cert));
    // A rekey every 100 KB: the session worker signs with the certified key
    // and sends the certificate again.
    let out = login("host certificate", &server, &["-o", "RekeyLimit=100K"]);
    let err = text(&out.stderr);
    assert!(
        out.status.success() && out.stdout.len() == 1_000_000,
        "ssh refused resshd's host certificate: {}\n{}\n{err}\nresshd:\n{}",
        out.status,
        out.stdout.len(),
        server.log()
    );
    assert!(
        err.contains("Server host certificate: ecdsa-sha2-nistp384-cert-v01@openssh.com")
            && err.contains("Host '[127.0.0.1]:")
            && err.contains("is known and matches the ECDSA-CERT host certificate"),
        "ssh did not check the certificate: {err}"
    );
    assert!(
        err.matches("SSH2_MSG_KEXINIT received").count() >= 2,
        "no rekey happened: {err}"
    );
    drop(server);

    // Not signed by the trusted CA, or for another name: refused.
    for (what, ca, name) in [
        ("another CA", &other_ca, "127.0.0.1"),
        ("another host name", &host_ca, "elsewhere.example"),
    ] {
        let k2 = dir.join(format!("host-{}", name.len()));
        fs::copy(&host_key, &k2).unwrap();
        fs::copy(
            format!("{}.pub", host_key.display()),
            format!("{}.pub", k2.display()),
        )
        .unwrap();
        let (cert2, _) = ssh_keygen_sign(ca, &k2, &["-h", "-I", "bad", "-n", name]);
        let server = Resshd::start(&ressh_bin().with_file_name("resshd"), &config(&cert2));
        let out = login(what, &server, &[]);
        assert!(
            !out.status.success() && text(&out.stderr).contains("Host key verification failed"),
            "{what}: ssh accepted: {} bytes\n{}",
            out.stdout.len(),
            text(&out.stderr)
        );
    }
}

/// The kex worker is where untrusted bytes are decoded, so an attacker may
/// own it (played by `src/bin/hostile-kex.rs`, installed as resshd-kex of a
/// copy of resshd). It skips the key exchange and sends the monitor
/// publickey requests, each correctly signed with the user's key over the
/// session id the monitor knows: a certificate of the trusted CA whose
/// principal was rewritten to the user's name (the CA's signature no
/// longer holds), the certified key's plain blob under a certificate
/// algorithm, the certificate under the plain key's algorithm, and a
/// certificate of an untrusted CA for a key authorized_keys lists as a
/// plain key. The monitor refuses them all; the genuine certificate, sent
/// last by the same worker, is accepted (the harness works).
#[test]
fn a_lying_kex_worker_is_not_believed_about_certificates() {
    let dir = TempDir::new("e2e-certliar");
    let bin = dir.join("bin");
    fs::create_dir(&bin).unwrap();
    let built = ressh_bin();
    for (from, to) in [
        ("resshd", "resshd"),
        ("resshd-session", "resshd-session"),
        ("resshd-kex", "resshd-kex.real"),
    ] {
        fs::copy(built.with_file_name(from), bin.join(to)).unwrap();
    }
    fs::copy(env!("CARGO_BIN_EXE_hostile-kex"), bin.join("resshd-kex")).unwrap();
    let (ca, ca_pub) = ssh_keygen(dir.path(), "ed25519", "");
    let (rogue_ca, _) = ssh_keygen(dir.path(), "ed25519", "");
    let cas = dir.join("user_ca.pub");
    fs::write(&cas, format!("{ca_pub}\n")).unwrap();
    let user = TestUser::create("e2ecl");
    let u = user.name.as_str();
    // The same length as the user's name, to be overwritten by it.
    let other = "z".repeat(u.len());
    let (key, key_pub) = ssh_keygen(dir.path(), "ed25519", "");
    user.authorize_key(&key_pub);
    let blob_of = |line: &str| {
        let b64 = line.split_whitespace().nth(1).unwrap();
        openssl::base64::decode_block(b64).unwrap()
    };
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let cert_for = |ca: &Path, principal: &str| {
        let k = dir.join(format!(
            "k-{principal}-{}",
            ca.file_name().unwrap().to_string_lossy()
        ));
        fs::copy(&key, &k).unwrap();
        fs::copy(
            format!("{}.pub", key.display()),
            format!("{}.pub", k.display()),
        )
        .unwrap();
        blob_of(&ssh_keygen_sign(ca, &k, &["-I", "liar", "-n", principal]).1)
    };
    let genuine = cert_for(&ca, u);
    let mut forged = cert_for(&ca, &other);
    let at = forged
        .windows(other.len())
        .position(|w| w == other.as_bytes())
        .unwrap();
    forged[at..at + u.len()].copy_from_slice(u.as_bytes());
    let rogue = cert_for(&rogue_ca, u);
    let plain = blob_of(&key_pub);
    let cert_alg = "ssh-ed25519-cert-v01@openssh.com";
    let k = key.display();
    let cases = [
        ("forged-principal", cert_alg, &forged),
        ("plain-blob-as-cert", cert_alg, &plain),
        ("cert-as-plain", "ssh-ed25519", &genuine),
        ("untrusted-ca-plain-line", cert_alg, &rogue),
        ("genuine", cert_alg, &genuine),
    ];
    let script: String = cases
        .iter()
        .map(|(case, alg, blob)| format!("{case} {u} {alg} {} {k}\n", hex(blob)))
        .collect();
    fs::write(bin.join("hostile-kex.script"), script).unwrap();
    let server = Resshd::start(
        &bin.join("resshd"),
        &format!("TrustedUserCAKeys {}\n", cas.display()),
    );
    let _conn = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    // Until the last verdict, or an acceptance (after which the monitor
    // takes further requests for a broken protocol and ends the worker).
    let log = server.wait_log("the hostile kex worker's last verdict", T, |l| {
        l.contains("hostile-kex: genuine") || l.contains(" Accept\n")
    });
    for (case, _, _) in &cases[..4] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("hostile-kex: {case} ")))
            .unwrap_or_else(|| panic!("no verdict for {case}:\n{log}"));
        assert!(
            line.contains("Reject") && !line.contains("Accept"),
            "{case}: {line}"
        );
        report("certs", &format!("hostile kex worker: {case}: refused"));
    }
    let line = log
        .lines()
        .find(|l| l.contains("hostile-kex: genuine"))
        .unwrap();
    assert!(line.ends_with("hostile-kex: genuine Accept"), "{line}");
}

/// A user certificate is judged again at every reconnect: ressh logs in with
/// a certificate valid for about 30 s (its plain key is in no
/// authorized_keys, so only the certificate admits the user); a cut while it
/// is valid resumes; after it has expired, the next cut's reconnect is
/// refused, with the reason in resshd's log, and ressh gives up.
#[test]
fn a_certificate_expired_while_detached_resumes_nothing() {
    let files = TempDir::new("e2e-cert-resume");
    let (ca, _) = ssh_keygen(files.path(), "ed25519", "");
    let lab = Lab::new(
        "certres",
        &format!("TrustedUserCAKeys {}.pub\nDetachTimeout 60\n", ca.display()),
    );
    let user = lab.user().name.clone();
    let signed = std::time::Instant::now();
    // ressh offers <key>-cert.pub beside its key, as ssh does.
    ssh_keygen_sign(
        &ca,
        &lab.login.key,
        &["-I", "resume-test", "-n", &user, "-V", "-1m:+30s"],
    );
    fs::write(lab.user().home.join(".ssh/authorized_keys"), "").unwrap();
    let stop = lab.user().home.join("stop-counter");
    let mut client = Client::spawn(&mut lab.ressh(&["server", &counter_cmd(&stop, 1_000_000)]));
    client.wait_lines(20, T);
    assert!(
        lab.log()
            .contains("Accepted certificate ID \"resume-test\""),
        "{}",
        lab.log()
    );
    // A cut while the certificate is valid: the session resumes.
    lab.net.kill_tcp(PORT);
    lab.wait_log("the reconnect", T, |l| reconnects(l) == 1);
    let seen = client.line_count();
    client.wait_lines(seen + 10, T);
    // Once it has expired, another cut: the reconnect is refused.
    let expired = Duration::from_secs(31).saturating_sub(signed.elapsed());
    std::thread::sleep(expired);
    lab.net.kill_tcp(PORT);
    let refused = |l: &str| {
        l.lines().any(|l| {
            l.contains(" refused: certificate ID \"resume-test\"") && l.contains(" expired")
        })
    };
    lab.wait_log("the reconnect to be refused", T, refused);
    let status = client.wait_exit(Duration::from_secs(90));
    assert!(!status.success(), "ressh: {status}\n{}", client.stderr());
    assert_eq!(reconnects(&lab.log()), 1, "{}", lab.log());
    report(
        "certs",
        "a certificate expired while detached: the reconnect refused, ressh gave up",
    );
}
