//! Post-quantum key encapsulation: ML-KEM-768 (FIPS 203) and sntrup761
//! (Streamlined NTRU Prime), the primitives under the hybrid key exchanges
//! `mlkem768x25519-sha256` and `sntrup761x25519-sha512`.
//!
//! Debian 12's OpenSSL has neither, so both come from pure-Rust crates
//! (`ml-kem` of RustCrypto, `sntrup761`). This layer is what the key
//! exchange calls: every byte string from the peer is length-checked and
//! decoded strictly here, returning [`Error`] and never panicking; secret
//! keys and shared secrets are wiped when dropped. Randomness comes from
//! OpenSSL's generator, or from a caller's source (`*_with`) so that the
//! known-answer tests can drive both KEMs with NIST's DRBG.

pub mod mlkem768;
pub mod sntrup761;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Length of the shared secret of both KEMs.
pub const SHARED_SECRET_LEN: usize = 32;

/// A KEM's shared secret, wiped on drop.
pub type SharedSecret = Zeroizing<[u8; SHARED_SECRET_LEN]>;

/// A source of random bytes: fills the buffer or fails.
pub type Random<'a> = &'a mut dyn FnMut(&mut [u8]) -> Result<()>;

/// OpenSSL's generator as a [`Random`] source.
pub fn openssl_random(buf: &mut [u8]) -> Result<()> {
    Ok(openssl::rand::rand_bytes(buf)?)
}

/// `bytes` as an array of exactly `N` bytes, or `Malformed(what)`.
fn exact<'a, const N: usize>(bytes: &'a [u8], what: &'static str) -> Result<&'a [u8; N]> {
    bytes.try_into().map_err(|_| Error::Malformed(what))
}
