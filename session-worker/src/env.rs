//! The child's environment, built like OpenSSH's do_setup_env.

use ressh_ipc::msg::UserInfo;

/// PATH for ordinary users (Debian's _PATH_STDPATH) and for root.
pub const USER_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/games";
pub const ROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The facts one child's environment is made from.
pub struct EnvInputs<'a> {
    pub user: &'a UserInfo,
    /// The shell the child runs (user's shell or /bin/sh).
    pub shell: &'a str,
    /// Variables the client sent and AcceptEnv let through, in order.
    pub client_env: &'a [(String, Vec<u8>)],
    /// environment= options of the key.
    pub key_env: &'a [(String, String)],
    /// What PAM's modules set (pam_env), with UsePAM.
    pub pam_env: &'a [(String, String)],
    /// SetEnv of sshd_config.
    pub set_env: &'a [(String, String)],
    pub peer_addr: &'a str,
    pub peer_port: u16,
    pub local_addr: &'a str,
    pub local_port: u16,
    /// The pty's path and the TERM of pty-req, with a pty.
    pub tty: Option<&'a str>,
    pub term: Option<&'a str>,
    /// With a forced command: what the client asked to run.
    pub original_command: Option<&'a [u8]>,
    /// TZ of this process, passed on like sshd does.
    pub tz: Option<Vec<u8>>,
    /// The forwarded agent's socket, once the client asked for one.
    pub auth_sock: Option<&'a str>,
    /// The forwarded X11 display, if the client asked for one.
    pub display: Option<&'a str>,
    /// ExposeAuthInfo's file ([`write_auth_info`]).
    pub auth_info: Option<&'a str>,
}

/// ExposeAuthInfo: `text` in a new file only the user can read, in /tmp
/// as sshd makes it (`/tmp/sshauth.` and 15 random characters, created
/// exclusively, mode 0600, by this process, which runs as the user and,
/// with ChrootDirectory, inside the jail). Its path, for SSH_USER_AUTH; the
/// session removes it when it ends.
#[allow(unsafe_code)] // adopting the descriptor mkstemp(3) returns
pub fn write_auth_info(text: &str) -> std::io::Result<String> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let (fd, path) = nix::unistd::mkstemp("/tmp/sshauth.XXXXXXXXXXXXXXX")?;
    // SAFETY: mkstemp just opened this descriptor for us and nothing else owns it.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let path = path.to_string_lossy().into_owned();
    if let Err(e) = f.write_all(text.as_bytes()) {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Sets `name` to `value`, replacing an earlier value in place.
fn set(env: &mut Vec<(String, Vec<u8>)>, name: &str, value: impl Into<Vec<u8>>) {
    let value = value.into();
    match env.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = value,
        None => env.push((name.to_string(), value)),
    }
}

