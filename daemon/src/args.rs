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

impl Args {
    pub fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut a = Args {
            config_file: PathBuf::from("/etc/ressh/resshd_config"),
            ..Default::default()
        };
        while let Some(arg) = it.next() {
            let Some(flags) = arg.strip_prefix('-') else {
                return Err(format!("unexpected argument {arg}"));
            };
            if flags.is_empty() {
                return Err("unexpected argument -".into());
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
                            it.next()
                                .ok_or_else(|| format!("option requires an argument -- {c}"))?
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
                                    .ok_or_else(|| format!("Bad port number: {v}"))?,
                            ),
                            _ => unreachable!(),
                        }
                        break;
                    }
                    _ => return Err(format!("illegal option -- {c}")),
                }
            }
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[&str]) -> Result<Args, String> {
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
        assert!(p(&["-x"]).is_err());
        assert!(p(&["-p", "0"]).is_err());
        assert!(p(&["-p"]).is_err());
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
