//! The reconnect exchange of the resilience extension (docs/PROTOCOL.md §5),
//! both halves. Each runs beside the live connection on the new transport
//! and changes nothing in the session until it is complete:
//! [`ClientReconnect`] until the server's reply verified, [`ServerReconnect`]
//! until the client's key confirmation arrived.

use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::{Connection, Event, ReconnectRequest, Role};
use crate::cipher::KeyMaterial;
use crate::error::{Error, Result};
use crate::kex::curve25519::Ephemeral;
use crate::kex::{self, Hash, Negotiated, SecretForm, SharedSecret};
use crate::msg::{self, num};
use crate::resilience::{self, Request, Transcript};
use crate::transport::{scan_version, PacketReader, PacketWriter, VersionScan};

/// Why a reconnect was refused, from SSH_MSG_RECONNECT_FAILURE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: u32,
    pub description: String,
}

/// K' of a reconnect: X25519's output, taken by the key derivation as an
/// mpint with SHA-256 (docs/PROTOCOL.md §5), whatever the session's method.
fn reconnect_secret(k: Zeroizing<Vec<u8>>) -> SharedSecret {
    SharedSecret::new(k, Hash::Sha256, SecretForm::Mpint)
}

/// The client's half, driven over a fresh transport.
pub struct ClientReconnect {
    version: String,
    peer_version: Option<String>,
    preamble_seen: usize,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    writer: PacketWriter,
    reader: PacketReader,
    i_c: Vec<u8>,
    eph: Ephemeral,
    q_c: Vec<u8>,
    token: Vec<u8>,
    rs: Zeroizing<Vec<u8>>,
    r_c: u64,
    session_id: Vec<u8>,
    client_kexinit: msg::KexInit,
    phase: Phase,
    /// The server refused (RECONNECT_FAILURE or DISCONNECT).
    refused: Option<Refused>,
}

/// How far the client's half has come.
enum Phase {
    /// Waiting for the server's KEXINIT.
    Kexinit,
    /// Waiting for the server's reply; its KEXINIT came.
    Reply { i_s: Vec<u8> },
    /// The reply verified; waiting for the server's NEWKEYS.
    NewKeys(Verified),
    /// Complete: the session may move here.
    Done(Verified),
}

/// What a verified reply gave: keys and the peer's count.
struct Verified {
    recv: KeyMaterial,
    /// `zlib@openssh.com` agreed on for what the server sends.
    recv_zlib: bool,
    r_s: u64,
    next_rs: Zeroizing<Vec<u8>>,
}

