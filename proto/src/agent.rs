//! A client of ssh-agent (OpenSSH's PROTOCOL.agent, draft-miller-ssh-agent):
//! listing its keys and certificates, and having it sign. ressh uses it for
//! user keys; resshd's monitor for host keys held in an agent
//! (HostKeyAgent). Every answer is hostile input: bounded before it is
//! read, decoded strictly.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::cert::{self, Certificate};
use crate::keys::PublicKey;
use crate::wire::{Put, Reader};
use crate::Error as ProtoError;

const AGENT_FAILURE: u8 = 5;
const AGENTC_REQUEST_IDENTITIES: u8 = 11;
const AGENT_IDENTITIES_ANSWER: u8 = 12;
const AGENTC_SIGN_REQUEST: u8 = 13;
const AGENT_SIGN_RESPONSE: u8 = 14;
const SSH_AGENT_RSA_SHA2_256: u32 = 2;
const SSH_AGENT_RSA_SHA2_512: u32 = 4;
const MAX_AGENT_MSG: usize = 256 * 1024;
/// Agent keys used at most (ssh tries them one by one).
const MAX_AGENT_KEYS: usize = 1024;

/// A connection to ssh-agent.
pub struct Agent {
    sock: UnixStream,
}

fn bad_answer(e: ProtoError) -> std::io::Error {
    std::io::Error::other(format!("bad agent answer: {e}"))
}

/// A key or certificate the agent holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentKey {
    /// The key (of the certificate, for a certificate).
    pub public: PublicKey,
    pub cert: Option<Certificate>,
    pub comment: String,
}

impl AgentKey {
    /// The blob the agent knows it by.
    pub fn blob(&self) -> Vec<u8> {
        match &self.cert {
            Some(c) => c.blob().to_vec(),
            None => self.public.to_blob(),
        }
    }
}

/// The keys of an IDENTITIES_ANSWER (its type byte already taken) with
/// their comments; keys and certificates ressh cannot use are skipped.
fn parse_identities(r: &mut Reader) -> Result<Vec<AgentKey>, ProtoError> {
    let n = r.u32()?;
    let mut out = Vec::new();
    // Each entry takes at least 8 bytes of a bounded message: a count
    // larger than the message fails at its end.
    for _ in 0..n {
        let blob = r.string()?;
        let comment = r.string()?;
        if out.len() >= MAX_AGENT_KEYS {
            continue;
        }
        let comment = String::from_utf8_lossy(comment).into_owned();
        let is_cert = Reader::new(blob).string().is_ok_and(cert::is_cert_name);
        let key = if is_cert {
            Certificate::from_blob(blob).map(|c| (c.key.clone(), Some(c)))
        } else {
            PublicKey::from_blob(blob).map(|k| (k, None))
        };
        // A key or certificate this crate cannot use is skipped.
        if let Ok((public, cert)) = key {
            out.push(AgentKey {
                public,
                cert,
                comment,
            });
        }
    }
    r.finish()?;
    Ok(out)
}

/// The signature of a SIGN_RESPONSE (its type byte already taken).
fn parse_signature(r: &mut Reader) -> Result<Vec<u8>, ProtoError> {
    let sig = r.string()?.to_vec();
    r.finish()?;
    Ok(sig)
}

impl Agent {
    pub fn connect(path: &Path) -> std::io::Result<Agent> {
        let sock = UnixStream::connect(path)?;
        sock.set_read_timeout(Some(Duration::from_secs(30)))?;
        sock.set_write_timeout(Some(Duration::from_secs(30)))?;
        Ok(Agent { sock })
    }

