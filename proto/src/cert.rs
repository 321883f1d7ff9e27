//! OpenSSH certificates (PROTOCOL.certkeys): the `*-cert-v01@openssh.com`
//! key types, decoded strictly, their CA signature verified, and the
//! authority checks sshd and ssh make before trusting one
//! (`sshkey_cert_check_authority`).
//!
//! A [`Certificate`] only exists once its CA signature has verified: what it
//! says is what its signature key signed. Whether that key is a trusted CA,
//! and what the critical options and extensions mean to a server, is the
//! caller's decision.

use openssl::base64;

use crate::error::{Error, Result};
use crate::keys::{b64_decode_strict, KeyType, PublicKey, Verified};
use crate::wire::{printable, Put, Reader};

/// Most principals a certificate may list (OpenSSH's
/// SSHKEY_CERT_MAX_PRINCIPALS).
pub const MAX_PRINCIPALS: usize = 256;
/// Most critical options, and most extensions, a certificate may carry.
pub const MAX_OPTIONS: usize = 64;
/// Bound on a whole certificate blob: a 16384-bit RSA key signed by a
/// 16384-bit RSA CA takes about 6 KiB; the rest leaves room for principals.
pub const MAX_CERT_LEN: usize = 64 * 1024;
/// Bound on the base64 field of a certificate line.
const MAX_CERT_B64: usize = MAX_CERT_LEN.div_ceil(3) * 4;

/// SHA-2 RSA signature algorithms of an RSA certificate, preferred first.
/// The SHA-1 "ssh-rsa-cert-v01@openssh.com" is deliberately absent.
const RSA_CERT_ALGS: &[(&str, &str)] = &[
    ("rsa-sha2-512-cert-v01@openssh.com", "rsa-sha2-512"),
    ("rsa-sha2-256-cert-v01@openssh.com", "rsa-sha2-256"),
];

/// (key type, certificate type name) for every certificate type.
const CERT_TYPES: &[(KeyType, &str)] = &[
    (KeyType::Ed25519, "ssh-ed25519-cert-v01@openssh.com"),
    (
        KeyType::EcdsaP256,
        "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    ),
    (
        KeyType::EcdsaP384,
        "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    ),
    (
        KeyType::EcdsaP521,
        "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    ),
    (KeyType::Rsa, "ssh-rsa-cert-v01@openssh.com"),
    (KeyType::SkEd25519, "sk-ssh-ed25519-cert-v01@openssh.com"),
    (
        KeyType::SkEcdsaP256,
        "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    ),
];

/// The certificate type name of a key type.
pub fn cert_type_name(t: KeyType) -> &'static str {
    CERT_TYPES
        .iter()
        .find(|(k, _)| *k == t)
        .map(|(_, n)| *n)
        .expect("every key type has a certificate type")
}

/// The key type certified by a certificate type name, if it is one.
pub fn key_type_of(cert_type: &[u8]) -> Option<KeyType> {
    CERT_TYPES
        .iter()
        .find(|(_, n)| n.as_bytes() == cert_type)
        .map(|(k, _)| *k)
}

/// Whether `name` is a certificate key type or certificate signature
/// algorithm name.
pub fn is_cert_name(name: &[u8]) -> bool {
    plain_algorithm(name).is_some() || key_type_of(name).is_some()
}

/// The certificate signature algorithms of a key type, preferred first
/// (what a server offers as host key algorithms and accepts in
/// publickey userauth). For RSA: the SHA-2 ones only.
pub fn signature_algorithms(t: KeyType) -> Vec<&'static str> {
    if t == KeyType::Rsa {
        RSA_CERT_ALGS.iter().map(|(c, _)| *c).collect()
    } else {
        vec![cert_type_name(t)]
    }
}

/// Every certificate signature algorithm of the key types of
/// [`KeyType::ALL`] and the security keys, in OpenSSH's order.
pub fn all_signature_algorithms() -> Vec<&'static str> {
    KeyType::ALL
        .into_iter()
        .chain(KeyType::SECURITY_KEYS)
        .flat_map(signature_algorithms)
        .collect()
}

/// The plain signature algorithm that signs for a certificate signature
/// algorithm ("rsa-sha2-512-cert-v01@openssh.com" -> "rsa-sha2-512",
/// "ssh-ed25519-cert-v01@openssh.com" -> "ssh-ed25519"). None for any other
/// name, the SHA-1 "ssh-rsa-cert-v01@openssh.com" included.
pub fn plain_algorithm(cert_alg: &[u8]) -> Option<&'static str> {
    if let Some((_, plain)) = RSA_CERT_ALGS.iter().find(|(c, _)| c.as_bytes() == cert_alg) {
        return Some(plain);
    }
    match key_type_of(cert_alg)? {
        KeyType::Rsa => None,
        t => Some(t.name()),
    }
}

/// Whom a certificate is for (PROTOCOL.certkeys "type").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertKind {
    User,
    Host,
}

impl CertKind {
    fn from_wire(v: u32) -> Result<CertKind> {
        match v {
            1 => Ok(CertKind::User),
            2 => Ok(CertKind::Host),
            _ => Err(Error::Malformed("certificate type")),
        }
    }
}

