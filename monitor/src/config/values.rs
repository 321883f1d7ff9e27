//! Value syntax only sshd_config has: `Match` words (`strdelim`), flags,
//! integers, sizes (`scan_scaled`) and ports of `Port`. What ssh_config
//! shares (`argv_split`, `convtime`, `a2port`, `hpdelim`) is in
//! [`ressh_compat::misc`]. Every function returns a message (without
//! position) on malformed input; none panics.

use ressh_compat::misc::{a2port, INT_MAX};

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

/// A port for `Port`, `ListenAddress` and `Match LocalPort`: 1..=65535.
pub(crate) fn parse_port(s: &str) -> Result<u16, String> {
    match a2port(s) {
        Some(p) if p > 0 => Ok(p),
        _ => Err(format!("Badly formatted port number '{s}'.")),
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
    fn match_words() {
        assert_eq!(
            split_match_words("User a Host=\"b c\" # x").unwrap(),
            vec!["User", "a", "Host", "b c"]
        );
    }

    #[test]
    fn ints_ports() {
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
    }
}
