//! Fleets: several resshd nodes behind one load balancer. A reconnect that
//! lands on a node that does not own its session is relayed to the node
//! that does, over a mutually authenticated link between nodes
//! (docs/fleet.md).
//!
//! - Membership is configuration: `FleetNodes` names a file of
//!   `name host:port public-key` lines (every node, this one included);
//!   `FleetKey` is this node's private key (an OpenSSH key file). A node is
//!   its key: links are TLS 1.3 with a self-signed certificate made from
//!   that key at each start, and a peer is believed only if its
//!   certificate's key is listed. The files are read afresh for each link,
//!   so an edited list takes effect for the next reconnect.
//! - Finding the owner reveals nothing new: the receiving node asks every
//!   other node with the reconnect's own token (which the client sends in
//!   the clear anyway, and which changes with each reconnect); nothing in it
//!   names a node.
//! - The owner validates the relayed reconnect exactly as a local one (its
//!   broker and session monitor see a requester with the client's
//!   address); the link is a byte pipe after that. The receiving node's
//!   asking process and the owner's link process each pump one direction
//!   pair between the client's socket, the link and the session.
//! - No root process speaks TLS or touches another node: both ends of a
//!   link are resshd executed afresh (`--fleet-ask` for the receiving
//!   node's monitor, `--fleet-link` for each accepted link), which read the
//!   key and the list as root, then drop to the privsep user in the empty
//!   chroot, non-dumpable, under a seccomp allow-list ([`link_filter`]),
//!   before their first byte with another node.
//!
//! The link's protocol: after the TLS handshake, the receiving node sends
//! one frame (a 4-byte big-endian length, then a postcard-encoded [`Ask`])
//! and reads one [`Answer`]; after an accepted answer both ends carry the
//! connection's bytes until either side closes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Public};
use openssl::ssl::{
    ErrorCode, HandshakeError, Ssl, SslContext, SslMethod, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use ressh_ipc::msg::{FromBroker, ToBroker};
use ressh_ipc::sandbox;
use ressh_proto::keys::{PrivateKey, PublicKey};
use ressh_proto::resilience::failure;
use ressh_proto::ReconnectRequest;
use serde::{Deserialize, Serialize};

use crate::log;

/// Longest FleetNodes file read.
const MAX_NODES_FILE: u64 = 256 * 1024;
/// Most nodes in a fleet.
const MAX_NODES: usize = 256;
/// Largest frame on a link before the byte pipe (a reconnect request and
/// the bytes that came with it).
const MAX_FRAME: usize = 256 * 1024;
/// Time to connect to a node and have its answer.
pub const ASK_TIME: Duration = Duration::from_secs(10);
/// Bytes buffered per direction by a relay.
const PUMP_BUF: usize = 256 * 1024;

/// One line of the FleetNodes file.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub addr: String,
    pub key: PublicKey,
}

/// What a receiving node asks the others.
#[derive(Serialize, Deserialize)]
pub struct Ask {
    pub request: Box<ReconnectRequest>,
    pub peer_addr: String,
    pub peer_port: u16,
    /// Bytes the client sent after its request.
    pub leftover: Vec<u8>,
}

/// The answer: the owner's verdict (Ok: the link is the connection now),
/// or why not (UNKNOWN_SESSION from a node that does not own it).
#[derive(Serialize, Deserialize)]
pub struct Answer(pub Result<(), (u32, String)>);

/// Reads a FleetNodes file: `name host:port key-type base64 [comment]`
/// lines, `#` comments and blank lines. Strict: a malformed line, a
/// duplicate name or key is an error naming the line.
pub fn read_nodes(path: &Path) -> Result<Vec<Node>, String> {
    let text = read_root_file(path, MAX_NODES_FILE, 0o022)?;
    let mut nodes: Vec<Node> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("{}:{}", path.display(), i + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut w = line.splitn(3, char::is_whitespace);
        let (Some(name), Some(addr), Some(key)) = (w.next(), w.next(), w.next()) else {
            return Err(format!("{}: want `name host:port public-key`", at()));
        };
        if !valid_name(name) {
            return Err(format!("{}: bad node name {name:?}", at()));
        }
        if addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err(format!("{}: bad address {addr:?} (host:port)", at()));
        }
        let (key, _) = PublicKey::from_openssh(key.trim())
            .map_err(|e| format!("{}: bad public key: {e}", at()))?;
        if nodes.iter().any(|n| n.name == name || n.key == key) {
            return Err(format!("{}: node {name} listed twice", at()));
        }
        if nodes.len() == MAX_NODES {
            return Err(format!("{}: more than {MAX_NODES} nodes", at()));
        }
        nodes.push(Node {
            name: name.to_string(),
            addr: addr.to_string(),
            key,
        });
    }
    Ok(nodes)
}

/// A root-owned regular file of at most `max` bytes, none of whose `deny`
/// mode bits are set (the node list must not be writable by others: a line
/// added there is a node believed; the key must be readable by root alone).
fn read_root_file(path: &Path, max: u64, deny: u32) -> Result<String, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| at(&e))?;
    let meta = f.metadata().map_err(|e| at(&e))?;
    if !meta.is_file() {
        return Err(at(&"not a regular file"));
    }
    if meta.uid() != 0 || meta.mode() & deny != 0 {
        return Err(at(&format_args!(
            "must be owned by root and mode {:o} at most",
            0o666 & !deny
        )));
    }
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf).map_err(|e| at(&e))?;
    if buf.len() as u64 > max {
        return Err(at(&format_args!("longer than {max} bytes")));
    }
    String::from_utf8(buf).map_err(|_| at(&"not UTF-8"))
}

/// This node's identity for links: its key and a self-signed certificate.
pub struct Identity {
    key: PrivateKey,
    cert: X509,
}

impl Identity {
    pub fn load(path: &Path) -> Result<Identity, String> {
        let text = read_root_file(path, 64 * 1024, 0o077)?;
        let key = PrivateKey::from_openssh_pem(text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let cert = self_signed(&key).map_err(|e| format!("fleet certificate: {e}"))?;
        Ok(Identity { key, cert })
    }

    pub fn public(&self) -> PublicKey {
        self.key.public_key()
    }
}

fn self_signed(key: &PrivateKey) -> Result<X509, openssl::error::ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", "resshd fleet node")?;
    let name = name.build();
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(key.pkey())?;
    b.set_not_before(Asn1Time::days_from_now(0)?.as_ref())?;
    b.set_not_after(Asn1Time::days_from_now(3650)?.as_ref())?;
    // Ed25519 signs without a separate digest.
    let md = match key.pkey().id() {
        openssl::pkey::Id::ED25519 => MessageDigest::null(),
        _ => MessageDigest::sha256(),
    };
    b.sign(key.pkey(), md)?;
    Ok(b.build())
}

