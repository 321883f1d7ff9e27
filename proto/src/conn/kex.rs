//! The connection's key exchange (RFC 4253 §7–8, RFC 5656 §4): a state
//! machine whose phases hold exactly what each phase has. The method (what
//! the init and reply carry, how K is made, hashed and encoded) comes from
//! the registry in [`crate::kex`]; nothing here names a curve or a hash.
//!
//! Both ends of the exchange can wait for the application: a client for
//! its verdict on the server's host key ([`Event::HostKey`], answered by
//! [`Connection::accept_host_key`]), a server for the signature of the
//! exchange hash ([`Event::SignHostKey`], answered by
//! [`Connection::host_key_signed`]). Meanwhile the engine reads nothing
//! more from the peer.

use std::time::Instant;

use super::{Connection, Event, ReconnectRequest, Role};
use crate::cert::{self, Certificate};
use crate::cipher::KeyMaterial;
use crate::error::{Error, Result};
use crate::kex::gex::{self, Group, Request};
use crate::kex::{self, ClientKex, Method, Negotiated, SharedSecret, Transcript};
use crate::keys::{PrivateKey, PublicKey};
use crate::msg::{self, num};
use crate::resilience;

/// A key exchange in progress.
pub(super) struct KexRun {
    /// The connection's first exchange (it sets the session id).
    first: bool,
    /// Our KEXINIT payload.
    local_init: Vec<u8>,
    phase: Phase,
}

/// What the two KEXINITs settled.
struct Agreed {
    peer_init: Vec<u8>,
    negotiated: Negotiated,
    method: &'static Method,
    /// The first exchange, and both sides offered resilience.
    resilience: bool,
}

enum Phase {
    /// Our KEXINIT is sent; the peer's has not come.
    SentInit,
    /// Server: waiting for the client's init. `ignore_next`: the client's
    /// guessed first packet (first_kex_packet_follows) guessed wrong. A
    /// group exchange first waits for the request (`group` None), then
    /// for the init in the group it sent.
    AwaitInit {
        agreed: Agreed,
        ignore_next: bool,
        group: Option<Box<GexGroup>>,
    },
    /// Client, group exchange: the request is sent; waiting for the group.
    AwaitGroup {
        agreed: Agreed,
        ignore_next: bool,
        request: Request,
    },
    /// Client: our init is sent; waiting for the server's reply. `group`:
    /// a group exchange's part of the exchange hash.
    AwaitReply {
        agreed: Agreed,
        ignore_next: bool,
        client: Box<dyn ClientKex>,
        group: Option<Vec<u8>>,
    },
    /// Server: waiting for the application's signature of H.
    AwaitSignature(Box<Unsigned>),
    /// Client: keys computed; waiting for the verdict on the host key.
    AwaitVerdict(Box<Unverified>),
    /// Our NEWKEYS is sent; the peer's switches reception to `recv`.
    NewKeysSent { agreed: Agreed, recv: KeyMaterial },
    /// Server, first exchange: the client asks to resume a session
    /// (docs/PROTOCOL.md §5); `received` once its request was handed on.
    Reconnect {
        peer_init: Vec<u8>,
        negotiated: Negotiated,
        received: bool,
    },
}

/// Server, group exchange: what was asked and what was sent.
struct GexGroup {
    request: Request,
    group: Group,
}

/// Server: the reply, computed and not yet signed.
struct Unsigned {
    agreed: Agreed,
    /// SSH_MSG_KEX_ECDH_REPLY, or SSH_MSG_KEX_DH_GEX_REPLY.
    reply_num: u8,
    /// The key that signs, and the blob sent as the host key (a
    /// certificate's, for a certificate algorithm).
    key: PublicKey,
    k_s: Vec<u8>,
    /// The signature algorithm (a certificate algorithm's plain one).
    sign_alg: String,
    reply: Vec<u8>,
    k: SharedSecret,
    h: Vec<u8>,
}

