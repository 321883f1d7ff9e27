//! Issue 21: resshd's `RekeyLimit`, by bytes and by time, against Debian's
//! stock `ssh -vvv`, whose debug log names every key exchange.
//!
//! resshd runs with `RekeyLimit 1M 3s`; stock ssh (which itself rekeys
//! only after 2^27 blocks) runs a remote command that sends 4.5 MiB, says
//! `done`, and idles 7 s. From ssh's log (`SSH2_MSG_KEXINIT received`,
//! `SSH2_MSG_NEWKEYS sent`, and `ssh_set_newkeys: rekeying in, input N
//! bytes`, N counting every byte received so far) the test asserts:
//!
//! - every rekey is resshd's (its KEXINIT comes before ssh's);
//! - none comes before a limit: each follows at least 1 MiB of input
//!   (less 1 %: ssh counts no MACs, resshd does) or 3 s (less 150 ms for
//!   the reading of the log) after the previous exchange;
//! - none comes late: each follows at most 1 MiB plus ssh's 2 MiB channel
//!   window (what resshd may have queued during the previous exchange)
//!   and 3 s plus 1.5 s (a loaded machine);
//! - the transfer brings at least two rekeys sooner than 3 s after the
//!   previous one (so by bytes);
//! - the 7 idle seconds bring exactly two, each after 3 s and less than
//!   1 MiB (so by time).
//!
//! Issue 22: OpenSSH's regress test `rekey` against resshd, its failing
//! step: `RekeyLimit 16` and copies both ways with stock ssh.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const LIMIT: u64 = 1 << 20;
/// ssh's channel window: the data resshd may have queued while a key
/// exchange ran, sent under the new keys before it looks at the limit.
const WINDOW: u64 = 2 << 20;
const INTERVAL: Duration = Duration::from_secs(3);
/// Reading ssh's log through a pipe may stamp a line late, which makes a
/// gap look shorter than it was.
const EARLY_SLACK: Duration = Duration::from_millis(150);
const LATE_SLACK: Duration = Duration::from_millis(1500);

/// One key exchange as ssh logged it.
#[derive(Debug)]
struct Kex {
    /// When ssh received the server's KEXINIT.
    kexinit_received: Instant,
    /// Whether ssh had sent its own KEXINIT first (it started the exchange).
    by_client: bool,
    /// When ssh sent NEWKEYS: resshd's clock for the next one starts later.
    newkeys_sent: Option<Instant>,
    /// Bytes ssh had received when it took the new keys (not logged for
    /// the first exchange).
    input: Option<u64>,
}

fn exchanges(log: &[Line]) -> Vec<Kex> {
    let mut v: Vec<Kex> = Vec::new();
    let mut sent_first = false;
    for (t, l) in log {
        // ssh ends its debug lines with CR LF.
        let l = l.trim_end();
        if l.ends_with("SSH2_MSG_KEXINIT sent") {
            // ssh's answer to a KEXINIT comes after it; an exchange that
            // ssh starts, before the server's.
            sent_first = v.last().is_none_or(|k| k.newkeys_sent.is_some());
        } else if l.ends_with("SSH2_MSG_KEXINIT received") {
            v.push(Kex {
                kexinit_received: *t,
                by_client: sent_first,
                newkeys_sent: None,
                input: None,
            });
            sent_first = false;
        } else if l.ends_with("SSH2_MSG_NEWKEYS sent") {
            if let Some(k) = v.last_mut() {
                k.newkeys_sent = Some(*t);
            }
        } else if let Some(rest) = l.split_once("ssh_set_newkeys: rekeying in, input ") {
            let n = rest.1.split(' ').next().and_then(|n| n.parse().ok());
            let k = v
                .last_mut()
                .unwrap_or_else(|| panic!("{l} before any KEXINIT"));
            k.input = Some(n.unwrap_or_else(|| panic!("unreadable: {l}")));
        }
    }
    v
}

