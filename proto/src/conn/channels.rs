//! The connection protocol (RFC 4254): the channel table, the global
//! request counters, and the messages that act on them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Config, Connection, Event, Role};
use crate::error::{Error, Result};
use crate::msg::{self, num, ChannelKind, ChannelReq, GlobalReq};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum ChanState {
    /// We sent CHANNEL_OPEN and wait for the answer.
    Opening,
    /// The peer sent CHANNEL_OPEN and the application has not answered.
    PeerOpening,
    Open,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Channel {
    state: ChanState,
    remote_id: u32,
    /// What the peer may still send us.
    local_window: u32,
    /// Consumed by the application and not yet returned by WINDOW_ADJUST.
    consumed: u32,
    /// Our receive window now: `local_window + consumed + delivered and not
    /// consumed`. Starts at [`Config::window`] and grows with the
    /// bandwidth-delay product up to [`Config::window_max`].
    window: u32,
    /// How fast the window turns over (see [`Tuner`]); not exported: a
    /// moved session measures its new path afresh.
    #[serde(skip)]
    tuner: Tuner,
    /// What we may still send.
    remote_window: u32,
    remote_max_packet: u32,
    sent_eof: bool,
    recv_eof: bool,
    sent_close: bool,
    recv_close: bool,
    /// Our requests awaiting a reply.
    replies_owed_to_us: u32,
    /// Peer requests with want_reply the application has not answered.
    replies_we_owe: u32,
    blocked: bool,
}

impl Channel {
    fn new(
        state: ChanState,
        remote_id: u32,
        local_window: u32,
        remote_window: u32,
        remote_max_packet: u32,
    ) -> Self {
        Channel {
            state,
            remote_id,
            local_window,
            consumed: 0,
            window: local_window,
            tuner: Tuner::default(),
            remote_window,
            remote_max_packet,
            sent_eof: false,
            recv_eof: false,
            sent_close: false,
            recv_close: false,
            replies_owed_to_us: 0,
            replies_we_owe: 0,
            blocked: false,
        }
    }

    /// Whether data may be sent on it.
    fn sends_data(&self) -> bool {
        self.state == ChanState::Open && !self.sent_eof && !self.sent_close
    }
}

/// The window a channel aims at, in bandwidth-delay products. Four, not
/// two: measured through a delay relay at 200 ms (256 MiB downloads), with
/// twice the product the window grew more slowly and the transfer moved
/// 78 MB/s instead of 92; the window stays within [`Config::window_max`]
/// either way.
const GROWTH: f64 = 4.0;

/// Consumed bytes that make a WINDOW_ADJUST due: an eighth of the window,
/// at least three of our largest packets, at most half the window. The peer
/// then always holds credit for at least seven eighths of the window, so a
/// window a little above the bandwidth-delay product keeps the path full
/// (returning credit only at half the window, the peer's credit swung
/// between half and all of it). OpenSSH adjusts after three packets
/// (channels.c, `channel_check_window`).
fn adjust_step(window: u32, max_packet: u32) -> u32 {
    (window / 8)
        .max(max_packet.saturating_mul(3))
        .min(window / 2)
}

/// Receive-window auto-tuning (as HPN-SSH grows its window, measured here
/// on the channel itself rather than on the TCP socket, which a proxy or
/// relay may terminate close by).
///
/// The round trip: after a WINDOW_ADJUST the peer can send the new credit
/// only once the adjust reached it, so the first byte beyond the credit it
/// had arrives at least a round trip after the adjust left (exactly one when
/// the peer was waiting for it; data queued ahead of it adds its wait). The
/// smallest such delay since the session's last reconnect is the channel's
/// round trip. The rate: bytes consumed by the application over at least one
/// round trip. The window becomes [`GROWTH`] times their product (the
/// bandwidth-delay product) when that is more than it is, within
/// [`Config::window_max`]. A peer held back by the window sends about a
/// window per round trip (credit goes back every [`adjust_step`]), so its
/// window grows severalfold each round trip until the path or the
/// application is the limit; a fast path with a short round trip where
/// nothing queues (loopback) keeps the initial window.
#[derive(Debug, Clone, Default)]
struct Tuner {
    /// Bytes received on the channel, ever.
    received: u64,
    /// A round-trip probe: when `received` passes the offset, the time since
    /// the adjust is a sample.
    probe: Option<(u64, Instant)>,
    rtt: Option<Duration>,
    /// Start of the current rate measurement: when, and `consumed_total`.
    epoch: Option<(Instant, u64)>,
    consumed_total: u64,
}

impl Tuner {
    fn on_data(&mut self, n: usize, now: Instant) {
        self.received += n as u64;
        if let Some((offset, at)) = self.probe {
            if self.received > offset {
                let sample = now.saturating_duration_since(at);
                self.rtt = Some(self.rtt.map_or(sample, |r| r.min(sample)));
                self.probe = None;
            }
        }
    }

    /// The session moved to a new transport (a reconnect, often from
    /// another network): the old path's round trip says nothing of the new
    /// one, and a probe or rate measurement spanning the outage is not a
    /// sample. Without this a session that started on a LAN and roamed onto
    /// a long path kept the LAN's round trip, and its window never grew.
    fn new_path(&mut self) {
        self.probe = None;
        self.rtt = None;
        self.epoch = None;
    }

    /// An adjust of `add` bytes leaves now, while the peer still had
    /// `credit`; returns the window the channel should have, given it has
    /// `window` and may have at most `max`.
    fn on_adjust(&mut self, add: u32, credit: u32, window: u32, max: u32, now: Instant) -> u32 {
        self.consumed_total += u64::from(add);
        if self.probe.is_none() {
            self.probe = Some((self.received + u64::from(credit), now));
        }
        let Some(rtt) = self.rtt.filter(|r| !r.is_zero()) else {
            self.epoch.get_or_insert((now, self.consumed_total));
            return window;
        };
        let (start, base) = *self.epoch.get_or_insert((now, self.consumed_total));
        let span = now.saturating_duration_since(start);
        if span < rtt {
            return window;
        }
        self.epoch = Some((now, self.consumed_total));
        let rate = (self.consumed_total - base) as f64 / span.as_secs_f64();
        let want = GROWTH * rate * rtt.as_secs_f64();
        if want > f64::from(window) {
            (want.min(f64::from(max)) as u32).max(window)
        } else {
            window
        }
    }
}

/// The channels by our id, and the global requests in flight.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Channels {
    map: BTreeMap<u32, Channel>,
    /// Our global requests awaiting a reply.
    global_replies_owed_to_us: u32,
    /// The peer's global requests with want_reply the application has not
    /// answered.
    global_replies_we_owe: u32,
    /// The peer sent no-more-sessions@openssh.com.
    no_more_sessions: bool,
    /// The largest receive window [`Connection::window_grown`] reported.
    #[serde(skip)]
    window_reported: u32,
}

