//! `aes128-gcm@openssh.com` and `aes256-gcm@openssh.com`: RFC 5647 as
//! amended by OpenSSH (PROTOCOL §1.6). The 4-byte packet length is sent in
//! the clear as additional authenticated data, the rest of the packet is
//! encrypted, and the 16-byte tag follows.
//!
//! The 12-byte nonce is a 4-byte fixed field followed by an 8-byte
//! big-endian invocation counter, incremented after every packet. The
//! exported `iv` is the nonce of the next packet.

use openssl::cipher::{Cipher, CipherRef};
use openssl::cipher_ctx::CipherCtx;
use zeroize::Zeroizing;

use super::{CipherAlg, KeyMaterial, OpeningKey, SealingKey};
use crate::error::{Error, Result};

pub const AES128_GCM: CipherAlg = CipherAlg {
    name: "aes128-gcm@openssh.com",
    key_len: 16,
    iv_len: 12,
    aead: true,
    sealing: sealing_key,
    opening: opening_key,
};

pub const AES256_GCM: CipherAlg = CipherAlg {
    name: "aes256-gcm@openssh.com",
    key_len: 32,
    iv_len: 12,
    aead: true,
    sealing: sealing_key,
    opening: opening_key,
};

const BLOCK: usize = 16;
const TAG: usize = 16;

fn sealing_key(m: &KeyMaterial) -> Result<Box<dyn SealingKey>> {
    Ok(Box::new(Gcm::new(m, true)?))
}

fn opening_key(m: &KeyMaterial) -> Result<Box<dyn OpeningKey>> {
    Ok(Box::new(Gcm::new(m, false)?))
}

struct Gcm {
    alg: &'static CipherAlg,
    key: Zeroizing<Vec<u8>>,
    fixed: [u8; 4],
    counter: u64,
    ctx: CipherCtx,
}

impl Gcm {
    fn new(m: &KeyMaterial, encrypt: bool) -> Result<Self> {
        let (alg, evp): (&'static CipherAlg, &'static CipherRef) = match m.cipher.as_str() {
            "aes128-gcm@openssh.com" => (&AES128_GCM, Cipher::aes_128_gcm()),
            "aes256-gcm@openssh.com" => (&AES256_GCM, Cipher::aes_256_gcm()),
            other => return Err(Error::UnknownAlgorithm(other.to_string())),
        };
        if m.key.len() != alg.key_len || m.iv.len() != alg.iv_len {
            return Err(Error::State("key material does not fit the cipher"));
        }
        let mut fixed = [0u8; 4];
        fixed.copy_from_slice(&m.iv[..4]);
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&m.iv[4..12]);
        let mut ctx = CipherCtx::new()?;
        // The key schedule is set once; each packet only sets its nonce.
        if encrypt {
            ctx.encrypt_init(Some(evp), Some(&m.key), None)?;
        } else {
            ctx.decrypt_init(Some(evp), Some(&m.key), None)?;
        }
        Ok(Gcm {
            alg,
            key: Zeroizing::new(m.key.clone()),
            fixed,
            counter: u64::from_be_bytes(counter),
            ctx,
        })
    }

    fn nonce(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&self.fixed);
        n[4..].copy_from_slice(&self.counter.to_be_bytes());
        n
    }

    fn material(&self) -> KeyMaterial {
        KeyMaterial {
            cipher: self.alg.name.to_string(),
            mac: String::new(),
            key: self.key.to_vec(),
            iv: self.nonce().to_vec(),
            mac_key: Vec::new(),
        }
    }

    /// Decrypts the body in place and checks the tag. `Ok(false)` means
    /// the tag did not verify (the body then holds garbage).
    fn decrypt_verify(&mut self, nonce: &[u8; 12], packet: &mut [u8], tag: &[u8]) -> Result<bool> {
        self.ctx.decrypt_init(None, None, Some(nonce))?;
        self.ctx.set_tag(tag)?;
        self.ctx.cipher_update(&packet[..4], None)?;
        let n = packet.len() - 4;
        if self.ctx.cipher_update_inplace(&mut packet[4..], n)? != n {
            return Err(Error::Crypto("short GCM output".into()));
        }
        let mut rest = [0u8; BLOCK];
        Ok(matches!(self.ctx.cipher_final(&mut rest), Ok(0)))
    }
}

/// Checks that `len` bytes are a 4-byte length and a non-empty,
/// block-aligned body OpenSSL can take in one call.
fn check_layout(len: usize) -> Result<()> {
    let body = len
        .checked_sub(4)
        .ok_or(Error::Malformed("packet length"))?;
    if body == 0 || body % BLOCK != 0 {
        return Err(Error::Malformed("packet length"));
    }
    if body > i32::MAX as usize - BLOCK {
        return Err(Error::TooLarge("packet"));
    }
    Ok(())
}

