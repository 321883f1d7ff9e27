//! The broker's table: which monitor owns which session, and the routing of
//! a reconnect from the monitor of a new connection to the monitor that
//! owns the session (docs/ARCHITECTURE.md, reconnect path).
//!
//! Sans-IO: [`Broker::handle`] takes a message from a monitor's link and
//! returns what to send to which monitor; [`Broker::tick`] runs the timers.
//! resshd's event loop does the sending through a non-blocking
//! [`ressh_ipc::Outbox`] per link, so nothing here can wait on a monitor.
//!
//! What a monitor says is checked against the table: the first message of a
//! link must be [`ToBroker::Hello`] with this build's [`BROKER_VERSION`]; a
//! token already owned by another session is not taken over; a verdict or a
//! hand-over counts only from the monitor the route names. A fleet link
//! process (it speaks TLS with other nodes, confined, holding the link it
//! made as root) may only ask to route a reconnect and hand it over: it never
//! speaks for a session (a user, tokens, a detach).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use ressh_ipc::msg::{FromBroker, ToBroker, BROKER_VERSION};
use ressh_proto::resilience::failure;

/// After resshd (re)starts, monitors of running sessions register again
/// within about a second; until this much time has passed an unknown token
/// is answered TRY_AGAIN, not UNKNOWN_SESSION.
pub const FILLING: Duration = Duration::from_secs(5);

/// Reconnects of one session routed at once (the owning monitor queues
/// as many at its worker). One: with more, a flood of forged or replayed
/// requests on a saturated machine filled every slot as surely as one and
/// cost more (measured with 16; see `attacks::a_replay_flood_…`).
pub const ROUTES_PER_SESSION: usize = 1;

/// What a monitor said that the table refuses: its link is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("monitor speaks broker protocol {0}, this resshd {BROKER_VERSION}")]
    Version(u32),
    #[error("monitor of an older resshd (no Hello)")]
    NoHello,
    #[error("a second Hello")]
    SecondHello,
    #[error("authenticated twice")]
    AuthenticatedTwice,
    #[error("tokens before authentication")]
    TokensBeforeAuth,
    #[error("claims a token of monitor {0}")]
    ForeignToken(Pid),
    #[error("detached before authentication")]
    DetachedBeforeAuth,
    #[error("a session's monitor asked to route a reconnect")]
    RouteFromSession,
    #[error("a second route request")]
    SecondRoute,
    #[error("answered for route {0}, which it does not own")]
    NotOwner(u64),
    #[error("answered twice for route {0}")]
    AnsweredTwice(u64),
    #[error("handed over a socket nobody asked for")]
    UnaskedHandover,
    #[error("a hand-over without exactly one socket")]
    HandoverFds,
    #[error("a fleet link process spoke for a session")]
    FleetLinkSession,
}

/// Who is at the other end of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A connection's monitor: it may authenticate and own a session.
    Monitor,
    /// A fleet link process: it may only route a reconnect and hand it over.
    FleetLink,
}

/// A message for a monitor.
pub type Out = (Pid, FromBroker, Vec<OwnedFd>);

struct Link {
    peer: Peer,
    /// Said Hello with our version.
    greeted: bool,
    user: Option<String>,
    detached: Option<Detached>,
}

#[derive(Clone, Copy)]
struct Detached {
    since: Instant,
    max_per_user: u32,
    grace: Duration,
    /// Told to end already.
    ended: bool,
}

/// A reconnect in flight from the monitor of the new connection to the
/// monitor that owns the session.
#[derive(Clone, Copy)]
struct Route {
    requester: Pid,
    owner: Pid,
    /// The owner accepted; the requester is handing the socket over.
    accepted: bool,
}

pub struct Broker {
    started: Instant,
    links: HashMap<Pid, Link>,
    tokens: HashMap<Vec<u8>, Pid>,
    routes: HashMap<u64, Route>,
    next_id: u64,
}

fn refusal(code: u32, why: &str) -> FromBroker {
    FromBroker::RouteResult(Err((code, why.to_string())))
}

impl Broker {
    pub fn new(now: Instant) -> Broker {
        Broker {
            started: now,
            links: HashMap::new(),
            tokens: HashMap::new(),
            routes: HashMap::new(),
            next_id: 0,
        }
    }

