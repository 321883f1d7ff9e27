//! Port forwarding (-L, -R, -R 0), stdio forwarding (-W) with ProxyCommand,
//! and ProxyJump (-J) through a second sshd; -L and -R against resshd too.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::thread;
use std::time::Duration;

/// An echo server on 127.0.0.1 for the life of the test process.
fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    port
}

/// Sends `n` bytes through 127.0.0.1:port and checks they come back.
fn echo_through(port: u16, n: usize, seed: u8) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
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
    assert_eq!(got.len(), data.len(), "echo length through port {port}");
    assert!(got == data, "echoed bytes differ through port {port}");
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
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
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
