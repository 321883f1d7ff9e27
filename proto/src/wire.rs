//! SSH wire types (RFC 4251 §5): strict, bounded decoding and encoding.

use crate::error::{Error, Result};

/// The largest string any single field may declare. Packets themselves are
/// bounded far lower (see `transport::MAX_PACKET_LEN`), so this only guards
/// buffers decoded outside a packet (exported state, key files).
pub const MAX_FIELD_LEN: usize = 1 << 24;

/// A cursor over an untrusted byte slice. Every read checks the remaining
/// length before touching or allocating anything.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The bytes not yet read.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(Error::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// RFC 4251 boolean: any non-zero value is true.
    pub fn bool(&mut self) -> Result<bool> {
        Ok(self.u8()? != 0)
    }

    pub fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A length-prefixed byte string.
    pub fn string(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        if n > MAX_FIELD_LEN {
            return Err(Error::TooLarge("string"));
        }
        self.take(n)
    }

    /// A string that must be valid UTF-8.
    pub fn utf8(&mut self) -> Result<&'a str> {
        std::str::from_utf8(self.string()?).map_err(|_| Error::Malformed("UTF-8 string"))
    }

    /// A name-list: comma-separated US-ASCII names, none empty.
    pub fn name_list(&mut self) -> Result<Vec<&'a str>> {
        let s = self.string()?;
        if s.is_empty() {
            return Ok(Vec::new());
        }
        if !s.iter().all(|&c| (0x21..0x7f).contains(&c)) {
            return Err(Error::Malformed("name-list"));
        }
        // Checked ASCII above, so this cannot fail.
        let s = std::str::from_utf8(s).map_err(|_| Error::Malformed("name-list"))?;
        let names: Vec<&str> = s.split(',').collect();
        if names.iter().any(|n| n.is_empty()) {
            return Err(Error::Malformed("name-list"));
        }
        Ok(names)
    }

    /// An mpint, returned as its two's-complement big-endian magnitude bytes
    /// (as on the wire). Negative values are refused: SSH never needs them here.
    pub fn mpint(&mut self) -> Result<&'a [u8]> {
        let s = self.string()?;
        if let Some(&first) = s.first() {
            if first & 0x80 != 0 {
                return Err(Error::Malformed("negative mpint"));
            }
            if first == 0 && s.len() > 1 && s[1] & 0x80 == 0 {
                return Err(Error::Malformed("mpint with needless leading zero"));
            }
            if first == 0 && s.len() == 1 {
                return Err(Error::Malformed("mpint zero with a byte"));
            }
        }
        Ok(s)
    }

    /// Fails unless every byte has been consumed.
    pub fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(Error::TrailingData);
        }
        Ok(())
    }
}

/// Encoding helpers for SSH wire types.
pub trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_bool(&mut self, v: bool);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    fn put_string(&mut self, v: &[u8]);
    fn put_str(&mut self, v: &str) {
        self.put_string(v.as_bytes())
    }
    fn put_name_list(&mut self, names: &[&str]);
    /// An mpint from unsigned big-endian magnitude bytes.
    fn put_mpint(&mut self, magnitude: &[u8]);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v)
    }
    fn put_bool(&mut self, v: bool) {
        self.push(v as u8)
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes())
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes())
    }
    fn put_string(&mut self, v: &[u8]) {
        self.put_u32(v.len() as u32);
        self.extend_from_slice(v)
    }
    fn put_name_list(&mut self, names: &[&str]) {
        let len: usize =
            names.iter().map(|n| n.len()).sum::<usize>() + names.len().saturating_sub(1);
        self.put_u32(len as u32);
        for (i, n) in names.iter().enumerate() {
            if i > 0 {
                self.push(b',');
            }
            self.extend_from_slice(n.as_bytes());
        }
    }
    fn put_mpint(&mut self, magnitude: &[u8]) {
        let start = magnitude
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(magnitude.len());
        let m = &magnitude[start..];
        if m.first().is_some_and(|&b| b & 0x80 != 0) {
            self.put_u32(m.len() as u32 + 1);
            self.push(0);
        } else {
            self.put_u32(m.len() as u32);
        }
        self.extend_from_slice(m);
    }
}

/// Renders peer-supplied text for logs: printable ASCII kept, the rest escaped,
/// bounded in length, so a hostile peer cannot inject terminal controls.
pub fn printable(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b.iter().take(256) {
        if (0x20..0x7f).contains(&c) {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    if b.len() > 256 {
        s.push_str("...");
    }
    s
}

/// Test vectors' hex (whitespace ignored) as bytes.
#[cfg(test)]
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpint_vectors_rfc4251() {
        // RFC 4251 §5 examples.
        let cases: &[(&[u8], &[u8])] = &[
            (&[], &[0, 0, 0, 0]),
            (
                &[0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7],
                &[0, 0, 0, 8, 0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7],
            ),
            (&[0x80], &[0, 0, 0, 2, 0, 0x80]),
            (&[0, 0, 0x7f], &[0, 0, 0, 1, 0x7f]),
        ];
        for (mag, wire) in cases {
            let mut v = Vec::new();
            v.put_mpint(mag);
            assert_eq!(&v[..], *wire);
            let mut r = Reader::new(&v);
            r.mpint().unwrap();
            r.finish().unwrap();
        }
    }

    #[test]
    fn hostile_lengths_are_refused_before_allocation() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 1, 2]);
        assert_eq!(r.string(), Err(Error::TooLarge("string")));
        let mut r = Reader::new(&[0, 0, 0, 9, 1, 2]);
        assert_eq!(r.string(), Err(Error::Truncated));
    }

    #[test]
    fn name_lists() {
        let mut v = Vec::new();
        v.put_name_list(&["a", "bc"]);
        assert_eq!(Reader::new(&v).name_list().unwrap(), vec!["a", "bc"]);
        let mut v = Vec::new();
        v.put_string(b"a,,b");
        assert!(Reader::new(&v).name_list().is_err());
    }
}
