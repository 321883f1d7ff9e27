//! Signals turned into flags plus a wake-up byte on a socket the event loop
//! (and the terminal prompts) poll: SIGWINCH becomes a window-change request,
//! SIGINT/SIGTERM/SIGHUP/SIGQUIT end the program through its normal exit
//! path, so the terminal is restored.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR2, SIGWINCH};

pub struct Signals {
    wake_rx: UnixStream,
    winch: Arc<AtomicBool>,
    /// SIGUSR2: reconnect now.
    usr2: Arc<AtomicBool>,
    /// SIGINT, SIGTERM, SIGHUP, SIGQUIT: whether each was received.
    term: Vec<(i32, Arc<AtomicBool>)>,
}

static SIGNALS: OnceLock<Signals> = OnceLock::new();

/// Installs the handlers once; later calls return the same instance.
pub fn install() -> std::io::Result<&'static Signals> {
    if let Some(s) = SIGNALS.get() {
        return Ok(s);
    }
    let (rx, tx) = UnixStream::pair()?;
    rx.set_nonblocking(true)?;
    tx.set_nonblocking(true)?;
    let winch = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(SIGWINCH, winch.clone())?;
    signal_hook::low_level::pipe::register(SIGWINCH, tx.try_clone()?)?;
    let usr2 = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(SIGUSR2, usr2.clone())?;
    signal_hook::low_level::pipe::register(SIGUSR2, tx.try_clone()?)?;
    let mut term = Vec::new();
    for sig in [SIGINT, SIGTERM, SIGHUP, SIGQUIT] {
        let flag = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(sig, flag.clone())?;
        signal_hook::low_level::pipe::register(sig, tx.try_clone()?)?;
        term.push((sig, flag));
    }
    let _ = SIGNALS.set(Signals {
        wake_rx: rx,
        winch,
        usr2,
        term,
    });
    Ok(SIGNALS.get().expect("set above"))
}

/// Stops ressh as SIGTSTP's default action would (the ~^Z escape).
pub fn stop_self() {
    if let Err(e) = nix::sys::signal::raise(nix::sys::signal::Signal::SIGTSTP) {
        crate::debug1!("cannot stop: {e}");
    }
}

/// The installed signals, if [`install`] ran.
pub fn get() -> Option<&'static Signals> {
    SIGNALS.get()
}

impl Signals {
    /// The descriptor that becomes readable when a signal arrives.
    pub fn fd(&self) -> RawFd {
        self.wake_rx.as_raw_fd()
    }

    /// The same descriptor, borrowed (for poll(2)).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.wake_rx.as_fd()
    }

    /// Empties the wake-up socket.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        while let Ok(n) = (&self.wake_rx).read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }

    /// Whether SIGWINCH arrived since the last call.
    pub fn take_winch(&self) -> bool {
        self.winch.swap(false, Ordering::SeqCst)
    }

    /// Whether SIGUSR2 (reconnect now) arrived since the last call.
    pub fn take_usr2(&self) -> bool {
        self.usr2.swap(false, Ordering::SeqCst)
    }

    /// The terminating signal received, if any (it stays set).
    pub fn terminated(&self) -> Option<i32> {
        let mut got = self.term.iter().filter(|(_, f)| f.load(Ordering::SeqCst));
        got.next().map(|(sig, _)| *sig)
    }
}
