//! The channels: the session (shell, exec, subsystem) or -W stdio channel
//! with its stdin/stdout/stderr and the terminal, and the data path of
//! every channel, forwards included: received data written out (and only
//! then acknowledged with `consume`), local input read while the window
//! allows, the ~ escapes, and channels dropped once closed and drained.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::Instant;

use mio::{Registry, Token};
use ressh_proto::msg::{self, ChannelKind, ChannelReq};
use ressh_proto::Connection;

use super::{fatal, Plan, Quit, Session, OUT_HIGH, T_STDERR, T_STDIN, T_STDOUT};
use crate::auth;
use crate::escape::{self, Escape};
use crate::fdio::{LocalFd, Mode};
use crate::socks;
use crate::tty::{self, RawGuard};

use super::x11::{Gate, X11Gate};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Main,
    Stdio,
    /// A -L or -D connection (listener index).
    Local(usize),
    /// A -R connection (remote forward index).
    Remote(usize),
    /// A connection of the server to the forwarded agent.
    Agent,
    /// An X connection on the server, to the local display.
    X11,
    /// The session of a mux client (its control connection's token).
    Mux(Token),
}

/// What a token stands for in its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Input,
    Output,
    Errors,
    /// A socket: input and output.
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Req {
    Pty,
    Shell,
    Exec,
    Subsystem,
}

/// A local sink: bytes received on the channel waiting to be written.
pub(super) struct Sink {
    fd: Rc<LocalFd>,
    ready: bool,
    buf: Vec<u8>,
    off: usize,
    dead: bool,
}

impl Sink {
    fn new(fd: Rc<LocalFd>) -> Sink {
        Sink {
            ready: true,
            fd,
            buf: Vec::new(),
            off: 0,
            dead: false,
        }
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.off
    }
}

pub(super) struct Chan {
    /// The engine's channel id (reused by the engine once closed).
    id: u32,
    kind: Kind,
    open: bool,
    closed: bool,
    /// Local input (stdin, or the socket).
    input: Option<Rc<LocalFd>>,
    in_ready: bool,
    in_eof: bool,
    /// Bytes read but not yet taken by the channel window.
    unsent: Vec<u8>,
    out: Option<Sink>,
    err: Option<Sink>,
    /// Our tokens, for deregistration.
    tokens: Vec<(Token, Role)>,
    /// A mux session's exit status.
    exit: Option<u32>,
    /// A mux session with a pty: its window follows its terminal's.
    pty: bool,
    /// A mux session's escape character (with a pty, as ssh's master).
    escape: Option<Escape>,
    sent_eof: bool,
    recv_eof: bool,
    out_shut: bool,
    close_sent: bool,
    replies: VecDeque<Req>,
    desc: String,
    /// A -D connection owed its SOCKS reply: sent when the server answers
    /// the channel open.
    socks: Option<socks::Version>,
    /// An X connection whose first packet (and cookie) is not checked yet.
    x11_gate: Option<X11Gate>,
}

impl Chan {
    fn new(id: u32, kind: Kind, desc: String) -> Chan {
        Chan {
            id,
            kind,
            open: false,
            closed: false,
            input: None,
            in_ready: false,
            in_eof: false,
            unsent: Vec::new(),
            out: None,
            err: None,
            tokens: Vec::new(),
            exit: None,
            pty: false,
            escape: None,
            sent_eof: false,
            recv_eof: false,
            out_shut: false,
            close_sent: false,
            replies: VecDeque::new(),
            desc,
            socks: None,
            x11_gate: None,
        }
    }

    /// Holds the channel's data until its X connection setup is checked.
    pub(super) fn set_x11_gate(&mut self, gate: X11Gate) {
        self.x11_gate = Some(gate);
    }

    /// A forwarded connection on socket `sock` (registered under `token`):
    /// its input and output. `open`: already confirmed (-R); a -L or -D
    /// connection waits for the server and may be read at once.
    pub(super) fn socket(
        id: u32,
        kind: Kind,
        desc: String,
        sock: LocalFd,
        token: Token,
        open: bool,
    ) -> Chan {
        let mut ch = Chan::new(id, kind, desc);
        let sock = Rc::new(sock);
        ch.open = open;
        ch.in_ready = !open;
        ch.input = Some(sock.clone());
        ch.out = Some(Sink::new(sock));
        ch.tokens.push((token, Role::Both));
        ch
    }

