//! Issue 17: compression, `zlib@openssh.com` (delayed: from the packet
//! after USERAUTH_SUCCESS on), both ways with stock OpenSSH, across cuts,
//! and bounded against a hostile peer.
//!
//! - `stock_ssh_compresses_with_resshd`: Debian's `ssh -C` against resshd
//!   (its default `Compression yes`) through a recording proxy: 4 MiB of
//!   compressible text and 4 MiB of random bytes go up (`cat > file`) and
//!   come back (`cat file`), sha256 equal on all three copies; `ssh -v`
//!   reports `compression: zlib@openssh.com` and "Enabling compression";
//!   the text's round trip takes less than a quarter of its size on the
//!   wire, and the same upload without `-C` (control) more than its size.
//! - `ressh_compresses_with_stock_sshd`: `ressh -C` (then `-o
//!   Compression=yes`) against Debian's sshd, the same round trips; sshd's
//!   log (LogLevel DEBUG1) shows zlib@openssh.com agreed and compression
//!   enabled, ressh's `-v` the same.
//! - `compressed_session_survives_cuts`: `ressh -C` against resshd through
//!   a proxy that cuts the connection 4 times during a paced 16 MiB
//!   download, then 4 times during a paced 16 MiB upload; sha256 equal,
//!   resshd logs the reconnects, and both transfers take less than half
//!   their size on the wire (the new connections compress too: each
//!   reconnect starts fresh streams, docs/PROTOCOL.md §9).
//! - `a_zip_bomb_gets_disconnect`: a client on ressh's own engine agrees
//!   on compression with resshd, logs in, and sends one small packet (a
//!   global request of 8 MiB of zeros, 8 KiB compressed) that inflates to
//!   32 times the packet bound: resshd answers DISCONNECT "decompressed
//!   packet too large", logs it, and its session worker's peak memory
//!   grows by less than 4 MiB.
//!
//! Printed: bytes on the wire per transfer.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const SIZE: usize = 4 << 20;

/// Log-like text that deflate shrinks well (about 10 times), and random
/// bytes that it cannot shrink.
fn payloads(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let text = dir.join("text.txt");
    let mut t = String::with_capacity(SIZE + 100);
    let mut i = 0u64;
    while t.len() < SIZE {
        t.push_str(&format!(
            "{i:09} worker {} finished job {:x} in {} ms\n",
            i % 13,
            i.wrapping_mul(2_654_435_761) % 65_521,
            i % 997
        ));
        i += 1;
    }
    t.truncate(SIZE);
    fs::write(&text, t).unwrap();
    let random = dir.join("random.bin");
    random_file(&random, SIZE);
    vec![("text", text), ("random", random)]
}

/// Uploads `file` with `client(["cat > remote"])`, downloads it back with
/// `client(["cat remote"])`, checks the three sha256; returns both
/// clients' stderr.
fn round_trip(client: &dyn Fn(&str) -> Command, file: &Path, remote: &Path, back: &Path) -> String {
    let want = sha256_file(file);
    let up = run_with_stdin(
        &mut client(&format!("cat > {}", sq(&remote.display().to_string()))),
        &fs::read(file).unwrap(),
        T,
    );
    assert!(up.status.success(), "upload: {}", text(&up.stderr));
    let down = run_timeout(
        &mut client(&format!("cat {}", sq(&remote.display().to_string()))),
        T,
    );
    assert!(down.status.success(), "download: {}", text(&down.stderr));
    fs::write(back, &down.stdout).unwrap();
    assert_eq!(sha256_file(remote), want, "uploaded {}", file.display());
    assert_eq!(sha256_file(back), want, "downloaded {}", file.display());
    format!("{}{}", text(&up.stderr), text(&down.stderr))
}

