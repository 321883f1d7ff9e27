//! OpenSSL contexts with the restls extension (docs/restls.md §2): the
//! client offers it in ClientHello, the server answers in
//! EncryptedExtensions. A peer that does not know it ignores it.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    ExtensionContext, Ssl, SslAlert, SslContext, SslMethod, SslMode, SslRef, SslSession,
    SslSessionCacheMode, SslVerifyMode, SslVersion,
};
use openssl::x509::X509;
use zeroize::Zeroizing;

use crate::secret::{Answer, Hello, EXT_TYPE};
use crate::server::{Entry, Table};

/// The longest lifetime of a session ticket: the TLS 1.3 maximum (RFC 8446
/// §4.6.1), restls's default. A reconnect resumes with the newest ticket
/// the client received; the server sends fresh ones on live TLS 1.3
/// connections (see [`new_ticket`]), so only a TLS 1.2 connection is
/// limited to this long after its last (re)connect.
pub const MAX_TICKET_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

extern "C" {
    // OpenSSL ≥ 1.1 (a function, not a macro); the openssl crate lacks it.
    fn SSL_CTX_set_timeout(ctx: *mut openssl_sys::SSL_CTX, t: libc::c_long) -> libc::c_long;
    // OpenSSL ≥ 3.0.
    fn SSL_new_session_ticket(s: *mut openssl_sys::SSL) -> libc::c_int;
}

/// Server, TLS 1.3: queues a fresh session ticket on a live connection and
/// has OpenSSL write it (into the connection's pending output), so that a
/// connection attached for longer than a ticket's lifetime can still
/// resume. False if OpenSSL refused.
#[allow(unsafe_code)] // SSL_new_session_ticket, which the openssl crate lacks
pub fn new_ticket<S: std::io::Read + std::io::Write>(s: &mut openssl::ssl::SslStream<S>) -> bool {
    // SAFETY: a valid SSL of a completed TLS 1.3 server handshake; the call
    // only marks a ticket to send.
    if unsafe { SSL_new_session_ticket(s.ssl().as_ptr()) } != 1 {
        return false;
    }
    // The ticket goes out with the next handshake or write call.
    s.do_handshake().is_ok()
}

/// Where a resumption ticket for the next reconnect is kept (client).
pub type TicketSlot = Arc<Mutex<Option<SslSession>>>;

struct Indices {
    /// Client: the extension body to send. Server: the body received.
    hello: Index<Ssl, Vec<u8>>,
    answer: Index<Ssl, Answer>,
    ticket: Index<Ssl, TicketSlot>,
    entry: Index<Ssl, Arc<Entry>>,
}

fn indices() -> &'static Indices {
    static I: OnceLock<Indices> = OnceLock::new();
    I.get_or_init(|| Indices {
        hello: Ssl::new_ex_index().expect("ex_data index"),
        answer: Ssl::new_ex_index().expect("ex_data index"),
        ticket: Ssl::new_ex_index().expect("ex_data index"),
        entry: Ssl::new_ex_index().expect("ex_data index"),
    })
}

fn ext_context() -> ExtensionContext {
    ExtensionContext::TLS_ONLY
        | ExtensionContext::CLIENT_HELLO
        | ExtensionContext::TLS1_2_SERVER_HELLO
        | ExtensionContext::TLS1_3_ENCRYPTED_EXTENSIONS
}

/// Where the server's answer goes: EncryptedExtensions (TLS 1.3) or
/// ServerHello (TLS 1.2).
fn answer_context(ctx: ExtensionContext) -> bool {
    ctx.intersects(
        ExtensionContext::TLS1_3_ENCRYPTED_EXTENSIONS | ExtensionContext::TLS1_2_SERVER_HELLO,
    )
}

/// The server's answer to our extension (client), or the answer it gave
/// (server); None: not negotiated.
pub fn answer(ssl: &SslRef) -> Option<Answer> {
    ssl.ex_data(indices().answer).copied()
}