impl Channels {
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Every channel's window tuner starts over on a new path.
    pub(super) fn new_path(&mut self) {
        for ch in self.map.values_mut() {
            ch.tuner.new_path();
        }
    }

    /// Adds a channel under the lowest free id; None at `max` channels.
    fn insert(&mut self, max: usize, ch: Channel) -> Option<u32> {
        if self.map.len() >= max {
            return None;
        }
        // The ids are ordered: the first one out of step is free.
        let id = (0u32..)
            .zip(self.map.keys())
            .find(|(i, k)| i != *k)
            .map_or(u32::try_from(self.map.len()).ok()?, |(i, _)| i);
        self.map.insert(id, ch);
        Some(id)
    }

    /// A channel the application names.
    fn local(&mut self, id: u32) -> Result<&mut Channel> {
        self.map
            .get_mut(&id)
            .ok_or(Error::Misuse("no such channel"))
    }

    /// A channel the peer names in a message about it.
    fn peer(&mut self, id: u32) -> Result<&mut Channel> {
        match self.map.get_mut(&id) {
            Some(ch) if ch.state != ChanState::PeerOpening && !ch.recv_close => Ok(ch),
            _ => Err(Error::Protocol("message for an unknown or closed channel")),
        }
    }

    /// Forgets a channel closed on both sides; whether it did.
    fn reap(&mut self, id: u32) -> bool {
        let done = self
            .map
            .get(&id)
            .is_some_and(|c| c.sent_close && c.recv_close);
        if done {
            self.map.remove(&id);
        }
        done
    }

