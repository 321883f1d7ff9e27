//! Settings as obtained from directives, before defaults: each field unset
//! until its first value (first wins), lists accumulating. The global pass
//! and each connection's Match pass fill one [`Raw`] each; the Match one is
//! laid over the global one ([`Raw::overlay_match`], sshd's
//! `copy_set_server_options`) and [`Raw::finish`] fills in the defaults.

use std::path::PathBuf;
use std::time::Duration;

use super::keywords::{ca_signature_algs, host_key_algs, user_key_algs};
use super::{
    AddressFamily, ChannelTimeout, Forwarding, GatewayPorts, ListenAddress, LogLevel, MaxStartups,
    PermitList, PermitRootLogin, PermitUserEnvironment, PubkeyAuthOptions, Settings, Subsystem,
    SyslogFacility,
};

/// A parsed, validated directive value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    Port(u16),
    ListenAddress {
        host: String,
        port: Option<u16>,
    },
    AddressFamily(AddressFamily),
    /// None for `HostKey none` (counts as configured, loads nothing).
    HostKey(Option<PathBuf>),
    PidFile(Option<PathBuf>),
    LoginGraceTime(Duration),
    PermitRootLogin(PermitRootLogin),
    SyslogFacility(SyslogFacility),
    LogLevel(LogLevel),
    PubkeyAuthentication(bool),
    PubkeyAuthOptions(PubkeyAuthOptions),
    PubkeyAcceptedAlgorithms(Vec<String>),
    HostKeyAlgorithms(Vec<String>),
    PasswordAuthentication(bool),
    KbdInteractiveAuthentication(bool),
    PermitEmptyPasswords(bool),
    PermitTty(bool),
    StrictModes(bool),
    PermitUserEnvironment(PermitUserEnvironment),
    AllowTcpForwarding(Forwarding),
    AllowStreamLocalForwarding(Forwarding),
    AllowAgentForwarding(bool),
    X11Forwarding(bool),
    X11DisplayOffset(u32),
    X11UseLocalhost(bool),
    XAuthLocation(String),
    DisableForwarding(bool),
    GatewayPorts(GatewayPorts),
    PermitOpen(PermitList),
    PermitListen(PermitList),
    AllowUsers(Vec<String>),
    DenyUsers(Vec<String>),
    AllowGroups(Vec<String>),
    DenyGroups(Vec<String>),
    Ciphers(Vec<String>),
    Macs(Vec<String>),
    KexAlgorithms(Vec<String>),
    Subsystem(Subsystem),
    MaxStartups(MaxStartups),
    PerSourceMaxStartups(Option<u32>),
    PerSourceNetBlockSize(u8, u8),
    MaxAuthTries(u32),
    MaxSessions(u32),
    Banner(Option<PathBuf>),
    ClientAliveInterval(Duration),
    ClientAliveCountMax(u32),
    AuthorizedKeysFile(Vec<String>),
    /// None for `none`.
    AuthorizedKeysCommand(Option<String>),
    AuthorizedKeysCommandUser(String),
    AuthorizedPrincipalsCommand(Option<String>),
    AuthorizedPrincipalsCommandUser(String),
    /// None for `none`.
    RevokedKeys(Option<PathBuf>),
    AcceptEnv(Vec<String>),
    SetEnv(Vec<String>),
    /// None for `none` (clears a global ForceCommand from a Match block).
    ForceCommand(Option<String>),
    /// None for `none`.
    ChrootDirectory(Option<String>),
    AuthenticationMethods(Option<Vec<Vec<String>>>),
    StreamLocalBindMask(u32),
    StreamLocalBindUnlink(bool),
    RekeyLimit(u64, Option<Duration>),
    RequiredRsaSize(u32),
    ChannelTimeout(Vec<ChannelTimeout>),
    /// None for `none`.
    TrustedUserCaKeys(Option<PathBuf>),
    /// None for `none`; tokens kept.
    AuthorizedPrincipalsFile(Option<String>),
    CaSignatureAlgorithms(Vec<String>),
    HostCertificate(PathBuf),
    UnusedConnectionTimeout(Option<Duration>),
    ExposeAuthInfo(bool),
    VersionAddendum(String),
    PrivilegeSeparationUser(String),
    PrivilegeSeparationDirectory(PathBuf),
    BrokerSocket(PathBuf),
    HostKeyAgent(Option<PathBuf>),
    ProxyProtocolFrom(Option<String>),
    FleetKey(Option<PathBuf>),
    FleetNodes(Option<PathBuf>),
    FleetListenAddress(Option<std::net::SocketAddr>),
    FleetDrain(bool),
    ResshdKexPath(PathBuf),
    ResshdSessionPath(PathBuf),
    DetachTimeout(Duration),
    DetachGraceTime(Duration),
    MaxDetachedSessions(u32),
    ResilienceBufferSize(u64),
    ChannelWindowMax(u64),
    UsePam(bool),
    PrintMotd(bool),
    PrintLastLog(bool),
    TcpKeepAlive(bool),
    Compression(bool),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Raw {
    ports: Vec<u16>,
    listen: Vec<(String, Option<u16>)>,
    address_family: Option<AddressFamily>,
    host_keys: Vec<Option<PathBuf>>,
    pid_file: Option<Option<PathBuf>>,
    login_grace_time: Option<Duration>,
    syslog_facility: Option<SyslogFacility>,
    ciphers: Option<Vec<String>>,
    macs: Option<Vec<String>>,
    kex_algorithms: Option<Vec<String>>,
    host_key_algorithms: Option<Vec<String>>,
    strict_modes: Option<bool>,
    permit_user_environment: Option<PermitUserEnvironment>,
    subsystems: Vec<Subsystem>,
    max_startups: Option<MaxStartups>,
    per_source_max_startups: Option<Option<u32>>,
    per_source_net_block_size: Option<(u8, u8)>,
    version_addendum: Option<String>,
    privilege_separation_user: Option<String>,
    privilege_separation_directory: Option<PathBuf>,
    broker_socket: Option<PathBuf>,
    host_key_agent: Option<Option<PathBuf>>,
    proxy_protocol_from: Option<Option<String>>,
    fleet_key: Option<Option<PathBuf>>,
    fleet_nodes: Option<Option<PathBuf>>,
    fleet_listen_address: Option<Option<std::net::SocketAddr>>,
    fleet_drain: Option<bool>,
    resshd_kex_path: Option<PathBuf>,
    resshd_session_path: Option<PathBuf>,
    use_pam: Option<bool>,
    print_motd: Option<bool>,
    print_last_log: Option<bool>,
    tcp_keep_alive: Option<bool>,
    compression: Option<bool>,

    permit_root_login: Option<PermitRootLogin>,
    log_level: Option<LogLevel>,
    pubkey_authentication: Option<bool>,
    pubkey_auth_options: Option<PubkeyAuthOptions>,
    pubkey_accepted_algorithms: Option<Vec<String>>,
    trusted_user_ca_keys: Option<Option<PathBuf>>,
    authorized_principals_file: Option<Option<String>>,
    ca_signature_algorithms: Option<Vec<String>>,
    host_certificates: Vec<PathBuf>,
    password_authentication: Option<bool>,
    kbd_interactive_authentication: Option<bool>,
    permit_empty_passwords: Option<bool>,
    authentication_methods: Option<Option<Vec<Vec<String>>>>,
    max_auth_tries: Option<u32>,
    max_sessions: Option<u32>,
    required_rsa_size: Option<u32>,
    authorized_keys_files: Option<Vec<String>>,
    authorized_keys_command: Option<Option<String>>,
    authorized_keys_command_user: Option<String>,
    authorized_principals_command: Option<Option<String>>,
    authorized_principals_command_user: Option<String>,
    revoked_keys: Option<Option<PathBuf>>,
    banner: Option<Option<PathBuf>>,
    allow_users: Vec<String>,
    deny_users: Vec<String>,
    allow_groups: Vec<String>,
    deny_groups: Vec<String>,
    permit_tty: Option<bool>,
    force_command: Option<Option<String>>,
    chroot_directory: Option<Option<String>>,
    accept_env: Vec<String>,
    set_env: Option<Vec<String>>,
    allow_tcp_forwarding: Option<Forwarding>,
    allow_stream_local_forwarding: Option<Forwarding>,
    allow_agent_forwarding: Option<bool>,
    x11_forwarding: Option<bool>,
    x11_display_offset: Option<u32>,
    x11_use_localhost: Option<bool>,
    xauth_location: Option<String>,
    disable_forwarding: Option<bool>,
    gateway_ports: Option<GatewayPorts>,
    permit_open: Option<PermitList>,
    permit_listen: Option<PermitList>,
    stream_local_bind_mask: Option<u32>,
    stream_local_bind_unlink: Option<bool>,
    client_alive_interval: Option<Duration>,
    client_alive_count_max: Option<u32>,
    rekey_limit: Option<u64>,
    rekey_interval: Option<Duration>,
    channel_timeouts: Option<Vec<ChannelTimeout>>,
    unused_connection_timeout: Option<Option<Duration>>,
    expose_auth_info: Option<bool>,
    detach_timeout: Option<Duration>,
    detach_grace_time: Option<Duration>,
    max_detached_sessions: Option<u32>,
    resilience_buffer_size: Option<u64>,
    channel_window_max: Option<u64>,
}

