//! Reading files (with `Include`), splitting lines, and turning each
//! directive into a typed [`Value`] under the `Match` condition in force.
//!
//! The result is a flat list of directives, each with its condition: the
//! conjunction of the `Match` blocks it sits in (a `Match` inside a file
//! included from a `Match` block narrows that block). A directive is
//! active in the global pass when all its blocks are `Match All`, and in a
//! connection's Match pass when it is inside at least one block and all its
//! blocks match the connection — the two passes of sshd's
//! `parse_server_config`.

use std::collections::HashSet;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::keywords::{self, ca_signature_algs, host_key_algs, user_key_algs, Check, Imp, Kind};
use super::raw::{Raw, Value, MAX_PORTS};
use super::values::{is_none_word, parse_flag, parse_int, parse_port, split_match_words};
use super::{
    AddressFamily, ChannelTimeout, ConfigError, Forwarding, GatewayPorts, HostPort, LogLevel,
    MatchContext, MaxStartups, PermitList, PermitRootLogin, PermitUserEnvironment,
    PubkeyAuthOptions, Subsystem, SyslogFacility,
};
use ressh_compat::addrmatch::{self, AddrMatch};
use ressh_compat::expand::tilde_expand;
use ressh_compat::glob::glob;
use ressh_compat::misc::parse_size;
use ressh_compat::misc::{a2port, argv_split, convtime, hpdelim, split_keyword};
use ressh_compat::pattern::{self, ListMatch};

/// sshd's include nesting limit.
const MAX_DEPTH: usize = 16;
/// Files read through `Include`, in all.
const MAX_INCLUDED_FILES: usize = 256;
/// Longest line accepted.
const MAX_LINE: usize = 64 * 1024;
/// Largest file accepted.
const MAX_FILE: u64 = 4 << 20;
/// Bytes read in all (main file and includes).
const MAX_TOTAL: usize = 16 << 20;
/// Errors collected before giving up.
const MAX_ERRORS: usize = 100;
/// Warnings kept.
const MAX_WARNINGS: usize = 1000;
/// Smallest and largest ChannelWindowMax: the initial window (no growth)
/// to 1G.
const MIN_WINDOW_MAX: u64 = 2 << 20;
const MAX_WINDOW_MAX: u64 = 1 << 30;
/// Smallest and largest ResilienceBufferSize.
const MIN_RESILIENCE_BUFFER: u64 = 64 << 10;
const MAX_RESILIENCE_BUFFER: u64 = 4 << 30;

/// One `Match` criterion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Criterion {
    All,
    User(String),
    Group(String),
    Host(String),
    Address(String),
    LocalAddress(String),
    LocalPort(u16),
    /// Accepted like sshd; never matches (no routing domains on Linux).
    RDomain(String),
}

#[derive(Clone, Debug)]
pub(crate) struct MatchBlock {
    pub criteria: Vec<Criterion>,
}

impl MatchBlock {
    fn is_all(&self) -> bool {
        self.criteria == [Criterion::All]
    }

    fn matches(&self, ctx: &MatchContext) -> bool {
        self.criteria.iter().all(|c| match c {
            Criterion::All => true,
            Criterion::User(p) => ctx
                .user
                .as_deref()
                .is_some_and(|u| pattern::match_pattern_list(u, p, false) == ListMatch::Match),
            Criterion::Group(p) => ctx.user.is_some() && pattern::match_group_list(&ctx.groups, p),
            Criterion::Host(p) => ctx
                .host
                .as_deref()
                .is_some_and(|h| pattern::match_hostname(h, p) == ListMatch::Match),
            Criterion::Address(p) => ctx
                .addr
                .is_some_and(|a| addrmatch::addr_match_list(Some(a), p) == AddrMatch::Match),
            Criterion::LocalAddress(p) => ctx
                .local_addr
                .is_some_and(|a| addrmatch::addr_match_list(Some(a), p) == AddrMatch::Match),
            Criterion::LocalPort(n) => ctx.local_port == Some(*n),
            Criterion::RDomain(p) => ctx
                .rdomain
                .as_deref()
                .is_some_and(|r| pattern::match_pattern_list(r, p, false) == ListMatch::Match),
        })
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Directive {
    /// Indices into `Parsed::blocks`, all of which must match.
    pub cond: Vec<usize>,
    pub value: Value,
}

/// A parsed configuration, before evaluation.
#[derive(Clone, Debug)]
pub(crate) struct Parsed {
    pub directives: Vec<Directive>,
    pub blocks: Vec<MatchBlock>,
    pub warnings: Vec<String>,
}

impl Parsed {
    /// The global pass: directives outside Match, or only under `Match All`.
    pub(crate) fn global_raw(&self) -> Raw {
        let mut raw = Raw::default();
        for d in &self.directives {
            if d.cond.iter().all(|&b| self.blocks[b].is_all()) {
                raw.apply(&d.value);
            }
        }
        raw
    }

    /// A connection's Match pass: directives inside Match blocks that all
    /// match `ctx`.
    pub(crate) fn match_raw(&self, ctx: &MatchContext) -> Raw {
        let results: Vec<bool> = self.blocks.iter().map(|b| b.matches(ctx)).collect();
        let mut raw = Raw::default();
        for d in &self.directives {
            if !d.cond.is_empty() && d.cond.iter().all(|&b| results[b]) {
                raw.apply(&d.value);
            }
        }
        raw
    }
}

/// Why a configuration file could not be read (the message follows the
/// file's name).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("not a regular file")]
    NotRegular,
    #[error("larger than {MAX_FILE} bytes")]
    TooLarge,
    #[error("line {0}: invalid UTF-8")]
    Utf8(usize),
}

/// Reads a configuration file, bounded, as UTF-8.
pub(crate) fn read_config_file(path: &Path) -> Result<String, ReadError> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking, so that a FIFO cannot stall the daemon; fstat then
    // refuses anything but a regular file.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(ReadError::NotRegular);
    }
    let mut buf = Vec::new();
    f.take(MAX_FILE + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_FILE {
        return Err(ReadError::TooLarge);
    }
    String::from_utf8(buf).map_err(|e| {
        let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&c| c == b'\n')
            .count()
            + 1;
        ReadError::Utf8(line)
    })
}

