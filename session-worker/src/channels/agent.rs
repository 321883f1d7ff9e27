//! Agent forwarding (auth-agent-req@openssh.com): a listening Unix socket
//! in a private directory, as Debian's sshd makes it
//! (/tmp/ssh-XXXXXXXXXX/agent.<pid>, the directory mode 0700 and owned by
//! the user, this worker already running as the user); each connection to
//! it becomes an "auth-agent@openssh.com" channel to the client. Socket and
//! directory are removed when the session ends.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use mio::net::UnixListener;
use mio::{Interest, Token};
use ressh_proto::msg::ChannelKind;
use ressh_proto::Connection;

use super::tcpip::TcpChan;
use super::{Ctx, Target};
use crate::log;

pub struct AgentSocket {
    dir: PathBuf,
    path: String,
    listener: UnixListener,
    token: Token,
}

impl AgentSocket {
    /// Makes the directory (mkdtemp: 0700, the user's) and the socket in it.
    pub fn create(ctx: &mut Ctx) -> io::Result<AgentSocket> {
        let dir = nix::unistd::mkdtemp("/tmp/ssh-XXXXXXXXXX")?;
        let path = format!("{}/agent.{}", dir.display(), std::process::id());
        let listener = match UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(e);
            }
        };
        // From here on Drop removes socket and directory.
        let mut sock = AgentSocket {
            dir,
            path,
            listener,
            token: Token(usize::MAX),
        };
        sock.token = ctx.register(sock.listener.as_raw_fd(), Interest::READABLE, Target::Agent)?;
        Ok(sock)
    }

    /// The socket's path, for SSH_AUTH_SOCK.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Accepts every pending connection and opens an agent channel for
    /// each; connections beyond what the engine can open are dropped.
    pub fn accept(&mut self, conn: &mut Connection, ctx: &mut Ctx) -> Vec<TcpChan> {
        let mut out = Vec::new();
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let Ok(id) = conn.open_channel(ChannelKind::AuthAgent) else {
                continue;
            };
            let fd = OwnedFd::from(std::os::unix::net::UnixStream::from(stream));
            match TcpChan::forwarded(id, ctx, fd, "auth-agent@openssh.com", "agent socket".into()) {
                Ok(c) => out.push(c),
                Err(e) => {
                    log!("cannot watch an agent connection: {e}");
                    let _ = conn.close_channel(id);
                }
            }
        }
        out
    }

    /// Stops listening; socket and directory go with the value.
    pub fn close(self, ctx: &mut Ctx) {
        ctx.deregister(self.listener.as_raw_fd(), self.token);
    }
}

impl Drop for AgentSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(Path::new(&self.dir));
    }
}
