//! Keyboard-interactive authentication and the pre-auth banner against
//! Debian's sshd with `UsePAM yes`: pam_unix asks its questions through
//! keyboard-interactive, ressh answers them through an askpass, and sshd
//! sends a `Banner` file that holds terminal escape sequences.
//!
//! pam_unix asks one question a round, never echoed, and has no name or
//! instruction; what it cannot show (two prompts in one request, one of
//! them echoed, the request's name and instruction, retries of such
//! rounds) is served by ressh-proto's own server role in this process.

mod common;
use common::*;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use ressh_proto::keys::{KeyType, PrivateKey};
use ressh_proto::msg::ChannelReq;
use ressh_proto::{AuthAttempt, Config, Connection, Event};

/// The banner: text with colour escapes, a carriage return, a bell.
const BANNER: &[u8] = b"Welcome to the \x1b[31mkbd\x1b[0m test.\r\nNo \x07bells here.\n";

/// A user with `password`, Debian's sshd offering only keyboard-interactive
/// through PAM and showing [`BANNER`], and a ressh config that tries only
/// keyboard-interactive, asking an askpass.
fn setup(password: &str) -> (Env, TempDir, std::path::PathBuf) {
    let files = TempDir::new("kbd-banner");
    let banner = files.join("banner");
    fs::write(&banner, BANNER).unwrap();
    let env = Env::sshd(&format!(
        "UsePAM yes\nKbdInteractiveAuthentication yes\nPasswordAuthentication no\n\
         PubkeyAuthentication no\nBanner {}\n",
        banner.display()
    ));
    env.user.set_password(password);
    let config = env.alt_config(
        "kbd_config",
        "BatchMode no\nPreferredAuthentications keyboard-interactive\nNumberOfPasswordPrompts 2\n",
        false,
    );
    (env, files, config)
}

/// ressh against `env` answering the prompts with `answers` in order;
/// returns its output and the prompts the askpass saw.
fn login(env: &Env, config: &std::path::Path, answers: &[&str]) -> (std::process::Output, String) {
    let (script, log) = askpass_answers(env.dir.path(), "kbd-askpass", answers);
    let out = run_timeout(
        env.ressh_with(config)
            .env("SSH_ASKPASS", &script)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .args(["127.0.0.1", "echo logged in as $(id -un)"]),
        T,
    );
    let prompts = fs::read_to_string(&log).unwrap_or_default();
    (out, prompts)
}

#[test]
fn keyboard_interactive_through_pam_and_the_banner() {
    let (env, _files, config) = setup("kbd-Secret-42");
    let (out, prompts) = login(&env, &config, &["kbd-Secret-42"]);
    let err = text(&out.stderr);
    assert!(
        out.status.success(),
        "ressh: {}\n{err}\n--- server log ---\n{}",
        out.status,
        env.server.log()
    );
    assert_eq!(
        text(&out.stdout),
        format!("logged in as {}\n", env.user.name)
    );
    // pam_unix's one question, through keyboard-interactive.
    assert_eq!(prompts, "Password: \n", "{err}");
    assert!(
        env.server.log().contains(&format!(
            "Accepted keyboard-interactive/pam for {}",
            env.user.name
        )),
        "{}",
        env.server.log()
    );
    // The banner is shown with its control characters taken out (as text,
    // never as escapes for the terminal).
    assert!(
        err.contains("Welcome to the [31mkbd[0m test.\nNo bells here.\n"),
        "{err:?}"
    );
    assert!(
        !err.contains(['\x1b', '\r', '\x07']),
        "control characters reached the terminal: {err:?}"
    );
}

#[test]
fn keyboard_interactive_wrong_answers_are_refused() {
    let (env, _files, config) = setup("kbd-Secret-42");
    let (out, prompts) = login(&env, &config, &["wrong-1", "wrong-2", "kbd-Secret-42"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert_eq!(text(&out.stdout), "");
    // NumberOfPasswordPrompts 2: two questions, two wrong answers, no third.
    assert_eq!(prompts, "Password: \nPassword: \n", "{err}");
    assert!(
        err.contains("Permission denied (keyboard-interactive)"),
        "{err}"
    );
    let log = env.server.log();
    assert!(!log.contains("Accepted keyboard-interactive"), "{log}");
    assert!(
        log.contains(&format!(
            "Failed keyboard-interactive/pam for {}",
            env.user.name
        )),
        "{log}"
    );
}

/// Serves one connection: keyboard-interactive with two prompts, the
/// second echoed (the answers must be `code` and `yes`), then one exec.
fn serve(mut sock: TcpStream, code: &'static str) -> Vec<String> {
    let key = [PrivateKey::generate(KeyType::Ed25519).unwrap()];
    let mut conn =
        Connection::server(Config::default(), vec![key[0].public_key()], Instant::now()).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = conn.take_output();
        if !out.is_empty() && sock.write_all(&out).is_err() {
            return seen;
        }
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::SignHostKey(r) => conn
                    .host_key_signed(r.sign_with(&key), Instant::now())
                    .unwrap(),
                Event::AuthRequest { attempt, .. } => match attempt {
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
                },
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
    let (script, log) = askpass_answers(dir.path(), "ap", answers);
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
    let log = fs::read_to_string(log).unwrap_or_default();
    (out, seen, log)
}

#[test]
fn two_prompts_in_one_round_against_the_protocol_library() {
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
    // The interactive request's name and instruction are shown.
    assert!(err.contains("Two factors\nAnswer both.\n"), "{err}");
}

#[test]
fn rounds_of_two_prompts_are_retried_then_refused() {
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