    /// A monitor or a fleet link process linked to us.
    pub fn opened(&mut self, pid: Pid, peer: Peer) {
        self.links.insert(
            pid,
            Link {
                peer,
                greeted: false,
                user: None,
                detached: None,
            },
        );
    }

    /// A monitor's link closed (it exited) or was dropped. A reconnect
    /// waiting on that monitor's verdict is answered TRY_AGAIN at once (the
    /// client retries and then learns whether the session still exists).
    pub fn closed(&mut self, pid: Pid) -> Vec<Out> {
        self.links.remove(&pid);
        self.tokens.retain(|_, p| *p != pid);
        let mut out = Vec::new();
        self.routes.retain(|_, r| {
            if r.owner == pid && r.requester != pid && !r.accepted {
                out.push((
                    r.requester,
                    refusal(failure::TRY_AGAIN, "the session's monitor went away"),
                    Vec::new(),
                ));
            }
            r.requester != pid && r.owner != pid
        });
        out
    }

    /// Whether `pid`'s monitor has authenticated a user (it then no longer
    /// counts against MaxStartups).
    pub fn authenticated(&self, pid: Pid) -> bool {
        self.links.get(&pid).is_some_and(|l| l.user.is_some())
    }

    /// Whether `pid`'s monitor has a reconnect request routed to a live
    /// session (it is then a reconnect, no longer a startup).
    pub fn routing(&self, pid: Pid) -> bool {
        self.routes.values().any(|r| r.requester == pid)
    }

    /// Handles a message from `from`'s link. Err: a protocol violation;
    /// drop the link.
    pub fn handle(
        &mut self,
        from: Pid,
        m: ToBroker,
        fds: Vec<OwnedFd>,
        now: Instant,
    ) -> Result<Vec<Out>, Violation> {
        let Some(link) = self.links.get_mut(&from) else {
            return Err(Violation::NoHello);
        };
        if !link.greeted {
            return match m {
                ToBroker::Hello { version } if version == BROKER_VERSION => {
                    link.greeted = true;
                    Ok(Vec::new())
                }
                ToBroker::Hello { version } => Err(Violation::Version(version)),
                _ => Err(Violation::NoHello),
            };
        }
        if link.peer == Peer::FleetLink
            && !matches!(m, ToBroker::Route { .. } | ToBroker::Handover { .. })
        {
            return Err(Violation::FleetLinkSession);
        }
        let mut out = Vec::new();
        match m {
            ToBroker::Hello { .. } => return Err(Violation::SecondHello),
            ToBroker::Authenticated { user } => {
                if link.user.is_some() {
                    return Err(Violation::AuthenticatedTwice);
                }
                link.user = Some(user);
            }
            ToBroker::Tokens(tokens) => {
                if link.user.is_none() {
                    return Err(Violation::TokensBeforeAuth);
                }
                self.tokens.retain(|_, p| *p != from);
                for t in tokens {
                    match self.tokens.get(&t) {
                        Some(owner) if *owner != from => {
                            return Err(Violation::ForeignToken(*owner))
                        }
                        _ => {
                            self.tokens.insert(t, from);
                        }
                    }
                }
            }
            ToBroker::Attached => link.detached = None,
            ToBroker::Detached {
                max_per_user,
                grace_secs,
            } => {
                if link.user.is_none() {
                    return Err(Violation::DetachedBeforeAuth);
                }
                if link.detached.is_none() {
                    link.detached = Some(Detached {
                        since: now,
                        max_per_user,
                        grace: Duration::from_secs(grace_secs),
                        ended: false,
                    });
                }
                out.extend(self.tick(now));
            }
            ToBroker::Route { request, .. } if link.user.is_some() => {
                let _ = request;
                return Err(Violation::RouteFromSession);
            }
            ToBroker::Route {
                request,
                peer_addr,
                peer_port,
            } => {
                if self.routes.values().any(|r| r.requester == from) {
                    return Err(Violation::SecondRoute);
                }
                let owner = self.tokens.get(&request.request.token).copied();
                let reply = match owner {
                    Some(o)
                        if self.routes.values().filter(|r| r.owner == o).count()
                            >= ROUTES_PER_SESSION =>
                    {
                        refusal(
                            failure::TRY_AGAIN,
                            "too many reconnects of this session in progress",
                        )
                    }
                    Some(o) if o != from => {
                        self.next_id += 1;
                        let id = self.next_id;
                        self.routes.insert(
                            id,
                            Route {
                                requester: from,
                                owner: o,
                                accepted: false,
                            },
                        );
                        out.push((
                            o,
                            FromBroker::Validate {
                                id,
                                request,
                                peer_addr,
                                peer_port,
                            },
                            Vec::new(),
                        ));
                        return Ok(out);
                    }
                    _ if now.saturating_duration_since(self.started) < FILLING => refusal(
                        failure::TRY_AGAIN,
                        "resshd restarted; sessions are registering again",
                    ),
                    _ => refusal(failure::UNKNOWN_SESSION, "unknown session"),
                };
                out.push((from, reply, Vec::new()));
            }
            ToBroker::Verdict { id, result } => {
                let Some(route) = self.routes.get_mut(&id) else {
                    // The requester gave up meanwhile.
                    return Ok(out);
                };
                if route.owner != from {
                    return Err(Violation::NotOwner(id));
                }
                if route.accepted {
                    return Err(Violation::AnsweredTwice(id));
                }
                let requester = route.requester;
                if result.is_err() {
                    self.routes.remove(&id);
                } else {
                    route.accepted = true;
                }
                out.push((requester, FromBroker::RouteResult(result), Vec::new()));
            }
            ToBroker::Handover {
                leftover,
                peer_addr,
                peer_port,
            } => {
                let Some((&id, &route)) = self
                    .routes
                    .iter()
                    .find(|(_, r)| r.requester == from && r.accepted)
                else {
                    return Err(Violation::UnaskedHandover);
                };
                self.routes.remove(&id);
                let owner = route.owner;
                if fds.len() != 1 {
                    return Err(Violation::HandoverFds);
                }
                out.push((
                    owner,
                    FromBroker::Transport {
                        id,
                        leftover,
                        peer_addr,
                        peer_port,
                    },
                    fds,
                ));
            }
        }
        Ok(out)
    }