#[test]
fn stock_ssh_compresses_with_resshd() {
    let lab = Lab::new("cmpa", "");
    let proxy = lab.via_proxy();
    let ssh = require_cmd("ssh");
    let ssh_with = |args: &'static [&'static str]| {
        let (ssh, lab) = (&ssh, &lab);
        move |remote: &str| {
            let mut c = lab.net.cmd_client(ssh);
            c.arg("-F").arg(&lab.login.config).args(args);
            c.args(["server", remote]);
            c
        }
    };
    let mut lines = Vec::new();
    for (name, file) in payloads(lab.dir.path()) {
        let before = proxy.bytes();
        let err = round_trip(
            &ssh_with(&["-C", "-v"]),
            &file,
            &lab.user().home.join(name),
            &lab.dir.join(format!("back-{name}")),
        );
        let wire = proxy.bytes() - before;
        for needle in [
            "client->server cipher",
            "server->client cipher",
            "Enabling compression at level 6",
        ] {
            let ok = err
                .lines()
                .filter(|l| l.contains(needle))
                .all(|l| !l.contains("cipher") || l.ends_with("compression: zlib@openssh.com"));
            assert!(ok && err.contains(needle), "ssh -v: no {needle:?}\n{err}");
        }
        if name == "text" {
            assert!(
                wire < 2 * SIZE / 4,
                "{wire} bytes on the wire for 2 x {SIZE}"
            );
        }
        lines.push(format!("{name}: {} KiB", wire / 1024));
    }
    // Control: without -C the same upload takes more than its size.
    let before = proxy.bytes();
    let text_file = lab.dir.join("text.txt");
    let up = run_with_stdin(
        &mut ssh_with(&["-o", "Compression=no"])("cat > /dev/null"),
        &fs::read(&text_file).unwrap(),
        T,
    );
    assert!(up.status.success(), "{}", text(&up.stderr));
    let plain = proxy.bytes() - before;
    assert!(plain > SIZE, "{plain} bytes uncompressed");
    report(
        "stock_ssh_compresses_with_resshd",
        &format!(
            "ssh -C up and down 2 x 4 MiB, on the wire: {}; text uncompressed one way: {} KiB",
            lines.join(", "),
            plain / 1024
        ),
    );
}

#[test]
fn ressh_compresses_with_stock_sshd() {
    require_netns();
    let net = Net::new("cmpb");
    let sshd = Sshd::start_binary_in(Path::new(SSHD_BIN), "LogLevel DEBUG1\n", &net, PORT);
    let dir = TempDir::new("e2e-compression");
    let known_hosts = dir.join("known_hosts");
    fs::write(&known_hosts, sshd.known_hosts()).unwrap();
    let login = Lab::make_login(&dir, &known_hosts, "cb", CLIENT_EXTRA);
    let mut errs = String::new();
    for ((name, file), how) in payloads(dir.path())
        .into_iter()
        .zip([&["-C"][..], &["-o", "Compression=yes"][..]])
    {
        let client = |remote: &str| {
            let mut args = vec!["-v"];
            args.extend_from_slice(how);
            args.extend(["server", remote]);
            ressh_cmd(&net, &login.config, &args)
        };
        errs += &round_trip(
            &client,
            &file,
            &login.user.home.join(name),
            &dir.join(format!("back-{name}")),
        );
    }
    assert_eq!(
        count(&errs, "compression zlib@openssh.com / zlib@openssh.com"),
        4,
        "ressh -v:\n{errs}"
    );
    let log = sshd.log();
    for needle in [
        "compression: zlib@openssh.com",
        "Enabling compression at level 6",
    ] {
        assert!(log.contains(needle), "sshd's log: no {needle:?}\n{log}");
    }
    assert!(
        !log.contains("compression: none"),
        "sshd agreed on no compression once:\n{log}"
    );
    report(
        "ressh_compresses_with_stock_sshd",
        "ressh -C and -o Compression=yes up and down 2 x 4 MiB against sshd: intact, \
         zlib@openssh.com on both sides",
    );
}

