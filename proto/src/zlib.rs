//! `zlib@openssh.com`: OpenSSH's delayed compression (its packet.c).
//!
//! Each direction is a zlib stream (RFC 1950 framing, level 6) whose
//! packets end with a partial flush, so every packet inflates on its own
//! from the stream so far. The stream belongs to a set of keys: a NEWKEYS
//! that agreed on `zlib@openssh.com` starts a fresh stream in its direction
//! once user authentication succeeded (the server from the packet after its
//! `SSH_MSG_USERAUTH_SUCCESS`, the client from the packet after receiving
//! it), and a NEWKEYS after authentication starts one at once. Rekeys and
//! the resilience extension's reconnects (whose NEWKEYS are the same kind)
//! therefore never carry a stream over: docs/PROTOCOL.md §9.
//!
//! What the peer sends inflates to at most [`MAX_INFLATED`] bytes per
//! packet; past that the packet is refused before more is allocated.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::error::{Error, Result};
use crate::transport::MAX_PACKET_LEN;

/// The method's name in KEXINIT.
pub const NAME: &str = "zlib@openssh.com";
/// Largest payload a compressed packet may inflate to: what an
/// uncompressed packet may carry at most.
pub const MAX_INFLATED: usize = MAX_PACKET_LEN;
/// OpenSSH's level (`start_compression_out(ssh, 6)`).
const LEVEL: u32 = 6;

/// The compression list a party offers, as OpenSSH's
/// `compression_alg_list` and sshd: a client that wants compression puts it
/// first, one that does not still accepts it after `none`; a server offers
/// it after `none`, or not at all.
pub fn offer(client: bool, compression: bool) -> Vec<String> {
    let names: &[&str] = match (client, compression) {
        (true, true) => &[NAME, "none"],
        (true, false) | (false, true) => &["none", NAME],
        (false, false) => &["none"],
    };
    names.iter().map(|n| n.to_string()).collect()
}

/// Whether `zlib@openssh.com` was agreed on for one direction, given the
/// compression name a key exchange agreed on.
pub fn agreed(name: &str) -> bool {
    name == NAME
}

/// Bytes of a stream's input kept so that another process can rebuild it
/// (see [`Delayed::export`]): enough for what a server sends between its
/// `SSH_MSG_USERAUTH_SUCCESS` and handing the connection on.
const MAX_HISTORY: usize = 4096;

/// One direction's compression state, as OpenSSH's `comp->enabled` and
/// `after_authentication`: the stream runs only when both the keys in use
/// agreed on it and authentication is over.
pub struct Delayed<S> {
    agreed: bool,
    after_auth: bool,
    stream: Option<S>,
    /// The inputs fed to `stream` so far, while they fit in MAX_HISTORY.
    history: Option<Vec<Vec<u8>>>,
}

/// [`Delayed`] as it moves to another process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Exported {
    pub agreed: bool,
    pub after_auth: bool,
    /// The inputs of the running stream, in order.
    pub history: Vec<Vec<u8>>,
}

impl<S: Stream> Default for Delayed<S> {
    fn default() -> Self {
        Delayed {
            agreed: false,
            after_auth: false,
            stream: None,
            history: Some(Vec::new()),
        }
    }
}

impl<S: Stream> Delayed<S> {
    /// New keys: `agreed` is whether their exchange chose compression. A
    /// stream of the old keys ends here.
    pub fn new_keys(&mut self, agreed: bool) {
        self.agreed = agreed;
        self.restart();
    }

    /// User authentication succeeded: from the next packet on.
    pub fn authenticated(&mut self) {
        self.after_auth = true;
        if self.stream.is_none() {
            self.restart();
        }
    }

    fn restart(&mut self) {
        self.stream = (self.agreed && self.after_auth).then(S::fresh);
        self.history = Some(Vec::new());
    }

    /// Whether packets go through the stream now.
    pub fn is_on(&self) -> bool {
        self.stream.is_some()
    }