/// Parses a main configuration text and `-o` overrides.
pub(crate) fn parse(
    text: &str,
    name: &str,
    base_dir: &Path,
    overrides: &[String],
) -> Result<Parsed, ConfigError> {
    let mut p = Parser {
        base_dir: base_dir.to_path_buf(),
        parsed: Parsed {
            directives: Vec::new(),
            blocks: Vec::new(),
            warnings: Vec::new(),
        },
        errors: Vec::new(),
        included_files: 0,
        total_bytes: text.len(),
        ports: 0,
        subsystems: HashSet::new(),
    };
    for (i, o) in overrides.iter().enumerate() {
        let mut cond = Vec::new();
        p.line("command-line", i + 1, o, &mut cond, 0, 0, true);
    }
    if p.total_bytes > MAX_TOTAL {
        p.error(format!(
            "{name}: configuration larger than {MAX_TOTAL} bytes"
        ));
    } else {
        p.text(name, text, &[], 0);
    }
    if p.errors.is_empty() {
        Ok(p.parsed)
    } else {
        Err(ConfigError::new(p.errors))
    }
}

struct Parser {
    base_dir: PathBuf,
    parsed: Parsed,
    errors: Vec<String>,
    included_files: usize,
    total_bytes: usize,
    ports: usize,
    subsystems: HashSet<String>,
}

/// How a line's arguments are given to a keyword parser.
struct Args<'a> {
    keyword: &'a str,
    /// The unsplit rest of the line.
    rest: &'a str,
    args: Vec<String>,
}

impl Args<'_> {
    fn missing(&self) -> String {
        format!("{} missing argument.", self.keyword)
    }

    /// Exactly one argument.
    fn one(&self) -> Result<&str, String> {
        match self.args.as_slice() {
            [] => Err(self.missing()),
            [a] if a.is_empty() => Err(self.missing()),
            [a] => Ok(a),
            _ => Err(self.extra()),
        }
    }

    /// One or more non-empty arguments.
    fn some(&self) -> Result<&[String], String> {
        if self.args.is_empty() {
            return Err(format!("no {} specified", self.keyword));
        }
        if self.args.iter().any(|a| a.is_empty()) {
            return Err(format!("keyword {} empty argument", self.keyword));
        }
        Ok(&self.args)
    }

    fn extra(&self) -> String {
        format!("keyword {} extra arguments at end of line", self.keyword)
    }

    /// The raw rest of the line, for commands.
    fn raw(&self) -> Result<&str, String> {
        let r = self.rest.trim_start_matches([' ', '\t']);
        if r.is_empty() {
            Err(self.missing())
        } else {
            Ok(r)
        }
    }
}

