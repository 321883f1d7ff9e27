//! Port forwarding specs (-L, -R, -D, LocalForward, RemoteForward,
//! DynamicForward) and the addresses of local listeners. A remote forward
//! may listen on a Unix-domain socket of the server (`-R /path:host:port`);
//! other Unix-socket and remote dynamic forwards are refused with a clear
//! message.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// A TCP forward: listen on `bind:port`, connect to `host:host_port` at the
/// other end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// None: the default (loopback, or all with GatewayPorts); Some("") or
    /// Some("*"): all addresses.
    pub bind: Option<String>,
    pub port: u16,
    pub host: String,
    pub host_port: u16,
    /// -R only: the server listens on this Unix-domain socket path
    /// (streamlocal-forward@openssh.com) instead of `bind:port`.
    pub listen_path: Option<String>,
}

/// Splits on ':' outside `[...]`; brackets are removed from the fields.
fn fields(spec: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_br = false;
    for c in spec.chars() {
        match c {
            '[' if !in_br && cur.is_empty() => in_br = true,
            ']' if in_br => in_br = false,
            ':' if !in_br => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if in_br {
        return Err(format!("unbalanced brackets in forward {spec:?}"));
    }
    out.push(cur);
    Ok(out)
}

fn port(s: &str, allow_zero: bool, spec: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) if !allow_zero => Err(format!("Bad forwarding port in {spec:?}")),
        Ok(p) => Ok(p),
        Err(_) if s.contains('/') => Err(format!(
            "forwarding of Unix sockets ({spec:?}) is not supported by ressh"
        )),
        Err(_) => Err(format!("Bad forwarding specification {spec:?}")),
    }
}

/// Parses a -L (`remote` false) or -R spec.
pub fn parse(spec: &str, remote: bool) -> Result<Forward, String> {
    let f = fields(spec)?;
    if remote && f.len() == 3 && f[0].contains('/') {
        if f[1].is_empty() {
            return Err(format!("Bad forwarding specification {spec:?}"));
        }
        return Ok(Forward {
            bind: None,
            port: 0,
            host: f[1].clone(),
            host_port: port_or_socket(&f[2], spec)?,
            listen_path: Some(f[0].clone()),
        });
    }
    let (bind, p, host, hp) = match f.len() {
        3 => (None, &f[0], &f[1], &f[2]),
        4 => (Some(f[0].clone()), &f[1], &f[2], &f[3]),
        1 | 2 if remote && f.len() == 1 => {
            return Err(format!(
                "dynamic remote forwarding ({spec:?}) is not supported by ressh"
            ))
        }
        2 => {
            return Err(format!(
                "forwarding of Unix sockets ({spec:?}) is not supported by ressh"
            ))
        }
        _ => return Err(format!("Bad forwarding specification {spec:?}")),
    };
    let port = port(p, remote, spec)?;
    let host_port = port_or_socket(hp, spec)?;
    if host.is_empty() {
        return Err(format!("Bad forwarding specification {spec:?}"));
    }
    Ok(Forward {
        bind,
        port,
        host: host.clone(),
        host_port,
        listen_path: None,
    })
}

fn port_or_socket(s: &str, spec: &str) -> Result<u16, String> {
    port(s, false, spec)
}

/// Parses a -D spec, `[bind_address:]port`: the bind address (None: the
/// default) and the port.
pub fn parse_dynamic(spec: &str) -> Result<(Option<String>, u16), String> {
    let f = fields(spec)?;
    let (bind, p) = match f.len() {
        1 => (None, &f[0]),
        2 => (Some(f[0].clone()), &f[1]),
        _ => return Err(format!("Bad dynamic forwarding specification {spec:?}")),
    };
    match port(p, false, spec) {
        Ok(p) => Ok((bind, p)),
        Err(e) if e.contains("Unix") => Err(e),
        Err(_) => Err(format!("Bad dynamic forwarding specification {spec:?}")),
    }
}

/// The addresses a -L or -D listener on `bind` (None: the default) binds.
pub fn bind_addrs(
    bind: Option<&str>,
    port: u16,
    gateway_ports: bool,
) -> Result<Vec<SocketAddr>, String> {
    let any = || {
        vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
        ]
    };
    let lo = || {
        vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ]
    };
    Ok(match bind {
        None if gateway_ports => any(),
        None | Some("localhost") => lo(),
        Some("") | Some("*") => any(),
        Some(h) => (h, port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve listen address {h}: {e}"))?
            .collect(),
    })
}

/// A listen address as `ssh -G` prints it: `port`, or `[bind]:port`.
pub fn show_listen(bind: Option<&str>, port: u16) -> String {
    match bind {
        None => port.to_string(),
        Some(b) => format!("[{b}]:{port}"),
    }
}

