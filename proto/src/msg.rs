//! Typed SSH-2 message codecs: RFC 4253 (transport), RFC 4252 (user
//! authentication), RFC 4254 (connection), RFC 4256 (keyboard-interactive),
//! RFC 8308 (extension negotiation) and the OpenSSH PROTOCOL extensions.
//!
//! Every message has `encode(&self) -> Vec<u8>`, which returns the payload
//! including its message number, and `decode(payload) -> Result<Self>`, which
//! is strict: the message number must match, every field is bounded by the
//! payload and by the limits below, text fields are checked (UTF-8 where the
//! RFC says UTF-8, printable US-ASCII otherwise) and trailing bytes are an
//! error, except where the RFC lets a message carry type-specific data that
//! this module does not know (unknown request, channel and method types keep
//! their remaining bytes as `data`).
//!
//! Message number 60 means USERAUTH_PK_OK, USERAUTH_PASSWD_CHANGEREQ or
//! USERAUTH_INFO_REQUEST depending on the method in progress, so each has
//! its own type and the caller chooses which to decode.

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::wire::{Put, Reader};

/// Message numbers.
pub mod num {
    // RFC 4253 / RFC 8308 transport layer generic.
    pub const DISCONNECT: u8 = 1;
    pub const IGNORE: u8 = 2;
    pub const UNIMPLEMENTED: u8 = 3;
    pub const DEBUG: u8 = 4;
    pub const SERVICE_REQUEST: u8 = 5;
    pub const SERVICE_ACCEPT: u8 = 6;
    pub const EXT_INFO: u8 = 7;
    pub const NEWCOMPRESS: u8 = 8;
    // Algorithm negotiation.
    pub const KEXINIT: u8 = 20;
    pub const NEWKEYS: u8 = 21;
    // Key exchange method specific (RFC 5656 §7.1; RFC 4253 §8 uses the same numbers).
    pub const KEX_ECDH_INIT: u8 = 30;
    pub const KEX_ECDH_REPLY: u8 = 31;
    pub const KEXDH_INIT: u8 = 30;
    pub const KEXDH_REPLY: u8 = 31;
    // RFC 4419 group exchange.
    pub const KEX_DH_GEX_GROUP: u8 = 31;
    pub const KEX_DH_GEX_INIT: u8 = 32;
    pub const KEX_DH_GEX_REPLY: u8 = 33;
    pub const KEX_DH_GEX_REQUEST: u8 = 34;
    // RFC 4252 / RFC 4256 user authentication.
    pub const USERAUTH_REQUEST: u8 = 50;
    pub const USERAUTH_FAILURE: u8 = 51;
    pub const USERAUTH_SUCCESS: u8 = 52;
    pub const USERAUTH_BANNER: u8 = 53;
    pub const USERAUTH_PK_OK: u8 = 60;
    pub const USERAUTH_PASSWD_CHANGEREQ: u8 = 60;
    pub const USERAUTH_INFO_REQUEST: u8 = 60;
    pub const USERAUTH_INFO_RESPONSE: u8 = 61;
    // RFC 4254 connection protocol.
    pub const GLOBAL_REQUEST: u8 = 80;
    pub const REQUEST_SUCCESS: u8 = 81;
    pub const REQUEST_FAILURE: u8 = 82;
    pub const CHANNEL_OPEN: u8 = 90;
    pub const CHANNEL_OPEN_CONFIRMATION: u8 = 91;
    pub const CHANNEL_OPEN_FAILURE: u8 = 92;
    pub const CHANNEL_WINDOW_ADJUST: u8 = 93;
    pub const CHANNEL_DATA: u8 = 94;
    pub const CHANNEL_EXTENDED_DATA: u8 = 95;
    pub const CHANNEL_EOF: u8 = 96;
    pub const CHANNEL_CLOSE: u8 = 97;
    pub const CHANNEL_REQUEST: u8 = 98;
    pub const CHANNEL_SUCCESS: u8 = 99;
    pub const CHANNEL_FAILURE: u8 = 100;
    // ping@openssh.com (OpenSSH PROTOCOL §1.9).
    pub const PING: u8 = 192;
    pub const PONG: u8 = 193;
}

/// CHANNEL_OPEN_FAILURE reason codes (RFC 4254 §5.1).
pub mod open_failure {
    pub const ADMINISTRATIVELY_PROHIBITED: u32 = 1;
    pub const CONNECT_FAILED: u32 = 2;
    pub const UNKNOWN_CHANNEL_TYPE: u32 = 3;
    pub const RESOURCE_SHORTAGE: u32 = 4;
}

/// The data type code of stderr in CHANNEL_EXTENDED_DATA (RFC 4254 §5.2).
pub const EXTENDED_DATA_STDERR: u32 = 1;

/// Some encoded terminal mode opcodes (RFC 4254 §8).
pub mod mode {
    pub const TTY_OP_END: u8 = 0;
    pub const VINTR: u8 = 1;
    pub const VQUIT: u8 = 2;
    pub const VERASE: u8 = 3;
    pub const VKILL: u8 = 4;
    pub const VEOF: u8 = 5;
    pub const ISIG: u8 = 50;
    pub const ICANON: u8 = 51;
    pub const ECHO: u8 = 53;
    pub const OPOST: u8 = 70;
    pub const CS8: u8 = 91;
    pub const TTY_OP_ISPEED: u8 = 128;
    pub const TTY_OP_OSPEED: u8 = 129;
}

/// At most this many names in one name-list.
pub const MAX_NAMES: usize = 64;
/// At most this many bytes in one name of a name-list (RFC 4251 §6).
pub const MAX_NAME_LEN: usize = 64;
/// At most this many extensions in EXT_INFO.
pub const MAX_EXTENSIONS: usize = 64;
/// At most this many prompts (and responses) in keyboard-interactive.
pub const MAX_PROMPTS: usize = 32;
/// At most this many keys in hostkeys-00 / hostkeys-prove-00.
pub const MAX_HOST_KEYS: usize = 64;
/// At most this many opcodes accepted by [`parse_modes`].
pub const MAX_MODES: usize = 256;

// ---------------------------------------------------------------------------
// Field helpers.

/// A reader positioned after the message number, which must be `n`.
fn open(payload: &[u8], n: u8) -> Result<Reader<'_>> {
    let mut r = Reader::new(payload);
    if r.u8()? != n {
        return Err(Error::Malformed("message number"));
    }
    Ok(r)
}

/// A string of printable US-ASCII (0x20..=0x7e).
fn ascii(r: &mut Reader<'_>, what: &'static str) -> Result<String> {
    let s = r.string()?;
    if !s.iter().all(|&c| (0x20..0x7f).contains(&c)) {
        return Err(Error::Malformed(what));
    }
    String::from_utf8(s.to_vec()).map_err(|_| Error::Malformed(what))
}

/// A string that must be valid UTF-8 (ISO-10646 UTF-8 in the RFCs).
fn utf8(r: &mut Reader<'_>, what: &'static str) -> Result<String> {
    let s = r.string()?;
    std::str::from_utf8(s)
        .map(str::to_owned)
        .map_err(|_| Error::Malformed(what))
}

/// A Unix-domain socket path: UTF-8 without NUL (a C string to OpenSSH).
fn socket_path(r: &mut Reader<'_>) -> Result<String> {
    let s = utf8(r, "socket path")?;
    if s.contains('\0') {
        return Err(Error::Malformed("socket path"));
    }
    Ok(s)
}

/// A secret UTF-8 string, copied once straight into a zeroizing buffer.
fn secret(r: &mut Reader<'_>, what: &'static str) -> Result<Zeroizing<String>> {
    let s = r.string()?;
    let s = std::str::from_utf8(s).map_err(|_| Error::Malformed(what))?;
    Ok(Zeroizing::new(s.to_owned()))
}

fn bytes(r: &mut Reader<'_>) -> Result<Vec<u8>> {
    Ok(r.string()?.to_vec())
}

/// All remaining bytes.
fn rest(r: &mut Reader<'_>) -> Vec<u8> {
    let v = r.rest().to_vec();
    // Cannot fail: exactly the remaining length.
    let _ = r.take(r.remaining());
    v
}

/// A name-list bounded to [`MAX_NAMES`] names of at most [`MAX_NAME_LEN`] bytes.
fn names(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<String>> {
    let mut peek = r.clone();
    let raw = peek.string()?;
    if raw.len() > MAX_NAMES * (MAX_NAME_LEN + 1) {
        return Err(Error::TooLarge(what));
    }
    let list = r.name_list()?;
    if list.len() > MAX_NAMES || list.iter().any(|n| n.len() > MAX_NAME_LEN) {
        return Err(Error::TooLarge(what));
    }
    Ok(list.into_iter().map(str::to_owned).collect())
}

fn put_names(b: &mut Vec<u8>, names: &[String]) {
    let v: Vec<&str> = names.iter().map(String::as_str).collect();
    b.put_name_list(&v);
}

/// A count field checked against `max` before anything is allocated.
fn count(r: &mut Reader<'_>, max: usize, what: &'static str) -> Result<usize> {
    let n = r.u32()? as usize;
    if n > max {
        return Err(Error::TooLarge(what));
    }
    Ok(n)
}

// ---------------------------------------------------------------------------
// Simple messages generated by macros.

/// Messages with no fields after the number.
macro_rules! unit_msg {
    ($(#[$m:meta])* $name:ident, $num:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct $name;

        impl $name {
            pub fn encode(&self) -> Vec<u8> {
                vec![$num]
            }
            pub fn decode(payload: &[u8]) -> Result<Self> {
                open(payload, $num)?.finish()?;
                Ok($name)
            }
        }
    };
}

/// Messages with a single uint32.
macro_rules! u32_msg {
    ($(#[$m:meta])* $name:ident, $num:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name(pub u32);

        impl $name {
            pub fn encode(&self) -> Vec<u8> {
                let mut b = Vec::with_capacity(5);
                b.put_u8($num);
                b.put_u32(self.0);
                b
            }
            pub fn decode(payload: &[u8]) -> Result<Self> {
                let mut r = open(payload, $num)?;
                let v = r.u32()?;
                r.finish()?;
                Ok($name(v))
            }
        }
    };
}

/// Messages with a single binary string.
macro_rules! bytes_msg {
    ($(#[$m:meta])* $name:ident, $num:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name(pub Vec<u8>);

        impl $name {
            pub fn encode(&self) -> Vec<u8> {
                let mut b = Vec::with_capacity(5 + self.0.len());
                b.put_u8($num);
                b.put_string(&self.0);
                b
            }
            pub fn decode(payload: &[u8]) -> Result<Self> {
                let mut r = open(payload, $num)?;
                let v = bytes(&mut r)?;
                r.finish()?;
                Ok($name(v))
            }
        }
    };
}

/// Messages with a single ASCII string.
macro_rules! ascii_msg {
    ($(#[$m:meta])* $name:ident, $num:expr, $what:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name(pub String);

        impl $name {
            pub fn encode(&self) -> Vec<u8> {
                let mut b = Vec::with_capacity(5 + self.0.len());
                b.put_u8($num);
                b.put_str(&self.0);
                b
            }
            pub fn decode(payload: &[u8]) -> Result<Self> {
                let mut r = open(payload, $num)?;
                let v = ascii(&mut r, $what)?;
                r.finish()?;
                Ok($name(v))
            }
        }
    };
}

// ---------------------------------------------------------------------------
// Transport layer (RFC 4253, RFC 8308, OpenSSH PROTOCOL).

/// SSH_MSG_DISCONNECT. `reason` is one of [`crate::error::reason`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub reason: u32,
    pub description: String,
    pub language: String,
}

impl Disconnect {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(13 + self.description.len() + self.language.len());
        b.put_u8(num::DISCONNECT);
        b.put_u32(self.reason);
        b.put_str(&self.description);
        b.put_str(&self.language);
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = open(payload, num::DISCONNECT)?;
        let reason = r.u32()?;
        let description = utf8(&mut r, "disconnect description")?;
        let language = ascii(&mut r, "language tag")?;
        r.finish()?;
        Ok(Disconnect {
            reason,
            description,
            language,
        })
    }
}

bytes_msg!(
    /// SSH_MSG_IGNORE with its data.
    Ignore,
    num::IGNORE
);

u32_msg!(
    /// SSH_MSG_UNIMPLEMENTED with the sequence number of the rejected packet.
    Unimplemented,
    num::UNIMPLEMENTED
);

/// SSH_MSG_DEBUG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debug {
    pub always_display: bool,
    pub message: String,
    pub language: String,
}

impl Debug {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(10 + self.message.len() + self.language.len());
        b.put_u8(num::DEBUG);
        b.put_bool(self.always_display);
        b.put_str(&self.message);
        b.put_str(&self.language);
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = open(payload, num::DEBUG)?;
        let always_display = r.bool()?;
        let message = utf8(&mut r, "debug message")?;
        let language = ascii(&mut r, "language tag")?;
        r.finish()?;
        Ok(Debug {
            always_display,
            message,
            language,
        })
    }
}

ascii_msg!(
    /// SSH_MSG_SERVICE_REQUEST with the service name.
    ServiceRequest,
    num::SERVICE_REQUEST,
    "service name"
);

ascii_msg!(
    /// SSH_MSG_SERVICE_ACCEPT with the service name.
    ServiceAccept,
    num::SERVICE_ACCEPT,
    "service name"
);

/// SSH_MSG_EXT_INFO (RFC 8308 §2.3): extension names and raw values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtInfo(pub Vec<(String, Vec<u8>)>);

impl ExtInfo {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![num::EXT_INFO];
        b.put_u32(self.0.len() as u32);
        for (name, value) in &self.0 {
            b.put_str(name);
            b.put_string(value);
        }
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = open(payload, num::EXT_INFO)?;
        let n = count(&mut r, MAX_EXTENSIONS, "extension count")?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let name = ascii(&mut r, "extension name")?;
            let value = bytes(&mut r)?;
            v.push((name, value));
        }
        r.finish()?;
        Ok(ExtInfo(v))
    }

    /// The value of the first extension called `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

