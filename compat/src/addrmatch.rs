//! OpenSSH's `addrmatch.c`: address lists, whose entries are patterns
//! (matched against the address's text) or `address/masklen` CIDR networks
//! (IPv4 or IPv6), each optionally negated with a leading `!`. An entry
//! that is not valid CIDR is matched as a pattern.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::pattern::match_pattern;

/// Longest `address[/len]` entry considered for CIDR parsing (OpenSSH's
/// 64-byte buffer); longer entries are matched as patterns.
const MAX_CIDR_TEXT: usize = 63;

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

/// Longest entry of a CIDR-only list (OpenSSH's INET6_ADDRSTRLEN + 3).
const MAX_CIDR_ENTRY: usize = 46 + 3;

/// Matches an address against a list of CIDR networks and addresses only,
/// no patterns and no negation (OpenSSH's `addr_match_cidr_list`, for
/// certificates' `source-address`). [`AddrMatch::Match`] when `addr` is in
/// one of them; [`AddrMatch::Invalid`] for a malformed list (an empty entry, other characters than hex
/// digits, `.`, `:` and `/`, an overlong entry, a network with bits set
/// beyond its mask). With `addr` None only the list is checked.
pub fn addr_match_cidr_list(addr: Option<IpAddr>, list: &str) -> AddrMatch {
    let addr = addr.map(normalize_addr);
    let mut found = AddrMatch::NoMatch;
    for entry in list.split(',') {
        let ok_char = |c: char| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '/');
        if entry.is_empty() || entry.len() > MAX_CIDR_ENTRY || !entry.chars().all(ok_char) {
            return AddrMatch::Invalid;
        }
        match parse_cidr(entry) {
            Cidr::Net(net, len) => {
                if addr.is_some_and(|a| addr_in_net(a, net, len)) {
                    found = AddrMatch::Match;
                }
            }
            Cidr::Invalid | Cidr::NotCidr => return AddrMatch::Invalid,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
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
    fn cidr_only_lists() {
        let a = Some(ip("198.18.0.7"));
        assert_eq!(addr_match_cidr_list(a, "198.18.0.0/15"), AddrMatch::Match);
        assert_eq!(
            addr_match_cidr_list(a, "127.0.0.1,198.18.0.7"),
            AddrMatch::Match
        );
        assert_eq!(addr_match_cidr_list(a, "127.0.0.0/8"), AddrMatch::NoMatch);
        let mapped = Some(ip("::ffff:198.18.0.7"));
        assert_eq!(
            addr_match_cidr_list(mapped, "198.18.0.0/16"),
            AddrMatch::Match
        );
        assert_eq!(
            addr_match_cidr_list(None, "::1,10.0.0.0/8"),
            AddrMatch::NoMatch
        );
        for bad in [
            "",
            "1.2.3.4,",
            "198.18.0.*",
            "!1.2.3.4",
            "10.0.0.1/8",
            "host",
        ] {
            assert_eq!(addr_match_cidr_list(a, bad), AddrMatch::Invalid, "{bad:?}");
        }
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
}