/// Client: the exchange verified, the host key not yet accepted.
struct Unverified {
    agreed: Agreed,
    send: KeyMaterial,
    recv: KeyMaterial,
    host_key: Vec<u8>,
    /// The host key as a certificate, when it is one.
    host_cert: Option<Certificate>,
}

/// Server: an exchange hash to sign with a host key ([`Event::SignHostKey`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignRequest {
    pub key: PublicKey,
    /// The signature algorithm, one of the key's.
    pub algorithm: String,
    pub data: Vec<u8>,
}

impl SignRequest {
    /// The signature by the matching key of `keys`, for a server that
    /// holds its host keys itself (tests, benchmarks); None without one.
    pub fn sign_with(&self, keys: &[PrivateKey]) -> Option<Vec<u8>> {
        let k = keys.iter().find(|k| k.public_key() == self.key)?;
        k.sign(&self.algorithm, &self.data).ok()
    }
}

impl KexRun {
    /// The engine waits for the application (a verdict or a signature) or,
    /// on a reconnect, for the owning session: it reads nothing meanwhile.
    pub(super) fn pauses_input(&self) -> bool {
        matches!(
            self.phase,
            Phase::AwaitVerdict(_)
                | Phase::AwaitSignature(_)
                | Phase::Reconnect { received: true, .. }
        )
    }

    /// Server: the client chose the reconnect exchange.
    pub(super) fn is_reconnect(&self) -> bool {
        matches!(self.phase, Phase::Reconnect { .. })
    }

    /// Server: the reconnect exchange, its request not handed on yet.
    pub(super) fn awaits_reconnect_request(&self) -> bool {
        matches!(
            self.phase,
            Phase::Reconnect {
                received: false,
                ..
            }
        )
    }
}

impl Connection {
    pub(super) fn kexinit(&self, first: bool) -> Result<msg::KexInit> {
        let mut kex_names = self.config.kex.clone();
        if first {
            match self.role {
                Role::Client => {
                    kex_names.push(kex::EXT_INFO_C.into());
                    kex_names.push(kex::STRICT_C.into());
                }
                Role::Server => kex_names.push(kex::STRICT_S.into()),
            }
            if self.config.resilience {
                kex_names.push(resilience::NAME.into());
            }
        }
        let host_key = match self.role {
            Role::Server => {
                let mut algs: Vec<String> = Vec::new();
                for k in &self.host_keys {
                    algs.extend(k.signature_algorithms().iter().map(|a| a.to_string()));
                }
                for c in &self.host_certs {
                    algs.extend(c.signature_algorithms().into_iter().map(String::from));
                }
                algs
            }
            Role::Client => self.config.host_key_algs.clone(),
        };
        let mut cookie = [0u8; 16];
        openssl::rand::rand_bytes(&mut cookie)?;
        Ok(msg::KexInit {
            cookie,
            kex: kex_names,
            host_key,
            cipher_c2s: self.config.ciphers.clone(),
            cipher_s2c: self.config.ciphers.clone(),
            mac_c2s: self.config.macs.clone(),
            mac_s2c: self.config.macs.clone(),
            comp_c2s: self.config.compression.clone(),
            comp_s2c: self.config.compression.clone(),
            lang_c2s: Vec::new(),
            lang_s2c: Vec::new(),
            first_kex_follows: false,
            reserved: 0,
        })
    }

    /// Sends our KEXINIT: a key exchange begins.
    pub(super) fn start_kex(&mut self) -> Result<()> {
        let run = self.send_kexinit()?;
        self.kex = Some(run);
        Ok(())
    }

    fn send_kexinit(&mut self) -> Result<KexRun> {
        let first = self.session_id.is_none();
        let local_init = self.kexinit(first)?.encode();
        self.write_now(&local_init)?;
        Ok(KexRun {
            first,
            local_init,
            phase: Phase::SentInit,
        })
    }

