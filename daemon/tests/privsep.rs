//! resshd's privilege separation, read from /proc while connections live
//! (docs/ARCHITECTURE.md): the pre-auth worker runs as the privsep user in its
//! empty chroot with no_new_privs and a seccomp filter; the session worker
//! runs as the authenticated user with the user's groups; and no
//! unprivileged process holds a host key, neither as an open file nor
//! anywhere in its memory, while the root monitor does (which shows that
//! the memory scan finds each key, in each form looked for, where it is).
//!
//! Every test needs root and fails without it.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{
    alive, children, comm, descendants_named, ed25519_seed, fd_targets, memory_contains, ppid,
    status_field, status_ids, wait_for, Bg, Login, Server, TestGroup,
};
use ressh_testkit::require_root;

/// One host private key's secret in one encoding, to look for in memory.
struct Secret {
    key: &'static str,
    form: &'static str,
    bytes: Vec<u8>,
    /// The root monitor holds the key in this form: the form OpenSSL
    /// keeps a loaded key in (for ed25519, the seed). The big-endian forms
    /// of files and wire buffers are in no live process of resshd (the
    /// monitor keeps no decoded key file): no positive control for them.
    in_monitor: bool,
}

/// Every host private key of `srv` as byte strings to look for in memory:
/// the ed25519 seed as stored, and the secret numbers of the RSA and ECDSA
/// keys both big-endian (as in files and wire buffers) and little-endian
/// (OpenSSL's BIGNUM words on x86_64).
fn host_secrets(srv: &Server) -> Vec<Secret> {
    let mut v = vec![Secret {
        key: "ed25519",
        form: "seed",
        bytes: ed25519_seed(&srv.host_key_file("ed25519")),
        in_monitor: true,
    }];
    let load = |kind: &str| {
        let pem = fs::read(srv.host_key_file(kind)).unwrap();
        ressh_proto::keys::PrivateKey::from_openssh_pem(&pem).unwrap()
    };
    let rsa = load("rsa");
    let d = rsa.pkey().rsa().unwrap().d().to_vec();
    let ec = load("ecdsa");
    let s = ec.pkey().ec_key().unwrap().private_key().to_vec();
    for (key, be) in [("rsa d", d), ("ecdsa scalar", s)] {
        let mut le = be.clone();
        le.reverse();
        v.push(Secret {
            key,
            form: "big-endian",
            bytes: be,
            in_monitor: false,
        });
        v.push(Secret {
            key,
            form: "little-endian",
            bytes: le,
            in_monitor: true,
        });
    }
    v
}

/// The positive control of the memory scans: every host key is found in
/// the root monitor's memory (which holds them all to sign), in the form
/// a loaded key takes, so a scan that cannot find a key (a wrong
/// encoding, unreadable memory) fails here instead of passing the "not
/// in the worker" assertions.
fn assert_monitor_holds_every_key(secrets: &[Secret], monitor: u32) {
    let missing: Vec<String> = secrets
        .iter()
        .filter(|s| s.in_monitor && !memory_contains(monitor, &s.bytes).0)
        .map(|s| format!("{} ({})", s.key, s.form))
        .collect();
    assert!(
        missing.is_empty(),
        "the memory scan must find every host key in the monitor (pid {monitor}); not found: {missing:?}"
    );
}

/// Asserts that no fd of `pid` points at a host key or its directory's
/// files other than the log.
fn assert_no_key_fds(srv: &Server, pid: u32, who: &str) {
    let keydir = srv.resshd.server.dir().display().to_string();
    for t in fd_targets(pid) {
        assert!(
            !t.contains("ssh_host_"),
            "{who} (pid {pid}) has a host key open: {t}"
        );
        assert!(
            !t.starts_with(&keydir) || t.ends_with(".log"),
            "{who} (pid {pid}) has a file of the server's directory open: {t}"
        );
    }
}

/// Asserts that none of the host secrets is anywhere in `pid`'s memory.
fn assert_no_secrets_in_memory(secrets: &[Secret], pid: u32, who: &str) {
    for s in secrets {
        let (found, scanned) = memory_contains(pid, &s.bytes);
        assert!(
            !found,
            "the host key's {} ({}) is in the memory of {who} (pid {pid})",
            s.key, s.form
        );
        assert!(
            scanned > 512 * 1024,
            "only {scanned} bytes of {who}'s memory could be read"
        );
    }
}