/// The environment, in OpenSSH's order: client variables first (so the
/// fixed ones below override them), then USER .. SHELL, TZ, TERM,
/// DISPLAY, SSH_AUTH_SOCK, the key's
/// environment= options, PAM's environment, SetEnv (the administrator's
/// word over the client's and the user's), SSH_CLIENT, SSH_CONNECTION,
/// SSH_TTY and SSH_ORIGINAL_COMMAND.
pub fn build(i: &EnvInputs<'_>) -> Vec<(String, Vec<u8>)> {
    let mut env = Vec::new();
    for (n, v) in i.client_env {
        set(&mut env, n, v.clone());
    }
    let u = i.user;
    set(&mut env, "USER", u.name.as_str());
    set(&mut env, "LOGNAME", u.name.as_str());
    set(&mut env, "HOME", u.home.as_str());
    set(
        &mut env,
        "PATH",
        if u.uid == 0 { ROOT_PATH } else { USER_PATH },
    );
    set(&mut env, "MAIL", format!("/var/mail/{}", u.name));
    set(&mut env, "SHELL", i.shell);
    if let Some(tz) = &i.tz {
        set(&mut env, "TZ", tz.clone());
    }
    if let Some(term) = i.term {
        set(&mut env, "TERM", term);
    }
    if let Some(display) = i.display {
        set(&mut env, "DISPLAY", display);
    }
    if let Some(sock) = i.auth_sock {
        set(&mut env, "SSH_AUTH_SOCK", sock);
    }
    for (n, v) in i.key_env {
        set(&mut env, n, v.as_str());
    }
    for (n, v) in i.pam_env {
        set(&mut env, n, v.as_str());
    }
    for (n, v) in i.set_env {
        set(&mut env, n, v.as_str());
    }
    set(
        &mut env,
        "SSH_CLIENT",
        format!("{} {} {}", i.peer_addr, i.peer_port, i.local_port),
    );
    set(
        &mut env,
        "SSH_CONNECTION",
        format!(
            "{} {} {} {}",
            i.peer_addr, i.peer_port, i.local_addr, i.local_port
        ),
    );
    if let Some(tty) = i.tty {
        set(&mut env, "SSH_TTY", tty);
    }
    if let Some(cmd) = i.original_command {
        set(&mut env, "SSH_ORIGINAL_COMMAND", cmd);
    }
    if let Some(f) = i.auth_info {
        set(&mut env, "SSH_USER_AUTH", f);
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(env: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn like_openssh() {
        let user = UserInfo {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/alice".into(),
            shell: "/bin/bash".into(),
        };
        let client = vec![
            ("LANG".to_string(), b"C.UTF-8".to_vec()),
            ("USER".to_string(), b"mallory".to_vec()),
        ];
        let key_env = vec![("FROM_KEY".to_string(), "1".to_string())];
        let pam_env = vec![
            ("FROM_PAM".to_string(), "2".to_string()),
            ("SSH_CLIENT".to_string(), "forged".to_string()),
        ];
        // SetEnv overrides the client, the key and PAM, not SSH_*.
        let set_env = vec![
            ("LANG".to_string(), "C".to_string()),
            ("FROM_KEY".to_string(), "admin".to_string()),
            ("FROM_PAM".to_string(), "admin".to_string()),
            ("SSH_CONNECTION".to_string(), "admin".to_string()),
        ];
        let env = build(&EnvInputs {
            auth_info: Some("/tmp/sshauth.abc"),
            user: &user,
            shell: "/bin/bash",
            client_env: &client,
            key_env: &key_env,
            pam_env: &pam_env,
            set_env: &set_env,
            peer_addr: "127.0.0.1",
            peer_port: 5555,
            local_addr: "127.0.0.1",
            local_port: 22,
            tty: Some("/dev/pts/3"),
            term: Some("xterm"),
            original_command: Some(b"ls -l"),
            tz: None,
            auth_sock: Some("/tmp/ssh-XXXXXXXXXX/agent.7"),
            display: Some("localhost:10.0"),
        });
        assert_eq!(get(&env, "USER"), Some(&b"alice"[..]));
        assert_eq!(get(&env, "SSH_USER_AUTH"), Some(&b"/tmp/sshauth.abc"[..]));
        assert_eq!(get(&env, "LANG"), Some(&b"C"[..]));
        assert_eq!(get(&env, "PATH"), Some(USER_PATH.as_bytes()));
        assert_eq!(get(&env, "MAIL"), Some(&b"/var/mail/alice"[..]));
        assert_eq!(get(&env, "SSH_CLIENT"), Some(&b"127.0.0.1 5555 22"[..]));
        assert_eq!(
            get(&env, "SSH_CONNECTION"),
            Some(&b"127.0.0.1 5555 127.0.0.1 22"[..])
        );
        assert_eq!(get(&env, "SSH_TTY"), Some(&b"/dev/pts/3"[..]));
        assert_eq!(get(&env, "TERM"), Some(&b"xterm"[..]));
        assert_eq!(get(&env, "FROM_KEY"), Some(&b"admin"[..]));
        assert_eq!(get(&env, "FROM_PAM"), Some(&b"admin"[..]));
        assert_eq!(get(&env, "SSH_ORIGINAL_COMMAND"), Some(&b"ls -l"[..]));
        assert_eq!(get(&env, "DISPLAY"), Some(&b"localhost:10.0"[..]));
        assert_eq!(
            get(&env, "SSH_AUTH_SOCK"),
            Some(&b"/tmp/ssh-XXXXXXXXXX/agent.7"[..])
        );
        assert_eq!(env.iter().filter(|(n, _)| n == "USER").count(), 1);
    }
}
