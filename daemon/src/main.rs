//! resshd: the root listener and broker of ressh's SSH daemon.
//!
//! It parses the configuration, loads host keys, listens, and forks one
//! monitor per connection (see `ressh-monitor`); it keeps the table of
//! live connections, enforces MaxStartups and PerSourceMaxStartups (with a
//! budget of their own for reconnects, `startups.rs`), and handles signals: SIGHUP
//! re-executes it with the same arguments, SIGTERM stops listening and
//! exits while established sessions carry on.

mod args;
mod broker;
mod notify;
mod startups;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::MsgFlags;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use ressh_ipc::msg::ToBroker;
use ressh_ipc::{Endpoint, Outbox};
use ressh_monitor::config::{Config, MatchContext, Settings};
use ressh_monitor::hostkeys::HostKeys;
use ressh_monitor::log;
use ressh_monitor::monitor::{Context, Privsep};

use args::Args;
use broker::Broker;
use ressh_monitor::config::ConfigError;
use startups::{Class, Startups};

/// Why resshd cannot start or go on: logged, and resshd exits 1.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Sys(#[from] nix::Error),
    #[error("{call}: {source}")]
    Call {
        call: &'static str,
        source: nix::Error,
    },
    #[error(transparent)]
    Key(#[from] ressh_proto::Error),
    /// An operation on a named file or socket (the text names it).
    #[error("{what}: {source}")]
    At {
        what: String,
        source: std::io::Error,
    },
    #[error("Bind to port {} on {} failed: {source}.", addr.port(), addr.ip())]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("Cannot bind any address.")]
    NoListener,
    #[error("a fleet needs FleetKey, FleetNodes and FleetListenAddress together; {0}")]
    FleetIncomplete(&'static str),
    #[error("fleet: {0}")]
    Fleet(String),
    #[error("FleetDrain without a fleet would strand every session's reconnect")]
    DrainAlone,
    #[error("no hostkeys available -- exiting.")]
    NoHostKeys,
    #[error("Privilege separation user {0} does not exist")]
    NoPrivsepUser(String),
    #[error("{} must be a directory owned by root and not group or world-writable", .0.display())]
    PrivsepDirUnsafe(PathBuf),
    #[error("{} must be empty", .0.display())]
    PrivsepDirNotEmpty(PathBuf),
    #[error("BrokerSocket {} belongs to a running resshd; give this instance a BrokerSocket of its own", .0.display())]
    BrokerSocketTaken(PathBuf),
    #[error("Invalid test mode specification {0}")]
    BadConnectionSpec(String),
    #[error("Invalid -C port {0}")]
    BadConnectionSpecPort(String),
    #[error("re-exec failed: {0}")]
    Reexec(std::io::Error),
}

/// `call` names the system call that failed.
fn call(call: &'static str) -> impl FnOnce(nix::Error) -> Error {
    move |source| Error::Call { call, source }
}

/// `what` names the file or socket an io error is about.
fn at(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::At {
        what: what.to_string(),
        source,
    }
}

fn main() -> ExitCode {
    // A fleet link process resshd executes for each accepted link, or a
    // monitor for a reconnect another node may own (its descriptors from 3
    // on are the link's): before anything closes those.
    let argv: Vec<String> = std::env::args().collect();
    if let Some(code) = ressh_monitor::fleet::main(&argv) {
        return ExitCode::from(u8::try_from(code).unwrap_or(255));
    }
    // Descriptors beyond stdin, stdout and stderr that resshd was started
    // with (an admin's shell, a wrapper script; systemd passes none, and
    // resshd takes no sockets from it) are meant for nobody: closed before
    // anything else opens one, so no monitor, worker or user inherits them.
    if let Err(e) = ressh_ipc::harden::close_from(3) {
        eprintln!("resshd: closing inherited descriptors: {e}");
        return ExitCode::from(1);
    }
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("resshd: {e}");
            eprintln!("{}", args::USAGE);
            return ExitCode::from(1);
        }
    };
    if args.version {
        eprintln!("ressh_{} (resshd)", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    log::init(
        if args.debug {
            log::Level::Debug
        } else if args.quiet {
            log::Level::Error
        } else {
            log::Level::Info
        },
        args.log_file.is_none() && notify::stderr_is_journal(),
    );
    if args.inetd && !args.log_stderr && args.log_file.is_none() {
        // sshd -i logs to syslog: stderr is the client's.
        syslog_stderr();
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.to_string().lines().for_each(log::error);
            ExitCode::from(1)
        }
    }
}

fn load_config(args: &Args) -> Result<Config, Error> {
    let config = Config::load(&args.config_file, &args.overrides)?;
    for w in config.warnings() {
        eprintln!("resshd: {w}");
    }
    Ok(config)
}

/// The host keys (HostKey, HostKeyAgent) and their certificates
/// (HostCertificate); what cannot be loaded is logged.
fn load_host_keys(settings: &Settings) -> HostKeys {
    let agent = settings.host_key_agent.as_deref();
    let (keys, errors) = ressh_monitor::hostkeys::load(&settings.host_keys, agent);
    for e in errors {
        log::error(&e);
    }
    let mut keys = HostKeys::new(keys, agent.map(Path::to_path_buf));
    for e in keys.load_certificates(&settings.host_certificates) {
        log::error(&e);
    }
    keys
}

