//! The sans-IO connection: one state machine for both roles.
//!
//! Feed received bytes with [`Connection::handle_input`], send what
//! [`Connection::output`] holds and report it with [`Connection::consume_output`],
//! drain [`Connection::poll_event`], and call [`Connection::handle_timeout`] at
//! [`Connection::poll_timeout`]. Time is always an argument; nothing here
//! reads a clock, touches a socket or spawns a thread.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::cipher::{self, KeyMaterial};
use crate::error::{reason, Error, Result};
use crate::kex::{Negotiated, KEX_ALGS};
use crate::keys::{PrivateKey, PublicKey};
use crate::msg::{self, num, AuthMethod, ChannelKind, ChannelReq, GlobalReq};
use crate::resilience::{self, is_resilient};
use crate::transport::{scan_version, PacketReader, PacketWriter, VersionScan};
use crate::wire::Reader;
use ressh_resilience::suspect::Watch;

/// How long a received resilient message may wait for its acknowledgement.
const ACK_DELAY: Duration = Duration::from_secs(1);

/// Client: unacknowledged payload of ours from which a probe may wait
/// behind our own bytes somewhere on the path (a bulk upload): its answer
/// is then not expected in a round trip, but the server's ACKs of the
/// upload are, every [`ACK_DELAY`] (docs/PROTOCOL.md §4, "Path suspicion").
const BULK_UNACKED: usize = 64 << 10;

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Client,
    Server,
}

/// Tunables of a connection. The algorithm lists are in preference order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub version: String,
    pub kex: Vec<String>,
    /// Client: host key algorithms accepted, in preference order.
    /// Server: ignored (derived from the host keys it has).
    pub host_key_algs: Vec<String>,
    pub ciphers: Vec<String>,
    pub macs: Vec<String>,
    /// Rekey after this many bytes in either direction (RFC 4344 §3.2).
    pub rekey_bytes: u64,
    /// Rekey after this much time.
    pub rekey_interval: Duration,
    /// Receive window and largest packet we accept per channel.
    pub window: u32,
    pub max_packet: u32,
    pub max_channels: usize,
    /// Server: the methods named in USERAUTH_FAILURE when the engine itself
    /// refuses an attempt (a bad signature).
    pub auth_methods: Vec<String>,
    /// Offer the resilience extension (docs/PROTOCOL.md).
    pub resilience: bool,
    /// Bytes of unacknowledged channel data kept before sending stops.
    pub resilience_buffer: u32,
    /// Server: how long a detached session waits, in seconds (advertised).
    pub detach_timeout: u32,
    /// Client: probe the server after this much silence and report
    /// [`Event::ConnectionDead`] after as much again (zero: off); announced
    /// to the server in whole seconds, rounded up (docs/PROTOCOL.md §4).
    pub keepalive: Duration,
    /// Client, keepalives on: a probe unanswered for a few smoothed round
    /// trips, at least `suspect_floor` and at most `suspect_cap` (and never
    /// more than the keepalive interval), raises [`Event::PathSuspect`];
    /// `suspect_cap` None: no suspicion, only the keepalive
    /// (docs/PROTOCOL.md §4, "Path suspicion").
    pub suspect_floor: Duration,
    pub suspect_cap: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: concat!("SSH-2.0-ressh_", env!("CARGO_PKG_VERSION")).to_string(),
            kex: KEX_ALGS.iter().map(|s| s.to_string()).collect(),
            host_key_algs: [
                "ssh-ed25519",
                "ecdsa-sha2-nistp256",
                "rsa-sha2-512",
                "rsa-sha2-256",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            ciphers: cipher::CIPHERS.iter().map(|c| c.name.to_string()).collect(),
            macs: cipher::MACS.iter().map(|m| m.name.to_string()).collect(),
            rekey_bytes: 1 << 30,
            rekey_interval: Duration::from_secs(3600),
            window: 2 * 1024 * 1024,
            max_packet: 32 * 1024,
            max_channels: 1024,
            auth_methods: vec![
                "publickey".into(),
                "password".into(),
                "keyboard-interactive".into(),
            ],
            resilience: true,
            resilience_buffer: 16 * 1024 * 1024,
            detach_timeout: 3600,
            keepalive: Duration::ZERO,
            suspect_floor: Duration::from_millis(500),
            suspect_cap: Some(Duration::MAX),
        }
    }
}

/// Counters of one connection's traffic, for diagnostics (`ressh -v`) and
/// benchmarks. They survive reconnects (they count for the session).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// SSH_MSG_RESILIENCE_ACKs sent, and their bytes on the wire (length,
    /// padding, MAC or tag included).
    pub acks_sent: u64,
    pub ack_wire_bytes: u64,
    pub acks_received: u64,
    /// Channel data bytes (payload of CHANNEL_DATA and EXTENDED_DATA).
    pub data_sent: u64,
    pub data_received: u64,
}

/// A user-auth attempt seen by a server, for the application to judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthAttempt {
    None,
    Password(Zeroizing<String>),
    /// A public key offered without a signature: answer with
    /// [`Connection::auth_pk_ok`] if it would be accepted.
    PublicKeyQuery {
        algorithm: String,
        key: PublicKey,
    },
    /// A public key whose signature over the session has been verified.
    /// The signature is kept so a privileged monitor can verify it again.
    PublicKey {
        algorithm: String,
        key: PublicKey,
        signature: Vec<u8>,
    },
    KeyboardInteractive {
        submethods: String,
    },
    Other(String),
}

/// Something that happened on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Client: the server's host key, verified to have signed the exchange.
    /// The key exchange waits until [`Connection::accept_host_key`] is called.
    HostKey(PublicKey),
    /// Server: sign this exchange hash with a host key. The key exchange
    /// waits until [`Connection::host_key_signed`] is called.
    SignHostKey(SignRequest),
    /// A key exchange finished (`first` for the one that set the session id).
    KexDone {
        first: bool,
        algorithms: Negotiated,
    },
    /// Client: the server accepted the user-auth service; auth may begin.
    AuthReady,
    /// Client: a banner to show the user.
    Banner(String),
    /// Client: auth succeeded; the connection protocol is open.
    AuthSuccess,
    /// Client: the attempt failed; methods that can continue.
    AuthFailure {
        methods: Vec<String>,
        partial: bool,
    },
    /// Client: the server would accept this public key.
    AuthPkOk,
    /// Client: keyboard-interactive prompts (text, echo).
    AuthInfoRequest {
        name: String,
        instruction: String,
        prompts: Vec<(String, bool)>,
    },
    /// Client: the server wants a password change (treated as a failure).
    AuthPasswordChange {
        prompt: String,
    },
    /// Server: a user-auth request to accept or reject.
    AuthRequest {
        user: String,
        attempt: AuthAttempt,
    },
    /// Server: responses to keyboard-interactive prompts.
    AuthInfoResponse(Vec<Zeroizing<String>>),
    /// The peer asks to open a channel; answer with accept/reject_channel.
    ChannelOpenRequest {
        id: u32,
        kind: ChannelKind,
    },
    /// A channel we opened was confirmed.
    ChannelOpened {
        id: u32,
    },
    /// A channel we opened was refused.
    ChannelOpenFailed {
        id: u32,
        reason: u32,
        description: String,
    },
    /// A channel request; if `want_reply`, answer with channel_reply.
    ChannelRequest {
        id: u32,
        want_reply: bool,
        request: ChannelReq,
    },
    /// The reply to one of our channel requests, in order.
    ChannelReply {
        id: u32,
        success: bool,
    },
    Data {
        id: u32,
        data: Vec<u8>,
    },
    ExtendedData {
        id: u32,
        code: u32,
        data: Vec<u8>,
    },
    /// The peer's window grew: more data can be sent on this channel.
    Writable {
        id: u32,
    },
    Eof {
        id: u32,
    },
    /// The channel is closed on both sides; its id is free.
    Closed {
        id: u32,
    },
    /// A global request; if `want_reply`, answer with global_reply.
    GlobalRequest {
        want_reply: bool,
        request: GlobalReq,
    },
    /// The reply to one of our global requests, in order.
    GlobalReply {
        success: bool,
        data: Vec<u8>,
    },
    /// The peer closed the connection with DISCONNECT.
    Disconnected {
        reason: u32,
        description: String,
    },
    /// Resilience is on for this session (the peer's INFO arrived); the
    /// server's detach timeout in seconds on a client, 0 on a server (see
    /// [`Connection::peer_keepalive`] for what a client announced).
    ResilienceReady {
        detach_timeout: u32,
    },
    /// Client: no packet for twice the keepalive interval: the transport is
    /// dead; reconnect (see [`Connection::reconnect_attempt`]).
    ConnectionDead,
    /// Client: a probe has had no answer for the suspicion timeout
    /// ([`Connection::suspect_timeout`]); the path may be dead. Once per
    /// probe. Trying a new connection beside the old one is cheap; if the
    /// application knows the path still carries bytes it calls
    /// [`Connection::path_alive`] instead.
    PathSuspect,
    /// Server (a new connection): the client asks to resume a session. The
    /// engine stops reading; route the request to the owning session.
    ReconnectRequest(Box<ReconnectRequest>),
    /// A reconnect completed; the session runs on the new transport.
    Reconnected,
}

