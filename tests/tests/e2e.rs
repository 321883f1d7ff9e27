//! End-to-end tests of resilient sessions (issue 5): ressh against resshd
//! (and against stock OpenSSH) in network namespaces the tests create, with
//! addresses from 198.18.0.0/15, or on loopback. One scenario per module;
//! each module's doc says what it does and what it prints (run with
//! `-- --nocapture` to see the measurements).
//!
//! | issue 5 item | module |
//! |---|---|
//! | 1. sftp down/up and a `-L` stream with a kill every second | `transfer` |
//! | 2. counter through 50 mixed disruptions | `disruptions` |
//! | 3. roaming to a new address | `roaming` |
//! | 4. 10 minutes blackholed with the client stopped | `long.rs` |
//! | 5. detach timeout | `detach` |
//! | 6. attacks on the reconnect, AllowUsers on a new address | `attacks` |
//! | 7. backpressure and memory | `backpressure` |
//! | 8. stock OpenSSH on either side | `legacy` |
//! | 9. resshd restarted while a session is detached | `restart` |
//! | issue 24 / issue 13 hole 9: reconnects refused for seconds | `refused` |
//! | issue 24 targets: mass reconnects, also during a flood | `mass` |
//! | issue 23: a silently dropped flow noticed in about a second | `suspicion` |
//! | issue 21: `~R` and a resume from suspend make ressh reconnect | `triggers` |
//! | issue 15: the newest Debian OpenSSH (sid) both ways, every hybrid method × host key type | `newest_openssh` |
//! | issue 15: P-384 and P-521 host and user keys, both directions with Debian OpenSSH | `key_types` |
//! | issue 15: FIDO user keys (sk-dummy.so) against resshd and sshd alike | `security_keys` |
//! | issue 15: sshd_config SetEnv, the same session environment as under sshd | `set_env` |
//! | issue 15: `ressh -Q` as the newest `ssh -Q`, `resshd -T` key algorithms as `sshd -T` | `queries` |
//! | issue 15: post-quantum key exchanges against Debian 12's OpenSSH | `pqkex` |
//! | issue 15: ssh-audit (PyPI) flags nothing in resshd's defaults the newest sshd passes | `ssh_audit` |
//! | issue 16: ChrootDirectory and the in-process internal-sftp, as sshd's, resilient in the jail | `chroot` |
//! | issue 16: OpenSSH user and host certificates (stock ssh-keygen -s and ssh) | `certs` |
//! | issue 16: AuthorizedKeysCommand (as sshd runs it, and bounded) and RevokedKeys (lists, KRLs) | `keys_command` |
//! | issue 17: agent forwarding both ways with stock ssh-agent/ssh/sshd, across a cut | `agent_forwarding` |
//! | issue 17: X11 forwarding by resshd under Xvfb, as sshd does it; a `ressh -A -X` shell through a cut | `x11_forwarding` |
//! | issue 17: connection sharing (ControlMaster, PROTOCOL.mux) both ways with stock ssh, through a cut | `mux` |
//! | issue 17: rsync, git, sftp/scp -S, Ansible with ressh as their ssh, through cuts | `tools` |
//! | issue 17: compression (zlib@openssh.com) both ways with stock ssh/sshd, through cuts, a zip bomb | `compression` |
//! | issue 22: Unix-socket forwarding (-L/-R with paths) as sshd's, its refusals, StreamLocalBind* | `streamlocal` |
//! | issue 19: channel windows grow past 2 MiB through a 100 ms delay relay, ressh and stock ssh | `window` |
//!
//! | issue 13 hole | module |
//! |---|---|
//! | 1, 2, 12. a user against their own worker, a second resshd | `hostile_user` |
//! | 5. a client that never acknowledges and floods requests | `backpressure` |
//! | 10. a session worker that lies (the user took it over) | `hostile_user` |
//! | 11. a client that vanished without FIN/RST, default configuration | `vanished` |
//!
//! | issue 21 item | module |
//! |---|---|
//! | resshd's RekeyLimit by bytes and by time, seen by stock ssh | `rekey` |
//! | issue 22, regress `rekey`: RekeyLimit 16, copies both ways with stock ssh | `rekey` |
//!
//! All tests need root and the workspace's binaries (`cargo build
//! --workspace`; `cargo test --workspace` builds them). They fail, never
//! skip, when something is missing.
//!
//! One binary on purpose: Cargo runs test binaries one after another, while
//! libtest runs the tests of one binary in parallel (`--test-threads=2` in
//! CI), starting them in the order of their names.

mod common;

// The 10-minute test (tests/long.rs) is named to sort first, so it starts
// at once and the other tests run beside it on the second thread.
#[path = "long.rs"]
mod a_long;

mod agent_forwarding;
mod attacks;
mod backpressure;
mod balancer;
mod certs;
mod chroot;
mod compression;
mod detach;
mod disruptions;
mod hostile_user;
mod key_types;
mod keys_command;
mod legacy;
mod mass;
mod mux;
mod newest_openssh;
mod pqkex;
mod queries;
mod readmission;
mod refused;
mod rekey;
mod restart;
mod roaming;
mod security_keys;
mod set_env;
mod ssh_audit;
mod streamlocal;
mod suspect_kit;
mod suspicion;
mod tools;
mod transfer;
mod triggers;
mod vanished;
mod window;
mod x11_forwarding;