impl Parser {
    fn error(&mut self, msg: String) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(msg);
        }
    }

    fn warn(&mut self, msg: String) {
        if self.parsed.warnings.len() < MAX_WARNINGS {
            self.parsed.warnings.push(msg);
        }
    }

    fn give_up(&self) -> bool {
        self.errors.len() >= MAX_ERRORS
    }

    /// Whether a condition is active in the global pass.
    fn globally_active(&self, cond: &[usize]) -> bool {
        cond.iter().all(|&b| self.parsed.blocks[b].is_all())
    }

    /// Parses one file's text under the condition `parent`.
    fn text(&mut self, name: &str, text: &str, parent: &[usize], depth: usize) {
        let mut cond = parent.to_vec();
        for (i, line) in text.split('\n').enumerate() {
            if self.give_up() {
                return;
            }
            self.line(name, i + 1, line, &mut cond, parent.len(), depth, false);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn line(
        &mut self,
        file: &str,
        lineno: usize,
        line: &str,
        cond: &mut Vec<usize>,
        parent_len: usize,
        depth: usize,
        cmdline: bool,
    ) {
        let at = format!("{file}:{lineno}");
        if line.len() > MAX_LINE {
            self.error(format!("{at}: line too long"));
            return;
        }
        if line.contains('\0') {
            self.error(format!("{at}: NUL character in line"));
            return;
        }
        let (keyword, rest) = match split_keyword(line) {
            Ok(Some(kr)) => kr,
            Ok(None) => return,
            Err(e) => {
                self.error(format!("{at}: {e}"));
                return;
            }
        };
        let Some(kw) = keywords::lookup(keyword) else {
            self.error(format!("{at}: Bad configuration option: {keyword}"));
            return;
        };
        if rest.is_empty() {
            self.error(format!("{at}: no argument after keyword \"{keyword}\""));
            return;
        }
        if !kw.in_match && !self.globally_active(cond) {
            self.error(format!(
                "{at}: Directive '{keyword}' is not allowed within a Match block"
            ));
            return;
        }
        let args = match argv_split(rest) {
            Ok(a) => a,
            Err(e) => {
                self.error(format!("{at}: {e}"));
                return;
            }
        };
        let a = Args {
            keyword,
            rest,
            args,
        };
        match kw.kind {
            Kind::Deprecated => self.warn(format!("{at}: Deprecated option {keyword}")),
            Kind::Refused { why } => self.error(format!("{at}: {keyword} is not supported: {why}")),
            Kind::Ignored { check, safe, why } => match check_value(check, &a) {
                Err(e) => self.error(format!("{at}: {e}")),
                Ok(v) => match safe {
                    Some(ok) if !ok.iter().any(|s| s.eq_ignore_ascii_case(&v)) => {
                        self.error(format!("{at}: {keyword} {v} is not supported: {why}"))
                    }
                    _ => self.warn(format!(
                        "{at}: unsupported option {keyword} ignored ({why})"
                    )),
                },
            },
            Kind::Implemented(Imp::Match) => {
                if cmdline {
                    self.error(format!(
                        "{at}: Match directive not supported as a command-line option"
                    ));
                    return;
                }
                match parse_match(rest) {
                    Ok(criteria) => {
                        cond.truncate(parent_len);
                        cond.push(self.parsed.blocks.len());
                        self.parsed.blocks.push(MatchBlock { criteria });
                    }
                    Err(e) => self.error(format!("{at}: Bad Match condition: {e}")),
                }
            }
            Kind::Implemented(Imp::Include) => {
                if cmdline {
                    self.error(format!(
                        "{at}: Include directive not supported as a command-line option"
                    ));
                    return;
                }
                self.include(&at, &a, cond, depth);
            }
            Kind::Implemented(imp) => match self.value(&at, imp, &a, cond) {
                Ok(Some(value)) => self.parsed.directives.push(Directive {
                    cond: cond.clone(),
                    value,
                }),
                Ok(None) => {}
                Err(e) => self.error(format!("{at}: {e}")),
            },
        }
    }

    fn include(&mut self, at: &str, a: &Args, cond: &[usize], depth: usize) {
        let args = match a.some() {
            Ok(args) => args,
            Err(e) => {
                self.error(format!("{at}: {e}"));
                return;
            }
        };
        for arg in args {
            let pat = if arg.starts_with('/') {
                arg.clone()
            } else if arg.starts_with('~') {
                match tilde_expand(arg, None) {
                    Ok(p) => p,
                    Err(e) => {
                        self.error(format!("{at}: {e}"));
                        return;
                    }
                }
            } else {
                format!("{}/{arg}", self.base_dir.display())
            };
            let files = match glob(&pat) {
                Ok(f) => f,
                Err(e) => {
                    self.error(format!("{at}: include \"{pat}\" glob failed: {e}"));
                    return;
                }
            };
            for f in files {
                if depth + 1 > MAX_DEPTH {
                    self.error(format!("{at}: Too many recursive configuration includes"));
                    return;
                }
                self.included_files += 1;
                if self.included_files > MAX_INCLUDED_FILES {
                    self.error(format!(
                        "{at}: too many included files (more than {MAX_INCLUDED_FILES})"
                    ));
                    return;
                }
                let name = f.display().to_string();
                let text = match read_config_file(&f) {
                    Ok(t) => t,
                    Err(e) => {
                        self.error(format!("{at}: {name}: {e}"));
                        return;
                    }
                };
                self.total_bytes += text.len();
                if self.total_bytes > MAX_TOTAL {
                    self.error(format!(
                        "{at}: configuration larger than {MAX_TOTAL} bytes in all"
                    ));
                    return;
                }
                self.text(&name, &text, cond, depth + 1);
                if self.give_up() {
                    return;
                }
            }
        }
    }

    /// Parses an implemented keyword's arguments.
    fn value(
        &mut self,
        at: &str,
        imp: Imp,
        a: &Args,
        cond: &[usize],
    ) -> Result<Option<Value>, String> {
        let v = match imp {
            Imp::Port => {
                let p = parse_port(a.one()?)?;
                self.ports += 1;
                if self.ports > MAX_PORTS {
                    return Err("too many ports.".into());
                }
                Value::Port(p)
            }
            Imp::ListenAddress => parse_listen_address(&a.args)?,
            Imp::AddressFamily => Value::AddressFamily(one_of(
                a.one()?,
                &[
                    ("inet", AddressFamily::Inet),
                    ("inet6", AddressFamily::Inet6),
                    ("any", AddressFamily::Any),
                ],
            )?),
            Imp::HostKey => Value::HostKey(derelativise(a.one()?)?),
            Imp::PidFile => Value::PidFile(derelativise(a.one()?)?),
            Imp::LoginGraceTime => Value::LoginGraceTime(convtime(a.one()?)?),
            Imp::PermitRootLogin => Value::PermitRootLogin(one_of(
                a.one()?,
                &[
                    ("without-password", PermitRootLogin::ProhibitPassword),
                    ("prohibit-password", PermitRootLogin::ProhibitPassword),
                    ("forced-commands-only", PermitRootLogin::ForcedCommandsOnly),
                    ("yes", PermitRootLogin::Yes),
                    ("no", PermitRootLogin::No),
                ],
            )?),
            Imp::SyslogFacility => Value::SyslogFacility(parse_facility(a.one()?)?),
            Imp::LogLevel => Value::LogLevel(parse_log_level(a.one()?)?),
            Imp::PubkeyAuthentication => Value::PubkeyAuthentication(parse_flag(a.one()?)?),
            Imp::PubkeyAuthOptions => {
                let mut o = PubkeyAuthOptions::default();
                for v in a.some()? {
                    match v.to_ascii_lowercase().as_str() {
                        "none" => {}
                        "touch-required" => o.touch_required = true,
                        "verify-required" => o.verify_required = true,
                        _ => return Err(format!("unsupported {} option {v}", a.keyword)),
                    }
                }
                Value::PubkeyAuthOptions(o)
            }
            Imp::PubkeyAcceptedAlgorithms => {
                Value::PubkeyAcceptedAlgorithms(self.algorithms(at, a, AlgSet::UserKey)?)
            }
            Imp::HostKeyAlgorithms => {
                Value::HostKeyAlgorithms(self.algorithms(at, a, AlgSet::Key)?)
            }
            Imp::Ciphers => Value::Ciphers(self.algorithms(at, a, AlgSet::Cipher)?),
            Imp::Macs => Value::Macs(self.algorithms(at, a, AlgSet::Mac)?),
            Imp::KexAlgorithms => Value::KexAlgorithms(self.algorithms(at, a, AlgSet::Kex)?),
            Imp::PasswordAuthentication => Value::PasswordAuthentication(parse_flag(a.one()?)?),
            Imp::KbdInteractiveAuthentication => {
                Value::KbdInteractiveAuthentication(parse_flag(a.one()?)?)
            }
            Imp::PermitEmptyPasswords => Value::PermitEmptyPasswords(parse_flag(a.one()?)?),
            Imp::PermitTty => Value::PermitTty(parse_flag(a.one()?)?),
            Imp::ExposeAuthInfo => Value::ExposeAuthInfo(parse_flag(a.one()?)?),
            Imp::StrictModes => Value::StrictModes(parse_flag(a.one()?)?),
            Imp::PermitUserEnvironment => {
                let v = a.one()?;
                Value::PermitUserEnvironment(match v {
                    "yes" => PermitUserEnvironment::Yes,
                    "no" => PermitUserEnvironment::No,
                    p => PermitUserEnvironment::Allow(p.to_string()),
                })
            }
            Imp::AllowTcpForwarding => Value::AllowTcpForwarding(parse_forwarding(a.one()?)?),
            Imp::AllowStreamLocalForwarding => {
                Value::AllowStreamLocalForwarding(parse_forwarding(a.one()?)?)
            }
            Imp::AllowAgentForwarding => Value::AllowAgentForwarding(parse_flag(a.one()?)?),
            Imp::X11Forwarding => Value::X11Forwarding(parse_flag(a.one()?)?),
            Imp::X11DisplayOffset => Value::X11DisplayOffset(int_arg(a)?),
            Imp::X11UseLocalhost => Value::X11UseLocalhost(parse_flag(a.one()?)?),
            Imp::XAuthLocation => Value::XAuthLocation(a.one()?.to_string()),
            Imp::DisableForwarding => Value::DisableForwarding(parse_flag(a.one()?)?),
            Imp::GatewayPorts => Value::GatewayPorts(one_of(
                a.one()?,
                &[
                    ("clientspecified", GatewayPorts::ClientSpecified),
                    ("yes", GatewayPorts::Yes),
                    ("no", GatewayPorts::No),
                ],
            )?),
            Imp::PermitOpen => Value::PermitOpen(parse_permit_list(a, false)?),
            Imp::PermitListen => Value::PermitListen(parse_permit_list(a, true)?),
            Imp::AllowUsers | Imp::DenyUsers => {
                let list = a.some()?;
                for u in list {
                    if !pattern::valid_user_pattern(u) {
                        return Err(format!("invalid {} pattern: \"{u}\"", a.keyword));
                    }
                }
                if imp == Imp::AllowUsers {
                    Value::AllowUsers(list.to_vec())
                } else {
                    Value::DenyUsers(list.to_vec())
                }
            }
            Imp::AllowGroups => Value::AllowGroups(a.some()?.to_vec()),
            Imp::DenyGroups => Value::DenyGroups(a.some()?.to_vec()),
            Imp::Subsystem => {
                let (name, cmd) = match a.args.as_slice() {
                    [] => return Err(a.missing()),
                    [n, ..] if n.is_empty() => return Err(a.missing()),
                    [_] => return Err("Missing subsystem command.".into()),
                    [_, c, ..] if c.is_empty() => return Err("Missing subsystem command.".into()),
                    [n, rest @ ..] => (n.clone(), rest.join(" ")),
                };
                if !self.subsystems.insert(name.clone()) && self.globally_active(cond) {
                    self.warn(format!(
                        "{at}: Subsystem '{name}' already defined; the first definition is used"
                    ));
                }
                Value::Subsystem(Subsystem { name, command: cmd })
            }
            Imp::MaxStartups => Value::MaxStartups(parse_max_startups(a.one()?)?),
            Imp::PerSourceMaxStartups => {
                let v = a.one()?;
                Value::PerSourceMaxStartups(if v == "none" {
                    None
                } else {
                    Some(parse_int(v).map_err(|e| format!("{} {e}.", a.keyword))?)
                })
            }
            Imp::PerSourceNetBlockSize => {
                let v = a.one()?;
                let bad = || format!("Invalid {} spec.", a.keyword);
                let (v4, v6) = match v.split_once(':') {
                    Some((x, y)) => (x, Some(y)),
                    None => (v, None),
                };
                let v4 = parse_int(v4).ok().filter(|&n| n <= 32).ok_or_else(bad)?;
                let v6 = match v6 {
                    Some(y) => parse_int(y).ok().filter(|&n| n <= 128).ok_or_else(bad)?,
                    None => 128,
                };
                Value::PerSourceNetBlockSize(v4 as u8, v6 as u8)
            }
            Imp::MaxAuthTries => Value::MaxAuthTries(int_arg(a)?),
            Imp::MaxSessions => Value::MaxSessions(int_arg(a)?),
            Imp::ClientAliveCountMax => Value::ClientAliveCountMax(int_arg(a)?),
            Imp::RequiredRsaSize => Value::RequiredRsaSize(int_arg(a)?),
            Imp::MaxDetachedSessions => Value::MaxDetachedSessions(int_arg(a)?),
            Imp::Banner => Value::Banner(derelativise(a.one()?)?),
            Imp::ClientAliveInterval => Value::ClientAliveInterval(convtime(a.one()?)?),
            Imp::DetachTimeout => Value::DetachTimeout(convtime(a.one()?)?),
            Imp::DetachGraceTime => Value::DetachGraceTime(convtime(a.one()?)?),
            Imp::AuthorizedKeysFile => {
                let list = a.some()?;
                let mut out = Vec::with_capacity(list.len());
                for f in list {
                    out.push(tilde_expand(f, None)?);
                }
                Value::AuthorizedKeysFile(out)
            }
            Imp::AuthorizedKeysCommand | Imp::AuthorizedPrincipalsCommand => {
                let c = a.raw()?;
                let c = if is_none_word(c) {
                    None
                } else if c.starts_with('/') {
                    Some(c.to_string())
                } else {
                    return Err(format!("{} must be an absolute path", a.keyword));
                };
                match imp {
                    Imp::AuthorizedKeysCommand => Value::AuthorizedKeysCommand(c),
                    _ => Value::AuthorizedPrincipalsCommand(c),
                }
            }
            Imp::AuthorizedKeysCommandUser => {
                Value::AuthorizedKeysCommandUser(a.one()?.to_string())
            }
            Imp::AuthorizedPrincipalsCommandUser => {
                Value::AuthorizedPrincipalsCommandUser(a.one()?.to_string())
            }
            Imp::RevokedKeys => Value::RevokedKeys(derelativise(a.one()?)?),
            Imp::TrustedUserCaKeys => Value::TrustedUserCaKeys(derelativise(a.one()?)?),
            Imp::AuthorizedPrincipalsFile => {
                let f = a.one()?;
                Value::AuthorizedPrincipalsFile(if is_none_word(f) {
                    None
                } else {
                    Some(tilde_expand(f, None)?)
                })
            }
            Imp::CaSignatureAlgorithms => {
                Value::CaSignatureAlgorithms(self.algorithms(at, a, AlgSet::CaKey)?)
            }
            Imp::HostCertificate => match derelativise(a.one()?)? {
                Some(p) => Value::HostCertificate(p),
                None => return Err("HostCertificate none: a file name is needed".into()),
            },
            Imp::AcceptEnv => {
                let list = a.some()?;
                if list.iter().any(|e| e.contains('=')) {
                    return Err("Invalid environment name.".into());
                }
                Value::AcceptEnv(list.to_vec())
            }
            Imp::SetEnv => {
                let mut out: Vec<String> = Vec::new();
                for e in a.some()? {
                    let Some((name, _)) = e.split_once('=') else {
                        return Err("Invalid environment.".into());
                    };
                    if name.is_empty() {
                        return Err("Invalid environment.".into());
                    }
                    if !out
                        .iter()
                        .any(|o| o.split_once('=').is_some_and(|(n, _)| n == name))
                    {
                        out.push(e.clone());
                    }
                }
                Value::SetEnv(out)
            }
            Imp::ForceCommand => {
                let c = a.raw()?;
                Value::ForceCommand(if is_none_word(c) {
                    None
                } else {
                    Some(c.to_string())
                })
            }
            Imp::ChrootDirectory => {
                let d = a.one()?;
                Value::ChrootDirectory(if is_none_word(d) {
                    None
                } else {
                    Some(d.to_string())
                })
            }
            Imp::AuthenticationMethods => Value::AuthenticationMethods(parse_auth_methods(a)?),
            Imp::StreamLocalBindMask => {
                let v = a.one()?;
                let m = (!v.is_empty()
                    && v.len() <= 12
                    && v.bytes().all(|c| (b'0'..=b'7').contains(&c)))
                .then(|| u32::from_str_radix(v, 8).ok())
                .flatten()
                .filter(|&m| m <= 0o777)
                .ok_or_else(|| format!("Invalid {}.", a.keyword))?;
                Value::StreamLocalBindMask(m)
            }
            Imp::StreamLocalBindUnlink => Value::StreamLocalBindUnlink(parse_flag(a.one()?)?),
            Imp::RekeyLimit => {
                let (size, interval) = match a.args.as_slice() {
                    [] => return Err(a.missing()),
                    [s] => (s, None),
                    [s, i] => (s, Some(i)),
                    _ => return Err(a.extra()),
                };
                let bytes = if size == "default" {
                    0
                } else {
                    let b =
                        parse_size(size).map_err(|e| format!("Bad {} number: {e}", a.keyword))?;
                    if b != 0 && b < 16 {
                        return Err(format!("{} too small", a.keyword));
                    }
                    b
                };
                let interval = match interval {
                    None => None,
                    Some(i) if i == "none" => None,
                    Some(i) => Some(convtime(i)?),
                };
                Value::RekeyLimit(bytes, interval)
            }
            Imp::ChannelTimeout => {
                let list = a.some()?;
                let mut out = Vec::new();
                for item in list {
                    if is_none_word(item) {
                        if list.len() > 1 {
                            return Err(format!(
                                "keyword {} \"none\" argument must appear alone.",
                                a.keyword
                            ));
                        }
                        continue;
                    }
                    let (ty, t) = item
                        .split_once('=')
                        .filter(|(ty, _)| !ty.is_empty())
                        .ok_or_else(|| format!("invalid channel timeout {item}"))?;
                    let timeout =
                        convtime(t).map_err(|_| format!("invalid channel timeout {item}"))?;
                    out.push(ChannelTimeout {
                        channel_type: ty.to_string(),
                        timeout,
                    });
                }
                Value::ChannelTimeout(out)
            }
            Imp::UnusedConnectionTimeout => {
                let v = a.one()?;
                Value::UnusedConnectionTimeout(if is_none_word(v) {
                    None
                } else {
                    Some(convtime(v)?).filter(|d| *d != Duration::ZERO)
                })
            }
            Imp::VersionAddendum => {
                let v = a.raw()?;
                if v.contains(['\r', '\n']) {
                    return Err(format!("Invalid {} argument", a.keyword));
                }
                Value::VersionAddendum(if is_none_word(v) {
                    String::new()
                } else {
                    v.to_string()
                })
            }
            Imp::PrivilegeSeparationUser => {
                let u = a.one()?;
                let ok = u.len() <= 32
                    && !u.starts_with('-')
                    && u.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'));
                if !ok {
                    return Err(format!("{}: invalid user name \"{u}\"", a.keyword));
                }
                Value::PrivilegeSeparationUser(u.to_string())
            }
            Imp::PrivilegeSeparationDirectory => {
                let d = a.one()?;
                if !d.starts_with('/') {
                    return Err(format!("{} must be an absolute path", a.keyword));
                }
                Value::PrivilegeSeparationDirectory(PathBuf::from(d))
            }
            Imp::HostKeyAgent => {
                // As sshd: a socket path, `SSH_AUTH_SOCK` (that variable
                // of resshd's environment), or none.
                let v = a.one()?;
                Value::HostKeyAgent(match v {
                    _ if is_none_word(v) => None,
                    "SSH_AUTH_SOCK" => std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from),
                    _ => Some(PathBuf::from(v)),
                })
            }
            Imp::ProxyProtocolFrom => {
                // Balancers' addresses: CIDR networks or addresses, no
                // patterns or negation (a header is believed only from
                // exactly these).
                let v = a.one()?;
                Value::ProxyProtocolFrom(if is_none_word(v) {
                    None
                } else if addrmatch::addr_match_cidr_list(None, v) == AddrMatch::Invalid {
                    return Err(format!(
                        "{}: invalid address list \"{v}\" (addresses or networks, comma separated)",
                        a.keyword
                    ));
                } else {
                    Some(v.to_string())
                })
            }
            Imp::FleetKey | Imp::FleetNodes => {
                let v = a.one()?;
                let path = if is_none_word(v) {
                    None
                } else if v.starts_with('/') {
                    Some(PathBuf::from(v))
                } else {
                    return Err(format!("{} must be an absolute path or none", a.keyword));
                };
                if imp == Imp::FleetKey {
                    Value::FleetKey(path)
                } else {
                    Value::FleetNodes(path)
                }
            }
            Imp::FleetDrain => Value::FleetDrain(parse_flag(a.one()?)?),
            Imp::FleetListenAddress => {
                let v = a.one()?;
                Value::FleetListenAddress(if is_none_word(v) {
                    None
                } else {
                    Some(v.parse::<std::net::SocketAddr>().map_err(|_| {
                        format!(
                            "{}: want address:port or [address]:port, got \"{v}\"",
                            a.keyword
                        )
                    })?)
                })
            }
            Imp::BrokerSocket => {
                let d = a.one()?;
                if !d.starts_with('/') {
                    return Err(format!("{} must be an absolute path", a.keyword));
                }
                Value::BrokerSocket(PathBuf::from(d))
            }
            Imp::ResshdKexPath | Imp::ResshdSessionPath => {
                let d = a.one()?;
                if !d.starts_with('/') {
                    return Err(format!("{} must be an absolute path", a.keyword));
                }
                match imp {
                    Imp::ResshdKexPath => Value::ResshdKexPath(PathBuf::from(d)),
                    _ => Value::ResshdSessionPath(PathBuf::from(d)),
                }
            }
            Imp::ResilienceBufferSize => {
                let v = parse_size(a.one()?).map_err(|e| format!("{}: {e}", a.keyword))?;
                if !(MIN_RESILIENCE_BUFFER..=MAX_RESILIENCE_BUFFER).contains(&v) {
                    return Err(format!(
                        "{} must be between {MIN_RESILIENCE_BUFFER} and {MAX_RESILIENCE_BUFFER} bytes",
                        a.keyword
                    ));
                }
                Value::ResilienceBufferSize(v)
            }
            Imp::ChannelWindowMax => {
                let v = parse_size(a.one()?).map_err(|e| format!("{}: {e}", a.keyword))?;
                if !(MIN_WINDOW_MAX..=MAX_WINDOW_MAX).contains(&v) {
                    return Err(format!(
                        "{} must be between {MIN_WINDOW_MAX} and {MAX_WINDOW_MAX} bytes",
                        a.keyword
                    ));
                }
                Value::ChannelWindowMax(v)
            }
            Imp::UsePam => Value::UsePam(parse_flag(a.one()?)?),
            Imp::PrintMotd => Value::PrintMotd(parse_flag(a.one()?)?),
            Imp::PrintLastLog => Value::PrintLastLog(parse_flag(a.one()?)?),
            Imp::TcpKeepAlive => Value::TcpKeepAlive(parse_flag(a.one()?)?),
            // As sshd: delayed is yes (compression after authentication).
            Imp::Compression => Value::Compression(match a.one()? {
                v if v.eq_ignore_ascii_case("delayed") => true,
                v => parse_flag(v)?,
            }),
            Imp::Include | Imp::Match => return Ok(None),
        };
        Ok(Some(v))
    }

    /// An algorithm list with sshd's `+` (append to the defaults), `-`
    /// (remove from the defaults) and `^` (prepend) modifiers, resolved
    /// against what resshd implements.
    fn algorithms(&mut self, at: &str, a: &Args, set: AlgSet) -> Result<Vec<String>, String> {
        let spec = a.one()?;
        let AlgLists {
            defaults,
            supported,
            known,
            what,
            wildcards,
        } = set.lists();
        if let Some(patterns) = spec.strip_prefix('-') {
            let left: Vec<String> = defaults
                .iter()
                .filter(|n| pattern::match_pattern_list(n, patterns, false) != ListMatch::Match)
                .cloned()
                .collect();
            if left.is_empty() {
                return Err(format!("{} '{spec}' leaves no {what}", a.keyword));
            }
            return Ok(left);
        }
        let (modifier, names) = match spec.as_bytes()[0] {
            b'+' | b'^' => (Some(spec.as_bytes()[0]), &spec[1..]),
            _ => (None, spec),
        };
        let mut wanted: Vec<String> = Vec::new();
        for name in names.split(',') {
            let bad = || format!("Bad {what} spec '{spec}'.");
            if name.is_empty() || name.starts_with('!') {
                return Err(bad());
            }
            if name.contains(['*', '?']) {
                if !wildcards || !known.iter().any(|k| pattern::match_pattern(k, name)) {
                    return Err(bad());
                }
                wanted.push(name.to_string());
            } else if supported.iter().any(|o| o == name) {
                wanted.push(name.to_string());
            } else if known.contains(&name) {
                // One of OpenSSH's that resshd refuses (resshd_config(5)
                // says which and why): left out with a warning, so that a
                // configuration written for OpenSSH's compatibility keeps
                // working without it. A list left with nothing is an error
                // below.
                self.warn(format!(
                    "{at}: {} {spec}: {what} {name} is not supported by resshd; ignored",
                    a.keyword
                ));
            } else {
                return Err(bad());
            }
        }
        let list: Vec<String> = match modifier {
            Some(b'+') => cat(&defaults, &wanted),
            Some(_) => cat(&wanted, &defaults),
            None => wanted,
        };
        // Expand patterns against what resshd implements, in its order.
        let mut out: Vec<String> = Vec::new();
        for p in &list {
            for o in &supported {
                if pattern::match_pattern(o, p) && !out.contains(o) {
                    out.push(o.clone());
                }
            }
        }
        if out.is_empty() {
            return Err(format!(
                "{} '{spec}' names no {what} resshd supports",
                a.keyword
            ));
        }
        Ok(out)
    }
}

