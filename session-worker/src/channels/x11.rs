//! X11 forwarding (x11-req), as sshd does it: a display of TCP listeners
//! on port 6000 + N, N the first free number from X11DisplayOffset (on
//! loopback with X11UseLocalhost), DISPLAY set for the session's child, and
//! the client's (fake) cookie added for that display with `xauth -q -` run
//! as the user. Each X connection becomes an "x11" channel to the client,
//! which checks the cookie and connects it to the real display.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};

use mio::net::TcpListener;
use mio::{Interest, Token};
use ressh_ipc::msg::X11Policy;
use ressh_proto::msg::ChannelKind;
use ressh_proto::Connection;

use super::tcpip::{listen_on, TcpChan};
use super::{Ctx, Target};
use crate::log;

/// Display numbers tried from the offset on (sshd's MAX_DISPLAYS).
const MAX_DISPLAYS: u32 = 1000;
const X11_BASE_PORT: u32 = 6000;

pub struct X11Display {
    /// DISPLAY for the child: `localhost:N.S`, or `host:N.S`.
    pub display: String,
    /// The display name xauth records (`unix:N.S` for a localhost display).
    auth_display: String,
    proto: String,
    cookie: String,
    /// Only one connection is forwarded (x11-req's single-connection).
    single: bool,
    socks: Vec<(TcpListener, Token)>,
}

/// sshd's xauth_valid_string: what may reach xauth's command line.
fn valid(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"./:-_".contains(&b))
}

impl X11Display {
    /// Listens on the first free display (`chan`: the session channel the
    /// display belongs to).
    pub fn create(
        ctx: &mut Ctx,
        chan: u32,
        policy: &X11Policy,
        single: bool,
        proto: String,
        cookie: String,
        screen: u32,
    ) -> io::Result<X11Display> {
        if !valid(&proto) || !valid(&cookie) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "invalid X11 forwarding data",
            ));
        }
        let ips: [IpAddr; 2] = if policy.use_localhost {
            [Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
        } else {
            [Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()]
        };
        let first = policy.display_offset;
        let mut found = None;
        'displays: for n in first..first.saturating_add(MAX_DISPLAYS) {
            let Ok(port) = u16::try_from(X11_BASE_PORT + n) else {
                break;
            };
            let mut socks = Vec::new();
            for ip in ips {
                match listen_on(SocketAddr::new(ip, port)) {
                    Ok(l) => socks.push(l),
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue 'displays,
                    // No IPv6 here, say: the other address serves.
                    Err(_) => {}
                }
            }
            if !socks.is_empty() {
                found = Some((n, socks));
                break;
            }
        }
        let Some((n, listeners)) = found else {
            return Err(io::Error::other("no free X11 display"));
        };
        let (display, auth_display) = if policy.use_localhost {
            (
                format!("localhost:{n}.{screen}"),
                format!("unix:{n}.{screen}"),
            )
        } else {
            let host = nix::unistd::gethostname()?.to_string_lossy().into_owned();
            (
                format!("{host}:{n}.{screen}"),
                format!("{host}/unix:{n}.{screen}"),
            )
        };
        let mut d = X11Display {
            display,
            auth_display,
            proto,
            cookie,
            single,
            socks: Vec::new(),
        };
        for l in listeners {
            match ctx.register(l.as_raw_fd(), Interest::READABLE, Target::X11(chan)) {
                Ok(t) => d.socks.push((l, t)),
                Err(e) => {
                    d.close(ctx);
                    return Err(e);
                }
            }
        }
        Ok(d)
    }

    /// `xauth -q -` (as this process: the user) with sshd's two lines:
    /// the display's old entry removed, the client's cookie added.
    pub fn xauth(&self, xauth: &str, home: &str) -> io::Result<()> {
        let mut child = Command::new(xauth)
            .args(["-q", "-"])
            .env_clear()
            .env("HOME", home)
            .env("PATH", crate::env::USER_PATH)
            .current_dir(if std::path::Path::new(home).is_dir() {
                home
            } else {
                "/"
            })
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let lines = format!(
            "remove {d}\nadd {d} {} {}\n",
            self.proto,
            self.cookie,
            d = self.auth_display
        );
        let wrote = child
            .stdin
            .take()
            .map(|mut i| i.write_all(lines.as_bytes()));
        let status = child.wait()?;
        match wrote {
            Some(Err(e)) => Err(e),
            _ if !status.success() => Err(io::Error::other(format!("{xauth} {status}"))),
            _ => Ok(()),
        }
    }

    /// Accepts every pending X connection and opens an x11 channel for
    /// each (only the first with single-connection, then stops listening).
    pub fn accept(&mut self, conn: &mut Connection, ctx: &mut Ctx) -> Vec<TcpChan> {
        let mut out = Vec::new();
        for (sock, _) in &self.socks {
            loop {
                let (stream, peer) = match sock.accept() {
                    Ok(x) => x,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let kind = ChannelKind::X11 {
                    originator: peer.ip().to_string(),
                    originator_port: peer.port() as u32,
                };
                let Ok(id) = conn.open_channel(kind) else {
                    continue;
                };
                let desc = format!("{} port {}", peer.ip(), peer.port());
                match TcpChan::forwarded(id, ctx, OwnedFd::from(stream), "x11", desc) {
                    Ok(c) => out.push(c),
                    Err(e) => {
                        log!("cannot watch an X11 connection: {e}");
                        let _ = conn.close_channel(id);
                    }
                }
                if self.single {
                    break;
                }
            }
            if self.single && !out.is_empty() {
                break;
            }
        }
        if self.single && !out.is_empty() {
            self.close(ctx);
        }
        out
    }

    /// Stops listening.
    pub fn close(&mut self, ctx: &mut Ctx) {
        for (sock, token) in self.socks.drain(..) {
            ctx.deregister(sock.as_raw_fd(), token);
        }
    }
}
