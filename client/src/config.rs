//! ssh_config: `~/.ssh/config` and `/etc/ssh/ssh_config` (or `-F file`),
//! with `Host` and `Match` blocks, `Include`, first-value-wins, and the
//! `%` tokens, resolved into one [`Config`] for a destination.
//!
//! Every keyword ssh knows is classified in the keyword table
//! (`config/keywords.rs`): implemented (parsed at its line into a typed field,
//! first value wins), accepted because it is harmless to ignore, accepted
//! only at its safe default (anything else is refused with a clear message),
//! or unknown (an error, as in ssh, unless listed by `IgnoreUnknown`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ressh_compat::expand::{percent_expand, tilde_expand};
use ressh_compat::glob::glob;
use ressh_compat::misc::{argv_split, split_keyword};
use ressh_compat::pattern;

use crate::args::{self, Args};

mod keywords;
use crate::log::Level;
use keywords::Raw;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(s: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(s.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strict {
    Yes,
    AcceptNew,
    No,
    Ask,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestTty {
    No,
    Yes,
    Force,
    Auto,
}

/// `ControlMaster` (and -M/-MM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlMaster {
    No,
    Yes,
    Ask,
    Auto,
    AutoAsk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionType {
    Default,
    None,
    Subsystem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Any,
    Inet,
    Inet6,
}

/// The settings for one connection, after all sources and defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// The host as given on the command line (`Host`, `%n`).
    pub original_host: String,
    /// Debug lines about the settings ressh ignored, with where they are.
    pub notes: Vec<String>,
    /// Where to connect: HostName, or the original host.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub identity_files: Vec<IdentityFile>,
    /// CertificateFile: user certificates to offer (with the private key
    /// of an identity file or the agent).
    pub certificate_files: Vec<IdentityFile>,
    pub identities_only: bool,
    /// The agent socket; None when disabled or unset.
    pub identity_agent: Option<PathBuf>,
    /// The agent socket forwarded to the server (ForwardAgent, -A); None
    /// when not forwarding (or `$VAR` names an unset variable).
    pub forward_agent: Option<PathBuf>,
    /// ForwardAgent as set (what `-G` prints, as ssh), whether or not it
    /// names an agent.
    pub forward_agent_set: bool,
    /// ForwardX11 (-X, -Y): ask for X11 forwarding to $DISPLAY.
    pub forward_x11: bool,
    /// ForwardX11Trusted (-Y): the real cookie, else an untrusted one
    /// generated with xauth. Debian's default: yes.
    pub forward_x11_trusted: bool,
    /// ForwardX11Timeout for untrusted forwarding; None: no timeout.
    pub forward_x11_timeout: Option<Duration>,
    pub xauth_location: PathBuf,
    /// ProxyCommand with its `%` tokens expanded.
    pub proxy_command: Option<String>,
    /// ProxyCommand as written (`-G` prints it so, as ssh does).
    pub proxy_command_spec: Option<String>,
    pub proxy_jump: Option<String>,
    pub server_alive_interval: u64,
    pub server_alive_count_max: u32,
    pub connect_timeout: Option<Duration>,
    pub connection_attempts: u32,
    pub strict: Strict,
    pub user_known_hosts: Vec<PathBuf>,
    pub global_known_hosts: Vec<PathBuf>,
    pub hash_known_hosts: bool,
    pub host_key_alias: Option<String>,
    pub local_forwards: Vec<String>,
    pub remote_forwards: Vec<String>,
    /// -D and DynamicForward: `[bind_address:]port`.
    pub dynamic_forwards: Vec<String>,
    pub send_env: Vec<String>,
    pub set_env: Vec<(String, String)>,
    pub batch_mode: bool,
    pub log_level: Level,
    pub request_tty: RequestTty,
    pub address_family: Family,
    /// None: escapes disabled.
    pub escape_char: Option<u8>,
    pub ciphers: Option<String>,
    pub macs: Option<String>,
    pub kex_algorithms: Option<String>,
    pub host_key_algorithms: Option<String>,
    pub pubkey_accepted_algorithms: Option<String>,
    /// CASignatureAlgorithms: the signature algorithms a host certificate's
    /// CA may have signed with (None: every one ressh verifies).
    pub ca_signature_algorithms: Option<Vec<String>>,
    pub preferred_authentications: Vec<String>,
    pub pubkey_authentication: bool,
    pub password_authentication: bool,
    pub kbd_interactive_authentication: bool,
    pub number_of_password_prompts: u32,
    pub exit_on_forward_failure: bool,
    /// -f: go to the background once authenticated.
    pub fork_after_authentication: bool,
    pub control_master: ControlMaster,
    /// ControlPath, tokens and `~` expanded; None for `none` or unset.
    pub control_path: Option<PathBuf>,
    /// ControlPersist: None for no, Some(0) for ever, else seconds idle.
    pub control_persist: Option<u64>,
    pub gateway_ports: bool,
    pub remote_command: Option<String>,
    pub session_type: SessionType,
    pub stdin_null: bool,
    /// Compression (`-C`): ask for `zlib@openssh.com` (delayed, after
    /// authentication), as ssh.
    pub compression: bool,
    /// `Resilience` (ressh's own keyword, default yes): offer the resilience
    /// extension. `no` makes every connection plain SSH (for comparisons;
    /// OpenSSH's `ssh` needs `IgnoreUnknown Resilience` to share the file).
    pub resilience: bool,
    /// `ResilienceSuspectFloor` and `ResilienceSuspectCap` (ressh's own,
    /// milliseconds): the bounds of the suspicion timeout, after which an
    /// unanswered probe makes ressh try a new connection beside the old one
    /// (docs/PROTOCOL.md §4). Defaults 500 and the keepalive interval
    /// (None); a cap of 0 turns suspicion off.
    pub suspect_floor_ms: u64,
    pub suspect_cap_ms: Option<u64>,
    /// `ChannelWindowMax` (ressh's own, bytes, default 32M): the most a
    /// channel's receive window grows to with the path's bandwidth-delay
    /// product.
    pub channel_window_max: u32,
    /// The -F file, passed on to ProxyJump's child.
    pub config_file: Option<String>,
}

/// An IdentityFile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFile {
    pub path: PathBuf,
    /// The user named it: a missing named file is reported, a missing
    /// default is not.
    pub explicit: bool,
    /// As written, `~` and `%` tokens unexpanded (`-G` prints it so, as ssh
    /// does).
    pub spec: String,
}

/// Keywords whose value is a command: the rest of the line, verbatim
/// (quotes, spaces and `#` included), as ssh takes it.
fn is_command(key: &str) -> bool {
    matches!(key, "proxycommand" | "remotecommand")
}

/// A configuration line of a command keyword: the keyword (lowercased)
/// and its value as one word (none if empty). None for other lines.
fn command_line(line: &str) -> Option<(String, Vec<String>)> {
    let (key, rest) = split_keyword(line).ok()??;
    let key = key.to_ascii_lowercase();
    if !is_command(&key) {
        return None;
    }
    let vals = if rest.is_empty() {
        Vec::new()
    } else {
        vec![rest.to_string()]
    };
    Some((key, vals))
}

struct Ctx<'a> {
    /// The host as given on the command line (what `Host` and `Match
    /// originalhost` lines see, and `%n`).
    given_host: &'a str,
    local_user: &'a str,
    home: &'a Path,
    /// Files being read (for Include loops) and depth.
    depth: usize,
    /// Whether this file is the user's (relative Includes go to ~/.ssh).
    user_file: bool,
    /// ssh's final pass (after a `Match final` or `Match canonical` was
    /// seen): the files read again, where those match.
    final_pass: bool,
}

