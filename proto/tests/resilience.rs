//! The resilience extension between two in-memory instances: counting and
//! acknowledgements, backpressure, reconnects (also make-before-break and
//! after moving the state to another process), and attacks on the
//! reconnect exchange.

use std::time::{Duration, Instant};

use ressh_proto::keys::{KeyType, PrivateKey, PublicKey};
use ressh_proto::msg::{ChannelKind, ChannelReq};
use ressh_proto::{Config, Connection, Event};

/// The servers' host key: every server of these tests, original, moved or
/// answering a reconnect, has it (a reconnect never signs).
fn host_key() -> &'static [PrivateKey] {
    static HOST: std::sync::OnceLock<Vec<PrivateKey>> = std::sync::OnceLock::new();
    HOST.get_or_init(|| vec![PrivateKey::generate(KeyType::Ed25519).unwrap()])
}

fn host() -> Vec<PublicKey> {
    host_key().iter().map(|k| k.public_key()).collect()
}

struct Pair {
    c: Connection,
    s: Connection,
    now: Instant,
    /// Data the client received on the channel.
    got: Vec<u8>,
    cid: u32,
    sid: u32,
    /// Whether the client consumes (reads) what arrives.
    consume: bool,
    events_c: Vec<Event>,
    /// Bytes the server sent the client.
    wire: usize,
}

impl Pair {
    fn new(cc: Config, sc: Config) -> Pair {
        let now = Instant::now();
        let mut p = Pair {
            c: Connection::client(cc, now).unwrap(),
            s: Connection::server(sc, host(), now).unwrap(),
            now,
            got: Vec::new(),
            cid: 0,
            sid: 0,
            consume: true,
            events_c: Vec::new(),
            wire: 0,
        };
        p.pump();
        p.c.auth_none("u").unwrap();
        p.pump();
        p.cid = p.c.open_channel(ChannelKind::Session).unwrap();
        p.pump();
        p.c.channel_request(p.cid, ChannelReq::Shell, false)
            .unwrap();
        p.pump();
        p
    }

    /// Delivers bytes both ways until quiet; `wire` decides what passes.
    fn pump(&mut self) {
        for _ in 0..100_000 {
            let a = self.c.take_output();
            let b = self.s.take_output();
            if !a.is_empty() {
                self.s.handle_input(&a, self.now).unwrap();
            }
            if !b.is_empty() {
                self.wire += b.len();
                self.c.handle_input(&b, self.now).unwrap();
            }
            let moved = self.events() || !a.is_empty() || !b.is_empty();
            if !moved {
                return;
            }
        }
        panic!("did not settle");
    }

    fn events(&mut self) -> bool {
        let mut any = false;
        while let Some(e) = self.c.poll_event() {
            any = true;
            match &e {
                Event::HostKey(_) => self.c.accept_host_key(self.now).unwrap(),
                Event::Data { id, data } if *id == self.cid => {
                    self.got.extend_from_slice(data);
                    if self.consume {
                        self.c.consume(*id, data.len()).unwrap();
                    }
                }
                _ => {}
            }
            self.events_c.push(e);
        }
        while let Some(e) = self.s.poll_event() {
            any = true;
            match e {
                Event::SignHostKey(r) => {
                    let sig = r.sign_with(host_key());
                    self.s.host_key_signed(sig, self.now).unwrap();
                }
                Event::AuthRequest { .. } => self.s.auth_accept().unwrap(),
                Event::ChannelOpenRequest { id, .. } => {
                    self.sid = id;
                    self.s.accept_channel(id).unwrap();
                }
                _ => {}
            }
        }
        any
    }

    /// The TCP connection dies: whatever was in flight is lost.
    fn cut(&mut self) {
        self.c.take_output();
        self.s.take_output();
    }

