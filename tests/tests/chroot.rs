//! Issue 16: `ChrootDirectory` and resshd's in-process `internal-sftp`,
//! with stock OpenSSH `sftp` (Debian 12's, and the newest from the sid
//! root) against resshd and, for comparison, against Debian's sshd given
//! the same configuration: the usual jail
//!
//! ```text
//! Match Group <the user's group>
//!     ChrootDirectory %h
//!     ForceCommand internal-sftp [options]
//!     AllowTcpForwarding no
//! ```
//!
//! with the user's home owned by root, an `upload` directory of the user's
//! inside, a file of root's and a symbolic link to /etc/passwd.
//!
//! - A batch of put/get/ls/rename/mkdir/rm/symlink/chmod gives the same
//!   output from both servers, and leaves the same files; `ls /etc` and
//!   `cd /etc` fail, `cd ..` from / stays in /, the link to /etc/passwd
//!   reads nothing of the host's; `df` works.
//! - `-R` refuses writes, `-d` starts elsewhere, `-u` sets the umask, as
//!   sshd's internal-sftp.
//! - A chroot owned by the user, group-writable, or with a component owned
//!   by the user is refused: sshd's log line, the session closed.
//! - `sftp -S ressh` uploads into the jail while its TCP connection is cut
//!   twice: ressh reconnects and the file arrives whole.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// The jail block for `user`, with `options` after internal-sftp.
fn jail_config(user: &TestUser, options: &str) -> String {
    format!(
        "Match Group {}\n    ChrootDirectory %h\n    ForceCommand internal-sftp{options}\n    \
         AllowTcpForwarding no\n",
        user.name
    )
}

/// Gives a jailed home back to its user on drop, so that the user's
/// removal (userdel -r, which leaves a home of root's) removes it.
struct JailHome<'a>(&'a TestUser);

impl Drop for JailHome<'_> {
    fn drop(&mut self) {
        unjail(self.0);
    }
}

fn unjail(user: &TestUser) {
    user.own(&user.home, 0o755);
}

