//! Key exchange: algorithm negotiation (RFC 4253 §7.1), the registry of
//! methods ([`METHODS`], one file each), the exchange hash and key
//! derivation (RFC 4253 §7.2).
//!
//! A method is what differs between key exchanges: its name, its hash, the
//! client's init bytes (SSH_MSG_KEX_ECDH_INIT, which the hybrid methods
//! call KEX_HYBRID_INIT: same number, same shape), the server's reply bytes
//! computed from them with the shared secret K, the client's K from the
//! reply, and how K is encoded where it is hashed (an mpint for ECDH, a
//! string for the hybrid KEMs). The connection only moves these bytes;
//! adding a method means adding its file and one line to [`METHODS`].

use openssl::hash::{Hasher, MessageDigest};
use zeroize::Zeroizing;

use crate::cipher::{self, KeyMaterial};
use crate::error::{Error, Result};
use crate::msg::KexInit;
use crate::wire::Put;

pub mod curve25519;
pub mod dh;
pub mod ecdh;
pub mod gex;
mod hybrid;
pub mod mlkem768x25519;
pub mod sntrup761x25519;

pub const EXT_INFO_C: &str = "ext-info-c";
pub const EXT_INFO_S: &str = "ext-info-s";
pub const STRICT_C: &str = "kex-strict-c-v00@openssh.com";
pub const STRICT_S: &str = "kex-strict-s-v00@openssh.com";

/// The registry: key-exchange methods in preference order, the default
/// ones (OpenSSH 10's default list) first.
pub const METHODS: &[Method] = &[
    mlkem768x25519::MLKEM768X25519_SHA256,
    sntrup761x25519::SNTRUP761X25519_SHA512,
    sntrup761x25519::SNTRUP761X25519_SHA512_OPENSSH,
    curve25519::CURVE25519_SHA256,
    curve25519::CURVE25519_SHA256_LIBSSH,
    ecdh::NISTP256,
    ecdh::NISTP384,
    ecdh::NISTP521,
    gex::GEX_SHA256,
    dh::GROUP16_SHA512,
    dh::GROUP18_SHA512,
    dh::GROUP14_SHA256,
    dh::GROUP14_SHA1,
    gex::GEX_SHA1,
];

/// The names of the default [`METHODS`], in the same order.
pub static KEX_ALGS: &[&str] = &names::<{ count(true) }>(true);

/// The names of every method of [`METHODS`], in the same order: what a
/// configuration may name.
pub static KEX_SUPPORTED: &[&str] = &names::<{ count(false) }>(false);

const fn count(defaults_only: bool) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < METHODS.len() {
        if METHODS[i].default || !defaults_only {
            n += 1;
        }
        i += 1;
    }
    n
}

const fn names<const N: usize>(defaults_only: bool) -> [&'static str; N] {
    let mut out = [""; N];
    let (mut i, mut n) = (0, 0);
    while i < METHODS.len() {
        if METHODS[i].default || !defaults_only {
            out[n] = METHODS[i].name;
            n += 1;
        }
        i += 1;
    }
    out
}

/// The hash of a method: of the exchange hash H and of the key derivation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self) -> MessageDigest {
        match self {
            Hash::Sha1 => MessageDigest::sha1(),
            Hash::Sha256 => MessageDigest::sha256(),
            Hash::Sha384 => MessageDigest::sha384(),
            Hash::Sha512 => MessageDigest::sha512(),
        }
    }

    /// The length of its output in bytes (of an exchange hash).
    pub fn output_len(self) -> usize {
        self.digest().size()
    }

    /// The hash of the concatenation of `parts` (the hybrid methods' K).
    pub fn of(self, parts: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>> {
        let mut h = Hasher::new(self.digest())?;
        for p in parts {
            h.update(p)?;
        }
        let mut d = h.finish()?;
        let out = Zeroizing::new(d.to_vec());
        zeroize::Zeroize::zeroize(&mut *d);
        Ok(out)
    }
}

