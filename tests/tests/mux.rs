//! Issue 17: connection sharing (ControlMaster) with OpenSSH's
//! multiplexing protocol, against a loopback resshd, both ways with
//! Debian's stock `ssh`:
//!
//! - a ressh master (`-M -S -N -f`) serves stock `ssh -S`: `-O check`,
//!   sessions with their exit status, stdout and stderr apart and stdin,
//!   `-O forward`/`-O cancel` of `-L` and `-R` (a port the server
//!   allocates), `-W`, `-O proxy` (exit status, 3 MB through `cat`, an
//!   idle session whose keepalives are answered), all on the master's one
//!   connection (resshd accepts one login), and
//!   `-O exit` ends the master and removes its socket;
//! - a stock `ssh -t` client in a real terminal (tmux) gets a pty of the
//!   terminal's size through a ressh master, resizes reach it, `~.` ends
//!   it (and
//!   ressh `-t` through a stock master likewise);
//! - `ControlMaster auto` + `ControlPersist yes`: a stale socket is
//!   replaced; the first ressh becomes
//!   the master in the background and runs its command through it, the
//!   second rides it;
//! - `-MM` asks (SSH_ASKPASS) before each client's session;
//! - `ControlPersist 3` ends the background master 3 s after its last
//!   client; `-O stop` removes the socket and the master stays;
//! - ressh is a mux client of a stock `ssh` master (sessions, `-O check`,
//!   `-O forward`/`cancel`, a session's `-L` handed to the master, `-W`,
//!   `-O exit`);
//! - ressh in proxy mode (`-O proxy`) through a ressh master and through a
//!   stock `ssh` master logged in to Debian's sshd: exit status, stdout
//!   and stderr apart, 3 MiB through `cat` (sha256), a login shell on a
//!   pty in tmux of the terminal's size that follows a resize and passes
//!   its exit status, `-W`, `-N -L`, a `-R` a ressh master refuses (a
//!   warning, the session goes on), a `-R` of a fixed port through a stock
//!   master (which relays the request, not the reply) carrying connections,
//!   a `-R` of a Unix socket failing as a refused one, not asked for (an
//!   ssh master ends a proxy client that asks), `-A` and `-Y` reaching no
//!   agent and no display through either master (a warning each); every
//!   one a proxy client in the master's log, none a mux session; a fake
//!   master saying what no master says (lengths over the bound, a refusal,
//!   bytes after MUX_S_PROXY, padding, a confirmation of no channel, a
//!   truncated message) ends ressh with 255 and a message, never a panic;
//! - 50 sequential commands of stock `ssh -S` through a ressh master whose
//!   connection is cut once (a recording proxy in front of resshd), the
//!   cut while one of them runs beside `-O proxy` ones of stock ssh and of
//!   ressh: every output arrives, exactly once;
//! - hostile mux clients (lengths over the bound, garbage, requests before
//!   the hello, descriptors nobody asked for) are dropped one by one while
//!   the master serves on;
//! - mux clients' sessions forward the agent and X11 as OpenSSH's master
//!   does (the client asks, the master's ForwardAgent and ForwardX11 with
//!   its own $DISPLAY decide): stock `ssh -S -A -Y` and `ressh -S -A -Y`
//!   through a ressh master started with `-oForwardAgent=<agent> -Y` under
//!   Xvfb get `ssh-add -l` listing the master's agent key and the Xvfb
//!   screen through `xwd`, in one session before and after a cut of the
//!   master's connection; the same clients without `-A -Y` get neither;
//! - the control socket: mode 0600, a socket owned by another user is
//!   refused by ressh's mux client, and a client of another uid is refused
//!   by the master (SO_PEERCRED).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// A loopback resshd and a user whose ssh_config points at it (at `via`,
/// a proxy's port, when given).
struct Setup {
    server: Resshd,
    login: Login,
    dir: TempDir,
}

fn setup(tag: &str) -> Setup {
    setup_with(tag, "")
}

/// [`setup`] with more resshd_config lines.
/// The server configuration of the X11 tests.
const X11_ON: &str = "X11Forwarding yes\n";

fn setup_with(tag: &str, server_extra: &str) -> Setup {
    let (server, login, dir) = loopback_login(tag, server_extra, "ServerAliveInterval 1\n");
    Setup { server, login, dir }
}

impl Setup {
    fn sock(&self) -> PathBuf {
        self.dir.join("cm")
    }

    /// Stock ssh with the user's config and ControlPath.
    fn ssh(&self, args: &[&str]) -> Command {
        let mut c = Command::new(require_cmd("ssh"));
        c.arg("-F")
            .arg(&self.login.config)
            .arg("-S")
            .arg(self.sock());
        c.args(args);
        c
    }

    /// ressh with the user's config and ControlPath.
    fn ressh(&self, args: &[&str]) -> Command {
        let mut c = ressh_here(&self.login.config, &["-S"]);
        c.arg(self.sock()).args(args);
        c
    }

    /// A recording proxy in front of resshd (to cut the connection); the
    /// user's ssh_config and known_hosts now point at it.
    fn via_proxy(&self) -> Proxy {
        let proxy = Proxy::start((std::net::Ipv4Addr::LOCALHOST, self.server.port()).into());
        let known = self.dir.join("known_hosts");
        fs::write(&known, known_hosts_at(&self.server, proxy.port)).unwrap();
        write_client_config(
            &self.login.config,
            &self.login.user.name,
            &self.login.key,
            &known,
            "127.0.0.1",
            proxy.port,
            "ServerAliveInterval 1\n",
        );
        proxy
    }

    /// How many logins resshd accepted.
    fn logins(&self) -> usize {
        count(&self.server.log(), "Accepted publickey")
    }
}

/// A TCP echo server on 127.0.0.1: its port.
fn echo_server() -> u16 {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    serve_echo(move || l.accept().map(|(c, _)| c));
    port
}

/// Whether bytes sent to 127.0.0.1:`port` come back.
fn echoes(port: u16) -> bool {
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let msg = b"through the master\n";
    let mut back = [0u8; 19];
    c.write_all(msg).is_ok() && c.read_exact(&mut back).is_ok() && &back == msg
}

