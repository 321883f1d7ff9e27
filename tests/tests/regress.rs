//! Issue 22: OpenSSH's own regression suite (Debian's package `openssh-tests`,
//! `/usr/lib/openssh/regress`) run with Debian's sshd and with resshd as the server
//! under test (`TEST_SSH_SSHD`); the clients are Debian's own ssh, scp, sftp and
//! ssh-agent. Fails when a test passes with sshd and fails with resshd, unless the
//! test is in [`RESSHD_FAILS`] (the ratchet: each entry names the issue that will fix
//! it); fails as well when a listed test passes with resshd (the list must shrink
//! with every fix), and when sshd itself fails a test not in [`SSHD_FAILS`] (its log
//! is printed). A test that skips itself counts as failed: it tested nothing.
//!
//! The suite runs as Debian's autopkgtest runs it (the package's `run-tests`): as an
//! unprivileged user with password-less `sudo` (`SUDO=sudo`; the servers run as
//! root), from a copy of the suite, with `TEST_SSH_UNSAFE_PERMISSIONS=1`. Each test
//! is one `sh test-exec.sh OBJ test.sh`, as the suite's Makefile runs it.
//!
//! [`WORKERS`] runs go side by side, each in a network namespace of its own with
//! only loopback ([`Loopback`]: the suite's fixed ports, 4242 and the forwarding
//! tests' 33xx, never meet another run's or another test's, and a name-server lookup
//! fails at once) with its own copy of the suite. After every test, whatever it left
//! running in the namespace is killed. resshd gets the three options it cannot run
//! without (`TEST_SSH_SSHD_CONFOPTS`): a privilege-separation user and directory of
//! this test's own and a broker socket per run.
//!
//! Prints a table of every test with both servers: the result, the first failure
//! the suite logged, and the seconds each took; docs/regress.md keeps the numbers.
//! Own test binary: it keeps several regress runs busy for minutes, which would
//! disturb the timing-sensitive tests of the e2e binary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use ressh_testkit::{
    require_cmd, require_netns, require_root, resshd_bin, run_ok, run_timeout, Loopback, TempDir,
    TestUser, SSHD_BIN,
};

/// Where Debian's `openssh-tests` installs the suite.
const SUITE: &str = "/usr/lib/openssh/regress";

/// The suite's tests that exercise the server (issue 22's list), in the order its
/// Makefile runs them.
const TESTS: &[&str] = &[
    "connect",
    "proxy-connect",
    "connect-privsep",
    "connect-uri",
    "proto-version",
    "proto-mismatch",
    "exit-status",
    "exit-status-signal",
    "envpass",
    "transfer",
    "banner",
    "rekey",
    "dhgex",
    "stderr-data",
    "stderr-after-eof",
    "broken-pipe",
    "try-ciphers",
    "yes-head",
    "login-timeout",
    "agent",
    "agent-getpeereid",
    "agent-timeout",
    "agent-ptrace",
    "agent-subprocess",
    "key-options",
    "scp",
    "scp3",
    "scp-uri",
    "sftp",
    "sftp-chroot",
    "sftp-cmds",
    "sftp-badcmds",
    "sftp-batch",
    "sftp-glob",
    "sftp-perm",
    "sftp-uri",
    "reconfigure",
    "dynamic-forward",
    "forwarding",
    "multiplex",
    "reexec",
    "brokenkeys",
    "cfgmatch",
    "percent",
    "localcommand",
    "forcecommand",
    "portnum",
    "keytype",
    "kextype",
    "cert-hostkey",
    "cert-userkey",
    "keys-command",
    "forward-control",
    "integrity",
    "krl",
    "multipubkey",
    "limit-keytype",
    "hostkey-agent",
    "hostkey-rotate",
    "principals-command",
    "cert-file",
    "servcfginclude",
    "allow-deny-users",
    "authinfo",
    "channel-timeout",
    "connection-timeout",
];

