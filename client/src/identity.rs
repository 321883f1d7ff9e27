//! User identities: OpenSSH private key files (with passphrase prompts),
//! keys held by ssh-agent (SSH_AUTH_SOCK), and user certificates
//! (CertificateFile, `<identity>-cert.pub` beside an identity file, and
//! those the agent holds), in ssh's order: CertificateFile certificates
//! first, then agent keys that match identity files, then the other agent
//! keys (unless IdentitiesOnly), then the files the agent does not hold. A
//! certificate is signed for by its key: the agent's if it holds it, else
//! the identity file's.

use std::path::{Path, PathBuf};

use ressh_proto::cert::{self, CertKind, Certificate};
use ressh_proto::keys::{KeyType, PrivateKey, PublicKey, BAD_PASSPHRASE};
use ressh_proto::Error as ProtoError;

pub use ressh_proto::agent::Agent;

use crate::askpass::{self, Kind, PromptError};
use crate::config::Config;

/// The signature algorithm a certificate algorithm signs with; others as
/// they are.
pub fn plain_algorithm(alg: &str) -> &str {
    cert::plain_algorithm(alg.as_bytes()).unwrap_or(alg)
}

pub enum Source {
    /// The agent signs, with the key (or certificate) it knows as `blob`.
    Agent { blob: Vec<u8> },
    File {
        path: PathBuf,
        key: Option<PrivateKey>,
    },
}

pub struct Identity {
    /// The key that signs (a certificate's key, for a certificate).
    pub public: PublicKey,
    /// The certificate offered instead of the key.
    pub cert: Option<Certificate>,
    pub source: Source,
    /// For messages: the file name or the agent's comment.
    pub name: String,
}

impl Identity {
    /// What is offered to the server: the certificate, or the key.
    pub fn blob(&self) -> Vec<u8> {
        match &self.cert {
            Some(c) => c.blob().to_vec(),
            None => self.public.to_blob(),
        }
    }

    /// Its type name ("ssh-ed25519", "ssh-ed25519-cert-v01@openssh.com").
    pub fn type_name(&self) -> &'static str {
        match &self.cert {
            Some(c) => c.type_name(),
            None => self.public.key_type_name(),
        }
    }
}

