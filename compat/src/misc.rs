//! OpenSSH's `misc.c` helpers for configuration text: the keyword of a
//! line, `argv_split`, `convtime`, `a2port`, `hpdelim` and `scan_scaled`
//! (`parse_size`). Every function
//! returns a message (without position) on malformed input; none panics.

use std::time::Duration;

/// Largest value of an OpenSSH `int` option (and of a `convtime`).
pub const INT_MAX: u64 = i32::MAX as u64;

/// Characters sshd strips from the end of a line.
const TRAILING_WS: &[char] = &[' ', '\t', '\r', '\n', '\x0c'];

/// Splits a raw line into its keyword (ssh_config and sshd_config alike) and the rest (arguments, unsplit).
/// Returns `Ok(None)` for blank and comment lines.
/// The keyword ends at whitespace or `=`; one `=` between keyword and value
/// is allowed, with whitespace around it.
pub fn split_keyword(line: &str) -> Result<Option<(&str, &str)>, String> {
    let line = line
        .trim_start_matches([' ', '\t', '\r'])
        .trim_end_matches(TRAILING_WS);
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let end = line.find([' ', '\t', '=']).unwrap_or(line.len());
    let keyword = &line[..end];
    let mut rest = &line[end..];
    let mut saw_equals = false;
    if let Some(r) = rest.strip_prefix('=') {
        saw_equals = true;
        rest = r;
    }
    rest = rest.trim_start_matches([' ', '\t']);
    if !saw_equals {
        if let Some(r) = rest.strip_prefix('=') {
            rest = r.trim_start_matches([' ', '\t']);
        }
    }
    if keyword.contains('"') {
        return Err(format!("Bad configuration option: {keyword}"));
    }
    Ok(Some((keyword, rest)))
}

/// Splits arguments like OpenSSH's `argv_split(..., terminate_on_comment=1)`
/// (ssh_config and sshd_config values): see [`split_args`].
pub fn argv_split(s: &str) -> Result<Vec<String>, String> {
    split_args(s, true)
}

/// OpenSSH's `argv_split()`: whitespace separates, `"` and `'` quote (also
/// mid-word), a backslash escapes a quote, a backslash or (outside quotes)
/// a space, and with `terminate_on_comment` a `#` at the start of a word
/// ends the line (sshd splits its command lines, AuthorizedKeysCommand,
/// without).
pub fn split_args(s: &str, terminate_on_comment: bool) -> Result<Vec<String>, String> {
    let b: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == ' ' || b[i] == '\t' {
            i += 1;
            continue;
        }
        if terminate_on_comment && b[i] == '#' {
            break;
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while i < b.len() {
            let c = b[i];
            if c == '\\' {
                match b.get(i + 1) {
                    Some(&n)
                        if n == '\'' || n == '"' || n == '\\' || (quote.is_none() && n == ' ') =>
                    {
                        arg.push(n);
                        i += 2;
                        continue;
                    }
                    _ => arg.push(c),
                }
            } else if quote.is_none() && (c == ' ' || c == '\t') {
                break;
            } else if quote.is_none() && (c == '"' || c == '\'') {
                quote = Some(c);
            } else if quote == Some(c) {
                quote = None;
            } else {
                arg.push(c);
            }
            i += 1;
        }
        if quote.is_some() {
            return Err("invalid quotes".into());
        }
        out.push(arg);
    }
    Ok(out)
}

/// OpenSSH's `convtime`: a sequence of `<number>[s|m|h|d|w]` (case-insensitive
/// units, a bare number being seconds), summed; at most INT_MAX seconds.
pub fn convtime(s: &str) -> Result<Duration, String> {
    const BAD: &str = "invalid time value.";
    if s.is_empty() {
        return Err(BAD.into());
    }
    let b = s.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    while i < b.len() {
        if b[i] == b'+' {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(BAD.into());
        }
        let digits = s[start..i].trim_start_matches('0');
        if digits.len() > 10 {
            return Err(BAD.into());
        }
        let n: u64 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| BAD.to_string())?
        };
        let mult: u64 = match b.get(i) {
            None => 1,
            Some(c) => {
                i += 1;
                match c.to_ascii_lowercase() {
                    b's' => 1,
                    b'm' => 60,
                    b'h' => 3600,
                    b'd' => 86400,
                    b'w' => 604800,
                    _ => return Err(BAD.into()),
                }
            }
        };
        total = n
            .checked_mul(mult)
            .and_then(|v| v.checked_add(total))
            .filter(|&v| v <= INT_MAX)
            .ok_or_else(|| BAD.to_string())?;
    }
    Ok(Duration::from_secs(total))
}

