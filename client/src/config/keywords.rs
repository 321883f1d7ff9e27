//! The keyword table of ssh_config as ressh reads it, like resshd's for
//! sshd_config: every keyword ssh knows is implemented (parsed at its line
//! into a typed field of [`Raw`]), accepted because ignoring it is harmless,
//! or accepted only at its safe value. A keyword not in the table is an
//! error (as in ssh) unless `IgnoreUnknown` lists it.

use ressh_compat::misc::convtime;
use ressh_compat::pattern;

use super::{parse_escape_char, ControlMaster, Family, RequestTty, SessionType, Strict};
use crate::args;
use crate::log::Level;
use ressh_proto::keys::RSA_MIN_BITS;

/// The implemented keywords.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    HostName,
    Port,
    User,
    IdentityFile,
    CertificateFile,
    IdentitiesOnly,
    IdentityAgent,
    ForwardAgent,
    ForwardX11,
    ForwardX11Trusted,
    ForwardX11Timeout,
    XAuthLocation,
    ProxyCommand,
    ProxyJump,
    ServerAliveInterval,
    ServerAliveCountMax,
    ConnectTimeout,
    ConnectionAttempts,
    StrictHostKeyChecking,
    UserKnownHostsFile,
    GlobalKnownHostsFile,
    HashKnownHosts,
    HostKeyAlias,
    SetEnv,
    SendEnv,
    BatchMode,
    LogLevel,
    RequestTty,
    AddressFamily,
    EscapeChar,
    Ciphers,
    Macs,
    KexAlgorithms,
    HostKeyAlgorithms,
    PubkeyAcceptedAlgorithms,
    CaSignatureAlgorithms,
    PreferredAuthentications,
    PubkeyAuthentication,
    PasswordAuthentication,
    KbdInteractiveAuthentication,
    NumberOfPasswordPrompts,
    ExitOnForwardFailure,
    ClearAllForwardings,
    GatewayPorts,
    LocalForward,
    RemoteForward,
    DynamicForward,
    RemoteCommand,
    SessionType,
    StdinNull,
    Compression,
    ForkAfterAuthentication,
    ResilienceSuspectFloor,
    ChannelWindowMax,
    ResilienceSuspectCap,
    Resilience,
    ControlMaster,
    ControlPath,
    ControlPersist,
    IgnoreUnknown,
    RequiredRsaSize,
}

/// How a keyword is handled.
#[derive(Clone, Copy)]
enum Kind {
    /// Implemented: parsed into its field of [`Raw`].
    Set(Key),
    /// `Host`, `Match`, `Include`: read by the file reader, never set.
    Block,
    /// Accepted and ignored with a debug line: not doing it is harmless.
    Ignored,
    /// Only these values (lowercase), which are what ressh does anyway,
    /// are accepted; any other is refused.
    Only(&'static [&'static str]),
    /// These values (lowercase) are refused: ressh cannot do them and their
    /// silent absence would weaken security. Any other is ignored, with a
    /// debug line.
    RefusedAt(&'static [&'static str]),
}

const NO: &[&str] = &["no", "false"];
const NONE: &[&str] = &["none"];

