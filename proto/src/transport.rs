//! The binary packet protocol (RFC 4253 §6) and the version exchange (§4.2).

use crate::cipher::{self, KeyMaterial, OpeningKey, SealingKey};
use crate::error::{Error, Result};
use crate::msg;
use crate::zlib::{Deflate, Delayed, Inflate};

/// Largest `packet_length` accepted, as OpenSSH (PACKET_MAX_SIZE).
pub const MAX_PACKET_LEN: usize = 256 * 1024;
/// Largest payload we send; leaves room for padding and length.
pub const MAX_PAYLOAD_OUT: usize = 35000 * 2;
/// A version line may hold at most 255 bytes including CR LF (RFC 4253 §4.2).
const MAX_VERSION_LINE: usize = 255;
/// A client accepts this many bytes of lines before the server's version line.
const MAX_PREAMBLE: usize = 64 * 1024;

/// Outcome of feeding bytes to the version exchange.
pub enum VersionScan {
    /// Need more bytes.
    More,
    /// The peer's version line (without CR LF) and the number of bytes consumed.
    Done(String, usize),
}

/// Looks for the peer's identification string in `buf`. `seen` is the number
/// of preamble bytes consumed earlier (kept by the caller across calls).
/// Servers may send other lines first; clients may not (`allow_preamble`).
pub fn scan_version(buf: &[u8], allow_preamble: bool, seen: &mut usize) -> Result<VersionScan> {
    let mut pos = 0;
    loop {
        let rest = &buf[pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            let looks_like_version = rest.starts_with(b"SSH-") || b"SSH-".starts_with(rest);
            if rest.len() > MAX_VERSION_LINE && (looks_like_version || !allow_preamble) {
                return Err(Error::TooLarge("version line"));
            }
            if *seen + rest.len() > MAX_PREAMBLE {
                return Err(Error::TooLarge("pre-version banner"));
            }
            return Ok(VersionScan::More);
        };
        let line = &rest[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"SSH-") {
            if nl + 1 > MAX_VERSION_LINE {
                return Err(Error::TooLarge("version line"));
            }
            if !(line.starts_with(b"SSH-2.0-") || line.starts_with(b"SSH-1.99-")) {
                return Err(Error::Protocol(
                    "peer does not speak SSH protocol version 2",
                ));
            }
            if line.iter().any(|&c| !(0x20..0x7f).contains(&c)) {
                return Err(Error::Malformed("version line"));
            }
            let v =
                String::from_utf8(line.to_vec()).map_err(|_| Error::Malformed("version line"))?;
            return Ok(VersionScan::Done(v, pos + nl + 1));
        }
        if !allow_preamble {
            return Err(Error::Protocol("peer did not send an SSH version line"));
        }
        *seen += nl + 1;
        if *seen > MAX_PREAMBLE {
            return Err(Error::TooLarge("pre-version banner"));
        }
        pos += nl + 1;
    }
}

/// Mux proxy framing (PROTOCOL.mux, MUX_C_PROXY): on a master's control
/// socket in proxy mode each packet is `uint32 length, byte 0 (padding
/// length), payload`, unencrypted and unpadded. Appends `payload` so
/// framed to `out`.
pub fn mux_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32 + 1).to_be_bytes());
    out.push(0);
    out.extend_from_slice(payload);
}

/// The packet in mux proxy framing at the front of `buf`, once `buf`
/// holds all of it: where its payload is and the bytes it takes. Strict:
/// a length from 2 (the padding length and a type) to
/// [`MAX_PACKET_LEN`], checked before anything is buffered, and a padding
/// length of 0.
pub fn mux_unframe(buf: &[u8]) -> Result<Option<(std::ops::Range<usize>, usize)>> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(2..=MAX_PACKET_LEN).contains(&len) {
        return Err(Error::TooLarge("mux proxy packet length"));
    }
    if buf[4] != 0 {
        return Err(Error::Malformed("padding in a mux proxy packet"));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    // A packet length under 5 does not pass OpenSSH's reader of this
    // framing, so a master pads the one-byte REQUEST_SUCCESS and
    // REQUEST_FAILURE with zeros to four bytes (ressh's does): those
    // zeros are not the message's. Unambiguous: neither message has 3
    // bytes of its own after the type.
    let one_byte = len == 5
        && matches!(
            buf[5],
            msg::num::REQUEST_SUCCESS | msg::num::REQUEST_FAILURE
        )
        && buf[6..9] == [0, 0, 0];
    let end = if one_byte { 6 } else { 4 + len };
    Ok(Some((5..end, 4 + len)))
}

