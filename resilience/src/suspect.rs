//! Client: suspecting a silently dead path (docs/PROTOCOL.md §4, "Path
//! suspicion"; docs/restls.md §6). Sans-IO: every method takes the time
//! from the caller. Both extensions have the same tools: an ACK with "want
//! reply" that the server answers at once.
//!
//! The client measures the round trip from each want-reply ACK to the next
//! ACK it receives and keeps a
//! smoothed estimate as TCP does (RFC 6298). It probes (a want-reply ACK)
//! when a resilient message it sent has had no answer of any kind for the
//! suspicion timeout S, or when the server's traffic stopped for S after it
//! had sent something (once per silence), besides the idle keepalive probe.
//! A probe unanswered for S is a suspicion: the client may try a new
//! connection beside the old one. Hearing anything ends it.

use std::time::{Duration, Instant};

/// The suspicion timeout before any round trip was measured (RFC 6298's
/// initial retransmission timeout).
pub const INITIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// A measured round trip older than this is refreshed: the next ACK the
/// client sends anyway asks for a reply.
pub const RTT_REFRESH: Duration = Duration::from_secs(10);

/// RFC 6298 smoothed round-trip time and variation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rtt {
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl Rtt {
    /// Adds one measurement.
    pub fn sample(&mut self, r: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                let err = s.abs_diff(r);
                self.rttvar = self.rttvar * 3 / 4 + err / 4;
                self.srtt = Some(s * 7 / 8 + r / 8);
            }
        }
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// A few smoothed round trips: the larger of srtt + 4·rttvar and
    /// 3·srtt ([`INITIAL_TIMEOUT`] before any measurement), within
    /// `floor..=cap` (the cap wins if they cross).
    pub fn timeout(&self, floor: Duration, cap: Duration) -> Duration {
        let t = match self.srtt {
            None => INITIAL_TIMEOUT,
            Some(s) => (s + self.rttvar * 4).max(s * 3),
        };
        t.max(floor).min(cap)
    }
}

/// What the client watches on one connection to suspect its path.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    pub rtt: Rtt,
    /// A want-reply ACK whose answer will be a round-trip sample.
    rtt_probe: Option<Instant>,
    last_sample: Option<Instant>,
    /// The first resilient message sent since anything was received.
    await_since: Option<Instant>,
    /// The last resilient message received, until the silence after it
    /// has been probed.
    silence_from: Option<Instant>,
    /// When the outstanding probe becomes a suspicion (None: no probe, or
    /// reported already).
    suspect_at: Option<Instant>,
    /// The last ACK that acknowledged resilient messages of ours.
    progress_at: Option<Instant>,
}

impl Watch {
    /// Bytes arrived: whatever was awaited is answered.
    pub fn heard(&mut self) {
        self.await_since = None;
        self.suspect_at = None;
    }

    /// An ACK arrived: the answer to a want-reply ACK, if one is out.
    pub fn ack_received(&mut self, now: Instant, cap: Duration) {
        if let Some(t) = self.rtt_probe.take() {
            self.rtt.sample(now.saturating_duration_since(t).min(cap));
            self.last_sample = Some(now);
        }
    }

    /// An ACK acknowledged resilient messages of ours.
    pub fn progress(&mut self, now: Instant) {
        self.progress_at = Some(now);
    }

    pub fn progress_at(&self) -> Option<Instant> {
        self.progress_at
    }

    /// A resilient message arrived: the server is active.
    pub fn resilient_received(&mut self, now: Instant) {
        self.silence_from = Some(now);
    }

    /// A resilient message was sent; the server's answer (data, or at
    /// least an ACK) is awaited.
    pub fn resilient_sent(&mut self, now: Instant) {
        self.await_since.get_or_insert(now);
    }

    /// Whether an ACK sent now should ask for a reply to measure the
    /// round trip (none measured yet, or the last is old).
    pub fn wants_rtt(&self, now: Instant) -> bool {
        self.rtt_probe.is_none()
            && self
                .last_sample
                .is_none_or(|t| now.saturating_duration_since(t) >= RTT_REFRESH)
    }

    /// A want-reply ACK was sent at `now` (a probe when `s` is Some: it
    /// becomes a suspicion if nothing is heard for `s`).
    pub fn want_reply_sent(&mut self, now: Instant, s: Option<Duration>) {
        self.rtt_probe.get_or_insert(now);
        if let Some(s) = s {
            self.suspect_at = Some(now + s);
            self.await_since = None;
            self.silence_from = None;
        }
    }

    /// When a probe is due for want of an answer or for the server's
    /// silence, with suspicion timeout `s`.
    pub fn probe_due(&self, s: Duration) -> Option<Instant> {
        match (self.await_since, self.silence_from) {
            (Some(a), Some(b)) => Some(a.min(b) + s),
            (Some(a), None) | (None, Some(a)) => Some(a + s),
            (None, None) => None,
        }
    }

    /// When the outstanding probe becomes a suspicion.
    pub fn suspect_due(&self) -> Option<Instant> {
        self.suspect_at
    }

