//! OpenSSH certificates in ressh against Debian's stock sshd, made at test
//! time by stock `ssh-keygen -s`:
//!
//! - user certificates (sshd's TrustedUserCAKeys, the key itself in no
//!   authorized_keys): from `<identity>-cert.pub` beside the key, from
//!   CertificateFile (with `%` tokens, an RSA key: the rsa-sha2 certificate
//!   algorithms), from ssh-agent (`ssh-add` of key and certificate, no file
//!   left); an expired one is refused by sshd, and ressh goes on to the
//!   next identity or fails clearly;
//! - host certificates (sshd's HostCertificate) trusted through a
//!   `@cert-authority` line alone (user or global known_hosts file) with
//!   StrictHostKeyChecking yes, also under HostKeyAlias; refused for
//!   another principal, expired, with a critical option, signed with an
//!   algorithm CASignatureAlgorithms leaves out, signed by a CA not
//!   listed, and when the host key or the CA is `@revoked`; a certificate
//!   that is not trusted falls back to the plain key in known_hosts, as
//!   ssh does.

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};

use ressh_testkit::ssh_keygen_sign;

/// `ssh -v` output of a login that must succeed, with sshd's log on failure.
fn login(env: &Env, config: &Path, what: &str, agent: Option<&Path>) -> String {
    let mut c = env.ressh_with(config);
    if let Some(sock) = agent {
        c.env("SSH_AUTH_SOCK", sock);
    }
    c.args(["-v", "127.0.0.1", "id", "-un"]);
    let out = run_timeout(&mut c, T);
    check(&out, env, what);
    assert_eq!(text(&out.stdout), format!("{}\n", env.user.name), "{what}");
    text(&out.stderr)
}

/// Waits for sshd to log that it accepted the certificate with `key_id`
/// (sshd: "Accepted publickey for USER ... ED25519-CERT SHA256:... ID
/// <key_id> (serial N) CA ...").
fn accepted_cert(env: &Env, key_type: &str, key_id: &str) {
    let user = env.user.name.clone();
    wait_for(
        &format!("sshd accepting certificate {key_id}"),
        T,
        || {
            env.server
                .log()
                .lines()
                .any(|l| {
                    l.contains(&format!("Accepted publickey for {user} "))
                        && l.contains(&format!("{key_type}-CERT SHA256:"))
                        && l.contains(&format!("ID {key_id} (serial"))
                })
                .then_some(())
        },
        || env.server.log(),
    );
}

fn mv(from: &Path, to: &Path) {
    fs::rename(from, to).unwrap_or_else(|e| panic!("{} -> {}: {e}", from.display(), to.display()));
}

/// `<private>-cert.pub`.
fn cert_path(private: &Path) -> PathBuf {
    let mut p = private.as_os_str().to_owned();
    p.push("-cert.pub");
    PathBuf::from(p)
}

