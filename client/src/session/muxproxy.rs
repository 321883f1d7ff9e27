//! Mux proxy mode (MUX_C_PROXY, `ssh -O proxy`): once a mux client asks
//! for it, its control connection carries SSH connection-protocol messages
//! (unencrypted, unpadded packets) instead of the mux protocol. A ressh
//! master terminates them: each channel the client opens becomes a channel
//! of the engine (so it rides the resilient connection), with flow control
//! on both sides (the client's window for what the server sends, ours for
//! what the client sends) and requests and replies relayed in order. The
//! client's channel numbers are its own; ours to it are a counter of this
//! client, never the engine's (so a late message cannot reach a channel of
//! someone else, or a new one reusing an id).
//!
//! Every packet is hostile: bounded, decoded strictly, only session and
//! direct-tcpip channels; a bad one, or data beyond the window we gave,
//! ends this client only.

use std::collections::{HashMap, VecDeque};

use mio::Token;
use ressh_proto::msg::{self, ChannelKind};
use ressh_proto::transport::{mux_frame, mux_unframe};
use ressh_proto::Event;

use super::Session;

/// The window we give the client per channel, and our largest packet.
const WINDOW: u32 = 2 << 20;
const MAX_PACKET: u32 = 32 * 1024;
/// Stop moving server data to a client whose socket has this much queued.
const OUT_SOFT: usize = 256 * 1024;

/// Something for the client, in the order the server sent it.
enum Item {
    /// Data (`Some(code)`: extended), consumed in the engine once queued.
    Data(Option<u32>, Vec<u8>),
    Eof,
    Request(bool, msg::ChannelReq),
    Reply(bool),
}

struct PChan {
    /// Our number for it towards the client.
    ours: u32,
    /// The client's number for it.
    theirs: u32,
    open: bool,
    /// What we may still send the client, and its largest packet.
    window: u64,
    max_packet: u32,
    queue: VecDeque<Item>,
    /// The client's data not yet taken by the engine.
    to_server: Vec<u8>,
    /// What the client may still send us.
    credit: u64,
    eof_pending: bool,
    close_pending: bool,
    /// Replies the client owes us for the server's requests.
    owed_replies: usize,
}

/// The channels of one proxy client.
#[derive(Default)]
pub(super) struct Proxy {
    /// By engine id.
    chans: HashMap<u32, PChan>,
    /// Our numbers to engine ids.
    ids: HashMap<u32, u32>,
    next: u32,
    /// Closed in the engine, their queues still going to the client.
    closing: Vec<PChan>,
}

impl Proxy {
    pub(super) fn has(&self, engine_id: u32) -> bool {
        self.chans.contains_key(&engine_id)
    }

    /// The engine ids of its channels (to close them when it goes).
    pub(super) fn engine_ids(&self) -> Vec<u32> {
        self.chans.keys().copied().collect()
    }
}

/// One unpadded packet: length, padding length 0, payload
/// ([`mux_frame`]). OpenSSH's reader refuses a packet length under 5
/// (packet.c, reading from a mux master), which only REQUEST_FAILURE (one
/// byte, our answer to the client's keepalives) would be: it gets zero
/// bytes after it, which ssh's handler of the reply does not read.
fn packet(payload: &[u8]) -> Vec<u8> {
    let mut p = payload.to_vec();
    p.resize(p.len().max(4), 0);
    let mut v = Vec::with_capacity(p.len() + 5);
    mux_frame(&p, &mut v);
    v
}

