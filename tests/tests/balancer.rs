//! Issue 20, the client's real address behind a load balancer: Debian's
//! HAProxy in TCP mode in front of resshd, sending the PROXY protocol (v1
//! and v2), and `ProxyProtocolFrom` naming it. resshd must see the client,
//! not the balancer: in its log, in `Match Address`, in SSH_CONNECTION, and
//! in a reconnect from the client's new address after it moved. A header is
//! believed only from a listed balancer; a listed balancer's connection
//! without one is dropped with a log line.
//!
//! Lab: HAProxy listens on 198.18.0.1:2300 in the server namespace and
//! connects to resshd at 198.18.0.1:22, so the balancer's address is
//! 198.18.0.1; the client is 198.18.1.2 (then 198.18.2.2 after a move).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ressh_testkit::{kill_tree, Resshd, TempDir};

use crate::common::*;

const FRONTEND: u16 = 2300;

/// resshd_config of these tests: the balancer is listed, and a `Match` on
/// the balancer's own address denies every login, so a login that works
/// proves resshd matched on the client's address.
const SERVER: &str = "ProxyProtocolFrom 198.18.0.1\nDetachTimeout 300\n\
                      Match Address 198.18.0.1\n    DenyUsers *\n";

/// HAProxy, foreground, in the server namespace; `send` is `send-proxy` (v1)
/// or `send-proxy-v2`. The lab user's config now points at it. Killed on
/// drop (and with the namespaces).
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn haproxy(lab: &Lab, send: &str) -> Haproxy {
    haproxy_to(lab, send, &[PORT], &[])
}

