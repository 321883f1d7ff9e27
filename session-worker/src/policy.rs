//! Checks against the session policy: PermitOpen and PermitListen entries.
//!
//! Entries are `host:port` (IPv6 hosts in brackets, `[::1]:22`), where the
//! port may be `*` (any) and the host may use `*`/`?` wildcards (compared
//! case-insensitively). `any` allows everything and `none` nothing; an empty
//! list allows everything. A PermitListen entry of a bare port means
//! `localhost:port`, as in OpenSSH.

use crate::pattern;

/// Splits `host:port` at the last colon, removing IPv6 brackets.
fn split(entry: &str) -> Option<(&str, &str)> {
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        let port = tail.strip_prefix(':')?;
        return Some((host, port));
    }
    entry.rsplit_once(':')
}

fn port_matches(pattern: &str, port: u32) -> bool {
    pattern == "*" || pattern.parse::<u32>().is_ok_and(|p| p == port)
}

fn host_matches(pattern: &str, host: &str) -> bool {
    pattern::matches(
        pattern.to_ascii_lowercase().as_bytes(),
        host.to_ascii_lowercase().as_bytes(),
    )
}

fn check(entries: &[String], host: &str, port: u32, bare_port_host: Option<&str>) -> bool {
    if entries.is_empty() {
        return true;
    }
    entries.iter().any(|e| {
        let e = e.trim();
        if e.eq_ignore_ascii_case("any") {
            return true;
        }
        if e.eq_ignore_ascii_case("none") {
            return false;
        }
        let (h, p) = match (split(e), bare_port_host) {
            (Some(hp), _) => hp,
            (None, Some(default_host)) => (default_host, e),
            (None, None) => return false,
        };
        port_matches(p, port) && host_matches(h, host)
    })
}

/// PermitOpen: may the client connect (direct-tcpip) to `host:port`?
pub fn permit_open(entries: &[String], host: &str, port: u32) -> bool {
    check(entries, host, port, None)
}

/// PermitListen: may the client listen (tcpip-forward) on `address:port`?
pub fn permit_listen(entries: &[String], address: &str, port: u32) -> bool {
    check(entries, address, port, Some("localhost"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn permit_open_entries() {
        assert!(permit_open(&[], "example.org", 80));
        assert!(!permit_open(&v(&["none"]), "127.0.0.1", 80));
        assert!(permit_open(&v(&["any"]), "127.0.0.1", 80));
        let l = v(&[
            "127.0.0.1:8080",
            "db.example.org:*",
            "[::1]:22",
            "*.corp:443",
        ]);
        assert!(permit_open(&l, "127.0.0.1", 8080));
        assert!(!permit_open(&l, "127.0.0.1", 8081));
        assert!(permit_open(&l, "DB.example.org", 5432));
        assert!(permit_open(&l, "::1", 22));
        assert!(!permit_open(&l, "::1", 23));
        assert!(permit_open(&l, "www.corp", 443));
        assert!(!permit_open(&l, "www.corp", 80));
        assert!(!permit_open(&v(&["garbage"]), "garbage", 1));
    }

    #[test]
    fn permit_listen_entries() {
        assert!(permit_listen(&[], "", 0));
        assert!(!permit_listen(&v(&["none"]), "localhost", 8080));
        let l = v(&["8080", "*:9000", "127.0.0.1:*"]);
        assert!(permit_listen(&l, "localhost", 8080));
        assert!(!permit_listen(&l, "0.0.0.0", 8080));
        assert!(permit_listen(&l, "", 9000));
        assert!(permit_listen(&l, "0.0.0.0", 9000));
        assert!(permit_listen(&l, "127.0.0.1", 12345));
    }
}