#[test]
fn user_certificates_from_files_and_agent() {
    let cadir = TempDir::new("user-ca");
    let (ca, _) = ssh_keygen(cadir.path(), "ed25519", "");
    let env = Env::sshd(&format!("TrustedUserCAKeys {}.pub", ca.display()));
    let name = env.user.name.clone();
    let keys = TempDir::new("user-certs");
    let valid = ["-n", name.as_str(), "-V", "-5m:+1h"];
    let config = |tag: &str, extra: &str| env.alt_config(tag, &format!("Host *\n{extra}"), false);

    // <identity>-cert.pub beside the key. The key alone is refused (it is
    // in no authorized_keys): the certificate is what gets in.
    let (k1, _) = ssh_keygen(keys.path(), "ecdsa", "");
    let (c1, _) = ssh_keygen_sign(&ca, &k1, &[&["-I", "beside"][..], &valid].concat());
    let cfg = config("beside", &format!("    IdentityFile {}\n", k1.display()));
    let err = login(&env, &cfg, "certificate beside the key", None);
    assert!(
        err.contains(&format!(
            "Offering public key: {} ecdsa-sha2-nistp256-cert-v01@openssh.com",
            k1.display()
        )),
        "{err}"
    );
    accepted_cert(&env, "ECDSA", "beside");
    let hidden = keys.join("hidden-cert.pub");
    mv(&c1, &hidden);
    let out = run_timeout(env.ressh_with(&cfg).args(["127.0.0.1", "true"]), T);
    assert_eq!(out.status.code(), Some(255), "the key alone got in");
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );

    // CertificateFile, with tokens; an RSA key: the certificate is
    // offered as rsa-sha2-512-cert-v01 (sshd lists rsa-sha2-512).
    let (k2, _) = ssh_keygen(keys.path(), "rsa", "");
    let (c2, _) = ssh_keygen_sign(&ca, &k2, &[&["-I", "certfile"][..], &valid].concat());
    mv(&c2, &keys.join(format!("cert-of-{name}.pub")));
    let cfg = config(
        "certfile",
        &format!(
            "    IdentityFile {}\n    CertificateFile {}/cert-of-%r.pub\n",
            k2.display(),
            keys.path().display()
        ),
    );
    let err = login(&env, &cfg, "CertificateFile", None);
    assert!(
        err.contains("(algorithm rsa-sha2-512-cert-v01@openssh.com)"),
        "{err}"
    );
    accepted_cert(&env, "RSA", "certfile");

    // ssh-agent: ssh-add takes the key and the certificate beside it; no
    // file is left, ressh signs through the agent.
    let agent = SshAgent::start();
    let (k3, _) = ssh_keygen(keys.path(), "ed25519", "");
    let (c3, _) = ssh_keygen_sign(&ca, &k3, &[&["-I", "agent"][..], &valid].concat());
    agent.add(&k3);
    for f in [
        k3.clone(),
        c3,
        PathBuf::from(format!("{}.pub", k3.display())),
    ] {
        fs::remove_file(&f).unwrap();
    }
    let cfg = config(
        "agent",
        "    IdentityFile none\n    IdentityAgent SSH_AUTH_SOCK\n    IdentitiesOnly no\n",
    );
    login(&env, &cfg, "certificate in ssh-agent", Some(&agent.sock));
    accepted_cert(&env, "ED25519", "agent");

    // An expired certificate: sshd refuses it; alone, ressh fails clearly;
    // with the test's authorized key listed after it, ressh goes on to it.
    let (k4, _) = ssh_keygen(keys.path(), "ed25519", "");
    ssh_keygen_sign(
        &ca,
        &k4,
        &["-I", "expired", "-n", &name, "-V", "20200101:20200102"],
    );
    let cfg = config("expired", &format!("    IdentityFile {}\n", k4.display()));
    let out = run_timeout(env.ressh_with(&cfg).args(["-v", "127.0.0.1", "true"]), T);
    assert_eq!(out.status.code(), Some(255));
    let err = text(&out.stderr);
    assert!(
        err.contains("ssh-ed25519-cert-v01@openssh.com"),
        "not offered: {err}"
    );
    assert!(
        err.contains(&format!("{name}@127.0.0.1: Permission denied (publickey")),
        "{err}"
    );
    wait_for(
        "sshd refusing the expired certificate",
        T,
        || env.server.log().contains("expired").then_some(()),
        || env.server.log(),
    );
    let cfg = config(
        "expired-then-key",
        &format!(
            "    IdentityFile {}\n    IdentityFile {}\n",
            k4.display(),
            env.key.display()
        ),
    );
    let err = login(&env, &cfg, "expired certificate, then a key", None);
    let offered = |what: &str| {
        err.find(what)
            .unwrap_or_else(|| panic!("no {what:?} in {err}"))
    };
    assert!(
        offered("ssh-ed25519-cert-v01@openssh.com")
            < offered(&format!("{} ssh-ed25519 ", env.key.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("using publickey ({})", env.key.display())),
        "{err}"
    );
}

/// A stock sshd whose first host key `host_key` has the certificate
/// `<host_key>-cert.pub` (rewritten by the test and reloaded).
struct HostCa {
    env: Env,
    dir: TempDir,
    ca: PathBuf,
    host_key: PathBuf,
}

impl HostCa {
    fn new() -> HostCa {
        let dir = TempDir::new("host-ca");
        let (ca, _) = ssh_keygen(dir.path(), "ed25519", "");
        let (host_key, _) = ssh_keygen(dir.path(), "ed25519", "");
        ssh_keygen_sign(&ca, &host_key, &["-h", "-I", "host", "-n", "127.0.0.1"]);
        let env = Env::sshd(&format!(
            "HostKey {0}\nHostCertificate {0}-cert.pub",
            host_key.display()
        ));
        HostCa {
            env,
            dir,
            ca,
            host_key,
        }
    }

    /// Certifies the host key with `args` (`-h` added) and reloads sshd.
    fn certify(&mut self, ca: &Path, args: &[&str]) {
        fs::remove_file(cert_path(&self.host_key)).unwrap();
        ssh_keygen_sign(
            ca,
            &self.host_key,
            &[&["-h", "-I", "host"][..], args].concat(),
        );
        match &mut self.env.server {
            Server::Sshd(s) => s.reload(),
            Server::Resshd(_) => unreachable!("stock sshd"),
        }
    }

    fn line(&self, key: &Path) -> String {
        fs::read_to_string(format!("{}.pub", key.display()))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Sets known_hosts to `text` and connects with StrictHostKeyChecking
    /// yes and `extra` options.
    fn connect(&self, known_hosts: &str, extra: &[&str]) -> std::process::Output {
        fs::write(&self.env.known_hosts, known_hosts).unwrap();
        let mut c = self.env.ressh();
        c.args(extra).args(["-v", "127.0.0.1", "echo", "in"]);
        run_timeout(&mut c, T)
    }

    fn accepted(&self, known_hosts: &str, extra: &[&str], what: &str) -> String {
        let out = self.connect(known_hosts, extra);
        check(&out, &self.env, what);
        assert_eq!(text(&out.stdout), "in\n", "{what}");
        text(&out.stderr)
    }

    fn refused(&self, known_hosts: &str, extra: &[&str], what: &str) -> String {
        let out = self.connect(known_hosts, extra);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(255), "{what} was accepted:\n{err}");
        assert!(text(&out.stdout).is_empty(), "{what}");
        assert!(
            err.contains("Host key verification failed"),
            "{what}: {err}"
        );
        err
    }
}

