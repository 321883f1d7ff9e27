//! mlkem768x25519-sha256 (draft-ietf-sshm-mlkem-hybrid-kex; OpenSSH 9.9+,
//! kexmlkem768x25519.c): ML-KEM-768 (FIPS 203) beside X25519, SHA-256.
//!
//! The client's init is its ML-KEM-768 encapsulation key (1184 bytes)
//! followed by its X25519 public value (32); the server's reply is the
//! ML-KEM ciphertext (1088) followed by its X25519 public value (32). K is
//! SHA-256(ML-KEM secret ‖ raw X25519 secret), hashed as a string. Hostile
//! bytes are refused by length, by FIPS 203's modulus check of the
//! encapsulation key and by the all-zero X25519 check (as OpenSSH does).

use super::hybrid::{self, MlKem768};
use super::{Hash, Method, SecretForm};

pub const MLKEM768X25519_SHA256: Method = Method {
    name: "mlkem768x25519-sha256",
    hash: Hash::Sha256,
    secret: SecretForm::String,
    default: true,
    group_exchange: false,
    client: hybrid::client::<MlKem768>,
    server: hybrid::server::<MlKem768>,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pqc::mlkem768::{CIPHERTEXT_LEN, PUBLIC_KEY_LEN};

    /// Both halves through the registry entry agree on a 32-byte K;
    /// hostile init and reply bytes are refused with an error.
    #[test]
    fn both_halves_agree_and_refuse_hostile_bytes() {
        let m = &MLKEM768X25519_SHA256;
        let c = (m.client)().unwrap();
        assert_eq!(c.init().len(), 1216);
        let init = c.init().to_vec();
        let (reply, ks) = m.server_reply(&init).unwrap();
        assert_eq!(reply.len(), 1120);
        let kc = m.client_finish(c, &reply).unwrap();
        assert_eq!(kc.raw(), ks.raw());
        assert_eq!(kc.raw().len(), 32);

        // Wrong lengths, both ways.
        for n in [0, 32, 1215, 1217, 1184] {
            assert!(m.server_reply(&vec![7u8; n]).is_err(), "init of {n}");
        }
        for n in [0, 32, 1119, 1121, 1088] {
            let c = (m.client)().unwrap();
            assert!(m.client_finish(c, &vec![7u8; n]).is_err(), "reply of {n}");
        }
        // An encapsulation key failing FIPS 203's modulus check: all
        // coefficients 0xfff (above q = 3329).
        let mut bad = init.clone();
        bad[..PUBLIC_KEY_LEN - 32].fill(0xff);
        assert!(m.server_reply(&bad).is_err(), "invalid ML-KEM key");
        // A low-order X25519 point in either message.
        let mut bad = init.clone();
        bad[PUBLIC_KEY_LEN..].fill(0);
        assert!(m.server_reply(&bad).is_err(), "zero X25519 in init");
        let c = (m.client)().unwrap();
        let mut bad = reply.clone();
        bad[CIPHERTEXT_LEN..].fill(0);
        assert!(m.client_finish(c, &bad).is_err(), "zero X25519 in reply");
        // A forged ciphertext of the right length: implicit rejection, a
        // secret unrelated to the server's.
        let c = (m.client)().unwrap();
        let (reply, ks) = m.server_reply(c.init()).unwrap();
        let mut forged = reply.clone();
        forged[0] ^= 1;
        let kc = m.client_finish(c, &forged).unwrap();
        assert_ne!(kc.raw(), ks.raw());
    }
}