/// A TLS 1.3 context that presents `me` and believes exactly the peers
/// whose keys are `allowed` (their certificates are self-signed: the key is
/// the identity, nothing else in the certificate counts).
fn context(me: &Identity, allowed: Vec<PKey<Public>>) -> Result<SslContext, String> {
    let e = |e: openssl::error::ErrorStack| format!("TLS: {e}");
    let mut b = SslContext::builder(SslMethod::tls()).map_err(e)?;
    b.set_min_proto_version(Some(SslVersion::TLS1_3))
        .map_err(e)?;
    b.set_certificate(&me.cert).map_err(e)?;
    b.set_private_key(me.key.pkey()).map_err(e)?;
    b.check_private_key().map_err(e)?;
    b.set_verify_callback(
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        move |_, store| {
            // Only the leaf counts (a self-signed certificate is its own
            // chain); its key must be a listed node's.
            if store.error_depth() != 0 {
                return false;
            }
            let Some(cert) = store.current_cert() else {
                return false;
            };
            let Ok(key) = cert.public_key() else {
                return false;
            };
            allowed.iter().any(|a| a.public_eq(&key))
        },
    );
    Ok(b.build())
}

fn pkeys<'a>(nodes: impl Iterator<Item = &'a Node>) -> Vec<PKey<Public>> {
    nodes.filter_map(|n| n.key.to_pkey().ok()).collect()
}

fn write_frame<T: Serialize>(s: &mut impl Write, m: &T) -> Result<(), String> {
    let body = postcard::to_allocvec(m).map_err(|e| format!("encode: {e}"))?;
    if body.len() > MAX_FRAME {
        return Err("frame too large".into());
    }
    s.write_all(&(body.len() as u32).to_be_bytes())
        .and_then(|()| s.write_all(&body))
        .and_then(|()| s.flush())
        .map_err(|e| format!("link: {e}"))
}

fn read_frame<T: for<'de> Deserialize<'de>>(s: &mut impl Read) -> Result<T, String> {
    read_frame_max(s, MAX_FRAME)
}

/// A frame of at most `max` bytes, decoded strictly (no byte left over).
fn read_frame_max<T: for<'de> Deserialize<'de>>(
    s: &mut impl Read,
    max: usize,
) -> Result<T, String> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).map_err(|e| format!("link: {e}"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(format!("link: a frame of {len} bytes"));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).map_err(|e| format!("link: {e}"))?;
    match postcard::take_from_bytes(&body) {
        Ok((m, [])) => Ok(m),
        _ => Err("link: undecodable frame".to_string()),
    }
}

/// The receiving node's side, in the asking process ([`ask_main`]): asks
/// every other node of `nodes_file` whether it owns the session of `ask`.
/// It reads the key and the list, resolves the nodes' addresses and makes
/// their sockets, then `confine`s itself before it connects to any: the TLS
/// with whoever answers at those addresses runs without privilege. Ok: the
/// owner accepted; the returned link carries the connection from now on.
/// Err: the verdict for the client (UNKNOWN_SESSION when no node owns it,
/// TRY_AGAIN when a node could not be asked, the owner's refusal as it gave
/// it).
pub fn ask_fleet(
    key_file: &Path,
    nodes_file: &Path,
    confine: impl FnOnce() -> Result<(), String>,
    ask: &Ask,
) -> Result<(String, SslStream<TcpStream>), (u32, String)> {
    let fail = |e: String| (failure::TRY_AGAIN, e);
    let me = Identity::load(key_file).map_err(fail)?;
    let nodes = read_nodes(nodes_file).map_err(fail)?;
    let mine = me.public();
    let (others, dials): (Vec<Node>, Vec<Result<Dial, String>>) = nodes
        .into_iter()
        .filter(|n| n.key != mine)
        .map(|n| {
            let d = dial(&me, &n);
            (n, d)
        })
        .unzip();
    drop(me);
    confine().map_err(fail)?;
    // All at once: a dead node costs its ASK_TIME once, not once per node
    // before the owner. At most one can own the token.
    let answers: Vec<Result<Asked, String>> = std::thread::scope(|scope| {
        let asks: Vec<_> = dials
            .into_iter()
            .map(|d| scope.spawn(move || ask_node(d, ask)))
            .collect();
        asks.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("asking thread failed".into()))
            })
            .collect()
    });
    let mut unsure = Vec::new();
    for (node, answer) in others.iter().zip(answers) {
        match answer {
            Ok(Ok(link)) => return Ok((node.name.clone(), link)),
            Ok(Err((code, _))) if code == failure::UNKNOWN_SESSION => {}
            // Restarting (its sessions registering again), or busy: it may
            // still be the owner.
            Ok(Err((code, why))) if code == failure::TRY_AGAIN => {
                unsure.push(format!("{} ({why})", node.name));
            }
            // The owner's verdict.
            Ok(Err(refused)) => return Err(refused),
            Err(e) => {
                log::error(&format!("fleet: node {} ({}): {e}", node.name, node.addr));
                unsure.push(format!("{} (unreachable)", node.name));
            }
        }
    }
    if unsure.is_empty() {
        Err((
            failure::UNKNOWN_SESSION,
            "unknown session (on every node of the fleet)".into(),
        ))
    } else {
        Err((
            failure::TRY_AGAIN,
            format!("unknown session here; fleet node {}", unsure.join(", ")),
        ))
    }
}

type Asked = Result<SslStream<TcpStream>, (u32, String)>;

/// What asking one node takes, made before the asking process confines
/// itself: the TLS context believing that node's key, its address
/// (resolved), and an unconnected socket (the confined process makes none).
struct Dial {
    ctx: SslContext,
    addr: SocketAddr,
    sock: OwnedFd,
}

fn dial(me: &Identity, node: &Node) -> Result<Dial, String> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let addr = node
        .addr
        .to_socket_addrs()
        .map_err(|e| format!("resolve: {e}"))?
        .next()
        .ok_or("no address")?;
    let ctx = context(me, pkeys(std::iter::once(node)))?;
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let sock = socket(family, SockType::Stream, flags, None).map_err(|e| format!("socket: {e}"))?;
    Ok(Dial { ctx, addr, sock })
}

fn ask_node(dial: Result<Dial, String>, ask: &Ask) -> Result<Asked, String> {
    let Dial { ctx, addr, sock } = dial?;
    let deadline = Instant::now() + ASK_TIME;
    let tcp = connect(sock, addr, ASK_TIME).map_err(|e| format!("connect: {e}"))?;
    link_socket(&tcp);
    let ssl = Ssl::new(&ctx).map_err(|e| e.to_string())?;
    let mut tls = handshake(ssl, tcp, false, deadline)?;
    write_frame(&mut tls, ask)?;
    let Answer(verdict) = read_frame(&mut tls)?;
    Ok(verdict.map(|()| tls))
}

