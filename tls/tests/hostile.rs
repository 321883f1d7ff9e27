//! restls's server against hostile clients written here (raw frames over
//! TLS, idle handshakes, readers that never read, connections dropped by
//! the thousand): the real binary's resident memory, read from /proc, stays
//! within what its settings allow, and it keeps serving real clients.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use openssl::ssl::{SslContextBuilder, SslOptions, SslStream, SslVersion};
use ressh_testkit::rss;
use ressh_tls::frame;
use ressh_tls::{Answer, Hello};

const MIB: u64 = 1 << 20;

/// A real client through a restls client still gets its bytes echoed.
fn served(certs: &Certs, sport: u16, srv: &Proc) {
    let (cli, cport) = client(certs, sport);
    let mut c = TcpStream::connect(("127.0.0.1", cport)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    c.read_exact(&mut got).unwrap_or_else(|e| {
        panic!(
            "not served: {e}\nserver:\n{}\nclient:\n{}",
            srv.stderr(),
            cli.stderr()
        )
    });
    assert_eq!(&got, b"ping");
}

fn rss_of(p: &Proc) -> u64 {
    rss(p.pid()).unwrap_or_else(|| panic!("the server died:\n{}", p.stderr()))
}

/// The review's attack: a client negotiates the extension, then sends ACKs
/// with want reply as fast as it can and never reads. Each asks for a reply;
/// a server that keeps reading queues the replies without bound (400 MiB
/// sent took it from 7 MB to 414 MB). The server must stop reading that
/// peer once its output to it backs up: the flood stalls (the client's
/// writes block), and the server's memory stays flat.
#[test]
fn ack_flood_without_reading_is_bounded() {
    let certs = Certs::new();
    let (srv, sport) = server(&certs, echo_server());
    served(&certs, sport, &srv);
    let before = rss_of(&srv);
    let tcp = TcpStream::connect(("127.0.0.1", sport)).unwrap();
    let (mut s, answer) = ext_client(tcp, &certs, &Hello::New.encode(), |_| {});
    assert_eq!(answer, Some(Answer::New));
    s.get_ref()
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut acks = Vec::new();
    while acks.len() + 10 <= 16 * 1024 {
        frame::put_ack(&mut acks, 0, true);
    }
    const LIMIT: u64 = 300 * MIB;
    let (mut sent, start) = (0u64, Instant::now());
    let mut peak = before;
    let stalled = loop {
        if sent >= LIMIT || start.elapsed() > Duration::from_secs(60) {
            break false;
        }
        if s.write_all(&acks).is_err() {
            break true;
        }
        sent += acks.len() as u64;
        if sent % (16 * MIB) < acks.len() as u64 {
            peak = peak.max(rss_of(&srv));
        }
    };
    thread::sleep(Duration::from_millis(500));
    let after = rss_of(&srv).max(peak);
    eprintln!(
        "sent {} MiB of ACKs in {:?}, stalled: {stalled}; server RSS {} -> {} MiB",
        sent / MIB,
        start.elapsed(),
        before / MIB,
        after / MIB
    );
    assert!(
        after < before + 32 * MIB,
        "the server grew from {} to {} MiB under {} MiB of unread ACK replies\n{}",
        before / MIB,
        after / MIB,
        sent / MIB,
        srv.stderr()
    );
    assert!(
        stalled,
        "the server read {} MiB of ACKs whose replies were never read",
        sent / MIB
    );
    served(&certs, sport, &srv);
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address `from`
/// (all of 127/8 is local), to stand for another client host.
fn connect_from(from: Ipv4Addr, port: u16) -> TcpStream {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(from, 0)),
    )
    .unwrap();
    let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    connect(fd.as_raw_fd(), &SockaddrIn::from(to)).unwrap();
    TcpStream::from(fd)
}

