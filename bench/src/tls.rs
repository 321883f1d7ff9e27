//! restls beside stunnel4 (Debian's stunnel): the same stream through each
//! tunnel on 127.0.0.1, and restls's reconnect after its TLS connection is
//! killed.
//!
//! Each tunnel is two processes, as deployed: a server end in front of a
//! backend and a client end that applications connect to. The backend here
//! is one thread of this process that reads a one-byte mode first:
//! `D` + length (u64, big-endian): it sends that many bytes; `U` + length:
//! it reads that many and answers `k`; `E`: it echoes.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use openssl::ssl::{ExtensionContext, SslConnector, SslMethod, SslMode, SslStream};

use crate::lab::destroy_tcp_to;
use crate::proc;
use crate::relay::CountingRelay;
use ressh_testkit::free_port;

/// A self-signed certificate for `localhost` (P-256) and its key.
pub fn make_cert(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let (cert, key) = (dir.join("tls-cert.pem"), dir.join("tls-key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .map_err(|e| format!("openssl req: {e} (apt-get install openssl)"))?;
    if !out.status.success() {
        return Err(format!(
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((cert, key))
}

/// The backend (see the module's text), listening on 127.0.0.1.
pub struct Backend {
    pub port: u16,
}

impl Backend {
    pub fn start() -> Result<Backend, String> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = l.local_addr().map_err(|e| e.to_string())?.port();
        thread::spawn(move || {
            for c in l.incoming().flatten() {
                thread::spawn(move || {
                    let _ = serve(c);
                });
            }
        });
        Ok(Backend { port })
    }
}

fn serve(mut c: TcpStream) -> io::Result<()> {
    let _ = c.set_nodelay(true);
    let mut mode = [0u8; 1];
    c.read_exact(&mut mode)?;
    let mut buf = vec![0x5au8; 256 * 1024];
    match mode[0] {
        b'D' | b'U' => {
            let mut len = [0u8; 8];
            c.read_exact(&mut len)?;
            let mut left = u64::from_be_bytes(len);
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                if mode[0] == b'D' {
                    c.write_all(&buf[..n])?;
                } else {
                    let got = c.read(&mut buf[..n])?;
                    if got == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    left -= got as u64;
                    continue;
                }
                left -= n as u64;
            }
            if mode[0] == b'U' {
                c.write_all(b"k")?;
            }
            // Wait for the client to close (the tunnel may still be busy).
            let _ = c.read(&mut buf[..1]);
        }
        b'E' => loop {
            let n = c.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            c.write_all(&buf[..n])?;
        },
        _ => {}
    }
    Ok(())
}

/// Which tunnel.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tunnel {
    Restls,
    Stunnel,
}

/// A running tunnel: the client end listens on `port`, the server end on
/// `server_port`; both processes are killed on drop.
pub struct Running {
    children: Vec<Child>,
    pub port: u16,
    pub server_port: u16,
    /// Between the two ends, when started with `counted`: the bytes on the
    /// wire each way.
    pub relay: Option<CountingRelay>,
}

impl Running {
    /// CPU seconds used so far by the tunnel's processes.
    pub fn cpu(&self) -> f64 {
        self.children.iter().map(|c| proc::cpu_of(c.id())).sum()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `kind` in front of `backend`, with logs in `dir`; `counted`: the
/// client end reaches the server end through a [`CountingRelay`];
/// `restls_server`: more options of restls's server end.
#[allow(clippy::too_many_arguments)]
pub fn start(
    kind: Tunnel,
    restls: &Path,
    dir: &Path,
    cert: &Path,
    key: &Path,
    backend: u16,
    counted: bool,
    restls_server: &[&str],
) -> Result<Running, String> {
    let (sport, cport) = (free_port(), free_port());
    let relay = if counted {
        Some(
            CountingRelay::start(SocketAddrV4::new(Ipv4Addr::LOCALHOST, sport).into())
                .map_err(|e| format!("relay: {e}"))?,
        )
    } else {
        None
    };
    let to_server = relay.as_ref().map_or(sport, |r| r.port);
    let log = |name: &str| -> Result<Stdio, String> {
        fs::File::create(dir.join(name))
            .map(Stdio::from)
            .map_err(|e| e.to_string())
    };
    let mut children = Vec::new();
    match kind {
        Tunnel::Restls => {
            let mut s = Command::new(restls);
            s.arg("server")
                .args(["--listen", &format!("127.0.0.1:{sport}")])
                .args(["--forward", &format!("127.0.0.1:{backend}")])
                .arg("--cert")
                .arg(cert)
                .arg("--key")
                .arg(key)
                .args(restls_server);
            let mut c = Command::new(restls);
            c.arg("client")
                .args(["--listen", &format!("127.0.0.1:{cport}")])
                .args(["--connect", &format!("127.0.0.1:{to_server}")])
                .arg("--ca")
                .arg(cert)
                .args(["--servername", "localhost"]);
            for (mut cmd, name) in [(s, "restls-server.log"), (c, "restls-client.log")] {
                let child = cmd
                    .stdin(Stdio::null())
                    .stdout(log(name)?)
                    .stderr(log(name)?)
                    .spawn()
                    .map_err(|e| format!("{}: {e}", restls.display()))?;
                children.push(child);
            }
        }
        Tunnel::Stunnel => {
            let bin = ["/usr/bin/stunnel4", "/usr/bin/stunnel"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .ok_or("stunnel is missing: apt-get install stunnel4")?;
            let server = format!(
                "foreground = yes\npid =\nsyslog = no\n[s]\naccept = 127.0.0.1:{sport}\n\
                 connect = 127.0.0.1:{backend}\ncert = {}\nkey = {}\n",
                cert.display(),
                key.display()
            );
            let client = format!(
                "foreground = yes\npid =\nsyslog = no\n[c]\nclient = yes\n\
                 accept = 127.0.0.1:{cport}\nconnect = 127.0.0.1:{to_server}\nCAfile = {}\n\
                 verifyChain = yes\ncheckHost = localhost\nsni = localhost\n",
                cert.display()
            );
            for (conf, name) in [(server, "stunnel-server"), (client, "stunnel-client")] {
                let path = dir.join(format!("{name}.conf"));
                fs::write(&path, conf).map_err(|e| e.to_string())?;
                let child = Command::new(bin)
                    .arg(&path)
                    .stdin(Stdio::null())
                    .stdout(log(&format!("{name}.log"))?)
                    .stderr(log(&format!("{name}.log"))?)
                    .spawn()
                    .map_err(|e| format!("{bin}: {e}"))?;
                children.push(child);
            }
        }
    }
    let r = Running {
        children,
        port: cport,
        server_port: sport,
        relay,
    };
    for p in [sport, cport] {
        if !proc::wait_until(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", p)).is_ok()
        }) {
            return Err(format!("{kind:?} does not listen on 127.0.0.1:{p}"));
        }
    }
    Ok(r)
}

/// One transfer of `bytes` through the tunnel: `down` from the backend, or
/// up to it. Returns the seconds from the first byte moving to the last
/// one arriving (up: to the backend's answer), and the tunnel's CPU
/// seconds over the transfer.
pub fn transfer(t: &Running, down: bool, bytes: u64) -> Result<(f64, f64), String> {
    let mut c = TcpStream::connect(("127.0.0.1", t.port)).map_err(|e| e.to_string())?;
    let _ = c.set_nodelay(true);
    c.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let cpu0 = t.cpu();
    let mut head = vec![if down { b'D' } else { b'U' }];
    head.extend_from_slice(&bytes.to_be_bytes());
    c.write_all(&head).map_err(|e| e.to_string())?;
    let mut buf = vec![0x5au8; 256 * 1024];
    let start;
    if down {
        let n = c.read(&mut buf).map_err(|e| e.to_string())?;
        start = Instant::now();
        let mut got = n as u64;
        while got < bytes {
            let n = c.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!("the stream ended after {got} of {bytes} bytes"));
            }
            got += n as u64;
        }
    } else {
        start = Instant::now();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            c.write_all(&buf[..n]).map_err(|e| e.to_string())?;
            left -= n as u64;
        }
        let mut k = [0u8; 1];
        c.read_exact(&mut k)
            .map_err(|e| format!("no answer after the upload: {e}"))?;
    }
    let secs = start.elapsed().as_secs_f64();
    // Let the tunnel's processes finish their accounting of this stream.
    thread::sleep(Duration::from_millis(50));
    Ok((secs, t.cpu() - cpu0))
}

/// Bytes on the wire per byte of data for an upload of `bytes` through a
/// tunnel started with `counted`: (client → server, server → client per
/// data byte), handshake, records, framing and acknowledgements included.
pub fn wire_overhead(t: &Running, bytes: u64) -> Result<(f64, f64), String> {
    let relay = t.relay.as_ref().ok_or("the tunnel has no counting relay")?;
    relay.reset();
    transfer(t, false, bytes)?;
    let (up, down) = relay.counts();
    Ok((up as f64 / bytes as f64, down as f64 / bytes as f64))
}

/// restls only: an echoed stream whose TLS connection (client end to server
/// end) is killed `trials` times with SOCK_DESTROY; each time, the time from
/// the kill to the first byte echoed back that was sent after it.
pub fn reconnects(t: &Running, trials: usize) -> Result<Vec<f64>, String> {
    let mut c = TcpStream::connect(("127.0.0.1", t.port)).map_err(|e| e.to_string())?;
    let _ = c.set_nodelay(true);
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    c.write_all(b"E").map_err(|e| e.to_string())?;
    let round = |c: &mut TcpStream, tag: u8| -> Result<(), String> {
        c.write_all(&[tag]).map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        c.read_exact(&mut b)
            .map_err(|e| format!("the echo stopped: {e}"))?;
        if b[0] != tag {
            return Err(format!("echo out of order: sent {tag}, got {}", b[0]));
        }
        Ok(())
    };
    round(&mut c, 0)?;
    let dst = SocketAddrV4::new(Ipv4Addr::LOCALHOST, t.server_port);
    let mut out = Vec::new();
    for i in 0..trials {
        let (killed, _) =
            destroy_tcp_to(dst).map_err(|e| format!("trial {i}: SOCK_DESTROY: {e}"))?;
        round(&mut c, (i % 250) as u8 + 1)?;
        out.push(killed.elapsed().as_secs_f64() * 1000.0);
        thread::sleep(Duration::from_millis(100));
    }
    Ok(out)
}

/// What stunnel does when its TLS connection is killed: the application's
/// connection ends (Ok(true)) or somehow carries on (Ok(false)).
pub fn stunnel_loses_the_stream(t: &Running) -> Result<bool, String> {
    let mut c = TcpStream::connect(("127.0.0.1", t.port)).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    c.write_all(b"Ex").map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    c.read_exact(&mut b).map_err(|e| e.to_string())?;
    destroy_tcp_to(SocketAddrV4::new(Ipv4Addr::LOCALHOST, t.server_port))
        .map_err(|e| format!("SOCK_DESTROY: {e}"))?;
    let _ = c.write_all(b"y");
    Ok(!matches!(c.read(&mut b), Ok(1)))
}

/// A backend for idle connections: accepts them and keeps them open.
pub struct Holder {
    pub port: u16,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Holder {
    pub fn start() -> Result<Holder, String> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = l.local_addr().map_err(|e| e.to_string())?.port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let h = held.clone();
        thread::spawn(move || {
            for c in l.incoming().flatten() {
                h.lock().unwrap_or_else(|p| p.into_inner()).push(c);
            }
        });
        Ok(Holder { port, held })
    }

    pub fn count(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Closes every connection held.
    pub fn clear(&self) {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// restls's extension (docs/restls.md §1, §2): type 0xFF5A, body 0x00 for
/// a new connection, answered 0x00 by a server that makes it resilient.
const RESTLS_EXT: u16 = 0xFF5A;

/// What [`idle_connections`] measured.
pub struct Idle {
    /// Handshakes completed per second, `CLIENTS` clients at once.
    pub handshakes_per_s: f64,
    /// Growth of the server end's resident memory per open connection.
    pub bytes_per_conn: f64,
}

/// Client threads opening connections at once.
pub const CLIENTS: usize = 4;

/// Opens `n` TLS connections straight to `t`'s server end, which forwards
/// each to `holder`, and keeps them all open and idle: with restls, each
/// offers the extension and must be answered as a new resilient
/// connection; with stunnel, plain TLS. TLS 1.3, OpenSSL's defaults, the
/// certificate verified.
pub fn idle_connections(
    t: &Running,
    kind: Tunnel,
    cert: &Path,
    holder: &Holder,
    n: usize,
) -> Result<Idle, String> {
    let pid = t.children.first().ok_or("no server end")?.id();
    let before = proc::mem(pid).ok_or("server end gone")?.rss;
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    b.set_ca_file(cert).map_err(|e| e.to_string())?;
    // Many idle clients in this process: no record buffers while idle.
    b.set_mode(SslMode::RELEASE_BUFFERS);
    let resilient = Arc::new(AtomicUsize::new(0));
    if kind == Tunnel::Restls {
        let r = resilient.clone();
        b.add_custom_ext(
            RESTLS_EXT,
            ExtensionContext::TLS_ONLY
                | ExtensionContext::CLIENT_HELLO
                | ExtensionContext::TLS1_3_ENCRYPTED_EXTENSIONS,
            |_, ctx, _| {
                Ok(ctx
                    .contains(ExtensionContext::CLIENT_HELLO)
                    .then(|| vec![0]))
            },
            move |_, _, data: &[u8], _| {
                if data == [0] {
                    r.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            },
        )
        .map_err(|e| e.to_string())?;
    }
    let ctx = Arc::new(b.build());
    let port = t.server_port;
    let start = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let ctx = ctx.clone();
            thread::spawn(move || -> Result<Vec<SslStream<TcpStream>>, String> {
                let mine = n / CLIENTS + usize::from(w < n % CLIENTS);
                let mut open = Vec::with_capacity(mine);
                for _ in 0..mine {
                    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
                    let s = ctx
                        .connect("localhost", tcp)
                        .map_err(|e| format!("handshake: {e}"))?;
                    open.push(s);
                }
                Ok(open)
            })
        })
        .collect();
    let mut open = Vec::with_capacity(n);
    for w in workers {
        open.extend(w.join().map_err(|_| "client thread panicked")??);
    }
    let secs = start.elapsed().as_secs_f64();
    if !proc::wait_until(Duration::from_secs(60), || holder.count() >= n) {
        return Err(format!(
            "{kind:?}: {} of {n} connections reached the backend",
            holder.count()
        ));
    }
    if kind == Tunnel::Restls && resilient.load(Ordering::Relaxed) != n {
        return Err(format!(
            "restls answered {} of {n} connections as resilient",
            resilient.load(Ordering::Relaxed)
        ));
    }
    thread::sleep(Duration::from_millis(500));
    let after = proc::mem(pid).ok_or("server end gone")?.rss;
    drop(open);
    holder.clear();
    Ok(Idle {
        handshakes_per_s: n as f64 / secs,
        bytes_per_conn: after.saturating_sub(before) as f64 * 1024.0 / n as f64,
    })
}
