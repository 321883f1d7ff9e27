//! Log lines of resshd's privileged processes: one event per line with a
//! syslog priority, to stderr (with a `<N>` priority prefix that journald
//! understands when asked to) or appended to a file (-E).

use std::io::Write;
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

pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX.load(Ordering::Relaxed)
}

pub fn log(level: Level, msg: &str) {
    if !enabled(level) {
        return;
    }
    // One write per line, so lines of several processes do not interleave.
    let line = if PREFIX.load(Ordering::Relaxed) {
        format!(
            "<{}>resshd[{}]: {msg}\n",
            level as i32 | FACILITY.load(Ordering::Relaxed),
            std::process::id()
        )
    } else {
        format!("resshd[{}]: {msg}\n", std::process::id())
    };
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
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