fn exe(pid: u32) -> String {
    fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Waits for exactly one live descendant of resshd named `name`.
fn one_worker(srv: &Server, name: &str) -> u32 {
    wait_for(
        &format!("a {name} process under resshd"),
        Duration::from_secs(20),
        || {
            let v = descendants_named(srv.pid(), name);
            (v.len() == 1).then(|| v[0])
        },
        || srv.log(),
    )
}

#[test]
fn kex_worker_is_confined_and_holds_no_host_key() {
    require_root();
    let srv = Server::start("");
    let secrets = host_secrets(&srv);

    // A connection that stops after the version exchange: the kex worker
    // waits for our KEXINIT.
    let mut probe = TcpStream::connect(("127.0.0.1", srv.port())).unwrap();
    probe.write_all(b"SSH-2.0-probe\r\n").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut first = [0u8; 8];
    probe.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"SSH-2.0-", "resshd's version line");

    let kex = one_worker(&srv, "resshd-kex");
    let monitor = ppid(kex).unwrap();
    assert_eq!(ppid(monitor), Some(srv.pid()), "monitor is resshd's child");
    assert_eq!(comm(monitor), "resshd");
    assert!(
        exe(kex).ends_with("/resshd-kex"),
        "the kex worker is exec'd fresh: {}",
        exe(kex)
    );

    // The privsep user, everywhere: real, effective, saved, fs ids.
    let ps = &srv.resshd.privsep_user;
    assert_eq!(status_ids(kex, "Uid"), vec![ps.uid; 4], "Uid of resshd-kex");
    assert_eq!(status_ids(kex, "Gid"), vec![ps.gid; 4], "Gid of resshd-kex");
    assert_eq!(
        status_ids(kex, "Groups"),
        vec![ps.gid],
        "Groups of resshd-kex"
    );
    assert_eq!(status_field(kex, "CapEff"), "0000000000000000");
    assert_eq!(status_field(kex, "CapPrm"), "0000000000000000");
    assert_eq!(status_field(kex, "NoNewPrivs"), "1");
    assert_eq!(status_field(kex, "Seccomp"), "2", "seccomp filter mode");
    // The monitor stays root.
    assert_eq!(status_ids(monitor, "Uid"), vec![0; 4]);

    // Its root and cwd are the empty chroot directory.
    let chroot = fs::canonicalize(&srv.resshd.chroot).unwrap();
    assert_eq!(
        fs::read_link(format!("/proc/{kex}/root")).unwrap(),
        chroot,
        "root of resshd-kex"
    );
    assert_eq!(
        fs::read_link(format!("/proc/{kex}/cwd")).unwrap(),
        chroot,
        "cwd of resshd-kex"
    );
    assert_eq!(fs::read_dir(&chroot).unwrap().count(), 0, "chroot is empty");

    // No host key: not as a file, not in memory. The monitor has them.
    assert_no_key_fds(&srv, kex, "resshd-kex");
    for t in fd_targets(kex) {
        assert!(
            t.starts_with("socket:")
                || t.starts_with("pipe:")
                || t == "/dev/null"
                || t.ends_with(".log")
                || t.starts_with("anon_inode:"),
            "unexpected fd of resshd-kex: {t}"
        );
    }
    assert_no_secrets_in_memory(&secrets, kex, "resshd-kex");
    assert_monitor_holds_every_key(&secrets, monitor);

    // The probe is still served: the worker is alive until we go.
    assert!(alive(kex));
    drop(probe);
    wait_for(
        "the kex worker and the monitor to exit",
        Duration::from_secs(10),
        || (!alive(kex) && !alive(monitor)).then_some(()),
        || srv.log(),
    );
    srv.assert_healthy();
}

#[test]
fn session_worker_runs_as_the_user_and_holds_no_host_key() {
    require_root();
    let login = Login::new("psess");
    let group = TestGroup::create("ps");
    group.add(&login.user);
    let srv = Server::start("");
    let secrets = host_secrets(&srv);

    let ssh = Bg::spawn(srv.ssh(&login, &[]).arg("sleep 30"));
    let session = one_worker(&srv, "resshd-session");
    let monitor = ppid(session).unwrap();
    assert_eq!(ppid(monitor), Some(srv.pid()), "monitor is resshd's child");
    assert!(
        exe(session).ends_with("/resshd-session"),
        "the session worker is exec'd fresh: {}",
        exe(session)
    );
    // The kex worker of this connection is gone after the hand-over.
    assert!(
        descendants_named(srv.pid(), "resshd-kex").is_empty(),
        "the kex worker must exit after authentication"
    );

    let u = &login.user;
    assert_eq!(status_ids(session, "Uid"), vec![u.uid; 4], "Uid");
    assert_eq!(status_ids(session, "Gid"), vec![u.gid; 4], "Gid");
    let mut groups = status_ids(session, "Groups");
    groups.sort_unstable();
    let mut want = vec![u.gid, group.gid];
    want.sort_unstable();
    assert_eq!(groups, want, "Groups of resshd-session");
    assert_eq!(status_field(session, "CapEff"), "0000000000000000");
    assert_eq!(status_field(session, "CapPrm"), "0000000000000000");
    assert_eq!(
        status_ids(monitor, "Uid"),
        vec![0; 4],
        "the monitor is root"
    );

    // The command runs below the session worker, as the user too.
    let cmd = wait_for(
        "the user's sleep",
        Duration::from_secs(10),
        || descendants_named(session, "sleep").first().copied(),
        || format!("children: {:?}\n{}", children(session), srv.log()),
    );
    assert_eq!(status_ids(cmd, "Uid"), vec![u.uid; 4]);

    // No host key in any process running as the user or the privsep user.
    let mut unprivileged = u.processes();
    unprivileged.extend(srv.resshd.privsep_user.processes());
    assert!(unprivileged.contains(&session) && unprivileged.contains(&cmd));
    for pid in unprivileged {
        let who = format!("{} ({})", comm(pid), exe(pid));
        assert_no_key_fds(&srv, pid, &who);
        assert_no_secrets_in_memory(&secrets, pid, &who);
    }
    assert_monitor_holds_every_key(&secrets, monitor);
    assert!(
        Path::new(&format!("/proc/{}", ssh.pid())).exists(),
        "ssh still runs"
    );
    drop(ssh);
    srv.assert_healthy();
}