/// Whether a completed handshake may carry the extension: TLS 1.3, or
/// TLS 1.2 with the extended master secret (RFC 7627; docs/restls.md §2).
/// Without it a TLS 1.2 master secret, and so every exporter value, can be
/// made equal on two connections by a man in the middle (triple handshake).
#[allow(unsafe_code)] // SSL_get_extms_support, a macro the openssl crate lacks
pub fn secure_version(ssl: &SslRef) -> bool {
    const SSL_CTRL_GET_EXTMS_SUPPORT: libc::c_int = 122;
    if ssl.version2() != Some(SslVersion::TLS1_2) {
        return ssl.version2() == Some(SslVersion::TLS1_3);
    }
    // SAFETY: a valid SSL whose handshake completed; the call reads a flag
    // of its session.
    let ems = unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            SSL_CTRL_GET_EXTMS_SUPPORT,
            0,
            std::ptr::null_mut(),
        )
    };
    ems == 1
}

/// Server: the connection a reconnect's ClientHello named.
pub fn entry(ssl: &SslRef) -> Option<Arc<Entry>> {
    ssl.ex_data(indices().entry).cloned()
}

/// A server's certificate chain and private key. Each connection gets the
/// identity current when it arrives ([`Identity::apply`]), so that a reload
/// changes it for new connections while the context (and with it the
/// session ticket keys that reconnects resume with) stays the same.
pub struct Identity {
    cert: X509,
    chain: Vec<X509>,
    key: PKey<Private>,
}

impl Identity {
    /// `cert`: PEM certificates, the server's first; `key`: its PEM key.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, String> {
        let read = |p: &Path| {
            std::fs::read(p)
                .map(Zeroizing::new)
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        let certs =
            X509::stack_from_pem(&read(cert)?).map_err(|e| format!("{}: {e}", cert.display()))?;
        let mut certs = certs.into_iter();
        let first = certs
            .next()
            .ok_or_else(|| format!("{}: no certificate", cert.display()))?;
        let pkey = PKey::private_key_from_pem(&read(key)?)
            .map_err(|e| format!("{}: {e}", key.display()))?;
        let matches = first
            .public_key()
            .map(|p| p.public_eq(&pkey))
            .unwrap_or(false);
        if !matches {
            return Err(format!(
                "{} is not the key of {}",
                key.display(),
                cert.display()
            ));
        }
        Ok(Identity {
            cert: first,
            chain: certs.collect(),
            key: pkey,
        })
    }

    /// Makes `ssl` present this identity.
    pub fn apply(&self, ssl: &mut SslRef) -> Result<(), ErrorStack> {
        ssl.set_certificate(&self.cert)?;
        ssl.set_private_key(&self.key)?;
        for c in &self.chain {
            ssl.add_chain_cert(c.clone())?;
        }
        Ok(())
    }
}

