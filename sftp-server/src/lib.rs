//! An SFTP server (protocol version 3, draft-ietf-secsh-filexfer-02) with
//! OpenSSH's extensions (posix-rename, statvfs, fstatvfs, hardlink, fsync,
//! lsetstat, limits, expand-path, copy-data, home-directory,
//! users-groups-by-id), behaving as OpenSSH's sftp-server(8), options
//! included.
//!
//! resshd-session runs it in process for `internal-sftp`: in the forked
//! child of the channel, as the user, possibly inside ChrootDirectory,
//! where no sftp-server binary need exist. It reads requests from one
//! descriptor and writes replies to another, one request at a time.
//!
//! Every byte it reads comes from the client: a packet longer than 256 KiB
//! ends the server (as sftp-server, exit status 11), a packet whose fields
//! run short or hold a NUL in a path ends it too (sftp-server's `fatal`),
//! and nothing in the decoding can panic. Open handles are bounded by the
//! descriptor limit, as the `limits` reply says.

mod ls;
mod wire;

use std::cell::Cell;
use std::ffi::OsStr;
use std::fs::{File, Metadata, ReadDir};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::Mode;
use wire::{Reader, Short, Writer};

/// The longest packet accepted (sftp-server's SFTP_MAX_MSG_LENGTH).
pub const MAX_PACKET: u32 = 256 * 1024;
/// The most a read returns (SFTP_MAX_READ_LENGTH).
pub const MAX_READ: u32 = MAX_PACKET - 1024;
/// Directory entries per NAME reply, as sftp-server.
const NAMES_PER_READDIR: usize = 100;

const SSH2_FXP_INIT: u8 = 1;
const SSH2_FXP_VERSION: u8 = 2;
const SSH2_FXP_STATUS: u8 = 101;
const SSH2_FXP_HANDLE: u8 = 102;
const SSH2_FXP_DATA: u8 = 103;
const SSH2_FXP_NAME: u8 = 104;
const SSH2_FXP_ATTRS: u8 = 105;
const SSH2_FXP_EXTENDED: u8 = 200;
const SSH2_FXP_EXTENDED_REPLY: u8 = 201;

const FX_OK: u32 = 0;
const FX_EOF: u32 = 1;
const FX_NO_SUCH_FILE: u32 = 2;
const FX_PERMISSION_DENIED: u32 = 3;
const FX_FAILURE: u32 = 4;
const FX_BAD_MESSAGE: u32 = 5;
const FX_OP_UNSUPPORTED: u32 = 8;

const ATTR_SIZE: u32 = 0x1;
const ATTR_UIDGID: u32 = 0x2;
const ATTR_PERMISSIONS: u32 = 0x4;
const ATTR_ACMODTIME: u32 = 0x8;
const ATTR_EXTENDED: u32 = 0x8000_0000;

const FXF_READ: u32 = 0x01;
const FXF_WRITE: u32 = 0x02;
const FXF_APPEND: u32 = 0x04;
const FXF_CREAT: u32 = 0x08;
const FXF_TRUNC: u32 = 0x10;
const FXF_EXCL: u32 = 0x20;

/// The requests, by the names `-P`, `-p` and `-Q requests` use, whether
/// they write, and for extensions the name on the wire and its version.
struct Request {
    name: &'static str,
    kind: Kind,
    writes: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain(u8),
    Ext(&'static str, &'static str),
}

const fn plain(name: &'static str, t: u8, writes: bool) -> Request {
    Request {
        name,
        kind: Kind::Plain(t),
        writes,
    }
}

const fn ext(
    name: &'static str,
    wire: &'static str,
    version: &'static str,
    writes: bool,
) -> Request {
    Request {
        name,
        kind: Kind::Ext(wire, version),
        writes,
    }
}

const REQUESTS: &[Request] = &[
    plain("open", 3, false),
    plain("close", 4, false),
    plain("read", 5, false),
    plain("write", 6, true),
    plain("lstat", 7, false),
    plain("fstat", 8, false),
    plain("setstat", 9, true),
    plain("fsetstat", 10, true),
    plain("opendir", 11, false),
    plain("readdir", 12, false),
    plain("remove", 13, true),
    plain("mkdir", 14, true),
    plain("rmdir", 15, true),
    plain("realpath", 16, false),
    plain("stat", 17, false),
    plain("rename", 18, true),
    plain("readlink", 19, false),
    plain("symlink", 20, true),
    ext("posix-rename", "posix-rename@openssh.com", "1", true),
    ext("statvfs", "statvfs@openssh.com", "2", false),
    ext("fstatvfs", "fstatvfs@openssh.com", "2", false),
    ext("hardlink", "hardlink@openssh.com", "1", true),
    ext("fsync", "fsync@openssh.com", "1", true),
    ext("lsetstat", "lsetstat@openssh.com", "1", true),
    ext("limits", "limits@openssh.com", "1", false),
    ext("expand-path", "expand-path@openssh.com", "1", false),
    ext("copy-data", "copy-data", "1", true),
    ext("home-directory", "home-directory", "1", false),
    ext(
        "users-groups-by-id",
        "users-groups-by-id@openssh.com",
        "1",
        false,
    ),
];

/// Log levels, as sshd's LogLevel names them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Level {
    Quiet,
    Fatal,
    Error,
    Info,
    Verbose,
    Debug1,
    Debug2,
    Debug3,
}

fn level_by_name(s: &str) -> Option<Level> {
    Some(match s.to_ascii_uppercase().as_str() {
        "QUIET" => Level::Quiet,
        "FATAL" => Level::Fatal,
        "ERROR" => Level::Error,
        "INFO" => Level::Info,
        "VERBOSE" => Level::Verbose,
        "DEBUG" | "DEBUG1" => Level::Debug1,
        "DEBUG2" => Level::Debug2,
        "DEBUG3" => Level::Debug3,
        _ => return None,
    })
}

