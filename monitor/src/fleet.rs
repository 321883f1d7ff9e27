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
//!   monitor and the owner's link process each pump one direction pair
//!   between the client's socket, the link and the session.
//!
//! The link's protocol: after the TLS handshake, the receiving node sends
//! one frame (a 4-byte big-endian length, then a postcard-encoded [`Ask`])
//! and reads one [`Answer`]; after an accepted answer both ends carry the
//! connection's bytes until either side closes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
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
        let ok_name = name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok_name {
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
    let mut len = [0u8; 4];
    s.read_exact(&mut len).map_err(|e| format!("link: {e}"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(format!("link: a frame of {len} bytes"));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).map_err(|e| format!("link: {e}"))?;
    postcard::from_bytes(&body).map_err(|_| "link: undecodable frame".to_string())
}

/// The receiving node's side: asks every other node of `nodes_file`
/// whether it owns the session of `ask`. Ok: the owner accepted; the
/// returned link carries the connection from now on. Err: the verdict for
/// the client (UNKNOWN_SESSION when no node owns it, TRY_AGAIN when a node
/// could not be asked, the owner's refusal as it gave it).
pub fn ask_fleet(
    key_file: &Path,
    nodes_file: &Path,
    ask: &Ask,
) -> Result<(String, SslStream<TcpStream>), (u32, String)> {
    let fail = |e: String| (failure::TRY_AGAIN, e);
    let me = Identity::load(key_file).map_err(fail)?;
    let nodes = read_nodes(nodes_file).map_err(fail)?;
    let mine = me.public();
    let others: Vec<&Node> = nodes.iter().filter(|n| n.key != mine).collect();
    // All at once: a dead node costs its ASK_TIME once, not once per node
    // before the owner. At most one can own the token.
    let answers: Vec<Result<Asked, String>> = std::thread::scope(|scope| {
        let asks: Vec<_> = others
            .iter()
            .map(|node| scope.spawn(|| ask_node(&me, node, ask)))
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

fn ask_node(me: &Identity, node: &Node, ask: &Ask) -> Result<Asked, String> {
    let deadline = Instant::now() + ASK_TIME;
    let addr = node
        .addr
        .to_socket_addrs()
        .map_err(|e| format!("resolve: {e}"))?
        .next()
        .ok_or("no address")?;
    let tcp = TcpStream::connect_timeout(&addr, ASK_TIME).map_err(|e| format!("connect: {e}"))?;
    link_socket(&tcp);
    let ctx = context(me, pkeys(std::iter::once(node)))?;
    let ssl = Ssl::new(&ctx).map_err(|e| e.to_string())?;
    let mut tls = handshake(ssl, tcp, false, deadline)?;
    write_frame(&mut tls, ask)?;
    let Answer(verdict) = read_frame(&mut tls)?;
    Ok(verdict.map(|()| tls))
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

/// resshd's first argument when it runs as a fleet link process
/// ([`exec_link`], [`link_main`]).
pub const LINK_ARG: &str = "--fleet-link";

/// In a child of resshd for an accepted link: executes resshd afresh as a
/// link process with the link on descriptor 3 (a new address space: none
/// of the listener's host keys or state reach what talks to an
/// unauthenticated peer). Returns only on failure.
#[allow(unsafe_code)] // pre_exec (placing the link's descriptor)
pub fn exec_link(
    sock: TcpStream,
    key_file: &Path,
    nodes_file: &Path,
    broker_socket: &Path,
    privsep: &crate::monitor::Privsep,
) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return e,
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg(LINK_ARG).args(log::to_words());
    cmd.arg(key_file).arg(nodes_file).arg(broker_socket);
    match privsep {
        crate::monitor::Privsep::Root { uid, gid, chroot } => {
            cmd.arg(uid.to_string()).arg(gid.to_string()).arg(chroot)
        }
        crate::monitor::Privsep::Unprivileged { .. } => cmd.args(["-", "-", "-"]),
    };
    cmd.env_clear();
    let fd = sock.as_raw_fd();
    // SAFETY: place_fds only calls async-signal-safe functions.
    unsafe { cmd.pre_exec(move || crate::monitor::place_fds(&[fd])) };
    cmd.exec()
}

/// A link process: `args` as [`exec_link`] made them (after [`LINK_ARG`]),
/// the link on descriptor 3. Reads the key and list and links to the
/// broker as root, then confines itself (non-dumpable; with privilege
/// separation the privsep user in the empty chroot) before any TLS.
#[allow(unsafe_code)] // taking descriptor 3, placed there by exec_link
pub fn link_main(args: &[String]) -> i32 {
    let [l0, l1, l2, key, nodes, broker, uid, gid, chroot] = args else {
        eprintln!("resshd {LINK_ARG}: is run by resshd itself");
        return 2;
    };
    if !log::from_words(&[l0.clone(), l1.clone(), l2.clone()]) {
        return 2;
    }
    let privsep = match (uid.parse::<u32>(), gid.parse::<u32>()) {
        (Ok(u), Ok(g)) => Some((u, g, std::path::PathBuf::from(chroot))),
        _ => None,
    };
    // SAFETY: resshd placed the accepted link there (exec_link); nothing
    // else in this fresh process owns it.
    let sock = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(3) };
    let Ok(from) = sock.peer_addr() else {
        return 255;
    };
    let confine = || -> Result<(), String> {
        ressh_ipc::harden::non_dumpable()?;
        if let Some((uid, gid, chroot)) = &privsep {
            nix::unistd::chroot(chroot).map_err(|e| format!("chroot {}: {e}", chroot.display()))?;
            nix::unistd::chdir("/").map_err(|e| format!("chdir: {e}"))?;
            ressh_ipc::harden::become_user(*uid, *gid, &[])?;
        }
        Ok(())
    };
    serve_link(
        Path::new(key),
        Path::new(nodes),
        Path::new(broker),
        confine,
        sock,
        from,
    )
}

/// The owning node's side of a link (a child of resshd for each accepted
/// link connection): the TLS handshake as server, believing only listed
/// nodes; the question; the local broker's route, exactly as a local
/// reconnect's; the answer; then the connection's bytes between the link
/// and the session (through a socketpair whose other end the session got).
///
/// It reads the key and the node list and links to the broker as root,
/// then `confine`s itself ([`link_main`]) before its first byte of TLS:
/// what an unauthenticated peer talks to holds no privilege.
fn serve_link(
    key_file: &Path,
    nodes_file: &Path,
    broker_socket: &Path,
    confine: impl FnOnce() -> Result<(), String>,
    sock: TcpStream,
    from: SocketAddr,
) -> i32 {
    match serve_link_inner(key_file, nodes_file, broker_socket, confine, sock) {
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
    broker_socket: &Path,
    confine: impl FnOnce() -> Result<(), String>,
    sock: TcpStream,
) -> Result<(), String> {
    let deadline = Instant::now() + ASK_TIME;
    let me = Identity::load(key_file)?;
    let nodes = read_nodes(nodes_file)?;
    let mine = me.public();
    let ctx = context(&me, pkeys(nodes.iter().filter(|n| n.key != mine)))?;
    drop(me);
    let broker = crate::monitor::connect_broker(broker_socket);
    confine()?;
    link_socket(&sock);
    let ssl = Ssl::new(&ctx).map_err(|e| e.to_string())?;
    let mut tls = handshake(ssl, sock, true, deadline).map_err(|e| format!("refused: {e}"))?;
    let ask: Ask = read_frame(&mut tls)?;
    let (peer_addr, peer_port) = (ask.peer_addr.clone(), ask.peer_port);
    if peer_addr.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("a bad client address {peer_addr:?}"));
    }
    let verdict = route_here(broker, ask);
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
fn route_here(broker: Option<ressh_ipc::Endpoint>, ask: Ask) -> Result<OwnedFd, (u32, String)> {
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
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|e| again(e.to_string()))?;
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
    /// it would otherwise hold for ever) and the asking monitor, root, that
    /// whoever answers at a listed node's address would otherwise hold (and
    /// with it the client's reconnect slot).
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
        let (k, n, d) = (key.clone(), nodes.clone(), dir.clone());
        let owner = std::thread::spawn(move || {
            serve_link_inner(&k, &n, &d.join("no-broker"), || Ok(()), sock)
        });
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
        let asker = std::thread::spawn(move || ask_fleet(&k, &n, &ask).map(|(node, _)| node));

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