    /// Passes one packet's payload through the stream, appending the
    /// result to `out`; `Ok(false)` (and nothing done) when off.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        let Some(s) = self.stream.as_mut() else {
            return Ok(false);
        };
        s.feed(input, out)?;
        if let Some(h) = self.history.as_mut() {
            if h.iter().map(Vec::len).sum::<usize>() + input.len() <= MAX_HISTORY {
                h.push(input.to_vec());
            } else {
                self.history = None;
            }
        }
        Ok(true)
    }

    /// What a process that continues the connection needs. A zlib
    /// stream's state is not exported; its inputs are, while they are
    /// small (a server's first packets after authentication), and
    /// [`Self::import`] feeds them to a fresh stream again, which leaves
    /// it exactly as here (deflate and inflate are deterministic).
    pub fn export(&self) -> Result<Exported> {
        let Some(history) = self.history.clone() else {
            return Err(Error::Misuse("export of a long-running compression stream"));
        };
        Ok(Exported {
            agreed: self.agreed,
            after_auth: self.after_auth,
            history,
        })
    }

    /// The inverse of [`Self::export`]; `e` is hostile input.
    pub fn import(e: Exported) -> Result<Self> {
        let total = e.history.iter().map(Vec::len).sum::<usize>();
        let on = e.agreed && e.after_auth;
        if total > MAX_HISTORY || (!on && !e.history.is_empty()) {
            return Err(Error::State("inconsistent compression state"));
        }
        let mut d = Delayed {
            agreed: e.agreed,
            after_auth: e.after_auth,
            stream: on.then(S::fresh),
            history: Some(Vec::new()),
        };
        let mut scratch = Vec::new();
        for input in &e.history {
            scratch.clear();
            d.feed(input, &mut scratch)?;
        }
        Ok(d)
    }
}

/// A zlib stream of one direction.
pub trait Stream {
    fn fresh() -> Self;
    /// One packet's payload through the stream, appended to `out`.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()>;
}

/// The sending side.
pub struct Deflate(Compress);

impl Stream for Deflate {
    fn fresh() -> Self {
        Deflate(Compress::new(Compression::new(LEVEL), true))
    }

    /// Compresses one payload, flushed so that the peer can inflate it
    /// alone (OpenSSH's Z_PARTIAL_FLUSH).
    fn feed(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let start = self.0.total_in();
        loop {
            let done = (self.0.total_in() - start) as usize;
            out.reserve(payload.len() - done + 64);
            self.0
                .compress_vec(&payload[done..], out, FlushCompress::Partial)
                .map_err(|_| Error::State("compression failed"))?;
            // As zlib's deflate(): done when it left output room unused.
            if out.len() < out.capacity() && (self.0.total_in() - start) as usize == payload.len() {
                return Ok(());
            }
        }
    }
}

/// The receiving side.
pub struct Inflate(Decompress);

impl Stream for Inflate {
    fn fresh() -> Self {
        Inflate(Decompress::new(true))
    }

