//! authorized_keys and the user-level access checks around it, as OpenSSH
//! 9.2's sshd does them: the file format and key options (sshd(8)
//! "AUTHORIZED_KEYS FILE FORMAT"; auth-options.c, auth2-pubkeyfile.c),
//! `from=` host/address patterns (match.c, addrmatch.c), AllowUsers /
//! DenyUsers / AllowGroups / DenyGroups (auth.c `allowed_user()`),
//! StrictModes (misc.c `safe_path()`), and the AuthorizedKeysFile tokens
//! (auth.c `expand_authorized_keys()`).
//!
//! # Reading users' files as root
//!
//! sshd opens authorized_keys files with the user's identity
//! (`temporarily_use_uid()`), so a user cannot make it read a file the user
//! could not read, nor open a device node only root may open (a symlink from
//! `~/.ssh/authorized_keys` to `/dev/watchdog` would otherwise arm the
//! watchdog). [`find_key`] does the same on Linux with the per-thread file
//! system identity: `setfsgid(gid)` and `setfsuid(uid)` around the `open()`
//! and the StrictModes checks, restored before returning (when the monitor
//! does not run as root, it keeps its own identity: it can then only open
//! what it may open anyway). Supplementary groups stay the monitor's own
//! during the open. The file is opened with `O_NONBLOCK|O_NOCTTY` (a FIFO
//! does not block, a terminal does not become the controlling one),
//! `fstat()`ed, refused unless it is a regular file, and only then read.
//! Symlinks are followed as sshd follows them; StrictModes checks the
//! canonical path as sshd does.
//!
//! # Deliberate differences from OpenSSH
//!
//! - Only the key types of `ressh_proto::keys` are accepted: ssh-ed25519,
//!   ssh-rsa (also written `rsa-sha2-256` / `rsa-sha2-512` as OpenSSH
//!   accepts), ecdsa-sha2-nistp256/384/521 and the FIDO security keys
//!   sk-ssh-ed25519@openssh.com and sk-ecdsa-sha2-nistp256@openssh.com.
//!   Lines of other types are skipped with a reason.
//! - Certificates (PROTOCOL.certkeys, `ressh_proto::cert`) are accepted by
//!   `cert-authority` lines (with `principals=`), by TrustedUserCAKeys and
//!   AuthorizedPrincipalsFile ([`ca_in_file`], [`find_principal`]); their
//!   critical options and extensions become key options
//!   ([`cert_options`]) merged with the line's as sshd merges them
//!   ([`merge_options`]).
//! - Addresses in patterns are parsed strictly (dotted-quad IPv4, IPv6
//!   without a `%scope`); OpenSSH's getaddrinfo() also takes shorthand IPv4
//!   such as `127.1`. Such entries are compared as wildcard patterns here.
//!   IPv4-mapped IPv6 peer addresses are compared as IPv4, as sshd does.
//! - Option values (`command=`, `environment=` …) must be valid UTF-8, or
//!   the line is skipped. Comments may be anything (decoded lossily).
//! - Lines longer than [`MAX_LINE_LEN`] bytes are skipped (OpenSSH has no
//!   limit). A file's total size is not limited, as in OpenSSH.
//! - `expiry-time` is local time, exactly as OpenSSH computes it
//!   (`mktime()` with `tm_isdst = 0`), or UTC with a `Z` / `UTC` suffix.
//! - `permitopen` / `permitlisten` ports may be service names
//!   (from /etc/services, `ressh_compat::misc::a2port`), as in OpenSSH.
//!   Values are parsed here, once, into
//!   [`HostPort`] entries (names lowercased, addresses as addresses); a
//!   malformed one refuses the line, as in OpenSSH.

use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, BufRead, BufReader};
use std::net::IpAddr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::unistd::{geteuid, setfsgid, setfsuid, Gid, Uid};

use ressh_ipc::permit::{HostPattern, HostPort, PortPattern};
use ressh_proto::cert::{CertKind, Certificate};
use ressh_proto::keys::{KeyType, PublicKey};
use ressh_proto::OfferedKey;

use ressh_compat::expand::percent_expand;
use ressh_compat::misc::a2port;
use ressh_compat::pattern;
use serde::{Deserialize, Serialize};

/// Longest authorized_keys line accepted, without its line ending.
pub const MAX_LINE_LEN: usize = 64 * 1024;
/// [`KeyOptions::tunnel`] value of `tunnel="any"` (OpenSSH's SSH_TUNID_ANY).
pub const TUNNEL_ANY: u32 = 0x7fff_ffff;

/// OpenSSH's SSH_AUTHOPT_ENV_MAX and SSH_AUTHOPT_PERMIT_MAX.
const ENV_MAX: usize = 1024;
const PERMIT_MAX: usize = 4096;
/// glibc's NI_MAXHOST: bound on a permitopen/permitlisten host.
const NI_MAXHOST: usize = 1025;
/// Largest tunnel number (OpenSSH's SSH_TUNID_MAX).
const TUNID_MAX: u64 = TUNNEL_ANY as u64 - 1;
/// Bound on an expanded relative AuthorizedKeysFile path (PATH_MAX).
const PATH_MAX: usize = 4096;

/// The key options of one authorized_keys line.
///
/// The `no_*` flags are what is forbidden: `restrict` sets them all and the
/// positive forms (`pty`, `port-forwarding`, `agent-forwarding`,
/// `x11-forwarding`, `user-rc`) clear them again when they come after it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyOptions {
    /// `from="pattern-list"`, checked by [`from_matches`].
    pub from: Option<String>,
    /// `command="..."`: the forced command.
    pub command: Option<String>,
    /// `environment="NAME=value"`, in file order; for a repeated name the
    /// first one wins (later ones are dropped here already).
    pub environment: Vec<(String, String)>,
    pub no_pty: bool,
    pub no_port_forwarding: bool,
    pub no_agent_forwarding: bool,
    pub no_x11_forwarding: bool,
    pub no_user_rc: bool,
    /// `permitopen="host:port"`, parsed (`host` may be `[v6addr]`, `port`
    /// may be `*` or a service name); empty when the option is absent.
    pub permitopen: Vec<HostPort>,
    /// `permitlisten="[host:]port"`, parsed; a bare port is `*:port` (any
    /// listen address), as in OpenSSH.
    pub permitlisten: Vec<HostPort>,
    /// `expiry-time=`: the entry is refused after this time (Unix seconds);
    /// the earliest one wins when repeated.
    pub expiry_time: Option<i64>,
    /// `restrict` was given.
    pub restrict: bool,
    /// `tunnel="n"`: the only tun device that may be forwarded
    /// ([`TUNNEL_ANY`] for `tunnel="any"`).
    pub tunnel: Option<u32>,
    /// `no-touch-required`: a security key's signature is accepted without
    /// the user's touch.
    pub no_touch_required: bool,
    /// `verify-required`: a security key's signature must say the user was
    /// verified (PIN or biometrics).
    pub verify_required: bool,
    /// A certificate's `source-address` critical option: the CIDR list the
    /// client's address must be in ([`cert_source_allowed`]).
    pub source_address: Option<String>,
}

/// One usable authorized_keys line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizedKey {
    pub key: PublicKey,
    pub options: KeyOptions,
    pub comment: String,
    /// `cert-authority`: the key signs user certificates.
    pub cert_authority: bool,
    /// `principals="list"` of a cert-authority line.
    pub principals: Option<String>,
}

/// The connecting peer, for `from=` and `user@host` patterns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub addr: IpAddr,
    pub port: u16,
    /// The verified reverse-DNS name (UseDNS yes), or None. sshd then uses
    /// the address text in its place, so that host patterns only match
    /// address-like text.
    pub hostname: Option<String>,
}

impl PeerInfo {
    /// The address as sshd compares it: IPv4-mapped IPv6 as IPv4.
    fn ip(&self) -> IpAddr {
        match self.addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            },
            v4 => v4,
        }
    }

    /// sshd's "canonical hostname": the name when UseDNS found one, else the
    /// address text.
    fn host(&self) -> String {
        match &self.hostname {
            Some(h) => h.to_ascii_lowercase(),
            None => self.ip().to_string(),
        }
    }
}

// ---------------------------------------------------------------------------
// Small helpers

fn is_sep(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// C's isspace() in the C locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn starts_with_ci(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Text from a file or the network, made safe for a log line: control
/// characters become '?', and at most `max` characters are kept.
fn printable(b: &[u8], max: usize) -> String {
    String::from_utf8_lossy(b)
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `%.Ns` of sshd's log lines.
fn trunc(s: &str, max: usize) -> String {
    printable(s.as_bytes(), max)
}

/// OpenBSD's strtonum(s, min, max) over strtoll(base 10): optional leading
/// white space and sign, then digits to the end.
fn strtonum(s: &[u8], min: i64, max: i64) -> Option<i64> {
    let mut i = 0;
    while i < s.len() && is_c_space(s[i]) {
        i += 1;
    }
    let mut neg = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        neg = s[i] == b'-';
        i += 1;
    }
    if i >= s.len() || !s[i..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: i64 = 0;
    for &d in &s[i..] {
        v = v.saturating_mul(10).saturating_add(i64::from(d - b'0'));
    }
    let v = if neg { -v } else { v };
    (min..=max).contains(&v).then_some(v)
}

// ---------------------------------------------------------------------------
// Key options (auth-options.c sshauthopt_parse)

/// Options as parsed, with the certificate-only ones this crate refuses.
#[derive(Debug, Default)]
struct ParsedOptions {
    opts: KeyOptions,
    cert_authority: bool,
    principals: Option<String>,
}

/// opt_flag(): `name` or, if allowed, `no-name`, case-insensitively, as a
/// prefix. Some(true) for the positive form.
fn opt_flag(s: &[u8], pos: &mut usize, name: &[u8], allow_negate: bool) -> Option<bool> {
    let mut p = *pos;
    let mut negate = false;
    if allow_negate && starts_with_ci(&s[p..], b"no-") {
        p += 3;
        negate = true;
    }
    if starts_with_ci(&s[p..], name) {
        *pos = p + name.len();
        Some(!negate)
    } else {
        None
    }
}

/// opt_match(): `name=`, case-insensitively.
fn opt_match(s: &[u8], pos: &mut usize, name: &[u8]) -> bool {
    let rest = &s[*pos..];
    if starts_with_ci(rest, name) && rest.get(name.len()) == Some(&b'=') {
        *pos += name.len() + 1;
        true
    } else {
        false
    }
}

/// opt_dequote(): a double-quoted value in which `\"` is a quote; every
/// other backslash is literal.
fn opt_dequote(s: &[u8], pos: &mut usize) -> Result<Vec<u8>, &'static str> {
    let mut i = *pos;
    if s.get(i) != Some(&b'"') {
        return Err("missing start quote");
    }
    i += 1;
    let mut out = Vec::new();
    while i < s.len() && s[i] != b'"' {
        if s[i] == b'\\' && s.get(i + 1) == Some(&b'"') {
            i += 1;
        }
        out.push(s[i]);
        i += 1;
    }
    if i >= s.len() {
        return Err("missing end quote");
    }
    *pos = i + 1;
    Ok(out)
}

fn utf8(v: Vec<u8>) -> Result<String, &'static str> {
    String::from_utf8(v).map_err(|_| "option value is not valid UTF-8")
}

/// valid_env_name(): one or more ASCII alphanumerics or underscores.
fn valid_env_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_')
}

/// hpdelim2(): splits `host[:/]rest`, where host may be `[...]`. Returns
/// the host (brackets kept) and what follows the delimiter, if any.
fn hpdelim2(s: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let pos = if s.first() == Some(&b'[') {
        s.iter().position(|&c| c == b']')? + 1
    } else {
        s.iter()
            .position(|&c| c == b':' || c == b'/')
            .unwrap_or(s.len())
    };
    match s.get(pos) {
        None => Some((s, None)),
        Some(b':') | Some(b'/') => Some((&s[..pos], Some(&s[pos + 1..]))),
        Some(_) => None,
    }
}

