//! Where the line runs between the application's misuse of the engine
//! (refused, nothing sent, the connection goes on) and the peer's faults
//! (DISCONNECT naming the reason, the connection closes), checked against
//! a real peer engine.

use std::fmt::Debug;
use std::time::Instant;

use super::fuzz_tests::{fresh, open_pair, pump, sign};
use super::*;
use crate::error::reason;
use crate::keys::PrivateKey;

/// `r` is a misuse, and `c` sent nothing and stays open.
fn refused<T: Debug>(r: Result<T>, c: &Connection) {
    assert!(matches!(r, Err(Error::Misuse(_))), "{r:?}");
    assert!(!r.unwrap_err().is_peer_fault());
    assert!(c.output().is_empty(), "a misuse sent something");
    assert!(!c.is_closed(), "a misuse closed the connection");
}

fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

#[test]
fn misuse_is_refused_and_leaves_the_connection_usable() {
    let now = Instant::now();
    // Before authentication.
    let mut c = fresh(false);
    let mut s = fresh(true);
    pump(&mut c, &mut s, &mut Vec::new());
    assert!(!c.is_authenticated());
    refused(c.open_channel(ChannelKind::Session), &c);
    refused(c.auth_info_response(&["x"]), &c);
    refused(s.auth_accept(), &s);
    refused(s.auth_reject(&["password"], false), &s);
    refused(s.reconnect_attempt().map(drop), &s);
    c.auth_none("u").unwrap();
    let out = c.take_output();
    refused(c.auth_password("u", "p"), &c);
    s.handle_input(&out, now).unwrap();
    pump(&mut c, &mut s, &mut Vec::new());
    assert_eq!(c.user(), Some("u"));
    assert_eq!(s.user(), Some("u"));
    assert!(c.is_authenticated() && s.is_authenticated());

    // After it, with one session channel open (id 0 on both sides).
    let (mut c, mut s) = open_pair();
    refused(c.auth_none("u"), &c);
    refused(c.send_data(7, b"x"), &c);
    refused(c.channel_request(7, ChannelReq::Shell, true), &c);
    refused(c.consume(0, 1), &c);
    refused(c.channel_reply(0, true), &c);
    refused(c.global_reply(true, &[]), &c);
    refused(c.accept_channel(0), &c);
    refused(c.reject_channel(0, 1, "no"), &c);
    refused(s.auth_accept(), &s);
    refused(
        s.auth_pk_ok("ssh-ed25519", &OfferedKey::Plain(host()[0].public_key())),
        &s,
    );
    c.rekey().unwrap();
    let out = c.take_output();
    refused(c.export(now), &c);
    s.handle_input(&out, now).unwrap();
    pump(&mut c, &mut s, &mut Vec::new());

    // The connection goes on: data flows, and a consume that was refused
    // left the window as it was.
    assert_eq!(c.send_data(0, b"still here").unwrap(), 10);
    let out = c.take_output();
    s.handle_input(&out, now).unwrap();
    let got = events(&mut s);
    assert!(
        got.contains(&Event::Data {
            id: 0,
            data: b"still here".to_vec()
        }),
        "{got:?}"
    );
    refused(s.consume(0, 11), &s);
    s.consume(0, 10).unwrap();
    assert!(c.export(now).is_ok() && s.export(now).is_ok());
}

/// Feeds `bytes` to `victim`, which must fail with `expect`, close, and
/// tell `peer` by DISCONNECT with `code`.
fn faults(victim: &mut Connection, peer: &mut Connection, bytes: &[u8], expect: Error, code: u32) {
    let now = Instant::now();
    let err = victim.handle_input(bytes, now).unwrap_err();
    assert_eq!(err, expect);
    assert!(err.is_peer_fault());
    assert!(victim.is_closed());
    let out = victim.take_output();
    peer.handle_input(&out, now).unwrap();
    let description = format!("{expect}");
    assert!(
        events(peer).contains(&Event::Disconnected {
            reason: code,
            description
        }),
        "no DISCONNECT {code} for {expect}"
    );
    assert!(peer.is_closed());
}

