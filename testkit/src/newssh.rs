//! The newest OpenSSH that Debian ships, from a Debian `sid` root (or
//! `trixie`'s when sid cannot be bootstrapped), for interop tests against
//! current clients and servers (issue 15).
//!
//! The root is made once with [`debootstrap`] (minbase, openssh-client and
//! openssh-server) from the host's configured Debian mirror, plus
//! `sk-dummy.so` (OpenSSH's FIDO test provider) taken from the
//! openssh-tests package without its dependencies (python3-twisted,
//! putty-tools), and cached at [`NEW_SSH_ROOT`]: later runs reuse it. A
//! root older than [`MAX_AGE`] is made anew, so the tests follow sid. It is
//! built under a unique name and renamed into place when complete, so
//! concurrent test processes never see a half-made root (two first runs at
//! once both build; one rename wins).
//!
//! Its programs run on the host through the root's own dynamic loader and
//! libraries ([`NewSsh::command`]): host paths (keys, configs, sockets on
//! loopback) work as for the host's ssh. Programs that exec others by
//! their installed path (sshd → sshd-session, ssh → ssh-sk-helper) would
//! run the host's copies this way: they run chrooted into the root
//! ([`NewSsh::chrooted`]), with their files in a [`NewSsh::scratch`]
//! directory inside it; the network namespace is still the host's, so
//! loopback servers are reachable. The root's sshd runs chrooted too
//! ([`NewSsh::sshd_wrapper`], for [`crate::Sshd::start_binary`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use crate::cmd::{require_cmd, require_root, run_timeout};
use crate::debroot::{debootstrap, host_suite_and_mirror, SYSTEM_PATH};
use crate::TempDir;

/// Where the root is cached.
pub const NEW_SSH_ROOT: &str = "/var/cache/ressh-tests/sid-root";
/// A cached root older than this is rebuilt.
pub const MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);
/// Written last into a complete root; its mtime is the root's age.
const STAMP: &str = "ressh-newssh-root";
/// Where openssh-tests installs the FIDO test provider.
pub const SK_DUMMY: &str = "/usr/lib/openssh/regress/misc/sk-dummy/sk-dummy.so";
/// The root's dynamic loader and library directories (amd64).
const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
const LIB_DIRS: &[&str] = &["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"];
const STEP_TIMEOUT: Duration = Duration::from_secs(600);

