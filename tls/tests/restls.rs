//! restls end to end: the tunnel under repeated cuts, interop with stock
//! OpenSSL peers and stunnel, forged reconnects, and a real application.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use openssl::ssl::{SslMethod, SslVerifyMode};
use ressh_testkit::{free_port, require_netns, Net};
use ressh_tls::{Answer, Hello, EXT_TYPE};

const MIB: usize = 1 << 20;

/// Cuts every connection through `relay` every `every` until `stop`.
fn cutter(relay: Arc<Relay>, every: Duration, stop: Arc<AtomicBool>) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut cuts = 0;
        while !stop.load(Ordering::Relaxed) {
            thread::sleep(every);
            cuts += relay.cut();
        }
        cuts
    })
}

/// A stream through the tunnel: what it took and what the processes said.
struct CutRun {
    srv: Proc,
    cli: Proc,
    relay: Arc<Relay>,
    cuts: usize,
    took: Duration,
}

impl CutRun {
    fn logs(&self) -> String {
        format!(
            "server:\n{}\nclient:\n{}",
            self.srv.stderr(),
            self.cli.stderr()
        )
    }
}

/// `total` bytes each way between an application and its server through
/// client → relay (at most `rate` bytes/s) → server, the relay cutting
/// every connection every half second; the client started with
/// `client_args`. Panics unless both streams arrive identical.
fn stream_with_cuts(total: usize, rate: u64, client_args: &[&str]) -> CutRun {
    let certs = Certs::new();
    // The application's server: sends its stream and checks ours.
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let tport = target.local_addr().unwrap().port();
    let far = thread::spawn(move || {
        let (s, _) = target.accept().unwrap();
        let w = s.try_clone().unwrap();
        let tx = thread::spawn(move || send_stream(w, 2, total));
        let r = check_stream(s, 1, total);
        tx.join().unwrap().map_err(|e| e.to_string()).and(r)
    });
    let (srv, sport) = server(&certs, tport);
    let relay = Arc::new(Relay::new(sport, rate));
    let (cli, cport) = start_client(&certs, relay.port, client_args);

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let cuts = cutter(relay.clone(), Duration::from_millis(500), stop.clone());
    let s = TcpStream::connect(("127.0.0.1", cport)).unwrap();
    let w = s.try_clone().unwrap();
    let tx = thread::spawn(move || send_stream(w, 1, total));
    let near = check_stream(s, 2, total);
    stop.store(true, Ordering::Relaxed);
    let run = CutRun {
        srv,
        cli,
        relay,
        cuts: cuts.join().unwrap(),
        took: start.elapsed(),
    };
    tx.join()
        .unwrap()
        .unwrap_or_else(|e| panic!("sending: {e}\n{}", run.logs()));
    near.unwrap_or_else(|e| panic!("server to client: {e}\n{}", run.logs()));
    far.join()
        .unwrap()
        .unwrap_or_else(|e| panic!("client to server: {e}\n{}", run.logs()));
    run
}

#[test]
fn tunnel_256_mib_both_ways_with_a_cut_every_half_second() {
    let run = stream_with_cuts(256 * MIB, 64 * MIB as u64, &[]);
    let (cuts, took) = (run.cuts, run.took);
    eprintln!(
        "256 MiB each way in {took:?}, {cuts} cuts, {} TCP connections",
        run.relay.connections()
    );
    assert!(
        cuts as f64 >= took.as_secs_f64() && cuts >= 3,
        "too few cuts ({cuts} in {took:?}): nothing was tested\n{}",
        run.logs()
    );
    assert!(run.cli.stderr().contains("reconnected"), "{}", run.logs());
}

