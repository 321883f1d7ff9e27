//! The protocol engine alone, in memory: a client and a server
//! `ressh_proto::Connection` wired together without sockets, moving channel
//! data from server to client, timed with each thread's CPU clock. It shows
//! what the engine costs on top of the cipher (measured alone, as packets
//! sealed and opened by the packet layer), apart from the kernel, the pipes
//! and the scheduling that the end-to-end numbers include.

use std::time::Instant;

use ressh_proto::cipher::KeyMaterial;
use ressh_proto::keys::{KeyType, PrivateKey};
use ressh_proto::msg::{ChannelKind, ChannelReq};
use ressh_proto::transport::{PacketReader, PacketWriter};
use ressh_proto::{Config, Connection, Event};

/// CPU seconds of the calling thread.
#[allow(unsafe_code)] // clock_gettime(CLOCK_THREAD_CPUTIME_ID)
pub fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the valid timespec.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Result of one engine run: MB/s of CPU time on each side.
#[derive(Debug, Clone, Copy)]
pub struct EngineRate {
    pub send: f64,
    pub recv: f64,
}

fn key_material(cipher: &str, mac: &str) -> KeyMaterial {
    let alg = ressh_proto::cipher::cipher(cipher).expect("cipher");
    let mac_len = if alg.aead {
        0
    } else {
        ressh_proto::cipher::mac(mac).expect("mac").key_len
    };
    let mut key = vec![0u8; alg.key_len];
    let mut iv = vec![0u8; alg.iv_len];
    let mut mac_key = vec![0u8; mac_len];
    for b in [&mut key, &mut iv, &mut mac_key] {
        openssl::rand::rand_bytes(b).expect("random");
    }
    KeyMaterial {
        cipher: cipher.into(),
        mac: if alg.aead { String::new() } else { mac.into() },
        key,
        iv,
        mac_key,
    }
}

/// The packet layer alone: seal and open `total` bytes as 32 KiB channel
/// data payloads.
pub fn packets(cipher: &str, mac: &str, total: usize) -> EngineRate {
    let m = key_material(cipher, mac);
    let mut w = PacketWriter::new(&m, 0).expect("writer");
    let mut r = PacketReader::new(&m, 0).expect("reader");
    let payload = vec![0x5au8; 32 * 1024 + 9];
    let mut out = Vec::with_capacity(64 * 1024);
    let n = total / (32 * 1024);
    let mut tsend = 0.0;
    let mut trecv = 0.0;
    for _ in 0..n {
        out.clear();
        let t0 = thread_cpu();
        w.write(&payload, &mut out).expect("seal");
        let t1 = thread_cpu();
        let (range, _) = r.read_in_place(&mut out).expect("open").expect("whole");
        std::hint::black_box(&out[range]);
        trecv += thread_cpu() - t1;
        tsend += t1 - t0;
    }
    let bytes = (n * 32 * 1024) as f64;
    EngineRate {
        send: bytes / 1e6 / tsend,
        recv: bytes / 1e6 / trecv,
    }
}

struct Pair {
    c: Connection,
    s: Connection,
    /// The server's host key, which signs its exchange hashes.
    host: [PrivateKey; 1],
    now: Instant,
    /// The server's id of the channel it accepted.
    sid: Option<u32>,
}

impl Pair {
    /// Signs the exchange hash when the server asks.
    fn sign(&mut self, e: &Event) {
        if let Event::SignHostKey(r) = e {
            let sig = r.sign_with(&self.host);
            self.s.host_key_signed(sig, self.now).expect("sign");
        }
    }

