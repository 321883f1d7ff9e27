//! AuthorizedKeysCommand and AuthorizedPrincipalsCommand.
//!
//! AuthorizedKeysCommand, as OpenSSH 9.2's `user_key_command_allowed2()`
//! (auth2-pubkey.c): tried after the AuthorizedKeysFile files found no
//! match; run by the monitor through [`crate::command`] as
//! AuthorizedKeysCommandUser; its output read exactly as an
//! authorized_keys file ([`crate::authkeys::find_key_in_output`]), options
//! included.
//!
//! The command line is split as sshd splits it (`argv_split` without
//! comments; `#` is an ordinary character). In every argument but the first
//! these tokens are expanded: `%%` a percent sign, `%C` the connection
//! ("local-address local-port remote-address remote-port"), `%D` the
//! routing domain (always empty), `%f` the key's SHA256 fingerprint (a
//! certificate's: its key's), `%h` the user's home directory, `%k` the key
//! (or certificate) in base64, `%t` its type, `%U` the user's uid, `%u` the
//! user name; any other token makes the command
//! unusable. A command without arguments gets the user name as its only
//! argument. AuthorizedKeysCommandUser may contain `%u`.
//!
//! AuthorizedPrincipalsCommand, as `match_principals_command()`: run for a
//! certificate signed by a TrustedUserCAKeys CA when AuthorizedPrincipalsFile
//! did not name one of its principals; its output read as a principals
//! file (a principal per line, with options). Its tokens besides `%%`, `%C`,
//! `%D`, `%h`, `%U` and `%u`: `%F` the CA key's SHA256 fingerprint, `%f` the
//! certified key's, `%i` the key id, `%K` the CA key in base64, `%k` the
//! certificate in base64, `%s` the serial, `%T` the CA key's type, `%t` the
//! certificate's type. It gets no implicit argument. Run as
//! AuthorizedPrincipalsCommandUser, with the same bounds.
//!
//! Bounds (sshd has none): the command must finish within [`TIMEOUT`]
//! (less if LoginGraceTime ends first), print at most [`MAX_OUTPUT`] bytes
//! and lines of at most [`crate::authkeys::MAX_LINE_LEN`] bytes; otherwise
//! its process group is killed and its output ignored. Its output is also
//! ignored when it exits with a status other than 0, as in sshd.

use std::time::Duration;

use nix::unistd::User;
use ressh_compat::expand::percent_expand;
use ressh_compat::misc::split_args;
use ressh_proto::conn::OfferedKey;

use ressh_proto::cert::Certificate;

use crate::authkeys::{self, AuthorizedKey, KeyOptions, PeerInfo};
use crate::command::{self, Limits};

/// The longest an AuthorizedKeysCommand may run.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// The most output read from it.
pub const MAX_OUTPUT: usize = 4 << 20;

const TAG: &str = "AuthorizedKeysCommand";

/// The command's argument vector for `user` and `key`; `conn_id` is `%C`.
pub fn argv(
    command: &str,
    user: &User,
    key: &OfferedKey,
    conn_id: &str,
) -> Result<Vec<String>, String> {
    let mut av = split_args(command, false)
        .map_err(|_| format!("{TAG} \"{command}\" contains invalid quotes"))?;
    if av.is_empty() {
        return Err(format!("{TAG} \"{command}\" yielded no arguments"));
    }
    if av.len() == 1 {
        av.push(user.name.clone());
        return Ok(av);
    }
    let home = user.dir.to_string_lossy();
    let uid = user.uid.as_raw().to_string();
    // As sshd: a certificate's type and blob, its key's fingerprint.
    let fingerprint = key.key().fingerprint();
    let base64 = openssl::base64::encode_block(&key.to_blob());
    let type_name = match key {
        OfferedKey::Plain(k) => k.key_type_name(),
        OfferedKey::Cert(c) => c.type_name(),
    };
    let tokens = [
        ('C', conn_id),
        ('D', ""),
        ('U', uid.as_str()),
        ('u', user.name.as_str()),
        ('h', &home),
        ('t', type_name),
        ('f', fingerprint.as_str()),
        ('k', base64.as_str()),
    ];
    for a in av.iter_mut().skip(1) {
        *a = percent_expand(a, &tokens).map_err(|e| format!("{TAG}: {e}"))?;
    }
    Ok(av)
}

/// Runs `av` as `run_as` (the command user's setting, `%u` unexpanded),
/// within `timeout` (at most [`TIMEOUT`]) and the output bounds; `tag`
/// names the command in what is logged.
fn run_as(
    tag: &str,
    av: &[String],
    run_as: &str,
    user: &User,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let run_as = percent_expand(run_as, &[('u', user.name.as_str())])
        .map_err(|e| format!("{tag}User: {e}"))?;
    let runner = match User::from_name(&run_as) {
        Ok(Some(u)) => u,
        Ok(None) => return Err(format!("{tag}User \"{run_as}\" not found")),
        Err(e) => return Err(format!("{tag}User \"{run_as}\" not found: {e}")),
    };
    let limits = Limits {
        timeout: timeout.min(TIMEOUT),
        max_output: MAX_OUTPUT,
        max_line: authkeys::MAX_LINE_LEN,
    };
    command::run(tag, av, &runner, &limits)
}