    /// Inflates one packet's payload: all of `input` must be used, and
    /// the result may not pass [`MAX_INFLATED`] bytes (the memory used
    /// stays below that bound whatever the input).
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let start = self.0.total_in();
        let base = out.len();
        out.reserve_exact(input.len().saturating_mul(4).clamp(256, MAX_INFLATED + 1));
        loop {
            let before = ((self.0.total_in() - start) as usize, out.len());
            let status = self
                .0
                .decompress_vec(&input[before.0..], out, FlushDecompress::Sync)
                .map_err(|_| Error::Malformed("compressed data"))?;
            if out.len() - base > MAX_INFLATED {
                return Err(Error::TooLarge("decompressed packet"));
            }
            if status == Status::StreamEnd {
                // OpenSSH's streams never end; one that does is not theirs.
                return Err(Error::Malformed("compressed data (stream end)"));
            }
            let done = (self.0.total_in() - start) as usize;
            if out.len() < out.capacity() {
                if done == input.len() {
                    return Ok(());
                }
                if (done, out.len()) == before {
                    return Err(Error::Malformed("compressed data"));
                }
                continue;
            }
            // Output full: grow, never past the bound (plus one byte, to
            // tell "exactly the bound" from "more").
            let room = out.capacity().min(MAX_INFLATED + 1 - (out.len() - base));
            if room == 0 {
                return Err(Error::TooLarge("decompressed packet"));
            }
            out.reserve_exact(room);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on<S: Stream>() -> Delayed<S> {
        let mut d = Delayed::default();
        d.new_keys(true);
        d.authenticated();
        d
    }

    fn through(d: &mut Delayed<Deflate>, i: &mut Delayed<Inflate>, payload: &[u8]) -> Vec<u8> {
        let (mut z, mut back) = (Vec::new(), Vec::new());
        assert!(d.feed(payload, &mut z).unwrap());
        assert!(i.feed(&z, &mut back).unwrap());
        back
    }

    #[test]
    fn packets_roundtrip_one_by_one() {
        let (mut d, mut i) = (on(), on());
        let mut seed = 7u32;
        for n in [1usize, 5, 1000, 32768, 70000, 3] {
            let payload: Vec<u8> = (0..n)
                .map(|k| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    if k % 3 == 0 {
                        (seed >> 16) as u8
                    } else {
                        b'a'
                    }
                })
                .collect();
            assert_eq!(through(&mut d, &mut i, &payload), payload);
        }
    }

    #[test]
    fn inflation_past_the_bound_is_refused() {
        let (mut d, mut i) = (on::<Deflate>(), on::<Inflate>());
        assert_eq!(
            through(&mut d, &mut i, &vec![0u8; MAX_INFLATED]).len(),
            MAX_INFLATED
        );
        let mut z = Vec::new();
        d.feed(&vec![0u8; MAX_INFLATED + 1], &mut z).unwrap();
        assert!(z.len() < 1024, "{} bytes", z.len());
        let mut back = Vec::new();
        assert!(matches!(i.feed(&z, &mut back), Err(Error::TooLarge(_))));
        assert!(back.capacity() <= 2 * (MAX_INFLATED + 1));
    }

    #[test]
    fn garbage_and_ended_streams_are_refused() {
        let mut i = on::<Inflate>();
        assert!(i
            .feed(b"\x78\x9c\xff\xff\xff\xff", &mut Vec::new())
            .is_err());
        // A whole stream (with its end) is not what OpenSSH sends.
        let mut ended = Vec::with_capacity(256);
        let mut c = Compress::new(Compression::new(6), true);
        c.compress_vec(b"\x5ehello", &mut ended, FlushCompress::Finish)
            .unwrap();
        assert!(on::<Inflate>().feed(&ended, &mut Vec::new()).is_err());
    }

    #[test]
    fn delayed_starts_after_auth_and_restarts_with_new_keys() {
        let mut w: Delayed<Deflate> = Delayed::default();
        w.new_keys(true);
        assert!(!w.is_on(), "before authentication");
        w.authenticated();
        assert!(w.is_on());
        w.new_keys(false);
        assert!(!w.is_on());
        w.new_keys(true);
        assert!(w.is_on(), "after authentication, at once");
    }

    #[test]
    fn a_stream_moves_by_its_short_history_only() {
        let (mut d, mut i) = (on::<Deflate>(), on::<Inflate>());
        through(&mut d, &mut i, b"\xc8first packet, before the hand-over");
        let mut d = Delayed::<Deflate>::import(d.export().unwrap()).unwrap();
        let mut i = Delayed::<Inflate>::import(i.export().unwrap()).unwrap();
        for _ in 0..3 {
            let p = b"\x5e and the same again and again and again";
            assert_eq!(through(&mut d, &mut i, p), p);
        }
        // The deflating side keeps payloads, the inflating side what came
        // on the wire (here much less).
        through(&mut d, &mut i, &vec![1u8; MAX_HISTORY]);
        assert!(d.export().is_err());
        assert!(i.export().is_ok());
        let hostile = Exported {
            agreed: false,
            after_auth: true,
            history: vec![vec![1]],
        };
        assert!(Delayed::<Inflate>::import(hostile).is_err());
    }
}
