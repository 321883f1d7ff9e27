//! Finite-field Diffie-Hellman over the fixed MODP groups (RFC 4253 §8,
//! RFC 8268): diffie-hellman-group14-sha256, diffie-hellman-group16-sha512,
//! diffie-hellman-group18-sha512 and diffie-hellman-group14-sha1, with
//! generator 2 and the primes of RFC 3526. The group-exchange methods
//! (RFC 4419) reuse [`Exponent`] with a prime the server picks.
//!
//! e and f are mpints on the wire and in the exchange hash. In the
//! registry's init and reply bytes they travel as the contents of those
//! mpints (an mpint is an SSH string of the number's minimal two's
//! complement bytes), so the connection moves them exactly like ECDH's
//! strings. A peer's value is decoded strictly (positive, minimal) and must
//! lie in 1 < y < p - 1 (RFC 4253 §8, as OpenSSH's `dh_pub_is_valid`).
//! The shared secret K is hashed as an mpint.
//!
//! Private exponents are random of twice the group's security strength in
//! bits, at least 512 (OpenSSH: twice the bits the negotiated ciphers
//! need), and the exponentiation is constant-time.

use openssl::bn::{BigNum, BigNumContext, BigNumRef, MsbOption};
use zeroize::Zeroizing;

use super::{ClientKex, Hash, Method, SecretForm, ServerHalf};
use crate::error::{Error, Result};

/// A MODP group: its prime (g = 2) and the private exponent's size.
#[derive(Clone, Copy)]
struct Group {
    prime: super::gex::Prime,
    exponent_bits: i32,
}

const GROUP14: Group = Group {
    prime: BigNum::get_rfc3526_prime_2048,
    exponent_bits: 512,
};
const GROUP16: Group = Group {
    prime: BigNum::get_rfc3526_prime_4096,
    exponent_bits: 1024,
};
const GROUP18: Group = Group {
    prime: BigNum::get_rfc3526_prime_8192,
    exponent_bits: 1024,
};

pub const GROUP14_SHA256: Method = Method {
    name: "diffie-hellman-group14-sha256",
    hash: Hash::Sha256,
    secret: SecretForm::Mpint,
    default: false,
    group_exchange: false,
    client: || client(GROUP14),
    server: |init| server(GROUP14, init),
};

pub const GROUP16_SHA512: Method = Method {
    name: "diffie-hellman-group16-sha512",
    hash: Hash::Sha512,
    client: || client(GROUP16),
    server: |init| server(GROUP16, init),
    ..GROUP14_SHA256
};

pub const GROUP18_SHA512: Method = Method {
    name: "diffie-hellman-group18-sha512",
    hash: Hash::Sha512,
    client: || client(GROUP18),
    server: |init| server(GROUP18, init),
    ..GROUP14_SHA256
};

pub const GROUP14_SHA1: Method = Method {
    name: "diffie-hellman-group14-sha1",
    hash: Hash::Sha1,
    ..GROUP14_SHA256
};

/// A private exponent x in a group of prime p, with e = g^x mod p.
pub struct Exponent {
    p: BigNum,
    x: BigNum,
    e: Vec<u8>,
}

impl Exponent {
    /// A fresh exponent of `bits` bits for the group (p, g).
    pub fn generate(p: BigNum, g: &BigNumRef, bits: i32) -> Result<Exponent> {
        let mut x = BigNum::new()?;
        x.rand(bits, MsbOption::MAYBE_ZERO, false)?;
        x.set_const_time();
        let mut e = BigNum::new()?;
        let mut ctx = BigNumContext::new_secure()?;
        e.mod_exp(g, &x, &p, &mut ctx)?;
        check_public(&e, &p)?;
        Ok(Exponent {
            e: to_mpint_contents(&e),
            p,
            x,
        })
    }

    /// The public value, as mpint contents.
    pub fn public(&self) -> &[u8] {
        &self.e
    }

    /// K from the peer's public value (mpint contents, hostile).
    pub fn agree(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let y = from_mpint_contents(peer)?;
        check_public(&y, &self.p)?;
        let mut k = BigNum::new()?;
        let mut ctx = BigNumContext::new_secure()?;
        k.mod_exp(&y, &self.x, &self.p, &mut ctx)?;
        Ok(Zeroizing::new(k.to_vec()))
    }
}

