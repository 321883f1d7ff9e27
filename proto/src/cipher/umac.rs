//! UMAC (RFC 4418) with AES-128, as OpenSSH uses it for
//! `umac-64@openssh.com` and `umac-128@openssh.com` (and their `-etm`
//! forms): a 16-byte key, an 8-byte nonce that is the packet sequence
//! number as a big-endian 64-bit integer, and the packet (without the
//! sequence number) as the message.
//!
//! UHASH is computed in full for messages of up to 2^24 bytes, where the
//! second level's 64-bit polynomial suffices (RFC 4418 §5.3 switches to a
//! 128-bit polynomial above that; OpenSSH's implementation has the same
//! limit). SSH packets are far smaller; a longer message is refused.
//!
//! The arithmetic is written from the RFC's definitions: NH over 32-bit
//! little-endian message words and big-endian key words (§5.2.1), the
//! polynomial hash modulo 2^64 - 59 (§5.3), the inner product modulo
//! 2^36 - 5 (§5.4), and the pad from AES of the nonce (§3).

use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};

const BLOCK: usize = 16;
/// Bytes of message per NH call (the L1 key's length).
const L1_CHUNK: usize = 1024;
/// NH works on 32-byte multiples.
const NH_PAD: usize = 32;
/// Longest message the 64-bit polynomial covers (2^14 chunks).
const MAX_MESSAGE: usize = L1_CHUNK << 14;
const P64: u128 = (1 << 64) - 59;
const P36: u64 = (1 << 36) - 5;

/// AES-128 on single blocks (the KDF and the pad).
struct Aes(CipherCtx);

impl Aes {
    fn new(key: &[u8]) -> Result<Aes> {
        let mut ctx = CipherCtx::new()?;
        ctx.encrypt_init(Some(Cipher::aes_128_ecb()), Some(key), None)?;
        ctx.set_padding(false);
        Ok(Aes(ctx))
    }

    fn encrypt(&mut self, block: &[u8; BLOCK]) -> Result<[u8; BLOCK]> {
        let mut out = [0u8; 2 * BLOCK];
        let n = self.0.cipher_update(block, Some(&mut out))?;
        if n != BLOCK {
            return Err(Error::Crypto("short AES output".into()));
        }
        let mut b = [0u8; BLOCK];
        b.copy_from_slice(&out[..BLOCK]);
        out.zeroize();
        Ok(b)
    }

    /// RFC 4418 §3.2.1 KDF: `n` bytes of AES in counter mode under `index`.
    fn kdf(&mut self, index: u8, n: usize) -> Result<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(Vec::with_capacity(n + BLOCK));
        let mut i: u8 = 1;
        while out.len() < n {
            let mut t = [0u8; BLOCK];
            t[7] = index;
            t[15] = i;
            let mut b = self.encrypt(&t)?;
            out.extend_from_slice(&b);
            b.zeroize();
            i = i.checked_add(1).ok_or(Error::State("UMAC KDF too long"))?;
        }
        out.truncate(n);
        Ok(out)
    }
}

/// A UMAC key: UHASH's keys for each 32-bit stream and the pad's AES key.
pub(super) struct Umac {
    /// 2 for UMAC-64, 4 for UMAC-128.
    streams: usize,
    /// L1 (NH) key as big-endian words; stream `s` starts at word `4 * s`.
    nh_key: Zeroizing<Vec<u32>>,
    /// L2 polynomial keys, masked to their domain.
    poly_key: Zeroizing<[u64; 4]>,
    /// L3 inner-product keys (the four that meet the non-zero half of the
    /// 16-byte L2 output), reduced modulo 2^36 - 5.
    ip_key: Zeroizing<[[u64; 4]; 4]>,
    /// L3 translation words.
    ip_trans: Zeroizing<[u32; 4]>,
    pdf: Aes,
    /// The last pad block and the nonce block it was made from: UMAC-64
    /// uses each AES output for two consecutive sequence numbers.
    pad_cache: Option<(u64, Zeroizing<[u8; BLOCK]>)>,
}

