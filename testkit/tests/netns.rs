//! Proves the namespace lab: a TCP echo from the client namespace to the server
//! namespace, and each disruption's observable effect on it. Needs root; fails, never
//! skips.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ressh_testkit::{require_cmd, require_netns, run, Net};

/// An echo server on 198.18.0.1 in the server namespace. Reports the peer address of
/// every connection it accepts. Stops (all its threads) on drop.
struct Echo {
    addr: SocketAddr,
    peers: mpsc::Receiver<SocketAddr>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(net: &Net) -> Echo {
        let ip = net.server_addr();
        // The socket is made in the server namespace and stays there, whichever thread
        // uses it afterwards.
        let listener = net
            .enter_server(|| TcpListener::bind((ip, 0)))
            .expect("bind in the server namespace");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, peers) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, peer)) => {
                        let _ = tx.send(peer);
                        let stop3 = stop2.clone();
                        thread::spawn(move || echo_loop(conn, &stop3));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        Echo {
            addr,
            peers,
            stop,
            thread: Some(thread),
        }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The source address of the next connection the server accepted.
    fn next_peer(&self) -> SocketAddr {
        self.peers
            .recv_timeout(Duration::from_secs(5))
            .expect("the server accepted no connection")
    }
}

fn echo_loop(mut conn: TcpStream, stop: &AtomicBool) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP connection from the client namespace to `echo`.
fn connect(net: &Net, echo: &Echo) -> io::Result<TcpStream> {
    let addr = echo.addr;
    net.enter_client(|| TcpStream::connect_timeout(&addr, Duration::from_secs(2)))
}

/// Writes `msg` and reads it back, waiting at most `wait`.
fn roundtrip(conn: &mut TcpStream, msg: &[u8], wait: Duration) -> io::Result<Vec<u8>> {
    conn.write_all(msg)?;
    read_exact_within(conn, msg.len(), wait)
}