/// Every keyword of Debian 12's ssh (readconf.c's table with Debian's
/// additions, deprecated and unsupported ones included), and a few of
/// other OpenSSH releases and ports, lowercase. docs/ssh_config.md is this
/// table in words (a test holds the two together).
const KEYWORDS: &[(&str, Kind)] = {
    use Key::*;
    use Kind::*;
    &[
        ("addkeystoagent", Ignored),
        ("addressfamily", Set(AddressFamily)),
        ("afstokenpassing", Ignored),
        ("batchmode", Set(BatchMode)),
        ("bindaddress", Only(NONE)),
        ("bindinterface", Only(NONE)),
        ("canonicaldomains", Ignored),
        ("canonicalizefallbacklocal", Ignored),
        ("canonicalizehostname", Ignored),
        ("canonicalizemaxdots", Ignored),
        ("canonicalizepermittedcnames", Ignored),
        ("casignaturealgorithms", Set(CaSignatureAlgorithms)),
        ("certificatefile", Set(CertificateFile)),
        (
            "challengeresponseauthentication",
            Set(KbdInteractiveAuthentication),
        ),
        ("channeltimeout", Ignored),
        ("channelwindowmax", Set(ChannelWindowMax)),
        ("checkhostip", Ignored),
        ("cipher", Ignored),
        ("ciphers", Set(Ciphers)),
        ("clearallforwardings", Set(ClearAllForwardings)),
        ("compression", Set(Compression)),
        ("compressionlevel", Ignored),
        ("connectionattempts", Set(ConnectionAttempts)),
        ("connecttimeout", Set(ConnectTimeout)),
        ("controlmaster", Set(ControlMaster)),
        ("controlpath", Set(ControlPath)),
        ("controlpersist", Set(ControlPersist)),
        ("dsaauthentication", Set(PubkeyAuthentication)),
        ("dynamicforward", Set(DynamicForward)),
        ("enableescapecommandline", Ignored),
        ("enablesshkeysign", Only(NO)),
        ("escapechar", Set(EscapeChar)),
        ("exitonforwardfailure", Set(ExitOnForwardFailure)),
        ("fallbacktorsh", Ignored),
        ("fingerprinthash", Ignored),
        ("forkafterauthentication", Set(ForkAfterAuthentication)),
        ("forwardagent", Set(ForwardAgent)),
        ("forwardx11", Set(ForwardX11)),
        ("forwardx11timeout", Set(ForwardX11Timeout)),
        ("forwardx11trusted", Set(ForwardX11Trusted)),
        ("gatewayports", Set(GatewayPorts)),
        ("globalknownhostsfile", Set(GlobalKnownHostsFile)),
        ("globalknownhostsfile2", Ignored),
        ("gssapiauthentication", Ignored),
        ("gssapiclientidentity", Ignored),
        ("gssapidelegatecredentials", Ignored),
        ("gssapikeyexchange", Ignored),
        ("gssapikexalgorithms", Ignored),
        ("gssapirenewalforcesrekey", Ignored),
        ("gssapiserveridentity", Ignored),
        ("gssapitrustdns", Ignored),
        ("hashknownhosts", Set(HashKnownHosts)),
        ("host", Block),
        ("hostbasedacceptedalgorithms", Ignored),
        ("hostbasedauthentication", Only(NO)),
        ("hostbasedkeytypes", Ignored),
        ("hostkeyalgorithms", Set(HostKeyAlgorithms)),
        ("hostkeyalias", Set(HostKeyAlias)),
        ("hostname", Set(HostName)),
        ("identitiesonly", Set(IdentitiesOnly)),
        ("identityagent", Set(IdentityAgent)),
        ("identityfile", Set(IdentityFile)),
        ("identityfile2", Set(IdentityFile)),
        ("ignoreunknown", Set(IgnoreUnknown)),
        ("include", Block),
        ("ipqos", Ignored),
        (
            "kbdinteractiveauthentication",
            Set(KbdInteractiveAuthentication),
        ),
        ("kbdinteractivedevices", Ignored),
        ("keepalive", Ignored),
        ("kerberosauthentication", Ignored),
        ("kerberostgtpassing", Ignored),
        ("kexalgorithms", Set(KexAlgorithms)),
        ("knownhostscommand", Only(NONE)),
        ("localcommand", Ignored),
        ("localforward", Set(LocalForward)),
        ("loglevel", Set(LogLevel)),
        ("logverbose", Ignored),
        ("macs", Set(Macs)),
        ("match", Block),
        ("nohostauthenticationforlocalhost", Ignored),
        ("numberofpasswordprompts", Set(NumberOfPasswordPrompts)),
        ("obscurekeystroketiming", Ignored),
        ("passwordauthentication", Set(PasswordAuthentication)),
        ("permitlocalcommand", Only(NO)),
        ("permitremoteopen", Ignored),
        ("pkcs11provider", Only(NONE)),
        ("port", Set(Port)),
        ("preferredauthentications", Set(PreferredAuthentications)),
        ("protocol", Ignored),
        ("protocolkeepalives", Set(ServerAliveInterval)),
        ("proxycommand", Set(ProxyCommand)),
        ("proxyjump", Set(ProxyJump)),
        ("proxyusefdpass", Only(NO)),
        ("pubkeyacceptedalgorithms", Set(PubkeyAcceptedAlgorithms)),
        ("pubkeyacceptedkeytypes", Set(PubkeyAcceptedAlgorithms)),
        ("pubkeyauthentication", Set(PubkeyAuthentication)),
        ("rekeylimit", Ignored),
        ("remotecommand", Set(RemoteCommand)),
        ("remoteforward", Set(RemoteForward)),
        ("requesttty", Set(RequestTty)),
        ("requiredrsasize", Set(RequiredRsaSize)),
        ("resilience", Set(Resilience)),
        ("resiliencesuspectcap", Set(ResilienceSuspectCap)),
        ("resiliencesuspectfloor", Set(ResilienceSuspectFloor)),
        ("revokedhostkeys", Only(NONE)),
        ("rhostsauthentication", Ignored),
        ("rhostsrsaauthentication", Ignored),
        ("rsaauthentication", Ignored),
        ("securitykeyprovider", Ignored),
        ("sendenv", Set(SendEnv)),
        ("serveralivecountmax", Set(ServerAliveCountMax)),
        ("serveraliveinterval", Set(ServerAliveInterval)),
        ("sessiontype", Set(SessionType)),
        ("setenv", Set(SetEnv)),
        ("setuptimeout", Set(ServerAliveInterval)),
        ("skeyauthentication", Set(KbdInteractiveAuthentication)),
        ("smartcarddevice", Only(NONE)),
        ("stdinnull", Set(StdinNull)),
        ("streamlocalbindmask", Ignored),
        ("streamlocalbindunlink", Ignored),
        ("stricthostkeychecking", Set(StrictHostKeyChecking)),
        ("syslogfacility", Ignored),
        ("tag", Ignored),
        ("tcpkeepalive", Ignored),
        ("tisauthentication", Set(KbdInteractiveAuthentication)),
        ("tunnel", Only(NO)),
        ("tunneldevice", Ignored),
        ("updatehostkeys", Ignored),
        ("useblacklistedkeys", Ignored),
        ("usekeychain", Ignored),
        ("useprivilegedport", Ignored),
        ("user", Set(User)),
        ("userknownhostsfile", Set(UserKnownHostsFile)),
        ("userknownhostsfile2", Ignored),
        ("useroaming", Ignored),
        ("usersh", Ignored),
        ("verifyhostkeydns", RefusedAt(&["yes", "true"])),
        ("visualhostkey", Ignored),
        ("warnweakcrypto", Ignored),
        ("xauthlocation", Set(XAuthLocation)),
    ]
};

