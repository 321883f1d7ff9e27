//! When to try reconnecting again, and when to stop (sans-IO: the caller
//! passes the clock and the randomness in).
//!
//! The schedule backs off exponentially with full jitter, so that many
//! clients cut off at the same instant (an office's uplink, a server's
//! reload) do not come back in lockstep: the first attempt goes within
//! [`FIRST_SPREAD`] of noticing the loss (the design target is data
//! flowing again within two round trips), later ones wait a uniformly
//! random time up to a ceiling that doubles from [`BASE`] to [`CAP`].
//!
//! The give-up rule trusts nothing the server says before a reconnect
//! exchange has completed: SSH_MSG_RECONNECT_FAILURE is sent in clear and
//! unauthenticated (PROTOCOL.md §5), and a server that has just been
//! reloaded, is overloaded or lost its broker says "unknown session" for a
//! session that still exists. So the session ends only once the server
//! itself would have ended it: when the transport has been lost for longer
//! than the detach timeout the server announced, plus [`MARGIN`].

use std::time::{Duration, Instant};

/// The first attempt after noticing a loss waits up to this long.
pub const FIRST_SPREAD: Duration = Duration::from_millis(20);
/// The ceiling of the second attempt's wait; it doubles for each later one.
pub const BASE: Duration = Duration::from_millis(100);
/// No wait is longer than this.
pub const CAP: Duration = Duration::from_secs(5);
/// No wait is shorter than this (after the first): a server that refuses
/// at once is not hammered.
pub const FLOOR: Duration = Duration::from_millis(10);
/// Added to the server's detach timeout before giving up: the server
/// starts its clock when it notices the loss, which may be after we did.
pub const MARGIN: Duration = Duration::from_secs(10);

/// Exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Waits handed out so far.
    n: u32,
    rng: SplitMix64,
}

impl Schedule {
    pub fn new(seed: u64) -> Schedule {
        Schedule {
            n: 0,
            rng: SplitMix64(seed),
        }
    }

    /// The upper bound of wait number `n` (0: before the first attempt).
    pub fn ceiling(n: u32) -> Duration {
        if n == 0 {
            return FIRST_SPREAD;
        }
        let shift = (n - 1).min(16);
        BASE.saturating_mul(1 << shift).min(CAP)
    }

    /// The lower bound of wait number `n`.
    pub fn floor(n: u32) -> Duration {
        if n == 0 {
            Duration::ZERO
        } else {
            FLOOR
        }
    }

    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let n = self.n;
        self.n = self.n.saturating_add(1);
        let lo = Self::floor(n).as_micros() as u64;
        let hi = Self::ceiling(n).as_micros() as u64;
        Duration::from_micros(lo + self.rng.below(hi - lo + 1))
    }

    /// Starts over: the next wait is a first one again (a new loss, or the
    /// user asked to retry now).
    pub fn reset(&mut self) {
        self.n = 0;
    }
}