/// handle_permit(): one permitopen / permitlisten value, parsed into the
/// typed entry the session worker matches (it never sees the string).
fn handle_permit(
    s: &[u8],
    pos: &mut usize,
    allow_bare_port: bool,
    permits: &mut Vec<HostPort>,
) -> Result<(), &'static str> {
    if permits.len() > PERMIT_MAX {
        return Err("too many permission directives");
    }
    let mut opt = opt_dequote(s, pos)?;
    if allow_bare_port && !opt.contains(&b':') {
        let mut v = b"*:".to_vec();
        v.extend_from_slice(&opt);
        opt = v;
    }
    let (host, port) = match hpdelim2(&opt) {
        Some((host, port)) if host.len() < NI_MAXHOST => (host, port),
        _ => return Err("invalid permission hostname"),
    };
    let port = match port {
        Some(b"*") => PortPattern::Any,
        Some(p) => match std::str::from_utf8(p).ok().and_then(a2port) {
            Some(n) if n > 0 => PortPattern::Port(n),
            _ => return Err("invalid permission port"),
        },
        None => return Err("invalid permission port"),
    };
    let host = std::str::from_utf8(host).map_err(|_| "option value is not valid UTF-8")?;
    permits.push(HostPort {
        host: HostPattern::new(host),
        port,
    });
    Ok(())
}

/// sshauthopt_parse(): parses options from the start of `s` up to the first
/// unquoted space or tab (or the end).
fn parse_options(s: &[u8]) -> Result<ParsedOptions, &'static str> {
    let mut ret = ParsedOptions::default();
    let o = &mut ret.opts;
    let mut i = 0;
    while i < s.len() && !is_sep(s[i]) {
        if opt_flag(s, &mut i, b"restrict", false).is_some() {
            o.restrict = true;
            o.no_port_forwarding = true;
            o.no_agent_forwarding = true;
            o.no_x11_forwarding = true;
            o.no_pty = true;
            o.no_user_rc = true;
        } else if opt_flag(s, &mut i, b"cert-authority", false).is_some() {
            ret.cert_authority = true;
        } else if let Some(r) = opt_flag(s, &mut i, b"port-forwarding", true) {
            o.no_port_forwarding = !r;
        } else if let Some(r) = opt_flag(s, &mut i, b"agent-forwarding", true) {
            o.no_agent_forwarding = !r;
        } else if let Some(r) = opt_flag(s, &mut i, b"x11-forwarding", true) {
            o.no_x11_forwarding = !r;
        } else if let Some(r) = opt_flag(s, &mut i, b"touch-required", true) {
            o.no_touch_required = !r;
        } else if let Some(r) = opt_flag(s, &mut i, b"verify-required", true) {
            o.verify_required = r;
        } else if let Some(r) = opt_flag(s, &mut i, b"pty", true) {
            o.no_pty = !r;
        } else if let Some(r) = opt_flag(s, &mut i, b"user-rc", true) {
            o.no_user_rc = !r;
        } else if opt_match(s, &mut i, b"command") {
            if o.command.is_some() {
                return Err("multiple \"command\" clauses");
            }
            o.command = Some(utf8(opt_dequote(s, &mut i)?)?);
        } else if opt_match(s, &mut i, b"principals") {
            if ret.principals.is_some() {
                return Err("multiple \"principals\" clauses");
            }
            ret.principals = Some(utf8(opt_dequote(s, &mut i)?)?);
        } else if opt_match(s, &mut i, b"from") {
            if o.from.is_some() {
                return Err("multiple \"from\" clauses");
            }
            o.from = Some(utf8(opt_dequote(s, &mut i)?)?);
        } else if opt_match(s, &mut i, b"expiry-time") {
            let v = opt_dequote(s, &mut i)?;
            let t = match parse_absolute_time(&v) {
                Some(t) if t != 0 => t,
                _ => return Err("invalid expires time"),
            };
            if o.expiry_time.is_none_or(|old| t < old) {
                o.expiry_time = Some(t);
            }
        } else if opt_match(s, &mut i, b"environment") {
            if o.environment.len() > ENV_MAX {
                return Err("too many environment strings");
            }
            let v = opt_dequote(s, &mut i)?;
            let Some(eq) = v.iter().position(|&c| c == b'=') else {
                return Err("invalid environment string");
            };
            if !valid_env_name(&v[..eq]) {
                return Err("invalid environment string");
            }
            // valid_env_name() admits ASCII only, so the split is on a
            // character boundary.
            let v = utf8(v)?;
            let (name, value) = (&v[..eq], &v[eq + 1..]);
            if !o.environment.iter().any(|(n, _)| n == name) {
                o.environment.push((name.to_string(), value.to_string()));
            }
        } else if opt_match(s, &mut i, b"permitopen") {
            handle_permit(s, &mut i, false, &mut o.permitopen)?;
        } else if opt_match(s, &mut i, b"permitlisten") {
            handle_permit(s, &mut i, true, &mut o.permitlisten)?;
        } else if opt_match(s, &mut i, b"tunnel") {
            let v = opt_dequote(s, &mut i)?;
            let tun = if v.eq_ignore_ascii_case(b"any") {
                TUNNEL_ANY
            } else {
                match strtonum(&v, 0, TUNID_MAX as i64) {
                    Some(n) => n as u32,
                    None => return Err("invalid tun device"),
                }
            };
            o.tunnel = Some(tun);
        }
        // Skip the comma and go to the next option, or stop.
        if i >= s.len() || is_sep(s[i]) {
            break;
        }
        if s[i] != b',' {
            return Err("unknown key option");
        }
        i += 1;
        if i >= s.len() {
            return Err("unexpected end-of-options");
        }
    }
    Ok(ret)
}

// ---------------------------------------------------------------------------
// Absolute times (misc.c parse_absolute_time)

/// glibc strptime's get_number(): optional white space, then up to `n`
/// digits, stopping early once another digit would exceed `to`.
fn get_number(b: &[u8], pos: &mut usize, from: i64, to: i64, n: usize) -> Option<i64> {
    while *pos < b.len() && is_c_space(b[*pos]) {
        *pos += 1;
    }
    if !b.get(*pos)?.is_ascii_digit() {
        return None;
    }
    let mut val: i64 = 0;
    let mut left = n;
    loop {
        val = val * 10 + i64::from(b[*pos] - b'0');
        *pos += 1;
        left -= 1;
        if !(left > 0 && val * 10 <= to && b.get(*pos).is_some_and(u8::is_ascii_digit)) {
            break;
        }
    }
    (from..=to).contains(&val).then_some(val)
}

/// `YYYYMMDD[HHMM[SS]]` with an optional `Z` / `UTC` suffix, as OpenSSH
/// parses it (strptime() of a reformatted copy, then mktime() or timegm()).
/// None if invalid or before the epoch.
#[allow(unsafe_code)] // timegm/mktime
fn parse_absolute_time(s: &[u8]) -> Option<i64> {
    let mut l = s.len();
    let mut utc = false;
    if l > 1 && s[l - 1].eq_ignore_ascii_case(&b'Z') {
        utc = true;
        l -= 1;
    } else if l > 3 && s[l - 3..].eq_ignore_ascii_case(b"UTC") {
        utc = true;
        l -= 3;
    }
    let f = |a: usize, b: usize| &s[a..b];
    let mut buf = Vec::new();
    let fields: &[u8] = match l {
        8 => b"Ymd",
        12 => b"YmdHM",
        14 => b"YmdHMS",
        _ => return None,
    };
    // "%.4s-%.2s-%.2s[T%.2s:%.2s[:%.2s]]"
    buf.extend_from_slice(f(0, 4));
    buf.push(b'-');
    buf.extend_from_slice(f(4, 6));
    buf.push(b'-');
    buf.extend_from_slice(f(6, 8));
    if l >= 12 {
        buf.push(b'T');
        buf.extend_from_slice(f(8, 10));
        buf.push(b':');
        buf.extend_from_slice(f(10, 12));
    }
    if l == 14 {
        buf.push(b':');
        buf.extend_from_slice(f(12, 14));
    }
    // strptime(buf, "%Y-%m-%d[T%H:%M[:%S]]")
    // SAFETY: all-zero is a valid `struct tm` (tm_zone is a nullable pointer).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let mut p = 0;
    for (k, &field) in fields.iter().enumerate() {
        if k > 0 {
            let lit = match field {
                b'm' | b'd' => b'-',
                b'H' => b'T',
                _ => b':',
            };
            if buf.get(p) != Some(&lit) {
                return None;
            }
            p += 1;
        }
        match field {
            b'Y' => tm.tm_year = (get_number(&buf, &mut p, 0, 9999, 4)? - 1900) as i32,
            b'm' => tm.tm_mon = (get_number(&buf, &mut p, 1, 12, 2)? - 1) as i32,
            b'd' => tm.tm_mday = get_number(&buf, &mut p, 1, 31, 2)? as i32,
            b'H' => tm.tm_hour = get_number(&buf, &mut p, 0, 23, 2)? as i32,
            b'M' => tm.tm_min = get_number(&buf, &mut p, 0, 59, 2)? as i32,
            _ => tm.tm_sec = get_number(&buf, &mut p, 0, 61, 2)? as i32,
        }
    }
    if p != buf.len() {
        return None;
    }
    tm.tm_isdst = 0;
    // SAFETY: `tm` is a valid, exclusively borrowed struct tm.
    let t = unsafe {
        if utc {
            libc::timegm(&mut tm)
        } else {
            libc::mktime(&mut tm)
        }
    };
    (t >= 0).then_some(t as i64)
}

/// format_absolute_time(): local time as `YYYY-MM-DDTHH:MM:SS`.
#[allow(unsafe_code)] // localtime_r
fn format_time(t: i64) -> String {
    // SAFETY: all-zero is a valid `struct tm`; localtime_r only writes it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let tt = t as libc::time_t;
    // SAFETY: valid pointers to a time_t and a struct tm.
    if unsafe { libc::localtime_r(&tt, &mut tm) }.is_null() {
        return t.to_string();
    }
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        i64::from(tm.tm_year) + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

// ---------------------------------------------------------------------------
// Lines

/// The other key type names OpenSSH 9.2 reads from authorized_keys.
const UNSUPPORTED_TYPES: &[&str] = &[
    "ssh-dss",
    "webauthn-sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-xmss@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
    "rsa-sha2-256-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com",
    "ssh-dss-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ssh-xmss-cert-v01@openssh.com",
];

/// The name proto knows the blob of a key type name by: a key type, or an
/// RSA signature algorithm name, which OpenSSH reads as "ssh-rsa".
fn supported_type(name: &[u8]) -> Option<&'static str> {
    KeyType::from_name(name)
        .or_else(|| KeyType::from_signature_algorithm(std::str::from_utf8(name).ok()?))
        .map(KeyType::name)
}

fn known_type(name: &[u8]) -> bool {
    supported_type(name).is_some() || UNSUPPORTED_TYPES.iter().any(|n| n.as_bytes() == name)
}

fn token_len(s: &[u8]) -> usize {
    s.iter().position(|&b| is_sep(b)).unwrap_or(s.len())
}

fn skip_sep(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_sep(s[i]) {
        i += 1;
    }
    i
}

/// sshkey_advance_past_options(): the end of the options, i.e. the first
/// space or tab outside double quotes. Err if a quote is left open.
fn advance_past_options(s: &[u8]) -> Result<usize, ()> {
    let mut i = 0;
    let mut quoted = false;
    while i < s.len() && (quoted || !is_sep(s[i])) {
        if s[i] == b'\\' && s.get(i + 1) == Some(&b'"') {
            i += 1;
        } else if s[i] == b'"' {
            quoted = !quoted;
        }
        i += 1;
    }
    if quoted {
        Err(())
    } else {
        Ok(i)
    }
}

/// sshkey_read(): "type base64 [comment]".
fn read_key(s: &[u8]) -> Result<(PublicKey, String), String> {
    let tlen = token_len(s);
    let name = &s[..tlen];
    let canon = match supported_type(name) {
        Some(c) => c,
        None if UNSUPPORTED_TYPES.iter().any(|n| n.as_bytes() == name) => {
            return Err(format!("unsupported key type {}", printable(name, 64)));
        }
        None if name.is_empty() => return Err("no key after the options".into()),
        None => {
            return Err(format!(
                "no key: \"{}\" is not a key type",
                printable(name, 64)
            ))
        }
    };
    let start = skip_sep(s, tlen);
    if tlen == s.len() || start == s.len() {
        return Err(format!("{} key without key data", printable(name, 64)));
    }
    let blen = token_len(&s[start..]);
    let b64 = std::str::from_utf8(&s[start..start + blen])
        .map_err(|_| format!("invalid {} key data", printable(name, 64)))?;
    let (key, _) = PublicKey::from_openssh(&format!("{canon} {b64}"))
        .map_err(|e| format!("invalid {} key: {e}", printable(name, 64)))?;
    let comment = &s[skip_sep(s, start + blen)..];
    let end = comment
        .iter()
        .rposition(|&b| !is_c_space(b))
        .map_or(0, |p| p + 1);
    Ok((key, String::from_utf8_lossy(&comment[..end]).into_owned()))
}