impl ClientReconnect {
    /// Bytes to send on the new transport.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.outbuf)
    }

    pub fn output(&self) -> &[u8] {
        &self.outbuf
    }

    /// Whether the exchange completed: call [`Connection::complete_reconnect`].
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done(_))
    }

    /// Why the server refused, if it did.
    pub fn refused(&self) -> Option<&Refused> {
        self.refused.as_ref()
    }

    /// Feeds bytes from the new transport. Errors end this attempt only;
    /// the session is untouched.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<()> {
        self.inbuf.extend_from_slice(data);
        if self.is_done() {
            return Ok(());
        }
        if self.peer_version.is_none() {
            match scan_version(&self.inbuf, true, &mut self.preamble_seen)? {
                VersionScan::More => {
                    if let Some(p) = self.inbuf.iter().rposition(|&b| b == b'\n') {
                        self.inbuf.drain(..p + 1);
                    }
                    return Ok(());
                }
                VersionScan::Done(v, n) => {
                    self.peer_version = Some(v);
                    self.inbuf.drain(..n);
                }
            }
        }
        while !self.is_done() {
            let Some((payload, n)) = self.reader.read(&self.inbuf)? else {
                return Ok(());
            };
            self.inbuf.drain(..n);
            self.packet(payload)?;
        }
        Ok(())
    }

    fn packet(&mut self, p: Vec<u8>) -> Result<()> {
        match (p[0], &self.phase) {
            (num::IGNORE | num::DEBUG, _) => Ok(()),
            (num::DISCONNECT, _) => {
                let d = msg::Disconnect::decode(&p)?;
                self.refused = Some(Refused {
                    code: 0,
                    description: d.description.clone(),
                });
                Err(Error::PeerDisconnected {
                    reason: d.reason,
                    description: d.description,
                })
            }
            (resilience::MSG_RECONNECT_FAILURE, _) => {
                let (code, description) = resilience::decode_failure(&p)?;
                self.refused = Some(Refused {
                    code,
                    description: description.clone(),
                });
                Err(Error::Protocol("server refused the reconnect"))
            }
            (num::KEXINIT, Phase::Kexinit) => {
                let server = msg::KexInit::decode(&p)?;
                let n = kex::negotiate(&self.client_kexinit, &server)?;
                if n.kex != resilience::NAME {
                    return Err(Error::Protocol("server does not resume sessions"));
                }
                self.phase = Phase::Reply { i_s: p };
                Ok(())
            }
            (resilience::MSG_RECONNECT_REPLY, Phase::Reply { i_s }) => {
                let v = self.on_reply(&p, i_s.clone())?;
                self.phase = Phase::NewKeys(v);
                Ok(())
            }
            (num::NEWKEYS, Phase::NewKeys(v)) if p.len() == 1 => {
                self.reader.set_key(&v.recv, v.recv_zlib)?;
                self.reader.seq = 0;
                if let Phase::NewKeys(v) = std::mem::replace(&mut self.phase, Phase::Kexinit) {
                    self.phase = Phase::Done(v);
                }
                Ok(())
            }
            _ => Err(Error::Protocol("unexpected message during reconnect")),
        }
    }

    /// Verifies the server's reply and answers with NEWKEYS and the key
    /// confirmation.
    fn on_reply(&mut self, p: &[u8], i_s: Vec<u8>) -> Result<Verified> {
        let reply = resilience::Reply::decode(p)?;
        let server = msg::KexInit::decode(&i_s)?;
        let n: Negotiated = kex::negotiate(&self.client_kexinit, &server)?;
        let k = reconnect_secret(self.eph.agree(&reply.q_s)?);
        let t = Transcript {
            v_c: self.version.clone(),
            v_s: self.peer_version.clone().unwrap_or_default(),
            i_c: self.i_c.clone(),
            i_s,
        };
        let h = resilience::h_prime(
            &t,
            &self.token,
            &self.q_c,
            &reply.q_s,
            self.r_c,
            reply.r_s,
            k.raw(),
        )?;
        let expect = resilience::mac_s(&self.rs, &h)?;
        if !openssl::memcmp::eq(&expect, &reply.mac) {
            return Err(Error::Mac);
        }
        let (c2s, s2c) = kex::derive_keys(&k, &h, &self.session_id, &n)?;
        let next_rs = resilience::ratchet(&self.rs, &h, k.raw())?;
        // NEWKEYS, then the key confirmation under the new keys.
        self.writer.write(&[num::NEWKEYS], &mut self.outbuf)?;
        // A reconnect's NEWKEYS comes after authentication: compression,
        // when agreed, starts at once, from a fresh stream
        // (docs/PROTOCOL.md §9).
        self.writer.set_key(&c2s, n.zlib(true, true))?;
        self.writer.seq = 0;
        self.writer
            .write(&resilience::encode_ack(self.r_c, false), &mut self.outbuf)?;
        Ok(Verified {
            recv: s2c,
            recv_zlib: n.zlib(true, false),
            r_s: reply.r_s,
            next_rs,
        })
    }
}

/// The owning session's half on the server, after the request was routed
/// to it: it holds the new transport until the client confirms the keys.
pub struct ServerReconnect {
    outbuf: Vec<u8>,
    inbuf: Vec<u8>,
    reader: PacketReader,
    writer: PacketWriter,
    recv: KeyMaterial,
    recv_zlib: bool,
    got_newkeys: bool,
    confirmed: bool,
    r_c: u64,
    r_s: u64,
    next_rs: Zeroizing<Vec<u8>>,
    used_rs: Zeroizing<Vec<u8>>,
    transcript: Transcript,
    /// The server's reconnect epoch when it was accepted.
    epoch: u64,
}

