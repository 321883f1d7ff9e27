//! The sans-IO connection: one state machine for both roles.
//!
//! Feed received bytes with [`Connection::handle_input`], send what
//! [`Connection::output`] holds and report it with [`Connection::consume_output`],
//! drain [`Connection::poll_event`], and call [`Connection::handle_timeout`] at
//! [`Connection::poll_timeout`]. Time is always an argument; nothing here
//! reads a clock, touches a socket or spawns a thread.
//!
//! The connection owns its parts, each with its behaviour in `conn/`:
//! `auth.rs` (user authentication, one `Auth` value), `channels.rs`
//! (the channel table and the connection protocol), `io.rs` (the transport's
//! buffers), `timers.rs` (delayed ACKs, keepalives, path suspicion) and
//! `snapshot.rs` (moving the state between processes).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::cert::{self, Certificate};
use crate::cipher;
use crate::error::{Error, Result};
use crate::kex::{Negotiated, KEX_ALGS};
use crate::keys::{KeyType, PublicKey};
use crate::msg::{self, num, ChannelKind, ChannelReq, GlobalReq};
use crate::resilience::{self, is_resilient};
use crate::transport::{scan_version, PacketReader, PacketWriter, VersionScan};

mod auth;
mod channels;
mod io;
mod kex;
mod snapshot;
mod timers;

use auth::Auth;
use channels::Channels;
use io::Io;
use kex::KexRun;
pub use kex::SignRequest;
use timers::Timers;

/// How long a received resilient message may wait for its acknowledgement.
const ACK_DELAY: Duration = Duration::from_secs(1);

/// Client: unacknowledged payload of ours from which a probe may wait
/// behind our own bytes somewhere on the path (a bulk upload): its answer
/// is then not expected in a round trip, but the server's ACKs of the
/// upload are, every [`ACK_DELAY`] (docs/PROTOCOL.md §4, "Path suspicion").
const BULK_UNACKED: usize = 64 << 10;

/// [`Connection::peer_version`] of a mux proxy client: no version line
/// is exchanged on a control socket.
pub const MUX_PROXY_PEER: &str = "mux proxy";

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
    /// Compression methods offered, in preference order: `none` and
    /// `zlib@openssh.com` ([`crate::zlib`]), as OpenSSH's
    /// `compression_alg_list`.
    pub compression: Vec<String>,
    /// Rekey after this many bytes in either direction (RFC 4344 §3.2).
    pub rekey_bytes: u64,
    /// Rekey after this much time.
    pub rekey_interval: Duration,
    /// Initial receive window and largest packet we accept per channel.
    pub window: u32,
    /// The most a channel's receive window grows to with the measured
    /// bandwidth-delay product (no growth when not above `window`).
    pub window_max: u32,
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
            host_key_algs: KeyType::all_signature_algorithms()
                .into_iter()
                .map(String::from)
                .collect(),
            ciphers: cipher::CIPHERS.iter().map(|c| c.name.to_string()).collect(),
            macs: cipher::MACS.iter().map(|m| m.name.to_string()).collect(),
            compression: vec!["none".into()],
            rekey_bytes: 1 << 30,
            rekey_interval: Duration::from_secs(3600),
            window: 2 * 1024 * 1024,
            window_max: 32 * 1024 * 1024,
            max_packet: 32 * 1024,
            max_channels: 1024,
            auth_methods: vec![
                "publickey".into(),
                "password".into(),
                "keyboard-interactive".into(),
            ],
            resilience: true,
            resilience_buffer: 48 * 1024 * 1024,
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
    /// The largest receive window a channel has grown to (0: none grew).
    pub window_max: u32,
}

/// A user's public key as offered in publickey user-auth: a plain key, or
/// an OpenSSH certificate whose CA signature has verified (whether that CA
/// is trusted is the application's decision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferedKey {
    Plain(PublicKey),
    Cert(Box<Certificate>),
}

