//! The sans-IO resilience core of one restls connection (docs/restls.md §4):
//! counting, acknowledgements, the retransmit buffer, FIN. No sockets and no
//! clocks: plaintext frames in and out, time as an argument.

use std::time::{Duration, Instant};

use ressh_resilience::{Retransmit, Unit};

use crate::frame::{self, Frame, Malformed};

/// Bytes received after which an ACK is sent at once.
pub const ACK_BYTES: u64 = 256 * 1024;
/// Longest an ACK is delayed after the first unacknowledged byte.
pub const ACK_DELAY: Duration = Duration::from_millis(50);

/// A peer that broke docs/restls.md §4: the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

impl From<Malformed> for ProtocolError {
    fn from(m: Malformed) -> Self {
        ProtocolError(m.0)
    }
}

/// Counters and buffers of one resilient connection, for both directions.
/// Counts are in units: every application byte is one, and the FIN that ends
/// a direction is one more.
#[derive(Debug)]
pub struct Core {
    out: Retransmit,
    cap: usize,
    fin_sent: bool,
    fin_acked: bool,
    /// Highest count the peer acknowledged.
    peer_acked: u64,
    /// Application bytes received and handed to the application.
    recv: u64,
    peer_fin: bool,
    /// Unit number of the next unit that arrives on the current connection.
    in_off: u64,
    /// Count carried by the last ACK (or RESUME) we sent.
    acked: u64,
    ack_at: Option<Instant>,
    /// When the last ACK from the peer arrived.
    last_ack: Option<Instant>,
}

impl Core {
    /// `cap`: most unacknowledged bytes kept before [`Core::room`] is 0.
    pub fn new(cap: usize) -> Core {
        Core {
            out: Retransmit::new(Unit::Byte),
            cap,
            fin_sent: false,
            fin_acked: false,
            peer_acked: 0,
            recv: 0,
            peer_fin: false,
            in_off: 0,
            acked: 0,
            ack_at: None,
            last_ack: None,
        }
    }

    /// Bytes the application may send now (backpressure when 0).
    pub fn room(&self) -> usize {
        if self.fin_sent {
            0
        } else {
            self.cap.saturating_sub(self.out.bytes())
        }
    }

    /// Unacknowledged bytes held for retransmission.
    pub fn buffered(&self) -> usize {
        self.out.bytes()
    }

    /// Frames application bytes into `tx` and keeps them for retransmission.
    /// The caller keeps to [`Core::room`]; nothing is sent after the FIN.
    pub fn send(&mut self, data: &[u8], tx: &mut Vec<u8>) {
        debug_assert!(!self.fin_sent, "data after FIN");
        for c in data.chunks(frame::MAX_DATA) {
            frame::put_data(tx, c);
            self.out.push(c.to_vec());
        }
    }

    /// Ends our direction (the application closed its write side).
    pub fn send_fin(&mut self, tx: &mut Vec<u8>) {
        if !self.fin_sent {
            self.fin_sent = true;
            frame::put_fin(tx);
        }
    }

    pub fn fin_sent(&self) -> bool {
        self.fin_sent
    }

    /// Units received: the count our ACKs and RESUMEs carry.
    pub fn recv_count(&self) -> u64 {
        self.recv + u64::from(self.peer_fin)
    }

    /// Units sent so far (application bytes and FIN).
    pub fn sent_count(&self) -> u64 {
        self.out.sent() + u64::from(self.fin_sent)
    }

    /// The highest count the peer acknowledged.
    pub fn peer_acked(&self) -> u64 {
        self.peer_acked
    }

    /// When the last ACK from the peer arrived.
    pub fn last_ack(&self) -> Option<Instant> {
        self.last_ack
    }

    /// The peer ended its direction.
    pub fn peer_fin(&self) -> bool {
        self.peer_fin
    }

    /// Both directions ended and acknowledged: the connection may be closed
    /// (close_notify) without losing anything.
    pub fn finished(&self) -> bool {
        self.fin_acked && self.peer_fin && self.acked == self.recv_count()
    }

