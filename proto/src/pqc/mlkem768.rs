//! ML-KEM-768 (FIPS 203), through RustCrypto's `ml-kem`.
//!
//! The encapsulation key from the peer passes FIPS 203 §7.2's checks
//! (length, then the modulus check: every coefficient below q) before use;
//! a ciphertext of the right length is always decapsulated, and one that
//! was not made for this key yields an unrelated secret (implicit
//! rejection), never an error.

use ml_kem::kem::{Decapsulate, KeyExport};
#[allow(deprecated)]
use ml_kem::ExpandedKeyEncoding;
use ml_kem::{DecapsulationKey768, EncapsulationKey768, Seed, B32};

use super::{exact, openssl_random, Random, SharedSecret};
use crate::error::{Error, Result};

/// Length of an encapsulation (public) key: 384·k + 32 with k = 3.
pub const PUBLIC_KEY_LEN: usize = 1184;
/// Length of a ciphertext.
pub const CIPHERTEXT_LEN: usize = 1088;
/// Length of FIPS 203's expanded decapsulation key (the NIST API's `sk`).
pub const EXPANDED_SECRET_KEY_LEN: usize = 2400;

/// A decapsulation key; its secret parts are wiped on drop.
pub struct SecretKey(DecapsulationKey768);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mlkem768::SecretKey")
    }
}

impl SecretKey {
    /// The encapsulation key to send to the peer.
    pub fn public_key(&self) -> Vec<u8> {
        self.0.encapsulation_key().to_bytes().to_vec()
    }

    /// FIPS 203's expanded decapsulation key dk (the NIST KEM API's secret
    /// key), for known-answer tests.
    /// (The crate deprecates this encoding in favour of the seed.)
    #[allow(deprecated)]
    pub fn expanded_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(self.0.to_expanded_bytes().to_vec())
    }
}

/// A new key pair from OpenSSL's generator.
pub fn keypair() -> Result<SecretKey> {
    keypair_with(&mut openssl_random)
}

/// ML-KEM.KeyGen with d ‖ z drawn from `random` in one 64-byte request.
pub fn keypair_with(random: Random<'_>) -> Result<SecretKey> {
    let mut seed = Seed::default();
    random(&mut seed)?;
    let key = DecapsulationKey768::from_seed(seed);
    zeroize::Zeroize::zeroize(seed.as_mut_slice());
    Ok(SecretKey(key))
}

/// Checks and decodes a peer's encapsulation key (FIPS 203 §7.2).
fn public_key(public: &[u8]) -> Result<EncapsulationKey768> {
    let bytes = exact::<PUBLIC_KEY_LEN>(public, "ml-kem-768 public key length")?;
    EncapsulationKey768::new(&(*bytes).into())
        .map_err(|_| Error::Malformed("ml-kem-768 public key (modulus check)"))
}

/// Encapsulates to the peer's encapsulation key: (ciphertext, shared secret).
pub fn encapsulate(public: &[u8]) -> Result<(Vec<u8>, SharedSecret)> {
    encapsulate_with(public, &mut openssl_random)
}

/// ML-KEM.Encaps with m drawn from `random` in one 32-byte request.
pub fn encapsulate_with(public: &[u8], random: Random<'_>) -> Result<(Vec<u8>, SharedSecret)> {
    let ek = public_key(public)?;
    let mut m = B32::default();
    random(&mut m)?;
    let (ct, mut k) = ek.encapsulate_deterministic(&m);
    zeroize::Zeroize::zeroize(m.as_mut_slice());
    let secret = SharedSecret::new(k.into());
    zeroize::Zeroize::zeroize(k.as_mut_slice());
    Ok((ct.to_vec(), secret))
}

/// Decapsulates the peer's ciphertext. A ciphertext of the right length
/// always yields a secret: a forged one an unrelated secret.
pub fn decapsulate(secret: &SecretKey, ciphertext: &[u8]) -> Result<SharedSecret> {
    let ct = exact::<CIPHERTEXT_LEN>(ciphertext, "ml-kem-768 ciphertext length")?;
    let mut k = secret.0.decapsulate(&(*ct).into());
    let out = SharedSecret::new(k.into());
    zeroize::Zeroize::zeroize(k.as_mut_slice());
    Ok(out)
}
