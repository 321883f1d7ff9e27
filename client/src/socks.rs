//! The SOCKS side of -D (dynamic forwarding): SOCKS4, SOCKS4a and SOCKS5
//! (RFC 1928) CONNECT without authentication, as ssh offers them. Sans-IO:
//! [`Handshake`] takes the bytes a local client sent and says what to send
//! back and where the client wants to go.
//!
//! Whatever connects to the listener is hostile: the request is bounded
//! ([`MAX_REQUEST`]) before anything is kept, decoded strictly, and a bad one
//! ends that one client with a reply saying why where the protocol has one.
//!
//! Unlike ssh, which grants every request at once, the reply waits for the
//! server's answer to the channel open, so a client learns of a refused or
//! failed connection ([`reply`]).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest request kept (ssh's limit for SOCKS4 too): greeting and request,
/// user id and host name included. Longer is refused.
pub const MAX_REQUEST: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// SOCKS4 and SOCKS4a: they share the reply.
    V4,
    V5,
}

/// Where a client asked to be connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub version: Version,
    pub host: String,
    pub port: u16,
}

/// How a request ended, in SOCKS5's reply codes (SOCKS4 has granted or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rep {
    Succeeded = 0,
    GeneralFailure = 1,
    NotAllowed = 2,
    Refused = 5,
    CommandNotSupported = 7,
    AddressTypeNotSupported = 8,
}

/// The reply to a request of `version`.
pub fn reply(version: Version, rep: Rep) -> Vec<u8> {
    match version {
        // VN 0, CD 90 (granted) or 91 (rejected or failed), port and address unused.
        Version::V4 => vec![
            0,
            if rep == Rep::Succeeded { 90 } else { 91 },
            0,
            0,
            0,
            0,
            0,
            0,
        ],
        // VER, REP, RSV, ATYP IPv4, BND.ADDR 0.0.0.0, BND.PORT 0.
        Version::V5 => vec![5, rep as u8, 0, 1, 0, 0, 0, 0, 0, 0],
    }
}

/// A request that cannot be served: `reply` (possibly empty) goes to the
/// client before it is closed; `why` is for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reply: Vec<u8>,
    pub why: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// The request is not complete yet.
    More,
    /// The request is complete; `rest` is what the client sent after it
    /// (data for the connection).
    Connect { request: Request, rest: Vec<u8> },
}

/// One client's handshake.
#[derive(Debug, Default)]
pub struct Handshake {
    /// Received and not yet consumed; never longer than [`MAX_REQUEST`].
    buf: Vec<u8>,
    /// SOCKS5: the method selection was answered; the request comes next.
    greeted: bool,
}

fn refuse(version: Option<Version>, rep: Rep, why: impl Into<String>) -> Refusal {
    Refusal {
        reply: version.map(|v| reply(v, rep)).unwrap_or_default(),
        why: why.into(),
    }
}

/// A host name as a client may send it: 1 to 255 visible ASCII characters.
fn host_name(b: &[u8]) -> Option<String> {
    if b.is_empty() || b.len() > 255 || !b.iter().all(|c| c.is_ascii_graphic()) {
        return None;
    }
    String::from_utf8(b.to_vec()).ok()
}

impl Handshake {
    /// How many more bytes may be fed.
    pub fn room(&self) -> usize {
        MAX_REQUEST - self.buf.len()
    }

