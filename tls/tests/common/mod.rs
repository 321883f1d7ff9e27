//! Shared set-up of restls's tests: certificates made at test time, the
//! restls binary as server and client, a cuttable recording relay between
//! them, fast deterministic streams and their hashes. Everything runs on
//! 127.0.0.1 and is removed or killed on drop.

#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use openssl::ssl::{
    ExtensionContext, Ssl, SslContext, SslContextBuilder, SslMethod, SslSession,
    SslSessionCacheMode, SslStream, SslVerifyMode,
};
use openssl::symm::{Cipher, Crypter, Mode};
use ressh_tls::frame::{self, Frame};
use ressh_tls::secret::{mac_eq, resume_binding, Role, Secret};
use ressh_tls::{Answer, Hello, EXT_TYPE};

pub use ressh_testkit::{require_cmd, run_timeout, TempDir};

pub const NAME: &str = "restls-test";

/// A self-signed certificate for [`NAME`], made with `openssl req`.
pub struct Certs {
    pub dir: TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certs {
    pub fn new() -> Certs {
        let openssl = require_cmd("openssl");
        let dir = TempDir::new("restls-certs");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let out = run_timeout(
            Command::new(openssl)
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
                .args(["-subj", &format!("/CN={NAME}")])
                .args(["-addext", &format!("subjectAltName=DNS:{NAME}")])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "openssl req: {out:?}");
        Certs { dir, cert, key }
    }
}

/// A child process killed on drop, its stderr kept in a file.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
    out: PathBuf,
    _dir: TempDir,
}

impl Proc {
    /// Stdin is /dev/null, stdout is dropped.
    pub fn spawn(cmd: &mut Command) -> Proc {
        Proc::start(cmd, Stdio::null(), false)
    }

    /// For a program that works while its console is open (`openssl
    /// s_server` ends at EOF on stdin): stdin is a pipe held open until the
    /// process is dropped, stdout is kept (see [`Proc::stdout`]).
    pub fn spawn_console(cmd: &mut Command) -> Proc {
        Proc::start(cmd, Stdio::piped(), true)
    }

