//! resshd-session: the post-authentication worker of resshd, one per
//! connection, running as the user (the process model: docs/ARCHITECTURE.md).
//!
//! The monitor execs it as root with `--uid --gid --groups` of the user,
//! cwd `/`, and its IPC endpoint on fd 3; the worker changes to the user
//! itself, so it is never dumpable (`ressh_ipc::harden`). The worker receives
//! `ToSession::Start` with the client's TCP socket, imports the connection
//! state exported by the kex worker, and serves the connection protocol
//! (sessions, ptys, forwarding) until the client goes away. Host-key
//! signatures for rekeys are asked from the monitor.
//!
//! With the resilience extension (docs/PROTOCOL.md) a broken transport
//! detaches the session instead of ending it; the monitor then routes a
//! reconnect to it (`ToSession::Reconnect`, then `ToSession::Transport` with
//! the new socket), see `session::resume`.

mod channels;
mod child;
mod env;
mod idle;
#[macro_use]
mod log;
mod pty;
mod session;
mod signer;

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use ressh_ipc::msg::ToSession;
use ressh_ipc::Endpoint;
use ressh_proto::cert::Certificate;
use ressh_proto::keys::PublicKey;
use ressh_proto::Connection;
use zeroize::Zeroize;

/// The fd the monitor puts the IPC endpoint on.
const IPC_FD: i32 = 3;
/// How long to wait for the monitor: for Start, and for the rest of a
/// frame it has begun.
const IPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the worker gives up (logged as "fatal: ..."; it exits 1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Becoming the user or forbidding tracing failed (`ressh_ipc::harden`).
    #[error("{0}")]
    Harden(String),
    #[error("no IPC endpoint on fd {IPC_FD}: {0}")]
    NoEndpoint(nix::Error),
    #[error(transparent)]
    Ipc(#[from] ressh_ipc::Error),
    #[error("waiting for Start: {0}")]
    NoStart(ressh_ipc::Error),
    #[error("the first message was not Start")]
    NotStart,
    #[error("Start came with {0} fds, not 1")]
    StartFds(usize),
    #[error("host key from monitor: {0}")]
    HostKey(ressh_proto::Error),
    #[error("importing the connection: {0}")]
    Import(ressh_proto::Error),
    /// What the event loop needs of the system (poll, the signal pipe).
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

/// `--chroot DIR` (first on the command line, from the monitor): taken out
/// of `args`, the rest is `--uid --gid --groups`.
fn take_chroot(args: &mut Vec<String>) -> Result<Option<String>, Error> {
    if args.first().map(String::as_str) != Some("--chroot") {
        return Ok(None);
    }
    if args.len() < 2 {
        return Err(Error::Harden("--chroot needs a value".into()));
    }
    let dir = args.remove(1);
    args.remove(0);
    Ok(Some(dir))
}

fn main() {
    let code = match run() {
        Ok(()) => 0,
        Err(e) => {
            log!("fatal: {e}");
            1
        }
    };
    std::process::exit(code);
}

#[allow(unsafe_code)] // adopting the monitor link passed as descriptor 3
fn run() -> Result<(), Error> {
    // First of all, before fd 3 is used: become the user (when exec'd as
    // root) and make this process untraceable (see ressh_ipc::harden).
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let chroot = take_chroot(&mut args)?;
    let user = ressh_ipc::harden::user_args(&args).map_err(Error::Harden)?;
    // Refuse a tracer while /proc is still in view (a tracer of this root
    // process can only be root); becoming the user below makes the
    // process non-dumpable again, and the user never sees it dumpable.
    ressh_ipc::harden::forbid_tracing().map_err(Error::Harden)?;
    if let Some(dir) = &chroot {
        // sshd calls initgroups(3) before its chroot, which loads every
        // NSS module of the group database (with nss-systemd, the one that
        // knows root and nobody without /etc/passwd): a group-list lookup
        // here does the same, so owners are named inside the jail as under
        // sshd. Its answer is not used.
        let _ = nix::unistd::getgrouplist(c"root", nix::unistd::Gid::from_raw(0));
        // ChrootDirectory: entered as root, before the user's credentials
        // and before anything is read from anyone; the monitor checked
        // the path's ownership and modes. Once the user, this process
        // holds no descriptor or directory outside the jail.
        nix::unistd::chroot(dir.as_str())
            .and_then(|()| nix::unistd::chdir("/"))
            .map_err(|e| Error::Harden(format!("chroot(\"{dir}\"): {e}")))?;
    }
    if let Some((uid, gid, groups)) = user {
        ressh_ipc::harden::become_user(uid, gid, &groups).map_err(Error::Harden)?;
    }
    ressh_ipc::harden::non_dumpable().map_err(Error::Harden)?;
    // Take fd 3, and keep it from every child.
    fcntl(IPC_FD, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(Error::NoEndpoint)?;
    // SAFETY: fd 3 is open (checked above) and nothing else in this process owns it.
    let endpoint = Arc::new(Endpoint::from_fd(unsafe { OwnedFd::from_raw_fd(IPC_FD) }));
    endpoint.set_timeout(Some(IPC_TIMEOUT))?;
    log::to_monitor(endpoint.clone());

    let (msg, mut fds) = endpoint.recv::<ToSession>().map_err(Error::NoStart)?;
    let ToSession::Start(mut start) = msg else {
        return Err(Error::NotStart);
    };
    if fds.len() != 1 {
        return Err(Error::StartFds(fds.len()));
    }
    let sock = std::net::TcpStream::from(fds.remove(0));

    let host_keys = start
        .host_keys
        .iter()
        .map(|b| PublicKey::from_blob(b))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::HostKey)?;
    let host_certs = start
        .host_certs
        .iter()
        .map(|b| Certificate::from_blob(b))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::HostKey)?;
    let conn = Connection::import(&start.state, host_keys, Instant::now());
    // The state holds the session keys: wipe this copy at once.
    start.state.zeroize();
    let mut conn = conn.map_err(Error::Import)?;
    conn.set_host_certificates(host_certs)
        .map_err(Error::HostKey)?;

    let start = *start;
    let auth_info_file =
        start
            .policy
            .auth_info
            .as_deref()
            .and_then(|text| match env::write_auth_info(text) {
                Ok(path) => Some(path),
                Err(e) => {
                    log!("ExposeAuthInfo: cannot write /tmp/sshauth.*: {e}");
                    None
                }
            });
    let info = channels::Info {
        user: start.user,
        policy: start.policy,
        peer_addr: start.peer_addr,
        peer_port: start.peer_port,
        local_addr: start.local_addr,
        local_port: start.local_port,
        pam_env: start.pam_env,
        login_message: start.login_message,
        auth_info_file,
        chrooted: chroot.is_some(),
    };
    let mut s = session::Session::new(conn, sock, info, endpoint)?;
    s.run()
}
