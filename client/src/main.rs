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
mod session;
mod sig;
mod socks;
mod sys;
mod transport;
mod tty;

use config::{RequestTty, SessionType};
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
    if a.print_config {
        print!("{}", config::dump(&cfg));
        std::process::exit(0);
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
    debug1!("{}", version());
    let plan = match plan(&a, &cfg) {
        Ok(p) => p,
        Err(e) => die(&e),
    };
    let q = match Session::connect(cfg, plan) {
        Ok(s) => s.run(),
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
