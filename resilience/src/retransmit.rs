//! The retransmit buffer: everything sent and not yet acknowledged.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// What the counts count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unit {
    /// One per chunk (SSH: a resilient message; an ACK frees whole messages).
    Message,
    /// One per byte (TLS: application bytes; an ACK may end inside a chunk).
    Byte,
}

/// A receive count (from an acknowledgement or a reconnect) that is below
/// what the peer already acknowledged or above what was ever sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange;

impl std::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("receive count out of range")
    }
}

impl std::error::Error for OutOfRange {}

/// Chunks sent and not yet acknowledged, in sending order. Units are
/// numbered 0, 1, 2, … in sending order; the buffer holds units
/// `base()..sent()`. Nothing in it is sized after a peer's value: it grows
/// only by what the owner sends, and the owner keeps it under its own cap
/// with [`Retransmit::bytes`].
#[derive(Clone, Serialize, Deserialize)]
pub struct Retransmit {
    unit: Unit,
    chunks: VecDeque<Vec<u8>>,
    /// Bytes at the front of `chunks[0]` already acknowledged (`Unit::Byte`).
    front: usize,
    /// Unacknowledged bytes held.
    bytes: usize,
    /// Units sent in total.
    sent: u64,
}

impl std::fmt::Debug for Retransmit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "retransmit({:?}: sent {}, base {}, {} chunks/{} B)",
            self.unit,
            self.sent,
            self.base(),
            self.chunks.len(),
            self.bytes
        )
    }
}

impl Retransmit {
    pub fn new(unit: Unit) -> Retransmit {
        Retransmit {
            unit,
            chunks: VecDeque::new(),
            front: 0,
            bytes: 0,
            sent: 0,
        }
    }

    /// Records a chunk as sent. An empty chunk counts one message, or nothing
    /// (and is not kept) when counting bytes.
    pub fn push(&mut self, chunk: Vec<u8>) {
        match self.unit {
            Unit::Message => self.sent += 1,
            Unit::Byte if chunk.is_empty() => return,
            Unit::Byte => self.sent += chunk.len() as u64,
        }
        self.bytes += chunk.len();
        self.chunks.push_back(chunk);
    }

    /// Units sent in total.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The first unit not yet acknowledged.
    pub fn base(&self) -> u64 {
        self.sent - self.held()
    }

    fn held(&self) -> u64 {
        match self.unit {
            Unit::Message => self.chunks.len() as u64,
            Unit::Byte => self.bytes as u64,
        }
    }

    /// Chunks held (messages, when counting messages).
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Unacknowledged bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is waiting for an acknowledgement.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Applies the peer's receive count: frees units below `count`, handing
    /// every chunk freed whole to `reuse`. Returns whether anything was freed.
    pub fn acked(
        &mut self,
        count: u64,
        mut reuse: impl FnMut(Vec<u8>),
    ) -> Result<bool, OutOfRange> {
        if count < self.base() || count > self.sent {
            return Err(OutOfRange);
        }
        let mut left = count - self.base();
        let freed = left > 0;
        while left > 0 {
            let Some(first) = self.chunks.front() else {
                break;
            };
            let units = match self.unit {
                Unit::Message => 1,
                Unit::Byte => (first.len() - self.front) as u64,
            };
            if left >= units {
                let chunk = self.chunks.pop_front().expect("front chunk");
                self.bytes -= chunk.len() - self.front;
                self.front = 0;
                left -= units;
                reuse(chunk);
            } else {
                // Only bytes end inside a chunk (a message is one unit).
                self.front += left as usize;
                self.bytes -= left as usize;
                left = 0;
            }
        }
        Ok(freed)
    }

    /// The held data from unit `from` on, in order, for retransmission.
    pub fn unacked_from(&self, from: u64) -> Result<impl Iterator<Item = &[u8]>, OutOfRange> {
        if from < self.base() || from > self.sent {
            return Err(OutOfRange);
        }
        let mut skip = from - self.base();
        let mut out = Vec::new();
        for (i, c) in self.chunks.iter().enumerate() {
            let c = if i == 0 { &c[self.front..] } else { &c[..] };
            let units = match self.unit {
                Unit::Message => 1,
                Unit::Byte => c.len() as u64,
            };
            if skip >= units {
                skip -= units;
                continue;
            }
            // skip > 0 here only when counting bytes.
            out.push(&c[skip as usize..]);
            skip = 0;
        }
        Ok(out.into_iter())
    }

    /// The held chunks (the unacknowledged part of the first one).
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        self.chunks
            .iter()
            .enumerate()
            .map(|(i, c)| if i == 0 { &c[self.front..] } else { &c[..] })
    }

    /// Whether a buffer that crossed a process boundary is well formed: the
    /// counters agree with the chunks.
    pub fn is_consistent(&self) -> bool {
        let total: usize = self.chunks.iter().map(|c| c.len()).sum();
        let front_ok = match (self.unit, self.chunks.front()) {
            (Unit::Message, _) | (Unit::Byte, None) => self.front == 0,
            (Unit::Byte, Some(c)) => self.front < c.len(),
        };
        front_ok
            && total.checked_sub(self.front) == Some(self.bytes)
            && self.held() <= self.sent
            && (self.unit == Unit::Message || self.chunks.iter().all(|c| !c.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(r: &Retransmit, from: u64) -> Vec<u8> {
        r.unacked_from(from).unwrap().flatten().copied().collect()
    }

    #[test]
    fn messages_free_whole_and_bound_counts() {
        let mut s = Retransmit::new(Unit::Message);
        for i in 0..5u8 {
            s.push(vec![80, i]);
        }
        assert_eq!(s.bytes(), 10);
        let mut reused = 0;
        assert!(s.acked(2, |_| reused += 1).unwrap());
        assert_eq!(reused, 2);
        assert_eq!(s.base(), 2);
        assert_eq!(s.unacked_from(3).unwrap().count(), 2);
        assert_eq!(s.acked(1, drop), Err(OutOfRange), "backwards");
        assert_eq!(s.acked(6, drop), Err(OutOfRange), "beyond what was sent");
        assert!(s.unacked_from(1).is_err(), "already freed");
        assert!(!s.acked(2, drop).unwrap());
        assert!(s.is_consistent());
    }

    #[test]
    fn bytes_free_inside_chunks() {
        let mut s = Retransmit::new(Unit::Byte);
        s.push(b"hello".to_vec());
        s.push(Vec::new());
        s.push(b" world".to_vec());
        assert_eq!(s.sent(), 11);
        assert_eq!(collect(&s, 3), b"lo world");
        assert!(s.acked(3, drop).unwrap());
        assert_eq!((s.base(), s.bytes()), (3, 8));
        assert_eq!(collect(&s, 3), b"lo world");
        assert_eq!(collect(&s, 7), b"orld");
        assert_eq!(collect(&s, 11), b"");
        let mut whole = Vec::new();
        assert!(s.acked(9, |c| whole.push(c)).unwrap());
        assert_eq!(whole, vec![b"hello".to_vec()]);
        assert_eq!(s.chunks().collect::<Vec<_>>(), vec![&b"ld"[..]]);
        assert!(s.is_consistent());
        assert_eq!(s.acked(12, drop), Err(OutOfRange));
        assert_eq!(s.acked(8, drop), Err(OutOfRange));
        assert!(s.acked(11, drop).unwrap());
        assert!(s.is_empty() && s.bytes() == 0 && s.is_consistent());
    }
}
