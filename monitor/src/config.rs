//! resshd's configuration: `sshd_config(5)` syntax and semantics, with
//! Debian's OpenSSH 9.2 as the reference.
//!
//! # Syntax
//!
//! One `Keyword arguments...` per line (or `Keyword=arguments`); keywords
//! are case-insensitive; `#` starts a comment at the start of a line or of
//! an argument; arguments may be quoted with `"` or `'`. For single-valued
//! keywords the **first** value obtained wins, across `Include`d files and
//! command-line `-o` options (which come first, so they win). `Port`,
//! `ListenAddress`, `HostKey`, `AcceptEnv`, `AllowUsers`, `DenyUsers`,
//! `AllowGroups`, `DenyGroups` and `Subsystem` (first definition per name
//! wins) accumulate.
//!
//! `Include` takes paths with globs (`*`, `?`, `[...]`), relative ones
//! being relative to the main file's directory (`/etc/ressh` for the
//! installed daemon); a path matching nothing is silently skipped, as in
//! sshd. Includes nest at most 16 deep and at most 256 files are read. An
//! `Include` inside a `Match` block contributes to that block; a `Match`
//! inside such an included file only narrows it.
//!
//! `Match` criteria: `All`, `User`, `Group`, `Host`, `Address`,
//! `LocalAddress`, `LocalPort` (and `RDomain`, accepted, never matching),
//! with the pattern lists of [`ressh_compat::pattern`]. Only the keywords sshd 9.2 allows
//! in a `Match` block may appear in one, except after `Match All`, which
//! sshd treats as "back to the global section". A criterion whose value the
//! [`MatchContext`] lacks (the user before authentication) does not match.
//! When resolving, values from matching blocks override the global ones
//! (the first matching block's value wins), as in sshd.
//!
//! Limits on hostile input: lines of at most 64 KiB, files of at most
//! 4 MiB, 16 MiB read in all, at most 100 errors reported.
//!
//! # Keywords
//!
//! Every keyword sshd 9.2 knows is accepted, and falls in one of four
//! classes. Anything else is `file:line: Bad configuration option: X`.
//!
//! **Implemented** (a typed [`Settings`] field, sshd's default unless noted;
//! "M" = allowed in `Match`):
//!
//! | keyword | field | notes |
//! |---|---|---|
//! | Port | `ports` | default 22 |
//! | ListenAddress | `listen_addresses` | `host`, `host:port`, `[v6]:port`, bare v6; `rdomain` refused |
//! | AddressFamily | `address_family` | any, inet, inet6 |
//! | HostKey (HostDSAKey) | `host_keys` | default /etc/ressh/ssh_host_{rsa,ecdsa,ed25519}_key |
//! | PidFile | `pid_file` | default /run/resshd.pid; `none` |
//! | LoginGraceTime | `login_grace_time` | 120 s |
//! | PermitRootLogin (M) | `permit_root_login` | prohibit-password |
//! | SyslogFacility | `syslog_facility` | AUTH |
//! | LogLevel (M) | `log_level` | INFO |
//! | PubkeyAuthentication (M; alias DSAAuthentication) | `pubkey_authentication` | yes |
//! | PubkeyAuthOptions (M) | `pubkey_auth_options` | none; touch-required, verify-required (security keys) |
//! | PubkeyAcceptedAlgorithms (M; PubkeyAcceptedKeyTypes) | `pubkey_accepted_algorithms` | `+ - ^` against [`user_key_algs`] (with the FIDO sk- and the certificate algorithms) |
//! | HostKeyAlgorithms | `host_key_algorithms` | `+ - ^` against [`host_key_algs`] (certificate algorithms first) |
//! | HostCertificate | `host_certificates` | none; accumulate |
//! | TrustedUserCAKeys (M) | `trusted_user_ca_keys` | none |
//! | AuthorizedPrincipalsFile (M) | `authorized_principals_file` | none; tokens kept as for AuthorizedKeysFile |
//! | CASignatureAlgorithms (M) | `ca_signature_algorithms` | `+ - ^` against [`ca_signature_algs`] |
//! | Ciphers / MACs / KexAlgorithms | `ciphers`, `macs`, `kex_algorithms` | against `ressh_proto`'s registries |
//! | PasswordAuthentication (M) | `password_authentication` | yes (without PAM password auth is off anyway) |
//! | KbdInteractiveAuthentication (M; ChallengeResponse-, SkeyAuthentication) | `kbd_interactive_authentication` | yes |
//! | PermitEmptyPasswords (M) | `permit_empty_passwords` | no |
//! | AuthenticationMethods (M) | `authentication_methods` | any |
//! | MaxAuthTries (M), MaxSessions (M) | `max_auth_tries`, `max_sessions` | 6, 10 |
//! | AuthorizedKeysFile (M) | `authorized_keys_files` | .ssh/authorized_keys .ssh/authorized_keys2; tokens kept, see [`crate::authkeys::expand_authorized_keys_path`] |
//! | AuthorizedKeysCommand (M), AuthorizedKeysCommandUser (M) | `authorized_keys_command`, `authorized_keys_command_user` | none; run by the monitor, bounded, see [`crate::keys_command`]; the command without its user is refused globally, as sshd |
//! | AuthorizedPrincipalsCommand (M), AuthorizedPrincipalsCommandUser (M) | `authorized_principals_command`, `authorized_principals_command_user` | none; as the keys command, see [`crate::keys_command`] |
//! | RevokedKeys (M) | `revoked_keys` | none; a plain key list or a KRL, see [`crate::revoked`] |
//! | RequiredRSASize (M) | `required_rsa_size` | 1024 (`ressh_proto` refuses < 2048 regardless) |
//! | Banner (M) | `banner` | none |
//! | AllowUsers / DenyUsers / AllowGroups / DenyGroups (M) | `allow_users` ... | accumulate; a Match block's list replaces the global one |
//! | StrictModes | `strict_modes` | yes |
//! | PermitUserEnvironment | `permit_user_environment` | no; yes; or an allow pattern list |
//! | PermitTTY (M), ForceCommand (M) | `permit_tty`, `force_command` | yes, none |
//! | ChrootDirectory (M) | `chroot_directory` | none; `%%`, `%h`, `%u`, `%U` expanded at login, see [`crate::policy::chroot_dir`] |
//! | AcceptEnv (M), SetEnv (M) | `accept_env`, `set_env` | |
//! | Subsystem | `subsystems` | none by default; first definition per name wins (9.2 refuses a repeat; we warn) |
//! | AllowTcpForwarding (M), AllowStreamLocalForwarding (M) | ... | yes/all, no, local, remote |
//! | AllowAgentForwarding (M), DisableForwarding (M) | ... | yes, no; see [`Settings::allows_local_tcp_forwarding`] etc. |
//! | GatewayPorts (M) | `gateway_ports` | no, yes, clientspecified |
//! | X11Forwarding (M), X11DisplayOffset (M), X11UseLocalhost (M), XAuthLocation | `x11_forwarding`, ... | no, 10, yes, /usr/bin/xauth |
//! | PermitOpen (M), PermitListen (M) | `permit_open`, `permit_listen` | any, none, `host:port` (`*` port) |
//! | StreamLocalBindMask (M), StreamLocalBindUnlink (M) | ... | 0177, no |
//! | ClientAliveInterval (M), ClientAliveCountMax (M) | ... | 0, 3 |
//! | RekeyLimit (M) | `rekey_limit`, `rekey_interval` | `default none` |
//! | ChannelTimeout (M), UnusedConnectionTimeout (M) | ... | none |
//! | MaxStartups, PerSourceMaxStartups, PerSourceNetBlockSize | ... | 10:30:100, none, 32:128 |
//! | VersionAddendum | `version_addendum` | none |
//! | UsePAM | `use_pam` | no; with yes: password and keyboard-interactive authentication, account and session management through PAM service `resshd` (see `pam`) |
//! | PrintMotd, PrintLastLog | `print_motd`, `print_last_log` | yes, yes: shown on interactive logins (a shell on a pty) unless ~/.hushlogin exists |
//! | TCPKeepAlive (KeepAlive) | `tcp_keep_alive` | yes: SO_KEEPALIVE on each accepted connection, the kernel's timers (`net.ipv4.tcp_keepalive_*`) decide when a silent peer is dead, as with sshd |
//! | Compression | `compression` | yes (= delayed): `zlib@openssh.com` offered after `none`, as sshd; no: `none` only |
//! | Include, Match | structure | |
//!
//! resshd's own keywords:
//!
//! | keyword | field | default | meaning |
//! |---|---|---|---|
//! | PrivilegeSeparationUser | `privilege_separation_user` | resshd | the unprivileged user of `resshd-kex` |
//! | PrivilegeSeparationDirectory | `privilege_separation_directory` | /run/resshd/empty | its empty chroot |
//! | BrokerSocket | `broker_socket` | /run/resshd/broker.sock | where monitors reach resshd; survives restarts of resshd |
//! | ResshdKexPath, ResshdSessionPath | `resshd_kex_path`, `resshd_session_path` | next to resshd, else /usr/libexec/ressh | the workers' programs (as OpenSSH's SshdAuthPath, SshdSessionPath) |
//! | ProxyProtocolFrom | `proxy_protocol_from` | none; load balancers (addresses or CIDR networks) whose connections must start with a PROXY protocol v1/v2 header, see [`crate::proxy`] |
//! | FleetKey, FleetNodes, FleetListenAddress, FleetDrain | `fleet_key`, `fleet_nodes`, `fleet_listen_address`, `fleet_drain` | none, none, none, no; a fleet of nodes behind a load balancer, see [`crate::fleet`] |
//! | DetachTimeout (M) | `detach_timeout` | 1h | how long a detached (connection lost) session waits for a reconnect; 0: not at all |
//! | MaxDetachedSessions (M) | `max_detached_sessions` | 10 | sessions per user kept detached longer than DetachGraceTime |
//! | DetachGraceTime (M) | `detach_grace_time` | 10m | how long a detached session does not count against MaxDetachedSessions |
//! | ResilienceBufferSize (M) | `resilience_buffer_size` | 48M | per-session cap on unacknowledged data (64K..4G, K/M/G suffixes) |
//! | ChannelWindowMax (M) | `channel_window_max` | 32M | the most a channel's receive window grows to with the path's bandwidth-delay product (2M, the initial window: no growth, ..1G) |
//!
//! **Ignored with a warning** (`file:line: unsupported option X ignored`):
//! the feature is absent and its absence only makes resshd more
//! restrictive, or the keyword tunes something resshd does its own way.
//! Values are still syntax-checked like sshd does.
//! IPQoS,
//! ModuliFile, PermitUserRC, IgnoreRhosts, IgnoreUserKnownHosts,
//! HostbasedUsesNameFromPacketOnly, HostbasedAcceptedAlgorithms
//! (-KeyTypes), KerberosOrLocalPasswd, KerberosTicketCleanup,
//! KerberosGetAFSToken, KerberosTgtPassing, AFSTokenPassing,
//! GSSAPICleanupCredentials, GSSAPIStrictAcceptorCheck,
//! GSSAPIStoreCredentialsOnRekey, GSSAPIKexAlgorithms, GSSUseSessionCCache,
//! GSSAPIUseSessionCredCache, LogVerbose, PubkeyAuthOptions (no FIDO keys
//! are accepted at all), SecurityKeyProvider, FingerprintHash,
//! DebianBanner.
//!
//! **Ignored at one value, refused at any other** (an error naming the
//! keyword and the reason): ignoring these would weaken security or
//! silently turn the server into something other than configured.
//!
//! | keyword | ignored at | why refused otherwise |
//! |---|---|---|
//! | UseDNS | no | host-name patterns (`DenyUsers u@*.example`, `Match Host`) would silently stop matching |
//! | HostbasedAuthentication, KerberosAuthentication, GSSAPIAuthentication, GSSAPIKeyExchange | no | users relying on them would be locked out without a hint |
//! | PermitTunnel | no | no tun/tap forwarding |
//!
//! **Refused**: RDomain (as sshd on Linux).
//!
//! **Deprecated** (`file:line: Deprecated option X`, as sshd): Protocol,
//! PAMAuthenticationViaKbdInt, ServerKeyBits, KeyRegenerationInterval,
//! RhostsAuthentication, RhostsRSAAuthentication, RSAAuthentication,
//! CheckMail, PermitBlacklistedKeys, UseLogin, VerifyReverseMapping,
//! ReverseMappingCheck, AuthorizedKeysFile2, UsePrivilegeSeparation.
//!
//! `internal-sftp` (in `Subsystem` or `ForceCommand`) is served in
//! process by resshd-session's child for the channel, as the user (inside
//! ChrootDirectory if one applies), with sftp-server(8)'s options; no
//! binary is executed. Without UsePAM, password
//! and keyboard-interactive authentication stay off whatever
//! PasswordAuthentication says, and locked (`!` password) and expired
//! accounts are refused as sshd refuses them without PAM.
//! `Match Host` matches the peer's address (resshd never resolves names,
//! as sshd with UseDNS no).
//!
//! Deliberate differences from sshd 9.2: MaxStartups,
//! PerSourceNetBlockSize and StreamLocalBindMask follow first-wins (sshd
//! takes the last); `PerSourceNetBlockSize N` leaves the IPv6 size at 128;
//! a repeated Subsystem is a warning, not an error; trailing garbage in
//! MaxStartups is refused; `Include ~/...` is tilde-expanded.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod keywords;
mod parser;
mod raw;
mod values;

