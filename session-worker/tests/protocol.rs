//! What stock clients cannot show: signal requests, exit-signal contents,
//! backpressure when the client stops reading, refusals of channel types,
//! requests and sessions beyond MaxSessions. Driven by ressh-proto's client.

mod common;

use std::time::{Duration, Instant};

use common::{default_policy, rss_kib, Harness, ProtoClient};
use ressh_proto::error::reason;
use ressh_proto::msg::{open_failure, ChannelKind, ChannelReq};
use ressh_proto::Event;

const T: Duration = Duration::from_secs(30);

/// Opens a session channel and runs `cmd`; returns the channel id.
fn exec(c: &mut ProtoClient, cmd: &str) -> u32 {
    let id = c.conn.open_channel(ChannelKind::Session).unwrap();
    c.until(
        T,
        |_, ev| matches!(ev, Event::ChannelOpened { id: i } if i == id),
    );
    c.conn
        .channel_request(id, ChannelReq::Exec(cmd.as_bytes().to_vec()), true)
        .unwrap();
    c.until(T, |_, ev| match ev {
        Event::ChannelReply { success, .. } => {
            assert!(success, "exec refused");
            true
        }
        _ => false,
    });
    id
}

#[derive(Default, Debug)]
struct Outcome {
    stdout: Vec<u8>,
    status: Option<u32>,
    signal: Option<(String, bool)>,
    eof_before_close: bool,
}

/// Reads the channel to its close, consuming as it goes; `on_data` may
/// act on the connection after each piece of stdout.
fn collect(
    c: &mut ProtoClient,
    id: u32,
    mut on_data: impl FnMut(&mut ressh_proto::Connection, &[u8]),
) -> Outcome {
    let mut o = Outcome::default();
    let mut eof = false;
    c.until(T, |conn, ev| {
        match ev {
            Event::Data { id: i, data } if i == id => {
                o.stdout.extend_from_slice(&data);
                conn.consume(id, data.len()).unwrap();
                on_data(conn, &o.stdout);
            }
            Event::ChannelRequest {
                request: ChannelReq::ExitStatus(s),
                ..
            } => {
                assert!(!eof, "exit-status comes before EOF");
                o.status = Some(s);
            }
            Event::ChannelRequest {
                request:
                    ChannelReq::ExitSignal {
                        signal,
                        core_dumped,
                        ..
                    },
                ..
            } => o.signal = Some((signal, core_dumped)),
            Event::Eof { id: i } if i == id => {
                eof = true;
                conn.send_eof(id).unwrap();
            }
            Event::Closed { id: i } if i == id => {
                o.eof_before_close = eof;
                return true;
            }
            _ => {}
        }
        false
    });
    o
}

#[test]
fn signal_request_reaches_the_process_group() {
    let h = Harness::start("psig", default_policy());
    let mut c = ProtoClient::connect(&h);
    let id = exec(
        &mut c,
        "trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 1; done",
    );
    let mut sent = false;
    let o = collect(&mut c, id, |conn, out| {
        if !sent && out.ends_with(b"ready\n") {
            sent = true;
            conn.channel_request(id, ChannelReq::Signal("INT".into()), false)
                .unwrap();
        }
    });
    assert_eq!(o.stdout, b"ready\ngot-int\n");
    assert_eq!(o.status, Some(7));
    assert!(o.eof_before_close);

    // A command killed by a signal: exit-signal with the name sans "SIG".
    let id = exec(&mut c, "echo ready; exec sleep 100");
    let mut sent = false;
    let o = collect(&mut c, id, |conn, out| {
        if !sent && out.ends_with(b"ready\n") {
            sent = true;
            conn.channel_request(id, ChannelReq::Signal("KILL".into()), false)
                .unwrap();
        }
    });
    assert_eq!(o.signal, Some(("KILL".to_string(), false)));
    assert_eq!(o.status, None);
    c.bye();
    h.finish();
}

