//! restls: TLS 1.3 connections that survive TCP breaks, new addresses and
//! long disconnection (Koponen, Eronen, Särelä, USENIX ATC 2006, §4.3; the
//! wire format is docs/restls.md).
//!
//! A client offers a private extension in its ClientHello; a server that
//! knows it answers in EncryptedExtensions. Then both count the application
//! bytes they receive, acknowledge them, and keep what they sent until it is
//! acknowledged. When the TCP connection breaks, the client opens a new one
//! whose ClientHello names the connection with a rotating, authenticated
//! token and resumes the TLS session (fresh keys); a RESUME exchange bound
//! to the new connection proves both ends hold the connection's secret and
//! says how much each received; then each retransmits the rest. Without the
//! extension on both sides the connection is plain TLS.
//!
//! The API: [`Client`] relays one connection to a local stream on its
//! thread (any [`Local`]: a TCP socket for a tunnel, or the socket pair
//! behind [`Client::stream`]); [`Server::run`] serves every connection a
//! listener accepts in one event loop. Both call [`Events`] when a
//! connection is lost, reconnected, or its peer address changes. [`Core`]
//! is the sans-IO resilience state machine under them.

mod client;
pub mod core;
mod ctx;
mod engine;
pub mod frame;
mod pump;
pub mod secret;
mod server;

pub use client::{Client, ClientConfig, Connection};
pub use core::Core;
pub use pump::{Events, Local, NoEvents};
pub use secret::{Answer, Hello, EXT_TYPE};
pub use server::{Server, ServerConfig};
