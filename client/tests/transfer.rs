//! ressh as the transport of other tools: `sftp -S`, `scp -S` (SFTP and
//! legacy modes), `rsync -e` and git (GIT_SSH_COMMAND), against Debian's
//! sshd; sftp against resshd too.

mod common;
use common::*;

use std::fs;
use std::process::Command;

const SIZE: usize = 64 << 20;

fn sftp_round_trip(env: &Env) {
    let local = env.dir.join("big");
    random_file(&local, SIZE);
    let want = sha256_file(&local);
    let remote = env.user.home.join("up.bin");
    let back = env.dir.join("back.bin");
    let batch = env.dir.join("batch");
    fs::write(
        &batch,
        format!(
            "put {} {}\nget {} {}\n",
            local.display(),
            remote.display(),
            remote.display(),
            back.display()
        ),
    )
    .unwrap();
    let out = run_timeout(
        Command::new(require_cmd("sftp"))
            .arg("-S")
            .arg(RESSH)
            .arg("-F")
            .arg(&env.config)
            .arg("-b")
            .arg(&batch)
            .arg("127.0.0.1"),
        T,
    );
    check(&out, env, "sftp -S ressh");
    assert_eq!(sha256_file(&remote), want, "uploaded file differs");
    assert_eq!(sha256_file(&back), want, "downloaded file differs");
    fs::remove_file(&remote).unwrap();
}

#[test]
fn sftp_moves_64_mib_both_ways_sshd() {
    let env = Env::sshd("");
    sftp_round_trip(&env);
}

#[test]
fn sftp_moves_64_mib_both_ways_resshd() {
    let env = Env::resshd("");
    sftp_round_trip(&env);
}

fn scp(env: &Env, legacy: bool, from: &str, to: &str) {
    let mut c = Command::new(require_cmd("scp"));
    if legacy {
        c.arg("-O");
    }
    c.arg("-q")
        .arg("-S")
        .arg(RESSH)
        .arg("-F")
        .arg(&env.config)
        .args([from, to]);
    let out = run_timeout(&mut c, T);
    check(&out, env, &format!("scp {from} {to}"));
}

#[test]
fn scp_moves_64_mib_both_ways_sftp_and_legacy_mode() {
    let env = Env::sshd("");
    let local = env.dir.join("big");
    random_file(&local, SIZE);
    let want = sha256_file(&local);
    for legacy in [false, true] {
        let remote = env.user.home.join("scp.bin");
        let back = env.dir.join("scp-back.bin");
        scp(
            &env,
            legacy,
            &local.to_string_lossy(),
            &format!("127.0.0.1:{}", remote.display()),
        );
        assert_eq!(sha256_file(&remote), want, "legacy={legacy}: upload");
        scp(
            &env,
            legacy,
            &format!("127.0.0.1:{}", remote.display()),
            &back.to_string_lossy(),
        );
        assert_eq!(sha256_file(&back), want, "legacy={legacy}: download");
        fs::remove_file(&remote).unwrap();
        fs::remove_file(&back).unwrap();
    }
}

#[test]
fn rsync_over_ressh() {
    let env = Env::sshd("");
    let src = env.dir.join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    random_file(&src.join("a.bin"), 3 << 20);
    fs::write(src.join("sub/b.txt"), "hello rsync\n").unwrap();
    let e = format!("{RESSH} -F {}", env.config.display());
    let dst = env.user.home.join("dst");
    let out = run_timeout(
        Command::new(require_cmd("rsync"))
            .args(["-a", "-e", &e])
            .arg(format!("{}/", src.display()))
            .arg(format!("127.0.0.1:{}/", dst.display())),
        T,
    );
    check(&out, &env, "rsync push");
    assert_eq!(
        sha256_file(&dst.join("a.bin")),
        sha256_file(&src.join("a.bin"))
    );
    assert_eq!(
        fs::read_to_string(dst.join("sub/b.txt")).unwrap(),
        "hello rsync\n"
    );
    let back = env.dir.join("back");
    let out = run_timeout(
        Command::new(require_cmd("rsync"))
            .args(["-a", "-e", &e])
            .arg(format!("127.0.0.1:{}/", dst.display()))
            .arg(format!("{}/", back.display())),
        T,
    );
    check(&out, &env, "rsync pull");
    assert_eq!(
        sha256_file(&back.join("a.bin")),
        sha256_file(&src.join("a.bin"))
    );
    assert_eq!(
        fs::read_to_string(back.join("sub/b.txt")).unwrap(),
        "hello rsync\n"
    );
}

fn git(dir: &std::path::Path, args: &[&str], ssh: Option<&str>) -> std::process::Output {
    let mut c = Command::new(require_cmd("git"));
    c.current_dir(dir)
        .args([
            "-c",
            "user.name=ressh test",
            "-c",
            "user.email=t@example.invalid",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .env_remove("GIT_SSH")
        .env_remove("GIT_SSH_VARIANT");
    match ssh {
        Some(s) => c.env("GIT_SSH_COMMAND", s),
        None => c.env_remove("GIT_SSH_COMMAND"),
    };
    run_timeout(&mut c, T)
}

#[test]
fn git_clone_and_push_over_ressh() {
    let env = Env::sshd("");
    // A bare repository in the user's home with one commit.
    let work = env.dir.join("work");
    fs::create_dir_all(&work).unwrap();
    let ok = |o: std::process::Output, what: &str| {
        assert!(o.status.success(), "{what}: {}", text(&o.stderr));
    };
    ok(git(&work, &["init", "-q"], None), "init");
    fs::write(work.join("README"), "ressh carries git\n").unwrap();
    ok(git(&work, &["add", "README"], None), "add");
    ok(git(&work, &["commit", "-q", "-m", "first"], None), "commit");
    let bare = env.user.home.join("repo.git");
    ok(
        git(
            env.dir.path(),
            &[
                "clone",
                "-q",
                "--bare",
                &work.to_string_lossy(),
                &bare.to_string_lossy(),
            ],
            None,
        ),
        "clone --bare",
    );
    let out = run_timeout(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", env.user.uid, env.user.gid))
            .arg(&bare),
        T,
    );
    assert!(out.status.success());

    let ssh = format!("{RESSH} -F {}", env.config.display());
    let clone = env.dir.join("clone");
    let out = git(
        env.dir.path(),
        &[
            "clone",
            "-q",
            "127.0.0.1:repo.git",
            &clone.to_string_lossy(),
        ],
        Some(&ssh),
    );
    assert!(
        out.status.success(),
        "git clone over ressh: {}\n{}",
        text(&out.stderr),
        env.server.log()
    );
    assert_eq!(
        fs::read_to_string(clone.join("README")).unwrap(),
        "ressh carries git\n"
    );
    // And a push back, with a port given the way git passes it (-p).
    fs::write(clone.join("NEW"), "pushed\n").unwrap();
    ok(git(&clone, &["add", "NEW"], None), "add NEW");
    ok(
        git(&clone, &["commit", "-q", "-m", "second"], None),
        "commit 2",
    );
    let url = format!(
        "ssh://{}@127.0.0.1:{}/~/repo.git",
        env.user.name,
        env.server.port()
    );
    let out = git(&clone, &["push", "-q", &url, "main"], Some(&ssh));
    assert!(out.status.success(), "git push: {}", text(&out.stderr));
    let out = run_timeout(
        Command::new(require_cmd("git"))
            .arg("--git-dir")
            .arg(&bare)
            .args(["-c", "safe.directory=*", "log", "--oneline"]),
        T,
    );
    assert_eq!(
        text(&out.stdout).lines().count(),
        2,
        "{}",
        text(&out.stderr)
    );
}
