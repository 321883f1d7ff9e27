//! Issue 23's "no spurious switch on loopback under full CPU load", in a
//! test binary of its own: it keeps every core busy for its duration, and
//! Cargo runs test binaries one after another, so no other test shares the
//! machine with it (the e2e binary runs its tests two at a time).

// The e2e binary's helpers, of which this one uses a few.
#![allow(dead_code, unused_imports)]

mod common;
mod suspect_kit;

use std::fs;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use openssl::sha::Sha256;

use common::*;
use suspect_kit::*;

/// Seconds of the run under CPU load (`RESSH_E2E_LOAD_SECS`, default 30).
fn load_secs() -> usize {
    env_number("RESSH_E2E_LOAD_SECS", 30)
}

/// Processes that keep every core busy at normal priority: two busy loops
/// per core and a loop of `dd` clearing a 64 MiB buffer over and over
/// (memory bandwidth), each in a session of its own (`setsid`), so that the
/// scheduler's autogroups weigh each like any other program's session
/// rather than all of them as one. Killed on drop; each also stops by
/// itself once this process is gone.
struct CpuHogs(Vec<Child>);

impl CpuHogs {
    fn start() -> CpuHogs {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        let while_we_live = format!("while kill -0 {} 2>/dev/null; do", std::process::id());
        let busy = format!("{while_we_live} :; done");
        let dd = format!(
            "{while_we_live} dd if=/dev/zero of=/dev/null bs=64M count=8 2>/dev/null; done"
        );
        let hogs = std::iter::repeat_n(busy, 2 * cores).chain([dd]);
        CpuHogs(
            hogs.map(|script| {
                // Not a group leader: setsid calls setsid(2) and execs, so
                // the child is the hog itself.
                Command::new(require_cmd("setsid"))
                    .args(["sh", "-c", &script])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot start {script:?}: {e}"))
            })
            .collect(),
        )
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The machine's (busy, idle) CPU time so far, in clock ticks
/// (/proc/stat's first line; idle includes iowait).
fn cpu_ticks() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").expect("/proc/stat");
    let t: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .expect("/proc/stat's cpu line")
        .split_whitespace()
        .map(|v| v.parse().expect("a number in /proc/stat"))
        .collect();
    let idle = t[3] + t[4];
    (t.iter().take(8).sum::<u64>() - idle, idle)
}

/// Types numbered lines into `to` for `secs` seconds as a user does: a
/// burst of five lines 100 ms apart, then a pause of 1.5 s, long enough
/// for ressh to probe the silence after the echoes (at the suspicion
/// timeout, 500 ms by default) and to wait for the answer. Then `END n`.
fn type_for(mut to: impl Write, secs: u64) -> std::io::Result<()> {
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        to.write_all(format!("{i}\n").as_bytes())?;
        i += 1;
        let pause = if i.is_multiple_of(5) { 1500 } else { 100 };
        thread::sleep(Duration::from_millis(pause));
    }
    to.write_all(format!("END {i}\n").as_bytes())
}

/// Issue 23's "no spurious switch on loopback under full CPU load": the
/// lab's paths are a fraction of a millisecond, so the suspicion timeout
/// is its floor (500 ms by default), and on a machine where every core is
/// busy the server's answers wait for the scheduler. With ressh's
/// defaults, for [`load_secs`], two sessions at once while [`CpuHogs`]
/// run: one uploads as fast as it goes (stdin into a remote `sha256sum`)
/// while the remote ticker prints a line every 100 ms; in the other the
/// user types in bursts with pauses ([`type_for`]) and the remote `cat`
/// echoes, so that ressh probes each pause and the server's answers to
/// the probes must come in time. Neither ressh may reconnect on suspicion
/// (their counts at exit), resshd must commit no reconnect, the upload's
/// hash, the ticker's numbers and the echoed lines must be exact, and the
/// machine must really have been busy (under 5% idle).
#[test]
fn no_suspicion_on_loopback_under_full_cpu_load() {
    let lab = Lab::new("susp_cpu", "DetachTimeout 300\n");
    let cfg = default_config(&lab, "default_config", PORT);
    let secs = load_secs() as u64;
    let stop = lab.user().home.join("stop-counter");
    let cmd = format!("( {} ) & sha256sum | sed 's/^/SUM /'; wait", ticker(&stop));
    let hogs = CpuHogs::start();
    let before = cpu_ticks();
    let started = Instant::now();
    let (mut bulk, upload) = Client::spawn_typed(&mut ressh_cmd(&lab.net, &cfg, &["server", &cmd]));
    let (mut typed, keys) =
        Client::spawn_typed(&mut ressh_cmd(&lab.net, &cfg, &["-T", "server", "cat"]));
    let typist = thread::spawn(move || type_for(keys, secs));
    let (bytes, want) = upload_for(upload, secs)
        .unwrap_or_else(|e| panic!("ressh took no more input: {e}\n{}", bulk.describe()));
    typist
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("ressh took no more input: {e}\n{}", typed.describe()));
    let sum = wait_for(
        "the upload's hash",
        T,
        || {
            bulk.out_lines()
                .into_iter()
                .find_map(|(_, l)| l.strip_prefix("SUM ").map(str::to_string))
        },
        || bulk.describe(),
    );
    let took = started.elapsed();
    let after = cpu_ticks();
    drop(hogs);
    fs::write(&stop, "").unwrap();
    for c in [&mut bulk, &mut typed] {
        let status = c.wait_exit(T);
        assert!(status.success(), "ressh: {status}\n{}", c.describe());
    }
    assert!(
        sum.starts_with(&want),
        "the upload arrived changed: {want} sent, {sum:?} received"
    );
    let lines: Vec<Line> = bulk
        .out_lines()
        .into_iter()
        .filter(|(_, l)| !l.starts_with("SUM "))
        .collect();
    let n = check_counter(&lines);
    let echoed = check_counter(&typed.out_lines());
    let (busy, idle) = (after.0 - before.0, after.1 - before.1);
    let idle_pct = 100.0 * idle as f64 / (busy + idle).max(1) as f64;
    report(
        "suspicion",
        &format!(
            "full CPU load ({idle_pct:.1}% idle) for {:.1} s: {} MB uploaded, {n} lines \
             printed, {echoed} typed lines echoed\n  upload: {}\n  typing: {}",
            took.as_secs_f64(),
            bytes / 1_000_000,
            counts_line(&bulk),
            counts_line(&typed)
        ),
    );
    assert!(
        idle_pct < 5.0,
        "the machine was {idle_pct:.1}% idle: not under full load"
    );
    check_counts(&bulk, 0);
    check_counts(&typed, 0);
    assert_eq!(reconnects(&lab.log()), 0, "resshd saw reconnects");
}

/// Writes `secs` seconds of data to `to` as fast as it is taken: 256 KiB
/// blocks of random bytes, each starting with its number. Returns the
/// bytes written and their SHA-256 in hex.
fn upload_for(mut to: impl Write, secs: u64) -> std::io::Result<(u64, String)> {
    let mut block = vec![0u8; 256 << 10];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut block)
        .unwrap();
    let mut h = Sha256::new();
    let mut n = 0u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        block[..8].copy_from_slice(&n.to_be_bytes());
        to.write_all(&block)?;
        h.update(&block);
        n += 1;
    }
    let hex = h.finish().iter().map(|b| format!("{b:02x}")).collect();
    Ok((n * block.len() as u64, hex))
}
