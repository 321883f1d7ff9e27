//! Resilient sessions (docs/PROTOCOL.md): when the transport breaks, or
//! something says it is about to (no answer to keepalives, a new route or
//! source address, a resume from suspend, SIGUSR2 or `~R`), the session
//! keeps running and a new transport is made beside the old one. The
//! reconnect exchange runs on it; only when it has succeeded is it swapped
//! in (make-before-break). Retries back off until the server's detach
//! timeout has passed.

use std::io;
use std::time::{Duration, Instant};

use mio::Token;
use ressh_proto::ClientReconnect;

use super::{fatal, Session, T_READ, T_WRITE};
use crate::transport::{self, Transport};
use ressh_resilience::netwatch;

/// Tokens of the transport being tried and of the netlink socket.
pub(super) const T_NEW_READ: Token = Token(6);
pub(super) const T_NEW_WRITE: Token = Token(7);
pub(super) const T_NETLINK: Token = Token(8);

/// One attempt may take this long before it is abandoned.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Refusals the server may repeat before we believe it (it is unauthenticated).
const REFUSALS_BELIEVED: u32 = 2;

/// The state of a session whose transport is being replaced.
pub(super) struct Resume {
    /// When the old transport was lost (None: it still works, make-before-break).
    lost_at: Option<Instant>,
    started: Instant,
    deadline: Instant,
    next_try: Instant,
    backoff: Duration,
    attempts: u32,
    refusals: u32,
    attempt: Option<Attempt>,
    why: String,
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

/// What watches for reasons to reconnect early.
pub(super) struct Watch {
    netlink: Option<netwatch::Netlink>,
    netlink_ready: bool,
    suspend: netwatch::SuspendDetector,
    next_suspend_check: Instant,
}

impl Watch {
    pub(super) fn new(reg: &mio::Registry) -> Watch {
        let netlink = netwatch::Netlink::open().ok().and_then(|n| {
            use std::os::fd::AsRawFd;
            reg.register(
                &mut mio::unix::SourceFd(&n.as_raw_fd()),
                T_NETLINK,
                mio::Interest::READABLE,
            )
            .ok()
            .map(|_| n)
        });
        Watch {
            netlink,
            netlink_ready: false,
            suspend: netwatch::SuspendDetector::default(),
            next_suspend_check: Instant::now() + Duration::from_secs(1),
        }
    }
}

impl Session {
    pub(super) fn resilient(&self) -> bool {
        self.authenticated && self.conn.resilience_active() && !self.conn.is_closed()
    }

    /// The transport broke; with resilience the session waits for a new
    /// one instead of ending. Returns whether it did.
    pub(super) fn detach(&mut self, why: &str) -> bool {
        if !self.resilient() {
            return false;
        }
        self.t_dead = true;
        self.t_read = false;
        self.t_write = false;
        self.transport.deregister(self.poll.registry());
        self.transport.close();
        let now = Instant::now();
        match &mut self.resume {
            Some(r) => {
                r.lost_at.get_or_insert(now);
            }
            None => self.begin_resume(why, Some(now)),
        }
        self.status(&format!("connection lost ({why}); reconnecting"));
        true
    }

    /// Starts replacing the transport; `lost_at` None keeps the old one
    /// running meanwhile.
    pub(super) fn begin_resume(&mut self, why: &str, lost_at: Option<Instant>) {
        if !self.resilient() || self.resume.is_some() {
            return;
        }
        let now = Instant::now();
        let detach = Duration::from_secs(self.conn.peer_detach_timeout().unwrap_or(0) as u64);
        crate::debug1!("reconnecting: {why}");
        self.resume = Some(Resume {
            lost_at,
            started: now,
            deadline: now + detach,
            next_try: now,
            backoff: BACKOFF_FIRST,
            attempts: 0,
            refusals: 0,
            attempt: None,
            why: why.to_string(),
        });
    }

    /// A one-line status for interactive sessions; -v logs otherwise.
    pub(super) fn status(&self, text: &str) {
        if self.raw.is_some() {
            crate::log::raw_text(&format!("\r\n[ressh: {text}]\r\n"));
        } else {
            crate::verbose!("{text}");
        }
    }

