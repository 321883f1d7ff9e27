//! Admission of new connections: MaxStartups, PerSourceMaxStartups and a
//! budget of its own for reconnects (issue 24: a mass reconnect is not a
//! flood).
//!
//! Sans-IO: resshd's accept loop asks [`Startups::admit`] about each new
//! connection and tells the table what becomes of the monitors it forked
//! ([`Startups::routed`], [`Startups::done`]); [`Startups::tick`] runs the
//! one timer.
//!
//! Every connection not yet authenticated is in one of two classes:
//! - a *startup*: counts against MaxStartups (sshd's start:rate:full random
//!   early drop);
//! - a *reconnect*: a connection whose first bytes, already queued when it
//!   is accepted, are a reconnect's first flight (a KEXINIT whose only key
//!   exchange is `resilience-v00@ressh.org`, [`claims_reconnect`]), or whose
//!   monitor's reconnect request the broker routed to a live session.
//!   Reconnects count against a budget of their own, as large as
//!   MaxStartups's `full`, so a flood of new connections does not starve
//!   them and a mass reconnect is not dropped as a flood. A claim is only a
//!   claim: one whose request the broker has not routed to a session within
//!   [`CLAIM_WINDOW`] counts as a startup from then on. When the reconnect
//!   budget is full, a claim is admitted as a startup (or dropped like one).
//!
//! PerSourceMaxStartups bounds both classes together per source netblock
//! (PerSourceNetBlockSize), as sshd counts all unauthenticated connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use ressh_monitor::config::Settings;

/// A connection admitted as a reconnect whose request has not reached a
/// session within this long counts as a startup from then on. A real
/// reconnect sends its request with its first bytes.
pub const CLAIM_WINDOW: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Startup,
    /// `routed`: the broker gave its request to a live session.
    Reconnect {
        routed: bool,
    },
}

#[derive(Clone, Copy, Debug)]
struct Conn {
    class: Class,
    /// The source address masked to PerSourceNetBlockSize.
    block: IpAddr,
    since: Instant,
}

/// Why a connection is dropped at accept.
#[derive(Debug, PartialEq, Eq)]
pub enum Drop {
    /// MaxStartups; `startups` not yet authenticated now.
    MaxStartups { startups: u32 },
    /// PerSourceMaxStartups: `count` from `block`/`bits` already.
    PerSource {
        startups: u32,
        count: u32,
        block: IpAddr,
        bits: u8,
    },
}

/// The limits, from the global settings.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub start: u32,
    pub rate: u32,
    pub full: u32,
    pub per_source: Option<u32>,
    pub v4_bits: u8,
    pub v6_bits: u8,
}

impl Limits {
    pub fn from(s: &Settings) -> Limits {
        Limits {
            start: s.max_startups.start,
            rate: s.max_startups.rate,
            full: s.max_startups.full,
            per_source: s.per_source_max_startups,
            v4_bits: s.per_source_net_block_size_v4,
            v6_bits: s.per_source_net_block_size_v6,
        }
    }

    /// How many reconnects may be in progress at once.
    pub fn reconnects(&self) -> u32 {
        self.full
    }
}

pub struct Startups {
    limits: Limits,
    conns: HashMap<Pid, Conn>,
}

/// `addr` with all but its first `bits` bits cleared (IPv4-mapped IPv6
/// addresses count as IPv4).
pub fn mask(addr: IpAddr, v4_bits: u8, v6_bits: u8) -> (IpAddr, u8) {
    let addr = match addr {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        a => a,
    };
    match addr {
        IpAddr::V4(a) => {
            let bits = v4_bits.min(32);
            let m = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            (IpAddr::V4((u32::from(a) & m).into()), bits)
        }
        IpAddr::V6(a) => {
            let bits = v6_bits.min(128);
            let m = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            (IpAddr::V6((u128::from(a) & m).into()), bits)
        }
    }
}

/// Whether `first` (the bytes already queued on a new connection, peeked
/// at) is a ressh reconnect's first flight: a version line, then a binary
/// packet holding a KEXINIT (20) whose kex_algorithms is exactly
/// `resilience-v00@ressh.org` (PROTOCOL.md §5). Only fixed offsets are
/// compared: nothing the peer sent sizes or steers anything here.
pub fn claims_reconnect(first: &[u8]) -> bool {
    let name = ressh_proto::resilience::NAME.as_bytes();
    let head = &first[..first.len().min(256)];
    let Some(eol) = head.iter().position(|&b| b == b'\n') else {
        return false;
    };
    if !first.starts_with(b"SSH-2.0-") {
        return false;
    }
    // uint32 packet_length, byte padding_length, byte KEXINIT, 16 cookie
    // bytes, uint32 length of kex_algorithms, the name list.
    let p = eol + 1;
    let list = p + 4 + 1 + 1 + 16;
    let Some(len) = first.get(list..list + 4) else {
        return false;
    };
    first.get(p + 5) == Some(&20)
        && len == (name.len() as u32).to_be_bytes()
        && first.get(list + 4..list + 4 + name.len()) == Some(name)
}

