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

/// E: a per-connection value both ends of a TLS connection share
/// (RFC 8446 §7.5 exporter), binding the RESUME exchange to it.
pub fn resume_binding(ssl: &SslRef) -> Result<Zeroizing<[u8; LEN]>, openssl::error::ErrorStack> {
    let mut e = Zeroizing::new([0u8; LEN]);
    ssl.export_keying_material(&mut e[..], LABEL_RESUME, Some(&[]))?;
    Ok(e)
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
        let mut rs = Zeroizing::new([0u8; LEN]);
        ssl.export_keying_material(&mut rs[..], LABEL_SECRET, Some(&[]))?;
        Ok(Secret(rs))
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

    #[test]
    fn derivations_differ() {
        let s = Secret(Zeroizing::new([1; LEN]));
        let e = [2; LEN];
        let n = s.ratchet(&e);
        assert_ne!(n.token(), s.token());
        assert_ne!(
            s.resume_mac(Role::Client, &e, 1),
            s.resume_mac(Role::Server, &e, 1)
        );
        assert_ne!(
            s.resume_mac(Role::Client, &e, 1),
            s.resume_mac(Role::Client, &e, 2)
        );
        assert_ne!(n.ratchet(&e).token(), n.token());
        for (b, a) in [(&[0u8][..], Answer::New), (&[3], Answer::Refused)] {
            assert_eq!(Answer::decode(b), Some(a));
        }
        assert_eq!(Answer::decode(&[4]), None);
    }
}
