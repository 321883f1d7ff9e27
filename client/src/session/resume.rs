//! Resilient sessions (docs/PROTOCOL.md): when the transport breaks, or
//! something says it is about to (no answer to keepalives, a new route or
//! source address, a resume from suspend, SIGUSR2 or `~R`), the session
//! keeps running and a new transport is made beside the old one. The
//! reconnect exchange runs on it; only when it has succeeded is it swapped
//! in (make-before-break). Retries back off with jitter (retry.rs); the
//! session is given up only when the transport has been lost for longer
//! than the server's detach timeout: no refusal from the server is
//! authenticated, so none ends it.

use std::io;
use std::time::{Duration, Instant};

use mio::Token;
use ressh_proto::ClientReconnect;

use super::keepalive::resilience_interval;
use super::retry::{self, Failure, Schedule};
use super::{fatal, Session};
use crate::transport::{self, Transport};

/// Tokens of the transport being tried.
pub(super) const T_NEW_READ: Token = Token(6);
pub(super) const T_NEW_WRITE: Token = Token(7);

/// One attempt may take this long before it is abandoned.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Failed attempts after which a make-before-break resume (the old
/// transport still works) stops and keeps the old transport.
const ATTEMPTS_BESIDE_OLD: u32 = 3;

/// The state of a session whose transport is being replaced.
pub(super) struct Resume {
    /// When the old transport was lost (None: it still works, make-before-break).
    lost_at: Option<Instant>,
    started: Instant,
    /// The server's announced detach timeout, seconds.
    detach_timeout: u32,
    next_try: Instant,
    schedule: Schedule,
    attempts: u32,
    /// What the last failed attempt ran into.
    last_failure: Option<Failure>,
    attempt: Option<Attempt>,
    why: String,
    /// Started on a path suspicion: the old transport answering first
    /// ends it (the path was only slow).
    suspected: bool,
}

/// Path suspicions of the session and how they ended (logged at -v).
#[derive(Debug, Default)]
pub(super) struct Suspicions {
    /// Reconnects started on a suspicion.
    reconnects: u64,
    /// ... that switched to the new connection.
    switched: u64,
    /// ... abandoned because the old connection answered first.
    old_back: u64,
    /// ... that gave up beside the working old connection.
    failed: u64,
    /// Suspicions dismissed: TCP acknowledged our bytes in flight.
    dismissed: u64,
}

impl Suspicions {
    pub(super) fn summary(&self) -> String {
        format!(
            "path suspicions: {} reconnects ({} switched, {} kept the old connection that \
             answered first, {} failed), {} dismissed as TCP acknowledged our data",
            self.reconnects, self.switched, self.old_back, self.failed, self.dismissed
        )
    }
}

struct Attempt {
    transport: Transport,
    cr: ClientReconnect,
    started: Instant,
    readable: bool,
    writable: bool,
    /// The reconnect request, until TCP has connected.
    request: Option<Vec<u8>>,
}

impl Resume {
    /// Readiness of the attempt's transport.
    pub(super) fn mark(&mut self, readable: bool, writable: bool) {
        if let Some(a) = self.attempt.as_mut() {
            a.readable |= readable;
            a.writable |= writable;
        }
    }
}

impl Session {
    pub(super) fn resilient(&self) -> bool {
        self.login.authenticated && self.conn.resilience_active() && !self.conn.is_closed()
    }

    /// The transport broke; with resilience the session waits for a new
    /// one instead of ending. Returns whether it did.
    pub(super) fn detach(&mut self, why: &str) -> bool {
        if !self.resilient() {
            return false;
        }
        self.link.close(self.poll.registry());
        let now = Instant::now();
        match &mut self.link.resume {
            Some(r) if r.lost_at.is_none() => {
                r.lost_at = Some(now);
                // Trying beside a working transport, maybe waiting a while
                // between attempts: now there is no other, hurry.
                if r.attempt.is_none() {
                    r.schedule.reset();
                    r.next_try = now + r.schedule.next_delay();
                }
            }
            Some(_) => {}
            None => self.begin_resume(why, Some(now)),
        }
        if let Some(r) = &self.link.resume {
            let secs = r.detach_timeout;
            crate::debug1!(
                "the server keeps the session for {secs} s; retrying until then (+{} s)",
                retry::MARGIN.as_secs()
            );
        }
        self.status(&format!("connection lost ({why}); reconnecting"));
        true
    }

