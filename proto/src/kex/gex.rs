//! Diffie-Hellman group exchange (RFC 4419):
//! diffie-hellman-group-exchange-sha256 and -sha1. Before the usual
//! init and reply, the client asks for a prime of `min <= n <= max` bits
//! (SSH_MSG_KEX_DH_GEX_REQUEST) and the server answers with (p, g)
//! (SSH_MSG_KEX_DH_GEX_GROUP); the exchange hash covers the request and
//! the group between K_S and e.
//!
//! resshd answers with the MODP groups of RFC 3526 (2048, 3072, 4096,
//! 6144 and 8192 bits, generator 2): the smallest at least `n` bits within
//! [min, max], else the largest within it, as sshd chooses from
//! /etc/ssh/moduli (and falls back to these same groups without one).
//! Well-known safe primes need no trust in a prime file and cannot be
//! weakened by one. Requests are clamped to 2048..=8192 bits as sshd does.

use openssl::bn::{BigNum, BigNumRef};

use super::dh::{from_mpint_contents, to_mpint_contents, Exponent};
use super::{ClientKex, Hash, Method, SecretForm, ServerHalf};
use crate::error::{Error, Result};
use crate::wire::Put;

/// sshd's DH_GRP_MIN and DH_GRP_MAX.
pub const MIN_BITS: u32 = 2048;
pub const MAX_BITS: u32 = 8192;

pub const GEX_SHA256: Method = Method {
    name: "diffie-hellman-group-exchange-sha256",
    hash: Hash::Sha256,
    secret: SecretForm::Mpint,
    default: false,
    group_exchange: true,
    client: no_fixed_group_client,
    server: no_fixed_group_server,
};

pub const GEX_SHA1: Method = Method {
    name: "diffie-hellman-group-exchange-sha1",
    hash: Hash::Sha1,
    ..GEX_SHA256
};

/// A group-exchange method has no fixed group: the connection runs it
/// through [`Request`] and [`Group`]; these entries are never called.
fn no_fixed_group_client() -> Result<Box<dyn ClientKex>> {
    Err(Error::State("group exchange needs a group first"))
}

fn no_fixed_group_server(_: &[u8]) -> Result<ServerHalf> {
    Err(Error::State("group exchange needs a group first"))
}

/// The client's SSH_MSG_KEX_DH_GEX_REQUEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub min: u32,
    pub n: u32,
    pub max: u32,
}

impl Request {
    /// What a client asks for when its ciphers need `need_bits` of
    /// security (OpenSSH's `dh_estimate`).
    pub fn for_need(need_bits: u32) -> Request {
        let n = match need_bits {
            0..=112 => 2048,
            113..=128 => 3072,
            129..=192 => 7680,
            _ => 8192,
        };
        Request {
            min: MIN_BITS,
            n,
            max: MAX_BITS,
        }
    }
}

/// The prime and generator of one exchange.
pub struct Group {
    p: BigNum,
    g: BigNum,
}

/// An OpenSSL constructor of a well-known prime.
pub(super) type Prime = fn() -> std::result::Result<BigNum, openssl::error::ErrorStack>;

const RFC3526: [(u32, Prime); 5] = [
    (2048, BigNum::get_rfc3526_prime_2048),
    (3072, BigNum::get_rfc3526_prime_3072),
    (4096, BigNum::get_rfc3526_prime_4096),
    (6144, BigNum::get_rfc3526_prime_6144),
    (8192, BigNum::get_rfc3526_prime_8192),
];

impl Group {
    /// Server: the group for a client's request (hostile numbers).
    pub fn choose(req: &Request) -> Result<Group> {
        let min = req.min.max(MIN_BITS);
        let max = req.max.min(MAX_BITS);
        let n = req.n.clamp(MIN_BITS, MAX_BITS);
        if max < min || n < min || max < n {
            return Err(Error::KeyExchange("group exchange request out of range"));
        }
        let fits = RFC3526
            .iter()
            .filter(|(bits, _)| (min..=max).contains(bits));
        let chosen = fits
            .clone()
            .find(|(bits, _)| *bits >= n)
            .or_else(|| fits.clone().next_back())
            .ok_or(Error::KeyExchange("no group of the requested size"))?;
        Ok(Group {
            p: (chosen.1)()?,
            g: BigNum::from_u32(2)?,
        })
    }