    /// MaxDetachedSessions: a session counts against its user's cap once it
    /// has been detached for longer than its grace period, so a network
    /// blip that cuts all of a user's connections at once ends none of
    /// them; past the cap, the sessions detached longest are ended.
    pub fn tick(&mut self, now: Instant) -> Vec<Out> {
        let mut counted: HashMap<&str, Vec<(Instant, Pid, u32)>> = HashMap::new();
        for (pid, l) in &self.links {
            let (Some(user), Some(d)) = (&l.user, &l.detached) else {
                continue;
            };
            if !d.ended && now.saturating_duration_since(d.since) >= d.grace {
                counted
                    .entry(user)
                    .or_default()
                    .push((d.since, *pid, d.max_per_user));
            }
        }
        let mut end = Vec::new();
        for (_, mut list) in counted {
            list.sort();
            // The cap of the newest detached session applies (Match blocks
            // may differ between a user's sessions).
            let cap = list.last().map_or(u32::MAX, |x| x.2) as usize;
            let over = list.len().saturating_sub(cap);
            end.extend(list.into_iter().take(over).map(|x| x.1));
        }
        end.into_iter()
            .map(|pid| {
                if let Some(d) = self.links.get_mut(&pid).and_then(|l| l.detached.as_mut()) {
                    d.ended = true;
                }
                (pid, FromBroker::Terminate, Vec::new())
            })
            .collect()
    }

    /// When [`Broker::tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.links
            .values()
            .filter_map(|l| l.detached.as_ref())
            .filter(|d| !d.ended)
            .map(|d| d.since + d.grace)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ressh_proto::ReconnectRequest;

    fn pid(n: i32) -> Pid {
        Pid::from_raw(n)
    }

    fn hello(b: &mut Broker, p: i32, t0: Instant) {
        greet(b, p, Peer::Monitor, t0);
    }

    fn greet(b: &mut Broker, p: i32, peer: Peer, t0: Instant) {
        b.opened(pid(p), peer);
        let v = ToBroker::Hello {
            version: BROKER_VERSION,
        };
        assert!(b.handle(pid(p), v, vec![], t0).unwrap().is_empty());
    }

