//! The byte stream under the SSH connection: a TCP socket, or the pipes of a
//! ProxyCommand child, or (for ProxyJump) the pipes of a child `ressh -W`
//! through the jump host, or a mux master's control socket in proxy mode
//! (`-O proxy`). [`dial`] makes one from the resolved configuration and can
//! be called again later to replace a broken one.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{setsockopt, sockopt};
use nix::unistd::Pid;

use crate::args;
use crate::config::{Config, Family};
use crate::fdio::set_nonblocking;
use crate::log::Level;

/// What [`Transport::tcp_progress`] reads from the kernel.
#[derive(Debug, Clone, Copy)]
pub struct TcpProgress {
    /// Since the last TCP acknowledgement from the peer.
    pub since_ack: Duration,
    /// Segments sent and not acknowledged yet.
    pub in_flight: u32,
    /// Bytes in the send buffer not sent yet.
    pub not_sent: u32,
}

impl TcpProgress {
    /// Whether an unanswered probe may just be waiting behind our own
    /// bytes on a live path: segments are in flight and the peer
    /// acknowledged some within `s` (the suspicion timeout); or nothing is
    /// in flight while bytes wait, so the peer's window is closed (it reads
    /// slower than we send) as its last acknowledgement said, within
    /// `keepalive` (the probe waits behind bytes it has not read; the
    /// keepalive deadline still applies).
    pub fn moving(&self, s: Duration, keepalive: Duration) -> bool {
        if self.in_flight > 0 {
            self.since_ack < s
        } else {
            self.not_sent > 0 && self.since_ack < keepalive
        }
    }
}

pub enum Transport {
    Tcp {
        sock: mio::net::TcpStream,
        desc: String,
    },
    Command {
        child: Child,
        /// A pidfd of the child (None on kernels without pidfd_open): after
        /// -f the child is no longer ours to wait for, and this still names
        /// it and only it.
        pidfd: Option<OwnedFd>,
        /// The child's stdout: we read the server's bytes here.
        rd: std::fs::File,
        /// The child's stdin: we write to the server here.
        wr: std::fs::File,
        desc: String,
    },
    /// A master's control socket in proxy mode (`-O proxy`).
    Mux {
        sock: mio::net::UnixStream,
        desc: String,
    },
}

impl Transport {
    /// The TCP endpoints (none through a proxy command).
    pub fn tcp_addrs(&self) -> Option<(SocketAddr, SocketAddr)> {
        match self {
            Transport::Tcp { sock, .. } => Some((sock.local_addr().ok()?, sock.peer_addr().ok()?)),
            Transport::Command { .. } | Transport::Mux { .. } => None,
        }
    }

    /// TCP_USER_TIMEOUT: unacknowledged data this long means the connection
    /// is dead, without waiting for TCP's own many-minute timeout.
    pub fn set_user_timeout(&self, t: Duration) {
        if let Transport::Tcp { sock, .. } = self {
            let ms = t.as_millis().min(u32::MAX as u128) as u32;
            if let Err(e) = setsockopt(sock, sockopt::TcpUserTimeout, &ms) {
                crate::debug1!("TCP_USER_TIMEOUT: {e}");
            }
        }
    }

    /// The kernel's view of a TCP transport's sending side (`TCP_INFO`),
    /// to tell a path that is only slow from a dead one; None through a
    /// proxy command or if the kernel does not say.
    pub fn tcp_progress(&self) -> Option<TcpProgress> {
        let Transport::Tcp { sock, .. } = self else {
            return None;
        };
        let info = crate::sys::tcp_info(sock)?;
        Some(TcpProgress {
            since_ack: Duration::from_millis(info.tcpi_last_ack_recv.into()),
            in_flight: info.tcpi_unacked,
            not_sent: info.tcpi_notsent_bytes,
        })
    }