/// A reconnect request as received on a new connection, with everything
/// the owning session needs to validate it (docs/PROTOCOL.md §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconnectRequest {
    pub request: resilience::Request,
    pub transcript: resilience::Transcript,
    pub negotiated: Negotiated,
    /// Packets the new connection's server side has sent and received.
    pub writer_seq: u32,
    pub reader_seq: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum ChanState {
    /// We sent CHANNEL_OPEN and wait for the answer.
    Opening,
    /// The peer sent CHANNEL_OPEN and the application has not answered.
    PeerOpening,
    Open,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Channel {
    state: ChanState,
    remote_id: u32,
    /// What the peer may still send us.
    local_window: u32,
    /// Consumed by the application and not yet returned by WINDOW_ADJUST.
    consumed: u32,
    /// What we may still send.
    remote_window: u32,
    remote_max_packet: u32,
    sent_eof: bool,
    recv_eof: bool,
    sent_close: bool,
    recv_close: bool,
    /// Our requests awaiting a reply.
    replies_owed_to_us: u32,
    /// Peer requests with want_reply the application has not answered.
    replies_we_owe: u32,
    blocked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum ClientAuth {
    Idle,
    None,
    Password,
    PublicKeyQuery,
    PublicKey,
    KeyboardInteractive,
}

/// A live SSH connection, client or server.
pub struct Connection {
    role: Role,
    config: Config,
    /// Server: the host keys, whose private halves sign elsewhere
    /// ([`Event::SignHostKey`]); empty on a client.
    host_keys: Vec<PublicKey>,
    local_version: String,
    peer_version: Option<String>,
    preamble_seen: usize,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// Bytes at the front of `outbuf` already sent ([`Self::consume_output`]):
    /// consuming moves this offset instead of shifting the rest of the buffer
    /// (which can hold megabytes) after every socket write.
    out_pos: usize,
    writer: PacketWriter,
    reader: PacketReader,
    kex: Option<KexRun>,
    /// Payloads held back while a key exchange runs, and the bytes of the
    /// resilient ones (they count against the buffer cap).
    deferred: VecDeque<Vec<u8>>,
    deferred_bytes: usize,
    events: VecDeque<Event>,
    session_id: Option<Vec<u8>>,
    host_key: Option<Vec<u8>>,
    strict_kex: bool,
    peer_ext_info: bool,
    server_sig_algs: Option<Vec<String>>,
    last_kex: Instant,
    /// The latest time passed in by the caller.
    now: Instant,
    service_ok: bool,
    authenticated: bool,
    auth_user: Option<String>,
    client_auth: ClientAuth,
    /// Server: a user-auth request waiting for the application's verdict.
    server_auth_pending: bool,
    channels: BTreeMap<u32, Channel>,
    global_replies_owed_to_us: u32,
    global_replies_we_owe: u32,
    no_more_sessions: bool,
    /// Messages sent and received after authentication.
    sent_msgs: u64,
    recv_msgs: u64,
    /// The resilience extension, once negotiated.
    resilience: Option<resilience::State>,
    /// When the oldest unacknowledged resilient message arrived.
    ack_timer: Option<Instant>,
    /// Keepalive: last packet received, probe sent, death reported.
    last_rx: Instant,
    probe_sent: Option<Instant>,
    dead_reported: bool,
    /// Client: round trips and what may make the path suspect.
    watch: Watch,
    closed: bool,
    stats: Stats,
    /// Payload buffers of sent packets, kept for the next ones (see
    /// [`Connection::recycle`]): a bulk transfer then allocates nothing per
    /// packet and writes into memory that is still in the CPU's caches.
    spare: Vec<Vec<u8>>,
    spare_bytes: usize,
    /// Server: reconnect attempts accepted and neither committed nor
    /// aborted (ACKs are held while there are any).
    reconnects_pending: usize,
    /// Server: reconnects committed; an attempt prepared before the last
    /// commit can no longer commit.
    reconnect_epoch: u64,
}

/// Bytes of spare payload buffers a connection keeps at most.
const SPARE_MAX: usize = 2 << 20;

impl Connection {
    /// A client connection; its version line and first KEXINIT are queued.
    pub fn client(config: Config, now: Instant) -> Result<Self> {
        Self::new(Role::Client, config, Vec::new(), now)
    }

    /// A server connection with these host keys: each exchange hash is
    /// signed by the application ([`Event::SignHostKey`]).
    pub fn server(config: Config, host_keys: Vec<PublicKey>, now: Instant) -> Result<Self> {
        if host_keys.is_empty() {
            return Err(Error::Misuse("server without host keys"));
        }
        Self::new(Role::Server, config, host_keys, now)
    }

    fn new(role: Role, config: Config, host_keys: Vec<PublicKey>, now: Instant) -> Result<Self> {
        let mut c = Connection {
            role,
            local_version: config.version.clone(),
            config,
            host_keys,
            peer_version: None,
            preamble_seen: 0,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            out_pos: 0,
            writer: PacketWriter::none(),
            reader: PacketReader::none(),
            kex: None,
            deferred: VecDeque::new(),
            deferred_bytes: 0,
            events: VecDeque::new(),
            session_id: None,
            host_key: None,
            strict_kex: false,
            peer_ext_info: false,
            server_sig_algs: None,
            last_kex: now,
            now,
            service_ok: false,
            authenticated: false,
            auth_user: None,
            client_auth: ClientAuth::Idle,
            server_auth_pending: false,
            channels: BTreeMap::new(),
            global_replies_owed_to_us: 0,
            global_replies_we_owe: 0,
            no_more_sessions: false,
            sent_msgs: 0,
            recv_msgs: 0,
            resilience: None,
            ack_timer: None,
            last_rx: now,
            probe_sent: None,
            dead_reported: false,
            watch: Watch::default(),
            closed: false,
            stats: Stats::default(),
            spare: Vec::new(),
            spare_bytes: 0,
            reconnects_pending: 0,
            reconnect_epoch: 0,
        };
        c.outbuf.extend_from_slice(c.local_version.as_bytes());
        c.outbuf.extend_from_slice(b"\r\n");
        c.start_kex()?;
        Ok(c)
    }

    // ----- I/O surface -------------------------------------------------

    /// Bytes waiting to be sent.
    pub fn output(&self) -> &[u8] {
        &self.outbuf[self.out_pos..]
    }

    /// Marks `n` bytes of [`Self::output`] as sent.
    pub fn consume_output(&mut self, n: usize) {
        self.out_pos = (self.out_pos + n).min(self.outbuf.len());
        if self.out_pos == self.outbuf.len() {
            self.outbuf.clear();
            self.out_pos = 0;
        } else if self.out_pos >= 64 * 1024 && self.out_pos * 2 >= self.outbuf.len() {
            // Compact once the sent part is at least as large as the rest:
            // the bytes moved never exceed the bytes consumed.
            self.outbuf.drain(..self.out_pos);
            self.out_pos = 0;
        }
    }

    /// Takes all pending output at once.
    pub fn take_output(&mut self) -> Vec<u8> {
        self.outbuf.drain(..std::mem::take(&mut self.out_pos));
        std::mem::take(&mut self.outbuf)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn peer_version(&self) -> Option<&str> {
        self.peer_version.as_deref()
    }

    pub fn session_id(&self) -> Option<&[u8]> {
        self.session_id.as_deref()
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The user the server authenticated (or the client authenticates as).
    pub fn user(&self) -> Option<&str> {
        self.auth_user.as_deref()
    }

    /// Client: the algorithms the server accepts for user signatures, if it said.
    pub fn server_sig_algs(&self) -> Option<&[String]> {
        self.server_sig_algs.as_deref()
    }

    /// Messages sent and received since authentication.
    pub fn message_counts(&self) -> (u64, u64) {
        (self.sent_msgs, self.recv_msgs)
    }

    /// Traffic counters (ACKs, channel data).
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Feeds received bytes. On a protocol error the connection queues a
    /// DISCONNECT naming the reason, closes, and returns the error.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        self.now = now;
        if !data.is_empty() {
            self.last_rx = now;
            self.probe_sent = None;
            self.watch.heard();
        }
        self.inbuf.extend_from_slice(data);
        let r = self.process(now);
        self.fail_on_err(r)
    }

    /// The next moment [`Self::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed || self.session_id.is_none() {
            return None;
        }
        let mut t: Option<Instant> = None;
        let mut at = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        if self.kex.is_none() {
            at(self.last_kex + self.config.rekey_interval);
        }
        if let Some(a) = self.ack_timer {
            at(a + ACK_DELAY);
        }
        if self.keepalive_on() && !self.dead_reported {
            let s = self.suspect_timeout();
            match self.probe_sent {
                Some(p) => {
                    at(p + self.config.keepalive);
                    if let Some(x) = self.watch.suspect_due() {
                        at(x);
                    }
                }
                None => {
                    at(self.last_rx + self.config.keepalive);
                    if let Some(x) = s.and_then(|s| self.watch.probe_due(s)) {
                        at(x);
                    }
                }
            }
        }
        t
    }

    fn keepalive_on(&self) -> bool {
        self.role == Role::Client
            && !self.config.keepalive.is_zero()
            && self.resilience.as_ref().is_some_and(|r| r.active)
    }

    /// Client: how long a probe may go unanswered before the path is
    /// suspect ([`Event::PathSuspect`]): a few smoothed round trips within
    /// the configured floor and cap, never above the keepalive interval.
    /// None without keepalives or with suspicion off.
    pub fn suspect_timeout(&self) -> Option<Duration> {
        let cap = self.config.suspect_cap?.min(self.config.keepalive);
        self.keepalive_on()
            .then(|| self.watch.rtt.timeout(self.config.suspect_floor, cap))
    }

    /// Client: the smoothed round-trip time measured from want-reply ACKs
    /// on the current connection, if any was measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.watch.rtt.srtt()
    }

    /// Client, after [`Event::PathSuspect`]: the application knows the
    /// path still carries bytes (the kernel received TCP acknowledgements
    /// for data in flight: our probe waits behind a bulk upload). Suspect
    /// again only after another suspicion timeout; the keepalive deadline
    /// stays.
    pub fn path_alive(&mut self, now: Instant) {
        if let (Some(_), Some(s)) = (self.probe_sent, self.suspect_timeout()) {
            self.watch.rearm(now + s);
        }
    }

    /// Timers of the resilience extension: delayed ACKs, keepalives and
    /// path suspicion.
    fn resilience_timers(&mut self, now: Instant) -> Result<()> {
        if self.ack_timer.is_some_and(|a| now >= a + ACK_DELAY) {
            self.send_ack(false)?;
        }
        if self.keepalive_on() && !self.dead_reported {
            let s = self.suspect_timeout();
            match self.probe_sent {
                None => {
                    let idle = now.saturating_duration_since(self.last_rx) >= self.config.keepalive;
                    let due = s
                        .and_then(|s| self.watch.probe_due(s))
                        .is_some_and(|t| now >= t);
                    if idle || due {
                        self.send_probe(now)?;
                    }
                }
                Some(p) if now.saturating_duration_since(p) >= self.config.keepalive => {
                    self.dead_reported = true;
                    self.events.push_back(Event::ConnectionDead);
                }
                Some(_) => {
                    if self.watch.take_suspicion(now) {
                        // During an upload the server's ACKs of it are the
                        // sign of life: suspect only once they stop.
                        let bulk = self
                            .resilience
                            .as_ref()
                            .is_some_and(|r| r.buffer.bytes() >= BULK_UNACKED);
                        let until = s
                            .zip(self.watch.progress_at())
                            .map(|(s, p)| p + ACK_DELAY + s);
                        match until {
                            Some(u) if bulk && now < u => self.watch.rearm(u),
                            _ => self.events.push_back(Event::PathSuspect),
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Client: a keepalive probe (an ACK with want reply). Unanswered for
    /// the suspicion timeout it makes the path suspect, for the keepalive
    /// interval dead.
    fn send_probe(&mut self, now: Instant) -> Result<()> {
        self.probe_sent = Some(now);
        if self.send_ack(true)? {
            let s = self.suspect_timeout();
            self.watch.want_reply_sent(now, s);
        }
        Ok(())
    }

    /// Sends SSH_MSG_RESILIENCE_ACK with our receive count; false when
    /// ACKs are held (a reconnect is being prepared). A client asks for a
    /// reply when its round-trip measurement is missing or old.
    fn send_ack(&mut self, mut want_reply: bool) -> Result<bool> {
        let now = self.now;
        let measure = self.role == Role::Client
            && self.suspect_timeout().is_some()
            && self.watch.wants_rtt(now);
        let Some(r) = self.resilience.as_mut() else {
            return Ok(false);
        };
        if r.hold_acks {
            self.ack_timer = None;
            return Ok(false);
        }
        let count = r.recv;
        r.acked_recv = count;
        r.unacked_bytes = 0;
        self.ack_timer = None;
        if measure && !want_reply {
            want_reply = true;
            self.watch.want_reply_sent(now, None);
        }
        self.send(resilience::encode_ack(count, want_reply))?;
        Ok(true)
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        self.now = now;
        let r = if self.kex.is_none()
            && self.session_id.is_some()
            && now.saturating_duration_since(self.last_kex) >= self.config.rekey_interval
        {
            self.start_kex()
        } else {
            Ok(())
        };
        let r = r.and_then(|_| self.resilience_timers(now));
        self.fail_on_err(r)
    }

    /// Starts a key exchange now (a rekey) unless one is running.
    pub fn rekey(&mut self) -> Result<()> {
        self.check_open()?;
        if self.kex.is_some() || self.session_id.is_none() {
            return Ok(());
        }
        let r = self.start_kex();
        self.fail_on_err(r)
    }

    /// Sends DISCONNECT and closes.
    pub fn disconnect(&mut self, reason_code: u32, description: &str) {
        if self.closed {
            return;
        }
        if self.peer_version.is_some() {
            let m = msg::Disconnect {
                reason: reason_code,
                description: description.to_string(),
                language: String::new(),
            };
            let _ = self.writer.write(&m.encode(), &mut self.outbuf);
        }
        self.closed = true;
    }

    fn fail_on_err(&mut self, r: Result<()>) -> Result<()> {
        if let Err(e) = &r {
            if matches!(e, Error::Misuse(_)) {
                // The caller's mistake: the connection stays as it was.
                return r;
            }
            if matches!(e, Error::PeerDisconnected { .. } | Error::Closed) {
            } else if self.in_reconnect_exchange() && !self.closed {
                // During a reconnect the answer is RECONNECT_FAILURE, not
                // DISCONNECT (docs/PROTOCOL.md §7): a request that cannot be
                // parsed cannot be authenticated.
                let f = resilience::encode_failure(
                    resilience::failure::AUTHENTICATION_FAILED,
                    &e.to_string(),
                );
                let _ = self.writer.write(&f, &mut self.outbuf);
            } else {
                self.disconnect(e.disconnect_reason(), &e.to_string());
            }
            self.closed = true;
        }
        r
    }

    /// Server: the peer's KEXINIT chose the reconnect exchange and its
    /// request has not been handed on yet.
    fn in_reconnect_exchange(&self) -> bool {
        self.role == Role::Server
            && self.peer_version.is_some()
            && self
                .kex
                .as_ref()
                .is_some_and(KexRun::awaits_reconnect_request)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn process(&mut self, now: Instant) -> Result<()> {
        let mut off = 0;
        let r = self.process_inner(&mut off, now);
        self.inbuf.drain(..off);
        r
    }

    fn process_inner(&mut self, off: &mut usize, now: Instant) -> Result<()> {
        if self.peer_version.is_none() {
            let allow = self.role == Role::Client;
            match scan_version(&self.inbuf, allow, &mut self.preamble_seen)? {
                VersionScan::More => {
                    // Discard complete preamble lines so the buffer stays bounded.
                    if let Some(p) = self.inbuf.iter().rposition(|&b| b == b'\n') {
                        *off = p + 1;
                    }
                    return Ok(());
                }
                VersionScan::Done(v, n) => {
                    self.peer_version = Some(v);
                    *off = n;
                }
            }
        }
        loop {
            if self.closed {
                return Ok(());
            }
            // A client waiting for the host-key verdict reads nothing more,
            // nor does a server waiting for a signature or one that handed a
            // reconnect request on.
            if self.kex.as_ref().is_some_and(KexRun::pauses_input) {
                return Ok(());
            }
            // Decrypted where it lies: the payload is copied out once.
            let Some((range, n)) = self.reader.read_in_place(&mut self.inbuf[*off..])? else {
                return Ok(());
            };
            let plain = &self.inbuf[*off + range.start..*off + range.end];
            if plain[0] == num::CHANNEL_DATA && self.authenticated {
                let (id, data) = msg::decode_channel_data(plain)?;
                let (len, dlen) = (plain.len(), data.len());
                // The data ends the payload (decode checked its length).
                let at = *off + range.end - dlen;
                let mut data = self.payload_buf(dlen);
                data.extend_from_slice(&self.inbuf[at..at + dlen]);
                *off += n;
                if self.reader.seq == 0 && !self.strict_kex && self.session_id.is_some() {
                    return Err(Error::Protocol("incoming sequence number wrapped"));
                }
                self.dispatch_channel_data(id, data, len, now)?;
                self.maybe_rekey()?;
                continue;
            }
            let payload = plain.to_vec();
            *off += n;
            if self.reader.seq == 0 && !self.strict_kex && self.session_id.is_some() {
                // Sequence numbers wrapped without a rekey: refuse, as OpenSSH.
                return Err(Error::Protocol("incoming sequence number wrapped"));
            }
            self.dispatch(payload, now)?;
            self.maybe_rekey()?;
        }
    }

    fn maybe_rekey(&mut self) -> Result<()> {
        if self.kex.is_none()
            && self.session_id.is_some()
            && (self.writer.bytes > self.config.rekey_bytes
                || self.reader.bytes > self.config.rekey_bytes
                || self.writer.packets > 1 << 31
                || self.reader.packets > 1 << 31)
        {
            self.start_kex()?;
        }
        Ok(())
    }

    // ----- sending -----------------------------------------------------

    /// Sends a payload now, or holds it while a key exchange runs.
    fn send(&mut self, payload: Vec<u8>) -> Result<()> {
        let n = payload[0];
        let transport = (1..=49).contains(&n);
        self.check_bound(n, payload.len(), transport)?;
        if self.kex.is_some() && !transport {
            if is_resilient(n) {
                self.deferred_bytes += payload.len();
            }
            self.deferred.push_back(payload);
            return Ok(());
        }
        self.write_payload(payload)?;
        self.maybe_rekey()
    }

    /// Refuses to queue a message past the hard bound on what waits for the
    /// peer (issue 13, hole 5): with resilience, the unacknowledged
    /// resilient messages and bytes ([`resilience::MAX_MESSAGES`], the cap
    /// plus [`resilience::MAX_BYTES_ABOVE_CAP`]); always, what is held back
    /// during a key exchange. Channel data stops well before (see
    /// [`resilience::State::room`]); only a peer that asks for replies and
    /// never acknowledges them gets here, and the connection ends with
    /// DISCONNECT.
    fn check_bound(&mut self, n: u8, len: usize, transport: bool) -> Result<()> {
        let deferring = self.kex.is_some() && !transport;
        let (msgs, bytes) = match deferring {
            true => (self.deferred.len() + 1, self.deferred_bytes + len),
            false => (usize::from(is_resilient(n)), len),
        };
        let ok = match self.resilience.as_ref().filter(|r| r.active) {
            Some(r) if is_resilient(n) || deferring => r.within_bound(msgs, bytes),
            Some(_) => true,
            None => !deferring || msgs <= resilience::MAX_MESSAGES,
        };
        if ok {
            return Ok(());
        }
        let e = Error::Protocol("too much unacknowledged: the peer does not acknowledge");
        self.disconnect(e.disconnect_reason(), &e.to_string());
        Err(e)
    }

    /// Writes a payload and records it for counting and retransmission
    /// (the retransmit buffer keeps the payload itself, not a copy).
    fn write_payload(&mut self, payload: Vec<u8>) -> Result<()> {
        self.write_now(&payload)?;
        if self.authenticated && payload[0] >= 80 {
            self.sent_msgs += 1;
        }
        match self.resilience.as_mut() {
            Some(r) if r.active && is_resilient(payload[0]) => {
                r.sent(payload);
                self.watch.resilient_sent(self.now);
            }
            _ => self.recycle(payload),
        }
        Ok(())
    }

    /// Gives back the buffer of an [`Event::Data`] once its bytes are used
    /// (optional): data received later is copied into it rather than into
    /// fresh memory, which keeps bulk transfers free of per-packet
    /// allocations. A buffer not given back is simply freed.
    pub fn reuse_buffer(&mut self, buf: Vec<u8>) {
        self.recycle(buf);
    }

    /// Keeps a payload buffer no longer needed for the next packet.
    fn recycle(&mut self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if cap >= 4096 && self.spare_bytes + cap <= SPARE_MAX {
            buf.clear();
            self.spare_bytes += cap;
            self.spare.push(buf);
        }
    }

    /// An empty buffer for a payload of `len` bytes, recycled if possible.
    fn payload_buf(&mut self, len: usize) -> Vec<u8> {
        let mut b = match self.spare.pop() {
            Some(b) => {
                self.spare_bytes -= b.capacity();
                b
            }
            None => Vec::new(),
        };
        b.reserve(len);
        b
    }

    fn write_now(&mut self, payload: &[u8]) -> Result<()> {
        let before = self.outbuf.len();
        self.writer.write(payload, &mut self.outbuf)?;
        if payload[0] == resilience::MSG_ACK {
            self.stats.acks_sent += 1;
            self.stats.ack_wire_bytes += (self.outbuf.len() - before) as u64;
        }
        if self.writer.seq == 0 && !self.strict_kex {
            return Err(Error::Protocol("outgoing sequence number wrapped"));
        }
        Ok(())
    }

    fn flush_deferred(&mut self) -> Result<()> {
        while let Some(p) = self.deferred.pop_front() {
            self.write_payload(p)?;
        }
        self.deferred_bytes = 0;
        Ok(())
    }

    // ----- dispatch --------------------------------------------------------

    fn dispatch(&mut self, payload: Vec<u8>, now: Instant) -> Result<()> {
        let n = payload[0];
        let seq = self.reader.seq.wrapping_sub(1);
        if !self.count_received(n, payload.len(), now)? {
            return Ok(());
        }
        self.dispatch_inner(n, seq, payload)?;
        self.ack_if_due(n)
    }

    /// CHANNEL_DATA after authentication, decoded where it was decrypted:
    /// the data is copied once, straight into the Vec that
    /// [`Event::Data`] carries (the hot path of bulk transfers).
    fn dispatch_channel_data(
        &mut self,
        id: u32,
        data: Vec<u8>,
        len: usize,
        now: Instant,
    ) -> Result<()> {
        if !self.count_received(num::CHANNEL_DATA, len, now)? {
            return Ok(());
        }
        self.on_data(id, None, data)?;
        self.ack_if_due(num::CHANNEL_DATA)
    }

    /// The bookkeeping of every received message `n` of `len` bytes: state
    /// checks, counts, the resilience receive count. False: a duplicate
    /// after a reconnect, to be dropped.
    fn count_received(&mut self, n: u8, len: usize, now: Instant) -> Result<bool> {
        self.check_allowed_during_kex(n)?;
        if self.authenticated && n >= 80 {
            self.recv_msgs += 1;
        }
        if let Some(r) = self.resilience.as_mut() {
            // Client: the server's first packet after a reconnect proves it
            // committed; adopt the ratcheted secret.
            if let Some(next) = r.next_rs.take() {
                r.rs = next;
            }
            if r.active && is_resilient(n) {
                if r.skip > 0 {
                    // Already received on the old connection.
                    r.skip -= 1;
                    return Ok(false);
                }
                r.recv += 1;
                r.unacked_bytes += len;
                self.ack_timer.get_or_insert(now);
                self.watch.resilient_received(now);
            }
        }
        Ok(true)
    }

    /// After a resilient message: an ACK once enough has arrived.
    fn ack_if_due(&mut self, n: u8) -> Result<()> {
        if is_resilient(n)
            && self
                .resilience
                .as_ref()
                .is_some_and(|r| r.active && r.ack_due_by_volume())
        {
            self.send_ack(false)?;
        }
        Ok(())
    }

    fn dispatch_inner(&mut self, n: u8, seq: u32, payload: Vec<u8>) -> Result<()> {
        match n {
            num::DISCONNECT => {
                let d = msg::Disconnect::decode(&payload)?;
                self.closed = true;
                self.events.push_back(Event::Disconnected {
                    reason: d.reason,
                    description: d.description,
                });
                Ok(())
            }
            num::IGNORE | num::DEBUG | num::UNIMPLEMENTED => Ok(()),
            num::KEXINIT => self.on_kexinit(payload),
            num::NEWKEYS => self.on_newkeys(&payload),
            30..=49 => self.on_kex_message(n, payload),
            num::SERVICE_REQUEST if self.role == Role::Server => self.on_service_request(&payload),
            num::SERVICE_ACCEPT if self.role == Role::Client => {
                let mut r = Reader::new(&payload[1..]);
                let name = r.string()?;
                if name != b"ssh-userauth" || self.service_ok {
                    return Err(Error::Protocol("unexpected SERVICE_ACCEPT"));
                }
                self.service_ok = true;
                self.events.push_back(Event::AuthReady);
                Ok(())
            }
            num::EXT_INFO => {
                let e = msg::ExtInfo::decode(&payload)?;
                if self.role == Role::Client {
                    for (name, value) in e.0 {
                        if name == "server-sig-algs" {
                            let v = String::from_utf8_lossy(&value).to_string();
                            self.server_sig_algs =
                                Some(v.split(',').map(|s| s.to_string()).collect());
                        }
                    }
                }
                Ok(())
            }
            num::PING if self.session_id.is_some() && self.kex.is_none() => {
                let p = msg::Ping::decode(&payload)?;
                self.send(msg::Pong(p.0).encode())
            }
            num::PONG => Ok(()),
            50..=79 => match self.role {
                Role::Server => self.server_auth_message(n, payload),
                Role::Client => self.client_auth_message(n, payload),
            },
            80..=127 if self.authenticated => self.connection_message(n, payload),
            80..=127 => Err(Error::Protocol("connection message before authentication")),
            resilience::MSG_ACK if self.resilience.as_ref().is_some_and(|r| r.active) => {
                let (count, want_reply) = resilience::decode_ack(&payload)?;
                self.stats.acks_received += 1;
                self.watch.ack_received(self.now, self.config.keepalive);
                let mut done = Vec::new();
                let freed = self
                    .resilience
                    .as_mut()
                    .expect("resilience")
                    .acked_with(count, |p| done.push(p))?;
                for p in done {
                    self.recycle(p);
                }
                if freed {
                    self.watch.progress(self.now);
                    self.wake_blocked_channels();
                }
                if want_reply {
                    self.send_ack(false)?;
                }
                Ok(())
            }
            resilience::MSG_INFO if self.resilience.as_ref().is_some_and(|r| r.active) => {
                let (secs, cap) = resilience::decode_info(&payload)?;
                let r = self.resilience.as_mut().expect("resilience");
                if r.peer_cap.is_some() {
                    return Err(Error::Protocol("second RESILIENCE_INFO"));
                }
                r.peer_cap = Some(cap.max(4096));
                // The first field is the server's detach timeout, or the
                // client's keepalive interval (0: none announced).
                let detach_timeout = match self.role {
                    Role::Client => {
                        r.peer_detach = Some(secs);
                        // Measure the round trip at once: it sets the
                        // suspicion timeout.
                        if self.suspect_timeout().is_some() {
                            self.send_ack(true)?;
                            self.watch.want_reply_sent(self.now, None);
                        }
                        secs
                    }
                    Role::Server => {
                        r.peer_keepalive = (secs > 0).then_some(secs);
                        0
                    }
                };
                self.events
                    .push_back(Event::ResilienceReady { detach_timeout });
                Ok(())
            }
            resilience::MSG_RECONNECT_REQUEST
                if self.kex.as_ref().is_some_and(KexRun::is_reconnect) =>
            {
                self.on_reconnect_request(&payload)
            }
            _ => {
                let mut p = vec![num::UNIMPLEMENTED];
                crate::wire::Put::put_u32(&mut p, seq);
                self.send(p)
            }
        }
    }

    // ----- user authentication ------------------------------------------

    fn on_service_request(&mut self, payload: &[u8]) -> Result<()> {
        let mut r = Reader::new(&payload[1..]);
        let name = r.string()?;
        r.finish()?;
        if name != b"ssh-userauth" || self.service_ok {
            self.disconnect(reason::SERVICE_NOT_AVAILABLE, "service not available");
            return Err(Error::Protocol("unknown service requested"));
        }
        self.service_ok = true;
        let mut p = vec![num::SERVICE_ACCEPT];
        crate::wire::Put::put_str(&mut p, "ssh-userauth");
        self.send(p)
    }

    fn server_auth_message(&mut self, n: u8, payload: Vec<u8>) -> Result<()> {
        if !self.service_ok {
            return Err(Error::Protocol("user-auth message before service request"));
        }
        if self.authenticated {
            // RFC 4252 §5.1: requests after success are ignored.
            return Ok(());
        }
        match n {
            num::USERAUTH_REQUEST => {
                if self.server_auth_pending {
                    return Err(Error::Protocol(
                        "user-auth request while another is pending",
                    ));
                }
                let req = msg::UserauthRequest::decode(&payload)?;
                if req.service != "ssh-connection" {
                    self.disconnect(reason::SERVICE_NOT_AVAILABLE, "service not available");
                    return Err(Error::Protocol("user-auth for an unknown service"));
                }
                if let Some(u) = &self.auth_user {
                    if u != &req.user {
                        return Err(Error::Protocol("user name changed during authentication"));
                    }
                }
                self.auth_user = Some(req.user.clone());
                let attempt = match req.method {
                    AuthMethod::None => AuthAttempt::None,
                    AuthMethod::Password {
                        password,
                        new_password,
                    } => {
                        if new_password.is_some() {
                            AuthAttempt::Other("password-change".into())
                        } else {
                            AuthAttempt::Password(Zeroizing::new(password.to_string()))
                        }
                    }
                    AuthMethod::PublicKey {
                        algorithm,
                        blob,
                        signature,
                    } => {
                        let Ok(key) = PublicKey::from_blob(&blob) else {
                            return self.auth_failure_auto();
                        };
                        if !key.signature_algorithms().contains(&algorithm.as_str()) {
                            return self.auth_failure_auto();
                        }
                        match signature {
                            None => AuthAttempt::PublicKeyQuery { algorithm, key },
                            Some(sig) => {
                                let sid = self.session_id.clone().expect("session id");
                                let data = msg::publickey_signed_data(
                                    &sid,
                                    &req.user,
                                    &req.service,
                                    &algorithm,
                                    &blob,
                                );
                                match key.verify(&data, &sig) {
                                    Ok(a) if a == algorithm => AuthAttempt::PublicKey {
                                        algorithm,
                                        key,
                                        signature: sig,
                                    },
                                    _ => return self.auth_failure_auto(),
                                }
                            }
                        }
                    }
                    AuthMethod::KeyboardInteractive { submethods, .. } => {
                        AuthAttempt::KeyboardInteractive { submethods }
                    }
                    AuthMethod::Other { name, .. } => AuthAttempt::Other(name),
                };
                self.server_auth_pending = true;
                self.events.push_back(Event::AuthRequest {
                    user: req.user,
                    attempt,
                });
                Ok(())
            }
            num::USERAUTH_INFO_RESPONSE => {
                let r = msg::UserauthInfoResponse::decode(&payload)?;
                let responses = r
                    .responses
                    .into_iter()
                    .map(|s| Zeroizing::new(s.to_string()))
                    .collect();
                self.events.push_back(Event::AuthInfoResponse(responses));
                Ok(())
            }
            _ => Err(Error::Protocol("unexpected user-auth message")),
        }
    }

    fn auth_failure_auto(&mut self) -> Result<()> {
        let methods = self.config.auth_methods.clone();
        self.send(
            msg::UserauthFailure {
                methods,
                partial_success: false,
            }
            .encode(),
        )
    }

    fn expect_server_auth(&mut self) -> Result<()> {
        self.check_open()?;
        if self.role != Role::Server || !self.server_auth_pending {
            return Err(Error::Protocol("no user-auth request pending"));
        }
        Ok(())
    }

    /// Server: accepts the pending user-auth request.
    pub fn auth_accept(&mut self) -> Result<()> {
        self.expect_server_auth()?;
        self.server_auth_pending = false;
        self.authenticated = true;
        self.send(vec![num::USERAUTH_SUCCESS])?;
        self.activate_resilience()
    }

    /// Starts counting resilient messages and announces our parameters.
    fn activate_resilience(&mut self) -> Result<()> {
        // A client announces its keepalive interval in whole seconds,
        // rounded up, so that the server never expects it sooner than it
        // comes; 0 when it sends no keepalives.
        let k = self.config.keepalive;
        let keepalive =
            u32::try_from(k.as_secs() + u64::from(k.subsec_nanos() > 0)).unwrap_or(u32::MAX);
        let Some(r) = self.resilience.as_mut() else {
            return Ok(());
        };
        r.active = true;
        let secs = match self.role {
            Role::Server => r.local_detach,
            Role::Client => keepalive,
        };
        let info = resilience::encode_info(secs, r.local_cap);
        self.send(info)
    }

    /// Server: rejects the pending request, naming the methods that can continue.
    pub fn auth_reject(&mut self, methods: &[&str], partial: bool) -> Result<()> {
        self.expect_server_auth()?;
        self.server_auth_pending = false;
        let methods = methods.iter().map(|s| s.to_string()).collect();
        self.send(
            msg::UserauthFailure {
                methods,
                partial_success: partial,
            }
            .encode(),
        )
    }

    /// Server: the queried public key would be accepted (SSH_MSG_USERAUTH_PK_OK).
    pub fn auth_pk_ok(&mut self, algorithm: &str, key: &PublicKey) -> Result<()> {
        self.expect_server_auth()?;
        self.server_auth_pending = false;
        self.send(
            msg::UserauthPkOk {
                algorithm: algorithm.to_string(),
                blob: key.to_blob(),
            }
            .encode(),
        )
    }

    /// Server: sends keyboard-interactive prompts for the pending request;
    /// the answers arrive as [`Event::AuthInfoResponse`], after which the
    /// request is pending again for accept/reject/another info request.
    pub fn auth_info_request(
        &mut self,
        name: &str,
        instruction: &str,
        prompts: &[(&str, bool)],
    ) -> Result<()> {
        self.expect_server_auth()?;
        let m = msg::UserauthInfoRequest {
            name: name.to_string(),
            instruction: instruction.to_string(),
            language: String::new(),
            prompts: prompts.iter().map(|(p, e)| (p.to_string(), *e)).collect(),
        };
        self.send(m.encode())
    }

    /// Server: a banner shown to the client before authentication ends.
    pub fn auth_banner(&mut self, text: &str) -> Result<()> {
        self.check_open()?;
        if self.authenticated {
            return Ok(());
        }
        self.send(
            msg::UserauthBanner {
                message: text.to_string(),
                language: String::new(),
            }
            .encode(),
        )
    }

    fn client_auth_message(&mut self, n: u8, payload: Vec<u8>) -> Result<()> {
        match n {
            num::USERAUTH_BANNER => {
                let b = msg::UserauthBanner::decode(&payload)?;
                if !self.authenticated {
                    self.events.push_back(Event::Banner(b.message));
                }
                Ok(())
            }
            num::USERAUTH_SUCCESS if self.client_auth != ClientAuth::Idle => {
                if payload.len() != 1 {
                    return Err(Error::TrailingData);
                }
                self.client_auth = ClientAuth::Idle;
                self.authenticated = true;
                self.events.push_back(Event::AuthSuccess);
                self.activate_resilience()
            }
            num::USERAUTH_FAILURE if self.client_auth != ClientAuth::Idle => {
                let f = msg::UserauthFailure::decode(&payload)?;
                self.client_auth = ClientAuth::Idle;
                self.events.push_back(Event::AuthFailure {
                    methods: f.methods,
                    partial: f.partial_success,
                });
                Ok(())
            }
            60 => match self.client_auth {
                ClientAuth::PublicKeyQuery => {
                    msg::UserauthPkOk::decode(&payload)?;
                    self.client_auth = ClientAuth::Idle;
                    self.events.push_back(Event::AuthPkOk);
                    Ok(())
                }
                ClientAuth::KeyboardInteractive => {
                    let r = msg::UserauthInfoRequest::decode(&payload)?;
                    self.events.push_back(Event::AuthInfoRequest {
                        name: r.name,
                        instruction: r.instruction,
                        prompts: r.prompts,
                    });
                    Ok(())
                }
                ClientAuth::Password => {
                    let prompt = msg::UserauthPasswdChangereq::decode(&payload)?.prompt;
                    self.client_auth = ClientAuth::Idle;
                    self.events.push_back(Event::AuthPasswordChange { prompt });
                    Ok(())
                }
                _ => Err(Error::Protocol("unexpected user-auth message 60")),
            },
            _ => Err(Error::Protocol("unexpected user-auth message")),
        }
    }

    fn client_auth_send(&mut self, user: &str, method: AuthMethod, kind: ClientAuth) -> Result<()> {
        self.check_open()?;
        if self.role != Role::Client || self.authenticated || !self.service_ok {
            return Err(Error::Protocol("user authentication not possible now"));
        }
        if self.client_auth != ClientAuth::Idle
            && self.client_auth != ClientAuth::KeyboardInteractive
        {
            return Err(Error::Protocol("a user-auth request is already pending"));
        }
        self.auth_user = Some(user.to_string());
        self.client_auth = kind;
        let m = msg::UserauthRequest {
            user: user.to_string(),
            service: "ssh-connection".to_string(),
            method,
        };
        self.send(m.encode())
    }

    /// Client: the "none" method (learns the methods the server allows).
    pub fn auth_none(&mut self, user: &str) -> Result<()> {
        self.client_auth_send(user, AuthMethod::None, ClientAuth::None)
    }

    pub fn auth_password(&mut self, user: &str, password: &str) -> Result<()> {
        let method = AuthMethod::Password {
            password: password.to_string().into(),
            new_password: None,
        };
        self.client_auth_send(user, method, ClientAuth::Password)
    }

    /// Client: asks whether the server would accept `key` ([`Event::AuthPkOk`]).
    pub fn auth_publickey_query(
        &mut self,
        user: &str,
        algorithm: &str,
        key: &PublicKey,
    ) -> Result<()> {
        let method = AuthMethod::PublicKey {
            algorithm: algorithm.to_string(),
            blob: key.to_blob(),
            signature: None,
        };
        self.client_auth_send(user, method, ClientAuth::PublicKeyQuery)
    }

    /// Client: the bytes a public-key signature must cover (RFC 4252 §7).
    pub fn publickey_sign_data(
        &self,
        user: &str,
        algorithm: &str,
        key: &PublicKey,
    ) -> Result<Vec<u8>> {
        let sid = self
            .session_id
            .as_ref()
            .ok_or(Error::Protocol("no session id yet"))?;
        Ok(msg::publickey_signed_data(
            sid,
            user,
            "ssh-connection",
            algorithm,
            &key.to_blob(),
        ))
    }

    /// Client: public-key auth with a signature made over
    /// [`Self::publickey_sign_data`] (by a key file or an agent).
    pub fn auth_publickey_signed(
        &mut self,
        user: &str,
        algorithm: &str,
        key: &PublicKey,
        signature: Vec<u8>,
    ) -> Result<()> {
        let method = AuthMethod::PublicKey {
            algorithm: algorithm.to_string(),
            blob: key.to_blob(),
            signature: Some(signature),
        };
        self.client_auth_send(user, method, ClientAuth::PublicKey)
    }

    /// Client: public-key auth with a private key held in memory.
    pub fn auth_publickey(&mut self, user: &str, algorithm: &str, key: &PrivateKey) -> Result<()> {
        let public = key.public_key();
        let data = self.publickey_sign_data(user, algorithm, &public)?;
        let sig = key.sign(algorithm, &data)?;
        self.auth_publickey_signed(user, algorithm, &public, sig)
    }

    pub fn auth_keyboard_interactive(&mut self, user: &str) -> Result<()> {
        let method = AuthMethod::KeyboardInteractive {
            language: String::new(),
            submethods: String::new(),
        };
        self.client_auth_send(user, method, ClientAuth::KeyboardInteractive)
    }

    /// Client: answers to [`Event::AuthInfoRequest`], one per prompt.
    pub fn auth_info_response(&mut self, responses: &[&str]) -> Result<()> {
        self.check_open()?;
        if self.client_auth != ClientAuth::KeyboardInteractive {
            return Err(Error::Protocol("no keyboard-interactive exchange running"));
        }
        let m = msg::UserauthInfoResponse {
            responses: responses.iter().map(|r| r.to_string().into()).collect(),
        };
        self.send(m.encode())
    }
}

// ----- connection protocol (RFC 4254) ------------------------------------

impl Connection {
    fn chan(&mut self, id: u32) -> Result<&mut Channel> {
        self.channels
            .get_mut(&id)
            .ok_or(Error::Protocol("no such channel"))
    }

    fn check_conn(&self) -> Result<()> {
        self.check_open()?;
        if !self.authenticated {
            return Err(Error::Protocol("not authenticated"));
        }
        Ok(())
    }

    fn alloc_id(&self) -> Result<u32> {
        if self.channels.len() >= self.config.max_channels {
            return Err(Error::TooLarge("channel count"));
        }
        Ok((0u32..)
            .find(|i| !self.channels.contains_key(i))
            .expect("free id"))
    }

    fn new_channel(
        &self,
        state: ChanState,
        remote_id: u32,
        remote_window: u32,
        remote_max_packet: u32,
    ) -> Channel {
        Channel {
            state,
            remote_id,
            local_window: self.config.window,
            consumed: 0,
            remote_window,
            remote_max_packet,
            sent_eof: false,
            recv_eof: false,
            sent_close: false,
            recv_close: false,
            replies_owed_to_us: 0,
            replies_we_owe: 0,
            blocked: false,
        }
    }

    /// Opens a channel of `kind`; [`Event::ChannelOpened`] or
    /// [`Event::ChannelOpenFailed`] follows.
    pub fn open_channel(&mut self, kind: ChannelKind) -> Result<u32> {
        self.check_conn()?;
        let id = self.alloc_id()?;
        let ch = self.new_channel(ChanState::Opening, 0, 0, 0);
        self.channels.insert(id, ch);
        let m = msg::ChannelOpen {
            sender: id,
            initial_window: self.config.window,
            max_packet: self.config.max_packet,
            kind,
        };
        self.send(m.encode())?;
        Ok(id)
    }

    /// Accepts a channel the peer asked for in [`Event::ChannelOpenRequest`].
    pub fn accept_channel(&mut self, id: u32) -> Result<()> {
        self.check_conn()?;
        let window = self.config.window;
        let max_packet = self.config.max_packet;
        let ch = self.chan(id)?;
        if ch.state != ChanState::PeerOpening {
            return Err(Error::Protocol("channel not awaiting an answer"));
        }
        ch.state = ChanState::Open;
        let m = msg::ChannelOpenConfirmation {
            recipient: ch.remote_id,
            sender: id,
            initial_window: window,
            max_packet,
            data: Vec::new(),
        };
        self.send(m.encode())
    }

    /// Refuses a channel the peer asked for.
    pub fn reject_channel(&mut self, id: u32, reason_code: u32, description: &str) -> Result<()> {
        self.check_conn()?;
        let ch = self.chan(id)?;
        if ch.state != ChanState::PeerOpening {
            return Err(Error::Protocol("channel not awaiting an answer"));
        }
        let recipient = ch.remote_id;
        self.channels.remove(&id);
        let m = msg::ChannelOpenFailure {
            recipient,
            reason: reason_code,
            description: description.to_string(),
            language: String::new(),
        };
        self.send(m.encode())
    }

    /// Sends a channel request; with `want_reply` an [`Event::ChannelReply`] follows.
    pub fn channel_request(
        &mut self,
        id: u32,
        request: ChannelReq,
        want_reply: bool,
    ) -> Result<()> {
        self.check_conn()?;
        let ch = self.chan(id)?;
        if ch.state != ChanState::Open || ch.sent_close {
            return Err(Error::Protocol("channel not open"));
        }
        if want_reply {
            ch.replies_owed_to_us += 1;
        }
        let m = msg::ChannelRequest {
            recipient: ch.remote_id,
            want_reply,
            request,
        };
        self.send(m.encode())
    }

    /// Answers the oldest unanswered want_reply request of the channel.
    pub fn channel_reply(&mut self, id: u32, success: bool) -> Result<()> {
        self.check_conn()?;
        let ch = self.chan(id)?;
        if ch.replies_we_owe == 0 {
            return Err(Error::Protocol("no channel request awaits a reply"));
        }
        ch.replies_we_owe -= 1;
        let recipient = ch.remote_id;
        if ch.sent_close {
            return Ok(());
        }
        let m = if success {
            msg::ChannelSuccess(recipient).encode()
        } else {
            msg::ChannelFailure(recipient).encode()
        };
        self.send(m)
    }

    /// How many bytes [`Self::send_data`] would take now.
    pub fn send_window(&self, id: u32) -> usize {
        match self.channels.get(&id) {
            Some(ch) if ch.state == ChanState::Open && !ch.sent_eof && !ch.sent_close => {
                (ch.remote_window as usize).min(self.resilience_room())
            }
            _ => 0,
        }
    }

    /// Room under the resilience buffer cap (unlimited without resilience).
    fn resilience_room(&self) -> usize {
        match &self.resilience {
            Some(r) if r.active => r.room().saturating_sub(self.deferred_bytes),
            _ => usize::MAX,
        }
    }

    /// After buffer space was freed: channels that were cut short can send.
    fn wake_blocked_channels(&mut self) {
        for (id, ch) in self.channels.iter_mut() {
            if ch.blocked && ch.remote_window > 0 {
                ch.blocked = false;
                self.events.push_back(Event::Writable { id: *id });
            }
        }
    }

    /// Sends as much of `data` as the peer's window allows; returns how much
    /// was taken. When it is less than offered, [`Event::Writable`] follows
    /// once the peer opens its window.
    pub fn send_data(&mut self, id: u32, data: &[u8]) -> Result<usize> {
        self.send_data_ext(id, None, data)
    }

    /// Like [`Self::send_data`] for extended data (code 1 is stderr).
    pub fn send_extended_data(&mut self, id: u32, code: u32, data: &[u8]) -> Result<usize> {
        self.send_data_ext(id, Some(code), data)
    }

    fn send_data_ext(&mut self, id: u32, code: Option<u32>, data: &[u8]) -> Result<usize> {
        self.check_conn()?;
        let our_max = crate::transport::MAX_PAYLOAD_OUT as u32 - 64;
        let room = self.resilience_room();
        let ch = self.chan(id)?;
        if ch.state != ChanState::Open || ch.sent_eof || ch.sent_close {
            return Err(Error::Protocol("channel not open for data"));
        }
        let n = data.len().min(ch.remote_window as usize).min(room);
        if n < data.len() {
            ch.blocked = true;
        }
        let max = ch.remote_max_packet.clamp(1, our_max) as usize;
        ch.remote_window -= n as u32;
        let recipient = ch.remote_id;
        self.stats.data_sent += n as u64;
        for chunk in data[..n].chunks(max) {
            let mut p = self.payload_buf(chunk.len() + 16);
            match code {
                None => {
                    p.extend_from_slice(&msg::channel_data_header(recipient, chunk.len() as u32));
                }
                Some(c) => {
                    p.push(num::CHANNEL_EXTENDED_DATA);
                    crate::wire::Put::put_u32(&mut p, recipient);
                    crate::wire::Put::put_u32(&mut p, c);
                    crate::wire::Put::put_u32(&mut p, chunk.len() as u32);
                }
            }
            p.extend_from_slice(chunk);
            self.send(p)?;
        }
        Ok(n)
    }

    /// The application has passed on `n` bytes delivered by [`Event::Data`]
    /// or [`Event::ExtendedData`]; the peer may send that much more.
    /// A no-op once the channel is gone.
    pub fn consume(&mut self, id: u32, n: usize) -> Result<()> {
        self.check_conn()?;
        let window = self.config.window;
        let Some(ch) = self.channels.get_mut(&id) else {
            return Ok(());
        };
        let n = u32::try_from(n).map_err(|_| Error::TooLarge("consumed bytes"))?;
        ch.consumed = ch.consumed.saturating_add(n);
        if ch.consumed > window - ch.local_window.min(window) {
            return Err(Error::Protocol("consumed more than was delivered"));
        }
        if ch.local_window < window / 2 && ch.consumed > 0 && !ch.recv_eof && !ch.sent_close {
            let add = ch.consumed;
            ch.local_window += add;
            ch.consumed = 0;
            let m = msg::ChannelWindowAdjust {
                recipient: ch.remote_id,
                bytes: add,
            };
            self.send(m.encode())?;
        }
        Ok(())
    }

    /// Sends EOF; a no-op once the channel is closing or gone.
    pub fn send_eof(&mut self, id: u32) -> Result<()> {
        self.check_conn()?;
        let Some(ch) = self.channels.get_mut(&id) else {
            return Ok(());
        };
        if ch.state != ChanState::Open || ch.sent_eof || ch.sent_close {
            return Ok(());
        }
        ch.sent_eof = true;
        let m = msg::ChannelEof(ch.remote_id);
        self.send(m.encode())
    }

    /// Closes the channel; [`Event::Closed`] follows when the peer agrees.
    /// A no-op once the channel is closing or gone.
    pub fn close_channel(&mut self, id: u32) -> Result<()> {
        self.check_conn()?;
        let Some(ch) = self.channels.get_mut(&id) else {
            return Ok(());
        };
        if ch.state != ChanState::Open || ch.sent_close {
            return Ok(());
        }
        ch.sent_close = true;
        let m = msg::ChannelClose(ch.remote_id);
        self.send(m.encode())?;
        self.reap(id);
        Ok(())
    }

    fn reap(&mut self, id: u32) {
        if self
            .channels
            .get(&id)
            .is_some_and(|c| c.sent_close && c.recv_close)
        {
            self.channels.remove(&id);
            self.events.push_back(Event::Closed { id });
        }
    }

    /// Sends a global request; with `want_reply` an [`Event::GlobalReply`] follows.
    pub fn global_request(&mut self, request: GlobalReq, want_reply: bool) -> Result<()> {
        self.check_conn()?;
        if want_reply {
            self.global_replies_owed_to_us += 1;
        }
        self.send(
            msg::GlobalRequest {
                want_reply,
                request,
            }
            .encode(),
        )
    }

    /// Answers the oldest global request that wanted a reply.
    pub fn global_reply(&mut self, success: bool, data: &[u8]) -> Result<()> {
        self.check_conn()?;
        if self.global_replies_we_owe == 0 {
            return Err(Error::Protocol("no global request awaits a reply"));
        }
        self.global_replies_we_owe -= 1;
        let m = if success {
            msg::RequestSuccess(data.to_vec()).encode()
        } else {
            msg::RequestFailure.encode()
        };
        self.send(m)
    }

    fn peer_chan(&mut self, id: u32) -> Result<&mut Channel> {
        match self.channels.get_mut(&id) {
            Some(ch) if ch.state != ChanState::PeerOpening && !ch.recv_close => Ok(ch),
            _ => Err(Error::Protocol("message for an unknown or closed channel")),
        }
    }

    fn connection_message(&mut self, n: u8, payload: Vec<u8>) -> Result<()> {
        match n {
            num::CHANNEL_DATA => {
                let (id, data) = msg::decode_channel_data(&payload)?;
                self.on_data(id, None, data.to_vec())
            }
            num::CHANNEL_EXTENDED_DATA => {
                let (id, code, data) = msg::decode_channel_extended_data(&payload)?;
                self.on_data(id, Some(code), data.to_vec())
            }
            num::CHANNEL_WINDOW_ADJUST => {
                let m = msg::ChannelWindowAdjust::decode(&payload)?;
                let ch = self.peer_chan(m.recipient)?;
                // RFC 4254 §5.2: the window may not exceed 2^32 - 1.
                ch.remote_window = ch
                    .remote_window
                    .checked_add(m.bytes)
                    .ok_or(Error::Protocol("window adjust overflows"))?;
                if ch.blocked && ch.remote_window > 0 {
                    ch.blocked = false;
                    self.events.push_back(Event::Writable { id: m.recipient });
                }
                Ok(())
            }
            num::CHANNEL_EOF => {
                let id = msg::ChannelEof::decode(&payload)?.0;
                let ch = self.peer_chan(id)?;
                if ch.state != ChanState::Open || ch.recv_eof {
                    return Err(Error::Protocol("unexpected channel EOF"));
                }
                ch.recv_eof = true;
                self.events.push_back(Event::Eof { id });
                Ok(())
            }
            num::CHANNEL_CLOSE => {
                let id = msg::ChannelClose::decode(&payload)?.0;
                let ch = self.peer_chan(id)?;
                if ch.state != ChanState::Open {
                    return Err(Error::Protocol("close for a channel not open"));
                }
                ch.recv_close = true;
                if !ch.sent_close {
                    ch.sent_close = true;
                    let m = msg::ChannelClose(ch.remote_id);
                    self.send(m.encode())?;
                }
                self.reap(id);
                Ok(())
            }
            num::CHANNEL_OPEN => self.on_channel_open(&payload),
            num::CHANNEL_OPEN_CONFIRMATION => {
                let m = msg::ChannelOpenConfirmation::decode(&payload)?;
                let ch = self.peer_chan(m.recipient)?;
                if ch.state != ChanState::Opening {
                    return Err(Error::Protocol("confirmation for a channel not opening"));
                }
                ch.state = ChanState::Open;
                ch.remote_id = m.sender;
                ch.remote_window = m.initial_window;
                ch.remote_max_packet = m.max_packet;
                self.events
                    .push_back(Event::ChannelOpened { id: m.recipient });
                Ok(())
            }
            num::CHANNEL_OPEN_FAILURE => {
                let m = msg::ChannelOpenFailure::decode(&payload)?;
                let ch = self.peer_chan(m.recipient)?;
                if ch.state != ChanState::Opening {
                    return Err(Error::Protocol("open failure for a channel not opening"));
                }
                self.channels.remove(&m.recipient);
                self.events.push_back(Event::ChannelOpenFailed {
                    id: m.recipient,
                    reason: m.reason,
                    description: m.description,
                });
                Ok(())
            }
            num::CHANNEL_REQUEST => {
                let m = msg::ChannelRequest::decode(&payload)?;
                let ch = self.peer_chan(m.recipient)?;
                if ch.state != ChanState::Open {
                    return Err(Error::Protocol("request for a channel not open"));
                }
                let remote = ch.remote_id;
                if matches!(m.request, ChannelReq::Keepalive) {
                    // keepalive@openssh.com: answered at once, like OpenSSH.
                    if m.want_reply && !ch.sent_close {
                        return self.send(msg::ChannelFailure(remote).encode());
                    }
                    return Ok(());
                }
                if m.want_reply {
                    ch.replies_we_owe += 1;
                }
                self.events.push_back(Event::ChannelRequest {
                    id: m.recipient,
                    want_reply: m.want_reply,
                    request: m.request,
                });
                Ok(())
            }
            num::CHANNEL_SUCCESS | num::CHANNEL_FAILURE => {
                let id = if n == num::CHANNEL_SUCCESS {
                    msg::ChannelSuccess::decode(&payload)?.0
                } else {
                    msg::ChannelFailure::decode(&payload)?.0
                };
                let ch = self.peer_chan(id)?;
                if ch.replies_owed_to_us == 0 {
                    return Err(Error::Protocol("channel reply nobody asked for"));
                }
                ch.replies_owed_to_us -= 1;
                self.events.push_back(Event::ChannelReply {
                    id,
                    success: n == num::CHANNEL_SUCCESS,
                });
                Ok(())
            }
            num::GLOBAL_REQUEST => {
                let m = msg::GlobalRequest::decode(&payload)?;
                match m.request {
                    GlobalReq::Keepalive | GlobalReq::HostKeys(_) | GlobalReq::Other { .. }
                        if m.want_reply =>
                    {
                        // Unknown or informational: refuse, as OpenSSH does.
                        self.send(msg::RequestFailure.encode())
                    }
                    GlobalReq::Keepalive | GlobalReq::HostKeys(_) | GlobalReq::Other { .. } => {
                        Ok(())
                    }
                    GlobalReq::NoMoreSessions => {
                        self.no_more_sessions = true;
                        Ok(())
                    }
                    request => {
                        if m.want_reply {
                            self.global_replies_we_owe += 1;
                        }
                        self.events.push_back(Event::GlobalRequest {
                            want_reply: m.want_reply,
                            request,
                        });
                        Ok(())
                    }
                }
            }
            num::REQUEST_SUCCESS | num::REQUEST_FAILURE => {
                if self.global_replies_owed_to_us == 0 {
                    return Err(Error::Protocol("global reply nobody asked for"));
                }
                self.global_replies_owed_to_us -= 1;
                let (success, data) = if n == num::REQUEST_SUCCESS {
                    (true, msg::RequestSuccess::decode(&payload)?.0)
                } else {
                    msg::RequestFailure::decode(&payload)?;
                    (false, Vec::new())
                };
                self.events.push_back(Event::GlobalReply { success, data });
                Ok(())
            }
            _ => {
                let mut p = vec![num::UNIMPLEMENTED];
                crate::wire::Put::put_u32(&mut p, self.reader.seq.wrapping_sub(1));
                self.send(p)
            }
        }
    }

    fn on_data(&mut self, id: u32, code: Option<u32>, data: Vec<u8>) -> Result<()> {
        let max_packet = self.config.max_packet as usize;
        let ch = self.peer_chan(id)?;
        if ch.state != ChanState::Open || ch.recv_eof {
            return Err(Error::Protocol("data on a channel not open for data"));
        }
        if data.len() > max_packet || data.len() > ch.local_window as usize {
            return Err(Error::Protocol(
                "peer sent more data than the window allows",
            ));
        }
        ch.local_window -= data.len() as u32;
        let closing = ch.sent_close;
        self.stats.data_received += data.len() as u64;
        if closing {
            // Closing: data is dropped, the window no longer matters.
            return Ok(());
        }
        self.events.push_back(match code {
            None => Event::Data { id, data },
            Some(code) => Event::ExtendedData { id, code, data },
        });
        Ok(())
    }

    fn on_channel_open(&mut self, payload: &[u8]) -> Result<()> {
        let m = msg::ChannelOpen::decode(payload)?;
        let refuse = |this: &mut Self, reason_code: u32, text: &str| {
            let f = msg::ChannelOpenFailure {
                recipient: m.sender,
                reason: reason_code,
                description: text.to_string(),
                language: String::new(),
            };
            this.send(f.encode())
        };
        let session = matches!(m.kind, ChannelKind::Session);
        if session && (self.role == Role::Client || self.no_more_sessions) {
            return refuse(
                self,
                msg::open_failure::ADMINISTRATIVELY_PROHIBITED,
                "session channels not allowed",
            );
        }
        if m.max_packet == 0 {
            return refuse(
                self,
                msg::open_failure::ADMINISTRATIVELY_PROHIBITED,
                "zero maximum packet size",
            );
        }
        let Ok(id) = self.alloc_id() else {
            return refuse(
                self,
                msg::open_failure::RESOURCE_SHORTAGE,
                "too many channels",
            );
        };
        let ch = self.new_channel(
            ChanState::PeerOpening,
            m.sender,
            m.initial_window,
            m.max_packet,
        );
        self.channels.insert(id, ch);
        self.events
            .push_back(Event::ChannelOpenRequest { id, kind: m.kind });
        Ok(())
    }
}

// ----- moving a connection between processes -----------------------------

/// Format version of exported state.
const SNAPSHOT_VERSION: u32 = 1;
/// Bound on buffered bytes accepted from an exported state.
const MAX_SNAPSHOT_BUFFER: usize = 64 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    role: Role,
    config: Config,
    local_version: String,
    peer_version: String,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    writer: KeyMaterial,
    writer_seq: u32,
    writer_bytes: u64,
    writer_packets: u64,
    reader: KeyMaterial,
    reader_seq: u32,
    reader_bytes: u64,
    reader_packets: u64,
    session_id: Vec<u8>,
    host_key: Option<Vec<u8>>,
    strict_kex: bool,
    peer_ext_info: bool,
    server_sig_algs: Option<Vec<String>>,
    since_kex: Duration,
    service_ok: bool,
    authenticated: bool,
    auth_user: Option<String>,
    client_auth: ClientAuth,
    server_auth_pending: bool,
    channels: BTreeMap<u32, Channel>,
    global_replies_owed_to_us: u32,
    global_replies_we_owe: u32,
    no_more_sessions: bool,
    sent_msgs: u64,
    recv_msgs: u64,
    resilience: Option<resilience::State>,
}

impl Connection {
    /// Exports the full live state (keys, sequence numbers, channels, and the
    /// bytes not yet processed or sent), so that [`Self::import`] in another
    /// process continues exactly here. Refused while a key exchange runs or
    /// while events are undrained. The result holds secrets; it is wiped on drop.
    pub fn export(&self, now: Instant) -> Result<Zeroizing<Vec<u8>>> {
        self.check_open()?;
        let Some(session_id) = self.session_id.clone() else {
            return Err(Error::State("no key exchange has finished yet"));
        };
        if self.kex.is_some() || !self.deferred.is_empty() {
            return Err(Error::State("key exchange in progress"));
        }
        if !self.events.is_empty() {
            return Err(Error::State("events not drained"));
        }
        let s = Snapshot {
            version: SNAPSHOT_VERSION,
            role: self.role,
            config: self.config.clone(),
            local_version: self.local_version.clone(),
            peer_version: self.peer_version.clone().unwrap_or_default(),
            inbuf: self.inbuf.clone(),
            outbuf: self.output().to_vec(),
            writer: self.writer.export(),
            writer_seq: self.writer.seq,
            writer_bytes: self.writer.bytes,
            writer_packets: self.writer.packets,
            reader: self.reader.export(),
            reader_seq: self.reader.seq,
            reader_bytes: self.reader.bytes,
            reader_packets: self.reader.packets,
            session_id,
            host_key: self.host_key.clone(),
            strict_kex: self.strict_kex,
            peer_ext_info: self.peer_ext_info,
            server_sig_algs: self.server_sig_algs.clone(),
            since_kex: now.saturating_duration_since(self.last_kex),
            service_ok: self.service_ok,
            authenticated: self.authenticated,
            auth_user: self.auth_user.clone(),
            client_auth: self.client_auth,
            server_auth_pending: self.server_auth_pending,
            channels: self.channels.clone(),
            global_replies_owed_to_us: self.global_replies_owed_to_us,
            global_replies_we_owe: self.global_replies_we_owe,
            no_more_sessions: self.no_more_sessions,
            sent_msgs: self.sent_msgs,
            recv_msgs: self.recv_msgs,
            resilience: self.resilience.clone(),
        };
        postcard::to_stdvec(&s)
            .map(Zeroizing::new)
            .map_err(|_| Error::State("cannot encode state"))
    }

    /// Rebuilds a connection from [`Self::export`]'s output. The input is
    /// treated as hostile: decoded strictly and checked for consistency.
    /// A server needs its host keys again for later rekeys (a client none).
    pub fn import(bytes: &[u8], host_keys: Vec<PublicKey>, now: Instant) -> Result<Self> {
        let s: Snapshot =
            postcard::from_bytes(bytes).map_err(|_| Error::State("undecodable state"))?;
        if s.version != SNAPSHOT_VERSION {
            return Err(Error::State("unknown state version"));
        }
        let c = &s.config;
        if c.window == 0 || c.max_packet == 0 || c.max_channels == 0 || c.rekey_bytes == 0 {
            return Err(Error::State("invalid configuration"));
        }
        if s.inbuf.len() > MAX_SNAPSHOT_BUFFER || s.outbuf.len() > MAX_SNAPSHOT_BUFFER {
            return Err(Error::State("buffered data too large"));
        }
        if s.channels.len() > c.max_channels {
            return Err(Error::State("too many channels"));
        }
        for ch in s.channels.values() {
            if ch.local_window > c.window || ch.consumed > c.window - ch.local_window {
                return Err(Error::State("inconsistent channel window"));
            }
        }
        if s.session_id.len() != 32 || !s.peer_version.starts_with("SSH-") {
            return Err(Error::State("inconsistent transport state"));
        }
        if let Some(r) = &s.resilience {
            if r.rs.len() != 32
                || !r.buffer.is_consistent()
                || r.buffer
                    .chunks()
                    .any(|m| m.is_empty() || !is_resilient(m[0]))
            {
                return Err(Error::State("inconsistent resilience state"));
            }
        }
        if (s.role == Role::Server) == host_keys.is_empty() {
            return Err(Error::State("a server needs host keys, a client none"));
        }
        let mut writer = PacketWriter::new(&s.writer, s.writer_seq)?;
        writer.bytes = s.writer_bytes;
        writer.packets = s.writer_packets;
        let mut reader = PacketReader::new(&s.reader, s.reader_seq)?;
        reader.bytes = s.reader_bytes;
        reader.packets = s.reader_packets;
        Ok(Connection {
            role: s.role,
            config: s.config,
            host_keys,
            local_version: s.local_version,
            peer_version: Some(s.peer_version),
            preamble_seen: 0,
            inbuf: s.inbuf,
            outbuf: s.outbuf,
            out_pos: 0,
            writer,
            reader,
            kex: None,
            deferred: VecDeque::new(),
            deferred_bytes: 0,
            events: VecDeque::new(),
            session_id: Some(s.session_id),
            host_key: s.host_key,
            strict_kex: s.strict_kex,
            peer_ext_info: s.peer_ext_info,
            server_sig_algs: s.server_sig_algs,
            last_kex: now.checked_sub(s.since_kex).unwrap_or(now),
            now,
            service_ok: s.service_ok,
            authenticated: s.authenticated,
            auth_user: s.auth_user,
            client_auth: s.client_auth,
            server_auth_pending: s.server_auth_pending,
            channels: s.channels,
            global_replies_owed_to_us: s.global_replies_owed_to_us,
            global_replies_we_owe: s.global_replies_we_owe,
            no_more_sessions: s.no_more_sessions,
            sent_msgs: s.sent_msgs,
            recv_msgs: s.recv_msgs,
            resilience: s.resilience,
            ack_timer: None,
            last_rx: now,
            probe_sent: None,
            dead_reported: false,
            watch: Watch::default(),
            closed: false,
            stats: Stats::default(),
            spare: Vec::new(),
            spare_bytes: 0,
            reconnects_pending: 0,
            reconnect_epoch: 0,
        })
    }
}

#[cfg(test)]
#[path = "conn_fuzz.rs"]
mod fuzz_tests;

mod kex;
use kex::KexRun;
pub use kex::SignRequest;

#[path = "reconnect.rs"]
mod reconnect;
pub use reconnect::{ClientReconnect, Refused, ServerReconnect};
