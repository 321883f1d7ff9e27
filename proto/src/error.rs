//! Errors of the protocol engine.
//!
//! Every error that ends a connection maps to an SSH disconnect reason code
//! (RFC 4253 §11.1) so that the engine can tell the peer why it stops.

use std::fmt;

/// Disconnect reason codes of RFC 4253 §11.1.
pub mod reason {
    pub const HOST_NOT_ALLOWED_TO_CONNECT: u32 = 1;
    pub const PROTOCOL_ERROR: u32 = 2;
    pub const KEY_EXCHANGE_FAILED: u32 = 3;
    pub const MAC_ERROR: u32 = 5;
    pub const SERVICE_NOT_AVAILABLE: u32 = 7;
    pub const PROTOCOL_VERSION_NOT_SUPPORTED: u32 = 8;
    pub const HOST_KEY_NOT_VERIFIABLE: u32 = 9;
    pub const CONNECTION_LOST: u32 = 10;
    pub const BY_APPLICATION: u32 = 11;
    pub const TOO_MANY_CONNECTIONS: u32 = 12;
    pub const AUTH_CANCELLED_BY_USER: u32 = 13;
    pub const NO_MORE_AUTH_METHODS_AVAILABLE: u32 = 14;
    pub const ILLEGAL_USER_NAME: u32 = 15;
}

/// A typed protocol error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A field or message ended before its declared end.
    Truncated,
    /// A value on the wire is malformed; the text names the field.
    Malformed(&'static str),
    /// A length field exceeds what the engine accepts.
    TooLarge(&'static str),
    /// Bytes were left over after a message that must end there.
    TrailingData,
    /// A packet failed its MAC or AEAD tag.
    Mac,
    /// A signature did not verify.
    BadSignature,
    /// A cryptographic primitive failed (OpenSSL error text).
    Crypto(String),
    /// The key-exchange method refused the peer's init or reply bytes
    /// (wrong length, an invalid public key or point); the text names them.
    KeyExchange(&'static str),
    /// No algorithm in common for the named category.
    NoCommonAlgorithm(&'static str),
    /// An algorithm name is not known to the registry.
    UnknownAlgorithm(String),
    /// The peer broke the protocol: a message out of order, a bad state, …
    Protocol(&'static str),
    /// The application called the engine where that call is not allowed
    /// (a bug in the caller, not in the peer). The connection stays as it
    /// was: nothing is sent to the peer.
    Misuse(&'static str),
    /// The peer's host key was rejected by the application.
    HostKeyRejected,
    /// The application could not sign the exchange hash with the host key.
    SigningFailed,
    /// The peer sent DISCONNECT.
    PeerDisconnected { reason: u32, description: String },
    /// The connection is already closed.
    Closed,
    /// Exported state could not be decoded or does not fit.
    State(&'static str),
}

impl Error {
    /// Whether the peer caused this error (and is told why by DISCONNECT),
    /// as opposed to the local application misusing the engine.
    pub fn is_peer_fault(&self) -> bool {
        !matches!(
            self,
            Error::Misuse(_) | Error::Closed | Error::State(_) | Error::SigningFailed
        )
    }

    /// The disconnect reason sent to the peer when this error ends the connection.
    pub fn disconnect_reason(&self) -> u32 {
        match self {
            Error::Mac => reason::MAC_ERROR,
            Error::KeyExchange(_)
            | Error::NoCommonAlgorithm(_)
            | Error::UnknownAlgorithm(_)
            | Error::BadSignature
            | Error::SigningFailed => reason::KEY_EXCHANGE_FAILED,
            Error::HostKeyRejected => reason::HOST_KEY_NOT_VERIFIABLE,
            _ => reason::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => write!(f, "message truncated"),
            Error::Malformed(what) => write!(f, "malformed {what}"),
            Error::TooLarge(what) => write!(f, "{what} too large"),
            Error::TrailingData => write!(f, "trailing data after message"),
            Error::Mac => write!(f, "message authentication code incorrect"),
            Error::BadSignature => write!(f, "signature verification failed"),
            Error::Crypto(e) => write!(f, "cryptographic failure: {e}"),
            Error::NoCommonAlgorithm(what) => write!(f, "no matching {what} found"),
            Error::UnknownAlgorithm(name) => write!(f, "unknown algorithm {name}"),
            Error::Protocol(what) => write!(f, "protocol error: {what}"),
            Error::KeyExchange(what) => write!(f, "key exchange failed: {what}"),
            Error::Misuse(what) => write!(f, "engine misuse: {what}"),
            Error::HostKeyRejected => write!(f, "host key rejected"),
            Error::SigningFailed => write!(f, "host key signing failed"),
            Error::PeerDisconnected {
                reason,
                description,
            } => write!(
                f,
                "disconnected by peer (reason {reason}): {}",
                crate::wire::printable(description.as_bytes())
            ),
            Error::Closed => write!(f, "connection closed"),
            Error::State(what) => write!(f, "bad connection state: {what}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<openssl::error::ErrorStack> for Error {
    fn from(e: openssl::error::ErrorStack) -> Self {
        Error::Crypto(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