    /// The session (or -W stdio forward) of a mux client on the
    /// descriptors it passed (stdin, stdout and, for a session, stderr),
    /// registered under `tokens`.
    pub(super) fn mux(
        id: u32,
        client: Token,
        fds: Vec<std::os::fd::OwnedFd>,
        tokens: &[Token],
        reg: &Registry,
    ) -> io::Result<Chan> {
        let mut ch = Chan::new(id, Kind::Mux(client), "a mux client's session".into());
        let roles = [Role::Input, Role::Output, Role::Errors];
        for ((fd, &t), role) in fds.into_iter().zip(tokens).zip(roles) {
            let fd = Rc::new(LocalFd::adopt(fd, role != Role::Input, reg, t)?);
            match role {
                Role::Input => {
                    ch.input = Some(fd);
                    ch.in_ready = true;
                }
                Role::Output => ch.out = Some(Sink::new(fd)),
                _ => ch.err = Some(Sink::new(fd)),
            }
            ch.tokens.push((t, role));
        }
        Ok(ch)
    }

    /// A -D connection owed its SOCKS reply, with the bytes it sent after
    /// its request.
    pub(super) fn owe_socks_reply(&mut self, v: socks::Version, first: Vec<u8>) {
        self.socks = Some(v);
        self.unsent = first;
    }

    fn drained(&self) -> bool {
        self.out.as_ref().is_none_or(|s| s.pending() == 0 || s.dead)
            && self.err.as_ref().is_none_or(|s| s.pending() == 0 || s.dead)
    }

    fn is_forward(&self) -> bool {
        matches!(
            self.kind,
            Kind::Local(_) | Kind::Remote(_) | Kind::Agent | Kind::X11
        )
    }

    /// Whether its input can be read (or its EOF sent) now.
    fn can_send(&self, conn: &Connection) -> bool {
        self.open
            && !self.closed
            && !self.sent_eof
            && !self.close_sent
            && (self.in_ready || self.in_eof || !self.unsent.is_empty())
            && (self.in_eof || conn.send_window(self.id) > 0)
    }
}

/// Our key of a channel.
type Key = u64;

/// How the main channel ended.
pub(super) struct MainEnd {
    pub exit_status: Option<i32>,
    pub exit_signal: Option<String>,
    /// A -W channel: no exit status to wait for.
    pub stdio: bool,
}

/// Every channel, and the local terminal of the main one.
#[derive(Default)]
pub(super) struct Channels {
    /// Channels by our own key: a closed channel still writing out its
    /// last data keeps its key while the engine reuses its id.
    by_key: BTreeMap<Key, Chan>,
    /// Live engine channel ids to keys.
    live: HashMap<u32, Key>,
    next_key: Key,
    tokens: HashMap<Token, (Key, Role)>,
    /// The session or stdio channel: kept until exit for its status.
    main: Option<Key>,
    exit_status: Option<i32>,
    exit_signal: Option<String>,
    escape: Option<Escape>,
    raw: Option<RawGuard>,
    /// The local terminal's modes, taken before raw mode, for pty-req.
    modes: Vec<u8>,
}

impl Channels {
    /// Adds `ch`, its tokens leading to it.
    pub(super) fn insert(&mut self, ch: Chan) -> Key {
        let key = self.next_key;
        self.next_key += 1;
        for (t, role) in &ch.tokens {
            self.tokens.insert(*t, (key, *role));
        }
        self.live.insert(ch.id, key);
        self.by_key.insert(key, ch);
        key
    }

    /// The live channel with engine id `id`.
    fn get_mut(&mut self, id: u32) -> Option<&mut Chan> {
        let key = self.live.get(&id)?;
        self.by_key.get_mut(key)
    }

    fn main_chan(&self) -> Option<&Chan> {
        self.main.and_then(|k| self.by_key.get(&k))
    }

    /// The engine id of the main channel while requests may go to it.
    fn main_open_id(&self) -> Option<u32> {
        self.main_chan()
            .filter(|c| c.open && !c.closed && !c.close_sent)
            .map(|c| c.id)
    }

    /// Whether the terminal is in raw mode (status lines need \r\n).
    pub(super) fn raw(&self) -> bool {
        self.raw.is_some()
    }

    pub(super) fn mark(&mut self, t: Token, readable: bool, writable: bool) {
        let Some(&(key, role)) = self.tokens.get(&t) else {
            return;
        };
        let Some(ch) = self.by_key.get_mut(&key) else {
            return;
        };
        if matches!(role, Role::Input | Role::Both) {
            ch.in_ready |= readable;
        }
        let sink = match role {
            Role::Errors => ch.err.as_mut(),
            Role::Output | Role::Both => ch.out.as_mut(),
            Role::Input => None,
        };
        if let Some(s) = sink {
            s.ready |= writable;
        }
    }

