//! The host keys the monitor signs with: private key files, or (with
//! HostKeyAgent, as sshd) public keys whose private halves an ssh-agent
//! holds. The workers only ever see the public halves.

use std::path::{Path, PathBuf};

use ressh_proto::agent::Agent;
use ressh_proto::cert::{CertKind, Certificate};
use ressh_proto::keys::{PrivateKey, PublicKey};

/// One host key.
pub enum HostKey {
    /// Read from its HostKey file.
    File(PrivateKey),
    /// Its HostKey file holds only the public key; the agent signs.
    Agent(PublicKey),
}

impl HostKey {
    pub fn public_key(&self) -> PublicKey {
        match self {
            HostKey::File(k) => k.public_key(),
            HostKey::Agent(k) => k.clone(),
        }
    }
}

/// The host keys, the agent that holds those not read from files, and the
/// certificates of some of them (HostCertificate).
#[derive(Default)]
pub struct HostKeys {
    keys: Vec<HostKey>,
    agent: Option<PathBuf>,
    certs: Vec<Certificate>,
}

impl HostKeys {
    pub fn new(keys: Vec<HostKey>, agent: Option<PathBuf>) -> HostKeys {
        HostKeys {
            keys,
            agent,
            certs: Vec::new(),
        }
    }

    /// HostCertificate files, as sshd loads them: each must be a host
    /// certificate (its CA signature valid) of one of the host keys; one
    /// that is not is left out, and what is wrong returned for the log.
    pub fn load_certificates(&mut self, paths: &[PathBuf]) -> Vec<String> {
        let publics = self.public_keys();
        let mut errors = Vec::new();
        for p in paths {
            let cert = std::fs::read_to_string(p)
                .map_err(|e| e.to_string())
                .and_then(|t| {
                    Certificate::from_openssh(t.lines().next().unwrap_or_default())
                        .map_err(|e| e.to_string())
                });
            match cert {
                Ok((c, _)) if c.kind != CertKind::Host => errors.push(format!(
                    "Certificate file is not a host certificate: {}",
                    p.display()
                )),
                Ok((c, _)) if !publics.contains(&c.key) => errors.push(format!(
                    "No matching private key for certificate: {}",
                    p.display()
                )),
                Ok((c, _)) => {
                    // One certificate a key, the first given (as sshd).
                    if !self.certs.iter().any(|o| o.key == c.key) {
                        self.certs.push(c);
                    }
                }
                Err(e) => errors.push(format!(
                    "Could not load host certificate \"{}\": {e}",
                    p.display()
                )),
            }
        }
        errors
    }

    /// The public halves' blobs, for the workers.
    pub fn public_blobs(&self) -> Vec<Vec<u8>> {
        self.keys.iter().map(|k| k.public_key().to_blob()).collect()
    }

    /// HostCertificate: the certificates' blobs, for the workers.
    pub fn cert_blobs(&self) -> Vec<Vec<u8>> {
        self.certs.iter().map(|c| c.blob().to_vec()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The public halves, in configuration order.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.keys.iter().map(HostKey::public_key).collect()
    }

    /// The host key whose public blob is `blob`.
    pub fn find(&self, blob: &[u8]) -> Option<&HostKey> {
        self.keys.iter().find(|k| k.public_key().to_blob() == blob)
    }

    /// A signature of `data` by `key` (one of ours) with `alg`, one of the
    /// key's algorithms: by the key itself, or by the agent.
    pub fn sign(&self, key: &HostKey, alg: &str, data: &[u8]) -> Result<Vec<u8>, String> {
        let public = key.public_key();
        if !public.signature_algorithms().contains(&alg) {
            return Err(format!("algorithm {alg} does not fit the host key"));
        }
        match key {
            HostKey::File(k) => k.sign(alg, data).map_err(|e| e.to_string()),
            HostKey::Agent(k) => {
                let path = self.agent.as_deref().ok_or("no HostKeyAgent")?;
                let sig = Agent::connect(path)
                    .and_then(|mut a| a.sign(&k.to_blob(), alg, data))
                    .map_err(|e| format!("HostKeyAgent {}: {e}", path.display()))?;
                // The agent is the administrator's, but a signature that
                // does not verify must never reach a client.
                match k.verify(data, &sig) {
                    Ok(a) if a == alg => Ok(sig),
                    _ => Err(format!(
                        "HostKeyAgent {}: a signature that does not verify",
                        path.display()
                    )),
                }
            }
        }
    }
}

/// sshd's loading of HostKey files: the private key, else (only with an
/// agent) the public key from the file itself or from FILE.pub. Failures
/// are returned for the log.
pub fn load(paths: &[PathBuf], agent: Option<&Path>) -> (Vec<HostKey>, Vec<String>) {
    let mut keys = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        let private = std::fs::read(p)
            .map_err(|e| e.to_string())
            .and_then(|b| PrivateKey::from_openssh_pem(&b).map_err(|e| e.to_string()));
        match private {
            Ok(k) => keys.push(HostKey::File(k)),
            Err(e) => match agent.and_then(|_| public_of(p)) {
                Some(k) => keys.push(HostKey::Agent(k)),
                None => errors.push(format!("Unable to load host key \"{}\": {e}", p.display())),
            },
        }
    }
    (keys, errors)
}

/// The public key in `path` (a key file line), else in `path.pub`.
fn public_of(path: &Path) -> Option<PublicKey> {
    let mut with_pub = path.as_os_str().to_owned();
    with_pub.push(".pub");
    [path.to_path_buf(), PathBuf::from(with_pub)]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|t| {
            let line = t.lines().find(|l| !l.trim().is_empty())?;
            PublicKey::from_openssh(line).ok().map(|(k, _)| k)
        })
}