    fn session(b: &mut Broker, p: i32, user: &str, token: u8, t0: Instant) {
        hello(b, p, t0);
        b.handle(
            pid(p),
            ToBroker::Authenticated { user: user.into() },
            vec![],
            t0,
        )
        .unwrap();
        b.handle(pid(p), ToBroker::Tokens(vec![vec![token; 32]]), vec![], t0)
            .unwrap();
    }

    fn route(token: u8) -> ToBroker {
        ToBroker::Route {
            request: Box::new(ReconnectRequest::for_tests(token)),
            peer_addr: "198.18.0.2".into(),
            peer_port: 4000,
        }
    }

    fn detached(max: u32, grace: u64) -> ToBroker {
        ToBroker::Detached {
            max_per_user: max,
            grace_secs: grace,
        }
    }

    #[test]
    fn links_must_greet_with_our_version() {
        let t0 = Instant::now();
        let mut b = Broker::new(t0);
        b.opened(pid(1), Peer::Monitor);
        let old = ToBroker::Authenticated { user: "u".into() };
        assert_eq!(
            b.handle(pid(1), old, vec![], t0).err(),
            Some(Violation::NoHello)
        );
        b.opened(pid(2), Peer::Monitor);
        let v = ToBroker::Hello {
            version: BROKER_VERSION + 1,
        };
        assert_eq!(
            b.handle(pid(2), v, vec![], t0).err(),
            Some(Violation::Version(BROKER_VERSION + 1))
        );
        hello(&mut b, 3, t0);
        let again = ToBroker::Hello {
            version: BROKER_VERSION,
        };
        assert_eq!(
            b.handle(pid(3), again, vec![], t0).err(),
            Some(Violation::SecondHello)
        );
    }

    #[test]
    fn a_reconnect_goes_to_the_owner_and_the_verdict_back() {
        let t0 = Instant::now();
        let mut b = Broker::new(t0);
        session(&mut b, 10, "alice", 7, t0);
        hello(&mut b, 20, t0);
        let out = b.handle(pid(20), route(7), vec![], t0).unwrap();
        let [(to, FromBroker::Validate { id, .. }, _)] = &out[..] else {
            panic!("no validate")
        };
        assert_eq!(*to, pid(10));
        assert!(b.routing(pid(20)) && !b.routing(pid(10)));
        // Only the owner may answer.
        hello(&mut b, 30, t0);
        let forged = ToBroker::Verdict {
            id: *id,
            result: Ok(()),
        };
        assert_eq!(
            b.handle(pid(30), forged, vec![], t0).err(),
            Some(Violation::NotOwner(*id))
        );
        let v = ToBroker::Verdict {
            id: *id,
            result: Ok(()),
        };
        let out = b.handle(pid(10), v, vec![], t0).unwrap();
        assert!(matches!(
            &out[..],
            [(p, FromBroker::RouteResult(Ok(())), _)] if *p == pid(20)
        ));
    }

    #[test]
    fn a_reconnect_waiting_on_a_vanished_owner_hears_try_again_at_once() {
        let t0 = Instant::now();
        let mut b = Broker::new(t0);
        session(&mut b, 10, "alice", 7, t0);
        hello(&mut b, 20, t0);
        let out = b.handle(pid(20), route(7), vec![], t0).unwrap();
        assert!(matches!(&out[..], [(_, FromBroker::Validate { .. }, _)]));
        let out = b.closed(pid(10));
        assert!(matches!(
            &out[..],
            [(p, FromBroker::RouteResult(Err((c, _))), _)]
                if *p == pid(20) && *c == failure::TRY_AGAIN
        ));
        assert!(!b.routing(pid(20)));
        // The requester leaving answers nobody.
        session(&mut b, 11, "alice", 8, t0);
        hello(&mut b, 21, t0);
        b.handle(pid(21), route(8), vec![], t0).unwrap();
        assert!(b.closed(pid(21)).is_empty());
        assert!(!b.routing(pid(21)));
    }