/// The workers live next to resshd (a build tree), else in /usr/libexec/ressh.
fn worker_path(name: &str) -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let p = dir.join(name);
            if p.exists() {
                return p;
            }
        }
    }
    Path::new("/usr/libexec/ressh").join(name)
}

/// Checks (and, unless only testing, creates) the privsep setup.
fn privsep(settings: &Settings, create: bool) -> Result<Privsep, Error> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(Privsep::Unprivileged {
            uid: nix::unistd::getuid().as_raw(),
        });
    }
    let name = &settings.privilege_separation_user;
    let user = nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .ok_or_else(|| Error::NoPrivsepUser(name.clone()))?;
    let dir = settings.privilege_separation_directory.clone();
    if !dir.exists() {
        if !create {
            return Ok(Privsep::Root {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
                chroot: dir,
            });
        }
        std::fs::create_dir_all(&dir).map_err(at(format!("cannot create {}", dir.display())))?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(at(dir.display()))?;
    }
    let md = std::fs::metadata(&dir).map_err(at(dir.display()))?;
    use std::os::unix::fs::MetadataExt;
    if md.uid() != 0 || md.mode() & 0o022 != 0 || !md.is_dir() {
        return Err(Error::PrivsepDirUnsafe(dir));
    }
    if std::fs::read_dir(&dir)?.next().is_some() {
        return Err(Error::PrivsepDirNotEmpty(dir));
    }
    Ok(Privsep::Root {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        chroot: dir,
    })
}

/// Fleet link processes at once (each relays one reconnected session for
/// its life, or waits up to `fleet::ASK_TIME` for a handshake): past this,
/// resshd stops accepting links until one ends.
const MAX_FLEET_LINKS: usize = 4096;

fn bind(settings: &Settings) -> Result<Vec<TcpListener>, Error> {
    let mut out = Vec::new();
    for addr in settings.listen_socket_addrs()? {
        let l = listen(addr).map_err(|source| Error::Bind { addr, source })?;
        log::info(&format!(
            "Server listening on {} port {}.",
            addr.ip(),
            addr.port()
        ));
        out.push(l);
    }
    if out.is_empty() {
        return Err(Error::NoListener);
    }
    Ok(out)
}

