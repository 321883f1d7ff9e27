//! The PROXY protocol header (HAProxy's, versions 1 and 2) that an L4 load
//! balancer puts in front of a connection's own bytes to tell the server
//! the client's real address.
//!
//! Sans-IO and incremental: [`step`] is given the bytes read so far (a
//! prefix of the header, never more) and says how many more to read, so a
//! reader never consumes a byte of what follows the header (the SSH
//! banner). Strict: a v1 line is `PROXY TCP4|TCP6 src dst sport dport`
//! with single spaces and canonical numbers, or `PROXY UNKNOWN ...`; a v2
//! header has the signature, version 2, command LOCAL or PROXY, an INET or
//! INET6 stream (or UNSPEC), an address block of its family's size and
//! well-formed TLVs (skipped). Bounded: a v1 line is at most 107 bytes
//! (the specification's limit), a v2 header at most [`MAX_V2`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes a version 2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest version 1 line, CRLF included (the specification's 107).
pub const MAX_V1: usize = 107;

/// The longest version 2 header accepted (16 bytes and what follows them).
/// HAProxy's TLVs (ALPN, authority, unique id, TLS details) take a few
/// hundred bytes.
pub const MAX_V2: usize = 16 + 2048;

/// Bytes both versions have at least (a v1 `PROXY UNKNOWN\r\n` is 15, a v2
/// header 16): the first read.
const FIRST: usize = 15;

/// What a complete header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// 1 or 2.
    pub version: u8,
    /// The client's address and the address it connected to; `None` when
    /// the header carries none (v1 UNKNOWN, v2 LOCAL or UNSPEC): the
    /// connection's own addresses stand.
    pub addrs: Option<(SocketAddr, SocketAddr)>,
}

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Read exactly this many more bytes (they are all header).
    Need(usize),
    /// The bytes given are exactly one complete header.
    Done(Header),
}

/// Why the bytes are not a PROXY header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Invalid {}

fn bad(why: &'static str) -> Invalid {
    Invalid(why)
}

/// Looks at `buf`, the bytes read so far, all of them header.
pub fn step(buf: &[u8]) -> Result<Step, Invalid> {
    if buf.len() < FIRST {
        // Refuse early what cannot become a header (an SSH banner).
        let v1 = b"PROXY ";
        let n = buf.len();
        if !v1.starts_with(&buf[..n.min(v1.len())]) && !V2_SIGNATURE.starts_with(&buf[..n.min(12)])
        {
            return Err(bad("no PROXY protocol header"));
        }
        return Ok(Step::Need(FIRST - buf.len()));
    }
    if buf.starts_with(b"PROXY ") {
        v1(buf)
    } else if buf.starts_with(&V2_SIGNATURE) {
        v2(buf)
    } else {
        Err(bad("no PROXY protocol header"))
    }
}

/// Parses a complete header at the start of `data` (which may go on past
/// it, as bytes peeked from a socket): the header and its length, `None`
/// if `data` ends before the header does.
pub fn parse(data: &[u8]) -> Result<Option<(Header, usize)>, Invalid> {
    let mut n = 0;
    loop {
        match step(&data[..n])? {
            Step::Done(h) => return Ok(Some((h, n))),
            Step::Need(k) if n + k <= data.len() => n += k,
            Step::Need(_) => return Ok(None),
        }
    }
}

fn v1(buf: &[u8]) -> Result<Step, Invalid> {
    let Some(line) = buf.strip_suffix(b"\r\n") else {
        if buf.len() >= MAX_V1 {
            return Err(bad("PROXY v1 line longer than 107 bytes"));
        }
        if buf[..buf.len() - 1].contains(&b'\r') || buf.contains(&b'\n') {
            return Err(bad("PROXY v1 line with a stray CR or LF"));
        }
        return Ok(Step::Need(1));
    };
    let line = std::str::from_utf8(line).map_err(|_| bad("PROXY v1 line not ASCII"))?;
    if !line.is_ascii() || line.contains('\r') {
        return Err(bad("PROXY v1 line not ASCII"));
    }
    let words: Vec<&str> = line.split(' ').collect();
    match words.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(Step::Done(Header {
            version: 1,
            addrs: None,
        })),
        ["PROXY", fam @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v4 = *fam == "TCP4";
            let ip = |s: &str| -> Result<IpAddr, Invalid> {
                let a: IpAddr = if v4 {
                    IpAddr::V4(s.parse().map_err(|_| bad("PROXY v1: bad IPv4 address"))?)
                } else {
                    IpAddr::V6(s.parse().map_err(|_| bad("PROXY v1: bad IPv6 address"))?)
                };
                Ok(a)
            };
            let src = SocketAddr::new(ip(src)?, port_v1(sport)?);
            let dst = SocketAddr::new(ip(dst)?, port_v1(dport)?);
            Ok(Step::Done(Header {
                version: 1,
                addrs: Some((src, dst)),
            }))
        }
        _ => Err(bad("PROXY v1 line malformed")),
    }
}