    fn put_ack(&mut self, tx: &mut Vec<u8>, want_reply: bool) {
        self.acked = self.recv_count();
        self.ack_at = None;
        frame::put_ack(tx, self.acked, want_reply);
    }

    /// A keepalive: an ACK the peer answers at once.
    pub fn ping(&mut self, tx: &mut Vec<u8>) {
        self.put_ack(tx, true);
    }

    fn take_ack(&mut self, count: u64) -> Result<bool, ProtocolError> {
        if count < self.peer_acked || count > self.sent_count() {
            return Err(ProtocolError("acknowledged count out of range"));
        }
        self.peer_acked = count;
        let freed = self
            .out
            .acked(count.min(self.out.sent()), drop)
            .map_err(|_| ProtocolError("acknowledged count out of range"))?;
        if self.fin_sent && count == self.sent_count() {
            self.fin_acked = true;
        }
        Ok(freed)
    }

    /// Consumes the complete frames at the start of `plain` (removing them),
    /// appending application bytes to `app` and frames to send to `tx`.
    /// Returns whether buffer room was freed.
    pub fn receive(
        &mut self,
        plain: &mut Vec<u8>,
        app: &mut Vec<u8>,
        tx: &mut Vec<u8>,
        now: Instant,
    ) -> Result<bool, ProtocolError> {
        let mut at = 0;
        let mut freed = false;
        let result = loop {
            let (f, n) = match frame::parse(&plain[at..]) {
                Ok(Some(x)) => x,
                Ok(None) => break Ok(freed),
                Err(e) => break Err(e.into()),
            };
            at += n;
            let r = match f {
                Frame::Data(d) => self.data(d, app, tx, now),
                Frame::Fin => self.fin(tx),
                Frame::Ack { count, want_reply } => {
                    self.last_ack = Some(now);
                    let r = self.take_ack(count).map(|f| freed |= f);
                    if want_reply {
                        self.put_ack(tx, false);
                    }
                    r
                }
                Frame::Resume { .. } => Err(ProtocolError("RESUME on a running connection")),
            };
            if let Err(e) = r {
                break Err(e);
            }
        };
        plain.drain(..at);
        result
    }

    fn data(
        &mut self,
        d: &[u8],
        app: &mut Vec<u8>,
        tx: &mut Vec<u8>,
        now: Instant,
    ) -> Result<(), ProtocolError> {
        let end = self.in_off + d.len() as u64;
        if self.in_off > self.recv || (self.peer_fin && end > self.recv) {
            return Err(ProtocolError("DATA beyond the stream"));
        }
        if end > self.recv {
            app.extend_from_slice(&d[(self.recv - self.in_off) as usize..]);
            self.recv = end;
        }
        self.in_off = end;
        if self.recv_count() - self.acked >= ACK_BYTES {
            self.put_ack(tx, false);
        } else if self.ack_at.is_none() && self.recv_count() > self.acked {
            self.ack_at = Some(now + ACK_DELAY);
        }
        Ok(())
    }

    fn fin(&mut self, tx: &mut Vec<u8>) -> Result<(), ProtocolError> {
        if self.in_off != self.recv {
            return Err(ProtocolError("FIN out of place"));
        }
        self.in_off += 1;
        if !self.peer_fin {
            self.peer_fin = true;
            self.put_ack(tx, false);
        }
        Ok(())
    }

    /// When [`Core::on_timeout`] wants to run.
    pub fn timeout(&self) -> Option<Instant> {
        self.ack_at
    }

    /// Sends a delayed ACK when due.
    pub fn on_timeout(&mut self, now: Instant, tx: &mut Vec<u8>) {
        if self.ack_at.is_some_and(|t| now >= t) {
            self.put_ack(tx, false);
        }
    }