/// The listener for links from the other nodes of a fleet, if this node is
/// in one; its key and node list are checked now, so a broken fleet
/// configuration stops resshd at start rather than at the first relayed
/// reconnect.
fn bind_fleet(settings: &Settings) -> Result<Option<TcpListener>, Error> {
    let (key, nodes, addr) = match (
        &settings.fleet_key,
        &settings.fleet_nodes,
        settings.fleet_listen_address,
    ) {
        (None, None, None) => return Ok(None),
        (Some(k), Some(n), Some(a)) => (k, n, a),
        (None, _, _) => return Err(Error::FleetIncomplete("FleetKey is missing")),
        (_, None, _) => return Err(Error::FleetIncomplete("FleetNodes is missing")),
        (_, _, None) => return Err(Error::FleetIncomplete("FleetListenAddress is missing")),
    };
    let me = ressh_monitor::fleet::Identity::load(key).map_err(Error::Fleet)?;
    let listed = ressh_monitor::fleet::read_nodes(nodes).map_err(Error::Fleet)?;
    let Some(this) = listed.iter().find(|n| n.key == me.public()) else {
        return Err(Error::Fleet(format!(
            "{}: this node's key ({}) is not listed",
            nodes.display(),
            key.display()
        )));
    };
    let l = listen(addr).map_err(|source| Error::Bind { addr, source })?;
    log::info(&format!(
        "Fleet node {}: links from {} other nodes on {} port {}.",
        this.name,
        listed.len() - 1,
        addr.ip(),
        addr.port()
    ));
    Ok(Some(l))
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
    let fam = if addr.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket::socket(
        fam,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    // Deeper than sshd's 128: every client of an office reconnects at once
    // after a network blip, and a SYN dropped costs that client a second.
    socket::listen(
        &fd,
        socket::Backlog::new(1024).unwrap_or(socket::Backlog::MAXCONN),
    )?;
    Ok(TcpListener::from(fd))
}

#[allow(unsafe_code)] // fork(2)
fn daemonize() -> Result<(), Error> {
    // SAFETY: single-threaded here; the parent exits at once.
    match unsafe { fork() }? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    nix::unistd::setsid()?;
    std::env::set_current_dir("/")?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    nix::unistd::dup2(null.as_raw_fd(), 0)?;
    nix::unistd::dup2(null.as_raw_fd(), 1)?;
    Ok(())
}

struct Signals {
    pipe: UnixStream,
    ids: Vec<signal_hook::SigId>,
    flags: [Arc<std::sync::atomic::AtomicBool>; 3],
}

const SIGS: [i32; 3] = [libc::SIGCHLD, libc::SIGHUP, libc::SIGTERM];

impl Signals {
    fn install() -> Result<Signals, Error> {
        let (r, w) = UnixStream::pair()?;
        r.set_nonblocking(true)?;
        w.set_nonblocking(true)?;
        let mut ids = Vec::new();
        let flags = SIGS.map(|_| Arc::new(std::sync::atomic::AtomicBool::new(false)));
        for (i, s) in SIGS.iter().enumerate() {
            ids.push(signal_hook::flag::register(*s, flags[i].clone())?);
            ids.push(signal_hook::low_level::pipe::register(*s, w.try_clone()?)?);
        }
        // SIGINT terminates like SIGTERM.
        ids.push(signal_hook::flag::register(libc::SIGINT, flags[2].clone())?);
        ids.push(signal_hook::low_level::pipe::register(libc::SIGINT, w)?);
        Ok(Signals {
            pipe: r,
            ids,
            flags,
        })
    }

    fn take(&self, i: usize) -> bool {
        self.flags[i].swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// In a forked child: back to default dispositions.
    #[allow(unsafe_code)] // signal(2) back to SIG_DFL
    fn uninstall(self) {
        for id in self.ids {
            signal_hook::low_level::unregister(id);
        }
        for s in SIGS.iter().chain([libc::SIGINT].iter()) {
            // SAFETY: restoring the default disposition.
            unsafe { libc::signal(*s, libc::SIG_DFL) };
        }
    }
}

fn run(args: Args) -> Result<(), Error> {
    if let Some(path) = &args.log_file {
        // Every process (monitors and workers) inherits stderr: all log here.
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(at(format!("cannot open log file {}", path.display())))?;
        nix::unistd::dup2(f.as_raw_fd(), 2)?;
    }
    let config = load_config(&args)?;
    let mut settings = config.global();
    apply_command_line(&mut settings, &args);
    // Loaded (and their errors reported) before -t returns, as by sshd.
    let keys = load_host_keys(&settings);
    if keys.is_empty() {
        return Err(Error::NoHostKeys);
    }
    if !args.debug && !args.quiet {
        use ressh_monitor::config::LogLevel as L;
        log::init(
            match settings.log_level {
                L::Quiet | L::Fatal | L::Error => log::Level::Error,
                L::Info | L::Verbose => log::Level::Info,
                _ => log::Level::Debug,
            },
            std::env::var_os("JOURNAL_STREAM").is_some() || (args.inetd && syslog_mode()),
        );
    }
    let privsep = privsep(&settings, !args.test)?;
    if args.dump {
        let mut s = match &args.connection_spec {
            Some(spec) => config.resolve(&parse_connection_spec(spec)?),
            None => settings.clone(),
        };
        apply_command_line(&mut s, &args);
        print!("{}", s.dump());
        return Ok(());
    }
    if args.test {
        return Ok(());
    }
    if args.inetd {
        return inetd(config, settings, keys, privsep);
    }
    let broker_sock = broker_listener(&settings.broker_socket)?;
    let fleet = bind_fleet(&settings)?;
    let listeners = if settings.fleet_drain {
        if fleet.is_none() {
            return Err(Error::DrainAlone);
        }
        log::info("FleetDrain: no new connections; serving this node's sessions until they end.");
        Vec::new()
    } else {
        bind(&settings)?
    };
    if !args.foreground {
        daemonize()?;
    }
    if let Some(pid_file) = &settings.pid_file {
        if let Err(e) = std::fs::write(pid_file, format!("{}\n", std::process::id())) {
            log::error(&format!(
                "Couldn't create pid file \"{}\": {e}",
                pid_file.display()
            ));
        }
    }
    let ctx = context(&settings, config, keys, privsep);
    notify::ready();
    serve(&ctx, &settings, listeners, fleet, broker_sock)
}

/// -p and -h: ports replace the configured ones on every listen address;
/// host keys come before the configured ones.
fn apply_command_line(settings: &mut Settings, args: &Args) {
    if !args.ports.is_empty() {
        // -p replaces the configured ports on every listen address.
        let mut hosts: Vec<String> = Vec::new();
        for la in &settings.listen_addresses {
            if !hosts.contains(&la.host) {
                hosts.push(la.host.clone());
            }
        }
        settings.listen_addresses = hosts
            .iter()
            .flat_map(|h| {
                args.ports
                    .iter()
                    .map(move |p| ressh_monitor::config::ListenAddress {
                        host: h.clone(),
                        port: *p,
                    })
            })
            .collect();
        settings.ports = args.ports.clone();
    }
    let mut key_paths = args.host_keys.clone();
    key_paths.extend(settings.host_keys.iter().cloned());
    settings.host_keys = key_paths;
}

/// sshd's -C connection specification: `user=`, `host=`, `addr=`,
/// `laddr=`, `lport=`, `rdomain=`, comma-separated.
fn parse_connection_spec(spec: &str) -> Result<MatchContext, Error> {
    let mut ctx = MatchContext::default();
    // As sshd's strsep() loop: an empty item ends the list (a trailing
    // comma is fine).
    for item in spec.split(',').take_while(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| Error::BadConnectionSpec(item.into()))?;
        match k {
            "user" => {
                ctx.groups = nix::unistd::User::from_name(v)
                    .ok()
                    .flatten()
                    .map(|u| {
                        ressh_monitor::monitor::user_groups(&u)
                            .into_iter()
                            .filter_map(|g| {
                                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(g))
                                    .ok()
                                    .flatten()
                            })
                            .map(|g| g.name)
                            .collect()
                    })
                    .unwrap_or_default();
                ctx.user = Some(v.to_string());
            }
            "host" => ctx.host = Some(v.to_string()),
            "addr" => {
                ctx.addr = Some(
                    v.parse()
                        .map_err(|_| Error::BadConnectionSpec(item.into()))?,
                )
            }
            "laddr" => {
                ctx.local_addr = Some(
                    v.parse()
                        .map_err(|_| Error::BadConnectionSpec(item.into()))?,
                )
            }
            "lport" => {
                ctx.local_port = Some(
                    v.parse()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| Error::BadConnectionSpecPort(v.into()))?,
                )
            }
            "rdomain" => ctx.rdomain = Some(v.to_string()),
            _ => return Err(Error::BadConnectionSpec(item.into())),
        }
    }
    Ok(ctx)
}

