//! A slow path for tests that must not mistake slow for dead: a TCP relay that
//! delays every byte by a fixed time each way and passes at most a given rate each
//! way (a bottleneck with a queue in front of it). The kernel has no `netem` here,
//! so the delay is made in user space: the relay reads, waits, then writes.
//!
//! The relay is a TCP endpoint on each side (it terminates TCP: the kernels of the
//! two ends see a round trip of microseconds, their TCP windows and congestion control
//! never see the delay; what does is everything above TCP, such as SSH's channel
//! windows). The rate is a token bucket of one chunk (the reader takes a chunk, then
//! waits until the rate has paid for it; idle time saves no more credit than that).
//! Per direction it holds at most what the delay keeps in flight at the full rate
//! plus [`QUEUE`] bytes (the bottleneck's queue), counted in bytes and read in chunks
//! of [`CHUNK`]; beyond that it stops reading and TCP's flow control pushes back.
//!
//! Std only: two threads per direction, one timed `sleep` per chunk (tens of
//! microseconds of oversleep each, which is why chunks are large).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Condvar;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Bytes read at a time: a millisecond's worth at the rate, within these bounds
/// (the reader's schedule is absolute, so oversleeping one chunk is made up by the
/// next: the rate holds whatever the chunk).
const CHUNK: std::ops::RangeInclusive<u64> = (16 << 10)..=(256 << 10);
/// The bottleneck's queue, beyond what is in flight, per direction.
pub const QUEUE: u64 = 1 << 20;

/// A running relay; stops accepting and cuts its connections on drop.
pub struct DelayRelay {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    /// The delay each way and the rate of connections accepted from now on.
    path: Arc<Mutex<(Duration, u64)>>,
}

impl DelayRelay {
    /// Serves `listener` (bound by the caller, in the namespace it wants): each
    /// connection is forwarded to `target` (connected from the thread that calls this,
    /// so from its namespace), every byte `one_way` late and at most `rate` bytes per
    /// second, each way.
    pub fn start(
        listener: TcpListener,
        target: SocketAddr,
        one_way: Duration,
        rate: u64,
    ) -> io::Result<DelayRelay> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let path = Arc::new(Mutex::new((one_way, rate)));
        let (s, c, p) = (stop.clone(), conns.clone(), path.clone());
        thread::Builder::new()
            .name("delay-relay".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    let client = match listener.accept() {
                        Ok((c, _)) => c,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        Err(_) => continue,
                    };
                    let _ = client.set_nonblocking(false);
                    let (one_way, rate) = *p.lock().unwrap_or_else(|e| e.into_inner());
                    let Ok(server) = TcpStream::connect(target) else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    for (from, to) in [(&client, &server), (&server, &client)] {
                        let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                            continue;
                        };
                        let (tx, rx) = channel();
                        let held = Arc::new(Held {
                            cap: queue_bytes(one_way, rate),
                            bytes: Mutex::new(0),
                            freed: Condvar::new(),
                        });
                        let h = held.clone();
                        thread::spawn(move || read_side(from, tx, rate, h));
                        thread::spawn(move || write_side(rx, to, one_way, held));
                    }
                    let mut held = c.lock().unwrap_or_else(|e| e.into_inner());
                    held.push(client);
                    held.push(server);
                }
            })?;
        Ok(DelayRelay {
            addr,
            stop,
            conns,
            path,
        })
    }
}

impl DelayRelay {
    /// Connections accepted from now on are delayed `one_way` each way and
    /// pass at most `rate` bytes per second (a client that reconnects after a
    /// [`cut`](Self::cut) has moved to another path); those already made
    /// keep theirs.
    pub fn set_path(&self, one_way: Duration, rate: u64) {
        *self.path.lock().unwrap_or_else(|e| e.into_inner()) = (one_way, rate);
    }

    /// Cuts every connection made so far (both sides see an end of stream); the relay
    /// goes on accepting new ones.
    pub fn cut(&self) {
        for c in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

/// Bytes read at a time at `rate`.
fn chunk(rate: u64) -> usize {
    (rate / 1000).clamp(*CHUNK.start(), *CHUNK.end()) as usize
}

/// Bytes held per direction: those in flight at `rate` for `one_way`, plus [`QUEUE`].
fn queue_bytes(one_way: Duration, rate: u64) -> usize {
    (rate as f64 * one_way.as_secs_f64()) as usize + QUEUE as usize
}

/// What one direction holds, in bytes (counted, not in chunks: a sender slower than
/// the rate makes small reads, and a count of chunks would then hold less than the
/// delay needs).
struct Held {
    cap: usize,
    bytes: Mutex<usize>,
    freed: Condvar,
}

impl Held {
    /// Waits until less than the cap is held.
    fn wait_room(&self) {
        let mut b = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        while *b >= self.cap {
            b = self.freed.wait(b).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn add(&self, n: usize) {
        *self.bytes.lock().unwrap_or_else(|e| e.into_inner()) += n;
    }

    fn remove(&self, n: usize) {
        let mut b = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        *b = b.saturating_sub(n);
        self.freed.notify_one();
    }
}

/// Reads at most `rate` bytes per second (a token bucket holding at most one chunk's
/// worth: an idle spell saves no credit beyond that) and queues each chunk with its
/// arrival time.
fn read_side(mut from: TcpStream, tx: Sender<(Instant, Vec<u8>)>, rate: u64, held: Arc<Held>) {
    let mut buf = vec![0u8; chunk(rate)];
    let burst = Duration::from_secs_f64(buf.len() as f64 / rate as f64);
    let mut next = Instant::now();
    loop {
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        }
        held.wait_room();
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = Instant::now();
        next = next.max(now.checked_sub(burst).unwrap_or(now))
            + Duration::from_secs_f64(n as f64 / rate as f64);
        held.add(n);
        if tx.send((now, buf[..n].to_vec())).is_err() {
            break;
        }
    }
}

/// Writes each chunk `one_way` after it arrived; half-closes at the end.
fn write_side(
    rx: Receiver<(Instant, Vec<u8>)>,
    mut to: TcpStream,
    one_way: Duration,
    held: Arc<Held>,
) {
    for (at, chunk) in rx {
        let due = at + one_way;
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        if to.write_all(&chunk).is_err() {
            // Let a reader waiting for room see its socket's end.
            held.remove(usize::MAX);
            return;
        }
        held.remove(chunk.len());
    }
    let _ = to.shutdown(Shutdown::Write);
}