#[cfg(test)]
mod tests;

pub use keywords::{ca_signature_algs, host_key_algs, user_key_algs};

use parser::{Criterion, Parsed};
use raw::Raw;

/// Where the installed daemon's configuration lives.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/ressh";
/// The installed daemon's main configuration file.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/ressh/resshd_config";

/// One or more configuration errors, each `file:line: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    messages: Vec<String>,
}

impl ConfigError {
    pub(crate) fn new(messages: Vec<String>) -> ConfigError {
        ConfigError { messages }
    }

    pub(crate) fn one(message: impl Into<String>) -> ConfigError {
        ConfigError {
            messages: vec![message.into()],
        }
    }

    /// Every error, in file order.
    pub fn messages(&self) -> &[String] {
        &self.messages
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.messages.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

/// What a connection looks like to `Match` (sshd's `connection_info`).
/// A criterion whose value is None here does not match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchContext {
    pub user: Option<String>,
    /// The user's groups (primary and supplementary), by name; only
    /// consulted when `user` is set.
    pub groups: Vec<String>,
    /// The peer's host name (with UseDNS no, as always in resshd: the
    /// peer's address as text).
    pub host: Option<String>,
    pub addr: Option<IpAddr>,
    pub local_addr: Option<IpAddr>,
    pub local_port: Option<u16>,
    /// The routing domain the connection arrived in: on Linux the VRF
    /// device the listening socket is bound to (SO_BINDTODEVICE), as sshd
    /// reads it; None outside one.
    pub rdomain: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddressFamily {
    Any,
    Inet,
    Inet6,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PermitRootLogin {
    Yes,
    /// `prohibit-password` / `without-password`.
    ProhibitPassword,
    ForcedCommandsOnly,
    No,
}

/// AllowTcpForwarding / AllowStreamLocalForwarding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Forwarding {
    /// `yes` or `all`.
    Yes,
    No,
    Local,
    Remote,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewayPorts {
    No,
    Yes,
    ClientSpecified,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LogLevel {
    Quiet,
    Fatal,
    Error,
    Info,
    Verbose,
    /// `DEBUG` or `DEBUG1`.
    Debug1,
    Debug2,
    Debug3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyslogFacility {
    Daemon,
    User,
    Auth,
    AuthPriv,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

/// PubkeyAuthOptions: requirements on every security key's signature, on
/// top of its authorized_keys line's `verify-required` (and over its
/// `no-touch-required`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PubkeyAuthOptions {
    pub touch_required: bool,
    pub verify_required: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PermitUserEnvironment {
    No,
    Yes,
    /// Read ~/.ssh/environment, keeping only variables whose names match
    /// this pattern list.
    Allow(String),
}

/// A `host:port` of PermitOpen / PermitListen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPort {
    /// Host name or address (brackets removed), `*` for any host.
    pub host: String,
    /// None for `*` (any port).
    pub port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PermitList {
    Any,
    None,
    List(Vec<HostPort>),
}

/// One address to listen on (hosts are IP literals or names resolved by
/// [`Settings::listen_socket_addrs`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenAddress {
    pub host: String,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subsystem {
    pub name: String,
    /// The command and its arguments, unquoted and joined by single spaces
    /// (as sshd stores it; run through the user's shell, or
    /// `internal-sftp`).
    pub command: String,
}

/// MaxStartups `start:rate:full`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaxStartups {
    pub start: u32,
    pub rate: u32,
    pub full: u32,
}

/// One ChannelTimeout `type=interval`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelTimeout {
    /// A pattern on channel types (`session`, `direct-tcpip`, `global`...).
    pub channel_type: String,
    pub timeout: Duration,
}

/// The effective settings for the daemon (global) or one connection
/// (after `Match`). Every field has sshd's default unless documented.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    // Global only.
    pub ports: Vec<u16>,
    pub address_family: AddressFamily,
    /// Expanded: one entry per address and port, the wildcard addresses
    /// (`::`, `0.0.0.0`) when none is configured.
    pub listen_addresses: Vec<ListenAddress>,
    pub host_keys: Vec<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub login_grace_time: Duration,
    pub syslog_facility: SyslogFacility,
    pub ciphers: Vec<String>,
    pub macs: Vec<String>,
    pub kex_algorithms: Vec<String>,
    pub host_key_algorithms: Vec<String>,
    pub strict_modes: bool,
    pub permit_user_environment: PermitUserEnvironment,
    pub subsystems: Vec<Subsystem>,
    pub max_startups: MaxStartups,
    /// None: no per-source limit.
    pub per_source_max_startups: Option<u32>,
    pub per_source_net_block_size_v4: u8,
    pub per_source_net_block_size_v6: u8,
    pub version_addendum: Option<String>,
    pub privilege_separation_user: String,
    pub privilege_separation_directory: PathBuf,
    pub broker_socket: PathBuf,
    /// HostKeyAgent: the ssh-agent socket holding the private halves of
    /// host keys whose HostKey files hold only public keys.
    pub host_key_agent: Option<PathBuf>,
    /// ProxyProtocolFrom: the load balancers (a CIDR list) whose
    /// connections start with a PROXY protocol header naming the client.
    pub proxy_protocol_from: Option<String>,
    /// FleetKey, FleetNodes, FleetListenAddress: this node's key, the
    /// fleet's node list and where this node accepts links from the others
    /// (see [`crate::fleet`]). A fleet needs all three.
    pub fleet_key: Option<PathBuf>,
    pub fleet_nodes: Option<PathBuf>,
    pub fleet_listen_address: Option<std::net::SocketAddr>,
    /// FleetDrain: this node takes no new connections (its SSH listeners
    /// are closed, so the balancer sends them elsewhere); its sessions'
    /// reconnects reach it through the other nodes' links.
    pub fleet_drain: bool,
    /// Where the workers are; None: next to resshd, else in
    /// /usr/libexec/ressh.
    pub resshd_kex_path: Option<PathBuf>,
    pub resshd_session_path: Option<PathBuf>,
    /// UsePAM: password and keyboard-interactive authentication through
    /// PAM, PAM account and session management (service `resshd`).
    pub use_pam: bool,
    /// PrintMotd: /etc/motd on interactive logins.
    pub print_motd: bool,
    /// PrintLastLog: "Last login: ..." on interactive logins.
    pub print_last_log: bool,
    /// TCPKeepAlive: SO_KEEPALIVE on every accepted connection, with the
    /// kernel's timers (as sshd).
    pub tcp_keep_alive: bool,
    /// Compression: offer `zlib@openssh.com` (after authentication, the
    /// only kind sshd has; `yes` and `delayed` mean it).
    pub compression: bool,

    // Allowed in Match.
    pub permit_root_login: PermitRootLogin,
    pub log_level: LogLevel,
    pub pubkey_authentication: bool,
    pub pubkey_auth_options: PubkeyAuthOptions,
    pub pubkey_accepted_algorithms: Vec<String>,
    /// TrustedUserCAKeys: CA keys trusted to sign user certificates for
    /// any user (whose name the certificate must list, unless
    /// AuthorizedPrincipalsFile says otherwise).
    pub trusted_user_ca_keys: Option<PathBuf>,
    /// AuthorizedPrincipalsFile, unexpanded (`%h`, `%u`, `%U`, `%%`).
    pub authorized_principals_file: Option<String>,
    /// CASignatureAlgorithms: what a certificate's CA may have signed it
    /// with.
    pub ca_signature_algorithms: Vec<String>,
    /// HostCertificate: certificates of the host keys (global).
    pub host_certificates: Vec<PathBuf>,
    pub password_authentication: bool,
    pub kbd_interactive_authentication: bool,
    pub permit_empty_passwords: bool,
    /// None: `any`. Otherwise each list is a sequence of methods
    /// (`publickey`, `password`, `keyboard-interactive[:sub]`...), all of
    /// which must succeed; any one list suffices.
    pub authentication_methods: Option<Vec<Vec<String>>>,
    pub max_auth_tries: u32,
    pub max_sessions: u32,
    pub required_rsa_size: u32,
    /// Unexpanded (`%h`, `%u`, `%U`, `%%`, see
    /// [`crate::authkeys::expand_authorized_keys_path`]); empty
    /// for `none`.
    pub authorized_keys_files: Vec<String>,
    /// The command line, unsplit and unexpanded (see
    /// [`crate::keys_command`]); None for `none`.
    pub authorized_keys_command: Option<String>,
    /// Unexpanded (`%u`).
    pub authorized_keys_command_user: Option<String>,
    /// As the keys command, for the principals a certificate may name (see
    /// [`crate::keys_command`]).
    pub authorized_principals_command: Option<String>,
    pub authorized_principals_command_user: Option<String>,
    /// A plain list of public keys or a KRL (see [`crate::revoked`]).
    pub revoked_keys: Option<PathBuf>,
    pub banner: Option<PathBuf>,
    pub allow_users: Vec<String>,
    pub deny_users: Vec<String>,
    pub allow_groups: Vec<String>,
    pub deny_groups: Vec<String>,
    pub permit_tty: bool,
    pub force_command: Option<String>,
    /// The session's root, `%` tokens unexpanded; None for `none`.
    pub chroot_directory: Option<String>,
    pub accept_env: Vec<String>,
    /// `NAME=value`, names unique.
    pub set_env: Vec<String>,
    pub allow_tcp_forwarding: Forwarding,
    pub allow_stream_local_forwarding: Forwarding,
    pub allow_agent_forwarding: bool,
    pub x11_forwarding: bool,
    pub x11_display_offset: u32,
    pub x11_use_localhost: bool,
    pub xauth_location: String,
    pub disable_forwarding: bool,
    pub gateway_ports: GatewayPorts,
    pub permit_open: PermitList,
    pub permit_listen: PermitList,
    pub stream_local_bind_mask: u32,
    pub stream_local_bind_unlink: bool,
    pub client_alive_interval: Duration,
    pub client_alive_count_max: u32,
    /// Bytes before rekeying; 0: the cipher's default.
    pub rekey_limit: u64,
    /// Zero: no time-based rekeying.
    pub rekey_interval: Duration,
    pub channel_timeouts: Vec<ChannelTimeout>,
    pub unused_connection_timeout: Option<Duration>,
    /// ExposeAuthInfo: the methods (and keys) the user authenticated with,
    /// in a file named by SSH_USER_AUTH.
    pub expose_auth_info: bool,
    pub detach_timeout: Duration,
    pub max_detached_sessions: u32,
    /// Detached for less than this, a session does not count against
    /// MaxDetachedSessions (a network blip cuts all of a user's
    /// connections at once).
    pub detach_grace_time: Duration,
    pub resilience_buffer_size: u64,
    pub channel_window_max: u64,
}

impl Settings {
    /// Whether local (`direct-tcpip`) TCP forwarding is allowed
    /// (AllowTcpForwarding yes/local and no DisableForwarding).
    pub fn allows_local_tcp_forwarding(&self) -> bool {
        !self.disable_forwarding
            && matches!(
                self.allow_tcp_forwarding,
                Forwarding::Yes | Forwarding::Local
            )
    }

    /// Whether remote (`tcpip-forward`) TCP forwarding is allowed.
    pub fn allows_remote_tcp_forwarding(&self) -> bool {
        !self.disable_forwarding
            && matches!(
                self.allow_tcp_forwarding,
                Forwarding::Yes | Forwarding::Remote
            )
    }

    /// Whether local Unix-domain socket forwarding is allowed.
    pub fn allows_local_stream_local_forwarding(&self) -> bool {
        !self.disable_forwarding
            && matches!(
                self.allow_stream_local_forwarding,
                Forwarding::Yes | Forwarding::Local
            )
    }

    /// Whether remote Unix-domain socket forwarding is allowed.
    pub fn allows_remote_stream_local_forwarding(&self) -> bool {
        !self.disable_forwarding
            && matches!(
                self.allow_stream_local_forwarding,
                Forwarding::Yes | Forwarding::Remote
            )
    }

    /// Whether X11 forwarding is allowed.
    pub fn allows_x11_forwarding(&self) -> bool {
        !self.disable_forwarding && self.x11_forwarding
    }

    /// Whether agent forwarding is allowed.
    pub fn allows_agent_forwarding(&self) -> bool {
        !self.disable_forwarding && self.allow_agent_forwarding
    }

    /// The listen addresses as socket addresses (host names resolved,
    /// restricted to the address family).
    pub fn listen_socket_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        let mut out = Vec::new();
        for la in &self.listen_addresses {
            let family_ok = |a: &SocketAddr| match self.address_family {
                AddressFamily::Any => true,
                AddressFamily::Inet => a.is_ipv4(),
                AddressFamily::Inet6 => a.is_ipv6(),
            };
            let found: Vec<SocketAddr> = match listen_literal(&la.host, la.port) {
                Some(a) => vec![a],
                None => (la.host.as_str(), la.port)
                    .to_socket_addrs()
                    .map_err(|e| ConfigError::one(format!("bad addr or host: {} ({e})", la.host)))?
                    .collect(),
            };
            let found: Vec<SocketAddr> = found.into_iter().filter(family_ok).collect();
            if found.is_empty() {
                return Err(ConfigError::one(format!(
                    "bad addr or host: {} (no address of the configured family)",
                    la.host
                )));
            }
            for a in found {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        Ok(out)
    }

    /// The settings in `sshd -T` style: lowercase keyword and value, one
    /// per line, in sshd's order, resshd's own keywords last.
    pub fn dump(&self) -> String {
        let mut o = String::new();
        let mut line = |k: &str, v: &str| {
            o.push_str(k);
            o.push(' ');
            o.push_str(v);
            o.push('\n');
        };
        let yn = |b: bool| if b { "yes" } else { "no" };
        let path_or_none = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or("none".to_string(), |p| p.display().to_string())
        };
        for p in &self.ports {
            line("port", &p.to_string());
        }
        line(
            "addressfamily",
            match self.address_family {
                AddressFamily::Any => "any",
                AddressFamily::Inet => "inet",
                AddressFamily::Inet6 => "inet6",
            },
        );
        for la in &self.listen_addresses {
            let text = match listen_literal(&la.host, la.port) {
                Some(SocketAddr::V6(a)) if la.host.contains('%') => {
                    format!("[{}]:{}", la.host, a.port())
                }
                Some(SocketAddr::V6(a)) => format!("[{}]:{}", a.ip(), a.port()),
                Some(SocketAddr::V4(a)) => a.to_string(),
                None => format!("{}:{}", la.host, la.port),
            };
            line("listenaddress", &text);
        }
        line(
            "logingracetime",
            &self.login_grace_time.as_secs().to_string(),
        );
        line("maxauthtries", &self.max_auth_tries.to_string());
        line("maxsessions", &self.max_sessions.to_string());
        line(
            "clientaliveinterval",
            &self.client_alive_interval.as_secs().to_string(),
        );
        line(
            "clientalivecountmax",
            &self.client_alive_count_max.to_string(),
        );
        line("requiredrsasize", &self.required_rsa_size.to_string());
        line(
            "streamlocalbindmask",
            &format!("0{:o}", self.stream_local_bind_mask),
        );
        line("exposeauthinfo", yn(self.expose_auth_info));
        line(
            "unusedconnectiontimeout",
            &self
                .unused_connection_timeout
                .map_or("none".to_string(), |d| d.as_secs().to_string()),
        );
        line(
            "permitrootlogin",
            match self.permit_root_login {
                PermitRootLogin::Yes => "yes",
                PermitRootLogin::ProhibitPassword => "without-password",
                PermitRootLogin::ForcedCommandsOnly => "forced-commands-only",
                PermitRootLogin::No => "no",
            },
        );
        line("usepam", yn(self.use_pam));
        line("printmotd", yn(self.print_motd));
        line("printlastlog", yn(self.print_last_log));
        line("tcpkeepalive", yn(self.tcp_keep_alive));
        line("compression", yn(self.compression));
        line("pubkeyauthentication", yn(self.pubkey_authentication));
        let pao = self.pubkey_auth_options;
        line(
            "pubkeyauthoptions",
            match (pao.touch_required, pao.verify_required) {
                (false, false) => "none",
                (true, false) => "touch-required",
                (false, true) => "verify-required",
                (true, true) => "touch-required verify-required",
            },
        );
        line("passwordauthentication", yn(self.password_authentication));
        line(
            "kbdinteractiveauthentication",
            yn(self.kbd_interactive_authentication),
        );
        line("permittty", yn(self.permit_tty));
        line("strictmodes", yn(self.strict_modes));
        line("permitemptypasswords", yn(self.permit_empty_passwords));
        line(
            "gatewayports",
            match self.gateway_ports {
                GatewayPorts::No => "no",
                GatewayPorts::Yes => "yes",
                GatewayPorts::ClientSpecified => "clientspecified",
            },
        );
        let fwd = |f: Forwarding| match f {
            Forwarding::Yes => "yes",
            Forwarding::No => "no",
            Forwarding::Local => "local",
            Forwarding::Remote => "remote",
        };
        line("allowtcpforwarding", fwd(self.allow_tcp_forwarding));
        line("allowagentforwarding", yn(self.allow_agent_forwarding));
        line("x11forwarding", yn(self.x11_forwarding));
        line("x11displayoffset", &self.x11_display_offset.to_string());
        line("x11uselocalhost", yn(self.x11_use_localhost));
        line("xauthlocation", &self.xauth_location);
        line("disableforwarding", yn(self.disable_forwarding));
        line(
            "allowstreamlocalforwarding",
            fwd(self.allow_stream_local_forwarding),
        );
        line("streamlocalbindunlink", yn(self.stream_local_bind_unlink));
        line("pidfile", &path_or_none(&self.pid_file));
        line("ciphers", &self.ciphers.join(","));
        line("macs", &self.macs.join(","));
        line("banner", &path_or_none(&self.banner));
        line(
            "forcecommand",
            self.force_command.as_deref().unwrap_or("none"),
        );
        line(
            "chrootdirectory",
            self.chroot_directory.as_deref().unwrap_or("none"),
        );
        line(
            "versionaddendum",
            self.version_addendum
                .as_deref()
                .filter(|s| !s.is_empty())
                .unwrap_or("none"),
        );
        line("kexalgorithms", &self.kex_algorithms.join(","));
        line("hostkeyalgorithms", &self.host_key_algorithms.join(","));
        line(
            "pubkeyacceptedalgorithms",
            &self.pubkey_accepted_algorithms.join(","),
        );
        line(
            "trustedusercakeys",
            &path_or_none(&self.trusted_user_ca_keys),
        );
        line(
            "authorizedprincipalsfile",
            self.authorized_principals_file.as_deref().unwrap_or("none"),
        );
        line(
            "casignaturealgorithms",
            &self.ca_signature_algorithms.join(","),
        );
        for c in &self.host_certificates {
            line("hostcertificate", &c.display().to_string());
        }
        line("loglevel", self.log_level.name());
        line("syslogfacility", self.syslog_facility.name());
        if self.authorized_keys_files.is_empty() {
            line("authorizedkeysfile", "none");
        } else {
            line("authorizedkeysfile", &self.authorized_keys_files.join(" "));
        }
        line(
            "authorizedkeyscommand",
            self.authorized_keys_command.as_deref().unwrap_or("none"),
        );
        line(
            "authorizedkeyscommanduser",
            self.authorized_keys_command_user
                .as_deref()
                .unwrap_or("none"),
        );
        line(
            "authorizedprincipalscommand",
            self.authorized_principals_command
                .as_deref()
                .unwrap_or("none"),
        );
        line(
            "authorizedprincipalscommanduser",
            self.authorized_principals_command_user
                .as_deref()
                .unwrap_or("none"),
        );
        line("revokedkeys", &path_or_none(&self.revoked_keys));
        for k in &self.host_keys {
            line("hostkey", &k.display().to_string());
        }
        for (k, list) in [
            ("allowusers", &self.allow_users),
            ("denyusers", &self.deny_users),
            ("allowgroups", &self.allow_groups),
            ("denygroups", &self.deny_groups),
            ("acceptenv", &self.accept_env),
            ("setenv", &self.set_env),
        ] {
            for v in list {
                line(k, v);
            }
        }
        match &self.authentication_methods {
            None => line("authenticationmethods", "any"),
            Some(lists) => {
                let s: Vec<String> = lists.iter().map(|l| l.join(",")).collect();
                line("authenticationmethods", &s.join(" "));
            }
        }
        if !self.channel_timeouts.is_empty() {
            let s: Vec<String> = self
                .channel_timeouts
                .iter()
                .map(|c| format!("{}={}", c.channel_type, fmt_time(c.timeout)))
                .collect();
            line("channeltimeout", &s.join(" "));
        }
        for s in &self.subsystems {
            line("subsystem", &format!("{} {}", s.name, s.command));
        }
        let m = self.max_startups;
        line("maxstartups", &format!("{}:{}:{}", m.start, m.rate, m.full));
        line(
            "persourcemaxstartups",
            &self
                .per_source_max_startups
                .map_or("none".to_string(), |n| n.to_string()),
        );
        line(
            "persourcenetblocksize",
            &format!(
                "{}:{}",
                self.per_source_net_block_size_v4, self.per_source_net_block_size_v6
            ),
        );
        line("permittunnel", "no");
        line(
            "rekeylimit",
            &format!("{} {}", self.rekey_limit, self.rekey_interval.as_secs()),
        );
        for (k, p) in [
            ("permitopen", &self.permit_open),
            ("permitlisten", &self.permit_listen),
        ] {
            let v = match p {
                PermitList::Any => "any".to_string(),
                PermitList::None => "none".to_string(),
                PermitList::List(l) => l
                    .iter()
                    .map(HostPort::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            line(k, &v);
        }
        line(
            "permituserenvironment",
            match &self.permit_user_environment {
                PermitUserEnvironment::No => "no",
                PermitUserEnvironment::Yes => "yes",
                PermitUserEnvironment::Allow(p) => p,
            },
        );
        line("privilegeseparationuser", &self.privilege_separation_user);
        line(
            "privilegeseparationdirectory",
            &self.privilege_separation_directory.display().to_string(),
        );
        line("brokersocket", &self.broker_socket.display().to_string());
        line("hostkeyagent", &path_or_none(&self.host_key_agent));
        line(
            "proxyprotocolfrom",
            self.proxy_protocol_from.as_deref().unwrap_or("none"),
        );
        line("fleetkey", &path_or_none(&self.fleet_key));
        line("fleetnodes", &path_or_none(&self.fleet_nodes));
        line("fleetdrain", yn(self.fleet_drain));
        line(
            "fleetlistenaddress",
            &self
                .fleet_listen_address
                .map_or("none".to_string(), |a| a.to_string()),
        );
        for (k, v) in [
            ("resshdkexpath", &self.resshd_kex_path),
            ("resshdsessionpath", &self.resshd_session_path),
        ] {
            if let Some(p) = v {
                line(k, &p.display().to_string());
            }
        }
        line("detachtimeout", &self.detach_timeout.as_secs().to_string());
        line(
            "maxdetachedsessions",
            &self.max_detached_sessions.to_string(),
        );
        line(
            "detachgracetime",
            &self.detach_grace_time.as_secs().to_string(),
        );
        line(
            "resiliencebuffersize",
            &self.resilience_buffer_size.to_string(),
        );
        line("channelwindowmax", &self.channel_window_max.to_string());
        o
    }
}

/// A duration in sshd's time format, largest units first (`1h30m`).
fn fmt_time(d: Duration) -> String {
    let mut left = d.as_secs();
    if left == 0 {
        return "0".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("w", 604800),
        ("d", 86400),
        ("h", 3600),
        ("m", 60),
        ("s", 1),
    ] {
        if left >= size {
            out.push_str(&format!("{}{unit}", left / size));
            left %= size;
        }
    }
    out
}

/// An IP literal listen address (an IPv6 zone resolved to its index).
fn listen_literal(host: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    let (addr, zone) = host.split_once('%')?;
    let ip: std::net::Ipv6Addr = addr.parse().ok()?;
    let scope = zone.parse::<u32>().ok().or_else(|| interface_index(zone))?;
    Some(SocketAddr::V6(std::net::SocketAddrV6::new(
        ip, port, 0, scope,
    )))
}

/// A network interface's index, from sysfs.
fn interface_index(name: &str) -> Option<u32> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', '.']) {
        return None;
    }
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:", self.host)?;
        } else {
            write!(f, "{}:", self.host)?;
        }
        match self.port {
            Some(p) => write!(f, "{p}"),
            None => f.write_str("*"),
        }
    }
}

impl LogLevel {
    /// sshd's name for the level.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Quiet => "QUIET",
            LogLevel::Fatal => "FATAL",
            LogLevel::Error => "ERROR",
            LogLevel::Info => "INFO",
            LogLevel::Verbose => "VERBOSE",
            LogLevel::Debug1 => "DEBUG",
            LogLevel::Debug2 => "DEBUG2",
            LogLevel::Debug3 => "DEBUG3",
        }
    }
}

