//! The per-connection monitor: root, forked from resshd for one TCP
//! connection. It starts the unprivileged kex worker, answers its closed
//! set of requests (host-key signatures, auth decisions), then starts the
//! session worker as the authenticated user and signs its rekeys.
//!
//! Every request from a worker is checked against the monitor's own state:
//! signatures before auth only for the key exchange, auth decisions only
//! before success and only after a session id exists, the hand-over only
//! after the monitor itself accepted a user.

use std::collections::VecDeque;
use std::ffi::CString;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ressh_ipc::msg::{
    AuthRequest, AuthVerdict, Forwarding, FromBroker, FromKex, FromSession, KexStart,
    SessionPolicy, SessionStart, ToBroker, ToKex, ToSession, UserInfo, X11Policy,
};
use ressh_ipc::Endpoint;
use ressh_proto::cert::Certificate;
use ressh_proto::keys;
use ressh_proto::wire::{printable, Put as _};
use ressh_proto::OfferedKey;

use crate::authkeys::{self, KeyOptions, PeerInfo};
use crate::config::{
    Config, GatewayPorts, MatchContext, PermitRootLogin, PermitUserEnvironment, Settings,
};
use crate::gate::{HashLengths, KexGate, LogBudget, LogVerdict, SessionGate, Violation};
use crate::hostkeys::HostKeys;
use crate::log;
use crate::loginrec::{self, Login};
use crate::pam::{self, Pam};
use crate::policy;
use crate::{keys_command, revoked};
use zeroize::Zeroizing;

/// Why a connection's monitor gives up (logged with the peer's address;
/// the monitor exits 1). A worker that closes its link is no error: the
/// connection ended (see `link_end`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The link to a worker or to the broker failed.
    #[error(transparent)]
    Ipc(#[from] ressh_ipc::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("cannot start {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("Timeout before authentication")]
    LoginGraceTime,
    /// The kex worker asked what its phase does not allow.
    #[error("kex worker: {0}")]
    KexViolation(Violation),
    /// The session worker asked what its phase does not allow (logged
    /// under "session worker: ").
    #[error(transparent)]
    SessionViolation(Violation),
    /// A worker or the broker sent what the monitor's state refuses.
    #[error("{0}")]
    Unexpected(String),
    /// The session worker leaves its queue unread.
    #[error("the session worker does not read: {0}")]
    WorkerQueueFull(ressh_ipc::Error),
    #[error("the session worker has read nothing for {} s", .0.as_secs())]
    WorkerStalled(Duration),
    #[error("PAM: {call}: {source}")]
    Pam {
        call: &'static str,
        source: pam::PamError,
    },
    /// ChrootDirectory cannot be used (sshd's message).
    #[error("{0}")]
    Chroot(String),
    #[error("{call}: {source}")]
    Sys {
        call: &'static str,
        source: nix::Error,
    },
}

/// Why a reconnect from a new address is refused: logged; the client
/// hears only NOT_ALLOWED.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    /// The configuration or the account refuses, in sshd's words.
    #[error("{0}")]
    Policy(String),
    /// PAM could not be asked.
    #[error(transparent)]
    Pam(#[from] Error),
    #[error("PAM: {0}")]
    PamItem(pam::PamError),
    #[error("PAM account management refuses {user}: {source}")]
    PamAccount { user: String, source: pam::PamError },
}

/// How workers are confined.
#[derive(Debug, Clone)]
pub enum Privsep {
    /// resshd runs as root: the kex worker runs as `uid`/`gid` chrooted in
    /// `chroot`; session workers run as the authenticated user.
    Root { uid: u32, gid: u32, chroot: PathBuf },
    /// resshd runs as an ordinary user: only that user can log in, and no
    /// process changes uid.
    Unprivileged { uid: u32 },
}

/// What every monitor shares, set up once by resshd.
pub struct Context {
    /// Where resshd's broker listens (BrokerSocket).
    pub broker_socket: PathBuf,
    pub config: Arc<Config>,
    pub host_keys: Arc<HostKeys>,
    pub kex_worker: PathBuf,
    pub session_worker: PathBuf,
    pub privsep: Privsep,
}

/// Runs the monitor for one connection; returns the process exit code: 0
/// after a session, 255 (as sshd) when the connection ended before
/// authentication or on an error.
pub fn run(ctx: &Context, sock: OwnedFd, peer: SocketAddr, local: SocketAddr) -> i32 {
    let (peer, local) = match behind_balancer(ctx, &sock, peer, local) {
        Ok(addrs) => addrs,
        Err(()) => return 255,
    };
    let rdomain = rdomain_of(&sock);
    let broker = connect_broker(&ctx.broker_socket);
    let mut m = Monitor {
        ctx,
        peer,
        local,
        settings: ctx.config.resolve(&MatchContext {
            // UseDNS no: the host is the address, as in sshd.
            host: known(peer).then(|| peer.ip().to_string()),
            addr: known(peer).then(|| peer.ip()),
            local_addr: known(local).then(|| local.ip()),
            local_port: known(local).then(|| local.port()),
            rdomain: rdomain.clone(),
            ..Default::default()
        }),
        rdomain,
        session_id: None,
        host_key_alg: None,
        kex_gate: KexGate::default(),
        session_gate: SessionGate::default(),
        failures: 0,
        accepted: None,
        broker,
        tokens: Vec::new(),
        partial: None,
        pam: None,
        stashed: None,
        ipc_failure: None,
        login_messages: Vec::new(),
        logins: Vec::new(),
        worker_pid: 0,
        log_budget: LogBudget::new(Instant::now()),
        grace_deadline: None,
        relay: None,
    };
    // Signatures only over data as long as this connection's exchange
    // hashes can be.
    let hashes = HashLengths::of(&m.settings.kex_algorithms);
    m.kex_gate = KexGate::new(hashes.clone());
    m.session_gate = SessionGate::new(hashes);
    crate::keepalive::apply(&sock, m.settings.tcp_keep_alive);
    match m.run(sock) {
        Ok(Ended::Session) => 0,
        Ok(Ended::BeforeAuthentication) => 255,
        Err(e) => {
            log::error(&format!("{}: {e}", m.who()));
            255
        }
    }
}

/// The client's address and the one it connected to: from the PROXY
/// protocol header when `peer` is a ProxyProtocolFrom balancer, else the
/// connection's own. Err: a balancer's connection without a valid header,
/// logged and dropped.
fn behind_balancer(
    ctx: &Context,
    sock: &OwnedFd,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<(SocketAddr, SocketAddr), ()> {
    let list = ctx.config.global().proxy_protocol_from;
    if !crate::proxy::from_balancer(list.as_deref(), peer) {
        return Ok((peer, local));
    }
    match crate::proxy::read_header(sock, peer, local, crate::proxy::HEADER_TIME) {
        Ok((client, to)) => {
            log::info(&format!(
                "PROXY protocol header from balancer {} port {}: client {} port {} to {} port {}",
                shown_ip(peer),
                shown_port(peer),
                shown_ip(client),
                shown_port(client),
                shown_ip(to),
                shown_port(to)
            ));
            Ok((client, to))
        }
        Err(e) => {
            log::info(&format!(
                "Connection from balancer {} port {} dropped: {e}",
                shown_ip(peer),
                shown_port(peer)
            ));
            Err(())
        }
    }
}

/// The routing domain of a connection: the device its socket is bound to
/// (a VRF on Linux), as sshd's `sys_get_rdomain()` reads it.
fn rdomain_of(sock: &OwnedFd) -> Option<String> {
    let dev = nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::BindToDevice).ok()?;
    let dev = dev.to_string_lossy().trim_end_matches('\0').to_string();
    (!dev.is_empty()).then_some(dev)
}

/// ExposeAuthInfo's text: a line per method, a public key step with its key
/// (the key or certificate as a key file line has it), in the order done.
fn auth_info(methods: &[String], keys: &[Vec<u8>]) -> String {
    let mut keys = keys.iter();
    let mut out = String::new();
    for m in methods {
        out.push_str(m);
        if m == "publickey" {
            if let Some(blob) = keys.next() {
                let mut r = ressh_proto::wire::Reader::new(blob);
                let name = r.string().map(printable).unwrap_or_default();
                out.push(' ');
                out.push_str(&name);
                out.push(' ');
                out.push_str(&openssl::base64::encode_block(blob));
            }
        }
        out.push('\n');
    }
    out
}

/// How a connection ended without an error.
enum Ended {
    /// After a session (or after handing a reconnect to its session).
    Session,
    /// Before the user authenticated: a version mismatch, a failed key
    /// exchange or login, a client that went away.
    BeforeAuthentication,
}

/// What a reconnect re-checks of the certificate a user logged in with.
#[derive(Clone, Debug)]
struct CertValidity {
    key_id: String,
    serial: u64,
    valid_after: u64,
    valid_before: u64,
}

struct Accepted {
    user: nix::unistd::User,
    groups: Vec<u32>,
    /// The key options of the login (a certificate's merged in, its
    /// source-address among them).
    options: KeyOptions,
    /// Each publickey step's own options and certificate: a reconnect
    /// re-checks every key's from=, expiry-time and certificate.
    steps: Vec<(KeyOptions, Option<CertValidity>)>,
    settings: Settings,
    /// The methods the user authenticated with, in order.
    methods: Vec<String>,
    /// The public keys (blobs) of its publickey steps.
    keys: Vec<Vec<u8>>,
}

struct Monitor<'a> {
    ctx: &'a Context,
    peer: SocketAddr,
    local: SocketAddr,
    /// The connection's routing domain (`Match RDomain`).
    rdomain: Option<String>,
    /// The host key algorithm of the last exchange signed.
    host_key_alg: Option<String>,
    /// Settings for the connection before the user is known.
    settings: Settings,
    /// The first exchange hash signed: the session id.
    session_id: Option<Vec<u8>>,
    /// Which request each worker may make now.
    kex_gate: KexGate,
    session_gate: SessionGate,
    failures: u32,
    accepted: Option<Accepted>,
    broker: Option<Endpoint>,
    /// The session's current resume tokens, to register again.
    tokens: Vec<Vec<u8>>,
    /// Methods that succeeded so far (AuthenticationMethods with more
    /// than one method).
    partial: Option<Partial>,
    /// The PAM transaction (UsePAM): from the first password,
    /// keyboard-interactive or account check until the session ends.
    pam: Option<Pam>,
    /// A request from the kex worker that cut a keyboard-interactive
    /// conversation short: handled next.
    stashed: Option<FromKex>,
    /// The link to the kex worker broke inside a PAM conversation.
    ipc_failure: Option<ressh_ipc::Error>,
    /// Messages from PAM (account management, session) for the login.
    login_messages: Vec<String>,
    /// Logins recorded in utmp/wtmp, to record the logout.
    logins: Vec<Login>,
    /// The pid of the worker running now, for its log lines.
    worker_pid: u32,
    /// How many log lines the workers may still send (one budget for the
    /// connection, kex and session worker alike).
    log_budget: LogBudget,
    /// When LoginGraceTime ends (None: never).
    grace_deadline: Option<Instant>,
    /// A reconnect that another fleet node's session accepted: the asking
    /// process that relays this connection's bytes from now on.
    relay: Option<std::process::Child>,
}

/// Progress through AuthenticationMethods for one user.
struct Partial {
    user: String,
    completed: Vec<String>,
    /// The authorized_keys options of the publickey steps, merged as
    /// sshd's auth_activate_options: a later key adds its restrictions and
    /// lifts none of an earlier one's.
    options: KeyOptions,
    /// Each of those steps' own options and certificate.
    steps: Vec<(KeyOptions, Option<CertValidity>)>,
    used_keys: Vec<Vec<u8>>,
    settings: Settings,
}