/// A user certificate file (`*-cert.pub`), if it holds one; a missing
/// file is no certificate, others are told at debug level.
fn load_cert(path: &Path) -> Option<Certificate> {
    let line = match std::fs::read_to_string(path) {
        Ok(l) => l,
        Err(e) => {
            crate::debug2!("no certificate {}: {e}", path.display());
            return None;
        }
    };
    match Certificate::from_openssh(&line) {
        Ok((c, _)) if c.kind == CertKind::User => Some(c),
        Ok(_) => {
            crate::debug1!(
                "ignoring certificate {}: not a user certificate",
                path.display()
            );
            None
        }
        Err(e) => {
            crate::debug1!("ignoring certificate {}: {e}", path.display());
            None
        }
    }
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

/// An identity file: its key (None when only a passphrase would tell)
/// and the certificate of `<file>-cert.pub`, when this entry is that.
struct FileEntry {
    path: PathBuf,
    public: Option<PublicKey>,
    cert: Option<Certificate>,
}

/// Builds the identity list for `cfg`.
pub fn collect(cfg: &Config, agent: Option<&mut Agent>) -> Vec<Identity> {
    let mut files: Vec<FileEntry> = Vec::new();
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
                files.push(FileEntry {
                    path: path.clone(),
                    public: k,
                    cert: None,
                });
            }
            Err(e) => {
                crate::info!("Load key \"{}\": {e}", path.display());
                continue;
            }
        }
        // As ssh: the certificate beside the key, unless CertificateFile
        // names the certificates.
        if cfg.certificate_files.is_empty() {
            let mut cp = path.as_os_str().to_owned();
            cp.push("-cert.pub");
            if let Some(c) = load_cert(Path::new(&cp)) {
                crate::debug1!(
                    "identity file {}-cert type {}",
                    path.display(),
                    c.type_name()
                );
                files.push(FileEntry {
                    path: path.clone(),
                    public: Some(c.key.clone()),
                    cert: Some(c),
                });
            }
        }
    }
    let agent_keys = match agent {
        Some(a) => a.identities().unwrap_or_else(|e| {
            crate::debug1!("agent: {e}");
            Vec::new()
        }),
        None => Vec::new(),
    };
    // Who signs for a certificate's key: the agent holding the plain key,
    // else an identity file of that key.
    let file_keys: Vec<(PathBuf, PublicKey)> = files
        .iter()
        .filter(|f| f.cert.is_none())
        .filter_map(|f| Some((f.path.clone(), f.public.clone()?)))
        .collect();
    let signer = |key: &PublicKey, file: Option<&Path>| -> Option<Source> {
        if let Some(a) = agent_keys
            .iter()
            .find(|a| a.cert.is_none() && a.public == *key)
        {
            return Some(Source::Agent { blob: a.blob() });
        }
        let path = file.map(Path::to_path_buf).or_else(|| {
            file_keys
                .iter()
                .find(|(_, k)| k == key)
                .map(|(p, _)| p.clone())
        })?;
        Some(Source::File { path, key: None })
    };
    let mut out = Vec::new();
    for f in &cfg.certificate_files {
        let Some(c) = load_cert(&f.path) else {
            continue;
        };
        crate::debug1!(
            "certificate file {} type {}",
            f.path.display(),
            c.type_name()
        );
        match signer(&c.key, None) {
            Some(source) => out.push(Identity {
                public: c.key.clone(),
                cert: Some(c),
                source,
                name: f.path.display().to_string(),
            }),
            None => crate::debug1!(
                "ignoring certificate {}: no identity file or agent key for its key",
                f.path.display()
            ),
        }
    }
    let mut used_agent = vec![false; agent_keys.len()];
    let mut files_left = Vec::new();
    for f in files {
        let in_agent = f.public.as_ref().and_then(|k| {
            agent_keys
                .iter()
                .position(|a| a.public == *k && a.cert == f.cert)
        });
        match in_agent {
            Some(i) if !used_agent[i] => {
                used_agent[i] = true;
                let a = &agent_keys[i];
                out.push(Identity {
                    public: a.public.clone(),
                    cert: a.cert.clone(),
                    source: Source::Agent { blob: a.blob() },
                    name: f.path.display().to_string(),
                });
            }
            _ => files_left.push(f),
        }
    }
    if !cfg.identities_only {
        for (i, a) in agent_keys.iter().enumerate() {
            if !used_agent[i] {
                out.push(Identity {
                    public: a.public.clone(),
                    cert: a.cert.clone(),
                    source: Source::Agent { blob: a.blob() },
                    name: a.comment.clone(),
                });
            }
        }
    }
    for f in files_left {
        let name = f.path.display().to_string();
        match (f.public, f.cert) {
            (Some(public), Some(cert)) => {
                let source = signer(&public, Some(&f.path)).expect("a file signs");
                out.push(Identity {
                    public,
                    cert: Some(cert),
                    source,
                    name,
                });
            }
            (Some(public), None) => out.push(Identity {
                public,
                cert: None,
                source: Source::File {
                    path: f.path,
                    key: None,
                },
                name,
            }),
            (None, _) => {
                // Encrypted PEM without a .pub: decrypt now to learn the key.
                match load_private(&f.path, cfg.batch_mode, cfg.number_of_password_prompts) {
                    Ok(key) => out.push(Identity {
                        public: key.public_key(),
                        cert: None,
                        source: Source::File {
                            path: f.path,
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

/// The signature algorithm for `key` (offered as a certificate when
/// `cert`): for RSA the best SHA-2 variant the server lists (rsa-sha2-512
/// when it lists none; for a certificate, the server's list names the
/// plain algorithms), filtered by PubkeyAcceptedAlgorithms.
pub fn signature_algorithm(
    key: &PublicKey,
    cert: bool,
    server_sig_algs: Option<&[String]>,
    accepted: Option<&[String]>,
) -> Option<&'static str> {
    let ok = |a: &str| accepted.is_none_or(|list| list.iter().any(|x| x == a));
    let candidates: Vec<&'static str> = if cert {
        cert::signature_algorithms(key.key_type())
    } else {
        key.signature_algorithms().to_vec()
    };
    match key.key_type() {
        KeyType::Rsa => {
            let server = |a: &str| {
                let plain = plain_algorithm(a);
                server_sig_algs.is_none_or(|l| l.iter().any(|x| x == plain))
            };
            candidates
                .iter()
                .copied()
                .find(|a| ok(a) && server(a))
                .or_else(|| candidates.iter().copied().find(|a| ok(a)))
        }
        _ => candidates.into_iter().find(|a| ok(a)),
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
        assert_eq!(
            signature_algorithm(&rsa, false, None, None),
            Some("rsa-sha2-512")
        );
        let only256 = l(&["ssh-ed25519", "rsa-sha2-256"]);
        assert_eq!(
            signature_algorithm(&rsa, false, Some(&only256), None),
            Some("rsa-sha2-256")
        );
        assert_eq!(
            signature_algorithm(&ed, false, Some(&only256), None),
            Some("ssh-ed25519")
        );
        let acc = l(&["ecdsa-sha2-nistp256"]);
        assert_eq!(signature_algorithm(&ed, false, None, Some(&acc)), None);
        // Certificates: the certificate algorithm, chosen for RSA by the
        // plain names the server lists, and filtered by
        // PubkeyAcceptedAlgorithms by its own name.
        assert_eq!(
            signature_algorithm(&rsa, true, Some(&only256), None),
            Some("rsa-sha2-256-cert-v01@openssh.com")
        );
        assert_eq!(
            signature_algorithm(&rsa, true, None, None),
            Some("rsa-sha2-512-cert-v01@openssh.com")
        );
        assert_eq!(
            signature_algorithm(&ed, true, Some(&only256), None),
            Some("ssh-ed25519-cert-v01@openssh.com")
        );
        let plain_only = l(&["ssh-ed25519", "rsa-sha2-512"]);
        assert_eq!(
            signature_algorithm(&ed, true, None, Some(&plain_only)),
            None
        );
        assert_eq!(
            signature_algorithm(
                &rsa,
                true,
                None,
                Some(&l(&["rsa-sha2-256-cert-v01@openssh.com"]))
            ),
            Some("rsa-sha2-256-cert-v01@openssh.com")
        );
        assert_eq!(
            plain_algorithm("rsa-sha2-256-cert-v01@openssh.com"),
            "rsa-sha2-256"
        );
        assert_eq!(plain_algorithm("ssh-ed25519"), "ssh-ed25519");
    }
}
