//! restls's server holds many idle resilient connections in one event loop
//! (one thread, no thread per connection) with bounded memory each, and
//! every one of them can still be resumed. RESTLS_IDLE=N sets how many
//! (2,000 by default; bench/README.md has the figures near 10,000 that this
//! machine's descriptor limit allows: 9,400 here, 9,900 in the bench).

mod common;

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use common::*;
use ressh_testkit::rss;

/// A forward target that accepts connections and keeps them, idle.
fn holder() -> (u16, Arc<Mutex<Vec<TcpStream>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            h.lock().unwrap().push(s);
        }
    });
    (port, held)
}

#[test]
fn many_idle_resilient_connections_in_one_thread_each_resumable() {
    let n: usize = std::env::var("RESTLS_IDLE")
        .ok()
        .map(|v| v.parse().expect("RESTLS_IDLE: a number"))
        .unwrap_or(2000);
    // Here: a client socket and a forwarded one per connection; restls
    // (started after this, inheriting the limit): two as well.
    raise_nofile(2 * n as u64 + 1000);
    let certs = Certs::new();
    let (fport, held) = holder();
    let cap = (n + 10).to_string();
    let (srv, sport) = start_server(
        &certs,
        fport,
        &[
            "--max-connections",
            &cap,
            "--max-per-source",
            &cap,
            "--max-detached",
            &cap,
        ],
    );
    let pid = srv.pid();
    // The baseline: one connection (OpenSSL's and the loop's fixed costs).
    let first = RawConn::open(sport, &certs).expect("served");
    let base = rss(pid).unwrap();
    let start = Instant::now();
    let mut conns = vec![first];
    for i in 1..n {
        let c = RawConn::open(sport, &certs)
            .unwrap_or_else(|| panic!("connection {i} not served\n{}", srv.stderr()));
        conns.push(c);
    }
    let opened = start.elapsed();
    wait_until("every forwarded connection", || {
        held.lock().unwrap().len() == n
    });
    let after = rss(pid).unwrap();
    let per = after.saturating_sub(base) / (n as u64 - 1);
    eprintln!(
        "{n} idle resilient connections opened in {opened:?} ({:.0}/s); server RSS {} -> {} KiB, \
         {} bytes per connection; {} threads",
        n as f64 / opened.as_secs_f64(),
        base / 1024,
        after / 1024,
        per,
        threads(pid)
    );
    assert_eq!(threads(pid), 1, "a thread per connection?");
    assert!(
        per < 32 * 1024,
        "{per} bytes of server memory per idle connection"
    );
    // Every one of them continues over a new TCP connection.
    let start = Instant::now();
    for (i, c) in conns.iter_mut().enumerate() {
        let count = c
            .reconnect(sport, &certs)
            .unwrap_or_else(|e| panic!("connection {i}: {e}\n{}", srv.stderr()));
        assert_eq!(count, 0, "connection {i}: the server received nothing");
        c.ping()
            .unwrap_or_else(|e| panic!("connection {i} after its reconnect: {e}"));
    }
    eprintln!("{n} reconnects in {:?}", start.elapsed());
    assert_eq!(held.lock().unwrap().len(), n, "forwarded connections kept");
}