/// A critical option or extension: its name and its data as carried (the
/// data of a flag is empty; that of an option with a value holds it as an
/// SSH string: see [`CertOption::string_value`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertOption {
    pub name: String,
    pub data: Vec<u8>,
}

impl CertOption {
    /// The data as one SSH string and nothing else (force-command,
    /// source-address), UTF-8 without NUL.
    pub fn string_value(&self) -> Result<&str> {
        let mut r = Reader::new(&self.data);
        let s = r.utf8()?;
        r.finish()?;
        if s.contains('\0') {
            return Err(Error::Malformed("certificate option value"));
        }
        Ok(s)
    }
}

/// A decoded certificate whose CA signature has verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    blob: Vec<u8>,
    pub nonce: Vec<u8>,
    /// The certified key.
    pub key: PublicKey,
    pub serial: u64,
    pub kind: CertKind,
    pub key_id: String,
    pub principals: Vec<String>,
    /// Seconds since the epoch; valid from `valid_after` (inclusive) to
    /// `valid_before` (exclusive).
    pub valid_after: u64,
    pub valid_before: u64,
    pub critical_options: Vec<CertOption>,
    pub extensions: Vec<CertOption>,
    /// The CA key that signed it (never itself a certificate).
    pub signature_key: PublicKey,
    /// The CA's signature algorithm ("ssh-ed25519", "rsa-sha2-512", ...),
    /// for CASignatureAlgorithms.
    pub signature_algorithm: &'static str,
}

/// A cstring field: UTF-8 without NUL (OpenSSH reads these with
/// sshbuf_get_cstring, which refuses an embedded NUL).
fn cstring<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<&'a str> {
    let s = r.utf8()?;
    if s.contains('\0') {
        return Err(Error::Malformed(what));
    }
    Ok(s)
}

/// The critical options or extensions section: (name, data) pairs. Names
/// must be distinct (OpenSSH refuses a repeated force-command or
/// source-address, and a repeat can only be an attempt to confuse).
fn options(section: &[u8], what: &'static str) -> Result<Vec<CertOption>> {
    let mut r = Reader::new(section);
    let mut v: Vec<CertOption> = Vec::new();
    while r.remaining() > 0 {
        if v.len() == MAX_OPTIONS {
            return Err(Error::TooLarge(what));
        }
        let name = cstring(&mut r, what)?;
        let data = r.string()?;
        if name.is_empty() || v.iter().any(|o| o.name == name) {
            return Err(Error::Malformed(what));
        }
        v.push(CertOption {
            name: name.to_string(),
            data: data.to_vec(),
        });
    }
    Ok(v)
}

/// Number of SSH strings (or mpints) forming the public key of each type
/// inside a certificate: the same fields as its plain key blob.
fn key_field_count(t: KeyType) -> usize {
    match t {
        KeyType::Ed25519 => 1,
        KeyType::Rsa | KeyType::EcdsaP256 | KeyType::EcdsaP384 | KeyType::EcdsaP521 => 2,
        KeyType::SkEd25519 => 2,
        KeyType::SkEcdsaP256 => 3,
    }
}

impl Certificate {
    /// Decodes a certificate blob and verifies its CA signature.
    pub fn from_blob(blob: &[u8]) -> Result<Certificate> {
        if blob.len() > MAX_CERT_LEN {
            return Err(Error::TooLarge("certificate"));
        }
        let mut r = Reader::new(blob);
        let name = r.string()?;
        let kt = key_type_of(name).ok_or_else(|| Error::UnknownAlgorithm(printable(name)))?;
        let nonce = r.string()?.to_vec();
        // The key's own fields, decoded (and validated) as its plain blob.
        let key_start = blob.len() - r.remaining();
        for _ in 0..key_field_count(kt) {
            r.string()?;
        }
        let key_end = blob.len() - r.remaining();
        let mut plain = Vec::with_capacity(key_end - key_start + 64);
        plain.put_str(kt.name());
        plain.extend_from_slice(&blob[key_start..key_end]);
        let key = PublicKey::from_blob(&plain)?;
        let serial = r.u64()?;
        let kind = CertKind::from_wire(r.u32()?)?;
        let key_id = cstring(&mut r, "certificate key id")?.to_string();
        let mut pr = Reader::new(r.string()?);
        let mut principals = Vec::new();
        while pr.remaining() > 0 {
            if principals.len() == MAX_PRINCIPALS {
                return Err(Error::TooLarge("certificate principals"));
            }
            principals.push(cstring(&mut pr, "certificate principal")?.to_string());
        }
        let valid_after = r.u64()?;
        let valid_before = r.u64()?;
        let critical_options = options(r.string()?, "certificate critical options")?;
        let extensions = options(r.string()?, "certificate extensions")?;
        let _reserved = r.string()?;
        let ca_blob = r.string()?;
        let signed_len = blob.len() - r.remaining();
        let signature = r.string()?;
        r.finish()?;
        let ca_name = Reader::new(ca_blob).string()?;
        if is_cert_name(ca_name) {
            return Err(Error::Malformed("certificate signed by a certificate"));
        }
        let signature_key = PublicKey::from_blob(ca_blob)?;
        // A security key CA's signature verifies whatever its flags say,
        // as in OpenSSH (the flags are a user authentication policy).
        let Verified { alg, .. } = signature_key.verify_detailed(&blob[..signed_len], signature)?;
        Ok(Certificate {
            blob: blob.to_vec(),
            nonce,
            key,
            serial,
            kind,
            key_id,
            principals,
            valid_after,
            valid_before,
            critical_options,
            extensions,
            signature_key,
            signature_algorithm: alg,
        })
    }

