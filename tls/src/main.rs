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

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ressh_resilience::sd_notify;
use ressh_tls::{Client, ClientConfig, Events, Server, ServerConfig};

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
}

fn notify(state: &str) {
    if let Err(e) = sd_notify::notify(state) {
        eprintln!("restls: sd_notify: {e}");
    }
}

/// Signals, from now on: on SIGHUP `reload` runs, between RELOADING=1 and
/// READY=1; SIGTERM sends STOPPING=1 and exits (status 0), ending every
/// connection, as the default action would.
fn on_signals(reload: impl Fn() + Send + 'static) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGTERM};
    let mut sigs = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM])
        .map_err(|e| format!("signal handlers: {e}"))?;
    std::thread::spawn(move || {
        for sig in sigs.forever() {
            if sig == SIGTERM {
                eprintln!("restls: SIGTERM: stopping");
                notify("STOPPING=1\nSTATUS=Stopping\n");
                std::process::exit(0);
            }
            if let Err(e) = sd_notify::reloading() {
                eprintln!("restls: sd_notify: {e}");
            }
            reload();
            notify("READY=1\nSTATUS=Listening\n");
        }
    });
    Ok(())
}

/// Accepts on `listen`, calling `each` on a thread of its own for every
/// connection; READY=1 once listening.
fn serve(
    listen: SocketAddr,
    each: impl Fn(TcpStream, Log) + Send + Sync + 'static,
) -> Result<(), String> {
    let l = TcpListener::bind(listen).map_err(|e| format!("listen {listen}: {e}"))?;
    if let Ok(a) = l.local_addr() {
        eprintln!("restls: listening on {a}");
    }
    notify("READY=1\nSTATUS=Listening\n");
    let each = Arc::new(each);
    let n = AtomicU64::new(0);
    for s in l.incoming() {
        match s {
            Ok(s) => {
                let id = n.fetch_add(1, Ordering::Relaxed);
                let each = each.clone();
                std::thread::spawn(move || each(s, Log(id)));
            }
            Err(e) => eprintln!("restls: accept: {e}"),
        }
    }
    Ok(())
}

fn server_config(s: &Settings) -> ServerConfig {
    let mut cfg = ServerConfig::default();
    if let Some(d) = s.detach_timeout {
        cfg.detach_timeout = d;
    }
    if let Some(b) = s.buffer {
        cfg.buffer = b;
    }
    if let Some(m) = s.max_startups {
        cfg.max_startups = m;
    }
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
            let server = Arc::new(server);
            let s2 = server.clone();
            on_signals(move || match s2.reload(&cert, &key) {
                Ok(()) => eprintln!("restls: reloaded {} and {}", cert.display(), key.display()),
                Err(e) => eprintln!("restls: reload failed, serving as before: {e}"),
            })
            .map_err(Error::Failed)?;
            serve(listen, move |s, log| {
                let id = log.0;
                let r = server.serve(s, || TcpStream::connect(&forward), &log);
                if let Err(e) = r {
                    eprintln!("restls: connection {id}: {e}");
                }
            })
            .map_err(Error::Failed)
        }
        Mode::Client => {
            let cfg = client_config(&s).map_err(Error::Usage)?;
            let client = Client::new(cfg).map_err(|e| Error::Failed(format!("TLS setup: {e}")))?;
            if check {
                return Ok(());
            }
            on_signals(|| eprintln!("restls: reload: a client has nothing to reload"))
                .map_err(Error::Failed)?;
            serve(listen, move |mut s, log| {
                let id = log.0;
                let r = client.connect().and_then(|c| client.relay(c, &mut s, &log));
                if let Err(e) = r {
                    eprintln!("restls: connection {id}: {e}");
                }
            })
            .map_err(Error::Failed)
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
