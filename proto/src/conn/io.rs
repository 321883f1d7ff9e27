//! The transport's byte buffers: what was received and not yet processed,
//! what waits to be sent, payloads held back while a key exchange runs,
//! and spare payload buffers for reuse.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Bytes of spare payload buffers a connection keeps at most.
const SPARE_MAX: usize = 2 << 20;

/// Bound on buffered bytes accepted from an exported state.
const MAX_SAVED_BUFFER: usize = 64 * 1024 * 1024;

#[derive(Default)]
pub(super) struct Io {
    pub(super) inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// Bytes at the front of `outbuf` already sent ([`Io::consume`]):
    /// consuming moves this offset instead of shifting the rest of the buffer
    /// (which can hold megabytes) after every socket write.
    out_pos: usize,
    /// Payloads held back while a key exchange runs, and the bytes of the
    /// resilient ones (they count against the buffer cap).
    deferred: VecDeque<Vec<u8>>,
    deferred_bytes: usize,
    /// Payload buffers of sent packets, kept for the next ones (see
    /// [`Io::recycle`]): a bulk transfer then allocates nothing per packet
    /// and writes into memory that is still in the CPU's caches.
    spare: Vec<Vec<u8>>,
    spare_bytes: usize,
}

/// The buffers that move with an exported connection.
#[derive(Serialize, Deserialize)]
pub(super) struct Saved {
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
}

impl Io {
    /// Buffers starting from bytes received and bytes to send.
    pub(super) fn with(inbuf: Vec<u8>, outbuf: Vec<u8>) -> Self {
        Io {
            inbuf,
            outbuf,
            ..Io::default()
        }
    }

    /// Moves the connection to another transport's buffers; what is held
    /// back and the spare buffers stay.
    pub(super) fn switch(&mut self, inbuf: Vec<u8>, outbuf: Vec<u8>) {
        self.inbuf = inbuf;
        self.outbuf = outbuf;
        self.out_pos = 0;
    }

    /// Where packets to send are written.
    pub(super) fn outbuf(&mut self) -> &mut Vec<u8> {
        &mut self.outbuf
    }

    pub(super) fn output(&self) -> &[u8] {
        &self.outbuf[self.out_pos..]
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.out_pos = (self.out_pos + n).min(self.outbuf.len());
        if self.out_pos == self.outbuf.len() {
            self.outbuf.clear();
            self.out_pos = 0;
        } else if self.out_pos >= 64 * 1024 && self.out_pos * 2 >= self.outbuf.len() {
            // Compact once the sent part is at least as large as the rest:
            // the bytes moved never exceed the bytes consumed.
            self.outbuf.drain(..self.out_pos);
            self.out_pos = 0;
        }
    }

    pub(super) fn take_output(&mut self) -> Vec<u8> {
        self.outbuf.drain(..std::mem::take(&mut self.out_pos));
        std::mem::take(&mut self.outbuf)
    }

    /// Holds a payload back until the key exchange ends.
    pub(super) fn defer(&mut self, payload: Vec<u8>, resilient: bool) {
        if resilient {
            self.deferred_bytes += payload.len();
        }
        self.deferred.push_back(payload);
    }

    /// (messages, bytes of resilient ones) held back.
    pub(super) fn deferred(&self) -> (usize, usize) {
        (self.deferred.len(), self.deferred_bytes)
    }

    /// The payloads held back, oldest first; the count restarts.
    pub(super) fn take_deferred(&mut self) -> VecDeque<Vec<u8>> {
        self.deferred_bytes = 0;
        std::mem::take(&mut self.deferred)
    }

    /// Keeps a payload buffer no longer needed for the next packet.
    pub(super) fn recycle(&mut self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if cap >= 4096 && self.spare_bytes + cap <= SPARE_MAX {
            buf.clear();
            self.spare_bytes += cap;
            self.spare.push(buf);
        }
    }

    /// An empty buffer for a payload of `len` bytes, recycled if possible.
    pub(super) fn payload_buf(&mut self, len: usize) -> Vec<u8> {
        let mut b = match self.spare.pop() {
            Some(b) => {
                self.spare_bytes -= b.capacity();
                b
            }
            None => Vec::new(),
        };
        b.reserve(len);
        b
    }

    /// The buffers to export: nothing may be held back.
    pub(super) fn save(&self) -> Result<Saved> {
        if !self.deferred.is_empty() {
            return Err(Error::Misuse("export during a key exchange"));
        }
        Ok(Saved {
            inbuf: self.inbuf.clone(),
            outbuf: self.output().to_vec(),
        })
    }

    /// Buffers from an exported state, which is hostile: bounded.
    pub(super) fn restore(s: Saved) -> Result<Self> {
        if s.inbuf.len() > MAX_SAVED_BUFFER || s.outbuf.len() > MAX_SAVED_BUFFER {
            return Err(Error::State("buffered data too large"));
        }
        Ok(Io::with(s.inbuf, s.outbuf))
    }
}