/// Moves `fds` to 3, 4, ... in a child between fork and exec, and keeps
/// every other descriptor above them from the exec: whatever resshd was
/// started with, a PAM module left open, or a library opened without
/// close-on-exec reaches neither worker nor the user's processes.
/// Async-signal-safe: only dup/dup2/close/close_range calls.
pub(crate) fn place_fds(fds: &[i32]) -> std::io::Result<()> {
    let mut high = Vec::with_capacity(fds.len());
    for &fd in fds {
        high.push(nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD(100))?);
    }
    for (i, &h) in high.iter().enumerate() {
        // dup2 onto the fixed slot clears close-on-exec there.
        nix::unistd::dup2(h, 3 + i as i32)?;
    }
    // The temporary copies are not close-on-exec (F_DUPFD): left open, they
    // would reach the worker and every process it starts (the user's).
    for &h in &high {
        let _ = nix::unistd::close(h);
    }
    ressh_ipc::harden::cloexec_from(3 + fds.len() as i32)
}

impl Monitor<'_> {
    fn who(&self) -> String {
        match &self.accepted {
            Some(a) => format!("user {} {}", a.user.name, self.at()),
            None => self.at(),
        }
    }

    /// "ADDRESS port PORT" of the peer for logs, or sshd's "UNKNOWN port
    /// 65535" where the connection is no socket (inetd mode over pipes).
    fn at(&self) -> String {
        format!("{} port {}", self.peer_ip(), self.peer_port())
    }

    fn peer_ip(&self) -> String {
        shown_ip(self.peer)
    }

    fn peer_port(&self) -> u16 {
        shown_port(self.peer)
    }

    fn run(&mut self, sock: OwnedFd) -> Result<Ended, Error> {
        log::info(&format!(
            "Connection from {} on {} port {}",
            self.at(),
            shown_ip(self.local),
            shown_port(self.local)
        ));
        let (ipc, mut child) = self.spawn_kex(&sock)?;
        self.worker_pid = child.id();
        let result = self.serve_kex(&ipc);
        let mut handed_over = false;
        let result = match result {
            Ok(KexOutcome::Reconnect(request, leftover)) => {
                // The worker waits for our answer before it exits.
                handed_over = true;
                self.route_reconnect(&ipc, &sock, request, leftover)
                    .map(|()| KexOutcome::Closed)
            }
            other => other,
        };
        // The worker exits by itself after the hand-over; make sure of it.
        if result.is_err() {
            let _ = child.kill();
        }
        match child.wait() {
            Ok(st) => {
                use std::os::unix::process::ExitStatusExt;
                if let Some(sig) = st.signal() {
                    if sig != libc::SIGKILL || result.is_ok() {
                        log::error(&format!(
                            "{}: kex worker killed by signal {sig}",
                            self.who()
                        ));
                    }
                }
            }
            Err(e) => log::error(&format!("wait for kex worker: {e}")),
        }
        if let Some(asker) = self.relay.take() {
            drop(sock);
            crate::fleet::relay_ended(asker, &self.who());
            return Ok(Ended::Session);
        }
        let KexOutcome::Authenticated(state) = result? else {
            return Ok(if handed_over {
                Ended::Session
            } else {
                Ended::BeforeAuthentication
            });
        };
        if let (Some(b), Some(a)) = (&self.broker, &self.accepted) {
            let _ = b.send(
                &ressh_ipc::msg::ToBroker::Authenticated {
                    user: a.user.name.clone(),
                },
                &[],
            );
        }
        self.run_session(sock, state).map(|()| Ended::Session)
    }

    #[allow(unsafe_code)] // pre_exec (placing the worker's descriptors)
    fn spawn_kex(&self, sock: &OwnedFd) -> Result<(Endpoint, Child), Error> {
        let (ours, theirs) = Endpoint::pair()?;
        let mut cmd = Command::new(&self.ctx.kex_worker);
        // Not the log on fd 2: the worker logs through us (FromKex::Log),
        // and what else it might write there (a panic) goes nowhere.
        cmd.env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Privsep::Root { uid, gid, chroot } = &self.ctx.privsep {
            cmd.arg("--chroot").arg(chroot);
            cmd.arg("--uid").arg(uid.to_string());
            cmd.arg("--gid").arg(gid.to_string());
        }
        let fds = [theirs.as_raw_fd(), sock.as_raw_fd()];
        // SAFETY: place_fds only calls async-signal-safe functions.
        unsafe { cmd.pre_exec(move || place_fds(&fds)) };
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            program: self.ctx.kex_worker.clone(),
            source,
        })?;
        drop(theirs);
        let s = &self.settings;
        let start = KexStart {
            proto: policy::proto_config(s),
            host_keys: self.ctx.host_keys.public_blobs(),
            host_certs: self.ctx.host_keys.cert_blobs(),
            banner: policy::banner_text(s),
            login_grace_secs: s.login_grace_time.as_secs(),
        };
        ours.send(&ToKex::Start(Box::new(start)), &[])?;
        Ok((ours, child))
    }

    /// `hostkeys-prove-00@openssh.com` (OpenSSH's serverloop.c): for each
    /// blob, one of our host keys, a signature over the statement
    /// `string "hostkeys-prove-00@openssh.com" || string session id ||
    /// string blob`, made here from what the monitor knows (the session id
    /// of the one signed exchange): never over data the worker chose. RSA
    /// keys sign with the exchange's RSA algorithm, else rsa-sha2-512.
    fn prove_host_keys(&self, blobs: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String> {
        let sid = self.session_id.as_ref().ok_or("no session id")?;
        blobs
            .iter()
            .map(|blob| {
                let k = self
                    .ctx
                    .host_keys
                    .find(blob)
                    .ok_or("not one of our host keys")?;
                let pubkey = k.public_key();
                let algs = pubkey.signature_algorithms();
                let alg = match &self.host_key_alg {
                    Some(a) if algs.contains(&a.as_str()) => a.as_str(),
                    _ if algs.contains(&"rsa-sha2-512") => "rsa-sha2-512",
                    _ => algs.first().copied().ok_or("no signature algorithm")?,
                };
                let mut data = Vec::new();
                data.put_str("hostkeys-prove-00@openssh.com");
                data.put_string(sid);
                data.put_string(blob);
                self.ctx.host_keys.sign(k, alg, &data)
            })
            .collect()
    }

    fn sign(&self, key: &[u8], alg: &str, data: &[u8]) -> Result<Vec<u8>, String> {
        let k = self.ctx.host_keys.find(key).ok_or("no such host key")?;
        self.ctx.host_keys.sign(k, alg, data)
    }

    /// A new connection that asks to resume a session: ask the broker to
    /// route the request to the owning session; only after it validated,
    /// hand the socket over (the path of a reconnect in docs/ARCHITECTURE.md).
    fn route_reconnect(
        &mut self,
        kex: &Endpoint,
        sock: &OwnedFd,
        request: Box<ressh_proto::ReconnectRequest>,
        leftover: Vec<u8>,
    ) -> Result<(), Error> {
        use ressh_proto::resilience::failure;
        let who = self.who();
        let fleet = self
            .settings
            .fleet_key
            .clone()
            .zip(self.settings.fleet_nodes.clone());
        let asked = fleet.as_ref().map(|_| crate::fleet::Ask {
            request: request.clone(),
            peer_addr: self.peer.ip().to_string(),
            peer_port: self.peer.port(),
            leftover: leftover.clone(),
        });
        let result = match &self.broker {
            // resshd is restarting: the client tries again.
            None => Err((
                ressh_proto::resilience::failure::TRY_AGAIN,
                "no broker".to_string(),
            )),
            Some(b) => {
                b.set_timeout(Some(Duration::from_secs(15)))?;
                b.send(
                    &ToBroker::Route {
                        request,
                        peer_addr: self.peer.ip().to_string(),
                        peer_port: self.peer.port(),
                    },
                    &[],
                )?;
                match b.recv::<FromBroker>() {
                    Ok((FromBroker::RouteResult(r), _)) => r,
                    Ok(_) => return Err(Error::Unexpected("broker answered out of turn".into())),
                    Err(e) => Err((
                        ressh_proto::resilience::failure::TRY_AGAIN,
                        format!("broker: {e}"),
                    )),
                }
            }
        };
        // Not a session of this node (or not yet: a restarted node's
        // sessions register again): another node of the fleet may own it.
        // No node does: this node's answer stands.
        let result = match (result, fleet, asked) {
            (Err((code, why)), Some((key, nodes)), Some(ask))
                if code == failure::UNKNOWN_SESSION || code == failure::TRY_AGAIN =>
            {
                match crate::fleet::ask_in_process(
                    sock,
                    &key,
                    &nodes,
                    &self.ctx.privsep,
                    &ask,
                    &who,
                ) {
                    Ok((node, asker)) => {
                        log::info(&format!(
                            "Reconnect from {who} relayed to its session on fleet node {node}"
                        ));
                        self.relay = Some(asker);
                        // The owner's session validated it: no longer a
                        // connection that has not authenticated, which the
                        // listener counts (MaxStartups) while this link to
                        // its broker is open, for the relay's life.
                        self.broker = None;
                        return Ok(kex.send(&ToKex::ReconnectHandedOver, &[])?);
                    }
                    Err((c, _)) if c == failure::UNKNOWN_SESSION => Err((code, why)),
                    Err(e) => Err(e),
                }
            }
            (result, _, _) => result,
        };
        match result {
            Ok(()) => {
                let b = self.broker.as_ref().expect("broker");
                b.send(
                    &ToBroker::Handover {
                        leftover,
                        peer_addr: self.peer.ip().to_string(),
                        peer_port: self.peer.port(),
                    },
                    &[sock.as_fd()],
                )?;
                log::info(&format!("Reconnect from {who} handed to its session"));
                Ok(kex.send(&ToKex::ReconnectHandedOver, &[])?)
            }
            Err((code, description)) => {
                log::info(&format!("Reconnect from {who} refused: {description}"));
                Ok(kex.send(&ToKex::ReconnectRefused { code, description }, &[])?)
            }
        }
    }

    /// Serves the kex worker until it hands over an authenticated
    /// connection, asks to resume a session, or goes away (the outcome).
    fn serve_kex(&mut self, ipc: &Endpoint) -> Result<KexOutcome, Error> {
        let grace = self.settings.login_grace_time;
        let deadline = (!grace.is_zero()).then(|| Instant::now() + grace + Duration::from_secs(1));
        self.grace_deadline = deadline;
        loop {
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::LoginGraceTime);
                }
                ipc.set_timeout(Some(left))?;
            }
            let msg = match self.stashed.take() {
                Some(m) => m,
                None => match ipc.recv::<FromKex>() {
                    Ok((m, _)) => m,
                    Err(e) => return link_end(e),
                },
            };
            // The table: anything out of phase kills the worker.
            self.kex_gate
                .check((&msg).into(), self.accepted.is_some())
                .map_err(Error::KexViolation)?;
            match msg {
                FromKex::Sign { key, alg, data } => {
                    // The one signature (the gate allows no second): its
                    // exchange hash is the session id.
                    self.session_id = Some(data.clone());
                    self.host_key_alg = Some(alg.clone());
                    let r = self.sign(&key, &alg, &data);
                    ipc.send(&ToKex::Signature(r), &[])?;
                }
                FromKex::Auth { user, request } => {
                    let v = self.judge(ipc, &user, request);
                    if let Some(e) = self.ipc_failure.take() {
                        return link_end(e);
                    }
                    // A conversation cut short: the next request is due.
                    let Some(v) = v else { continue };
                    if let AuthVerdict::Disconnect(t) = &v {
                        log::info(&format!("Disconnecting {}: {t}", self.who()));
                    }
                    ipc.send(&ToKex::Verdict(v), &[])?;
                }
                FromKex::Reconnect { request, leftover } => {
                    return Ok(KexOutcome::Reconnect(request, leftover));
                }
                FromKex::Authenticated { state } => {
                    return Ok(KexOutcome::Authenticated(state));
                }
                FromKex::Log(text) => {
                    let context = self.at();
                    self.relay_log("resshd-kex", &context, &text);
                }
            }
        }
    }

    fn reject(&mut self) -> AuthVerdict {
        self.failures += 1;
        let max = self.settings.max_auth_tries.max(1);
        if self.failures >= max {
            return AuthVerdict::Disconnect("Too many authentication failures".into());
        }
        let methods = match &self.partial {
            Some(p) => methods_left(&p.settings, &p.completed),
            None => methods_left(&self.settings, &[]),
        };
        AuthVerdict::Reject {
            methods,
            partial: false,
        }
    }

    /// Judges one user-auth request. None when no verdict is due: a
    /// keyboard-interactive conversation was cut short by another request
    /// (now in `stashed`) or by a broken link (`ipc_failure`).
    fn judge(&mut self, ipc: &Endpoint, sent: &str, request: AuthRequest) -> Option<AuthVerdict> {
        // "user:style" asks for a BSD authentication style, which Linux has
        // not: sshd drops the style, and so do we (a public-key signature
        // still covers the name as sent).
        let name = sent.split_once(':').map_or(sent, |(u, _)| u);
        let (ip, port) = (self.peer.ip(), self.peer.port());
        let at = self.at();
        if self.partial.as_ref().is_some_and(|p| p.user != name) {
            self.partial = None;
        }
        let method = match &request {
            AuthRequest::None => "none",
            AuthRequest::PublicKey { .. } => "publickey",
            AuthRequest::Password(_) => "password",
            AuthRequest::KeyboardInteractive => "keyboard-interactive",
            // Answers with no conversation in progress.
            AuthRequest::InfoResponse(_) => return Some(self.reject()),
        };
        let user = match self.lookup_user(name) {
            Some(u) => u,
            None => {
                if method != "none" {
                    log::info(&format!(
                        "Invalid user {} from {at}",
                        ressh_proto::wire::printable(name.as_bytes())
                    ));
                }
                // PAM runs for unknown users as for others (and fails), so
                // that prompts and timing do not tell which users exist.
                let s = self.settings.clone();
                if matches!(method, "password" | "keyboard-interactive")
                    && method_allowed(&s, &[], method)
                {
                    return self.pam_auth(ipc, name, None, request, s);
                }
                return Some(self.reject());
            }
        };
        let groups = user_groups(&user);
        let group_names: Vec<String> = groups
            .iter()
            .filter_map(|g| {
                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(*g))
                    .ok()
                    .flatten()
            })
            .map(|g| g.name)
            .collect();
        let settings = self.ctx.config.resolve(&MatchContext {
            user: Some(user.name.clone()),
            groups: group_names.clone(),
            host: Some(ip.to_string()),
            addr: Some(ip),
            local_addr: Some(self.local.ip()),
            local_port: Some(self.local.port()),
            rdomain: self.rdomain.clone(),
        });
        let peer = PeerInfo {
            addr: ip,
            port,
            hostname: None,
        };
        if let Err(why) = authkeys::user_host_allowed(
            &user.name,
            &peer,
            &group_names,
            &settings.allow_users,
            &settings.deny_users,
            &settings.allow_groups,
            &settings.deny_groups,
        ) {
            log::info(&why);
            return Some(self.reject());
        }
        if !settings.use_pam {
            // Without PAM, sshd refuses locked and expired accounts itself.
            if let Err(why) = shadow_account_ok(&user.name) {
                log::info(&why);
                return Some(self.reject());
            }
        }
        let completed = self
            .partial
            .as_ref()
            .map(|p| p.completed.clone())
            .unwrap_or_default();
        if method == "none" || !method_allowed(&settings, &completed, method) {
            return Some(self.reject());
        }
        match request {
            AuthRequest::PublicKey {
                algorithm,
                blob,
                signature,
            } => Some(self.publickey(sent, user, groups, settings, algorithm, blob, signature)),
            request => {
                if user.uid.is_root() && settings.permit_root_login != PermitRootLogin::Yes {
                    log::info(&format!("ROOT LOGIN REFUSED FROM {at}"));
                    return Some(self.reject());
                }
                self.pam_auth(ipc, name, Some((user, groups)), request, settings)
            }
        }
    }

    /// `sent`: the login name as the client sent it, which its signature
    /// covers.
    #[allow(clippy::too_many_arguments)]
    fn publickey(
        &mut self,
        sent: &str,
        user: nix::unistd::User,
        groups: Vec<u32>,
        settings: Settings,
        algorithm: String,
        blob: Vec<u8>,
        signature: Option<Vec<u8>>,
    ) -> AuthVerdict {
        let (ip, port) = (self.peer.ip(), self.peer.port());
        let at = self.at();
        let peer = PeerInfo {
            addr: ip,
            port,
            hostname: None,
        };
        if !settings.pubkey_authentication
            || !settings
                .pubkey_accepted_algorithms
                .iter()
                .any(|a| a == &algorithm)
        {
            return self.reject();
        }
        // Decoded (and a certificate's CA signature verified) here: the
        // worker's word about the key counts for nothing.
        let Ok(key) = OfferedKey::from_blob(&algorithm, &blob) else {
            return self.reject();
        };
        if let Some(why) = revoked::refusal(settings.revoked_keys.as_deref(), &key) {
            log::error(&why);
            return self.reject();
        }
        if let OfferedKey::Cert(c) = &key {
            if !settings
                .ca_signature_algorithms
                .iter()
                .any(|a| a == c.signature_algorithm)
            {
                log::info(&format!(
                    "refusing certificate key {} with signature type {}",
                    describe_key(&key),
                    c.signature_algorithm
                ));
                return self.reject();
            }
        }
        let now_unix = unix_now();
        let files: Vec<PathBuf> = settings
            .authorized_keys_files
            .iter()
            .filter_map(|p| {
                authkeys::expand_authorized_keys_path(p, &user.name, &user.dir, user.uid.as_raw())
                    .ok()
            })
            .collect();
        let (mut found, mut notes) = authkeys::find_key(
            &files,
            &key,
            &user.name,
            user.uid.as_raw(),
            user.gid.as_raw(),
            &user.dir,
            settings.strict_modes,
            &peer,
            now_unix,
        );
        if let (None, OfferedKey::Cert(cert)) = (&found, &key) {
            found = self.user_cert_trusted_ca(&user, &settings, cert, &peer, now_unix, &mut notes);
        }
        for n in notes {
            log::info(&n);
        }
        let found = match (found, &settings.authorized_keys_command) {
            (Some(f), _) => Some(f),
            (None, None) => None,
            (None, Some(command)) => {
                self.keys_command(&settings, command, &user, &key, &peer, now_unix)
            }
        };
        let Some(found) = found else {
            if signature.is_some() {
                log::info(&format!(
                    "Failed publickey for {} from {at} ssh2: {}",
                    user.name,
                    describe_key(&key)
                ));
            }
            return self.reject();
        };
        if user.uid.is_root() {
            let ok = match settings.permit_root_login {
                PermitRootLogin::Yes | PermitRootLogin::ProhibitPassword => true,
                PermitRootLogin::ForcedCommandsOnly => found.options.command.is_some(),
                PermitRootLogin::No => false,
            };
            if !ok {
                log::info(&format!("ROOT LOGIN REFUSED FROM {at}"));
                return self.reject();
            }
        }
        let Some(signature) = signature else {
            return AuthVerdict::PkOk;
        };
        let sid = self.session_id.clone().unwrap_or_default();
        let data = ressh_proto::msg::publickey_signed_data(
            &sid,
            sent,
            "ssh-connection",
            &algorithm,
            &blob,
        );
        let sk_flags = match key.verify_detailed(&algorithm, &data, &signature) {
            Ok(v) => v.sk.map(|(flags, _)| flags),
            _ => {
                log::info(&format!(
                    "Failed publickey for {} from {at}: bad signature",
                    user.name
                ));
                return self.reject();
            }
        };
        if let Some(flags) = sk_flags {
            // A security key's signature says whether the user touched the
            // key and was verified: auth2-pubkey.c's requirements.
            let required = settings.pubkey_auth_options;
            let touch = required.touch_required || !found.options.no_touch_required;
            let verify = required.verify_required || found.options.verify_required;
            let unmet = if touch && flags & keys::SK_USER_PRESENCE == 0 {
                Some("user presence (authenticator touch)")
            } else if verify && flags & keys::SK_USER_VERIFICATION == 0 {
                Some("user verification")
            } else {
                None
            };
            if let Some(what) = unmet {
                log::info(&format!(
                    "public key {} signature for {} from {at} rejected: {what} requirement not met",
                    describe_key(&key),
                    user.name
                ));
                return self.reject();
            }
        }
        // "publickey,publickey" needs two different keys: a key and its
        // certificate, or two certificates of one key, are one key (sshd's
        // auth2_key_already_used compares public parts).
        let plain = key.key().to_blob();
        if self.partial.as_ref().is_some_and(|p| {
            p.used_keys
                .iter()
                .any(|b| revoked::offered_key(b).is_ok_and(|k| k.key().to_blob() == plain))
        }) {
            log::info(&format!(
                "refusing previously-used key {} for {}",
                describe_key(&key),
                user.name
            ));
            return self.reject();
        }
        let text = format!(
            "publickey for {} from {at} ssh2: {}",
            user.name,
            describe_key(&key)
        );
        let validity = match &key {
            OfferedKey::Cert(c) => Some(CertValidity {
                key_id: c.key_id.clone(),
                serial: c.serial,
                valid_after: c.valid_after,
                valid_before: c.valid_before,
            }),
            OfferedKey::Plain(_) => None,
        };
        self.success(
            "publickey",
            &text,
            user,
            groups,
            settings,
            Some((found.options, blob, validity)),
        )
    }

    /// What is left of LoginGraceTime, for a command the monitor waits for.
    fn grace_left(&self) -> Duration {
        match self.grace_deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => keys_command::TIMEOUT,
        }
    }

    /// The connection as the commands' `%C` gives it.
    fn conn_id(&self) -> String {
        format!(
            "{} {} {} {}",
            shown_ip(self.local),
            shown_port(self.local),
            self.peer_ip(),
            self.peer_port()
        )
    }

    /// AuthorizedKeysCommand for `user`'s `key`, within what is left of
    /// LoginGraceTime (this connection's monitor waits for it; no other
    /// connection does).
    fn keys_command(
        &self,
        settings: &Settings,
        command: &str,
        user: &nix::unistd::User,
        key: &OfferedKey,
        peer: &PeerInfo,
        now_unix: i64,
    ) -> Option<authkeys::AuthorizedKey> {
        let Some(run_as) = &settings.authorized_keys_command_user else {
            log::error("No user for AuthorizedKeysCommand specified, skipping");
            return None;
        };
        let (found, notes) = keys_command::find_key(
            command,
            run_as,
            user,
            key,
            &self.conn_id(),
            peer,
            now_unix,
            self.grace_left(),
        );
        for n in notes {
            log::info(&n);
        }
        found
    }

    /// user_cert_trusted_ca(): a certificate signed by a TrustedUserCAKeys
    /// CA, for the user's name or (with AuthorizedPrincipalsFile) a
    /// principal the user's file lists. The entry found (the CA, with the
    /// final options), the reasons in `log`.
    fn user_cert_trusted_ca(
        &self,
        user: &nix::unistd::User,
        settings: &Settings,
        cert: &Certificate,
        peer: &PeerInfo,
        now_unix: i64,
        log: &mut Vec<String>,
    ) -> Option<authkeys::AuthorizedKey> {
        let ca_file = settings.trusted_user_ca_keys.as_ref()?;
        let ca = &cert.signature_key;
        let (listed, notes) = authkeys::ca_in_file(ca_file, ca);
        log.extend(notes);
        if !listed {
            log.push(format!(
                "CA {} {} is not listed in {}",
                ca.key_type_name(),
                ca.fingerprint(),
                ca_file.display()
            ));
            return None;
        }
        let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
        let principals_file = settings
            .authorized_principals_file
            .as_ref()
            .map(|p| authkeys::expand_authorized_keys_path(p, &user.name, &user.dir, uid));
        let mut found = match &principals_file {
            Some(Ok(f)) => {
                let (found, notes) =
                    authkeys::find_principal(f, cert, uid, gid, &user.dir, settings.strict_modes);
                log.extend(notes);
                found
            }
            Some(Err(e)) => {
                log.push(format!("AuthorizedPrincipalsFile: {e}"));
                None
            }
            None => None,
        };
        // Then AuthorizedPrincipalsCommand, as sshd.
        let command = settings.authorized_principals_command.as_deref();
        if let (None, Some(command)) = (&found, command) {
            match &settings.authorized_principals_command_user {
                Some(run_as) => {
                    let (f, notes) = keys_command::find_principal(
                        command,
                        run_as,
                        user,
                        cert,
                        &self.conn_id(),
                        self.grace_left(),
                    );
                    log.extend(notes);
                    found = f;
                }
                None => log.push(
                    "No user for AuthorizedPrincipalsCommand specified, skipping".to_string(),
                ),
            }
        }
        let via = ca_file.display();
        match authkeys::cert_authorised_by_ca(
            cert,
            &user.name,
            principals_file.is_some() || command.is_some(),
            found,
            peer,
            now_unix,
            log,
        ) {
            Ok(options) => {
                log.push(format!(
                    "Accepted certificate ID \"{}\" (serial {}) signed by {} CA {} via {via}",
                    printable(cert.key_id.as_bytes()),
                    cert.serial,
                    ca.key_type_name(),
                    ca.fingerprint()
                ));
                Some(authkeys::AuthorizedKey {
                    key: ca.clone(),
                    options,
                    comment: String::new(),
                    cert_authority: true,
                    principals: None,
                })
            }
            Err(reason) => {
                log.push(format!(
                    "Refusing certificate ID \"{}\" serial={} signed by {} CA {} via {via}: {reason}",
                    printable(cert.key_id.as_bytes()),
                    cert.serial,
                    ca.key_type_name(),
                    ca.fingerprint()
                ));
                None
            }
        }
    }

    /// A method succeeded: the user is in when AuthenticationMethods is
    /// satisfied (and PAM's account management agrees), else the client
    /// is told which methods remain (partial success).
    fn success(
        &mut self,
        method: &str,
        text: &str,
        user: nix::unistd::User,
        groups: Vec<u32>,
        settings: Settings,
        key: Option<(KeyOptions, Vec<u8>, Option<CertValidity>)>,
    ) -> AuthVerdict {
        let p = self.partial.get_or_insert_with(|| Partial {
            user: user.name.clone(),
            completed: Vec::new(),
            options: KeyOptions::default(),
            steps: Vec::new(),
            used_keys: Vec::new(),
            settings: settings.clone(),
        });
        if let Some((options, blob, cert)) = key {
            let merged = if p.used_keys.is_empty() {
                Ok(options.clone())
            } else {
                authkeys::merge_options(&p.options, &options)
            };
            match merged {
                Ok(o) => p.options = o,
                Err(e) => {
                    // sshd: "key options inconsistent with existing".
                    log::info(&format!("Key options inconsistent with earlier ones: {e}"));
                    return self.reject();
                }
            }
            p.steps.push((options, cert));
            p.used_keys.push(blob);
        }
        p.completed.push(method.to_string());
        p.settings = settings.clone();
        if !auth_complete(&settings, &p.completed) {
            log::info(&format!("Partial {text}"));
            return AuthVerdict::Reject {
                methods: methods_left(&settings, &p.completed),
                partial: true,
            };
        }
        let options = p.options.clone();
        let steps = p.steps.clone();
        let methods = p.completed.clone();
        let keys = p.used_keys.clone();
        if settings.use_pam {
            if let Err(v) = self.pam_account(&user.name) {
                return v;
            }
        }
        log::info(&format!("Accepted {text}"));
        self.partial = None;
        self.accepted = Some(Accepted {
            user,
            groups,
            options,
            steps,
            settings,
            methods,
            keys,
        });
        AuthVerdict::Accept
    }

    /// The PAM transaction for `name`, started (again) if needed.
    fn ensure_pam(&mut self, name: &str) -> Result<&mut Pam, Error> {
        if self.pam.as_ref().is_none_or(|p| p.user() != name) {
            self.pam = None;
            let p =
                Pam::start(pam::SERVICE, name, &self.peer.ip().to_string()).map_err(|source| {
                    Error::Pam {
                        call: "pam_start",
                        source,
                    }
                })?;
            self.pam = Some(p);
        }
        Ok(self.pam.as_mut().expect("started"))
    }

    /// pam_acct_mgmt, as sshd runs it after every successful method
    /// (expired accounts, pam_nologin, access rules). Messages for the user
    /// are kept for the login; a refusal disconnects, as in sshd.
    fn pam_account(&mut self, name: &str) -> Result<(), AuthVerdict> {
        let mut messages = Vec::new();
        let r = match self.ensure_pam(name) {
            Ok(pam) => pam
                .acct_mgmt(0, &mut pam::collect_messages(&mut messages))
                .map_err(|e| {
                    if e.code == pam::PAM_NEW_AUTHTOK_REQD {
                        format!(
                            "Access denied for user {name}: the password has expired \
                             (resshd cannot change passwords during login)"
                        )
                    } else {
                        log::debug(&format!("PAM: pam_acct_mgmt for {name}: {e}"));
                        format!("Access denied for user {name} by PAM account configuration")
                    }
                }),
            Err(e) => Err(e.to_string()),
        };
        match r {
            Ok(()) => {
                self.login_messages.extend(messages);
                Ok(())
            }
            Err(why) => {
                log::info(&why);
                let text = messages.join("\n");
                let text = text.trim();
                Err(AuthVerdict::Disconnect(if text.is_empty() {
                    "Access denied by PAM account configuration".to_string()
                } else {
                    text.to_string()
                }))
            }
        }
    }

    /// Password and keyboard-interactive authentication through PAM.
    /// `user` is None for a user that does not exist: PAM runs all the
    /// same, and the attempt fails.
    fn pam_auth(
        &mut self,
        ipc: &Endpoint,
        name: &str,
        user: Option<(nix::unistd::User, Vec<u32>)>,
        request: AuthRequest,
        settings: Settings,
    ) -> Option<AuthVerdict> {
        let at = self.at();
        let (method, label) = match &request {
            AuthRequest::Password(_) => ("password", "password"),
            _ => ("keyboard-interactive", "keyboard-interactive/pam"),
        };
        if let Err(e) = self.ensure_pam(name) {
            log::error(&e.to_string());
            return Some(self.reject());
        }
        let mut pam = self.pam.take().expect("started");
        let flags = if settings.permit_empty_passwords {
            0
        } else {
            pam::PAM_DISALLOW_NULL_AUTHTOK
        };
        let result = match request {
            AuthRequest::Password(password) => {
                if password.is_empty() && !settings.permit_empty_passwords {
                    Err(())
                } else {
                    // Answers a password prompt with the password; any other
                    // prompt fails the conversation (as sshd's).
                    let mut conv = |msgs: &[pam::Message]| {
                        msgs.iter()
                            .map(|m| match m {
                                pam::Message::PromptEchoOff(_) => Some(Some(password.clone())),
                                pam::Message::PromptEchoOn(_) => None,
                                _ => Some(None),
                            })
                            .collect::<Option<Vec<_>>>()
                    };
                    pam.authenticate(flags, &mut conv).map_err(|_| ())
                }
            }
            _ => {
                let stashed = &mut self.stashed;
                let failure = &mut self.ipc_failure;
                let mut info = String::new();
                let mut conv = |msgs: &[pam::Message]| {
                    kbdint_round(ipc, name, msgs, &mut info, stashed, failure)
                };
                pam.authenticate(flags, &mut conv).map_err(|_| ())
            }
        };
        let pam_user = pam.pam_user();
        self.pam = Some(pam);
        if self.ipc_failure.is_some() {
            return None;
        }
        if self.stashed.is_some() {
            log::debug(&format!(
                "keyboard-interactive for {} abandoned by the client",
                ressh_proto::wire::printable(name.as_bytes())
            ));
            return None;
        }
        match (result, user) {
            (Ok(()), Some((user, groups))) if pam_user.as_deref() == Some(name) => {
                let text = format!("{label} for {name} from {at} ssh2");
                Some(self.success(method, &text, user, groups, settings, None))
            }
            (_, user) => {
                log::info(&format!(
                    "Failed {label} for {}{} from {at} ssh2",
                    if user.is_some() { "" } else { "invalid user " },
                    ressh_proto::wire::printable(name.as_bytes())
                ));
                Some(self.reject())
            }
        }
    }

    fn lookup_user(&self, name: &str) -> Option<nix::unistd::User> {
        let u = nix::unistd::User::from_name(name).ok().flatten()?;
        if let Privsep::Unprivileged { uid } = self.ctx.privsep {
            if u.uid.as_raw() != uid {
                return None;
            }
        }
        Some(u)
    }

    fn policy(&self, a: &Accepted) -> SessionPolicy {
        let s = &a.settings;
        let o = &a.options;
        let grant = |local: bool, remote: bool| match (
            local && !o.no_port_forwarding,
            remote && !o.no_port_forwarding,
        ) {
            (true, true) => Forwarding::All,
            (true, false) => Forwarding::Local,
            (false, true) => Forwarding::Remote,
            (false, false) => Forwarding::None,
        };
        let forwarding = grant(
            s.allows_local_tcp_forwarding(),
            s.allows_remote_tcp_forwarding(),
        );
        let stream_local = grant(
            s.allows_local_stream_local_forwarding(),
            s.allows_remote_stream_local_forwarding(),
        );
        SessionPolicy {
            force_command: s.force_command.clone().or_else(|| o.command.clone()),
            permit_pty: s.permit_tty && !o.no_pty,
            forwarding,
            permit_open: policy::permits(&s.permit_open, &o.permitopen),
            permit_listen: policy::permits(&s.permit_listen, &o.permitlisten),
            gateway_ports: s.gateway_ports != GatewayPorts::No,
            stream_local,
            stream_local_bind_mask: s.stream_local_bind_mask,
            stream_local_bind_unlink: s.stream_local_bind_unlink,
            agent_forwarding: s.allows_agent_forwarding() && !o.no_agent_forwarding,
            x11: (s.allows_x11_forwarding() && !o.no_x11_forwarding).then(|| X11Policy {
                display_offset: s.x11_display_offset,
                use_localhost: s.x11_use_localhost,
                xauth_location: s.xauth_location.clone(),
            }),
            accept_env: s.accept_env.clone(),
            set_env: s
                .set_env
                .iter()
                .filter_map(|e| e.split_once('='))
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            key_environment: match &s.permit_user_environment {
                PermitUserEnvironment::No => Vec::new(),
                PermitUserEnvironment::Yes => o.environment.clone(),
                PermitUserEnvironment::Allow(pat) => o
                    .environment
                    .iter()
                    .filter(|(k, _)| {
                        ressh_compat::pattern::match_pattern_list(k, pat, false).is_match()
                    })
                    .cloned()
                    .collect(),
            },
            subsystems: s
                .subsystems
                .iter()
                .map(|x| (x.name.clone(), x.command.clone()))
                .collect(),
            client_alive_interval_secs: s.client_alive_interval.as_secs(),
            client_alive_count_max: s.client_alive_count_max,
            max_sessions: s.max_sessions,
            detach_timeout_secs: s.detach_timeout.as_secs(),
            channel_timeouts: s
                .channel_timeouts
                .iter()
                .map(|t| (t.channel_type.clone(), t.timeout.as_secs()))
                .collect(),
            unused_connection_timeout_secs: s.unused_connection_timeout.map(|d| d.as_secs()),
            auth_info: s.expose_auth_info.then(|| auth_info(&a.methods, &a.keys)),
        }
    }

    /// PAM's credentials and session (UsePAM), opened before the session
    /// worker starts as sshd opens them; returns PAM's environment.
    fn open_pam_session(&mut self) -> Result<Vec<(String, String)>, Error> {
        let a = self.accepted.as_ref().expect("accepted");
        let (name, groups) = (a.user.name.clone(), a.groups.clone());
        let change_ids = matches!(self.ctx.privsep, Privsep::Root { .. });
        let mut messages = Vec::new();
        let pam = self.ensure_pam(&name)?;
        // Modules such as pam_group add groups to the process that calls
        // pam_setcred, as sshd's child does before it drops root: call it
        // with the user's groups in place, keep what it leaves for the
        // session worker, and put the monitor's own back.
        let saved = if change_ids {
            let saved = nix::unistd::getgroups().map_err(|source| Error::Sys {
                call: "getgroups",
                source,
            })?;
            set_groups(&groups)?;
            Some(saved)
        } else {
            None
        };
        let cred = pam.establish_cred(&mut pam::collect_messages(&mut messages));
        let with_pam = saved.as_ref().map(|_| nix::unistd::getgroups());
        if let Some(saved) = &saved {
            let raw: Vec<u32> = saved.iter().map(|g| g.as_raw()).collect();
            set_groups(&raw)?;
        }
        cred.map_err(|source| Error::Pam {
            call: "pam_setcred()",
            source,
        })?;
        if let Some(g) = with_pam {
            let g = g.map_err(|source| Error::Sys {
                call: "getgroups",
                source,
            })?;
            self.accepted.as_mut().expect("accepted").groups =
                g.iter().map(|g| g.as_raw()).collect();
        }
        let pam = self.pam.as_mut().expect("PAM started");
        pam.open_session(&mut pam::collect_messages(&mut messages))
            .map_err(|source| Error::Pam {
                call: "pam_open_session()",
                source,
            })?;
        let env = pam
            .env()
            .into_iter()
            // sshd's PAM_ENV_DENYLIST: PAM must not fake these.
            .filter(|(n, _)| !n.starts_with("SSH_AUTH_INFO") && !n.starts_with("SSH_CONNECTION"))
            .collect();
        self.login_messages.extend(messages);
        Ok(env)
    }

    /// What an interactive login shows (sshd's display_loginmsg and
    /// do_motd): PAM's messages, the last login, /etc/motd.
    fn login_message(&self, settings: &Settings, uid: u32) -> String {
        let mut text = String::new();
        for m in &self.login_messages {
            text.push_str(m);
            if !m.ends_with('\n') {
                text.push('\n');
            }
        }
        if settings.print_last_log {
            if let Some(line) = loginrec::last_login_message(uid) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        if settings.print_motd {
            if let Ok(f) = std::fs::File::open("/etc/motd") {
                use std::io::Read;
                let mut buf = Vec::new();
                if f.take(64 * 1024).read_to_end(&mut buf).is_ok() {
                    text.push_str(&String::from_utf8_lossy(&buf));
                }
            }
        }
        text
    }

    /// The session's ChrootDirectory, expanded and checked as sshd's
    /// `safely_chroot` (the error is sshd's message).
    fn chroot(&self) -> Result<Option<String>, String> {
        let a = self.accepted.as_ref().expect("accepted");
        let Some(template) = &a.settings.chroot_directory else {
            return Ok(None);
        };
        if !matches!(self.ctx.privsep, Privsep::Root { .. }) {
            return Err("server lacks privileges to chroot to ChrootDirectory".into());
        }
        let dir = policy::chroot_dir(template, &a.user)?;
        log::debug(&format!("checking chroot directory \"{dir}\""));
        policy::check_chroot(&dir)?;
        log::debug(&format!("session root directory \"{dir}\""));
        Ok(Some(dir))
    }

    #[allow(unsafe_code)] // pre_exec (placing the worker's descriptors)
    fn run_session(&mut self, sock: OwnedFd, state: Vec<u8>) -> Result<(), Error> {
        // sshd's fatal in its post-authentication child: the connection
        // ends, its message logged (by `run`, after who it was).
        let chroot = self.chroot().map_err(Error::Chroot)?;
        let use_pam = self.accepted.as_ref().expect("accepted").settings.use_pam;
        let pam_env = if use_pam {
            match self.open_pam_session() {
                Ok(env) => env,
                Err(e) => {
                    // As sshd: no session without PAM's.
                    log::error(&format!("{}: {e}", self.who()));
                    return Err(e);
                }
            }
        } else {
            Vec::new()
        };
        let a = self.accepted.as_ref().expect("accepted");
        let login_message = self.login_message(&a.settings, a.user.uid.as_raw());
        let (ours, theirs) = Endpoint::pair()?;
        let mut cmd = Command::new(&self.ctx.session_worker);
        // Not the log on fd 2: the worker runs as the user and logs through
        // us (FromSession::Log).
        cmd.env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/");
        let fds = [theirs.as_raw_fd()];
        let (uid, gid) = (a.user.uid.as_raw(), a.user.gid.as_raw());
        if let Some(dir) = &chroot {
            // Entered by the worker as root, before it becomes the user.
            cmd.arg("--chroot").arg(dir);
        }
        if matches!(self.ctx.privsep, Privsep::Root { .. }) {
            // The worker becomes the user itself: exec'd as root and then
            // changing its credentials, it is never dumpable by the user.
            let groups: Vec<String> = a.groups.iter().map(|g| g.to_string()).collect();
            cmd.arg("--uid")
                .arg(uid.to_string())
                .arg("--gid")
                .arg(gid.to_string())
                .arg("--groups")
                .arg(groups.join(","));
        }
        // SAFETY: place_fds only calls async-signal-safe functions.
        unsafe { cmd.pre_exec(move || place_fds(&fds)) };
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            program: self.ctx.session_worker.clone(),
            source,
        })?;
        self.worker_pid = child.id();
        drop(theirs);
        let user = UserInfo {
            name: a.user.name.clone(),
            uid,
            gid,
            home: a.user.dir.to_string_lossy().into_owned(),
            shell: a.user.shell.to_string_lossy().into_owned(),
        };
        let start = SessionStart {
            state,
            host_keys: self.ctx.host_keys.public_blobs(),
            host_certs: self.ctx.host_keys.cert_blobs(),
            user,
            peer_addr: self.peer_ip(),
            peer_port: self.peer_port(),
            local_addr: shown_ip(self.local),
            local_port: shown_port(self.local),
            policy: self.policy(a),
            pam_env,
            login_message,
        };
        ours.send(&ToSession::Start(Box::new(start)), &[sock.as_fd()])?;
        // The monitor keeps its copy of the socket to see for itself when
        // the transport ends (serve_session).
        // Serve the session worker (rekey signatures, tokens, reconnects)
        // and the broker (routed reconnects) until the worker exits.
        if let Err(e) = self.serve_session(&ours, sock) {
            log::error(&format!("{}: session worker: {e}", self.who()));
            let _ = child.kill();
        }
        let status = child.wait();
        for l in std::mem::take(&mut self.logins) {
            if let Err(e) = loginrec::record_logout(&l) {
                log::debug(&format!("logout record for {}: {e}", l.tty));
            }
        }
        if let Some(mut pam) = self.pam.take() {
            if let Err(e) = pam.close_session() {
                log::error(&format!("PAM: pam_close_session(): {e}"));
            }
        }
        let status = status?;
        log::info(&format!("Disconnected from {}", self.who()));
        if !status.success() {
            log::debug(&format!("session worker ended with {status}"));
        }
        Ok(())
    }
}

