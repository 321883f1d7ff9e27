//! Real interop with Debian's OpenSSH: proto's client against a stock
//! `sshd`, and stock `ssh` against proto's server role, for every cipher.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ressh_proto::keys::{KeyType, PrivateKey, PublicKey};
use ressh_proto::msg::{ChannelKind, ChannelReq};
use ressh_proto::{AuthAttempt, Config, Connection, Event};
use ressh_testkit::{require_cmd, require_root, ssh_keygen, Sshd, TempDir, TestUser};

/// Every key-exchange method of the registry that Debian's OpenSSH has
/// (all but mlkem768x25519-sha256, which OpenSSH 9.2 lacks).
fn kex_methods() -> Vec<&'static str> {
    let out = Command::new("ssh").args(["-Q", "kex"]).output().unwrap();
    let theirs = String::from_utf8(out.stdout).unwrap();
    let ours: Vec<&str> = ressh_proto::kex::KEX_SUPPORTED
        .iter()
        .copied()
        .filter(|k| theirs.lines().any(|l| l == *k))
        .collect();
    assert!(ours.len() >= ressh_proto::kex::KEX_SUPPORTED.len() - 1);
    ours
}

/// (cipher, MAC, key exchange) cases: every cipher and every key-exchange
/// method of the registry, and every MAC with one of the AES-CTR ciphers in
/// turn (the AEAD ciphers take no MAC). Empty: the default.
fn cases() -> Vec<(&'static str, &'static str, &'static str)> {
    let mut out: Vec<(&str, &str, &str)> = ciphers().into_iter().map(|(c, m)| (c, m, "")).collect();
    for k in kex_methods() {
        out.push(("chacha20-poly1305@openssh.com", "", k));
    }
    out
}

fn ciphers() -> Vec<(&'static str, &'static str)> {
    let ctr: Vec<&str> = ressh_proto::cipher::CIPHERS
        .iter()
        .filter(|c| !c.aead)
        .map(|c| c.name)
        .collect();
    let mut out: Vec<(&str, &str)> = ressh_proto::cipher::CIPHERS
        .iter()
        .filter(|c| c.aead)
        .map(|c| (c.name, ""))
        .collect();
    for (i, m) in ressh_proto::cipher::MACS.iter().enumerate() {
        out.push((ctr[i % ctr.len()], m.name));
    }
    out
}

