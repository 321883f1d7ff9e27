//! The files under packaging/ say what resshd does: the configuration's
//! commented defaults, the man pages, debian/copyright, the systemd unit.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ressh_monitor::config::Config;
use ressh_testkit::{require_cmd, run, run_ok};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let p = workspace().join(rel);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const CONFIG: &str = "packaging/config/resshd_config";

/// The configuration without its `Include` (so the host's own drop-ins,
/// if any, cannot leak in), and the same with every `#Keyword value` line
/// uncommented (not the `#Match` example block).
fn config_and_uncommented() -> (String, String) {
    let shipped = read(CONFIG);
    let mut plain = String::new();
    let mut uncommented = String::new();
    for line in shipped.lines() {
        if line.starts_with("Include ") {
            continue;
        }
        plain.push_str(line);
        plain.push('\n');
        match line.strip_prefix('#') {
            Some(rest)
                if rest.starts_with(|c: char| c.is_ascii_uppercase())
                    && !rest.starts_with("Match") =>
            {
                uncommented.push_str(rest)
            }
            _ => uncommented.push_str(line),
        }
        uncommented.push('\n');
    }
    (plain, uncommented)
}

fn parse(text: &str, name: &str) -> Config {
    let c = Config::parse_str(text, name, Path::new("/nonexistent"), &[])
        .unwrap_or_else(|e| panic!("{name} does not parse:\n{e}"));
    assert!(c.warnings().is_empty(), "{name}: {:?}", c.warnings());
    c
}

fn sorted_dump(c: &Config) -> Vec<String> {
    let mut d: Vec<String> = c.global().dump().lines().map(String::from).collect();
    d.sort();
    d
}

