//! `aes128-ctr`, `aes192-ctr` and `aes256-ctr` (RFC 4344) with every MAC
//! of the registry: HMAC-SHA1, HMAC-SHA2-256/512 and UMAC-64/128, each
//! either encrypt-then-MAC (the `-etm@openssh.com` names, OpenSSH
//! PROTOCOL §1.5) or encrypt-and-MAC (RFC 4253 §6.4).
//!
//! With an EtM MAC the 4-byte packet length travels in the clear, the rest
//! of the packet is CTR-encrypted, and the MAC covers `length ||
//! ciphertext`. With encrypt-and-MAC the whole packet, length included, is
//! encrypted and the MAC covers the plaintext; the receiver learns the
//! length by decrypting the first four bytes with the keystream block of
//! the packet's first counter value, which is computed ahead (so reading
//! the length changes no state). HMAC's input starts with the 32-bit
//! sequence number; UMAC takes the sequence number as its 64-bit nonce.
//!
//! The CTR keystream runs on across packets: one OpenSSL context lives as
//! long as the key, and the number of 16-byte blocks it has processed is
//! counted so that [`SealingKey::export`] / [`OpeningKey::export`] return
//! the counter block of the next packet.

use openssl::cipher::{Cipher, CipherRef};
use openssl::cipher_ctx::CipherCtx;
use zeroize::Zeroizing;

use super::evpmac::EvpMac;
use super::umac::Umac;
use super::{CipherAlg, KeyMaterial, MacAlg, MacKind, OpeningKey, SealingKey};
use crate::error::{Error, Result};

const fn ctr(name: &'static str, key_len: usize) -> CipherAlg {
    CipherAlg {
        name,
        key_len,
        iv_len: 16,
        aead: false,
        sealing: sealing_key,
        opening: opening_key,
    }
}

pub const AES128_CTR: CipherAlg = ctr("aes128-ctr", 16);
pub const AES192_CTR: CipherAlg = ctr("aes192-ctr", 24);
pub const AES256_CTR: CipherAlg = ctr("aes256-ctr", 32);

const BLOCK: usize = 16;
/// The longest MAC of [`super::MACS`] (hmac-sha2-512).
const MAX_TAG: usize = 64;

fn sealing_key(m: &KeyMaterial) -> Result<Box<dyn SealingKey>> {
    Ok(Box::new(Ctr::new(m)?))
}

fn opening_key(m: &KeyMaterial) -> Result<Box<dyn OpeningKey>> {
    Ok(Box::new(Ctr::new(m)?))
}

/// A MAC's keyed state.
enum Mac {
    Hmac(EvpMac),
    Umac(Box<Umac>),
}

/// One direction of AES-CTR with a MAC. CTR encryption and decryption are
/// the same operation, so the same type serves both directions.
struct Ctr {
    cipher: &'static CipherAlg,
    mac_alg: &'static MacAlg,
    key: Zeroizing<Vec<u8>>,
    /// The counter block the key was built with.
    iv: [u8; BLOCK],
    /// 16-byte blocks processed since then.
    blocks: u128,
    mac_key: Zeroizing<Vec<u8>>,
    ctx: CipherCtx,
    mac: Mac,
    tag: Zeroizing<[u8; MAX_TAG]>,
    /// Encrypt-and-MAC only: AES-ECB under the same key, and the keystream
    /// block that will decrypt the next packet's length.
    ahead: Option<(CipherCtx, Zeroizing<[u8; BLOCK]>)>,
}

