//! What ressh and resshd share with OpenSSH's ssh and sshd, in one place
//! each (as OpenSSH's `match.c`, `addrmatch.c`, `misc.c` and `ttymodes.c`
//! serve both of its programs): the client, the monitor, the session
//! worker and the IPC crate call these, and none keeps a copy.
//!
//! A leaf crate: it depends on no other crate of the workspace, and the
//! protocol engine does not depend on it.

pub mod addrmatch;
pub mod expand;
pub mod glob;
pub mod log;
pub mod misc;
pub mod pattern;
pub mod ttymodes;
