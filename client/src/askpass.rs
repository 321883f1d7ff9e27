//! Asking the user: passphrases, passwords, keyboard-interactive answers and
//! yes/no confirmations, on the terminal (`/dev/tty`, never stdin) or through
//! `SSH_ASKPASS`, with ssh's `SSH_ASKPASS_REQUIRE` rules:
//! `force` always uses the askpass program, `prefer` uses it when a display
//! is set, `never` never does, and unset uses it only without a terminal and
//! with a display.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{tcgetattr, tcsetattr, InputFlags, LocalFlags, OutputFlags, SetArg};
use zeroize::Zeroizing;

const DEFAULT_ASKPASS: &str = "/usr/bin/ssh-askpass";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A secret: no echo.
    Secret,
    /// An answer that may be echoed (keyboard-interactive with echo).
    Echo,
    /// A yes/no question (askpass gets SSH_ASKPASS_PROMPT=confirm).
    Confirm,
}

/// Why no answer came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptError {
    /// BatchMode, or neither a terminal nor an askpass program can be used.
    Unavailable(String),
    /// The user cancelled (askpass failed, EOF, or a signal).
    Cancelled,
}

fn display_set() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

fn askpass_program() -> OsString {
    std::env::var_os("SSH_ASKPASS")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_ASKPASS.into())
}

fn tty_available() -> bool {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .is_ok()
}

/// Whether the askpass program is to be used (and whether it may be at all).
fn use_askpass() -> (bool, bool) {
    let mut allow = display_set();
    let mut use_it = false;
    match std::env::var("SSH_ASKPASS_REQUIRE")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "force" => {
            use_it = true;
            allow = true;
        }
        "prefer" => use_it = allow,
        "never" => allow = false,
        _ => {}
    }
    if !use_it && !tty_available() {
        use_it = true;
    }
    (use_it, allow)
}

/// Asks `prompt`; `batch` (BatchMode) refuses at once.
pub fn ask(prompt: &str, kind: Kind, batch: bool) -> Result<Zeroizing<String>, PromptError> {
    if batch {
        return Err(PromptError::Unavailable("batch mode".into()));
    }
    let (use_it, allow) = use_askpass();
    if use_it {
        if !allow {
            return Err(PromptError::Unavailable(
                "no terminal and no askpass program allowed (set SSH_ASKPASS and \
                 SSH_ASKPASS_REQUIRE=force, or DISPLAY)"
                    .into(),
            ));
        }
        return run_askpass(prompt, kind);
    }
    read_tty(prompt, kind)
}

fn run_askpass(prompt: &str, kind: Kind) -> Result<Zeroizing<String>, PromptError> {
    let prog = askpass_program();
    crate::debug1!("using askpass program {}", prog.to_string_lossy());
    let mut cmd = Command::new(&prog);
    cmd.arg(prompt)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if kind == Kind::Confirm {
        cmd.env("SSH_ASKPASS_PROMPT", "confirm");
    }
    let mut child = cmd.spawn().map_err(|e| {
        PromptError::Unavailable(format!("cannot run {}: {e}", prog.to_string_lossy()))
    })?;
    let mut out = Zeroizing::new(Vec::new());
    if let Some(mut so) = child.stdout.take() {
        let _ = so.read_to_end(&mut out);
    }
    let status = child.wait().map_err(|_| PromptError::Cancelled)?;
    if !status.success() {
        return Err(PromptError::Cancelled);
    }
    let end = out
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .unwrap_or(out.len());
    let s = String::from_utf8(out[..end].to_vec()).map_err(|_| PromptError::Cancelled)?;
    Ok(Zeroizing::new(s))
}

