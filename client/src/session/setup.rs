//! Setting a session up once authenticated: the forwards, the main
//! channel and its requests, the replies to them, and going to the
//! background (-f).

use super::*;

impl Session {
    pub(super) fn start_auth(&mut self) {
        let mut agent = match &self.cfg.identity_agent {
            Some(p) if self.cfg.pubkey_authentication => match Agent::connect(p) {
                Ok(a) => Some(a),
                Err(e) => {
                    crate::debug1!("cannot reach agent at {}: {e}", p.display());
                    None
                }
            },
            _ => None,
        };
        let ids = if self.cfg.pubkey_authentication {
            identity::collect(&self.cfg, agent.as_mut())
        } else {
            Vec::new()
        };
        let mut a = Auth::new(&self.cfg, ids, agent);
        if self.untrusted {
            a.disable_interactive();
        }
        if let Err(m) = a.start(&mut self.conn) {
            self.set_quit(fatal(m));
        }
        self.auth = Some(a);
    }

    pub(super) fn on_auth_success(&mut self) {
        if let Some(a) = self.auth.take() {
            crate::verbose!(
                "Authenticated to {} ({}) using {}.",
                self.cfg.host,
                self.transport.describe(),
                a.describe_success()
            );
        }
        self.authenticated = true;
        if self.cfg.server_alive_interval > 0 {
            self.next_alive =
                Some(Instant::now() + Duration::from_secs(self.cfg.server_alive_interval));
        }
        if let Err(q) = self.setup_forwards() {
            self.set_quit(q);
            return;
        }
        if let Err(q) = self.open_main() {
            self.set_quit(q);
            return;
        }
        if self.fork_pending && !self.remote_forwards_pending() {
            self.go_background();
        }
    }

    /// Whether -f waits for the server's answers to -R requests: with
    /// ExitOnForwardFailure a refusal must still end ressh in the foreground.
    fn remote_forwards_pending(&self) -> bool {
        self.cfg.exit_on_forward_failure
            && self
                .globals
                .iter()
                .any(|g| matches!(g, Global::RemoteForward(_)))
    }

    /// -f, as ssh's fork_postauth: the parent exits 0 and the child carries
    /// on in a new session, its stdin, stdout and (unless it logs there at
    /// a debug level) stderr on /dev/null. The session's own descriptors
    /// were copied before, so a remote command's output still reaches the
    /// original stdout. ressh never starts a thread, so the child has all
    /// it needs: the event loop, the signal handlers and their wake-up
    /// socket, the netlink watcher, the listeners.
    fn go_background(&mut self) {
        self.fork_pending = false;
        crate::debug1!("forking to background");
        // SAFETY: single-threaded (above). The parent leaves with _exit,
        // which skips destructors: they would end the session the child now
        // owns (DISCONNECT, the proxy command's SIGHUP).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let e = io::Error::last_os_error();
            self.set_quit(fatal(format!("ressh: cannot go to the background: {e}")));
            return;
        }
        if pid > 0 {
            // SAFETY: see above.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: plain system calls on our own descriptors; setsid cannot
        // fail in a child, which is no process group leader.
        unsafe {
            libc::setsid();
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            if null >= 0 {
                let keep_stderr =
                    crate::log::on_stderr() && crate::log::enabled(crate::log::Level::Debug1);
                libc::dup2(null, 0);
                libc::dup2(null, 1);
                if !keep_stderr {
                    libc::dup2(null, 2);
                }
                libc::close(null);
            }
        }
    }

