//! A logged-in user against resshd's privilege separation (issue 13): the
//! user owns their `resshd-session` (same uid) and plays every trick a shell
//! allows against it and against the root processes around it.
//!
//! - `a_user_cannot_take_over_their_session_worker`: as the user, copying
//!   the worker's monitor link with pidfd_getfd(2), attaching with ptrace(2)
//!   and opening /proc/PID/mem all fail (the worker is not dumpable: it is
//!   exec'd as root and becomes the user itself), so the user cannot ask the
//!   monitor for host-key signatures in its name.
//! - `a_traced_session_worker_refuses_to_run`: a resshd-session started under
//!   a tracer exits at once, before it reads anything from its monitor.
//! - `a_stopped_session_worker_does_not_wedge_resshd`: the user SIGSTOPs
//!   their worker and floods resshd with reconnect requests naming its token,
//!   each with a KEXINIT as large as resshd decodes (37 KB); resshd keeps
//!   answering new connections (a banner within 2 s, a stock ssh login of
//!   another user) throughout, and the session resumes after SIGCONT. The
//!   flood lasts 45 s (`RESSH_WEDGE_SECS` makes it longer: the resshd of
//!   issue 13, whose monitor and broker wrote with blocking sends, stopped
//!   answering after 169 s of it).
//! - `a_second_resshd_does_not_take_the_broker_socket`: a rescue resshd on
//!   another port with the same BrokerSocket refuses to start, says why, and
//!   the first one's sessions keep reconnecting.
//! - `a_lying_session_worker_is_not_believed`: the user took over their
//!   worker (played by `src/bin/hostile-session.rs`, installed as
//!   resshd-session of a copy of resshd; other users get the real worker).
//!   Its lies, each in a stock ssh login: a reconnect it was not handed
//!   (no "Reconnected" logged), login records for a tty or a pid not the
//!   user's (none in wtmp), the resume token of another user's live session
//!   (the broker drops the claim; that session still reconnects and the
//!   liar is asked nothing), a host-key signature over 100 bytes, a second
//!   one without a key exchange, a reconnect verdict unasked and a 2000-byte
//!   log line forging a root login. The last four end the worker and its
//!   connection, no signature or forged line gets through, and resshd logs
//!   why.
//! - `a_session_worker_flooding_host_key_proofs_is_cut_off`: the taken-over
//!   worker asks the monitor for host key proofs: of a blob that is no
//!   host key (refused), then of the real key a thousand times; the
//!   monitor answers as many as its bound (`gate::MAX_PROOFS`) allows, each
//!   signature over OpenSSH's proof structure (session id and key) and
//!   never over the bytes the worker chose, then ends the worker. Proofs of
//!   17 keys at once, or of a blob over 16 KiB, end it at once, unanswered.
//!   After each, another user's stock ssh login works.
//! - `many_sessions_of_one_user_do_not_make_resshd_spin`: the listener holds
//!   one descriptor per live session (its link to that session's monitor),
//!   so one user's sessions can use up its RLIMIT_NOFILE. The test lowers
//!   the running resshd's soft limit to 40 (prlimit(1); its children go back
//!   to the limits resshd started with)
//!   so that some 30 stock ssh logins of one user reach it, then connects
//!   once more: resshd must not turn each failing accept(2) into a log line
//!   in a busy loop (sshd pauses 100 ms after EMFILE/ENFILE).
#![allow(unsafe_code)] // fork and ptrace, the attacks this module makes as the user

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// One user's ressh session through a recording proxy to a loopback resshd.
struct Session {
    login: Login,
    proxy: Proxy,
    client: Client,
    _stop: std::path::PathBuf,
}

