//! `chacha20-poly1305@openssh.com` (OpenSSH PROTOCOL.chacha20poly1305).
//!
//! The 64-byte key splits into K_2 (first 32 bytes), the main key, and
//! K_1 (last 32 bytes), which only encrypts the 4-byte packet length. Both
//! run ChaCha20 in the original layout (64-bit block counter, 64-bit
//! nonce) with the packet sequence number as a big-endian u64 nonce. The
//! Poly1305 key is the first 32 bytes of K_2's keystream block 0, the
//! packet body is encrypted from block 1 on, and the tag covers the
//! encrypted length and the encrypted body.
//!
//! OpenSSL's `chacha20` takes a 16-byte IV: a 32-bit little-endian block
//! counter followed by a 96-bit nonce. `counter_le32 || 0u32 || seq_be64`
//! gives exactly the original 64/64 layout (the zero word is the high
//! half of the 64-bit counter).

use std::cell::RefCell;

use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;
use zeroize::Zeroizing;

use super::evpmac::EvpMac;
use super::{CipherAlg, KeyMaterial, OpeningKey, SealingKey};
use crate::error::{Error, Result};

pub const ALG: CipherAlg = CipherAlg {
    name: "chacha20-poly1305@openssh.com",
    key_len: 64,
    iv_len: 0,
    aead: true,
    sealing: sealing_key,
    opening: opening_key,
};

const BLOCK: usize = 8;
const TAG: usize = 16;

fn sealing_key(m: &KeyMaterial) -> Result<Box<dyn SealingKey>> {
    Ok(Box::new(ChaChaPoly::new(m)?))
}

fn opening_key(m: &KeyMaterial) -> Result<Box<dyn OpeningKey>> {
    Ok(Box::new(ChaChaPoly::new(m)?))
}

/// One direction. ChaCha20 is a stream cipher, so the same type seals and
/// opens; no state but the keys survives a packet.
struct ChaChaPoly {
    key: Zeroizing<[u8; 64]>,
    /// ChaCha20 under K_2.
    main: CipherCtx,
    /// ChaCha20 under K_1; in a `RefCell` because
    /// [`OpeningKey::decrypt_length`] takes `&self`.
    header: RefCell<CipherCtx>,
    poly: EvpMac,
    poly_key: Zeroizing<[u8; 32]>,
}

/// The OpenSSL IV for keystream block `counter` of packet `seq`.
fn iv(counter: u32, seq: u32) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..4].copy_from_slice(&counter.to_le_bytes());
    iv[8..].copy_from_slice(&u64::from(seq).to_be_bytes());
    iv
}

/// Applies the keystream of `ctx` from block `counter` of packet `seq`.
fn apply(ctx: &mut CipherCtx, counter: u32, seq: u32, data: &mut [u8]) -> Result<()> {
    ctx.encrypt_init(None, None, Some(&iv(counter, seq)))?;
    let n = data.len();
    if ctx.cipher_update_inplace(data, n)? != n {
        return Err(Error::Crypto("short ChaCha20 output".into()));
    }
    Ok(())
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
    if body > i32::MAX as usize - 64 {
        return Err(Error::TooLarge("packet"));
    }
    Ok(())
}

impl ChaChaPoly {
    fn new(m: &KeyMaterial) -> Result<Self> {
        if m.cipher != ALG.name {
            return Err(Error::UnknownAlgorithm(m.cipher.clone()));
        }
        if m.key.len() != ALG.key_len {
            return Err(Error::State("key material does not fit the cipher"));
        }
        let mut key = Zeroizing::new([0u8; 64]);
        key.copy_from_slice(&m.key);
        let mut main = CipherCtx::new()?;
        main.encrypt_init(Some(Cipher::chacha20()), Some(&key[..32]), None)?;
        let mut header = CipherCtx::new()?;
        header.encrypt_init(Some(Cipher::chacha20()), Some(&key[32..]), None)?;
        Ok(ChaChaPoly {
            key,
            main,
            header: RefCell::new(header),
            poly: EvpMac::poly1305()?,
            poly_key: Zeroizing::new([0u8; 32]),
        })
    }

