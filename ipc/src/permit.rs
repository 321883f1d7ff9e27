//! Where forwarding may go: PermitOpen / PermitListen and the key options
//! `permitopen=` / `permitlisten=`, as typed values.
//!
//! The monitor parses configuration entries and key options once (and
//! refuses malformed ones there); the session worker only matches a
//! request against these values and never parses policy strings.
//!
//! A destination is allowed when the administrator's list AND the key's
//! list allow it ([`Permits`]), as in OpenSSH: a key option narrows the
//! configuration and never widens it. [`Permit::Only`] with no entries
//! allows nothing.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The host part of an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostPattern {
    /// An IP address literal: matches a request that names the same
    /// address, however it is written (`::1`, `0:0::1`; an IPv4-mapped
    /// IPv6 address is its IPv4 address).
    Addr(IpAddr),
    /// A host name or a wildcard pattern (`*` any run of characters, `?`
    /// one), in lowercase. It matches the name exactly as the client sent
    /// it, compared case-insensitively; names are never looked up. `*`
    /// alone matches every host, also addresses and the empty string.
    Name(String),
}

impl HostPattern {
    /// An entry's host as written, with or without IPv6 brackets.
    pub fn new(host: &str) -> HostPattern {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(a) => HostPattern::Addr(a.to_canonical()),
            Err(_) => HostPattern::Name(bare.to_ascii_lowercase()),
        }
    }

    /// Whether the host a client asked for (as it sent it) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Addr(a) => host.parse::<IpAddr>().is_ok_and(|h| h.to_canonical() == *a),
            HostPattern::Name(p) => {
                ressh_compat::pattern::matches(p.as_bytes(), host.to_ascii_lowercase().as_bytes())
            }
        }
    }
}

/// The port part of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortPattern {
    /// `*`: every port.
    Any,
    Port(u16),
}

impl PortPattern {
    pub fn matches(self, port: u32) -> bool {
        match self {
            PortPattern::Any => true,
            PortPattern::Port(p) => u32::from(p) == port,
        }
    }
}

/// One `host:port` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPort {
    pub host: HostPattern,
    pub port: PortPattern,
}

impl HostPort {
    pub fn matches(&self, host: &str, port: u32) -> bool {
        self.port.matches(port) && self.host.matches(host)
    }
}

/// The port a Unix-domain socket path is checked with (sshd's
/// PORT_STREAMLOCAL, -2): only a `*` port pattern matches it.
pub const PORT_STREAMLOCAL: u32 = 0xffff_fffe;

/// One list: the configuration's or the key's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Permit {
    /// No restriction from this list (`any`, or a key without the option).
    Any,
    /// Only these destinations; no entries (`none`) allows nothing.
    Only(Vec<HostPort>),
}

impl Permit {
    pub fn allows(&self, host: &str, port: u32) -> bool {
        match self {
            Permit::Any => true,
            Permit::Only(entries) => entries.iter().any(|e| e.matches(host, port)),
        }
    }
}

/// The administrator's list and the key's: a destination must be allowed
/// by both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permits {
    /// PermitOpen / PermitListen after Match.
    pub admin: Permit,
    /// The key's permitopen= / permitlisten= entries.
    pub key: Permit,
}

impl Permits {
    /// Both lists allow everything.
    pub const ANY: Permits = Permits {
        admin: Permit::Any,
        key: Permit::Any,
    };

    pub fn allows(&self, host: &str, port: u32) -> bool {
        self.admin.allows(host, port) && self.key.allows(host, port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(host: &str, port: Option<u16>) -> HostPort {
        HostPort {
            host: HostPattern::new(host),
            port: port.map_or(PortPattern::Any, PortPattern::Port),
        }
    }

    #[test]
    fn hosts_are_compared_parsed() {
        assert_eq!(
            HostPattern::new("[::1]"),
            HostPattern::Addr("::1".parse().unwrap())
        );
        assert_eq!(HostPattern::new("[::1]"), HostPattern::new("0:0::0:1"));
        assert_eq!(
            HostPattern::new("::ffff:127.0.0.1"),
            HostPattern::new("127.0.0.1")
        );
        assert_eq!(
            HostPattern::new("DB.Example.ORG"),
            HostPattern::Name("db.example.org".into())
        );
        let v6 = hp("[::1]", Some(22));
        assert!(v6.matches("::1", 22));
        assert!(v6.matches("0::1", 22));
        assert!(v6.matches("0000:0000:0000:0000:0000:0000:0000:0001", 22));
        assert!(!v6.matches("::1", 23));
        assert!(!v6.matches("::2", 22));
        assert!(!v6.matches("localhost", 22));
        let v4 = hp("127.0.0.1", Some(80));
        assert!(v4.matches("127.0.0.1", 80));
        assert!(v4.matches("::ffff:127.0.0.1", 80));
        assert!(!v4.matches("127.0.0.2", 80));
        // No lookups: a name is not its address.
        assert!(!v4.matches("localhost", 80));
        // Leading zeros are not another spelling (getaddrinfo would read
        // them as octal): no match.
        assert!(!v4.matches("0127.0.0.1", 80));
    }

    #[test]
    fn names_and_wildcards() {
        let e = hp("*.corp", Some(443));
        assert!(e.matches("www.corp", 443));
        assert!(e.matches("WWW.CORP", 443));
        assert!(!e.matches("www.corp", 80));
        assert!(!e.matches("corp", 443));
        let e = hp("db?.example.org", None);
        assert!(e.matches("db1.example.org", 1));
        assert!(e.matches("DB2.example.org", 65535));
        assert!(!e.matches("db10.example.org", 1));
        let any = hp("*", None);
        for h in ["", "localhost", "::1", "10.0.0.1", "x.y"] {
            assert!(any.matches(h, 0), "{h:?}");
        }
        // The port is compared as the number it is, not truncated.
        assert!(!hp("*", Some(22)).matches("h", 22 + 65536));
    }

    #[test]
    fn both_lists_must_allow() {
        let only = |l: Vec<HostPort>| Permit::Only(l);
        let p = |admin, key| Permits { admin, key };
        let a1 = || vec![hp("a", Some(1))];
        let b2 = || vec![hp("b", Some(2))];

        assert!(Permits::ANY.allows("anything", 1));
        // `none` anywhere: nothing.
        let none = p(only(vec![]), only(vec![hp("127.0.0.1", Some(10))]));
        assert!(!none.allows("127.0.0.1", 10));
        assert!(!none.allows("127.0.0.1", 11));
        assert!(!p(only(a1()), only(vec![])).allows("a", 1));
        // Disjoint lists: nothing.
        let disjoint = p(only(a1()), only(b2()));
        assert!(!disjoint.allows("a", 1));
        assert!(!disjoint.allows("b", 2));
        // any + key: the key's list.
        let key_only = p(Permit::Any, only(b2()));
        assert!(key_only.allows("b", 2));
        assert!(!key_only.allows("a", 1));
        // config + no key option: the config's list.
        let admin_only = p(only(a1()), Permit::Any);
        assert!(admin_only.allows("a", 1));
        assert!(!admin_only.allows("b", 2));
        // A wide config and a narrow key: the key's destinations only.
        let narrow = p(only(vec![hp("*", None)]), only(vec![hp("[::1]", Some(22))]));
        assert!(narrow.allows("::1", 22));
        assert!(!narrow.allows("::1", 23));
        assert!(!narrow.allows("127.0.0.1", 22));
    }
}