/// How a method encodes its shared secret K in the exchange hash and the
/// key derivation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretForm {
    /// An mpint (RFC 4253 §8, RFC 5656 §4): the ECDH methods.
    Mpint,
    /// A string: the hybrid post-quantum methods, whose K is itself a hash.
    String,
}

/// A key-exchange method in the registry.
pub struct Method {
    pub name: &'static str,
    pub hash: Hash,
    pub secret: SecretForm,
    /// In the default list (else only when configured).
    pub default: bool,
    /// Diffie-Hellman group exchange ([`gex`]): a request and a group
    /// precede the init, and the method's own `client` / `server` are not
    /// used.
    pub group_exchange: bool,
    /// Client: a fresh ephemeral state, whose [`ClientKex::init`] bytes go
    /// in SSH_MSG_KEX_ECDH_INIT.
    pub client: fn() -> Result<Box<dyn ClientKex>>,
    /// Server: its half, from the client's init bytes (hostile, checked
    /// here).
    pub server: fn(&[u8]) -> Result<ServerHalf>,
}

/// The server's half of an exchange.
pub struct ServerHalf {
    /// The bytes for SSH_MSG_KEX_ECDH_REPLY.
    pub reply: Vec<u8>,
    /// The raw shared secret.
    pub k: Zeroizing<Vec<u8>>,
}

/// The client's half of a method between its init and the server's reply.
pub trait ClientKex: Send {
    /// The bytes the client sends.
    fn init(&self) -> &[u8];
    /// The raw shared secret from the server's reply bytes (hostile,
    /// checked here).
    fn finish(self: Box<Self>, reply: &[u8]) -> Result<Zeroizing<Vec<u8>>>;
}

impl Method {
    /// Server: the reply bytes and K, from the client's init bytes.
    pub fn server_reply(&self, init: &[u8]) -> Result<(Vec<u8>, SharedSecret)> {
        let s = (self.server)(init).map_err(refused)?;
        Ok((s.reply, self.secret(s.k)))
    }

    /// Server, group exchange: the reply bytes and K in the group sent.
    pub fn server_reply_in(
        &self,
        group: &gex::Group,
        init: &[u8],
    ) -> Result<(Vec<u8>, SharedSecret)> {
        let x = group.exponent()?;
        let k = x.agree(init).map_err(refused)?;
        Ok((x.public().to_vec(), self.secret(k)))
    }

    /// Client: K from the server's reply bytes.
    pub fn client_finish(&self, c: Box<dyn ClientKex>, reply: &[u8]) -> Result<SharedSecret> {
        Ok(self.secret(c.finish(reply).map_err(refused)?))
    }

    fn secret(&self, k: Zeroizing<Vec<u8>>) -> SharedSecret {
        SharedSecret::new(k, self.hash, self.secret)
    }
}

/// A method's refusal of the peer's bytes is a failed key exchange
/// (DISCONNECT reason KEY_EXCHANGE_FAILED), whichever method refused.
fn refused(e: Error) -> Error {
    match e {
        Error::Malformed(what) => Error::KeyExchange(what),
        e => e,
    }
}

/// The method named `name`.
pub fn method(name: &str) -> Result<&'static Method> {
    METHODS
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| Error::UnknownAlgorithm(name.to_string()))
}

/// The shared secret K of one exchange, with its method's hash and
/// encoding: what the exchange hash and the key derivation need of it.
pub struct SharedSecret {
    k: Zeroizing<Vec<u8>>,
    hash: Hash,
    form: SecretForm,
}

impl SharedSecret {
    pub fn new(k: Zeroizing<Vec<u8>>, hash: Hash, form: SecretForm) -> SharedSecret {
        SharedSecret { k, hash, form }
    }

    /// K itself (the resilience extension's secrets hash it as an mpint).
    pub fn raw(&self) -> &[u8] {
        &self.k
    }

    /// K as the exchange hash and the key derivation take it.
    fn encoded(&self) -> Zeroizing<Vec<u8>> {
        let mut b = Zeroizing::new(Vec::with_capacity(self.k.len() + 5));
        match self.form {
            SecretForm::Mpint => b.put_mpint(&self.k),
            SecretForm::String => b.put_string(&self.k),
        }
        b
    }
}