/// Concatenates two name lists, dropping repeats.
fn cat(a: &[String], b: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in a.iter().chain(b) {
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    out
}

#[derive(Clone, Copy)]
enum AlgSet {
    Cipher,
    Mac,
    Kex,
    Key,
    UserKey,
    CaKey,
}

impl AlgSet {
    /// (resshd's defaults, everything resshd implements, OpenSSH's names,
    /// description, wildcards allowed).
    fn lists(self) -> AlgLists {
        let s = |v: &[&str]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let (defaults, supported, known, what, wildcards) = match self {
            AlgSet::Cipher => {
                let all: Vec<&str> = ressh_proto::cipher::CIPHERS
                    .iter()
                    .map(|c| c.name)
                    .collect();
                (s(&all), s(&all), keywords::OPENSSH_CIPHERS, "cipher", false)
            }
            AlgSet::Mac => {
                let all: Vec<&str> = ressh_proto::cipher::MACS.iter().map(|m| m.name).collect();
                (s(&all), s(&all), keywords::OPENSSH_MACS, "MAC", false)
            }
            AlgSet::Kex => (
                s(ressh_proto::kex::KEX_ALGS),
                s(ressh_proto::kex::KEX_SUPPORTED),
                keywords::OPENSSH_KEX,
                "key exchange algorithm",
                false,
            ),
            AlgSet::Key => {
                let all = s(&host_key_algs());
                (
                    all.clone(),
                    all,
                    keywords::OPENSSH_KEY_ALGS,
                    "key algorithm",
                    true,
                )
            }
            AlgSet::UserKey => {
                let all = s(&user_key_algs());
                (
                    all.clone(),
                    all,
                    keywords::OPENSSH_KEY_ALGS,
                    "key algorithm",
                    true,
                )
            }
            AlgSet::CaKey => {
                let all = s(&ca_signature_algs());
                (
                    all.clone(),
                    all,
                    keywords::OPENSSH_KEY_ALGS,
                    "key algorithm",
                    true,
                )
            }
        };
        AlgLists {
            defaults,
            supported,
            known,
            what,
            wildcards,
        }
    }
}

/// What an algorithm list is resolved against.
struct AlgLists {
    defaults: Vec<String>,
    supported: Vec<String>,
    known: &'static [&'static str],
    what: &'static str,
    wildcards: bool,
}

