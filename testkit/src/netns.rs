//! A small routed lab of network namespaces for outage and roaming tests (addresses from
//! 198.18.0.0/15 only; every name unique to the test that makes it).
//!
//! ```text
//!   server ns                router ns (ip_forward=1)              client ns
//!  net0 198.18.0.1/24 ── srv  198.18.0.254/24
//!                           up-a 198.18.1.1/24 ── up-a 198.18.1.2/24   (uplink A)
//!                           up-b 198.18.2.1/24 ── up-b 198.18.2.2/24   (uplink B)
//! ```
//!
//! The client has one uplink at a time (A at first); [`Net::roam`] brings up the other,
//! moves the default route to it and deletes the old one, so the client's address
//! changes while the server's (198.18.0.1) stays reachable. Outages are made in the
//! router (nftables in its forward hook) or on the client's uplink (link down).
//!
//! Addresses come only from 198.18.0.0/15; IPv6 is disabled on every interface the lab
//! creates (no link-local addresses, no router solicitations), so nothing is sent
//! anywhere else. Nothing is created in the caller's namespace: both ends of every veth
//! pair are made inside the lab's namespaces.
//!
//! Std only: entering a namespace uses `setns(2)` from the C library std links anyway.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::raw::c_int;
use std::os::unix::process::CommandExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{self, Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::cmd::{describe_output, require_cmd, require_root, run_timeout, run_with_stdin};

/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/var/run/netns";

/// `CLONE_NEWNET` from `<sched.h>`.
const CLONE_NEWNET: c_int = 0x4000_0000;

extern "C" {
    /// `setns(2)`: moves the calling thread into the namespace `fd` refers to.
    fn setns(fd: c_int, nstype: c_int) -> c_int;
}

/// Time limit of each `ip`, `nft` and `ss` the lab runs.
const CMD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a link may take to come up, and a fresh path to carry a connection.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const ROUTER_SERVER_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
const SERVER_IFACE: &str = "net0";
const ROUTER_SERVER_IFACE: &str = "srv";

/// The nftables table the lab keeps in the router namespace.
const NFT_TABLE: &str = "inet ressh_testkit";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Serializes `ip netns add` inside one test binary: the first one turns
/// `/var/run/netns` into a shared mount, which is racy between concurrent callers.
static NETNS_ADD: Mutex<()> = Mutex::new(());

/// One of the client's two uplinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Uplink {
    A,
    B,
}

impl Uplink {
    /// Interface name, the same at both ends (router and client).
    fn iface(self) -> &'static str {
        match self {
            Uplink::A => "up-a",
            Uplink::B => "up-b",
        }
    }

    fn subnet(self) -> u8 {
        match self {
            Uplink::A => 1,
            Uplink::B => 2,
        }
    }

    fn router_addr(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet(), 1)
    }

    fn client_addr(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet(), 2)
    }

    fn other(self) -> Uplink {
        match self {
            Uplink::A => Uplink::B,
            Uplink::B => Uplink::A,
        }
    }
}

#[derive(Debug)]
struct State {
    uplink: Uplink,
    link_up: bool,
    blackhole: bool,
    reject: bool,
    /// Client ports whose TCP flows the router drops ([`Net::drop_flow`]).
    dropped: Vec<u16>,
    /// The router drops every TCP SYN ([`Net::drop_new_connections`]).
    no_new: bool,
}

/// Three network namespaces, "server", "router" and "client", wired as in the module
/// docs: the server at 198.18.0.1, the client at 198.18.1.2 (uplink A) or 198.18.2.2
/// (uplink B) behind a router. Disruptions ([`Net::kill_tcp`], [`Net::blackhole`],
/// [`Net::reject`], [`Net::link`], [`Net::roam`]) return once in effect.
///
/// On drop, every process inside the namespaces is killed (SIGKILL) and the namespaces
/// are deleted, with all their interfaces and the nftables table (it lives in the router
/// namespace). Sockets made inside the lab keep their namespace alive (unnamed, not in
/// `ip netns list`) until they are closed. Requires root.
#[derive(Debug)]
pub struct Net {
    server: String,
    router: String,
    client: String,
    /// Namespaces created so far, deleted on drop (a half-built lab is cleaned up too).
    created: Vec<String>,
    state: Mutex<State>,
}

