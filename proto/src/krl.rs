//! OpenSSH key revocation lists (KRL): the binary format `ssh-keygen -k`
//! writes (PROTOCOL.krl), strictly decoded, and the question sshd's
//! `RevokedKeys` asks of it: is this key, or this certificate, revoked?
//!
//! What OpenSSH's `krl.c` accepts is accepted, and nothing more:
//!
//! - the header: magic `SSHKRL\n\0`, format version 1, KRL version,
//!   generation date, flags, a reserved string (ignored) and a comment
//!   without NUL bytes;
//! - certificate sections (a CA key, or none for "any CA", and a reserved
//!   string) with serial lists, serial ranges, serial bitmaps, key ids and
//!   non-critical extensions; serial 0 and reversed ranges are malformed,
//!   as there;
//! - explicit keys, SHA-1 and SHA-256 fingerprint sections (20 and 32
//!   bytes a hash);
//! - non-critical extension sections (a critical one is refused);
//! - signature sections, skipped as OpenSSH (since 9.4) skips them: a KRL
//!   is trusted for where it is stored, not for a signature in it.
//!
//! Any other section, any byte left over in a section, a truncated field
//! or a length beyond the data is an error: the caller treats a KRL it
//! cannot read as revoking everything, as sshd does.
//!
//! Deliberate differences: a CA key must be a key type
//! [`crate::keys::PublicKey`] knows (a KRL naming an ssh-dss CA is refused
//! as malformed, which revokes everything); a bitmap's mpint must be
//! minimally encoded (OpenSSH also takes extra leading zero bytes); a KRL
//! is at most [`MAX_LEN`] bytes.
//!
//! Lookups take the certified key's plain blob and, for a certificate, the
//! facts the certificate parser extracted ([`CertFacts`]): this module
//! never parses certificates itself.

use std::collections::HashSet;
use std::fmt;

use crate::keys::PublicKey;
use crate::wire::Reader;

/// The first eight bytes of every KRL.
pub const MAGIC: &[u8; 8] = b"SSHKRL\n\0";
/// The largest KRL read (OpenSSH's limit is its 256 MiB buffer size).
pub const MAX_LEN: usize = 16 << 20;
/// The largest serial bitmap, in bytes (OpenSSH's largest bignum).
const MAX_BITMAP: usize = 16384 / 8;

const FORMAT_VERSION: u32 = 1;
const SECTION_CERTIFICATES: u8 = 1;
const SECTION_EXPLICIT_KEY: u8 = 2;
const SECTION_FINGERPRINT_SHA1: u8 = 3;
const SECTION_SIGNATURE: u8 = 4;
const SECTION_FINGERPRINT_SHA256: u8 = 5;
const SECTION_EXTENSION: u8 = 255;
const CERT_SERIAL_LIST: u8 = 0x20;
const CERT_SERIAL_RANGE: u8 = 0x21;
const CERT_SERIAL_BITMAP: u8 = 0x22;
const CERT_KEY_ID: u8 = 0x23;
const CERT_EXTENSION: u8 = 0x39;

/// Why a KRL could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KrlError(String);

impl fmt::Display for KrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KrlError {}

fn bad(what: impl Into<String>) -> KrlError {
    KrlError(what.into())
}

impl From<crate::Error> for KrlError {
    fn from(e: crate::Error) -> KrlError {
        KrlError(format!("malformed KRL: {e}"))
    }
}

/// What revocation needs to know of a certificate: its signing CA's
/// public key (wire blob), its serial number and its key id.
#[derive(Clone, Copy, Debug)]
pub struct CertFacts<'a> {
    pub ca_key_blob: &'a [u8],
    pub serial: u64,
    pub key_id: &'a [u8],
}

/// The certificates one section revokes, for one CA (None: any CA).
#[derive(Debug, Default)]
struct CertRevocations {
    ca: Option<Vec<u8>>,
    /// Inclusive ranges (serial lists are ranges of one).
    serials: Vec<(u64, u64)>,
    /// (offset, big-endian bitmap without leading zero bytes).
    bitmaps: Vec<(u64, Vec<u8>)>,
    key_ids: HashSet<Vec<u8>>,
}