#[test]
fn a_peer_fault_sends_disconnect_with_its_reason() {
    // A message about a channel the client does not have.
    let (mut c, mut s) = open_pair();
    s.send(msg::ChannelEof(77).encode()).unwrap();
    let bytes = s.take_output();
    let e = Error::Protocol("message for an unknown or closed channel");
    faults(&mut c, &mut s, &bytes, e, reason::PROTOCOL_ERROR);

    // Data after the client's own EOF.
    let (mut c, mut s) = open_pair();
    c.send_eof(0).unwrap();
    let mut p = msg::channel_data_header(0, 1).to_vec();
    p.push(b'x');
    c.send(p).unwrap();
    let bytes = c.take_output();
    let e = Error::Protocol("data on a channel not open for data");
    faults(&mut s, &mut c, &bytes, e, reason::PROTOCOL_ERROR);

    // A packet altered on the way.
    let (mut c, mut s) = open_pair();
    s.send_data(0, b"hello").unwrap();
    let mut bytes = s.take_output();
    *bytes.last_mut().unwrap() ^= 1;
    faults(&mut c, &mut s, &bytes, Error::Mac, reason::MAC_ERROR);
}

/// The client's first bytes, the server's answer, and the client's
/// SSH_MSG_KEX_ECDH_INIT packet (in clear) of the default method.
fn to_kex_init() -> (Connection, Connection, Vec<u8>) {
    let now = Instant::now();
    let (mut c, mut s) = (fresh(false), fresh(true));
    s.handle_input(&c.take_output(), now).unwrap();
    c.handle_input(&s.take_output(), now).unwrap();
    let init = c.take_output();
    assert_eq!(init[5], msg::num::KEX_ECDH_INIT);
    (c, s, init)
}

/// Offsets of the init (or reply) bytes in a clear KEX_ECDH packet: after
/// length, padding length, message number and, for the reply, the host
/// key string; then the string's length.
fn q_range(packet: &[u8], after_host_key: bool) -> std::ops::Range<usize> {
    let be = |i: usize| u32::from_be_bytes(packet[i..i + 4].try_into().unwrap()) as usize;
    let mut at = 6;
    if after_host_key {
        at += 4 + be(at);
    }
    at + 4..at + 4 + be(at)
}

/// The default method is mlkem768x25519-sha256; hostile init and reply
/// bytes end the key exchange with DISCONNECT, key exchange failed, naming
/// what was wrong, on either side.
#[test]
fn hostile_kex_bytes_fail_the_key_exchange() {
    assert_eq!(crate::kex::KEX_ALGS[0], "mlkem768x25519-sha256");
    // Server: an ML-KEM encapsulation key failing FIPS 203's modulus check.
    let (mut c, mut s, mut init) = to_kex_init();
    let q = q_range(&init, false);
    assert_eq!(q.len(), 1184 + 32);
    init[q.start..q.start + 1152].fill(0xff);
    let e = Error::KeyExchange("ml-kem-768 public key (modulus check)");
    faults(&mut s, &mut c, &init, e, reason::KEY_EXCHANGE_FAILED);

    // Server: a low-order X25519 point beside a valid ML-KEM key.
    let (mut c, mut s, mut init) = to_kex_init();
    let q = q_range(&init, false);
    init[q.end - 32..q.end].fill(0);
    let e = Error::KeyExchange("curve25519 shared secret is zero");
    faults(&mut s, &mut c, &init, e, reason::KEY_EXCHANGE_FAILED);

    // Client: the server's reply with a low-order X25519 point.
    let now = Instant::now();
    let (mut c, mut s, init) = to_kex_init();
    s.handle_input(&init, now).unwrap();
    while let Some(e) = s.poll_event() {
        sign(&mut s, &e);
    }
    let mut reply = s.take_output();
    assert_eq!(reply[5], msg::num::KEX_ECDH_REPLY);
    let q = q_range(&reply, true);
    assert_eq!(q.len(), 1088 + 32);
    reply[q.end - 32..q.end].fill(0);
    let e = Error::KeyExchange("curve25519 shared secret is zero");
    faults(&mut c, &mut s, &reply, e, reason::KEY_EXCHANGE_FAILED);
}

fn host() -> Vec<PrivateKey> {
    vec![PrivateKey::generate(crate::keys::KeyType::Ed25519).unwrap()]
}

