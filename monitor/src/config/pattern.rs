//! OpenSSH pattern matching (`match.c`, `addrmatch.c`), reusable outside the
//! configuration parser: `Match` criteria, `AllowUsers user@host`, the
//! `from=` option of authorized_keys, `AcceptEnv`.
//!
//! * A *pattern* is a glob with `*` (any run of characters, possibly empty)
//!   and `?` (exactly one character); there are no escapes.
//! * A *pattern list* is comma-separated patterns, each optionally negated
//!   with a leading `!`. A negated pattern that matches makes the whole list
//!   fail ([`ListMatch::Negated`]), whatever else matches.
//! * An *address list* is a pattern list whose entries may also be
//!   `address/masklen` CIDR networks (IPv4 or IPv6); an entry that is not
//!   valid CIDR is matched as a pattern against the address's text.
//!
//! Matching works on bytes, like OpenSSH's C code, and never recurses, so a
//! hostile pattern costs at most `O(len(string) * len(pattern))`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest single pattern of a pattern list (OpenSSH: 1024 bytes with the
/// terminating NUL). A longer one makes the list fail.
const MAX_SUBPATTERN: usize = 1023;

/// Longest `address[/len]` entry considered for CIDR parsing (OpenSSH's
/// 64-byte buffer); longer entries are matched as patterns.
const MAX_CIDR_TEXT: usize = 63;

/// The outcome of matching against a pattern list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListMatch {
    /// No pattern matched.
    NoMatch,
    /// A positive pattern matched and no negated one did.
    Match,
    /// A negated pattern matched: the list rejects the string.
    Negated,
}

impl ListMatch {
    /// True only for [`ListMatch::Match`].
    pub fn is_match(self) -> bool {
        self == ListMatch::Match
    }
}

/// The outcome of matching an address against an address list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrMatch {
    NoMatch,
    Match,
    /// A negated entry matched.
    Negated,
    /// The list has a malformed entry (empty, or a CIDR network with bits
    /// set beyond its mask or a mask too long for its family).
    Invalid,
}

impl AddrMatch {
    /// True only for [`AddrMatch::Match`].
    pub fn is_match(self) -> bool {
        self == AddrMatch::Match
    }
}

/// Whether `s` matches the glob `pattern` (`*` and `?`), case-sensitively.
pub fn match_pattern(s: &str, pattern: &str) -> bool {
    ressh_ipc::pattern::matches(pattern.as_bytes(), s.as_bytes())
}

/// Matches `s` against a comma-separated pattern list (OpenSSH's
/// `match_pattern_list`). With `dolower`, the patterns are lowercased
/// before matching (the string is used as given).
pub fn match_pattern_list(s: &str, list: &str, dolower: bool) -> ListMatch {
    let mut got_positive = false;
    if list.is_empty() {
        return ListMatch::NoMatch;
    }
    for item in list.split(',') {
        let (negated, sub) = match item.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, item),
        };
        if sub.len() >= MAX_SUBPATTERN {
            return ListMatch::NoMatch;
        }
        let matched = if dolower {
            match_pattern(s, &sub.to_ascii_lowercase())
        } else {
            match_pattern(s, sub)
        };
        if matched {
            if negated {
                return ListMatch::Negated;
            }
            got_positive = true;
        }
    }
    if got_positive {
        ListMatch::Match
    } else {
        ListMatch::NoMatch
    }
}

/// Matches a host name against a pattern list, case-insensitively
/// (OpenSSH's `match_hostname`).
pub fn match_hostname(host: &str, list: &str) -> ListMatch {
    match_pattern_list(&host.to_ascii_lowercase(), list, true)
}

/// Whether any of `groups` matches the pattern list, with a negated match on
/// any group rejecting (OpenSSH's `ga_match_pattern_list`, used by
/// `Match Group`, `AllowGroups` and `DenyGroups`).
pub fn match_group_list(groups: &[String], list: &str) -> bool {
    let mut found = false;
    for g in groups {
        match match_pattern_list(g, list, false) {
            ListMatch::Negated => return false,
            ListMatch::Match => found = true,
            ListMatch::NoMatch => {}
        }
    }
    found
}