    /// Poly1305 of `data` under the one-time key of packet `seq`.
    fn tag(&mut self, seq: u32, data: &[u8]) -> Result<[u8; TAG]> {
        self.poly_key.fill(0);
        apply(&mut self.main, 0, seq, &mut self.poly_key[..])?;
        self.poly.init(Some(&self.poly_key[..]))?;
        self.poly.update(data)?;
        let mut tag = [0u8; TAG];
        if self.poly.finish(&mut tag)? != TAG {
            return Err(Error::Crypto("unexpected Poly1305 length".into()));
        }
        Ok(tag)
    }

    fn material(&self) -> KeyMaterial {
        KeyMaterial {
            cipher: ALG.name.to_string(),
            mac: String::new(),
            key: self.key.to_vec(),
            iv: Vec::new(),
            mac_key: Vec::new(),
        }
    }
}

impl SealingKey for ChaChaPoly {
    fn block_size(&self) -> usize {
        BLOCK
    }
    fn length_outside_blocks(&self) -> bool {
        true
    }
    fn tag_len(&self) -> usize {
        TAG
    }
    fn seal_in_place(&mut self, seq: u32, packet: &mut [u8], tag: &mut [u8]) -> Result<()> {
        check_layout(packet.len())?;
        if tag.len() != TAG {
            return Err(Error::State("wrong tag length"));
        }
        apply(self.header.get_mut(), 0, seq, &mut packet[..4])?;
        apply(&mut self.main, 1, seq, &mut packet[4..])?;
        tag.copy_from_slice(&self.tag(seq, packet)?);
        Ok(())
    }
    fn export(&self) -> KeyMaterial {
        self.material()
    }
}

impl OpeningKey for ChaChaPoly {
    fn block_size(&self) -> usize {
        BLOCK
    }
    fn length_outside_blocks(&self) -> bool {
        true
    }
    fn tag_len(&self) -> usize {
        TAG
    }
    /// On an (unexpected) OpenSSL failure this returns `u32::MAX`, which no
    /// transport accepts as a packet length.
    fn decrypt_length(&self, seq: u32, first4: [u8; 4]) -> u32 {
        let Ok(mut header) = self.header.try_borrow_mut() else {
            return u32::MAX;
        };
        let mut len = first4;
        match apply(&mut header, 0, seq, &mut len) {
            Ok(()) => u32::from_be_bytes(len),
            Err(_) => u32::MAX,
        }
    }
    fn open(&mut self, seq: u32, packet: &mut [u8], tag: &[u8]) -> Result<()> {
        check_layout(packet.len())?;
        if tag.len() != TAG {
            return Err(Error::Mac);
        }
        let want = self.tag(seq, packet)?;
        if !openssl::memcmp::eq(&want, tag) {
            return Err(Error::Mac);
        }
        apply(self.header.get_mut(), 0, seq, &mut packet[..4])?;
        apply(&mut self.main, 1, seq, &mut packet[4..])
    }
    fn export(&self) -> KeyMaterial {
        self.material()
    }
}

#[cfg(test)]
mod tests {
    //! The packet vectors come from a pure-Python ChaCha20 (64-bit counter,
    //! 64-bit nonce) and Poly1305 written from RFC 8439 (and checked there
    //! against its §2.4.2 and §2.5.2 vectors); every intermediate value was
    //! also cross-checked against Python's `cryptography` (`ChaCha20` with
    //! nonce `counter_le32 || 0u32 || seq_be64`, and `Poly1305`):
    //!
    //! ```text
    //! def ssh_chachapoly(key64, seq, packet):
    //!     k2, k1 = key64[:32], key64[32:]
    //!     n = struct.pack('>Q', seq)
    //!     enc_len = chacha_xor(k1, 0, n, packet[:4])        # counter 0
    //!     polykey = chacha_block(k2, 0, n)[:32]
    //!     enc_body = chacha_xor(k2, 1, n, packet[4:])       # counter 1
    //!     return enc_len + enc_body + poly1305(polykey, enc_len + enc_body)
    //! def pkt(payload, bs, pad_byte):                       # length outside blocks
    //!     padlen = bs - ((1 + len(payload)) % bs)
    //!     if padlen < 4: padlen += bs
    //!     body = bytes([padlen]) + payload + bytes([pad_byte]) * padlen
    //!     return struct.pack('>I', len(body)) + body
    //! key = bytes(range(64))
    //! for seq, payload in [(0, b'hello world'), (1, bytes(range(70))), (0xffffffff, b'abc')]:
    //!     p = pkt(payload, 8, 0x5a)
    //!     print(seq, p.hex(), ssh_chachapoly(key, seq, p).hex())
    //! ```
    //!
    //! The second packet's body (80 bytes) spans keystream blocks 1 and 2.
    use super::*;
    use crate::wire::hex;