    /// Starts replacing the transport; `lost_at` None keeps the old one
    /// running meanwhile.
    pub(super) fn begin_resume(&mut self, why: &str, lost_at: Option<Instant>) {
        if !self.resilient() {
            return;
        }
        let now = Instant::now();
        if let Some(r) = self.link.resume.as_mut() {
            // Asked again (SIGUSR2, ~R) while waiting between attempts:
            // try now, and back off from the start.
            if r.attempt.is_none() {
                crate::debug1!("reconnecting now: {why}");
                r.schedule.reset();
                r.next_try = now;
            }
            return;
        }
        let mut schedule = Schedule::new(retry::seed());
        let first = schedule.next_delay();
        crate::debug1!("reconnecting: {why}");
        self.link.resume = Some(Resume {
            lost_at,
            started: now,
            detach_timeout: self.conn.peer_detach_timeout().unwrap_or(0),
            next_try: now + first,
            schedule,
            attempts: 0,
            last_failure: None,
            attempt: None,
            why: why.to_string(),
            suspected: false,
        });
    }

    /// The engine's [`ressh_proto::Event::PathSuspect`]: a probe had no
    /// answer for the suspicion timeout. Unless the kernel says our bytes
    /// are moving (a probe queued behind a bulk upload), try a new
    /// connection beside the old one; whichever answers first wins.
    pub(super) fn path_suspect(&mut self) {
        if !self.resilient() || self.link.dead() || self.link.resume.is_some() {
            return;
        }
        let Some(s) = self.conn.suspect_timeout() else {
            return;
        };
        let now = Instant::now();
        let tcp = self.link.transport.tcp_progress();
        if let Some(p) = &tcp {
            crate::debug1!(
                "path suspected; TCP: last acknowledgement {} ms ago, {} segments in flight, \
                 {} bytes unsent",
                p.since_ack.as_millis(),
                p.in_flight,
                p.not_sent
            );
        }
        let keepalive = resilience_interval(&self.cfg);
        if tcp.is_some_and(|p| p.moving(s, keepalive)) {
            self.link.suspicions.dismissed += 1;
            crate::debug1!("TCP says our data is moving: the path is only slow");
            self.conn.path_alive(now);
            return;
        }
        self.link.suspicions.reconnects += 1;
        let why = format!(
            "path suspected: no answer to a probe for {} ms",
            s.as_millis()
        );
        self.begin_resume(&why, None);
        if let Some(r) = self.link.resume.as_mut() {
            r.suspected = true;
        }
    }

    /// Bytes arrived on the current transport. If a suspicion's attempt
    /// is under way beside it, the path was only slow: the attempt is
    /// abandoned before its key confirmation (the server commits nothing
    /// without it) and the old connection kept.
    pub(super) fn heard_on_old(&mut self) {
        if !self
            .link
            .resume
            .as_ref()
            .is_some_and(|r| r.suspected && r.lost_at.is_none())
        {
            return;
        }
        let r = self.link.resume.take().expect("resume");
        if let Some(mut a) = r.attempt {
            a.transport.deregister(self.poll.registry());
            a.transport.close();
        }
        self.conn.abort_reconnect();
        self.link.suspicions.old_back += 1;
        crate::verbose!(
            "the old connection answered after {} ms, before the new one was ready: keeping it; {}",
            r.started.elapsed().as_millis(),
            self.link.suspicions.summary()
        );
    }

    /// A one-line status for interactive sessions; -v logs otherwise.
    pub(super) fn status(&self, text: &str) {
        if self.chans.raw() {
            crate::log::raw_text(&format!("\r\n[ressh: {text}]\r\n"));
        } else {
            crate::verbose!("{text}");
        }
    }

