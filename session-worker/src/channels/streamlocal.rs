//! Unix-domain socket forwarding (OpenSSH PROTOCOL §2.4):
//! "direct-streamlocal@openssh.com" channels (ssh -L …:/path) connect to a
//! socket, and "streamlocal-forward@openssh.com" listeners (ssh -R /path:…)
//! whose connections become "forwarded-streamlocal@openssh.com" channels.
//! This worker already runs as the user: sockets are made and reached with
//! the user's rights only. As sshd, a listener's socket file is left in
//! place when the forward ends (StreamLocalBindUnlink removes a stale one
//! before binding).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use mio::net::UnixListener;
use mio::{Interest, Token};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::stat::{umask, Mode};
use ressh_proto::msg::ChannelKind;
use ressh_proto::Connection;

use super::tcpip::TcpChan;
use super::{Ctx, Target};
use crate::log;

/// Connects to the socket at `path` without waiting: a listener whose
/// backlog is full fails at once (EAGAIN), as in sshd.
pub fn connect_to(path: &str) -> io::Result<OwnedFd> {
    let addr = UnixAddr::new(path)?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    connect(fd.as_raw_fd(), &addr)?;
    Ok(fd)
}

/// One streamlocal-forward: a listening socket at the client's path.
pub struct UnixForward {
    pub path: String,
    sock: UnixListener,
    token: Token,
}

impl UnixForward {
    /// Binds `path` under the umask `mask` (StreamLocalBindMask), first
    /// removing whatever is there when `unlink` (StreamLocalBindUnlink).
    pub fn bind(
        ctx: &mut Ctx,
        id: u64,
        path: &str,
        mask: u32,
        unlink: bool,
    ) -> io::Result<UnixForward> {
        // Checked before anything is removed: a path too long to bind.
        UnixAddr::new(path)?;
        if unlink {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    log!(
                        "unlink({}): {e}",
                        ressh_proto::wire::printable(path.as_bytes())
                    )
                }
                _ => {}
            }
        }
        // The umask is the process's: set around the bind only (this loop
        // is the only thread that creates files).
        let old = umask(Mode::from_bits_truncate(mask as libc::mode_t));
        let bound = UnixListener::bind(path);
        umask(old);
        let sock = bound?;
        let token = ctx.register(
            sock.as_raw_fd(),
            Interest::READABLE,
            Target::StreamLocal(id),
        )?;
        Ok(UnixForward {
            path: path.to_string(),
            sock,
            token,
        })
    }

    /// Accepts every pending connection and opens a
    /// forwarded-streamlocal channel for each; connections beyond what the
    /// engine can open are dropped.
    pub fn accept(&mut self, conn: &mut Connection, ctx: &mut Ctx) -> Vec<TcpChan> {
        let mut out = Vec::new();
        loop {
            let stream = match self.sock.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let kind = ChannelKind::ForwardedStreamlocal {
                path: self.path.clone(),
                reserved: String::new(),
            };
            let Ok(id) = conn.open_channel(kind) else {
                continue;
            };
            let fd = OwnedFd::from(UnixStream::from(stream));
            let desc = format!(
                "path {}",
                ressh_proto::wire::printable(self.path.as_bytes())
            );
            match TcpChan::forwarded(id, ctx, fd, "forwarded-streamlocal@openssh.com", desc) {
                Ok(c) => out.push(c),
                Err(e) => {
                    log!("cannot watch a forwarded connection: {e}");
                    let _ = conn.close_channel(id);
                }
            }
        }
        out
    }

    /// Stops listening (the socket file stays, as with sshd).
    pub fn close(self, ctx: &mut Ctx) {
        ctx.deregister(self.sock.as_raw_fd(), self.token);
    }
}