fn parse_line_bytes(line: &[u8]) -> Result<Option<AuthorizedKey>, String> {
    // C string functions stop at a NUL byte.
    let mut line = match line.iter().position(|&b| b == 0) {
        Some(n) => &line[..n],
        None => line,
    };
    while let [rest @ .., b'\n' | b'\r'] = line {
        line = rest;
    }
    if line.len() > MAX_LINE_LEN {
        return Err(format!(
            "line too long ({} bytes, limit {MAX_LINE_LEN})",
            line.len()
        ));
    }
    let s = &line[skip_sep(line, 0)..];
    if s.is_empty() || s[0] == b'#' {
        return Ok(None);
    }
    // A line starts with a key type, or with options and then a key type.
    let (options, key_part) = if known_type(&s[..token_len(s)]) {
        (None, s)
    } else {
        let end = advance_past_options(s).map_err(|()| "invalid key option string")?;
        (Some(s), &s[skip_sep(s, end)..])
    };
    let (key, comment) = read_key(key_part)?;
    let parsed = match options {
        None => ParsedOptions::default(),
        Some(o) => parse_options(o).map_err(|e| format!("bad key options: {e}"))?,
    };
    if parsed.principals.is_some() && !parsed.cert_authority {
        return Err("principals on non-CA key".into());
    }
    Ok(Some(AuthorizedKey {
        key,
        options: parsed.opts,
        comment,
        cert_authority: parsed.cert_authority,
        principals: parsed.principals,
    }))
}

/// Parses one authorized_keys line. Ok(None) for blank and comment lines;
/// Err(reason) for lines that are skipped (bad options, unknown or
/// unsupported key types, cert-authority lines, overlong lines …).
pub fn parse_line(line: &str) -> Result<Option<AuthorizedKey>, String> {
    parse_line_bytes(line.as_bytes())
}

// ---------------------------------------------------------------------------
// Patterns (match.c, addrmatch.c)

/// Whether a `from="..."` pattern list admits the peer (sshd's
/// match_host_and_ip()): entries are host name or address wildcards
/// (`*`, `?`), CIDR networks (IPv4 or IPv6), each possibly negated with
/// `!`; a negated match denies, and an invalid list (an empty entry, a
/// network with host bits set) admits nobody. Without a host name
/// (UseDNS no) host patterns are compared with the address text, so only
/// address-like patterns can match.
pub fn from_matches(from: &str, peer: &PeerInfo) -> bool {
    pattern::match_host_and_ip(Some(&peer.host()), Some(peer.ip()), from).unwrap_or(false)
}

// ---------------------------------------------------------------------------
// AllowUsers / DenyUsers / AllowGroups / DenyGroups (auth.c allowed_user)

/// sshd's allowed_user() checks of DenyUsers, AllowUsers, DenyGroups and
/// AllowGroups, in that order. `groups` are the names of the user's primary
/// and supplementary groups. Entries of the user lists are `user` or
/// `user@host` patterns (host: name or address wildcards, CIDR, `!`);
/// group entries are single wildcard patterns. The Err carries sshd's log
/// text (for an invalid `user@host` entry sshd exits instead).
pub fn user_host_allowed(
    user: &str,
    peer: &PeerInfo,
    groups: &[String],
    allow_users: &[String],
    deny_users: &[String],
    allow_groups: &[String],
    deny_groups: &[String],
) -> Result<(), String> {
    let host = peer.host();
    let ip = peer.ip();
    let refuse = |why: &str| {
        Err(format!(
            "User {} from {} not allowed because {why}",
            trunc(user, 100),
            trunc(&host, 100)
        ))
    };
    for pat in deny_users {
        match pattern::match_user(user, Some(&host), Some(ip), pat) {
            Err(_) => return Err(format!("Invalid DenyUsers pattern \"{}\"", trunc(pat, 100))),
            Ok(false) => {}
            Ok(true) => return refuse("listed in DenyUsers"),
        }
    }
    if !allow_users.is_empty() {
        let mut listed = false;
        for pat in allow_users {
            match pattern::match_user(user, Some(&host), Some(ip), pat) {
                Err(_) => {
                    return Err(format!(
                        "Invalid AllowUsers pattern \"{}\"",
                        trunc(pat, 100)
                    ))
                }
                Ok(true) => {
                    listed = true;
                    break;
                }
                Ok(false) => {}
            }
        }
        if !listed {
            return refuse("not listed in AllowUsers");
        }
    }
    if !deny_groups.is_empty() || !allow_groups.is_empty() {
        if groups.is_empty() {
            return refuse("not in any group");
        }
        let any_match = |pats: &[String]| {
            groups
                .iter()
                .any(|g| pats.iter().any(|p| pattern::match_pattern(g, p)))
        };
        if !deny_groups.is_empty() && any_match(deny_groups) {
            return refuse("a group is listed in DenyGroups");
        }
        if !allow_groups.is_empty() && !any_match(allow_groups) {
            return refuse("none of user's groups are listed in AllowGroups");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// StrictModes (misc.c safe_path)

fn safe_path(name: &Path, st: &Metadata, uid: u32, home: &Path) -> Result<(), String> {
    let mut buf =
        fs::canonicalize(name).map_err(|e| format!("realpath {} failed: {e}", name.display()))?;
    let homedir = fs::canonicalize(home).ok();
    if !st.file_type().is_file() {
        return Err(format!("{} is not a regular file", buf.display()));
    }
    let bad = |m: &Metadata| (m.uid() != 0 && m.uid() != uid) || m.mode() & 0o022 != 0;
    if bad(st) {
        return Err(format!("bad ownership or modes for file {}", buf.display()));
    }
    loop {
        buf = buf
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        match fs::metadata(&buf) {
            Ok(m) if !bad(&m) => {}
            _ => {
                return Err(format!(
                    "bad ownership or modes for directory {}",
                    buf.display()
                ))
            }
        }
        if homedir.as_deref() == Some(buf.as_path()) || buf == Path::new("/") {
            return Ok(());
        }
    }
}

/// StrictModes: `path` (followed if a symlink) must be a regular file owned
/// by root or `uid` and writable by neither group nor others; then each
/// directory of its canonical path, walking up, must be owned by root or
/// `uid` and writable by neither group nor others, up to and including the
/// (canonical) home directory, or `/` if the file is not below it.
///
/// This checks with the caller's own identity; [`find_key`] runs the same
/// check on the file it opened, with the user's.
pub fn secure_path(path: &Path, uid: u32, home: &Path) -> Result<(), String> {
    let st = fs::metadata(path).map_err(|e| format!("cannot stat file {}: {e}", path.display()))?;
    safe_path(path, &st, uid, home)
}

// ---------------------------------------------------------------------------
// Reading the files

/// setfsuid(2) with an invalid id changes nothing and returns the current one.
fn current_fsuid() -> u32 {
    setfsuid(Uid::from_raw(u32::MAX)).as_raw()
}

fn current_fsgid() -> u32 {
    setfsgid(Gid::from_raw(u32::MAX)).as_raw()
}

/// The calling thread's file system uid and gid switched to a user's until
/// dropped (Linux keeps them per thread, and glibc does not broadcast
/// setfsuid()/setfsgid() to other threads). A no-op unless running as root.
struct FsIdentity {
    saved: Option<(u32, u32)>,
}

impl FsIdentity {
    fn assume(uid: u32, gid: u32) -> Result<FsIdentity, String> {
        if !geteuid().is_root() {
            return Ok(FsIdentity { saved: None });
        }
        // Undone in drop().
        let old_gid = setfsgid(Gid::from_raw(gid));
        let old_uid = setfsuid(Uid::from_raw(uid));
        let me = FsIdentity {
            saved: Some((old_uid.as_raw(), old_gid.as_raw())),
        };
        if current_fsuid() != uid || current_fsgid() != gid {
            return Err(format!(
                "cannot take file system identity uid {uid} gid {gid}"
            ));
        }
        Ok(me)
    }
}

impl Drop for FsIdentity {
    fn drop(&mut self) {
        if let Some((uid, gid)) = self.saved {
            setfsuid(Uid::from_raw(uid));
            setfsgid(Gid::from_raw(gid));
            if current_fsuid() != uid || current_fsgid() != gid {
                // Going on with a user's file system identity would be wrong
                // in ways nobody could follow; sshd is fatal() here too.
                std::process::abort();
            }
        }
    }
}

/// auth_openfile(): opens `file` as the user, checks it is a regular file
/// and, with StrictModes, its path. None if it cannot be used (missing
/// files silently).
fn open_key_file(
    file: &Path,
    uid: u32,
    gid: u32,
    home: &Path,
    strict_modes: bool,
    log: &mut Vec<String>,
) -> Option<File> {
    let _id = match FsIdentity::assume(uid, gid) {
        Ok(id) => id,
        Err(e) => {
            log.push(format!(
                "Could not open authorized keys '{}': {e}",
                file.display()
            ));
            return None;
        }
    };
    let f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(file)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            log.push(format!(
                "Could not open authorized keys '{}': {e}",
                file.display()
            ));
            return None;
        }
    };
    let st = match f.metadata() {
        Ok(st) => st,
        Err(e) => {
            log.push(format!("cannot stat file {}: {e}", file.display()));
            return None;
        }
    };
    if !st.file_type().is_file() {
        log.push(format!(
            "authorized keys '{}' is not a regular file",
            file.display()
        ));
        return None;
    }
    let fd = f.as_raw_fd();
    if let Ok(fl) = fcntl(fd, FcntlArg::F_GETFL) {
        let fl = OFlag::from_bits_retain(fl) - OFlag::O_NONBLOCK;
        let _ = fcntl(fd, FcntlArg::F_SETFL(fl));
    }
    if strict_modes {
        if let Err(e) = safe_path(file, &st, uid, home) {
            log.push(format!("Authentication refused: {e}"));
            return None;
        }
    }
    Some(f)
}

/// Reads one line (with its `\n`) into `buf`. Ok(None) at end of file,
/// Ok(Some(true)) for a line longer than `max` (consumed, `buf` empty).
fn read_line_bounded<R: BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<bool>> {
    buf.clear();
    let mut overlong = false;
    let mut any = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(any.then_some(overlong));
        }
        any = true;
        let (n, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if !overlong {
            if buf.len() + n > max {
                overlong = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&avail[..n]);
            }
        }
        r.consume(n);
        if done {
            return Ok(Some(overlong));
        }
    }
}

/// The first `Some` that `f` makes of the lines of `r` (a file, or a
/// command's output, named `file` in messages), with each line's location
/// (`file:lineno`). Lines longer than [`MAX_LINE_LEN`] are skipped and a
/// read error ends the scan, both with a message in `log`.
fn first_line<R: BufRead, T>(
    mut r: R,
    file: &Path,
    log: &mut Vec<String>,
    mut f: impl FnMut(&str, &[u8], &mut Vec<String>) -> Option<T>,
) -> Option<T> {
    let mut buf = Vec::new();
    let mut lineno: u64 = 0;
    loop {
        match read_line_bounded(&mut r, &mut buf, MAX_LINE_LEN + 2) {
            Ok(None) => return None,
            Ok(Some(overlong)) => {
                lineno += 1;
                if overlong {
                    log.push(format!(
                        "{}:{lineno}: line longer than {MAX_LINE_LEN} bytes, skipped",
                        file.display()
                    ));
                    continue;
                }
            }
            Err(e) => {
                log.push(format!("{}: read error: {e}", file.display()));
                return None;
            }
        }
        let loc = format!("{}:{lineno}", file.display());
        if let Some(t) = f(&loc, &buf, log) {
            return Some(t);
        }
    }
}