    /// A full reconnect over a fresh in-memory transport.
    fn reconnect(&mut self, sc: &Config) {
        let mut att = self.c.reconnect_attempt().unwrap();
        let mut w2 = Connection::server(sc.clone(), host(), self.now).unwrap();
        w2.handle_input(&att.take_output(), self.now).unwrap();
        let req = match w2.poll_event() {
            Some(Event::ReconnectRequest(r)) => r,
            other => panic!("expected a reconnect request, got {other:?}"),
        };
        let mut sr = self.s.accept_reconnect(&req).unwrap();
        sr.handle_input(&w2.take_unprocessed_input()).unwrap();
        let mut to_client = w2.take_output();
        to_client.extend(sr.take_output());
        att.handle_input(&to_client).unwrap();
        assert!(att.is_done());
        sr.handle_input(&att.take_output()).unwrap();
        assert!(sr.is_confirmed());
        self.s.commit_reconnect(sr, self.now).unwrap();
        self.c.complete_reconnect(att, self.now).unwrap();
        self.pump();
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// The client announces its keepalive interval in its INFO, in whole
/// seconds rounded up; the server records it, keeps it across a reconnect,
/// and reads 0 (older clients, keepalives off) as none announced.
#[test]
fn client_announces_its_keepalive_interval() {
    for (keepalive, want) in [
        (Duration::from_secs(4), Some(Duration::from_secs(4))),
        (Duration::from_millis(1500), Some(Duration::from_secs(2))),
        (Duration::ZERO, None),
    ] {
        let cc = Config {
            keepalive,
            ..Config::default()
        };
        let mut p = Pair::new(cc, Config::default());
        assert_eq!(p.s.peer_keepalive(), want, "{keepalive:?}");
        assert_eq!(p.c.peer_keepalive(), None, "servers announce none");
        assert_eq!(p.c.peer_detach_timeout(), Some(3600));
        // Moved to another process (the session worker), then resumed.
        let st = p.s.export(p.now).unwrap();
        p.s = Connection::import(&st, host(), p.now).unwrap();
        assert_eq!(p.s.peer_keepalive(), want, "after export and import");
        p.cut();
        p.reconnect(&Config::default());
        assert_eq!(p.s.peer_keepalive(), want, "after a reconnect");
    }
}

#[test]
fn negotiated_both_sides_and_acks_are_cheap() {
    let mut p = Pair::new(Config::default(), Config::default());
    assert!(p.c.resilience_active() && p.s.resilience_active());
    assert!(p.events_c.iter().any(|e| matches!(
        e,
        Event::ResilienceReady {
            detach_timeout: 3600
        }
    )));
    let data = pattern(40 << 20);
    let mut sent = 0;
    let mut wire = 0usize;
    let mut acks_wire = 0usize;
    while p.got.len() < data.len() {
        if sent < data.len() {
            let w = p.s.send_window(p.sid).min(data.len() - sent).min(1 << 20);
            sent += p.s.send_data(p.sid, &data[sent..sent + w]).unwrap();
        }
        let b = p.s.take_output();
        wire += b.len();
        p.c.handle_input(&b, p.now).unwrap();
        p.events();
        // Everything the client sends back here is window adjusts and ACKs.
        let a = p.c.take_output();
        acks_wire += a.len();
        p.s.handle_input(&a, p.now).unwrap();
        p.events();
    }
    assert!(p.got == data);
    let (buffered, _, _) = p.s.resilience_stats().unwrap();
    assert!(buffered <= 16 << 20);
    // Acknowledgement bytes (with the window adjusts, which plain SSH sends
    // too) stay far below 0.1% of the data.
    let share = acks_wire as f64 / wire as f64;
    assert!(share < 0.001, "ack share {share}");
}

#[test]
fn peer_without_resilience_gets_plain_ssh() {
    let off = Config {
        resilience: false,
        ..Default::default()
    };
    let p = Pair::new(Config::default(), off.clone());
    assert!(!p.c.resilience_active() && !p.s.resilience_active());
    let p = Pair::new(off, Config::default());
    assert!(!p.c.resilience_active() && !p.s.resilience_active());
}

/// Streams `total` bytes server→client, cutting the connection and
/// reconnecting `cuts` times; every byte arrives once, in order.
fn stream_with_cuts(
    total: usize,
    cuts: usize,
    cc: &Config,
    sc: &Config,
    mut between: impl FnMut(&mut Pair, usize),
) -> Pair {
    let mut p = Pair::new(cc.clone(), sc.clone());
    let data = pattern(total);
    let mut sent = 0;
    let mut cut = 0;
    while p.got.len() < total {
        if sent < total {
            let w = p.s.send_window(p.sid).min(total - sent).min(100_000);
            sent += p.s.send_data(p.sid, &data[sent..sent + w]).unwrap();
            // Client→server traffic too, so both directions retransmit.
            p.c.send_data(p.cid, b"keystroke").unwrap();
        }
        if cut < cuts && sent > (cut + 1) * total / (cuts + 1) {
            cut += 1;
            p.cut();
            between(&mut p, cut);
            p.reconnect(sc);
            continue;
        }
        p.pump();
    }
    assert_eq!(cut, cuts);
    assert!(
        p.got == data,
        "stream corrupted: {} of {} bytes",
        p.got.len(),
        total
    );
    p
}

#[test]
fn reconnects_lose_and_repeat_nothing() {
    let p = stream_with_cuts(
        8 << 20,
        10,
        &Config::default(),
        &Config::default(),
        |_, _| {},
    );
    assert_eq!(
        p.events_c
            .iter()
            .filter(|e| matches!(e, Event::Reconnected))
            .count(),
        10
    );
}

/// With `zlib@openssh.com` both ways, each reconnect's NEWKEYS starts
/// both streams afresh (docs/PROTOCOL.md §9): what is retransmitted is the
/// buffered payloads, compressed again on the new transport, and 8 MB
/// arrive intact through 10 cuts in far fewer bytes than without.
#[test]
fn compressed_reconnects_lose_and_repeat_nothing() {
    let cc = Config {
        compression: ressh_proto::zlib::offer(true, true),
        ..Config::default()
    };
    let sc = Config {
        compression: ressh_proto::zlib::offer(false, true),
        ..Config::default()
    };
    let p = stream_with_cuts(8 << 20, 10, &cc, &sc, |_, _| {});
    let reconnects = p
        .events_c
        .iter()
        .filter(|e| matches!(e, Event::Reconnected))
        .count();
    assert_eq!(reconnects, 10);
    assert!(p.wire < (8 << 20) / 8, "{} bytes on the wire", p.wire);
}

#[test]
fn tokens_ratchet_and_old_requests_are_refused() {
    let sc = Config::default();
    let mut p = Pair::new(Config::default(), sc.clone());
    let t0 = p.c.resume_token().unwrap();
    // Record a complete first attempt, as an eavesdropper would.
    let mut att = p.c.reconnect_attempt().unwrap();
    let recorded_request = att.output().to_vec();
    let mut w2 = Connection::server(sc.clone(), host(), p.now).unwrap();
    w2.handle_input(&att.take_output(), p.now).unwrap();
    let Some(Event::ReconnectRequest(req)) = w2.poll_event() else {
        panic!()
    };
    let mut sr = p.s.accept_reconnect(&req).unwrap();
    let mut to_client = w2.take_output();
    to_client.extend(sr.take_output());
    att.handle_input(&to_client).unwrap();
    let recorded_confirmation = att.output().to_vec();
    sr.handle_input(&att.take_output()).unwrap();
    p.s.commit_reconnect(sr, p.now).unwrap();
    p.c.complete_reconnect(att, p.now).unwrap();
    p.pump();
    let t1 = p.c.resume_token().unwrap();
    assert_ne!(t0, t1, "the token ratchets");
    assert_eq!(p.s.resume_token().unwrap(), t1);

    // Replay of the recorded request and confirmation: the MAC still checks
    // (the previous token is accepted once), but the confirmation fails
    // under the new server ephemeral key, and the session is untouched.
    let mut w3 = Connection::server(sc.clone(), host(), p.now).unwrap();
    w3.handle_input(&recorded_request, p.now).unwrap();
    let Some(Event::ReconnectRequest(req)) = w3.poll_event() else {
        panic!()
    };
    // It is refused as a replay (issue 13, hole 4); were it accepted,
    // the recorded confirmation could not confirm it.
    match p.s.accept_reconnect(&req) {
        Ok(mut sr) => {
            assert!(sr.handle_input(&recorded_confirmation).is_err() || !sr.is_confirmed());
            p.s.drop_reconnect(sr);
            panic!("a replayed request was accepted");
        }
        Err(r) => assert_eq!(r.code, 2, "{r:?}"),
    }
    // The live session still works both ways.
    p.s.send_data(p.sid, b"still here").unwrap();
    p.pump();
    assert!(p.got.ends_with(b"still here"));
    // A second successful reconnect retires the first token for good.
    p.cut();
    p.reconnect(&sc);
    let mut w4 = Connection::server(sc, host(), p.now).unwrap();
    w4.handle_input(&recorded_request, p.now).unwrap();
    let Some(Event::ReconnectRequest(req)) = w4.poll_event() else {
        panic!()
    };
    let refused = p.s.accept_reconnect(&req).err().expect("refused");
    assert_eq!(refused.code, 1, "{refused:?}");
}

#[test]
fn forged_requests_are_refused_and_change_nothing() {
    let sc = Config::default();
    let mut p = Pair::new(Config::default(), sc.clone());
    let other = Pair::new(Config::default(), sc.clone());
    // A token of another session.
    let mut q = other.c;
    let mut att = q.reconnect_attempt().unwrap();
    let mut w2 = Connection::server(sc.clone(), host(), p.now).unwrap();
    w2.handle_input(&att.take_output(), p.now).unwrap();
    let Some(Event::ReconnectRequest(req)) = w2.poll_event() else {
        panic!()
    };
    assert_eq!(p.s.accept_reconnect(&req).err().unwrap().code, 1);
    // The right token with a wrong MAC.
    let mut att = p.c.reconnect_attempt().unwrap();
    p.c.abort_reconnect();
    let mut w2 = Connection::server(sc.clone(), host(), p.now).unwrap();
    w2.handle_input(&att.take_output(), p.now).unwrap();
    let Some(Event::ReconnectRequest(mut req)) = w2.poll_event() else {
        panic!()
    };
    req.request.mac[0] ^= 1;
    assert_eq!(p.s.accept_reconnect(&req).err().unwrap().code, 2);
    // A receive count changed on the wire: the MAC covers it.
    req.request.mac[0] ^= 1;
    req.request.r_c += 1000;
    assert_eq!(p.s.accept_reconnect(&req).err().unwrap().code, 2);
    // Garbage after the resilience KEXINIT: the new connection fails alone.
    let mut att = p.c.reconnect_attempt().unwrap();
    p.c.abort_reconnect();
    let out = att.take_output();
    // Keep the version line and the KEXINIT packet, then send junk.
    let v = out.iter().position(|&b| b == b'\n').unwrap() + 1;
    let len = u32::from_be_bytes(out[v..v + 4].try_into().unwrap()) as usize;
    let mut garbage = out[..v + 4 + len].to_vec();
    garbage.extend_from_slice(&[0xff; 64]);
    let mut w3 = Connection::server(sc, host(), p.now).unwrap();
    assert!(w3.handle_input(&garbage, p.now).is_err());
    // Through all of it the session carries on.
    p.s.send_data(p.sid, b"alive").unwrap();
    p.pump();
    assert!(p.got.ends_with(b"alive"));
}

#[test]
fn make_before_break_drops_duplicates() {
    let sc = Config::default();
    let mut p = Pair::new(Config::default(), sc.clone());
    let mut att = p.c.reconnect_attempt().unwrap();
    // The old connection still delivers data after the attempt announced
    // its count: the server will retransmit it, the client drops it.
    p.s.send_data(p.sid, b"old-path ").unwrap();
    p.pump();
    assert!(p.got.ends_with(b"old-path "));
    let mut w2 = Connection::server(sc, host(), p.now).unwrap();
    w2.handle_input(&att.take_output(), p.now).unwrap();
    let Some(Event::ReconnectRequest(req)) = w2.poll_event() else {
        panic!()
    };
    let mut sr = p.s.accept_reconnect(&req).unwrap();
    let mut to_client = w2.take_output();
    to_client.extend(sr.take_output());
    att.handle_input(&to_client).unwrap();
    sr.handle_input(&att.take_output()).unwrap();
    p.s.commit_reconnect(sr, p.now).unwrap();
    p.c.complete_reconnect(att, p.now).unwrap();
    p.pump();
    p.s.send_data(p.sid, b"new-path").unwrap();
    p.pump();
    assert!(
        p.got.ends_with(b"old-path new-path"),
        "{:?}",
        String::from_utf8_lossy(&p.got)
    );
}

#[test]
fn backpressure_caps_the_buffer() {
    let cap = 256 * 1024;
    let sc = Config {
        resilience_buffer: cap,
        ..Default::default()
    };
    let mut p = Pair::new(Config::default(), sc);
    // The client is unreachable: nothing the server sends is acknowledged.
    let chunk = vec![7u8; 64 * 1024];
    let mut accepted = 0;
    for _ in 0..100 {
        accepted += p.s.send_data(p.sid, &chunk).unwrap();
        p.s.take_output();
    }
    let (buffered, _, _) = p.s.resilience_stats().unwrap();
    assert!(accepted <= cap as usize, "took {accepted} beyond the cap");
    assert!(buffered <= cap as usize + 4096, "buffered {buffered}");
    assert_eq!(p.s.send_window(p.sid), 0);
    // The client comes back: everything taken arrives, then sending resumes.
    p.reconnect(&Config {
        resilience_buffer: cap,
        ..Default::default()
    });
    assert_eq!(p.got.len(), accepted);
    assert!(p.s.send_window(p.sid) > 0);
}

#[test]
fn state_moves_between_processes_with_its_buffers() {
    let sc = Config::default();
    let p = stream_with_cuts(2 << 20, 3, &Config::default(), &sc, |p, cut| {
        if cut == 2 {
            let st = p.s.export(p.now).unwrap();
            p.s = Connection::import(&st, host(), p.now).unwrap();
            let ct = p.c.export(p.now).unwrap();
            p.c = Connection::import(&ct, Vec::new(), p.now).unwrap();
        }
    });
    assert!(p.c.resilience_active());
}

#[test]
fn keepalive_reports_a_dead_connection() {
    let cc = Config {
        keepalive: Duration::from_secs(5),
        ..Default::default()
    };
    let mut p = Pair::new(cc, Config::default());
    let t = p.c.poll_timeout().unwrap();
    assert!(t <= p.now + Duration::from_secs(5));
    // Silence: the first timeout sends a probe, the server answers.
    p.now += Duration::from_secs(5);
    p.c.handle_timeout(p.now).unwrap();
    p.pump();
    assert!(!p
        .events_c
        .iter()
        .any(|e| matches!(e, Event::ConnectionDead)));
    // Now the server is gone: probe, then dead.
    p.now += Duration::from_secs(5);
    p.c.handle_timeout(p.now).unwrap();
    p.c.take_output();
    p.now += Duration::from_secs(5);
    p.c.handle_timeout(p.now).unwrap();
    p.events();
    assert!(p
        .events_c
        .iter()
        .any(|e| matches!(e, Event::ConnectionDead)));
}

/// A reconnect attempt of the client as the server's session sees it:
/// the client's half, the request routed to the session, and the new
/// connection's engine (which sent the server's version line and KEXINIT).
fn attempt(
    p: &mut Pair,
    sc: &Config,
) -> (
    ressh_proto::ClientReconnect,
    Box<ressh_proto::ReconnectRequest>,
    Connection,
) {
    let mut att = p.c.reconnect_attempt().unwrap();
    let mut w = Connection::server(sc.clone(), host(), p.now).unwrap();
    w.handle_input(&att.take_output(), p.now).unwrap();
    let Some(Event::ReconnectRequest(req)) = w.poll_event() else {
        panic!("no reconnect request")
    };
    (att, req, w)
}

/// Runs an accepted attempt's exchange to the key confirmation.
fn confirm(
    att: &mut ressh_proto::ClientReconnect,
    w: &mut Connection,
    sr: &mut ressh_proto::ServerReconnect,
) {
    let mut to_client = w.take_output();
    to_client.extend(sr.take_output());
    att.handle_input(&to_client).unwrap();
    assert!(att.is_done());
    sr.handle_input(&att.take_output()).unwrap();
    assert!(sr.is_confirmed());
}

/// Issue 13, hole 4: a recorded request played again while the real
/// attempt is pending is refused as a replay and disturbs nothing.
#[test]
fn replayed_request_is_refused_and_leaves_the_pending_attempt() {
    let sc = Config::default();
    let mut p = Pair::new(Config::default(), sc.clone());
    p.cut();
    let (mut att, req, mut w) = attempt(&mut p, &sc);
    let mut sr = p.s.accept_reconnect(&req).unwrap();
    // The same request again, as often as an attacker likes.
    for _ in 0..20 {
        let refused = p.s.accept_reconnect(&req).err().expect("replay accepted");
        assert_eq!(refused.code, 2, "{refused:?}");
        assert!(refused.description.contains("replay"), "{refused:?}");
    }
    confirm(&mut att, &mut w, &mut sr);
    p.s.commit_reconnect(sr, p.now).unwrap();
    p.c.complete_reconnect(att, p.now).unwrap();
    p.pump();
    p.s.send_data(p.sid, b"resumed").unwrap();
    p.pump();
    assert!(p.got.ends_with(b"resumed"));
    // After the commit the recording is still a replay (its token is the
    // previous one, accepted until the next reconnect).
    assert_eq!(p.s.accept_reconnect(&req).err().unwrap().code, 2);
}

/// Issue 13, hole 4: an accepted attempt that never confirms (a replay
/// that slipped past the replay memory, or an attempt the client gave
/// up) neither evicts nor disturbs the real one, even when it fails while
/// the real one waits: ACKs stay held for the real attempt.
#[test]
fn pending_attempt_is_not_evicted_by_an_unconfirmed_one() {
    let sc = Config::default();
    let mut p = Pair::new(Config::default(), sc.clone());
    // An attempt the client gave up; its request reached the server.
    let (_given_up, stale, _w0) = attempt(&mut p, &sc);
    p.c.abort_reconnect();
    // The real attempt, made while the old connection still works.
    let (mut att, req, mut w) = attempt(&mut p, &sc);
    let mut sr = p.s.accept_reconnect(&req).unwrap();
    let other = p.s.accept_reconnect(&stale).unwrap();
    // Up to the bound, then TRY_AGAIN: nothing is evicted.
    let mut more = Vec::new();
    let mut refused = None;
    for _ in 0..4 {
        let (_a, r, _w) = attempt(&mut p, &sc);
        p.c.abort_reconnect();
        match p.s.accept_reconnect(&r) {
            Ok(s) => more.push(s),
            Err(e) => refused = Some(e),
        }
    }
    assert_eq!(more.len(), 2, "four attempts pending at most");
    assert_eq!(refused.expect("refused").code, 4);
    // The unconfirmed ones fail while the real one waits; traffic on the
    // old path goes on meanwhile.
    p.s.drop_reconnect(other);
    for s in more {
        p.s.drop_reconnect(s);
    }
    p.c.send_data(p.cid, b"typed on the old path").unwrap();
    let a = p.c.take_output();
    p.s.handle_input(&a, p.now).unwrap();
    p.now += Duration::from_secs(5);
    p.s.handle_timeout(p.now).unwrap();
    let to_client = p.s.take_output();
    assert!(
        to_client.is_empty(),
        "the server acknowledged on the old path while an attempt was pending"
    );
    // The real attempt completes and nothing is lost or repeated.
    confirm(&mut att, &mut w, &mut sr);
    p.s.commit_reconnect(sr, p.now).unwrap();
    p.c.complete_reconnect(att, p.now).unwrap();
    p.pump();
    p.s.send_data(p.sid, b"resumed").unwrap();
    p.pump();
    assert!(p.got.ends_with(b"resumed"));
}

/// Issue 13, hole 4: two attempts pending at once; the first confirmed
/// commits and the other can never commit after it.
#[test]
fn two_concurrent_attempts_the_confirmed_one_wins() {
    let sc = Config::default();
    let mut p = Pair::new(Config::default(), sc.clone());
    p.cut();
    let (mut a1, r1, mut w1) = attempt(&mut p, &sc);
    let (mut a2, r2, mut w2) = attempt(&mut p, &sc);
    let mut s1 = p.s.accept_reconnect(&r1).unwrap();
    let mut s2 = p.s.accept_reconnect(&r2).unwrap();
    confirm(&mut a2, &mut w2, &mut s2);
    p.s.commit_reconnect(s2, p.now).unwrap();
    p.c.complete_reconnect(a2, p.now).unwrap();
    p.pump();
    let token = p.s.resume_token();
    // The first attempt confirms too late: refused, and nothing changes.
    confirm(&mut a1, &mut w1, &mut s1);
    assert!(p.s.commit_reconnect(s1, p.now).is_err());
    assert_eq!(p.s.resume_token(), token);
    p.s.send_data(p.sid, b"still one session").unwrap();
    p.c.send_data(p.cid, b"both ways").unwrap();
    p.pump();
    assert!(p.got.ends_with(b"still one session"));
    assert!(!p.s.is_closed() && !p.c.is_closed());
    // And the next reconnect works as usual.
    p.cut();
    p.reconnect(&sc);
    p.s.send_data(p.sid, b"again").unwrap();
    p.pump();
    assert!(p.got.ends_with(b"again"));
}

/// The clear packets after the version line of what a server sent.
fn clear_payloads(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut at = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut out = Vec::new();
    while at + 5 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let pad = bytes[at + 4] as usize;
        out.push(bytes[at + 5..at + 4 + len - pad].to_vec());
        at += 4 + len;
    }
    out
}

/// Issue 13: a malformed REQUEST gets RECONNECT_FAILURE (docs/PROTOCOL.md
/// §7), not DISCONNECT.
#[test]
fn malformed_request_gets_reconnect_failure() {
    let sc = Config::default();
    let mut p = Pair::new(Config::default(), sc.clone());
    let mut att = p.c.reconnect_attempt().unwrap();
    p.c.abort_reconnect();
    let mut out = att.take_output();
    let v = out.iter().position(|&b| b == b'\n').unwrap() + 1;
    let len = u32::from_be_bytes(out[v..v + 4].try_into().unwrap()) as usize;
    // The request's packet: length, padding length, message number, then
    // the token's length, made 33.
    let req = v + 4 + len;
    assert_eq!(out[req + 5], 242);
    out[req + 9] = 33;
    let mut w = Connection::server(sc, host(), p.now).unwrap();
    assert!(w.handle_input(&out, p.now).is_err());
    let payloads = clear_payloads(&w.take_output());
    let last = payloads.last().expect("an answer");
    assert_eq!(last[0], 244, "answered with message {}", last[0]);
    assert_eq!(u32::from_be_bytes(last[1..5].try_into().unwrap()), 2);
    assert!(!payloads.iter().any(|p| p[0] == 1), "a DISCONNECT was sent");
}

/// Issue 13, hole 5: a peer that never acknowledges and sends thousands of
/// want-reply global requests (each answered with REQUEST_FAILURE, a
/// resilient message) cannot grow the retransmit buffer past the hard
/// bound: the server disconnects with a reason when it is reached.
#[test]
fn unacknowledged_replies_are_bounded() {
    use ressh_proto::msg::GlobalReq;
    use ressh_proto::resilience::{MAX_BYTES_ABOVE_CAP, MAX_MESSAGES};
    let sc = Config::default();
    let cap = sc.resilience_buffer as usize;
    let mut p = Pair::new(Config::default(), sc);
    // A prepared reconnect holds the client's ACKs: from now on it never
    // acknowledges anything (nor answers keepalives).
    let _never = p.c.reconnect_attempt().unwrap();
    let (mut most, mut most_bytes, mut sent) = (0, 0, 0);
    let mut ended = None;
    'flood: for _ in 0..200 {
        for _ in 0..1000 {
            p.c.global_request(
                GlobalReq::Other {
                    name: "flood@example.com".into(),
                    data: vec![0; 64],
                },
                true,
            )
            .unwrap();
            sent += 1;
        }
        let a = p.c.take_output();
        let r = p.s.handle_input(&a, p.now);
        let (held, bytes) = p.s.unacknowledged().unwrap();
        most = most.max(held);
        most_bytes = most_bytes.max(bytes);
        assert!(held <= MAX_MESSAGES, "{held} messages held");
        assert!(bytes <= cap + MAX_BYTES_ABOVE_CAP, "{bytes} bytes held");
        let b = p.s.take_output();
        let _ = p.c.handle_input(&b, p.now);
        while let Some(e) = p.c.poll_event() {
            if let Event::Disconnected { description, .. } = e {
                ended = Some(description);
            }
        }
        if r.is_err() {
            assert!(p.s.is_closed());
            break 'flood;
        }
    }
    let why = ended.expect("the server did not disconnect");
    assert!(why.contains("does not acknowledge"), "{why}");
    println!(
        "bound reached after {sent} requests: {most} messages / {most_bytes} bytes unacknowledged; \
         DISCONNECT: {why}"
    );
}

