//! A `resshd-session` taken over by its user, for the end-to-end test
//! `hostile_user::a_lying_session_worker_is_not_believed` (issue 13, hole 10).
//!
//! Installed as `resshd-session` next to a copy of resshd, with the real
//! worker beside it as `resshd-session.real`. Like the real worker it is
//! exec'd as root with `--uid --gid --groups` and changes to the user itself
//! (`ressh_ipc::harden`); then it speaks resshd's real messages as a user
//! who controls the process would. What it does comes from the file
//! `hostile.script` in its directory, one line per uid:
//!
//! ```text
//! <uid> lies <tty>        Attached unasked; LoginStarted for <tty> (not the
//!                         user's) with its own pid; LoginStarted for a pty of
//!                         its own with pid 1; then waits.
//! <uid> steal <hex>       Tokens naming <hex>; says yes to every reconnect it
//!                         is asked about and keeps any socket it is handed.
//! <uid> sign <n>          two Signs over <n> bytes, without a KexDone between.
//! <uid> verdict           a ReconnectVerdict nobody asked for.
//! <uid> log <n>           a forged log line of <n> bytes.
//! <uid> prove <how>      host key proofs (hostkeys-prove-00@openssh.com)
//!                         asked of the monitor: `flood`, one of a blob that
//!                         is no host key, then of the real host key again
//!                         and again, checking what each signature covers;
//!                         `many`, 17 blobs at once; `large`, a blob of 16 KiB
//!                         and one byte.
//! <uid> open <type>       serves the client's connection itself and opens a
//!                         channel of <type> (auth-agent@openssh.com, x11)
//!                         the client never asked for; says whether the
//!                         client accepted or refused it.
//! ```
//!
//! A uid without a line gets the real worker (exec'd as it is). Progress
//! goes to resshd's log through the monitor (`FromSession::Log`, lines
//! starting "hostile:"), which is also how the test sees what came back.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;

use ressh_e2e::unhex;
use ressh_ipc::msg::{FromSession, ToSession};
use ressh_ipc::Endpoint;
use ressh_proto::msg::ChannelKind;
use ressh_proto::{Connection, Event};
use std::time::Instant;

fn main() {
    if let Err(e) = run() {
        eprintln!("hostile-session: {e}");
        std::process::exit(1);
    }
}

