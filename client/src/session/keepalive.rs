//! Watching the path to the server: ServerAlive probes (without
//! resilience: a silent server ends the session), and the signs that a
//! reconnect is due before the transport says so (resilience): a new route
//! or source address (netlink), a resume from suspend, SIGUSR2.

use std::time::{Duration, Instant};

use mio::Token;
use ressh_proto::msg::GlobalReq;
use ressh_resilience::netwatch;

use super::forwards::Global;
use super::{fatal, Session};
use crate::config::Config;

/// The token of the netlink socket.
const T_NETLINK: Token = Token(8);

/// The interval of resilience keepalives (ServerAliveInterval, else 15 s).
pub(super) fn resilience_interval(cfg: &Config) -> Duration {
    Duration::from_secs(if cfg.server_alive_interval > 0 {
        cfg.server_alive_interval
    } else {
        15
    })
}

pub(super) struct Keepalive {
    /// When the next ServerAlive probe is due (ServerAliveInterval set,
    /// authenticated).
    next: Option<Instant>,
    /// Probes without an answer since the server was last heard.
    missed: u32,
    netlink: Option<netwatch::Netlink>,
    netlink_ready: bool,
    suspend: netwatch::SuspendDetector,
    next_suspend_check: Instant,
}

impl Keepalive {
    pub(super) fn new(reg: &mio::Registry) -> Keepalive {
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
        Keepalive {
            next: None,
            missed: 0,
            netlink,
            netlink_ready: false,
            suspend: netwatch::SuspendDetector::default(),
            next_suspend_check: Instant::now() + Duration::from_secs(1),
        }
    }

    /// Readiness of the netlink socket; false if `t` is not it.
    pub(super) fn mark(&mut self, t: Token) -> bool {
        if t != T_NETLINK {
            return false;
        }
        self.netlink_ready = true;
        true
    }

    /// Authenticated: ServerAlive probes start (if configured).
    pub(super) fn start(&mut self, cfg: &Config, now: Instant) {
        if cfg.server_alive_interval > 0 {
            self.next = Some(now + Duration::from_secs(cfg.server_alive_interval));
        }
    }

    /// The server was heard: the next probe is a full interval away.
    pub(super) fn heard(&mut self, cfg: &Config, now: Instant) {
        self.missed = 0;
        if self.next.is_some() {
            self.next = Some(now + Duration::from_secs(cfg.server_alive_interval));
        }
    }

    /// When the loop must wake for these timers. With resilience the
    /// engine's own keepalives watch the transport and ServerAlive is not
    /// acted on: waking for it would spin once it has passed, as it does
    /// while detached.
    pub(super) fn timeout(&self, resilient: bool) -> Option<Instant> {
        let alive = self.next.filter(|_| !resilient);
        Some(alive.map_or(self.next_suspend_check, |a| a.min(self.next_suspend_check)))
    }
}

impl Session {
    /// A ServerAlive probe if one is due; the session ends when
    /// ServerAliveCountMax of them went unanswered.
    pub(super) fn server_alive(&mut self, now: Instant) {
        if self.alive.next.is_none_or(|t| now < t) {
            return;
        }
        if self.alive.missed >= self.cfg.server_alive_count_max {
            self.set_quit(fatal(format!(
                "Timeout, server {} not responding.",
                self.cfg.host
            )));
            return;
        }
        self.alive.missed += 1;
        crate::debug1!("sending keepalive ({})", self.alive.missed);
        let r = self.conn.global_request(GlobalReq::Keepalive, true);
        if self.engine("a keepalive", r).is_some() {
            self.fwd.expect_reply(Global::Keepalive);
        }
        self.alive.next = Some(now + Duration::from_secs(self.cfg.server_alive_interval));
    }

    /// With resilience, starts a reconnect on SIGUSR2, a resume from
    /// suspend, or a change of the route to the server.
    pub(super) fn check_triggers(&mut self) {
        if !self.resilient() {
            return;
        }
        if self.sig.take_usr2() {
            self.begin_resume("SIGUSR2", None);
        }
        let now = Instant::now();
        if now >= self.alive.next_suspend_check {
            self.alive.next_suspend_check = now + Duration::from_secs(1);
            if self.alive.suspend.resumed() {
                self.begin_resume("resumed from suspend", None);
            }
        }
        if std::mem::take(&mut self.alive.netlink_ready) {
            let changed = self.alive.netlink.as_ref().is_some_and(|n| n.drain());
            if changed && !self.link.resuming() && !self.link.dead() {
                // Only a change that affects our path counts: the source
                // address the kernel would now choose for the server.
                if let Some((local, peer)) = self.link.transport.tcp_addrs() {
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
}