impl CertRevocations {
    fn revokes(&self, c: &CertFacts<'_>) -> bool {
        if self.key_ids.contains(c.key_id) {
            return true;
        }
        // Serial 0 is "no serial": never revoked by serial (krl.c).
        if c.serial == 0 {
            return false;
        }
        if self
            .serials
            .iter()
            .any(|&(lo, hi)| lo <= c.serial && c.serial <= hi)
        {
            return true;
        }
        self.bitmaps.iter().any(|(offset, bits)| {
            let Some(n) = c.serial.checked_sub(*offset) else {
                return false;
            };
            let byte = n / 8;
            if byte >= bits.len() as u64 {
                return false;
            }
            bits[bits.len() - 1 - byte as usize] & (1 << (n % 8)) != 0
        })
    }
}

/// A decoded KRL.
#[derive(Debug)]
pub struct Krl {
    pub krl_version: u64,
    pub generated_date: u64,
    pub comment: String,
    keys: HashSet<Vec<u8>>,
    sha1: HashSet<Vec<u8>>,
    sha256: HashSet<Vec<u8>>,
    certs: Vec<CertRevocations>,
}

/// Whether `data` is meant as a KRL (starts with [`MAGIC`]); anything else
/// is for the caller to read as a plain list of keys, as sshd does.
pub fn is_krl(data: &[u8]) -> bool {
    data.starts_with(MAGIC)
}

/// A string without NUL bytes (OpenSSH's `sshbuf_get_cstring`).
fn cstring<'a>(r: &mut Reader<'a>, what: &str) -> Result<&'a [u8], KrlError> {
    let s = r.string()?;
    if s.contains(&0) {
        return Err(bad(format!("KRL {what} contains a NUL byte")));
    }
    Ok(s)
}

/// An extension (section or certificate subsection): refused if critical.
fn extension(mut r: Reader<'_>) -> Result<(), KrlError> {
    let name = cstring(&mut r, "extension name")?;
    let critical = r.u8()? != 0;
    r.string()?;
    r.finish()?;
    if critical {
        return Err(bad(format!(
            "KRL has an unsupported critical extension \"{}\"",
            crate::wire::printable(name)
        )));
    }
    Ok(())
}

/// Blobs of a key or fingerprint section; `len` 0: any length.
fn blobs(mut r: Reader<'_>, into: &mut HashSet<Vec<u8>>, len: usize) -> Result<(), KrlError> {
    while r.remaining() > 0 {
        let b = r.string()?;
        if len != 0 && b.len() != len {
            return Err(bad(format!("KRL hash of {} bytes, not {len}", b.len())));
        }
        into.insert(b.to_vec());
    }
    Ok(())
}

fn cert_section(mut r: Reader<'_>) -> Result<CertRevocations, KrlError> {
    let ca = r.string()?;
    r.string()?; // reserved
    let mut out = CertRevocations {
        ca: if ca.is_empty() {
            None
        } else {
            let key = PublicKey::from_blob(ca)
                .map_err(|e| bad(format!("KRL names a CA key resshd cannot read: {e}")))?;
            Some(key.to_blob())
        },
        ..Default::default()
    };
    while r.remaining() > 0 {
        let kind = r.u8()?;
        let mut s = Reader::new(r.string()?);
        match kind {
            CERT_SERIAL_LIST => {
                while s.remaining() > 0 {
                    let serial = s.u64()?;
                    if serial == 0 {
                        return Err(bad("KRL revokes serial 0"));
                    }
                    out.serials.push((serial, serial));
                }
            }
            CERT_SERIAL_RANGE => {
                let (lo, hi) = (s.u64()?, s.u64()?);
                if lo == 0 || lo > hi {
                    return Err(bad(format!("KRL has a bad serial range {lo}-{hi}")));
                }
                out.serials.push((lo, hi));
            }
            CERT_SERIAL_BITMAP => {
                let offset = s.u64()?;
                let mut bits = s.mpint()?;
                while let [0, rest @ ..] = bits {
                    bits = rest;
                }
                if bits.len() > MAX_BITMAP {
                    return Err(bad("KRL serial bitmap too large"));
                }
                if let Some(&top) = bits.first() {
                    let nbits = (bits.len() as u64 - 1) * 8 + u64::from(8 - top.leading_zeros());
                    if offset.checked_add(nbits - 1).is_none() {
                        return Err(bad("KRL serial bitmap wraps"));
                    }
                    if offset == 0 && bits[bits.len() - 1] & 1 != 0 {
                        return Err(bad("KRL revokes serial 0"));
                    }
                    out.bitmaps.push((offset, bits.to_vec()));
                }
            }
            CERT_KEY_ID => {
                while s.remaining() > 0 {
                    out.key_ids.insert(cstring(&mut s, "key id")?.to_vec());
                }
            }
            CERT_EXTENSION => {
                extension(s.clone())?;
                s = Reader::new(&[]);
            }
            other => return Err(bad(format!("unsupported KRL certificate section {other}"))),
        }
        if s.remaining() != 0 {
            return Err(bad("KRL certificate section contains unparsed data"));
        }
    }
    Ok(out)
}