/// `-O forward` (or `cancel`) of `spec` (`-L`/`-R`/`-D` and its value)
/// through `cmd`: its stdout.
fn control_forward(cmd: &mut Command, op: &str, spec: [&str; 2]) -> String {
    cmd.args(["-O", op, spec[0], spec[1], "server"]);
    run_ok_out(cmd)
}

/// A master in the background, killed on drop if still there.
struct Master(u32);

impl Drop for Master {
    fn drop(&mut self) {
        if alive(self.0) {
            signal(self.0, "KILL");
        }
    }
}

/// `-O check` through `cmd`: the master's pid.
pub(crate) fn check(cmd: &mut Command) -> u32 {
    let out = run_timeout(cmd, T);
    let err = text(&out.stderr);
    assert!(out.status.success(), "-O check: {}\n{err}", out.status);
    let pid = err
        .split("Master running (pid=")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok());
    pid.unwrap_or_else(|| panic!("no pid in {err:?}"))
}

fn run_ok_out(cmd: &mut Command) -> String {
    let out = run_timeout(cmd, T);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Starts a ressh master (`-M -N -f`, `extra` options before) and returns
/// it, checked by stock `ssh -O check`.
fn ressh_master(s: &Setup, extra: &[&str]) -> Master {
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["-M", "-N", "-f", "server"]);
    run_ok_out(&mut s.ressh(&args));
    let pid = check(&mut s.ssh(&["-O", "check", "server"]));
    assert_eq!(comm(pid).as_deref(), Some("ressh"), "the master is ressh");
    Master(pid)
}

#[test]
fn ressh_master_serves_stock_ssh() {
    let s = setup("muxm");
    let master = ressh_master(&s, &[]);
    let meta = fs::symlink_metadata(s.sock()).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "control socket mode");
    assert_eq!(meta.uid(), nix::unistd::getuid().as_raw());

    // Exit status, stdout and stderr apart.
    let out = run_timeout(&mut s.ssh(&["server", "echo out; echo err >&2; exit 3"]), T);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("err"));
    // stdin, to its end.
    let out = run_with_stdin(
        &mut s.ssh(&["server", "cat; echo done"]),
        b"hello\nworld\n",
        T,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello\nworld\ndone\n");
    // Proxy mode (-O proxy): ssh speaks the connection protocol over the
    // control socket; the master carries its channels.
    proxy_sessions(&|a| s.ssh(a), "muxm");
    // Idle for longer than ServerAliveInterval 1 × ServerAliveCountMax 3:
    // its keepalives are answered.
    assert_eq!(
        run_ok_out(&mut s.ssh(&["-O", "proxy", "server", "sleep 5; echo late"])),
        "late\n"
    );
    // A second client alongside a long one.
    let mut long = Client::spawn(&mut s.ssh(&["server", "echo started; sleep 10; echo ended"]));
    long.wait_lines(0, T);
    assert_eq!(
        run_ok_out(&mut s.ssh(&["server", "echo beside"])),
        "beside\n"
    );
    assert_eq!(long.line_count(), 1, "the long one still runs");
    assert!(long.wait_exit(T).success());
    assert_eq!(
        long.out_lines()
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>(),
        ["started", "ended"]
    );
    // Forwards added and removed through the master: -L, and -R on a port
    // the server allocates (printed by ssh).
    let echo = echo_server();
    let lport = free_port();
    let l = format!("{lport}:127.0.0.1:{echo}");
    control_forward(&mut s.ssh(&[]), "forward", ["-L", &l]);
    assert!(echoes(lport), "-L through the ressh master");
    control_forward(&mut s.ssh(&[]), "cancel", ["-L", &l]);
    assert!(!echoes(lport), "-L still there after -O cancel");
    let r = format!("0:127.0.0.1:{echo}");
    let rport: u16 = control_forward(&mut s.ssh(&[]), "forward", ["-R", &r])
        .trim()
        .parse()
        .expect("the allocated port");
    assert!(echoes(rport), "-R through the ressh master");
    // -W (MUX_C_NEW_STDIO_FWD): stdin and stdout to the echo server.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let w = format!("127.0.0.1:{echo}");
    let out = run_with_stdin(&mut s.ssh(&["-W", &w, "server"]), &data, T);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout == data, "-W through the ressh master");
    // Everything rode the master's one connection.
    assert_eq!(s.logins(), 1, "{}", s.server.log());

    let out = run_timeout(&mut s.ssh(&["-O", "exit", "server"]), T);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for(
        "the master to exit",
        T,
        || (!alive(master.0)).then_some(()),
        || s.server.log(),
    );
    assert!(!s.sock().exists(), "the socket is removed");
}

/// A stock `ssh -t` client of a ressh master in a real terminal (tmux):
/// the remote pty has its terminal's size, and follows it when the window
/// is resized (ssh relays SIGWINCH to the master, which sends the new size);
/// `~.` ends that session and not the master.
#[test]
fn pty_session_through_ressh_master_follows_resizes() {
    let s = setup("muxt");
    let _master = ressh_master(&s, &[]);
    let line = format!(
        "{} -F {} -S {} -t server 'stty size; read x; stty size; read y'",
        require_cmd("ssh").display(),
        sq(&s.login.config.to_string_lossy()),
        sq(&s.sock().to_string_lossy()),
    );
    let tmux = Tmux::new("muxt");
    tmux.start(80, 24, &line);
    tmux.wait("the first size", |sc| sc.contains("24 80"));
    tmux.run(&["resize-window", "-t", "main", "-x", "100", "-y", "30"]);
    // Let the signal reach the master before asking again.
    std::thread::sleep(Duration::from_millis(500));
    tmux.keys(&["Enter"]);
    tmux.wait("the new size", |sc| sc.contains("30 100"));
    // At the start of a line, ~. ends this session (the remote `read y`
    // would otherwise wait for a newline).
    tmux.keys(&["-l", "~."]);
    wait_for(
        "~. to end the shared session",
        T,
        || (!tmux.alive()).then_some(()),
        || tmux.screen(),
    );
    assert!(alive(_master.0), "~. of a client ended the master");
    assert_eq!(s.logins(), 1, "{}", s.server.log());
}