const FACILITIES: &[&str] = &[
    "DAEMON", "USER", "AUTH", "AUTHPRIV", "LOCAL0", "LOCAL1", "LOCAL2", "LOCAL3", "LOCAL4",
    "LOCAL5", "LOCAL6", "LOCAL7",
];

/// sftp-server(8)'s options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `-R`: refuse every request that would write.
    pub read_only: bool,
    /// `-l`: the log level (default ERROR).
    pub level: Level,
    /// `-e`: log to stderr instead of the log [`serve`] is given (`-f` is
    /// accepted for compatibility: the caller decides where lines go).
    pub to_stderr: bool,
    /// `-u`: the umask, octal.
    pub umask: Option<u32>,
    /// `-d`: the start directory, `%d` and `%u` expanded.
    pub start_dir: Option<String>,
    /// `-P`: requests refused (names as `-Q requests` lists them).
    pub deny: Option<Vec<String>>,
    /// `-p`: only these requests allowed.
    pub allow: Option<Vec<String>>,
    /// `-Q requests`: print the request names and exit.
    pub query: bool,
}

/// Who the server serves.
pub struct User<'a> {
    pub name: &'a str,
    pub home: &'a str,
    /// The client's address, for the log ("session opened for local user
    /// NAME from [ADDR]").
    pub client: &'a str,
}

fn names_list(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses sftp-server's command line (without argv[0]) as its getopt
/// string "d:f:l:P:p:Q:u:cehR" does.
pub fn parse_args(args: &[String], user: &User<'_>) -> Result<Options, String> {
    let mut o = Options {
        read_only: false,
        level: Level::Error,
        to_stderr: false,
        umask: None,
        start_dir: None,
        deny: None,
        allow: None,
        query: false,
    };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            break;
        }
        let Some(flags) = a.strip_prefix('-').filter(|f| !f.is_empty()) else {
            break;
        };
        for (at, c) in flags.char_indices() {
            let takes = "dflPpQu".contains(c);
            if !takes {
                match c {
                    'R' => o.read_only = true,
                    'e' => o.to_stderr = true,
                    // -c: sftp-server ignores it too (kept for old callers).
                    'c' => {}
                    _ => return Err(format!("unknown option -{c}")),
                }
                continue;
            }
            let rest = &flags[at + c.len_utf8()..];
            let v = if !rest.is_empty() {
                rest.to_string()
            } else {
                let v = args.get(i).ok_or(format!("option -{c} needs a value"))?;
                i += 1;
                v.clone()
            };
            match c {
                'd' => {
                    let t = ressh_compat::expand::tilde_expand(&v, Some(Path::new(user.home)))?;
                    let d = ressh_compat::expand::percent_expand(
                        &t,
                        &[('d', user.home), ('u', user.name)],
                    )
                    .map_err(|e| e.to_string())?;
                    o.start_dir = Some(d);
                }
                'f' => {
                    if !FACILITIES.contains(&v.to_ascii_uppercase().as_str()) {
                        return Err(format!("Invalid log facility \"{v}\""));
                    }
                }
                'l' => o.level = level_by_name(&v).ok_or(format!("Invalid log level \"{v}\""))?,
                'P' => o.deny = Some(names_list(&v)),
                'p' => o.allow = Some(names_list(&v)),
                'Q' => {
                    if v != "requests" {
                        return Err(format!("invalid query type \"{v}\""));
                    }
                    o.query = true;
                }
                'u' => {
                    let m = u32::from_str_radix(&v, 8)
                        .ok()
                        .filter(|m| *m <= 0o777)
                        .ok_or(format!("Invalid umask \"{v}\""))?;
                    o.umask = Some(m);
                }
                _ => return Err(format!("unknown option -{c}")),
            }
            break;
        }
    }
    Ok(o)
}

/// What ends the server: the exit status it returns.
enum Stop {
    /// The client closed its side: 0.
    Eof,
    /// A packet too long (sftp-server exits 11).
    TooLong,
    /// A malformed packet or a protocol error (sftp-server's fatal: 255).
    Fatal(String),
    /// Reading or writing the channel failed (2).
    Io(io::Error),
}

impl From<Short> for Stop {
    fn from(_: Short) -> Stop {
        Stop::Fatal("malformed packet".into())
    }
}

enum Handle {
    File {
        file: File,
        name: Vec<u8>,
        append: bool,
        /// Bytes read and written through the handle, logged at close.
        read: Cell<u64>,
        written: Cell<u64>,
    },
    Dir {
        iter: ReadDir,
        path: Vec<u8>,
        /// "." and ".." are returned first (std's iterator skips them).
        dots: u8,
    },
}

/// A file's attributes, as decoded from the client.
#[derive(Default)]
struct Attrs {
    flags: u32,
    size: u64,
    uid: u32,
    gid: u32,
    perm: u32,
    atime: u32,
    mtime: u32,
}

fn decode_attrs(r: &mut Reader<'_>) -> Result<Attrs, Short> {
    let mut a = Attrs {
        flags: r.u32()?,
        ..Attrs::default()
    };
    if a.flags & ATTR_SIZE != 0 {
        a.size = r.u64()?;
    }
    if a.flags & ATTR_UIDGID != 0 {
        a.uid = r.u32()?;
        a.gid = r.u32()?;
    }
    if a.flags & ATTR_PERMISSIONS != 0 {
        a.perm = r.u32()?;
    }
    if a.flags & ATTR_ACMODTIME != 0 {
        a.atime = r.u32()?;
        a.mtime = r.u32()?;
    }
    if a.flags & ATTR_EXTENDED != 0 {
        let count = r.u32()?;
        if count > 0x10_0000 {
            return Err(Short);
        }
        for _ in 0..count {
            r.cstring()?;
            r.string()?;
        }
    }
    Ok(a)
}

