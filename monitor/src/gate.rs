//! The monitor's table of which request a worker may make, and when.
//!
//! As OpenSSH's `mon_dispatch_proto20` with MON_ONCE/MON_AUTH/MON_PERMIT:
//! each request a worker can send is allowed only in certain phases and a
//! bounded number of times, and its size is checked before the monitor acts
//! on it. A request the table refuses is a protocol violation: the monitor
//! logs it and kills the worker. The table is sans-IO, so every request is
//! tested in every phase without processes (see the tests below).
//!
//! The workers are hostile: the kex worker parses the network; the session
//! worker runs as the user, who can kill it or (were it dumpable) control it.
//! The table is the second line of defence; the first is that the session
//! worker is not dumpable (`ressh_ipc::harden`).

use std::time::{Duration, Instant};

use ressh_ipc::msg::{FromKex, FromSession, MAX_LOG_LEN};

/// Host key proofs a session gets (`hostkeys-prove-00@openssh.com`): ssh
/// asks once per connection; each costs the root monitor one signature per
/// key, so a user's session cannot make it sign without end.
pub const MAX_PROOFS: u32 = 8;
/// Keys one proof may name, and the size of a key blob.
pub const MAX_PROVED_KEYS: usize = 16;
pub const MAX_KEY_BLOB: usize = 16 << 10;

/// Lengths of the exchange hashes of the key exchanges a connection may
/// run (its configured methods' hashes): the only data a host key signs.
/// SHA-1's 20 bytes only where a SHA-1 method is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashLengths(Vec<usize>);

impl HashLengths {
    pub fn of<S: AsRef<str>>(kex_methods: &[S]) -> HashLengths {
        let mut v: Vec<usize> = kex_methods
            .iter()
            .filter_map(|n| ressh_proto::kex::method(n.as_ref()).ok())
            .map(|m| m.hash.output_len())
            .collect();
        v.sort_unstable();
        v.dedup();
        HashLengths(v)
    }

    fn check(&self, data: &[u8]) -> Result<(), Violation> {
        if self.0.contains(&data.len()) {
            Ok(())
        } else {
            Err(Violation::NotAnExchangeHash(data.len()))
        }
    }
}

impl Default for HashLengths {
    /// Those of the default methods.
    fn default() -> Self {
        HashLengths::of(ressh_proto::kex::KEX_ALGS)
    }
}

/// Most resume tokens a session answers to at once, and their length.
pub const MAX_TOKENS: usize = 4;
pub const TOKEN_LEN: usize = 32;

/// A request the table refuses: the worker broke the protocol between
/// the processes, and the monitor kills it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("more host key proofs than a client asks for")]
    TooManyProofs,
    #[error("signature asked over {0} bytes, not an exchange hash")]
    NotAnExchangeHash(usize),
    #[error("a log line of {0} bytes (at most {MAX_LOG_LEN})")]
    LogLineTooLong(usize),
    #[error("a second host-key signature before auth")]
    SecondSignatureBeforeAuth,
    #[error("auth request out of order")]
    AuthOutOfOrder,
    #[error("kex worker claims success the monitor did not grant")]
    UngrantedSuccess,
    #[error("reconnect request after a key exchange")]
    ReconnectAfterKex,
    #[error("a second host-key signature in one key exchange")]
    SecondSignatureInKex,
    #[error("bad resume tokens")]
    BadTokens,
    #[error("a reconnect verdict nobody asked for")]
    UnaskedVerdict,
    #[error("a tty name too long")]
    TtyTooLong,
}

/// A log line from a worker: any time, at most [`MAX_LOG_LEN`] bytes (the
/// worker cuts its lines to that; a longer one is no line of ours).
fn log_length(text: &str) -> Result<(), Violation> {
    if text.len() > MAX_LOG_LEN {
        return Err(Violation::LogLineTooLong(text.len()));
    }
    Ok(())
}

/// A kex worker's request, as far as the table looks at it.
#[derive(Debug, Clone, Copy)]
pub enum KexRequest<'a> {
    Sign(&'a [u8]),
    Auth,
    Authenticated,
    Reconnect,
    Log(&'a str),
}

impl<'a> From<&'a FromKex> for KexRequest<'a> {
    fn from(m: &'a FromKex) -> Self {
        match m {
            FromKex::Sign { data, .. } => KexRequest::Sign(data),
            FromKex::Auth { .. } => KexRequest::Auth,
            FromKex::Authenticated { .. } => KexRequest::Authenticated,
            FromKex::Reconnect { .. } => KexRequest::Reconnect,
            FromKex::Log(text) => KexRequest::Log(text),
        }
    }
}

