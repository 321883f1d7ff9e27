//! Shared pieces of ressh's benchmark (`ressh-bench`) and demo (`ressh-demo`):
//! keys, daemons on loopback or in a namespace, client command lines,
//! TCP relays, process trees and their memory, statistics, and restls beside
//! stunnel.
//!
//! Nothing here is a test: `cargo test` builds this crate but runs nothing of it.

pub mod daemon;
pub mod engine;
pub mod fleet;
pub mod lab;
pub mod proc;
pub mod relay;
pub mod stats;
pub mod tls;

use std::path::{Path, PathBuf};

/// The directory holding this build's binaries (`target/release`), found
/// from the running executable; `resshd`, its workers and `ressh` must be
/// there (the `bench/run` and `bench/demo` wrappers build them).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .expect("the executable's directory")
        .to_path_buf()
}

/// `dir/name`, or a clear error naming the build command when it is missing.
pub fn require_bin(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing: build the workspace first \
             (cargo build --release --workspace --bins)",
            p.display()
        ))
    }
}

/// Whether the effective uid is 0.
#[allow(unsafe_code)] // geteuid
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The login name of the effective user (from the password database).
#[allow(unsafe_code)] // getpwuid
pub fn user_name() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; we
    // copy the name out before any other call could overwrite it.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() || (*pw).pw_name.is_null() {
            return std::env::var("USER").unwrap_or_else(|_| "root".into());
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}