    /// Whether some channel's input can make progress without waiting.
    pub(super) fn input_pending(&self, conn: &Connection) -> bool {
        self.by_key.values().any(|c| c.can_send(conn))
    }

    pub(super) fn on_eof(&mut self, id: u32) {
        if let Some(c) = self.get_mut(id) {
            c.recv_eof = true;
        }
    }

    pub(super) fn on_closed(&mut self, id: u32) {
        if let Some(c) = self.get_mut(id) {
            c.closed = true;
            c.close_sent = true;
        }
        // The engine may hand this id to a new channel now.
        self.live.remove(&id);
    }

    /// The main channel's end, once it is closed and its output written.
    pub(super) fn main_done(&self) -> Option<MainEnd> {
        let ch = self.main_chan()?;
        if !ch.closed || !ch.drained() {
            return None;
        }
        Some(MainEnd {
            exit_status: self.exit_status,
            exit_signal: self.exit_signal.clone(),
            stdio: ch.kind == Kind::Stdio,
        })
    }

    pub(super) fn main_closed(&self) -> bool {
        self.main_chan().is_some_and(|c| c.closed)
    }

    /// Whether channels other than the main one remain.
    pub(super) fn others_open(&self) -> bool {
        self.by_key.keys().any(|&k| Some(k) != self.main)
    }

    /// Writes out what is still waiting, blocking, until `deadline`.
    pub(super) fn write_out_blocking(&mut self, deadline: Instant) {
        for ch in self.by_key.values_mut() {
            for s in [ch.out.as_mut(), ch.err.as_mut()].into_iter().flatten() {
                while !s.dead && s.pending() > 0 && Instant::now() < deadline {
                    match s.fd.write(&s.buf[s.off..]) {
                        Ok(n) => s.off += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.fd.wait_writable(100),
                        Err(_) => s.dead = true,
                    }
                }
            }
        }
    }

    fn drop_chan(&mut self, key: Key, reg: &Registry) {
        let Some(mut ch) = self.by_key.remove(&key) else {
            return;
        };
        if self.live.get(&ch.id) == Some(&key) {
            self.live.remove(&ch.id);
        }
        for (t, _) in &ch.tokens {
            self.tokens.remove(t);
        }
        let mut fds: Vec<Rc<LocalFd>> = Vec::new();
        fds.extend(ch.input.take());
        fds.extend(ch.out.take().map(|s| s.fd));
        fds.extend(ch.err.take().map(|s| s.fd));
        for f in fds {
            if let Ok(mut f) = Rc::try_unwrap(f) {
                f.deregister(reg);
            }
        }
    }

    pub(super) fn drop_all(&mut self, reg: &Registry) {
        let keys: Vec<Key> = self.by_key.keys().copied().collect();
        for key in keys {
            self.drop_chan(key, reg);
        }
    }

    /// Drops channels that are closed and drained, but the main one;
    /// returns the mux sessions among them: (client, session id, exit
    /// status).
    fn reap(&mut self, reg: &Registry) -> Vec<(Token, u32, Option<u32>)> {
        let done: Vec<Key> = self
            .by_key
            .iter()
            .filter(|(k, c)| c.closed && c.drained() && Some(**k) != self.main)
            .map(|(k, _)| *k)
            .collect();
        let mut ended = Vec::new();
        for key in done {
            if let Some(c) = self.by_key.get(&key) {
                if let Kind::Mux(t) = c.kind {
                    ended.push((t, c.id, c.exit));
                }
            }
            self.drop_chan(key, reg);
        }
        ended
    }

    /// The mux session of client `client`, if any: its engine id.
    pub(super) fn mux_session(&self, client: Token) -> Option<u32> {
        self.by_key
            .values()
            .find(|c| c.kind == Kind::Mux(client) && !c.closed)
            .map(|c| c.id)
    }

    /// The descriptor a mux session reads (its client's stdin).
    pub(super) fn mux_input_fd(&self, id: u32) -> Option<std::os::fd::RawFd> {
        let c = self.live.get(&id).and_then(|k| self.by_key.get(k))?;
        c.input.as_ref().map(|f| f.raw())
    }

    /// Marks mux session `id` as having a pty, with escape character
    /// `escape` (None: none).
    pub(super) fn set_mux_pty(&mut self, id: u32, escape: Option<u8>) {
        if let Some(c) = self.get_mut(id) {
            c.pty = true;
            c.escape = escape.map(Escape::new);
        }
    }

