//! The SFTP wire encoding (draft-ietf-secsh-filexfer-02): a bounded reader
//! over one packet's bytes and a writer for replies. Every read is checked
//! against what is left; a short packet is an error, never a panic.

/// A packet's body ran short, or a string held a NUL where a C string is
/// expected (sftp-server's `sshbuf_get_cstring` refuses those too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short;

pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        if self.buf.len() < n {
            return Err(Short);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, Short> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, Short> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, Short> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A length-prefixed string; the length is checked against the bytes
    /// left before anything is taken.
    pub fn string(&mut self) -> Result<&'a [u8], Short> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A string that names a path or a user: no NUL inside.
    pub fn cstring(&mut self) -> Result<&'a [u8], Short> {
        let s = self.string()?;
        if s.contains(&0) {
            return Err(Short);
        }
        Ok(s)
    }
}

#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    /// A reply of `kind`; the length is filled in by [`Writer::finish`].
    pub fn reply(kind: u8) -> Writer {
        let mut w = Writer {
            buf: Vec::with_capacity(64),
        };
        w.buf.extend_from_slice(&[0, 0, 0, 0, kind]);
        w
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn string(&mut self, s: &[u8]) -> &mut Self {
        // Replies are built from bounded parts (at most 100 names, reads
        // of at most 255 KiB): they fit a u32.
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s);
        self
    }

    /// The finished packet, its length in front.
    pub fn finish(mut self) -> Vec<u8> {
        let n = (self.buf.len() - 4) as u32;
        self.buf[..4].copy_from_slice(&n.to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_an_error() {
        let mut r = Reader::new(&[0, 0, 0, 9, b'a']);
        assert_eq!(r.string(), Err(Short));
        let mut r = Reader::new(&[0, 0, 0]);
        assert_eq!(r.u32(), Err(Short));
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(r.string(), Err(Short));
        let mut r = Reader::new(&[0, 0, 0, 3, b'a', 0, b'b']);
        assert_eq!(r.cstring(), Err(Short));
        let mut r = Reader::new(&[0, 0, 0, 2, b'a', b'b', 7]);
        assert_eq!(r.cstring(), Ok(&b"ab"[..]));
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.u8(), Err(Short));
    }

    #[test]
    fn writer_frames() {
        let mut w = Writer::reply(101);
        w.u32(7).string(b"hi");
        assert_eq!(
            w.finish(),
            vec![0, 0, 0, 11, 101, 0, 0, 0, 7, 0, 0, 0, 2, b'h', b'i']
        );
    }
}