    /// Binds the listener of a -L (`to` Some) or -D forward.
    fn listen(
        &mut self,
        bind: Option<&str>,
        port: u16,
        to: Option<(String, u16)>,
    ) -> Result<(), Quit> {
        let addrs = forward::bind_addrs(bind, port, self.cfg.gateway_ports)
            .map_err(|e| fatal(format!("ressh: {e}")))?;
        let what = if to.is_some() {
            "Local forwarding"
        } else {
            "Dynamic forwarding (SOCKS)"
        };
        let mut bound = 0;
        let mut last_err = None;
        for a in addrs {
            match TcpListener::bind(a) {
                Ok(mut l) => {
                    let t = self.token();
                    self.poll
                        .registry()
                        .register(&mut l, t, Interest::READABLE)
                        .map_err(|e| fatal(format!("ressh: {e}")))?;
                    crate::debug1!("{what} listening on {a}.");
                    self.listeners.push((
                        t,
                        Listener {
                            sock: l,
                            port,
                            to: to.clone(),
                        },
                    ));
                    bound += 1;
                }
                Err(e) => {
                    crate::debug1!("bind {a}: {e}");
                    last_err = Some(format!(
                        "bind [{}]:{}: {}",
                        a.ip(),
                        a.port(),
                        transport::strip_os_error(&e)
                    ));
                }
            }
        }
        if bound == 0 {
            let m = format!(
                "{}\nCould not request local forwarding.",
                last_err.unwrap_or_else(|| "no address to bind".into())
            );
            if self.cfg.exit_on_forward_failure {
                return Err(fatal(m));
            }
            crate::error!("{m}");
        }
        Ok(())
    }

    pub(super) fn setup_forwards(&mut self) -> Result<(), Quit> {
        if self.untrusted
            && (!self.cfg.local_forwards.is_empty()
                || !self.cfg.remote_forwards.is_empty()
                || !self.cfg.dynamic_forwards.is_empty())
        {
            crate::error!("Port forwarding is disabled to avoid man-in-the-middle attacks.");
            return Ok(());
        }
        for spec in self.cfg.local_forwards.clone() {
            let f = forward::parse(&spec, false).map_err(|e| fatal(format!("ressh: {e}")))?;
            self.listen(f.bind.as_deref(), f.port, Some((f.host, f.host_port)))?;
        }
        for spec in self.cfg.dynamic_forwards.clone() {
            let (bind, port) =
                forward::parse_dynamic(&spec).map_err(|e| fatal(format!("ressh: {e}")))?;
            self.listen(bind.as_deref(), port, None)?;
        }
        for spec in self.cfg.remote_forwards.clone() {
            let f = forward::parse(&spec, true).map_err(|e| fatal(format!("ressh: {e}")))?;
            let req = GlobalReq::TcpipForward {
                address: forward::remote_bind(&f),
                port: f.port as u32,
            };
            self.conn
                .global_request(req, true)
                .map_err(|e| fatal(format!("ressh: {e}")))?;
            self.globals
                .push_back(Global::RemoteForward(self.rfwds.len()));
            self.rfwds.push(RemoteFwd {
                fwd: f,
                bound: None,
            });
        }
        Ok(())
    }

    pub(super) fn attach_stdio(&mut self, key: Key, stderr: bool) -> Result<(), Quit> {
        let reg = self.poll.registry();
        let input = if self.cfg.stdin_null {
            LocalFd::devnull()
        } else {
            LocalFd::stdio(0, false, reg, T_STDIN)
        }
        .map_err(|e| fatal(format!("ressh: stdin: {e}")))?;
        let out = LocalFd::stdio(1, true, reg, T_STDOUT)
            .map_err(|e| fatal(format!("ressh: stdout: {e}")))?;
        let ch = self.chans.get_mut(&key).expect("channel just made");
        ch.in_ready = true;
        ch.input = Some(std::rc::Rc::new(input));
        ch.out = Some(Sink::new(std::rc::Rc::new(out)));
        ch.tokens.extend([T_STDIN, T_STDOUT]);
        if stderr {
            let err = LocalFd::stdio(2, true, reg, T_STDERR)
                .map_err(|e| fatal(format!("ressh: stderr: {e}")))?;
            ch.err = Some(Sink::new(std::rc::Rc::new(err)));
            ch.tokens.push(T_STDERR);
        }
        for t in [T_STDIN, T_STDOUT, T_STDERR] {
            self.tokens.insert(t, key);
        }
        Ok(())
    }