    /// The open mux sessions with a pty: their ids and terminals.
    fn mux_ptys(&self) -> Vec<(u32, std::os::fd::RawFd)> {
        self.by_key
            .values()
            .filter(|c| c.pty && c.open && !c.closed && !c.close_sent)
            .filter_map(|c| Some((c.id, c.input.as_ref()?.raw())))
            .collect()
    }

    /// Whether any mux session remains.
    pub(super) fn mux_sessions(&self) -> bool {
        self.by_key.values().any(|c| matches!(c.kind, Kind::Mux(_)))
    }

    pub(super) fn restore_terminal(&mut self) {
        self.raw = None;
    }

    /// The list of ~#.
    fn list(&self) -> String {
        let mut s = String::from("The following connections are open:\n");
        for ch in self.by_key.values() {
            let state = if ch.closed { " (closing)" } else { "" };
            s.push_str(&format!("  #{} {}{state}\n", ch.id, ch.desc));
        }
        s
    }

    /// The main channel on stdin/stdout (and stderr): a copy of each,
    /// registered under its fixed token.
    fn attach_stdio(
        &mut self,
        mut ch: Chan,
        stdin_null: bool,
        stderr: bool,
        reg: &Registry,
    ) -> Result<(), Quit> {
        let input = if stdin_null {
            LocalFd::devnull()
        } else {
            LocalFd::stdio(io::stdin().as_fd(), false, reg, T_STDIN)
        }
        .map_err(|e| fatal(format!("ressh: stdin: {e}")))?;
        let out = LocalFd::stdio(io::stdout().as_fd(), true, reg, T_STDOUT)
            .map_err(|e| fatal(format!("ressh: stdout: {e}")))?;
        ch.in_ready = true;
        ch.input = Some(Rc::new(input));
        ch.out = Some(Sink::new(Rc::new(out)));
        ch.tokens
            .extend([(T_STDIN, Role::Input), (T_STDOUT, Role::Output)]);
        if stderr {
            let err = LocalFd::stdio(io::stderr().as_fd(), true, reg, T_STDERR)
                .map_err(|e| fatal(format!("ressh: stderr: {e}")))?;
            ch.err = Some(Sink::new(Rc::new(err)));
            ch.tokens.push((T_STDERR, Role::Errors));
        }
        self.main = Some(self.insert(ch));
        Ok(())
    }
}

/// A message of ours to a mux session's stderr (best effort: it is not
/// channel data, so it does not go through the sink's accounting).
fn note(ch: &Chan, msg: &str) {
    if let Some(s) = ch.err.as_ref() {
        let _ = s.fd.write(msg.as_bytes());
    }
}

impl Session {
    pub(super) fn on_data(&mut self, id: u32, ext: bool, data: Vec<u8>) {
        let Some(ch) = self.chans.get_mut(id) else {
            self.discard(id, data.len());
            return;
        };
        let data = match ch.x11_gate.as_mut().filter(|_| !ext) {
            None => data,
            Some(g) => match g.feed(&data) {
                Gate::Pending => return,
                Gate::Pass(out) => {
                    ch.x11_gate = None;
                    out
                }
                Gate::Reject => {
                    let held = g.held();
                    ch.x11_gate = None;
                    crate::error!("X11 connection rejected because of wrong authentication.");
                    self.discard(id, held);
                    self.close_chan(id);
                    return;
                }
            },
        };
        let Some(ch) = self.chans.get_mut(id) else {
            return;
        };
        let sink = if ext {
            ch.err.as_mut()
        } else {
            ch.out.as_mut()
        };
        match sink {
            Some(s) if !s.dead => {
                if s.pending() == 0 {
                    // Nothing waiting: keep the engine's buffer, no copy,
                    // and give it ours for the next data.
                    let old = std::mem::replace(&mut s.buf, data);
                    s.off = 0;
                    self.conn.reuse_buffer(old);
                } else {
                    s.buf.extend_from_slice(&data);
                    self.conn.reuse_buffer(data);
                }
            }
            _ => self.discard(id, data.len()),
        }
    }

    /// Data with nowhere to go: acknowledged at once.
    pub(super) fn discard(&mut self, id: u32, n: usize) {
        let r = self.conn.consume(id, n);
        self.engine("consume", r);
    }

    /// Closes channel `id` from our side.
    pub(super) fn close_chan(&mut self, id: u32) {
        if let Some(ch) = self.chans.get_mut(id) {
            ch.close_sent = true;
        }
        let r = self.conn.close_channel(id);
        self.engine("close_channel", r);
    }

    pub(super) fn flush_outputs(&mut self) {
        let keys: Vec<Key> = self.chans.by_key.keys().copied().collect();
        for key in keys {
            self.flush_chan(key);
        }
    }

