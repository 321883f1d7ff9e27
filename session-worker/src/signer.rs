//! Host-key signatures for rekeys, made by the monitor: the keys never
//! enter this process.
//!
//! The monitor's endpoint also brings unsolicited messages (a routed
//! reconnect, a new transport). One that arrives while the signer waits for
//! its signature is queued in the [`Inbox`], with its descriptors, and the
//! event loop handles it right after, in order.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ressh_ipc::msg::{FromSession, ToSession};
use ressh_ipc::Endpoint;
use ressh_proto::keys::PublicKey;
use ressh_proto::{Error, HostKeySigner, Result};

/// Messages from the monitor received while signing, oldest first.
pub type Inbox = Arc<Mutex<VecDeque<(ToSession, Vec<OwnedFd>)>>>;

/// Bound on the whole wait for a signature, however many other messages
/// arrive meanwhile.
const SIGN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct MonitorSigner {
    endpoint: Arc<Endpoint>,
    keys: Vec<PublicKey>,
    inbox: Inbox,
}

impl MonitorSigner {
    pub fn new(endpoint: Arc<Endpoint>, keys: Vec<PublicKey>, inbox: Inbox) -> Self {
        MonitorSigner {
            endpoint,
            keys,
            inbox,
        }
    }
}

impl HostKeySigner for MonitorSigner {
    fn public_keys(&self) -> Vec<PublicKey> {
        self.keys.clone()
    }

    /// Asks the monitor and blocks for its answer (bounded by the
    /// endpoint's receive timeout and [`SIGN_TIMEOUT`]).
    fn sign(&self, key: &PublicKey, alg: &str, data: &[u8]) -> Result<Vec<u8>> {
        let req = FromSession::Sign {
            key: key.to_blob(),
            alg: alg.to_string(),
            data: data.to_vec(),
        };
        let fail = |what: String| Error::Crypto(format!("host-key signature from monitor: {what}"));
        self.endpoint
            .send(&req, &[])
            .map_err(|e| fail(e.to_string()))?;
        let deadline = Instant::now() + SIGN_TIMEOUT;
        loop {
            let (reply, fds) = self
                .endpoint
                .recv::<ToSession>()
                .map_err(|e| fail(e.to_string()))?;
            match reply {
                ToSession::Signature(_) if !fds.is_empty() => {
                    return Err(fail("unexpected descriptors".into()))
                }
                ToSession::Signature(Ok(sig)) => return Ok(sig),
                ToSession::Signature(Err(e)) => {
                    return Err(fail(ressh_proto::wire::printable(e.as_bytes())))
                }
                ToSession::Start(_) => return Err(fail("unexpected second Start".into())),
                m @ (ToSession::Reconnect { .. }
                | ToSession::Transport { .. }
                | ToSession::Refused { .. }
                | ToSession::Terminate) => {
                    self.inbox
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_back((m, fds));
                }
            }
            if Instant::now() >= deadline {
                return Err(fail("no signature in time".into()));
            }
        }
    }
}
