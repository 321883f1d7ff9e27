//! ssh-audit (<https://github.com/jtesta/ssh-audit>), the scanner that flags
//! weak algorithms of an SSH server, from PyPI at a pinned version: Debian
//! 12's package (2.5.0) predates mlkem768x25519-sha256. It is installed
//! once into a virtual environment of the system's python3 (python3-venv)
//! and cached at [`SSH_AUDIT_DIR`]; built under a unique name and renamed
//! into place when complete, so concurrent test processes never use a
//! half-made one.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::cmd::{require_cmd, run_timeout};

/// The PyPI release installed.
pub const SSH_AUDIT_VERSION: &str = "3.9.0";
/// Where its virtual environment is cached.
pub const SSH_AUDIT_DIR: &str = "/var/cache/ressh-tests/ssh-audit-3.9.0";
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// `python3 -m ssh_audit` of the cached environment, installed first if
/// missing. Fails the test (panics) when it cannot be installed: a test of
/// what ssh-audit says never passes without it.
pub fn ssh_audit() -> Command {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    let venv = VENV.get_or_init(|| {
        let dir = PathBuf::from(SSH_AUDIT_DIR);
        if !installed(&dir) {
            install(&dir);
        }
        dir
    });
    // The interpreter's path, not bin/ssh-audit: a script's #! line names
    // the directory it was installed in, which was the temporary one.
    let mut c = Command::new(venv.join("bin/python3"));
    c.args(["-m", "ssh_audit"]);
    c
}

/// Whether `dir` holds a complete environment with the pinned release.
fn installed(dir: &Path) -> bool {
    if !dir.join("bin/python3").exists() {
        return false;
    }
    let out = run_timeout(
        Command::new(dir.join("bin/python3")).args(["-m", "pip", "show", "ssh-audit"]),
        INSTALL_TIMEOUT,
    );
    out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == format!("Version: {SSH_AUDIT_VERSION}"))
}

fn install(dir: &Path) {
    let parent = dir.parent().unwrap();
    fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
    let tmp = parent.join(format!("ssh-audit.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let python = require_cmd("/usr/bin/python3");
    let steps: [(&str, Command); 2] = [
        ("python3 -m venv (package python3-venv)", {
            let mut c = Command::new(python);
            c.args(["-m", "venv"]).arg(&tmp);
            c
        }),
        ("pip install ssh-audit", {
            let mut c = Command::new(tmp.join("bin/python3"));
            c.args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                .arg(format!("ssh-audit=={SSH_AUDIT_VERSION}"));
            c
        }),
    ];
    for (what, mut cmd) in steps {
        let out = run_timeout(&mut cmd, INSTALL_TIMEOUT);
        if !out.status.success() {
            let _ = fs::remove_dir_all(&tmp);
            panic!(
                "cannot install ssh-audit {SSH_AUDIT_VERSION}: {what}: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    if installed(dir) {
        // Another process finished first.
        let _ = fs::remove_dir_all(&tmp);
        return;
    }
    let _ = fs::remove_dir_all(dir);
    fs::rename(&tmp, dir)
        .unwrap_or_else(|e| panic!("cannot move {} to {}: {e}", tmp.display(), dir.display()));
}