/// Runs the command for `user`'s `key` and looks the key up in its
/// output: Some(line) when it lists the key (not expired, `from=`
/// admitting the peer). `run_as` is AuthorizedKeysCommandUser unexpanded;
/// `timeout` at most [`TIMEOUT`]. Everything worth logging is returned.
#[allow(clippy::too_many_arguments)]
pub fn find_key(
    command: &str,
    run_as_user: &str,
    user: &User,
    key: &OfferedKey,
    conn_id: &str,
    peer: &PeerInfo,
    now_unix: i64,
    timeout: Duration,
) -> (Option<AuthorizedKey>, Vec<String>) {
    let out = argv(command, user, key, conn_id)
        .and_then(|av| run_as(TAG, &av, run_as_user, user, timeout));
    match out {
        Ok(out) => authkeys::find_key_in_output(&out, TAG, key, &user.name, peer, now_unix),
        Err(e) => (None, vec![e]),
    }
}

const PRINCIPALS_TAG: &str = "AuthorizedPrincipalsCommand";

/// The principals command's argument vector for `user` and `cert`.
pub fn principals_argv(
    command: &str,
    user: &User,
    cert: &Certificate,
    conn_id: &str,
) -> Result<Vec<String>, String> {
    let tag = PRINCIPALS_TAG;
    let mut av = split_args(command, false)
        .map_err(|_| format!("{tag} \"{command}\" contains invalid quotes"))?;
    if av.is_empty() {
        return Err(format!("{tag} \"{command}\" yielded no arguments"));
    }
    let home = user.dir.to_string_lossy();
    let uid = user.uid.as_raw().to_string();
    let serial = cert.serial.to_string();
    let key_fp = cert.key.fingerprint();
    let ca_fp = cert.signature_key.fingerprint();
    let cert_text = openssl::base64::encode_block(cert.blob());
    let ca_text = openssl::base64::encode_block(&cert.signature_key.to_blob());
    let tokens = [
        ('C', conn_id),
        ('D', ""),
        ('U', uid.as_str()),
        ('u', user.name.as_str()),
        ('h', &home),
        ('t', cert.type_name()),
        ('T', cert.signature_key.key_type_name()),
        ('f', key_fp.as_str()),
        ('F', ca_fp.as_str()),
        ('k', cert_text.as_str()),
        ('K', ca_text.as_str()),
        ('i', cert.key_id.as_str()),
        ('s', serial.as_str()),
    ];
    for a in av.iter_mut().skip(1) {
        *a = percent_expand(a, &tokens).map_err(|e| format!("{tag}: {e}"))?;
    }
    Ok(av)
}

/// Runs the principals command for `user`'s certificate and looks for a
/// line naming one of its principals: Some(the line's options). As
/// [`find_key`] for the rest.
pub fn find_principal(
    command: &str,
    run_as_user: &str,
    user: &User,
    cert: &Certificate,
    conn_id: &str,
    timeout: Duration,
) -> (Option<KeyOptions>, Vec<String>) {
    let out = principals_argv(command, user, cert, conn_id)
        .and_then(|av| run_as(PRINCIPALS_TAG, &av, run_as_user, user, timeout));
    match out {
        Ok(out) => authkeys::find_principal_in_output(&out, PRINCIPALS_TAG, cert),
        Err(e) => (None, vec![e]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ressh_proto::keys::{KeyType, PrivateKey};

    fn root() -> User {
        User::from_uid(nix::unistd::Uid::from_raw(0))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn argv_as_sshd_builds_it() {
        let key = OfferedKey::Plain(PrivateKey::generate(KeyType::Ed25519).unwrap().public_key());
        let u = root();
        // Without arguments: the user name.
        assert_eq!(
            argv("/bin/keys", &u, &key, "c").unwrap(),
            ["/bin/keys", "root"]
        );
        // The program itself is not expanded; '#' is no comment.
        assert_eq!(
            argv("/bin/%u 'a %u' b\\ c #%U %%%t", &u, &key, "1 2 3 4").unwrap(),
            ["/bin/%u", "a root", "b c", "#0", "%ssh-ed25519"]
        );
        assert_eq!(
            argv("/bin/k %C %D", &u, &key, "1 2 3 4").unwrap(),
            ["/bin/k", "1 2 3 4", ""]
        );
        assert!(argv("/bin/k \"open", &u, &key, "")
            .unwrap_err()
            .contains("invalid quotes"));
        assert!(argv("/bin/k %z", &u, &key, "").unwrap_err().contains("%z"));
        assert!(argv("/bin/k %", &u, &key, "").is_err());
        assert!(argv("   ", &u, &key, "")
            .unwrap_err()
            .contains("no arguments"));
    }

    /// The principals command's tokens, each as sshd expands it, made from
    /// a certificate stock ssh-keygen signed; no implicit user argument.
    #[test]
    fn principals_argv_as_sshd_builds_it() {
        let dir = ressh_testkit::TempDir::new("apc-argv");
        let (ca, _) = ressh_testkit::ssh_keygen(dir.path(), "ed25519", "");
        let (key, _) = ressh_testkit::ssh_keygen(dir.path(), "ecdsa", "");
        let (_, text) =
            ressh_testkit::ssh_keygen_sign(&ca, &key, &["-I", "id 7", "-z", "42", "-n", "alice"]);
        let cert = Certificate::from_openssh(&text).unwrap().0;
        let u = root();
        assert_eq!(
            principals_argv("/bin/p", &u, &cert, "c").unwrap(),
            ["/bin/p"]
        );
        let av = principals_argv("/bin/p %u %i %s %t %T %f %F %k %K %%", &u, &cert, "c").unwrap();
        assert_eq!(
            av[1..6],
            ["root", "id 7", "42", cert.type_name(), "ssh-ed25519"]
        );
        assert_eq!(av[6], cert.key.fingerprint());
        assert_eq!(av[7], cert.signature_key.fingerprint());
        assert_eq!(av[8], text.split_whitespace().nth(1).unwrap());
        assert_eq!(
            av[9],
            openssl::base64::encode_block(&cert.signature_key.to_blob())
        );
        assert_eq!(av[10], "%");
    }
}