/// Makes `user`'s home the usual jail: owned by root, mode 755, with
/// `upload/` (the user's), `hello.txt` (root's) and `escape`, a link to
/// /etc/passwd.
fn make_jail(user: &TestUser) {
    let home = &user.home;
    std::os::unix::fs::chown(home, Some(0), Some(0)).unwrap();
    fs::set_permissions(home, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(home.join("hello.txt"), "hello from the jail\n").unwrap();
    let _ = fs::remove_file(home.join("escape"));
    std::os::unix::fs::symlink("/etc/passwd", home.join("escape")).unwrap();
    reset_upload(user);
}

/// An empty `upload/` of the user's, mode 755.
fn reset_upload(user: &TestUser) {
    let up = user.home.join("upload");
    let _ = fs::remove_dir_all(&up);
    fs::create_dir(&up).unwrap();
    user.own(&up, 0o755);
}

/// `text` with the time of each `ls -l` line (month, day, time or year)
/// replaced by `TIME`.
fn without_times(text: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut out = String::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.iter().position(|w| MONTHS.contains(w)) {
            Some(i) if i >= 4 && f.len() > i + 3 => {
                let mut g: Vec<&str> = f[..i].to_vec();
                g.push("TIME");
                g.extend_from_slice(&f[i + 3..]);
                out.push_str(&g.join(" "));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A server to compare: its port and known_hosts line.
struct Target {
    port: u16,
    known_hosts: String,
}

/// Stock `sftp` (`sftp` is the program, Debian's or the sid root's) with
/// `batch` on stdin as `user`; the batch's `{L}` is a fresh local
/// directory, written back as `L` in the output. Returns whether it
/// succeeded, stdout and stderr.
fn sftp_batch(
    sftp: Command,
    dir: &TempDir,
    user: &TestUser,
    key: &Path,
    to: &Target,
    batch: &str,
) -> (bool, String, String) {
    let local = dir.join(format!("local-{}", to.port));
    let _ = fs::remove_dir_all(&local);
    fs::create_dir(&local).unwrap();
    fs::write(local.join("up.txt"), "uploaded into the jail\n").unwrap();
    fs::set_permissions(local.join("up.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    let known = dir.join(format!("known_hosts-{}", to.port));
    fs::write(&known, &to.known_hosts).unwrap();
    let cfg = dir.join(format!("ssh_config-{}", to.port));
    write_client_config(&cfg, &user.name, key, &known, "127.0.0.1", to.port, "");
    let mut sftp = sftp;
    sftp.arg("-F").arg(&cfg).args(["-b", "-", "server"]);
    let batch = batch.replace("{L}", &local.display().to_string());
    let out = run_with_stdin(&mut sftp, batch.as_bytes(), T);
    let l = local.display().to_string();
    (
        out.status.success(),
        text(&out.stdout).replace(&l, "L"),
        text(&out.stderr).replace(&l, "L"),
    )
}

/// What both servers must do alike inside the jail.
const BATCH: &str = "\
pwd
ls -1a /
cd ..
pwd
-ls /etc
-cd /etc
-get /etc/passwd {L}/passwd
get /hello.txt {L}/hello.txt
-get /escape {L}/escaped
put {L}/up.txt /upload/up.txt
rename /upload/up.txt /upload/moved.txt
mkdir /upload/d
symlink moved.txt /upload/link
chmod 600 /upload/moved.txt
ls -1 /upload
ls -l /upload/moved.txt
ls -la /upload
rmdir /upload/d
rm /upload/link
-put {L}/up.txt /hello.txt
pwd
";

fn jail_files(user: &TestUser) -> Vec<(String, u32, u32, String)> {
    let mut v: Vec<_> = fs::read_dir(user.home.join("upload"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            let content = fs::read_to_string(e.path()).unwrap_or_default();
            (
                e.file_name().to_string_lossy().into_owned(),
                m.mode() & 0o7777,
                m.uid(),
                content,
            )
        })
        .collect();
    v.sort();
    v
}

struct Pair {
    resshd: Resshd,
    sshd: Sshd,
}

impl Pair {
    fn start(config: &str) -> Pair {
        Pair {
            resshd: Resshd::start(&ressh_bin().with_file_name("resshd"), config),
            sshd: Sshd::start(config),
        }
    }

    fn targets(&self) -> [(&'static str, Target); 2] {
        [
            (
                "sshd",
                Target {
                    port: self.sshd.port(),
                    known_hosts: self.sshd.known_hosts(),
                },
            ),
            (
                "resshd",
                Target {
                    port: self.resshd.port(),
                    known_hosts: known_hosts_at(&self.resshd, self.resshd.port()),
                },
            ),
        ]
    }
}

struct Jailed {
    dir: TempDir,
    user: TestUser,
    key: PathBuf,
}

impl Drop for Jailed {
    fn drop(&mut self) {
        unjail(&self.user);
    }
}

fn jailed(tag: &str) -> Jailed {
    let dir = TempDir::new("e2e-chroot");
    let user = TestUser::create(tag);
    let (key, line) = ssh_keygen(dir.path(), "ed25519", "");
    user.authorize_key(&line);
    make_jail(&user);
    Jailed { dir, user, key }
}

/// Runs `batch` with `sftp` against both servers of `pair`; asserts the
/// same outcome, stdout, stderr and uploaded files; returns resshd's.
fn same_as_sshd(
    j: &Jailed,
    pair: &Pair,
    sftp: impl Fn() -> Command,
    batch: &str,
) -> (bool, String, String) {
    let mut results = Vec::new();
    for (name, t) in pair.targets() {
        reset_upload(&j.user);
        let r = sftp_batch(sftp(), &j.dir, &j.user, &j.key, &t, batch);
        results.push((name, r, jail_files(&j.user)));
    }
    let (_, by_sshd, files_sshd) = &results[0];
    let (_, by_resshd, files_resshd) = &results[1];
    // The two runs may fall on either side of a minute: `ls -l` times
    // are compared as times, not as values.
    let untimed = |r: &(bool, String, String)| (r.0, without_times(&r.1), r.2.clone());
    assert_eq!(
        untimed(by_resshd),
        untimed(by_sshd),
        "resshd's internal-sftp differs from sshd's\n--- resshd log ---\n{}",
        pair.resshd.log()
    );
    assert_eq!(
        files_resshd, files_sshd,
        "the files left in the jail differ"
    );
    by_resshd.clone()
}

fn stock_sftp() -> Command {
    Command::new(require_cmd("sftp"))
}

#[test]
fn jail_as_sshd_with_stock_sftp() {
    let j = jailed("e2ecj");
    let pair = Pair::start(&jail_config(&j.user, ""));
    let (ok, out, err) = same_as_sshd(&j, &pair, stock_sftp, BATCH);
    assert!(ok, "the batch failed:\n{out}\n{err}");
    // Inside the jail: / is the jail, .. from / is /, /etc is not there,
    // and the link to /etc/passwd leads nowhere.
    assert!(out.contains("Remote working directory: /\n"), "{out}");
    assert!(!out.contains("Remote working directory: /home"), "{out}");
    for name in ["escape", "hello.txt", "upload"] {
        assert!(out.contains(&format!("\n/{name}\n")), "{name}: {out}");
    }
    // ls /etc, cd /etc, get /etc/passwd, get /escape, put over root's file.
    // (sftp's errors end in CRLF.)
    assert_eq!(
        err.replace("\r\n", "\n"),
        "Can't ls: \"/etc\" not found\n\
         stat remote: No such file or directory\n\
         File \"/etc/passwd\" not found.\n\
         stat remote: No such file or directory\n\
         dest open \"/hello.txt\": Permission denied\n"
    );
    for (_, t) in pair.targets() {
        let local = j.dir.join(format!("local-{}", t.port));
        assert!(!local.join("passwd").exists() && !local.join("escaped").exists());
        assert_eq!(
            fs::read_to_string(local.join("hello.txt")).unwrap(),
            "hello from the jail\n"
        );
    }
    // rename, chmod: the upload is the user's, mode 600.
    assert_eq!(
        jail_files(&j.user),
        vec![(
            "moved.txt".to_string(),
            0o600,
            j.user.uid,
            "uploaded into the jail\n".to_string()
        )]
    );
    // The file of root's stayed as it was.
    assert_eq!(
        fs::read_to_string(j.user.home.join("hello.txt")).unwrap(),
        "hello from the jail\n"
    );
    // df: the statvfs extension answers.
    for (name, t) in pair.targets() {
        let (ok, out, err) = sftp_batch(stock_sftp(), &j.dir, &j.user, &j.key, &t, "df -h /\n");
        assert!(
            ok && out.contains("Size") && out.contains("Avail"),
            "{name}: {out}\n{err}"
        );
    }
    // The newest sftp (sid) too, each server against the same client.
    let new = NewSsh::get();
    let ssh = require_cmd("ssh");
    let newest = || {
        let mut c = new.command("/usr/bin/sftp");
        c.arg("-S").arg(&ssh);
        c
    };
    let (ok, out, err) = same_as_sshd(&j, &pair, newest, BATCH);
    assert!(ok, "the newest sftp's batch failed:\n{out}\n{err}");
    // The newest client resolves ~ and uses copy-data (`cp`).
    let (ok, out, err) = same_as_sshd(
        &j,
        &pair,
        newest,
        "put {L}/up.txt /upload/a\ncp /upload/a /upload/b\nls -1 /upload\n",
    );
    assert!(ok && out.contains("\n/upload/b\n"), "{out}\n{err}");
    report(
        "chroot",
        "the jail: resshd's internal-sftp answers as sshd's",
    );
}

/// `-R`, `-d` with a `%u` token and `-u`, against sshd's internal-sftp.
#[test]
fn internal_sftp_options_as_sshd() {
    let j = jailed("e2ecopt");
    // -d: the start directory, here /upload given as %d-free text with %u
    // unused by the path but expanded; -u 077: files 600, directories 700.
    let pair = Pair::start(&jail_config(&j.user, " -d /upload -u 077 -l INFO"));
    let (ok, out, err) = same_as_sshd(
        &j,
        &pair,
        stock_sftp,
        "pwd\nput {L}/up.txt\nmkdir d\nls -1\n",
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("Remote working directory: /upload\n"), "{out}");
    // -l INFO: sftp-server's lines reach resshd's log through the session
    // (sshd's go to a syslog socket the jail does not have). The session
    // worker's monitor writes them, possibly after sftp has exited.
    let lines: [String; 4] = [
        format!(
            "internal-sftp: session opened for local user {} from [127.0.0.1]",
            j.user.name
        ),
        "internal-sftp: open \"/upload/up.txt\" flags WRITE,CREATE,TRUNCATE mode 0644".into(),
        "internal-sftp: close \"/upload/up.txt\" bytes read 0 written 23".into(),
        "internal-sftp: mkdir name \"/upload/d\" mode 0777".into(),
    ];
    pair.resshd
        .wait_log("internal-sftp's lines in resshd's log", T, |log| {
            lines.iter().all(|line| log.contains(line))
        });
    let files = jail_files(&j.user);
    assert_eq!(
        files
            .iter()
            .map(|f| (f.0.as_str(), f.1))
            .collect::<Vec<_>>(),
        vec![("d", 0o700), ("up.txt", 0o600)],
        "{files:?}"
    );
    drop(pair);
    let pair = Pair::start(&jail_config(&j.user, " -R"));
    let (ok, out, err) = same_as_sshd(
        &j,
        &pair,
        stock_sftp,
        "get /hello.txt {L}/h\n-put {L}/up.txt /upload/x\n-mkdir /upload/d\n-rm /hello.txt\nls -1 /upload\n",
    );
    assert!(ok, "{out}\n{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(jail_files(&j.user).is_empty());
    drop(pair);
    // The home directory's path inside the jail: sessions start there,
    // and -d's %u is the user's name.
    let inner_home = j.user.home.join(j.user.home.strip_prefix("/").unwrap());
    fs::create_dir_all(inner_home.join("sub")).unwrap();
    let home = j.user.home.display();
    for (options, start) in [
        (String::new(), format!("{home}")),
        (" -d /home/%u/sub".to_string(), format!("{home}/sub")),
    ] {
        assert!(start.starts_with("/home/"), "{start}");
        let pair = Pair::start(&jail_config(&j.user, &options));
        let (ok, out, err) = same_as_sshd(&j, &pair, stock_sftp, "pwd\n");
        assert!(ok, "{out}\n{err}");
        assert_eq!(
            out,
            format!("sftp> pwd\nRemote working directory: {start}\n"),
            "{options}"
        );
    }
    report(
        "chroot",
        "-R, -d, -u, the home inside the jail: as sshd's internal-sftp",
    );
}

/// A directory made for a test outside any home, removed on drop.
struct Made(PathBuf);

impl Drop for Made {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A chroot that is the user's, group-writable, or below a directory of
/// the user's: refused with sshd's message, no session.
#[test]
fn unsafe_chroot_is_refused_as_sshd() {
    let dir = TempDir::new("e2e-chroot");
    let user = TestUser::create("e2ecbad");
    let (key, line) = ssh_keygen(dir.path(), "ed25519", "");
    user.authorize_key(&line);
    let home = user.home.display().to_string();
    // Root's, but group-writable (and not under /tmp, whose mode would be
    // refused first).
    let srv = Made(PathBuf::from(format!("/srv/ressh-test-{}", user.name)));
    fs::create_dir_all(&srv.0).unwrap();
    fs::set_permissions(&srv.0, fs::Permissions::from_mode(0o775)).unwrap();
    // Root's, in the user's own home.
    let inner = user.home.join("inner");
    fs::create_dir(&inner).unwrap();
    fs::set_permissions(&inner, fs::Permissions::from_mode(0o755)).unwrap();
    let cases = [
        (
            "%h",
            format!("bad ownership or modes for chroot directory \"{home}\""),
        ),
        (
            "/srv/ressh-test-%u",
            format!(
                "bad ownership or modes for chroot directory \"{}\"",
                srv.0.display()
            ),
        ),
        (
            "%h/inner",
            format!("bad ownership or modes for chroot directory component \"{home}/\""),
        ),
    ];
    for (chroot, message) in cases {
        let pair = Pair::start(&format!(
            "Match Group {}\n    ChrootDirectory {chroot}\n    ForceCommand internal-sftp\n",
            user.name
        ));
        for (name, t) in pair.targets() {
            let (ok, out, err) = sftp_batch(stock_sftp(), &dir, &user, &key, &t, "ls /\n");
            assert!(!ok, "{chroot}: {name} served it:\n{out}\n{err}");
            assert!(!out.contains("inner"), "{chroot}: {name}: {out}");
        }
        let want = message;
        wait_for(
            &format!("sshd to log {want:?}"),
            T,
            || pair.sshd.log().contains(&want).then_some(()),
            || pair.sshd.log(),
        );
        wait_for(
            &format!("resshd to log {want:?}"),
            T,
            || pair.resshd.log().contains(&want).then_some(()),
            || pair.resshd.log(),
        );
    }
    report("chroot", "unsafe chroots refused with sshd's message");
}

/// `sftp -S ressh` into the jail, its connection cut twice during an
/// upload: the file arrives whole.
#[test]
fn resilient_sftp_in_the_jail_survives_cuts() {
    let lab = Lab::new(
        "cjail",
        "DetachTimeout 60\nMatch Group {USER}\n    ChrootDirectory %h\n    \
         ForceCommand internal-sftp\n    AllowTcpForwarding no\n",
    );
    make_jail(lab.user());
    let _jail = JailHome(lab.user());
    let local = lab.dir.join("big.bin");
    random_file(&local, 4 << 20);
    let want = sha256_file(&local);
    let batch = lab.dir.join("batch");
    fs::write(&batch, format!("put {} /upload/big.bin\n", local.display())).unwrap();
    let mut cmd = lab.net.cmd_client(require_cmd("sftp"));
    // 8 Mbit/s: about 4 s for 4 MiB, long enough for two cuts.
    cmd.arg("-S")
        .arg(ressh_bin())
        .arg("-F")
        .arg(&lab.login.config)
        .args(["-l", "8000", "-b"])
        .arg(&batch)
        .arg("server");
    let mut client = Client::spawn(&mut cmd);
    let (status, kills) = with_kills(&lab.net, Duration::from_millis(1200), || {
        client.wait_exit(Duration::from_secs(120))
    });
    assert!(
        status.success(),
        "sftp failed: {status}\n{}\n--- resshd log ---\n{}",
        client.describe(),
        lab.log()
    );
    let reconnects = count(&client.stderr(), "reconnected to ");
    assert!(kills.len() >= 2, "{} cuts hit the upload", kills.len());
    assert!(reconnects >= 1, "no reconnect\n{}", client.describe());
    assert_eq!(
        sha256_file(&lab.user().home.join("upload/big.bin")),
        want,
        "the upload into the jail differs"
    );
    report(
        "chroot",
        &format!(
            "sftp -S ressh into the jail: {} cuts, {reconnects} reconnects, file intact",
            kills.len()
        ),
    );
}
