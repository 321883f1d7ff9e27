//! Diagnostics on stderr (or the -E file), in ssh's style: `debug1: ...`.
//!
//! Writes never fail loudly: stderr may share a non-blocking pipe with stdout,
//! so a full pipe is waited for instead of panicking as `eprintln!` would.

use std::fmt;
use std::fs::File;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use crate::fdio::write_all_quietly;

/// ssh's LogLevel values, in increasing verbosity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Quiet = 0,
    Fatal = 1,
    Error = 2,
    Info = 3,
    Verbose = 4,
    Debug1 = 5,
    Debug2 = 6,
    Debug3 = 7,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_uppercase().as_str() {
            "QUIET" => Level::Quiet,
            "FATAL" => Level::Fatal,
            "ERROR" => Level::Error,
            "INFO" => Level::Info,
            "VERBOSE" => Level::Verbose,
            "DEBUG" | "DEBUG1" => Level::Debug1,
            "DEBUG2" => Level::Debug2,
            "DEBUG3" => Level::Debug3,
            _ => return None,
        })
    }

    fn from_u8(v: u8) -> Level {
        match v {
            0 => Level::Quiet,
            1 => Level::Fatal,
            2 => Level::Error,
            3 => Level::Info,
            4 => Level::Verbose,
            5 => Level::Debug1,
            6 => Level::Debug2,
            _ => Level::Debug3,
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
/// The -E file; None: stderr.
static LOG_FILE: OnceLock<File> = OnceLock::new();

pub fn set_level(l: Level) {
    LEVEL.store(l as u8, Ordering::Relaxed);
}

pub fn level() -> Level {
    Level::from_u8(LEVEL.load(Ordering::Relaxed))
}

pub fn enabled(l: Level) -> bool {
    l <= level()
}

/// Sends log lines to `file` (the -E file) instead of stderr.
pub fn set_file(file: File) {
    let _ = LOG_FILE.set(file);
}

/// Whether log lines go to stderr (no -E file).
pub fn on_stderr() -> bool {
    LOG_FILE.get().is_none()
}

/// Writes all of `buf` to stderr, waiting out a full pipe; errors are
/// dropped.
pub fn write_stderr(buf: &[u8]) {
    write_all_quietly(std::io::stderr().as_fd(), buf);
}

/// One diagnostic line with `prefix`; the line ends in CR LF while the
/// terminal is in raw mode.
pub fn emit(prefix: &str, args: fmt::Arguments<'_>) {
    let mut s = String::with_capacity(64);
    s.push_str(prefix);
    fmt::write(&mut s, args).ok();
    // Control characters from the peer must not reach the terminal raw.
    let mut clean = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if c.is_control() && c != '\t' {
            clean.push_str(&c.escape_default().to_string());
        } else {
            clean.push(c);
        }
    }
    clean.push_str(if crate::tty::raw_active() {
        "\r\n"
    } else {
        "\n"
    });
    match LOG_FILE.get() {
        Some(f) => write_all_quietly(f.as_fd(), clean.as_bytes()),
        None => write_stderr(clean.as_bytes()),
    }
}

/// Writes text as is (a banner, a prompt's preamble), converting newlines
/// to CR LF in raw mode.
pub fn raw_text(text: &str) {
    let text = if crate::tty::raw_active() {
        text.replace('\n', "\r\n")
    } else {
        text.to_string()
    };
    write_stderr(text.as_bytes());
}

#[macro_export]
macro_rules! error {
    ($($a:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Error) {
            $crate::log::emit("", format_args!($($a)*))
        }
    };
}

#[macro_export]
macro_rules! info {
    ($($a:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Info) {
            $crate::log::emit("", format_args!($($a)*))
        }
    };
}

#[macro_export]
macro_rules! verbose {
    ($($a:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Verbose) {
            $crate::log::emit("", format_args!($($a)*))
        }
    };
}

#[macro_export]
macro_rules! debug1 {
    ($($a:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Debug1) {
            $crate::log::emit("debug1: ", format_args!($($a)*))
        }
    };
}

#[macro_export]
macro_rules! debug2 {
    ($($a:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Debug2) {
            $crate::log::emit("debug2: ", format_args!($($a)*))
        }
    };
}

#[macro_export]
macro_rules! debug3 {
    ($($a:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Debug3) {
            $crate::log::emit("debug3: ", format_args!($($a)*))
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_order() {
        assert_eq!(Level::parse("debug"), Some(Level::Debug1));
        assert_eq!(Level::parse("DEBUG3"), Some(Level::Debug3));
        assert_eq!(Level::parse("quiet"), Some(Level::Quiet));
        assert_eq!(Level::parse("loud"), None);
        assert!(Level::Error < Level::Info && Level::Info < Level::Debug1);
    }
}
