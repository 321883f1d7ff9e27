//! Issue 5, item 1: bulk transfers survive a TCP kill every second.
//!
//! `sftp -S ressh` downloads and uploads a 256 MiB random file, and a
//! 256 MiB stream goes through a `-L` forward to an echo server in the
//! server namespace and back, while the test aborts the client's TCP
//! connection to the server (`ss -K`, [`Net::try_kill_tcp`]) every second.
//! The files' sha256 must match, and the stream must come back byte for
//! byte. sftp runs with `-l 100000` (100 Mbit/s) and the stream is paced
//! at the same rate: unthrottled, the transfers take under a second here
//! and would see one kill at most; paced, each sees about 20.
//!
//! Printed: the kills, and per kill the time until ressh reported the
//! reconnect done (its "reconnected" line; all three), and for the forward
//! the time from the kill until echoed bytes flowed again ([`resumed_at`]
//! over the reader's reads).

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const SIZE: usize = 256 << 20;
/// sftp's -l, in Kbit/s.
const LIMIT_KBIT: u64 = 100_000;
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

/// Per kill: the time from it to the first "reconnected" line of ressh on
/// stderr after it.
fn reconnect_times(kills: &[Instant], err: &[Line]) -> Stats {
    let mut s = Stats::default();
    for k in kills {
        if let Some((t, _)) = err
            .iter()
            .find(|(t, l)| t >= k && l.contains("reconnected to "))
        {
            s.add(t.saturating_duration_since(*k));
        }
    }
    s
}

fn sftp(lab: &Lab, batch: &str) -> (Vec<Instant>, Client) {
    let batch_file = lab.dir.join("batch");
    fs::write(&batch_file, batch).unwrap();
    let mut cmd = lab.net.cmd_client(require_cmd("sftp"));
    cmd.arg("-S")
        .arg(ressh_bin())
        .arg("-F")
        .arg(&lab.login.config)
        .arg("-l")
        .arg(LIMIT_KBIT.to_string())
        .arg("-b")
        .arg(&batch_file)
        .arg("server");
    let mut client = Client::spawn(&mut cmd);
    let (status, kills) = with_kills(&lab.net, Duration::from_secs(1), || {
        client.wait_exit(TRANSFER_TIMEOUT)
    });
    assert!(
        status.success(),
        "sftp failed: {status}\n{}\n--- resshd log ---\n{}",
        client.describe(),
        lab.log()
    );
    (kills, client)
}

fn check_kills(test: &str, kills: &[Instant], client: &Client, took: Duration) {
    let err = client.err_lines();
    let reconnects = count(&client.stderr(), "reconnected to ");
    report(
        test,
        &format!(
            "{} in {:.1} s, {} kills, {reconnects} reconnects; kill -> reconnected: {}",
            mib(SIZE as u64),
            took.as_secs_f64(),
            kills.len(),
            reconnect_times(kills, &err).summary()
        ),
    );
    assert!(
        kills.len() >= 10,
        "only {} kills hit the transfer: it was too short to test anything\n{}",
        kills.len(),
        client.describe()
    );
    // A kill can also hit a reconnect still in progress: then one
    // reconnect answers two kills.
    assert!(
        reconnects * 2 >= kills.len(),
        "{} kills but {reconnects} reconnects\n{}",
        kills.len(),
        client.describe()
    );
}

#[test]
fn sftp_download_256_mib_with_a_kill_every_second() {
    let lab = Lab::new("sftpget", "DetachTimeout 120\n");
    let remote = lab.user().home.join("big.bin");
    random_file(&remote, SIZE);
    lab.user().own(&remote, 0o644);
    let want = sha256_file(&remote);
    let local = lab.dir.join("downloaded.bin");
    let t = Instant::now();
    let (kills, client) = sftp(
        &lab,
        &format!("get {} {}\n", remote.display(), local.display()),
    );
    check_kills("sftp download", &kills, &client, t.elapsed());
    assert_eq!(sha256_file(&local), want, "the downloaded file differs");
    assert_eq!(fs::metadata(&local).unwrap().len(), SIZE as u64);
}

#[test]
fn sftp_upload_256_mib_with_a_kill_every_second() {
    let lab = Lab::new("sftpput", "DetachTimeout 120\n");
    let local = lab.dir.join("upload.bin");
    random_file(&local, SIZE);
    let want = sha256_file(&local);
    let remote = lab.user().home.join("uploaded.bin");
    let t = Instant::now();
    let (kills, client) = sftp(
        &lab,
        &format!("put {} {}\n", local.display(), remote.display()),
    );
    check_kills("sftp upload", &kills, &client, t.elapsed());
    assert_eq!(sha256_file(&remote), want, "the uploaded file differs");
}

