//! `ressh -G host` against `ssh -G host` for an ssh_config with Host and
//! Match blocks (host, originalhost, user, exec, all): the same values for
//! the fields ressh supports.

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
Host *.internal
    User ops
    ProxyCommand nc %h %p
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

/// The fields both print that ressh implements.
const FIELDS: &[&str] = &[
    "user",
    "hostname",
    "port",
    "serveraliveinterval",
    "serveralivecountmax",
    "connecttimeout",
    "batchmode",
    "stricthostkeychecking",
    // Not proxycommand: ssh -G prints it with its %-tokens, ressh -G
    // expanded.
];

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
            m.entry(k.to_string()).or_insert_with(|| v.to_string());
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
        &["-l", "alice", "-p", "2222", "other.example"],
        &["-o", "ConnectTimeout=3", "alias1"],
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
    }
    // The blocks took effect as ssh reads them.
    let a = dump(RESSH, &file, &["alias1"]);
    assert_eq!(a["serveraliveinterval"], "15");
    assert_eq!(a["connecttimeout"], "7");
    assert_eq!(a["serveralivecountmax"], "4");
    assert_eq!(a["stricthostkeychecking"], "accept-new");
}