enum KexOutcome {
    Closed,
    Authenticated(Vec<u8>),
    Reconnect(Box<ressh_proto::ReconnectRequest>, Vec<u8>),
}

/// How long the session worker may take for a reconnect verdict before the
/// new connection is told to try again (the worker may be stopped).
const VERDICT_TIMEOUT: Duration = Duration::from_secs(5);
/// The rest of a frame the session worker began must come within this.
const WORKER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes queued for the session worker at most, and how long it may leave
/// them unread before the monitor ends it.
const WORKER_QUEUE: usize = 1024 * 1024;
const WORKER_STALL: Duration = Duration::from_secs(30);
/// How often a monitor without a broker looks for one (resshd restarting).
const RELINK_EVERY: Duration = Duration::from_millis(200);
/// Reconnect requests at the worker at once, as many as the broker routes
/// per session (resshd's `broker::ROUTES_PER_SESSION`).
const VALIDATING_MAX: usize = 1;

/// A routed reconnect request at the worker.
struct Validating {
    /// The broker's route id.
    id: u64,
    /// When it was sent to the worker.
    since: Instant,
    /// The broker was answered already (TRY_AGAIN: the verdict came late).
    answered: bool,
    /// The new connection's address, as the listener accepted it.
    peer_addr: String,
    peer_port: u16,
}