/// Connects the non-blocking `sock` to `addr` within `timeout`.
fn connect(sock: OwnedFd, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{getsockopt, sockopt, SockaddrStorage};
    let deadline = Instant::now() + timeout;
    match nix::sys::socket::connect(sock.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) => return Ok(TcpStream::from(sock)),
        Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection timed out",
            ));
        }
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLOUT)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => break,
            Err(e) => return Err(e.into()),
        }
    }
    match getsockopt(&sock, sockopt::SocketError)? {
        0 => Ok(TcpStream::from(sock)),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}

/// A link's TCP options: no Nagle delay, and keepalives that find a node
/// gone silently (powered off, cut off) within about a minute, so the
/// relays on both sides end and the session detaches as after a cut.
fn link_socket(tcp: &TcpStream) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = tcp.set_nodelay(true);
    let _ = setsockopt(tcp, sockopt::KeepAlive, &true);
    let _ = setsockopt(tcp, sockopt::TcpKeepIdle, &30);
    let _ = setsockopt(tcp, sockopt::TcpKeepInterval, &10);
    let _ = setsockopt(tcp, sockopt::TcpKeepCount, &3);
}

/// The TLS handshake on `tcp` (as server if `server`), done by
/// `deadline` whatever the peer's pace (a per-read timeout alone lets a
/// peer sending a byte now and then hold it for ever); after it, each read
/// or write of the stream waits at most what is left until `deadline`.
fn handshake(
    ssl: Ssl,
    tcp: TcpStream,
    server: bool,
    deadline: Instant,
) -> Result<SslStream<TcpStream>, String> {
    let err = |e: &dyn std::fmt::Display| format!("TLS handshake: {e}");
    tcp.set_nonblocking(true).map_err(|e| err(&e))?;
    let mut step = if server {
        ssl.accept(tcp)
    } else {
        ssl.connect(tcp)
    };
    let tls = loop {
        let mid = match step {
            Ok(tls) => break tls,
            Err(HandshakeError::WouldBlock(mid)) => mid,
            Err(HandshakeError::SetupFailure(e)) => return Err(err(&e)),
            Err(HandshakeError::Failure(m)) => return Err(err(m.error())),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(err(&format_args!("not done within {ASK_TIME:?}")));
        }
        let ev = if mid.error().code() == ErrorCode::WANT_WRITE {
            PollFlags::POLLOUT
        } else {
            PollFlags::POLLIN
        };
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(mid.get_ref().as_fd(), ev)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(err(&format_args!("poll: {e}"))),
        }
        step = mid.handshake();
    };
    let tcp = tls.get_ref();
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    tcp.set_nonblocking(false)
        .and_then(|()| tcp.set_read_timeout(Some(left)))
        .and_then(|()| tcp.set_write_timeout(Some(left)))
        .map_err(|e| err(&e))?;
    Ok(tls)
}

/// resshd's first argument when it runs as a fleet link process: the
/// owner's side of a link ([`exec_link`], [`link_main`]).
pub const LINK_ARG: &str = "--fleet-link";
/// The same for the asking side ([`ask_in_process`], [`ask_main`]).
pub const ASK_ARG: &str = "--fleet-ask";

/// resshd's entry for its fleet processes: Some(exit code) if `argv` is a
/// link process's ([`LINK_ARG`] or [`ASK_ARG`]), before resshd does
/// anything else (its descriptors 3 and on are the link's).
pub fn main(argv: &[String]) -> Option<i32> {
    match argv.get(1).map(String::as_str) {
        Some(LINK_ARG) => Some(link_main(&argv[2..])),
        Some(ASK_ARG) => Some(ask_main(&argv[2..])),
        _ => None,
    }
}

/// resshd executed afresh as the link process `which` (a new address
/// space: none of the listener's host keys or state, nor the monitor's,
/// reach what talks to another node), its descriptors 3 and on `fds`.
#[allow(unsafe_code)] // pre_exec (placing the descriptors)
fn link_command(
    which: &str,
    key_file: &Path,
    nodes_file: &Path,
    privsep: &crate::monitor::Privsep,
    fds: Vec<i32>,
) -> std::io::Result<std::process::Command> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg(which).arg(log::to_word());
    cmd.arg(key_file).arg(nodes_file);
    match privsep {
        crate::monitor::Privsep::Root { uid, gid, chroot } => {
            cmd.arg(uid.to_string()).arg(gid.to_string()).arg(chroot)
        }
        crate::monitor::Privsep::Unprivileged { .. } => cmd.args(["-", "-", "-"]),
    };
    cmd.env_clear();
    // SAFETY: place_fds only calls async-signal-safe functions.
    unsafe { cmd.pre_exec(move || crate::monitor::place_fds(&fds)) };
    Ok(cmd)
}

/// In a child of resshd for an accepted link: executes resshd afresh as a
/// link process with the link on descriptor 3 and its link to the broker
/// on 4 (made by resshd, which takes from it only a reconnect's route and
/// hand-over). Returns only on failure.
pub fn exec_link(
    sock: TcpStream,
    broker: OwnedFd,
    key_file: &Path,
    nodes_file: &Path,
    privsep: &crate::monitor::Privsep,
) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let fds = vec![sock.as_raw_fd(), broker.as_raw_fd()];
    match link_command(LINK_ARG, key_file, nodes_file, privsep, fds) {
        Ok(mut cmd) => cmd.exec(),
        Err(e) => e,
    }
}

/// The privsep user's uid and gid, and the empty chroot.
type PrivsepUser = (u32, u32, PathBuf);

/// A link process's arguments as [`link_command`] made them (after its
/// first): the key, the list, and the privsep user and chroot if resshd
/// runs as root. None: not resshd's.
fn link_args(args: &[String]) -> Option<(&Path, &Path, Option<PrivsepUser>)> {
    let [level, key, nodes, uid, gid, chroot] = args else {
        eprintln!("resshd: a fleet link process is run by resshd itself");
        return None;
    };
    if !log::from_word(level) {
        return None;
    }
    let privsep = match (uid.parse::<u32>(), gid.parse::<u32>()) {
        (Ok(u), Ok(g)) => Some((u, g, PathBuf::from(chroot))),
        _ => None,
    };
    Some((Path::new(key), Path::new(nodes), privsep))
}

/// A link process's confinement, once it has read what only root may
/// (the key, the list) and before its first byte with another node:
/// with privilege separation the privsep user in the empty chroot, always
/// non-dumpable, no_new_privs, and the seccomp allow-list `filter`
/// ([`link_filter`]) whose breach kills it with SIGSYS (its parent logs it).
fn confine(privsep: &Option<PrivsepUser>, filter: &[sandbox::BpfProgram]) -> Result<(), String> {
    match privsep {
        Some((uid, gid, chroot)) => {
            sandbox::drop_privileges(chroot, *uid, *gid).map_err(|e| e.to_string())?
        }
        None => ressh_ipc::harden::non_dumpable()?,
    }
    sandbox::install(filter).map_err(|e| e.to_string())
}

