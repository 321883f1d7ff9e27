//! End-to-end tests of ressh's resilient sessions (issue 5, docs/PROTOCOL.md),
//! in `tests/`: one test binary, `e2e`, whose scenarios live in
//! `tests/*.rs` (see `tests/e2e.rs` for the list). They run the real
//! binaries (`target/<profile>/ressh`, `resshd` and its workers: build the
//! workspace first) as real users, in network namespaces made with
//! `ressh_testkit::Net` (addresses from 198.18.0.0/15) or on loopback, and
//! need root.
//!
//! The library holds only what the hostile workers (`src/bin/`) share.

/// Hex text (as the hostile workers' scripts carry blobs) as bytes.
pub fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("not hex: {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}