/// The other way round: ressh `-t` in tmux through a stock ssh master;
/// ressh relays SIGWINCH to the master as ssh does.
#[test]
fn ressh_pty_through_stock_master_follows_resizes() {
    let s = setup("muxr");
    run_ok_out(&mut s.ssh(&["-M", "-N", "-f", "server"]));
    let _master = Master(check(&mut s.ssh(&["-O", "check", "server"])));
    let line = format!(
        "{} -F {} -S {} -t server 'stty size; read x; stty size; read y'",
        ressh_bin().display(),
        sq(&s.login.config.to_string_lossy()),
        sq(&s.sock().to_string_lossy()),
    );
    let tmux = Tmux::new("muxr");
    tmux.start(80, 24, &line);
    tmux.wait("the first size", |sc| sc.contains("24 80"));
    tmux.run(&["resize-window", "-t", "main", "-x", "100", "-y", "30"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux.keys(&["Enter"]);
    tmux.wait("the new size", |sc| sc.contains("30 100"));
    tmux.keys(&["Enter"]);
    assert_eq!(s.logins(), 1, "{}", s.server.log());
}

#[test]
fn auto_master_with_persist() {
    let s = setup("muxp");
    // A stale socket of ours (nobody listens): auto removes it and becomes
    // the master.
    drop(UnixListener::bind(s.sock()).unwrap());
    assert!(s.sock().exists());
    let opts = ["-o", "ControlMaster=auto", "-o", "ControlPersist=yes"];
    let mut args = opts.to_vec();
    args.extend(["server", "echo first; sleep 1; exit 2"]);
    let mut first = Client::spawn(&mut s.ressh(&args));
    first.wait_lines(0, T);
    // The foreground process is only a mux client now: the connection's
    // TCP socket is the background master's alone (a copy here would keep
    // a replaced connection from closing).
    let held: Vec<TcpSocket> = tcp_sockets(first.pid())
        .into_iter()
        .filter(|s| s.fd > 2)
        .collect();
    assert!(held.is_empty(), "the mux client holds TCP sockets {held:?}");
    assert_eq!(first.wait_exit(T).code(), Some(2), "{}", first.describe());
    assert_eq!(first.line_count(), 1);
    // The master stays in the background.
    let master = Master(check(&mut s.ressh(&["-O", "check", "server"])));
    assert_eq!(comm(master.0).as_deref(), Some("ressh"));
    let mut args = opts.to_vec();
    args.extend(["server", "echo second"]);
    assert_eq!(run_ok_out(&mut s.ressh(&args)), "second\n");
    assert_eq!(s.logins(), 1, "{}", s.server.log());
    let out = run_timeout(&mut s.ressh(&["-O", "exit", "server"]), T);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Exit request sent."));
    wait_for(
        "the master to exit",
        T,
        || (!alive(master.0)).then_some(()),
        String::new,
    );
}

/// `-MM` (ControlMaster ask): each client's session is put to the user
/// (SSH_ASKPASS, forced); refused, stock ssh connects by itself instead;
/// allowed, it rides the master.
#[test]
fn ask_master_asks_for_each_session() {
    let s = setup("muxa");
    let answer = s.dir.join("answer");
    let asked = s.dir.join("asked");
    let script = s.dir.join("askpass");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" >> {}\ncat {}\n",
            sq(&asked.to_string_lossy()),
            sq(&answer.to_string_lossy())
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(&answer, "no\n").unwrap();
    let mut cmd = s.ressh(&["-o", "BatchMode=no", "-MM", "-N", "-f", "server"]);
    cmd.env("SSH_ASKPASS", &script)
        .env("SSH_ASKPASS_REQUIRE", "force");
    run_ok_out(&mut cmd);
    let _master = Master(check(&mut s.ssh(&["-O", "check", "server"])));
    assert_eq!(s.logins(), 1);
    assert_eq!(
        run_ok_out(&mut s.ssh(&["server", "echo refused"])),
        "refused\n"
    );
    assert_eq!(s.logins(), 2, "refused, ssh logs in by itself");
    let prompts = fs::read_to_string(&asked).unwrap_or_default();
    assert!(
        prompts.contains("Allow shared connection to 127.0.0.1?"),
        "{prompts:?}"
    );
    fs::write(&answer, "yes\n").unwrap();
    assert_eq!(
        run_ok_out(&mut s.ssh(&["server", "echo allowed"])),
        "allowed\n"
    );
    assert_eq!(s.logins(), 2, "allowed, through the master");
    assert_eq!(
        fs::read_to_string(&asked)
            .unwrap_or_default()
            .lines()
            .count(),
        2
    );
}

/// `ControlPersist` with a time: the background master ends that long
/// after its last client, and removes its socket; `-O stop` makes a master
/// stop listening while it stays.
#[test]
fn persist_timeout_and_stop() {
    let s = setup("muxq");
    let args = [
        "-o",
        "ControlMaster=auto",
        "-o",
        "ControlPersist=3",
        "server",
        "echo once",
    ];
    assert_eq!(run_ok_out(&mut s.ressh(&args)), "once\n");
    let master = Master(check(&mut s.ressh(&["-O", "check", "server"])));
    let idle = std::time::Instant::now();
    wait_for(
        "the master to end after ControlPersist",
        T,
        || (!alive(master.0)).then_some(()),
        String::new,
    );
    let took = idle.elapsed();
    assert!(took >= Duration::from_secs(2), "ended after {took:?}");
    assert!(!s.sock().exists(), "the socket is removed");

    let master = ressh_master(&s, &[]);
    let out = run_timeout(&mut s.ssh(&["-O", "stop", "server"]), T);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!s.sock().exists(), "the socket is removed");
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(master.0), "-O stop ended the master");
}

