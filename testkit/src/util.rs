//! Small helpers every integration test crate uses.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd::{require_cmd, run_timeout, DEFAULT_TIMEOUT};

/// Bytes as text, invalid UTF-8 replaced.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls `f` every 20 ms until it returns Some, or panics after `timeout`
/// with `what` and the text `context` gives.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            context()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Random bytes (from /dev/urandom) in a file of `size` bytes.
pub fn random_file(path: &Path, size: usize) {
    let mut src = fs::File::open("/dev/urandom").unwrap();
    let mut dst = fs::File::create(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len());
        src.read_exact(&mut buf[..n]).unwrap();
        dst.write_all(&buf[..n]).unwrap();
        left -= n;
    }
}

/// The SHA-256 of a file, in hex (by `sha256sum`).
pub fn sha256_file(path: &Path) -> String {
    let out = run_timeout(
        Command::new(require_cmd("sha256sum")).arg(path),
        DEFAULT_TIMEOUT,
    );
    assert!(out.status.success(), "sha256sum {}", path.display());
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// VmRSS of `pid` in bytes (None once it is gone).
pub fn rss(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmRSS:")
}

/// VmHWM of `pid` in bytes: the most it was resident (None once it is gone).
pub fn peak_rss(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmHWM:")
}

/// A size field of /proc/`pid`/status (`field` with its colon), in bytes.
fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}
