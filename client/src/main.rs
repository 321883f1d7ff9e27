//! ressh: the ssh-compatible client of ressh.
//!
//! Exit status: the remote command's, or 255 for connection, protocol and
//! authentication errors, as ssh.

mod args;
mod askpass;
mod auth;
mod config;
mod escape;
mod fdio;
mod forward;
mod hostkey;
mod identity;
mod known_hosts;
mod log;
mod mux;
mod session;
mod sig;
mod socks;
mod sys;
mod transport;
mod tty;

use config::{ControlMaster, RequestTty, SessionType};
use session::{Plan, Quit, Session};

fn version() -> String {
    format!(
        "ressh {} (ssh-compatible client), {}",
        env!("CARGO_PKG_VERSION"),
        openssl::version::version()
    )
}

fn die(msg: &str) -> ! {
    log::write_stderr(format!("{msg}\n").as_bytes());
    std::process::exit(255)
}

/// Decides what the session is for: -W, -N, a subsystem, a command or a
/// shell, and whether it gets a pty (RequestTTY, -t/-T, and stdin).
fn plan(a: &args::Args, cfg: &config::Config) -> Result<Plan, String> {
    if let Some(w) = &a.stdio_forward {
        let (host, port) = args::split_host_port(w)
            .and_then(|(h, p)| Some((h, p?)))
            .ok_or_else(|| format!("ressh: bad stdio forwarding specification '{w}'"))?;
        return Ok(Plan::Stdio { host, port });
    }
    if cfg.session_type == SessionType::None {
        return Ok(Plan::None);
    }
    let command = if a.command.is_empty() {
        cfg.remote_command.clone()
    } else {
        Some(a.command.join(" "))
    };
    let subsystem = cfg.session_type == SessionType::Subsystem;
    if subsystem && command.is_none() {
        return Err("ressh: -s needs the subsystem name as the command".into());
    }
    let stdin_tty = tty::isatty(0) && !cfg.stdin_null;
    let pty = match cfg.request_tty {
        RequestTty::No => false,
        RequestTty::Force => true,
        RequestTty::Yes | RequestTty::Auto
            if cfg.request_tty == RequestTty::Yes || command.is_none() =>
        {
            if !stdin_tty {
                info!("Pseudo-terminal will not be allocated because stdin is not a terminal.");
            }
            stdin_tty
        }
        _ => false,
    };
    Ok(Plan::Session {
        command,
        subsystem,
        pty,
    })
}

/// `-O cmd`: a control command to the master of ControlPath; the exit
/// code.
fn control_command(cfg: &config::Config, cmd: &str) -> i32 {
    let Some(path) = &cfg.control_path else {
        die("No ControlPath specified for \"-O\" command");
    };
    if !matches!(cmd, "check" | "exit" | "stop" | "forward" | "cancel") {
        die(&format!("Invalid multiplex command.\n{}", args::USAGE));
    }
    let forwards = match mux::FwdReq::from_config(cfg) {
        Ok(f) => f,
        Err(e) => die(&format!("ressh: {e}")),
    };
    if matches!(cmd, "forward" | "cancel") && forwards.is_empty() {
        die(&format!("No forwardings specified for -O {cmd}"));
    }
    let fail = |e: std::io::Error| -> i32 {
        log::write_stderr(format!("Control socket connect({}): {e}\n", path.display()).as_bytes());
        255
    };
    let mut c = match mux::Client::connect(path) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let r = match cmd {
        "check" => c
            .alive()
            .map(|pid| format!("Master running (pid={pid})\r\n")),
        "exit" => c.terminate().map(|()| "Exit request sent.\r\n".to_string()),
        "forward" | "cancel" => {
            let mut r = Ok(String::new());
            for f in &forwards {
                match c.forward(cmd == "cancel", f) {
                    // As ssh: an allocated remote port on stdout.
                    Ok(Some(port)) => println!("{port}"),
                    Ok(None) => {}
                    Err(e) => {
                        r = Err(e);
                        break;
                    }
                }
            }
            r
        }
        _ => c
            .stop_listening()
            .map(|()| "Stop listening request sent.\r\n".to_string()),
    };
    match r {
        Ok(m) => {
            log::write_stderr(m.as_bytes());
            0
        }
        Err(e) => {
            log::write_stderr(format!("ressh: {e}\n").as_bytes());
            255
        }
    }
}