/// The ratchet: tests that pass with sshd and fail with resshd today, as
/// `(test, issue that will fix it, what fails)`. A test that fails with resshd and
/// is not here fails this test; so does one that is here and passes.
const RESSHD_FAILS: &[(&str, u32, &str)] = &[];

/// Tests that fail with resshd only because they try algorithms resshd
/// refuses ([`REFUSED`], [`REFUSED_SIGNATURES`]), as `(test, what it tries,
/// whether RSA keys go too)`. Each runs a second time with resshd, an `ssh`
/// (as `TEST_SSH_SSH` and first on PATH: some tests run plain `ssh -Q`)
/// whose `-Q` lists leave those out (the suite asks `ssh -Q` what to try) and
/// a copy of the test without the lines that name one, and must pass then;
/// it must still fail as it is. The suite names RSA keys `ssh-rsa`, which is
/// also the SHA-1 signature resshd refuses: a test that takes that name as an
/// algorithm (`HostKeyAlgorithms ssh-rsa`, `PubkeyAcceptedAlgorithms
/// ssh-rsa*`) runs again without RSA keys and their certificates.
const REFUSED_ONLY: &[(&str, &str, bool)] = &[
    (
        "agent",
        "a DSA user key from the agent (PubkeyAcceptedAlgorithms +ssh-dss)",
        false,
    ),
    ("try-ciphers", "every cipher with every MAC", false),
    ("integrity", "MAC corruption with every MAC", false),
    ("dhgex", "group exchange with 3des-cbc first", false),
    (
        "kextype",
        "every key exchange, diffie-hellman-group1-sha1 first",
        false,
    ),
    (
        "keytype",
        "every key type as user and host key, FIDO keys second",
        false,
    ),
    ("hostkey-rotate", "a host key of every key type", false),
    (
        "limit-keytype",
        "PubkeyAcceptedAlgorithms of every key type, DSA alone in one step",
        false,
    ),
    (
        "cert-hostkey",
        "host certificates of every key type (Ed25519, ECDSA and RSA ones pass)",
        false,
    ),
    (
        "cert-userkey",
        "user certificates of every key type; DSA and SHA-1 RSA (`ssh-rsa*`) ones",
        true,
    ),
    (
        "hostkey-agent",
        "host keys in an agent: `HostKeyAlgorithms ssh-rsa`, DSA, FIDO, \
         ssh-rsa- and ssh-dss-cert-v01",
        true,
    ),
];

/// What resshd refuses of what Debian's OpenSSH offers, each refusal with
/// its reason in resshd_config(5) (Ciphers, MACs, KexAlgorithms, HostKey:
/// the suite takes its key types as host key types too). The test checks
/// that this is exactly what `ssh -Q` lists and resshd's registries lack.
const REFUSED: &[&str] = &[
    "3des-cbc",
    "aes128-cbc",
    "aes192-cbc",
    "aes256-cbc",
    "hmac-sha1-96",
    "hmac-md5",
    "hmac-md5-96",
    "hmac-sha1-96-etm@openssh.com",
    "hmac-md5-etm@openssh.com",
    "hmac-md5-96-etm@openssh.com",
    "diffie-hellman-group1-sha1",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
];

/// The signature algorithms resshd refuses of those Debian's OpenSSH
/// signs with, beyond [`REFUSED`]: SHA-1 RSA (`ssh-rsa`, also the name of
/// RSA keys, which resshd takes with rsa-sha2-256/512), the SHA-1 and DSA
/// certificate forms and WebAuthn signatures of FIDO keys (which OpenSSH's
/// ssh never makes), each with its reason in resshd_config(5). The test
/// checks that this is exactly what `ssh -Q sig` and the certificate lines of
/// `ssh -Q key-sig` list and resshd's registries lack.
const REFUSED_SIGNATURES: &[&str] = &[
    "webauthn-sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa",
    "ssh-dss-cert-v01@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
];

