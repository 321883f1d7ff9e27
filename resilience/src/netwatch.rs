//! Triggers for a reconnect that do not wait for TCP to notice: changes of
//! addresses and routes (netlink), and a resume from suspend (a jump
//! between the boot and monotonic clocks).

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use nix::time::{clock_gettime, ClockId};

/// A NETLINK_ROUTE socket subscribed to link, address and route changes.
/// Readable whenever something changed; [`Netlink::drain`] clears it.
pub struct Netlink {
    fd: OwnedFd,
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        let groups = libc::RTMGRP_LINK
            | libc::RTMGRP_IPV4_IFADDR
            | libc::RTMGRP_IPV6_IFADDR
            | libc::RTMGRP_IPV4_ROUTE
            | libc::RTMGRP_IPV6_ROUTE;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups as u32))?;
        Ok(Netlink { fd })
    }

    /// Reads and discards pending notifications; true if there were any.
    pub fn drain(&self) -> bool {
        let mut buf = [0u8; 16384];
        let mut any = false;
        loop {
            match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(1..) => any = true,
                // Overrun: we lost notifications, which is itself a change.
                Err(Errno::ENOBUFS) => any = true,
                Ok(0) | Err(_) => return any,
            }
        }
    }
}

impl AsFd for Netlink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Netlink {
    fn as_raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// The source address the kernel would pick now to reach `server` (a UDP
/// connect sends nothing; it only selects the route). None: unreachable.
pub fn preferred_source(server: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let s = UdpSocket::bind(bind).ok()?;
    s.connect(server).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// Clock `id` now (zero if it cannot be read: both clocks always can).
fn clock(id: ClockId) -> Duration {
    clock_gettime(id).map_or(Duration::ZERO, Duration::from)
}

/// Notices that the machine was suspended: CLOCK_BOOTTIME advances during
/// suspend, CLOCK_MONOTONIC does not, so the difference between the two
/// grows by the time slept. (A process that is merely stopped or starved
/// sees both clocks advance alike: only a suspend separates them.)
pub struct SuspendDetector {
    gap: Duration,
}

/// CLOCK_BOOTTIME - CLOCK_MONOTONIC: the time spent suspended since boot.
fn suspended_since_boot() -> Duration {
    clock(ClockId::CLOCK_BOOTTIME).saturating_sub(clock(ClockId::CLOCK_MONOTONIC))
}

/// Whether the machine slept between two readings of
/// [`suspended_since_boot`]: for more than a second (shorter is noise).
fn slept(before: Duration, now: Duration) -> bool {
    now.saturating_sub(before) > Duration::from_secs(1)
}

impl Default for SuspendDetector {
    fn default() -> Self {
        SuspendDetector {
            gap: suspended_since_boot(),
        }
    }
}

impl SuspendDetector {
    /// True (once) if the machine slept more than a second since the last call.
    pub fn resumed(&mut self) -> bool {
        let gap = suspended_since_boot();
        let slept = slept(self.gap, gap);
        self.gap = gap;
        slept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_source_and_no_suspend() {
        assert_eq!(
            preferred_source("127.0.0.1:22".parse().unwrap()),
            Some("127.0.0.1".parse().unwrap())
        );
        let mut d = SuspendDetector::default();
        assert!(!d.resumed());
        let n = Netlink::open().unwrap();
        n.drain();
    }

    /// The detector's decision on readings of BOOTTIME - MONOTONIC: a sleep
    /// of more than a second, and only that, is a resume.
    #[test]
    fn a_sleep_of_more_than_a_second_is_a_resume() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert!(slept(s(10), s(10) + ms(1001)));
        assert!(slept(s(0), s(3600)));
        assert!(!slept(s(10), s(11)));
        assert!(!slept(s(10), s(10) + ms(300)));
        assert!(!slept(s(10), s(10)));
        // The difference never shrinks; if a reading did, it is no sleep.
        assert!(!slept(s(10), s(5)));
    }
}
