//! X11 forwarding (-X, -Y, ForwardX11), as ssh does it: the x11-req
//! carries a fake cookie of the real one's length; each "x11" channel the
//! server opens is connected to the local $DISPLAY, and its first X packet
//! (the connection setup) must carry the fake cookie, which is replaced by
//! the real one before anything reaches the X server. The real cookie is
//! the display's own from `xauth list` (trusted, -Y), or one generated with
//! `xauth generate ... untrusted timeout N` (ForwardX11Trusted no), after
//! whose ForwardX11Timeout new X connections are refused.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use ressh_proto::msg::{open_failure, ChannelReq};

use super::channels::{Chan, Kind};
use super::Session;
use crate::fdio::LocalFd;

/// ssh's X11_TIMEOUT_SLACK: the generated cookie outlives the timeout.
const TIMEOUT_SLACK_SECS: u64 = 60;

pub(super) struct X11Fwd {
    display: String,
    proto: String,
    real: Vec<u8>,
    fake: Vec<u8>,
    /// Untrusted forwarding with a timeout: no X connection after this.
    refuse_after: Option<Instant>,
}

impl X11Fwd {
    /// The x11-req of a session: the fake cookie, the display's screen.
    fn request(&self) -> ChannelReq {
        let screen = self
            .display
            .rsplit_once(':')
            .and_then(|(_, r)| r.split_once('.'))
            .and_then(|(_, s)| s.parse().ok())
            .unwrap_or(0);
        ChannelReq::X11Req {
            single_connection: false,
            auth_protocol: self.proto.clone(),
            auth_cookie: hex(&self.fake),
            screen,
        }
    }
}

/// The first packet of an X connection, held until it is complete and its
/// cookie checked.
pub(super) struct X11Gate {
    proto: Vec<u8>,
    fake: Vec<u8>,
    real: Vec<u8>,
    buf: Vec<u8>,
}

pub(super) enum Gate {
    /// More bytes needed.
    Pending,
    /// The bytes to pass on (the real cookie in place of the fake one).
    Pass(Vec<u8>),
    /// Wrong protocol or cookie.
    Reject,
}

fn pad4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

impl X11Gate {
    /// Adds `data`; decides once the setup packet is complete.
    pub(super) fn feed(&mut self, data: &[u8]) -> Gate {
        self.buf.extend_from_slice(data);
        let b = &self.buf;
        if b.len() < 12 {
            return Gate::Pending;
        }
        let u16_at = |i: usize| match b[0] {
            0x42 => Some(u16::from_be_bytes([b[i], b[i + 1]]) as usize),
            0x6c => Some(u16::from_le_bytes([b[i], b[i + 1]]) as usize),
            _ => None,
        };
        let (Some(proto_len), Some(data_len)) = (u16_at(6), u16_at(8)) else {
            return Gate::Reject;
        };
        let need = 12 + pad4(proto_len) + pad4(data_len);
        if b.len() < need {
            return Gate::Pending;
        }
        let data_at = 12 + pad4(proto_len);
        if b[12..12 + proto_len] != self.proto[..]
            || b[data_at..data_at + data_len] != self.fake[..]
        {
            return Gate::Reject;
        }
        let mut out = std::mem::take(&mut self.buf);
        out[data_at..data_at + data_len].copy_from_slice(&self.real);
        Gate::Pass(out)
    }

