//! Issue 19: channel windows that grow with the bandwidth-delay product.
//!
//! resshd in the server namespace, reached through a delay relay (testkit's
//! [`DelayRelay`]: 100 ms each way, a 20 MB/s bottleneck, so a round trip of
//! 200 ms and a bandwidth-delay product of 4 MB, twice the initial 2 MiB
//! window; a debug build keeps up with 20 MB/s even on a busy machine, so the
//! window, not the CPU, is what holds the transfer back). Through it, 32 MiB
//! of random data go both ways with ressh
//! (`cat` on the server), and up with Debian's stock `ssh` into resshd. Each
//! transfer must arrive intact, and the receiving side must say its channel
//! receive window grew past 2 MiB: ressh on stderr (`-v`), resshd-session in
//! resshd's log (`channel receive window grew to N bytes`). Not timed.
//!
//! The second test roams: a download starts on a short path, the connection
//! is cut, and the reconnect takes the long one; ressh's window must grow
//! after it (the round trip is measured again on the new path).
//!
//! Printed: each transfer's time and the largest window the receiver logged.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use ressh_testkit::DelayRelay;

use crate::common::*;
use crate::suspect_kit::default_config;

const SIZE: usize = 32 << 20;
const ONE_WAY: Duration = Duration::from_millis(100);
const RATE: u64 = 20_000_000;
const INITIAL: u64 = 2 << 20;
const T: Duration = Duration::from_secs(240);
/// The short path's rate: well above what a debug build moves.
const SHORT_RATE: u64 = 1_000_000_000;
const LINE: &str = "channel receive window grew to ";
/// The monitor's line once a session has ended, after all of its worker's lines.
const ENDED: &str = "Disconnected from user ";

/// The largest window in `log`'s "channel receive window grew to N bytes"
/// lines (0 without one).
fn grown(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.split(LINE).nth(1))
        .filter_map(|r| r.split(' ').next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// Runs `cmd` with stdin from `input` and stdout into `output`; returns how
/// long it took and its stderr.
fn transfer(
    cmd: &mut Command,
    input: &std::path::Path,
    output: &std::path::Path,
) -> (Duration, String) {
    let (i, o) = (
        fs::File::open(input).unwrap(),
        fs::File::create(output).unwrap(),
    );
    let started = Instant::now();
    let out = run_files(cmd, i, o, T);
    let took = started.elapsed();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{cmd:?}: {}\n{err}", out.status);
    (took, err)
}

/// A lab whose client reaches resshd through a delay relay (`one_way`,
/// `rate`) in the server namespace: the lab, the relay, an ssh_config
/// pointing at it, and [`SIZE`] random bytes in the user's home to
/// download.
fn relay_lab(
    tag: &str,
    server: &str,
    one_way: Duration,
    rate: u64,
) -> (Lab, DelayRelay, std::path::PathBuf, std::path::PathBuf) {
    let lab = Lab::new(tag, server);
    let target: SocketAddr = "198.18.0.1:22".parse().unwrap();
    let relay = lab.net.enter_server(|| {
        let l = TcpListener::bind(("198.18.0.1", 0)).expect("bind the relay");
        DelayRelay::start(l, target, one_way, rate).expect("start the relay")
    });
    let cfg = default_config(&lab, &format!("{tag}_config"), relay.addr.port());
    let remote = lab.user().home.join("down.bin");
    random_file(&remote, SIZE);
    lab.user().own(&remote, 0o644);
    (lab, relay, cfg, remote)
}

#[test]
fn windows_grow_past_2_mib_on_a_long_path_with_ressh_and_stock_ssh() {
    let (lab, _relay, cfg, remote) = relay_lab("win", "", ONE_WAY, RATE);
    let local = lab.dir.join("up.bin");
    random_file(&local, SIZE);
    let empty = lab.dir.join("empty");
    fs::write(&empty, "").unwrap();

    // Download: ressh's receive window.
    let got = lab.dir.join("down.got");
    let cat = format!("cat {}", sq(&remote.to_string_lossy()));
    let (took, err) = transfer(
        &mut ressh_cmd(&lab.net, &cfg, &["-v", "server", &cat]),
        &empty,
        &got,
    );
    assert_eq!(
        sha256_file(&got),
        sha256_file(&remote),
        "the download arrived changed"
    );
    let w = grown(&err);
    report(
        "window",
        &format!("ressh download: {took:?}, window grew to {w} bytes"),
    );
    assert!(
        w > INITIAL,
        "ressh's window did not grow past 2 MiB:\n{err}"
    );

    // Upload: resshd-session's receive window, with ressh and with stock ssh.
    for (who, mut cmd) in [
        ("ressh", ressh_cmd(&lab.net, &cfg, &["server", "sha256sum"])),
        ("ssh", {
            let mut c = Command::new("ssh");
            c.args(["-F", &cfg.to_string_lossy(), "server", "sha256sum"]);
            lab.net.in_client(&mut c);
            c
        }),
    ] {
        let before = count(&lab.log(), LINE);
        let ended = count(&lab.log(), ENDED);
        let sum = lab.dir.join(format!("{who}.sum"));
        let (took, _) = transfer(&mut cmd, &local, &sum);
        let said = fs::read_to_string(&sum).unwrap();
        assert!(
            said.starts_with(&sha256_file(&local)),
            "{who}: the upload arrived changed: {said:?}"
        );
        // The worker logs through its monitor, which says the session ended
        // only after the worker's last line: then every window line of this
        // run is in, and none is left to be credited to the next run.
        let log = lab.wait_log("the session's end", Duration::from_secs(10), |l| {
            count(l, ENDED) > ended
        });
        let new: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(LINE))
            .skip(before)
            .collect();
        let w = grown(&new.join("\n"));
        report(
            "window",
            &format!("{who} upload: {took:?}, resshd's window {w} bytes"),
        );
        assert!(
            w > INITIAL,
            "{who}: resshd's window did not grow past 2 MiB"
        );
    }
}