/// What the exchange hash covers besides K (RFC 4253 §8, RFC 5656 §4):
/// version lines, KEXINIT payloads, the host key blob and the method's
/// init and reply bytes.
pub struct Transcript<'a> {
    pub v_c: &'a str,
    pub v_s: &'a str,
    pub i_c: &'a [u8],
    pub i_s: &'a [u8],
    pub k_s: &'a [u8],
    /// Group exchange only: the request and the group ([`gex::Group::transcript`]).
    pub group: &'a [u8],
    pub init: &'a [u8],
    pub reply: &'a [u8],
}

/// The exchange hash H.
pub fn exchange_hash(t: &Transcript<'_>, k: &SharedSecret) -> Result<Vec<u8>> {
    let mut b = Zeroizing::new(Vec::with_capacity(1024));
    b.put_str(t.v_c);
    b.put_str(t.v_s);
    b.put_string(t.i_c);
    b.put_string(t.i_s);
    b.put_string(t.k_s);
    b.extend_from_slice(t.group);
    b.put_string(t.init);
    b.put_string(t.reply);
    b.extend_from_slice(&k.encoded());
    Ok(openssl::hash::hash(k.hash.digest(), &b)?.to_vec())
}

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
    /// `none` or `zlib@openssh.com` ([`crate::zlib`]).
    pub comp_c2s: String,
    pub comp_s2c: String,
}

impl Negotiated {
    /// Whether `zlib@openssh.com` was agreed on for what a party in `role`
    /// sends (`sending`) or receives.
    pub fn zlib(&self, client: bool, sending: bool) -> bool {
        let c2s = client == sending;
        crate::zlib::agreed(if c2s { &self.comp_c2s } else { &self.comp_s2c })
    }
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
    // Only what this engine implements can be agreed on, whatever both
    // lists hold (`zlib`, compression from the start, is not: OpenSSH
    // dropped it too).
    let comp = |cl: &[String], sv: &[String]| -> Result<String> {
        let name = first_match(cl, sv, "compression")?;
        match name.as_str() {
            "none" | crate::zlib::NAME => Ok(name),
            _ => Err(Error::UnknownAlgorithm(name)),
        }
    };
    let comp_c2s = comp(&client.comp_c2s, &server.comp_c2s)?;
    let comp_s2c = comp(&client.comp_s2c, &server.comp_s2c)?;
    Ok(Negotiated {
        kex,
        host_key,
        cipher_c2s,
        cipher_s2c,
        mac_c2s,
        mac_s2c,
        comp_c2s,
        comp_s2c,
    })
}

/// Whether the guessed first kex packet (first_kex_packet_follows) was right:
/// the first kex and host key algorithms of both lists agree.
pub fn guess_was_right(client: &KexInit, server: &KexInit) -> bool {
    client.kex.first() == server.kex.first() && client.host_key.first() == server.host_key.first()
}

