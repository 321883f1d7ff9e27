//! Key exchange: algorithm negotiation (RFC 4253 §7.1), curve25519-sha256
//! (RFC 8731) and key derivation (RFC 4253 §7.2).

use openssl::derive::Deriver;
use openssl::hash::{Hasher, MessageDigest};
use openssl::pkey::{Id, PKey, Private};
use zeroize::Zeroizing;

use crate::cipher::{self, KeyMaterial};
use crate::error::{Error, Result};
use crate::msg::KexInit;
use crate::wire::Put;

pub const CURVE25519: &str = "curve25519-sha256";
pub const CURVE25519_LIBSSH: &str = "curve25519-sha256@libssh.org";
pub const EXT_INFO_C: &str = "ext-info-c";
pub const EXT_INFO_S: &str = "ext-info-s";
pub const STRICT_C: &str = "kex-strict-c-v00@openssh.com";
pub const STRICT_S: &str = "kex-strict-s-v00@openssh.com";

/// Key-exchange methods in the registry, in preference order.
pub static KEX_ALGS: &[&str] = &[CURVE25519, CURVE25519_LIBSSH];

/// Names in a KEXINIT kex list that are markers, not methods.
pub fn is_pseudo(name: &str) -> bool {
    name.starts_with("ext-info-") || name.starts_with("kex-strict-")
}

/// The algorithms both sides agreed on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Negotiated {
    pub kex: String,
    pub host_key: String,
    pub cipher_c2s: String,
    pub cipher_s2c: String,
    pub mac_c2s: String,
    pub mac_s2c: String,
}

fn first_match(client: &[String], server: &[String], what: &'static str) -> Result<String> {
    client
        .iter()
        .find(|c| server.contains(c))
        .cloned()
        .ok_or(Error::NoCommonAlgorithm(what))
}

/// RFC 4253 §7.1: for each category the first client algorithm the server supports.
pub fn negotiate(client: &KexInit, server: &KexInit) -> Result<Negotiated> {
    let methods: Vec<String> = client
        .kex
        .iter()
        .filter(|n| !is_pseudo(n))
        .cloned()
        .collect();
    let kex = first_match(&methods, &server.kex, "key exchange method")?;
    let host_key = first_match(&client.host_key, &server.host_key, "host key algorithm")?;
    let cipher_c2s = first_match(&client.cipher_c2s, &server.cipher_c2s, "cipher")?;
    let cipher_s2c = first_match(&client.cipher_s2c, &server.cipher_s2c, "cipher")?;
    let mac_for = |c: &str, cl: &[String], sv: &[String]| -> Result<String> {
        if cipher::cipher(c)?.aead {
            Ok(String::new())
        } else {
            first_match(cl, sv, "MAC")
        }
    };
    let mac_c2s = mac_for(&cipher_c2s, &client.mac_c2s, &server.mac_c2s)?;
    let mac_s2c = mac_for(&cipher_s2c, &client.mac_s2c, &server.mac_s2c)?;
    let none = vec!["none".to_string()];
    first_match(&client.comp_c2s, &none, "compression")?;
    first_match(&client.comp_s2c, &none, "compression")?;
    first_match(&server.comp_c2s, &none, "compression")?;
    first_match(&server.comp_s2c, &none, "compression")?;
    Ok(Negotiated {
        kex,
        host_key,
        cipher_c2s,
        cipher_s2c,
        mac_c2s,
        mac_s2c,
    })
}

/// Whether the guessed first kex packet (first_kex_packet_follows) was right:
/// the first kex and host key algorithms of both lists agree.
pub fn guess_was_right(client: &KexInit, server: &KexInit) -> bool {
    client.kex.first() == server.kex.first() && client.host_key.first() == server.host_key.first()
}

/// An ephemeral X25519 key pair.
pub struct Ephemeral {
    key: PKey<Private>,
}

impl Ephemeral {
    pub fn generate() -> Result<Self> {
        Ok(Ephemeral {
            key: PKey::generate_x25519()?,
        })
    }

    pub fn public(&self) -> Result<Vec<u8>> {
        Ok(self.key.raw_public_key()?)
    }

    /// The shared secret with the peer's 32-byte public value. Refuses the
    /// all-zero result of a low-order point (RFC 8731 §3).
    pub fn agree(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if peer.len() != 32 {
            return Err(Error::Malformed("curve25519 public value"));
        }
        let peer = PKey::public_key_from_raw_bytes(peer, Id::X25519)?;
        let mut d = Deriver::new(&self.key)?;
        d.set_peer(&peer)?;
        let secret = Zeroizing::new(d.derive_to_vec()?);
        if openssl::memcmp::eq(&secret, &[0u8; 32]) {
            return Err(Error::Malformed("curve25519 shared secret is zero"));
        }
        Ok(secret)
    }
}

/// The exchange hash H of curve25519-sha256 (RFC 8731 §3, RFC 5656 §4).
#[allow(clippy::too_many_arguments)]
pub fn exchange_hash(
    v_c: &str,
    v_s: &str,
    i_c: &[u8],
    i_s: &[u8],
    k_s: &[u8],
    q_c: &[u8],
    q_s: &[u8],
    k: &[u8],
) -> Result<Vec<u8>> {
    let mut b = Zeroizing::new(Vec::with_capacity(1024));
    b.put_str(v_c);
    b.put_str(v_s);
    b.put_string(i_c);
    b.put_string(i_s);
    b.put_string(k_s);
    b.put_string(q_c);
    b.put_string(q_s);
    b.put_mpint(k);
    Ok(openssl::hash::hash(MessageDigest::sha256(), &b)?.to_vec())
}

