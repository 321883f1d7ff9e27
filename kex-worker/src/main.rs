//! resshd-kex: the pre-authentication worker of resshd.
//!
//! Exec'd by its monitor as root with the monitor's socket on fd 3 and the
//! client's TCP socket on fd 4. Before it reads a byte from the network it
//! initialises OpenSSL, enters an empty chroot, becomes the privsep user,
//! sets no_new_privs and installs a seccomp filter. It then runs the SSH
//! version exchange, key exchange and user authentication, asking the
//! monitor for every host-key signature and every auth decision. After a
//! successful auth it hands the exported connection to the monitor and exits.

mod sandbox;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use ressh_compat::log as compat_log;
use ressh_ipc::msg::{AuthRequest, AuthVerdict, FromKex, ToKex, MAX_LOG_LEN};
use ressh_ipc::Endpoint;
use ressh_proto::error::reason;
use ressh_proto::keys::PublicKey;
use ressh_proto::{AuthAttempt, Connection, Event, HostKeySigner};

struct Args {
    chroot: Option<PathBuf>,
    uid: Option<u32>,
    gid: Option<u32>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        chroot: None,
        uid: None,
        gid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--chroot" => a.chroot = Some(PathBuf::from(v)),
            "--uid" => a.uid = Some(v.parse().map_err(|_| "bad --uid")?),
            "--gid" => a.gid = Some(v.parse().map_err(|_| "bad --gid")?),
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    Ok(a)
}

/// Asks the monitor to sign exchange hashes.
struct MonitorSigner {
    ipc: Arc<Endpoint>,
    keys: Vec<PublicKey>,
}

impl HostKeySigner for MonitorSigner {
    fn public_keys(&self) -> Vec<PublicKey> {
        self.keys.clone()
    }

    fn sign(&self, key: &PublicKey, alg: &str, data: &[u8]) -> ressh_proto::Result<Vec<u8>> {
        let req = FromKex::Sign {
            key: key.to_blob(),
            alg: alg.to_string(),
            data: data.to_vec(),
        };
        self.ipc
            .send(&req, &[])
            .map_err(|e| ressh_proto::Error::Crypto(e.to_string()))?;
        match self.ipc.recv::<ToKex>() {
            Ok((ToKex::Signature(Ok(sig)), _)) => Ok(sig),
            Ok((ToKex::Signature(Err(e)), _)) => Err(ressh_proto::Error::Crypto(e)),
            Ok(_) => Err(ressh_proto::Error::Crypto(
                "monitor answered out of turn".into(),
            )),
            Err(e) => Err(ressh_proto::Error::Crypto(e.to_string())),
        }
    }
}

/// The monitor's link, once this process has it: log lines go there.
static MONITOR: OnceLock<Arc<Endpoint>> = OnceLock::new();

/// One log line. The worker holds no descriptor on resshd's log: the line
/// goes to the monitor ([`FromKex::Log`], cut to [`MAX_LOG_LEN`]), which
/// writes it under this process's name and pid and the peer's address.
/// Without the link (a bad command line, or the monitor is gone) it goes to
/// stderr, which is /dev/null under a monitor and the terminal of an admin
/// who runs us by hand.
fn log_line(msg: &str) {
    let msg = compat_log::cut(msg, MAX_LOG_LEN);
    let sent = MONITOR
        .get()
        .is_some_and(|ipc| ipc.send(&FromKex::Log(msg.to_string()), &[]).is_ok());
    if !sent {
        compat_log::to_stderr(&compat_log::line(
            None,
            "resshd-kex",
            std::process::id(),
            msg,
        ));
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log_line(&e);
            ExitCode::from(1)
        }
    }
}