unit_msg!(
    /// SSH_MSG_NEWKEYS.
    NewKeys,
    num::NEWKEYS
);

bytes_msg!(
    /// SSH2_MSG_PING (ping@openssh.com) with its data.
    Ping,
    num::PING
);

bytes_msg!(
    /// SSH2_MSG_PONG (ping@openssh.com) echoing the data of a PING.
    Pong,
    num::PONG
);

/// SSH_MSG_KEXINIT (RFC 4253 §7.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KexInit {
    pub cookie: [u8; 16],
    pub kex: Vec<String>,
    pub host_key: Vec<String>,
    pub cipher_c2s: Vec<String>,
    pub cipher_s2c: Vec<String>,
    pub mac_c2s: Vec<String>,
    pub mac_s2c: Vec<String>,
    pub comp_c2s: Vec<String>,
    pub comp_s2c: Vec<String>,
    pub lang_c2s: Vec<String>,
    pub lang_s2c: Vec<String>,
    pub first_kex_follows: bool,
    pub reserved: u32,
}

impl KexInit {
    /// The ten name-lists in wire order.
    fn lists(&self) -> [&Vec<String>; 10] {
        [
            &self.kex,
            &self.host_key,
            &self.cipher_c2s,
            &self.cipher_s2c,
            &self.mac_c2s,
            &self.mac_s2c,
            &self.comp_c2s,
            &self.comp_s2c,
            &self.lang_c2s,
            &self.lang_s2c,
        ]
    }

    /// Names must be non-empty printable ASCII without commas, or the encoding
    /// will not decode to the same value.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![num::KEXINIT];
        b.extend_from_slice(&self.cookie);
        for l in self.lists() {
            put_names(&mut b, l);
        }
        b.put_bool(self.first_kex_follows);
        b.put_u32(self.reserved);
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = open(payload, num::KEXINIT)?;
        let mut cookie = [0u8; 16];
        cookie.copy_from_slice(r.take(16)?);
        let kex = names(&mut r, "kex name-list")?;
        let host_key = names(&mut r, "host key name-list")?;
        let cipher_c2s = names(&mut r, "cipher name-list")?;
        let cipher_s2c = names(&mut r, "cipher name-list")?;
        let mac_c2s = names(&mut r, "MAC name-list")?;
        let mac_s2c = names(&mut r, "MAC name-list")?;
        let comp_c2s = names(&mut r, "compression name-list")?;
        let comp_s2c = names(&mut r, "compression name-list")?;
        let lang_c2s = names(&mut r, "language name-list")?;
        let lang_s2c = names(&mut r, "language name-list")?;
        let first_kex_follows = r.bool()?;
        let reserved = r.u32()?;
        r.finish()?;
        Ok(KexInit {
            cookie,
            kex,
            host_key,
            cipher_c2s,
            cipher_s2c,
            mac_c2s,
            mac_s2c,
            comp_c2s,
            comp_s2c,
            lang_c2s,
            lang_s2c,
            first_kex_follows,
            reserved,
        })
    }
}

/// SSH_MSG_KEX_ECDH_INIT (RFC 5656 §4; also curve25519-sha256 and the
/// hybrid methods), carrying the client's ephemeral public key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KexEcdhInit {
    pub q_c: Vec<u8>,
}

impl KexEcdhInit {
    pub fn encode(&self) -> Vec<u8> {
        self.encode_as(num::KEX_ECDH_INIT)
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        Self::decode_as(payload, num::KEX_ECDH_INIT)
    }

    /// The same shape under another number: SSH_MSG_KEX_DH_GEX_INIT, whose
    /// mpint e is the string of its contents.
    pub fn encode_as(&self, n: u8) -> Vec<u8> {
        let mut b = Vec::with_capacity(5 + self.q_c.len());
        b.put_u8(n);
        b.put_string(&self.q_c);
        b
    }

    pub fn decode_as(payload: &[u8], n: u8) -> Result<Self> {
        let mut r = open(payload, n)?;
        let q_c = bytes(&mut r)?;
        r.finish()?;
        Ok(KexEcdhInit { q_c })
    }
}

/// SSH_MSG_KEX_ECDH_REPLY: server host key blob K_S, the server's ephemeral
/// public key and the signature blob over the exchange hash.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KexEcdhReply {
    pub host_key: Vec<u8>,
    pub q_s: Vec<u8>,
    pub signature: Vec<u8>,
}

impl KexEcdhReply {
    pub fn encode(&self) -> Vec<u8> {
        self.encode_as(num::KEX_ECDH_REPLY)
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        Self::decode_as(payload, num::KEX_ECDH_REPLY)
    }

    /// The same shape under another number: SSH_MSG_KEX_DH_GEX_REPLY.
    pub fn encode_as(&self, n: u8) -> Vec<u8> {
        let mut b =
            Vec::with_capacity(13 + self.host_key.len() + self.q_s.len() + self.signature.len());
        b.put_u8(n);
        b.put_string(&self.host_key);
        b.put_string(&self.q_s);
        b.put_string(&self.signature);
        b
    }

    pub fn decode_as(payload: &[u8], n: u8) -> Result<Self> {
        let mut r = open(payload, n)?;
        let host_key = bytes(&mut r)?;
        let q_s = bytes(&mut r)?;
        let signature = bytes(&mut r)?;
        r.finish()?;
        Ok(KexEcdhReply {
            host_key,
            q_s,
            signature,
        })
    }
}

/// SSH_MSG_KEX_DH_GEX_REQUEST (RFC 4419 §3): the prime sizes a client
/// accepts and prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KexDhGexRequest {
    pub min: u32,
    pub n: u32,
    pub max: u32,
}

impl KexDhGexRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(13);
        b.put_u8(num::KEX_DH_GEX_REQUEST);
        b.put_u32(self.min);
        b.put_u32(self.n);
        b.put_u32(self.max);
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = open(payload, num::KEX_DH_GEX_REQUEST)?;
        let (min, n, max) = (r.u32()?, r.u32()?, r.u32()?);
        r.finish()?;
        Ok(KexDhGexRequest { min, n, max })
    }
}

/// SSH_MSG_KEX_DH_GEX_GROUP: the prime and generator, as mpint contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KexDhGexGroup {
    pub p: Vec<u8>,
    pub g: Vec<u8>,
}

impl KexDhGexGroup {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(9 + self.p.len() + self.g.len());
        b.put_u8(num::KEX_DH_GEX_GROUP);
        b.put_string(&self.p);
        b.put_string(&self.g);
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = open(payload, num::KEX_DH_GEX_GROUP)?;
        let p = bytes(&mut r)?;
        let g = bytes(&mut r)?;
        r.finish()?;
        Ok(KexDhGexGroup { p, g })
    }
}

// ---------------------------------------------------------------------------
// User authentication (RFC 4252, RFC 4256).

/// The method-specific part of USERAUTH_REQUEST.
///
/// Secrets are held in [`Zeroizing`] buffers, whose `Debug` does not show
/// them. The payload returned by `UserauthRequest::encode` holds the secret
/// too; it is allocated once at its final size so the caller can zeroize it
/// after use (e.g. by wrapping it in `Zeroizing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// "none".
    None,
    /// "password"; `new_password` set means a password change (RFC 4252 §8),
    /// in which case `password` is the old one.
    Password {
        password: Zeroizing<String>,
        new_password: Option<Zeroizing<String>>,
    },
    /// "publickey": a query when `signature` is `None`, else a signed request.
    PublicKey {
        algorithm: String,
        blob: Vec<u8>,
        signature: Option<Vec<u8>>,
    },
    /// "keyboard-interactive" (RFC 4256 §3.1).
    KeyboardInteractive {
        language: String,
        submethods: String,
    },
    /// Any other method, with its method-specific bytes. `name` must not be
    /// one of the names above.
    Other { name: String, data: Vec<u8> },
}

impl AuthMethod {
    /// The method name on the wire.
    pub fn name(&self) -> &str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::Password { .. } => "password",
            AuthMethod::PublicKey { .. } => "publickey",
            AuthMethod::KeyboardInteractive { .. } => "keyboard-interactive",
            AuthMethod::Other { name, .. } => name,
        }
    }
}

/// SSH_MSG_USERAUTH_REQUEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserauthRequest {
    pub user: String,
    pub service: String,
    pub method: AuthMethod,
}

