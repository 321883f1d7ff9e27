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
use ressh_proto::{AuthAttempt, Connection, Event, SignRequest};

struct Args {
    chroot: Option<PathBuf>,
    uid: Option<u32>,
    gid: Option<u32>,
}

/// Why the worker stopped early; logged as one line.
#[derive(Debug)]
enum Error {
    /// A bad command line.
    Usage(String),
    /// Root, without the arguments to drop privileges.
    RootWithoutSandbox,
    Sandbox(sandbox::Error),
    Rng(openssl::error::ErrorStack),
    /// The link to the monitor failed.
    Ipc(ressh_ipc::Error),
    /// The monitor sent something out of turn.
    Monitor(&'static str),
    /// A host key from the monitor did not decode.
    HostKey(ressh_proto::Error),
    /// The SSH connection ended on an error.
    Ssh(ressh_proto::Error),
    /// The client's socket failed.
    Socket(&'static str, std::io::Error),
    Poll(nix::Error),
    /// LoginGraceTime passed.
    Timeout,
    /// Keyboard-interactive answers nobody asked for.
    UnexpectedInfoResponse,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Usage(what) => write!(f, "{what}"),
            Error::RootWithoutSandbox => {
                write!(
                    f,
                    "refusing to run as root without --chroot, --uid and --gid"
                )
            }
            Error::Sandbox(e) => write!(f, "{e}"),
            Error::Rng(e) => write!(f, "random number generator: {e}"),
            Error::Ipc(e) => write!(f, "{e}"),
            Error::Monitor(what) => write!(f, "{what}"),
            Error::HostKey(e) => write!(f, "host key from monitor: {e}"),
            Error::Ssh(e) => write!(f, "{e}"),
            Error::Socket(op, e) => write!(f, "{op}: {e}"),
            Error::Poll(e) => write!(f, "poll: {e}"),
            Error::Timeout => write!(f, "Timeout before authentication"),
            Error::UnexpectedInfoResponse => write!(f, "info response without a request"),
        }
    }
}

impl From<ressh_ipc::Error> for Error {
    fn from(e: ressh_ipc::Error) -> Self {
        Error::Ipc(e)
    }
}

impl From<ressh_proto::Error> for Error {
    fn from(e: ressh_proto::Error) -> Self {
        Error::Ssh(e)
    }
}

impl From<sandbox::Error> for Error {
    fn from(e: sandbox::Error) -> Self {
        Error::Sandbox(e)
    }
}

fn parse_args() -> Result<Args, Error> {
    let mut a = Args {
        chroot: None,
        uid: None,
        gid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| Error::Usage(format!("{k} needs a value")))?;
        let id = |what: &str| v.parse().map_err(|_| Error::Usage(format!("bad {what}")));
        match k.as_str() {
            "--chroot" => a.chroot = Some(PathBuf::from(&v)),
            "--uid" => a.uid = Some(id("--uid")?),
            "--gid" => a.gid = Some(id("--gid")?),
            _ => return Err(Error::Usage(format!("unknown argument {k}"))),
        }
    }
    Ok(a)
}

/// Asks the monitor to sign an exchange hash, and waits for its answer.
fn sign(ipc: &Endpoint, r: SignRequest) -> Result<Vec<u8>, Error> {
    let req = FromKex::Sign {
        key: r.key.to_blob(),
        alg: r.algorithm,
        data: r.data,
    };
    ipc.send(&req, &[])?;
    match ipc.recv::<ToKex>()? {
        (ToKex::Signature(Ok(sig)), _) => Ok(sig),
        (ToKex::Signature(Err(e)), _) => {
            log_line(&format!(
                "host key signing failed: {}",
                ressh_proto::wire::printable(e.as_bytes())
            ));
            Err(Error::Monitor("the monitor did not sign"))
        }
        _ => Err(Error::Monitor("monitor answered out of turn")),
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
            log_line(&e.to_string());
            ExitCode::from(1)
        }
    }
}

