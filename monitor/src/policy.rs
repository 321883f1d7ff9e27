//! What the monitor derives from the effective [`Settings`] for its
//! workers: the protocol configuration, the banner, and list forms.

use std::io::Read;
use std::time::Duration;

use crate::config::{PermitList, Settings};

/// The protocol engine's configuration for a connection.
pub fn proto_config(s: &Settings) -> ressh_proto::Config {
    let mut c = ressh_proto::Config {
        ciphers: s.ciphers.clone(),
        macs: s.macs.clone(),
        kex: s.kex_algorithms.clone(),
        host_key_algs: s.host_key_algorithms.clone(),
        ..Default::default()
    };
    if s.rekey_limit > 0 {
        c.rekey_bytes = s.rekey_limit;
    }
    if s.rekey_interval > Duration::ZERO {
        c.rekey_interval = s.rekey_interval;
    }
    c.auth_methods = auth_methods(s);
    c.detach_timeout = u32::try_from(s.detach_timeout.as_secs()).unwrap_or(u32::MAX);
    c.resilience_buffer = u32::try_from(s.resilience_buffer_size).unwrap_or(u32::MAX);
    c
}

/// The user-auth methods offered: publickey, and with UsePAM password and
/// keyboard-interactive (each as far as enabled).
pub fn auth_methods(s: &Settings) -> Vec<String> {
    let mut m = Vec::new();
    if s.pubkey_authentication {
        m.push("publickey".to_string());
    }
    if s.use_pam && s.password_authentication {
        m.push("password".to_string());
    }
    if s.use_pam && s.kbd_interactive_authentication {
        m.push("keyboard-interactive".to_string());
    }
    m
}

/// The Banner file's text, read as root, bounded like OpenSSH (256 KiB).
pub fn banner_text(s: &Settings) -> Option<String> {
    let path = s.banner.as_ref()?;
    let f = std::fs::File::open(path).ok()?;
    let mut buf = Vec::new();
    f.take(256 * 1024).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// PermitOpen / PermitListen as the session worker reads them: empty for
/// any, `["none"]` for nothing, else `host:port` entries (`*` port: any).
pub fn permit_list(p: &PermitList) -> Vec<String> {
    match p {
        PermitList::Any => Vec::new(),
        PermitList::None => vec!["none".to_string()],
        PermitList::List(l) => l
            .iter()
            .map(|hp| match hp.port {
                Some(port) => format!("{}:{port}", hp.host),
                None => format!("{}:*", hp.host),
            })
            .collect(),
    }
}

/// Where Debian's sftp server lives (openssh-sftp-server).
pub const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// `internal-sftp [args]` (sshd's in-process sftp server) as the external
/// sftp server with the same arguments: resshd has no in-process server,
/// and without ChrootDirectory (which resshd refuses) the two behave the
/// same. Any other command is returned as it is.
pub fn external_sftp(command: &str) -> String {
    match command.strip_prefix("internal-sftp") {
        Some("") => SFTP_SERVER.to_string(),
        Some(rest) if rest.starts_with([' ', '\t']) => format!("{SFTP_SERVER}{rest}"),
        _ => command.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_sftp_runs_the_sftp_server() {
        assert_eq!(external_sftp("internal-sftp"), SFTP_SERVER);
        assert_eq!(
            external_sftp("internal-sftp -l INFO"),
            format!("{SFTP_SERVER} -l INFO")
        );
        assert_eq!(external_sftp("internal-sftpx"), "internal-sftpx");
        assert_eq!(external_sftp("/bin/true"), "/bin/true");
    }
}
