//! Debian roots made with `debootstrap` from the host's configured Debian
//! mirror: the packaging test's clean root of the host's release, and the
//! root of the newest OpenSSH Debian ships ([`crate::NewSsh`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::cmd::{require_cmd, run_timeout};

/// The system directories, appended to `$PATH` for debootstrap (which runs
/// `chroot`, in /usr/sbin).
pub const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long one debootstrap may take.
const DEBOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(900);

/// The host's Debian release (codename) and the first mirror its apt
/// sources name for it (deb822 .sources files, then sources.list).
/// Panics (failing the test) on a host that is not Debian.
pub fn host_suite_and_mirror() -> (String, String) {
    let os = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let suite = os
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|s| s.trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .expect("VERSION_CODENAME in /etc/os-release: this test needs a Debian host");
    let mut texts = Vec::new();
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if p.extension().is_some_and(|e| e == "sources") {
                texts.push(fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    for text in &texts {
        for para in text.split("\n\n") {
            let field = |name: &str| {
                para.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
            };
            let types = field("Types:").unwrap_or_default();
            let suites = field("Suites:").unwrap_or_default();
            let comps = field("Components:").unwrap_or_default();
            if types.split_whitespace().any(|t| t == "deb")
                && suites.split_whitespace().any(|s| s == suite)
                && comps.split_whitespace().any(|c| c == "main")
            {
                if let Some(uri) =
                    field("URIs:").and_then(|u| u.split_whitespace().next().map(String::from))
                {
                    return (suite, uri);
                }
            }
        }
    }
    let list = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    for line in list.lines() {
        let mut w = line.split_whitespace().filter(|w| !w.starts_with('['));
        if w.next() == Some("deb") {
            if let (Some(uri), Some(s)) = (w.next(), w.next()) {
                if s == suite {
                    return (suite, uri.to_string());
                }
            }
        }
    }
    panic!("no apt source for {suite} main found in /etc/apt: cannot debootstrap");
}

/// `debootstrap --variant=minbase [--include=...] suite root mirror`, in a
/// private mount namespace (its /proc and /sys mounts die with it). The
/// caller checks the output.
pub fn debootstrap(suite: &str, root: &Path, mirror: &str, include: &[&str]) -> Output {
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    path.push(":");
    path.push(SYSTEM_PATH);
    let mut c = Command::new(require_cmd("unshare"));
    c.env("PATH", path)
        .args(["--mount", "--propagation", "private"])
        .arg(require_cmd("debootstrap"))
        .arg("--variant=minbase");
    if !include.is_empty() {
        c.arg(format!("--include={}", include.join(",")));
    }
    c.arg(suite).arg(root).arg(mirror);
    run_timeout(&mut c, DEBOOTSTRAP_TIMEOUT)
}
