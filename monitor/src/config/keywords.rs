//! The keyword table: every keyword OpenSSH 9.2's sshd knows (plus
//! resshd's own), whether it may appear in a `Match` block (as in sshd
//! 9.2), and how resshd treats it. The policy is documented in the table
//! at the top of `config.rs`; this file is its machine-readable form.

/// Implemented keywords (parsed into a typed value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Imp {
    Port,
    ListenAddress,
    AddressFamily,
    HostKey,
    PidFile,
    LoginGraceTime,
    PermitRootLogin,
    SyslogFacility,
    LogLevel,
    PubkeyAuthentication,
    PubkeyAuthOptions,
    PubkeyAcceptedAlgorithms,
    HostKeyAlgorithms,
    PasswordAuthentication,
    KbdInteractiveAuthentication,
    PermitEmptyPasswords,
    PermitTty,
    StrictModes,
    PermitUserEnvironment,
    AllowTcpForwarding,
    AllowStreamLocalForwarding,
    AllowAgentForwarding,
    X11Forwarding,
    X11DisplayOffset,
    X11UseLocalhost,
    XAuthLocation,
    DisableForwarding,
    GatewayPorts,
    PermitOpen,
    PermitListen,
    AllowUsers,
    DenyUsers,
    AllowGroups,
    DenyGroups,
    Ciphers,
    Macs,
    KexAlgorithms,
    Subsystem,
    MaxStartups,
    PerSourceMaxStartups,
    PerSourceNetBlockSize,
    MaxAuthTries,
    MaxSessions,
    Banner,
    ClientAliveInterval,
    ClientAliveCountMax,
    AuthorizedKeysFile,
    AuthorizedKeysCommand,
    AuthorizedKeysCommandUser,
    AuthorizedPrincipalsCommand,
    AuthorizedPrincipalsCommandUser,
    RevokedKeys,
    AcceptEnv,
    SetEnv,
    ForceCommand,
    ChrootDirectory,
    AuthenticationMethods,
    StreamLocalBindMask,
    StreamLocalBindUnlink,
    RekeyLimit,
    RequiredRsaSize,
    ChannelTimeout,
    TrustedUserCaKeys,
    AuthorizedPrincipalsFile,
    CaSignatureAlgorithms,
    HostCertificate,
    UnusedConnectionTimeout,
    ExposeAuthInfo,
    VersionAddendum,
    PrivilegeSeparationUser,
    PrivilegeSeparationDirectory,
    BrokerSocket,
    HostKeyAgent,
    ProxyProtocolFrom,
    FleetKey,
    FleetNodes,
    FleetListenAddress,
    FleetDrain,
    ResshdKexPath,
    ResshdSessionPath,
    DetachTimeout,
    DetachGraceTime,
    MaxDetachedSessions,
    ResilienceBufferSize,
    ChannelWindowMax,
    UsePam,
    PrintMotd,
    PrintLastLog,
    TcpKeepAlive,
    Compression,
    Include,
    Match,
}

/// Syntax check applied to the value of an ignored or refused keyword, so
/// that a line sshd would reject is rejected here too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// `yes` or `no`.
    Flag,
    /// One word from the list (case-insensitive).
    OneOf(&'static [&'static str]),
    /// One word from the list (case-sensitive, as sshd compares).
    OneOfExact(&'static [&'static str]),
    /// Exactly one argument.
    One,
    /// One or more arguments.
    Some,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Implemented(Imp),
    /// Accepted and ignored with a warning. With `safe`, only those values
    /// (case-insensitive) are ignored; any other is refused with `why`.
    Ignored {
        check: Check,
        safe: Option<&'static [&'static str]>,
        why: &'static str,
    },
    /// Always refused.
    Refused {
        why: &'static str,
    },
    /// sshd ignores it too ("Deprecated option").
    Deprecated,
}

pub(crate) struct Keyword {
    pub name: &'static str,
    pub kind: Kind,
    /// Allowed inside a `Match` block.
    pub in_match: bool,
}

const G: bool = false;
const M: bool = true;

