//! Connection sharing: OpenSSH's multiplexing protocol (PROTOCOL.mux) on a
//! control socket, both ends. This part is what is not the master's event
//! loop (session/mux.rs): the wire format and its bounded decoding, the
//! control socket made safely, descriptor passing, and the mux client
//! (`-O` commands and sessions through a master, ressh's or ssh's).
//!
//! Every byte read from a control socket is hostile: packets are bounded
//! ([`MAX_PACKET`]), decoded strictly, and a bad one ends that connection.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{
    getsockopt, recvmsg, sendmsg, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
};
use ressh_proto::wire::{Put, Reader};

pub const VERSION: u32 = 4;

pub const HELLO: u32 = 0x0000_0001;
pub const C_NEW_SESSION: u32 = 0x1000_0002;
pub const C_ALIVE_CHECK: u32 = 0x1000_0004;
pub const C_TERMINATE: u32 = 0x1000_0005;
pub const C_OPEN_FWD: u32 = 0x1000_0006;
pub const C_CLOSE_FWD: u32 = 0x1000_0007;
pub const C_NEW_STDIO_FWD: u32 = 0x1000_0008;
pub const C_STOP_LISTENING: u32 = 0x1000_0009;
pub const C_PROXY: u32 = 0x1000_000f;
pub const S_OK: u32 = 0x8000_0001;
pub const S_PERMISSION_DENIED: u32 = 0x8000_0002;
pub const S_FAILURE: u32 = 0x8000_0003;
pub const S_EXIT_MESSAGE: u32 = 0x8000_0004;
pub const S_ALIVE: u32 = 0x8000_0005;
pub const S_SESSION_OPENED: u32 = 0x8000_0006;
pub const S_REMOTE_PORT: u32 = 0x8000_0007;
pub const S_TTY_ALLOC_FAIL: u32 = 0x8000_0008;
pub const S_PROXY: u32 = 0x8000_000f;

pub const FWD_LOCAL: u32 = 1;
pub const FWD_REMOTE: u32 = 2;
pub const FWD_DYNAMIC: u32 = 3;
/// A port that says its host is a Unix socket path.
pub const PORT_STREAMLOCAL: u32 = 0xffff_fffe;

/// The largest packet either end accepts (as OpenSSH's 256 KiB).
pub const MAX_PACKET: usize = 256 * 1024;
/// At most this many environment strings in a session request (mux.c's
/// limit); more end the connection.
pub const MAX_ENV: usize = 4096;

/// A packet: the length, then `body` (type first).
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 4);
    v.put_string(body);
    v
}

/// A status reply: `kind` (S_OK and others), the request id, and for the
/// failures the reason.
pub fn status(kind: u32, rid: u32, reason: Option<&str>) -> Vec<u8> {
    let mut b = Vec::new();
    b.put_u32(kind);
    b.put_u32(rid);
    if let Some(r) = reason {
        b.put_str(r);
    }
    frame(&b)
}

/// Our hello: version 4, no extensions.
pub fn hello() -> Vec<u8> {
    let mut b = Vec::new();
    b.put_u32(HELLO);
    b.put_u32(VERSION);
    frame(&b)
}

/// Takes the next whole packet off the front of `buf`; an error for a
/// length over [`MAX_PACKET`] or under 4 (no type).
pub fn take_packet(buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, String> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(4..=MAX_PACKET).contains(&len) {
        return Err(format!("bad packet length {len}"));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let body = buf[4..4 + len].to_vec();
    buf.drain(..4 + len);
    Ok(Some(body))
}

/// A string the protocol says is a C string: no NUL, UTF-8 (lossy).
pub fn cstring(r: &mut Reader<'_>) -> Result<String, String> {
    let s = r.string().map_err(|e| e.to_string())?;
    if s.contains(&0) {
        return Err("NUL in a string".into());
    }
    Ok(String::from_utf8_lossy(s).into_owned())
}

/// A MUX_C_NEW_SESSION request, after its type and request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub want_tty: bool,
    /// The client's ForwardX11 and ForwardAgent: the master forwards X11
    /// and the agent for this session when its own settings allow it too
    /// (mux.c's `mux_session_confirm`).
    pub want_x11: bool,
    pub want_agent: bool,
    pub subsystem: bool,
    /// None: no escape character.
    pub escape: Option<u32>,
    pub term: String,
    pub command: String,
    /// `NAME=value` strings.
    pub env: Vec<String>,
}

fn flag(r: &mut Reader<'_>) -> Result<bool, String> {
    match r.u32().map_err(|e| e.to_string())? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(format!("bad flag {v}")),
    }
}