fn start_session(server: &Resshd, dir: &TempDir, tag: &str) -> Session {
    let target = SocketAddr::from(([127, 0, 0, 1], server.port()));
    let proxy = Proxy::start(target);
    let known_hosts = dir.join(format!("known_hosts-{tag}"));
    let login = Lab::make_login_to(
        dir,
        &known_hosts,
        tag,
        CLIENT_EXTRA,
        ("127.0.0.1", proxy.port),
    );
    fs::write(&known_hosts, known_hosts_at(server, proxy.port)).unwrap();
    let stop = dir.join(format!("stop-{tag}"));
    let client = Client::spawn(&mut ressh_here(
        &login.config,
        &["server", &counter_cmd(&stop, 1_000_000)],
    ));
    client.wait_lines(20, T);
    Session {
        login,
        proxy,
        client,
        _stop: stop,
    }
}

/// Cuts the session's connection and returns what ressh sent on the new
/// one (its reconnect), once resshd logged the reconnect.
fn cut_and_record(s: &Session, server: &Resshd) -> Vec<u8> {
    let before = s.proxy.accepted();
    let before_log = reconnects(&server.log());
    let t = Instant::now();
    s.proxy.cut();
    s.client.wait_err("reconnected to ", t, T);
    wait_reconnects(server, before_log + 1, Duration::from_secs(10));
    s.proxy.recorded(before)
}

fn the_worker(user: &TestUser) -> u32 {
    wait_for(
        "the user's resshd-session",
        Duration::from_secs(20),
        || {
            let w = worker_pids(user);
            (w.len() == 1).then(|| w[0])
        },
        String::new,
    )
}

#[test]
fn a_user_cannot_take_over_their_session_worker() {
    require_root();
    let server = Resshd::start(&ressh_bin().with_file_name("resshd"), "");
    let dir = TempDir::new("e2e-takeover");
    let s = start_session(&server, &dir, "tk");
    let worker = the_worker(&s.login.user);
    let (uid, gid) = (s.login.user.uid, s.login.user.gid);

    // As the user: every way into the worker's descriptors and memory.
    // SAFETY: the child calls only async-signal-safe functions (raw
    // syscalls and _exit) before it exits.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        // SAFETY: raw system calls with valid pointers, then _exit.
        unsafe {
            let groups = [gid];
            if libc::setgroups(1, groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                libc::_exit(100);
            }
            let mut got = 0;
            let pidfd = libc::syscall(libc::SYS_pidfd_open, worker as libc::c_long, 0);
            if pidfd < 0 {
                libc::_exit(101);
            }
            if libc::syscall(libc::SYS_pidfd_getfd, pidfd, 3 as libc::c_long, 0) >= 0 {
                got |= 1;
            }
            if libc::ptrace(libc::PTRACE_SEIZE, worker as libc::pid_t, 0, 0) == 0 {
                got |= 2;
            }
            let mut path = *b"/proc/0000000000/mem\0";
            let digits = {
                let mut d = [0u8; 10];
                let mut n = worker;
                for i in (0..10).rev() {
                    d[i] = b'0' + (n % 10) as u8;
                    n /= 10;
                }
                d
            };
            path[6..16].copy_from_slice(&digits);
            if libc::open(path.as_ptr() as *const libc::c_char, libc::O_RDONLY) >= 0 {
                got |= 4;
            }
            libc::_exit(got);
        }
    }
    let mut st = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(child, &mut st, 0) }, child);
    assert!(libc::WIFEXITED(st), "the user's probe died: {st}");
    let got = libc::WEXITSTATUS(st);
    assert!(got < 100, "the probe could not become the user: {got}");
    assert_eq!(
        got & 1,
        0,
        "the user copied the worker's monitor link with pidfd_getfd"
    );
    assert_eq!(got & 2, 0, "the user attached to the worker with ptrace");
    assert_eq!(got & 4, 0, "the user opened the worker's memory");
    // Non-dumpable: /proc/PID/status belongs to root, though the process
    // is the user's.
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(format!("/proc/{worker}/status")).unwrap();
    assert_eq!(
        meta.uid(),
        0,
        "/proc/{worker}/status of a non-dumpable worker"
    );
    let status = fs::read_to_string(format!("/proc/{worker}/status")).unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uids.split_whitespace()
            .skip(1)
            .all(|u| u == uid.to_string()),
        "the worker runs as the user: {uids}"
    );

    let seen = s.client.line_count();
    s.client.wait_lines(seen + 10, T);
}