/// `-O proxy`: the session through the master of ControlPath in proxy
/// mode (MUX_C_PROXY), this process speaking the connection protocol on
/// the control socket.
fn proxy_session(mut cfg: config::Config, plan: Plan) -> Result<Session, Quit> {
    let Some(path) = cfg.control_path.clone() else {
        die("No ControlPath specified for \"-O\" command");
    };
    let fail = |msg: String| Quit {
        code: 255,
        msg: Some(msg),
    };
    let c = mux::Client::connect(&path)
        .map_err(|e| fail(format!("Control socket connect({}): {e}", path.display())))?;
    let sock = c
        .proxy()
        .map_err(|e| fail(format!("ressh: -O proxy: {e}")))?;
    // As ssh in proxy mode: no master of its own, and nothing for the
    // master but the connection protocol: ServerAlive probes (global
    // requests an OpenSSH master does not relay) are the master's part,
    // whose connection is the one to watch.
    cfg.control_master = ControlMaster::No;
    cfg.control_persist = None;
    cfg.server_alive_interval = 0;
    // The server's agent and X11 connections open on the master's
    // connection, and no master (ressh's or ssh's) hands them to a proxy
    // client: asked for as ssh asks, the agent is the master's, if it
    // forwards one, and an X11 connection meets the master's cookie check,
    // which knows only its own.
    if let Some(agent) = &cfg.forward_agent {
        crate::error!(
            "Warning: -O proxy cannot forward the agent at {}: the server's agent \
             connections go to the master, which answers them only if it forwards an agent",
            agent.display()
        );
    }
    if cfg.forward_x11 && std::env::var_os("DISPLAY").is_some_and(|d| !d.is_empty()) {
        crate::error!(
            "Warning: -O proxy cannot forward X11: the server's X11 connections go to the \
             master, which refuses them"
        );
    }
    // A master relays a proxy client's tcpip-forward only: an ssh master
    // ends a proxy client that asks for a Unix-socket forward, a ressh
    // master refuses it. Such a forward fails here, as a refused one does.
    let mut remote = Vec::new();
    for spec in std::mem::take(&mut cfg.remote_forwards) {
        match forward::parse(&spec, true).map(|f| f.listen_path) {
            Ok(Some(p)) => {
                let m = format!(
                    "Warning: remote port forwarding failed for listen path {p}: \
                     -O proxy cannot forward Unix-domain sockets"
                );
                if cfg.exit_on_forward_failure {
                    return Err(fail(m));
                }
                crate::error!("{m}");
            }
            _ => remote.push(spec),
        }
    }
    cfg.remote_forwards = remote;
    let desc = format!("control socket {}", path.display());
    Session::proxy(cfg, plan, sock, desc)
}

/// With a ControlPath and ControlMaster no/auto/autoask, a session goes
/// through the master there if one answers: its exit code. None: connect
/// directly (no master, or what is asked for is not shared: -W, -N and
/// forwards).
fn mux_client(cfg: &config::Config, plan: &Plan) -> Option<i32> {
    let path = cfg.control_path.as_ref()?;
    if matches!(cfg.control_master, ControlMaster::Yes | ControlMaster::Ask) {
        return None;
    }
    if *plan == Plan::None {
        debug1!("-N does not go through a master; connecting directly");
        return None;
    }
    let forwards = mux::FwdReq::from_config(cfg).ok()?;
    let mut c = match mux::Client::connect(path) {
        Ok(c) => c,
        Err(e) => {
            let stale = e.kind() == std::io::ErrorKind::ConnectionRefused;
            if stale && cfg.control_master != ControlMaster::No {
                // A socket nobody listens on: as ssh, removed, so that this
                // connection can become the master.
                let _ = std::fs::remove_file(path);
            }
            if e.kind() != std::io::ErrorKind::NotFound {
                error!("Control socket connect({}): {e}", path.display());
            }
            return None;
        }
    };
    // The forwards first, as ssh; the master refusing one means a
    // connection of our own.
    for f in &forwards {
        match c.forward(false, f) {
            Ok(Some(port)) => info!(
                "Allocated port {port} for remote forward to {}:{}",
                f.connect_host, f.connect_port
            ),
            Ok(None) => {}
            Err(e) => {
                error!("master forward request failed: {e}");
                return None;
            }
        }
    }
    let (command, subsystem, pty) = match plan {
        Plan::Session {
            command,
            subsystem,
            pty,
        } => (command, subsystem, pty),
        Plan::Stdio { host, port } => {
            if cfg.stdin_null {
                stdin_from_devnull();
            }
            return Some(match c.stdio_forward(host, *port) {
                Ok(()) => 0,
                Err(e) => {
                    error!("mux: stdio forwarding: {e}");
                    255
                }
            });
        }
        Plan::None => return None,
    };
    let mut env: Vec<String> = Vec::new();
    for (k, v) in std::env::vars() {
        if cfg
            .send_env
            .iter()
            .any(|p| ressh_compat::pattern::match_pattern(&k, p))
        {
            env.push(format!("{k}={v}"));
        }
    }
    env.extend(cfg.set_env.iter().map(|(k, v)| format!("{k}={v}")));
    let req = mux::NewSession {
        want_tty: *pty,
        want_x11: cfg.forward_x11,
        want_agent: cfg.forward_agent.is_some(),
        subsystem: *subsystem,
        escape: cfg.escape_char.map(u32::from),
        term: std::env::var("TERM").unwrap_or_default(),
        command: command.clone().unwrap_or_default(),
        env,
    };
    if cfg.stdin_null {
        stdin_from_devnull();
    }
    let raw = *pty && tty::isatty(0);
    let r = c.session(&req, || {
        if raw {
            if let Err(e) = tty::enter_raw(0) {
                debug1!("raw mode: {e}");
            }
        }
    });
    tty::leave_raw();
    match r {
        Ok(code) => {
            if *pty && log::enabled(log::Level::Info) {
                log::write_stderr(
                    format!("Shared connection to {} closed.\r\n", cfg.host).as_bytes(),
                );
            }
            Some(code)
        }
        Err(e) => {
            error!("mux: {e}");
            Some(255)
        }
    }
}

