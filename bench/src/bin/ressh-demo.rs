//! ressh-demo: shows, in about half a minute, an SSH session that survives
//! its connection being cut. Run it with `bench/demo` (which builds first).
//!
//! It starts resshd on 127.0.0.1 with a fresh host key (as an ordinary user
//! in resshd's non-root mode, serving only that user; as root with privilege
//! separation, logging in as root with a key kept in a temporary directory)
//! and runs two programs through ressh while it cuts the connection again
//! and again: a counter, and 200 MiB sent through `cat` and back. ressh
//! reaches resshd through a tiny relay (its ProxyCommand), and a cut is
//! killing that relay; ressh then re-runs it and resumes the session. As
//! root it also moves the client to a new address in network namespaces
//! (198.18.0.0/15). Everything it makes is removed at the end, also after
//! Ctrl-C. Nothing outside its temporary directory is read or written: not
//! ~/.ssh, not /etc/ssh.

use std::fs;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use openssl::sha::Sha256;
use ressh_bench::daemon::{Keys, Kind, Server, ServerSpec};
use ressh_bench::{bin_dir, is_root, proc, require_bin, user_name};
use ressh_testkit::{Net, TempDir};

/// The counter counts to this (exclusive), one number every 20 ms.
const COUNT: u32 = 500;
/// Cuts during the counter, at these numbers.
const COUNTER_CUTS: [u32; 4] = [100, 200, 300, 400];
/// Bytes sent through `cat` and back.
const TRANSFER: u64 = 200 << 20;
/// Cuts during the transfer, after this many bytes came back.
const TRANSFER_CUTS: [u64; 3] = [50 << 20, 100 << 20, 150 << 20];

static STOP: AtomicBool = AtomicBool::new(false);

fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

type Res<T> = Result<T, String>;

struct Style {
    tty: bool,
}

impl Style {
    fn head(&self, s: &str) {
        if self.tty {
            println!("\n\x1b[1m{s}\x1b[0m");
        } else {
            println!("\n== {s}");
        }
    }
    fn say(&self, s: &str) {
        println!("{s}");
    }
    fn note(&self, s: &str) {
        if self.tty {
            println!("\x1b[2m    {s}\x1b[0m");
        } else {
            println!("    {s}");
        }
    }
    fn cut(&self, s: &str) {
        if self.tty {
            println!("\x1b[1;31m✂  {s}\x1b[0m");
        } else {
            println!(">> {s}");
        }
    }
    fn good(&self, s: &str) {
        if self.tty {
            println!("\x1b[1;32m✓  {s}\x1b[0m");
        } else {
            println!("OK {s}");
        }
    }
}

#[allow(unsafe_code)] // signal_hook::low_level::register
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The relay: ressh runs `ressh-demo relay HOST:PORT PIDDIR` as its
    // ProxyCommand, once per connection.
    if args.first().map(String::as_str) == Some("relay") {
        relay_main(&args[1..]);
    }
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: ressh-demo [--no-netns]\n\nStarts resshd on 127.0.0.1 and shows an SSH session \
             carrying on while its connection is cut (see bench/README.md).\n\
             --no-netns  as root, skip the part in network namespaces"
        );
        return;
    }
    let netns = !args.iter().any(|a| a == "--no-netns");
    // Ctrl-C and friends end the demo through its normal clean-up.
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        let _ = unsafe {
            signal_hook::low_level::register(sig, || STOP.store(true, Ordering::Relaxed))
        };
    }
    let st = Style {
        tty: std::io::stdout().is_terminal(),
    };
    let t0 = Instant::now();
    match run(&st, netns) {
        Ok(()) => {
            st.head(&format!(
                "Done in {:.0} s; everything the demo made is removed.",
                t0.elapsed().as_secs_f64()
            ));
        }
        Err(e) => {
            eprintln!("\nressh-demo: {e}");
            eprintln!("ressh-demo: cleaned up what it had made.");
            std::process::exit(1);
        }
    }
}