#[allow(unsafe_code)] // adopting the monitor link passed as descriptor 3
fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no directory")?;
    let ids = ressh_ipc::harden::user_args(&args)?;
    let uid = ids.as_ref().map_or(0, |i| i.0).to_string();
    let script = std::fs::read_to_string(dir.join("hostile.script")).unwrap_or_default();
    let plan: Option<Vec<String>> = script.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some(uid.as_str())).then(|| w.map(str::to_string).collect())
    });
    let Some(plan) = plan else {
        return Err(real_worker(dir, &args));
    };
    // As the real worker: the user's credentials, set by the process itself.
    if let Some((u, g, groups)) = ids {
        ressh_ipc::harden::become_user(u, g, &groups)?;
    }
    ressh_ipc::harden::forbid_tracing()?;
    // SAFETY: the monitor puts the worker's link on fd 3; nothing else owns it.
    let ep = Endpoint::from_fd(unsafe { OwnedFd::from_raw_fd(3) });
    let (start, mut client) = ep.recv::<ToSession>().map_err(|e| e.to_string())?;
    let ToSession::Start(start) = start else {
        return Err("the first message was not Start".into());
    };
    let say = |text: String| send(&ep, FromSession::Log(format!("hostile: {text}")));
    say(format!("{} pid {}", plan.join(" "), std::process::id()))?;
    let number = |i: usize| -> Result<usize, String> {
        plan.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("plan {plan:?}: a number expected"))
    };
    match plan.first().map(String::as_str) {
        Some("lies") => {
            let tty = plan.get(1).ok_or("lies: which tty?")?.clone();
            send(&ep, FromSession::Attached)?;
            let pid = std::process::id() as i32;
            send(&ep, FromSession::LoginStarted { tty, pid })?;
            let (_master, own) = own_pty()?;
            send(&ep, FromSession::LoginStarted { tty: own, pid: 1 })?;
            say("told its lies".into())?;
            serve(&ep, &say, false)
        }
        Some("steal") => {
            let token = unhex(plan.get(1).ok_or("steal: which token?")?)?;
            send(&ep, FromSession::Tokens(vec![token]))?;
            say("claimed the token".into())?;
            serve(&ep, &say, true)
        }
        Some("sign") => {
            let n = number(1)?;
            let key = start.host_keys.first().ok_or("no host key")?.clone();
            let alg = match key_type(&key)? {
                "ssh-rsa" => "rsa-sha2-256".to_string(),
                t => t.to_string(),
            };
            for i in 1..=2 {
                let data = vec![0x41; n];
                let (key, alg) = (key.clone(), alg.clone());
                send(&ep, FromSession::Sign { key, alg, data })?;
                match ep.recv::<ToSession>().map_err(|e| e.to_string())?.0 {
                    ToSession::Signature(Ok(s)) => {
                        say(format!("signature {i} came back ({} bytes)", s.len()))?
                    }
                    ToSession::Signature(Err(e)) => say(format!("signature {i} refused: {e}"))?,
                    _ => return Err("an answer that is no signature".into()),
                }
            }
            serve(&ep, &say, false)
        }
        Some("verdict") => {
            send(
                &ep,
                FromSession::ReconnectVerdict {
                    id: 1,
                    result: Ok(()),
                },
            )?;
            serve(&ep, &say, false)
        }
        Some("log") => {
            let mut line =
                "Accepted publickey for root from 203.0.113.66 port 22 ssh2 ".to_string();
            line.extend(std::iter::repeat_n(
                'x',
                number(1)?.saturating_sub(line.len()),
            ));
            send(&ep, FromSession::Log(line))?;
            serve(&ep, &say, false)
        }
        Some("prove") => {
            prove(&ep, &start, plan.get(1).map(String::as_str), &say)?;
            serve(&ep, &say, false)
        }
        Some("open") => {
            let kind = match plan.get(1).map(String::as_str) {
                Some("auth-agent@openssh.com") => ChannelKind::AuthAgent,
                Some("x11") => ChannelKind::X11 {
                    originator: "127.0.0.1".into(),
                    originator_port: 40000,
                },
                other => return Err(format!("open: which channel type? {other:?}")),
            };
            let sock = client.pop().ok_or("no client socket")?;
            let answer = open_unasked(&start, std::net::TcpStream::from(sock), kind)?;
            say(answer)?;
            serve(&ep, &say, false)
        }
        _ => Err(format!("unknown plan {plan:?}")),
    }
}

/// Asks the monitor for host key proofs as `how` says; tells what came
/// back: "proof N refused: ...", "proof N signs the proof" (a signature
/// that verifies over the proof of OpenSSH's PROTOCOL §2.5, and not over
/// the blob the worker chose) or "proof N signs something else".
fn prove(
    ep: &Endpoint,
    start: &ressh_ipc::msg::SessionStart,
    how: Option<&str>,
    say: &dyn Fn(String) -> Result<(), String>,
) -> Result<(), String> {
    use ressh_proto::keys::PublicKey;
    use ressh_proto::wire::Put;
    let blob = start.host_keys.first().ok_or("no host key")?.clone();
    let requests: Vec<Vec<Vec<u8>>> = match how {
        Some("flood") => std::iter::once(vec![vec![0x41; 100]])
            .chain(std::iter::repeat_n(vec![blob.clone()], 1000))
            .collect(),
        Some("many") => vec![vec![blob.clone(); 17]],
        Some("large") => vec![vec![vec![0x41; (16 << 10) + 1]]],
        other => return Err(format!("prove: how? {other:?}")),
    };
    let key = PublicKey::from_blob(&blob).map_err(|e| e.to_string())?;
    let conn = Connection::import(&start.state, vec![key.clone()], Instant::now())
        .map_err(|e| e.to_string())?;
    let sid = conn.session_id().ok_or("no session id")?.to_vec();
    let mut proof = Vec::new();
    proof.put_str("hostkeys-prove-00@openssh.com");
    proof.put_string(&sid);
    proof.put_string(&blob);
    for (i, blobs) in requests.into_iter().enumerate() {
        send(ep, FromSession::ProveHostKeys(blobs))?;
        match ep.recv::<ToSession>().map_err(|e| e.to_string())?.0 {
            ToSession::HostKeyProofs(Ok(sigs)) => {
                let proves = sigs.len() == 1
                    && key.verify(&proof, &sigs[0]).is_ok()
                    && key.verify(&blob, &sigs[0]).is_err();
                let what = if proves {
                    "signs the proof"
                } else {
                    "signs something else"
                };
                say(format!("proof {i} {what}"))?
            }
            ToSession::HostKeyProofs(Err(e)) => say(format!("proof {i} refused: {e}"))?,
            _ => return Err("an answer that is no proof".into()),
        }
    }
    Ok(())
}

