//! The data path: received data written out (and only then acknowledged
//! with `consume`), local input read while the window allows, the ~
//! escapes, and channels dropped once closed and drained.

use super::*;

impl Session {
    pub(super) fn on_data(&mut self, id: u32, ext: bool, data: Vec<u8>) {
        let n = data.len();
        let key = self.live.get(&id).copied();
        let Some(ch) = key.and_then(|k| self.chans.get_mut(&k)) else {
            let _ = self.conn.consume(id, n);
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
            _ => {
                let _ = self.conn.consume(id, n);
            }
        }
    }

    pub(super) fn flush_outputs(&mut self) {
        let keys: Vec<Key> = self.chans.keys().copied().collect();
        for key in keys {
            self.flush_chan(key);
        }
    }

    pub(super) fn flush_chan(&mut self, key: Key) {
        let Some(ch) = self.chans.get_mut(&key) else {
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
        let forward = matches!(ch.kind, Kind::Local(_) | Kind::Remote(_));
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
            let _ = self.conn.consume(id, consumed);
        }
        if want_close {
            ch.close_sent = true;
            let _ = self.conn.close_channel(id);
        }
    }

    pub(super) fn pump_inputs(&mut self, buf: &mut [u8]) {
        let keys: Vec<Key> = self.chans.keys().copied().collect();
        for key in keys {
            if self.quit.is_some() {
                return;
            }
            self.pump_chan(key, buf);
        }
    }

    pub(super) fn pump_chan(&mut self, key: Key, buf: &mut [u8]) {
        loop {
            let Some(ch) = self.chans.get_mut(&key) else {
                return;
            };
            let id = ch.id;
            if !ch.open || ch.closed || ch.sent_eof || ch.close_sent {
                return;
            }
            if !ch.unsent.is_empty() {
                match self.conn.send_data(id, &ch.unsent) {
                    Ok(n) => {
                        ch.unsent.drain(..n);
                    }
                    Err(_) => return,
                }
                if !ch.unsent.is_empty() {
                    return;
                }
            }
            if ch.in_eof {
                ch.sent_eof = true;
                let _ = self.conn.send_eof(id);
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
                    if input.mode == Mode::Tty && !crate::fdio::poll_now(input.raw(), false) {
                        ch.in_ready = false;
                    }
                    let is_main = ch.kind == Kind::Main;
                    if is_main && self.escape.is_some() {
                        let outs = self.escape.as_mut().expect("checked").feed(&buf[..n]);
                        for o in outs {
                            match o {
                                escape::Out::Data(d) => {
                                    if let Some(ch) = self.chans.get_mut(&key) {
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
                    } else {
                        ch.unsent.extend_from_slice(&buf[..n]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ch.in_ready = false;
                    return;
                }
                Err(e) => {
                    crate::debug1!("channel {id}: read failed: {e}");
                    ch.in_eof = true;
                    if matches!(ch.kind, Kind::Local(_) | Kind::Remote(_)) {
                        ch.close_sent = true;
                        let _ = self.conn.close_channel(id);
                        return;
                    }
                }
            }
        }
    }

    pub(super) fn send_unsent(&mut self, key: Key) {
        if let Some(ch) = self.chans.get_mut(&key) {
            if !ch.unsent.is_empty() {
                if let Ok(n) = self.conn.send_data(ch.id, &ch.unsent) {
                    ch.unsent.drain(..n);
                }
            }
        }
    }

    pub(super) fn escape_cmd(&mut self, c: escape::Cmd) {
        let esc = self.escape.as_ref().map(|e| e.char()).unwrap_or(b'~');
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
                if let Some(g) = &self.raw {
                    g.suspend();
                }
                // SAFETY: stopping ourselves; the default action of SIGTSTP.
                unsafe { libc::raise(libc::SIGTSTP) };
                if let Some(g) = &self.raw {
                    g.resume();
                }
                self.send_window_change();
            }
            escape::Cmd::ListConnections => {
                let mut s = String::from("The following connections are open:\n");
                for ch in self.chans.values() {
                    let state = if ch.closed { " (closing)" } else { "" };
                    s.push_str(&format!("  #{} {}{state}\n", ch.id, ch.desc));
                }
                crate::log::raw_text(&s);
            }
            escape::Cmd::Help => {
                let h = self.escape.as_ref().map(|x| x.help()).unwrap_or_default();
                crate::log::raw_text(&h);
            }
            escape::Cmd::Rekey => {
                crate::log::raw_text(&format!("{e}R\n"));
                // With resilience ~R reconnects (make-before-break); else,
                // as in ssh, it rekeys.
                if self.resilient() {
                    self.begin_resume("~R", None);
                } else {
                    let _ = self.conn.rekey();
                }
            }
            escape::Cmd::Break => {
                if let Some(id) = self.main.and_then(|k| self.chans.get(&k)).map(|c| c.id) {
                    let mut data = Vec::new();
                    data.extend_from_slice(&1000u32.to_be_bytes());
                    let _ = self.conn.channel_request(
                        id,
                        ChannelReq::Other {
                            name: "break".into(),
                            data,
                        },
                        false,
                    );
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

    /// Drops channels that are closed and drained.
    pub(super) fn reap_channels(&mut self) {
        let done: Vec<Key> = self
            .chans
            .iter()
            .filter(|(_, c)| c.closed && c.drained())
            .map(|(k, _)| *k)
            .collect();
        for key in done {
            if Some(key) == self.main {
                continue; // kept until exit for its status
            }
            self.drop_chan(key);
        }
    }

    pub(super) fn drop_chan(&mut self, key: Key) {
        if let Some(mut ch) = self.chans.remove(&key) {
            if self.live.get(&ch.id) == Some(&key) {
                self.live.remove(&ch.id);
            }
            for t in &ch.tokens {
                self.tokens.remove(t);
            }
            let reg = self.poll.registry();
            let mut fds: Vec<std::rc::Rc<LocalFd>> = Vec::new();
            fds.extend(ch.input.take());
            fds.extend(ch.out.take().map(|s| s.fd));
            fds.extend(ch.err.take().map(|s| s.fd));
            for f in fds {
                if let Ok(mut f) = std::rc::Rc::try_unwrap(f) {
                    f.deregister(reg);
                }
            }
        }
    }
}