impl UserauthRequest {
    fn encoded_len(&self) -> usize {
        let m = match &self.method {
            AuthMethod::None => 0,
            AuthMethod::Password {
                password,
                new_password,
            } => 5 + password.len() + new_password.as_ref().map_or(0, |p| 4 + p.len()),
            AuthMethod::PublicKey {
                algorithm,
                blob,
                signature,
            } => 9 + algorithm.len() + blob.len() + signature.as_ref().map_or(0, |s| 4 + s.len()),
            AuthMethod::KeyboardInteractive {
                language,
                submethods,
            } => 8 + language.len() + submethods.len(),
            AuthMethod::Other { data, .. } => data.len(),
        };
        13 + self.user.len() + self.service.len() + self.method.name().len() + m
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.encoded_len());
        b.put_u8(num::USERAUTH_REQUEST);
        b.put_str(&self.user);
        b.put_str(&self.service);
        b.put_str(self.method.name());
        match &self.method {
            AuthMethod::None => {}
            AuthMethod::Password {
                password,
                new_password,
            } => {
                b.put_bool(new_password.is_some());
                b.put_str(password);
                if let Some(p) = new_password {
                    b.put_str(p);
                }
            }
            AuthMethod::PublicKey {
                algorithm,
                blob,
                signature,
            } => {
                b.put_bool(signature.is_some());
                b.put_str(algorithm);
                b.put_string(blob);
                if let Some(s) = signature {
                    b.put_string(s);
                }
            }
            AuthMethod::KeyboardInteractive {
                language,
                submethods,
            } => {
                b.put_str(language);
                b.put_str(submethods);
            }
            AuthMethod::Other { data, .. } => b.extend_from_slice(data),
        }
        debug_assert_eq!(b.len(), self.encoded_len());
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = open(payload, num::USERAUTH_REQUEST)?;
        let user = utf8(&mut r, "user name")?;
        let service = ascii(&mut r, "service name")?;
        let name = ascii(&mut r, "method name")?;
        let method = match name.as_str() {
            "none" => AuthMethod::None,
            "password" => {
                let change = r.bool()?;
                let password = secret(&mut r, "password")?;
                let new_password = if change {
                    Some(secret(&mut r, "password")?)
                } else {
                    None
                };
                AuthMethod::Password {
                    password,
                    new_password,
                }
            }
            "publickey" => {
                let signed = r.bool()?;
                let algorithm = ascii(&mut r, "public key algorithm")?;
                let blob = bytes(&mut r)?;
                let signature = if signed { Some(bytes(&mut r)?) } else { None };
                AuthMethod::PublicKey {
                    algorithm,
                    blob,
                    signature,
                }
            }
            "keyboard-interactive" => {
                let language = ascii(&mut r, "language tag")?;
                let submethods = utf8(&mut r, "submethods")?;
                AuthMethod::KeyboardInteractive {
                    language,
                    submethods,
                }
            }
            _ => AuthMethod::Other {
                data: rest(&mut r),
                name,
            },
        };
        r.finish()?;
        Ok(UserauthRequest {
            user,
            service,
            method,
        })
    }
}

/// The data signed for "publickey" authentication (RFC 4252 §7).
pub fn publickey_signed_data(
    session_id: &[u8],
    user: &str,
    service: &str,
    algorithm: &str,
    blob: &[u8],
) -> Vec<u8> {
    let mut b = Vec::with_capacity(
        35 + session_id.len() + user.len() + service.len() + algorithm.len() + blob.len(),
    );
    b.put_string(session_id);
    b.put_u8(num::USERAUTH_REQUEST);
    b.put_str(user);
    b.put_str(service);
    b.put_str("publickey");
    b.put_bool(true);
    b.put_str(algorithm);
    b.put_string(blob);
    b
}

/// SSH_MSG_USERAUTH_FAILURE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserauthFailure {
    pub methods: Vec<String>,
    pub partial_success: bool,
}

impl UserauthFailure {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![num::USERAUTH_FAILURE];
        put_names(&mut b, &self.methods);
        b.put_bool(self.partial_success);
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = open(payload, num::USERAUTH_FAILURE)?;
        let methods = names(&mut r, "method name-list")?;
        let partial_success = r.bool()?;
        r.finish()?;
        Ok(UserauthFailure {
            methods,
            partial_success,
        })
    }
}

unit_msg!(
    /// SSH_MSG_USERAUTH_SUCCESS.
    UserauthSuccess,
    num::USERAUTH_SUCCESS
);

/// SSH_MSG_USERAUTH_BANNER. The message is peer-supplied UTF-8 text that
/// may contain control characters: sanitise before showing it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserauthBanner {
    pub message: String,
    pub language: String,
}

impl UserauthBanner {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(9 + self.message.len() + self.language.len());
        b.put_u8(num::USERAUTH_BANNER);
        b.put_str(&self.message);
        b.put_str(&self.language);
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = open(payload, num::USERAUTH_BANNER)?;
        let message = utf8(&mut r, "banner")?;
        let language = ascii(&mut r, "language tag")?;
        r.finish()?;
        Ok(UserauthBanner { message, language })
    }
}

/// SSH_MSG_USERAUTH_PK_OK (60, during "publickey").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserauthPkOk {
    pub algorithm: String,
    pub blob: Vec<u8>,
}

impl UserauthPkOk {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(9 + self.algorithm.len() + self.blob.len());
        b.put_u8(num::USERAUTH_PK_OK);
        b.put_str(&self.algorithm);
        b.put_string(&self.blob);
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = open(payload, num::USERAUTH_PK_OK)?;
        let algorithm = ascii(&mut r, "public key algorithm")?;
        let blob = bytes(&mut r)?;
        r.finish()?;
        Ok(UserauthPkOk { algorithm, blob })
    }
}

/// SSH_MSG_USERAUTH_PASSWD_CHANGEREQ (60, during "password"; RFC 4252 §8).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserauthPasswdChangereq {
    pub prompt: String,
    pub language: String,
}

impl UserauthPasswdChangereq {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(9 + self.prompt.len() + self.language.len());
        b.put_u8(num::USERAUTH_PASSWD_CHANGEREQ);
        b.put_str(&self.prompt);
        b.put_str(&self.language);
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = open(payload, num::USERAUTH_PASSWD_CHANGEREQ)?;
        let prompt = utf8(&mut r, "prompt")?;
        let language = ascii(&mut r, "language tag")?;
        r.finish()?;
        Ok(UserauthPasswdChangereq { prompt, language })
    }
}

/// SSH_MSG_USERAUTH_INFO_REQUEST (60, during "keyboard-interactive";
/// RFC 4256 §3.2). Each prompt comes with its echo flag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserauthInfoRequest {
    pub name: String,
    pub instruction: String,
    pub language: String,
    pub prompts: Vec<(String, bool)>,
}

impl UserauthInfoRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![num::USERAUTH_INFO_REQUEST];
        b.put_str(&self.name);
        b.put_str(&self.instruction);
        b.put_str(&self.language);
        b.put_u32(self.prompts.len() as u32);
        for (p, echo) in &self.prompts {
            b.put_str(p);
            b.put_bool(*echo);
        }
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = open(payload, num::USERAUTH_INFO_REQUEST)?;
        let name = utf8(&mut r, "info request name")?;
        let instruction = utf8(&mut r, "info request instruction")?;
        let language = ascii(&mut r, "language tag")?;
        let n = count(&mut r, MAX_PROMPTS, "prompt count")?;
        let mut prompts = Vec::with_capacity(n);
        for _ in 0..n {
            let p = utf8(&mut r, "prompt")?;
            let echo = r.bool()?;
            prompts.push((p, echo));
        }
        r.finish()?;
        Ok(UserauthInfoRequest {
            name,
            instruction,
            language,
            prompts,
        })
    }
}

/// SSH_MSG_USERAUTH_INFO_RESPONSE (RFC 4256 §3.4). As for passwords, the
/// encoded payload holds the secrets and is allocated once at its final size.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserauthInfoResponse {
    pub responses: Vec<Zeroizing<String>>,
}

impl UserauthInfoResponse {
    pub fn encode(&self) -> Vec<u8> {
        let len = 5 + self.responses.iter().map(|s| 4 + s.len()).sum::<usize>();
        let mut b = Vec::with_capacity(len);
        b.put_u8(num::USERAUTH_INFO_RESPONSE);
        b.put_u32(self.responses.len() as u32);
        for s in &self.responses {
            b.put_str(s);
        }
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = open(payload, num::USERAUTH_INFO_RESPONSE)?;
        let n = count(&mut r, MAX_PROMPTS, "response count")?;
        let mut responses = Vec::with_capacity(n);
        for _ in 0..n {
            responses.push(secret(&mut r, "response")?);
        }
        r.finish()?;
        Ok(UserauthInfoResponse { responses })
    }
}

// ---------------------------------------------------------------------------
// Connection protocol: global requests (RFC 4254 §4, §7; OpenSSH PROTOCOL).

/// The request-specific part of GLOBAL_REQUEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobalReq {
    /// "tcpip-forward".
    TcpipForward { address: String, port: u32 },
    /// "cancel-tcpip-forward".
    CancelTcpipForward { address: String, port: u32 },
    /// "streamlocal-forward@openssh.com": listen on a Unix-domain socket
    /// (OpenSSH PROTOCOL §2.4).
    StreamlocalForward { path: String },
    /// "cancel-streamlocal-forward@openssh.com".
    CancelStreamlocalForward { path: String },
    /// "no-more-sessions@openssh.com".
    NoMoreSessions,
    /// "keepalive@openssh.com".
    Keepalive,
    /// "hostkeys-00@openssh.com": the server's host key blobs.
    HostKeys(Vec<Vec<u8>>),
    /// "hostkeys-prove-00@openssh.com": the host key blobs to prove.
    HostKeysProve(Vec<Vec<u8>>),
    /// Any other request with its request-specific bytes. `name` must not be
    /// one of the names above.
    Other { name: String, data: Vec<u8> },
}

impl GlobalReq {
    /// The request name on the wire.
    pub fn name(&self) -> &str {
        match self {
            GlobalReq::TcpipForward { .. } => "tcpip-forward",
            GlobalReq::CancelTcpipForward { .. } => "cancel-tcpip-forward",
            GlobalReq::StreamlocalForward { .. } => "streamlocal-forward@openssh.com",
            GlobalReq::CancelStreamlocalForward { .. } => "cancel-streamlocal-forward@openssh.com",
            GlobalReq::NoMoreSessions => "no-more-sessions@openssh.com",
            GlobalReq::Keepalive => "keepalive@openssh.com",
            GlobalReq::HostKeys(_) => "hostkeys-00@openssh.com",
            GlobalReq::HostKeysProve(_) => "hostkeys-prove-00@openssh.com",
            GlobalReq::Other { name, .. } => name,
        }
    }
}

/// A sequence of strings up to the end of the message.
fn key_list(r: &mut Reader<'_>) -> Result<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    while r.remaining() > 0 {
        if keys.len() == MAX_HOST_KEYS {
            return Err(Error::TooLarge("host key list"));
        }
        keys.push(bytes(r)?);
    }
    Ok(keys)
}

/// SSH_MSG_GLOBAL_REQUEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalRequest {
    pub want_reply: bool,
    pub request: GlobalReq,
}

impl GlobalRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![num::GLOBAL_REQUEST];
        b.put_str(self.request.name());
        b.put_bool(self.want_reply);
        match &self.request {
            GlobalReq::TcpipForward { address, port }
            | GlobalReq::CancelTcpipForward { address, port } => {
                b.put_str(address);
                b.put_u32(*port);
            }
            GlobalReq::StreamlocalForward { path }
            | GlobalReq::CancelStreamlocalForward { path } => b.put_str(path),
            GlobalReq::NoMoreSessions | GlobalReq::Keepalive => {}
            GlobalReq::HostKeys(keys) | GlobalReq::HostKeysProve(keys) => {
                for k in keys {
                    b.put_string(k);
                }
            }
            GlobalReq::Other { data, .. } => b.extend_from_slice(data),
        }
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = open(payload, num::GLOBAL_REQUEST)?;
        let name = ascii(&mut r, "request name")?;
        let want_reply = r.bool()?;
        let request = match name.as_str() {
            "tcpip-forward" => GlobalReq::TcpipForward {
                address: ascii(&mut r, "address")?,
                port: r.u32()?,
            },
            "cancel-tcpip-forward" => GlobalReq::CancelTcpipForward {
                address: ascii(&mut r, "address")?,
                port: r.u32()?,
            },
            "streamlocal-forward@openssh.com" => GlobalReq::StreamlocalForward {
                path: socket_path(&mut r)?,
            },
            "cancel-streamlocal-forward@openssh.com" => GlobalReq::CancelStreamlocalForward {
                path: socket_path(&mut r)?,
            },
            "no-more-sessions@openssh.com" => GlobalReq::NoMoreSessions,
            "keepalive@openssh.com" => GlobalReq::Keepalive,
            "hostkeys-00@openssh.com" => GlobalReq::HostKeys(key_list(&mut r)?),
            "hostkeys-prove-00@openssh.com" => GlobalReq::HostKeysProve(key_list(&mut r)?),
            _ => GlobalReq::Other {
                data: rest(&mut r),
                name,
            },
        };
        r.finish()?;
        Ok(GlobalRequest {
            want_reply,
            request,
        })
    }
}