    fn material(key: Vec<u8>) -> KeyMaterial {
        KeyMaterial {
            cipher: "chacha20-poly1305@openssh.com".into(),
            mac: String::new(),
            key,
            iv: Vec::new(),
            mac_key: Vec::new(),
        }
    }

    const VECTORS: [(u32, &str, &str); 3] = [
        (
            0,
            "000000100468656c6c6f20776f726c645a5a5a5a",
            "94450e491cd0275dc18986a67c133005f519147d07a238cf7083828ffb7e65cc\
             ebae3e7c",
        ),
        (
            1,
            "0000005009000102030405060708090a0b0c0d0e0f101112131415161718191a\
             1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a\
             3b3c3d3e3f4041424344455a5a5a5a5a5a5a5a5a",
            "c922a7f5605c7ddb320ebd7c2a797725b8181a1c1fe12e52dda5e9635222ac32\
             32f28214cc0dcd2890df8ba50660c20e8dcf87e0eace7441ba5f610353032974\
             542b1247209221f8817ecc77272a7f97ebdd0d4ca77d43d5339f81621b9f23f2\
             4de50743",
        ),
        (
            0xffff_ffff,
            "00000008046162635a5a5a5a",
            "b90ee4b80df36ef8f45e8eb8507106f20f5dfb190f236f5536dc2dda",
        ),
    ];

    /// RFC 8439 §2.5.2, through the same EVP_MAC wrapper, twice on one
    /// context (re-keyed each time, as per packet).
    #[test]
    fn rfc8439_poly1305() {
        let key = hex("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b");
        let mut mac = EvpMac::poly1305().unwrap();
        for _ in 0..2 {
            mac.init(Some(&key)).unwrap();
            mac.update(b"Cryptographic Forum").unwrap();
            mac.update(b" Research Group").unwrap();
            let mut out = [0u8; 16];
            assert_eq!(mac.finish(&mut out).unwrap(), 16);
            assert_eq!(out.to_vec(), hex("a8061dc1305136c6c22b8baf0c0127a9"));
        }
    }

    #[test]
    fn packet_vectors_from_python() {
        let m = material((0..64).collect());
        let mut s = sealing_key(&m).unwrap();
        let mut o = opening_key(&m).unwrap();
        assert_eq!((s.tag_len(), o.tag_len()), (16, 16));
        assert_eq!((s.block_size(), o.block_size()), (8, 8));
        assert!(s.length_outside_blocks() && o.length_outside_blocks());
        for (seq, plain, sealed) in VECTORS {
            let (plain, sealed) = (hex(plain), hex(sealed));
            let mut p = plain.clone();
            s.seal(seq, &mut p).unwrap();
            assert_eq!(p, sealed, "seq {seq}");
            let first4 = [p[0], p[1], p[2], p[3]];
            // Twice: decrypt_length must not change any state.
            for _ in 0..2 {
                assert_eq!(o.decrypt_length(seq, first4) as usize, plain.len() - 4);
            }
            let (body, tag) = p.split_at_mut(plain.len());
            o.open(seq, body, tag).unwrap();
            assert_eq!(body, &plain[..]);
        }
        assert_eq!(s.export().key, (0..64).collect::<Vec<u8>>());
    }

