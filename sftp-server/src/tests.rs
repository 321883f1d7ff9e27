//! The server's decoding and limits, fed bytes directly. Its behaviour
//! against stock OpenSSH `sftp` is tested end to end (tests/tests/chroot.rs).

use super::*;

const USER: User<'static> = User {
    name: "nobody",
    home: "/",
    client: "192.0.2.1",
};

fn opts(args: &[&str]) -> Options {
    let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    parse_args(&a, &USER).unwrap()
}

fn packet(body: &[u8]) -> Vec<u8> {
    let mut p = (body.len() as u32).to_be_bytes().to_vec();
    p.extend_from_slice(body);
    p
}

const INIT: &[u8] = &[SSH2_FXP_INIT, 0, 0, 0, 3];

fn run(o: &Options, input: &[u8]) -> (i32, Vec<u8>) {
    run_logged(o, input).0
}

/// The exit status, the replies and the log.
fn run_logged(o: &Options, input: &[u8]) -> ((i32, Vec<u8>), String) {
    let (mut out, mut log) = (Vec::new(), Vec::new());
    let code = serve(o, &USER, input, &mut out, &mut log);
    ((code, out), String::from_utf8(log).unwrap())
}

/// Lines at `-l`'s level and above go to the log given, one per line;
/// with -e nothing does (they go to stderr).
#[test]
fn log_levels() {
    let mut input = packet(INIT);
    // opendir "/" (logged at INFO), realpath "/" (VERBOSE).
    input.extend_from_slice(&packet(&[11, 0, 0, 0, 1, 0, 0, 0, 1, b'/']));
    input.extend_from_slice(&packet(&[16, 0, 0, 0, 2, 0, 0, 0, 1, b'/']));
    let (_, log) = run_logged(&opts(&[]), &input);
    assert_eq!(log, "");
    let (_, log) = run_logged(&opts(&["-l", "INFO"]), &input);
    assert_eq!(
        log,
        "session opened for local user nobody from [192.0.2.1]\n\
         opendir \"/\"\n\
         forced closedir \"/\"\n\
         session closed for local user nobody from [192.0.2.1]\n"
    );
    let (_, log) = run_logged(&opts(&["-l", "VERBOSE"]), &input);
    assert!(log.contains("realpath \"/\"\n"), "{log}");
    let (_, log) = run_logged(&opts(&["-e", "-l", "DEBUG3"]), &input);
    assert_eq!(log, "");
}

#[test]
fn options_as_sftp_server() {
    let o = opts(&[
        "-R", "-l", "DEBUG3", "-f", "AUTH", "-u", "027", "-d", "%d/x/%u", "-e",
    ]);
    assert!(o.read_only && o.to_stderr);
    assert_eq!(o.level, Level::Debug3);
    assert_eq!(o.umask, Some(0o27));
    assert_eq!(o.start_dir.as_deref(), Some("//x/nobody"));
    let o = opts(&["-el", "INFO", "-P", "write,remove", "-pread"]);
    assert_eq!(o.level, Level::Info);
    assert_eq!(
        o.deny,
        Some(vec!["write".to_string(), "remove".to_string()])
    );
    assert_eq!(o.allow, Some(vec!["read".to_string()]));
    for bad in [
        &["-u", "999"][..],
        &["-l", "LOUD"],
        &["-f", "KERN"],
        &["-x"],
        &["-d"],
    ] {
        let a: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
        assert!(parse_args(&a, &USER).is_err(), "{bad:?}");
    }
}

#[test]
fn version_lists_permitted_extensions() {
    let (code, out) = run(&opts(&[]), &packet(INIT));
    assert_eq!(code, 0);
    assert_eq!(&out[4..9], &[SSH2_FXP_VERSION, 0, 0, 0, 3]);
    let text = String::from_utf8_lossy(&out);
    for e in [
        "posix-rename@openssh.com",
        "copy-data",
        "users-groups-by-id@openssh.com",
    ] {
        assert!(text.contains(e), "{e}");
    }
    // Read-only: the extensions that write are not offered.
    let (_, out) = run(&opts(&["-R"]), &packet(INIT));
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("posix-rename") && text.contains("statvfs@openssh.com"));
}

#[test]
fn too_long_packet_ends_the_server_with_11() {
    let mut input = packet(INIT);
    input.extend_from_slice(&(MAX_PACKET + 1).to_be_bytes());
    assert_eq!(run(&opts(&[]), &input).0, 11);
    // At the limit it is read (and then fails to decode as nothing known).
    let mut input = packet(INIT);
    let mut big = vec![0u8; MAX_PACKET as usize];
    big[0] = SSH2_FXP_STATUS;
    input.extend_from_slice(&packet(&big));
    assert_eq!(run(&opts(&[]), &input).0, 0);
}

#[test]
fn request_before_init_is_fatal() {
    assert_eq!(
        run(&opts(&[]), &packet(&[16, 0, 0, 0, 1, 0, 0, 0, 1, b'.'])).0,
        255
    );
    assert_eq!(run(&opts(&[]), &packet(&[])).0, 255);
}

