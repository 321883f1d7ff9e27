//! restls's settings, from the command line and from a configuration file
//! (restls.conf(5)): the same names in both (`--listen ADDR` on the command
//! line is `listen ADDR` in the file), the command line winning.
//!
//! Strict: an unknown name, a name given twice (in one place), a value out
//! of range or an option of the other mode is an error naming the option
//! and the value (and the file and line).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use openssl::ssl::SslVersion;

/// The longest configuration file read.
const MAX_CONFIG: u64 = 1 << 20;
/// The longest duration option: a year.
const MAX_SECS: u64 = 365 * 24 * 3600;

pub const USAGE: &str = "usage: restls [server|client] [--config FILE] [--check] [OPTION...]
       restls --help | --version";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Server,
    Client,
}

/// Which mode an option belongs to.
#[derive(Clone, Copy, PartialEq)]
enum For {
    Server,
    Client,
    Both,
}

/// One option: its name, its value's name, its mode, its help line.
struct Opt(&'static str, &'static str, For, &'static str);

/// Every option that both the command line and the file take.
const OPTS: &[Opt] = &[
    Opt(
        "mode",
        "server|client",
        For::Both,
        "the mode (also the first argument)",
    ),
    Opt(
        "listen",
        "ADDR:PORT",
        For::Both,
        "where to accept: TLS (server), plain TCP (client)",
    ),
    Opt(
        "forward",
        "HOST:PORT",
        For::Server,
        "where each connection goes, as plain TCP",
    ),
    Opt(
        "cert",
        "FILE",
        For::Server,
        "certificate chain, PEM, the server's first",
    ),
    Opt("key", "FILE", For::Server, "its private key, PEM"),
    Opt(
        "detach-timeout",
        "SECS",
        For::Server,
        "how long a connection waits for its client [3600]",
    ),
    Opt(
        "max-startups",
        "N",
        For::Server,
        "most TLS handshakes in progress at once [64]",
    ),
    Opt(
        "max-connections",
        "N",
        For::Server,
        "most connections served at once, attached or detached [10000]",
    ),
    Opt(
        "max-detached",
        "N",
        For::Server,
        "most connections detached at once; one more that breaks ends [1000]",
    ),
    Opt(
        "max-per-source",
        "N",
        For::Server,
        "most connections served at once from one client IP address [100]",
    ),
    Opt(
        "ticket-lifetime",
        "SECS",
        For::Server,
        "lifetime of the session tickets reconnects resume with [604800]",
    ),
    Opt(
        "connect",
        "HOST:PORT",
        For::Client,
        "the server; resolved again on every reconnect",
    ),
    Opt(
        "ca",
        "FILE",
        For::Client,
        "CA certificates (PEM) to verify the server [system's]",
    ),
    Opt(
        "servername",
        "NAME",
        For::Client,
        "name the server's certificate must carry, and SNI [host of --connect]",
    ),
    Opt(
        "keepalive",
        "SECS",
        For::Client,
        "probe after this much silence, reconnect after twice [10]",
    ),
    Opt(
        "give-up",
        "SECS",
        For::Client,
        "stop reconnecting after this long [3600]",
    ),
    Opt(
        "tls-max",
        "1.2|1.3",
        For::Client,
        "highest TLS version offered [1.3]",
    ),
    Opt(
        "buffer",
        "BYTES",
        For::Both,
        "most unacknowledged bytes kept per connection [8388608]",
    ),
    Opt(
        "queue",
        "BYTES",
        For::Both,
        "most bytes waiting for one side of a connection before the other is not read [1048576]",
    ),
];

/// `restls --help`.
pub fn help() -> String {
    let mut h = format!(
        "restls {}: a TLS tunnel whose connections survive TCP breaks\n\n{USAGE}\n\n",
        env!("CARGO_PKG_VERSION")
    );
    h.push_str(
        "  --config FILE      read settings from FILE (restls.conf(5)); options given here win\n\
         \x20 --check            check the settings, certificate and key, then exit\n\
         \x20 --help, --version\n\n\
         Options (--NAME VALUE or --NAME=VALUE; `NAME VALUE` in a configuration file):\n",
    );
    for Opt(name, arg, mode, text) in OPTS {
        let m = match mode {
            For::Server => "server: ",
            For::Client => "client: ",
            For::Both => "",
        };
        h.push_str(&format!("  --{:<28}{m}{text}\n", format!("{name} {arg}")));
    }
    h.push_str("\nSIGHUP (systemctl reload) makes a server load its certificate and key again.\n");
    h
}

/// What the command line asks for.
pub enum Cli {
    Help,
    Version,
    Run {
        mode: Mode,
        settings: Box<Settings>,
        check: bool,
    },
}

/// Every setting, None where not given.
#[derive(Default)]
pub struct Settings {
    pub mode: Option<Mode>,
    pub listen: Option<SocketAddr>,
    pub forward: Option<String>,
    pub connect: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub servername: Option<String>,
    pub detach_timeout: Option<Duration>,
    pub keepalive: Option<Duration>,
    pub give_up: Option<Duration>,
    pub buffer: Option<usize>,
    pub max_startups: Option<usize>,
    pub queue: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_detached: Option<usize>,
    pub max_per_source: Option<usize>,
    pub ticket_lifetime: Option<Duration>,
    pub tls_max: Option<SslVersion>,
    /// The options given and where (`--NAME` or `FILE:LINE`), to refuse
    /// repeats and the other mode's options.
    given: Vec<(&'static str, String)>,
}

fn number(v: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = v.parse().map_err(|_| format!("not a number: {v:?}"))?;
    if !(min..=max).contains(&n) {
        return Err(format!("{n} is not in {min}..={max}"));
    }
    Ok(n)
}

fn secs(v: &str, min: u64) -> Result<Duration, String> {
    number(v, min, MAX_SECS).map(Duration::from_secs)
}

/// `HOST:PORT`, the port a number 1..=65535; the host resolved later.
fn host_port(v: &str) -> Result<String, String> {
    let (host, port) = v
        .rsplit_once(':')
        .ok_or_else(|| format!("not HOST:PORT: {v:?}"))?;
    // An IPv6 address in brackets, or a name or IPv4 address without ':'.
    let host = match host.strip_prefix('[') {
        Some(h) => h
            .strip_suffix(']')
            .filter(|h| h.parse::<std::net::Ipv6Addr>().is_ok()),
        None => Some(host).filter(|h| !h.contains(':')),
    };
    if host.is_none_or(|h| h.is_empty() || h.contains(char::is_whitespace)) {
        return Err(format!("not HOST:PORT: {v:?}"));
    }
    number(port, 1, 65535).map_err(|e| format!("port of {v:?}: {e}"))?;
    Ok(v.to_string())
}

fn path(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        return Err("empty file name".into());
    }
    Ok(PathBuf::from(v))
}

impl Settings {
    fn has(&self, name: &str) -> bool {
        self.given.iter().any(|(n, _)| *n == name)
    }

    /// Sets option `name` (without `--`), given `at`, to `v`. The error
    /// names neither: the caller says where it was.
    fn set(&mut self, name: &str, v: &str, at: String) -> Result<(), String> {
        let Some(Opt(name, ..)) = OPTS.iter().find(|o| o.0 == name) else {
            return Err("unknown option".into());
        };
        if self.has(name) {
            return Err("given twice".into());
        }
        self.given.push((name, at));
        match *name {
            "mode" => self.mode = Some(mode(v)?),
            "listen" => {
                self.listen = Some(
                    v.parse()
                        .map_err(|_| format!("not an IP ADDR:PORT: {v:?}"))?,
                )
            }
            "forward" => self.forward = Some(host_port(v)?),
            "connect" => self.connect = Some(host_port(v)?),
            "cert" => self.cert = Some(path(v)?),
            "key" => self.key = Some(path(v)?),
            "ca" => self.ca = Some(path(v)?),
            "servername" => {
                if v.is_empty() || v.contains(char::is_whitespace) {
                    return Err(format!("not a host name: {v:?}"));
                }
                self.servername = Some(v.to_string())
            }
            "detach-timeout" => self.detach_timeout = Some(secs(v, 0)?),
            "keepalive" => self.keepalive = Some(secs(v, 1)?),
            "give-up" => self.give_up = Some(secs(v, 0)?),
            "buffer" => self.buffer = Some(number(v, 64 << 10, 1 << 30)? as usize),
            "max-startups" => self.max_startups = Some(number(v, 1, 1 << 16)? as usize),
            "queue" => self.queue = Some(number(v, 64 << 10, 1 << 30)? as usize),
            "max-connections" => self.max_connections = Some(number(v, 1, 1 << 24)? as usize),
            "max-detached" => self.max_detached = Some(number(v, 0, 1 << 24)? as usize),
            "max-per-source" => self.max_per_source = Some(number(v, 1, 1 << 24)? as usize),
            "ticket-lifetime" => {
                self.ticket_lifetime = Some(Duration::from_secs(number(v, 2, 7 * 24 * 3600)?))
            }
            "tls-max" => {
                self.tls_max = Some(match v {
                    "1.2" => SslVersion::TLS1_2,
                    "1.3" => SslVersion::TLS1_3,
                    _ => return Err(format!("1.2 or 1.3, not {v:?}")),
                })
            }
            _ => unreachable!("every option of OPTS is handled"),
        }
        Ok(())
    }

    /// The settings of a configuration file: `NAME VALUE` lines; blank
    /// lines and lines starting with `#` are ignored.
    pub fn read_file(file: &std::path::Path) -> Result<Settings, String> {
        use std::io::Read;
        let f = file.display();
        let mut bytes = Vec::new();
        std::fs::File::open(file)
            .and_then(|h| h.take(MAX_CONFIG + 1).read_to_end(&mut bytes))
            .map_err(|e| format!("{f}: {e}"))?;
        if bytes.len() as u64 > MAX_CONFIG {
            return Err(format!("{f}: longer than {MAX_CONFIG} bytes"));
        }
        let mut s = Settings::default();
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let at = format!("{f}:{}", i + 1);
            let line = std::str::from_utf8(line).map_err(|_| format!("{at}: not UTF-8"))?;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = line
                .split_once(char::is_whitespace)
                .map(|(n, v)| (n, v.trim()))
                .ok_or_else(|| format!("{at}: {line:?}: no value"))?;
            s.set(name, value, at.clone())
                .map_err(|e| format!("{at}: {name}: {e}"))?;
        }
        Ok(s)
    }

    /// Fills what is not set from `file`'s settings.
    fn or(mut self, file: Settings) -> Settings {
        macro_rules! or {
            ($($f:ident),*) => { $( self.$f = self.$f.or(file.$f); )* };
        }
        or!(
            mode,
            listen,
            forward,
            connect,
            cert,
            key,
            ca,
            servername,
            detach_timeout,
            keepalive,
            give_up,
            buffer,
            max_startups,
            queue,
            max_connections,
            max_detached,
            max_per_source,
            ticket_lifetime,
            tls_max
        );
        for (name, at) in file.given {
            if !self.has(name) {
                self.given.push((name, at));
            }
        }
        self
    }

    /// The mode, with every option given belonging to it.
    fn mode(&self) -> Result<Mode, String> {
        let m = self
            .mode
            .ok_or("no mode: give server or client (or `mode` in the configuration file)")?;
        for (name, at) in &self.given {
            let Some(Opt(_, _, f, _)) = OPTS.iter().find(|o| o.0 == *name) else {
                continue;
            };
            let ok = match f {
                For::Both => true,
                For::Server => m == Mode::Server,
                For::Client => m == Mode::Client,
            };
            if !ok {
                return Err(format!(
                    "{at}: {name} is not an option of restls {}",
                    if m == Mode::Server {
                        "server"
                    } else {
                        "client"
                    }
                ));
            }
        }
        Ok(m)
    }
}