/// Sets `slot` unless already set (first value wins).
fn first<T>(slot: &mut Option<T>, v: T) {
    if slot.is_none() {
        *slot = Some(v);
    }
}

/// Copies `src` over `dst` when set.
fn over<T: Clone>(dst: &mut Option<T>, src: &Option<T>) {
    if src.is_some() {
        dst.clone_from(src);
    }
}

/// Replaces `dst` with `src` when `src` is not empty.
fn over_list<T: Clone>(dst: &mut Vec<T>, src: &[T]) {
    if !src.is_empty() {
        *dst = src.to_vec();
    }
}

/// sshd's maximum number of ports.
pub(crate) const MAX_PORTS: usize = 256;

impl Raw {
    /// Applies one directive (first value wins; lists accumulate).
    pub(crate) fn apply(&mut self, v: &Value) {
        match v.clone() {
            Value::Port(p) => {
                if self.ports.len() < MAX_PORTS {
                    self.ports.push(p)
                }
            }
            Value::ListenAddress { host, port } => self.listen.push((host, port)),
            Value::AddressFamily(x) => first(&mut self.address_family, x),
            Value::HostKey(x) => self.host_keys.push(x),
            Value::PidFile(x) => first(&mut self.pid_file, x),
            Value::LoginGraceTime(x) => first(&mut self.login_grace_time, x),
            Value::PermitRootLogin(x) => first(&mut self.permit_root_login, x),
            Value::SyslogFacility(x) => first(&mut self.syslog_facility, x),
            Value::LogLevel(x) => first(&mut self.log_level, x),
            Value::PubkeyAuthentication(x) => first(&mut self.pubkey_authentication, x),
            Value::PubkeyAuthOptions(x) => first(&mut self.pubkey_auth_options, x),
            Value::PubkeyAcceptedAlgorithms(x) => first(&mut self.pubkey_accepted_algorithms, x),
            Value::HostKeyAlgorithms(x) => first(&mut self.host_key_algorithms, x),
            Value::TrustedUserCaKeys(x) => first(&mut self.trusted_user_ca_keys, x),
            Value::AuthorizedPrincipalsFile(x) => first(&mut self.authorized_principals_file, x),
            Value::CaSignatureAlgorithms(x) => first(&mut self.ca_signature_algorithms, x),
            Value::HostCertificate(x) => self.host_certificates.push(x),
            Value::PasswordAuthentication(x) => first(&mut self.password_authentication, x),
            Value::KbdInteractiveAuthentication(x) => {
                first(&mut self.kbd_interactive_authentication, x)
            }
            Value::PermitEmptyPasswords(x) => first(&mut self.permit_empty_passwords, x),
            Value::PermitTty(x) => first(&mut self.permit_tty, x),
            Value::StrictModes(x) => first(&mut self.strict_modes, x),
            Value::PermitUserEnvironment(x) => first(&mut self.permit_user_environment, x),
            Value::AllowTcpForwarding(x) => first(&mut self.allow_tcp_forwarding, x),
            Value::AllowStreamLocalForwarding(x) => {
                first(&mut self.allow_stream_local_forwarding, x)
            }
            Value::AllowAgentForwarding(x) => first(&mut self.allow_agent_forwarding, x),
            Value::X11Forwarding(x) => first(&mut self.x11_forwarding, x),
            Value::X11DisplayOffset(x) => first(&mut self.x11_display_offset, x),
            Value::X11UseLocalhost(x) => first(&mut self.x11_use_localhost, x),
            Value::XAuthLocation(x) => first(&mut self.xauth_location, x),
            Value::DisableForwarding(x) => first(&mut self.disable_forwarding, x),
            Value::GatewayPorts(x) => first(&mut self.gateway_ports, x),
            Value::PermitOpen(x) => first(&mut self.permit_open, x),
            Value::PermitListen(x) => first(&mut self.permit_listen, x),
            Value::AllowUsers(x) => self.allow_users.extend(x),
            Value::DenyUsers(x) => self.deny_users.extend(x),
            Value::AllowGroups(x) => self.allow_groups.extend(x),
            Value::DenyGroups(x) => self.deny_groups.extend(x),
            Value::Ciphers(x) => first(&mut self.ciphers, x),
            Value::Macs(x) => first(&mut self.macs, x),
            Value::KexAlgorithms(x) => first(&mut self.kex_algorithms, x),
            Value::Subsystem(s) => {
                if !self.subsystems.iter().any(|o| o.name == s.name) {
                    self.subsystems.push(s);
                }
            }
            Value::MaxStartups(x) => first(&mut self.max_startups, x),
            Value::PerSourceMaxStartups(x) => first(&mut self.per_source_max_startups, x),
            Value::PerSourceNetBlockSize(a, b) => {
                first(&mut self.per_source_net_block_size, (a, b))
            }
            Value::MaxAuthTries(x) => first(&mut self.max_auth_tries, x),
            Value::MaxSessions(x) => first(&mut self.max_sessions, x),
            Value::Banner(x) => first(&mut self.banner, x),
            Value::ClientAliveInterval(x) => first(&mut self.client_alive_interval, x),
            Value::ClientAliveCountMax(x) => first(&mut self.client_alive_count_max, x),
            Value::AuthorizedKeysFile(x) => first(&mut self.authorized_keys_files, x),
            Value::AuthorizedKeysCommand(x) => first(&mut self.authorized_keys_command, x),
            Value::AuthorizedKeysCommandUser(x) => first(&mut self.authorized_keys_command_user, x),
            Value::AuthorizedPrincipalsCommand(x) => {
                first(&mut self.authorized_principals_command, x)
            }
            Value::AuthorizedPrincipalsCommandUser(x) => {
                first(&mut self.authorized_principals_command_user, x)
            }
            Value::RevokedKeys(x) => first(&mut self.revoked_keys, x),
            Value::AcceptEnv(x) => self.accept_env.extend(x),
            Value::SetEnv(x) => first(&mut self.set_env, x),
            Value::ForceCommand(x) => first(&mut self.force_command, x),
            Value::ChrootDirectory(x) => first(&mut self.chroot_directory, x),
            Value::AuthenticationMethods(x) => first(&mut self.authentication_methods, x),
            Value::StreamLocalBindMask(x) => first(&mut self.stream_local_bind_mask, x),
            Value::StreamLocalBindUnlink(x) => first(&mut self.stream_local_bind_unlink, x),
            Value::RekeyLimit(bytes, interval) => {
                first(&mut self.rekey_limit, bytes);
                if let Some(i) = interval {
                    first(&mut self.rekey_interval, i);
                }
            }
            Value::RequiredRsaSize(x) => first(&mut self.required_rsa_size, x),
            Value::ChannelTimeout(x) => first(&mut self.channel_timeouts, x),
            Value::UnusedConnectionTimeout(x) => first(&mut self.unused_connection_timeout, x),
            Value::ExposeAuthInfo(x) => first(&mut self.expose_auth_info, x),
            Value::VersionAddendum(x) => first(&mut self.version_addendum, x),
            Value::PrivilegeSeparationUser(x) => first(&mut self.privilege_separation_user, x),
            Value::PrivilegeSeparationDirectory(x) => {
                first(&mut self.privilege_separation_directory, x)
            }
            Value::BrokerSocket(x) => first(&mut self.broker_socket, x),
            Value::HostKeyAgent(x) => first(&mut self.host_key_agent, x),
            Value::ProxyProtocolFrom(x) => first(&mut self.proxy_protocol_from, x),
            Value::FleetKey(x) => first(&mut self.fleet_key, x),
            Value::FleetNodes(x) => first(&mut self.fleet_nodes, x),
            Value::FleetListenAddress(x) => first(&mut self.fleet_listen_address, x),
            Value::FleetDrain(x) => first(&mut self.fleet_drain, x),
            Value::ResshdKexPath(x) => first(&mut self.resshd_kex_path, x),
            Value::ResshdSessionPath(x) => first(&mut self.resshd_session_path, x),
            Value::DetachTimeout(x) => first(&mut self.detach_timeout, x),
            Value::DetachGraceTime(x) => first(&mut self.detach_grace_time, x),
            Value::MaxDetachedSessions(x) => first(&mut self.max_detached_sessions, x),
            Value::ResilienceBufferSize(x) => first(&mut self.resilience_buffer_size, x),
            Value::ChannelWindowMax(x) => first(&mut self.channel_window_max, x),
            Value::UsePam(x) => first(&mut self.use_pam, x),
            Value::PrintMotd(x) => first(&mut self.print_motd, x),
            Value::PrintLastLog(x) => first(&mut self.print_last_log, x),
            Value::TcpKeepAlive(x) => first(&mut self.tcp_keep_alive, x),
            Value::Compression(x) => first(&mut self.compression, x),
        }
    }

