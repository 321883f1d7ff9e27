//! ProxyProtocolFrom: a connection from a listed load balancer starts with
//! a PROXY protocol header (v1 or v2) naming the client's address and the
//! address it connected to; those replace the connection's own everywhere
//! (logs, `Match Address`/`LocalAddress`/`LocalPort`, `AllowUsers
//! user@host`, `from=`, `source-address`, the reconnect checks,
//! SSH_CONNECTION). A connection from any other address is never read for
//! a header: a client cannot claim another's address.
//!
//! The header is read by the connection's own monitor, byte-exact (never a
//! byte of the SSH banner after it), within [`HEADER_TIME`]; a listed
//! balancer's connection without a valid header is dropped with a log line.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use ressh_compat::addrmatch;
use ressh_proto::proxy_header::{step, Step};

/// How long a balancer has to send its header once connected (HAProxy
/// sends it with the connection's first segment).
pub const HEADER_TIME: Duration = Duration::from_secs(10);

/// Whether `peer` is one of the balancers of `list` (ProxyProtocolFrom).
pub fn from_balancer(list: Option<&str>, peer: SocketAddr) -> bool {
    list.is_some_and(|l| addrmatch::addr_match_cidr_list(Some(peer.ip()), l).is_match())
}

/// Reads the header from `sock`, a listed balancer's connection: the
/// client's address and the address it connected to, or `(peer, local)`
/// when the header names none (a balancer's health check: v2 LOCAL, v1
/// UNKNOWN). Err: why the connection is dropped.
pub fn read_header(
    sock: &OwnedFd,
    peer: SocketAddr,
    local: SocketAddr,
    within: Duration,
) -> Result<(SocketAddr, SocketAddr), String> {
    let deadline = Instant::now() + within;
    let mut buf = Vec::new();
    loop {
        match step(&buf).map_err(|e| e.to_string())? {
            Step::Done(h) => return Ok(h.addrs.unwrap_or((peer, local))),
            Step::Need(k) => {
                let at = buf.len();
                buf.resize(at + k, 0);
                read_exact(sock, &mut buf[at..], deadline)?;
            }
        }
    }
}

fn read_exact(sock: &OwnedFd, mut into: &mut [u8], deadline: Instant) -> Result<(), String> {
    while !into.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no PROXY protocol header in time".into());
        }
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        match nix::unistd::read(sock.as_raw_fd(), into) {
            Ok(0) => return Err("connection closed before its PROXY protocol header".into()),
            Ok(n) => into = &mut into[n..],
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, OwnedFd, SocketAddr, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, peer) = l.accept().unwrap();
        let local = s.local_addr().unwrap();
        (c, OwnedFd::from(s), peer, local)
    }

    #[test]
    fn reads_the_header_and_not_a_byte_more() {
        let (mut c, s, peer, local) = pair();
        c.write_all(b"PROXY TCP4 198.18.1.2 198.18.0.1 40000 2222\r\nSSH-2.0-x\r\n")
            .unwrap();
        let got = read_header(&s, peer, local, HEADER_TIME).unwrap();
        assert_eq!(got.0, "198.18.1.2:40000".parse().unwrap());
        assert_eq!(got.1, "198.18.0.1:2222".parse().unwrap());
        let mut rest = [0u8; 11];
        let n = nix::unistd::read(s.as_raw_fd(), &mut rest).unwrap();
        assert_eq!(&rest[..n], b"SSH-2.0-x\r\n");
    }

    #[test]
    fn a_banner_or_silence_is_refused() {
        let (mut c, s, peer, local) = pair();
        c.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
        assert!(read_header(&s, peer, local, HEADER_TIME).is_err());
        let (_c, s, peer, local) = pair();
        let e = read_header(&s, peer, local, Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("in time"), "{e}");
    }

    #[test]
    fn only_listed_balancers() {
        let a: SocketAddr = "198.18.0.1:5".parse().unwrap();
        assert!(from_balancer(Some("198.18.0.0/24"), a));
        assert!(!from_balancer(Some("198.18.1.0/24,198.18.2.1"), a));
        assert!(!from_balancer(None, a));
    }
}