impl SealingKey for Gcm {
    fn block_size(&self) -> usize {
        BLOCK
    }
    fn length_outside_blocks(&self) -> bool {
        true
    }
    fn tag_len(&self) -> usize {
        TAG
    }
    fn seal_in_place(&mut self, _seq: u32, packet: &mut [u8], tag: &mut [u8]) -> Result<()> {
        check_layout(packet.len())?;
        if tag.len() != TAG {
            return Err(Error::State("wrong tag length"));
        }
        let nonce = self.nonce();
        self.ctx.encrypt_init(None, None, Some(&nonce))?;
        self.ctx.cipher_update(&packet[..4], None)?;
        let n = packet.len() - 4;
        if self.ctx.cipher_update_inplace(&mut packet[4..], n)? != n {
            return Err(Error::Crypto("short GCM output".into()));
        }
        let mut rest = [0u8; BLOCK];
        if self.ctx.cipher_final(&mut rest)? != 0 {
            return Err(Error::Crypto("unexpected GCM final output".into()));
        }
        self.ctx.tag(tag)?;
        self.counter = self.counter.wrapping_add(1);
        Ok(())
    }
    fn export(&self) -> KeyMaterial {
        self.material()
    }
}

impl OpeningKey for Gcm {
    fn block_size(&self) -> usize {
        BLOCK
    }
    fn length_outside_blocks(&self) -> bool {
        true
    }
    fn tag_len(&self) -> usize {
        TAG
    }
    fn decrypt_length(&self, _seq: u32, first4: [u8; 4]) -> u32 {
        u32::from_be_bytes(first4)
    }
    /// OpenSSL's GCM checks the tag (in constant time) only at the end of
    /// the decryption, so the body is decrypted in place first; when the
    /// tag fails, the same keystream is applied again, which restores the
    /// ciphertext, so a failed open changes neither the key nor `packet`,
    /// and no unauthenticated plaintext is ever handed out.
    fn open(&mut self, _seq: u32, packet: &mut [u8], tag: &[u8]) -> Result<()> {
        check_layout(packet.len())?;
        if tag.len() != TAG {
            return Err(Error::Mac);
        }
        let nonce = self.nonce();
        if self.decrypt_verify(&nonce, packet, tag)? {
            self.counter = self.counter.wrapping_add(1);
            return Ok(());
        }
        // GCM decryption is CTR mode from the same counter block onwards,
        // so running it again over the body re-encrypts it.
        self.ctx.decrypt_init(None, None, Some(&nonce))?;
        let n = packet.len() - 4;
        self.ctx.cipher_update_inplace(&mut packet[4..], n)?;
        Err(Error::Mac)
    }
    fn export(&self) -> KeyMaterial {
        self.material()
    }
}

#[cfg(test)]
mod tests {
    //! The packet vectors were computed with Python's `cryptography`
    //! (`AESGCM`, backed by its own bundled OpenSSL build) by this script;
    //! the counter starts just below a 32-bit boundary so that the carry
    //! into the upper half of the 64-bit invocation counter is covered:
    //!
    //! ```text
    //! def pkt(payload, bs, pad_byte):                 # SSH packet, length outside blocks
    //!     padlen = bs - ((1 + len(payload)) % bs)
    //!     if padlen < 4: padlen += bs
    //!     body = bytes([padlen]) + payload + bytes([pad_byte]) * padlen
    //!     return struct.pack('>I', len(body)) + body
    //! for key in [bytes(range(0x10, 0x20)), bytes(range(0x40, 0x60))]:
    //!     iv = bytes.fromhex('0102030400000000fffffffe')
    //!     fixed, ctr = iv[:4], int.from_bytes(iv[4:], 'big')
    //!     for payload in [b'hello world', bytes(range(40)), b'x']:
    //!         p = pkt(payload, 16, 0xa5)
    //!         nonce = fixed + ctr.to_bytes(8, 'big')
    //!         print(p.hex(), (p[:4] + AESGCM(key).encrypt(nonce, p[4:], p[:4])).hex())
    //!         ctr = (ctr + 1) % (1 << 64)
    //! ```
    use super::*;
    use crate::wire::hex;

    fn material(cipher: &str, key: Vec<u8>, iv: Vec<u8>) -> KeyMaterial {
        KeyMaterial {
            cipher: cipher.into(),
            mac: String::new(),
            key,
            iv,
            mac_key: Vec::new(),
        }
    }

