//! The parts of ressh's resilience extensions that are the same for SSH
//! (docs/PROTOCOL.md, counting messages) and TLS (docs/restls.md, counting
//! bytes):
//!
//! - [`Retransmit`]: data sent and not yet acknowledged, kept for
//!   retransmission after a reconnect, freed by the peer's receive count,
//!   which is checked against what was actually sent;
//! - [`netwatch`]: what makes a client reconnect before TCP notices a broken
//!   path (route and address changes, resume from suspend);
//! - [`suspect`]: when a client suspects a silently dead path (probes
//!   unanswered for a few smoothed round trips);
//! - [`sd_notify`]: what both daemons (resshd, restls) tell systemd.

pub mod netwatch;
mod retransmit;
pub mod sd_notify;
pub mod suspect;

pub use retransmit::{OutOfRange, Retransmit, Unit};
