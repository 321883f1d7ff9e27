//! Keyboard-interactive authentication and the pre-auth banner, against
//! ressh-proto's own server role in this process (Debian's sshd offers
//! keyboard-interactive only through PAM, which the test sshd does not use).

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use ressh_proto::keys::{KeyType, PrivateKey};
use ressh_proto::msg::ChannelReq;
use ressh_proto::{AuthAttempt, Config, Connection, Event};

/// Serves one connection: the banner, keyboard-interactive with two
/// prompts (the answers must be `code` and `yes`), then one exec.
fn serve(mut sock: TcpStream, code: &'static str) -> Vec<String> {
    let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
    let mut conn =
        Connection::server(Config::default(), Box::new(vec![key]), Instant::now()).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut bannered = false;
    loop {
        let out = conn.take_output();
        if !out.is_empty() && sock.write_all(&out).is_err() {
            return seen;
        }
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::AuthRequest { attempt, .. } => {
                    if !bannered {
                        bannered = true;
                        conn.auth_banner("Welcome to the \x1b[31mkbd\x1b[0m test.\n")
                            .unwrap();
                    }
                    match attempt {
                        AuthAttempt::KeyboardInteractive { .. } => conn
                            .auth_info_request(
                                "Two factors",
                                "Answer both.",
                                &[("Code: ", false), ("Really? ", true)],
                            )
                            .unwrap(),
                        other => {
                            seen.push(format!("{other:?}").chars().take(20).collect());
                            conn.auth_reject(&["keyboard-interactive"], false).unwrap()
                        }
                    }
                }
                Event::AuthInfoResponse(answers) => {
                    let a: Vec<&str> = answers.iter().map(|s| s.as_str()).collect();
                    seen.push(format!("answers {a:?}"));
                    if a == [code, "yes"] {
                        conn.auth_accept().unwrap();
                    } else {
                        conn.auth_reject(&["keyboard-interactive"], false).unwrap();
                    }
                }
                Event::ChannelOpenRequest { id, .. } => conn.accept_channel(id).unwrap(),
                Event::ChannelRequest {
                    id,
                    want_reply,
                    request,
                } => {
                    if want_reply {
                        conn.channel_reply(id, true).unwrap();
                    }
                    if let ChannelReq::Exec(cmd) = request {
                        let reply = format!("ran {}\n", String::from_utf8_lossy(&cmd));
                        conn.send_data(id, reply.as_bytes()).unwrap();
                        conn.channel_request(id, ChannelReq::ExitStatus(5), false)
                            .unwrap();
                        conn.send_eof(id).unwrap();
                        conn.close_channel(id).unwrap();
                    }
                }
                Event::Closed { .. } | Event::Disconnected { .. } => {
                    let out = conn.take_output();
                    let _ = sock.write_all(&out);
                    return seen;
                }
                _ => {}
            }
        }
        if Instant::now() > deadline {
            return seen;
        }
        match sock.read(&mut buf) {
            Ok(0) => return seen,
            Ok(n) => {
                if conn.handle_input(&buf[..n], Instant::now()).is_err() {
                    return seen;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return seen,
        }
    }
}

fn run_against(
    code: &'static str,
    answers: &[&str],
) -> (std::process::Output, Vec<String>, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = thread::spawn(move || serve(l.accept().unwrap().0, code));
    let dir = TempDir::new("kbd");
    // An askpass that answers each prompt from a list, in order.
    let script = dir.join("ap");
    let mut body = String::from(
        "#!/bin/sh\nprintf '%s\\n' \"$1\" >> \"$0.log\"\nn=$(wc -l < \"$0.log\")\ncase $n in\n",
    );
    for (i, a) in answers.iter().enumerate() {
        body.push_str(&format!("  {}) echo {};;\n", i + 1, sq(a)));
    }
    body.push_str("  *) exit 1;;\nesac\n");
    std::fs::write(&script, body).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run_timeout(
        std::process::Command::new(RESSH)
            .args(["-F", "none", "-o", "StrictHostKeyChecking=accept-new"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", dir.join("kh").display()))
            .args([
                "-o",
                "GlobalKnownHostsFile=none",
                "-o",
                "IdentityAgent=none",
            ])
            .args(["-o", "IdentityFile=none", "-o", "NumberOfPasswordPrompts=2"])
            .args([
                "-p",
                &port.to_string(),
                "-l",
                "tester",
                "127.0.0.1",
                "hello",
            ])
            .env("SSH_ASKPASS", &script)
            .env("SSH_ASKPASS_REQUIRE", "force"),
        T,
    );
    let seen = h.join().unwrap();
    let log = std::fs::read_to_string(dir.join("ap.log")).unwrap_or_default();
    (out, seen, log)
}

#[test]
fn keyboard_interactive_prompts_through_askpass() {
    let (out, seen, log) = run_against("4711", &["4711", "yes"]);
    assert_eq!(
        text(&out.stdout),
        "ran hello\n",
        "stderr: {}\nserver: {seen:?}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(log, "Code: \nReally? \n");
    assert!(
        seen.contains(&"answers [\"4711\", \"yes\"]".to_string()),
        "{seen:?}"
    );
    let err = text(&out.stderr);
    // The banner is shown, its escape sequences removed; then the
    // interactive request's name and instruction.
    assert!(err.contains("Welcome to the [31mkbd[0m test."), "{err}");
    assert!(!err.contains('\x1b'), "{err:?}");
    assert!(err.contains("Two factors\nAnswer both.\n"), "{err}");
}

#[test]
fn keyboard_interactive_wrong_answers_are_retried_then_refused() {
    let (out, seen, log) = run_against("4711", &["1", "yes", "2", "yes"]);
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    // NumberOfPasswordPrompts=2: two rounds of two prompts.
    assert_eq!(log.lines().count(), 4, "{log}");
    assert_eq!(
        seen.iter().filter(|s| s.starts_with("answers")).count(),
        2,
        "{seen:?}"
    );
    assert!(
        text(&out.stderr).contains("Permission denied (keyboard-interactive)"),
        "{}",
        text(&out.stderr)
    );
}
