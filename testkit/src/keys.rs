//! Key generation with the system's `ssh-keygen`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{fs, io};

use crate::cmd::{require_cmd, run_ok};

/// Generates a key pair with `ssh-keygen` in `dir` and returns the private key's path
/// and the public key's OpenSSH line (`"ssh-ed25519 AAAA... ressh-test"`, no newline).
///
/// `kind` is `ed25519`, `rsa` or `ecdsa`, optionally with a size: `rsa-2048`,
/// `ecdsa-384`. An empty `passphrase` leaves the key unencrypted. The file is named
/// `id_<kind>`, or `id_<kind>_<n>` if that is taken. Panics on failure.
pub fn ssh_keygen(dir: &Path, kind: &str, passphrase: &str) -> (PathBuf, String) {
    let (ty, bits) = match kind.split_once('-') {
        Some((ty, bits)) => (ty, Some(bits)),
        None => (kind, None),
    };
    assert!(
        matches!(ty, "ed25519" | "rsa" | "ecdsa"),
        "ssh_keygen: unknown key kind {kind:?} (ed25519, rsa, ecdsa, rsa-BITS, ecdsa-BITS)"
    );
    let private = (1..)
        .map(|n| match n {
            1 => dir.join(format!("id_{kind}")),
            n => dir.join(format!("id_{kind}_{n}")),
        })
        .find(|p| !p.exists() && !pub_path(p).exists())
        .expect("a free file name");
    let mut cmd = Command::new(require_cmd("ssh-keygen"));
    cmd.args(["-q", "-t", ty, "-N", passphrase, "-C", "ressh-test", "-f"])
        .arg(&private);
    if let Some(bits) = bits {
        cmd.args(["-b", bits]);
    }
    run_ok(&mut cmd);
    let line = read_pub(&pub_path(&private))
        .unwrap_or_else(|e| panic!("ssh-keygen wrote no {}: {e}", pub_path(&private).display()));
    (private, line)
}

/// Certifies the public key of `private` (its `.pub`) with the CA private
/// key `ca` by `ssh-keygen -s`, adding `args` (`-I id`, `-n principals`,
/// `-V validity`, `-O option`, `-h` for a host certificate, `-z serial`,
/// `-t rsa-sha2-256` for an RSA CA's signature algorithm ...). Returns the
/// certificate's path (`<private>-cert.pub`) and its line. Panics on failure.
pub fn ssh_keygen_sign(ca: &Path, private: &Path, args: &[&str]) -> (PathBuf, String) {
    let mut cmd = Command::new(require_cmd("ssh-keygen"));
    cmd.args(["-q", "-s"])
        .arg(ca)
        .args(args)
        .arg(pub_path(private));
    run_ok(&mut cmd);
    let mut cert = private.as_os_str().to_owned();
    cert.push("-cert.pub");
    let cert = PathBuf::from(cert);
    let line =
        read_pub(&cert).unwrap_or_else(|e| panic!("ssh-keygen wrote no {}: {e}", cert.display()));
    (cert, line)
}

/// `<private>.pub`.
pub(crate) fn pub_path(private: &Path) -> PathBuf {
    let mut p = private.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// The first line of a `.pub` file, without its newline.
pub(crate) fn read_pub(path: &Path) -> io::Result<String> {
    Ok(fs::read_to_string(path)?.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TempDir;

    #[test]
    fn generates_each_kind() {
        let dir = TempDir::new("keys");
        for (kind, prefix) in [
            ("ed25519", "ssh-ed25519 "),
            ("ecdsa", "ecdsa-sha2-nistp256 "),
            ("ecdsa-384", "ecdsa-sha2-nistp384 "),
            ("rsa-2048", "ssh-rsa "),
        ] {
            let (private, line) = ssh_keygen(dir.path(), kind, "");
            assert!(private.exists(), "{kind}");
            assert!(line.starts_with(prefix), "{kind}: {line}");
            assert!(line.ends_with(" ressh-test"), "{kind}: {line}");
        }
        // Same kind again gets a new file; a passphrase encrypts it.
        let (again, _) = ssh_keygen(dir.path(), "ed25519", "secret");
        assert!(again.ends_with("id_ed25519_2"));
        let out = crate::run(
            Command::new(require_cmd("ssh-keygen"))
                .args(["-y", "-P", "wrong", "-f"])
                .arg(&again),
        );
        assert!(!out.status.success(), "the passphrase must be required");
    }
}