impl SyslogFacility {
    /// sshd's name for the facility.
    pub fn name(self) -> &'static str {
        match self {
            SyslogFacility::Daemon => "DAEMON",
            SyslogFacility::User => "USER",
            SyslogFacility::Auth => "AUTH",
            SyslogFacility::AuthPriv => "AUTHPRIV",
            SyslogFacility::Local0 => "LOCAL0",
            SyslogFacility::Local1 => "LOCAL1",
            SyslogFacility::Local2 => "LOCAL2",
            SyslogFacility::Local3 => "LOCAL3",
            SyslogFacility::Local4 => "LOCAL4",
            SyslogFacility::Local5 => "LOCAL5",
            SyslogFacility::Local6 => "LOCAL6",
            SyslogFacility::Local7 => "LOCAL7",
        }
    }

    /// The syslog(3) facility code.
    pub fn code(self) -> libc::c_int {
        match self {
            SyslogFacility::Daemon => libc::LOG_DAEMON,
            SyslogFacility::User => libc::LOG_USER,
            SyslogFacility::Auth => libc::LOG_AUTH,
            SyslogFacility::AuthPriv => libc::LOG_AUTHPRIV,
            SyslogFacility::Local0 => libc::LOG_LOCAL0,
            SyslogFacility::Local1 => libc::LOG_LOCAL1,
            SyslogFacility::Local2 => libc::LOG_LOCAL2,
            SyslogFacility::Local3 => libc::LOG_LOCAL3,
            SyslogFacility::Local4 => libc::LOG_LOCAL4,
            SyslogFacility::Local5 => libc::LOG_LOCAL5,
            SyslogFacility::Local6 => libc::LOG_LOCAL6,
            SyslogFacility::Local7 => libc::LOG_LOCAL7,
        }
    }
}