    /// Lays the values set by matching `Match` blocks over the global ones.
    /// Only keywords allowed in `Match` are copied (global-only ones after
    /// `Match All` were already applied in the global pass).
    pub(crate) fn overlay_match(&mut self, m: &Raw) {
        over(&mut self.permit_root_login, &m.permit_root_login);
        over(&mut self.log_level, &m.log_level);
        over(&mut self.pubkey_authentication, &m.pubkey_authentication);
        over(&mut self.pubkey_auth_options, &m.pubkey_auth_options);
        over(
            &mut self.pubkey_accepted_algorithms,
            &m.pubkey_accepted_algorithms,
        );
        over(&mut self.trusted_user_ca_keys, &m.trusted_user_ca_keys);
        over(
            &mut self.authorized_principals_file,
            &m.authorized_principals_file,
        );
        over(
            &mut self.ca_signature_algorithms,
            &m.ca_signature_algorithms,
        );
        over(
            &mut self.password_authentication,
            &m.password_authentication,
        );
        over(
            &mut self.kbd_interactive_authentication,
            &m.kbd_interactive_authentication,
        );
        over(&mut self.permit_empty_passwords, &m.permit_empty_passwords);
        over(&mut self.authentication_methods, &m.authentication_methods);
        over(&mut self.max_auth_tries, &m.max_auth_tries);
        over(&mut self.max_sessions, &m.max_sessions);
        over(&mut self.required_rsa_size, &m.required_rsa_size);
        over(&mut self.authorized_keys_files, &m.authorized_keys_files);
        over(
            &mut self.authorized_keys_command,
            &m.authorized_keys_command,
        );
        over(
            &mut self.authorized_keys_command_user,
            &m.authorized_keys_command_user,
        );
        over(
            &mut self.authorized_principals_command,
            &m.authorized_principals_command,
        );
        over(
            &mut self.authorized_principals_command_user,
            &m.authorized_principals_command_user,
        );
        over(&mut self.revoked_keys, &m.revoked_keys);
        over(&mut self.banner, &m.banner);
        over_list(&mut self.allow_users, &m.allow_users);
        over_list(&mut self.deny_users, &m.deny_users);
        over_list(&mut self.allow_groups, &m.allow_groups);
        over_list(&mut self.deny_groups, &m.deny_groups);
        over(&mut self.permit_tty, &m.permit_tty);
        over(&mut self.force_command, &m.force_command);
        over(&mut self.chroot_directory, &m.chroot_directory);
        over_list(&mut self.accept_env, &m.accept_env);
        over(&mut self.set_env, &m.set_env);
        over(&mut self.allow_tcp_forwarding, &m.allow_tcp_forwarding);
        over(
            &mut self.allow_stream_local_forwarding,
            &m.allow_stream_local_forwarding,
        );
        over(&mut self.allow_agent_forwarding, &m.allow_agent_forwarding);
        over(&mut self.x11_forwarding, &m.x11_forwarding);
        over(&mut self.x11_display_offset, &m.x11_display_offset);
        over(&mut self.x11_use_localhost, &m.x11_use_localhost);
        over(&mut self.disable_forwarding, &m.disable_forwarding);
        over(&mut self.gateway_ports, &m.gateway_ports);
        over(&mut self.permit_open, &m.permit_open);
        over(&mut self.permit_listen, &m.permit_listen);
        over(&mut self.stream_local_bind_mask, &m.stream_local_bind_mask);
        over(
            &mut self.stream_local_bind_unlink,
            &m.stream_local_bind_unlink,
        );
        over(&mut self.client_alive_interval, &m.client_alive_interval);
        over(&mut self.client_alive_count_max, &m.client_alive_count_max);
        over(&mut self.rekey_limit, &m.rekey_limit);
        over(&mut self.rekey_interval, &m.rekey_interval);
        over(&mut self.channel_timeouts, &m.channel_timeouts);
        over(&mut self.expose_auth_info, &m.expose_auth_info);
        over(
            &mut self.unused_connection_timeout,
            &m.unused_connection_timeout,
        );
        over(&mut self.detach_timeout, &m.detach_timeout);
        over(&mut self.detach_grace_time, &m.detach_grace_time);
        over(&mut self.max_detached_sessions, &m.max_detached_sessions);
        over(&mut self.resilience_buffer_size, &m.resilience_buffer_size);
        over(&mut self.channel_window_max, &m.channel_window_max);
    }