    /// Channels that were cut short and may send again: their flag drops.
    fn unblock(&mut self) -> impl Iterator<Item = u32> + '_ {
        self.map.iter_mut().filter_map(|(id, ch)| {
            let wake = ch.blocked && ch.remote_window > 0;
            if wake {
                ch.blocked = false;
            }
            wake.then_some(*id)
        })
    }

    /// Whether an exported table fits the configuration.
    pub(super) fn is_consistent(&self, c: &Config) -> bool {
        self.map.len() <= c.max_channels
            && self.map.values().all(|ch| {
                ch.window <= c.window_max.max(c.window)
                    && ch.local_window <= ch.window
                    && ch.consumed <= ch.window - ch.local_window
            })
    }
}

impl Connection {
    fn check_conn(&self) -> Result<()> {
        self.check_open()?;
        if !self.auth.is_done() {
            return Err(Error::Misuse("not authenticated"));
        }
        Ok(())
    }

    /// Opens a channel of `kind`; [`Event::ChannelOpened`] or
    /// [`Event::ChannelOpenFailed`] follows.
    pub fn open_channel(&mut self, kind: ChannelKind) -> Result<u32> {
        self.check_conn()?;
        let ch = Channel::new(ChanState::Opening, 0, self.config.window, 0, 0);
        let id = self
            .channels
            .insert(self.config.max_channels, ch)
            .ok_or(Error::Misuse("too many channels"))?;
        let m = msg::ChannelOpen {
            sender: id,
            initial_window: self.config.window,
            max_packet: self.config.max_packet,
            kind,
        };
        self.send(m.encode())?;
        Ok(id)
    }

    /// Accepts a channel the peer asked for in [`Event::ChannelOpenRequest`].
    pub fn accept_channel(&mut self, id: u32) -> Result<()> {
        self.check_conn()?;
        let window = self.config.window;
        let max_packet = self.config.max_packet;
        let ch = self.channels.local(id)?;
        if ch.state != ChanState::PeerOpening {
            return Err(Error::Misuse("channel not awaiting an answer"));
        }
        ch.state = ChanState::Open;
        let m = msg::ChannelOpenConfirmation {
            recipient: ch.remote_id,
            sender: id,
            initial_window: window,
            max_packet,
            data: Vec::new(),
        };
        self.send(m.encode())
    }

    /// Refuses a channel the peer asked for.
    pub fn reject_channel(&mut self, id: u32, reason_code: u32, description: &str) -> Result<()> {
        self.check_conn()?;
        let ch = self.channels.local(id)?;
        if ch.state != ChanState::PeerOpening {
            return Err(Error::Misuse("channel not awaiting an answer"));
        }
        let recipient = ch.remote_id;
        self.channels.map.remove(&id);
        let m = msg::ChannelOpenFailure {
            recipient,
            reason: reason_code,
            description: description.to_string(),
            language: String::new(),
        };
        self.send(m.encode())
    }

    /// Sends a channel request; with `want_reply` an [`Event::ChannelReply`] follows.
    pub fn channel_request(
        &mut self,
        id: u32,
        request: ChannelReq,
        want_reply: bool,
    ) -> Result<()> {
        self.check_conn()?;
        let ch = self.channels.local(id)?;
        if ch.state != ChanState::Open || ch.sent_close {
            return Err(Error::Misuse("channel not open"));
        }
        if want_reply {
            ch.replies_owed_to_us += 1;
        }
        let m = msg::ChannelRequest {
            recipient: ch.remote_id,
            want_reply,
            request,
        };
        self.send(m.encode())
    }

