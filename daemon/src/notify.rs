//! resshd's state changes for systemd (sent by `ressh_resilience::sd_notify`).
//!
//! The unit (packaging/systemd/resshd.service) is `Type=notify`:
//! - `READY=1` once resshd listens (and again after a SIGHUP re-exec, from
//!   the same pid: exec keeps it, so `MAINPID` never changes);
//! - `RELOADING=1` with `MONOTONIC_USEC=` just before the re-exec;
//! - `STOPPING=1` on SIGTERM.
//!
//! Outside systemd (`$NOTIFY_SOCKET` unset) every call is a no-op.
//! `$NOTIFY_SOCKET` stays in resshd's environment so the re-exec'd process
//! can report READY=1; monitors never exec with it (workers get a cleared
//! environment, see `ressh_monitor::monitor`) and systemd only accepts
//! messages from the main pid (`NotifyAccess=main`).

use std::io;

pub use ressh_resilience::sd_notify::stderr_is_journal;
use ressh_resilience::sd_notify::{self as sd, notify};

fn report(what: &str, r: io::Result<bool>) {
    if let Err(e) = r {
        ressh_monitor::log::error(&format!("sd_notify {what}: {e}"));
    }
}

/// resshd listens and its broker socket is bound.
pub fn ready() {
    report("READY=1", notify("READY=1\nSTATUS=Listening\n"));
}

/// SIGHUP: resshd is about to re-execute itself.
pub fn reloading() {
    report("RELOADING=1", sd::reloading());
}

/// SIGTERM: resshd stops listening; sessions carry on.
pub fn stopping() {
    report("STOPPING=1", notify("STOPPING=1\nSTATUS=Stopping\n"));
}