impl NewSession {
    pub fn decode(r: &mut Reader<'_>) -> Result<NewSession, String> {
        let e = |e: ressh_proto::Error| e.to_string();
        r.string().map_err(e)?; // reserved
        let want_tty = flag(r)?;
        let want_x11 = flag(r)?;
        let want_agent = flag(r)?;
        let subsystem = flag(r)?;
        let escape = match r.u32().map_err(e)? {
            0xffff_ffff => None,
            c => Some(c),
        };
        let term = cstring(r)?;
        let command = cstring(r)?;
        let mut env = Vec::new();
        while r.remaining() > 0 {
            if env.len() == MAX_ENV {
                return Err("too many environment strings".into());
            }
            env.push(cstring(r)?);
        }
        Ok(NewSession {
            want_tty,
            want_x11,
            want_agent,
            subsystem,
            escape,
            term,
            command,
            env,
        })
    }

    pub fn encode(&self, rid: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.put_u32(C_NEW_SESSION);
        b.put_u32(rid);
        b.put_string(b"");
        b.put_u32(self.want_tty as u32);
        b.put_u32(self.want_x11 as u32);
        b.put_u32(self.want_agent as u32);
        b.put_u32(self.subsystem as u32);
        b.put_u32(self.escape.unwrap_or(0xffff_ffff));
        b.put_str(&self.term);
        b.put_str(&self.command);
        for v in &self.env {
            b.put_str(v);
        }
        frame(&b)
    }
}

/// A MUX_C_OPEN_FWD or MUX_C_CLOSE_FWD request, after its type and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwdReq {
    pub ftype: u32,
    pub listen_host: String,
    pub listen_port: u32,
    pub connect_host: String,
    pub connect_port: u32,
}

impl FwdReq {
    /// Strict: a port is at most 65535 or [`PORT_STREAMLOCAL`], nothing
    /// follows (as mux.c's "malformed message").
    pub fn decode(r: &mut Reader<'_>) -> Result<FwdReq, String> {
        let e = |e: ressh_proto::Error| e.to_string();
        let ftype = r.u32().map_err(e)?;
        let listen_host = cstring(r)?;
        let listen_port = r.u32().map_err(e)?;
        let connect_host = cstring(r)?;
        let connect_port = r.u32().map_err(e)?;
        r.finish().map_err(e)?;
        for p in [listen_port, connect_port] {
            if p > 65535 && p != PORT_STREAMLOCAL {
                return Err(format!("bad port {p}"));
            }
        }
        Ok(FwdReq {
            ftype,
            listen_host,
            listen_port,
            connect_host,
            connect_port,
        })
    }

    pub fn encode(&self, kind: u32, rid: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.put_u32(kind);
        b.put_u32(rid);
        b.put_u32(self.ftype);
        b.put_str(&self.listen_host);
        b.put_u32(self.listen_port);
        b.put_str(&self.connect_host);
        b.put_u32(self.connect_port);
        frame(&b)
    }

    /// The forwards of a configuration (-L, -D, -R), as requests.
    pub fn from_config(cfg: &crate::config::Config) -> Result<Vec<FwdReq>, String> {
        // As ssh's mux client: no bind address is "", an empty one "*".
        let lhost = |b: &Option<String>| match b.as_deref() {
            None => String::new(),
            Some("") => "*".to_string(),
            Some(h) => h.to_string(),
        };
        let mut v = Vec::new();
        for (list, remote) in [(&cfg.local_forwards, false), (&cfg.remote_forwards, true)] {
            for spec in list {
                let f = crate::forward::parse(spec, remote)?;
                v.push(FwdReq {
                    ftype: if remote { FWD_REMOTE } else { FWD_LOCAL },
                    listen_host: lhost(&f.bind),
                    listen_port: f.port.into(),
                    connect_host: f.host,
                    connect_port: f.host_port.into(),
                });
            }
        }
        for spec in &cfg.dynamic_forwards {
            let (bind, port) = crate::forward::parse_dynamic(spec)?;
            v.push(FwdReq {
                ftype: FWD_DYNAMIC,
                listen_host: lhost(&bind),
                listen_port: port.into(),
                connect_host: String::new(),
                connect_port: 0,
            });
        }
        Ok(v)
    }
}

// ----- the socket -------------------------------------------------------------