impl ServerReconnect {
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.outbuf)
    }

    pub fn output(&self) -> &[u8] {
        &self.outbuf
    }

    pub fn is_confirmed(&self) -> bool {
        self.confirmed
    }

    /// Feeds bytes the client sent on the new transport (including those the
    /// kex worker had already read). Errors end this attempt only.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<()> {
        self.inbuf.extend_from_slice(data);
        while !self.confirmed {
            let Some((p, n)) = self.reader.read(&self.inbuf)? else {
                return Ok(());
            };
            self.inbuf.drain(..n);
            match p[0] {
                num::NEWKEYS if !self.got_newkeys && p.len() == 1 => {
                    self.reader.set_key(&self.recv, self.recv_zlib)?;
                    self.reader.seq = 0;
                    self.got_newkeys = true;
                }
                resilience::MSG_ACK if self.got_newkeys => {
                    let (count, _) = resilience::decode_ack(&p)?;
                    if count != self.r_c {
                        return Err(Error::Protocol("key confirmation with a wrong count"));
                    }
                    self.confirmed = true;
                }
                num::IGNORE | num::DEBUG if !self.got_newkeys => {}
                _ => {
                    return Err(Error::Protocol(
                        "unexpected message before key confirmation",
                    ))
                }
            }
        }
        Ok(())
    }
}

impl Connection {
    /// The token that names this session in a reconnect (T_i), for the
    /// broker's table. None without resilience.
    pub fn resume_token(&self) -> Option<Vec<u8>> {
        let r = self.resilience.as_ref().filter(|r| r.active)?;
        r.token().ok()
    }

    /// Tokens this session currently answers to (the current one and, on a
    /// server right after a reconnect, the previous one).
    pub fn resume_tokens(&self) -> Vec<Vec<u8>> {
        let Some(r) = self.resilience.as_ref().filter(|r| r.active) else {
            return Vec::new();
        };
        let mut v: Vec<Vec<u8>> = r.token().into_iter().collect();
        if let Some(p) = &r.prev_rs {
            v.extend(resilience::token(p));
        }
        v
    }

    /// The peer's detach timeout (seconds) and whether resilience is on.
    pub fn resilience_active(&self) -> bool {
        self.resilience.as_ref().is_some_and(|r| r.active)
    }

    pub fn peer_detach_timeout(&self) -> Option<u32> {
        self.resilience.as_ref().and_then(|r| r.peer_detach)
    }

    /// Server: the keepalive interval the client announced
    /// (docs/PROTOCOL.md §4), if it announced one.
    pub fn peer_keepalive(&self) -> Option<Duration> {
        self.resilience
            .as_ref()
            .and_then(|r| r.peer_keepalive)
            .map(|s| Duration::from_secs(u64::from(s)))
    }

    /// (bytes buffered for retransmission, resilient messages sent, received)
    pub fn resilience_stats(&self) -> Option<(usize, u64, u64)> {
        self.resilience
            .as_ref()
            .map(|r| (r.buffer.bytes(), r.buffer.sent(), r.recv))
    }

    /// (messages, bytes) sent and not yet acknowledged (with resilience).
    pub fn unacknowledged(&self) -> Option<(usize, usize)> {
        self.resilience
            .as_ref()
            .map(|r| (r.buffer.len(), r.buffer.bytes()))
    }

