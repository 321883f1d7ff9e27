//! OpenSSH's `match.c`: glob patterns and pattern lists, as ssh_config's
//! `Host`/`Match`, sshd_config's `Match` and `AllowUsers`, authorized_keys'
//! `from=`, `AcceptEnv`/`SendEnv` and `IgnoreUnknown` use them.
//!
//! * A *pattern* is a glob with `*` (any run of characters, possibly empty)
//!   and `?` (exactly one character); there are no escapes.
//! * A *pattern list* is comma-separated patterns, each optionally negated
//!   with a leading `!`. A negated pattern that matches makes the whole list
//!   fail ([`ListMatch::Negated`]), whatever else matches.
//!
//! Matching works on bytes, like OpenSSH's C code, and never recurses: one
//! backtrack point (the last `*` seen), so a hostile pattern costs at most
//! `O(len(string) * len(pattern))` (OpenSSH's recursive matcher is
//! exponential on `*a*a*a*b`).

use std::net::IpAddr;

use crate::addrmatch::{addr_match_list, AddrMatch};

/// Longest single pattern of a pattern list (OpenSSH: 1024 bytes with the
/// terminating NUL). A longer one makes the list fail.
const MAX_SUBPATTERN: usize = 1023;

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

/// Whether `s` matches `pattern` as a whole, on bytes, case-sensitively.
/// A `*` in the pattern is a wildcard even where the string has one.
pub fn matches(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    // The last `*` seen and the string position it is tried from.
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pattern.len() && (pattern[p] == b'?' || (pattern[p] != b'*' && pattern[p] == s[i])) {
            p += 1;
            i += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Whether `s` matches the glob `pattern` (`*` and `?`), case-sensitively
/// (OpenSSH's `match_pattern`).
pub fn match_pattern(s: &str, pattern: &str) -> bool {
    matches(pattern.as_bytes(), s.as_bytes())
}

/// Whether `s` matches any of `patterns` (each one pattern, no lists).
pub fn matches_any<S: AsRef<str>>(patterns: &[S], s: &str) -> bool {
    patterns.iter().any(|p| match_pattern(s, p.as_ref()))
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
    fn wildcards() {
        let m = |p: &str, s: &str| matches(p.as_bytes(), s.as_bytes());
        assert!(m("LC_*", "LC_ALL"));
        assert!(m("LC_*", "LC_"));
        assert!(!m("LC_*", "LANG"));
        assert!(m("*", ""));
        assert!(m("FOO", "FOO"));
        assert!(!m("FOO", "FOOD"));
        assert!(!m("FOO", "foo"));
        assert!(m("F?O", "FXO"));
        assert!(!m("F?O", "FO"));
        assert!(m("*a*b*c", "xxaybzzc"));
        assert!(!m("*a*b*c", "xxaybzzcd"));
        assert!(m("a**b", "ab"));
        assert!(m("*.example.*", "www.example.org"));
        assert!(!m("", "x"));
        assert!(m("", ""));
        assert!(m("?", "x"));
        assert!(!m("?", ""));
        assert!(!m("abc", "ab"));
        // A `*` in the pattern is a wildcard even where the string has one.
        assert!(m("*a", "*ba"));
    }

    #[test]
    fn any_of_a_list() {
        let pats = vec!["LANG".to_string(), "LC_*".to_string()];
        assert!(matches_any(&pats, "LANG"));
        assert!(matches_any(&pats, "LC_CTYPE"));
        assert!(!matches_any(&pats, "PATH"));
        assert!(!matches_any::<String>(&[], "LANG"));
    }

    /// The client's old recursive matcher took exponential time here (a
    /// `Host` line is the attacker's only if the config is, but `from=` and
    /// `AcceptEnv` patterns meet names a peer chose).
    #[test]
    fn many_stars_are_bounded() {
        // In a thread, so that a matcher that takes exponential time fails
        // the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let s = "a".repeat(60);
            let _ = tx.send((
                match_pattern(&s, "*a*a*a*a*a*a*a*a*b"),
                match_pattern(&s, "*a*a*a*a*a*a*a*a*"),
                match_pattern_list(&s, "x,*a*a*a*a*a*a*a*a*b", false),
            ));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(2));
        assert_eq!(got, Ok((false, true, ListMatch::NoMatch)));
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