#[test]
fn host_certificates_trusted_through_cert_authority_only() {
    let mut h = HostCa::new();
    let ca_line = h.line(&h.ca);
    let trusted = format!("@cert-authority [127.0.0.1]:* {ca_line}\n");

    // Trusted through the CA alone (no plain key known), strict checking.
    let err = h.accepted(&trusted, &[], "a host certificate of a listed CA");
    assert!(
        err.contains("Server host certificate: ssh-ed25519-cert-v01@openssh.com"),
        "{err}"
    );
    assert!(
        err.contains("matches the ED25519-CERT host certificate"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(&h.env.known_hosts).unwrap(),
        trusted,
        "known_hosts changed"
    );
    // The same from the global known_hosts file.
    let global = h.dir.join("ssh_known_hosts");
    fs::write(&global, &trusted).unwrap();
    let opt = format!("GlobalKnownHostsFile={}", global.display());
    h.accepted("", &["-o", &opt], "a CA in the global known_hosts file");

    // Another principal: refused, and not accepted as a plain key either.
    h.certify(&h.ca.clone(), &["-n", "other.example"]);
    let err = h.refused(&trusted, &[], "a host certificate for another principal");
    assert!(
        err.contains("Certificate invalid: name is not a listed principal"),
        "{err}"
    );
    // ... under HostKeyAlias other.example (and its @cert-authority line) it is right.
    let alias = format!("@cert-authority other.example {ca_line}\n");
    h.accepted(
        &alias,
        &["-o", "HostKeyAlias=other.example"],
        "HostKeyAlias as principal",
    );
    // ... and with the plain host key known, ssh's fall back to the plain key.
    let plain = format!(
        "{trusted}[127.0.0.1]:{} {}\n",
        h.env.server.port(),
        h.line(&h.host_key)
    );
    let err = h.accepted(&plain, &[], "the plain key of an untrusted certificate");
    assert!(
        err.contains("No matching CA found. Retry with plain key"),
        "{err}"
    );
    assert!(err.contains("matches the ED25519 host key"), "{err}");

    // Expired: refused.
    h.certify(
        &h.ca.clone(),
        &["-n", "127.0.0.1", "-V", "20200101:20200102"],
    );
    let err = h.refused(&trusted, &[], "an expired host certificate");
    assert!(err.contains("Certificate invalid: expired"), "{err}");

    // An unknown critical option: refused (ssh knows none for hosts).
    h.certify(
        &h.ca.clone(),
        &["-n", "127.0.0.1", "-O", "critical:frob@example.com=1"],
    );
    let err = h.refused(&trusted, &[], "a host certificate with a critical option");
    assert!(
        err.contains("Certificate contains unsupported critical options"),
        "{err}"
    );

    // Signed by the listed CA with an algorithm CASignatureAlgorithms
    // leaves out: refused. The server's key id, with a terminal escape in
    // it, reaches -vv output without its control characters.
    h.certify(&h.ca.clone(), &["-n", "127.0.0.1", "-I", "\x1b[2Jid"]);
    let err = h.refused(
        &trusted,
        &["-vv", "-o", "CASignatureAlgorithms=rsa-sha2-512"],
        "a host certificate signed with a disallowed algorithm",
    );
    assert!(
        err.contains("Certificate signed with disallowed algorithm"),
        "{err}"
    );
    assert!(
        err.contains("ID \"[2Jid\"") && !err.contains('\x1b'),
        "{err}"
    );

    // A CA that is not listed: refused.
    let (other_ca, _) = ssh_keygen(h.dir.path(), "ed25519", "");
    h.certify(&other_ca, &["-n", "127.0.0.1"]);
    let err = h.refused(&trusted, &[], "a host certificate of an unlisted CA");
    assert!(err.contains("No matching CA found"), "{err}");

    // Valid again; the host key @revoked, then the CA @revoked: refused with
    // ssh's warning, even with the plain key known.
    h.certify(&h.ca.clone(), &["-n", "127.0.0.1"]);
    h.accepted(&trusted, &[], "the certificate made valid again");
    for (what, revoked) in [("host key", h.line(&h.host_key)), ("CA", ca_line.clone())] {
        let kh = format!("{plain}@revoked * {revoked}\n");
        let err = h.refused(&kh, &[], &format!("a revoked {what}"));
        assert!(
            err.contains("WARNING: REVOKED HOST KEY DETECTED!"),
            "{what}: {err}"
        );
        assert!(err.contains("is marked as revoked"), "{what}: {err}");
    }
}