/// Parses an address as OpenSSH's `addr_pton` does for numeric hosts: an
/// IPv4 dotted quad or an IPv6 address, an IPv6 zone (`%eth0`) ignored.
pub fn parse_addr(s: &str) -> Option<IpAddr> {
    if let Ok(a) = s.parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(a));
    }
    let v6 = match s.find('%') {
        Some(i) if i > 0 && i + 1 < s.len() => &s[..i],
        Some(_) => return None,
        None => s,
    };
    v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// The outcome of parsing one address-list entry as CIDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cidr {
    /// A network: its base address and mask length.
    Net(IpAddr, u8),
    /// Not CIDR syntax at all (matched as a pattern instead).
    NotCidr,
    /// CIDR syntax with an impossible mask length or host bits set.
    Invalid,
}

/// Parses `address[/masklen]` (OpenSSH's `addr_pton_cidr`). Without a mask
/// the network is the single address.
pub fn parse_cidr(s: &str) -> Cidr {
    if s.len() > MAX_CIDR_TEXT {
        return Cidr::NotCidr;
    }
    let (addr_text, mask) = match s.split_once('/') {
        Some((a, m)) => {
            if m.is_empty() || m.len() > 3 || !m.bytes().all(|c| c.is_ascii_digit()) {
                return Cidr::NotCidr;
            }
            let v: u32 = match m.parse() {
                Ok(v) => v,
                Err(_) => return Cidr::NotCidr,
            };
            if v > 128 {
                return Cidr::NotCidr;
            }
            (a, Some(v))
        }
        None => (s, None),
    };
    let addr = match parse_addr(addr_text) {
        Some(a) => a,
        None => return Cidr::NotCidr,
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = mask.unwrap_or(max);
    if len > max {
        return Cidr::Invalid;
    }
    // Checked above: len <= 128.
    let len = len as u8;
    if masked(addr, len) != addr {
        return Cidr::Invalid;
    }
    Cidr::Net(addr, len)
}

/// `addr` with every bit beyond the first `len` cleared.
fn masked(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(bits & mask))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        }
    }
}

/// Whether `addr` lies in the network `net/len` (different families never
/// match).
pub fn addr_in_net(addr: IpAddr, net: IpAddr, len: u8) -> bool {
    addr.is_ipv4() == net.is_ipv4() && masked(addr, len) == net
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) as plain IPv4, as sshd
/// normalises peer addresses before matching.
pub fn normalize_addr(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(a),
        },
        v4 => v4,
    }
}

/// Matches an address against an address list (OpenSSH's
/// `addr_match_list`). With `addr` None the list is only checked for
/// well-formedness: the result is then [`AddrMatch::NoMatch`] or
/// [`AddrMatch::Invalid`].
pub fn addr_match_list(addr: Option<IpAddr>, list: &str) -> AddrMatch {
    let addr = addr.map(normalize_addr);
    let text = addr.map(|a| a.to_string());
    let mut ret = AddrMatch::NoMatch;
    for item in list.split(',') {
        let (neg, entry) = match item.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, item),
        };
        if entry.is_empty() {
            return AddrMatch::Invalid;
        }
        let found = match parse_cidr(entry) {
            Cidr::Invalid => return AddrMatch::Invalid,
            Cidr::Net(net, len) => addr.is_some_and(|a| addr_in_net(a, net, len)),
            Cidr::NotCidr => text.as_deref().is_some_and(|t| match_pattern(t, entry)),
        };
        if found {
            if neg {
                return AddrMatch::Negated;
            }
            ret = AddrMatch::Match;
        }
    }
    ret
}

/// A malformed address list (see [`AddrMatch::Invalid`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidPattern;

impl std::fmt::Display for InvalidPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid address list")
    }
}

impl std::error::Error for InvalidPattern {}