/// Whether stderr was pointed at syslog (inetd mode without -e/-E).
static SYSLOG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn syslog_mode() -> bool {
    SYSLOG.load(std::sync::atomic::Ordering::Relaxed)
}

/// Points stderr at the syslog socket (one datagram per log line, each
/// with its priority), or at /dev/null without one: in inetd mode stderr
/// belongs to whoever started us (ssh's ProxyCommand shows it to the user).
fn syslog_stderr() {
    use std::os::unix::net::UnixDatagram;
    let target: Option<OwnedFd> = UnixDatagram::unbound()
        .and_then(|s| s.connect("/dev/log").map(|()| s))
        .ok()
        .map(OwnedFd::from);
    let fd = match target {
        Some(fd) => {
            SYSLOG.store(true, std::sync::atomic::Ordering::Relaxed);
            log::set_facility(libc::LOG_AUTH);
            fd
        }
        None => match std::fs::OpenOptions::new().write(true).open("/dev/null") {
            Ok(f) => OwnedFd::from(f),
            Err(_) => return,
        },
    };
    let _ = nix::unistd::dup2(fd.as_raw_fd(), 2);
}

/// What every monitor needs: the configuration, the host keys, where the
/// workers and the broker are.
fn context(settings: &Settings, config: Config, keys: HostKeys, privsep: Privsep) -> Context {
    Context {
        broker_socket: settings.broker_socket.clone(),
        config: Arc::new(config),
        host_keys: Arc::new(keys),
        kex_worker: settings
            .resshd_kex_path
            .clone()
            .unwrap_or_else(|| worker_path("resshd-kex")),
        session_worker: settings
            .resshd_session_path
            .clone()
            .unwrap_or_else(|| worker_path("resshd-session")),
        privsep,
    }
}

/// -i: serve the one connection on stdin/stdout with a monitor in this
/// process. A socket on stdin is used as it is; pipes (stdin and stdout
/// apart, as ssh's ProxyCommand gives them) are joined into one socket by a
/// small relay process, since the workers take one socket.
fn inetd(
    config: Config,
    settings: Settings,
    keys: HostKeys,
    privsep: Privsep,
) -> Result<(), Error> {
    let (sock, peer, local) = inetd_socket()?;
    let ctx = context(&settings, config, keys, privsep);
    let code = ressh_monitor::monitor::run(&ctx, sock, peer, local);
    std::process::exit(code);
}

/// The connection's socket and addresses; 0.0.0.0 port 0 where stdin is
/// no TCP socket.
#[allow(unsafe_code)] // adopting stdin (the inetd socket) and fork(2)
fn inetd_socket() -> Result<(OwnedFd, SocketAddr, SocketAddr), Error> {
    use nix::sys::socket::{getpeername, getsockname, SockaddrStorage};
    use nix::sys::stat::{fstat, SFlag};
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    let is_sock = |fd: i32| {
        fstat(fd).is_ok_and(|st| {
            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK
        })
    };
    let same = match (fstat(0), fstat(1)) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    };
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    if is_sock(0) && same {
        let fd = nix::unistd::dup(0).map_err(call("dup"))?;
        // SAFETY: dup just made this descriptor for us.
        let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let addr = |a: Option<SockaddrStorage>| {
            a.and_then(|s| {
                s.as_sockaddr_in()
                    .map(|v4| SocketAddr::from((v4.ip(), v4.port())))
                    .or_else(|| {
                        s.as_sockaddr_in6()
                            .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
                    })
            })
            .unwrap_or(unknown)
        };
        let peer = addr(getpeername::<SockaddrStorage>(0).ok());
        let local = addr(getsockname::<SockaddrStorage>(0).ok());
        for fd in [0, 1] {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
        return Ok((sock, peer, local));
    }
    let (ours, theirs) = UnixStream::pair().map_err(at("socketpair"))?;
    // SAFETY: single-threaded here; the child only relays bytes and exits.
    match unsafe { fork() }.map_err(call("fork"))? {
        ForkResult::Child => {
            drop(ours);
            relay_stdio(theirs);
        }
        ForkResult::Parent { .. } => {
            drop(theirs);
            for fd in [0, 1] {
                let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
            }
            Ok((OwnedFd::from(ours), unknown, unknown))
        }
    }
}

/// The relay of inetd mode over pipes: stdin to the socket, the socket to
/// stdout; exits when the connection's side is done.
fn relay_stdio(sock: UnixStream) -> ! {
    let up = match sock.try_clone() {
        Ok(s) => s,
        Err(_) => std::process::exit(1),
    };
    std::thread::spawn(move || {
        pump(0, up.as_raw_fd());
        let _ = up.shutdown(std::net::Shutdown::Write);
    });
    pump(sock.as_raw_fd(), 1);
    std::process::exit(0);
}

/// Copies from `from` to `to` until EOF or an error, with plain reads and
/// writes (std's copy splices, and a splice from a pipe into a Unix socket
/// can wait for more input before it delivers what it has).
#[allow(unsafe_code)] // read(2)/write(2) on raw descriptors
fn pump(from: i32, to: i32) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: plain read(2)/write(2) on descriptors this process owns.
        let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
        if n == 0 {
            return;
        }
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        let mut off = 0;
        while off < n as usize {
            // SAFETY: buf[off..] holds at least n - off initialised bytes.
            let w = unsafe { libc::write(to, buf[off..].as_ptr().cast(), n as usize - off) };
            if w < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            off += w as usize;
        }
    }
}

