//! The resilience extension's timers (docs/PROTOCOL.md §4): delayed ACKs,
//! the client's keepalive probes and path suspicion.

use std::time::{Duration, Instant};

use ressh_resilience::suspect::Watch;

use super::{Connection, Event, Role, ACK_DELAY, BULK_UNACKED};
use crate::error::Result;
use crate::resilience;

/// When things happened on the transport, for the timers.
pub(super) struct Timers {
    /// When the oldest unacknowledged resilient message arrived.
    pub(super) ack: Option<Instant>,
    /// Keepalive: last packet received, probe sent, death reported.
    last_rx: Instant,
    probe_sent: Option<Instant>,
    dead_reported: bool,
    /// Client: round trips and what may make the path suspect.
    pub(super) watch: Watch,
}

impl Timers {
    pub(super) fn new(now: Instant) -> Self {
        Timers {
            ack: None,
            last_rx: now,
            probe_sent: None,
            dead_reported: false,
            watch: Watch::default(),
        }
    }

    /// Bytes arrived: the peer is alive.
    pub(super) fn heard(&mut self, now: Instant) {
        self.last_rx = now;
        self.probe_sent = None;
        self.watch.heard();
    }

    /// A new path: everything but a pending delayed ACK starts again.
    pub(super) fn new_path(&mut self, now: Instant) {
        *self = Timers {
            ack: self.ack,
            ..Timers::new(now)
        };
    }
}

impl Connection {
    /// The next moments the resilience timers are due, given to `at`.
    pub(super) fn resilience_deadlines(&self, mut at: impl FnMut(Instant)) {
        if let Some(a) = self.timers.ack {
            at(a + ACK_DELAY);
        }
        if self.keepalive_on() && !self.timers.dead_reported {
            let s = self.suspect_timeout();
            match self.timers.probe_sent {
                Some(p) => {
                    at(p + self.config.keepalive);
                    if let Some(x) = self.timers.watch.suspect_due() {
                        at(x);
                    }
                }
                None => {
                    at(self.timers.last_rx + self.config.keepalive);
                    if let Some(x) = s.and_then(|s| self.timers.watch.probe_due(s)) {
                        at(x);
                    }
                }
            }
        }
    }

    fn keepalive_on(&self) -> bool {
        self.role == Role::Client
            && !self.config.keepalive.is_zero()
            && self.resilience.as_ref().is_some_and(|r| r.active)
    }

    /// Client: how long a probe may go unanswered before the path is
    /// suspect ([`Event::PathSuspect`]): a few smoothed round trips within
    /// the configured floor and cap, never above the keepalive interval.
    /// None without keepalives or with suspicion off.
    pub fn suspect_timeout(&self) -> Option<Duration> {
        let cap = self.config.suspect_cap?.min(self.config.keepalive);
        self.keepalive_on().then(|| {
            self.timers
                .watch
                .rtt
                .timeout(self.config.suspect_floor, cap)
        })
    }

    /// Client: the smoothed round-trip time measured from want-reply ACKs
    /// on the current connection, if any was measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.timers.watch.rtt.srtt()
    }

    /// Client, after [`Event::PathSuspect`]: the application knows the
    /// path still carries bytes (the kernel received TCP acknowledgements
    /// for data in flight: our probe waits behind a bulk upload). Suspect
    /// again only after another suspicion timeout; the keepalive deadline
    /// stays.
    pub fn path_alive(&mut self, now: Instant) {
        if let (Some(_), Some(s)) = (self.timers.probe_sent, self.suspect_timeout()) {
            self.timers.watch.rearm(now + s);
        }
    }

    /// Timers of the resilience extension: delayed ACKs, keepalives and
    /// path suspicion.
    pub(super) fn resilience_timers(&mut self, now: Instant) -> Result<()> {
        if self.timers.ack.is_some_and(|a| now >= a + ACK_DELAY) {
            self.send_ack(false)?;
        }
        if self.keepalive_on() && !self.timers.dead_reported {
            let s = self.suspect_timeout();
            match self.timers.probe_sent {
                None => {
                    let idle =
                        now.saturating_duration_since(self.timers.last_rx) >= self.config.keepalive;
                    let due = s
                        .and_then(|s| self.timers.watch.probe_due(s))
                        .is_some_and(|t| now >= t);
                    if idle || due {
                        self.send_probe(now)?;
                    }
                }
                Some(p) if now.saturating_duration_since(p) >= self.config.keepalive => {
                    self.timers.dead_reported = true;
                    self.events.push_back(Event::ConnectionDead);
                }
                Some(_) => {
                    if self.timers.watch.take_suspicion(now) {
                        // During an upload the server's ACKs of it are the
                        // sign of life: suspect only once they stop.
                        let bulk = self
                            .resilience
                            .as_ref()
                            .is_some_and(|r| r.buffer.bytes() >= BULK_UNACKED);
                        let until = s
                            .zip(self.timers.watch.progress_at())
                            .map(|(s, p)| p + ACK_DELAY + s);
                        match until {
                            Some(u) if bulk && now < u => self.timers.watch.rearm(u),
                            _ => self.events.push_back(Event::PathSuspect),
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Client: a keepalive probe (an ACK with want reply). Unanswered for
    /// the suspicion timeout it makes the path suspect, for the keepalive
    /// interval dead.
    fn send_probe(&mut self, now: Instant) -> Result<()> {
        self.timers.probe_sent = Some(now);
        if self.send_ack(true)? {
            let s = self.suspect_timeout();
            self.timers.watch.want_reply_sent(now, s);
        }
        Ok(())
    }

    /// Sends SSH_MSG_RESILIENCE_ACK with our receive count; false when
    /// ACKs are held (a reconnect is being prepared). A client asks for a
    /// reply when its round-trip measurement is missing or old.
    pub(super) fn send_ack(&mut self, mut want_reply: bool) -> Result<bool> {
        let now = self.now;
        let measure = self.role == Role::Client
            && self.suspect_timeout().is_some()
            && self.timers.watch.wants_rtt(now);
        let Some(r) = self.resilience.as_mut() else {
            return Ok(false);
        };
        if r.hold_acks {
            self.timers.ack = None;
            return Ok(false);
        }
        let count = r.recv;
        r.acked_recv = count;
        r.unacked_bytes = 0;
        self.timers.ack = None;
        if measure && !want_reply {
            want_reply = true;
            self.timers.watch.want_reply_sent(now, None);
        }
        self.send(resilience::encode_ack(count, want_reply))?;
        Ok(true)
    }
}