    /// Moves bytes both ways until quiet; returns the client's events.
    fn pump(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        for _ in 0..10_000 {
            let a = self.c.take_output();
            let b = self.s.take_output();
            if !a.is_empty() {
                self.s.handle_input(&a, self.now).expect("server input");
            }
            if !b.is_empty() {
                self.c.handle_input(&b, self.now).expect("client input");
            }
            let mut moved = !a.is_empty() || !b.is_empty();
            while let Some(e) = self.c.poll_event() {
                if let Event::HostKey(_) = e {
                    self.c.accept_host_key(self.now).expect("host key");
                }
                events.push(e);
                moved = true;
            }
            while let Some(e) = self.s.poll_event() {
                self.sign(&e);
                match e {
                    Event::AuthRequest { .. } => self.s.auth_accept().expect("accept"),
                    Event::ChannelOpenRequest { id, .. } => {
                        self.s.accept_channel(id).expect("accept channel");
                        self.sid = Some(id);
                    }
                    Event::ChannelRequest { id, want_reply, .. } if want_reply => {
                        self.s.channel_reply(id, true).expect("reply")
                    }
                    _ => {}
                }
                moved = true;
            }
            if !moved {
                return events;
            }
        }
        panic!("the engines did not settle");
    }
}

/// The whole engine: `total` bytes of channel data from server to client,
/// handed over in 64 KiB pieces as a socket would, with the server's send
/// path (send_data, output, consume_output) and the client's receive path
/// (handle_input, events, consume, and its window adjusts going back) timed
/// separately.
pub fn engine(cipher: &str, mac: &str, resilience: bool, total: usize) -> EngineRate {
    let cfg = Config {
        ciphers: vec![cipher.into()],
        macs: vec![mac.into()],
        resilience,
        ..Config::default()
    };
    let host = PrivateKey::generate(KeyType::Ed25519).expect("host key");
    let user = PrivateKey::generate(KeyType::Ed25519).expect("user key");
    let now = Instant::now();
    let mut p = Pair {
        c: Connection::client(cfg.clone(), now).expect("client"),
        s: Connection::server(cfg, vec![host.public_key()], now).expect("server"),
        host: [host],
        now,
        sid: None,
    };
    p.pump();
    p.c.auth_publickey("bench", "ssh-ed25519", &user)
        .expect("auth");
    p.pump();
    let cid = p.c.open_channel(ChannelKind::Session).expect("open");
    p.pump();
    p.c.channel_request(cid, ChannelReq::Exec(b"cat".to_vec()), true)
        .expect("exec");
    p.pump();
    let sid = p.sid.expect("the server accepted the channel");
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut sent = 0usize;
    let mut got = 0usize;
    let (mut tsend, mut trecv) = (0.0, 0.0);
    while got < total {
        let t0 = thread_cpu();
        while sent < total && p.s.send_window(sid) > 0 && p.s.output().len() < 256 * 1024 {
            let n = (total - sent).min(chunk.len());
            sent += p.s.send_data(sid, &chunk[..n]).expect("send");
        }
        let t1 = thread_cpu();
        tsend += t1 - t0;
        // "Socket writes" of up to 64 KiB: the client reads what the server wrote.
        while !p.s.output().is_empty() {
            let k = p.s.output().len().min(64 * 1024);
            let t1 = thread_cpu();
            p.c.handle_input(&p.s.output()[..k], now)
                .expect("client input");
            while let Some(e) = p.c.poll_event() {
                if let Event::Data { id, data } = e {
                    got += data.len();
                    p.c.consume(id, data.len()).expect("consume");
                    p.c.reuse_buffer(data);
                }
            }
            let back = p.c.take_output();
            let t2 = thread_cpu();
            p.s.consume_output(k);
            if !back.is_empty() {
                p.s.handle_input(&back, now).expect("server input");
                while let Some(e) = p.s.poll_event() {
                    p.sign(&e);
                }
            }
            let t3 = thread_cpu();
            tsend += t3 - t2;
            trecv += t2 - t1;
        }
    }
    let bytes = total as f64;
    EngineRate {
        send: bytes / 1e6 / tsend,
        recv: bytes / 1e6 / trecv,
    }
}
