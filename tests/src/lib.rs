//! End-to-end tests of ressh's resilient sessions (issue 5, docs/PROTOCOL.md),
//! in `tests/`: one test binary, `e2e`, whose scenarios live in
//! `tests/*.rs` (see `tests/e2e.rs` for the list). They run the real
//! binaries (`target/<profile>/ressh`, `resshd` and its workers: build the
//! workspace first) as real users, in network namespaces made with
//! `ressh_testkit::Net` (addresses from 198.18.0.0/15) or on loopback, and
//! need root.
//!
//! This crate has no code of its own; the library target only exists
//! because Cargo wants one.