    /// Answers the oldest unanswered want_reply request of the channel.
    pub fn channel_reply(&mut self, id: u32, success: bool) -> Result<()> {
        self.check_conn()?;
        let ch = self.channels.local(id)?;
        if ch.replies_we_owe == 0 {
            return Err(Error::Misuse("no channel request awaits a reply"));
        }
        ch.replies_we_owe -= 1;
        let recipient = ch.remote_id;
        if ch.sent_close {
            return Ok(());
        }
        let m = if success {
            msg::ChannelSuccess(recipient).encode()
        } else {
            msg::ChannelFailure(recipient).encode()
        };
        self.send(m)
    }

    /// A channel's receive window has grown to at least twice what was last
    /// reported (at first: the initial window): the largest window now, for
    /// the application's log. At most a few times per connection (each
    /// report doubles the bar, within [`Config::window_max`]).
    pub fn window_grown(&mut self) -> Option<u32> {
        let bar = self.channels.window_reported.max(self.config.window);
        let now = self.stats.window_max;
        (u64::from(now) >= 2 * u64::from(bar)).then(|| {
            self.channels.window_reported = now;
            now
        })
    }

    /// How many bytes [`Self::send_data`] would take now.
    pub fn send_window(&self, id: u32) -> usize {
        match self.channels.map.get(&id) {
            Some(ch) if ch.sends_data() => (ch.remote_window as usize).min(self.resilience_room()),
            _ => 0,
        }
    }

    /// Room under the resilience buffer cap (unlimited without resilience).
    pub(super) fn resilience_room(&self) -> usize {
        match &self.resilience {
            Some(r) if r.active => r.room().saturating_sub(self.io.deferred().1),
            _ => usize::MAX,
        }
    }

    /// After buffer space was freed: channels that were cut short can send.
    pub(super) fn wake_blocked_channels(&mut self) {
        let woken = self.channels.unblock().map(|id| Event::Writable { id });
        self.events.extend(woken);
    }

    /// Sends as much of `data` as the peer's window allows; returns how much
    /// was taken. When it is less than offered, [`Event::Writable`] follows
    /// once the peer opens its window.
    pub fn send_data(&mut self, id: u32, data: &[u8]) -> Result<usize> {
        self.send_data_ext(id, None, data)
    }

    /// Like [`Self::send_data`] for extended data (code 1 is stderr).
    pub fn send_extended_data(&mut self, id: u32, code: u32, data: &[u8]) -> Result<usize> {
        self.send_data_ext(id, Some(code), data)
    }

    fn send_data_ext(&mut self, id: u32, code: Option<u32>, data: &[u8]) -> Result<usize> {
        self.check_conn()?;
        let our_max = crate::transport::MAX_PAYLOAD_OUT as u32 - 64;
        let room = self.resilience_room();
        let ch = self.channels.local(id)?;
        if !ch.sends_data() {
            return Err(Error::Misuse("channel not open for data"));
        }
        let n = data.len().min(ch.remote_window as usize).min(room);
        if n < data.len() {
            ch.blocked = true;
        }
        let max = ch.remote_max_packet.clamp(1, our_max) as usize;
        ch.remote_window -= n as u32;
        let recipient = ch.remote_id;
        self.stats.data_sent += n as u64;
        for chunk in data[..n].chunks(max) {
            let mut p = self.io.payload_buf(chunk.len() + 16);
            match code {
                None => {
                    p.extend_from_slice(&msg::channel_data_header(recipient, chunk.len() as u32));
                }
                Some(c) => {
                    p.push(num::CHANNEL_EXTENDED_DATA);
                    crate::wire::Put::put_u32(&mut p, recipient);
                    crate::wire::Put::put_u32(&mut p, c);
                    crate::wire::Put::put_u32(&mut p, chunk.len() as u32);
                }
            }
            p.extend_from_slice(chunk);
            self.send(p)?;
        }
        Ok(n)
    }