    pub(super) fn open_main(&mut self) -> Result<(), Quit> {
        match self.plan.clone() {
            Plan::None => Ok(()),
            Plan::Stdio { host, port } => {
                let kind = ChannelKind::DirectTcpip {
                    host: host.clone(),
                    port: port as u32,
                    originator: "127.0.0.1".into(),
                    originator_port: 65535,
                };
                let id = self
                    .conn
                    .open_channel(kind)
                    .map_err(|e| fatal(format!("ressh: {e}")))?;
                let key = self.insert_chan(Chan::new(
                    id,
                    Kind::Stdio,
                    format!("stdio forward to {host}:{port}"),
                ));
                self.main = Some(key);
                self.attach_stdio(key, false)
            }
            Plan::Session { pty, .. } => {
                self.modes = tty::terminal_modes(0);
                if pty && tty::isatty(0) {
                    match RawGuard::new(0) {
                        Ok(g) => self.raw = Some(g),
                        Err(e) => crate::debug1!("raw mode: {e}"),
                    }
                }
                if pty {
                    if let Some(c) = self.cfg.escape_char {
                        self.escape = Some(Escape::new(c));
                    }
                }
                let id = self
                    .conn
                    .open_channel(ChannelKind::Session)
                    .map_err(|e| fatal(format!("ressh: {e}")))?;
                let key = self.insert_chan(Chan::new(id, Kind::Main, "the session".into()));
                self.main = Some(key);
                self.attach_stdio(key, true)
            }
        }
    }

    pub(super) fn on_opened(&mut self, id: u32) {
        let Some(ch) = self.live.get(&id).and_then(|k| self.chans.get_mut(k)) else {
            return;
        };
        ch.open = true;
        if let Some(v) = ch.socks.take() {
            // The first bytes on a fresh socket: they fit its buffer.
            let r = socks::reply(v, socks::Rep::Succeeded);
            let sent = ch.out.as_ref().map(|s| s.fd.write(&r));
            if !matches!(sent, Some(Ok(n)) if n == r.len()) {
                crate::debug1!("channel {id}: cannot send the SOCKS reply; closing");
                ch.close_sent = true;
                let _ = self.conn.close_channel(id);
            }
            return;
        }
        if ch.kind != Kind::Main {
            return;
        }
        let Plan::Session {
            command,
            subsystem,
            pty,
        } = self.plan.clone()
        else {
            return;
        };
        let mut reqs: Vec<(ChannelReq, Option<Req>)> = Vec::new();
        if pty {
            let term = std::env::var("TERM").unwrap_or_default();
            let fd = if tty::isatty(0) { 0 } else { 1 };
            let (cols, rows, w, h) = tty::window_size(fd).unwrap_or((80, 24, 0, 0));
            reqs.push((
                ChannelReq::PtyReq {
                    term,
                    cols,
                    rows,
                    width_px: w,
                    height_px: h,
                    modes: self.modes.clone(),
                },
                Some(Req::Pty),
            ));
        }
        let mut sent_env: Vec<String> = Vec::new();
        for pat in &self.cfg.send_env {
            for (k, v) in std::env::vars_os() {
                let k = k.to_string_lossy().into_owned();
                if ressh_compat::pattern::match_pattern(&k, pat) && !sent_env.contains(&k) {
                    crate::debug1!("Sending env {k}");
                    use std::os::unix::ffi::OsStrExt;
                    reqs.push((
                        ChannelReq::Env {
                            name: k.clone(),
                            value: v.as_bytes().to_vec(),
                        },
                        None,
                    ));
                    sent_env.push(k);
                }
            }
        }
        for (k, v) in &self.cfg.set_env {
            crate::debug1!("Setting env {k} = {v}");
            reqs.push((
                ChannelReq::Env {
                    name: k.clone(),
                    value: v.as_bytes().to_vec(),
                },
                None,
            ));
        }
        match (command, subsystem) {
            (Some(c), true) => {
                crate::debug1!("Sending subsystem: {c}");
                reqs.push((ChannelReq::Subsystem(c), Some(Req::Subsystem)));
            }
            (Some(c), false) => {
                crate::debug1!("Sending command: {c}");
                reqs.push((ChannelReq::Exec(c.into_bytes()), Some(Req::Exec)));
            }
            (None, _) => reqs.push((ChannelReq::Shell, Some(Req::Shell))),
        }
        for (r, kind) in reqs {
            if let Err(e) = self.conn.channel_request(id, r, kind.is_some()) {
                self.set_quit(fatal(format!("ressh: {e}")));
                return;
            }
            if let Some(k) = kind {
                if let Some(ch) = self.chan_mut(id) {
                    ch.replies.push_back(k);
                }
            }
        }
    }

