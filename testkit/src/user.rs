//! Real Unix users created (and deleted) by tests.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{chown, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd::{describe_output, require_cmd, require_root, run, run_with_stdin};

/// Serializes user management inside one test binary; other processes are handled by
/// retrying when the shadow tools find `/etc/passwd` locked.
static USERS: Mutex<()> = Mutex::new(());
static SEQ: AtomicU32 = AtomicU32::new(0);

/// How long to keep retrying a shadow tool that finds the databases locked, or a
/// `userdel` that finds the user's processes still alive.
const RETRY_FOR: Duration = Duration::from_secs(20);

/// Linux user names are at most 32 bytes; keep one spare.
const MAX_NAME: usize = 31;

fn lock_users() -> std::sync::MutexGuard<'static, ()> {
    USERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A real Unix user made with `useradd -m -s /bin/sh`, with an unlocked random password
/// and an empty `~/.ssh` (0700, owned by the user). On drop, every process of the user
/// is killed and the user is removed with its home (`userdel -r`).
#[derive(Debug)]
#[non_exhaustive] // only `create` makes one: dropping it deletes a user
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// `(status, stderr)` of a shadow tool, retried while it reports a lock held elsewhere.
fn shadow_tool(mut make: impl FnMut() -> Command, input: Option<&[u8]>) -> Output {
    let deadline = Instant::now() + RETRY_FOR;
    loop {
        let mut cmd = make();
        let out = match input {
            Some(input) => run_with_stdin(&mut cmd, input, crate::DEFAULT_TIMEOUT),
            None => run(&mut cmd),
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains("lock") || Instant::now() >= deadline {
            return out;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let mut f = fs::File::open("/dev/urandom").expect("open /dev/urandom");
    std::io::Read::read_exact(&mut f, &mut buf).expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// `(uid, gid, home)` from `getent passwd name`, or None if there is no such user.
fn lookup(name: &str) -> Option<(u32, u32, PathBuf)> {
    let out = run(Command::new(require_cmd("getent")).args(["passwd", name]));
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = line.trim_end().split(':').collect();
    if f.len() < 7 || f[0] != name {
        return None;
    }
    Some((f[2].parse().ok()?, f[3].parse().ok()?, PathBuf::from(f[5])))
}

impl TestUser {
    /// Creates a user named `rt<prefix>_<pid>_<n>` (prefix reduced to `[a-z0-9]` and
    /// shortened so the name stays within 31 bytes). Requires root; panics on failure.
    pub fn create(prefix: &str) -> TestUser {
        require_root();
        let useradd = require_cmd("useradd");
        let pid = std::process::id();
        let clean: String = prefix
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();

        let _guard = lock_users();
        let deadline = Instant::now() + RETRY_FOR;
        let name = loop {
            let tail = format!("_{pid}_{}", SEQ.fetch_add(1, Ordering::Relaxed));
            let room = MAX_NAME - 2 - tail.len();
            let name = format!("rt{}{tail}", &clean[..clean.len().min(room)]);
            let out = shadow_tool(
                || {
                    let mut c = Command::new(&useradd);
                    c.args(["-m", "-s", "/bin/sh", "-c", "ressh test user", &name]);
                    c
                },
                None,
            );
            match out.status.code() {
                Some(0) => break name,
                // 9: name taken, e.g. left over by a killed run with the same pid.
                Some(9) if Instant::now() < deadline => continue,
                _ => panic!(
                    "useradd {name} failed: {}\n{}",
                    out.status,
                    describe_output(&out)
                ),
            }
        };
        let (uid, gid, home) = lookup(&name)
            .unwrap_or_else(|| panic!("useradd created {name} but getent does not find it"));
        let user = TestUser {
            name,
            uid,
            gid,
            home,
        };
        drop(_guard);

        // useradd leaves the password locked ("!"), and sshd refuses even public-key
        // logins to a locked account when it runs without PAM.
        user.set_password(&random_hex(16));
        let ssh_dir = user.home.join(".ssh");
        if !ssh_dir.exists() {
            DirBuilder::new()
                .mode(0o700)
                .create(&ssh_dir)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", ssh_dir.display()));
        }
        user.own(&ssh_dir, 0o700);
        user
    }

    /// Sets the user's password (with `chpasswd`). Panics on failure.
    pub fn set_password(&self, password: &str) {
        assert!(
            !password.contains(['\n', ':']),
            "password must not contain ':' or a newline"
        );
        let _guard = lock_users();
        let input = format!("{}:{password}\n", self.name);
        let out = shadow_tool(
            || Command::new(require_cmd("chpasswd")),
            Some(input.as_bytes()),
        );
        if !out.status.success() {
            panic!(
                "chpasswd for {} failed: {}\n{}",
                self.name,
                out.status,
                describe_output(&out)
            );
        }
    }

    /// Appends one OpenSSH public key line to `~/.ssh/authorized_keys` (created 0600,
    /// owned by the user).
    pub fn authorize_key(&self, openssh_pub_line: &str) {
        let ssh_dir = self.home.join(".ssh");
        let path = ssh_dir.join("authorized_keys");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        writeln!(f, "{}", openssh_pub_line.trim_end())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        self.own(&path, 0o600);
    }

    /// Gives `path` to this user (uid and gid) with permission bits `mode`.
    pub fn own(&self, path: &Path, mode: u32) {
        chown(path, Some(self.uid), Some(self.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    }

    /// Pids of the user's live processes: those with the user's uid as real, effective,
    /// saved or filesystem uid, not counting zombies (killed processes that are not yet
    /// reaped, which `pgrep` still lists).
    pub fn processes(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        let Ok(entries) = fs::read_dir("/proc") else {
            return pids;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(status) = fs::read_to_string(entry.path().join("status")) else {
                continue;
            };
            let field = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .unwrap_or("")
                    .to_string()
            };
            let zombie = field("State:").trim_start().starts_with('Z');
            let uid = self.uid.to_string();
            if !zombie && field("Uid:").split_whitespace().any(|u| u == uid) {
                pids.push(pid);
            }
        }
        pids
    }

    fn remove(&self) -> Result<(), String> {
        let _guard = lock_users();
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            // pkill exits 1 when there is nothing to kill: fine.
            let _ = run(Command::new(require_cmd("pkill")).args(["-KILL", "-u", &self.name]));
            let out = shadow_tool(
                || {
                    let mut c = Command::new(require_cmd("userdel"));
                    c.args(["-r", &self.name]);
                    c
                },
                None,
            );
            match out.status.code() {
                Some(0) => break,
                // 6: no such user (already gone); 8: still has processes, kill again.
                Some(6) => break,
                Some(8) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    return Err(format!(
                        "userdel -r {} failed: {}\n{}",
                        self.name,
                        out.status,
                        describe_output(&out)
                    ))
                }
            }
        }
        if lookup(&self.name).is_some() {
            return Err(format!("user {} still exists after userdel", self.name));
        }
        if self.home.exists() {
            return Err(format!(
                "{} still exists after userdel -r",
                self.home.display()
            ));
        }
        Ok(())
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            // A leaked user is a failed test, unless the test is already failing.
            if thread::panicking() {
                eprintln!("ressh-testkit: {e}");
            } else {
                panic!("ressh-testkit: {e}");
            }
        }
    }
}
