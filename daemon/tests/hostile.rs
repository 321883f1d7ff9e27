//! Wrong and hostile input: each attempt is refused with a line in resshd's
//! log, no process panics, resshd keeps serving, and a session that was
//! started before keeps working throughout.
//!
//! Every test needs root and fails without it.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{
    descendants_named, describe, read_until_closed, text, wait_for, LiveSession, Login, Server,
};
use ressh_ipc::msg::{ToBroker, BROKER_VERSION};
use ressh_ipc::Endpoint;
use ressh_testkit::{require_root, run_timeout};

/// Connects and reads the server's version line.
fn connect_and_read_version(srv: &Server) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", srv.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\n") {
        s.read_exact(&mut b).unwrap();
        line.push(b[0]);
        assert!(line.len() < 256, "no version line: {line:?}");
    }
    let v = text(&line);
    assert!(v.starts_with("SSH-2.0-"), "{v:?}");
    (s, v)
}

fn local_port(s: &TcpStream) -> u16 {
    s.local_addr().unwrap().port()
}

/// The log lines that mention the client port `port` (not a longer
/// number that starts with it).
fn lines_for_port(log: &str, port: u16) -> Vec<String> {
    let tag = format!("127.0.0.1 port {port}");
    log.lines()
        .filter(|l| {
            l.match_indices(&tag).any(|(i, _)| {
                !l[i + tag.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
            })
        })
        .map(String::from)
        .collect()
}

/// Waits for a log line about client port `port` that contains `what`.
fn wait_port_line(srv: &Server, port: u16, what: &str) -> String {
    srv.wait_log(
        &format!("a log line about port {port} with {what:?}"),
        Duration::from_secs(15),
        |l| {
            lines_for_port(l, port)
                .iter()
                .any(|line| line.contains(what))
        },
    );
    lines_for_port(&srv.log(), port)
        .into_iter()
        .find(|l| l.contains(what))
        .unwrap()
}

#[test]
fn wrong_and_hostile_input_is_refused_and_a_live_session_survives() {
    require_root();
    let login = Login::new("host");
    // A real user with a valid key whom AllowUsers leaves out.
    let excluded = Login::new("excl");
    let srv = Server::start(&format!(
        "AllowUsers {}\nMaxStartups 100:30:200\n",
        login.user.name
    ));

    // The session that must live through everything below.
    let live = LiveSession::start({
        let mut c = srv.ssh(&login, &[]);
        c.arg("read x; echo got $x");
        c
    });
    srv.wait_log("the live session's exec", Duration::from_secs(20), |l| {
        l.contains("exec \"read x; echo got $x\"")
    });

    // A key the user never authorized.
    let stray = login.stray_key("ed25519");
    let mark = srv.log().len();
    let out = run_timeout(
        srv.ssh_key(&login.with_key(&stray), &[]).arg("true"),
        common::SSH_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        describe(&out)
    );
    let closed = format!(
        "by authenticating user {} before authentication",
        login.user.name
    );
    srv.wait_log("the wrong key's refusal", Duration::from_secs(10), |l| {
        l[mark..].contains(&closed)
    });
    assert!(
        !srv.log()[mark..].contains("Accepted publickey"),
        "{}",
        srv.log()
    );

    // A user that does not exist.
    let ghost = format!("nosuch{}", std::process::id());
    let out = run_timeout(
        srv.ssh_as(&ghost, &login.key, &[]).arg("true"),
        common::SSH_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    srv.wait_log("Invalid user", Duration::from_secs(10), |l| {
        l.contains(&format!("Invalid user {ghost} from 127.0.0.1"))
    });

    // A real user with a valid key, not in AllowUsers.
    let out = run_timeout(srv.ssh(&excluded, &[]).arg("true"), common::SSH_TIMEOUT);
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    srv.wait_log("not allowed because", Duration::from_secs(10), |l| {
        l.contains(&format!(
            "User {} from 127.0.0.1 not allowed because not listed in AllowUsers",
            excluded.user.name
        ))
    });
    assert!(
        !srv.log()
            .contains(&format!("Accepted publickey for {}", excluded.user.name)),
        "{}",
        srv.log()
    );

    // Garbage instead of a version line.
    let mut s = TcpStream::connect(("127.0.0.1", srv.port())).unwrap();
    let port = local_port(&s);
    s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    read_until_closed(&mut s, Duration::from_secs(15));
    wait_port_line(&srv, port, "did not send an SSH version line");

    // The version line, then part of a packet, then the client goes away.
    let (mut s, _) = connect_and_read_version(&srv);
    let port = local_port(&s);
    s.write_all(b"SSH-2.0-OpenSSH_9.2p1 hostile\r\n").unwrap();
    // 508 + 4 bytes would be a whole number of blocks: a plausible length.
    s.write_all(&[0, 0, 1, 0xfc, 10, 20, 1, 2, 3]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    read_until_closed(&mut s, Duration::from_secs(15));
    drop(s);
    wait_port_line(&srv, port, "Connection closed before authentication");

    // A packet length of 0xFFFFFFFF (4 GiB).
    let (mut s, _) = connect_and_read_version(&srv);
    let port = local_port(&s);
    s.write_all(b"SSH-2.0-OpenSSH_9.2p1 hostile\r\n").unwrap();
    let mut pkt = vec![0xff, 0xff, 0xff, 0xff];
    pkt.extend_from_slice(&[7u8; 60]);
    s.write_all(&pkt).unwrap();
    read_until_closed(&mut s, Duration::from_secs(15));
    wait_port_line(&srv, port, "packet length too large");

    // 50 connections that never send a byte, while a real login succeeds.
    let before = srv.log().matches("Connection from").count();
    let flood: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(("127.0.0.1", srv.port())).unwrap())
        .collect();
    srv.wait_log(
        "all 50 half-open connections",
        Duration::from_secs(30),
        |l| l.matches("Connection from").count() >= before + 50,
    );
    // Each monitor logs the connection, then starts its kex worker.
    wait_for(
        "a kex worker for each of the 50 half-open connections",
        Duration::from_secs(30),
        || (descendants_named(srv.pid(), "resshd-kex").len() >= 50).then_some(()),
        || {
            let n = descendants_named(srv.pid(), "resshd-kex").len();
            format!("{n} kex workers")
        },
    );
    assert_eq!(srv.exec_ok(&login, "echo during-flood"), "during-flood\n");
    drop(flood);

    // The live session still works, and so does a new one.
    let out = live.finish(b"hello\n");
    assert!(
        out.status.success(),
        "the live session broke\n{}\n--- resshd log ---\n{}",
        describe(&out),
        srv.log()
    );
    assert_eq!(text(&out.stdout), "got hello\n");
    assert_eq!(srv.exec_ok(&login, "echo after"), "after\n");
    srv.assert_healthy();
    drop(excluded);
}

#[test]
fn past_max_startups_connections_are_dropped_and_service_recovers() {
    require_root();
    let login = Login::new("maxst");
    let srv = Server::start("MaxStartups 5:100:10\n");
    // An authenticated session does not count as a startup.
    let live = LiveSession::start({
        let mut c = srv.ssh(&login, &[]);
        c.arg("read x; echo got $x");
        c
    });
    srv.wait_log("the live session's exec", Duration::from_secs(20), |l| {
        l.contains("exec \"read x; echo got $x\"")
    });

    let mut flood = Vec::new();
    for _ in 0..8 {
        flood.push(TcpStream::connect(("127.0.0.1", srv.port())).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    srv.wait_log("drops past MaxStartups", Duration::from_secs(15), |l| {
        l.matches("past MaxStartups").count() >= 3
    });
    // The first five were accepted (their kex workers sent a version
    // line), the other three closed at once.
    let (mut served, mut dropped) = (0, 0);
    for s in &mut flood {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 8];
        match s.read(&mut b) {
            Ok(0) => dropped += 1,
            Ok(_) if b.starts_with(b"SSH-") => served += 1,
            other => panic!("unexpected answer {other:?} {b:?}\n{}", srv.log()),
        }
    }
    assert_eq!((served, dropped), (5, 3), "{}", srv.log());
    assert_eq!(srv.log().matches("past MaxStartups").count(), 3);
    drop(flood);
    // Once the half-open ones are gone, logins work again.
    wait_for(
        "the half-open connections' monitors to exit",
        Duration::from_secs(15),
        || (srv.monitors().len() == 1).then_some(()),
        || srv.log(),
    );
    assert_eq!(srv.exec_ok(&login, "echo recovered"), "recovered\n");
    let out = live.finish(b"hi\n");
    assert_eq!(text(&out.stdout), "got hi\n", "{}", describe(&out));
    srv.assert_healthy();
}

/// The broker tells a monitor that closes its link (it exits with its
/// connection) from one that breaks the broker's protocol by the kind of
/// error: only the second is logged, with its link dropped.
#[test]
fn the_broker_logs_a_monitor_that_breaks_its_protocol_not_one_that_exits() {
    require_root();
    let login = Login::new("brlink");
    let srv = Server::start("");
    // A real monitor links to the broker and exits when the login ends.
    assert_eq!(srv.exec_ok(&login, "echo done"), "done\n");
    wait_for(
        "the login's monitor to exit",
        Duration::from_secs(15),
        || srv.monitors().is_empty().then_some(()),
        || srv.log(),
    );
    // Then links of this process, one after the other, each greeting
    // twice; the second is processed after the monitor's link closed.
    let hello = ToBroker::Hello {
        version: BROKER_VERSION,
    };
    for n in 1..=2 {
        let link = UnixStream::connect(srv.resshd.broker_socket()).unwrap();
        let ep = Endpoint::from_fd(link.into());
        ep.send(&hello, &[]).unwrap();
        ep.send(&hello, &[]).unwrap();
        srv.wait_log("the broker dropping a link", Duration::from_secs(15), |l| {
            l.matches("link dropped").count() >= n
        });
    }
    let log = srv.log();
    let dropped: Vec<&str> = log.lines().filter(|l| l.contains("link dropped")).collect();
    let ours = format!(
        "broker: monitor {}: a second Hello; link dropped",
        std::process::id()
    );
    assert_eq!(dropped.len(), 2, "{log}");
    assert!(dropped.iter().all(|l| l.ends_with(&ours)), "{log}");
    srv.assert_healthy();
}

/// A TCP connection to the server from source address `src` (any address
/// of 127.0.0.0/8 is this host's).
fn connect_from(srv: &Server, src: &str) -> TcpStream {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let from: SockaddrIn = format!("{src}:0")
        .parse::<std::net::SocketAddrV4>()
        .unwrap()
        .into();
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &from).unwrap();
    let to: SockaddrIn = std::net::SocketAddrV4::new([127, 0, 0, 1].into(), srv.port()).into();
    socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &to).unwrap();
    TcpStream::from(fd)
}

/// Whether the server greets `s` with its version line (true) or closes it
/// at once (false).
fn greeted(s: &mut TcpStream, srv: &Server) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 8];
    match s.read(&mut b) {
        Ok(0) => false,
        Ok(_) if b.starts_with(b"SSH-") => true,
        other => panic!("unexpected answer {other:?} {b:?}\n{}", srv.log()),
    }
}

