//! ressh-proto: a sans-IO SSH-2 protocol engine.
//!
//! Bytes and the current time go in; bytes to send, events and the next
//! deadline come out. No sockets, threads or clock reads live here.

pub mod agent;
pub mod cert;
pub mod cipher;
pub mod conn;
pub mod error;
pub mod kex;
pub mod keys;
pub mod krl;
pub mod msg;
pub mod pqc;
pub mod proxy_header;
pub mod resilience;
pub mod wire;

pub mod transport;
pub mod zlib;

pub use conn::{
    AuthAttempt, ClientReconnect, Config, Connection, Event, OfferedKey, ReconnectRequest, Refused,
    Role, ServerReconnect, SignRequest, Stats,
};
pub use error::{Error, Result};