/// The keyword (lowercase) and how it is handled.
fn lookup(k: &str) -> Option<(&'static str, Kind)> {
    KEYWORDS.iter().find(|(name, _)| *name == k).copied()
}

/// What the configuration sources said, each field typed and set by its
/// first value (ssh's first-value-wins), the lists accumulated.
#[derive(Default, Debug)]
pub(super) struct Raw {
    pub host_name: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    /// As written (`none` entries included); empty when never set.
    pub identity_files: Vec<String>,
    /// As written, in order.
    pub certificate_files: Vec<String>,
    pub identities_only: Option<bool>,
    pub identity_agent: Option<String>,
    /// ForwardAgent (and -A, -a): yes or no; a socket path or `$VAR`
    /// also means yes (ssh's two settings).
    pub forward_agent: Option<bool>,
    /// The socket path or `$VAR` of ForwardAgent, as written.
    pub forward_agent_path: Option<String>,
    pub forward_x11: Option<bool>,
    pub forward_x11_trusted: Option<bool>,
    /// Seconds; 0 (`none`): no timeout.
    pub forward_x11_timeout: Option<u64>,
    pub xauth_location: Option<String>,
    /// As written (`none` included).
    pub proxy_command: Option<String>,
    pub proxy_jump: Option<String>,
    /// Seconds; `none` is 0.
    pub server_alive_interval: Option<u64>,
    pub server_alive_count_max: Option<u32>,
    /// Seconds; `none` is 0.
    pub connect_timeout: Option<u64>,
    pub connection_attempts: Option<u32>,
    pub strict: Option<Strict>,
    pub user_known_hosts: Option<Vec<String>>,
    pub global_known_hosts: Option<Vec<String>>,
    pub hash_known_hosts: Option<bool>,
    pub host_key_alias: Option<String>,
    pub set_env: Option<Vec<(String, String)>>,
    pub send_env: Vec<String>,
    pub batch_mode: Option<bool>,
    pub log_level: Option<Level>,
    pub request_tty: Option<RequestTty>,
    pub address_family: Option<Family>,
    pub escape_char: Option<Option<u8>>,
    pub ciphers: Option<String>,
    pub macs: Option<String>,
    pub kex_algorithms: Option<String>,
    pub host_key_algorithms: Option<String>,
    pub pubkey_accepted_algorithms: Option<String>,
    pub ca_signature_algorithms: Option<String>,
    pub preferred_authentications: Option<Vec<String>>,
    pub pubkey_authentication: Option<bool>,
    pub password_authentication: Option<bool>,
    pub kbd_interactive_authentication: Option<bool>,
    pub number_of_password_prompts: Option<u32>,
    pub exit_on_forward_failure: Option<bool>,
    pub clear_all_forwardings: Option<bool>,
    pub gateway_ports: Option<bool>,
    /// `LocalForward`s, `RemoteForward`s, `DynamicForward`s: their words
    /// joined by `:` (checked by `forward::parse` once all are read).
    pub local_forwards: Vec<String>,
    pub remote_forwards: Vec<String>,
    pub dynamic_forwards: Vec<String>,
    /// As written (`none` included).
    pub remote_command: Option<String>,
    pub session_type: Option<SessionType>,
    pub stdin_null: Option<bool>,
    pub compression: Option<bool>,
    pub fork_after_authentication: Option<bool>,
    pub control_master: Option<ControlMaster>,
    /// As written (`none` included), tokens unexpanded.
    pub control_path: Option<String>,
    /// Seconds; 0 is `yes` (for ever), None `no`.
    pub control_persist: Option<Option<u64>>,
    pub resilience: Option<bool>,
    /// Milliseconds; the cap's inner None is `none` (the keepalive interval).
    pub suspect_floor_ms: Option<u64>,
    pub suspect_cap_ms: Option<Option<u64>>,
    /// Bytes (K, M, G suffixes), within [`WINDOW_MAX_RANGE`].
    pub channel_window_max: Option<u32>,
    /// IgnoreUnknown's patterns, as one pattern list.
    pub ignore_unknown: Option<String>,
    /// Debug lines about what was ignored, with where.
    pub notes: Vec<String>,
    /// A `Match final` or `Match canonical` was seen: the files are read
    /// again, as ssh's final pass.
    pub want_final: bool,
}