#[test]
fn a_traced_session_worker_refuses_to_run() {
    require_root();
    let worker = ressh_bin().with_file_name("resshd-session");
    let mut cmd = Command::new(&worker);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: ptrace(TRACEME) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    // Reaped below with waitpid(2), as its tracer must.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut err = child.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    // Be its tracer: let it run, passing on its signals.
    let code = loop {
        let mut st = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
        if libc::WIFEXITED(st) {
            break libc::WEXITSTATUS(st);
        }
        if libc::WIFSIGNALED(st) {
            panic!("the worker died of signal {}", libc::WTERMSIG(st));
        }
        let sig = libc::WSTOPSIG(st);
        let pass = if sig == libc::SIGTRAP { 0 } else { sig };
        // SAFETY: continuing our stopped tracee.
        unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, pass as libc::c_long) };
    };
    let stderr = reader.join().unwrap();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("traced by process"), "{stderr}");
}

/// A cleartext KEXINIT payload like `kexinit`, as large as resshd's
/// decoder takes one (about 37 KB): every name-list but the key exchange
/// methods filled up to `MAX_NAMES` names of `MAX_NAME_LEN` bytes, the real
/// names first, so that it negotiates as `kexinit` does.
fn padded_kexinit(kexinit: &[u8]) -> Vec<u8> {
    use ressh_proto::msg::{MAX_NAMES, MAX_NAME_LEN};
    let mut p = kexinit[..17].to_vec();
    let mut at = 17;
    for list in 0..10 {
        let len = u32::from_be_bytes(kexinit[at..at + 4].try_into().unwrap()) as usize;
        let mut names = text(&kexinit[at + 4..at + 4 + len]);
        at += 4 + len;
        let mut n = names.split(',').filter(|s| !s.is_empty()).count();
        while list > 0 && n < MAX_NAMES {
            let tail = format!("-{list}-{n}@example.com");
            let pad = "x".repeat(MAX_NAME_LEN - tail.len());
            if !names.is_empty() {
                names.push(',');
            }
            names += &(pad + &tail);
            n += 1;
        }
        p.extend_from_slice(&(names.len() as u32).to_be_bytes());
        p.extend_from_slice(names.as_bytes());
    }
    p.extend_from_slice(&kexinit[at..]);
    p
}

/// Whether resshd sends its version line on a fresh connection within `t`.
fn banner_within(port: u16, t: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), t) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(t));
    let mut buf = [0u8; 8];
    matches!(s.read(&mut buf), Ok(n) if n >= 4 && buf.starts_with(b"SSH-"))
}