/// Panics with a clear message unless network namespaces can be used here: root, the
/// `ip`, `nft` and `ss` commands, and a kernel that lets us create a namespace with a
/// veth pair and an nftables table in it. Everything it creates is removed.
pub fn require_netns() {
    require_root();
    for prog in ["ip", "nft", "ss"] {
        require_cmd(prog);
    }
    let name = unique_name("probe", "p");
    add_netns(&name);
    let result = panic::catch_unwind(|| {
        ip_batch(
            &name,
            "link set lo up\nlink add p0 type veth peer name p1\nlink del p0\n",
        );
        nft(
            &name,
            &format!("table {NFT_TABLE}\ndelete table {NFT_TABLE}\n"),
        );
    });
    delete_netns(&name);
    if let Err(payload) = result {
        eprintln!("ressh-testkit: network namespaces are not usable here (see below)");
        panic::resume_unwind(payload);
    }
}

impl Net {
    /// Creates the lab. `tag` (letters, digits, `_`; the rest becomes `_`) goes into the
    /// namespace names `rs-<tag>-<pid>-<n>-{s,r,c}` to tell labs apart. Returns once the
    /// client can open a TCP connection to the server; panics (after removing what it
    /// made) if anything fails. Requires root.
    pub fn new(tag: &str) -> Net {
        require_root();
        require_cmd("ip");
        let tag = clean_tag(tag);
        let (server, router, client) = loop {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let names =
                ["s", "r", "c"].map(|side| format!("rs-{tag}-{}-{n}-{side}", process::id()));
            // A namespace left by a crashed earlier run with the same pid: skip its number.
            if names.iter().all(|name| !ns_path(name).exists()) {
                let [s, r, c] = names;
                break (s, r, c);
            }
        };
        let mut net = Net {
            server,
            router,
            client,
            created: Vec::new(),
            state: Mutex::new(State {
                uplink: Uplink::A,
                link_up: true,
                blackhole: false,
                reject: false,
                dropped: Vec::new(),
                no_new: false,
            }),
        };
        for name in [&net.server, &net.router, &net.client] {
            add_netns(name);
            net.created.push(name.clone());
            // No IPv6 on the lab's interfaces (no link-local addresses, no solicitations);
            // lo keeps ::1. Set before any interface is made, which inherits "default".
            let forward = *name == net.router;
            enter_ns(name, move || {
                let v6 = Path::new("/proc/sys/net/ipv6/conf/default/disable_ipv6");
                if v6.exists() {
                    write_sysctl(v6, "1");
                }
                if forward {
                    write_sysctl(Path::new("/proc/sys/net/ipv4/ip_forward"), "1");
                }
            });
            ip_batch(name, "link set lo up\n");
        }

        ip_batch(
            &net.router,
            &format!(
                "link add {ROUTER_SERVER_IFACE} type veth peer name {SERVER_IFACE} netns {s}\n\
                 addr add {ROUTER_SERVER_SIDE}/24 dev {ROUTER_SERVER_IFACE}\n\
                 link set {ROUTER_SERVER_IFACE} up\n",
                s = net.server
            ),
        );
        ip_batch(
            &net.server,
            &format!(
                "addr add {SERVER_ADDR}/24 dev {SERVER_IFACE}\n\
                 link set {SERVER_IFACE} up\n\
                 route add default via {ROUTER_SERVER_SIDE} dev {SERVER_IFACE}\n"
            ),
        );
        net.wait_up(&net.server, SERVER_IFACE);
        net.wait_up(&net.router, ROUTER_SERVER_IFACE);
        net.add_uplink(Uplink::A);
        net.check_path(Uplink::A);
        net
    }

