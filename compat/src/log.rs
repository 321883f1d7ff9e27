//! The log line of sshd's processes, `PROGRAM[PID]: TEXT`, optionally with
//! a `<PRIORITY>` prefix (sd-daemon style, which journald reads on stderr),
//! written to stderr in one write so that the lines of several processes
//! sharing it do not interleave. ssh's diagnostics (`debug1: ...`) are a
//! different format and stay with the client.

use std::io::Write;

/// One line: `[<priority>]program[pid]: text` and a newline.
pub fn line(priority: Option<i32>, program: &str, pid: u32, text: &str) -> String {
    match priority {
        Some(p) => format!("<{p}>{program}[{pid}]: {text}\n"),
        None => format!("{program}[{pid}]: {text}\n"),
    }
}

/// Writes a [`line`] to stderr in one write; a failure to write is
/// dropped (there is nowhere left to report it).
pub fn to_stderr(line: &str) {
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `text` cut to at most `max` bytes, at a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(line(None, "resshd", 7, "hi"), "resshd[7]: hi\n");
        assert_eq!(
            line(Some(38), "resshd-kex", 8, "x"),
            "<38>resshd-kex[8]: x\n"
        );
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("abc", 10), "abc");
    }
}
