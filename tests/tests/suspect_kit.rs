//! What the suspicion tests (suspicion.rs, and loaded.rs in a test binary
//! of its own) share: client configurations with ressh's defaults, the
//! ticker, and ressh's counts of reconnects on suspicion.

use std::path::PathBuf;

use crate::common::*;

/// `name`'s value as a number, else `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// An ssh_config for the lab's user with ressh's defaults, to resshd
/// through `port` of 198.18.0.1 (its own, or a relay's).
pub fn default_config(lab: &Lab, name: &str, port: u16) -> PathBuf {
    config_with(lab, name, port, "LogLevel VERBOSE\n")
}

/// [`default_config`] with `extra` lines instead of `LogLevel VERBOSE`.
pub fn config_with(lab: &Lab, name: &str, port: u16, extra: &str) -> PathBuf {
    let path = lab.dir.join(name);
    write_client_config(
        &path,
        &lab.user().name,
        &lab.login.key,
        &lab.known_hosts,
        "198.18.0.1",
        port,
        &format!("{extra}HostKeyAlias 198.18.0.1\n"),
    );
    path
}

/// Checks ressh's counts at exit (-v): `n` reconnects on suspicion, all
/// switched to the new connection.
pub fn check_counts(client: &Client, n: usize) {
    let want = format!("path suspicions: {n} reconnects ({n} switched");
    let err = client.stderr();
    assert!(
        err.lines().any(|l| l.starts_with(&want)),
        "ressh's counts do not say {want:?}:\n{err}"
    );
}

/// A numbered line every 100 ms until `stop` exists, then `END n`.
pub fn ticker(stop: &std::path::Path) -> String {
    format!(
        "i=0; while [ ! -e {} ]; do echo $i; i=$((i+1)); sleep 0.1; done; echo END $i",
        sq(&stop.to_string_lossy())
    )
}

/// The line of ressh's counts at exit (-v).
pub fn counts_line(client: &Client) -> String {
    client
        .stderr()
        .lines()
        .find(|l| l.starts_with("path suspicions: "))
        .unwrap_or_default()
        .to_string()
}