    fn flush_chan(&mut self, key: Key) {
        let Some(ch) = self.chans.by_key.get_mut(&key) else {
            return;
        };
        let id = ch.id;
        let mut consumed = 0;
        let mut failed = false;
        for s in [ch.out.as_mut(), ch.err.as_mut()].into_iter().flatten() {
            while s.ready && !s.dead && s.pending() > 0 {
                match s.fd.write(&s.buf[s.off..]) {
                    Ok(n) => {
                        s.off += n;
                        consumed += n;
                        if s.fd.mode == Mode::Poll && n == 0 {
                            s.ready = false;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.ready = false,
                    Err(e) => {
                        crate::debug1!("channel {id}: write failed: {e}");
                        consumed += s.pending();
                        s.dead = true;
                        s.buf.clear();
                        s.off = 0;
                        failed = true;
                    }
                }
            }
            if s.pending() == 0 && s.off > 0 {
                s.buf.clear();
                s.off = 0;
            } else if s.off > (1 << 20) {
                s.buf.drain(..s.off);
                s.off = 0;
            }
        }
        let forward = ch.is_forward();
        if ch.recv_eof && !ch.out_shut && ch.drained() {
            ch.out_shut = true;
            if forward {
                if let Some(s) = &ch.out {
                    s.fd.shutdown_write();
                }
            }
        }
        // A forward closes when both directions are done or its socket
        // fails; the session closes when its stdout is gone (a reader such
        // as `head` exited), so the remote command does not run on for
        // nobody.
        let stdout_gone = !forward && ch.out.as_ref().is_some_and(|s| s.dead);
        let want_close = !ch.close_sent
            && ch.open
            && (stdout_gone || (forward && (failed || (ch.sent_eof && ch.out_shut))));
        if consumed > 0 && !ch.closed {
            let r = self.conn.consume(id, consumed);
            self.engine("consume", r);
        }
        if want_close {
            self.close_chan(id);
        }
    }

    pub(super) fn pump_inputs(&mut self, buf: &mut [u8]) {
        let keys: Vec<Key> = self.chans.by_key.keys().copied().collect();
        for key in keys {
            if self.quit.is_some() {
                return;
            }
            self.pump_chan(key, buf);
        }
    }

    fn pump_chan(&mut self, key: Key, buf: &mut [u8]) {
        loop {
            let Some(ch) = self.chans.by_key.get_mut(&key) else {
                return;
            };
            let id = ch.id;
            if !ch.open || ch.closed || ch.sent_eof || ch.close_sent {
                return;
            }
            if !ch.unsent.is_empty() {
                self.send_unsent(key);
                if self
                    .chans
                    .by_key
                    .get(&key)
                    .is_none_or(|c| !c.unsent.is_empty())
                {
                    return;
                }
                continue;
            }
            if ch.in_eof {
                ch.sent_eof = true;
                let r = self.conn.send_eof(id);
                self.engine("send_eof", r);
                return;
            }
            let window = self.conn.send_window(id);
            if !ch.in_ready || window == 0 || self.conn.output().len() >= OUT_HIGH {
                return;
            }
            let Some(input) = ch.input.clone() else {
                return;
            };
            let want = window.min(buf.len());
            match input.read(&mut buf[..want]) {
                Ok(0) => {
                    ch.in_eof = true;
                    ch.in_ready = false;
                    crate::debug2!("channel {id}: local input at EOF");
                }
                Ok(n) => {
                    if input.mode == Mode::Tty && !input.readable_now() {
                        ch.in_ready = false;
                    }
                    if let Some(esc) = ch.escape.as_mut() {
                        // A mux session's escapes: ~. ends that session.
                        let outs = esc.feed(&buf[..n]);
                        let e = esc.char();
                        for o in outs {
                            match o {
                                escape::Out::Data(d) => ch.unsent.extend_from_slice(&d),
                                escape::Out::Cmd(escape::Cmd::Disconnect) => {
                                    note(ch, &format!("{}.\r\n", e as char));
                                    let id = ch.id;
                                    self.send_unsent(key);
                                    self.close_chan(id);
                                    return;
                                }
                                escape::Out::Cmd(escape::Cmd::Help) => {
                                    let h = format!(
                                        "Supported escape sequences:\r\n {0}.   - terminate \
                                         session\r\n {0}{0}   - send the escape character\r\n",
                                        e as char
                                    );
                                    note(ch, &h);
                                }
                                escape::Out::Cmd(_) => {
                                    note(ch, "that escape is not available in a shared session\r\n")
                                }
                            }
                        }
                        continue;
                    }
                    let is_main = ch.kind == Kind::Main;
                    match self.chans.escape.as_mut() {
                        Some(esc) if is_main => {
                            for o in esc.feed(&buf[..n]) {
                                match o {
                                    escape::Out::Data(d) => {
                                        if let Some(ch) = self.chans.by_key.get_mut(&key) {
                                            ch.unsent.extend_from_slice(&d);
                                        }
                                    }
                                    escape::Out::Cmd(c) => {
                                        // Send what came before the escape first.
                                        self.send_unsent(key);
                                        self.escape_cmd(c);
                                        if self.quit.is_some() {
                                            return;
                                        }
                                    }
                                }
                            }
                        }
                        _ => ch.unsent.extend_from_slice(&buf[..n]),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ch.in_ready = false;
                    return;
                }
                Err(e) => {
                    crate::debug1!("channel {id}: read failed: {e}");
                    ch.in_eof = true;
                    if ch.is_forward() {
                        self.close_chan(id);
                        return;
                    }
                }
            }
        }
    }

    /// Gives the channel what its window takes of the bytes read.
    fn send_unsent(&mut self, key: Key) {
        let Some(ch) = self.chans.by_key.get_mut(&key) else {
            return;
        };
        if ch.unsent.is_empty() {
            return;
        }
        let r = self.conn.send_data(ch.id, &ch.unsent);
        if let Some(n) = self.engine("send_data", r) {
            if let Some(ch) = self.chans.by_key.get_mut(&key) {
                ch.unsent.drain(..n);
            }
        }
    }

    fn escape_cmd(&mut self, c: escape::Cmd) {
        let esc = self.chans.escape.as_ref().map(|e| e.char()).unwrap_or(b'~');
        let e = if esc < 0x20 {
            format!("^{}", (esc + b'@') as char)
        } else {
            (esc as char).to_string()
        };
        match c {
            escape::Cmd::Disconnect => {
                crate::log::raw_text(&format!("{e}.\n"));
                self.set_quit(Quit {
                    code: 255,
                    msg: Some(format!("Connection to {} closed.", self.cfg.host)),
                });
            }
            escape::Cmd::Suspend => {
                crate::log::raw_text(&format!("{e}^Z [suspend ressh]\n"));
                if let Some(g) = &self.chans.raw {
                    g.suspend();
                }
                crate::sig::stop_self();
                if let Some(g) = &self.chans.raw {
                    g.resume();
                }
                self.send_window_change();
            }
            escape::Cmd::ListConnections => crate::log::raw_text(&self.chans.list()),
            escape::Cmd::Help => {
                let h = self.chans.escape.as_ref().map(|x| x.help());
                crate::log::raw_text(&h.unwrap_or_default());
            }
            escape::Cmd::Rekey => {
                crate::log::raw_text(&format!("{e}R\n"));
                // With resilience ~R reconnects (make-before-break); else,
                // as in ssh, it rekeys.
                if self.resilient() {
                    self.begin_resume("~R", None);
                } else {
                    let r = self.conn.rekey();
                    self.engine("rekey", r);
                }
            }
            escape::Cmd::Break => {
                if let Some(id) = self.chans.main_open_id() {
                    let data = 1000u32.to_be_bytes().to_vec();
                    let req = ChannelReq::Other {
                        name: "break".into(),
                        data,
                    };
                    let r = self.conn.channel_request(id, req, false);
                    self.engine("a break request", r);
                }
            }
            escape::Cmd::MoreVerbose | escape::Cmd::LessVerbose => {
                use crate::log::{level, set_level, Level};
                let l = level() as u8;
                let n = if c == escape::Cmd::MoreVerbose {
                    (l + 1).min(Level::Debug3 as u8)
                } else {
                    l.saturating_sub(1).max(Level::Error as u8)
                };
                let lv = [
                    Level::Quiet,
                    Level::Fatal,
                    Level::Error,
                    Level::Info,
                    Level::Verbose,
                    Level::Debug1,
                    Level::Debug2,
                    Level::Debug3,
                ][n as usize];
                set_level(lv);
                crate::log::raw_text(&format!("{e}V [LogLevel {lv:?}]\n"));
            }
            escape::Cmd::Unsupported(b) => {
                crate::log::raw_text(&format!("{e}{} is not supported by ressh\n", b as char));
            }
        }
    }

    /// Drops channels that are closed and drained; a mux client whose
    /// session ended gets its exit message (once its descriptors are
    /// closed, so that a reader of its stdout sees the end).
    pub(super) fn reap_channels(&mut self) {
        for (client, sid, exit) in self.chans.reap(self.poll.registry()) {
            self.mux_session_ended(client, sid, exit);
        }
    }

    /// SIGWINCH: the window size of every session with a pty, ours and
    /// the mux clients' (whose ssh relays the signal to the master).
    pub(super) fn send_window_change(&mut self) {
        let mut ptys = self.chans.mux_ptys();
        if matches!(self.plan, Plan::Session { pty: true, .. }) {
            if let Some(id) = self.chans.main_open_id() {
                ptys.push((id, if tty::isatty(0) { 0 } else { 1 }));
            }
        }
        for (id, fd) in ptys {
            self.window_change(id, fd);
        }
    }

    fn window_change(&mut self, id: u32, fd: std::os::fd::RawFd) {
        if let Some((cols, rows, w, h)) = tty::window_size(fd) {
            let req = ChannelReq::WindowChange {
                cols,
                rows,
                width_px: w,
                height_px: h,
            };
            let r = self.conn.channel_request(id, req, false);
            self.engine("a window-change request", r);
        }
    }

    /// Opens the channel of the plan (none for -N).
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
                let ch = Chan::new(id, Kind::Stdio, format!("stdio forward to {host}:{port}"));
                let null = self.cfg.stdin_null;
                self.chans
                    .attach_stdio(ch, null, false, self.poll.registry())
            }
            Plan::Session { pty, .. } => {
                self.chans.modes = tty::terminal_modes(0);
                if pty && tty::isatty(0) {
                    match RawGuard::new(0) {
                        Ok(g) => self.chans.raw = Some(g),
                        Err(e) => crate::debug1!("raw mode: {e}"),
                    }
                }
                if pty {
                    if let Some(c) = self.cfg.escape_char {
                        self.chans.escape = Some(Escape::new(c));
                    }
                }
                let id = self
                    .conn
                    .open_channel(ChannelKind::Session)
                    .map_err(|e| fatal(format!("ressh: {e}")))?;
                let ch = Chan::new(id, Kind::Main, "the session".into());
                let null = self.cfg.stdin_null;
                self.chans
                    .attach_stdio(ch, null, true, self.poll.registry())
            }
        }
    }