/// The `#Keyword value` lines of the shipped file are resshd's defaults:
/// uncommenting them all changes nothing, and every setting resshd reports
/// (`Settings::dump`) is among them.
#[test]
fn config_comments_show_the_defaults() {
    let (plain, uncommented) = config_and_uncommented();
    let shipped = parse(&plain, CONFIG);
    let all = parse(&uncommented, "uncommented");
    assert_eq!(
        sorted_dump(&shipped),
        sorted_dump(&all),
        "a commented value in {CONFIG} is not the default"
    );

    let lower = plain.to_ascii_lowercase();
    let mut missing = Vec::new();
    for line in parse("", "empty").global().dump().lines() {
        let key = line.split(' ').next().unwrap_or_default();
        // Accepted only at "no" (refused otherwise), not a setting to show.
        if key == "permittunnel" {
            continue;
        }
        let shown = lower
            .lines()
            .any(|l| l.strip_prefix('#').unwrap_or(l).split(' ').next() == Some(key));
        if !shown {
            missing.push(key.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "{CONFIG} lacks a (commented) line for {missing:?}"
    );
}

/// Every keyword of the shipped file, and those without a default value,
/// has its entry in resshd_config(5), every option of ressh its entry in
/// ressh(1); the pages render without warnings.
#[test]
fn man_pages_name_every_keyword_and_render_cleanly() {
    let page = read("packaging/man/resshd_config.5");
    let (_, uncommented) = config_and_uncommented();
    let mut keywords: Vec<String> = uncommented
        .lines()
        .filter_map(|l| l.split([' ', '\t']).next())
        .filter(|k| k.starts_with(|c: char| c.is_ascii_uppercase()))
        .map(String::from)
        .collect();
    for k in [
        "AllowUsers",
        "DenyUsers",
        "AllowGroups",
        "DenyGroups",
        "SetEnv",
        "Include",
        "Match",
    ] {
        keywords.push(k.to_string());
    }
    keywords.sort();
    keywords.dedup();
    let entries: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with(".B ") || l.starts_with(".BR "))
        .collect();
    let missing: Vec<&String> = keywords
        .iter()
        .filter(|k| {
            !entries.iter().any(|l| {
                l.split([' ', ','])
                    .any(|w| w.trim_matches('"') == k.as_str())
            })
        })
        .collect();
    assert!(missing.is_empty(), "resshd_config(5) lacks {missing:?}");

    // ressh(1) has an entry for every option letter the client parses.
    let args = read("client/src/args.rs");
    let ressh1 = read("packaging/man/ressh.1");
    let letters = |name: &str| -> String {
        args.lines()
            .find_map(|l| l.strip_prefix(&format!("const {name}: &str = \"")))
            .and_then(|l| l.split('"').next())
            .unwrap_or_else(|| panic!("no {name} in client/src/args.rs"))
            .to_string()
    };
    let undocumented: Vec<char> = (letters("FLAGS") + &letters("WITH_ARG"))
        .chars()
        .filter(|c| !ressh1.contains(&format!("\\-{c}")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "ressh(1) lacks the options {undocumented:?}"
    );

    // restls(1) and restls.conf(5) have an entry for every option restls
    // parses (`Opt("name", ...` in tls/src/args.rs), and the page its
    // command-line-only ones.
    let args = read("tls/src/args.rs");
    let table = args
        .split_once("const OPTS: &[Opt] = &[")
        .and_then(|(_, t)| t.split_once("];"))
        .map(|(t, _)| t)
        .expect("no OPTS in tls/src/args.rs");
    let opts: Vec<String> = table
        .split("Opt(")
        .skip(1)
        .filter_map(|o| o.split('"').nth(1))
        .map(String::from)
        .collect();
    assert!(opts.len() > 10, "no options found in tls/src/args.rs");
    let restls1 = read("packaging/man/restls.1");
    let conf5 = read("packaging/man/restls.conf.5");
    let roff = |name: &str| name.replace('-', "\\-");
    for o in &opts {
        assert!(
            restls1.contains(&format!(".BI \\-\\-{} ", roff(o))),
            "restls(1) lacks --{o}"
        );
        if o != "mode" {
            assert!(
                conf5.contains(&format!(".BI {} ", roff(o))),
                "restls.conf(5) lacks {o}"
            );
        }
    }
    assert!(conf5.contains(".BI mode "), "restls.conf(5) lacks mode");
    for o in ["config", "check", "help", "version"] {
        assert!(
            restls1.contains(&format!("\\-\\-{o}")),
            "restls(1) lacks --{o}"
        );
    }

    let groff = require_cmd("groff");
    for page in [
        "packaging/man/resshd.8",
        "packaging/man/resshd_config.5",
        "packaging/man/ressh.1",
        "packaging/man/restls.1",
        "packaging/man/restls.conf.5",
    ] {
        let out = run_ok(
            Command::new(&groff)
                .args(["-man", "-ww", "-z"])
                .arg(workspace().join(page)),
        );
        assert!(
            out.stderr.is_empty(),
            "{page} renders with warnings:\n{}",
            text(&out.stderr)
        );
    }
}

/// Cargo's license expression as a DEP-5 `License:` value.
fn dep5_license(spdx: &str) -> String {
    spdx.replace('/', " OR ")
        .split(' ')
        .map(|w| match w {
            "OR" => "or",
            "AND" => "and",
            w => w,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// debian/copyright has a `Files: vendor/<crate>/*` paragraph, with the
/// crate's own license, for every crate linked into the packaged binaries.
#[test]
fn copyright_lists_every_linked_crate() {
    let copyright = read("packaging/debian/copyright");
    let mut listed: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in copyright.lines() {
        if let Some(f) = line.strip_prefix("Files: vendor/") {
            current = f.strip_suffix("/*").map(String::from);
        } else if let Some(l) = line.strip_prefix("License: ") {
            if let Some(name) = current.take() {
                listed.insert(name, l.to_string());
            }
        } else if line.is_empty() {
            current = None;
        }
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = run(Command::new(cargo)
        .current_dir(workspace())
        .args([
            "tree", "-e", "normal", "--prefix", "none", "--format", "{p}|{l}",
        ])
        .args([
            "-p",
            "ressh-daemon",
            "-p",
            "ressh-kex-worker",
            "-p",
            "ressh-session-worker",
            "-p",
            "ressh-tls",
        ]));
    assert!(out.status.success(), "cargo tree: {}", text(&out.stderr));
    let mut problems = Vec::new();
    for line in text(&out.stdout).lines() {
        let Some((pkg, license)) = line.split_once('|') else {
            continue;
        };
        let name = pkg.split(' ').next().unwrap_or_default();
        if name.is_empty() || name.starts_with("ressh-") {
            continue;
        }
        let want = dep5_license(license.trim_end_matches("(*)").trim());
        match listed.get(name) {
            None => problems.push(format!("{name} ({want}) is not listed")),
            Some(l) if *l != want => {
                problems.push(format!("{name}: listed as {l}, Cargo says {want}"))
            }
            Some(_) => {}
        }
    }
    problems.sort();
    problems.dedup();
    assert!(
        problems.is_empty(),
        "packaging/debian/copyright is out of date:\n{}",
        problems.join("\n")
    );
}

/// `Key=value` lines of a unit, in order (repeated keys kept).
fn unit_settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter(|l| !l.starts_with(['#', ';', '[']))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// "Overall exposure level for X: 9.5 UNSAFE" of systemd-analyze security.
fn exposure(unit: &Path) -> f64 {
    let out = run_ok(
        Command::new(require_cmd("systemd-analyze"))
            .args(["security", "--offline=true", "--no-pager"])
            .arg(unit),
    );
    let t = text(&out.stdout);
    t.lines()
        .find_map(|l| l.split_once("Overall exposure level for "))
        .and_then(|(_, rest)| rest.split_once(": "))
        .and_then(|(_, v)| v.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{t}"))
}

/// The unit keeps what docs/packaging.md promises, and its exposure score
/// stays no worse than that of Debian's ssh.service.
#[test]
fn unit_settings_and_exposure() {
    let path = workspace().join("packaging/systemd/resshd.service");
    let s = unit_settings(&read("packaging/systemd/resshd.service"));
    let get = |k: &str| -> Vec<&str> {
        s.iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("Type"), ["notify"]);
    assert_eq!(
        get("ExecStartPre"),
        ["/usr/libexec/ressh/resshd-keygen", "/usr/sbin/resshd -t"]
    );
    assert_eq!(get("ExecStart"), ["/usr/sbin/resshd -D -e"]);
    assert_eq!(
        get("ExecReload"),
        ["/usr/sbin/resshd -t", "/bin/kill -HUP $MAINPID"]
    );
    assert_eq!(get("KillMode"), ["process"]);
    assert_eq!(get("Restart"), ["on-failure"]);
    assert_eq!(get("RuntimeDirectory"), ["resshd"]);
    assert_eq!(get("RuntimeDirectoryMode"), ["0755"]);
    // Each of these would change what users' sessions see or may do.
    for k in [
        "ProtectHome",
        "PrivateTmp",
        "NoNewPrivileges",
        "ProtectSystem",
        "CapabilityBoundingSet",
        "PrivateDevices",
        "RestrictSUIDSGID",
        "MemoryDenyWriteExecute",
        "RestrictNamespaces",
    ] {
        assert!(get(k).is_empty(), "{k}= would confine users' sessions");
    }

    let ours = exposure(&path);
    let ssh = Path::new("/lib/systemd/system/ssh.service");
    assert!(
        ssh.exists(),
        "{} is missing: install openssh-server (.ci/run does)",
        ssh.display()
    );
    let theirs = exposure(ssh);
    eprintln!("exposure: resshd.service {ours}, ssh.service {theirs}");
    assert!(
        ours <= theirs,
        "resshd.service exposure {ours} is worse than ssh.service's {theirs}"
    );
}

/// restls@.service: Type=notify, reload checks then sends SIGHUP, a dynamic
/// user in the group restls, and an exposure below 2.0.
#[test]
fn restls_unit_settings_and_exposure() {
    let s = unit_settings(&read("packaging/systemd/restls@.service"));
    let get = |k: &str| -> Vec<&str> {
        s.iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("Type"), ["notify"]);
    assert_eq!(
        get("ExecStart"),
        ["/usr/bin/restls --config /etc/restls/%i.conf"]
    );
    assert_eq!(
        get("ExecReload"),
        [
            "/usr/bin/restls --config /etc/restls/%i.conf --check",
            "/bin/kill -HUP $MAINPID"
        ]
    );
    assert_eq!(get("DynamicUser"), ["yes"]);
    assert_eq!(get("SupplementaryGroups"), ["restls"]);
    // systemd-analyze wants an instance's name for a template.
    let dir = ressh_testkit::TempDir::new("restls-unit");
    let unit = dir.join("restls@x.service");
    std::fs::copy(workspace().join("packaging/systemd/restls@.service"), &unit).unwrap();
    let score = exposure(&unit);
    eprintln!("exposure: restls@x.service {score}");
    assert!(
        score < 2.0,
        "restls@.service exposure {score}, not below 2.0"
    );
}