/// The system calls a confined link process may make: TLS and the byte
/// pump on descriptors it holds (non-blocking set by ioctl FIONBIO for the
/// link, fcntl F_SETFL O_NONBLOCK for the other end), messages to the
/// broker or the monitor, memory and time. The asking side also connects
/// its sockets (made before) and asks the nodes from threads: clone only
/// for a thread (clone3, whose flags a filter cannot see, fails with ENOSYS
/// and the C library falls back to clone). Anything else kills it: no
/// socket, file, program, signal to another process, or child.
fn link_filter(asking: bool) -> Result<Vec<sandbox::BpfProgram>, sandbox::Error> {
    use sandbox::{SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as If};
    let mut allowed = sandbox::BASE.to_vec();
    let nonblock = sandbox::SeccompRule::new(vec![
        If::new(1, Len::Dword, Op::Eq, libc::F_SETFL as u64)?,
        If::new(2, Len::Dword, Op::Eq, libc::O_NONBLOCK as u64)?,
    ])?;
    let getfd =
        sandbox::SeccompRule::new(vec![If::new(1, Len::Dword, Op::Eq, libc::F_GETFD as u64)?])?;
    let mut rules = vec![
        (libc::SYS_fcntl, vec![getfd, nonblock]),
        sandbox::only_with(libc::SYS_ioctl, 1, &[libc::FIONBIO])?,
    ];
    let mut progs = Vec::new();
    if asking {
        allowed.extend([
            libc::SYS_connect,
            libc::SYS_clone3,
            libc::SYS_set_robust_list,
            libc::SYS_rseq,
            // The C library's malloc, sizing its arenas for a new thread.
            libc::SYS_sched_getaffinity,
        ]);
        let thread = libc::CLONE_THREAD as u64;
        rules.push((
            libc::SYS_clone,
            vec![sandbox::SeccompRule::new(vec![If::new(
                0,
                Len::Qword,
                Op::MaskedEq(thread),
                thread,
            )?])?],
        ));
        progs.push(sandbox::fail_with(
            &[libc::SYS_clone3],
            libc::ENOSYS as u32,
        )?);
    }
    // Last: it forbids installing another.
    progs.push(sandbox::allow_list(&allowed, rules)?);
    Ok(progs)
}

/// A link process: `args` as [`exec_link`] made them (after [`LINK_ARG`]),
/// the link on descriptor 3, the broker on 4. Reads the key and list and
/// greets the broker as root, then confines itself before any TLS.
#[allow(unsafe_code)] // taking descriptors 3 and 4, placed there by exec_link
fn link_main(args: &[String]) -> i32 {
    let Some((key, nodes, privsep)) = link_args(args) else {
        return 2;
    };
    // SAFETY: resshd placed the accepted link and our end of its broker
    // link there (exec_link); nothing else in this fresh process owns them.
    let (sock, broker) = unsafe {
        use std::os::fd::FromRawFd;
        (TcpStream::from_raw_fd(3), OwnedFd::from_raw_fd(4))
    };
    let broker = crate::monitor::greet_broker(broker);
    let Ok(from) = sock.peer_addr() else {
        return 255;
    };
    let filter = match link_filter(false) {
        Ok(f) => f,
        Err(e) => {
            log::error(&format!("fleet link: {e}"));
            return 255;
        }
    };
    serve_link(
        key,
        nodes,
        broker,
        || confine(&privsep, &filter),
        sock,
        from,
    )
}

/// Longest verdict frame from the asking process: a code, a node's name
/// or the reason for the client.
const MAX_VERDICT: usize = 4096;
/// What the monitor waits for the asking process's verdict beyond
/// [`ASK_TIME`] (reading the files, resolving the names, starting).
const VERDICT_MARGIN: Duration = Duration::from_secs(5);

/// The asking process's verdict to its monitor: Ok(the owner's node name:
/// the process relays the connection now) or the verdict for the client.
#[derive(Serialize, Deserialize)]
struct Verdict(Result<String, (u32, String)>);

/// The monitor's side of a reconnect that may be another node's: runs the
/// asking process (resshd afresh, [`ASK_ARG`]) with the client's socket
/// `sock` and `ask`, and waits at most [`ASK_TIME`] and a margin for its
/// verdict. Ok: the owner's node name, and the process, which relays the
/// connection from now on (the monitor waits for it: [`relay_ended`]).
/// Err: the verdict for the client. The monitor itself makes no connection
/// to another node and does no TLS; it believes nothing of the process's
/// but a verdict code and a bounded text.
pub fn ask_in_process(
    sock: &OwnedFd,
    key_file: &Path,
    nodes_file: &Path,
    privsep: &crate::monitor::Privsep,
    ask: &Ask,
    who: &str,
) -> Result<(String, std::process::Child), (u32, String)> {
    use std::os::unix::net::UnixStream;
    use std::process::Stdio;
    let again = |e: String| (failure::TRY_AGAIN, format!("fleet: {e}"));
    let deadline = Instant::now() + ASK_TIME + VERDICT_MARGIN;
    let (mut ours, theirs) = UnixStream::pair().map_err(|e| again(e.to_string()))?;
    let fds = vec![sock.as_raw_fd(), theirs.as_raw_fd()];
    let mut cmd = link_command(ASK_ARG, key_file, nodes_file, privsep, fds)
        .map_err(|e| again(format!("cannot execute resshd: {e}")))?;
    // Its log lines reach the log through the monitor, escaped and under
    // its pid (written straight there, a process taken over would forge
    // any other's lines); stdin and stdout may be the client's connection
    // (inetd mode).
    let (log_r, log_w) = log::stderr_pipe().map_err(|e| again(e.to_string()))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_w));
    let child = cmd
        .spawn()
        .map_err(|e| again(format!("cannot execute resshd: {e}")))?;
    drop(cmd);
    drop(theirs);
    let (pid, context) = (child.id(), who.to_string());
    std::thread::spawn(move || log::relay_stderr(log_r, "resshd", pid, &context));
    let verdict = ours
        .set_write_timeout(Some(ASK_TIME))
        .map_err(|e| e.to_string())
        .and_then(|()| write_frame(&mut ours, ask))
        .and_then(|()| read_verdict(&ours, deadline));
    match verdict {
        Ok(Verdict(Ok(node))) => Ok((node, child)),
        Ok(Verdict(Err(refused))) => {
            // It ends by itself once it gave its verdict.
            end_asker(child, who, Duration::from_secs(2));
            Err(refused)
        }
        Err(e) => {
            end_asker(child, who, Duration::ZERO);
            Err(again(format!("asking process: {e}")))
        }
    }
}