/// A session that starts on a short path and roams onto a long one: the
/// download's first 4 MiB cross the relay with no delay and at 1 GB/s (a
/// debug ressh measures a round trip of a few ms, and its window grows to
/// about 8 MB), then the relay cuts the connection and puts the next one
/// on a 100 ms, 20 MB/s path (the laptop moved from the office LAN to a
/// far network). ressh reconnects, the rest follows, and ressh's window
/// must grow again, past the short path's: the tuner measures the new
/// path's round trip. Kept from the short path (its minimum, a few ms), the
/// window did not grow at all after the reconnect.
#[test]
fn a_window_grows_after_roaming_onto_a_long_path() {
    let (lab, relay, cfg, remote) =
        relay_lab("winroam", "DetachTimeout 120\n", Duration::ZERO, SHORT_RATE);
    let go = lab.user().home.join("go");
    const FIRST: usize = 4 << 20;
    let cmd = format!(
        "f={}; head -c {FIRST} \"$f\"; while [ ! -e {} ]; do sleep 0.1; done; tail -c +{} \"$f\"",
        sq(&remote.to_string_lossy()),
        sq(&go.to_string_lossy()),
        FIRST + 1
    );
    let got = lab.dir.join("down.got");
    let mut client = Client::spawn_into(
        &mut ressh_cmd(&lab.net, &cfg, &["-v", "server", &cmd]),
        fs::File::create(&got).unwrap(),
    );
    let size = || fs::metadata(&got).map(|m| m.len()).unwrap_or(0);
    wait_for(
        "the first 4 MiB on the short path",
        T,
        || (size() == FIRST as u64).then_some(()),
        || client.describe(),
    );

    let since = Instant::now();
    relay.set_path(ONE_WAY, RATE);
    relay.cut();
    client.wait_err("reconnected to ", since, T);
    let started = Instant::now();
    fs::write(&go, "").unwrap();
    let status = client.wait_exit(T);
    let took = started.elapsed();
    let err = client.stderr();
    assert!(status.success(), "ressh: {status}\n{err}");
    assert_eq!(
        sha256_file(&got),
        sha256_file(&remote),
        "the download arrived changed"
    );
    // ressh's stderr in order, read once it has ended: the short path's
    // lines, then the long path's.
    let (short, after) = err.split_once("reconnected to ").unwrap_or((&err, ""));
    let before = grown(short);
    let w = grown(after);
    report(
        "window",
        &format!(
            "roaming from a short path (window {before} bytes) onto a long one: \
             the rest in {took:?}, window grew to {w} bytes"
        ),
    );
    assert!(
        w > INITIAL.max(before),
        "ressh's window did not grow past 2 MiB and the short path's {before} \
         after the roam:\n{err}"
    );
}
