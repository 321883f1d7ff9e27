//! The `longname` of a directory entry, as sftp-server's `ls_file` writes
//! it (`ls -l` style; stock `sftp` prints it for `ls -l`).

use std::os::unix::fs::MetadataExt;

/// BSD `strmode`: the type letter, nine permission letters with the set-id
/// and sticky bits, and a space.
pub fn strmode(mode: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFREG => '-',
        libc::S_IFLNK => 'l',
        libc::S_IFSOCK => 's',
        libc::S_IFIFO => 'p',
        _ => '?',
    };
    let mut s = String::with_capacity(11);
    s.push(kind);
    let bit = |m: u32, c: char| if mode & m != 0 { c } else { '-' };
    let special =
        |x: u32, special: u32, set: char, unset: char| match (mode & x != 0, mode & special != 0) {
            (true, true) => set,
            (false, true) => unset,
            (true, false) => 'x',
            (false, false) => '-',
        };
    s.push(bit(libc::S_IRUSR, 'r'));
    s.push(bit(libc::S_IWUSR, 'w'));
    s.push(special(libc::S_IXUSR, libc::S_ISUID, 's', 'S'));
    s.push(bit(libc::S_IRGRP, 'r'));
    s.push(bit(libc::S_IWGRP, 'w'));
    s.push(special(libc::S_IXGRP, libc::S_ISGID, 's', 'S'));
    s.push(bit(libc::S_IROTH, 'r'));
    s.push(bit(libc::S_IWOTH, 'w'));
    s.push(special(libc::S_IXOTH, libc::S_ISVTX, 't', 'T'));
    s.push(' ');
    s
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Year, month (1..=12), day, hour, minute of a Unix time in UTC (the
/// days-to-civil algorithm of H. Hinnant).
fn civil(t: i64) -> (i64, u32, u32, u32, u32) {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, (secs / 3600) as u32, ((secs % 3600) / 60) as u32)
}

/// `%b %e %H:%M` for the last six months, else `%b %e  %Y` (in UTC: the
/// server may run in a chroot without the zone files).
fn date(mtime: i64, now: i64) -> String {
    let (y, m, d, h, min) = civil(mtime);
    let month = MONTHS[(m as usize - 1) % 12];
    if now - (365 * 24 * 60 * 60) / 2 < mtime && now >= mtime {
        format!("{month} {d:>2} {h:02}:{min:02}")
    } else {
        format!("{month} {d:>2}  {y}")
    }
}

/// The longname of `name` with metadata `st`: owner and group by name
/// where the password and group files know them, else by number.
pub fn longname(name: &[u8], st: &std::fs::Metadata, now: i64) -> Vec<u8> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(st.uid()))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| st.uid().to_string());
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(st.gid()))
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_else(|| st.gid().to_string());
    let mut s = format!(
        "{} {:>3} {:<8} {:<8} {:>8} {} ",
        strmode(st.mode()),
        st.nlink(),
        user,
        group,
        st.size(),
        date(st.mtime(), now)
    )
    .into_bytes();
    s.extend_from_slice(name);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(strmode(libc::S_IFDIR | 0o755), "drwxr-xr-x ");
        assert_eq!(strmode(libc::S_IFREG | 0o4755), "-rwsr-xr-x ");
        assert_eq!(strmode(libc::S_IFREG | 0o2644), "-rw-r-Sr-- ");
        assert_eq!(strmode(libc::S_IFDIR | 0o1777), "drwxrwxrwt ");
        assert_eq!(strmode(libc::S_IFLNK | 0o777), "lrwxrwxrwx ");
    }

    #[test]
    fn dates() {
        // 2024-02-29 13:05 UTC
        let t = 1_709_211_900;
        assert_eq!(civil(t), (2024, 2, 29, 13, 5));
        assert_eq!(date(t, t + 10), "Feb 29 13:05");
        assert_eq!(date(t, t + 365 * 86_400), "Feb 29  2024");
        assert_eq!(civil(0), (1970, 1, 1, 0, 0));
    }
}
