//! The exporter values restls derives its secret and bindings from
//! (docs/restls.md §3: no context; under TLS 1.2, RFC 5705 gives a different
//! value for an empty context), against a real peer: `openssl s_server
//! -keymatexport` prints what it exports for a label, without a context,
//! after each handshake.

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::ssl::{SslConnector, SslMethod, SslVersion};
use ressh_testkit::free_port;
use ressh_tls::secret::{resume_binding, Secret};

/// The `n`th (from 1) value s_server printed, waiting for it.
fn exported(srv: &Proc, n: usize) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = srv.stdout();
        let found = out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Keying material: "))
            .nth(n - 1)
            .map(|h| {
                (0..h.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                    .collect()
            });
        if let Some(v) = found {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "s_server printed no keying material #{n}:\n{out}\n{}",
            srv.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exporter_matches_openssl_s_server_under_tls_1_2_and_1_3() {
    let certs = Certs::new();
    for label in ["EXPORTER-restls-secret", "EXPORTER-restls-resume"] {
        let port = free_port();
        let srv = Proc::spawn_console(
            Command::new(require_cmd("openssl"))
                .args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
                .args(["-keymatexport", label, "-keymatexportlen", "32"])
                .arg("-cert")
                .arg(&certs.cert)
                .arg("-key")
                .arg(&certs.key),
        );
        wait_listening(port, &srv);
        for (i, version) in [SslVersion::TLS1_2, SslVersion::TLS1_3]
            .into_iter()
            .enumerate()
        {
            let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
            b.set_ca_file(&certs.cert).unwrap();
            b.set_min_proto_version(Some(version)).unwrap();
            b.set_max_proto_version(Some(version)).unwrap();
            let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let tls = b.build().connect(NAME, tcp).unwrap();
            let ssl = tls.ssl();
            assert_eq!(ssl.version2(), Some(version));
            let theirs = exported(&srv, i + 1);
            assert_eq!(theirs.len(), 32, "{label}");
            if label == "EXPORTER-restls-resume" {
                assert_eq!(
                    &resume_binding(ssl).unwrap()[..],
                    &theirs[..],
                    "E under {}",
                    ssl.version_str()
                );
            } else {
                // RS_0 stays inside Secret; its token is HMAC(RS_0, "restls
                // token") (the derivation is pinned in secret.rs).
                let key = PKey::hmac(&theirs).unwrap();
                let mut s = Signer::new(MessageDigest::sha256(), &key).unwrap();
                s.update(b"restls token").unwrap();
                assert_eq!(
                    Secret::initial(ssl).unwrap().token().to_vec(),
                    s.sign_to_vec().unwrap(),
                    "RS_0 under {}",
                    ssl.version_str()
                );
            }
        }
    }
}