/// SSH_MSG_REQUEST_SUCCESS with its raw response data (e.g. the bound port
/// of a "tcpip-forward" with port 0, or the signatures of hostkeys-prove).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestSuccess(pub Vec<u8>);

impl RequestSuccess {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(1 + self.0.len());
        b.put_u8(num::REQUEST_SUCCESS);
        b.extend_from_slice(&self.0);
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = open(payload, num::REQUEST_SUCCESS)?;
        Ok(RequestSuccess(rest(&mut r)))
    }

    /// The bound port of a successful "tcpip-forward" with port 0.
    pub fn bound_port(&self) -> Result<u32> {
        let mut r = Reader::new(&self.0);
        let p = r.u32()?;
        r.finish()?;
        Ok(p)
    }
}

unit_msg!(
    /// SSH_MSG_REQUEST_FAILURE.
    RequestFailure,
    num::REQUEST_FAILURE
);

// ---------------------------------------------------------------------------
// Connection protocol: channels (RFC 4254 §5, §6; OpenSSH PROTOCOL).

/// The channel type and type-specific part of CHANNEL_OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelKind {
    /// "session".
    Session,
    /// "direct-tcpip".
    DirectTcpip {
        host: String,
        port: u32,
        originator: String,
        originator_port: u32,
    },
    /// "forwarded-tcpip".
    ForwardedTcpip {
        address: String,
        port: u32,
        originator: String,
        originator_port: u32,
    },
    /// "x11".
    X11 {
        originator: String,
        originator_port: u32,
    },
    /// "direct-streamlocal@openssh.com": a connection to a Unix-domain
    /// socket (OpenSSH PROTOCOL §2.4; the reserved string and port that
    /// follow the path are kept as sent).
    DirectStreamlocal {
        path: String,
        reserved: String,
        reserved_port: u32,
    },
    /// "forwarded-streamlocal@openssh.com": a connection accepted on a
    /// socket of a streamlocal-forward (the reserved string after the path
    /// is empty as OpenSSH sends it).
    ForwardedStreamlocal { path: String, reserved: String },
    /// "auth-agent@openssh.com": a connection to the forwarded agent
    /// (OpenSSH PROTOCOL §2.2; no type-specific data).
    AuthAgent,
    /// Any other channel type with its type-specific bytes. `name` must not
    /// be one of the names above.
    Other { name: String, data: Vec<u8> },
}

impl ChannelKind {
    /// The channel type name on the wire.
    pub fn name(&self) -> &str {
        match self {
            ChannelKind::Session => "session",
            ChannelKind::DirectTcpip { .. } => "direct-tcpip",
            ChannelKind::ForwardedTcpip { .. } => "forwarded-tcpip",
            ChannelKind::X11 { .. } => "x11",
            ChannelKind::DirectStreamlocal { .. } => "direct-streamlocal@openssh.com",
            ChannelKind::ForwardedStreamlocal { .. } => "forwarded-streamlocal@openssh.com",
            ChannelKind::AuthAgent => "auth-agent@openssh.com",
            ChannelKind::Other { name, .. } => name,
        }
    }
}

/// SSH_MSG_CHANNEL_OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelOpen {
    pub sender: u32,
    pub initial_window: u32,
    pub max_packet: u32,
    pub kind: ChannelKind,
}

impl ChannelOpen {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![num::CHANNEL_OPEN];
        b.put_str(self.kind.name());
        b.put_u32(self.sender);
        b.put_u32(self.initial_window);
        b.put_u32(self.max_packet);
        match &self.kind {
            ChannelKind::Session | ChannelKind::AuthAgent => {}
            ChannelKind::DirectTcpip {
                host: a,
                port: p,
                originator,
                originator_port,
            }
            | ChannelKind::ForwardedTcpip {
                address: a,
                port: p,
                originator,
                originator_port,
            } => {
                b.put_str(a);
                b.put_u32(*p);
                b.put_str(originator);
                b.put_u32(*originator_port);
            }
            ChannelKind::X11 {
                originator,
                originator_port,
            } => {
                b.put_str(originator);
                b.put_u32(*originator_port);
            }
            ChannelKind::DirectStreamlocal {
                path,
                reserved,
                reserved_port,
            } => {
                b.put_str(path);
                b.put_str(reserved);
                b.put_u32(*reserved_port);
            }
            ChannelKind::ForwardedStreamlocal { path, reserved } => {
                b.put_str(path);
                b.put_str(reserved);
            }
            ChannelKind::Other { data, .. } => b.extend_from_slice(data),
        }
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = open(payload, num::CHANNEL_OPEN)?;
        let name = ascii(&mut r, "channel type")?;
        let sender = r.u32()?;
        let initial_window = r.u32()?;
        let max_packet = r.u32()?;
        let kind = match name.as_str() {
            "session" => ChannelKind::Session,
            "direct-tcpip" => ChannelKind::DirectTcpip {
                host: ascii(&mut r, "host")?,
                port: r.u32()?,
                originator: ascii(&mut r, "originator address")?,
                originator_port: r.u32()?,
            },
            "forwarded-tcpip" => ChannelKind::ForwardedTcpip {
                address: ascii(&mut r, "address")?,
                port: r.u32()?,
                originator: ascii(&mut r, "originator address")?,
                originator_port: r.u32()?,
            },
            "x11" => ChannelKind::X11 {
                originator: ascii(&mut r, "originator address")?,
                originator_port: r.u32()?,
            },
            "direct-streamlocal@openssh.com" => ChannelKind::DirectStreamlocal {
                path: socket_path(&mut r)?,
                reserved: utf8(&mut r, "reserved")?,
                reserved_port: r.u32()?,
            },
            "forwarded-streamlocal@openssh.com" => ChannelKind::ForwardedStreamlocal {
                path: socket_path(&mut r)?,
                reserved: utf8(&mut r, "reserved")?,
            },
            "auth-agent@openssh.com" => ChannelKind::AuthAgent,
            _ => ChannelKind::Other {
                data: rest(&mut r),
                name,
            },
        };
        r.finish()?;
        Ok(ChannelOpen {
            sender,
            initial_window,
            max_packet,
            kind,
        })
    }
}

/// SSH_MSG_CHANNEL_OPEN_CONFIRMATION with its type-specific data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelOpenConfirmation {
    pub recipient: u32,
    pub sender: u32,
    pub initial_window: u32,
    pub max_packet: u32,
    pub data: Vec<u8>,
}

impl ChannelOpenConfirmation {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(17 + self.data.len());
        b.put_u8(num::CHANNEL_OPEN_CONFIRMATION);
        b.put_u32(self.recipient);
        b.put_u32(self.sender);
        b.put_u32(self.initial_window);
        b.put_u32(self.max_packet);
        b.extend_from_slice(&self.data);
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = open(payload, num::CHANNEL_OPEN_CONFIRMATION)?;
        let recipient = r.u32()?;
        let sender = r.u32()?;
        let initial_window = r.u32()?;
        let max_packet = r.u32()?;
        let data = rest(&mut r);
        Ok(ChannelOpenConfirmation {
            recipient,
            sender,
            initial_window,
            max_packet,
            data,
        })
    }
}

/// SSH_MSG_CHANNEL_OPEN_FAILURE. `reason` is one of [`open_failure`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelOpenFailure {
    pub recipient: u32,
    pub reason: u32,
    pub description: String,
    pub language: String,
}

impl ChannelOpenFailure {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(17 + self.description.len() + self.language.len());
        b.put_u8(num::CHANNEL_OPEN_FAILURE);
        b.put_u32(self.recipient);
        b.put_u32(self.reason);
        b.put_str(&self.description);
        b.put_str(&self.language);
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = open(payload, num::CHANNEL_OPEN_FAILURE)?;
        let recipient = r.u32()?;
        let reason = r.u32()?;
        let description = utf8(&mut r, "open failure description")?;
        let language = ascii(&mut r, "language tag")?;
        r.finish()?;
        Ok(ChannelOpenFailure {
            recipient,
            reason,
            description,
            language,
        })
    }
}

/// SSH_MSG_CHANNEL_WINDOW_ADJUST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelWindowAdjust {
    pub recipient: u32,
    pub bytes: u32,
}

impl ChannelWindowAdjust {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(9);
        b.put_u8(num::CHANNEL_WINDOW_ADJUST);
        b.put_u32(self.recipient);
        b.put_u32(self.bytes);
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = open(payload, num::CHANNEL_WINDOW_ADJUST)?;
        let recipient = r.u32()?;
        let bytes = r.u32()?;
        r.finish()?;
        Ok(ChannelWindowAdjust { recipient, bytes })
    }
}

/// SSH_MSG_CHANNEL_DATA. See also [`channel_data_header`] and
/// [`decode_channel_data`], which avoid copying the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelData {
    pub recipient: u32,
    pub data: Vec<u8>,
}

impl ChannelData {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(9 + self.data.len());
        b.extend_from_slice(&channel_data_header(self.recipient, self.data.len() as u32));
        b.extend_from_slice(&self.data);
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let (recipient, data) = decode_channel_data(payload)?;
        Ok(ChannelData {
            recipient,
            data: data.to_vec(),
        })
    }
}

/// SSH_MSG_CHANNEL_EXTENDED_DATA. `code` is e.g. [`EXTENDED_DATA_STDERR`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelExtendedData {
    pub recipient: u32,
    pub code: u32,
    pub data: Vec<u8>,
}

impl ChannelExtendedData {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(13 + self.data.len());
        b.extend_from_slice(&channel_extended_data_header(
            self.recipient,
            self.code,
            self.data.len() as u32,
        ));
        b.extend_from_slice(&self.data);
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let (recipient, code, data) = decode_channel_extended_data(payload)?;
        Ok(ChannelExtendedData {
            recipient,
            code,
            data: data.to_vec(),
        })
    }
}

/// The first 9 bytes of a CHANNEL_DATA payload carrying `len` bytes of data;
/// the data follows them directly.
pub fn channel_data_header(recipient: u32, len: u32) -> [u8; 9] {
    let mut h = [0u8; 9];
    h[0] = num::CHANNEL_DATA;
    h[1..5].copy_from_slice(&recipient.to_be_bytes());
    h[5..9].copy_from_slice(&len.to_be_bytes());
    h
}

/// The first 13 bytes of a CHANNEL_EXTENDED_DATA payload carrying `len`
/// bytes of data; the data follows them directly.
pub fn channel_extended_data_header(recipient: u32, code: u32, len: u32) -> [u8; 13] {
    let mut h = [0u8; 13];
    h[0] = num::CHANNEL_EXTENDED_DATA;
    h[1..5].copy_from_slice(&recipient.to_be_bytes());
    h[5..9].copy_from_slice(&code.to_be_bytes());
    h[9..13].copy_from_slice(&len.to_be_bytes());
    h
}

/// Decodes CHANNEL_DATA without copying: (recipient channel, data).
pub fn decode_channel_data(payload: &[u8]) -> Result<(u32, &[u8])> {
    let mut r = open(payload, num::CHANNEL_DATA)?;
    let recipient = r.u32()?;
    let data = r.string()?;
    r.finish()?;
    Ok((recipient, data))
}

/// Decodes CHANNEL_EXTENDED_DATA without copying: (recipient, code, data).
pub fn decode_channel_extended_data(payload: &[u8]) -> Result<(u32, u32, &[u8])> {
    let mut r = open(payload, num::CHANNEL_EXTENDED_DATA)?;
    let recipient = r.u32()?;
    let code = r.u32()?;
    let data = r.string()?;
    r.finish()?;
    Ok((recipient, code, data))
}