/// What a run without refused algorithms leaves out of `ssh -Q` lists:
/// `(lists of key types, lists of signature algorithms)`. With `rsa_keys`,
/// RSA keys too, with every certificate form.
fn left_out(rsa_keys: bool) -> (Vec<String>, Vec<String>) {
    use ressh_proto::keys::KeyType;
    let mut keys: Vec<String> = REFUSED.iter().map(|a| a.to_string()).collect();
    let mut sigs: Vec<String> = REFUSED
        .iter()
        .chain(REFUSED_SIGNATURES)
        .map(|a| a.to_string())
        .collect();
    if rsa_keys {
        keys.push(KeyType::Rsa.name().to_string());
        sigs.push(KeyType::Rsa.name().to_string());
    }
    // A key type left out goes with its certificates (the suite lists
    // them with `ssh -Q key-sig` and expects a key of each).
    for t in keys.iter().filter_map(|k| KeyType::from_name(k.as_bytes())) {
        sigs.push(ressh_proto::cert::cert_type_name(t).to_string());
        sigs.extend(
            ressh_proto::cert::signature_algorithms(t)
                .into_iter()
                .map(str::to_string),
        );
    }
    sigs.sort();
    sigs.dedup();
    (keys, sigs)
}

/// Tests Debian's sshd fails here, as `(test, why)`; resshd is not compared on them.
const SSHD_FAILS: &[(&str, &str)] = &[];

/// Tests that take longest, started first so that no run is left with a long one
/// at the end (measured; the rest follow in [`TESTS`] order).
const SLOW_FIRST: &[&str] = &[
    "rekey",
    "forward-control",
    "cert-hostkey",
    "cert-userkey",
    "multiplex",
    "integrity",
    "channel-timeout",
    "connection-timeout",
    "try-ciphers",
    "exit-status",
];

/// The PATH the suite runs with.
const PATH: &str = "/usr/bin:/bin:/usr/sbin:/sbin";

/// Runs side by side (each a network namespace and a copy of the suite).
const WORKERS: usize = 4;

/// Time limit of one test with one server; `timeout` ends it after that.
const TEST_LIMIT: Duration = Duration::from_secs(900);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Server {
    Sshd,
    Resshd,
    /// resshd, with the client's `-Q` lists short of [`REFUSED`].
    ResshdNoRefused,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Sshd => "sshd",
            Server::Resshd => "resshd",
            Server::ResshdNoRefused => "resshd-",
        }
    }
}

#[derive(Debug)]
enum Outcome {
    Pass,
    /// The first `FAIL:`/`FATAL:` line the suite logged (or its last output line).
    Fail(String),
    /// The test skipped itself (or part of itself): the line saying so.
    Skipped(String),
    TimedOut,
}

impl Outcome {
    fn passed(&self) -> bool {
        matches!(self, Outcome::Pass)
    }

    fn describe(&self) -> String {
        match self {
            Outcome::Pass => "ok".to_string(),
            Outcome::Fail(why) => format!("FAIL {why}"),
            Outcome::Skipped(why) => format!("SKIPPED {why}"),
            Outcome::TimedOut => format!("TIMEOUT after {TEST_LIMIT:?}"),
        }
    }
}

#[derive(Debug)]
struct Run {
    outcome: Outcome,
    secs: f64,
    /// The end of the suite's failed-sshd.log and the test's output, for a failure.
    log: String,
}

/// A sudoers drop-in giving `user` password-less sudo, removed on drop.
struct Sudoer(PathBuf);

impl Sudoer {
    fn grant(user: &TestUser) -> Sudoer {
        // sudo ignores drop-ins whose name has a '.' or ends in '~'; test users have neither.
        assert!(!user.name.contains(['.', '~']), "user name {}", user.name);
        let path = Path::new("/etc/sudoers.d").join(&user.name);
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, format!("{} ALL=(ALL:ALL) NOPASSWD: ALL\n", user.name))
            .unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o440)).unwrap();
        run_ok(Command::new(require_cmd("visudo")).arg("-cf").arg(&tmp));
        fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
        Sudoer(path)
    }
}