impl Umac {
    /// `tag_len` is 8 (UMAC-64) or 16 (UMAC-128).
    pub(super) fn new(key: &[u8], tag_len: usize) -> Result<Umac> {
        if key.len() != 16 || !(tag_len == 8 || tag_len == 16) {
            return Err(Error::State("UMAC key or tag length"));
        }
        let streams = tag_len / 4;
        let mut aes = Aes::new(key)?;
        let l1 = aes.kdf(1, L1_CHUNK + 16 * (streams - 1))?;
        let nh_key = Zeroizing::new(
            l1.chunks_exact(4)
                .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
                .collect::<Vec<u32>>(),
        );
        let be64 = |b: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[..8]);
            u64::from_be_bytes(w)
        };
        let l2 = aes.kdf(2, 24 * streams)?;
        let l3a = aes.kdf(3, 64 * streams)?;
        let l3b = aes.kdf(4, 4 * streams)?;
        let mut poly_key = Zeroizing::new([0u64; 4]);
        let mut ip_key = Zeroizing::new([[0u64; 4]; 4]);
        let mut ip_trans = Zeroizing::new([0u32; 4]);
        for s in 0..streams {
            poly_key[s] = be64(&l2[24 * s..]) & 0x01ff_ffff_01ff_ffff;
            for j in 0..4 {
                ip_key[s][j] = be64(&l3a[64 * s + 32 + 8 * j..]) % P36;
            }
            let t = &l3b[4 * s..4 * s + 4];
            ip_trans[s] = u32::from_be_bytes([t[0], t[1], t[2], t[3]]);
        }
        let pdf_key = aes.kdf(0, 16)?;
        Ok(Umac {
            streams,
            nh_key,
            poly_key,
            ip_key,
            ip_trans,
            pdf: Aes::new(&pdf_key)?,
            pad_cache: None,
        })
    }

    /// Writes the tag of `msg` under `nonce` into `out` (tag-length bytes).
    pub(super) fn tag(&mut self, nonce: u64, msg: &[u8], out: &mut [u8]) -> Result<()> {
        if out.len() != 4 * self.streams {
            return Err(Error::State("UMAC tag length"));
        }
        if msg.len() > MAX_MESSAGE {
            return Err(Error::TooLarge("UMAC message"));
        }
        let mut words = Zeroizing::new([0u32; L1_CHUNK / 4]);
        let mut l1 = [0u64; 4];
        let mut acc = [1u128; 4];
        let chunks = msg.len().div_ceil(L1_CHUNK).max(1);
        for c in 0..chunks {
            let chunk = &msg[(c * L1_CHUNK).min(msg.len())..((c + 1) * L1_CHUNK).min(msg.len())];
            let padded = chunk.len().div_ceil(NH_PAD).max(1) * NH_PAD;
            for (i, w) in words[..padded / 4].iter_mut().enumerate() {
                let mut b = [0u8; 4];
                for (k, byte) in b.iter_mut().enumerate() {
                    *byte = chunk.get(4 * i + k).copied().unwrap_or(0);
                }
                *w = u32::from_le_bytes(b);
            }
            let bits = 8 * chunk.len() as u64;
            for (s, out) in l1.iter_mut().enumerate().take(self.streams) {
                *out = nh(&self.nh_key[4 * s..], &words[..padded / 4]).wrapping_add(bits);
            }
            if msg.len() > L1_CHUNK {
                for s in 0..self.streams {
                    acc[s] = poly64(acc[s], self.poly_key[s], l1[s]);
                }
            }
        }
        for s in 0..self.streams {
            let y = if msg.len() > L1_CHUNK {
                acc[s] as u64
            } else {
                l1[s]
            };
            let mut t: u64 = 0;
            for j in 0..4 {
                t += self.ip_key[s][j] * ((y >> (48 - 16 * j)) & 0xffff);
            }
            let h = ((t % P36) as u32) ^ self.ip_trans[s];
            out[4 * s..4 * s + 4].copy_from_slice(&h.to_be_bytes());
        }
        l1.zeroize();
        // The pad (§3.1 PDF): AES of the nonce with its low bit cleared
        // for UMAC-64, whose two halves serve the two nonces.
        let (base, half) = if self.streams == 2 {
            (nonce & !1, (nonce & 1) as usize)
        } else {
            (nonce, 0)
        };
        if self.pad_cache.as_ref().map(|(n, _)| *n) != Some(base) {
            let mut block = [0u8; BLOCK];
            block[..8].copy_from_slice(&base.to_be_bytes());
            self.pad_cache = Some((base, Zeroizing::new(self.pdf.encrypt(&block)?)));
        }
        let pad = &self.pad_cache.as_ref().ok_or(Error::State("UMAC pad"))?.1;
        let pad = &pad[half * 8..half * 8 + out.len()];
        for (o, p) in out.iter_mut().zip(pad) {
            *o ^= p;
        }
        Ok(())
    }
}

