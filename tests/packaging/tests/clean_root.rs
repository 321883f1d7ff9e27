//! The `ressh` .deb, built from this build's binaries, installed into a
//! fresh Debian root and run from the installed files, as the unit runs it.
//!
//! One test, in steps (each timed on stderr):
//! 1. `cargo deb --no-build` packages target/<profile>/ (stripped, fast
//!    compression); lintian checks it meanwhile.
//! 2. `debootstrap --variant=minbase` makes a root of the host's Debian
//!    release from the host's configured Debian mirror, in the test's
//!    temp dir (nothing is cached elsewhere).
//! 3. `apt-get install ./ressh.deb` in the root (the dependencies come from
//!    the mirror), then `dpkg -i` again (postinst must be re-runnable).
//!    The installed unit passes `systemd-analyze verify`.
//! 4. The unit's ExecStartPre= and ExecStart= lines, read from the installed
//!    unit, run in the root (chroot) inside fresh network, mount and pid
//!    namespaces, with a `$NOTIFY_SOCKET` and `$JOURNAL_STREAM` as systemd
//!    would give: resshd-keygen makes the host keys on this first start,
//!    resshd listens on port 22 of the namespace's loopback, reports
//!    READY=1, and logs with journald priority prefixes.
//! 5. The host's stock /usr/bin/ssh logs in (entering the namespace's
//!    network) as a user made inside the root, with a key.
//! 6. A session is opened. A broken drop-in makes the unit's reload fail
//!    at `resshd -t`, changing nothing. A Banner is added with a drop-in;
//!    the unit's ExecReload= lines run: RELOADING=1 (with MONOTONIC_USEC)
//!    then READY=1, from the same pid. A new login shows the banner; the
//!    old session still works and never saw it.
//! 7. SIGTERM: STOPPING=1.
//! 8. restls@demo.service from the installed template, run the same way
//!    (as a dynamic uid in the group restls, the root read-only) in front
//!    of redis in a network namespace lab: READY=1; redis-cli through a
//!    restls client loses nothing while the tunnel's TCP connections are
//!    killed again and again and the unit is reloaded with a new
//!    certificate (a mismatched key fails the reload at `--check`); new
//!    connections see the new certificate; SIGTERM: STOPPING=1 (see
//!    `restls_service`).
//! 9. `apt-get purge`: the privsep user, the host keys, /etc/ressh and the
//!    group restls are gone; the admin's /etc/restls/demo.conf stays.
//!
//! Cleanup: everything lives in the temp dir and in namespaces whose pid 1
//! is resshd: killing it (or `unshare --kill-child` when the test dies)
//! ends every process in them, and mounts exist only inside them.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ressh_testkit::{
    debootstrap, host_suite_and_mirror, require_cmd, require_root, run_timeout, ssh_keygen, Net,
    TempDir, SYSTEM_PATH,
};

const STEP_TIMEOUT: Duration = Duration::from_secs(300);
const SSH_TIMEOUT: Duration = Duration::from_secs(60);
const USER: &str = "alice";
const BANNER: &str = "ressh packaging test: reloaded banner";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn ok(what: &str, out: Output) -> Output {
    assert!(out.status.success(), "{what} failed\n{}", describe(&out));
    out
}

struct Timer(Instant);

impl Timer {
    fn step(&mut self, what: &str) {
        eprintln!(
            "clean_root: {what}: {:.1} s",
            self.0.elapsed().as_secs_f64()
        );
        self.0 = Instant::now();
    }
}

/// $PATH with cargo's own directory first (cargo-deb runs `cargo`) and
/// the system directories last.
fn tool_path() -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(cargo) = std::env::var_os("CARGO") {
        if let Some(d) = Path::new(&cargo).parent() {
            dirs.push(d.to_path_buf());
        }
    }
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    dirs.extend(std::env::split_paths(SYSTEM_PATH));
    std::env::join_paths(dirs).unwrap()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// target/<profile>/ of this build, from the test executable's path
/// (target/<profile>/deps/clean_root-...), and cargo-deb's name for it.
fn profile() -> (PathBuf, &'static str) {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let name = match dir.file_name().and_then(|n| n.to_str()) {
        Some("release") => "release",
        _ => "dev",
    };
    (dir, name)
}

/// `sh -c script` inside fresh mount and pid namespaces (mounts die with
/// them), with the root's /proc mounted; `script` then typically
/// `exec chroot "$ROOT" ...`.
fn in_namespaces(root: &Path, net: bool, script: &str) -> Command {
    let mut c = Command::new(require_cmd("unshare"));
    c.args([
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "--propagation",
        "private",
    ]);
    if net {
        c.arg("--net");
    }
    c.args(["sh", "-ec"])
        .arg(format!("mount -t proc proc \"$ROOT/proc\"\n{script}"))
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .env("LC_ALL", "C")
        .env("ROOT", root);
    c
}

