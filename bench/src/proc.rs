//! Processes: trees (testkit's `descendants` and `kill_tree`), their memory,
//! and the machine's CPU time.

use std::collections::HashMap;
use std::fs;
use std::thread;
use std::time::{Duration, Instant};

pub use ressh_testkit::{descendants, kill_tree};

#[allow(unsafe_code)] // kill(2)
fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a plain pid; errors (gone already) are ignored.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// SIGKILLs `pids` (a flat list; no tree walk).
pub fn kill_all(pids: &[u32]) {
    for &p in pids {
        signal(p, libc::SIGKILL);
    }
}

/// The command name of `pid`.
pub fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Resident and proportional set size of one process, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub rss: u64,
    pub pss: u64,
}

impl std::ops::AddAssign for Mem {
    fn add_assign(&mut self, o: Mem) {
        self.rss += o.rss;
        self.pss += o.pss;
    }
}

/// RSS and PSS of `pid` from `/proc/<pid>/smaps_rollup`.
pub fn mem(pid: u32) -> Option<Mem> {
    let s = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let mut m = Mem::default();
    for line in s.lines() {
        let mut it = line.split_whitespace();
        let (Some(k), Some(v)) = (it.next(), it.next()) else {
            continue;
        };
        let v: u64 = v.parse().unwrap_or(0);
        match k {
            "Rss:" => m.rss = v,
            "Pss:" => m.pss = v,
            _ => {}
        }
    }
    Some(m)
}

/// Memory of a set of processes, split by command name.
#[derive(Debug, Default, Clone)]
pub struct TreeMem {
    pub total: Mem,
    pub procs: usize,
    pub by_comm: HashMap<String, (usize, Mem)>,
}

/// Sums the memory of `pids`.
pub fn tree_mem(pids: &[u32]) -> TreeMem {
    let mut t = TreeMem::default();
    for &p in pids {
        let Some(m) = mem(p) else { continue };
        t.total += m;
        t.procs += 1;
        let e = t.by_comm.entry(comm(p)).or_default();
        e.0 += 1;
        e.1 += m;
    }
    t
}

/// CPU seconds used so far by `pid` (user + system).
#[allow(unsafe_code)] // sysconf
pub fn cpu_of(pid: u32) -> f64 {
    let Ok(st) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = st.rfind(')').map(|i| &st[i + 1..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state(0) ... utime(11) stime(12).
    let t = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (t(11) + t(12)) / hz
}

/// Busy CPU time of the whole machine so far, in seconds (all cores:
/// user + nice + system + irq + softirq + steal, from `/proc/stat`).
#[allow(unsafe_code)] // sysconf
pub fn cpu_busy() -> f64 {
    let s = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = s.lines().next() else {
        return 0.0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, x)| x)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    busy as f64 / hz
}

/// Raises the soft limit on open files to the hard limit (many clients).
pub fn raise_nofile() -> u64 {
    raise_nofile_to(0)
}

/// [`raise_nofile`], first raising the hard limit to `want` if it is lower
/// (as root; children started afterwards inherit both).
#[allow(unsafe_code)] // setrlimit
pub fn raise_nofile_to(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit on a valid, initialized struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            if r.rlim_max < want {
                let higher = libc::rlimit {
                    rlim_cur: want,
                    rlim_max: want,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &higher) == 0 {
                    r = higher;
                }
            }
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
        r.rlim_cur
    }
}

/// Polls `f` every few milliseconds until it returns true or `timeout`
/// passes; returns whether it did.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}