/// A -L or -R forward as `ssh -G` prints it: `listen [host]:port`.
pub fn show(f: &Forward) -> String {
    let listen = match &f.listen_path {
        Some(path) => path.clone(),
        None => show_listen(f.bind.as_deref(), f.port),
    };
    format!("{listen} [{}]:{}", f.host, f.host_port)
}

/// The listen address sent in a tcpip-forward request (ssh's
/// channel_rfwd_bind_host).
pub fn remote_bind(f: &Forward) -> String {
    match f.bind.as_deref() {
        None => "localhost".into(),
        Some("") | Some("*") => String::new(),
        Some(h) => h.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fw(bind: Option<&str>, port: u16, host: &str, hp: u16) -> Forward {
        Forward {
            bind: bind.map(str::to_string),
            port,
            host: host.into(),
            host_port: hp,
            listen_path: None,
        }
    }

    #[test]
    fn specs() {
        assert_eq!(
            parse("8080:localhost:80", false).unwrap(),
            fw(None, 8080, "localhost", 80)
        );
        assert_eq!(
            parse("127.0.0.1:8080:db:5432", false).unwrap(),
            fw(Some("127.0.0.1"), 8080, "db", 5432)
        );
        assert_eq!(
            parse("[::1]:8080:[fe80::1]:22", false).unwrap(),
            fw(Some("::1"), 8080, "fe80::1", 22)
        );
        assert_eq!(parse("*:1:h:2", false).unwrap(), fw(Some("*"), 1, "h", 2));
        assert_eq!(parse("0:h:2", true).unwrap(), fw(None, 0, "h", 2));
        assert!(parse("0:h:2", false).is_err());
        assert!(parse("8080", true).unwrap_err().contains("dynamic"));
        assert!(parse("/tmp/s:/tmp/t", false).unwrap_err().contains("Unix"));
        assert!(parse("/tmp/s:/tmp/t", true).unwrap_err().contains("Unix"));
        assert!(parse("/tmp/s:h:1", false).unwrap_err().contains("Unix"));
        let unix = parse("/tmp/s:h:1", true).unwrap();
        assert_eq!(unix.listen_path.as_deref(), Some("/tmp/s"));
        assert_eq!((unix.host.as_str(), unix.host_port), ("h", 1));
        assert_eq!(show(&unix), "/tmp/s [h]:1");
        assert!(parse("1:h:/tmp/s", false).unwrap_err().contains("Unix"));
        assert!(parse("a:b:c:d:e", false).is_err());
        assert!(parse("x:h:1", false).is_err());
    }

    #[test]
    fn dynamic_specs() {
        assert_eq!(parse_dynamic("1080").unwrap(), (None, 1080));
        assert_eq!(
            parse_dynamic("127.0.0.1:1080").unwrap(),
            (Some("127.0.0.1".into()), 1080)
        );
        assert_eq!(
            parse_dynamic("[::1]:1080").unwrap(),
            (Some("::1".into()), 1080)
        );
        assert_eq!(parse_dynamic("*:1080").unwrap(), (Some("*".into()), 1080));
        assert_eq!(parse_dynamic(":1080").unwrap(), (Some("".into()), 1080));
        for bad in ["0", "x", "a:b:1", "1080:h:80", "70000", ""] {
            assert!(
                parse_dynamic(bad).unwrap_err().contains("Bad dynamic"),
                "{bad}"
            );
        }
        assert!(parse_dynamic("/tmp/s").unwrap_err().contains("Unix"));
    }

    #[test]
    fn shown_as_ssh_g_does() {
        assert_eq!(show_listen(None, 1080), "1080");
        assert_eq!(show_listen(Some(""), 1080), "[]:1080");
        assert_eq!(
            show(&parse("127.0.0.1:8080:db:5432", false).unwrap()),
            "[127.0.0.1]:8080 [db]:5432"
        );
        assert_eq!(
            show(&parse("0:localhost:80", true).unwrap()),
            "0 [localhost]:80"
        );
    }

    #[test]
    fn binds() {
        let f = parse("8080:h:1", false).unwrap();
        let a = bind_addrs(f.bind.as_deref(), f.port, false).unwrap();
        assert!(a.iter().all(|a| a.ip().is_loopback()));
        let a = bind_addrs(None, 1080, true).unwrap();
        assert!(a.iter().all(|a| a.ip().is_unspecified()));
        let a = bind_addrs(Some("127.0.0.1"), 1080, true).unwrap();
        assert_eq!(a, vec!["127.0.0.1:1080".parse().unwrap()]);
        assert_eq!(remote_bind(&f), "localhost");
        assert_eq!(remote_bind(&parse("*:1:h:2", true).unwrap()), "");
    }
}
