//! User authentication (RFC 4252), both roles: where it stands is one
//! value, [`Auth`], so the user, the pending request and whether the
//! connection protocol is open cannot disagree.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{AuthAttempt, Connection, Event, OfferedKey, Role};
use crate::error::{reason, Error, Result};
use crate::keys::PrivateKey;
use crate::msg::{self, num, AuthMethod};
use crate::wire::Reader;

/// Where user authentication stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Auth {
    /// The ssh-userauth service is not requested (server) or not accepted
    /// (client) yet.
    NoService,
    /// Server: requests may come. `user` is the name the first one gave
    /// (it may not change); `verdict_due`: one waits for the application's
    /// verdict.
    Server {
        user: Option<String>,
        verdict_due: bool,
    },
    /// Client: `user` is the name of our latest request; `sent` the method
    /// of the one awaiting the server's answer.
    Client {
        user: Option<String>,
        sent: Option<Method>,
    },
    /// `user` is authenticated: the connection protocol is open. Counts its
    /// messages (numbers 80 and above) sent and received.
    Done {
        user: String,
        sent: u64,
        received: u64,
    },
}

/// A client's request awaiting the server's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Method {
    None,
    Password,
    PublicKeyQuery,
    PublicKey,
    KeyboardInteractive,
}

impl Auth {
    pub(super) fn is_done(&self) -> bool {
        matches!(self, Auth::Done { .. })
    }

    /// The authenticated user, or the one being authenticated.
    pub(super) fn user(&self) -> Option<&str> {
        match self {
            Auth::NoService => None,
            Auth::Server { user, .. } | Auth::Client { user, .. } => user.as_deref(),
            Auth::Done { user, .. } => Some(user),
        }
    }

    /// Messages of the connection protocol sent and received.
    pub(super) fn message_counts(&self) -> (u64, u64) {
        match self {
            Auth::Done { sent, received, .. } => (*sent, *received),
            _ => (0, 0),
        }
    }

    /// Counts message `n`, sent or received, once authenticated.
    pub(super) fn count(&mut self, n: u8, outgoing: bool) {
        if let Auth::Done { sent, received, .. } = self {
            if n >= 80 {
                *if outgoing { sent } else { received } += 1;
            }
        }
    }

    /// Whether an exported state fits the role it claims.
    pub(super) fn is_consistent(&self, role: Role) -> bool {
        match self {
            Auth::NoService | Auth::Done { .. } => true,
            Auth::Server { user, verdict_due } => {
                role == Role::Server && (user.is_some() || !verdict_due)
            }
            Auth::Client { user, sent } => {
                role == Role::Client && (user.is_some() || sent.is_none())
            }
        }
    }
}

impl Connection {
    pub(super) fn on_service_request(&mut self, payload: &[u8]) -> Result<()> {
        let mut r = Reader::new(&payload[1..]);
        let name = r.string()?;
        r.finish()?;
        if name != b"ssh-userauth" || self.auth != Auth::NoService {
            self.disconnect(reason::SERVICE_NOT_AVAILABLE, "service not available");
            return Err(Error::Protocol("unknown service requested"));
        }
        self.auth = Auth::Server {
            user: None,
            verdict_due: false,
        };
        let mut p = vec![num::SERVICE_ACCEPT];
        crate::wire::Put::put_str(&mut p, "ssh-userauth");
        self.send(p)
    }

    /// Client: the server accepted the user-auth service.
    pub(super) fn on_service_accept(&mut self, payload: &[u8]) -> Result<()> {
        let mut r = Reader::new(&payload[1..]);
        let name = r.string()?;
        if name != b"ssh-userauth" || self.auth != Auth::NoService {
            return Err(Error::Protocol("unexpected SERVICE_ACCEPT"));
        }
        self.auth = Auth::Client {
            user: None,
            sent: None,
        };
        self.events.push_back(Event::AuthReady);
        Ok(())
    }