#[test]
fn a_stopped_session_worker_does_not_wedge_resshd() {
    require_root();
    let server = Resshd::start(
        &ressh_bin().with_file_name("resshd"),
        // The flood must not be dropped as a flood here: what is tested is
        // that nothing waits on the stopped worker.
        "DetachTimeout 300\nMaxStartups 1000\n",
    );
    let dir = TempDir::new("e2e-wedge");
    let s = start_session(&server, &dir, "wg");
    let other = Lab::make_login(&dir, &dir.join("kh-other"), "wo", "");
    let recorded = parse_clear(&cut_and_record(&s, &server));
    let kexinit = padded_kexinit(&recorded.payloads[0]);
    let mut attack = recorded.version.clone();
    attack.extend(clear_packet(&kexinit));
    attack.extend(clear_packet(&recorded.payloads[1]));
    let worker = the_worker(&s.login.user);

    // The user stops their own worker...
    ressh_testkit::run_ok(Command::new("runuser").args([
        "-u",
        &s.login.user.name,
        "--",
        "kill",
        "-STOP",
        &worker.to_string(),
    ]));

    // ...and floods resshd with its recorded reconnect request.
    let secs: u64 = std::env::var("RESSH_WEDGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(45);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let flooders: Vec<_> = (0..8)
        .map(|_| {
            let (stop, sent, attack) = (stop.clone(), sent.clone(), attack.clone());
            let port = server.port();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
                        thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    if c.write_all(&attack).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = read_until_closed(&mut c, Duration::from_secs(20));
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    let mut probes = 0;
    let mut worst = Duration::ZERO;
    while t0.elapsed() < Duration::from_secs(secs) {
        let t = Instant::now();
        let ok = banner_within(server.port(), Duration::from_secs(2));
        worst = worst.max(t.elapsed());
        probes += 1;
        assert!(
            ok,
            "no banner within 2 s after {:.0} s of the flood ({} requests sent)\n{}",
            t0.elapsed().as_secs_f64(),
            sent.load(Ordering::Relaxed),
            server.log()
        );
        if probes % 10 == 0 {
            // A real login of another user, with stock ssh.
            let mut ssh = Command::new("ssh");
            ssh.args(ssh_opts(&other, server.port()))
                .arg("true")
                .stdin(Stdio::null());
            let out = run_timeout(&mut ssh, Duration::from_secs(20));
            assert!(
                out.status.success(),
                "another user cannot log in during the flood: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                server.log()
            );
        }
        thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    // The flood was decoded and routed (each request refused in the end),
    // and reached the stopped worker: its monitor gave up waiting.
    let log = server.log();
    let sent = sent.load(Ordering::Relaxed);
    let refused = log
        .lines()
        .filter(|l| l.contains(": Reconnect from 127.0.0.1 port ") && l.contains(" refused: "))
        .count();
    assert!(
        !log.contains("too large") && refused >= sent / 2,
        "{refused} of {sent} requests refused as reconnects\n{log}"
    );
    assert!(
        log.contains("the session gave no reconnect verdict"),
        "the requests never reached the session\n{log}"
    );
    report(
        "a_stopped_session_worker_does_not_wedge_resshd",
        &format!(
            "{sent} reconnect requests of {} KB in {secs} s against a stopped worker \
             ({refused} refused when the flood stopped); {probes} probes, slowest banner {:.0} ms",
            attack.len() / 1000,
            worst.as_secs_f64() * 1000.0
        ),
    );
    let _ = Command::new("runuser")
        .args([
            "-u",
            &s.login.user.name,
            "--",
            "kill",
            "-CONT",
            &worker.to_string(),
        ])
        .status();
    for f in flooders {
        let _ = f.join();
    }
    // The session goes on.
    let seen = s.client.line_count();
    s.client.wait_lines(seen + 10, T);
}

/// Stock ssh options for `login` against 127.0.0.1:`port`.
fn ssh_opts(login: &Login, port: u16) -> Vec<String> {
    vec![
        "-F".into(),
        "none".into(),
        "-p".into(),
        port.to_string(),
        "-i".into(),
        login.key.display().to_string(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=no".into(),
        "-o".into(),
        "UserKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-l".into(),
        login.user.name.clone(),
        "127.0.0.1".into(),
    ]
}

#[test]
fn a_second_resshd_does_not_take_the_broker_socket() {
    require_root();
    let server = Resshd::start(&ressh_bin().with_file_name("resshd"), "DetachTimeout 300\n");
    let dir = TempDir::new("e2e-second");
    let s = start_session(&server, &dir, "sd");
    // A rescue instance on another port, same configuration.
    let port = free_port();
    let mut second = Command::new(ressh_bin().with_file_name("resshd"));
    second
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(server.server.config_path())
        .arg("-p")
        .arg(port.to_string())
        .stdin(Stdio::null());
    let out = run_timeout(&mut second, Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second resshd started: {err}");
    assert!(err.contains("belongs to a running resshd"), "{err}");
    // The first one's session still reconnects.
    cut_and_record(&s, &server);
    let seen = s.client.line_count();
    s.client.wait_lines(seen + 10, T);
}

/// resshd with its real binaries copied into `dir`, the session worker
/// replaced by the hostile one (`src/bin/hostile-session.rs`), which runs
/// the real worker for every uid its script does not name.
pub(crate) fn resshd_with_hostile_worker(dir: &TempDir) -> (Resshd, std::path::PathBuf) {
    let bin = dir.join("bin");
    fs::create_dir(&bin).unwrap();
    let built = ressh_bin();
    for (from, to) in [
        ("resshd", "resshd"),
        ("resshd-kex", "resshd-kex"),
        ("resshd-session", "resshd-session.real"),
    ] {
        fs::copy(built.with_file_name(from), bin.join(to)).unwrap();
    }
    fs::copy(
        env!("CARGO_BIN_EXE_hostile-session"),
        bin.join("resshd-session"),
    )
    .unwrap();
    let server = Resshd::start(&bin.join("resshd"), "DetachTimeout 300\n");
    (server, bin.join("hostile.script"))
}

/// One login of `who` with stock ssh whose session worker follows `plan`;
/// returns ssh and the hostile worker's pid, once it said it started.
fn hostile_login(
    server: &Resshd,
    script: &std::path::Path,
    who: &Login,
    plan: &str,
) -> (std::process::Child, u32) {
    fs::write(script, format!("{} {plan}\n", who.user.uid)).unwrap();
    let ssh = Command::new("ssh")
        .args(ssh_opts(who, server.port()))
        .arg("-N")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let said = format!(": hostile: {plan} pid ");
    let log = server.wait_log(&said, T, |l| l.contains(&said));
    let line = log.lines().find(|l| l.contains(&said)).unwrap();
    let pid = line.rsplit(' ').next().unwrap().parse().unwrap();
    (ssh, pid)
}

/// Waits until the hostile worker `pid` is dead and its client's
/// connection closed; returns resshd's log.
fn killed(server: &Resshd, mut ssh: std::process::Child, pid: u32) -> String {
    wait_for(
        "the hostile worker to be killed",
        Duration::from_secs(20),
        || (!alive(pid)).then_some(()),
        || server.log(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while ssh.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "ssh still connected");
        thread::sleep(Duration::from_millis(100));
    }
    server.log()
}

/// Asserts that the monitor logged `why` as its reason to end a worker.
fn ended_for(log: &str, why: &str) {
    assert!(log.contains(&format!("session worker: {why}")), "{log}");
}

#[test]
fn a_lying_session_worker_is_not_believed() {
    require_root();
    let dir = TempDir::new("e2e-liar");
    let (server, script) = resshd_with_hostile_worker(&dir);
    // Another user's real session (ressh, the real worker), to be robbed.
    let victim = start_session(&server, &dir, "lv");
    let liar = Lab::make_login(&dir, &dir.join("kh-liar"), "ll", "");
    let name = &liar.user.name;
    let no = |log: &str, what: &str| {
        assert!(!log.contains(what), "{what:?} in the log\n{log}");
    };

    // Attached without a hand-over; login records for a tty that is not
    // the user's (root's pty, with the worker's own pid) and for the
    // worker's own pty with a pid that is not the user's (init).
    let root_pty = nix::pty::posix_openpt(nix::fcntl::OFlag::O_RDWR).unwrap();
    nix::pty::grantpt(&root_pty).unwrap();
    let root_tty = nix::pty::ptsname_r(&root_pty).unwrap();
    let (ssh, pid) = hostile_login(&server, &script, &liar, &format!("lies {root_tty}"));
    let log = server.wait_log("the lies", T, |l| l.contains(": hostile: told its lies"));
    // Neither the broker nor the log hears of a reconnect.
    no(&log, &format!("Reconnected: user {name}"));
    let wtmp = Command::new("utmpdump")
        .arg("/var/log/wtmp")
        .output()
        .unwrap();
    assert!(wtmp.status.success());
    let wtmp = String::from_utf8_lossy(&wtmp.stdout);
    assert!(
        !wtmp.contains(name.as_str()),
        "wtmp records the liar:\n{}",
        wtmp.lines()
            .filter(|l| l.contains(name.as_str()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        log.contains("the session worker claims a reconnect it was not given"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "refused a login record for {root_tty} (pid {pid})"
        )),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("refused a login record for /dev/pts/") && l.ends_with("(pid 1)")),
        "{log}"
    );
    signal(pid, "KILL");
    let mut ssh = ssh;
    let _ = ssh.kill();
    let _ = ssh.wait();

    // Tokens: the victim's. Its client's next reconnect is swallowed, so
    // the token it names stays the session's; the liar claims it.
    victim.proxy.blackhole.store(true, Ordering::Relaxed);
    victim.proxy.cut();
    let request = parse_clear(&swallowed_reconnect(&victim.proxy, || {
        victim.client.stderr()
    }))
    .payloads
    .swap_remove(1);
    let token: String = request[token_range(&request)]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (ssh, pid) = hostile_login(&server, &script, &liar, &format!("steal {token}"));
    server.wait_log("the claim", T, |l| {
        l.contains(": hostile: claimed the token")
    });
    // The monitor passed the claim on before it relayed that line; the
    // broker reads it within milliseconds.
    thread::sleep(Duration::from_secs(1));
    let before = reconnects(&server.log());
    victim.proxy.blackhole.store(false, Ordering::Relaxed);
    victim.proxy.cut();
    let seen = victim.client.line_count();
    victim.client.wait_lines(seen + 10, T);
    let log = wait_reconnects(&server, before + 1, T);
    no(&log, ": hostile: asked for a verdict");
    no(&log, ": hostile: was handed the transport");
    assert!(log.contains("claims a token of monitor"), "{log}");
    signal(pid, "KILL");
    let mut ssh = ssh;
    let _ = ssh.kill();
    let _ = ssh.wait();

    // A signature over 100 bytes: no exchange hash. None comes back.
    let (ssh, pid) = hostile_login(&server, &script, &liar, "sign 100");
    let log = killed(&server, ssh, pid);
    assert!(!worker_said(&log, pid, "hostile: signature"), "{log}");
    ended_for(&log, "signature asked over 100 bytes");
    // Two over 32 bytes without a key exchange between them: the first is
    // the one a rekey may have; the second is refused.
    let (ssh, pid) = hostile_login(&server, &script, &liar, "sign 32");
    let log = killed(&server, ssh, pid);
    assert!(
        worker_said(&log, pid, "hostile: signature 1 came back"),
        "{log}"
    );
    assert!(!worker_said(&log, pid, "hostile: signature 2"), "{log}");
    ended_for(&log, "a second host-key signature");
    // A reconnect verdict nobody asked for.
    let (ssh, pid) = hostile_login(&server, &script, &liar, "verdict");
    ended_for(
        &killed(&server, ssh, pid),
        "a reconnect verdict nobody asked for",
    );
    // A log line over the limit, forging a root login: not written.
    let (ssh, pid) = hostile_login(&server, &script, &liar, "log 2000");
    let log = killed(&server, ssh, pid);
    no(&log, "203.0.113.66");
    ended_for(&log, "a log line of 2000 bytes");

    // Through all of it the victim's session went on.
    let seen = victim.client.line_count();
    victim.client.wait_lines(seen + 10, T);
}

#[test]
fn a_session_worker_flooding_host_key_proofs_is_cut_off() {
    use ressh_monitor::gate::MAX_PROOFS;
    require_root();
    let dir = TempDir::new("e2e-proofs");
    let (server, script) = resshd_with_hostile_worker(&dir);
    let prover = Lab::make_login(&dir, &dir.join("kh-prover"), "hp", "");
    let other = Lab::make_login(&dir, &dir.join("kh-other"), "ho", "");
    let another_login_works = || {
        let started = Instant::now();
        let out = run_timeout(
            Command::new("ssh")
                .args(ssh_opts(&other, server.port()))
                .arg("echo still-here"),
            T,
        );
        assert!(
            text(&out.stdout).contains("still-here"),
            "another login failed after {:?}: {}\n{}",
            started.elapsed(),
            text(&out.stderr),
            server.log()
        );
    };

    let (ssh, pid) = hostile_login(&server, &script, &prover, "prove flood");
    let log = killed(&server, ssh, pid);
    assert!(
        worker_said(
            &log,
            pid,
            "hostile: proof 0 refused: not one of our host keys"
        ),
        "{log}"
    );
    // The refused request counts: MAX_PROOFS requests in all are answered.
    let signed = (1..)
        .take_while(|i| worker_said(&log, pid, &format!("hostile: proof {i} signs the proof")))
        .count();
    assert_eq!(signed, MAX_PROOFS as usize - 1, "{log}");
    assert!(!worker_said(&log, pid, "signs something else"), "{log}");
    assert!(
        !worker_said(&log, pid, &format!("hostile: proof {MAX_PROOFS} ")),
        "{log}"
    );
    ended_for(&log, "more host key proofs than a client asks for");
    another_login_works();

    for how in ["many", "large"] {
        let (ssh, pid) = hostile_login(&server, &script, &prover, &format!("prove {how}"));
        let log = killed(&server, ssh, pid);
        assert!(!worker_said(&log, pid, "hostile: proof 0"), "{how}: {log}");
        ended_for(&log, "more host key proofs than a client asks for");
        another_login_works();
    }
}

#[test]
fn many_sessions_of_one_user_do_not_make_resshd_spin() {
    require_root();
    const LIMIT: usize = 40;
    let server = Resshd::start(&ressh_bin().with_file_name("resshd"), "");
    let dir = TempDir::new("e2e-nofile");
    let login = Lab::make_login(&dir, &dir.join("kh"), "nf", "");
    let daemon = server.server.pid();
    let fds = || fs::read_dir(format!("/proc/{daemon}/fd")).unwrap().count();
    ressh_testkit::run_ok(Command::new("prlimit").args([
        "--pid",
        &daemon.to_string(),
        &format!("--nofile={LIMIT}:"),
    ]));

    // The user logs in again and again (ssh -N: a session, no command)
    // until resshd holds as many descriptors as it may.
    let mut sessions = Vec::new();
    while fds() < LIMIT {
        assert!(
            sessions.len() < LIMIT,
            "{} sessions, resshd holds {} fds",
            sessions.len(),
            fds()
        );
        let mut ssh = Command::new("ssh");
        ssh.args(ssh_opts(&login, server.port()))
            .arg("-N")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        sessions.push(ssh.spawn().unwrap());
        let n = sessions.len();
        wait_for(
            "the session's worker",
            Duration::from_secs(20),
            // (the last one may find resshd out of descriptors)
            || (worker_pids(&login.user).len() == n || fds() >= LIMIT).then_some(()),
            || server.log(),
        );
    }

    // Anyone connects now: accept(2) fails with EMFILE while the
    // connection waits in the backlog.
    let before = count(&server.log(), "accept: ");
    let _waiting = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    thread::sleep(Duration::from_secs(3));
    let errors = count(&server.log(), "accept: ") - before;
    for mut s in sessions {
        let _ = s.kill();
        let _ = s.wait();
    }
    assert!(
        errors <= 60,
        "resshd logged {errors} failed accepts in 3 s with {LIMIT} descriptors in use \
         (a busy loop; sshd waits 100 ms after EMFILE)"
    );
}
