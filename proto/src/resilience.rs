//! The resilience extension (docs/PROTOCOL.md): names, messages, the
//! resume-secret derivations and the retransmit buffer.

use std::collections::VecDeque;

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use ressh_resilience::{Retransmit, Unit};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::wire::{Put, Reader};

/// The pseudo key-exchange name that negotiates the extension and marks a reconnect.
pub const NAME: &str = "resilience-v00@ressh.org";

pub const MSG_ACK: u8 = 240;
pub const MSG_INFO: u8 = 241;
pub const MSG_RECONNECT_REQUEST: u8 = 242;
pub const MSG_RECONNECT_REPLY: u8 = 243;
pub const MSG_RECONNECT_FAILURE: u8 = 244;

/// RECONNECT_FAILURE codes.
pub mod failure {
    pub const UNKNOWN_SESSION: u32 = 1;
    pub const AUTHENTICATION_FAILED: u32 = 2;
    pub const NOT_ALLOWED: u32 = 3;
    pub const TRY_AGAIN: u32 = 4;
}

/// Resilient payload bytes received after which an ACK is sent even when a
/// quarter of the peer's cap is more: frequent enough that the sender frees
/// its retransmit buffer in small batches it can reuse (cache-warm, no
/// allocator churn), rare enough to cost 0.004% of the data (a 36-byte ACK
/// per MiB).
pub const ACK_EVERY: usize = 1 << 20;

/// Unacknowledged resilient messages after which a party stops sending
/// channel data (as at its byte cap): a child writing one byte at a time
/// must not fill the cap with tiny messages, each of which costs memory
/// beyond its payload.
pub const DATA_MESSAGES: usize = 48 * 1024;

/// The hard bound on everything unacknowledged or queued for sending, data
/// or not: messages, and bytes above the cap. Past it the peer is not
/// acknowledging what it asks for (a flood of requests that want replies,
/// never ACKed) and the connection ends with DISCONNECT.
pub const MAX_MESSAGES: usize = 64 * 1024;
pub const MAX_BYTES_ABOVE_CAP: usize = 1 << 20;

/// Resilient messages received after which an ACK is sent whatever their
/// size, so that an honest peer's sender stays far below [`DATA_MESSAGES`].
pub const ACK_EVERY_MESSAGES: u64 = 4096;

/// Server: reconnect attempts accepted and not yet confirmed that a session
/// keeps at once. One more is refused with TRY_AGAIN; none is evicted.
pub const MAX_PENDING_RECONNECTS: usize = 4;

/// Server: verified reconnect requests remembered to recognise replays
/// (16-byte prefixes of MAC_C, 16 KiB). Only requests whose MAC verified
/// enter it, so only the real client's attempts fill it.
pub const SEEN_REQUESTS: usize = 1024;

/// Whether a message number is counted and retransmitted.
pub fn is_resilient(n: u8) -> bool {
    (80..=127).contains(&n)
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>> {
    let k = PKey::hmac(key)?;
    let mut s = Signer::new(MessageDigest::sha256(), &k)?;
    for p in parts {
        s.update(p)?;
    }
    Ok(Zeroizing::new(s.sign_to_vec()?))
}

/// RS_0 from the first key exchange.
pub fn resume_secret(k: &[u8], h: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let mut b = Zeroizing::new(Vec::new());
    b.put_mpint(k);
    b.put_string(h);
    b.put_str("ressh resume secret");
    Ok(Zeroizing::new(
        openssl::hash::hash(MessageDigest::sha256(), &b)?.to_vec(),
    ))
}

/// T_i from RS_i.
pub fn token(rs: &[u8]) -> Result<Vec<u8>> {
    Ok(hmac(rs, &[b"ressh resume token"])?.to_vec())
}

/// The transcript of a reconnect connection: version lines and KEXINITs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transcript {
    pub v_c: String,
    pub v_s: String,
    pub i_c: Vec<u8>,
    pub i_s: Vec<u8>,
}

impl Transcript {
    fn encode(&self, b: &mut Vec<u8>) {
        b.put_str(&self.v_c);
        b.put_str(&self.v_s);
        b.put_string(&self.i_c);
        b.put_string(&self.i_s);
    }
}

