//! The privileged side of resshd's privilege separation: configuration in
//! sshd_config syntax, authorization policy, authorized_keys, and the
//! per-connection monitor that answers its unprivileged workers.

pub mod authkeys;
pub mod command;

pub mod config;
pub mod fleet;
pub mod gate;
pub mod hostkeys;
pub mod keepalive;
pub mod keys_command;
pub mod log;
pub mod loginrec;
pub mod monitor;
pub mod pam;
pub mod policy;
pub mod proxy;
pub mod revoked;