    /// Switches to a new connection after the reconnect exchange
    /// (docs/restls.md §5): we announced `announced` (our [`Core::recv_count`]
    /// then), the peer announced `peer_count`. Frees what the peer has,
    /// and frames everything else again into `tx`.
    pub fn resume(
        &mut self,
        peer_count: u64,
        announced: u64,
        tx: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        if announced > self.recv_count() {
            return Err(ProtocolError("announced count beyond what was received"));
        }
        self.take_ack(peer_count)?;
        self.in_off = announced;
        self.acked = announced;
        self.ack_at = None;
        let from = peer_count.min(self.out.sent());
        for c in self
            .out
            .unacked_from(from)
            .map_err(|_| ProtocolError("peer's count out of range"))?
        {
            frame::put_data(tx, c);
        }
        if self.fin_sent && !self.fin_acked {
            frame::put_fin(tx);
        }
        if self.recv_count() > announced {
            self.put_ack(tx, false);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moves everything in `tx` to the other side, losing nothing.
    fn deliver(from_tx: &mut Vec<u8>, to: &mut Core, app: &mut Vec<u8>, back: &mut Vec<u8>) {
        let mut plain = std::mem::take(from_tx);
        to.receive(&mut plain, app, back, Instant::now()).unwrap();
        assert!(plain.is_empty());
    }

    #[test]
    fn bytes_acks_fin_and_finish() {
        let (mut a, mut b) = (Core::new(1 << 20), Core::new(1 << 20));
        let (mut ta, mut tb, mut app_b, mut app_a) = (vec![], vec![], vec![], vec![]);
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        a.send(&data, &mut ta);
        assert_eq!(a.buffered(), data.len());
        deliver(&mut ta, &mut b, &mut app_b, &mut tb);
        assert_eq!(app_b, data);
        // 256 KiB triggered an ACK; the rest waits for the timer.
        deliver(&mut tb, &mut a, &mut app_a, &mut ta);
        assert_eq!(a.buffered(), data.len() - ACK_BYTES as usize);
        b.on_timeout(Instant::now() + ACK_DELAY, &mut tb);
        deliver(&mut tb, &mut a, &mut app_a, &mut ta);
        assert_eq!(a.buffered(), 0);
        a.send_fin(&mut ta);
        assert_eq!(a.room(), 0);
        b.send_fin(&mut tb);
        deliver(&mut ta, &mut b, &mut app_b, &mut tb);
        deliver(&mut tb, &mut a, &mut app_a, &mut ta);
        deliver(&mut ta, &mut b, &mut app_b, &mut tb);
        assert!(a.peer_fin() && b.peer_fin());
        assert!(a.finished() && b.finished(), "{a:?} {b:?}");
    }

    #[test]
    fn resume_retransmits_and_skips_duplicates() {
        let (mut a, mut b) = (Core::new(1 << 20), Core::new(1 << 20));
        let (mut ta, mut tb, mut app_b) = (vec![], vec![], vec![]);
        a.send(b"hello ", &mut ta);
        deliver(&mut ta, &mut b, &mut app_b, &mut tb);
        a.send(b"world", &mut ta);
        a.send_fin(&mut ta);
        ta.clear(); // lost with the connection
                    // b announces 6; a announces 0. Pretend b announced 3 (it may lag).
        a.resume(3, 0, &mut ta).unwrap();
        b.resume(0, 3, &mut tb).unwrap();
        deliver(&mut ta, &mut b, &mut app_b, &mut tb);
        assert_eq!(app_b, b"hello world");
        assert!(b.peer_fin());
        let mut app_a = vec![];
        deliver(&mut tb, &mut a, &mut app_a, &mut ta);
        assert_eq!(a.buffered(), 0);
    }

    #[test]
    fn hostile_counts_are_errors() {
        let mut a = Core::new(100);
        let (mut tx, mut app) = (vec![], vec![]);
        a.send(b"abc", &mut tx);
        let mut p = vec![];
        frame::put_ack(&mut p, 4, false);
        assert!(a
            .receive(&mut p, &mut app, &mut tx, Instant::now())
            .is_err());
        assert!(a.resume(5, 0, &mut tx).is_err());
        assert!(
            a.resume(0, 1, &mut tx).is_err(),
            "announced beyond received"
        );
        let mut b = Core::new(100);
        let mut p = vec![];
        frame::put_fin(&mut p);
        frame::put_data(&mut p, b"x");
        assert!(b
            .receive(&mut p, &mut app, &mut tx, Instant::now())
            .is_err());
    }
}
