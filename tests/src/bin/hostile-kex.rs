//! A `resshd-kex` taken over by an attacker, for the end-to-end test
//! `certs::a_lying_kex_worker_is_not_believed_about_certificates` (issue 16).
//!
//! Installed as `resshd-kex` next to a copy of resshd, with the real worker
//! beside it as `resshd-kex.real`. When the file `hostile-kex.script` in its
//! directory exists, it does not speak SSH to the client at all: it has the
//! monitor sign a made-up exchange hash (which becomes the session id), then
//! sends one publickey request per script line, signed over that session id
//! with the user's private key as a client would:
//!
//! ```text
//! <case> <user> <algorithm> <key blob, hex> <private key file>
//! ```
//!
//! and reports each verdict to resshd's log through the monitor
//! (`FromKex::Log`, "hostile-kex: <case> <verdict>"). Without the file it
//! execs the real worker.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;

use ressh_e2e::unhex;
use ressh_ipc::msg::{AuthRequest, FromKex, ToKex};
use ressh_ipc::Endpoint;
use ressh_proto::keys::PrivateKey;

fn main() {
    if let Err(e) = run() {
        eprintln!("hostile-kex: {e}");
        std::process::exit(1);
    }
}

#[allow(unsafe_code)] // adopting the monitor link passed as descriptor 3
fn run() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no directory")?;
    let Ok(script) = std::fs::read_to_string(dir.join("hostile-kex.script")) else {
        let e = std::process::Command::new(dir.join("resshd-kex.real"))
            .args(std::env::args_os().skip(1))
            .exec();
        return Err(format!("exec the real worker: {e}"));
    };
    // SAFETY: the monitor puts the worker's link on fd 3; nothing else owns it.
    let ep = Endpoint::from_fd(unsafe { OwnedFd::from_raw_fd(3) });
    let start = match ep.recv::<ToKex>().map_err(|e| e.to_string())? {
        (ToKex::Start(s), _) => s,
        _ => return Err("the first message was not Start".into()),
    };
    let host = start.host_keys.first().ok_or("no host key")?;
    let host_alg = ressh_proto::keys::PublicKey::from_blob(host)
        .map_err(|e| e.to_string())?
        .signature_algorithms()[0];
    let mut sid = [0u8; 32];
    openssl::rand::rand_bytes(&mut sid).map_err(|e| e.to_string())?;
    send(
        &ep,
        FromKex::Sign {
            key: host.clone(),
            alg: host_alg.to_string(),
            data: sid.to_vec(),
        },
    )?;
    match ep.recv::<ToKex>().map_err(|e| e.to_string())? {
        (ToKex::Signature(Ok(_)), _) => {}
        other => return Err(format!("no signature: {other:?}")),
    }
    for line in script.lines().filter(|l| !l.trim().is_empty()) {
        let w: Vec<&str> = line.split_whitespace().collect();
        let [case, user, alg, blob, key] = w[..] else {
            return Err(format!("bad script line {line:?}"));
        };
        let blob = unhex(blob)?;
        let key = std::fs::read(key).map_err(|e| format!("{key}: {e}"))?;
        let key = PrivateKey::from_openssh_pem(&key).map_err(|e| e.to_string())?;
        // What the client signs (RFC 4252 §7), with the algorithm a
        // certificate algorithm stands for.
        let plain = ressh_proto::cert::plain_algorithm(alg.as_bytes()).unwrap_or(alg);
        let data =
            ressh_proto::msg::publickey_signed_data(&sid, user, "ssh-connection", alg, &blob);
        let signature = key.sign(plain, &data).map_err(|e| e.to_string())?;
        send(
            &ep,
            FromKex::Auth {
                user: user.to_string(),
                request: AuthRequest::PublicKey {
                    algorithm: alg.to_string(),
                    blob,
                    signature: Some(signature),
                },
            },
        )?;
        let verdict = match ep.recv::<ToKex>().map_err(|e| e.to_string())? {
            (ToKex::Verdict(v), _) => v,
            other => return Err(format!("no verdict: {other:?}")),
        };
        send(
            &ep,
            FromKex::Log(format!("hostile-kex: {case} {verdict:?}")),
        )?;
    }
    Ok(())
}

fn send(ep: &Endpoint, m: FromKex) -> Result<(), String> {
    ep.send(&m, &[]).map_err(|e| e.to_string())
}