    /// The settings, with sshd's (and resshd's) defaults for what is unset.
    pub(crate) fn finish(self) -> Settings {
        let ports = if self.ports.is_empty() {
            vec![22]
        } else {
            self.ports
        };
        let address_family = self.address_family.unwrap_or(AddressFamily::Any);
        let mut listen_addresses = Vec::new();
        let mut push = |host: &str, port: u16| {
            let la = ListenAddress {
                host: host.to_string(),
                port,
            };
            if !listen_addresses.contains(&la) {
                listen_addresses.push(la);
            }
        };
        if self.listen.is_empty() {
            for &p in &ports {
                if address_family != AddressFamily::Inet {
                    push("::", p);
                }
                if address_family != AddressFamily::Inet6 {
                    push("0.0.0.0", p);
                }
            }
        } else {
            for (host, port) in &self.listen {
                match port {
                    Some(p) => push(host, *p),
                    None => ports.iter().for_each(|&p| push(host, p)),
                }
            }
        }
        let host_keys = if self.host_keys.is_empty() {
            ["rsa", "ecdsa", "ed25519"]
                .iter()
                .map(|t| PathBuf::from(format!("{}/ssh_host_{t}_key", super::DEFAULT_CONFIG_DIR)))
                .collect()
        } else {
            self.host_keys.into_iter().flatten().collect()
        };
        let names = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cipher_names: Vec<&str> = ressh_proto::cipher::CIPHERS
            .iter()
            .map(|c| c.name)
            .collect();
        let mac_names: Vec<&str> = ressh_proto::cipher::MACS.iter().map(|m| m.name).collect();
        let (nb4, nb6) = self.per_source_net_block_size.unwrap_or((32, 128));
        let authorized_keys_files = match self.authorized_keys_files {
            None => vec![
                ".ssh/authorized_keys".to_string(),
                ".ssh/authorized_keys2".to_string(),
            ],
            Some(l) if l.len() == 1 && l[0].eq_ignore_ascii_case("none") => Vec::new(),
            Some(l) => l,
        };
        Settings {
            ports,
            address_family,
            listen_addresses,
            host_keys,
            pid_file: self
                .pid_file
                .unwrap_or_else(|| Some(PathBuf::from("/run/resshd.pid"))),
            login_grace_time: self.login_grace_time.unwrap_or(Duration::from_secs(120)),
            syslog_facility: self.syslog_facility.unwrap_or(SyslogFacility::Auth),
            ciphers: self.ciphers.unwrap_or_else(|| names(&cipher_names)),
            macs: self.macs.unwrap_or_else(|| names(&mac_names)),
            kex_algorithms: self
                .kex_algorithms
                .unwrap_or_else(|| names(ressh_proto::kex::KEX_ALGS)),
            host_key_algorithms: self
                .host_key_algorithms
                .unwrap_or_else(|| names(&host_key_algs())),
            strict_modes: self.strict_modes.unwrap_or(true),
            permit_user_environment: self
                .permit_user_environment
                .unwrap_or(PermitUserEnvironment::No),
            subsystems: self.subsystems,
            max_startups: self.max_startups.unwrap_or(MaxStartups {
                start: 10,
                rate: 30,
                full: 100,
            }),
            per_source_max_startups: self.per_source_max_startups.unwrap_or(None),
            per_source_net_block_size_v4: nb4,
            per_source_net_block_size_v6: nb6,
            version_addendum: self.version_addendum.filter(|s| !s.is_empty()),
            privilege_separation_user: self
                .privilege_separation_user
                .unwrap_or_else(|| "resshd".to_string()),
            privilege_separation_directory: self
                .privilege_separation_directory
                .unwrap_or_else(|| PathBuf::from("/run/resshd/empty")),
            broker_socket: self
                .broker_socket
                .unwrap_or_else(|| PathBuf::from("/run/resshd/broker.sock")),
            host_key_agent: self.host_key_agent.unwrap_or(None),
            proxy_protocol_from: self.proxy_protocol_from.unwrap_or(None),
            fleet_key: self.fleet_key.unwrap_or(None),
            fleet_nodes: self.fleet_nodes.unwrap_or(None),
            fleet_listen_address: self.fleet_listen_address.unwrap_or(None),
            fleet_drain: self.fleet_drain.unwrap_or(false),
            resshd_kex_path: self.resshd_kex_path,
            resshd_session_path: self.resshd_session_path,
            use_pam: self.use_pam.unwrap_or(false),
            print_motd: self.print_motd.unwrap_or(true),
            print_last_log: self.print_last_log.unwrap_or(true),
            tcp_keep_alive: self.tcp_keep_alive.unwrap_or(true),
            compression: self.compression.unwrap_or(true),

            permit_root_login: self
                .permit_root_login
                .unwrap_or(PermitRootLogin::ProhibitPassword),
            log_level: self.log_level.unwrap_or(LogLevel::Info),
            pubkey_authentication: self.pubkey_authentication.unwrap_or(true),
            pubkey_auth_options: self.pubkey_auth_options.unwrap_or_default(),
            pubkey_accepted_algorithms: self
                .pubkey_accepted_algorithms
                .unwrap_or_else(|| names(&user_key_algs())),
            trusted_user_ca_keys: self.trusted_user_ca_keys.unwrap_or(None),
            authorized_principals_file: self.authorized_principals_file.unwrap_or(None),
            ca_signature_algorithms: self
                .ca_signature_algorithms
                .unwrap_or_else(|| names(&ca_signature_algs())),
            host_certificates: self.host_certificates,
            password_authentication: self.password_authentication.unwrap_or(true),
            kbd_interactive_authentication: self.kbd_interactive_authentication.unwrap_or(true),
            permit_empty_passwords: self.permit_empty_passwords.unwrap_or(false),
            authentication_methods: self.authentication_methods.unwrap_or(None),
            max_auth_tries: self.max_auth_tries.unwrap_or(6),
            max_sessions: self.max_sessions.unwrap_or(10),
            required_rsa_size: self.required_rsa_size.unwrap_or(1024),
            authorized_keys_files,
            authorized_keys_command: self.authorized_keys_command.unwrap_or(None),
            authorized_keys_command_user: self.authorized_keys_command_user,
            authorized_principals_command: self.authorized_principals_command.unwrap_or(None),
            authorized_principals_command_user: self.authorized_principals_command_user,
            revoked_keys: self.revoked_keys.unwrap_or(None),
            banner: self.banner.unwrap_or(None),
            allow_users: self.allow_users,
            deny_users: self.deny_users,
            allow_groups: self.allow_groups,
            deny_groups: self.deny_groups,
            permit_tty: self.permit_tty.unwrap_or(true),
            force_command: self.force_command.unwrap_or(None),
            chroot_directory: self.chroot_directory.unwrap_or(None),
            accept_env: self.accept_env,
            set_env: self.set_env.unwrap_or_default(),
            allow_tcp_forwarding: self.allow_tcp_forwarding.unwrap_or(Forwarding::Yes),
            allow_stream_local_forwarding: self
                .allow_stream_local_forwarding
                .unwrap_or(Forwarding::Yes),
            allow_agent_forwarding: self.allow_agent_forwarding.unwrap_or(true),
            x11_forwarding: self.x11_forwarding.unwrap_or(false),
            x11_display_offset: self.x11_display_offset.unwrap_or(10),
            x11_use_localhost: self.x11_use_localhost.unwrap_or(true),
            xauth_location: self
                .xauth_location
                .unwrap_or_else(|| "/usr/bin/xauth".into()),
            disable_forwarding: self.disable_forwarding.unwrap_or(false),
            gateway_ports: self.gateway_ports.unwrap_or(GatewayPorts::No),
            permit_open: self.permit_open.unwrap_or(PermitList::Any),
            permit_listen: self.permit_listen.unwrap_or(PermitList::Any),
            stream_local_bind_mask: self.stream_local_bind_mask.unwrap_or(0o177),
            stream_local_bind_unlink: self.stream_local_bind_unlink.unwrap_or(false),
            client_alive_interval: self.client_alive_interval.unwrap_or(Duration::ZERO),
            client_alive_count_max: self.client_alive_count_max.unwrap_or(3),
            rekey_limit: self.rekey_limit.unwrap_or(0),
            rekey_interval: self.rekey_interval.unwrap_or(Duration::ZERO),
            channel_timeouts: self.channel_timeouts.unwrap_or_default(),
            unused_connection_timeout: self.unused_connection_timeout.unwrap_or(None),
            expose_auth_info: self.expose_auth_info.unwrap_or(false),
            detach_timeout: self.detach_timeout.unwrap_or(Duration::from_secs(3600)),
            detach_grace_time: self.detach_grace_time.unwrap_or(Duration::from_secs(600)),
            max_detached_sessions: self.max_detached_sessions.unwrap_or(10),
            resilience_buffer_size: self.resilience_buffer_size.unwrap_or(48 << 20),
            channel_window_max: self.channel_window_max.unwrap_or(32 << 20),
        }
    }
}
