//! Host key verification against known_hosts, with every
//! StrictHostKeyChecking mode: `yes` refuses unknown keys, `accept-new` adds
//! them, `no` adds them and (as ssh) lets a changed key through with
//! password and keyboard-interactive auth and forwarding disabled, `ask`
//! asks. A changed or revoked key is refused loudly.
//!
//! A host certificate is trusted as ssh trusts it: a `@cert-authority` line
//! for the host names its CA, it is a host certificate valid now, the name
//! connected to (or HostKeyAlias) is one of its principals, and it has no
//! critical option. A certificate that fails any of this is dropped and its
//! key judged as a plain key; a revoked key or CA refuses the host.

use ressh_proto::cert::{CertKind, Certificate};
use ressh_proto::keys::{KeyType, PublicKey};

use crate::askpass;
use crate::config::{Config, Strict};
use crate::known_hosts::{self, CaVerdict, KnownHosts, Location, Verdict};

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

/// What known_hosts knows of the host, to order the host key algorithms
/// as ssh does (`order_hostkeyalgs`).
#[derive(Debug, Default)]
pub struct Known {
    /// Key type names of its plain keys.
    pub types: Vec<String>,
    /// A @cert-authority line covers it.
    pub ca: bool,
}

pub fn known(cfg: &Config) -> Known {
    let kh = KnownHosts::load(&files(cfg));
    let name = lookup_name(cfg);
    Known {
        types: kh.known_types(&name),
        ca: kh.has_ca(&name),
    }
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

/// ssh's warning for a revoked host key (or CA), as the refusal.
fn revoked(label: &str, fp: &str, name: &str, loc: &Location) -> String {
    format!(
        "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         @       WARNING: REVOKED HOST KEY DETECTED!               @\n\
         @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         The {label} host key {fp} for {name} is marked as revoked ({loc}).\n\
         This could mean that a stolen key is being used to impersonate this host.\n\
         Host key verification failed."
    )
}

/// Seconds since the epoch.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Judges a host certificate: Ok(true) trusted, Ok(false) not (judge its
/// key as a plain key), Err refused (revoked).
fn check_cert(
    cfg: &Config,
    kh: &KnownHosts,
    name: &str,
    cert: &Certificate,
) -> Result<bool, String> {
    let label = format!("{}-CERT", type_label(&cert.key));
    let fp = cert.key.fingerprint();
    crate::debug1!(
        "Server host certificate: {} {fp}, serial {} ID \"{}\" CA {} {} valid from {} to {}",
        cert.type_name(),
        cert.serial,
        crate::auth::clean(&cert.key_id),
        cert.signature_key.key_type_name(),
        cert.signature_key.fingerprint(),
        cert.valid_after,
        cert.valid_before
    );
    for p in &cert.principals {
        crate::debug2!(
            "Server host certificate hostname: {}",
            crate::auth::clean(p)
        );
    }
    let loc = match kh.check_ca(name, &cert.key, &cert.signature_key) {
        CaVerdict::Revoked(loc) => return Err(revoked(&label, &fp, name, &loc)),
        CaVerdict::Unknown => {
            crate::debug1!("No matching CA found. Retry with plain key");
            return Ok(false);
        }
        CaVerdict::Trusted(loc) => loc,
    };
    crate::debug1!("Host '{name}' is known and matches the {label} host certificate.");
    crate::debug1!("Found CA key in {loc}");
    // The principal is the host name as connected to (or HostKeyAlias),
    // never the "[host]:port" form known_hosts files it under.
    let principal = match &cfg.host_key_alias {
        Some(a) => a.clone(),
        None => cfg.host.to_ascii_lowercase(),
    };
    let checked = cert
        .check_authority(CertKind::Host, Some(&principal), true, true, now())
        .and_then(|()| match cert.critical_options.first() {
            Some(_) => Err("Certificate contains unsupported critical options"),
            None => Ok(()),
        })
        .and_then(|()| match &cfg.ca_signature_algorithms {
            Some(list) if !list.iter().any(|a| a == cert.signature_algorithm) => {
                Err("Certificate signed with disallowed algorithm")
            }
            _ => Ok(()),
        });
    match checked {
        Ok(()) => Ok(true),
        Err(why) => {
            crate::error!("{why}");
            crate::debug1!("No matching CA found. Retry with plain key");
            Ok(false)
        }
    }
}

/// Judges the server's host key (and its certificate, if it sent one);
/// Err is the refusal.
pub fn verify(
    cfg: &Config,
    key: &PublicKey,
    cert: Option<&Certificate>,
    peer: &str,
) -> Result<Outcome, String> {
    let name = lookup_name(cfg);
    let kh = KnownHosts::load(&files(cfg));
    if let Some(cert) = cert {
        if check_cert(cfg, &kh, &name, cert)? {
            return Ok(Outcome::Accept);
        }
    }
    let label = type_label(key);
    let fp = key.fingerprint();
    crate::debug1!("Server host key: {} {fp}", key.key_type_name());
    match kh.check(&name, key) {
        Verdict::Known(loc) => {
            crate::debug1!("Host '{name}' is known and matches the {label} host key.");
            crate::debug1!("Found key in {loc}");
            Ok(Outcome::Accept)
        }
        Verdict::Revoked(loc) => Err(revoked(label, &fp, &name, &loc)),
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