/// Issue 13, hole 5: channel data in tiny messages stops at
/// DATA_MESSAGES unacknowledged messages, long before the byte cap.
#[test]
fn tiny_channel_data_stops_at_the_message_bound() {
    use ressh_proto::resilience::DATA_MESSAGES;
    let mut p = Pair::new(Config::default(), Config::default());
    let _never = p.c.reconnect_attempt().unwrap();
    let mut n = 0;
    while p.s.send_window(p.sid) > 0 && n < 10 * DATA_MESSAGES {
        assert_eq!(p.s.send_data(p.sid, b"x").unwrap(), 1);
        n += 1;
        if n % 1000 == 0 {
            let b = p.s.take_output();
            p.c.handle_input(&b, p.now).unwrap();
            p.events();
            let a = p.c.take_output();
            p.s.handle_input(&a, p.now).unwrap();
        }
    }
    let (held, bytes) = p.s.unacknowledged().unwrap();
    assert!(held <= DATA_MESSAGES + 16, "{held} messages held");
    assert!(bytes < 1 << 20, "{bytes}");
    assert_eq!(p.s.send_window(p.sid), 0);
}

/// Path suspicion (docs/PROTOCOL.md §4): the client measures the round
/// trip from want-reply ACKs, probes when the server falls silent after
/// sending or when what it sent has no answer, and reports
/// `PathSuspect` once per probe unanswered for the suspicion timeout, long
/// before `ConnectionDead` (the keepalive interval).
#[test]
fn a_silent_path_is_suspected_after_a_few_round_trips() {
    let ka = Duration::from_secs(15);
    let cc = Config {
        keepalive: ka,
        ..Default::default()
    };
    let mut p = Pair::new(cc, Config::default());
    let suspects = |p: &Pair| {
        p.events_c
            .iter()
            .filter(|e| matches!(e, Event::PathSuspect))
            .count()
    };
    let dead = |p: &Pair| {
        p.events_c
            .iter()
            .any(|e| matches!(e, Event::ConnectionDead))
    };
    // Measured at once (answered within the same instant here): the floor.
    let s = p.c.suspect_timeout().unwrap();
    assert_eq!(s, Duration::from_millis(500));
    assert_eq!(p.c.srtt(), Some(Duration::ZERO));

    // The server prints, then stops: one probe S after its last output;
    // answered 80 ms later, it is a round-trip sample and no suspicion.
    p.s.send_data(p.sid, b"hello").unwrap();
    p.pump();
    let last = p.now;
    assert_eq!(p.c.poll_timeout(), Some(last + s));
    p.now = last + s;
    p.c.handle_timeout(p.now).unwrap();
    let probe = p.c.take_output();
    assert!(!probe.is_empty(), "no probe after the server's silence");
    p.now += Duration::from_millis(40);
    p.s.handle_input(&probe, p.now).unwrap();
    let answer = p.s.take_output();
    assert!(
        !answer.is_empty(),
        "the server answers a want-reply ACK at once"
    );
    p.now += Duration::from_millis(40);
    p.c.handle_input(&answer, p.now).unwrap();
    p.events();
    assert_eq!(
        p.c.srtt(),
        Some(Duration::from_millis(10)),
        "7/8·0 + 1/8·80 ms"
    );
    // One probe per silence: only the delayed ACK of "hello" and the
    // keepalive are left.
    p.now = last + Duration::from_secs(1);
    p.c.handle_timeout(p.now).unwrap();
    p.pump();
    let answered = last + s + Duration::from_millis(80);
    assert_eq!(p.c.poll_timeout(), Some(answered + ka));
    assert_eq!(suspects(&p), 0);

    // The path dies while the user types: a probe S after the keystroke,
    // a suspicion S after the probe, once.
    p.now += Duration::from_secs(3);
    p.c.handle_timeout(p.now).unwrap();
    p.c.send_data(p.cid, b"x").unwrap();
    let typed = p.now;
    p.cut();
    assert_eq!(p.c.poll_timeout(), Some(typed + s));
    p.now = typed + s;
    p.c.handle_timeout(p.now).unwrap();
    assert!(
        !p.c.take_output().is_empty(),
        "no probe after the keystroke"
    );
    p.now = typed + s * 2 - Duration::from_millis(1);
    p.c.handle_timeout(p.now).unwrap();
    p.events();
    assert_eq!(suspects(&p), 0, "suspected early");
    p.now = typed + s * 2;
    p.c.handle_timeout(p.now).unwrap();
    p.events();
    assert_eq!(suspects(&p), 1);
    p.now += s;
    p.c.handle_timeout(p.now).unwrap();
    p.events();
    assert_eq!(suspects(&p), 1, "one suspicion per probe");
    // The application knows the path carries bytes: S more, then again.
    p.c.path_alive(p.now);
    assert_eq!(p.c.poll_timeout(), Some(p.now + s));
    p.now += s;
    p.c.handle_timeout(p.now).unwrap();
    p.events();
    assert_eq!(suspects(&p), 2);
    assert!(!dead(&p));
    // The keepalive interval after the probe: dead, as before.
    p.now = typed + s + ka;
    p.c.handle_timeout(p.now).unwrap();
    p.events();
    assert!(dead(&p));

    // A new connection: its round trip is measured afresh, and an idle
    // session's keepalive probe unanswered for S is a suspicion too.
    p.reconnect(&Config::default());
    assert_eq!(p.c.srtt(), Some(Duration::ZERO));
    p.events_c.clear();
    let idle = p.now;
    p.now = idle + ka;
    p.c.handle_timeout(p.now).unwrap();
    assert!(!p.c.take_output().is_empty(), "no keepalive probe");
    p.cut();
    p.now = idle + ka + s;
    p.c.handle_timeout(p.now).unwrap();
    p.events();
    assert_eq!(suspects(&p), 1);
    assert!(!dead(&p));
}