#[test]
fn rekeylimit_by_bytes_and_by_time_against_stock_ssh() {
    let lab = Lab::new("rekey", "RekeyLimit 1M 3s\n");
    let ssh = require_cmd("ssh");
    let total = LIMIT * 9 / 2;
    let mut c = Client::spawn(
        lab.net
            .cmd_client(&ssh)
            .arg("-vvv")
            .arg("-F")
            .arg(&lab.login.config)
            .arg("server")
            .arg(format!(
                "head -c {total} /dev/zero | tr '\\0' x | fold -w 1023; echo; echo done; sleep 7"
            )),
    );
    let st = c.wait_exit(T);
    assert!(st.success(), "ssh: {st}\n{}", c.describe());
    let out = c.out_lines();
    let got: usize = out
        .iter()
        .filter(|(_, l)| l != "done")
        .map(|(_, l)| l.len())
        .sum();
    let done = out
        .iter()
        .find(|(_, l)| l == "done")
        .unwrap_or_else(|| panic!("no \"done\"\n{}", c.describe()))
        .0;
    assert_eq!(got as u64, total, "bytes of output");

    let kexes = exchanges(&c.err_lines());
    let mut table = String::new();
    for (i, k) in kexes.iter().enumerate().skip(1) {
        let prev = &kexes[i - 1];
        let since = prev.newkeys_sent.expect("NEWKEYS sent");
        let gap = k.kexinit_received.saturating_duration_since(since);
        let bytes = k.input.expect("rekeying in line") - prev.input.unwrap_or(0);
        table += &format!(
            "rekey {i}: {:6.3} s and {bytes} bytes after the previous, {}\n",
            gap.as_secs_f64(),
            if k.kexinit_received < done {
                "during the transfer"
            } else {
                "idle"
            }
        );
    }
    assert!(kexes.len() > 1, "no rekey at all\n{}", c.stderr());
    assert!(kexes[0].input.is_none() && kexes[0].by_client);
    let mut by_bytes = 0;
    let mut idle = Vec::new();
    for (i, k) in kexes.iter().enumerate().skip(1) {
        let prev = &kexes[i - 1];
        let gap = k
            .kexinit_received
            .saturating_duration_since(prev.newkeys_sent.unwrap());
        let bytes = k.input.unwrap() - prev.input.unwrap_or(0);
        assert!(!k.by_client, "rekey {i} was started by ssh\n{table}");
        assert!(
            bytes >= LIMIT * 99 / 100 || gap >= INTERVAL - EARLY_SLACK,
            "rekey {i} came before either limit\n{table}"
        );
        assert!(
            bytes <= LIMIT + WINDOW + (64 << 10) && gap <= INTERVAL + LATE_SLACK,
            "rekey {i} came late\n{table}"
        );
        if k.kexinit_received < done {
            by_bytes += usize::from(gap < INTERVAL - EARLY_SLACK);
        } else {
            idle.push((gap, bytes));
        }
    }
    // At most LIMIT + WINDOW + 64 KiB between rekeys, and less than LIMIT
    // from the last one to the first idle one: at least two in 4.5 MiB.
    assert!(
        by_bytes >= 2,
        "{by_bytes} rekeys by bytes during {total} bytes\n{table}"
    );
    assert_eq!(idle.len(), 2, "rekeys while idle for 7 s\n{table}");
    for (gap, bytes) in idle {
        assert!(
            gap >= INTERVAL - EARLY_SLACK && bytes < LIMIT * 99 / 100,
            "an idle rekey was not the timer's\n{table}"
        );
    }
    report(
        "rekey",
        &format!("RekeyLimit 1M 3s against stock ssh:\n{table}"),
    );
}