/// `systemd-analyze verify` passes `unit` (named `name`), with its commands'
/// paths taken in the root (and its man pages from the root).
fn verify_unit(root: &Path, dir: &Path, name: &str, unit: &str) {
    fs::create_dir_all(dir).unwrap();
    let rooted: String = unit
        .lines()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if k.starts_with("Exec") && v.starts_with('/') => {
                format!("{k}={}{v}\n", root.display())
            }
            _ => format!("{l}\n"),
        })
        .collect();
    fs::write(dir.join(name), rooted).unwrap();
    let verify = run_timeout(
        Command::new(require_cmd("systemd-analyze"))
            .arg("verify")
            .arg(dir.join(name))
            .env("MANPATH", root.join("usr/share/man")),
        STEP_TIMEOUT,
    );
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify {name}:\n{}",
        describe(&verify)
    );
}

/// `script` run by the root's /bin/sh in the root, as apt would run things.
fn in_root(root: &Path, script: &str) -> Output {
    let quoted = script.replace('\'', "'\\''");
    run_timeout(
        in_namespaces(
            root,
            false,
            &format!(
                "exec chroot \"$ROOT\" env DEBIAN_FRONTEND=noninteractive /bin/sh -ec '{quoted}'"
            ),
        )
        .current_dir("/"),
        STEP_TIMEOUT,
    )
}

/// The `Key=value` settings of a unit file, repeated keys kept in order.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// A datagram socket in the root standing in for systemd's notify socket;
/// every message comes with the sender's pid (SO_PASSCRED).
struct Notify {
    sock: UnixDatagram,
    path_in_root: String,
}

impl Notify {
    /// `/run/NAME` in the root, writable by every user (as systemd's).
    fn bind(root: &Path, name: &str) -> Notify {
        use nix::sys::socket::{setsockopt, sockopt::PassCred};
        let rel = format!("run/{name}");
        let sock = UnixDatagram::bind(root.join(&rel)).unwrap();
        fs::set_permissions(root.join(&rel), fs::Permissions::from_mode(0o666)).unwrap();
        setsockopt(&sock, PassCred, &true).unwrap();
        Notify {
            sock,
            path_in_root: format!("/{rel}"),
        }
    }

    /// The next message and its sender's pid (as seen from the host).
    fn recv(&self, timeout: Duration, context: &dyn Fn() -> String) -> (String, i32) {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
        use std::os::fd::AsRawFd;
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!(libc::ucred);
        let msg = recvmsg::<UnixAddr>(
            self.sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .unwrap_or_else(|e| {
            panic!(
                "no sd_notify message within {timeout:?}: {e}\n{}",
                context()
            )
        });
        let mut pid = 0;
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmCredentials(cred) = c {
                pid = cred.pid();
            }
        }
        let n = msg.bytes;
        (text(&buf[..n]), pid)
    }
}

/// The host's stock ssh, inside the network namespace of `pid`.
fn ssh(ns_pid: u32, key: &Path, known_hosts: &Path) -> Command {
    let mut c = Command::new(require_cmd("nsenter"));
    c.arg(format!("--net=/proc/{ns_pid}/ns/net"))
        .arg("--")
        .arg("/usr/bin/ssh")
        .args(["-F", "/dev/null", "-i"])
        .arg(key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "HostKeyAlgorithms=ssh-ed25519",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=20",
            "-o",
            "ServerAliveInterval=0",
            "-p",
            "22",
        ])
        .arg(format!("{USER}@127.0.0.1"));
    c
}

/// resshd started the unit's way; killed (and with it its namespaces)
/// on drop.
struct Daemon {
    unshare: Child,
    log: PathBuf,
}

