//! A test harness that plays resshd's monitor and kex worker for
//! `resshd-session`: it accepts stock OpenSSH clients on 127.0.0.1,
//! authenticates them in-process with ressh-proto's server role, exports the
//! connection right after USERAUTH_SUCCESS is queued, and execs the built
//! worker as a real test user with the client's socket and an IPC endpoint
//! on fd 3, answering its signature requests with the host key.
//!
//! For the resilience extension it also plays the broker and the new
//! connection's kex worker (W2 + M2): a connection whose first key exchange
//! is a reconnect is run until `Event::ReconnectRequest`, routed by its token
//! (from the workers' `FromSession::Tokens`) to the owning worker as
//! `ToSession::Reconnect`, and after a positive verdict handed over with
//! `ToSession::Transport`; a refusal goes back as RECONNECT_FAILURE. What
//! the workers tell the monitor is recorded ([`MonitorEvent`]).

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ressh_ipc::msg::{Forwarding, FromSession, SessionPolicy, SessionStart, ToSession, UserInfo};
use ressh_ipc::permit::Permits;
use ressh_ipc::Endpoint;
use ressh_proto::keys::{KeyType, PrivateKey, PublicKey};
use ressh_proto::resilience::failure;
use ressh_proto::{AuthAttempt, Config, Connection, Event, ReconnectRequest, Refused};
use ressh_testkit::{require_cmd, require_root, ssh_keygen, TempDir, TestUser};

pub const WORKER: &str = env!("CARGO_BIN_EXE_resshd-session");

/// The route ids this harness gives reconnect requests, as the broker does.
static ROUTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A permissive policy like a default sshd_config with AcceptEnv LANG LC_*
/// and the sftp subsystem.
pub fn default_policy() -> SessionPolicy {
    SessionPolicy {
        force_command: None,
        permit_pty: true,
        forwarding: Forwarding::All,
        permit_open: Permits::ANY,
        permit_listen: Permits::ANY,
        gateway_ports: false,
        stream_local: Forwarding::All,
        stream_local_bind_mask: 0o177,
        stream_local_bind_unlink: false,
        agent_forwarding: true,
        x11: None,
        accept_env: vec!["LANG".into(), "LC_*".into()],
        key_environment: Vec::new(),
        set_env: Vec::new(),
        subsystems: vec![("sftp".into(), "/usr/lib/openssh/sftp-server".into())],
        client_alive_interval_secs: 0,
        client_alive_count_max: 3,
        max_sessions: 10,
        detach_timeout_secs: 0,
        channel_timeouts: Vec::new(),
        unused_connection_timeout_secs: None,
        auth_info: None,
    }
}

/// What a worker told the monitor, besides signature requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorEvent {
    /// How many tokens came.
    Tokens(usize),
    Verdict(Result<(), (u32, String)>),
    Detached,
    /// A reconnect committed; the address is the one handed over.
    Attached {
        peer_addr: String,
        peer_port: u16,
    },
}

/// The monitor's end of one worker's endpoint.
struct Link {
    ep: Endpoint,
    /// Sends come from the worker's monitor thread and from W2 threads.
    send_lock: Mutex<()>,
    verdicts: Mutex<VecDeque<Result<(), (u32, String)>>>,
    verdict_cv: Condvar,
    tokens: Mutex<Vec<Vec<u8>>>,
    /// The address of the connection last handed over, as the monitor
    /// knows it (the worker does not report it).
    handed: Mutex<Option<(String, u16)>>,
}

