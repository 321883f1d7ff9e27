//! Test support for ressh's integration tests: real peers (Debian's OpenSSH), real
//! Unix users, real ptys and sockets, never a stub where the real part can run.
//!
//! Everything here shells out to the system's own tools (`useradd`, `ssh-keygen`,
//! Debian's `/usr/sbin/sshd`, ...) and uses only std, so the harness never depends on
//! ressh code that is still in progress.
//!
//! Rules the helpers enforce:
//! - A test that needs root calls [`require_root`] and FAILS when not root; it never
//!   passes having tested nothing. The same for missing binaries ([`require_cmd`]).
//! - Everything a test creates is removed on `Drop`: users ([`TestUser`]), daemons and
//!   their children ([`Sshd`]), directories ([`TempDir`]), network namespaces ([`Net`], [`Loopback`]).
//! - No child can hang the suite: [`run`] kills it after a timeout.
//! - Network: loopback (`127.0.0.1`), a namespace of its own with only loopback
//!   ([`Loopback`]), or the network namespaces of [`Net`], whose addresses all come
//!   from 198.18.0.0/15.

mod cmd;
mod debroot;
mod keys;
mod netns;
mod newssh;
mod relay;
mod resshd;
mod sshaudit;
mod sshconfig;
mod sshd;
mod tempdir;
mod tmux;
mod user;
mod util;

pub use cmd::{
    descendants, is_root, kill_tree, require_cmd, require_root, run, run_files, run_ok,
    run_timeout, run_with_stdin, which, DEFAULT_TIMEOUT,
};
pub use debroot::{debootstrap, host_suite_and_mirror, SYSTEM_PATH};
pub use keys::{ssh_keygen, ssh_keygen_sign};
pub use netns::{require_netns, Loopback, Net};
pub use newssh::{NewSsh, NEW_SSH_ROOT};
pub use relay::DelayRelay;
pub use resshd::{resshd_bin, Resshd};
pub use sshaudit::{ssh_audit, SSH_AUDIT_DIR, SSH_AUDIT_VERSION};
pub use sshconfig::{keyword_table, ssh_keywords, wild_config, KeywordRow};
pub use sshd::{free_port, Sshd, SSHD_BIN};
pub use tempdir::TempDir;
pub use tmux::Tmux;
pub use user::TestUser;
pub use util::{peak_rss, random_file, rss, sha256_file, text, wait_for};
