//! `ressh -G host` against `ssh -G host` for an ssh_config with Host and
//! Match blocks (host, originalhost, user, exec, all): the same values for
//! the fields ressh supports, commands and IdentityFile as written (with
//! their `%` tokens), forwards in ssh's format.

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;
use std::time::Duration;

const RESSH: &str = env!("CARGO_BIN_EXE_ressh");

const CONFIG: &str = r#"
Host alias1
    HostName real.example
    Port 2201
    User alice
    IdentityFile ~/.ssh/id_%r@%h:%p
    LocalForward 127.0.0.1:8080 db:5432
    LocalForward 8081 [::1]:80
    RemoteForward 0 localhost:80
    DynamicForward 1080
    DynamicForward [::1]:1081
    GatewayPorts yes
    ExitOnForwardFailure yes
    HashKnownHosts yes
    RemoteCommand echo "a  b" %h %r
Host *.internal
    User ops
    ProxyCommand  nc -X connect -x "proxy.example:3128"  %h %p # as %r
    UserKnownHostsFile ~/kh_%h /tmp/kh_%r
Match host real.example user alice
    ServerAliveInterval 15
    # (Debian's ssh makes BatchMode imply ServerAliveInterval 300 when unset)
    BatchMode yes
Match originalhost al* exec "test %h = real.example"
    ConnectTimeout 7
Match exec "exit 1"
    ServerAliveCountMax 9
Match !host *.internal exec "test %r = alice"
    StrictHostKeyChecking accept-new
Match all
    ServerAliveCountMax 4
"#;

/// The fields both print that ressh implements, with all their values
/// (in order, for the ones that may repeat).
const FIELDS: &[&str] = &[
    "host",
    "user",
    "hostname",
    "port",
    "serveraliveinterval",
    "serveralivecountmax",
    "connecttimeout",
    "batchmode",
    "stricthostkeychecking",
    "proxycommand",
    "proxyjump",
    "remotecommand",
    "userknownhostsfile",
    "localforward",
    "remoteforward",
    "dynamicforward",
    "gatewayports",
    "exitonforwardfailure",
    "forkafterauthentication",
    "hashknownhosts",
];