fn read_exact_within(conn: &mut TcpStream, len: usize, wait: Duration) -> io::Result<Vec<u8>> {
    conn.set_read_timeout(Some(wait))?;
    let mut buf = vec![0u8; len];
    conn.read_exact(&mut buf)?;
    Ok(buf)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// An echo server and a client connection proven to work, from the client's address.
fn lab(tag: &str) -> (Net, Echo, TcpStream) {
    require_netns();
    let net = Net::new(tag);
    let echo = Echo::start(&net);
    let mut conn = connect(&net, &echo).expect("connect from the client namespace");
    assert_eq!(echo.next_peer().ip(), IpAddr::V4(net.client_addr()));
    let got = roundtrip(&mut conn, b"hello", Duration::from_secs(2)).expect("echo");
    assert_eq!(got, b"hello");
    (net, echo, conn)
}

fn netns_list() -> String {
    let out = run(Command::new(require_cmd("ip")).args(["netns", "list"]));
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every address in `ns` is loopback or from 198.18.0.0/15.
fn assert_only_test_addresses(ns: &str) {
    let out = run(Command::new(require_cmd("ip")).args(["-n", ns, "-o", "addr", "show"]));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let family = words.find(|w| *w == "inet" || *w == "inet6");
        let Some(family) = family else { continue };
        let addr = words.next().unwrap().split('/').next().unwrap();
        let addr: IpAddr = addr.parse().unwrap();
        let ok = addr.is_loopback()
            || matches!(addr, IpAddr::V4(a) if a.octets()[0] == 198 && (a.octets()[1] & 0xfe) == 18);
        assert!(ok, "{family} address {addr} in {ns}:\n{text}");
    }
}

#[test]
fn echo_through_the_lab_then_everything_removed() {
    let (net, echo, mut conn) = lab("echo");
    assert_eq!(net.server_addr().to_string(), "198.18.0.1");
    assert_eq!(net.client_addr().to_string(), "198.18.1.2");
    assert_eq!(
        conn.local_addr().unwrap().ip(),
        IpAddr::V4(net.client_addr())
    );
    assert_eq!(
        roundtrip(&mut conn, b"again", Duration::from_secs(2)).unwrap(),
        b"again"
    );

    let names = [net.server_ns(), net.router_ns(), net.client_ns()].map(str::to_string);
    let list = netns_list();
    for name in &names {
        assert!(
            list.lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} not in\n{list}"
        );
        assert_only_test_addresses(name);
    }

    // Commands run inside the namespaces.
    let out = run(net.cmd_client("ip").args(["-o", "-4", "addr", "show"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("inet 198.18.1.2/24"), "{text}");
    let mut cmd = Command::new("ip");
    net.in_server(cmd.args(["-o", "-4", "addr", "show"]));
    let text = String::from_utf8_lossy(&run(&mut cmd).stdout).into_owned();
    assert!(
        text.contains("inet 198.18.0.1/24") && !text.contains("198.18.1."),
        "{text}"
    );

    // A process left running inside a namespace is killed on drop.
    let mut sleeper = net.cmd_client("sleep").arg("60").spawn().unwrap();
    let started = Instant::now();
    drop(conn);
    drop(echo);
    drop(net);
    let status = sleeper.wait().unwrap();
    assert!(!status.success(), "sleep was not killed: {status}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let list = netns_list();
    for name in &names {
        assert!(
            !list.contains(name.as_str()),
            "{name} still exists:\n{list}"
        );
    }
    // The caller's namespace never got any of the lab's addresses.
    let out = run(Command::new(require_cmd("ip")).args(["-o", "addr", "show"]));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("198.18."));
}

#[test]
fn kill_tcp_breaks_the_connection_at_once() {
    let (net, echo, mut conn) = lab("kill");
    assert_eq!(net.kill_tcp(echo.port()), 1);
    // Broken by the time kill_tcp returned (however long running `ss`
    // took): a read fails or sees the end without waiting.
    let mut buf = [0u8; 16];
    conn.set_nonblocking(true).unwrap();
    match conn.read(&mut buf) {
        Ok(0) => {}
        Err(e) if !is_timeout(&e) => {}
        other => panic!("read right after kill_tcp: {other:?} (the connection is not broken)"),
    }

    // Nothing left to kill: a clear failure, not a silent no-op.
    let port = echo.port();
    let r = std::panic::catch_unwind(|| net.kill_tcp(port));
    assert!(r.is_err());
    // The path itself is fine.
    let mut fresh = connect(&net, &echo).unwrap();
    assert_eq!(
        roundtrip(&mut fresh, b"x", Duration::from_secs(2)).unwrap(),
        b"x"
    );
}

#[test]
fn blackhole_stalls_then_the_same_connection_resumes() {
    let (net, echo, mut conn) = lab("hole");
    net.blackhole(true);
    let e = roundtrip(&mut conn, b"lost?", Duration::from_millis(300)).unwrap_err();
    assert!(is_timeout(&e), "blackholed read: {e}");
    let addr = echo.addr;
    let e = net
        .enter_client(|| TcpStream::connect_timeout(&addr, Duration::from_millis(300)))
        .unwrap_err();
    assert!(is_timeout(&e), "connect through a blackhole: {e}");

    net.blackhole(false);
    let started = Instant::now();
    let got = read_exact_within(&mut conn, 5, Duration::from_secs(5)).expect("resume");
    assert_eq!(got, b"lost?");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        roundtrip(&mut conn, b"more", Duration::from_secs(2)).unwrap(),
        b"more"
    );
}

#[test]
fn reject_resets_the_connection() {
    let (net, echo, mut conn) = lab("rej");
    net.reject(true);
    let started = Instant::now();
    let e = roundtrip(&mut conn, b"x", Duration::from_secs(5)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    assert!(started.elapsed() < Duration::from_secs(1));
    let e = connect(&net, &echo).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");

    net.reject(false);
    let mut fresh = connect(&net, &echo).unwrap();
    assert_eq!(
        roundtrip(&mut fresh, b"ok", Duration::from_secs(2)).unwrap(),
        b"ok"
    );
}

#[test]
fn link_down_stalls_then_link_up_resumes() {
    let (net, echo, mut conn) = lab("link");
    net.link(false);
    let e = roundtrip(&mut conn, b"wait", Duration::from_millis(300)).unwrap_err();
    assert!(is_timeout(&e), "read with the link down: {e}");

    net.link(true);
    let started = Instant::now();
    let got = read_exact_within(&mut conn, 4, Duration::from_secs(5)).expect("resume");
    assert_eq!(got, b"wait");
    assert!(started.elapsed() < Duration::from_secs(3));
    let mut fresh = connect(&net, &echo).unwrap();
    assert_eq!(echo.next_peer().ip(), IpAddr::V4(net.client_addr()));
    assert_eq!(
        roundtrip(&mut fresh, b"y", Duration::from_secs(2)).unwrap(),
        b"y"
    );
}

#[test]
fn roam_changes_the_client_address_and_strands_old_connections() {
    let (net, echo, mut old) = lab("roam");
    let a = net.client_addr();
    net.roam();
    let b = net.client_addr();
    assert_eq!(b.to_string(), "198.18.2.2");
    assert_eq!(net.client_iface(), "up-b");

    // The old connection's source address is gone: it goes nowhere.
    match roundtrip(&mut old, b"old", Duration::from_millis(300)) {
        Err(_) => {}
        Ok(got) => panic!("the old connection still works after roaming: {got:?}"),
    }
    let mut new = connect(&net, &echo).unwrap();
    assert_eq!(new.local_addr().unwrap().ip(), IpAddr::V4(b));
    assert_eq!(echo.next_peer().ip(), IpAddr::V4(b));
    assert_eq!(
        roundtrip(&mut new, b"new", Duration::from_secs(2)).unwrap(),
        b"new"
    );
    let out = run(Command::new("ip").args(["-n", net.client_ns(), "-o", "-4", "addr"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains(&a.to_string()),
        "old address still there:\n{text}"
    );

    // And back to a fresh uplink A.
    net.roam();
    assert_eq!(net.client_addr(), a);
    let mut again = connect(&net, &echo).unwrap();
    assert_eq!(echo.next_peer().ip(), IpAddr::V4(a));
    assert_eq!(
        roundtrip(&mut again, b"back", Duration::from_secs(2)).unwrap(),
        b"back"
    );
    assert_only_test_addresses(net.client_ns());
}