    /// The application has passed on `n` bytes delivered by [`Event::Data`]
    /// or [`Event::ExtendedData`]; the peer may send that much more.
    /// A no-op once the channel is gone.
    pub fn consume(&mut self, id: u32, n: usize) -> Result<()> {
        self.check_conn()?;
        let (now, max) = (self.now, self.config.window_max.max(self.config.window));
        let packet = self.config.max_packet;
        let Some(ch) = self.channels.map.get_mut(&id) else {
            return Ok(());
        };
        let window = ch.window;
        let delivered = window - ch.local_window.min(window);
        let consumed = u32::try_from(n)
            .ok()
            .and_then(|n| ch.consumed.checked_add(n))
            .filter(|&c| c <= delivered)
            .ok_or(Error::Misuse("consumed more than was delivered"))?;
        ch.consumed = consumed;
        let due = consumed >= adjust_step(window, packet) || ch.local_window < window / 2;
        if due && consumed > 0 && !ch.recv_eof && !ch.sent_close {
            let grown = ch
                .tuner
                .on_adjust(ch.consumed, ch.local_window, window, max, now);
            let add = ch.consumed + (grown - window);
            ch.window = grown;
            ch.local_window += add;
            ch.consumed = 0;
            self.stats.window_max = self.stats.window_max.max(grown);
            let m = msg::ChannelWindowAdjust {
                recipient: ch.remote_id,
                bytes: add,
            };
            self.send(m.encode())?;
        }
        Ok(())
    }

    /// Sends EOF; a no-op once the channel is closing or gone.
    pub fn send_eof(&mut self, id: u32) -> Result<()> {
        self.check_conn()?;
        let Some(ch) = self.channels.map.get_mut(&id) else {
            return Ok(());
        };
        if !ch.sends_data() {
            return Ok(());
        }
        ch.sent_eof = true;
        let m = msg::ChannelEof(ch.remote_id);
        self.send(m.encode())
    }

    /// Closes the channel; [`Event::Closed`] follows when the peer agrees.
    /// A no-op once the channel is closing or gone.
    pub fn close_channel(&mut self, id: u32) -> Result<()> {
        self.check_conn()?;
        let Some(ch) = self.channels.map.get_mut(&id) else {
            return Ok(());
        };
        if ch.state != ChanState::Open || ch.sent_close {
            return Ok(());
        }
        ch.sent_close = true;
        let m = msg::ChannelClose(ch.remote_id);
        self.send(m.encode())?;
        self.reap(id);
        Ok(())
    }

    fn reap(&mut self, id: u32) {
        if self.channels.reap(id) {
            self.events.push_back(Event::Closed { id });
        }
    }

    /// Sends a global request; with `want_reply` an [`Event::GlobalReply`] follows.
    pub fn global_request(&mut self, request: GlobalReq, want_reply: bool) -> Result<()> {
        self.check_conn()?;
        if want_reply {
            self.channels.global_replies_owed_to_us += 1;
        }
        self.send(
            msg::GlobalRequest {
                want_reply,
                request,
            }
            .encode(),
        )
    }

    /// Answers the oldest global request that wanted a reply.
    pub fn global_reply(&mut self, success: bool, data: &[u8]) -> Result<()> {
        self.check_conn()?;
        if self.channels.global_replies_we_owe == 0 {
            return Err(Error::Misuse("no global request awaits a reply"));
        }
        self.channels.global_replies_we_owe -= 1;
        let m = if success {
            msg::RequestSuccess(data.to_vec()).encode()
        } else {
            msg::RequestFailure.encode()
        };
        self.send(m)
    }

