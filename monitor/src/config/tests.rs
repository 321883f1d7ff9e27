//! Tests of the configuration parser, including comparisons with Debian's
//! sshd (`sshd -T`), which must be installed (openssh-server).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "ressh-config-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.0.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn parse(text: &str) -> Config {
    Config::parse_str(text, "test.conf", Path::new("/nonexistent-ressh-dir"), &[])
        .unwrap_or_else(|e| panic!("config failed to parse:\n{e}\n---\n{text}"))
}

fn parse_err(text: &str) -> String {
    match Config::parse_str(text, "test.conf", Path::new("/nonexistent-ressh-dir"), &[]) {
        Ok(_) => panic!("config parsed but should not:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn g(text: &str) -> Settings {
    parse(text).global()
}

fn ctx(
    user: Option<&str>,
    groups: &[&str],
    addr: Option<&str>,
    lport: Option<u16>,
) -> MatchContext {
    MatchContext {
        user: user.map(String::from),
        groups: groups.iter().map(|s| s.to_string()).collect(),
        host: addr.map(String::from),
        addr: addr.map(|a| a.parse().unwrap()),
        local_addr: Some("127.0.0.1".parse().unwrap()),
        local_port: lport,
        rdomain: None,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn defaults_are_sshds() {
    let s = g("");
    assert_eq!(s.ports, vec![22]);
    assert_eq!(s.address_family, AddressFamily::Any);
    assert_eq!(
        s.listen_addresses,
        vec![
            ListenAddress {
                host: "::".into(),
                port: 22
            },
            ListenAddress {
                host: "0.0.0.0".into(),
                port: 22
            }
        ]
    );
    assert_eq!(
        s.host_keys,
        vec![
            PathBuf::from("/etc/ressh/ssh_host_rsa_key"),
            PathBuf::from("/etc/ressh/ssh_host_ecdsa_key"),
            PathBuf::from("/etc/ressh/ssh_host_ed25519_key"),
        ]
    );
    assert_eq!(s.pid_file, Some(PathBuf::from("/run/resshd.pid")));
    assert_eq!(s.login_grace_time, secs(120));
    assert_eq!(s.permit_root_login, PermitRootLogin::ProhibitPassword);
    assert_eq!(s.max_auth_tries, 6);
    assert_eq!(s.max_sessions, 10);
    assert_eq!(
        s.max_startups,
        MaxStartups {
            start: 10,
            rate: 30,
            full: 100
        }
    );
    assert_eq!(s.client_alive_interval, Duration::ZERO);
    assert_eq!(s.client_alive_count_max, 3);
    assert!(s.strict_modes);
    assert!(s.password_authentication);
    assert!(s.pubkey_authentication);
    assert!(s.kbd_interactive_authentication);
    assert!(!s.permit_empty_passwords);
    assert_eq!(
        s.authorized_keys_files,
        vec![".ssh/authorized_keys", ".ssh/authorized_keys2"]
    );
    assert_eq!(s.banner, None);
    assert!(s.subsystems.is_empty());
    assert_eq!(s.log_level, LogLevel::Info);
    assert_eq!(s.syslog_facility, SyslogFacility::Auth);
    assert_eq!(s.allow_tcp_forwarding, Forwarding::Yes);
    assert_eq!(s.gateway_ports, GatewayPorts::No);
    assert_eq!(s.permit_open, PermitList::Any);
    assert_eq!(s.permit_listen, PermitList::Any);
    assert_eq!(s.stream_local_bind_mask, 0o177);
    assert_eq!(s.rekey_limit, 0);
    assert_eq!(s.rekey_interval, Duration::ZERO);
    assert_eq!(s.authentication_methods, None);
    assert_eq!(s.required_rsa_size, 1024);
    assert_eq!(s.privilege_separation_user, "resshd");
    assert_eq!(
        s.privilege_separation_directory,
        PathBuf::from("/run/resshd/empty")
    );
    assert_eq!(s.detach_timeout, secs(3600));
    assert_eq!(s.max_detached_sessions, 10);
    assert_eq!(s.detach_grace_time, secs(600));
    assert_eq!(s.resilience_buffer_size, 48 << 20);
    assert_eq!(s.channel_window_max, 32 << 20);
    let ciphers: Vec<&str> = ressh_proto::cipher::CIPHERS
        .iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(s.ciphers, ciphers);
    assert_eq!(s.host_key_algorithms, host_key_algs());
    assert_eq!(s.pubkey_accepted_algorithms, user_key_algs());
    assert!(s.allows_local_tcp_forwarding() && s.allows_agent_forwarding());
    assert!(parse("").warnings().is_empty());
}

#[test]
fn syntax_forms() {
    let s =
        g("# comment\n\n   \t\nport 2201\nPORT=2202\n  MaxAuthTries = 3\r\nMaxSessions\t4\x0c\n");
    assert_eq!(s.ports, vec![2201, 2202]);
    assert_eq!(s.max_auth_tries, 3);
    assert_eq!(s.max_sessions, 4);
    let s = g("Banner \"/etc/my banner\" # trailing comment\n");
    assert_eq!(s.banner, Some(PathBuf::from("/etc/my banner")));
    assert!(parse_err("Banner \"/etc/unterminated\n").contains("test.conf:1: invalid quotes"));
    assert!(parse_err("MaxSessions\n")
        .contains("test.conf:1: no argument after keyword \"MaxSessions\""));
    assert!(parse_err("MaxSessions 3 4\n").contains("extra arguments"));
    assert!(parse_err("MaxSessions # c\n").contains("MaxSessions missing argument"));
    let long = format!("Banner /{}\n", "x".repeat(70_000));
    assert!(parse_err(&long).contains("test.conf:1: line too long"));
}

#[test]
fn value_formats() {
    // Times.
    assert_eq!(g("LoginGraceTime 30").login_grace_time, secs(30));
    assert_eq!(g("LoginGraceTime 2m").login_grace_time, secs(120));
    assert_eq!(g("LoginGraceTime 1h30m").login_grace_time, secs(5400));
    assert_eq!(g("LoginGraceTime 1w").login_grace_time, secs(604800));
    assert_eq!(g("ClientAliveInterval 15s").client_alive_interval, secs(15));
    assert!(parse_err("LoginGraceTime 5x").contains("invalid time value"));
    assert!(parse_err("LoginGraceTime -5").contains("invalid time value"));
    // Booleans: yes/no only.
    assert!(!g("PasswordAuthentication no").password_authentication);
    assert!(g("PasswordAuthentication YES").password_authentication);
    for bad in ["true", "1", "on", "yess", "\"\""] {
        parse_err(&format!("PasswordAuthentication {bad}"));
    }
    // Integers.
    assert_eq!(g("MaxAuthTries 0").max_auth_tries, 0);
    assert!(parse_err("MaxAuthTries -1").contains("too small"));
    assert!(parse_err("MaxSessions 2147483648").contains("too large"));
    assert!(parse_err("MaxSessions 0x10").contains("invalid"));
    // MaxStartups.
    assert_eq!(
        g("MaxStartups 5:50:20").max_startups,
        MaxStartups {
            start: 5,
            rate: 50,
            full: 20
        }
    );
    assert_eq!(
        g("MaxStartups 7").max_startups,
        MaxStartups {
            start: 7,
            rate: 30,
            full: 7
        }
    );
    for bad in [
        "10:30",
        "10:30:5",
        "10:0:50",
        "10:101:50",
        "0",
        "a:b:c",
        "10:30:100x",
    ] {
        assert!(parse_err(&format!("MaxStartups {bad}")).contains("Invalid MaxStartups spec"));
    }
    assert_eq!(g("PerSourceMaxStartups 3").per_source_max_startups, Some(3));
    assert_eq!(g("PerSourceMaxStartups none").per_source_max_startups, None);
    let s = g("PerSourceNetBlockSize 24:56");
    assert_eq!(
        (
            s.per_source_net_block_size_v4,
            s.per_source_net_block_size_v6
        ),
        (24, 56)
    );
    parse_err("PerSourceNetBlockSize 33");
    // ProxyProtocolFrom: CIDR lists only, global only.
    assert_eq!(g("").proxy_protocol_from, None);
    assert_eq!(
        g("ProxyProtocolFrom 198.18.0.0/24,198.18.5.1").proxy_protocol_from,
        Some("198.18.0.0/24,198.18.5.1".to_string())
    );
    for bad in [
        "198.18.*",
        "!198.18.0.1",
        "198.18.0.1/24",
        "balancer.example",
    ] {
        assert!(parse_err(&format!("ProxyProtocolFrom {bad}")).contains("invalid address list"));
    }
    parse_err("Match Address 198.18.0.1\nProxyProtocolFrom 198.18.0.1");
    // PermitRootLogin.
    for (v, want) in [
        ("yes", PermitRootLogin::Yes),
        ("prohibit-password", PermitRootLogin::ProhibitPassword),
        ("without-password", PermitRootLogin::ProhibitPassword),
        ("forced-commands-only", PermitRootLogin::ForcedCommandsOnly),
        ("no", PermitRootLogin::No),
    ] {
        assert_eq!(g(&format!("PermitRootLogin {v}")).permit_root_login, want);
    }
    parse_err("PermitRootLogin maybe");
    // Forwarding.
    for (v, want) in [
        ("yes", Forwarding::Yes),
        ("all", Forwarding::Yes),
        ("no", Forwarding::No),
        ("local", Forwarding::Local),
        ("remote", Forwarding::Remote),
    ] {
        assert_eq!(
            g(&format!("AllowTcpForwarding {v}")).allow_tcp_forwarding,
            want
        );
        assert_eq!(
            g(&format!("AllowStreamLocalForwarding {v}")).allow_stream_local_forwarding,
            want
        );
    }
    let s = g("AllowTcpForwarding local");
    assert!(s.allows_local_tcp_forwarding() && !s.allows_remote_tcp_forwarding());
    let s = g("DisableForwarding yes");
    assert!(!s.allows_local_tcp_forwarding() && !s.allows_remote_tcp_forwarding());
    assert!(!s.allows_agent_forwarding() && !s.allows_local_stream_local_forwarding());
    assert_eq!(
        g("GatewayPorts clientspecified").gateway_ports,
        GatewayPorts::ClientSpecified
    );
    assert_eq!(g("GatewayPorts yes").gateway_ports, GatewayPorts::Yes);
    // PermitOpen / PermitListen.
    assert_eq!(g("PermitOpen none").permit_open, PermitList::None);
    assert_eq!(g("PermitOpen any").permit_open, PermitList::Any);
    assert_eq!(
        g("PermitOpen host:22 [::1]:* 10.0.0.1:80").permit_open,
        PermitList::List(vec![
            HostPort {
                host: "host".into(),
                port: Some(22)
            },
            HostPort {
                host: "::1".into(),
                port: None
            },
            HostPort {
                host: "10.0.0.1".into(),
                port: Some(80)
            },
        ])
    );
    assert_eq!(
        g("PermitListen 8080 localhost:9090").permit_listen,
        PermitList::List(vec![
            HostPort {
                host: "*".into(),
                port: Some(8080)
            },
            HostPort {
                host: "localhost".into(),
                port: Some(9090)
            },
        ])
    );
    assert!(parse_err("PermitOpen any host:1").contains("must appear alone"));
    assert!(parse_err("PermitOpen host").contains("bad port number"));
    assert!(parse_err("PermitOpen host:0").contains("bad port number"));
    // LogLevel, SyslogFacility.
    assert_eq!(g("LogLevel debug").log_level, LogLevel::Debug1);
    assert_eq!(g("LogLevel DEBUG3").log_level, LogLevel::Debug3);
    assert_eq!(g("LogLevel verbose").log_level, LogLevel::Verbose);
    assert!(parse_err("LogLevel loud").contains("unsupported log level"));
    assert_eq!(
        g("SyslogFacility local3").syslog_facility,
        SyslogFacility::Local3
    );
    assert_eq!(
        g("SyslogFacility AUTHPRIV").syslog_facility,
        SyslogFacility::AuthPriv
    );
    parse_err("SyslogFacility kern");
    // Banner, PidFile.
    assert_eq!(g("Banner none").banner, None);
    assert_eq!(
        g("Banner /etc/issue.net").banner,
        Some(PathBuf::from("/etc/issue.net"))
    );
    assert_eq!(g("PidFile none").pid_file, None);
    assert_eq!(
        g("PidFile /run/x.pid").pid_file,
        Some(PathBuf::from("/run/x.pid"))
    );
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(g("PidFile rel.pid").pid_file, Some(cwd.join("rel.pid")));
    // ListenAddress.
    let s = g("Port 23\nPort 24\nListenAddress 127.0.0.1\nListenAddress [::1]:2200\nListenAddress ::2\nListenAddress 10.0.0.1:99\nListenAddress [10.0.0.2]:98\nListenAddress fe80::1%lo");
    let la: Vec<(String, u16)> = s
        .listen_addresses
        .iter()
        .map(|l| (l.host.clone(), l.port))
        .collect();
    let want: Vec<(String, u16)> = [
        ("127.0.0.1", 23),
        ("127.0.0.1", 24),
        ("::1", 2200),
        ("::2", 23),
        ("::2", 24),
        ("10.0.0.1", 99),
        ("10.0.0.2", 98),
        ("fe80::1%lo", 23),
        ("fe80::1%lo", 24),
    ]
    .iter()
    .map(|(h, p)| (h.to_string(), *p))
    .collect();
    assert_eq!(la, want);
    let addrs = s.listen_socket_addrs().unwrap();
    assert_eq!(addrs[0], "127.0.0.1:23".parse().unwrap());
    assert_eq!(addrs[2], "[::1]:2200".parse().unwrap());
    let s = g("AddressFamily inet\nPort 2222");
    assert_eq!(
        s.listen_addresses,
        vec![ListenAddress {
            host: "0.0.0.0".into(),
            port: 2222
        }]
    );
    assert!(parse_err("ListenAddress 1.2.3.4:0").contains("bad port number"));
    assert!(parse_err("ListenAddress 1.2.3.4 rdomain x").contains("not supported"));
    assert!(parse_err("ListenAddress [::1").contains("bad address:port"));
    parse_err("ListenAddress bad!host");
    // AuthorizedKeysFile keeps tokens; none.
    assert_eq!(
        g("AuthorizedKeysFile .ssh/k %h/.ssh/k2 /etc/keys/%u %%").authorized_keys_files,
        vec![".ssh/k", "%h/.ssh/k2", "/etc/keys/%u", "%%"]
    );
    assert!(g("AuthorizedKeysFile none")
        .authorized_keys_files
        .is_empty());
    // AuthorizedKeysCommand (raw, absolute or none, needs its user),
    // AuthorizedKeysCommandUser, RevokedKeys.
    let s = g(
        "AuthorizedKeysCommand /usr/bin/keys -u %u \"a b\" # x\nAuthorizedKeysCommandUser nobody",
    );
    assert_eq!(
        s.authorized_keys_command.as_deref(),
        Some("/usr/bin/keys -u %u \"a b\" # x")
    );
    assert_eq!(s.authorized_keys_command_user.as_deref(), Some("nobody"));
    assert_eq!(
        g("AuthorizedKeysCommand none").authorized_keys_command,
        None
    );
    assert!(parse_err("AuthorizedKeysCommand keys").contains("must be an absolute path"));
    assert!(parse_err("AuthorizedKeysCommand /bin/keys")
        .contains("AuthorizedKeysCommand set without AuthorizedKeysCommandUser"));
    parse("Match User x\nAuthorizedKeysCommand /bin/keys");
    assert_eq!(
        g("RevokedKeys /etc/ssh/revoked").revoked_keys,
        Some(PathBuf::from("/etc/ssh/revoked"))
    );
    assert_eq!(g("RevokedKeys none").revoked_keys, None);
    assert!(parse_err("RevokedKeys").contains("RevokedKeys"));
    // RekeyLimit.
    let s = g("RekeyLimit 1G 1h");
    assert_eq!((s.rekey_limit, s.rekey_interval), (1 << 30, secs(3600)));
    let s = g("RekeyLimit default none");
    assert_eq!((s.rekey_limit, s.rekey_interval), (0, Duration::ZERO));
    assert_eq!(g("RekeyLimit 1.5K").rekey_limit, 1536);
    assert!(parse_err("RekeyLimit 8").contains("too small"));
    // StreamLocalBindMask / Unlink.
    assert_eq!(g("StreamLocalBindMask 0077").stream_local_bind_mask, 0o77);
    assert!(parse_err("StreamLocalBindMask 1777").contains("Invalid StreamLocalBindMask"));
    parse_err("StreamLocalBindMask 9");
    assert!(g("StreamLocalBindUnlink yes").stream_local_bind_unlink);
    // Environment.
    assert_eq!(
        g("AcceptEnv LANG LC_*\nAcceptEnv TZ").accept_env,
        vec!["LANG", "LC_*", "TZ"]
    );
    assert!(parse_err("AcceptEnv A=B").contains("Invalid environment name"));
    assert_eq!(
        g("SetEnv A=1 B=2 A=3\nSetEnv C=4").set_env,
        vec!["A=1", "B=2"]
    );
    parse_err("SetEnv A");
    assert_eq!(
        g("PermitUserEnvironment yes").permit_user_environment,
        PermitUserEnvironment::Yes
    );
    assert_eq!(
        g("PermitUserEnvironment LANG,LC_*").permit_user_environment,
        PermitUserEnvironment::Allow("LANG,LC_*".into())
    );
    // Subsystem.
    let s = g("Subsystem sftp /usr/lib/openssh/sftp-server -l  INFO \"a b\"\nSubsystem other internal-sftp");
    assert_eq!(
        s.subsystems,
        vec![
            Subsystem {
                name: "sftp".into(),
                command: "/usr/lib/openssh/sftp-server -l INFO a b".into()
            },
            Subsystem {
                name: "other".into(),
                command: "internal-sftp".into()
            },
        ]
    );
    assert!(parse_err("Subsystem sftp").contains("Missing subsystem command"));
    // ForceCommand keeps the raw rest of the line.
    assert_eq!(
        g("ForceCommand  echo \"hi\" # x").force_command.as_deref(),
        Some("echo \"hi\" # x")
    );
    assert_eq!(g("ForceCommand none").force_command, None);
    // AuthenticationMethods.
    assert_eq!(
        g("AuthenticationMethods publickey,password publickey,keyboard-interactive:pam")
            .authentication_methods,
        Some(vec![
            vec!["publickey".to_string(), "password".to_string()],
            vec![
                "publickey".to_string(),
                "keyboard-interactive:pam".to_string()
            ],
        ])
    );
    assert_eq!(g("AuthenticationMethods any").authentication_methods, None);
    parse_err("AuthenticationMethods any publickey");
    parse_err("AuthenticationMethods publickey,bogus");
    // "none" as sshd takes it (OpenSSH's multipubkey test writes it).
    assert_eq!(
        g("AuthenticationMethods none").authentication_methods,
        Some(vec![vec!["none".to_string()]])
    );
    parse_err("AuthenticationMethods none:x");
    parse_err("AuthenticationMethods publickey,,password");
    // ChannelTimeout, UnusedConnectionTimeout.
    assert_eq!(
        g("ChannelTimeout session=5m direct-*=1h").channel_timeouts,
        vec![
            ChannelTimeout {
                channel_type: "session".into(),
                timeout: secs(300)
            },
            ChannelTimeout {
                channel_type: "direct-*".into(),
                timeout: secs(3600)
            },
        ]
    );
    assert!(g("ChannelTimeout none").channel_timeouts.is_empty());
    parse_err("ChannelTimeout session");
    parse_err("ChannelTimeout none session=1");
    assert_eq!(
        g("UnusedConnectionTimeout 1h").unused_connection_timeout,
        Some(secs(3600))
    );
    assert_eq!(
        g("UnusedConnectionTimeout none").unused_connection_timeout,
        None
    );
    // VersionAddendum.
    assert_eq!(
        g("VersionAddendum hello there").version_addendum.as_deref(),
        Some("hello there")
    );
    assert_eq!(g("VersionAddendum none").version_addendum, None);
    // AllowUsers patterns.
    assert_eq!(
        g("AllowUsers a b@10.0.0.0/8\nAllowUsers c").allow_users,
        vec!["a", "b@10.0.0.0/8", "c"]
    );
    assert!(parse_err("AllowUsers a@10.0.0.1/8").contains("invalid AllowUsers pattern"));
    // Ports.
    assert_eq!(g("Port ssh").ports, vec![22]);
    assert!(parse_err("Port 0").contains("Badly formatted port"));
    assert!(parse_err("Port 65536").contains("Badly formatted port"));
    // resshd's own keywords.
    let s = g("PrivilegeSeparationUser sshd\nPrivilegeSeparationDirectory /var/empty\nDetachTimeout 2h30m\nDetachGraceTime 90s\nMaxDetachedSessions 3\nResilienceBufferSize 64M");
    assert_eq!(s.privilege_separation_user, "sshd");
    assert_eq!(
        s.privilege_separation_directory,
        PathBuf::from("/var/empty")
    );
    assert_eq!(s.detach_timeout, secs(9000));
    assert_eq!(s.max_detached_sessions, 3);
    assert_eq!(s.detach_grace_time, secs(90));
    assert_eq!(s.resilience_buffer_size, 64 << 20);
    assert_eq!(g("ResilienceBufferSize 1g").resilience_buffer_size, 1 << 30);
    parse_err("ResilienceBufferSize 1K");
    parse_err("ResilienceBufferSize 5G");
    assert_eq!(g("ChannelWindowMax 64m").channel_window_max, 64 << 20);
    parse_err("ChannelWindowMax 1M");
    parse_err("ChannelWindowMax 2G");
    parse_err("ResilienceBufferSize lots");
    parse_err("PrivilegeSeparationDirectory relative");
    parse_err("PrivilegeSeparationUser -x");
}

#[test]
fn first_value_wins_and_lists_accumulate() {
    let s = g("MaxAuthTries 3\nMaxAuthTries 5\nPermitRootLogin no\nPermitRootLogin yes\nBanner none\nBanner /x\nHostKey /k1\nHostKey /k2\nAuthorizedKeysFile /a /b\nAuthorizedKeysFile /c\nAllowGroups g1\nAllowGroups g2\nDenyUsers u1\nDenyGroups x\nSubsystem sftp one\nSubsystem sftp two\nCiphers aes128-ctr\nCiphers aes256-ctr");
    assert_eq!(s.max_auth_tries, 3);
    assert_eq!(s.permit_root_login, PermitRootLogin::No);
    assert_eq!(s.banner, None);
    assert_eq!(
        s.host_keys,
        vec![PathBuf::from("/k1"), PathBuf::from("/k2")]
    );
    assert_eq!(s.authorized_keys_files, vec!["/a", "/b"]);
    assert_eq!(s.allow_groups, vec!["g1", "g2"]);
    assert_eq!(s.deny_users, vec!["u1"]);
    assert_eq!(s.deny_groups, vec!["x"]);
    assert_eq!(s.subsystems.len(), 1);
    assert_eq!(s.subsystems[0].command, "one");
    assert_eq!(s.ciphers, vec!["aes128-ctr"]);
    let c = parse("Subsystem sftp one\nSubsystem sftp two");
    assert!(c
        .warnings()
        .iter()
        .any(|w| w.starts_with("test.conf:2:") && w.contains("already defined")));
}

#[test]
fn include_glob_relative_and_first_wins() {
    let d = Scratch::new();
    d.write("conf.d/10-a.conf", "MaxAuthTries 4\nAcceptEnv A\n");
    d.write(
        "conf.d/20-b.conf",
        "MaxAuthTries 5\nMaxSessions 7\nAcceptEnv B\n",
    );
    d.write("conf.d/.hidden.conf", "MaxSessions 1\n");
    d.write("conf.d/30-c.conf.disabled", "MaxSessions 2\n");
    d.write("extra.conf", "PermitRootLogin no\n");
    let main = d.write(
        "main.conf",
        "Include conf.d/*.conf extra.conf\nMaxAuthTries 9\nInclude nosuchfile.conf\nInclude nosuchdir/*.conf\n",
    );
    let c = Config::load(&main, &[]).unwrap();
    let s = c.global();
    assert_eq!(s.max_auth_tries, 4);
    assert_eq!(s.max_sessions, 7);
    assert_eq!(s.accept_env, vec!["A", "B"]);
    assert_eq!(s.permit_root_login, PermitRootLogin::No);
    // Errors in included files name the included file and its line.
    d.write("bad/x.conf", "\n\nNoSuchKeyword yes\n");
    let main2 = d.write("main2.conf", "Include bad/x.conf\n");
    let e = Config::load(&main2, &[]).unwrap_err().to_string();
    let want = format!(
        "{}:3: Bad configuration option: NoSuchKeyword",
        d.path().join("bad/x.conf").display()
    );
    assert!(e.contains(&want), "{e}");
    // Absolute includes and a base dir given explicitly.
    let text = format!("Include {}/extra.conf\n", d.path().display());
    let c = Config::parse_str(&text, "x", Path::new("/"), &[]).unwrap();
    assert_eq!(c.global().permit_root_login, PermitRootLogin::No);
    let c = Config::parse_str("Include extra.conf", "x", d.path(), &[]).unwrap();
    assert_eq!(c.global().permit_root_login, PermitRootLogin::No);
}

#[test]
fn include_of_special_files_is_refused() {
    let d = Scratch::new();
    let fifo = d.path().join("fifo.conf");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::create_dir_all(d.path().join("dir.conf")).unwrap();
    let main = d.write("main.conf", "Include fifo.conf\n");
    let e = Config::load(&main, &[]).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    let main = d.write("main2.conf", "Include dir.conf\n");
    assert!(Config::load(&main, &[]).is_err());
    let big = "# padding\n".repeat(500_000);
    d.write("big.conf", &big);
    let main = d.write("main3.conf", "Include big.conf\n");
    let e = Config::load(&main, &[]).unwrap_err().to_string();
    assert!(e.contains("larger than"), "{e}");
    std::fs::write(d.path().join("latin1.conf"), b"Banner /caf\xe9\n").unwrap();
    let e = Config::load(&d.path().join("latin1.conf"), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 1: invalid UTF-8"), "{e}");
}

#[test]
fn include_recursion_is_bounded() {
    let d = Scratch::new();
    let main = d.write("loop.conf", "Include loop.conf\n");
    let e = Config::load(&main, &[]).unwrap_err().to_string();
    assert!(
        e.contains("Too many recursive configuration includes"),
        "{e}"
    );
    // 16 levels are fine.
    for i in 0..16 {
        d.write(&format!("l{i}.conf"), &format!("Include l{}.conf\n", i + 1));
    }
    d.write("l16.conf", "MaxSessions 3\n");
    assert_eq!(
        Config::load(&d.path().join("l0.conf"), &[])
            .unwrap()
            .global()
            .max_sessions,
        3
    );
    d.write("l16.conf", "Include l17.conf\n");
    d.write("l17.conf", "MaxSessions 3\n");
    assert!(Config::load(&d.path().join("l0.conf"), &[]).is_err());
    // Fan-out is bounded by the file count.
    d.write("fan/a.conf", "Include fan/*.conf\n");
    d.write("fan/b.conf", "Include fan/*.conf\n");
    let e = Config::load(&d.write("fan.conf", "Include fan/*.conf\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("too many included files") || e.contains("Too many recursive"),
        "{e}"
    );
}

#[test]
fn include_inside_match() {
    let d = Scratch::new();
    d.write(
        "m.conf",
        "MaxSessions 3\nMatch Address 10.0.0.0/8\n  MaxAuthTries 2\n",
    );
    d.write(
        "top.conf",
        "Match User carol\n  PasswordAuthentication no\n",
    );
    let main = d.write(
        "main.conf",
        "Include top.conf\nMaxAuthTries 4\nMatch User bob\n  Include m.conf\n  Banner /b\nMatch all\nMaxSessions 8\n",
    );
    let c = Config::load(&main, &[]).unwrap();
    let s = c.global();
    assert_eq!(
        (s.max_sessions, s.max_auth_tries, s.banner.clone()),
        (8, 4, None)
    );
    let r = c.resolve(&ctx(Some("bob"), &[], Some("1.2.3.4"), Some(22)));
    assert_eq!((r.max_sessions, r.max_auth_tries), (3, 4));
    // The include's own Match narrows the enclosing block, and the rest of
    // the enclosing block continues after the include.
    assert_eq!(r.banner, Some(PathBuf::from("/b")));
    let r = c.resolve(&ctx(Some("bob"), &[], Some("10.1.1.1"), Some(22)));
    assert_eq!((r.max_sessions, r.max_auth_tries), (3, 2));
    let r = c.resolve(&ctx(Some("dave"), &[], Some("10.1.1.1"), Some(22)));
    assert_eq!((r.max_sessions, r.max_auth_tries), (8, 4));
    // A Match block in a file included at top level applies.
    assert!(
        !c.resolve(&ctx(Some("carol"), &[], None, None))
            .password_authentication
    );
    assert!(
        c.resolve(&ctx(Some("bob"), &[], None, None))
            .password_authentication
    );
}

#[test]
fn match_criteria() {
    let c = parse(
        "PasswordAuthentication yes
MaxSessions 10
Match User alice,!bob
    MaxSessions 1
Match User b*
    MaxSessions 2
Match Group wheel,admins
    MaxSessions 3
Match Address 192.168.0.0/16,!192.168.1.0/24
    MaxSessions 4
Match Address 2001:db8::/32
    MaxSessions 5
Match LocalPort 2222
    MaxSessions 6
Match Host *.example.com
    MaxSessions 7
Match LocalAddress 127.0.0.0/8
    PasswordAuthentication no
Match User carol Address 10.0.0.0/8
    MaxSessions 8
Match RDomain vrf*,!vrf-blue
    MaxSessions 9
",
    );
    let ms = |cx: MatchContext| c.resolve(&cx).max_sessions;
    assert_eq!(ms(ctx(Some("alice"), &[], None, None)), 1);
    assert_eq!(ms(ctx(Some("bob"), &[], None, None)), 2);
    assert_eq!(ms(ctx(Some("zed"), &["users", "wheel"], None, None)), 3);
    assert_eq!(
        ms(ctx(Some("zed"), &["users"], Some("192.168.2.1"), None)),
        4
    );
    assert_eq!(
        ms(ctx(Some("zed"), &["users"], Some("192.168.1.1"), None)),
        10
    );
    assert_eq!(ms(ctx(Some("zed"), &[], Some("2001:db8::1"), None)), 5);
    assert_eq!(ms(ctx(Some("zed"), &[], None, Some(2222))), 6);
    assert_eq!(ms(ctx(Some("zed"), &[], None, Some(22))), 10);
    let mut cx = ctx(Some("zed"), &[], None, None);
    cx.host = Some("Box.Example.COM".into());
    assert_eq!(ms(cx), 7);
    assert_eq!(ms(ctx(Some("carol"), &[], Some("10.2.3.4"), None)), 8);
    assert_eq!(ms(ctx(Some("carol"), &[], Some("11.2.3.4"), None)), 10);
    // A routing domain (a VRF device), as a pattern list.
    for (rdomain, want) in [(Some("vrf-red"), 9), (Some("vrf-blue"), 10), (None, 10)] {
        let mut cx = ctx(Some("zed"), &[], None, None);
        cx.rdomain = rdomain.map(String::from);
        assert_eq!(ms(cx), want, "{rdomain:?}");
    }
    // Unknown values never match: no user before authentication.
    assert_eq!(ms(ctx(None, &["wheel"], None, None)), 10);
    assert_eq!(ms(MatchContext::default()), 10);
    // LocalAddress.
    assert!(
        !c.resolve(&ctx(None, &[], None, None))
            .password_authentication
    );
    let mut cx = ctx(None, &[], None, None);
    cx.local_addr = Some("::1".parse::<IpAddr>().unwrap());
    assert!(c.resolve(&cx).password_authentication);
    // The first matching block's value wins.
    assert_eq!(
        ms(ctx(
            Some("bob"),
            &["wheel"],
            Some("192.168.2.1"),
            Some(2222)
        )),
        2
    );
    // The global view is unaffected by Match.
    assert_eq!(c.global().max_sessions, 10);
    assert!(c.global().password_authentication);
    assert!(
        c.matches_on("user")
            && c.matches_on("Group")
            && c.matches_on("rdomain")
            && !c.matches_on("all")
    );
}

#[test]
fn match_overrides_and_lists() {
    let c = parse(
        "AllowUsers a b
AcceptEnv X
ForceCommand /bin/global
Banner /etc/issue
Match User foo
    AllowUsers c
    AcceptEnv Y
    Banner none
    ForceCommand none
Match User f*
    AllowUsers d
    AcceptEnv Z
    ForceCommand /bin/other
    AuthorizedKeysFile /etc/keys/%u
    AuthorizedKeysCommand /bin/keys %u
    AuthorizedKeysCommandUser nobody
    RevokedKeys /etc/revoked
",
    );
    let r = c.resolve(&ctx(Some("bar"), &[], None, None));
    assert_eq!(r.authorized_keys_command, None);
    assert_eq!(r.revoked_keys, None);
    let r = c.resolve(&ctx(Some("foo"), &[], None, None));
    assert_eq!(r.authorized_keys_command.as_deref(), Some("/bin/keys %u"));
    assert_eq!(r.authorized_keys_command_user.as_deref(), Some("nobody"));
    assert_eq!(r.revoked_keys, Some(PathBuf::from("/etc/revoked")));
    assert_eq!(r.allow_users, vec!["c", "d"]);
    assert_eq!(r.accept_env, vec!["Y", "Z"]);
    assert_eq!(r.banner, None);
    assert_eq!(r.force_command, None);
    assert_eq!(r.authorized_keys_files, vec!["/etc/keys/%u"]);
    let r = c.resolve(&ctx(Some("fred"), &[], None, None));
    assert_eq!(r.allow_users, vec!["d"]);
    assert_eq!(r.force_command.as_deref(), Some("/bin/other"));
    let r = c.resolve(&ctx(Some("bar"), &[], None, None));
    assert_eq!(r.allow_users, vec!["a", "b"]);
    assert_eq!(r.banner, Some(PathBuf::from("/etc/issue")));
    assert_eq!(r.force_command.as_deref(), Some("/bin/global"));
}

/// ChrootDirectory as sshd: first wins, per Match, `none` (any case)
/// clears a global one, tokens are kept for the login.
#[test]
fn chroot_directory_per_match() {
    let c = parse(
        "ChrootDirectory /srv/%u\nMatch Group sftponly\n    ChrootDirectory %h\nMatch User root\n    ChrootDirectory NONE\n",
    );
    let r = c.resolve(&ctx(Some("bob"), &[], None, None));
    assert_eq!(r.chroot_directory.as_deref(), Some("/srv/%u"));
    let r = c.resolve(&ctx(Some("root"), &[], None, None));
    assert_eq!(r.chroot_directory, None);
    assert!(parse_err("ChrootDirectory").contains("test.conf:1"));
    assert_eq!(
        g("ChrootDirectory \"/a b\"").chroot_directory.as_deref(),
        Some("/a b")
    );
}

#[test]
fn match_all_returns_to_global() {
    let c = parse("Match User foo\n  MaxSessions 3\nMatch all\nPort 2222\nMaxSessions 7\nCiphers aes256-ctr\n");
    let s = c.global();
    assert_eq!(s.ports, vec![2222]);
    assert_eq!(s.max_sessions, 7);
    assert_eq!(s.ciphers, vec!["aes256-ctr"]);
    assert_eq!(
        c.resolve(&ctx(Some("foo"), &[], None, None)).max_sessions,
        3
    );
    assert_eq!(
        c.resolve(&ctx(Some("bar"), &[], None, None)).max_sessions,
        7
    );
    assert_eq!(
        c.resolve(&ctx(Some("bar"), &[], None, None)).ports,
        vec![2222]
    );
}

#[test]
fn keyword_not_allowed_in_match() {
    let e = parse_err("Port 22\nMatch User x\n  MaxSessions 2\n  Port 2222\n");
    assert!(
        e.contains("test.conf:4: Directive 'Port' is not allowed within a Match block"),
        "{e}"
    );
    for kw in [
        "HostKey /k",
        "Ciphers aes128-ctr",
        "Subsystem s /bin/s",
        "UsePAM yes",
        "StrictModes no",
        "ListenAddress ::",
    ] {
        let e = parse_err(&format!("Match Address 10.0.0.0/8\n{kw}\n"));
        assert!(e.contains("test.conf:2: Directive"), "{kw}: {e}");
    }
    let e = parse_err("Match User x\nPort 1\nMaxSessions 0\nPidFile /x\n");
    assert_eq!(e.lines().count(), 2, "{e}");
    assert!(parse_err("Match Bogus x").contains("test.conf:1: Bad Match condition"));
    assert!(parse_err("Match User").contains("Missing Match criteria"));
    assert!(parse_err("Match Address 10.0.0.1/8").contains("Invalid Match"));
}

#[test]
fn unknown_refused_deprecated() {
    let e = parse_err("MaxSessions 2\n\nFrobnicate yes\n");
    assert_eq!(e, "test.conf:3: Bad configuration option: Frobnicate");
    let e = parse_err("Frob 1\nMaxSessions x\nNope 2\n");
    assert_eq!(e.lines().count(), 3);
    assert!(e.lines().next().unwrap().starts_with("test.conf:1:"));
    assert!(parse_err("AuthorizedPrincipalsCommand /usr/bin/p %u")
        .contains("AuthorizedPrincipalsCommand set without AuthorizedPrincipalsCommandUser"));
    assert!(parse_err("AuthorizedPrincipalsCommand p").contains("absolute path"));
    let c = parse(
        "AuthorizedPrincipalsCommand /usr/bin/p %u %i\nAuthorizedPrincipalsCommandUser nobody",
    );
    assert_eq!(
        c.global().authorized_principals_command.as_deref(),
        Some("/usr/bin/p %u %i")
    );
    for refused in [
        "HostbasedAuthentication yes",
        "GSSAPIAuthentication yes",
        "KerberosAuthentication yes",
        "PermitTunnel yes",
        "PermitTunnel point-to-point",
        "UseDNS yes",
        "RDomain 1",
    ] {
        let e = parse_err(refused);
        let kw = refused.split(' ').next().unwrap();
        assert!(
            e.starts_with(&format!("test.conf:1: {kw}")),
            "{refused}: {e}"
        );
        assert!(e.contains("not supported"), "{refused}: {e}");
        // Also inside a Match block that may never match.
        parse_err(&format!("Match User nobody-at-all\n{refused}"));
    }
    for ignored in [
        "PermitTunnel no",
        "UseDNS no",
        "PermitUserRC no",
        "GSSAPIAuthentication no",
        "IPQoS lowdelay throughput",
        "FingerprintHash md5",
    ] {
        let c = parse(ignored);
        let kw = ignored.split(' ').next().unwrap();
        assert_eq!(c.warnings().len(), 1, "{ignored}: {:?}", c.warnings());
        assert!(
            c.warnings()[0].starts_with(&format!("test.conf:1: unsupported option {kw} ignored")),
            "{:?}",
            c.warnings()
        );
    }
    // Ignored keywords still have their values checked like sshd.
    parse_err("X11Forwarding maybe");
    parse_err("Compression fast");
    parse_err("PermitTunnel bogus");
    parse_err("PubkeyAuthOptions bogus");
    parse_err("AuthorizedKeysCommand relative/cmd");
    // Ignored keywords keep sshd's Match rules.
    parse(
        "Match User x
X11Forwarding no",
    );
    parse_err(
        "Match User x
UsePAM no",
    );
    // Deprecated.
    let c = parse("UsePrivilegeSeparation sandbox\nProtocol 2\nRSAAuthentication yes\n");
    assert_eq!(
        c.warnings(),
        [
            "test.conf:1: Deprecated option UsePrivilegeSeparation",
            "test.conf:2: Deprecated option Protocol",
            "test.conf:3: Deprecated option RSAAuthentication",
        ]
    );
    parse_err("Match User x\nUsePrivilegeSeparation no");
    parse("Match User x\nRSAAuthentication no");
}

#[test]
fn command_line_overrides_win() {
    let d = Scratch::new();
    let main = d.write(
        "main.conf",
        "MaxAuthTries 3\nPort 2222\nPasswordAuthentication yes\nMatch User foo\n  PasswordAuthentication yes\n",
    );
    let o = vec![
        "MaxAuthTries=5".to_string(),
        "PasswordAuthentication no".to_string(),
        "Port=2200".to_string(),
    ];
    let c = Config::load(&main, &o).unwrap();
    let s = c.global();
    assert_eq!(s.max_auth_tries, 5);
    assert!(!s.password_authentication);
    assert_eq!(s.ports, vec![2200, 2222]);
    // As in sshd, a matching Match block still overrides.
    assert!(
        c.resolve(&ctx(Some("foo"), &[], None, None))
            .password_authentication
    );
    assert!(
        !c.resolve(&ctx(Some("bar"), &[], None, None))
            .password_authentication
    );
    let e = Config::load(&main, &["Match User x".to_string()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("command-line:1: Match directive not supported"),
        "{e}"
    );
    let e = Config::load(&main, &["MaxSessions 1".into(), "Include x".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("command-line:2: Include directive not supported"),
        "{e}"
    );
    let e = Config::load(&main, &["Bogus=1".to_string()])
        .unwrap_err()
        .to_string();
    assert_eq!(e, "command-line:1: Bad configuration option: Bogus");
    let e = Config::load(&d.path().join("missing.conf"), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.conf"), "{e}");
}

#[test]
fn algorithm_modifiers() {
    let ours_c: Vec<String> = ressh_proto::cipher::CIPHERS
        .iter()
        .map(|c| c.name.to_string())
        .collect();
    let ours_m: Vec<String> = ressh_proto::cipher::MACS
        .iter()
        .map(|m| m.name.to_string())
        .collect();
    let ours_k: Vec<String> = ressh_proto::kex::KEX_ALGS
        .iter()
        .map(|k| k.to_string())
        .collect();
    // Explicit lists, in the given order.
    assert_eq!(
        g("Ciphers aes256-gcm@openssh.com,chacha20-poly1305@openssh.com").ciphers,
        vec!["aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"]
    );
    // "-": removal with wildcards.
    let s = g("Ciphers -aes*");
    assert_eq!(s.ciphers, vec!["chacha20-poly1305@openssh.com"]);
    let s = g("MACs -hmac-sha2-512-etm@openssh.com,umac*,hmac-sha1*,hmac-sha2-???");
    assert_eq!(s.macs, vec!["hmac-sha2-256-etm@openssh.com"]);
    assert!(parse_err("Ciphers -*").contains("leaves no cipher"));
    // "^": to the front; "+": appended (already present: no change).
    let s = g("Ciphers ^aes128-gcm@openssh.com");
    assert_eq!(s.ciphers[0], "aes128-gcm@openssh.com");
    assert_eq!(s.ciphers.len(), ours_c.len());
    assert_eq!(g("Ciphers +aes128-ctr").ciphers, ours_c);
    assert_eq!(g("KexAlgorithms +curve25519-sha256").kex_algorithms, ours_k);
    assert_eq!(
        g("MACs ^hmac-sha2-512-etm@openssh.com").macs[0],
        "hmac-sha2-512-etm@openssh.com"
    );
    assert_eq!(
        g("MACs ^hmac-sha2-512-etm@openssh.com").macs.len(),
        ours_m.len()
    );
    // An OpenSSH algorithm resshd refuses: left out with a warning naming
    // it; an error when nothing is left.
    let c = parse("Ciphers aes128-ctr,aes192-cbc");
    assert_eq!(c.global().ciphers, ["aes128-ctr"]);
    assert!(c.warnings()[0].contains("cipher aes192-cbc is not supported"));
    let e = parse_err("KexAlgorithms diffie-hellman-group1-sha1");
    assert!(e.contains("names no key exchange algorithm"), "{e}");
    let c = parse("PubkeyAcceptedAlgorithms rsa-sha2-512,rsa-sha2-256,ssh-rsa");
    assert_eq!(
        c.global().pubkey_accepted_algorithms,
        ["rsa-sha2-512", "rsa-sha2-256"]
    );
    let k = g("KexAlgorithms +diffie-hellman-group14-sha256,diffie-hellman-group14-sha1")
        .kex_algorithms;
    assert_eq!(k.len(), ours_k.len() + 2, "{k:?}");
    assert_eq!(
        k[ours_k.len()..],
        [
            "diffie-hellman-group14-sha256",
            "diffie-hellman-group14-sha1"
        ]
    );
    let c = parse("MACs hmac-sha2-256,hmac-md5");
    assert_eq!(c.global().macs, ["hmac-sha2-256"]);
    assert!(c.warnings()[0].contains("MAC hmac-md5 is not supported"));
    let c = parse("Ciphers +aes128-cbc\nPubkeyAcceptedAlgorithms +ssh-rsa");
    assert_eq!(c.global().ciphers, ours_c);
    assert_eq!(c.global().pubkey_accepted_algorithms, user_key_algs());
    assert_eq!(c.warnings().len(), 2, "{:?}", c.warnings());
    assert!(c.warnings()[0].contains("aes128-cbc"));
    // Garbage is refused like sshd does.
    assert!(parse_err("Ciphers aes128-ctr,bogus").contains("Bad cipher spec"));
    assert!(parse_err("Ciphers +bogus").contains("Bad cipher spec"));
    assert!(parse_err("Ciphers aes128-ctr,,aes256-ctr").contains("Bad cipher spec"));
    assert!(parse_err("Ciphers !aes128-ctr").contains("Bad cipher spec"));
    // Wildcards: refused in cipher/MAC/kex lists (sshd too), allowed in key
    // algorithm lists, expanded in our preference order.
    parse_err("Ciphers aes*");
    // (Patterns match the certificate algorithms too, as in sshd.)
    assert_eq!(
        g("HostKeyAlgorithms rsa-sha2-*").host_key_algorithms,
        vec![
            "rsa-sha2-512-cert-v01@openssh.com",
            "rsa-sha2-256-cert-v01@openssh.com",
            "rsa-sha2-512",
            "rsa-sha2-256"
        ]
    );
    assert_eq!(
        g("PubkeyAcceptedAlgorithms ^rsa-*,ssh-ed25519").pubkey_accepted_algorithms,
        vec![
            "rsa-sha2-512-cert-v01@openssh.com",
            "rsa-sha2-256-cert-v01@openssh.com",
            "rsa-sha2-512",
            "rsa-sha2-256",
            "ssh-ed25519",
            "ssh-ed25519-cert-v01@openssh.com",
            "ecdsa-sha2-nistp256-cert-v01@openssh.com",
            "ecdsa-sha2-nistp384-cert-v01@openssh.com",
            "ecdsa-sha2-nistp521-cert-v01@openssh.com",
            "sk-ssh-ed25519-cert-v01@openssh.com",
            "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
            "ecdsa-sha2-nistp256",
            "ecdsa-sha2-nistp384",
            "ecdsa-sha2-nistp521",
            "sk-ssh-ed25519@openssh.com",
            "sk-ecdsa-sha2-nistp256@openssh.com"
        ]
    );
    assert_eq!(
        g("HostKeyAlgorithms -ecdsa*").host_key_algorithms,
        vec![
            "ssh-ed25519-cert-v01@openssh.com",
            "rsa-sha2-512-cert-v01@openssh.com",
            "rsa-sha2-256-cert-v01@openssh.com",
            "ssh-ed25519",
            "rsa-sha2-512",
            "rsa-sha2-256"
        ]
    );
    // Security keys sign as users, never as hosts.
    assert!(parse_err("HostKeyAlgorithms sk-*").contains("names no key algorithm"));
    assert_eq!(
        g("PubkeyAcceptedAlgorithms sk-*").pubkey_accepted_algorithms,
        vec![
            "sk-ssh-ed25519-cert-v01@openssh.com",
            "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
            "sk-ssh-ed25519@openssh.com",
            "sk-ecdsa-sha2-nistp256@openssh.com"
        ]
    );
    parse_err("HostKeyAlgorithms nomatch*");
    // A Match block's algorithm list is relative to the defaults too.
    let c = parse("PubkeyAcceptedAlgorithms ssh-ed25519\nMatch User x\n PubkeyAcceptedAlgorithms -ssh-ed25519");
    assert_eq!(c.global().pubkey_accepted_algorithms, vec!["ssh-ed25519"]);
    assert_eq!(
        c.resolve(&ctx(Some("x"), &[], None, None))
            .pubkey_accepted_algorithms,
        vec![
            "ssh-ed25519-cert-v01@openssh.com",
            "ecdsa-sha2-nistp256-cert-v01@openssh.com",
            "ecdsa-sha2-nistp384-cert-v01@openssh.com",
            "ecdsa-sha2-nistp521-cert-v01@openssh.com",
            "sk-ssh-ed25519-cert-v01@openssh.com",
            "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
            "rsa-sha2-512-cert-v01@openssh.com",
            "rsa-sha2-256-cert-v01@openssh.com",
            "ecdsa-sha2-nistp256",
            "ecdsa-sha2-nistp384",
            "ecdsa-sha2-nistp521",
            "sk-ssh-ed25519@openssh.com",
            "sk-ecdsa-sha2-nistp256@openssh.com",
            "rsa-sha2-512",
            "rsa-sha2-256"
        ]
    );
}

#[test]
fn dump_format() {
    let s = g("Port 2222\nListenAddress 127.0.0.1\nListenAddress [::1]\nPermitOpen h:1 [::1]:*\nAllowUsers a b\nSubsystem sftp internal-sftp\nRekeyLimit 1G 1h");
    let d = s.dump();
    for want in [
        "port 2222\n",
        "listenaddress 127.0.0.1:2222\n",
        "listenaddress [::1]:2222\n",
        "permitrootlogin without-password\n",
        "permitopen h:1 [::1]:*\n",
        "permitlisten any\n",
        "allowusers a\nallowusers b\n",
        "subsystem sftp internal-sftp\n",
        "rekeylimit 1073741824 3600\n",
        "authorizedkeysfile .ssh/authorized_keys .ssh/authorized_keys2\n",
        "maxstartups 10:30:100\n",
        "streamlocalbindmask 0177\n",
        "resiliencebuffersize 50331648\n",
        "channelwindowmax 33554432\n",
    ] {
        assert!(d.contains(want), "missing {want:?} in\n{d}");
    }
    assert!(d.lines().all(|l| {
        let k = l.split(' ').next().unwrap();
        k == k.to_ascii_lowercase() && !k.is_empty()
    }));
    // Settings cross process boundaries.
    let json_like = format!("{s:?}");
    assert!(json_like.contains("ports"));
}

/// Debian 12's stock /etc/ssh/sshd_config (with its Include) parses with
/// warnings only. openssh-server must be installed.
#[test]
fn debian_default_sshd_config() {
    let path = Path::new("/etc/ssh/sshd_config");
    assert!(
        path.exists(),
        "/etc/ssh/sshd_config missing: install openssh-server"
    );
    let c =
        Config::load(path, &[]).unwrap_or_else(|e| panic!("Debian's sshd_config must parse:\n{e}"));
    let s = c.global();
    let text = std::fs::read_to_string(path).unwrap();
    if text
        .lines()
        .any(|l| l.trim() == "KbdInteractiveAuthentication no")
    {
        assert!(!s.kbd_interactive_authentication);
    }
    if text.lines().any(|l| l.trim() == "AcceptEnv LANG LC_*") {
        assert_eq!(s.accept_env, vec!["LANG", "LC_*"]);
    }
    if text.contains("Subsystem\tsftp\t/usr/lib/openssh/sftp-server") {
        assert_eq!(
            s.subsystems,
            vec![Subsystem {
                name: "sftp".into(),
                command: "/usr/lib/openssh/sftp-server".into()
            }]
        );
    }
    if text.lines().any(|l| l.trim() == "X11Forwarding yes") {
        assert!(s.allows_x11_forwarding());
    }
    // The same text parsed from a string, under another base dir.
    Config::parse_str(&text, "sshd_config", Path::new("/etc/ssh"), &[]).unwrap();
}

const SSHD: &str = "/usr/sbin/sshd";

/// `sshd -T` output as keyword -> values (in order).
fn sshd_dump(config: &Path, spec: Option<&str>) -> BTreeMap<String, Vec<String>> {
    assert!(
        Path::new(SSHD).exists(),
        "{SSHD} missing: install openssh-server"
    );
    // Debian creates sshd's privilege separation directory at boot only.
    std::fs::create_dir_all("/run/sshd").unwrap();
    let mut cmd = Command::new(SSHD);
    cmd.arg("-T").arg("-f").arg(config);
    if let Some(s) = spec {
        cmd.arg("-C").arg(s);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "sshd -T {spec:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    to_map(&String::from_utf8(out.stdout).unwrap())
}

fn to_map(dump: &str) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in dump.lines() {
        let (k, v) = l.split_once(' ').unwrap_or((l, ""));
        m.entry(k.to_string()).or_default().push(v.to_string());
    }
    m
}

/// The user's groups by name, as sshd looks them up.
fn groups_of(user: &str) -> Vec<String> {
    use nix::unistd::{getgrouplist, Group, User};
    let Ok(Some(u)) = User::from_name(user) else {
        return Vec::new();
    };
    let name = std::ffi::CString::new(user).unwrap();
    getgrouplist(&name, u.gid)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|gid| Group::from_gid(gid).ok().flatten().map(|g| g.name))
        .collect()
}

/// Keywords whose values legitimately differ (our algorithm sets are
/// smaller than OpenSSH's) or that are resshd's own.
const NOT_COMPARED: &[&str] = &[
    "ciphers",
    "macs",
    "kexalgorithms",
    "hostkeyalgorithms",
    "pubkeyacceptedalgorithms",
    "privilegeseparationuser",
    "privilegeseparationdirectory",
    "brokersocket",
    "resshdkexpath",
    "resshdsessionpath",
    "detachtimeout",
    "maxdetachedsessions",
    "detachgracetime",
    "resiliencebuffersize",
    "proxyprotocolfrom",
    "fleetkey",
    "fleetnodes",
    "fleetlistenaddress",
    "fleetdrain",
    "channelwindowmax",
];

fn compare_with_sshd(ours: &Settings, theirs: &BTreeMap<String, Vec<String>>, what: &str) {
    let ours = to_map(&ours.dump());
    let mut compared = 0;
    for (k, v) in &ours {
        if NOT_COMPARED.contains(&k.as_str()) {
            continue;
        }
        let t = theirs
            .get(k)
            .unwrap_or_else(|| panic!("{what}: sshd -T does not print {k}"));
        assert_eq!(v, t, "{what}: {k} differs");
        compared += 1;
    }
    assert!(compared >= 40, "{what}: only {compared} keywords compared");
}

/// Runs Debian's sshd on the same configuration and compares its `-T`
/// output with ours, globally and for several connections.
#[test]
fn same_as_sshd_t() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs sshd -T, which needs root"
    );
    let d = Scratch::new();
    let key = d.path().join("hostkey");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    d.write(
        "inc/10-extra.conf",
        "ClientAliveCountMax 4\nMatch User carol\n  MaxAuthTries 1\n",
    );
    let text = format!(
        "HostKey {key}
PidFile /run/resshd-config-test.pid
Include {dir}/inc/*.conf
Port 2222
Port 2223
ListenAddress 127.0.0.1
ListenAddress [::1]:2224
AuthorizedKeysFile .ssh/authorized_keys %h/.ssh/extra_keys
MaxAuthTries 4
PermitRootLogin no
AllowTcpForwarding local
LogLevel VERBOSE
SyslogFacility LOCAL2
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp -l INFO
ClientAliveInterval 1m
RekeyLimit 512M 1h
LoginGraceTime 1m30s
MaxStartups 5:20:30
KbdInteractiveAuthentication no
X11Forwarding yes
UsePAM no
PrintMotd no
SetEnv FOO=bar
StreamLocalBindMask 0077
PermitListen 8080 localhost:9090
PermitUserEnvironment LANG,LC_*
VersionAddendum hello world
UnusedConnectionTimeout 2h
AuthenticationMethods publickey publickey,password

Match User alice,!bob Address 10.0.0.0/8
    PasswordAuthentication no
    MaxSessions 2
    AllowTcpForwarding no
    ForceCommand /bin/echo hi
    Banner /etc/issue.net
Match Group root
    PermitRootLogin prohibit-password
    AllowUsers root alice
    AcceptEnv TZ
    DisableForwarding yes
Match LocalPort 2223
    MaxAuthTries 2
    PermitOpen localhost:80 [::1]:*
    ClientAliveCountMax 5
    AuthorizedKeysFile /etc/keys/%u
Match Host *.example.com
    PermitTTY no
    GatewayPorts clientspecified
    RekeyLimit 1G
    AuthenticationMethods password,publickey
Match Address 192.168.0.0/16,!192.168.1.0/24
    PermitEmptyPasswords yes
    LogLevel DEBUG2
Match all
    AllowAgentForwarding no
",
        key = key.display(),
        dir = d.path().display(),
    );
    let path = d.write("sshd_config", &text);
    let c = Config::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
    // sshd 9.2's plain -T dies on `Match LocalPort` (it wants an lport);
    // a connection no block matches shows the global values.
    let nothing =
        "user=nosuchuser-zz,host=nohost.invalid,addr=203.0.113.1,laddr=203.0.113.2,lport=1";
    compare_with_sshd(&c.global(), &sshd_dump(&path, Some(nothing)), "global");
    let cases = [
        ("alice", "a.example.com", "10.1.2.3", "127.0.0.1", 2223u16),
        ("bob", "b.example.com", "10.1.2.3", "127.0.0.1", 2222),
        ("root", "host", "192.168.2.9", "::1", 2224),
        ("root", "host", "192.168.1.9", "::1", 2224),
        ("carol", "c.example.org", "2001:db8::1", "127.0.0.1", 2222),
        ("nosuchuser", "x", "127.0.0.1", "127.0.0.1", 2223),
    ];
    for (user, host, addr, laddr, lport) in cases {
        let spec = format!("user={user},host={host},addr={addr},laddr={laddr},lport={lport}");
        let cx = MatchContext {
            user: Some(user.to_string()),
            groups: groups_of(user),
            host: Some(host.to_string()),
            addr: Some(addr.parse().unwrap()),
            local_addr: Some(laddr.parse().unwrap()),
            local_port: Some(lport),
            rdomain: None,
        };
        compare_with_sshd(&c.resolve(&cx), &sshd_dump(&path, Some(&spec)), &spec);
    }
}

/// Value formats give the same settings as sshd's, one option at a time.
#[test]
fn single_options_same_as_sshd_t() {
    let d = Scratch::new();
    let key = d.path().join("hostkey");
    assert!(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap()
        .success());
    let cases = [
        "LoginGraceTime 1h30m",
        "LoginGraceTime +5",
        "ClientAliveInterval 2w",
        "MaxStartups 3",
        "MaxStartups 1:100:1",
        "PerSourceMaxStartups 7",
        "PerSourceNetBlockSize 24:64",
        "PermitRootLogin forced-commands-only",
        "PermitRootLogin YES",
        "LogLevel debug",
        "LogLevel Debug3",
        "SyslogFacility local7",
        "AllowTcpForwarding all",
        "AllowStreamLocalForwarding remote",
        "GatewayPorts clientspecified",
        "PermitOpen any",
        "PermitOpen none",
        "PermitOpen a:1 [::1]:* 10.0.0.1:*",
        "PermitListen 80 *:81 [::1]:82",
        "RekeyLimit 1.5K 2m",
        "RekeyLimit default none",
        "RekeyLimit 4G",
        "StreamLocalBindMask 0",
        "StreamLocalBindUnlink yes",
        "AuthorizedKeysFile none",
        "AuthorizedKeysFile ~/x %h/y",
        "AcceptEnv A B\nAcceptEnv C",
        "SetEnv A=1 \"B=2 3\"",
        "PermitUserEnvironment yes",
        "PermitUserEnvironment LANG,LC_*",
        "Banner ~/b",
        "Banner rel",
        "PidFile rel.pid",
        "ForceCommand internal-sftp -d /x # c",
        "AuthenticationMethods publickey,keyboard-interactive:pam password",
        "ChannelTimeout session=1m global=2h",
        "UnusedConnectionTimeout 0",
        "UnusedConnectionTimeout 1d",
        "VersionAddendum none",
        "VersionAddendum my server",
        "Subsystem x /bin/x a  b 'c d'",
        "Port ssh",
        // a2port reads a port as strtonum does: a sign is allowed.
        "Port +2222",
        "ListenAddress 127.0.0.1:99\nListenAddress ::1",
        "AddressFamily inet6",
        "AddressFamily inet\nPort 1\nPort 2",
        "MaxAuthTries 0",
        "ClientAliveCountMax 0",
        "RequiredRSASize 4096",
        "DisableForwarding yes",
        "AllowAgentForwarding no",
        "PermitTTY no",
        "StrictModes no",
        "PermitEmptyPasswords yes",
        "PasswordAuthentication no",
        "PubkeyAuthentication no",
        "PubkeyAuthOptions none",
        "PubkeyAuthOptions touch-required",
        "PubkeyAuthOptions Verify-Required touch-required",
        "DSAAuthentication no",
        "ChallengeResponseAuthentication no",
        "AllowUsers a b@10.0.0.0/8\nDenyUsers c\nAllowGroups g\nDenyGroups h i",
        "Match all\nMaxSessions 3",
        "MaxSessions=4",
        "MaxSessions = 5",
    ];
    for case in cases {
        let text = format!("{case}\nHostKey {}\nPidFile /run/x.pid\n", key.display());
        let path = d.write("sshd_config", &text);
        let c = Config::load(&path, &[]).unwrap_or_else(|e| panic!("{case}: {e}"));
        compare_with_sshd(&c.global(), &sshd_dump(&path, None), case);
    }
}

/// Debian's stock configuration gives the same global values as sshd's.
#[test]
fn debian_default_same_as_sshd_t() {
    let d = Scratch::new();
    let key = d.path().join("hostkey");
    assert!(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap()
        .success());
    let stock = std::fs::read_to_string("/etc/ssh/sshd_config").expect("install openssh-server");
    let text = format!("HostKey {}\nPidFile /run/sshd.pid\n{stock}", key.display());
    let path = d.write("sshd_config", &text);
    let c = Config::load(&path, &[]).unwrap();
    compare_with_sshd(&c.global(), &sshd_dump(&path, None), "debian default");
}

const KEYWORD_SAMPLES: &[&str] = &[
    "Port",
    "ListenAddress",
    "HostKey",
    "Match",
    "Include",
    "PermitOpen",
    "AllowUsers",
    "Ciphers",
    "MaxStartups",
    "RekeyLimit",
    "AuthorizedKeysFile",
    "Subsystem",
    "ForceCommand",
    "PermitRootLogin",
    "LoginGraceTime",
    "X11Forwarding",
    "ChrootDirectory",
    "AcceptEnv",
    "SetEnv",
    "AuthenticationMethods",
    "ChannelTimeout",
    "Bogus",
    "PubkeyAcceptedAlgorithms",
    "ResilienceBufferSize",
    "StreamLocalBindMask",
    "PermitListen",
    "VersionAddendum",
];

const VALUE_SAMPLES: &[&str] = &[
    "",
    "yes",
    "no",
    "none",
    "any",
    "all",
    "*",
    "22",
    "0",
    "-1",
    "65536",
    "1h30m",
    "10:30:100",
    "1:2:3:4",
    "user",
    "User",
    "Address",
    "10.0.0.0/8",
    "10.0.0.1/8",
    "[::1]:22",
    "[::1",
    "::1",
    "h:*",
    "\"",
    "\"a b\"",
    "'x'",
    "\\",
    "#",
    "=",
    "%h/%u",
    "+aes128-ctr",
    "-*",
    "^ssh-ed25519",
    "aes*",
    "nosuch/*.conf",
    "LocalPort",
    "a=b",
    "!x,y",
    "1G",
    "1.5K",
    "~",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}", o in proptest::collection::vec("\\PC{0,40}", 0..3)) {
        if let Ok(c) = Config::parse_str(&text, "fuzz", Path::new("/nonexistent-ressh-dir"), &o) {
            let _ = c.global().dump();
            let _ = c.resolve(&MatchContext::default());
        }
    }

    #[test]
    fn keyword_soup_never_panics(
        lines in proptest::collection::vec(
            (0..KEYWORD_SAMPLES.len(), proptest::collection::vec(0..VALUE_SAMPLES.len(), 0..4), any::<bool>()),
            0..12,
        ),
        user in proptest::option::of("[a-z*]{0,4}"),
        port in proptest::option::of(any::<u16>()),
        addr in proptest::option::of(any::<[u8; 4]>()),
    ) {
        let mut text = String::new();
        for (k, vals, eq) in lines {
            text.push_str(KEYWORD_SAMPLES[k]);
            text.push(if eq { '=' } else { ' ' });
            let vs: Vec<&str> = vals.iter().map(|&v| VALUE_SAMPLES[v]).collect();
            text.push_str(&vs.join(" "));
            text.push('\n');
        }
        if let Ok(c) = Config::parse_str(&text, "fuzz", Path::new("/nonexistent-ressh-dir"), &[]) {
            let cx = MatchContext {
                user,
                groups: vec!["wheel".into()],
                host: Some("h".into()),
                addr: addr.map(IpAddr::from),
                local_addr: None,
                local_port: port,
                rdomain: None,
            };
            let s = c.resolve(&cx);
            let _ = s.dump();
            prop_assert!(!s.ports.is_empty());
        }
    }
}

#[test]
fn pam_motd_lastlog() {
    let c = parse("UsePAM yes\nPrintMotd no\nPrintLastLog no\n");
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    let s = c.global();
    assert!(s.use_pam && !s.print_motd && !s.print_last_log);
    let d = parse("Port 22").global();
    assert!(!d.use_pam && d.print_motd && d.print_last_log);
    let dump = s.dump();
    assert!(
        dump.contains("usepam yes\nprintmotd no\nprintlastlog no\n"),
        "{dump}"
    );
    parse_err("UsePAM maybe");
    parse_err("Match User x\nPrintMotd no");
}

#[test]
fn compression_global_default_yes_as_sshd() {
    assert!(parse("Port 22").global().compression);
    for (text, want) in [
        ("Compression no", false),
        ("Compression delayed", true),
        ("Compression yes", true),
    ] {
        let c = parse(text);
        assert!(c.warnings().is_empty(), "{text}: {:?}", c.warnings());
        let s = c.global();
        assert_eq!(s.compression, want, "{text}");
        let line = format!("compression {}\n", if want { "yes" } else { "no" });
        assert!(s.dump().contains(&line), "{text}");
        let offered = crate::policy::proto_config(&s).compression;
        let expect: &[&str] = if want {
            &["none", "zlib@openssh.com"]
        } else {
            &["none"]
        };
        assert_eq!(offered, expect, "{text}");
    }
    parse_err("Compression fast");
    parse_err("Match User x\nCompression no");
}

#[test]
fn tcp_keep_alive_global_default_yes() {
    assert!(parse("Port 22").global().tcp_keep_alive);
    for (text, want) in [
        ("TCPKeepAlive no", false),
        ("KeepAlive no", false),
        ("TCPKeepAlive yes", true),
    ] {
        let c = parse(text);
        assert!(c.warnings().is_empty(), "{text}: {:?}", c.warnings());
        let s = c.global();
        assert_eq!(s.tcp_keep_alive, want, "{text}");
        let line = format!("tcpkeepalive {}\n", if want { "yes" } else { "no" });
        assert!(s.dump().contains(&line), "{text}");
    }
    // First value wins, as in sshd; global only.
    assert!(
        !parse("TCPKeepAlive no\nTCPKeepAlive yes")
            .global()
            .tcp_keep_alive
    );
    parse_err("TCPKeepAlive maybe");
    parse_err("Match User x\nTCPKeepAlive no");
}

#[test]
fn certificate_keywords() {
    let s = g("TrustedUserCAKeys /etc/ressh/ca.pub\nAuthorizedPrincipalsFile .ssh/principals_%u\n\
               CASignatureAlgorithms ssh-ed25519,rsa-sha2-*\nHostCertificate /etc/ressh/host-cert.pub\n\
               HostCertificate /etc/ressh/rsa-cert.pub");
    assert_eq!(
        s.trusted_user_ca_keys.as_deref(),
        Some(Path::new("/etc/ressh/ca.pub"))
    );
    assert_eq!(
        s.authorized_principals_file.as_deref(),
        Some(".ssh/principals_%u")
    );
    assert_eq!(
        s.ca_signature_algorithms,
        vec!["ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256"]
    );
    assert_eq!(
        s.host_certificates,
        vec![
            PathBuf::from("/etc/ressh/host-cert.pub"),
            PathBuf::from("/etc/ressh/rsa-cert.pub")
        ]
    );
    let d = s.dump();
    for want in [
        "trustedusercakeys /etc/ressh/ca.pub\n",
        "authorizedprincipalsfile .ssh/principals_%u\n",
        "casignaturealgorithms ssh-ed25519,rsa-sha2-512,rsa-sha2-256\n",
        "hostcertificate /etc/ressh/host-cert.pub\n",
    ] {
        assert!(d.contains(want), "{want:?} in\n{d}");
    }
    // Defaults: none, and sshd's CA signature algorithms (no SHA-1 RSA, no
    // certificate algorithms).
    let d = g("");
    assert_eq!(d.trusted_user_ca_keys, None);
    assert_eq!(d.authorized_principals_file, None);
    assert!(d.host_certificates.is_empty());
    assert_eq!(
        d.ca_signature_algorithms,
        vec![
            "ssh-ed25519",
            "ecdsa-sha2-nistp256",
            "ecdsa-sha2-nistp384",
            "ecdsa-sha2-nistp521",
            "sk-ssh-ed25519@openssh.com",
            "sk-ecdsa-sha2-nistp256@openssh.com",
            "rsa-sha2-512",
            "rsa-sha2-256"
        ]
    );
    assert!(
        parse_err("CASignatureAlgorithms ssh-ed25519-cert-v01@openssh.com")
            .contains("names no key algorithm resshd supports")
    );
    // Per user in Match blocks; `none` turns them off there.
    let c = parse(
        "TrustedUserCAKeys /etc/ca.pub\nMatch User x\n TrustedUserCAKeys none\n AuthorizedPrincipalsFile none",
    );
    let x = c.resolve(&ctx(Some("x"), &[], None, None));
    assert_eq!(x.trusted_user_ca_keys, None);
    assert_eq!(x.authorized_principals_file, None);
    assert!(parse_err("Match User x\n HostCertificate /etc/c").contains("HostCertificate"));
}
