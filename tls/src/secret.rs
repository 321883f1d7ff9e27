//! The extension's bodies and the reconnect secrets (docs/restls.md §2, §3, §5).

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::ssl::SslRef;
use zeroize::Zeroizing;

/// The extension's code point, from the private-use range 65280–65535.
pub const EXT_TYPE: u16 = 0xFF5A;

const LABEL_SECRET: &str = "EXPORTER-restls-secret";
const LABEL_RESUME: &str = "EXPORTER-restls-resume";

pub const LEN: usize = 32;
const HELLO_NEW: u8 = 0;
const HELLO_RECONNECT: u8 = 1;
const HELLO_RECONNECT_LEN: usize = 1 + 3 * LEN;

/// The extension in a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A new resilient connection.
    New,
    /// Continue the connection whose current token is `token`.
    Reconnect {
        token: [u8; LEN],
        nonce: [u8; LEN],
        mac: [u8; LEN],
    },
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Hello::New => vec![HELLO_NEW],
            Hello::Reconnect { token, nonce, mac } => {
                let mut b = Vec::with_capacity(HELLO_RECONNECT_LEN);
                b.push(HELLO_RECONNECT);
                b.extend_from_slice(token);
                b.extend_from_slice(nonce);
                b.extend_from_slice(mac);
                b
            }
        }
    }

    /// Strict: exactly one of the two forms.
    pub fn decode(b: &[u8]) -> Option<Hello> {
        match b {
            [HELLO_NEW] => Some(Hello::New),
            [HELLO_RECONNECT, rest @ ..] if b.len() == HELLO_RECONNECT_LEN => {
                Some(Hello::Reconnect {
                    token: rest[..LEN].try_into().ok()?,
                    nonce: rest[LEN..2 * LEN].try_into().ok()?,
                    mac: rest[2 * LEN..].try_into().ok()?,
                })
            }
            _ => None,
        }
    }
}

/// The server's answer in EncryptedExtensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A new resilient connection.
    New = 0,
    /// Reconnect accepted so far; the RESUME exchange decides.
    Accepted = 1,
    /// No connection has this token (ended, timed out).
    Unknown = 2,
    /// The token's MAC did not verify, or the nonce was seen before.
    Refused = 3,
}

