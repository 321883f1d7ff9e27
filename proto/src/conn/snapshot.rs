//! Moving a live connection between processes: [`Connection::export`] and
//! [`Connection::import`]. The state is made of the sub-states' own
//! serialized forms; what comes back is hostile (it is written by a less
//! privileged process) and is decoded strictly and checked before use.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{io, Auth, Channels, Config, Connection, Io, Role};
use crate::cipher::KeyMaterial;
use crate::error::{Error, Result};
use crate::keys::PublicKey;
use crate::resilience::{self, is_resilient};
use crate::transport::{PacketReader, PacketWriter};
use crate::zlib;

/// Format version of exported state.
const SNAPSHOT_VERSION: u32 = 3;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    role: Role,
    config: Config,
    local_version: String,
    peer_version: String,
    io: io::Saved,
    writer: Direction,
    reader: Direction,
    session_id: Vec<u8>,
    host_key: Option<Vec<u8>>,
    strict_kex: bool,
    peer_ext_info: bool,
    server_sig_algs: Option<Vec<String>>,
    since_kex: Duration,
    auth: Auth,
    channels: Channels,
    resilience: Option<resilience::State>,
}

/// One direction of the transport: its keys, compression and counters.
#[derive(Serialize, Deserialize)]
struct Direction {
    keys: KeyMaterial,
    zlib: zlib::Exported,
    seq: u32,
    bytes: u64,
    packets: u64,
}

impl Direction {
    fn of_writer(w: &PacketWriter) -> Result<Self> {
        Ok(Direction {
            keys: w.export(),
            zlib: w.zlib.export()?,
            seq: w.seq,
            bytes: w.bytes,
            packets: w.packets,
        })
    }

    fn of_reader(r: &PacketReader) -> Result<Self> {
        Ok(Direction {
            keys: r.export(),
            zlib: r.zlib.export()?,
            seq: r.seq,
            bytes: r.bytes,
            packets: r.packets,
        })
    }

    fn writer(&self) -> Result<PacketWriter> {
        let mut w = PacketWriter::new(&self.keys, self.seq)?;
        w.zlib = zlib::Delayed::import(self.zlib.clone())?;
        w.bytes = self.bytes;
        w.packets = self.packets;
        Ok(w)
    }

    fn reader(&self) -> Result<PacketReader> {
        let mut r = PacketReader::new(&self.keys, self.seq)?;
        r.zlib = zlib::Delayed::import(self.zlib.clone())?;
        r.bytes = self.bytes;
        r.packets = self.packets;
        Ok(r)
    }
}

impl Connection {
    /// Exports the full live state (keys, sequence numbers, channels, and the
    /// bytes not yet processed or sent), so that [`Self::import`] in another
    /// process continues exactly here. Refused while a key exchange runs or
    /// while events are undrained. The result holds secrets; it is wiped on drop.
    pub fn export(&self, now: Instant) -> Result<Zeroizing<Vec<u8>>> {
        self.check_open()?;
        let Some(session_id) = self.session_id.clone() else {
            return Err(Error::Misuse("export before the first key exchange ended"));
        };
        if self.kex.is_some() {
            return Err(Error::Misuse("export during a key exchange"));
        }
        if !self.events.is_empty() {
            return Err(Error::Misuse("export with events not drained"));
        }
        let s = Snapshot {
            version: SNAPSHOT_VERSION,
            role: self.role,
            config: self.config.clone(),
            local_version: self.local_version.clone(),
            peer_version: self.peer_version.clone().unwrap_or_default(),
            io: self.io.save()?,
            writer: Direction::of_writer(&self.writer)?,
            reader: Direction::of_reader(&self.reader)?,
            session_id,
            host_key: self.host_key.clone(),
            strict_kex: self.strict_kex,
            peer_ext_info: self.peer_ext_info,
            server_sig_algs: self.server_sig_algs.clone(),
            since_kex: now.saturating_duration_since(self.last_kex),
            auth: self.auth.clone(),
            channels: self.channels.clone(),
            resilience: self.resilience.clone(),
        };
        postcard::to_stdvec(&s)
            .map(Zeroizing::new)
            .map_err(|_| Error::State("cannot encode state"))
    }