    /// The server's address, 198.18.0.1, the same for the lab's whole life.
    pub fn server_addr(&self) -> Ipv4Addr {
        SERVER_ADDR
    }

    /// The client's address on its current uplink: 198.18.1.2 (A) or 198.18.2.2 (B).
    pub fn client_addr(&self) -> Ipv4Addr {
        self.state().uplink.client_addr()
    }

    /// The client's current uplink interface in the client namespace (`up-a`, `up-b`).
    pub fn client_iface(&self) -> &'static str {
        self.state().uplink.iface()
    }

    /// Name of the server namespace (for `ip netns exec`, `ip -n`).
    pub fn server_ns(&self) -> &str {
        &self.server
    }

    /// Name of the client namespace.
    pub fn client_ns(&self) -> &str {
        &self.client
    }

    /// Name of the router namespace (holds the nftables rules).
    pub fn router_ns(&self) -> &str {
        &self.router
    }

    /// Makes `cmd`, when spawned, run inside the server namespace: the child calls
    /// `setns(2)` between fork and exec (network namespace only; unlike
    /// `ip netns exec`, `/sys` and `/etc` are not remounted). Panics if the namespace
    /// is gone.
    pub fn in_server<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        in_ns(&self.server, cmd)
    }

    /// Makes `cmd` run inside the client namespace; see [`Net::in_server`].
    pub fn in_client<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        in_ns(&self.client, cmd)
    }

    /// `Command::new(prog)` that runs inside the server namespace ([`Net::in_server`]).
    pub fn cmd_server(&self, prog: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(prog);
        in_ns(&self.server, &mut cmd);
        cmd
    }

    /// `Command::new(prog)` that runs inside the client namespace.
    pub fn cmd_client(&self, prog: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(prog);
        in_ns(&self.client, &mut cmd);
        cmd
    }

    /// Runs `f` on a fresh thread that has entered the server namespace, and returns
    /// its result (a panic in `f` is propagated). Sockets made there belong to the
    /// server namespace for their whole life, from whichever thread they are used.
    pub fn enter_server<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        enter_ns(&self.server, f)
    }

    /// Runs `f` on a fresh thread inside the client namespace; see [`Net::enter_server`].
    pub fn enter_client<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        enter_ns(&self.client, f)
    }

    /// Starts `f` on a new thread inside the server namespace (for a long-running
    /// server loop). Panics here if the thread cannot be started.
    pub fn spawn_in_server<F, R>(&self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        spawn_in_ns(&self.server, f)
    }

    /// Starts `f` on a new thread inside the client namespace.
    pub fn spawn_in_client<F, R>(&self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        spawn_in_ns(&self.client, f)
    }

    /// Aborts every TCP connection in the client namespace to the server's `port`
    /// (`ss -K`): the client's socket fails with `ECONNABORTED` at once and the kernel
    /// sends the server a reset. Returns how many were killed; panics if there was none
    /// (a test that kills nothing tests nothing) or if any survives (a kernel without
    /// `CONFIG_INET_DIAG_DESTROY`).
    pub fn kill_tcp(&self, port: u16) -> usize {
        let _state = self.state();
        let ss = require_cmd("ss");
        let dst = format!("{SERVER_ADDR}:{port}");
        let filter = ["state", "connected", "exclude", "time-wait", "dst", &dst];
        let out = ok(self
            .cmd_client(&ss)
            .args(["-K", "-t", "-n", "-H"])
            .args(filter));
        // The local address:port of each connection a line of `ss` shows.
        let locals = |out: &[u8]| -> Vec<String> {
            String::from_utf8_lossy(out)
                .lines()
                .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
                .collect()
        };
        let killed = locals(&out.stdout);
        // A connection alive now is a failure only if it is one `ss -K` was
        // to kill: a client that reconnects at once has a new one already.
        let left = ok(self.cmd_client(&ss).args(["-t", "-n", "-H"]).args(filter));
        let survivors: Vec<String> = String::from_utf8_lossy(&left.stdout)
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(3)
                    .is_some_and(|local| killed.iter().any(|k| k == local))
            })
            .map(str::to_string)
            .collect();
        let left = survivors.join("\n");
        let killed = killed.len();
        if !left.is_empty() {
            panic!(
                "kill_tcp({port}): `ss -K` left these connections alive in {} (kernel \
                 without CONFIG_INET_DIAG_DESTROY?):\n{left}",
                self.client
            );
        }
        if killed == 0 {
            panic!("kill_tcp({port}): no TCP connection to {dst} in the client namespace");
        }
        killed
    }

    /// Like [`Net::kill_tcp`], for killing again and again while a client keeps
    /// reconnecting: one `ss -K` run, nothing required and nothing checked afterwards (a
    /// connection made meanwhile is legitimately alive). Returns how many connections it
    /// killed (0 when there was none).
    pub fn try_kill_tcp(&self, port: u16) -> usize {
        let _state = self.state();
        let ss = require_cmd("ss");
        let dst = format!("{SERVER_ADDR}:{port}");
        let out = ok(self.cmd_client(&ss).args(["-K", "-t", "-n", "-H"]).args([
            "state",
            "connected",
            "exclude",
            "time-wait",
            "dst",
            &dst,
        ]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    }

    /// `on`: the router silently drops everything it forwards between client and server
    /// (nftables `drop`), both ways; connections stall, nothing is reset. `off`: traffic
    /// flows again and stalled connections resume on their next retransmission.
    pub fn blackhole(&self, on: bool) {
        let mut state = self.state();
        state.blackhole = on;
        self.apply_filter(&state);
    }

    /// `on`: the router answers every forwarded TCP segment with a reset (and anything
    /// else with ICMP admin-prohibited), both ways: established connections die on their
    /// next segment, new ones are refused. A blackhole, if on too, wins. `off`: undone.
    pub fn reject(&self, on: bool) {
        let mut state = self.state();
        state.reject = on;
        self.apply_filter(&state);
    }

    /// `on`: the router silently drops the packets of one TCP flow, both ways: the one
    /// from the client's current address and port `client_port` (see
    /// [`Net::client_ports`]). Other flows, new connections included, pass: a NAT or
    /// firewall that forgot this flow. `off`: it flows again.
    pub fn drop_flow(&self, client_port: u16, on: bool) {
        let mut state = self.state();
        state.dropped.retain(|p| *p != client_port);
        if on {
            state.dropped.push(client_port);
        }
        self.apply_filter(&state);
    }

    /// `on`: the router silently drops every TCP connection request (SYN) it forwards,
    /// both ways; established connections pass. `off`: new connections pass again.
    pub fn drop_new_connections(&self, on: bool) {
        let mut state = self.state();
        state.no_new = on;
        self.apply_filter(&state);
    }

    /// The local ports of the client namespace's established TCP connections to the
    /// server's `port` (`ss`), in no particular order.
    pub fn client_ports(&self, port: u16) -> Vec<u16> {
        let ss = require_cmd("ss");
        let dst = format!("{SERVER_ADDR}:{port}");
        let out =
            ok(self
                .cmd_client(&ss)
                .args(["-t", "-n", "-H", "state", "established", "dst", &dst]));
        // With a state filter `ss` leaves the state column out: the local
        // address:port is the third.
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                l.split_whitespace()
                    .nth(2)?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// Sets the client's current uplink down or up (`ip link set`, client side). Down:
    /// the client loses its routes and packets both ways are lost; connections stall.
    /// Up: returns once the link is up, the default route is back and (unless a
    /// blackhole or reject is on) a new connection gets through.
    pub fn link(&self, up: bool) {
        let mut state = self.state();
        let iface = state.uplink.iface();
        ip_batch(
            &self.client,
            &format!("link set {iface} {}\n", if up { "up" } else { "down" }),
        );
        if up {
            self.wait_up(&self.client, iface);
            self.wait_up(&self.router, iface);
            // Taking the link down removed the default route through it.
            ip_batch(
                &self.client,
                &format!(
                    "route replace default via {} dev {iface}\n",
                    state.uplink.router_addr()
                ),
            );
        }
        state.link_up = up;
        if up && !state.blackhole && !state.reject {
            self.check_path(state.uplink);
        }
    }

    /// Moves the client to its other uplink, making the new before breaking the old:
    /// creates the other uplink with its address, moves the default route to it, then
    /// deletes the current uplink (with its address). The first call moves A → B
    /// (198.18.1.2 → 198.18.2.2), the next B → a fresh A, and so on. Connections from
    /// the old address stall (their source address is gone). Returns once a new
    /// connection from the new address gets through (unless a blackhole or reject is on).
    pub fn roam(&self) {
        self.roam_timed();
    }

    /// [`Net::roam`], returning when the client's default route started moving to the
    /// new uplink (taken just before the `ip route replace` that moves it): the moment
    /// the client's path to the server changed, for measuring how fast it follows.
    pub fn roam_timed(&self) -> Instant {
        let mut state = self.state();
        let (old, new) = (state.uplink, state.uplink.other());
        let route_changed = self.add_uplink(new);
        ip_batch(&self.client, &format!("link del {}\n", old.iface()));
        state.uplink = new;
        state.link_up = true;
        if !state.blackhole && !state.reject {
            self.check_path(new);
        }
        route_changed
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates `uplink` (a veth pair router ↔ client with both addresses), waits until it
    /// is up at both ends and points the client's default route at it. Returns when it
    /// started changing the route.
    fn add_uplink(&self, uplink: Uplink) -> Instant {
        let iface = uplink.iface();
        ip_batch(
            &self.router,
            &format!(
                "link add {iface} type veth peer name {iface} netns {c}\n\
                 addr add {r}/24 dev {iface}\n\
                 link set {iface} up\n",
                c = self.client,
                r = uplink.router_addr()
            ),
        );
        ip_batch(
            &self.client,
            &format!(
                "addr add {}/24 dev {iface}\nlink set {iface} up\n",
                uplink.client_addr()
            ),
        );
        self.wait_up(&self.client, iface);
        self.wait_up(&self.router, iface);
        let route_changed = Instant::now();
        ip_batch(
            &self.client,
            &format!(
                "route replace default via {} dev {iface}\n",
                uplink.router_addr()
            ),
        );
        route_changed
    }

    /// Waits until `iface` in `ns` has operstate UP (carrier on, queueing discipline
    /// attached): before that, packets sent on it are dropped.
    fn wait_up(&self, ns: &str, iface: &str) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut nap = Duration::from_millis(1);
        loop {
            let out = ok(ip_cmd(ns).args(["-o", "link", "show", "dev", iface]));
            let line = String::from_utf8_lossy(&out.stdout).into_owned();
            if line.contains(" state UP ") {
                return;
            }
            if Instant::now() >= deadline {
                panic!("{iface} in {ns} not up after {SETTLE_TIMEOUT:?}: {line}");
            }
            thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(20));
        }
    }

    /// Panics unless a new TCP connection from the client (from `uplink`'s address)
    /// reaches the server.
    fn check_path(&self, uplink: Uplink) {
        let listener = self.enter_server(|| TcpListener::bind((SERVER_ADDR, 0)));
        let listener =
            listener.unwrap_or_else(|e| panic!("bind {SERVER_ADDR}:0 in {}: {e}", self.server));
        let addr = listener.local_addr().expect("listener address");
        let connected = self.enter_client(|| TcpStream::connect_timeout(&addr, SETTLE_TIMEOUT));
        if let Err(e) = connected {
            panic!(
                "lab {}: the client cannot reach {addr}: {e}\n{}",
                self.client,
                self.describe()
            );
        }
        let (_conn, peer) = listener
            .accept()
            .unwrap_or_else(|e| panic!("accept on {addr} in {}: {e}", self.server));
        assert_eq!(
            peer.ip(),
            IpAddr::V4(uplink.client_addr()),
            "lab {}: the server saw the client come from {peer}",
            self.client
        );
    }

    /// Rewrites the router's nftables table from `state` (atomically, one `nft -f`).
    fn apply_filter(&self, state: &State) {
        let mut script = format!("table {NFT_TABLE}\ndelete table {NFT_TABLE}\n");
        let mut rules = Vec::new();
        if state.blackhole {
            rules.push("drop".to_string());
        }
        if state.reject {
            rules.push("meta l4proto tcp reject with tcp reset".to_string());
            rules.push("reject with icmpx type admin-prohibited".to_string());
        }
        let client = state.uplink.client_addr();
        if state.no_new {
            rules.push("tcp flags & (syn | ack) == syn drop".to_string());
        }
        for p in &state.dropped {
            rules.push(format!("ip saddr {client} tcp sport {p} drop"));
            rules.push(format!("ip daddr {client} tcp dport {p} drop"));
        }
        if !rules.is_empty() {
            script += &format!(
                "table {NFT_TABLE} {{\n  chain forward {{\n    \
                 type filter hook forward priority 0; policy accept;\n"
            );
            for rule in rules {
                script += &format!("    {rule}\n");
            }
            script += "  }\n}\n";
        }
        nft(&self.router, &script);
    }

    /// Addresses, links and routes of all three namespaces, for failure messages.
    fn describe(&self) -> String {
        let mut s = String::new();
        for ns in [&self.server, &self.router, &self.client] {
            for what in [&["-br", "addr"][..], &["route"][..]] {
                let out = run_timeout(ip_cmd(ns).args(what), CMD_TIMEOUT);
                s += &format!(
                    "--- {ns}: ip {} ---\n{}",
                    what.join(" "),
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
        s
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let mut errors = Vec::new();
        for name in self.created.iter().rev() {
            let name = name.clone();
            match panic::catch_unwind(AssertUnwindSafe(|| remove_netns(&name))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push(format!("removing namespace {name} panicked")),
            }
        }
        if !errors.is_empty() {
            let e = errors.join("\n");
            // A leaked namespace is a failed test, unless the test is already failing.
            if thread::panicking() {
                eprintln!("ressh-testkit: {e}");
            } else {
                panic!("ressh-testkit: {e}");
            }
        }
    }
}

/// One network namespace with nothing but its loopback interface up (127.0.0.1 and
/// ::1): no route anywhere else, so a lookup of a name server fails at once rather
/// than waiting for an answer, and fixed port numbers never meet another test's.
/// On drop, every process inside is killed and the namespace deleted. Requires root.
#[derive(Debug)]
pub struct Loopback {
    name: String,
}

impl Loopback {
    /// Creates the namespace `rs-<tag>-<pid>-<n>-l` (`tag` as in [`Net::new`]).
    pub fn new(tag: &str) -> Loopback {
        require_root();
        require_cmd("ip");
        let name = unique_name(&clean_tag(tag), "l");
        add_netns(&name);
        let ns = Loopback { name };
        ip_batch(&ns.name, "link set lo up\n");
        ns
    }

    /// The namespace's name (for `ip netns exec`, `ip -n`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes `cmd`, when spawned, run inside the namespace; see [`Net::in_server`].
    pub fn in_ns<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        in_ns(&self.name, cmd)
    }

    /// SIGKILLs every process left inside the namespace (what a test started there
    /// and did not stop, e.g. a daemon whose test timed out) and returns their pids,
    /// empty when there was none. Panics if one survives.
    pub fn kill_all(&self) -> Vec<u32> {
        kill_all_in(&self.name).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        if let Err(e) = remove_netns(&self.name) {
            if thread::panicking() {
                eprintln!("ressh-testkit: {e}");
            } else {
                panic!("ressh-testkit: {e}");
            }
        }
    }
}

/// A namespace name's tag: at most 12 characters, letters, digits and `_` (the rest
/// becomes `_`).
fn clean_tag(tag: &str) -> String {
    tag.chars()
        .take(12)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn ns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// `rs-<tag>-<pid>-<n>-<side>`, unused so far.
fn unique_name(tag: &str, side: &str) -> String {
    loop {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("rs-{tag}-{}-{n}-{side}", process::id());
        if !ns_path(&name).exists() {
            return name;
        }
    }
}

fn add_netns(name: &str) {
    let _guard = NETNS_ADD.lock().unwrap_or_else(|e| e.into_inner());
    let out = run_timeout(
        Command::new(require_cmd("ip")).args(["netns", "add", name]),
        CMD_TIMEOUT,
    );
    if !out.status.success() {
        panic!(
            "cannot create network namespace {name} (`ip netns add`): {}\n{}",
            out.status,
            describe_output(&out)
        );
    }
}

/// Deletes a namespace made by [`add_netns`], ignoring errors (used on failure paths).
fn delete_netns(name: &str) {
    let _ = panic::catch_unwind(|| remove_netns(name));
}

/// Kills every process inside namespace `name` (never this one), then deletes it.
fn remove_netns(name: &str) -> Result<(), String> {
    if !ns_path(name).exists() {
        return Ok(());
    }
    kill_all_in(name)?;
    let ip = require_cmd("ip");
    let out = run_timeout(Command::new(&ip).args(["netns", "del", name]), CMD_TIMEOUT);
    if !out.status.success() && ns_path(name).exists() {
        return Err(format!(
            "ip netns del {name} failed: {}\n{}",
            out.status,
            describe_output(&out)
        ));
    }
    Ok(())
}

/// SIGKILLs every process inside namespace `name` (never this one) until none is left;
/// returns the pids it found alive at first.
fn kill_all_in(name: &str) -> Result<Vec<u32>, String> {
    let ip = require_cmd("ip");
    let me = process::id().to_string();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut first = None;
    loop {
        let out = run_timeout(Command::new(&ip).args(["netns", "pids", name]), CMD_TIMEOUT);
        let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter(|p| *p != me)
            .map(str::to_string)
            .collect();
        let found =
            first.get_or_insert_with(|| pids.iter().filter_map(|p| p.parse().ok()).collect());
        if pids.is_empty() {
            return Ok(std::mem::take(found));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "processes {pids:?} in namespace {name} survive SIGKILL"
            ));
        }
        crate::cmd::signal_pids("KILL", &pids);
        thread::sleep(Duration::from_millis(10));
    }
}

/// Opens the namespace file of `name` (panics if it is gone).
fn ns_file(name: &str) -> File {
    let path = ns_path(name);
    File::open(&path).unwrap_or_else(|e| panic!("open network namespace {}: {e}", path.display()))
}

/// Moves the calling thread into the network namespace `ns`.
#[allow(unsafe_code)] // setns(2) from the C library (testkit is std only)
fn setns_net(ns: &File) -> io::Result<()> {
    // SAFETY: a plain syscall on a valid open descriptor; it touches no memory of ours.
    if unsafe { setns(ns.as_raw_fd(), CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[allow(unsafe_code)] // pre_exec (setns in the child)
pub(crate) fn in_ns<'c>(name: &str, cmd: &'c mut Command) -> &'c mut Command {
    let ns = ns_file(name);
    // SAFETY: the closure runs in the forked child before exec; it only makes the
    // setns syscall and reads errno: no allocation, no locks (async-signal-safe).
    unsafe { cmd.pre_exec(move || setns_net(&ns)) }
}

pub(crate) fn enter_ns<F, R>(name: &str, f: F) -> R
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let ns = ns_file(name);
    let name = name.to_string();
    thread::scope(|scope| {
        let handle = thread::Builder::new()
            .name(format!("netns {name}"))
            .spawn_scoped(scope, move || {
                setns_net(&ns).unwrap_or_else(|e| panic!("setns into {name}: {e}"));
                drop(ns);
                f()
            })
            .unwrap_or_else(|e| panic!("cannot start a thread: {e}"));
        handle
            .join()
            .unwrap_or_else(|payload| panic::resume_unwind(payload))
    })
}

fn spawn_in_ns<F, R>(name: &str, f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let ns = ns_file(name);
    let name = name.to_string();
    thread::Builder::new()
        .name(format!("netns {name}"))
        .spawn(move || {
            setns_net(&ns).unwrap_or_else(|e| panic!("setns into {name}: {e}"));
            drop(ns);
            f()
        })
        .unwrap_or_else(|e| panic!("cannot start a thread: {e}"))
}

/// Writes a sysctl under `/proc/sys/net` (the calling thread's namespace) and checks it.
fn write_sysctl(path: &Path, value: &str) {
    fs::write(path, value).unwrap_or_else(|e| panic!("write {value} to {}: {e}", path.display()));
    let got = fs::read_to_string(path).unwrap_or_default();
    assert_eq!(got.trim(), value, "{} did not take {value}", path.display());
}

/// `ip -n <ns>`.
fn ip_cmd(ns: &str) -> Command {
    let mut cmd = Command::new(require_cmd("ip"));
    cmd.args(["-n", ns]);
    cmd
}

/// Runs `cmd` with [`CMD_TIMEOUT`] and panics with its output unless it succeeds.
fn ok(cmd: &mut Command) -> Output {
    let out = run_timeout(cmd, CMD_TIMEOUT);
    if !out.status.success() {
        panic!("{cmd:?} failed: {}\n{}", out.status, describe_output(&out));
    }
    out
}

/// Runs `ip -n <ns> -batch -` on `script`, panicking with the script and output on error.
fn ip_batch(ns: &str, script: &str) {
    let out = run_with_stdin(
        ip_cmd(ns).args(["-batch", "-"]),
        script.as_bytes(),
        CMD_TIMEOUT,
    );
    if !out.status.success() {
        panic!(
            "ip -n {ns} -batch failed: {}\n--- script ---\n{script}{}",
            out.status,
            describe_output(&out)
        );
    }
}

/// Runs `nft -f -` on `script` inside namespace `ns`.
fn nft(ns: &str, script: &str) {
    let mut cmd = Command::new(require_cmd("nft"));
    in_ns(ns, cmd.args(["-f", "-"]));
    let out = run_with_stdin(&mut cmd, script.as_bytes(), CMD_TIMEOUT);
    if !out.status.success() {
        panic!(
            "nft -f in {ns} failed: {}\n--- script ---\n{script}{}",
            out.status,
            describe_output(&out)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    /// Only loopback inside; `kill_all` kills what was left there and nothing else;
    /// drop deletes the namespace.
    #[test]
    fn loopback_isolated_killed_and_removed() {
        let ns = Loopback::new("lo test");
        let links = ok(ip_cmd(ns.name()).args(["-o", "link", "show"]));
        let links = String::from_utf8_lossy(&links.stdout).into_owned();
        assert_eq!(links.lines().count(), 1, "{links}");
        assert!(links.contains(": lo: ") && links.contains("UP"), "{links}");
        let routes = ok(ip_cmd(ns.name()).args(["route", "show"]));
        assert!(routes.stdout.is_empty(), "a route in a loopback namespace");

        let mut inside = Command::new(require_cmd("sleep"));
        let mut inside = ns
            .in_ns(inside.arg("60").stdout(Stdio::null()))
            .spawn()
            .unwrap();
        let mut outside = Command::new(require_cmd("sleep"))
            .arg("60")
            .spawn()
            .unwrap();
        let killed = ns.kill_all();
        assert_eq!(killed, [inside.id()]);
        assert!(
            inside.wait().unwrap().code().is_none(),
            "killed by a signal"
        );
        assert!(
            outside.try_wait().unwrap().is_none(),
            "the outside process lives"
        );
        outside.kill().unwrap();
        outside.wait().unwrap();
        assert!(ns.kill_all().is_empty());

        let path = ns_path(ns.name());
        assert!(path.exists());
        drop(ns);
        assert!(!path.exists(), "{} left behind", path.display());
    }
}
