//! Host key verification against known_hosts, with every
//! StrictHostKeyChecking mode: `yes` refuses unknown keys, `accept-new` adds
//! them, `no` adds them and (as ssh) lets a changed key through with
//! password and keyboard-interactive auth and forwarding disabled, `ask`
//! asks. A changed or revoked key is refused loudly.

use ressh_proto::keys::{KeyType, PublicKey};

use crate::askpass;
use crate::config::{Config, Strict};
use crate::known_hosts::{self, KnownHosts, Verdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accept,
    /// Accepted although the key changed (StrictHostKeyChecking=no): no
    /// password or keyboard-interactive auth, no forwarding.
    AcceptUntrusted,
}

pub fn type_label(k: &PublicKey) -> &'static str {
    match k.key_type() {
        KeyType::Ed25519 => "ED25519",
        KeyType::Rsa => "RSA",
        KeyType::EcdsaP256 | KeyType::EcdsaP384 | KeyType::EcdsaP521 => "ECDSA",
        KeyType::SkEd25519 => "ED25519-SK",
        KeyType::SkEcdsaP256 => "ECDSA-SK",
    }
}

/// The name the host's keys are filed under.
pub fn lookup_name(cfg: &Config) -> String {
    match &cfg.host_key_alias {
        Some(a) => a.clone(),
        None => known_hosts::lookup_name(&cfg.host, cfg.port),
    }
}

/// All known_hosts files, user's first.
pub fn files(cfg: &Config) -> Vec<std::path::PathBuf> {
    cfg.user_known_hosts
        .iter()
        .chain(cfg.global_known_hosts.iter())
        .cloned()
        .collect()
}

/// Key types known for the host, to prefer them in the key exchange.
pub fn known_types(cfg: &Config) -> Vec<String> {
    KnownHosts::load(&files(cfg)).known_types(&lookup_name(cfg))
}

fn add(cfg: &Config, name: &str, key: &PublicKey) {
    let Some(file) = cfg.user_known_hosts.first() else {
        crate::info!("Warning: no UserKnownHostsFile to add the host key to.");
        return;
    };
    match known_hosts::add(file, name, key, cfg.hash_known_hosts) {
        Ok(()) => crate::info!(
            "Warning: Permanently added '{name}' ({}) to the list of known hosts.",
            type_label(key)
        ),
        Err(e) => crate::info!(
            "Failed to add the host to the list of known hosts ({}): {e}",
            file.display()
        ),
    }
}

/// Judges the server's host key; Err is the one-line refusal.
pub fn verify(cfg: &Config, key: &PublicKey, peer: &str) -> Result<Outcome, String> {
    let name = lookup_name(cfg);
    let kh = KnownHosts::load(&files(cfg));
    let label = type_label(key);
    let fp = key.fingerprint();
    crate::debug1!("Server host key: {} {fp}", key.key_type_name());
    match kh.check(&name, key) {
        Verdict::Known(loc) => {
            crate::debug1!("Host '{name}' is known and matches the {label} host key.");
            crate::debug1!("Found key in {loc}");
            Ok(Outcome::Accept)
        }
        Verdict::Revoked(loc) => Err(format!(
            "Host key verification failed: the {label} host key {fp} of '{name}' is marked \
             as REVOKED in {loc}; refusing to connect"
        )),
        Verdict::Changed(loc) => {
            let msg = format!(
                "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED for '{name}': it sent the \
                 {label} key {fp}, but {loc} holds a different {label} key; someone could be \
                 eavesdropping (man-in-the-middle attack) or the host key was replaced"
            );
            if cfg.strict == Strict::No {
                crate::error!("{msg}");
                crate::error!(
                    "Password and keyboard-interactive authentication and forwarding are \
                     disabled to avoid man-in-the-middle attacks."
                );
                return Ok(Outcome::AcceptUntrusted);
            }
            Err(format!(
                "{msg}; remove the old key (ssh-keygen -R '{name}') if the change is \
                 expected. Host key verification failed."
            ))
        }
        Verdict::New {
            cert_authority: Some(loc),
            ..
        } => Err(format!(
            "Host key verification failed: '{name}' is covered by the @cert-authority entry \
             at {loc}, but host certificates are not supported by ressh"
        )),
        Verdict::New { other_types, .. } => match cfg.strict {
            Strict::Yes => Err(format!(
                "Host key verification failed: no {label} host key is known for '{name}' and \
                 StrictHostKeyChecking is yes"
            )),
            Strict::AcceptNew | Strict::No => {
                add(cfg, &name, key);
                Ok(Outcome::Accept)
            }
            Strict::Ask => {
                let mut prompt = format!(
                    "The authenticity of host '{name} ({peer})' can't be established.\n\
                     {label} key fingerprint is {fp}.\n"
                );
                if other_types {
                    prompt.push_str(
                        "Keys of other types are known for this host: it may have been \
                         reconfigured, or this may be an attack.\n",
                    );
                }
                prompt.push_str(
                    "Are you sure you want to continue connecting (yes/no/[fingerprint])? ",
                );
                let answer = askpass::confirm(&prompt, cfg.batch_mode).map_err(|_| {
                    format!(
                        "Host key verification failed: no {label} host key is known for \
                         '{name}' and there is no way to ask"
                    )
                })?;
                if answer == "yes" || answer == fp {
                    add(cfg, &name, key);
                    Ok(Outcome::Accept)
                } else {
                    Err("Host key verification failed.".to_string())
                }
            }
        },
    }
}
