//! Log lines on stderr, one event per line, each naming the peer and user:
//! `resshd-session[PID]: user alice from 127.0.0.1 port 5555: exec "ls"`.
//! Peer-supplied text must go through `ressh_proto::wire::printable`.

use std::io::Write;
use std::sync::Mutex;

static PREFIX: Mutex<Option<String>> = Mutex::new(None);

/// Sets the user and peer named in every later line (again after a
/// reconnect from another address).
pub fn set_context(user: &str, addr: &str, port: u16) {
    let p = format!(
        "resshd-session[{}]: user {} from {} port {}",
        std::process::id(),
        ressh_proto::wire::printable(user.as_bytes()),
        ressh_proto::wire::printable(addr.as_bytes()),
        port
    );
    *PREFIX.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
}

pub fn write(args: std::fmt::Arguments<'_>) {
    let line = match PREFIX.lock().unwrap_or_else(|e| e.into_inner()).as_deref() {
        Some(p) => format!("{p}: {args}\n"),
        None => format!("resshd-session[{}]: {args}\n", std::process::id()),
    };
    // One write per line so lines of concurrent processes do not interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Writes one log line: `log!("exec {:?}", cmd)`.
#[macro_export]
macro_rules! log {
    ($($t:tt)*) => { $crate::log::write(format_args!($($t)*)) };
}
