//! Precise triggers and observers for the reconnect measurements, so that
//! the time from a trigger to the session running again is not blurred by
//! the start-up time of `ss` or `ip`:
//!
//! - [`destroy_tcp_to`] aborts TCP connections with `SOCK_DESTROY` (what
//!   `ss -K` does) from this process, and says exactly when;
//! - [`RouteWatch`] notes when the kernel announces a route or address
//!   change (the moment ressh's own netlink socket hears of it);
//! - [`LogWatch`] wakes up when a log file is written (inotify);
//! - [`Cat`] is a client session running `cat`: the bytes it echoes are
//!   the witness that the session runs (again).
//!
//! The first two act on the network namespace of the calling thread.
#![allow(unsafe_code)] // netlink and inotify sockets, recv and poll on them

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn netlink(proto: libc::c_int, groups: u32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2); the result is checked and owned.
    let fd = unsafe {
        OwnedFd::from_raw_fd(cvt(libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            proto,
        ))?)
    };
    // SAFETY: sockaddr_nl is plain data; zeroed is valid.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    sa.nl_groups = groups;
    // SAFETY: sa is a valid sockaddr_nl of the given size.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

/// Established TCP connections to `dst` in this thread's namespace, as
/// (local address, local port), from `/proc/thread-self/net/tcp`.
fn connections_to(dst: SocketAddrV4) -> io::Result<Vec<SocketAddrV4>> {
    let text = fs::read_to_string("/proc/thread-self/net/tcp")?;
    let hex_addr = |s: &str| -> Option<SocketAddrV4> {
        let (a, p) = s.split_once(':')?;
        let a = u32::from_str_radix(a, 16).ok()?;
        let p = u16::from_str_radix(p, 16).ok()?;
        // The address is printed as the raw (network-order) u32 in host order.
        Some(SocketAddrV4::new(Ipv4Addr::from(a.to_le_bytes()), p))
    };
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[3] != "01" {
            continue;
        }
        if let (Some(local), Some(remote)) = (hex_addr(f[1]), hex_addr(f[2])) {
            if remote == dst {
                out.push(local);
            }
        }
    }
    Ok(out)
}

/// `struct inet_diag_req_v2` with its `inet_diag_sockid`.
#[repr(C)]
struct DiagReq {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    sport: [u8; 2],
    dport: [u8; 2],
    src: [u32; 4],
    dst: [u32; 4],
    ifindex: u32,
    cookie: [u32; 2],
}

#[repr(C)]
struct DestroyMsg {
    hdr: libc::nlmsghdr,
    req: DiagReq,
}

/// `SOCK_DESTROY` from `<linux/sock_diag.h>`.
const SOCK_DESTROY: u16 = 21;

/// Aborts every established TCP connection to `dst` in the calling thread's
/// namespace, as `ss -K` does (the owner's next call fails with
/// ECONNABORTED, the peer gets a reset). Returns when the first one was
/// destroyed and how many were.
pub fn destroy_tcp_to(dst: SocketAddrV4) -> io::Result<(Instant, usize)> {
    let conns = connections_to(dst)?;
    let sock = netlink(libc::NETLINK_SOCK_DIAG, 0)?;
    let mut first = None;
    for local in &conns {
        let msg = DestroyMsg {
            hdr: libc::nlmsghdr {
                nlmsg_len: std::mem::size_of::<DestroyMsg>() as u32,
                nlmsg_type: SOCK_DESTROY,
                nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
                nlmsg_seq: 1,
                nlmsg_pid: 0,
            },
            req: DiagReq {
                family: libc::AF_INET as u8,
                protocol: libc::IPPROTO_TCP as u8,
                ext: 0,
                pad: 0,
                states: !0,
                sport: local.port().to_be_bytes(),
                dport: dst.port().to_be_bytes(),
                src: [u32::from_ne_bytes(local.ip().octets()), 0, 0, 0],
                dst: [u32::from_ne_bytes(dst.ip().octets()), 0, 0, 0],
                ifindex: 0,
                cookie: [!0, !0],
            },
        };
        let t = Instant::now();
        // SAFETY: msg is a fully initialized repr(C) value of the given size.
        cvt(unsafe {
            libc::send(
                sock.as_raw_fd(),
                (&msg as *const DestroyMsg).cast(),
                std::mem::size_of::<DestroyMsg>(),
                0,
            ) as libc::c_int
        })?;
        first.get_or_insert(t);
        // The ACK: an nlmsgerr whose error is 0 on success.
        let mut buf = [0u8; 512];
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 20 {
            let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            if err != 0 {
                return Err(io::Error::from_raw_os_error(-err));
            }
        }
    }
    match first {
        Some(t) => Ok((t, conns.len())),
        None => Err(io::Error::other(format!(
            "no established connection to {dst}"
        ))),
    }
}