u32_msg!(
    /// SSH_MSG_CHANNEL_EOF with the recipient channel.
    ChannelEof,
    num::CHANNEL_EOF
);

u32_msg!(
    /// SSH_MSG_CHANNEL_CLOSE with the recipient channel.
    ChannelClose,
    num::CHANNEL_CLOSE
);

u32_msg!(
    /// SSH_MSG_CHANNEL_SUCCESS with the recipient channel.
    ChannelSuccess,
    num::CHANNEL_SUCCESS
);

u32_msg!(
    /// SSH_MSG_CHANNEL_FAILURE with the recipient channel.
    ChannelFailure,
    num::CHANNEL_FAILURE
);

/// The request type and type-specific part of CHANNEL_REQUEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelReq {
    /// "pty-req"; `modes` is the encoded terminal modes string, see
    /// [`parse_modes`] and [`encode_modes`].
    PtyReq {
        term: String,
        cols: u32,
        rows: u32,
        width_px: u32,
        height_px: u32,
        modes: Vec<u8>,
    },
    /// "x11-req".
    X11Req {
        single_connection: bool,
        auth_protocol: String,
        auth_cookie: String,
        screen: u32,
    },
    /// "env".
    Env { name: String, value: Vec<u8> },
    /// "shell".
    Shell,
    /// "exec" with the command bytes.
    Exec(Vec<u8>),
    /// "subsystem".
    Subsystem(String),
    /// "window-change".
    WindowChange {
        cols: u32,
        rows: u32,
        width_px: u32,
        height_px: u32,
    },
    /// "signal", the name without the "SIG" prefix.
    Signal(String),
    /// "exit-status".
    ExitStatus(u32),
    /// "exit-signal", the name without the "SIG" prefix.
    ExitSignal {
        signal: String,
        core_dumped: bool,
        message: String,
        language: String,
    },
    /// "eow@openssh.com".
    Eow,
    /// "keepalive@openssh.com".
    Keepalive,
    /// "auth-agent-req@openssh.com".
    AuthAgentReq,
    /// Any other request with its type-specific bytes. `name` must not be
    /// one of the names above.
    Other { name: String, data: Vec<u8> },
}

impl ChannelReq {
    /// The request type name on the wire.
    pub fn name(&self) -> &str {
        match self {
            ChannelReq::PtyReq { .. } => "pty-req",
            ChannelReq::X11Req { .. } => "x11-req",
            ChannelReq::Env { .. } => "env",
            ChannelReq::Shell => "shell",
            ChannelReq::Exec(_) => "exec",
            ChannelReq::Subsystem(_) => "subsystem",
            ChannelReq::WindowChange { .. } => "window-change",
            ChannelReq::Signal(_) => "signal",
            ChannelReq::ExitStatus(_) => "exit-status",
            ChannelReq::ExitSignal { .. } => "exit-signal",
            ChannelReq::Eow => "eow@openssh.com",
            ChannelReq::Keepalive => "keepalive@openssh.com",
            ChannelReq::AuthAgentReq => "auth-agent-req@openssh.com",
            ChannelReq::Other { name, .. } => name,
        }
    }
}

/// SSH_MSG_CHANNEL_REQUEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRequest {
    pub recipient: u32,
    pub want_reply: bool,
    pub request: ChannelReq,
}

impl ChannelRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![num::CHANNEL_REQUEST];
        b.put_u32(self.recipient);
        b.put_str(self.request.name());
        b.put_bool(self.want_reply);
        match &self.request {
            ChannelReq::PtyReq {
                term,
                cols,
                rows,
                width_px,
                height_px,
                modes,
            } => {
                b.put_str(term);
                b.put_u32(*cols);
                b.put_u32(*rows);
                b.put_u32(*width_px);
                b.put_u32(*height_px);
                b.put_string(modes);
            }
            ChannelReq::X11Req {
                single_connection,
                auth_protocol,
                auth_cookie,
                screen,
            } => {
                b.put_bool(*single_connection);
                b.put_str(auth_protocol);
                b.put_str(auth_cookie);
                b.put_u32(*screen);
            }
            ChannelReq::Env { name, value } => {
                b.put_str(name);
                b.put_string(value);
            }
            ChannelReq::Shell
            | ChannelReq::Eow
            | ChannelReq::Keepalive
            | ChannelReq::AuthAgentReq => {}
            ChannelReq::Exec(cmd) => b.put_string(cmd),
            ChannelReq::Subsystem(s) | ChannelReq::Signal(s) => b.put_str(s),
            ChannelReq::WindowChange {
                cols,
                rows,
                width_px,
                height_px,
            } => {
                b.put_u32(*cols);
                b.put_u32(*rows);
                b.put_u32(*width_px);
                b.put_u32(*height_px);
            }
            ChannelReq::ExitStatus(s) => b.put_u32(*s),
            ChannelReq::ExitSignal {
                signal,
                core_dumped,
                message,
                language,
            } => {
                b.put_str(signal);
                b.put_bool(*core_dumped);
                b.put_str(message);
                b.put_str(language);
            }
            ChannelReq::Other { data, .. } => b.extend_from_slice(data),
        }
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = open(payload, num::CHANNEL_REQUEST)?;
        let recipient = r.u32()?;
        let name = ascii(&mut r, "channel request type")?;
        let want_reply = r.bool()?;
        let request = match name.as_str() {
            "pty-req" => ChannelReq::PtyReq {
                term: ascii(&mut r, "TERM")?,
                cols: r.u32()?,
                rows: r.u32()?,
                width_px: r.u32()?,
                height_px: r.u32()?,
                modes: bytes(&mut r)?,
            },
            "x11-req" => ChannelReq::X11Req {
                single_connection: r.bool()?,
                auth_protocol: ascii(&mut r, "X11 auth protocol")?,
                auth_cookie: ascii(&mut r, "X11 auth cookie")?,
                screen: r.u32()?,
            },
            "env" => ChannelReq::Env {
                name: ascii(&mut r, "environment variable name")?,
                value: bytes(&mut r)?,
            },
            "shell" => ChannelReq::Shell,
            "exec" => ChannelReq::Exec(bytes(&mut r)?),
            "subsystem" => ChannelReq::Subsystem(ascii(&mut r, "subsystem name")?),
            "window-change" => ChannelReq::WindowChange {
                cols: r.u32()?,
                rows: r.u32()?,
                width_px: r.u32()?,
                height_px: r.u32()?,
            },
            "signal" => ChannelReq::Signal(ascii(&mut r, "signal name")?),
            "exit-status" => ChannelReq::ExitStatus(r.u32()?),
            "exit-signal" => ChannelReq::ExitSignal {
                signal: ascii(&mut r, "signal name")?,
                core_dumped: r.bool()?,
                message: utf8(&mut r, "exit-signal message")?,
                language: ascii(&mut r, "language tag")?,
            },
            "eow@openssh.com" => ChannelReq::Eow,
            "keepalive@openssh.com" => ChannelReq::Keepalive,
            "auth-agent-req@openssh.com" => ChannelReq::AuthAgentReq,
            _ => ChannelReq::Other {
                data: rest(&mut r),
                name,
            },
        };
        r.finish()?;
        Ok(ChannelRequest {
            recipient,
            want_reply,
            request,
        })
    }
}

// ---------------------------------------------------------------------------
// Terminal modes (RFC 4254 §8).

/// Parses encoded terminal modes into (opcode, argument) pairs. Parsing ends
/// at TTY_OP_END (0), at an opcode of 160 or more (undefined, "cause parsing
/// to stop" per the RFC), or at the end of the input (some clients send an
/// empty string); whatever follows is ignored. An opcode whose argument is
/// cut short is an error, as are more than [`MAX_MODES`] opcodes.
pub fn parse_modes(b: &[u8]) -> Result<Vec<(u8, u32)>> {
    let mut r = Reader::new(b);
    let mut modes = Vec::new();
    while r.remaining() > 0 {
        let op = r.u8()?;
        if op == mode::TTY_OP_END || op >= 160 {
            break;
        }
        if modes.len() == MAX_MODES {
            return Err(Error::TooLarge("terminal modes"));
        }
        modes.push((op, r.u32()?));
    }
    Ok(modes)
}

