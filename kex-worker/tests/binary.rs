//! The resshd-kex binary itself. Having an integration test also makes
//! `cargo test --workspace` build target/<profile>/resshd-kex next to
//! resshd, where resshd's end-to-end tests and the packaging test
//! (tests/packaging) expect it: Cargo builds a package's binaries for its
//! integration tests only.

use std::process::Command;

/// A bad command line is refused before any descriptor is touched.
#[test]
fn refuses_unknown_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_resshd-kex"))
        .args(["--bogus", "x"])
        .output()
        .expect("run resshd-kex");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown argument --bogus"), "{err}");
}