/// Reads a line from /dev/tty, echo off for secrets, giving up on a signal.
fn read_tty(prompt: &str, kind: Kind) -> Result<Zeroizing<String>, PromptError> {
    let mut tty = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| PromptError::Unavailable(format!("cannot open /dev/tty: {e}")))?;
    let orig = tcgetattr(&tty).ok();
    let was_raw = crate::tty::raw_active();
    if let Some(orig) = &orig {
        let mut t = orig.clone();
        t.local_flags |= LocalFlags::ICANON | LocalFlags::ISIG;
        t.input_flags |= InputFlags::ICRNL;
        t.output_flags |= OutputFlags::OPOST;
        let echo = LocalFlags::ECHO | LocalFlags::ECHOE | LocalFlags::ECHOK | LocalFlags::ECHONL;
        if kind == Kind::Secret {
            t.local_flags &= !echo;
        } else {
            t.local_flags |= LocalFlags::ECHO;
        }
        let _ = tcsetattr(&tty, SetArg::TCSAFLUSH, &t);
    }
    let _ = tty.write_all(prompt.as_bytes());
    let result = read_line(&tty);
    if let Some(orig) = &orig {
        let _ = tcsetattr(&tty, SetArg::TCSAFLUSH, orig);
    }
    if kind == Kind::Secret || result.is_err() {
        let _ = tty.write_all(if was_raw { b"\r\n" } else { b"\n" });
    }
    result
}

fn read_line(tty: &std::fs::File) -> Result<Zeroizing<String>, PromptError> {
    let sig = crate::sig::get();
    let mut line = Zeroizing::new(Vec::with_capacity(256));
    loop {
        let mut fds = vec![PollFd::new(tty.as_fd(), PollFlags::POLLIN)];
        if let Some(s) = sig {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(_) => return Err(PromptError::Cancelled),
            Ok(_) => {}
        }
        let ready = |p: &PollFd| p.revents().is_some_and(|r| !r.is_empty());
        let (tty_ready, sig_ready) = (ready(&fds[0]), fds.get(1).is_some_and(ready));
        if sig.is_some_and(|s| s.terminated().is_some()) {
            return Err(PromptError::Cancelled);
        }
        if sig_ready {
            if let Some(s) = sig {
                s.drain();
            }
        }
        if !tty_ready {
            continue;
        }
        let mut b = [0u8; 1];
        let r = match (&*tty).read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r,
        };
        if !matches!(r, Ok(1)) {
            if line.is_empty() {
                return Err(PromptError::Cancelled);
            }
            break;
        }
        if b[0] == b'\n' || b[0] == b'\r' {
            break;
        }
        if line.len() < 8192 {
            line.push(b[0]);
        }
    }
    String::from_utf8(line.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| PromptError::Cancelled)
}

/// A yes/no/fingerprint question, as ssh's host key prompt. Returns the
/// answer lowercased and trimmed; repeats until one is given on a terminal.
pub fn confirm(prompt: &str, batch: bool) -> Result<String, PromptError> {
    let mut p = prompt.to_string();
    loop {
        let a = ask(&p, Kind::Confirm, batch)?;
        let a = a.trim().to_string();
        let lower = a.to_ascii_lowercase();
        if lower == "yes" || lower == "no" || a.starts_with("SHA256:") {
            return Ok(if a.starts_with("SHA256:") { a } else { lower });
        }
        p = "Please type 'yes', 'no' or the fingerprint: ".to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    static ENV: Mutex<()> = Mutex::new(());

    #[test]
    fn askpass_forced_gives_its_output() {
        let _g = ENV.lock().unwrap();
        let dir = std::env::temp_dir().join(format!("ressh-askpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("ap");
        std::fs::write(
            &script,
            "#!/bin/sh\ncase \"$1\" in *fail*) exit 1;; esac\n\
             printf '%s|%s\\n' \"$1\" \"$SSH_ASKPASS_PROMPT\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::env::set_var("SSH_ASKPASS", &script);
        std::env::set_var("SSH_ASKPASS_REQUIRE", "force");
        assert_eq!(
            ask("Pass: ", Kind::Secret, false).unwrap().as_str(),
            "Pass: |"
        );
        assert_eq!(
            ask("Sure? ", Kind::Confirm, false).unwrap().as_str(),
            "Sure? |confirm"
        );
        assert_eq!(
            ask("fail", Kind::Secret, false),
            Err(PromptError::Cancelled)
        );
        assert!(matches!(
            ask("x", Kind::Secret, true),
            Err(PromptError::Unavailable(_))
        ));
        std::env::set_var("SSH_ASKPASS_REQUIRE", "never");
        if !tty_available() {
            assert!(matches!(
                ask("x", Kind::Secret, false),
                Err(PromptError::Unavailable(_))
            ));
        }
        std::env::remove_var("SSH_ASKPASS");
        std::env::remove_var("SSH_ASKPASS_REQUIRE");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