const fn imp(name: &'static str, i: Imp, in_match: bool) -> Keyword {
    Keyword {
        name,
        kind: Kind::Implemented(i),
        in_match,
    }
}

const fn ign(name: &'static str, check: Check, in_match: bool, why: &'static str) -> Keyword {
    Keyword {
        name,
        kind: Kind::Ignored {
            check,
            safe: None,
            why,
        },
        in_match,
    }
}

const fn safe(
    name: &'static str,
    check: Check,
    values: &'static [&'static str],
    in_match: bool,
    why: &'static str,
) -> Keyword {
    Keyword {
        name,
        kind: Kind::Ignored {
            check,
            safe: Some(values),
            why,
        },
        in_match,
    }
}

const fn dep(name: &'static str, in_match: bool) -> Keyword {
    Keyword {
        name,
        kind: Kind::Deprecated,
        in_match,
    }
}

const NO: &[&str] = &["no"];
const TUNMODES: &[&str] = &["no", "point-to-point", "ethernet", "yes"];
const DIGESTS: &[&str] = &["md5", "sha1", "sha256", "sha384", "sha512"];

const NO_KRB: &str = "resshd has no Kerberos or GSSAPI support";
const NO_HOSTBASED: &str = "resshd has no host-based authentication";

/// All keywords, lowercase.
pub(crate) static KEYWORDS: &[Keyword] = &[
    // Implemented.
    imp("port", Imp::Port, G),
    imp("listenaddress", Imp::ListenAddress, G),
    imp("addressfamily", Imp::AddressFamily, G),
    imp("hostkey", Imp::HostKey, G),
    imp("hostdsakey", Imp::HostKey, G),
    imp("pidfile", Imp::PidFile, G),
    imp("logingracetime", Imp::LoginGraceTime, G),
    imp("permitrootlogin", Imp::PermitRootLogin, M),
    imp("syslogfacility", Imp::SyslogFacility, G),
    imp("loglevel", Imp::LogLevel, M),
    imp("pubkeyauthentication", Imp::PubkeyAuthentication, M),
    imp("pubkeyauthoptions", Imp::PubkeyAuthOptions, M),
    imp("dsaauthentication", Imp::PubkeyAuthentication, G),
    imp("pubkeyacceptedalgorithms", Imp::PubkeyAcceptedAlgorithms, M),
    imp("pubkeyacceptedkeytypes", Imp::PubkeyAcceptedAlgorithms, M),
    imp("hostkeyalgorithms", Imp::HostKeyAlgorithms, G),
    imp("passwordauthentication", Imp::PasswordAuthentication, M),
    imp("kbdinteractiveauthentication", Imp::KbdInteractiveAuthentication, M),
    imp("challengeresponseauthentication", Imp::KbdInteractiveAuthentication, M),
    imp("skeyauthentication", Imp::KbdInteractiveAuthentication, M),
    imp("permitemptypasswords", Imp::PermitEmptyPasswords, M),
    imp("permittty", Imp::PermitTty, M),
    imp("strictmodes", Imp::StrictModes, G),
    imp("permituserenvironment", Imp::PermitUserEnvironment, G),
    imp("allowtcpforwarding", Imp::AllowTcpForwarding, M),
    imp("allowstreamlocalforwarding", Imp::AllowStreamLocalForwarding, M),
    imp("allowagentforwarding", Imp::AllowAgentForwarding, M),
    imp("disableforwarding", Imp::DisableForwarding, M),
    imp("gatewayports", Imp::GatewayPorts, M),
    imp("permitopen", Imp::PermitOpen, M),
    imp("permitlisten", Imp::PermitListen, M),
    imp("allowusers", Imp::AllowUsers, M),
    imp("denyusers", Imp::DenyUsers, M),
    imp("allowgroups", Imp::AllowGroups, M),
    imp("denygroups", Imp::DenyGroups, M),
    imp("ciphers", Imp::Ciphers, G),
    imp("macs", Imp::Macs, G),
    imp("kexalgorithms", Imp::KexAlgorithms, G),
    imp("subsystem", Imp::Subsystem, G),
    imp("maxstartups", Imp::MaxStartups, G),
    imp("persourcemaxstartups", Imp::PerSourceMaxStartups, G),
    imp("persourcenetblocksize", Imp::PerSourceNetBlockSize, G),
    imp("maxauthtries", Imp::MaxAuthTries, M),
    imp("maxsessions", Imp::MaxSessions, M),
    imp("banner", Imp::Banner, M),
    imp("clientaliveinterval", Imp::ClientAliveInterval, M),
    imp("clientalivecountmax", Imp::ClientAliveCountMax, M),
    imp("authorizedkeysfile", Imp::AuthorizedKeysFile, M),
    imp("authorizedkeyscommand", Imp::AuthorizedKeysCommand, M),
    imp("authorizedkeyscommanduser", Imp::AuthorizedKeysCommandUser, M),
    imp(
        "authorizedprincipalscommand",
        Imp::AuthorizedPrincipalsCommand,
        M,
    ),
    imp(
        "authorizedprincipalscommanduser",
        Imp::AuthorizedPrincipalsCommandUser,
        M,
    ),
    imp("revokedkeys", Imp::RevokedKeys, M),
    imp("acceptenv", Imp::AcceptEnv, M),
    imp("setenv", Imp::SetEnv, M),
    imp("forcecommand", Imp::ForceCommand, M),
    imp("chrootdirectory", Imp::ChrootDirectory, M),
    imp("authenticationmethods", Imp::AuthenticationMethods, M),
    imp("streamlocalbindmask", Imp::StreamLocalBindMask, M),
    imp("streamlocalbindunlink", Imp::StreamLocalBindUnlink, M),
    imp("rekeylimit", Imp::RekeyLimit, M),
    imp("requiredrsasize", Imp::RequiredRsaSize, M),
    imp("channeltimeout", Imp::ChannelTimeout, M),
    imp("trustedusercakeys", Imp::TrustedUserCaKeys, M),
    imp("authorizedprincipalsfile", Imp::AuthorizedPrincipalsFile, M),
    imp("casignaturealgorithms", Imp::CaSignatureAlgorithms, M),
    imp("hostcertificate", Imp::HostCertificate, G),
    imp("unusedconnectiontimeout", Imp::UnusedConnectionTimeout, M),
    imp("exposeauthinfo", Imp::ExposeAuthInfo, M),
    imp("versionaddendum", Imp::VersionAddendum, G),
    imp("usepam", Imp::UsePam, G),
    imp("printmotd", Imp::PrintMotd, G),
    imp("printlastlog", Imp::PrintLastLog, G),
    imp("tcpkeepalive", Imp::TcpKeepAlive, G),
    imp("keepalive", Imp::TcpKeepAlive, G),
    imp("compression", Imp::Compression, G),
    imp("include", Imp::Include, M),
    imp("match", Imp::Match, M),
    // resshd's own.
    imp("privilegeseparationuser", Imp::PrivilegeSeparationUser, G),
    imp("privilegeseparationdirectory", Imp::PrivilegeSeparationDirectory, G),
    imp("brokersocket", Imp::BrokerSocket, G),
    imp("hostkeyagent", Imp::HostKeyAgent, G),
    imp("proxyprotocolfrom", Imp::ProxyProtocolFrom, G),
    imp("fleetkey", Imp::FleetKey, G),
    imp("fleetnodes", Imp::FleetNodes, G),
    imp("fleetlistenaddress", Imp::FleetListenAddress, G),
    imp("fleetdrain", Imp::FleetDrain, G),
    imp("resshdkexpath", Imp::ResshdKexPath, G),
    imp("resshdsessionpath", Imp::ResshdSessionPath, G),
    imp("detachtimeout", Imp::DetachTimeout, M),
    imp("detachgracetime", Imp::DetachGraceTime, M),
    imp("maxdetachedsessions", Imp::MaxDetachedSessions, M),
    imp("resiliencebuffersize", Imp::ResilienceBufferSize, M),
    imp("channelwindowmax", Imp::ChannelWindowMax, M),
    // Ignored with a warning: the feature is absent and its absence only
    // makes resshd more restrictive, or the keyword tunes something resshd
    // does its own way.
    imp("x11forwarding", Imp::X11Forwarding, M),
    imp("x11displayoffset", Imp::X11DisplayOffset, M),
    imp("x11uselocalhost", Imp::X11UseLocalhost, M),
    imp("xauthlocation", Imp::XAuthLocation, G),
    ign("ipqos", Check::Some, M, "resshd does not set IP QoS"),
    ign("modulifile", Check::One, G, "resshd has no Diffie-Hellman group exchange"),
    ign("permituserrc", Check::Flag, M, "resshd never runs ~/.ssh/rc"),
    ign(
        "ignorerhosts",
        Check::OneOf(&["yes", "no", "shosts-only"]),
        M,
        NO_HOSTBASED,
    ),
    ign("ignoreuserknownhosts", Check::Flag, G, NO_HOSTBASED),
    ign("hostbasedusesnamefrompacketonly", Check::Flag, M, NO_HOSTBASED),
    ign("hostbasedacceptedalgorithms", Check::One, M, NO_HOSTBASED),
    ign("hostbasedacceptedkeytypes", Check::One, M, NO_HOSTBASED),
    ign("kerberosorlocalpasswd", Check::Flag, G, NO_KRB),
    ign("kerberosticketcleanup", Check::Flag, G, NO_KRB),
    ign("kerberosgetafstoken", Check::Some, G, NO_KRB),
    ign("kerberostgtpassing", Check::Some, G, NO_KRB),
    ign("afstokenpassing", Check::Some, G, NO_KRB),
    ign("gssapicleanupcredentials", Check::Flag, G, NO_KRB),
    ign("gssapicleanupcreds", Check::Flag, G, NO_KRB),
    ign("gssapistrictacceptorcheck", Check::Flag, G, NO_KRB),
    ign("gssapistorecredentialsonrekey", Check::Flag, G, NO_KRB),
    ign("gssapikexalgorithms", Check::One, G, NO_KRB),
    ign("gssusesessionccache", Check::Some, G, NO_KRB),
    ign("gssapiusesessioncredcache", Check::Some, G, NO_KRB),
    ign("logverbose", Check::Some, M, "resshd has no per-function logging"),
    ign("securitykeyprovider", Check::One, G, "resshd only verifies FIDO (sk-) keys' signatures"),
    ign(
        "fingerprinthash",
        Check::OneOf(DIGESTS),
        G,
        "resshd logs SHA256 fingerprints",
    ),
    ign("debianbanner", Check::Flag, G, "resshd's version string is its own"),
    // Ignored only at values that match what resshd does; any other value
    // is refused, since silently dropping it would weaken security or
    // silently turn the server into something else than configured.
    safe(
        "usedns",
        Check::Flag,
        NO,
        G,
        "resshd never resolves peer names; host-name patterns (DenyUsers user@*.example) would silently stop matching",
    ),
    safe("hostbasedauthentication", Check::Flag, NO, M, NO_HOSTBASED),
    safe("kerberosauthentication", Check::Flag, NO, M, NO_KRB),
    safe("gssapiauthentication", Check::Flag, NO, M, NO_KRB),
    safe("gssapikeyexchange", Check::Flag, NO, G, NO_KRB),
    safe(
        "permittunnel",
        Check::OneOfExact(TUNMODES),
        NO,
        M,
        "resshd has no tun/tap forwarding",
    ),
    Keyword {
        name: "rdomain",
        kind: Kind::Refused {
            why: "routing domains are not supported on this platform",
        },
        in_match: M,
    },
    // sshd ignores these too.
    dep("protocol", G),
    dep("pamauthenticationviakbdint", G),
    dep("serverkeybits", G),
    dep("keyregenerationinterval", G),
    dep("rhostsauthentication", G),
    dep("rhostsrsaauthentication", M),
    dep("rsaauthentication", M),
    dep("checkmail", G),
    dep("permitblacklistedkeys", G),
    dep("uselogin", G),
    dep("verifyreversemapping", G),
    dep("reversemappingcheck", G),
    dep("authorizedkeysfile2", M),
    dep("useprivilegeseparation", G),
];