    /// Takes bytes from the client (at most [`Handshake::room`]); bytes to
    /// send back go to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<Progress, Refusal> {
        if data.len() > self.room() {
            return Err(refuse(None, Rep::GeneralFailure, "request too long"));
        }
        self.buf.extend_from_slice(data);
        let r = match self.buf.first().copied() {
            None => Ok(None),
            Some(4) => self.socks4(),
            Some(5) if !self.greeted => match self.greeting(out) {
                Ok(true) => self.socks5(),
                Ok(false) => Ok(None),
                Err(e) => Err(e),
            },
            Some(5) => self.socks5(),
            Some(v) => Err(refuse(
                None,
                Rep::GeneralFailure,
                format!("not a SOCKS4 or SOCKS5 request (version byte {v:#04x})"),
            )),
        };
        match r? {
            Some((request, used)) => {
                let rest = self.buf.split_off(used);
                self.buf.clear();
                Ok(Progress::Connect { request, rest })
            }
            None if self.buf.len() >= MAX_REQUEST => {
                let v = if self.buf[0] == 4 {
                    Version::V4
                } else {
                    Version::V5
                };
                Err(refuse(Some(v), Rep::GeneralFailure, "request too long"))
            }
            None => Ok(Progress::More),
        }
    }

    /// SOCKS4: VN 4, CD, DSTPORT, DSTIP, USERID NUL; SOCKS4a (DSTIP
    /// 0.0.0.x, x not 0) adds the host name and NUL.
    fn socks4(&self) -> Result<Option<(Request, usize)>, Refusal> {
        let b = &self.buf;
        if b.len() < 8 {
            return Ok(None);
        }
        let fail = |why: String| refuse(Some(Version::V4), Rep::GeneralFailure, why);
        if b[1] != 1 {
            return Err(fail(format!(
                "SOCKS4 command {} is not supported (only CONNECT)",
                b[1]
            )));
        }
        let port = u16::from_be_bytes([b[2], b[3]]);
        let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
        let Some(user_end) = b[8..].iter().position(|&c| c == 0).map(|i| 8 + i) else {
            return Ok(None);
        };
        let a4 = b[4] == 0 && b[5] == 0 && b[6] == 0 && b[7] != 0;
        if !a4 {
            let request = Request {
                version: Version::V4,
                host: ip.to_string(),
                port,
            };
            return Ok(Some((request, user_end + 1)));
        }
        let start = user_end + 1;
        let Some(host_end) = b[start..].iter().position(|&c| c == 0).map(|i| start + i) else {
            return Ok(None);
        };
        let host = host_name(&b[start..host_end])
            .ok_or_else(|| fail("SOCKS4a: bad host name".to_string()))?;
        let request = Request {
            version: Version::V4,
            host,
            port,
        };
        Ok(Some((request, host_end + 1)))
    }

    /// SOCKS5 method selection: VER 5, NMETHODS, METHODS. Only "no
    /// authentication" (0) is offered. True once answered.
    fn greeting(&mut self, out: &mut Vec<u8>) -> Result<bool, Refusal> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(false);
        }
        let n = b[1] as usize;
        if b.len() < 2 + n {
            return Ok(false);
        }
        if !b[2..2 + n].contains(&0) {
            return Err(Refusal {
                reply: vec![5, 0xff],
                why: "SOCKS5: the client offers no method without authentication".into(),
            });
        }
        out.extend_from_slice(&[5, 0]);
        self.buf.drain(..2 + n);
        self.greeted = true;
        Ok(true)
    }

    /// SOCKS5 request: VER 5, CMD, RSV 0, ATYP, DST.ADDR, DST.PORT.
    fn socks5(&self) -> Result<Option<(Request, usize)>, Refusal> {
        let b = &self.buf;
        if b.len() < 4 {
            return Ok(None);
        }
        let v5 = Some(Version::V5);
        if b[0] != 5 || b[2] != 0 {
            return Err(refuse(v5, Rep::GeneralFailure, "SOCKS5: malformed request"));
        }
        if b[1] != 1 {
            return Err(refuse(
                v5,
                Rep::CommandNotSupported,
                format!("SOCKS5 command {} is not supported (only CONNECT)", b[1]),
            ));
        }
        let (addr_len, addr_at) = match b[3] {
            1 => (4, 4),
            4 => (16, 4),
            3 => match b.get(4) {
                None => return Ok(None),
                Some(&n) => (n as usize, 5),
            },
            t => {
                return Err(refuse(
                    v5,
                    Rep::AddressTypeNotSupported,
                    format!("SOCKS5: unknown address type {t}"),
                ))
            }
        };
        let end = addr_at + addr_len + 2;
        if b.len() < end {
            return Ok(None);
        }
        let a = &b[addr_at..addr_at + addr_len];
        let host = match b[3] {
            1 => Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string(),
            4 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(a);
                Ipv6Addr::from(o).to_string()
            }
            _ => host_name(a)
                .ok_or_else(|| refuse(v5, Rep::GeneralFailure, "SOCKS5: bad host name"))?,
        };
        let port = u16::from_be_bytes([b[end - 2], b[end - 1]]);
        let request = Request {
            version: Version::V5,
            host,
            port,
        };
        Ok(Some((request, end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes.
    fn run(input: &[u8], step: usize) -> (Vec<u8>, Result<Progress, Refusal>) {
        let mut h = Handshake::default();
        let mut out = Vec::new();
        let mut last = Ok(Progress::More);
        for chunk in input.chunks(step.max(1)) {
            last = h.feed(chunk, &mut out);
            if !matches!(last, Ok(Progress::More)) {
                break;
            }
        }
        (out, last)
    }

    fn connect(host: &str, port: u16, version: Version, rest: &[u8]) -> Result<Progress, Refusal> {
        Ok(Progress::Connect {
            request: Request {
                version,
                host: host.into(),
                port,
            },
            rest: rest.to_vec(),
        })
    }

    #[test]
    fn socks4_and_4a() {
        let mut r = vec![4, 1, 0x1f, 0x90, 127, 0, 0, 1];
        r.extend_from_slice(b"user\0data");
        // What came after the request in the same piece is kept for the
        // connection.
        for (step, rest) in [(1, &b""[..]), (3, b"da"), (13, b""), (100, b"data")] {
            assert_eq!(
                run(&r, step).1,
                connect("127.0.0.1", 8080, Version::V4, rest),
                "{step}"
            );
        }
        let mut r = vec![4, 1, 0, 80, 0, 0, 0, 9];
        r.extend_from_slice(b"\0example.org\0");
        assert_eq!(run(&r, 5).1, connect("example.org", 80, Version::V4, b""));
        // BIND is refused with a SOCKS4 rejection.
        let (_, e) = run(&[4, 2, 0, 80, 1, 2, 3, 4, 0], 9);
        assert_eq!(
            e.unwrap_err().reply,
            reply(Version::V4, Rep::GeneralFailure)
        );
        // An empty or invisible host name.
        assert!(run(b"\x04\x01\x00\x50\x00\x00\x00\x01\x00\x00", 20)
            .1
            .is_err());
        assert!(run(b"\x04\x01\x00\x50\x00\x00\x00\x01\x00a b\x00", 20)
            .1
            .is_err());
        assert_eq!(
            reply(Version::V4, Rep::Succeeded),
            [0, 90, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn socks5() {
        let mut r = vec![5, 2, 2, 0];
        r.extend_from_slice(&[5, 1, 0, 3, 11]);
        r.extend_from_slice(b"example.org");
        r.extend_from_slice(&[1, 187]);
        r.extend_from_slice(b"GET");
        for (step, rest) in [
            (1, &b""[..]),
            (2, b""),
            (3, b"GE"),
            (7, b"GET"),
            (1000, b"GET"),
        ] {
            let (out, res) = run(&r, step);
            assert_eq!(out, [5, 0]);
            assert_eq!(
                res,
                connect("example.org", 443, Version::V5, rest),
                "{step}"
            );
        }
        let r = [5, 1, 0, 5, 1, 0, 1, 10, 0, 0, 1, 0, 22];
        assert_eq!(run(&r, 100).1, connect("10.0.0.1", 22, Version::V5, b""));
        let mut r = vec![5, 1, 0, 5, 1, 0, 4];
        r.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        r.extend_from_slice(&[0, 22]);
        assert_eq!(run(&r, 100).1, connect("::1", 22, Version::V5, b""));
        assert_eq!(
            reply(Version::V5, Rep::Refused),
            [5, 5, 0, 1, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn socks5_refusals() {
        // Only username/password offered.
        let (out, e) = run(&[5, 1, 2], 10);
        assert!(out.is_empty());
        assert_eq!(e.unwrap_err().reply, [5, 0xff]);
        // No methods at all.
        assert_eq!(run(&[5, 0], 10).1.unwrap_err().reply, [5, 0xff]);
        // UDP ASSOCIATE, an unknown address type, a bad version, RSV set,
        // an empty host name.
        let e = run(&[5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0], 100)
            .1
            .unwrap_err();
        assert_eq!(e.reply, reply(Version::V5, Rep::CommandNotSupported));
        let e = run(&[5, 1, 0, 5, 1, 0, 9], 100).1.unwrap_err();
        assert_eq!(e.reply, reply(Version::V5, Rep::AddressTypeNotSupported));
        let e = run(&[5, 1, 0, 4, 1, 0, 1], 100).1.unwrap_err();
        assert_eq!(e.reply, reply(Version::V5, Rep::GeneralFailure));
        assert!(run(&[5, 1, 0, 5, 1, 1, 1], 100).1.is_err());
        assert!(run(&[5, 1, 0, 5, 1, 0, 3, 0, 0, 80], 100).1.is_err());
        // Not SOCKS at all: no reply.
        let e = run(b"GET / HTTP/1.1\r\n", 100).1.unwrap_err();
        assert!(e.reply.is_empty() && e.why.contains("0x47"), "{e:?}");
    }

    #[test]
    fn bounded() {
        // A SOCKS4 user id that never ends.
        let mut r = vec![4, 1, 0, 80, 1, 2, 3, 4];
        r.resize(5000, b'a');
        let mut h = Handshake::default();
        let mut out = Vec::new();
        let mut fed = 0;
        let e = loop {
            let n = h.room().min(r.len() - fed).min(300);
            match h.feed(&r[fed..fed + n], &mut out) {
                Ok(Progress::More) => fed += n,
                Ok(p) => panic!("{p:?}"),
                Err(e) => break e,
            }
        };
        assert!(
            fed <= MAX_REQUEST && e.why.contains("too long"),
            "{fed} {e:?}"
        );
        assert_eq!(e.reply, reply(Version::V4, Rep::GeneralFailure));
        // Feeding more than the room is refused, not kept.
        let mut h = Handshake::default();
        assert!(h.feed(&[4; MAX_REQUEST + 1], &mut out).is_err());
    }

    #[test]
    fn random_input_never_panics() {
        let mut data = vec![0u8; 1 << 16];
        openssl::rand::rand_bytes(&mut data).unwrap();
        for (i, start) in (0..data.len() - 600).step_by(97).enumerate() {
            let mut input = data[start..start + 600].to_vec();
            // Make most of them look like SOCKS to get past the first byte.
            input[0] = [4, 5, input[0]][i % 3];
            if i % 2 == 0 && input[0] == 5 {
                input[1] %= 4;
                input[2] = 0;
            }
            let (_, r) = run(&input, 1 + i % 50);
            if let Ok(Progress::Connect { request, rest }) = r {
                assert!(!request.host.is_empty() && rest.len() < 600);
            }
        }
    }
}