impl Krl {
    /// Decodes a KRL (all of `data`).
    pub fn parse(data: &[u8]) -> Result<Krl, KrlError> {
        if data.len() > MAX_LEN {
            return Err(bad(format!("KRL larger than {MAX_LEN} bytes")));
        }
        let Some(body) = data.strip_prefix(MAGIC.as_slice()) else {
            return Err(bad("not a KRL (bad magic)"));
        };
        let mut r = Reader::new(body);
        let version = r.u32()?;
        if version != FORMAT_VERSION {
            return Err(bad(format!("unsupported KRL format version {version}")));
        }
        let krl_version = r.u64()?;
        let generated_date = r.u64()?;
        let _flags = r.u64()?;
        r.string()?; // reserved
        let comment = String::from_utf8_lossy(cstring(&mut r, "comment")?).into_owned();
        let mut krl = Krl {
            krl_version,
            generated_date,
            comment,
            keys: HashSet::new(),
            sha1: HashSet::new(),
            sha256: HashSet::new(),
            certs: Vec::new(),
        };
        while r.remaining() > 0 {
            let kind = r.u8()?;
            let section = Reader::new(r.string()?);
            match kind {
                SECTION_CERTIFICATES => krl.certs.push(cert_section(section)?),
                SECTION_EXPLICIT_KEY => blobs(section, &mut krl.keys, 0)?,
                SECTION_FINGERPRINT_SHA1 => blobs(section, &mut krl.sha1, 20)?,
                SECTION_FINGERPRINT_SHA256 => blobs(section, &mut krl.sha256, 32)?,
                SECTION_EXTENSION => extension(section)?,
                SECTION_SIGNATURE => {
                    // The signing key was the section's string; the
                    // signature follows.
                    r.string()?;
                }
                other => return Err(bad(format!("unsupported KRL section {other}"))),
            }
        }
        Ok(krl)
    }

    fn plain_key_revoked(&self, blob: &[u8]) -> bool {
        self.sha1.contains(openssl::sha::sha1(blob).as_slice())
            || self.sha256.contains(openssl::sha::sha256(blob).as_slice())
            || self.keys.contains(blob)
    }

    /// Whether the KRL revokes a key: `key_blob` is the plain public key
    /// (for a certificate, the certified key in its plain form); `cert` the
    /// certificate's facts, if it is one. As `ssh_krl_check_key`: the key
    /// by hash or explicitly; a certificate by serial or key id in the
    /// sections for its CA or for any CA; and the CA key itself by hash or
    /// explicitly.
    pub fn is_revoked(&self, key_blob: &[u8], cert: Option<&CertFacts<'_>>) -> bool {
        if self.plain_key_revoked(key_blob) {
            return true;
        }
        let Some(c) = cert else { return false };
        self.certs
            .iter()
            .filter(|s| s.ca.as_deref().is_none_or(|ca| ca == c.ca_key_blob))
            .any(|s| s.revokes(c))
            || self.plain_key_revoked(c.ca_key_blob)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyType, PrivateKey};
    use crate::wire::Put;
    use proptest::prelude::*;