    /// The certificate blob, as received.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// The certificate type name ("ssh-ed25519-cert-v01@openssh.com", ...).
    pub fn type_name(&self) -> &'static str {
        cert_type_name(self.key.key_type())
    }

    /// The certificate signature algorithms usable with this certificate.
    pub fn signature_algorithms(&self) -> Vec<&'static str> {
        signature_algorithms(self.key.key_type())
    }

    /// Verifies a signature by the certified key for the certificate
    /// signature algorithm `cert_alg`: the signature blob must name that
    /// algorithm's plain signature algorithm (OpenSSH's
    /// sshkey_check_sigtype).
    pub fn verify_detailed(&self, cert_alg: &str, data: &[u8], sig: &[u8]) -> Result<Verified> {
        let plain = plain_algorithm(cert_alg.as_bytes())
            .filter(|_| self.signature_algorithms().contains(&cert_alg))
            .ok_or_else(|| Error::UnknownAlgorithm(printable(cert_alg.as_bytes())))?;
        let v = self.key.verify_detailed(data, sig)?;
        if v.alg != plain {
            return Err(Error::Malformed(
                "signature algorithm differs from the certificate's",
            ));
        }
        Ok(v)
    }

    /// The critical option called `name`.
    pub fn critical_option(&self, name: &str) -> Option<&CertOption> {
        self.critical_options.iter().find(|o| o.name == name)
    }

    /// Whether the extension `name` is present.
    pub fn has_extension(&self, name: &str) -> bool {
        self.extensions.iter().any(|o| o.name == name)
    }

    /// OpenSSH's sshkey_cert_check_authority: the certificate is of `kind`,
    /// valid at `now` (seconds since the epoch), and, when it lists
    /// principals and `name` is given, lists `name` (as a glob pattern
    /// when `wildcard`, as host certificates may). With `require_principal`
    /// a certificate listing none is refused. The error is OpenSSH's reason.
    pub fn check_authority(
        &self,
        kind: CertKind,
        name: Option<&str>,
        require_principal: bool,
        wildcard: bool,
        now: u64,
    ) -> std::result::Result<(), &'static str> {
        if self.kind != kind {
            return Err(match kind {
                CertKind::Host => "Certificate invalid: not a host certificate",
                CertKind::User => "Certificate invalid: not a user certificate",
            });
        }
        if now < self.valid_after {
            return Err("Certificate invalid: not yet valid");
        }
        if now >= self.valid_before {
            return Err("Certificate invalid: expired");
        }
        if self.principals.is_empty() {
            if require_principal {
                return Err("Certificate lacks principal list");
            }
        } else if let Some(name) = name {
            let listed = self.principals.iter().any(|p| {
                if wildcard {
                    ressh_compat::pattern::match_pattern(name, p)
                } else {
                    p == name
                }
            });
            if !listed {
                return Err("Certificate invalid: name is not a listed principal");
            }
        }
        Ok(())
    }

    /// An OpenSSH line: "type base64 comment" (control characters of the
    /// comment become spaces).
    pub fn to_openssh(&self, comment: &str) -> String {
        let mut s = format!("{} {}", self.type_name(), base64::encode_block(&self.blob));
        if !comment.is_empty() {
            s.push(' ');
            s.extend(
                comment
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c }),
            );
        }
        s
    }

    /// Parses a certificate line ("type base64 [comment]", as `ssh-keygen
    /// -s` writes to `*-cert.pub`); the type must match the blob. Returns
    /// the comment.
    pub fn from_openssh(line: &str) -> Result<(Certificate, String)> {
        let line = line.trim();
        let is_sep = |c: char| c == ' ' || c == '\t';
        let (ty, rest) = line
            .split_once(is_sep)
            .ok_or(Error::Malformed("certificate line"))?;
        let rest = rest.trim_start_matches(is_sep);
        let (b64, comment) = match rest.split_once(is_sep) {
            Some((b, c)) => (b, c.trim_matches(is_sep)),
            None => (rest, ""),
        };
        if key_type_of(ty.as_bytes()).is_none() {
            return Err(Error::UnknownAlgorithm(printable(ty.as_bytes())));
        }
        if b64.len() > MAX_CERT_B64 {
            return Err(Error::TooLarge("certificate"));
        }
        let cert = Certificate::from_blob(&b64_decode_strict(b64)?)?;
        if cert.type_name() != ty {
            return Err(Error::Malformed("certificate type does not match blob"));
        }
        Ok((cert, comment.to_string()))
    }
}

#[cfg(test)]
mod tests;