/// `-G`'s output: each key's values joined by newlines.
fn dump(bin: &str, file: &str, args: &[&str]) -> BTreeMap<String, String> {
    let out = ressh_testkit::run_timeout(
        Command::new(bin).args(["-F", file, "-G"]).args(args),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{bin} -G {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut m = BTreeMap::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((k, v)) = l.split_once(' ') {
            m.entry(k.to_string())
                .and_modify(|old: &mut String| {
                    old.push('\n');
                    old.push_str(v)
                })
                .or_insert_with(|| v.to_string());
        }
    }
    m
}

#[test]
fn print_config_matches_ssh() {
    let ssh = ressh_testkit::require_cmd("ssh");
    let dir = ressh_testkit::TempDir::new("ressh-G");
    let file = dir.join("ssh_config");
    fs::write(&file, CONFIG).unwrap();
    let file = file.display().to_string();
    for args in [
        &["alias1"][..],
        &["db.internal"],
        &["-l", "bob", "-p", "2222", "db.internal"],
        &["-l", "alice", "-p", "2222", "other.example"],
        &["-o", "ConnectTimeout=3", "alias1"],
        &["-D", "127.0.0.1:1090", "-L", "1:h:2", "-f", "alias1"],
        &["-o", "ProxyCommand=ssh -W \"%h:%p\"  -l %r jump", "x"],
        &["-J", "u@jump:2222,other", "x", "true"],
        // %n is the host as typed, %h lowercased.
        &["-o", "RemoteCommand=echo %n %h", "MiXed.Example"],
    ] {
        let ours = dump(RESSH, &file, args);
        let theirs = dump(&ssh.display().to_string(), &file, args);
        for f in FIELDS {
            match (ours.get(*f), theirs.get(*f)) {
                // ssh prints some defaults ressh leaves out (and the other
                // way round): compare what both print.
                (Some(a), Some(b)) => assert_eq!(a, b, "{f} for {args:?}"),
                (None, Some(b)) if b == "none" || b == "0" => {}
                (Some(_), None) | (None, None) => {}
                (None, Some(b)) => panic!("ressh -G {args:?} has no {f} (ssh: {b})"),
            }
        }
        // IdentityFile as written; by default ssh's list without the key
        // types ressh lacks (security keys, XMSS, DSA).
        let (ours, theirs) = (&ours["identityfile"], &theirs["identityfile"]);
        if theirs.starts_with("~/.ssh/id_rsa\n") {
            assert_eq!(
                ours, "~/.ssh/id_rsa\n~/.ssh/id_ecdsa\n~/.ssh/id_ed25519",
                "{args:?}"
            );
            assert!(ours.lines().all(|l| theirs.lines().any(|t| t == l)));
        } else {
            assert_eq!(ours, theirs, "identityfile for {args:?}");
        }
    }
    // The blocks took effect as ssh reads them.
    let a = dump(RESSH, &file, &["alias1"]);
    assert_eq!(a["serveraliveinterval"], "15");
    assert_eq!(a["connecttimeout"], "7");
    assert_eq!(a["serveralivecountmax"], "4");
    assert_eq!(a["stricthostkeychecking"], "accept-new");
    assert_eq!(a["remotecommand"], "echo \"a  b\" real.example alice");
    assert_eq!(a["dynamicforward"], "1080\n[::1]:1081");
    let a = dump(RESSH, &file, &["db.internal"]);
    assert_eq!(
        a["proxycommand"],
        "nc -X connect -x \"proxy.example:3128\"  %h %p # as %r"
    );
    // As ssh, -f needs a command, and a command excludes RemoteCommand.
    for (args, msg) in [
        (&["-f", "db.internal"][..], "Cannot fork into background"),
        (
            &["alias1", "true"],
            "Cannot execute command-line and remote command",
        ),
    ] {
        for bin in [RESSH, &ssh.display().to_string()] {
            let out = ressh_testkit::run_timeout(
                Command::new(bin).args(["-F", &file, "-G"]).args(args),
                Duration::from_secs(30),
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(255), "{bin} {args:?}");
            assert!(err.contains(msg), "{bin} {args:?}: {err}");
        }
    }
}

/// The syntax ressh shares with ssh through ressh-compat, where ressh
/// used to differ: quoting with `'` and `\` (OpenSSH's argv_split), times
/// with units (convtime) for ServerAliveInterval and ConnectTimeout, `Host`
/// words as single case-sensitive patterns against the host as typed, and
/// an Include glob. ssh -G is the reference for every value.
#[test]
fn shared_syntax_matches_ssh() {
    let ssh = ressh_testkit::require_cmd("ssh");
    let ssh = ssh.display().to_string();
    let dir = ressh_testkit::TempDir::new("ressh-G-syntax");
    fs::create_dir_all(dir.join("inc.d")).unwrap();
    fs::write(dir.join("inc.d/a.conf"), "User included\n").unwrap();
    fs::write(dir.join("inc.d/b.conf"), "User second\nPort 2400\n").unwrap();
    let file = dir.join("ssh_config");
    fs::write(
        &file,
        format!(
            r#"
Host FOO
    User upper
Host foo,bar
    Port 2200
Host inc
    Include {}/inc.d/*.conf
Host q*
    ServerAliveInterval 1m
    ConnectTimeout 1h30s
    IdentityFile "/a b/k"
    IdentityFile '/c d/k'
    IdentityFile /e\ f/k
    IdentityFile '/it\'s'/k
Host *
    ServerAliveCountMax 5
"#,
            dir.path().display()
        ),
    )
    .unwrap();
    let file = file.display().to_string();
    for host in ["FOO", "foo", "bar", "inc", "qx"] {
        let ours = dump(RESSH, &file, &[host]);
        let theirs = dump(&ssh, &file, &[host]);
        for f in [
            "user",
            "port",
            "serveraliveinterval",
            "serveralivecountmax",
            "connecttimeout",
        ] {
            match (ours.get(f), theirs.get(f)) {
                // ressh leaves out what is unset.
                (None, Some(t)) => assert!(t == "none" || t == "0", "{f} for {host}: {t}"),
                (a, b) => assert_eq!(a, b, "{f} for {host}"),
            }
        }
        if host == "qx" {
            assert_eq!(ours["identityfile"], theirs["identityfile"]);
        }
    }
    // What ssh says, so that a change of Debian's ssh shows here too.
    let q = dump(&ssh, &file, &["qx"]);
    assert_eq!(q["serveraliveinterval"], "60");
    assert_eq!(q["connecttimeout"], "3630");
    assert_eq!(q["identityfile"], "/a b/k\n/c d/k\n/e f/k\n/it's/k");
    assert_eq!(dump(&ssh, &file, &["FOO"])["user"], "upper");
    assert_ne!(dump(&ssh, &file, &["foo"])["user"], "upper");
    assert_eq!(dump(&ssh, &file, &["inc"])["user"], "included");
}

/// docs/ssh_config.md's configuration "found in the wild" (connection
/// sharing in `Host *`, an Include of ~/.ssh/config.d, macOS's UseKeychain
/// under IgnoreUnknown, Match host/exec/originalhost/final, keywords ressh
/// ignores) as a real user's ~/.ssh/config: ressh accepts it, says with
/// -v what it ignores, and `ressh -G` prints what `ssh -G` prints for every
/// keyword both print.
#[test]
fn wild_config_matches_ssh() {
    ressh_testkit::require_root();
    let ssh = ressh_testkit::require_cmd("ssh").display().to_string();
    let config = ressh_testkit::wild_config();
    let user = ressh_testkit::TestUser::create("wildcfg");
    let dot = user.home.join(".ssh");
    fs::create_dir_all(dot.join("config.d")).unwrap();
    fs::write(dot.join("config"), &config).unwrap();
    fs::write(
        dot.join("config.d/10-work.conf"),
        "Host work\n    HostName Work.Example\n    User w\n",
    )
    .unwrap();
    for (p, mode) in [
        (dot.join("config.d/10-work.conf"), 0o600),
        (dot.join("config"), 0o600),
        (dot.join("config.d"), 0o700),
        (dot.clone(), 0o700),
    ] {
        user.own(&p, mode);
    }
    let as_user = |bin: &str, args: &[&str]| {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(bin);
        c.args(args)
            .uid(user.uid)
            .gid(user.gid)
            .current_dir(&user.home)
            .env("HOME", &user.home)
            .env("USER", &user.name);
        let out = ressh_testkit::run_timeout(&mut c, Duration::from_secs(30));
        assert!(
            out.status.success(),
            "{bin} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let dump = |bin: &str, host: &str| -> BTreeMap<String, String> {
        let out = as_user(bin, &["-G", host]);
        let mut m = BTreeMap::new();
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = l.split_once(' ') {
                m.entry(k.to_string())
                    .and_modify(|old: &mut String| {
                        old.push('\n');
                        old.push_str(v)
                    })
                    .or_insert_with(|| v.to_string());
            }
        }
        m
    };
    for host in ["work", "Web01.example", "a.example", "other"] {
        let ours = dump(RESSH, host);
        let theirs = dump(&ssh, host);
        let mut compared = 0;
        for (k, v) in &ours {
            // The default IdentityFile list: ssh's has key types ressh
            // lacks (print_config_matches_ssh checks it).
            if k == "identityfile" {
                continue;
            }
            if let Some(t) = theirs.get(k) {
                assert_eq!(v, t, "{k} for {host}");
                compared += 1;
            }
        }
        assert!(compared >= 20, "{compared} keywords compared for {host}");
    }
    let a = dump(RESSH, "Web01.example");
    for (k, v) in [
        ("user", "ops"),
        ("port", "2222"),
        ("serveralivecountmax", "5"),
        ("controlmaster", "auto"),
        ("controlpersist", "600"),
    ] {
        assert_eq!(a[k], v, "{k}");
    }
    assert_eq!(dump(RESSH, "work")["hostname"], "work.example");
    let err = as_user(RESSH, &["-v", "-G", "a.example"]).stderr;
    let err = String::from_utf8_lossy(&err);
    for ignored in [
        "ignoring addkeystoagent yes",
        "ignoring usekeychain yes",
        "ignoring canonicalizehostname yes",
        "ignoring gssapiauthentication no",
        "ignoring updatehostkeys yes",
    ] {
        assert!(err.contains(ignored), "no {ignored:?} in {err}");
    }
}