/// 16 MiB: three quarters text, one quarter random, in 256 KiB blocks.
fn mixed_file(dir: &Path) -> PathBuf {
    let mut data = Vec::with_capacity(4 * SIZE);
    let p = payloads(dir);
    let (text_data, random) = (fs::read(&p[0].1).unwrap(), fs::read(&p[1].1).unwrap());
    for (i, block) in text_data.chunks(BLOCK).enumerate() {
        data.extend_from_slice(block);
        data.extend_from_slice(block);
        data.extend_from_slice(block);
        data.extend_from_slice(&random[i * BLOCK..(i + 1) * BLOCK]);
    }
    let path = dir.join("mixed.bin");
    fs::write(&path, data).unwrap();
    path
}

const BLOCK: usize = 256 << 10;
const CUTS: usize = 4;

/// Cuts the proxy's connections each time `progress()` passes another
/// fifth of `total`, while `done()` is false; returns the cuts made.
fn cut_during(
    proxy: &Proxy,
    total: u64,
    progress: impl Fn() -> u64,
    done: impl Fn() -> bool,
) -> usize {
    let mut cuts = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() && Instant::now() < deadline {
        if cuts < CUTS && progress() > (cuts as u64 + 1) * total / (CUTS as u64 + 1) {
            proxy.cut();
            cuts += 1;
        }
        thread::sleep(Duration::from_millis(5));
    }
    cuts
}

#[test]
fn compressed_session_survives_cuts() {
    let lab = Lab::new("cmpc", "");
    let proxy = lab.via_proxy();
    let file = mixed_file(lab.dir.path());
    let total = fs::metadata(&file).unwrap().len();
    let want = sha256_file(&file);
    let remote = lab.user().home.join("mixed.bin");
    fs::copy(&file, &remote).unwrap();

    // Download, paced by the remote side: a block every 50 ms.
    let back = lab.dir.join("back.bin");
    let pace = format!(
        "for i in $(seq 0 {}); do dd if={} bs={BLOCK} skip=$i count=1 status=none; \
         sleep 0.05; done",
        total as usize / BLOCK - 1,
        sq(&remote.display().to_string())
    );
    let before = proxy.bytes();
    let mut down = Client::spawn_into(
        &mut lab.ressh(&["-C", "-v", "server", &pace]),
        fs::File::create(&back).unwrap(),
    );
    let cuts = cut_during(
        &proxy,
        total,
        || fs::metadata(&back).map(|m| m.len()).unwrap_or(0),
        || fs::metadata(&back).map(|m| m.len()).unwrap_or(0) >= total,
    );
    let status = down.wait_exit(T);
    let err = down.stderr();
    assert!(status.success(), "download: {err}\n{}", lab.log());
    assert_eq!(cuts, CUTS, "the download ended before the cuts");
    assert_eq!(sha256_file(&back), want, "downloaded file");
    let down_wire = proxy.bytes() - before;
    assert!(
        err.contains("compression zlib@openssh.com / zlib@openssh.com"),
        "{err}"
    );

    // Upload, paced by the test: a block every 50 ms.
    let up_remote = lab.user().home.join("up.bin");
    let before = proxy.bytes();
    let (mut up, mut stdin) = Client::spawn_typed(&mut lab.ressh(&[
        "-C",
        "server",
        &format!("cat > {}", sq(&up_remote.display().to_string())),
    ]));
    let data = fs::read(&file).unwrap();
    let writer = thread::spawn(move || {
        for block in data.chunks(BLOCK) {
            stdin.write_all(block).unwrap();
            thread::sleep(Duration::from_millis(50));
        }
    });
    let cuts = cut_during(
        &proxy,
        total,
        || fs::metadata(&up_remote).map(|m| m.len()).unwrap_or(0),
        || writer.is_finished(),
    );
    writer.join().unwrap();
    let status = up.wait_exit(T);
    assert!(status.success(), "upload: {}\n{}", up.stderr(), lab.log());
    assert_eq!(cuts, CUTS, "the upload ended before the cuts");
    assert_eq!(sha256_file(&up_remote), want, "uploaded file");
    let up_wire = proxy.bytes() - before;

    wait_reconnects(&lab.resshd, 2 * CUTS, T);
    for (what, wire) in [("download", down_wire), ("upload", up_wire)] {
        assert!(
            (wire as u64) < total / 2,
            "{what}: {wire} bytes on the wire for {total}"
        );
    }
    report(
        "compressed_session_survives_cuts",
        &format!(
            "16 MiB down and up with {CUTS} cuts each: intact; on the wire {} KiB down, {} KiB up",
            down_wire / 1024,
            up_wire / 1024
        ),
    );
}

