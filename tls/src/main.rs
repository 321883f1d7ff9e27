//! restls: a tunnel like stunnel whose TLS connections survive TCP breaks.
//!
//!     restls server --listen ADDR:PORT --forward HOST:PORT --cert FILE --key FILE
//!     restls client --listen ADDR:PORT --connect HOST:PORT [--ca FILE] [--servername NAME]
//!     restls --config /etc/restls/NAME.conf
//!
//! Each accepted local TCP connection becomes one resilient TLS connection.
//! Under systemd (restls@.service) it reports READY=1 once it listens, and
//! SIGHUP makes a server load its certificate and key again.

mod args;

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};
use ressh_resilience::sd_notify;
use ressh_tls::{Client, ClientConfig, Events, Server, ServerConfig};
use signal_hook::consts::{SIGHUP, SIGTERM};

use args::{need, Cli, Mode, Settings};

/// Logs a connection's events to stderr.
struct Log(u64);

impl Events for Log {
    fn established(&self, version: &str, resilient: bool) {
        let how = if resilient { "resilient" } else { "plain TLS" };
        eprintln!("restls: connection {}: {version}, {how}", self.0);
    }
    fn lost(&self, why: &str) {
        eprintln!("restls: connection {}: lost: {why}", self.0);
    }
    fn reconnected(&self, peer: SocketAddr) {
        eprintln!("restls: connection {}: reconnected ({peer})", self.0);
    }
    fn peer_address_changed(&self, old: SocketAddr, new: SocketAddr) {
        eprintln!(
            "restls: connection {}: peer address changed from {old} to {new}",
            self.0
        );
    }
    fn closed(&self, error: Option<&str>) {
        if let Some(e) = error {
            eprintln!("restls: connection {}: {e}", self.0);
        }
    }
}

fn notify(state: &str) {
    if let Err(e) = sd_notify::notify(state) {
        eprintln!("restls: sd_notify: {e}");
    }
}

/// SIGHUP and SIGTERM, caught as flags and a byte on a socket that the
/// accept loop polls: the handlers do nothing else.
struct Signals {
    wake: UnixStream,
    hup: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> io::Result<Signals> {
        let (rx, tx) = UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        let (hup, term) = (Arc::default(), Arc::default());
        for (sig, flag) in [(SIGHUP, &hup), (SIGTERM, &term)] {
            // The flag first: the byte wakes a loop that reads it.
            signal_hook::flag::register(sig, Arc::clone(flag))?;
            signal_hook::low_level::pipe::register(sig, tx.try_clone()?)?;
        }
        Ok(Signals {
            wake: rx,
            hup,
            term,
        })
    }

    /// Acts on the signals that came, once the socket is readable: SIGHUP
    /// runs `reload` between RELOADING=1 and READY=1; SIGTERM sends
    /// STOPPING=1 and returns false: stop (every connection ends, exit 0).
    fn handle(&self, reload: impl FnOnce()) -> bool {
        let mut buf = [0u8; 64];
        loop {
            match (&self.wake).read(&mut buf) {
                Ok(n) if n > 0 => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => break,
            }
        }
        if self.term.swap(false, Ordering::SeqCst) {
            eprintln!("restls: SIGTERM: stopping");
            notify("STOPPING=1\nSTATUS=Stopping\n");
            return false;
        }
        if self.hup.swap(false, Ordering::SeqCst) {
            if let Err(e) = sd_notify::reloading() {
                eprintln!("restls: sd_notify: {e}");
            }
            reload();
            notify("READY=1\nSTATUS=Listening\n");
        }
        true
    }
}

/// Listens on `listen`, and tells systemd READY=1.
fn bind(listen: SocketAddr) -> Result<TcpListener, String> {
    let l = TcpListener::bind(listen).map_err(|e| format!("listen {listen}: {e}"))?;
    if let Ok(a) = l.local_addr() {
        eprintln!("restls: listening on {a}");
    }
    notify("READY=1\nSTATUS=Listening\n");
    Ok(l)
}

/// After an accept error (out of descriptors), the client tries again
/// after this.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The client's accept loop, until SIGTERM: `each` runs on a thread of its
/// own for every connection.
fn serve_client(
    l: TcpListener,
    signals: &Signals,
    each: impl Fn(TcpStream, Log) + Send + Sync + 'static,
) -> io::Result<()> {
    const LISTENER: Token = Token(0);
    const SIGNALS: Token = Token(1);
    l.set_nonblocking(true)?;
    let mut poll = Poll::new()?;
    let r = poll.registry();
    r.register(&mut SourceFd(&l.as_raw_fd()), LISTENER, Interest::READABLE)?;
    r.register(
        &mut SourceFd(&signals.wake.as_raw_fd()),
        SIGNALS,
        Interest::READABLE,
    )?;
    let each = Arc::new(each);
    let mut evs = mio::Events::with_capacity(8);
    let mut next_id = 0u64;
    let mut retry = None;
    loop {
        if let Err(e) = poll.poll(&mut evs, retry) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let signalled = evs.iter().any(|e| e.token() == SIGNALS);
        if signalled
            && !signals.handle(|| eprintln!("restls: reload: a client has nothing to reload"))
        {
            return Ok(());
        }
        retry = None;
        loop {
            match l.accept() {
                Ok((s, _)) => {
                    let log = Log(next_id);
                    next_id += 1;
                    match s.set_nonblocking(false) {
                        Ok(()) => {
                            let each = each.clone();
                            std::thread::spawn(move || each(s, log));
                        }
                        Err(e) => log.closed(Some(&e.to_string())),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("restls: accept: {e}");
                    retry = Some(ACCEPT_RETRY);
                    break;
                }
            }
        }
    }
}

fn server_config(s: &Settings) -> ServerConfig {
    let mut cfg = ServerConfig::default();
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = s.$f { cfg.$f = v; } )* };
    }
    set!(
        detach_timeout,
        buffer,
        max_startups,
        queue,
        max_connections,
        max_detached,
        max_per_source,
        ticket_lifetime
    );
    cfg
}