/// auth_check_authkey_line() over one file (or a command's output, named
/// `file` in messages). Some(line) for the first entry of `key` that is not
/// expired and whose `from=` admits the peer; for a certificate, the first
/// `cert-authority` entry of its CA that also authorises the certificate
/// for `user` at `now_unix`, its options then merged with the
/// certificate's.
fn scan<R: BufRead>(
    r: R,
    file: &Path,
    key: &OfferedKey,
    user: &str,
    peer: &PeerInfo,
    now_unix: i64,
    log: &mut Vec<String>,
) -> Option<AuthorizedKey> {
    first_line(r, file, log, |loc, buf, log| {
        let ak = match parse_line_bytes(buf) {
            Ok(Some(ak)) => ak,
            Ok(None) => return None,
            Err(reason) => {
                log.push(format!("{loc}: {reason}"));
                return None;
            }
        };
        // A certificate matches its CA's cert-authority lines only; a plain
        // key matches lines of that key that are not cert-authority ones.
        let matches = match key {
            OfferedKey::Plain(k) => ak.key == *k && !ak.cert_authority,
            OfferedKey::Cert(c) => ak.key == c.signature_key && ak.cert_authority,
        };
        if !matches {
            return None;
        }
        log.push(format!(
            "{loc}: matching {} found: {} {}",
            if ak.cert_authority { "CA" } else { "key" },
            ak.key.key_type_name(),
            ak.key.fingerprint()
        ));
        if !authorise_options(&ak.options, loc, user, peer, now_unix, log) {
            return None;
        }
        let OfferedKey::Cert(cert) = key else {
            return Some(ak);
        };
        match cert_authorised_by_line(cert, &ak, user, peer, now_unix, log) {
            Ok(options) => {
                log.push(format!(
                    "Accepted certificate ID \"{}\" (serial {}) signed by CA {} {} found at {loc}",
                    printable(cert.key_id.as_bytes(), 100),
                    cert.serial,
                    ak.key.key_type_name(),
                    ak.key.fingerprint()
                ));
                return Some(AuthorizedKey { options, ..ak });
            }
            Err(reason) => log.push(format!(
                "Refusing certificate ID \"{}\" serial={} signed by {} CA {} via {loc}: {reason}",
                printable(cert.key_id.as_bytes(), 100),
                cert.serial,
                ak.key.key_type_name(),
                ak.key.fingerprint()
            )),
        }
        None
    })
}

/// auth_authorise_keyopts(): an entry's `expiry-time`, `from=` and (for
/// a certificate's options) `source-address` against the peer. False when
/// they refuse, with the reasons in `log`.
fn authorise_options(
    o: &KeyOptions,
    loc: &str,
    user: &str,
    peer: &PeerInfo,
    now_unix: i64,
    log: &mut Vec<String>,
) -> bool {
    if let Some(exp) = o.expiry_time {
        if now_unix > 0 && exp < now_unix {
            log.push(format!("{loc}: entry expired at {}", format_time(exp)));
            return false;
        }
    }
    if let Some(from) = &o.from {
        let r = pattern::match_host_and_ip(Some(&peer.host()), Some(peer.ip()), from);
        if r != Ok(true) {
            if r.is_err() {
                log.push(format!("{loc}: invalid from criteria"));
            }
            log.push(format!(
                "{loc}: Authentication tried with correct key but not from a \
                 permitted host (host={}, ip={}, required={}).",
                trunc(&peer.host(), 200),
                peer.ip(),
                trunc(from, 200)
            ));
            return false;
        }
    }
    if let Some(list) = &o.source_address {
        if !cert_source_allowed(list, peer.addr) {
            log.push(format!(
                "{loc}: Authentication tried for {} with valid certificate but not \
                 from a permitted source address ({}).",
                trunc(user, 100),
                peer.ip()
            ));
            return false;
        }
    }
    true
}

/// The rest of auth_check_authkey_line() for a certificate whose CA the
/// cert-authority line `ak` names: the certificate's options (authorised
/// against the peer) merged with the line's, `principals=` or else the
/// user name among the certificate's principals, and the validity
/// interval. The merged options, or the reason for refusing.
fn cert_authorised_by_line(
    cert: &Certificate,
    ak: &AuthorizedKey,
    user: &str,
    peer: &PeerInfo,
    now_unix: i64,
    log: &mut Vec<String>,
) -> Result<KeyOptions, String> {
    let certopts = cert_options(cert)?;
    if !authorise_options(&certopts, "cert", user, peer, now_unix, log) {
        return Err("Refused by certificate options".into());
    }
    let merged = merge_options(&ak.options, &certopts)?;
    if let Some(list) = &ak.principals {
        if !list
            .split(',')
            .take_while(|e| !e.is_empty())
            .any(|e| cert.principals.iter().any(|p| p == e))
        {
            return Err("Certificate does not contain an authorized principal".into());
        }
    }
    let name = ak.principals.is_none().then_some(user);
    cert.check_authority(CertKind::User, name, false, false, unix_now(now_unix))?;
    Ok(merged)
}

/// Seconds since the epoch as the certificate checks take them.
fn unix_now(now_unix: i64) -> u64 {
    u64::try_from(now_unix).unwrap_or(0)
}

/// Looks `key` up in the user's authorized_keys `files`, in order, as sshd
/// does: missing files are skipped silently; files that cannot be opened,
/// are not regular files or fail StrictModes (when `strict_modes`) are
/// skipped with a message; lines that cannot be used are skipped with a
/// message. Returns the first line whose key is `key` (for a certificate:
/// a cert-authority line of its CA that authorises it for `user`), that
/// has not expired at `now_unix` and whose `from=` admits `peer`, with the
/// log messages gathered on the way (matches that were refused included).
///
/// Files are opened and checked with the user's file system identity
/// (`uid`, `gid`; see the module documentation) and read line by line, at
/// most [`MAX_LINE_LEN`] bytes a line.
#[allow(clippy::too_many_arguments)]
pub fn find_key(
    files: &[PathBuf],
    key: &OfferedKey,
    user: &str,
    uid: u32,
    gid: u32,
    home: &Path,
    strict_modes: bool,
    peer: &PeerInfo,
    now_unix: i64,
) -> (Option<AuthorizedKey>, Vec<String>) {
    let mut log = Vec::new();
    for file in files {
        let Some(f) = open_key_file(file, uid, gid, home, strict_modes, &mut log) else {
            continue;
        };
        if let Some(found) = scan(BufReader::new(f), file, key, user, peer, now_unix, &mut log) {
            return (Some(found), log);
        }
    }
    (None, log)
}

/// Looks `key` up in `text`, an AuthorizedKeysCommand's output, exactly as
/// [`find_key`] does in a file (`name` stands for the file in messages).
pub fn find_key_in_output(
    text: &[u8],
    name: &str,
    key: &OfferedKey,
    user: &str,
    peer: &PeerInfo,
    now_unix: i64,
) -> (Option<AuthorizedKey>, Vec<String>) {
    let mut log = Vec::new();
    let found = scan(text, Path::new(name), key, user, peer, now_unix, &mut log);
    (found, log)
}

// ---------------------------------------------------------------------------
// Certificates (auth-options.c, auth2-pubkey.c user_cert_trusted_ca)

/// sshauthopt_from_cert(): a user certificate's critical options and
/// extensions as key options. The extensions grant (`permit-pty`, ...:
/// what a certificate lacks is forbidden); an unknown critical option, a
/// repeated or malformed known one, or a known one with extra data refuses
/// the certificate; unknown extensions are ignored.
pub fn cert_options(cert: &Certificate) -> Result<KeyOptions, String> {
    if cert.kind != CertKind::User {
        return Err("Invalid certificate options".into());
    }
    let mut o = KeyOptions {
        no_pty: true,
        no_port_forwarding: true,
        no_agent_forwarding: true,
        no_x11_forwarding: true,
        no_user_rc: true,
        ..KeyOptions::default()
    };
    for e in &cert.extensions {
        let flag = match e.name.as_str() {
            "no-touch-required" => &mut o.no_touch_required,
            "permit-X11-forwarding" => &mut o.no_x11_forwarding,
            "permit-agent-forwarding" => &mut o.no_agent_forwarding,
            "permit-port-forwarding" => &mut o.no_port_forwarding,
            "permit-pty" => &mut o.no_pty,
            "permit-user-rc" => &mut o.no_user_rc,
            _ => continue,
        };
        if !e.data.is_empty() {
            return Err(format!(
                "Certificate option \"{}\" corrupt (extra data)",
                printable(e.name.as_bytes(), 100)
            ));
        }
        // no-touch-required sets its flag; the permits clear theirs.
        *flag = e.name == "no-touch-required";
    }
    for c in &cert.critical_options {
        let bad = |what: &str| {
            format!(
                "Certificate critical option \"{}\" {what}",
                printable(c.name.as_bytes(), 100)
            )
        };
        match c.name.as_str() {
            "verify-required" => {
                if !c.data.is_empty() {
                    return Err(bad("corrupt (extra data)"));
                }
                o.verify_required = true;
            }
            "force-command" => {
                let v = c.string_value().map_err(|_| bad("is malformed"))?;
                o.command = Some(v.to_string());
            }
            "source-address" => {
                let v = c.string_value().map_err(|_| bad("is malformed"))?;
                if ressh_compat::addrmatch::addr_match_cidr_list(None, v)
                    == ressh_compat::addrmatch::AddrMatch::Invalid
                {
                    return Err("Certificate source-address contents invalid".into());
                }
                o.source_address = Some(v.to_string());
            }
            _ => return Err(bad("is not supported")),
        }
    }
    Ok(o)
}

/// sshauthopt_merge(): `additional` (a certificate's options) laid under
/// `primary` (those of the authorized_keys or principals line). Permissions
/// must be in both, restrictions in either; access lists, environment and
/// tunnel come from `primary` when it has them; two forced commands must
/// be the same.
pub fn merge_options(primary: &KeyOptions, additional: &KeyOptions) -> Result<KeyOptions, String> {
    let pick = |p: &Option<String>, a: &Option<String>| p.clone().or_else(|| a.clone());
    let list = |p: &Vec<HostPort>, a: &Vec<HostPort>| {
        if p.is_empty() {
            a.clone()
        } else {
            p.clone()
        }
    };
    let command = match (&primary.command, &additional.command) {
        (Some(p), Some(a)) if p != a => {
            return Err("forced command options do not match".into());
        }
        (p, a) => pick(p, a),
    };
    let expiry_time = match (primary.expiry_time, additional.expiry_time) {
        (Some(p), Some(a)) => Some(p.min(a)),
        (p, a) => p.or(a),
    };
    Ok(KeyOptions {
        from: pick(&primary.from, &additional.from),
        source_address: pick(&primary.source_address, &additional.source_address),
        command,
        environment: if primary.environment.is_empty() {
            additional.environment.clone()
        } else {
            primary.environment.clone()
        },
        no_pty: primary.no_pty || additional.no_pty,
        no_port_forwarding: primary.no_port_forwarding || additional.no_port_forwarding,
        no_agent_forwarding: primary.no_agent_forwarding || additional.no_agent_forwarding,
        no_x11_forwarding: primary.no_x11_forwarding || additional.no_x11_forwarding,
        no_user_rc: primary.no_user_rc || additional.no_user_rc,
        permitopen: list(&primary.permitopen, &additional.permitopen),
        permitlisten: list(&primary.permitlisten, &additional.permitlisten),
        expiry_time,
        restrict: false,
        tunnel: primary.tunnel.or(additional.tunnel),
        no_touch_required: primary.no_touch_required && additional.no_touch_required,
        verify_required: primary.verify_required || additional.verify_required,
    })
}

/// Whether a certificate's `source-address` list admits `addr` (sshd's
/// addr_match_cidr_list; a malformed list admits nobody).
pub fn cert_source_allowed(list: &str, addr: IpAddr) -> bool {
    ressh_compat::addrmatch::addr_match_cidr_list(Some(addr), list).is_match()
}