/// The session worker's link: reads when poll(2) says so, writes through a
/// bounded queue, so the monitor never blocks on a process the user owns.
struct WorkerLink<'e> {
    ep: &'e Endpoint,
    out: ressh_ipc::Outbox,
    /// The routed requests at the worker, oldest first (it answers in
    /// order); at most [`VALIDATING_MAX`].
    validating: VecDeque<Validating>,
    /// The transport last handed to the worker, and its address: what the
    /// monitor itself saw, believed over anything the worker says.
    handed: Option<(SocketAddr, OwnedFd)>,
    /// The monitor's copy of the session's transport, watched for its end
    /// (EOF, reset, error); None once the session counts as detached.
    transport: Option<OwnedFd>,
}

impl WorkerLink<'_> {
    fn send(&mut self, m: &ToSession, fds: Vec<OwnedFd>) -> Result<(), Error> {
        self.out.push(m, fds).map_err(Error::WorkerQueueFull)?;
        Ok(self.out.flush(self.ep.as_fd())?)
    }
}

impl Monitor<'_> {
    fn serve_session(&mut self, ours: &Endpoint, sock: OwnedFd) -> Result<(), Error> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        // nix has no name for it.
        let rdhup = PollFlags::from_bits_retain(libc::POLLRDHUP);
        ours.set_timeout(Some(WORKER_READ_TIMEOUT))?;
        let mut w = WorkerLink {
            ep: ours,
            out: ressh_ipc::Outbox::new(WORKER_QUEUE),
            validating: VecDeque::new(),
            handed: None,
            transport: Some(sock),
        };
        loop {
            let now = Instant::now();
            let mut timeout: Option<Duration> = None;
            let mut soon = |t: Duration| timeout = Some(timeout.map_or(t, |x: Duration| x.min(t)));
            if self.broker.is_none() {
                soon(RELINK_EVERY);
            }
            if !w.out.is_empty() {
                soon(Duration::from_secs(1));
            }
            if let Some(v) = w.validating.iter().find(|v| !v.answered) {
                soon((v.since + VERDICT_TIMEOUT).saturating_duration_since(now));
            }
            let (session_ready, broker_ready, transport_ended) = {
                let mut ev = PollFlags::POLLIN;
                if !w.out.is_empty() {
                    ev |= PollFlags::POLLOUT;
                }
                let mut fds = vec![PollFd::new(ours.as_fd(), ev)];
                // The peer's end of the stream (POLLRDHUP), a reset or an
                // error (always reported); the monitor never reads it.
                let watched = w.transport.as_ref().map(|t| t.as_fd());
                if let Some(t) = watched {
                    fds.push(PollFd::new(t, rdhup));
                }
                if let Some(b) = &self.broker {
                    fds.push(PollFd::new(b.as_fd(), PollFlags::POLLIN));
                }
                let wait = match timeout {
                    None => PollTimeout::NONE,
                    Some(t) => PollTimeout::try_from(t.as_millis().min(60_000) as i32 + 1)
                        .unwrap_or(PollTimeout::MAX),
                };
                match poll(&mut fds, wait) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(source) => {
                        return Err(Error::Sys {
                            call: "poll",
                            source,
                        })
                    }
                }
                let r: Vec<bool> = fds
                    .iter()
                    .map(|f| {
                        f.revents().is_some_and(|r| {
                            r.intersects(
                                PollFlags::POLLIN | rdhup | PollFlags::POLLHUP | PollFlags::POLLERR,
                            )
                        })
                    })
                    .collect();
                let t = usize::from(watched.is_some());
                (r[0], r.get(1 + t).copied().unwrap_or(false), t == 1 && r[1])
            };
            if transport_ended {
                // Seen by the monitor itself: the session counts as detached
                // whether or not its worker says so.
                w.transport = None;
                self.detached_to_broker();
            }
            if self.broker.is_none() {
                self.relink_broker();
            }
            if session_ready {
                match ours.recv::<FromSession>() {
                    Ok((m, fds)) => {
                        if !fds.is_empty() {
                            return Err(Error::Unexpected(
                                "descriptors from the session worker".into(),
                            ));
                        }
                        self.on_session_msg(&mut w, m)?
                    }
                    // The worker exits with its session.
                    Err(ressh_ipc::Error::Closed) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
            if broker_ready {
                let b = self.broker.as_ref().expect("broker");
                match b.recv::<FromBroker>() {
                    Ok((m, fds)) => self.on_broker_msg(&mut w, m, fds)?,
                    Err(e) => {
                        // resshd went away (restart): the session carries on
                        // without routing until a new broker takes over.
                        log::info(&format!("{}: lost the broker: {e}", self.who()));
                        self.broker = None;
                    }
                }
            }
            let now = Instant::now();
            for v in w.validating.iter_mut() {
                if !v.answered && now.saturating_duration_since(v.since) >= VERDICT_TIMEOUT {
                    // The worker is slow or stopped: the client tries again;
                    // its late verdict is dropped.
                    v.answered = true;
                    log::info(&format!(
                        "{}: the session gave no reconnect verdict in {} s",
                        self.who(),
                        VERDICT_TIMEOUT.as_secs()
                    ));
                    self.to_broker(&ToBroker::Verdict {
                        id: v.id,
                        result: Err((
                            ressh_proto::resilience::failure::TRY_AGAIN,
                            "the session is busy".into(),
                        )),
                    });
                }
            }
            w.out.flush(ours.as_fd())?;
            if w.out.stalled_for(now).is_some_and(|t| t >= WORKER_STALL) {
                return Err(Error::WorkerStalled(WORKER_STALL));
            }
        }
    }

    /// Tells the broker the session lost its transport (MaxDetachedSessions).
    fn detached_to_broker(&self) {
        let (max_per_user, grace_secs) = self.accepted.as_ref().map_or((u32::MAX, 0), |a| {
            (
                a.settings.max_detached_sessions,
                a.settings.detach_grace_time.as_secs(),
            )
        });
        self.to_broker(&ToBroker::Detached {
            max_per_user,
            grace_secs,
        });
    }

    /// Registers again with a (new) broker: the session stays reachable for
    /// reconnects across restarts of resshd.
    fn relink_broker(&mut self) {
        let Some(b) = connect_broker(&self.ctx.broker_socket) else {
            return;
        };
        let user = self
            .accepted
            .as_ref()
            .map(|a| a.user.name.clone())
            .unwrap_or_default();
        let ok = b.send(&ToBroker::Authenticated { user }, &[]).is_ok()
            && b.send(&ToBroker::Tokens(self.tokens.clone()), &[]).is_ok();
        if ok {
            log::info(&format!("{}: registered with the broker again", self.who()));
            self.broker = Some(b);
        }
    }

    fn to_broker(&self, m: &ToBroker) {
        if let Some(b) = &self.broker {
            let _ = b.send(m, &[]);
        }
    }

    fn on_session_msg(&mut self, w: &mut WorkerLink<'_>, m: FromSession) -> Result<(), Error> {
        // The table: anything out of phase kills the worker (logged by
        // run_session as "session worker: ...").
        self.session_gate
            .check(&m)
            .map_err(Error::SessionViolation)?;
        match m {
            FromSession::Sign { key, alg, data } => {
                self.host_key_alg = Some(alg.clone());
                let r = self.sign(&key, &alg, &data);
                w.send(&ToSession::Signature(r), Vec::new())
            }
            FromSession::ProveHostKeys(blobs) => {
                let r = self.prove_host_keys(&blobs);
                if let Err(e) = &r {
                    log::info(&format!("{}: host key proof refused: {e}", self.who()));
                }
                w.send(&ToSession::HostKeyProofs(r), Vec::new())
            }
            FromSession::KexDone => Ok(()),
            FromSession::Tokens(t) => {
                self.to_broker(&ToBroker::Tokens(t.clone()));
                self.tokens = t;
                Ok(())
            }
            FromSession::ReconnectVerdict { id, result } => {
                // Answered in the order asked (the gate counted it).
                let Some(v) = w.validating.pop_front() else {
                    return Ok(());
                };
                if v.id != id {
                    return Err(Error::Unexpected(format!(
                        "a reconnect verdict for {id}, expected one for {}",
                        v.id
                    )));
                }
                if v.answered {
                    // Too late: the broker was told to try again.
                    if result.is_ok() {
                        w.send(&ToSession::Refused { id }, Vec::new())?;
                    }
                    return Ok(());
                }
                let mut result = result;
                if result.is_ok() {
                    if let Err(why) = self.reconnect_allowed(&v.peer_addr) {
                        log::info(&format!(
                            "Reconnect of {} from {} port {} refused: {why}",
                            self.who(),
                            v.peer_addr,
                            v.peer_port
                        ));
                        w.send(&ToSession::Refused { id }, Vec::new())?;
                        // The reason names the user and the policy: it
                        // stays in the log; the unauthenticated peer hears
                        // no more than the code says.
                        result = Err((
                            ressh_proto::resilience::failure::NOT_ALLOWED,
                            "not allowed from this address".into(),
                        ));
                    }
                }
                self.to_broker(&ToBroker::Verdict { id: v.id, result });
                Ok(())
            }
            FromSession::LoginStarted { tty, pid } => {
                self.record_login(tty, pid);
                Ok(())
            }
            FromSession::Log(text) => {
                // The user and the address as this monitor knows them.
                let context = match &self.accepted {
                    Some(a) => format!(
                        "user {} from {} port {}",
                        a.user.name,
                        self.peer_ip(),
                        self.peer_port()
                    ),
                    None => self.at(),
                };
                self.relay_log("resshd-session", &context, &text);
                Ok(())
            }
            FromSession::LoginEnded { tty } => {
                if let Some(i) = self.logins.iter().position(|l| l.tty == tty) {
                    let l = self.logins.remove(i);
                    if let Err(e) = loginrec::record_logout(&l) {
                        log::debug(&format!("logout record for {tty}: {e}"));
                    }
                }
                Ok(())
            }
            FromSession::Detached => {
                log::info(&format!("Detached: {}", self.who()));
                // The worker gave the transport up (a silent peer, say):
                // believed, since it can only count against its own user.
                if w.transport.take().is_some() {
                    self.detached_to_broker();
                }
                Ok(())
            }
            FromSession::Attached => {
                // The address is the one the monitor handed over itself, not
                // the worker's word; the monitor watches that socket now.
                let Some((peer, sock)) = w.handed.take() else {
                    log::error(&format!(
                        "{}: the session worker claims a reconnect it was not given",
                        self.who()
                    ));
                    return Ok(());
                };
                let old = self.who();
                self.peer = peer;
                w.transport = Some(sock);
                log::info(&format!("Reconnected: {} (was {old})", self.who()));
                self.to_broker(&ToBroker::Attached);
                Ok(())
            }
        }
    }

    /// Writes a worker's log line (checked for length by the gate) under
    /// the worker's name and pid, within the connection's log budget.
    fn relay_log(&mut self, program: &str, context: &str, text: &str) {
        match self.log_budget.take(Instant::now()) {
            LogVerdict::Drop => {}
            LogVerdict::Write { dropped } => {
                if dropped > 0 {
                    log::relay(
                        log::Level::Info,
                        program,
                        self.worker_pid,
                        context,
                        &format!("{dropped} log lines dropped (too many)"),
                    );
                }
                log::relay(log::Level::Info, program, self.worker_pid, context, text);
            }
        }
    }

    /// Records a login the session worker reports, after checking that
    /// the tty and the process are the user's (the worker runs as the user
    /// and must not write records for others).
    fn record_login(&mut self, tty: String, pid: i32) {
        use std::os::unix::fs::MetadataExt;
        let Some(a) = &self.accepted else { return };
        let uid = a.user.uid.as_raw();
        let tty_ok =
            loginrec::valid_tty(&tty) && std::fs::metadata(&tty).is_ok_and(|m| m.uid() == uid);
        let pid_ok =
            pid > 1 && std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid);
        if !tty_ok || !pid_ok || self.logins.len() >= 64 || self.logins.iter().any(|l| l.tty == tty)
        {
            log::info(&format!(
                "{}: refused a login record for {} (pid {pid})",
                self.who(),
                ressh_proto::wire::printable(tty.as_bytes())
            ));
            return;
        }
        let l = Login {
            tty,
            pid,
            user: a.user.name.clone(),
            uid,
            host: self.peer_ip(),
            addr: self.peer.ip(),
        };
        if let Err(e) = loginrec::record_login(&l) {
            log::debug(&format!("login record for {}: {e}", l.tty));
        }
        self.logins.push(l);
    }

    fn on_broker_msg(
        &mut self,
        w: &mut WorkerLink<'_>,
        m: FromBroker,
        fds: Vec<OwnedFd>,
    ) -> Result<(), Error> {
        match m {
            FromBroker::Validate {
                id,
                request,
                peer_addr,
                peer_port,
            } => {
                if w.validating.len() >= VALIDATING_MAX {
                    // A bounded queue at the worker: it may be stopped,
                    // and nothing piles up for it.
                    self.to_broker(&ToBroker::Verdict {
                        id,
                        result: Err((
                            ressh_proto::resilience::failure::TRY_AGAIN,
                            "the session is busy".into(),
                        )),
                    });
                    return Ok(());
                }
                // The worker checks the MAC first (cheap, and a forged or
                // replayed request goes no further); the address policy
                // (PAM account management among it) is judged only for a
                // genuine request, when its verdict comes back.
                w.validating.push_back(Validating {
                    id,
                    since: Instant::now(),
                    answered: false,
                    peer_addr,
                    peer_port,
                });
                self.session_gate.asked_verdict();
                w.send(&ToSession::Reconnect { id, request }, Vec::new())
            }
            FromBroker::Transport {
                id,
                leftover,
                peer_addr,
                peer_port,
            } => {
                if fds.len() != 1 {
                    return Err(Error::Unexpected(
                        "transport without exactly one socket".into(),
                    ));
                }
                let Ok(ip) = peer_addr.parse::<std::net::IpAddr>() else {
                    return Err(Error::Unexpected(format!(
                        "transport from a bad address {peer_addr:?}"
                    )));
                };
                let [fd] = <[OwnedFd; 1]>::try_from(fds)
                    .map_err(|_| Error::Unexpected("no socket".into()))?;
                let copy = fd.try_clone()?;
                w.handed = Some((SocketAddr::new(ip, peer_port), copy));
                w.send(
                    &ToSession::Transport {
                        id,
                        leftover,
                        peer_addr,
                        peer_port,
                    },
                    vec![fd],
                )
            }
            FromBroker::Terminate => {
                log::info(&format!(
                    "{}: too many detached sessions for the user; ending the one detached longest",
                    self.who()
                ));
                w.send(&ToSession::Terminate, Vec::new())
            }
            FromBroker::RouteResult(_) => {
                Err(Error::Unexpected("route result for a session".into()))
            }
        }
    }

    /// A reconnect from `addr` is judged as a new login from there would
    /// be, except for the authentication itself: the configuration as Match
    /// resolves it for that address; AllowUsers/DenyUsers (with @host),
    /// AllowGroups/DenyGroups; the from= option of the key used; RevokedKeys
    /// for the keys used (read again);
    /// PermitRootLogin; the methods the user authenticated with must still
    /// be enabled and satisfy AuthenticationMethods there; and the account
    /// must still be valid (PAM account management with the new PAM_RHOST,
    /// or the shadow entry without PAM).
    fn reconnect_allowed(&mut self, addr: &str) -> Result<(), Refusal> {
        let a = self
            .accepted
            .as_ref()
            .ok_or_else(|| Refusal::Policy("no user".into()))?;
        let ip: std::net::IpAddr = addr
            .parse()
            .map_err(|_| Refusal::Policy("bad address".into()))?;
        let group_names: Vec<String> = a
            .groups
            .iter()
            .filter_map(|g| {
                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(*g))
                    .ok()
                    .flatten()
            })
            .map(|g| g.name)
            .collect();
        let settings = self.ctx.config.resolve(&MatchContext {
            user: Some(a.user.name.clone()),
            groups: group_names.clone(),
            host: Some(ip.to_string()),
            addr: Some(ip),
            local_addr: Some(self.local.ip()),
            local_port: Some(self.local.port()),
            rdomain: self.rdomain.clone(),
        });
        let peer = PeerInfo {
            addr: ip,
            port: 0,
            hostname: None,
        };
        authkeys::user_host_allowed(
            &a.user.name,
            &peer,
            &group_names,
            &settings.allow_users,
            &settings.deny_users,
            &settings.allow_groups,
            &settings.deny_groups,
        )
        .map_err(Refusal::Policy)?;
        for (options, cert) in &a.steps {
            if let Some(from) = &options.from {
                if !authkeys::from_matches(from, &peer) {
                    return Err(Refusal::Policy(format!(
                        "key's from=\"{from}\" does not match {addr}"
                    )));
                }
            }
            cert_admits_reconnect(cert.as_ref(), options, ip, unix_now())
                .map_err(Refusal::Policy)?;
        }
        // A key or certificate revoked since the login resumes nothing.
        for blob in &a.keys {
            let key = revoked::offered_key(blob)
                .map_err(|e| Refusal::Policy(format!("the login's key: {e}")))?;
            if let Some(why) = revoked::refusal(settings.revoked_keys.as_deref(), &key) {
                return Err(Refusal::Policy(why));
            }
        }
        admissible(
            &settings,
            a.user.uid.is_root(),
            &a.methods,
            a.options.command.is_some(),
        )
        .map_err(Refusal::Policy)?;
        // What the session runs was decided at login: a login from here
        // that would be jailed or given another forced command is not
        // this session.
        if settings.chroot_directory != a.settings.chroot_directory {
            return Err(Refusal::Policy("ChrootDirectory differs from there".into()));
        }
        if settings.force_command != a.settings.force_command {
            return Err(Refusal::Policy("ForceCommand differs from there".into()));
        }
        let name = a.user.name.clone();
        if settings.use_pam {
            let mut messages = Vec::new();
            let pam = self.ensure_pam(&name)?;
            pam.set_item(pam::PAM_RHOST, &ip.to_string())
                .map_err(Refusal::PamItem)?;
            pam.acct_mgmt(0, &mut pam::collect_messages(&mut messages))
                .map_err(|source| Refusal::PamAccount { user: name, source })?;
        } else {
            shadow_account_ok(&name).map_err(Refusal::Policy)?;
        }
        Ok(())
    }
}