impl OfferedKey {
    /// Decodes the key blob of a publickey request for `algorithm`: a
    /// certificate for a certificate algorithm, else a plain key. The
    /// algorithm must be one the key signs with.
    pub fn from_blob(algorithm: &str, blob: &[u8]) -> Result<OfferedKey> {
        let key = if cert::is_cert_name(algorithm.as_bytes()) {
            OfferedKey::Cert(Box::new(Certificate::from_blob(blob)?))
        } else {
            OfferedKey::Plain(PublicKey::from_blob(blob)?)
        };
        let fits = match &key {
            OfferedKey::Plain(k) => k.signature_algorithms().contains(&algorithm),
            OfferedKey::Cert(c) => c.signature_algorithms().contains(&algorithm),
        };
        if !fits {
            return Err(Error::UnknownAlgorithm(crate::wire::printable(
                algorithm.as_bytes(),
            )));
        }
        Ok(key)
    }

    /// The blob as offered.
    pub fn to_blob(&self) -> Vec<u8> {
        match self {
            OfferedKey::Plain(k) => k.to_blob(),
            OfferedKey::Cert(c) => c.blob().to_vec(),
        }
    }

    /// The key that signs: the plain key, or the certified one.
    pub fn key(&self) -> &PublicKey {
        match self {
            OfferedKey::Plain(k) => k,
            OfferedKey::Cert(c) => &c.key,
        }
    }

    /// Verifies a signature over `data` for `algorithm` (for a certificate,
    /// the signature names the plain algorithm its algorithm stands for).
    pub fn verify_detailed(
        &self,
        algorithm: &str,
        data: &[u8],
        sig: &[u8],
    ) -> Result<crate::keys::Verified> {
        match self {
            OfferedKey::Plain(k) => {
                let v = k.verify_detailed(data, sig)?;
                if v.alg != algorithm {
                    return Err(Error::BadSignature);
                }
                Ok(v)
            }
            OfferedKey::Cert(c) => c.verify_detailed(algorithm, data, sig),
        }
    }
}