    const IV: &str = "0102030400000000fffffffe";

    /// (cipher, key, [(plain packet, sealed packet)]).
    type Vector = (&'static str, Vec<u8>, [(&'static str, &'static str); 3]);

    fn vectors() -> [Vector; 2] {
        [
            (
                "aes128-gcm@openssh.com",
                (0x10..0x20).collect(),
                [
                    (
                        "000000100468656c6c6f20776f726c64a5a5a5a5",
                        "00000010ae698d8978ae3a97a9bb75949797ced08489d122417dbae3e6dc7f00\
                         e7fee79d",
                    ),
                    (
                        "0000003007000102030405060708090a0b0c0d0e0f101112131415161718191a\
                         1b1c1d1e1f2021222324252627a5a5a5a5a5a5a5",
                        "00000030fe83f4dfad35ae1c1dca41de77cd3205e1d0d1d29b7ebf40b27367db\
                         8f4317889a87b21d26edd7b22d995676ea1410fd62b11efd304783b599f6e934\
                         6ba34c27",
                    ),
                    (
                        "000000100e78a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
                        "0000001052fad5c48de3e181f9db2227589dd22f9efb660ffcdc2eba97269013\
                         ac4ea67d",
                    ),
                ],
            ),
            (
                "aes256-gcm@openssh.com",
                (0x40..0x60).collect(),
                [
                    (
                        "000000100468656c6c6f20776f726c64a5a5a5a5",
                        "00000010c083f72bf2d4bb59c844beb2a996c2b967c30e0c8e5ac45ab1fdbd94\
                         c19d52a6",
                    ),
                    (
                        "0000003007000102030405060708090a0b0c0d0e0f101112131415161718191a\
                         1b1c1d1e1f2021222324252627a5a5a5a5a5a5a5",
                        "00000030688535902e62fb8dc74530f21ba248c8ff7f48133ffc293de27e2b28\
                         ab04fc2fa0da42e6a8a2ffaeb114bd5f12767e2cbef5e9b4dc52e531dfbf670c\
                         1519e969",
                    ),
                    (
                        "000000100e78a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
                        "00000010847715c513dfb542df69f3965aa11fe8669ae2209333e354734cebed\
                         e89ebc91",
                    ),
                ],
            ),
        ]
    }

    #[test]
    fn packet_vectors_from_python() {
        for (cipher, key, packets) in vectors() {
            let m = material(cipher, key, hex(IV));
            let mut s = sealing_key(&m).unwrap();
            let mut o = opening_key(&m).unwrap();
            assert_eq!((s.tag_len(), o.tag_len()), (16, 16));
            assert_eq!((s.block_size(), o.block_size()), (16, 16));
            assert!(s.length_outside_blocks() && o.length_outside_blocks());
            for (seq, (plain, sealed)) in packets.iter().enumerate() {
                let (plain, sealed) = (hex(plain), hex(sealed));
                let mut p = plain.clone();
                s.seal(seq as u32, &mut p).unwrap();
                assert_eq!(p, sealed, "{cipher} packet {seq}");
                let first4 = [p[0], p[1], p[2], p[3]];
                assert_eq!(o.decrypt_length(0, first4) as usize, plain.len() - 4);
                let (body, tag) = p.split_at_mut(plain.len());
                o.open(seq as u32, body, tag).unwrap();
                assert_eq!(body, &plain[..]);
            }
            let want = hex("010203040000000100000001");
            assert_eq!(s.export().iv, want);
            assert_eq!(o.export().iv, want);
        }
    }

    #[test]
    fn export_mid_stream_continues() {
        for (cipher, key, packets) in vectors() {
            let m = material(cipher, key.clone(), hex(IV));
            let mut s = sealing_key(&m).unwrap();
            let mut o = opening_key(&m).unwrap();
            let (plain, sealed) = packets[0];
            let plain = hex(plain);
            let mut p = plain.clone();
            s.seal(0, &mut p).unwrap();
            assert_eq!(p, hex(sealed));
            let (body, tag) = p.split_at_mut(plain.len());
            o.open(0, body, tag).unwrap();

            let (se, oe) = (s.export(), o.export());
            assert_eq!(se.iv, hex("0102030400000000ffffffff"));
            assert_eq!((se.cipher.as_str(), se.mac.as_str()), (cipher, ""));
            assert_eq!(se.key, key);
            drop((s, o));
            let mut s = sealing_key(&se).unwrap();
            let mut o = opening_key(&oe).unwrap();
            for (i, (plain, sealed)) in packets[1..].iter().enumerate() {
                let plain = hex(plain);
                let mut p = plain.clone();
                s.seal(i as u32, &mut p).unwrap();
                assert_eq!(p, hex(sealed));
                let (body, tag) = p.split_at_mut(plain.len());
                o.open(i as u32, body, tag).unwrap();
                assert_eq!(body, &plain[..]);
            }
        }
    }

    #[test]
    fn bad_tag_rejected_and_state_unchanged() {
        let (cipher, key, packets) = &vectors()[1];
        let m = material(cipher, key.clone(), hex(IV));
        let mut o = opening_key(&m).unwrap();
        let (plain, sealed) = packets[0];
        let (plain, sealed) = (hex(plain), hex(sealed));
        let n = plain.len();
        for i in [0, 3, 4, n - 1, n, sealed.len() - 1] {
            let mut p = sealed.clone();
            p[i] ^= 0x80;
            let (body, tag) = p.split_at_mut(n);
            let copy = body.to_vec();
            assert_eq!(o.open(0, body, tag), Err(Error::Mac), "byte {i}");
            assert_eq!(body, &copy[..], "packet must be restored");
        }
        let mut p = sealed.clone();
        let (body, tag) = p.split_at_mut(n);
        assert_eq!(o.open(0, body, &tag[..15]), Err(Error::Mac));
        assert_eq!(o.open(0, body, &[]), Err(Error::Mac));
        assert_eq!(o.open(0, body, &[tag, &[0][..]].concat()), Err(Error::Mac));
        assert_eq!(body, &sealed[..n]);
        assert_eq!(o.export().iv, hex(IV));
        // The sequence number plays no part in GCM; the genuine packet
        // still opens.
        o.open(12345, body, tag).unwrap();
        assert_eq!(body, &plain[..]);
        // Replaying it fails: the invocation counter moved on.
        let mut p = sealed.clone();
        let (body, tag) = p.split_at_mut(n);
        assert_eq!(o.open(0, body, tag), Err(Error::Mac));
        assert_eq!(body, &sealed[..n]);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let (cipher, key, _) = &vectors()[0];
        let m = material(cipher, key.clone(), hex(IV));
        let mut s = sealing_key(&m).unwrap();
        let mut o = opening_key(&m).unwrap();
        for len in [0usize, 3, 4, 5, 12, 19, 21, 28] {
            let mut p = vec![0u8; len];
            assert!(s.seal(0, &mut p).is_err(), "seal len {len}");
            assert_eq!(p.len(), len);
            assert!(o.open(0, &mut p, &[0u8; 16]).is_err(), "open len {len}");
        }
        assert_eq!(s.export().iv, hex(IV));
        assert_eq!(o.export().iv, hex(IV));
        for m in [
            material("aes128-gcm@openssh.com", vec![0; 32], vec![0; 12]),
            material("aes256-gcm@openssh.com", vec![0; 32], vec![0; 16]),
            material("aes256-gcm@openssh.com", vec![0; 32], vec![]),
            material("aes192-gcm@openssh.com", vec![0; 24], vec![0; 12]),
        ] {
            assert!(sealing_key(&m).is_err(), "{m:?}");
            assert!(opening_key(&m).is_err(), "{m:?}");
        }
    }

    #[test]
    fn round_trip_many_packets_and_counter_wrap() {
        for (cipher, klen) in [
            ("aes128-gcm@openssh.com", 16),
            ("aes256-gcm@openssh.com", 32),
        ] {
            // The 64-bit invocation counter wraps around (as in OpenSSH).
            let mut iv = vec![9, 9, 9, 9];
            iv.extend_from_slice(&(u64::MAX - 3).to_be_bytes());
            let m = material(cipher, vec![5; klen], iv);
            let mut s = sealing_key(&m).unwrap();
            let mut o = opening_key(&m).unwrap();
            for i in 0..40u32 {
                let body_len = 16 * (1 + (i as usize * 11) % 50);
                let mut plain = (body_len as u32).to_be_bytes().to_vec();
                plain.extend((0..body_len).map(|j| (j as u32 ^ i) as u8));
                let mut p = plain.clone();
                s.seal(i, &mut p).unwrap();
                assert_eq!(p.len(), plain.len() + 16);
                let (body, tag) = p.split_at_mut(plain.len());
                o.open(i, body, tag).unwrap();
                assert_eq!(body, &plain[..]);
            }
            let mut want = vec![9, 9, 9, 9];
            want.extend_from_slice(&36u64.to_be_bytes());
            assert_eq!(s.export().iv, want);
            assert_eq!(o.export().iv, want);
        }
    }
}