impl Link {
    fn send(&self, m: &ToSession, fds: &[std::os::fd::BorrowedFd<'_>]) -> Result<(), String> {
        let _g = self.send_lock.lock().unwrap();
        self.ep.send(m, fds).map_err(|e| e.to_string())
    }

    fn wait_verdict(&self, timeout: Duration) -> Option<Result<(), (u32, String)>> {
        let deadline = Instant::now() + timeout;
        let mut q = self.verdicts.lock().unwrap();
        loop {
            if let Some(v) = q.pop_front() {
                return Some(v);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            q = self.verdict_cv.wait_timeout(q, deadline - now).unwrap().0;
        }
    }
}

struct Shared {
    workers: Mutex<Vec<Child>>,
    signs: AtomicUsize,
    /// Signature requests received (counted before answering).
    sign_requests: AtomicUsize,
    /// Delay before answering a signature request, in ms.
    sign_delay_ms: AtomicU64,
    /// Answer signature requests with a refusal.
    refuse_signs: AtomicBool,
    connections: AtomicUsize,
    /// Connections whose serving thread has returned (its worker's link
    /// ended and every message from it, log lines included, was handled).
    served: AtomicUsize,
    errors: Mutex<Vec<String>>,
    /// Resume token → the owning worker's link.
    routes: Mutex<HashMap<Vec<u8>, Arc<Link>>>,
    /// (worker index, event), in arrival order.
    events: Mutex<Vec<(usize, MonitorEvent)>>,
    /// Reconnect connections handed over to a worker.
    handovers: AtomicUsize,
    /// Every worker's link, by worker index.
    links: Mutex<Vec<Arc<Link>>>,
}

pub struct Harness {
    pub port: u16,
    pub host_key: PublicKey,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub dir: TempDir,
    log_path: PathBuf,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    // Dropped last: killing the user's processes and deleting the user.
    pub user: TestUser,
}

struct ServeCfg {
    proto: Config,
    host: PrivateKey,
    allowed: PublicKey,
    user: UserInfo,
    groups: Vec<libc::gid_t>,
    policy: SessionPolicy,
    log_path: PathBuf,
}

impl Harness {
    pub fn start(prefix: &str, policy: SessionPolicy) -> Harness {
        let proto = Config {
            detach_timeout: u32::try_from(policy.detach_timeout_secs).unwrap_or(u32::MAX),
            ..Config::default()
        };
        Harness::start_with(prefix, policy, proto)
    }

    /// Like [`Self::start`] with the protocol configuration the kex worker
    /// (and so the session worker) runs with.
    pub fn start_with(prefix: &str, policy: SessionPolicy, proto: Config) -> Harness {
        require_root();
        require_cmd("ssh");
        let user = TestUser::create(prefix);
        let dir = TempDir::new(prefix);
        let (key, pub_line) = ssh_keygen(dir.path(), "ed25519", "");
        let allowed = PublicKey::from_openssh(&pub_line).unwrap().0;
        let host = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let known_hosts = dir.join("known_hosts");
        fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{port} {}\n", host.public_key().to_openssh("")),
        )
        .unwrap();
        let log_path = dir.join("worker.log");
        File::create(&log_path).unwrap();

        let cname = CString::new(user.name.clone()).unwrap();
        let groups = nix::unistd::getgrouplist(&cname, nix::unistd::Gid::from_raw(user.gid))
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        let host_key = host.public_key();
        let cfg = Arc::new(ServeCfg {
            proto,
            host,
            allowed,
            user: UserInfo {
                name: user.name.clone(),
                uid: user.uid,
                gid: user.gid,
                home: user.home.to_string_lossy().into_owned(),
                shell: "/bin/sh".into(),
            },
            groups,
            policy,
            log_path: log_path.clone(),
        });
        let shared = Arc::new(Shared {
            workers: Mutex::new(Vec::new()),
            signs: AtomicUsize::new(0),
            sign_requests: AtomicUsize::new(0),
            sign_delay_ms: AtomicU64::new(0),
            refuse_signs: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            errors: Mutex::new(Vec::new()),
            routes: Mutex::new(HashMap::new()),
            events: Mutex::new(Vec::new()),
            handovers: AtomicUsize::new(0),
            links: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            thread::spawn(move || accept_loop(listener, cfg, shared, stop))
        };
        Harness {
            port,
            host_key,
            key,
            known_hosts,
            dir,
            log_path,
            shared,
            stop,
            thread: Some(thread),
            user,
        }
    }

    /// The options every stock client gets: no config, strict host key
    /// checking against this harness's key, our identity only.
    pub fn client_opts(&self) -> Vec<String> {
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            format!("IdentityFile={}", self.key.display()),
            "-o".into(),
            format!("User={}", self.user.name),
        ]
    }

    /// `ssh` to the harness; append options and the command.
    pub fn ssh(&self) -> Command {
        let mut c = Command::new(require_cmd("ssh"));
        c.args(self.client_opts())
            .args(["-p", &self.port.to_string(), "127.0.0.1"]);
        c
    }

    /// `ssh` with extra options before the host.
    pub fn ssh_with(&self, opts: &[&str]) -> Command {
        let mut c = Command::new(require_cmd("ssh"));
        c.args(self.client_opts())
            .args(opts)
            .args(["-p", &self.port.to_string(), "127.0.0.1"]);
        c
    }

    /// The ssh command line as one shell string (for tmux).
    pub fn ssh_shell_line(&self, opts: &[&str]) -> String {
        let mut parts = vec![require_cmd("ssh").display().to_string()];
        parts.extend(self.client_opts());
        parts.extend(opts.iter().map(|s| s.to_string()));
        parts.extend(["-p".to_string(), self.port.to_string(), "127.0.0.1".into()]);
        parts
            .iter()
            .map(|p| format!("'{}'", p.replace('\'', "'\\''")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn sftp(&self) -> Command {
        let mut c = Command::new(require_cmd("sftp"));
        c.args(self.client_opts())
            .args(["-P", &self.port.to_string()]);
        c
    }

    pub fn scp(&self) -> Command {
        let mut c = Command::new(require_cmd("scp"));
        c.args(self.client_opts())
            .args(["-P", &self.port.to_string()]);
        c
    }

    /// Host-key signatures the workers asked for (rekeys).
    pub fn signs(&self) -> usize {
        self.shared.signs.load(Ordering::SeqCst)
    }

    /// Signature requests received so far (counted before answering).
    pub fn sign_requests(&self) -> usize {
        self.shared.sign_requests.load(Ordering::SeqCst)
    }

    /// Answer later signature requests only after `d`.
    pub fn set_sign_delay(&self, d: Duration) {
        self.shared
            .sign_delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Refuse later signature requests, as a monitor whose gate said no.
    pub fn refuse_signatures(&self) {
        self.shared.refuse_signs.store(true, Ordering::SeqCst);
    }

    /// Reconnects handed over to a worker with `ToSession::Transport`.
    pub fn handovers(&self) -> usize {
        self.shared.handovers.load(Ordering::SeqCst)
    }

    /// What the workers told the monitor: (worker index, event).
    pub fn monitor_events(&self) -> Vec<(usize, MonitorEvent)> {
        self.shared.events.lock().unwrap().clone()
    }

    /// How many of the recorded events match `pred`.
    pub fn count_events(&self, pred: impl Fn(&MonitorEvent) -> bool) -> usize {
        self.monitor_events()
            .iter()
            .filter(|(_, e)| pred(e))
            .count()
    }

    /// Waits until at least `n` recorded events match `pred`.
    pub fn wait_events(&self, n: usize, pred: impl Fn(&MonitorEvent) -> bool, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count_events(&pred) < n {
            assert!(
                Instant::now() < deadline,
                "monitor events: {:?}\nlog:\n{}",
                self.monitor_events(),
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The monitor goes away: its end of worker `index`'s endpoint is shut.
    pub fn close_monitor(&self, index: usize) {
        let link = self.shared.links.lock().unwrap()[index].clone();
        nix::sys::socket::shutdown(link.ep.as_raw_fd(), nix::sys::socket::Shutdown::Both).unwrap();
    }

    /// Whether every worker has exited.
    pub fn workers_exited(&self) -> bool {
        self.shared
            .workers
            .lock()
            .unwrap()
            .iter_mut()
            .all(|w| w.try_wait().unwrap().is_some())
    }

    /// Pids of the workers started so far.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.shared
            .workers
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.id())
            .collect()
    }

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// What the workers logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until every worker has exited and checks each exited 0 and
    /// that the harness saw no errors. Returns the workers' log.
    pub fn finish(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut workers = self.shared.workers.lock().unwrap();
            let mut running = 0;
            for w in workers.iter_mut() {
                match w.try_wait().unwrap() {
                    Some(st) => assert!(
                        st.success(),
                        "a worker exited with {st}; log:\n{}",
                        self.log()
                    ),
                    None => running += 1,
                }
            }
            drop(workers);
            // A worker's last log lines are written by the thread serving
            // its link, which may still be reading them when it exits.
            let served = self.shared.served.load(Ordering::SeqCst);
            if running == 0 && served == self.shared.connections.load(Ordering::SeqCst) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{running} worker(s) still running, or their links still served; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
        let errors = self.shared.errors.lock().unwrap();
        assert!(
            errors.is_empty(),
            "harness errors: {errors:?}\nlog:\n{}",
            self.log()
        );
        self.log()
    }

    /// Waits until `pred` holds for the log (or panics after `timeout`).
    pub fn wait_log(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if pred(&log) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "log condition not met; log:\n{log}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes a file into the user's home, owned by the user.
    pub fn user_file(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.user.home.join(name);
        fs::write(&p, content).unwrap();
        self.user.own(&p, 0o644);
        p
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut workers = self
            .shared
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for w in workers.iter_mut() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    cfg: Arc<ServeCfg>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) {
    let mut handlers = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((sock, _)) => {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let (cfg, shared) = (cfg.clone(), shared.clone());
                handlers.push(thread::spawn(move || {
                    if let Err(e) = serve(sock, &cfg, &shared) {
                        shared.errors.lock().unwrap().push(e);
                    }
                    shared.served.fetch_add(1, Ordering::SeqCst);
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    for h in handlers {
        let _ = h.join();
    }
}

/// Authenticates one client in-process, then hands it to a worker.
#[allow(unsafe_code)] // pre_exec placing the worker's descriptor at 3
fn serve(mut sock: TcpStream, cfg: &ServeCfg, shared: &Shared) -> Result<(), String> {
    sock.set_nonblocking(false).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let mut conn = Connection::server(
        cfg.proto.clone(),
        vec![cfg.host.public_key()],
        Instant::now(),
    )
    .map_err(|e| e.to_string())?;
    let host = std::slice::from_ref(&cfg.host);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 65536];
    'auth: loop {
        let out = conn.take_output();
        sock.write_all(&out).map_err(|e| format!("write: {e}"))?;
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::SignHostKey(r) => conn
                    .host_key_signed(r.sign_with(host), Instant::now())
                    .map_err(|e| e.to_string())?,
                Event::AuthRequest {
                    user,
                    attempt: AuthAttempt::PublicKeyQuery { algorithm, key },
                } if user == cfg.user.name && key == cfg.allowed => conn
                    .auth_pk_ok(&algorithm, &key)
                    .map_err(|e| e.to_string())?,
                Event::AuthRequest {
                    user,
                    attempt: AuthAttempt::PublicKey { key, .. },
                } if user == cfg.user.name && key == cfg.allowed => {
                    conn.auth_accept().map_err(|e| e.to_string())?;
                    break 'auth;
                }
                Event::AuthRequest { .. } => conn
                    .auth_reject(&["publickey"], false)
                    .map_err(|e| e.to_string())?,
                Event::ReconnectRequest(req) => return route(sock, conn, req, shared),
                _ => {}
            }
        }
        if Instant::now() > deadline {
            return Err("authentication timed out".into());
        }
        match sock.read(&mut buf) {
            // A client that gave up (e.g. a host key test): not an error.
            Ok(0) => return Ok(()),
            Ok(n) => conn
                .handle_input(&buf[..n], Instant::now())
                .map_err(|e| format!("pre-auth: {e}"))?,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    // USERAUTH_SUCCESS is still in the output buffer: the worker sends it.
    let state = conn.export(Instant::now()).map_err(|e| e.to_string())?;
    sock.set_read_timeout(None).map_err(|e| e.to_string())?;

    let (monitor, worker_end) = Endpoint::pair().map_err(|e| e.to_string())?;
    let worker_fd = worker_end.into_fd();
    let raw = worker_fd.as_raw_fd();
    let log = File::options()
        .append(true)
        .open(&cfg.log_path)
        .map_err(|e| e.to_string())?;
    let (uid, gid, groups) = (cfg.user.uid, cfg.user.gid, cfg.groups.clone());
    let mut cmd = Command::new(WORKER);
    let groups_arg: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    cmd.args(["--uid", &uid.to_string(), "--gid", &gid.to_string()])
        .args(["--groups", &groups_arg.join(",")]);
    cmd.env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    // SAFETY: only async-signal-safe calls between fork and exec, like the
    // monitor: the endpoint to fd 3 and cwd /; the worker becomes the user.
    unsafe {
        cmd.pre_exec(move || {
            if raw == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                if libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::chdir(c"/".as_ptr()) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| format!("spawn worker: {e}"))?;
    let pid = child.id();
    drop(worker_fd);
    let index = {
        let mut w = shared.workers.lock().unwrap();
        w.push(child);
        w.len() - 1
    };
    let link = Arc::new(Link {
        ep: monitor,
        send_lock: Mutex::new(()),
        verdicts: Mutex::new(VecDeque::new()),
        verdict_cv: Condvar::new(),
        tokens: Mutex::new(Vec::new()),
        handed: Mutex::new(None),
    });
    shared.links.lock().unwrap().push(link.clone());

    let local = sock.local_addr().map_err(|e| e.to_string())?;
    let peer = sock.peer_addr().map_err(|e| e.to_string())?;
    let start = SessionStart {
        state: state.to_vec(),
        host_keys: vec![cfg.host.public_key().to_blob()],
        host_certs: Vec::new(),
        user: cfg.user.clone(),
        peer_addr: peer.ip().to_string(),
        peer_port: peer.port(),
        local_addr: local.ip().to_string(),
        local_port: local.port(),
        policy: cfg.policy.clone(),
        pam_env: Vec::new(),
        login_message: String::new(),
    };
    link.send(&ToSession::Start(Box::new(start)), &[sock.as_fd()])
        .map_err(|e| format!("send Start: {e}"))?;
    drop(sock);

    // Play the monitor until the worker exits. Its log lines go to the
    // log as the real monitor writes them (without the escaping).
    let mut log = File::options()
        .append(true)
        .open(&cfg.log_path)
        .map_err(|e| e.to_string())?;
    let mut shown_peer = (peer.ip().to_string(), peer.port());
    let record = |e: MonitorEvent| shared.events.lock().unwrap().push((index, e));
    let result = loop {
        match link.ep.recv::<FromSession>() {
            Ok((FromSession::Sign { key, alg, data }, _)) => {
                shared.sign_requests.fetch_add(1, Ordering::SeqCst);
                let delay = shared.sign_delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    thread::sleep(Duration::from_millis(delay));
                }
                let reply = if shared.refuse_signs.load(Ordering::SeqCst) {
                    Err("refused by the test monitor".to_string())
                } else if key == cfg.host.public_key().to_blob() {
                    cfg.host.sign(&alg, &data).map_err(|e| e.to_string())
                } else {
                    Err("unknown host key".to_string())
                };
                shared.signs.fetch_add(1, Ordering::SeqCst);
                if let Err(e) = link.send(&ToSession::Signature(reply), &[]) {
                    break Err(format!("send Signature: {e}"));
                }
            }
            Ok((FromSession::Tokens(t), _)) => {
                record(MonitorEvent::Tokens(t.len()));
                let mut routes = shared.routes.lock().unwrap();
                let mut mine = link.tokens.lock().unwrap();
                for old in mine.drain(..) {
                    routes.remove(&old);
                }
                for tok in t {
                    routes.insert(tok.clone(), link.clone());
                    mine.push(tok);
                }
            }
            Ok((FromSession::ReconnectVerdict { result: v, .. }, _)) => {
                record(MonitorEvent::Verdict(v.clone()));
                link.verdicts.lock().unwrap().push_back(v);
                link.verdict_cv.notify_all();
            }
            Ok((FromSession::ProveHostKeys(_), _)) => {
                let no = Err("host key proofs: not in the test monitor".to_string());
                if let Err(e) = link.send(&ToSession::HostKeyProofs(no), &[]) {
                    break Err(format!("send HostKeyProofs: {e}"));
                }
            }
            Ok((FromSession::Detached, _)) => record(MonitorEvent::Detached),
            Ok((FromSession::KexDone, _)) => {}
            Ok((FromSession::Log(text), _)) => {
                let line = format!(
                    "resshd-session[{pid}]: user {} from {} port {}: {text}\n",
                    cfg.user.name, shown_peer.0, shown_peer.1
                );
                let _ = log.write_all(line.as_bytes());
            }
            // Login records are the real monitor's business.
            Ok((FromSession::LoginStarted { .. } | FromSession::LoginEnded { .. }, _)) => {}
            Ok((FromSession::Attached, _)) => {
                if let Some(p) = link.handed.lock().unwrap().take() {
                    shown_peer = p;
                }
                record(MonitorEvent::Attached {
                    peer_addr: shown_peer.0.clone(),
                    peer_port: shown_peer.1,
                })
            }
            Err(ressh_ipc::Error::Closed) => break Ok(()),
            Err(e) => break Err(format!("monitor recv: {e}")),
        }
    };
    let mut routes = shared.routes.lock().unwrap();
    for old in link.tokens.lock().unwrap().drain(..) {
        routes.remove(&old);
    }
    result
}

/// W2 + M2 + broker: routes a reconnect request to the worker that owns its
/// token and, after a positive verdict, hands the socket over.
fn route(
    mut sock: TcpStream,
    mut conn: Connection,
    req: Box<ReconnectRequest>,
    shared: &Shared,
) -> Result<(), String> {
    // The version line and KEXINIT go out before the session's reply.
    sock.write_all(&conn.take_output())
        .map_err(|e| format!("write: {e}"))?;
    let route_id = ROUTES.fetch_add(1, Ordering::SeqCst) + 1;
    let link = shared
        .routes
        .lock()
        .unwrap()
        .get(&req.request.token)
        .cloned();
    let verdict = match &link {
        None => Err((failure::UNKNOWN_SESSION, "unknown session".to_string())),
        Some(l) => {
            l.send(
                &ToSession::Reconnect {
                    id: route_id,
                    request: req,
                },
                &[],
            )?;
            l.wait_verdict(Duration::from_secs(30))
                .unwrap_or(Err((failure::TRY_AGAIN, "no verdict".to_string())))
        }
    };
    match verdict {
        Ok(()) => {
            let l = link.expect("a positive verdict comes from a worker");
            let leftover = conn.take_unprocessed_input();
            let peer = sock.peer_addr().map_err(|e| e.to_string())?;
            sock.set_read_timeout(None).map_err(|e| e.to_string())?;
            *l.handed.lock().unwrap() = Some((peer.ip().to_string(), peer.port()));
            l.send(
                &ToSession::Transport {
                    id: route_id,
                    leftover,
                    peer_addr: peer.ip().to_string(),
                    peer_port: peer.port(),
                },
                &[sock.as_fd()],
            )?;
            shared.handovers.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        Err((code, description)) => {
            conn.reconnect_failure(&Refused { code, description })
                .map_err(|e| e.to_string())?;
            // The client may be gone already: not an error.
            let _ = sock.write_all(&conn.take_output());
            Ok(())
        }
    }
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> String {
    let data = fs::read(path).unwrap();
    hex(&openssl::sha::sha256(&data))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    openssl::rand::rand_bytes(&mut v).unwrap();
    v
}

/// ressh-proto's client role over a blocking socket, for requests stock
/// `ssh` cannot make (signal), for watching the wire closely, and for the
/// resilience extension (stock `ssh` does not speak it): the transport can
/// be killed and the session resumed over a new TCP connection.
pub struct ProtoClient {
    pub conn: Connection,
    sock: Option<TcpStream>,
    /// An old transport kept open after a make-before-break reconnect.
    stale: Option<TcpStream>,
    buf: Vec<u8>,
    port: u16,
}

/// How a test breaks the client's TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// shutdown(SHUT_RDWR): the server reads EOF.
    Shutdown,
    /// SO_LINGER 0 and close: the server gets a reset.
    Reset,
}

impl ProtoClient {
    /// Connects, checks the host key, authenticates with the harness key.
    pub fn connect(h: &Harness) -> ProtoClient {
        Self::connect_with(h, Config::default())
    }

    pub fn connect_with(h: &Harness, config: Config) -> ProtoClient {
        let sock = TcpStream::connect(("127.0.0.1", h.port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut c = ProtoClient {
            conn: Connection::client(config, Instant::now()).unwrap(),
            sock: Some(sock),
            stale: None,
            buf: vec![0; 65536],
            port: h.port,
        };
        let key = PrivateKey::from_openssh_pem(&fs::read(&h.key).unwrap()).unwrap();
        let (user, host_key) = (h.user.name.clone(), h.host_key.clone());
        c.until(Duration::from_secs(30), |conn, ev| {
            match ev {
                Event::HostKey(k) => {
                    assert_eq!(k, host_key);
                    conn.accept_host_key(Instant::now()).unwrap();
                }
                Event::AuthReady => conn.auth_publickey(&user, "ssh-ed25519", &key).unwrap(),
                Event::AuthFailure { methods, .. } => panic!("auth failed: {methods:?}"),
                Event::AuthSuccess => return true,
                _ => {}
            }
            false
        });
        c
    }

    fn sock(&mut self) -> &mut TcpStream {
        self.sock.as_mut().expect("the client has no transport")
    }

    fn flush(&mut self) {
        let out = self.conn.take_output();
        if !out.is_empty() {
            self.sock().write_all(&out).unwrap();
        }
    }

    /// Pumps the connection, handing each event to `on` until it returns
    /// true; panics after `timeout`.
    pub fn until(&mut self, timeout: Duration, mut on: impl FnMut(&mut Connection, Event) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            self.flush();
            let mut any = false;
            while let Some(ev) = self.conn.poll_event() {
                any = true;
                if on(&mut self.conn, ev) {
                    self.flush();
                    return;
                }
            }
            if any {
                continue;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on the connection"
            );
            self.read_once();
        }
    }

    /// One round: sends what is queued, hands every pending event to `on`,
    /// then reads for at most the socket's short timeout.
    pub fn step(&mut self, mut on: impl FnMut(&mut Connection, Event)) {
        self.flush();
        while let Some(ev) = self.conn.poll_event() {
            on(&mut self.conn, ev);
        }
        self.flush();
        self.read_once();
    }

    /// Reads whatever arrives within the socket's short timeout.
    pub fn read_once(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        match self.sock().read(&mut buf) {
            Ok(0) => panic!("the server closed the connection"),
            Ok(n) => self.conn.handle_input(&buf[..n], Instant::now()).unwrap(),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("read: {e}"),
        }
        self.buf = buf;
    }

    /// Breaks the TCP connection without DISCONNECT; whatever is in flight
    /// is lost. The session can go on with [`Self::reconnect`].
    #[allow(unsafe_code)] // setsockopt SO_LINGER to cut the transport with a RST
    pub fn kill_transport(&mut self, how: Cut) {
        let s = self.sock.take().expect("the client has no transport");
        match how {
            Cut::Shutdown => {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            Cut::Reset => {
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                // SAFETY: a valid socket and a correctly sized option value.
                let r = unsafe {
                    libc::setsockopt(
                        s.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        (&linger as *const libc::linger).cast(),
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    )
                };
                assert_eq!(r, 0, "SO_LINGER");
            }
        }
        drop(s);
        self.stale = None;
        // Bytes the engine queued for the dead transport are lost with it.
        let _ = self.conn.take_output();
    }

    /// Resumes the session over a new TCP connection (through the harness,
    /// which routes the request to the worker). A live transport is kept
    /// until the new one works (make-before-break) and then closed later.
    pub fn reconnect(&mut self) -> Result<(), Refused> {
        self.reconnect_tampered(|_| {}, false)
    }

    /// A reconnect whose first bytes `tamper` may change; with `give_up`
    /// the new connection is closed as soon as the server's reply arrives
    /// (before the key confirmation). A failed attempt changes nothing.
    pub fn reconnect_tampered(
        &mut self,
        tamper: impl FnOnce(&mut Vec<u8>),
        give_up: bool,
    ) -> Result<(), Refused> {
        let mut att = self.conn.reconnect_attempt().unwrap();
        let mut first = att.take_output();
        tamper(&mut first);
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        s.write_all(&first).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let fail = |att: &ressh_proto::ClientReconnect, why: String| {
            att.refused().cloned().unwrap_or(Refused {
                code: 0,
                description: why,
            })
        };
        let mut buf = vec![0u8; 65536];
        while !att.is_done() {
            assert!(Instant::now() < deadline, "reconnect timed out");
            match s.read(&mut buf) {
                Ok(0) => {
                    self.conn.abort_reconnect();
                    return Err(fail(&att, "closed".into()));
                }
                Ok(n) => {
                    if let Err(e) = att.handle_input(&buf[..n]) {
                        self.conn.abort_reconnect();
                        return Err(fail(&att, e.to_string()));
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => {
                    self.conn.abort_reconnect();
                    return Err(fail(&att, e.to_string()));
                }
            }
            if give_up && att.is_done() {
                drop(s);
                self.conn.abort_reconnect();
                return Err(fail(&att, "gave up".into()));
            }
            let out = att.take_output();
            if !out.is_empty() {
                s.write_all(&out).unwrap();
            }
        }
        self.conn.complete_reconnect(att, Instant::now()).unwrap();
        // Keep the old transport open: the server drops it at its commit.
        self.stale = self.sock.replace(s);
        self.flush();
        Ok(())
    }

    /// A reconnect whose request the client never confirms: it sends the
    /// request and then holds the new connection open, reading (and
    /// discarding) what the server sends, until the server closes it (60 s
    /// at most). Returns the time from just before the request was sent to
    /// the close.
    pub fn reconnect_unconfirmed(&mut self) -> Duration {
        let mut att = self.conn.reconnect_attempt().unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let sent = Instant::now();
        s.write_all(&att.take_output()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("the unconfirmed attempt's connection: {e}"),
            }
        }
        let held = sent.elapsed();
        drop(s);
        drop(att);
        self.conn.abort_reconnect();
        held
    }

    /// Sends DISCONNECT and closes.
    pub fn bye(mut self) {
        self.conn.disconnect(11, "bye");
        let out = self.conn.take_output();
        let _ = self.sock().write_all(&out);
    }
}

/// Flips a byte of the MAC of the last packet in a client's first
/// reconnect bytes (version line, KEXINIT, RECONNECT_REQUEST, unencrypted).
pub fn flip_request_mac(bytes: &mut [u8]) {
    let mut at = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut last = at;
    while at < bytes.len() {
        last = at;
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 4 + len;
    }
    let len = u32::from_be_bytes(bytes[last..last + 4].try_into().unwrap()) as usize;
    let pad = bytes[last + 4] as usize;
    let payload_end = last + 4 + len - pad;
    assert_eq!(
        bytes[last + 5],
        ressh_proto::resilience::MSG_RECONNECT_REQUEST
    );
    // The MAC is the payload's last field: 32 bytes.
    bytes[payload_end - 1] ^= 0x55;
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}