    pub(super) fn server_auth_message(&mut self, n: u8, payload: Vec<u8>) -> Result<()> {
        let (user, verdict_due) = match &mut self.auth {
            Auth::Server { user, verdict_due } => (user, verdict_due),
            // RFC 4252 §5.1: requests after success are ignored.
            Auth::Done { .. } => return Ok(()),
            _ => return Err(Error::Protocol("user-auth message before service request")),
        };
        match n {
            num::USERAUTH_REQUEST => {
                if *verdict_due {
                    return Err(Error::Protocol(
                        "user-auth request while another is pending",
                    ));
                }
                let req = msg::UserauthRequest::decode(&payload)?;
                if req.service != "ssh-connection" {
                    self.disconnect(reason::SERVICE_NOT_AVAILABLE, "service not available");
                    return Err(Error::Protocol("user-auth for an unknown service"));
                }
                if user.as_ref().is_some_and(|u| u != &req.user) {
                    return Err(Error::Protocol("user name changed during authentication"));
                }
                *user = Some(req.user.clone());
                let attempt = match req.method {
                    AuthMethod::None => AuthAttempt::None,
                    AuthMethod::Password {
                        password,
                        new_password,
                    } => {
                        if new_password.is_some() {
                            AuthAttempt::Other("password-change".into())
                        } else {
                            AuthAttempt::Password(Zeroizing::new(password.to_string()))
                        }
                    }
                    AuthMethod::PublicKey {
                        algorithm,
                        blob,
                        signature,
                    } => {
                        let Ok(key) = OfferedKey::from_blob(&algorithm, &blob) else {
                            return self.auth_failure_auto();
                        };
                        match signature {
                            None => AuthAttempt::PublicKeyQuery { algorithm, key },
                            Some(sig) => {
                                let Some(sid) = &self.session_id else {
                                    return Err(Error::Protocol("user-auth before key exchange"));
                                };
                                let data = msg::publickey_signed_data(
                                    sid,
                                    &req.user,
                                    &req.service,
                                    &algorithm,
                                    &blob,
                                );
                                // A security key's flags are the monitor's
                                // decision (authorized_keys options).
                                match key.verify_detailed(&algorithm, &data, &sig) {
                                    Ok(_) => AuthAttempt::PublicKey {
                                        algorithm,
                                        key,
                                        signature: sig,
                                    },
                                    _ => return self.auth_failure_auto(),
                                }
                            }
                        }
                    }
                    AuthMethod::KeyboardInteractive { submethods, .. } => {
                        AuthAttempt::KeyboardInteractive { submethods }
                    }
                    AuthMethod::Other { name, .. } => AuthAttempt::Other(name),
                };
                if let Auth::Server { verdict_due, .. } = &mut self.auth {
                    *verdict_due = true;
                }
                self.events.push_back(Event::AuthRequest {
                    user: req.user,
                    attempt,
                });
                Ok(())
            }
            num::USERAUTH_INFO_RESPONSE => {
                let r = msg::UserauthInfoResponse::decode(&payload)?;
                let responses = r
                    .responses
                    .into_iter()
                    .map(|s| Zeroizing::new(s.to_string()))
                    .collect();
                self.events.push_back(Event::AuthInfoResponse(responses));
                Ok(())
            }
            _ => Err(Error::Protocol("unexpected user-auth message")),
        }
    }

    fn auth_failure_auto(&mut self) -> Result<()> {
        let methods = self.config.auth_methods.clone();
        self.send(
            msg::UserauthFailure {
                methods,
                partial_success: false,
            }
            .encode(),
        )
    }

    /// Server: the user of the request awaiting the application's verdict,
    /// which `settle` ends.
    fn expect_server_auth(&mut self, settle: bool) -> Result<String> {
        self.check_open()?;
        let Auth::Server {
            user: Some(user),
            verdict_due: verdict_due @ true,
        } = &mut self.auth
        else {
            return Err(Error::Misuse("no user-auth request pending"));
        };
        *verdict_due = !settle;
        Ok(user.clone())
    }

    /// Server: accepts the pending user-auth request.
    pub fn auth_accept(&mut self) -> Result<()> {
        let user = self.expect_server_auth(true)?;
        self.auth = Auth::Done {
            user,
            sent: 0,
            received: 0,
        };
        self.send_no_rekey(vec![num::USERAUTH_SUCCESS])?;
        self.activate_resilience()
    }

