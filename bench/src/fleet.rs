//! The `fleet` section: what relaying a reconnect to the node that owns the
//! session costs (docs/fleet.md), against the same reconnect handled by the
//! owner itself.
//!
//! Two resshd nodes of one fleet in a server namespace (node A on port
//! 2222, node B on 2223, links on 2297/2298, the same host key), ressh in a
//! client namespace running `cat` on node A. A killed connection (as
//! `ss -K`) makes ressh reconnect to 198.18.0.1:2222; for the relayed
//! trials an nftables DNAT rule in the server namespace sends new
//! connections on 2222 to node B instead, which relays them to A (existing
//! connections keep their mapping). Timed from the kill to the first byte
//! echoed over the new connection; then the throughput of `cat` (bytes
//! written to the session and read back) over a local and over a relayed
//! connection.

use std::fs;
use std::io::Write;
use std::net::SocketAddrV4;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ressh_testkit::Net;

use crate::daemon::{ClientSetup, Keys, Kind, Server, ServerSpec};
use crate::lab::Cat;

const NODE_A: u16 = 2222;
const NODE_B: u16 = 2223;
const LINKS: [u16; 2] = [2297, 2298];

/// The figures: reconnect latencies (ms) and `cat` throughput (MB/s),
/// each for a reconnect the owner handled and one relayed by node B.
pub struct Figures {
    pub local_ms: Vec<f64>,
    pub relayed_ms: Vec<f64>,
    pub local_mbps: Vec<f64>,
    pub relayed_mbps: Vec<f64>,
}

/// Where the binaries, keys and the user are.
pub struct Setup<'a> {
    pub resshd: &'a Path,
    pub ressh: &'a Path,
    pub keys: &'a Keys,
    pub user: &'a str,
    pub authorized_keys: &'a Path,
    pub dir: &'a Path,
    pub trials: usize,
    pub reps: usize,
    pub bulk: u64,
}

pub fn measure(s: &Setup) -> Result<Figures, String> {
    let net = Net::new("fleet");
    let fleet = s.dir.join("fleet");
    fs::create_dir_all(&fleet).map_err(|e| e.to_string())?;
    let mut list = String::new();
    for (i, link) in LINKS.iter().enumerate() {
        let key = fleet.join(format!("node{i}"));
        let _ = fs::remove_file(&key);
        let _ = fs::remove_file(key.with_extension("pub"));
        let st = Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-C", "", "-t", "ed25519", "-f"])
            .arg(&key)
            .status()
            .map_err(|e| format!("ssh-keygen: {e}"))?;
        if !st.success() {
            return Err("ssh-keygen failed".into());
        }
        let public = fs::read_to_string(key.with_extension("pub")).map_err(|e| e.to_string())?;
        list += &format!("node{i} 198.18.0.1:{link} {}\n", public.trim());
    }
    let nodes = fleet.join("nodes");
    fs::write(&nodes, list).map_err(|e| e.to_string())?;
    let mut servers = Vec::new();
    for (i, port) in [NODE_A, NODE_B].into_iter().enumerate() {
        let spec = ServerSpec {
            kind: Kind::Ressh,
            bin: s.resshd.to_path_buf(),
            dir: s.dir.join(format!("fleet-node{i}")),
            listen: net.server_addr(),
            port: Some(port),
            host_key: s.keys.host_key.clone(),
            authorized_keys: s.authorized_keys.to_path_buf(),
            privsep_user: Some("nobody".into()),
            extra: format!(
                "DetachTimeout 600\nFleetKey {}\nFleetNodes {}\nFleetListenAddress 198.18.0.1:{}\n",
                fleet.join(format!("node{i}")).display(),
                nodes.display(),
                LINKS[i]
            ),
        };
        servers.push(Server::start(&spec, &|cmd| {
            net.in_server(cmd);
        })?);
    }
    let c = ClientSetup::new(
        Kind::Ressh,
        s.ressh,
        &s.dir.join("client-fleet"),
        s.keys,
        &net.server_addr().to_string(),
        NODE_A,
        s.user,
    )?;
    let mut cmd = c.ssh(&["-T"]);
    cmd.arg("cat");
    net.in_client(&mut cmd);
    let mut cat = Cat::spawn(cmd)?;
    let dst = SocketAddrV4::new(net.server_addr(), NODE_A);
    let kill = |cat: &mut Cat| -> Result<f64, String> {
        let (t0, _) = net
            .enter_client(|| crate::lab::destroy_tcp_to(dst))
            .map_err(|e| format!("SOCK_DESTROY: {e}"))?;
        cat.echo(1, Duration::from_secs(20))?;
        Ok(t0.elapsed().as_secs_f64() * 1000.0)
    };
    let mut f = Figures {
        local_ms: Vec::new(),
        relayed_ms: Vec::new(),
        local_mbps: Vec::new(),
        relayed_mbps: Vec::new(),
    };
    for relayed in [false, true] {
        redirect(&net, relayed)?;
        let ms = if relayed {
            &mut f.relayed_ms
        } else {
            &mut f.local_ms
        };
        for i in 0..s.trials {
            thread::sleep(Duration::from_millis(150));
            cat.echo(1, Duration::from_secs(10))?;
            ms.push(kill(&mut cat).map_err(|e| format!("trial {i}: {e}"))?);
        }
        // The session now runs over a connection of this kind: bulk.
        let mbps = if relayed {
            &mut f.relayed_mbps
        } else {
            &mut f.local_mbps
        };
        for _ in 0..s.reps {
            let t = Instant::now();
            cat.echo(s.bulk, Duration::from_secs(120))?;
            mbps.push(s.bulk as f64 / 1e6 / t.elapsed().as_secs_f64());
        }
    }
    let relays = servers[1]
        .log_text()
        .matches("relayed to its session")
        .count();
    redirect(&net, false)?;
    drop(cat);
    if relays < s.trials {
        return Err(format!(
            "node B relayed {relays} reconnects of {} (the DNAT did not take?)",
            s.trials
        ));
    }
    Ok(f)
}

/// New connections to node A's port go to node B (`on`), or not.
fn redirect(net: &Net, on: bool) -> Result<(), String> {
    let script = if on {
        format!(
            "table ip fleetbench {{\n chain pre {{\n  type nat hook prerouting priority -100; policy accept;\n  \
             tcp dport {NODE_A} dnat to 198.18.0.1:{NODE_B}\n }}\n}}\n"
        )
    } else {
        "table ip fleetbench {}\ndelete table ip fleetbench\n".to_string()
    };
    let mut cmd = Command::new("nft");
    cmd.args(["-f", "-"]).stdin(Stdio::piped());
    net.in_server(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| format!("nft: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let st = child.wait().map_err(|e| e.to_string())?;
    if !st.success() {
        return Err(format!("nft (NAT in a namespace) failed: {script}"));
    }
    Ok(())
}
