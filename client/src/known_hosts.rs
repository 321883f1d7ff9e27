//! known_hosts in OpenSSH's format: `[@marker] patterns keytype base64 [comment]`,
//! plain or hashed (`|1|salt|hmac-sha1`) host fields, `[host]:port` names,
//! `@revoked` keys, and `@cert-authority` lines (the CAs whose host
//! certificates are trusted for the hosts the line matches).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use openssl::base64;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use ressh_proto::keys::PublicKey;

use ressh_compat::pattern::match_hostname;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    None,
    Revoked,
    CertAuthority,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Hosts {
    Patterns(String),
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub marker: Marker,
    hosts: Hosts,
    pub key_type: String,
    pub blob: Vec<u8>,
    pub file: PathBuf,
    pub line: usize,
}

/// Where an entry came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The key is listed for this host.
    Known(Location),
    /// The key is marked @revoked.
    Revoked(Location),
    /// Another key of the same type is listed for this host.
    Changed(Location),
    /// Nothing about this key type for this host.
    New {
        /// Keys of other types are known for the host.
        other_types: bool,
    },
}

/// What known_hosts says of a host certificate's CA (the certificate's
/// own checks are the caller's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaVerdict {
    /// A @cert-authority line for this host names the CA.
    Trusted(Location),
    /// The certified key or the CA is marked @revoked.
    Revoked(Location),
    /// No @cert-authority line for this host names the CA.
    Unknown,
}

#[derive(Debug, Default)]
pub struct KnownHosts {
    pub entries: Vec<Entry>,
}

/// The names a host is looked up under: `host` for port 22, else `[host]:port`.
pub fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    let pkey = PKey::hmac(key).expect("HMAC key");
    let mut s = Signer::new(MessageDigest::sha1(), &pkey).expect("HMAC-SHA1");
    s.sign_oneshot_to_vec(data).expect("HMAC-SHA1")
}

/// The hashed host field for `name` with `salt`.
pub fn hash_name(name: &str, salt: &[u8]) -> String {
    format!(
        "|1|{}|{}",
        base64::encode_block(salt),
        base64::encode_block(&hmac_sha1(salt, name.as_bytes()))
    )
}

fn parse_line(line: &str) -> Option<(Marker, Hosts, String, Vec<u8>)> {
    let mut words = line.split_whitespace();
    let mut first = words.next()?;
    let marker = match first {
        "@revoked" => Marker::Revoked,
        "@cert-authority" => Marker::CertAuthority,
        m if m.starts_with('@') => return None,
        _ => Marker::None,
    };
    if marker != Marker::None {
        first = words.next()?;
    }
    let hosts = if let Some(rest) = first.strip_prefix("|1|") {
        let (salt, hash) = rest.split_once('|')?;
        Hosts::Hashed {
            salt: base64::decode_block(salt).ok()?,
            hash: base64::decode_block(hash).ok()?,
        }
    } else {
        Hosts::Patterns(first.to_string())
    };
    let key_type = words.next()?.to_string();
    let blob = base64::decode_block(words.next()?).ok()?;
    Some((marker, hosts, key_type, blob))
}

fn loc(e: &Entry) -> Location {
    Location {
        file: e.file.clone(),
        line: e.line,
    }
}