/// The kex worker's phase, as the monitor saw it.
#[derive(Debug, Default)]
pub struct KexGate {
    /// The one exchange hash was signed (MON_ONCE): it is the session id.
    signed: bool,
    /// The new connection asked to resume a session instead.
    reconnect: bool,
    hashes: HashLengths,
}

impl KexGate {
    /// A gate for a connection whose key exchanges have these hashes.
    pub fn new(hashes: HashLengths) -> KexGate {
        KexGate {
            hashes,
            ..KexGate::default()
        }
    }

    /// Checks `m` against the phase (`accepted`: the monitor itself
    /// accepted a user) and advances it.
    pub fn check(&mut self, m: KexRequest<'_>, accepted: bool) -> Result<(), Violation> {
        match m {
            KexRequest::Sign(data) => {
                if accepted || self.signed || self.reconnect {
                    return Err(Violation::SecondSignatureBeforeAuth);
                }
                self.hashes.check(data)?;
                self.signed = true;
            }
            KexRequest::Auth => {
                if !self.signed || accepted {
                    return Err(Violation::AuthOutOfOrder);
                }
            }
            KexRequest::Authenticated => {
                if !accepted {
                    return Err(Violation::UngrantedSuccess);
                }
            }
            KexRequest::Reconnect => {
                if self.signed || self.reconnect {
                    return Err(Violation::ReconnectAfterKex);
                }
                self.reconnect = true;
            }
            // In any phase (the rate is the monitor's [`LogBudget`]).
            KexRequest::Log(text) => log_length(text)?,
        }
        Ok(())
    }
}

/// The session worker's phase, as the monitor saw it.
#[derive(Debug)]
pub struct SessionGate {
    /// A rekey's signature may be given: once per key exchange the worker
    /// completes (`FromSession::KexDone`), never twice in a row.
    may_sign: bool,
    /// Routed reconnects awaiting the worker's verdict.
    validating: u32,
    hashes: HashLengths,
    /// Host key proofs given so far.
    proofs: u32,
}

impl Default for SessionGate {
    fn default() -> Self {
        SessionGate {
            may_sign: true,
            validating: 0,
            hashes: HashLengths::default(),
            proofs: 0,
        }
    }
}

impl SessionGate {
    /// A gate for a session whose key exchanges have these hashes.
    pub fn new(hashes: HashLengths) -> SessionGate {
        SessionGate {
            hashes,
            ..SessionGate::default()
        }
    }

    /// The monitor sent the worker a reconnect request to validate.
    pub fn asked_verdict(&mut self) {
        self.validating += 1;
    }

    /// Checks `m` against the phase and advances it.
    pub fn check(&mut self, m: &FromSession) -> Result<(), Violation> {
        match m {
            FromSession::Sign { data, .. } => {
                if !self.may_sign {
                    return Err(Violation::SecondSignatureInKex);
                }
                self.hashes.check(data)?;
                self.may_sign = false;
            }
            FromSession::KexDone => self.may_sign = true,
            FromSession::Tokens(t) => {
                if t.len() > MAX_TOKENS || t.iter().any(|x| x.len() != TOKEN_LEN) {
                    return Err(Violation::BadTokens);
                }
            }
            FromSession::ReconnectVerdict { .. } => {
                if self.validating == 0 {
                    return Err(Violation::UnaskedVerdict);
                }
                self.validating -= 1;
            }
            FromSession::LoginStarted { tty, .. } | FromSession::LoginEnded { tty } => {
                if tty.len() > 64 {
                    return Err(Violation::TtyTooLong);
                }
            }
            FromSession::Log(text) => log_length(text)?,
            FromSession::ProveHostKeys(blobs) => {
                if blobs.len() > MAX_PROVED_KEYS
                    || blobs.iter().any(|b| b.len() > MAX_KEY_BLOB)
                    || self.proofs >= MAX_PROOFS
                {
                    return Err(Violation::TooManyProofs);
                }
                self.proofs += 1;
            }
            FromSession::Detached | FromSession::Attached => {}
        }
        Ok(())
    }
}

/// Log lines a worker may have written at once, and how many more it gets
/// per second: a worker (the user's, or a compromised kex worker) cannot
/// flood resshd's log. Lines over the budget are dropped and counted; the
/// count is reported once lines pass again.
pub const LOG_BURST: u32 = 100;
pub const LOG_PER_SEC: u32 = 10;

/// A token bucket of [`LOG_BURST`] lines refilled at [`LOG_PER_SEC`].
#[derive(Debug)]
pub struct LogBudget {
    tokens: u32,
    since: Instant,
    dropped: u64,
}