#[test]
fn short_fields_are_fatal_never_a_panic() {
    // Every prefix of every request type, and lengths that lie.
    let bodies: Vec<Vec<u8>> = (3u8..=20)
        .chain([SSH2_FXP_EXTENDED])
        .flat_map(|t| {
            let full = [
                t, 0, 0, 0, 9, 0xff, 0xff, 0xff, 0xf0, b'x', 0, 0, 0, 0, 0, 0, 0, 0,
            ];
            (1..full.len()).map(move |n| full[..n].to_vec())
        })
        .collect();
    for b in bodies {
        let mut input = packet(INIT);
        input.extend_from_slice(&packet(&b));
        let (code, _) = run(&opts(&[]), &input);
        assert!(code == 255 || code == 0, "{b:?}: {code}");
    }
}

#[test]
fn bad_handles_fail_politely() {
    let mut input = packet(INIT);
    // close of a handle never opened, then of a 3-byte handle.
    input.extend_from_slice(&packet(&[4, 0, 0, 0, 7, 0, 0, 0, 4, 0, 0, 0, 9]));
    input.extend_from_slice(&packet(&[4, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 9]));
    let (code, out) = run(&opts(&[]), &input);
    assert_eq!(code, 0);
    let status = |id: u8| {
        let mut s = vec![SSH2_FXP_STATUS, 0, 0, 0, id, 0, 0, 0, FX_FAILURE as u8];
        s.extend_from_slice(&[0, 0, 0, 7]);
        s.extend_from_slice(b"Failure");
        s
    };
    for id in [7, 8] {
        let s = status(id);
        assert!(out.windows(s.len()).any(|w| w == &s[..]), "{out:?}");
    }
}

proptest::proptest! {
    /// Any packets after INIT end in an exit status, never a panic. Read
    /// only (`-R`), so that no request a random packet forms can change
    /// the files of the machine the tests run on as root; what writes is
    /// refused after the same framing (length, type, id) as the rest.
    #[test]
    fn arbitrary_packets_never_panic(
        packets in proptest::collection::vec(
            (3u8..=21, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)),
            0..16,
        ),
        raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
    ) {
        let mut input = packet(INIT);
        for (t, body) in &packets {
            let mut b = vec![*t, 0, 0, 0, 1];
            b.extend_from_slice(body);
            input.extend_from_slice(&packet(&b));
        }
        input.extend_from_slice(&raw);
        let (code, _) = run(&opts(&["-R"]), &input);
        proptest::prop_assert!([0, 11, 255].contains(&code), "exit {}", code);
    }
}

/// The status code of the reply to request `id` in `out`.
fn status_of(out: &[u8], id: u8) -> Option<u32> {
    let head = [SSH2_FXP_STATUS, 0, 0, 0, id];
    let at = out.windows(5).position(|w| w == head)?;
    let c = out.get(at + 5..at + 9)?;
    Some(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

/// -P refuses the requests named, -p allows only those named; a refused
/// request is answered PERMISSION_DENIED before its fields are looked at,
/// an allowed one runs (here: remove and stat of a path that does not
/// exist, NO_SUCH_FILE).
#[test]
fn allow_and_deny_lists() {
    let missing = b"/nonexistent-ressh-sftp-test";
    let req = |t: u8, id: u8| {
        let mut b = vec![t, 0, 0, 0, id, 0, 0, 0, missing.len() as u8];
        b.extend_from_slice(missing);
        packet(&b)
    };
    let mut input = packet(INIT);
    input.extend_from_slice(&req(13, 1)); // remove
    input.extend_from_slice(&req(17, 2)); // stat
    for (args, remove, stat) in [
        (&[][..], FX_NO_SUCH_FILE, FX_NO_SUCH_FILE),
        (&["-P", "remove"][..], FX_PERMISSION_DENIED, FX_NO_SUCH_FILE),
        (
            &["-p", "stat,open"][..],
            FX_PERMISSION_DENIED,
            FX_NO_SUCH_FILE,
        ),
        (
            &["-p", "remove", "-P", "remove"][..],
            FX_PERMISSION_DENIED,
            FX_PERMISSION_DENIED,
        ),
        (&["-R"][..], FX_PERMISSION_DENIED, FX_NO_SUCH_FILE),
    ] {
        let (code, out) = run(&opts(args), &input);
        assert_eq!(code, 0);
        assert_eq!(status_of(&out, 1), Some(remove), "{args:?} remove");
        assert_eq!(status_of(&out, 2), Some(stat), "{args:?} stat");
    }
    // -Q requests lists them all, and nothing else runs.
    let (code, out) = run(&opts(&["-Q", "requests"]), &input);
    assert_eq!(code, 0);
    let names = String::from_utf8(out).unwrap();
    assert!(names.starts_with("open\nclose\nread\n") && names.ends_with("users-groups-by-id\n"));
}