/// -n for a mux client: the descriptor passed as stdin is /dev/null.
fn stdin_from_devnull() {
    if let Ok(null) = std::fs::File::open("/dev/null") {
        use std::os::fd::AsRawFd;
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
    }
}

fn main() {
    tty::install_panic_hook();
    let a = match args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => die(&e.0),
    };
    if a.version {
        log::write_stderr(format!("{}\n", version()).as_bytes());
        std::process::exit(0);
    }
    if let Some(q) = &a.query {
        match config::query(q) {
            Some(names) => {
                for n in names {
                    println!("{n}");
                }
                std::process::exit(0);
            }
            None => die(&format!("Unsupported query \"{q}\"")),
        }
    }
    if a.destination.is_none() {
        die(args::USAGE);
    }
    let cfg = match config::resolve(&a) {
        Ok(c) => c,
        Err(e) => die(&format!("ressh: {e}")),
    };
    // As ssh, before -G too: a command excludes RemoteCommand, and -f needs
    // something to run in the background.
    if !a.command.is_empty() && cfg.remote_command.is_some() {
        die("Cannot execute command-line and remote command.");
    }
    if cfg.fork_after_authentication
        && a.command.is_empty()
        && cfg.remote_command.is_none()
        && cfg.session_type != SessionType::None
    {
        die("Cannot fork into background without a command to execute.");
    }
    log::set_level(cfg.log_level);
    if let Some(f) = &a.log_file {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
        {
            Ok(file) => log::set_file(file),
            Err(e) => die(&format!("ressh: cannot open log file {f}: {e}")),
        }
    }
    for note in &cfg.notes {
        debug1!("{note}");
    }
    if a.print_config {
        print!("{}", config::dump(&cfg));
        std::process::exit(0);
    }
    debug1!("{}", version());
    let proxy = a.control_command.as_deref() == Some("proxy");
    if let Some(cmd) = a.control_command.as_deref().filter(|_| !proxy) {
        std::process::exit(control_command(&cfg, cmd));
    }
    let plan = match plan(&a, &cfg) {
        Ok(p) => p,
        Err(e) => die(&e),
    };
    if !proxy {
        if let Some(code) = mux_client(&cfg, &plan) {
            std::process::exit(code);
        }
    }
    // ControlPersist, as ssh: the master goes to the background without a
    // session of its own once authenticated, and this process runs the
    // session through it.
    let persist = !proxy
        && cfg.control_path.is_some()
        && cfg.control_master != ControlMaster::No
        && cfg.control_persist.is_some()
        && !cfg.fork_after_authentication
        && matches!(plan, Plan::Session { .. });
    let mut cfg = cfg;
    let (plan, job) = if persist {
        cfg.fork_after_authentication = true;
        let (c, p) = (cfg.clone(), plan);
        let job: Box<dyn FnOnce() -> i32> = Box::new(move || {
            let mut c = c;
            c.control_master = ControlMaster::No;
            mux_client(&c, &p).unwrap_or(255)
        });
        (Plan::None, Some(job))
    } else {
        (plan, None)
    };
    let session = if proxy {
        proxy_session(cfg, plan)
    } else {
        Session::connect(cfg, plan)
    };
    let q = match session {
        Ok(mut s) => {
            if let Some(j) = job {
                s.persist(j);
            }
            s.run()
        }
        Err(q) => q,
    };
    tty::leave_raw();
    let Quit { code, msg } = q;
    if let Some(m) = msg {
        // Fatal messages show even at LogLevel QUIET when nothing else would
        // explain a 255, as long as the user did not ask for silence.
        if log::enabled(log::Level::Error) || (code == 255 && !a.quiet) {
            log::emit("", format_args!("{m}"));
        }
    }
    std::process::exit(code);
}