/// Encodes terminal modes, ending with TTY_OP_END. Opcodes 0 and 160 and
/// above cannot be encoded with a u32 argument and are skipped.
pub fn encode_modes(modes: &[(u8, u32)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(modes.len() * 5 + 1);
    for &(op, v) in modes {
        if (1..160).contains(&op) {
            b.put_u8(op);
            b.put_u32(v);
        }
    }
    b.put_u8(mode::TTY_OP_END);
    b
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn z(s: &str) -> Zeroizing<String> {
        Zeroizing::new(s.to_owned())
    }

    fn kexinit() -> KexInit {
        KexInit {
            cookie: [7; 16],
            kex: vec!["curve25519-sha256".into(), "ext-info-c".into()],
            host_key: vec!["ssh-ed25519".into()],
            cipher_c2s: vec!["aes128-ctr".into()],
            cipher_s2c: vec!["aes128-ctr".into(), "aes256-gcm@openssh.com".into()],
            mac_c2s: vec!["hmac-sha2-256".into()],
            mac_s2c: vec!["hmac-sha2-256".into()],
            comp_c2s: vec!["none".into()],
            comp_s2c: vec!["none".into()],
            lang_c2s: vec![],
            lang_s2c: vec![],
            first_kex_follows: false,
            reserved: 0,
        }
    }

    /// One valid encoding of every message type, with the decoder that
    /// re-encodes it, and whether every strict prefix must be rejected.
    type Check = fn(&[u8]) -> Result<Vec<u8>>;

    macro_rules! chk {
        ($t:ty) => {
            (|p: &[u8]| <$t>::decode(p).map(|m| m.encode())) as Check
        };
    }

    fn samples() -> Vec<(Vec<u8>, Check, bool)> {
        let mut v: Vec<(Vec<u8>, Check, bool)> = vec![
            (
                Disconnect {
                    reason: 2,
                    description: "bad ✓".into(),
                    language: "en".into(),
                }
                .encode(),
                chk!(Disconnect),
                true,
            ),
            (Ignore(b"xyz".to_vec()).encode(), chk!(Ignore), true),
            (Unimplemented(9).encode(), chk!(Unimplemented), true),
            (
                Debug {
                    always_display: true,
                    message: "hi".into(),
                    language: "".into(),
                }
                .encode(),
                chk!(Debug),
                true,
            ),
            (
                ServiceRequest("ssh-userauth".into()).encode(),
                chk!(ServiceRequest),
                true,
            ),
            (
                ServiceAccept("ssh-connection".into()).encode(),
                chk!(ServiceAccept),
                true,
            ),
            (
                ExtInfo(vec![
                    (
                        "server-sig-algs".into(),
                        b"ssh-ed25519,rsa-sha2-256".to_vec(),
                    ),
                    ("ping@openssh.com".into(), b"0".to_vec()),
                ])
                .encode(),
                chk!(ExtInfo),
                true,
            ),
            (NewKeys.encode(), chk!(NewKeys), true),
            (Ping(b"p".to_vec()).encode(), chk!(Ping), true),
            (Pong(vec![]).encode(), chk!(Pong), true),
            (kexinit().encode(), chk!(KexInit), true),
            (
                KexEcdhInit { q_c: vec![1; 32] }.encode(),
                chk!(KexEcdhInit),
                true,
            ),
            (
                KexEcdhReply {
                    host_key: vec![1, 2],
                    q_s: vec![3; 32],
                    signature: vec![4, 5, 6],
                }
                .encode(),
                chk!(KexEcdhReply),
                true,
            ),
            (
                UserauthFailure {
                    methods: vec!["publickey".into(), "password".into()],
                    partial_success: true,
                }
                .encode(),
                chk!(UserauthFailure),
                true,
            ),
            (UserauthSuccess.encode(), chk!(UserauthSuccess), true),
            (
                UserauthBanner {
                    message: "Welcome\r\n".into(),
                    language: "en".into(),
                }
                .encode(),
                chk!(UserauthBanner),
                true,
            ),
            (
                UserauthPkOk {
                    algorithm: "ssh-ed25519".into(),
                    blob: vec![0, 1, 2],
                }
                .encode(),
                chk!(UserauthPkOk),
                true,
            ),
            (
                UserauthPasswdChangereq {
                    prompt: "expired".into(),
                    language: "".into(),
                }
                .encode(),
                chk!(UserauthPasswdChangereq),
                true,
            ),
            (
                UserauthInfoRequest {
                    name: "n".into(),
                    instruction: "i".into(),
                    language: "".into(),
                    prompts: vec![("Password: ".into(), false), ("OTP: ".into(), true)],
                }
                .encode(),
                chk!(UserauthInfoRequest),
                true,
            ),
            (
                UserauthInfoResponse {
                    responses: vec![z("hunter2"), z("")],
                }
                .encode(),
                chk!(UserauthInfoResponse),
                true,
            ),
            (
                RequestSuccess(vec![0, 0, 0x1f, 0x90]).encode(),
                chk!(RequestSuccess),
                false,
            ),
            (RequestFailure.encode(), chk!(RequestFailure), true),
            (
                ChannelOpenConfirmation {
                    recipient: 1,
                    sender: 2,
                    initial_window: 3,
                    max_packet: 4,
                    data: vec![],
                }
                .encode(),
                chk!(ChannelOpenConfirmation),
                true,
            ),
            (
                ChannelOpenFailure {
                    recipient: 1,
                    reason: open_failure::CONNECT_FAILED,
                    description: "refused".into(),
                    language: "".into(),
                }
                .encode(),
                chk!(ChannelOpenFailure),
                true,
            ),
            (
                ChannelWindowAdjust {
                    recipient: 5,
                    bytes: 1 << 20,
                }
                .encode(),
                chk!(ChannelWindowAdjust),
                true,
            ),
            (
                ChannelData {
                    recipient: 5,
                    data: b"hello".to_vec(),
                }
                .encode(),
                chk!(ChannelData),
                true,
            ),
            (
                ChannelExtendedData {
                    recipient: 5,
                    code: EXTENDED_DATA_STDERR,
                    data: b"oops".to_vec(),
                }
                .encode(),
                chk!(ChannelExtendedData),
                true,
            ),
            (ChannelEof(3).encode(), chk!(ChannelEof), true),
            (ChannelClose(3).encode(), chk!(ChannelClose), true),
            (ChannelSuccess(3).encode(), chk!(ChannelSuccess), true),
            (ChannelFailure(3).encode(), chk!(ChannelFailure), true),
        ];
        let methods = vec![
            AuthMethod::None,
            AuthMethod::Password {
                password: z("pässword"),
                new_password: None,
            },
            AuthMethod::Password {
                password: z("old"),
                new_password: Some(z("new")),
            },
            AuthMethod::PublicKey {
                algorithm: "ssh-ed25519".into(),
                blob: vec![1, 2, 3],
                signature: None,
            },
            AuthMethod::PublicKey {
                algorithm: "rsa-sha2-256".into(),
                blob: vec![1, 2, 3],
                signature: Some(vec![9; 10]),
            },
            AuthMethod::KeyboardInteractive {
                language: "".into(),
                submethods: "pam".into(),
            },
            AuthMethod::Other {
                name: "hostbased".into(),
                data: vec![0, 0, 0, 1, b'x'],
            },
        ];
        for (i, method) in methods.into_iter().enumerate() {
            let strict = !matches!(method, AuthMethod::Other { .. });
            let m = UserauthRequest {
                user: if i % 2 == 0 { "alice" } else { "björn" }.into(),
                service: "ssh-connection".into(),
                method,
            };
            v.push((m.encode(), chk!(UserauthRequest), strict));
        }
        let globals = vec![
            GlobalReq::TcpipForward {
                address: "localhost".into(),
                port: 0,
            },
            GlobalReq::CancelTcpipForward {
                address: "".into(),
                port: 8080,
            },
            GlobalReq::NoMoreSessions,
            GlobalReq::Keepalive,
            GlobalReq::HostKeys(vec![vec![1, 2], vec![]]),
            GlobalReq::HostKeysProve(vec![vec![3]]),
            GlobalReq::StreamlocalForward {
                path: "/tmp/s".into(),
            },
            GlobalReq::CancelStreamlocalForward {
                path: "/tmp/ß".into(),
            },
            GlobalReq::Other {
                name: "x-example@ressh".into(),
                data: vec![0, 0, 0, 1, b'/'],
            },
        ];
        for (i, request) in globals.into_iter().enumerate() {
            let strict = !matches!(
                request,
                GlobalReq::HostKeys(_) | GlobalReq::HostKeysProve(_) | GlobalReq::Other { .. }
            );
            let m = GlobalRequest {
                want_reply: i % 2 == 0,
                request,
            };
            v.push((m.encode(), chk!(GlobalRequest), strict));
        }
        let kinds = vec![
            ChannelKind::Session,
            ChannelKind::DirectTcpip {
                host: "example.com".into(),
                port: 22,
                originator: "127.0.0.1".into(),
                originator_port: 5555,
            },
            ChannelKind::ForwardedTcpip {
                address: "0.0.0.0".into(),
                port: 80,
                originator: "::1".into(),
                originator_port: 1,
            },
            ChannelKind::X11 {
                originator: "10.0.0.1".into(),
                originator_port: 6000,
            },
            ChannelKind::AuthAgent,
            ChannelKind::DirectStreamlocal {
                path: "/run/x.sock".into(),
                reserved: "".into(),
                reserved_port: 0,
            },
            ChannelKind::ForwardedStreamlocal {
                path: "/tmp/y".into(),
                reserved: "".into(),
            },
            ChannelKind::Other {
                name: "x-example@ressh".into(),
                data: vec![1, 2, 3],
            },
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            let strict = !matches!(kind, ChannelKind::Other { .. });
            let m = ChannelOpen {
                sender: i as u32,
                initial_window: 2 << 20,
                max_packet: 32768,
                kind,
            };
            v.push((m.encode(), chk!(ChannelOpen), strict));
        }
        let reqs = vec![
            ChannelReq::PtyReq {
                term: "xterm-256color".into(),
                cols: 80,
                rows: 24,
                width_px: 0,
                height_px: 0,
                modes: encode_modes(&[(mode::ECHO, 1), (mode::TTY_OP_ISPEED, 38400)]),
            },
            ChannelReq::X11Req {
                single_connection: false,
                auth_protocol: "MIT-MAGIC-COOKIE-1".into(),
                auth_cookie: "0123abcd".into(),
                screen: 0,
            },
            ChannelReq::Env {
                name: "LANG".into(),
                value: b"C.UTF-8".to_vec(),
            },
            ChannelReq::Shell,
            ChannelReq::Exec(b"ls -l \xff".to_vec()),
            ChannelReq::Subsystem("sftp".into()),
            ChannelReq::WindowChange {
                cols: 120,
                rows: 40,
                width_px: 1,
                height_px: 2,
            },
            ChannelReq::Signal("INT".into()),
            ChannelReq::ExitStatus(127),
            ChannelReq::ExitSignal {
                signal: "SEGV".into(),
                core_dumped: true,
                message: "boom ☠".into(),
                language: "en".into(),
            },
            ChannelReq::Eow,
            ChannelReq::Keepalive,
            ChannelReq::AuthAgentReq,
            ChannelReq::Other {
                name: "xon-xoff".into(),
                data: vec![1],
            },
        ];
        for (i, request) in reqs.into_iter().enumerate() {
            let strict = !matches!(request, ChannelReq::Other { .. });
            let m = ChannelRequest {
                recipient: i as u32,
                want_reply: i % 3 == 0,
                request,
            };
            v.push((m.encode(), chk!(ChannelRequest), strict));
        }
        v
    }

    #[test]
    fn round_trip_every_message() {
        for (bytes, check, _) in samples() {
            assert_eq!(check(&bytes).unwrap(), bytes, "{bytes:02x?}");
        }
    }

    #[test]
    fn typed_round_trips() {
        let m = UserauthRequest {
            user: "u".into(),
            service: "ssh-connection".into(),
            method: AuthMethod::Password {
                password: z("secret"),
                new_password: Some(z("secret2")),
            },
        };
        assert_eq!(UserauthRequest::decode(&m.encode()).unwrap(), m);
        let k = kexinit();
        assert_eq!(KexInit::decode(&k.encode()).unwrap(), k);
        let e = ExtInfo(vec![("a".into(), vec![1])]);
        assert_eq!(
            ExtInfo::decode(&e.encode()).unwrap().get("a"),
            Some(&[1u8][..])
        );
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let m = UserauthRequest {
            user: "u".into(),
            service: "ssh-connection".into(),
            method: AuthMethod::Password {
                password: z("hunter2"),
                new_password: None,
            },
        };
        assert!(!format!("{m:?}").contains("hunter2"));
        let r = UserauthInfoResponse {
            responses: vec![z("hunter2")],
        };
        assert!(!format!("{r:?}").contains("hunter2"));
    }

    #[test]
    fn truncated_inputs_are_rejected() {
        for (bytes, check, strict) in samples() {
            assert!(check(&[]).is_err());
            if strict {
                for n in 0..bytes.len() {
                    assert!(check(&bytes[..n]).is_err(), "prefix {n} of {bytes:02x?}");
                }
            }
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        for (bytes, check, _) in samples() {
            let mut b = bytes.clone();
            b.push(0);
            let allowed = match check(&b) {
                Err(e) => {
                    assert!(
                        matches!(e, Error::TrailingData | Error::Truncated),
                        "{e:?} for {b:02x?}"
                    );
                    continue;
                }
                Ok(_) => b,
            };
            // Only messages that end in free-form data may absorb the byte.
            let n = allowed[0];
            assert!(
                [
                    num::REQUEST_SUCCESS,
                    num::CHANNEL_OPEN_CONFIRMATION,
                    num::GLOBAL_REQUEST,
                    num::CHANNEL_OPEN,
                    num::CHANNEL_REQUEST,
                    num::USERAUTH_REQUEST
                ]
                .contains(&n),
                "{allowed:02x?} accepted"
            );
        }
        // Known types with trailing bytes are refused.
        let mut b = ChannelRequest {
            recipient: 0,
            want_reply: false,
            request: ChannelReq::Shell,
        }
        .encode();
        b.push(1);
        assert_eq!(ChannelRequest::decode(&b), Err(Error::TrailingData));
        let mut b = GlobalRequest {
            want_reply: true,
            request: GlobalReq::Keepalive,
        }
        .encode();
        b.push(1);
        assert_eq!(GlobalRequest::decode(&b), Err(Error::TrailingData));
        let mut b = UserauthRequest {
            user: "u".into(),
            service: "s".into(),
            method: AuthMethod::None,
        }
        .encode();
        b.push(1);
        assert_eq!(UserauthRequest::decode(&b), Err(Error::TrailingData));
    }

    #[test]
    fn wrong_message_number_is_rejected() {
        for (bytes, check, _) in samples() {
            for n in [0u8, 99, 255] {
                if n == bytes[0] {
                    continue;
                }
                let mut b = bytes.clone();
                b[0] = n;
                assert!(check(&b).is_err());
            }
        }
    }

    #[test]
    fn disconnect_rfc_layout() {
        // byte 1, uint32 reason 2, string "bad", string "" (RFC 4253 §11.1).
        let wire = [1, 0, 0, 0, 2, 0, 0, 0, 3, b'b', b'a', b'd', 0, 0, 0, 0];
        let m = Disconnect::decode(&wire).unwrap();
        assert_eq!(
            m,
            Disconnect {
                reason: crate::error::reason::PROTOCOL_ERROR,
                description: "bad".into(),
                language: "".into()
            }
        );
        assert_eq!(m.encode(), wire);
    }

    #[test]
    fn service_request_rfc_layout() {
        let mut wire = vec![5, 0, 0, 0, 12];
        wire.extend_from_slice(b"ssh-userauth");
        assert_eq!(
            ServiceRequest::decode(&wire).unwrap(),
            ServiceRequest("ssh-userauth".into())
        );
        assert_eq!(ServiceRequest("ssh-userauth".into()).encode(), wire);
    }

    #[test]
    fn kexinit_rfc_layout() {
        let mut wire = vec![20];
        wire.extend_from_slice(&[0xaa; 16]);
        let lists: [&[u8]; 10] = [
            b"curve25519-sha256",
            b"ssh-ed25519",
            b"aes128-ctr",
            b"aes128-ctr",
            b"hmac-sha2-256,hmac-sha1",
            b"hmac-sha2-256",
            b"none",
            b"none",
            b"",
            b"",
        ];
        for l in lists {
            wire.extend_from_slice(&(l.len() as u32).to_be_bytes());
            wire.extend_from_slice(l);
        }
        wire.extend_from_slice(&[0, 0, 0, 0, 0]);
        let k = KexInit::decode(&wire).unwrap();
        assert_eq!(k.cookie, [0xaa; 16]);
        assert_eq!(k.kex, ["curve25519-sha256"]);
        assert_eq!(k.mac_c2s, ["hmac-sha2-256", "hmac-sha1"]);
        assert!(k.lang_s2c.is_empty());
        assert!(!k.first_kex_follows);
        assert_eq!(k.encode(), wire);
    }

    #[test]
    fn userauth_password_rfc_layout() {
        #[rustfmt::skip]
        let wire = [
            50,
            0, 0, 0, 3, b'b', b'o', b'b',
            0, 0, 0, 14, b's', b's', b'h', b'-', b'c', b'o', b'n', b'n', b'e', b'c', b't', b'i', b'o', b'n',
            0, 0, 0, 8, b'p', b'a', b's', b's', b'w', b'o', b'r', b'd',
            0,
            0, 0, 0, 2, b'p', b'w',
        ];
        let m = UserauthRequest::decode(&wire).unwrap();
        assert_eq!(m.user, "bob");
        assert_eq!(m.service, "ssh-connection");
        match &m.method {
            AuthMethod::Password {
                password,
                new_password: None,
            } => assert_eq!(password.as_str(), "pw"),
            other => panic!("{other:?}"),
        }
        assert_eq!(m.encode(), wire);
    }

    #[test]
    fn userauth_failure_rfc_layout() {
        #[rustfmt::skip]
        let wire = [
            51,
            0, 0, 0, 18, b'p', b'u', b'b', b'l', b'i', b'c', b'k', b'e', b'y', b',',
                         b'p', b'a', b's', b's', b'w', b'o', b'r', b'd',
            0,
        ];
        let m = UserauthFailure::decode(&wire).unwrap();
        assert_eq!(m.methods, ["publickey", "password"]);
        assert!(!m.partial_success);
        assert_eq!(m.encode(), wire);
    }

    #[test]
    fn channel_open_session_rfc_layout() {
        #[rustfmt::skip]
        let wire = [
            90,
            0, 0, 0, 7, b's', b'e', b's', b's', b'i', b'o', b'n',
            0, 0, 0, 0,
            0, 0x20, 0, 0,
            0, 0, 0x80, 0,
        ];
        let m = ChannelOpen::decode(&wire).unwrap();
        assert_eq!(
            m,
            ChannelOpen {
                sender: 0,
                initial_window: 0x200000,
                max_packet: 0x8000,
                kind: ChannelKind::Session
            }
        );
        assert_eq!(m.encode(), wire);
    }

    #[test]
    fn channel_request_exec_and_pty_rfc_layout() {
        #[rustfmt::skip]
        let wire = [
            98,
            0, 0, 0, 1,
            0, 0, 0, 4, b'e', b'x', b'e', b'c',
            1,
            0, 0, 0, 2, b'l', b's',
        ];
        let m = ChannelRequest::decode(&wire).unwrap();
        assert_eq!(
            m,
            ChannelRequest {
                recipient: 1,
                want_reply: true,
                request: ChannelReq::Exec(b"ls".to_vec())
            }
        );
        assert_eq!(m.encode(), wire);

        #[rustfmt::skip]
        let wire = [
            98,
            0, 0, 0, 0,
            0, 0, 0, 7, b'p', b't', b'y', b'-', b'r', b'e', b'q',
            0,
            0, 0, 0, 5, b'x', b't', b'e', b'r', b'm',
            0, 0, 0, 80,
            0, 0, 0, 24,
            0, 0, 0, 0,
            0, 0, 0, 0,
            0, 0, 0, 11, 53, 0, 0, 0, 1, 128, 0, 0, 0x96, 0, 0,
        ];
        let m = ChannelRequest::decode(&wire).unwrap();
        let ChannelReq::PtyReq {
            term,
            cols,
            rows,
            modes,
            ..
        } = &m.request
        else {
            panic!("{m:?}")
        };
        assert_eq!((term.as_str(), *cols, *rows), ("xterm", 80, 24));
        assert_eq!(
            parse_modes(modes).unwrap(),
            [(mode::ECHO, 1), (mode::TTY_OP_ISPEED, 38400)]
        );
        assert_eq!(m.encode(), wire);
    }

    #[test]
    fn channel_data_fast_paths() {
        let wire = [94, 0, 0, 0, 7, 0, 0, 0, 3, b'a', b'b', b'c'];
        assert_eq!(decode_channel_data(&wire).unwrap(), (7, &b"abc"[..]));
        assert_eq!(channel_data_header(7, 3), wire[..9]);
        assert_eq!(
            ChannelData {
                recipient: 7,
                data: b"abc".to_vec()
            }
            .encode(),
            wire
        );
        let wire = [95, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 1, b'e'];
        assert_eq!(
            decode_channel_extended_data(&wire).unwrap(),
            (7, 1, &b"e"[..])
        );
        assert_eq!(channel_extended_data_header(7, 1, 1), wire[..13]);
        // Declared length past the end, and trailing bytes.
        assert_eq!(
            decode_channel_data(&[94, 0, 0, 0, 7, 0, 0, 0, 4, b'a']),
            Err(Error::Truncated)
        );
        assert_eq!(
            decode_channel_data(&[94, 0, 0, 0, 7, 0, 0, 0, 0, b'a']),
            Err(Error::TrailingData)
        );
    }

    #[test]
    fn publickey_signed_data_layout() {
        let d = publickey_signed_data(&[0xee, 0xff], "u", "ssh-connection", "ssh-ed25519", &[1]);
        let mut want = vec![0, 0, 0, 2, 0xee, 0xff, 50, 0, 0, 0, 1, b'u', 0, 0, 0, 14];
        want.extend_from_slice(b"ssh-connection");
        want.extend_from_slice(&[0, 0, 0, 9]);
        want.extend_from_slice(b"publickey");
        want.push(1);
        want.extend_from_slice(&[0, 0, 0, 11]);
        want.extend_from_slice(b"ssh-ed25519");
        want.extend_from_slice(&[0, 0, 0, 1, 1]);
        assert_eq!(d, want);
        // The same bytes as the signed request minus its signature, after the session id.
        let req = UserauthRequest {
            user: "u".into(),
            service: "ssh-connection".into(),
            method: AuthMethod::PublicKey {
                algorithm: "ssh-ed25519".into(),
                blob: vec![1],
                signature: Some(vec![]),
            },
        }
        .encode();
        assert_eq!(&req[..req.len() - 4], &d[6..]);
    }

    #[test]
    fn oversized_inputs_are_rejected() {
        // A string declaring 4 GiB.
        assert_eq!(
            Ignore::decode(&[2, 0xff, 0xff, 0xff, 0xff]),
            Err(Error::TooLarge("string"))
        );
        // 65 extensions declared.
        assert!(matches!(
            ExtInfo::decode(&[7, 0, 0, 0, 65]),
            Err(Error::TooLarge(_))
        ));
        // 33 prompts / responses declared.
        let mut b = vec![60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&33u32.to_be_bytes());
        assert!(matches!(
            UserauthInfoRequest::decode(&b),
            Err(Error::TooLarge(_))
        ));
        assert!(matches!(
            UserauthInfoResponse::decode(&[61, 0, 0, 0, 33]),
            Err(Error::TooLarge(_))
        ));
        assert!(matches!(
            UserauthInfoResponse::decode(&[61, 0xff, 0xff, 0xff, 0xff]),
            Err(Error::TooLarge(_))
        ));
        // A name-list of 65 names, and a 65-byte name.
        let mut k = kexinit();
        k.kex = (0..65).map(|i| format!("k{i}")).collect();
        assert!(matches!(
            KexInit::decode(&k.encode()),
            Err(Error::TooLarge(_))
        ));
        k.kex = (0..64).map(|i| format!("k{i}")).collect();
        assert!(KexInit::decode(&k.encode()).is_ok());
        k.kex = vec!["x".repeat(65)];
        assert!(matches!(
            KexInit::decode(&k.encode()),
            Err(Error::TooLarge(_))
        ));
        k.kex = vec!["x".repeat(64)];
        assert!(KexInit::decode(&k.encode()).is_ok());
        // 65 host keys.
        let g = GlobalRequest {
            want_reply: false,
            request: GlobalReq::HostKeys(vec![vec![]; 65]),
        };
        assert!(matches!(
            GlobalRequest::decode(&g.encode()),
            Err(Error::TooLarge(_))
        ));
        // Too many terminal modes.
        let modes: Vec<(u8, u32)> = (0..=MAX_MODES).map(|i| (1 + (i % 150) as u8, 0)).collect();
        assert!(matches!(
            parse_modes(&encode_modes(&modes)),
            Err(Error::TooLarge(_))
        ));
    }

    #[test]
    fn bad_text_is_rejected() {
        // Invalid UTF-8 in a user name.
        let mut b = vec![50, 0, 0, 0, 1, 0xff];
        b.extend_from_slice(&[0, 0, 0, 1, b's', 0, 0, 0, 4]);
        b.extend_from_slice(b"none");
        assert_eq!(
            UserauthRequest::decode(&b),
            Err(Error::Malformed("user name"))
        );
        // Non-ASCII and control bytes in ASCII fields.
        assert!(ServiceRequest::decode(&[5, 0, 0, 0, 2, 0xc3, 0xa9]).is_err());
        assert!(ServiceRequest::decode(&[5, 0, 0, 0, 1, 0x1b]).is_err());
        // Empty name in a name-list.
        assert!(UserauthFailure::decode(&[51, 0, 0, 0, 2, b'a', b',', 0]).is_err());
    }

    #[test]
    fn terminal_modes() {
        assert_eq!(parse_modes(&[]).unwrap(), []);
        assert_eq!(parse_modes(&[0]).unwrap(), []);
        assert_eq!(
            parse_modes(&[1, 0, 0, 0, 3, 0, 99, 99]).unwrap(),
            [(mode::VINTR, 3)]
        );
        // 160+ stops parsing.
        assert_eq!(
            parse_modes(&[1, 0, 0, 0, 3, 160, 1, 2]).unwrap(),
            [(mode::VINTR, 3)]
        );
        assert_eq!(parse_modes(&[1, 0, 0]), Err(Error::Truncated));
        assert_eq!(
            encode_modes(&[(mode::ECHO, 0), (0, 5), (200, 5)]),
            [53, 0, 0, 0, 0, 0]
        );
    }

    fn every_decoder(p: &[u8]) {
        let _ = Disconnect::decode(p);
        let _ = Ignore::decode(p);
        let _ = Unimplemented::decode(p);
        let _ = Debug::decode(p);
        let _ = ServiceRequest::decode(p);
        let _ = ServiceAccept::decode(p);
        let _ = ExtInfo::decode(p);
        let _ = NewKeys::decode(p);
        let _ = Ping::decode(p);
        let _ = Pong::decode(p);
        let _ = KexInit::decode(p);
        let _ = KexEcdhInit::decode(p);
        let _ = KexEcdhReply::decode(p);
        let _ = UserauthRequest::decode(p);
        let _ = UserauthFailure::decode(p);
        let _ = UserauthSuccess::decode(p);
        let _ = UserauthBanner::decode(p);
        let _ = UserauthPkOk::decode(p);
        let _ = UserauthPasswdChangereq::decode(p);
        let _ = UserauthInfoRequest::decode(p);
        let _ = UserauthInfoResponse::decode(p);
        let _ = GlobalRequest::decode(p);
        let _ = RequestSuccess::decode(p).map(|s| s.bound_port());
        let _ = RequestFailure::decode(p);
        let _ = ChannelOpen::decode(p);
        let _ = ChannelOpenConfirmation::decode(p);
        let _ = ChannelOpenFailure::decode(p);
        let _ = ChannelWindowAdjust::decode(p);
        let _ = ChannelData::decode(p);
        let _ = ChannelExtendedData::decode(p);
        let _ = decode_channel_data(p);
        let _ = decode_channel_extended_data(p);
        let _ = ChannelEof::decode(p);
        let _ = ChannelClose::decode(p);
        let _ = ChannelSuccess::decode(p);
        let _ = ChannelFailure::decode(p);
        let _ = ChannelRequest::decode(p);
        let _ = parse_modes(p);
    }

    const NUMBERS: &[u8] = &[
        1, 2, 3, 4, 5, 6, 7, 20, 21, 30, 31, 50, 51, 52, 53, 60, 61, 80, 81, 82, 90, 91, 92, 93,
        94, 95, 96, 97, 98, 99, 100, 192, 193,
    ];

    fn ascii_s() -> impl Strategy<Value = String> {
        "[ -~]{0,12}"
    }

    fn name_s() -> impl Strategy<Value = String> {
        "[a-z0-9@.+-]{1,20}"
    }

    fn blob_s() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..24)
    }

    fn names_s() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(name_s(), 0..5)
    }

    fn kexinit_s() -> impl Strategy<Value = KexInit> {
        (
            any::<[u8; 16]>(),
            proptest::collection::vec(names_s(), 10),
            any::<bool>(),
            any::<u32>(),
        )
            .prop_map(|(cookie, mut l, first_kex_follows, reserved)| {
                let mut next = || l.remove(0);
                KexInit {
                    cookie,
                    kex: next(),
                    host_key: next(),
                    cipher_c2s: next(),
                    cipher_s2c: next(),
                    mac_c2s: next(),
                    mac_s2c: next(),
                    comp_c2s: next(),
                    comp_s2c: next(),
                    lang_c2s: next(),
                    lang_s2c: next(),
                    first_kex_follows,
                    reserved,
                }
            })
    }

    fn auth_method_s() -> impl Strategy<Value = AuthMethod> {
        prop_oneof![
            Just(AuthMethod::None),
            (any::<String>(), proptest::option::of(any::<String>())).prop_map(|(p, n)| {
                AuthMethod::Password {
                    password: Zeroizing::new(p),
                    new_password: n.map(Zeroizing::new),
                }
            }),
            (name_s(), blob_s(), proptest::option::of(blob_s())).prop_map(|(a, b, s)| {
                AuthMethod::PublicKey {
                    algorithm: a,
                    blob: b,
                    signature: s,
                }
            }),
            (ascii_s(), any::<String>()).prop_map(|(l, s)| AuthMethod::KeyboardInteractive {
                language: l,
                submethods: s,
            }),
            ("x-[a-z]{1,8}", blob_s()).prop_map(|(name, data)| AuthMethod::Other { name, data }),
        ]
    }

    fn channel_req_s() -> impl Strategy<Value = ChannelReq> {
        prop_oneof![
            (ascii_s(), any::<[u32; 4]>(), blob_s()).prop_map(|(term, d, modes)| {
                ChannelReq::PtyReq {
                    term,
                    cols: d[0],
                    rows: d[1],
                    width_px: d[2],
                    height_px: d[3],
                    modes,
                }
            }),
            (any::<bool>(), ascii_s(), ascii_s(), any::<u32>()).prop_map(|(s, p, c, n)| {
                ChannelReq::X11Req {
                    single_connection: s,
                    auth_protocol: p,
                    auth_cookie: c,
                    screen: n,
                }
            }),
            (ascii_s(), blob_s()).prop_map(|(name, value)| ChannelReq::Env { name, value }),
            Just(ChannelReq::Shell),
            blob_s().prop_map(ChannelReq::Exec),
            ascii_s().prop_map(ChannelReq::Subsystem),
            any::<[u32; 4]>().prop_map(|d| ChannelReq::WindowChange {
                cols: d[0],
                rows: d[1],
                width_px: d[2],
                height_px: d[3],
            }),
            ascii_s().prop_map(ChannelReq::Signal),
            any::<u32>().prop_map(ChannelReq::ExitStatus),
            (ascii_s(), any::<bool>(), any::<String>(), ascii_s()).prop_map(|(s, c, m, l)| {
                ChannelReq::ExitSignal {
                    signal: s,
                    core_dumped: c,
                    message: m,
                    language: l,
                }
            }),
            Just(ChannelReq::Eow),
            Just(ChannelReq::Keepalive),
            Just(ChannelReq::AuthAgentReq),
            ("x-[a-z]{1,8}", blob_s()).prop_map(|(name, data)| ChannelReq::Other { name, data }),
        ]
    }

    fn channel_kind_s() -> impl Strategy<Value = ChannelKind> {
        prop_oneof![
            Just(ChannelKind::Session),
            (ascii_s(), any::<u32>(), ascii_s(), any::<u32>()).prop_map(|(h, p, o, op)| {
                ChannelKind::DirectTcpip {
                    host: h,
                    port: p,
                    originator: o,
                    originator_port: op,
                }
            }),
            (ascii_s(), any::<u32>(), ascii_s(), any::<u32>()).prop_map(|(h, p, o, op)| {
                ChannelKind::ForwardedTcpip {
                    address: h,
                    port: p,
                    originator: o,
                    originator_port: op,
                }
            }),
            (ascii_s(), any::<u32>()).prop_map(|(o, op)| ChannelKind::X11 {
                originator: o,
                originator_port: op,
            }),
            Just(ChannelKind::AuthAgent),
            (ascii_s(), ascii_s(), any::<u32>()).prop_map(|(path, reserved, reserved_port)| {
                ChannelKind::DirectStreamlocal {
                    path,
                    reserved,
                    reserved_port,
                }
            }),
            (ascii_s(), ascii_s())
                .prop_map(|(path, reserved)| ChannelKind::ForwardedStreamlocal { path, reserved }),
            ("x-[a-z]{1,8}", blob_s()).prop_map(|(name, data)| ChannelKind::Other { name, data }),
        ]
    }

    fn global_req_s() -> impl Strategy<Value = GlobalReq> {
        prop_oneof![
            (ascii_s(), any::<u32>())
                .prop_map(|(address, port)| GlobalReq::TcpipForward { address, port }),
            (ascii_s(), any::<u32>())
                .prop_map(|(address, port)| GlobalReq::CancelTcpipForward { address, port }),
            ascii_s().prop_map(|path| GlobalReq::StreamlocalForward { path }),
            ascii_s().prop_map(|path| GlobalReq::CancelStreamlocalForward { path }),
            Just(GlobalReq::NoMoreSessions),
            Just(GlobalReq::Keepalive),
            proptest::collection::vec(blob_s(), 0..4).prop_map(GlobalReq::HostKeys),
            proptest::collection::vec(blob_s(), 0..4).prop_map(GlobalReq::HostKeysProve),
            ("x-[a-z]{1,8}", blob_s()).prop_map(|(name, data)| GlobalReq::Other { name, data }),
        ]
    }

    proptest! {
        #[test]
        fn decoders_never_panic_on_random_bytes(p in proptest::collection::vec(any::<u8>(), 0..64)) {
            every_decoder(&p);
        }

        #[test]
        fn decoders_never_panic_with_valid_number(
            i in 0..NUMBERS.len(),
            body in proptest::collection::vec(any::<u8>(), 0..96),
        ) {
            let mut p = vec![NUMBERS[i]];
            p.extend_from_slice(&body);
            every_decoder(&p);
        }

        #[test]
        fn decoders_never_panic_on_mutated_messages(
            which in any::<prop::sample::Index>(),
            pos in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let s = samples();
            let (bytes, check, _) = &s[which.index(s.len())];
            let mut b = bytes.clone();
            let at = pos.index(b.len());
            b[at] = byte;
            b.truncate(1 + cut.index(b.len()));
            let _ = check(&b);
            every_decoder(&b);
        }

        #[test]
        fn kexinit_round_trip(k in kexinit_s()) {
            prop_assert_eq!(KexInit::decode(&k.encode())?, k);
        }

        #[test]
        fn userauth_request_round_trip(
            user in any::<String>(),
            service in ascii_s(),
            method in auth_method_s(),
        ) {
            let m = UserauthRequest { user, service, method };
            prop_assert_eq!(UserauthRequest::decode(&m.encode())?, m);
        }

        #[test]
        fn channel_request_round_trip(
            recipient in any::<u32>(),
            want_reply in any::<bool>(),
            request in channel_req_s(),
        ) {
            let m = ChannelRequest { recipient, want_reply, request };
            prop_assert_eq!(ChannelRequest::decode(&m.encode())?, m);
        }

        #[test]
        fn channel_open_round_trip(
            d in any::<[u32; 3]>(),
            kind in channel_kind_s(),
        ) {
            let m = ChannelOpen { sender: d[0], initial_window: d[1], max_packet: d[2], kind };
            prop_assert_eq!(ChannelOpen::decode(&m.encode())?, m);
        }

        #[test]
        fn global_request_round_trip(want_reply in any::<bool>(), request in global_req_s()) {
            let m = GlobalRequest { want_reply, request };
            prop_assert_eq!(GlobalRequest::decode(&m.encode())?, m);
        }

        #[test]
        fn disconnect_and_info_request_round_trip(
            reason in any::<u32>(),
            description in any::<String>(),
            language in ascii_s(),
            prompts in proptest::collection::vec((any::<String>(), any::<bool>()), 0..=MAX_PROMPTS),
        ) {
            let d = Disconnect { reason, description: description.clone(), language: language.clone() };
            prop_assert_eq!(Disconnect::decode(&d.encode())?, d);
            let i = UserauthInfoRequest { name: description, instruction: String::new(), language, prompts };
            prop_assert_eq!(UserauthInfoRequest::decode(&i.encode())?, i);
        }

        #[test]
        fn modes_round_trip(modes in proptest::collection::vec((1u8..160, any::<u32>()), 0..40)) {
            prop_assert_eq!(parse_modes(&encode_modes(&modes))?, modes);
        }

        #[test]
        fn channel_data_round_trip(recipient in any::<u32>(), data in blob_s()) {
            let m = ChannelData { recipient, data };
            let b = m.encode();
            prop_assert_eq!(decode_channel_data(&b)?, (recipient, &m.data[..]));
            prop_assert_eq!(ChannelData::decode(&b)?, m);
        }
    }
}