/// The bomb: 8 MiB that deflate to about 8 KiB, 32 times the bound on
/// what one packet may inflate to.
const BOMB: usize = 8 << 20;
/// How much the session worker's peak memory may grow meanwhile.
const BOMB_RSS_GROWTH: u64 = 4 << 20;

#[test]
fn a_zip_bomb_gets_disconnect() {
    use ressh_proto::msg::GlobalReq;
    use ressh_proto::{Config, Event};

    require_root();
    let server = Resshd::start(&ressh_bin().with_file_name("resshd"), "");
    let dir = TempDir::new("e2e-zipbomb");
    let login = Lab::make_login(&dir, &dir.join("known_hosts"), "zb", "");
    let config = Config {
        compression: ressh_proto::zlib::offer(true, true),
        ..Config::default()
    };
    let (mut conn, mut sock) = engine_login(config, &server, &login);
    let worker = wait_for(
        "the user's resshd-session",
        Duration::from_secs(20),
        || {
            let w = worker_pids(&login.user);
            (w.len() == 1).then(|| w[0])
        },
        || server.log(),
    );
    let (mut pending, mut buf) = (Vec::new(), vec![0u8; 1 << 16]);
    // Settle: the worker's INFO and first ACKs.
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        pump_engine(&mut conn, &mut sock, &mut pending, &mut buf);
        while conn.poll_event().is_some() {}
        thread::sleep(Duration::from_millis(5));
    }
    let before = peak_rss(worker).unwrap();
    let peak = Arc::new(AtomicU64::new(before));
    let p = peak.clone();
    let sampler = thread::spawn(move || {
        while let Some(hwm) = peak_rss(worker) {
            p.fetch_max(hwm, Ordering::Relaxed);
            thread::sleep(Duration::from_millis(2));
        }
    });
    let out_before = conn.output().len();
    conn.global_request(
        GlobalReq::Other {
            name: "bomb@example.com".into(),
            data: vec![0; BOMB],
        },
        true,
    )
    .unwrap();
    let packet = conn.output().len() - out_before;
    assert!(packet < 16 << 10, "the bomb is {packet} bytes on the wire");

    let deadline = Instant::now() + T;
    let (mut why, mut end) = (None, None);
    while why.is_none() && end.is_none() {
        assert!(Instant::now() < deadline, "no answer\n{}", server.log());
        let (progress, e) = pump_engine(&mut conn, &mut sock, &mut pending, &mut buf);
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Disconnected { description, .. } => why = Some(description),
                Event::GlobalReply { .. } => panic!(
                    "resshd inflated the bomb and answered it; its worker's peak memory \
                     grew by {}",
                    mib(peak.load(Ordering::Relaxed).saturating_sub(before))
                ),
                _ => {}
            }
        }
        end = e;
        if !progress {
            thread::sleep(Duration::from_millis(1));
        }
    }
    let why = why.unwrap_or_else(|| panic!("{end:?} without DISCONNECT\n{}", server.log()));
    assert!(why.contains("decompressed packet too large"), "{why}");
    wait_for(
        "the session worker to exit",
        Duration::from_secs(20),
        || (!alive(worker)).then_some(()),
        || server.log(),
    );
    sampler.join().unwrap();
    let grew = peak.load(Ordering::Relaxed).saturating_sub(before);
    assert!(
        grew < BOMB_RSS_GROWTH,
        "resshd-session's peak memory grew by {}",
        mib(grew)
    );
    wait_worker_said(&server, worker, "decompressed packet too large");
    report(
        "a_zip_bomb_gets_disconnect",
        &format!(
            "{packet}-byte packet inflating to {} MiB: DISCONNECT \"{why}\"; worker peak grew {}",
            BOMB >> 20,
            mib(grew)
        ),
    );
}
