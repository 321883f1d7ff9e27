use std::path::{Path, PathBuf};

use proptest::prelude::*;
use ressh_testkit::{ssh_keygen, ssh_keygen_sign, TempDir};

use super::*;
use crate::keys::PrivateKey;

/// A certificate made once by `ssh-keygen -s` (OpenSSH 9.2), pinned:
///   ssh-keygen -t ed25519 -f ca; ssh-keygen -t ed25519 -f user
///   TZ=UTC ssh-keygen -s ca -I pinned-id -z 42 -n alice,bob
///     -V 20200101:20300101 -O force-command=/bin/true
///     -O source-address=198.18.0.0/15 -O no-pty user.pub
const PINNED: &str = "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29tAAAAIIuPkbwBC8ldhJW7giEIoLwaARjRxOYzMlhD5ZwmSWBpAAAAINSujYO/HSWleWRGDVzMSWzUJh/TiVPJ8Yc4NYTyWMkZAAAAAAAAACoAAAABAAAACXBpbm5lZC1pZAAAABAAAAAFYWxpY2UAAAADYm9iAAAAAF4L4QAAAAAAcNvYgAAAAEkAAAANZm9yY2UtY29tbWFuZAAAAA0AAAAJL2Jpbi90cnVlAAAADnNvdXJjZS1hZGRyZXNzAAAAEQAAAA0xOTguMTguMC4wLzE1AAAAcAAAABVwZXJtaXQtWDExLWZvcndhcmRpbmcAAAAAAAAAF3Blcm1pdC1hZ2VudC1mb3J3YXJkaW5nAAAAAAAAABZwZXJtaXQtcG9ydC1mb3J3YXJkaW5nAAAAAAAAAA5wZXJtaXQtdXNlci1yYwAAAAAAAAAAAAAAMwAAAAtzc2gtZWQyNTUxOQAAACDMyoOUSBJ9YqZbZZmcdoWmF1GHqyH/saX4U+8ZPqaMXQAAAFMAAAALc3NoLWVkMjU1MTkAAABARrbSat4y3npkJj05q/yjpNd87ha0NFSoZr7vsmtzrWpOu06GITC5QedjkrFrlmgtLPP9OLdeTm6gMrLVVdVpDg== user";
const PINNED_CA: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMzKg5RIEn1ipltlmZx2haYXUYerIf+xpfhT7xk+poxd ca";
const PINNED_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINSujYO/HSWleWRGDVzMSWzUJh/TiVPJ8Yc4NYTyWMkZ user";

fn pinned_blob() -> Vec<u8> {
    base64::decode_block(PINNED.split(' ').nth(1).unwrap()).unwrap()
}

fn names(v: &[CertOption]) -> Vec<&str> {
    v.iter().map(|o| o.name.as_str()).collect()
}

fn pub_key(private: &Path) -> PublicKey {
    let line = std::fs::read_to_string(format!("{}.pub", private.display())).unwrap();
    PublicKey::from_openssh(&line).unwrap().0
}

