//! What bench/proxy.rs prints at the end: the table (median TPS, ratio to direct, the whole
//! machine's busy CPU per transaction), the failed runs with pgbench's own words, a verdict line
//! per rampart target and workload against issue 16's targets, each relay's CPU and memory, and
//! the idle-client footprints.
//!
//! Verdicts compare medians measured in the same run, each rampart against the PgBouncer in the
//! same pool mode ([`PAIRS`]). A comparison without a figure on PgBouncer's side (all its runs
//! failed) is reported as such and judged for rampart alone: it missed only if it has no figure
//! either.

use crate::common::procfs::{self, kb_to_mb};
use crate::idle::Footprint;
use crate::pgbench::WORKLOADS;
use crate::targets::{Kind, Target};
use crate::{Results, DIRECT_RATIO_TARGET, IDLE_TARGET_MB};

/// Each rampart and the PgBouncer it is held against.
const PAIRS: [(Kind, Kind); 2] = [(Kind::Rampart, Kind::PgBouncer), (Kind::RampartTxn, Kind::PgBouncerTxn)];

pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn index(targets: &[Target], kind: Kind) -> Option<usize> {
    targets.iter().position(|t| t.kind == kind)
}

/// Median TPS of workload `w` through target `t`.
fn tps(res: &Results, w: usize, t: usize) -> Option<f64> {
    median(&res.tps[w][t])
}

/// Median machine CPU per transaction (µs) of workload `w` through target `t`.
fn us_per_tx(res: &Results, w: usize, t: usize) -> Option<f64> {
    median(&res.cpu[w][t].iter().map(|m| m.us_per_tx).collect::<Vec<_>>())
}

/// Median TPS of workload `w` through target `t` over the direct median.
fn ratio(res: &Results, w: usize, t: usize) -> Option<f64> {
    match (tps(res, w, t), tps(res, w, 0)) {
        (Some(m), Some(d)) if d > 0.0 => Some(m / d),
        _ => None,
    }
}

pub fn print_table(res: &Results, targets: &[Target]) {
    println!(
        "{:<24} {:<13} {:>10} {:>8} {:>9} {:>8} {:>6}  {:<22} runs",
        "workload", "target", "median TPS", "/ direct", "CPU us/tx", "+direct", "busy", "min .. max TPS"
    );
    for (w, workload) in WORKLOADS.iter().enumerate() {
        let direct_us = us_per_tx(res, w, 0);
        for (t, target) in targets.iter().enumerate() {
            let values = &res.tps[w][t];
            let (med, spread) = match tps(res, w, t) {
                Some(m) => {
                    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (format!("{m:.1}"), format!("{lo:.1} .. {hi:.1}"))
                }
                None => ("FAILED".into(), "-".into()),
            };
            let dash = || "-".to_string();
            let ratio = ratio(res, w, t).map_or_else(dash, |r| format!("{r:.2}"));
            let us = us_per_tx(res, w, t);
            let cpu = us.map_or_else(dash, |v| format!("{v:.1}"));
            let extra = match (us, direct_us) {
                (Some(v), Some(d)) if t > 0 => format!("{:+.1}", v - d),
                _ => dash(),
            };
            let busy = median(&res.cpu[w][t].iter().map(|m| m.busy).collect::<Vec<_>>())
                .map_or_else(dash, |b| format!("{:.0} %", b * 100.0));
            let failed = res.errors[w][t].len();
            let runs = match (failed, res.warnings[w][t].len()) {
                (0, 0) => values.len().to_string(),
                (_, 0) => format!("{} of {} FAILED", failed, values.len() + failed),
                (_, n) => format!("{} of {} FAILED; failed transactions in {n}", failed, values.len() + failed),
            };
            println!(
                "{:<24} {:<13} {med:>10} {ratio:>8} {cpu:>9} {extra:>8} {busy:>6}  {spread:<22} {runs}",
                workload.name, target.name
            );
        }
    }
}

/// Every run that failed or reported failed transactions, grouped by workload and target.
pub fn print_failures(res: &Results, targets: &[Target]) {
    let mut any = false;
    for (w, workload) in WORKLOADS.iter().enumerate() {
        for (t, target) in targets.iter().enumerate() {
            for e in res.errors[w][t].iter().chain(&res.warnings[w][t]) {
                if !any {
                    println!("[bench] failures (pgbench's words; its output files are in the cluster directory):");
                    any = true;
                }
                println!("[bench]   {} through {}: {e}", workload.name, target.name);
            }
        }
    }
}

/// Tallies and prints verdict parts.
struct Judge {
    ok: usize,
    missed: usize,
}

impl Judge {
    fn verdict(&mut self, met: bool) -> &'static str {
        if met {
            self.ok += 1;
            "OK"
        } else {
            self.missed += 1;
            "MISSED"
        }
    }
}

/// One line per rampart target and workload, then the idle-client footprint's.
pub fn print_verdicts(res: &Results, targets: &[Target], idle: &[(Target, Footprint)]) {
    let mut judge = Judge { ok: 0, missed: 0 };
    for (ours, theirs) in PAIRS {
        let (Some(o), Some(p)) = (index(targets, ours), index(targets, theirs)) else { continue };
        let (name, peer) = (targets[o].name, targets[p].name);
        for (w, workload) in WORKLOADS.iter().enumerate() {
            let Some(mine) = tps(res, w, o) else {
                println!("[bench] verdict {name} / {}: no {name} figure: {}", workload.name, judge.verdict(false));
                continue;
            };
            let mut parts = Vec::new();
            match (us_per_tx(res, w, o), us_per_tx(res, w, p)) {
                (Some(a), Some(b)) => parts
                    .push(format!("machine CPU {a:.1} us/tx vs {peer} {b:.1} (target <=): {}", judge.verdict(a <= b))),
                (Some(a), None) => parts.push(format!("machine CPU {a:.1} us/tx; no {peer} figure to compare")),
                _ => parts.push("no machine CPU figure".into()),
            }
            if workload.pooler_ratio_target {
                match (ratio(res, w, o), ratio(res, w, p)) {
                    (Some(a), Some(b)) => {
                        parts.push(format!("/direct {a:.3} vs {peer} {b:.3} (target >=): {}", judge.verdict(a >= b)))
                    }
                    _ => parts.push(format!("no ratio to direct for {name} or {peer}")),
                }
            }
            if ours == Kind::Rampart {
                if let Some(h) = index(targets, Kind::Haproxy).and_then(|h| tps(res, w, h)).filter(|&h| h > 0.0) {
                    let r = mine / h;
                    parts.push(format!("/haproxy {r:.3} (target > 1): {}", judge.verdict(r > 1.0)));
                }
                if workload.ratio_target {
                    if let Some(r) = ratio(res, w, o) {
                        parts.push(format!(
                            "/direct {r:.3} (target >= {DIRECT_RATIO_TARGET}): {}",
                            judge.verdict(r >= DIRECT_RATIO_TARGET)
                        ));
                    }
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
    println!("[bench] verdicts: {} OK, {} MISSED", judge.ok, judge.missed);
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
                let share = if load.wall_secs > 0.0 {
                    format!("{:.0} %", load.cpu_secs / load.wall_secs * 100.0)
                } else {
                    "-".into()
                };
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