/// Looks a keyword up, case-insensitively.
pub(crate) fn lookup(keyword: &str) -> Option<&'static Keyword> {
    KEYWORDS
        .iter()
        .find(|k| k.name.eq_ignore_ascii_case(keyword))
}

/// OpenSSH 9.2's cipher names (to tell a name resshd lacks from a typo).
pub(crate) const OPENSSH_CIPHERS: &[&str] = &[
    "3des-cbc",
    "aes128-cbc",
    "aes192-cbc",
    "aes256-cbc",
    "rijndael-cbc@lysator.liu.se",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "none",
];

/// OpenSSH 9.2's MAC names.
pub(crate) const OPENSSH_MACS: &[&str] = &[
    "hmac-sha1",
    "hmac-sha1-96",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "hmac-md5",
    "hmac-md5-96",
    "umac-64@openssh.com",
    "umac-128@openssh.com",
    "hmac-sha1-etm@openssh.com",
    "hmac-sha1-96-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-md5-etm@openssh.com",
    "hmac-md5-96-etm@openssh.com",
    "umac-64-etm@openssh.com",
    "umac-128-etm@openssh.com",
];

/// OpenSSH 9.2's key-exchange names (Debian's build) and
/// mlkem768x25519-sha256 (OpenSSH 9.9+).
pub(crate) const OPENSSH_KEX: &[&str] = &[
    "mlkem768x25519-sha256",
    "diffie-hellman-group1-sha1",
    "diffie-hellman-group14-sha1",
    "diffie-hellman-group14-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group-exchange-sha1",
    "diffie-hellman-group-exchange-sha256",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
];