#[test]
fn ressh_client_of_stock_master() {
    let s = setup("muxs");
    run_ok_out(&mut s.ssh(&["-M", "-N", "-f", "server"]));
    let master = Master(check(&mut s.ressh(&["-O", "check", "server"])));
    assert_eq!(comm(master.0).as_deref(), Some("ssh"), "the master is ssh");
    let out = run_timeout(
        &mut s.ressh(&["server", "echo out; echo err >&2; exit 4"]),
        T,
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"));
    let out = run_with_stdin(&mut s.ressh(&["server", "wc -c"]), &[b'x'; 100_000], T);
    assert_eq!(text(&out.stdout).trim(), "100000", "{}", text(&out.stderr));
    // ressh's -O forward and cancel, and a session with a -L, which the
    // master takes on.
    let echo = echo_server();
    let (p1, p2) = (free_port(), free_port());
    let l = format!("{p1}:127.0.0.1:{echo}");
    control_forward(&mut s.ressh(&[]), "forward", ["-L", &l]);
    assert!(echoes(p1), "-L through the ssh master");
    control_forward(&mut s.ressh(&[]), "cancel", ["-L", &l]);
    assert!(!echoes(p1), "-L still there after -O cancel");
    let l = format!("{p2}:127.0.0.1:{echo}");
    assert_eq!(
        run_ok_out(&mut s.ressh(&["-L", &l, "server", "echo with"])),
        "with\n"
    );
    assert!(echoes(p2), "the session's -L stays with the master");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let w = format!("127.0.0.1:{echo}");
    let out = run_with_stdin(&mut s.ressh(&["-W", &w, "server"]), &data, T);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout == data, "ressh -W through the ssh master");
    assert_eq!(s.logins(), 1, "{}", s.server.log());
    let out = run_timeout(&mut s.ressh(&["-O", "exit", "server"]), T);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for(
        "the master to exit",
        T,
        || (!alive(master.0)).then_some(()),
        String::new,
    );
}

/// How many `-O proxy` clients [`ressh_proxy_sessions`] runs.
const PROXY_SESSIONS: usize = 5;