fn encode_attrs(w: &mut Writer, st: &Metadata) {
    w.u32(ATTR_SIZE | ATTR_UIDGID | ATTR_PERMISSIONS | ATTR_ACMODTIME)
        .u64(st.size())
        .u32(st.uid())
        .u32(st.gid())
        .u32(st.mode())
        // The protocol's times are 32 bits (sftp-server truncates too).
        .u32(st.atime() as u32)
        .u32(st.mtime() as u32);
}

/// sftp-server's `errno_to_portable`.
fn portable(e: Errno) -> u32 {
    match e {
        Errno::UnknownErrno => FX_OK,
        Errno::ENOENT | Errno::ENOTDIR | Errno::EBADF | Errno::ELOOP => FX_NO_SUCH_FILE,
        Errno::EPERM | Errno::EACCES | Errno::EFAULT => FX_PERMISSION_DENIED,
        Errno::ENAMETOOLONG | Errno::EINVAL => FX_BAD_MESSAGE,
        Errno::ENOSYS => FX_OP_UNSUPPORTED,
        _ => FX_FAILURE,
    }
}

fn errno(e: &io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

fn io_status(r: io::Result<()>) -> u32 {
    match r {
        Ok(()) => FX_OK,
        Err(e) => portable(errno(&e)),
    }
}

fn nix_status(r: nix::Result<()>) -> u32 {
    match r {
        Ok(()) => FX_OK,
        Err(e) => portable(e),
    }
}

fn status_text(code: u32) -> &'static str {
    match code {
        FX_OK => "Success",
        FX_EOF => "End of file",
        FX_NO_SUCH_FILE => "No such file",
        FX_PERMISSION_DENIED => "Permission denied",
        FX_FAILURE => "Failure",
        FX_BAD_MESSAGE => "Bad message",
        FX_OP_UNSUPPORTED => "Operation unsupported",
        _ => "Unknown error",
    }
}

fn path(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).escape_debug().to_string()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// OpenSSH's `sftp_realpath`: the canonical absolute path, symbolic links
/// resolved; the last component need not exist.
fn realpath(p: &[u8]) -> Result<Vec<u8>, Errno> {
    let p = if p.is_empty() { &b"."[..] } else { p };
    match std::fs::canonicalize(path(p)) {
        Ok(c) => Ok(c.into_os_string().into_encoded_bytes()),
        Err(e) if errno(&e) == Errno::ENOENT => {
            let pb = path(p);
            let (Some(parent), Some(name)) = (pb.parent(), pb.file_name()) else {
                return Err(Errno::ENOENT);
            };
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            let mut c: PathBuf = std::fs::canonicalize(parent).map_err(|e| errno(&e))?;
            c.push(name);
            Ok(c.into_os_string().into_encoded_bytes())
        }
        Err(e) => Err(errno(&e)),
    }
}

struct Server<'a, W: Write, L: Write> {
    opts: &'a Options,
    user: &'a User<'a>,
    out: W,
    /// Where lines go without `-e` (borrowed mutably only to write one).
    log: std::cell::RefCell<L>,
    handles: Vec<Option<Handle>>,
    max_handles: usize,
    init_done: bool,
}

/// Serves one client on `input` and `output` until it closes; returns the
/// exit status (0 at the client's EOF, as sftp-server). Log lines at or
/// above `-l`'s level go to `log`, one per line (to stderr with `-e`).
pub fn serve(
    opts: &Options,
    user: &User<'_>,
    mut input: impl Read,
    output: impl Write,
    log: impl Write,
) -> i32 {
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    let mut s = Server {
        opts,
        user,
        out: output,
        log: std::cell::RefCell::new(log),
        handles: Vec::new(),
        max_handles: nofile.saturating_sub(5).min(1 << 20) as usize,
        init_done: false,
    };
    if opts.query {
        let mut text = String::new();
        for r in REQUESTS {
            text.push_str(r.name);
            text.push('\n');
        }
        return match s.out.write_all(text.as_bytes()) {
            Ok(()) => 0,
            Err(_) => 2,
        };
    }
    s.log(
        Level::Info,
        &format!(
            "session opened for local user {} from [{}]",
            user.name, user.client
        ),
    );
    if let Some(m) = opts.umask {
        s.log(Level::Debug1, &format!("Setting umask 0{m:o}"));
        nix::sys::stat::umask(Mode::from_bits_truncate(m));
    }
    if let Some(d) = &opts.start_dir {
        if let Err(e) = std::env::set_current_dir(d) {
            s.log(Level::Error, &format!("chdir to \"{d}\" failed: {e}"));
        }
    }
    let mut packet = Vec::new();
    let stop = loop {
        match s.read_packet(&mut input, &mut packet) {
            Ok(()) => {}
            Err(stop) => break stop,
        }
        if let Err(stop) = s.process(&packet) {
            break stop;
        }
    };
    for h in s.handles.iter().flatten() {
        s.log_close(h, "forced ");
    }
    let code = match stop {
        Stop::Eof => 0,
        Stop::TooLong => {
            s.log(
                Level::Error,
                &format!("bad message from local user {}", user.name),
            );
            11
        }
        Stop::Fatal(why) => {
            s.log(Level::Fatal, &why);
            255
        }
        Stop::Io(e) => {
            s.log(Level::Error, &format!("read or write: {e}"));
            2
        }
    };
    s.log(
        Level::Info,
        &format!(
            "session closed for local user {} from [{}]",
            user.name, user.client
        ),
    );
    code
}