    /// Client: prepares a reconnect over a new transport. The live
    /// connection is not changed; it may even keep running meanwhile.
    pub fn reconnect_attempt(&mut self) -> Result<ClientReconnect> {
        if self.role != Role::Client {
            return Err(Error::Misuse("only a client reconnects"));
        }
        let r = self
            .resilience
            .as_ref()
            .filter(|r| r.active)
            .ok_or(Error::Misuse("resilience is not active"))?;
        let session_id = self.session_id.clone().ok_or(Error::Misuse("no session"))?;
        // Before the server's first packet under the last reconnect's keys
        // arrived, it may or may not have committed: the server accepts the
        // previous token too (docs/PROTOCOL.md §5), so use the secret we hold.
        let rs = r.rs.clone();
        let token = resilience::token(&rs)?;
        let mut kexinit = self.kexinit(false)?;
        kexinit.kex = vec![resilience::NAME.to_string()];
        let i_c = kexinit.encode();
        let eph = Ephemeral::generate()?;
        let q_c = eph.public()?;
        let r_c = r.recv;
        if let Some(r) = self.resilience.as_mut() {
            r.hold_acks = true;
        }
        let mac = resilience::mac_c(&rs, &self.local_version, &i_c, &token, &q_c, r_c)?;
        let mut outbuf = Vec::new();
        outbuf.extend_from_slice(self.local_version.as_bytes());
        outbuf.extend_from_slice(b"\r\n");
        let mut writer = PacketWriter::authenticated();
        writer.write(&i_c, &mut outbuf)?;
        let req = Request {
            token: token.clone(),
            q_c: q_c.clone(),
            r_c,
            mac: mac.to_vec(),
        };
        writer.write(&req.encode(), &mut outbuf)?;
        Ok(ClientReconnect {
            version: self.local_version.clone(),
            peer_version: None,
            preamble_seen: 0,
            inbuf: Vec::new(),
            outbuf,
            writer,
            reader: PacketReader::authenticated(),
            i_c,
            eph,
            q_c,
            token,
            rs,
            r_c,
            session_id,
            client_kexinit: kexinit,
            phase: Phase::Kexinit,
            refused: None,
        })
    }

    /// Client: switches the session to the attempt's transport. The caller
    /// then sends [`Self::output`] on the new transport and drops the old.
    pub fn complete_reconnect(&mut self, att: ClientReconnect, now: Instant) -> Result<()> {
        let Phase::Done(v) = att.phase else {
            return Err(Error::Misuse("reconnect not complete"));
        };
        let r = self
            .resilience
            .as_mut()
            .ok_or(Error::Misuse("resilience is not active"))?;
        // Messages that arrived on the old connection after we announced
        // our count will come again: drop that many.
        r.skip = r
            .recv
            .checked_sub(att.r_c)
            .ok_or(Error::Protocol("receive count went backwards"))?;
        r.acked(v.r_s)?;
        r.next_rs = Some(v.next_rs);
        let resend: Vec<Vec<u8>> = r.unacked_from(v.r_s)?.map(<[u8]>::to_vec).collect();
        self.kex = None;
        self.writer = att.writer;
        self.reader = att.reader;
        self.io.switch(att.inbuf, att.outbuf);
        self.peer_version = att.peer_version;
        self.after_reconnect(now, resend)?;
        // Bytes of the server that came with its NEWKEYS.
        let r = self.process(now);
        self.fail_on_err(r)
    }

    /// Server, owning session: validates a routed reconnect request and
    /// prepares the reply. Nothing in the session changes yet, and nothing
    /// happens to other attempts already accepted: up to
    /// [`resilience::MAX_PENDING_RECONNECTS`] may wait for their key
    /// confirmation at once, and the first confirmed one commits. A request
    /// whose MAC verified before (a replay, docs/PROTOCOL.md §8) is refused.
    pub fn accept_reconnect(
        &mut self,
        req: &ReconnectRequest,
    ) -> std::result::Result<ServerReconnect, Refused> {
        let (rs, r_s) = self.validate_reconnect(req)?;
        if self.reconnects_pending >= resilience::MAX_PENDING_RECONNECTS {
            return Err(Refused {
                code: resilience::failure::TRY_AGAIN,
                description: "too many reconnects of this session in progress".into(),
            });
        }
        let sr = self
            .prepare_server_reconnect(req, rs, r_s)
            .map_err(|e| Refused {
                code: resilience::failure::TRY_AGAIN,
                description: e.to_string(),
            })?;
        self.reconnects_pending += 1;
        if let Some(r) = self.resilience.as_mut() {
            r.hold_acks = true;
        }
        Ok(sr)
    }