/// `-O proxy` sessions through the master that `client` (a ressh or
/// stock ssh command with the ControlPath) reaches: exit status, stdout and stderr apart,
/// 3 MiB through `cat` (sha256), a login shell on a pty in a real
/// terminal (tmux) of its size, following a resize, its exit status, and
/// `-N -L`.
fn proxy_sessions(client: &dyn Fn(&[&str]) -> Command, tag: &str) {
    let out = run_timeout(
        &mut client(&["-O", "proxy", "server", "echo out; echo err >&2; exit 5"]),
        T,
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"), "{}", text(&out.stderr));
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 253) as u8).collect();
    let out = run_with_stdin(&mut client(&["-O", "proxy", "server", "cat"]), &data, T);
    assert!(
        out.status.success(),
        "{:?}, {} bytes out: {}",
        out.status,
        out.stdout.len(),
        text(&out.stderr)
    );
    assert_eq!(
        openssl::sha::sha256(&out.stdout),
        openssl::sha::sha256(&data),
        "3 MiB through cat in proxy mode ({} bytes came back)",
        out.stdout.len()
    );
    // A login shell on a pty (no command, stdin a terminal).
    let line = client(&["-O", "proxy", "server"]);
    let line = std::iter::once(line.get_program())
        .chain(line.get_args())
        .map(|a| sq(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    let tmux = Tmux::new(tag);
    tmux.start(80, 24, &format!("{line}; echo \"exit=$?\"; sleep 60"));
    tmux.keys(&["-l", "tty; stty size"]);
    tmux.keys(&["Enter"]);
    tmux.wait("a pty of the terminal's size", |sc| {
        sc.contains("/dev/pts/") && sc.contains("24 80")
    });
    tmux.run(&["resize-window", "-t", "main", "-x", "100", "-y", "30"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux.keys(&["-l", "stty size"]);
    tmux.keys(&["Enter"]);
    tmux.wait("the new size", |sc| sc.contains("30 100"));
    tmux.keys(&["-l", "exit 7"]);
    tmux.keys(&["Enter"]);
    tmux.wait("the shell's exit status", |sc| sc.contains("exit=7"));
    let echo = echo_server();
    let lport = free_port();
    let l = format!("{lport}:127.0.0.1:{echo}");
    let mut fwd = Client::spawn(&mut client(&["-O", "proxy", "-N", "-L", &l, "server"]));
    wait_for(
        "-L of -N in proxy mode",
        T,
        || echoes(lport).then_some(()),
        || fwd.describe(),
    );
    signal(fwd.pid(), "TERM");
    fwd.wait_exit(T);
}

/// [`proxy_sessions`] of `ressh`, and `-W` in proxy mode (which stock ssh
/// refuses: "Cannot specify stdio forward with -O").
fn ressh_proxy_sessions(ressh: &dyn Fn(&[&str]) -> Command, tag: &str) {
    proxy_sessions(ressh, tag);
    let echo = echo_server();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let w = format!("127.0.0.1:{echo}");
    let out = run_with_stdin(&mut ressh(&["-O", "proxy", "-W", &w, "server"]), &data, T);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout == data, "-W in proxy mode");
}

/// ressh in proxy mode (`-O proxy`) through a ressh master: its sessions
/// ride the master's one connection.
#[test]
fn ressh_proxy_client_of_ressh_master() {
    let s = setup("muxy");
    let log = s.dir.join("master.log");
    let log_arg = log.to_string_lossy();
    let _master = ressh_master(&s, &["-E", &log_arg, "-o", "LogLevel=DEBUG2"]);
    ressh_proxy_sessions(&|a| s.ressh(a), "muxy");
    // A ressh master refuses a proxy client's -R (REQUEST_FAILURE padded
    // for OpenSSH's reader): a warning, as ssh's, and the session goes on.
    let out = run_timeout(
        &mut s.ressh(&["-O", "proxy", "-R", "0:127.0.0.1:22", "server", "echo on"]),
        T,
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(text(&out.stdout), "on\n");
    assert!(err.contains("remote port forwarding failed"), "{err}");
    assert_eq!(s.logins(), 1, "{}", s.server.log());
    // Each in proxy mode, none a mux session (0x10000002).
    let log = fs::read_to_string(&log).unwrap();
    assert_eq!(
        count(&log, "mux request 0x1000000f"),
        PROXY_SESSIONS + 1,
        "{log}"
    );
    assert_eq!(count(&log, "mux request 0x10000002"), 0, "{log}");
}

/// A stock `ssh -M -N -f` master logged in to Debian's sshd (its log at
/// `-vv` in `log`), and the commands of its ControlPath.
struct StockMaster {
    _master: Master,
    sshd: Sshd,
    login: Login,
    dir: TempDir,
    log: PathBuf,
}

impl StockMaster {
    fn start(tag: &str, sshd_extra: &str) -> StockMaster {
        require_root();
        let sshd = Sshd::start(sshd_extra);
        let dir = TempDir::new(&format!("e2e-{tag}"));
        let known_hosts = dir.join("known_hosts");
        fs::write(&known_hosts, sshd.known_hosts()).unwrap();
        let login = Lab::make_login_to(&dir, &known_hosts, tag, "", ("127.0.0.1", sshd.port()));
        let log = dir.join("master.log");
        let ssh = |args: &[&str]| StockMaster::ssh_cmd(&login.config, &dir.join("cm"), args);
        let log_arg = log.to_string_lossy();
        run_ok_out(&mut ssh(&[
            "-E", &log_arg, "-vv", "-M", "-N", "-f", "server",
        ]));
        let master = Master(check(&mut ssh(&["-O", "check", "server"])));
        assert_eq!(comm(master.0).as_deref(), Some("ssh"), "the master is ssh");
        StockMaster {
            _master: master,
            sshd,
            login,
            dir,
            log,
        }
    }

    /// Stock ssh with `config` and ControlPath `sock`, without an agent.
    fn ssh_cmd(config: &Path, sock: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(require_cmd("ssh"));
        c.arg("-F")
            .arg(config)
            .arg("-S")
            .arg(sock)
            .args(args)
            .env_remove("SSH_AUTH_SOCK");
        c
    }

    /// ressh with the user's config and ControlPath.
    fn ressh(&self, args: &[&str]) -> Command {
        let mut c = ressh_here(&self.login.config, &["-S"]);
        c.arg(self.dir.join("cm")).args(args);
        c
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap()
    }
}

/// ressh in proxy mode through a stock `ssh` master logged in to Debian's
/// sshd.
#[test]
fn ressh_proxy_client_of_stock_master() {
    let m = StockMaster::start("muxz", "");
    ressh_proxy_sessions(&|a| m.ressh(a), "muxz");
    // Each in proxy mode, none a mux session.
    let log = m.log();
    assert_eq!(count(&log, "proxy request"), PROXY_SESSIONS, "{log}");
    assert_eq!(count(&log, "request tty"), 0, "{log}");
    assert_eq!(
        count(&m.sshd.log(), "Accepted publickey"),
        1,
        "{}",
        m.sshd.log()
    );
}

/// `ressh -O proxy -R` through a stock `ssh` master: the master relays
/// the proxy client's `tcpip-forward` to sshd (noting that the server's
/// opens for that port are the client's) but not sshd's reply, which its
/// own reply queue swallows (clientloop.c, client_global_request_reply).
/// sshd listens and the master hands the `forwarded-tcpip` opens to the
/// proxy client: ressh takes them for a forward of a fixed port still
/// awaiting its reply, as ssh does, and the connection reaches its target
/// while the session goes on. A port the server allocates (0) is never
/// learnt: the session goes on, with no port to print.
#[test]
fn ressh_proxy_remote_forward_through_stock_master() {
    let m = StockMaster::start("muxf", "");
    let echo = echo_server();
    let rport = free_port();
    let r = format!("{rport}:127.0.0.1:{echo}");
    let (mut c, mut stdin) = Client::spawn_typed(&mut m.ressh(&[
        "-v",
        "-O",
        "proxy",
        "-R",
        &r,
        "server",
        "echo up; read x; echo on",
    ]));
    // The forward was asked for before the command, and sshd takes them in
    // order: it listens now.
    c.wait_lines(0, T);
    for n in 1..=2 {
        assert!(echoes(rport), "connection {n} through -R\n{}", c.describe());
    }
    stdin.write_all(b"\n").unwrap();
    drop(stdin);
    assert!(c.wait_exit(T).success(), "{}", c.describe());
    let lines: Vec<String> = c.out_lines().into_iter().map(|(_, l)| l).collect();
    assert_eq!(lines, ["up", "on"]);
    let err = c.stderr();
    assert!(
        !err.contains("remote forward success"),
        "a reply came: {err}"
    );
    assert!(!err.contains("WARNING"), "{err}");
    let log = m.log();
    let relayed = format!("client_request_forwarded_tcpip: listen localhost port {rport}");
    assert_eq!(count(&log, &relayed), 2, "{log}");
    // Port 0: no reply, so no port; the session is not held up.
    let zero = format!("0:127.0.0.1:{echo}");
    let out = run_timeout(
        &mut m.ressh(&["-O", "proxy", "-R", &zero, "server", "echo zero"]),
        T,
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(text(&out.stdout), "zero\n");
    assert!(!err.contains("Allocated port"), "{err}");
    // A Unix socket: the master would end the proxy client that asks (it
    // relays tcpip-forward only), so ressh does not ask; the forward fails
    // as a refused one, the session goes on, and so does the master.
    let path = m.login.user.home.join("never.sock");
    let unix = format!("{}:127.0.0.1:{echo}", path.display());
    let out = run_timeout(
        &mut m.ressh(&["-O", "proxy", "-R", &unix, "server", "echo unix"]),
        T,
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(text(&out.stdout), "unix\n");
    let failed = format!(
        "Warning: remote port forwarding failed for listen path {}",
        path.display()
    );
    assert!(err.contains(&failed), "{err}");
    let out = run_timeout(
        &mut m.ressh(&[
            "-oExitOnForwardFailure=yes",
            "-O",
            "proxy",
            "-R",
            &unix,
            "server",
            "echo never",
        ]),
        T,
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(err.contains(&failed), "{err}");
    assert_eq!(text(&out.stdout), "");
    assert!(!path.exists(), "{} made", path.display());
    run_ok(&mut m.ressh(&["-O", "check", "server"]));
}

/// `ressh -O proxy -A -Y` with an agent of its own (a key in it at
/// $SSH_AUTH_SOCK) and an X server (Xvfb at $DISPLAY), through a master
/// started without -A or -X (`ressh` runs the command and `master_log` is
/// the master's log): both requests reach the server, which sets
/// SSH_AUTH_SOCK and DISPLAY, but its agent and X11 connections open on
/// the master's connection and no master hands them to a proxy client:
/// the master refuses them (its two warnings), `ssh-add -l` gets no agent
/// and `xdpyinfo` no display, the proxy client's agent is never asked,
/// ressh warns that it cannot forward either, and the session ends as
/// usual.
fn proxy_agent_and_x11_are_not_forwarded(
    ressh: &dyn Fn(&[&str]) -> Command,
    key: &Path,
    dir: &Path,
    master_log: &dyn Fn() -> String,
) {
    use crate::agent_forwarding as agent;
    let own = SshAgent::start(dir, "own-agent.sock");
    own.add(key);
    let x = Xvfb::start(dir);
    let fp = agent::fingerprint(&key.with_extension("pub"));
    let probe = format!(
        "{}; echo \"display=${{DISPLAY-unset}}\"; xdpyinfo >/dev/null 2>&1; echo \"xdpy=$?\"; \
         echo after",
        agent::PROBE
    );
    let mut cmd = ressh(&[
        "-A",
        "-Y",
        "-oIdentityAgent=SSH_AUTH_SOCK",
        "-O",
        "proxy",
        "server",
        &probe,
    ]);
    let out = run_timeout(x.env(&mut cmd).env("SSH_AUTH_SOCK", &own.sock), T);
    let (o, err) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{o}\n{err}");
    assert_ne!(
        agent::field(&o, "sock"),
        Some("unset"),
        "not asked for\n{o}"
    );
    // ssh-add fails on the refused connection, or dies of SIGPIPE when
    // the server closed it before its request went.
    match agent::field(&o, "add") {
        Some("1") => assert!(err.contains("communication with agent failed"), "{err}"),
        Some("141") => {}
        _ => panic!("ssh-add -l did not fail as without an agent\n{o}\n{err}"),
    }
    assert!(!o.contains(&fp), "the proxy client's agent answered\n{o}");
    assert!(
        agent::field(&o, "display").is_some_and(|d| d.starts_with("localhost:")),
        "X11 not asked for\n{o}"
    );
    assert_eq!(agent::field(&o, "xdpy"), Some("1"), "xdpyinfo\n{o}\n{err}");
    assert!(o.ends_with("after\n"), "{o}");
    for warning in [
        "Warning: -O proxy cannot forward the agent at",
        "Warning: -O proxy cannot forward X11",
    ] {
        assert!(err.contains(warning), "no \"{warning}\": {err}");
    }
    let log = master_log();
    for refusal in ["tried agent forwarding.", "tried X11 forwarding."] {
        assert!(
            log.contains(&format!("Warning: ssh server {refusal}")),
            "the master did not refuse: {refusal}\n{log}"
        );
    }
}

/// [`proxy_agent_and_x11_are_not_forwarded`] through a ressh master (to
/// resshd) and a stock ssh master (to Debian's sshd), both servers with
/// `X11Forwarding yes`.
#[test]
fn ressh_proxy_client_cannot_forward_its_agent_or_x11() {
    let s = setup_with("muxg", X11_ON);
    let log = s.dir.join("master.log");
    let _master = ressh_master(&s, &["-E", &log.to_string_lossy()]);
    let master_log = || fs::read_to_string(&log).unwrap_or_default();
    proxy_agent_and_x11_are_not_forwarded(&|a| s.ressh(a), &s.login.key, s.dir.path(), &master_log);
    let m = StockMaster::start("muxk", X11_ON);
    proxy_agent_and_x11_are_not_forwarded(&|a| m.ressh(a), &m.login.key, m.dir.path(), &|| m.log());
}

/// A master that is not one (a socket of ours, a program answering the
/// hello): ressh in proxy mode decodes what it says strictly and within
/// bounds, and ends with 255 and a message, never a panic.
#[test]
fn ressh_proxy_client_of_a_hostile_master() {
    let dir = TempDir::new("e2e-muxw");
    let config = dir.join("ssh_config");
    fs::write(
        &config,
        "Host *\n    HostName 127.0.0.1\n    BatchMode yes\n",
    )
    .unwrap();
    let proxy_ok = packet(&[0x8000_000f, 0], &[]);
    let proxied = |frame: &[u8]| [proxy_ok.clone(), frame.to_vec()].concat();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a reply over the bound",
            0x7fff_ffffu32.to_be_bytes().to_vec(),
            "bad packet length",
        ),
        (
            "a refusal",
            packet(&[0x8000_0003, 0], &[b"no proxies here"]),
            "no proxies here",
        ),
        (
            "MUX_S_PROXY with more after it",
            packet(&[0x8000_000f, 0, 7], &[]),
            "unexpected reply",
        ),
        (
            "a proxy packet over the bound",
            proxied(&[0xff, 0xff, 0xff, 0xf0, 0]),
            "packet length",
        ),
        (
            "a proxy packet with padding",
            proxied(b"\0\0\0\x06\x04\x5d\0\0\0\0"),
            "padding",
        ),
        (
            "a confirmation of no channel",
            proxied(b"\0\0\0\x12\0\x5b\0\0\0\x09\0\0\0\0\0\0\0\0\0\0\x80\0"),
            "",
        ),
        ("a truncated message", proxied(b"\0\0\0\x03\0\x5d\x01"), ""),
    ];
    for (what, answer, says) in cases {
        let sock = dir.join("cm");
        let _ = fs::remove_file(&sock);
        let l = UnixListener::bind(&sock).unwrap();
        let fake = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            c.set_read_timeout(Some(T)).unwrap();
            // The hello, then MUX_C_PROXY.
            let mut got = [0u8; 24];
            c.read_exact(&mut got[..12]).unwrap();
            c.write_all(&packet(HELLO, &[])).unwrap();
            c.read_exact(&mut got[12..]).unwrap();
            c.write_all(&answer).unwrap();
            let mut rest = Vec::new();
            let _ = c.read_to_end(&mut rest);
            got
        });
        let mut cmd = ressh_here(&config, &["-S"]);
        cmd.arg(&sock).args(["-O", "proxy", "server", "true"]);
        let out = run_timeout(&mut cmd, T);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(255), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(err.contains(says), "{what}: {err}");
        let got = fake.join().unwrap();
        assert_eq!(
            got[12..],
            packet(&[0x1000_000f, 0], &[])[..],
            "{what}: MUX_C_PROXY after the hello"
        );
    }
}

#[test]
fn fifty_commands_through_a_cut() {
    let s = setup("muxc");
    let proxy = s.via_proxy();
    let _master = ressh_master(&s, &[]);
    for i in 0..50 {
        let cmd = if i == 25 {
            // The cut comes while this one runs, and proxy-mode ones
            // (-O proxy) of stock ssh and of ressh beside it.
            let cmd = "echo 25a; sleep 2; echo 25b";
            let mut c = Client::spawn(&mut s.ssh(&["server", cmd]));
            let mut px = Client::spawn(&mut s.ssh(&["-O", "proxy", "server", cmd]));
            let mut rpx = Client::spawn(&mut s.ressh(&["-O", "proxy", "server", cmd]));
            for c in [&c, &px, &rpx] {
                c.wait_lines(0, T);
            }
            proxy.cut();
            for c in [&mut c, &mut px, &mut rpx] {
                assert!(c.wait_exit(T).success(), "{}", c.describe());
                let lines: Vec<String> = c.out_lines().into_iter().map(|(_, l)| l).collect();
                assert_eq!(lines, ["25a", "25b"]);
            }
            continue;
        } else {
            format!("echo {i}")
        };
        assert_eq!(run_ok_out(&mut s.ssh(&["server", &cmd])), format!("{i}\n"));
    }
    let log = wait_reconnects(&s.server, 1, T);
    assert_eq!(reconnects(&log), 1, "{log}");
    assert_eq!(s.logins(), 1, "{}", s.server.log());
    assert!(proxy.accepted() >= 2);
}

/// Reads until the master closes the connection; panics if it has not
/// within 10 s.
fn closed_by_master(mut c: UnixStream, what: &str) {
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{what}: the master kept the connection: {e}"),
        }
    }
}