    pub(super) fn on_opened(&mut self, id: u32) {
        let Some(ch) = self.chans.get_mut(id) else {
            return;
        };
        if let Kind::Mux(client) = ch.kind {
            ch.open = true;
            self.mux_session_opened(client, id);
            return;
        }
        ch.open = true;
        if let Some(v) = ch.socks.take() {
            // The first bytes on a fresh socket: they fit its buffer.
            let r = socks::reply(v, socks::Rep::Succeeded);
            let sent = ch.out.as_ref().map(|s| s.fd.write(&r));
            if !matches!(sent, Some(Ok(n)) if n == r.len()) {
                crate::debug1!("channel {id}: cannot send the SOCKS reply; closing");
                self.close_chan(id);
            }
            return;
        }
        if ch.kind == Kind::Main {
            self.send_main_requests(id);
        }
    }

    /// The requests of the session channel: pty, environment, and the
    /// shell, command or subsystem.
    fn send_main_requests(&mut self, id: u32) {
        let Plan::Session {
            command,
            subsystem,
            pty,
        } = self.plan.clone()
        else {
            return;
        };
        // X11 and agent forwarding, asked for with the main session only.
        let mut forwarding: Vec<ChannelReq> = Vec::new();
        if let Some(r) = self.x11_request() {
            forwarding.push(r);
        }
        if self.cfg.forward_agent.is_some() {
            crate::debug1!("Requesting authentication agent forwarding.");
            forwarding.push(ChannelReq::AuthAgentReq);
        }
        let pty = pty.then(|| {
            let term = std::env::var("TERM").unwrap_or_default();
            let fd = if tty::isatty(0) { 0 } else { 1 };
            (term, fd, self.chans.modes.clone())
        });
        let mut env: Vec<(String, Vec<u8>)> = Vec::new();
        let mut sent_env: Vec<String> = Vec::new();
        for pat in &self.cfg.send_env {
            for (k, v) in std::env::vars_os() {
                let k = k.to_string_lossy().into_owned();
                if ressh_compat::pattern::match_pattern(&k, pat) && !sent_env.contains(&k) {
                    crate::debug1!("Sending env {k}");
                    use std::os::unix::ffi::OsStrExt;
                    env.push((k.clone(), v.as_bytes().to_vec()));
                    sent_env.push(k);
                }
            }
        }
        for (k, v) in &self.cfg.set_env {
            crate::debug1!("Setting env {k} = {v}");
            env.push((k.clone(), v.as_bytes().to_vec()));
        }
        self.send_session_requests(id, pty, forwarding, env, command, subsystem);
    }