/// A resilient connection opened by the hostile client from `from`: Some
/// while the server serves it, None when it was closed after the handshake.
fn open_resilient(certs: &Certs, port: u16, from: Ipv4Addr) -> Option<SslStream<TcpStream>> {
    let (mut s, answer) = ext_client(
        connect_from(from, port),
        certs,
        &Hello::New.encode(),
        |_| {},
    );
    assert_eq!(answer, Some(Answer::New));
    // Served: the server answers a keepalive. Refused: it closes.
    let mut ping = Vec::new();
    frame::put_ack(&mut ping, 0, true);
    s.write_all(&ping).ok()?;
    let mut got = [0u8; 10];
    s.read_exact(&mut got).ok()?;
    Some(s)
}

/// Connections past --max-connections, or past --max-per-source from one
/// address, are closed after their handshake and logged; other addresses,
/// and the same one once a connection ended, are served again.
#[test]
fn connections_past_the_caps_are_refused() {
    let certs = Certs::new();
    let (srv, sport) = start_server(
        &certs,
        echo_server(),
        &["--max-connections", "4", "--max-per-source", "2"],
    );
    let (a, b) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    let mut held: Vec<_> = (0..2)
        .map(|_| open_resilient(&certs, sport, a).expect("served"))
        .collect();
    assert!(
        open_resilient(&certs, sport, a).is_none(),
        "a third from {a}"
    );
    wait_until("the per-source refusal in the log", || {
        srv.stderr()
            .contains("refused: 2 connections from 127.0.0.2 already (max per source)")
    });
    held.extend((0..2).map(|_| open_resilient(&certs, sport, b).expect("served")));
    let c = Ipv4Addr::new(127, 0, 0, 4);
    assert!(open_resilient(&certs, sport, c).is_none(), "a fifth");
    wait_until("the refusal in the log", || {
        srv.stderr()
            .contains("refused: 4 connections already (max connections)")
    });
    // An explicit close frees its place at once.
    let mut first = held.remove(0);
    first.shutdown().unwrap();
    drop(first);
    wait_until("a place again", || {
        open_resilient(&certs, sport, c).is_some()
    });
}

/// Connections that break past --max-detached end at once (their forwarded
/// connection is closed, and it is logged); those within it stay detached,
/// their forwarded connections open, waiting for their client.
#[test]
fn detached_connections_past_the_cap_end() {
    let certs = Certs::new();
    let (echo, open) = echo_server_counted();
    let (srv, sport) = start_server(&certs, echo, &["--max-detached", "2"]);
    let (cli, cport) = client(&certs, sport);
    let mut chats: Vec<Chat> = (0..5).map(|_| Chat::new(cport)).collect();
    for c in &mut chats {
        c.round();
    }
    assert_eq!(open.load(Ordering::SeqCst), 5);
    // The client vanishes: every TCP connection breaks without close_notify.
    drop(cli);
    wait_until("three refusals in the log", || {
        srv.stderr()
            .matches("ended: 2 connections detached already (max detached)")
            .count()
            == 3
    });
    wait_until("three forwarded connections closed", || {
        open.load(Ordering::SeqCst) == 2
    });
    thread::sleep(Duration::from_secs(1));
    assert_eq!(
        open.load(Ordering::SeqCst),
        2,
        "the detached connections within the cap must stay\n{}",
        srv.stderr()
    );
}

/// docs/restls.md §2: over TLS 1.2 the extension needs the extended master
/// secret (RFC 7627). A client that offers the extension but not the
/// extended master secret is closed after its handshake, and logged; with
/// it (OpenSSL's default), TLS 1.2 is served.
#[test]
fn tls12_without_extended_master_secret_is_refused() {
    let certs = Certs::new();
    let (srv, sport) = server(&certs, echo_server());
    let tls12 = |b: &mut SslContextBuilder| {
        b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
    };
    let ping = |s: &mut SslStream<TcpStream>| {
        let mut p = Vec::new();
        frame::put_ack(&mut p, 0, true);
        s.write_all(&p).ok()?;
        let mut got = [0u8; 10];
        s.read_exact(&mut got).ok()
    };
    let tcp = TcpStream::connect(("127.0.0.1", sport)).unwrap();
    let (mut s, answer) = ext_client(tcp, &certs, &Hello::New.encode(), tls12);
    assert_eq!(answer, Some(Answer::New));
    assert!(
        ping(&mut s).is_some(),
        "TLS 1.2 with EMS not served\n{}",
        srv.stderr()
    );
    let tcp = TcpStream::connect(("127.0.0.1", sport)).unwrap();
    let (mut s, _) = ext_client(tcp, &certs, &Hello::New.encode(), |b| {
        tls12(b);
        // SSL_OP_NO_EXTENDED_MASTER_SECRET (OpenSSL 3).
        b.set_options(SslOptions::from_bits_retain(1));
    });
    assert!(ping(&mut s).is_none(), "served without EMS");
    wait_until("the refusal in the log", || {
        srv.stderr()
            .contains("refused: TLS 1.2 without extended master secret")
    });
}