fn packet(words: &[u32], strings: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for w in words {
        body.extend_from_slice(&w.to_be_bytes());
    }
    for s in strings {
        body.extend_from_slice(&(s.len() as u32).to_be_bytes());
        body.extend_from_slice(s);
    }
    let mut p = (body.len() as u32).to_be_bytes().to_vec();
    p.extend(body);
    p
}

const HELLO: &[u32] = &[1, 4];

#[test]
fn hostile_mux_clients_are_dropped() {
    let s = setup("muxh");
    let master = ressh_master(&s, &[]);
    let hello = packet(HELLO, &[]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a length of 4 GiB",
            vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1],
        ),
        ("a length over the bound", {
            let mut p = hello.clone();
            p.extend((300u32 << 10).to_be_bytes());
            p.extend([0u8; 64]);
            p
        }),
        ("a request before the hello", packet(&[0x1000_0004, 1], &[])),
        ("another version", packet(&[1, 3], &[])),
        ("a zero length", {
            let mut p = hello.clone();
            p.extend([0, 0, 0, 0]);
            p
        }),
        ("a truncated session request", {
            let mut p = hello.clone();
            p.extend(packet(&[0x1000_0002, 7, 0, 1], &[]));
            p
        }),
        ("a session request whose strings overrun", {
            let mut p = hello.clone();
            let mut body = packet(&[0x1000_0002, 7], &[b""]);
            body.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            body.extend([0, 0, 0, 0]);
            body.extend([0x7f, 0xff, 0xff, 0xff]);
            let len = (body.len() - 4) as u32;
            body[..4].copy_from_slice(&len.to_be_bytes());
            p.extend(body);
            p
        }),
        ("a flag that is no flag", {
            let mut p = hello.clone();
            p.extend(packet(&[0x1000_0002, 7, 0, 9, 0, 0, 0, 0xffff_ffff], &[]));
            p
        }),
        ("a forward to port 70000", {
            let mut p = hello.clone();
            let mut body = Vec::new();
            for w in [0x1000_0006u32, 7, 1] {
                body.extend(w.to_be_bytes());
            }
            body.extend(9u32.to_be_bytes());
            body.extend(b"127.0.0.1");
            body.extend(70000u32.to_be_bytes());
            body.extend(1u32.to_be_bytes());
            body.push(b'h');
            body.extend(22u32.to_be_bytes());
            p.extend((body.len() as u32).to_be_bytes());
            p.extend(body);
            p
        }),
        ("a stdio forward to port 65536", {
            let mut p = hello.clone();
            let mut body = Vec::new();
            body.extend(0x1000_0008u32.to_be_bytes());
            body.extend(7u32.to_be_bytes());
            body.extend(0u32.to_be_bytes());
            body.extend(1u32.to_be_bytes());
            body.push(b'h');
            body.extend(65536u32.to_be_bytes());
            p.extend((body.len() as u32).to_be_bytes());
            p.extend(body);
            p
        }),
        ("a proxy packet with padding", {
            let mut p = hello.clone();
            p.extend(packet(&[0x1000_000f, 7], &[]));
            // length 6, padding length 1, SSH_MSG_IGNORE, a byte.
            p.extend([0, 0, 0, 6, 1, 2, 0, 0, 0, 0]);
            p
        }),
        (
            "a proxy channel open of an unknown kind, then data for it",
            {
                let mut p = hello.clone();
                p.extend(packet(&[0x1000_000f, 7], &[]));
                p.extend([0, 0, 0, 2, 0, 200]);
                p
            },
        ),
        ("garbage", {
            let mut p = hello.clone();
            p.extend((0..2000u32).map(|i| (i * 7919 % 251) as u8));
            p
        }),
    ];
    for (what, bytes) in cases {
        let mut c = UnixStream::connect(s.sock()).unwrap();
        // The master's hello first.
        let mut h = [0u8; 12];
        c.read_exact(&mut h).unwrap();
        assert_eq!(h, [0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 4], "{what}: hello");
        let _ = c.write_all(&bytes);
        closed_by_master(c, what);
        assert!(alive(master.0), "{what}: the master died");
    }
    // Descriptors nobody asked for.
    let mut c = UnixStream::connect(s.sock()).unwrap();
    c.write_all(&hello).unwrap();
    send_fd(&c, 0);
    closed_by_master(c, "a descriptor nobody asked for");
    // The master serves on.
    assert_eq!(check(&mut s.ssh(&["-O", "check", "server"])), master.0);
    assert_eq!(run_ok_out(&mut s.ssh(&["server", "echo still"])), "still\n");
}

