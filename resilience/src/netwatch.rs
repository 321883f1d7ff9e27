//! Triggers for a reconnect that do not wait for TCP to notice: changes of
//! addresses and routes (netlink), and a resume from suspend (a jump
//! between the boot and monotonic clocks).

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A NETLINK_ROUTE socket subscribed to link, address and route changes.
/// Readable whenever something changed; [`Netlink::drain`] clears it.
pub struct Netlink {
    fd: OwnedFd,
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid value.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        sa.nl_groups = (libc::RTMGRP_LINK
            | libc::RTMGRP_IPV4_IFADDR
            | libc::RTMGRP_IPV6_IFADDR
            | libc::RTMGRP_IPV4_ROUTE
            | libc::RTMGRP_IPV6_ROUTE) as u32;
        // SAFETY: sa is a valid sockaddr_nl of the given size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Netlink { fd })
    }

    /// Reads and discards pending notifications; true if there were any.
    pub fn drain(&self) -> bool {
        let mut buf = [0u8; 16384];
        let mut any = false;
        loop {
            // SAFETY: buf is valid for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                any = true;
                continue;
            }
            if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                // Overrun: we lost notifications, which is itself a change.
                any = true;
                continue;
            }
            return any;
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

fn clock(id: libc::clockid_t) -> Duration {
    // SAFETY: timespec is plain data; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(id, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
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
    clock(libc::CLOCK_BOOTTIME).saturating_sub(clock(libc::CLOCK_MONOTONIC))
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