/// Checks an ignored keyword's value; returns it (for the safe-value test).
fn check_value(check: Check, a: &Args) -> Result<String, String> {
    match check {
        Check::Flag => {
            let v = a.one()?;
            parse_flag(v)?;
            Ok(v.to_string())
        }
        Check::OneOf(words) => {
            let v = a.one()?;
            if words.iter().any(|w| w.eq_ignore_ascii_case(v)) {
                Ok(v.to_string())
            } else {
                Err(format!("unsupported option \"{v}\"."))
            }
        }
        Check::OneOfExact(words) => {
            let v = a.one()?;
            if words.contains(&v) {
                Ok(v.to_string())
            } else {
                Err(format!("bad {} argument {v}", a.keyword))
            }
        }
        Check::One => a.one().map(str::to_string),
        Check::Some => a.some().map(|l| l.join(" ")),
    }
}

fn int_arg(a: &Args) -> Result<u32, String> {
    let v = a.one()?;
    parse_int(v).map_err(|e| format!("{} {e}.", a.keyword))
}

/// One of a fixed set of words, case-insensitively.
fn one_of<T: Copy>(v: &str, table: &[(&str, T)]) -> Result<T, String> {
    table
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(v))
        .map(|(_, t)| *t)
        .ok_or_else(|| format!("unsupported option \"{v}\"."))
}

