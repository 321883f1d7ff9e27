//! The ssh_config keywords: which ones Debian's ssh knows, asked of the
//! real ssh, and docs/ssh_config.md's table of what ressh does with each.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{run_timeout, TempDir};

/// One row of docs/ssh_config.md's keyword table.
#[derive(Debug, Clone)]
pub struct KeywordRow {
    /// As written (ssh_config(5)'s case).
    pub keyword: String,
    /// `implemented`, `implemented (alias of X)`, `ignored`, `only V, ...`
    /// or `refused at V, ...`.
    pub handling: String,
    /// The value the test sets (for `only` and `refused at`, a refused one).
    pub example: String,
    pub note: String,
}

/// docs/ssh_config.md.
fn document() -> (std::path::PathBuf, String) {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ssh_config.md");
    let text = std::fs::read_to_string(&doc).unwrap_or_else(|e| panic!("{}: {e}", doc.display()));
    (doc, text)
}

/// docs/ssh_config.md's configuration "found in the wild" (its indented
/// block), as a file's text.
pub fn wild_config() -> String {
    let (doc, text) = document();
    let (_, wild) = text
        .split_once("## Configurations found in the wild\n")
        .unwrap_or_else(|| panic!("{}: no wild configuration", doc.display()));
    let config: String = wild
        .lines()
        .skip_while(|l| !l.starts_with("    "))
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", &l[4..]))
        .collect();
    assert!(config.contains("Match final"), "{config}");
    config
}

/// docs/ssh_config.md's keyword table, in order.
pub fn keyword_table() -> Vec<KeywordRow> {
    let (doc, text) = document();
    let rows: Vec<KeywordRow> = text
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| Keyword "))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 4, "bad row in {}: {l}", doc.display());
            KeywordRow {
                keyword: cells[0].to_string(),
                handling: cells[1].to_string(),
                example: cells[2].trim_matches('`').to_string(),
                note: cells[3].to_string(),
            }
        })
        .collect();
    assert!(rows.len() > 100, "{}: no keyword table", doc.display());
    rows
}

/// Every keyword `ssh` knows (lowercase), asked of ssh itself: each
/// lowercase word in its binary (and each word's tails, as the linker
/// shares a string's tail with a shorter one, `keepalive` inside
/// `tcpkeepalive`) is set in a `Host` block that does not apply, and
/// `ssh -G` says "Bad configuration option" for the ones it does not know.
/// A line ssh finds fatal ends its reading: the rest is asked again.
pub fn ssh_keywords(ssh: &Path) -> BTreeSet<String> {
    let bin = std::fs::read(ssh).unwrap_or_else(|e| panic!("{}: {e}", ssh.display()));
    let mut words = BTreeSet::new();
    for run in bin.split(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit())) {
        if run.len() >= 3 && run[0].is_ascii_lowercase() {
            for i in 0..=run.len() - 3 {
                if run[i].is_ascii_lowercase() {
                    words.insert(String::from_utf8(run[i..].to_vec()).unwrap());
                }
            }
        }
    }
    let dir = TempDir::new("ssh-keywords");
    let file = dir.join("ssh_config");
    let mut todo: Vec<String> = words.into_iter().collect();
    let mut known = BTreeSet::new();
    while !todo.is_empty() {
        let mut text = String::from("Host no-such-host.invalid\n");
        for w in &todo {
            text.push_str(&format!("{w} x\n"));
        }
        std::fs::write(&file, text).unwrap();
        let out = run_timeout(
            Command::new(ssh).arg("-G").arg("-F").arg(&file).arg("h"),
            Duration::from_secs(60),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        // Line n + 2 is todo[n]; ssh names each line it has a word about.
        let mut bad = BTreeSet::new();
        let mut last = 0;
        for l in err.lines() {
            let Some((_, rest)) = l.split_once(" line ") else {
                continue;
            };
            let Some((n, msg)) = rest.split_once(':') else {
                continue;
            };
            let Ok(n) = n.parse::<usize>() else { continue };
            last = last.max(n);
            if msg.trim_start().starts_with("Bad configuration option") {
                bad.insert(n);
            }
        }
        let finished = err.contains("terminating,") || out.status.success();
        let upto = if finished { todo.len() + 1 } else { last };
        assert!(upto >= 2, "ssh -G read nothing: {err}");
        for (i, w) in todo.iter().enumerate().take(upto - 1) {
            if !bad.contains(&(i + 2)) {
                known.insert(w.clone());
            }
        }
        todo.drain(..upto - 1);
    }
    assert!(
        known.contains("forwardagent") && known.contains("keepalive"),
        "{known:?}"
    );
    known
}