/// A link to resshd's broker, greeted with our protocol version, or None
/// when it cannot be reached. The broker reads at once; the send timeout
/// only keeps a wedged broker from wedging this monitor.
pub(crate) fn connect_broker(path: &std::path::Path) -> Option<Endpoint> {
    let s = std::os::unix::net::UnixStream::connect(path).ok()?;
    greet_broker(OwnedFd::from(s))
}

/// The link to the broker on `fd`, greeted with our protocol version.
pub(crate) fn greet_broker(fd: OwnedFd) -> Option<Endpoint> {
    let b = Endpoint::from_fd(fd);
    b.set_send_timeout(Some(Duration::from_secs(2))).ok()?;
    let hello = ToBroker::Hello {
        version: ressh_ipc::msg::BROKER_VERSION,
    };
    b.send(&hello, &[]).ok()?;
    Some(b)
}

/// Whether `a` is a real address: inetd mode over pipes has none and
/// passes 0.0.0.0 port 0.
fn known(a: SocketAddr) -> bool {
    !(a.ip().is_unspecified() && a.port() == 0)
}

/// The address as sshd shows it: "UNKNOWN" where there is none.
fn shown_ip(a: SocketAddr) -> String {
    if known(a) {
        a.ip().to_string()
    } else {
        "UNKNOWN".into()
    }
}