/// What to do with one log line.
#[derive(Debug, PartialEq, Eq)]
pub enum LogVerdict {
    /// Write it; `dropped` lines were suppressed before it (say so first).
    Write {
        dropped: u64,
    },
    Drop,
}

impl LogBudget {
    pub fn new(now: Instant) -> LogBudget {
        LogBudget {
            tokens: LOG_BURST,
            since: now,
            dropped: 0,
        }
    }

    pub fn take(&mut self, now: Instant) -> LogVerdict {
        let tick = Duration::from_secs(1) / LOG_PER_SEC;
        let elapsed = now.saturating_duration_since(self.since);
        let earned = (elapsed.as_nanos() / tick.as_nanos()).min(LOG_BURST as u128) as u32;
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(LOG_BURST);
            self.since = if self.tokens == LOG_BURST {
                now
            } else {
                self.since + tick * earned
            };
        }
        if self.tokens == 0 {
            self.dropped += 1;
            return LogVerdict::Drop;
        }
        self.tokens -= 1;
        LogVerdict::Write {
            dropped: std::mem::take(&mut self.dropped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KexRequest::{Auth, Authenticated, Reconnect};

    const ZEROS: [u8; 4096] = [0; 4096];

    fn sign(n: usize) -> KexRequest<'static> {
        KexRequest::Sign(&ZEROS[..n])
    }

    fn ssign(n: usize) -> FromSession {
        FromSession::Sign {
            key: vec![],
            alg: "ssh-ed25519".into(),
            data: vec![0; n],
        }
    }

    #[test]
    fn kex_worker_gets_one_signature_of_a_hash() {
        for n in [0, 1, 20, 31, 33, 1000] {
            assert!(KexGate::default().check(sign(n), false).is_err(), "{n}");
        }
        // SHA-1's hash only with a SHA-1 method configured.
        let sha1 = HashLengths::of(&["curve25519-sha256", "diffie-hellman-group14-sha1"]);
        assert_eq!(sha1, HashLengths(vec![20, 32]));
        KexGate::new(sha1).check(sign(20), false).unwrap();
        for n in [32, 48, 64] {
            let mut g = KexGate::default();
            g.check(sign(n), false).unwrap();
            // MON_ONCE: a second signature (a pre-auth rekey, or an oracle).
            assert!(g.check(sign(n), false).is_err());
        }
        // Not after auth either.
        assert!(KexGate::default().check(sign(32), true).is_err());
    }

    #[test]
    fn kex_worker_auth_only_after_the_kex_and_before_success() {
        let mut g = KexGate::default();
        assert!(g.check(Auth, false).is_err());
        g.check(sign(32), false).unwrap();
        g.check(Auth, false).unwrap();
        g.check(Auth, false).unwrap();
        assert!(g.check(Auth, true).is_err());
    }

    #[test]
    fn kex_worker_success_only_when_the_monitor_granted_it() {
        let mut g = KexGate::default();
        g.check(sign(32), false).unwrap();
        assert!(g.check(Authenticated, false).is_err());
        g.check(Authenticated, true).unwrap();
    }

    #[test]
    fn kex_worker_reconnect_only_instead_of_a_kex() {
        let mut g = KexGate::default();
        g.check(Reconnect, false).unwrap();
        assert!(g.check(Reconnect, false).is_err());
        assert!(g.check(sign(32), false).is_err());
        let mut g = KexGate::default();
        g.check(sign(32), false).unwrap();
        assert!(g.check(Reconnect, false).is_err());
    }

    #[test]
    fn session_worker_gets_one_signature_per_key_exchange() {
        let mut g = SessionGate::default();
        for n in [0, 16, 100, 4096] {
            assert!(g.check(&ssign(n)).is_err(), "{n}");
        }
        g.check(&ssign(32)).unwrap();
        assert!(g.check(&ssign(32)).is_err(), "twice without a kex");
        g.check(&FromSession::KexDone).unwrap();
        g.check(&ssign(64)).unwrap();
        assert!(g.check(&ssign(64)).is_err());
    }

    #[test]
    fn session_worker_verdicts_only_when_asked() {
        let mut g = SessionGate::default();
        let v = || FromSession::ReconnectVerdict {
            id: 1,
            result: Ok(()),
        };
        assert!(g.check(&v()).is_err());
        g.asked_verdict();
        g.check(&v()).unwrap();
        assert!(g.check(&v()).is_err());
    }

    /// Host key proofs: bounded in keys, blob size and number, so the
    /// user's worker cannot keep the root monitor signing.
    #[test]
    fn session_worker_host_key_proofs_are_bounded() {
        let mut g = SessionGate::default();
        let prove = |n: usize, len: usize| FromSession::ProveHostKeys(vec![vec![0; len]; n]);
        assert!(g.check(&prove(MAX_PROVED_KEYS + 1, 10)).is_err());
        assert!(g.check(&prove(1, MAX_KEY_BLOB + 1)).is_err());
        for _ in 0..MAX_PROOFS {
            g.check(&prove(MAX_PROVED_KEYS, 100)).unwrap();
        }
        assert_eq!(g.check(&prove(1, 10)), Err(Violation::TooManyProofs));
    }

    #[test]
    fn session_worker_tokens_and_ttys_are_bounded() {
        let mut g = SessionGate::default();
        g.check(&FromSession::Tokens(vec![vec![0; 32]; 4])).unwrap();
        assert!(g.check(&FromSession::Tokens(vec![vec![0; 32]; 5])).is_err());
        assert!(g.check(&FromSession::Tokens(vec![vec![0; 31]])).is_err());
        let tty = "/dev/pts/".to_string() + &"9".repeat(100);
        assert!(g
            .check(&FromSession::LoginEnded { tty: tty.clone() })
            .is_err());
        assert!(g.check(&FromSession::LoginStarted { tty, pid: 2 }).is_err());
        g.check(&FromSession::Detached).unwrap();
    }

    #[test]
    fn log_lines_in_every_phase_but_bounded() {
        let long = "x".repeat(MAX_LOG_LEN + 1);
        let ok = "y".repeat(MAX_LOG_LEN);
        // Kex worker: before the kex, after it, after auth, after a reconnect.
        let mut g = KexGate::default();
        g.check(KexRequest::Log(&ok), false).unwrap();
        g.check(sign(32), false).unwrap();
        g.check(KexRequest::Log("a"), false).unwrap();
        g.check(KexRequest::Log("a"), true).unwrap();
        assert!(g.check(KexRequest::Log(&long), false).is_err());
        assert!(g.check(KexRequest::Log(&long), true).is_err());
        let mut g = KexGate::default();
        g.check(Reconnect, false).unwrap();
        g.check(KexRequest::Log("a"), false).unwrap();
        // A log line changes no phase: the one signature is still due.
        let mut g = KexGate::default();
        g.check(KexRequest::Log("a"), false).unwrap();
        g.check(sign(32), false).unwrap();
        assert!(g.check(sign(32), false).is_err());
        // Session worker: any time, bounded, and no phase changes.
        let mut g = SessionGate::default();
        g.check(&FromSession::Log(ok.clone())).unwrap();
        assert!(g.check(&FromSession::Log(long.clone())).is_err());
        g.check(&ssign(32)).unwrap();
        g.check(&FromSession::Log("a".into())).unwrap();
        assert!(g.check(&ssign(32)).is_err(), "a log line is no KexDone");
        assert!(g
            .check(&FromSession::ReconnectVerdict {
                id: 1,
                result: Ok(())
            })
            .is_err());
        // From the decoded frame too.
        let m = FromKex::Log(long);
        assert!(KexGate::default().check((&m).into(), false).is_err());
    }

    #[test]
    fn log_lines_are_rate_limited_and_the_dropped_counted() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(t0);
        for _ in 0..LOG_BURST {
            assert_eq!(b.take(t0), LogVerdict::Write { dropped: 0 });
        }
        for _ in 0..1000 {
            assert_eq!(b.take(t0), LogVerdict::Drop);
        }
        // A tenth of a second later one line passes, saying how many went.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.take(t1), LogVerdict::Write { dropped: 1000 });
        assert_eq!(b.take(t1), LogVerdict::Drop);
        // A flood at the rate gets the rate, not more: 60 s, 10 000 lines.
        let mut written = 0;
        for i in 0..10_000u64 {
            if let LogVerdict::Write { .. } = b.take(t1 + Duration::from_micros(6000 * i)) {
                written += 1;
            }
        }
        assert!(
            (590..=LOG_PER_SEC * 60 + 1).contains(&written),
            "{written} lines in 60 s"
        );
        // After a quiet while the whole burst is back, and no more.
        let t2 = t1 + Duration::from_secs(3600);
        let mut n = 0;
        while let LogVerdict::Write { .. } = b.take(t2) {
            n += 1;
        }
        assert_eq!(n, LOG_BURST);
        // Time going backwards (it does not, but) is no gift either.
        assert_eq!(b.take(t0), LogVerdict::Drop);
    }
}