/// Sets `slot` unless an earlier source did.
fn first<T>(slot: &mut Option<T>, v: T) {
    if slot.is_none() {
        *slot = Some(v);
    }
}

/// Appends `v` to a list keyword's values unless already there (as ssh:
/// the final pass reads the same lines again).
fn add(list: &mut Vec<String>, v: String) {
    if !list.contains(&v) {
        list.push(v);
    }
}

fn yes_no(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(format!("{key}: expected yes or no, got {v:?}")),
    }
}

/// The value of `v` (case-insensitively) in `table`.
fn one_of<T: Copy>(key: &str, v: &str, table: &[(&str, T)]) -> Result<T, String> {
    let lower = v.to_ascii_lowercase();
    match table.iter().find(|(name, _)| *name == lower) {
        Some(&(_, t)) => Ok(t),
        None => Err(format!(
            "{key}: bad value {v:?} (one of {})",
            table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        )),
    }
}

fn number(key: &str, v: &str) -> Result<u32, String> {
    v.parse::<u32>()
        .map_err(|_| format!("{key}: bad number {v:?}"))
}

/// ChannelWindowMax's bounds: the initial window (no growth) to 1G.
const WINDOW_MAX_RANGE: std::ops::RangeInclusive<u64> = (2 << 20)..=(1 << 30);

/// A ChannelWindowMax size.
fn window_max(key: &str, v: &str) -> Result<u32, String> {
    let n = ressh_compat::misc::parse_size(v).map_err(|e| format!("{key}: {e}"))?;
    if !WINDOW_MAX_RANGE.contains(&n) {
        return Err(format!(
            "{key} must be between {} and {} bytes",
            WINDOW_MAX_RANGE.start(),
            WINDOW_MAX_RANGE.end()
        ));
    }
    Ok(n as u32)
}

/// A whole number of milliseconds (ressh's own keywords).
fn millis(key: &str, v: &str) -> Result<u64, String> {
    v.parse::<u64>()
        .map_err(|_| format!("{key}: bad number of milliseconds {v:?}"))
}

/// `none` (0) or a convtime (`30`, `1m`, `1h30m`).
fn seconds(key: &str, v: &str) -> Result<u64, String> {
    if v.eq_ignore_ascii_case("none") {
        return Ok(0);
    }
    convtime(v)
        .map(|d| d.as_secs())
        .map_err(|e| format!("{key}: {e}"))
}

