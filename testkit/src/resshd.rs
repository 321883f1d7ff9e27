//! resshd, ressh's own daemon, started like [`Sshd`] for end-to-end tests.

use std::path::{Path, PathBuf};

use crate::{Sshd, TempDir, TestUser};

/// resshd on 127.0.0.1 with generated host keys, its own privsep user (a
/// [`TestUser`]) and its own empty chroot directory; everything is removed
/// on drop.
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
        let config = format!(
            "PrivilegeSeparationUser {}\nPrivilegeSeparationDirectory {}\nBrokerSocket {}\n{extra_config}",
            privsep_user.name,
            chroot.display(),
            parent.join("broker.sock").display()
        );
        let server = Sshd::start_binary(bin, &config);
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

    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// The resshd binary of this build: `target/<profile>/resshd`, found from
/// the running test executable (`target/<profile>/deps/test-...`).
pub fn resshd_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    profile_dir.join("resshd")
}
