//! systemd integration without libsystemd, for resshd and restls: sd_notify(3)
//! state changes sent as one datagram to `$NOTIFY_SOCKET`, and the check
//! sd-daemon(3) asks for before writing `<N>` priority prefixes to a
//! journald stream. Outside systemd (`$NOTIFY_SOCKET` unset) [`notify`] is a
//! no-op.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

use nix::time::{clock_gettime, ClockId};

/// Sends `state` (newline-separated `VAR=value` assignments) to the
/// service manager. Ok(false) when not run by one (`$NOTIFY_SOCKET` unset).
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(addr) => send_to(&addr, state).map(|()| true),
        None => Ok(false),
    }
}

/// One datagram to a `$NOTIFY_SOCKET` address: an absolute path, or `@name`
/// for a socket in the abstract namespace.
fn send_to(addr: &OsStr, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = addr.as_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &a)?
    } else if bytes.starts_with(b"/") {
        sock.send_to(state.as_bytes(), addr)?
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither an absolute path nor an abstract socket (@name)",
        ));
    };
    if sent != state.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram"));
    }
    Ok(())
}

/// CLOCK_MONOTONIC in microseconds, as `MONOTONIC_USEC=` wants it.
fn monotonic_usec() -> u64 {
    // CLOCK_MONOTONIC can always be read.
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |ts| {
        ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1_000
    })
}

/// `RELOADING=1` with the `MONOTONIC_USEC=` systemd wants beside it.
pub fn reloading() -> io::Result<bool> {
    notify(&format!(
        "RELOADING=1\nSTATUS=Reloading\nMONOTONIC_USEC={}\n",
        monotonic_usec()
    ))
}

/// Whether stderr is a journald stream: systemd sets `$JOURNAL_STREAM` to
/// `DEVICE:INODE` of the stream it connected; it only counts while fd 2 is
/// still that stream (not after a redirection by the caller).
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match nix::sys::stat::fstat(2) {
        // dev_t and ino_t are not u64 on every target.
        #[allow(clippy::unnecessary_cast)]
        Ok(st) => st.st_dev as u64 == dev && st.st_ino as u64 == ino,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    fn recv(s: &UnixDatagram) -> String {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn datagrams_to_path_and_abstract_sockets() {
        let dir = std::env::temp_dir().join(format!("ressh-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("n.sock");
        let _ = std::fs::remove_file(&path);
        let s = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), "READY=1\n").unwrap();
        assert_eq!(recv(&s), "READY=1\n");
        std::fs::remove_dir_all(&dir).unwrap();

        use std::os::linux::net::SocketAddrExt;
        let name = format!("ressh-notify-test-{}", std::process::id());
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let s = UnixDatagram::bind_addr(&a).unwrap();
        send_to(OsStr::new(&format!("@{name}")), "STOPPING=1\n").unwrap();
        assert_eq!(recv(&s), "STOPPING=1\n");

        assert!(send_to(OsStr::new("relative/path"), "READY=1").is_err());
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_usec();
        std::thread::sleep(Duration::from_millis(2));
        let b = monotonic_usec();
        assert!(a > 0 && b > a);
    }
}
