//! ressh against ressh's own daemon: exec with output, stderr, exit code
//! and stdin (pty, sftp and forwarding are in pty.rs, transfer.rs and
//! forward.rs).

mod common;
use common::*;

#[test]
fn exec_against_resshd() {
    let env = Env::resshd("");
    let out = env.exec(&["echo", "hello;", "echo", "oops", ">&2;", "exit", "7"]);
    assert_eq!(
        text(&out.stdout),
        "hello\n",
        "stderr: {}\nlog: {}",
        text(&out.stderr),
        env.server.log()
    );
    assert_eq!(text(&out.stderr), "oops\n");
    assert_eq!(out.status.code(), Some(7));
    let data = vec![b'z'; 5_000_000];
    let mut c = env.ressh();
    c.args(["127.0.0.1", "wc", "-c"]);
    let out = run_with_stdin(&mut c, &data, T);
    check(&out, &env, "stdin to wc");
    assert_eq!(text(&out.stdout).trim(), "5000000");
    let out = env.exec(&["id", "-un"]);
    assert_eq!(text(&out.stdout), format!("{}\n", env.user.name));
}