    pub(super) fn connection_message(&mut self, n: u8, payload: Vec<u8>) -> Result<()> {
        match n {
            num::CHANNEL_DATA => {
                let (id, data) = msg::decode_channel_data(&payload)?;
                self.on_data(id, None, data.to_vec())
            }
            num::CHANNEL_EXTENDED_DATA => {
                let (id, code, data) = msg::decode_channel_extended_data(&payload)?;
                self.on_data(id, Some(code), data.to_vec())
            }
            num::CHANNEL_WINDOW_ADJUST => {
                let m = msg::ChannelWindowAdjust::decode(&payload)?;
                let ch = self.channels.peer(m.recipient)?;
                // RFC 4254 §5.2: the window may not exceed 2^32 - 1.
                ch.remote_window = ch
                    .remote_window
                    .checked_add(m.bytes)
                    .ok_or(Error::Protocol("window adjust overflows"))?;
                if ch.blocked && ch.remote_window > 0 {
                    ch.blocked = false;
                    self.events.push_back(Event::Writable { id: m.recipient });
                }
                Ok(())
            }
            num::CHANNEL_EOF => {
                let id = msg::ChannelEof::decode(&payload)?.0;
                let ch = self.channels.peer(id)?;
                if ch.state != ChanState::Open || ch.recv_eof {
                    return Err(Error::Protocol("unexpected channel EOF"));
                }
                ch.recv_eof = true;
                self.events.push_back(Event::Eof { id });
                Ok(())
            }
            num::CHANNEL_CLOSE => {
                let id = msg::ChannelClose::decode(&payload)?.0;
                let ch = self.channels.peer(id)?;
                if ch.state != ChanState::Open {
                    return Err(Error::Protocol("close for a channel not open"));
                }
                ch.recv_close = true;
                if !ch.sent_close {
                    ch.sent_close = true;
                    let m = msg::ChannelClose(ch.remote_id);
                    self.send(m.encode())?;
                }
                self.reap(id);
                Ok(())
            }
            num::CHANNEL_OPEN => self.on_channel_open(&payload),
            num::CHANNEL_OPEN_CONFIRMATION => {
                let m = msg::ChannelOpenConfirmation::decode(&payload)?;
                let ch = self.channels.peer(m.recipient)?;
                if ch.state != ChanState::Opening {
                    return Err(Error::Protocol("confirmation for a channel not opening"));
                }
                ch.state = ChanState::Open;
                ch.remote_id = m.sender;
                ch.remote_window = m.initial_window;
                ch.remote_max_packet = m.max_packet;
                self.events
                    .push_back(Event::ChannelOpened { id: m.recipient });
                Ok(())
            }
            num::CHANNEL_OPEN_FAILURE => {
                let m = msg::ChannelOpenFailure::decode(&payload)?;
                let ch = self.channels.peer(m.recipient)?;
                if ch.state != ChanState::Opening {
                    return Err(Error::Protocol("open failure for a channel not opening"));
                }
                self.channels.map.remove(&m.recipient);
                self.events.push_back(Event::ChannelOpenFailed {
                    id: m.recipient,
                    reason: m.reason,
                    description: m.description,
                });
                Ok(())
            }
            num::CHANNEL_REQUEST => {
                let m = msg::ChannelRequest::decode(&payload)?;
                let ch = self.channels.peer(m.recipient)?;
                if ch.state != ChanState::Open {
                    return Err(Error::Protocol("request for a channel not open"));
                }
                let remote = ch.remote_id;
                if matches!(m.request, ChannelReq::Keepalive) {
                    // keepalive@openssh.com: answered at once, like OpenSSH.
                    if m.want_reply && !ch.sent_close {
                        return self.send(msg::ChannelFailure(remote).encode());
                    }
                    return Ok(());
                }
                if m.want_reply {
                    ch.replies_we_owe += 1;
                }
                self.events.push_back(Event::ChannelRequest {
                    id: m.recipient,
                    want_reply: m.want_reply,
                    request: m.request,
                });
                Ok(())
            }
            num::CHANNEL_SUCCESS | num::CHANNEL_FAILURE => {
                let id = if n == num::CHANNEL_SUCCESS {
                    msg::ChannelSuccess::decode(&payload)?.0
                } else {
                    msg::ChannelFailure::decode(&payload)?.0
                };
                let ch = self.channels.peer(id)?;
                if ch.replies_owed_to_us == 0 {
                    return Err(Error::Protocol("channel reply nobody asked for"));
                }
                ch.replies_owed_to_us -= 1;
                self.events.push_back(Event::ChannelReply {
                    id,
                    success: n == num::CHANNEL_SUCCESS,
                });
                Ok(())
            }
            num::GLOBAL_REQUEST => {
                let m = msg::GlobalRequest::decode(&payload)?;
                match m.request {
                    GlobalReq::Keepalive | GlobalReq::HostKeys(_) | GlobalReq::Other { .. }
                        if m.want_reply =>
                    {
                        // Unknown or informational: refuse, as OpenSSH does.
                        self.send(msg::RequestFailure.encode())
                    }
                    GlobalReq::Keepalive | GlobalReq::HostKeys(_) | GlobalReq::Other { .. } => {
                        Ok(())
                    }
                    GlobalReq::NoMoreSessions => {
                        self.channels.no_more_sessions = true;
                        Ok(())
                    }
                    request => {
                        if m.want_reply {
                            self.channels.global_replies_we_owe += 1;
                        }
                        self.events.push_back(Event::GlobalRequest {
                            want_reply: m.want_reply,
                            request,
                        });
                        Ok(())
                    }
                }
            }
            num::REQUEST_SUCCESS | num::REQUEST_FAILURE => {
                if self.channels.global_replies_owed_to_us == 0 {
                    return Err(Error::Protocol("global reply nobody asked for"));
                }
                self.channels.global_replies_owed_to_us -= 1;
                let (success, data) = if n == num::REQUEST_SUCCESS {
                    (true, msg::RequestSuccess::decode(&payload)?.0)
                } else {
                    msg::RequestFailure::decode(&payload)?;
                    (false, Vec::new())
                };
                self.events.push_back(Event::GlobalReply { success, data });
                Ok(())
            }
            _ => self.unimplemented(self.reader.seq.wrapping_sub(1)),
        }
    }

