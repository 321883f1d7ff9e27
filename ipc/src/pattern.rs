//! Wildcard patterns as in OpenSSH's `match_pattern`: `*` matches any run of
//! characters (also none), `?` exactly one; everything else matches itself.

/// Whether `s` matches `pattern` as a whole.
pub fn matches(pattern: &[u8], s: &[u8]) -> bool {
    // Iterative matcher with one backtrack point (the last `*` seen).
    let (mut p, mut i) = (0, 0);
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

/// Whether `s` matches any of `patterns`.
pub fn matches_any<S: AsRef<str>>(patterns: &[S], s: &str) -> bool {
    patterns
        .iter()
        .any(|p| matches(p.as_ref().as_bytes(), s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