    /// Bytes held so far.
    pub(super) fn held(&self) -> usize {
        self.buf.len()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `xauth [-f file] list display`: (protocol, cookie) of its first line.
fn xauth_list(xauth: &Path, file: Option<&Path>, display: &str) -> Option<(String, Vec<u8>)> {
    let mut c = Command::new(xauth);
    if let Some(f) = file {
        c.arg("-f").arg(f);
    }
    let out = c
        .args(["list", display])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut w = text.lines().next()?.split_whitespace();
    let (_, proto, data) = (w.next()?, w.next()?, w.next()?);
    Some((proto.to_string(), unhex(data)?))
}

/// An untrusted cookie for `display`, valid `timeout` (+ slack) after its
/// last use, generated in a private directory removed afterwards.
fn xauth_generate(xauth: &Path, display: &str, timeout: u64) -> io::Result<(String, Vec<u8>)> {
    let dir = nix::unistd::mkdtemp("/tmp/ssh-XXXXXXXXXX")?;
    let file = dir.join("xauthfile");
    let r = (|| {
        let st = Command::new(xauth)
            .arg("-f")
            .arg(&file)
            .args([
                "generate",
                display,
                "MIT-MAGIC-COOKIE-1",
                "untrusted",
                "timeout",
            ])
            .arg((timeout + TIMEOUT_SLACK_SECS).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !st.success() {
            return Err(io::Error::other(format!("xauth generate: {st}")));
        }
        xauth_list(xauth, Some(&file), display)
            .ok_or_else(|| io::Error::other("xauth key data not generated"))
    })();
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_dir(&dir);
    r
}

/// Connects to the X server of `display`: `:N`/`unix:N` by its Unix
/// socket, `host:N` by TCP port 6000 + N.
fn connect_display(display: &str) -> io::Result<OwnedFd> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad DISPLAY {display:?}"),
        )
    };
    let (host, rest) = display.rsplit_once(':').ok_or_else(bad)?;
    let number: u16 = rest
        .split('.')
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)?;
    if host.is_empty() || host == "unix" {
        let s = UnixStream::connect(format!("/tmp/.X11-unix/X{number}"))?;
        s.set_nonblocking(true)?;
        return Ok(s.into());
    }
    let port = 6000u16.checked_add(number).ok_or_else(bad)?;
    let s = std::net::TcpStream::connect((host, port))?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

impl Session {
    /// The x11-req for the session channel, if X11 forwarding is asked for
    /// and can be set up (ssh's client_x11_get_proto).
    pub(super) fn x11_request(&mut self) -> Option<ChannelReq> {
        if !self.cfg.forward_x11 {
            return None;
        }
        let Some(display) = std::env::var("DISPLAY").ok().filter(|d| !d.is_empty()) else {
            crate::debug1!("X11 forwarding requested but DISPLAY not set");
            return None;
        };
        // As ssh: one display, one cookie and one fake for the connection,
        // however many sessions (a mux client's too) forward it.
        if let Some(x) = &self.x11 {
            crate::debug1!("Requesting X11 forwarding with authentication spoofing.");
            return Some(x.request());
        }
        // xauth knows a localhost display by its unix: name.
        let xdisplay = match display.strip_prefix("localhost:") {
            Some(rest) => format!("unix:{rest}"),
            None => display.clone(),
        };
        let xauth = self.cfg.xauth_location.clone();
        let timeout = self.cfg.forward_x11_timeout;
        let (proto, real) = if self.cfg.forward_x11_trusted {
            match xauth_list(&xauth, None, &xdisplay) {
                Some(x) => x,
                None => {
                    crate::debug1!(
                        "No xauth data; using fake authentication data for X11 forwarding."
                    );
                    let mut b = vec![0u8; 16];
                    openssl::rand::rand_bytes(&mut b).ok()?;
                    ("MIT-MAGIC-COOKIE-1".to_string(), b)
                }
            }
        } else {
            let secs = timeout.map_or(0, |d| d.as_secs());
            match xauth_generate(&xauth, &xdisplay, secs) {
                Ok(x) => x,
                Err(e) => {
                    crate::error!("Warning: untrusted X11 forwarding setup failed: {e}");
                    return None;
                }
            }
        };
        let mut fake = vec![0u8; real.len()];
        openssl::rand::rand_bytes(&mut fake).ok()?;
        crate::debug1!("Requesting X11 forwarding with authentication spoofing.");
        let x = self.x11.insert(X11Fwd {
            display,
            proto,
            real,
            fake,
            refuse_after: match (self.cfg.forward_x11_trusted, timeout) {
                (false, Some(t)) => Some(Instant::now() + t),
                _ => None,
            },
        });
        Some(x.request())
    }