/// Binds the broker socket that monitors connect to (root-only). A stale
/// socket of an earlier resshd is replaced: its monitors reconnect here;
/// a live one is refused.
fn broker_listener(path: &Path) -> Result<UnixListener, Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(at(dir.display()))?;
    }
    // A socket a live resshd still answers on is its, not ours to take:
    // its sessions would lose their reconnects. One nobody answers on is
    // left by a resshd that stopped (or by ourselves before SIGHUP).
    if UnixStream::connect(path).is_ok() {
        return Err(Error::BrokerSocketTaken(path.into()));
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(at(path.display())(e)),
    }
    let l = UnixListener::bind(path).map_err(at(format!("broker socket {}", path.display())))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(at(path.display()))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Why a monitor's link ends.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error(transparent)]
    Ipc(#[from] ressh_ipc::Error),
    /// The monitor broke the broker's protocol.
    #[error(transparent)]
    Broker(#[from] broker::Violation),
}

/// A monitor's link: what it sends is read when poll(2) says so; what we
/// send waits in a bounded queue and never blocks the loop.
struct Link {
    ep: Endpoint,
    out: Outbox,
}

/// How long the rest of a frame a monitor began may take.
const LINK_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes queued for one monitor at most (a few reconnect requests).
const LINK_QUEUE: usize = 1024 * 1024;
/// A monitor that takes nothing from its link for this long is dropped.
const LINK_STALL: Duration = Duration::from_secs(10);

/// The first bytes queued on `sock`, looked at and left there.
/// What admission looks at: the client's address and the bytes after
/// the PROXY protocol header for a ProxyProtocolFrom balancer's connection
/// whose header was peeked whole (HAProxy sends it with the first
/// segment); else the connection's own address and bytes. Only for
/// counting (MaxStartups per source, reconnect or startup): the
/// connection's monitor reads the header for everything else.
fn admission_view<'a>(
    settings: &Settings,
    peer: SocketAddr,
    first: &'a [u8],
) -> (IpAddr, &'a [u8]) {
    if !ressh_monitor::proxy::from_balancer(settings.proxy_protocol_from.as_deref(), peer) {
        return (peer.ip(), first);
    }
    match ressh_proto::proxy_header::parse(first) {
        Ok(Some((h, n))) => (
            h.addrs.map_or(peer.ip(), |(client, _)| client.ip()),
            &first[n..],
        ),
        _ => (peer.ip(), &[]),
    }
}

fn peek_first(sock: &std::net::TcpStream) -> Vec<u8> {
    // A reconnect's first flight, behind a PROXY header of up to 512 bytes
    // (a v1 line is at most 107, HAProxy's v2 without TLVs 28 or 52).
    let mut first = [0u8; 128 + 512];
    let got = nix::sys::socket::recv(
        sock.as_raw_fd(),
        &mut first,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    )
    .unwrap_or(0);
    first[..got].to_vec()
}

/// A uniformly random number below 10,000 (MaxStartups' random early drop).
fn random() -> u32 {
    let mut r = [0u8; 4];
    let _ = openssl::rand::rand_bytes(&mut r);
    u32::from_ne_bytes(r) % 10_000
}