    /// Whether a transport of [`dial_nonblocking`] has finished connecting
    /// (an error if the connection failed). Pipes are ready at once.
    pub fn connected(&self) -> io::Result<bool> {
        match self {
            Transport::Tcp { sock, .. } => {
                if let Some(e) = sock.take_error()? {
                    return Err(e);
                }
                match sock.peer_addr() {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Transport::Command { .. } | Transport::Mux { .. } => Ok(true),
        }
    }

    /// Registers for readiness: one token for TCP, read/write tokens for pipes.
    pub fn register(&mut self, reg: &Registry, r: Token, w: Token) -> io::Result<()> {
        match self {
            Transport::Tcp { sock, .. } => {
                reg.register(sock, r, Interest::READABLE | Interest::WRITABLE)
            }
            Transport::Mux { sock, .. } => {
                reg.register(sock, r, Interest::READABLE | Interest::WRITABLE)
            }
            Transport::Command { rd, wr, .. } => {
                reg.register(&mut SourceFd(&rd.as_raw_fd()), r, Interest::READABLE)?;
                reg.register(&mut SourceFd(&wr.as_raw_fd()), w, Interest::WRITABLE)
            }
        }
    }

    pub fn deregister(&mut self, reg: &Registry) {
        match self {
            Transport::Tcp { sock, .. } => {
                let _ = reg.deregister(sock);
            }
            Transport::Mux { sock, .. } => {
                let _ = reg.deregister(sock);
            }
            Transport::Command { rd, wr, .. } => {
                let _ = reg.deregister(&mut SourceFd(&rd.as_raw_fd()));
                let _ = reg.deregister(&mut SourceFd(&wr.as_raw_fd()));
            }
        }
    }

    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp { sock, .. } => sock.read(buf),
            Transport::Mux { sock, .. } => sock.read(buf),
            Transport::Command { rd, .. } => rd.read(buf),
        }
    }

    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp { sock, .. } => sock.write(buf),
            Transport::Mux { sock, .. } => sock.write(buf),
            Transport::Command { wr, .. } => wr.write(buf),
        }
    }

    /// "127.0.0.1 port 22", the proxy command, or the control socket.
    pub fn describe(&self) -> &str {
        match self {
            Transport::Tcp { desc, .. }
            | Transport::Command { desc, .. }
            | Transport::Mux { desc, .. } => desc,
        }
    }

    /// Ends the transport; a proxy child gets SIGHUP and is reaped. One
    /// started before -f went to the background belongs to the parent that
    /// exited: it gets its SIGHUP through the pidfd, and init reaps it.
    pub fn close(&mut self) {
        let Transport::Command { child, pidfd, .. } = self else {
            return;
        };
        match child.try_wait() {
            Ok(None) => {
                // Our own child, not yet reaped: its pid names it.
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGHUP);
                for _ in 0..50 {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            Ok(Some(_)) => {}
            Err(_) => {
                if let Some(fd) = pidfd.take() {
                    if let Err(e) = crate::sys::pidfd_send_signal(fd.as_fd(), libc::SIGHUP) {
                        crate::debug1!("cannot hang up the proxy command: {e}");
                    }
                }
            }
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.close();
    }
}

/// A connection error with ssh's wording.
#[derive(Debug)]
pub struct DialError(pub String);

/// Makes a new transport to `cfg`'s host: ProxyJump, ProxyCommand or TCP.
pub fn dial(cfg: &Config) -> Result<Transport, DialError> {
    if let Some(jump) = &cfg.proxy_jump {
        let argv = jump_command(cfg, jump)?;
        crate::debug1!(
            "Setting implicit ProxyCommand from ProxyJump: {}",
            argv.join(" ")
        );
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        return spawn(cmd, format!("{} via {jump}", cfg.host));
    }
    if let Some(pc) = &cfg.proxy_command {
        crate::debug1!("Executing proxy command: exec {pc}");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(format!("exec {pc}"));
        return spawn(cmd, format!("{} (proxy command)", cfg.host));
    }
    connect_tcp(cfg)
}

fn spawn(mut cmd: Command, desc: String) -> Result<Transport, DialError> {
    crate::sys::hangup_kills_on_exec(&mut cmd);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .map_err(|e| DialError(format!("proxy command failed to start: {e}")))?;
    // Not yet waited for: the pid names our child.
    let pidfd = crate::sys::pidfd_open(child.id());
    let wr = child.stdin.take().expect("piped");
    let rd = child.stdout.take().expect("piped");
    let wr = std::fs::File::from(OwnedFd::from(wr));
    let rd = std::fs::File::from(OwnedFd::from(rd));
    set_nonblocking(&wr).map_err(|e| DialError(e.to_string()))?;
    set_nonblocking(&rd).map_err(|e| DialError(e.to_string()))?;
    Ok(Transport::Command {
        child,
        pidfd,
        rd,
        wr,
        desc,
    })
}

/// The `ressh -W` command line that reaches `cfg.host` through the jump
/// hosts of `jump` (comma-separated, the last is nearest to the target).
pub fn jump_command(cfg: &Config, jump: &str) -> Result<Vec<String>, DialError> {
    let exe = std::env::current_exe()
        .map_err(|e| DialError(format!("cannot find ressh's own binary for ProxyJump: {e}")))?;
    let hops: Vec<&str> = jump.split(',').map(str::trim).collect();
    let (last, rest) = hops.split_last().expect("split gives one");
    let (user, host, port) = parse_jump(last)?;
    let mut argv = vec![exe.to_string_lossy().into_owned()];
    if let Some(f) = &cfg.config_file {
        argv.push("-F".into());
        argv.push(f.clone());
    }
    match cfg.log_level {
        Level::Quiet | Level::Fatal | Level::Error => argv.push("-q".into()),
        Level::Debug1 => argv.push("-v".into()),
        Level::Debug2 => argv.push("-vv".into()),
        Level::Debug3 => argv.push("-vvv".into()),
        _ => {}
    }
    match cfg.address_family {
        Family::Inet => argv.push("-4".into()),
        Family::Inet6 => argv.push("-6".into()),
        Family::Any => {}
    }
    if !rest.is_empty() {
        argv.push("-J".into());
        argv.push(rest.join(","));
    }
    if let Some(u) = user {
        argv.push("-l".into());
        argv.push(u);
    }
    if let Some(p) = port {
        argv.push("-p".into());
        argv.push(p.to_string());
    }
    argv.push("-W".into());
    argv.push(format!("[{}]:{}", cfg.host, cfg.port));
    argv.push("--".into());
    argv.push(host);
    Ok(argv)
}

/// `[user@]host[:port]` or `ssh://[user@]host[:port]`.
pub fn parse_jump(s: &str) -> Result<(Option<String>, String, Option<u16>), DialError> {
    let bad = || DialError(format!("invalid ProxyJump host {s:?}"));
    if s.starts_with("ssh://") {
        let d = args::parse_destination(s).map_err(|_| bad())?;
        return Ok((d.user, d.host, d.port));
    }
    let (user, hp) = match s.rsplit_once('@') {
        Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
        Some(_) => return Err(bad()),
        None => (None, s),
    };
    let (host, port) = args::split_host_port(hp).ok_or_else(bad)?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((user, host, port))
}

/// The server's addresses, as AddressFamily allows.
fn resolve(cfg: &Config) -> Result<Vec<SocketAddr>, DialError> {
    let addrs: Vec<SocketAddr> = (cfg.host.as_str(), cfg.port)
        .to_socket_addrs()
        .map_err(|e| {
            DialError(format!(
                "Could not resolve hostname {}: {}",
                cfg.host,
                e.to_string()
                    .trim_start_matches("failed to lookup address information: ")
            ))
        })?
        .filter(|a| match cfg.address_family {
            Family::Inet => a.is_ipv4(),
            Family::Inet6 => a.is_ipv6(),
            Family::Any => true,
        })
        .collect();
    if addrs.is_empty() {
        return Err(DialError(format!(
            "Could not resolve hostname {}: Address family for hostname not supported",
            cfg.host
        )));
    }
    Ok(addrs)
}

/// A new transport for a reconnect attempt, without blocking: the session
/// keeps running while TCP connects (check [`Transport::connected`] when
/// it becomes writable). Attempt `n` tries the server's `n`-th address
/// (round robin). A proxy command is started as by [`dial`].
pub fn dial_nonblocking(cfg: &Config, n: u32) -> Result<Transport, DialError> {
    if cfg.proxy_jump.is_some() || cfg.proxy_command.is_some() {
        return dial(cfg);
    }
    let addrs = resolve(cfg)?;
    let a = addrs[n as usize % addrs.len()];
    crate::debug1!("Connecting to {} [{}] port {}.", cfg.host, a.ip(), a.port());
    let sock = mio::net::TcpStream::connect(a).map_err(|e| {
        DialError(format!(
            "connect to address {} port {}: {}",
            a.ip(),
            a.port(),
            strip_os_error(&e)
        ))
    })?;
    let _ = sock.set_nodelay(true);
    Ok(Transport::Tcp {
        sock,
        desc: format!("{} port {}", a.ip(), a.port()),
    })
}

fn connect_tcp(cfg: &Config) -> Result<Transport, DialError> {
    let addrs = resolve(cfg)?;
    let mut last = None;
    for attempt in 0..cfg.connection_attempts {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        for a in &addrs {
            crate::debug1!("Connecting to {} [{}] port {}.", cfg.host, a.ip(), a.port());
            let r = match cfg.connect_timeout {
                Some(t) => TcpStream::connect_timeout(a, t),
                None => TcpStream::connect(a),
            };
            match r {
                Ok(s) => {
                    crate::debug1!("Connection established.");
                    let _ = s.set_nodelay(true);
                    s.set_nonblocking(true)
                        .map_err(|e| DialError(e.to_string()))?;
                    return Ok(Transport::Tcp {
                        sock: mio::net::TcpStream::from_std(s),
                        desc: format!("{} port {}", a.ip(), a.port()),
                    });
                }
                Err(e) => {
                    let msg = if e.kind() == io::ErrorKind::TimedOut {
                        "Connection timed out".to_string()
                    } else {
                        strip_os_error(&e)
                    };
                    crate::debug1!("connect to address {} port {}: {msg}", a.ip(), a.port());
                    last = Some(msg);
                }
            }
        }
    }
    Err(DialError(format!(
        "connect to host {} port {}: {}",
        cfg.host,
        cfg.port,
        last.unwrap_or_default()
    )))
}

/// "Connection refused (os error 111)" -> "Connection refused".
pub fn strip_os_error(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_specs() {
        assert_eq!(
            parse_jump("u@h:2222").unwrap(),
            (Some("u".into()), "h".into(), Some(2222))
        );
        assert_eq!(parse_jump("h").unwrap(), (None, "h".into(), None));
        assert_eq!(
            parse_jump("[::1]:22").unwrap(),
            (None, "::1".into(), Some(22))
        );
        assert_eq!(
            parse_jump("ssh://a@b:7").unwrap(),
            (Some("a".into()), "b".into(), Some(7))
        );
        assert!(parse_jump("@h").is_err());
        assert!(parse_jump("h:0").is_err());
    }

    #[test]
    fn proxy_command_pipes_carry_bytes() {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg("exec cat");
        let mut t = spawn(cmd, "cat".into()).unwrap();
        let mut written = 0;
        while written < 5 {
            match t.write(&b"hello"[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while got.len() < 5 && std::time::Instant::now() < deadline {
            let mut b = [0u8; 16];
            match t.read(&mut b) {
                Ok(n) => got.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, b"hello");
        t.close();
        if let Transport::Command { child, .. } = &mut t {
            assert!(child.try_wait().unwrap().is_some());
        }
    }
}