/// Pumps a connection over a blocking socket, handing each event to `on`,
/// until `on` returns true or the deadline passes.
fn drive(
    conn: &mut Connection,
    sock: &mut TcpStream,
    mut on: impl FnMut(&mut Connection, Event) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    loop {
        let out = conn.take_output();
        if !out.is_empty() {
            sock.write_all(&out).unwrap();
        }
        let mut had_event = false;
        while let Some(e) = conn.poll_event() {
            had_event = true;
            if on(conn, e) {
                let out = conn.take_output();
                sock.write_all(&out).unwrap();
                return;
            }
        }
        if had_event {
            continue;
        }
        assert!(Instant::now() < deadline, "interop exchange timed out");
        match sock.read(&mut buf) {
            Ok(0) => panic!("peer closed the connection"),
            Ok(n) => conn.handle_input(&buf[..n], Instant::now()).unwrap(),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

struct ExecResult {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: Option<u32>,
    rekeys: usize,
}

/// Runs `command` through proto's client against the server at `port`.
fn client_exec(
    port: u16,
    cfg: Config,
    user: &str,
    key: &PrivateKey,
    host_key: &PublicKey,
    command: &str,
    rekey_midway: bool,
) -> ExecResult {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut conn = Connection::client(cfg, Instant::now()).unwrap();
    let mut r = ExecResult {
        stdout: Vec::new(),
        stderr: Vec::new(),
        status: None,
        rekeys: 0,
    };
    let mut chan = None;
    let mut asked_rekey = false;
    drive(&mut conn, &mut sock, |c, e| {
        match e {
            Event::HostKey(k) => {
                assert_eq!(&k, host_key, "server presented an unexpected host key");
                c.accept_host_key(Instant::now()).unwrap();
            }
            Event::AuthReady => {
                let alg = key.public_key().signature_algorithms()[0];
                c.auth_publickey(user, alg, key).unwrap();
            }
            Event::AuthFailure { methods, .. } => panic!("auth failed; can continue: {methods:?}"),
            Event::AuthSuccess => chan = Some(c.open_channel(ChannelKind::Session).unwrap()),
            Event::ChannelOpened { id } => c
                .channel_request(id, ChannelReq::Exec(command.as_bytes().to_vec()), true)
                .unwrap(),
            Event::ChannelReply { success, .. } => assert!(success, "exec refused"),
            Event::Data { id, data } => {
                r.stdout.extend_from_slice(&data);
                c.consume(id, data.len()).unwrap();
                if rekey_midway && !asked_rekey && r.stdout.len() > 1_000_000 {
                    asked_rekey = true;
                    c.rekey().unwrap();
                }
            }
            Event::ExtendedData { id, data, .. } => {
                r.stderr.extend_from_slice(&data);
                c.consume(id, data.len()).unwrap();
            }
            Event::ChannelRequest {
                request: ChannelReq::ExitStatus(s),
                ..
            } => r.status = Some(s),
            Event::KexDone { first: false, .. } => r.rekeys += 1,
            Event::Eof { id } => c.send_eof(id).unwrap(),
            Event::Closed { id } => {
                assert_eq!(Some(id), chan);
                return true;
            }
            Event::Disconnected { description, .. } => panic!("server disconnected: {description}"),
            _ => {}
        }
        false
    });
    conn.disconnect(11, "bye");
    let _ = sock.write_all(&conn.take_output());
    r
}

#[test]
fn proto_client_against_stock_sshd_every_cipher() {
    require_root();
    require_cmd("/usr/sbin/sshd");
    let user = TestUser::create("pc");
    let dir = TempDir::new("interop");
    for kind in ["ed25519", "rsa", "ecdsa"] {
        let (key_path, pub_line) = ssh_keygen(dir.path(), kind, "");
        user.authorize_key(&pub_line);
        let key = PrivateKey::from_openssh_pem(&std::fs::read(&key_path).unwrap()).unwrap();
        assert_eq!(
            key.public_key(),
            PublicKey::from_openssh(&pub_line).unwrap().0
        );
    }
    let sshd = Sshd::start(&format!("KexAlgorithms {}\n", kex_methods().join(",")));
    let (host_key, _) = PublicKey::from_openssh(&sshd.host_key_pub("ed25519")).unwrap();
    let key = PrivateKey::from_openssh_pem(&std::fs::read(dir.path().join("id_ed25519")).unwrap())
        .unwrap();
    for (cipher, mac, kex) in cases() {
        let mut cfg = Config {
            ciphers: vec![cipher.to_string()],
            ..Default::default()
        };
        if !mac.is_empty() {
            cfg.macs = vec![mac.to_string()];
        }
        if !kex.is_empty() {
            cfg.kex = vec![kex.to_string()];
        }
        let r = client_exec(
            sshd.port(),
            cfg,
            &user.name,
            &key,
            &host_key,
            "echo hello; echo oops >&2; exit 7",
            false,
        );
        assert_eq!(
            r.stdout,
            b"hello\n",
            "{cipher} {kex}: stdout; sshd log:\n{}",
            sshd.log()
        );
        assert_eq!(r.stderr, b"oops\n", "{cipher}");
        assert_eq!(r.status, Some(7), "{cipher}");
    }
    // Each user key type and RSA's two signature algorithms, and host keys of each type.
    for (kind, host_alg) in [
        ("rsa", "rsa-sha2-512"),
        ("rsa", "rsa-sha2-256"),
        ("ecdsa", "ecdsa-sha2-nistp256"),
    ] {
        let key = PrivateKey::from_openssh_pem(
            &std::fs::read(dir.path().join(format!("id_{kind}"))).unwrap(),
        )
        .unwrap();
        let (hk, _) = PublicKey::from_openssh(&sshd.host_key_pub(kind)).unwrap();
        let cfg = Config {
            host_key_algs: vec![host_alg.to_string()],
            ..Default::default()
        };
        let r = client_exec(sshd.port(), cfg, &user.name, &key, &hk, "id -un", false);
        assert_eq!(
            r.stdout,
            format!("{}\n", user.name).as_bytes(),
            "{kind}/{host_alg}"
        );
    }
    // Bulk data with rekeys started by byte count (client side) and on demand.
    let cfg = Config {
        rekey_bytes: 4 << 20,
        ..Default::default()
    };
    let r = client_exec(
        sshd.port(),
        cfg,
        &user.name,
        &key,
        &host_key,
        "head -c 20000000 /dev/zero",
        true,
    );
    assert_eq!(r.stdout.len(), 20_000_000);
    assert!(r.stdout.iter().all(|&b| b == 0));
    // Byte-count rekeys at 4, 8, 12 and 16 MiB and one on demand; the last
    // may still be in flight when the command's output ends.
    assert!(r.rekeys >= 3, "expected several rekeys, saw {}", r.rekeys);
    assert_eq!(r.status, Some(0));
}

/// A one-connection server on proto's server role that runs exec requests
/// with `sh -c` and accepts exactly `allowed`.
fn serve_one(
    listener: TcpListener,
    host: PrivateKey,
    allowed: PublicKey,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let cfg = Config {
            kex: ressh_proto::kex::KEX_SUPPORTED
                .iter()
                .map(|k| k.to_string())
                .collect(),
            ..Default::default()
        };
        let mut conn = Connection::server(cfg, vec![host.public_key()], Instant::now()).unwrap();
        let host = [host];
        drive(&mut conn, &mut sock, |c, e| {
            match e {
                Event::SignHostKey(r) => c
                    .host_key_signed(r.sign_with(&host), Instant::now())
                    .unwrap(),
                Event::AuthRequest {
                    attempt: AuthAttempt::PublicKeyQuery { algorithm, key },
                    ..
                } if key == allowed => c.auth_pk_ok(&algorithm, &key).unwrap(),
                Event::AuthRequest {
                    attempt: AuthAttempt::PublicKey { key, .. },
                    ..
                } if key == allowed => c.auth_accept().unwrap(),
                Event::AuthRequest { .. } => c.auth_reject(&["publickey"], false).unwrap(),
                Event::ChannelOpenRequest {
                    id,
                    kind: ChannelKind::Session,
                } => c.accept_channel(id).unwrap(),
                Event::ChannelOpenRequest { id, .. } => c.reject_channel(id, 1, "no").unwrap(),
                Event::ChannelRequest {
                    id,
                    want_reply,
                    request: ChannelReq::Exec(cmd),
                } => {
                    if want_reply {
                        c.channel_reply(id, true).unwrap();
                    }
                    let out = Command::new("/bin/sh")
                        .arg("-c")
                        .arg(String::from_utf8(cmd).unwrap())
                        .stdin(Stdio::null())
                        .output()
                        .unwrap();
                    // Small outputs here: the window is never exceeded.
                    assert_eq!(c.send_data(id, &out.stdout).unwrap(), out.stdout.len());
                    assert_eq!(
                        c.send_extended_data(id, 1, &out.stderr).unwrap(),
                        out.stderr.len()
                    );
                    let code = out.status.code().unwrap_or(255) as u32;
                    c.channel_request(id, ChannelReq::ExitStatus(code), false)
                        .unwrap();
                    c.send_eof(id).unwrap();
                    c.close_channel(id).unwrap();
                }
                Event::ChannelRequest {
                    id,
                    want_reply: true,
                    ..
                } => c.channel_reply(id, false).unwrap(),
                Event::Closed { .. } => return true,
                Event::Disconnected { .. } => return true,
                _ => {}
            }
            false
        });
    })
}

#[test]
fn stock_ssh_against_proto_server_every_cipher() {
    require_cmd("ssh");
    let dir = TempDir::new("interop-srv");
    let (key_path, pub_line) = ssh_keygen(dir.path(), "ed25519", "");
    let allowed = PublicKey::from_openssh(&pub_line).unwrap().0;
    for (host_kind, host_alg) in [
        (KeyType::Ed25519, "ssh-ed25519"),
        (KeyType::Rsa, "rsa-sha2-512"),
        (KeyType::EcdsaP256, "ecdsa-sha2-nistp256"),
    ] {
        for (cipher, mac, kex) in cases() {
            if host_kind != KeyType::Ed25519 && !kex.is_empty() {
                continue;
            }
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let host = PrivateKey::generate(host_kind).unwrap();
            let known = dir.path().join("known_hosts");
            std::fs::write(
                &known,
                format!("[127.0.0.1]:{port} {}\n", host.public_key().to_openssh("")),
            )
            .unwrap();
            let server = serve_one(listener, host, allowed.clone());
            let mut cmd = Command::new("ssh");
            cmd.args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known.display()))
            .args([
                "-o",
                &format!("HostKeyAlgorithms={host_alg}"),
                "-o",
                "IdentitiesOnly=yes",
            ])
            .arg("-i")
            .arg(&key_path)
            .args(["-c", cipher])
            .args(if kex.is_empty() {
                vec![]
            } else {
                vec!["-o".to_string(), format!("KexAlgorithms={kex}")]
            })
            .args(if mac.is_empty() {
                vec![]
            } else {
                vec!["-m", mac]
            })
            .args([
                "-p",
                &port.to_string(),
                "tester@127.0.0.1",
                "echo out; echo err >&2; exit 5",
            ]);
            let out = cmd.output().unwrap();
            server.join().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.stdout, b"out\n", "{host_alg}/{cipher}/{kex}: {stderr}");
            assert!(stderr.contains("err"), "{host_alg}/{cipher}: {stderr}");
            assert_eq!(out.status.code(), Some(5), "{host_alg}/{cipher}: {stderr}");
        }
    }
}