/// What a reconnect from `ip` at `now` (seconds since the epoch) re-checks
/// of the login's certificate, as a new login would: its validity interval
/// (it may have expired while the session was detached) and its
/// `source-address` (in `options`); also the authorized_keys line's
/// `expiry-time`. Err is the reason, for the log.
fn cert_admits_reconnect(
    cert: Option<&CertValidity>,
    options: &KeyOptions,
    ip: std::net::IpAddr,
    now: i64,
) -> Result<(), String> {
    if let Some(list) = &options.source_address {
        if !authkeys::cert_source_allowed(list, ip) {
            return Err(format!(
                "certificate source-address \"{list}\" does not admit {ip}"
            ));
        }
    }
    if let Some(exp) = options.expiry_time {
        if exp < now {
            return Err(format!("the key's expiry-time {exp} has passed"));
        }
    }
    if let Some(c) = cert {
        let t = u64::try_from(now).unwrap_or(0);
        if t < c.valid_after || t >= c.valid_before {
            let why = if t < c.valid_after {
                "not yet valid"
            } else {
                "expired"
            };
            return Err(format!(
                "certificate ID \"{}\" (serial {}) {why}: valid from {} to {}, now {t}",
                printable(c.key_id.as_bytes()),
                c.serial,
                c.valid_after,
                c.valid_before
            ));
        }
    }
    Ok(())
}