/// The asking process's verdict, read by `deadline` however it paces its
/// bytes, and believed only if well-formed: a code and a text of at most
/// [`MAX_VERDICT`] bytes, a node's name as the list allows them. The text
/// (the asking process's, or another node's, relayed) is logged and shown
/// to the client: its control characters come escaped.
fn read_verdict(s: &std::os::unix::net::UnixStream, deadline: Instant) -> Result<Verdict, String> {
    struct ByDeadline<'a>(&'a std::os::unix::net::UnixStream, Instant);
    impl Read for ByDeadline<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let left = self.1.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            self.0.set_read_timeout(Some(left))?;
            (&mut &*self.0).read(buf)
        }
    }
    let Verdict(v) = read_frame_max(&mut ByDeadline(s, deadline), MAX_VERDICT)?;
    match v {
        Ok(node) if !valid_name(&node) => Err(format!("a bad node name {node:?}")),
        Ok(node) => Ok(Verdict(Ok(node))),
        Err((code, why)) => Ok(Verdict(Err((code, log::escape(&why))))),
    }
}

/// A node's name as FleetNodes allows it.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Waits for the asking process that relays a connection to end (the
/// connection's end), logging if a signal killed it (SIGSYS: its seccomp
/// filter).
pub fn relay_ended(child: std::process::Child, who: &str) {
    end_asker(child, who, Duration::MAX);
}

/// Reaps the asking process, waiting at most `grace` before killing it;
/// a signal other than that kill is logged.
fn end_asker(mut child: std::process::Child, who: &str, grace: Duration) {
    use std::os::unix::process::ExitStatusExt;
    let start = Instant::now();
    let mut killed = false;
    let status = if grace == Duration::MAX {
        child.wait().ok()
    } else {
        loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if start.elapsed() >= grace => {
                    killed = true;
                    let _ = child.kill();
                    break child.wait().ok();
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break None,
            }
        }
    };
    if let Some(sig) = status.and_then(|st| st.signal()) {
        if !(killed && sig == libc::SIGKILL) {
            let sig = nix::sys::signal::Signal::try_from(sig)
                .map_or_else(|_| sig.to_string(), |s| s.to_string());
            log::error(&format!(
                "{who}: fleet asking process {} killed by signal {sig}",
                child.id()
            ));
        }
    }
}

/// The asking process: `args` as [`ask_in_process`] made them (after
/// [`ASK_ARG`]), the client's connection on descriptor 3 and the monitor on
/// 4. Reads the question from the monitor, then asks the fleet
/// ([`ask_fleet`], confined before it connects), gives the monitor its
/// verdict, and relays the client's connection if the owner accepted.
#[allow(unsafe_code)] // taking descriptors 3 and 4, placed there by ask_in_process
fn ask_main(args: &[String]) -> i32 {
    let Some((key, nodes, privsep)) = link_args(args) else {
        return 2;
    };
    // SAFETY: the monitor placed the client's connection and its end of
    // our socketpair there; nothing else in this fresh process owns them.
    let (client, mut monitor) = unsafe {
        use std::os::fd::FromRawFd;
        (
            OwnedFd::from_raw_fd(3),
            std::os::unix::net::UnixStream::from_raw_fd(4),
        )
    };
    let filter = match link_filter(true) {
        Ok(f) => f,
        Err(e) => {
            log::error(&format!("fleet: {e}"));
            return 255;
        }
    };
    let ask: Ask = match monitor
        .set_read_timeout(Some(ASK_TIME))
        .map_err(|e| e.to_string())
        .and_then(|()| read_frame(&mut monitor))
    {
        Ok(a) => a,
        Err(e) => {
            log::error(&format!("fleet: the question: {e}"));
            return 255;
        }
    };
    let confined = || {
        // The C library installs its threads' signal handlers when the
        // first thread starts: that first, while the process may.
        std::thread::spawn(|| ())
            .join()
            .map_err(|_| "a thread failed".to_string())?;
        confine(&privsep, &filter)
    };
    let verdict = ask_fleet(key, nodes, confined, &ask);
    let (verdict, link) = match verdict {
        Ok((node, link)) => (Verdict(Ok(node)), Some(link)),
        Err(e) => (Verdict(Err(e)), None),
    };
    if write_frame(&mut monitor, &verdict).is_err() {
        return 255;
    }
    drop(monitor);
    if let Some(link) = link {
        let tcp = link.get_ref();
        if tcp.set_read_timeout(None).is_err() || tcp.set_write_timeout(None).is_err() {
            return 255;
        }
        pump(link, client);
    }
    0
}

/// The owning node's side of a link (a child of resshd for each accepted
/// link connection): the TLS handshake as server, believing only listed
/// nodes; the question; the local broker's route, exactly as a local
/// reconnect's; the answer; then the connection's bytes between the link
/// and the session (through a socketpair whose other end the session got).
///
/// It reads the key and the node list as root (its broker link greeted),
/// then `confine`s itself ([`link_main`]) before its first byte of TLS:
/// what an unauthenticated peer talks to holds no privilege.
fn serve_link(
    key_file: &Path,
    nodes_file: &Path,
    broker: Option<ressh_ipc::Endpoint>,
    confine: impl FnOnce() -> Result<(), String>,
    sock: TcpStream,
    from: SocketAddr,
) -> i32 {
    match serve_link_inner(key_file, nodes_file, broker, confine, sock) {
        Ok(()) => 0,
        Err(e) => {
            log::info(&format!(
                "fleet link from {} port {}: {e}",
                from.ip(),
                from.port()
            ));
            255
        }
    }
}

fn serve_link_inner(
    key_file: &Path,
    nodes_file: &Path,
    broker: Option<ressh_ipc::Endpoint>,
    confine: impl FnOnce() -> Result<(), String>,
    sock: TcpStream,
) -> Result<(), String> {
    let deadline = Instant::now() + ASK_TIME;
    let me = Identity::load(key_file)?;
    let nodes = read_nodes(nodes_file)?;
    let mine = me.public();
    let ctx = context(&me, pkeys(nodes.iter().filter(|n| n.key != mine)))?;
    drop(me);
    // The session's end of the relay, made now: the confined process makes
    // no socket.
    let pair = std::os::unix::net::UnixStream::pair().map_err(|e| e.to_string())?;
    confine()?;
    link_socket(&sock);
    let ssl = Ssl::new(&ctx).map_err(|e| e.to_string())?;
    let mut tls = handshake(ssl, sock, true, deadline).map_err(|e| format!("refused: {e}"))?;
    let ask: Ask = read_frame(&mut tls)?;
    let (peer_addr, peer_port) = (ask.peer_addr.clone(), ask.peer_port);
    if peer_addr.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("a bad client address {peer_addr:?}"));
    }
    let verdict = route_here(broker, ask, pair);
    let (verdict, session_end) = match verdict {
        Ok(end) => (Ok(()), Some(end)),
        Err(e) => (Err(e), None),
    };
    write_frame(&mut tls, &Answer(verdict))?;
    if let Some(end) = session_end {
        log::info(&format!(
            "fleet: reconnect from {peer_addr} port {peer_port} relayed to its session"
        ));
        tls.get_ref()
            .set_read_timeout(None)
            .map_err(|e| e.to_string())?;
        tls.get_ref()
            .set_write_timeout(None)
            .map_err(|e| e.to_string())?;
        pump(tls, end);
    }
    Ok(())
}