    /// Sends a session's requests: a pty (terminal type, the terminal whose
    /// size is taken, its modes), X11 and agent forwarding (`forwarding`,
    /// after the pty as ssh sends them), the environment, and the shell,
    /// command or subsystem.
    pub(super) fn send_session_requests(
        &mut self,
        id: u32,
        pty: Option<(String, std::os::fd::RawFd, Vec<u8>)>,
        forwarding: Vec<ChannelReq>,
        env: Vec<(String, Vec<u8>)>,
        command: Option<String>,
        subsystem: bool,
    ) {
        let mut reqs: Vec<(ChannelReq, Option<Req>)> = Vec::new();
        if let Some((term, fd, modes)) = pty {
            let (cols, rows, w, h) = tty::window_size(fd).unwrap_or((80, 24, 0, 0));
            reqs.push((
                ChannelReq::PtyReq {
                    term,
                    cols,
                    rows,
                    width_px: w,
                    height_px: h,
                    modes,
                },
                Some(Req::Pty),
            ));
        }
        reqs.extend(forwarding.into_iter().map(|r| (r, None)));
        for (name, value) in env {
            reqs.push((ChannelReq::Env { name, value }, None));
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
            let sent = self.conn.channel_request(id, r, kind.is_some());
            if self.engine("a channel request", sent).is_none() {
                return;
            }
            if let Some(k) = kind {
                if let Some(ch) = self.chans.get_mut(id) {
                    ch.replies.push_back(k);
                }
            }
        }
    }