/// A plain key offered is that key; a certificate is no plain key.
impl PartialEq<PublicKey> for OfferedKey {
    fn eq(&self, other: &PublicKey) -> bool {
        matches!(self, OfferedKey::Plain(k) if k == other)
    }
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
        key: OfferedKey,
    },
    /// A public key whose signature over the session has been verified.
    /// The signature is kept so a privileged monitor can verify it again.
    PublicKey {
        algorithm: String,
        key: OfferedKey,
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
    /// Client: the server's host key, verified to have signed the exchange
    /// (when the server sent a certificate, its key: the certificate itself
    /// is [`Connection::host_certificate`]). The key exchange waits until
    /// [`Connection::accept_host_key`] is called.
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

#[cfg(feature = "for-tests")]
impl ReconnectRequest {
    /// A request for the session of `token` (32 bytes of it) whose other
    /// fields are placeholders: for other crates' tests of routing, which
    /// look at the token alone. Behind the `for-tests` feature.
    pub fn for_tests(token: u8) -> Self {
        ReconnectRequest {
            request: resilience::Request {
                token: vec![token; 32],
                q_c: vec![1; 32],
                r_c: 0,
                mac: vec![2; 32],
            },
            transcript: resilience::Transcript {
                v_c: "SSH-2.0-x".into(),
                v_s: "SSH-2.0-y".into(),
                i_c: vec![],
                i_s: vec![],
            },
            negotiated: Negotiated {
                kex: String::new(),
                host_key: String::new(),
                cipher_c2s: String::new(),
                cipher_s2c: String::new(),
                mac_c2s: String::new(),
                mac_s2c: String::new(),
                comp_c2s: String::new(),
                comp_s2c: String::new(),
            },
            writer_seq: 0,
            reader_seq: 0,
        }
    }
}

/// A live SSH connection, client or server.
pub struct Connection {
    role: Role,
    config: Config,
    /// Server: the host keys, whose private halves sign elsewhere
    /// ([`Event::SignHostKey`]); empty on a client.
    host_keys: Vec<PublicKey>,
    /// Server: OpenSSH certificates of some of `host_keys`, offered as
    /// their `*-cert-v01@openssh.com` algorithms.
    host_certs: Vec<Certificate>,
    local_version: String,
    peer_version: Option<String>,
    preamble_seen: usize,
    io: Io,
    writer: PacketWriter,
    reader: PacketReader,
    kex: Option<KexRun>,
    events: VecDeque<Event>,
    session_id: Option<Vec<u8>>,
    host_key: Option<Vec<u8>>,
    strict_kex: bool,
    peer_ext_info: bool,
    server_sig_algs: Option<Vec<String>>,
    last_kex: Instant,
    /// The latest time passed in by the caller.
    now: Instant,
    auth: Auth,
    channels: Channels,
    /// The resilience extension, once negotiated.
    resilience: Option<resilience::State>,
    timers: Timers,
    closed: bool,
    stats: Stats,
    /// Server: reconnect attempts accepted and neither committed nor
    /// aborted (ACKs are held while there are any).
    reconnects_pending: usize,
    /// Server: reconnects committed; an attempt prepared before the last
    /// commit can no longer commit.
    reconnect_epoch: u64,
}

impl Connection {
    /// A client connection; its version line and first KEXINIT are queued.
    pub fn client(config: Config, now: Instant) -> Result<Self> {
        Self::new(Role::Client, config, Vec::new(), Vec::new(), now)
    }

    /// A client of a mux master's control socket in proxy mode
    /// (PROTOCOL.mux, MUX_C_PROXY): the master's connection carries ours,
    /// so there is no version exchange, no key exchange and no user
    /// authentication: the connection protocol is open at once for
    /// `user`, each packet unencrypted in the mux framing
    /// ([`crate::transport::mux_frame`]), and only its messages are sent.
    /// Nothing of the resilience extension: the master's connection is
    /// the resilient one.
    pub fn mux_proxy_client(config: Config, user: &str, now: Instant) -> Self {
        let mut c = Self::assemble(Role::Client, config, Vec::new(), now);
        c.peer_version = Some(MUX_PROXY_PEER.to_string());
        c.writer = PacketWriter::mux();
        c.reader = PacketReader::mux();
        c.auth = Auth::Done {
            user: user.to_string(),
            sent: 0,
            received: 0,
        };
        c
    }

    /// A server connection with these host keys: each exchange hash is
    /// signed by the application ([`Event::SignHostKey`]).
    pub fn server(config: Config, host_keys: Vec<PublicKey>, now: Instant) -> Result<Self> {
        if host_keys.is_empty() {
            return Err(Error::Misuse("server without host keys"));
        }
        Self::new(Role::Server, config, host_keys, Vec::new(), now)
    }

    /// A server connection whose host keys also have certificates
    /// (HostCertificate): see [`Connection::set_host_certificates`].
    pub fn server_with_certificates(
        config: Config,
        host_keys: Vec<PublicKey>,
        certs: Vec<Certificate>,
        now: Instant,
    ) -> Result<Self> {
        if host_keys.is_empty() {
            return Err(Error::Misuse("server without host keys"));
        }
        Self::new(Role::Server, config, host_keys, certs, now)
    }

    /// Server: host certificates, each of one of the host keys, offered
    /// from the next key exchange on (an imported connection needs them
    /// again). A key exchange that agrees on a certificate algorithm sends
    /// the certificate as the host key and signs with the certified key.
    pub fn set_host_certificates(&mut self, certs: Vec<Certificate>) -> Result<()> {
        if self.role != Role::Server {
            return Err(Error::Misuse("host certificates on a client"));
        }
        if certs
            .iter()
            .any(|c| c.kind != cert::CertKind::Host || !self.host_keys.contains(&c.key))
        {
            return Err(Error::Misuse("a host certificate of no host key"));
        }
        self.host_certs = certs;
        Ok(())
    }

    fn new(
        role: Role,
        config: Config,
        host_keys: Vec<PublicKey>,
        certs: Vec<Certificate>,
        now: Instant,
    ) -> Result<Self> {
        let mut c = Self::assemble(role, config, host_keys, now);
        if !certs.is_empty() {
            c.set_host_certificates(certs)?;
        }
        let version = format!("{}\r\n", c.local_version);
        c.io = Io::with(Vec::new(), version.into_bytes());
        c.start_kex()?;
        Ok(c)
    }

    /// A connection in its initial state; [`Self::new`] and
    /// [`Self::import`] go on from here.
    fn assemble(role: Role, config: Config, host_keys: Vec<PublicKey>, now: Instant) -> Self {
        Connection {
            role,
            local_version: config.version.clone(),
            config,
            host_keys,
            host_certs: Vec::new(),
            peer_version: None,
            preamble_seen: 0,
            io: Io::default(),
            writer: PacketWriter::none(),
            reader: PacketReader::none(),
            kex: None,
            events: VecDeque::new(),
            session_id: None,
            host_key: None,
            strict_kex: false,
            peer_ext_info: false,
            server_sig_algs: None,
            last_kex: now,
            now,
            auth: Auth::NoService,
            channels: Channels::default(),
            resilience: None,
            timers: Timers::new(now),
            closed: false,
            stats: Stats::default(),
            reconnects_pending: 0,
            reconnect_epoch: 0,
        }
    }

    // ----- I/O surface -------------------------------------------------

    /// Bytes waiting to be sent.
    pub fn output(&self) -> &[u8] {
        self.io.output()
    }

    /// Marks `n` bytes of [`Self::output`] as sent.
    pub fn consume_output(&mut self, n: usize) {
        self.io.consume(n);
    }

    /// Takes all pending output at once.
    pub fn take_output(&mut self) -> Vec<u8> {
        self.io.take_output()
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

    /// Server: the host keys (public halves) it offers.
    pub fn host_keys(&self) -> &[PublicKey] {
        &self.host_keys
    }

    pub fn session_id(&self) -> Option<&[u8]> {
        self.session_id.as_deref()
    }

    pub fn is_authenticated(&self) -> bool {
        self.auth.is_done()
    }

    /// The user the server authenticated (or the client authenticates as).
    pub fn user(&self) -> Option<&str> {
        self.auth.user()
    }

    /// Client: the algorithms the server accepts for user signatures, if it said.
    pub fn server_sig_algs(&self) -> Option<&[String]> {
        self.server_sig_algs.as_deref()
    }

    /// Messages sent and received since authentication.
    pub fn message_counts(&self) -> (u64, u64) {
        self.auth.message_counts()
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
            self.timers.heard(now);
        }
        self.io.inbuf.extend_from_slice(data);
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
        if self.may_rekey() {
            at(self.last_kex + self.config.rekey_interval);
        }
        self.resilience_deadlines(at);
        t
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        self.now = now;
        let r = if self.may_rekey()
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
            let _ = self.writer.write(&m.encode(), self.io.outbuf());
        }
        self.closed = true;
    }

    /// After an error of the peer's making: DISCONNECT (or
    /// RECONNECT_FAILURE) naming the reason, and the connection closes. A
    /// misuse by the application changes nothing.
    fn fail_on_err(&mut self, r: Result<()>) -> Result<()> {
        if let Err(e) = &r {
            if matches!(e, Error::Misuse(_) | Error::State(_)) {
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
                let _ = self.writer.write(&f, self.io.outbuf());
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
        self.io.inbuf.drain(..off);
        r
    }

    fn process_inner(&mut self, off: &mut usize, now: Instant) -> Result<()> {
        if self.peer_version.is_none() {
            let allow = self.role == Role::Client;
            let scanned = scan_version(&self.io.inbuf, allow, &mut self.preamble_seen);
            if scanned.is_err() && self.role == Role::Server {
                // As sshd: a plain-text reason to the client before closing.
                let b = &self.io.inbuf;
                let why = if b.starts_with(b"SSH-")
                    && !(b.starts_with(b"SSH-2.0-") || b.starts_with(b"SSH-1.99-"))
                {
                    "Protocol major versions differ."
                } else {
                    "Invalid SSH identification string."
                };
                self.io
                    .outbuf()
                    .extend_from_slice(format!("{why}\r\n").as_bytes());
            }
            match scanned? {
                VersionScan::More => {
                    // Discard complete preamble lines so the buffer stays bounded.
                    if let Some(p) = self.io.inbuf.iter().rposition(|&b| b == b'\n') {
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
            let Some((range, n)) = self.reader.read_in_place(&mut self.io.inbuf[*off..])? else {
                return Ok(());
            };
            let span = *off + range.start..*off + range.end;
            let inflated = self.reader.inflate(&self.io.inbuf[span.clone()])?;
            let plain = match &inflated {
                Some(p) => p,
                None => &self.io.inbuf[span.clone()],
            };
            if plain[0] == num::CHANNEL_DATA && self.auth.is_done() {
                let (id, data) = msg::decode_channel_data(plain)?;
                let (len, dlen) = (plain.len(), data.len());
                // The data ends the payload (decode checked its length).
                let mut data = self.io.payload_buf(dlen);
                data.extend_from_slice(match &inflated {
                    Some(p) => &p[len - dlen..],
                    None => &self.io.inbuf[span.end - dlen..span.end],
                });
                *off += n;
                if self.reader.seq == 0 && !self.strict_kex && self.session_id.is_some() {
                    return Err(Error::Protocol("incoming sequence number wrapped"));
                }
                self.dispatch_channel_data(id, data, len, now)?;
                self.maybe_rekey()?;
                continue;
            }
            let payload = inflated.unwrap_or_else(|| self.io.inbuf[span].to_vec());
            *off += n;
            if self.reader.seq == 0 && !self.strict_kex && self.session_id.is_some() {
                // Sequence numbers wrapped without a rekey: refuse, as OpenSSH.
                return Err(Error::Protocol("incoming sequence number wrapped"));
            }
            self.dispatch(payload, now)?;
            self.maybe_rekey()?;
        }
    }

    /// Whether a limit may start a key exchange now: none is running, and
    /// user authentication is over. As OpenSSH, never before: its client
    /// takes a KEXINIT during user authentication for a protocol error
    /// ("bad message during authentication"), and only the first exchange
    /// has happened then.
    fn may_rekey(&self) -> bool {
        self.kex.is_none() && self.session_id.is_some() && self.auth.is_done()
    }

    fn maybe_rekey(&mut self) -> Result<()> {
        if self.may_rekey()
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

    /// Sends a payload now, or holds it while a key exchange runs; then
    /// starts a rekey if a limit is passed.
    fn send(&mut self, payload: Vec<u8>) -> Result<()> {
        self.send_no_rekey(payload)?;
        self.maybe_rekey()
    }

    /// [`Self::send`] without looking at the rekey limits: for what ends
    /// user authentication, after which a server's connection leaves for
    /// the session's process ([`Self::export`] refuses a running
    /// exchange). A limit passed by then is acted on at the next packet.
    fn send_no_rekey(&mut self, payload: Vec<u8>) -> Result<()> {
        let n = payload[0];
        let transport = (1..=49).contains(&n);
        self.check_bound(n, payload.len(), transport)?;
        if self.kex.is_some() && !transport {
            self.io.defer(payload, is_resilient(n));
            return Ok(());
        }
        self.write_payload(payload)
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
            true => {
                let (msgs, bytes) = self.io.deferred();
                (msgs + 1, bytes + len)
            }
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
        self.auth.count(payload[0], true);
        match self.resilience.as_mut() {
            Some(r) if r.active && is_resilient(payload[0]) => {
                r.sent(payload);
                self.timers.watch.resilient_sent(self.now);
            }
            _ => self.io.recycle(payload),
        }
        Ok(())
    }

    /// Gives back the buffer of an [`Event::Data`] once its bytes are used
    /// (optional): data received later is copied into it rather than into
    /// fresh memory, which keeps bulk transfers free of per-packet
    /// allocations. A buffer not given back is simply freed.
    pub fn reuse_buffer(&mut self, buf: Vec<u8>) {
        self.io.recycle(buf);
    }

    fn write_now(&mut self, payload: &[u8]) -> Result<()> {
        let before = self.io.outbuf().len();
        self.writer.write(payload, self.io.outbuf())?;
        if payload[0] == num::USERAUTH_SUCCESS && self.role == Role::Server {
            // Delayed compression starts after it, both ways (OpenSSH).
            self.writer.zlib.authenticated();
            self.reader.zlib.authenticated();
        }
        if payload[0] == resilience::MSG_ACK {
            self.stats.acks_sent += 1;
            self.stats.ack_wire_bytes += (self.io.outbuf().len() - before) as u64;
        }
        if self.writer.seq == 0 && !self.strict_kex && self.session_id.is_some() {
            return Err(Error::Protocol("outgoing sequence number wrapped"));
        }
        Ok(())
    }

    fn flush_deferred(&mut self) -> Result<()> {
        for p in self.io.take_deferred() {
            self.write_payload(p)?;
        }
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
        self.auth.count(n, false);
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
                self.timers.ack.get_or_insert(now);
                self.timers.watch.resilient_received(now);
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
            num::SERVICE_ACCEPT if self.role == Role::Client => self.on_service_accept(&payload),
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
            80..=127 if self.auth.is_done() => self.connection_message(n, payload),
            80..=127 => Err(Error::Protocol("connection message before authentication")),
            resilience::MSG_ACK => {
                let Some(r) = self.resilience.as_mut().filter(|r| r.active) else {
                    return self.unimplemented(seq);
                };
                let (count, want_reply) = resilience::decode_ack(&payload)?;
                self.stats.acks_received += 1;
                self.timers
                    .watch
                    .ack_received(self.now, self.config.keepalive);
                let io = &mut self.io;
                if r.acked_with(count, |p| io.recycle(p))? {
                    self.timers.watch.progress(self.now);
                    self.wake_blocked_channels();
                }
                if want_reply {
                    self.send_ack(false)?;
                }
                Ok(())
            }
            resilience::MSG_INFO => {
                let Some(r) = self.resilience.as_mut().filter(|r| r.active) else {
                    return self.unimplemented(seq);
                };
                let (secs, cap) = resilience::decode_info(&payload)?;
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
                            self.timers.watch.want_reply_sent(self.now, None);
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
            _ => self.unimplemented(seq),
        }
    }

    /// Answers a message we do not implement, received as packet `seq`.
    fn unimplemented(&mut self, seq: u32) -> Result<()> {
        let mut p = vec![num::UNIMPLEMENTED];
        crate::wire::Put::put_u32(&mut p, seq);
        self.send(p)
    }

    /// Starts counting resilient messages and announces our parameters
    /// (part of ending user authentication: no rekey starts here).
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
        self.send_no_rekey(info)
    }
}

#[cfg(test)]
#[path = "conn_fuzz.rs"]
mod fuzz_tests;
#[cfg(test)]
mod tests;

#[path = "reconnect.rs"]
mod reconnect;
pub use reconnect::{ClientReconnect, Refused, ServerReconnect};