/// Host certificates: only a server's, only host certificates of its own
/// host keys; their certificate algorithms are offered after the plain
/// ones.
#[test]
fn host_certificates_are_checked_and_offered() {
    let dir = ressh_testkit::TempDir::new("hostcert");
    let (ca, _) = ressh_testkit::ssh_keygen(dir.path(), "ed25519", "");
    let (host_key, host_pub) = ressh_testkit::ssh_keygen(dir.path(), "ecdsa-384", "");
    let key = PublicKey::from_openssh(&host_pub).unwrap().0;
    let cert = |args: &[&str]| {
        let (_, line) = ressh_testkit::ssh_keygen_sign(&ca, &host_key, args);
        crate::cert::Certificate::from_openssh(&line).unwrap().0
    };
    let host_cert = cert(&["-h", "-I", "h"]);
    let user_cert = cert(&["-I", "u"]);
    let now = Instant::now();
    let mut c = Connection::client(Config::default(), now).unwrap();
    c.take_output();
    refused(c.set_host_certificates(vec![host_cert.clone()]), &c);
    let other = host()[0].public_key();
    let mut s = Connection::server(Config::default(), vec![other.clone()], now).unwrap();
    s.take_output();
    refused(s.set_host_certificates(vec![host_cert.clone()]), &s);
    let mut s = Connection::server(Config::default(), vec![key.clone()], now).unwrap();
    s.take_output();
    refused(s.set_host_certificates(vec![user_cert]), &s);
    let s = Connection::server_with_certificates(
        Config::default(),
        vec![other, key],
        vec![host_cert],
        now,
    )
    .unwrap();
    assert_eq!(
        s.kexinit(false).unwrap().host_key,
        [
            "ssh-ed25519",
            "ecdsa-sha2-nistp384",
            "ecdsa-sha2-nistp384-cert-v01@openssh.com"
        ]
    );
}

/// As sshd, a server tells a client whose identification it rejects why,
/// in plain text, before closing (OpenSSH's regress `multiplex` reads it
/// through a forward).
#[test]
fn a_rejected_identification_is_answered_in_plain_text() {
    for (input, why) in [
        (&b"\n"[..], &b"Invalid SSH identification string.\r\n"[..]),
        (
            b"GET / HTTP/1.0\r\n",
            b"Invalid SSH identification string.\r\n",
        ),
        (b"SSH-1.5-HALLO\r\n", b"Protocol major versions differ.\r\n"),
    ] {
        let keys: Vec<PublicKey> = host().iter().map(PrivateKey::public_key).collect();
        let mut s = Connection::server(Config::default(), keys, Instant::now()).unwrap();
        let _ = s.take_output();
        assert!(s.handle_input(input, Instant::now()).is_err());
        assert_eq!(s.take_output(), why, "{:?}", String::from_utf8_lossy(input));
    }
}

/// A mux proxy client: the connection protocol at once, nothing before it
/// (no version line, no KEXINIT), its messages in the mux framing, others
/// (DISCONNECT) not sent, and what the master says decoded as any peer's.
#[test]
fn mux_proxy_client_speaks_only_the_connection_protocol() {
    use crate::transport::mux_frame;
    let now = Instant::now();
    let mut c = Connection::mux_proxy_client(Config::default(), "u", now);
    assert!(c.output().is_empty(), "no version line, no KEXINIT");
    assert!(c.is_authenticated());
    assert_eq!(c.poll_timeout(), None, "no rekey, no resilience timers");
    let id = c.open_channel(ChannelKind::Session).unwrap();
    let open = msg::ChannelOpen {
        sender: id,
        initial_window: Config::default().window,
        max_packet: Config::default().max_packet,
        kind: ChannelKind::Session,
    }
    .encode();
    let mut framed = Vec::new();
    mux_frame(&open, &mut framed);
    assert_eq!(c.take_output(), framed);
    let confirm = msg::ChannelOpenConfirmation {
        recipient: id,
        sender: 5,
        initial_window: 1 << 20,
        max_packet: 32768,
        data: Vec::new(),
    }
    .encode();
    let mut input = Vec::new();
    mux_frame(&confirm, &mut input);
    let data = msg::ChannelData {
        recipient: id,
        data: b"hi".to_vec(),
    }
    .encode();
    mux_frame(&data, &mut input);
    c.handle_input(&input, now).unwrap();
    let evs = events(&mut c);
    assert!(
        matches!(evs[0], Event::ChannelOpened { id: i } if i == id),
        "{evs:?}"
    );
    assert!(
        matches!(&evs[1], Event::Data { id: i, data } if *i == id && data == b"hi"),
        "{evs:?}"
    );
    assert_eq!(c.send_data(id, b"yo").unwrap(), 2);
    let out = c.take_output();
    let mut framed = Vec::new();
    mux_frame(
        &msg::ChannelData {
            recipient: 5,
            data: b"yo".to_vec(),
        }
        .encode(),
        &mut framed,
    );
    assert_eq!(out, framed);
    c.disconnect(reason::BY_APPLICATION, "bye");
    assert!(c.output().is_empty(), "DISCONNECT is not the master's");
    // A bad frame is a fault of the peer: the connection closes.
    let mut c = Connection::mux_proxy_client(Config::default(), "u", now);
    assert!(c.handle_input(&[0, 0, 0, 1, 0], now).is_err());
    assert!(c.is_closed());
}