    /// Server: rejects the pending request, naming the methods that can continue.
    pub fn auth_reject(&mut self, methods: &[&str], partial: bool) -> Result<()> {
        self.expect_server_auth(true)?;
        let methods = methods.iter().map(|s| s.to_string()).collect();
        self.send(
            msg::UserauthFailure {
                methods,
                partial_success: partial,
            }
            .encode(),
        )
    }

    /// Server: the queried public key would be accepted (SSH_MSG_USERAUTH_PK_OK).
    pub fn auth_pk_ok(&mut self, algorithm: &str, key: &OfferedKey) -> Result<()> {
        self.expect_server_auth(true)?;
        self.send(
            msg::UserauthPkOk {
                algorithm: algorithm.to_string(),
                blob: key.to_blob(),
            }
            .encode(),
        )
    }

    /// Server: sends keyboard-interactive prompts for the pending request;
    /// the answers arrive as [`Event::AuthInfoResponse`], after which the
    /// request is pending again for accept/reject/another info request.
    pub fn auth_info_request(
        &mut self,
        name: &str,
        instruction: &str,
        prompts: &[(&str, bool)],
    ) -> Result<()> {
        self.expect_server_auth(false)?;
        let m = msg::UserauthInfoRequest {
            name: name.to_string(),
            instruction: instruction.to_string(),
            language: String::new(),
            prompts: prompts.iter().map(|(p, e)| (p.to_string(), *e)).collect(),
        };
        self.send(m.encode())
    }

    /// Server: a banner shown to the client before authentication ends.
    pub fn auth_banner(&mut self, text: &str) -> Result<()> {
        self.check_open()?;
        if self.auth.is_done() {
            return Ok(());
        }
        self.send(
            msg::UserauthBanner {
                message: text.to_string(),
                language: String::new(),
            }
            .encode(),
        )
    }

    pub(super) fn client_auth_message(&mut self, n: u8, payload: Vec<u8>) -> Result<()> {
        if n == num::USERAUTH_BANNER {
            let b = msg::UserauthBanner::decode(&payload)?;
            if !self.auth.is_done() {
                self.events.push_back(Event::Banner(b.message));
            }
            return Ok(());
        }
        let Auth::Client {
            user: Some(user),
            sent: sent @ Some(_),
        } = &mut self.auth
        else {
            return Err(Error::Protocol(match n {
                60 => "unexpected user-auth message 60",
                _ => "unexpected user-auth message",
            }));
        };
        match (n, *sent) {
            (num::USERAUTH_SUCCESS, _) => {
                if payload.len() != 1 {
                    return Err(Error::TrailingData);
                }
                let user = std::mem::take(user);
                self.auth = Auth::Done {
                    user,
                    sent: 0,
                    received: 0,
                };
                self.events.push_back(Event::AuthSuccess);
                // Delayed compression starts with the next packet, both ways.
                self.writer.zlib.authenticated();
                self.reader.zlib.authenticated();
                self.activate_resilience()
            }
            (num::USERAUTH_FAILURE, _) => {
                let f = msg::UserauthFailure::decode(&payload)?;
                *sent = None;
                self.events.push_back(Event::AuthFailure {
                    methods: f.methods,
                    partial: f.partial_success,
                });
                Ok(())
            }
            (60, Some(Method::PublicKeyQuery)) => {
                msg::UserauthPkOk::decode(&payload)?;
                *sent = None;
                self.events.push_back(Event::AuthPkOk);
                Ok(())
            }
            (60, Some(Method::KeyboardInteractive)) => {
                let r = msg::UserauthInfoRequest::decode(&payload)?;
                self.events.push_back(Event::AuthInfoRequest {
                    name: r.name,
                    instruction: r.instruction,
                    prompts: r.prompts,
                });
                Ok(())
            }
            (60, Some(Method::Password)) => {
                let prompt = msg::UserauthPasswdChangereq::decode(&payload)?.prompt;
                *sent = None;
                self.events.push_back(Event::AuthPasswordChange { prompt });
                Ok(())
            }
            (60, _) => Err(Error::Protocol("unexpected user-auth message 60")),
            _ => Err(Error::Protocol("unexpected user-auth message")),
        }
    }