/// sshkey_in_file() for TrustedUserCAKeys: whether `ca` is one of the keys
/// listed in `file` (read as resshd, as sshd reads it; lines that are no
/// key are skipped with a message).
pub fn ca_in_file(file: &Path, ca: &PublicKey) -> (bool, Vec<String>) {
    let mut log = Vec::new();
    let f = match File::open(file) {
        Ok(f) => f,
        Err(e) => {
            log.push(format!("{}: {e}", file.display()));
            return (false, log);
        }
    };
    let found = first_line(BufReader::new(f), file, &mut log, |loc, line, log| {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_matches(|c: char| c == ' ' || c == '\t' || c == '\n' || c == '\r');
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        match read_key(line.as_bytes()) {
            Ok((k, _)) if k == *ca => Some(()),
            Ok(_) => None,
            Err(e) => {
                log.push(format!("{loc}: {e}"));
                None
            }
        }
    });
    (found.is_some(), log)
}

/// match_principals_file(): the options of the first line of an
/// AuthorizedPrincipalsFile (opened as the user, with StrictModes) whose
/// principal the certificate lists. A line is `[options] principal`;
/// `#` starts a comment.
pub fn find_principal(
    file: &Path,
    cert: &Certificate,
    uid: u32,
    gid: u32,
    home: &Path,
    strict_modes: bool,
) -> (Option<KeyOptions>, Vec<String>) {
    let mut log = Vec::new();
    let Some(f) = open_key_file(file, uid, gid, home, strict_modes, &mut log) else {
        return (None, log);
    };
    let found = first_line(BufReader::new(f), file, &mut log, |loc, line, log| {
        principal_of(line, cert, loc, log)
    });
    (found, log)
}

/// As [`find_principal`], over a command's output (`name` for the log):
/// its lines are bounded by the command runner.
pub fn find_principal_in_output(
    text: &[u8],
    name: &str,
    cert: &Certificate,
) -> (Option<KeyOptions>, Vec<String>) {
    let mut log = Vec::new();
    let found = first_line(text, Path::new(name), &mut log, |loc, line, log| {
        principal_of(line, cert, loc, log)
    });
    (found, log)
}

/// One principals line's options, if it names one of `cert`'s principals
/// (a bad line is logged at `loc`).
fn principal_of(
    line: &[u8],
    cert: &Certificate,
    loc: &str,
    log: &mut Vec<String>,
) -> Option<KeyOptions> {
    match principals_line(line, cert) {
        Ok(found) => found,
        Err(e) => {
            log.push(format!("{loc}: bad principals options: {e}"));
            None
        }
    }
}

/// auth_check_principals_line() after auth_process_principals()'s
/// trimming: Some(options) when the line names one of the certificate's
/// principals.
fn principals_line(line: &[u8], cert: &Certificate) -> Result<Option<KeyOptions>, &'static str> {
    // C string functions stop at a NUL byte; `#` starts a comment.
    let line = line.split(|&b| b == 0).next().unwrap_or_default();
    let line = line.split(|&b| b == b'#').next().unwrap_or_default();
    let start = line
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(line.len());
    let mut line = &line[start..];
    while let [rest @ .., b'\n' | b'\r' | b' ' | b'\t'] = line {
        line = rest;
    }
    if line.is_empty() {
        return Ok(None);
    }
    // Internal white space: options, then the principal after the last
    // space (or, without one, the last tab).
    let cut = line
        .iter()
        .rposition(|&b| b == b' ')
        .or_else(|| line.iter().rposition(|&b| b == b'\t'));
    let (opts, principal) = match cut {
        Some(i) => {
            let p = &line[i..];
            let p = &p[p.iter().take_while(|&&b| b == b' ' || b == b'\t').count()..];
            (Some(&line[..i]), p)
        }
        None => (None, line),
    };
    let parsed = match opts {
        Some(o) => parse_options(o)?,
        None => ParsedOptions::default(),
    };
    if parsed.cert_authority {
        return Err("cert-authority flag invalid here");
    }
    if parsed.principals.is_some() {
        return Err("principals on non-CA key");
    }
    Ok(cert
        .principals
        .iter()
        .any(|p| p.as_bytes() == principal)
        .then_some(parsed.opts))
}

/// The checks of user_cert_trusted_ca() once the CA is trusted: the
/// principal (the user name, or a principals file's `found` line:
/// `use_file` says a principals file is configured), the validity
/// interval, the certificate's options against the peer, merged under the
/// principals line's. The final options, or the reason for refusing.
pub fn cert_authorised_by_ca(
    cert: &Certificate,
    user: &str,
    use_file: bool,
    found: Option<KeyOptions>,
    peer: &PeerInfo,
    now_unix: i64,
    log: &mut Vec<String>,
) -> Result<KeyOptions, String> {
    if use_file && found.is_none() {
        return Err("Certificate does not contain an authorized principal".into());
    }
    let name = (!use_file).then_some(user);
    cert.check_authority(CertKind::User, name, true, false, unix_now(now_unix))?;
    let certopts = cert_options(cert)?;
    if !authorise_options(&certopts, "cert", user, peer, now_unix, log) {
        return Err("Refused by certificate options".into());
    }
    match found {
        None => Ok(certopts),
        Some(p) => {
            if !authorise_options(&p, "principals", user, peer, now_unix, log) {
                return Err("Refused by certificate principals options".into());
            }
            merge_options(&p, &certopts)
        }
    }
}

// ---------------------------------------------------------------------------
// AuthorizedKeysFile tokens (auth.c expand_authorized_keys)