impl Ctr {
    fn new(m: &KeyMaterial) -> Result<Self> {
        let (cipher, evp, ecb): (&'static CipherAlg, &'static CipherRef, &'static CipherRef) =
            match m.cipher.as_str() {
                "aes128-ctr" => (&AES128_CTR, Cipher::aes_128_ctr(), Cipher::aes_128_ecb()),
                "aes192-ctr" => (&AES192_CTR, Cipher::aes_192_ctr(), Cipher::aes_192_ecb()),
                "aes256-ctr" => (&AES256_CTR, Cipher::aes_256_ctr(), Cipher::aes_256_ecb()),
                other => return Err(Error::UnknownAlgorithm(other.to_string())),
            };
        let mac_alg = super::mac(&m.mac)?;
        if m.key.len() != cipher.key_len
            || m.iv.len() != cipher.iv_len
            || m.mac_key.len() != mac_alg.key_len
            || mac_alg.tag_len > MAX_TAG
        {
            return Err(Error::State("key material does not fit the cipher"));
        }
        let mac = match mac_alg.kind {
            MacKind::Hmac(digest) => Mac::Hmac(EvpMac::hmac(digest, &m.mac_key)?),
            MacKind::Umac => Mac::Umac(Box::new(Umac::new(&m.mac_key, mac_alg.tag_len)?)),
        };
        let mut iv = [0u8; BLOCK];
        iv.copy_from_slice(&m.iv);
        let mut ctx = CipherCtx::new()?;
        ctx.encrypt_init(Some(evp), Some(&m.key), Some(&iv))?;
        let ahead = if mac_alg.etm {
            None
        } else {
            let mut e = CipherCtx::new()?;
            e.encrypt_init(Some(ecb), Some(&m.key), None)?;
            e.set_padding(false);
            Some((e, Zeroizing::new([0u8; BLOCK])))
        };
        let mut k = Ctr {
            cipher,
            mac_alg,
            key: Zeroizing::new(m.key.clone()),
            iv,
            blocks: 0,
            mac_key: Zeroizing::new(m.mac_key.clone()),
            ctx,
            mac,
            tag: Zeroizing::new([0u8; MAX_TAG]),
            ahead,
        };
        k.look_ahead()?;
        Ok(k)
    }

    /// The counter block of the next packet.
    fn counter(&self) -> [u8; BLOCK] {
        u128::from_be_bytes(self.iv)
            .wrapping_add(self.blocks)
            .to_be_bytes()
    }

    /// Encrypt-and-MAC: the keystream block of the next packet's start.
    fn look_ahead(&mut self) -> Result<()> {
        let counter = self.counter();
        if let Some((ecb, block)) = &mut self.ahead {
            let mut out = Zeroizing::new([0u8; 2 * BLOCK]);
            if ecb.cipher_update(&counter, Some(&mut out[..]))? != BLOCK {
                return Err(Error::Crypto("short AES output".into()));
            }
            block.copy_from_slice(&out[..BLOCK]);
        }
        Ok(())
    }

    /// Computes the MAC of `data` (sequence number `seq`) into `self.tag`.
    fn compute_mac(&mut self, seq: u32, data: &[u8]) -> Result<()> {
        let n = self.mac_alg.tag_len;
        match &mut self.mac {
            Mac::Hmac(mac) => {
                mac.init(None)?;
                mac.update(&seq.to_be_bytes())?;
                mac.update(data)?;
                if mac.finish(&mut self.tag[..n])? != n {
                    return Err(Error::Crypto("unexpected MAC length".into()));
                }
            }
            Mac::Umac(mac) => mac.tag(u64::from(seq), data, &mut self.tag[..n])?,
        }
        Ok(())
    }

    /// Runs the keystream over the block-aligned `body`.
    fn crypt(&mut self, body: &mut [u8]) -> Result<()> {
        let n = body.len();
        let out = self.ctx.cipher_update_inplace(body, n)?;
        if out != n {
            return Err(Error::Crypto("short CTR output".into()));
        }
        self.blocks = self.blocks.wrapping_add((n / BLOCK) as u128);
        self.look_ahead()
    }

    /// Puts the keystream back to `blocks` blocks after the start.
    fn rewind(&mut self, blocks: u128) -> Result<()> {
        self.blocks = blocks;
        let counter = self.counter();
        self.ctx.encrypt_init(None, None, Some(&counter))?;
        self.look_ahead()
    }

    /// Where encryption starts: after the length with EtM, at the start
    /// of the packet without.
    fn skip(&self) -> usize {
        if self.mac_alg.etm {
            4
        } else {
            0
        }
    }

    fn check_layout(&self, len: usize) -> Result<()> {
        let body = len
            .checked_sub(4)
            .ok_or(Error::Malformed("packet length"))?;
        if body == 0 || !(len - self.skip()).is_multiple_of(BLOCK) {
            return Err(Error::Malformed("packet length"));
        }
        if body > i32::MAX as usize - BLOCK {
            return Err(Error::TooLarge("packet"));
        }
        Ok(())
    }

    fn material(&self) -> KeyMaterial {
        KeyMaterial {
            cipher: self.cipher.name.to_string(),
            mac: self.mac_alg.name.to_string(),
            key: self.key.to_vec(),
            iv: self.counter().to_vec(),
            mac_key: self.mac_key.to_vec(),
        }
    }
}

impl SealingKey for Ctr {
    fn block_size(&self) -> usize {
        BLOCK
    }
    fn length_outside_blocks(&self) -> bool {
        self.mac_alg.etm
    }
    fn tag_len(&self) -> usize {
        self.mac_alg.tag_len
    }
    fn seal_in_place(&mut self, seq: u32, packet: &mut [u8], tag: &mut [u8]) -> Result<()> {
        self.check_layout(packet.len())?;
        let n = self.mac_alg.tag_len;
        if tag.len() != n {
            return Err(Error::State("wrong tag length"));
        }
        if self.mac_alg.etm {
            self.crypt(&mut packet[4..])?;
            self.compute_mac(seq, packet)?;
        } else {
            self.compute_mac(seq, packet)?;
            self.crypt(packet)?;
        }
        tag.copy_from_slice(&self.tag[..n]);
        Ok(())
    }
    fn export(&self) -> KeyMaterial {
        self.material()
    }
}

impl OpeningKey for Ctr {
    fn block_size(&self) -> usize {
        BLOCK
    }
    fn length_outside_blocks(&self) -> bool {
        self.mac_alg.etm
    }
    fn tag_len(&self) -> usize {
        self.mac_alg.tag_len
    }
    fn decrypt_length(&self, _seq: u32, first4: [u8; 4]) -> u32 {
        let mut len = first4;
        if let Some((_, ks)) = &self.ahead {
            for (b, k) in len.iter_mut().zip(ks.iter()) {
                *b ^= k;
            }
        }
        u32::from_be_bytes(len)
    }
    fn open(&mut self, seq: u32, packet: &mut [u8], tag: &[u8]) -> Result<()> {
        self.check_layout(packet.len())?;
        let n = self.mac_alg.tag_len;
        if tag.len() != n {
            return Err(Error::Mac);
        }
        if self.mac_alg.etm {
            self.compute_mac(seq, packet)?;
            if !openssl::memcmp::eq(&self.tag[..n], tag) {
                return Err(Error::Mac);
            }
            return self.crypt(&mut packet[4..]);
        }
        // Encrypt-and-MAC: the MAC is of the plaintext. On a mismatch the
        // packet is encrypted back and the keystream rewound.
        let before = self.blocks;
        self.crypt(packet)?;
        self.compute_mac(seq, packet)?;
        if openssl::memcmp::eq(&self.tag[..n], tag) {
            return Ok(());
        }
        self.rewind(before)?;
        self.crypt(packet)?;
        self.rewind(before)?;
        Err(Error::Mac)
    }
    fn export(&self) -> KeyMaterial {
        self.material()
    }
}

#[cfg(test)]
mod tests {
    //! Vectors:
    //! - raw AES-CTR: NIST SP 800-38A §F.5.1 (CTR-AES128) and §F.5.5
    //!   (CTR-AES256), counter block f0f1…feff;
    //! - raw HMAC: RFC 4231 test cases 1 and 2 (SHA-256 and SHA-512);
    //! - packet level: computed with Python's `cryptography` (AES-CTR) and
    //!   the standard library's `hmac`/`hashlib`, by this script:
    //!
    //! ```text
    //! def pkt(payload, bs, pad_byte):                 # SSH packet, length outside blocks
    //!     padlen = bs - ((1 + len(payload)) % bs)
    //!     if padlen < 4: padlen += bs
    //!     body = bytes([padlen]) + payload + bytes([pad_byte]) * padlen
    //!     return struct.pack('>I', len(body)) + body
    //! def ssh_ctr_etm(enc, mac_key, digest, seq, p):
    //!     body = enc.update(p[4:])
    //!     m = hmac.new(mac_key, struct.pack('>I', seq) + p[:4] + body, digest).digest()
    //!     return p[:4] + body + m
    //! for name, key, digest, mk in [
    //!         ('aes128-ctr', bytes(range(0x10, 0x20)), hashlib.sha256, bytes(range(0x80, 0xa0))),
    //!         ('aes256-ctr', bytes(range(0x40, 0x60)), hashlib.sha512, bytes(range(0x80, 0xc0)))]:
    //!     iv = bytes.fromhex('00112233445566778899aabbfffffffe')
    //!     enc = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    //!     for seq, payload in [(3, b'hello world'), (4, bytes(range(40))), (5, b'x')]:
    //!         p = pkt(payload, 16, 0xa5)
    //!         print(seq, p.hex(), ssh_ctr_etm(enc, mk, digest, seq, p).hex())
    //! # encrypt-and-MAC (hmac-sha2-256 with aes192-ctr, key 20..37; hmac-sha1
    //! # with aes128-ctr, key 10..1f, MAC key 80..93): the whole packet is
    //! # block-aligned and encrypted, the MAC is of the plaintext
    //! def pkt_em(payload, bs, pad_byte):
    //!     padlen = bs - ((4 + 1 + len(payload)) % bs)
    //!     if padlen < 4: padlen += bs
    //!     body = bytes([padlen]) + payload + bytes([pad_byte]) * padlen
    //!     return struct.pack('>I', len(body)) + body
    //! def ssh_ctr_em(enc, mac_key, digest, seq, p):
    //!     return enc.update(p) + hmac.new(mac_key, struct.pack('>I', seq) + p, digest).digest()
    //! # keystream across the 128-bit wrap:
    //! Cipher(algorithms.AES(bytes(range(16))), modes.CTR(b'\xff' * 16)).encryptor().update(bytes(64))
    //! ```
    use super::*;
    use crate::wire::hex;
    use std::ffi::CStr;

