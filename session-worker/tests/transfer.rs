//! Bulk data through stock clients: sftp and scp both ways, and rekeys in
//! the middle of a transfer (signed by the "monitor").

mod common;

use std::fs;
use std::time::Duration;

use common::{default_policy, hex, random_bytes, sha256_file, Harness};
use ressh_testkit::text;
use ressh_testkit::{run_timeout, run_with_stdin};

const LONG: Duration = Duration::from_secs(240);

#[test]
fn sftp_put_and_get_64_mib() {
    ressh_testkit::require_cmd("/usr/lib/openssh/sftp-server");
    let h = Harness::start("sftp", default_policy());
    let up = h.dir.join("up.bin");
    fs::write(&up, random_bytes(64 << 20)).unwrap();
    let down = h.dir.join("down.bin");
    let batch = h.dir.join("batch");
    fs::write(
        &batch,
        format!(
            "put {} remote.bin\nget remote.bin {}\n",
            up.display(),
            down.display()
        ),
    )
    .unwrap();
    let out = run_timeout(h.sftp().arg("-b").arg(&batch).arg("127.0.0.1"), LONG);
    assert!(
        out.status.success(),
        "sftp failed: {}\nlog:\n{}",
        text(&out.stderr),
        h.log()
    );
    let want = sha256_file(&up);
    assert_eq!(sha256_file(&h.user.home.join("remote.bin")), want);
    assert_eq!(sha256_file(&down), want);
    // The upload is owned by the user.
    let meta = fs::metadata(h.user.home.join("remote.bin")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), h.user.uid);
    let log = h.finish();
    assert!(log.contains("subsystem \"sftp\""), "{log}");
}

#[test]
fn scp_both_ways_sftp_and_legacy_protocol() {
    let h = Harness::start("scp", default_policy());
    let local = h.dir.join("local.bin");
    fs::write(&local, random_bytes(3 << 20)).unwrap();
    let want = sha256_file(&local);
    for (mode, flag) in [("sftp", None), ("legacy", Some("-O"))] {
        let remote = format!("from-{mode}.bin");
        let mut up = h.scp();
        up.args(flag);
        up.arg(&local).arg(format!("127.0.0.1:{remote}"));
        let out = run_timeout(&mut up, LONG);
        assert!(
            out.status.success(),
            "{mode} up: {}\n{}",
            text(&out.stderr),
            h.log()
        );
        assert_eq!(sha256_file(&h.user.home.join(&remote)), want, "{mode}");
        let back = h.dir.join(format!("back-{mode}.bin"));
        let mut down = h.scp();
        down.args(flag);
        down.arg(format!("127.0.0.1:{remote}")).arg(&back);
        let out = run_timeout(&mut down, LONG);
        assert!(
            out.status.success(),
            "{mode} down: {}\n{}",
            text(&out.stderr),
            h.log()
        );
        assert_eq!(sha256_file(&back), want, "{mode}");
    }
    let log = h.finish();
    assert!(
        log.contains("exec \"scp -t"),
        "legacy scp runs scp -t: {log}"
    );
}

#[test]
fn rekey_in_the_middle_of_transfers() {
    let h = Harness::start("rekey", default_policy());
    let data = random_bytes(20 << 20);
    let want = hex(&openssl::sha::sha256(&data));
    h.user_file("big.bin", &data);
    // Download: the client asks for a new key every MiB.
    let out = run_timeout(
        h.ssh_with(&["-o", "RekeyLimit=1M"]).arg("cat big.bin"),
        LONG,
    );
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), h.log());
    assert_eq!(out.stdout.len(), data.len());
    assert_eq!(hex(&openssl::sha::sha256(&out.stdout)), want);
    let after_download = h.signs();
    assert!(
        after_download >= 10,
        "expected many rekeys, saw {after_download}"
    );
    // Upload.
    let out = run_with_stdin(
        h.ssh_with(&["-o", "RekeyLimit=1M"]).arg("sha256sum"),
        &data,
        LONG,
    );
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), h.log());
    assert_eq!(text(&out.stdout), format!("{want}  -\n"));
    assert!(h.signs() >= after_download + 10, "signs: {}", h.signs());
    h.finish();
}
