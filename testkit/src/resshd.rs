//! resshd, ressh's own daemon, started like [`Sshd`] for end-to-end tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Net, Sshd, TempDir, TestUser};

/// The broker socket's name, beside the chroot directory.
const BROKER_SOCKET: &str = "broker.sock";

/// resshd on 127.0.0.1 (or, with [`Resshd::start_in`], inside a [`Net`]'s
/// server namespace) with generated host keys, its own privsep user (a
/// [`TestUser`]), its own empty chroot directory and broker socket;
/// everything is removed on drop. Its sftp is resshd's own in-process
/// server (`Subsystem sftp internal-sftp`) unless the caller sets a
/// Subsystem.
pub struct Resshd {
    // Field order is drop order: the daemon goes first.
    pub server: Sshd,
    pub privsep_user: TestUser,
    pub chroot: PathBuf,
    _chroot_parent: TempDir,
}

impl Resshd {
    /// `bin` is the resshd binary; its workers must sit next to it.
    pub fn start(bin: &Path, extra_config: &str) -> Resshd {
        Resshd::start_inner(bin, extra_config, None)
    }

    /// Like [`Resshd::start`], but resshd runs inside `net`'s server namespace and
    /// listens on `net.server_addr()` (198.18.0.1) port 22
    /// ([`Sshd::start_binary_in`]). Its monitors and workers run there too, so the
    /// lab's drop kills whatever outlives the daemon.
    pub fn start_in(bin: &Path, net: &Net, extra_config: &str) -> Resshd {
        Resshd::start_inner(bin, extra_config, Some((net, 22)))
    }

    /// [`Resshd::start_in`] on another port: several resshd in one lab
    /// (the nodes of a fleet), each with its own keys and broker socket.
    pub fn start_in_port(bin: &Path, net: &Net, port: u16, extra_config: &str) -> Resshd {
        Resshd::start_inner(bin, extra_config, Some((net, port)))
    }

    fn start_inner(bin: &Path, extra_config: &str, net: Option<(&Net, u16)>) -> Resshd {
        for w in ["resshd-kex", "resshd-session"] {
            let p = bin.with_file_name(w);
            assert!(
                p.exists(),
                "{} is missing: build the whole workspace (cargo build --workspace)",
                p.display()
            );
        }
        let privsep_user = TestUser::create("ps");
        let parent = TempDir::new("resshd-chroot");
        let chroot = parent.join("empty");
        let sftp = if extra_config
            .lines()
            .any(|l| crate::sshd::keyword(l).as_deref() == Some("subsystem"))
        {
            ""
        } else {
            "Subsystem sftp internal-sftp\n"
        };
        let config = format!(
            "PrivilegeSeparationUser {}\nPrivilegeSeparationDirectory {}\nBrokerSocket {}\n{sftp}{extra_config}",
            privsep_user.name,
            chroot.display(),
            parent.join(BROKER_SOCKET).display()
        );
        let server = match net {
            Some((net, port)) => Sshd::start_binary_in(bin, &config, net, port),
            None => Sshd::start_binary(bin, &config),
        };
        Resshd {
            server,
            privsep_user,
            chroot,
            _chroot_parent: parent,
        }
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The broker socket its monitors link to (BrokerSocket).
    pub fn broker_socket(&self) -> PathBuf {
        self._chroot_parent.join(BROKER_SOCKET)
    }

    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Waits until the log satisfies `pred`; returns the log. Panics after
    /// `timeout` with `what` and the log.
    pub fn wait_log(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        crate::wait_for(
            what,
            timeout,
            || {
                let l = self.log();
                pred(&l).then_some(l)
            },
            || format!("--- resshd log ---\n{}", self.log()),
        )
    }

    /// Stops resshd (SIGTERM; established sessions carry on) and starts it again with
    /// the same configuration and broker socket: see [`Sshd::restart`].
    pub fn restart(&mut self) {
        self.server.restart();
    }

    /// SIGHUP: resshd re-executes itself; see [`Sshd::reload`].
    pub fn reload(&mut self) {
        self.server.reload();
    }
}

/// The resshd binary of this build: `target/<profile>/resshd`, found from
/// the running test executable (`target/<profile>/deps/test-...`).
pub fn resshd_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    profile_dir.join("resshd")
}