    /// Rebuilds a connection from [`Self::export`]'s output. The input is
    /// treated as hostile: decoded strictly and checked for consistency.
    /// A server needs its host keys again for later rekeys (a client none).
    pub fn import(bytes: &[u8], host_keys: Vec<PublicKey>, now: Instant) -> Result<Self> {
        let s: Snapshot =
            postcard::from_bytes(bytes).map_err(|_| Error::State("undecodable state"))?;
        if s.version != SNAPSHOT_VERSION {
            return Err(Error::State("unknown state version"));
        }
        let c = &s.config;
        if c.window == 0 || c.max_packet == 0 || c.max_channels == 0 || c.rekey_bytes == 0 {
            return Err(Error::State("invalid configuration"));
        }
        if !s.channels.is_consistent(c) {
            return Err(Error::State("inconsistent channel table"));
        }
        if !s.auth.is_consistent(s.role) {
            return Err(Error::State("inconsistent authentication state"));
        }
        if !matches!(s.session_id.len(), 20 | 32 | 48 | 64) || !s.peer_version.starts_with("SSH-") {
            return Err(Error::State("inconsistent transport state"));
        }
        if let Some(r) = &s.resilience {
            if r.rs.len() != 32
                || !r.buffer.is_consistent()
                || r.buffer
                    .chunks()
                    .any(|m| m.is_empty() || !is_resilient(m[0]))
            {
                return Err(Error::State("inconsistent resilience state"));
            }
        }
        if (s.role == Role::Server) == host_keys.is_empty() {
            return Err(Error::State("a server needs host keys, a client none"));
        }
        let Snapshot {
            version: _,
            role,
            config,
            local_version,
            peer_version,
            io,
            writer,
            reader,
            session_id,
            host_key,
            strict_kex,
            peer_ext_info,
            server_sig_algs,
            since_kex,
            auth,
            channels,
            resilience,
        } = s;
        let mut c = Connection::assemble(role, config, host_keys, now);
        c.local_version = local_version;
        c.peer_version = Some(peer_version);
        c.io = Io::restore(io)?;
        c.writer = writer.writer()?;
        c.reader = reader.reader()?;
        c.session_id = Some(session_id);
        c.host_key = host_key;
        c.strict_kex = strict_kex;
        c.peer_ext_info = peer_ext_info;
        c.server_sig_algs = server_sig_algs;
        c.last_kex = now.checked_sub(since_kex).unwrap_or(now);
        c.auth = auth;
        c.channels = channels;
        c.resilience = resilience;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::super::auth::Method;
    use super::super::fuzz_tests::open_pair;
    use super::*;
    use crate::keys::{KeyType, PrivateKey};

    type Tamper = fn(&mut Snapshot);

    /// `state` decoded, changed by `f`, and encoded again.
    fn tampered(state: &[u8], f: Tamper) -> Vec<u8> {
        let mut s: Snapshot = postcard::from_bytes(state).unwrap();
        f(&mut s);
        postcard::to_stdvec(&s).unwrap()
    }

    #[test]
    fn import_refuses_inconsistent_states() {
        let (c, _s) = open_pair();
        let now = Instant::now();
        let state = c.export(now).unwrap();
        assert!(Connection::import(&state, Vec::new(), now).is_ok());
        let cases: [(Tamper, &str); 8] = [
            (|s| s.version += 1, "unknown state version"),
            (|s| s.config.max_channels = 0, "invalid configuration"),
            (
                |s| {
                    s.config.window = 1;
                    s.config.window_max = 1;
                },
                "inconsistent channel table",
            ),
            (
                |s| {
                    s.auth = Auth::Server {
                        user: Some("u".into()),
                        verdict_due: true,
                    }
                },
                "inconsistent authentication state",
            ),
            (
                |s| {
                    s.auth = Auth::Client {
                        user: None,
                        sent: Some(Method::Password),
                    }
                },
                "inconsistent authentication state",
            ),
            (
                |s| s.session_id.truncate(31),
                "inconsistent transport state",
            ),
            (
                |s| s.peer_version = "HTTP/1.1".into(),
                "inconsistent transport state",
            ),
            (
                |s| {
                    if let Some(r) = s.resilience.as_mut() {
                        r.rs.pop();
                    }
                },
                "inconsistent resilience state",
            ),
        ];
        for (f, why) in cases {
            let bad = tampered(&state, f);
            let err = Connection::import(&bad, Vec::new(), now).err();
            assert_eq!(err, Some(Error::State(why)));
        }
        let cut = &state[..state.len() - 1];
        let err = Connection::import(cut, Vec::new(), now).err();
        assert_eq!(err, Some(Error::State("undecodable state")));
        let key = PrivateKey::generate(KeyType::Ed25519).unwrap().public_key();
        let err = Connection::import(&state, vec![key], now).err();
        assert_eq!(
            err,
            Some(Error::State("a server needs host keys, a client none"))
        );
    }
}
