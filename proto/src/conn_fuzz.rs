//! Hostile input to both roles: random bytes, mutated handshakes and
//! random or mutated payloads after authentication. Nothing may panic and
//! buffers stay bounded.

use std::time::Instant;

use proptest::prelude::*;

use super::*;
use crate::keys::KeyType;
use crate::keys::PrivateKey;
use crate::msg::AuthMethod;
use crate::transport::MAX_PACKET_LEN;

/// The servers' host key (one for all: generating one per case is slow).
fn host() -> &'static [PrivateKey] {
    static HOST: std::sync::OnceLock<Vec<PrivateKey>> = std::sync::OnceLock::new();
    HOST.get_or_init(|| vec![PrivateKey::generate(KeyType::Ed25519).unwrap()])
}

/// Answers the server's requests to sign the exchange hash.
pub(super) fn sign(s: &mut Connection, e: &Event) {
    if let Event::SignHostKey(r) = e {
        // A mutated exchange may end at this point.
        let _ = s.host_key_signed(r.sign_with(host()), Instant::now());
    }
}

pub(super) fn fresh(server: bool) -> Connection {
    let now = Instant::now();
    if server {
        let keys = host().iter().map(|k| k.public_key()).collect();
        Connection::server(Config::default(), keys, now).unwrap()
    } else {
        Connection::client(Config::default(), now).unwrap()
    }
}

/// Moves bytes until quiet, accepting the host key. Returns the bytes the
/// client sent, for mutation.
pub(super) fn pump(c: &mut Connection, s: &mut Connection, transcript: &mut Vec<u8>) {
    let now = Instant::now();
    for _ in 0..100 {
        let a = c.take_output();
        let b = s.take_output();
        transcript.extend_from_slice(&a);
        if !a.is_empty() {
            s.handle_input(&a, now).unwrap();
        }
        if !b.is_empty() {
            c.handle_input(&b, now).unwrap();
        }
        let mut moved = !a.is_empty() || !b.is_empty();
        while let Some(e) = c.poll_event() {
            moved = true;
            if matches!(e, Event::HostKey(_)) {
                c.accept_host_key(now).unwrap();
            }
        }
        while let Some(e) = s.poll_event() {
            moved = true;
            sign(s, &e);
            match e {
                Event::AuthRequest { .. } => s.auth_accept().unwrap(),
                Event::ChannelOpenRequest { id, .. } => s.accept_channel(id).unwrap(),
                _ => {}
            }
        }
        if !moved {
            return;
        }
    }
    panic!("did not settle");
}

/// An authenticated pair with one open session channel.
pub(super) fn open_pair() -> (Connection, Connection) {
    let mut c = fresh(false);
    let mut s = fresh(true);
    let mut t = Vec::new();
    pump(&mut c, &mut s, &mut t);
    c.auth_none("u").unwrap();
    pump(&mut c, &mut s, &mut t);
    c.open_channel(ChannelKind::Session).unwrap();
    pump(&mut c, &mut s, &mut t);
    (c, s)
}

fn assert_bounded(c: &Connection) {
    assert!(
        c.io.inbuf.len() <= MAX_PACKET_LEN + 4 + 64,
        "input buffer grew to {}",
        c.io.inbuf.len()
    );
    assert!(c.channels.len() <= c.config.max_channels);
}