impl Drop for Sudoer {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.0) {
            eprintln!("regress: cannot remove {}: {e}", self.0.display());
        }
    }
}

/// resshd's default privilege-separation user `resshd`, as the Debian
/// package makes it: servcfginclude runs `resshd -T` on an sshd_config of
/// its own, which names none (sshd's `sshd` user exists on Debian for the
/// same reason). Made for the run when missing, and removed after it.
struct DefaultPrivsepUser(bool);

impl DefaultPrivsepUser {
    fn ensure() -> DefaultPrivsepUser {
        if nix::unistd::User::from_name("resshd")
            .ok()
            .flatten()
            .is_some()
        {
            return DefaultPrivsepUser(false);
        }
        run_ok(Command::new(require_cmd("useradd")).args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "resshd",
        ]));
        DefaultPrivsepUser(true)
    }
}

impl Drop for DefaultPrivsepUser {
    fn drop(&mut self) {
        if self.0 {
            let _ = Command::new("userdel").arg("resshd").status();
        }
    }
}

/// What every run shares: the user the suite runs as, resshd's binaries where that
/// user can run them, resshd's privilege-separation user and directory.
struct Setup {
    user: TestUser,
    _sudo: Sudoer,
    resshd: PathBuf,
    _default_privsep: DefaultPrivsepUser,
    privsep_user: TestUser,
    /// Root-owned: the privilege-separation directory and the broker sockets.
    privsep: TempDir,
    _bin: TempDir,
}

impl Setup {
    fn new() -> Setup {
        let user = TestUser::create("regress");
        let sudo = Sudoer::grant(&user);
        // A copy the test user may execute (the build may sit under /root), the
        // workers next to it as resshd wants them.
        let bin = TempDir::new("regress-bin");
        fs::set_permissions(bin.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let built = resshd_bin();
        for name in ["resshd", "resshd-kex", "resshd-session"] {
            let from = built.with_file_name(name);
            assert!(
                from.exists(),
                "{} is missing: build the whole workspace (cargo build --workspace)",
                from.display()
            );
            fs::copy(&from, bin.join(name))
                .unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
        let privsep_user = TestUser::create("ps");
        let privsep = TempDir::new("regress-privsep");
        fs::create_dir(privsep.join("empty")).unwrap();
        Setup {
            resshd: bin.join("resshd"),
            _default_privsep: DefaultPrivsepUser::ensure(),
            user,
            _sudo: sudo,
            privsep_user,
            privsep,
            _bin: bin,
        }
    }
}

/// One run: a namespace and a copy of the suite, owned by the test user.
struct Worker {
    id: usize,
    ns: Loopback,
    dir: TempDir,
}

impl Worker {
    fn new(id: usize, setup: &Setup) -> Worker {
        let ns = Loopback::new(&format!("regress{id}"));
        let dir = TempDir::new("regress");
        run_ok(
            Command::new(require_cmd("cp"))
                .args(["-a", SUITE])
                .arg(dir.join("regress")),
        );
        // The suite makes the agent set-gid in agent-ptrace: never the system's own.
        fs::copy(require_cmd("ssh-agent"), dir.join("ssh-agent")).unwrap();
        run_ok(
            Command::new(require_cmd("chown"))
                .arg("-R")
                .arg(format!("{}:{}", setup.user.uid, setup.user.gid))
                .arg(dir.path()),
        );
        Worker { id, ns, dir }
    }

    fn obj(&self) -> PathBuf {
        self.dir.join("regress")
    }

    /// A directory of this run with `ssh`: Debian's, except that its `-Q`
    /// lists leave out `keys` (cipher, mac, kex, key-plain, key) and `sigs`
    /// (sig, key-sig). The suite's log wrapper puts `-E LOG` before the
    /// arguments.
    fn without_refused_ssh(&self, keys: &[String], sigs: &[String]) -> PathBuf {
        let bin = self.dir.join("without-refused");
        let _ = fs::create_dir(&bin);
        let filter =
            |names: &[String]| -> String { names.iter().map(|a| format!(" -e '{a}'")).collect() };
        let ssh = require_cmd("ssh");
        let wrapper = bin.join("ssh");
        fs::write(
            &wrapper,
            format!(
                r#"#!/bin/sh
q=
for a in "$@"; do
	case "$q$a" in
	-Qcipher|-Qmac|-Qkex|-Qkey-plain|-Qkey) {ssh} "$@" | grep -vxF{keys}; exit 0;;
	-Qsig|-Qkey-sig) {ssh} "$@" | grep -vxF{sigs}; exit 0;;
	esac
	q=; [ "$a" = -Q ] && q=-Q
done
exec {ssh} "$@"
"#,
                ssh = ssh.display(),
                keys = filter(keys),
                sigs = filter(sigs),
            ),
        )
        .unwrap();
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        bin
    }