impl<W: Write, L: Write> Server<'_, W, L> {
    fn log(&self, level: Level, text: &str) {
        if level > self.opts.level || self.opts.level == Level::Quiet {
            return;
        }
        if self.opts.to_stderr {
            let line = ressh_compat::log::line(None, "internal-sftp", std::process::id(), text);
            ressh_compat::log::to_stderr(&line);
        } else {
            // A log that fails loses the line, never the session.
            let mut log = self.log.borrow_mut();
            let _ = writeln!(log, "{text}").and_then(|()| log.flush());
        }
    }

    /// sftp-server's `handle_log_close`.
    fn log_close(&self, h: &Handle, why: &str) {
        let text = match h {
            Handle::File {
                name,
                read,
                written,
                ..
            } => format!(
                "{why}close \"{}\" bytes read {} written {}",
                show(name),
                read.get(),
                written.get()
            ),
            Handle::Dir { path, .. } => format!("{why}closedir \"{}\"", show(path)),
        };
        self.log(Level::Info, &text);
    }

    /// One whole packet into `buf`, its length checked before anything
    /// is read or allocated.
    fn read_packet(&mut self, input: &mut impl Read, buf: &mut Vec<u8>) -> Result<(), Stop> {
        let mut len = [0u8; 4];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(Stop::Eof),
            Err(e) => return Err(Stop::Io(e)),
        }
        let n = u32::from_be_bytes(len);
        if n > MAX_PACKET {
            return Err(Stop::TooLong);
        }
        buf.clear();
        buf.resize(n as usize, 0);
        input.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                Stop::Eof
            } else {
                Stop::Io(e)
            }
        })
    }

    fn send(&mut self, w: Writer) -> Result<(), Stop> {
        self.out.write_all(&w.finish()).map_err(Stop::Io)?;
        self.out.flush().map_err(Stop::Io)
    }

    fn status(&mut self, id: u32, code: u32) -> Result<(), Stop> {
        self.status_msg(id, code, status_text(code))
    }

    fn status_msg(&mut self, id: u32, code: u32, text: &str) -> Result<(), Stop> {
        self.log(Level::Debug3, &format!("request {id}: sent status {code}"));
        let mut w = Writer::reply(SSH2_FXP_STATUS);
        w.u32(id).u32(code).string(text.as_bytes()).string(b"");
        self.send(w)
    }

    fn permitted(&self, r: &Request) -> bool {
        if self.opts.read_only && r.writes {
            self.log(
                Level::Verbose,
                &format!("Refusing {} request in read-only mode", r.name),
            );
            return false;
        }
        if let Some(deny) = &self.opts.deny {
            if deny.iter().any(|d| d == r.name) {
                self.log(
                    Level::Verbose,
                    &format!("Refusing denylisted {} request", r.name),
                );
                return false;
            }
        }
        if let Some(allow) = &self.opts.allow {
            if !allow.iter().any(|a| a == r.name) {
                self.log(
                    Level::Verbose,
                    &format!("Refusing non-allowlisted {} request", r.name),
                );
                return false;
            }
        }
        true
    }

    fn process(&mut self, packet: &[u8]) -> Result<(), Stop> {
        let mut r = Reader::new(packet);
        let t = r.u8()?;
        if t == SSH2_FXP_INIT {
            if self.init_done {
                return Err(Stop::Fatal("Received a second init".into()));
            }
            let version = r.u32()?;
            self.log(
                Level::Verbose,
                &format!("received client version {version}"),
            );
            let mut w = Writer::reply(SSH2_FXP_VERSION);
            w.u32(3);
            for req in REQUESTS {
                if let Kind::Ext(name, v) = req.kind {
                    if self.permitted(req) {
                        w.string(name.as_bytes()).string(v.as_bytes());
                    }
                }
            }
            self.init_done = true;
            return self.send(w);
        }
        if !self.init_done {
            return Err(Stop::Fatal(format!("Received {t} request before init")));
        }
        let id = r.u32()?;
        let req = if t == SSH2_FXP_EXTENDED {
            let name = r.cstring()?;
            match REQUESTS
                .iter()
                .find(|q| matches!(q.kind, Kind::Ext(n, _) if n.as_bytes() == name))
            {
                Some(q) => q,
                None => {
                    self.log(
                        Level::Error,
                        &format!("Unknown extended request \"{}\"", show(name)),
                    );
                    return self.status(id, FX_OP_UNSUPPORTED);
                }
            }
        } else {
            match REQUESTS.iter().find(|q| q.kind == Kind::Plain(t)) {
                Some(q) => q,
                None => {
                    // sftp-server logs it and sends nothing.
                    self.log(Level::Error, &format!("Unknown message {t}"));
                    return Ok(());
                }
            }
        };
        if !self.permitted(req) {
            return self.status(id, FX_PERMISSION_DENIED);
        }
        // Trailing bytes after a request's fields are ignored, as
        // sftp-server discards them.
        self.dispatch(req.name, id, &mut r)
    }

    fn dispatch(&mut self, name: &str, id: u32, r: &mut Reader<'_>) -> Result<(), Stop> {
        match name {
            "open" => self.open(id, r),
            "close" => {
                let h = self.handle_arg(r)?;
                let st = match h.and_then(|h| self.handles.get_mut(h).and_then(Option::take)) {
                    Some(h) => {
                        self.log_close(&h, "");
                        FX_OK
                    }
                    None => FX_FAILURE,
                };
                self.status(id, st)
            }
            "read" => self.read(id, r),
            "write" => self.write(id, r),
            "lstat" | "stat" => {
                let p = r.cstring()?;
                self.log(Level::Verbose, &format!("{name} name \"{}\"", show(p)));
                let m = if name == "stat" {
                    std::fs::metadata(path(p))
                } else {
                    std::fs::symlink_metadata(path(p))
                };
                self.attrs_reply(id, m)
            }
            "fstat" => {
                let h = self.handle_arg(r)?;
                let m = match self.file(h) {
                    Some(f) => f.metadata(),
                    None => return self.status(id, FX_FAILURE),
                };
                self.attrs_reply(id, m)
            }
            "setstat" | "lsetstat" => {
                let p = r.cstring()?.to_vec();
                let a = decode_attrs(r)?;
                let st = self.setstat(&p, &a, name == "lsetstat");
                self.status(id, st)
            }
            "fsetstat" => {
                let h = self.handle_arg(r)?;
                let a = decode_attrs(r)?;
                let st = match self.file(h) {
                    Some(f) => fsetstat(f, &a),
                    None => FX_FAILURE,
                };
                self.status(id, st)
            }
            "opendir" => {
                let p = r.cstring()?;
                self.log(Level::Info, &format!("opendir \"{}\"", show(p)));
                match std::fs::read_dir(path(p)) {
                    Ok(iter) => {
                        let h = Handle::Dir {
                            iter,
                            path: p.to_vec(),
                            dots: 0,
                        };
                        self.new_handle(id, h)
                    }
                    Err(e) => self.status(id, portable(errno(&e))),
                }
            }
            "readdir" => self.readdir(id, r),
            "remove" => {
                let p = r.cstring()?;
                self.log(Level::Info, &format!("remove name \"{}\"", show(p)));
                let st = io_status(std::fs::remove_file(path(p)));
                self.status(id, st)
            }
            "mkdir" => {
                let p = r.cstring()?;
                let a = decode_attrs(r)?;
                let mode = if a.flags & ATTR_PERMISSIONS != 0 {
                    a.perm & 0o7777
                } else {
                    0o777
                };
                self.log(
                    Level::Info,
                    &format!("mkdir name \"{}\" mode 0{mode:o}", show(p)),
                );
                let st = nix_status(nix::unistd::mkdir(path(p), Mode::from_bits_truncate(mode)));
                self.status(id, st)
            }
            "rmdir" => {
                let p = r.cstring()?;
                self.log(Level::Info, &format!("rmdir name \"{}\"", show(p)));
                let st = io_status(std::fs::remove_dir(path(p)));
                self.status(id, st)
            }
            "realpath" => {
                let p = r.cstring()?;
                self.log(Level::Verbose, &format!("realpath \"{}\"", show(p)));
                let res = realpath(p);
                self.one_name(id, res)
            }
            "rename" => {
                let (old, new) = (r.cstring()?, r.cstring()?);
                self.log(
                    Level::Info,
                    &format!("rename old \"{}\" new \"{}\"", show(old), show(new)),
                );
                let st = rename(path(old), path(new));
                self.status(id, st)
            }
            "readlink" => {
                let p = r.cstring()?;
                self.log(Level::Verbose, &format!("readlink \"{}\"", show(p)));
                let res = std::fs::read_link(path(p))
                    .map(|t| t.into_os_string().into_encoded_bytes())
                    .map_err(|e| errno(&e));
                self.one_name(id, res)
            }
            "symlink" => {
                // OpenSSH's order: the target first, then the link.
                let (target, link) = (r.cstring()?, r.cstring()?);
                self.log(
                    Level::Info,
                    &format!("symlink old \"{}\" new \"{}\"", show(target), show(link)),
                );
                let st = io_status(std::os::unix::fs::symlink(path(target), path(link)));
                self.status(id, st)
            }
            "posix-rename" => {
                let (old, new) = (r.cstring()?, r.cstring()?);
                self.log(
                    Level::Info,
                    &format!("posix-rename old \"{}\" new \"{}\"", show(old), show(new)),
                );
                let st = io_status(std::fs::rename(path(old), path(new)));
                self.status(id, st)
            }
            "statvfs" => {
                let p = r.cstring()?;
                self.log(Level::Info, &format!("statvfs \"{}\"", show(p)));
                let res = nix::sys::statvfs::statvfs(path(p));
                self.statvfs_reply(id, res)
            }
            "fstatvfs" => {
                let h = self.handle_arg(r)?;
                let res = match self.file(h) {
                    Some(f) => nix::sys::statvfs::fstatvfs(f),
                    None => return self.status(id, FX_FAILURE),
                };
                self.statvfs_reply(id, res)
            }
            "hardlink" => {
                let (old, new) = (r.cstring()?, r.cstring()?);
                self.log(
                    Level::Info,
                    &format!("hardlink old \"{}\" new \"{}\"", show(old), show(new)),
                );
                let st = io_status(std::fs::hard_link(path(old), path(new)));
                self.status(id, st)
            }
            "fsync" => {
                let h = self.handle_arg(r)?;
                let st = match self.file(h) {
                    Some(f) => io_status(f.sync_all()),
                    None => FX_NO_SUCH_FILE,
                };
                self.status(id, st)
            }
            "limits" => {
                let mut w = Writer::reply(SSH2_FXP_EXTENDED_REPLY);
                w.u32(id)
                    .u64(MAX_PACKET.into())
                    .u64(MAX_READ.into())
                    .u64((MAX_PACKET - 1024).into())
                    .u64(self.max_handles as u64);
                self.send(w)
            }
            "expand-path" => {
                let p = r.cstring()?;
                let res = self.expand_path(p);
                match res {
                    Ok(p) => self.one_name(id, realpath(&p)),
                    Err(Some(msg)) => self.status_msg(id, FX_NO_SUCH_FILE, msg),
                    Err(None) => self.status(id, FX_FAILURE),
                }
            }
            "copy-data" => self.copy_data(id, r),
            "home-directory" => {
                let u = r.cstring()?;
                let home = if u.is_empty() {
                    Some(self.user.home.as_bytes().to_vec())
                } else {
                    std::str::from_utf8(u)
                        .ok()
                        .and_then(|n| nix::unistd::User::from_name(n).ok().flatten())
                        .map(|u| u.dir.into_os_string().into_encoded_bytes())
                };
                match home {
                    Some(h) => self.one_name(id, Ok(h)),
                    None => self.status(id, FX_FAILURE),
                }
            }
            "users-groups-by-id" => self.users_groups(id, r),
            _ => self.status(id, FX_OP_UNSUPPORTED),
        }
    }

    /// A handle argument: a 4-byte string naming an open slot, else None
    /// (sftp-server answers FAILURE).
    fn handle_arg(&self, r: &mut Reader<'_>) -> Result<Option<usize>, Short> {
        let s = r.string()?;
        let [a, b, c, d] = s else {
            return Ok(None);
        };
        let i = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        Ok(matches!(self.handles.get(i), Some(Some(_))).then_some(i))
    }

    fn file(&self, h: Option<usize>) -> Option<&File> {
        match self.handles.get(h?)? {
            Some(Handle::File { file, .. }) => Some(file),
            _ => None,
        }
    }

    fn new_handle(&mut self, id: u32, h: Handle) -> Result<(), Stop> {
        let slot = match self.handles.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.handles.len() < self.max_handles => {
                self.handles.push(None);
                self.handles.len() - 1
            }
            None => return self.status(id, FX_FAILURE),
        };
        self.handles[slot] = Some(h);
        let mut w = Writer::reply(SSH2_FXP_HANDLE);
        w.u32(id).string(&(slot as u32).to_be_bytes());
        self.send(w)
    }

    fn attrs_reply(&mut self, id: u32, m: io::Result<Metadata>) -> Result<(), Stop> {
        match m {
            Ok(st) => {
                let mut w = Writer::reply(SSH2_FXP_ATTRS);
                w.u32(id);
                encode_attrs(&mut w, &st);
                self.send(w)
            }
            Err(e) => self.status(id, portable(errno(&e))),
        }
    }

    /// A NAME reply with one name, its longname the same and no attributes
    /// (realpath, readlink, expand-path, home-directory).
    fn one_name(&mut self, id: u32, name: Result<Vec<u8>, Errno>) -> Result<(), Stop> {
        match name {
            Ok(n) => {
                let mut w = Writer::reply(SSH2_FXP_NAME);
                w.u32(id).u32(1).string(&n).string(&n).u32(0);
                self.send(w)
            }
            Err(e) => self.status(id, portable(e)),
        }
    }

    fn statvfs_reply(
        &mut self,
        id: u32,
        res: nix::Result<nix::sys::statvfs::Statvfs>,
    ) -> Result<(), Stop> {
        use nix::sys::statvfs::FsFlags;
        let st = match res {
            Ok(st) => st,
            Err(e) => return self.status(id, portable(e)),
        };
        let mut flag = 0u64;
        if st.flags().contains(FsFlags::ST_RDONLY) {
            flag |= 1;
        }
        if st.flags().contains(FsFlags::ST_NOSUID) {
            flag |= 2;
        }
        let mut w = Writer::reply(SSH2_FXP_EXTENDED_REPLY);
        w.u32(id)
            .u64(st.block_size())
            .u64(st.fragment_size())
            .u64(st.blocks())
            .u64(st.blocks_free())
            .u64(st.blocks_available())
            .u64(st.files())
            .u64(st.files_free())
            .u64(st.files_available())
            .u64(st.filesystem_id())
            .u64(flag)
            .u64(st.name_max());
        self.send(w)
    }

    fn open(&mut self, id: u32, r: &mut Reader<'_>) -> Result<(), Stop> {
        let name = r.cstring()?;
        let pflags = r.u32()?;
        let a = decode_attrs(r)?;
        let mode = if a.flags & ATTR_PERMISSIONS != 0 {
            a.perm
        } else {
            0o666
        };
        let names: Vec<&str> = [
            (FXF_READ, "READ"),
            (FXF_WRITE, "WRITE"),
            (FXF_APPEND, "APPEND"),
            (FXF_CREAT, "CREATE"),
            (FXF_TRUNC, "TRUNCATE"),
            (FXF_EXCL, "EXCL"),
        ]
        .iter()
        .filter(|(f, _)| pflags & f != 0)
        .map(|(_, n)| *n)
        .collect();
        self.log(
            Level::Info,
            &format!(
                "open \"{}\" flags {} mode 0{mode:o}",
                show(name),
                names.join(",")
            ),
        );
        let (read, write) = (pflags & FXF_READ != 0, pflags & FXF_WRITE != 0);
        let mut flags = 0;
        for (p, f) in [
            (FXF_APPEND, libc::O_APPEND),
            (FXF_CREAT, libc::O_CREAT),
            (FXF_TRUNC, libc::O_TRUNC),
            (FXF_EXCL, libc::O_EXCL),
        ] {
            if pflags & p != 0 {
                flags |= f;
            }
        }
        if self.opts.read_only && (write || flags & (libc::O_CREAT | libc::O_TRUNC) != 0) {
            self.log(Level::Verbose, "Refusing open request in read-only mode");
            return self.status(id, FX_PERMISSION_DENIED);
        }
        // The access mode from READ and WRITE (neither: read-only, as
        // sftp-server), the rest as flags of their own.
        let res = std::fs::OpenOptions::new()
            .read(read || !write)
            .write(write)
            .custom_flags(flags)
            .mode(mode & 0o7777)
            .open(path(name));
        match res {
            Ok(file) => {
                let h = Handle::File {
                    file,
                    name: name.to_vec(),
                    append: pflags & FXF_APPEND != 0,
                    read: Cell::new(0),
                    written: Cell::new(0),
                };
                self.new_handle(id, h)
            }
            Err(e) => self.status(id, portable(errno(&e))),
        }
    }

    fn read(&mut self, id: u32, r: &mut Reader<'_>) -> Result<(), Stop> {
        let h = self.handle_arg(r)?;
        let off = r.u64()?;
        let len = r.u32()?.min(MAX_READ);
        let Some(Some(Handle::File { file: f, read, .. })) = h.and_then(|h| self.handles.get(h))
        else {
            return self.status(id, FX_FAILURE);
        };
        let mut buf = vec![0u8; len as usize];
        let res = if len == 0 {
            Ok(0)
        } else {
            f.read_at(&mut buf, off)
        };
        if let Ok(n) = res {
            read.set(read.get().saturating_add(n as u64));
        }
        match res {
            Ok(0) if len > 0 => self.status(id, FX_EOF),
            Ok(n) => {
                let mut w = Writer::reply(SSH2_FXP_DATA);
                w.u32(id).string(&buf[..n.min(buf.len())]);
                self.send(w)
            }
            Err(e) => self.status(id, portable(errno(&e))),
        }
    }

    fn write(&mut self, id: u32, r: &mut Reader<'_>) -> Result<(), Stop> {
        let h = self.handle_arg(r)?;
        let off = r.u64()?;
        let data = r.string()?;
        let st = match h.and_then(|h| self.handles.get(h)) {
            Some(Some(Handle::File {
                file,
                append,
                written,
                ..
            })) => {
                let res = if *append {
                    (&*file).write(data)
                } else {
                    file.write_at(data, off)
                };
                if let Ok(n) = res {
                    written.set(written.get().saturating_add(n as u64));
                }
                match res {
                    Ok(n) if n == data.len() => FX_OK,
                    Ok(_) => FX_FAILURE,
                    Err(e) => portable(errno(&e)),
                }
            }
            _ => FX_FAILURE,
        };
        self.status(id, st)
    }

    fn readdir(&mut self, id: u32, r: &mut Reader<'_>) -> Result<(), Stop> {
        let h = self.handle_arg(r)?;
        let now = now();
        let Some(Some(Handle::Dir {
            iter,
            path: dir,
            dots,
        })) = h.and_then(|h| self.handles.get_mut(h))
        else {
            return self.status(id, FX_FAILURE);
        };
        let mut names: Vec<(Vec<u8>, Metadata)> = Vec::new();
        let join = |name: &[u8]| {
            let mut p = dir.clone();
            if p != b"/" {
                p.push(b'/');
            }
            p.extend_from_slice(name);
            p
        };
        while names.len() < NAMES_PER_READDIR {
            let name: Vec<u8> = if *dots < 2 {
                *dots += 1;
                if *dots == 1 {
                    b".".to_vec()
                } else {
                    b"..".to_vec()
                }
            } else {
                match iter.next() {
                    Some(Ok(e)) => e.file_name().into_encoded_bytes(),
                    // An entry that cannot be read is skipped, as a failed
                    // lstat is in sftp-server.
                    Some(Err(_)) => continue,
                    None => break,
                }
            };
            if let Ok(st) = std::fs::symlink_metadata(path(&join(&name))) {
                names.push((name, st));
            }
        }
        if names.is_empty() {
            return self.status(id, FX_EOF);
        }
        let mut w = Writer::reply(SSH2_FXP_NAME);
        w.u32(id).u32(names.len() as u32);
        for (name, st) in &names {
            w.string(name).string(&ls::longname(name, st, now));
            encode_attrs(&mut w, st);
        }
        self.send(w)
    }

    fn setstat(&self, p: &[u8], a: &Attrs, nofollow: bool) -> u32 {
        use nix::sys::stat::{fchmodat, utimensat, FchmodatFlags, UtimensatFlags};
        use nix::sys::time::TimeSpec;
        let p = path(p);
        let mut st = FX_OK;
        if a.flags & ATTR_SIZE != 0 {
            if nofollow {
                // Nonsensical for a link (sftp-server's answer).
                return FX_BAD_MESSAGE;
            }
            self.log(
                Level::Info,
                &format!("set \"{}\" size {}", p.display(), a.size),
            );
            let size = i64::try_from(a.size).unwrap_or(i64::MAX);
            if let Err(e) = nix::unistd::truncate(p, size) {
                st = portable(e);
            }
        }
        if a.flags & ATTR_PERMISSIONS != 0 {
            self.log(
                Level::Info,
                &format!("set \"{}\" mode {:04o}", p.display(), a.perm & 0o7777),
            );
            let f = if nofollow {
                FchmodatFlags::NoFollowSymlink
            } else {
                FchmodatFlags::FollowSymlink
            };
            if let Err(e) = fchmodat(None, p, Mode::from_bits_truncate(a.perm & 0o7777), f) {
                st = portable(e);
            }
        }
        if a.flags & ATTR_ACMODTIME != 0 {
            let f = if nofollow {
                UtimensatFlags::NoFollowSymlink
            } else {
                UtimensatFlags::FollowSymlink
            };
            let at = TimeSpec::new(a.atime.into(), 0);
            let mt = TimeSpec::new(a.mtime.into(), 0);
            if let Err(e) = utimensat(None, p, &at, &mt, f) {
                st = portable(e);
            }
        }
        if a.flags & ATTR_UIDGID != 0 {
            self.log(
                Level::Info,
                &format!("set \"{}\" owner {} group {}", p.display(), a.uid, a.gid),
            );
            let r = if nofollow {
                std::os::unix::fs::lchown(p, Some(a.uid), Some(a.gid))
            } else {
                std::os::unix::fs::chown(p, Some(a.uid), Some(a.gid))
            };
            if let Err(e) = r {
                st = portable(errno(&e));
            }
        }
        st
    }

    /// expand-path's `~`, `~/x`, `~user/x` and relative paths, before
    /// realpath; Err(Some(text)) for an unknown user.
    fn expand_path(&self, p: &[u8]) -> Result<Vec<u8>, Option<&'static str>> {
        let cwd = std::env::current_dir()
            .map_err(|_| None)?
            .into_os_string()
            .into_encoded_bytes();
        let mut out;
        if p.is_empty() {
            out = b".".to_vec();
        } else if p == b"~" {
            out = cwd;
        } else if let Some(rest) = p.strip_prefix(b"~/") {
            out = cwd;
            out.push(b'/');
            out.extend_from_slice(rest);
        } else if p.starts_with(b"~") {
            let s = std::str::from_utf8(p).map_err(|_| Some("no such user"))?;
            out = ressh_compat::expand::tilde_expand(s, Some(Path::new(self.user.home)))
                .map_err(|_| Some("no such user"))?
                .into_bytes();
        } else if !p.starts_with(b"/") {
            out = cwd;
            out.push(b'/');
            out.extend_from_slice(p);
        } else {
            out = p.to_vec();
        }
        self.log(Level::Verbose, &format!("expand \"{}\"", show(&out)));
        Ok(out)
    }

    fn copy_data(&mut self, id: u32, r: &mut Reader<'_>) -> Result<(), Stop> {
        let rh = self.handle_arg(r)?;
        let read_off = r.u64()?;
        let read_len = r.u64()?;
        let wh = self.handle_arg(r)?;
        let write_off = r.u64()?;
        let (
            Some(Some(Handle::File {
                file: rf,
                name: rn,
                read,
                ..
            })),
            Some(Some(Handle::File {
                file: wf,
                name: wn,
                append,
                written,
                ..
            })),
        ) = (
            rh.and_then(|h| self.handles.get(h)),
            wh.and_then(|h| self.handles.get(h)),
        )
        else {
            return self.status(id, portable(Errno::EBADF));
        };
        let (rs, ws) = match (rf.metadata(), wf.metadata()) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return self.status(id, portable(errno(&e))),
        };
        if rh == wh || rn == wn || (rs.dev() == ws.dev() && rs.ino() == ws.ino()) {
            self.log(Level::Error, "copy-data: refusing to read/write same file");
            return self.status(id, FX_FAILURE);
        }
        let until_eof = read_len == 0;
        let mut left = if until_eof {
            u64::MAX - read_off
        } else {
            read_len
        };
        let (mut ro, mut wo) = (read_off, write_off);
        let mut buf = vec![0u8; 64 * 1024];
        let mut st = FX_OK;
        while left > 0 {
            let want = (buf.len() as u64).min(left) as usize;
            let n = match rf.read_at(&mut buf[..want], ro) {
                Ok(0) => {
                    if !until_eof {
                        st = FX_EOF;
                    }
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    st = portable(errno(&e));
                    break;
                }
            };
            let chunk = &buf[..n];
            let w = if *append {
                (&*wf).write_all(chunk)
            } else {
                wf.write_all_at(chunk, wo)
            };
            if let Err(e) = w {
                st = portable(errno(&e));
                break;
            }
            read.set(read.get().saturating_add(n as u64));
            written.set(written.get().saturating_add(n as u64));
            left = left.saturating_sub(n as u64);
            ro = ro.saturating_add(n as u64);
            wo = wo.saturating_add(n as u64);
        }
        self.status(id, st)
    }

    fn users_groups(&mut self, id: u32, r: &mut Reader<'_>) -> Result<(), Stop> {
        let uids = r.string()?;
        let gids = r.string()?;
        if uids.len() % 4 != 0 || gids.len() % 4 != 0 {
            return Err(Stop::Fatal("users-groups-by-id: malformed id list".into()));
        }
        let ids = |b: &[u8]| -> Vec<u32> {
            b.chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let mut users = Writer::default();
        for u in ids(uids) {
            let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(u))
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_default();
            users.string(name.as_bytes());
        }
        let mut groups = Writer::default();
        for g in ids(gids) {
            let name = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(g))
                .ok()
                .flatten()
                .map(|g| g.name)
                .unwrap_or_default();
            groups.string(name.as_bytes());
        }
        let mut w = Writer::reply(SSH2_FXP_EXTENDED_REPLY);
        w.u32(id).string(&users.buf).string(&groups.buf);
        self.send(w)
    }
}