    /// Work of one loop turn: triggers, attempts, deadlines.
    pub(super) fn resume_tick(&mut self, buf: &mut [u8]) {
        self.check_triggers();
        let Some(r) = self.link.resume.as_mut() else {
            return;
        };
        let now = Instant::now();
        if retry::give_up(r.lost_at, r.detach_timeout, now) {
            let secs = r
                .lost_at
                .map(|t| now.duration_since(t).as_secs())
                .unwrap_or(0);
            let last = r
                .last_failure
                .as_ref()
                .map(|f| format!("; last answer: {}", f.describe()))
                .unwrap_or_default();
            let detach = r.detach_timeout;
            self.conn.abort_reconnect();
            self.set_quit(fatal(format!(
                "ressh: connection to {} lost {secs} s ago and the server's detach timeout ({detach} s) passed{last}",
                self.cfg.host
            )));
            return;
        }
        if r.attempt.is_none() && now >= r.next_try {
            self.start_attempt();
        }
        self.drive_attempt(buf);
    }

    fn start_attempt(&mut self) {
        let r = self.link.resume.as_mut().expect("resume");
        r.attempts += 1;
        let n = r.attempts;
        crate::debug1!("reconnect attempt {n}");
        let mut transport = match transport::dial_nonblocking(&self.cfg, n - 1) {
            Ok(t) => t,
            Err(e) => {
                crate::debug1!("reconnect attempt {n}: {}", e.0);
                self.attempt_failed(Failure::Connection(e.0));
                return;
            }
        };
        let mut cr = match self.conn.reconnect_attempt() {
            Ok(c) => c,
            Err(e) => {
                self.set_quit(fatal(format!("ressh: cannot reconnect: {e}")));
                return;
            }
        };
        if let Err(e) = transport.register(self.poll.registry(), T_NEW_READ, T_NEW_WRITE) {
            crate::debug1!("reconnect attempt {n}: {e}");
            self.conn.abort_reconnect();
            self.attempt_failed(Failure::Connection(e.to_string()));
            return;
        }
        transport.set_user_timeout(resilience_interval(&self.cfg) * 2);
        // The request goes with our first bytes once TCP has connected;
        // nothing is awaited first.
        self.link.resume.as_mut().expect("resume").attempt = Some(Attempt {
            transport,
            request: Some(cr.take_output()),
            cr,
            started: Instant::now(),
            readable: true,
            writable: true,
        });
    }

    /// Sends the reconnect request once the new TCP connection is up.
    /// Ok(false) while it is still connecting.
    fn send_request(a: &mut Attempt) -> io::Result<bool> {
        if a.request.is_none() {
            return Ok(true);
        }
        if !a.writable {
            return Ok(false);
        }
        if !a.transport.connected()? {
            a.writable = false;
            return Ok(false);
        }
        let out = a.request.take().expect("request");
        write_all_now(&mut a.transport, &out)?;
        crate::debug1!("Connection established.");
        Ok(true)
    }

