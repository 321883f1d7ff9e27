//! Host-key signatures for rekeys, made by the monitor: the keys never
//! enter this process.

use std::sync::Arc;

use ressh_ipc::msg::{FromSession, ToSession};
use ressh_ipc::Endpoint;
use ressh_proto::keys::PublicKey;
use ressh_proto::{Error, HostKeySigner, Result};

pub struct MonitorSigner {
    endpoint: Arc<Endpoint>,
    keys: Vec<PublicKey>,
}

impl MonitorSigner {
    pub fn new(endpoint: Arc<Endpoint>, keys: Vec<PublicKey>) -> Self {
        MonitorSigner { endpoint, keys }
    }
}

impl HostKeySigner for MonitorSigner {
    fn public_keys(&self) -> Vec<PublicKey> {
        self.keys.clone()
    }

    /// Asks the monitor and blocks for its answer (bounded by the
    /// endpoint's receive timeout).
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
        let (reply, fds) = self
            .endpoint
            .recv::<ToSession>()
            .map_err(|e| fail(e.to_string()))?;
        if !fds.is_empty() {
            return Err(fail("unexpected descriptors".into()));
        }
        match reply {
            ToSession::Signature(Ok(sig)) => Ok(sig),
            ToSession::Signature(Err(e)) => Err(fail(ressh_proto::wire::printable(e.as_bytes()))),
            ToSession::Start(_) => Err(fail("unexpected second Start".into())),
        }
    }
}
