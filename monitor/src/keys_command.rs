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

use crate::authkeys::{self, AuthorizedKey, PeerInfo};
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

/// Runs the command for `user`'s `key` and looks the key up in its
/// output: Some(line) when it lists the key (not expired, `from=`
/// admitting the peer). `run_as` is AuthorizedKeysCommandUser unexpanded;
/// `timeout` at most [`TIMEOUT`]. Everything worth logging is returned.
#[allow(clippy::too_many_arguments)]
pub fn find_key(
    command: &str,
    run_as: &str,
    user: &User,
    key: &OfferedKey,
    conn_id: &str,
    peer: &PeerInfo,
    now_unix: i64,
    timeout: Duration,
) -> (Option<AuthorizedKey>, Vec<String>) {
    let fail = |why: String| (None, vec![why]);
    let run_as = match percent_expand(run_as, &[('u', user.name.as_str())]) {
        Ok(n) => n,
        Err(e) => return fail(format!("AuthorizedKeysCommandUser: {e}")),
    };
    let runner = match User::from_name(&run_as) {
        Ok(Some(u)) => u,
        Ok(None) => return fail(format!("AuthorizedKeysCommandUser \"{run_as}\" not found")),
        Err(e) => {
            return fail(format!(
                "AuthorizedKeysCommandUser \"{run_as}\" not found: {e}"
            ))
        }
    };
    let av = match argv(command, user, key, conn_id) {
        Ok(av) => av,
        Err(e) => return fail(e),
    };
    let limits = Limits {
        timeout: timeout.min(TIMEOUT),
        max_output: MAX_OUTPUT,
        max_line: authkeys::MAX_LINE_LEN,
    };
    match command::run(TAG, &av, &runner, &limits) {
        Ok(out) => authkeys::find_key_in_output(&out, TAG, key, &user.name, peer, now_unix),
        Err(e) => fail(e),
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
}