/// Imports the connection as the real worker does, opens a channel of
/// `kind` and serves the client until it answers: "channel <type>
/// accepted" or "channel <type> refused: <reason> <description>".
fn open_unasked(
    start: &ressh_ipc::msg::SessionStart,
    mut sock: std::net::TcpStream,
    kind: ChannelKind,
) -> Result<String, String> {
    use std::io::{Read, Write};
    let host_keys = start
        .host_keys
        .iter()
        .map(|b| ressh_proto::keys::PublicKey::from_blob(b))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let mut conn =
        Connection::import(&start.state, host_keys, Instant::now()).map_err(|e| e.to_string())?;
    let name = kind.name().to_string();
    let id = conn.open_channel(kind).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let out = conn.take_output();
        sock.write_all(&out).map_err(|e| e.to_string())?;
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::ChannelOpened { id: i } if i == id => {
                    return Ok(format!("channel {name} accepted"))
                }
                Event::ChannelOpenFailed {
                    id: i,
                    reason,
                    description,
                } if i == id => {
                    return Ok(format!("channel {name} refused: {reason} {description}"))
                }
                _ => {}
            }
        }
        let n = sock.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the client closed the connection".into());
        }
        conn.handle_input(&buf[..n], Instant::now())
            .map_err(|e| e.to_string())?;
    }
}

/// Execs the real worker as the monitor exec'd this one (fd 3 stays).
fn real_worker(dir: &Path, args: &[String]) -> String {
    let e = std::process::Command::new(dir.join("resshd-session.real"))
        .args(args)
        .exec();
    format!("cannot exec the real worker: {e}")
}

fn send(ep: &Endpoint, m: FromSession) -> Result<(), String> {
    ep.send(&m, &[]).map_err(|e| e.to_string())
}

/// Reads the monitor until it closes the link (or kills this process).
/// With `yes`, every reconnect asked about is accepted and every socket
/// handed over is kept.
fn serve(
    ep: &Endpoint,
    say: &dyn Fn(String) -> Result<(), String>,
    yes: bool,
) -> Result<(), String> {
    let mut kept = Vec::new();
    loop {
        let (m, fds) = match ep.recv::<ToSession>() {
            Ok(x) => x,
            Err(ressh_ipc::Error::Closed) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        match m {
            ToSession::Reconnect { id, .. } if yes => {
                say("asked for a verdict: yes".into())?;
                send(ep, FromSession::ReconnectVerdict { id, result: Ok(()) })?;
            }
            ToSession::Transport { peer_addr, .. } => {
                say(format!("was handed the transport of {peer_addr}"))?
            }
            _ => {}
        }
        kept.extend(fds);
    }
}

/// A pty of this process's own: (master, slave path).
fn own_pty() -> Result<(nix::pty::PtyMaster, String), String> {
    use nix::fcntl::OFlag;
    let m = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).map_err(|e| e.to_string())?;
    nix::pty::grantpt(&m).map_err(|e| e.to_string())?;
    nix::pty::unlockpt(&m).map_err(|e| e.to_string())?;
    let name = nix::pty::ptsname_r(&m).map_err(|e| e.to_string())?;
    Ok((m, name))
}

/// The key type named at the start of a public key blob.
fn key_type(blob: &[u8]) -> Result<&str, String> {
    let len = blob
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("short key blob")?;
    let name = blob
        .get(4..4usize.saturating_add(len))
        .ok_or("short key blob")?;
    std::str::from_utf8(name).map_err(|_| "key type not UTF-8".to_string())
}
