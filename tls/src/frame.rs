//! Frames carried in TLS application data once the extension is negotiated
//! (docs/restls.md §4). Every length is checked before anything is taken
//! from the input; nothing is allocated from a peer's value.

/// Largest DATA payload.
pub const MAX_DATA: usize = 16384;
/// Length of a RESUME MAC.
pub const MAC_LEN: usize = 32;

const T_DATA: u8 = 0x01;
const T_ACK: u8 = 0x02;
const T_FIN: u8 = 0x03;
const T_RESUME: u8 = 0x04;

/// ACK flag: answer with an ACK at once (keepalive).
const WANT_REPLY: u8 = 0x01;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    Data(&'a [u8]),
    Ack { count: u64, want_reply: bool },
    Fin,
    Resume { count: u64, mac: &'a [u8; MAC_LEN] },
}

/// A frame that breaks docs/restls.md §4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed frame: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

fn u64_at(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

/// Parses the frame at the start of `buf`: `Ok(None)` when it is not
/// complete yet, else the frame and its length.
pub fn parse(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, Malformed> {
    let Some(&t) = buf.first() else {
        return Ok(None);
    };
    let need = |n: usize| buf.len() >= n;
    match t {
        T_DATA => {
            if !need(3) {
                return Ok(None);
            }
            let len = u16::from_be_bytes([buf[1], buf[2]]) as usize;
            if len == 0 || len > MAX_DATA {
                return Err(Malformed("DATA length"));
            }
            if !need(3 + len) {
                return Ok(None);
            }
            Ok(Some((Frame::Data(&buf[3..3 + len]), 3 + len)))
        }
        T_ACK => {
            if !need(10) {
                return Ok(None);
            }
            let flags = buf[9];
            if flags & !WANT_REPLY != 0 {
                return Err(Malformed("ACK flags"));
            }
            let f = Frame::Ack {
                count: u64_at(&buf[1..]),
                want_reply: flags & WANT_REPLY != 0,
            };
            Ok(Some((f, 10)))
        }
        T_FIN => Ok(Some((Frame::Fin, 1))),
        T_RESUME => {
            if !need(9 + MAC_LEN) {
                return Ok(None);
            }
            let mac = buf[9..9 + MAC_LEN].try_into().expect("MAC_LEN bytes");
            Ok(Some((
                Frame::Resume {
                    count: u64_at(&buf[1..]),
                    mac,
                },
                9 + MAC_LEN,
            )))
        }
        _ => Err(Malformed("frame type")),
    }
}

/// Appends DATA frames carrying `data` (split at [`MAX_DATA`]).
pub fn put_data(out: &mut Vec<u8>, data: &[u8]) {
    for c in data.chunks(MAX_DATA) {
        out.push(T_DATA);
        out.extend_from_slice(&(c.len() as u16).to_be_bytes());
        out.extend_from_slice(c);
    }
}

pub fn put_ack(out: &mut Vec<u8>, count: u64, want_reply: bool) {
    out.push(T_ACK);
    out.extend_from_slice(&count.to_be_bytes());
    out.push(if want_reply { WANT_REPLY } else { 0 });
}

pub fn put_fin(out: &mut Vec<u8>) {
    out.push(T_FIN);
}

pub fn put_resume(out: &mut Vec<u8>, count: u64, mac: &[u8; MAC_LEN]) {
    out.push(T_RESUME);
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(mac);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_prefix() {
        let mut b = Vec::new();
        put_data(&mut b, &[7; MAX_DATA + 5]);
        put_ack(&mut b, 1 << 40, true);
        put_fin(&mut b);
        put_resume(&mut b, 9, &[3; MAC_LEN]);
        let mut frames = Vec::new();
        let mut at = 0;
        while at < b.len() {
            let rest = &b[at..];
            for cut in 0..rest.len().min(40) {
                if let Some((_, n)) = parse(&rest[..cut]).unwrap() {
                    assert!(n <= cut);
                }
            }
            let (f, n) = parse(rest).unwrap().unwrap();
            frames.push(f);
            at += n;
        }
        assert_eq!(frames.len(), 5);
        assert_eq!(frames[0], Frame::Data(&[7; MAX_DATA]));
        assert_eq!(frames[1], Frame::Data(&[7; 5]));
        assert_eq!(
            frames[2],
            Frame::Ack {
                count: 1 << 40,
                want_reply: true
            }
        );
        assert_eq!(frames[3], Frame::Fin);
        assert_eq!(
            frames[4],
            Frame::Resume {
                count: 9,
                mac: &[3; MAC_LEN]
            }
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(&[0]).is_err());
        assert!(parse(&[0x05]).is_err());
        assert!(parse(&[T_DATA, 0, 0]).is_err());
        assert!(parse(&[T_DATA, 0x40, 0x01]).is_err());
        assert!(parse(&[T_ACK, 0, 0, 0, 0, 0, 0, 0, 0, 2]).is_err());
        assert_eq!(parse(&[T_DATA, 0x40, 0x00]).unwrap(), None);
    }
}
