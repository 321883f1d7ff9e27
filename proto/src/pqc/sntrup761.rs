//! sntrup761 (Streamlined NTRU Prime 4591^761), through the `sntrup761` crate.
//!
//! Public keys and ciphertexts are fixed-length encodings of ring elements;
//! like the reference implementation (and OpenSSH), a byte string of the
//! right length is always accepted and decoded, and a ciphertext that was
//! not made for this key yields an unrelated secret (implicit rejection).

use std::convert::Infallible;

use sntrup761::{Ciphertext, DecapsulationKey, EncapsulationKey};

use super::{exact, openssl_random, Random, SharedSecret};
use crate::error::{Error, Result};

/// Length of a public key.
pub const PUBLIC_KEY_LEN: usize = sntrup761::PUBLIC_KEY_SIZE;
/// Length of a ciphertext.
pub const CIPHERTEXT_LEN: usize = sntrup761::CIPHERTEXT_SIZE;
/// Length of a secret key (the NIST KEM API's `sk`).
pub const SECRET_KEY_LEN: usize = sntrup761::SECRET_KEY_SIZE;

/// A secret key; wiped on drop (by the crate's type).
pub struct SecretKey {
    secret: DecapsulationKey,
    public: EncapsulationKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sntrup761::SecretKey")
    }
}

impl SecretKey {
    /// The public key to send to the peer.
    pub fn public_key(&self) -> Vec<u8> {
        self.public.as_ref().to_vec()
    }

    /// The secret key in the NIST KEM API's encoding, for known-answer tests.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(self.secret.as_ref().to_vec())
    }
}

/// The crate's generator interface over a [`Random`] source. The first
/// failure is kept (and zeros given from then on, an output that is then
/// discarded), since the crate's interface cannot fail.
struct Source<'a, 'b> {
    random: Random<'a>,
    failed: &'b mut Option<Error>,
}

impl rand_core::TryRng for Source<'_, '_> {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        if self.failed.is_none() {
            if let Err(e) = (self.random)(dst) {
                *self.failed = Some(e);
            }
        }
        if self.failed.is_some() {
            dst.fill(0);
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for Source<'_, '_> {}

/// Runs `f` with `random` as the crate's generator; an error of `random`
/// discards `f`'s result.
fn with_source<T>(random: Random<'_>, f: impl FnOnce(&mut Source<'_, '_>) -> T) -> Result<T> {
    let mut failed = None;
    let out = f(&mut Source {
        random,
        failed: &mut failed,
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// A new key pair from OpenSSL's generator.
pub fn keypair() -> Result<SecretKey> {
    keypair_with(&mut openssl_random)
}

/// Key generation with its randomness from `random`, requested as the
/// reference implementation does: 4 bytes per coefficient, then ρ.
pub fn keypair_with(random: Random<'_>) -> Result<SecretKey> {
    let (public, secret) = with_source(random, |s| sntrup761::generate_key(s))?;
    Ok(SecretKey { secret, public })
}

/// Encapsulates to the peer's public key: (ciphertext, shared secret).
pub fn encapsulate(public: &[u8]) -> Result<(Vec<u8>, SharedSecret)> {
    encapsulate_with(public, &mut openssl_random)
}

/// Encapsulation with its randomness from `random`.
pub fn encapsulate_with(public: &[u8], random: Random<'_>) -> Result<(Vec<u8>, SharedSecret)> {
    let pk = EncapsulationKey::from(*exact::<PUBLIC_KEY_LEN>(
        public,
        "sntrup761 public key length",
    )?);
    let (ct, ss) = with_source(random, |s| pk.encapsulate(s))?;
    Ok((ct.as_ref().to_vec(), secret(ss)))
}

/// Decapsulates the peer's ciphertext. A ciphertext of the right length
/// always yields a secret: a forged one an unrelated secret.
pub fn decapsulate(secret_key: &SecretKey, ciphertext: &[u8]) -> Result<SharedSecret> {
    let ct = Ciphertext::from(*exact::<CIPHERTEXT_LEN>(
        ciphertext,
        "sntrup761 ciphertext length",
    )?);
    Ok(secret(secret_key.secret.decapsulate(&ct)))
}

/// Copies the crate's secret (itself wiped on drop) into ours.
fn secret(ss: sntrup761::SharedSecret) -> SharedSecret {
    let mut out = SharedSecret::new([0; super::SHARED_SECRET_LEN]);
    out.copy_from_slice(ss.as_ref());
    out
}
