//! ressh-bench: ressh/resshd and OpenSSH's ssh/sshd side by side, in one
//! run, on this machine; prints a table of ratios (Markdown).
//!
//! Run it with `bench/run` (builds first) or, after
//! `cargo build --release --workspace --bins`, `target/release/ressh-bench`.
//! It needs root: it starts Debian's sshd, creates a temporary user (removed
//! at the end) whose sessions both servers run, and measures reconnects in
//! network namespaces (198.18.0.0/15). Everything else stays on 127.0.0.1.
//! See bench/README.md.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ressh_bench::daemon::{ClientSetup, Keys, Kind, Server, ServerSpec};
use ressh_bench::lab::Cat;
use ressh_bench::proc::{self, Mem};
use ressh_bench::stats::{ratio, Summary};
use ressh_bench::tls::{self, Tunnel};
use ressh_bench::{bin_dir, is_root, require_bin};
use ressh_testkit::{DelayRelay, Net, TempDir, TestUser};

const MIB: u64 = 1 << 20;

const USAGE: &str = "\
usage: ressh-bench [--reps N] [--size MIB] [--sessions N] [--seq N] [--conc N]
                   [--trials N] [--only LIST] [--skip LIST] [--quick] [--out FILE]
                   [--kex LIST] [--tls-idle N] [--trace FILE] [--rtt LIST]
                   [--callgrind DIR]

Measures ressh/resshd and OpenSSH ssh/sshd side by side on this machine and
prints a Markdown table of ratios. Needs root. Sections (for --only/--skip):
  engine    ressh's protocol engine alone, in memory (CPU time per side)
  cat       1 GiB (--size) through exec cat, each cipher, both directions;
            then compressible text with -C (zlib@openssh.com)
  sftp      sftp get and put of the same file
  resil     resilience on vs off; ACK bytes on the wire
  setup     exec true: --seq sequential (200), --conc concurrent (50), for
            each key exchange of --kex
  mux       connection sharing: 50 sequential exec true through a master
            (ressh master vs ssh master, --reps times)
  memory    RSS/PSS per idle session and per detached session (--sessions 1000)
  reconnect reconnect after a killed connection / a route change (--trials 30)
  tls       restls beside stunnel4: --size through each tunnel both ways;
            restls's reconnect after a killed TLS connection (--trials);
            --tls-idle idle connections at the server end (10000): memory
            per connection, handshakes per second
  wan       long fast paths through a delay relay (1 Gbit/s; 50, 100, 200 ms
            round trip): raw TCP, exec cat both ways, sftp get and put; a cut
            during a download at 100 ms, throughput over time (--trace FILE)
--reps N    repetitions of each transfer (default 5)
--quick     reps 1, size 256 MiB, seq 50, conc 20, sessions 100, trials 10,
            tls-idle 1000
--out FILE  also write the report to FILE
--trace F   `wan`: write the cut's throughput over time to F (CSV)
--rtt L     `wan`: only these round trips, in ms (default 50,100,200)
--callgrind DIR  `resil`: also a download of 64 MiB (at most --size) with
            resilience on and off under valgrind's callgrind (ressh and
            resshd-session), instructions per GiB; the profiles stay in DIR
            (new or empty, reachable by other users: e.g. under /tmp) for
            callgrind_annotate
--ciphers L only these ciphers in `cat` (e.g. chacha20-poly1305@openssh.com)
--kex L     key exchanges of `setup`, each measured on both sides (default
            curve25519-sha256; e.g. mlkem768x25519-sha256,
            sntrup761x25519-sha512; Debian 12's OpenSSH has no mlkem768x25519,
            its column is then empty)
--down-only only server → client in `cat`
--serve     only start both servers (as for the measurements), print client
            command lines, and wait for Enter (for profiling by hand)";

/// Ciphers both implementations support (with the MAC used for CTR).
const CIPHERS: &[(&str, &str, Option<&str>)] = &[
    ("chacha20-poly1305", "chacha20-poly1305@openssh.com", None),
    ("aes128-gcm", "aes128-gcm@openssh.com", None),
    ("aes256-gcm", "aes256-gcm@openssh.com", None),
    (
        "aes128-ctr + hmac-sha2-256-etm",
        "aes128-ctr",
        Some("hmac-sha2-256-etm@openssh.com"),
    ),
    (
        "aes256-ctr + hmac-sha2-256-etm",
        "aes256-ctr",
        Some("hmac-sha2-256-etm@openssh.com"),
    ),
];

struct Opts {
    reps: usize,
    size_mib: u64,
    sessions: usize,
    seq: usize,
    conc: usize,
    trials: usize,
    /// Idle connections at each TLS tunnel's server end.
    tls_idle: usize,
    sections: Vec<&'static str>,
    out: Option<PathBuf>,
    /// Only start the two servers, print client commands, wait for Enter.
    serve: bool,
    /// Ciphers of the `cat` section (names as in [`CIPHERS`]); empty: all.
    ciphers: Vec<String>,
    /// Directions of the `cat` section.
    dirs: Vec<&'static str>,
    /// Key exchanges of the `setup` section.
    kex: Vec<String>,
    /// `wan`: where the cut's throughput over time goes (CSV).
    trace: Option<PathBuf>,
    /// `wan`: the round trips measured, in ms.
    rtts: Vec<u64>,
    /// `resil`: also count instructions under callgrind, profiles kept here.
    callgrind: Option<PathBuf>,
}

const SECTIONS: [&str; 11] = [
    "engine",
    "cat",
    "sftp",
    "resil",
    "setup",
    "mux",
    "memory",
    "reconnect",
    "fleet",
    "tls",
    "wan",
];

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        reps: 5,
        size_mib: 1024,
        sessions: 1000,
        seq: 200,
        conc: 50,
        trials: 30,
        tls_idle: 10_000,
        sections: SECTIONS.to_vec(),
        out: None,
        serve: false,
        ciphers: Vec::new(),
        dirs: vec!["down", "up"],
        kex: vec!["curve25519-sha256".to_string()],
        trace: None,
        rtts: vec![50, 100, 200],
        callgrind: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let list = |s: &str| -> Result<Vec<&'static str>, String> {
        s.split(',')
            .map(|x| {
                SECTIONS
                    .iter()
                    .find(|k| **k == x.trim())
                    .copied()
                    .ok_or_else(|| format!("unknown section {x:?}"))
            })
            .collect()
    };
    while i < args.len() {
        let a = args[i].as_str();
        let mut val = || -> Result<String, String> {
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        let num = |v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{a}: bad number {v:?}"))
        };
        match a {
            "--reps" => o.reps = num(val()?)?.max(1),
            "--size" => o.size_mib = num(val()?)?.max(1) as u64,
            "--sessions" => o.sessions = num(val()?)?.max(1),
            "--seq" => o.seq = num(val()?)?.max(1),
            "--conc" => o.conc = num(val()?)?.max(1),
            "--trials" => o.trials = num(val()?)?.max(1),
            "--tls-idle" => o.tls_idle = num(val()?)?.max(1),
            "--only" => o.sections = list(&val()?)?,
            "--trace" => o.trace = Some(PathBuf::from(val()?)),
            "--rtt" => {
                o.rtts = val()?
                    .split(',')
                    .map(|v| {
                        v.trim()
                            .parse::<u64>()
                            .map_err(|_| format!("--rtt: bad number {v:?}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--skip" => {
                let skip = list(&val()?)?;
                o.sections.retain(|s| !skip.contains(s));
            }
            "--quick" => {
                o.reps = 1;
                o.size_mib = 256;
                o.seq = 50;
                o.conc = 20;
                o.sessions = 100;
                o.trials = 10;
                o.tls_idle = 1000;
            }
            "--out" => o.out = Some(PathBuf::from(val()?)),
            "--callgrind" => o.callgrind = Some(PathBuf::from(val()?)),
            "--serve" => o.serve = true,
            "--ciphers" => o.ciphers = val()?.split(',').map(str::to_string).collect(),
            "--kex" => o.kex = val()?.split(',').map(str::to_string).collect(),
            "--down-only" => o.dirs = vec!["down"],
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
        i += 1;
    }
    Ok(o)
}

/// Progress on stderr.
macro_rules! say {
    ($($a:tt)*) => {{ eprintln!("ressh-bench: {}", format!($($a)*)); }};
}

/// One line of the final table.
struct Row {
    section: &'static str,
    what: String,
    unit: &'static str,
    ressh: Summary,
    openssh: Option<Summary>,
    /// true: a larger value is better (throughput); false: smaller (time, memory).
    higher_better: bool,
    prec: usize,
    note: String,
}

impl Row {
    fn advantage(&self) -> String {
        let Some(o) = &self.openssh else {
            return "–".into();
        };
        if self.higher_better {
            ratio(self.ressh.median, o.median)
        } else {
            ratio(o.median, self.ressh.median)
        }
    }
}

struct Bench {
    o: Opts,
    /// The user every session logs in as: a fresh account with /bin/sh and
    /// no startup files of note, so that logins cost the same on both
    /// servers and nothing of root's environment (~/.bashrc) is measured.
    user: TestUser,
    dir: TempDir,
    keys: Keys,
    file: PathBuf,
    /// `bytes` of log-like text, for compression (`cat` with -C).
    text: PathBuf,
    bytes: u64,
    ressh: PathBuf,
    resshd: PathBuf,
    rows: Vec<Row>,
    notes: Vec<String>,
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ressh-bench: {e}");
            std::process::exit(2);
        }
    };
    if !is_root() {
        eprintln!(
            "ressh-bench: needs root (it runs Debian's sshd, creates a temporary user to log \
             in as, and uses network namespaces); try `sudo bench/run`"
        );
        std::process::exit(2);
    }
    if let Err(e) = run(o) {
        eprintln!("ressh-bench: {e}");
        std::process::exit(1);
    }
}

fn run(o: Opts) -> Result<(), String> {
    proc::raise_nofile();
    let bins = bin_dir();
    let ressh = require_bin(&bins, "ressh")?;
    let resshd = require_bin(&bins, "resshd")?;
    require_bin(&bins, "resshd-kex")?;
    require_bin(&bins, "resshd-session")?;
    for p in ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/sftp"] {
        if !Path::new(p).exists() {
            return Err(format!(
                "{p} is missing: apt-get install openssh-server openssh-client"
            ));
        }
    }
    let dir = TempDir::new("bench");
    // The chroot of resshd's pre-auth worker must not be writable by others;
    // TempDir is 0700 root.
    let keys = Keys::generate(dir.path())?;
    let user = TestUser::create("bench");
    user.authorize_key(&keys.user_pub);
    let bytes = o.size_mib * MIB;
    let file = user.home.join("data");
    let text = user.home.join("text");
    if o.sections
        .iter()
        .any(|s| ["cat", "sftp", "resil", "wan"].contains(s))
    {
        say!(
            "writing {} MiB of random data to {}",
            o.size_mib,
            file.display()
        );
        make_file(&file, bytes)?;
        user.own(&file, 0o600);
    }
    if o.sections.contains(&"cat") {
        make_text_file(&text, bytes)?;
        user.own(&text, 0o600);
    }
    let mut b = Bench {
        o,
        user,
        dir,
        keys,
        file,
        text,
        bytes,
        ressh,
        resshd,
        rows: Vec::new(),
        notes: Vec::new(),
    };
    if b.o.serve {
        return b.serve();
    }
    let machine = machine_info(&b.ressh, &b.resshd);
    let started = Instant::now();
    let sections = b.o.sections.clone();
    for s in sections {
        // The load average would count our own previous section: measure
        // instead what the rest of the machine uses while we sit still, and
        // give it up to 30 s to settle (a previous section's thousand
        // sessions take a while to go).
        let settle = Instant::now();
        let others = loop {
            let t = Instant::now();
            let c0 = proc::cpu_busy();
            thread::sleep(Duration::from_secs(1));
            let others = (proc::cpu_busy() - c0) / t.elapsed().as_secs_f64();
            if others <= 0.15 || settle.elapsed() > Duration::from_secs(30) {
                break others;
            }
        };
        say!("== {s} (other processes busy: {others:.2} cores)");
        if others > 0.15 {
            b.notes.push(format!(
                "other processes kept {others:.2} cores busy just before section `{s}`"
            ));
        }
        let r = match s {
            "engine" => b.engine(),
            "cat" => b.throughput(),
            "sftp" => b.sftp(),
            "resil" => b.resilience(),
            "setup" => b.setup(),
            "mux" => b.mux(),
            "memory" => b.memory(),
            "reconnect" => b.reconnect(),
            "fleet" => b.fleet(),
            "tls" => b.tls(),
            "wan" => b.wan(),
            _ => Ok(()),
        };
        if let Err(e) = r {
            say!("section {s} failed: {e}");
            b.notes.push(format!("section `{s}` failed: {e}"));
        }
    }
    let report = b.report(&machine, started.elapsed());
    println!("{report}");
    if let Some(out) = &b.o.out {
        fs::write(out, &report).map_err(|e| format!("{}: {e}", out.display()))?;
        say!("report written to {}", out.display());
    }
    Ok(())
}

/// `bytes` of random data (from OpenSSL's generator) in `path`.
fn make_file(path: &Path, bytes: u64) -> Result<(), String> {
    let mut f = File::create(path).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        openssl::rand::rand_bytes(&mut buf[..n]).map_err(|e| e.to_string())?;
        f.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    f.sync_all().map_err(|e| e.to_string())
}

/// `bytes` of log-like text in `path`: deflate shrinks it about 10 times,
/// as it does a real log or source tree.
fn make_text_file(path: &Path, bytes: u64) -> Result<(), String> {
    let mut f = std::io::BufWriter::new(File::create(path).map_err(|e| e.to_string())?);
    let (mut written, mut i) = (0u64, 0u64);
    while written < bytes {
        let line = format!(
            "{i:09} worker {} finished job {:x} in {} ms\n",
            i % 13,
            i.wrapping_mul(2_654_435_761) % 65_521,
            i % 997
        );
        let n = line.len().min((bytes - written) as usize);
        f.write_all(&line.as_bytes()[..n])
            .map_err(|e| e.to_string())?;
        written += n as u64;
        i += 1;
    }
    f.into_inner()
        .map_err(|e| e.to_string())?
        .sync_all()
        .map_err(|e| e.to_string())
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s += &String::from_utf8_lossy(&o.stderr);
            s.trim().to_string()
        })
        .unwrap_or_else(|e| format!("({cmd}: {e})"))
}