    #[test]
    fn export_then_import_continues() {
        let m = material((0..64).collect());
        let s = sealing_key(&m).unwrap();
        let o = opening_key(&m).unwrap();
        let (se, oe) = (s.export(), o.export());
        assert_eq!(se.cipher, "chacha20-poly1305@openssh.com");
        assert!(se.iv.is_empty() && se.mac.is_empty() && se.mac_key.is_empty());
        drop((s, o));
        let mut s = sealing_key(&se).unwrap();
        let mut o = opening_key(&oe).unwrap();
        for (seq, plain, sealed) in VECTORS.iter().rev() {
            let plain = hex(plain);
            let mut p = plain.clone();
            s.seal(*seq, &mut p).unwrap();
            assert_eq!(p, hex(sealed));
            let (body, tag) = p.split_at_mut(plain.len());
            o.open(*seq, body, tag).unwrap();
            assert_eq!(body, &plain[..]);
        }
    }

    #[test]
    fn bad_tag_rejected_and_state_unchanged() {
        let m = material((0..64).collect());
        let mut o = opening_key(&m).unwrap();
        let (seq, plain, sealed) = VECTORS[1];
        let (plain, sealed) = (hex(plain), hex(sealed));
        let n = plain.len();
        for i in [0, 3, 4, 40, n - 1, n, sealed.len() - 1] {
            let mut p = sealed.clone();
            p[i] ^= 0x04;
            let (body, tag) = p.split_at_mut(n);
            let copy = body.to_vec();
            assert_eq!(o.open(seq, body, tag), Err(Error::Mac), "byte {i}");
            assert_eq!(body, &copy[..]);
        }
        let mut p = sealed.clone();
        let (body, tag) = p.split_at_mut(n);
        assert_eq!(o.open(seq + 1, body, tag), Err(Error::Mac));
        assert_eq!(o.open(seq, body, &tag[..15]), Err(Error::Mac));
        assert_eq!(o.open(seq, body, &[]), Err(Error::Mac));
        assert_eq!(
            o.open(seq, body, &[tag, &[0][..]].concat()),
            Err(Error::Mac)
        );
        assert_eq!(body, &sealed[..n]);
        o.open(seq, body, tag).unwrap();
        assert_eq!(body, &plain[..]);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let m = material((0..64).collect());
        let mut s = sealing_key(&m).unwrap();
        let mut o = opening_key(&m).unwrap();
        for len in [0usize, 3, 4, 5, 11, 13, 21] {
            let mut p = vec![0u8; len];
            assert!(s.seal(0, &mut p).is_err(), "seal len {len}");
            assert_eq!(p.len(), len);
            assert!(o.open(0, &mut p, &[0u8; 16]).is_err(), "open len {len}");
        }
        for key_len in [0, 32, 63, 65] {
            assert!(sealing_key(&material(vec![0; key_len])).is_err());
            assert!(opening_key(&material(vec![0; key_len])).is_err());
        }
        let mut m = material(vec![0; 64]);
        m.cipher = "aes128-ctr".into();
        assert!(sealing_key(&m).is_err());
    }

    #[test]
    fn round_trip_many_packets() {
        let m = material((100..164).collect());
        let mut s = sealing_key(&m).unwrap();
        let mut o = opening_key(&m).unwrap();
        let mut seq = u32::MAX - 20;
        for i in 0..50usize {
            let body_len = 8 * (1 + (i * 13) % 300);
            let mut plain = (body_len as u32).to_be_bytes().to_vec();
            plain.extend((0..body_len).map(|j| (j ^ i) as u8));
            let mut p = plain.clone();
            s.seal(seq, &mut p).unwrap();
            assert_eq!(p.len(), plain.len() + 16);
            assert_ne!(&p[..4], &plain[..4]);
            assert_eq!(
                o.decrypt_length(seq, [p[0], p[1], p[2], p[3]]) as usize,
                body_len
            );
            let (body, tag) = p.split_at_mut(plain.len());
            o.open(seq, body, tag).unwrap();
            assert_eq!(body, &plain[..]);
            seq = seq.wrapping_add(1);
        }
    }
}