#[test]
fn legacy_openssl_s_client_against_restls_server() {
    let certs = Certs::new();
    let (srv, sport) = server(&certs, echo_server());
    let mut c = Command::new(require_cmd("openssl"));
    c.args(["s_client", "-connect", &format!("127.0.0.1:{sport}")])
        .args([
            "-servername",
            NAME,
            "-verify_return_error",
            "-quiet",
            "-ign_eof",
        ])
        .arg("-CAfile")
        .arg(&certs.cert)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    stdin.write_all(b"plain TLS works\n").unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "plain TLS works\n", "server log:\n{}", srv.stderr());
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn legacy_restls_client_against_openssl_s_server() {
    let certs = Certs::new();
    let port = free_port();
    let mut s = Command::new(require_cmd("openssl"));
    s.args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-rev"])
        .arg("-cert")
        .arg(&certs.cert)
        .arg("-key")
        .arg(&certs.key);
    let srv = Proc::spawn(&mut s);
    wait_listening(port, &srv);
    let (cli, cport) = client(&certs, port);
    let mut c = TcpStream::connect(("127.0.0.1", cport)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"stressed\n").unwrap();
    let mut r = BufReader::new(c);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), "desserts", "client log:\n{}", cli.stderr());
}

/// stunnel (Debian's stunnel4) in the foreground with one service made of
/// `service` lines; it logs to its stderr.
fn stunnel(service: &str) -> (Proc, TempDir) {
    let dir = TempDir::new("restls-stunnel");
    let conf = dir.join("stunnel.conf");
    std::fs::write(
        &conf,
        format!("foreground = yes\nsyslog = no\npid =\ndebug = info\n[svc]\n{service}"),
    )
    .unwrap();
    let p = Proc::spawn(Command::new(require_cmd("stunnel4")).arg(&conf));
    (p, dir)
}

/// Sends `line` through `port` and reads it back (an echo behind).
fn echo_through(port: u16, line: &str, logs: &dyn Fn() -> String) {
    let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    (&c).write_all(line.as_bytes()).unwrap();
    let mut got = String::new();
    BufReader::new(&c).read_line(&mut got).unwrap();
    assert_eq!(got, line, "{}", logs());
}

/// README.md: against stunnel restls is plain TLS. restls's client through
/// stunnel's server to an echo: the data passes, and since stunnel ignores
/// the extension, a cut of the TCP connection ends the tunnelled one: no
/// reconnect (restls's client logs nothing for a plain connection).
#[test]
fn legacy_restls_client_through_stunnel_server() {
    let certs = Certs::new();
    let port = free_port();
    let (st, _conf) = stunnel(&format!(
        "accept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{}\ncert = {}\nkey = {}\n",
        echo_server(),
        certs.cert.display(),
        certs.key.display()
    ));
    wait_listening(port, &st);
    let relay = common::Relay::new(port, u64::MAX);
    let (cli, cport) = client(&certs, relay.port);
    let logs = || format!("restls:\n{}\nstunnel:\n{}", cli.stderr(), st.stderr());
    echo_through(cport, "through stunnel\n", &logs);

    let c = TcpStream::connect(("127.0.0.1", cport)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    (&c).write_all(b"before the cut\n").unwrap();
    let mut r = BufReader::new(&c);
    let mut got = String::new();
    r.read_line(&mut got).unwrap();
    assert_eq!(got, "before the cut\n", "{}", logs());
    assert!(relay.cut() >= 1);
    // The tunnelled connection ends (EOF or reset), never carries on.
    let mut rest = Vec::new();
    let end = r.read_to_end(&mut rest);
    assert!(
        matches!(&end, Ok(0))
            || end
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "after the cut: {end:?} {rest:?}\n{}",
        logs()
    );
    // One TCP connection per tunnelled one, none for a reconnect.
    assert_eq!(relay.connections(), 2, "restls reconnected\n{}", logs());
    assert!(!cli.stderr().contains("reconnected"), "{}", logs());
}

/// stunnel's client, verifying the certificate and its name, through
/// restls's server to an echo: the data passes and restls logs plain TLS.
#[test]
fn legacy_stunnel_client_against_restls_server() {
    let certs = Certs::new();
    let (srv, sport) = server(&certs, echo_server());
    let port = free_port();
    let (st, _conf) = stunnel(&format!(
        "client = yes\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{sport}\n\
         CAfile = {}\nverifyChain = yes\ncheckHost = {NAME}\nsni = {NAME}\n",
        certs.cert.display()
    ));
    wait_listening(port, &st);
    let logs = || format!("restls:\n{}\nstunnel:\n{}", srv.stderr(), st.stderr());
    echo_through(port, "stunnel to restls\n", &logs);
    wait_until("restls to log connection 0", || {
        srv.stderr().contains("connection 0: TLSv1.3, ")
    });
    assert!(
        srv.stderr().contains("connection 0: TLSv1.3, plain TLS"),
        "{}",
        logs()
    );
}

/// A TLS client that offers `hello` (no ticket: a full handshake) and
/// returns the server's answer and whether the server then closed the
/// connection without sending anything.
fn probe(port: u16, certs: &Certs, hello: &[u8]) -> (Option<Answer>, bool) {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut s, a) = ext_client(tcp, certs, hello, |_| {});
    let mut buf = [0u8; 64];
    let closed = matches!(s.read(&mut buf), Ok(0) | Err(_));
    (a, closed)
}

