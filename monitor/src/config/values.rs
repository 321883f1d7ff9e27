//! Line lexing and value syntax of sshd_config, after OpenSSH's `misc.c`
//! (`strdelim`, `argv_split`, `convtime`, `a2port`, `hpdelim`) and
//! `scan_scaled`. Every function returns a message (without position) on
//! malformed input; none panics.

use std::time::Duration;

/// Characters sshd strips from the end of a line.
const TRAILING_WS: &[char] = &[' ', '\t', '\r', '\n', '\x0c'];

/// Splits a raw line into its keyword and the rest (arguments, unsplit).
/// Returns `Ok(None)` for blank and comment lines.
/// The keyword ends at whitespace or `=`; one `=` between keyword and value
/// is allowed, with whitespace around it.
pub(crate) fn split_keyword(line: &str) -> Result<Option<(&str, &str)>, String> {
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

/// Splits arguments like OpenSSH's `argv_split(..., terminate_on_comment=1)`:
/// whitespace separates, `"` and `'` quote (also mid-word), a backslash
/// escapes a quote, a backslash or (outside quotes) a space, and a `#` at
/// the start of a word ends the line.
pub(crate) fn split_args(s: &str) -> Result<Vec<String>, String> {
    let b: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == ' ' || b[i] == '\t' {
            i += 1;
            continue;
        }
        if b[i] == '#' {
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

/// Splits a `Match` line's criteria like OpenSSH's `strdelim`: words
/// separated by whitespace or one `=`, `"..."` quoting a word; a word
/// starting with `#` ends the line.
pub(crate) fn split_match_words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if let Some(r) = rest.strip_prefix('=') {
            rest = r.trim_start_matches([' ', '\t']);
        }
        if rest.is_empty() {
            break;
        }
        if let Some(r) = rest.strip_prefix('"') {
            match r.find('"') {
                Some(end) => {
                    out.push(r[..end].to_string());
                    rest = &r[end + 1..];
                }
                None => return Err("invalid quotes".into()),
            }
            continue;
        }
        let end = rest.find([' ', '\t', '=', '"']).unwrap_or(rest.len());
        let word = &rest[..end];
        if word.starts_with('#') {
            break;
        }
        out.push(word.to_string());
        rest = &rest[end..];
    }
    Ok(out)
}

/// Largest value of an sshd `int` option.
pub(crate) const INT_MAX: u64 = i32::MAX as u64;

/// sshd's `yes`/`no` (case-insensitive, nothing else).
pub(crate) fn parse_flag(s: &str) -> Result<bool, String> {
    if s.eq_ignore_ascii_case("yes") {
        Ok(true)
    } else if s.eq_ignore_ascii_case("no") {
        Ok(false)
    } else {
        Err(format!("unsupported option \"{s}\"."))
    }
}

/// A non-negative decimal `int` (sshd's `atoi_err`: 0..=INT_MAX).
pub(crate) fn parse_int(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        let negative =
            s.len() > 1 && s.starts_with('-') && s[1..].bytes().all(|c| c.is_ascii_digit());
        return Err(if negative {
            "integer value too small"
        } else {
            "integer value invalid"
        }
        .into());
    }
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        return Ok(0);
    }
    match significant.parse::<u64>() {
        Ok(v) if significant.len() <= 10 && v <= INT_MAX => Ok(v as u32),
        _ => Err("integer value too large".into()),
    }
}

/// sshd's `convtime`: a sequence of `<number>[s|m|h|d|w]` (case-insensitive
/// units, a bare number being seconds), summed; at most INT_MAX seconds.
pub(crate) fn parse_time(s: &str) -> Result<Duration, String> {
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

/// A byte count with an optional fraction and scale suffix
/// (`B`, `K`, `M`, `G`, `T`, `P`, `E`, case-insensitive, powers of 1024),
/// like OpenBSD's `scan_scaled` (negative values refused).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
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

/// sshd's `a2port`: a decimal port 0..=65535 or a TCP service name from
/// /etc/services. Returns None when neither.
pub(crate) fn a2port(s: &str) -> Option<u16> {
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
        let d = s.trim_start_matches('0');
        if d.len() > 5 {
            return None;
        }
        return if d.is_empty() {
            Some(0)
        } else {
            d.parse().ok()
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

/// A port for `Port`, `ListenAddress` and `Match LocalPort`: 1..=65535.
pub(crate) fn parse_port(s: &str) -> Result<u16, String> {
    match a2port(s) {
        Some(p) if p > 0 => Ok(p),
        _ => Err(format!("Badly formatted port number '{s}'.")),
    }
}

/// OpenSSH's `hpdelim`: splits `host:port`, `host/port` or `[host]:port`
/// at the first delimiter (after the brackets). Returns the host (brackets
/// removed) and the rest, or None when a bracket is unterminated or not
/// followed by a delimiter.
pub(crate) fn hpdelim(s: &str) -> Option<(String, Option<&str>)> {
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

/// `"none"`, case-insensitively (sshd's `option_clear_or_none`).
pub(crate) fn is_none_word(s: &str) -> bool {
    s.eq_ignore_ascii_case("none")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(split_args("a b\tc").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(split_args("\"a b\" c").unwrap(), vec!["a b", "c"]);
        assert_eq!(split_args("'a b' c").unwrap(), vec!["a b", "c"]);
        assert_eq!(split_args("x\"a b\"y").unwrap(), vec!["xa by"]);
        assert_eq!(split_args("a\\ b").unwrap(), vec!["a b"]);
        assert_eq!(split_args("a\\x").unwrap(), vec!["a\\x"]);
        assert_eq!(split_args("a # comment").unwrap(), vec!["a"]);
        assert_eq!(split_args("a#b").unwrap(), vec!["a#b"]);
        assert_eq!(split_args("\"\"").unwrap(), vec![""]);
        assert!(split_args("\"abc").is_err());
        assert_eq!(
            split_match_words("User a Host=\"b c\" # x").unwrap(),
            vec!["User", "a", "Host", "b c"]
        );
    }

    #[test]
    fn times() {
        let t = |s| parse_time(s).map(|d| d.as_secs());
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
    fn sizes_ints_ports() {
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
        assert_eq!(parse_int("6"), Ok(6));
        assert_eq!(parse_int("2147483647"), Ok(2147483647));
        assert!(parse_int("2147483648").is_err());
        assert!(parse_int("-1").is_err());
        assert!(parse_int("0x10").is_err());
        assert!(parse_int("").is_err());
        assert!(parse_int("000000000000000000000000000000001").is_ok());
        assert_eq!(parse_port("22"), Ok(22));
        assert_eq!(parse_port("ssh"), Ok(22));
        assert!(parse_port("0").is_err());
        assert!(parse_port("65536").is_err());
        assert!(parse_port("nosuchservice").is_err());
        assert_eq!(parse_flag("YES"), Ok(true));
        assert!(parse_flag("true").is_err());
        assert_eq!(hpdelim("h:22"), Some(("h".into(), Some("22"))));
        assert_eq!(hpdelim("[::1]:22"), Some(("::1".into(), Some("22"))));
        assert_eq!(hpdelim("[::1]"), Some(("::1".into(), None)));
        assert_eq!(hpdelim("[::1]x"), None);
        assert_eq!(hpdelim("h"), Some(("h".into(), None)));
        assert_eq!(hpdelim("h/80"), Some(("h".into(), Some("80"))));
    }
}
