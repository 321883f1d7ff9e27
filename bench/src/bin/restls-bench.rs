//! restls-bench: restls beside stunnel (Debian's stunnel4) on 127.0.0.1:
//! throughput through each tunnel, bytes on the wire per data byte, and
//! restls's reconnect time after a cut. Prints a Markdown table.
//!
//! Run after `cargo build --release --workspace --bins`:
//! `target/release/restls-bench [--size MIB] [--cuts N]`. Needs `openssl` and
//! `stunnel4`. See bench/README.md.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ressh_bench::relay::CountingRelay;
use ressh_bench::{bin_dir, require_bin};
use ressh_testkit::{free_port, require_cmd, TempDir};

const MIB: u64 = 1 << 20;
const NAME: &str = "restls-bench";

/// A child killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server that reads each connection to its end and answers one byte.
fn sink() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                let _ = s.write_all(b".");
            });
        }
    });
    a
}

/// A server that echoes each connection.
fn echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || {
                let Ok(mut w) = s.try_clone() else { return };
                let _ = std::io::copy(&mut &s, &mut w);
            });
        }
    });
    a
}

/// Starts restls with `--listen 127.0.0.1:0`; returns it and its port.
fn restls(bin: &Path, args: &[&str]) -> Result<(Proc, u16), String> {
    let mut c = Command::new(bin)
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("restls: {e}"))?;
    let mut lines = BufReader::new(c.stderr.take().expect("stderr")).lines();
    let p = Proc(c);
    let port = loop {
        let Some(Ok(l)) = lines.next() else {
            return Err("restls exited before listening".into());
        };
        if let Some(port) = l.strip_prefix("restls: listening on 127.0.0.1:") {
            break port.trim().parse().map_err(|_| l.clone())?;
        }
    };
    thread::spawn(move || lines.for_each(drop));
    Ok((p, port))
}

/// Starts stunnel4 with `conf`, accepting on `port`.
fn stunnel(dir: &TempDir, name: &str, conf: &str, port: u16) -> Result<Proc, String> {
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, format!("foreground = yes\npid =\n{conf}")).map_err(|e| e.to_string())?;
    let c = Command::new(require_cmd("stunnel4"))
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("stunnel4: {e}"))?;
    let p = Proc(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpListener::bind(("127.0.0.1", port)).is_ok() {
        if Instant::now() > deadline {
            return Err(format!("stunnel4 ({name}) did not listen on {port}"));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(p)
}

/// Sends `size` bytes into 127.0.0.1:`port` and waits for the sink's answer:
/// the time it took.
fn transfer(port: u16, size: u64) -> Result<Duration, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let buf = vec![0x5a_u8; 256 * 1024];
    let start = Instant::now();
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..n]).map_err(|e| format!("write: {e}"))?;
        left -= n as u64;
    }
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)
        .map_err(|e| format!("no answer: {e}"))?;
    Ok(start.elapsed())
}