    /// Runs one test of the suite with `server`.
    fn run(&self, setup: &Setup, test: &str, server: Server) -> Run {
        let obj = self.obj();
        let (sshd, confopts) = match server {
            Server::Sshd => (PathBuf::from(SSHD_BIN), String::new()),
            Server::Resshd | Server::ResshdNoRefused => (
                setup.resshd.clone(),
                format!(
                    "PrivilegeSeparationUser {}\nPrivilegeSeparationDirectory {}\n\
                     BrokerSocket {}\nResshdKexPath {}\nResshdSessionPath {}",
                    setup.privsep_user.name,
                    setup.privsep.join("empty").display(),
                    setup
                        .privsep
                        .join(format!("broker{}.sock", self.id))
                        .display(),
                    setup.resshd.with_file_name("resshd-kex").display(),
                    setup.resshd.with_file_name("resshd-session").display(),
                ),
            ),
        };
        // As the suite's Makefile runs a test (stdin /dev/zero as in Debian's
        // run-tests), under a time limit.
        // Without what resshd refuses: also a copy of the test without the
        // lines that name a refused algorithm (dhgex names 3des-cbc itself).
        let (script_name, ssh, path) = match server {
            Server::ResshdNoRefused => {
                let rsa_keys = REFUSED_ONLY.iter().any(|(t, _, rsa)| *t == test && *rsa);
                let (keys, sigs) = left_out(rsa_keys);
                let text = fs::read_to_string(obj.join(format!("{test}.sh"))).unwrap();
                let kept: String = text
                    .lines()
                    .filter(|l| !l.split_whitespace().any(|w| sigs.iter().any(|a| a == w)))
                    .map(|l| format!("{l}\n"))
                    .collect();
                let name = format!("{test}-without-refused");
                fs::write(obj.join(format!("{name}.sh")), kept).unwrap();
                let bin = self.without_refused_ssh(&keys, &sigs);
                let path = format!("{}:{PATH}", bin.display());
                (name, bin.join("ssh"), path)
            }
            _ => (test.to_string(), PathBuf::from("ssh"), PATH.to_string()),
        };
        let script = format!(
            "exec timeout -k 10 {} sh \"$1/test-exec.sh\" \"$1\" \"$1/$2.sh\" </dev/zero",
            TEST_LIMIT.as_secs()
        );
        let mut cmd = Command::new(require_cmd("runuser"));
        cmd.args(["-u", &setup.user.name, "--", "sh", "-c", &script, "sh"])
            .arg(&obj)
            .arg(&script_name)
            .current_dir(&obj)
            .env_clear()
            .env("PATH", path)
            .env("HOME", &setup.user.home)
            .env("SUDO", "sudo")
            .env("TEST_SHELL", "sh")
            .env("OBJ", &obj)
            .env("BUILDDIR", &obj)
            .env("TEST_SSH_SSH", ssh)
            .env("TEST_SSH_SSHD", &sshd)
            .env("TEST_SSH_SSHD_CONFOPTS", confopts)
            .env("TEST_SSH_SSHAGENT", self.dir.join("ssh-agent"))
            .env("TEST_SSH_SFTPSERVER", "/usr/lib/openssh/sftp-server")
            .env("TEST_SSH_UNSAFE_PERMISSIONS", "1")
            .env("TEST_SSH_IPV6", "yes")
            .env("TEST_SSH_ECC", "yes");
        self.ns.in_ns(&mut cmd);
        let started = Instant::now();
        let out = run_timeout(&mut cmd, TEST_LIMIT + Duration::from_secs(60));
        let secs = started.elapsed().as_secs_f64();
        let left = self.ns.kill_all();

        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let read = |name: &str| {
            let path = obj.join(name);
            let text = fs::read(&path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let _ = fs::remove_file(&path);
            text
        };
        let failed_regress = read("failed-regress.log");
        let failed_sshd = read("failed-sshd.log");
        read("failed-ssh.log");

        let skipped = output.lines().find(|l| is_skip(l));
        let outcome = match (out.status.code(), skipped) {
            (Some(124 | 137), _) => Outcome::TimedOut,
            (Some(0), None) => Outcome::Pass,
            (Some(0), Some(line)) => Outcome::Skipped(printable(line)),
            _ => Outcome::Fail(
                failed_regress
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("FATAL: ")
                            .or_else(|| l.strip_prefix("FAIL: "))
                    })
                    .or_else(|| output.lines().last())
                    .map_or_else(|| "no output".to_string(), printable),
            ),
        };
        let log = if outcome.passed() {
            String::new()
        } else {
            format!(
                "--- {test} with {}: output ({}) ---\n{}\n--- failed-sshd.log (end) ---\n{}\n\
                 --- left running, killed: {left:?} ---",
                server.name(),
                out.status,
                tail(&output, 30),
                tail(&failed_sshd, 60)
            )
        };
        Run { outcome, secs, log }
    }
}