/// A seed for [`Schedule`]: from the OS, else from the clock and pid.
pub fn seed() -> u64 {
    let mut b = [0u8; 8];
    if openssl::rand::rand_bytes(&mut b).is_ok() {
        return u64::from_le_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

/// The give-up rule: the deadline after which the server no longer keeps
/// the session. `lost_at` None: the old transport still works, and nothing
/// ends the session.
pub fn deadline(lost_at: Option<Instant>, detach_timeout_secs: u32) -> Option<Instant> {
    lost_at.map(|t| t + Duration::from_secs(u64::from(detach_timeout_secs)) + MARGIN)
}

/// Whether to give the session up at `now`. Refusals by the server are
/// deliberately not an input: none of them is authenticated.
pub fn give_up(lost_at: Option<Instant>, detach_timeout_secs: u32, now: Instant) -> bool {
    deadline(lost_at, detach_timeout_secs).is_some_and(|d| now >= d)
}

/// What a failed attempt ran into, for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer from the server's SSH layer: TCP, proxy, timeout.
    Connection(String),
    /// SSH_MSG_RECONNECT_FAILURE (or a DISCONNECT, code 0); unauthenticated.
    Refused { code: u32, description: String },
}

impl Failure {
    /// A line for the user; the server's text is untrusted and gets its
    /// control characters escaped.
    pub fn describe(&self) -> String {
        use ressh_proto::resilience::failure;
        match self {
            Failure::Connection(e) => ressh_proto::wire::printable(e.as_bytes()),
            Failure::Refused { code, description } => {
                let what = match *code {
                    failure::TRY_AGAIN => "server busy",
                    failure::UNKNOWN_SESSION => "server says it does not know the session",
                    failure::AUTHENTICATION_FAILED => "server says the reconnect did not verify",
                    failure::NOT_ALLOWED => "server refuses this address",
                    _ => "server refused",
                };
                format!(
                    "{what}: \"{}\" (code {code}, unauthenticated)",
                    ressh_proto::wire::printable(description.as_bytes())
                )
            }
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast, and good enough to
/// spread reconnects; nothing secret depends on it.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0), by rejection (no modulo bias).
    fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next();
            if x < zone {
                return x % n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_wait_is_short_and_later_ones_stay_within_their_bounds() {
        for seed in 0..200 {
            let mut s = Schedule::new(seed);
            for n in 0..40 {
                let d = s.next_delay();
                assert!(d <= Schedule::ceiling(n), "seed {seed} n {n}: {d:?}");
                assert!(d >= Schedule::floor(n), "seed {seed} n {n}: {d:?}");
                assert!(d <= CAP);
                if n == 0 {
                    assert!(d <= Duration::from_millis(20));
                }
            }
        }
    }

    #[test]
    fn ceiling_doubles_then_stays_at_the_cap() {
        let c: Vec<Duration> = (0..60).map(Schedule::ceiling).collect();
        assert_eq!(c[0], FIRST_SPREAD);
        assert_eq!(c[1], BASE);
        assert_eq!(c[2], BASE * 2);
        assert_eq!(c[3], BASE * 4);
        for w in c.windows(2) {
            assert!(w[1] >= w[0], "ceiling went down: {w:?}");
        }
        assert!(c.iter().all(|&d| d <= CAP));
        assert_eq!(c[59], CAP);
        // It reaches the cap within a handful of attempts (a few seconds
        // of waiting), not after minutes.
        let first_at_cap = c.iter().position(|&d| d == CAP).unwrap();
        assert!(first_at_cap <= 8, "{first_at_cap}");
        let waited: Duration = c[..first_at_cap].iter().sum();
        assert!(waited < Duration::from_secs(10), "{waited:?}");
        assert_eq!(Schedule::ceiling(u32::MAX), CAP);
    }

    /// A thousand clients cut off at once do not come back in lockstep:
    /// their waits spread over the whole interval.
    #[test]
    fn clients_spread_over_each_interval() {
        let clients: Vec<Schedule> = (0..1000u64)
            .map(|i| Schedule::new(i.wrapping_mul(0x2545_f491_4f6c_dd1d)))
            .collect();
        for n in 0..8u32 {
            let mut waits: Vec<Duration> = clients
                .iter()
                .map(|c| {
                    let mut c = c.clone();
                    for _ in 0..n {
                        c.next_delay();
                    }
                    c.next_delay()
                })
                .collect();
            waits.sort();
            let lo = Schedule::floor(n).as_secs_f64();
            let hi = Schedule::ceiling(n).as_secs_f64();
            let width = hi - lo;
            // Ten equal buckets each get about a tenth (uniform).
            let mut buckets = [0usize; 10];
            for w in &waits {
                let x = (w.as_secs_f64() - lo) / width;
                buckets[((x * 10.0) as usize).min(9)] += 1;
            }
            for (i, b) in buckets.iter().enumerate() {
                assert!((50..=150).contains(b), "n {n} bucket {i}: {buckets:?}");
            }
            // No instant gets more than a handful of them.
            let mut same = 1;
            for w in waits.windows(2) {
                same = if w[0] == w[1] { same + 1 } else { 1 };
                assert!(same <= 3, "n {n}: {same} clients wait exactly {:?}", w[0]);
            }
        }
    }

    #[test]
    fn reset_starts_over_and_seeds_differ() {
        let mut s = Schedule::new(7);
        for _ in 0..10 {
            s.next_delay();
        }
        assert!(s.clone().next_delay() >= FLOOR);
        s.reset();
        assert!(s.next_delay() <= FIRST_SPREAD);
        let a: Vec<_> = {
            let mut s = Schedule::new(1);
            (0..10).map(|_| s.next_delay()).collect()
        };
        let b: Vec<_> = {
            let mut s = Schedule::new(2);
            (0..10).map(|_| s.next_delay()).collect()
        };
        assert_ne!(a, b);
        assert_ne!(seed(), seed());
    }

    #[test]
    fn gives_up_only_after_the_detach_timeout_and_margin() {
        let t0 = Instant::now();
        // The old transport still works: never.
        assert!(!give_up(None, 0, t0 + Duration::from_secs(86_400)));
        assert_eq!(deadline(None, 300), None);
        // Lost: not before detach timeout + margin, then yes.
        let lost = Some(t0);
        assert!(!give_up(lost, 300, t0));
        assert!(!give_up(lost, 300, t0 + Duration::from_secs(300)));
        assert!(!give_up(
            lost,
            300,
            t0 + Duration::from_secs(300) + MARGIN - Duration::from_millis(1)
        ));
        assert!(give_up(lost, 300, t0 + Duration::from_secs(300) + MARGIN));
        // A server that keeps nothing (0): only the margin.
        assert!(!give_up(lost, 0, t0 + Duration::from_secs(1)));
        assert!(give_up(lost, 0, t0 + MARGIN));
        // The largest timeout does not overflow.
        assert!(deadline(lost, u32::MAX).is_some());
    }

    #[test]
    fn server_text_is_made_printable() {
        let f = Failure::Refused {
            code: 1,
            description: "unknown\x1b]0;owned\x07 session\r\n".into(),
        };
        let s = f.describe();
        assert!(!s.chars().any(|c| c.is_control()), "{s:?}");
        assert!(s.contains("does not know the session"), "{s}");
        assert!(s.contains("unauthenticated"), "{s}");
        let f = Failure::Refused {
            code: 4,
            description: "busy".into(),
        };
        assert!(f.describe().starts_with("server busy"), "{}", f.describe());
        let f = Failure::Connection("Connection refused\x1b[2J".into());
        assert!(!f.describe().chars().any(|c| c.is_control()));
    }
}
