//! Log lines of resshd's privileged processes: one event per line with a
//! syslog priority, to stderr (with a `<N>` priority prefix that journald
//! understands when asked to) or appended to a file (-E).

use ressh_compat::log as compat_log;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 3,
    Info = 6,
    Debug = 7,
}

static MAX: AtomicU8 = AtomicU8::new(Level::Info as u8);
static PREFIX: AtomicBool = AtomicBool::new(false);
/// Added to the level in `<N>` prefixes (a syslog facility code).
static FACILITY: AtomicI32 = AtomicI32::new(0);

/// Sets the most verbose level written; `priority_prefix` adds sd-daemon
/// style `<N>` prefixes (for journald via stderr).
pub fn init(max: Level, priority_prefix: bool) {
    MAX.store(max as u8, Ordering::Relaxed);
    PREFIX.store(priority_prefix, Ordering::Relaxed);
}

/// Sets the syslog facility the `<N>` prefixes carry (for lines written
/// straight to the syslog socket).
pub fn set_facility(facility: i32) {
    FACILITY.store(facility, Ordering::Relaxed);
}

/// The log level as a word for a helper resshd executes, whose stderr
/// resshd relays ([`relay_stderr`]): [`from_word`] there.
pub fn to_word() -> String {
    MAX.load(Ordering::Relaxed).to_string()
}

/// Takes the level [`to_word`] gave, with `<N>` prefixes always and no
/// facility, so that each line tells the relay its level
/// ([`relay_line`]); false if it does not parse.
pub fn from_word(w: &str) -> bool {
    let Ok(max) = w.parse::<u8>() else {
        return false;
    };
    MAX.store(max, Ordering::Relaxed);
    PREFIX.store(true, Ordering::Relaxed);
    FACILITY.store(0, Ordering::Relaxed);
    true
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX.load(Ordering::Relaxed)
}

pub fn log(level: Level, msg: &str) {
    if !enabled(level) {
        return;
    }
    compat_log::to_stderr(&compat_log::line(
        priority(level),
        "resshd",
        std::process::id(),
        msg,
    ));
}

/// The `<N>` prefix's value for `level`, if prefixes are on.
fn priority(level: Level) -> Option<i32> {
    PREFIX
        .load(Ordering::Relaxed)
        .then(|| level as i32 | FACILITY.load(Ordering::Relaxed))
}

pub fn info(msg: &str) {
    log(Level::Info, msg)
}

pub fn error(msg: &str) {
    log(Level::Error, msg)
}

pub fn debug(msg: &str) {
    log(Level::Debug, msg)
}

/// A line a worker sent ([`ressh_ipc::msg::FromKex::Log`],
/// [`ressh_ipc::msg::FromSession::Log`]), written as
/// `PROGRAM[PID]: CONTEXT: TEXT`: the program and pid of the worker as the
/// monitor started it and the context (peer, user) as the monitor saw it,
/// so a worker cannot speak for another process, and the text with every
/// control character escaped, so it cannot end its line and start another.
pub fn relay(level: Level, program: &str, pid: u32, context: &str, text: &str) {
    if !enabled(level) {
        return;
    }
    let text = format!("{context}: {}", escape(text));
    compat_log::to_stderr(&compat_log::line(priority(level), program, pid, &text));
}

/// Longest line [`Lines`] passes on (the rest of a longer one is dropped).
const MAX_LINE: usize = 1024;
/// Most lines [`Lines`] passes on from one process.
const MAX_LINES: usize = 256;

/// A pipe for the stderr of a process that must not write the log itself
/// (the fleet processes, which talk to other nodes): its read end (close
/// on exec) for the parent, which passes its [`Lines`] to [`relay`]; its
/// write end to be the child's descriptor 2.
pub fn stderr_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// A less privileged process's stderr cut into lines for [`relay`]: each
/// at most [`MAX_LINE`] bytes, at most [`MAX_LINES`] of them (a process
/// writing more is not heard any more).
#[derive(Default)]
pub struct Lines {
    buf: Vec<u8>,
    /// The rest of an overlong line is being dropped.
    skipping: bool,
    passed: usize,
}

impl Lines {
    /// Takes `bytes` read from the pipe; `each` gets every line they end.
    pub fn feed(&mut self, bytes: &[u8], mut each: impl FnMut(&str)) {
        for &b in bytes {
            if b == b'\n' {
                if !std::mem::take(&mut self.skipping) {
                    self.pass(&mut each);
                }
                self.buf.clear();
            } else if !self.skipping {
                self.buf.push(b);
                if self.buf.len() == MAX_LINE {
                    self.pass(&mut each);
                    self.buf.clear();
                    self.skipping = true;
                }
            }
        }
    }

    /// The pipe's end: a last line without its line break.
    pub fn finish(mut self, mut each: impl FnMut(&str)) {
        if !self.buf.is_empty() && !self.skipping {
            self.pass(&mut each);
        }
    }

    fn pass(&mut self, each: &mut impl FnMut(&str)) {
        if self.passed < MAX_LINES {
            self.passed += 1;
            each(&String::from_utf8_lossy(&self.buf));
        }
    }
}

/// A line of the process `pid` (`program`) from its stderr pipe, logged
/// with [`relay`] under `context` at the level its `<N>` says
/// ([`relayed_level`]), without the `<N>` and `PROGRAM[PID]: ` its own log
/// line begins with (it is resshd too).
pub fn relay_line(program: &str, pid: u32, context: &str, line: &str) {
    let (level, text) = own_text(program, pid, line);
    relay(level, program, pid, context, text)
}