    /// The server opened an x11 channel.
    pub(super) fn on_x11_open(&mut self, id: u32) {
        let Some(x) = &self.x11 else {
            crate::error!("Warning: ssh server tried X11 forwarding.");
            crate::error!("Warning: this is probably a break-in attempt by a malicious server.");
            self.refuse_open(id, open_failure::ADMINISTRATIVELY_PROHIBITED, "open failed");
            return;
        };
        if x.refuse_after.is_some_and(|t| Instant::now() >= t) {
            crate::verbose!("Rejected X11 connection after ForwardX11Timeout expired");
            self.refuse_open(id, open_failure::ADMINISTRATIVELY_PROHIBITED, "open failed");
            return;
        }
        let gate = X11Gate {
            proto: x.proto.as_bytes().to_vec(),
            fake: x.fake.clone(),
            real: x.real.clone(),
            buf: Vec::new(),
        };
        let fd = match connect_display(&x.display) {
            Ok(fd) => fd,
            Err(e) => {
                crate::debug1!("X11 display {}: {e}", x.display);
                self.refuse_open(id, open_failure::ADMINISTRATIVELY_PROHIBITED, "open failed");
                return;
            }
        };
        let t = self.token();
        let Ok(l) = LocalFd::socket(fd, self.poll.registry(), t) else {
            self.refuse_open(id, open_failure::RESOURCE_SHORTAGE, "cannot poll");
            return;
        };
        let r = self.conn.accept_channel(id);
        if self.engine("accept_channel", r).is_none() {
            return;
        }
        let mut ch = Chan::socket(id, Kind::X11, "X11 connection".to_string(), l, t, true);
        ch.set_x11_gate(gate);
        self.chans.insert(ch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An X connection setup in `order` with `proto` and `data`.
    fn setup(order: u8, proto: &[u8], data: &[u8]) -> Vec<u8> {
        let le = order == 0x6c;
        let u16b = |v: u16| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        let mut p = vec![order, 0];
        p.extend_from_slice(&u16b(11));
        p.extend_from_slice(&u16b(0));
        p.extend_from_slice(&u16b(proto.len() as u16));
        p.extend_from_slice(&u16b(data.len() as u16));
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(proto);
        p.resize(12 + pad4(proto.len()), 0);
        p.extend_from_slice(data);
        p.resize(12 + pad4(proto.len()) + pad4(data.len()), 0);
        p
    }

    fn gate() -> X11Gate {
        X11Gate {
            proto: b"MIT-MAGIC-COOKIE-1".to_vec(),
            fake: vec![1; 16],
            real: vec![2; 16],
            buf: Vec::new(),
        }
    }

    #[test]
    fn the_fake_cookie_is_replaced_in_either_byte_order() {
        for order in [0x42, 0x6c] {
            let p = setup(order, b"MIT-MAGIC-COOKIE-1", &[1; 16]);
            let mut g = gate();
            // In pieces: undecided until the packet is whole.
            assert!(matches!(g.feed(&p[..5]), Gate::Pending));
            assert!(matches!(g.feed(&p[5..p.len() - 1]), Gate::Pending));
            let Gate::Pass(out) = g.feed(&p[p.len() - 1..]) else {
                panic!("refused");
            };
            assert_eq!(out, setup(order, b"MIT-MAGIC-COOKIE-1", &[2; 16]));
        }
    }

    #[test]
    fn a_wrong_cookie_protocol_or_byte_order_is_rejected() {
        for p in [
            setup(0x42, b"MIT-MAGIC-COOKIE-1", &[3; 16]),
            setup(0x42, b"MIT-MAGIC-COOKIE-1", &[1; 15]),
            setup(0x6c, b"XDM-AUTHORIZATION-1", &[1; 16]),
            setup(0x6c, b"", &[]),
        ] {
            assert!(matches!(gate().feed(&p), Gate::Reject), "{p:?}");
        }
        let mut bad = setup(0x42, b"MIT-MAGIC-COOKIE-1", &[1; 16]);
        bad[0] = b'x';
        assert!(matches!(gate().feed(&bad), Gate::Reject));
    }
}
