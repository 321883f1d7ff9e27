//! The command line alone (no server): version, usage, refused options,
//! bad configuration, and -G.

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
        &["-A", "h", "true"][..],
        &["-X", "h"],
        &["-D", "1080", "h"],
        &["-f", "h", "true"],
        &["-F", "none", "-o", "ForwardAgent=yes", "h", "true"],
        &["-F", "none", "-o", "DynamicForward=1080", "h", "true"],
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
fn print_config() {
    let o = run(&["-F", "none", "-G", "-p", "2222", "-l", "bob", "Example.COM"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("hostname example.com\n"), "{s}");
    assert!(s.contains("port 2222\n"), "{s}");
    assert!(s.contains("user bob\n"), "{s}");
}