    /// Work of one loop turn: triggers, attempts, deadlines.
    pub(super) fn resume_tick(&mut self, buf: &mut [u8]) {
        self.check_triggers();
        let Some(r) = self.resume.as_mut() else {
            return;
        };
        let now = Instant::now();
        if now >= r.deadline && r.lost_at.is_some() {
            let secs = r
                .lost_at
                .map(|t| now.duration_since(t).as_secs())
                .unwrap_or(0);
            self.conn.abort_reconnect();
            self.set_quit(fatal(format!(
                "ressh: connection to {} lost {secs} s ago and the server's detach timeout passed",
                self.cfg.host
            )));
            return;
        }
        if r.attempt.is_none() && now >= r.next_try {
            self.start_attempt();
        }
        self.drive_attempt(buf);
    }

    fn check_triggers(&mut self) {
        if !self.resilient() {
            return;
        }
        if self.sig.take_usr2() {
            self.begin_resume("SIGUSR2", None);
        }
        let now = Instant::now();
        if now >= self.watch.next_suspend_check {
            self.watch.next_suspend_check = now + Duration::from_secs(1);
            if self.watch.suspend.resumed() {
                self.begin_resume("resumed from suspend", None);
            }
        }
        if std::mem::take(&mut self.watch.netlink_ready) {
            let changed = self.watch.netlink.as_ref().is_some_and(|n| n.drain());
            if changed && self.resume.is_none() && !self.t_dead {
                // Only a change that affects our path counts: the source
                // address the kernel would now choose for the server.
                if let Some((local, peer)) = self.transport.tcp_addrs() {
                    let now_src = netwatch::preferred_source(peer);
                    if now_src != Some(local.ip()) {
                        self.begin_resume("route or address changed", None);
                    }
                } else {
                    // Through a proxy command we cannot tell: try anew.
                    self.begin_resume("network changed", None);
                }
            }
        }
    }

    pub(super) fn mark_resume(&mut self, t: Token, readable: bool, writable: bool) -> bool {
        match t {
            T_NETLINK => self.watch.netlink_ready = true,
            T_NEW_READ | T_NEW_WRITE => {
                if let Some(a) = self.resume.as_mut().and_then(|r| r.attempt.as_mut()) {
                    a.readable |= readable;
                    a.writable |= writable;
                }
            }
            _ => return false,
        }
        true
    }