fn parse_forwarding(v: &str) -> Result<Forwarding, String> {
    one_of(
        v,
        &[
            ("yes", Forwarding::Yes),
            ("all", Forwarding::Yes),
            ("no", Forwarding::No),
            ("remote", Forwarding::Remote),
            ("local", Forwarding::Local),
        ],
    )
}

fn parse_log_level(v: &str) -> Result<LogLevel, String> {
    one_of(
        v,
        &[
            ("QUIET", LogLevel::Quiet),
            ("FATAL", LogLevel::Fatal),
            ("ERROR", LogLevel::Error),
            ("INFO", LogLevel::Info),
            ("VERBOSE", LogLevel::Verbose),
            ("DEBUG", LogLevel::Debug1),
            ("DEBUG1", LogLevel::Debug1),
            ("DEBUG2", LogLevel::Debug2),
            ("DEBUG3", LogLevel::Debug3),
        ],
    )
    .map_err(|_| format!("unsupported log level '{v}'"))
}

fn parse_facility(v: &str) -> Result<SyslogFacility, String> {
    one_of(
        v,
        &[
            ("DAEMON", SyslogFacility::Daemon),
            ("USER", SyslogFacility::User),
            ("AUTH", SyslogFacility::Auth),
            ("AUTHPRIV", SyslogFacility::AuthPriv),
            ("LOCAL0", SyslogFacility::Local0),
            ("LOCAL1", SyslogFacility::Local1),
            ("LOCAL2", SyslogFacility::Local2),
            ("LOCAL3", SyslogFacility::Local3),
            ("LOCAL4", SyslogFacility::Local4),
            ("LOCAL5", SyslogFacility::Local5),
            ("LOCAL6", SyslogFacility::Local6),
            ("LOCAL7", SyslogFacility::Local7),
        ],
    )
    .map_err(|_| format!("unsupported log facility '{v}'"))
}