/// Valid payloads of the connection protocol, to be mutated.
fn seeds() -> Vec<Vec<u8>> {
    vec![
        msg::ChannelOpen {
            sender: 5,
            initial_window: 1000,
            max_packet: 100,
            kind: ChannelKind::DirectTcpip {
                host: "h".into(),
                port: 22,
                originator: "o".into(),
                originator_port: 1,
            },
        }
        .encode(),
        msg::ChannelRequest {
            recipient: 0,
            want_reply: true,
            request: ChannelReq::PtyReq {
                term: "xterm".into(),
                cols: 80,
                rows: 24,
                width_px: 0,
                height_px: 0,
                modes: vec![0],
            },
        }
        .encode(),
        msg::ChannelWindowAdjust {
            recipient: 0,
            bytes: 10,
        }
        .encode(),
        msg::ChannelData {
            recipient: 0,
            data: vec![1, 2, 3],
        }
        .encode(),
        msg::ChannelEof(0).encode(),
        msg::ChannelClose(0).encode(),
        msg::GlobalRequest {
            want_reply: true,
            request: GlobalReq::TcpipForward {
                address: "".into(),
                port: 0,
            },
        }
        .encode(),
        msg::KexInit::decode(&fresh(false).kexinit(false).unwrap().encode())
            .unwrap()
            .encode(),
        msg::UserauthRequest {
            user: "u".into(),
            service: "ssh-connection".into(),
            method: AuthMethod::None,
        }
        .encode(),
    ]
}

fn mutate(mut p: Vec<u8>, ops: &[(u8, usize, u8)]) -> Vec<u8> {
    for &(op, pos, val) in ops {
        if p.is_empty() {
            p.push(val);
            continue;
        }
        let i = pos % p.len();
        match op % 4 {
            0 => p[i] ^= val | 1,
            1 => p.truncate(i.max(1)),
            2 => p.insert(i, val),
            _ => p[i] = 0xff,
        }
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_after_version(server: bool, chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20)) {
        let mut c = fresh(server);
        let now = Instant::now();
        let _ = c.handle_input(b"SSH-2.0-fuzz\r\n", now);
        for ch in chunks {
            if c.handle_input(&ch, now).is_err() {
                break;
            }
            assert_bounded(&c);
        }
    }

    #[test]
    fn random_version_lines(server: bool, bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let mut c = fresh(server);
        let _ = c.handle_input(&bytes, Instant::now());
        assert_bounded(&c);
    }

    #[test]
    fn mutated_handshake(ops in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..6)) {
        let mut c = fresh(false);
        let mut s = fresh(true);
        let mut transcript = Vec::new();
        pump(&mut c, &mut s, &mut transcript);
        let bad = mutate(transcript, &ops);
        let mut victim = fresh(true);
        let _ = victim.handle_input(&bad, Instant::now());
        // Signed, the rest of the mutated bytes are read too.
        while let Some(e) = victim.poll_event() {
            sign(&mut victim, &e);
        }
        assert_bounded(&victim);
    }

    #[test]
    fn random_and_mutated_payloads_after_auth(
        seed in 0usize..9,
        ops in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 0..4),
        random in prop::collection::vec(any::<u8>(), 1..64),
        to_server: bool,
    ) {
        let (mut c, mut s) = open_pair();
        let target = if to_server { &mut s } else { &mut c };
        let now = Instant::now();
        let mutated = mutate(seeds()[seed].clone(), &ops);
        for p in [mutated, random] {
            if p.is_empty() {
                continue;
            }
            if target.dispatch(p, now).is_err() {
                break;
            }
            while target.poll_event().is_some() {}
            assert_bounded(target);
        }
    }
}

#[test]
fn huge_length_field_is_refused_before_buffering() {
    for server in [false, true] {
        let mut c = fresh(server);
        let now = Instant::now();
        let mut bad = b"SSH-2.0-x\r\n".to_vec();
        bad.extend_from_slice(&0xffff_ffffu32.to_be_bytes());
        bad.extend_from_slice(&[0u8; 64]);
        let err = c.handle_input(&bad, now).unwrap_err();
        assert_eq!(err, Error::TooLarge("packet length"));
        assert!(c.is_closed());
        // The DISCONNECT is the last thing queued.
        assert!(!c.output().is_empty());
    }
}

#[test]
fn endless_preamble_is_cut_off() {
    let mut c = fresh(false);
    let now = Instant::now();
    let line = b"not a version line, just chatter\r\n".repeat(100);
    let mut result = Ok(());
    for _ in 0..100 {
        result = c.handle_input(&line, now);
        assert_bounded(&c);
        if result.is_err() {
            break;
        }
    }
    assert!(result.is_err());
}
