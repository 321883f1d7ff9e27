//! docs/ssh_config.md's keyword table against the real programs: every
//! keyword Debian's ssh knows (asked of ssh itself) is in the table, and a
//! configuration setting each keyword of the table is accepted, ignored
//! (with a debug line) or refused by ressh exactly as the table says, the
//! same line accepted by stock ssh (so that no row tests a value ssh would
//! not take either). The code's side of the table is the unit test
//! `table_matches_the_document` of client/src/config/keywords.rs.

use std::fs;
use std::process::{Command, Output};
use std::time::Duration;

const RESSH: &str = env!("CARGO_BIN_EXE_ressh");

/// `bin -v -G -F file localhost` (a name that resolves: ssh -G looks up
/// some names, as for CanonicalizePermittedCNAMEs).
fn g(bin: &str, file: &str) -> Output {
    ressh_testkit::run_timeout(
        Command::new(bin).args(["-v", "-G", "-F", file, "localhost"]),
        Duration::from_secs(30),
    )
}

#[test]
fn every_keyword_handled_as_documented() {
    let ssh = ressh_testkit::require_cmd("ssh");
    let ssh_s = ssh.display().to_string();
    let known = ressh_testkit::ssh_keywords(&ssh);
    let rows = ressh_testkit::keyword_table();
    let lower = |r: &ressh_testkit::KeywordRow| r.keyword.to_ascii_lowercase();
    let missing: Vec<&String> = known
        .iter()
        .filter(|k| !rows.iter().any(|r| lower(r) == **k))
        .collect();
    assert!(missing.is_empty(), "not in docs/ssh_config.md: {missing:?}");
    let dir = ressh_testkit::TempDir::new("ressh-keywords");
    let file = dir.join("ssh_config").display().to_string();
    for row in &rows {
        let key = lower(row);
        let ssh_knows = known.contains(&key);
        assert_eq!(
            ssh_knows,
            !row.note.contains("not in Debian 12's ssh"),
            "{}: known to ssh: {ssh_knows}, the note says otherwise",
            row.keyword
        );
        let line = |v: &str| match key.as_str() {
            "host" => format!("Host {v}\n"),
            "match" => format!("Match {v}\n"),
            _ => format!("{} {v}\n", row.keyword),
        };
        let check = |v: &str, outcome: &str| {
            fs::write(&file, line(v)).unwrap();
            if ssh_knows {
                let o = g(&ssh_s, &file);
                assert!(
                    o.status.success(),
                    "ssh refuses {:?}: {}",
                    line(v),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            let o = g(RESSH, &file);
            let err = String::from_utf8_lossy(&o.stderr);
            let ignoring = err.contains(&format!("line 1: ignoring {key} {v} "));
            let what = match (o.status.code(), ignoring) {
                (Some(0), false) => "accepted",
                (Some(0), true) => "ignored",
                (Some(255), false) if err.contains(&format!("line 1: {key} ")) => "refused",
                _ => panic!("ressh on {:?}: {:?} {err}", line(v), o.status),
            };
            assert_eq!(what, outcome, "{:?}: {err}", line(v));
        };
        let ex = row.example.as_str();
        match row.handling.as_str() {
            h if h.starts_with("implemented") => check(ex, "accepted"),
            "ignored" => check(ex, "ignored"),
            h if h.starts_with("only ") => {
                for v in h["only ".len()..].split(", ") {
                    check(v, "accepted");
                }
                check(ex, "refused");
            }
            h if h.starts_with("refused at ") => {
                for v in h["refused at ".len()..].split(", ") {
                    check(v, "refused");
                }
                assert!(h.contains(ex), "{}: example not refused", row.keyword);
            }
            h => panic!("{}: unknown handling {h:?}", row.keyword),
        }
    }
}
