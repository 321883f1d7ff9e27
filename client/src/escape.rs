//! The `~` escapes of an interactive session: recognised after a newline
//! (or at the start), as ssh does. `~.` disconnects, `~^Z` suspends, `~#`
//! lists forwarded connections, `~?` helps, `~~` sends one `~`, `~R` rekeys,
//! `~B` sends a break, `~V`/`~v` change the log level.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Disconnect,
    Suspend,
    ListConnections,
    Help,
    Rekey,
    Break,
    MoreVerbose,
    LessVerbose,
    /// An escape ressh does not offer (~C, ~&): tell the user.
    Unsupported(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Data(Vec<u8>),
    Cmd(Cmd),
}

pub struct Escape {
    ch: u8,
    at_line_start: bool,
    pending: bool,
}

impl Escape {
    pub fn new(ch: u8) -> Escape {
        Escape {
            ch,
            at_line_start: true,
            pending: false,
        }
    }

    pub fn char(&self) -> u8 {
        self.ch
    }

    /// Filters input bytes into data to send and commands, in order.
    pub fn feed(&mut self, input: &[u8]) -> Vec<Out> {
        let mut out = Vec::new();
        let mut data = Vec::with_capacity(input.len() + 1);
        let flush = |data: &mut Vec<u8>, out: &mut Vec<Out>| {
            if !data.is_empty() {
                out.push(Out::Data(std::mem::take(data)));
            }
        };
        for &b in input {
            if self.pending {
                self.pending = false;
                let cmd = match b {
                    b'.' => Some(Cmd::Disconnect),
                    0x1a => Some(Cmd::Suspend),
                    b'#' => Some(Cmd::ListConnections),
                    b'?' => Some(Cmd::Help),
                    b'R' => Some(Cmd::Rekey),
                    b'B' => Some(Cmd::Break),
                    b'V' => Some(Cmd::LessVerbose),
                    b'v' => Some(Cmd::MoreVerbose),
                    b'C' | b'&' => Some(Cmd::Unsupported(b)),
                    _ => None,
                };
                match cmd {
                    Some(c) => {
                        flush(&mut data, &mut out);
                        out.push(Out::Cmd(c));
                        self.at_line_start = false;
                    }
                    None => {
                        if b != self.ch {
                            data.push(self.ch);
                        }
                        data.push(b);
                        self.at_line_start = b == b'\r' || b == b'\n';
                    }
                }
                continue;
            }
            if self.at_line_start && b == self.ch {
                self.pending = true;
                continue;
            }
            data.push(b);
            self.at_line_start = b == b'\r' || b == b'\n';
        }
        flush(&mut data, &mut out);
        out
    }

    /// The ~? text.
    pub fn help(&self) -> String {
        let e = if self.ch < 0x20 {
            format!("^{}", (self.ch + b'@') as char)
        } else {
            (self.ch as char).to_string()
        };
        format!(
            "Supported escape sequences:\n \
             {e}.   - terminate connection\n \
             {e}B   - send a BREAK to the remote system\n \
             {e}R   - request rekey\n \
             {e}V/v - decrease/increase verbosity (LogLevel)\n \
             {e}^Z  - suspend ressh\n \
             {e}#   - list forwarded connections\n \
             {e}?   - this message\n \
             {e}{e}   - send the escape character by typing it twice\n\
             (Note that escapes are only recognized immediately after newline.)\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &[u8]) -> Out {
        Out::Data(s.to_vec())
    }

    #[test]
    fn escapes_only_at_line_start() {
        let mut e = Escape::new(b'~');
        assert_eq!(e.feed(b"~."), vec![Out::Cmd(Cmd::Disconnect)]);
        let mut e = Escape::new(b'~');
        assert_eq!(e.feed(b"a~."), vec![d(b"a~.")]);
        let mut e = Escape::new(b'~');
        assert_eq!(
            e.feed(b"ls\r~#x"),
            vec![d(b"ls\r"), Out::Cmd(Cmd::ListConnections), d(b"x")]
        );
    }

    #[test]
    fn tilde_tilde_and_unknown_and_split_input() {
        let mut e = Escape::new(b'~');
        assert_eq!(e.feed(b"~~"), vec![d(b"~")]);
        let mut e = Escape::new(b'~');
        assert_eq!(e.feed(b"~x"), vec![d(b"~x")]);
        // The escape may arrive in one read and its command in the next.
        let mut e = Escape::new(b'~');
        assert_eq!(e.feed(b"\n~"), vec![d(b"\n")]);
        assert_eq!(e.feed(b"\x1a"), vec![Out::Cmd(Cmd::Suspend)]);
        assert_eq!(e.feed(b"~?"), vec![d(b"~?")]);
        let mut e = Escape::new(b'~');
        assert_eq!(e.feed(b"~\r"), vec![d(b"~\r")]);
        assert_eq!(e.feed(b"~?"), vec![Out::Cmd(Cmd::Help)]);
        assert!(e.help().contains("~."));
    }

    #[test]
    fn other_escape_char() {
        let mut e = Escape::new(0x1d);
        assert_eq!(
            e.feed(b"~.\n\x1d."),
            vec![d(b"~.\n"), Out::Cmd(Cmd::Disconnect)]
        );
        assert!(e.help().contains("^]."));
    }
}