/// Records when route and address changes are announced in the namespace
/// of the thread that made it (netlink, the groups ressh itself watches).
pub struct RouteWatch {
    events: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
}

impl RouteWatch {
    /// Must be called on a thread inside the namespace; the listener runs
    /// on its own thread from then on (sockets keep their namespace).
    pub fn start() -> io::Result<RouteWatch> {
        let groups =
            (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV4_ROUTE) as u32;
        let sock = netlink(libc::NETLINK_ROUTE, groups)?;
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        // SAFETY: setsockopt with a valid timeval of the given size.
        cvt(unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        })?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (events.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                // SAFETY: buf is valid for its length.
                let n =
                    unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n > 0 {
                    let t = Instant::now();
                    e.lock().unwrap_or_else(|x| x.into_inner()).push(t);
                }
            }
        });
        Ok(RouteWatch { events, stop })
    }

    /// The first change announced after `since`.
    pub fn first_after(&self, since: Instant) -> Option<Instant> {
        self.events
            .lock()
            .unwrap_or_else(|x| x.into_inner())
            .iter()
            .copied()
            .find(|t| *t >= since)
    }
}

impl Drop for RouteWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Wakes up when a file is written to (inotify `IN_MODIFY`).
pub struct LogWatch {
    fd: OwnedFd,
}

impl LogWatch {
    pub fn new(path: &Path) -> io::Result<LogWatch> {
        // SAFETY: inotify_init1; the result is checked and owned.
        let fd = unsafe { OwnedFd::from_raw_fd(cvt(libc::inotify_init1(libc::IN_CLOEXEC))?) };
        let p = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::other("path with NUL"))?;
        // SAFETY: valid fd and NUL-terminated path.
        cvt(unsafe { libc::inotify_add_watch(fd.as_raw_fd(), p.as_ptr(), libc::IN_MODIFY) })?;
        Ok(LogWatch { fd })
    }

    /// Waits until `done()` holds, checking it after every write to the
    /// file; returns when it first held, or None after `timeout`.
    pub fn wait(&self, timeout: Duration, mut done: impl FnMut() -> bool) -> Option<Instant> {
        let end = Instant::now() + timeout;
        loop {
            if done() {
                return Some(Instant::now());
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as i32 + 1) };
            if r > 0 {
                let mut buf = [0u8; 4096];
                // SAFETY: buf is valid for its length.
                unsafe {
                    libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len());
                }
            }
        }
    }
}

/// A client session running `cat`: what is written comes back. Its bytes
/// are all `x`; a reader thread counts what returns and fails on any other
/// byte. The client is killed when this is dropped.
pub struct Cat {
    child: Child,
    stdin: ChildStdin,
    rx: mpsc::Receiver<Result<usize, String>>,
}

impl Cat {
    /// Spawns `cmd` (a client command line running `cat` remotely), its
    /// stdin and stdout piped, and waits up to 10 s for its first echo.
    pub fn spawn(mut cmd: Command) -> Result<Cat, String> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let r = match stdout.read(&mut buf) {
                    Ok(0) => Err("EOF".to_string()),
                    Ok(n) => match buf[..n].iter().find(|&&b| b != b'x') {
                        None => Ok(n),
                        Some(b) => Err(format!("echo returned {b:#x}")),
                    },
                    Err(e) => Err(e.to_string()),
                };
                let end = r.is_err();
                if tx.send(r).is_err() || end {
                    break;
                }
            }
        });
        let mut cat = Cat { child, stdin, rx };
        cat.echo(1, Duration::from_secs(10))
            .map_err(|e| format!("the session does not echo: {e}"))?;
        Ok(cat)
    }

    /// Writes `n` bytes and waits until `n` came back.
    pub fn echo(&mut self, n: u64, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0u64;
        let mut got = 0u64;
        while got < n {
            // Keep at most 4 MiB in flight: cat's pipes and the channel
            // window hold the rest.
            while sent < n && sent - got < 4 << 20 {
                let k = (n - sent).min(chunk.len() as u64) as usize;
                self.stdin
                    .write_all(&chunk[..k])
                    .map_err(|e| format!("write: {e}"))?;
                sent += k as u64;
            }
            self.stdin.flush().map_err(|e| format!("write: {e}"))?;
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Ok(k)) => got += k as u64,
                Ok(Err(e)) => return Err(format!("read: {e}")),
                Err(_) => return Err(format!("{got} of {n} bytes back within {timeout:?}")),
            }
        }
        Ok(())
    }
}

impl Drop for Cat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