/// `none`, a single character, or `^X`.
pub fn parse_escape_char(v: &str) -> Result<Option<u8>, String> {
    if v.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let b = v.as_bytes();
    match b {
        [c] if c.is_ascii() => Ok(Some(*c)),
        [b'^', c] if c.is_ascii_alphabetic() || (b'@'..=b'_').contains(c) => {
            Ok(Some(c.to_ascii_uppercase() & 0x1f))
        }
        _ => Err(format!("Bad escape character '{v}'")),
    }
}

/// Values for `%` tokens.
pub struct Tokens<'a> {
    pub host: &'a str,
    pub original_host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub local_user: &'a str,
    pub home: &'a Path,
}

/// Expands %h %p %r %u %n %d %i %l %L %%; other tokens are refused.
pub fn expand_tokens(s: &str, t: &Tokens<'_>) -> Result<String, ConfigError> {
    expand_tokens_with(s, t, &[])
}

/// [`expand_tokens`] with `extra` tokens (ControlPath's %C).
fn expand_tokens_with(
    s: &str,
    t: &Tokens<'_>,
    extra: &[(char, &str)],
) -> Result<String, ConfigError> {
    let port = t.port.to_string();
    let home = t.home.to_string_lossy();
    let uid = nix::unistd::getuid().to_string();
    let long = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let short = long.split('.').next().unwrap_or("");
    percent_expand(
        s,
        &[
            ('h', t.host),
            ('n', t.original_host),
            ('p', &port),
            ('r', t.user),
            ('u', t.local_user),
            ('d', &home),
            ('i', &uid),
            ('l', &long),
            ('L', short),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
    )
    .map_err(|e| ConfigError(e.to_string()))
}

/// ControlPath's %C: the SHA-1 in hex of the local host name, the host,
/// the port, the user and the ProxyJump, as ssh's ssh_connection_hash.
fn connection_hash(t: &Tokens<'_>, jump: &str) -> String {
    let long = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = format!("{long}{}{}{}{jump}", t.host, t.port, t.user);
    openssl::sha::sha1(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `~`, `~/...` (the home directory ressh uses, `home`) and `~user/...`
/// expanded (ssh's `tilde_expand_filename`).
fn tilde(p: &str, home: &Path) -> Result<PathBuf, ConfigError> {
    tilde_expand(p, Some(home))
        .map(PathBuf::from)
        .map_err(ConfigError)
}

/// Local user name and home directory.
pub fn local_user() -> (String, PathBuf) {
    let uid = nix::unistd::getuid();
    let pw = nix::unistd::User::from_uid(uid).ok().flatten();
    let name = pw
        .as_ref()
        .map(|p| p.name.clone())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| uid.to_string());
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .or_else(|| pw.map(|p| p.dir))
        .unwrap_or_else(|| PathBuf::from("/"));
    (name, home)
}

fn read_file(
    raw: &mut Raw,
    path: &Path,
    ctx: &Ctx<'_>,
    active_in: bool,
    must_exist: bool,
) -> Result<(), ConfigError> {
    if ctx.depth > 16 {
        return err(format!("{}: Include nested too deeply", path.display()));
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if !must_exist && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return err(format!(
                "Can't open user config file {}: {e}",
                path.display()
            ))
        }
    };
    let mut active = active_in;
    for (n, line) in text.lines().enumerate() {
        let at = || format!("{} line {}", path.display(), n + 1);
        let (key, vals) = match command_line(line) {
            Some(kv) => kv,
            None => {
                let at_err = |e: String| ConfigError(format!("{}: {e}", at()));
                let Some((key, rest)) = split_keyword(line).map_err(at_err)? else {
                    continue;
                };
                (key.to_ascii_lowercase(), argv_split(rest).map_err(at_err)?)
            }
        };
        match key.as_str() {
            "host" => {
                if vals.is_empty() {
                    return err(format!("{}: Host with no patterns", at()));
                }
                active = host_matches(&vals, ctx.given_host);
            }
            "match" => {
                let mut want_final = false;
                active = eval_match(&vals, raw, ctx, &mut want_final)
                    .map_err(|e| ConfigError(format!("{}: {e}", at())))?;
                raw.want_final |= want_final;
            }
            "include" => {
                if vals.is_empty() {
                    return err(format!("{}: Include with no file", at()));
                }
                for v in &vals {
                    let p = if ctx.user_file {
                        tilde(v, ctx.home)?
                    } else {
                        PathBuf::from(v)
                    };
                    let p = if p.is_absolute() {
                        p
                    } else if ctx.user_file {
                        ctx.home.join(".ssh").join(p)
                    } else {
                        Path::new("/etc/ssh").join(p)
                    };
                    let pat = p.to_string_lossy();
                    let files = glob(&pat).map_err(|e| {
                        ConfigError(format!("{}: include \"{pat}\" glob failed: {e}", at()))
                    })?;
                    for f in files {
                        let sub = Ctx {
                            depth: ctx.depth + 1,
                            ..*ctx
                        };
                        read_file(raw, &f, &sub, active, false)?;
                    }
                }
            }
            _ => raw
                .set(&key, vals, active, &at())
                .map_err(|e| ConfigError(format!("{}: {e}", at())))?,
        }
    }
    Ok(())
}

/// A `Host` line: each word one pattern (no lists), matched against the
/// host as given on the command line, case-sensitively; a negated word
/// that matches makes the line fail (as ssh's readconf.c).
fn host_matches(patterns: &[String], host: &str) -> bool {
    let mut matched = false;
    for p in patterns {
        let (neg, pat) = match p.strip_prefix('!') {
            Some(x) => (true, x),
            None => (false, p.as_str()),
        };
        if pattern::match_pattern(host, pat) {
            if neg {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// HostName with its `%h` (the original host) and `%%` expanded, or the
/// original host; lowercased unless an address (as ssh).
fn host_name(raw: &Raw, original_host: &str) -> String {
    let h = match &raw.host_name {
        Some(h) => h.replace("%h", original_host).replace("%%", "%"),
        None => original_host.to_string(),
    };
    if h.parse::<std::net::IpAddr>().is_ok() {
        h
    } else {
        h.to_ascii_lowercase()
    }
}

/// The host name and remote user as set so far (what `Match host`,
/// `Match user` and the tokens of `Match exec` see).
fn host_and_user(raw: &Raw, ctx: &Ctx<'_>) -> (String, String) {
    let user = raw
        .user
        .clone()
        .unwrap_or_else(|| ctx.local_user.to_string());
    (host_name(raw, ctx.given_host), user)
}

/// `Match exec`: runs the command (tokens expanded) with the user's shell,
/// stdin from /dev/null; it matches when the command exits 0.
fn match_exec(arg: &str, raw: &Raw, ctx: &Ctx<'_>) -> Result<bool, String> {
    let (hostname, user) = host_and_user(raw, ctx);
    let port = raw.port.unwrap_or(22);
    let cmd = expand_tokens(
        arg,
        &Tokens {
            host: &hostname,
            original_host: ctx.given_host,
            port,
            user: &user,
            local_user: ctx.local_user,
            home: ctx.home,
        },
    )
    .map_err(|e| e.0)?;
    let shell = std::env::var("SHELL")
        .ok()
        .filter(|s| s.starts_with('/'))
        .unwrap_or_else(|| "/bin/sh".to_string());
    let status = std::process::Command::new(shell)
        .arg("-c")
        .arg(&cmd)
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("Match exec {cmd:?}: {e}"))?;
    Ok(status.success())
}

/// A `Match` line; `want_final` is set when it has `final` or `canonical`.
fn eval_match(
    vals: &[String],
    raw: &Raw,
    ctx: &Ctx<'_>,
    want_final: &mut bool,
) -> Result<bool, String> {
    if vals.is_empty() {
        return Err("Match with no criteria".into());
    }
    let mut result = true;
    let mut i = 0;
    while i < vals.len() {
        let crit = vals[i].to_ascii_lowercase();
        i += 1;
        let (neg, crit) = match crit.strip_prefix('!') {
            Some(c) => (true, c.to_string()),
            None => (false, crit),
        };
        let ok = match crit.as_str() {
            "all" => true,
            // ressh does not canonicalize: the final pass is a second
            // reading, as ssh's when no canonicalization happened.
            "canonical" | "final" => {
                *want_final = true;
                ctx.final_pass
            }
            "host" | "originalhost" | "user" | "localuser" => {
                let Some(arg) = vals.get(i) else {
                    return Err(format!("Match {crit} needs an argument"));
                };
                i += 1;
                let (hostname, user) = host_and_user(raw, ctx);
                match crit.as_str() {
                    "host" => pattern::match_hostname(&hostname, arg),
                    "originalhost" => pattern::match_hostname(ctx.given_host, arg),
                    "user" => pattern::match_pattern_list(&user, arg, false),
                    _ => pattern::match_pattern_list(ctx.local_user, arg, false),
                }
                .is_match()
            }
            "exec" => {
                let Some(arg) = vals.get(i) else {
                    return Err("Match exec needs an argument".into());
                };
                i += 1;
                // As ssh: no command runs once the line cannot match.
                result && match_exec(arg, raw, ctx)?
            }
            "tagged" | "localnetwork" | "version" | "sessiontype" | "command" => {
                return Err(format!("Match {crit} is not supported by ressh"));
            }
            other => return Err(format!("Unsupported Match attribute {other}")),
        };
        if ok == neg {
            result = false;
        }
    }
    Ok(result)
}

/// Builds the configuration for `args`' destination: command-line settings
/// first, then `-F file` or the user's and the system's files.
pub fn resolve(a: &Args) -> Result<Config, ConfigError> {
    resolve_with(a, None)
}

/// Like [`resolve`]; `system` replaces /etc/ssh/ssh_config (for tests).
pub fn resolve_with(a: &Args, system: Option<&Path>) -> Result<Config, ConfigError> {
    let dest_s = a
        .destination
        .as_deref()
        .ok_or_else(|| ConfigError(args::USAGE.to_string()))?;
    let dest = args::parse_destination(dest_s).map_err(|e| ConfigError(e.0))?;
    let (local_user, home) = local_user();
    let original_host = dest.host.clone();
    let mut raw = Raw::default();
    let mut dest_settings = Vec::new();
    if let Some(u) = &dest.user {
        dest_settings.push(("user".to_string(), u.clone()));
    }
    if let Some(p) = dest.port {
        dest_settings.push(("port".to_string(), p.to_string()));
    }
    let at = a.dest_index.min(a.settings.len());
    let settings = a.settings[..at]
        .iter()
        .chain(dest_settings.iter())
        .chain(a.settings[at..].iter());
    for (k, v) in settings {
        let vals = if is_command(k)
            || matches!(
                k.as_str(),
                "localforward" | "remoteforward" | "dynamicforward"
            ) {
            vec![v.clone()]
        } else {
            argv_split(v).map_err(|e| ConfigError(format!("-o {k}: {e}")))?
        };
        let vals = if vals.is_empty() {
            vec![String::new()]
        } else {
            vals
        };
        raw.set(k, vals, true, "command-line line 0")
            .map_err(|e| ConfigError(format!("command line: {e}")))?;
    }
    for final_pass in [false, true] {
        if final_pass && !raw.want_final {
            break;
        }
        let ctx = Ctx {
            given_host: &dest.host,
            local_user: &local_user,
            home: &home,
            depth: 0,
            user_file: true,
            final_pass,
        };
        match a.config_file.as_deref() {
            Some("none") => {}
            Some(f) => read_file(&mut raw, &tilde(f, &home)?, &ctx, true, true)?,
            None => {
                read_file(&mut raw, &home.join(".ssh/config"), &ctx, true, false)?;
                let sys = system.unwrap_or(Path::new("/etc/ssh/ssh_config"));
                let ctx = Ctx {
                    user_file: false,
                    ..ctx
                };
                read_file(&mut raw, sys, &ctx, true, false)?;
            }
        }
    }
    finish(raw, a, original_host, local_user, home)
}

fn finish(
    raw: Raw,
    a: &Args,
    original_host: String,
    local_user: String,
    home: PathBuf,
) -> Result<Config, ConfigError> {
    let port = raw.port.unwrap_or(22);
    let user = raw.user.clone().unwrap_or_else(|| local_user.clone());
    let host = host_name(&raw, &original_host);
    let t = Tokens {
        host: &host,
        original_host: &original_host,
        port,
        user: &user,
        local_user: &local_user,
        home: &home,
    };
    let path = |s: &str| -> Result<PathBuf, ConfigError> { tilde(&expand_tokens(s, &t)?, &home) };
    let mut identity_files = Vec::new();
    if raw.identity_files.is_empty() {
        for f in ["id_rsa", "id_ecdsa", "id_ed25519"] {
            identity_files.push(IdentityFile {
                path: home.join(".ssh").join(f),
                explicit: false,
                spec: format!("~/.ssh/{f}"),
            });
        }
    }
    for v in &raw.identity_files {
        if v.eq_ignore_ascii_case("none") {
            continue;
        }
        identity_files.push(IdentityFile {
            path: path(v)?,
            explicit: true,
            spec: v.clone(),
        });
    }
    let certificate_files = raw
        .certificate_files
        .iter()
        .map(|v| {
            Ok(IdentityFile {
                path: path(v)?,
                explicit: true,
                spec: v.clone(),
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let ca_signature_algorithms = match &raw.ca_signature_algorithms {
        Some(spec) => {
            let known: Vec<String> = ressh_proto::keys::KeyType::user_signature_algorithms()
                .into_iter()
                .map(String::from)
                .collect();
            Some(algorithm_list(
                "CASignatureAlgorithms",
                spec,
                &known,
                &known,
            )?)
        }
        None => None,
    };
    let identity_agent = match raw.identity_agent.as_deref() {
        Some(v) if v.eq_ignore_ascii_case("none") => None,
        Some("SSH_AUTH_SOCK") => std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from),
        Some(v) if v.starts_with('$') => std::env::var_os(&v[1..]).map(PathBuf::from),
        Some(v) => Some(path(v)?),
        None => std::env::var_os("SSH_AUTH_SOCK")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
    };
    // ForwardAgent yes forwards the agent ssh itself uses: IdentityAgent's
    // socket (by default $SSH_AUTH_SOCK), which ssh puts in SSH_AUTH_SOCK
    // before it reads a ForwardAgent `$VAR`.
    let forward_agent = match (raw.forward_agent, raw.forward_agent_path.as_deref()) {
        (Some(true), None) | (Some(true), Some("$SSH_AUTH_SOCK")) => identity_agent.clone(),
        (Some(true), Some(v)) if v.starts_with('$') => {
            let name = &v[1..];
            let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return err(format!(
                    "Invalid ForwardAgent environment variable name {v}"
                ));
            }
            std::env::var_os(name)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        }
        (Some(true), Some(v)) => Some(path(v)?),
        _ => None,
    };
    let files =
        |set: &Option<Vec<String>>, default: &[&str]| -> Result<Vec<PathBuf>, ConfigError> {
            let vals: Vec<String> = match set {
                Some(v) => v.clone(),
                None => default.iter().map(|s| s.to_string()).collect(),
            };
            if vals.len() == 1 && vals[0].eq_ignore_ascii_case("none") {
                return Ok(Vec::new());
            }
            vals.iter().map(|v| path(v)).collect()
        };
    for spec in &raw.local_forwards {
        crate::forward::parse(spec, false).map_err(ConfigError)?;
    }
    for spec in &raw.remote_forwards {
        crate::forward::parse(spec, true).map_err(ConfigError)?;
    }
    for spec in &raw.dynamic_forwards {
        crate::forward::parse_dynamic(spec).map_err(ConfigError)?;
    }
    let clear_all = raw.clear_all_forwardings.unwrap_or(false);
    let forwards = |list: &[String]| if clear_all { Vec::new() } else { list.to_vec() };
    let preferred_authentications = raw.preferred_authentications.clone().unwrap_or_else(|| {
        ["publickey", "keyboard-interactive", "password"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    let not_none = |v: &Option<String>| v.clone().filter(|v| !v.eq_ignore_ascii_case("none"));
    let remote_command = match not_none(&raw.remote_command) {
        Some(words) => Some(expand_tokens(&words, &t)?),
        None => None,
    };
    let proxy_command_spec = not_none(&raw.proxy_command);
    let proxy_command = match &proxy_command_spec {
        Some(v) => Some(expand_tokens(v, &t)?),
        None => None,
    };
    let proxy_jump = not_none(&raw.proxy_jump);
    let control_path = match not_none(&raw.control_path) {
        Some(v) => {
            let hash = connection_hash(&t, proxy_jump.as_deref().unwrap_or(""));
            let p = expand_tokens_with(&v, &t, &[('C', &hash)])?;
            Some(tilde(&p, &home)?)
        }
        None => None,
    };
    if proxy_command.is_some() && proxy_jump.is_some() {
        // ssh takes whichever came first; ressh keeps it simple and refuses.
        return err("ProxyCommand and ProxyJump are both set; use one");
    }
    Ok(Config {
        host: host.clone(),
        port,
        user: user.clone(),
        identity_files,
        certificate_files,
        identities_only: raw.identities_only.unwrap_or(false),
        identity_agent,
        forward_agent,
        forward_agent_set: raw.forward_agent.unwrap_or(false),
        forward_x11: raw.forward_x11.unwrap_or(false),
        forward_x11_trusted: raw.forward_x11_trusted.unwrap_or(true),
        forward_x11_timeout: match raw.forward_x11_timeout.unwrap_or(1200) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        },
        xauth_location: PathBuf::from(raw.xauth_location.as_deref().unwrap_or("/usr/bin/xauth")),
        proxy_command,
        proxy_command_spec,
        proxy_jump,
        server_alive_interval: raw.server_alive_interval.unwrap_or(0),
        server_alive_count_max: raw.server_alive_count_max.unwrap_or(3),
        connect_timeout: match raw.connect_timeout.unwrap_or(0) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        },
        connection_attempts: raw.connection_attempts.unwrap_or(1).max(1),
        strict: raw.strict.unwrap_or(Strict::Ask),
        user_known_hosts: files(
            &raw.user_known_hosts,
            &["~/.ssh/known_hosts", "~/.ssh/known_hosts2"],
        )?,
        global_known_hosts: files(
            &raw.global_known_hosts,
            &["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"],
        )?,
        hash_known_hosts: raw.hash_known_hosts.unwrap_or(false),
        host_key_alias: raw.host_key_alias.clone(),
        local_forwards: forwards(&raw.local_forwards),
        remote_forwards: forwards(&raw.remote_forwards),
        dynamic_forwards: forwards(&raw.dynamic_forwards),
        send_env: raw.send_env.clone(),
        set_env: raw.set_env.clone().unwrap_or_default(),
        batch_mode: raw.batch_mode.unwrap_or(false),
        log_level: raw.log_level.unwrap_or(Level::Info),
        request_tty: raw.request_tty.unwrap_or(RequestTty::Auto),
        address_family: raw.address_family.unwrap_or(Family::Any),
        escape_char: raw.escape_char.unwrap_or(Some(b'~')),
        ciphers: raw.ciphers.clone(),
        macs: raw.macs.clone(),
        kex_algorithms: raw.kex_algorithms.clone(),
        host_key_algorithms: raw.host_key_algorithms.clone(),
        pubkey_accepted_algorithms: raw.pubkey_accepted_algorithms.clone(),
        ca_signature_algorithms,
        preferred_authentications,
        pubkey_authentication: raw.pubkey_authentication.unwrap_or(true),
        password_authentication: raw.password_authentication.unwrap_or(true),
        kbd_interactive_authentication: raw.kbd_interactive_authentication.unwrap_or(true),
        number_of_password_prompts: raw.number_of_password_prompts.unwrap_or(3),
        exit_on_forward_failure: raw.exit_on_forward_failure.unwrap_or(false),
        fork_after_authentication: raw.fork_after_authentication.unwrap_or(false),
        control_master: raw.control_master.unwrap_or(ControlMaster::No),
        control_path,
        control_persist: raw.control_persist.flatten(),
        gateway_ports: raw.gateway_ports.unwrap_or(false),
        remote_command,
        session_type: raw.session_type.unwrap_or(SessionType::Default),
        stdin_null: raw.stdin_null.unwrap_or(false),
        compression: raw.compression.unwrap_or(false),
        resilience: raw.resilience.unwrap_or(true),
        suspect_floor_ms: raw.suspect_floor_ms.unwrap_or(500),
        channel_window_max: raw.channel_window_max.unwrap_or(32 << 20),
        suspect_cap_ms: raw.suspect_cap_ms.flatten(),
        config_file: a.config_file.clone(),
        notes: raw.notes.clone(),
        original_host,
    })
}

/// `ssh -Q`'s queries that ressh answers, as `-Q help` lists them.
const QUERIES: &[&str] = &[
    "cipher",
    "cipher-auth",
    "kex",
    "key",
    "key-plain",
    "key-sig",
    "mac",
    "sig",
];

/// `-Q query`: the algorithms ressh supports of a kind, one a line, as
/// `ssh -Q` prints them (straight from the registries: ciphers, MACs and
/// key exchanges of `ressh_proto`, its key types and signature algorithms).
/// The query is the kind, or the configuration keyword whose values it
/// lists; case does not matter. None: unsupported.
pub fn query(q: &str) -> Option<Vec<&'static str>> {
    use ressh_proto::{cipher, kex, keys::KeyType};
    let keys = || KeyType::ALL.iter().map(|t| t.name()).collect::<Vec<_>>();
    Some(match q.to_ascii_lowercase().as_str() {
        "cipher" | "ciphers" => cipher::CIPHERS.iter().map(|c| c.name).collect(),
        "cipher-auth" => cipher::CIPHERS
            .iter()
            .filter(|c| c.aead)
            .map(|c| c.name)
            .collect(),
        "mac" | "macs" => cipher::MACS.iter().map(|m| m.name).collect(),
        "kex" | "kexalgorithms" => kex::KEX_SUPPORTED.to_vec(),
        "key" | "key-plain" => keys(),
        "sig" | "hostkeyalgorithms" | "pubkeyacceptedalgorithms" => {
            KeyType::all_signature_algorithms()
        }
        "key-sig" => {
            let mut v = keys();
            for a in KeyType::all_signature_algorithms() {
                if !v.contains(&a) {
                    v.push(a);
                }
            }
            v
        }
        "help" => QUERIES.to_vec(),
        _ => return None,
    })
}

/// Applies an algorithm list spec (`a,b`, `+a,b`, `-pat`, `^a,b`) to
/// `defaults`; every named algorithm must be one of `known`.
pub fn algorithm_list(
    what: &str,
    spec: &str,
    defaults: &[String],
    known: &[String],
) -> Result<Vec<String>, ConfigError> {
    let check = |names: &[String]| -> Result<(), ConfigError> {
        for n in names {
            if !known.contains(n) {
                return err(format!("Bad {what} spec: unsupported algorithm '{n}'"));
            }
        }
        Ok(())
    };
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    };
    let out = if let Some(rest) = spec.strip_prefix('+') {
        let add = list(rest);
        check(&add)?;
        let mut v = defaults.to_vec();
        for a in add {
            if !v.contains(&a) {
                v.push(a);
            }
        }
        v
    } else if let Some(rest) = spec.strip_prefix('-') {
        let pats = rest.to_string();
        defaults
            .iter()
            .filter(|d| !pattern::match_pattern_list(d, &pats, false).is_match())
            .cloned()
            .collect()
    } else if let Some(rest) = spec.strip_prefix('^') {
        let first = list(rest);
        check(&first)?;
        let mut v = first.clone();
        v.extend(defaults.iter().filter(|d| !first.contains(d)).cloned());
        v
    } else {
        let mut v = Vec::new();
        for pat in list(spec) {
            if pat.contains(['*', '?']) {
                v.extend(
                    known
                        .iter()
                        .filter(|k| pattern::match_pattern(k, &pat))
                        .cloned(),
                );
            } else {
                check(std::slice::from_ref(&pat))?;
                v.push(pat);
            }
        }
        v
    };
    if out.is_empty() {
        return err(format!("Bad {what} spec '{spec}': no algorithm left"));
    }
    Ok(out)
}

/// The `-G` output: the effective settings, one per line, as ssh prints them
/// (IdentityFile and ProxyCommand as written, other paths expanded).
pub fn dump(c: &Config) -> String {
    let yn = |b: bool| if b { "yes" } else { "no" };
    let mut s = String::new();
    let mut line = |k: &str, v: &str| {
        s.push_str(k);
        s.push(' ');
        s.push_str(v);
        s.push('\n');
    };
    line("host", &c.original_host);
    line("user", &c.user);
    line("hostname", &c.host);
    line("port", &c.port.to_string());
    line("batchmode", yn(c.batch_mode));
    line("resilience", yn(c.resilience));
    line("resiliencesuspectfloor", &c.suspect_floor_ms.to_string());
    line("channelwindowmax", &c.channel_window_max.to_string());
    line(
        "resiliencesuspectcap",
        &c.suspect_cap_ms
            .map_or("none".to_string(), |ms| ms.to_string()),
    );
    line("exitonforwardfailure", yn(c.exit_on_forward_failure));
    line("forwardagent", yn(c.forward_agent_set));
    line("forwardx11", yn(c.forward_x11));
    line("forwardx11trusted", yn(c.forward_x11_trusted));
    line(
        "forwardx11timeout",
        &c.forward_x11_timeout.map_or(0, |d| d.as_secs()).to_string(),
    );
    line("xauthlocation", &c.xauth_location.display().to_string());
    line("forkafterauthentication", yn(c.fork_after_authentication));
    line(
        "controlmaster",
        match c.control_master {
            ControlMaster::No => "false",
            ControlMaster::Yes => "true",
            ControlMaster::Ask => "ask",
            ControlMaster::Auto => "auto",
            ControlMaster::AutoAsk => "autoask",
        },
    );
    if let Some(p) = &c.control_path {
        line("controlpath", &p.display().to_string());
    }
    line(
        "controlpersist",
        &match c.control_persist {
            None => "no".to_string(),
            Some(0) => "yes".to_string(),
            Some(s) => s.to_string(),
        },
    );
    line("gatewayports", yn(c.gateway_ports));
    line("hashknownhosts", yn(c.hash_known_hosts));
    line(
        "stricthostkeychecking",
        match c.strict {
            Strict::Yes => "true",
            Strict::No => "false",
            Strict::AcceptNew => "accept-new",
            Strict::Ask => "ask",
        },
    );
    for f in &c.identity_files {
        line("identityfile", &f.spec);
    }
    for f in &c.certificate_files {
        line("certificatefile", &f.spec);
    }
    let files: Vec<String> = c
        .user_known_hosts
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    line("userknownhostsfile", &files.join(" "));
    if let Some(p) = &c.proxy_command_spec {
        line("proxycommand", p);
    }
    if let Some(p) = &c.proxy_jump {
        line("proxyjump", p);
    }
    if let Some(r) = &c.remote_command {
        line("remotecommand", r);
    }
    if c.server_alive_interval > 0 {
        line("serveraliveinterval", &c.server_alive_interval.to_string());
    }
    line("serveralivecountmax", &c.server_alive_count_max.to_string());
    if let Some(t) = c.connect_timeout {
        line("connecttimeout", &t.as_secs().to_string());
    }
    for (k, list, remote) in [
        ("localforward", &c.local_forwards, false),
        ("remoteforward", &c.remote_forwards, true),
    ] {
        for spec in list {
            // Checked when the configuration was resolved.
            if let Ok(f) = crate::forward::parse(spec, remote) {
                line(k, &crate::forward::show(&f));
            }
        }
    }
    for spec in &c.dynamic_forwards {
        if let Ok((bind, port)) = crate::forward::parse_dynamic(spec) {
            line(
                "dynamicforward",
                &crate::forward::show_listen(bind.as_deref(), port),
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_for(dest: &str, settings: &[(&str, &str)], file: Option<&Path>) -> Args {
        Args {
            destination: Some(dest.into()),
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            config_file: file.map(|p| p.to_string_lossy().into_owned()),
            // As in `ressh <options> destination`.
            dest_index: settings.len(),
            ..Default::default()
        }
    }

    fn with_config(
        text: &str,
        dest: &str,
        settings: &[(&str, &str)],
    ) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "ressh-cfg-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("config");
        std::fs::write(&f, text).unwrap();
        let r = resolve(&args_for(dest, settings, Some(&f)));
        std::fs::remove_dir_all(&dir).unwrap();
        r
    }

    fn rand_suffix() -> u64 {
        let mut b = [0u8; 8];
        openssl::rand::rand_bytes(&mut b).unwrap();
        u64::from_le_bytes(b)
    }

    #[test]
    fn command_lines() {
        // Commands are the rest of the line, verbatim, as ssh takes them.
        assert_eq!(
            command_line("  ProxyCommand = nc \"%h\"  %p # c \"").unwrap(),
            ("proxycommand".into(), vec!["nc \"%h\"  %p # c \"".into()])
        );
        assert_eq!(
            command_line("RemoteCommand").unwrap(),
            ("remotecommand".into(), vec![])
        );
        assert!(command_line("Port 22").is_none() && command_line("# x").is_none());
    }

    #[test]
    fn first_value_wins_and_host_blocks() {
        let text = "\
Host alias
    HostName real.example
    Port 2200
    User first
    IdentityFile ~/.ssh/a_%r_%h_%p
    CertificateFile ~/.ssh/c_%r_%h-cert.pub
Host *
    Port 9999
    User second
    IdentityFile /k/%u
    CertificateFile /c/%u
    StrictHostKeyChecking accept-new
    LocalForward 8080 localhost:80
    SendEnv LANG LC_*
    SendEnv -LC_*
    SetEnv A=1 B=2
    SetEnv C=3
";
        let c = with_config(text, "alias", &[]).unwrap();
        assert_eq!(c.host, "real.example");
        assert_eq!(c.port, 2200);
        assert_eq!(c.user, "first");
        assert_eq!(c.identity_files.len(), 2);
        assert!(c.identity_files[0]
            .path
            .ends_with(".ssh/a_first_real.example_2200"));
        assert_eq!(c.identity_files[0].spec, "~/.ssh/a_%r_%h_%p");
        assert_eq!(
            c.identity_files[1].path,
            PathBuf::from(format!("/k/{}", local_user().0))
        );
        // CertificateFile: every one kept, in order, tokens expanded.
        assert_eq!(c.certificate_files.len(), 2);
        assert!(c.certificate_files[0]
            .path
            .ends_with(".ssh/c_first_real.example-cert.pub"));
        assert_eq!(c.certificate_files[0].spec, "~/.ssh/c_%r_%h-cert.pub");
        assert_eq!(
            c.certificate_files[1].path,
            PathBuf::from(format!("/c/{}", local_user().0))
        );
        assert_eq!(c.strict, Strict::AcceptNew);
        assert_eq!(c.local_forwards, vec!["8080:localhost:80"]);
        assert_eq!(c.send_env, vec!["LANG"]);
        assert_eq!(
            c.set_env,
            vec![("A".into(), "1".into()), ("B".into(), "2".into())]
        );
        // The command line wins over the file; of -l and user@, the first.
        let c = with_config(text, "u@alias", &[("user", "cli"), ("port", "1")]).unwrap();
        assert_eq!((c.user.as_str(), c.port), ("cli", 1));
        let a = crate::args::parse(
            ["u@alias", "-l", "cli", "-p", "7"]
                .iter()
                .map(|s| s.to_string()),
        )
        .unwrap();
        let c = resolve(&Args {
            config_file: Some("none".into()),
            ..a
        })
        .unwrap();
        assert_eq!((c.user.as_str(), c.port), ("u", 7));
        // Other hosts skip the first block.
        let c = with_config(text, "other", &[]).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.user.as_str()),
            ("other", 9999, "second")
        );
    }

    #[test]
    fn match_blocks() {
        let text = "\
Match host real.example user bob
    Port 1
Match originalhost al* !localuser nobody-here
    Port 2
Match all
    Port 3
Host x
    HostName real.example
";
        // HostName is not known yet when the Match lines are read.
        let c = with_config(text, "bob@alias", &[]).unwrap();
        assert_eq!(c.port, 2);
        let c = with_config(text, "bob@real.example", &[]).unwrap();
        assert_eq!(c.port, 1);
        let c = with_config(text, "z", &[]).unwrap();
        assert_eq!(c.port, 3);
        assert!(
            with_config("Match exec \"test %h = h\"\nPort 2000\n", "h", &[])
                .is_ok_and(|c| c.port == 2000)
        );
        assert!(with_config("Match exec false\nPort 2000\n", "h", &[]).is_ok_and(|c| c.port == 22));
        assert!(with_config("Match exec\n", "h", &[]).is_err());
    }

    /// ressh's own suspicion bounds (milliseconds): defaults, values, `none`
    /// for the cap (the keepalive interval), 0 to turn suspicion off, and
    /// garbage refused.
    #[test]
    fn suspicion_bounds() {
        let c = with_config("", "h", &[]).unwrap();
        assert_eq!((c.suspect_floor_ms, c.suspect_cap_ms), (500, None));
        let c = with_config(
            "ResilienceSuspectFloor 200\nResilienceSuspectCap 3000\n",
            "h",
            &[],
        )
        .unwrap();
        assert_eq!((c.suspect_floor_ms, c.suspect_cap_ms), (200, Some(3000)));
        let c = with_config("ResilienceSuspectCap 0\n", "h", &[]).unwrap();
        assert_eq!(c.suspect_cap_ms, Some(0));
        let c = with_config("ResilienceSuspectCap none\n", "h", &[]).unwrap();
        assert_eq!(c.suspect_cap_ms, None);
        assert!(with_config("ResilienceSuspectFloor soon\n", "h", &[]).is_err());
        assert!(with_config("ResilienceSuspectCap -1\n", "h", &[]).is_err());
        let g = dump(&with_config("ResilienceSuspectCap 900\n", "h", &[]).unwrap());
        assert!(g.contains("resiliencesuspectfloor 500\n"), "{g}");
        assert!(g.contains("channelwindowmax 33554432\n"), "{g}");
        let c = with_config("ChannelWindowMax 64m\n", "h", &[]).unwrap();
        assert_eq!(c.channel_window_max, 64 << 20);
        assert!(with_config("ChannelWindowMax 1M\n", "h", &[]).is_err());
        assert!(with_config("ChannelWindowMax 2G\n", "h", &[]).is_err());
        assert!(with_config("ChannelWindowMax lots\n", "h", &[]).is_err());
        assert!(g.contains("resiliencesuspectcap 900\n"), "{g}");
    }

    #[test]
    fn proxy_and_timers() {
        let text = "\
Host *
    ProxyCommand nc %h %p
    ServerAliveInterval 5
    ServerAliveCountMax 2
    ConnectTimeout 7
    RequestTTY force
    BatchMode yes
    LogLevel DEBUG2
    UserKnownHostsFile /tmp/kh1 /tmp/kh2
";
        let c = with_config(text, "h", &[("port", "2022")]).unwrap();
        assert_eq!(c.proxy_command.as_deref(), Some("nc h 2022"));
        assert_eq!(c.proxy_command_spec.as_deref(), Some("nc %h %p"));
        assert_eq!((c.server_alive_interval, c.server_alive_count_max), (5, 2));
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(c.request_tty, RequestTty::Force);
        assert!(c.batch_mode);
        assert_eq!(c.log_level, Level::Debug2);
        assert_eq!(
            c.user_known_hosts,
            vec![PathBuf::from("/tmp/kh1"), PathBuf::from("/tmp/kh2")]
        );
        let c = with_config("ProxyJump a@b:22,c\n", "h", &[]).unwrap();
        assert_eq!(c.proxy_jump.as_deref(), Some("a@b:22,c"));
    }

    #[test]
    fn refusals_and_unknowns() {
        let e = with_config("Bogus 1\n", "h", &[]).unwrap_err();
        assert!(e.0.contains("Bad configuration option: bogus"), "{e}");
        assert!(e.0.contains("line 1"), "{e}");
        assert!(with_config("IgnoreUnknown bog*\nBogus 1\n", "h", &[]).is_ok());
        let e = with_config("Tunnel yes\n", "h", &[]).unwrap_err();
        assert!(e.0.contains("not supported"), "{e}");
        // Only in an active block.
        assert!(with_config("Host other\n Tunnel yes\n", "h", &[]).is_ok());
        assert!(with_config("Tunnel no\n", "h", &[]).is_ok());
        let e = with_config("DynamicForward 1080:h:80\n", "h", &[]).unwrap_err();
        assert!(e.0.contains("Bad dynamic forwarding"), "{e}");
        let e = with_config("ForkAfterAuthentication maybe\n", "h", &[]).unwrap_err();
        assert!(e.0.contains("expected yes or no"), "{e}");
        for v in ["yes", "no", "ask"] {
            assert!(with_config(&format!("UpdateHostKeys {v}\n"), "h", &[]).is_ok());
        }
        assert!(with_config("Port x\n", "h", &[]).is_err());
        assert!(with_config("StrictHostKeyChecking maybe\n", "h", &[]).is_err());
        // Debian's stock ssh_config lines are fine.
        let debian = "Host *\n    SendEnv LANG LC_*\n    HashKnownHosts yes\n    \
                      GSSAPIAuthentication yes\n";
        let c = with_config(debian, "h", &[]).unwrap();
        assert!(c.hash_known_hosts);
        // The command line's own refusals.
        let e = with_config("", "h", &[("tunnel", "yes")]).unwrap_err();
        assert!(e.0.contains("command line"), "{e}");
    }

    #[test]
    fn forward_agent() {
        let fa =
            |text: &str, cli: &[(&str, &str)]| with_config(text, "h", cli).unwrap().forward_agent;
        assert_eq!(fa("", &[]), None);
        assert_eq!(fa("ForwardAgent no\n", &[]), None);
        // yes: the agent ressh itself uses (IdentityAgent).
        let ia = "IdentityAgent /run/i.sock\nForwardAgent yes\n";
        assert_eq!(fa(ia, &[]), Some("/run/i.sock".into()));
        assert_eq!(fa("IdentityAgent none\n", &[("forwardagent", "yes")]), None);
        assert_eq!(
            fa("ForwardAgent /run/a.sock\n", &[]),
            Some("/run/a.sock".into())
        );
        // -A (yes) keeps the configured socket, as ssh; -a wins over it.
        let sock = "ForwardAgent /run/a.sock\n";
        assert_eq!(
            fa(sock, &[("forwardagent", "yes")]),
            Some("/run/a.sock".into())
        );
        assert_eq!(fa(sock, &[("forwardagent", "no")]), None);
        // $VAR: the variable's value; unset, no forwarding.
        std::env::set_var("RESSH_TEST_FWD_AGENT", "/run/b.sock");
        assert_eq!(
            fa("ForwardAgent $RESSH_TEST_FWD_AGENT\n", &[]),
            Some("/run/b.sock".into())
        );
        assert_eq!(fa("ForwardAgent $RESSH_TEST_UNSET_VAR\n", &[]), None);
        let e = with_config("ForwardAgent $1x\n", "h", &[]).unwrap_err();
        assert!(
            e.0.contains("Invalid ForwardAgent environment variable"),
            "{e}"
        );
    }

    #[test]
    fn dynamic_forwards_fork_and_dump() {
        let text = "\
DynamicForward 127.0.0.1:1080
DynamicForward 1081
LocalForward 127.0.0.1:8080 db:5432
ForkAfterAuthentication yes
ProxyCommand nc %h %p %r
";
        let c = with_config(text, "h", &[("dynamicforward", "[::1]:1082")]).unwrap();
        assert_eq!(
            c.dynamic_forwards,
            vec!["[::1]:1082", "127.0.0.1:1080", "1081"]
        );
        assert!(c.fork_after_authentication);
        let d = dump(&c);
        for l in [
            "dynamicforward [::1]:1082\ndynamicforward [127.0.0.1]:1080\ndynamicforward 1081\n",
            "localforward [127.0.0.1]:8080 [db]:5432\n",
            "forkafterauthentication yes\n",
            "proxycommand nc %h %p %r\n",
            "identityfile ~/.ssh/id_rsa\n",
        ] {
            assert!(d.contains(l), "{l:?} in\n{d}");
        }
        let c = with_config(text, "h", &[("clearallforwardings", "yes")]).unwrap();
        assert!(c.dynamic_forwards.is_empty() && c.local_forwards.is_empty());
    }

    #[test]
    fn include_files() {
        let dir = std::env::temp_dir().join(format!("ressh-inc-{}", rand_suffix()));
        std::fs::create_dir_all(dir.join("d")).unwrap();
        std::fs::write(dir.join("d/a.conf"), "Port 1234\n").unwrap();
        std::fs::write(dir.join("d/b.conf"), "Port 4321\nUser inc\n").unwrap();
        let main = dir.join("config");
        std::fs::write(
            &main,
            format!(
                "Host h\n  Include {}/d/*.conf\nHost *\n  User last\n",
                dir.display()
            ),
        )
        .unwrap();
        let c = resolve(&args_for("h", &[], Some(&main))).unwrap();
        assert_eq!((c.port, c.user.as_str()), (1234, "inc"));
        let c = resolve(&args_for("other", &[], Some(&main))).unwrap();
        assert_eq!((c.port, c.user.as_str()), (22, "last"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tokens_and_escape() {
        let home = PathBuf::from("/home/u");
        let t = Tokens {
            host: "h",
            original_host: "o",
            port: 22,
            user: "r",
            local_user: "l",
            home: &home,
        };
        assert_eq!(
            expand_tokens("%h:%p %r %u %n %%", &t).unwrap(),
            "h:22 r l o %"
        );
        assert_eq!(expand_tokens("%d/x", &t).unwrap(), "/home/u/x");
        assert!(expand_tokens("%Z", &t).is_err());
        assert!(expand_tokens("50%", &t).is_err());
        assert_eq!(parse_escape_char("~").unwrap(), Some(b'~'));
        assert_eq!(parse_escape_char("^]").unwrap(), Some(0x1d));
        assert_eq!(parse_escape_char("none").unwrap(), None);
        assert!(parse_escape_char("ab").is_err());
    }

    #[test]
    fn algorithm_specs() {
        let d: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let k: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(algorithm_list("x", "d,a", &d, &k).unwrap(), vec!["d", "a"]);
        assert_eq!(
            algorithm_list("x", "+d", &d, &k).unwrap(),
            vec!["a", "b", "c", "d"]
        );
        assert_eq!(algorithm_list("x", "-b", &d, &k).unwrap(), vec!["a", "c"]);
        assert_eq!(
            algorithm_list("x", "^c", &d, &k).unwrap(),
            vec!["c", "a", "b"]
        );
        assert!(algorithm_list("x", "zz", &d, &k).is_err());
        assert!(algorithm_list("x", "-*", &d, &k).is_err());
    }
}