fn private_key(path: &Path) -> PrivateKey {
    PrivateKey::from_openssh_pem(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn pinned_certificate_decodes() {
    let (cert, comment) = Certificate::from_openssh(PINNED).unwrap();
    assert_eq!(comment, "user");
    assert_eq!(cert.type_name(), "ssh-ed25519-cert-v01@openssh.com");
    assert_eq!(cert.key, PublicKey::from_openssh(PINNED_KEY).unwrap().0);
    assert_eq!(
        cert.signature_key,
        PublicKey::from_openssh(PINNED_CA).unwrap().0
    );
    assert_eq!(cert.signature_algorithm, "ssh-ed25519");
    assert_eq!(cert.serial, 42);
    assert_eq!(cert.kind, CertKind::User);
    assert_eq!(cert.key_id, "pinned-id");
    assert_eq!(cert.principals, ["alice", "bob"]);
    assert_eq!(cert.valid_after, 1_577_836_800);
    assert_eq!(cert.valid_before, 1_893_456_000);
    assert_eq!(cert.nonce.len(), 32);
    assert_eq!(
        names(&cert.critical_options),
        ["force-command", "source-address"]
    );
    assert_eq!(
        cert.critical_option("force-command")
            .unwrap()
            .string_value()
            .unwrap(),
        "/bin/true"
    );
    assert_eq!(
        cert.critical_option("source-address")
            .unwrap()
            .string_value()
            .unwrap(),
        "198.18.0.0/15"
    );
    // -O no-pty removed permit-pty from the default extensions.
    assert_eq!(
        names(&cert.extensions),
        [
            "permit-X11-forwarding",
            "permit-agent-forwarding",
            "permit-port-forwarding",
            "permit-user-rc"
        ]
    );
    assert!(!cert.has_extension("permit-pty"));
    assert!(cert.extensions.iter().all(|o| o.data.is_empty()));
    assert_eq!(cert.blob(), &pinned_blob()[..]);
    assert_eq!(cert.to_openssh("user"), PINNED);
}

#[test]
fn pinned_certificate_authority_checks() {
    let (cert, _) = Certificate::from_openssh(PINNED).unwrap();
    let (after, before) = (cert.valid_after, cert.valid_before);
    let check = |kind, name, require, now| cert.check_authority(kind, name, require, false, now);
    assert_eq!(check(CertKind::User, Some("alice"), true, after), Ok(()));
    assert_eq!(check(CertKind::User, Some("bob"), true, before - 1), Ok(()));
    assert_eq!(
        check(CertKind::User, Some("alice"), true, after - 1),
        Err("Certificate invalid: not yet valid")
    );
    assert_eq!(
        check(CertKind::User, Some("alice"), true, before),
        Err("Certificate invalid: expired")
    );
    assert_eq!(
        check(CertKind::User, Some("carol"), true, after),
        Err("Certificate invalid: name is not a listed principal")
    );
    // No glob matching for user principals.
    assert_eq!(
        check(CertKind::User, Some("ali*"), true, after),
        Err("Certificate invalid: name is not a listed principal")
    );
    assert_eq!(check(CertKind::User, None, true, after), Ok(()));
    assert_eq!(
        check(CertKind::Host, Some("alice"), true, after),
        Err("Certificate invalid: not a host certificate")
    );
}

/// Every single-bit change to a signed certificate is refused (decoding or
/// signature), as is every truncation and trailing byte; nothing panics.
#[test]
fn pinned_certificate_tampering_is_refused() {
    let blob = pinned_blob();
    for n in 0..blob.len() {
        assert!(Certificate::from_blob(&blob[..n]).is_err(), "truncated {n}");
    }
    let mut t = blob.clone();
    t.push(0);
    assert_eq!(Certificate::from_blob(&t), Err(Error::TrailingData));
    for i in 0..blob.len() {
        for bit in 0..8 {
            let mut b = blob.clone();
            b[i] ^= 1 << bit;
            assert!(Certificate::from_blob(&b).is_err(), "byte {i} bit {bit}");
        }
    }
    // The line's type must be the blob's.
    let other = PINNED.replacen("ssh-ed25519-cert", "ecdsa-sha2-nistp256-cert", 1);
    assert!(Certificate::from_openssh(&other).is_err());
    // A plain key is not a certificate.
    assert!(Certificate::from_openssh(PINNED_KEY).is_err());
}

/// The CA key, subject key and their certificate made by ssh-keygen.
struct Made {
    ca: PathBuf,
    key: PathBuf,
    cert: Certificate,
}

fn make(dir: &Path, ca_kind: &str, key_kind: &str, args: &[&str]) -> Made {
    let (ca, _) = ssh_keygen(dir, ca_kind, "");
    let (key, _) = ssh_keygen(dir, key_kind, "");
    let (_, line) = ssh_keygen_sign(&ca, &key, args);
    let cert = Certificate::from_openssh(&line).unwrap().0;
    Made { ca, key, cert }
}

/// Certificates of every key type signed by CAs of every type, made by
/// ssh-keygen: decoded, the CA signature verified, and a signature of the
/// certified key verified under the certificate's algorithms.
#[test]
fn ssh_keygen_certificates_of_every_type() {
    let dir = TempDir::new("cert");
    let kinds = ["ed25519", "ecdsa-256", "ecdsa-384", "ecdsa-521", "rsa-2048"];
    for (i, ca_kind) in kinds.iter().enumerate() {
        for key_kind in kinds {
            let serial = i.to_string();
            let m = make(
                dir.path(),
                ca_kind,
                key_kind,
                &[
                    "-I",
                    "id-x",
                    "-n",
                    "u1,u2",
                    "-z",
                    &serial,
                    "-V",
                    "always:forever",
                ],
            );
            let c = &m.cert;
            assert_eq!(c.key, pub_key(&m.key), "{ca_kind} -> {key_kind}");
            assert_eq!(c.signature_key, pub_key(&m.ca));
            assert_eq!(c.key_id, "id-x");
            assert_eq!(c.serial, i as u64);
            assert_eq!(c.principals, ["u1", "u2"]);
            assert_eq!((c.valid_after, c.valid_before), (0, u64::MAX));
            assert_eq!(c.kind, CertKind::User);
            assert!(c.critical_options.is_empty());
            assert_eq!(
                names(&c.extensions),
                [
                    "permit-X11-forwarding",
                    "permit-agent-forwarding",
                    "permit-port-forwarding",
                    "permit-pty",
                    "permit-user-rc"
                ]
            );
            // ssh-keygen signs with rsa-sha2-512 by default.
            let want_alg = match *ca_kind {
                "rsa-2048" => "rsa-sha2-512",
                _ => c.signature_key.key_type_name(),
            };
            assert_eq!(c.signature_algorithm, want_alg);
            assert_eq!(Certificate::from_blob(c.blob()).unwrap(), *c);

            let k = private_key(&m.key);
            for cert_alg in c.signature_algorithms() {
                let plain = plain_algorithm(cert_alg.as_bytes()).unwrap();
                let sig = k.sign(plain, b"data").unwrap();
                assert_eq!(
                    c.verify_detailed(cert_alg, b"data", &sig).unwrap().alg,
                    plain
                );
                assert!(c.verify_detailed(cert_alg, b"other", &sig).is_err());
                // A signature must name the algorithm the certificate's
                // algorithm stands for.
                for other in c.signature_algorithms() {
                    if other != cert_alg {
                        assert!(c.verify_detailed(other, b"data", &sig).is_err());
                    }
                }
                // A plain algorithm name is not a certificate algorithm.
                assert!(c.verify_detailed(plain, b"data", &sig).is_err());
            }
        }
    }
}

#[test]
fn host_certificates_and_wildcard_principals() {
    let dir = TempDir::new("cert");
    let m = make(
        dir.path(),
        "ed25519",
        "ecdsa",
        &["-h", "-I", "host", "-n", "*.example.test,exact.test"],
    );
    let c = &m.cert;
    assert_eq!(c.kind, CertKind::Host);
    // ssh-keygen gives host certificates no extensions.
    assert!(c.extensions.is_empty());
    let now = 1_800_000_000;
    let check = |name, wild| c.check_authority(CertKind::Host, Some(name), true, wild, now);
    assert_eq!(check("a.example.test", true), Ok(()));
    assert_eq!(check("exact.test", true), Ok(()));
    assert_eq!(check("exact.test", false), Ok(()));
    assert!(check("a.example.test", false).is_err());
    assert!(check("example.test", true).is_err());
    assert_eq!(
        c.check_authority(CertKind::User, Some("exact.test"), true, true, now),
        Err("Certificate invalid: not a user certificate")
    );
}

#[test]
fn critical_options_and_extensions_from_ssh_keygen() {
    let dir = TempDir::new("cert");
    let m = make(
        dir.path(),
        "ed25519",
        "ed25519",
        &[
            "-I",
            "opts",
            "-O",
            "clear",
            "-O",
            "force-command=echo hi",
            "-O",
            "source-address=198.18.0.1/32,127.0.0.1",
            "-O",
            "verify-required",
            "-O",
            "permit-pty",
            "-O",
            "no-touch-required",
            "-O",
            "critical:made-up@example.test=value",
            "-O",
            "extension:made-up-ext@example.test",
        ],
    );
    let c = &m.cert;
    assert!(c.principals.is_empty());
    assert_eq!(
        names(&c.critical_options),
        [
            "force-command",
            "made-up@example.test",
            "source-address",
            "verify-required"
        ]
    );
    assert_eq!(
        c.critical_option("force-command")
            .unwrap()
            .string_value()
            .unwrap(),
        "echo hi"
    );
    assert!(c
        .critical_option("verify-required")
        .unwrap()
        .data
        .is_empty());
    assert_eq!(
        names(&c.extensions),
        [
            "made-up-ext@example.test",
            "no-touch-required",
            "permit-pty"
        ]
    );
    // No principals: any name passes unless one is required.
    let now = 1_800_000_000;
    assert_eq!(
        c.check_authority(CertKind::User, Some("anyone"), false, false, now),
        Ok(())
    );
    assert_eq!(
        c.check_authority(CertKind::User, Some("anyone"), true, false, now),
        Err("Certificate lacks principal list")
    );
}

#[test]
fn ssh_keygen_validity_intervals() {
    let dir = TempDir::new("cert");
    let m = make(
        dir.path(),
        "ed25519",
        "ed25519",
        &["-I", "v", "-V", "-5m:+1h"],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let c = &m.cert;
    assert!(c.valid_after <= now && now < c.valid_before);
    assert!(c.valid_before - c.valid_after >= 3600);
    assert_eq!(
        c.check_authority(CertKind::User, None, false, false, now),
        Ok(())
    );
    assert_eq!(
        c.check_authority(CertKind::User, None, false, false, now + 3700),
        Err("Certificate invalid: expired")
    );
}

/// An RSA CA signing with SHA-1 ("ssh-rsa", `ssh-keygen -t ssh-rsa`) is
/// refused, as by OpenSSH 8.8 and later; its SHA-256 signature is not.
#[test]
fn sha1_rsa_ca_signatures_are_refused() {
    let dir = TempDir::new("cert");
    let (ca, _) = ssh_keygen(dir.path(), "rsa-2048", "");
    let (key, _) = ssh_keygen(dir.path(), "ed25519", "");
    let (_, line) = ssh_keygen_sign(&ca, &key, &["-I", "sha1", "-t", "ssh-rsa"]);
    assert_eq!(
        Certificate::from_openssh(&line).map(|_| ()),
        Err(Error::UnknownAlgorithm("ssh-rsa".into()))
    );
    let (_, line) = ssh_keygen_sign(&ca, &key, &["-I", "sha256", "-t", "rsa-sha2-256"]);
    let c = Certificate::from_openssh(&line).unwrap().0;
    assert_eq!(c.signature_algorithm, "rsa-sha2-256");
}

/// Security key certificates: ssh-keygen certifies a security key's public
/// key (only the CA's private key is needed).
#[test]
fn security_key_certificates() {
    let dir = TempDir::new("cert");
    let (ca, _) = ssh_keygen(dir.path(), "ed25519", "");
    for (kind, sk_name) in [
        ("ed25519", "sk-ssh-ed25519@openssh.com"),
        ("ecdsa", "sk-ecdsa-sha2-nistp256@openssh.com"),
    ] {
        let (plain, _) = ssh_keygen(dir.path(), kind, "");
        // The same key fields, then the application.
        let blob = pub_key(&plain).to_blob();
        let mut r = Reader::new(&blob);
        r.string().unwrap();
        let mut sk = Vec::new();
        sk.put_str(sk_name);
        while r.remaining() > 0 {
            sk.put_string(r.string().unwrap());
        }
        sk.put_string(b"ssh:");
        let sk = PublicKey::from_blob(&sk).unwrap();
        let key = dir.join(format!("sk-{kind}"));
        std::fs::write(format!("{}.pub", key.display()), sk.to_openssh("sk")).unwrap();
        let (_, line) = ssh_keygen_sign(&ca, &key, &["-I", "sk", "-n", "u"]);
        let c = Certificate::from_openssh(&line).unwrap().0;
        assert_eq!(c.key, sk);
        assert_eq!(c.type_name(), cert_type_name(sk.key_type()));
        assert!(line.starts_with(&format!("{} ", c.type_name())));
    }
}

/// A certificate signed (by `ca`) over what precedes the signature, fields
/// as given: for what ssh-keygen will not make.
fn forge(ca: &PrivateKey, ca_blob: &[u8], build: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    build(&mut v);
    v.put_string(&[]);
    v.put_string(ca_blob);
    let alg = ca.public_key().signature_algorithms()[0];
    let sig = ca.sign(alg, &v).unwrap();
    v.put_string(&sig);
    v
}

fn body(v: &mut Vec<u8>, kind: u32, principals: &[&str], crit: &[(&str, &[u8])]) {
    let key = PrivateKey::generate(KeyType::Ed25519).unwrap().public_key();
    let kb = key.to_blob();
    v.put_str("ssh-ed25519-cert-v01@openssh.com");
    v.put_string(b"nonce");
    v.extend_from_slice(&kb[4 + "ssh-ed25519".len()..]);
    v.put_u64(1);
    v.put_u32(kind);
    v.put_str("id");
    let mut p = Vec::new();
    for n in principals {
        p.put_str(n);
    }
    v.put_string(&p);
    v.put_u64(0);
    v.put_u64(u64::MAX);
    let mut c = Vec::new();
    for (n, d) in crit {
        c.put_str(n);
        c.put_string(d);
    }
    v.put_string(&c);
    v.put_string(&[]);
}

#[test]
fn forged_structures_are_refused() {
    let ca = PrivateKey::generate(KeyType::Ed25519).unwrap();
    let ca_blob = ca.public_key().to_blob();
    // The forge itself makes a good certificate.
    let good = forge(&ca, &ca_blob, |v| body(v, 1, &["a"], &[("x", b"")]));
    let c = Certificate::from_blob(&good).unwrap();
    assert_eq!(c.signature_key, ca.public_key());
    assert_eq!(c.principals, ["a"]);
    // Type neither user nor host.
    let bad = forge(&ca, &ca_blob, |v| body(v, 3, &["a"], &[]));
    assert_eq!(
        Certificate::from_blob(&bad),
        Err(Error::Malformed("certificate type"))
    );
    // A repeated option name.
    let bad = forge(&ca, &ca_blob, |v| {
        body(
            v,
            1,
            &["a"],
            &[("force-command", b""), ("force-command", b"")],
        )
    });
    assert!(Certificate::from_blob(&bad).is_err());
    // A principal with a NUL.
    let bad = forge(&ca, &ca_blob, |v| body(v, 1, &["a\0b"], &[]));
    assert!(Certificate::from_blob(&bad).is_err());
    // Too many principals.
    let many: Vec<String> = (0..=MAX_PRINCIPALS).map(|i| i.to_string()).collect();
    let many: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
    let bad = forge(&ca, &ca_blob, |v| body(v, 1, &many, &[]));
    assert_eq!(
        Certificate::from_blob(&bad),
        Err(Error::TooLarge("certificate principals"))
    );
    // A certificate as the signature key.
    let bad = forge(&ca, &good, |v| body(v, 1, &["a"], &[]));
    assert_eq!(
        Certificate::from_blob(&bad),
        Err(Error::Malformed("certificate signed by a certificate"))
    );
    // Signed by another key than the one named.
    let other = PrivateKey::generate(KeyType::Ed25519).unwrap();
    let bad = forge(&other, &ca_blob, |v| body(v, 1, &["a"], &[]));
    assert_eq!(Certificate::from_blob(&bad), Err(Error::BadSignature));
    // An option value with trailing bytes is not a string value.
    let mut d = Vec::new();
    d.put_str("cmd");
    d.push(0);
    let o = CertOption {
        name: "force-command".into(),
        data: d,
    };
    assert!(o.string_value().is_err());
}

#[test]
fn algorithm_names() {
    assert_eq!(
        plain_algorithm(b"rsa-sha2-256-cert-v01@openssh.com"),
        Some("rsa-sha2-256")
    );
    assert_eq!(plain_algorithm(b"ssh-rsa-cert-v01@openssh.com"), None);
    assert_eq!(
        plain_algorithm(b"sk-ecdsa-sha2-nistp256-cert-v01@openssh.com"),
        Some("sk-ecdsa-sha2-nistp256@openssh.com")
    );
    assert_eq!(plain_algorithm(b"ssh-ed25519"), None);
    assert!(is_cert_name(b"ssh-rsa-cert-v01@openssh.com"));
    assert!(!is_cert_name(b"ssh-ed25519"));
    assert_eq!(
        all_signature_algorithms(),
        [
            "ssh-ed25519-cert-v01@openssh.com",
            "ecdsa-sha2-nistp256-cert-v01@openssh.com",
            "ecdsa-sha2-nistp384-cert-v01@openssh.com",
            "ecdsa-sha2-nistp521-cert-v01@openssh.com",
            "rsa-sha2-512-cert-v01@openssh.com",
            "rsa-sha2-256-cert-v01@openssh.com",
            "sk-ssh-ed25519-cert-v01@openssh.com",
            "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
        ]
    );
}

proptest! {
    /// Random edits of a real certificate never panic, and never verify.
    #[test]
    fn mutated_certificates_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
        junk in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut b = pinned_blob();
        let n = b.len();
        let mut seen = std::collections::HashSet::new();
        for (i, x) in &edits {
            if seen.insert(i % n) {
                b[i % n] ^= x | 1;
            }
        }
        prop_assert!(Certificate::from_blob(&b).is_err());
        let mut c = pinned_blob();
        c.truncate(cut % c.len());
        c.extend_from_slice(&junk);
        let _ = Certificate::from_blob(&c);
        let _ = Certificate::from_blob(&junk);
    }
}
