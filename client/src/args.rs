//! The ssh command line.
//!
//! Flags that are settings become `(keyword, value)` pairs applied before any
//! configuration file, so that they win as ssh's do. Options are parsed
//! before and after the destination, as ssh allows (`ssh host -p 22 cmd`).

use std::fmt;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Args {
    /// `[user@]host` or `ssh://[user@]host[:port]`, as given.
    pub destination: Option<String>,
    pub command: Vec<String>,
    /// Settings in command-line order, first wins: (keyword lowercased, value).
    pub settings: Vec<(String, String)>,
    /// Where the destination's user and port go among `settings` (ssh takes
    /// whichever of `-l` and `user@` came first).
    pub dest_index: usize,
    pub config_file: Option<String>,
    /// Number of -v flags.
    pub verbose: u8,
    pub quiet: bool,
    pub version: bool,
    pub print_config: bool,
    /// -W host:port: stdio forwarding (used for ProxyJump).
    pub stdio_forward: Option<String>,
    pub log_file: Option<String>,
    /// -t count: 1 = yes, 2+ = force.
    pub tty: u8,
    /// -Q query: print the algorithms asked for and exit.
    pub query: Option<String>,
    /// -O ctl_cmd: a control command for the master of ControlPath.
    pub control_command: Option<String>,
    /// Number of -M flags (1: ControlMaster yes, 2+: ask).
    pub master: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError(pub String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub const USAGE: &str = "\
usage: ressh [-46aCfGMNnqsTtVvx] [-c cipher_spec] [-D [bind_address:]port]
             [-E log_file] [-e escape_char] [-F configfile] [-i identity_file]
             [-J destination] [-L address] [-l login_name] [-m mac_spec]
             [-O ctl_cmd] [-o option] [-p port] [-Q query_option]
             [-R address] [-S ctl_path] [-W host:port] destination [command [argument ...]]";

/// Flags without an argument.
const FLAGS: &str = "46AaCfGgKkMNnqsTtVvXxYy";
/// Flags taking an argument.
const WITH_ARG: &str = "BbcDEeFIiJLlmOoPpQRSWw";

fn refuse(flag: char, what: &str) -> ArgError {
    ArgError(format!("ressh: option -{flag} ({what}) is not supported"))
}

/// Parses `argv` without the program name.
pub fn parse<I: IntoIterator<Item = String>>(argv: I) -> Result<Args, ArgError> {
    let argv: Vec<String> = argv.into_iter().collect();
    let mut a = Args::default();
    let mut i = 0;
    // Flags ssh assigns directly: they win over -o and config files, and a
    // later one over an earlier one. Kept apart, prepended at the end.
    let mut direct: Vec<(String, String)> = Vec::new();
    let mut tty_req: Option<&str> = None;
    while i < argv.len() {
        let arg = &argv[i];
        i += 1;
        if arg == "--" {
            if a.destination.is_none() && i < argv.len() {
                a.destination = Some(argv[i].clone());
                a.dest_index = a.settings.len();
                i += 1;
            }
            a.command.extend(argv[i..].iter().cloned());
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            if a.destination.is_none() {
                a.destination = Some(arg.clone());
                a.dest_index = a.settings.len();
                continue;
            }
            a.command.push(arg.clone());
            a.command.extend(argv[i..].iter().cloned());
            break;
        }
        let chars: Vec<char> = arg[1..].chars().collect();
        let mut j = 0;
        while j < chars.len() {
            let c = chars[j];
            j += 1;
            if FLAGS.contains(c) {
                match c {
                    '4' => direct.push(("addressfamily".into(), "inet".into())),
                    '6' => direct.push(("addressfamily".into(), "inet6".into())),
                    'A' => direct.push(("forwardagent".into(), "yes".into())),
                    'a' => direct.push(("forwardagent".into(), "no".into())),
                    'C' => direct.push(("compression".into(), "yes".into())),
                    'f' => {
                        direct.push(("forkafterauthentication".into(), "yes".into()));
                        direct.push(("stdinnull".into(), "yes".into()));
                    }
                    'G' => a.print_config = true,
                    'g' => direct.push(("gatewayports".into(), "yes".into())),
                    'K' => return Err(refuse('K', "GSSAPI")),
                    'k' => a
                        .settings
                        .push(("gssapidelegatecredentials".into(), "no".into())),
                    'M' => a.master = a.master.saturating_add(1),
                    'N' => direct.push(("sessiontype".into(), "none".into())),
                    'n' => direct.push(("stdinnull".into(), "yes".into())),
                    'q' => a.quiet = true,
                    's' => direct.push(("sessiontype".into(), "subsystem".into())),
                    'T' => tty_req = Some("no"),
                    't' => {
                        a.tty = a.tty.saturating_add(1);
                        tty_req = Some(if tty_req == Some("yes") {
                            "force"
                        } else {
                            "yes"
                        });
                    }
                    'V' => a.version = true,
                    'v' => a.verbose = a.verbose.saturating_add(1),
                    'X' => direct.push(("forwardx11".into(), "yes".into())),
                    'Y' => {
                        direct.push(("forwardx11".into(), "yes".into()));
                        direct.push(("forwardx11trusted".into(), "yes".into()));
                    }
                    'x' => direct.push(("forwardx11".into(), "no".into())),
                    'y' => {} // syslog: logging goes to stderr or -E
                    _ => unreachable!(),
                }
                continue;
            }
            if !WITH_ARG.contains(c) {
                return Err(ArgError(format!("ressh: unknown option -- {c}\n{USAGE}")));
            }
            let val: String = if j < chars.len() {
                let v: String = chars[j..].iter().collect();
                j = chars.len();
                v
            } else if i < argv.len() {
                i += 1;
                argv[i - 1].clone()
            } else {
                return Err(ArgError(format!(
                    "ressh: option requires an argument -- {c}\n{USAGE}"
                )));
            };
            let kw = |k: &str| (k.to_string(), val.clone());
            match c {
                'B' => return Err(refuse('B', "bind interface")),
                'b' => return Err(refuse('b', "bind address")),
                'c' => direct.push(kw("ciphers")),
                'D' => a.settings.push(kw("dynamicforward")),
                'E' => a.log_file = Some(val),
                'e' => direct.push(kw("escapechar")),
                'F' => a.config_file = Some(val),
                'I' => return Err(refuse('I', "PKCS#11")),
                'i' => a.settings.push(kw("identityfile")),
                'J' => direct.push(kw("proxyjump")),
                'L' => a.settings.push(kw("localforward")),
                'l' => a.settings.push(kw("user")),
                'm' => direct.push(kw("macs")),
                'O' => a.control_command = Some(val),
                'o' => {
                    let (k, v) = split_option(&val)?;
                    a.settings.push((k, v));
                }
                'P' => a.settings.push(kw("tag")),
                'p' => direct.push(kw("port")),
                'Q' => a.query = Some(val),
                'R' => a.settings.push(kw("remoteforward")),
                'S' => a.settings.push(kw("controlpath")),
                'W' => a.stdio_forward = Some(val),
                'w' => return Err(refuse('w', "tunnel devices")),
                _ => unreachable!(),
            }
        }
    }
    if a.quiet {
        direct.push(("loglevel".into(), "QUIET".into()));
    } else if a.verbose > 0 {
        let l = match a.verbose {
            1 => "DEBUG1",
            2 => "DEBUG2",
            _ => "DEBUG3",
        };
        direct.push(("loglevel".into(), l.into()));
    }
    if let Some(t) = tty_req {
        direct.push(("requesttty".into(), t.into()));
    }
    match a.master {
        0 => {}
        1 => direct.push(("controlmaster".into(), "yes".into())),
        _ => direct.push(("controlmaster".into(), "ask".into())),
    }
    if a.stdio_forward.is_some() {
        direct.push(("sessiontype".into(), "none".into()));
        direct.push(("requesttty".into(), "no".into()));
        direct.push(("clearallforwardings".into(), "yes".into()));
    }
    // The last direct flag wins: put them first, latest first.
    direct.reverse();
    a.dest_index += direct.len();
    direct.append(&mut a.settings);
    a.settings = direct;
    Ok(a)
}

/// Splits a -o argument: `Keyword=Value`, `Keyword Value`, `Keyword = Value`.
pub fn split_option(s: &str) -> Result<(String, String), ArgError> {
    let s = s.trim();
    let end = s
        .find(|c: char| c == '=' || c.is_whitespace())
        .unwrap_or(s.len());
    let key = &s[..end];
    let mut rest = s[end..].trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    if key.is_empty() {
        return Err(ArgError(format!("ressh: bad -o option: {s:?}")));
    }
    Ok((key.to_ascii_lowercase(), rest.to_string()))
}

/// A parsed destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

/// Parses `[user@]host` (the last `@` separates the user) or
/// `ssh://[user@]host[:port]`.
pub fn parse_destination(d: &str) -> Result<Destination, ArgError> {
    if let Some(rest) = d.strip_prefix("ssh://") {
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(ArgError(format!("ressh: invalid URI: {d}")));
        }
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(pct_decode(u)?), h),
            None => (None, rest),
        };
        let (host, port) = split_host_port(hostport)
            .ok_or_else(|| ArgError(format!("ressh: invalid URI: {d}")))?;
        if host.is_empty() {
            return Err(ArgError(format!("ressh: invalid URI: {d}")));
        }
        return Ok(Destination { user, host, port });
    }
    let (user, host) = match d.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h.to_string()),
        None => (None, d.to_string()),
    };
    if host.is_empty() || user.as_deref() == Some("") {
        return Err(ArgError(format!("ressh: invalid destination: {d}")));
    }
    Ok(Destination {
        user,
        host,
        port: None,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`. None if the port is bad.
pub fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        return match after {
            "" => Some((h.to_string(), None)),
            p => Some((h.to_string(), Some(parse_port(p.strip_prefix(':')?)?))),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), Some(parse_port(p)?))),
        _ => Some((s.to_string(), None)),
    }
}

/// A port as ssh takes one (`-p`, `host:port`, `Port`): `a2port`, not 0.
pub fn parse_port(p: &str) -> Option<u16> {
    ressh_compat::misc::a2port(p).filter(|&p| p > 0)
}

fn pct_decode(s: &str) -> Result<String, ArgError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ArgError(format!("ressh: invalid URI escape in {s}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ArgError(format!("ressh: invalid URI user {s}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Args {
        parse(args.iter().map(|s| s.to_string())).unwrap()
    }

    fn has(a: &Args, k: &str, v: &str) -> bool {
        a.settings.iter().any(|(kk, vv)| kk == k && vv == v)
    }

    #[test]
    fn query_takes_its_kind() {
        assert_eq!(p(&["-Q", "kex"]).query.as_deref(), Some("kex"));
        assert_eq!(p(&["-Qsig"]).query.as_deref(), Some("sig"));
        assert!(parse(["-Q".to_string()]).is_err());
    }

    #[test]
    fn plain_destination_and_command() {
        let a = p(&["-p", "2222", "alice@host", "ls", "-l", "/tmp"]);
        assert_eq!(a.destination.as_deref(), Some("alice@host"));
        assert_eq!(a.command, vec!["ls", "-l", "/tmp"]);
        assert!(has(&a, "port", "2222"));
    }

    #[test]
    fn bundled_and_attached_flags() {
        let a = p(&["-vvv", "-tt", "-p2222", "-lbob", "-oUser=x", "h"]);
        assert_eq!(a.verbose, 3);
        assert!(has(&a, "loglevel", "DEBUG3"));
        assert!(has(&a, "requesttty", "force"));
        assert!(has(&a, "port", "2222"));
        assert!(has(&a, "user", "bob"));
        assert!(has(&a, "user", "x"));
        let a = p(&["-qx4", "h"]);
        assert!(a.quiet && has(&a, "loglevel", "QUIET") && has(&a, "addressfamily", "inet"));
    }

    #[test]
    fn options_after_destination_and_double_dash() {
        let a = p(&["host", "-p", "22", "cmd", "-p", "x"]);
        assert_eq!(a.command, vec!["cmd", "-p", "x"]);
        assert!(has(&a, "port", "22"));
        let a = p(&["-s", "--", "host", "sftp"]);
        assert_eq!(a.destination.as_deref(), Some("host"));
        assert_eq!(a.command, vec!["sftp"]);
        assert!(has(&a, "sessiontype", "subsystem"));
    }

    #[test]
    fn what_sftp_scp_rsync_and_git_pass() {
        // sftp
        let a = p(&[
            "-oForwardX11 no",
            "-oPermitLocalCommand no",
            "-oClearAllForwardings yes",
            "-oForwardAgent no",
            "-l",
            "u",
            "-p",
            "2222",
            "-s",
            "--",
            "127.0.0.1",
            "sftp",
        ]);
        assert!(has(&a, "forwardx11", "no"));
        assert!(has(&a, "permitlocalcommand", "no"));
        assert!(has(&a, "clearallforwardings", "yes"));
        assert_eq!(a.command, vec!["sftp"]);
        // scp
        let a = p(&[
            "-x",
            "-oPermitLocalCommand=no",
            "-oClearAllForwardings=yes",
            "-oRemoteCommand=none",
            "-oRequestTTY=no",
            "-oControlMaster=no",
            "-oForwardAgent=no",
            "-oBatchMode=yes",
            "-a",
            "-s",
            "--",
            "h",
            "sftp",
        ]);
        assert!(has(&a, "remotecommand", "none") && has(&a, "batchmode", "yes"));
        // git
        let a = p(&[
            "-o",
            "SendEnv=GIT_PROTOCOL",
            "-p",
            "22",
            "h",
            "git-upload-pack '/r.git'",
        ]);
        assert!(has(&a, "sendenv", "GIT_PROTOCOL"));
        assert_eq!(a.command, vec!["git-upload-pack '/r.git'"]);
    }

    #[test]
    fn direct_flags_win_over_options() {
        let a = p(&[
            "-o",
            "RequestTTY=force",
            "-T",
            "-p",
            "1",
            "-oPort=2",
            "-p3",
            "h",
        ]);
        let first = |k: &str| a.settings.iter().find(|(kk, _)| kk == k).unwrap().1.clone();
        assert_eq!(first("requesttty"), "no");
        assert_eq!(first("port"), "3");
        let a = p(&["-T", "-t", "-t", "h"]);
        let first = |k: &str| a.settings.iter().find(|(kk, _)| kk == k).unwrap().1.clone();
        assert_eq!(first("requesttty"), "force");
        let a = p(&["-N", "-W", "h:1", "j"]);
        let first = |k: &str| a.settings.iter().find(|(kk, _)| kk == k).unwrap().1.clone();
        assert_eq!(first("sessiontype"), "none");
        assert_eq!(first("requesttty"), "no");
        let a = p(&["-l", "x", "u@h", "-l", "y"]);
        assert_eq!(a.dest_index, 1);
        let a = p(&["-M", "-S", "/s", "-O", "check", "h"]);
        let first = |k: &str| a.settings.iter().find(|(kk, _)| kk == k).unwrap().1.clone();
        assert_eq!(first("controlmaster"), "yes");
        assert_eq!(first("controlpath"), "/s");
        assert_eq!(a.control_command.as_deref(), Some("check"));
        let a = p(&["-MM", "h"]);
        let first = |k: &str| a.settings.iter().find(|(kk, _)| kk == k).unwrap().1.clone();
        assert_eq!(first("controlmaster"), "ask");
    }

    #[test]
    fn refused_and_bad_options() {
        for args in [&["-K", "h"][..], &["-w", "0:0", "h"]] {
            let e = parse(args.iter().map(|s| s.to_string())).unwrap_err();
            assert!(e.0.contains("not supported"), "{e}");
        }
        assert!(parse(["-Z".to_string()]).is_err());
        assert!(parse(["-p".to_string()]).is_err());
    }

    #[test]
    fn dynamic_forward_and_background() {
        let a = p(&[
            "-D",
            "1080",
            "-D127.0.0.1:1081",
            "-fN",
            "h",
            "-D",
            "[::1]:1082",
        ]);
        let dynamic: Vec<&str> = a
            .settings
            .iter()
            .filter(|(k, _)| k == "dynamicforward")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(dynamic, ["1080", "127.0.0.1:1081", "[::1]:1082"]);
        assert!(has(&a, "forkafterauthentication", "yes"));
        assert!(has(&a, "stdinnull", "yes"));
        assert!(has(&a, "sessiontype", "none"));
    }

    #[test]
    fn destinations() {
        assert_eq!(
            parse_destination("a@b@host").unwrap(),
            Destination {
                user: Some("a@b".into()),
                host: "host".into(),
                port: None
            }
        );
        assert_eq!(
            parse_destination("ssh://u@[::1]:2222").unwrap(),
            Destination {
                user: Some("u".into()),
                host: "::1".into(),
                port: Some(2222)
            }
        );
        assert_eq!(
            parse_destination("ssh://h.example:22/").unwrap(),
            Destination {
                user: None,
                host: "h.example".into(),
                port: Some(22)
            }
        );
        assert!(parse_destination("ssh://h:0").is_err());
        assert!(parse_destination("ssh://h/path").is_err());
        assert!(parse_destination("@h").is_err());
        assert_eq!(
            split_option("Port = 22").unwrap(),
            ("port".into(), "22".into())
        );
        assert_eq!(
            split_option("user\tx").unwrap(),
            ("user".into(), "x".into())
        );
    }
}