/// A parsed configuration: the global section and the `Match` blocks.
#[derive(Clone, Debug)]
pub struct Config {
    parsed: Parsed,
    global_raw: Raw,
    global: Settings,
}

impl Config {
    /// Reads and parses `path` (and what it includes; relative includes
    /// are relative to `path`'s directory). `overrides` are `-o` options,
    /// `Keyword=value` or `Keyword value`, applied before the file.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config, ConfigError> {
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path.display().to_string();
        let text =
            parser::read_config_file(path).map_err(|e| ConfigError::one(format!("{name}: {e}")))?;
        Config::parse_str(&text, &name, &base, overrides)
    }

    /// Parses `text` as the main configuration file called `name`;
    /// relative `Include` paths are relative to `base_dir`.
    pub fn parse_str(
        text: &str,
        name: &str,
        base_dir: &Path,
        overrides: &[String],
    ) -> Result<Config, ConfigError> {
        let parsed = parser::parse(text, name, base_dir, overrides)?;
        let global_raw = parsed.global_raw();
        let global = global_raw.clone().finish();
        // As sshd, for the global section only.
        if global.authorized_keys_command.is_some() && global.authorized_keys_command_user.is_none()
        {
            return Err(ConfigError::one(
                "AuthorizedKeysCommand set without AuthorizedKeysCommandUser",
            ));
        }
        if global.authorized_principals_command.is_some()
            && global.authorized_principals_command_user.is_none()
        {
            return Err(ConfigError::one(
                "AuthorizedPrincipalsCommand set without AuthorizedPrincipalsCommandUser",
            ));
        }
        Ok(Config {
            parsed,
            global_raw,
            global,
        })
    }

    /// Warnings (ignored and deprecated options), `file:line: message`.
    pub fn warnings(&self) -> &[String] {
        &self.parsed.warnings
    }

    /// The global settings, no `Match` applied.
    pub fn global(&self) -> Settings {
        self.global.clone()
    }

    /// The settings for a connection: the global ones overridden by those
    /// of the `Match` blocks that match `ctx` (first matching value wins).
    pub fn resolve(&self, ctx: &MatchContext) -> Settings {
        let m = self.parsed.match_raw(ctx);
        let mut raw = self.global_raw.clone();
        raw.overlay_match(&m);
        raw.finish()
    }

    /// Whether some `Match` block tests the criterion `name` (`user`,
    /// `group`, `host`, `address`, `localaddress`, `localport`), i.e.
    /// whether settings may change once it is known.
    pub fn matches_on(&self, name: &str) -> bool {
        self.parsed.blocks.iter().any(|b| {
            b.criteria.iter().any(|c| {
                let n = match c {
                    Criterion::All => "all",
                    Criterion::User(_) => "user",
                    Criterion::Group(_) => "group",
                    Criterion::Host(_) => "host",
                    Criterion::Address(_) => "address",
                    Criterion::LocalAddress(_) => "localaddress",
                    Criterion::LocalPort(_) => "localport",
                    Criterion::RDomain(_) => "rdomain",
                };
                n.eq_ignore_ascii_case(name)
            })
        })
    }
}