/// Issue 13, hole 8: PerSourceMaxStartups bounds the unauthenticated
/// connections of one source netblock (PerSourceNetBlockSize); other
/// sources are unaffected, and MaxStartups (far away here) plays no part.
/// The sources are 127.0.1.2 and 127.0.1.3: the same /24, different /32s;
/// the harness's own connections come from 127.0.0.1, another block.
#[test]
fn per_source_max_startups_limits_one_source_and_spares_another() {
    require_root();
    let login = Login::new("persrc");
    for (block, same_block) in [(32, false), (24, true)] {
        let srv = Server::start(&format!(
            "MaxStartups 100:30:200\nPerSourceMaxStartups 2\nPerSourceNetBlockSize {block}:128\n"
        ));
        let mut held = Vec::new();
        for i in 0..4 {
            let mut s = connect_from(&srv, "127.0.1.2");
            let ok = greeted(&mut s, &srv);
            assert_eq!(ok, i < 2, "connection {i} from 127.0.1.2\n{}", srv.log());
            held.push(s);
        }
        let mut s = connect_from(&srv, "127.0.1.3");
        assert_eq!(greeted(&mut s, &srv), !same_block, "{}", srv.log());
        held.push(s);
        let want = format!(
            "past PerSourceMaxStartups (2 not yet authenticated from 127.0.1.{}/{block})",
            if same_block { 0 } else { 2 }
        );
        srv.wait_log("the per-source drops", Duration::from_secs(10), |l| {
            l.matches(&want).count() == 2 + same_block as usize
        });
        let log = srv.log();
        assert!(log.contains("drop connection #"), "{log}");
        assert!(log.contains("from [127.0.1.2]:"), "{log}");
        assert!(log.contains("beginning MaxStartups throttling"), "{log}");
        assert!(!log.contains("past MaxStartups"), "{log}");
        // Another source logs in while 127.0.1.x is at its limit.
        assert_eq!(srv.exec_ok(&login, "echo in"), "in\n", "{}", srv.log());
        // Once the held connections are gone, 127.0.1.2 gets in again.
        drop(held);
        wait_for(
            "the held connections' monitors to exit",
            Duration::from_secs(15),
            || srv.monitors().is_empty().then_some(()),
            || srv.log(),
        );
        let mut s = connect_from(&srv, "127.0.1.2");
        assert!(greeted(&mut s, &srv), "{}", srv.log());
        drop(s);
        srv.assert_healthy();
    }
}
