//! RevokedKeys, as OpenSSH's `auth_key_is_revoked()` and
//! `sshkey_check_revoked()`: the file is a KRL
//! ([`ressh_proto::krl`]) if it starts with the KRL magic, else a plain
//! list of public keys (`type base64 [comment]` lines; blank lines and `#`
//! comments skipped). The file is read at each check, so edits take effect
//! at once, as in sshd.
//!
//! A file that cannot be read, is larger than [`ressh_proto::krl::MAX_LEN`]
//! or does not parse (a malformed KRL, a line that is not a key) revokes
//! every key: a revocation list that cannot be honoured must not let keys
//! through. In a plain list, lines of key types resshd does not know
//! (ssh-dss) count as such errors. A listed key revokes the key itself,
//! its certificates, and any certificate whose CA it is; a listed
//! certificate revokes its key (sshd compares public parts).

use std::io::Read;
use std::path::Path;

use ressh_proto::cert::Certificate;
use ressh_proto::conn::OfferedKey;
use ressh_proto::keys::PublicKey;
use ressh_proto::krl::{self, CertFacts, Krl};

/// Whether `path` revokes `key` (for a certificate: the certified key as a
/// plain key, and the certificate's facts). Err(reason) when the file
/// cannot be used: the caller refuses the key then too.
pub fn check(path: &Path, key: &PublicKey, cert: Option<&CertFacts<'_>>) -> Result<bool, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut data = Vec::new();
    f.take(krl::MAX_LEN as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read: {e}"))?;
    if data.len() > krl::MAX_LEN {
        return Err(format!("larger than {} bytes", krl::MAX_LEN));
    }
    let blob = key.to_blob();
    if krl::is_krl(&data) {
        let krl = Krl::parse(&data).map_err(|e| e.to_string())?;
        return Ok(krl.is_revoked(&blob, cert));
    }
    let text = std::str::from_utf8(&data).map_err(|_| "not UTF-8 text".to_string())?;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start_matches([' ', '\t']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let listed = match PublicKey::from_openssh(line.trim_end()) {
            Ok((k, _)) => k.to_blob(),
            Err(e) => certified_key(line)
                .ok_or_else(|| format!("line {}: not a public key resshd knows: {e}", n + 1))?,
        };
        if listed == blob || cert.is_some_and(|c| c.ca_key_blob == listed) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The revocation check of a login (`auth_key_is_revoked()` of the key,
/// and for a certificate of its CA key too): None if `key` may be used,
/// else the message to log.
pub fn refusal(path: Option<&Path>, offered: &OfferedKey) -> Option<String> {
    let path = path?;
    let (key, ca_blob) = match offered {
        OfferedKey::Plain(k) => (k, None),
        OfferedKey::Cert(c) => (&c.key, Some(c.signature_key.to_blob())),
    };
    let facts = match (offered, &ca_blob) {
        (OfferedKey::Cert(c), Some(ca)) => Some(CertFacts {
            ca_key_blob: ca,
            serial: c.serial,
            key_id: c.key_id.as_bytes(),
        }),
        _ => None,
    };
    match check(path, key, facts.as_ref()) {
        Ok(false) => None,
        Ok(true) => Some(format!(
            "Authentication key {} {} revoked by file {}",
            key.key_type_name(),
            key.fingerprint(),
            path.display()
        )),
        Err(e) => Some(format!(
            "Error checking authentication key {} {} in revoked keys file {}: {e}",
            key.key_type_name(),
            key.fingerprint(),
            path.display()
        )),
    }
}

/// The certified key of a certificate line (`type base64 [comment]`): a
/// listed certificate revokes its key, as sshd compares public parts.
fn certified_key(line: &str) -> Option<Vec<u8>> {
    let mut fields = line.split([' ', '\t']).filter(|f| !f.is_empty());
    let (ty, b64) = (fields.next()?, fields.next()?);
    if !ressh_proto::cert::is_cert_name(ty.as_bytes()) {
        return None;
    }
    let blob = openssl::base64::decode_block(b64).ok()?;
    let cert = Certificate::from_blob(&blob).ok()?;
    (cert.type_name() == ty).then(|| cert.key.to_blob())
}

/// A key blob a login used (as it was offered): a plain key or a
/// certificate.
pub fn offered_key(blob: &[u8]) -> ressh_proto::Result<OfferedKey> {
    match PublicKey::from_blob(blob) {
        Ok(k) => Ok(OfferedKey::Plain(k)),
        Err(_) => Ok(OfferedKey::Cert(Box::new(Certificate::from_blob(blob)?))),
    }
}
