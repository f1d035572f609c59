//! What the benches read about a process from `/proc`: resident memory, CPU time and reads. Used
//! for the agents' idle footprint (bench/failover.rs), the proxies' cost under load (bench/proxy.rs,
//! bench/rw_split.rs) and the leader's cost of a new replica (bench/clone.rs).

/// `key:` of `/proc/<pid>/status` in kB, e.g. `VmRSS`.
pub fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
}

/// (utime, stime, cutime, cstime) of `pid` in clock ticks: its own user and system time, and its
/// reaped children's.
pub fn times_ticks(pid: u32) -> Option<[u64; 4]> {
    let fields = rampart_kit::pid::stat_fields(pid)?;
    // fields[0] is field 3 (state): utime, stime, cutime, cstime are fields 14 to 17.
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some([field(14)?, field(15)?, field(16)?, field(17)?])
}

/// (utime + stime, cutime + cstime) of `pid` in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let [utime, stime, cutime, cstime] = times_ticks(pid)?;
    Some((utime + stime, cutime + cstime))
}

pub fn clock_ticks_per_sec() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// CPU time of `pid` itself (utime + stime) in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    cpu_ticks(pid).map(|(own, _)| own as f64 / clock_ticks_per_sec())
}

/// CPU time (utime + stime) of `pid` and of its living descendants, in seconds: a relay that forks
/// a process per client (Pgpool-II) counts whole. `None` when `pid` itself is gone.
pub fn tree_cpu_secs(pid: u32) -> Option<f64> {
    let own = cpu_secs(pid)?;
    Some(own + rampart_kit::pid::descendants(pid).into_iter().filter_map(cpu_secs).sum::<f64>())
}

/// `Pss` of `/proc/<pid>/smaps_rollup` in kB: its resident memory with each shared page divided
/// among the processes sharing it, so that a process tree's figures add up.
pub fn pss_kb(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("Pss:")?.split_whitespace().next()?.parse().ok())
}

/// The summed [`pss_kb`] of `pid` and its living descendants, and how many processes that is.
pub fn tree_pss_kb(pid: u32) -> Option<(u64, usize)> {
    let own = pss_kb(pid)?;
    let others: Vec<u64> = rampart_kit::pid::descendants(pid).into_iter().filter_map(pss_kb).collect();
    Some((own + others.iter().sum::<u64>(), 1 + others.len()))
}

/// The whole machine's CPU time from the first line of `/proc/stat`, in clock ticks summed over
/// the CPUs: (busy, all). Busy is user, nice, system, irq and softirq; idle, iowait and steal
/// are not.
pub fn machine_cpu_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let field = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is already inside user).
    let busy = field(0) + field(1) + field(2) + field(5) + field(6);
    Some((busy, busy + field(3) + field(4) + field(7)))
}

/// kB as reported by `/proc` to MB (10^6 bytes).
pub fn kb_to_mb(kb: u64) -> f64 {
    kb as f64 * 1024.0 / 1e6
}

/// `rchar` (bytes read through read(2) and its kin, page-cache hits included) and `read_bytes`
/// (bytes the process caused to be fetched from storage) of `/proc/<pid>/io`. When a process
/// reaps a child, Linux adds the child's counts to its own, as it does for CPU time.
pub fn io_read(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |key: &str| -> Option<u64> {
        text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().parse().ok())
    };
    Some((field("rchar")?, field("read_bytes")?))
}

/// What a group of process trees has used so far, from [`tree_use`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TreeUse {
    /// utime + stime + cutime + cstime, in seconds.
    pub cpu_secs: f64,
    /// `rchar` of [`io_read`].
    pub rchar: u64,
    /// `read_bytes` of [`io_read`].
    pub read_bytes: u64,
    pub processes: usize,
}

impl TreeUse {
    /// What was used between `before` and `self`.
    pub fn since(&self, before: &TreeUse) -> TreeUse {
        TreeUse {
            cpu_secs: self.cpu_secs - before.cpu_secs,
            rchar: self.rchar.saturating_sub(before.rchar),
            read_bytes: self.read_bytes.saturating_sub(before.read_bytes),
            processes: self.processes,
        }
    }
}

/// The CPU time and reads of the processes `roots` and their living descendants, each counted
/// once, including what the children they reaped had used (cutime/cstime, and the reaped
/// children's I/O counts Linux folds into the parent's). So the difference of two readings of a
/// postmaster's tree counts the backends and walsenders that came and went in between.
pub fn tree_use(roots: &[u32]) -> TreeUse {
    let mut pids: Vec<u32> = Vec::new();
    for &root in roots {
        if rampart_kit::pid::is_alive(root) {
            pids.push(root);
            pids.extend(rampart_kit::pid::descendants(root));
        }
    }
    pids.sort_unstable();
    pids.dedup();
    let ticks = clock_ticks_per_sec();
    let mut total = TreeUse::default();
    for pid in pids {
        let Some((own, children)) = cpu_ticks(pid) else { continue };
        total.cpu_secs += (own + children) as f64 / ticks;
        let (rchar, read_bytes) = io_read(pid).unwrap_or((0, 0));
        total.rchar += rchar;
        total.read_bytes += read_bytes;
        total.processes += 1;
    }
    total
}