/// MAC_C: over the client's half of the transcript only, so the request
/// can be sent without waiting for the server (docs/PROTOCOL.md §5).
pub fn mac_c(
    rs: &[u8],
    v_c: &str,
    i_c: &[u8],
    token: &[u8],
    q_c: &[u8],
    r_c: u64,
) -> Result<Zeroizing<Vec<u8>>> {
    let mut b = Vec::new();
    b.put_str(v_c);
    b.put_string(i_c);
    b.put_string(token);
    b.put_string(q_c);
    b.put_u64(r_c);
    hmac(rs, &[b"client", &b])
}

#[allow(clippy::too_many_arguments)]
pub fn h_prime(
    t: &Transcript,
    token: &[u8],
    q_c: &[u8],
    q_s: &[u8],
    r_c: u64,
    r_s: u64,
    k: &[u8],
) -> Result<Vec<u8>> {
    let mut b = Zeroizing::new(Vec::new());
    t.encode(&mut b);
    b.put_string(token);
    b.put_string(q_c);
    b.put_string(q_s);
    b.put_u64(r_c);
    b.put_u64(r_s);
    b.put_mpint(k);
    Ok(openssl::hash::hash(MessageDigest::sha256(), &b)?.to_vec())
}

pub fn mac_s(rs: &[u8], h: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let mut b = Vec::new();
    b.put_string(h);
    hmac(rs, &[b"server", &b])
}

/// RS_{i+1}.
pub fn ratchet(rs: &[u8], h: &[u8], k: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let mut b = Zeroizing::new(Vec::new());
    b.put_string(h);
    b.put_mpint(k);
    hmac(rs, &[b"ressh ratchet", &b])
}

pub fn encode_ack(count: u64, want_reply: bool) -> Vec<u8> {
    let mut p = vec![MSG_ACK];
    p.put_u64(count);
    p.put_bool(want_reply);
    p
}

pub fn decode_ack(p: &[u8]) -> Result<(u64, bool)> {
    let mut r = Reader::new(&p[1..]);
    let c = r.u64()?;
    let w = r.bool()?;
    r.finish()?;
    Ok((c, w))
}

/// SSH_MSG_RESILIENCE_INFO (docs/PROTOCOL.md §4). `secs` is the server's
/// detach timeout when a server sends it, the client's keepalive interval
/// (0: none) when a client does.
pub fn encode_info(secs: u32, cap: u32) -> Vec<u8> {
    let mut p = vec![MSG_INFO];
    p.put_u32(secs);
    p.put_u32(cap);
    p
}

/// (seconds, buffer cap); see [`encode_info`].
pub fn decode_info(p: &[u8]) -> Result<(u32, u32)> {
    let mut r = Reader::new(&p[1..]);
    let d = r.u32()?;
    let c = r.u32()?;
    r.finish()?;
    Ok((d, c))
}

/// SSH_MSG_RECONNECT_REQUEST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub token: Vec<u8>,
    pub q_c: Vec<u8>,
    pub r_c: u64,
    pub mac: Vec<u8>,
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut p = vec![MSG_RECONNECT_REQUEST];
        p.put_string(&self.token);
        p.put_string(&self.q_c);
        p.put_u64(self.r_c);
        p.put_string(&self.mac);
        p
    }

    pub fn decode(p: &[u8]) -> Result<Request> {
        if p.first() != Some(&MSG_RECONNECT_REQUEST) {
            return Err(Error::Malformed("message number"));
        }
        let mut r = Reader::new(&p[1..]);
        let token = r.string()?;
        let q_c = r.string()?;
        let r_c = r.u64()?;
        let mac = r.string()?;
        r.finish()?;
        if token.len() != 32 || q_c.len() != 32 || mac.len() != 32 {
            return Err(Error::Malformed("reconnect request"));
        }
        Ok(Request {
            token: token.to_vec(),
            q_c: q_c.to_vec(),
            r_c,
            mac: mac.to_vec(),
        })
    }
}

/// SSH_MSG_RECONNECT_REPLY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub q_s: Vec<u8>,
    pub r_s: u64,
    pub mac: Vec<u8>,
}

impl Reply {
    pub fn encode(&self) -> Vec<u8> {
        let mut p = vec![MSG_RECONNECT_REPLY];
        p.put_string(&self.q_s);
        p.put_u64(self.r_s);
        p.put_string(&self.mac);
        p
    }

    pub fn decode(p: &[u8]) -> Result<Reply> {
        let mut r = Reader::new(&p[1..]);
        let q_s = r.string()?;
        let r_s = r.u64()?;
        let mac = r.string()?;
        r.finish()?;
        if q_s.len() != 32 || mac.len() != 32 {
            return Err(Error::Malformed("reconnect reply"));
        }
        Ok(Reply {
            q_s: q_s.to_vec(),
            r_s,
            mac: mac.to_vec(),
        })
    }
}

