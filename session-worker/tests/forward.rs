//! TCP forwarding through stock `ssh`: -L (direct-tcpip), -R (tcpip-forward
//! and forwarded-tcpip), -W, and the policy's refusals.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{default_policy, random_bytes, Harness};
use ressh_ipc::msg::Forwarding;
use ressh_ipc::permit::{HostPattern, HostPort, Permit, PortPattern};
use ressh_testkit::text;
use ressh_testkit::{free_port, run};

/// An echo server on 127.0.0.1: each connection gets its bytes back, and
/// EOF once it sent EOF.
fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in l.incoming().take(64) {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
                let _ = s.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

/// A PermitOpen / PermitListen entry, `None` for port `*`.
fn entry(host: &str, port: Option<u16>) -> HostPort {
    HostPort {
        host: HostPattern::new(host),
        port: port.map_or(PortPattern::Any, PortPattern::Port),
    }
}

/// Sends `n` random bytes through `port` and checks they come back intact,
/// then that EOF travels both ways.
fn round_trip(port: u16, n: usize) {
    let data = random_bytes(n);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = s.try_clone().unwrap();
    let sent = data.clone();
    let writer = thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len(), data.len(), "bytes echoed through port {port}");
    assert!(got == data, "echoed bytes differ");
}

fn wait_connectable(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A background `ssh -N`, killed on drop.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn local_forward_carries_streams_intact() {
    let h = Harness::start("fwdl", default_policy());
    let echo = echo_server();
    let lport = free_port();
    let spec = format!("127.0.0.1:{lport}:127.0.0.1:{echo}");
    let _ssh = Bg(h
        .ssh_with(&["-N", "-o", "ExitOnForwardFailure=yes", "-L", &spec])
        .stdin(Stdio::null())
        .spawn()
        .unwrap());
    wait_connectable(lport);
    round_trip(lport, 4 << 20);
    // Several at once.
    let threads: Vec<_> = (0..3)
        .map(|_| thread::spawn(move || round_trip(lport, 1 << 20)))
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // By name: "localhost" is resolved without blocking the loop.
    let out = run(h
        .ssh_with(&["-W", &format!("localhost:{echo}")])
        .stdin(Stdio::null()));
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), h.log());
    drop(_ssh);
    let log = h.finish();
    assert!(
        log.contains(&format!("direct-tcpip to 127.0.0.1 port {echo}")),
        "{log}"
    );
}

#[test]
fn remote_forward_carries_streams_intact() {
    let h = Harness::start("fwdr", default_policy());
    let echo = echo_server();
    let rport = free_port();
    let spec = format!("127.0.0.1:{rport}:127.0.0.1:{echo}");
    let ssh = Bg(h
        .ssh_with(&["-N", "-o", "ExitOnForwardFailure=yes", "-R", &spec])
        .stdin(Stdio::null())
        .spawn()
        .unwrap());
    h.wait_log(
        |l| {
            l.contains(&format!(
                "remote forward listening on 127.0.0.1 port {rport}"
            ))
        },
        Duration::from_secs(15),
    );
    round_trip(rport, 4 << 20);
    let threads: Vec<_> = (0..3)
        .map(|_| thread::spawn(move || round_trip(rport, 1 << 20)))
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(ssh);
    h.finish();
    // The listener went away with the session.
    assert!(TcpStream::connect(("127.0.0.1", rport)).is_err());
}

#[test]
fn remote_forward_port_zero_reports_the_allocated_port() {
    let h = Harness::start("fwdr0", default_policy());
    let echo = echo_server();
    let mut child = h
        .ssh_with(&[
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            &format!("0:127.0.0.1:{echo}"),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let ssh = Bg(child);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("ssh prints the allocated port");
    // "Allocated port 12345 for remote forward to 127.0.0.1:port"
    let port: u16 = line
        .strip_prefix("Allocated port ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line: {line}"));
    round_trip(port, 1 << 20);
    drop(ssh);
    h.finish();
}

#[test]
fn forwarding_refusals() {
    let echo = echo_server();
    // PermitOpen limits direct-tcpip targets; a closed port fails to connect.
    let mut policy = default_policy();
    policy.permit_open.admin = Permit::Only(vec![
        entry("127.0.0.1", Some(free_port())),
        entry("localhost", None),
    ]);
    let h = Harness::start("fwdno", policy);
    let out = run(h
        .ssh_with(&["-W", &format!("127.0.0.1:{echo}")])
        .stdin(Stdio::null()));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("administratively prohibited"),
        "{}",
        text(&out.stderr)
    );
    let closed = free_port();
    let out = run(h
        .ssh_with(&["-W", &format!("localhost:{closed}")])
        .stdin(Stdio::null()));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("connect failed"),
        "{}",
        text(&out.stderr)
    );
    let log = h.finish();
    assert!(log.contains("but the request was denied"), "{log}");
    assert!(
        log.contains(&format!("connect_to localhost port {closed}: failed")),
        "{log}"
    );
    drop(h);

    // The key's list narrows the configuration's: with PermitOpen none, a
    // key's permitopen= naming the echo server opens nothing; with the
    // configuration allowing it, a key naming another port opens nothing;
    // with both naming it (`[::ffff:127.0.0.1]` is 127.0.0.1) it opens.
    let mut policy = default_policy();
    policy.permit_open.admin = Permit::Only(Vec::new());
    policy.permit_open.key = Permit::Only(vec![entry("127.0.0.1", Some(echo))]);
    let h = Harness::start("fwdnone", policy);
    let out = run(h
        .ssh_with(&["-W", &format!("127.0.0.1:{echo}")])
        .stdin(Stdio::null()));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("administratively prohibited"),
        "{}",
        text(&out.stderr)
    );
    h.finish();
    let mut policy = default_policy();
    policy.permit_open.admin = Permit::Only(vec![entry("127.0.0.1", Some(echo))]);
    policy.permit_open.key = Permit::Only(vec![entry("127.0.0.1", Some(10))]);
    let h = Harness::start("fwdkey", policy);
    let out = run(h
        .ssh_with(&["-W", &format!("127.0.0.1:{echo}")])
        .stdin(Stdio::null()));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("administratively prohibited"),
        "{}",
        text(&out.stderr)
    );
    h.finish();
    let mut policy = default_policy();
    policy.permit_open.admin = Permit::Only(vec![entry("127.0.0.1", Some(echo))]);
    policy.permit_open.key = Permit::Only(vec![entry("[::ffff:127.0.0.1]", Some(echo))]);
    let h = Harness::start("fwdboth", policy);
    let out = run(h
        .ssh_with(&["-W", &format!("127.0.0.1:{echo}")])
        .stdin(Stdio::null()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    h.finish();

    // AllowTcpForwarding local: remote forwards are refused.
    let mut policy = default_policy();
    policy.forwarding = Forwarding::Local;
    let h = Harness::start("fwdloc", policy);
    let out = run(h
        .ssh_with(&[
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            &format!("{}:127.0.0.1:{echo}", free_port()),
        ])
        .stdin(Stdio::null()));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("remote port forwarding failed"),
        "{}",
        text(&out.stderr)
    );
    // Ports below 1024 cannot be bound by the user.
    let mut policy = default_policy();
    policy.forwarding = Forwarding::Remote;
    let h2 = Harness::start("fwdlow", policy);
    let out = run(h2
        .ssh_with(&[
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            &format!("1000:127.0.0.1:{echo}"),
        ])
        .stdin(Stdio::null()));
    assert!(!out.status.success());
    let log = h2.finish();
    assert!(log.contains("port 1000 failed"), "{log}");
    h.finish();
}