#[allow(unsafe_code)] // fork(2) of the listener's child
fn serve(
    ctx: &Context,
    settings: &Settings,
    listeners: Vec<TcpListener>,
    fleet: Option<TcpListener>,
    broker_sock: UnixListener,
) -> Result<(), Error> {
    // Link processes for other fleet nodes' relayed reconnects.
    let mut fleet_children: HashSet<Pid> = HashSet::new();
    // Their stderr: relayed to the log line by line, escaped (written
    // straight there, one taken over would forge any process's lines).
    let mut fleet_logs: HashMap<Pid, (std::fs::File, log::Lines)> = HashMap::new();
    let signals = Signals::install()?;
    // The broker keeps a link to every session's monitor: thousands of
    // descriptors on a busy server. Its own soft limit goes up to the hard
    // one; each monitor puts the inherited one back before anything else.
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let nofile = getrlimit(Resource::RLIMIT_NOFILE)?;
    let _ = setrlimit(Resource::RLIMIT_NOFILE, nofile.1, nofile.1);
    // Connections forked by this resshd and not yet authenticated, for
    // MaxStartups, PerSourceMaxStartups and the reconnects' budget.
    let mut children = Startups::new(startups::Limits::from(settings));
    // Broker links of monitors (ours, or an earlier resshd's), by pid.
    let mut links: HashMap<Pid, Link> = HashMap::new();
    let mut broker = Broker::new(Instant::now());
    let mut throttle = Throttle::default();
    let mut accepts = AcceptPause::default();
    loop {
        let now = Instant::now();
        let mut timeout = [broker.next_deadline(), children.next_deadline()]
            .into_iter()
            .flatten()
            .min()
            .map(|d| d.saturating_duration_since(now));

        if links.values().any(|l| !l.out.is_empty()) {
            timeout =
                Some(timeout.map_or(Duration::from_secs(1), |t| t.min(Duration::from_secs(1))));
        }
        let accepting = accepts.accepting(Instant::now());
        if let Some(until) = accepts.until {
            let left = until.saturating_duration_since(Instant::now());
            timeout = Some(timeout.map_or(left, |t| t.min(left)));
        }
        let mut fds: Vec<PollFd> = Vec::with_capacity(3 + listeners.len() + links.len());
        fds.push(PollFd::new(signals.pipe.as_fd(), PollFlags::POLLIN));
        fds.push(PollFd::new(broker_sock.as_fd(), PollFlags::POLLIN));
        if let Some(f) = &fleet {
            let ev = if fleet_children.len() < MAX_FLEET_LINKS {
                PollFlags::POLLIN
            } else {
                PollFlags::empty()
            };
            fds.push(PollFd::new(f.as_fd(), ev));
        }
        for l in &listeners {
            let ev = if accepting {
                PollFlags::POLLIN
            } else {
                PollFlags::empty()
            };
            fds.push(PollFd::new(l.as_fd(), ev));
        }
        let pids: Vec<Pid> = links.keys().copied().collect();
        for p in &pids {
            let l = &links[p];
            let mut ev = PollFlags::POLLIN;
            if !l.out.is_empty() {
                ev |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(l.ep.as_fd(), ev));
        }
        let log_pids: Vec<Pid> = fleet_logs.keys().copied().collect();
        for p in &log_pids {
            fds.push(PollFd::new(fleet_logs[p].0.as_fd(), PollFlags::POLLIN));
        }
        let t = match timeout {
            None => PollTimeout::NONE,
            Some(t) => PollTimeout::try_from(t.as_millis().min(60_000) as i32 + 1)
                .unwrap_or(PollTimeout::MAX),
        };
        match poll(&mut fds, t) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(call("poll")(e)),
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
        drop(fds);
        let logs_at = ready.len() - log_pids.len();
        for (i, p) in log_pids.iter().enumerate() {
            if ready[logs_at + i] {
                relay_log(p, &mut fleet_logs);
            }
        }
        if ready[0] {
            let mut sink = [0u8; 64];
            while matches!((&signals.pipe).read(&mut sink), Ok(n) if n > 0) {}
        }
        if signals.take(0) {
            reap(&mut children, &mut fleet_children);
        }
        if signals.take(2) {
            log::info("Received signal 15; terminating.");
            notify::stopping();
            if let Some(p) = &settings.pid_file {
                let _ = std::fs::remove_file(p);
            }
            return Ok(());
        }
        if signals.take(1) {
            log::info("Received SIGHUP; restarting.");
            notify::reloading();
            return reexec();
        }
        if ready[1] {
            accept_links(&broker_sock, &mut links, &mut broker);
        }
        let now = Instant::now();
        let mut outs = broker.tick(now);
        children.tick(now);
        let first = 2 + usize::from(fleet.is_some());
        // Accepted first, forked after: a child must not keep any
        // listener (a SIGHUP's re-exec binds them again).
        let mut fleet_links = Vec::new();
        if let Some(f) = fleet.as_ref().filter(|_| ready[2]) {
            while fleet_children.len() + fleet_links.len() < MAX_FLEET_LINKS {
                match f.accept() {
                    Ok(x) => fleet_links.push(x),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        log::error(&format!("fleet accept: {e}"));
                        break;
                    }
                }
            }
            if fleet_children.len() + fleet_links.len() >= MAX_FLEET_LINKS {
                log::error(&format!(
                    "fleet: {MAX_FLEET_LINKS} links open; not accepting more until one ends"
                ));
            }
        }
        let mut fleet_links = fleet_links.into_iter();
        while let Some((sock, from)) = fleet_links.next() {
            let _ = sock.set_nonblocking(false);
            // Its stderr, and its link to the broker: made here, so the
            // broker knows it for a link process from the start.
            let (log_r, log_w, ours, theirs) =
                match log::stderr_pipe().and_then(|(r, w)| Ok((r, w, UnixStream::pair()?))) {
                    Ok((r, w, (ours, theirs))) => (r, w, ours, theirs),
                    Err(e) => {
                        log::error(&format!("fleet link: {e}"));
                        continue;
                    }
                };
            // SAFETY: as for a client's connection below.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    if nix::unistd::dup2(log_w.as_raw_fd(), 2).is_err() {
                        std::process::exit(255);
                    }
                    drop((log_r, log_w, ours));
                    drop(fleet_logs);
                    // The links accepted with this one are other peers'.
                    drop(fleet_links);
                    drop(listeners);
                    drop(fleet);
                    drop(links);
                    drop(broker_sock);
                    drop(children);
                    signals.uninstall();
                    let _ = setrlimit(Resource::RLIMIT_NOFILE, nofile.0, nofile.1);
                    let (Some(key), Some(nodes)) = (&settings.fleet_key, &settings.fleet_nodes)
                    else {
                        std::process::exit(255);
                    };
                    let e = ressh_monitor::fleet::exec_link(
                        sock,
                        OwnedFd::from(theirs),
                        key,
                        nodes,
                        &ctx.privsep,
                    );
                    log::error(&format!(
                        "fleet link from {} port {}: cannot execute resshd: {e}",
                        from.ip(),
                        from.port()
                    ));
                    std::process::exit(255);
                }
                Ok(ForkResult::Parent { child }) => {
                    fleet_children.insert(child);
                    drop((log_w, theirs));
                    open_link(
                        &mut links,
                        &mut broker,
                        child,
                        OwnedFd::from(ours),
                        broker::Peer::FleetLink,
                    );
                    let log_r = std::fs::File::from(log_r);
                    let _ = nix::fcntl::fcntl(
                        log_r.as_raw_fd(),
                        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                    );
                    fleet_logs.insert(child, (log_r, log::Lines::default()));
                }
                Err(e) => log::error(&format!("fork: {e}")),
            }
        }
        let base = first + listeners.len();
        for (i, p) in pids.iter().enumerate() {
            if !ready[base + i] {
                continue;
            }
            let Some(link) = links.get(p) else { continue };
            let result = match link.ep.recv::<ToBroker>() {
                Ok((m, fds)) => broker.handle(*p, m, fds, now).map_err(LinkError::from),
                Err(e) => Err(LinkError::from(e)),
            };
            match result {
                Ok(o) => {
                    if broker.authenticated(*p) {
                        children.done(*p);
                    } else if broker.routing(*p) {
                        children.routed(*p);
                    }
                    outs.extend(o);
                }
                Err(why) => {
                    // Closed: the monitor is exiting, nothing to report.
                    if !matches!(why, LinkError::Ipc(ressh_ipc::Error::Closed)) {
                        log::error(&format!("broker: monitor {p}: {why}; link dropped"));
                    }
                    drop_link(&mut links, &mut broker, &mut children, *p);
                }
            }
        }
        for (to, m, fds) in outs {
            let Some(link) = links.get_mut(&to) else {
                continue;
            };
            if let Err(e) = link.out.push(&m, fds) {
                log::error(&format!(
                    "broker: monitor {to} does not read ({e}); link dropped"
                ));
                drop_link(&mut links, &mut broker, &mut children, to);
            }
        }
        flush_links(&mut links, &mut broker, &mut children);
        for (i, l) in listeners.iter().enumerate() {
            if !ready[first + i] || !accepting {
                continue;
            }
            loop {
                let (sock, peer) = match l.accept() {
                    Ok(x) => x,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        accepts.failed(&e, Instant::now());
                        break;
                    }
                };
                let Ok(local) = sock.local_addr() else {
                    continue;
                };
                // A reconnect sends its first flight without waiting for
                // us: it is usually queued already. Only looked at, never
                // parsed (startups::claims_reconnect).
                let first = peek_first(&sock);
                let (source, first) = admission_view(settings, peer, &first);
                let claim = startups::claims_reconnect(first);
                let class = match children.admit(source, claim, random()) {
                    Ok(c) => c,
                    Err(why) => {
                        throttle.dropped(&why, peer, Some(local));
                        continue;
                    }
                };
                if class != Class::Startup {
                    log::debug(&format!(
                        "connection from [{}]:{} admitted as a reconnect ({} in progress)",
                        peer.ip(),
                        peer.port(),
                        children.reconnects() + 1
                    ));
                }
                let _ = sock.set_nonblocking(false);
                // SAFETY: resshd is single-threaded; the child only sets up
                // its own state and then runs the monitor. Forked at once, so
                // it holds no other client's socket.
                match unsafe { fork() } {
                    Ok(ForkResult::Child) => {
                        drop(listeners);
                        drop(fleet);
                        drop(fleet_logs);
                        drop(links);
                        drop(broker_sock);
                        drop(children);
                        signals.uninstall();
                        let _ = setrlimit(Resource::RLIMIT_NOFILE, nofile.0, nofile.1);
                        let code =
                            ressh_monitor::monitor::run(ctx, OwnedFd::from(sock), peer, local);
                        std::process::exit(code);
                    }
                    Ok(ForkResult::Parent { child }) => {
                        children.add(child, source, class, Instant::now());
                    }
                    Err(e) => log::error(&format!("fork: {e}")),
                }
            }
        }
        throttle.check(children.startups(), settings.max_startups.start);
    }
}