/// The reconnect extension body in a recorded ClientHello.
fn hello_in(bytes: &[u8]) -> Option<Vec<u8>> {
    let [hi, lo] = EXT_TYPE.to_be_bytes();
    let pat = [hi, lo, 0, 97, 1];
    let at = bytes.windows(pat.len()).position(|w| w == pat)?;
    bytes.get(at + 4..at + 4 + 97).map(<[u8]>::to_vec)
}

#[test]
fn forged_reconnects_are_refused_and_the_live_connection_carries_on() {
    let certs = Certs::new();
    let (srv, sport) = server(&certs, echo_server());
    let relay = Relay::new(sport, u64::MAX);
    let (_cli, cport) = client(&certs, relay.port);
    let mut chat = Chat::new(cport);
    chat.round();
    let reconnects = |p: &Proc| p.stderr().matches("reconnected").count();

    // 1. An identifier the server never issued.
    let mut forged = Hello::Reconnect {
        token: [7; 32],
        nonce: [8; 32],
        mac: [9; 32],
    }
    .encode();
    assert_eq!(probe(sport, &certs, &forged), (Some(Answer::Unknown), true));
    chat.round();

    // 2. A genuine reconnect replayed byte for byte.
    relay.cut();
    chat.round();
    let n = relay.connections();
    let genuine = relay.recorded(n - 1);
    assert!(
        hello_in(&genuine).is_some(),
        "no reconnect ClientHello recorded"
    );
    let before = reconnects(&srv);
    let refused = |p: &Proc| p.stderr().matches("reconnect refused: Refused").count();
    let refusals = refused(&srv);
    let mut replay = TcpStream::connect(("127.0.0.1", sport)).unwrap();
    replay
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    replay.write_all(&genuine).unwrap();
    let mut sink = Vec::new();
    let _ = replay.read_to_end(&mut sink);
    wait_until("the server to refuse the replay", || {
        refused(&srv) > refusals
    });
    chat.round();
    assert_eq!(reconnects(&srv), before, "{}", srv.stderr());

    // 3. A reconnect whose ClientHello never reached the server, sent again
    //    by someone without the session's ticket: the token, nonce and MAC
    //    pass, but without resumption the server refuses.
    relay.hold_next();
    relay.cut();
    wait_until("the held ClientHello", || {
        relay.connections() > n + 1 && hello_in(&relay.recorded(n)).is_some()
    });
    forged = hello_in(&relay.recorded(n)).unwrap();
    chat.round(); // the client retried through the relay
    let refusals = srv.stderr().matches("reconnect refused").count();
    let (answer, closed) = probe(sport, &certs, &forged);
    assert!(closed, "the server talked to a forger");
    // The nonce is fresh unless the client's retry reused it (it does not).
    assert_eq!(answer, Some(Answer::Accepted));
    wait_until("the server to refuse the unresumed reconnect", || {
        srv.stderr().matches("reconnect refused").count() > refusals
    });
    assert!(
        srv.stderr().contains("no valid resumption"),
        "{}",
        srv.stderr()
    );
    for _ in 0..100 {
        chat.round();
    }
}