impl Answer {
    pub fn decode(b: &[u8]) -> Option<Answer> {
        match b {
            [0] => Some(Answer::New),
            [1] => Some(Answer::Accepted),
            [2] => Some(Answer::Unknown),
            [3] => Some(Answer::Refused),
            _ => None,
        }
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; LEN] {
    // HMAC-SHA-256 with a 32-byte key cannot fail but for memory exhaustion.
    let k = PKey::hmac(key).expect("HMAC key");
    let mut s = Signer::new(MessageDigest::sha256(), &k).expect("HMAC");
    for p in parts {
        s.update(p).expect("HMAC update");
    }
    let mut out = [0u8; LEN];
    s.sign(&mut out).expect("HMAC final");
    out
}

/// Constant-time equality of two MACs.
pub fn mac_eq(a: &[u8; LEN], b: &[u8; LEN]) -> bool {
    openssl::memcmp::eq(a, b)
}

/// `Exporter(label, 32)` of docs/restls.md: RFC 5705 / RFC 8446 §7.5
/// keying material with **no** context. Under TLS 1.3 an empty context is
/// the same, under TLS 1.2 it is not (the PRF seed would carry a zero
/// length), and the document, like `openssl s_server -keymatexport`, uses
/// none.
fn export(ssl: &SslRef, label: &str) -> Result<Zeroizing<[u8; LEN]>, openssl::error::ErrorStack> {
    let mut out = Zeroizing::new([0u8; LEN]);
    ssl.export_keying_material(&mut out[..], label, None)?;
    Ok(out)
}

/// E: a per-connection value both ends of a TLS connection share, binding
/// the RESUME exchange to it.
pub fn resume_binding(ssl: &SslRef) -> Result<Zeroizing<[u8; LEN]>, openssl::error::ErrorStack> {
    export(ssl, LABEL_RESUME)
}

/// RS_i, the secret of a resilient connection; wiped on drop.
#[derive(Clone)]
pub struct Secret(Zeroizing<[u8; LEN]>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Which end computes a RESUME MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

impl Secret {
    /// RS_0, from the first TLS connection.
    pub fn initial(ssl: &SslRef) -> Result<Secret, openssl::error::ErrorStack> {
        Ok(Secret(export(ssl, LABEL_SECRET)?))
    }

    /// T_i, the connection identifier sent in a reconnect's ClientHello.
    pub fn token(&self) -> [u8; LEN] {
        hmac(&self.0[..], &[b"restls token"])
    }

    /// The ClientHello MAC over the token and the client's fresh nonce.
    pub fn hello_mac(&self, token: &[u8; LEN], nonce: &[u8; LEN]) -> [u8; LEN] {
        hmac(&self.0[..], &[b"restls hello", token, nonce])
    }

    /// A reconnect ClientHello with a fresh nonce.
    pub fn hello(&self) -> Hello {
        let token = self.token();
        let mut nonce = [0u8; LEN];
        openssl::rand::rand_bytes(&mut nonce).expect("random nonce");
        let mac = self.hello_mac(&token, &nonce);
        Hello::Reconnect { token, nonce, mac }
    }

    /// The MAC of a RESUME frame sent by `role` on the connection with
    /// binding `e`.
    pub fn resume_mac(&self, role: Role, e: &[u8; LEN], count: u64) -> [u8; LEN] {
        let who: &[u8] = match role {
            Role::Client => b"restls client resume",
            Role::Server => b"restls server resume",
        };
        hmac(&self.0[..], &[who, e, &count.to_be_bytes()])
    }

    /// RS_{i+1}, after a reconnect whose new connection has binding `e`.
    pub fn ratchet(&self, e: &[u8; LEN]) -> Secret {
        Secret(Zeroizing::new(hmac(&self.0[..], &[b"restls ratchet", e])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trip_and_strictness() {
        let s = Secret(Zeroizing::new([5; LEN]));
        let h = s.hello();
        assert_eq!(Hello::decode(&h.encode()), Some(h.clone()));
        let mut long = h.encode();
        long.push(0);
        assert_eq!(Hello::decode(&long), None);
        assert_eq!(Hello::decode(&[]), None);
        assert_eq!(Hello::decode(&[0, 0]), None);
        assert_eq!(Hello::decode(&[2]), None);
        assert_eq!(Hello::decode(&[0]), Some(Hello::New));
        let Hello::Reconnect { token, nonce, mac } = h else {
            panic!("reconnect")
        };
        assert_eq!(token, s.token());
        assert!(mac_eq(&mac, &s.hello_mac(&token, &nonce)));
        assert_ne!(s.hello(), s.hello(), "fresh nonce");
    }

    fn hex(s: &str) -> [u8; LEN] {
        let v: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    /// docs/restls.md §2, §3 and §5 against tools/vectors/vectors.py, which
    /// computes them from the document's text; RS_0 stands for the first
    /// connection's exporter value, E for the new connection's binding
    /// (the exporter itself: tests/exporter.rs, against openssl s_server).
    #[test]
    fn derivations_match_independent_vectors() {
        let s = Secret(Zeroizing::new(hex(
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        )));
        let nonce = hex("e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
        let e = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
        let t0 = s.token();
        assert_eq!(
            t0,
            hex("3285a4d1b360337507b9c23f6f91ac4a034c0c970149c37376b3a790cc8f5a5e")
        );
        assert_eq!(
            s.hello_mac(&t0, &nonce),
            hex("750278c68e433195daff030d7ac34db7594292fe1d8390fe7bbdf91fdfa5b630")
        );
        assert_eq!(
            s.resume_mac(Role::Client, &e, 0x0102_0304_0506_0708),
            hex("01b7abccc1abe27c4486adf8253f82f2ba625296880cc477d85d076ed520b32b")
        );
        assert_eq!(
            s.resume_mac(Role::Server, &e, 7),
            hex("539099eaa3301d7e9c5afac00df8b5325241e9a057a5341328a00083df634539")
        );
        let next = s.ratchet(&e);
        assert_eq!(
            *next.0,
            hex("d4c39058f54bd8738daa46c0174978bb1cf511387d658e82c6470f71f14e0c6f")
        );
        assert_eq!(
            next.token(),
            hex("1a1ba5bd0d796f12e5503a0cee602ca8ada2d3496a4e2bb84b9d9d673f38fc05")
        );
    }

    #[test]
    fn answers_decode_strictly() {
        for (b, a) in [(&[0u8][..], Answer::New), (&[3], Answer::Refused)] {
            assert_eq!(Answer::decode(b), Some(a));
        }
        assert_eq!(Answer::decode(&[4]), None);
    }
}
