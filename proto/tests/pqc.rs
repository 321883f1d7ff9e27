//! Known-answer and hostile-input tests of the post-quantum KEMs
//! (ressh_proto::pqc).
//!
//! Known answers: NIST's KEM API test procedure (PQCgenKAT_kem: the
//! AES-256-CTR DRBG seeded with the bytes 0..47 draws a 48-byte seed, which
//! reseeds it; then keypair, enc, dec), as PQClean's
//! test/crypto_kem/nistkat.c prints it for count 0. PQClean pins the
//! SHA-256 of that text in each scheme's META.yml (`nistkat-sha256`):
//! crypto_kem/ml-kem-768/META.yml (FIPS 203 final, from pq-crystals'
//! reference) and crypto_kem/sntrup761/META.yml (supercop-20210604, the
//! NTRU Prime team's code). Both KEMs here draw their randomness in the
//! reference code's requests (ML-KEM: d ‖ z in one 64-byte request, m in
//! one of 32; sntrup761: 4·761 bytes per polynomial, then ρ), so the same
//! DRBG reproduces the reference's keys, ciphertext and secret exactly.

use std::fmt::Write;

use openssl::sha::sha256;
use openssl::symm::{Cipher, Crypter, Mode};
use ressh_proto::pqc::{mlkem768, sntrup761, SharedSecret};
use ressh_proto::Error;

/// NIST's AES-256-CTR DRBG of the PQC KAT generators (rng.c).
struct Drbg {
    key: [u8; 32],
    v: [u8; 16],
}

impl Drbg {
    fn new(entropy: &[u8; 48]) -> Drbg {
        let mut d = Drbg {
            key: [0; 32],
            v: [0; 16],
        };
        d.update(Some(entropy));
        d
    }

    fn block(&mut self) -> [u8; 16] {
        for b in self.v.iter_mut().rev() {
            *b = b.wrapping_add(1);
            if *b != 0 {
                break;
            }
        }
        let mut c = Crypter::new(Cipher::aes_256_ecb(), Mode::Encrypt, &self.key, None).unwrap();
        c.pad(false);
        let mut out = [0u8; 32];
        let n = c.update(&self.v, &mut out).unwrap();
        assert_eq!(n, 16);
        out[..16].try_into().unwrap()
    }

    fn update(&mut self, provided: Option<&[u8; 48]>) {
        let mut temp = [0u8; 48];
        for i in 0..3 {
            temp[16 * i..16 * (i + 1)].copy_from_slice(&self.block());
        }
        if let Some(p) = provided {
            for (t, p) in temp.iter_mut().zip(p) {
                *t ^= p;
            }
        }
        self.key.copy_from_slice(&temp[..32]);
        self.v.copy_from_slice(&temp[32..]);
    }