/// [`haproxy`] balancing round robin over resshd on each of `ports`;
/// `extra_keys`: more resshd whose host keys the client must know (a
/// fleet's other nodes).
fn haproxy_to(lab: &Lab, send: &str, ports: &[u16], extra_keys: &[&Resshd]) -> Haproxy {
    let cfg = lab.dir.join(format!("haproxy-{send}.cfg"));
    let servers: String = ports
        .iter()
        .map(|p| format!("    server n{p} 198.18.0.1:{p} {send}\n"))
        .collect();
    fs::write(
        &cfg,
        format!(
            "global\n    maxconn 64\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n\
             \x20   retries 2\n    option redispatch 1\n\
             frontend fe\n    bind 198.18.0.1:{FRONTEND}\n    default_backend be\n\
             backend be\n    balance roundrobin\n{servers}"
        ),
    )
    .unwrap();
    let child = lab
        .net
        .cmd_server("haproxy")
        .args(["-db", "-f"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy (Debian package haproxy) must be installed");
    let h = Haproxy(child);
    let deadline = Instant::now() + T;
    while lab
        .net
        .enter_client(|| TcpStream::connect(("198.18.0.1", FRONTEND)))
        .is_err()
    {
        assert!(Instant::now() < deadline, "haproxy does not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let login = &lab.login;
    write_client_config(
        &login.config,
        &login.user.name,
        &login.key,
        &lab.known_hosts,
        "198.18.0.1",
        FRONTEND,
        CLIENT_EXTRA,
    );
    let known: String = std::iter::once(&lab.resshd)
        .chain(extra_keys.iter().copied())
        .map(|r| known_hosts_at(r, FRONTEND).replace("[127.0.0.1]", "[198.18.0.1]"))
        .collect();
    fs::write(&lab.known_hosts, known).unwrap();
    h
}

#[test]
fn through_haproxy_resshd_sees_the_client_and_its_moves() {
    for send in ["send-proxy-v2", "send-proxy"] {
        let lab = Lab::new("pp", SERVER);
        let _h = haproxy(&lab, send);
        let user = lab.user().name.clone();

        // SSH_CONNECTION and the log name the client and the frontend.
        let out = lab
            .ressh(&["server", "echo $SSH_CONNECTION"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{send}: login through haproxy: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            lab.log()
        );
        let conn = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = conn.split_whitespace().collect();
        assert_eq!(f.len(), 4, "{send}: SSH_CONNECTION {conn:?}");
        assert_eq!(
            (f[0], f[2], f[3]),
            ("198.18.1.2", "198.18.0.1", "2300"),
            "{send}: SSH_CONNECTION {conn:?}"
        );
        let log = lab.log();
        assert!(
            log.contains("PROXY protocol header from balancer 198.18.0.1"),
            "{send}: {log}"
        );
        assert!(
            log.contains(&format!(
                "Accepted publickey for {user} from 198.18.1.2 port"
            )),
            "{send}: {log}"
        );

        // A session that moves: its reconnects come through the balancer
        // from the new address, and are matched and logged with it.
        let stop = lab.user().home.join("stop-counter");
        let mut client = counter(&lab, &stop);
        client.wait_lines(50, T);
        for _ in 0..2 {
            let before = reconnects(&lab.log());
            roam(&lab, &client, 20);
            wait_reconnects(&lab.resshd, before + 1, T);
        }
        fs::write(&stop, "").unwrap();
        assert!(client.wait_exit(T).success(), "{}", client.describe());
        check_counter(&client.out_lines());
        let log = lab.log();
        let resumed: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("PROXY protocol header from balancer"))
            .collect();
        assert!(
            resumed.iter().any(|l| l.contains("client 198.18.2.2 port")),
            "{send}: no connection from the moved client's address\n{log}"
        );
    }
}

/// A counter session through the lab (keepalives too rare to matter: the
/// client moves on netlink's word); stops when `stop` exists.
fn counter(lab: &Lab, stop: &std::path::Path) -> Client {
    Client::spawn(&mut lab.ressh(&[
        "-o",
        "ServerAliveInterval=600",
        "server",
        &counter_cmd(stop, 1_000_000),
    ]))
}

/// Moves the client to its other address; returns once `client` said it
/// reconnected and `more` lines came through.
fn roam(lab: &Lab, client: &Client, more: usize) {
    let since = Instant::now();
    lab.net.roam();
    client.wait_err("reconnected to ", since, T);
    let n = client.line_count();
    client.wait_lines(n + more, T);
}

/// Roams `client` until its connection is a relayed one (round robin:
/// within three moves), so that a `resshd ARG` process of the relay runs;
/// returns those processes ([`fleet_processes`]).
fn roam_until_relayed(f: &Fleet, client: &Client, arg: &str) -> Vec<(u32, u32)> {
    let mut found = fleet_processes(&f.lab, arg);
    for _ in 0..4 {
        if !found.is_empty() {
            break;
        }
        roam(&f.lab, client, 5);
        found = fleet_processes(&f.lab, arg);
    }
    assert!(!found.is_empty(), "never relayed\n{}", f.logs());
    found
}

/// Reads what resshd sends until it closes (or 10 s).
fn exchange(s: &mut TcpStream, send: &[u8]) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(send);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

#[test]
fn a_header_is_believed_only_from_a_listed_balancer() {
    let lab = Lab::new("pp-forge", SERVER);
    // A client (not a balancer) sends a header naming another address:
    // resshd reads it as a bad version line and believes nothing.
    let forged = b"PROXY TCP4 198.18.9.9 198.18.0.1 40000 22\r\nSSH-2.0-x\r\n";
    let got = lab.net.enter_client(|| {
        let mut s = TcpStream::connect(("198.18.0.1", PORT)).unwrap();
        exchange(&mut s, forged)
    });
    assert!(got.starts_with(b"SSH-2.0-"), "{got:?}");
    let log = lab.wait_log("the forged connection", T, |l| {
        l.contains("Connection from 198.18.1.2 port")
    });
    assert!(
        !log.contains("198.18.9.9"),
        "a forged header was believed:\n{log}"
    );

    // The balancer's address without a header: dropped, said why, before
    // any SSH byte.
    let got = lab.net.enter_server(|| {
        let mut s = TcpStream::connect(("198.18.0.1", PORT)).unwrap();
        exchange(&mut s, b"SSH-2.0-OpenSSH_9.2p1\r\n")
    });
    assert!(
        got.is_empty(),
        "resshd answered a headerless balancer: {got:?}"
    );
    lab.wait_log("the headerless balancer's drop", T, |l| {
        l.contains("Connection from balancer 198.18.0.1 port")
            && l.contains("dropped: no PROXY protocol header")
    });

    // A header split over several segments, then a login: read exactly.
    let addr = SocketAddr::from(([198, 18, 0, 1], PORT));
    let got = lab.net.enter_server(|| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        for part in [&b"PROXY TCP4 198.18"[..], b".7.7 198.18.0.1 4", b"1 22\r\n"] {
            s.write_all(part).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut banner = [0u8; 8];
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.read_exact(&mut banner).map(|()| banner.to_vec())
    });
    assert_eq!(got.unwrap(), b"SSH-2.0-");
    lab.wait_log("the split header's client", T, |l| {
        l.contains("client 198.18.7.7 port 41 to 198.18.0.1 port 22")
    });
}

/// Ports of a fleet's nodes in the lab (node 0 is the lab's own resshd)
/// and of their links.
const NODES: [u16; 3] = [PORT, 23, 24];
const LINKS: [u16; 3] = [2297, 2298, 2299];

/// Keys and node list of a three-node fleet, and each node's config.
fn fleet_files(dir: &TempDir) -> Vec<String> {
    let keydir = dir.join("fleet");
    fs::create_dir(&keydir).unwrap();
    let mut list = String::from("# the lab's fleet\n");
    for (i, link) in LINKS.iter().enumerate() {
        let key = keydir.join(format!("node{i}"));
        let st = std::process::Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-C", "", "-t", "ed25519", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(st.success());
        let public = fs::read_to_string(key.with_extension("pub")).unwrap();
        list += &format!("node{i} 198.18.0.1:{link} {}", public.trim());
        list += "\n";
    }
    let nodes = keydir.join("nodes");
    fs::write(&nodes, list).unwrap();
    LINKS
        .iter()
        .enumerate()
        .map(|(i, link)| {
            format!(
                "FleetKey {}\nFleetNodes {}\nFleetListenAddress 198.18.0.1:{link}\n",
                keydir.join(format!("node{i}")).display(),
                nodes.display()
            )
        })
        .collect()
}

/// A three-node fleet in one lab behind HAProxy (round robin, PROXY v2):
/// node 0 is the lab's own resshd. Field order is drop order.
struct Fleet {
    _haproxy: Haproxy,
    others: Vec<Resshd>,
    lab: Lab,
    dir: TempDir,
}

impl Fleet {
    /// `server`: every node's resshd_config lines after its fleet lines.
    fn start(tag: &str, server: &str) -> Fleet {
        let dir = TempDir::new("fleet");
        let cfgs = fleet_files(&dir);
        let lab = Lab::new(tag, &format!("{}{server}", cfgs[0]));
        let bin = ressh_bin().with_file_name("resshd");
        let others: Vec<Resshd> = (1..3)
            .map(|i| {
                Resshd::start_in_port(&bin, &lab.net, NODES[i], &format!("{}{server}", cfgs[i]))
            })
            .collect();
        let haproxy = haproxy_to(
            &lab,
            "send-proxy-v2",
            &NODES,
            &others.iter().collect::<Vec<_>>(),
        );
        let f = Fleet {
            _haproxy: haproxy,
            others,
            lab,
            dir,
        };
        for n in f.nodes() {
            assert!(n.log().contains("Fleet node node"), "{}", n.log());
        }
        f
    }

    fn nodes(&self) -> Vec<&Resshd> {
        std::iter::once(&self.lab.resshd)
            .chain(self.others.iter())
            .collect()
    }

    /// Every node's log, one after the other.
    fn logs(&self) -> String {
        let logs: Vec<String> = self.nodes().iter().map(|n| n.log()).collect();
        logs.join("\n--- next node ---\n")
    }
}

#[test]
fn a_fleet_relays_reconnects_to_the_owning_node() {
    let f = Fleet::start("fleet", SERVER);
    let (lab, dir) = (&f.lab, &f.dir);

    let stop = lab.user().home.join("stop-counter");
    let mut client = counter(lab, &stop);
    client.wait_lines(50, T);
    // Round robin: of three reconnects in a row, at most one lands on the
    // owner; the others must be relayed.
    for _ in 0..3 {
        roam(lab, &client, 20);
    }
    // A relayed connection's link process on the owner: executed afresh
    // (`resshd --fleet-link`), not root. Roam until the connection is a
    // relayed one (round robin: within two more moves).
    for (pid, uid) in &roam_until_relayed(&f, &client, "--fleet-link") {
        assert_ne!(*uid, 0, "link process {pid} runs as root");
    }
    fs::write(&stop, "").unwrap();
    assert!(client.wait_exit(T).success(), "{}", client.describe());
    check_counter(&client.out_lines());

    // A link from a key the fleet does not list is refused at the TLS
    // handshake and changes nothing.
    let stranger = dir.join("stranger");
    for (args, out) in [
        (vec!["genpkey", "-algorithm", "ed25519", "-out"], &stranger),
        (
            vec![
                "req",
                "-new",
                "-x509",
                "-subj",
                "/CN=node0",
                "-days",
                "1",
                "-key",
            ],
            &stranger,
        ),
    ] {
        let mut c = std::process::Command::new("openssl");
        c.args(&args).arg(out);
        if args[0] == "req" {
            c.arg("-out").arg(dir.join("stranger.crt"));
        }
        assert!(c.status().unwrap().success());
    }
    let forged = lab
        .net
        .cmd_server("openssl")
        .args(["s_client", "-brief", "-connect", "198.18.0.1:2297", "-key"])
        .arg(&stranger)
        .arg("-cert")
        .arg(dir.join("stranger.crt"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    lab.wait_log("the stranger's link refused", T, |l| {
        l.contains("fleet link from 198.18.0.1 port") && l.contains("refused: TLS handshake")
    });
    // (openssl s_client may report the TLS 1.3 connection established: the
    // server checks the client's certificate after its own Finished.)
    drop(forged);

    // sftp through a kill of the client's connection every second: most
    // of its reconnects land on another node and are relayed.
    let src = lab.user().home.join("fleet-file");
    random_file(&src, 24 << 20);
    let dst = lab.dir.join("fleet-file");
    let batch = lab.dir.join("fleet-batch");
    fs::write(&batch, format!("get {} {}\n", src.display(), dst.display())).unwrap();
    let mut cmd = lab.net.cmd_client("sftp");
    cmd.arg("-S")
        .arg(ressh_bin())
        .arg("-F")
        .arg(&lab.login.config)
        .args(["-l", "32000", "-b"])
        .arg(&batch)
        .arg("server");
    let mut sftp = Client::spawn(&mut cmd);
    let (status, kills) = with_kills_on(&lab.net, FRONTEND, Duration::from_secs(1), || {
        sftp.wait_exit(T * 3)
    });
    assert!(status.success(), "{}", sftp.describe());
    assert!(kills.len() >= 3, "{} kills", kills.len());
    assert_eq!(sha256_file(&src), sha256_file(&dst));

    // The owner's link process logs its side after it answered the asking
    // node, and its node's monitor relays that line from a pipe: it may
    // reach the log after the asker's line and the client's resumed data.
    let all = wait_for(
        "every relay's owner side to log it",
        Duration::from_secs(10),
        || {
            let all = f.logs();
            (count(&all, "fleet: reconnect from 198.18.")
                >= count(&all, "relayed to its session on fleet node"))
            .then_some(all)
        },
        || f.logs(),
    );
    let relayed = count(&all, "relayed to its session on fleet node");
    assert!(relayed >= 4, "{relayed} relayed reconnects\n{all}");
    // Found at the first node asked, never by the client's luck of
    // retrying until the balancer picks the owner.
    assert!(
        !client.stderr().contains("does not know the session"),
        "{}",
        client.stderr()
    );
    assert_eq!(
        count(&all, "fleet: reconnect from 198.18."),
        relayed,
        "every relay's owner side logged it\n{all}"
    );
}

#[test]
fn a_drained_node_serves_its_sessions_until_they_end() {
    let f = Fleet::start("drain", SERVER);
    let lab = &f.lab;
    let user = lab.user().name.clone();
    let accepted = format!("Accepted publickey for {user}");

    let stop = lab.user().home.join("stop-counter");
    let mut client = counter(lab, &stop);
    client.wait_lines(50, T);
    let owner = f
        .nodes()
        .iter()
        .position(|n| n.log().contains(&accepted))
        .expect("the session's node");
    let node = f.nodes()[owner];
    let config = node.server.config_path().to_path_buf();
    let text = fs::read_to_string(&config).unwrap();
    fs::write(&config, format!("FleetDrain yes\n{text}")).unwrap();
    signal(node.server.pid(), "HUP");
    node.wait_log("the drain", T, |l| {
        l.contains("FleetDrain: no new connections")
    });
    let logins_before = count(&node.log(), &accepted);

    // New logins all go to the other nodes.
    for i in 0..6 {
        let out = lab.ressh(&["server", "true"]).output().unwrap();
        assert!(
            out.status.success(),
            "login {i} with node{owner} drained: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        count(&node.log(), &accepted),
        logins_before,
        "a drained node took a new login"
    );

    // Its session goes on: its reconnects come through the other nodes.
    for _ in 0..2 {
        roam(lab, &client, 20);
    }
    fs::write(&stop, "").unwrap();
    assert!(client.wait_exit(T).success(), "{}", client.describe());
    check_counter(&client.out_lines());
    let log = node.log();
    assert!(
        count(&log, "fleet: reconnect from 198.18.") >= 2,
        "the drained owner served no relayed reconnect\n{log}"
    );
}

/// resshd's processes started as `resshd ARG` (`--fleet-link`, the owner's
/// side of a link; `--fleet-ask`, the asking side) running now in the
/// server namespace of `lab` (not another test's fleet): pid and real uid.
fn fleet_processes(lab: &Lab, arg: &str) -> Vec<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let ns = fs::metadata(format!("/var/run/netns/{}", lab.net.server_ns()))
        .expect("the lab's server namespace")
        .ino();
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if fs::metadata(e.path().join("ns/net")).map(|m| m.ino()).ok() != Some(ns) {
            continue;
        }
        let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
        let mut words = cmd.split(|&b| b == 0);
        let (Some(exe), Some(a)) = (words.next(), words.next()) else {
            continue;
        };
        if exe.ends_with(b"resshd") && a == arg.as_bytes() {
            let uid = status_field(pid, "Uid")
                .split_whitespace()
                .next()
                .and_then(|u| u.parse().ok())
                .unwrap_or(0);
            out.push((pid, uid));
        }
    }
    out
}

/// A field of /proc/PID/status ("" if absent).
fn status_field(pid: u32, field: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn a_node_that_dies_takes_only_its_sessions_and_says_so() {
    let f = Fleet::start("gone", &format!("DetachTimeout 5\n{SERVER}"));
    let lab = &f.lab;
    let nodes = f.nodes();
    let user = lab.user().name.clone();
    let accepted = format!("Accepted publickey for {user}");
    // Logins so far on each node.
    let logins = || -> Vec<usize> { nodes.iter().map(|n| count(&n.log(), &accepted)).collect() };

    // Two sessions on two different nodes (round robin: consecutive
    // logins land on consecutive nodes).
    let mut sessions = Vec::new();
    let mut owners = Vec::new();
    for k in 0..2 {
        let before = logins();
        let stop = lab.user().home.join(format!("stop-{k}"));
        let c = counter(lab, &stop);
        c.wait_lines(30, T);
        let after = logins();
        let owner = (0..3).find(|&i| after[i] > before[i]).expect("its node");
        owners.push(owner);
        sessions.push((c, stop));
    }
    assert_ne!(owners[0], owners[1], "both sessions on node{}", owners[0]);

    // The first session's node dies: every process of it.
    kill_tree(nodes[owners[0]].server.pid());
    let since = Instant::now();
    lab.net.roam();

    // The other session goes on.
    let (c1, stop1) = &mut sessions[1];
    c1.wait_err("reconnected to ", since, T);
    let n = c1.line_count();
    c1.wait_lines(n + 20, T);
    fs::write(&*stop1, "").unwrap();
    assert!(c1.wait_exit(T).success(), "{}", c1.describe());
    check_counter(&c1.out_lines());

    // The first is told why on each attempt, and gives up within the
    // detach timeout (5 s) and ressh's margin.
    let (c0, _) = &mut sessions[0];
    let st = c0.wait_exit(Duration::from_secs(60));
    assert!(!st.success(), "{}", c0.describe());
    let err = c0.stderr();
    assert!(
        err.contains(&format!("fleet node node{} (unreachable)", owners[0])),
        "{err}"
    );
}

/// A link process holds its own peer's connection and no other: links
/// accepted together (queued while resshd was stopped) each go to their
/// own process, and the first keeps no copy of the second's socket. Seen
/// from the second peer: its link, refused at once (not TLS), is closed at
/// once, not when the first peer's link process ends (it waits 10 s for a
/// handshake that does not come). A copy would also put one peer's
/// connection within reach of a process that talks to another,
/// unauthenticated, peer.
#[test]
fn each_link_process_holds_only_its_own_connection() {
    let dir = TempDir::new("fleet");
    let cfgs = fleet_files(&dir);
    let lab = Lab::new("linkfd", &format!("{}{SERVER}", cfgs[0]));
    let resshd = lab.resshd.server.pid();
    let link = SocketAddr::from(([198, 18, 0, 1], LINKS[0]));
    signal(resshd, "STOP");
    let (_silent, mut refused) = lab.net.enter_client(|| {
        (
            TcpStream::connect(link).unwrap(),
            TcpStream::connect(link).unwrap(),
        )
    });
    signal(resshd, "CONT");
    refused.write_all(b"not a TLS handshake\r\n").unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    let end = refused.read_to_end(&mut got);
    let took = t0.elapsed();
    lab.wait_log("the refused link", T, |l| {
        l.contains("fleet link from 198.18.1.2") && l.contains("refused: TLS handshake")
    });
    // Its end: a FIN, or a reset (bytes left unread).
    let closed = end.as_ref().map_or_else(
        |e| e.kind() == std::io::ErrorKind::ConnectionReset,
        |_| true,
    );
    assert!(
        closed && took < Duration::from_secs(4),
        "the refused link was not closed at once ({end:?} after {took:?}): \
         another link process holds its socket"
    );
}

/// The asking side of a relay holds no privilege: with the fleet relaying
/// a connection, (1) no root process of the nodes' namespace has a TCP
/// connection to a link port (the root monitor neither connects to another
/// node nor does its TLS); (2) the asking process that does runs as the
/// privsep user in an empty chroot, with no capabilities, non-dumpable
/// files (owned by root), and holds exactly two sockets: the client's
/// connection and its link to the owner (not the other nodes' it asked,
/// not its monitor's after the verdict); (3) both link processes run under
/// their seccomp filter (what the filter forbids:
/// fleet::tests::escapes_from_a_link_process_are_killed_by_sigsys); (4)
/// neither writes the log itself: a forged line written to their
/// descriptor 2, as either would write it once taken over by a node or
/// whoever answers at a node's address, reaches the log as that process's
/// own escaped line, never as a line of another process.
#[test]
fn no_root_process_speaks_to_another_node() {
    let f = Fleet::start("askconf", SERVER);
    let lab = &f.lab;
    let stop = lab.user().home.join("stop-counter");
    let mut client = counter(lab, &stop);
    client.wait_lines(30, T);
    let links = roam_until_relayed(&f, &client, "--fleet-link");
    let n = client.line_count();
    client.wait_lines(n + 3, T);

    // (1) No root process of the nodes' namespace holds a connection to a
    // link port.
    let netns = |pid: u32| fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    let ours = netns(lab.resshd.server.pid()).expect("resshd's namespace");
    let mut root_links = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let root = status_field(pid, "Uid")
            .split_whitespace()
            .any(|u| u == "0");
        if !root || netns(pid).as_ref() != Some(&ours) {
            continue;
        }
        for s in tcp_sockets(pid) {
            if LINKS.contains(&s.remote_port) {
                let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                root_links.push(format!("{pid} ({cmd}): {s:?}"));
            }
        }
    }
    assert!(
        root_links.is_empty(),
        "root processes connected to another node's link port: {root_links:#?}"
    );

    // (2) The asking process.
    let askers = fleet_processes(lab, "--fleet-ask");
    assert!(
        !askers.is_empty(),
        "no asking process while relayed\n{}",
        f.logs()
    );
    for &(pid, _) in &askers {
        for field in ["Uid", "Gid"] {
            let ids = status_field(pid, field);
            assert!(
                !ids.split_whitespace().any(|u| u == "0"),
                "asking process {pid}: {field} {ids}"
            );
        }
        assert_eq!(status_field(pid, "CapEff"), "0000000000000000", "{pid}");
        assert_eq!(status_field(pid, "CapPrm"), "0000000000000000", "{pid}");
        assert_eq!(status_field(pid, "NoNewPrivs"), "1", "{pid}");
        let root = fs::read_link(format!("/proc/{pid}/root")).unwrap();
        assert_ne!(
            root,
            std::path::Path::new("/"),
            "asking process {pid} not chrooted"
        );
        assert_eq!(
            fs::read_dir(&root).unwrap().count(),
            0,
            "asking process {pid}: its root {} is not empty",
            root.display()
        );
        // Non-dumpable: its /proc files are root's, not the privsep user's.
        use std::os::unix::fs::MetadataExt;
        let owner = fs::metadata(format!("/proc/{pid}/status")).unwrap().uid();
        assert_eq!(owner, 0, "asking process {pid} is dumpable");
        let fds: Vec<u32> = fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd > 2)
            .collect();
        let tcp = tcp_sockets(pid);
        let client_side = tcp
            .iter()
            .filter(|s| s.fd > 2 && NODES.contains(&s.local_port))
            .count();
        let link_side = tcp
            .iter()
            .filter(|s| s.fd > 2 && LINKS.contains(&s.remote_port))
            .count();
        assert!(
            fds.len() == 2 && client_side == 1 && link_side == 1,
            "asking process {pid} holds descriptors {fds:?}, TCP {tcp:?}: \
             want only the client's connection and its link"
        );
    }

    // (3) Both sides under their seccomp filter.
    for (pid, _) in askers.iter().chain(&links) {
        assert_eq!(status_field(*pid, "Seccomp"), "2", "process {pid}");
    }

    // (4) Their stderr is not the log.
    let forged = |pid: u32| {
        format!("resshd[1]: Accepted publickey for root from 198.18.9.9 port {pid} ssh2")
    };
    for (pid, _) in askers.iter().chain(&links) {
        let mut stderr = fs::OpenOptions::new()
            .append(true)
            .open(format!("/proc/{pid}/fd/2"))
            .unwrap();
        stderr
            .write_all(format!("x\n{}\n", forged(*pid)).as_bytes())
            .unwrap();
    }
    for (pid, _) in askers.iter().chain(&links) {
        let line = forged(*pid);
        let all = ressh_testkit::wait_for(
            &format!("{pid}'s line in a log"),
            T,
            || {
                let all = f.logs();
                all.contains(&line).then_some(all)
            },
            || f.logs(),
        );
        let own = all.lines().find(|l| l.contains(&line)).unwrap();
        let before = &own[..own.find(&line).unwrap()];
        assert!(
            before.contains(&format!("resshd[{pid}]: ")),
            "process {pid} wrote a line of its choosing to the log: {own:?}"
        );
    }

    fs::write(&stop, "").unwrap();
    assert!(client.wait_exit(T).success(), "{}", client.describe());
    check_counter(&client.out_lines());
    let all = f.logs();
    assert!(!all.contains("killed by signal"), "{all}");
}

/// A relayed connection is no longer a startup on the node that relays it
/// (the owner's session validated its reconnect): however many sessions a
/// node relays, and for however long, MaxStartups counts only connections
/// that have not authenticated. With `MaxStartups 1` on every node, after a
/// relayed reconnect and the 5 s a reconnect's claim lasts, each node still
/// greets a new connection.
#[test]
fn a_relayed_connection_is_not_a_startup() {
    let f = Fleet::start("relstart", &format!("MaxStartups 1\n{SERVER}"));
    let lab = &f.lab;
    let stop = lab.user().home.join("stop-counter");
    let mut client = counter(lab, &stop);
    client.wait_lines(30, T);
    roam_until_relayed(&f, &client, "--fleet-ask");
    std::thread::sleep(Duration::from_secs(7));
    assert!(
        !fleet_processes(lab, "--fleet-ask").is_empty(),
        "the relay ended\n{}",
        f.logs()
    );
    for port in NODES {
        let mut s = lab
            .net
            .enter_client(|| TcpStream::connect(("198.18.0.1", port)))
            .unwrap();
        // Its greeting, or its end (a drop).
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.contains(&b'\n') {
            match s.read(&mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        assert!(
            got.starts_with(b"SSH-2.0-"),
            "node on port {port} dropped a new connection while relaying one \
             (got {:?})\n{}",
            String::from_utf8_lossy(&got),
            f.logs()
        );
    }
    fs::write(&stop, "").unwrap();
    assert!(client.wait_exit(T).success(), "{}", client.describe());
    check_counter(&client.out_lines());
}

/// A fleet link process taken over while it parses an unauthenticated
/// peer's TLS holds its link to the broker (made as root): over it, it
/// could say it had authenticated any user and detached with a cap of 0,
/// and the broker would end that user's sessions detached past their
/// grace. Played for real: a connection to the fleet port that never
/// finishes its handshake, and the test (root) copies the link process's
/// broker descriptor (4) with pidfd_getfd(2) and says it. The broker drops
/// that link with the reason; the node goes on serving.
#[test]
#[allow(unsafe_code)] // pidfd_getfd: the takeover's copy of the broker link
fn a_link_process_taken_over_cannot_speak_for_a_session() {
    use ressh_ipc::msg::ToBroker;
    use std::os::fd::{FromRawFd, OwnedFd};
    let f = Fleet::start("linkbrk", SERVER);
    let lab = &f.lab;
    let link = SocketAddr::from(([198, 18, 0, 1], LINKS[0]));
    let _silent = lab.net.enter_client(|| TcpStream::connect(link).unwrap());
    // Taken over in its handshake: greeted its broker, confined.
    let pid = ressh_testkit::wait_for(
        "a link process in its handshake",
        T,
        || {
            fleet_processes(lab, "--fleet-link")
                .first()
                .map(|p| p.0)
                .filter(|&p| status_field(p, "Seccomp") == "2")
        },
        || f.logs(),
    );
    // SAFETY: raw system calls on a pid and descriptor numbers; the copied
    // descriptor is ours alone.
    let broker = unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::c_long, 0);
        assert!(pidfd >= 0, "pidfd_open {pid}");
        let fd = libc::syscall(libc::SYS_pidfd_getfd, pidfd, 4 as libc::c_long, 0);
        libc::close(pidfd as i32);
        assert!(fd >= 0, "pidfd_getfd {pid} 4");
        ressh_ipc::Endpoint::from_fd(OwnedFd::from_raw_fd(fd as i32))
    };
    let user = lab.user().name.clone();
    for m in [
        ToBroker::Authenticated { user },
        ToBroker::Detached {
            max_per_user: 0,
            grace_secs: 0,
        },
    ] {
        let _ = broker.send(&m, &[]);
    }
    lab.wait_log("the forged session refused", T, |l| {
        l.contains("a fleet link process spoke for a session; link dropped")
    });
    // The node still serves logins.
    let out = lab
        .ressh(&["server", "echo", "still-here"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("still-here"),
        "{out:?}\n{}",
        f.logs()
    );
}

/// Under `LogLevel ERROR` the fleet's errors still reach the log. The
/// processes that talk to other nodes never write the log themselves: resshd
/// relays their stderr, each line at the level its `<N>` names (at most an
/// error). Here node0 runs alone: its session worker is killed, so the
/// client's reconnect finds no session on it, and node0's asking process
/// finds node1 and node2 down; it logs that at ERROR, and the client is told
/// which nodes it could not ask. No INFO line is written.
#[test]
fn fleet_errors_reach_a_log_at_level_error() {
    let dir = TempDir::new("fleet");
    let cfgs = fleet_files(&dir);
    let lab = Lab::new(
        "flerr",
        &format!("{}DetachTimeout 300\nLogLevel ERROR\n", cfgs[0]),
    );
    let stop = lab.user().home.join("stop-counter");
    let client = counter(&lab, &stop);
    client.wait_lines(20, T);
    let workers = lab.session_workers();
    assert!(!workers.is_empty(), "no session worker");
    let since = Instant::now();
    for pid in workers {
        signal(pid, "KILL");
    }
    client.wait_err("fleet node node1 (unreachable)", since, T);
    let log = lab.wait_log("the asking process's error", T, |l| {
        l.contains("fleet: node node1 (198.18.0.1:") && l.contains("fleet: node node2 (198.18.0.1:")
    });
    let user = &lab.user().name;
    assert!(
        !log.contains(&format!("Accepted publickey for {user}")),
        "LogLevel ERROR wrote an INFO line:\n{log}"
    );
}