impl Startups {
    pub fn new(limits: Limits) -> Startups {
        Startups {
            limits,
            conns: HashMap::new(),
        }
    }

    /// Connections counted as startups (MaxStartups).
    pub fn startups(&self) -> u32 {
        self.count(|c| c.class == Class::Startup)
    }

    /// Connections counted as reconnects in progress.
    pub fn reconnects(&self) -> u32 {
        self.count(|c| c.class != Class::Startup)
    }

    fn count(&self, f: impl Fn(&Conn) -> bool) -> u32 {
        self.conns.values().filter(|c| f(c)).count() as u32
    }

    /// Decides about a new connection from `peer`; `claim`: its first bytes
    /// are a reconnect's ([`claims_reconnect`]); `r`: a uniformly random
    /// number below 10,000 for the random early drop. Ok: the class to
    /// admit it as ([`Startups::add`] once forked).
    pub fn admit(&self, peer: IpAddr, claim: bool, r: u32) -> Result<Class, Drop> {
        let l = &self.limits;
        let startups = self.startups();
        if let Some(max) = l.per_source {
            let (block, bits) = mask(peer, l.v4_bits, l.v6_bits);
            let count = self.count(|c| c.block == block);
            if count >= max {
                return Err(Drop::PerSource {
                    startups,
                    count,
                    block,
                    bits,
                });
            }
        }
        if claim && self.reconnects() < l.reconnects() {
            return Ok(Class::Reconnect { routed: false });
        }
        if random_early_drop(l, startups, r) {
            return Err(Drop::MaxStartups { startups });
        }
        Ok(Class::Startup)
    }

    /// A connection admitted as `class` was forked to monitor `pid`.
    pub fn add(&mut self, pid: Pid, peer: IpAddr, class: Class, now: Instant) {
        let (block, _) = mask(peer, self.limits.v4_bits, self.limits.v6_bits);
        self.conns.insert(
            pid,
            Conn {
                class,
                block,
                since: now,
            },
        );
    }

    /// The broker routed `pid`'s reconnect request to a live session: it is
    /// a reconnect, no longer a startup.
    pub fn routed(&mut self, pid: Pid) {
        if let Some(c) = self.conns.get_mut(&pid) {
            c.class = Class::Reconnect { routed: true };
        }
    }

    /// `pid` authenticated, exited or lost its link: it no longer counts.
    pub fn done(&mut self, pid: Pid) {
        self.conns.remove(&pid);
    }

    /// Claims not routed within [`CLAIM_WINDOW`] become startups.
    pub fn tick(&mut self, now: Instant) {
        for c in self.conns.values_mut() {
            if c.class == (Class::Reconnect { routed: false })
                && now.saturating_duration_since(c.since) >= CLAIM_WINDOW
            {
                c.class = Class::Startup;
            }
        }
    }

    /// When [`Startups::tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter(|c| c.class == (Class::Reconnect { routed: false }))
            .map(|c| c.since + CLAIM_WINDOW)
            .min()
    }
}