/// Milliseconds from a cut to an echoed byte, `n` times.
fn reconnects(port: u16, relay: &CountingRelay, n: usize) -> Result<Vec<f64>, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    let mut times = Vec::new();
    for i in 0..=n {
        thread::sleep(Duration::from_millis(200));
        let start = Instant::now();
        if i > 0 {
            relay.cut();
        }
        s.write_all(b"x").map_err(|e| e.to_string())?;
        s.read_exact(&mut b)
            .map_err(|e| format!("after cut {i}: {e}"))?;
        if i > 0 {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(times)
}

fn run(size_mib: u64, cuts: usize) -> Result<(), String> {
    let bin = require_bin(&bin_dir(), "restls")?;
    let dir = TempDir::new("restls-bench");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new(require_cmd("openssl"))
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={NAME}")])
        .args(["-addext", &format!("subjectAltName=DNS:{NAME}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?
        .success();
    if !ok {
        return Err("openssl req failed".into());
    }
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let size = size_mib * MIB;
    let sink = sink();
    let mut rows = Vec::new();

    // stunnel4: client → relay → server → sink.
    let sport = free_port();
    let _ss = stunnel(
        &dir,
        "server",
        &format!(
            "[s]\naccept = 127.0.0.1:{sport}\nconnect = {sink}\ncert = {cert_s}\nkey = {key_s}\n"
        ),
        sport,
    )?;
    let relay = CountingRelay::start(SocketAddr::from(([127, 0, 0, 1], sport)))
        .map_err(|e| e.to_string())?;
    let cport = free_port();
    let _sc = stunnel(
        &dir,
        "client",
        &format!(
            "[c]\nclient = yes\naccept = 127.0.0.1:{cport}\nconnect = 127.0.0.1:{}\n\
             CAfile = {cert_s}\nverifyChain = yes\ncheckHost = {NAME}\nsni = {NAME}\n",
            relay.port
        ),
        cport,
    )?;
    transfer(cport, 16 * MIB)?;
    relay.reset();
    let t = transfer(cport, size)?;
    let (up, _) = relay.counts();
    rows.push(("stunnel4", t, up));

    // restls, the same way.
    let (_rs, rport) = restls(
        &bin,
        &[
            "server",
            "--forward",
            &sink.to_string(),
            "--cert",
            &cert_s,
            "--key",
            &key_s,
        ],
    )?;
    let relay2 = CountingRelay::start(SocketAddr::from(([127, 0, 0, 1], rport)))
        .map_err(|e| e.to_string())?;
    let connect = format!("127.0.0.1:{}", relay2.port);
    let client_args = [
        "client",
        "--connect",
        &connect,
        "--ca",
        &cert_s,
        "--servername",
        NAME,
    ];
    let (_rc, rcport) = restls(&bin, &client_args)?;
    transfer(rcport, 16 * MIB)?;
    relay2.reset();
    let t = transfer(rcport, size)?;
    let (up, _) = relay2.counts();
    rows.push(("restls", t, up));

    // restls reconnects: a cut, then one byte echoed.
    let (_es, eport) = restls(
        &bin,
        &[
            "server",
            "--forward",
            &echo().to_string(),
            "--cert",
            &cert_s,
            "--key",
            &key_s,
        ],
    )?;
    let relay3 = CountingRelay::start(SocketAddr::from(([127, 0, 0, 1], eport)))
        .map_err(|e| e.to_string())?;
    let connect = format!("127.0.0.1:{}", relay3.port);
    let client_args = [
        "client",
        "--connect",
        &connect,
        "--ca",
        &cert_s,
        "--servername",
        NAME,
    ];
    let (_ec, ecport) = restls(&bin, &client_args)?;
    let mut times = reconnects(ecport, &relay3, cuts)?;
    times.sort_by(f64::total_cmp);

    println!(
        "| {size_mib} MiB client → server, 127.0.0.1 | time | MB/s | wire bytes / data byte |"
    );
    println!("|---|---|---|---|");
    for (name, t, up) in &rows {
        println!(
            "| {name} | {:.2} s | {:.0} | {:.4} |",
            t.as_secs_f64(),
            size as f64 / t.as_secs_f64() / 1e6,
            *up as f64 / size as f64
        );
    }
    let ratio = rows[0].1.as_secs_f64() / rows[1].1.as_secs_f64();
    println!("\nrestls throughput / stunnel4 throughput: {ratio:.2}");
    if !times.is_empty() {
        println!(
            "\nrestls: cut to echoed byte over {} cuts: median {:.1} ms, max {:.1} ms \
             (stunnel4: the connection is lost)",
            times.len(),
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
    Ok(())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut size, mut cuts) = (1024u64, 20usize);
    while let Some(a) = args.next() {
        let v = args.next().and_then(|v| v.parse::<u64>().ok());
        match (a.as_str(), v) {
            ("--size", Some(v)) if v > 0 => size = v,
            ("--cuts", Some(v)) => cuts = v as usize,
            _ => {
                eprintln!("usage: restls-bench [--size MIB] [--cuts N]");
                std::process::exit(2);
            }
        }
    }
    if let Err(e) = run(size, cuts) {
        eprintln!("restls-bench: {e}");
        std::process::exit(1);
    }
}