fn client_config(s: &Settings) -> Result<ClientConfig, String> {
    let connect = need(&s.connect, "connect")?;
    let host = connect
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
        .unwrap_or_default();
    let mut cfg = ClientConfig::new(&connect, s.servername.as_deref().unwrap_or(&host));
    cfg.ca = s.ca.clone();
    if let Some(k) = s.keepalive {
        cfg.keepalive = k;
    }
    if let Some(g) = s.give_up {
        cfg.give_up = g;
    }
    cfg.max_version = s.tls_max;
    if let Some(b) = s.buffer {
        cfg.buffer = b;
    }
    if let Some(q) = s.queue {
        cfg.queue = q;
    }
    Ok(cfg)
}

/// A usage or configuration error (exit 2), or a failure (exit 1).
enum Error {
    Usage(String),
    Failed(String),
}

fn run(args: &[String]) -> Result<(), Error> {
    let (mode, s, check) = match args::parse(args).map_err(Error::Usage)? {
        Cli::Help => {
            print!("{}", args::help());
            return Ok(());
        }
        Cli::Version => {
            println!("restls {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Cli::Run {
            mode,
            settings,
            check,
        } => (mode, settings, check),
    };
    let listen = need(&s.listen, "listen").map_err(Error::Usage)?;
    let failed = |what: &str| {
        let what = what.to_string();
        move |e: io::Error| Error::Failed(format!("{what}: {e}"))
    };
    match mode {
        Mode::Server => {
            let forward = need(&s.forward, "forward").map_err(Error::Usage)?;
            let cert = need(&s.cert, "cert").map_err(Error::Usage)?;
            let key = need(&s.key, "key").map_err(Error::Usage)?;
            let server = Server::new(&cert, &key, server_config(&s))
                .map_err(|e| Error::Failed(format!("certificate or key: {e}")))?;
            if check {
                return Ok(());
            }
            // Resolved once; connects without blocking the event loop.
            let to = forward
                .to_socket_addrs()
                .map_err(failed(&format!("--forward {forward}")))?
                .next()
                .ok_or_else(|| Error::Failed(format!("--forward {forward}: no address")))?;
            let signals = Signals::install().map_err(failed("signal handlers"))?;
            let l = bind(listen).map_err(Error::Failed)?;
            let reload = || match server.reload(&cert, &key) {
                Ok(()) => eprintln!("restls: reloaded {} and {}", cert.display(), key.display()),
                Err(e) => eprintln!("restls: reload failed, serving as before: {e}"),
            };
            server
                .run(
                    l,
                    signals.wake.as_fd(),
                    || signals.handle(reload),
                    || mio::net::TcpStream::connect(to),
                    |id| Arc::new(Log(id)),
                )
                .map_err(failed("event loop"))
        }
        Mode::Client => {
            let cfg = client_config(&s).map_err(Error::Usage)?;
            let client = Client::new(cfg).map_err(|e| Error::Failed(format!("TLS setup: {e}")))?;
            if check {
                return Ok(());
            }
            let signals = Signals::install().map_err(failed("signal handlers"))?;
            let l = bind(listen).map_err(Error::Failed)?;
            serve_client(l, &signals, move |mut s, log| {
                let id = log.0;
                let r = client
                    .connect()
                    .and_then(|c| client.relay(c, &mut s, Arc::new(log)));
                if let Err(e) = r {
                    eprintln!("restls: connection {id}: {e}");
                }
            })
            .map_err(failed("accept loop"))
        }
    }
}

fn main() -> ExitCode {
    let args: Result<Vec<String>, _> = std::env::args_os()
        .skip(1)
        .map(|a| a.into_string().map_err(|a| format!("not UTF-8: {a:?}")))
        .collect();
    match args.map_err(Error::Usage).and_then(|a| run(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Usage(e)) => {
            eprintln!("restls: {e}\n{}\nTry 'restls --help'.", args::USAGE);
            ExitCode::from(2)
        }
        Err(Error::Failed(e)) => {
            eprintln!("restls: {e}");
            ExitCode::from(1)
        }
    }
}
