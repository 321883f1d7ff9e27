//! Issue 13, hole 3: a key's `permitopen=` / `permitlisten=` narrows the
//! configured PermitOpen / PermitListen, never widens it. Both lists must
//! allow a destination, as in OpenSSH; `none` on either side allows nothing.
//!
//! Debian's stock `ssh` against resshd on 127.0.0.1, as a real user whose
//! authorized_keys lines carry the options: `ssh -W` and `ssh -L` to a TCP
//! echo server on 127.0.0.1 (direct-tcpip), `ssh -R` (tcpip-forward).
//!
//! Every test needs root (it creates users) and fails without it.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{
    describe, echo_round_trip, random_bytes, read_until_closed, text, wait_listening, Bg,
    EchoServer, Login, Server, SSH_TIMEOUT,
};
use ressh_testkit::{free_port, require_root, run_with_stdin};

/// `ssh -W 127.0.0.1:port` with a few bytes on stdin: Ok(what came back)
/// when the server opened the channel, Err(ssh's stderr) when it refused.
fn stdio_forward(srv: &Server, login: &Login, key: &Path, port: u16) -> Result<Vec<u8>, String> {
    let data = b"through the stdio forward\n";
    let out = run_with_stdin(
        &mut srv.ssh_key(&login.with_key(key), &["-W", &format!("127.0.0.1:{port}")]),
        data,
        SSH_TIMEOUT,
    );
    if out.status.success() {
        assert_eq!(out.stdout, data, "{}", describe(&out));
        Ok(out.stdout)
    } else {
        Err(text(&out.stderr))
    }
}

/// `ssh -W` fails and resshd logs the refusal of that very request.
fn assert_refused_open(srv: &Server, login: &Login, key: &Path, port: u16, what: &str) {
    let denied = format!("to connect to host 127.0.0.1 port {port}, but the request was denied");
    let before = srv.log().matches(&denied).count();
    match stdio_forward(srv, login, key, port) {
        Ok(_) => panic!(
            "{what}: ssh -W 127.0.0.1:{port} was let through\n--- resshd log ---\n{}",
            srv.log()
        ),
        Err(e) => assert!(
            e.contains("stdio forwarding failed") || e.contains("administratively prohibited"),
            "{what}: ssh -W failed otherwise: {e}\n--- resshd log ---\n{}",
            srv.log()
        ),
    }
    srv.wait_log(
        &format!("{what}: the refusal"),
        Duration::from_secs(10),
        |l| l.matches(&denied).count() > before,
    );
}

fn assert_allowed_open(srv: &Server, login: &Login, key: &Path, port: u16, what: &str) {
    if let Err(e) = stdio_forward(srv, login, key, port) {
        panic!(
            "{what}: ssh -W 127.0.0.1:{port} refused: {e}\n--- resshd log ---\n{}",
            srv.log()
        );
    }
}

