//! Issue 13, hole 11: a client that vanishes without FIN or RST (a laptop
//! that never comes back, a blackholed path) is found out under resshd's
//! default configuration (no ClientAliveInterval).
//!
//! 1. ressh, which announces its keepalive interval K in RESILIENCE_INFO
//!    (`ServerAliveInterval 4` here, docs/PROTOCOL.md §4): the path is
//!    blackholed and ressh SIGKILLed, so it never comes back. resshd hears
//!    nothing for 3 K = 12 s and detaches the session (it does not end
//!    it), and `DetachTimeout 3` later the session worker, the user's shell
//!    and its programs are gone. Printed: blackhole -> "Detached", and
//!    "Detached" -> all processes gone.
//! 2. Stock OpenSSH `ssh` (no resilience): TCPKeepAlive (default yes) puts
//!    SO_KEEPALIVE on resshd's socket, which `ss -o` in the server namespace
//!    shows as `timer:(keepalive,...)`. With the server namespace's kernel
//!    keepalive timers shortened (2 s idle, 1 s between probes, 2 probes;
//!    the Linux defaults add up to about 2 h 11 min), the blackholed,
//!    killed client's session ends as with sshd: read error, no detach, all
//!    processes gone. Printed: blackhole -> session ended. With
//!    `TCPKeepAlive no` the socket has no keepalive timer.

use std::fs;
use std::time::{Duration, Instant};

use crate::common::*;

/// The keepalive interval ressh announces in test 1.
const K: u64 = 4;