/// Seconds since the epoch (0 if the clock is before it).
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A user key for sshd's log lines: "TYPE SHA256:..." for a plain key;
/// for a certificate also its ID, serial and CA, as sshd logs them.
fn describe_key(key: &OfferedKey) -> String {
    match key {
        OfferedKey::Plain(k) => format!("{} {}", k.key_type_name(), k.fingerprint()),
        OfferedKey::Cert(c) => format!(
            "{} {} ID {} (serial {}) CA {} {}",
            c.type_name(),
            c.key.fingerprint(),
            printable(c.key_id.as_bytes()),
            c.serial,
            c.signature_key.key_type_name(),
            c.signature_key.fingerprint()
        ),
    }
}

/// The port as sshd shows it: 65535 where there is none.
fn shown_port(a: SocketAddr) -> u16 {
    if known(a) {
        a.port()
    } else {
        65535
    }
}

/// setgroups(2) for this process (the monitor runs as root).
#[allow(unsafe_code)] // setgroups(2) in a pre_exec hook
fn set_groups(groups: &[u32]) -> Result<(), Error> {
    // SAFETY: setgroups with a valid pointer and length.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
        return Err(Error::Sys {
            call: "setgroups",
            source: nix::Error::last(),
        });
    }
    Ok(())
}

/// The user's primary and supplementary groups.
pub fn user_groups(user: &nix::unistd::User) -> Vec<u32> {
    let Ok(name) = CString::new(user.name.as_bytes()) else {
        return vec![user.gid.as_raw()];
    };
    match nix::unistd::getgrouplist(&name, user.gid) {
        Ok(g) => g.into_iter().map(|g| g.as_raw()).collect(),
        Err(_) => vec![user.gid.as_raw()],
    }
}

/// One round of a keyboard-interactive conversation: PAM's prompts go to
/// the client (through the kex worker) with the messages before them as
/// the instruction; the answers come back. Messages without a prompt wait
/// for the next prompt. None fails the conversation: when the client sent
/// something else (kept in `stashed`), or the link broke (`failure`).
fn kbdint_round(
    ipc: &Endpoint,
    name: &str,
    msgs: &[pam::Message],
    info: &mut String,
    stashed: &mut Option<FromKex>,
    failure: &mut Option<ressh_ipc::Error>,
) -> Option<Vec<Option<Zeroizing<String>>>> {
    let mut prompts = Vec::new();
    for m in msgs {
        match m {
            pam::Message::PromptEchoOff(t) => prompts.push((t.clone(), false)),
            pam::Message::PromptEchoOn(t) => prompts.push((t.clone(), true)),
            pam::Message::Error(t) | pam::Message::Info(t) => {
                info.push_str(t);
                info.push('\n');
            }
        }
    }
    if prompts.is_empty() {
        return Some(vec![None; msgs.len()]);
    }
    let n = prompts.len();
    let request = AuthVerdict::InfoRequest {
        name: String::new(),
        instruction: std::mem::take(info),
        prompts,
    };
    if let Err(e) = ipc.send(&ToKex::Verdict(request), &[]) {
        *failure = Some(e);
        return None;
    }
    match ipc.recv::<FromKex>() {
        Ok((
            FromKex::Auth {
                user,
                request: AuthRequest::InfoResponse(answers),
            },
            _,
        )) => {
            if user != name || answers.len() != n {
                return None;
            }
            let mut answers = answers.into_iter();
            Some(
                msgs.iter()
                    .map(|m| if m.is_prompt() { answers.next() } else { None })
                    .collect(),
            )
        }
        Ok((other, _)) => {
            *stashed = Some(other);
            None
        }
        Err(e) => {
            *failure = Some(e);
            None
        }
    }
}

