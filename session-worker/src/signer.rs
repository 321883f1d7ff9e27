//! Host-key signatures for rekeys, made by the monitor: the keys never
//! enter this process.
//!
//! The engine asks with `Event::SignHostKey`; the request goes to the
//! monitor and the event loop goes on. The answer comes back among the
//! monitor's other messages and is fed to the engine
//! (`Connection::host_key_signed`). Meanwhile the session reads nothing
//! from the client; a monitor that does not answer within [`SIGN_TIMEOUT`]
//! ends the key exchange, and the connection, with a DISCONNECT.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use ressh_ipc::msg::FromSession;
use ressh_proto::wire::printable;
use ressh_proto::SignRequest;

/// How long the monitor may take to answer.
pub const SIGN_TIMEOUT: Duration = Duration::from_secs(30);

/// The signature asked of the monitor, if one is outstanding.
#[derive(Default)]
pub struct Signer {
    deadline: Option<Instant>,
}

impl Signer {
    /// The message that asks the monitor to sign `r`.
    pub fn ask(&mut self, r: SignRequest, now: Instant) -> FromSession {
        self.deadline = Some(now + SIGN_TIMEOUT);
        FromSession::Sign {
            key: r.key.to_blob(),
            alg: r.algorithm,
            data: r.data,
        }
    }

    /// Whether a signature is outstanding.
    pub fn waiting(&self) -> bool {
        self.deadline.is_some()
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The monitor's answer, for the engine: Some(signature), or Some(None)
    /// when it could not sign (the reason is logged). None: nobody asked.
    pub fn answer(
        &mut self,
        answer: Result<Vec<u8>, String>,
        fds: &[OwnedFd],
    ) -> Option<Option<Vec<u8>>> {
        self.deadline.take()?;
        Some(match answer {
            _ if !fds.is_empty() => {
                log!("monitor: a signature with descriptors");
                None
            }
            Ok(sig) => Some(sig),
            Err(e) => {
                log!(
                    "host-key signature from monitor: {}",
                    printable(e.as_bytes())
                );
                None
            }
        })
    }

    /// Whether the outstanding signature is overdue at `now` (it is then
    /// given up).
    pub fn overdue(&mut self, now: Instant) -> bool {
        if self.deadline.is_some_and(|d| d <= now) {
            self.deadline = None;
            return true;
        }
        false
    }
}