/// NH (§5.2.1) of one padded chunk's words with a stream's key.
fn nh(key: &[u32], m: &[u32]) -> u64 {
    let mut y: u64 = 0;
    for (m, k) in m.chunks_exact(8).zip(key.chunks_exact(8)) {
        for j in 0..4 {
            let a = m[j].wrapping_add(k[j]) as u64;
            let b = m[j + 4].wrapping_add(k[j + 4]) as u64;
            y = y.wrapping_add(a * b);
        }
    }
    y
}

/// One step of the 64-bit polynomial hash (§5.3), with the marker for
/// words too large for the field.
fn poly64(acc: u128, key: u64, m: u64) -> u128 {
    let k = key as u128;
    if m >= u64::MAX - 0xffff_ffff {
        let acc = (k * acc + (P64 - 1)) % P64;
        (k * acc + (m as u128 - 59)) % P64
    } else {
        (k * acc + m as u128) % P64
    }
}

#[cfg(test)]
mod tests {
    //! Vectors: RFC 4418 Appendix (key "abcdefghijklmnop", nonce
    //! "bcdefghi", messages of 'a'), and for the SSH use (key 40..4f,
    //! messages `(i * 7 + 3) as u8`, nonces that are sequence numbers
    //! across the UMAC-64 pad's halves) the output of OpenSSH's own
    //! umac.c / umac128.c built with a 20-line driver.
    use super::*;
    use crate::wire::hex;

    fn tag(u: &mut Umac, nonce: u64, msg: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 4 * u.streams];
        u.tag(nonce, msg, &mut out).unwrap();
        out
    }

    #[test]
    fn rfc4418_appendix() {
        let nonce = u64::from_be_bytes(*b"bcdefghi");
        let mut u64_ = Umac::new(b"abcdefghijklmnop", 8).unwrap();
        let mut u128_ = Umac::new(b"abcdefghijklmnop", 16).unwrap();
        for (len, t64, t128) in [
            (0, "6E155FAD26900BE1", "32FEDB100C79AD58F07FF7643CC60465"),
            (3, "44B5CB542F220104", "185E4FE905CBA7BD85E4C2DC3D117D8D"),
            (1024, "26BF2F5D60118BD9", "7A54ABE04AF82D60FB298C3CBD195BCB"),
            (
                32768,
                "27F8EF643B0D118D",
                "7B136BD911E4B734286EF2BE501F2C3C",
            ),
            (
                1 << 20,
                "A4477E87E9F55853",
                "F8ACFA3AC31CFEEA047F7B115B03BEF5",
            ),
        ] {
            let m = vec![b'a'; len];
            assert_eq!(tag(&mut u64_, nonce, &m), hex(t64), "UMAC-64 of {len}");
            assert_eq!(tag(&mut u128_, nonce, &m), hex(t128), "UMAC-128 of {len}");
        }
    }

    #[test]
    fn openssh_umac_c() {
        let key: Vec<u8> = (0x40..0x50).collect();
        let msg: Vec<u8> = (0..40000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut a = Umac::new(&key, 8).unwrap();
        let mut b = Umac::new(&key, 16).unwrap();
        for line in include_str!("umac_vectors.txt").lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (len, seq): (usize, u64) = (f[0].parse().unwrap(), f[1].parse().unwrap());
            assert_eq!(tag(&mut a, seq, &msg[..len]), hex(f[2]), "umac-64 {line}");
            assert_eq!(tag(&mut b, seq, &msg[..len]), hex(f[3]), "umac-128 {line}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_hash() {
        assert!(Umac::new(&[0; 15], 8).is_err());
        assert!(Umac::new(&[0; 16], 12).is_err());
        let mut u = Umac::new(&[0; 16], 8).unwrap();
        let mut out = [0u8; 8];
        let big = vec![0u8; MAX_MESSAGE + 1];
        assert!(matches!(u.tag(0, &big, &mut out), Err(Error::TooLarge(_))));
        assert!(u.tag(0, b"", &mut [0u8; 16]).is_err());
    }
}