/// How serving the kex worker ends when its link does: the worker closing
/// it is the connection ending (the client went away, the worker exited
/// with it); anything else is a failure of the link.
fn link_end(e: ressh_ipc::Error) -> Result<KexOutcome, Error> {
    match e {
        ressh_ipc::Error::Closed => Ok(KexOutcome::Closed),
        e => Err(e.into()),
    }
}

/// Whether a method name from AuthenticationMethods names `method`
/// (`keyboard-interactive:pam` names keyboard-interactive).
fn names_method(listed: &str, method: &str) -> bool {
    listed == method || listed.split_once(':').is_some_and(|(m, _)| m == method)
}

/// The lists of AuthenticationMethods that `completed` is a prefix of.
fn open_lists<'a>(s: &'a Settings, completed: &'a [String]) -> Option<Vec<&'a Vec<String>>> {
    let lists = s.authentication_methods.as_ref()?;
    Some(
        lists
            .iter()
            .filter(|l| {
                l.len() >= completed.len()
                    && l.iter().zip(completed).all(|(a, b)| names_method(a, b))
            })
            .collect(),
    )
}

/// Methods the client may try next.
fn methods_left(s: &Settings, completed: &[String]) -> Vec<String> {
    let enabled = policy::auth_methods(s);
    match open_lists(s, completed) {
        None => enabled,
        Some(lists) => {
            let mut out: Vec<String> = Vec::new();
            for l in lists {
                if let Some(next) = l.get(completed.len()) {
                    let base = next.split(':').next().unwrap_or(next).to_string();
                    if enabled.contains(&base) && !out.contains(&base) {
                        out.push(base);
                    }
                }
            }
            out
        }
    }
}

/// Whether `method` may be tried now.
fn method_allowed(s: &Settings, completed: &[String], method: &str) -> bool {
    methods_left(s, completed).iter().any(|m| m == method)
}

/// Whether a user who authenticated with `methods` (in order) would be let
/// in under `s`: PermitRootLogin, each method enabled in turn, and
/// AuthenticationMethods satisfied. For a reconnect from a new address.
fn admissible(
    s: &Settings,
    root: bool,
    methods: &[String],
    forced_command: bool,
) -> Result<(), String> {
    if root {
        let by_key = methods.iter().all(|m| m == "publickey");
        let ok = match s.permit_root_login {
            PermitRootLogin::Yes => true,
            PermitRootLogin::ProhibitPassword => by_key,
            PermitRootLogin::ForcedCommandsOnly => by_key && forced_command,
            PermitRootLogin::No => false,
        };
        if !ok {
            return Err("PermitRootLogin refuses root from there".into());
        }
    }
    for (i, m) in methods.iter().enumerate() {
        if !method_allowed(s, &methods[..i], m) {
            return Err(format!(
                "authentication method {m} is not allowed from there"
            ));
        }
    }
    if !auth_complete(s, methods) {
        return Err(format!(
            "AuthenticationMethods asks more than {} from there",
            methods.join(",")
        ));
    }
    Ok(())
}

/// Whether the methods completed satisfy AuthenticationMethods.
fn auth_complete(s: &Settings, completed: &[String]) -> bool {
    match open_lists(s, completed) {
        None => true,
        Some(lists) => lists.iter().any(|l| l.len() == completed.len()),
    }
}

/// sshd's checks of the shadow entry without PAM (auth.c allowed_user):
/// a locked password ("!") or an expired account refuses the user.
#[allow(unsafe_code)] // getspnam (the shadow entry)
fn shadow_account_ok(name: &str) -> Result<(), String> {
    let Ok(c) = CString::new(name) else {
        return Ok(());
    };
    // SAFETY: getspnam returns a pointer to static storage (or null); the
    // monitor is single-threaded and copies what it needs at once.
    let (locked, expire) = unsafe {
        let sp = libc::getspnam(c.as_ptr());
        if sp.is_null() {
            return Ok(());
        }
        let pw = (*sp).sp_pwdp;
        let locked = !pw.is_null() && *pw == b'!' as libc::c_char;
        (locked, (*sp).sp_expire)
    };
    if locked {
        return Err(format!("User {name} not allowed because account is locked"));
    }
    if expire != -1 {
        let today = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| (d.as_secs() / 86400) as libc::c_long)
            .unwrap_or(0);
        if today > expire {
            return Err(format!("Account {name} has expired"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A reconnect re-checks the certificate of the login: expired while
    /// detached, or a new address outside its source-address, is refused.
    #[test]
    fn reconnects_recheck_the_certificate() {
        let cert = CertValidity {
            key_id: "id".into(),
            serial: 7,
            valid_after: 1_000,
            valid_before: 2_000,
        };
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let none = KeyOptions::default();
        let check = |c: Option<&CertValidity>, o: &KeyOptions, addr: &str, now| {
            cert_admits_reconnect(c, o, ip(addr), now)
        };
        assert_eq!(check(Some(&cert), &none, "198.18.0.9", 1_999), Ok(()));
        let e = check(Some(&cert), &none, "198.18.0.9", 2_000).unwrap_err();
        assert!(
            e.contains("certificate ID \"id\" (serial 7) expired"),
            "{e}"
        );
        let e = check(Some(&cert), &none, "198.18.0.9", 999).unwrap_err();
        assert!(e.contains("not yet valid"), "{e}");
        // No certificate: nothing to re-check.
        assert_eq!(check(None, &none, "198.18.0.9", 5_000), Ok(()));
        let sa = KeyOptions {
            source_address: Some("198.18.0.0/24".into()),
            ..KeyOptions::default()
        };
        assert_eq!(check(Some(&cert), &sa, "198.18.0.9", 1_500), Ok(()));
        let e = check(Some(&cert), &sa, "198.19.0.9", 1_500).unwrap_err();
        assert!(
            e.contains("source-address \"198.18.0.0/24\" does not admit 198.19.0.9"),
            "{e}"
        );
        let exp = KeyOptions {
            expiry_time: Some(1_200),
            ..KeyOptions::default()
        };
        assert!(check(None, &exp, "198.18.0.9", 1_201).is_err());
        assert_eq!(check(None, &exp, "198.18.0.9", 1_200), Ok(()));
    }

    /// The settings a connection from `addr` gets under `config`.
    fn at(config: &str, addr: &str) -> Settings {
        let c = Config::parse_str(config, "t.conf", Path::new("/nonexistent"), &[]).unwrap();
        let ip: std::net::IpAddr = addr.parse().unwrap();
        c.resolve(&MatchContext {
            user: Some("u".into()),
            host: Some(addr.into()),
            addr: Some(ip),
            ..Default::default()
        })
    }

    fn m(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    const TWO_FACTORS_OUTSIDE: &str = "UsePAM yes\nPasswordAuthentication yes\n\
        Match Address 198.18.0.0/16\n\
        AuthenticationMethods publickey\n\
        Match Address *,!198.18.0.0/16\n\
        AuthenticationMethods publickey,password\n";

    /// One keyboard-interactive round against a kex worker's end of a real
    /// socketpair that reads the prompt and then does `then`; the failure
    /// kbdint_round kept, and how serving the kex worker ends on it.
    fn round_then(then: impl FnOnce(Endpoint) + Send + 'static) -> Result<KexOutcome, Error> {
        let (ours, theirs) = Endpoint::pair().unwrap();
        let worker = std::thread::spawn(move || {
            let (m, _) = theirs.recv::<ToKex>().unwrap();
            assert!(matches!(m, ToKex::Verdict(AuthVerdict::InfoRequest { .. })));
            then(theirs);
        });
        let (mut info, mut stashed, mut failure) = (String::new(), None, None);
        let prompt = [pam::Message::PromptEchoOff("Password: ".into())];
        let answers = kbdint_round(&ours, "u", &prompt, &mut info, &mut stashed, &mut failure);
        worker.join().unwrap();
        assert!(answers.is_none() && stashed.is_none());
        link_end(failure.expect("the link failure is kept"))
    }

    #[test]
    fn a_closed_kex_link_in_a_pam_conversation_ends_the_connection_quietly() {
        // The worker exits (its client went away): no error, exit code 0.
        assert!(matches!(round_then(drop), Ok(KexOutcome::Closed)));
        // A frame that does not decode is a failure, logged and exit 1.
        let garbled = round_then(|ep| {
            nix::unistd::write(&ep, &[0, 0, 0, 1, 0xff]).unwrap();
        });
        assert!(
            matches!(garbled, Err(Error::Ipc(ressh_ipc::Error::Decode))),
            "{:?}",
            garbled.map(|_| ())
        );
    }

    #[test]
    fn one_factor_inside_is_not_enough_outside() {
        let inside = at(TWO_FACTORS_OUTSIDE, "198.18.0.2");
        let outside = at(TWO_FACTORS_OUTSIDE, "203.0.113.9");
        let key = m(&["publickey"]);
        assert!(admissible(&inside, false, &key, false).is_ok());
        let e = admissible(&outside, false, &key, false).unwrap_err();
        assert!(e.contains("AuthenticationMethods"), "{e}");
        // Two factors satisfy both.
        let both = m(&["publickey", "password"]);
        assert!(admissible(&outside, false, &both, false).is_ok());
    }

    #[test]
    fn a_method_disabled_at_the_new_address_refuses() {
        let c = "UsePAM yes\nPasswordAuthentication yes\nMatch Address 203.0.113.0/24\nPasswordAuthentication no\n";
        let pw = m(&["password"]);
        assert!(admissible(&at(c, "198.18.0.2"), false, &pw, false).is_ok());
        assert!(admissible(&at(c, "203.0.113.9"), false, &pw, false).is_err());
        // The order of AuthenticationMethods is part of it.
        let c =
            "UsePAM yes\nPasswordAuthentication yes\nAuthenticationMethods password,publickey\n";
        let s = at(c, "198.18.0.2");
        assert!(admissible(&s, false, &m(&["password", "publickey"]), false).is_ok());
        assert!(admissible(&s, false, &m(&["publickey", "password"]), false).is_err());
    }

    #[test]
    fn root_is_judged_by_permit_root_login_there() {
        let c = "UsePAM yes\nPermitRootLogin yes\nPasswordAuthentication yes\n\
            Match Address 203.0.113.0/24\nPermitRootLogin no\n\
            Match Address 192.0.2.0/24\nPermitRootLogin prohibit-password\n\
            Match Address 100.64.0.0/10\nPermitRootLogin forced-commands-only\n";
        let key = m(&["publickey"]);
        let pw = m(&["password"]);
        assert!(admissible(&at(c, "198.18.0.2"), true, &pw, false).is_ok());
        assert!(admissible(&at(c, "203.0.113.9"), true, &key, false).is_err());
        assert!(admissible(&at(c, "203.0.113.9"), false, &key, false).is_ok());
        assert!(admissible(&at(c, "192.0.2.1"), true, &key, false).is_ok());
        assert!(admissible(&at(c, "192.0.2.1"), true, &pw, false).is_err());
        assert!(admissible(&at(c, "100.64.0.1"), true, &key, false).is_err());
        assert!(admissible(&at(c, "100.64.0.1"), true, &key, true).is_ok());
    }
}