#[test]
fn redis_through_the_tunnel_survives_cuts() {
    const N: usize = 10_000;
    let redis = require_cmd("redis-server");
    let cli_bin = require_cmd("redis-cli");
    let certs = Certs::new();
    let rport = free_port();
    let dir = TempDir::new("restls-redis");
    let rs = Proc::spawn(
        Command::new(redis)
            .args(["--port", &rport.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path()),
    );
    wait_listening(rport, &rs);
    let (srv, sport) = server(&certs, rport);
    let relay = Arc::new(Relay::new(sport, u64::MAX));
    let (cli, cport) = client(&certs, relay.port);

    let stop = Arc::new(AtomicBool::new(false));
    let cuts = cutter(relay.clone(), Duration::from_millis(500), stop.clone());
    let mut c = Command::new(cli_bin);
    c.args(["-h", "127.0.0.1", "-p", &cport.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = thread::spawn(move || {
        for _ in 0..N {
            stdin.write_all(b"INCR restls:counter\n").unwrap();
        }
    });
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    feeder.join().unwrap();
    let status = child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let cuts = cuts.join().unwrap();
    let want: Vec<String> = (1..=N).map(|i| i.to_string()).collect();
    let got: Vec<&str> = out.lines().collect();
    assert!(
        status.success() && got == want,
        "redis-cli: {status}, {} replies, last {:?}\nserver:\n{}\nclient:\n{}",
        got.len(),
        got.last(),
        srv.stderr(),
        cli.stderr()
    );
    assert!(
        cuts >= 2,
        "only {cuts} cuts: the stream was too short to test"
    );
}

/// A restls server in `net`'s server namespace in front of an echo server,
/// a restls client (`client_args` added) in the client namespace, and a
/// chat through them; also the server's port.
fn tunnel_in(net: &Net, certs: &Certs, client_args: &[&str]) -> (Proc, Proc, Chat, u16) {
    let server_ip = net.server_addr();
    let echo = net.enter_server(|| TcpListener::bind((server_ip, 0)).unwrap());
    let eport = echo.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in echo.incoming().flatten() {
            thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let _ = std::io::copy(&mut &s, &mut w);
            });
        }
    });
    let srv = Proc::spawn(
        net.cmd_server(env!("CARGO_BIN_EXE_restls"))
            .args(["server", "--listen", &format!("{server_ip}:0")])
            .args(["--forward", &format!("{server_ip}:{eport}")])
            .arg("--cert")
            .arg(&certs.cert)
            .arg("--key")
            .arg(&certs.key),
    );
    let sport = listening(&srv).port();
    let cli = Proc::spawn(
        net.cmd_client(env!("CARGO_BIN_EXE_restls"))
            .args(["client", "--listen", "127.0.0.1:0"])
            .args(["--connect", &format!("{server_ip}:{sport}")])
            .arg("--ca")
            .arg(&certs.cert)
            .args(["--servername", NAME])
            .args(client_args),
    );
    let cport = listening(&cli).port();
    let s = net.enter_client(|| TcpStream::connect(("127.0.0.1", cport)).unwrap());
    let mut chat = Chat::over(s);
    chat.round();
    (srv, cli, chat, sport)
}

#[test]
fn client_follows_a_route_change_at_once() {
    require_netns();
    let net = Net::new("restls");
    let certs = Certs::new();
    // A keepalive of 10 s: only the route change can explain a quick reconnect.
    let (srv, cli, mut chat, _) = tunnel_in(&net, &certs, &["--keepalive", "10"]);
    let old = net.client_addr();
    let moved = net.roam_timed();
    chat.round();
    let took = moved.elapsed();
    let logs = format!("server:\n{}\nclient:\n{}", srv.stderr(), cli.stderr());
    assert!(
        took < Duration::from_secs(3),
        "{took:?} to follow the route change\n{logs}"
    );
    assert!(
        srv.stderr()
            .contains(&format!("peer address changed from {old}:")),
        "{logs}"
    );
    assert!(cli.stderr().contains("reconnected"), "{logs}");
    eprintln!("followed the route change in {took:?}\n{logs}");
    for _ in 0..50 {
        chat.round();
    }
}

