//! glob(3) without flags, for `Include` in ssh_config and sshd_config:
//! `*`, `?`, `[...]` and backslash escapes per path component, a leading
//! `.` matched only explicitly, results sorted. Bounded: a pattern that
//! makes it examine too many directory entries or keep too many
//! candidates is an error, not a stall.

use std::path::{Path, PathBuf};

/// Directory entries examined by one glob.
const MAX_GLOB_ENTRIES: usize = 16384;
/// Candidate paths kept at any component.
const MAX_MATCHES: usize = 1024;

/// One glob pattern element.
#[derive(Debug, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Any,
    Star,
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

fn has_magic(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn tokenize_glob(p: &str) -> Vec<Tok> {
    let c: Vec<char> = p.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '*' => out.push(Tok::Star),
            '?' => out.push(Tok::Any),
            '\\' if i + 1 < c.len() => {
                i += 1;
                out.push(Tok::Lit(c[i]));
            }
            '[' => {
                // Find the closing bracket (a ']' right after '[' or '[!' is literal).
                let mut j = i + 1;
                let negated = j < c.len() && (c[j] == '!' || c[j] == '^');
                if negated {
                    j += 1;
                }
                let start = j;
                if j < c.len() && c[j] == ']' {
                    j += 1;
                }
                while j < c.len() && c[j] != ']' {
                    j += 1;
                }
                if j >= c.len() {
                    out.push(Tok::Lit('['));
                } else {
                    let body = &c[start..j];
                    let mut items = Vec::new();
                    let mut k = 0;
                    while k < body.len() {
                        if k + 2 < body.len() && body[k + 1] == '-' {
                            items.push((body[k], body[k + 2]));
                            k += 3;
                        } else {
                            items.push((body[k], body[k]));
                            k += 1;
                        }
                    }
                    out.push(Tok::Class { negated, items });
                    i = j;
                }
            }
            ch => out.push(Tok::Lit(ch)),
        }
        i += 1;
    }
    out
}

fn tok_matches(t: &Tok, ch: char) -> bool {
    match t {
        Tok::Lit(l) => *l == ch,
        Tok::Any => true,
        Tok::Star => false,
        Tok::Class { negated, items } => items.iter().any(|&(a, b)| a <= ch && ch <= b) != *negated,
    }
}

/// fnmatch(3) of one path component: `*`, `?`, `[...]`, backslash escapes;
/// a leading `.` must be matched explicitly.
fn fnmatch(pattern: &str, name: &str) -> bool {
    let toks = tokenize_glob(pattern);
    let s: Vec<char> = name.chars().collect();
    if s.first() == Some(&'.') && toks.first() != Some(&Tok::Lit('.')) {
        return false;
    }
    let (mut si, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < toks.len() && toks[pi] != Tok::Star && tok_matches(&toks[pi], s[si]) {
            si += 1;
            pi += 1;
        } else if pi < toks.len() && toks[pi] == Tok::Star {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    toks[pi..].iter().all(|t| *t == Tok::Star)
}

/// glob(3) without flags: the existing paths matching `pattern`, sorted.
/// Unreadable directories are skipped, as glob does without GLOB_ERR.
pub fn glob(pattern: &str) -> Result<Vec<PathBuf>, String> {
    let absolute = pattern.starts_with('/');
    let mut cands: Vec<PathBuf> = vec![if absolute {
        PathBuf::from("/")
    } else {
        PathBuf::new()
    }];
    let mut examined = 0usize;
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        if !has_magic(comp) {
            let lit: String = tokenize_glob(comp)
                .into_iter()
                .map(|t| match t {
                    Tok::Lit(c) => c,
                    _ => '?',
                })
                .collect();
            for c in cands {
                next.push(c.join(&lit));
            }
        } else {
            for c in cands {
                let dir = if c.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    c.as_path()
                };
                let Ok(rd) = std::fs::read_dir(dir) else {
                    continue;
                };
                for e in rd.flatten() {
                    examined += 1;
                    if examined > MAX_GLOB_ENTRIES {
                        return Err(format!("more than {MAX_GLOB_ENTRIES} directory entries"));
                    }
                    let name = e.file_name();
                    let Some(name) = name.to_str() else {
                        continue;
                    };
                    if fnmatch(comp, name) {
                        next.push(c.join(name));
                    }
                }
            }
        }
        cands = next;
        if cands.len() > MAX_MATCHES {
            return Err("too many matches".into());
        }
    }
    let mut out: Vec<PathBuf> = cands
        .into_iter()
        .filter(|p| !p.as_os_str().is_empty() && std::fs::symlink_metadata(p).is_ok())
        .collect();
    out.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_rules() {
        assert!(fnmatch("*.conf", "a.conf"));
        assert!(!fnmatch("*.conf", ".a.conf"));
        assert!(fnmatch(".*.conf", ".a.conf"));
        assert!(!fnmatch("*.conf", "a.conf~"));
        assert!(fnmatch("a?c", "abc"));
        assert!(fnmatch("[ab]x", "bx"));
        assert!(!fnmatch("[!ab]x", "bx"));
        assert!(fnmatch("[a-c]x", "cx"));
        assert!(fnmatch("[]]x", "]x"));
        assert!(fnmatch("\\*", "*"));
        assert!(!fnmatch("\\*", "a"));
        assert!(fnmatch("[x", "[x"));
    }
}