/// Whether a line of a test's output says it skipped itself or a part of itself: the
/// suite's `skip` ("SKIPPED: ..."), the tests' own "skipped (...)", "Skipped: ...",
/// "skipping: ..." and sftp-glob's "(skipped: ...)". Not a test's own description
/// that merely contains the word (scp's "skipped file after scp -p ...").
fn is_skip(line: &str) -> bool {
    let line = line.trim().to_ascii_lowercase();
    line.starts_with("skipped") || line.starts_with("skipping") || line.contains("(skipped:")
}

/// One line of what a test printed, for the table: at most 160 characters, anything
/// but printable ASCII (a server's binary KEXINIT, say) shown as `?`.
fn printable(line: &str) -> String {
    clean(line.trim(), 160)
}

/// `line`'s first `max` characters, anything but printable ASCII shown as `?`.
fn clean(line: &str, max: usize) -> String {
    line.chars()
        .take(max)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// The last `n` lines of `s`, each cut to 300 characters of printable ASCII.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<String> = s.lines().map(|l| clean(l, 300)).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The tests to run: all of [`TESTS`], or those named in `REGRESS_TESTS`
/// (comma-separated), to look at a few alone.
fn selected() -> Vec<&'static str> {
    let Ok(only) = std::env::var("REGRESS_TESTS") else {
        return TESTS.to_vec();
    };
    let only: Vec<&str> = only.split(',').map(str::trim).collect();
    for t in &only {
        assert!(TESTS.contains(t), "REGRESS_TESTS: {t} is not one of TESTS");
    }
    TESTS.iter().copied().filter(|t| only.contains(t)).collect()
}