/// docs/restls.md §6: with the default settings, when the router drops
/// every packet of the TLS connection's flow (both ways; a NAT that forgot
/// it) while the application talks, the client suspects the path after a
/// few round trips without an answer and resumes on a new connection
/// within 3 s, nothing lost or repeated (the chat checks every line).
#[test]
fn client_suspects_a_dropped_flow_within_seconds() {
    require_netns();
    let net = Net::new("restls_drop");
    let certs = Certs::new();
    let (_srv, cli, mut chat, sport) = tunnel_in(&net, &certs, &[]);
    for i in 0..3 {
        let ports = net.client_ports(sport);
        assert_eq!(ports.len(), 1, "one TLS connection expected: {ports:?}");
        net.drop_flow(ports[0], true);
        let dropped = Instant::now();
        chat.round();
        let took = dropped.elapsed();
        net.drop_flow(ports[0], false);
        assert!(
            took < Duration::from_secs(3),
            "drop {i}: the echo came back after {took:?}\n{}",
            cli.stderr()
        );
        assert_ne!(net.client_ports(sport), ports, "still on the dropped flow");
        eprintln!("drop {i}: echo again after {took:?}");
    }
    for _ in 0..50 {
        chat.round();
    }
}

/// A flood of connections that never finish their handshake cannot take
/// the server: past --max-startups, a new connection is closed at once and
/// logged; once the silent ones go, clients are served again.
#[test]
fn handshakes_beyond_max_startups_are_refused() {
    let certs = Certs::new();
    let echo = echo_server();
    let (srv, sport) = start_server(&certs, echo, &["--max-startups", "2"]);
    let silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", sport)).unwrap())
        .collect();
    // Both are accepted and wait in their handshakes.
    thread::sleep(Duration::from_millis(300));
    let mut third = TcpStream::connect(("127.0.0.1", sport)).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 1];
    let started = Instant::now();
    let r = third.read(&mut b);
    let closed = match &r {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    assert!(closed, "the third connection was not closed: {r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed only after {:?}",
        started.elapsed()
    );
    wait_until("the refusal in the server's log", || {
        srv.stderr().contains("max startups")
    });
    drop(silent);
    // The slots are free again: a real client gets through.
    let (_cli, cport) = client(&certs, sport);
    let mut c = TcpStream::connect(("127.0.0.1", cport)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
}

/// Over TLS 1.2 the extension is answered in ServerHello and a reconnect
/// resumes the TLS 1.2 session: a stream through the tunnel survives cuts.
#[test]
fn tls12_tunnel_is_resilient_too() {
    let run = stream_with_cuts(32 * MIB, 8 * MIB as u64, &["--tls-max", "1.2"]);
    assert!(run.cuts >= 3, "too few cuts ({})\n{}", run.cuts, run.logs());
    assert!(
        run.srv.stderr().contains("TLSv1.2, resilient"),
        "not a resilient TLS 1.2 connection\n{}",
        run.logs()
    );
    assert!(run.cli.stderr().contains("reconnected"), "{}", run.logs());
}

/// The certificate a new TLS connection to 127.0.0.1:`port` is shown, DER.
fn served_certificate(port: u16) -> Vec<u8> {
    let mut b = openssl::ssl::SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let tls = b.build().connect(NAME, tcp).unwrap();
    tls.ssl().peer_certificate().unwrap().to_der().unwrap()
}

fn der(pem: &std::path::Path) -> Vec<u8> {
    openssl::x509::X509::from_pem(&std::fs::read(pem).unwrap())
        .unwrap()
        .to_der()
        .unwrap()
}

/// The next sd_notify datagram on `sock`.
fn notified(sock: &std::os::unix::net::UnixDatagram, log: &dyn Fn() -> String) -> String {
    let mut buf = [0u8; 1024];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no sd_notify message: {e}\n{}", log()));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Sends `sig` (`-HUP`, ...) to process `pid`.
fn kill(sig: &str, pid: u32) {
    let out = run_timeout(
        Command::new("kill").args([sig, &pid.to_string()]),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "kill {sig}: {out:?}");
}

/// A server run from a configuration file, as restls@.service runs it,
/// tells `$NOTIFY_SOCKET` READY=1 once it listens; SIGHUP (systemctl
/// reload) makes it show a new certificate to new connections
/// (RELOADING=1, then READY=1), while a connection made before carries
/// on, and is resumed after a cut (the ticket keys did not change). A
/// reload with a key that is not the certificate's changes nothing.
/// SIGTERM: STOPPING=1, exit status 0.
#[test]
fn sighup_reloads_the_certificate_and_keeps_connections() {
    let old = Certs::new();
    let new = Certs::new();
    let dir = TempDir::new("restls-reload");
    let (cert, key) = (dir.join("demo.crt"), dir.join("demo.key"));
    std::fs::copy(&old.cert, &cert).unwrap();
    std::fs::copy(&old.key, &key).unwrap();
    let conf = dir.join("demo.conf");
    std::fs::write(
        &conf,
        format!(
            "# restls.conf(5)\nmode server\nlisten 127.0.0.1:0\nforward 127.0.0.1:{}\n\
             cert {}\nkey {}\ndetach-timeout 60\n",
            echo_server(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let sock_path = dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut srv = Proc::spawn(
        restls()
            .arg("--config")
            .arg(&conf)
            .env("NOTIFY_SOCKET", &sock_path),
    );
    let log = || srv.stderr();
    assert!(notified(&sock, &log).lines().any(|l| l == "READY=1"));
    let sport = listening(&srv).port();
    assert_eq!(served_certificate(sport), der(&old.cert));

    let relay = Arc::new(Relay::new(sport, u64::MAX));
    let (cli, cport) = client(&old, relay.port);
    let mut chat = Chat::new(cport);
    chat.round();

    let hup = || {
        kill("-HUP", srv.pid());
        let msg = notified(&sock, &log);
        assert!(
            msg.lines().any(|l| l == "RELOADING=1")
                && msg.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
            "after SIGHUP: {msg:?}"
        );
        let msg = notified(&sock, &log);
        assert!(msg.lines().any(|l| l == "READY=1"), "after reload: {msg:?}");
    };
    // A key that is not the certificate's: refused, the old pair stays.
    std::fs::copy(&new.cert, &cert).unwrap();
    hup();
    assert!(log().contains("reload failed"), "{}", log());
    assert_eq!(served_certificate(sport), der(&old.cert));

    std::fs::copy(&new.key, &key).unwrap();
    hup();
    assert_eq!(
        served_certificate(sport),
        der(&new.cert),
        "a new connection after the reload is not shown the new certificate\n{}",
        log()
    );
    chat.round();
    assert!(relay.cut() > 0);
    chat.round();
    chat.round();
    assert!(
        cli.stderr().contains("reconnected"),
        "client:\n{}\nserver:\n{}",
        cli.stderr(),
        log()
    );

    kill("-TERM", srv.pid());
    let msg = notified(&sock, &log);
    assert!(
        msg.lines().any(|l| l == "STOPPING=1"),
        "after SIGTERM: {msg:?}"
    );
    assert!(srv.exit_status().success(), "{}", srv.stderr());
}

/// A client's signals are events of its accept loop too: on SIGHUP it logs
/// that it has nothing to reload and carries on (its connection relays, a
/// new one is accepted); SIGTERM ends it with status 0.
#[test]
fn client_carries_on_after_sighup_and_stops_on_sigterm() {
    let certs = Certs::new();
    let (_srv, sport) = start_server(&certs, echo_server(), &[]);
    let (mut cli, cport) = client(&certs, sport);
    let mut chat = Chat::new(cport);
    chat.round();
    kill("-HUP", cli.pid());
    wait_until("the client's reload log line", || {
        cli.stderr().contains("a client has nothing to reload")
    });
    chat.round();
    Chat::new(cport).round();
    kill("-TERM", cli.pid());
    assert!(cli.exit_status().success(), "{}", cli.stderr());
    assert!(
        cli.stderr().contains("SIGTERM: stopping"),
        "{}",
        cli.stderr()
    );
}

/// The command line: --help and --version exit 0 on stdout; a usage error
/// exits 2 naming the option and the value; a configuration error names
/// the file and line; a certificate that cannot be loaded exits 1 (also
/// for --check, which otherwise exits 0 without serving).
#[test]
fn command_line_help_version_and_errors() {
    let run = |args: &[&str]| {
        let out = run_timeout(restls().args(args), Duration::from_secs(20));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for opt in [
        "--config",
        "--check",
        "--listen",
        "--forward",
        "--cert",
        "--key",
        "--tls-max",
        "--queue",
        "--max-connections",
        "--max-detached",
        "--max-per-source",
        "--ticket-lifetime",
    ] {
        assert!(out.contains(opt), "--help lacks {opt}:\n{out}");
    }
    let (code, out, _) = run(&["--version"]);
    assert_eq!(
        (code, out),
        (Some(0), format!("restls {}\n", env!("CARGO_PKG_VERSION")))
    );
    let (code, _, err) = run(&["client", "--keepalive=soon"]);
    assert_eq!(code, Some(2));
    assert!(
        err.starts_with("restls: --keepalive: not a number: \"soon\"\n"),
        "{err}"
    );
    let (code, _, err) = run(&["server", "--max-per-source=0"]);
    assert_eq!(code, Some(2));
    assert!(
        err.starts_with("restls: --max-per-source: 0 is not in 1..=16777216\n"),
        "{err}"
    );

    let certs = Certs::new();
    let conf = certs.dir.join("t.conf");
    std::fs::write(
        &conf,
        "mode server\nlisten 127.0.0.1:0\nforwrd 127.0.0.1:1\n",
    )
    .unwrap();
    let (code, _, err) = run(&["--config", conf.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(&format!("{}:3: forwrd: unknown option", conf.display())),
        "{err}"
    );

    let base = |key: &std::path::Path| {
        format!(
            "mode server\nlisten 127.0.0.1:0\nforward 127.0.0.1:1\ncert {}\nkey {}\n",
            certs.cert.display(),
            key.display()
        )
    };
    std::fs::write(&conf, base(&certs.key)).unwrap();
    let (code, _, err) = run(&["--config", conf.to_str().unwrap(), "--check"]);
    assert_eq!(code, Some(0), "{err}");
    std::fs::write(&conf, base(&certs.cert)).unwrap();
    let (code, _, err) = run(&["--config", conf.to_str().unwrap(), "--check"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("certificate or key"), "{err}");
}

/// A reconnect resumes with the newest session ticket, and tickets expire
/// (at most 7 days in TLS 1.3). The server sends fresh tickets on a live
/// TLS 1.3 connection, so a connection attached for several ticket
/// lifetimes (here 3 s) still reconnects after a cut.
#[test]
fn reconnect_after_longer_than_a_ticket_lifetime() {
    let certs = Certs::new();
    let (srv, sport) = start_server(&certs, echo_server(), &["--ticket-lifetime", "3"]);
    let relay = Relay::new(sport, u64::MAX);
    let (cli, cport) = client(&certs, relay.port);
    let mut chat = Chat::new(cport);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        chat.round();
        thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(relay.connections(), 1, "no reconnect yet\n{}", cli.stderr());
    assert_eq!(relay.cut(), 1);
    chat.round();
    assert!(
        cli.stderr().contains("reconnected"),
        "server:\n{}\nclient:\n{}",
        srv.stderr(),
        cli.stderr()
    );
}