/// The level a relayed line's `<N>` names: an error for 0 to 3 (a less
/// privileged process may make its own lines heard under `LogLevel
/// ERROR`, no more: never an emergency or alert), debug for 7, else info;
/// info without a prefix.
fn relayed_level(n: Option<u32>) -> Level {
    match n.map(|n| n & 7) {
        Some(0..=3) => Level::Error,
        Some(7) => Level::Debug,
        _ => Level::Info,
    }
}

/// `line`'s level ([`relayed_level`]) and its text without a leading
/// `<N>` and `PROGRAM[PID]: ` naming `pid` itself (the whole line
/// otherwise, at info).
fn own_text<'a>(program: &str, pid: u32, line: &'a str) -> (Level, &'a str) {
    let (n, bare) = line
        .strip_prefix('<')
        .and_then(|l| l.split_once('>'))
        .filter(|(n, _)| !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit()))
        .map_or((None, line), |(n, rest)| (n.parse().ok(), rest));
    match bare.strip_prefix(&format!("{program}[{pid}]: ")) {
        Some(text) => (relayed_level(n), text),
        None => (Level::Info, line),
    }
}

/// Reads the stderr pipe `r` of the process `pid` (`program`) to its end,
/// logging each line with [`relay_line`] under `context`.
pub fn relay_stderr(r: OwnedFd, program: &str, pid: u32, context: &str) {
    use std::io::Read;
    let mut r = std::fs::File::from(r);
    let mut lines = Lines::default();
    let mut buf = [0u8; 4096];
    let put = |l: &str| relay_line(program, pid, context, l);
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => lines.feed(&buf[..n], put),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    lines.finish(put);
}

/// `text` with control characters (C0, DEL, C1, and the Unicode line and
/// paragraph separators) as `\xNN` / `\u{NNNN}`, everything else as is.
pub fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            c if (c as u32) < 0x20 || c == '\x7f' => s.push_str(&format!("\\x{:02x}", c as u32)),
            c if ('\u{80}'..='\u{9f}').contains(&c) || c == '\u{2028}' || c == '\u{2029}' => {
                s.push_str(&format!("\\u{{{:04x}}}", c as u32))
            }
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::{escape, own_text, Level, Lines, MAX_LINE, MAX_LINES};

    #[test]
    fn a_relayed_line_loses_only_its_own_prefix() {
        assert_eq!(own_text("resshd", 7, "<3>resshd[7]: text").1, "text");
        assert_eq!(own_text("resshd", 7, "resshd[7]: text").1, "text");
        for other in ["resshd[1]: text", "<3>resshd[1]: text", "<x>resshd[7]: t"] {
            assert_eq!(own_text("resshd", 7, other), (Level::Info, other));
        }
    }

    /// The level comes from the process's own prefix: error (0 to 3, an
    /// emergency or alert claimed is logged as an error), info, debug; a
    /// line without a prefix, or another process's, is info.
    #[test]
    fn a_relayed_line_keeps_its_level_up_to_error() {
        for (line, level) in [
            ("<3>resshd[7]: e", Level::Error),
            ("<0>resshd[7]: e", Level::Error),
            ("<131>resshd[7]: e", Level::Error),
            ("<6>resshd[7]: i", Level::Info),
            ("<4>resshd[7]: w", Level::Info),
            ("<7>resshd[7]: d", Level::Debug),
            ("resshd[7]: i", Level::Info),
            ("<3>resshd[1]: forged", Level::Info),
            ("<99999999999>resshd[7]: e", Level::Info),
        ] {
            assert_eq!(own_text("resshd", 7, line).0, level, "{line}");
        }
    }

    #[test]
    fn a_pipes_lines_are_bounded() {
        let mut got = Vec::new();
        let mut lines = Lines::default();
        let long = "y".repeat(3 * MAX_LINE);
        lines.feed(b"one\ntw", |l| got.push(l.to_string()));
        lines.feed(format!("o\n{long}\nthree\n").as_bytes(), |l| {
            got.push(l.to_string())
        });
        assert_eq!(got[..2], ["one", "two"]);
        assert_eq!(got[2], "y".repeat(MAX_LINE));
        assert_eq!(got[3], "three");
        for _ in 0..2 * MAX_LINES {
            lines.feed(b"more\n", |l| got.push(l.to_string()));
        }
        lines.finish(|l| got.push(l.to_string()));
        assert_eq!(got.len(), MAX_LINES);
        let mut last = Vec::new();
        let mut lines = Lines::default();
        lines.feed(b"no end", |l| last.push(l.to_string()));
        lines.finish(|l| last.push(l.to_string()));
        assert_eq!(last, ["no end"]);
    }

    #[test]
    fn a_worker_line_cannot_start_another() {
        let forged = "x\nresshd[1]: Accepted publickey for root\r\x1b[2K\u{85}\u{2028}\x7f";
        let e = escape(forged);
        assert!(!e.chars().any(|c| c.is_control() || c == '\u{2028}'), "{e}");
        assert_eq!(
            e,
            "x\\x0aresshd[1]: Accepted publickey for root\\x0d\\x1b[2K\\u{0085}\\u{2028}\\x7f"
        );
        // Printable text, UTF-8 included, stays as it is (the workers'
        // own escapes too).
        assert_eq!(escape("exec \"ls\\x0a\" é"), "exec \"ls\\x0a\" é");
    }
}