    pub(super) fn on_data(&mut self, id: u32, code: Option<u32>, data: Vec<u8>) -> Result<()> {
        let max_packet = self.config.max_packet as usize;
        let ch = self.channels.peer(id)?;
        if ch.state != ChanState::Open || ch.recv_eof {
            return Err(Error::Protocol("data on a channel not open for data"));
        }
        if data.len() > max_packet || data.len() > ch.local_window as usize {
            return Err(Error::Protocol(
                "peer sent more data than the window allows",
            ));
        }
        ch.local_window -= data.len() as u32;
        ch.tuner.on_data(data.len(), self.now);
        let closing = ch.sent_close;
        self.stats.data_received += data.len() as u64;
        if closing {
            // Closing: data is dropped, the window no longer matters.
            return Ok(());
        }
        self.events.push_back(match code {
            None => Event::Data { id, data },
            Some(code) => Event::ExtendedData { id, code, data },
        });
        Ok(())
    }

    fn on_channel_open(&mut self, payload: &[u8]) -> Result<()> {
        let m = msg::ChannelOpen::decode(payload)?;
        let refuse = |this: &mut Self, reason_code: u32, text: &str| {
            let f = msg::ChannelOpenFailure {
                recipient: m.sender,
                reason: reason_code,
                description: text.to_string(),
                language: String::new(),
            };
            this.send(f.encode())
        };
        let session = matches!(m.kind, ChannelKind::Session);
        if session && (self.role == Role::Client || self.channels.no_more_sessions) {
            return refuse(
                self,
                msg::open_failure::ADMINISTRATIVELY_PROHIBITED,
                "session channels not allowed",
            );
        }
        if m.max_packet == 0 {
            return refuse(
                self,
                msg::open_failure::ADMINISTRATIVELY_PROHIBITED,
                "zero maximum packet size",
            );
        }
        let ch = Channel::new(
            ChanState::PeerOpening,
            m.sender,
            self.config.window,
            m.initial_window,
            m.max_packet,
        );
        let Some(id) = self.channels.insert(self.config.max_channels, ch) else {
            return refuse(
                self,
                msg::open_failure::RESOURCE_SHORTAGE,
                "too many channels",
            );
        };
        self.events
            .push_back(Event::ChannelOpenRequest { id, kind: m.kind });
        Ok(())
    }
}