fn machine_info(ressh: &Path, resshd: &Path) -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let cores = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let debian = fs::read_to_string("/etc/debian_version").unwrap_or_default();
    format!(
        "- CPU: {model}, {cores} cores available\n- memory: {mem}\n- kernel: Linux {}, \
         Debian {}\n- OpenSSH: {}\n- ressh: {}; {}\n- date: {}",
        kernel.trim(),
        debian.trim(),
        sh("ssh", &["-V"]),
        sh(&ressh.display().to_string(), &["-V"]),
        sh(&resshd.display().to_string(), &["-V"]),
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    )
}

// ----- one transfer ----------------------------------------------------------

/// What one transfer measured.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// From the first byte moving to the last one arriving (connection
    /// setup and teardown excluded).
    secs: f64,
    /// From spawning the client to the last byte.
    wall: f64,
    /// Busy CPU seconds of the whole machine meanwhile.
    cpu: f64,
    /// CPU seconds of the server's processes for this connection (the
    /// user's own command excluded), of the client, and of the command.
    server_cpu: f64,
    client_cpu: f64,
    cmd_cpu: f64,
}

/// Remote commands run for the user (their CPU is not the server's).
const USER_COMMANDS: &[&str] = &["cat", "sleep", "sh", "dash", "bash", "head"];

/// (server processes, user commands) CPU under `server`, for connections
/// made after the server started (the listener itself is excluded).
fn server_cpu(server: &Server) -> (f64, f64) {
    let (mut srv, mut cmd) = (0.0, 0.0);
    for p in proc::descendants(server.pid()) {
        let c = proc::cpu_of(p);
        if USER_COMMANDS.contains(&proc::comm(p).as_str()) {
            cmd += c;
        } else {
            srv += c;
        }
    }
    (srv, cmd)
}

/// Makes a pipe hold 1 MiB (64 KiB by default), so that the harness wakes
/// up 16 times less often than with the default; the same for both clients.
#[allow(unsafe_code)] // fcntl F_SETPIPE_SZ
fn grow_pipe(fd: i32) {
    // SAFETY: fcntl on a descriptor we own; no memory passed.
    unsafe {
        libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20);
    }
}

#[allow(unsafe_code)] // splice(2) on raw descriptors
fn splice(from: i32, to: i32, len: usize) -> isize {
    // SAFETY: plain splice(2) between two valid descriptors, no offsets.
    unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE,
        )
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// Runs `cmd`, a client whose remote command writes `bytes` to stdout and
/// then sleeps a second (so that its processes can be measured), with
/// stdout spliced to /dev/null by this process.
fn download(server: &Server, cmd: Command, bytes: u64) -> Result<Sample, String> {
    download_log(server, cmd, bytes).map(|(s, _)| s)
}

/// [`download`], also returning what the client wrote to stderr.
fn download_log(server: &Server, mut cmd: Command, bytes: u64) -> Result<(Sample, String), String> {
    let devnull = File::create("/dev/null").map_err(|e| e.to_string())?;
    let cpu0 = proc::cpu_busy();
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let out = child.stdout.take().expect("stdout");
    grow_pipe(out.as_raw_fd());
    let mut got = 0u64;
    let mut first = None;
    let mut end = None;
    let mut procs = (0.0, 0.0, 0.0);
    loop {
        let n = splice(out.as_raw_fd(), devnull.as_raw_fd(), 1 << 20);
        if n <= 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        got += n as u64;
        if got >= bytes && end.is_none() {
            end = Some((Instant::now(), proc::cpu_busy()));
            let (srv, cmd) = server_cpu(server);
            procs = (srv, proc::cpu_of(child.id()), cmd);
        }
    }
    let st = child.wait().map_err(|e| e.to_string())?;
    let err = stderr_of(&mut child);
    if !st.success() || got != bytes {
        return Err(format!(
            "client exited with {st} after {got} of {bytes} bytes: {}",
            err.trim()
        ));
    }
    let (end, cpu1) = end.expect("all bytes arrived");
    let first = first.unwrap_or(end);
    let s = Sample {
        secs: (end - first).as_secs_f64(),
        wall: (end - t0).as_secs_f64(),
        cpu: cpu1 - cpu0,
        server_cpu: procs.0,
        client_cpu: procs.1,
        cmd_cpu: procs.2,
    };
    Ok((s, err))
}

/// Runs `cmd`, a client whose remote command reads stdin to EOF, prints
/// `done` and sleeps a second, with `file` spliced into its stdin. The
/// transfer starts when the client first drains the pipe and ends when
/// `done` arrives.
fn upload(server: &Server, mut cmd: Command, file: &Path, bytes: u64) -> Result<Sample, String> {
    let src = File::open(file).map_err(|e| e.to_string())?;
    let cpu0 = proc::cpu_busy();
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdin = child.stdin.take().expect("stdin");
    grow_pipe(stdin.as_raw_fd());
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut sent = 0u64;
    let mut first = None;
    let mut calls = 0;
    while sent < bytes {
        let n = splice(
            src.as_raw_fd(),
            stdin.as_raw_fd(),
            (bytes - sent).min(MIB) as usize,
        );
        if n <= 0 {
            break;
        }
        calls += 1;
        // The first call fills the empty pipe; the second returns once the
        // client has started reading.
        if calls == 2 {
            first = Some(Instant::now());
        }
        sent += n as u64;
    }
    drop(stdin);
    let mut line = String::new();
    let _ = stdout.read_line(&mut line);
    let end = Instant::now();
    let cpu1 = proc::cpu_busy();
    let (srv, cmdc) = server_cpu(server);
    let client_cpu = proc::cpu_of(child.id());
    let st = child.wait().map_err(|e| e.to_string())?;
    let err = stderr_of(&mut child);
    if !st.success() || sent != bytes || line.trim() != "done" {
        return Err(format!(
            "client exited with {st} after {sent} of {bytes} bytes: {}",
            err.trim()
        ));
    }
    let first = first.unwrap_or(t0);
    Ok(Sample {
        secs: (end - first).as_secs_f64(),
        wall: (end - t0).as_secs_f64(),
        cpu: cpu1 - cpu0,
        server_cpu: srv,
        client_cpu,
        cmd_cpu: cmdc,
    })
}