/// OpenSSH 9.2's key and signature algorithm names.
pub(crate) const OPENSSH_KEY_ALGS: &[&str] = &[
    "ssh-ed25519",
    "ssh-ed25519-cert-v01@openssh.com",
    "sk-ssh-ed25519@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
    "ssh-rsa",
    "rsa-sha2-256",
    "rsa-sha2-512",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "webauthn-sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
    "rsa-sha2-256-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com",
    "ssh-dss-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ssh-xmss@openssh.com",
    "ssh-xmss-cert-v01@openssh.com",
];

/// resshd's host key signature algorithms, preferred first (OpenSSH's
/// default order restricted to what `ressh_proto::keys` does).
pub fn host_key_algs() -> Vec<&'static str> {
    with_certs(ressh_proto::keys::KeyType::all_signature_algorithms())
}

/// The certificate algorithms of `plain` (in its order), then `plain`: as
/// OpenSSH's default lists put them.
fn with_certs(plain: Vec<&'static str>) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for a in &plain {
        if let Some(t) = ressh_proto::keys::KeyType::from_signature_algorithm(a) {
            for c in ressh_proto::cert::signature_algorithms(t) {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
    }
    out.extend(plain);
    out
}

/// The signature algorithms a CA may have signed certificates with
/// (CASignatureAlgorithms' default: the plain user key algorithms).
pub fn ca_signature_algs() -> Vec<&'static str> {
    ressh_proto::keys::KeyType::user_signature_algorithms()
}

/// resshd's user key signature algorithms: the host key ones and the FIDO
/// security keys', in OpenSSH's order.
pub fn user_key_algs() -> Vec<&'static str> {
    with_certs(ressh_proto::keys::KeyType::user_signature_algorithms())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for (i, k) in KEYWORDS.iter().enumerate() {
            assert_eq!(k.name, k.name.to_ascii_lowercase(), "{}", k.name);
            assert!(
                KEYWORDS[i + 1..].iter().all(|o| o.name != k.name),
                "duplicate {}",
                k.name
            );
        }
        for a in user_key_algs() {
            assert!(OPENSSH_KEY_ALGS.contains(&a));
        }
        for c in ressh_proto::cipher::CIPHERS {
            assert!(OPENSSH_CIPHERS.contains(&c.name), "{}", c.name);
        }
        for m in ressh_proto::cipher::MACS {
            assert!(OPENSSH_MACS.contains(&m.name), "{}", m.name);
        }
        for k in ressh_proto::kex::KEX_SUPPORTED {
            assert!(OPENSSH_KEX.contains(k), "{k}");
        }
    }
}
