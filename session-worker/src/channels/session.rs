//! "session" channels: pty-req, env, shell, exec, subsystem, window-change,
//! signal; the child's output, then exit-status or exit-signal, EOF, CLOSE.

use mio::Interest;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use ressh_proto::msg::ChannelReq;
use ressh_proto::wire::printable;
use ressh_proto::Connection;

use super::agent::AgentSocket;
use super::relay::{OnEof, Relay};
use super::tcpip::TcpChan;
use super::x11::X11Display;
use super::Ctx;
use crate::pty::{self, Pty, WinSize};
use crate::{child, env, log};
use ressh_compat::pattern;
use std::fs::File;

/// Most env requests accepted per session.
const MAX_ENV: usize = 256;

/// How the child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Status(i32),
    Signal(Signal, bool),
}

struct Child {
    pid: Pid,
    with_pty: bool,
    /// Forced command or subsystem: signal requests are refused (as OpenSSH).
    restricted: bool,
    exit: Option<ExitKind>,
}

pub struct SessionChan {
    id: u32,
    pty: Option<Pty>,
    term: Option<String>,
    tty: Option<String>,
    size: Option<WinSize>,
    /// The relay slot of the pty master once the child runs.
    master_slot: Option<usize>,
    env: Vec<(String, Vec<u8>)>,
    relay: Relay,
    child: Option<Child>,
    finished: bool,
    /// The forwarded X11 display (x11-req).
    x11: Option<X11Display>,
}

enum What {
    Shell,
    Exec(Vec<u8>),
    Subsystem(String),
}