/// Expands an AuthorizedKeysFile entry: `%h` the home directory, `%u` the
/// user name, `%U` the numeric uid, `%%` a percent sign; any other token is
/// an error. A relative result is taken relative to the home directory.
pub fn expand_authorized_keys_path(
    pattern: &str,
    user: &str,
    home: &Path,
    uid: u32,
) -> Result<PathBuf, String> {
    let home_text = home
        .to_str()
        .ok_or_else(|| format!("home directory {} is not UTF-8", home.display()))?;
    let uid = uid.to_string();
    let out = percent_expand(pattern, &[('h', home_text), ('u', user), ('U', &uid)])
        .map_err(|e| e.to_string())?
        .into_bytes();
    if out.first() == Some(&b'/') {
        return Ok(PathBuf::from(OsString::from_vec(out)));
    }
    let mut full = home.as_os_str().as_bytes().to_vec();
    full.push(b'/');
    full.extend_from_slice(&out);
    if full.len() >= PATH_MAX {
        return Err(format!("path too long: {}", printable(&full, 200)));
    }
    Ok(PathBuf::from(OsString::from_vec(full)))
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use ressh_proto::keys::{KeyType, PrivateKey};
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::os::unix::fs::{chown, symlink, PermissionsExt};
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    const UID: u32 = 12345;
    const GID: u32 = 12345;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let p = std::env::temp_dir().join(format!(
                "ressh-authkeys-{}-{}-{nanos}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir(&p).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            TempDir(p)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn is_root() -> bool {
        geteuid().is_root()
    }

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn peer4(a: [u8; 4]) -> PeerInfo {
        PeerInfo {
            addr: IpAddr::V4(Ipv4Addr::from(a)),
            port: 50000,
            hostname: None,
        }
    }

    fn peer(addr: &str, host: Option<&str>) -> PeerInfo {
        PeerInfo {
            addr: addr.parse().unwrap(),
            port: 50000,
            hostname: host.map(str::to_string),
        }
    }

    fn publine(t: KeyType, comment: &str) -> (PublicKey, String) {
        let k = PrivateKey::generate(t).unwrap().public_key();
        let line = k.to_openssh(comment);
        (k, line)
    }

    /// A .pub line from ssh-keygen.
    fn keygen(dir: &Path, args: &[&str], name: &str) -> String {
        let path = dir.join(name);
        let st = Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-C", "test@example", "-f"])
            .arg(&path)
            .args(args)
            .status()
            .expect("ssh-keygen (openssh-client) is needed by these tests");
        assert!(st.success());
        fs::read_to_string(path.with_extension("pub"))
            .unwrap()
            .trim_end()
            .to_string()
    }

    fn opts(s: &str) -> Result<KeyOptions, &'static str> {
        parse_options(s.as_bytes()).map(|p| p.opts)
    }

    // --- options ---------------------------------------------------------

    #[test]
    fn authkeys_options_quotes_and_escapes() {
        let o = opts(r#"command="echo \"hi there\"; ls a\b",no-pty"#).unwrap();
        assert_eq!(o.command.as_deref(), Some(r#"echo "hi there"; ls a\b"#));
        assert!(o.no_pty);
        assert!(!o.no_port_forwarding);
        // A quoted value may hold commas and spaces.
        let o = opts(r#"from="a, b",command="x y,z""#).unwrap();
        assert_eq!(o.from.as_deref(), Some("a, b"));
        assert_eq!(o.command.as_deref(), Some("x y,z"));
        assert_eq!(opts(r#"command="abc"#), Err("missing end quote"));
        assert_eq!(opts("command=abc"), Err("missing start quote"));
        assert_eq!(
            opts(r#"command="a",command="b""#),
            Err("multiple \"command\" clauses")
        );
        assert_eq!(
            opts(r#"from="a",from="b""#),
            Err("multiple \"from\" clauses")
        );
        // Names are case-insensitive.
        let o = opts(r#"NO-PTY,Command="c",No-X11-Forwarding,FROM="h""#).unwrap();
        assert!(o.no_pty && o.no_x11_forwarding);
        assert_eq!(o.command.as_deref(), Some("c"));
        assert_eq!(o.from.as_deref(), Some("h"));
        // Parsing stops at the first unquoted blank.
        let o = opts("no-pty ssh-ed25519 AAAA").unwrap();
        assert!(o.no_pty);
    }

    #[test]
    fn authkeys_options_restrict_and_reenable() {
        let o = opts("restrict").unwrap();
        assert!(o.restrict);
        assert!(o.no_pty && o.no_port_forwarding && o.no_agent_forwarding);
        assert!(o.no_x11_forwarding && o.no_user_rc);
        let o =
            opts("restrict,pty,port-forwarding,agent-forwarding,x11-forwarding,user-rc").unwrap();
        assert!(o.restrict);
        assert!(!o.no_pty && !o.no_port_forwarding && !o.no_agent_forwarding);
        assert!(!o.no_x11_forwarding && !o.no_user_rc);
        let o = opts("restrict,pty").unwrap();
        assert!(!o.no_pty && o.no_port_forwarding && o.no_user_rc);
        // Order matters: restrict after pty wins.
        let o = opts("pty,restrict").unwrap();
        assert!(o.no_pty);
        let o = opts("no-port-forwarding,no-agent-forwarding,no-user-rc").unwrap();
        assert!(o.no_port_forwarding && o.no_agent_forwarding && o.no_user_rc);
        assert!(!o.restrict && !o.no_pty);
        // Security-key flags, as sshauthopt_parse() reads them (the last
        // one wins; "restrict" leaves them alone).
        let o = opts("no-touch-required,verify-required,restrict").unwrap();
        assert!(o.no_touch_required && o.verify_required);
        let o =
            opts("no-touch-required,touch-required,verify-required,no-verify-required").unwrap();
        assert!(!o.no_touch_required && !o.verify_required);
    }

    #[test]
    fn authkeys_options_unknown_and_malformed() {
        assert_eq!(opts("frobnicate"), Err("unknown key option"));
        assert_eq!(opts("no-pty,frobnicate"), Err("unknown key option"));
        assert_eq!(opts("ptyx"), Err("unknown key option"));
        assert_eq!(opts("no-restrict"), Err("unknown key option"));
        assert_eq!(opts("pty=yes"), Err("unknown key option"));
        assert_eq!(opts("command"), Err("unknown key option"));
        assert_eq!(opts("no-pty,"), Err("unexpected end-of-options"));
        // ... but a comma right before the key is tolerated, as in OpenSSH.
        assert!(opts("no-pty, ssh-ed25519").is_ok());
        assert_eq!(opts(r#"tunnel="x""#), Err("invalid tun device"));
        assert_eq!(opts(r#"tunnel="5""#).unwrap().tunnel, Some(5));
        assert_eq!(opts(r#"tunnel="ANY""#).unwrap().tunnel, Some(TUNNEL_ANY));
        let p = parse_options(br#"cert-authority,principals="a,b""#).unwrap();
        assert!(p.cert_authority);
        assert_eq!(p.principals.as_deref(), Some("a,b"));
    }

    #[test]
    fn authkeys_options_environment() {
        let o = opts(r#"environment="A=b=c",environment="PATH=/x:/y",environment="A=z""#).unwrap();
        assert_eq!(
            o.environment,
            vec![
                ("A".to_string(), "b=c".to_string()),
                ("PATH".to_string(), "/x:/y".to_string()),
            ]
        );
        let o = opts(r#"environment="EMPTY=""#).unwrap();
        assert_eq!(o.environment, vec![("EMPTY".to_string(), String::new())]);
        assert_eq!(
            opts(r#"environment="NOEQUALS""#),
            Err("invalid environment string")
        );
        assert_eq!(
            opts(r#"environment="=x""#),
            Err("invalid environment string")
        );
        assert_eq!(
            opts(r#"environment="A-B=x""#),
            Err("invalid environment string")
        );
        assert_eq!(
            opts(r#"environment="A B=x""#),
            Err("invalid environment string")
        );
    }

    #[test]
    fn authkeys_options_permitopen_permitlisten() {
        let o = opts(
            r#"permitopen="localhost:22",permitopen="[::1]:8080",permitopen="*:*",permitopen="h:*",permitopen="10.0.0.1/443""#,
        )
        .unwrap();
        let hp = |host: &str, port: Option<u16>| HostPort {
            host: HostPattern::new(host),
            port: port.map_or(PortPattern::Any, PortPattern::Port),
        };
        assert_eq!(
            o.permitopen,
            vec![
                hp("localhost", Some(22)),
                hp("::1", Some(8080)),
                hp("*", None),
                hp("h", None),
                hp("10.0.0.1", Some(443)),
            ]
        );
        // Parsed: brackets gone, addresses as addresses, names lowercased.
        assert_eq!(
            o.permitopen[1].host,
            HostPattern::Addr("::1".parse().unwrap())
        );
        let o = opts(r#"permitopen="[0:0::1]:22",permitopen="DB.Example.org:5432""#).unwrap();
        assert_eq!(
            o.permitopen,
            vec![hp("::1", Some(22)), hp("db.example.org", Some(5432))]
        );
        assert_eq!(
            o.permitopen[1].host,
            HostPattern::Name("db.example.org".into())
        );
        for bad in [
            "host",
            "host:0",
            "host:65536",
            "host:-1",
            "host:",
            "[::1]",
            "::1:22",
            "host:22:33",
            "host:nosuchservice-xyz",
        ] {
            assert_eq!(
                opts(&format!(r#"permitopen="{bad}""#)),
                Err("invalid permission port"),
                "{bad}"
            );
        }
        assert_eq!(
            opts(r#"permitopen="[::1]x:22""#),
            Err("invalid permission hostname")
        );
        assert_eq!(
            opts(r#"permitopen="[::1:22""#),
            Err("invalid permission hostname")
        );
        let long = format!(r#"permitopen="{}:22""#, "a".repeat(NI_MAXHOST));
        assert_eq!(opts(&long), Err("invalid permission hostname"));
        // A bare port in permitlisten means any listen address.
        let o = opts(r#"permitlisten="8080",permitlisten="localhost:2222",permitlisten="[::1]:*""#)
            .unwrap();
        assert_eq!(
            o.permitlisten,
            vec![
                hp("*", Some(8080)),
                hp("localhost", Some(2222)),
                hp("::1", None)
            ]
        );
        assert_eq!(opts(r#"permitlisten="0""#), Err("invalid permission port"));
        // Ports may be service names, as with a2port().
        if Path::new("/etc/services").exists() {
            assert_eq!(
                opts(r#"permitopen="localhost:ssh""#).unwrap().permitopen,
                vec![hp("localhost", Some(22))]
            );
        }
    }

    #[test]
    fn authkeys_expiry_time() {
        assert_eq!(parse_absolute_time(b"20300101Z"), Some(1_893_456_000));
        assert_eq!(parse_absolute_time(b"20300101utc"), Some(1_893_456_000));
        assert_eq!(
            parse_absolute_time(b"203001010130Z"),
            Some(1_893_456_000 + 5400)
        );
        assert_eq!(
            parse_absolute_time(b"20300101013005UTC"),
            Some(1_893_456_000 + 5405)
        );
        // Out-of-range days are normalised as mktime() does.
        assert_eq!(
            parse_absolute_time(b"20300230Z"),
            parse_absolute_time(b"20300302Z")
        );
        for bad in [
            &b"2030"[..],
            b"2030010",
            b"203001011",
            b"20301301Z",
            b"20300001Z",
            b"20300100Z",
            b"203001012400Z",
            b"2030-1-1",
            b"19600101Z",
            b"Z",
            b"",
        ] {
            assert_eq!(parse_absolute_time(bad), None, "{}", printable(bad, 40));
        }
        // Local time: within a day of UTC whatever the zone.
        let local = parse_absolute_time(b"20300101").unwrap();
        assert!((local - 1_893_456_000).abs() <= 26 * 3600);
        assert_eq!(opts(r#"expiry-time="2030""#), Err("invalid expires time"));
        let o = opts(r#"expiry-time="20300101Z",expiry-time="20290101Z",expiry-time="20310101Z""#)
            .unwrap();
        assert_eq!(o.expiry_time, parse_absolute_time(b"20290101Z"));
        assert_eq!(format_time(0).len(), "1970-01-01T00:00:00".len());
    }

    // --- lines -----------------------------------------------------------

    #[test]
    fn authkeys_parse_line_ssh_keygen_keys() {
        let dir = TempDir::new();
        for (args, name, t) in [
            (&["-t", "ed25519"][..], "ed", KeyType::Ed25519),
            (&["-t", "rsa", "-b", "3072"][..], "rsa", KeyType::Rsa),
            (&["-t", "ecdsa", "-b", "256"][..], "ec", KeyType::EcdsaP256),
        ] {
            let line = keygen(dir.path(), args, name);
            let ak = parse_line(&line).unwrap().unwrap();
            assert_eq!(ak.key.key_type(), t);
            assert_eq!(ak.comment, "test@example");
            assert_eq!(ak.options, KeyOptions::default());
            // With options, leading blanks and a CRLF ending.
            let with = format!(
                "  \tno-pty,from=\"10.0.0.0/8\",command=\"/bin/echo \\\"x y\\\"\" {line}\r\n"
            );
            let ak2 = parse_line(&with).unwrap().unwrap();
            assert_eq!(ak2.key, ak.key);
            assert!(ak2.options.no_pty);
            assert_eq!(ak2.options.from.as_deref(), Some("10.0.0.0/8"));
            assert_eq!(ak2.options.command.as_deref(), Some("/bin/echo \"x y\""));
            assert_eq!(ak2.comment, "test@example");
            // No comment.
            let bare: Vec<&str> = line.split(' ').take(2).collect();
            let ak3 = parse_line(&bare.join("\t")).unwrap().unwrap();
            assert_eq!(ak3.key, ak.key);
            assert_eq!(ak3.comment, "");
            // Bad options make the line unusable.
            let err = parse_line(&format!("no-pty,bogus {line}")).unwrap_err();
            assert!(err.contains("unknown key option"), "{err}");
        }
        // The bigger curves are read as ssh-keygen writes them.
        for bits in ["384", "521"] {
            let line = keygen(
                dir.path(),
                &["-t", "ecdsa", "-b", bits],
                &format!("ec{bits}"),
            );
            let ak = parse_line(&format!("restrict {line}")).unwrap().unwrap();
            assert_eq!(ak.key.bits().to_string(), bits);
        }
        // Types this daemon does not support are skipped with a reason.
        let dss = "ssh-dss AAAAB3NzaC1kc3MAAACBAP1/U4EddRIpUt9KnC7s5Of2EbdSPO9EAMMeP4C2USZp";
        let err = parse_line(dss).unwrap_err();
        assert!(err.contains("unsupported key type ssh-dss"), "{err}");
        let err = parse_line(&format!("restrict {dss}")).unwrap_err();
        assert!(err.contains("unsupported key type"), "{err}");
    }

    #[test]
    fn authkeys_parse_line_forms() {
        let (k, line) = publine(KeyType::Ed25519, "me@host with spaces");
        let ak = parse_line(&line).unwrap().unwrap();
        assert_eq!(ak.key, k);
        assert_eq!(ak.comment, "me@host with spaces");
        for blank in [
            "",
            "   ",
            "\t",
            "# comment",
            "   # indented comment",
            "\r\n",
        ] {
            assert_eq!(parse_line(blank), Ok(None), "{blank:?}");
        }
        // RSA keys may be written with a signature algorithm name.
        let (rk, rline) = publine(KeyType::Rsa, "r");
        let b64 = rline.split(' ').nth(1).unwrap();
        for name in ["rsa-sha2-256", "rsa-sha2-512"] {
            let ak = parse_line(&format!("{name} {b64} r")).unwrap().unwrap();
            assert_eq!(ak.key, rk);
        }
        // The type must match the blob.
        let eb64 = line.split(' ').nth(1).unwrap();
        assert!(parse_line(&format!("ssh-rsa {eb64}")).is_err());
        assert!(parse_line(&format!("ecdsa-sha2-nistp256 {eb64}")).is_err());
        // Broken or missing key data.
        assert!(parse_line("ssh-ed25519").is_err());
        assert!(parse_line("ssh-ed25519 ").is_err());
        assert!(parse_line("ssh-ed25519 AAAA").is_err());
        assert!(parse_line(&format!("ssh-ed25519 {}x", eb64)).is_err());
        assert!(parse_line("no-pty").is_err());
        assert!(parse_line("no-pty nonsense AAAA").is_err());
        assert!(parse_line(&format!("ssh-dss {eb64}"))
            .unwrap_err()
            .contains("unsupported"));
        // Unterminated quotes.
        assert_eq!(
            parse_line(&format!("command=\"oops {line}")),
            Err("invalid key option string".to_string())
        );
        // principals= only on cert-authority lines.
        let ak = parse_line(&format!("cert-authority,principals=\"a,b\" {line}"))
            .unwrap()
            .unwrap();
        assert!(ak.cert_authority);
        assert_eq!(ak.principals.as_deref(), Some("a,b"));
        let err = parse_line(&format!("principals=\"a\" {line}")).unwrap_err();
        assert!(err.contains("principals on non-CA key"), "{err}");
        // Overlong lines.
        let long = format!("{line} {}", "c".repeat(MAX_LINE_LEN));
        assert!(parse_line(&long).unwrap_err().contains("too long"));
        // A NUL ends the line, as for sshd's C strings.
        let ak = parse_line(&format!("{line}\0garbage")).unwrap().unwrap();
        assert_eq!(ak.key, k);
    }

    // --- patterns --------------------------------------------------------

    #[test]
    fn authkeys_from_addresses() {
        let p = peer4([192, 168, 1, 20]);
        assert!(from_matches("192.168.1.20", &p));
        assert!(from_matches("192.168.1.0/24", &p));
        assert!(from_matches("10.0.0.0/8,192.168.0.0/16", &p));
        assert!(from_matches("192.168.1.*", &p));
        assert!(from_matches("192.168.1.2?", &p));
        assert!(!from_matches("10.0.0.0/8", &p));
        assert!(!from_matches("192.168.1.21", &p));
        // Negation denies, wherever it appears.
        assert!(!from_matches("192.168.0.0/16,!192.168.1.20", &p));
        assert!(!from_matches("!192.168.1.0/24,*", &p));
        assert!(from_matches("!10.0.0.0/8,*", &p));
        // A list of negations alone admits nobody.
        assert!(!from_matches("!10.0.0.0/8", &p));
        // Invalid lists admit nobody.
        assert!(!from_matches("192.168.1.20/24", &p));
        assert!(!from_matches("192.168.1.0/33", &p));
        assert!(!from_matches("192.168.1.20,", &p));
        assert!(!from_matches("10.0.0.1,,192.168.1.20", &p));
        assert!(!from_matches("", &p));
        assert!(!from_matches("192.168.1.20,10.0.0.1/8", &p));
        assert!(from_matches("0.0.0.0/0", &p));
        // IPv6.
        let p6 = peer("2001:db8::1", None);
        assert!(from_matches("2001:db8::/32", &p6));
        assert!(from_matches("2001:db8::1", &p6));
        assert!(from_matches("2001:db8::1/128", &p6));
        assert!(from_matches("2001:db8:*", &p6));
        assert!(!from_matches("2001:db9::/32", &p6));
        assert!(!from_matches("2001:db8::/32,!2001:db8::1", &p6));
        assert!(!from_matches("2001:db8::1/32", &p6));
        assert!(!from_matches("0.0.0.0/0", &p6));
        assert!(from_matches("::/0", &p6));
        // IPv4-mapped peers are IPv4.
        let pm = PeerInfo {
            addr: IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped()),
            port: 1,
            hostname: None,
        };
        assert!(from_matches("10.0.0.0/8", &pm));
        assert!(!from_matches("::ffff:0:0/96", &pm));
        let lo6 = PeerInfo {
            addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            port: 1,
            hostname: None,
        };
        assert!(from_matches("::1", &lo6));
    }

    #[test]
    fn authkeys_from_hostnames() {
        let named = peer("192.0.2.7", Some("Client.Example.COM"));
        assert!(from_matches("*.example.com", &named));
        assert!(from_matches("*.EXAMPLE.com", &named));
        assert!(from_matches("client.example.com", &named));
        assert!(from_matches("192.0.2.0/24", &named));
        assert!(!from_matches("*.example.org", &named));
        assert!(!from_matches("*.example.com,!client.*", &named));
        assert!(!from_matches("192.0.2.0/24,!*.example.com", &named));
        // UseDNS no: only the address can match.
        let anon = peer("192.0.2.7", None);
        assert!(!from_matches("*.example.com", &anon));
        assert!(!from_matches("client.example.com", &anon));
        assert!(from_matches("*.example.com,192.0.2.7", &anon));
        assert!(from_matches("*.example.com,192.0.2.*", &anon));
    }

    #[test]
    fn authkeys_user_host_allowed() {
        let p = peer4([192, 0, 2, 10]);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let none: Vec<String> = vec![];
        let groups = s(&["alice", "wheel", "staff"]);
        let check =
            |user: &str,
             peer: &PeerInfo,
             g: &[String],
             au: &[String],
             du: &[String],
             ag: &[String],
             dg: &[String]| { user_host_allowed(user, peer, g, au, du, ag, dg) };
        assert_eq!(
            check("alice", &p, &groups, &none, &none, &none, &none),
            Ok(())
        );
        // DenyUsers.
        assert_eq!(
            check(
                "alice",
                &p,
                &groups,
                &none,
                &s(&["bob", "al*"]),
                &none,
                &none
            ),
            Err("User alice from 192.0.2.10 not allowed because listed in DenyUsers".into())
        );
        assert_eq!(
            check(
                "alice",
                &p,
                &groups,
                &none,
                &s(&["alice@10.0.0.0/8"]),
                &none,
                &none
            ),
            Ok(())
        );
        assert!(check(
            "alice",
            &p,
            &groups,
            &none,
            &s(&["alice@192.0.2.0/24"]),
            &none,
            &none
        )
        .is_err());
        // AllowUsers, with user@host forms.
        assert_eq!(
            check("alice", &p, &groups, &s(&["bob"]), &none, &none, &none),
            Err("User alice from 192.0.2.10 not allowed because not listed in AllowUsers".into())
        );
        assert_eq!(
            check(
                "alice",
                &p,
                &groups,
                &s(&["bob", "alice"]),
                &none,
                &none,
                &none
            ),
            Ok(())
        );
        assert_eq!(
            check(
                "alice",
                &p,
                &groups,
                &s(&["a?ice@192.0.2.0/24"]),
                &none,
                &none,
                &none
            ),
            Ok(())
        );
        assert_eq!(
            check(
                "alice",
                &p,
                &groups,
                &s(&["alice@192.0.2.*"]),
                &none,
                &none,
                &none
            ),
            Ok(())
        );
        assert_eq!(
            check(
                "alice",
                &p,
                &groups,
                &s(&["alice@192.0.2.0/24,!192.0.2.10"]),
                &none,
                &none,
                &none
            )
            .unwrap_err(),
            "User alice from 192.0.2.10 not allowed because not listed in AllowUsers"
        );
        assert!(check(
            "alice",
            &p,
            &groups,
            &s(&["alice@10.0.0.1"]),
            &none,
            &none,
            &none
        )
        .is_err());
        assert!(check(
            "alice",
            &p,
            &groups,
            &s(&["alice@*.example.com"]),
            &none,
            &none,
            &none
        )
        .is_err());
        let named = peer("192.0.2.10", Some("ws.example.com"));
        assert_eq!(
            check(
                "alice",
                &named,
                &groups,
                &s(&["alice@*.example.com"]),
                &none,
                &none,
                &none
            ),
            Ok(())
        );
        assert_eq!(
            check("alice", &named, &groups, &s(&["bob"]), &none, &none, &none).unwrap_err(),
            "User alice from ws.example.com not allowed because not listed in AllowUsers"
        );
        // Invalid host parts are reported as sshd's fatal errors.
        assert_eq!(
            check(
                "alice",
                &p,
                &groups,
                &s(&["alice@10.0.0.1/8"]),
                &none,
                &none,
                &none
            )
            .unwrap_err(),
            "Invalid AllowUsers pattern \"alice@10.0.0.1/8\""
        );
        assert!(check(
            "alice",
            &p,
            &groups,
            &none,
            &s(&["alice@1.2.3.4/40"]),
            &none,
            &none
        )
        .unwrap_err()
        .starts_with("Invalid DenyUsers pattern"));
        // ... but only once the user part matches, as in sshd.
        assert_eq!(
            check(
                "alice",
                &p,
                &groups,
                &s(&["alice", "bob@10.0.0.1/8"]),
                &none,
                &none,
                &none
            ),
            Ok(())
        );
        // DenyUsers is checked before AllowUsers.
        assert!(check(
            "alice",
            &p,
            &groups,
            &s(&["alice"]),
            &s(&["alice"]),
            &none,
            &none
        )
        .unwrap_err()
        .contains("DenyUsers"));
        // Groups.
        assert_eq!(
            check("alice", &p, &groups, &none, &none, &none, &s(&["whe*"])),
            Err(
                "User alice from 192.0.2.10 not allowed because a group is listed in DenyGroups"
                    .into()
            )
        );
        assert_eq!(
            check(
                "alice",
                &p,
                &groups,
                &none,
                &none,
                &s(&["staff"]),
                &s(&["root"])
            ),
            Ok(())
        );
        assert_eq!(
            check("alice", &p, &groups, &none, &none, &s(&["admins", "sudo"]), &none),
            Err("User alice from 192.0.2.10 not allowed because none of user's groups are listed in AllowGroups".into())
        );
        assert_eq!(
            check("alice", &p, &[], &none, &none, &s(&["staff"]), &none),
            Err("User alice from 192.0.2.10 not allowed because not in any group".into())
        );
        // Group entries are single patterns: no lists, no negation.
        assert!(check("alice", &p, &groups, &none, &none, &s(&["x,staff"]), &none).is_err());
        // Users before groups.
        assert!(check(
            "alice",
            &p,
            &groups,
            &s(&["bob"]),
            &none,
            &s(&["staff"]),
            &none
        )
        .unwrap_err()
        .contains("AllowUsers"));
    }

    // --- files -----------------------------------------------------------

    /// home (uid) / .ssh (uid, 0700) / authorized_keys (uid, 0600)
    fn make_home(root: &Path, contents: &str) -> (PathBuf, PathBuf) {
        let home = root.join("home");
        let ssh = home.join(".ssh");
        fs::create_dir_all(&ssh).unwrap();
        let ak = ssh.join("authorized_keys");
        fs::write(&ak, contents).unwrap();
        for p in [&home, &ssh, &ak] {
            chown(p, Some(UID), Some(GID)).unwrap();
        }
        chmod(&home, 0o755);
        chmod(&ssh, 0o700);
        chmod(&ak, 0o600);
        (home, ak)
    }

    #[test]
    fn authkeys_secure_path() {
        assert!(
            is_root(),
            "this test needs root: it chowns files to other users"
        );
        let dir = TempDir::new();
        let (home, ak) = make_home(dir.path(), "");
        assert_eq!(secure_path(&ak, UID, &home), Ok(()));
        // Root-owned files are fine too.
        chown(&ak, Some(0), None).unwrap();
        assert_eq!(secure_path(&ak, UID, &home), Ok(()));
        // Someone else's file is not.
        chown(&ak, Some(UID + 1), None).unwrap();
        assert!(secure_path(&ak, UID, &home)
            .unwrap_err()
            .starts_with("bad ownership or modes for file"));
        chown(&ak, Some(UID), None).unwrap();
        // Group- or world-writable files are not.
        for mode in [0o620, 0o602] {
            chmod(&ak, mode);
            assert!(secure_path(&ak, UID, &home).is_err(), "{mode:o}");
        }
        chmod(&ak, 0o644);
        assert_eq!(secure_path(&ak, UID, &home), Ok(()));
        // A writable .ssh directory.
        let ssh = home.join(".ssh");
        chmod(&ssh, 0o770);
        assert_eq!(
            secure_path(&ak, UID, &home),
            Err(format!(
                "bad ownership or modes for directory {}",
                fs::canonicalize(&ssh).unwrap().display()
            ))
        );
        chmod(&ssh, 0o700);
        // A home directory owned by someone else.
        chown(&home, Some(UID + 1), None).unwrap();
        assert!(secure_path(&ak, UID, &home)
            .unwrap_err()
            .contains("for directory"));
        chown(&home, Some(UID), None).unwrap();
        // The walk stops at the home directory: the temp dir above may be
        // anything (here a world-writable one).
        chmod(dir.path(), 0o777);
        assert_eq!(secure_path(&ak, UID, &home), Ok(()));
        // A symlink is judged by where it leads: out of the home directory,
        // the walk goes up to / and meets the world-writable directory.
        let outside = dir.path().join("elsewhere");
        fs::write(&outside, "").unwrap();
        chown(&outside, Some(UID), None).unwrap();
        chmod(&outside, 0o600);
        let link = ssh.join("authorized_keys2");
        symlink(&outside, &link).unwrap();
        assert!(secure_path(&link, UID, &home)
            .unwrap_err()
            .contains("for directory"));
        chmod(dir.path(), 0o755);
        // Not a regular file.
        let sub = ssh.join("dir");
        fs::create_dir(&sub).unwrap();
        chown(&sub, Some(UID), None).unwrap();
        assert!(secure_path(&sub, UID, &home)
            .unwrap_err()
            .contains("is not a regular file"));
        assert!(secure_path(&ssh.join("missing"), UID, &home)
            .unwrap_err()
            .starts_with("cannot stat file"));
    }

    #[test]
    fn authkeys_find_key_end_to_end() {
        assert!(
            is_root(),
            "this test needs root: it chowns files to other users"
        );
        let dir = TempDir::new();
        let (k, line) = publine(KeyType::Ed25519, "wanted");
        let (_, other) = publine(KeyType::EcdsaP256, "other");
        let contents = format!(
            "# keys\n\
             \n\
             {other}\n\
             bogus-option {line}\n\
             ssh-dss AAAAB3NzaC1kc3MAAACBAP== dsa\n\
             from=\"10.0.0.0/8\" {line}\n\
             expiry-time=\"20000101Z\" {line}\n\
             command=\"/bin/true\",from=\"192.0.2.0/24\",no-pty {line}\n\
             {line}\n"
        );
        let (home, ak) = make_home(dir.path(), &contents);
        let missing = home.join(".ssh/authorized_keys_missing");
        let files = vec![missing.clone(), ak.clone()];
        let p = peer4([192, 0, 2, 9]);
        let now = 1_800_000_000;
        let (found, log) = find_key(
            &files,
            &OfferedKey::Plain(k.clone()),
            "u",
            UID,
            GID,
            &home,
            true,
            &p,
            now,
        );
        let found = found.expect("key found");
        assert_eq!(found.key, k);
        assert_eq!(found.options.command.as_deref(), Some("/bin/true"));
        assert!(found.options.no_pty);
        assert_eq!(found.comment, "wanted");
        let all = log.join("\n");
        assert!(!all.contains("authorized_keys_missing"), "{all}");
        assert!(
            all.contains(":4: bad key options: unknown key option"),
            "{all}"
        );
        assert!(all.contains(":5: unsupported key type ssh-dss"), "{all}");
        assert!(
            all.contains(":6: Authentication tried with correct key but not from a permitted host"),
            "{all}"
        );
        assert!(all.contains(":7: entry expired at"), "{all}");
        assert!(
            all.contains(":8: matching key found: ssh-ed25519 SHA256:"),
            "{all}"
        );
        // From another address the plain line at the end is used.
        let (found, _) = find_key(
            &files,
            &OfferedKey::Plain(k.clone()),
            "u",
            UID,
            GID,
            &home,
            true,
            &peer4([198, 51, 100, 1]),
            now,
        );
        assert_eq!(found.unwrap().options, KeyOptions::default());
        // A key that is not there.
        let (absent, _) = publine(KeyType::Ed25519, "absent");
        assert_eq!(
            find_key(
                &files,
                &OfferedKey::Plain(absent.clone()),
                "u",
                UID,
                GID,
                &home,
                true,
                &p,
                now
            )
            .0,
            None
        );
        // StrictModes: a group-writable file is refused, unless StrictModes
        // is off.
        chmod(&ak, 0o660);
        let (found, log) = find_key(
            &files,
            &OfferedKey::Plain(k.clone()),
            "u",
            UID,
            GID,
            &home,
            true,
            &p,
            now,
        );
        assert!(found.is_none());
        assert!(
            log.iter()
                .any(|l| l.starts_with("Authentication refused: bad ownership or modes for file")),
            "{log:?}"
        );
        assert!(find_key(
            &files,
            &OfferedKey::Plain(k.clone()),
            "u",
            UID,
            GID,
            &home,
            false,
            &p,
            now
        )
        .0
        .is_some());
        chmod(&ak, 0o600);
        // The first file that has the key wins.
        let second = home.join(".ssh/authorized_keys2");
        fs::write(&second, format!("command=\"second\" {line}\n")).unwrap();
        chown(&second, Some(UID), Some(GID)).unwrap();
        chmod(&second, 0o600);
        let (found, _) = find_key(
            &[second.clone(), ak.clone()],
            &OfferedKey::Plain(k.clone()),
            "u",
            UID,
            GID,
            &home,
            true,
            &p,
            now,
        );
        assert_eq!(found.unwrap().options.command.as_deref(), Some("second"));
        // Files are read as the user: one the user cannot read is not read.
        chown(&second, Some(0), Some(0)).unwrap();
        chmod(&second, 0o600);
        let (found, log) = find_key(
            std::slice::from_ref(&second),
            &OfferedKey::Plain(k.clone()),
            "u",
            UID,
            GID,
            &home,
            true,
            &p,
            now,
        );
        assert!(found.is_none());
        assert!(
            log.iter()
                .any(|l| l.starts_with("Could not open authorized keys")),
            "{log:?}"
        );
        // ... while root's own reads of root's files still work.
        assert!(find_key(
            std::slice::from_ref(&second),
            &OfferedKey::Plain(k.clone()),
            "u",
            0,
            0,
            &home,
            false,
            &p,
            now
        )
        .0
        .is_some());
        // The thread's file system identity is back to root.
        assert_eq!(current_fsuid(), 0);
        assert_eq!(current_fsgid(), 0);
    }

    #[test]
    fn authkeys_find_key_special_files() {
        assert!(
            is_root(),
            "this test needs root: it chowns files to other users"
        );
        let dir = TempDir::new();
        let (k, line) = publine(KeyType::Ed25519, "k");
        let (home, ak) = make_home(dir.path(), &format!("{line}\n"));
        let p = peer4([127, 0, 0, 1]);
        // A FIFO does not block and is not read.
        let fifo = home.join(".ssh/fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        chown(&fifo, Some(UID), Some(GID)).unwrap();
        let (found, log) = find_key(
            &[fifo, ak.clone()],
            &OfferedKey::Plain(k.clone()),
            "u",
            UID,
            GID,
            &home,
            true,
            &p,
            1,
        );
        assert!(found.is_some());
        assert!(
            log.iter().any(|l| l.contains("is not a regular file")),
            "{log:?}"
        );
        // A directory neither.
        let (found, log) = find_key(
            &[home.join(".ssh")],
            &OfferedKey::Plain(k.clone()),
            "u",
            UID,
            GID,
            &home,
            true,
            &p,
            1,
        );
        assert!(found.is_none());
        assert!(
            log.iter().any(|l| l.contains("is not a regular file")),
            "{log:?}"
        );
        // Overlong lines are skipped, and reading goes on.
        let long = format!("{}\n{line}\n", "x".repeat(MAX_LINE_LEN + 10));
        fs::write(&ak, long).unwrap();
        let (found, log) = find_key(
            std::slice::from_ref(&ak),
            &OfferedKey::Plain(k.clone()),
            "u",
            UID,
            GID,
            &home,
            true,
            &p,
            1,
        );
        assert!(found.is_some());
        assert!(
            log.iter().any(|l| l.contains(":1: line longer than")),
            "{log:?}"
        );
        // A last line without a newline counts.
        fs::write(&ak, &line).unwrap();
        assert!(find_key(
            std::slice::from_ref(&ak),
            &OfferedKey::Plain(k.clone()),
            "u",
            UID,
            GID,
            &home,
            true,
            &p,
            1
        )
        .0
        .is_some());
    }

    #[test]
    fn authkeys_read_line_bounded() {
        let data = b"short\nabcdefghij\nend";
        let mut r = io::BufReader::with_capacity(4, &data[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Some(false));
        assert_eq!(buf, b"short\n");
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Some(true));
        assert!(buf.is_empty());
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Some(false));
        assert_eq!(buf, b"end");
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), None);
    }

    #[test]
    fn authkeys_expand_path() {
        let home = Path::new("/home/alice");
        let x = |p: &str| expand_authorized_keys_path(p, "alice", home, 1001);
        assert_eq!(
            x(".ssh/authorized_keys"),
            Ok(PathBuf::from("/home/alice/.ssh/authorized_keys"))
        );
        assert_eq!(
            x("%h/.ssh/authorized_keys2"),
            Ok(PathBuf::from("/home/alice/.ssh/authorized_keys2"))
        );
        assert_eq!(
            x("/etc/ssh/keys/%u"),
            Ok(PathBuf::from("/etc/ssh/keys/alice"))
        );
        assert_eq!(
            x("/etc/ssh/keys/%U.%%"),
            Ok(PathBuf::from("/etc/ssh/keys/1001.%"))
        );
        assert_eq!(x("keys/%u"), Ok(PathBuf::from("/home/alice/keys/alice")));
        assert!(x("/etc/%x").unwrap_err().contains("unknown key %x"));
        assert!(x("/etc/%").unwrap_err().contains("trailing %"));
        assert!(x(&"a".repeat(PATH_MAX)).unwrap_err().contains("too long"));
    }

    proptest::proptest! {
        #[test]
        fn authkeys_parse_line_never_panics(s in ".{0,300}") {
            let _ = parse_line(&s);
        }

        #[test]
        fn authkeys_parse_line_options_never_panic(
            opts in "[a-zA-Z=\",\\\\ .:*\\[\\]0-9-]{0,80}",
        ) {
            let line = format!("{opts} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFyF8y3kHHWSqAPQAGk7SnVNj1sDWbhyvLXWhn2Ea0Yy c");
            let _ = parse_line(&line);
        }

        #[test]
        fn authkeys_patterns_never_panic(s in ".{0,40}", p in ".{0,40}") {
            let _ = from_matches(&p, &peer4([1, 2, 3, 4]));
            let _ = from_matches(&p, &PeerInfo { addr: "::1".parse().unwrap(), port: 1, hostname: Some(s.clone()) });
        }
    }

    /// A user certificate made by ssh-keygen with `args`.
    fn keygen_cert(dir: &ressh_testkit::TempDir, args: &[&str]) -> Certificate {
        let (ca, _) = ressh_testkit::ssh_keygen(dir.path(), "ed25519", "");
        let (key, _) = ressh_testkit::ssh_keygen(dir.path(), "ed25519", "");
        let (_, line) = ressh_testkit::ssh_keygen_sign(&ca, &key, args);
        Certificate::from_openssh(&line).unwrap().0
    }

    #[test]
    fn principals_file_lines() {
        let dir = ressh_testkit::TempDir::new("principals");
        let cert = keygen_cert(&dir, &["-I", "p", "-n", "ops,deploy"]);
        let line = |l: &str| principals_line(l.as_bytes(), &cert);
        assert_eq!(line("ops\n"), Ok(Some(KeyOptions::default())));
        assert_eq!(line("  deploy  \t\n"), Ok(Some(KeyOptions::default())));
        assert_eq!(line("other\n"), Ok(None));
        assert_eq!(line("# ops\n"), Ok(None));
        assert_eq!(line("op\n"), Ok(None));
        // Options before the last word; the principal is the last word.
        let o = line("no-pty,command=\"id\"   ops\n").unwrap().unwrap();
        assert!(o.no_pty);
        assert_eq!(o.command.as_deref(), Some("id"));
        assert_eq!(line("blah ops"), Err("unknown key option"));
        assert_eq!(
            line("cert-authority ops"),
            Err("cert-authority flag invalid here")
        );
        // A comment after the principal ends the line.
        assert!(line("ops # the ops team").unwrap().is_some());
    }

    #[test]
    fn certificate_options_and_their_merge() {
        let dir = ressh_testkit::TempDir::new("certopts");
        let plain = keygen_cert(&dir, &["-I", "o"]);
        let o = cert_options(&plain).unwrap();
        // ssh-keygen's default extensions permit all but no-touch-required.
        assert!(!o.no_pty && !o.no_port_forwarding && !o.no_agent_forwarding);
        assert!(!o.no_x11_forwarding && !o.no_user_rc && !o.no_touch_required);
        let bare = keygen_cert(&dir, &["-I", "o", "-O", "clear"]);
        let o = cert_options(&bare).unwrap();
        assert!(o.no_pty && o.no_port_forwarding && o.no_agent_forwarding);
        assert!(o.no_x11_forwarding && o.no_user_rc);
        let forced = keygen_cert(&dir, &["-I", "o", "-O", "force-command=id"]);
        let certopts = cert_options(&forced).unwrap();
        assert_eq!(certopts.command.as_deref(), Some("id"));
        // Merged under a line's options: permissions in both, the same
        // forced command or none.
        let line = KeyOptions {
            no_pty: true,
            command: Some("id".into()),
            environment: vec![("A".into(), "b".into())],
            ..KeyOptions::default()
        };
        let m = merge_options(&line, &certopts).unwrap();
        assert!(m.no_pty && !m.no_port_forwarding);
        assert_eq!(m.command.as_deref(), Some("id"));
        assert_eq!(m.environment, line.environment);
        let other = KeyOptions {
            command: Some("true".into()),
            ..KeyOptions::default()
        };
        assert_eq!(
            merge_options(&other, &certopts),
            Err("forced command options do not match".to_string())
        );
        // no-touch-required must be in both, verify-required in either.
        let touchless = KeyOptions {
            no_touch_required: true,
            verify_required: true,
            ..KeyOptions::default()
        };
        let m = merge_options(&touchless, &certopts).unwrap();
        assert!(!m.no_touch_required && m.verify_required);
        // An unknown critical option, or a malformed source-address,
        // refuses the certificate.
        let unknown = keygen_cert(&dir, &["-I", "o", "-O", "critical:x@example.test=1"]);
        assert!(cert_options(&unknown)
            .unwrap_err()
            .contains("is not supported"));
        let bad = keygen_cert(&dir, &["-I", "o", "-O", "source-address=198.18.0.0/15"]);
        let o = cert_options(&bad).unwrap();
        let peer = |a: [u8; 4]| PeerInfo {
            addr: IpAddr::from(a),
            port: 1,
            hostname: None,
        };
        let mut log = Vec::new();
        assert!(authorise_options(
            &o,
            "c",
            "u",
            &peer([198, 19, 1, 1]),
            1,
            &mut log
        ));
        assert!(!authorise_options(
            &o,
            "c",
            "u",
            &peer([198, 20, 0, 1]),
            1,
            &mut log
        ));
        assert!(log[0].contains("not from a permitted source address (198.20.0.1)"));
    }
}