    /// Client: the server's group (mpint contents, hostile), checked
    /// against what was asked.
    pub fn received(req: &Request, p: &[u8], g: &[u8]) -> Result<Group> {
        let p = from_mpint_contents(p)?;
        let g = from_mpint_contents(g)?;
        let bits = p.num_bits() as u32;
        if bits < req.min || bits > req.max {
            return Err(Error::KeyExchange("group exchange prime out of range"));
        }
        let mut top = p.to_owned()?;
        top.sub_word(1)?;
        if g.num_bits() <= 1 || g >= top || !p.is_bit_set(0) {
            return Err(Error::KeyExchange("group exchange generator invalid"));
        }
        Ok(Group { p, g })
    }

    pub fn p(&self) -> &BigNumRef {
        &self.p
    }

    pub fn g(&self) -> &BigNumRef {
        &self.g
    }

    /// A fresh exponent in this group (twice the group's strength, as
    /// for the fixed groups).
    pub fn exponent(&self) -> Result<Exponent> {
        let bits = if self.p.num_bits() > 3072 { 1024 } else { 512 };
        Exponent::generate(self.p.to_owned()?, &self.g, bits)
    }

    /// What the exchange hash takes between K_S and e: min, n, max as
    /// uint32 and p, g as mpints.
    pub fn transcript(&self, req: &Request) -> Vec<u8> {
        let mut b = Vec::new();
        b.put_u32(req.min);
        b.put_u32(req.n);
        b.put_u32(req.max);
        b.put_string(&to_mpint_contents(&self.p));
        b.put_string(&to_mpint_contents(&self.g));
        b
    }
}

/// The client's half once it has the group: its exponent.
pub struct Client(pub Exponent);

impl ClientKex for Client {
    fn init(&self) -> &[u8] {
        self.0.public()
    }

    fn finish(self: Box<Self>, reply: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        self.0.agree(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_chooses_as_sshd_does() {
        let bits = |min, n, max| {
            Group::choose(&Request { min, n, max })
                .map(|g| g.p().num_bits())
                .ok()
        };
        assert_eq!(bits(2048, 3072, 8192), Some(3072));
        assert_eq!(bits(2048, 7680, 8192), Some(8192));
        assert_eq!(bits(2048, 8192, 8192), Some(8192));
        assert_eq!(bits(1024, 1024, 1024), None);
        assert_eq!(bits(1024, 2048, 4000), Some(2048));
        assert_eq!(bits(2048, 5000, 5000), Some(4096));
        assert_eq!(bits(4096, 3000, 8192), None);
        assert_eq!(bits(0, 0, u32::MAX), Some(2048));
        assert_eq!(bits(3000, 3500, 3500), Some(3072));
        assert_eq!(bits(3100, 3500, 3500), None);
        assert_eq!(bits(2048, 7000, 7000), Some(6144));
    }

    #[test]
    fn both_halves_agree_and_the_client_checks_the_group() {
        let req = Request::for_need(128);
        assert_eq!((req.min, req.n, req.max), (2048, 3072, 8192));
        let g = Group::choose(&req).unwrap();
        let (p, gen) = (to_mpint_contents(g.p()), to_mpint_contents(g.g()));
        let got = Group::received(&req, &p, &gen).unwrap();
        assert_eq!(got.transcript(&req), g.transcript(&req));
        let c = Client(got.exponent().unwrap());
        let s = g.exponent().unwrap();
        let ks = s.agree(c.init()).unwrap();
        let kc = Box::new(c).finish(s.public()).unwrap();
        assert_eq!(ks, kc);
        // Too small, too large, even, g = 1, g = p - 1.
        let small = Request {
            min: 4096,
            n: 4096,
            max: 8192,
        };
        assert!(Group::received(&small, &p, &gen).is_err());
        let big = Request {
            min: 1024,
            n: 1024,
            max: 2048,
        };
        assert!(Group::received(&big, &p, &gen).is_err());
        let mut even = p.clone();
        *even.last_mut().unwrap() &= 0xfe;
        assert!(Group::received(&req, &even, &gen).is_err());
        assert!(Group::received(&req, &p, &[1]).is_err());
        let mut pm1 = p.clone();
        *pm1.last_mut().unwrap() -= 1;
        assert!(Group::received(&req, &p, &pm1).is_err());
    }
}