/// A v1 port: decimal, 0 to 65535, no sign or leading zero.
fn port_v1(s: &str) -> Result<u16, Invalid> {
    let ok = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if !ok {
        return Err(bad("PROXY v1: bad port"));
    }
    s.parse().map_err(|_| bad("PROXY v1: bad port"))
}

fn v2(buf: &[u8]) -> Result<Step, Invalid> {
    if buf.len() < 16 {
        return Ok(Step::Need(16 - buf.len()));
    }
    let ver_cmd = buf[12];
    let fam = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd >> 4 != 2 {
        return Err(bad("PROXY v2: version is not 2"));
    }
    let local = match ver_cmd & 0xf {
        0 => true,
        1 => false,
        _ => return Err(bad("PROXY v2: command neither LOCAL nor PROXY")),
    };
    if 16 + len > MAX_V2 {
        return Err(bad("PROXY v2 header longer than the limit"));
    }
    if buf.len() < 16 + len {
        return Ok(Step::Need(16 + len - buf.len()));
    }
    if buf.len() > 16 + len {
        return Err(bad("PROXY v2: bytes past the header"));
    }
    // LOCAL (a balancer's own health check): the connection's own
    // addresses stand, the block is skipped whatever its family.
    if local {
        return Ok(Step::Done(Header {
            version: 2,
            addrs: None,
        }));
    }
    let body = &buf[16..];
    let (addr_len, addrs) = match fam {
        // UNSPEC: no addresses; the connection's own stand.
        0x00 => (0, None),
        // TCP over IPv4.
        0x11 => {
            let b = body
                .get(..12)
                .ok_or(bad("PROXY v2: short IPv4 address block"))?;
            let src = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let dst = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            let sp = u16::from_be_bytes([b[8], b[9]]);
            let dp = u16::from_be_bytes([b[10], b[11]]);
            (
                12,
                Some((
                    SocketAddr::new(IpAddr::V4(src), sp),
                    SocketAddr::new(IpAddr::V4(dst), dp),
                )),
            )
        }
        // TCP over IPv6.
        0x21 => {
            let b = body
                .get(..36)
                .ok_or(bad("PROXY v2: short IPv6 address block"))?;
            let v6 = |s: &[u8]| {
                let mut a = [0u8; 16];
                a.copy_from_slice(s);
                IpAddr::V6(Ipv6Addr::from(a))
            };
            let sp = u16::from_be_bytes([b[32], b[33]]);
            let dp = u16::from_be_bytes([b[34], b[35]]);
            (
                36,
                Some((
                    SocketAddr::new(v6(&b[..16]), sp),
                    SocketAddr::new(v6(&b[16..32]), dp),
                )),
            )
        }
        _ => return Err(bad("PROXY v2: not a TCP connection over IPv4 or IPv6")),
    };
    let mut tlvs = &body[addr_len..];
    while !tlvs.is_empty() {
        if tlvs.len() < 3 {
            return Err(bad("PROXY v2: truncated TLV"));
        }
        let n = usize::from(u16::from_be_bytes([tlvs[1], tlvs[2]]));
        tlvs = tlvs
            .get(3 + n..)
            .ok_or(bad("PROXY v2: TLV longer than the header"))?;
    }
    Ok(Step::Done(Header { version: 2, addrs }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A v2 header as HAProxy 2.6 sends it with `send-proxy-v2` for a TCP
    /// connection from 198.18.1.2:40000 to 198.18.0.1:2222 (pinned).
    const V2_TCP4: [u8; 28] = [
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, // signature
        0x21, 0x11, 0x00, 0x0c, // PROXY, TCP4, 12 bytes
        198, 18, 1, 2, 198, 18, 0, 1, // addresses
        0x9c, 0x40, 0x08, 0xae, // ports 40000, 2222
    ];

    #[test]
    fn v1_lines() {
        let l = b"PROXY TCP4 198.18.1.2 198.18.0.1 40000 2222\r\n";
        assert_eq!(
            parse(l).unwrap(),
            Some((
                Header {
                    version: 1,
                    addrs: Some((sa("198.18.1.2:40000"), sa("198.18.0.1:2222")))
                },
                l.len()
            ))
        );
        let l = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\nSSH-2.0-x\r\n";
        let (h, n) = parse(l).unwrap().unwrap();
        assert_eq!(n, l.len() - 11);
        assert_eq!(
            h.addrs,
            Some((sa("[2001:db8::1]:1"), sa("[2001:db8::2]:65535")))
        );
        let (h, _) = parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap();
        assert_eq!(h.addrs, None);
        for bad_line in [
            &b"PROXY TCP4 198.18.1.2 198.18.0.1 40000 2222\n"[..],
            b"PROXY TCP4 198.18.1.2  198.18.0.1 40000 2222\r\n",
            b"PROXY TCP4 198.18.1.2 198.18.0.1 040000 2222\r\n",
            b"PROXY TCP4 198.18.1.2 198.18.0.1 65536 2222\r\n",
            b"PROXY TCP4 198.18.1.2 198.18.0.1 +1 2222\r\n",
            b"PROXY TCP4 2001:db8::1 198.18.0.1 1 2222\r\n",
            b"PROXY TCP6 198.18.1.2 198.18.0.1 1 2222\r\n",
            b"PROXY TCP4 198.18.1.2 198.18.0.1 1\r\n",
            b"PROXY UDP4 198.18.1.2 198.18.0.1 1 2\r\n",
            b"PROXY TCP4 198.18.1.2 198.18.0.1 1 2 3\r\n",
            b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
            b"proxy TCP4 198.18.1.2 198.18.0.1 1 2\r\n",
        ] {
            assert!(
                parse(bad_line).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad_line)
            );
        }
        // 107 bytes at most.
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(MAX_V1 - 2, b'x');
        long.extend_from_slice(b"\r\n");
        assert!(parse(&long).unwrap().is_some());
        long.insert(20, b'x');
        assert!(parse(&long).is_err());
    }

    #[test]
    fn v2_headers() {
        let (h, n) = parse(&V2_TCP4).unwrap().unwrap();
        assert_eq!(n, 28);
        assert_eq!(
            h,
            Header {
                version: 2,
                addrs: Some((sa("198.18.1.2:40000"), sa("198.18.0.1:2222")))
            }
        );
        // With a TLV (PP2_TYPE_UNIQUE_ID) and the SSH banner after it.
        let mut with_tlv = V2_TCP4.to_vec();
        with_tlv[15] = 12 + 3 + 4;
        with_tlv.extend_from_slice(&[0x05, 0, 4, 1, 2, 3, 4]);
        with_tlv.extend_from_slice(b"SSH-2.0-");
        assert_eq!(parse(&with_tlv).unwrap().unwrap().1, 35);
        // LOCAL: no addresses.
        let mut local = V2_TCP4;
        local[12] = 0x20;
        assert_eq!(parse(&local).unwrap().unwrap().0.addrs, None);
        // Version 1 in the v2 format, command 2, UDP, UNIX, short block,
        // a TLV overrunning, an overlong header.
        for (i, v) in [(12, 0x11), (12, 0x22), (13, 0x12), (13, 0x31), (15, 8)] {
            let mut h = V2_TCP4;
            h[i] = v;
            let r = parse(&h);
            assert!(r.is_err() || r == Ok(None), "{i} {v}: {r:?}");
            if (i, v) != (15, 8) {
                assert!(r.is_err(), "{i} {v}");
            }
        }
        let mut overrun = V2_TCP4.to_vec();
        overrun[15] = 12 + 3;
        overrun.extend_from_slice(&[0x05, 0, 4]);
        assert!(parse(&overrun).is_err());
        let mut huge = V2_TCP4.to_vec();
        huge[14] = 0xff;
        assert!(parse(&huge).is_err());
        assert_eq!(
            step(&huge[..16]),
            Err(bad("PROXY v2 header longer than the limit"))
        );
    }

    #[test]
    fn step_never_reads_past_the_header() {
        for header in [
            &b"PROXY TCP4 198.18.1.2 198.18.0.1 40000 2222\r\n"[..],
            &V2_TCP4[..],
        ] {
            let mut n = 0;
            while let Step::Need(k) = step(&header[..n]).unwrap() {
                assert!(n + k <= header.len());
                n += k;
            }
            assert_eq!(n, header.len());
        }
        // An SSH banner is refused at the first look.
        assert!(step(b"SSH-2.0-").is_err());
        assert!(step(b"").is_ok());
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&data);
        }

        #[test]
        fn every_change_to_a_v2_header_is_refused_or_read_whole(
            i in 0usize..28, v in any::<u8>()
        ) {
            let mut h = V2_TCP4;
            h[i] = v;
            if let Ok(Some((_, n))) = parse(&h) {
                prop_assert!(n <= h.len());
            }
        }
    }
}
