//! Channel kinds and what they share: the registry of pollable fds
//! ([`Ctx`]) and the byte relay between a channel and local fds ([`relay`]).

pub mod agent;
pub mod relay;
pub mod session;
pub mod streamlocal;
pub mod tcpip;
pub mod x11;

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::unistd::Pid;
use ressh_ipc::msg::{FromSession, SessionPolicy, UserInfo};

/// Bytes queued for the client beyond which nothing more is read from local
/// fds or from the client (backpressure). Small on purpose: the loop then
/// alternates between encrypting a few packets and handing them to the
/// socket, so the client starts decrypting while we encrypt (a large value
/// made bulk transfers stop-and-go, and copied through buffers larger than
/// the CPU caches).
pub const OUT_HIGH: usize = 256 << 10;

/// What a poll token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An fd of the channel with this id.
    Chan(u32),
    /// A listening socket of the remote forward with this id.
    Listener(u64),
    /// The listening socket of the streamlocal-forward with this id.
    StreamLocal(u64),
    /// An fd of a closed channel still writing what the client sent.
    Linger(u64),
    /// The forwarded agent's listening socket.
    Agent,
    /// A listening socket of the X11 display of this session channel.
    X11(u32),
}

/// Who and where: the facts of the session every channel may need.
pub struct Info {
    pub user: UserInfo,
    pub policy: SessionPolicy,
    pub peer_addr: String,
    pub peer_port: u16,
    pub local_addr: String,
    pub local_port: u16,
    /// Variables from PAM, for every child's environment.
    pub pam_env: Vec<(String, String)>,
    /// Shown on interactive logins (see `SessionStart::login_message`).
    pub login_message: String,
    /// ExposeAuthInfo's file, removed when the session ends.
    pub auth_info_file: Option<String>,
    /// The session runs inside ChrootDirectory.
    pub chrooted: bool,
}

/// Shared state of the event loop that channel code works with.
pub struct Ctx {
    registry: Registry,
    targets: HashMap<Token, Target>,
    next_token: usize,
    pub info: Info,
    /// Live children: pid → session channel id.
    pub children: HashMap<Pid, u32>,
    /// Children on a pty whose login the monitor recorded: pid → tty.
    pub logins: HashMap<Pid, String>,
    /// Messages for the monitor, sent by the event loop.
    pub to_monitor: Vec<FromSession>,
    /// The forwarded agent's socket, once a session asked for it (one per
    /// connection, as sshd).
    pub agent: Option<agent::AgentSocket>,
}

impl Ctx {
    /// `first_token`: tokens below it are the loop's own.
    pub fn new(registry: Registry, info: Info, first_token: usize) -> Ctx {
        Ctx {
            registry,
            targets: HashMap::new(),
            next_token: first_token,
            info,
            children: HashMap::new(),
            logins: HashMap::new(),
            to_monitor: Vec::new(),
            agent: None,
        }
    }

    /// Registers `fd` (edge-triggered) for `target` under a fresh token.
    pub fn register(&mut self, fd: RawFd, interest: Interest, target: Target) -> io::Result<Token> {
        let token = Token(self.next_token);
        self.next_token += 1;
        self.registry
            .register(&mut SourceFd(&fd), token, interest)?;
        self.targets.insert(token, target);
        Ok(token)
    }

    /// Removes `fd`'s registration; call before closing it.
    pub fn deregister(&mut self, fd: RawFd, token: Token) {
        let _ = self.registry.deregister(&mut SourceFd(&fd));
        self.targets.remove(&token);
    }

    /// Points an existing registration at another target.
    pub fn retarget(&mut self, token: Token, target: Target) {
        if let Some(t) = self.targets.get_mut(&token) {
            *t = target;
        }
    }

    pub fn target(&self, token: Token) -> Option<Target> {
        self.targets.get(&token).copied()
    }
}