    /// One `randombytes(buf, len)` call.
    fn randombytes(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(16) {
            let b = self.block();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        self.update(None);
    }
}

/// The DRBG state of KAT count 0 and the seed line's bytes.
fn count0() -> (Drbg, [u8; 48]) {
    let entropy: [u8; 48] = std::array::from_fn(|i| i as u8);
    let mut d = Drbg::new(&entropy);
    let mut seed = [0u8; 48];
    d.randombytes(&mut seed);
    (Drbg::new(&seed), seed)
}

fn hex_line(out: &mut String, label: &str, bytes: &[u8]) {
    out.push_str(label);
    for b in bytes {
        write!(out, "{b:02X}").unwrap();
    }
    out.push('\n');
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// PQClean's nistkat output for count 0, from the parts.
fn kat_text(seed: &[u8], pk: &[u8], sk: &[u8], ct: &[u8], ss: &SharedSecret) -> String {
    let mut s = String::from("count = 0\n");
    hex_line(&mut s, "seed = ", seed);
    hex_line(&mut s, "pk = ", pk);
    hex_line(&mut s, "sk = ", sk);
    hex_line(&mut s, "ct = ", ct);
    hex_line(&mut s, "ss = ", &ss[..]);
    s
}

/// PQClean crypto_kem/ml-kem-768/META.yml, nistkat-sha256.
const MLKEM768_NISTKAT_SHA256: &str =
    "5352539586b6c3df58be6158a6250aeff402bd73060b0a3de68850ac074c17c3";
/// PQClean crypto_kem/sntrup761/META.yml, nistkat-sha256.
const SNTRUP761_NISTKAT_SHA256: &str =
    "afc42c3a5b10f4ef69654250097ebda9b9564570f4086744b24a6daf2bd1f89a";

#[test]
fn mlkem768_nist_kat() {
    let (mut drbg, seed) = count0();
    let mut random = |b: &mut [u8]| {
        drbg.randombytes(b);
        Ok(())
    };
    let sk = mlkem768::keypair_with(&mut random).unwrap();
    let pk = sk.public_key();
    let (ct, ss) = mlkem768::encapsulate_with(&pk, &mut random).unwrap();
    assert_eq!(
        (pk.len(), ct.len()),
        (mlkem768::PUBLIC_KEY_LEN, mlkem768::CIPHERTEXT_LEN)
    );
    let expanded = sk.expanded_bytes();
    assert_eq!(expanded.len(), mlkem768::EXPANDED_SECRET_KEY_LEN);
    let text = kat_text(&seed, &pk, &expanded, &ct, &ss);
    assert_eq!(hex(&sha256(text.as_bytes())), MLKEM768_NISTKAT_SHA256);
    assert_eq!(mlkem768::decapsulate(&sk, &ct).unwrap(), ss);
}

#[test]
fn sntrup761_nist_kat() {
    let (mut drbg, seed) = count0();
    // The reference asks for a polynomial's 4·761 bytes in one request;
    // the crate asks for them 4 at a time: serve those from one request.
    let mut pending: Vec<u8> = Vec::new();
    let mut random = |b: &mut [u8]| {
        if b.len() == 4 {
            if pending.is_empty() {
                pending = vec![0; 4 * 761];
                drbg.randombytes(&mut pending);
            }
            b.copy_from_slice(&pending[..4]);
            pending.drain(..4);
        } else {
            assert!(pending.is_empty(), "a request inside a polynomial's");
            drbg.randombytes(b);
        }
        Ok(())
    };
    let sk = sntrup761::keypair_with(&mut random).unwrap();
    let pk = sk.public_key();
    let (ct, ss) = sntrup761::encapsulate_with(&pk, &mut random).unwrap();
    let skb = sk.to_bytes();
    assert_eq!(
        (pk.len(), skb.len(), ct.len()),
        (
            sntrup761::PUBLIC_KEY_LEN,
            sntrup761::SECRET_KEY_LEN,
            sntrup761::CIPHERTEXT_LEN
        )
    );
    let text = kat_text(&seed, &pk, &skb, &ct, &ss);
    assert_eq!(hex(&sha256(text.as_bytes())), SNTRUP761_NISTKAT_SHA256);
    assert_eq!(sntrup761::decapsulate(&sk, &ct).unwrap(), ss);
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    openssl::rand::rand_bytes(&mut v).unwrap();
    v
}

#[test]
fn wrong_lengths_are_refused() {
    let ml = mlkem768::keypair().unwrap();
    let nt = sntrup761::keypair().unwrap();
    let (ml_pk, nt_pk) = (ml.public_key(), nt.public_key());
    let (ml_ct, _) = mlkem768::encapsulate(&ml_pk).unwrap();
    let (nt_ct, _) = sntrup761::encapsulate(&nt_pk).unwrap();
    for (good, check) in [
        (
            &ml_pk,
            &(|b: &[u8]| mlkem768::encapsulate(b).map(drop)) as &dyn Fn(&[u8]) -> _,
        ),
        (&nt_pk, &|b: &[u8]| sntrup761::encapsulate(b).map(drop)),
        (&ml_ct, &|b: &[u8]| mlkem768::decapsulate(&ml, b).map(drop)),
        (&nt_ct, &|b: &[u8]| sntrup761::decapsulate(&nt, b).map(drop)),
    ] {
        assert_eq!(check(good), Ok(()));
        let n = good.len();
        let mut longer = good.clone();
        longer.push(0);
        for bad in [&[][..], &good[..1], &good[..n - 1], &longer, &[0; 4096]] {
            assert!(
                matches!(check(bad), Err(Error::Malformed(_))),
                "length {} accepted where {n} is required",
                bad.len()
            );
        }
    }
}

/// FIPS 203 §7.2's modulus check: a coefficient of t̂ at or above q = 3329
/// makes the encapsulation key invalid.
#[test]
fn mlkem768_modulus_check() {
    let pk = mlkem768::keypair().unwrap().public_key();
    // ByteEncode12 packs coefficients c0, c1 into 3 bytes, c0 first.
    let with_c0 = |c: u16| {
        let mut p = pk.clone();
        p[0] = (c & 0xff) as u8;
        p[1] = (p[1] & 0xf0) | (c >> 8) as u8;
        p
    };
    assert!(mlkem768::encapsulate(&with_c0(3328)).is_ok());
    for c in [3329, 3330, 4095] {
        assert_eq!(
            mlkem768::encapsulate(&with_c0(c)).map(drop),
            Err(Error::Malformed("ml-kem-768 public key (modulus check)")),
            "coefficient {c}"
        );
    }
    // The last coefficient (in the last 12 bits before ρ) too.
    let mut p = pk.clone();
    let at = mlkem768::PUBLIC_KEY_LEN - 32 - 1;
    p[at] = 0xff;
    assert!(mlkem768::encapsulate(&p).is_err());
    // ρ (the last 32 bytes) is any 32 bytes.
    let mut p = pk.clone();
    p[mlkem768::PUBLIC_KEY_LEN - 1] ^= 0xff;
    assert!(mlkem768::encapsulate(&p).is_ok());
}

/// A ciphertext that was not made for the key decapsulates to an unrelated
/// secret (implicit rejection): no error, no panic, and the same secret for
/// the same ciphertext.
#[test]
fn forged_ciphertexts_yield_unrelated_secrets() {
    let ml = mlkem768::keypair().unwrap();
    let (ct, ss) = mlkem768::encapsulate(&ml.public_key()).unwrap();
    let nt = sntrup761::keypair().unwrap();
    let (nct, nss) = sntrup761::encapsulate(&nt.public_key()).unwrap();
    type Decap<'a> = &'a dyn Fn(&[u8]) -> SharedSecret;
    let cases: [(&Vec<u8>, &SharedSecret, Decap); 2] = [
        (&ct, &ss, &|c| mlkem768::decapsulate(&ml, c).unwrap()),
        (&nct, &nss, &|c| sntrup761::decapsulate(&nt, c).unwrap()),
    ];
    for (ct, ss, decap) in cases {
        assert_eq!(&decap(ct), ss);
        let mut seen = vec![ss.clone()];
        for i in [0, 1, ct.len() / 2, ct.len() - 1] {
            let mut bad = ct.clone();
            bad[i] ^= 0x01;
            let forged = decap(&bad);
            assert_eq!(decap(&bad), forged, "implicit rejection is deterministic");
            assert!(!seen.contains(&forged), "byte {i}: a secret repeated");
            seen.push(forged);
        }
        for _ in 0..4 {
            let forged = decap(&random_bytes(ct.len()));
            assert!(!seen.contains(&forged));
            seen.push(forged);
        }
    }
}

/// Any public key bytes of the right length encapsulate (sntrup761 has no
/// invalid encoding; ML-KEM's may fail the modulus check), without panic.
#[test]
fn random_public_keys_do_not_panic() {
    for _ in 0..8 {
        let _ = mlkem768::encapsulate(&random_bytes(mlkem768::PUBLIC_KEY_LEN));
        sntrup761::encapsulate(&random_bytes(sntrup761::PUBLIC_KEY_LEN)).unwrap();
    }
}

/// A failing random source fails the operation.
#[test]
fn random_source_failure_is_an_error() {
    let pk = mlkem768::keypair().unwrap().public_key();
    let npk = sntrup761::keypair().unwrap().public_key();
    let failing = || {
        let mut calls = 0;
        move |b: &mut [u8]| {
            calls += 1;
            if calls > 3 {
                return Err(Error::Crypto("no entropy".into()));
            }
            b.fill(7);
            Ok(())
        }
    };
    let no = Err(Error::Crypto("no entropy".into()));
    assert_eq!(sntrup761::keypair_with(&mut failing()).map(drop), no);
    let mut always = |_: &mut [u8]| Err(Error::Crypto("no entropy".into()));
    assert_eq!(mlkem768::keypair_with(&mut always).map(drop), no);
    assert_eq!(mlkem768::encapsulate_with(&pk, &mut always).map(drop), no);
    assert_eq!(
        sntrup761::encapsulate_with(&npk, &mut failing()).map(drop),
        no
    );
}

mod prop {
    use super::*;
    use proptest::prelude::*;
    use std::sync::LazyLock;

    static KEYS: LazyLock<(mlkem768::SecretKey, sntrup761::SecretKey)> =
        LazyLock::new(|| (mlkem768::keypair().unwrap(), sntrup761::keypair().unwrap()));

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2500)) {
            let _ = mlkem768::encapsulate(&data);
            let _ = sntrup761::encapsulate(&data);
            let _ = mlkem768::decapsulate(&KEYS.0, &data);
            let _ = sntrup761::decapsulate(&KEYS.1, &data);
        }
    }
}