#[test]
fn a_client_that_stops_reading_stops_the_command() {
    let h = Harness::start("bp", default_policy());
    let mut c = ProtoClient::connect(&h);
    const TOTAL: usize = 64 << 20;
    let id = exec(&mut c, &format!("head -c {TOTAL} /dev/zero"));
    // Take data without ever granting window: at most one window arrives.
    let mut got = 0usize;
    let mut exited = false;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        c.read_once();
        while let Some(ev) = c.conn.poll_event() {
            match ev {
                Event::Data { data, .. } => got += data.len(),
                Event::ChannelRequest { .. } | Event::Eof { .. } => exited = true,
                _ => {}
            }
        }
    }
    let window = ressh_proto::Config::default().window as usize;
    assert!(got <= window, "got {got} bytes with a window of {window}");
    assert!(got > 0);
    assert!(!exited, "the command must be blocked, not finished");
    let pid = *h.worker_pids().last().unwrap();
    let rss = rss_kib(pid);
    assert!(
        rss < 48 * 1024,
        "worker RSS {rss} KiB while the client is stalled"
    );
    // Reading again lets everything through.
    c.conn.consume(id, got).unwrap();
    let o = collect(&mut c, id, |_, _| {});
    assert_eq!(got + o.stdout.len(), TOTAL);
    assert_eq!(o.status, Some(0));
    c.bye();
    h.finish();
}

#[test]
fn refusals_of_channels_and_requests() {
    let mut policy = default_policy();
    policy.max_sessions = 1;
    policy.agent_forwarding = false;
    let h = Harness::start("refuse", policy);
    let mut c = ProtoClient::connect(&h);
    let first = c.conn.open_channel(ChannelKind::Session).unwrap();
    c.until(T, |_, ev| matches!(ev, Event::ChannelOpened { .. }));
    // MaxSessions.
    c.conn.open_channel(ChannelKind::Session).unwrap();
    c.until(T, |_, ev| match ev {
        Event::ChannelOpenFailed { reason, .. } => {
            assert_eq!(reason, open_failure::ADMINISTRATIVELY_PROHIBITED);
            true
        }
        _ => false,
    });
    // Unknown channel types.
    c.conn
        .open_channel(ChannelKind::Other {
            name: "nonsense@example.org".into(),
            data: vec![],
        })
        .unwrap();
    c.until(T, |_, ev| match ev {
        Event::ChannelOpenFailed { reason, .. } => {
            assert_eq!(reason, open_failure::UNKNOWN_CHANNEL_TYPE);
            true
        }
        _ => false,
    });
    // Requests that must fail, each answered in order.
    let refused = [
        ChannelReq::X11Req {
            single_connection: false,
            auth_protocol: "MIT-MAGIC-COOKIE-1".into(),
            auth_cookie: "00".into(),
            screen: 0,
        },
        ChannelReq::AuthAgentReq,
        ChannelReq::Env {
            name: "NOT_ACCEPTED".into(),
            value: b"x".to_vec(),
        },
        ChannelReq::Eow,
        ChannelReq::Other {
            name: "nonsense@example.org".into(),
            data: vec![],
        },
        ChannelReq::Subsystem("nosuch".into()),
        ChannelReq::Signal("INT".into()),
    ];
    let n = refused.len();
    for r in refused {
        c.conn.channel_request(first, r, true).unwrap();
    }
    c.conn
        .channel_request(
            first,
            ChannelReq::Env {
                name: "LC_TEST".into(),
                value: b"1".to_vec(),
            },
            true,
        )
        .unwrap();
    let mut replies = Vec::new();
    c.until(T, |_, ev| {
        if let Event::ChannelReply { success, .. } = ev {
            replies.push(success);
        }
        replies.len() == n + 1
    });
    let mut want = vec![false; n];
    want.push(true);
    assert_eq!(replies, want);
    // The accepted variable reaches the command; a second command is refused.
    c.conn
        .channel_request(first, ChannelReq::Exec(b"echo $LC_TEST".to_vec()), true)
        .unwrap();
    c.conn
        .channel_request(first, ChannelReq::Shell, true)
        .unwrap();
    let mut replies = Vec::new();
    c.until(T, |_, ev| {
        if let Event::ChannelReply { success, .. } = ev {
            replies.push(success);
        }
        replies.len() == 2
    });
    assert_eq!(replies, [true, false]);
    let o = collect(&mut c, first, |_, _| {});
    assert_eq!(o.stdout, b"1\n");
    c.bye();
    h.finish();
}