/// Each of `tests` with both servers, [`WORKERS`] at a time (fewer for fewer
/// jobs), slow ones first.
fn run_all(setup: &Setup, tests: &[&'static str]) -> BTreeMap<(&'static str, Server), Run> {
    let mut order: Vec<&'static str> = SLOW_FIRST
        .iter()
        .copied()
        .filter(|t| tests.contains(t))
        .collect();
    order.extend(tests.iter().filter(|t| !SLOW_FIRST.contains(t)));
    // Popped from the end.
    let jobs: Vec<(&'static str, Server)> = order
        .iter()
        .flat_map(|t| {
            let mut v = vec![(*t, Server::Sshd), (*t, Server::Resshd)];
            if REFUSED_ONLY.iter().any(|(r, _, _)| r == t) {
                v.push((*t, Server::ResshdNoRefused));
            }
            v
        })
        .rev()
        .collect();
    let workers = WORKERS.min(jobs.len());
    let jobs = Mutex::new(jobs);
    let results = Mutex::new(BTreeMap::new());
    thread::scope(|scope| {
        for id in 0..workers {
            let (jobs, results) = (&jobs, &results);
            scope.spawn(move || {
                let worker = Worker::new(id, setup);
                loop {
                    let Some((test, server)) = jobs.lock().unwrap().pop() else {
                        break;
                    };
                    let run = worker.run(setup, test, server);
                    println!(
                        "regress: {test:<20} {:<6} {:>6.1}s {}",
                        server.name(),
                        run.secs,
                        run.outcome.describe()
                    );
                    results.lock().unwrap().insert((test, server), run);
                }
            });
        }
    });
    results.into_inner().unwrap()
}

#[test]
fn openssh_regress_suite() {
    require_root();
    require_netns();
    for prog in ["sudo", "visudo", "runuser", "timeout", "ssh", "ssh-agent"] {
        require_cmd(prog);
    }
    assert!(
        Path::new(SUITE).join("test-exec.sh").exists(),
        "{SUITE} is missing: apt-get install openssh-tests"
    );
    // The lists name tests of the list, once each.
    let mut listed: Vec<&str> = RESSHD_FAILS.iter().map(|(t, _, _)| *t).collect();
    listed.extend(REFUSED_ONLY.iter().map(|(t, _, _)| *t));
    listed.extend(SSHD_FAILS.iter().map(|(t, _)| *t));
    for list in [&listed, &SLOW_FIRST.to_vec()] {
        for (i, t) in list.iter().enumerate() {
            assert!(TESTS.contains(t), "{t} is listed but is not one of TESTS");
            assert!(!list[..i].contains(t), "{t} is listed twice");
        }
    }

    // REFUSED is what Debian's ssh offers and resshd lacks, no more, no less.
    let mut lacking = Vec::new();
    for (q, ours) in [
        (
            "cipher",
            ressh_proto::cipher::CIPHERS
                .iter()
                .map(|c| c.name)
                .collect::<Vec<_>>(),
        ),
        (
            "mac",
            ressh_proto::cipher::MACS.iter().map(|m| m.name).collect(),
        ),
        ("kex", ressh_proto::kex::KEX_SUPPORTED.to_vec()),
        (
            "key-plain",
            ressh_proto::keys::KeyType::ALL
                .iter()
                .map(|t| t.name())
                .collect(),
        ),
    ] {
        let out = run_ok(Command::new("ssh").args(["-Q", q]));
        let theirs = String::from_utf8_lossy(&out.stdout).into_owned();
        lacking.extend(
            theirs
                .lines()
                .filter(|a| !ours.contains(a))
                .map(str::to_string),
        );
    }
    assert_eq!(
        lacking, REFUSED,
        "REFUSED must be what ssh -Q lists and resshd lacks"
    );
    // REFUSED_SIGNATURES: the signature algorithms (plain, and the
    // certificate lines of key-sig) resshd lacks beyond those.
    let mut lacking = Vec::new();
    for (q, ours) in [
        (
            "sig",
            ressh_proto::keys::KeyType::user_signature_algorithms(),
        ),
        ("key-sig", ressh_proto::cert::all_signature_algorithms()),
    ] {
        let out = run_ok(Command::new("ssh").args(["-Q", q]));
        let theirs = String::from_utf8_lossy(&out.stdout).into_owned();
        lacking.extend(
            theirs
                .lines()
                .filter(|a| q == "sig" || a.contains("-cert-v01@"))
                .filter(|a| !ours.contains(a) && !REFUSED.contains(a))
                .map(str::to_string),
        );
    }
    assert_eq!(
        lacking, REFUSED_SIGNATURES,
        "REFUSED_SIGNATURES must be what ssh -Q sig/key-sig list and resshd lacks"
    );

    let tests = selected();
    let setup = Setup::new();
    let started = Instant::now();
    let results = run_all(&setup, &tests);
    let wall = started.elapsed();

    let mut table = String::new();
    let mut problems = Vec::new();
    let (mut sshd_ok, mut resshd_ok) = (0, 0);
    for test in &tests {
        let sshd = &results[&(*test, Server::Sshd)];
        let resshd = &results[&(*test, Server::Resshd)];
        sshd_ok += usize::from(sshd.outcome.passed());
        resshd_ok += usize::from(resshd.outcome.passed());
        writeln!(
            table,
            "| {test} | {} | {} | {:.0} | {:.0} |",
            sshd.outcome.describe(),
            resshd.outcome.describe(),
            sshd.secs,
            resshd.secs
        )
        .unwrap();
        match (
            sshd.outcome.passed(),
            SSHD_FAILS.iter().find(|(t, _)| t == test),
        ) {
            (false, None) => problems.push(format!(
                "Debian's sshd fails {test}: {}\n{}",
                sshd.outcome.describe(),
                sshd.log
            )),
            (true, Some((_, why))) => problems.push(format!(
                "{test} passes with Debian's sshd now: remove it from SSHD_FAILS ({why})"
            )),
            (false, Some(_)) => continue,
            (true, None) => {}
        }
        if let Some((_, what, _)) = REFUSED_ONLY.iter().find(|(t, _, _)| t == test) {
            let without = &results[&(*test, Server::ResshdNoRefused)];
            writeln!(
                table,
                "| {test} without what resshd refuses | | {} | | {:.0} |",
                without.outcome.describe(),
                without.secs
            )
            .unwrap();
            resshd_ok += usize::from(without.outcome.passed());
            if !without.outcome.passed() {
                problems.push(format!(
                    "{test} ({what}) fails with resshd even without the algorithms it refuses: {}\n{}",
                    without.outcome.describe(),
                    without.log
                ));
            }
            if resshd.outcome.passed() {
                problems.push(format!(
                    "{test} passes with resshd and every algorithm: remove it from REFUSED_ONLY"
                ));
            }
            continue;
        }
        match (
            resshd.outcome.passed(),
            RESSHD_FAILS.iter().find(|(t, _, _)| t == test),
        ) {
            (false, None) => problems.push(format!(
                "{test} passes with sshd and fails with resshd: {}\n{}",
                resshd.outcome.describe(),
                resshd.log
            )),
            (true, Some((_, issue, why))) => problems.push(format!(
                "{test} passes with resshd now: remove it from RESSHD_FAILS \
                 (issue {issue}: {why})"
            )),
            _ => {}
        }
    }
    println!(
        "| test | sshd | resshd | sshd s | resshd s |\n|---|---|---|---|---|\n{table}\
         regress: of {} tests, Debian's sshd passes {sshd_ok}, resshd {resshd_ok}; \
         runs side by side took {:.0} s",
        tests.len(),
        wall.as_secs_f64()
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
}