    /// Abandons the reconnect being prepared (client), or every attempt a
    /// server accepted (none of them can commit after this): the session
    /// goes on as before.
    pub fn abort_reconnect(&mut self) {
        if self.reconnects_pending > 0 {
            self.reconnects_pending = 0;
            self.reconnect_epoch += 1;
        }
        if let Some(r) = self.resilience.as_mut() {
            r.hold_acks = false;
        }
    }

    /// Server: one accepted attempt failed or timed out; the others (if
    /// any) stay pending, and the session goes on as before.
    pub fn drop_reconnect(&mut self, sr: ServerReconnect) {
        if sr.epoch != self.reconnect_epoch {
            // Forgotten already, by a commit or abort_reconnect.
            return;
        }
        self.reconnects_pending = self.reconnects_pending.saturating_sub(1);
        let held = self.reconnects_pending > 0;
        if let Some(r) = self.resilience.as_mut() {
            r.hold_acks = held;
        }
    }

    /// Checks a request's token, MAC, freshness and count; returns the
    /// resume secret it was made with and our receive count.
    fn validate_reconnect(
        &mut self,
        req: &ReconnectRequest,
    ) -> std::result::Result<(Zeroizing<Vec<u8>>, u64), Refused> {
        let refuse = |code, d: &str| Refused {
            code,
            description: d.to_string(),
        };
        let role = self.role;
        let Some(r) = self
            .resilience
            .as_mut()
            .filter(|r| r.active && role == Role::Server)
        else {
            return Err(refuse(
                resilience::failure::UNKNOWN_SESSION,
                "no resumable session",
            ));
        };
        let q = &req.request;
        let token_now = r
            .token()
            .map_err(|_| refuse(resilience::failure::TRY_AGAIN, "internal error"))?;
        let rs = if openssl::memcmp::eq(&token_now, &q.token) {
            r.rs.clone()
        } else {
            match &r.prev_rs {
                Some(p)
                    if resilience::token(p).is_ok_and(|t| openssl::memcmp::eq(&t, &q.token)) =>
                {
                    p.clone()
                }
                _ => {
                    return Err(refuse(
                        resilience::failure::UNKNOWN_SESSION,
                        "unknown session",
                    ))
                }
            }
        };
        let t = &req.transcript;
        let ok = resilience::mac_c(&rs, &t.v_c, &t.i_c, &q.token, &q.q_c, q.r_c)
            .is_ok_and(|m| openssl::memcmp::eq(&m, &q.mac));
        if !ok {
            return Err(refuse(
                resilience::failure::AUTHENTICATION_FAILED,
                "authentication failed",
            ));
        }
        // The client makes a fresh request (fresh Q_C) for every attempt,
        // so a MAC that verified before is a recording played again.
        if !r.first_sighting(&q.mac) {
            return Err(refuse(
                resilience::failure::AUTHENTICATION_FAILED,
                "replayed request",
            ));
        }
        if r.unacked_from(q.r_c).is_err() {
            return Err(refuse(
                resilience::failure::AUTHENTICATION_FAILED,
                "receive count out of range",
            ));
        }
        Ok((rs, r.recv))
    }