fn parse_max_startups(v: &str) -> Result<MaxStartups, String> {
    let bad = || "Invalid MaxStartups spec.".to_string();
    let parts: Vec<&str> = v.split(':').collect();
    let n = |s: &str| parse_int(s).map_err(|_| bad());
    let m = match parts.as_slice() {
        [a] => {
            let a = n(a)?;
            MaxStartups {
                start: a,
                rate: 30,
                full: a,
            }
        }
        [a, r, f] => MaxStartups {
            start: n(a)?,
            rate: n(r)?,
            full: n(f)?,
        },
        _ => return Err(bad()),
    };
    if m.start > m.full || m.rate > 100 || m.rate < 1 || m.full == 0 || m.start == 0 {
        return Err(bad());
    }
    Ok(m)
}

fn parse_listen_address(args: &[String]) -> Result<Value, String> {
    let Some(arg) = args.first().filter(|a| !a.is_empty()) else {
        return Err("missing address".into());
    };
    if args.len() > 1 {
        if args[1] == "rdomain" && args.len() == 3 {
            return Err("ListenAddress rdomain is not supported: routing domains are not supported on this platform".into());
        }
        return Err("bad ListenAddress syntax".into());
    }
    let colons = arg.matches(':').count();
    let (host, port) = if !arg.contains('[') && colons >= 2 {
        (arg.clone(), None)
    } else {
        let (host, rest) = hpdelim(arg).ok_or("bad address:port usage")?;
        let port = match rest {
            None => None,
            Some(p) => Some(parse_port(p).map_err(|_| "bad port number".to_string())?),
        };
        (host, port)
    };
    let valid_name = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'));
    let valid_v6 = host
        .split_once('%')
        .map_or(host.parse::<IpAddr>().is_ok(), |(a, z)| {
            a.parse::<std::net::Ipv6Addr>().is_ok() && !z.is_empty() && z.len() < 16
        });
    if !valid_name && !valid_v6 {
        return Err(format!("bad addr or host: {host}"));
    }
    Ok(Value::ListenAddress { host, port })
}

