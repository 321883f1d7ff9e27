//! User identities: OpenSSH private key files (with passphrase prompts) and
//! keys held by ssh-agent (SSH_AUTH_SOCK), in ssh's order: agent keys that
//! match identity files first, then the other agent keys (unless
//! IdentitiesOnly), then the files the agent does not hold.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ressh_proto::keys::{KeyType, PrivateKey, PublicKey, BAD_PASSPHRASE};
use ressh_proto::wire::{Put, Reader};
use ressh_proto::Error as ProtoError;

use crate::askpass::{self, Kind, PromptError};
use crate::config::Config;

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

/// The keys of an IDENTITIES_ANSWER (its type byte already taken) with
/// their comments; keys ressh cannot use are skipped.
fn parse_identities(r: &mut Reader) -> Result<Vec<(PublicKey, String)>, ProtoError> {
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
        match PublicKey::from_blob(blob) {
            Ok(k) => out.push((k, String::from_utf8_lossy(comment).into_owned())),
            Err(e) => crate::debug2!("agent key skipped: {e}"),
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

    /// The agent's keys with their comments (keys ressh cannot use are skipped).
    pub fn identities(&mut self) -> std::io::Result<Vec<(PublicKey, String)>> {
        let answer = self.call(&[AGENTC_REQUEST_IDENTITIES])?;
        let mut r = Reader::new(&answer);
        if r.u8().map_err(bad_answer)? != AGENT_IDENTITIES_ANSWER {
            return Err(std::io::Error::other("agent refused to list keys"));
        }
        parse_identities(&mut r).map_err(bad_answer)
    }

    /// Asks the agent to sign `data` with `key` using `alg`.
    pub fn sign(&mut self, key: &PublicKey, alg: &str, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut m = vec![AGENTC_SIGN_REQUEST];
        m.put_string(&key.to_blob());
        m.put_string(data);
        m.put_u32(match alg {
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

pub enum Source {
    Agent,
    File {
        path: PathBuf,
        key: Option<PrivateKey>,
    },
}

pub struct Identity {
    pub public: PublicKey,
    pub source: Source,
    /// For messages: the file name or the agent's comment.
    pub name: String,
}

/// The public key of a key file: `file.pub`, or the private file's clear part.
/// Ok(None) when only a passphrase would tell (encrypted PEM without .pub).
fn file_public(path: &Path) -> Result<Option<PublicKey>, String> {
    let mut pubp = path.as_os_str().to_owned();
    pubp.push(".pub");
    if let Ok(line) = std::fs::read_to_string(&pubp) {
        if let Ok((k, _)) = PublicKey::from_openssh(&line) {
            return Ok(Some(k));
        }
    }
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    match PrivateKey::inspect(&text) {
        Ok(info) => Ok(info.public),
        Err(e) => Err(e.to_string()),
    }
}

/// Builds the identity list for `cfg`.
pub fn collect(cfg: &Config, agent: Option<&mut Agent>) -> Vec<Identity> {
    let mut files: Vec<(PathBuf, Option<PublicKey>)> = Vec::new();
    for f in &cfg.identity_files {
        let path = &f.path;
        if !path.exists() {
            if f.explicit {
                crate::info!(
                    "Warning: Identity file {} not accessible: No such file or directory.",
                    path.display()
                );
            }
            continue;
        }
        match file_public(path) {
            Ok(k) => {
                crate::debug1!(
                    "identity file {} type {}",
                    path.display(),
                    k.as_ref().map(|k| k.key_type_name()).unwrap_or("unknown")
                );
                files.push((path.clone(), k));
            }
            Err(e) => crate::info!("Load key \"{}\": {e}", path.display()),
        }
    }
    let agent_keys = match agent {
        Some(a) => a.identities().unwrap_or_else(|e| {
            crate::debug1!("agent: {e}");
            Vec::new()
        }),
        None => Vec::new(),
    };
    let mut out = Vec::new();
    let mut used_agent = vec![false; agent_keys.len()];
    let mut files_left = Vec::new();
    for (path, k) in files {
        let in_agent = k
            .as_ref()
            .and_then(|k| agent_keys.iter().position(|(ak, _)| ak == k));
        match in_agent {
            Some(i) if !used_agent[i] => {
                used_agent[i] = true;
                out.push(Identity {
                    public: agent_keys[i].0.clone(),
                    source: Source::Agent,
                    name: path.display().to_string(),
                });
            }
            _ => files_left.push((path, k)),
        }
    }
    if !cfg.identities_only {
        for (i, (k, comment)) in agent_keys.iter().enumerate() {
            if !used_agent[i] {
                out.push(Identity {
                    public: k.clone(),
                    source: Source::Agent,
                    name: comment.clone(),
                });
            }
        }
    }
    for (path, k) in files_left {
        let name = path.display().to_string();
        match k {
            Some(public) => out.push(Identity {
                public,
                source: Source::File { path, key: None },
                name,
            }),
            None => {
                // Encrypted PEM without a .pub: decrypt now to learn the key.
                match load_private(&path, cfg.batch_mode, cfg.number_of_password_prompts) {
                    Ok(key) => out.push(Identity {
                        public: key.public_key(),
                        source: Source::File {
                            path,
                            key: Some(key),
                        },
                        name,
                    }),
                    Err(e) => crate::debug1!("{e}"),
                }
            }
        }
    }
    out
}

/// Reads a private key file, asking for its passphrase (up to `tries`
/// times) when it is encrypted.
pub fn load_private(path: &Path, batch: bool, tries: u32) -> Result<PrivateKey, String> {
    check_permissions(path)?;
    let text = zeroize::Zeroizing::new(
        std::fs::read(path).map_err(|e| format!("Load key \"{}\": {e}", path.display()))?,
    );
    let info =
        PrivateKey::inspect(&text).map_err(|e| format!("Load key \"{}\": {e}", path.display()))?;
    if !info.encrypted {
        return PrivateKey::from_openssh_pem(&text)
            .map_err(|e| format!("Load key \"{}\": {e}", path.display()));
    }
    let mut prompt = format!("Enter passphrase for key '{}': ", path.display());
    for _ in 0..tries.max(1) {
        let pass = match askpass::ask(&prompt, Kind::Secret, batch) {
            Ok(p) => p,
            Err(PromptError::Cancelled) => {
                return Err(format!("passphrase for {} not given", path.display()))
            }
            Err(PromptError::Unavailable(why)) => {
                return Err(format!(
                    "cannot ask for the passphrase of {}: {why}",
                    path.display()
                ))
            }
        };
        if pass.is_empty() {
            return Err(format!("no passphrase given for {}", path.display()));
        }
        match PrivateKey::from_openssh_pem_with_passphrase(&text, pass.as_bytes()) {
            Ok(k) => return Ok(k),
            Err(ProtoError::Malformed(m)) if m == BAD_PASSPHRASE => {
                prompt = format!("Bad passphrase, try again for {}: ", path.display());
            }
            Err(e) => return Err(format!("Load key \"{}\": {e}", path.display())),
        }
    }
    Err(format!("too many bad passphrases for {}", path.display()))
}

/// Refuses a private key file of ours that others can read, as ssh does.
fn check_permissions(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).map_err(|e| format!("Load key \"{}\": {e}", path.display()))?;
    let uid = nix::unistd::getuid().as_raw();
    if m.uid() == uid && m.mode() & 0o077 != 0 {
        return Err(format!(
            "Permissions 0{:o} for '{}' are too open: the private key must not be accessible \
             by others; this key will be ignored",
            m.mode() & 0o777,
            path.display()
        ));
    }
    Ok(())
}

/// The signature algorithm for `key`: for RSA the best SHA-2 variant the
/// server lists (rsa-sha2-512 when it lists none), filtered by
/// PubkeyAcceptedAlgorithms.
pub fn signature_algorithm(
    key: &PublicKey,
    server_sig_algs: Option<&[String]>,
    accepted: Option<&[String]>,
) -> Option<&'static str> {
    let ok = |a: &str| accepted.is_none_or(|list| list.iter().any(|x| x == a));
    match key.key_type() {
        KeyType::Rsa => {
            let server = |a: &str| server_sig_algs.is_none_or(|l| l.iter().any(|x| x == a));
            ["rsa-sha2-512", "rsa-sha2-256"]
                .into_iter()
                .find(|a| ok(a) && server(a))
                .or_else(|| ["rsa-sha2-512", "rsa-sha2-256"].into_iter().find(|a| ok(a)))
        }
        _ => key.signature_algorithms().iter().copied().find(|a| ok(a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_algorithm_choice() {
        let rsa = PrivateKey::generate(KeyType::Rsa).unwrap().public_key();
        let ed = PrivateKey::generate(KeyType::Ed25519).unwrap().public_key();
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(signature_algorithm(&rsa, None, None), Some("rsa-sha2-512"));
        let only256 = l(&["ssh-ed25519", "rsa-sha2-256"]);
        assert_eq!(
            signature_algorithm(&rsa, Some(&only256), None),
            Some("rsa-sha2-256")
        );
        assert_eq!(
            signature_algorithm(&ed, Some(&only256), None),
            Some("ssh-ed25519")
        );
        let acc = l(&["ecdsa-sha2-nistp256"]);
        assert_eq!(signature_algorithm(&ed, None, Some(&acc)), None);
    }

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
        assert_eq!(keys, vec![(ed.clone(), "me@host".to_string())]);
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