    fn drive_attempt(&mut self, buf: &mut [u8]) {
        let Some(a) = self.link.resume.as_mut().and_then(|r| r.attempt.as_mut()) else {
            return;
        };
        if a.started.elapsed() > ATTEMPT_TIMEOUT {
            crate::debug1!("reconnect attempt timed out");
            self.drop_attempt(Failure::Connection("no answer".into()));
            return;
        }
        match Self::send_request(a) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                crate::debug1!("reconnect attempt: {e}");
                self.drop_attempt(Failure::Connection(e.to_string()));
                return;
            }
        }
        let mut failed = None;
        while a.readable {
            match a.transport.read(buf) {
                Ok(0) => {
                    failed = Some("connection closed".to_string());
                    break;
                }
                Ok(n) => {
                    if let Err(e) = a.cr.handle_input(&buf[..n]) {
                        crate::debug1!(
                            "reconnect refused or failed: {}",
                            ressh_proto::wire::printable(e.to_string().as_bytes())
                        );
                        failed = Some(e.to_string());
                        break;
                    }
                    if a.cr.is_done() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => a.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    crate::debug1!("reconnect attempt: {e}");
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(e) = failed {
            // Unauthenticated, whatever it says: it ends this attempt only.
            let f = match a.cr.refused() {
                Some(r) => Failure::Refused {
                    code: r.code,
                    description: r.description.clone(),
                },
                None => Failure::Connection(e),
            };
            crate::debug1!("reconnect attempt failed: {}", f.describe());
            self.drop_attempt(f);
            return;
        }
        if a.cr.is_done() {
            self.finish_attempt();
        }
    }

    fn drop_attempt(&mut self, f: Failure) {
        if let Some(mut a) = self.link.resume.as_mut().and_then(|r| r.attempt.take()) {
            a.transport.deregister(self.poll.registry());
            a.transport.close();
        }
        self.conn.abort_reconnect();
        self.attempt_failed(f);
    }

    /// An attempt failed: schedule the next one. Nothing the server said
    /// ends the session here (see retry.rs); resume_tick gives up once the
    /// server's detach timeout has passed.
    fn attempt_failed(&mut self, f: Failure) {
        let Some(r) = self.link.resume.as_mut() else {
            return;
        };
        let now = Instant::now();
        let wait = r.schedule.next_delay();
        r.next_try = now + wait;
        let what = f.describe();
        r.last_failure = Some(f);
        if r.lost_at.is_none() && r.attempts >= ATTEMPTS_BESIDE_OLD {
            // The old transport still works and the new path does not:
            // keep the old one and stop trying.
            crate::verbose!("reconnect failed ({what}); keeping the current connection");
            if r.suspected {
                self.link.suspicions.failed += 1;
            }
            self.link.resume = None;
            return;
        }
        let since = r
            .lost_at
            .map(|t| format!("disconnected {} s; ", now.duration_since(t).as_secs()))
            .unwrap_or_default();
        let until = retry::deadline(r.lost_at, r.detach_timeout)
            .map(|d| {
                format!(
                    ", giving up in {} s",
                    d.saturating_duration_since(now).as_secs()
                )
            })
            .unwrap_or_default();
        let text = format!(
            "{since}attempt {} failed: {what}; retrying in {:.1} s{until}",
            r.attempts,
            wait.as_secs_f64()
        );
        if self.chans.raw() {
            crate::log::raw_text(&format!("\r[ressh: {text}]\x1b[K"));
        } else {
            crate::verbose!("{text}");
        }
    }

    fn finish_attempt(&mut self) {
        let r = self.link.resume.take().expect("resume");
        let a = r.attempt.expect("attempt");
        let Attempt {
            mut transport, cr, ..
        } = a;
        let now = Instant::now();
        if let Err(e) = self.conn.complete_reconnect(cr, now) {
            transport.deregister(self.poll.registry());
            self.set_quit(fatal(format!("ressh: reconnect failed: {e}")));
            return;
        }
        // Swap: the old transport goes, the new one takes its tokens.
        transport.deregister(self.poll.registry());
        if let Err(e) = self.link.replace(transport, self.poll.registry()) {
            self.set_quit(fatal(format!("ressh: {e}")));
            return;
        }
        let took = now.duration_since(r.lost_at.unwrap_or(r.started));
        let text = format!(
            "reconnected to {} after {:.1} s ({})",
            self.cfg.host,
            took.as_secs_f64(),
            r.why
        );
        if self.chans.raw() {
            crate::log::raw_text(&format!("\r[ressh: {text}]\x1b[K\r\n"));
        } else {
            crate::verbose!("{text}");
        }
        if r.suspected {
            self.link.suspicions.switched += 1;
            crate::verbose!("{}", self.link.suspicions.summary());
        }
        self.drain_events();
    }

    /// When the resume machinery needs the loop to wake up.
    pub(super) fn resume_timeout(&self) -> Option<Instant> {
        let r = self.link.resume.as_ref()?;
        let t = match &r.attempt {
            Some(a) => a.started + ATTEMPT_TIMEOUT,
            None => r.next_try,
        };
        Some(retry::deadline(r.lost_at, r.detach_timeout).map_or(t, |d| t.min(d)))
    }
}

/// Writes a few hundred bytes to a fresh transport (its buffer is empty).
fn write_all_now(t: &mut Transport, mut b: &[u8]) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !b.is_empty() {
        match t.write(b) {
            Ok(n) => b = &b[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