/// xorshift64*: the stream's bytes, reproducible on the reading side in
/// reads of any size.
struct Gen {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Gen {
    fn new() -> Gen {
        Gen {
            state: 0x1234_5678_9abc_def1,
            word: [0; 8],
            used: 8,
        }
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            if self.used == 8 {
                self.state ^= self.state >> 12;
                self.state ^= self.state << 25;
                self.state ^= self.state >> 27;
                self.word = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
                self.used = 0;
            }
            *b = self.word[self.used];
            self.used += 1;
        }
    }
}

#[test]
fn forwarded_stream_of_256_mib_with_a_kill_every_second() {
    let lab = Lab::new("fwd", "DetachTimeout 120\n");
    // The echo server, on the server namespace's loopback.
    let listener = lab
        .net
        .enter_server(|| TcpListener::bind(("127.0.0.1", 0)))
        .unwrap();
    let echo_port = listener.local_addr().unwrap().port();
    let echo = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut r = s.try_clone().unwrap();
        let mut buf = vec![0u8; 64 << 10];
        let mut n_total = 0u64;
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    n_total += n as u64;
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
        n_total
    });
    let local_port = 10022;
    let fwd = format!("127.0.0.1:{local_port}:127.0.0.1:{echo_port}");
    let started = Instant::now();
    let mut tunnel = Client::spawn(&mut lab.ressh(&["-N", "-L", &fwd, "server"]));
    // Logged in first; then the first connection to the forward's port is
    // the stream (the echo server serves one connection).
    tunnel.wait_err("Authenticated to", started, T);
    let stream = wait_for(
        "the -L forward to listen",
        T,
        || {
            lab.net
                .enter_client(|| TcpStream::connect(("127.0.0.1", local_port)))
                .ok()
        },
        || tunnel.describe(),
    );
    stream.set_nodelay(true).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let mut writer = stream;

    let t0 = Instant::now();
    let write = thread::spawn(move || {
        // Paced like sftp -l: 100 Mbit/s.
        let rate = (LIMIT_KBIT * 1000 / 8) as f64;
        let mut g = Gen::new();
        let mut buf = vec![0u8; 64 << 10];
        let mut sent = 0usize;
        let start = Instant::now();
        while sent < SIZE {
            let n = buf.len().min(SIZE - sent);
            g.fill(&mut buf[..n]);
            writer.write_all(&buf[..n]).unwrap();
            sent += n;
            let due = Duration::from_secs_f64(sent as f64 / rate);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                thread::sleep(wait);
            }
        }
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let (reads, kills) = with_kills(&lab.net, Duration::from_secs(1), || {
        read_echo(&mut reader, &tunnel)
    });
    let took = t0.elapsed();
    write.join().unwrap();
    // The echo server sees the end of the stream and closes.
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{} bytes after the stream", rest.len());
    assert_eq!(echo.join().unwrap(), SIZE as u64);

    let mut flow = Stats::default();
    let normal = normal_interval(&reads);
    let err = tunnel.err_lines();
    for k in &kills {
        let reconnected = err
            .iter()
            .find(|(t, l)| t >= k && l.contains("reconnected to "))
            .map(|(t, _)| *t);
        if let Some(back) = reconnected.and_then(|r| resumed_at(&reads, *k, r, normal)) {
            flow.add(back.saturating_duration_since(*k));
        }
    }
    report(
        "forward",
        &format!(
            "{} each way in {:.1} s, {} kills; kill -> echoed bytes flowing again: {}; \
             kill -> reconnected: {}",
            mib(SIZE as u64),
            took.as_secs_f64(),
            kills.len(),
            flow.summary(),
            reconnect_times(&kills, &tunnel.err_lines()).summary()
        ),
    );
    assert!(
        kills.len() >= 10,
        "only {} kills hit the stream",
        kills.len()
    );
    assert!(
        tunnel.try_status().is_none(),
        "ressh -L exited\n{}",
        tunnel.describe()
    );
}

/// Reads the echoed stream and checks it byte for byte; returns when each
/// read returned.
fn read_echo(reader: &mut TcpStream, tunnel: &Client) -> Vec<Line> {
    let mut g = Gen::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut want = vec![0u8; 64 << 10];
    let mut got = 0usize;
    let mut reads: Vec<Line> = Vec::new();
    reader.set_read_timeout(Some(TRANSFER_TIMEOUT)).unwrap();
    while got < SIZE {
        let n = reader.read(&mut buf).unwrap_or_else(|e| {
            panic!(
                "reading the echo after {got} bytes: {e}\n{}",
                tunnel.describe()
            )
        });
        assert!(
            n > 0,
            "the stream ended after {got} bytes\n{}",
            tunnel.describe()
        );
        g.fill(&mut want[..n]);
        if buf[..n] != want[..n] {
            let i = (0..n).find(|&i| buf[i] != want[i]).unwrap();
            panic!("the echoed stream differs at byte {}", got + i);
        }
        got += n;
        reads.push((Instant::now(), String::new()));
    }
    reads
}