    fn start_attempt(&mut self) {
        let r = self.resume.as_mut().expect("resume");
        r.attempts += 1;
        let n = r.attempts;
        crate::debug1!("reconnect attempt {n}");
        let mut transport = match transport::dial_nonblocking(&self.cfg, n - 1) {
            Ok(t) => t,
            Err(e) => {
                crate::debug1!("reconnect attempt {n}: {}", e.0);
                self.attempt_failed(false);
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
            self.attempt_failed(false);
            return;
        }
        if let Some(t) = self.keepalive() {
            transport.set_user_timeout(t * 2);
        }
        // The request goes with our first bytes once TCP has connected;
        // nothing is awaited first.
        self.resume.as_mut().expect("resume").attempt = Some(Attempt {
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
        let Some(a) = self.resume.as_mut().and_then(|r| r.attempt.as_mut()) else {
            return;
        };
        if a.started.elapsed() > ATTEMPT_TIMEOUT {
            crate::debug1!("reconnect attempt timed out");
            self.drop_attempt(false);
            return;
        }
        match Self::send_request(a) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                crate::debug1!("reconnect attempt: {e}");
                self.drop_attempt(false);
                return;
            }
        }
        let mut failed = false;
        while a.readable {
            match a.transport.read(buf) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => {
                    if let Err(e) = a.cr.handle_input(&buf[..n]) {
                        crate::debug1!("reconnect refused or failed: {e}");
                        failed = true;
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
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            let refused = a.cr.refused().is_some_and(|r| (1..=3).contains(&r.code));
            if let Some(r) = a.cr.refused() {
                crate::debug1!("{}", refusal_text(r));
            }
            self.drop_attempt(refused);
            return;
        }
        if a.cr.is_done() {
            self.finish_attempt();
        }
    }

    fn drop_attempt(&mut self, refused: bool) {
        if let Some(mut a) = self.resume.as_mut().and_then(|r| r.attempt.take()) {
            a.transport.deregister(self.poll.registry());
            a.transport.close();
        }
        self.conn.abort_reconnect();
        self.attempt_failed(refused);
    }

    fn attempt_failed(&mut self, refused: bool) {
        let Some(r) = self.resume.as_mut() else {
            return;
        };
        if refused {
            r.refusals += 1;
            if r.refusals >= REFUSALS_BELIEVED {
                let why = r.why.clone();
                self.set_quit(fatal(format!(
                    "ressh: the server no longer knows this session (after: {why})"
                )));
                return;
            }
        }
        let now = Instant::now();
        r.next_try = now + r.backoff;
        r.backoff = (r.backoff * 2).min(BACKOFF_MAX);
        if r.lost_at.is_none() && r.attempts >= 3 {
            // The old transport still works and the new path does not:
            // keep the old one and stop trying.
            crate::debug1!("keeping the current connection");
            self.resume = None;
            return;
        }
        if self.raw.is_some() {
            let secs = r
                .lost_at
                .map(|t| now.duration_since(t).as_secs())
                .unwrap_or(0);
            let next = r.backoff.as_millis() as f64 / 2000.0;
            crate::log::raw_text(&format!(
                "\r[ressh: disconnected {secs} s; attempt {} failed, next in {next:.1} s]\x1b[K",
                r.attempts
            ));
        }
    }

    fn finish_attempt(&mut self) {
        let r = self.resume.take().expect("resume");
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
        self.transport.deregister(self.poll.registry());
        self.transport.close();
        transport.deregister(self.poll.registry());
        if let Err(e) = transport.register(self.poll.registry(), T_READ, T_WRITE) {
            self.set_quit(fatal(format!("ressh: {e}")));
            return;
        }
        self.transport = transport;
        self.t_dead = false;
        self.t_read = true;
        self.t_write = true;
        self.last_recv = now;
        let took = now.duration_since(r.lost_at.unwrap_or(r.started));
        let text = format!(
            "reconnected to {} after {:.1} s ({})",
            self.cfg.host,
            took.as_secs_f64(),
            r.why
        );
        if self.raw.is_some() {
            crate::log::raw_text(&format!("\r[ressh: {text}]\x1b[K\r\n"));
        } else {
            crate::verbose!("{text}");
        }
        self.drain_events();
    }

    /// The interval of resilience keepalives (ServerAliveInterval, else 15 s).
    pub(super) fn keepalive(&self) -> Option<Duration> {
        Some(Duration::from_secs(if self.cfg.server_alive_interval > 0 {
            self.cfg.server_alive_interval
        } else {
            15
        }))
    }

    /// When the resume machinery needs the loop to wake up.
    pub(super) fn resume_timeout(&self) -> Option<Instant> {
        let mut t = Some(self.watch.next_suspend_check);
        if let Some(r) = &self.resume {
            let x = match &r.attempt {
                Some(a) => a.started + ATTEMPT_TIMEOUT,
                None => r.next_try,
            };
            t = t.map(|t| t.min(x)).or(Some(x));
            if r.lost_at.is_some() {
                t = t.map(|t| t.min(r.deadline));
            }
        }
        t
    }
}

/// Writes a few hundred bytes to a fresh transport (its buffer is empty).
/// The server's RECONNECT_FAILURE (or DISCONNECT) for the log. It is sent
/// in clear and unauthenticated: its text is shown with control characters
/// (and anything else not printable ASCII) escaped, and cut at 256 bytes.
fn refusal_text(r: &ressh_proto::Refused) -> String {
    format!(
        "server refused the reconnect: {} ({})",
        ressh_proto::wire::printable(r.description.as_bytes()),
        r.code
    )
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_text_escapes_control_characters() {
        let r = ressh_proto::Refused {
            code: 1,
            description: "gone\x1b]0;owned\x07\r\n\x1b[2J".into(),
        };
        let t = refusal_text(&r);
        assert!(!t.chars().any(|c| c.is_control()), "{t:?}");
        assert!(t.contains("gone\\x1b]0;owned\\x07"), "{t:?}");
        assert!(t.ends_with("(1)"), "{t:?}");
    }
}
