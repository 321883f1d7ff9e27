//! The closed set of messages between resshd's processes.
//!
//! Directions: monitor → kex worker ([`ToKex`]), kex worker → monitor
//! ([`FromKex`]), monitor → session worker ([`ToSession`]), session worker
//! → monitor ([`FromSession`]). The monitor accepts each request only in
//! the state where it is valid (see `ressh-monitor`).

use crate::permit::Permits;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The longest log line a worker may send ([`FromKex::Log`],
/// [`FromSession::Log`]), in bytes; a worker cuts longer ones, and the
/// monitor kills a worker that sends one.
pub const MAX_LOG_LEN: usize = 1024;

/// What the monitor tells a fresh kex worker. The worker gets the host
/// keys' public halves only; it asks the monitor for every signature.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KexStart {
    pub proto: ressh_proto::Config,
    pub host_keys: Vec<Vec<u8>>,
    /// Host certificate blobs (HostCertificate), each of one of the keys.
    pub host_certs: Vec<Vec<u8>>,
    pub banner: Option<String>,
    /// Seconds the client has to authenticate (LoginGraceTime; 0 = no limit).
    pub login_grace_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToKex {
    Start(Box<KexStart>),
    /// The answer to [`FromKex::Sign`].
    Signature(Result<Vec<u8>, String>),
    /// The answer to [`FromKex::Auth`].
    Verdict(AuthVerdict),
    /// The reconnect was refused: send RECONNECT_FAILURE and exit.
    ReconnectRefused {
        code: u32,
        description: String,
    },
    /// The socket went to the owning session: exit without a word.
    ReconnectHandedOver,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthVerdict {
    Accept,
    Reject {
        methods: Vec<String>,
        partial: bool,
    },
    /// The queried public key would be accepted.
    PkOk,
    /// Too many failures or a policy refusal: disconnect with this text.
    Disconnect(String),
    /// Keyboard-interactive (PAM): send these prompts (text, echo) to the
    /// client; its answers come back as [`AuthRequest::InfoResponse`].
    InfoRequest {
        name: String,
        instruction: String,
        prompts: Vec<(String, bool)>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AuthRequest {
    None,
    /// Without `signature`, a query; with it, the monitor verifies the
    /// signature itself over the session id it saw at the first signing.
    PublicKey {
        algorithm: String,
        blob: Vec<u8>,
        signature: Option<Vec<u8>>,
    },
    Password(Zeroizing<String>),
    KeyboardInteractive,
    /// The client's answers to the last [`AuthVerdict::InfoRequest`].
    InfoResponse(Vec<Zeroizing<String>>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FromKex {
    /// Sign `data` (an exchange hash) with the host key `key` using `alg`.
    Sign {
        key: Vec<u8>,
        alg: String,
        data: Vec<u8>,
    },
    /// Judge a user-auth request.
    Auth { user: String, request: AuthRequest },
    /// After an accepted auth: the exported connection, to be handed to
    /// the session worker with the socket.
    Authenticated { state: Vec<u8> },
    /// The new connection asks to resume a session. `leftover` holds the
    /// bytes read after the request; the worker has sent everything it had
    /// to send (its version line and KEXINIT).
    Reconnect {
        request: Box<ressh_proto::ReconnectRequest>,
        leftover: Vec<u8>,
    },
    /// One log line (at most [`MAX_LOG_LEN`] bytes, no newline): the worker
    /// has no descriptor on the log. The monitor writes it under the
    /// worker's name and pid and the peer it saw, with control characters
    /// escaped, as far as its rate limit allows.
    Log(String),
}

/// The authenticated user, as the monitor resolved it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// AllowTcpForwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Forwarding {
    All,
    Local,
    Remote,
    None,
}

/// What the session worker may do, merged from the configuration (after
/// Match) and the authorized_keys options of the key used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionPolicy {
    /// ForceCommand or command= (the former wins).
    pub force_command: Option<String>,
    pub permit_pty: bool,
    pub forwarding: Forwarding,
    /// direct-tcpip destinations: PermitOpen and the key's permitopen=,
    /// both of which must allow a destination.
    pub permit_open: Permits,
    /// tcpip-forward listen addresses: PermitListen and the key's
    /// permitlisten=, both of which must allow an address.
    pub permit_listen: Permits,
    /// GatewayPorts: remote forwards may bind non-loopback addresses.
    pub gateway_ports: bool,
    /// AllowStreamLocalForwarding, DisableForwarding and the key's or
    /// certificate's port forwarding permission: which Unix-domain socket
    /// forwards (direct-streamlocal, streamlocal-forward) are granted.
    /// direct-streamlocal paths must also pass `permit_open`, as in sshd.
    pub stream_local: Forwarding,
    /// StreamLocalBindMask: the umask a streamlocal-forward socket is
    /// created under.
    pub stream_local_bind_mask: u32,
    /// StreamLocalBindUnlink: remove an existing file at the path first.
    pub stream_local_bind_unlink: bool,
    /// auth-agent-req@openssh.com is granted: AllowAgentForwarding and no
    /// no-agent-forwarding (or restrict) on the key or certificate.
    pub agent_forwarding: bool,
    /// x11-req is granted (X11Forwarding, and no no-x11-forwarding on the
    /// key or certificate): how.
    pub x11: Option<X11Policy>,
    /// AcceptEnv patterns.
    pub accept_env: Vec<String>,
    /// environment= from authorized_keys (already filtered by PermitUserEnvironment).
    pub key_environment: Vec<(String, String)>,
    /// SetEnv of sshd_config (first value of a name only): over the
    /// client's, the key's and PAM's variables.
    pub set_env: Vec<(String, String)>,
    /// Subsystem name → command.
    pub subsystems: Vec<(String, String)>,
    pub client_alive_interval_secs: u64,
    pub client_alive_count_max: u32,
    pub max_sessions: u32,
    /// DetachTimeout: how long a session whose transport broke waits for a
    /// reconnect (0: it ends at once, as without resilience).
    pub detach_timeout_secs: u64,
    /// ChannelTimeout: (channel type pattern, seconds), first match wins.
    pub channel_timeouts: Vec<(String, u64)>,
    /// UnusedConnectionTimeout in seconds.
    pub unused_connection_timeout_secs: Option<u64>,
    /// ExposeAuthInfo: the text of the file SSH_USER_AUTH names, a line per
    /// method the user authenticated with (`publickey TYPE BASE64`,
    /// `password`, `keyboard-interactive`), as sshd writes it.
    pub auth_info: Option<String>,
}

/// X11DisplayOffset, X11UseLocalhost and XAuthLocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct X11Policy {
    pub display_offset: u32,
    pub use_localhost: bool,
    pub xauth_location: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionStart {
    /// The exported connection from the kex worker.
    pub state: Vec<u8>,
    /// Public host key blobs (rekeys are signed by the monitor).
    pub host_keys: Vec<Vec<u8>>,
    /// Host certificate blobs, offered again on rekeys.
    pub host_certs: Vec<Vec<u8>>,
    pub user: UserInfo,
    pub peer_addr: String,
    pub peer_port: u16,
    pub local_addr: String,
    pub local_port: u16,
    pub policy: SessionPolicy,
    /// Variables from PAM (pam_getenvlist after pam_open_session), added to
    /// every child's environment.
    pub pam_env: Vec<(String, String)>,
    /// Shown on interactive logins (a shell on a pty) unless ~/.hushlogin
    /// exists: PAM's session messages, "Last login: ..." (PrintLastLog)
    /// and /etc/motd (PrintMotd).
    pub login_message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToSession {
    /// Sent once, with the client's socket attached.
    Start(Box<SessionStart>),
    Signature(Result<Vec<u8>, String>),
    /// The user has too many detached sessions and this is the oldest: end
    /// it as if its detach timeout had passed (only while detached).
    Terminate,
    /// Phase 1 of a reconnect: validate (Connection::accept_reconnect) and
    /// answer with [`FromSession::ReconnectVerdict`] naming the same `id`
    /// (the broker's route). Nothing changes yet. Several may be in flight.
    Reconnect {
        id: u64,
        request: Box<ressh_proto::ReconnectRequest>,
    },
    /// Phase 2, only after a positive verdict, with the new socket attached:
    /// bytes already read from it, and the client's new address. The worker
    /// sends the reply, waits for the key confirmation and commits, or
    /// aborts (the session stays as it was).
    Transport {
        id: u64,
        leftover: Vec<u8>,
        peer_addr: String,
        peer_port: u16,
    },
    /// After a positive verdict: the monitor refuses reconnect `id` (the
    /// new address's policy, judged only once the request's MAC proved it
    /// genuine, or the verdict came too late). The worker drops the attempt.
    Refused {
        id: u64,
    },
    /// The answer to [`FromSession::ProveHostKeys`]: one signature per key,
    /// in order, or why not.
    HostKeyProofs(Result<Vec<Vec<u8>>, String>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FromSession {
    /// A rekey's exchange hash to sign: once per key exchange.
    Sign {
        key: Vec<u8>,
        alg: String,
        data: Vec<u8>,
    },
    /// A key exchange completed, or a reconnect abandoned the one that
    /// ran: the next one may be signed.
    KexDone,
    /// The resume tokens this session answers to now (after start and after
    /// every reconnect).
    Tokens(Vec<Vec<u8>>),
    /// The answer to [`ToSession::Reconnect`] `id`: Err((code, description)).
    ReconnectVerdict {
        id: u64,
        result: Result<(), (u32, String)>,
    },
    /// The transport broke without DISCONNECT: the session waits.
    Detached,
    /// A reconnect committed: the session runs on the transport the
    /// monitor handed over last (whose address the monitor knows itself).
    Attached,
    /// A login shell or command started on the pty `tty` (`/dev/pts/N`)
    /// as process `pid`: the monitor records the login (utmp, wtmp,
    /// lastlog) as sshd does for pty sessions.
    LoginStarted { tty: String, pid: i32 },
    /// The process on `tty` ended: the monitor records the logout.
    LoginEnded { tty: String },
    /// One log line, as [`FromKex::Log`]; the monitor names the user and
    /// the peer address itself.
    Log(String),
    /// The client asks the server to prove it holds these host keys
    /// (`hostkeys-prove-00@openssh.com`, OpenSSH's UpdateHostKeys): the
    /// monitor signs, for each blob that is one of its host keys, the fixed
    /// statement OpenSSH defines over this connection's session id, and
    /// answers with [`ToSession::HostKeyProofs`].
    ProveHostKeys(Vec<Vec<u8>>),
}

/// The version of the monitor ↔ broker link, sent first in
/// [`ToBroker::Hello`]: monitors that outlive an upgrade of resshd are
/// refused clearly, never misparsed. Bump it with any change to
/// [`ToBroker`] or [`FromBroker`].
pub const BROKER_VERSION: u32 = 3;

/// Monitor → broker (resshd): lifecycle of a connection, so the broker
/// keeps its table of live sessions (MaxStartups counts connections that
/// have not authenticated; resilient reconnects are routed through it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToBroker {
    Authenticated {
        user: String,
    },
    /// The session answers to these resume tokens (replacing earlier ones).
    Tokens(Vec<Vec<u8>>),
    /// The session lost its transport; the user may keep at most
    /// `max_per_user` sessions detached for longer than `grace_secs`
    /// (MaxDetachedSessions, DetachGraceTime).
    Detached {
        max_per_user: u32,
        grace_secs: u64,
    },
    Attached,
    /// A new connection's monitor asks to route a reconnect request.
    Route {
        request: Box<ressh_proto::ReconnectRequest>,
        peer_addr: String,
        peer_port: u16,
    },
    /// The owning monitor's verdict on a routed request (`id` from
    /// [`FromBroker::Validate`]).
    Verdict {
        id: u64,
        result: Result<(), (u32, String)>,
    },
    /// The new connection's monitor hands over the socket (attached) after a
    /// positive verdict.
    Handover {
        leftover: Vec<u8>,
        peer_addr: String,
        peer_port: u16,
    },
    /// The first message on every link (a variant added last, so that an
    /// older monitor's first message never decodes as it).
    Hello {
        version: u32,
    },
}

/// Broker (resshd) → monitor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FromBroker {
    /// To the owning monitor: validate this request for the client at the
    /// given address; answer with [`ToBroker::Verdict`].
    Validate {
        id: u64,
        request: Box<ressh_proto::ReconnectRequest>,
        peer_addr: String,
        peer_port: u16,
    },
    /// To the new connection's monitor: the owner's verdict.
    RouteResult(Result<(), (u32, String)>),
    /// To the owning monitor: its session is the oldest detached one of a
    /// user over MaxDetachedSessions: end it.
    Terminate,
    /// To the owning monitor: the new socket (attached) for request `id`.
    Transport {
        id: u64,
        leftover: Vec<u8>,
        peer_addr: String,
        peer_port: u16,
    },
}