#[allow(unsafe_code)] // adopting the descriptors resshd passes as 3 and 4
fn run() -> Result<(), Error> {
    let args = parse_args()?;
    // SAFETY: the monitor passes these two descriptors to us; nothing else
    // in this process refers to them.
    let (ipc, sock) = unsafe { (OwnedFd::from_raw_fd(3), OwnedFd::from_raw_fd(4)) };
    // OpenSSL loads its configuration and seeds its RNG before the chroot.
    openssl::init();
    let mut warm = [0u8; 32];
    openssl::rand::rand_bytes(&mut warm).map_err(Error::Rng)?;
    if let (Some(root), Some(uid), Some(gid)) = (&args.chroot, args.uid, args.gid) {
        sandbox::drop_privileges(root, uid, gid)?;
    } else if nix::unistd::geteuid().is_root() {
        return Err(Error::RootWithoutSandbox);
    }
    sandbox::confine()?;

    let ipc = Arc::new(Endpoint::from_fd(ipc));
    let _ = MONITOR.set(ipc.clone());
    let start = match ipc.recv::<ToKex>()? {
        (ToKex::Start(s), _) => s,
        _ => return Err(Error::Monitor("monitor did not start with Start")),
    };
    let keys = start
        .host_keys
        .iter()
        .map(|k| PublicKey::from_blob(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::HostKey)?;
    let now = Instant::now();
    let deadline =
        (start.login_grace_secs > 0).then(|| now + Duration::from_secs(start.login_grace_secs));
    let certs = start
        .host_certs
        .iter()
        .map(|b| ressh_proto::cert::Certificate::from_blob(b))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::HostKey)?;
    let mut conn = Connection::server_with_certificates(start.proto.clone(), keys, certs, now)?;
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
                Event::SignHostKey(r) => {
                    // The key exchange waits for the monitor's signature;
                    // without one it ends with a DISCONNECT.
                    let (signature, failed) = match sign(&ipc, r) {
                        Ok(sig) => (Some(sig), None),
                        Err(e) => (None, Some(e)),
                    };
                    let r = conn.host_key_signed(signature, Instant::now());
                    if let Some(e) = failed {
                        let _ = flush(&mut conn, &mut sock);
                        return Err(e);
                    }
                    if let Err(e) = r {
                        let _ = flush(&mut conn, &mut sock);
                        return Err(e.into());
                    }
                    continue;
                }
                Event::AuthRequest { user, attempt } => {
                    kbdint = None;
                    auth_user = Some(ressh_proto::wire::printable(user.as_bytes()));
                    if let Some(text) = banner.take() {
                        conn.auth_banner(&text)?;
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
                        return Err(Error::UnexpectedInfoResponse);
                    };
                    (user, AuthRequest::InfoResponse(answers), None)
                }
                Event::ReconnectRequest(request) => {
                    // Resume an existing session: the monitor routes the
                    // request; the socket goes to the session only if it
                    // validates. Everything we had to send is sent.
                    flush(&mut conn, &mut sock)?;
                    let leftover = conn.take_unprocessed_input();
                    ipc.send(&FromKex::Reconnect { request, leftover }, &[])?;
                    return match ipc.recv::<ToKex>()? {
                        (ToKex::ReconnectHandedOver, _) => Ok(()),
                        (ToKex::ReconnectRefused { code, description }, _) => {
                            let refused = ressh_proto::Refused { code, description };
                            conn.reconnect_failure(&refused)?;
                            let _ = flush(&mut conn, &mut sock);
                            Ok(())
                        }
                        _ => Err(Error::Monitor("monitor answered out of turn")),
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
            )?;
            let verdict = match ipc.recv::<ToKex>()? {
                (ToKex::Verdict(v), _) => v,
                _ => return Err(Error::Monitor("monitor answered out of turn")),
            };
            match verdict {
                AuthVerdict::Accept => {
                    conn.auth_accept()?;
                    // The USERAUTH_SUCCESS travels in the exported output.
                    let state = conn.export(Instant::now())?;
                    ipc.send(
                        &FromKex::Authenticated {
                            state: state.to_vec(),
                        },
                        &[],
                    )?;
                    return Ok(());
                }
                AuthVerdict::Reject { methods, partial } => {
                    let m: Vec<&str> = methods.iter().map(|s| s.as_str()).collect();
                    conn.auth_reject(&m, partial)?;
                }
                AuthVerdict::PkOk => {
                    let (alg, blob) =
                        pk.ok_or(Error::Monitor("PkOk for a request that was no key query"))?;
                    let key = ressh_proto::OfferedKey::from_blob(&alg, &blob)?;
                    conn.auth_pk_ok(&alg, &key)?;
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
                    conn.auth_info_request(&name, &instruction, &p)?;
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
                    return Err(Error::Timeout);
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
            Err(e) => return Err(Error::Poll(e)),
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
            Err(e) => return Err(Error::Socket("read", e)),
        };
        if let Err(e) = conn.handle_input(&buf[..n], Instant::now()) {
            let _ = flush(&mut conn, &mut sock);
            return Err(e.into());
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

fn flush(conn: &mut Connection, sock: &mut TcpStream) -> Result<(), Error> {
    let out = conn.take_output();
    if !out.is_empty() {
        sock.write_all(&out)
            .map_err(|e| Error::Socket("write", e))?;
    }
    Ok(())
}