/// A complete root of the newest Debian OpenSSH.
#[derive(Debug)]
pub struct NewSsh {
    root: PathBuf,
    /// The suite it was made from ("sid" or "trixie").
    pub suite: String,
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `script` run by the root's /bin/sh inside it (chroot, host network).
fn in_root(root: &Path, script: &str) -> Output {
    run_timeout(
        Command::new(require_cmd("chroot"))
            .arg(root)
            .args(["/bin/sh", "-ec", script])
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .current_dir("/"),
        STEP_TIMEOUT,
    )
}

/// Makes a root of `suite` at `root`, or says why not.
fn build(suite: &str, mirror: &str, root: &Path) -> Result<(), String> {
    let t = Instant::now();
    let out = debootstrap(suite, root, mirror, &["openssh-client", "openssh-server"]);
    if !out.status.success() {
        return Err(describe(&format!("debootstrap {suite}"), &out));
    }
    // sk-dummy.so alone: openssh-tests' dependencies are not needed for it
    // (and python3-cryptography fails to configure in a fresh root). apt,
    // unlike debootstrap, refuses a Release file past its Valid-Until, which
    // a mirror that is a snapshot serves: the signature is still checked.
    let out = in_root(
        root,
        &format!(
            "apt-get -q -o Acquire::Check-Valid-Until=false update\n\
             cd /tmp\n\
             apt-get -q -o Acquire::Check-Valid-Until=false download openssh-tests\n\
             dpkg-deb --fsys-tarfile openssh-tests_*.deb | tar -x -C / .{SK_DUMMY}\n\
             rm -f openssh-tests_*.deb\n\
             apt-get clean\n\
             test -f {SK_DUMMY}"
        ),
    );
    if !out.status.success() {
        return Err(describe("sk-dummy.so from openssh-tests", &out));
    }
    fs::write(root.join(STAMP), suite).map_err(|e| format!("stamp: {e}"))?;
    eprintln!(
        "newssh: built a {suite} root in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

impl NewSsh {
    /// The cached root, made first if missing or stale. Fails the test
    /// (panics) when no root can be made: a test of the newest OpenSSH
    /// never passes without one.
    pub fn get() -> &'static NewSsh {
        static ROOT: OnceLock<NewSsh> = OnceLock::new();
        ROOT.get_or_init(|| {
            require_root();
            let root = PathBuf::from(NEW_SSH_ROOT);
            if let Some(suite) = fresh(&root) {
                return NewSsh { root, suite };
            }
            let parent = root.parent().unwrap();
            fs::create_dir_all(parent).unwrap();
            let (_, mirror) = host_suite_and_mirror();
            let mut errors = Vec::new();
            for suite in ["sid", "trixie"] {
                let tmp = parent.join(format!("sid-root.tmp-{}", std::process::id()));
                let _ = fs::remove_dir_all(&tmp);
                match build(suite, &mirror, &tmp) {
                    Ok(()) => {
                        if let Some(suite) = fresh(&root) {
                            // Another process finished first.
                            let _ = fs::remove_dir_all(&tmp);
                            return NewSsh { root, suite };
                        }
                        let old = parent.join(format!("sid-root.old-{}", std::process::id()));
                        let _ = fs::rename(&root, &old);
                        fs::rename(&tmp, &root).unwrap_or_else(|e| {
                            panic!("cannot move {} to {}: {e}", tmp.display(), root.display())
                        });
                        let _ = fs::remove_dir_all(&old);
                        return NewSsh {
                            root,
                            suite: suite.to_string(),
                        };
                    }
                    Err(e) => {
                        let _ = fs::remove_dir_all(&tmp);
                        eprintln!("newssh: no {suite} root: {e}");
                        errors.push(e);
                    }
                }
            }
            panic!(
                "cannot make a root of the newest OpenSSH (sid, then trixie):\n{}",
                errors.join("\n\n")
            );
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `prog` of the root (an absolute path inside it, e.g. "/usr/bin/ssh")
    /// run on the host by the root's loader with the root's libraries.
    pub fn command(&self, prog: &str) -> Command {
        let libs: Vec<String> = LIB_DIRS
            .iter()
            .map(|d| {
                self.root
                    .join(d.trim_start_matches('/'))
                    .display()
                    .to_string()
            })
            .collect();
        let mut c = Command::new(self.root.join(LOADER.trim_start_matches('/')));
        c.arg("--library-path")
            .arg(libs.join(":"))
            .arg(self.root.join(prog.trim_start_matches('/')));
        c
    }

    /// `prog` of the root run chrooted into it (by root): it sees only the
    /// root's files, its own helpers included (ssh → ssh-sk-helper).
    pub fn chrooted(&self, prog: &str) -> Command {
        let mut c = Command::new(require_cmd("chroot"));
        c.arg(&self.root).arg(prog);
        c
    }

    /// A temporary directory inside the root's /tmp (removed on drop), for
    /// the files of [`NewSsh::chrooted`] programs; [`NewSsh::inside`] gives
    /// the paths they see.
    pub fn scratch(&self, prefix: &str) -> TempDir {
        TempDir::new_in(&self.root.join("tmp"), prefix)
    }

    /// `host_path` (under the root) as a chrooted program sees it.
    pub fn inside(&self, host_path: &Path) -> PathBuf {
        let rel = host_path.strip_prefix(&self.root).unwrap_or_else(|_| {
            panic!(
                "{} is not inside {}",
                host_path.display(),
                self.root.display()
            )
        });
        Path::new("/").join(rel)
    }

    /// Writes into `dir` a program that runs the root's sshd with its
    /// arguments, chrooted into the root, for [`crate::Sshd::start_binary`]
    /// (which passes `-D -e -f CONFIG` and kills it, as any sshd). In a
    /// private mount namespace (its mounts die with it) the host's /proc,
    /// /dev, /home (test users' homes), temp dir (the server's config and
    /// host keys) and /run/sshd, and the host's passwd, group and shadow
    /// (test users, the privilege separation user), are bound over the
    /// root's: host paths and users work as for the host's sshd. The chain
    /// of execs keeps one pid, the sshd's.
    pub fn sshd_wrapper(&self, dir: &Path) -> PathBuf {
        let tmp = std::env::temp_dir();
        let script = format!(
            "#!/bin/sh\n\
             exec unshare --mount --propagation private sh -ec '\n\
             r=$0\n\
             mkdir -p \"$r/run/sshd\" \"$r{tmp}\"\n\
             for d in /proc /dev /home {tmp} /run/sshd; do mount --rbind \"$d\" \"$r$d\"; done\n\
             for f in /etc/passwd /etc/group /etc/shadow; do mount --bind \"$f\" \"$r$f\"; done\n\
             exec chroot \"$r\" /usr/sbin/sshd \"$@\"' {root} \"$@\"\n",
            tmp = tmp.display(),
            root = self.root.display()
        );
        let path = dir.join("newest-sshd");
        fs::write(&path, script).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    /// The FIDO test provider, at its path on the host.
    pub fn sk_dummy(&self) -> PathBuf {
        self.root.join(SK_DUMMY.trim_start_matches('/'))
    }
}

/// The suite of a complete root at `root` younger than [`MAX_AGE`].
fn fresh(root: &Path) -> Option<String> {
    let stamp = root.join(STAMP);
    let age = SystemTime::now()
        .duration_since(fs::metadata(&stamp).ok()?.modified().ok()?)
        .unwrap_or_default();
    if age > MAX_AGE {
        return None;
    }
    fs::read_to_string(stamp).ok()
}
