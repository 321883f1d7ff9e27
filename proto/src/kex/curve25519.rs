//! curve25519-sha256 (RFC 8731), also under its older name
//! curve25519-sha256@libssh.org: X25519 with SHA-256, the shared secret
//! as an mpint. The init and reply bytes are the 32-byte public values.
//!
//! [`Ephemeral`] is also the X25519 of the resilience extension's
//! reconnect exchange (docs/PROTOCOL.md §5).

use openssl::derive::Deriver;
use openssl::pkey::{Id, PKey, Private};
use zeroize::Zeroizing;

use super::{ClientKex, Hash, Method, SecretForm, ServerHalf};
use crate::error::{Error, Result};

pub const CURVE25519_SHA256: Method = Method {
    name: "curve25519-sha256",
    hash: Hash::Sha256,
    secret: SecretForm::Mpint,
    default: true,
    group_exchange: false,
    client,
    server,
};

pub const CURVE25519_SHA256_LIBSSH: Method = Method {
    name: "curve25519-sha256@libssh.org",
    ..CURVE25519_SHA256
};

/// An ephemeral X25519 key pair.
pub struct Ephemeral {
    key: PKey<Private>,
}

impl Ephemeral {
    pub fn generate() -> Result<Self> {
        Ok(Ephemeral {
            key: PKey::generate_x25519()?,
        })
    }

    pub fn public(&self) -> Result<Vec<u8>> {
        Ok(self.key.raw_public_key()?)
    }

    /// The shared secret with the peer's 32-byte public value. Refuses the
    /// all-zero result of a low-order point (RFC 8731 §3).
    pub fn agree(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if peer.len() != 32 {
            return Err(Error::Malformed("curve25519 public value"));
        }
        let peer = PKey::public_key_from_raw_bytes(peer, Id::X25519)?;
        let mut d = Deriver::new(&self.key)?;
        d.set_peer(&peer)?;
        // OpenSSL 3 refuses an all-zero result itself (ecx_derive); older
        // releases return it.
        let zero = Error::Malformed("curve25519 shared secret is zero");
        let secret = Zeroizing::new(d.derive_to_vec().map_err(|_| zero.clone())?);
        if openssl::memcmp::eq(&secret, &[0u8; 32]) {
            return Err(zero);
        }
        Ok(secret)
    }
}

/// The client between its public value and the server's.
struct Client {
    eph: Ephemeral,
    public: Vec<u8>,
}

impl ClientKex for Client {
    fn init(&self) -> &[u8] {
        &self.public
    }

    fn finish(self: Box<Self>, reply: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.eph.agree(reply)
    }
}

fn client() -> Result<Box<dyn ClientKex>> {
    let eph = Ephemeral::generate()?;
    let public = eph.public()?;
    Ok(Box::new(Client { eph, public }))
}

fn server(init: &[u8]) -> Result<ServerHalf> {
    let eph = Ephemeral::generate()?;
    let k = eph.agree(init)?;
    Ok(ServerHalf {
        reply: eph.public()?,
        k,
    })
}

#[cfg(test)]
impl Ephemeral {
    /// A fixed key pair, for test vectors.
    pub(crate) fn from_private(raw: &[u8]) -> Ephemeral {
        Ephemeral {
            key: PKey::private_key_from_raw_bytes(raw, Id::X25519).unwrap(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    #[test]
    fn x25519_rfc7748_vector() {
        // RFC 7748 §6.1: Alice's private key and Bob's public key give K.
        let e = Ephemeral::from_private(&hex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        assert_eq!(
            e.public().unwrap(),
            hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        let k = e
            .agree(&hex(
                "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
            ))
            .unwrap();
        assert_eq!(
            &k[..],
            &hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")[..]
        );
        assert_eq!(
            e.agree(&[0u8; 32]).unwrap_err(),
            Error::Malformed("curve25519 shared secret is zero"),
            "low-order point refused"
        );
        assert!(e.agree(&[1u8; 31]).is_err());
    }

    /// Both halves through the registry entry agree on K; hostile reply
    /// and init bytes are refused, not trusted.
    #[test]
    fn both_halves_agree_and_refuse_bad_points() {
        let m = &CURVE25519_SHA256;
        let c = (m.client)().unwrap();
        let (reply, ks) = m.server_reply(c.init()).unwrap();
        assert_eq!(reply.len(), 32);
        let kc = m.client_finish(c, &reply).unwrap();
        assert_eq!(kc.raw(), ks.raw());
        for bad in [&[0u8; 32][..], &[9u8; 33][..], &[][..]] {
            assert!(m.server_reply(bad).is_err(), "{bad:?}");
            let c = (m.client)().unwrap();
            assert!(m.client_finish(c, bad).is_err(), "{bad:?}");
        }
    }
}