    pub(super) fn on_kexinit(&mut self, payload: Vec<u8>) -> Result<()> {
        let KexRun {
            first,
            local_init,
            phase,
        } = match self.kex.take() {
            Some(run) => run,
            None => self.send_kexinit()?,
        };
        if !matches!(phase, Phase::SentInit) {
            return Err(Error::Protocol("second KEXINIT during key exchange"));
        }
        let peer = msg::KexInit::decode(&payload)?;
        let local = msg::KexInit::decode(&local_init)?;
        let (c, s) = match self.role {
            Role::Client => (&local, &peer),
            Role::Server => (&peer, &local),
        };
        let negotiated = kex::negotiate(c, s)?;
        let mut resilience = false;
        if first {
            let strict = match self.role {
                Role::Client => peer.kex.iter().any(|k| k == kex::STRICT_S),
                Role::Server => peer.kex.iter().any(|k| k == kex::STRICT_C),
            };
            self.strict_kex = strict;
            if strict && self.reader.seq != 1 {
                return Err(Error::Protocol(
                    "strict KEX: KEXINIT was not the first message",
                ));
            }
            if self.role == Role::Server {
                self.peer_ext_info = peer.kex.iter().any(|k| k == kex::EXT_INFO_C);
            }
            resilience = self.config.resilience && peer.kex.iter().any(|k| k == resilience::NAME);
        }
        let phase = if negotiated.kex == resilience::NAME {
            // A reconnect: only a server, only as the first exchange.
            if self.role != Role::Server || !first || !self.config.resilience {
                return Err(Error::Protocol("unexpected reconnect key exchange"));
            }
            Phase::Reconnect {
                peer_init: payload,
                negotiated,
                received: false,
            }
        } else {
            let method = kex::method(&negotiated.kex)?;
            let ignore_next = peer.first_kex_follows && !kex::guess_was_right(c, s);
            let agreed = Agreed {
                peer_init: payload,
                negotiated,
                method,
                resilience,
            };
            match self.role {
                Role::Client if method.group_exchange => {
                    let request = Request::for_need(dh_need_bits(&agreed.negotiated));
                    let m = msg::KexDhGexRequest {
                        min: request.min,
                        n: request.n,
                        max: request.max,
                    };
                    self.write_now(&m.encode())?;
                    Phase::AwaitGroup {
                        agreed,
                        ignore_next,
                        request,
                    }
                }
                Role::Client => {
                    let client = (method.client)()?;
                    let init = msg::KexEcdhInit {
                        q_c: client.init().to_vec(),
                    };
                    self.write_now(&init.encode())?;
                    Phase::AwaitReply {
                        agreed,
                        ignore_next,
                        client,
                        group: None,
                    }
                }
                Role::Server => Phase::AwaitInit {
                    agreed,
                    ignore_next,
                    group: None,
                },
            }
        };
        self.kex = Some(KexRun {
            first,
            local_init,
            phase,
        });
        Ok(())
    }

