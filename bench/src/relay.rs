//! Small TCP relays: one that counts the bytes each way (to see what is on
//! the wire without decrypting it), and a stdio proxy for `ProxyCommand`
//! that the demo kills to cut a connection.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// Copies `from` to `to` until EOF or an error, adding to `count`; then
/// half-closes `to`.
fn pump(mut from: TcpStream, mut to: TcpStream, count: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// A relay on 127.0.0.1 that forwards every connection to `target` and
/// counts the bytes: `up` client → server, `down` server → client.
pub struct CountingRelay {
    pub port: u16,
    pub up: Arc<AtomicU64>,
    pub down: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl CountingRelay {
    pub fn start(target: SocketAddr) -> io::Result<CountingRelay> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let up = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (u, d, s, c) = (up.clone(), down.clone(), stop.clone(), conns.clone());
        thread::Builder::new()
            .name("relay-accept".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if s.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(target) else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                        continue;
                    };
                    if let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) {
                        c.lock().unwrap_or_else(|e| e.into_inner()).extend([c3, s3]);
                    }
                    let uu = u.clone();
                    let dd = d.clone();
                    thread::spawn(move || pump(client, s2, uu));
                    thread::spawn(move || pump(server, c2, dd));
                }
            })?;
        Ok(CountingRelay {
            port,
            up,
            down,
            stop,
            conns,
        })
    }

    /// Bytes counted so far: (up, down).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::Relaxed),
            self.down.load(Ordering::Relaxed),
        )
    }

    pub fn reset(&self) {
        self.up.store(0, Ordering::Relaxed);
        self.down.store(0, Ordering::Relaxed);
    }

    /// Breaks every relayed connection now (both sides see it end).
    pub fn cut(&self) {
        for s in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// `ProxyCommand` body: connects to `addr` and relays stdin → socket and
/// socket → stdout until either side ends, then exits. Killing the process
/// cuts the connection: ressh sees its proxy end, the server sees the TCP
/// connection close.
#[allow(unsafe_code)] // a File over stdin/stdout's descriptors
pub fn stdio_proxy(addr: SocketAddr) -> ! {
    let sock = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("relay: cannot connect to {addr}: {e}");
            std::process::exit(1);
        }
    };
    let _ = sock.set_nodelay(true);
    let mut rd = sock.try_clone().expect("dup socket");
    thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop
        // keeps this File from closing it.
        let mut out = std::mem::ManuallyDrop::new(unsafe {
            <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(1)
        });
        loop {
            match rd.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        std::process::exit(0);
    });
    let mut wr = sock;
    let mut buf = vec![0u8; 256 * 1024];
    let mut input = io::stdin().lock();
    loop {
        match input.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if wr.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = wr.shutdown(Shutdown::Write);
    // Wait for the other direction to end (it exits the process).
    loop {
        thread::park();
    }
}

/// A raw TCP throughput measurement (as iperf's): a sink on 127.0.0.1 that
/// reads one connection to its end, and [`RawTcp::send`] to write to it,
/// directly or through a relay in front of the sink.
pub struct RawTcp {
    pub addr: SocketAddr,
    sink: thread::JoinHandle<io::Result<(u64, f64)>>,
}

impl RawTcp {
    pub fn sink() -> io::Result<RawTcp> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let sink = thread::spawn(move || {
            let (mut s, _) = listener.accept()?;
            let mut buf = vec![0u8; 1 << 20];
            let (mut got, mut first) = (0u64, None);
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                first.get_or_insert_with(std::time::Instant::now);
                got += n as u64;
            }
            let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
            Ok((got, secs))
        });
        Ok(RawTcp { addr, sink })
    }

    /// Sends `bytes` to `to` (the sink, or a relay to it), then waits for the
    /// sink: the bytes it received and the seconds from its first byte to
    /// the end of the stream.
    pub fn send(self, to: SocketAddr, bytes: u64) -> io::Result<(u64, f64)> {
        let mut c = TcpStream::connect(to)?;
        let buf = vec![0x5au8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            c.write_all(&buf[..n])?;
            left -= n as u64;
        }
        c.shutdown(Shutdown::Write)?;
        self.sink
            .join()
            .map_err(|_| io::Error::other("the sink panicked"))?
    }
}