/// OpenSSH's `a2port`: a port 0..=65535 as `strtonum` reads it (leading
/// white space and a sign allowed, then decimal digits to the end), or a TCP
/// service name from /etc/services. None when neither.
pub fn a2port(s: &str) -> Option<u16> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) {
        let d = digits.trim_start_matches('0');
        return match (neg, d.is_empty()) {
            (_, true) => Some(0),
            (true, false) => None,
            (false, false) if d.len() <= 5 => d.parse().ok(),
            _ => None,
        };
    }
    service_port(s)
}

/// Looks a TCP service name up in /etc/services (bounded read).
fn service_port(name: &str) -> Option<u16> {
    use std::io::Read;
    if name.is_empty() || name.len() > 64 {
        return None;
    }
    let mut text = String::new();
    std::fs::File::open("/etc/services")
        .ok()?
        .take(1 << 20)
        .read_to_string(&mut text)
        .ok()?;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let (Some(svc), Some(portproto)) = (words.next(), words.next()) else {
            continue;
        };
        let Some((port, proto)) = portproto.split_once('/') else {
            continue;
        };
        if proto != "tcp" {
            continue;
        }
        if svc == name || words.any(|alias| alias == name) {
            return port.parse().ok();
        }
    }
    None
}

/// OpenSSH's `hpdelim`: splits `host:port`, `host/port` or `[host]:port`
/// at the first delimiter (after the brackets). Returns the host (brackets
/// removed) and the rest, or None when a bracket is unterminated or not
/// followed by a delimiter.
pub fn hpdelim(s: &str) -> Option<(String, Option<&str>)> {
    if let Some(inner) = s.strip_prefix('[') {
        let close = inner.find(']')?;
        let host = &inner[..close];
        let after = &inner[close + 1..];
        return match after.chars().next() {
            None => Some((host.to_string(), None)),
            Some(':') | Some('/') => Some((host.to_string(), Some(&after[1..]))),
            Some(_) => None,
        };
    }
    match s.find([':', '/']) {
        None => Some((s.to_string(), None)),
        Some(i) => Some((s[..i].to_string(), Some(&s[i + 1..]))),
    }
}

