//! restls: a tunnel like stunnel whose TLS connections survive TCP breaks.
//!
//!     restls server --listen ADDR:PORT --forward ADDR:PORT --cert FILE --key FILE
//!     restls client --listen ADDR:PORT --connect HOST:PORT [--ca FILE] [--servername NAME]
//!
//! Each accepted local TCP connection becomes one resilient TLS connection.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ressh_tls::{Client, ClientConfig, Events, Server, ServerConfig};

const USAGE: &str = "usage:
  restls server --listen ADDR:PORT --forward ADDR:PORT --cert FILE --key FILE
                [--detach-timeout SECS] [--buffer BYTES] [--max-startups N] [--queue BYTES]
                [--max-connections N] [--max-detached N] [--max-per-source N]
                [--ticket-lifetime SECS]
  restls client --listen ADDR:PORT --connect HOST:PORT [--ca FILE] [--servername NAME]
                [--keepalive SECS] [--give-up SECS] [--buffer BYTES] [--tls-max 1.2|1.3]";

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

#[derive(Default)]
struct Args {
    listen: Option<String>,
    forward: Option<String>,
    connect: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    servername: Option<String>,
    detach: Option<u64>,
    keepalive: Option<u64>,
    give_up: Option<u64>,
    buffer: Option<usize>,
    max_startups: Option<usize>,
    queue: Option<usize>,
    max_connections: Option<usize>,
    max_detached: Option<usize>,
    max_per_source: Option<usize>,
    ticket_lifetime: Option<u64>,
    tls_max: Option<openssl::ssl::SslVersion>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--listen" => a.listen = Some(val()?),
            "--forward" => a.forward = Some(val()?),
            "--connect" => a.connect = Some(val()?),
            "--cert" => a.cert = Some(val()?.into()),
            "--key" => a.key = Some(val()?.into()),
            "--ca" => a.ca = Some(val()?.into()),
            "--servername" => a.servername = Some(val()?),
            "--detach-timeout" => a.detach = Some(num(val()?)?),
            "--keepalive" => a.keepalive = Some(num(val()?)?.max(1)),
            "--give-up" => a.give_up = Some(num(val()?)?),
            "--buffer" => a.buffer = Some(num(val()?)?.clamp(64 * 1024, 1 << 30) as usize),
            "--tls-max" => {
                a.tls_max = Some(match val()?.as_str() {
                    "1.2" => openssl::ssl::SslVersion::TLS1_2,
                    "1.3" => openssl::ssl::SslVersion::TLS1_3,
                    v => return Err(format!("--tls-max: 1.2 or 1.3, not {v}")),
                })
            }
            "--max-startups" => a.max_startups = Some(num(val()?)?.clamp(1, 1 << 16) as usize),
            "--queue" => a.queue = Some(num(val()?)?.clamp(64 * 1024, 1 << 30) as usize),
            "--max-connections" => a.max_connections = Some(num(val()?)?.min(1 << 24) as usize),
            "--max-detached" => a.max_detached = Some(num(val()?)?.min(1 << 24) as usize),
            "--max-per-source" => a.max_per_source = Some(num(val()?)?.min(1 << 24) as usize),
            "--ticket-lifetime" => a.ticket_lifetime = Some(num(val()?)?.clamp(2, 7 * 24 * 3600)),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok(a)
}

fn need<T>(v: Option<T>, what: &str) -> Result<T, String> {
    v.ok_or_else(|| format!("{what} is required"))
}

fn bind(listen: &str) -> Result<TcpListener, String> {
    let l = TcpListener::bind(listen).map_err(|e| format!("listen {listen}: {e}"))?;
    if let Ok(a) = l.local_addr() {
        eprintln!("restls: listening on {a}");
    }
    Ok(l)
}

fn serve(
    listen: &str,
    each: impl Fn(TcpStream, Log) + Send + Sync + 'static,
) -> Result<(), String> {
    let l = bind(listen)?;
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

fn run(args: &[String]) -> Result<(), String> {
    let (mode, rest) = args.split_first().ok_or(USAGE)?;
    let a = parse(rest)?;
    let listen = need(a.listen, "--listen")?;
    match mode.as_str() {
        "server" => {
            let forward = need(a.forward, "--forward")?;
            let mut cfg = ServerConfig::default();
            if let Some(d) = a.detach {
                cfg.detach_timeout = Duration::from_secs(d);
            }
            if let Some(b) = a.buffer {
                cfg.buffer = b;
            }
            if let Some(m) = a.max_startups {
                cfg.max_startups = m;
            }
            cfg.queue = a.queue.unwrap_or(cfg.queue);
            cfg.max_connections = a.max_connections.unwrap_or(cfg.max_connections);
            cfg.max_detached = a.max_detached.unwrap_or(cfg.max_detached);
            cfg.max_per_source = a.max_per_source.unwrap_or(cfg.max_per_source);
            if let Some(t) = a.ticket_lifetime {
                cfg.ticket_lifetime = Duration::from_secs(t);
            }
            let server = Server::new(&need(a.cert, "--cert")?, &need(a.key, "--key")?, cfg)
                .map_err(|e| format!("certificate or key: {e}"))?;
            let to: Vec<SocketAddr> = forward
                .to_socket_addrs()
                .map_err(|e| format!("--forward {forward}: {e}"))?
                .collect();
            let Some(&to) = to.first() else {
                return Err(format!("--forward {forward}: no address"));
            };
            let l = bind(&listen)?;
            // Connects without blocking the event loop (to the first address).
            let open = || mio::net::TcpStream::connect(to);
            server
                .run(l, open, |id| Arc::new(Log(id)))
                .map_err(|e| format!("event loop: {e}"))
        }
        "client" => {
            let connect = need(a.connect, "--connect")?;
            let host = connect
                .rsplit_once(':')
                .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
                .ok_or("--connect needs HOST:PORT")?;
            let mut cfg = ClientConfig::new(&connect, &a.servername.unwrap_or(host));
            cfg.ca = a.ca;
            if let Some(k) = a.keepalive {
                cfg.keepalive = Duration::from_secs(k);
            }
            if let Some(g) = a.give_up {
                cfg.give_up = Duration::from_secs(g);
            }
            cfg.max_version = a.tls_max;
            if let Some(b) = a.buffer {
                cfg.buffer = b;
            }
            let client = Client::new(cfg).map_err(|e| format!("TLS setup: {e}"))?;
            serve(&listen, move |mut s, log| {
                let id = log.0;
                let r = client
                    .connect()
                    .and_then(|c| client.relay(c, &mut s, Arc::new(log)));
                if let Err(e) = r {
                    eprintln!("restls: connection {id}: {e}");
                }
            })
        }
        _ => Err(USAGE.to_string()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("restls: {e}");
            ExitCode::from(2)
        }
    }
}
