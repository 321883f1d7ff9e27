//! The per-connection monitor: root, forked from resshd for one TCP
//! connection. It starts the unprivileged kex worker, answers its closed
//! set of requests (host-key signatures, auth decisions), then starts the
//! session worker as the authenticated user and signs its rekeys.
//!
//! Every request from a worker is checked against the monitor's own state:
//! signatures before auth only for the key exchange, auth decisions only
//! before success and only after a session id exists, the hand-over only
//! after the monitor itself accepted a user.

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
    SessionPolicy, SessionStart, ToBroker, ToKex, ToSession, UserInfo,
};
use ressh_ipc::Endpoint;
use ressh_proto::keys::{PrivateKey, PublicKey};

use crate::authkeys::{self, KeyOptions, PeerInfo};
use crate::config::{
    Config, GatewayPorts, MatchContext, PermitRootLogin, PermitUserEnvironment, Settings,
};
use crate::log;
use crate::policy;

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
    pub host_keys: Arc<Vec<PrivateKey>>,
    pub kex_worker: PathBuf,
    pub session_worker: PathBuf,
    pub privsep: Privsep,
}

/// Runs the monitor for one connection; returns the process exit code.
pub fn run(ctx: &Context, sock: OwnedFd, peer: SocketAddr, local: SocketAddr) -> i32 {
    let broker = connect_broker(&ctx.broker_socket);
    let mut m = Monitor {
        ctx,
        peer,
        local,
        settings: ctx.config.resolve(&MatchContext {
            addr: Some(peer.ip()),
            local_addr: Some(local.ip()),
            local_port: Some(local.port()),
            ..Default::default()
        }),
        session_id: None,
        failures: 0,
        accepted: None,
        broker,
        tokens: Vec::new(),
    };
    match m.run(sock) {
        Ok(()) => 0,
        Err(e) => {
            log::error(&format!("{}: {e}", m.who()));
            1
        }
    }
}

struct Accepted {
    user: nix::unistd::User,
    groups: Vec<u32>,
    options: KeyOptions,
    settings: Settings,
}

struct Monitor<'a> {
    ctx: &'a Context,
    peer: SocketAddr,
    local: SocketAddr,
    /// Settings for the connection before the user is known.
    settings: Settings,
    /// The first exchange hash signed: the session id.
    session_id: Option<Vec<u8>>,
    failures: u32,
    accepted: Option<Accepted>,
    broker: Option<Endpoint>,
    /// The session's current resume tokens, to register again.
    tokens: Vec<Vec<u8>>,
}