/// Runs a command to completion and returns its wall time.
fn timed(cmd: &mut Command) -> Result<f64, String> {
    let t0 = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    let t = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "{:?} exited with {}: {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(t)
}

/// Raw TCP throughput (MB/s) of `bytes` to a sink on 127.0.0.1, directly
/// or through a [`DelayRelay`] delaying each way by `one_way` at `rate`.
fn raw_tcp(one_way: Option<Duration>, rate: u64, bytes: u64) -> Result<f64, String> {
    use ressh_bench::relay::RawTcp;
    let sink = RawTcp::sink().map_err(|e| e.to_string())?;
    let (got, secs) = match one_way {
        None => {
            let to = sink.addr;
            sink.send(to, bytes)
        }
        Some(d) => {
            let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| e.to_string())?;
            let relay = DelayRelay::start(l, sink.addr, d, rate).map_err(|e| e.to_string())?;
            let to = relay.addr;
            sink.send(to, bytes)
        }
    }
    .map_err(|e| format!("raw TCP: {e}"))?;
    if got != bytes {
        return Err(format!("raw TCP: {got} of {bytes} bytes arrived"));
    }
    Ok(mbps(bytes, secs))
}

/// Waits for the profiles of one ressh and one resshd-session in `out`
/// (each written when its process ends), moves them to `run`; their
/// instruction totals (client, server).
fn collect_callgrind(out: &Path, run: &Path) -> Result<(u64, u64), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut found = (None, None);
        for e in fs::read_dir(out).map_err(|e| e.to_string())? {
            let p = e.map_err(|e| e.to_string())?.path();
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let total = fs::read_to_string(&p).ok().and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("totals: "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            });
            match (name.split('.').next(), total) {
                (Some("ressh"), Some(n)) => found.0 = Some(n),
                (Some("resshd-session"), Some(n)) => found.1 = Some(n),
                _ => {}
            }
        }
        if let (Some(c), Some(s)) = found {
            let _ = fs::remove_dir_all(run);
            fs::rename(out, run).map_err(|e| e.to_string())?;
            fs::create_dir(out).map_err(|e| e.to_string())?;
            fs::set_permissions(out, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
                .map_err(|e| e.to_string())?;
            return Ok((c, s));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no callgrind profiles of ressh and resshd-session in {}",
                out.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

// ----- servers -----------------------------------------------------------------

impl Bench {
    /// A server of `kind` on 127.0.0.1 with the common settings plus `extra`.
    fn server(&self, kind: Kind, tag: &str, extra: &str) -> Result<Server, String> {
        let (bin, privsep) = match kind {
            Kind::Ressh => (self.resshd.clone(), Some("nobody".to_string())),
            Kind::OpenSsh => (PathBuf::from("/usr/sbin/sshd"), None),
        };
        let spec = ServerSpec {
            kind,
            bin,
            dir: self.dir.join(format!("{tag}-{}", kind.name())),
            listen: "127.0.0.1".parse().expect("address"),
            port: None,
            host_key: self.keys.host_key.clone(),
            authorized_keys: self.user.home.join(".ssh/authorized_keys"),
            privsep_user: privsep,
            extra: format!("MaxStartups 1000\nMaxSessions 100\n{extra}"),
        };
        Server::start(&spec, &|_| {})
    }

    fn client(&self, s: &Server, port: Option<u16>) -> Result<ClientSetup, String> {
        let bin = match s.kind {
            Kind::Ressh => self.ressh.clone(),
            Kind::OpenSsh => PathBuf::from("/usr/bin/ssh"),
        };
        ClientSetup::new(
            s.kind,
            &bin,
            &self.dir.join(format!("client-{}", s.kind.name())),
            &self.keys,
            &s.addr.to_string(),
            port.unwrap_or(s.port),
            &self.user.name,
        )
    }

    fn both(&self, tag: &str, extra: &str) -> Result<[(Server, ClientSetup); 2], String> {
        let r = self.server(Kind::Ressh, tag, extra)?;
        let o = self.server(Kind::OpenSsh, tag, extra)?;
        let rc = self.client(&r, None)?;
        let oc = self.client(&o, None)?;
        Ok([(r, rc), (o, oc)])
    }

    fn serve(&self) -> Result<(), String> {
        let pair = self.both("serve", "")?;
        for (s, c) in &pair {
            let cmd = c.ssh(&[]);
            let line: Vec<String> = std::iter::once(cmd.get_program())
                .chain(cmd.get_args())
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            println!(
                "{} (server pid {}, log {}):\n  {}",
                s.kind.name(),
                s.pid(),
                s.log.display(),
                line.join(" ")
            );
        }
        println!("data file: {}\npress Enter to stop", self.file.display());
        let mut l = String::new();
        let _ = std::io::stdin().read_line(&mut l);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        section: &'static str,
        what: impl Into<String>,
        unit: &'static str,
        ressh: &[f64],
        openssh: Option<&[f64]>,
        higher_better: bool,
        prec: usize,
        note: impl Into<String>,
    ) {
        self.rows.push(Row {
            section,
            what: what.into(),
            unit,
            ressh: Summary::of(ressh),
            openssh: openssh.map(Summary::of),
            higher_better,
            prec,
            note: note.into(),
        });
    }

    // ----- sections ----------------------------------------------------------

    /// restls beside stunnel4 (bench/src/tls.rs): a stream of --size bytes
    /// through each tunnel, both ways, and restls's reconnect time.
    fn tls(&mut self) -> Result<(), String> {
        let restls = require_bin(&bin_dir(), "restls")?;
        let dir = self.dir.join("tls");
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let (cert, key) = tls::make_cert(&dir)?;
        let backend = tls::Backend::start()?;
        let r = tls::start(
            Tunnel::Restls,
            &restls,
            &dir,
            &cert,
            &key,
            backend.port,
            false,
            &[],
        )?;
        let s = tls::start(
            Tunnel::Stunnel,
            &restls,
            &dir,
            &cert,
            &key,
            backend.port,
            false,
            &[],
        )?;
        let bytes = self.bytes;
        let gib = bytes as f64 / (1u64 << 30) as f64;
        for (down, label) in [
            (true, "backend → client end"),
            (false, "client end → backend"),
        ] {
            let (mut rt, mut st, mut rc, mut sc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for rep in 0..self.o.reps {
                for (t, name) in [(&r, "restls"), (&s, "stunnel4")] {
                    let (secs, cpu) = tls::transfer(t, down, bytes)
                        .map_err(|e| format!("{name}, {label}: {e}"))?;
                    say!(
                        "tls {label} {name} #{rep}: {:.0} MB/s (tunnel CPU {cpu:.2} s)",
                        mbps(bytes, secs)
                    );
                    let (tp, c) = if name == "restls" {
                        (&mut rt, &mut rc)
                    } else {
                        (&mut st, &mut sc)
                    };
                    tp.push(mbps(bytes, secs));
                    c.push(cpu / gib);
                }
            }
            self.row(
                "tls",
                format!("restls vs stunnel4, {} MiB, {label}", bytes / MIB),
                "MB/s",
                &rt,
                Some(&st),
                true,
                0,
                "the OpenSSH column is stunnel4; TLS 1.3 with OpenSSL's defaults on both",
            );
            self.row(
                "tls",
                "  CPU per GiB of both tunnel processes",
                "CPU s",
                &rc,
                Some(&sc),
                false,
                2,
                "",
            );
        }
        // Bytes on the wire, through a counting relay between the two ends
        // (apart from the timed runs: the relay costs CPU of its own).
        let mut wire = Vec::new();
        for kind in [Tunnel::Restls, Tunnel::Stunnel] {
            let t = tls::start(kind, &restls, &dir, &cert, &key, backend.port, true, &[])?;
            let (up, down) = tls::wire_overhead(&t, bytes.min(256 * MIB))?;
            say!("tls {kind:?}: wire bytes per data byte {up:.5} (data direction), {down:.6} back");
            wire.push((up, down));
        }
        self.row(
            "tls",
            "  wire overhead in the data's direction (TLS records, restls frames)",
            "%",
            &[(wire[0].0 - 1.0) * 100.0],
            Some(&[(wire[1].0 - 1.0) * 100.0]),
            false,
            3,
            "handshake included; client end → backend",
        );
        self.row(
            "tls",
            "  bytes sent back per data byte (restls: its ACKs)",
            "%",
            &[wire[0].1 * 100.0],
            Some(&[wire[1].1 * 100.0]),
            false,
            4,
            "handshake included",
        );
        let ms = tls::reconnects(&r, self.o.trials)?;
        let p95 = Summary::of(&ms).p95;
        say!(
            "restls after a killed TLS connection: median {:.1} ms, p95 {p95:.1} ms",
            Summary::of(&ms).median
        );
        let lost = tls::stunnel_loses_the_stream(&s)?;
        self.row(
            "tls",
            format!(
                "restls: after a killed TLS connection (SOCK_DESTROY), {} trials: median",
                ms.len()
            ),
            "ms",
            &ms,
            None,
            false,
            1,
            format!(
                "from the kill to the first byte echoed over the new connection; p95 {p95:.1} ms; \
                 stunnel4 {}",
                if lost {
                    "ends the application's connection instead"
                } else {
                    "kept the stream (unexpected)"
                }
            ),
        );
        drop((r, s));
        self.tls_idle(&restls, &dir, &cert, &key)
    }

    /// --tls-idle idle TLS connections straight to each tunnel's server end
    /// (restls: resilient ones), forwarded to a backend that keeps them:
    /// the server end's memory per connection and the handshake rate.
    fn tls_idle(
        &mut self,
        restls: &Path,
        dir: &Path,
        cert: &Path,
        key: &Path,
    ) -> Result<(), String> {
        let n = self.o.tls_idle;
        // Here: a client socket and a backend socket per connection; at the
        // server end (started after this, inheriting it): two as well.
        let want = 2 * n as u64 + 64;
        let limit = proc::raise_nofile_to(want);
        if limit < want {
            return Err(format!(
                "RLIMIT_NOFILE {limit}: {n} idle TLS connections need {want} (raising the hard \
                 limit needs CAP_SYS_RESOURCE; or a smaller --tls-idle)"
            ));
        }
        let holder = tls::Holder::start()?;
        let mut got = Vec::new();
        for kind in [Tunnel::Restls, Tunnel::Stunnel] {
            // Every connection comes from 127.0.0.1: lift the caps.
            let caps = n.to_string();
            let args = ["--max-connections", &caps, "--max-per-source", &caps];
            let t = tls::start(kind, restls, dir, cert, key, holder.port, false, &args)?;
            // Connections made by start()'s readiness check.
            proc::wait_until(Duration::from_secs(5), || holder.count() > 0);
            thread::sleep(Duration::from_millis(200));
            holder.clear();
            let idle = tls::idle_connections(&t, kind, cert, &holder, n)
                .map_err(|e| format!("{kind:?}, {n} idle connections: {e}"))?;
            say!(
                "tls {kind:?}: {n} idle connections, {:.0} handshakes/s, {:.1} KiB per connection",
                idle.handshakes_per_s,
                idle.bytes_per_conn / 1024.0
            );
            got.push(idle);
        }
        self.row(
            "tls",
            format!("idle TLS connections at the server end ({n}): memory per connection"),
            "KiB",
            &[got[0].bytes_per_conn / 1024.0],
            Some(&[got[1].bytes_per_conn / 1024.0]),
            false,
            1,
            "RSS growth of the server end process; restls: resilient connections, one thread; stunnel4: a thread each",
        );
        self.row(
            "tls",
            format!("  handshakes per second, {} clients at once", tls::CLIENTS),
            "1/s",
            &[got[0].handshakes_per_s],
            Some(&[got[1].handshakes_per_s]),
            true,
            0,
            "full TLS 1.3 handshakes (P-256 certificate), straight to the server end",
        );
        Ok(())
    }

    fn throughput(&mut self) -> Result<(), String> {
        let pair = self.both("cat", "")?;
        let up = "cat > /dev/null && echo done; sleep 1";
        let gib = self.bytes as f64 / (1u64 << 30) as f64;
        // Each cipher with random data, then the first one with -C and
        // text (compression both ways: zlib@openssh.com).
        let mut cases: Vec<(String, Vec<&str>, PathBuf)> = Vec::new();
        for (label, cipher, mac) in CIPHERS {
            if !self.o.ciphers.is_empty() && !self.o.ciphers.iter().any(|c| c == cipher) {
                continue;
            }
            let mut extra = vec!["-c", *cipher];
            if let Some(m) = mac {
                extra.extend(["-m", m]);
            }
            if cases.is_empty() {
                let mut compressed = extra.clone();
                compressed.push("-C");
                cases.push((format!("{label}, -C, text"), compressed, self.text.clone()));
            }
            cases.insert(
                cases.len() - 1,
                (label.to_string(), extra, self.file.clone()),
            );
        }
        for (label, extra, file) in cases {
            let down = format!("cat {}; sleep 1", file.display());
            for dir in self.o.dirs.clone() {
                let mut res: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
                for rep in 0..self.o.reps {
                    for (srv, c) in &pair {
                        let mut cmd = c.ssh(&extra);
                        let s = if dir == "down" {
                            cmd.arg(&down);
                            download(srv, cmd, self.bytes)
                        } else {
                            cmd.arg(up);
                            upload(srv, cmd, &file, self.bytes)
                        }
                        .map_err(|e| format!("{} {label} {dir}: {e}", c.kind.name()))?;
                        say!(
                            "{label} {dir} {} #{rep}: {:.0} MB/s ({:.2} s; {:.2} s from spawn; \
                             CPU s: server {:.2}, client {:.2}, command {:.2}, machine {:.2})",
                            c.kind.name(),
                            mbps(self.bytes, s.secs),
                            s.secs,
                            s.wall,
                            s.server_cpu,
                            s.client_cpu,
                            s.cmd_cpu,
                            s.cpu
                        );
                        res.entry(c.kind.name()).or_default().push(s);
                    }
                }
                let bytes = self.bytes;
                let get = |k: &str, f: &dyn Fn(&Sample) -> f64| -> Vec<f64> {
                    res[k].iter().map(f).collect()
                };
                let arrow = if dir == "down" {
                    "server → client"
                } else {
                    "client → server"
                };
                let tp = |s: &Sample| mbps(bytes, s.secs);
                self.row(
                    "cat",
                    format!("exec cat, {label}, {arrow}"),
                    "MB/s",
                    &get("ressh", &tp),
                    Some(&get("OpenSSH", &tp)),
                    true,
                    0,
                    "",
                );
                let srv = |s: &Sample| s.server_cpu / gib;
                let cli = |s: &Sample| s.client_cpu / gib;
                let (rc, oc) = (get("ressh", &cli), get("OpenSSH", &cli));
                self.row(
                    "cat",
                    "  server CPU per GiB",
                    "CPU s",
                    &get("ressh", &srv),
                    Some(&get("OpenSSH", &srv)),
                    false,
                    2,
                    format!(
                        "client: {:.2} vs {:.2} CPU s per GiB",
                        Summary::of(&rc).median,
                        Summary::of(&oc).median
                    ),
                );
            }
        }
        Ok(())
    }

    /// Long fast paths (issue 19): testkit's [`DelayRelay`] on 127.0.0.1
    /// between client and server, delaying each direction by half the round
    /// trip and pacing to 1 Gbit/s. First raw TCP (the relay's own cost),
    /// then ressh/resshd beside ssh/sshd (aes128-gcm for both): exec cat
    /// both ways, sftp get and put, as ratios and as shares of raw TCP
    /// through the same relay; then a cut during a download at 100 ms.
    fn wan(&mut self) -> Result<(), String> {
        const RATE: u64 = 125_000_000;
        let reps = self.o.reps;
        let bytes = self.bytes;
        let raw = |one_way: Option<Duration>| -> Result<Vec<f64>, String> {
            (0..reps).map(|_| raw_tcp(one_way, RATE, bytes)).collect()
        };
        let direct = raw(None)?;
        say!("raw TCP direct: {direct:.0?} MB/s");
        self.row(
            "wan",
            "raw TCP on 127.0.0.1, no relay",
            "MB/s",
            &direct,
            None,
            true,
            0,
            "",
        );
        let mut raw_by_rtt = BTreeMap::new();
        let rtts = self.o.rtts.clone();
        for &rtt in std::iter::once(&0).chain(&rtts) {
            let v = raw(Some(Duration::from_millis(rtt / 2)))?;
            say!("raw TCP through the relay, {rtt} ms: {v:.0?} MB/s");
            raw_by_rtt.insert(rtt, Summary::of(&v).median);
            self.row(
                "wan",
                format!("raw TCP through the relay, {rtt} ms round trip, 1 Gbit/s pacing"),
                "MB/s",
                &v,
                None,
                true,
                0,
                "the relay's own limit (125 MB/s is the pacing)",
            );
        }
        let cipher = ["-c", "aes128-gcm@openssh.com"];
        let down = format!("cat {}; sleep 1", self.file.display());
        let up = "cat > /dev/null && echo done; sleep 1";
        let [empty, get, put] = self.sftp_batches("wan")?;
        let servers = [
            self.server(Kind::Ressh, "wan", "")?,
            self.server(Kind::OpenSsh, "wan", "")?,
        ];
        for &rtt in &rtts {
            let one_way = Duration::from_millis(rtt / 2);
            let mut relays = Vec::new();
            let mut clients = Vec::new();
            for srv in &servers {
                let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| e.to_string())?;
                let r = DelayRelay::start(
                    l,
                    std::net::SocketAddr::new(srv.addr.into(), srv.port),
                    one_way,
                    RATE,
                )
                .map_err(|e| e.to_string())?;
                clients.push(self.client(srv, Some(r.addr.port()))?);
                relays.push(r);
            }
            let sftp = |c: &ClientSetup, b: &Path| -> Result<f64, String> {
                let bs = b.display().to_string();
                // -R 128: stock sftp keeps 64 requests of 255 KiB in flight
                // (the server's limits@openssh.com), 16.7 MB: at 200 ms that
                // alone caps it at 84 MB/s whatever the channel window.
                let mut cmd = c.sftp(&["-q", "-R", "128", "-b", &bs, "-c", cipher[1]]);
                cmd.arg(c.dest());
                timed(&mut cmd).map_err(|e| format!("sftp via {}: {e}", c.kind.name()))
            };
            let base: Vec<f64> = clients
                .iter()
                .map(|c| sftp(c, &empty))
                .collect::<Result<_, _>>()?;
            let mut res: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
            for rep in 0..reps {
                for (i, (srv, c)) in servers.iter().zip(&clients).enumerate() {
                    let k = c.kind.name();
                    let mut cmd = c.ssh(&cipher);
                    cmd.arg(&down);
                    let d = download(srv, cmd, bytes).map_err(|e| format!("{k} down: {e}"))?;
                    let mut cmd = c.ssh(&cipher);
                    cmd.arg(up);
                    let u =
                        upload(srv, cmd, &self.file, bytes).map_err(|e| format!("{k} up: {e}"))?;
                    let g = (sftp(c, &get)? - base[i]).max(1e-3);
                    let p = (sftp(c, &put)? - base[i]).max(1e-3);
                    let v = [
                        ("down", mbps(bytes, d.secs)),
                        ("up", mbps(bytes, u.secs)),
                        ("get", mbps(bytes, g)),
                        ("put", mbps(bytes, p)),
                    ];
                    say!("wan {rtt} ms {k} #{rep}: {v:.0?} MB/s");
                    for (what, x) in v {
                        res.entry((what, k)).or_default().push(x);
                    }
                }
            }
            let raw = raw_by_rtt[&rtt];
            for (what, label) in [
                ("down", "exec cat, server → client"),
                ("up", "exec cat, client → server"),
                (
                    "get",
                    "sftp get (stock sftp -R 128; -S ressh against resshd)",
                ),
                (
                    "put",
                    "sftp put (stock sftp -R 128; -S ressh against resshd)",
                ),
            ] {
                let r = &res[&(what, "ressh")];
                let share = Summary::of(r).median / raw * 100.0;
                self.row(
                    "wan",
                    format!("{label}, {rtt} ms round trip, 1 Gbit/s"),
                    "MB/s",
                    r,
                    Some(&res[&(what, "OpenSSH")]),
                    true,
                    0,
                    format!("ressh: {share:.0}% of raw TCP through the relay ({raw:.0} MB/s)"),
                );
            }
        }
        self.cut_trace(&servers[0])
    }

    /// A download at 100 ms through the relay, cut (the relay ends both
    /// connections) when a third of it has arrived: the bytes per 50 ms
    /// around the cut, written to --trace, and the time from the cut until
    /// a 200 ms window runs at 90% of the rate before the cut.
    fn cut_trace(&mut self, srv: &Server) -> Result<(), String> {
        const RATE: u64 = 125_000_000;
        const BIN: f64 = 0.05;
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| e.to_string())?;
        let relay = DelayRelay::start(
            l,
            std::net::SocketAddr::new(srv.addr.into(), srv.port),
            Duration::from_millis(50),
            RATE,
        )
        .map_err(|e| e.to_string())?;
        let c = self.client(srv, Some(relay.addr.port()))?;
        let mut cmd = c.ssh(&["-c", "aes128-gcm@openssh.com"]);
        cmd.arg(format!("cat {}; sleep 1", self.file.display()));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut out = child.stdout.take().expect("stdout");
        let mut buf = vec![0u8; 1 << 20];
        let (mut got, mut reads, mut cut_at) = (0u64, Vec::new(), None);
        let t0 = Instant::now();
        loop {
            let n = out.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            got += n as u64;
            reads.push((t0.elapsed().as_secs_f64(), got));
            if cut_at.is_none() && got >= self.bytes / 3 {
                relay.cut();
                cut_at = Some(t0.elapsed().as_secs_f64());
            }
        }
        let st = child.wait().map_err(|e| e.to_string())?;
        if !st.success() || got != self.bytes {
            return Err(format!(
                "cut trace: client exited with {st} after {got} of {} bytes: {}",
                self.bytes,
                stderr_of(&mut child).trim()
            ));
        }
        let cut = cut_at.ok_or("no cut")?;
        let first = reads.first().map_or(0.0, |r| r.0);
        let end = reads.last().map_or(0.0, |r| r.0);
        let bins = ((end - first) / BIN).ceil() as usize + 1;
        let mut per = vec![0u64; bins];
        let mut prev = 0;
        for (t, total) in &reads {
            per[((t - first) / BIN) as usize] += total - prev;
            prev = *total;
        }
        let rate = |from: f64, to: f64| -> f64 {
            let (a, b) = (
                ((from - first) / BIN) as usize,
                ((to - first) / BIN) as usize,
            );
            per[a.min(bins)..b.min(bins)].iter().sum::<u64>() as f64 / (to - from) / 1e6
        };
        let before = rate((cut - 1.0).max(first), cut);
        let back = (0..)
            .map(|i| cut + i as f64 * BIN)
            .take_while(|t| t + 0.2 <= end)
            .find(|t| rate(*t, t + 0.2) >= 0.9 * before)
            .map(|t| t - cut);
        if let Some(path) = &self.o.trace {
            let mut csv = String::from("seconds_from_cut,MB_per_s\n");
            for (i, b) in per.iter().enumerate() {
                let t = first + i as f64 * BIN - cut;
                csv += &format!("{t:.3},{:.1}\n", *b as f64 / BIN / 1e6);
            }
            fs::write(path, csv).map_err(|e| format!("{}: {e}", path.display()))?;
            say!("cut trace written to {}", path.display());
        }
        say!("cut at {cut:.2} s: {before:.0} MB/s before, back to 90% after {back:?} s");
        self.row(
            "wan",
            "a cut during a download at 100 ms: from the cut to 90% of the rate before",
            "ms",
            &[back.map_or(f64::NAN, |b| b * 1000.0)],
            None,
            false,
            0,
            format!("{before:.0} MB/s in the second before the cut; 200 ms windows"),
        );
        Ok(())
    }

    fn engine(&mut self) -> Result<(), String> {
        use ressh_bench::engine;
        let total = 256 << 20;
        for (label, cipher, mac) in CIPHERS {
            let mac = mac.unwrap_or("hmac-sha2-256-etm@openssh.com");
            let mut pk = (Vec::new(), Vec::new());
            let mut on = (Vec::new(), Vec::new());
            let mut off = (Vec::new(), Vec::new());
            for _ in 0..self.o.reps.max(3) {
                let r = engine::packets(cipher, mac, total);
                pk.0.push(r.send);
                pk.1.push(r.recv);
                let r = engine::engine(cipher, mac, true, total);
                on.0.push(r.send);
                on.1.push(r.recv);
                let r = engine::engine(cipher, mac, false, total);
                off.0.push(r.send);
                off.1.push(r.recv);
            }
            let m = |v: &Vec<f64>| Summary::of(v).median;
            say!(
                "engine {label}: send {:.0} MB/s (packets alone {:.0}, resilience off {:.0}); \
                 receive {:.0} MB/s (packets alone {:.0}, resilience off {:.0})",
                m(&on.0),
                m(&pk.0),
                m(&off.0),
                m(&on.1),
                m(&pk.1),
                m(&off.1)
            );
            for (side, v, p, o) in [
                ("sending", &on.0, &pk.0, &off.0),
                ("receiving", &on.1, &pk.1, &off.1),
            ] {
                self.row(
                    "engine",
                    format!("engine in memory, {label}, {side} (per CPU second)"),
                    "MB/s",
                    v,
                    None,
                    true,
                    0,
                    format!("packet layer alone {:.0}; resilience off {:.0}", m(p), m(o)),
                );
            }
        }
        Ok(())
    }

    /// sftp batch files `PREFIX-empty` (a round trip), `PREFIX-get` and
    /// `PREFIX-put` (the test file to and from /dev/null).
    fn sftp_batches(&self, prefix: &str) -> Result<[PathBuf; 3], String> {
        let batch = |name: &str, text: String| -> Result<PathBuf, String> {
            let p = self.dir.join(format!("{prefix}-{name}"));
            fs::write(&p, text).map_err(|e| e.to_string())?;
            Ok(p)
        };
        let file = self.file.display();
        Ok([
            batch("empty", "pwd\n".into())?,
            batch("get", format!("get {file} /dev/null\n"))?,
            batch("put", format!("put {file} /dev/null\n"))?,
        ])
    }

    fn sftp(&mut self) -> Result<(), String> {
        let pair = self.both("sftp", "")?;
        let [empty, get, put] = self.sftp_batches("sftp")?;
        let run = |c: &ClientSetup, b: &Path| -> Result<f64, String> {
            let bs = b.display().to_string();
            let mut cmd = c.sftp(&["-q", "-b", &bs]);
            cmd.arg(c.dest());
            timed(&mut cmd).map_err(|e| format!("sftp via {}: {e}", c.kind.name()))
        };
        let mut base: BTreeMap<&str, f64> = BTreeMap::new();
        for (_, c) in &pair {
            let v: Result<Vec<f64>, String> = (0..5).map(|_| run(c, &empty)).collect();
            let m = Summary::of(&v?).median;
            say!(
                "sftp session without a transfer via {}: {:.3} s",
                c.kind.name(),
                m
            );
            base.insert(c.kind.name(), m);
        }
        for (what, b) in [("get", &get), ("put", &put)] {
            let mut res: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            for rep in 0..self.o.reps {
                for (_, c) in &pair {
                    let t = run(c, b)?;
                    let secs = (t - base[c.kind.name()]).max(1e-3);
                    say!(
                        "sftp {what} {} #{rep}: {:.0} MB/s ({t:.2} s with setup)",
                        c.kind.name(),
                        mbps(self.bytes, secs)
                    );
                    res.entry(c.kind.name())
                        .or_default()
                        .push(mbps(self.bytes, secs));
                }
            }
            self.row(
                "sftp",
                format!("sftp {what} (stock sftp; -S ressh against resshd)"),
                "MB/s",
                &res["ressh"],
                Some(&res["OpenSSH"]),
                true,
                0,
                "session setup subtracted",
            );
        }
        Ok(())
    }

    fn resilience(&mut self) -> Result<(), String> {
        let s = self.server(Kind::Ressh, "resil", "")?;
        let c = self.client(&s, None)?;
        let cat = format!("cat {}; sleep 1", self.file.display());
        // Throughput on this small machine varies by ±15% from run to run
        // (where the scheduler puts client, server and `cat`): more
        // repetitions here, and the CPU time, which varies less.
        let mut on: Vec<Sample> = Vec::new();
        let mut off: Vec<Sample> = Vec::new();
        for rep in 0..self.o.reps.max(5) {
            for (res, extra) in [(&mut on, "yes"), (&mut off, "no")] {
                let opt = format!("Resilience={extra}");
                let mut cmd = c.ssh(&["-o", &opt]);
                cmd.arg(&cat);
                let smp = download(&s, cmd, self.bytes)?;
                say!(
                    "resilience {extra} #{rep}: {:.0} MB/s (CPU s: server {:.2}, client {:.2})",
                    mbps(self.bytes, smp.secs),
                    smp.server_cpu,
                    smp.client_cpu
                );
                res.push(smp);
            }
        }
        let bytes = self.bytes;
        let gib = bytes as f64 / (1u64 << 30) as f64;
        let tp = |v: &[Sample]| -> Vec<f64> { v.iter().map(|s| mbps(bytes, s.secs)).collect() };
        let cpu = |v: &[Sample]| -> Vec<f64> {
            v.iter()
                .map(|s| (s.server_cpu + s.client_cpu) / gib)
                .collect()
        };
        let (ton, toff) = (tp(&on), tp(&off));
        let (con, coff) = (cpu(&on), cpu(&off));
        self.row(
            "resil",
            "exec cat server → client, resilience on (ressh) vs off (ressh -o Resilience=no)",
            "MB/s",
            &ton,
            Some(&toff),
            true,
            0,
            "the OpenSSH column is ressh with resilience off",
        );
        self.row(
            "resil",
            "  CPU per GiB, server + client, on vs off",
            "CPU s",
            &con,
            Some(&coff),
            false,
            2,
            "",
        );
        // ACK bytes on the wire, as counted by the client (`ressh -v` logs
        // them at exit): in a download, the client is the one acknowledging.
        let mut cmd = c.ssh(&["-v"]);
        cmd.arg(&cat);
        let (_, log) = download_log(&s, cmd, self.bytes)?;
        let line = log
            .lines()
            .find(|l| l.contains("resilience: sent"))
            .ok_or("ressh -v did not log its ACK counts")?;
        let num_after = |key: &str| -> f64 {
            line.split(key)
                .next()
                .and_then(|x| x.split_whitespace().last())
                .and_then(|x| x.trim_start_matches('(').parse().ok())
                .unwrap_or(f64::NAN)
        };
        let acks = num_after(" ACKs");
        let ack_bytes = num_after(" bytes on the wire");
        say!("{}", line.trim());
        let share = ack_bytes / self.bytes as f64 * 100.0;
        self.row(
            "resil",
            "ACK bytes on the wire per byte of data, in a download",
            "%",
            &[share],
            None,
            false,
            5,
            format!(
                "{acks:.0} ACKs, {ack_bytes:.0} bytes (length, padding and tag included) \
                 for {} MiB of data (ressh -v's count)",
                self.o.size_mib
            ),
        );
        match self.o.callgrind.clone() {
            Some(dir) => self.resilience_callgrind(&dir),
            None => Ok(()),
        }
    }

    /// A download with resilience on and off under callgrind: instructions
    /// (user space, no kernel) of ressh and resshd-session per GiB. Machine
    /// load does not change the counts, so one transfer each is enough.
    fn resilience_callgrind(&mut self, dir: &Path) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        if !Path::new("/usr/bin/valgrind").exists() {
            return Err("--callgrind needs valgrind: apt-get install valgrind".into());
        }
        let out = dir.join("out");
        fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        if fs::read_dir(&out)
            .map_err(|e| e.to_string())?
            .next()
            .is_some()
        {
            return Err(format!("{} is not empty", out.display()));
        }
        // The session worker runs as the bench's user: it must reach the
        // wrapper and write its profile.
        let open = |p: &Path, mode: u32| {
            fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
        };
        open(dir, 0o755)?;
        open(&out, 0o1777)?;
        let wrapper = |name: &str, bin: &Path| -> Result<PathBuf, String> {
            let p = dir.join(format!("{name}.sh"));
            // The profile is made before exec, writable by all: callgrind
            // writes it at exit, after resshd-session became the user.
            let text = format!(
                "#!/bin/sh\nf={}/{name}.$$\n: > \"$f\"\nchmod 666 \"$f\"\n\
                 exec /usr/bin/valgrind -q --tool=callgrind --callgrind-out-file=\"$f\" {} \"$@\"\n",
                out.display(),
                bin.display()
            );
            fs::write(&p, text).map_err(|e| e.to_string())?;
            open(&p, 0o755)?;
            Ok(p)
        };
        let session = wrapper(
            "resshd-session",
            &require_bin(&bin_dir(), "resshd-session")?,
        )?;
        let extra = format!("ResshdSessionPath {}\n", session.display());
        let s = self.server(Kind::Ressh, "resil-callgrind", &extra)?;
        let mut c = self.client(&s, None)?;
        c.bin = wrapper("ressh", &self.ressh)?;
        let bytes = self.bytes.min(64 * MIB);
        let cmd = format!("head -c {bytes} {}; sleep 1", self.file.display());
        let mut counts = Vec::new();
        for on in ["yes", "no"] {
            let opt = format!("Resilience={on}");
            let mut ssh = c.ssh(&["-o", &opt]);
            ssh.arg(&cmd);
            download(&s, ssh, bytes).map_err(|e| format!("under callgrind: {e}"))?;
            let run = dir.join(format!("resilience-{on}"));
            let (client, server) = collect_callgrind(&out, &run)?;
            say!(
                "callgrind, resilience {on}: ressh {client}, resshd-session {server} instructions"
            );
            counts.push((client, server));
        }
        let gib = bytes as f64 / (1u64 << 30) as f64;
        let per = |n: u64| n as f64 / gib / 1e9;
        for (i, what) in [
            "ressh + resshd-session",
            "  ressh (client, receiving)",
            "  resshd-session (server, sending)",
        ]
        .into_iter()
        .enumerate()
        {
            let pick = |(c, s): (u64, u64)| [c + s, c, s][i];
            self.row(
                "resil",
                format!("instructions per GiB, {what}, on vs off (callgrind)"),
                "10⁹",
                &[per(pick(counts[0]))],
                Some(&[per(pick(counts[1]))]),
                false,
                2,
                if i == 0 {
                    format!(
                        "{} MiB download once each; user space only; profiles in {}",
                        bytes / MIB,
                        dir.display()
                    )
                } else {
                    String::new()
                },
            );
        }
        Ok(())
    }

    fn setup(&mut self) -> Result<(), String> {
        let pair = self.both("setup", "")?;
        let openssh_kex = Command::new("/usr/bin/ssh")
            .args(["-Q", "kex"])
            .output()
            .map_err(|e| format!("ssh -Q kex: {e}"))?;
        let openssh_kex = String::from_utf8_lossy(&openssh_kex.stdout).into_owned();
        for kex in self.o.kex.clone() {
            // Each side that has the method; OpenSSH's column stays empty
            // without it (Debian 12 has no mlkem768x25519-sha256).
            let sides: Vec<&ClientSetup> = pair
                .iter()
                .map(|(_, c)| c)
                .filter(|c| c.kind == Kind::Ressh || openssh_kex.lines().any(|l| l == kex))
                .collect();
            self.setup_kex(&sides, &kex)?;
        }
        Ok(())
    }

    /// `exec true` with key exchange `kex`, through each client of `sides`.
    fn setup_kex(&mut self, sides: &[&ClientSetup], kex: &str) -> Result<(), String> {
        let opt = format!("KexAlgorithms={kex}");
        let mut seq: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut cpu: BTreeMap<&str, f64> = BTreeMap::new();
        let blocks = 10.min(self.o.seq);
        let per = self.o.seq.div_ceil(blocks);
        for block in 0..blocks {
            for c in sides {
                let c0 = proc::cpu_busy();
                for _ in 0..per {
                    let mut cmd = c.ssh(&["-o", &opt]);
                    cmd.arg("true");
                    let t = timed(&mut cmd)?;
                    seq.entry(c.kind.name()).or_default().push(t * 1000.0);
                }
                *cpu.entry(c.kind.name()).or_default() += proc::cpu_busy() - c0;
            }
            say!(
                "sequential exec true ({kex}): block {}/{blocks} done",
                block + 1
            );
        }
        for c in sides {
            let s = Summary::of(&seq[c.kind.name()]);
            say!(
                "{} ({kex}): exec true median {:.1} ms, p95 {:.1} ms",
                c.kind.name(),
                s.median,
                s.p95
            );
        }
        let n = (per * blocks) as f64;
        self.row(
            "setup",
            format!(
                "exec true, {} sequential, {kex}: time per connection",
                per * blocks
            ),
            "ms",
            &seq["ressh"],
            seq.get("OpenSSH").map(Vec::as_slice),
            false,
            1,
            "median (min–max); p95 below",
        );
        let p95 = |k: &str| seq.get(k).map(|v| vec![Summary::of(v).p95]);
        self.row(
            "setup",
            "  p95 of the same",
            "ms",
            &p95("ressh").unwrap_or_default(),
            p95("OpenSSH").as_deref(),
            false,
            1,
            "",
        );
        self.row(
            "setup",
            "  CPU per connection (whole machine, client + server)",
            "ms",
            &[cpu["ressh"] / n * 1000.0],
            cpu.get("OpenSSH").map(|c| vec![c / n * 1000.0]).as_deref(),
            false,
            1,
            "",
        );
        let mut rate: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut lat: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for rep in 0..self.o.reps.max(3) {
            for c in sides {
                let t0 = Instant::now();
                let mut kids = Vec::new();
                for _ in 0..self.o.conc {
                    let mut cmd = c.ssh(&["-o", &opt]);
                    cmd.arg("true")
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null());
                    kids.push(cmd.spawn().map_err(|e| e.to_string())?);
                }
                let mut failed = 0;
                for mut k in kids {
                    let ok = k.wait().map(|s| s.success()).unwrap_or(false);
                    if !ok {
                        failed += 1;
                    }
                    lat.entry(c.kind.name())
                        .or_default()
                        .push(t0.elapsed().as_secs_f64() * 1000.0);
                }
                let wall = t0.elapsed().as_secs_f64();
                if failed > 0 {
                    return Err(format!(
                        "{} of {} concurrent {} connections failed",
                        failed,
                        self.o.conc,
                        c.kind.name()
                    ));
                }
                say!(
                    "{} concurrent via {} #{rep}: {wall:.2} s, {:.0} connections/s",
                    self.o.conc,
                    c.kind.name(),
                    self.o.conc as f64 / wall
                );
                rate.entry(c.kind.name())
                    .or_default()
                    .push(self.o.conc as f64 / wall);
            }
        }
        self.row(
            "setup",
            format!(
                "exec true, {} at once, {kex}: connections per second",
                self.o.conc
            ),
            "conn/s",
            &rate["ressh"],
            rate.get("OpenSSH").map(Vec::as_slice),
            true,
            0,
            "",
        );
        Ok(())
    }

    /// Connection sharing: 50 sequential `exec true` over one shared
    /// connection, a ressh master against resshd beside an ssh master
    /// against sshd, each with clients of its own kind; then stock `ssh`
    /// clients through the ressh master (the master alone compared).
    fn mux(&mut self) -> Result<(), String> {
        const N: usize = 50;
        let pair = self.both("mux", "")?;
        let stock = self.client(&pair[1].0, None)?;
        let mut per: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut stock_via_ressh: Vec<f64> = Vec::new();
        for rep in 0..self.o.reps {
            for (_, c) in &pair {
                let sock = self.dir.join(format!("mux-{}-{rep}", c.kind.name()));
                let s = sock.to_string_lossy().into_owned();
                timed(&mut c.ssh(&["-S", &s, "-M", "-N", "-f"]))?;
                let run = |client: &ClientSetup| -> Result<f64, String> {
                    let t0 = Instant::now();
                    for _ in 0..N {
                        let mut cmd = client.ssh(&["-S", &s]);
                        cmd.arg("true");
                        timed(&mut cmd)?;
                    }
                    Ok(t0.elapsed().as_secs_f64())
                };
                let own = run(c)?;
                per.entry(c.kind.name()).or_default().push(own);
                if c.kind == Kind::Ressh {
                    stock_via_ressh.push(run(&stock)?);
                }
                timed(&mut c.ssh(&["-S", &s, "-O", "exit"]))?;
                say!(
                    "mux #{rep} via {}: {N} commands in {own:.2} s",
                    c.kind.name()
                );
            }
        }
        self.row(
            "mux",
            format!("{N} sequential exec true over one shared connection (own clients)"),
            "s",
            &per["ressh"],
            per.get("OpenSSH").map(Vec::as_slice),
            false,
            2,
            "ressh -S via a ressh master vs ssh -S via an ssh master",
        );
        self.row(
            "mux",
            "  the same with stock ssh -S clients",
            "s",
            &stock_via_ressh,
            per.get("OpenSSH").map(Vec::as_slice),
            false,
            2,
            "stock ssh through the ressh master vs through the ssh master",
        );
        Ok(())
    }

    fn memory(&mut self) -> Result<(), String> {
        let n = self.o.sessions;
        let mut results: BTreeMap<&str, MemResult> = BTreeMap::new();
        for kind in [Kind::Ressh, Kind::OpenSsh] {
            let extra = format!("MaxDetachedSessions {}\nDetachTimeout 3600\n", n + 10);
            let extra = if kind == Kind::Ressh {
                extra
            } else {
                String::new()
            };
            let s = self.server(kind, "memory", &extra)?;
            let c = self.client(&s, None)?;
            thread::sleep(Duration::from_millis(200));
            let base = proc::tree_mem(&s.tree());
            let t0 = Instant::now();
            let mut kids: Vec<(Child, BufReader<ChildStdout>)> = Vec::new();
            let mut failed = 0;
            while kids.len() + failed < n {
                let wave = (n - kids.len() - failed).min(25);
                let mut batch = Vec::new();
                for _ in 0..wave {
                    let mut cmd = c.ssh(&["-T"]);
                    cmd.arg("echo ready; exec sleep 100000")
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null());
                    batch.push(cmd.spawn().map_err(|e| e.to_string())?);
                }
                for mut k in batch {
                    let mut r = BufReader::new(k.stdout.take().expect("stdout"));
                    let mut line = String::new();
                    let _ = r.read_line(&mut line);
                    if line.trim() == "ready" {
                        kids.push((k, r));
                    } else {
                        failed += 1;
                        let _ = k.kill();
                        let _ = k.wait();
                    }
                }
                if kids.len() % 250 < 25 {
                    say!("{}: {} sessions up", kind.name(), kids.len());
                }
            }
            if failed > 0 {
                self.notes.push(format!(
                    "memory: {failed} of {n} {} sessions failed to start",
                    kind.name()
                ));
            }
            let up = kids.len().max(1) as f64;
            say!(
                "{}: {} sessions in {:.1} s",
                kind.name(),
                kids.len(),
                t0.elapsed().as_secs_f64()
            );
            thread::sleep(Duration::from_secs(2));
            let idle = proc::tree_mem(&s.tree());
            let cmd_mem = idle.by_comm.get("sleep").map(|x| x.1).unwrap_or_default();
            let client_pids: Vec<u32> = kids.iter().map(|(k, _)| k.id()).collect();
            let cm = proc::tree_mem(&client_pids);
            let per = |a: &Mem, b: &Mem, minus: &Mem, f: fn(&Mem) -> u64| {
                (f(a) as f64 - f(b) as f64 - f(minus) as f64) / up / 1024.0
            };
            let rss = |m: &Mem| m.rss;
            let pss = |m: &Mem| m.pss;
            let desc: Vec<String> = {
                let mut v: Vec<_> = idle.by_comm.iter().collect();
                v.sort_by_key(|(k, _)| (*k).clone());
                v.iter()
                    .map(|(k, (cnt, m))| format!("{k}×{cnt}: RSS {} MiB", m.rss / 1024))
                    .collect()
            };
            say!(
                "{} server processes with {} sessions: {}",
                kind.name(),
                kids.len(),
                desc.join(", ")
            );
            let key = kind.name();
            let mut r = MemResult {
                sessions: kids.len(),
                idle_rss: per(&idle.total, &base.total, &cmd_mem, rss),
                idle_pss: per(&idle.total, &base.total, &cmd_mem, pss),
                procs_per_session: (idle.procs as f64
                    - base.procs as f64
                    - idle.by_comm.get("sleep").map(|x| x.0).unwrap_or(0) as f64)
                    / up,
                client_rss: cm.total.rss as f64 / up / 1024.0,
                client_pss: cm.total.pss as f64 / up / 1024.0,
                detached_rss: f64::NAN,
                detached_pss: f64::NAN,
            };
            if kind == Kind::Ressh {
                proc::kill_all(&client_pids);
                for (mut k, _) in kids.drain(..) {
                    let _ = k.wait();
                }
                let want = r.sessions;
                let ok = proc::wait_until(Duration::from_secs(60), || {
                    s.log_text().matches("Detached:").count() >= want
                });
                if !ok {
                    self.notes.push(format!(
                        "memory: only {} of {want} sessions logged Detached",
                        s.log_text().matches("Detached:").count()
                    ));
                }
                thread::sleep(Duration::from_secs(2));
                let det = proc::tree_mem(&s.tree());
                let cmd_mem = det.by_comm.get("sleep").map(|x| x.1).unwrap_or_default();
                r.detached_rss = per(&det.total, &base.total, &cmd_mem, rss);
                r.detached_pss = per(&det.total, &base.total, &cmd_mem, pss);
            }
            say!("{key}: {r:?}");
            drop(kids);
            drop(s);
            results.insert(key, r);
        }
        let (r, o) = (results["ressh"].clone(), results["OpenSSH"].clone());
        let n = r.sessions;
        self.row(
            "memory",
            format!("server RSS per idle session ({n} sessions)"),
            "MiB",
            &[r.idle_rss],
            Some(&[o.idle_rss]),
            false,
            2,
            "all server processes, minus the user's `sleep`",
        );
        self.row(
            "memory",
            "  PSS per idle session (shared pages split)",
            "MiB",
            &[r.idle_pss],
            Some(&[o.idle_pss]),
            false,
            2,
            format!(
                "server processes per session: {:.1} vs {:.1}",
                r.procs_per_session, o.procs_per_session
            ),
        );
        self.row(
            "memory",
            "server RSS per detached session (client killed)",
            "MiB",
            &[r.detached_rss],
            Some(&[o.idle_rss]),
            false,
            2,
            "OpenSSH column: its idle session (it has no detached state)",
        );
        self.row(
            "memory",
            "  PSS per detached session",
            "MiB",
            &[r.detached_pss],
            Some(&[o.idle_pss]),
            false,
            2,
            "",
        );
        self.row(
            "memory",
            "client RSS per session",
            "MiB",
            &[r.client_rss],
            Some(&[o.client_rss]),
            false,
            2,
            format!("PSS {:.2} vs {:.2} MiB", r.client_pss, o.client_pss),
        );
        Ok(())
    }

    fn reconnect(&mut self) -> Result<(), String> {
        let net = Net::new("bench");
        let port = 2222;
        let spec = ServerSpec {
            kind: Kind::Ressh,
            bin: self.resshd.clone(),
            dir: self.dir.join("reconnect-resshd"),
            listen: net.server_addr(),
            port: Some(port),
            host_key: self.keys.host_key.clone(),
            authorized_keys: self.user.home.join(".ssh/authorized_keys"),
            privsep_user: Some("nobody".into()),
            extra: "DetachTimeout 600\n".into(),
        };
        let server = Server::start(&spec, &|cmd| {
            net.in_server(cmd);
        })?;
        let c = ClientSetup::new(
            Kind::Ressh,
            &self.ressh,
            &self.dir.join("client-reconnect"),
            &self.keys,
            &net.server_addr().to_string(),
            port,
            &self.user.name,
        )?;
        let log = self.dir.join("reconnect-client.log");
        let logs = log.display().to_string();
        let mut cmd = c.ssh(&["-T", "-o", "LogLevel=VERBOSE", "-E", &logs]);
        cmd.arg("cat");
        net.in_client(&mut cmd);
        let mut cat = Cat::spawn(cmd)?;
        let dst = std::net::SocketAddrV4::new(net.server_addr(), port);
        let reconnects = || {
            fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("reconnected to")
                .count()
        };
        // Killed connections: SOCK_DESTROY (as `ss -K`) from a thread in the
        // client's namespace, timed at the call; then one byte through the
        // session's `cat` and back, which only the new connection can carry.
        let mut kill = Vec::new();
        for i in 0..self.o.trials {
            thread::sleep(Duration::from_millis(150));
            cat.echo(1, Duration::from_secs(10))?;
            let (t0, _) = net
                .enter_client(|| ressh_bench::lab::destroy_tcp_to(dst))
                .map_err(|e| {
                    format!("SOCK_DESTROY (the kernel needs CONFIG_INET_DIAG_DESTROY): {e}")
                })?;
            cat.echo(1, Duration::from_secs(20))
                .map_err(|e| format!("kill trial {i}: {e}"))?;
            kill.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        say!(
            "after a killed connection: median {:.1} ms, p95 {:.1} ms",
            Summary::of(&kill).median,
            Summary::of(&kill).p95
        );
        // Route changes: the client moves between two uplinks (a new
        // address each time): the new uplink is made first, then, in one
        // `ip -batch`, the default route moves to it and the old one is
        // deleted. The trigger is the kernel's announcement of the route
        // change (netlink, as ressh hears it); the end is ressh logging that
        // the session runs on its new connection. The old connection keeps
        // working until its uplink goes (make-before-break), so a byte sent
        // at the trigger may still take it: the log is the witness.
        let watch = net
            .enter_client(ressh_bench::lab::RouteWatch::start)
            .map_err(|e| format!("netlink: {e}"))?;
        let logw = ressh_bench::lab::LogWatch::new(&log).map_err(|e| format!("inotify: {e}"))?;
        let mut roam = Vec::new();
        let mut roam_alone = Vec::new();
        let mut cur = 1u8; // Net starts on uplink A: 198.18.1.2 via up-a.
        for i in 0..2 * self.o.trials {
            // First the realistic move (route and old uplink in one batch),
            // then the route change alone (the old uplink deleted after).
            let split = i >= self.o.trials;
            let new = 3 - cur;
            add_uplink(&net, new)?;
            // Let the client see the new interface come up (it must not
            // move yet: the default route is unchanged).
            thread::sleep(Duration::from_millis(150));
            cat.echo(1, Duration::from_secs(10))?;
            let before = reconnects();
            let t_start = Instant::now();
            let route = format!(
                "route replace default via 198.18.{new}.1 dev {}\n",
                iface(new)
            );
            let del = format!("link del {}\n", iface(cur));
            ip_batch(net.client_ns(), &if split { route } else { route + &del })?;
            let done = logw
                .wait(Duration::from_secs(30), || reconnects() > before)
                .ok_or(format!("roam trial {i}: ressh did not log a reconnect"))?;
            let t0 = watch
                .first_after(t_start)
                .ok_or(format!("roam trial {i}: no netlink announcement"))?;
            let ms = done.saturating_duration_since(t0).as_secs_f64() * 1000.0;
            if split {
                roam_alone.push(ms);
                ip_batch(net.client_ns(), &del)?;
            } else {
                roam.push(ms);
            }
            cat.echo(1, Duration::from_secs(10))
                .map_err(|e| format!("roam trial {i}: {e}"))?;
            cur = new;
        }
        say!(
            "after a route change: median {:.1} ms, p95 {:.1} ms; the route change alone: {:.1} / {:.1} ms",
            Summary::of(&roam).median,
            Summary::of(&roam).p95,
            Summary::of(&roam_alone).median,
            Summary::of(&roam_alone).p95
        );
        drop(cat);
        let logged = reconnects();
        drop(watch);
        drop(server);
        drop(net);
        let t = self.o.trials;
        self.row(
            "reconnect",
            format!("after a killed connection (SOCK_DESTROY, as ss -K), {t} trials: median"),
            "ms",
            &kill,
            None,
            false,
            1,
            format!(
                "from the kill to the first byte echoed over the new connection; p95 {:.1} ms",
                Summary::of(&kill).p95
            ),
        );
        self.row(
            "reconnect",
            format!("after a route change (new address), {t} trials: median"),
            "ms",
            &roam,
            None,
            false,
            1,
            format!(
                "from the kernel's route announcement to ressh running on the new connection; \
                 p95 {:.1} ms; the old uplink is deleted in the same `ip -batch`",
                Summary::of(&roam).p95
            ),
        );
        self.row(
            "reconnect",
            format!("  the route change alone (old uplink deleted afterwards), {t} trials: median"),
            "ms",
            &roam_alone,
            None,
            false,
            1,
            format!(
                "p95 {:.1} ms; ressh logged {logged} reconnects in all",
                Summary::of(&roam_alone).p95
            ),
        );
        Ok(())
    }

    /// docs/fleet.md: a reconnect relayed by another node against one the
    /// owner takes itself (ressh_bench::fleet).
    fn fleet(&mut self) -> Result<(), String> {
        let bulk = (self.o.size_mib * MIB / 8).max(16 * MIB);
        let f = ressh_bench::fleet::measure(&ressh_bench::fleet::Setup {
            resshd: &self.resshd,
            ressh: &self.ressh,
            keys: &self.keys,
            user: &self.user.name,
            authorized_keys: &self.user.home.join(".ssh/authorized_keys"),
            dir: self.dir.path(),
            trials: self.o.trials,
            reps: self.o.reps,
            bulk,
        })?;
        let t = self.o.trials;
        let (lm, rm) = (Summary::of(&f.local_ms), Summary::of(&f.relayed_ms));
        say!(
            "fleet: reconnect {:.1} ms local, {:.1} ms relayed; cat {:.0} / {:.0} MB/s",
            lm.median,
            rm.median,
            Summary::of(&f.local_mbps).median,
            Summary::of(&f.relayed_mbps).median
        );
        self.row(
            "fleet",
            format!("reconnect taken by the owning node, {t} trials: median"),
            "ms",
            &f.local_ms,
            None,
            false,
            1,
            format!("kill to first byte echoed; p95 {:.1} ms", lm.p95),
        );
        self.row(
            "fleet",
            format!("reconnect relayed by another node, {t} trials: median"),
            "ms",
            &f.relayed_ms,
            None,
            false,
            1,
            format!(
                "p95 {:.1} ms; {:.2}× the local median (one link handshake and a route through the owner's broker more)",
                rm.p95,
                rm.median / lm.median.max(1e-9)
            ),
        );
        let (lt, rt) = (Summary::of(&f.local_mbps), Summary::of(&f.relayed_mbps));
        self.row(
            "fleet",
            format!(
                "`cat` over a local connection, {} MiB each way: median",
                bulk / MIB
            ),
            "MB/s",
            &f.local_mbps,
            None,
            true,
            0,
            "written to the session and read back",
        );
        self.row(
            "fleet",
            format!(
                "`cat` over a relayed connection, {} MiB each way: median",
                bulk / MIB
            ),
            "MB/s",
            &f.relayed_mbps,
            None,
            true,
            0,
            format!(
                "{:.2}× the local median (two more processes copy each byte, one TLS hop)",
                rt.median / lt.median.max(1e-9)
            ),
        );
        Ok(())
    }

    fn report(&self, machine: &str, took: Duration) -> String {
        let mut s = String::new();
        s += "# ressh vs OpenSSH\n\n";
        s += machine;
        s += &format!(
            "\n- run: `{}`, {:.0} s\n\n",
            std::env::args().collect::<Vec<_>>().join(" "),
            took.as_secs_f64()
        );
        s += "Values: median (min–max) of the repetitions. Advantage: how many times better \
              ressh is (ressh ÷ OpenSSH for throughput, OpenSSH ÷ ressh for times and memory); \
              above 1 means ressh is better.\n\n";
        s += "| measurement | unit | ressh | OpenSSH | advantage | note |\n";
        s += "|---|---|---|---|---|---|\n";
        for r in &self.rows {
            s += &format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                r.what,
                r.unit,
                r.ressh.range(r.prec),
                r.openssh
                    .map(|o| o.range(r.prec))
                    .unwrap_or_else(|| "n/a".into()),
                r.advantage(),
                r.note
            );
            let _ = r.section;
        }
        if !self.notes.is_empty() {
            s += "\nNotes:\n";
            for n in &self.notes {
                s += &format!("- {n}\n");
            }
        }
        s
    }
}