    fn start(cmd: &mut Command, stdin: Stdio, keep_stdout: bool) -> Proc {
        let dir = TempDir::new("restls-log");
        let (log, out) = (dir.join("stderr"), dir.join("stdout"));
        let f = fs::File::create(&log).unwrap();
        let stdout = if keep_stdout {
            Stdio::from(fs::File::create(&out).unwrap())
        } else {
            Stdio::null()
        };
        let child = cmd
            .stdin(stdin)
            .stdout(stdout)
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Proc {
            child,
            log,
            out,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, waiting up to 20 s.
    pub fn exit_status(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "did not exit:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What a [`Proc::spawn_console`] process printed so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn restls() -> Command {
    Command::new(env!("CARGO_BIN_EXE_restls"))
}

/// Waits until something listens on 127.0.0.1:`port`, without connecting
/// (a connection to a tunnel would be a tunnelled connection).
pub fn wait_listening(port: u16, p: &Proc) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpListener::bind(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {port}:\n{}",
            p.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The address restls says it listens on (its first line of log).
pub fn listening(p: &Proc) -> std::net::SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = p.stderr();
        let addr = log
            .lines()
            .find_map(|l| l.strip_prefix("restls: listening on "))
            .and_then(|a| a.trim().parse().ok());
        if let Some(a) = addr {
            return a;
        }
        assert!(Instant::now() < deadline, "restls did not start:\n{log}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Starts restls listening on a port of its choice, and returns that port.
fn start(cmd: &mut Command) -> (Proc, u16) {
    let p = Proc::spawn(cmd.args(["--listen", "127.0.0.1:0"]));
    let port = listening(&p).port();
    (p, port)
}

/// A restls server forwarding to 127.0.0.1:`forward`; returns its port.
pub fn server(certs: &Certs, forward: u16) -> (Proc, u16) {
    start_server(certs, forward, &[])
}

/// [`server`] with more options.
pub fn start_server(certs: &Certs, forward: u16, extra: &[&str]) -> (Proc, u16) {
    start(
        restls()
            .args(["server", "--forward", &format!("127.0.0.1:{forward}")])
            .arg("--cert")
            .arg(&certs.cert)
            .arg("--key")
            .arg(&certs.key)
            .args(["--detach-timeout", "60"])
            .args(extra),
    )
}

/// A restls client connecting to 127.0.0.1:`connect`; returns its port.
pub fn client(certs: &Certs, connect: u16) -> (Proc, u16) {
    start_client(certs, connect, &[])
}

/// [`client`] with more options.
pub fn start_client(certs: &Certs, connect: u16, extra: &[&str]) -> (Proc, u16) {
    start(
        restls()
            .args(["client", "--connect", &format!("127.0.0.1:{connect}")])
            .arg("--ca")
            .arg(&certs.cert)
            .args(["--servername", NAME, "--keepalive", "2", "--give-up", "60"])
            .args(extra),
    )
}

#[derive(Default)]
struct RelayState {
    live: Vec<(TcpStream, TcpStream)>,
    /// What each client sent, up to [`RECORD`] bytes, by connection.
    recorded: Vec<Arc<Mutex<Vec<u8>>>>,
    /// Capture the next connection's first flight and close it unforwarded.
    hold_next: bool,
}

const RECORD: usize = 64 * 1024;

/// A TCP relay on 127.0.0.1 that can cut every connection through it (both
/// ends see the connection end abruptly, without close_notify) and records
/// what clients send.
pub struct Relay {
    pub port: u16,
    state: Arc<Mutex<RelayState>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

fn copy(mut from: TcpStream, mut to: TcpStream, rec: Option<Arc<Mutex<Vec<u8>>>>, rate: u64) {
    let mut buf = vec![0u8; 64 * 1024];
    let start = Instant::now();
    let mut moved = 0u64;
    loop {
        // At most `rate` bytes a second, so that a transfer lasts long
        // enough to be cut many times.
        let due = Duration::from_secs_f64(moved as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            thread::sleep(wait);
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(r) = &rec {
            let mut r = r.lock().unwrap();
            let take = n.min(RECORD.saturating_sub(r.len()));
            r.extend_from_slice(&buf[..take]);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        moved += n as u64;
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Relay {
    /// A relay to 127.0.0.1:`to` moving at most `rate` bytes a second in
    /// each direction of each connection.
    pub fn new(to: u16, rate: u64) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new(RelayState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let accept = thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                let c = match l.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                c.set_nonblocking(false).unwrap();
                let rec = Arc::new(Mutex::new(Vec::new()));
                let hold = {
                    let mut s = st.lock().unwrap();
                    s.recorded.push(rec.clone());
                    std::mem::take(&mut s.hold_next)
                };
                if hold {
                    let mut c = c;
                    thread::spawn(move || {
                        // The first flight may be slow to come on a loaded machine;
                        // after it, 300 ms of silence ends it.
                        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = c.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            rec.lock().unwrap().extend_from_slice(&buf[..n]);
                            c.set_read_timeout(Some(Duration::from_millis(300)))
                                .unwrap();
                        }
                        let _ = c.shutdown(Shutdown::Both);
                    });
                    continue;
                }
                let Ok(s) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                st.lock()
                    .unwrap()
                    .live
                    .push((c.try_clone().unwrap(), s.try_clone().unwrap()));
                let (c2, s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
                thread::spawn(move || copy(c, s, Some(rec), rate));
                thread::spawn(move || copy(s2, c2, None, rate));
            }
        });
        Relay {
            port,
            state,
            stop,
            accept: Some(accept),
        }
    }

    /// Cuts every live connection; returns how many.
    pub fn cut(&self) -> usize {
        let live = std::mem::take(&mut self.state.lock().unwrap().live);
        for (c, s) in &live {
            let _ = c.shutdown(Shutdown::Both);
            let _ = s.shutdown(Shutdown::Both);
        }
        live.len()
    }

    /// Connections made through the relay so far.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().recorded.len()
    }

    /// What the client sent on connection `i` (first [`RECORD`] bytes).
    pub fn recorded(&self, i: usize) -> Vec<u8> {
        self.state.lock().unwrap().recorded[i]
            .lock()
            .unwrap()
            .clone()
    }

    /// The next connection is recorded and closed without reaching the server.
    pub fn hold_next(&self) {
        self.state.lock().unwrap().hold_next = true;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

/// A fast deterministic stream (AES-128-CTR keystream), seeded.
pub struct Gen(Crypter);

impl Gen {
    pub fn new(seed: u8) -> Gen {
        let c = Crypter::new(
            Cipher::aes_128_ctr(),
            Mode::Encrypt,
            &[seed; 16],
            Some(&[0; 16]),
        )
        .unwrap();
        Gen(c)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let zeros = vec![0u8; buf.len()];
        let mut out = vec![0u8; buf.len() + 16];
        let n = self.0.update(&zeros, &mut out).unwrap();
        buf.copy_from_slice(&out[..n]);
    }
}

/// Writes `total` bytes of `Gen(seed)` to `w`, then shuts down its write side.
pub fn send_stream(mut w: TcpStream, seed: u8, total: usize) -> std::io::Result<()> {
    let mut g = Gen::new(seed);
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len());
        g.fill(&mut buf[..n]);
        w.write_all(&buf[..n])?;
        left -= n;
    }
    w.shutdown(Shutdown::Write)
}

/// Reads to the end of `r` and checks it is exactly `total` bytes of
/// `Gen(seed)`; Err says where it first differs.
pub fn check_stream(mut r: TcpStream, seed: u8, total: usize) -> Result<(), String> {
    r.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let mut g = Gen::new(seed);
    let mut buf = vec![0u8; 256 * 1024];
    let mut want = vec![0u8; 256 * 1024];
    let mut at = 0usize;
    loop {
        let n = r.read(&mut buf).map_err(|e| format!("read at {at}: {e}"))?;
        if n == 0 {
            break;
        }
        if at + n > total {
            return Err(format!("more than {total} bytes"));
        }
        g.fill(&mut want[..n]);
        if buf[..n] != want[..n] {
            let i = (0..n).find(|&i| buf[i] != want[i]).unwrap();
            return Err(format!("differs at byte {}", at + i));
        }
        at += n;
    }
    if at != total {
        return Err(format!("ended after {at} of {total} bytes"));
    }
    Ok(())
}

/// An echo server for any number of connections, forever.
pub fn echo_server() -> u16 {
    echo_server_counted().0
}

/// [`echo_server`], and how many of its connections are open.
pub fn echo_server_counted() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let open = Arc::new(AtomicUsize::new(0));
    let o = open.clone();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            o.fetch_add(1, Ordering::SeqCst);
            let o = o.clone();
            thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let _ = std::io::copy(&mut &s, &mut w);
                let _ = w.shutdown(Shutdown::Write);
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (port, open)
}

/// A TLS client written here, not restls's: it offers the extension body
/// `hello` (no ticket: a full handshake), with its context set up further
/// by `tweak`, and returns the stream and the server's answer. What it then
/// sends is up to the test (a hostile client speaks raw frames).
pub fn ext_client(
    tcp: TcpStream,
    certs: &Certs,
    hello: &[u8],
    tweak: impl FnOnce(&mut SslContextBuilder),
) -> (SslStream<TcpStream>, Option<Answer>) {
    ext_connect(tcp, certs, hello, tweak, None)
}

/// [`ext_client`], offering `session` for resumption.
fn ext_connect(
    tcp: TcpStream,
    certs: &Certs,
    hello: &[u8],
    tweak: impl FnOnce(&mut SslContextBuilder),
    session: Option<&SslSession>,
) -> (SslStream<TcpStream>, Option<Answer>) {
    let answer: Arc<Mutex<Option<Answer>>> = Arc::default();
    let mut b = SslContext::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(&certs.cert).unwrap();
    b.set_verify(SslVerifyMode::PEER);
    let body = hello.to_vec();
    let a = answer.clone();
    b.add_custom_ext(
        EXT_TYPE,
        ExtensionContext::TLS_ONLY
            | ExtensionContext::CLIENT_HELLO
            | ExtensionContext::TLS1_2_SERVER_HELLO
            | ExtensionContext::TLS1_3_ENCRYPTED_EXTENSIONS,
        move |_, ctx, _| {
            Ok(ctx
                .contains(ExtensionContext::CLIENT_HELLO)
                .then(|| body.clone()))
        },
        move |_, _, data: &[u8], _| {
            *a.lock().unwrap() = Answer::decode(data);
            Ok(())
        },
    )
    .unwrap();
    tweak(&mut b);
    let ctx = b.build();
    let mut ssl = Ssl::new(&ctx).unwrap();
    ssl.set_hostname(NAME).unwrap();
    if let Some(t) = session {
        // SAFETY: the session comes from a context built as this one (here,
        // against the same server); the server decides whether it resumes.
        #[allow(unsafe_code)]
        unsafe {
            ssl.set_session(t).unwrap()
        };
    }
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let s = ssl.connect(tcp).expect("handshake");
    let a = *answer.lock().unwrap();
    (s, a)
}

/// A resilient connection made by a client written here from
/// docs/restls.md §2–§5 (not restls's client), idle until the test
/// reconnects it: one socket, no thread.
pub struct RawConn {
    pub s: SslStream<TcpStream>,
    secret: Secret,
    ticket: Arc<Mutex<Option<SslSession>>>,
}

fn keep_tickets(slot: &Arc<Mutex<Option<SslSession>>>) -> impl FnOnce(&mut SslContextBuilder) {
    let slot = slot.clone();
    move |b| {
        b.set_session_cache_mode(SslSessionCacheMode::CLIENT);
        b.set_new_session_callback(move |_, s| *slot.lock().unwrap() = Some(s));
    }
}

impl RawConn {
    /// A new resilient connection to 127.0.0.1:`port`; None if the server
    /// closed it instead of answering a keepalive.
    pub fn open(port: u16, certs: &Certs) -> Option<RawConn> {
        let ticket = Arc::default();
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (s, a) = ext_client(tcp, certs, &Hello::New.encode(), keep_tickets(&ticket));
        assert_eq!(a, Some(Answer::New));
        let secret = Secret::initial(s.ssl()).unwrap();
        let mut c = RawConn { s, secret, ticket };
        // Reading the answer also takes the tickets sent before it.
        c.ping().ok()?;
        Some(c)
    }

    /// An ACK with want reply, and its answer.
    pub fn ping(&mut self) -> Result<(), String> {
        let mut p = Vec::new();
        frame::put_ack(&mut p, 0, true);
        self.s.write_all(&p).map_err(|e| e.to_string())?;
        let mut got = [0u8; 10];
        self.s.read_exact(&mut got).map_err(|e| e.to_string())?;
        match frame::parse(&got) {
            Ok(Some((Frame::Ack { .. }, 10))) => Ok(()),
            other => Err(format!("not an ACK: {other:?}")),
        }
    }

    /// Breaks the TCP connection (no close_notify) and continues the
    /// connection over a new one (docs/restls.md §5), having received
    /// nothing: returns the server's count.
    pub fn reconnect(&mut self, port: u16, certs: &Certs) -> Result<u64, String> {
        let _ = self.s.get_ref().shutdown(Shutdown::Both);
        let hello = self.secret.hello();
        let t = self.ticket.lock().unwrap().clone().ok_or("no ticket")?;
        let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        let (mut s, a) = ext_connect(
            tcp,
            certs,
            &hello.encode(),
            keep_tickets(&self.ticket),
            Some(&t),
        );
        if a != Some(Answer::Accepted) {
            return Err(format!("answer {a:?}"));
        }
        if !s.ssl().session_reused() {
            return Err("not resumed".into());
        }
        let e = resume_binding(s.ssl()).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        frame::put_resume(&mut out, 0, &self.secret.resume_mac(Role::Client, &e, 0));
        s.write_all(&out).map_err(|e| e.to_string())?;
        let mut got = [0u8; 9 + frame::MAC_LEN];
        s.read_exact(&mut got)
            .map_err(|e| format!("no RESUME: {e}"))?;
        let Ok(Some((Frame::Resume { count, mac }, _))) = frame::parse(&got) else {
            return Err("not a RESUME".into());
        };
        if !mac_eq(mac, &self.secret.resume_mac(Role::Server, &e, count)) {
            return Err("the server's RESUME does not verify".into());
        }
        self.secret = self.secret.ratchet(&e);
        self.s = s;
        Ok(count)
    }
}

/// A line-echo conversation that must keep working.
pub struct Chat {
    w: TcpStream,
    r: BufReader<TcpStream>,
    n: u64,
}

impl Chat {
    pub fn new(port: u16) -> Chat {
        Chat::over(TcpStream::connect(("127.0.0.1", port)).unwrap())
    }

    pub fn over(s: TcpStream) -> Chat {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Chat {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
            n: 0,
        }
    }

    pub fn round(&mut self) {
        self.n += 1;
        let msg = format!("line {}\n", self.n);
        self.w.write_all(msg.as_bytes()).unwrap();
        let mut got = String::new();
        self.r.read_line(&mut got).unwrap();
        assert_eq!(got, msg);
    }
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Threads of a process, from /proc.
pub fn threads(pid: u32) -> usize {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// Raises this process's descriptor limits to at least `want` (the hard
/// one too: the tests run as root), so that it and the restls processes it
/// starts afterwards (which inherit them) can hold many connections.
#[allow(unsafe_code)] // getrlimit/setrlimit
pub fn raise_nofile(want: u64) {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers to an rlimit for the calls to fill and read.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        l.rlim_max = l.rlim_max.max(want);
        l.rlim_cur = l.rlim_max;
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &l),
            0,
            "RLIMIT_NOFILE {want}: {}",
            std::io::Error::last_os_error()
        );
    }
}