    /// The method's messages (30..=49).
    pub(super) fn on_kex_message(&mut self, n: u8, payload: Vec<u8>) -> Result<()> {
        let Some(KexRun {
            first,
            local_init,
            phase,
        }) = self.kex.take()
        else {
            return Err(Error::Protocol("key exchange message outside key exchange"));
        };
        let phase = match (self.role, n, phase) {
            (_, _, Phase::SentInit) => {
                return Err(Error::Protocol("key exchange message before KEXINIT"))
            }
            // The peer's wrongly guessed first packet: dropped.
            (
                _,
                _,
                Phase::AwaitInit {
                    agreed,
                    ignore_next: true,
                    group,
                },
            ) => Phase::AwaitInit {
                agreed,
                ignore_next: false,
                group,
            },
            (
                _,
                _,
                Phase::AwaitGroup {
                    agreed,
                    ignore_next: true,
                    request,
                },
            ) => Phase::AwaitGroup {
                agreed,
                ignore_next: false,
                request,
            },
            (
                _,
                _,
                Phase::AwaitReply {
                    agreed,
                    client,
                    ignore_next: true,
                    group,
                },
            ) => Phase::AwaitReply {
                agreed,
                client,
                ignore_next: false,
                group,
            },
            (
                Role::Server,
                num::KEX_DH_GEX_REQUEST,
                Phase::AwaitInit {
                    agreed,
                    group: None,
                    ..
                },
            ) if agreed.method.group_exchange => self.server_gex_group(agreed, &payload)?,
            (
                Role::Server,
                num::KEX_ECDH_INIT,
                Phase::AwaitInit {
                    agreed,
                    group: None,
                    ..
                },
            ) if !agreed.method.group_exchange => {
                self.server_kex(&local_init, agreed, &payload, None)?
            }
            (
                Role::Server,
                num::KEX_DH_GEX_INIT,
                Phase::AwaitInit {
                    agreed,
                    group: Some(g),
                    ..
                },
            ) => self.server_kex(&local_init, agreed, &payload, Some(*g))?,
            (
                Role::Client,
                num::KEX_DH_GEX_GROUP,
                Phase::AwaitGroup {
                    agreed, request, ..
                },
            ) => self.client_gex_init(agreed, request, &payload)?,
            (
                Role::Client,
                num::KEX_ECDH_REPLY,
                Phase::AwaitReply {
                    agreed,
                    client,
                    group: None,
                    ..
                },
            ) => self.client_kex(first, &local_init, agreed, client, &payload, None)?,
            (
                Role::Client,
                num::KEX_DH_GEX_REPLY,
                Phase::AwaitReply {
                    agreed,
                    client,
                    group: Some(t),
                    ..
                },
            ) => self.client_kex(first, &local_init, agreed, client, &payload, Some(t))?,
            _ => return Err(Error::Protocol("unexpected key exchange message")),
        };
        self.kex = Some(KexRun {
            first,
            local_init,
            phase,
        });
        Ok(())
    }

    /// Server, group exchange: the client's request; the group goes out.
    fn server_gex_group(&mut self, agreed: Agreed, payload: &[u8]) -> Result<Phase> {
        let r = msg::KexDhGexRequest::decode(payload)?;
        let request = Request {
            min: r.min,
            n: r.n,
            max: r.max,
        };
        let group = Group::choose(&request)?;
        self.write_now(
            &msg::KexDhGexGroup {
                p: kex::dh::to_mpint_contents(group.p()),
                g: kex::dh::to_mpint_contents(group.g()),
            }
            .encode(),
        )?;
        Ok(Phase::AwaitInit {
            agreed,
            ignore_next: false,
            group: Some(Box::new(GexGroup { request, group })),
        })
    }

    /// Client, group exchange: the server's group; our init goes out.
    fn client_gex_init(
        &mut self,
        agreed: Agreed,
        request: Request,
        payload: &[u8],
    ) -> Result<Phase> {
        let m = msg::KexDhGexGroup::decode(payload)?;
        let group = Group::received(&request, &m.p, &m.g)?;
        let client: Box<dyn ClientKex> = Box::new(gex::Client(group.exponent()?));
        let init = msg::KexEcdhInit {
            q_c: client.init().to_vec(),
        };
        self.write_now(&init.encode_as(num::KEX_DH_GEX_INIT))?;
        Ok(Phase::AwaitReply {
            agreed,
            ignore_next: false,
            client,
            group: Some(group.transcript(&request)),
        })
    }