/// With suspicion off (no cap) only the keepalive acts, as before.
#[test]
fn suspicion_off_leaves_only_the_keepalive() {
    let ka = Duration::from_secs(15);
    let cc = Config {
        keepalive: ka,
        suspect_cap: None,
        ..Default::default()
    };
    let mut p = Pair::new(cc, Config::default());
    assert_eq!(p.c.suspect_timeout(), None);
    assert_eq!(p.c.srtt(), None, "nothing measured: no want-reply sent");
    p.s.send_data(p.sid, b"hello").unwrap();
    p.pump();
    p.c.send_data(p.cid, b"x").unwrap();
    p.cut();
    let t0 = p.now;
    // The delayed ACK, then the keepalive.
    assert_eq!(p.c.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    p.now = t0 + Duration::from_secs(1);
    p.c.handle_timeout(p.now).unwrap();
    assert_eq!(p.c.poll_timeout(), Some(t0 + ka));
    p.now = t0 + ka;
    p.c.handle_timeout(p.now).unwrap();
    p.now = t0 + ka * 2;
    p.c.handle_timeout(p.now).unwrap();
    p.events();
    assert!(!p.events_c.iter().any(|e| matches!(e, Event::PathSuspect)));
    assert!(p
        .events_c
        .iter()
        .any(|e| matches!(e, Event::ConnectionDead)));
}

/// During an upload a probe may wait behind our own bytes (in a socket
/// buffer, a proxy): while the server's ACKs of the upload keep coming
/// (every second at least, §4), the suspicion waits for them to stop.
#[test]
fn an_upload_is_suspected_only_when_the_servers_acks_stop() {
    let cc = Config {
        keepalive: Duration::from_secs(15),
        ..Default::default()
    };
    let mut p = Pair::new(cc, Config::default());
    let s = p.c.suspect_timeout().unwrap();
    let send = |p: &mut Pair, n: usize| {
        let data = pattern(n);
        let mut off = 0;
        while off < n {
            off += p.c.send_data(p.cid, &data[off..]).unwrap();
        }
    };
    let t0 = p.now;
    // 200 KiB reach the server; 200 KiB more are stuck in a queue.
    send(&mut p, 200 << 10);
    let arrived = p.c.take_output();
    p.s.handle_input(&arrived, p.now).unwrap();
    send(&mut p, 200 << 10);
    let _queued = p.c.take_output();
    // The server acknowledges what arrived a second later.
    p.now = t0 + Duration::from_secs(1);
    p.s.handle_timeout(p.now).unwrap();
    let ack = p.s.take_output();
    assert!(!ack.is_empty(), "no delayed ACK from the server");
    p.c.handle_input(&ack, p.now).unwrap();
    let progress = p.now;
    // More is sent; the probe S later waits behind it, unanswered.
    send(&mut p, 1024);
    p.c.take_output();
    p.now = progress + s;
    p.c.handle_timeout(p.now).unwrap();
    assert!(!p.c.take_output().is_empty(), "no probe");
    p.now = progress + s * 2;
    p.c.handle_timeout(p.now).unwrap();
    p.events();
    let suspects = |p: &Pair| {
        p.events_c
            .iter()
            .filter(|e| matches!(e, Event::PathSuspect))
            .count()
    };
    assert_eq!(suspects(&p), 0, "suspected while the server's ACKs are due");
    // The server's next ACK was due a second after the last plus S: none
    // came, so now the path is suspect.
    let until = progress + Duration::from_secs(1) + s;
    assert_eq!(p.c.poll_timeout(), Some(until));
    p.now = until;
    p.c.handle_timeout(p.now).unwrap();
    p.events();
    assert_eq!(suspects(&p), 1);
}