#[cfg(test)]
mod tuner_tests {
    use super::{Tuner, GROWTH};
    use std::time::{Duration, Instant};

    const MIB: u32 = 1 << 20;

    /// A peer held back by the window on a 100 ms path moves seven eighths
    /// of a window per round trip (credit comes back every eighth): the
    /// window grows each round trip, at most [`GROWTH`] times, up to the
    /// maximum.
    #[test]
    fn a_window_limited_path_doubles_the_window_up_to_the_maximum() {
        let (mut t, t0) = (Tuner::default(), Instant::now());
        let rtt = Duration::from_millis(100);
        let (mut window, max) = (2 * MIB, 32 * MIB);
        let mut now = t0;
        let mut seen = vec![window];
        for _ in 0..8 {
            // The peer had no credit left when this adjust left; what it
            // sends next arrives a round trip later, all but the eighth
            // still unreturned.
            let w = t.on_adjust(window - window / 8, 0, window, max, now);
            if w != window {
                seen.push(w);
            }
            window = w;
            now += rtt;
            t.on_data((window - window / 8) as usize, now);
        }
        assert_eq!(t.rtt, Some(rtt));
        assert_eq!(seen.last(), Some(&max), "{seen:?}");
        assert!(
            seen.windows(2)
                .all(|p| f64::from(p[1]) <= GROWTH * f64::from(p[0])),
            "{seen:?}"
        );
    }

    /// A session that roams from a LAN (50 µs) to a 100 ms path: after
    /// the new path the tuner measures its round trip again and the window
    /// grows; without `new_path` it would keep the LAN's round trip and the
    /// initial window.
    #[test]
    fn a_new_path_measures_its_own_round_trip() {
        let (mut t, mut now) = (Tuner::default(), Instant::now());
        let (window, max) = (2 * MIB, 32 * MIB);
        for _ in 0..20 {
            assert_eq!(t.on_adjust(MIB, MIB, window, max, now), window);
            now += Duration::from_micros(50);
            t.on_data(MIB as usize + 1, now);
            now += Duration::from_millis(1);
        }
        assert_eq!(t.rtt, Some(Duration::from_micros(50)));
        // A probe left just before the cut; its reply comes on the new path
        // after a 30 s outage, and must not count.
        assert_eq!(t.on_adjust(MIB, MIB, window, max, now), window);
        now += Duration::from_secs(30);
        t.new_path();
        let rtt = Duration::from_millis(100);
        let mut grown = window;
        for _ in 0..4 {
            grown = t.on_adjust(grown - grown / 8, 0, grown, max, now);
            now += rtt;
            t.on_data((grown - grown / 8) as usize, now);
        }
        assert_eq!(t.rtt, Some(rtt));
        assert!(grown > window, "the window stayed at {grown}");
    }

    /// Loopback: a short round trip keeps the initial window however fast
    /// the data moves (1 GB/s, 50 µs: the product is 50 kB).
    #[test]
    fn a_short_round_trip_keeps_the_initial_window() {
        let (mut t, mut now) = (Tuner::default(), Instant::now());
        let window = 2 * MIB;
        for _ in 0..100 {
            assert_eq!(t.on_adjust(MIB, MIB, window, 32 * MIB, now), window);
            now += Duration::from_micros(50);
            t.on_data(MIB as usize + 1, now);
            now += Duration::from_millis(1);
        }
    }
}