impl Daemon {
    /// The pid of the namespace's pid 1 (ExecStartPre's shell, then resshd
    /// by exec), as the host sees it.
    fn pid(&self) -> u32 {
        let id = self.unshare.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let children =
                fs::read_to_string(format!("/proc/{id}/task/{id}/children")).unwrap_or_default();
            if let Some(p) = children.split_whitespace().next() {
                return p.parse().unwrap();
            }
            assert!(Instant::now() < deadline, "unshare made no child");
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// A session opened with stock ssh that echoes what it is sent.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Session {
    fn open(mut cmd: Command) -> Session {
        cmd.arg("echo started; while read l; do echo \"got $l\"; done; echo done")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start ssh");
        let stdin = child.stdin.take();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Session {
            child,
            stdin,
            lines,
        }
    }

    fn expect(&mut self, want: &str, context: &dyn Fn() -> String) {
        match self.lines.recv_timeout(SSH_TIMEOUT) {
            Ok(l) if l == want => {}
            Ok(l) => panic!("session said {l:?}, expected {want:?}\n{}", context()),
            Err(e) => panic!("session: no {want:?} ({e})\n{}", context()),
        }
    }

    fn send(&mut self, line: &str) {
        let s = self.stdin.as_mut().unwrap();
        s.write_all(format!("{line}\n").as_bytes()).unwrap();
        s.flush().unwrap();
    }

    /// Closes stdin, waits for the end: stderr and exit status.
    fn finish(mut self, context: &dyn Fn() -> String) -> (String, std::process::ExitStatus) {
        drop(self.stdin.take());
        self.expect("done", context);
        let deadline = Instant::now() + SSH_TIMEOUT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "ssh did not exit\n{}", context());
            thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        (err, status)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn deb_installs_into_a_clean_root_and_serves_stock_ssh() {
    require_root();
    for c in [
        "cargo-deb",
        "debootstrap",
        "lintian",
        "unshare",
        "nsenter",
        "chroot",
        "ip",
        "ssh-keygen",
        "systemd-analyze",
        "openssl",
        "redis-server",
        "redis-cli",
    ] {
        require_cmd(c);
    }
    ressh_testkit::require_netns();
    assert!(
        Path::new("/usr/bin/ssh").exists(),
        "/usr/bin/ssh is missing"
    );
    let mut t = Timer(Instant::now());
    let tmp = TempDir::new("pkg");
    let ws = workspace();

    // 1. The .deb of this build's binaries; lintian in the background.
    let (target, profile) = profile();
    for b in ["resshd", "resshd-kex", "resshd-session", "ressh", "restls"] {
        assert!(
            target.join(b).exists(),
            "{} is missing: build the workspace first",
            target.join(b).display()
        );
    }
    let debs = tmp.join("debs");
    fs::create_dir(&debs).unwrap();
    ok(
        "cargo deb",
        run_timeout(
            Command::new(require_cmd("cargo-deb"))
                .current_dir(&ws)
                .env("PATH", tool_path())
                .args([
                    "deb",
                    "-p",
                    "ressh-daemon",
                    "--no-build",
                    "--profile",
                    profile,
                ])
                .args(["--no-dbgsym", "--strip", "--fast", "--quiet", "-o"])
                .arg(&debs),
            STEP_TIMEOUT,
        ),
    );
    let deb = fs::read_dir(&debs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("cargo deb made no .deb");
    t.step("cargo deb");
    let lintian = {
        let deb = deb.clone();
        thread::spawn(move || {
            run_timeout(
                Command::new(require_cmd("lintian"))
                    .args(["--fail-on", "error,warning"])
                    .arg(deb),
                STEP_TIMEOUT,
            )
        })
    };

    // 2. A clean root.
    let root = tmp.join("root");
    let (suite, mirror) = host_suite_and_mirror();
    ok("debootstrap", debootstrap(&suite, &root, &mirror, &[]));
    t.step(&format!("debootstrap {suite} minbase"));

    // 3. Install, twice.
    fs::copy(&deb, root.join("tmp/ressh.deb")).unwrap();
    ok(
        "apt-get install ./ressh.deb",
        in_root(
            &root,
            "apt-get install -y --no-install-recommends /tmp/ressh.deb",
        ),
    );
    ok("dpkg -i (again)", in_root(&root, "dpkg -i /tmp/ressh.deb"));
    t.step("install");
    let lint = lintian.join().unwrap();
    assert!(
        lint.status.success(),
        "lintian --fail-on error,warning:\n{}",
        describe(&lint)
    );

    for f in [
        "usr/sbin/resshd",
        "usr/bin/ressh",
        "usr/share/man/man1/ressh.1.gz",
        "usr/libexec/ressh/resshd-kex",
        "usr/libexec/ressh/resshd-session",
        "usr/libexec/ressh/resshd-keygen",
        "etc/ressh/resshd_config",
        "usr/share/man/man8/resshd.8.gz",
        "usr/share/man/man5/resshd_config.5.gz",
        "usr/share/doc/ressh/copyright",
        "usr/share/doc/ressh/changelog.Debian.gz",
        "usr/share/doc/ressh/fleet.md",
    ] {
        assert!(root.join(f).exists(), "/{f} is not installed");
    }
    // The installed client runs in the root (its libraries are there).
    let v = ok("ressh -V", in_root(&root, "ressh -V"));
    assert!(text(&v.stderr).starts_with("ressh "), "{}", describe(&v));
    let conffiles = fs::read_to_string(root.join("var/lib/dpkg/info/ressh.conffiles")).unwrap();
    assert!(
        conffiles.lines().any(|l| l == "/etc/ressh/resshd_config"),
        "not a conffile: {conffiles}"
    );
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    let privsep = passwd
        .lines()
        .find(|l| l.starts_with("resshd:"))
        .unwrap_or_else(|| panic!("postinst made no resshd user:\n{passwd}"));
    assert!(
        privsep.ends_with(":/nonexistent:/usr/sbin/nologin"),
        "{privsep}"
    );
    let keys = |root: &Path| -> Vec<String> {
        fs::read_dir(root.join("etc/ressh"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("ssh_host_"))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        keys(&root).is_empty(),
        "host keys exist before the first start"
    );

    // The installed unit, with its commands' paths taken in the root (and
    // its man pages from the root), passes systemd-analyze verify.
    let unit_path = ["usr/lib/systemd/system", "lib/systemd/system"]
        .iter()
        .map(|d| root.join(d).join("resshd.service"))
        .find(|p| p.exists())
        .expect("resshd.service is not installed");
    let unit = fs::read_to_string(&unit_path).unwrap();
    verify_unit(&root, &tmp.join("verify"), "resshd.service", &unit);

    // A user of the root, with a key.
    let (key, key_pub) = ssh_keygen(tmp.path(), "ed25519", "");
    fs::write(root.join("tmp/key.pub"), format!("{key_pub}\n")).unwrap();
    ok(
        "useradd",
        in_root(
            &root,
            &format!(
                "useradd -m -s /bin/sh {USER}\n\
                 install -d -m 0700 -o {USER} -g {USER} /home/{USER}/.ssh\n\
                 install -m 0600 -o {USER} -g {USER} /tmp/key.pub /home/{USER}/.ssh/authorized_keys"
            ),
        ),
    );
    t.step("checks, verify, user");

    // 4. Start it as the unit does.
    assert_eq!(unit_values(&unit, "Type"), ["notify"]);
    assert_eq!(unit_values(&unit, "RuntimeDirectory"), ["resshd"]);
    let pre = unit_values(&unit, "ExecStartPre");
    let start = unit_values(&unit, "ExecStart");
    assert_eq!(start.len(), 1, "{start:?}");
    let notify = Notify::bind(&root, "ressh-test-notify.sock");
    let log_path = tmp.join("journal.log");
    let log = fs::File::create(&log_path).unwrap();
    let md = log.metadata().unwrap();
    let journal_stream = format!("{}:{}", md.dev(), md.ino());
    let mut steps = pre.join(" && ");
    if !steps.is_empty() {
        steps.push_str(" && ");
    }
    steps.push_str(&format!("exec {}", start[0]));
    let script = format!(
        "ip link set lo up\n\
         install -d -m {mode} \"$ROOT/run/resshd\"\n\
         exec chroot \"$ROOT\" /bin/sh -ec '{steps}'",
        mode = unit_values(&unit, "RuntimeDirectoryMode")
            .first()
            .cloned()
            .unwrap_or_else(|| "0755".into()),
    );
    let mut cmd = in_namespaces(&root, true, &script);
    cmd.current_dir("/")
        .env("NOTIFY_SOCKET", &notify.path_in_root)
        .env("JOURNAL_STREAM", &journal_stream)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let daemon = Daemon {
        unshare: cmd.spawn().expect("start resshd"),
        log: log_path,
    };
    let pid = daemon.pid();
    let ctx = || format!("--- resshd's journal ---\n{}", daemon.log());
    let (msg, from) = notify.recv(Duration::from_secs(120), &ctx);
    assert!(
        msg.lines().any(|l| l == "READY=1"),
        "first message: {msg:?}\n{}",
        ctx()
    );
    assert_eq!(from as u32, pid, "READY=1 not from the main pid\n{}", ctx());
    t.step("first start (keygen, -t, READY=1)");

    let mut made = keys(&root);
    made.sort();
    assert_eq!(
        made,
        [
            "ssh_host_ecdsa_key",
            "ssh_host_ecdsa_key.pub",
            "ssh_host_ed25519_key",
            "ssh_host_ed25519_key.pub",
            "ssh_host_rsa_key",
            "ssh_host_rsa_key.pub"
        ],
        "{}",
        ctx()
    );
    for k in ["rsa", "ecdsa", "ed25519"] {
        let mode = fs::metadata(root.join(format!("etc/ressh/ssh_host_{k}_key")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{k} host key mode {mode:o}");
    }
    // journald lines: resshd's own carry a priority prefix, one per event.
    let journal = daemon.log();
    assert!(
        journal
            .lines()
            .any(|l| l.starts_with("<6>resshd[") && l.contains("Server listening on")),
        "no <6>-prefixed listening line\n{}",
        ctx()
    );

    // 5. Stock ssh logs in.
    let host_pub = fs::read_to_string(root.join("etc/ressh/ssh_host_ed25519_key.pub")).unwrap();
    let known_hosts = tmp.join("known_hosts");
    fs::write(&known_hosts, format!("127.0.0.1 {}", host_pub.trim())).unwrap();
    let out = run_timeout(
        ssh(pid, &key, &known_hosts).arg("id -un; cat /etc/debian_version"),
        SSH_TIMEOUT,
    );
    // The session runs in the root: its /etc/debian_version, not the host's.
    let root_version = fs::read_to_string(root.join("etc/debian_version")).unwrap();
    assert!(
        out.status.success() && text(&out.stdout) == format!("{USER}\n{root_version}"),
        "login:\n{}\n{}",
        describe(&out),
        ctx()
    );
    assert!(!text(&out.stderr).contains(BANNER));
    t.step("login");

    // 6. Reload with a Banner added; a session opened before lives on.
    let mut old = Session::open(ssh(pid, &key, &known_hosts));
    old.expect("started", &ctx);
    fs::write(root.join("etc/ressh/banner"), format!("{BANNER}\n")).unwrap();
    fs::write(
        root.join("etc/ressh/resshd_config.d/banner.conf"),
        "Banner /etc/ressh/banner\n",
    )
    .unwrap();
    let reload = unit_values(&unit, "ExecReload");
    assert!(!reload.is_empty());
    // systemctl reload: the ExecReload= lines in order, up to the first
    // that fails (which fails the reload).
    let systemctl_reload = || -> Result<(), (String, Output)> {
        for line in &reload {
            let line = line.replace("$MAINPID", &pid.to_string());
            let out = if line.contains("resshd") {
                // Checks run inside the daemon's namespaces and root.
                run_timeout(
                    Command::new(require_cmd("nsenter"))
                        .arg(format!("--target={pid}"))
                        .args(["--mount", "--net", "--pid", "--", "chroot"])
                        .arg(&root)
                        .args(["/bin/sh", "-ec", &line]),
                    SSH_TIMEOUT,
                )
            } else {
                run_timeout(Command::new("/bin/sh").args(["-ec", &line]), SSH_TIMEOUT)
            };
            if !out.status.success() {
                return Err((line, out));
            }
        }
        Ok(())
    };
    // A broken drop-in fails the reload and leaves resshd as it was.
    let broken = root.join("etc/ressh/resshd_config.d/broken.conf");
    fs::write(&broken, "NoSuchKeyword yes\n").unwrap();
    match systemctl_reload() {
        Err((line, out)) => assert!(
            line == reload[0] && text(&out.stderr).contains("NoSuchKeyword"),
            "{line}: {}",
            describe(&out)
        ),
        Ok(()) => panic!("a reload with a broken configuration succeeded\n{}", ctx()),
    }
    fs::remove_file(&broken).unwrap();
    old.send("still");
    old.expect("got still", &ctx);
    if let Err((line, out)) = systemctl_reload() {
        panic!("ExecReload={line} failed\n{}\n{}", describe(&out), ctx());
    }
    let (msg, from) = notify.recv(Duration::from_secs(30), &ctx);
    assert!(
        msg.lines().any(|l| l == "RELOADING=1"),
        "after SIGHUP: {msg:?}\n{}",
        ctx()
    );
    let usec: u64 = msg
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {msg:?}"));
    let now = {
        let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
        ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1000
    };
    assert!(
        usec <= now && now - usec < 60_000_000,
        "MONOTONIC_USEC={usec}, now {now}"
    );
    assert_eq!(from as u32, pid, "RELOADING=1 not from the main pid");
    let (msg, from) = notify.recv(Duration::from_secs(60), &ctx);
    assert!(
        msg.lines().any(|l| l == "READY=1"),
        "after the re-exec: {msg:?}\n{}",
        ctx()
    );
    assert_eq!(from as u32, pid, "the re-exec'd resshd has another pid");
    t.step("reload");

    let out = run_timeout(ssh(pid, &key, &known_hosts).arg("echo new"), SSH_TIMEOUT);
    assert!(
        out.status.success() && text(&out.stdout) == "new\n",
        "login after reload:\n{}\n{}",
        describe(&out),
        ctx()
    );
    assert!(
        text(&out.stderr).contains(BANNER),
        "the reloaded Banner is not shown to a new connection:\n{}\n{}",
        describe(&out),
        ctx()
    );
    old.send("ping");
    old.expect("got ping", &ctx);
    let (err, status) = old.finish(&ctx);
    assert!(status.success(), "old session: {status}\n{err}\n{}", ctx());
    assert!(!err.contains(BANNER), "the old session saw the new banner");

    // 7. Stop, then purge.
    ok(
        "kill -TERM",
        run_timeout(
            Command::new("/bin/kill").args(["-TERM", &pid.to_string()]),
            SSH_TIMEOUT,
        ),
    );
    let (msg, from) = notify.recv(Duration::from_secs(30), &ctx);
    assert!(
        msg.lines().any(|l| l == "STOPPING=1") && from as u32 == pid,
        "after SIGTERM: {msg:?} from {from}\n{}",
        ctx()
    );
    let mut daemon = daemon;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = daemon.unshare.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "resshd did not exit on SIGTERM\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "resshd exited with {status}\n{}",
        daemon.log()
    );
    t.step("stop");

    restls_service(&root, tmp.path(), &target, &mut t);

    ok("apt-get purge", in_root(&root, "apt-get purge -y ressh"));
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        !passwd.lines().any(|l| l.starts_with("resshd:")),
        "purge left the resshd user"
    );
    let group = fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(
        !group.lines().any(|l| l.starts_with("resshd:")),
        "purge left the resshd group"
    );
    // The test's banner and drop-in are the admin's files: dpkg keeps them,
    // and so /etc/ressh; nothing of the package's own may remain.
    assert!(keys(&root).is_empty(), "purge left host keys");
    assert!(!root.join("etc/ressh/resshd_config").exists());
    assert!(
        !group.lines().any(|l| l.starts_with("restls:")),
        "purge left the restls group"
    );
    // restls@demo's configuration and keys are the admin's: kept.
    assert!(root.join("etc/restls/demo.conf").exists());
    t.step("purge");
}

/// A uid of systemd's DynamicUser= range (61184-65519), in no passwd file.
const DYNAMIC_UID: u32 = 61_200;
/// The name in the test certificates.
const TLS_NAME: &str = "restls-demo";
/// Commands redis-cli sends through the tunnel while it is cut.
const INCRS: usize = 20_000;

/// A self-signed certificate and key for [`TLS_NAME`] in `dir`, `tag.crt`
/// and `tag.key`.
fn tls_cert(dir: &Path, tag: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (
        dir.join(format!("{tag}.crt")),
        dir.join(format!("{tag}.key")),
    );
    ok(
        "openssl req",
        run_timeout(
            Command::new(require_cmd("openssl"))
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
                .args(["-subj", &format!("/CN={TLS_NAME}")])
                .args(["-addext", &format!("subjectAltName=DNS:{TLS_NAME}")])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&crt),
            STEP_TIMEOUT,
        ),
    );
    (crt, key)
}

/// Installs `crt` and `key` as /etc/restls/demo.{crt,key} of the root, the
/// key `root:restls` 0640 as restls.conf(5) says.
fn install_pair(root: &Path, gid: u32, crt: &Path, key: &Path) {
    let (c, k) = (
        root.join("etc/restls/demo.crt"),
        root.join("etc/restls/demo.key"),
    );
    fs::copy(crt, &c).unwrap();
    fs::set_permissions(&c, fs::Permissions::from_mode(0o644)).unwrap();
    fs::copy(key, &k).unwrap();
    std::os::unix::fs::chown(&k, Some(0), Some(gid)).unwrap();
    fs::set_permissions(&k, fs::Permissions::from_mode(0o640)).unwrap();
}

/// Waits for "restls: listening on" in the log at `path`.
fn wait_listening_log(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fs::read_to_string(path)
        .unwrap_or_default()
        .contains("restls: listening on")
    {
        assert!(
            Instant::now() < deadline,
            "restls did not start:\n{}",
            fs::read_to_string(path).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// restls@demo.service, from the installed template, run as systemd would
/// run it (no systemd here): its ExecStart= in the root (chroot), made
/// read-only as by ProtectSystem=strict, as a uid of the DynamicUser= range
/// with the unit's SupplementaryGroups= only (restls), no capabilities and
/// no_new_privs, in the server namespace of a [`Net`] lab, with a
/// `$NOTIFY_SOCKET`. In front of a redis server (the host's redis-server,
/// in the same namespace); a restls client (this build's) in the client
/// namespace. Checks READY=1 from the main pid; redis-cli through the
/// tunnel before; a long redis-cli stream of INCRs while the tunnel's TCP
/// connections are killed (`ss -K`) again and again and the service is
/// reloaded (the unit's ExecReload= lines: a mismatched key fails at
/// `--check`; a new pair gives RELOADING=1 then READY=1): every reply
/// arrives, in order, none lost or repeated; afterwards the values are
/// there, a new connection is shown the new certificate; SIGTERM gives
/// STOPPING=1 and exit 0.
fn restls_service(root: &Path, tmp: &Path, target: &Path, t: &mut Timer) {
    for f in [
        "usr/bin/restls",
        "usr/share/man/man1/restls.1.gz",
        "usr/share/man/man5/restls.conf.5.gz",
        "usr/share/doc/ressh/examples/restls.conf",
    ] {
        assert!(root.join(f).exists(), "/{f} is not installed");
    }
    let group = fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(
        group.lines().any(|l| l.starts_with("restls:")),
        "postinst made no group restls:\n{group}"
    );
    assert!(root.join("etc/restls").is_dir(), "no /etc/restls");
    let template = ["usr/lib/systemd/system", "lib/systemd/system"]
        .iter()
        .map(|d| root.join(d).join("restls@.service"))
        .find(|p| p.exists())
        .expect("restls@.service is not installed");
    let unit = fs::read_to_string(template).unwrap().replace("%i", "demo");
    verify_unit(root, &tmp.join("verify"), "restls@demo.service", &unit);
    assert_eq!(unit_values(&unit, "Type"), ["notify"]);
    assert_eq!(unit_values(&unit, "DynamicUser"), ["yes"]);
    assert_eq!(unit_values(&unit, "ProtectSystem"), ["strict"]);
    // The unit's supplementary groups, as gids of the root.
    let gid_of = |name: &str| -> u32 {
        group
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:x:")))
            .and_then(|r| r.split(':').next())
            .and_then(|g| g.parse().ok())
            .unwrap_or_else(|| panic!("no group {name} in the root:\n{group}"))
    };
    let groups: Vec<String> = unit_values(&unit, "SupplementaryGroups")
        .iter()
        .flat_map(|v| {
            v.split_whitespace()
                .map(|g| gid_of(g).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let groups = if groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        format!("--groups={}", groups.join(","))
    };
    let start = unit_values(&unit, "ExecStart");
    assert_eq!(start.len(), 1, "{start:?}");
    let reload = unit_values(&unit, "ExecReload");
    assert_eq!(reload.len(), 2, "{reload:?}");
    let as_unit_user = format!(
        "setpriv --reuid={DYNAMIC_UID} --regid={DYNAMIC_UID} {groups} \
         --inh-caps=-all --no-new-privs --"
    );

    let certs = tmp.join("restls-certs");
    fs::create_dir(&certs).unwrap();
    let (old_crt, old_key) = tls_cert(&certs, "old");
    let (new_crt, new_key) = tls_cert(&certs, "new");
    let ca = certs.join("ca.pem");
    fs::write(
        &ca,
        [fs::read(&old_crt).unwrap(), fs::read(&new_crt).unwrap()].concat(),
    )
    .unwrap();
    let gid = gid_of("restls");
    install_pair(root, gid, &old_crt, &old_key);
    fs::write(
        root.join("etc/restls/demo.conf"),
        "# restls@demo.service\nmode server\nlisten 0.0.0.0:6380\n\
         forward 127.0.0.1:6379\ncert /etc/restls/demo.crt\nkey /etc/restls/demo.key\n",
    )
    .unwrap();

    let net = Net::new("pkgtls");
    let redis_dir = tmp.join("redis");
    fs::create_dir(&redis_dir).unwrap();
    let mut redis = net
        .cmd_server(require_cmd("redis-server"))
        .args(["--port", "6379", "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(&redis_dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server");
    let redis_cli = require_cmd("redis-cli");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = run_timeout(
            net.cmd_server(&redis_cli).args(["-p", "6379", "PING"]),
            SSH_TIMEOUT,
        );
        if text(&out.stdout) == "PONG\n" {
            break;
        }
        assert!(Instant::now() < deadline, "redis-server did not start");
        thread::sleep(Duration::from_millis(50));
    }

    // The service, as the unit starts it.
    let notify = Notify::bind(root, "restls-test-notify.sock");
    let log_path = tmp.join("restls-journal.log");
    let log = fs::File::create(&log_path).unwrap();
    let script = format!(
        "mount --bind \"$ROOT\" \"$ROOT\"\n\
         mount -o remount,bind,ro \"$ROOT\"\n\
         mount -t proc proc \"$ROOT/proc\"\n\
         exec chroot \"$ROOT\" {as_unit_user} {}",
        start[0]
    );
    let mut cmd = in_namespaces(root, false, &script);
    net.in_server(&mut cmd)
        .current_dir("/")
        .env("NOTIFY_SOCKET", &notify.path_in_root)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut daemon = Daemon {
        unshare: cmd.spawn().expect("start restls@demo"),
        log: log_path,
    };
    let pid = daemon.pid();
    let journal = daemon.log.clone();
    let ctx = || {
        format!(
            "--- restls@demo's journal ---\n{}",
            fs::read_to_string(&journal).unwrap_or_default()
        )
    };
    let (msg, from) = notify.recv(Duration::from_secs(60), &ctx);
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}\n{}", ctx());
    assert_eq!(from as u32, pid, "READY=1 not from the main pid\n{}", ctx());
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == DYNAMIC_UID.to_string()),
        "{uid_line}"
    );
    t.step("restls@demo: start (READY=1)");

    // The tunnel's client end, and redis-cli through it.
    let client_log = tmp.join("restls-client.log");
    let _client = Daemon {
        unshare: net
            .cmd_client(target.join("restls"))
            .args(["client", "--listen", "127.0.0.1:6379"])
            .args(["--connect", &format!("{}:6380", net.server_addr())])
            .arg("--ca")
            .arg(&ca)
            .args([
                "--servername",
                TLS_NAME,
                "--keepalive",
                "2",
                "--give-up",
                "120",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&client_log).unwrap())
            .spawn()
            .expect("restls client"),
        log: client_log.clone(),
    };
    wait_listening_log(&client_log);
    let both = || {
        format!(
            "{}\n--- client ---\n{}",
            ctx(),
            fs::read_to_string(&client_log).unwrap_or_default()
        )
    };
    let redis_cmd = |args: &[&str]| -> String {
        let out = run_timeout(
            net.cmd_client(&redis_cli)
                .args(["-h", "127.0.0.1", "-p", "6379"])
                .args(args),
            SSH_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "redis-cli {args:?}: {}\n{}",
            describe(&out),
            both()
        );
        text(&out.stdout)
    };
    assert_eq!(redis_cmd(&["SET", "restls:before", "hello"]), "OK\n");

    // A long stream of INCRs through cuts and a reload.
    let mut stream = net
        .cmd_client(&redis_cli)
        .args(["-h", "127.0.0.1", "-p", "6379"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli");
    let mut stdin = stream.stdin.take().unwrap();
    let feeder = thread::spawn(move || {
        for _ in 0..INCRS / 500 {
            for _ in 0..500 {
                stdin.write_all(b"INCR restls:counter\n").unwrap();
            }
            thread::sleep(Duration::from_millis(40));
        }
    });
    let mut out = stream.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).unwrap();
        s
    });
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (cuts, replies) = thread::scope(|sc| {
        let cutter = sc.spawn(|| {
            let mut cuts = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(300));
                cuts += net.try_kill_tcp(6380);
            }
            cuts
        });
        thread::sleep(Duration::from_millis(700));
        // systemctl reload: the ExecReload= lines in order, as the unit's
        // user, up to the first that fails.
        let systemctl_reload = || -> Result<(), (String, Output)> {
            for line in &reload {
                let line = line.replace("$MAINPID", &pid.to_string());
                let out = if line.starts_with("/usr/bin/restls") {
                    run_timeout(
                        in_namespaces(
                            root,
                            false,
                            &format!("exec chroot \"$ROOT\" {as_unit_user} {line}"),
                        )
                        .current_dir("/"),
                        SSH_TIMEOUT,
                    )
                } else {
                    run_timeout(Command::new("/bin/sh").args(["-ec", &line]), SSH_TIMEOUT)
                };
                if !out.status.success() {
                    return Err((line, out));
                }
            }
            Ok(())
        };
        // The new certificate with the old key: the reload fails at --check.
        install_pair(root, gid, &new_crt, &old_key);
        match systemctl_reload() {
            Err((line, out)) => assert!(
                line == reload[0] && text(&out.stderr).contains("certificate or key"),
                "{line}: {}",
                describe(&out)
            ),
            Ok(()) => panic!("a reload with a mismatched key succeeded\n{}", both()),
        }
        install_pair(root, gid, &new_crt, &new_key);
        if let Err((line, out)) = systemctl_reload() {
            panic!("ExecReload={line} failed\n{}\n{}", describe(&out), both());
        }
        let (msg, from) = notify.recv(Duration::from_secs(30), &ctx);
        assert!(
            msg.lines().any(|l| l == "RELOADING=1"),
            "{msg:?}\n{}",
            both()
        );
        assert_eq!(from as u32, pid);
        let (msg, from) = notify.recv(Duration::from_secs(30), &ctx);
        assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}\n{}", both());
        assert_eq!(from as u32, pid);
        feeder.join().unwrap();
        let replies = reader.join().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (cutter.join().unwrap(), replies)
    });
    let status = stream.wait().unwrap();
    let want: Vec<String> = (1..=INCRS).map(|i| i.to_string()).collect();
    let got: Vec<&str> = replies.lines().collect();
    assert!(
        status.success() && got == want,
        "redis-cli: {status}, {} replies, last {:?}\n{}",
        got.len(),
        got.last(),
        both()
    );
    assert!(
        cuts >= 2,
        "only {cuts} cuts: the stream was too short to test"
    );
    assert!(
        ctx().contains("reconnect"),
        "the service saw no reconnect\n{}",
        both()
    );
    assert_eq!(redis_cmd(&["GET", "restls:before"]), "hello\n");
    assert_eq!(redis_cmd(&["GET", "restls:counter"]), format!("{INCRS}\n"));
    t.step(&format!(
        "restls@demo: redis through {cuts} cuts and a reload"
    ));

    // A new connection is shown the new certificate, not the old.
    let s_client = |ca: &Path| {
        run_timeout(
            net.cmd_client(require_cmd("openssl"))
                .args(["s_client", "-brief", "-verify_return_error"])
                .args(["-connect", &format!("{}:6380", net.server_addr())])
                .args(["-servername", TLS_NAME, "-CAfile"])
                .arg(ca)
                .stdin(Stdio::null()),
            SSH_TIMEOUT,
        )
    };
    let out = s_client(&new_crt);
    assert!(
        out.status.success(),
        "new certificate: {}\n{}",
        describe(&out),
        both()
    );
    let out = s_client(&old_crt);
    assert!(
        !out.status.success(),
        "the old certificate is still served\n{}",
        both()
    );

    ok(
        "kill -TERM",
        run_timeout(
            Command::new("/bin/kill").args(["-TERM", &pid.to_string()]),
            SSH_TIMEOUT,
        ),
    );
    let (msg, from) = notify.recv(Duration::from_secs(30), &ctx);
    assert!(
        msg.lines().any(|l| l == "STOPPING=1") && from as u32 == pid,
        "after SIGTERM: {msg:?} from {from}\n{}",
        ctx()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = daemon.unshare.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "restls did not exit on SIGTERM\n{}",
            ctx()
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "restls exited with {status}\n{}", ctx());
    let _ = redis.kill();
    let _ = redis.wait();
    t.step("restls@demo: stop");
}