pub fn encode_failure(code: u32, description: &str) -> Vec<u8> {
    let mut p = vec![MSG_RECONNECT_FAILURE];
    p.put_u32(code);
    p.put_str(description);
    p
}

pub fn decode_failure(p: &[u8]) -> Result<(u32, String)> {
    let mut r = Reader::new(&p[1..]);
    let code = r.u32()?;
    let d = r.utf8()?.to_string();
    r.finish()?;
    Ok((code, d))
}

/// Per-connection resilience state: counters, the retransmit buffer and the
/// resume secret. Exported with the connection.
#[derive(Clone, Serialize, Deserialize)]
pub struct State {
    pub rs: Zeroizing<Vec<u8>>,
    /// Server: the secret before the last reconnect, still accepted once
    /// (docs/PROTOCOL.md §5); client: none.
    pub prev_rs: Option<Zeroizing<Vec<u8>>>,
    /// Client: the ratcheted secret, adopted when the server's first packet
    /// under the new keys arrives.
    pub next_rs: Option<Zeroizing<Vec<u8>>>,
    /// Counting started (after user authentication).
    pub active: bool,
    /// Resilient messages sent and not yet acknowledged (counted in messages).
    pub buffer: Retransmit,
    /// Resilient messages received.
    pub recv: u64,
    /// Receive count at the last ACK sent, and payload bytes since.
    pub acked_recv: u64,
    pub unacked_bytes: usize,
    /// Duplicates to drop after a reconnect (make-before-break).
    pub skip: u64,
    /// A reconnect is being prepared: send no ACK on the old connection, so
    /// the peer keeps everything from the count we announced.
    pub hold_acks: bool,
    /// Server: MAC_C prefixes of the verified reconnect requests seen,
    /// oldest first, at most [`SEEN_REQUESTS`]: one seen before is a replay.
    #[serde(default)]
    pub seen_requests: VecDeque<[u8; 16]>,
    /// Our cap and detach timeout, and the peer's (from INFO).
    pub local_cap: u32,
    pub local_detach: u32,
    pub peer_cap: Option<u32>,
    pub peer_detach: Option<u32>,
    /// Server: the keepalive interval the client announced in its INFO
    /// (seconds, nonzero); None when it announced none (0, as clients
    /// before this field did) or its INFO has not arrived.
    pub peer_keepalive: Option<u32>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "resilience({:?}, recv {}, skip {})",
            self.buffer, self.recv, self.skip
        )
    }
}

impl State {
    pub fn new(rs: Zeroizing<Vec<u8>>, local_cap: u32, local_detach: u32) -> State {
        State {
            rs,
            prev_rs: None,
            next_rs: None,
            active: false,
            buffer: Retransmit::new(Unit::Message),
            recv: 0,
            acked_recv: 0,
            unacked_bytes: 0,
            skip: 0,
            hold_acks: false,
            seen_requests: VecDeque::new(),
            local_cap,
            local_detach,
            peer_cap: None,
            peer_detach: None,
            peer_keepalive: None,
        }
    }

    /// Records a resilient message we send.
    pub fn sent(&mut self, payload: Vec<u8>) {
        self.buffer.push(payload);
    }

    /// Applies the peer's receive count; returns whether buffer space was freed.
    pub fn acked(&mut self, count: u64) -> Result<bool> {
        self.acked_with(count, drop)
    }

    /// [`Self::acked`], handing every freed payload to `reuse`.
    pub fn acked_with(&mut self, count: u64, reuse: impl FnMut(Vec<u8>)) -> Result<bool> {
        self.buffer
            .acked(count, reuse)
            .map_err(|_| Error::Protocol("acknowledgement count out of range"))
    }

    /// Buffered messages numbered `from` and above, for retransmission.
    pub fn unacked_from(&self, from: u64) -> Result<impl Iterator<Item = &[u8]>> {
        self.buffer
            .unacked_from(from)
            .map_err(|_| Error::Protocol("peer's receive count out of range"))
    }

    /// Room left under our cap for channel data: none once the buffer
    /// holds [`DATA_MESSAGES`] messages.
    pub fn room(&self) -> usize {
        if self.buffer.len() >= DATA_MESSAGES {
            return 0;
        }
        (self.local_cap as usize).saturating_sub(self.buffer.bytes())
    }