    #[test]
    fn unknown_tokens_are_try_again_while_sessions_register() {
        let t0 = Instant::now();
        let mut b = Broker::new(t0);
        hello(&mut b, 20, t0);
        let out = b.handle(pid(20), route(9), vec![], t0).unwrap();
        assert!(matches!(
            &out[..],
            [(_, FromBroker::RouteResult(Err((c, _))), _)] if *c == failure::TRY_AGAIN
        ));
        let later = t0 + FILLING;
        hello(&mut b, 21, later);
        let out = b.handle(pid(21), route(9), vec![], later).unwrap();
        assert!(matches!(
            &out[..],
            [(_, FromBroker::RouteResult(Err((c, _))), _)] if *c == failure::UNKNOWN_SESSION
        ));
    }

    #[test]
    fn a_session_cannot_take_another_sessions_token() {
        let t0 = Instant::now();
        let mut b = Broker::new(t0);
        session(&mut b, 10, "alice", 7, t0);
        hello(&mut b, 11, t0);
        b.handle(
            pid(11),
            ToBroker::Authenticated {
                user: "mallory".into(),
            },
            vec![],
            t0,
        )
        .unwrap();
        let steal = ToBroker::Tokens(vec![vec![7; 32]]);
        assert_eq!(
            b.handle(pid(11), steal, vec![], t0).err(),
            Some(Violation::ForeignToken(pid(10)))
        );
        hello(&mut b, 20, t0);
        let out = b.handle(pid(20), route(7), vec![], t0).unwrap();
        assert_eq!(out[0].0, pid(10));
    }

    #[test]
    fn tokens_need_an_authenticated_session() {
        let t0 = Instant::now();
        let mut b = Broker::new(t0);
        hello(&mut b, 10, t0);
        let t = ToBroker::Tokens(vec![vec![1; 32]]);
        assert_eq!(
            b.handle(pid(10), t, vec![], t0).err(),
            Some(Violation::TokensBeforeAuth)
        );
    }