impl Raw {
    /// One keyword line (from a file or `-o`, at `at`): `vals` are its
    /// words. Inactive lines (in a `Host`/`Match` block that does not
    /// apply) are only checked for an unknown keyword. What is ignored is
    /// noted in `notes`, for a debug line.
    pub(super) fn set(
        &mut self,
        key: &str,
        vals: Vec<String>,
        active: bool,
        at: &str,
    ) -> Result<(), String> {
        let Some((key, kind)) = lookup(key) else {
            if let Some(list) = &self.ignore_unknown {
                if pattern::match_pattern_list(key, list, true).is_match() {
                    let note = format!("{at}: Ignored unknown option \"{key}\"");
                    add(&mut self.notes, note);
                    return Ok(());
                }
            }
            return Err(format!("Bad configuration option: {key}"));
        };
        if !active {
            return Ok(());
        }
        if vals.is_empty() {
            return Err(format!("{key}: missing argument"));
        }
        let v = vals[0].to_ascii_lowercase();
        let ignore = |notes: &mut Vec<String>| {
            let note = format!(
                "{at}: ignoring {key} {} (not implemented by ressh; harmless)",
                vals.join(" ")
            );
            add(notes, note)
        };
        match kind {
            Kind::Set(k) => self.apply(k, key, vals),
            Kind::Block => Err(format!(
                "{key} directive not supported as a command-line option"
            )),
            Kind::Ignored => {
                ignore(&mut self.notes);
                Ok(())
            }
            Kind::Only(allowed) if allowed.contains(&v.as_str()) => Ok(()),
            Kind::Only(allowed) => Err(format!(
                "{key} {} is not supported by ressh (only {})",
                vals[0],
                allowed.join("/")
            )),
            Kind::RefusedAt(refused) if refused.contains(&v.as_str()) => {
                Err(format!("{key} {} is not supported by ressh", vals[0]))
            }
            Kind::RefusedAt(_) => {
                ignore(&mut self.notes);
                Ok(())
            }
        }
    }

