//! sntrup761x25519-sha512 (OpenSSH 8.5+, kexsntrup761x25519.c; RFC-track
//! draft-ietf-sshm-ntruprime-ssh), also under its older name
//! sntrup761x25519-sha512@openssh.com: Streamlined NTRU Prime 761 beside
//! X25519, SHA-512.
//!
//! The client's init is its sntrup761 public key (1158 bytes) followed by
//! its X25519 public value (32); the server's reply is the sntrup761
//! ciphertext (1039) followed by its X25519 public value (32). K is
//! SHA-512(sntrup761 secret ‖ raw X25519 secret), hashed as a string; the
//! exchange hash and so the session id are 64 bytes. Hostile bytes are
//! refused by length and by the all-zero X25519 check; any sntrup761 key or
//! ciphertext of the right length decodes (a forged ciphertext gives an
//! unrelated secret), as in the reference code and OpenSSH.

use super::hybrid::{self, Sntrup761};
use super::{Hash, Method, SecretForm};

pub const SNTRUP761X25519_SHA512: Method = Method {
    name: "sntrup761x25519-sha512",
    hash: Hash::Sha512,
    secret: SecretForm::String,
    default: true,
    group_exchange: false,
    client: hybrid::client::<Sntrup761>,
    server: hybrid::server::<Sntrup761>,
};

pub const SNTRUP761X25519_SHA512_OPENSSH: Method = Method {
    name: "sntrup761x25519-sha512@openssh.com",
    ..SNTRUP761X25519_SHA512
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pqc::sntrup761::{CIPHERTEXT_LEN, PUBLIC_KEY_LEN};

    /// Both halves through the registry entry agree on a 64-byte K;
    /// hostile init and reply bytes are refused with an error.
    #[test]
    fn both_halves_agree_and_refuse_hostile_bytes() {
        let m = &SNTRUP761X25519_SHA512;
        let c = (m.client)().unwrap();
        assert_eq!(c.init().len(), 1190);
        let init = c.init().to_vec();
        let (reply, ks) = m.server_reply(&init).unwrap();
        assert_eq!(reply.len(), 1071);
        let kc = m.client_finish(c, &reply).unwrap();
        assert_eq!(kc.raw(), ks.raw());
        assert_eq!(kc.raw().len(), 64);

        for n in [0, 32, 1189, 1191, 1158] {
            assert!(m.server_reply(&vec![7u8; n]).is_err(), "init of {n}");
        }
        for n in [0, 32, 1070, 1072, 1039] {
            let c = (m.client)().unwrap();
            assert!(m.client_finish(c, &vec![7u8; n]).is_err(), "reply of {n}");
        }
        let mut bad = init.clone();
        bad[PUBLIC_KEY_LEN..].fill(0);
        assert!(m.server_reply(&bad).is_err(), "zero X25519 in init");
        let c = (m.client)().unwrap();
        let mut bad = reply.clone();
        bad[CIPHERTEXT_LEN..].fill(0);
        assert!(m.client_finish(c, &bad).is_err(), "zero X25519 in reply");
        // Garbage of the right length decodes; a forged ciphertext gives a
        // secret unrelated to the server's.
        let mut junk = vec![0xa5u8; PUBLIC_KEY_LEN];
        junk.extend_from_slice(&init[PUBLIC_KEY_LEN..]);
        assert!(m.server_reply(&junk).is_ok());
        let c = (m.client)().unwrap();
        let (reply, ks) = m.server_reply(c.init()).unwrap();
        let mut forged = reply.clone();
        forged[0] ^= 1;
        let kc = m.client_finish(c, &forged).unwrap();
        assert_ne!(kc.raw(), ks.raw());
    }
}
