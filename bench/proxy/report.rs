//! What bench/proxy.rs prints at the end: the table (median TPS, ratio to direct, the whole
//! machine's busy CPU per transaction), the failed runs with pgbench's own words, a verdict line
//! per rampart target and workload against issue 16's targets, each relay's CPU and memory, and
//! the idle-client footprints.
//!
//! Verdicts compare each rampart with the PgBouncer in the same pool mode ([`PAIRS`]) round by
//! round ([`crate::runs::Paired`]): met when the target holds in every round, missed when it
//! fails in every round, within the spread otherwise; the medians over the run are printed
//! beside them. A comparison without a figure on PgBouncer's side (all its runs failed) is
//! reported as such and not judged; rampart without a figure of its own missed.

use crate::common::procfs::{self, kb_to_mb};
use crate::idle::Footprint;
use crate::pgbench::WORKLOADS;
use crate::runs::{Bound, Judge};
use crate::targets::{Kind, Target};
use crate::{Results, DIRECT_RATIO_TARGET, IDLE_TARGET_MB};

/// Each rampart and the PgBouncer it is held against.
const PAIRS: [(Kind, Kind); 2] = [(Kind::Rampart, Kind::PgBouncer), (Kind::RampartTxn, Kind::PgBouncerTxn)];

fn index(targets: &[Target], kind: Kind) -> Option<usize> {
    targets.iter().position(|t| t.kind == kind)
}

fn names(targets: &[Target]) -> (Vec<&'static str>, Vec<&'static str>) {
    (WORKLOADS.iter().map(|w| w.name).collect(), targets.iter().map(|t| t.name).collect())
}

/// The table of medians ([`Results::print_table`]).
pub fn print_table(res: &Results, targets: &[Target]) {
    let (w, t) = names(targets);
    res.print_table(&w, &t);
}

/// The failed runs ([`Results::print_failures`]).
pub fn print_failures(res: &Results, targets: &[Target]) {
    let (w, t) = names(targets);
    res.print_failures(&w, &t);
}

/// One line per rampart target and workload, then the idle-client footprint's.
pub fn print_verdicts(res: &Results, targets: &[Target], idle: &[(Target, Footprint)]) {
    let mut judge = Judge::default();
    for (ours, theirs) in PAIRS {
        let (Some(o), Some(p)) = (index(targets, ours), index(targets, theirs)) else { continue };
        let (name, peer) = (targets[o].name, targets[p].name);
        for (w, workload) in WORKLOADS.iter().enumerate() {
            if res.median_tps(w, o).is_none() {
                println!("[bench] verdict {name} / {}: no {name} figure: {}", workload.name, judge.verdict(false));
                continue;
            }
            let mut parts = Vec::new();
            match (res.us_per_tx(w, o), res.us_per_tx(w, p)) {
                (Some(a), Some(b)) => parts.push(format!(
                    "machine CPU {a:.1} us/tx vs {peer} {b:.1} (medians); {}",
                    judge.paired(&format!("{name}/{peer}"), &res.paired_cpu(w, o, p), Bound::AtMost(1.0))
                )),
                (Some(a), None) => parts.push(format!("machine CPU {a:.1} us/tx; no {peer} figure to compare")),
                _ => parts.push("no machine CPU figure".into()),
            }
            // Not judged (the target is the machine's figure), but steadier on a small
            // host: the relays' own CPU, without the kernel's background work.
            if let (Some(a), Some(b)) = (res.relay_us_per_tx(w, o), res.relay_us_per_tx(w, p)) {
                parts.push(format!("relay's own CPU {a:.1} us/tx vs {b:.1}"));
            }
            if workload.pooler_ratio_target {
                // Its ratio to direct at least PgBouncer's: within a round both share direct's
                // figure, so this is rampart's TPS over PgBouncer's in that round.
                match (res.ratio(w, o), res.ratio(w, p)) {
                    (Some(a), Some(b)) => parts.push(format!(
                        "/direct {a:.3} vs {peer} {b:.3} (medians); {}",
                        judge.paired(&format!("TPS {name}/{peer}"), &res.paired_tps(w, o, p), Bound::AtLeast(1.0))
                    )),
                    _ => parts.push(format!("no ratio to direct for {name} or {peer}")),
                }
            }
            if ours == Kind::Rampart {
                if let Some(h) = index(targets, Kind::Haproxy).filter(|&h| res.median_tps(w, h).is_some()) {
                    parts.push(judge.paired(
                        &format!("TPS {name}/haproxy"),
                        &res.paired_tps(w, o, h),
                        Bound::Above(1.0),
                    ));
                }
                if workload.ratio_target {
                    parts.push(judge.paired(
                        &format!("TPS {name}/direct"),
                        &res.paired_tps(w, o, 0),
                        Bound::AtLeast(DIRECT_RATIO_TARGET),
                    ));
                }
            }
            println!("[bench] verdict {name} / {}: {}", workload.name, parts.join("; "));
        }
    }
    for (target, f) in idle.iter().filter(|(t, _)| t.kind == Kind::RampartTxn) {
        let mb = f.rss_kb.map(kb_to_mb);
        let met = f.held == f.wanted && mb.is_some_and(|m| m <= IDLE_TARGET_MB);
        println!(
            "[bench] verdict {} / {} idle clients: {} held, VmRSS {} (target <= {IDLE_TARGET_MB:.0} MB with all held): {}",
            target.name,
            f.wanted,
            f.held,
            mb.map_or_else(|| "?".into(), |m| format!("{m:.1} MB")),
            judge.verdict(met)
        );
    }
    judge.print_tally();
}

