//! The way to an authenticated connection: the host key verified, the
//! user authenticated, then the forwards and the main channel set up, and
//! going to the background (-f) once that is done.

use std::time::Instant;

use ressh_proto::error::reason;
use ressh_proto::keys::PublicKey;
use ressh_proto::Event;

use super::{fatal, Session};
use crate::auth::Auth;
use crate::config::Config;
use crate::hostkey::{self, Outcome};
use crate::identity::{self, Agent};

pub(super) struct Login {
    /// Authentication under way.
    auth: Option<Auth>,
    /// The host key was accepted without being known (StrictHostKeyChecking
    /// off for a changed key): no forwards, no interactive authentication.
    pub(super) untrusted: bool,
    pub(super) authenticated: bool,
    /// ConnectTimeout: until the first key exchange is done.
    pub(super) kex_deadline: Option<Instant>,
    /// -f: to go to the background once authenticated and, with
    /// ExitOnForwardFailure, once the remote forwards are confirmed.
    fork_pending: bool,
}

impl Login {
    pub(super) fn new(cfg: &Config, now: Instant) -> Login {
        Login {
            auth: None,
            untrusted: false,
            authenticated: false,
            kex_deadline: cfg.connect_timeout.map(|t| now + t),
            fork_pending: cfg.fork_after_authentication,
        }
    }
}

impl Session {
    pub(super) fn on_host_key(&mut self, key: &PublicKey) {
        let peer = self.link.describe().replace(" port ", ":");
        let cert = self.conn.host_certificate().cloned();
        match hostkey::verify(&self.cfg, key, cert.as_ref(), &peer) {
            Ok(o) => {
                self.login.untrusted = o == Outcome::AcceptUntrusted;
                if let Err(e) = self.conn.accept_host_key(Instant::now()) {
                    self.protocol_error(e);
                }
            }
            Err(msg) => {
                self.conn
                    .disconnect(reason::HOST_KEY_NOT_VERIFIABLE, "host key not verified");
                self.flush_transport();
                self.set_quit(fatal(msg));
            }
        }
    }

    pub(super) fn start_auth(&mut self) {
        let mut agent = match &self.cfg.identity_agent {
            Some(p) if self.cfg.pubkey_authentication => match Agent::connect(p) {
                Ok(a) => Some(a),
                Err(e) => {
                    crate::debug1!("cannot reach agent at {}: {e}", p.display());
                    None
                }
            },
            _ => None,
        };
        let ids = if self.cfg.pubkey_authentication {
            identity::collect(&self.cfg, agent.as_mut())
        } else {
            Vec::new()
        };
        let mut a = Auth::new(&self.cfg, ids, agent);
        if self.login.untrusted {
            a.disable_interactive();
        }
        if let Err(m) = a.start(&mut self.conn) {
            self.set_quit(fatal(m));
        }
        self.login.auth = Some(a);
    }

    /// The server's answers while authenticating, to the method under way.
    pub(super) fn on_auth_event(&mut self, ev: Event) {
        let a = self.login.auth.as_mut();
        let r = match ev {
            Event::AuthFailure { methods, partial } => {
                let r = match a {
                    Some(a) => a.on_failure(&mut self.conn, methods, partial),
                    None => Err("unexpected auth failure".into()),
                };
                if r.is_err() {
                    self.conn
                        .disconnect(reason::NO_MORE_AUTH_METHODS_AVAILABLE, "no more methods");
                    self.flush_transport();
                }
                r
            }
            Event::AuthPkOk => match a {
                Some(a) => a.on_pk_ok(&mut self.conn),
                None => Err("unexpected PK_OK".into()),
            },
            Event::AuthInfoRequest {
                name,
                instruction,
                prompts,
            } => match a {
                Some(a) => a.on_info_request(&mut self.conn, &name, &instruction, &prompts),
                None => Err("unexpected info request".into()),
            },
            Event::AuthPasswordChange { prompt } => match a {
                Some(a) => a.on_password_change(&mut self.conn, &prompt),
                None => Err("unexpected password change request".into()),
            },
            _ => Ok(()),
        };
        if let Err(m) = r {
            self.set_quit(fatal(m));
        }
    }

    pub(super) fn on_auth_success(&mut self) {
        if let Some(a) = self.login.auth.take() {
            crate::verbose!(
                "Authenticated to {} ({}) using {}.",
                self.cfg.host,
                self.link.describe(),
                a.describe_success()
            );
        }
        self.login.authenticated = true;
        self.alive.start(&self.cfg, Instant::now());
        if let Err(q) = self.setup_forwards() {
            self.set_quit(q);
            return;
        }
        if let Err(e) = self.mux_listen() {
            self.set_quit(fatal(format!("ressh: {e}")));
            return;
        }
        if let Err(q) = self.open_main() {
            self.set_quit(q);
            return;
        }
        self.background_when_ready();
    }

    /// -f goes to the background once authenticated; with
    /// ExitOnForwardFailure only once the server has answered every -R
    /// request, so a refusal still ends ressh in the foreground.
    pub(super) fn background_when_ready(&mut self) {
        let waiting = self.cfg.exit_on_forward_failure && self.fwd.remote_pending();
        if self.login.fork_pending && self.quit.is_none() && !waiting {
            self.go_background();
        }
    }

    /// -f, as ssh's fork_postauth: the parent exits 0 and the child carries
    /// on in a new session, its stdin, stdout and (unless it logs there at
    /// a debug level) stderr on /dev/null. The session's own descriptors
    /// were copied before, so a remote command's output still reaches the
    /// original stdout. ressh never starts a thread, so the child has all
    /// it needs: the event loop, the signal handlers and their wake-up
    /// socket, the netlink watcher, the listeners.
    fn go_background(&mut self) {
        self.login.fork_pending = false;
        crate::debug1!("forking to background");
        let keep_stderr = crate::log::on_stderr() && crate::log::enabled(crate::log::Level::Debug1);
        let job = self.foreground.take();
        if let Err(e) = crate::sys::go_background(keep_stderr, job) {
            self.set_quit(fatal(format!("ressh: cannot go to the background: {e}")));
        }
    }
}