/// Routes the asked reconnect through this node's broker as a local
/// requester would. Ok: our end of the socketpair the session now reads.
fn route_here(
    broker: Option<ressh_ipc::Endpoint>,
    ask: Ask,
    (ours, theirs): (
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    ),
) -> Result<OwnedFd, (u32, String)> {
    let again = |e: String| (failure::TRY_AGAIN, e);
    let b = broker.ok_or_else(|| again("no broker".into()))?;
    b.set_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| again(e.to_string()))?;
    b.send(
        &ToBroker::Route {
            request: ask.request,
            peer_addr: ask.peer_addr.clone(),
            peer_port: ask.peer_port,
        },
        &[],
    )
    .map_err(|e| again(format!("broker: {e}")))?;
    match b.recv::<FromBroker>() {
        Ok((FromBroker::RouteResult(Ok(())), _)) => {}
        Ok((FromBroker::RouteResult(Err(e)), _)) => return Err(e),
        Ok(_) => return Err(again("broker answered out of turn".into())),
        Err(e) => return Err(again(format!("broker: {e}"))),
    }
    b.send(
        &ToBroker::Handover {
            leftover: ask.leftover,
            peer_addr: ask.peer_addr,
            peer_port: ask.peer_port,
        },
        &[theirs.as_fd()],
    )
    .map_err(|e| again(format!("broker: {e}")))?;
    Ok(OwnedFd::from(ours))
}