/// `12.3 MB`, or `?`.
fn mb(kb: Option<u64>) -> String {
    kb.map_or_else(|| "?".into(), |kb| format!("{:.1} MB", kb_to_mb(kb)))
}

/// What one idle-client measurement saw, as it happens.
pub fn print_footprint(target: &Target, f: &Footprint) {
    println!(
        "[bench] {}: {} of {} idle clients held (logins took {:.1} s; {} failed{}); a query on one of them: {}",
        target.name,
        f.held,
        f.wanted,
        f.login_secs,
        f.failed,
        f.first_error.as_ref().map(|e| format!(", first: {e}")).unwrap_or_default(),
        match &f.serves {
            Ok(()) => "answered".to_string(),
            Err(e) => format!("FAILED: {e}"),
        }
    );
    println!(
        "[bench] {}: VmRSS {} before, {} holding them (VmHWM {}), {} after they left",
        target.name,
        mb(f.rss_before_kb),
        mb(f.rss_kb),
        mb(f.hwm_kb),
        mb(f.rss_after_kb)
    );
}

/// Each relay's CPU during its runs and its memory right after the rounds (before the idle
/// clients), read then and printed with the results.
pub struct Costs {
    lines: Vec<String>,
}

impl Costs {
    pub fn now(res: &Results, targets: &[Target]) -> Costs {
        let lines = targets
            .iter()
            .enumerate()
            .filter_map(|(t, target)| {
                let pid = target.pid?;
                let load = res.load[t];
                let share = load.share();
                Some(format!(
                    "[bench] {} (pid {pid}): CPU {:.1} s during its {:.0} s of runs = {share} of one core; \
                     {:.1} s CPU since start; after the rounds VmRSS {}, VmHWM {}",
                    target.name,
                    load.cpu_secs,
                    load.wall_secs,
                    procfs::cpu_secs(pid).unwrap_or(0.0),
                    mb(procfs::status_kb(pid, "VmRSS")),
                    mb(procfs::status_kb(pid, "VmHWM")),
                ))
            })
            .collect();
        Costs { lines }
    }

    pub fn print(&self) {
        for line in &self.lines {
            println!("{line}");
        }
    }
}

/// The footprints again, in the results.
pub fn print_footprints(idle: &[(Target, Footprint)]) {
    for (target, f) in idle {
        print_footprint(target, f);
    }
}
