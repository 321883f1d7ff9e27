//! Port forwarding (-L, -R, -R 0, -D with SOCKS4, SOCKS4a and SOCKS5),
//! stdio forwarding (-W) with ProxyCommand, and ProxyJump (-J) through a
//! second sshd; -L, -R and -D against resshd too, -D across reconnects.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

/// Sends `n` bytes through 127.0.0.1:port and checks they come back.
fn echo_through(port: u16, n: usize, seed: u8) {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    echo_stream(s, n, seed, &format!("port {port}"));
}

/// Sends `n` bytes through a connected stream to an echo server and checks
/// they come back.
fn echo_stream(mut s: TcpStream, n: usize, seed: u8, what: &str) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let data: Vec<u8> = (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let mut w = s.try_clone().unwrap();
    let d2 = data.clone();
    let writer = thread::spawn(move || {
        w.write_all(&d2).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len(), data.len(), "echo length through {what}");
    assert!(got == data, "echoed bytes differ through {what}");
}

fn parallel_echo(port: u16) {
    let hs: Vec<_> = (0..4)
        .map(|i| thread::spawn(move || echo_through(port, 2 << 20, i)))
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    echo_through(port, 1, 9);
}

fn local_forward(env: &Env) {
    let echo = echo_server();
    let lport = ressh_testkit::free_port();
    let mut c = env.ressh();
    c.arg("-N")
        .arg("-L")
        .arg(format!("{lport}:127.0.0.1:{echo}"))
        .arg("127.0.0.1");
    let bg = spawn(&mut c);
    assert!(
        wait_port(lport, Duration::from_secs(20)),
        "-L listener did not open; {}",
        env.server.log()
    );
    parallel_echo(lport);
    drop(bg);
}

fn remote_forward(env: &Env) {
    let echo = echo_server();
    let rport = ressh_testkit::free_port();
    let mut c = env.ressh();
    c.arg("-N")
        .arg("-R")
        .arg(format!("{rport}:127.0.0.1:{echo}"))
        .arg("127.0.0.1");
    let bg = spawn(&mut c);
    assert!(
        wait_port(rport, Duration::from_secs(20)),
        "-R listener did not open; {}",
        env.server.log()
    );
    parallel_echo(rport);
    drop(bg);

    // -R 0: the server picks the port, ressh says which.
    let mut c = env.ressh();
    c.args([
        "-R",
        &format!("0:127.0.0.1:{echo}"),
        "127.0.0.1",
        "sleep 30",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut bg = Bg(c.spawn().unwrap());
    let mut line = String::new();
    BufReader::new(bg.0.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .strip_prefix("Allocated port ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no allocated port in {line:?}"));
    assert!(
        line.contains(&format!("for remote forward to 127.0.0.1:{echo}")),
        "{line}"
    );
    echo_through(port, 100_000, 3);
}

#[test]
fn local_forward_sshd() {
    let env = Env::sshd("");
    local_forward(&env);
}

#[test]
fn remote_forward_sshd() {
    let env = Env::sshd("");
    remote_forward(&env);
}

#[test]
fn local_forward_resshd() {
    let env = Env::resshd("");
    local_forward(&env);
}

#[test]
fn remote_forward_resshd() {
    let env = Env::resshd("");
    remote_forward(&env);
}

#[test]
fn forward_failures() {
    let env = Env::sshd("");
    // The local port is taken: with ExitOnForwardFailure, 255.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = env.exec(&[
        "-o",
        "ExitOnForwardFailure=yes",
        "-L",
        &format!("127.0.0.1:{port}:127.0.0.1:1"),
        "true",
    ]);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("Could not request local forwarding"),
        "{}",
        text(&out.stderr)
    );
    // A refused remote forward (sshd forbids it) is a warning, or fatal with
    // ExitOnForwardFailure.
    let env = Env::sshd("AllowTcpForwarding local");
    let out = env.exec(&["-R", "0:127.0.0.1:1", "echo", "ran"]);
    check(&out, &env, "-R refused, not fatal");
    assert!(
        text(&out.stderr).contains("remote port forwarding failed"),
        "{}",
        text(&out.stderr)
    );
    let out = env.exec(&[
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        "0:127.0.0.1:1",
        "sleep",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(255));
    // A -L connection the server cannot make: the local socket is closed.
    let env = Env::sshd("");
    let dead = ressh_testkit::free_port();
    let lport = ressh_testkit::free_port();
    let mut c = env.ressh();
    c.args([
        "-N",
        "-L",
        &format!("{lport}:127.0.0.1:{dead}"),
        "127.0.0.1",
    ]);
    let _bg = spawn(&mut c);
    assert!(wait_port(lport, Duration::from_secs(20)));
    let mut s = TcpStream::connect(("127.0.0.1", lport)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(
        s.read(&mut b).unwrap_or(0),
        0,
        "the socket should be closed"
    );
}

#[test]
fn proxy_jump_through_a_second_sshd() {
    let env = Env::sshd("");
    let target = Sshd::start("");
    let mut kh = std::fs::read_to_string(&env.known_hosts).unwrap();
    kh.push_str(&target.known_hosts());
    std::fs::write(&env.known_hosts, kh).unwrap();
    let jump = format!("{}@127.0.0.1:{}", env.user.name, env.server.port());
    let out = env.exec_to(
        &["-J", &jump, "-p", &target.port().to_string()],
        &["echo", "$SSH_CONNECTION"],
    );
    assert!(
        out.status.success(),
        "-J: {}\n--- jump log ---\n{}\n--- target log ---\n{}",
        text(&out.stderr),
        env.server.log(),
        target.log()
    );
    let conn = text(&out.stdout);
    assert_eq!(
        conn.split_whitespace().nth(3),
        Some(target.port().to_string().as_str()),
        "{conn}"
    );
    // The jump host made the connection to the target.
    assert!(
        env.server
            .log()
            .contains(&format!("port {}", target.port())),
        "{}",
        env.server.log()
    );
    // Two hops: through the jump host twice.
    let out = env.exec_to(
        &[
            "-J",
            &format!("{jump},{jump}"),
            "-p",
            &target.port().to_string(),
        ],
        &["echo", "two hops"],
    );
    assert_eq!(text(&out.stdout), "two hops\n", "{}", text(&out.stderr));
    // ProxyCommand with ressh -W does the same.
    let pc = format!(
        "ProxyCommand={RESSH} -F {} -W %h:%p -p {} {}@127.0.0.1",
        env.config.display(),
        env.server.port(),
        env.user.name
    );
    let out = env.exec_to(
        &["-o", &pc, "-p", &target.port().to_string()],
        &["echo", "proxied"],
    );
    assert_eq!(text(&out.stdout), "proxied\n", "{}", text(&out.stderr));
    // A jump host that is not there: a clear failure, 255.
    let out = env.exec_to(&["-J", "127.0.0.1:1"], &["true"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("Connection refused"),
        "{}",
        text(&out.stderr)
    );
    drop(target);
}

/// An HTTP server on 127.0.0.1 answering every request with `body`.
fn http_server(body: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let _ = write!(
                    s,
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

/// `ressh -N -E log -D spec 127.0.0.1` in the background, its listener up.
fn dynamic(env: &Env, opts: &[&str], spec: &str, log: &std::path::Path) -> Bg {
    let mut c = env.ressh();
    c.arg("-N")
        .arg("-E")
        .arg(log)
        .args(opts)
        .args(["-D", spec, "127.0.0.1"]);
    spawn(&mut c)
}

/// Whether something accepts TCP connections on ip:port now.
fn accepts(ip: &str, port: u16) -> bool {
    TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().unwrap(),
        Duration::from_secs(5),
    )
    .is_ok()
}

#[test]
fn dynamic_forward_sshd() {
    let curl = require_cmd("curl");
    let env = Env::sshd("");
    let http = http_server("hello through SOCKS\n");
    let echo = echo_server();
    let dport = ressh_testkit::free_port();
    let log = env.dir.join("ressh-D.log");
    let _bg = dynamic(&env, &["-o", "LogLevel=DEBUG1"], &dport.to_string(), &log);
    let ctx = || {
        format!(
            "--- ressh log ---\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    };
    assert!(wait_port(dport, Duration::from_secs(20)), "{}", ctx());

    // curl, the four ways; with -hostname and 4a the server resolves the name.
    for (flag, host) in [
        ("--socks5-hostname", "localhost"),
        ("--socks5", "127.0.0.1"),
        ("--socks4a", "localhost"),
        ("--socks4", "127.0.0.1"),
    ] {
        let out = run_timeout(
            Command::new(&curl)
                .args(["-sS", "--max-time", "20", flag])
                .arg(format!("127.0.0.1:{dport}"))
                .arg(format!("http://{host}:{http}/")),
            T,
        );
        assert!(
            out.status.success(),
            "curl {flag}: {}\n{}",
            text(&out.stderr),
            ctx()
        );
        assert_eq!(text(&out.stdout), "hello through SOCKS\n", "curl {flag}");
    }
    assert!(
        ctx().contains(&format!("asks for localhost:{http}")),
        "{}",
        ctx()
    );

    // Bulk data both ways, in parallel, over SOCKS5 and SOCKS4.
    let hs: Vec<_> = (0..4u8)
        .map(|i| {
            thread::spawn(move || {
                let (s, rep) = if i % 2 == 0 {
                    socks5(dport, "127.0.0.1", echo)
                } else {
                    socks4(dport, "127.0.0.1", echo)
                };
                assert_eq!(rep, if i % 2 == 0 { 0 } else { 90 });
                echo_stream(s, 2 << 20, i, "SOCKS");
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }

    // The whole request and data at once, before any reply; and a request
    // trickled a byte at a time.
    let mut s = TcpStream::connect(("127.0.0.1", dport)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = vec![5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1];
    req.extend_from_slice(&echo.to_be_bytes());
    req.extend_from_slice(b"early data");
    s.write_all(&req).unwrap();
    let mut r = [0u8; 12];
    s.read_exact(&mut r).unwrap();
    assert_eq!(r, [5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    let mut got = [0u8; 10];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"early data");
    let mut s = TcpStream::connect(("127.0.0.1", dport)).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = vec![4, 1];
    req.extend_from_slice(&echo.to_be_bytes());
    req.extend_from_slice(&[0, 0, 0, 7]);
    req.extend_from_slice(b"someone\x00127.0.0.1\x00");
    for b in &req {
        s.write_all(&[*b]).unwrap();
        thread::sleep(Duration::from_millis(5));
    }
    let mut r = [0u8; 8];
    s.read_exact(&mut r).unwrap();
    assert_eq!(r[..2], [0, 90]);
    echo_roundtrip(&mut s, b"trickled");

    // A target nobody listens on: the reply says so, and the client is
    // closed (ssh would have said "granted").
    let dead = ressh_testkit::free_port();
    let (mut s, rep) = socks5(dport, "127.0.0.1", dead);
    assert_eq!(rep, 5, "SOCKS5 reply for a refused connection");
    assert!(read_to_close(&mut s).is_empty());
    let (mut s, rep) = socks4(dport, "127.0.0.1", dead);
    assert_eq!(rep, 91, "SOCKS4 reply for a refused connection");
    assert!(read_to_close(&mut s).is_empty());

    // Hostile or unsupported requests: answered where SOCKS can say why,
    // then closed; nothing else is disturbed. (The long ones are exactly
    // the 1024 bytes ressh reads before refusing: more would still be
    // unread at the close, which then resets the connection.)
    let mut long_user = vec![4, 1, 0, 80, 127, 0, 0, 1];
    long_user.resize(1024, b'u');
    let mut long_host = vec![4, 1, 0, 80, 0, 0, 0, 1, 0];
    long_host.resize(1024, b'h');
    let v4_no = vec![0, 91, 0, 0, 0, 0, 0, 0];
    let v5 = |rep: u8| vec![5, 0, 5, rep, 0, 1, 0, 0, 0, 0, 0, 0];
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), vec![]),
        (long_user, v4_no.clone()),
        (long_host, v4_no.clone()),
        (vec![4, 2, 0, 80, 127, 0, 0, 1, 0], v4_no),
        (vec![5, 1, 2], vec![5, 0xff]),
        (vec![5, 0], vec![5, 0xff]),
        (vec![5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80], v5(7)),
        (vec![5, 1, 0, 5, 1, 0, 9, 1, 2], v5(8)),
        (vec![5, 1, 0, 5, 1, 0, 3, 0, 0, 80], v5(1)),
        (vec![5, 1, 0, 5, 1, 0, 3, 3, b'a', 0, b'b', 0, 80], v5(1)),
        (vec![5, 1, 0, 4, 1, 0, 1], v5(1)),
    ];
    for (req, want) in cases {
        let mut s = TcpStream::connect(("127.0.0.1", dport)).unwrap();
        s.write_all(&req).unwrap();
        assert_eq!(
            read_to_close(&mut s),
            want,
            "request {:?}",
            &req[..req.len().min(16)]
        );
    }
    // A client that leaves before its request is done.
    drop(TcpStream::connect(("127.0.0.1", dport)).unwrap());
    let (s, rep) = socks5(dport, "127.0.0.1", echo);
    assert_eq!(rep, 0, "{}", ctx());
    echo_stream(s, 100_000, 7, "SOCKS after the refusals");
    let l = ctx();
    for why in [
        "too long",
        "not a SOCKS4 or SOCKS5 request",
        "only CONNECT",
        "no method without authentication",
        "unknown address type",
        "bad host name",
    ] {
        assert!(l.contains(why), "no {why:?} in the log\n{l}");
    }

    // Where the listener binds: loopback by default; all addresses with -g
    // (GatewayPorts); the address given. 127.0.0.2 is loopback too, but
    // only a listener on it or on all addresses takes its connections.
    assert!(!accepts("127.0.0.2", dport));
    let p2 = ressh_testkit::free_port();
    let _g = dynamic(&env, &["-g"], &p2.to_string(), &env.dir.join("g.log"));
    assert!(wait_port(p2, Duration::from_secs(20)));
    assert!(accepts("127.0.0.2", p2));
    let p3 = ressh_testkit::free_port();
    let _b = dynamic(
        &env,
        &["-g"],
        &format!("127.0.0.2:{p3}"),
        &env.dir.join("b.log"),
    );
    wait_for(
        "the -D listener on 127.0.0.2",
        Duration::from_secs(20),
        || accepts("127.0.0.2", p3).then_some(()),
        String::new,
    );
    assert!(!accepts("127.0.0.1", p3));
}

#[test]
fn dynamic_forward_resshd_survives_reconnects() {
    let env = Env::resshd("");
    let echo = echo_server();
    let dport = ressh_testkit::free_port();
    let log = env.dir.join("ressh-D.log");
    let _bg = dynamic(
        &env,
        &["-o", "LogLevel=VERBOSE"],
        &format!("127.0.0.1:{dport}"),
        &log,
    );
    let ctx = || {
        format!(
            "--- ressh log ---\n{}\n--- resshd log ---\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            env.server.log()
        )
    };
    assert!(wait_port(dport, Duration::from_secs(20)), "{}", ctx());
    let (mut s5, rep) = socks5(dport, "127.0.0.1", echo);
    assert_eq!(rep, 0, "{}", ctx());
    let (mut s4, rep) = socks4(dport, "127.0.0.1", echo);
    assert_eq!(rep, 90, "{}", ctx());
    echo_roundtrip(&mut s5, b"before the cut");
    echo_roundtrip(&mut s4, b"before the cut");
    for round in 1..=2 {
        // Cut ressh's TCP connection: it reconnects, and the SOCKS
        // connections and the listener carry on.
        assert!(kill_tcp_to(env.server.port()) >= 1, "{}", ctx());
        wait_for(
            "ressh to reconnect",
            Duration::from_secs(30),
            || (count_in_file(&log, "reconnected to") >= round).then_some(()),
            ctx,
        );
        echo_roundtrip(&mut s5, format!("after cut {round}").as_bytes());
        echo_roundtrip(&mut s4, format!("after cut {round}").as_bytes());
        let (s, rep) = socks5(dport, "127.0.0.1", echo);
        assert_eq!(rep, 0, "{}", ctx());
        echo_stream(s, 1 << 20, round as u8, "a new SOCKS connection");
    }
}