/// RFC 4253 §8: 1 < y < p - 1.
fn check_public(y: &BigNumRef, p: &BigNumRef) -> Result<()> {
    let mut top = p.to_owned()?;
    top.sub_word(1)?;
    if y.num_bits() <= 1 || y >= &*top {
        return Err(Error::Malformed("DH public value out of range"));
    }
    Ok(())
}

/// The contents of a positive mpint (a leading zero byte when the top bit
/// is set).
pub fn to_mpint_contents(n: &BigNumRef) -> Vec<u8> {
    let mut v = n.to_vec();
    if v.first().is_some_and(|b| b & 0x80 != 0) {
        v.insert(0, 0);
    }
    v
}

/// A positive number from mpint contents, strictly: not empty, not
/// negative, no superfluous leading zero.
pub fn from_mpint_contents(b: &[u8]) -> Result<BigNum> {
    let bad = Error::Malformed("DH public value");
    match b {
        [] => Err(bad),
        [first, ..] if first & 0x80 != 0 => Err(bad),
        [0] | [0, ..] if b.len() < 2 || b[1] & 0x80 == 0 => Err(bad),
        _ => Ok(BigNum::from_slice(b)?),
    }
}

fn generator() -> Result<BigNum> {
    Ok(BigNum::from_u32(2)?)
}

struct Client(Exponent);

impl ClientKex for Client {
    fn init(&self) -> &[u8] {
        self.0.public()
    }

    fn finish(self: Box<Self>, reply: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.0.agree(reply)
    }
}

fn client(g: Group) -> Result<Box<dyn ClientKex>> {
    let two = generator()?;
    let x = Exponent::generate((g.prime)()?, &two, g.exponent_bits)?;
    Ok(Box::new(Client(x)))
}

fn server(g: Group, init: &[u8]) -> Result<ServerHalf> {
    let two = generator()?;
    let x = Exponent::generate((g.prime)()?, &two, g.exponent_bits)?;
    let k = x.agree(init)?;
    Ok(ServerHalf {
        reply: x.public().to_vec(),
        k,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_agrees_and_refuses_bad_values() {
        for m in [
            &GROUP14_SHA256,
            &GROUP16_SHA512,
            &GROUP18_SHA512,
            &GROUP14_SHA1,
        ] {
            let c = (m.client)().unwrap();
            let (reply, ks) = m.server_reply(c.init()).unwrap();
            let kc = m.client_finish(c, &reply).unwrap();
            assert_eq!(kc.raw(), ks.raw(), "{}", m.name);
            let p = to_mpint_contents(
                &(match m.name {
                    "diffie-hellman-group16-sha512" => GROUP16,
                    "diffie-hellman-group18-sha512" => GROUP18,
                    _ => GROUP14,
                }
                .prime)()
                .unwrap(),
            );
            let mut p_minus_1 = p.clone();
            *p_minus_1.last_mut().unwrap() -= 1;
            // 0, 1, p - 1, p, negative, non-minimal, empty.
            for bad in [
                vec![],
                vec![0],
                vec![1],
                p_minus_1,
                p.clone(),
                vec![0x80, 1],
                vec![0, 5],
            ] {
                assert!(m.server_reply(&bad).is_err(), "{} {bad:?}", m.name);
                let c = (m.client)().unwrap();
                assert!(m.client_finish(c, &bad).is_err(), "{} {bad:?}", m.name);
            }
        }
    }

    #[test]
    fn mpint_contents_are_strict() {
        let n = BigNum::from_u32(0x80).unwrap();
        assert_eq!(to_mpint_contents(&n), vec![0, 0x80]);
        assert_eq!(from_mpint_contents(&[0, 0x80]).unwrap(), n);
        assert!(from_mpint_contents(&[0, 0x7f]).is_err());
        assert!(from_mpint_contents(&[0x80]).is_err());
        assert_eq!(
            from_mpint_contents(&[0x7f]).unwrap(),
            BigNum::from_u32(0x7f).unwrap()
        );
    }
}