fn relay_main(args: &[String]) -> ! {
    let (Some(addr), Some(dir)) = (args.first(), args.get(1)) else {
        eprintln!("usage: ressh-demo relay HOST:PORT PIDDIR");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().unwrap_or_else(|e| {
        eprintln!("relay: bad address {addr}: {e}");
        std::process::exit(2)
    });
    let _ = fs::write(Path::new(dir).join(std::process::id().to_string()), "");
    ressh_bench::relay::stdio_proxy(addr)
}

/// Everything the demo runs; dropping it removes it all.
struct Demo {
    st: Style,
    dir: TempDir,
    ressh: PathBuf,
    resshd: PathBuf,
    keys: Keys,
    user: String,
    /// Where the relays note their pids.
    relays: PathBuf,
    config: PathBuf,
    /// When the connection was last cut (or the client moved), and what
    /// to call that.
    last_cut: std::cell::Cell<Option<(Instant, &'static str)>>,
}

fn run(st: &Style, netns: bool) -> Res<()> {
    let bins = bin_dir();
    let ressh = require_bin(&bins, "ressh")?;
    let resshd = require_bin(&bins, "resshd")?;
    require_bin(&bins, "resshd-kex")?;
    require_bin(&bins, "resshd-session")?;
    let root = is_root();
    let user = user_name();

    st.head("ressh demo: an SSH session that outlives its connection");
    st.say(
        "ressh and resshd speak SSH with one extension: when the TCP connection breaks,\n\
         the session is not over. The client opens a new connection, proves it is the\n\
         same client, and both sides resend whatever the other had not received.\n\
         This demo runs programs through ressh and cuts the connection under them.",
    );

    let dir = TempDir::new("demo");
    let keys = Keys::generate(dir.path())?;
    fs::write(dir.join("authorized_keys"), format!("{}\n", keys.user_pub))
        .map_err(|e| e.to_string())?;
    let relays = dir.join("relays");
    fs::create_dir(&relays).map_err(|e| e.to_string())?;
    let demo = Demo {
        st: Style { tty: st.tty },
        config: dir.join("ssh_config"),
        dir,
        ressh,
        resshd,
        keys,
        user,
        relays,
        last_cut: std::cell::Cell::new(None),
    };
    let spec = ServerSpec {
        kind: Kind::Ressh,
        bin: demo.resshd.clone(),
        dir: demo.dir.join("server"),
        listen: Ipv4Addr::LOCALHOST,
        port: None,
        host_key: demo.keys.host_key.clone(),
        authorized_keys: demo.dir.join("authorized_keys"),
        privsep_user: root.then(|| "nobody".to_string()),
        extra: "DetachTimeout 120\nLogLevel VERBOSE\n".into(),
    };
    st.head("Setting up");
    let server = Server::start(&spec, &die_with_parent)?;
    st.say(&format!(
        "resshd is listening on 127.0.0.1 port {} with a host key made just now.",
        server.port
    ));
    if root {
        st.note(
            "As root: privilege separation on (pre-auth worker as `nobody`, chrooted); \
             logging in as root with a key kept in the demo's temp dir.",
        );
    } else {
        st.note(&format!(
            "As an ordinary user: resshd's non-root mode, serving only {}.",
            demo.user
        ));
    }
    demo.write_client_config(server.port)?;
    st.note(&format!(
        "ressh reaches it through a relay process (its ProxyCommand); to cut the connection,\n    \
         the demo kills the relay. Try it yourself meanwhile:  {} -F {} demo",
        demo.ressh.display(),
        demo.config.display()
    ));

    demo.counter_act()?;
    demo.transfer_act()?;
    if root && netns {
        demo.roaming_act()?;
    } else if root {
        st.head("(Skipping the move to a new address: --no-netns.)");
    } else {
        st.head("As root the demo would also move the client to a new IP address.");
        st.note("That needs network namespaces: try `sudo bench/demo`.");
    }
    drop(server);
    Ok(())
}

fn exited(s: std::process::ExitStatus) -> String {
    if s.success() {
        "exited normally".into()
    } else {
        format!("exited with {s}")
    }
}

/// Makes a spawned process die with the demo (SIGTERM when it exits) and
/// puts it in its own process group (a Ctrl-C reaches only the demo, which
/// then cleans up in order).
#[allow(unsafe_code)] // pre_exec (PR_SET_PDEATHSIG in the child)
fn die_with_parent(cmd: &mut Command) {
    cmd.process_group(0);
    // SAFETY: prctl in the forked child before exec; async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

/// A child's stderr, line by line, each with when it arrived.
fn watch_stderr(child: &mut Child) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().expect("stderr");
    thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

impl Demo {
    fn write_client_config(&self, port: u16) -> Res<()> {
        let kh = self.dir.join("known_hosts");
        fs::write(&kh, format!("ressh-demo {}\n", self.keys.host_pub))
            .map_err(|e| e.to_string())?;
        // The relay is this binary; a link in the temp dir keeps its path
        // free of spaces for the ProxyCommand line.
        let relay = self.dir.join("relay");
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink(&exe, &relay).map_err(|e| e.to_string())?;
        let cfg = format!(
            "Host demo\n\
             \tHostName 127.0.0.1\n\
             \tPort {port}\n\
             \tUser {user}\n\
             \tProxyCommand {relay} relay 127.0.0.1:{port} {relays}\n\
             \tIdentityFile {key}\n\
             \tIdentitiesOnly yes\n\
             \tIdentityAgent none\n\
             \tBatchMode yes\n\
             \tHostKeyAlias ressh-demo\n\
             \tUserKnownHostsFile {kh}\n\
             \tGlobalKnownHostsFile /dev/null\n\
             \tStrictHostKeyChecking yes\n\
             \tLogLevel VERBOSE\n",
            user = self.user,
            relay = relay.display(),
            relays = self.relays.display(),
            key = self.keys.user_key.display(),
            kh = kh.display()
        );
        fs::write(&self.config, cfg).map_err(|e| e.to_string())
    }

    /// `ressh -F <config> demo <command>`, with HOME in the temp dir.
    fn ressh(&self, command: &str) -> Command {
        self.ressh_with(&[], command)
    }

    /// [`Self::ressh`] with more options (they win over the config file).
    fn ressh_with(&self, opts: &[String], command: &str) -> Command {
        let mut c = Command::new(&self.ressh);
        c.args(opts)
            .arg("-F")
            .arg(&self.config)
            .arg("demo")
            .arg(command)
            .env("HOME", self.dir.path());
        die_with_parent(&mut c);
        c
    }

    /// Kills the relays alive now: the connection they carry is cut.
    fn cut(&self) -> usize {
        self.last_cut.set(Some((Instant::now(), "the cut")));
        let mut n = 0;
        if let Ok(rd) = fs::read_dir(&self.relays) {
            for e in rd.flatten() {
                if let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() {
                    if Path::new(&format!("/proc/{pid}")).exists() {
                        proc::kill_all(&[pid]);
                        n += 1;
                    }
                }
                let _ = fs::remove_file(e.path());
            }
        }
        n
    }

    /// Shows what ressh said about reconnecting; returns how many reconnects.
    fn show_ressh(&self, rx: &mpsc::Receiver<(Instant, String)>) -> usize {
        let mut n = 0;
        while let Ok((at, line)) = rx.try_recv() {
            let line = line.trim();
            if line.contains("connection lost") {
                self.st.note(&format!("ressh: {line}"));
            } else if line.contains("reconnected") {
                n += 1;
                // ressh says "reconnected to HOST after 0.0 s (why)": keep
                // the first part and measure from the cut ourselves.
                let short = line.split(" after ").next().unwrap_or(line);
                match self.last_cut.get() {
                    Some((cut, what)) => self.st.note(&format!(
                        "ressh: {short}: the session runs again {:.0} ms after {what}",
                        at.saturating_duration_since(cut).as_secs_f64() * 1000.0
                    )),
                    None => self.st.note(&format!("ressh: {line}")),
                }
            }
        }
        n
    }

    fn counter_act(&self) -> Res<()> {
        let st = &self.st;
        st.head(&format!(
            "1. A counting program, 0 to {}, one number every 20 ms",
            COUNT - 1
        ));
        st.say("It runs on the server; its output comes back through ressh.");
        let cmd = format!(
            "sh -c 'i=0; while [ $i -lt {COUNT} ]; do echo $i; i=$((i+1)); sleep 0.02; done'"
        );
        let mut child = self
            .ressh(&cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start ressh: {e}"))?;
        let errs = watch_stderr(&mut child);
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen: Vec<u32> = Vec::new();
        let mut cuts = COUNTER_CUTS.iter().peekable();
        let mut reconnects = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if stopped() {
                let _ = child.kill();
                return Err("interrupted".into());
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    let Ok(n) = line.trim().parse::<u32>() else {
                        // Something the login shell printed before the counter.
                        if seen.is_empty() {
                            st.note(&format!("(the remote shell printed: {line:?})"));
                            continue;
                        }
                        let _ = child.kill();
                        return Err(format!("unexpected output: {line:?}"));
                    };
                    seen.push(n);
                    if n % 50 == 0 {
                        st.say(&format!("counter: {n}"));
                    }
                    if cuts.peek().is_some_and(|c| **c == n) {
                        cuts.next();
                        let k = self.cut();
                        st.cut(&format!(
                            "cutting the connection now (killed {k} relay process{})",
                            if k == 1 { "" } else { "es" }
                        ));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            reconnects += self.show_ressh(&errs);
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("the counter did not finish in 2 minutes".into());
            }
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        thread::sleep(Duration::from_millis(50));
        reconnects += self.show_ressh(&errs);
        let expected: Vec<u32> = (0..COUNT).collect();
        if seen != expected {
            let missing = expected.iter().filter(|n| !seen.contains(n)).count();
            return Err(format!(
                "the counter's output is not 0..{} in order: {} lines, {missing} missing \
                 (ressh exited with {status})",
                COUNT - 1,
                seen.len()
            ));
        }
        st.good(&format!(
            "the counter kept going through {} cuts: 0..{}, in order, none missing, none repeated \
             ({reconnects} reconnects; ressh {})",
            COUNTER_CUTS.len(),
            COUNT - 1,
            exited(status)
        ));
        if !status.success() {
            return Err(format!("ressh exited with {status}"));
        }
        Ok(())
    }

    fn transfer_act(&self) -> Res<()> {
        let st = &self.st;
        st.head(&format!(
            "2. {} MiB through `cat` on the server and back",
            TRANSFER >> 20
        ));
        st.say("Random data goes up to the server's `cat`, which sends it straight back.");
        let mut child = self
            .ressh("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start ressh: {e}"))?;
        let errs = watch_stderr(&mut child);
        let mut stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let got = Arc::new(AtomicU64::new(0));
        let sent_hash = Arc::new(Mutex::new(None));
        let t0 = Instant::now();
        let writer = {
            let h = sent_hash.clone();
            thread::spawn(move || -> Res<()> {
                let mut sha = Sha256::new();
                let mut buf = vec![0u8; 1 << 20];
                let mut left = TRANSFER;
                while left > 0 && !stopped() {
                    let n = left.min(buf.len() as u64) as usize;
                    openssl::rand::rand_bytes(&mut buf[..n]).map_err(|e| e.to_string())?;
                    sha.update(&buf[..n]);
                    stdin
                        .write_all(&buf[..n])
                        .map_err(|e| format!("writing to ressh: {e}"))?;
                    left -= n as u64;
                }
                *h.lock().unwrap_or_else(|e| e.into_inner()) = Some(sha.finish());
                Ok(()) // dropping stdin sends EOF: cat ends, so does ressh
            })
        };
        let reader = {
            let g = got.clone();
            thread::spawn(move || -> Res<[u8; 32]> {
                let mut sha = Sha256::new();
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = stdout
                        .read(&mut buf)
                        .map_err(|e| format!("reading from ressh: {e}"))?;
                    if n == 0 {
                        break;
                    }
                    sha.update(&buf[..n]);
                    g.fetch_add(n as u64, Ordering::Relaxed);
                }
                Ok(sha.finish())
            })
        };
        let mut cuts = TRANSFER_CUTS.iter().peekable();
        let mut reconnects = 0;
        let mut next_report = 0u64;
        let deadline = Instant::now() + Duration::from_secs(180);
        while !reader.is_finished() {
            if stopped() {
                let _ = child.kill();
                return Err("interrupted".into());
            }
            let g = got.load(Ordering::Relaxed);
            if let Some(c) = cuts.peek() {
                if g >= **c {
                    cuts.next();
                    let k = self.cut();
                    st.cut(&format!(
                        "cutting the connection now, {} MiB back so far (killed {k} relay process{})",
                        g >> 20,
                        if k == 1 { "" } else { "es" }
                    ));
                }
            }
            if g >= next_report {
                if g > 0 {
                    st.say(&format!("{:>4} MiB back", g >> 20));
                }
                next_report += 25 << 20;
            }
            reconnects += self.show_ressh(&errs);
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("the transfer did not finish in 3 minutes".into());
            }
            thread::sleep(Duration::from_micros(500));
        }
        let took = t0.elapsed().as_secs_f64();
        writer
            .join()
            .map_err(|_| "the writer thread panicked".to_string())??;
        let back = reader
            .join()
            .map_err(|_| "the reader thread panicked".to_string())??;
        let status = child.wait().map_err(|e| e.to_string())?;
        thread::sleep(Duration::from_millis(50));
        reconnects += self.show_ressh(&errs);
        let sent = sent_hash
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ok_or("the writer did not finish")?;
        let hex = |h: &[u8; 32]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let g = got.load(Ordering::Relaxed);
        st.say(&format!(
            "sent     {} MiB, SHA-256 {}",
            TRANSFER >> 20,
            hex(&sent)
        ));
        st.say(&format!("received {} MiB, SHA-256 {}", g >> 20, hex(&back)));
        if g != TRANSFER || sent != back {
            return Err(format!(
                "the data that came back differs: {g} bytes of {TRANSFER}, checksums {}",
                if sent == back { "equal" } else { "differ" }
            ));
        }
        st.good(&format!(
            "checksums match: {} MiB there and back in {took:.1} s, through {} cuts \
             ({reconnects} reconnects), nothing lost, nothing repeated",
            TRANSFER >> 20,
            TRANSFER_CUTS.len()
        ));
        if !status.success() {
            return Err(format!("ressh exited with {status}"));
        }
        Ok(())
    }

    fn roaming_act(&self) -> Res<()> {
        let st = &self.st;
        st.head("3. Moving the client to a new IP address (as root, in network namespaces)");
        st.say(
            "Three namespaces: a server (198.18.0.1), a router, and a client that moves between\n\
             two uplinks, 198.18.1.2 and 198.18.2.2. Each move brings up the new uplink, points\n\
             the client's route at it and deletes the old one, address and all. No relay here:\n\
             ressh connects directly and notices the route change by itself.",
        );
        if ressh_testkit::which("ip").is_none() {
            st.say("Skipped: the `ip` command (Debian's iproute2) is missing.");
            return Ok(());
        }
        let net = match std::panic::catch_unwind(|| Net::new("demo")) {
            Ok(n) => n,
            Err(_) => {
                st.say("Skipped: network namespaces are not usable here (see the message above).");
                return Ok(());
            }
        };
        let port = 22;
        let spec = ServerSpec {
            kind: Kind::Ressh,
            bin: self.resshd.clone(),
            dir: self.dir.join("server-netns"),
            listen: net.server_addr(),
            port: Some(port),
            host_key: self.keys.host_key.clone(),
            authorized_keys: self.dir.join("authorized_keys"),
            privsep_user: Some("nobody".into()),
            extra: "DetachTimeout 120\nLogLevel VERBOSE\n".into(),
        };
        let server = Server::start(&spec, &|cmd| {
            net.in_server(cmd);
            die_with_parent(cmd);
        })?;
        st.note(&format!(
            "resshd is listening on {}:{port} in the server namespace; the client is at {}.",
            net.server_addr(),
            net.client_addr()
        ));
        let count = 300u32;
        let cmd = format!(
            "sh -c 'i=0; while [ $i -lt {count} ]; do echo $i; i=$((i+1)); sleep 0.02; done'"
        );
        // Direct TCP: no ProxyCommand.
        let opts = [
            "-o".to_string(),
            "ProxyCommand=none".into(),
            "-o".into(),
            format!("HostName={}", net.server_addr()),
            "-o".into(),
            format!("Port={port}"),
        ];
        let mut c = self.ressh_with(&opts, &cmd);
        net.in_client(&mut c);
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start ressh: {e}"))?;
        let errs = watch_stderr(&mut child);
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let mut moves = [100u32, 200].into_iter().peekable();
        let mut reconnects = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if stopped() {
                let _ = child.kill();
                return Err("interrupted".into());
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    let n: u32 = line
                        .trim()
                        .parse()
                        .map_err(|_| format!("unexpected output: {line:?}"))?;
                    seen.push(n);
                    if n.is_multiple_of(50) {
                        st.say(&format!("counter: {n}"));
                    }
                    if moves.peek().is_some_and(|m| *m == n) {
                        moves.next();
                        let from = net.client_addr();
                        let moved = net.roam_timed();
                        self.last_cut.set(Some((moved, "the route changed")));
                        st.cut(&format!(
                            "moved the client from {from} to {} (the old address is gone)",
                            net.client_addr()
                        ));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            reconnects += self.show_ressh(&errs);
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("the counter did not finish in 2 minutes".into());
            }
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        thread::sleep(Duration::from_millis(50));
        reconnects += self.show_ressh(&errs);
        drop(server);
        drop(net);
        let expected: Vec<u32> = (0..count).collect();
        if seen != expected {
            return Err(format!(
                "the counter's output is not 0..{} in order ({} lines; ressh exited with {status})",
                count - 1,
                seen.len()
            ));
        }
        st.good(&format!(
            "the counter kept going across two address changes: 0..{}, none missing \
             ({reconnects} reconnects; ressh {})",
            count - 1,
            exited(status)
        ));
        if !status.success() {
            return Err(format!("ressh exited with {status}"));
        }
        Ok(())
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.cut();
    }
}
