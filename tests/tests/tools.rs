//! Issue 17, "done when": stock tools with their default settings use
//! ressh as their `ssh`, against resshd in a network namespace, the
//! master's connection cut (`ss -K`) while they work, and nothing lost:
//!
//! - `rsync -e ressh` of a tree (300 files, about 6 MB) with cuts during the
//!   transfer: the copy is identical (sha256 of every file);
//! - `git clone`/`push`/`fetch` with `GIT_SSH_COMMAND='ressh -o
//!   ControlMaster=auto -o ControlPath=... -o ControlPersist=60s'` to a bare
//!   repository of the user, cuts during the push: every operation rides
//!   one master (one login), which stock `ssh -O check` sees, and a fresh
//!   clone has the pushed tree;
//! - `sftp -S ressh` and `scp -S ressh` with ControlMaster auto and
//!   ControlPersist, several in a row sharing one master, a cut between
//!   and during them: every file arrives intact, one login;
//! - Ansible (Debian 12's ansible-core) with `ssh_executable` ressh and
//!   its default `ssh_args` (`-C -o ControlMaster=auto -o
//!   ControlPersist=60s`), files over sftp (ansible-core 2.14 runs
//!   `sftp_executable` without `-S`: `sftp_extra_args = -S ressh` makes
//!   sftp use ressh too; the same for scp), a playbook that copies files,
//!   runs commands and fetches a file, run twice (files over sftp, then
//!   over scp) with cuts during the runs: both runs succeed, the second
//!   changes nothing, the files are identical;
//! - docs/ssh_config.md's configuration "found in the wild" as a user's
//!   ~/.ssh/config: ressh connects, shares one master (ControlPath
//!   ~/.ssh/cm-%C) through a cut, and stock `ssh -S` rides it.
//!
//! Stock `ssh -O check`/`-O exit` against the ressh master end each
//! shared-connection test; mux.rs has stock `ssh -S` sessions through a
//! ressh master with a cut.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use crate::mux::check;

/// Every file under `dir` (relative path; `.git` left out) and its sha256.
fn tree_digest(dir: &Path) -> BTreeMap<String, String> {
    let out = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg("find . -path ./.git -prune -o -type f -print0 | sort -z | xargs -0 -r sha256sum")
            .current_dir(dir),
    );
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(sum, path)| (path.to_string(), sum.to_string()))
        .collect()
}

/// A tree of `n` files under `dir`, in a few subdirectories: most of a
/// few KB, every 30th of 400 KB.
fn make_tree(dir: &Path, n: usize) {
    for i in 0..n {
        let sub = dir.join(format!("d{}", i % 7));
        fs::create_dir_all(&sub).unwrap();
        let size = if i % 30 == 0 {
            400 << 10
        } else {
            1000 + i * 37
        };
        random_file(&sub.join(format!("f{i}")), size);
    }
}

/// The ressh command line the tools run (the lab user's config, `extra`
/// options), as one shell word list.
fn ressh_line(lab: &Lab, extra: &str) -> String {
    format!(
        "{} -F {} {extra}",
        sq(&ressh_bin().display().to_string()),
        sq(&lab.login.config.display().to_string())
    )
}

/// `prog args...` in the lab's client namespace, without an agent.
fn tool(lab: &Lab, prog: &str) -> Command {
    tool_at(lab, &require_cmd(prog))
}

/// [`tool`] for a program at a path.
fn tool_at(lab: &Lab, prog: &Path) -> Command {
    let mut c = lab.net.cmd_client(prog);
    c.env_remove("SSH_AUTH_SOCK")
        .env_remove("SSH_ASKPASS")
        .env_remove("DISPLAY");
    c
}