/// Matches a peer against a host-and-address pattern list (OpenSSH's
/// `match_host_and_ip`): the list must match the address or the host name,
/// and a negated match on either rejects. `Err` when the list is
/// malformed.
pub fn match_host_and_ip(
    host: Option<&str>,
    addr: Option<IpAddr>,
    list: &str,
) -> Result<bool, InvalidPattern> {
    let mip = addr_match_list(addr, list);
    if mip == AddrMatch::Invalid {
        return Err(InvalidPattern);
    }
    let (host, _) = match (host, addr) {
        (Some(h), Some(a)) if mip != AddrMatch::Negated => (h, a),
        _ => return Ok(false),
    };
    let mhost = match_hostname(host, list);
    if mhost == ListMatch::Negated {
        return Ok(false);
    }
    Ok(mhost == ListMatch::Match || mip == AddrMatch::Match)
}

/// Matches a user (and the peer) against one `AllowUsers`/`DenyUsers`
/// entry: `userpattern` or `userpattern@hostlist` (OpenSSH's `match_user`;
/// the host part is split at the last `@`). `Err` when the host part is
/// malformed.
pub fn match_user(
    user: &str,
    host: Option<&str>,
    addr: Option<IpAddr>,
    pattern: &str,
) -> Result<bool, InvalidPattern> {
    match pattern.rsplit_once('@') {
        None => Ok(match_pattern(user, pattern)),
        Some((upat, hosts)) => {
            if !match_pattern(user, upat) {
                // Still report a malformed host part.
                return match addr_match_list(None, hosts) {
                    AddrMatch::Invalid => Err(InvalidPattern),
                    _ => Ok(false),
                };
            }
            match_host_and_ip(host, addr, hosts)
        }
    }
}