    /// Server: the client's init. The reply and H are computed; the
    /// exchange waits for the application to sign H.
    fn server_kex(
        &mut self,
        local_init: &[u8],
        agreed: Agreed,
        payload: &[u8],
        gex: Option<GexGroup>,
    ) -> Result<Phase> {
        let (init_num, reply_num) = match gex {
            Some(_) => (num::KEX_DH_GEX_INIT, num::KEX_DH_GEX_REPLY),
            None => (num::KEX_ECDH_INIT, num::KEX_ECDH_REPLY),
        };
        let init = msg::KexEcdhInit::decode_as(payload, init_num)?;
        let alg = agreed.negotiated.host_key.clone();
        let alg = alg.as_str();
        let (key, k_s, sign_alg) = match cert::plain_algorithm(alg.as_bytes()) {
            Some(plain) => {
                let c = self
                    .host_certs
                    .iter()
                    .find(|c| c.signature_algorithms().contains(&alg))
                    .ok_or(Error::NoCommonAlgorithm("host key"))?;
                (c.key.clone(), c.blob().to_vec(), plain)
            }
            None => {
                let k = self
                    .host_keys
                    .iter()
                    .find(|k| k.signature_algorithms().contains(&alg))
                    .ok_or(Error::NoCommonAlgorithm("host key"))?;
                (k.clone(), k.to_blob(), alg)
            }
        };
        let (reply, k, group) = match &gex {
            Some(g) => {
                let (reply, k) = agreed.method.server_reply_in(&g.group, &init.q_c)?;
                (reply, k, g.group.transcript(&g.request))
            }
            None => {
                let (reply, k) = agreed.method.server_reply(&init.q_c)?;
                (reply, k, Vec::new())
            }
        };
        let peer_version = self.peer_version.clone().unwrap_or_default();
        let h = kex::exchange_hash(
            &Transcript {
                v_c: &peer_version,
                v_s: &self.local_version,
                i_c: &agreed.peer_init,
                i_s: local_init,
                k_s: &k_s,
                group: &group,
                init: &init.q_c,
                reply: &reply,
            },
            &k,
        )?;
        self.events.push_back(Event::SignHostKey(SignRequest {
            key: key.clone(),
            algorithm: sign_alg.to_string(),
            data: h.clone(),
        }));
        Ok(Phase::AwaitSignature(Box::new(Unsigned {
            agreed,
            reply_num,
            key,
            k_s,
            sign_alg: sign_alg.to_string(),
            reply,
            k,
            h,
        })))
    }

    /// Server: the application's answer to [`Event::SignHostKey`]: the
    /// signature blob, or None when it could not sign (the connection then
    /// ends with DISCONNECT, key exchange failed). Otherwise the reply and
    /// NEWKEYS go out and the exchange goes on. Without a pending request:
    /// [`Error::Misuse`], and nothing changes.
    pub fn host_key_signed(&mut self, signature: Option<Vec<u8>>, now: Instant) -> Result<()> {
        self.check_open()?;
        let r = self.signed(signature, now);
        self.fail_on_err(r)
    }

    fn signed(&mut self, signature: Option<Vec<u8>>, now: Instant) -> Result<()> {
        let (first, local_init, u) = match self.kex.take() {
            Some(KexRun {
                first,
                local_init,
                phase: Phase::AwaitSignature(u),
            }) => (first, local_init, u),
            other => {
                self.kex = other;
                return Err(Error::Misuse("no exchange hash awaits a signature"));
            }
        };
        self.now = now;
        let signature = signature.ok_or(Error::SigningFailed)?;
        // The answer must be over this exchange's hash: a late answer to a
        // request of an exchange a reconnect abandoned is not, and must not
        // reach the client (it would fail the verification and disconnect).
        if !matches!(u.key.verify(&u.h, &signature), Ok(a) if a == u.sign_alg) {
            self.kex = Some(KexRun {
                first,
                local_init,
                phase: Phase::AwaitSignature(u),
            });
            return Err(Error::Misuse("a signature that is not over this exchange"));
        }
        self.send_reply(first, local_init, *u, signature)?;
        self.process(now)
    }

