//! ressh-proto: a sans-IO SSH-2 protocol engine.
//!
//! Bytes and the current time go in; bytes to send, events and the next
//! deadline come out. No sockets, threads or clock reads live here.

pub mod cipher;
pub mod error;
pub mod wire;

pub use error::{Error, Result};
