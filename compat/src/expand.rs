//! OpenSSH's `percent_expand` and `tilde_expand_filename` (`misc.c`): the
//! `%` tokens of configuration values and a leading `~` of paths.

use std::fmt;
use std::path::Path;

/// Why a `%` expansion failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpandError {
    /// `%c` with `c` not among the keys the caller allows.
    UnknownKey { key: char, text: String },
    /// A `%` at the end of the text.
    Trailing { text: String },
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpandError::UnknownKey { key, text } => write!(f, "unknown key %{key} in \"{text}\""),
            ExpandError::Trailing { text } => write!(f, "trailing % in \"{text}\""),
        }
    }
}

impl std::error::Error for ExpandError {}

/// Replaces `%c` by the value `keys` gives for `c`, and `%%` by `%`; any
/// other `%c`, and a `%` at the end, is an error (as OpenSSH's
/// `percent_expand`, which is fatal there).
pub fn percent_expand(s: &str, keys: &[(char, &str)]) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(k) => match keys.iter().find(|(key, _)| *key == k) {
                Some((_, v)) => out.push_str(v),
                None => {
                    return Err(ExpandError::UnknownKey {
                        key: k,
                        text: s.to_string(),
                    })
                }
            },
            None => {
                return Err(ExpandError::Trailing {
                    text: s.to_string(),
                })
            }
        }
    }
    Ok(out)
}

/// A leading `~` (the caller's own home directory: `own_home`, or with
/// None the real uid's from the password database, as sshd) or `~user`
/// (that user's) replaced; other paths as they are (OpenSSH's
/// `tilde_expand_filename`).
pub fn tilde_expand(path: &str, own_home: Option<&Path>) -> Result<String, String> {
    let Some(rest) = path.strip_prefix('~') else {
        return Ok(path.to_string());
    };
    let (user, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let found = match (user.is_empty(), own_home) {
        (true, Some(home)) => Ok(Some(home.to_path_buf())),
        (true, None) => {
            nix::unistd::User::from_uid(nix::unistd::getuid()).map(|u| u.map(|u| u.dir))
        }
        (false, _) => nix::unistd::User::from_name(user).map(|u| u.map(|u| u.dir)),
    };
    let home = match found {
        Ok(Some(dir)) => dir,
        _ => return Err(format!("tilde expansion of \"{path}\": no such user")),
    };
    let home = home.display().to_string();
    Ok(format!("{}{tail}", home.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent() {
        let keys = [('h', "/home/a"), ('u', "a")];
        assert_eq!(
            percent_expand("%h/.ssh/%u_keys%%", &keys).unwrap(),
            "/home/a/.ssh/a_keys%"
        );
        assert_eq!(
            percent_expand("%x", &keys).unwrap_err().to_string(),
            "unknown key %x in \"%x\""
        );
        assert_eq!(
            percent_expand("a%", &keys).unwrap_err().to_string(),
            "trailing % in \"a%\""
        );
    }

    #[test]
    fn tilde() {
        let home = Some(Path::new("/h/me/"));
        assert_eq!(tilde_expand("~", home).unwrap(), "/h/me");
        assert_eq!(tilde_expand("~/x", home).unwrap(), "/h/me/x");
        assert_eq!(tilde_expand("/a/~", home).unwrap(), "/a/~");
        assert_eq!(tilde_expand("~root/x", home).unwrap(), "/root/x");
        assert!(tilde_expand("~nosuchuser-ressh/x", home).is_err());
        // The tests run as root.
        assert_eq!(tilde_expand("~/x", None).unwrap(), "/root/x");
    }
}