    #[test]
    fn a_blip_ends_no_session_and_the_cap_holds_after_the_grace() {
        let t0 = Instant::now();
        let mut b = Broker::new(t0);
        for p in 0..200 {
            session(&mut b, 100 + p, "auto", p as u8, t0);
        }
        // All 200 connections cut at once: nothing ends within the grace.
        for p in 0..200 {
            let out = b
                .handle(pid(100 + p), detached(10, 60), vec![], t0)
                .unwrap();
            assert!(out.is_empty());
        }
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_secs(60)));
        // 195 come back.
        for p in 0..195 {
            b.handle(pid(100 + p), ToBroker::Attached, vec![], t0)
                .unwrap();
        }
        assert!(b.tick(t0 + Duration::from_secs(59)).is_empty());
        // Five stay away past the grace: under the cap of 10, all kept.
        assert!(b.tick(t0 + Duration::from_secs(61)).is_empty());
        // Another user's hoard: the ones detached longest end.
        for p in 0..12 {
            session(&mut b, 1000 + p, "hoarder", 200 + p as u8, t0);
            let at = t0 + Duration::from_secs(p as u64);
            b.handle(pid(1000 + p), detached(10, 60), vec![], at)
                .unwrap();
        }
        let out = b.tick(t0 + Duration::from_secs(200));
        let mut ended: Vec<i32> = out.iter().map(|(p, _, _)| p.as_raw()).collect();
        ended.sort();
        assert_eq!(ended, vec![1000, 1001]);
        assert!(out
            .iter()
            .all(|(_, m, _)| matches!(m, FromBroker::Terminate)));
        // Told once only.
        assert!(b.tick(t0 + Duration::from_secs(300)).is_empty());
    }

    #[test]
    fn hand_over_only_for_the_route_and_with_one_socket() {
        let t0 = Instant::now();
        let mut b = Broker::new(t0);
        session(&mut b, 10, "alice", 7, t0);
        hello(&mut b, 20, t0);
        let h = || ToBroker::Handover {
            leftover: vec![],
            peer_addr: "198.18.0.2".into(),
            peer_port: 1,
        };
        assert_eq!(
            b.handle(pid(20), h(), vec![], t0).err(),
            Some(Violation::UnaskedHandover)
        );
        hello(&mut b, 21, t0);
        let out = b.handle(pid(21), route(7), vec![], t0).unwrap();
        let [(_, FromBroker::Validate { id, .. }, _)] = &out[..] else {
            panic!("no validate")
        };
        let id = *id;
        // Not before the owner accepted.
        let (s, _) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(
            b.handle(pid(21), h(), vec![s.into()], t0).err(),
            Some(Violation::UnaskedHandover)
        );
        let mut b = Broker::new(t0);
        session(&mut b, 10, "alice", 7, t0);
        hello(&mut b, 21, t0);
        b.handle(pid(21), route(7), vec![], t0).unwrap();
        let ok = || ToBroker::Verdict { id, result: Ok(()) };
        b.handle(pid(10), ok(), vec![], t0).unwrap();
        assert_eq!(
            b.handle(pid(10), ok(), vec![], t0).err(),
            Some(Violation::AnsweredTwice(id))
        );
        // More attempts at the same session are routed beside it, up to a
        // bound; past it they are told to try again.
        for p in 1..ROUTES_PER_SESSION as i32 {
            hello(&mut b, 100 + p, t0);
            let out = b.handle(pid(100 + p), route(7), vec![], t0).unwrap();
            assert!(
                matches!(&out[..], [(o, FromBroker::Validate { .. }, _)] if *o == pid(10)),
                "attempt {p} not routed"
            );
        }
        hello(&mut b, 22, t0);
        let out = b.handle(pid(22), route(7), vec![], t0).unwrap();
        assert!(matches!(
            &out[..],
            [(_, FromBroker::RouteResult(Err((c, _))), _)] if *c == failure::TRY_AGAIN
        ));
        let (s, _) = std::os::unix::net::UnixStream::pair().unwrap();
        let out = b.handle(pid(21), h(), vec![s.into()], t0).unwrap();
        assert!(matches!(
            &out[..],
            [(p, FromBroker::Transport { .. }, fds)] if *p == pid(10) && fds.len() == 1
        ));
    }

    /// A fleet link process parses an unauthenticated peer's TLS (confined,
    /// but holding the broker link it made as root): taken over, it must not
    /// be able to pose as a session of any user, or say that one detached
    /// with a cap of 0, which would end that user's detached sessions (the
    /// ones a fleet keeps for their reconnects). It may still relay one.
    #[test]
    fn a_fleet_link_process_cannot_speak_for_a_session() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(120);
        let mut b = Broker::new(t0);
        session(&mut b, 10, "alice", 7, t0);
        b.handle(pid(10), detached(10, 60), vec![], t0).unwrap();
        let forged = [
            ToBroker::Authenticated {
                user: "alice".into(),
            },
            ToBroker::Tokens(vec![vec![9; 32]]),
            detached(0, 0),
            ToBroker::Attached,
            ToBroker::Verdict {
                id: 1,
                result: Ok(()),
            },
        ];
        for (i, m) in forged.into_iter().enumerate() {
            greet(&mut b, 50 + i as i32, Peer::FleetLink, later);
            assert_eq!(
                b.handle(pid(50 + i as i32), m.clone(), vec![], later).err(),
                Some(Violation::FleetLinkSession),
                "{m:?} believed"
            );
        }
        assert!(b.tick(later).is_empty(), "alice's detached session ended");
        // Its own job: a relayed reconnect, routed and handed over.
        greet(&mut b, 60, Peer::FleetLink, later);
        let out = b.handle(pid(60), route(7), vec![], later).unwrap();
        let [(_, FromBroker::Validate { id, .. }, _)] = &out[..] else {
            panic!("no validate")
        };
        let ok = ToBroker::Verdict {
            id: *id,
            result: Ok(()),
        };
        b.handle(pid(10), ok, vec![], later).unwrap();
        let (s, _) = std::os::unix::net::UnixStream::pair().unwrap();
        let h = ToBroker::Handover {
            leftover: vec![],
            peer_addr: "198.18.0.2".into(),
            peer_port: 1,
        };
        let out = b.handle(pid(60), h, vec![s.into()], later).unwrap();
        assert!(matches!(
            &out[..],
            [(p, FromBroker::Transport { .. }, fds)] if *p == pid(10) && fds.len() == 1
        ));
    }
}
