//! What the hybrid methods share: a post-quantum KEM beside X25519, as
//! OpenSSH's kexmlkem768x25519.c and kexsntrup761x25519.c both do it.
//!
//! The client's init is its KEM public key followed by its X25519 public
//! value (32 bytes); the server's reply is the KEM ciphertext followed by
//! its X25519 public value. K is HASH(KEM secret ‖ raw X25519 secret), with
//! the method's hash, and enters the exchange hash as a string. Hostile bytes
//! are refused by length, by the KEM's own decoding and by the all-zero
//! X25519 check (as OpenSSH does).

use zeroize::Zeroizing;

use super::curve25519::Ephemeral;
use super::{ClientKex, Hash, ServerHalf};
use crate::error::{Error, Result};
use crate::pqc::{self, mlkem768, sntrup761};

/// A key-encapsulation mechanism of a hybrid method, over the wrappers of
/// [`crate::pqc`].
pub(super) trait Kem: 'static {
    /// The hash of K (and so of the method's exchange hash).
    const HASH: Hash;
    const PUBLIC_KEY_LEN: usize;
    const CIPHERTEXT_LEN: usize;
    type SecretKey: Send;
    fn keypair() -> Result<Self::SecretKey>;
    fn public_key(secret: &Self::SecretKey) -> Vec<u8>;
    fn encapsulate(public: &[u8]) -> Result<(Vec<u8>, pqc::SharedSecret)>;
    fn decapsulate(secret: &Self::SecretKey, ciphertext: &[u8]) -> Result<pqc::SharedSecret>;
}

/// ML-KEM-768 (FIPS 203), with SHA-256.
pub(super) struct MlKem768;

impl Kem for MlKem768 {
    const HASH: Hash = Hash::Sha256;
    const PUBLIC_KEY_LEN: usize = mlkem768::PUBLIC_KEY_LEN;
    const CIPHERTEXT_LEN: usize = mlkem768::CIPHERTEXT_LEN;
    type SecretKey = mlkem768::SecretKey;
    fn keypair() -> Result<Self::SecretKey> {
        mlkem768::keypair()
    }
    fn public_key(secret: &Self::SecretKey) -> Vec<u8> {
        secret.public_key()
    }
    fn encapsulate(public: &[u8]) -> Result<(Vec<u8>, pqc::SharedSecret)> {
        mlkem768::encapsulate(public)
    }
    fn decapsulate(secret: &Self::SecretKey, ciphertext: &[u8]) -> Result<pqc::SharedSecret> {
        mlkem768::decapsulate(secret, ciphertext)
    }
}

/// Streamlined NTRU Prime 761, with SHA-512.
pub(super) struct Sntrup761;

impl Kem for Sntrup761 {
    const HASH: Hash = Hash::Sha512;
    const PUBLIC_KEY_LEN: usize = sntrup761::PUBLIC_KEY_LEN;
    const CIPHERTEXT_LEN: usize = sntrup761::CIPHERTEXT_LEN;
    type SecretKey = sntrup761::SecretKey;
    fn keypair() -> Result<Self::SecretKey> {
        sntrup761::keypair()
    }
    fn public_key(secret: &Self::SecretKey) -> Vec<u8> {
        secret.public_key()
    }
    fn encapsulate(public: &[u8]) -> Result<(Vec<u8>, pqc::SharedSecret)> {
        sntrup761::encapsulate(public)
    }
    fn decapsulate(secret: &Self::SecretKey, ciphertext: &[u8]) -> Result<pqc::SharedSecret> {
        sntrup761::decapsulate(secret, ciphertext)
    }
}

struct Client<K: Kem> {
    kem: K::SecretKey,
    eph: Ephemeral,
    init: Vec<u8>,
}

impl<K: Kem> ClientKex for Client<K> {
    fn init(&self) -> &[u8] {
        &self.init
    }

    fn finish(self: Box<Self>, reply: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if reply.len() != K::CIPHERTEXT_LEN + 32 {
            return Err(Error::Malformed("hybrid key exchange reply length"));
        }
        let (ct, q_s) = reply.split_at(K::CIPHERTEXT_LEN);
        let kem = K::decapsulate(&self.kem, ct)?;
        let ecdh = self.eph.agree(q_s)?;
        K::HASH.of(&[&kem[..], &ecdh])
    }
}

/// The client's half of a hybrid method.
pub(super) fn client<K: Kem>() -> Result<Box<dyn ClientKex>> {
    let kem = K::keypair()?;
    let eph = Ephemeral::generate()?;
    let mut init = K::public_key(&kem);
    init.extend_from_slice(&eph.public()?);
    Ok(Box::new(Client::<K> { kem, eph, init }))
}

/// The server's half of a hybrid method, from the client's init (hostile).
pub(super) fn server<K: Kem>(init: &[u8]) -> Result<ServerHalf> {
    if init.len() != K::PUBLIC_KEY_LEN + 32 {
        return Err(Error::Malformed("hybrid key exchange init length"));
    }
    let (pk, q_c) = init.split_at(K::PUBLIC_KEY_LEN);
    let (ct, kem) = K::encapsulate(pk)?;
    let eph = Ephemeral::generate()?;
    let ecdh = eph.agree(q_c)?;
    let mut reply = ct;
    reply.extend_from_slice(&eph.public()?);
    Ok(ServerHalf {
        reply,
        k: K::HASH.of(&[&kem[..], &ecdh])?,
    })
}