    pub(super) fn on_reply(&mut self, id: u32, success: bool) {
        let Some(ch) = self.chan_mut(id) else {
            return;
        };
        let Some(r) = ch.replies.pop_front() else {
            return;
        };
        if success {
            return;
        }
        match r {
            Req::Pty => crate::error!("PTY allocation request failed on channel {id}"),
            Req::Shell => self.set_quit(fatal(format!("shell request failed on channel {id}"))),
            Req::Exec => self.set_quit(fatal(format!("exec request failed on channel {id}"))),
            Req::Subsystem => {
                self.set_quit(fatal(format!("subsystem request failed on channel {id}")))
            }
        }
    }

    pub(super) fn on_open_failed(&mut self, id: u32, r: u32, description: &str) {
        let why = match r {
            msg::open_failure::ADMINISTRATIVELY_PROHIBITED => "administratively prohibited",
            msg::open_failure::CONNECT_FAILED => "connect failed",
            msg::open_failure::UNKNOWN_CHANNEL_TYPE => "unknown channel type",
            msg::open_failure::RESOURCE_SHORTAGE => "resource shortage",
            _ => "unknown reason",
        };
        let text = format!(
            "channel {id}: open failed: {why}: {}",
            auth::clean(description)
        );
        let Some(key) = self.live.remove(&id) else {
            return;
        };
        match self.chans.get(&key).map(|c| c.kind) {
            Some(Kind::Main) => self.set_quit(fatal(text)),
            Some(Kind::Stdio) => self.set_quit(fatal(format!("{text}\nstdio forwarding failed"))),
            Some(_) => {
                crate::info!("{text}");
                if let Some((v, s)) = self
                    .chans
                    .get(&key)
                    .and_then(|c| Some((c.socks?, c.out.as_ref()?)))
                {
                    let rep = match r {
                        msg::open_failure::ADMINISTRATIVELY_PROHIBITED => socks::Rep::NotAllowed,
                        msg::open_failure::CONNECT_FAILED => socks::Rep::Refused,
                        _ => socks::Rep::GeneralFailure,
                    };
                    // Best effort: the client is closed next anyway.
                    let _ = s.fd.write(&socks::reply(v, rep));
                }
                self.drop_chan(key);
            }
            None => {}
        }
    }

    pub(super) fn on_global_reply(&mut self, success: bool, data: &[u8]) {
        match self.globals.pop_front() {
            Some(Global::Keepalive) | None => {}
            Some(Global::RemoteForward(i)) => {
                let f = self.rfwds[i].fwd.clone();
                if success {
                    if f.port == 0 {
                        let port = msg::RequestSuccess(data.to_vec()).bound_port().unwrap_or(0);
                        self.rfwds[i].bound = Some(port);
                        crate::info!(
                            "Allocated port {port} for remote forward to {}:{}",
                            f.host,
                            f.host_port
                        );
                    } else {
                        self.rfwds[i].bound = Some(f.port as u32);
                    }
                    crate::debug1!("remote forward success for: listen {}", f.port);
                } else {
                    let m = format!(
                        "Warning: remote port forwarding failed for listen port {}",
                        f.port
                    );
                    if self.cfg.exit_on_forward_failure {
                        self.set_quit(fatal(m));
                        return;
                    }
                    crate::error!("{m}");
                }
                if self.fork_pending && self.quit.is_none() && !self.remote_forwards_pending() {
                    self.go_background();
                }
            }
        }
    }
}
