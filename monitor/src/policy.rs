//! What the monitor derives from the effective [`Settings`] for its
//! workers: the protocol configuration, the banner, and list forms.

use std::io::Read;
use std::time::Duration;

use ressh_ipc::permit::{HostPattern, HostPort, Permit, Permits, PortPattern};

use crate::config::{PermitList, Settings};

/// The protocol engine's configuration for a connection.
pub fn proto_config(s: &Settings) -> ressh_proto::Config {
    let mut c = ressh_proto::Config {
        ciphers: s.ciphers.clone(),
        macs: s.macs.clone(),
        kex: s.kex_algorithms.clone(),
        host_key_algs: s.host_key_algorithms.clone(),
        compression: ressh_proto::zlib::offer(false, s.compression),
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
    c.window_max = u32::try_from(s.channel_window_max).unwrap_or(u32::MAX);
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

/// What the session worker enforces for PermitOpen (or PermitListen) and
/// the key's permitopen= (or permitlisten=): both lists, each of which must
/// allow a destination, as in OpenSSH. The configuration's `none` is an
/// empty list (nothing); a key without the option does not restrict.
pub fn permits(config: &PermitList, key: &[HostPort]) -> Permits {
    let admin = match config {
        PermitList::Any => Permit::Any,
        PermitList::None => Permit::Only(Vec::new()),
        PermitList::List(l) => Permit::Only(
            l.iter()
                .map(|hp| HostPort {
                    host: HostPattern::new(&hp.host),
                    port: hp.port.map_or(PortPattern::Any, PortPattern::Port),
                })
                .collect(),
        ),
    };
    let key = if key.is_empty() {
        Permit::Any
    } else {
        Permit::Only(key.to_vec())
    };
    Permits { admin, key }
}

/// ChrootDirectory for a user as sshd expands it: a leading `~`, then
/// `%%`, `%h` (home), `%u` (name), `%U` (uid).
pub fn chroot_dir(template: &str, user: &nix::unistd::User) -> Result<String, String> {
    let home = user.dir.to_string_lossy();
    let t = ressh_compat::expand::tilde_expand(template, Some(&user.dir))?;
    let uid = user.uid.as_raw().to_string();
    ressh_compat::expand::percent_expand(&t, &[('h', &home), ('u', &user.name), ('U', &uid)])
        .map_err(|e| e.to_string())
}

/// sshd's `safely_chroot` checks, by root before anything runs in the
/// chroot: an absolute path whose every component (`/`, `/srv/`,
/// `/srv/jail`) is a directory owned by root and writable by nobody else.
/// The error is sshd's fatal message.
pub fn check_chroot(path: &str) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if !path.starts_with('/') {
        return Err("chroot path does not begin at root".into());
    }
    if path.len() >= libc::PATH_MAX as usize {
        return Err("chroot path too long".into());
    }
    let mut ends: Vec<usize> = path.match_indices('/').map(|(i, _)| i + 1).collect();
    if ends.last() != Some(&path.len()) {
        ends.push(path.len());
    }
    for end in ends {
        let component = &path[..end];
        let last = end == path.len();
        let what = if last { "" } else { "component " };
        let st = std::fs::metadata(component)
            .map_err(|e| format!("safely_chroot: stat(\"{component}\"): {e}"))?;
        if st.uid() != 0 || st.mode() & 0o022 != 0 {
            return Err(format!(
                "bad ownership or modes for chroot directory {what}\"{component}\""
            ));
        }
        if !st.is_dir() {
            return Err(format!(
                "chroot path {what}\"{component}\" is not a directory"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authkeys;
    use crate::config::Config;

    /// The PermitOpen and PermitListen the session worker gets for a
    /// configuration and an authorized_keys line with `key_options`,
    /// parsed as resshd parses them.
    fn permits_for(config: &str, key_options: &str) -> (Permits, Permits) {
        let s = Config::parse_str(
            config,
            "test.conf",
            std::path::Path::new("/nonexistent"),
            &[],
        )
        .unwrap_or_else(|e| panic!("{config}: {e}"))
        .global();
        let line = format!(
            "{key_options} ssh-ed25519 \
             AAAAC3NzaC1lZDI1NTE5AAAAIFyF8y3kHHWSqAPQAGk7SnVNj1sDWbhyvLXWhn2Ea0Yy c"
        );
        let o = authkeys::parse_line(line.trim_start())
            .unwrap_or_else(|e| panic!("{line}: {e}"))
            .expect("a key line")
            .options;
        (
            permits(&s.permit_open, &o.permitopen),
            permits(&s.permit_listen, &o.permitlisten),
        )
    }

    fn open(config: &str, key_options: &str) -> Permits {
        permits_for(config, key_options).0
    }

    fn listen(config: &str, key_options: &str) -> Permits {
        permits_for(config, key_options).1
    }

    #[test]
    fn permitopen_none_and_a_key_permitopen_allow_nothing() {
        // Issue 13, hole 3: this allowed every destination.
        let p = open("PermitOpen none", r#"permitopen="127.0.0.1:10""#);
        assert_eq!(p.admin, Permit::Only(Vec::new()));
        for (h, port) in [("127.0.0.1", 10), ("127.0.0.1", 22), ("example.org", 80)] {
            assert!(!p.allows(h, port), "{h}:{port}");
        }
        assert!(!open("PermitOpen none", "").allows("127.0.0.1", 10));
    }

    #[test]
    fn permitopen_needs_both_lists() {
        // Disjoint: nothing.
        let p = open("PermitOpen a:1", r#"permitopen="b:2""#);
        assert!(!p.allows("a", 1));
        assert!(!p.allows("b", 2));
        // Both name it: allowed, and only it.
        let p = open("PermitOpen a:1 b:2", r#"permitopen="b:2""#);
        assert!(p.allows("b", 2));
        assert!(!p.allows("a", 1));
        // any + key: the key's list alone.
        let p = open("PermitOpen any", r#"permitopen="b:2",permitopen="c:*""#);
        assert!(p.allows("b", 2));
        assert!(p.allows("c", 9));
        assert!(!p.allows("a", 1));
        assert!(!p.allows("b", 3));
        // A list + no key option: the list alone.
        let p = open("PermitOpen a:1", "");
        assert!(p.allows("a", 1));
        assert!(!p.allows("a", 2));
        // Default (any) and no option: anything.
        assert!(open("", "").allows("anything", 1));
        // A wildcard configuration narrowed by the key.
        let p = open("PermitOpen *:*", r#"permitopen="localhost:22""#);
        assert!(p.allows("localhost", 22));
        assert!(!p.allows("localhost", 23));
        assert!(!p.allows("127.0.0.1", 22));
    }

    #[test]
    fn permitopen_entries_are_compared_parsed() {
        // `[::1]:22` in one list and `::1` port 22 asked for; other
        // spellings of the same address; names case-insensitively.
        let p = open(
            "PermitOpen [::1]:22 DB.example.org:5432",
            r#"permitopen="[0::1]:22""#,
        );
        assert!(p.allows("::1", 22));
        assert!(p.allows("0:0:0:0:0:0:0:1", 22));
        assert!(!p.allows("::1", 5432));
        assert!(!p.allows("::2", 22));
        let p = open(
            "PermitOpen DB.example.org:5432",
            r#"permitopen="db.EXAMPLE.org:5432""#,
        );
        assert!(p.allows("db.example.org", 5432));
        assert!(p.allows("DB.EXAMPLE.ORG", 5432));
        // A service name is its port.
        let p = open("PermitOpen localhost:22", r#"permitopen="localhost:ssh""#);
        assert!(p.allows("localhost", 22));
    }

    #[test]
    fn permitlisten_is_narrowed_by_the_key() {
        let p = listen("PermitListen none", r#"permitlisten="8080""#);
        assert!(!p.allows("localhost", 8080));
        assert!(!p.allows("", 8080));
        let p = listen("PermitListen 8080", r#"permitlisten="9090""#);
        assert!(!p.allows("localhost", 8080));
        assert!(!p.allows("localhost", 9090));
        // A bare port is any listen address, in the configuration and in the
        // key (OpenSSH's `*:port`).
        let p = listen("PermitListen 8080", r#"permitlisten="localhost:8080""#);
        assert!(p.allows("localhost", 8080));
        assert!(!p.allows("0.0.0.0", 8080));
        assert!(!p.allows("localhost", 8081));
        let p = listen("PermitListen localhost:8080", r#"permitlisten="8080""#);
        assert!(p.allows("localhost", 8080));
        assert!(!p.allows("", 8080));
        // `localhost` is a name: it is not 127.0.0.1 (as in OpenSSH).
        let p = listen("PermitListen 127.0.0.1:8080", "");
        assert!(p.allows("127.0.0.1", 8080));
        assert!(!p.allows("localhost", 8080));
        // permitlisten= does not touch PermitOpen and the other way round.
        let (o, l) = permits_for("PermitOpen none", r#"permitlisten="8080""#);
        assert!(!o.allows("localhost", 8080));
        assert!(l.allows("localhost", 8080));
    }

    #[test]
    fn chroot_tokens() {
        let u = nix::unistd::User::from_name("root").unwrap().unwrap();
        assert_eq!(
            chroot_dir("/srv/%u/%U%%/%h", &u).unwrap(),
            "/srv/root/0%//root"
        );
        assert_eq!(chroot_dir("~/jail", &u).unwrap(), "/root/jail");
        assert!(chroot_dir("/srv/%x", &u).is_err());
    }

    /// sshd's messages, the component named (with its slash) when it is
    /// not the last one.
    #[test]
    fn chroot_checks() {
        assert_eq!(check_chroot("/"), Ok(()));
        assert_eq!(check_chroot("/usr/lib"), Ok(()));
        assert_eq!(
            check_chroot("/tmp"),
            Err("bad ownership or modes for chroot directory \"/tmp\"".into())
        );
        assert_eq!(
            check_chroot("/tmp/x/y"),
            Err("bad ownership or modes for chroot directory component \"/tmp/\"".into())
        );
        assert_eq!(
            check_chroot("/etc/passwd"),
            Err("chroot path \"/etc/passwd\" is not a directory".into())
        );
        assert!(check_chroot("srv")
            .unwrap_err()
            .contains("does not begin at root"));
        assert!(check_chroot("/nonexistent-ressh/x")
            .unwrap_err()
            .contains("stat(\"/nonexistent-ressh/\")"));
    }
}