    fn apply(&mut self, k: Key, key: &str, vals: Vec<String>) -> Result<(), String> {
        let v = vals[0].as_str();
        let flag = |slot: &mut Option<bool>| -> Result<(), String> {
            first(slot, yes_no(key, v)?);
            Ok(())
        };
        match k {
            Key::HostName => first(&mut self.host_name, v.to_string()),
            Key::Port => first(
                &mut self.port,
                args::parse_port(v).ok_or_else(|| format!("Bad port '{v}'"))?,
            ),
            Key::User => first(&mut self.user, v.to_string()),
            Key::IdentityFile => add(&mut self.identity_files, v.to_string()),
            Key::CertificateFile => add(&mut self.certificate_files, v.to_string()),
            Key::IdentitiesOnly => flag(&mut self.identities_only)?,
            Key::IdentityAgent => first(&mut self.identity_agent, v.to_string()),
            Key::ForwardX11 => flag(&mut self.forward_x11)?,
            Key::ForwardX11Trusted => flag(&mut self.forward_x11_trusted)?,
            Key::ForwardX11Timeout => first(&mut self.forward_x11_timeout, seconds(key, v)?),
            Key::XAuthLocation => first(&mut self.xauth_location, v.to_string()),
            Key::ForwardAgent => match yes_no(key, v) {
                Ok(b) => first(&mut self.forward_agent, b),
                Err(_) => {
                    first(&mut self.forward_agent, true);
                    first(&mut self.forward_agent_path, v.to_string());
                }
            },
            Key::ProxyCommand => first(&mut self.proxy_command, vals.join(" ")),
            Key::ProxyJump => first(&mut self.proxy_jump, v.to_string()),
            Key::ServerAliveInterval => first(&mut self.server_alive_interval, seconds(key, v)?),
            Key::ServerAliveCountMax => first(&mut self.server_alive_count_max, number(key, v)?),
            Key::ConnectTimeout => first(&mut self.connect_timeout, seconds(key, v)?),
            Key::ConnectionAttempts => first(&mut self.connection_attempts, number(key, v)?),
            Key::StrictHostKeyChecking => first(
                &mut self.strict,
                one_of(
                    key,
                    v,
                    &[
                        ("yes", Strict::Yes),
                        ("no", Strict::No),
                        ("off", Strict::No),
                        ("ask", Strict::Ask),
                        ("accept-new", Strict::AcceptNew),
                        ("true", Strict::Yes),
                        ("false", Strict::No),
                    ],
                )?,
            ),
            Key::UserKnownHostsFile => first(&mut self.user_known_hosts, vals),
            Key::GlobalKnownHostsFile => first(&mut self.global_known_hosts, vals),
            Key::HashKnownHosts => flag(&mut self.hash_known_hosts)?,
            Key::HostKeyAlias => first(&mut self.host_key_alias, v.to_string()),
            Key::SetEnv => {
                let mut pairs = Vec::new();
                for kv in &vals {
                    match kv.split_once('=') {
                        Some((n, val)) if !n.is_empty() => {
                            pairs.push((n.to_string(), val.to_string()))
                        }
                        _ => return Err(format!("SetEnv: expected NAME=VALUE, got {kv:?}")),
                    }
                }
                first(&mut self.set_env, pairs)
            }
            Key::SendEnv => {
                for v in vals {
                    if let Some(pat) = v.strip_prefix('-') {
                        self.send_env.retain(|x| !pattern::match_pattern(x, pat));
                    } else {
                        add(&mut self.send_env, v);
                    }
                }
            }
            Key::BatchMode => flag(&mut self.batch_mode)?,
            Key::LogLevel => first(
                &mut self.log_level,
                Level::parse(v).ok_or_else(|| format!("unsupported log level '{v}'"))?,
            ),
            Key::RequestTty => first(
                &mut self.request_tty,
                one_of(
                    key,
                    v,
                    &[
                        ("no", RequestTty::No),
                        ("yes", RequestTty::Yes),
                        ("force", RequestTty::Force),
                        ("auto", RequestTty::Auto),
                        ("true", RequestTty::Yes),
                        ("false", RequestTty::No),
                    ],
                )?,
            ),
            Key::AddressFamily => first(
                &mut self.address_family,
                one_of(
                    key,
                    v,
                    &[
                        ("any", Family::Any),
                        ("inet", Family::Inet),
                        ("inet6", Family::Inet6),
                    ],
                )?,
            ),
            Key::EscapeChar => first(&mut self.escape_char, parse_escape_char(v)?),
            Key::Ciphers => first(&mut self.ciphers, v.to_string()),
            Key::Macs => first(&mut self.macs, v.to_string()),
            Key::KexAlgorithms => first(&mut self.kex_algorithms, v.to_string()),
            Key::HostKeyAlgorithms => first(&mut self.host_key_algorithms, v.to_string()),
            Key::PubkeyAcceptedAlgorithms => {
                first(&mut self.pubkey_accepted_algorithms, v.to_string())
            }
            Key::CaSignatureAlgorithms => first(&mut self.ca_signature_algorithms, v.to_string()),
            Key::PreferredAuthentications => first(
                &mut self.preferred_authentications,
                v.split(',').map(|m| m.trim().to_string()).collect(),
            ),
            Key::PubkeyAuthentication => flag(&mut self.pubkey_authentication)?,
            Key::PasswordAuthentication => flag(&mut self.password_authentication)?,
            Key::KbdInteractiveAuthentication => flag(&mut self.kbd_interactive_authentication)?,
            Key::NumberOfPasswordPrompts => {
                first(&mut self.number_of_password_prompts, number(key, v)?)
            }
            Key::ExitOnForwardFailure => flag(&mut self.exit_on_forward_failure)?,
            Key::ClearAllForwardings => flag(&mut self.clear_all_forwardings)?,
            Key::GatewayPorts => first(
                &mut self.gateway_ports,
                one_of(
                    key,
                    v,
                    &[
                        ("yes", true),
                        ("no", false),
                        ("true", true),
                        ("false", false),
                        ("clientspecified", false),
                    ],
                )?,
            ),
            Key::LocalForward | Key::RemoteForward => {
                if vals.len() > 2 {
                    return Err(format!("{key}: too many arguments"));
                }
                let list = if k == Key::LocalForward {
                    &mut self.local_forwards
                } else {
                    &mut self.remote_forwards
                };
                add(list, vals.join(":"));
            }
            Key::DynamicForward => {
                if vals.len() > 1 {
                    return Err(format!("{key}: too many arguments"));
                }
                add(&mut self.dynamic_forwards, v.to_string());
            }
            Key::RemoteCommand => first(&mut self.remote_command, vals.join(" ")),
            Key::SessionType => first(
                &mut self.session_type,
                one_of(
                    key,
                    v,
                    &[
                        ("none", SessionType::None),
                        ("subsystem", SessionType::Subsystem),
                        ("default", SessionType::Default),
                    ],
                )?,
            ),
            Key::StdinNull => flag(&mut self.stdin_null)?,
            Key::Compression => flag(&mut self.compression)?,
            Key::ForkAfterAuthentication => flag(&mut self.fork_after_authentication)?,
            Key::Resilience => flag(&mut self.resilience)?,
            Key::ResilienceSuspectFloor => first(&mut self.suspect_floor_ms, millis(key, v)?),
            Key::ChannelWindowMax => first(&mut self.channel_window_max, window_max(key, v)?),
            Key::ResilienceSuspectCap => first(
                &mut self.suspect_cap_ms,
                if v.eq_ignore_ascii_case("none") {
                    None
                } else {
                    Some(millis(key, v)?)
                },
            ),
            Key::ControlMaster => first(
                &mut self.control_master,
                one_of(
                    key,
                    v,
                    &[
                        ("yes", ControlMaster::Yes),
                        ("true", ControlMaster::Yes),
                        ("no", ControlMaster::No),
                        ("false", ControlMaster::No),
                        ("ask", ControlMaster::Ask),
                        ("auto", ControlMaster::Auto),
                        ("autoask", ControlMaster::AutoAsk),
                    ],
                )?,
            ),
            Key::ControlPath => first(&mut self.control_path, v.to_string()),
            Key::ControlPersist => first(
                &mut self.control_persist,
                match v.to_ascii_lowercase().as_str() {
                    "yes" | "true" => Some(0),
                    "no" | "false" => None,
                    // 0, as yes: for ever.
                    _ => Some(convtime(v).map_err(|e| format!("{key}: {e}"))?.as_secs()),
                },
            ),
            Key::IgnoreUnknown => first(&mut self.ignore_unknown, vals.join(",")),
            // ressh refuses RSA keys under RSA_MIN_BITS anyway; a larger
            // minimum it does not enforce, and accepting a key the user
            // said is too small would weaken security.
            Key::RequiredRsaSize => {
                let bits = number(key, v)?;
                if bits as usize > RSA_MIN_BITS {
                    return Err(format!(
                        "{key} {bits} is not supported by ressh (it requires {RSA_MIN_BITS} bits, and no more)"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/ssh_config.md's handling of a keyword, in its words.
    fn describe(kind: Kind) -> String {
        match kind {
            Kind::Set(_) | Kind::Block => "implemented".into(),
            Kind::Ignored => "ignored".into(),
            Kind::Only(v) => format!("only {}", v.join(", ")),
            Kind::RefusedAt(v) => format!("refused at {}", v.join(", ")),
        }
    }

    /// The keyword table and docs/ssh_config.md say the same, both ways:
    /// every keyword of the code is in the document, handled as it says,
    /// and every keyword of the document is in the code (an alias read as
    /// the keyword it names). The other test of the table, against stock
    /// ssh and the ressh binary, is client/tests/ssh_config_keywords.rs.
    #[test]
    fn table_matches_the_document() {
        let rows = ressh_testkit::keyword_table();
        for (name, kind) in KEYWORDS {
            let Some(row) = rows
                .iter()
                .find(|r| r.keyword.to_ascii_lowercase() == *name)
            else {
                panic!("{name} is not in docs/ssh_config.md");
            };
            let doc = match row.handling.split_once(" (alias of ") {
                Some((h, target)) => {
                    let target = target.trim_end_matches(')').to_ascii_lowercase();
                    match (lookup(&target), kind) {
                        (Some((_, Kind::Set(a))), Kind::Set(b)) => {
                            assert_eq!(a, *b, "{name} is not read as {target}")
                        }
                        _ => panic!("{name}: alias of {target}, which is not implemented"),
                    }
                    h
                }
                None => row.handling.as_str(),
            };
            assert_eq!(doc, describe(*kind), "docs/ssh_config.md on {name}");
        }
        for row in &rows {
            assert!(
                lookup(&row.keyword.to_ascii_lowercase()).is_some(),
                "{} is in docs/ssh_config.md, not in the code",
                row.keyword
            );
        }
        assert_eq!(
            rows.len(),
            KEYWORDS.len(),
            "a keyword twice in the document"
        );
    }
}