    /// Whether `msgs` more messages of `bytes` more bytes beside the
    /// retransmit buffer stay within the hard bound ([`MAX_MESSAGES`],
    /// the cap plus [`MAX_BYTES_ABOVE_CAP`]).
    pub fn within_bound(&self, msgs: usize, bytes: usize) -> bool {
        self.buffer.len().saturating_add(msgs) <= MAX_MESSAGES
            && self.buffer.bytes().saturating_add(bytes)
                <= (self.local_cap as usize).saturating_add(MAX_BYTES_ABOVE_CAP)
    }

    /// Whether an ACK is due by volume: a quarter of the peer's cap, but at
    /// most every [`ACK_EVERY`] bytes, or [`ACK_EVERY_MESSAGES`] messages
    /// (docs/PROTOCOL.md §4).
    pub fn ack_due_by_volume(&self) -> bool {
        let threshold =
            (self.peer_cap.unwrap_or(self.local_cap) / 4).clamp(1, ACK_EVERY as u32) as usize;
        self.unacked_bytes >= threshold
            || self.recv.saturating_sub(self.acked_recv) >= ACK_EVERY_MESSAGES
    }

    pub fn token(&self) -> Result<Vec<u8>> {
        token(&self.rs)
    }

    /// Server: records the MAC of a verified reconnect request; false if it
    /// was seen before (a replay). The oldest entry goes past
    /// [`SEEN_REQUESTS`].
    pub fn first_sighting(&mut self, mac: &[u8]) -> bool {
        let mut key = [0u8; 16];
        let n = mac.len().min(16);
        key[..n].copy_from_slice(&mac[..n]);
        // MAC_C is public (sent in clear): no need for a constant-time scan.
        if self.seen_requests.contains(&key) {
            return false;
        }
        if self.seen_requests.len() >= SEEN_REQUESTS {
            self.seen_requests.pop_front();
        }
        self.seen_requests.push_back(key);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kex::curve25519::Ephemeral;
    use crate::kex::{derive, Hash, SecretForm, SharedSecret};
    use crate::wire::hex;

    #[test]
    fn buffer_frees_on_ack_and_bounds_counts() {
        let mut s = State::new(Zeroizing::new(vec![1; 32]), 100, 0);
        for i in 0..5u8 {
            s.sent(vec![80, i]);
        }
        assert_eq!(s.buffer.bytes(), 10);
        assert!(s.acked(2).unwrap());
        assert_eq!(s.buffer.chunks().count(), 3);
        assert_eq!(s.unacked_from(3).unwrap().count(), 2);
        assert!(s.acked(1).is_err(), "backwards");
        assert!(s.acked(6).is_err(), "beyond what was sent");
        assert!(s.unacked_from(1).is_err(), "already freed");
        assert!(!s.acked(2).unwrap());
    }

    /// docs/PROTOCOL.md §3 and §5 against tools/vectors/vectors.py, which
    /// computes them from the document's text with its own encoders and
    /// X25519: RS_0 for shared secrets of three shapes (top bit clear, top
    /// bit set, leading zero bytes: the mpint encodings differ), T_0, and a
    /// reconnect with RS_0 (MAC_C, H', MAC_S, the ratchet, T_1).
    #[test]
    fn derivations_match_independent_vectors() {
        let h0 = hex("606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f");
        for (k, rs) in [
            (
                "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
                "5ecd7ce78f253bc0aa6fb4b1c662dc299f825da2b0e688fa30e82fde8fd411d3",
            ),
            (
                "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
                "69c95a09bc57827104b77414f113c155ae83921c6e0858dc10dde85eed5d37d4",
            ),
            (
                "0000f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d",
                "31dab659f972b3e69abdbe54790fe890c1ff6ffb47e43c6ae8121a6a6b4ab21f",
            ),
        ] {
            assert_eq!(
                &resume_secret(&hex(k), &h0).unwrap()[..],
                &hex(rs)[..],
                "K = {k}"
            );
        }
        let rs0 = resume_secret(
            &hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"),
            &h0,
        )
        .unwrap();
        let t0 = token(&rs0).unwrap();
        assert_eq!(
            t0,
            hex("3073ff4759a87a13a8091903a93a08f3d58fc4b9c4e362810dae35d6587047b7")
        );

        // The reconnect: fixed ephemeral keys through the project's X25519.
        let e_c = Ephemeral::from_private(&hex(
            "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
        ));
        let e_s = Ephemeral::from_private(&hex(
            "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf",
        ));
        let (q_c, q_s) = (e_c.public().unwrap(), e_s.public().unwrap());
        assert_eq!(
            q_c,
            hex("605a725d2a4adfeeb1a29e17edd621c1b7593ee8cdbc44ac6c4ab6e2f805d23c")
        );
        assert_eq!(
            q_s,
            hex("dc2cca31e8e43bbd91dff7e475cca3347eb478107d5bd765aba4ae4a30c35d44")
        );
        let k2 = e_s.agree(&q_c).unwrap();
        assert_eq!(
            &k2[..],
            &hex("3b87c5035cce13678dd93d2dbc3a3d42039ebec86444a1ff82cd61b84c6fe968")[..]
        );
        let (r_c, r_s) = (0x0102_0304_0506_0708, 42);
        let tr = Transcript {
            v_c: "SSH-2.0-ressh_0.1".into(),
            v_s: "SSH-2.0-resshd_0.1".into(),
            i_c: hex("14303132333435363738393a3b3c3d3e3f7265636f6e6e656374206b6578696e6974"),
            i_s: hex("14505152535455565758595a5b5c5d5e5f736572766572206b6578696e6974"),
        };
        assert_eq!(
            &mac_c(&rs0, &tr.v_c, &tr.i_c, &t0, &q_c, r_c).unwrap()[..],
            &hex("9b7ca7ae968d952ce6111a6a5522caebdafb780c920c85e5f0b9a6fa2ada0088")[..]
        );
        let h2 = h_prime(&tr, &t0, &q_c, &q_s, r_c, r_s, &k2).unwrap();
        assert_eq!(
            h2,
            hex("760bcfe11354b2ae12a3b8303e5ea7a3dcf65148e5b6cb5205b1df571ac0724d")
        );
        assert_eq!(
            &mac_s(&rs0, &h2).unwrap()[..],
            &hex("9fd3a432a2617fd4a543ca9096c7e7ca40098c6abef41f16da64fb272d2d1f43")[..]
        );
        let rs1 = ratchet(&rs0, &h2, &k2).unwrap();
        assert_eq!(
            &rs1[..],
            &hex("8bbd47c6522e16c0311bb1e49c5bb8aeb61c704df7b45349834edfffa5a7af9f")[..]
        );
        assert_eq!(
            token(&rs1).unwrap(),
            hex("54107a3996533a4e5513bad6585ffcab0befa198abfd73fe62bfdc20dc6cbe42")
        );
        // The new traffic keys: K', H' and the original session id.
        let k2 = SharedSecret::new(k2, Hash::Sha256, SecretForm::Mpint);
        assert_eq!(
            &derive(&k2, &h2, b'C', &h0, 32).unwrap()[..],
            &hex("9839dca7755a64d8436faefb58cbdabb3aea8d6073153ff59529e2cd09b89df5")[..]
        );
        // After a hybrid first exchange: K a 64-byte hash output (still an
        // mpint in RS_0), H and the session id 64 bytes.
        let k64: Vec<u8> = (0x80..0xc0).collect();
        let h64: Vec<u8> = (0x40..0x80).collect();
        assert_eq!(
            &resume_secret(&k64, &h64).unwrap()[..],
            &hex("bdcca972383b32141430c5f0f1805894b1a02afbb98b323d093e59f3dbd0d4ef")[..]
        );
        assert_eq!(
            &derive(&k2, &h2, b'C', &h64, 32).unwrap()[..],
            &hex("cb0a89ac0b1ca76f2b12745b8a031362fb7fe84ef4ff03510f7cc80e72016985")[..]
        );
        // HMAC-SHA-256 itself, RFC 4231 test case 2.
        let tag = hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"]).unwrap();
        assert_eq!(
            &tag[..],
            &hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")[..]
        );
    }

    #[test]
    fn messages_round_trip_and_reject_garbage() {
        let r = Request {
            token: vec![1; 32],
            q_c: vec![2; 32],
            r_c: 9,
            mac: vec![3; 32],
        };
        assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        let mut bad = r.encode();
        bad.push(0);
        assert!(Request::decode(&bad).is_err());
        assert!(Request::decode(&[MSG_RECONNECT_REQUEST, 0, 0]).is_err());
        assert_eq!(decode_ack(&encode_ack(7, true)).unwrap(), (7, true));
        assert_eq!(
            decode_info(&encode_info(3600, 1 << 20)).unwrap(),
            (3600, 1 << 20)
        );
        assert_eq!(
            decode_failure(&encode_failure(1, "gone")).unwrap(),
            (1, "gone".to_string())
        );
    }
}
