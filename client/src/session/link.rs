//! The transport under the connection: its readiness, reading into and
//! writing out of the engine, and what a broken transport means (the end
//! of the session, or with resilience a reconnect: resume.rs).

use std::io;
use std::time::{Duration, Instant};

use mio::{Registry, Token};
use ressh_proto::Connection;

use super::resume::{Resume, Suspicions, T_NEW_READ, T_NEW_WRITE};
use super::{fatal, Session, T_READ, T_WRITE};
use crate::auth;
use crate::transport::{self, Transport};

/// Transport bytes handled per wake-up before local I/O gets a turn.
const READ_BUDGET: usize = 4 << 20;

pub(super) struct Link {
    pub(super) transport: Transport,
    readable: bool,
    writable: bool,
    /// The transport reported EOF or an error.
    dead: bool,
    /// A transport being made to replace this one (resilience).
    pub(super) resume: Option<Resume>,
    pub(super) suspicions: Suspicions,
}

impl Link {
    pub(super) fn new(transport: Transport) -> Link {
        Link {
            transport,
            readable: true,
            writable: true,
            dead: false,
            resume: None,
            suspicions: Suspicions::default(),
        }
    }

    /// Readiness of the transport or of the one being tried; false if `t`
    /// is neither.
    pub(super) fn mark(&mut self, t: Token, readable: bool, writable: bool) -> bool {
        match t {
            T_READ => {
                self.readable |= readable;
                // A TCP transport has one token for both directions.
                self.writable |= writable;
            }
            T_WRITE => self.writable |= writable,
            T_NEW_READ | T_NEW_WRITE => {
                if let Some(r) = self.resume.as_mut() {
                    r.mark(readable, writable);
                }
            }
            _ => return false,
        }
        true
    }

    pub(super) fn describe(&self) -> &str {
        self.transport.describe()
    }

    pub(super) fn dead(&self) -> bool {
        self.dead
    }

    pub(super) fn resuming(&self) -> bool {
        self.resume.is_some()
    }

    /// Whether bytes may be waiting to be read (the read budget ran out).
    pub(super) fn read_pending(&self) -> bool {
        self.readable && !self.dead
    }

    /// Closes the transport; nothing more is read or written on it.
    pub(super) fn close(&mut self, reg: &Registry) {
        self.dead = true;
        self.readable = false;
        self.writable = false;
        self.transport.deregister(reg);
        self.transport.close();
    }

    /// Puts `new` (a reconnected transport, deregistered) in the place of
    /// the current one.
    pub(super) fn replace(&mut self, mut new: Transport, reg: &Registry) -> io::Result<()> {
        self.transport.deregister(reg);
        self.transport.close();
        new.register(reg, T_READ, T_WRITE)?;
        self.transport = new;
        self.dead = false;
        self.readable = true;
        self.writable = true;
        Ok(())
    }

    /// Writes out the engine's output, blocking, until `deadline`.
    pub(super) fn write_out_blocking(&mut self, conn: &mut Connection, deadline: Instant) {
        while !conn.output().is_empty() && Instant::now() < deadline {
            match self.transport.write(conn.output()) {
                Ok(n) if n > 0 => conn.consume_output(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => break,
            }
        }
    }
}

impl Session {
    pub(super) fn flush_transport(&mut self) {
        while !self.link.dead && self.link.writable && !self.conn.output().is_empty() {
            match self.link.transport.write(self.conn.output()) {
                Ok(0) => {
                    self.link.writable = false;
                    break;
                }
                Ok(n) => self.conn.consume_output(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.link.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let msg = format!(
                        "ressh: write to {}: {}",
                        self.link.describe(),
                        transport::strip_os_error(&e)
                    );
                    self.lost(msg);
                    return;
                }
            }
        }
    }

    /// The transport broke. After the session ended that is no error: the
    /// remaining output is written and the exit status stands.
    fn lost(&mut self, msg: String) {
        if self.detach(&msg) {
            return;
        }
        self.link.dead = true;
        self.link.readable = false;
        self.link.writable = false;
        if !self.chans.main_closed() {
            self.set_quit(fatal(msg));
        }
    }

    pub(super) fn read_transport(&mut self, buf: &mut [u8]) {
        let mut budget = READ_BUDGET;
        while self.link.readable && budget > 0 && self.quit.is_none() {
            match self.link.transport.read(buf) {
                Ok(0) => {
                    self.link.readable = false;
                    let msg = if self.conn.session_id().is_none() || !self.login.authenticated {
                        if self.conn.peer_version().is_none() {
                            format!(
                                "ressh: kex_exchange_identification: Connection closed by \
                                 remote host ({}) before it sent an SSH version line",
                                self.link.describe()
                            )
                        } else {
                            format!("ressh: Connection closed by {}", self.link.describe())
                        }
                    } else {
                        format!("Connection to {} closed by remote host.", self.cfg.host)
                    };
                    self.lost(msg);
                    return;
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    let now = Instant::now();
                    self.alive.heard(&self.cfg, now);
                    if let Err(e) = self.conn.handle_input(&buf[..n], now) {
                        self.drain_events();
                        self.protocol_error(e);
                        return;
                    }
                    self.heard_on_old();
                    self.drain_events();
                    // Write out what arrived now: that returns the window
                    // to the server (WINDOW_ADJUST) while it is still
                    // sending, instead of after the whole read budget.
                    self.flush_outputs();
                    self.flush_transport();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.link.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let stage = if self.conn.peer_version().is_none() {
                        "kex_exchange_identification: "
                    } else {
                        ""
                    };
                    let msg = format!(
                        "ressh: {stage}read from {}: {}",
                        self.link.describe(),
                        transport::strip_os_error(&e)
                    );
                    self.lost(msg);
                    return;
                }
            }
        }
    }

    /// The engine failed: the session ends with what the peer said or
    /// what went wrong.
    pub(super) fn protocol_error(&mut self, e: ressh_proto::Error) {
        if self.quit.is_some() {
            return;
        }
        // Send the DISCONNECT the engine queued, best effort.
        self.flush_transport();
        let msg = match &e {
            ressh_proto::Error::PeerDisconnected {
                reason,
                description,
            } => format!(
                "Received disconnect from {}: {reason}: {}",
                self.link.describe(),
                auth::clean(description)
            ),
            _ if self.conn.peer_version().is_none() => format!(
                "ressh: kex_exchange_identification: {} did not send a valid SSH version \
                 line: {e}",
                self.link.describe()
            ),
            _ => format!("ressh: {}: {e}", self.link.describe()),
        };
        self.set_quit(fatal(msg));
    }
}