/// The next packet's payload off the front of `buf` ([`mux_unframe`]).
pub(super) fn take(buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, String> {
    let Some((payload, n)) = mux_unframe(buf).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let p = buf[payload].to_vec();
    buf.drain(..n);
    Ok(Some(p))
}

/// The engine id of the channel events are about, for the proxy's part.
fn event_channel(ev: &Event) -> Option<u32> {
    match ev {
        Event::ChannelOpened { id }
        | Event::ChannelOpenFailed { id, .. }
        | Event::ChannelRequest { id, .. }
        | Event::ChannelReply { id, .. }
        | Event::Data { id, .. }
        | Event::ExtendedData { id, .. }
        | Event::Writable { id }
        | Event::Eof { id }
        | Event::Closed { id } => Some(*id),
        _ => None,
    }
}

impl Session {
    /// The proxy client a channel event is for, if any.
    pub(super) fn proxy_owner(&self, ev: &Event) -> Option<Token> {
        let id = event_channel(ev)?;
        self.mux.proxy_owner(id)
    }

    fn proxy_send(&mut self, t: Token, payload: &[u8]) {
        if let Some(c) = self.mux.client_out(t) {
            c.extend_from_slice(&packet(payload));
        }
    }

    /// One packet from proxy client `t`.
    pub(super) fn proxy_packet(&mut self, t: Token, p: &[u8]) -> Result<(), String> {
        let e = |e: ressh_proto::Error| e.to_string();
        let Some(&kind) = p.first() else {
            return Err("empty proxy packet".into());
        };
        match kind {
            msg::num::GLOBAL_REQUEST => {
                let m = msg::GlobalRequest::decode(p).map_err(e)?;
                if m.want_reply {
                    self.proxy_send(t, &msg::RequestFailure.encode());
                }
            }
            msg::num::IGNORE | msg::num::DEBUG => {}
            msg::num::DISCONNECT => return Err("the proxy client disconnected".into()),
            msg::num::CHANNEL_OPEN => {
                let m = msg::ChannelOpen::decode(p).map_err(e)?;
                let allowed = matches!(
                    m.kind,
                    ChannelKind::Session | ChannelKind::DirectTcpip { .. }
                );
                let id = if allowed {
                    self.conn.open_channel(m.kind).ok()
                } else {
                    None
                };
                let Some(id) = id else {
                    let f = msg::ChannelOpenFailure {
                        recipient: m.sender,
                        reason: msg::open_failure::ADMINISTRATIVELY_PROHIBITED,
                        description: "not through a ressh master".into(),
                        language: String::new(),
                    };
                    self.proxy_send(t, &f.encode());
                    return Ok(());
                };
                let Some(px) = self.mux.proxy(t) else {
                    return Ok(());
                };
                let ours = px.next;
                px.next = px.next.wrapping_add(1);
                px.ids.insert(ours, id);
                px.chans.insert(
                    id,
                    PChan {
                        ours,
                        theirs: m.sender,
                        open: false,
                        window: u64::from(m.initial_window),
                        max_packet: m.max_packet.clamp(1, MAX_PACKET),
                        queue: VecDeque::new(),
                        to_server: Vec::new(),
                        credit: u64::from(WINDOW),
                        eof_pending: false,
                        close_pending: false,
                        owed_replies: 0,
                    },
                );
            }
            _ => return self.proxy_channel_msg(t, kind, p),
        }
        Ok(())
    }

    /// A message about one of the client's channels.
    fn proxy_channel_msg(&mut self, t: Token, kind: u8, p: &[u8]) -> Result<(), String> {
        let e = |e: ressh_proto::Error| e.to_string();
        let recipient = match p.get(1..5) {
            Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            None => return Err("short channel message".into()),
        };
        let Some(px) = self.mux.proxy(t) else {
            return Ok(());
        };
        // A message for a channel already closed (its CLOSE crossing ours)
        // is dropped, not an error.
        let Some(&id) = px.ids.get(&recipient) else {
            // A channel closed in the engine still sends the client what
            // was queued, as its window allows.
            if kind == msg::num::CHANNEL_WINDOW_ADJUST {
                let m = msg::ChannelWindowAdjust::decode(p).map_err(e)?;
                if let Some(ch) = px.closing.iter_mut().find(|c| c.ours == recipient) {
                    ch.window = (ch.window + u64::from(m.bytes)).min(u64::from(u32::MAX));
                }
                self.proxy_pump(t);
                return Ok(());
            }
            return match kind {
                msg::num::CHANNEL_CLOSE
                | msg::num::CHANNEL_EOF
                | msg::num::CHANNEL_WINDOW_ADJUST
                | msg::num::CHANNEL_DATA
                | msg::num::CHANNEL_SUCCESS
                | msg::num::CHANNEL_FAILURE
                | msg::num::CHANNEL_REQUEST => Ok(()),
                _ => Err(format!("unexpected proxy message {kind}")),
            };
        };
        let ch = px.chans.get_mut(&id).ok_or("lost channel")?;
        match kind {
            msg::num::CHANNEL_WINDOW_ADJUST => {
                let m = msg::ChannelWindowAdjust::decode(p).map_err(e)?;
                ch.window = (ch.window + u64::from(m.bytes)).min(u64::from(u32::MAX));
            }
            msg::num::CHANNEL_DATA => {
                let m = msg::ChannelData::decode(p).map_err(e)?;
                let n = m.data.len() as u64;
                if n > ch.credit || ch.eof_pending || ch.close_pending {
                    return Err("data beyond the window".into());
                }
                ch.credit -= n;
                ch.to_server.extend_from_slice(&m.data);
            }
            msg::num::CHANNEL_EXTENDED_DATA => {
                // Nothing takes stderr towards a server: counted, dropped.
                let m = msg::ChannelExtendedData::decode(p).map_err(e)?;
                let n = m.data.len() as u64;
                if n > ch.credit {
                    return Err("data beyond the window".into());
                }
            }
            msg::num::CHANNEL_EOF => {
                msg::ChannelEof::decode(p).map_err(e)?;
                ch.eof_pending = true;
            }
            msg::num::CHANNEL_CLOSE => {
                msg::ChannelClose::decode(p).map_err(e)?;
                ch.close_pending = true;
            }
            msg::num::CHANNEL_REQUEST => {
                let m = msg::ChannelRequest::decode(p).map_err(e)?;
                let theirs = ch.theirs;
                let r = self.conn.channel_request(id, m.request, m.want_reply);
                if self.engine("a proxied channel request", r).is_none() && m.want_reply {
                    self.proxy_send(t, &msg::ChannelFailure(theirs).encode());
                }
            }
            msg::num::CHANNEL_SUCCESS | msg::num::CHANNEL_FAILURE => {
                if ch.owed_replies == 0 {
                    return Err("a reply nobody asked for".into());
                }
                ch.owed_replies -= 1;
                let r = self
                    .conn
                    .channel_reply(id, kind == msg::num::CHANNEL_SUCCESS);
                self.engine("a proxied channel reply", r);
            }
            _ => return Err(format!("unexpected proxy message {kind}")),
        }
        self.proxy_pump(t);
        Ok(())
    }

    /// An engine event about a channel of proxy client `t`.
    pub(super) fn proxy_event(&mut self, t: Token, ev: Event) {
        let Some(id) = event_channel(&ev) else {
            return;
        };
        let Some(ch) = self.mux.proxy(t).and_then(|px| px.chans.get_mut(&id)) else {
            return;
        };
        let (ours, theirs) = (ch.ours, ch.theirs);
        match ev {
            Event::ChannelOpened { .. } => {
                ch.open = true;
                let m = msg::ChannelOpenConfirmation {
                    recipient: theirs,
                    sender: ours,
                    initial_window: WINDOW,
                    max_packet: MAX_PACKET,
                    data: Vec::new(),
                };
                self.proxy_send(t, &m.encode());
            }
            Event::ChannelOpenFailed {
                reason,
                description,
                ..
            } => {
                self.proxy_forget(t, id);
                let m = msg::ChannelOpenFailure {
                    recipient: theirs,
                    reason,
                    description,
                    language: String::new(),
                };
                self.proxy_send(t, &m.encode());
            }
            Event::Data { data, .. } => ch.queue.push_back(Item::Data(None, data)),
            Event::ExtendedData { code, data, .. } => {
                ch.queue.push_back(Item::Data(Some(code), data))
            }
            Event::Eof { .. } => ch.queue.push_back(Item::Eof),
            Event::ChannelRequest {
                want_reply,
                request,
                ..
            } => {
                if want_reply {
                    ch.owed_replies += 1;
                }
                ch.queue.push_back(Item::Request(want_reply, request));
            }
            Event::ChannelReply { success, .. } => ch.queue.push_back(Item::Reply(success)),
            Event::Closed { .. } => {
                // The engine's id is free now; what is queued for the
                // client (data, the exit status) still goes, then the
                // close (proxy_flush_closing).
                if let Some(px) = self.mux.proxy(t) {
                    if let Some(ch) = px.chans.remove(&id) {
                        px.ids.remove(&ch.ours);
                        px.closing.push(ch);
                    }
                }
            }
            _ => {}
        }
        self.proxy_pump(t);
    }

    fn proxy_forget(&mut self, t: Token, id: u32) {
        if let Some(px) = self.mux.proxy(t) {
            if let Some(ch) = px.chans.remove(&id) {
                px.ids.remove(&ch.ours);
            }
        }
    }

    /// Moves what can move on every channel of `t`: the client's data into
    /// the engine (its window given back to the client as it goes), its EOF
    /// and close after it; the server's items to the client as the client's
    /// window allows.
    pub(super) fn proxy_pump(&mut self, t: Token) {
        let ids: Vec<u32> = match self.mux.proxy(t) {
            Some(px) => px.chans.keys().copied().collect(),
            None => return,
        };
        for id in ids {
            self.proxy_to_server(t, id);
            self.proxy_flush(t, id);
        }
        self.proxy_flush_closing(t);
    }

    fn proxy_to_server(&mut self, t: Token, id: u32) {
        let Some(ch) = self.mux.proxy(t).and_then(|px| px.chans.get_mut(&id)) else {
            return;
        };
        if !ch.open {
            return;
        }
        let mut taken = 0;
        if !ch.to_server.is_empty() {
            let data = std::mem::take(&mut ch.to_server);
            let r = self.conn.send_data(id, &data);
            let n = self.engine("proxied data", r).unwrap_or(0);
            taken = n;
            if let Some(ch) = self.mux.proxy(t).and_then(|px| px.chans.get_mut(&id)) {
                ch.to_server = data[n..].to_vec();
            }
        }
        let Some(ch) = self.mux.proxy(t).and_then(|px| px.chans.get_mut(&id)) else {
            return;
        };
        let theirs = ch.theirs;
        let drained = ch.to_server.is_empty();
        let (eof, close) = (drained && ch.eof_pending, drained && ch.close_pending);
        if eof {
            ch.eof_pending = false;
        }
        if close {
            ch.close_pending = false;
        }
        if taken > 0 {
            ch.credit += taken as u64;
            let m = msg::ChannelWindowAdjust {
                recipient: theirs,
                bytes: taken as u32,
            };
            self.proxy_send(t, &m.encode());
        }
        if eof {
            let r = self.conn.send_eof(id);
            self.engine("a proxied EOF", r);
        }
        if close {
            let r = self.conn.close_channel(id);
            self.engine("a proxied close", r);
        }
    }

    /// Sends channel `id`'s queued items to the client, data as its window
    /// allows (consumed in the engine as it goes).
    fn proxy_flush(&mut self, t: Token, id: u32) {
        let Some(c) = self.mux.client_parts(t) else {
            return;
        };
        let (out, px) = c;
        let Some(ch) = px.chans.get_mut(&id) else {
            return;
        };
        let n = drain_queue(ch, out);
        if n > 0 {
            let r = self.conn.consume(id, n);
            self.engine("consume", r);
        }
    }

    /// The queues of channels closed in the engine; each closed towards
    /// the client once empty.
    pub(super) fn proxy_flush_closing(&mut self, t: Token) {
        let Some((out, px)) = self.mux.client_parts(t) else {
            return;
        };
        px.closing.retain_mut(|ch| {
            drain_queue(ch, out);
            if ch.queue.is_empty() {
                out.extend_from_slice(&packet(&msg::ChannelClose(ch.theirs).encode()));
                false
            } else {
                true
            }
        });
    }
}

/// Moves `ch`'s queued items to `out` in order, data as the client's
/// window and packet size allow, until `out` holds [`OUT_SOFT`]; returns
/// how much data went.
fn drain_queue(ch: &mut PChan, out: &mut Vec<u8>) -> usize {
    let mut sent = 0;
    while out.len() < OUT_SOFT {
        let theirs = ch.theirs;
        let Some(item) = ch.queue.front_mut() else {
            break;
        };
        let payload = match item {
            Item::Data(code, data) => {
                let n = (data.len() as u64)
                    .min(ch.window)
                    .min(u64::from(ch.max_packet)) as usize;
                if n == 0 && !data.is_empty() {
                    break; // the client's window is shut
                }
                let chunk: Vec<u8> = data.drain(..n).collect();
                let code = *code;
                ch.window -= n as u64;
                sent += n;
                if data.is_empty() {
                    ch.queue.pop_front();
                }
                match code {
                    None => msg::ChannelData {
                        recipient: theirs,
                        data: chunk,
                    }
                    .encode(),
                    Some(code) => msg::ChannelExtendedData {
                        recipient: theirs,
                        code,
                        data: chunk,
                    }
                    .encode(),
                }
            }
            Item::Eof => {
                ch.queue.pop_front();
                msg::ChannelEof(theirs).encode()
            }
            Item::Request(..) | Item::Reply(_) => match ch.queue.pop_front() {
                Some(Item::Request(want_reply, request)) => msg::ChannelRequest {
                    recipient: theirs,
                    want_reply,
                    request,
                }
                .encode(),
                Some(Item::Reply(true)) => msg::ChannelSuccess(theirs).encode(),
                _ => msg::ChannelFailure(theirs).encode(),
            },
        };
        out.extend_from_slice(&packet(&payload));
    }
    sent
}