    fn client_auth_send(&mut self, user: &str, method: AuthMethod, kind: Method) -> Result<()> {
        self.check_open()?;
        let Auth::Client {
            user: current,
            sent,
        } = &mut self.auth
        else {
            return Err(Error::Misuse("user authentication not possible now"));
        };
        if !matches!(sent, None | Some(Method::KeyboardInteractive)) {
            return Err(Error::Misuse("a user-auth request is already pending"));
        }
        *current = Some(user.to_string());
        *sent = Some(kind);
        let m = msg::UserauthRequest {
            user: user.to_string(),
            service: "ssh-connection".to_string(),
            method,
        };
        self.send(m.encode())
    }

    /// Client: the "none" method (learns the methods the server allows).
    pub fn auth_none(&mut self, user: &str) -> Result<()> {
        self.client_auth_send(user, AuthMethod::None, Method::None)
    }

    pub fn auth_password(&mut self, user: &str, password: &str) -> Result<()> {
        let method = AuthMethod::Password {
            password: password.to_string().into(),
            new_password: None,
        };
        self.client_auth_send(user, method, Method::Password)
    }

    /// Client: asks whether the server would accept the key (or
    /// certificate) `blob` for `algorithm` ([`Event::AuthPkOk`] if so).
    pub fn auth_publickey_query(&mut self, user: &str, algorithm: &str, blob: &[u8]) -> Result<()> {
        let method = AuthMethod::PublicKey {
            algorithm: algorithm.to_string(),
            blob: blob.to_vec(),
            signature: None,
        };
        self.client_auth_send(user, method, Method::PublicKeyQuery)
    }

    /// Client: the bytes a public-key signature must cover (RFC 4252 §7),
    /// for the key (or certificate) `blob`.
    pub fn publickey_sign_data(&self, user: &str, algorithm: &str, blob: &[u8]) -> Result<Vec<u8>> {
        let sid = self
            .session_id
            .as_ref()
            .ok_or(Error::Misuse("no session id yet"))?;
        Ok(msg::publickey_signed_data(
            sid,
            user,
            "ssh-connection",
            algorithm,
            blob,
        ))
    }

    /// Client: public-key auth with a signature made over
    /// [`Self::publickey_sign_data`] (by a key file or an agent).
    pub fn auth_publickey_signed(
        &mut self,
        user: &str,
        algorithm: &str,
        blob: &[u8],
        signature: Vec<u8>,
    ) -> Result<()> {
        let method = AuthMethod::PublicKey {
            algorithm: algorithm.to_string(),
            blob: blob.to_vec(),
            signature: Some(signature),
        };
        self.client_auth_send(user, method, Method::PublicKey)
    }

    /// Client: public-key auth with a private key held in memory.
    pub fn auth_publickey(&mut self, user: &str, algorithm: &str, key: &PrivateKey) -> Result<()> {
        let blob = key.public_key().to_blob();
        let data = self.publickey_sign_data(user, algorithm, &blob)?;
        let sig = key.sign(algorithm, &data)?;
        self.auth_publickey_signed(user, algorithm, &blob, sig)
    }

    pub fn auth_keyboard_interactive(&mut self, user: &str) -> Result<()> {
        let method = AuthMethod::KeyboardInteractive {
            language: String::new(),
            submethods: String::new(),
        };
        self.client_auth_send(user, method, Method::KeyboardInteractive)
    }

    /// Client: answers to [`Event::AuthInfoRequest`], one per prompt.
    pub fn auth_info_response(&mut self, responses: &[&str]) -> Result<()> {
        self.check_open()?;
        let Auth::Client {
            sent: Some(Method::KeyboardInteractive),
            ..
        } = self.auth
        else {
            return Err(Error::Misuse("no keyboard-interactive exchange running"));
        };
        let m = msg::UserauthInfoResponse {
            responses: responses.iter().map(|r| r.to_string().into()).collect(),
        };
        self.send(m.encode())
    }
}