    fn send_reply(
        &mut self,
        first: bool,
        local_init: Vec<u8>,
        u: Unsigned,
        signature: Vec<u8>,
    ) -> Result<()> {
        let Unsigned {
            agreed,
            reply_num,
            k_s,
            reply,
            k,
            h,
            ..
        } = u;
        if first && agreed.resilience {
            self.resilience = Some(resilience::State::new(
                resilience::resume_secret(k.raw(), &h)?,
                self.config.resilience_buffer,
                self.config.detach_timeout,
            ));
        }
        let sid = self.session_id.get_or_insert_with(|| h.clone()).clone();
        let (c2s, s2c) = kex::derive_keys(&k, &h, &sid, &agreed.negotiated)?;
        self.write_now(
            &msg::KexEcdhReply {
                host_key: k_s,
                q_s: reply,
                signature,
            }
            .encode_as(reply_num),
        )?;
        let n = agreed.negotiated.clone();
        self.kex = Some(KexRun {
            first,
            local_init,
            phase: Phase::NewKeysSent { agreed, recv: c2s },
        });
        self.send_newkeys(first, &s2c, &n)
    }

    /// Client: the server's reply, verified. A rekey with the known host key
    /// goes on at once; otherwise the application judges the host key.
    fn client_kex(
        &mut self,
        first: bool,
        local_init: &[u8],
        agreed: Agreed,
        client: Box<dyn ClientKex>,
        payload: &[u8],
        group: Option<Vec<u8>>,
    ) -> Result<Phase> {
        let reply_num = match group {
            Some(_) => num::KEX_DH_GEX_REPLY,
            None => num::KEX_ECDH_REPLY,
        };
        let reply = msg::KexEcdhReply::decode_as(payload, reply_num)?;
        let n = &agreed.negotiated;
        // A certificate algorithm: the host key is a certificate (its CA
        // signature verified here; whether that CA is trusted is the
        // application's verdict), and its key signs the exchange.
        let host_cert = match cert::plain_algorithm(n.host_key.as_bytes()) {
            Some(_) => Some(Certificate::from_blob(&reply.host_key)?),
            None => None,
        };
        let key = match &host_cert {
            Some(c) => c.key.clone(),
            None => PublicKey::from_blob(&reply.host_key)?,
        };
        let matches = match &host_cert {
            Some(c) => c.signature_algorithms().contains(&n.host_key.as_str()),
            None => key.signature_algorithms().contains(&n.host_key.as_str()),
        };
        if !matches {
            return Err(Error::Protocol(
                "host key does not match the negotiated algorithm",
            ));
        }
        let init = client.init().to_vec();
        let k = agreed.method.client_finish(client, &reply.q_s)?;
        let peer_version = self.peer_version.clone().unwrap_or_default();
        let h = kex::exchange_hash(
            &Transcript {
                v_c: &self.local_version,
                v_s: &peer_version,
                i_c: local_init,
                i_s: &agreed.peer_init,
                k_s: &reply.host_key,
                group: group.as_deref().unwrap_or_default(),
                init: &init,
                reply: &reply.q_s,
            },
            &k,
        )?;
        let alg = key.verify(&h, &reply.signature)?;
        let expected = cert::plain_algorithm(n.host_key.as_bytes()).unwrap_or(&n.host_key);
        if alg != expected {
            return Err(Error::Protocol(
                "host key signature algorithm differs from the negotiated one",
            ));
        }
        let sid = self.session_id.clone().unwrap_or_else(|| h.clone());
        let (c2s, s2c) = kex::derive_keys(&k, &h, &sid, n)?;
        if first && agreed.resilience {
            self.resilience = Some(resilience::State::new(
                resilience::resume_secret(k.raw(), &h)?,
                self.config.resilience_buffer,
                0,
            ));
        }
        if let Some(known) = &self.host_key {
            // A rekey must present the same host key.
            if known != &reply.host_key {
                return Err(Error::HostKeyRejected);
            }
            self.session_id.get_or_insert(h);
            self.send_newkeys(first, &c2s, n)?;
            return Ok(Phase::NewKeysSent { agreed, recv: s2c });
        }
        self.session_id = Some(sid);
        self.events.push_back(Event::HostKey(key));
        Ok(Phase::AwaitVerdict(Box::new(Unverified {
            agreed,
            send: c2s,
            recv: s2c,
            host_key: reply.host_key,
            host_cert,
        })))
    }

