//! Tests of `packaging/` (docs/packaging.md), in `tests/`:
//!
//! - `shipped_files.rs`: the default configuration's commented values are
//!   resshd's defaults, the man pages name every keyword and render without
//!   warnings, debian/copyright lists every linked crate, and the unit has
//!   the promised settings and an exposure score no worse than OpenSSH's.
//! - `clean_root.rs`: the .deb built from this build's binaries, installed
//!   into a fresh debootstrap root of the host's Debian release, serves
//!   stock `ssh` from the installed files and configuration, reloads, stops
//!   and purges as packaged.
//!
//! This crate has no code of its own; the library target only exists
//! because Cargo wants one.