/// A rekey that a broken path cuts short: resshd has signed the exchange
/// hash and sent its reply, the client never sees it, and the session moves
/// to a new transport (which abandons the exchange on both sides). The
/// monitor signs one exchange hash per key exchange; the next rekey must
/// still be signed, and the session go on.
#[test]
fn a_rekey_cut_short_by_a_reconnect_leaves_the_next_one_signed() {
    let lab = Lab::new("rkcut", "RekeyLimit default 4s\n");
    let proxy = lab.via_proxy();
    let (client, mut typed) = Client::spawn_typed(&mut lab.ressh(&["-T", "server", "cat"]));
    let mut echo = |n: usize, what: &str| {
        writeln!(typed, "{what}").unwrap();
        wait_for(
            &format!("{what:?} echoed"),
            Duration::from_secs(20),
            || (client.line_count() >= n).then_some(()),
            || format!("{}\nresshd's log:\n{}", client.describe(), lab.log()),
        );
        assert_eq!(client.last_line().unwrap().1, what, "{}", client.describe());
    };
    echo(1, "before");
    // The session is idle but for small keepalives and their answers:
    // the next big packet from resshd is its KEXINIT. The client answers
    // it (KEXINIT, ECDH_INIT), resshd signs and replies; the reply and
    // everything after it are held back.
    proxy.hold_after(500);
    wait_for(
        "resshd's KEXINIT to pass",
        Duration::from_secs(15),
        || proxy.holding().then_some(()),
        || lab.log(),
    );
    // Its reply (host key, signature: some 200 bytes) and NEWKEYS go out
    // at once, bigger than an answer to a keepalive.
    wait_for(
        "resshd's signed reply",
        Duration::from_secs(10),
        || (proxy.biggest_withheld() >= 200).then_some(()),
        || {
            format!(
                "{} bytes held back at most\n{}",
                proxy.biggest_withheld(),
                lab.log()
            )
        },
    );
    let before = reconnects(&lab.log());
    proxy.cut();
    proxy.release();
    wait_reconnects(&lab.resshd, before + 1, Duration::from_secs(30));
    echo(2, "reconnected");
    // The rekeys after it (every 4 s) are signed by the monitor.
    thread::sleep(Duration::from_secs(10));
    echo(3, "after");
    let log = lab.log();
    assert!(
        !log.contains("second host-key signature"),
        "the monitor refused a rekey's signature:\n{log}"
    );
}

/// OpenSSH's regress test `rekey`, its failing step against stock ssh:
/// resshd with `RekeyLimit 16` (a rekey after nearly every packet), a copy
/// of 2 MiB out of it (`cat`) and one into it (`cat >`, ssh itself with
/// `-oRekeyLimit=256k`, so that exchanges both ends start meet). Both copies
/// arrive intact and ssh's log shows the rekeys. A limit passed before user
/// authentication ends starts nothing (ssh takes a KEXINIT then for a
/// protocol error), nor one passed by the USERAUTH_SUCCESS itself (the
/// connection is handed to the session's process then).
#[test]
fn rekeylimit_16_copies_both_ways_against_stock_ssh() {
    let lab = Lab::new("rk16", "RekeyLimit 16\n");
    let ssh = require_cmd("ssh");
    const SIZE: usize = 2 << 20;
    let data = lab.user().home.join("data");
    random_file(&data, SIZE);
    lab.user().own(&data, 0o644);
    let bytes = std::fs::read(&data).unwrap();
    let copy = lab.user().home.join("copy");
    let ssh_cmd = |extra: &[&str], remote: String| {
        let mut cmd = lab.net.cmd_client(&ssh);
        cmd.args(["-v", "-oCompression=no"])
            .args(extra)
            .arg("-F")
            .arg(&lab.login.config)
            .args(["server", &remote]);
        cmd
    };
    let rekeys = |what: &str, out: &std::process::Output| {
        let err = text(&out.stderr);
        assert!(
            out.status.success(),
            "{what}: ssh {}\n{err}\n--- resshd ---\n{}",
            out.status,
            lab.log()
        );
        count(&err, "SSH2_MSG_NEWKEYS sent") - 1
    };

    let down = run_timeout(
        &mut ssh_cmd(&[], format!("cat {}", sq(&data.display().to_string()))),
        T,
    );
    let down_rekeys = rekeys("the copy out", &down);
    assert!(
        down.stdout == bytes,
        "the copy out differs ({} bytes)",
        down.stdout.len()
    );

    let up = run_with_stdin(
        &mut ssh_cmd(
            &["-oRekeyLimit=256k"],
            format!("cat > {}", sq(&copy.display().to_string())),
        ),
        &bytes,
        T,
    );
    let up_rekeys = rekeys("the copy in", &up);
    assert!(
        std::fs::read(&copy).unwrap() == bytes,
        "the copy in differs"
    );
    // As the regress test: each copy rekeyed. (Not one rekey a packet:
    // what resshd queued during an exchange goes out under the new keys
    // before it looks at the limit again; see the test above.)
    assert!(
        down_rekeys >= 1 && up_rekeys >= 1,
        "rekeys: {down_rekeys} copying out, {up_rekeys} copying in"
    );
    report(
        "rekey",
        &format!("RekeyLimit 16, 2 MiB: {down_rekeys} rekeys copying out, {up_rekeys} copying in"),
    );
}