    /// Client: the certificate the server sent as its host key, while
    /// [`Event::HostKey`] (which carries the certificate's key) awaits a
    /// verdict; None when it sent a plain key or nothing awaits one.
    pub fn host_certificate(&self) -> Option<&Certificate> {
        match &self.kex {
            Some(KexRun {
                phase: Phase::AwaitVerdict(u),
                ..
            }) => u.host_cert.as_ref(),
            _ => None,
        }
    }

    /// Client: the application accepts the host key of [`Event::HostKey`];
    /// the key exchange continues. Rejecting means dropping the connection
    /// (or calling [`Self::disconnect`] with HOST_KEY_NOT_VERIFIABLE).
    /// Without a pending verdict: [`Error::Misuse`], and nothing changes.
    pub fn accept_host_key(&mut self, now: Instant) -> Result<()> {
        self.check_open()?;
        let r = self.host_key_accepted(now);
        self.fail_on_err(r)
    }

    fn host_key_accepted(&mut self, now: Instant) -> Result<()> {
        let (first, local_init, u) = match self.kex.take() {
            Some(KexRun {
                first,
                local_init,
                phase: Phase::AwaitVerdict(u),
            }) => (first, local_init, u),
            other => {
                self.kex = other;
                return Err(Error::Misuse("no host key awaits a verdict"));
            }
        };
        self.now = now;
        let Unverified {
            agreed,
            send,
            recv,
            host_key,
            ..
        } = *u;
        self.host_key = Some(host_key);
        let n = agreed.negotiated.clone();
        self.kex = Some(KexRun {
            first,
            local_init,
            phase: Phase::NewKeysSent { agreed, recv },
        });
        self.send_newkeys(first, &send, &n)?;
        self.process(now)
    }

    fn send_newkeys(&mut self, first: bool, send: &KeyMaterial, n: &Negotiated) -> Result<()> {
        self.write_now(&[num::NEWKEYS])?;
        let client = self.role == Role::Client;
        self.writer.set_key(send, n.zlib(client, true))?;
        if self.strict_kex {
            self.writer.seq = 0;
        }
        if first && self.role == Role::Server && self.peer_ext_info {
            self.write_now(&self.ext_info())?;
        }
        Ok(())
    }

    fn ext_info(&self) -> Vec<u8> {
        let algs = crate::keys::KeyType::user_signature_algorithms().join(",");
        msg::ExtInfo(vec![
            ("server-sig-algs".to_string(), algs.as_bytes().to_vec()),
            ("ping@openssh.com".to_string(), b"0".to_vec()),
        ])
        .encode()
    }

    /// The peer's NEWKEYS (ours went out before: each side sends its
    /// NEWKEYS before it reads the other's): the exchange is done.
    pub(super) fn on_newkeys(&mut self, payload: &[u8]) -> Result<()> {
        if payload.len() != 1 {
            return Err(Error::TrailingData);
        }
        let (first, agreed, recv) = match self.kex.take() {
            Some(KexRun {
                first,
                phase: Phase::NewKeysSent { agreed, recv },
                ..
            }) => (first, agreed, recv),
            None => return Err(Error::Protocol("NEWKEYS outside key exchange")),
            other => {
                self.kex = other;
                return Err(Error::Protocol("NEWKEYS before key exchange reply"));
            }
        };
        let client = self.role == Role::Client;
        self.reader
            .set_key(&recv, agreed.negotiated.zlib(client, false))?;
        if self.strict_kex {
            self.reader.seq = 0;
        }
        // The engine has no clock: it uses the latest time it was given.
        self.last_kex = self.now;
        self.events.push_back(Event::KexDone {
            first,
            algorithms: agreed.negotiated,
        });
        if first && self.role == Role::Client {
            let mut p = vec![num::SERVICE_REQUEST];
            crate::wire::Put::put_str(&mut p, "ssh-userauth");
            self.write_now(&p)?;
        }
        self.flush_deferred()
    }