/// Checks an `AllowUsers`/`DenyUsers` entry for well-formedness.
pub fn valid_user_pattern(pattern: &str) -> bool {
    if pattern.is_empty() {
        return false;
    }
    match pattern.rsplit_once('@') {
        None => true,
        Some((_, hosts)) => addr_match_list(None, hosts) != AddrMatch::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn globs() {
        assert!(match_pattern("", ""));
        assert!(match_pattern("", "*"));
        assert!(!match_pattern("", "?"));
        assert!(match_pattern("abc", "a*c"));
        assert!(match_pattern("abc", "*"));
        assert!(match_pattern("abc", "a?c"));
        assert!(!match_pattern("abc", "a?"));
        assert!(match_pattern("aXbXc", "a*b*c"));
        assert!(!match_pattern("aXbXd", "a*b*c"));
        assert!(match_pattern("LC_ALL", "LC_*"));
        assert!(!match_pattern("LANG", "LC_*"));
        assert!(match_pattern("abcabd", "*abd"));
        assert!(!match_pattern("Abc", "abc"));
        // Pathological input terminates quickly.
        let s = "a".repeat(5000);
        let p = "*a".repeat(500) + "b";
        assert!(!match_pattern(&s, &p));
    }

    #[test]
    fn lists() {
        assert_eq!(
            match_pattern_list("bob", "alice,bob", false),
            ListMatch::Match
        );
        assert_eq!(
            match_pattern_list("bob", "*,!bob", false),
            ListMatch::Negated
        );
        assert_eq!(
            match_pattern_list("bob", "!bob,*", false),
            ListMatch::Negated
        );
        assert_eq!(
            match_pattern_list("carol", "*,!bob", false),
            ListMatch::Match
        );
        assert_eq!(
            match_pattern_list("carol", "!bob", false),
            ListMatch::NoMatch
        );
        assert_eq!(match_pattern_list("bob", "", false), ListMatch::NoMatch);
        assert_eq!(match_pattern_list("bob", "BOB", true), ListMatch::Match);
        assert_eq!(match_pattern_list("bob", "BOB", false), ListMatch::NoMatch);
        assert_eq!(
            match_hostname("Host.Example.COM", "*.example.com"),
            ListMatch::Match
        );
        let long = "x".repeat(2000);
        assert_eq!(match_pattern_list(&long, &long, false), ListMatch::NoMatch);
        let groups = vec!["users".to_string(), "wheel".to_string()];
        assert!(match_group_list(&groups, "wheel"));
        assert!(!match_group_list(&groups, "*,!wheel"));
        assert!(!match_group_list(&[], "*"));
    }

    #[test]
    fn cidr() {
        assert_eq!(parse_cidr("10.0.0.0/8"), Cidr::Net(ip("10.0.0.0"), 8));
        assert_eq!(parse_cidr("10.0.0.1/8"), Cidr::Invalid);
        assert_eq!(parse_cidr("10.0.0.0/33"), Cidr::Invalid);
        assert_eq!(parse_cidr("10.0.0.0/129"), Cidr::NotCidr);
        assert_eq!(parse_cidr("10.0.0.0/"), Cidr::NotCidr);
        assert_eq!(parse_cidr("10.0.0.*"), Cidr::NotCidr);
        assert_eq!(parse_cidr("1.2.3.4"), Cidr::Net(ip("1.2.3.4"), 32));
        assert_eq!(parse_cidr("2001:db8::/32"), Cidr::Net(ip("2001:db8::"), 32));
        assert_eq!(parse_cidr("2001:db8::1/32"), Cidr::Invalid);
        assert_eq!(parse_cidr("::/0"), Cidr::Net(ip("::"), 0));
        assert_eq!(parse_cidr("0.0.0.0/0"), Cidr::Net(ip("0.0.0.0"), 0));
        assert_eq!(parse_cidr("fe80::1%eth0"), Cidr::Net(ip("fe80::1"), 128));
    }

    #[test]
    fn addr_lists() {
        let a = Some(ip("192.168.1.20"));
        assert_eq!(addr_match_list(a, "192.168.1.0/24"), AddrMatch::Match);
        assert_eq!(addr_match_list(a, "192.168.2.0/24"), AddrMatch::NoMatch);
        assert_eq!(addr_match_list(a, "192.168.1.*"), AddrMatch::Match);
        assert_eq!(addr_match_list(a, "*,!192.168.0.0/16"), AddrMatch::Negated);
        assert_eq!(
            addr_match_list(a, "10.0.0.0/8,192.168.1.20"),
            AddrMatch::Match
        );
        assert_eq!(addr_match_list(a, "10.0.0.1/8"), AddrMatch::Invalid);
        assert_eq!(addr_match_list(a, "10.0.0.0/8,,"), AddrMatch::Invalid);
        assert_eq!(
            addr_match_list(None, "10.0.0.0/8,1.2.3.*"),
            AddrMatch::NoMatch
        );
        assert_eq!(addr_match_list(None, "!"), AddrMatch::Invalid);
        let v6 = Some(ip("2001:db8::5"));
        assert_eq!(addr_match_list(v6, "2001:db8::/32"), AddrMatch::Match);
        assert_eq!(addr_match_list(v6, "0.0.0.0/0"), AddrMatch::NoMatch);
        assert_eq!(addr_match_list(v6, "::/0"), AddrMatch::Match);
        let mapped = Some(ip("::ffff:10.1.2.3"));
        assert_eq!(addr_match_list(mapped, "10.0.0.0/8"), AddrMatch::Match);
    }

    #[test]
    fn users() {
        let a = Some(ip("10.1.2.3"));
        assert_eq!(match_user("bob", Some("h.example"), a, "bob"), Ok(true));
        assert_eq!(match_user("bob", Some("h.example"), a, "b*"), Ok(true));
        assert_eq!(
            match_user("bob", Some("h.example"), a, "bob@10.0.0.0/8"),
            Ok(true)
        );
        assert_eq!(
            match_user("bob", Some("h.example"), a, "bob@*.example"),
            Ok(true)
        );
        assert_eq!(
            match_user("bob", Some("h.example"), a, "bob@192.168.0.0/16"),
            Ok(false)
        );
        assert_eq!(
            match_user("bob", Some("h.example"), a, "bob@*,!10.1.2.3"),
            Ok(false)
        );
        assert_eq!(
            match_user("bob", Some("h.example"), a, "bob@10.0.0.1/8"),
            Err(InvalidPattern)
        );
        assert_eq!(match_user("bob", None, None, "bob@*"), Ok(false));
        assert!(valid_user_pattern("a@10.0.0.0/8"));
        assert!(!valid_user_pattern("a@10.0.0.1/8"));
        assert!(!valid_user_pattern(""));
    }
}
