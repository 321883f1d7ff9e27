//! resshd's command line, after sshd(8).

use std::path::PathBuf;

pub const USAGE: &str = "usage: resshd [-DdeiqTtV] [-C connection_spec] [-E log_file] [-f config_file]\n              [-h host_key_file] [-o option] [-p port]";

#[derive(Debug, Default)]
pub struct Args {
    pub config_file: PathBuf,
    pub overrides: Vec<String>,
    pub ports: Vec<u16>,
    pub host_keys: Vec<PathBuf>,
    pub foreground: bool,
    pub debug: bool,
    pub log_stderr: bool,
    pub log_file: Option<PathBuf>,
    pub quiet: bool,
    pub test: bool,
    /// -T: print the effective configuration (implies -t).
    pub dump: bool,
    /// -C: the connection to apply Match for with -T.
    pub connection_spec: Option<String>,
    /// -i: one connection on stdin/stdout (inetd).
    pub inetd: bool,
    pub version: bool,
}

/// A command line resshd does not take (printed with the usage, as sshd).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("unexpected argument {0}")]
    Unexpected(String),
    #[error("option requires an argument -- {0}")]
    MissingValue(char),
    #[error("Bad port number: {0}")]
    BadPort(String),
    #[error("illegal option -- {0}")]
    Illegal(char),
}

impl Args {
    pub fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, UsageError> {
        let mut a = Args {
            config_file: PathBuf::from("/etc/ressh/resshd_config"),
            ..Default::default()
        };
        while let Some(arg) = it.next() {
            let Some(flags) = arg.strip_prefix('-') else {
                return Err(UsageError::Unexpected(arg));
            };
            if flags.is_empty() {
                return Err(UsageError::Unexpected(arg));
            }
            for (i, c) in flags.char_indices() {
                match c {
                    'D' => a.foreground = true,
                    'd' => {
                        a.debug = true;
                        a.foreground = true;
                        a.log_stderr = true;
                    }
                    'e' => a.log_stderr = true,
                    'q' => a.quiet = true,
                    't' => a.test = true,
                    'T' => {
                        a.dump = true;
                        a.test = true;
                    }
                    'i' => a.inetd = true,
                    'V' => a.version = true,
                    'C' | 'E' | 'f' | 'h' | 'o' | 'p' => {
                        let rest = &flags[i + c.len_utf8()..];
                        let v = if rest.is_empty() {
                            it.next().ok_or(UsageError::MissingValue(c))?
                        } else {
                            rest.to_string()
                        };
                        match c {
                            'C' => a.connection_spec = Some(v),
                            'E' => a.log_file = Some(PathBuf::from(v)),
                            'f' => a.config_file = PathBuf::from(v),
                            'h' => a.host_keys.push(PathBuf::from(v)),
                            'o' => a.overrides.push(v),
                            'p' => a.ports.push(
                                v.parse::<u16>()
                                    .ok()
                                    .filter(|p| *p != 0)
                                    .ok_or_else(|| UsageError::BadPort(v.clone()))?,
                            ),
                            _ => unreachable!(),
                        }
                        break;
                    }
                    _ => return Err(UsageError::Illegal(c)),
                }
            }
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[&str]) -> Result<Args, UsageError> {
        Args::parse(s.iter().map(|x| x.to_string()))
    }

    #[test]
    fn sshd_style_flags() {
        let a = p(&[
            "-De",
            "-p",
            "2222",
            "-p2223",
            "-f/tmp/c",
            "-o",
            "LogLevel=DEBUG",
            "-h",
            "/k",
        ])
        .unwrap();
        assert!(a.foreground && a.log_stderr && !a.debug);
        assert_eq!(a.ports, vec![2222, 2223]);
        assert_eq!(a.config_file, PathBuf::from("/tmp/c"));
        assert_eq!(a.overrides, vec!["LogLevel=DEBUG"]);
        assert_eq!(a.host_keys, vec![PathBuf::from("/k")]);
        assert_eq!(p(&["-x"]).err(), Some(UsageError::Illegal('x')));
        assert_eq!(p(&["-p", "0"]).err(), Some(UsageError::BadPort("0".into())));
        assert_eq!(p(&["-p"]).err(), Some(UsageError::MissingValue('p')));
        assert!(p(&["-t"]).unwrap().test);
        let a = p(&["-T", "-C", "user=alice,addr=10.0.0.1", "-i"]).unwrap();
        assert!(a.dump && a.test && a.inetd);
        assert_eq!(
            a.connection_spec.as_deref(),
            Some("user=alice,addr=10.0.0.1")
        );
        assert!(p(&["-C"]).is_err());
    }
}