#[test]
fn remote_forward_allocation_refused_channel_and_cancel() {
    use ressh_proto::msg::GlobalReq;
    let h = Harness::start("cancel", default_policy());
    let mut c = ProtoClient::connect(&h);
    c.conn
        .global_request(
            GlobalReq::TcpipForward {
                address: "localhost".into(),
                port: 0,
            },
            true,
        )
        .unwrap();
    let mut port = 0u32;
    c.until(T, |_, ev| match ev {
        Event::GlobalReply { success, data } => {
            assert!(success);
            port = ressh_proto::msg::RequestSuccess(data).bound_port().unwrap();
            true
        }
        _ => false,
    });
    assert!(port > 0 && port <= 65535);
    // A connection to the listener becomes a forwarded-tcpip channel; the
    // client refuses it and the worker closes the connection.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
    let mut originator = 0;
    c.until(T, |conn, ev| match ev {
        Event::ChannelOpenRequest {
            id,
            kind:
                ChannelKind::ForwardedTcpip {
                    address,
                    port: p,
                    originator: o,
                    originator_port,
                },
        } => {
            assert_eq!(
                (address.as_str(), p, o.as_str()),
                ("localhost", port, "127.0.0.1")
            );
            originator = originator_port;
            conn.reject_channel(id, open_failure::CONNECT_FAILED, "no")
                .unwrap();
            true
        }
        _ => false,
    });
    assert_eq!(originator, s.local_addr().unwrap().port() as u32);
    s.set_read_timeout(Some(T)).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(std::io::Read::read(&mut s, &mut b).unwrap_or(0), 0);
    // Cancelling closes the listener.
    c.conn
        .global_request(
            GlobalReq::CancelTcpipForward {
                address: "localhost".into(),
                port,
            },
            true,
        )
        .unwrap();
    c.until(T, |_, ev| match ev {
        Event::GlobalReply { success, .. } => {
            assert!(success);
            true
        }
        _ => false,
    });
    assert!(std::net::TcpStream::connect(("127.0.0.1", port as u16)).is_err());
    // Cancelling again fails.
    c.conn
        .global_request(
            GlobalReq::CancelTcpipForward {
                address: "localhost".into(),
                port,
            },
            true,
        )
        .unwrap();
    c.until(T, |_, ev| match ev {
        Event::GlobalReply { success, .. } => {
            assert!(!success);
            true
        }
        _ => false,
    });
    c.bye();
    let log = h.finish();
    assert!(log.contains("cancelled"), "{log}");
}

/// A rekey whose signature the monitor refuses ends the connection with a
/// DISCONNECT that says so (key exchange failed), and the worker with it;
/// the monitor's reason is logged.
#[test]
fn a_refused_rekey_signature_ends_the_connection() {
    let h = Harness::start("nosign", default_policy());
    let mut c = ProtoClient::connect(&h);
    h.refuse_signatures();
    c.conn.rekey().unwrap();
    let mut got = None;
    c.until(T, |_, ev| match ev {
        Event::Disconnected {
            reason,
            description,
        } => {
            got = Some((reason, description));
            true
        }
        _ => false,
    });
    assert_eq!(
        got,
        Some((
            reason::KEY_EXCHANGE_FAILED,
            "host key signing failed".to_string()
        ))
    );
    let log = h.finish();
    assert!(
        log.contains("host-key signature from monitor: refused by the test monitor"),
        "{log}"
    );
    assert_eq!(h.signs(), 1);
}