/// Passes `fd` over `sock` with one byte (as ssh's mm_send_fd).
fn send_fd(sock: &UnixStream, fd: i32) {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd;
    let fds = [fd];
    let iov = [std::io::IoSlice::new(b"\0")];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .unwrap();
}

#[test]
fn control_socket_of_another_user_is_refused() {
    let s = setup("muxo");
    let other = TestUser::create("muxo2");
    // A socket someone else owns at the ControlPath.
    let l = UnixListener::bind(s.sock()).unwrap();
    l.set_nonblocking(true).unwrap();
    chown(&s.sock(), other.uid);
    let out = run_timeout(&mut s.ressh(&["-O", "check", "server"]), T);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("is owned by uid"),
        "{}",
        text(&out.stderr)
    );
    assert!(l.accept().is_err(), "ressh connected to a foreign socket");
    // A session with ControlMaster auto does not use it either: it
    // connects directly.
    let out = run_timeout(
        &mut s.ressh(&["-o", "ControlMaster=auto", "server", "echo direct"]),
        T,
    );
    assert_eq!(text(&out.stdout), "direct\n", "{}", text(&out.stderr));
    assert!(l.accept().is_err(), "ressh connected to a foreign socket");
}

#[test]
fn master_refuses_another_uid() {
    let s = setup("muxu");
    let other = TestUser::create("muxu2");
    let log = s.dir.join("master.log");
    let master = ressh_master(&s, &["-E", log.to_str().unwrap()]);
    // Let the other user reach the socket (as a lax umask or an ACL
    // would): only the master's own check stands in the way.
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(s.sock(), fs::Permissions::from_mode(0o666)).unwrap();
    let mut cmd = Command::new(require_cmd("setpriv"));
    cmd.args(["--reuid", &other.uid.to_string()])
        .args(["--regid", &other.gid.to_string(), "--clear-groups"])
        .arg(require_cmd("ssh"))
        .args(["-F", "/dev/null", "-S"])
        .arg(s.sock())
        .args(["-O", "check", "server"])
        .env("HOME", &other.home);
    let out = run_timeout(&mut cmd, T);
    assert_eq!(
        out.status.code(),
        Some(255),
        "another uid got an answer: {}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("Master running"));
    wait_for(
        "the master to log the refusal",
        T,
        || {
            fs::read_to_string(&log)
                .ok()
                .filter(|l| l.contains("uid mismatch"))
        },
        || fs::read_to_string(&log).unwrap_or_default(),
    );
    assert!(alive(master.0));
    assert_eq!(check(&mut s.ssh(&["-O", "check", "server"])), master.0);
}

fn chown(p: &Path, uid: u32) {
    nix::unistd::chown(p, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
}

#[test]
fn mux_clients_forward_the_agent_and_x11() {
    use crate::agent_forwarding as agent;
    use crate::x11_forwarding as x11;

    let s = setup_with("muxax", X11_ON);
    let proxy = s.via_proxy();
    let x = Xvfb::start(s.dir.path());
    let screen = x11::local_screen(&x);
    let agent_sock = SshAgent::start(s.dir.path(), "agent.sock");
    agent_sock.add(&s.login.key);
    let fp = agent::fingerprint(&s.login.key.with_extension("pub"));
    // The master forwards the agent at this path and X11 (trusted) to
    // its $DISPLAY; mux clients only ask.
    let forward = format!("-oForwardAgent={}", agent_sock.sock.display());
    run_ok_out(x.env(&mut s.ressh(&[&forward, "-Y", "-M", "-N", "-f", "server"])));
    let master = Master(check(&mut s.ssh(&["-O", "check", "server"])));
    let probe = format!("{}; {}", agent::PROBE, x11::PROBE);
    let user = s.login.user.name.clone();
    // Not asked for: neither. First, since a server that set up agent
    // forwarding for one session gives every later session of the
    // connection its socket, as sshd does.
    let clients = |args: &[&str], cmd: &str| {
        let mut all = vec![args.to_vec(), args.to_vec()];
        for a in &mut all {
            a.extend(["server", cmd]);
        }
        [("ssh", s.ssh(&all[0])), ("ressh", s.ressh(&all[1]))]
    };
    for (name, mut c) in clients(&[], &probe) {
        let out = run_ok_out(c.env_remove("DISPLAY").env_remove("SSH_AUTH_SOCK"));
        assert_eq!(agent::field(&out, "sock"), Some("unset"), "{name}: {out}");
        assert_eq!(x11::field(&out, "display"), Some("unset"), "{name}: {out}");
    }
    // The clients' own environment has neither an agent nor a display.
    // The probe runs before and after a cut of the master's connection
    // while the session is open: after the reconnect, the server's new
    // agent and X11 channels still reach the master's agent and display.
    let cut_probe = format!("{probe}; echo '--cut--'; read x; {probe}");
    for ((name, mut c), base) in clients(&["-A", "-Y"], &cut_probe).into_iter().zip(1..) {
        let (mut c, mut stdin) =
            Client::spawn_typed(c.env_remove("DISPLAY").env_remove("SSH_AUTH_SOCK"));
        wait_for(
            "the probe before the cut",
            T,
            || {
                c.out_lines()
                    .iter()
                    .any(|(_, l)| l == "--cut--")
                    .then_some(())
            },
            || c.describe(),
        );
        proxy.cut();
        wait_for(
            "the master to reconnect",
            T,
            || (reconnects(&s.server.log()) == base).then_some(()),
            || s.server.log(),
        );
        stdin.write_all(b"\n").unwrap();
        drop(stdin);
        assert!(c.wait_exit(T).success(), "{name}: {}", c.describe());
        let lines: Vec<String> = c.out_lines().into_iter().map(|(_, l)| l).collect();
        let at = lines.iter().position(|l| l == "--cut--").unwrap();
        for (when, out) in [("before", &lines[..at]), ("after", &lines[at + 1..])] {
            let out = out.join("\n");
            agent::assert_forwarded(&out, &user, &fp);
            let display = x11::field(&out, "display").unwrap_or_default();
            assert!(display.starts_with("localhost:1"), "{name} {when}: {out}");
            assert_eq!(
                x11::xwd(&out),
                Some(screen.as_str()),
                "{name} {when} the cut: xwd\n{out}\n{}",
                c.stderr()
            );
        }
    }
    assert_eq!(s.logins(), 1, "every session rode the master's connection");
    assert!(
        proxy.accepted() >= 3,
        "the master reconnected after each cut"
    );
    drop(master);
    report(
        "mux",
        "stock ssh and ressh through a ressh master: agent (ssh-add -l) and X11 (xwd) \
         forwarded on -A -Y only, and still after a cut of the master's connection",
    );
}