/// resshd's connections in the server namespace, with their timers
/// (`ss -tnoH`, established, local port 22).
fn server_sockets(lab: &Lab) -> String {
    let out = run_timeout(
        lab.net.cmd_server(require_cmd("ss")).args([
            "-tnoH",
            "state",
            "established",
            "( sport = :22 )",
        ]),
        T,
    );
    assert!(out.status.success(), "ss: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Starts `cmd` (remote command `sleep 1000 & echo started; sleep 1001`)
/// and returns it once the remote command runs, with the user's processes
/// (session worker, shell, the two sleeps).
fn idle_session(lab: &Lab, cmd: &mut std::process::Command) -> (Client, Vec<u32>) {
    let client = Client::spawn(cmd);
    client.wait_line("started", T);
    let procs = lab.user().processes();
    assert!(
        procs.len() >= 3,
        "expected the worker, its shell and two sleeps: {procs:?}"
    );
    (client, procs)
}

/// Blackholes the path and SIGKILLs the client: it never comes back and
/// nothing reaches resshd. Returns when the path went dark.
fn vanish(lab: &Lab, client: &mut Client) -> Instant {
    let at = Instant::now();
    lab.net.blackhole(true);
    signal(client.pid(), "KILL");
    client.wait_exit(T);
    at
}

/// Waits until none of `procs` and no process of the user is left.
fn all_gone(lab: &Lab, procs: &[u32], timeout: Duration) -> Instant {
    let gone = wait_for(
        "the session's processes to end",
        timeout,
        || {
            (lab.user().processes().is_empty() && procs.iter().all(|p| !alive(*p)))
                .then(Instant::now)
        },
        || {
            format!(
                "still running: {:?}\n--- resshd log ---\n{}",
                lab.user().processes(),
                lab.log()
            )
        },
    );
    for p in procs {
        assert!(!alive(*p), "process {p} of the session survived");
    }
    gone
}

const REMOTE: &str = "sleep 1000 & echo started; sleep 1001; echo never";

#[test]
fn vanished_ressh_client_detaches_by_its_keepalive_then_times_out() {
    // resshd's defaults but for a short DetachTimeout: no ClientAlive.
    let lab = Lab::new("vanish", "DetachTimeout 3\n");
    let user = lab.user().name.clone();
    let config = lab.dir.join("ssh_config-k");
    write_client_config(
        &config,
        &user,
        &lab.login.key,
        &lab.known_hosts,
        "198.18.0.1",
        PORT,
        &format!("ServerAliveInterval {K}\nLogLevel VERBOSE\n"),
    );
    let (mut client, procs) =
        idle_session(&lab, &mut ressh_cmd(&lab.net, &config, &["server", REMOTE]));
    // Idle for a few keepalive rounds first: they keep it attached.
    std::thread::sleep(Duration::from_millis(2 * K * 1000 + 1500));
    assert!(!lab.log().contains("Detached"), "{}", lab.log());
    let dark = vanish(&lab, &mut client);
    let log = lab.wait_log(
        "resshd to detach the session of the vanished client",
        Duration::from_secs(3 * K + 20),
        |l| l.contains("Detached: user "),
    );
    let detached = Instant::now();
    let noticed = detached.duration_since(dark);
    assert!(
        log.contains("Timeout, nothing from 198.18.1.2 port ")
            && log.contains(&format!("(keepalive interval {K} s)")),
        "{log}"
    );
    assert!(
        log.contains(&format!("Detached: user {user} from 198.18.1.2")),
        "{log}"
    );
    let gone = all_gone(&lab, &procs, Duration::from_secs(20));
    // The worker's "Detach timeout" (relayed by its monitor), then the
    // monitor's own "Disconnected", written after it has reaped the worker:
    // possibly after the processes are gone.
    let log = lab.wait_log(
        "the monitor to log the end of the session",
        Duration::from_secs(10),
        |l| {
            l.contains("Detach timeout: user ")
                && l.contains(&format!("Disconnected from user {user}"))
        },
    );
    let torn = gone.duration_since(detached);
    let silence = log
        .lines()
        .find(|l| l.contains("Timeout, nothing from"))
        .unwrap_or_default()
        .to_string();
    report(
        "vanished client",
        &format!(
            "ressh (keepalive {K} s, announced), blackholed and killed: detached {:.2} s after the \
             path went dark (deadline 3 x {K} s after the last packet heard); all processes gone \
             {:.2} s after the detach (DetachTimeout 3); resshd: {}",
            noticed.as_secs_f64(),
            torn.as_secs_f64(),
            silence.split(": ").last().unwrap_or_default()
        ),
    );
    // The last packet came at most K (plus a round trip) before the path
    // went dark, the deadline is 3 K after it.
    assert!(
        noticed >= Duration::from_secs(2 * K - 1) && noticed <= Duration::from_secs(3 * K + 2),
        "detached {noticed:?} after the blackhole; keepalive interval {K} s\n{log}"
    );
    assert!(
        torn >= Duration::from_millis(2500) && torn <= Duration::from_secs(6),
        "torn down {torn:?} after the detach; DetachTimeout is 3 s\n{log}"
    );
    assert!(!log.contains("Reconnected"), "{log}");
    lab.net.blackhole(false);
}

#[test]
fn vanished_openssh_client_is_dropped_by_tcp_keepalive() {
    let lab = Lab::new("vanssh", "");
    let user = lab.user().name.clone();
    let ssh = require_cmd("ssh");
    // The kernel's keepalive timers of the server namespace only (they are
    // per network namespace): 2 s idle, then 2 probes 1 s apart.
    lab.net.enter_server(|| {
        for (name, v) in [
            ("tcp_keepalive_time", "2"),
            ("tcp_keepalive_intvl", "1"),
            ("tcp_keepalive_probes", "2"),
        ] {
            fs::write(format!("/proc/sys/net/ipv4/{name}"), v).unwrap();
        }
    });
    let mut cmd = lab.net.cmd_client(&ssh);
    // The lab's client config asks for ServerAliveInterval 1 (for ressh);
    // stock ssh would then give up by itself, which does not matter here.
    // A pty (-tt): when a session ends, resshd hangs up its processes as
    // sshd does; commands without a pty outlive it, with sshd too.
    cmd.arg("-F").arg(&lab.login.config).args([
        "-tt",
        "-o",
        "ServerAliveInterval=0",
        "server",
        REMOTE,
    ]);
    let (mut client, procs) = idle_session(&lab, &mut cmd);
    // ss shows one timer: the retransmission timer while data is in
    // flight, the keepalive timer once the connection is idle.
    let socks = wait_for(
        "a keepalive timer on resshd's idle socket (TCPKeepAlive yes is the default)",
        Duration::from_secs(5),
        || Some(server_sockets(&lab)).filter(|s| s.contains("timer:(keepalive,")),
        || server_sockets(&lab),
    );
    let dark = vanish(&lab, &mut client);
    let log = lab.wait_log(
        "resshd to end the session of the vanished ssh client",
        Duration::from_secs(30),
        |l| l.contains(&format!("Disconnected from user {user}")),
    );
    let ended = Instant::now();
    all_gone(&lab, &procs, Duration::from_secs(10));
    assert!(
        log.contains("Read error from remote host 198.18.1.2 port ")
            && log.contains("Connection timed out"),
        "{log}"
    );
    assert!(!log.contains("Detached"), "{log}");
    report(
        "vanished client",
        &format!(
            "stock ssh (no resilience), blackholed and killed: session ended {:.2} s after the \
             path went dark (server netns keepalive 2 s + 2 x 1 s); ss: {}",
            ended.duration_since(dark).as_secs_f64(),
            socks.split_whitespace().last().unwrap_or("")
        ),
    );
    lab.net.blackhole(false);

    // TCPKeepAlive no: the socket is left without the option.
    let lab = Lab::new("vanssh_no", "TCPKeepAlive no\n");
    let mut cmd = lab.net.cmd_client(&ssh);
    cmd.arg("-F")
        .arg(&lab.login.config)
        .args(["-o", "ServerAliveInterval=0", "server", REMOTE]);
    let (mut client, _) = idle_session(&lab, &mut cmd);
    // Idle for as long as the keepalive timer took to show above.
    std::thread::sleep(Duration::from_secs(2));
    let socks = server_sockets(&lab);
    assert!(
        !socks.trim().is_empty() && !socks.contains("keepalive"),
        "TCPKeepAlive no, yet:\n{socks}"
    );
    signal(client.pid(), "KILL");
    client.wait_exit(T);
}