    /// Sends `msg` and returns the answer, its length checked (at least
    /// the type byte, at most [`MAX_AGENT_MSG`]).
    fn call(&mut self, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut framed = Vec::with_capacity(msg.len() + 4);
        framed.put_string(msg);
        self.sock.write_all(&framed)?;
        let mut len = [0u8; 4];
        self.sock.read_exact(&mut len)?;
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 || n > MAX_AGENT_MSG {
            return Err(std::io::Error::other("bad agent message length"));
        }
        let mut buf = vec![0u8; n];
        self.sock.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// The agent's keys and certificates with their comments (those ressh
    /// cannot use are skipped).
    pub fn identities(&mut self) -> std::io::Result<Vec<AgentKey>> {
        let answer = self.call(&[AGENTC_REQUEST_IDENTITIES])?;
        let mut r = Reader::new(&answer);
        if r.u8().map_err(bad_answer)? != AGENT_IDENTITIES_ANSWER {
            return Err(std::io::Error::other("agent refused to list keys"));
        }
        parse_identities(&mut r).map_err(bad_answer)
    }

    /// Asks the agent to sign `data` with the key (or certificate) it knows
    /// as `blob`, using `alg` (a certificate algorithm signs as its plain
    /// one).
    pub fn sign(&mut self, blob: &[u8], alg: &str, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut m = vec![AGENTC_SIGN_REQUEST];
        m.put_string(blob);
        m.put_string(data);
        m.put_u32(match cert::plain_algorithm(alg.as_bytes()).unwrap_or(alg) {
            "rsa-sha2-256" => SSH_AGENT_RSA_SHA2_256,
            "rsa-sha2-512" => SSH_AGENT_RSA_SHA2_512,
            _ => 0,
        });
        let answer = self.call(&m)?;
        let mut r = Reader::new(&answer);
        match r.u8().map_err(bad_answer)? {
            AGENT_SIGN_RESPONSE => parse_signature(&mut r).map_err(bad_answer),
            AGENT_FAILURE => Err(std::io::Error::other("agent refused to sign")),
            _ => Err(std::io::Error::other("unexpected agent answer")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyType, PrivateKey};

    #[test]
    fn agent_answers_are_decoded_strictly() {
        let ed = PrivateKey::generate(KeyType::Ed25519).unwrap().public_key();
        let entry = |blob: &[u8], comment: &str| {
            let mut v = Vec::new();
            v.put_string(blob);
            v.put_str(comment);
            v
        };
        let answer = |n: u32, entries: &[Vec<u8>], tail: &[u8]| {
            let mut v = Vec::new();
            v.put_u32(n);
            entries.iter().for_each(|e| v.extend_from_slice(e));
            v.extend_from_slice(tail);
            v
        };
        let good = entry(&ed.to_blob(), "me@host");
        let junk = entry(b"not a key", "junk");
        let parse = |b: &[u8]| parse_identities(&mut Reader::new(b));
        // A key ressh cannot use is skipped; the others are kept.
        let keys = parse(&answer(2, &[junk.clone(), good.clone()], &[])).unwrap();
        assert_eq!(
            keys,
            vec![AgentKey {
                public: ed.clone(),
                cert: None,
                comment: "me@host".to_string()
            }]
        );
        // A certificate (made by ssh-keygen -s) is kept with its key; one
        // whose CA signature does not verify is skipped.
        let dir = std::env::temp_dir().join(format!("ressh-agent-cert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, _) = ressh_testkit::ssh_keygen(&dir, "ed25519", "");
        let (user, _) = ressh_testkit::ssh_keygen(&dir, "ecdsa", "");
        let (_, line) = ressh_testkit::ssh_keygen_sign(&ca, &user, &["-I", "id", "-n", "u"]);
        std::fs::remove_dir_all(&dir).unwrap();
        let (c, _) = Certificate::from_openssh(&line).unwrap();
        let mut forged = c.blob().to_vec();
        let n = forged.len();
        forged[n - 1] ^= 1;
        let cert = entry(c.blob(), "cert");
        let keys = parse(&answer(2, &[entry(&forged, "forged"), cert], &[])).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].public, c.key);
        assert_eq!(keys[0].cert.as_ref(), Some(&c));
        assert_eq!(keys[0].blob(), c.blob());
        // A count larger than the entries, a string longer than the
        // message, bytes after the last entry: all refused.
        assert_eq!(
            parse(&answer(3, std::slice::from_ref(&good), &[])),
            Err(ProtoError::Truncated)
        );
        assert_eq!(
            parse(&[0, 0, 0, 1, 0, 0, 0, 9, 1, 2]),
            Err(ProtoError::Truncated)
        );
        assert_eq!(
            parse(&answer(1, std::slice::from_ref(&good), &[0])),
            Err(ProtoError::TrailingData)
        );
        // A huge count is bounded by the message, not allocated for.
        assert_eq!(
            parse(&answer(u32::MAX, &[], &[])),
            Err(ProtoError::Truncated)
        );
        // More keys than ressh uses: the rest are read but not kept.
        let many: Vec<Vec<u8>> = (0..MAX_AGENT_KEYS + 1).map(|_| good.clone()).collect();
        let n = many.len() as u32;
        assert_eq!(parse(&answer(n, &many, &[])).unwrap().len(), MAX_AGENT_KEYS);

        let mut sig = Vec::new();
        sig.put_string(b"signature");
        assert_eq!(
            parse_signature(&mut Reader::new(&sig)).unwrap(),
            b"signature"
        );
        sig.push(0);
        assert_eq!(
            parse_signature(&mut Reader::new(&sig)),
            Err(ProtoError::TrailingData)
        );
        assert_eq!(
            parse_signature(&mut Reader::new(&[0, 0, 1])),
            Err(ProtoError::Truncated)
        );
    }
}