/// Carries bytes both ways between `link` and `other` until either side
/// closes or fails; then closes both. Each direction buffers at most
/// [`PUMP_BUF`] bytes: a side that does not read stops the other's reads.
pub fn pump(mut link: SslStream<TcpStream>, other: OwnedFd) {
    if link.get_ref().set_nonblocking(true).is_err() {
        return;
    }
    let _ = nix::fcntl::fcntl(
        other.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut to_other: Vec<u8> = Vec::new();
    let mut to_link: Vec<u8> = Vec::new();
    let mut tmp = vec![0u8; 64 * 1024];
    let mut link_eof = false;
    let mut other_eof = false;
    // What TLS asked for to go on (a read may need to write, a write to
    // read).
    let wants = |e: &openssl::ssl::Error| match e.code() {
        ErrorCode::WANT_READ => Some(PollFlags::POLLIN),
        ErrorCode::WANT_WRITE => Some(PollFlags::POLLOUT),
        _ => None,
    };
    // Whether the link is read: not past its end, and room for what comes.
    let link_readable = |link_eof: bool, to_other: &[u8]| !link_eof && to_other.len() < PUMP_BUF;
    loop {
        let mut progress = false;
        let mut link_ev = PollFlags::empty();
        // Link -> other.
        if link_readable(link_eof, &to_other) {
            let room = (PUMP_BUF - to_other.len()).min(tmp.len());
            match link.ssl_read(&mut tmp[..room]) {
                Ok(0) => link_eof = true,
                Ok(n) => {
                    to_other.extend_from_slice(&tmp[..n]);
                    progress = true;
                }
                Err(e) => match wants(&e) {
                    Some(ev) => link_ev |= ev,
                    None => link_eof = true,
                },
            }
        }
        if !to_other.is_empty() {
            match nix::unistd::write(&other, &to_other) {
                Ok(n) => {
                    to_other.drain(..n);
                    progress |= n > 0;
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
        // Other -> link.
        if !other_eof && to_link.len() < PUMP_BUF {
            let room = (PUMP_BUF - to_link.len()).min(tmp.len());
            match nix::unistd::read(other.as_raw_fd(), &mut tmp[..room]) {
                Ok(0) => other_eof = true,
                Ok(n) => {
                    to_link.extend_from_slice(&tmp[..n]);
                    progress = true;
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(_) => other_eof = true,
            }
        }
        if !to_link.is_empty() {
            match link.ssl_write(&to_link) {
                Ok(n) => {
                    to_link.drain(..n);
                    progress |= n > 0;
                }
                Err(e) => match wants(&e) {
                    Some(ev) => link_ev |= ev,
                    None => return,
                },
            }
        }
        // Either side gone, and what it sent delivered: done (the session
        // sees the end of its transport, as when a client's TCP dies).
        if (link_eof && to_other.is_empty()) || (other_eof && to_link.is_empty()) {
            let _ = link.shutdown();
            return;
        }
        if progress || (link.ssl().pending() > 0 && link_readable(link_eof, &to_other)) {
            continue;
        }
        // Wait only for what can be acted on: a side with no room to read
        // into is not polled for input (it would be ready at once, for
        // ever, and the loop would spin), nor a side nothing is waited
        // for (its hang-up or error is reported whatever is asked).
        let mut other_ev = PollFlags::empty();
        if !other_eof && to_link.len() < PUMP_BUF {
            other_ev |= PollFlags::POLLIN;
        }
        if !to_other.is_empty() {
            other_ev |= PollFlags::POLLOUT;
        }
        let mut fds = Vec::with_capacity(2);
        if !link_ev.is_empty() {
            fds.push(PollFd::new(link.get_ref().as_fd(), link_ev));
        }
        if !other_ev.is_empty() {
            fds.push(PollFd::new(other.as_fd(), other_ev));
        }
        let _ = poll(&mut fds, PollTimeout::from(1000u16));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_file_is_strict() {
        let dir = std::env::temp_dir().join(format!("fleet-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let k1 = PrivateKey::generate(ressh_proto::keys::KeyType::Ed25519)
            .unwrap()
            .public_key()
            .to_openssh("");
        let k2 = PrivateKey::generate(ressh_proto::keys::KeyType::Ed25519)
            .unwrap()
            .public_key()
            .to_openssh("");
        let f = dir.join("nodes");
        let ok =
            format!("# the fleet\nn1 198.18.0.1:2299 {k1} a comment\n\nn2 198.18.0.2:2299 {k2}\n");
        std::fs::write(&f, &ok).unwrap();
        let nodes = read_nodes(&f).unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[1].addr, "198.18.0.2:2299");
        for bad in [
            format!("n1 198.18.0.1 {k1}\n"),
            "n1 198.18.0.1:2299\n".to_string(),
            format!("n/1 198.18.0.1:2299 {k1}\n"),
            format!("n1 198.18.0.1:2299 {k1}\nn1 198.18.0.2:2299 {k2}\n"),
            format!("n1 198.18.0.1:2299 {k1}\nn2 198.18.0.2:2299 {k1}\n"),
            "n1 198.18.0.1:2299 ssh-ed25519 AAAAnotakey\n".to_string(),
        ] {
            std::fs::write(&f, &bad).unwrap();
            assert!(read_nodes(&f).is_err(), "{bad}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// What an attacker who runs code in a link process, asking or
    /// answering, would try first (ressh_ipc::sandbox::probe::escapes:
    /// another socket, AF_UNIX to a local daemon or AF_INET; a program; a
    /// file; ptrace; a signal; setuid; a child): under the filter the
    /// process installs, each kills it with SIGSYS.
    #[test]
    fn escapes_from_a_link_process_are_killed_by_sigsys() {
        for asking in [false, true] {
            let survived = sandbox::probe::survivors(&link_filter(asking).unwrap());
            assert!(
                survived.is_empty(),
                "asking {asking}: each must kill the link process with SIGSYS (Err({})); \
                 these ended otherwise (Ok(exit code) or Err(signal)): {survived:#?}",
                libc::SIGSYS
            );
        }
    }

    /// The calls the link processes make once confined go through, with
    /// the arguments they use and no other: the asking side's clone3 fails
    /// (ENOSYS, so the C library starts its threads with clone, whose
    /// flags the filter sees); non-blocking by fcntl only as F_SETFL
    /// O_NONBLOCK.
    #[test]
    #[allow(unsafe_code)] // raw system calls under the filter
    fn a_link_process_may_make_the_calls_it_needs_and_no_variant() {
        use sandbox::probe::under;
        let asking = link_filter(true).unwrap();
        let answering = link_filter(false).unwrap();
        // A descriptor of the test's own (flags set in a child change the
        // parent's too: not the terminal's).
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let clone3 = || {
            // SAFETY: the filter answers before the kernel reads the null
            // argument (and the kernel refuses a zero size).
            let r = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0) };
            let errno = std::io::Error::last_os_error().raw_os_error();
            libc::c_int::from(r != -1 || errno != Some(libc::ENOSYS))
        };
        assert_eq!(
            under(&asking, clone3),
            Ok(0),
            "clone3 must fail with ENOSYS"
        );
        assert_eq!(under(&answering, clone3), Err(libc::SIGSYS));
        let nonblock = || {
            // SAFETY: integer arguments only (and below, the same or a
            // pointer to a local or a static that outlives the call).
            unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) }.abs()
        };
        let fionbio = || {
            let mut on: libc::c_int = 1;
            // SAFETY: as above.
            unsafe { libc::ioctl(fd, libc::FIONBIO, &mut on) }.abs()
        };
        // SAFETY: as above.
        let async_io = || unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_ASYNC) };
        // SAFETY: as above.
        let setown = || unsafe { libc::fcntl(fd, libc::F_SETOWN, 1) };
        // SAFETY: as above (a static byte).
        let tiocsti = || unsafe { libc::ioctl(fd, libc::TIOCSTI, b"x".as_ptr()) };
        for progs in [&asking, &answering] {
            assert_eq!(under(progs, nonblock), Ok(0), "F_SETFL O_NONBLOCK");
            assert_eq!(under(progs, fionbio), Ok(0), "FIONBIO");
            assert_eq!(under(progs, async_io), Err(libc::SIGSYS), "F_SETFL O_ASYNC");
            assert_eq!(under(progs, setown), Err(libc::SIGSYS), "F_SETOWN");
            assert_eq!(under(progs, tiocsti), Err(libc::SIGSYS), "TIOCSTI");
        }
        // Connecting is the asking side's only (to a bad descriptor here:
        // EBADF if let through).
        let connect = || {
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr { s_addr: 0 },
                sin_zero: [0; 8],
            };
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            // SAFETY: sa outlives the call; len is its size.
            unsafe { libc::connect(-1, std::ptr::from_ref(&sa).cast(), len) };
            0
        };
        assert_eq!(under(&asking, connect), Ok(0));
        assert_eq!(under(&answering, connect), Err(libc::SIGSYS));
    }

    /// The monitor believes of its asking process (the privsep user, which
    /// whoever breaks into it controls) only a well-formed verdict, of at
    /// most MAX_VERDICT bytes, by its deadline however the bytes are paced;
    /// a node name it will log must be a name the list allows.
    #[test]
    fn the_monitor_believes_only_a_well_formed_verdict_in_time() {
        use std::os::unix::net::UnixStream;
        let frame = |v: &Verdict| {
            let body = postcard::to_allocvec(v).unwrap();
            let mut f = (body.len() as u32).to_be_bytes().to_vec();
            f.extend(body);
            f
        };
        let read = |bytes: Vec<u8>, pace: Option<Duration>| {
            let (mut asker, monitor) = UnixStream::pair().unwrap();
            let sender = std::thread::spawn(move || match pace {
                None => {
                    let _ = asker.write_all(&bytes);
                }
                Some(p) => {
                    for b in bytes {
                        if asker.write_all(&[b]).is_err() {
                            return;
                        }
                        std::thread::sleep(p);
                    }
                }
            });
            let t0 = Instant::now();
            let v = read_verdict(&monitor, Instant::now() + Duration::from_secs(1));
            let took = t0.elapsed();
            drop(monitor);
            sender.join().unwrap();
            (v.map(|v| v.0), took)
        };
        let relayed = frame(&Verdict(Ok("node-1.a_b".into())));
        assert_eq!(read(relayed.clone(), None).0, Ok(Ok("node-1.a_b".into())));
        let refused = Verdict(Err((failure::UNKNOWN_SESSION, "unknown session".into())));
        assert_eq!(
            read(frame(&refused), None).0,
            Ok(Err((failure::UNKNOWN_SESSION, "unknown session".into())))
        );
        let long = Verdict(Err((failure::TRY_AGAIN, "x".repeat(MAX_VERDICT))));
        let mut trailing = relayed.clone();
        trailing[3] += 1;
        trailing.push(0);
        let line = "x\nresshd[1]: Accepted publickey for root from 198.18.0.9";
        let forged = Verdict(Ok(format!("node1{line}")));
        // A refusal's text (logged by the monitor, shown to the client)
        // keeps no line break or other control character.
        let injected = Verdict(Err((failure::TRY_AGAIN, line.into())));
        assert_eq!(
            read(frame(&injected), None).0,
            Ok(Err((
                failure::TRY_AGAIN,
                "x\\x0aresshd[1]: Accepted publickey for root from 198.18.0.9".into()
            )))
        );
        for (what, bytes) in [
            ("a verdict longer than MAX_VERDICT", frame(&long)),
            ("a byte after the verdict", trailing),
            ("a node name with a line break", frame(&forged)),
            ("an empty node name", frame(&Verdict(Ok(String::new())))),
            (
                "half a verdict, then the end",
                relayed[..relayed.len() / 2].to_vec(),
            ),
            ("nothing", Vec::new()),
        ] {
            assert!(read(bytes, None).0.is_err(), "{what} was believed");
        }
        // A byte every 300 ms: each read is quick, the whole is late.
        let (v, took) = read(relayed, Some(Duration::from_millis(300)));
        assert!(v.is_err(), "a dribbled verdict was believed after {took:?}");
        assert!(took < Duration::from_millis(1500), "waited {took:?}");
    }

    /// Sends a TLS record header announcing 16 KiB, then one byte every
    /// half second (each read well within a per-read timeout) until
    /// `until`: a handshake that never ends.
    fn dribble(mut s: TcpStream, until: Instant) {
        let _ = s.write_all(&[0x16, 0x03, 0x03, 0x40, 0x00]);
        while Instant::now() < until && s.write_all(&[0]).is_ok() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A peer that dribbles its TLS handshake is cut off ASK_TIME after it
    /// connected, on both ends of a link: the owner's link process (which
    /// any network client of the fleet port reaches, and whose 4096 slots
    /// it would otherwise hold for ever) and the asking process, that
    /// whoever answers at a listed node's address would otherwise hold (and
    /// with it the client's reconnect slot and its monitor).
    #[test]
    fn a_dribbled_handshake_ends_in_time() {
        use std::net::TcpListener;
        use std::os::unix::fs::PermissionsExt;

        let dir = std::env::temp_dir().join(format!("fleet-dribble-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let me = PrivateKey::generate(ressh_proto::keys::KeyType::Ed25519).unwrap();
        let other = PrivateKey::generate(ressh_proto::keys::KeyType::Ed25519).unwrap();
        let key = dir.join("key");
        std::fs::write(&key, me.to_openssh_pem("").unwrap()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        // Whoever answers at the other node's address, without its key.
        let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
        let nodes = dir.join("nodes");
        std::fs::write(
            &nodes,
            format!(
                "me 127.0.0.1:1 {}\nother {} {}\n",
                me.public_key().to_openssh(""),
                squatter.local_addr().unwrap(),
                other.public_key().to_openssh("")
            ),
        )
        .unwrap();
        std::fs::set_permissions(&nodes, std::fs::Permissions::from_mode(0o644)).unwrap();

        let start = Instant::now();
        let stop = start + ASK_TIME + Duration::from_secs(8);
        // The owner's side, an unauthenticated client dribbling to it.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (sock, _) = l.accept().unwrap();
        let (k, n) = (key.clone(), nodes.clone());
        let owner = std::thread::spawn(move || serve_link_inner(&k, &n, None, || Ok(()), sock));
        std::thread::spawn(move || dribble(client, stop));
        // The asking side, the squatter dribbling its answer.
        std::thread::spawn(move || {
            let (s, _) = squatter.accept().unwrap();
            dribble(s, stop);
        });
        let ask = Ask {
            request: Box::new(ReconnectRequest::for_tests(7)),
            peer_addr: "198.18.0.2".into(),
            peer_port: 4000,
            leftover: vec![],
        };
        let (k, n) = (key.clone(), nodes.clone());
        let asker =
            std::thread::spawn(move || ask_fleet(&k, &n, || Ok(()), &ask).map(|(node, _)| node));

        let limit = ASK_TIME + Duration::from_secs(3);
        while !(owner.is_finished() && asker.is_finished()) && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(100));
        }
        let (owner_done, asker_done) = (owner.is_finished(), asker.is_finished());
        let owner = owner.join().unwrap();
        let asker = asker.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            owner_done && asker_done,
            "still in a dribbled handshake after {limit:?}: \
             the owner's link process {}, the asking side {}",
            if owner_done { "no" } else { "yes" },
            if asker_done { "no" } else { "yes" },
        );
        let e = owner.unwrap_err();
        assert!(e.contains("TLS handshake"), "{e}");
        let (code, why) = asker.unwrap_err();
        assert_eq!(code, failure::TRY_AGAIN, "{why}");
        assert!(why.contains("other (unreachable)"), "{why}");
    }

    /// CPU time the thread `tid` of this process has used.
    fn thread_cpu(tid: i32) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        // After the command's closing parenthesis: state is field 3, utime
        // and stime fields 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .unwrap()
            .unwrap();
        Duration::from_millis(ticks * 1000 / u64::try_from(hz).unwrap())
    }

    /// A relay whose session side does not read while the link side keeps
    /// sending (a client that floods input while its session is stalled,
    /// or that does not read while its session writes) waits in poll: it
    /// does not spin on a readable link it has no room to read.
    #[test]
    fn a_stalled_side_does_not_make_the_pump_spin() {
        use std::net::TcpListener;
        let node = || {
            let key = PrivateKey::generate(ressh_proto::keys::KeyType::Ed25519).unwrap();
            Identity {
                cert: self_signed(&key).unwrap(),
                key,
            }
        };
        let (a, b) = (node(), node());
        let ca = context(&a, vec![b.public().to_pkey().unwrap()]).unwrap();
        let cb = context(&b, vec![a.public().to_pkey().unwrap()]).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (srv, _) = l.accept().unwrap();
        let deadline = Instant::now() + ASK_TIME;
        let server = std::thread::spawn(move || {
            handshake(Ssl::new(&cb).unwrap(), srv, true, deadline).unwrap()
        });
        let mut sender = handshake(Ssl::new(&ca).unwrap(), tcp, false, deadline).unwrap();
        let link = server.join().unwrap();
        sender.get_ref().set_write_timeout(None).unwrap();

        // The session's end, never read.
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
            pump(link, OwnedFd::from(ours));
        });
        let tid = tid_rx.recv().unwrap();
        // The link's peer sends until every buffer on the way is full.
        std::thread::spawn(move || {
            let chunk = vec![0x55u8; 16 * 1024];
            while sender.write_all(&chunk).is_ok() {}
        });
        std::thread::sleep(Duration::from_secs(2));
        let before = thread_cpu(tid);
        std::thread::sleep(Duration::from_secs(3));
        let used = thread_cpu(tid) - before;
        assert!(
            used < Duration::from_millis(300),
            "the pump used {used:?} of CPU in 3 s with nothing to do"
        );
    }
}
