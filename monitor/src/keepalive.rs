//! TCPKeepAlive, as sshd does it: SO_KEEPALIVE on the client's connection
//! as soon as its monitor gets it, and the kernel's keepalive timers
//! (`net.ipv4.tcp_keepalive_time`, `_intvl`, `_probes`; on Linux 7200 s,
//! 75 s and 9 by default) decide when a silent peer is dead. The session
//! worker then sees a read error (ETIMEDOUT) on the socket, which ends a
//! plain SSH session and detaches a resilient one.
//!
//! The option stays with the socket: the kex worker and the session worker
//! get the same socket, and so does the session a reconnect moves it to.

use std::os::fd::AsFd;

use nix::sys::socket::{setsockopt, sockopt};

/// Sets SO_KEEPALIVE on `sock` when `on` (TCPKeepAlive yes); with `no` the
/// socket is left as accepted (off). A failure is logged, never fatal
/// (sshd does the same); a Unix socket (inetd mode over pipes) takes the
/// option harmlessly.
pub fn apply(sock: &impl AsFd, on: bool) {
    if !on {
        return;
    }
    if let Err(e) = setsockopt(sock, sockopt::KeepAlive, &true) {
        crate::log::error(&format!("setsockopt SO_KEEPALIVE: {e}"));
    }
}