/// The arguments of `internal-sftp [args]` (sshd's IS_INTERNAL_SFTP: the
/// name alone or followed by a space or tab; split on spaces as sshd's
/// strtok), or None for any other command.
fn internal_sftp_args(command: &[u8]) -> Option<Vec<String>> {
    let rest = command.strip_prefix(b"internal-sftp")?;
    if !(rest.is_empty() || rest.starts_with(b" ") || rest.starts_with(b"\t")) {
        return None;
    }
    let rest = String::from_utf8_lossy(rest);
    Some(
        rest.split(' ')
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

/// The in-process sftp server, in the channel's child (as the user, in
/// the chroot if any), logging to `log` (which resshd's log receives): its
/// exit status, 1 for bad options as sftp-server.
fn internal_sftp(args: &[String], name: &str, home: &str, client: &str, log: File) -> i32 {
    let user = ressh_sftp_server::User { name, home, client };
    match ressh_sftp_server::parse_args(args, &user) {
        Ok(opts) => ressh_sftp_server::serve(
            &opts,
            &user,
            std::io::stdin().lock(),
            std::io::stdout().lock(),
            log,
        ),
        Err(e) => {
            eprintln!("internal-sftp: {e}");
            1
        }
    }
}

/// Signal names accepted in "signal" requests (OpenSSH's set).
fn signal_by_name(name: &str) -> Option<Signal> {
    Some(match name {
        "ABRT" => Signal::SIGABRT,
        "ALRM" => Signal::SIGALRM,
        "FPE" => Signal::SIGFPE,
        "HUP" => Signal::SIGHUP,
        "ILL" => Signal::SIGILL,
        "INT" => Signal::SIGINT,
        "KILL" => Signal::SIGKILL,
        "PIPE" => Signal::SIGPIPE,
        "QUIT" => Signal::SIGQUIT,
        "SEGV" => Signal::SIGSEGV,
        "TERM" => Signal::SIGTERM,
        "USR1" => Signal::SIGUSR1,
        "USR2" => Signal::SIGUSR2,
        _ => return None,
    })
}

impl SessionChan {
    pub fn new(id: u32) -> SessionChan {
        SessionChan {
            id,
            pty: None,
            term: None,
            tty: None,
            size: None,
            master_slot: None,
            env: Vec::new(),
            relay: Relay::new(id, OnEof::Close),
            child: None,
            finished: false,
            x11: None,
        }
    }

    pub fn relay(&mut self) -> &mut Relay {
        &mut self.relay
    }

    /// The child's pid and whether it has a pty, while it runs.
    pub fn running_child(&self) -> Option<(Pid, bool)> {
        self.child
            .as_ref()
            .filter(|c| c.exit.is_none())
            .map(|c| (c.pid, c.with_pty))
    }

    /// Handles a channel request; the result is the reply (if one is wanted).
    pub fn request(&mut self, ctx: &mut Ctx, req: ChannelReq) -> bool {
        let started = self.child.is_some();
        match req {
            ChannelReq::PtyReq {
                term,
                cols,
                rows,
                width_px,
                height_px,
                modes,
            } => {
                if !ctx.info.policy.permit_pty {
                    log!("pty request refused: PermitTTY is off");
                    return false;
                }
                if started || self.pty.is_some() {
                    return false;
                }
                let size = WinSize {
                    cols,
                    rows,
                    width_px,
                    height_px,
                };
                match pty::open(size, &modes) {
                    Ok(p) => {
                        self.tty = Some(p.path.clone());
                        self.term = Some(term);
                        self.size = Some(size);
                        self.pty = Some(p);
                        true
                    }
                    Err(e) => {
                        log!("cannot allocate a pty: {e}");
                        false
                    }
                }
            }
            ChannelReq::Env { name, value } => {
                if started || self.env.len() >= MAX_ENV || name.contains('=') {
                    return false;
                }
                if !pattern::matches_any(&ctx.info.policy.accept_env, &name) {
                    return false;
                }
                self.env.retain(|(n, _)| n != &name);
                self.env.push((name, value));
                true
            }
            ChannelReq::Shell => !started && self.start(ctx, What::Shell),
            ChannelReq::Exec(cmd) => !started && self.start(ctx, What::Exec(cmd)),
            ChannelReq::Subsystem(name) => !started && self.start(ctx, What::Subsystem(name)),
            ChannelReq::WindowChange {
                cols,
                rows,
                width_px,
                height_px,
            } => {
                let size = WinSize {
                    cols,
                    rows,
                    width_px,
                    height_px,
                };
                let fd = match (&self.pty, self.master_slot) {
                    (Some(p), _) => Some(std::os::fd::AsRawFd::as_raw_fd(&p.master)),
                    (None, Some(slot)) => self.relay.raw_fd(slot),
                    _ => None,
                };
                fd.is_some_and(|fd| pty::set_winsize(fd, size).is_ok())
            }
            ChannelReq::Signal(name) => self.signal(&name),
            ChannelReq::X11Req {
                single_connection,
                auth_protocol,
                auth_cookie,
                screen,
            } => {
                !started
                    && self.x11_request(ctx, single_connection, auth_protocol, auth_cookie, screen)
            }
            ChannelReq::AuthAgentReq => !started && agent_request(ctx),
            _ => false,
        }
    }

    /// x11-req: a display, if the policy grants it and the session has
    /// none yet.
    fn x11_request(
        &mut self,
        ctx: &mut Ctx,
        single: bool,
        proto: String,
        cookie: String,
        screen: u32,
    ) -> bool {
        let Some(policy) = ctx.info.policy.x11.clone() else {
            log!("X11 forwarding request refused: disabled");
            return false;
        };
        if self.x11.is_some() {
            log!("X11 display already set");
            return false;
        }
        if !std::path::Path::new(&policy.xauth_location).exists() {
            log!(
                "X11 forwarding refused: no xauth program at {}",
                policy.xauth_location
            );
            return false;
        }
        match X11Display::create(ctx, self.id, &policy, single, proto, cookie, screen) {
            Ok(d) => {
                log!("X11 forwarding on display {}", d.display);
                self.x11 = Some(d);
                true
            }
            Err(e) => {
                log!("X11 forwarding refused: {e}");
                false
            }
        }
    }

    /// X connections to the session's display: their channels.
    pub fn x11_accept(&mut self, conn: &mut Connection, ctx: &mut Ctx) -> Vec<TcpChan> {
        match &mut self.x11 {
            Some(d) => d.accept(conn, ctx),
            None => Vec::new(),
        }
    }

    fn signal(&mut self, name: &str) -> bool {
        let Some(sig) = signal_by_name(name) else {
            log!("unsupported signal {:?}", printable(name.as_bytes()));
            return false;
        };
        let Some(c) = self.child.as_ref().filter(|c| c.exit.is_none()) else {
            return false;
        };
        if c.restricted {
            log!("refusing to send signal {name} to a forced-command or subsystem session");
            return false;
        }
        // The child leads its own session: without a pty its process group
        // gets the signal, with one the session leader (the shell).
        let r = if c.with_pty {
            kill(c.pid, sig)
        } else {
            killpg(c.pid, sig)
        };
        r.is_ok()
    }

    fn start(&mut self, ctx: &mut Ctx, what: What) -> bool {
        let info = &ctx.info;
        let policy = &info.policy;
        let mut restricted = false;
        let (requested, label): (Option<Vec<u8>>, String) = match &what {
            What::Shell => (None, "shell".to_string()),
            What::Exec(c) => (Some(c.clone()), format!("exec \"{}\"", printable(c))),
            What::Subsystem(name) => {
                let Some((_, cmd)) = policy.subsystems.iter().find(|(n, _)| n == name) else {
                    log!(
                        "subsystem request for {} failed, subsystem not found",
                        printable(name.as_bytes())
                    );
                    return false;
                };
                restricted = true;
                (
                    Some(cmd.as_bytes().to_vec()),
                    format!("subsystem \"{}\"", printable(name.as_bytes())),
                )
            }
        };
        let (command, original, label) = match &policy.force_command {
            Some(forced) => {
                restricted = true;
                let label = format!(
                    "{label} replaced by forced command \"{}\"",
                    printable(forced.as_bytes())
                );
                (Some(forced.as_bytes().to_vec()), requested, label)
            }
            None => (requested, None, label),
        };
        let shell = if info.user.shell.is_empty() {
            "/bin/sh"
        } else {
            info.user.shell.as_str()
        };
        let environment = env::build(&env::EnvInputs {
            user: &info.user,
            shell,
            client_env: &self.env,
            key_env: &policy.key_environment,
            set_env: &policy.set_env,
            pam_env: &info.pam_env,
            peer_addr: &info.peer_addr,
            peer_port: info.peer_port,
            local_addr: &info.local_addr,
            local_port: info.local_port,
            tty: self.tty.as_deref(),
            term: self.term.as_deref(),
            original_command: original.as_deref(),
            tz: std::env::var_os("TZ").map(std::os::unix::ffi::OsStringExt::into_vec),
            auth_info: info.auth_info_file.as_deref(),
            auth_sock: ctx.agent.as_ref().map(|a| a.path()),
            display: self.x11.as_ref().map(|d| d.display.as_str()),
        });
        if let (Some(d), Some(p)) = (&self.x11, &policy.x11) {
            if let Err(e) = d.xauth(&p.xauth_location, &info.user.home) {
                log!("{label}: xauth: {e}");
            }
        }
        let spec = child::Spec {
            shell,
            command: command.as_deref(),
            env: &environment,
            home: &info.user.home,
            pty_slave: self.pty.as_ref().map(|p| &p.slave),
            chrooted: info.chrooted,
        };
        // Only the configuration names internal-sftp (a Subsystem's command,
        // a forced command): a client's exec "internal-sftp" is a shell
        // command like any other, as under sshd.
        let configured = matches!(what, What::Subsystem(_)) || policy.force_command.is_some();
        let internal = command
            .as_deref()
            .filter(|_| configured)
            .and_then(internal_sftp_args);
        let spawned = match internal {
            // sshd refuses a shell or exec that ForceCommand internal-sftp
            // turned into sftp: it is not an sftp client.
            Some(_) if !matches!(what, What::Subsystem(_)) => {
                log!("{label}: refusing non-sftp session");
                child::spawn_in_process(&spec, |_log| {
                    let _ = std::io::Write::write_all(
                        &mut std::io::stdout(),
                        b"This service allows sftp connections only.\n",
                    );
                    1
                })
            }
            Some(args) => {
                let user = &info.user;
                child::spawn_in_process(&spec, |log| {
                    internal_sftp(&args, &user.name, &user.home, &info.peer_addr, log)
                })
            }
            None => child::spawn(&spec),
        };
        let spawned = match spawned {
            Ok(s) => s,
            Err(e) => {
                log!("{label}: cannot start {shell}: {e}");
                return false;
            }
        };
        match &self.tty {
            Some(tty) => log!("{label} on {tty}, pid {}", spawned.pid),
            None => log!("{label}, pid {}", spawned.pid),
        }
        let with_pty = self.pty.is_some();
        if let (Some(tty), true) = (&self.tty, with_pty) {
            // The monitor records the login (utmp, wtmp, lastlog).
            ctx.to_monitor
                .push(ressh_ipc::msg::FromSession::LoginStarted {
                    tty: tty.clone(),
                    pid: spawned.pid.as_raw(),
                });
            ctx.logins.insert(spawned.pid, tty.clone());
            // sshd's display_loginmsg and do_motd: for a login shell on a
            // pty, unless ~/.hushlogin exists.
            if command.is_none()
                && !info.login_message.is_empty()
                && !std::path::Path::new(&info.user.home)
                    .join(".hushlogin")
                    .exists()
            {
                self.relay.push_prefix(&crlf(&info.login_message));
            }
        }
        let r = match self.pty.take() {
            Some(p) => {
                // Only the child keeps the slave open, so the master reads
                // EIO once the child (and whatever inherited it) is gone.
                drop(p.slave);
                self.relay.set_on_eof(OnEof::Ignore);
                self.relay
                    .add(ctx, p.master, Interest::READABLE | Interest::WRITABLE)
                    .map(|slot| {
                        self.master_slot = Some(slot);
                        self.relay.add_out(slot, None);
                        self.relay.set_input(slot);
                    })
            }
            None => (|| {
                let (i, o, e) = (spawned.stdin, spawned.stdout, spawned.stderr);
                let (Some(i), Some(o), Some(e)) = (i, o, e) else {
                    return Err(std::io::Error::other("child without pipes"));
                };
                let si = self.relay.add(ctx, i, Interest::WRITABLE)?;
                let so = self.relay.add(ctx, o, Interest::READABLE)?;
                let se = self.relay.add(ctx, e, Interest::READABLE)?;
                self.relay.add_out(so, None);
                self.relay
                    .add_out(se, Some(ressh_proto::msg::EXTENDED_DATA_STDERR));
                self.relay.set_input(si);
                Ok(())
            })(),
        };
        // An in-process child's log lines go to resshd's log.
        let r = r.and_then(|()| match spawned.log {
            Some(l) => self
                .relay
                .add(ctx, l, Interest::READABLE)
                .map(|slot| self.relay.set_log(slot)),
            None => Ok(()),
        });
        ctx.children.insert(spawned.pid, self.id);
        self.child = Some(Child {
            pid: spawned.pid,
            with_pty,
            restricted,
            exit: None,
        });
        if let Err(e) = r {
            // Without its fds the child cannot be served: let it go.
            log!("cannot watch the child's fds: {e}");
            let _ = killpg(spawned.pid, Signal::SIGHUP);
            self.relay.close(ctx);
        }
        true
    }

    /// The child has been reaped.
    pub fn child_exited(&mut self, exit: ExitKind) {
        if let Some(c) = &mut self.child {
            c.exit = Some(exit);
        }
    }

    /// After the child exited and its output is drained: exit-status or
    /// exit-signal, EOF, CLOSE.
    pub fn poll_finish(&mut self, conn: &mut Connection) -> ressh_proto::Result<()> {
        if self.finished {
            return Ok(());
        }
        let Some(exit) = self.child.as_ref().and_then(|c| c.exit) else {
            return Ok(());
        };
        if !self.relay.outs_done() {
            return Ok(());
        }
        self.finished = true;
        let req = match exit {
            ExitKind::Status(code) => ChannelReq::ExitStatus(code as u32),
            ExitKind::Signal(sig, core_dumped) => ChannelReq::ExitSignal {
                signal: sig.as_str().trim_start_matches("SIG").to_string(),
                core_dumped,
                message: String::new(),
                language: String::new(),
            },
        };
        // The client may already be closing the channel: not an error.
        let _ = conn.channel_request(self.id, req, false);
        conn.send_eof(self.id)?;
        conn.close_channel(self.id)
    }

    /// The channel is closed: its relay, to drain what the client sent.
    pub fn into_relay(mut self, ctx: &mut Ctx) -> Relay {
        self.pty = None;
        if let Some(mut d) = self.x11.take() {
            d.close(ctx);
        }
        std::mem::replace(&mut self.relay, Relay::new(self.id, OnEof::Close))
    }

    /// The channel is gone: close every fd (a pty's hangup reaches its
    /// processes). A child still running stays in `ctx.children` to be reaped.
    pub fn close(&mut self, ctx: &mut Ctx) {
        self.relay.close(ctx);
        self.pty = None;
        if let Some(mut d) = self.x11.take() {
            d.close(ctx);
        }
    }
}

/// auth-agent-req@openssh.com: the agent socket, if the policy grants it
/// and this connection has none yet (sshd honours the first request only).
fn agent_request(ctx: &mut Ctx) -> bool {
    if !ctx.info.policy.agent_forwarding {
        log!("agent forwarding request refused: disabled");
        return false;
    }
    if ctx.agent.is_some() {
        log!("authentication forwarding requested twice");
        return false;
    }
    match AgentSocket::create(ctx) {
        Ok(a) => {
            log!("agent forwarding on {}", a.path());
            ctx.agent = Some(a);
            true
        }
        Err(e) => {
            log!("agent forwarding disabled: cannot create the listener socket: {e}");
            false
        }
    }
}

/// Text for a terminal: line ends as CR LF (what a pty's ONLCR makes of
/// what a program writes; this text is sent past the pty).
fn crlf(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 16);
    let mut prev = 0u8;
    for &b in text.as_bytes() {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn internal_sftp_commands() {
        use super::internal_sftp_args as a;
        assert_eq!(a(b"internal-sftp"), Some(vec![]));
        assert_eq!(
            a(b"internal-sftp  -l INFO -d /x"),
            Some(vec!["-l".into(), "INFO".into(), "-d".into(), "/x".into()])
        );
        assert_eq!(a(b"internal-sftp\t-R"), Some(vec!["\t-R".into()]));
        assert_eq!(a(b"internal-sftpx"), None);
        assert_eq!(a(b"/usr/lib/openssh/sftp-server"), None);
    }

    #[test]
    fn crlf() {
        assert_eq!(super::crlf("a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
    }
}