#[allow(unsafe_code)] // adopting the descriptors resshd passes as 3 and 4
fn run() -> Result<(), String> {
    let args = parse_args()?;
    // SAFETY: the monitor passes these two descriptors to us; nothing else
    // in this process refers to them.
    let (ipc, sock) = unsafe { (OwnedFd::from_raw_fd(3), OwnedFd::from_raw_fd(4)) };
    // OpenSSL loads its configuration and seeds its RNG before the chroot.
    openssl::init();
    let mut warm = [0u8; 32];
    openssl::rand::rand_bytes(&mut warm).map_err(|e| e.to_string())?;
    if let (Some(root), Some(uid), Some(gid)) = (&args.chroot, args.uid, args.gid) {
        sandbox::drop_privileges(root, uid, gid)?;
    } else if nix::unistd::geteuid().is_root() {
        return Err("refusing to run as root without --chroot, --uid and --gid".into());
    }
    sandbox::confine()?;

    let ipc = Arc::new(Endpoint::from_fd(ipc));
    let _ = MONITOR.set(ipc.clone());
    let start = match ipc.recv::<ToKex>() {
        Ok((ToKex::Start(s), _)) => s,
        Ok(_) => return Err("monitor did not start with Start".into()),
        Err(e) => return Err(e.to_string()),
    };
    let mut keys = Vec::new();
    for k in &start.host_keys {
        keys.push(PublicKey::from_blob(k).map_err(|e| format!("host key from monitor: {e}"))?);
    }
    let signer = MonitorSigner {
        ipc: ipc.clone(),
        keys,
    };
    let now = Instant::now();
    let deadline =
        (start.login_grace_secs > 0).then(|| now + Duration::from_secs(start.login_grace_secs));
    let mut conn = Connection::server(start.proto.clone(), Box::new(signer), now)
        .map_err(|e| e.to_string())?;
    let mut sock = TcpStream::from(sock);
    let mut banner = start.banner.clone();
    let mut buf = vec![0u8; 64 * 1024];
    // The user of the last auth request, for the log (as sshd's
    // "Connection closed by authenticating user ...").
    let mut auth_user: Option<String> = None;
    // The user of a keyboard-interactive exchange waiting for the
    // client's answers (the monitor's PAM conversation waits for them).
    let mut kbdint: Option<String> = None;
    loop {
        flush(&mut conn, &mut sock)?;
        while let Some(ev) = conn.poll_event() {
            // A user-auth request, or the answers of a keyboard-interactive
            // exchange, for the monitor to judge.
            let (user, request, pk) = match ev {
                Event::AuthRequest { user, attempt } => {
                    kbdint = None;
                    auth_user = Some(ressh_proto::wire::printable(user.as_bytes()));
                    if let Some(text) = banner.take() {
                        conn.auth_banner(&text).map_err(|e| e.to_string())?;
                    }
                    let request = match attempt {
                        AuthAttempt::None => AuthRequest::None,
                        AuthAttempt::PublicKeyQuery { algorithm, key } => AuthRequest::PublicKey {
                            algorithm,
                            blob: key.to_blob(),
                            signature: None,
                        },
                        AuthAttempt::PublicKey {
                            algorithm,
                            key,
                            signature,
                        } => AuthRequest::PublicKey {
                            algorithm,
                            blob: key.to_blob(),
                            signature: Some(signature),
                        },
                        AuthAttempt::Password(p) => AuthRequest::Password(p),
                        AuthAttempt::KeyboardInteractive { .. } => AuthRequest::KeyboardInteractive,
                        AuthAttempt::Other(_) => AuthRequest::None,
                    };
                    let pk = match &request {
                        AuthRequest::PublicKey {
                            algorithm, blob, ..
                        } => Some((algorithm.clone(), blob.clone())),
                        _ => None,
                    };
                    (user, request, pk)
                }
                Event::AuthInfoResponse(answers) => {
                    let Some(user) = kbdint.take() else {
                        conn.disconnect(reason::PROTOCOL_ERROR, "unexpected info response");
                        let _ = flush(&mut conn, &mut sock);
                        return Err("info response without a request".into());
                    };
                    (user, AuthRequest::InfoResponse(answers), None)
                }
                Event::ReconnectRequest(request) => {
                    // Resume an existing session: the monitor routes the
                    // request; the socket goes to the session only if it
                    // validates. Everything we had to send is sent.
                    flush(&mut conn, &mut sock)?;
                    let leftover = conn.take_unprocessed_input();
                    ipc.send(&FromKex::Reconnect { request, leftover }, &[])
                        .map_err(|e| e.to_string())?;
                    return match ipc.recv::<ToKex>() {
                        Ok((ToKex::ReconnectHandedOver, _)) => Ok(()),
                        Ok((ToKex::ReconnectRefused { code, description }, _)) => {
                            let refused = ressh_proto::Refused { code, description };
                            conn.reconnect_failure(&refused)
                                .map_err(|e| e.to_string())?;
                            let _ = flush(&mut conn, &mut sock);
                            Ok(())
                        }
                        Ok(_) => Err("monitor answered out of turn".into()),
                        Err(e) => Err(e.to_string()),
                    };
                }
                Event::Disconnected { .. } => {
                    log_line(&format!(
                        "Received disconnect{} before authentication",
                        by_user(&auth_user)
                    ));
                    return Ok(());
                }
                _ => continue,
            };
            ipc.send(
                &FromKex::Auth {
                    user: user.clone(),
                    request,
                },
                &[],
            )
            .map_err(|e| e.to_string())?;
            let verdict = match ipc.recv::<ToKex>() {
                Ok((ToKex::Verdict(v), _)) => v,
                Ok(_) => return Err("monitor answered out of turn".into()),
                Err(e) => return Err(e.to_string()),
            };
            match verdict {
                AuthVerdict::Accept => {
                    conn.auth_accept().map_err(|e| e.to_string())?;
                    // The USERAUTH_SUCCESS travels in the exported output.
                    let state = conn.export(Instant::now()).map_err(|e| e.to_string())?;
                    ipc.send(
                        &FromKex::Authenticated {
                            state: state.to_vec(),
                        },
                        &[],
                    )
                    .map_err(|e| e.to_string())?;
                    return Ok(());
                }
                AuthVerdict::Reject { methods, partial } => {
                    let m: Vec<&str> = methods.iter().map(|s| s.as_str()).collect();
                    conn.auth_reject(&m, partial).map_err(|e| e.to_string())?;
                }
                AuthVerdict::PkOk => {
                    let (alg, blob) = pk.ok_or("PkOk for a request that was no key query")?;
                    let key = PublicKey::from_blob(&blob).map_err(|e| e.to_string())?;
                    conn.auth_pk_ok(&alg, &key).map_err(|e| e.to_string())?;
                }
                AuthVerdict::Disconnect(text) => {
                    conn.disconnect(reason::NO_MORE_AUTH_METHODS_AVAILABLE, &text);
                    flush(&mut conn, &mut sock)?;
                    return Ok(());
                }
                AuthVerdict::InfoRequest {
                    name,
                    instruction,
                    prompts,
                } => {
                    let p: Vec<(&str, bool)> =
                        prompts.iter().map(|(t, e)| (t.as_str(), *e)).collect();
                    conn.auth_info_request(&name, &instruction, &p)
                        .map_err(|e| e.to_string())?;
                    kbdint = Some(user);
                }
            }
        }
        flush(&mut conn, &mut sock)?;
        let timeout = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    conn.disconnect(reason::BY_APPLICATION, "Timeout before authentication");
                    let _ = flush(&mut conn, &mut sock);
                    return Err("Timeout before authentication".into());
                }
                PollTimeout::try_from(left.as_millis().min(60_000) as i32)
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        let n = match sock.read(&mut buf) {
            Ok(0) => {
                log_line(&format!(
                    "Connection closed{} before authentication",
                    by_user(&auth_user)
                ));
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read: {e}")),
        };
        if let Err(e) = conn.handle_input(&buf[..n], Instant::now()) {
            let _ = flush(&mut conn, &mut sock);
            return Err(e.to_string());
        }
    }
}

/// " by authenticating user NAME" once the client named a user.
fn by_user(user: &Option<String>) -> String {
    match user {
        Some(u) => format!(" by authenticating user {u}"),
        None => String::new(),
    }
}

fn flush(conn: &mut Connection, sock: &mut TcpStream) -> Result<(), String> {
    let out = conn.take_output();
    if !out.is_empty() {
        sock.write_all(&out).map_err(|e| format!("write: {e}"))?;
    }
    Ok(())
}
