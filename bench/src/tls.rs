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
use std::thread;
use std::time::{Duration, Instant};

use crate::daemon::free_port;
use crate::lab::destroy_tcp_to;
use crate::proc;
use crate::relay::CountingRelay;

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
/// client end reaches the server end through a [`CountingRelay`].
pub fn start(
    kind: Tunnel,
    restls: &Path,
    dir: &Path,
    cert: &Path,
    key: &Path,
    backend: u16,
    counted: bool,
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
                .arg(key);
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