/// RFC 4253 §7.2 key derivation of `len` bytes with letter `x`.
pub fn derive(
    k: &[u8],
    h: &[u8],
    x: u8,
    session_id: &[u8],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    let mut kenc = Zeroizing::new(Vec::new());
    kenc.put_mpint(k);
    let mut out = Zeroizing::new(Vec::with_capacity(len + 32));
    let mut hs = Hasher::new(MessageDigest::sha256())?;
    hs.update(&kenc)?;
    hs.update(h)?;
    hs.update(&[x])?;
    hs.update(session_id)?;
    out.extend_from_slice(&hs.finish()?);
    while out.len() < len {
        let mut hs = Hasher::new(MessageDigest::sha256())?;
        hs.update(&kenc)?;
        hs.update(h)?;
        hs.update(&out)?;
        let d = hs.finish()?;
        out.extend_from_slice(&d);
    }
    out.truncate(len);
    Ok(out)
}

/// Key material for both directions after a key exchange.
pub fn derive_keys(
    k: &[u8],
    h: &[u8],
    session_id: &[u8],
    n: &Negotiated,
) -> Result<(KeyMaterial, KeyMaterial)> {
    let one = |cipher_name: &str,
               mac_name: &str,
               iv_x: u8,
               key_x: u8,
               mac_x: u8|
     -> Result<KeyMaterial> {
        let c = cipher::cipher(cipher_name)?;
        let (mac, mac_len) = if mac_name.is_empty() {
            (String::new(), 0)
        } else {
            (mac_name.to_string(), cipher::mac(mac_name)?.key_len)
        };
        Ok(KeyMaterial {
            cipher: cipher_name.to_string(),
            mac,
            key: derive(k, h, key_x, session_id, c.key_len)?.to_vec(),
            iv: derive(k, h, iv_x, session_id, c.iv_len)?.to_vec(),
            mac_key: derive(k, h, mac_x, session_id, mac_len)?.to_vec(),
        })
    };
    let c2s = one(&n.cipher_c2s, &n.mac_c2s, b'A', b'C', b'E')?;
    let s2c = one(&n.cipher_s2c, &n.mac_s2c, b'B', b'D', b'F')?;
    Ok((c2s, s2c))
}

#[cfg(test)]
impl Ephemeral {
    /// A fixed key pair, for test vectors.
    pub(crate) fn from_private(raw: &[u8]) -> Ephemeral {
        Ephemeral {
            key: PKey::private_key_from_raw_bytes(raw, Id::X25519).unwrap(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Vectors from tools/vectors/vectors.py, which computes them from RFC
    //! 4253 §7.2 and §8, RFC 5656 §4 and RFC 8731 §3 with its own encoders.
    use super::*;
    use crate::wire::hex;

    #[test]
    fn x25519_rfc7748_vector() {
        // RFC 7748 §6.1: Alice's private key and Bob's public key give K.
        let e = Ephemeral::from_private(&hex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        assert_eq!(
            e.public().unwrap(),
            hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        let k = e
            .agree(&hex(
                "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
            ))
            .unwrap();
        assert_eq!(
            &k[..],
            &hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")[..]
        );
        assert!(e.agree(&[0u8; 32]).is_err(), "low-order point refused");
        assert!(e.agree(&[1u8; 31]).is_err());
    }

    /// Shared secrets of three shapes (vectors.py's k_real, k_high,
    /// k_zero): an X25519 output with its top bit clear, one with it set
    /// (the mpint gains a 0x00) and one with leading zero bytes (the mpint
    /// drops them, then gains a 0x00).
    const K_REAL: &str = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
    const K_HIGH: &str = "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f";
    const K_ZERO: &str = "0000f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d";

    #[test]
    fn exchange_hash_matches_independent_vectors() {
        let i_c = hex("14101112131415161718191a1b1c1d1e1f636c69656e74206b6578696e6974");
        let i_s = hex("14202122232425262728292a2b2c2d2e2f736572766572206b6578696e6974");
        let k_s = hex("0000000b7373682d6564323535313900000020
             404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f");
        let q_c = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        let q_s = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        for (k, h) in [
            (
                K_REAL,
                "ba021c3bd8ac5bab4a6bc674b7289947cb04551132fd5cdabe2e036258b65ffd",
            ),
            (
                K_HIGH,
                "825334d0acce89f679ec10e7de3e5bfa46fad38f0a41d48c7a7b1bd4b060c54d",
            ),
            (
                K_ZERO,
                "38cccfcda06777b02bd42d1c00ceb4d893d2bd83db7bcb7a54e9f137cd788d8c",
            ),
        ] {
            let got = exchange_hash(
                "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3",
                "SSH-2.0-resshd_0.1",
                &i_c,
                &i_s,
                &k_s,
                &q_c,
                &q_s,
                &hex(k),
            )
            .unwrap();
            assert_eq!(got, hex(h), "K = {k}");
        }
    }

    #[test]
    fn derivation_matches_independent_vector() {
        // K = mpint(0x01..0x20), H = 32 x 0x11, session_id = 32 x 0x22:
        // two blocks, the second from the first.
        let k: Vec<u8> = (1..=32).collect();
        let out = derive(&k, &[0x11; 32], b'C', &[0x22; 32], 64).unwrap();
        assert_eq!(
            &out[..],
            &hex(
                "5069068aa9749add4d61d1d5ceff418d2e74890fde11c71adc4310ed904c9914
                 f968cfcaf1a28b1ec231a03d9dd6ed8ed7a9aec1a11a27f45d00d223e6177bb3"
            )[..]
        );
    }
}