fn fsetstat(f: &File, a: &Attrs) -> u32 {
    use nix::sys::stat::futimens;
    use nix::sys::time::TimeSpec;
    use std::os::unix::fs::PermissionsExt;
    let mut st = FX_OK;
    if a.flags & ATTR_SIZE != 0 {
        if let Err(e) = f.set_len(a.size) {
            st = portable(errno(&e));
        }
    }
    if a.flags & ATTR_PERMISSIONS != 0 {
        let p = std::fs::Permissions::from_mode(a.perm & 0o7777);
        if let Err(e) = f.set_permissions(p) {
            st = portable(errno(&e));
        }
    }
    if a.flags & ATTR_ACMODTIME != 0 {
        let at = TimeSpec::new(a.atime.into(), 0);
        let mt = TimeSpec::new(a.mtime.into(), 0);
        if let Err(e) = futimens(std::os::fd::AsRawFd::as_raw_fd(f), &at, &mt) {
            st = portable(e);
        }
    }
    if a.flags & ATTR_UIDGID != 0 {
        if let Err(e) = std::os::unix::fs::fchown(f, Some(a.uid), Some(a.gid)) {
            st = portable(errno(&e));
        }
    }
    st
}

/// SSH2_FXP_RENAME: never replaces an existing file (a regular file is
/// linked and unlinked; where links are unsupported, and for other types,
/// renamed only when the new name is free), as sftp-server.
fn rename(old: &Path, new: &Path) -> u32 {
    let sb = match std::fs::symlink_metadata(old) {
        Ok(sb) => sb,
        Err(e) => return portable(errno(&e)),
    };
    let free = || std::fs::metadata(new).is_err();
    if sb.file_type().is_file() {
        match std::fs::hard_link(old, new) {
            Ok(()) => match std::fs::remove_file(old) {
                Ok(()) => FX_OK,
                Err(e) => {
                    let _ = std::fs::remove_file(new);
                    portable(errno(&e))
                }
            },
            Err(e)
                if matches!(
                    errno(&e),
                    Errno::EOPNOTSUPP | Errno::ENOSYS | Errno::EXDEV | Errno::EPERM
                ) =>
            {
                if free() {
                    io_status(std::fs::rename(old, new))
                } else {
                    FX_FAILURE
                }
            }
            Err(e) => portable(errno(&e)),
        }
    } else if free() {
        io_status(std::fs::rename(old, new))
    } else {
        FX_FAILURE
    }
}

#[cfg(test)]
mod tests;