/// Encrypting side of the packet layer.
pub struct PacketWriter {
    key: Box<dyn SealingKey>,
    /// Mux proxy framing ([`mux_frame`]) instead of the binary packet
    /// protocol: only connection-protocol messages (80 to 127) are sent,
    /// as OpenSSH's mux client (packet.c, `ssh_packet_send_mux`).
    mux: bool,
    /// `zlib@openssh.com` of the keys in use ([`crate::zlib`]).
    pub zlib: Delayed<Deflate>,
    /// Compressed payloads are built here.
    zbuf: Vec<u8>,
    pub seq: u32,
    /// Bytes and packets sealed under the current keys (for rekeying limits).
    pub bytes: u64,
    pub packets: u64,
}

impl PacketWriter {
    pub fn new(m: &KeyMaterial, seq: u32) -> Result<Self> {
        Ok(PacketWriter {
            key: cipher::sealing_key(m)?,
            mux: false,
            zlib: Delayed::default(),
            zbuf: Vec::new(),
            seq,
            bytes: 0,
            packets: 0,
        })
    }

    pub fn none() -> Self {
        Self::new(&none_material(), 0).expect("none cipher")
    }

    /// The writer of a mux proxy client ([`mux_frame`]).
    pub fn mux() -> Self {
        let mut w = Self::none();
        w.mux = true;
        w
    }

    /// [`Self::none`] on a transport of an authenticated session (a
    /// reconnect's): compression starts with the first keys that agree on it.
    pub fn authenticated() -> Self {
        let mut w = Self::none();
        w.zlib.authenticated();
        w
    }

    /// New keys; `zlib`: their exchange agreed on `zlib@openssh.com`.
    pub fn set_key(&mut self, m: &KeyMaterial, zlib: bool) -> Result<()> {
        self.key = cipher::sealing_key(m)?;
        self.zlib.new_keys(zlib);
        self.bytes = 0;
        self.packets = 0;
        Ok(())
    }

    pub fn export(&self) -> KeyMaterial {
        self.key.export()
    }

    /// Compresses (when on), frames, pads, seals `payload` and appends the
    /// packet to `out`. The packet is built and sealed in place at the end
    /// of `out`: the payload is copied once (this is the hot path of bulk
    /// transfers).
    pub fn write(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.mux {
            if (80..=127).contains(&payload[0]) {
                mux_frame(payload, out);
                self.seq = self.seq.wrapping_add(1);
                self.packets += 1;
            }
            return Ok(());
        }
        if !self.zlib.is_on() {
            return self.seal(payload, out);
        }
        let mut body = std::mem::take(&mut self.zbuf);
        body.clear();
        let r = self
            .zlib
            .feed(payload, &mut body)
            .and_then(|_| self.seal(&body, out));
        self.zbuf = body;
        r
    }

    fn seal(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let bs = self.key.block_size().max(8);
        let aad = if self.key.length_outside_blocks() {
            4
        } else {
            0
        };
        let unpadded = 4 + 1 + payload.len() - aad;
        let mut pad = bs - unpadded % bs;
        if pad < 4 {
            pad += bs;
        }
        let packet_len = 1 + payload.len() + pad;
        let tag_len = self.key.tag_len();
        let start = out.len();
        out.reserve(4 + packet_len + tag_len);
        out.extend_from_slice(&(packet_len as u32).to_be_bytes());
        out.push(pad as u8);
        out.extend_from_slice(payload);
        let pad_at = out.len();
        out.resize(pad_at + pad + tag_len, 0);
        let (packet, tag) = out[start..].split_at_mut(4 + packet_len);
        let sealed = openssl::rand::rand_bytes(&mut packet[pad_at - start..])
            .map_err(Error::from)
            .and_then(|()| self.key.seal_in_place(self.seq, packet, tag));
        if let Err(e) = sealed {
            out.truncate(start);
            return Err(e);
        }
        self.seq = self.seq.wrapping_add(1);
        self.bytes += (out.len() - start) as u64;
        self.packets += 1;
        Ok(())
    }
}

/// Decrypting side of the packet layer.
pub struct PacketReader {
    key: Box<dyn OpeningKey>,
    /// Mux proxy framing ([`mux_unframe`]).
    mux: bool,
    /// `zlib@openssh.com` of the keys in use ([`crate::zlib`]).
    pub zlib: Delayed<Inflate>,
    pub seq: u32,
    scratch: Vec<u8>,
    pub bytes: u64,
    pub packets: u64,
}