fn run_tool(c: &mut Command, timeout: Duration) -> String {
    let out = run_timeout(c, timeout);
    assert!(
        out.status.success(),
        "{c:?}: {}\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A directory in the lab user's home, owned by the user.
fn user_dir(lab: &Lab, name: &str) -> std::path::PathBuf {
    let d = lab.user().home.join(name);
    fs::create_dir_all(&d).unwrap();
    lab.user().own(&d, 0o755);
    d
}

#[test]
fn rsync_tree_through_cuts() {
    let lab = Lab::new("trsync", "");
    let src = lab.dir.join("tree");
    make_tree(&src, 300);
    let dst = user_dir(&lab, "copy");
    let want = tree_digest(&src);
    assert_eq!(want.len(), 300);
    // About 6 MB at 1000 KB/s: cuts every 1.5 s land in the middle.
    let (_, kills) = with_kills(&lab.net, Duration::from_millis(1500), || {
        run_tool(
            tool(&lab, "rsync")
                .args(["-a", "--bwlimit=1000", "-e", &ressh_line(&lab, "")])
                .arg(format!("{}/", src.display()))
                .arg(format!("server:{}/", dst.display())),
            Duration::from_secs(120),
        )
    });
    assert!(!kills.is_empty(), "no cut landed during the transfer");
    assert_eq!(tree_digest(&dst), want, "the copy differs");
    // A kill can also hit a reconnect still in progress: then one
    // reconnect answers two kills. (The last reconnect's line may come
    // after rsync has finished.)
    wait_reconnects(&lab.resshd, kills.len().div_ceil(2), T);
}

/// Limits what the client namespace sends to `rate` (tc's token bucket
/// on its uplink; gone with the namespace), so that a transfer lasts long
/// enough for cuts to land in it.
fn throttle(lab: &Lab, rate: &str) {
    run_ok(tool(lab, "tc").args([
        "qdisc",
        "add",
        "dev",
        lab.net.client_iface(),
        "root",
        "tbf",
        "rate",
        rate,
        "burst",
        "32kbit",
        "latency",
        "400ms",
    ]));
}

/// The one control socket in `dir`.
fn control_socket(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::FileTypeExt;
    let socks: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
        .map(|e| e.path())
        .collect();
    assert_eq!(
        socks.len(),
        1,
        "control sockets in {}: {socks:?}",
        dir.display()
    );
    socks[0].clone()
}

/// Stock `ssh -S sock args... server` with the lab user's config.
fn stock_ssh(lab: &Lab, sock: &Path, args: &[&str]) -> Command {
    let mut c = tool(lab, "ssh");
    c.arg("-F")
        .arg(&lab.login.config)
        .arg("-S")
        .arg(sock)
        .args(args)
        .arg("server");
    c
}

/// The ressh master behind `sock`, asked with stock `ssh -O check`: its pid.
fn ressh_master_pid(lab: &Lab, sock: &Path) -> u32 {
    let pid = check(&mut stock_ssh(lab, sock, &["-O", "check"]));
    assert_eq!(comm(pid).as_deref(), Some("ressh"), "the master is ressh");
    pid
}

/// Ends the master behind `sock` with stock `ssh -O exit`.
fn stock_exit(lab: &Lab, sock: &Path) {
    run_tool(&mut stock_ssh(lab, sock, &["-O", "exit"]), T);
}

#[test]
fn git_clone_and_push_through_cuts() {
    let lab = Lab::new("tgit", "");
    let repo = user_dir(&lab, "repo.git");
    run_ok(
        Command::new(require_cmd("git"))
            .args(["init", "-q", "--bare", "-b", "main"])
            .arg(&repo),
    );
    run_ok(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", lab.user().uid, lab.user().gid))
            .arg(&repo),
    );
    let cm = lab.dir.join("cm");
    fs::create_dir_all(&cm).unwrap();
    let ssh_command = ressh_line(
        &lab,
        &format!(
            "-o ControlMaster=auto -o ControlPath={}/cm-%C -o ControlPersist=60s",
            sq(&cm.display().to_string())
        ),
    );
    let url = format!("server:{}", repo.display());
    let git = |dir: &Path, args: &[&str]| -> String {
        run_tool(
            tool(&lab, "git")
                .current_dir(dir)
                .env("GIT_SSH_COMMAND", &ssh_command)
                .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
                .args(args),
            Duration::from_secs(120),
        )
    };
    git(lab.dir.path(), &["clone", "-q", &url, "c1"]);
    let c1 = lab.dir.join("c1");
    let master = ressh_master_pid(&lab, &control_socket(&cm));
    make_tree(&c1.join("src"), 60);
    random_file(&c1.join("blob.bin"), 4 << 20);
    git(&c1, &["add", "-A"]);
    git(&c1, &["commit", "-q", "-m", "first"]);
    // About 5 MB at 8 Mbit/s: cuts every 1.5 s land in the push.
    throttle(&lab, "8mbit");
    let (_, kills) = with_kills(&lab.net, Duration::from_millis(1500), || {
        git(&c1, &["push", "-q", "origin", "HEAD:main"])
    });
    assert!(!kills.is_empty(), "no cut landed during the push");
    // A second commit, a cut between the operations, then fetch and a
    // fresh clone through the same master.
    fs::write(c1.join("second.txt"), "second\n").unwrap();
    git(&c1, &["add", "-A"]);
    git(&c1, &["commit", "-q", "-m", "second"]);
    git(&c1, &["push", "-q", "origin", "HEAD:main"]);
    lab.net.kill_tcp(PORT);
    git(&c1, &["fetch", "-q", "origin"]);
    git(lab.dir.path(), &["clone", "-q", &url, "c2"]);
    let c2 = lab.dir.join("c2");
    assert_eq!(tree_digest(&c2), tree_digest(&c1), "the clone differs");
    assert_eq!(
        git(&c2, &["rev-parse", "HEAD"]),
        git(&c1, &["rev-parse", "HEAD"])
    );
    git(&c2, &["fsck", "--strict", "--no-progress"]);
    assert_eq!(
        ressh_master_pid(&lab, &control_socket(&cm)),
        master,
        "one master throughout"
    );
    assert_eq!(count(&lab.log(), "Accepted publickey"), 1, "{}", lab.log());
    // One more cut than the kills, each answered by a reconnect, but one
    // reconnect may answer two kills (see above).
    wait_reconnects(&lab.resshd, kills.len() / 2 + 1, T);
    stock_exit(&lab, &control_socket(&cm));
}

#[test]
fn sftp_and_scp_share_a_ressh_master_through_cuts() {
    let lab = Lab::new("tsftp", "");
    let cm = lab.dir.join("cm");
    fs::create_dir_all(&cm).unwrap();
    let remote = user_dir(&lab, "in");
    let local = lab.dir.join("local");
    fs::create_dir_all(&local).unwrap();
    let ressh = ressh_bin();
    let control = format!("ControlPath={}/cm-%C", cm.display());
    // sftp and scp pass -F and -o on to the program of -S.
    let with_master = |prog: &str| -> Command {
        let mut c = tool(&lab, prog);
        c.arg("-S")
            .arg(&ressh)
            .arg("-F")
            .arg(&lab.login.config)
            .args(["-o", "ControlMaster=auto", "-o", &control])
            .args(["-o", "ControlPersist=60s"]);
        c
    };
    for i in 0..3 {
        random_file(&local.join(format!("f{i}")), (1 + i) << 20);
    }
    // sftp puts two files; the first makes the master.
    let batch = lab.dir.join("batch");
    fs::write(
        &batch,
        format!(
            "put {0}/f0 {1}/f0\nput {0}/f1 {1}/f1\n",
            local.display(),
            remote.display()
        ),
    )
    .unwrap();
    run_tool(
        with_master("sftp").arg("-b").arg(&batch).arg("server"),
        Duration::from_secs(120),
    );
    let master = ressh_master_pid(&lab, &control_socket(&cm));
    lab.net.kill_tcp(PORT);
    // scp up and down, in a row, with cuts during the transfers (3 MB at
    // 4 Mbit/s up).
    throttle(&lab, "4mbit");
    let (_, kills) = with_kills(&lab.net, Duration::from_millis(1500), || {
        run_tool(
            with_master("scp")
                .arg(local.join("f2"))
                .arg(format!("server:{}/f2", remote.display())),
            Duration::from_secs(120),
        );
        for i in 0..3 {
            run_tool(
                with_master("scp")
                    .arg(format!("server:{}/f{i}", remote.display()))
                    .arg(local.join(format!("back{i}"))),
                Duration::from_secs(120),
            );
        }
    });
    assert!(!kills.is_empty(), "no cut landed during the transfers");
    // sftp again, getting through the same master after the cuts.
    fs::write(
        &batch,
        format!(
            "get {1}/f2 {0}/sftp-back2\n",
            local.display(),
            remote.display()
        ),
    )
    .unwrap();
    run_tool(
        with_master("sftp").arg("-b").arg(&batch).arg("server"),
        Duration::from_secs(120),
    );
    for i in 0..3 {
        let want = sha256_file(&local.join(format!("f{i}")));
        assert_eq!(sha256_file(&remote.join(format!("f{i}"))), want, "f{i} up");
        assert_eq!(
            sha256_file(&local.join(format!("back{i}"))),
            want,
            "f{i} down"
        );
    }
    assert_eq!(
        sha256_file(&local.join("sftp-back2")),
        sha256_file(&local.join("f2"))
    );
    assert_eq!(
        ressh_master_pid(&lab, &control_socket(&cm)),
        master,
        "one master throughout"
    );
    assert_eq!(count(&lab.log(), "Accepted publickey"), 1, "{}", lab.log());
    // One more cut than the kills, each answered by a reconnect, but one
    // reconnect may answer two kills (see above).
    wait_reconnects(&lab.resshd, kills.len() / 2 + 1, T);
    stock_exit(&lab, &control_socket(&cm));
}

/// The playbook: copies a tree and a big file, runs commands (one only
/// once), fetches a file back.
const PLAYBOOK: &str = r#"- hosts: server
  gather_facts: false
  tasks:
    - name: copy a tree
      copy:
        src: "{{ local }}/tree/"
        dest: "~/deploy/"
    - name: copy a big file
      copy:
        src: "{{ local }}/big.bin"
        dest: "~/deploy/big.bin"
    - name: a command
      command: sha256sum deploy/big.bin
      register: sum
      changed_when: false
    - name: a command run once
      shell: "echo {{ sum.stdout.split()[0] }} > deploy/sum.txt"
      args:
        creates: deploy/sum.txt
    - name: fetch
      fetch:
        src: deploy/sum.txt
        dest: "{{ local }}/fetched/sum.txt"
        flat: true
"#;

#[test]
fn ansible_playbook_twice_through_cuts() {
    let lab = Lab::new("tansible", "");
    let local = lab.dir.join("local");
    make_tree(&local.join("tree"), 40);
    random_file(&local.join("big.bin"), 2 << 20);
    let cp = lab.dir.join("cp");
    fs::create_dir_all(&cp).unwrap();
    let ressh = ressh_bin().display().to_string();
    let cfg = lab.dir.join("ansible.cfg");
    // ssh_args is left at ansible's default.
    fs::write(
        &cfg,
        format!(
            "[defaults]\ninventory = {inv}\n\n[ssh_connection]\nssh_executable = {ressh}\n\
             ssh_common_args = -F {config}\nsftp_extra_args = -S {ressh}\n\
             scp_extra_args = -S {ressh}\n\
             control_path_dir = {cp}\n",
            inv = lab.dir.join("inventory").display(),
            config = lab.login.config.display(),
            cp = cp.display(),
        ),
    )
    .unwrap();
    fs::write(
        lab.dir.join("inventory"),
        "server ansible_python_interpreter=/usr/bin/python3\n",
    )
    .unwrap();
    fs::write(lab.dir.join("site.yml"), PLAYBOOK).unwrap();
    let play = |transfer: &str| {
        run_tool(
            tool(&lab, "ansible-playbook")
                .current_dir(lab.dir.path())
                .env("ANSIBLE_CONFIG", &cfg)
                .env("ANSIBLE_HOME", lab.dir.join("ansible-home"))
                .env("ANSIBLE_LOCAL_TEMP", lab.dir.join("ansible-tmp"))
                .env("ANSIBLE_NOCOLOR", "1")
                .env("ANSIBLE_SSH_TRANSFER_METHOD", transfer)
                .arg("-e")
                .arg(format!("local={}", local.display()))
                .arg("site.yml"),
            Duration::from_secs(300),
        )
    };
    let mut all_kills = 0;
    let mut recaps = Vec::new();
    // Files over sftp (ansible's default), then over scp.
    for transfer in ["sftp", "scp"] {
        let (out, kills) = with_kills(&lab.net, Duration::from_secs(2), || play(transfer));
        assert!(!kills.is_empty(), "no cut landed during the run:\n{out}");
        all_kills += kills.len();
        let recap = out
            .lines()
            .find(|l| l.starts_with("server ") && l.contains("ok="))
            .unwrap_or_else(|| panic!("no recap:\n{out}"))
            .to_string();
        assert!(
            recap.contains("unreachable=0") && recap.contains("failed=0"),
            "{out}"
        );
        recaps.push(recap);
    }
    assert!(recaps[0].contains("changed=4"), "first run: {}", recaps[0]);
    assert!(recaps[1].contains("changed=0"), "second run: {}", recaps[1]);
    let deploy = lab.user().home.join("deploy");
    let mut want = tree_digest(&local.join("tree"));
    want.insert("./big.bin".into(), sha256_file(&local.join("big.bin")));
    let sum = sha256_file(&local.join("big.bin"));
    want.insert("./sum.txt".into(), sha256_of(&format!("{sum}\n")));
    assert_eq!(tree_digest(&deploy), want, "the deployed tree differs");
    assert_eq!(
        fs::read_to_string(local.join("fetched/sum.txt")).unwrap(),
        format!("{sum}\n")
    );
    // Every ssh and sftp of both runs rode one ressh master.
    ressh_master_pid(&lab, &control_socket(&cp));
    assert_eq!(count(&lab.log(), "Accepted publickey"), 1, "{}", lab.log());
    // One reconnect may answer two kills (see above).
    wait_reconnects(&lab.resshd, all_kills.div_ceil(2), T);
    stock_exit(&lab, &control_socket(&cp));
}

/// The sha256 of `s`, as sha256sum prints it.
fn sha256_of(s: &str) -> String {
    let out = run_with_stdin(
        Command::new(require_cmd("sha256sum")).arg("-"),
        s.as_bytes(),
        T,
    );
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// docs/ssh_config.md's configuration "found in the wild" (ForwardAgent,
/// ControlMaster auto with ControlPath ~/.ssh/cm-%C and ControlPersist,
/// an Include of ~/.ssh/config.d, keywords ressh ignores, Match blocks) as
/// the user's ~/.ssh/config above the lab's settings: ressh starts, the
/// first command makes a master in ~/.ssh, the next ones ride it, also
/// after a cut, and stock `ssh -S` runs a session through it.
#[test]
fn wild_config_connects_and_shares() {
    let lab = Lab::new("twild", "");
    let home = lab.dir.join("home");
    fs::create_dir_all(home.join(".ssh/config.d")).unwrap();
    fs::write(
        home.join(".ssh/config.d/10-lab.conf"),
        "Host server\n    ServerAliveInterval 1\n",
    )
    .unwrap();
    let lab_config = fs::read_to_string(&lab.login.config).unwrap();
    fs::write(
        home.join(".ssh/config"),
        format!("{}\n{lab_config}", ressh_testkit::wild_config()),
    )
    .unwrap();
    let ressh = |args: &[&str]| -> String {
        let mut c = tool_at(&lab, &ressh_bin());
        c.env("HOME", &home).args(args);
        run_tool(&mut c, T)
    };
    assert_eq!(ressh(&["server", "echo one"]), "one\n");
    let sock = control_socket(&home.join(".ssh"));
    let master = ressh_master_pid(&lab, &sock);
    assert_eq!(ressh(&["server", "echo two"]), "two\n");
    lab.net.kill_tcp(PORT);
    assert_eq!(ressh(&["server", "echo three"]), "three\n");
    assert_eq!(
        run_tool(stock_ssh(&lab, &sock, &[]).arg("echo four"), T),
        "four\n"
    );
    assert_eq!(
        ressh_master_pid(&lab, &sock),
        master,
        "one master throughout"
    );
    assert_eq!(count(&lab.log(), "Accepted publickey"), 1, "{}", lab.log());
    wait_reconnects(&lab.resshd, 1, T);
    stock_exit(&lab, &sock);
}