fn mode(v: &str) -> Result<Mode, String> {
    match v {
        "server" => Ok(Mode::Server),
        "client" => Ok(Mode::Client),
        _ => Err(format!("server or client, not {v:?}")),
    }
}

/// A value the settings must have.
pub fn need<T: Clone>(v: &Option<T>, name: &str) -> Result<T, String> {
    v.clone().ok_or_else(|| format!("--{name} is required"))
}

/// Parses the command line (without the program name), reading the
/// configuration file it names.
pub fn parse(args: &[String]) -> Result<Cli, String> {
    let mut s = Settings::default();
    let mut config: Option<PathBuf> = None;
    let mut check = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(long) = arg.strip_prefix("--") else {
            if arg == "-h" {
                return Ok(Cli::Help);
            }
            if arg == "-V" {
                return Ok(Cli::Version);
            }
            if arg.starts_with('-') || s.has("mode") {
                return Err(format!("unexpected argument {arg:?}"));
            }
            s.set("mode", arg, "mode".into())
                .map_err(|e| format!("mode: {e}"))?;
            continue;
        };
        let (name, inline) = match long.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (long, None),
        };
        match name {
            "help" | "version" | "check" if inline.is_some() => {
                return Err(format!("--{name} takes no value"))
            }
            "help" => return Ok(Cli::Help),
            "version" => return Ok(Cli::Version),
            "check" => {
                check = true;
                continue;
            }
            _ => {}
        }
        if name != "config" && !OPTS.iter().any(|o| o.0 == name) {
            return Err(format!("unknown option --{name}"));
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| format!("--{name} needs a value"))?,
        };
        if name == "config" {
            if config.is_some() {
                return Err("--config: given twice".into());
            }
            config = Some(path(value).map_err(|e| format!("--config: {e}"))?);
            continue;
        }
        s.set(name, value, format!("--{name}"))
            .map_err(|e| format!("--{name}: {e}"))?;
    }
    if let Some(file) = config {
        s = s.or(Settings::read_file(&file)?);
    }
    Ok(Cli::Run {
        mode: s.mode()?,
        settings: Box::new(s),
        check,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Settings, String> {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&v)? {
            Cli::Run { settings, .. } => Ok(*settings),
            _ => panic!("not a run"),
        }
    }

    fn err(args: &[&str]) -> String {
        run(args).err().expect("an error")
    }

    #[test]
    fn both_spellings_and_errors_naming_flag_and_value() {
        let s = run(&["server", "--listen=127.0.0.1:1", "--buffer", "65536"]).unwrap();
        assert_eq!(s.listen, Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!(s.buffer, Some(65536));
        assert_eq!(
            err(&["server", "--buffer=12x"]),
            "--buffer: not a number: \"12x\""
        );
        assert_eq!(
            err(&["server", "--buffer", "1"]),
            "--buffer: 1 is not in 65536..=1073741824"
        );
        assert_eq!(
            err(&["client", "--tls-max=1.1"]),
            "--tls-max: 1.2 or 1.3, not \"1.1\""
        );
        assert_eq!(
            err(&["server", "--frobnicate=1"]),
            "unknown option --frobnicate"
        );
        assert_eq!(err(&["server", "--listen"]), "--listen needs a value");
        assert_eq!(
            err(&["server", "--connect", "h:1"]),
            "--connect: connect is not an option of restls server"
        );
        assert_eq!(
            err(&["server", "--keepalive=0"]),
            "--keepalive: 0 is not in 1..=31536000"
        );
        assert_eq!(
            err(&["server", "--forward=x:1", "--forward=y:2"]),
            "--forward: given twice"
        );
        assert_eq!(
            err(&["client", "--connect=h:0"]),
            "--connect: port of \"h:0\": 0 is not in 1..=65535"
        );
        assert_eq!(
            err(&["server", "--queue=1k"]),
            "--queue: not a number: \"1k\""
        );
        assert_eq!(
            err(&["server", "--ticket-lifetime=1"]),
            "--ticket-lifetime: 1 is not in 2..=604800"
        );
        assert_eq!(
            err(&["server", "--max-connections", "0"]),
            "--max-connections: 0 is not in 1..=16777216"
        );
        assert_eq!(
            err(&["client", "--max-detached=5"]),
            "--max-detached: max-detached is not an option of restls client"
        );
        let s = run(&["client", "--queue=65536"]).unwrap();
        assert_eq!(s.queue, Some(65536));
        assert_eq!(err(&["proxy"]), "mode: server or client, not \"proxy\"");
        assert_eq!(
            err(&["client", "--connect=::1:80"]),
            "--connect: not HOST:PORT: \"::1:80\""
        );
        let s = run(&["client", "--connect=[::1]:80"]).unwrap();
        assert_eq!(s.connect.as_deref(), Some("[::1]:80"));
        assert!(err(&["--listen=127.0.0.1:1"]).starts_with("no mode"));
        assert!(matches!(parse(&["--help".into()]), Ok(Cli::Help)));
        assert!(matches!(parse(&["-V".into()]), Ok(Cli::Version)));
    }

    #[test]
    fn file_settings_lose_to_the_command_line_and_errors_name_file_and_line() {
        let dir = std::env::temp_dir().join(format!("restls-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t.conf");
        std::fs::write(
            &f,
            "# a comment\n\nmode server\nlisten 127.0.0.1:4433\nforward localhost:6379\n\
             cert /etc/restls/t.crt\nkey /etc/restls/t.key\nbuffer 65536\n\
             max-detached 0\nticket-lifetime 3600\n",
        )
        .unwrap();
        let fs = f.to_str().unwrap();
        let s = run(&["--config", fs, "--buffer=131072"]).unwrap();
        assert_eq!(s.mode, Some(Mode::Server));
        assert_eq!(s.buffer, Some(131072));
        assert_eq!(s.forward.as_deref(), Some("localhost:6379"));
        assert_eq!(s.key, Some(PathBuf::from("/etc/restls/t.key")));
        assert_eq!(s.max_detached, Some(0));
        assert_eq!(s.ticket_lifetime, Some(Duration::from_secs(3600)));
        for (text, want) in [
            (
                "mode server\nlisten 1.2.3.4\n",
                "2: listen: not an IP ADDR:PORT: \"1.2.3.4\"",
            ),
            ("mode server\nbufer 65536\n", "2: bufer: unknown option"),
            (
                "mode server\nbuffer 65536\nbuffer 65536\n",
                "3: buffer: given twice",
            ),
            ("mode server\nlisten\n", "2: \"listen\": no value"),
            (
                "mode client\n\nca /x\ncert /y\n",
                ":4: cert is not an option of restls client",
            ),
        ] {
            std::fs::write(&f, text).unwrap();
            let e = err(&["--config", fs]);
            assert!(e.ends_with(want) && e.starts_with(fs), "{text:?}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
