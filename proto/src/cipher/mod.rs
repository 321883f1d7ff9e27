//! Packet protection: ciphers and MACs, behind two small traits and one
//! name registry ([`CIPHERS`], [`MACS`]). Adding an algorithm means adding a
//! file and one registry entry here.
//!
//! Every supported mode makes the 4-byte packet length readable from the
//! first four bytes alone without changing any state: plain for AES-GCM and
//! the EtM MACs, separately encrypted for chacha20-poly1305, and for AES-CTR
//! with an encrypt-and-MAC MAC by the keystream block computed ahead for
//! the next packet. The transport never decrypts a partial block
//! speculatively.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};

/// Key material of one direction, at its current position. Exporting a
/// live key and building a new one from the export continues the stream
/// exactly where the old one stopped (for AES-CTR and AES-GCM the `iv`
/// is advanced as packets are processed).
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct KeyMaterial {
    pub cipher: String,
    /// Empty for AEAD ciphers and for `none`.
    pub mac: String,
    pub key: Vec<u8>,
    pub iv: Vec<u8>,
    pub mac_key: Vec<u8>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        write!(f, "KeyMaterial({}, {})", self.cipher, self.mac)
    }
}

/// The sending half of a direction's keys.
pub trait SealingKey: Send {
    /// Padding alignment (at least 8).
    fn block_size(&self) -> usize;
    /// Whether the 4-byte length is outside the padded, block-aligned region
    /// (true for every mode but `none`).
    fn length_outside_blocks(&self) -> bool;
    /// Bytes of tag or MAC appended after the packet.
    fn tag_len(&self) -> usize;
    /// `packet` is `[u32 length][u8 padding length][payload][padding]`, with
    /// padding already aligned. Encrypts it in place and writes the tag into
    /// `tag` ([`Self::tag_len`] bytes). The transport seals packets where
    /// they are queued for sending, without copying them.
    fn seal_in_place(&mut self, seq: u32, packet: &mut [u8], tag: &mut [u8]) -> Result<()>;
    /// Like [`Self::seal_in_place`], appending the tag to `packet`.
    fn seal(&mut self, seq: u32, packet: &mut Vec<u8>) -> Result<()> {
        let n = packet.len();
        packet.resize(n + self.tag_len(), 0);
        let (body, tag) = packet.split_at_mut(n);
        let r = self.seal_in_place(seq, body, tag);
        if r.is_err() {
            packet.truncate(n);
        }
        r
    }
    /// Current key state, for export.
    fn export(&self) -> KeyMaterial;
}

/// The receiving half of a direction's keys.
pub trait OpeningKey: Send {
    fn block_size(&self) -> usize;
    fn length_outside_blocks(&self) -> bool;
    fn tag_len(&self) -> usize;
    /// The packet length from the first four bytes as received. Must not
    /// change any state (it may be called again for the same packet).
    fn decrypt_length(&self, seq: u32, first4: [u8; 4]) -> u32;
    /// `packet` is the whole packet as received, length field included,
    /// without the tag. Verifies `tag` (in constant time) and decrypts
    /// `packet` in place; on failure leaves no state changed.
    fn open(&mut self, seq: u32, packet: &mut [u8], tag: &[u8]) -> Result<()>;
    fn export(&self) -> KeyMaterial;
}

/// A cipher in the registry.
pub struct CipherAlg {
    pub name: &'static str,
    pub key_len: usize,
    pub iv_len: usize,
    /// AEAD ciphers ignore the negotiated MAC.
    pub aead: bool,
    pub sealing: fn(&KeyMaterial) -> Result<Box<dyn SealingKey>>,
    pub opening: fn(&KeyMaterial) -> Result<Box<dyn OpeningKey>>,
}

/// A MAC in the registry.
pub struct MacAlg {
    pub name: &'static str,
    pub key_len: usize,
    pub tag_len: usize,
    /// Encrypt-then-MAC (the `-etm@openssh.com` names): the length in the
    /// clear, the MAC over the ciphertext. Otherwise encrypt-and-MAC.
    pub etm: bool,
    pub kind: MacKind,
}

/// What computes a MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacKind {
    /// HMAC with an OpenSSL digest name.
    Hmac(&'static std::ffi::CStr),
    /// UMAC (RFC 4418) with the tag length of the entry.
    Umac,
}

const fn mac_alg(name: &'static str, key_len: usize, tag_len: usize, kind: MacKind) -> MacAlg {
    let b = name.as_bytes();
    let suffix = b"-etm@openssh.com";
    let mut etm = b.len() > suffix.len();
    let mut i = 0;
    while etm && i < suffix.len() {
        etm = b[b.len() - suffix.len() + i] == suffix[i];
        i += 1;
    }
    MacAlg {
        name,
        key_len,
        tag_len,
        etm,
        kind,
    }
}

mod aesctr;
mod aesgcm;
mod chachapoly;
mod evpmac;
mod none;
mod umac;

/// Ciphers in default preference order (OpenSSH's order).
pub static CIPHERS: &[CipherAlg] = &[
    chachapoly::ALG,
    aesctr::AES128_CTR,
    aesctr::AES192_CTR,
    aesctr::AES256_CTR,
    aesgcm::AES128_GCM,
    aesgcm::AES256_GCM,
];

/// MACs in default preference order (OpenSSH's): the EtM forms first.
/// MD5 and the truncated `-96` HMACs are not offered (resshd_config(5)).
pub static MACS: &[MacAlg] = &[
    mac_alg("umac-64-etm@openssh.com", 16, 8, MacKind::Umac),
    mac_alg("umac-128-etm@openssh.com", 16, 16, MacKind::Umac),
    mac_alg("hmac-sha2-256-etm@openssh.com", 32, 32, SHA256),
    mac_alg("hmac-sha2-512-etm@openssh.com", 64, 64, SHA512),
    mac_alg("hmac-sha1-etm@openssh.com", 20, 20, SHA1),
    mac_alg("umac-64@openssh.com", 16, 8, MacKind::Umac),
    mac_alg("umac-128@openssh.com", 16, 16, MacKind::Umac),
    mac_alg("hmac-sha2-256", 32, 32, SHA256),
    mac_alg("hmac-sha2-512", 64, 64, SHA512),
    mac_alg("hmac-sha1", 20, 20, SHA1),
];

const SHA1: MacKind = MacKind::Hmac(c"SHA1");
const SHA256: MacKind = MacKind::Hmac(c"SHA256");
const SHA512: MacKind = MacKind::Hmac(c"SHA512");

pub fn cipher(name: &str) -> Result<&'static CipherAlg> {
    CIPHERS
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| Error::UnknownAlgorithm(name.to_string()))
}

pub fn mac(name: &str) -> Result<&'static MacAlg> {
    MACS.iter()
        .find(|m| m.name == name)
        .ok_or_else(|| Error::UnknownAlgorithm(name.to_string()))
}

/// Builds the sending key for `m` (the `none` cipher when `m.cipher` is "none").
pub fn sealing_key(m: &KeyMaterial) -> Result<Box<dyn SealingKey>> {
    if m.cipher == "none" {
        return Ok(Box::new(none::None));
    }
    (cipher(&m.cipher)?.sealing)(m)
}

/// Builds the receiving key for `m`.
pub fn opening_key(m: &KeyMaterial) -> Result<Box<dyn OpeningKey>> {
    if m.cipher == "none" {
        return Ok(Box::new(none::None));
    }
    (cipher(&m.cipher)?.opening)(m)
}