    fn header(comment: &[u8]) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.put_u32(1);
        v.put_u64(7);
        v.put_u64(1_700_000_000);
        v.put_u64(0);
        v.put_string(b"");
        v.put_string(comment);
        v
    }

    fn section(v: &mut Vec<u8>, kind: u8, body: &[u8]) {
        v.put_u8(kind);
        v.put_string(body);
    }

    fn cert_body(ca: &[u8], subs: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.put_string(ca);
        b.put_string(b"");
        for (k, s) in subs {
            b.put_u8(*k);
            b.put_string(s);
        }
        b
    }

    fn key() -> Vec<u8> {
        PrivateKey::generate(KeyType::Ed25519)
            .unwrap()
            .public_key()
            .to_blob()
    }

    fn err(data: &[u8]) -> String {
        Krl::parse(data).unwrap_err().to_string()
    }

    #[test]
    fn empty_krl_revokes_nothing() {
        let krl = Krl::parse(&header(b"hi")).unwrap();
        assert_eq!((krl.krl_version, krl.comment.as_str()), (7, "hi"));
        assert!(!krl.is_revoked(&key(), None));
    }

    #[test]
    fn keys_and_hashes() {
        let (a, b, c, d) = (key(), key(), key(), key());
        let mut v = header(b"");
        let mut s = Vec::new();
        s.put_string(&a);
        section(&mut v, SECTION_EXPLICIT_KEY, &s);
        let mut s = Vec::new();
        s.put_string(&openssl::sha::sha1(&b));
        section(&mut v, SECTION_FINGERPRINT_SHA1, &s);
        let mut s = Vec::new();
        s.put_string(&openssl::sha::sha256(&c));
        section(&mut v, SECTION_FINGERPRINT_SHA256, &s);
        let krl = Krl::parse(&v).unwrap();
        for k in [&a, &b, &c] {
            assert!(krl.is_revoked(k, None));
        }
        assert!(!krl.is_revoked(&d, None));
        // A certificate whose CA is revoked is revoked.
        let facts = CertFacts {
            ca_key_blob: &c,
            serial: 9,
            key_id: b"x",
        };
        assert!(krl.is_revoked(&d, Some(&facts)));
    }

    #[test]
    fn cert_sections() {
        let (ca, other_ca, k) = (key(), key(), key());
        let mut bitmap = vec![0u8; 2];
        bitmap[0] = 0x01; // bit 8: serial 108
        bitmap[1] = 0x04; // bit 2: serial 102
        let mut mp = Vec::new();
        mp.put_mpint(&bitmap);
        let mut bm_sub = Vec::new();
        bm_sub.put_u64(100);
        bm_sub.extend_from_slice(&mp);
        let mut ids = Vec::new();
        ids.put_string(b"alice@example");
        let mut v = header(b"");
        section(
            &mut v,
            SECTION_CERTIFICATES,
            &cert_body(
                &ca,
                &[
                    (
                        CERT_SERIAL_LIST,
                        [5u64, 6].iter().flat_map(|s| s.to_be_bytes()).collect(),
                    ),
                    (
                        CERT_SERIAL_RANGE,
                        [10u64, 20].iter().flat_map(|s| s.to_be_bytes()).collect(),
                    ),
                    (CERT_SERIAL_BITMAP, bm_sub),
                ],
            ),
        );
        section(
            &mut v,
            SECTION_CERTIFICATES,
            &cert_body(b"", &[(CERT_KEY_ID, ids)]),
        );
        let krl = Krl::parse(&v).unwrap();
        let f = |ca: &[u8], serial: u64, id: &'static [u8]| {
            krl.is_revoked(
                &k,
                Some(&CertFacts {
                    ca_key_blob: ca,
                    serial,
                    key_id: id,
                }),
            )
        };
        for s in [5, 6, 10, 15, 20, 102, 108] {
            assert!(f(&ca, s, b"bob"), "serial {s}");
            assert!(!f(&other_ca, s, b"bob"), "serial {s}, other CA");
        }
        for s in [0, 1, 4, 7, 9, 21, 100, 101, 103, 107, 109, u64::MAX] {
            assert!(!f(&ca, s, b"bob"), "serial {s}");
        }
        // Key ids under "any CA".
        assert!(f(&other_ca, 1, b"alice@example"));
        assert!(!f(&other_ca, 1, b"alice@example2"));
        // The plain key is not revoked by its certificates' serials.
        assert!(!krl.is_revoked(&k, None));
    }

    #[test]
    fn hostile_input_is_refused() {
        let h = header(b"");
        // Truncations of a valid KRL with a section in it.
        let mut v = h.clone();
        let mut s = Vec::new();
        s.put_string(&key());
        section(&mut v, SECTION_EXPLICIT_KEY, &s);
        Krl::parse(&v).unwrap();
        for n in (0..v.len()).filter(|&n| n != h.len()) {
            assert!(Krl::parse(&v[..n]).is_err(), "truncated at {n}");
        }
        // Huge declared lengths.
        let mut v = h.clone();
        v.put_u8(SECTION_EXPLICIT_KEY);
        v.put_u32(u32::MAX);
        assert!(Krl::parse(&v).is_err());
        let mut v = h.clone();
        section(&mut v, SECTION_EXPLICIT_KEY, &[0xff, 0xff, 0xff, 0xf0, 1]);
        assert!(Krl::parse(&v).is_err());
        // Bad magic, version, comment.
        assert!(err(b"SSHKRL\n").contains("magic"));
        let mut v = h.clone();
        v[11] = 2;
        assert!(err(&v).contains("version"));
        assert!(err(&header(b"a\0b")).contains("NUL"));
        // Unknown section, unparsed data, wrong hash length.
        let mut v = h.clone();
        section(&mut v, 6, b"");
        assert!(err(&v).contains("unsupported KRL section 6"));
        let mut v = h.clone();
        let mut s = Vec::new();
        s.put_string(&[0u8; 31]);
        section(&mut v, SECTION_FINGERPRINT_SHA256, &s);
        assert!(err(&v).contains("not 32"));
        // Critical extensions.
        for (kind, crit) in [(SECTION_EXTENSION, 1u8), (SECTION_EXTENSION, 0)] {
            let mut e = Vec::new();
            e.put_string(b"x@example");
            e.put_u8(crit);
            e.put_string(b"");
            let mut v = h.clone();
            section(&mut v, kind, &e);
            assert_eq!(Krl::parse(&v).is_err(), crit == 1);
        }
        // Certificate sections: serial 0, reversed range, unknown type,
        // trailing bytes, a CA blob that is no key, a wrapping bitmap.
        let ca = key();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                cert_body(&ca, &[(CERT_SERIAL_LIST, 0u64.to_be_bytes().to_vec())]),
                "serial 0",
            ),
            (
                cert_body(
                    &ca,
                    &[(
                        CERT_SERIAL_RANGE,
                        [9u64, 3].iter().flat_map(|s| s.to_be_bytes()).collect(),
                    )],
                ),
                "range",
            ),
            (cert_body(&ca, &[(0x24, Vec::new())]), "section 36"),
            (
                cert_body(&ca, &[(CERT_SERIAL_LIST, vec![0, 0, 0, 0, 0, 0, 0, 1, 9])]),
                "malformed",
            ),
            (cert_body(&ca, &[(CERT_SERIAL_RANGE, vec![0; 17])]), ""),
            (cert_body(b"not a key", &[]), "CA key"),
            (
                cert_body(
                    &ca,
                    &[(CERT_SERIAL_BITMAP, {
                        let mut b = u64::MAX.to_be_bytes().to_vec();
                        b.put_mpint(&[0x03]);
                        b
                    })],
                ),
                "wraps",
            ),
            (
                cert_body(
                    &ca,
                    &[(CERT_SERIAL_BITMAP, {
                        let mut b = 0u64.to_be_bytes().to_vec();
                        b.put_mpint(&[0x03]);
                        b
                    })],
                ),
                "serial 0",
            ),
            (
                cert_body(
                    &ca,
                    &[(CERT_SERIAL_BITMAP, {
                        let mut b = 1u64.to_be_bytes().to_vec();
                        b.put_mpint(&vec![0x7f; MAX_BITMAP + 1]);
                        b
                    })],
                ),
                "too large",
            ),
        ];
        for (body, want) in cases {
            let mut v = h.clone();
            section(&mut v, SECTION_CERTIFICATES, &body);
            let e = err(&v);
            assert!(e.contains(want), "{e} lacks {want}");
        }
        // Over the size bound.
        let mut v = h.clone();
        v.resize(MAX_LEN + 1, 0);
        assert!(err(&v).contains("larger"));
    }

    #[test]
    fn signature_sections_are_skipped() {
        let mut v = header(b"");
        v.put_u8(SECTION_SIGNATURE);
        v.put_string(&key());
        v.put_string(b"not checked");
        assert!(Krl::parse(&v).is_ok());
        v.truncate(v.len() - 3);
        assert!(Krl::parse(&v).is_err());
    }

    /// The plain key blob of an OpenSSH public key line.
    fn blob_of(line: &str) -> Vec<u8> {
        PublicKey::from_openssh(line.trim()).unwrap().0.to_blob()
    }

    /// KRLs written by the system's `ssh-keygen -k`: keys, SHA-256 hashes,
    /// and certificates by serial (list, range, a dense set that
    /// ssh-keygen stores as a bitmap) and by key id, checked against
    /// certificates `ssh-keygen -s` issued (their facts read back with
    /// `ssh-keygen -L`).
    #[test]
    fn krls_made_by_ssh_keygen() {
        use ressh_testkit::{require_cmd, run_ok, ssh_keygen};
        use std::process::Command;
        let dir = ressh_testkit::TempDir::new("krl");
        let keygen = require_cmd("ssh-keygen");
        let (ca, ca_line) = ssh_keygen(dir.path(), "ed25519", "");
        let (_, other_ca_line) = ssh_keygen(dir.path(), "ed25519", "");
        let ca_pub = format!("{}.pub", ca.display());
        let users: Vec<(std::path::PathBuf, String)> = (0..4)
            .map(|_| ssh_keygen(dir.path(), "ecdsa", ""))
            .collect();
        // Certificates: (key, serial, key id).
        let issued = [
            (0, 7u64, "plain"),
            (1, 12, "ranged"),
            (2, 42, "alice"),
            (3, 1024, "dense"),
        ];
        let mut facts = Vec::new();
        for (i, serial, id) in issued {
            let key = &users[i].0;
            run_ok(
                Command::new(&keygen)
                    .args(["-q", "-s"])
                    .arg(&ca)
                    .args(["-I", id, "-n", "u", "-z", &serial.to_string()])
                    .arg(format!("{}.pub", key.display())),
            );
            let cert = format!("{}-cert.pub", key.display());
            let out = run_ok(Command::new(&keygen).args(["-L", "-f", &cert]));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.trim().strip_prefix(name))
                    .unwrap_or_else(|| panic!("no {name} in {text}"))
                    .trim()
                    .to_string()
            };
            let got_serial: u64 = field("Serial:").parse().unwrap();
            let got_id = field("Key ID:").trim_matches('"').to_string();
            assert_eq!((got_serial, got_id.as_str()), (serial, id));
            facts.push((blob_of(&users[i].1), got_serial, got_id));
        }
        let spec = dir.join("spec");
        let hashed = blob_of(&users[1].1);
        let hash_line = format!(
            "hash: SHA256:{}",
            PublicKey::from_blob(&hashed)
                .unwrap()
                .fingerprint()
                .trim_start_matches("SHA256:")
        );
        std::fs::write(
            &spec,
            format!(
                "serial: 7\nserial: 10-20\nid: alice\n{}",
                (1000..=1040)
                    .step_by(2)
                    .map(|s| format!("serial: {s}\n"))
                    .collect::<String>()
            ),
        )
        .unwrap();
        let krl_path = dir.join("krl");
        run_ok(
            Command::new(&keygen)
                .args(["-q", "-k", "-f"])
                .arg(&krl_path)
                .arg("-s")
                .arg(&ca_pub)
                .arg(&spec),
        );
        // Plain keys: one as a key line, one by SHA-256 hash (-u updates).
        let keys_spec = dir.join("keys");
        std::fs::write(&keys_spec, format!("{}\n{hash_line}\n", users[0].1)).unwrap();
        run_ok(
            Command::new(&keygen)
                .args(["-q", "-k", "-u", "-f"])
                .arg(&krl_path)
                .arg(&keys_spec),
        );
        let krl = Krl::parse(&std::fs::read(&krl_path).unwrap()).unwrap();
        // Every other serial from 1000 to 1040: ssh-keygen writes a bitmap.
        assert!(krl
            .certs
            .iter()
            .any(|c| c.bitmaps.iter().any(|(_, b)| b.len() > 1)));
        let ca_blob = blob_of(&ca_line);
        let other = blob_of(&other_ca_line);
        let check = |i: usize, ca: &[u8]| {
            let (blob, serial, id) = &facts[i];
            krl.is_revoked(
                blob,
                Some(&CertFacts {
                    ca_key_blob: ca,
                    serial: *serial,
                    key_id: id.as_bytes(),
                }),
            )
        };
        for i in 0..4 {
            assert!(check(i, &ca_blob), "certificate {i}");
        }
        // Every serial the bitmap spans, by the facts alone.
        for serial in 995..1045 {
            let facts = CertFacts {
                ca_key_blob: &ca_blob,
                serial,
                key_id: b"",
            };
            let want = (1000..=1040).contains(&serial) && serial % 2 == 0;
            assert_eq!(
                krl.is_revoked(&key(), Some(&facts)),
                want,
                "serial {serial}"
            );
        }
        // Serials and ids count for their CA only; the revoked plain keys
        // stay revoked under any CA.
        assert!(check(0, &other) && check(1, &other));
        assert!(!check(2, &other) && !check(3, &other));
        assert!(krl.is_revoked(&facts[0].0, None) && krl.is_revoked(&facts[1].0, None));
        assert!(!krl.is_revoked(&facts[2].0, None) && !krl.is_revoked(&facts[3].0, None));
        // Revoking the CA key revokes its certificates.
        std::fs::write(&keys_spec, format!("{}\n", ca_line)).unwrap();
        run_ok(
            Command::new(&keygen)
                .args(["-q", "-k", "-u", "-f"])
                .arg(&krl_path)
                .arg(&keys_spec),
        );
        let krl = Krl::parse(&std::fs::read(&krl_path).unwrap()).unwrap();
        let blob = &facts[3].0;
        assert!(krl.is_revoked(
            blob,
            Some(&CertFacts {
                ca_key_blob: &ca_blob,
                serial: 5000,
                key_id: b"new"
            })
        ));
        assert!(!krl.is_revoked(
            blob,
            Some(&CertFacts {
                ca_key_blob: &other,
                serial: 5000,
                key_id: b"new"
            })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut v = header(b"");
            v.extend_from_slice(&tail);
            let _ = Krl::parse(&v);
        }

        #[test]
        fn mutated_krls_never_panic(at in 0usize..200, byte in any::<u8>()) {
            let mut v = header(b"c");
            let mut s = Vec::new();
            s.put_string(&[7u8; 32]);
            section(&mut v, SECTION_FINGERPRINT_SHA256, &s);
            let mut ids = Vec::new();
            ids.put_string(b"id");
            section(&mut v, SECTION_CERTIFICATES, &cert_body(b"", &[(CERT_KEY_ID, ids), (CERT_SERIAL_RANGE, [1u64, 2].iter().flat_map(|s| s.to_be_bytes()).collect())]));
            let i = at % v.len();
            v[i] = byte;
            if let Ok(krl) = Krl::parse(&v) {
                let _ = krl.is_revoked(&[1, 2, 3], Some(&CertFacts { ca_key_blob: b"", serial: 1, key_id: b"id" }));
            }
        }
    }
}