/// sshd's MaxStartups start:rate:full random early drop; `r` below 10,000.
fn random_early_drop(l: &Limits, startups: u32, r: u32) -> bool {
    if startups >= l.full {
        return true;
    }
    if startups < l.start {
        return false;
    }
    let p = l.rate as u64 * 100
        + (100 - l.rate.min(100) as u64) * 100 * (startups - l.start) as u64
            / (l.full - l.start).max(1) as u64;
    (r as u64) < p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_source: Option<u32>) -> Limits {
        Limits {
            start: 10,
            rate: 30,
            full: 100,
            per_source,
            v4_bits: 32,
            v6_bits: 128,
        }
    }

    fn pid(n: i32) -> Pid {
        Pid::from_raw(n)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A reconnect's first flight as ressh sends it.
    fn flight(kex: &str) -> Vec<u8> {
        let mut v = b"SSH-2.0-ressh_0.1\r\n".to_vec();
        let mut payload = vec![20u8];
        payload.extend_from_slice(&[7; 16]);
        payload.extend_from_slice(&(kex.len() as u32).to_be_bytes());
        payload.extend_from_slice(kex.as_bytes());
        payload.extend_from_slice(&[0; 40]);
        v.extend_from_slice(&((payload.len() + 5) as u32).to_be_bytes());
        v.push(4);
        v.extend_from_slice(&payload);
        v.extend_from_slice(&[0; 4]);
        v
    }

    #[test]
    fn only_a_reconnects_first_flight_claims_a_reconnect() {
        assert!(claims_reconnect(&flight("resilience-v00@ressh.org")));
        // A new login that offers the extension among its key exchanges.
        assert!(!claims_reconnect(&flight(
            "curve25519-sha256,resilience-v00@ressh.org"
        )));
        assert!(!claims_reconnect(&flight("resilience-v00@ressh.orx")));
        let f = flight("resilience-v00@ressh.org");
        for n in 0..f.len() - 45 {
            assert!(!claims_reconnect(&f[..n]), "a prefix of {n} bytes");
        }
        assert!(!claims_reconnect(b"GET / HTTP/1.1\r\n"));
        assert!(!claims_reconnect(&[]));
    }

    #[test]
    fn a_flood_fills_maxstartups_and_reconnects_still_get_in() {
        let mut s = Startups::new(limits(None));
        let t0 = Instant::now();
        // A flood holds every startup slot: new logins are dropped.
        for p in 0..100 {
            assert_eq!(s.admit(ip("198.18.9.9"), false, 9_999), Ok(Class::Startup));
            s.add(pid(p), ip("198.18.9.9"), Class::Startup, t0);
        }
        assert_eq!(
            s.admit(ip("198.18.1.2"), false, 9_999),
            Err(Drop::MaxStartups { startups: 100 })
        );
        // Reconnects have their own budget of `full`.
        for p in 100..200 {
            let c = s.admit(ip("198.18.1.2"), true, 0).unwrap();
            assert_eq!(c, Class::Reconnect { routed: false });
            s.add(pid(p), ip("198.18.1.2"), c, t0);
        }
        assert_eq!(s.reconnects(), 100);
        // Past it, a claim is treated as a startup: dropped here.
        assert!(s.admit(ip("198.18.1.2"), true, 0).is_err());
        // Finished reconnects free their places.
        for p in 100..150 {
            s.done(pid(p));
        }
        assert!(s.admit(ip("198.18.1.2"), true, 0).is_ok());
    }

    #[test]
    fn a_claim_that_routes_nothing_becomes_a_startup() {
        let mut s = Startups::new(limits(None));
        let t0 = Instant::now();
        s.add(
            pid(1),
            ip("198.18.1.2"),
            Class::Reconnect { routed: false },
            t0,
        );
        s.add(
            pid(2),
            ip("198.18.1.2"),
            Class::Reconnect { routed: false },
            t0,
        );
        s.routed(pid(2));
        assert_eq!(s.next_deadline(), Some(t0 + CLAIM_WINDOW));
        s.tick(t0 + CLAIM_WINDOW - Duration::from_millis(1));
        assert_eq!((s.startups(), s.reconnects()), (0, 2));
        s.tick(t0 + CLAIM_WINDOW);
        assert_eq!((s.startups(), s.reconnects()), (1, 1));
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn a_startup_whose_request_is_routed_stops_counting_as_one() {
        let mut s = Startups::new(limits(None));
        let t0 = Instant::now();
        for p in 0..100 {
            s.add(pid(p), ip("198.18.1.2"), Class::Startup, t0);
        }
        assert!(s.admit(ip("198.18.1.3"), false, 9_999).is_err());
        s.routed(pid(5));
        assert_eq!((s.startups(), s.reconnects()), (99, 1));
        assert_eq!(s.admit(ip("198.18.1.3"), false, 9_999), Ok(Class::Startup));
    }

    #[test]
    fn random_early_drop_as_sshd() {
        let l = limits(None);
        assert!(!random_early_drop(&l, 9, 0));
        // At start: rate 30%.
        assert!(random_early_drop(&l, 10, 2_999));
        assert!(!random_early_drop(&l, 10, 3_000));
        // Halfway to full: 65%.
        assert!(random_early_drop(&l, 55, 6_499));
        assert!(!random_early_drop(&l, 55, 6_500));
        assert!(random_early_drop(&l, 100, 9_999));
    }

    #[test]
    fn per_source_limit_counts_the_netblock_of_both_classes() {
        let mut l = limits(Some(3));
        l.v4_bits = 24;
        let mut s = Startups::new(l);
        let t0 = Instant::now();
        s.add(pid(1), ip("127.0.0.2"), Class::Startup, t0);
        s.add(
            pid(2),
            ip("127.0.0.9"),
            Class::Reconnect { routed: true },
            t0,
        );
        s.add(pid(3), ip("127.0.0.2"), Class::Startup, t0);
        let err = s.admit(ip("127.0.0.200"), true, 0).unwrap_err();
        assert_eq!(
            err,
            Drop::PerSource {
                startups: 2,
                count: 3,
                block: ip("127.0.0.0"),
                bits: 24
            }
        );
        // Another block is unaffected.
        assert!(s.admit(ip("127.0.1.2"), false, 0).is_ok());
        s.done(pid(2));
        assert!(s.admit(ip("127.0.0.200"), false, 0).is_ok());
        // IPv6, and IPv4-mapped addresses as IPv4.
        assert_eq!(mask(ip("2001:db8::1:2"), 32, 64), (ip("2001:db8::"), 64));
        assert_eq!(mask(ip("::ffff:10.1.2.3"), 8, 128), (ip("10.0.0.0"), 8));
        assert_eq!(mask(ip("10.1.2.3"), 0, 128), (ip("0.0.0.0"), 0));
    }
}