    fn prepare_server_reconnect(
        &self,
        req: &ReconnectRequest,
        rs: Zeroizing<Vec<u8>>,
        r_s: u64,
    ) -> Result<ServerReconnect> {
        let q = &req.request;
        let eph = Ephemeral::generate()?;
        let q_s = eph.public()?;
        let k = reconnect_secret(eph.agree(&q.q_c)?);
        let h = resilience::h_prime(&req.transcript, &q.token, &q.q_c, &q_s, q.r_c, r_s, k.raw())?;
        let mac = resilience::mac_s(&rs, &h)?;
        let sid = self
            .session_id
            .clone()
            .ok_or(Error::Protocol("no session"))?;
        let (c2s, s2c) = kex::derive_keys(&k, &h, &sid, &req.negotiated)?;
        let next_rs = resilience::ratchet(&rs, &h, k.raw())?;
        let mut writer = PacketWriter::authenticated();
        writer.seq = req.writer_seq;
        let mut outbuf = Vec::new();
        let reply = resilience::Reply {
            q_s,
            r_s,
            mac: mac.to_vec(),
        };
        writer.write(&reply.encode(), &mut outbuf)?;
        writer.write(&[num::NEWKEYS], &mut outbuf)?;
        writer.set_key(&s2c, req.negotiated.zlib(false, true))?;
        writer.seq = 0;
        let mut reader = PacketReader::authenticated();
        reader.seq = req.reader_seq;
        Ok(ServerReconnect {
            outbuf,
            inbuf: Vec::new(),
            reader,
            writer,
            recv: c2s,
            recv_zlib: req.negotiated.zlib(false, false),
            got_newkeys: false,
            confirmed: false,
            r_c: q.r_c,
            r_s,
            next_rs,
            used_rs: rs,
            transcript: req.transcript.clone(),
            epoch: self.reconnect_epoch,
        })
    }

    /// Server, owning session: the client confirmed the keys; the session
    /// moves to the new transport. Its first packet is an ACK (which tells
    /// the client the server committed), then the retransmissions. Every
    /// other attempt still pending is void from now on: drop it.
    pub fn commit_reconnect(&mut self, sr: ServerReconnect, now: Instant) -> Result<()> {
        if !sr.confirmed {
            return Err(Error::Misuse("reconnect not confirmed"));
        }
        if sr.epoch != self.reconnect_epoch {
            return Err(Error::Misuse("reconnect superseded"));
        }
        let r = self
            .resilience
            .as_mut()
            .ok_or(Error::Misuse("resilience is not active"))?;
        // Checked before anything changes (acked() checks its range first).
        let skip = r
            .recv
            .checked_sub(sr.r_s)
            .ok_or(Error::Protocol("receive count went backwards"))?;
        r.acked(sr.r_c)?;
        r.skip = skip;
        let resend: Vec<Vec<u8>> = r.unacked_from(sr.r_c)?.map(<[u8]>::to_vec).collect();
        r.prev_rs = Some(sr.used_rs);
        r.rs = sr.next_rs;
        r.hold_acks = false;
        self.reconnects_pending = 0;
        self.reconnect_epoch += 1;
        self.kex = None;
        self.writer = sr.writer;
        self.reader = sr.reader;
        self.io.switch(sr.inbuf, sr.outbuf);
        self.peer_version = Some(sr.transcript.v_c);
        self.local_version = sr.transcript.v_s;
        self.send_ack(false)?;
        self.after_reconnect(now, resend)?;
        let r = self.process(now);
        self.fail_on_err(r)
    }

    /// Common to both sides once the new transport carries the session.
    fn after_reconnect(&mut self, now: Instant, resend: Vec<Vec<u8>>) -> Result<()> {
        if let Some(r) = self.resilience.as_mut() {
            r.hold_acks = false;
        }
        self.strict_kex = true;
        self.closed = false;
        self.now = now;
        self.last_kex = now;
        // A new path: measure its round trip before the retransmissions
        // queue up behind the probe.
        self.timers.new_path(now);
        self.channels.new_path();
        if self.role == Role::Client && self.suspect_timeout().is_some() {
            self.send_ack(true)?;
            self.timers.watch.want_reply_sent(now, None);
        }
        for p in resend {
            self.write_now(&p)?;
        }
        self.flush_deferred()?;
        self.events.push_back(Event::Reconnected);
        Ok(())
    }

    /// Server, on the new connection's engine (kex worker): bytes received
    /// after the reconnect request, to hand over with the socket.
    pub fn take_unprocessed_input(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.io.inbuf)
    }

    /// Server: the bytes a new connection's engine still has to send (its
    /// version line and KEXINIT) before the reply goes out.
    pub fn reconnect_failure(&mut self, refused: &Refused) -> Result<()> {
        self.write_now(&resilience::encode_failure(
            refused.code,
            &refused.description,
        ))?;
        self.closed = true;
        Ok(())
    }
}