impl PacketReader {
    pub fn new(m: &KeyMaterial, seq: u32) -> Result<Self> {
        Ok(PacketReader {
            key: cipher::opening_key(m)?,
            mux: false,
            zlib: Delayed::default(),
            seq,
            scratch: Vec::new(),
            bytes: 0,
            packets: 0,
        })
    }

    pub fn none() -> Self {
        Self::new(&none_material(), 0).expect("none cipher")
    }

    /// The reader of a mux proxy client ([`mux_unframe`]).
    pub fn mux() -> Self {
        let mut r = Self::none();
        r.mux = true;
        r
    }

    /// See [`PacketWriter::authenticated`].
    pub fn authenticated() -> Self {
        let mut r = Self::none();
        r.zlib.authenticated();
        r
    }

    /// New keys; `zlib`: their exchange agreed on `zlib@openssh.com`.
    pub fn set_key(&mut self, m: &KeyMaterial, zlib: bool) -> Result<()> {
        self.key = cipher::opening_key(m)?;
        self.zlib.new_keys(zlib);
        self.bytes = 0;
        self.packets = 0;
        Ok(())
    }

    pub fn export(&self) -> KeyMaterial {
        self.key.export()
    }

    /// Tries to take one packet from the front of `buf`. Returns the payload
    /// and the number of bytes consumed, or `None` if more bytes are needed.
    /// The length is checked before anything is buffered.
    pub fn read(&mut self, buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>> {
        let Some(total) = self.packet_size(buf)? else {
            return Ok(None);
        };
        let mut p = std::mem::take(&mut self.scratch);
        p.clear();
        p.extend_from_slice(&buf[..total]);
        let r = self.read_in_place(&mut p);
        let out = match r {
            Ok(Some((range, n))) => match self.inflate(&p[range.clone()]) {
                Ok(Some(v)) => Ok(Some((v, n))),
                Ok(None) => Ok(Some((p[range].to_vec(), n))),
                Err(e) => Err(e),
            },
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        self.scratch = p;
        out
    }

    /// When compression is on: the payload of a packet
    /// [`Self::read_in_place`] found, inflated (bounded by
    /// [`crate::zlib::MAX_INFLATED`]). `None` when it is off: the payload
    /// is the packet's.
    pub fn inflate(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        if !self.zlib.feed(body, &mut out)? {
            return Ok(None);
        }
        if out.is_empty() {
            return Err(Error::Malformed("empty packet"));
        }
        Ok(Some(out))
    }

    /// Like [`Self::read`], but verifies and decrypts the packet where it
    /// lies in `buf` and returns where its payload is, without copying;
    /// when compression is on, that payload is still to be inflated
    /// ([`Self::inflate`]).
    /// On an error the packet's bytes in `buf` may have been changed.
    pub fn read_in_place(
        &mut self,
        buf: &mut [u8],
    ) -> Result<Option<(std::ops::Range<usize>, usize)>> {
        if self.mux {
            let r = mux_unframe(buf)?;
            if let Some((_, n)) = &r {
                self.packets += 1;
                self.bytes += *n as u64;
            }
            return Ok(r);
        }
        let Some(total) = self.packet_size(buf)? else {
            return Ok(None);
        };
        let tag_len = self.key.tag_len();
        let len = total - 4 - tag_len;
        let (p, tag) = buf[..total].split_at_mut(4 + len);
        self.key.open(self.seq, p, tag)?;
        let pad = p[4] as usize;
        if pad < 4 || pad + 1 > len {
            return Err(Error::Malformed("padding length"));
        }
        let payload = 5..4 + len - pad;
        if payload.is_empty() {
            return Err(Error::Malformed("empty packet"));
        }
        self.seq = self.seq.wrapping_add(1);
        self.bytes += total as u64;
        self.packets += 1;
        Ok(Some((payload, total)))
    }

    /// The size of the packet at the front of `buf` (length, body and tag),
    /// once `buf` holds all of it; the length is checked first.
    fn packet_size(&self, buf: &[u8]) -> Result<Option<usize>> {
        if self.mux {
            return Ok(mux_unframe(buf)?.map(|(_, n)| n));
        }
        if buf.len() < 4 {
            return Ok(None);
        }
        let first4 = [buf[0], buf[1], buf[2], buf[3]];
        let len = self.key.decrypt_length(self.seq, first4) as usize;
        let bs = self.key.block_size().max(8);
        if !(5..=MAX_PACKET_LEN).contains(&len) {
            return Err(Error::TooLarge("packet length"));
        }
        let aligned = if self.key.length_outside_blocks() {
            len
        } else {
            len + 4
        };
        if aligned % bs != 0 {
            return Err(Error::Malformed(
                "packet length not a multiple of the block size",
            ));
        }
        let tag_len = self.key.tag_len();
        let total = 4 + len + tag_len;
        if buf.len() < total {
            return Ok(None);
        }
        Ok(Some(total))
    }
}

pub fn none_material() -> KeyMaterial {
    KeyMaterial {
        cipher: "none".into(),
        mac: String::new(),
        key: Vec::new(),
        iv: Vec::new(),
        mac_key: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lines() {
        let mut seen = 0;
        match scan_version(b"hello\r\nSSH-2.0-OpenSSH_9.2 x\r\nrest", true, &mut seen).unwrap() {
            VersionScan::Done(v, n) => {
                assert_eq!(v, "SSH-2.0-OpenSSH_9.2 x");
                assert_eq!(n, 30);
            }
            VersionScan::More => panic!(),
        }
        let mut seen = 0;
        assert!(scan_version(b"hello\r\n", false, &mut seen).is_err());
        let mut seen = 0;
        assert!(scan_version(b"SSH-1.5-old\r\n", true, &mut seen).is_err());
        let mut seen = 0;
        assert!(matches!(
            scan_version(b"SSH-2.0-", true, &mut seen),
            Ok(VersionScan::More)
        ));
        let long = vec![b'a'; 300];
        let mut seen = 0;
        assert!(scan_version(&long, false, &mut seen).is_err());
    }

    #[test]
    fn none_packets_roundtrip_and_reject_bad_lengths() {
        let mut w = PacketWriter::none();
        let mut r = PacketReader::none();
        let mut out = Vec::new();
        w.write(b"\x05hello", &mut out).unwrap();
        assert_eq!(out.len() % 8, 0);
        let (p, n) = r.read(&out).unwrap().unwrap();
        assert_eq!(p, b"\x05hello");
        assert_eq!(n, out.len());
        let mut bad = out.clone();
        bad[..4].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        assert!(r.read(&bad).is_err());
        assert!(r.read(&out[..3]).unwrap().is_none());
    }

    #[test]
    fn mux_packets_are_framed_strictly() {
        let mut w = PacketWriter::mux();
        let mut r = PacketReader::mux();
        let mut out = Vec::new();
        // Only the connection protocol goes out (an IGNORE does not).
        w.write(b"\x02xx", &mut out).unwrap();
        assert!(out.is_empty());
        w.write(b"\x60\0\0\0\x07", &mut out).unwrap();
        assert_eq!(out, b"\0\0\0\x06\0\x60\0\0\0\x07");
        let (p, n) = r.read(&out).unwrap().unwrap();
        assert_eq!((p.as_slice(), n), (&b"\x60\0\0\0\x07"[..], out.len()));
        // Every prefix waits; the length is checked before the rest is
        // there, and a padding length other than 0 is refused.
        for k in 0..out.len() {
            assert!(r.read(&out[..k]).unwrap().is_none(), "{k}");
        }
        for len in [0u32, 1, MAX_PACKET_LEN as u32 + 1, u32::MAX] {
            let mut bad = len.to_be_bytes().to_vec();
            bad.push(0);
            assert!(r.read(&bad).is_err(), "{len}");
        }
        let mut bad = out.clone();
        bad[4] = 4;
        assert!(r.read(&bad).is_err());
        // A one-byte global reply padded to four bytes by a master for
        // OpenSSH's reader: the message is its byte; other messages keep
        // every byte.
        let (p, n) = r.read(b"\0\0\0\x05\0\x52\0\0\0").unwrap().unwrap();
        assert_eq!((p.as_slice(), n), (&b"\x52"[..], 9));
        let (p, _) = r.read(b"\0\0\0\x05\0\x52\0\0\x01").unwrap().unwrap();
        assert_eq!(p, b"\x52\0\0\x01");
        let (p, _) = r.read(b"\0\0\0\x05\0\x60\0\0\0").unwrap().unwrap();
        assert_eq!(p, b"\x60\0\0\0");
    }
}