/// `ssh -N -o ExitOnForwardFailure=yes -R rport:127.0.0.1:echo`: Ok(the
/// forward, listening) or Err(ssh's stderr once it gave up).
fn remote_forward(
    srv: &Server,
    login: &Login,
    key: &Path,
    rport: u16,
    echo: u16,
) -> Result<Bg, String> {
    let spec = format!("{rport}:127.0.0.1:{echo}");
    let mut fwd = Bg::spawn(&mut srv.ssh_key(
        &login.with_key(key),
        &["-N", "-o", "ExitOnForwardFailure=yes", "-R", &spec],
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = fwd.exited() {
            return Err(format!("{status}: {}", fwd.stderr()));
        }
        if TcpStream::connect(("127.0.0.1", rport)).is_ok() {
            return Ok(fwd);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ssh -R {spec}: neither listening nor refused after 20 s\nssh: {}\n--- resshd log ---\n{}",
            fwd.stderr(),
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// With `PermitOpen none`, no key option opens anything: not the
/// destination the key names, not another one; neither `-W` nor `-L`.
#[test]
fn permitopen_none_is_not_widened_by_a_key_permitopen() {
    require_root();
    let echo = EchoServer::start();
    let login = Login::new("pon");
    let other = login.add_key("ed25519", r#"permitopen="127.0.0.1:10""#);
    let same = login.add_key(
        "ed25519",
        &format!(r#"permitopen="127.0.0.1:{}""#, echo.port),
    );
    let srv = Server::start("PermitOpen none\n");

    assert_refused_open(&srv, &login, &other, echo.port, "none + key 127.0.0.1:10");
    assert_refused_open(&srv, &login, &other, 10, "none + key 127.0.0.1:10, to :10");
    assert_refused_open(&srv, &login, &same, echo.port, "none + key naming it");
    assert_refused_open(&srv, &login, &login.key, echo.port, "none, no key option");

    // ssh -L: the listener is ssh's own, the channel behind it is refused,
    // so a connection to it is closed without an echo.
    let lport = free_port();
    let spec = format!("127.0.0.1:{lport}:127.0.0.1:{}", echo.port);
    let fwd = Bg::spawn(&mut srv.ssh_key(&login.with_key(&other), &["-N", "-L", &spec]));
    wait_listening(lport, || {
        format!("ssh: {}\nresshd:\n{}", fwd.stderr(), srv.log())
    });
    let mut s = TcpStream::connect(("127.0.0.1", lport)).unwrap();
    std::io::Write::write_all(&mut s, b"hello\n").unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(20));
    assert!(
        got.is_empty(),
        "ssh -L through PermitOpen none echoed {got:?}\n--- resshd log ---\n{}",
        srv.log()
    );
    drop(fwd);
    // The session worker's line reaches the log through the monitor, maybe
    // after ssh closed the forwarded connection.
    let log = srv.wait_log("five refusals", Duration::from_secs(20), |l| {
        l.matches("but the request was denied").count() >= 5
    });
    assert!(!log.contains("direct-tcpip to"), "{log}");
    srv.assert_healthy();
}

/// With a PermitOpen list, a key's permitopen= must name a destination the
/// list allows too; a key naming another one opens nothing. Entries are
/// compared parsed: `[127.0.0.1]:P` is `127.0.0.1` port P.
#[test]
fn permitopen_needs_the_config_and_the_key() {
    require_root();
    let echo = EchoServer::start();
    let login = Login::new("pob");
    let both = login.add_key(
        "ed25519",
        &format!(r#"permitopen="127.0.0.1:{}""#, echo.port),
    );
    let bracketed = login.add_key(
        "ed25519",
        &format!(r#"permitopen="[127.0.0.1]:{}""#, echo.port),
    );
    let other = login.add_key("ed25519", r#"permitopen="127.0.0.1:10""#);
    let srv = Server::start(&format!("PermitOpen 127.0.0.1:{}\n", echo.port));

    assert_allowed_open(&srv, &login, &both, echo.port, "both allow");
    assert_allowed_open(&srv, &login, &bracketed, echo.port, "both allow, [v4]");
    assert_allowed_open(
        &srv,
        &login,
        &login.key,
        echo.port,
        "config allows, no key option",
    );
    assert_refused_open(&srv, &login, &other, echo.port, "config a:1 + key a:10");
    assert_refused_open(&srv, &login, &other, 10, "config a:1 + key a:10, to :10");
    srv.assert_healthy();

    // PermitOpen any: the key's list alone decides.
    let srv = Server::start("PermitOpen any\n");
    assert_allowed_open(&srv, &login, &both, echo.port, "any + key naming it");
    assert_refused_open(&srv, &login, &other, echo.port, "any + key naming another");
    srv.assert_healthy();
}

/// `ssh -R` is refused with `PermitListen none` whatever the key says, and
/// with a PermitListen list unless the key's permitlisten= allows it too.
#[test]
fn permitlisten_is_narrowed_not_widened_by_the_key() {
    require_root();
    let echo = EchoServer::start();
    let login = Login::new("pl");
    let rport = free_port();
    // A bare port means any listen address (OpenSSH's `*:port`).
    let bare = login.add_key("ed25519", &format!(r#"permitlisten="{rport}""#));
    let named = login.add_key("ed25519", &format!(r#"permitlisten="localhost:{rport}""#));
    let other = login.add_key("ed25519", r#"permitlisten="localhost:10""#);

    let srv = Server::start("PermitListen none\n");
    for (key, what) in [(&bare, "bare port"), (&named, "localhost:port")] {
        match remote_forward(&srv, &login, key, rport, echo.port) {
            Ok(_) => panic!(
                "PermitListen none + key {what}: ssh -R {rport} listens\n--- resshd log ---\n{}",
                srv.log()
            ),
            Err(e) => assert!(
                e.contains("remote port forwarding failed"),
                "{what}: {e}\n{}",
                srv.log()
            ),
        }
    }
    // The session worker's line reaches the log through the monitor, maybe after ssh
    // gave up.
    srv.wait_log("the refusal", Duration::from_secs(10), |l| {
        l.contains("not permitted")
    });
    srv.assert_healthy();
    drop(srv);

    let srv = Server::start(&format!("PermitListen {rport}\n"));
    if let Ok(_fwd) = remote_forward(&srv, &login, &other, rport, echo.port) {
        panic!(
            "PermitListen {rport} + key localhost:10: ssh -R {rport} listens\n--- resshd log ---\n{}",
            srv.log()
        );
    }
    for (key, what) in [(&bare, "bare port"), (&named, "localhost:port")] {
        let fwd = remote_forward(&srv, &login, key, rport, echo.port).unwrap_or_else(|e| {
            panic!(
                "PermitListen {rport} + key {what}: refused: {e}\n--- resshd log ---\n{}",
                srv.log()
            )
        });
        let data = random_bytes(1 << 16);
        assert!(echo_round_trip(rport, &data) == data, "{what}");
        drop(fwd);
        // The next ssh -R needs the port again.
        wait_for_closed(rport);
    }
    srv.assert_healthy();
}

/// Waits until nothing listens on 127.0.0.1:`port` any more.
fn wait_for_closed(port: u16) {
    common::wait_for(
        &format!("127.0.0.1:{port} to close"),
        Duration::from_secs(20),
        || {
            TcpStream::connect(("127.0.0.1", port))
                .is_err()
                .then_some(())
        },
        String::new,
    );
}
