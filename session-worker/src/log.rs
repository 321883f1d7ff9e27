//! Log lines, one event per line. The worker runs as the user and holds no
//! descriptor on resshd's log: each line goes to the monitor
//! ([`FromSession::Log`], cut to [`MAX_LOG_LEN`]), which writes it as
//! `resshd-session[PID]: user alice from 127.0.0.1 port 5555: exec "ls"`,
//! naming the user and peer itself and escaping control characters.
//! Peer-supplied text should still go through `ressh_proto::wire::printable`
//! (the monitor's escaping is the backstop, not the format).

use std::sync::{Arc, OnceLock};

use ressh_compat::log as compat_log;
use ressh_ipc::msg::{FromSession, MAX_LOG_LEN};
use ressh_ipc::Endpoint;

static MONITOR: OnceLock<Arc<Endpoint>> = OnceLock::new();

/// From now on lines go to the monitor over `endpoint`.
pub fn to_monitor(endpoint: Arc<Endpoint>) {
    let _ = MONITOR.set(endpoint);
}

pub fn write(args: std::fmt::Arguments<'_>) {
    let text = args.to_string();
    let msg = compat_log::cut(&text, MAX_LOG_LEN);
    let sent = MONITOR
        .get()
        .is_some_and(|ipc| ipc.send(&FromSession::Log(msg.to_string()), &[]).is_ok());
    if !sent {
        // Before the link is taken (a bad command line, a failure to become
        // the user) or after the monitor went away: stderr, which is
        // /dev/null under a monitor (a test harness may keep it).
        compat_log::to_stderr(&compat_log::line(
            None,
            "resshd-session",
            std::process::id(),
            msg,
        ));
    }
}

/// Writes one log line: `log!("exec {:?}", cmd)`.
#[macro_export]
macro_rules! log {
    ($($t:tt)*) => { $crate::log::write(format_args!($($t)*)) };
}