/// Moves `fds` to 3, 4, ... in a child between fork and exec.
/// Async-signal-safe: only dup/dup2 calls.
fn place_fds(fds: &[i32]) -> std::io::Result<()> {
    let mut high = Vec::with_capacity(fds.len());
    for &fd in fds {
        // SAFETY: fcntl(F_DUPFD) on a descriptor we own.
        let h = unsafe { libc::fcntl(fd, libc::F_DUPFD, 100) };
        if h < 0 {
            return Err(std::io::Error::last_os_error());
        }
        high.push(h);
    }
    for (i, &h) in high.iter().enumerate() {
        // SAFETY: dup2 onto the fixed slot; clears close-on-exec there.
        if unsafe { libc::dup2(h, 3 + i as i32) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Monitor<'_> {
    fn who(&self) -> String {
        match &self.accepted {
            Some(a) => format!(
                "user {} {} port {}",
                a.user.name,
                self.peer.ip(),
                self.peer.port()
            ),
            None => format!("{} port {}", self.peer.ip(), self.peer.port()),
        }
    }

    fn run(&mut self, sock: OwnedFd) -> Result<(), String> {
        log::info(&format!(
            "Connection from {} port {} on {} port {}",
            self.peer.ip(),
            self.peer.port(),
            self.local.ip(),
            self.local.port()
        ));
        let (ipc, mut child) = self.spawn_kex(&sock)?;
        let result = self.serve_kex(&ipc);
        let result = match result {
            Ok(KexOutcome::Reconnect(request, leftover)) => {
                // The worker waits for our answer before it exits.
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
        let KexOutcome::Authenticated(state) = result? else {
            return Ok(());
        };
        if let (Some(b), Some(a)) = (&self.broker, &self.accepted) {
            let _ = b.send(
                &ressh_ipc::msg::ToBroker::Authenticated {
                    user: a.user.name.clone(),
                },
                &[],
            );
        }
        self.run_session(sock, state)
    }

    fn spawn_kex(&self, sock: &OwnedFd) -> Result<(Endpoint, Child), String> {
        let (ours, theirs) = Endpoint::pair().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.ctx.kex_worker);
        cmd.env_clear().stdin(Stdio::null()).stdout(Stdio::null());
        if let Privsep::Root { uid, gid, chroot } = &self.ctx.privsep {
            cmd.arg("--chroot").arg(chroot);
            cmd.arg("--uid").arg(uid.to_string());
            cmd.arg("--gid").arg(gid.to_string());
        }
        let fds = [theirs.as_raw_fd(), sock.as_raw_fd()];
        // SAFETY: place_fds only calls async-signal-safe functions.
        unsafe { cmd.pre_exec(move || place_fds(&fds)) };
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.ctx.kex_worker.display()))?;
        drop(theirs);
        let s = &self.settings;
        let start = KexStart {
            proto: policy::proto_config(s),
            host_keys: self
                .ctx
                .host_keys
                .iter()
                .map(|k| k.public_key().to_blob())
                .collect(),
            banner: policy::banner_text(s),
            login_grace_secs: s.login_grace_time.as_secs(),
            peer: format!("{} port {}", self.peer.ip(), self.peer.port()),
        };
        ours.send(&ToKex::Start(Box::new(start)), &[])
            .map_err(|e| e.to_string())?;
        Ok((ours, child))
    }

    fn sign(&self, key: &[u8], alg: &str, data: &[u8]) -> Result<Vec<u8>, String> {
        let k = self
            .ctx
            .host_keys
            .iter()
            .find(|k| k.public_key().to_blob() == key)
            .ok_or("no such host key")?;
        if !k.public_key().signature_algorithms().contains(&alg) {
            return Err(format!("algorithm {alg} does not fit the host key"));
        }
        k.sign(alg, data).map_err(|e| e.to_string())
    }

    /// Serves the kex worker until it hands over an authenticated
    /// connection (Some) or the client goes away (None).
    /// A new connection that asks to resume a session: ask the broker to
    /// route the request to the owning session; only after it validated,
    /// hand the socket over (DESIGN.md §3, reconnect path).
    fn route_reconnect(
        &mut self,
        kex: &Endpoint,
        sock: &OwnedFd,
        request: Box<ressh_proto::ReconnectRequest>,
        leftover: Vec<u8>,
    ) -> Result<(), String> {
        let who = self.who();
        let result = match &self.broker {
            None => Err((
                ressh_proto::resilience::failure::UNKNOWN_SESSION,
                "no broker".to_string(),
            )),
            Some(b) => {
                b.set_timeout(Some(Duration::from_secs(15)))
                    .map_err(|e| e.to_string())?;
                b.send(
                    &ToBroker::Route {
                        request,
                        peer_addr: self.peer.ip().to_string(),
                        peer_port: self.peer.port(),
                    },
                    &[],
                )
                .map_err(|e| e.to_string())?;
                match b.recv::<FromBroker>() {
                    Ok((FromBroker::RouteResult(r), _)) => r,
                    Ok(_) => return Err("broker answered out of turn".into()),
                    Err(e) => Err((
                        ressh_proto::resilience::failure::TRY_AGAIN,
                        format!("broker: {e}"),
                    )),
                }
            }
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
                )
                .map_err(|e| e.to_string())?;
                log::info(&format!("Reconnect from {who} handed to its session"));
                kex.send(&ToKex::ReconnectHandedOver, &[])
                    .map_err(|e| e.to_string())
            }
            Err((code, description)) => {
                log::info(&format!("Reconnect from {who} refused: {description}"));
                kex.send(&ToKex::ReconnectRefused { code, description }, &[])
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn serve_kex(&mut self, ipc: &Endpoint) -> Result<KexOutcome, String> {
        let grace = self.settings.login_grace_time;
        let deadline = (!grace.is_zero()).then(|| Instant::now() + grace + Duration::from_secs(1));
        loop {
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err("Timeout before authentication".into());
                }
                ipc.set_timeout(Some(left)).map_err(|e| e.to_string())?;
            }
            let msg = match ipc.recv::<FromKex>() {
                Ok((m, _)) => m,
                Err(ressh_ipc::Error::Closed) => return Ok(KexOutcome::Closed),
                Err(e) => return Err(e.to_string()),
            };
            match msg {
                FromKex::Sign { key, alg, data } => {
                    if self.accepted.is_some() {
                        return Err("kex worker asked for a signature after auth".into());
                    }
                    if self.session_id.is_none() {
                        if data.len() != 32 {
                            return Err("first signature request is not an exchange hash".into());
                        }
                        self.session_id = Some(data.clone());
                    }
                    let r = self.sign(&key, &alg, &data);
                    ipc.send(&ToKex::Signature(r), &[])
                        .map_err(|e| e.to_string())?;
                }
                FromKex::Auth { user, request } => {
                    if self.accepted.is_some() || self.session_id.is_none() {
                        return Err("auth request out of order".into());
                    }
                    let v = self.judge(&user, request);
                    if let AuthVerdict::Disconnect(t) = &v {
                        log::info(&format!("Disconnecting {}: {t}", self.who()));
                    }
                    ipc.send(&ToKex::Verdict(v), &[])
                        .map_err(|e| e.to_string())?;
                }
                FromKex::Reconnect { request, leftover } => {
                    if self.session_id.is_some() {
                        return Err("reconnect request after a key exchange".into());
                    }
                    return Ok(KexOutcome::Reconnect(request, leftover));
                }
                FromKex::Authenticated { state } => {
                    if self.accepted.is_none() {
                        return Err("kex worker claims success the monitor did not grant".into());
                    }
                    return Ok(KexOutcome::Authenticated(state));
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
        let mut methods = Vec::new();
        if self.settings.pubkey_authentication {
            methods.push("publickey".to_string());
        }
        AuthVerdict::Reject {
            methods,
            partial: false,
        }
    }

    fn judge(&mut self, name: &str, request: AuthRequest) -> AuthVerdict {
        let ip = self.peer.ip();
        let port = self.peer.port();
        let user = match self.lookup_user(name) {
            Some(u) => u,
            None => {
                if !matches!(request, AuthRequest::None) {
                    log::info(&format!(
                        "Invalid user {} from {ip} port {port}",
                        ressh_proto::wire::printable(name.as_bytes())
                    ));
                }
                return self.reject();
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
            addr: Some(ip),
            local_addr: Some(self.local.ip()),
            local_port: Some(self.local.port()),
            ..Default::default()
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
            return self.reject();
        }
        let AuthRequest::PublicKey {
            algorithm,
            blob,
            signature,
        } = request
        else {
            // none, password and keyboard-interactive: not offered (PAM arrives later).
            return self.reject();
        };
        if !settings.pubkey_authentication
            || !settings
                .pubkey_accepted_algorithms
                .iter()
                .any(|a| a == &algorithm)
        {
            return self.reject();
        }
        let Ok(key) = PublicKey::from_blob(&blob) else {
            return self.reject();
        };
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let files: Vec<PathBuf> = settings
            .authorized_keys_files
            .iter()
            .filter_map(|p| {
                authkeys::expand_authorized_keys_path(p, &user.name, &user.dir, user.uid.as_raw())
                    .ok()
            })
            .collect();
        let (found, notes) = authkeys::find_key(
            &files,
            &key,
            user.uid.as_raw(),
            user.gid.as_raw(),
            &user.dir,
            settings.strict_modes,
            &peer,
            now_unix,
        );
        for n in notes {
            log::info(&n);
        }
        let Some(found) = found else {
            if signature.is_some() {
                log::info(&format!(
                    "Failed publickey for {} from {ip} port {port} ssh2: {} {}",
                    user.name,
                    key.key_type_name(),
                    key.fingerprint()
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
                log::info(&format!("ROOT LOGIN REFUSED FROM {ip} port {port}"));
                return self.reject();
            }
        }
        let Some(signature) = signature else {
            return AuthVerdict::PkOk;
        };
        let sid = self.session_id.clone().unwrap_or_default();
        let data = ressh_proto::msg::publickey_signed_data(
            &sid,
            &user.name,
            "ssh-connection",
            &algorithm,
            &blob,
        );
        match key.verify(&data, &signature) {
            Ok(a) if a == algorithm => {}
            _ => {
                log::info(&format!(
                    "Failed publickey for {} from {ip} port {port}: bad signature",
                    user.name
                ));
                return self.reject();
            }
        }
        log::info(&format!(
            "Accepted publickey for {} from {ip} port {port} ssh2: {} {}",
            user.name,
            key.key_type_name(),
            key.fingerprint()
        ));
        self.accepted = Some(Accepted {
            user,
            groups,
            options: found.options,
            settings,
        });
        AuthVerdict::Accept
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
        let forwarding = match (
            s.allows_local_tcp_forwarding() && !o.no_port_forwarding,
            s.allows_remote_tcp_forwarding() && !o.no_port_forwarding,
        ) {
            (true, true) => Forwarding::All,
            (true, false) => Forwarding::Local,
            (false, true) => Forwarding::Remote,
            (false, false) => Forwarding::None,
        };
        SessionPolicy {
            force_command: s.force_command.clone().or_else(|| o.command.clone()),
            permit_pty: s.permit_tty && !o.no_pty,
            forwarding,
            permit_open: narrow(&policy::permit_list(&s.permit_open), &o.permitopen),
            permit_listen: narrow(&policy::permit_list(&s.permit_listen), &o.permitlisten),
            gateway_ports: s.gateway_ports != GatewayPorts::No,
            accept_env: s.accept_env.clone(),
            key_environment: match &s.permit_user_environment {
                PermitUserEnvironment::No => Vec::new(),
                PermitUserEnvironment::Yes => o.environment.clone(),
                PermitUserEnvironment::Allow(pat) => o
                    .environment
                    .iter()
                    .filter(|(k, _)| {
                        crate::config::pattern::match_pattern_list(k, pat, false).is_match()
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
        }
    }

    fn run_session(&mut self, sock: OwnedFd, state: Vec<u8>) -> Result<(), String> {
        let a = self.accepted.as_ref().expect("accepted");
        let (ours, theirs) = Endpoint::pair().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.ctx.session_worker);
        cmd.env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .current_dir("/");
        let fds = [theirs.as_raw_fd()];
        let (uid, gid) = (a.user.uid.as_raw(), a.user.gid.as_raw());
        let groups: Vec<libc::gid_t> = a.groups.clone();
        let change_ids = matches!(self.ctx.privsep, Privsep::Root { .. });
        // SAFETY: only async-signal-safe calls (dup, setgroups, setgid, setuid).
        unsafe {
            cmd.pre_exec(move || {
                place_fds(&fds)?;
                if change_ids
                    && (libc::setgroups(groups.len(), groups.as_ptr()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.ctx.session_worker.display()))?;
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
            host_keys: self
                .ctx
                .host_keys
                .iter()
                .map(|k| k.public_key().to_blob())
                .collect(),
            user,
            peer_addr: self.peer.ip().to_string(),
            peer_port: self.peer.port(),
            local_addr: self.local.ip().to_string(),
            local_port: self.local.port(),
            policy: self.policy(a),
        };
        ours.send(&ToSession::Start(Box::new(start)), &[sock.as_fd()])
            .map_err(|e| e.to_string())?;
        drop(sock);
        // Serve the session worker (rekey signatures, tokens, reconnects)
        // and the broker (routed reconnects) until the worker exits.
        if let Err(e) = self.serve_session(&ours) {
            log::error(&format!("{}: session worker: {e}", self.who()));
            let _ = child.kill();
        }
        let status = child.wait().map_err(|e| e.to_string())?;
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

impl Monitor<'_> {
    fn serve_session(&mut self, ours: &Endpoint) -> Result<(), String> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        // The routed request being validated: its id.
        let mut validating: Option<u64> = None;
        loop {
            let (session_ready, broker_ready) = {
                let mut fds = vec![PollFd::new(ours.as_fd(), PollFlags::POLLIN)];
                if let Some(b) = &self.broker {
                    fds.push(PollFd::new(b.as_fd(), PollFlags::POLLIN));
                }
                // Without a broker (resshd restarting), look for the new one
                // every second.
                let timeout = if self.broker.is_some() {
                    PollTimeout::NONE
                } else {
                    PollTimeout::from(1000u16)
                };
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(format!("poll: {e}")),
                }
                let r: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
                (r[0], r.get(1).copied().unwrap_or(false))
            };
            if self.broker.is_none() {
                self.relink_broker();
            }
            if session_ready {
                match ours.recv::<FromSession>() {
                    Ok((m, _)) => self.on_session_msg(ours, m, &mut validating)?,
                    Err(ressh_ipc::Error::Closed) => return Ok(()),
                    Err(e) => return Err(e.to_string()),
                }
            }
            if broker_ready {
                let b = self.broker.as_ref().expect("broker");
                match b.recv::<FromBroker>() {
                    Ok((m, fds)) => self.on_broker_msg(ours, m, fds, &mut validating)?,
                    Err(e) => {
                        // resshd went away (restart): the session carries on
                        // without routing until a new broker takes over.
                        log::info(&format!("{}: lost the broker: {e}", self.who()));
                        self.broker = None;
                    }
                }
            }
        }
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

    fn on_session_msg(
        &mut self,
        ours: &Endpoint,
        m: FromSession,
        validating: &mut Option<u64>,
    ) -> Result<(), String> {
        match m {
            FromSession::Sign { key, alg, data } => {
                let r = self.sign(&key, &alg, &data);
                ours.send(&ToSession::Signature(r), &[])
                    .map_err(|e| e.to_string())
            }
            FromSession::Tokens(t) => {
                if t.len() > 4 || t.iter().any(|x| x.len() != 32) {
                    return Err("bad tokens".into());
                }
                self.to_broker(&ToBroker::Tokens(t.clone()));
                self.tokens = t;
                Ok(())
            }
            FromSession::ReconnectVerdict(result) => {
                let Some(id) = validating.take() else {
                    return Err("reconnect verdict nobody asked for".into());
                };
                self.to_broker(&ToBroker::Verdict { id, result });
                Ok(())
            }
            FromSession::Detached => {
                log::info(&format!("Detached: {}", self.who()));
                self.to_broker(&ToBroker::Detached);
                Ok(())
            }
            FromSession::Attached {
                peer_addr,
                peer_port,
            } => {
                let old = self.who();
                if let Ok(ip) = peer_addr.parse() {
                    self.peer = SocketAddr::new(ip, peer_port);
                }
                log::info(&format!("Reconnected: {} (was {old})", self.who()));
                self.to_broker(&ToBroker::Attached);
                Ok(())
            }
        }
    }

    fn on_broker_msg(
        &mut self,
        ours: &Endpoint,
        m: FromBroker,
        fds: Vec<OwnedFd>,
        validating: &mut Option<u64>,
    ) -> Result<(), String> {
        match m {
            FromBroker::Validate {
                id,
                request,
                peer_addr,
                peer_port,
            } => {
                if let Err(why) = self.reconnect_allowed(&peer_addr) {
                    log::info(&format!(
                        "Reconnect of {} from {peer_addr} port {peer_port} refused: {why}",
                        self.who()
                    ));
                    self.to_broker(&ToBroker::Verdict {
                        id,
                        result: Err((ressh_proto::resilience::failure::NOT_ALLOWED, why)),
                    });
                    return Ok(());
                }
                *validating = Some(id);
                ours.send(&ToSession::Reconnect(request), &[])
                    .map_err(|e| e.to_string())
            }
            FromBroker::Transport {
                id: _,
                leftover,
                peer_addr,
                peer_port,
            } => {
                let [fd] = <[OwnedFd; 1]>::try_from(fds)
                    .map_err(|_| "transport without exactly one socket")?;
                ours.send(
                    &ToSession::Transport {
                        leftover,
                        peer_addr,
                        peer_port,
                    },
                    &[fd.as_fd()],
                )
                .map_err(|e| e.to_string())
            }
            FromBroker::RouteResult(_) => Err("route result for a session".into()),
        }
    }

    /// The address rules, checked again for a reconnect from `addr`:
    /// AllowUsers/DenyUsers (with @host), AllowGroups/DenyGroups and the
    /// configuration as Match Address resolves it there, and the from=
    /// option of the key the user logged in with.
    fn reconnect_allowed(&self, addr: &str) -> Result<(), String> {
        let a = self.accepted.as_ref().ok_or("no user")?;
        let ip: std::net::IpAddr = addr.parse().map_err(|_| "bad address".to_string())?;
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
            addr: Some(ip),
            local_addr: Some(self.local.ip()),
            local_port: Some(self.local.port()),
            ..Default::default()
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
        )?;
        if let Some(from) = &a.options.from {
            if !authkeys::from_matches(from, &peer) {
                return Err(format!("key's from=\"{from}\" does not match {addr}"));
            }
        }
        Ok(())
    }
}

/// A link to resshd's broker, or None when it cannot be reached.
fn connect_broker(path: &std::path::Path) -> Option<Endpoint> {
    let s = std::os::unix::net::UnixStream::connect(path).ok()?;
    Some(Endpoint::from_fd(OwnedFd::from(s)))
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

/// Combines a configured list with a key's list: both must allow.
fn narrow(config: &[String], key: &[String]) -> Vec<String> {
    match (config.is_empty(), key.is_empty()) {
        (_, true) => config.to_vec(),
        (true, false) => key.to_vec(),
        (false, false) => key.iter().filter(|k| config.contains(k)).cloned().collect(),
    }
}