impl KnownHosts {
    /// Reads the files that exist; unreadable or malformed lines are skipped.
    pub fn load(files: &[PathBuf]) -> KnownHosts {
        let mut kh = KnownHosts::default();
        for f in files {
            let Ok(text) = fs::read_to_string(f) else {
                continue;
            };
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                match parse_line(line) {
                    Some((marker, hosts, key_type, blob)) => kh.entries.push(Entry {
                        marker,
                        hosts,
                        key_type,
                        blob,
                        file: f.clone(),
                        line: i + 1,
                    }),
                    None => {
                        crate::debug2!("{}:{}: unreadable known_hosts line", f.display(), i + 1)
                    }
                }
            }
        }
        kh
    }

    fn host_matches(e: &Entry, name: &str) -> bool {
        match &e.hosts {
            Hosts::Patterns(p) => match_hostname(name, p).is_match(),
            Hosts::Hashed { salt, hash } => &hmac_sha1(salt, name.as_bytes()) == hash,
        }
    }

    /// Entries that apply to `name`.
    fn for_host<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .iter()
            .filter(move |e| Self::host_matches(e, name))
    }

    /// The @revoked line of `key`, if any: a revoked key is refused
    /// whatever host it is listed for.
    fn revoked(&self, key: &PublicKey) -> Option<Location> {
        let blob = key.to_blob();
        self.entries
            .iter()
            .find(|e| e.marker == Marker::Revoked && e.blob == blob)
            .map(loc)
    }

    /// Judges `key` presented by the host known as `name`.
    pub fn check(&self, name: &str, key: &PublicKey) -> Verdict {
        let blob = key.to_blob();
        let ty = key.key_type_name();
        if let Some(l) = self.revoked(key) {
            return Verdict::Revoked(l);
        }
        let plain: Vec<&Entry> = self
            .for_host(name)
            .filter(|e| e.marker == Marker::None)
            .collect();
        if let Some(e) = plain.iter().find(|e| e.blob == blob) {
            return Verdict::Known(loc(e));
        }
        if let Some(e) = plain.iter().find(|e| e.key_type == ty) {
            return Verdict::Changed(loc(e));
        }
        Verdict::New {
            other_types: !plain.is_empty(),
        }
    }

    /// Judges the CA `ca` of a certificate for `key` presented by the host
    /// known as `name` (as ssh: the key or the CA @revoked refuses it; a
    /// @cert-authority line for the host naming the CA trusts it).
    pub fn check_ca(&self, name: &str, key: &PublicKey, ca: &PublicKey) -> CaVerdict {
        if let Some(l) = self.revoked(key).or_else(|| self.revoked(ca)) {
            return CaVerdict::Revoked(l);
        }
        let blob = ca.to_blob();
        match self
            .for_host(name)
            .find(|e| e.marker == Marker::CertAuthority && e.blob == blob)
        {
            Some(e) => CaVerdict::Trusted(loc(e)),
            None => CaVerdict::Unknown,
        }
    }

    /// Whether a @cert-authority line applies to `name` (ssh then prefers
    /// the certificate host key algorithms).
    pub fn has_ca(&self, name: &str) -> bool {
        self.for_host(name)
            .any(|e| e.marker == Marker::CertAuthority)
    }

    /// Key type names listed for `name` (to prefer them in the key exchange).
    pub fn known_types(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for e in self.for_host(name).filter(|e| e.marker == Marker::None) {
            if !v.contains(&e.key_type) {
                v.push(e.key_type.clone());
            }
        }
        v
    }
}