    /// Takes the suspicion if it is due at `now` (reported once per probe).
    pub fn take_suspicion(&mut self, now: Instant) -> bool {
        if self.suspect_at.is_some_and(|t| now >= t) {
            self.suspect_at = None;
            return true;
        }
        false
    }

    /// The path is known to carry our bytes: suspect at `at`, not before.
    pub fn rearm(&mut self, at: Instant) {
        self.suspect_at = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const FLOOR: Duration = Duration::from_millis(500);
    const CAP: Duration = Duration::from_secs(15);

    #[test]
    fn rtt_follows_rfc_6298() {
        let mut r = Rtt::default();
        assert_eq!(r.timeout(FLOOR, CAP), INITIAL_TIMEOUT);
        r.sample(100 * MS);
        assert_eq!(r.srtt(), Some(100 * MS));
        assert_eq!(r.rttvar(), 50 * MS);
        // srtt + 4 rttvar = 300 ms, 3 srtt = 300 ms: the floor wins.
        assert_eq!(r.timeout(FLOOR, CAP), FLOOR);
        r.sample(300 * MS);
        // rttvar = 3/4·50 + 1/4·200 = 87.5; srtt = 7/8·100 + 1/8·300 = 125.
        assert_eq!(r.srtt(), Some(125 * MS));
        assert_eq!(r.rttvar(), Duration::from_micros(87_500));
        assert_eq!(r.timeout(FLOOR, CAP), Duration::from_millis(500));
        r.sample(2000 * MS);
        // srtt = 359.375 ms, rttvar = 3/4·87.5 + 1/4·1875 = 534.375 ms.
        assert_eq!(r.srtt(), Some(Duration::from_micros(359_375)));
        assert_eq!(
            r.timeout(FLOOR, CAP),
            Duration::from_micros(359_375 + 4 * 534_375)
        );
        // The cap wins over everything, the floor over small estimates.
        assert_eq!(
            r.timeout(FLOOR, Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        assert_eq!(r.timeout(CAP * 2, CAP), CAP);
        // A steady path converges to 3 srtt.
        for _ in 0..100 {
            r.sample(400 * MS);
        }
        let t = r.timeout(FLOOR, CAP);
        assert!(t > 1190 * MS && t < 1250 * MS, "{t:?}");
    }

    #[test]
    fn probe_after_unanswered_send_or_silence_then_suspicion_once() {
        let t0 = Instant::now();
        let s = FLOOR;
        let mut w = Watch::default();
        assert_eq!(w.probe_due(s), None);
        // Something sent and no answer: a probe at +S; sending more does
        // not move it.
        w.resilient_sent(t0);
        w.resilient_sent(t0 + 100 * MS);
        assert_eq!(w.probe_due(s), Some(t0 + s));
        // An answer: nothing is due.
        w.heard();
        assert_eq!(w.probe_due(s), None);
        // The server's data, then its silence: a probe S after the last.
        w.resilient_received(t0 + 200 * MS);
        w.resilient_received(t0 + 300 * MS);
        assert_eq!(w.probe_due(s), Some(t0 + 300 * MS + s));
        // The earlier of the two rules wins.
        w.resilient_sent(t0 + 400 * MS);
        assert_eq!(w.probe_due(s), Some(t0 + 300 * MS + s));
        let p = t0 + 800 * MS;
        w.want_reply_sent(p, Some(s));
        // One probe per silence: nothing more is due until the server
        // sends again.
        assert_eq!(w.probe_due(s), None);
        assert_eq!(w.suspect_due(), Some(p + s));
        assert!(!w.take_suspicion(p + s - MS));
        assert!(w.take_suspicion(p + s));
        assert!(!w.take_suspicion(p + s * 10), "reported once per probe");
        // The kernel says the path carries our bytes: again S from now.
        w.rearm(p + s * 3);
        assert!(w.take_suspicion(p + s * 3));
        // Hearing anything clears a pending suspicion.
        w.want_reply_sent(p + s * 4, Some(s));
        w.heard();
        assert!(!w.take_suspicion(p + s * 10));
    }

    #[test]
    fn round_trips_are_measured_from_want_reply_to_the_next_ack() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        assert!(w.wants_rtt(t0));
        // An ACK that answers nothing we asked: no sample.
        w.ack_received(t0, CAP);
        assert_eq!(w.rtt.srtt(), None);
        w.want_reply_sent(t0, None);
        assert!(!w.wants_rtt(t0), "one measurement at a time");
        // An RTT-only want-reply is no probe: no suspicion follows.
        assert_eq!(w.suspect_due(), None);
        w.ack_received(t0 + 80 * MS, CAP);
        assert_eq!(w.rtt.srtt(), Some(80 * MS));
        assert!(!w.wants_rtt(t0 + 80 * MS + RTT_REFRESH - MS));
        assert!(w.wants_rtt(t0 + 80 * MS + RTT_REFRESH));
        // A very late answer counts no more than the cap.
        w.want_reply_sent(t0 + RTT_REFRESH * 2, None);
        w.ack_received(t0 + RTT_REFRESH * 20, CAP);
        assert_eq!(w.rtt.srtt(), Some((80 * MS * 7 + CAP) / 8));
    }
}