/// The server's context, without a certificate: each connection gets its
/// [`Identity`].
#[allow(unsafe_code)] // SSL_CTX_set_timeout, which the openssl crate lacks
pub fn server_context(
    table: Arc<Table>,
    ticket_lifetime: Duration,
) -> Result<SslContext, ErrorStack> {
    let mut b = SslContext::builder(SslMethod::tls_server())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    // An idle connection keeps no record buffers (the server holds many).
    b.set_mode(SslMode::RELEASE_BUFFERS);
    let lifetime = ticket_lifetime.clamp(Duration::from_secs(1), MAX_TICKET_LIFETIME);
    // SAFETY: a valid SSL_CTX of ours; the call only stores the value.
    unsafe { SSL_CTX_set_timeout(b.as_ptr(), lifetime.as_secs() as libc::c_long) };
    let i = indices();
    b.add_custom_ext(
        EXT_TYPE,
        ext_context(),
        move |ssl: &mut SslRef, ctx, _| {
            if !answer_context(ctx) {
                return Ok(None);
            }
            Ok(answer(ssl).map(|a| vec![a as u8]))
        },
        move |ssl: &mut SslRef, ctx, data: &[u8], _| {
            if !ctx.contains(ExtensionContext::CLIENT_HELLO) {
                return Ok(());
            }
            if let Some(first) = ssl.ex_data(i.hello) {
                // The second ClientHello after a HelloRetryRequest must
                // repeat the first (RFC 8446 §4.1.2); it is not a new attempt.
                return if first.as_slice() == data {
                    Ok(())
                } else {
                    Err(SslAlert::ILLEGAL_PARAMETER)
                };
            }
            let hello = Hello::decode(data).ok_or(SslAlert::DECODE_ERROR)?;
            ssl.set_ex_data(i.hello, data.to_vec());
            let a = match hello {
                Hello::New => Answer::New,
                Hello::Reconnect { token, nonce, mac } => match table.check(&token, &nonce, &mac) {
                    Ok(e) => {
                        ssl.set_ex_data(i.entry, e);
                        Answer::Accepted
                    }
                    Err(a) => a,
                },
            };
            ssl.set_ex_data(i.answer, a);
            Ok(())
        },
    )?;
    Ok(b.build())
}

/// `max`: the highest TLS version to offer (None: OpenSSL's, TLS 1.3).
pub fn client_context(
    ca: Option<&Path>,
    max: Option<SslVersion>,
) -> Result<SslContext, ErrorStack> {
    let mut b = SslContext::builder(SslMethod::tls_client())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_max_proto_version(max)?;
    b.set_verify(SslVerifyMode::PEER);
    match ca {
        Some(f) => b.set_ca_file(f)?,
        None => b.set_default_verify_paths()?,
    }
    let i = indices();
    b.set_session_cache_mode(SslSessionCacheMode::CLIENT);
    b.set_new_session_callback(move |ssl, session| {
        if let Some(slot) = ssl.ex_data(i.ticket) {
            if let Ok(mut t) = slot.lock() {
                *t = Some(session);
            }
        }
    });
    b.add_custom_ext(
        EXT_TYPE,
        ext_context(),
        move |ssl: &mut SslRef, ctx, _| {
            if !ctx.contains(ExtensionContext::CLIENT_HELLO) {
                return Ok(None);
            }
            Ok(ssl.ex_data(i.hello).cloned())
        },
        move |ssl: &mut SslRef, ctx, data: &[u8], _| {
            if !answer_context(ctx) {
                return Ok(());
            }
            let a = Answer::decode(data).ok_or(SslAlert::DECODE_ERROR)?;
            ssl.set_ex_data(i.answer, a);
            Ok(())
        },
    )?;
    Ok(b.build())
}

/// A client `Ssl` offering `hello`, verifying the server as `servername`,
/// keeping new tickets in `ticket`.
#[allow(unsafe_code)] // SslRef::set_session, unsafe in the openssl crate
pub fn client_ssl(
    ctx: &SslContext,
    servername: &str,
    hello: &Hello,
    ticket: &TicketSlot,
) -> Result<Ssl, ErrorStack> {
    let mut ssl = Ssl::new(ctx)?;
    match servername.parse::<IpAddr>() {
        Ok(ip) => ssl.param_mut().set_ip(ip)?,
        Err(_) => {
            ssl.set_hostname(servername)?;
            ssl.param_mut().set_host(servername)?;
        }
    }
    ssl.set_ex_data(indices().hello, hello.encode());
    ssl.set_ex_data(indices().ticket, ticket.clone());
    if let Hello::Reconnect { .. } = hello {
        let t = ticket.lock().ok().and_then(|t| t.clone());
        if let Some(t) = t {
            // SAFETY: tickets come only from connections made with `ctx`
            // (the caller keeps one context per resilient connection's life).
            unsafe { ssl.set_session(&t)? };
        }
    }
    ssl.set_connect_state();
    Ok(ssl)
}