    pub(super) fn on_reply(&mut self, id: u32, success: bool) {
        let Some(ch) = self.chans.get_mut(id) else {
            return;
        };
        let Some(r) = ch.replies.pop_front() else {
            return;
        };
        if success {
            return;
        }
        if let Kind::Mux(client) = ch.kind {
            // As ssh: a pty refused is told to the client, which leaves raw
            // mode; the session goes on. Anything else closes the channel.
            if r == Req::Pty {
                self.mux_tty_failed(client, id);
            } else {
                self.close_chan(id);
            }
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

    /// A request from the server: the main channel's exit status or
    /// signal is kept; every request wanting a reply is refused.
    pub(super) fn on_channel_request(&mut self, id: u32, want_reply: bool, request: &ChannelReq) {
        let chans = &mut self.chans;
        if let (Some(c), ChannelReq::ExitStatus(s)) = (chans.get_mut(id), request) {
            if matches!(c.kind, Kind::Mux(_)) {
                c.exit = Some(*s);
            }
        }
        if chans.main.is_some() && chans.main == chans.live.get(&id).copied() {
            match request {
                ChannelReq::ExitStatus(s) => chans.exit_status = Some(*s as i32),
                ChannelReq::ExitSignal {
                    signal, message, ..
                } => {
                    chans.exit_signal = Some(if message.is_empty() {
                        signal.clone()
                    } else {
                        format!("{signal} ({})", auth::clean(message))
                    })
                }
                _ => {}
            }
        }
        if want_reply {
            // Owed: the engine counted the request.
            let r = self.conn.channel_reply(id, false);
            self.engine("a channel reply", r);
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
        let Some(key) = self.chans.live.remove(&id) else {
            return;
        };
        let Some(ch) = self.chans.by_key.get(&key) else {
            return;
        };
        match ch.kind {
            Kind::Mux(client) => {
                crate::info!("{text}");
                self.chans.drop_chan(key, self.poll.registry());
                self.mux_session_refused(client);
            }
            Kind::Main => self.set_quit(fatal(text)),
            Kind::Stdio => self.set_quit(fatal(format!("{text}\nstdio forwarding failed"))),
            Kind::Local(_) | Kind::Remote(_) | Kind::Agent | Kind::X11 => {
                crate::info!("{text}");
                if let (Some(v), Some(s)) = (ch.socks, ch.out.as_ref()) {
                    let rep = match r {
                        msg::open_failure::ADMINISTRATIVELY_PROHIBITED => socks::Rep::NotAllowed,
                        msg::open_failure::CONNECT_FAILED => socks::Rep::Refused,
                        _ => socks::Rep::GeneralFailure,
                    };
                    // Best effort: the client is closed next anyway.
                    let _ = s.fd.write(&socks::reply(v, rep));
                }
                self.chans.drop_chan(key, self.poll.registry());
            }
        }
    }
}