    /// Server: the client's reconnect request (the resilience extension),
    /// for the owning session; the engine reads nothing more.
    pub(super) fn on_reconnect_request(&mut self, payload: &[u8]) -> Result<()> {
        let request = resilience::Request::decode(payload)?;
        let Some(KexRun {
            local_init,
            phase:
                Phase::Reconnect {
                    peer_init,
                    negotiated,
                    received,
                },
            ..
        }) = self.kex.as_mut()
        else {
            return Err(Error::Protocol("reconnect request outside a reconnect"));
        };
        *received = true;
        let transcript = resilience::Transcript {
            v_c: self.peer_version.clone().unwrap_or_default(),
            v_s: self.local_version.clone(),
            i_c: peer_init.clone(),
            i_s: local_init.clone(),
        };
        self.events
            .push_back(Event::ReconnectRequest(Box::new(ReconnectRequest {
                request,
                transcript,
                negotiated: negotiated.clone(),
                writer_seq: self.writer.seq,
                reader_seq: self.reader.seq,
            })));
        Ok(())
    }

    /// RFC 4253 §7.1 and OpenSSH's strict KEX (Terrapin): which messages a
    /// peer may send while a key exchange runs.
    pub(super) fn check_allowed_during_kex(&self, n: u8) -> Result<()> {
        let Some(kx) = &self.kex else {
            return Ok(());
        };
        let generic = matches!(
            n,
            num::DISCONNECT | num::IGNORE | num::UNIMPLEMENTED | num::DEBUG
        );
        let kex_msg = matches!(n, num::KEXINIT | num::NEWKEYS | 30..=49);
        match kx.phase {
            Phase::SentInit => {
                if kx.first && n != num::KEXINIT && n != num::DISCONNECT {
                    return Err(Error::Protocol("first message was not KEXINIT"));
                }
                // A rekey the peer has not seen yet: anything may still arrive.
                return Ok(());
            }
            Phase::Reconnect { received, .. } => {
                if n == resilience::MSG_RECONNECT_REQUEST && !received || n == num::DISCONNECT {
                    return Ok(());
                }
                return Err(Error::Protocol("unexpected message in a reconnect"));
            }
            _ => {}
        }
        if kx.first && self.strict_kex {
            if kex_msg || n == num::DISCONNECT {
                return Ok(());
            }
            return Err(Error::Protocol(
                "strict KEX: unexpected message during initial key exchange",
            ));
        }
        if kex_msg || generic {
            return Ok(());
        }
        Err(Error::Protocol("unexpected message during key exchange"))
    }
}

/// The security strength in bits the negotiated ciphers and MACs need, for
/// a group-exchange request (OpenSSH's `dh_need`: the cipher's key length,
/// at most 256 bits for chacha20-poly1305's double key, its IV and the MAC
/// key).
fn dh_need_bits(n: &Negotiated) -> u32 {
    let mut need = 0;
    for c in [&n.cipher_c2s, &n.cipher_s2c] {
        if let Ok(c) = crate::cipher::cipher(c) {
            need = need.max(c.key_len.min(32)).max(c.iv_len);
        }
    }
    for m in [&n.mac_c2s, &n.mac_s2c] {
        if let Ok(m) = crate::cipher::mac(m) {
            need = need.max(m.key_len);
        }
    }
    8 * need as u32
}