/// Reads what is there into `buf` (at most `max` bytes), taking the
/// descriptors passed with it (SCM_RIGHTS, close-on-exec). 0 is EOF.
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(
            sock,
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r?,
        }
    };
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(list) = c {
            for fd in list {
                // SAFETY: the kernel just made `fd` ours, and nothing else
                // owns it.
                #[allow(unsafe_code)]
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if truncated {
        return Err(io::Error::other("descriptors truncated"));
    }
    Ok(msg.bytes)
}

/// Passes `fd` with one byte, as ssh's mm_send_fd.
pub fn send_fd(sock: &impl AsFd, fd: RawFd) -> io::Result<()> {
    let fds = [fd];
    let cm = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(b"\0")];
    loop {
        match sendmsg::<()>(sock.as_fd().as_raw_fd(), &iov, &cm, MsgFlags::empty(), None) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(1) => return Ok(()),
            Ok(_) => return Err(io::Error::other("short descriptor write")),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The uid of the process at the other end of `sock` (SO_PEERCRED).
pub fn peer_uid(sock: &impl AsFd) -> io::Result<u32> {
    Ok(getsockopt(sock, sockopt::PeerCredentials)?.uid())
}

/// Whether a peer of uid `uid` may use our socket: ourselves, or root
/// (as mux.c).
pub fn peer_allowed(uid: u32) -> bool {
    uid == nix::unistd::getuid().as_raw() || uid == 0
}

/// Listens on `path` without a race: binds a random name in the same
/// directory with umask 0177 (mode 0600), then links it into place, which
/// fails if `path` exists. Err(AlreadyExists) then.
pub fn listen(path: &Path) -> io::Result<UnixListener> {
    let mut rnd = [0u8; 8];
    openssl::rand::rand_bytes(&mut rnd).map_err(io::Error::other)?;
    let suffix: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{suffix}"));
    let tmp = PathBuf::from(tmp);
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let l = UnixListener::bind(&tmp);
    nix::sys::stat::umask(old);
    let l = l?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked?;
    l.set_nonblocking(true)?;
    Ok(l)
}

// ----- the mux client ----------------------------------------------------------

/// A connection to a master, hello exchanged.
pub struct Client {
    sock: UnixStream,
    rid: u32,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Client {
    /// Connects to the master at `path`. The socket must be ours (its
    /// owner our uid), and so must the process listening on it (or root);
    /// else nothing is sent. NotFound/ConnectionRefused: no master.
    pub fn connect(path: &Path) -> io::Result<Client> {
        let me = nix::unistd::getuid().as_raw();
        let meta = std::fs::symlink_metadata(path)?;
        if meta.uid() != me {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "control socket {} is owned by uid {}, not by us",
                    path.display(),
                    meta.uid()
                ),
            ));
        }
        let sock = UnixStream::connect(path)?;
        let peer = peer_uid(&sock)?;
        if !peer_allowed(peer) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("the master on {} runs as uid {peer}", path.display()),
            ));
        }
        sock.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut c = Client { sock, rid: 0 };
        c.sock.write_all(&hello())?;
        let p = c.read_packet()?;
        let mut r = Reader::new(&p);
        if r.u32().ok() != Some(HELLO) {
            return Err(bad("the master did not say hello"));
        }
        match r.u32() {
            Ok(VERSION) => {}
            Ok(v) => return Err(bad(format!("unsupported mux protocol version {v}"))),
            Err(_) => return Err(bad("bad hello")),
        }
        Ok(c)
    }

    fn read_packet(&mut self) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        self.sock.read_exact(&mut len)?;
        let n = u32::from_be_bytes(len) as usize;
        if !(4..=MAX_PACKET).contains(&n) {
            return Err(bad(format!("bad packet length {n}")));
        }
        let mut p = vec![0u8; n];
        self.sock.read_exact(&mut p)?;
        Ok(p)
    }

    fn next_rid(&mut self) -> u32 {
        let r = self.rid;
        self.rid = self.rid.wrapping_add(1);
        r
    }

    /// Reads a reply to request `rid`: its type and the rest.
    fn reply(&mut self, rid: u32) -> io::Result<(u32, Vec<u8>)> {
        let p = self.read_packet()?;
        let mut r = Reader::new(&p);
        let (Ok(kind), Ok(got)) = (r.u32(), r.u32()) else {
            return Err(bad("short reply"));
        };
        if got != rid {
            return Err(bad(format!(
                "out of sequence reply: mine {rid}, theirs {got}"
            )));
        }
        Ok((kind, r.rest().to_vec()))
    }

    fn simple(&mut self, kind: u32) -> io::Result<u32> {
        let rid = self.next_rid();
        let mut b = Vec::new();
        b.put_u32(kind);
        b.put_u32(rid);
        self.sock.write_all(&frame(&b))?;
        let (k, rest) = self.reply(rid)?;
        match k {
            S_OK => Ok(0),
            S_ALIVE => {
                let mut r = Reader::new(&rest);
                r.u32().map_err(|_| bad("short alive reply"))
            }
            S_PERMISSION_DENIED | S_FAILURE => {
                let mut r = Reader::new(&rest);
                let why = cstring(&mut r).unwrap_or_default();
                Err(io::Error::other(format!("master refused: {why}")))
            }
            k => Err(bad(format!("unexpected reply 0x{k:08x}"))),
        }
    }

    /// MUX_C_ALIVE_CHECK: the master's pid.
    pub fn alive(&mut self) -> io::Result<u32> {
        self.simple(C_ALIVE_CHECK)
    }

    /// MUX_C_TERMINATE. A master gone before its answer did terminate
    /// (as ssh takes it).
    pub fn terminate(&mut self) -> io::Result<()> {
        match self.simple(C_TERMINATE) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// MUX_C_STOP_LISTENING.
    pub fn stop_listening(&mut self) -> io::Result<()> {
        self.simple(C_STOP_LISTENING).map(|_| ())
    }

    /// MUX_C_OPEN_FWD (or MUX_C_CLOSE_FWD when `cancel`): for a remote
    /// forward on port 0, the port the server allocated.
    pub fn forward(&mut self, cancel: bool, f: &FwdReq) -> io::Result<Option<u32>> {
        let rid = self.next_rid();
        let kind = if cancel { C_CLOSE_FWD } else { C_OPEN_FWD };
        self.sock.write_all(&f.encode(kind, rid))?;
        let (k, rest) = self.reply(rid)?;
        let mut r = Reader::new(&rest);
        match k {
            S_OK => Ok(None),
            S_REMOTE_PORT if !cancel => Ok(Some(r.u32().map_err(|_| bad("short reply"))?)),
            S_PERMISSION_DENIED | S_FAILURE => {
                let why = cstring(&mut r).unwrap_or_default();
                Err(io::Error::other(format!(
                    "forwarding request failed: {why}"
                )))
            }
            k => Err(bad(format!("unexpected reply 0x{k:08x}"))),
        }
    }

    /// MUX_C_PROXY (`-O proxy`): once the master says MUX_S_PROXY, the
    /// socket carries the SSH connection protocol (mux framing); it is
    /// returned for that, non-blocking.
    pub fn proxy(mut self) -> io::Result<UnixStream> {
        let rid = self.next_rid();
        let mut b = Vec::new();
        b.put_u32(C_PROXY);
        b.put_u32(rid);
        self.sock.write_all(&frame(&b))?;
        let (k, rest) = self.reply(rid)?;
        match k {
            S_PROXY if rest.is_empty() => {}
            S_PERMISSION_DENIED | S_FAILURE => {
                let why = cstring(&mut Reader::new(&rest)).unwrap_or_default();
                return Err(io::Error::other(format!("master returned error: {why}")));
            }
            k => return Err(bad(format!("unexpected reply 0x{k:08x}"))),
        }
        self.sock.set_read_timeout(None)?;
        self.sock.set_nonblocking(true)?;
        Ok(self.sock)
    }

    /// Waits until the socket is readable (true) or a signal came (false).
    fn wait_readable(&self, sig: &crate::sig::Signals) -> io::Result<bool> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut p = [
            PollFd::new(self.sock.as_fd(), PollFlags::POLLIN),
            PollFd::new(sig.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut p, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        if ready(&p[1]) {
            sig.drain();
        }
        Ok(ready(&p[0]) && !ready(&p[1]))
    }

    /// MUX_C_NEW_STDIO_FWD (-W): our stdin and stdout to `host:port`
    /// through the master, until it closes the connection.
    pub fn stdio_forward(mut self, host: &str, port: u16) -> io::Result<()> {
        self.alive()?;
        let rid = self.next_rid();
        let mut b = Vec::new();
        b.put_u32(C_NEW_STDIO_FWD);
        b.put_u32(rid);
        b.put_string(b"");
        b.put_str(host);
        b.put_u32(port.into());
        self.sock.write_all(&frame(&b))?;
        for fd in [0, 1] {
            send_fd(&self.sock, fd)?;
        }
        let (k, rest) = self.reply(rid)?;
        let mut r = Reader::new(&rest);
        match k {
            S_SESSION_OPENED => {}
            S_PERMISSION_DENIED | S_FAILURE => {
                let why = cstring(&mut r).unwrap_or_default();
                return Err(io::Error::other(format!("refused: {why}")));
            }
            k => return Err(bad(format!("unexpected reply 0x{k:08x}"))),
        }
        self.sock.set_read_timeout(None)?;
        match self.read_packet() {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Err(bad("unexpected message from the master")),
        }
    }

    /// A session through the master on our stdin, stdout and stderr; waits
    /// for its end and returns the exit status (255 when the master went
    /// away without one). `opened` runs once the session is up (raw mode).
    pub fn session(mut self, req: &NewSession, opened: impl FnOnce()) -> io::Result<i32> {
        let sig = crate::sig::install()?;
        let master = self.alive()?;
        let rid = self.next_rid();
        self.sock.write_all(&req.encode(rid))?;
        for fd in [0, 1, 2] {
            send_fd(&self.sock, fd)?;
        }
        let (k, rest) = self.reply(rid)?;
        let mut r = Reader::new(&rest);
        let sid = match k {
            S_SESSION_OPENED => r.u32().map_err(|_| bad("short reply"))?,
            S_PERMISSION_DENIED | S_FAILURE => {
                let why = cstring(&mut r).unwrap_or_default();
                return Err(io::Error::other(format!("session request failed: {why}")));
            }
            k => return Err(bad(format!("unexpected reply 0x{k:08x}"))),
        };
        opened();
        self.sock.set_read_timeout(None)?;
        let mut exit = None;
        loop {
            // As ssh's mux client: a window change is the master's to send
            // (SIGWINCH relayed to it); a terminating signal ends us (255).
            if !self.wait_readable(sig)? {
                // The pid is the master's word: only a real process id (as
                // ssh: above 1; 0 or -1 would signal a whole group).
                let pid = i32::try_from(master).ok().filter(|&p| p > 1);
                if let (true, Some(p)) = (sig.take_winch(), pid) {
                    let pid = nix::unistd::Pid::from_raw(p);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGWINCH);
                }
                if let Some(s) = sig.terminated() {
                    crate::debug1!("Exiting on signal {s}");
                    return Ok(255);
                }
                continue;
            }
            let p = match self.read_packet() {
                Ok(p) => p,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            };
            let mut r = Reader::new(&p);
            let (Ok(kind), Ok(id)) = (r.u32(), r.u32()) else {
                return Err(bad("short message"));
            };
            match kind {
                S_TTY_ALLOC_FAIL if id == sid => crate::tty::leave_raw(),
                S_EXIT_MESSAGE if id == sid && exit.is_none() => {
                    exit = Some(r.u32().map_err(|_| bad("short exit message"))?);
                }
                k => return Err(bad(format!("unexpected message 0x{k:08x}"))),
            }
        }
        Ok(exit.map_or(255, |e| e as i32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_bounded() {
        let mut b = vec![0xff, 0xff, 0xff, 0xff, 1];
        assert!(take_packet(&mut b).is_err());
        let mut b = ((MAX_PACKET + 1) as u32).to_be_bytes().to_vec();
        assert!(take_packet(&mut b).is_err());
        let mut b = 3u32.to_be_bytes().to_vec();
        assert!(take_packet(&mut b).is_err(), "no room for the type");
        let mut b = hello();
        b.extend([0, 0]);
        assert_eq!(
            take_packet(&mut b).unwrap().unwrap(),
            [0, 0, 0, 1, 0, 0, 0, 4]
        );
        assert_eq!(b, [0, 0], "the rest stays");
        assert_eq!(take_packet(&mut b).unwrap(), None);
    }

    #[test]
    fn session_requests_decode_strictly() {
        let req = NewSession {
            want_tty: true,
            want_x11: false,
            want_agent: true,
            subsystem: false,
            escape: Some(u32::from(b'~')),
            term: "xterm".into(),
            command: "ls -l".into(),
            env: vec!["LANG=C".into()],
        };
        let mut b = req.encode(9);
        let p = take_packet(&mut b).unwrap().unwrap();
        let mut r = Reader::new(&p);
        assert_eq!((r.u32().unwrap(), r.u32().unwrap()), (C_NEW_SESSION, 9));
        assert_eq!(NewSession::decode(&mut r).unwrap(), req);
        // Every truncation is refused, never a panic.
        for n in 8..p.len() {
            if n == p.len() - (4 + "LANG=C".len()) {
                continue; // ends before the optional environment: valid
            }
            let mut r = Reader::new(&p[8..n]);
            assert!(NewSession::decode(&mut r).is_err(), "{n}");
        }
        // A flag other than 0 or 1, a NUL in a string.
        let mut bad = p.clone();
        bad[15] = 2;
        assert!(NewSession::decode(&mut Reader::new(&bad[8..])).is_err());
        let mut bad = p.clone();
        let at = bad.len() - 2;
        bad[at] = 0;
        assert!(NewSession::decode(&mut Reader::new(&bad[8..])).is_err());
    }
}