/// sshd's log of dropped connections: "beginning MaxStartups throttling"
/// at the first drop, a line per drop, "exited MaxStartups throttling"
/// once the startups fell below `start`.
#[derive(Default)]
struct Throttle {
    since: Option<Instant>,
    dropped: u64,
}

impl Throttle {
    fn dropped(&mut self, why: &startups::Drop, peer: SocketAddr, local: Option<SocketAddr>) {
        if self.since.is_none() {
            log::error("beginning MaxStartups throttling");
            self.since = Some(Instant::now());
            self.dropped = 0;
        }
        self.dropped += 1;
        let (lip, lport) = local.map_or((String::new(), 0), |a| (a.ip().to_string(), a.port()));
        let (startups, reason) = match why {
            startups::Drop::MaxStartups { startups } => (*startups, "past MaxStartups".to_string()),
            startups::Drop::PerSource {
                startups,
                count,
                block,
                bits,
            } => (
                *startups,
                format!(
                    "past PerSourceMaxStartups ({count} not yet authenticated from {block}/{bits})"
                ),
            ),
        };
        log::info(&format!(
            "drop connection #{startups} from [{}]:{} on [{lip}]:{lport} {reason}",
            peer.ip(),
            peer.port()
        ));
    }

    fn check(&mut self, startups: u32, start: u32) {
        if let Some(since) = self.since {
            if startups + 1 < start.max(1) || (start == 0 && startups == 0) {
                log::info(&format!(
                    "exited MaxStartups throttling after {} s, {} connections dropped",
                    since.elapsed().as_secs(),
                    self.dropped
                ));
                self.since = None;
            }
        }
    }
}