/// A byte count with an optional fraction and scale suffix
/// (`B`, `K`, `M`, `G`, `T`, `P`, `E`, case-insensitive, powers of 1024),
/// like OpenBSD's `scan_scaled` (negative values refused).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("bad size '{s}'");
    let (num, scale) = match s.as_bytes().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                b'B' => 0,
                b'K' => 10,
                b'M' => 20,
                b'G' => 30,
                b'T' => 40,
                b'P' => 50,
                b'E' => 60,
                _ => return Err(bad()),
            };
            (&s[..s.len() - 1], shift)
        }
        _ => (s, 0u32),
    };
    let num = num.strip_prefix('+').unwrap_or(num);
    let (int_part, frac_part) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(bad());
    }
    if !int_part.bytes().all(|c| c.is_ascii_digit())
        || !frac_part.bytes().all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let int_digits = int_part.trim_start_matches('0');
    if int_digits.len() > 19 {
        return Err(bad());
    }
    let int: u128 = if int_digits.is_empty() {
        0
    } else {
        int_digits.parse().map_err(|_| bad())?
    };
    let mut value = int.checked_shl(scale).ok_or_else(bad)?;
    // Fraction: only meaningful with a scale; at most 18 digits considered.
    let frac_digits = &frac_part[..frac_part.len().min(18)];
    if !frac_digits.is_empty() {
        let f: u128 = frac_digits.parse().map_err(|_| bad())?;
        let denom = 10u128.pow(frac_digits.len() as u32);
        value += (f << scale) / denom;
    }
    u64::try_from(value)
        .ok()
        .filter(|&v| v <= i64::MAX as u64)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("8B"), Ok(8));
        assert!(parse_size("").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1X").is_err());
        assert!(parse_size("16E").is_err());
    }

    #[test]
    fn keyword_split() {
        assert_eq!(split_keyword("Port 22").unwrap(), Some(("Port", "22")));
        assert_eq!(split_keyword("  Port=22").unwrap(), Some(("Port", "22")));
        assert_eq!(split_keyword("Port = 22 \r").unwrap(), Some(("Port", "22")));
        assert_eq!(
            split_keyword("Port\t\t22\x0c").unwrap(),
            Some(("Port", "22"))
        );
        assert_eq!(split_keyword("Port==22").unwrap(), Some(("Port", "=22")));
        assert_eq!(split_keyword("# Port 22").unwrap(), None);
        assert_eq!(split_keyword("   ").unwrap(), None);
        assert_eq!(split_keyword("Port").unwrap(), Some(("Port", "")));
        assert!(split_keyword("Po\"rt 22").is_err());
    }

    #[test]
    fn args() {
        assert_eq!(argv_split("a b\tc").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(argv_split("\"a b\" c").unwrap(), vec!["a b", "c"]);
        assert_eq!(argv_split("'a b' c").unwrap(), vec!["a b", "c"]);
        assert_eq!(argv_split("x\"a b\"y").unwrap(), vec!["xa by"]);
        assert_eq!(argv_split("a\\ b").unwrap(), vec!["a b"]);
        assert_eq!(argv_split("a\\x").unwrap(), vec!["a\\x"]);
        assert_eq!(argv_split("'it\\'s'").unwrap(), vec!["it's"]);
        assert_eq!(argv_split("a # comment").unwrap(), vec!["a"]);
        assert_eq!(argv_split("a#b").unwrap(), vec!["a#b"]);
        assert_eq!(argv_split("\"\"").unwrap(), vec![""]);
        assert!(argv_split("\"abc").is_err());
        assert!(argv_split("'abc").is_err());
    }

    #[test]
    fn times() {
        let t = |s| convtime(s).map(|d| d.as_secs());
        assert_eq!(t("30"), Ok(30));
        assert_eq!(t("30s"), Ok(30));
        assert_eq!(t("2m"), Ok(120));
        assert_eq!(t("1h30m"), Ok(5400));
        assert_eq!(t("1w"), Ok(604800));
        assert_eq!(t("1d2H3M4S"), Ok(93784));
        assert_eq!(t("+5"), Ok(5));
        assert_eq!(t("0"), Ok(0));
        assert!(t("").is_err());
        assert!(t("5x").is_err());
        assert!(t("m").is_err());
        assert!(t("-5").is_err());
        assert!(t("1h 2m").is_err());
        assert!(t("99999999999999999999").is_err());
        assert!(t("2147483648").is_err());
        assert_eq!(t("2147483647"), Ok(2147483647));
        assert!(t("4000w").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(a2port("22"), Some(22));
        assert_eq!(a2port("0"), Some(0));
        assert_eq!(a2port("65535"), Some(65535));
        assert_eq!(a2port("+22"), Some(22));
        assert_eq!(a2port(" 22"), Some(22));
        assert_eq!(a2port("0000022"), Some(22));
        assert_eq!(a2port("ssh"), Some(22));
        assert_eq!(a2port("65536"), None);
        assert_eq!(a2port("-1"), None);
        assert_eq!(a2port("22 "), None);
        assert_eq!(a2port(""), None);
        assert_eq!(a2port("nosuchservice"), None);
        assert_eq!(hpdelim("h:22"), Some(("h".into(), Some("22"))));
        assert_eq!(hpdelim("[::1]:22"), Some(("::1".into(), Some("22"))));
        assert_eq!(hpdelim("[::1]"), Some(("::1".into(), None)));
        assert_eq!(hpdelim("[::1]x"), None);
        assert_eq!(hpdelim("h"), Some(("h".into(), None)));
        assert_eq!(hpdelim("h/80"), Some(("h".into(), Some("80"))));
    }
}
