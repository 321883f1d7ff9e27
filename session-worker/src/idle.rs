//! ChannelTimeout and UnusedConnectionTimeout (sshd_config(5)): a channel
//! without traffic for its type's timeout is closed; a connection without
//! any channel for the unused-connection timeout is ended.
//!
//! A channel's type is what sshd calls it: `session` until the session
//! runs something, then `session:shell`, `session:command` or
//! `session:subsystem:NAME`; `direct-tcpip`, `direct-streamlocal@openssh.com`
//! and the others by their channel type. The first ChannelTimeout pattern
//! that matches the type gives its timeout, as in sshd. Traffic is data in
//! either direction. Listeners (remote forwards) are not channels: a
//! connection with only listeners is unused, as in sshd.
//!
//! Time spent detached (the transport lost, waiting for a reconnect) does
//! not count: both clocks restart when the session reattaches. A lost
//! transport is the resilience extension's business (DetachTimeout), not
//! an idle user's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ressh_compat::pattern::match_pattern;

/// What the policy asks.
pub struct Idle {
    /// (type pattern, timeout), first match wins.
    channel_timeouts: Vec<(String, Duration)>,
    unused: Option<Duration>,
    chans: HashMap<u32, Chan>,
    /// Since when no channel has been open (Some only without channels).
    unused_since: Option<Instant>,
}

struct Chan {
    timeout: Option<Duration>,
    last: Instant,
}

/// What timed out at a given moment.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expired {
    /// Channels to close, with their type's timeout.
    pub channels: Vec<(u32, Duration)>,
    /// The connection has been unused for the timeout.
    pub connection: bool,
}

impl Idle {
    pub fn new(
        channel_timeouts: Vec<(String, Duration)>,
        unused: Option<Duration>,
        now: Instant,
    ) -> Idle {
        Idle {
            channel_timeouts,
            unused,
            chans: HashMap::new(),
            unused_since: Some(now),
        }
    }

    fn lookup(&self, kind: &str) -> Option<Duration> {
        self.channel_timeouts
            .iter()
            .find(|(p, _)| match_pattern(kind, p))
            .map(|(_, t)| *t)
            .filter(|t| !t.is_zero())
    }

    /// Channel `id` of type `kind` opened (or changed its type).
    pub fn typed(&mut self, id: u32, kind: &str, now: Instant) {
        let timeout = self.lookup(kind);
        self.chans.insert(id, Chan { timeout, last: now });
        self.unused_since = None;
    }

    /// Traffic on channel `id`.
    pub fn active(&mut self, id: u32, now: Instant) {
        if let Some(c) = self.chans.get_mut(&id) {
            c.last = now;
        }
    }

    /// Channel `id` is gone.
    pub fn closed(&mut self, id: u32, now: Instant) {
        if self.chans.remove(&id).is_some() && self.chans.is_empty() {
            self.unused_since = Some(now);
        }
    }

    /// The session reattached: the clocks restart.
    pub fn restart(&mut self, now: Instant) {
        for c in self.chans.values_mut() {
            c.last = now;
        }
        if self.unused_since.is_some() {
            self.unused_since = Some(now);
        }
    }

    /// The next moment something may time out.
    pub fn deadline(&self) -> Option<Instant> {
        let chans = self
            .chans
            .values()
            .filter_map(|c| c.timeout.map(|t| c.last + t));
        let unused = self.unused_since.zip(self.unused).map(|(s, t)| s + t);
        chans.chain(unused).min()
    }

    /// What has timed out by `now`; the channels named are forgotten.
    pub fn expired(&mut self, now: Instant) -> Expired {
        let mut out = Expired::default();
        for (id, c) in &self.chans {
            if let Some(t) = c.timeout.filter(|t| c.last + *t <= now) {
                out.channels.push((*id, t));
            }
        }
        out.channels.sort_unstable();
        for (id, _) in &out.channels {
            self.chans.remove(id);
        }
        if !out.channels.is_empty() && self.chans.is_empty() {
            self.unused_since = Some(now);
        }
        out.connection = self
            .unused_since
            .zip(self.unused)
            .is_some_and(|(s, t)| s + t <= now);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn first_matching_pattern_and_traffic() {
        let t0 = Instant::now();
        let mut i = Idle::new(
            vec![
                ("session:command".into(), secs(1)),
                ("session:*".into(), secs(5)),
                ("direct-tcpip".into(), secs(0)),
            ],
            None,
            t0,
        );
        i.typed(0, "session", t0);
        i.typed(1, "session", t0);
        i.typed(2, "direct-tcpip", t0);
        // A bare "session" matches neither pattern: no timeout until it runs something.
        assert_eq!(i.deadline(), None);
        i.typed(0, "session:command", t0);
        i.typed(1, "session:shell", t0);
        assert_eq!(i.deadline(), Some(t0 + secs(1)));
        i.active(0, t0 + secs(1) - Duration::from_millis(1));
        assert_eq!(i.expired(t0 + secs(1)), Expired::default());
        let e = i.expired(t0 + secs(5));
        assert_eq!(e.channels, vec![(0, secs(1)), (1, secs(5))]);
        assert!(!e.connection);
        // "=0" (and none given): never.
        assert_eq!(i.deadline(), None);
    }

    #[test]
    fn unused_connection_counts_only_without_channels() {
        let t0 = Instant::now();
        let mut i = Idle::new(Vec::new(), Some(secs(2)), t0);
        assert_eq!(i.deadline(), Some(t0 + secs(2)));
        i.typed(7, "session", t0 + secs(1));
        assert_eq!(i.deadline(), None);
        assert!(!i.expired(t0 + secs(10)).connection);
        i.closed(7, t0 + secs(10));
        assert!(!i.expired(t0 + secs(11)).connection);
        // Detached meanwhile: the clock restarts at the reattach.
        i.restart(t0 + secs(30));
        assert!(!i.expired(t0 + secs(31)).connection);
        assert!(i.expired(t0 + secs(32)).connection);
    }
}