/// Appends `name key` to `file` (hashed if asked), creating the file 0600
/// and a missing parent directory 0700.
pub fn add(file: &Path, name: &str, key: &PublicKey, hash: bool) -> io::Result<()> {
    if let Some(dir) = file.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    let host_field = if hash {
        let mut salt = [0u8; 20];
        openssl::rand::rand_bytes(&mut salt).map_err(io::Error::other)?;
        hash_name(name, &salt)
    } else {
        name.to_string()
    };
    let mut line = String::new();
    if let Ok(old) = fs::read(file) {
        if !old.is_empty() && !old.ends_with(b"\n") {
            line.push('\n');
        }
    }
    line.push_str(&host_field);
    line.push(' ');
    line.push_str(key.to_openssh("").trim_end());
    line.push('\n');
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)?;
    f.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ressh_proto::keys::{KeyType, PrivateKey};

    fn tmp(name: &str) -> PathBuf {
        let mut b = [0u8; 8];
        openssl::rand::rand_bytes(&mut b).unwrap();
        let d = std::env::temp_dir().join(format!("ressh-kh-{}-{}", name, u64::from_le_bytes(b)));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn plain_hashed_ported_revoked_and_changed() {
        let d = tmp("a");
        let k1 = PrivateKey::generate(KeyType::Ed25519).unwrap().public_key();
        let k2 = PrivateKey::generate(KeyType::Ed25519).unwrap().public_key();
        let k3 = PrivateKey::generate(KeyType::EcdsaP256)
            .unwrap()
            .public_key();
        let f = d.join("known_hosts");
        let mut salt = [7u8; 20];
        salt[0] = 1;
        let text = format!(
            "# comment\n\
             host1,!bad.host1 {}\n\
             {} {}\n\
             [h3]:2222 {}\n\
             @revoked * {}\n\
             @cert-authority *.ca.example {}\n\
             garbage line\n",
            k1.to_openssh("c"),
            hash_name("[hashed]:2200", &salt),
            k1.to_openssh(""),
            k3.to_openssh(""),
            k2.to_openssh(""),
            k3.to_openssh(""),
        );
        fs::write(&f, text).unwrap();
        let kh = KnownHosts::load(&[f.clone(), d.join("missing")]);
        assert_eq!(kh.entries.len(), 5);
        assert!(matches!(
            kh.check("host1", &k1),
            Verdict::Known(Location { line: 2, .. })
        ));
        assert!(matches!(kh.check("HOST1", &k1), Verdict::Known(_)));
        assert!(matches!(kh.check("[hashed]:2200", &k1), Verdict::Known(_)));
        assert!(matches!(kh.check("hashed", &k1), Verdict::New { .. }));
        // k2 is revoked everywhere.
        assert!(matches!(
            kh.check("host1", &k2),
            Verdict::Revoked(Location { line: 5, .. })
        ));
        // A different ed25519 key for host1.
        let k4 = PrivateKey::generate(KeyType::Ed25519).unwrap().public_key();
        assert!(matches!(
            kh.check("host1", &k4),
            Verdict::Changed(Location { line: 2, .. })
        ));
        // Negation.
        assert!(matches!(kh.check("bad.host1", &k1), Verdict::New { .. }));
        // Port-qualified name and other types.
        assert!(matches!(kh.check("[h3]:2222", &k3), Verdict::Known(_)));
        assert_eq!(
            kh.check("[h3]:2222", &k4),
            Verdict::New { other_types: true }
        );
        assert!(matches!(kh.check("h3", &k3), Verdict::New { .. }));
        // A @cert-authority line is not a known key...
        assert_eq!(
            kh.check("x.ca.example", &k3),
            Verdict::New { other_types: false }
        );
        // ... but trusts its CA for the hosts it matches, and no other CA.
        assert!(kh.has_ca("x.ca.example") && !kh.has_ca("host1"));
        assert!(matches!(
            kh.check_ca("x.ca.example", &k4, &k3),
            CaVerdict::Trusted(Location { line: 6, .. })
        ));
        assert_eq!(kh.check_ca("host1", &k4, &k3), CaVerdict::Unknown);
        assert_eq!(kh.check_ca("x.ca.example", &k4, &k1), CaVerdict::Unknown);
        // A revoked certified key or a revoked CA refuses the certificate.
        assert!(matches!(
            kh.check_ca("x.ca.example", &k2, &k3),
            CaVerdict::Revoked(Location { line: 5, .. })
        ));
        assert!(matches!(
            kh.check_ca("x.ca.example", &k4, &k2),
            CaVerdict::Revoked(Location { line: 5, .. })
        ));
        assert_eq!(kh.known_types("[h3]:2222"), vec!["ecdsa-sha2-nistp256"]);
        // A hashed host field on a @cert-authority line.
        let f2 = d.join("global");
        fs::write(
            &f2,
            format!(
                "@cert-authority {} {}\n",
                hash_name("[ca.hashed]:2200", &salt),
                k1.to_openssh("")
            ),
        )
        .unwrap();
        let kh = KnownHosts::load(&[f, f2]);
        assert!(matches!(
            kh.check_ca("[ca.hashed]:2200", &k4, &k1),
            CaVerdict::Trusted(Location { line: 1, .. })
        ));
        assert_eq!(kh.check_ca("ca.hashed", &k4, &k1), CaVerdict::Unknown);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn add_plain_and_hashed() {
        let d = tmp("b");
        let f = d.join("sub/known_hosts");
        let k = PrivateKey::generate(KeyType::EcdsaP256)
            .unwrap()
            .public_key();
        add(&f, "[127.0.0.1]:2222", &k, false).unwrap();
        add(&f, "other", &k, true).unwrap();
        let text = fs::read_to_string(&f).unwrap();
        assert!(text.starts_with("[127.0.0.1]:2222 ecdsa-sha2-nistp256 "));
        assert!(text.lines().nth(1).unwrap().starts_with("|1|"));
        assert!(!text.contains("other"));
        let kh = KnownHosts::load(std::slice::from_ref(&f));
        assert!(matches!(
            kh.check("[127.0.0.1]:2222", &k),
            Verdict::Known(_)
        ));
        assert!(matches!(kh.check("other", &k), Verdict::Known(_)));
        // Stock ssh-keygen finds the hashed entries, with and without a port.
        add(&f, "[h.example]:2222", &k, true).unwrap();
        let keygen = ressh_testkit::require_cmd("ssh-keygen");
        for (name, line) in [("other", 2), ("[h.example]:2222", 3)] {
            let out = ressh_testkit::run_timeout(
                std::process::Command::new(&keygen)
                    .args(["-F", name, "-f"])
                    .arg(&f),
                std::time::Duration::from_secs(30),
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "ssh-keygen -F {name}: {text}");
            assert!(
                text.contains(&format!("# Host {name} found: line {line}")),
                "{text}"
            );
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(d.join("sub")).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(lookup_name("h", 22), "h");
        assert_eq!(lookup_name("h", 2222), "[h]:2222");
        fs::remove_dir_all(&d).unwrap();
    }
}