/// PermitOpen / PermitListen: `any`, `none` or `host:port` entries.
fn parse_permit_list(a: &Args, listen: bool) -> Result<PermitList, String> {
    let list = a.some()?;
    if let [w] = list {
        if w == "any" {
            return Ok(PermitList::Any);
        }
        if w == "none" {
            return Ok(PermitList::None);
        }
    }
    let mut out = Vec::new();
    for arg in list {
        if arg == "any" || arg == "none" {
            return Err(format!("{arg} must appear alone on a {} line.", a.keyword));
        }
        let (host, port) = if listen && !arg.contains(':') {
            ("*".to_string(), Some(arg.as_str()))
        } else {
            let (h, p) = hpdelim(arg).ok_or_else(|| format!("{} missing host", a.keyword))?;
            if h.is_empty() {
                return Err(format!("{} missing host", a.keyword));
            }
            (h, p)
        };
        let port = match port {
            Some("*") => None,
            Some(p) => Some(
                a2port(p)
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("{} bad port number", a.keyword))?,
            ),
            None => return Err(format!("{} bad port number", a.keyword)),
        };
        out.push(HostPort { host, port });
    }
    Ok(PermitList::List(out))
}

fn parse_auth_methods(a: &Args) -> Result<Option<Vec<Vec<String>>>, String> {
    let list = a.some()?;
    if list.iter().any(|l| l == "any") {
        if list.len() > 1 {
            return Err(format!("\"any\" must appear alone in {}", a.keyword));
        }
        return Ok(None);
    }
    let mut out = Vec::new();
    for l in list {
        let mut methods = Vec::new();
        for m in l.split(',') {
            let (name, sub) = match m.split_once(':') {
                Some((n, s)) => (n, Some(s)),
                None => (m, None),
            };
            let ok = match name {
                // "none", as sshd takes it: a list no login can complete.
                "none" | "publickey" | "password" | "hostbased" | "gssapi-with-mic" => {
                    sub.is_none()
                }
                "keyboard-interactive" => sub.is_none_or(|s| !s.is_empty()),
                _ => false,
            };
            if !ok {
                return Err(format!("invalid {} method list.", a.keyword));
            }
            methods.push(m.to_string());
        }
        out.push(methods);
    }
    Ok(Some(out))
}

/// Parses a `Match` line's criteria.
fn parse_match(rest: &str) -> Result<Vec<Criterion>, String> {
    let words = split_match_words(rest)?;
    if words.is_empty() {
        return Err("One or more attributes required for Match".into());
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let attrib = words[i].as_str();
        if attrib.eq_ignore_ascii_case("all") {
            if i > 0 || words.len() > 1 {
                return Err("'all' cannot be combined with other Match attributes".into());
            }
            return Ok(vec![Criterion::All]);
        }
        let Some(arg) = words.get(i + 1).filter(|a| !a.is_empty()) else {
            return Err(format!("Missing Match criteria for {attrib}"));
        };
        let arg = arg.clone();
        let c = match attrib.to_ascii_lowercase().as_str() {
            "user" => Criterion::User(arg),
            "group" => Criterion::Group(arg),
            "host" => Criterion::Host(arg),
            "address" | "localaddress" => {
                if addrmatch::addr_match_list(None, &arg) == AddrMatch::Invalid {
                    return Err(format!("Invalid Match {attrib} argument '{arg}'"));
                }
                if attrib.eq_ignore_ascii_case("address") {
                    Criterion::Address(arg)
                } else {
                    Criterion::LocalAddress(arg)
                }
            }
            "localport" => Criterion::LocalPort(
                a2port(&arg).ok_or_else(|| format!("Invalid LocalPort '{arg}' on Match line"))?,
            ),
            "rdomain" => Criterion::RDomain(arg),
            _ => return Err(format!("Unsupported Match attribute {attrib}")),
        };
        out.push(c);
        i += 2;
    }
    Ok(out)
}

/// sshd's `derelativise_path`: `none` stays none (None), `~` expands, and
/// relative paths become relative to the current directory.
fn derelativise(path: &str) -> Result<Option<PathBuf>, String> {
    if is_none_word(path) {
        return Ok(None);
    }
    let p = tilde_expand(path, None)?;
    if p.starts_with('/') {
        return Ok(Some(PathBuf::from(p)));
    }
    let cwd = std::env::current_dir().map_err(|e| format!("getcwd: {e}"))?;
    Ok(Some(cwd.join(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_lines() {
        assert_eq!(
            parse_match("User bob").unwrap(),
            vec![Criterion::User("bob".into())]
        );
        assert_eq!(
            parse_match("user bob address 10.0.0.0/8").unwrap(),
            vec![
                Criterion::User("bob".into()),
                Criterion::Address("10.0.0.0/8".into())
            ]
        );
        assert_eq!(parse_match("All").unwrap(), vec![Criterion::All]);
        assert_eq!(parse_match("all # comment").unwrap(), vec![Criterion::All]);
        assert!(parse_match("all user x").is_err());
        assert!(parse_match("user x all").is_err());
        assert!(parse_match("user").is_err());
        assert!(parse_match("").is_err());
        assert!(parse_match("bogus x").is_err());
        assert!(parse_match("address 10.0.0.1/8").is_err());
        assert!(parse_match("localport x").is_err());
        assert_eq!(
            parse_match("LocalPort 2222").unwrap(),
            vec![Criterion::LocalPort(2222)]
        );
    }
}
