//! Failures end with one clear line on stderr and exit status 255: a
//! garbage banner, a connection closed during key exchange, a changed host
//! key, a refused connection, a silent server (ConnectTimeout) and a server
//! that stops answering (ServerAliveInterval).

mod common;
use common::*;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

/// A one-connection TCP server on 127.0.0.1 running `serve`.
fn fake_server(
    serve: impl FnOnce(std::net::TcpStream) + Send + 'static,
) -> (u16, thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = thread::spawn(move || {
        if let Ok((s, _)) = l.accept() {
            serve(s);
        }
    });
    (port, h)
}

fn ressh_to(port: u16, extra: &[&str]) -> Output {
    let dir = TempDir::new("errs");
    let mut c = Command::new(RESSH);
    c.args([
        "-F",
        "none",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
    ])
    .arg("-o")
    .arg(format!("UserKnownHostsFile={}", dir.join("kh").display()))
    .args(["-o", "GlobalKnownHostsFile=none", "-p", &port.to_string()])
    .args(extra)
    .args(["127.0.0.1", "true"]);
    run_timeout(&mut c, T)
}

fn one_line_255(out: &Output, expect: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.contains(expect), "{err:?} lacks {expect:?}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn garbage_banner_then_close() {
    let (port, h) = fake_server(|mut s| {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\x00\x01\xff junk\r\n\r\n");
    });
    let out = ressh_to(port, &[]);
    h.join().unwrap();
    one_line_255(&out, "kex_exchange_identification");
}

#[test]
fn garbage_banner_without_end() {
    let (port, h) = fake_server(|mut s| {
        // 100 KiB of junk without a newline, and the connection stays open.
        let junk = vec![b'x'; 100 * 1024];
        let _ = s.write_all(&junk);
        thread::sleep(Duration::from_secs(5));
    });
    let started = Instant::now();
    let out = ressh_to(port, &[]);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "waited for the junk to end"
    );
    one_line_255(&out, "version line");
    h.join().unwrap();
}

#[test]
fn not_ssh_version_2() {
    let (port, h) = fake_server(|mut s| {
        let _ = s.write_all(b"SSH-1.5-OldServer\r\n");
        thread::sleep(Duration::from_secs(2));
    });
    let out = ressh_to(port, &[]);
    one_line_255(&out, "version 2");
    h.join().unwrap();
}

#[test]
fn connection_closed_during_key_exchange() {
    let (port, h) = fake_server(|mut s| {
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n");
        // Read the client's version and KEXINIT, then hang up.
        let mut buf = [0u8; 4096];
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.read(&mut buf);
        thread::sleep(Duration::from_millis(200));
    });
    let out = ressh_to(port, &[]);
    h.join().unwrap();
    one_line_255(&out, &format!("Connection closed by 127.0.0.1 port {port}"));
}

#[test]
fn silent_server_and_connect_timeout() {
    let (port, h) = fake_server(|s| {
        thread::sleep(Duration::from_secs(4));
        drop(s);
    });
    let started = Instant::now();
    let out = ressh_to(port, &["-o", "ConnectTimeout=1"]);
    assert!(started.elapsed() < Duration::from_secs(3));
    one_line_255(&out, "timed out");
    h.join().unwrap();
}

#[test]
fn connection_refused() {
    // Nobody listens there, and free_port gives it to no server of a concurrent test
    // (a port bound to 0 and released may be the next one's).
    let port = ressh_testkit::free_port();
    let out = ressh_to(port, &[]);
    one_line_255(
        &out,
        &format!("connect to host 127.0.0.1 port {port}: Connection refused"),
    );
}

#[test]
fn changed_host_key_is_refused() {
    let env = Env::sshd("");
    let other = ssh_keygen(env.dir.path(), "ed25519", "").1;
    fs::write(
        &env.known_hosts,
        format!("[127.0.0.1]:{} {other}\n", env.server.port()),
    )
    .unwrap();
    let marker = env.user.home.join("ran");
    let out = env.exec(&["touch", &marker.to_string_lossy()]);
    one_line_255(&out, "REMOTE HOST IDENTIFICATION HAS CHANGED");
    let err = text(&out.stderr);
    assert!(err.contains("Host key verification failed"), "{err}");
    assert!(
        err.contains(&format!("{}:1", env.known_hosts.display())),
        "{err}"
    );
    assert!(!marker.exists(), "the command ran despite the changed key");
    // accept-new does not accept a changed key either.
    let cfg = env.alt_config("an", "StrictHostKeyChecking accept-new", true);
    let out = run_timeout(env.ressh_with(&cfg).args(["127.0.0.1", "true"]), T);
    one_line_255(&out, "REMOTE HOST IDENTIFICATION HAS CHANGED");
}

#[test]
fn unresponsive_server_times_out_with_server_alive() {
    let env = Env::sshd("");
    let mut c = env.ressh();
    c.args(["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2"])
        .args(["127.0.0.1", "echo started; sleep 60"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null());
    let mut child = Bg(c.spawn().unwrap());
    let mut so = child.0.stdout.take().unwrap();
    let mut got = [0u8; 8];
    so.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"started\n");
    // Freeze the server's side of the connection (the user's processes:
    // sshd's unprivileged session process and the shell).
    let pids: Vec<String> = env.user.processes().iter().map(|p| p.to_string()).collect();
    assert!(!pids.is_empty());
    let st = run_timeout(Command::new("kill").arg("-STOP").args(&pids), T);
    assert!(st.status.success());
    let started = Instant::now();
    let status = wait_for(
        "ressh to give up",
        Duration::from_secs(20),
        || child.0.try_wait().unwrap(),
        String::new,
    );
    let _ = run_timeout(Command::new("kill").arg("-CONT").args(&pids), T);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(status.code(), Some(255));
    let mut err = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("Timeout, server 127.0.0.1 not responding."),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