/// After accept(2) fails for want of resources (descriptors, memory),
/// resshd stops accepting for [`ACCEPT_PAUSE`], as sshd does, rather than
/// retrying at once on a connection that stays queued (a busy loop that
/// fills the log); the error is logged at most once a second.
#[derive(Default)]
struct AcceptPause {
    until: Option<Instant>,
    logged: Option<Instant>,
    suppressed: u64,
}

const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

impl AcceptPause {
    fn accepting(&mut self, now: Instant) -> bool {
        if self.until.is_some_and(|t| now >= t) {
            self.until = None;
        }
        self.until.is_none()
    }

    fn failed(&mut self, e: &std::io::Error, now: Instant) {
        let scarce = matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        );
        if scarce {
            self.until = Some(now + ACCEPT_PAUSE);
        }
        if self
            .logged
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        let more = match std::mem::take(&mut self.suppressed) {
            0 => String::new(),
            n => format!(" ({n} more since the last report)"),
        };
        let pause = if scarce {
            "; not accepting for 100 ms"
        } else {
            ""
        };
        log::error(&format!("accept: {e}{pause}{more}"));
        self.logged = Some(now);
    }
}

/// Forgets a monitor's link (it exited, misbehaved or stopped reading).
fn drop_link(
    links: &mut HashMap<Pid, Link>,
    broker: &mut Broker,
    children: &mut Startups,
    pid: Pid,
) {
    let mut gone = vec![pid];
    while let Some(pid) = gone.pop() {
        links.remove(&pid);
        children.done(pid);
        for (to, m, fds) in broker.closed(pid) {
            let Some(l) = links.get_mut(&to) else {
                continue;
            };
            if let Err(e) = l.out.push(&m, fds) {
                log::error(&format!(
                    "broker: monitor {to} does not read ({e}); link dropped"
                ));
                gone.push(to);
            }
        }
    }
}

/// Sends what each link takes now; drops a monitor that has taken nothing
/// for [`LINK_STALL`].
fn flush_links(links: &mut HashMap<Pid, Link>, broker: &mut Broker, children: &mut Startups) {
    let now = Instant::now();
    let mut dead = Vec::new();
    for (pid, l) in links.iter_mut() {
        if l.out.is_empty() {
            continue;
        }
        if let Err(e) = l.out.flush(l.ep.as_fd()) {
            log::error(&format!("broker: to monitor {pid}: {e}; link dropped"));
            dead.push(*pid);
        } else if l.out.stalled_for(now).is_some_and(|t| t >= LINK_STALL) {
            log::error(&format!(
                "broker: monitor {pid} has read nothing for {} s; link dropped",
                LINK_STALL.as_secs()
            ));
            dead.push(*pid);
        }
    }
    for pid in dead {
        drop_link(links, broker, children, pid);
    }
}

/// A broker link on `fd` from `pid`, a `peer` (a monitor, or a fleet
/// link process, which may only relay a reconnect).
fn open_link(
    links: &mut HashMap<Pid, Link>,
    broker: &mut Broker,
    pid: Pid,
    fd: OwnedFd,
    peer: broker::Peer,
) {
    // Reads are done when poll(2) says so; the timeout bounds the wait for
    // the rest of a frame a monitor began.
    let ep = Endpoint::from_fd(fd);
    if ep.set_timeout(Some(LINK_READ_TIMEOUT)).is_err() {
        return;
    }
    links.insert(
        pid,
        Link {
            ep,
            out: Outbox::new(LINK_QUEUE),
        },
    );
    broker.opened(pid, peer);
}

/// Accepts monitors' broker links; only processes of our own uid (root).
/// (A fleet link process gets its link when it is forked: [`open_link`].)
fn accept_links(l: &UnixListener, links: &mut HashMap<Pid, Link>, broker: &mut Broker) {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    loop {
        let (s, _) = match l.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                log::error(&format!("broker accept: {e}"));
                return;
            }
        };
        let Ok(cred) = getsockopt(&s, PeerCredentials) else {
            continue;
        };
        if cred.uid() != nix::unistd::geteuid().as_raw() {
            log::error(&format!("broker: refused a link from uid {}", cred.uid()));
            continue;
        }
        let pid = Pid::from_raw(cred.pid());
        open_link(links, broker, pid, OwnedFd::from(s), broker::Peer::Monitor);
    }
}

/// Relays what the fleet link process `pid` wrote to its stderr (a
/// bounded share per turn of the loop, however fast it writes); at the
/// pipe's end, its last line, and forgets it.
fn relay_log(pid: &Pid, logs: &mut HashMap<Pid, (std::fs::File, log::Lines)>) {
    let put = |l: &str| log::relay_line("resshd", pid.as_raw() as u32, "fleet link", l);
    let Some((r, lines)) = logs.get_mut(pid) else {
        return;
    };
    let mut buf = [0u8; 4096];
    for _ in 0..16 {
        match r.read(&mut buf) {
            Ok(n) if n > 0 => lines.feed(&buf[..n], put),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            _ => {
                if let Some((_, lines)) = logs.remove(pid) {
                    lines.finish(put);
                }
                return;
            }
        }
    }
}

fn reap(children: &mut Startups, fleet_children: &mut HashSet<Pid>) {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, _)) => {
                children.done(pid);
                fleet_children.remove(&pid);
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                children.done(pid);
                // SIGSYS: its seccomp filter caught a forbidden call.
                if fleet_children.remove(&pid) {
                    log::error(&format!("fleet link process {pid} killed by signal {sig}"));
                }
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn reexec() -> Result<(), Error> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .exec();
    Err(Error::Reexec(err))
}