#[derive(Debug, Clone)]
struct MemResult {
    sessions: usize,
    idle_rss: f64,
    idle_pss: f64,
    procs_per_session: f64,
    client_rss: f64,
    client_pss: f64,
    detached_rss: f64,
    detached_pss: f64,
}

// ----- the lab's uplinks (as testkit's Net::roam, split so the trigger can be timed)

fn iface(n: u8) -> &'static str {
    if n == 1 {
        "up-a"
    } else {
        "up-b"
    }
}

fn ip_batch(ns: &str, script: &str) -> Result<(), String> {
    let mut c = Command::new(ressh_testkit::require_cmd("ip"))
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    c.stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = c.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "ip -n {ns} -batch failed: {script}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn wait_up(ns: &str, dev: &str) -> Result<(), String> {
    let ok = proc::wait_until(Duration::from_secs(5), || {
        Command::new("ip")
            .args(["-n", ns, "-o", "link", "show", "dev", dev])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(" state UP "))
            .unwrap_or(false)
    });
    if ok {
        Ok(())
    } else {
        Err(format!("{dev} in {ns} did not come up"))
    }
}

/// Creates uplink `n` (1: up-a 198.18.1.0/24, 2: up-b 198.18.2.0/24)
/// between the router and the client, without touching the default route.
fn add_uplink(net: &Net, n: u8) -> Result<(), String> {
    let dev = iface(n);
    ip_batch(
        net.router_ns(),
        &format!(
            "link add {dev} type veth peer name {dev} netns {c}\n\
             addr add 198.18.{n}.1/24 dev {dev}\nlink set {dev} up\n",
            c = net.client_ns()
        ),
    )?;
    ip_batch(
        net.client_ns(),
        &format!("addr add 198.18.{n}.2/24 dev {dev}\nlink set {dev} up\n"),
    )?;
    wait_up(net.client_ns(), dev)?;
    wait_up(net.router_ns(), dev)
}