/// Thousands of TCP connections that never send a ClientHello: past
/// --max-startups each is closed at once and logged, the server stays one
/// thread with flat memory, and once the silent ones go, clients are served.
#[test]
fn thousands_of_idle_handshakes_are_bounded() {
    const N: usize = 3000;
    const STARTUPS: usize = 16;
    raise_nofile(N as u64 + 1000);
    let certs = Certs::new();
    let (srv, sport) = start_server(
        &certs,
        echo_server(),
        &["--max-startups", &STARTUPS.to_string()],
    );
    served(&certs, sport, &srv);
    let before = rss_of(&srv);
    let silent: Vec<TcpStream> = (0..N)
        .map(|_| TcpStream::connect(("127.0.0.1", sport)).unwrap())
        .collect();
    // Closed by the server: end of stream or reset; open: would block.
    let closed = || {
        silent
            .iter()
            .filter(|s| {
                s.set_nonblocking(true).unwrap();
                let mut r: &TcpStream = s;
                match r.read(&mut [0u8; 1]) {
                    Ok(n) => n == 0,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                }
            })
            .count()
    };
    wait_until("all but the handshakes in progress closed", || {
        closed() >= N - STARTUPS
    });
    let after = rss_of(&srv);
    eprintln!(
        "{N} silent connections: {} closed; server RSS {} -> {} KiB, {} threads",
        closed(),
        before / 1024,
        after / 1024,
        threads(srv.pid())
    );
    assert!(
        after < before + 16 * MIB,
        "the server grew from {before} to {after} bytes"
    );
    assert_eq!(threads(srv.pid()), 1);
    assert!(srv.stderr().contains("(max startups)"));
    drop(silent);
    served(&certs, sport, &srv);
}

/// Clients that make the forwarded application send without end and never
/// read: each connection holds at most --buffer unacknowledged bytes and
/// --queue bytes towards its client, then stops reading the application.
#[test]
fn slow_readers_cost_at_most_buffer_and_queue_each() {
    const N: u64 = 20;
    let certs = Certs::new();
    // The application: sends to each connection as fast as it is read.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let source = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            thread::spawn(move || {
                let chunk = vec![0x5a; 64 * 1024];
                while s.write_all(&chunk).is_ok() {}
            });
        }
    });
    let (buffer, queue) = (MIB, MIB / 4);
    let (srv, sport) = start_server(
        &certs,
        source,
        &[
            "--buffer",
            &buffer.to_string(),
            "--queue",
            &queue.to_string(),
        ],
    );
    let before = rss_of(&srv);
    let readers: Vec<_> = (0..N)
        .map(|_| {
            let tcp = TcpStream::connect(("127.0.0.1", sport)).unwrap();
            let (s, a) = ext_client(tcp, &certs, &Hello::New.encode(), |_| {});
            assert_eq!(a, Some(Answer::New));
            s
        })
        .collect();
    thread::sleep(Duration::from_secs(3));
    let first = rss_of(&srv);
    thread::sleep(Duration::from_secs(2));
    let second = rss_of(&srv);
    eprintln!(
        "{N} slow readers: server RSS {} -> {} -> {} KiB",
        before / 1024,
        first / 1024,
        second / 1024
    );
    // Per connection: the buffer, the queue, a read's worth (64 KiB) and
    // TLS's own; the rest of the data waits in the application.
    let bound = N * (buffer + queue + 256 * 1024);
    assert!(
        second < before + bound,
        "the server grew by {} KiB, more than {} KiB",
        (second - before) / 1024,
        bound / 1024
    );
    drop(readers);
}
