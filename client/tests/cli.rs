//! The command line alone (no server): version, usage, refused options
//! (forwards through a master among them), bad configuration, and -G.

use std::process::Command;

const RESSH: &str = env!("CARGO_BIN_EXE_ressh");

fn run(args: &[&str]) -> std::process::Output {
    ressh_testkit::run_timeout(
        Command::new(RESSH).args(args),
        std::time::Duration::from_secs(30),
    )
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn version_and_usage() {
    let o = run(&["-V"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(err(&o).starts_with("ressh "), "{}", err(&o));
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(255));
    assert!(err(&o).starts_with("usage: ressh"), "{}", err(&o));
}

#[test]
fn unsupported_options_are_refused_clearly() {
    for args in [
        &["-K", "h", "true"][..],
        &["-F", "none", "-D", "/tmp/socks.sock", "h", "true"],
        &["-F", "none", "-o", "NoSuchOption=1", "h", "true"],
        &["-F", "none", "-L", "/tmp/a.sock:/tmp/b.sock", "h", "true"],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(255), "{args:?}");
        let e = err(&o);
        assert_eq!(e.lines().count(), 1, "{args:?}: {e}");
        assert!(
            e.contains("not supported") || e.contains("Bad configuration option"),
            "{args:?}: {e}"
        );
    }
}

#[test]
fn bad_dynamic_forwards_and_background_without_command() {
    for (args, msg) in [
        (
            &["-F", "none", "-D", "1080:h:80", "h", "true"][..],
            "Bad dynamic forwarding specification",
        ),
        (
            &["-F", "none", "-D", "0", "h", "true"],
            "Bad dynamic forwarding specification",
        ),
        (
            &["-F", "none", "-o", "DynamicForward=x", "h", "true"],
            "Bad dynamic forwarding specification",
        ),
        (
            &["-F", "none", "-f", "h"],
            "Cannot fork into background without a command to execute.",
        ),
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(255), "{args:?}");
        assert!(err(&o).contains(msg), "{args:?}: {}", err(&o));
    }
    // Accepted: UpdateHostKeys (known_hosts is left alone), ControlMaster no,
    // -f with -N.
    let o = run(&[
        "-F",
        "none",
        "-G",
        "-o",
        "UpdateHostKeys=yes",
        "-o",
        "ControlMaster=no",
        "-f",
        "-N",
        "h",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("forkafterauthentication yes\n"), "{s}");
}

#[test]
fn print_config() {
    let o = run(&["-F", "none", "-G", "-p", "2222", "-l", "bob", "Example.COM"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("hostname example.com\n"), "{s}");
    assert!(s.contains("port 2222\n"), "{s}");
    assert!(s.contains("user bob\n"), "{s}");
    let o = run(&["-F", "none", "-G", "-D", "1080", "-g", "-D", "*:1081", "h"]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains("dynamicforward 1080\ndynamicforward [*]:1081\n"),
        "{s}"
    );
    assert!(s.contains("gatewayports yes\n"), "{s}");
}

/// ControlMaster, ControlPath (every token, %C included) and ControlPersist
/// as stock `ssh -G` prints them, so that ressh and ssh find each other's
/// masters.
#[test]
fn control_settings_as_ssh_prints_them() {
    let ssh = ressh_testkit::require_cmd("ssh");
    let path = "ControlPath=~/.ssh/cm-%C-%h-%p-%r-%u-%L-%l-%n-%i-%%";
    for extra in [
        &["-o", path][..],
        &[
            "-o",
            path,
            "-o",
            "ControlMaster=auto",
            "-o",
            "ControlPersist=10m",
        ],
        &["-o", path, "-M", "-o", "ControlPersist=yes"],
        &[
            "-o",
            path,
            "-o",
            "ControlMaster=autoask",
            "-o",
            "ControlPersist=0",
        ],
        &["-S", "none", "-o", "ControlMaster=ask"],
    ] {
        let mut args = vec!["-G", "-F", "none", "-p", "2222", "-l", "bob"];
        args.extend_from_slice(extra);
        args.push("h.example");
        let control = |o: std::process::Output| -> Vec<String> {
            assert_eq!(o.status.code(), Some(0), "{extra:?}: {}", err(&o));
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("control"))
                .map(str::to_string)
                .collect()
        };
        let ours = control(run(&args));
        let theirs = control(ressh_testkit::run_timeout(
            Command::new(&ssh).args(&args),
            std::time::Duration::from_secs(30),
        ));
        assert_eq!(ours, theirs, "{extra:?}");
    }
}
