//! Agent forwarding (-A, ForwardAgent): the server's
//! "auth-agent@openssh.com" channels, each connected to the local agent
//! socket. Only when forwarding was asked for: otherwise the server's open
//! is refused (and reported, as ssh does, since only a hostile server
//! opens one unasked).

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use ressh_proto::msg::open_failure;

use super::channels::{Chan, Kind};
use super::Session;
use crate::fdio::LocalFd;

impl Session {
    pub(super) fn on_agent_open(&mut self, id: u32) {
        let Some(path) = self.cfg.forward_agent.clone() else {
            crate::error!("Warning: ssh server tried agent forwarding.");
            crate::error!("Warning: this is probably a break-in attempt by a malicious server.");
            self.refuse_open(id, open_failure::ADMINISTRATIVELY_PROHIBITED, "open failed");
            return;
        };
        // A local socket: connecting does not block.
        let sock = UnixStream::connect(&path).and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        });
        let sock = match sock {
            Ok(s) => s,
            Err(e) => {
                crate::debug1!("agent socket {}: {e}", path.display());
                self.refuse_open(id, open_failure::ADMINISTRATIVELY_PROHIBITED, "open failed");
                return;
            }
        };
        let t = self.token();
        let Ok(l) = LocalFd::socket(OwnedFd::from(sock), self.poll.registry(), t) else {
            self.refuse_open(id, open_failure::RESOURCE_SHORTAGE, "cannot poll");
            return;
        };
        let r = self.conn.accept_channel(id);
        if self.engine("accept_channel", r).is_none() {
            return;
        }
        crate::debug1!("client_input_channel_open: agent connection on channel {id}");
        let desc = "authentication agent connection".to_string();
        let ch = Chan::socket(id, Kind::Agent, desc, l, t, true);
        self.chans.insert(ch);
    }
}
