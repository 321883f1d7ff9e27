//! ECDH over the NIST curves (RFC 5656 §4): ecdh-sha2-nistp256 (SHA-256),
//! ecdh-sha2-nistp384 (SHA-384) and ecdh-sha2-nistp521 (SHA-512). The init
//! and reply bytes are uncompressed points (SEC1 §2.3.3); a peer's point
//! must be on the curve and not the point at infinity (RFC 5656 §4,
//! OpenSSH's `sshkey_ec_validate_public`, here OpenSSL's full public-key
//! check). K is the x-coordinate of the shared point, hashed as an mpint.

use openssl::bn::BigNumContext;
use openssl::derive::Deriver;
use openssl::ec::{EcGroup, EcKey, EcPoint, PointConversionForm};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use zeroize::Zeroizing;

use super::{ClientKex, Hash, Method, SecretForm, ServerHalf};
use crate::error::{Error, Result};

pub const NISTP256: Method = Method {
    name: "ecdh-sha2-nistp256",
    hash: Hash::Sha256,
    secret: SecretForm::Mpint,
    default: true,
    group_exchange: false,
    client: || client(Nid::X9_62_PRIME256V1),
    server: |init| server(Nid::X9_62_PRIME256V1, init),
};

pub const NISTP384: Method = Method {
    name: "ecdh-sha2-nistp384",
    hash: Hash::Sha384,
    client: || client(Nid::SECP384R1),
    server: |init| server(Nid::SECP384R1, init),
    ..NISTP256
};

pub const NISTP521: Method = Method {
    name: "ecdh-sha2-nistp521",
    hash: Hash::Sha512,
    client: || client(Nid::SECP521R1),
    server: |init| server(Nid::SECP521R1, init),
    ..NISTP256
};

/// An ephemeral key on one curve.
struct Ephemeral {
    group: EcGroup,
    key: PKey<Private>,
    public: Vec<u8>,
}

impl Ephemeral {
    fn generate(curve: Nid) -> Result<Ephemeral> {
        let group = EcGroup::from_curve_name(curve)?;
        let ec = EcKey::generate(&group)?;
        let mut ctx = BigNumContext::new()?;
        let public =
            ec.public_key()
                .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)?;
        Ok(Ephemeral {
            key: PKey::from_ec_key(ec)?,
            group,
            public,
        })
    }

    fn agree(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let bad = |_| Error::Malformed("ECDH public point");
        // Uncompressed points only, as OpenSSH sends and accepts.
        if peer.first() != Some(&0x04) {
            return Err(Error::Malformed("ECDH public point"));
        }
        let mut ctx = BigNumContext::new()?;
        let point = EcPoint::from_bytes(&self.group, peer, &mut ctx).map_err(bad)?;
        let ec = EcKey::from_public_key(&self.group, &point).map_err(bad)?;
        ec.check_key().map_err(bad)?;
        let peer = PKey::from_ec_key(ec)?;
        let mut d = Deriver::new(&self.key)?;
        d.set_peer(&peer)?;
        Ok(Zeroizing::new(d.derive_to_vec()?))
    }
}

impl ClientKex for Ephemeral {
    fn init(&self) -> &[u8] {
        &self.public
    }

    fn finish(self: Box<Self>, reply: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.agree(reply)
    }
}

fn client(curve: Nid) -> Result<Box<dyn ClientKex>> {
    Ok(Box::new(Ephemeral::generate(curve)?))
}

fn server(curve: Nid, init: &[u8]) -> Result<ServerHalf> {
    let eph = Ephemeral::generate(curve)?;
    let k = eph.agree(init)?;
    Ok(ServerHalf {
        reply: eph.public,
        k,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_curve_agrees_and_refuses_bad_points() {
        for (m, len) in [(&NISTP256, 65), (&NISTP384, 97), (&NISTP521, 133)] {
            let c = (m.client)().unwrap();
            assert_eq!(c.init().len(), len);
            let (reply, ks) = m.server_reply(c.init()).unwrap();
            let kc = m.client_finish(c, &reply).unwrap();
            assert_eq!(kc.raw(), ks.raw(), "{}", m.name);
            // Off the curve, compressed, infinity, truncated, another
            // curve's point.
            let mut off = reply.clone();
            *off.last_mut().unwrap() ^= 1;
            let mut compressed = reply[..1 + (len - 1) / 2].to_vec();
            compressed[0] = 0x02;
            let other = (NISTP256.client)().unwrap().init().to_vec();
            for bad in [off, compressed, vec![0], reply[..len - 1].to_vec(), vec![]] {
                assert!(m.server_reply(&bad).is_err(), "{} {bad:?}", m.name);
                let c = (m.client)().unwrap();
                assert!(m.client_finish(c, &bad).is_err(), "{} {bad:?}", m.name);
            }
            if m.name != NISTP256.name {
                assert!(m.server_reply(&other).is_err(), "{}", m.name);
            }
        }
    }
}