    fn material(
        cipher: &str,
        mac: &str,
        key: Vec<u8>,
        iv: Vec<u8>,
        mac_key: Vec<u8>,
    ) -> KeyMaterial {
        KeyMaterial {
            cipher: cipher.into(),
            mac: mac.into(),
            key,
            iv,
            mac_key,
        }
    }

    const SP800_38A_PT: &str = "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51\
                                30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710";
    const SP800_38A_CTR: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

    /// SP 800-38A F.5: the four blocks go out as two packets of two blocks
    /// each; the keystream must continue across them.
    #[test]
    fn nist_sp800_38a_ctr_across_packets() {
        for (cipher, key, ct) in [
            (
                "aes128-ctr",
                "2b7e151628aed2a6abf7158809cf4f3c",
                "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff\
                 5ae4df3edbd5d35e5b4f09020db03eab1e031dda2fbe03d1792170a0f3009cee",
            ),
            (
                "aes256-ctr",
                "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
                "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5\
                 2b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6",
            ),
        ] {
            let ct: String = ct.split_whitespace().collect();
            let pt: String = SP800_38A_PT.split_whitespace().collect();
            let (pt, ct) = (hex(&pt), hex(&ct));
            let m = material(
                cipher,
                "hmac-sha2-256-etm@openssh.com",
                hex(key),
                hex(SP800_38A_CTR),
                vec![7; 32],
            );
            let mut s = sealing_key(&m).unwrap();
            let mut o = opening_key(&m).unwrap();
            for (seq, half) in [(0u32, 0..32), (1, 32..64)] {
                let mut p = vec![0, 0, 0, 32];
                p.extend_from_slice(&pt[half.clone()]);
                s.seal(seq, &mut p).unwrap();
                assert_eq!(&p[..4], &[0, 0, 0, 32]);
                assert_eq!(&p[4..36], &ct[half.clone()], "{cipher} seq {seq}");
                let (body, tag) = p.split_at_mut(36);
                o.open(seq, body, tag).unwrap();
                assert_eq!(&body[4..], &pt[half]);
            }
            // After four blocks the exported counter is f0f1…fdff03.
            assert_eq!(s.export().iv, hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdff03"));
            assert_eq!(o.export().iv, hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdff03"));
        }
    }

    /// RFC 4231 test cases 1 and 2, each computed twice on the same context
    /// (the second time through the keyless re-init).
    #[test]
    fn rfc4231_hmac() {
        let cases: [(&CStr, &[u8], &[u8], &str); 4] = [
            (
                c"SHA256",
                &[0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                c"SHA256",
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                c"SHA512",
                &[0x0b; 20],
                b"Hi There",
                "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde\
                 daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
            ),
            (
                c"SHA512",
                b"Jefe",
                b"what do ya want for nothing?",
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554\
                 9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
            ),
        ];
        for (digest, key, data, want) in cases {
            let want: String = want.split_whitespace().collect();
            let want = hex(&want);
            let mut mac = EvpMac::hmac(digest, key).unwrap();
            for _ in 0..2 {
                mac.init(None).unwrap();
                mac.update(&data[..3]).unwrap();
                mac.update(&data[3..]).unwrap();
                let mut out = [0u8; 64];
                let n = mac.finish(&mut out).unwrap();
                assert_eq!(&out[..n], &want[..]);
            }
        }
    }

    struct Vector {
        cipher: &'static str,
        mac: &'static str,
        key: Vec<u8>,
        mac_key: Vec<u8>,
        packets: [(u32, &'static str, &'static str); 3],
    }

    fn vectors() -> Vec<Vector> {
        vec![
            Vector {
                cipher: "aes128-ctr",
                mac: "hmac-sha2-256-etm@openssh.com",
                key: (0x10..0x20).collect(),
                mac_key: (0x80..0xa0).collect(),
                packets: [
                    (
                        3,
                        "000000100468656c6c6f20776f726c64a5a5a5a5",
                        "0000001089ad5fe38caa34c0da9817eda61263ee7ba08eef5f0fb570c20b3a1d\
                         c106b2a1f6a2624cc2187f2d75935bc6b316a7c8",
                    ),
                    (
                        4,
                        "0000003007000102030405060708090a0b0c0d0e0f101112131415161718191a\
                         1b1c1d1e1f2021222324252627a5a5a5a5a5a5a5",
                        "0000003010c12b032fbdb937c9cfc5ae765851a9503bd529c1dc3fbcc43c32bb\
                         e2e686a33f9e8b5ffdc7315f190ffe0f5d155f0ff2150390dea0351759f50f9d\
                         3bf18b4753b62a3c7e232e25974d394d48f3808f",
                    ),
                    (
                        5,
                        "000000100e78a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
                        "0000001013375c8fdfaca2426ed0c46c3ebccc778264fa813f1d999e5e34b118\
                         bb1a36ac3a6cbfa86f02c03db4119bb60c758ff5",
                    ),
                ],
            },
            Vector {
                cipher: "aes256-ctr",
                mac: "hmac-sha2-512-etm@openssh.com",
                key: (0x40..0x60).collect(),
                mac_key: (0x80..0xc0).collect(),
                packets: [
                    (
                        3,
                        "000000100468656c6c6f20776f726c64a5a5a5a5",
                        "0000001073beaba80a2d3c817c9b1620a943a72d2b6dba1ce631275ef1cc7dd7\
                         ec0d80b33eb09c714b8a032df2525efbdd24e1aea86023af5be02e69e49e27e7\
                         c005bec8f09bc6938c96e93727779107a098a2ac",
                    ),
                    (
                        4,
                        "0000003007000102030405060708090a0b0c0d0e0f101112131415161718191a\
                         1b1c1d1e1f2021222324252627a5a5a5a5a5a5a5",
                        "00000030076eec11a2b0137230351e38a9a1d0e2bcf701d71a955029621def00\
                         c6fe8d098225fc481eec2f39e0a54aff35d7d5ef3fc4ced46c55383a49f74f06\
                         715d8161ba99fcd57cac20130b5f1c8dde50a770de242bec771d03a7744099f6\
                         ebf8a8af33b5a2939b95187f1f294983783b89a9",
                    ),
                    (
                        5,
                        "000000100e78a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
                        "00000010cc16f17b26ccd00beebb0440688f72be5209b3f093356061d5477377\
                         0c208caf560f9609264cdd753930f1bd92dc4094781388c94012ac511ba11ab6\
                         d3a13d1d17b68afe8225472d1aedf475a770e6a4",
                    ),
                ],
            },
            Vector {
                cipher: "aes192-ctr",
                mac: "hmac-sha2-256",
                key: (0x20..0x38).collect(),
                mac_key: (0x80..0xa0).collect(),
                packets: [
                    (
                        3,
                        "0000001c1068656c6c6f20776f726c64a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
                        "73b7d19d7bd3cfae90474ef0bf39be4db15e753b093afd84850d060b50f5ab01\
                         477a244b9499a6633f4d0e56f2456b8520b3d25a99c376e3ac14673e634497ec",
                    ),
                    (
                        4,
                        "0000003c13000102030405060708090a0b0c0d0e0f101112131415161718191a\
                         1b1c1d1e1f2021222324252627a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
                        "cb7cc0f8a39f8386b172e8a38cca79ac789905539a0e64fd864b48b54771ba6f\
                         ef684b0de4492457b2385fbc69e9299e5729e71990fac4de6f879e6dfbdf5b0d\
                         895acfad40bc4968a6c747dfe061512f92ec1a96c12b123428314d6c3eee9f38",
                    ),
                    (
                        5,
                        "0000000c0a78a5a5a5a5a5a5a5a5a5a5",
                        "822a7e602607ed249585a772329d5a0c51a34c8da956d0ff602acebb454ebb0d\
                         02cd907cbc564e9caf7f658279e3de3d",
                    ),
                ],
            },
            Vector {
                cipher: "aes128-ctr",
                mac: "hmac-sha1",
                key: (0x10..0x20).collect(),
                mac_key: (0x80..0x94).collect(),
                packets: [
                    (
                        3,
                        "0000001c1068656c6c6f20776f726c64a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
                        "8dc53a93f0ad71dbd9855bfe6cc5aa2fb2648fa4891c19946b626901d8f1f902\
                         e7334df9069da08eb06e36bae7152624cd4a30e4",
                    ),
                    (
                        4,
                        "0000003c13000102030405060708090a0b0c0d0e0f101112131415161718191a\
                         1b1c1d1e1f2021222324252627a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
                        "5f2bc407c1c82ba8d0202ea7fef292b72bb2a773d1f3056b2dbe4ebcefa8e3b0\
                         0653e434652926c5e85144efbcbccc772e14c6d5e98ffd3c090e78b0f7884938\
                         d1d94b54f3a05485fa7b2fcb3fc4dcafe691723a",
                    ),
                    (
                        5,
                        "0000000c0a78a5a5a5a5a5a5a5a5a5a5",
                        "0ae4202054c82cb3c021febda74c9bf8214ae487ce52e9ad4b10aa62a1a581b4\
                         de5a5538",
                    ),
                ],
            },
        ]
    }

    const PKT_IV: &str = "00112233445566778899aabbfffffffe";

    #[test]
    fn packet_vectors_from_python() {
        for v in vectors() {
            let m = material(
                v.cipher,
                v.mac,
                v.key.clone(),
                hex(PKT_IV),
                v.mac_key.clone(),
            );
            let mut s = sealing_key(&m).unwrap();
            let mut o = opening_key(&m).unwrap();
            assert_eq!(s.tag_len(), super::super::mac(v.mac).unwrap().tag_len);
            for (seq, plain, sealed) in v.packets {
                let (plain, sealed) = (hex(plain), hex(sealed));
                let mut p = plain.clone();
                s.seal(seq, &mut p).unwrap();
                assert_eq!(p, sealed, "{} seq {seq}", v.cipher);
                let first4 = [p[0], p[1], p[2], p[3]];
                assert_eq!(o.decrypt_length(seq, first4) as usize, plain.len() - 4);
                let n = plain.len();
                let (body, tag) = p.split_at_mut(n);
                o.open(seq, body, tag).unwrap();
                assert_eq!(body, &plain[..]);
            }
            // 1 + 3 + 1 blocks after ...fffffffe with EtM, 2 + 4 + 1
            // without (the length is encrypted too).
            let want = if super::super::mac(v.mac).unwrap().etm {
                hex("00112233445566778899aabc00000003")
            } else {
                hex("00112233445566778899aabc00000005")
            };
            assert_eq!(s.export().iv, want);
            assert_eq!(o.export().iv, want);
        }
    }

    #[test]
    fn export_mid_stream_continues() {
        for v in vectors() {
            let m = material(
                v.cipher,
                v.mac,
                v.key.clone(),
                hex(PKT_IV),
                v.mac_key.clone(),
            );
            let mut s = sealing_key(&m).unwrap();
            let mut o = opening_key(&m).unwrap();
            let (seq, plain, sealed) = v.packets[0];
            let mut p = hex(plain);
            s.seal(seq, &mut p).unwrap();
            assert_eq!(p, hex(sealed));
            let n = hex(plain).len();
            let (body, tag) = p.split_at_mut(n);
            o.open(seq, body, tag).unwrap();

            let se = s.export();
            let oe = o.export();
            assert_eq!(se.cipher, v.cipher);
            assert_eq!(se.mac, v.mac);
            assert_eq!(se.mac_key, v.mac_key);
            drop((s, o));
            let mut s = sealing_key(&se).unwrap();
            let mut o = opening_key(&oe).unwrap();
            for (seq, plain, sealed) in &v.packets[1..] {
                let plain = hex(plain);
                let mut p = plain.clone();
                s.seal(*seq, &mut p).unwrap();
                assert_eq!(p, hex(sealed));
                let (body, tag) = p.split_at_mut(plain.len());
                o.open(*seq, body, tag).unwrap();
                assert_eq!(body, &plain[..]);
            }
        }
    }

    /// The exported counter is a 128-bit big-endian sum, like OpenSSL's own
    /// counter: starting at ff…ff, the second block uses 00…00.
    #[test]
    fn counter_wraps_at_128_bits() {
        let keystream = hex(
            "3c441f32ce07822364d7a2990e50bb13c6a13b37878f5b826f4f8162a1c8d879\
             7346139595c0b41e497bbde365f42d0a49d68753999ba68ce3897a686081b09d"
                .split_whitespace()
                .collect::<String>()
                .as_str(),
        );
        let m = material(
            "aes128-ctr",
            "hmac-sha2-256-etm@openssh.com",
            (0..16).collect(),
            vec![0xff; 16],
            vec![1; 32],
        );
        let mut s = sealing_key(&m).unwrap();
        let mut p = vec![0u8; 20];
        s.seal(0, &mut p).unwrap();
        assert_eq!(&p[4..20], &keystream[..16]);
        let e = s.export();
        assert_eq!(e.iv, vec![0; 16]);
        let mut s2 = sealing_key(&e).unwrap();
        let mut p2 = vec![0u8; 52];
        s2.seal(1, &mut p2).unwrap();
        let mut p3 = vec![0u8; 52];
        s.seal(1, &mut p3).unwrap();
        assert_eq!(p2, p3);
        assert_eq!(&p2[4..52], &keystream[16..]);
    }

    #[test]
    fn bad_tag_rejected_and_state_unchanged() {
        // An EtM and an encrypt-and-MAC vector: the second decrypts before
        // it can check, and must encrypt back and rewind.
        for v in [&vectors()[0], &vectors()[2]] {
            let m = material(
                v.cipher,
                v.mac,
                v.key.clone(),
                hex(PKT_IV),
                v.mac_key.clone(),
            );
            let mut o = opening_key(&m).unwrap();
            let (seq, plain, sealed) = v.packets[0];
            let plain = hex(plain);
            let sealed = hex(sealed);
            let n = plain.len();
            let before = o.export();
            let length_key = o.decrypt_length(seq, [0; 4]);

            // Flipped bit in the tag, the ciphertext, the length; wrong seq;
            // short, long and empty tags.
            for i in [0, 3, 4, n - 1, n, sealed.len() - 1] {
                let mut p = sealed.clone();
                p[i] ^= 0x01;
                let (body, tag) = p.split_at_mut(n);
                let copy = body.to_vec();
                assert_eq!(o.open(seq, body, tag), Err(Error::Mac));
                assert_eq!(body, &copy[..], "packet must stay untouched");
            }
            let mut p = sealed.clone();
            let (body, tag) = p.split_at_mut(n);
            assert_eq!(o.open(seq + 1, body, tag), Err(Error::Mac));
            assert_eq!(o.open(seq, body, &tag[..tag.len() - 1]), Err(Error::Mac));
            assert_eq!(o.open(seq, body, &[]), Err(Error::Mac));
            let mut long = tag.to_vec();
            long.push(0);
            assert_eq!(o.open(seq, body, &long), Err(Error::Mac));
            assert_eq!(o.export().iv, before.iv);
            assert_eq!(o.decrypt_length(seq, [0; 4]), length_key);

            // The key still opens the genuine packet afterwards.
            o.open(seq, body, tag).unwrap();
            assert_eq!(body, &plain[..]);
        }
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let v = &vectors()[1];
        let m = material(
            v.cipher,
            v.mac,
            v.key.clone(),
            hex(PKT_IV),
            v.mac_key.clone(),
        );
        let mut s = sealing_key(&m).unwrap();
        let mut o = opening_key(&m).unwrap();
        for len in [0usize, 3, 4, 5, 19, 21, 35] {
            let mut p = vec![0u8; len];
            assert!(s.seal(0, &mut p).is_err(), "seal len {len}");
            assert_eq!(p.len(), len);
            assert!(o.open(0, &mut p, &[0u8; 64]).is_err(), "open len {len}");
        }
        assert_eq!(s.export().iv, hex(PKT_IV));
        assert_eq!(o.export().iv, hex(PKT_IV));

        // Key material that does not fit.
        let bad = [
            material("aes128-ctr", v.mac, vec![0; 32], vec![0; 16], vec![0; 64]),
            material("aes256-ctr", v.mac, vec![0; 32], vec![0; 12], vec![0; 64]),
            material("aes256-ctr", v.mac, vec![0; 32], vec![0; 16], vec![0; 32]),
            material("aes256-ctr", "", vec![0; 32], vec![0; 16], vec![]),
            material(
                "aes256-ctr",
                "hmac-md5",
                vec![0; 32],
                vec![0; 16],
                vec![0; 16],
            ),
            material("aes192-ctr", v.mac, vec![0; 32], vec![0; 16], vec![0; 64]),
        ];
        for m in &bad {
            assert!(sealing_key(m).is_err(), "{m:?}");
            assert!(opening_key(m).is_err(), "{m:?}");
        }
    }

    #[test]
    fn round_trip_many_packets() {
        for c in [&AES128_CTR, &AES192_CTR, &AES256_CTR] {
            for mac in super::super::MACS {
                let m = material(
                    c.name,
                    mac.name,
                    vec![9; c.key_len],
                    vec![0xfe; 16],
                    vec![3; mac.key_len],
                );
                let mut s = sealing_key(&m).unwrap();
                let mut o = opening_key(&m).unwrap();
                assert_eq!(s.length_outside_blocks(), mac.etm);
                assert_eq!(o.length_outside_blocks(), mac.etm);
                assert_eq!((s.block_size(), o.block_size()), (16, 16));
                // Encrypt-and-MAC aligns the length too.
                let extra = if mac.etm { 0 } else { 12 };
                for i in 0..50u32 {
                    let body_len = 16 * (1 + (i as usize * 7) % 40) + extra;
                    let mut plain = (body_len as u32).to_be_bytes().to_vec();
                    plain.extend((0..body_len).map(|j| (j as u32 ^ i) as u8));
                    let mut p = plain.clone();
                    s.seal(i, &mut p).unwrap();
                    assert_eq!(p.len(), plain.len() + mac.tag_len);
                    assert_ne!(&p[4..plain.len()], &plain[4..]);
                    let first4 = [p[0], p[1], p[2], p[3]];
                    assert_eq!(o.decrypt_length(i, first4) as usize, body_len);
                    let (body, tag) = p.split_at_mut(plain.len());
                    o.open(i, body, tag).unwrap();
                    assert_eq!(body, &plain[..], "{} {}", c.name, mac.name);
                }
                assert_eq!(s.export().iv, o.export().iv);
            }
        }
    }
}