/// RFC 4253 §7.2 key derivation of `len` bytes with letter `x`.
pub fn derive(
    k: &SharedSecret,
    h: &[u8],
    x: u8,
    session_id: &[u8],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    let kenc = k.encoded();
    let md = k.hash.digest();
    let mut out = Zeroizing::new(Vec::with_capacity(len + md.size()));
    let mut hs = Hasher::new(md)?;
    hs.update(&kenc)?;
    hs.update(h)?;
    hs.update(&[x])?;
    hs.update(session_id)?;
    out.extend_from_slice(&hs.finish()?);
    while out.len() < len {
        let mut hs = Hasher::new(md)?;
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
    k: &SharedSecret,
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
mod tests {
    //! Vectors from tools/vectors/vectors.py, which computes them from RFC
    //! 4253 §7.2 and §8, RFC 5656 §4 and RFC 8731 §3 with its own encoders.
    use super::*;
    use crate::wire::hex;

    /// Shared secrets of three shapes (vectors.py's k_real, k_high,
    /// k_zero): an X25519 output with its top bit clear, one with it set
    /// (the mpint gains a 0x00) and one with leading zero bytes (the mpint
    /// drops them, then gains a 0x00).
    const K_REAL: &str = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
    const K_HIGH: &str = "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f";
    const K_ZERO: &str = "0000f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d";

    fn secret(k: &str, hash: Hash, form: SecretForm) -> SharedSecret {
        SharedSecret::new(Zeroizing::new(hex(k)), hash, form)
    }

    /// vectors.py's transcript, with the given init and reply bytes.
    fn with_transcript<T>(init: &[u8], reply: &[u8], f: impl Fn(&Transcript<'_>) -> T) -> T {
        let i_c = hex("14101112131415161718191a1b1c1d1e1f636c69656e74206b6578696e6974");
        let i_s = hex("14202122232425262728292a2b2c2d2e2f736572766572206b6578696e6974");
        let k_s = hex("0000000b7373682d6564323535313900000020
             404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f");
        f(&Transcript {
            v_c: "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3",
            v_s: "SSH-2.0-resshd_0.1",
            i_c: &i_c,
            i_s: &i_s,
            k_s: &k_s,
            group: &[],
            init,
            reply,
        })
    }

    #[test]
    fn exchange_hash_matches_independent_vectors() {
        let q_c = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        let q_s = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let m = method("curve25519-sha256").unwrap();
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
            let k = secret(k, m.hash, m.secret);
            let got = with_transcript(&q_c, &q_s, |t| exchange_hash(t, &k)).unwrap();
            assert_eq!(got, hex(h), "K = {:?}", k.raw());
        }
    }

    #[test]
    fn derivation_matches_independent_vector() {
        // K = mpint(0x01..0x20), H = 32 x 0x11, session_id = 32 x 0x22:
        // two blocks, the second from the first.
        let k = SharedSecret::new(
            Zeroizing::new((1..=32).collect()),
            Hash::Sha256,
            SecretForm::Mpint,
        );
        let out = derive(&k, &[0x11; 32], b'C', &[0x22; 32], 64).unwrap();
        assert_eq!(
            &out[..],
            &hex(
                "5069068aa9749add4d61d1d5ceff418d2e74890fde11c71adc4310ed904c9914
                 f968cfcaf1a28b1ec231a03d9dd6ed8ed7a9aec1a11a27f45d00d223e6177bb3"
            )[..]
        );
    }

    /// What the hybrid methods (sntrup761x25519-sha512, mlkem768x25519)
    /// need of this file and curve25519 does not exercise: K as a string
    /// and SHA-512, in the exchange hash and a three-block derivation
    /// (vectors.py's kex512 and derive512).
    #[test]
    fn sha512_and_string_secret_match_independent_vectors() {
        let init = hex(
            "909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeaf
             b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf",
        );
        let reply = hex(
            "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf
             d0d1d2d3d4d5d6d7d8d9dadbdcdddedf",
        );
        let k = secret(K_HIGH, Hash::Sha512, SecretForm::String);
        let h = with_transcript(&init, &reply, |t| exchange_hash(t, &k)).unwrap();
        assert_eq!(
            h,
            hex(
                "05eac647f95e74f15093740ea7d81c03322884349f57811f417f88cb2747a2fb
                 ed717febdcb0b2fd783bf7b4ede73240ab61c247e9677ef49b953f4d681f83da"
            )
        );
        let out = derive(&k, &[0x11; 64], b'C', &[0x22; 64], 150).unwrap();
        assert_eq!(
            &out[..],
            &hex(
                "ac592e53c42c49458defe238ac6f9ecc37758a5feb142649f01335881bceb9f6
                 63caa9377e3088749a6b23e874c1e32caa458f391db915777f1f303bb0f5c35a
                 9e1882723d22fafb2959ec1c94e2ecb623d736421a9f7ce24b17ee09061bed03
                 bdaa2d133b38283e996c1538eb5fd408c74e4e4fbf9dcf5b7dd07c0feb626a3d
                 4eff2a09a0237da2ed33701edf0fd70c3f0e7985b9b8"
            )[..]
        );
    }
}
