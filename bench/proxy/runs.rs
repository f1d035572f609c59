//! Timed pgbench runs over workloads and targets, shared by bench/proxy.rs and bench/rw_split.rs:
//! one run measured ([`Runs::measure`]: pgbench's TPS, the whole machine's busy CPU per
//! transaction from `/proc/stat`, the relay's own CPU time), everything the runs measured
//! ([`Runs`], indexed `[workload][target]`, target 0 being the direct path), the table of their
//! medians, the failed runs in pgbench's words, per-round ratios between two targets
//! ([`Paired`]), and the tally of verdict lines ([`Judge`]).
//!
//! Why verdicts are paired by round: on a saturated two-core machine one target's TPS moves by
//! 20-40 % from round to round, so two medians taken over different rounds can change order on
//! noise alone (runs of the same code flipped verdicts both ways). The two targets of one round
//! run back to back, minutes apart at most, so their ratio carries far less of the machine's slow
//! spells; a target is met when it holds in every round, missed when it fails in every round,
//! and otherwise the run cannot tell ([`Verdict::Undecided`]), which the tally says apart.

use std::time::Instant;

use crate::common::{median, procfs, spread};
use crate::pgbench::Outcome;

/// A relay's CPU time during its own runs.
#[derive(Default, Clone, Copy)]
pub struct Load {
    pub cpu_secs: f64,
    pub wall_secs: f64,
}

impl Load {
    /// Its CPU time as a share of one core over its runs, `45 %`, or `-`.
    pub fn share(&self) -> String {
        if self.wall_secs > 0.0 {
            format!("{:.0} %", self.cpu_secs / self.wall_secs * 100.0)
        } else {
            "-".into()
        }
    }
}

/// The whole machine's CPU during one run.
#[derive(Clone, Copy)]
pub struct MachineCpu {
    /// Busy CPU time per transaction, in microseconds.
    pub us_per_tx: f64,
    /// Busy share of all the CPUs' time, 0 to 1.
    pub busy: f64,
    /// The relay's own CPU time (with its descendants) per transaction, in microseconds: unlike
    /// the machine's figure, untouched by the kernel's background work on a small host.
    pub relay_us_per_tx: Option<f64>,
}

/// One successful run.
#[derive(Clone, Copy)]
pub struct Run {
    pub round: usize,
    pub tps: f64,
    /// `None` when `/proc/stat` or the transaction count could not be read.
    pub cpu: Option<MachineCpu>,
}

/// One run's place in [`Runs`] and its names, for the line printed as it ends.
pub struct Slot<'a> {
    pub w: usize,
    pub t: usize,
    pub workload: &'a str,
    pub target: &'a str,
    /// The relay whose CPU time is read around the run (with its descendants: Pgpool-II forks a
    /// process per client); `None` for the direct path.
    pub pid: Option<u32>,
    pub round: usize,
    /// Names pgbench's output files, `pgbench-<tag>.{out,err}`.
    pub tag: &'a str,
}

/// Everything measured, indexed `[workload][target]`: `runs` holds each successful run,
/// `errors` what went wrong in each failed run, `warnings` the runs that succeeded but counted
/// failed transactions; `load` each target's relay CPU over all its runs.
pub struct Runs {
    pub runs: Vec<Vec<Vec<Run>>>,
    pub errors: Vec<Vec<Vec<String>>>,
    pub warnings: Vec<Vec<Vec<String>>>,
    pub notes: Vec<String>,
    pub failures: usize,
    pub load: Vec<Load>,
}

impl Runs {
    pub fn new(workloads: usize, targets: usize) -> Runs {
        Runs {
            runs: grid(workloads, targets),
            errors: grid(workloads, targets),
            warnings: grid(workloads, targets),
            notes: Vec::new(),
            failures: 0,
            load: vec![Load::default(); targets],
        }
    }

    /// Runs `run` (one pgbench run) as `slot`, reading the machine's and the relay's CPU around
    /// it; records and prints the outcome. Returns the transactions of a successful run.
    pub fn measure(&mut self, slot: &Slot, run: impl FnOnce() -> Result<Outcome, String>) -> Option<u64> {
        let Slot { w, t, workload, target, pid, round, tag } = *slot;
        let cpu_before = pid.and_then(procfs::tree_cpu_secs);
        let machine_before = procfs::machine_cpu_ticks();
        let t0 = Instant::now();
        let outcome = run();
        let wall = t0.elapsed().as_secs_f64();
        let transactions = outcome.as_ref().ok().and_then(|o| o.transactions).filter(|&n| n > 0);
        let relay_secs = match (pid, cpu_before) {
            (Some(pid), Some(before)) => procfs::tree_cpu_secs(pid).map(|after| after - before),
            _ => None,
        };
        if let Some(secs) = relay_secs {
            self.load[t].cpu_secs += secs;
            self.load[t].wall_secs += wall;
        }
        let machine = match (machine_before, procfs::machine_cpu_ticks(), transactions) {
            (Some((b0, a0)), Some((b1, a1)), Some(n)) if a1 > a0 => Some(MachineCpu {
                us_per_tx: (b1 - b0) as f64 / procfs::clock_ticks_per_sec() * 1e6 / n as f64,
                busy: (b1 - b0) as f64 / (a1 - a0) as f64,
                relay_us_per_tx: relay_secs.map(|secs| secs * 1e6 / n as f64),
            }),
            _ => None,
        };
        match outcome {
            Ok(o) => {
                let cpu = machine.map(|m| {
                    let own = m.relay_us_per_tx.map(|r| format!(", relay {r:.1} us/tx")).unwrap_or_default();
                    format!("; machine CPU {:.0} us/tx, {:.0} % busy{own}", m.us_per_tx, m.busy * 100.0)
                });
                let failed = o.failed.filter(|&n| n > 0).map(|n| format!("; {n} FAILED transactions"));
                println!(
                    "[bench]   {workload:<24} {target:<20} {:>10.1} tps ({}{}{})",
                    o.tps,
                    o.note,
                    cpu.unwrap_or_default(),
                    failed.clone().unwrap_or_default()
                );
                if let Some(f) = failed {
                    self.warnings[w][t].push(format!("round {round}: pgbench reported{f} (see pgbench-{tag}.err)"));
                }
                self.runs[w][t].push(Run { round, tps: o.tps, cpu: machine });
                if !self.notes.contains(&o.note) {
                    self.notes.push(o.note);
                }
                Some(o.transactions.unwrap_or(0))
            }
            Err(e) => {
                println!("[bench]   {workload:<24} {target:<20} FAILED: {e}");
                self.errors[w][t].push(format!("round {round}: {e}"));
                self.failures += 1;
                None
            }
        }
    }

    /// The line above the tables: `rounds` rounds of `secs` seconds, pgbench's notes on its
    /// figures, the failed runs, the CPUs.
    pub fn print_summary(&self, rounds: usize, secs: u64) {
        println!(
            "{rounds} round(s) of {secs} s; TPS as pgbench reports it ({}); {} failed run(s); {} CPUs, shared with pgbench \
             and PostgreSQL; machine CPU = busy CPU time of all processes / transactions",
            self.notes.join("; "),
            self.failures,
            crate::common::cpus()
        );
    }

    /// The TPS of each successful run of workload `w` through target `t`.
    fn tps(&self, w: usize, t: usize) -> Vec<f64> {
        self.runs[w][t].iter().map(|r| r.tps).collect()
    }

    /// The machine CPU figures of workload `w` through target `t`.
    fn cpu(&self, w: usize, t: usize) -> impl Iterator<Item = &MachineCpu> {
        self.runs[w][t].iter().filter_map(|r| r.cpu.as_ref())
    }

    /// Median TPS of workload `w` through target `t`.
    pub fn median_tps(&self, w: usize, t: usize) -> Option<f64> {
        median(&self.tps(w, t))
    }

    /// Median machine CPU per transaction (µs) of workload `w` through target `t`.
    pub fn us_per_tx(&self, w: usize, t: usize) -> Option<f64> {
        median(&self.cpu(w, t).map(|m| m.us_per_tx).collect::<Vec<_>>())
    }

    /// The median of the relay's own CPU per transaction (none for the direct path).
    pub fn relay_us_per_tx(&self, w: usize, t: usize) -> Option<f64> {
        median(&self.cpu(w, t).filter_map(|m| m.relay_us_per_tx).collect::<Vec<_>>())
    }

    /// Per round of workload `w` in which both targets `a` and `b` have a figure: `a`'s machine
    /// CPU per transaction over `b`'s.
    pub fn paired_cpu(&self, w: usize, a: usize, b: usize) -> Paired {
        self.paired(w, a, b, |r| r.cpu.map(|m| m.us_per_tx))
    }

    /// Per round of workload `w` in which both targets `a` and `b` succeeded: `a`'s TPS over
    /// `b`'s (with `b` the direct path, the round's ratio to direct).
    pub fn paired_tps(&self, w: usize, a: usize, b: usize) -> Paired {
        self.paired(w, a, b, |r| Some(r.tps))
    }

    fn paired(&self, w: usize, a: usize, b: usize, figure: impl Fn(&Run) -> Option<f64>) -> Paired {
        let ratios = self.runs[w][a]
            .iter()
            .filter_map(|x| {
                let y = self.runs[w][b].iter().find(|y| y.round == x.round)?;
                match (figure(x), figure(y)) {
                    (Some(p), Some(q)) if q > 0.0 => Some(p / q),
                    _ => None,
                }
            })
            .collect();
        Paired { ratios }
    }

    /// Median TPS of workload `w` through target `t` over the direct median (target 0).
    pub fn ratio(&self, w: usize, t: usize) -> Option<f64> {
        match (self.median_tps(w, t), self.median_tps(w, 0)) {
            (Some(m), Some(d)) if d > 0.0 => Some(m / d),
            _ => None,
        }
    }

    /// Per workload and target: median TPS, its ratio to direct, the median machine CPU per
    /// transaction and what it adds to direct's, the relay's own CPU per transaction, the median
    /// busy share, min and max TPS, runs.
    pub fn print_table(&self, workloads: &[&str], targets: &[&str]) {
        println!(
            "{:<24} {:<20} {:>10} {:>8} {:>9} {:>8} {:>9} {:>6}  {:<22} runs",
            "workload", "target", "median TPS", "/ direct", "CPU us/tx", "+direct", "relay", "busy", "min .. max TPS"
        );
        for (w, workload) in workloads.iter().enumerate() {
            let direct_us = self.us_per_tx(w, 0);
            for (t, target) in targets.iter().enumerate() {
                let values = self.tps(w, t);
                let (med, spread) = match self.median_tps(w, t) {
                    Some(m) => {
                        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
                        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        (format!("{m:.1}"), format!("{lo:.1} .. {hi:.1}"))
                    }
                    None => ("FAILED".into(), "-".into()),
                };
                let dash = || "-".to_string();
                let ratio = self.ratio(w, t).map_or_else(dash, |r| format!("{r:.2}"));
                let us = self.us_per_tx(w, t);
                let cpu = us.map_or_else(dash, |v| format!("{v:.1}"));
                let extra = match (us, direct_us) {
                    (Some(v), Some(d)) if t > 0 => format!("{:+.1}", v - d),
                    _ => dash(),
                };
                let relay = self.relay_us_per_tx(w, t).map_or_else(dash, |v| format!("{v:.1}"));
                let busy = median(&self.cpu(w, t).map(|m| m.busy).collect::<Vec<_>>())
                    .map_or_else(dash, |b| format!("{:.0} %", b * 100.0));
                let failed = self.errors[w][t].len();
                let runs = match (failed, self.warnings[w][t].len()) {
                    (0, 0) => values.len().to_string(),
                    (_, 0) => format!("{} of {} FAILED", failed, values.len() + failed),
                    (_, n) => format!("{} of {} FAILED; failed transactions in {n}", failed, values.len() + failed),
                };
                println!(
                    "{workload:<24} {target:<20} {med:>10} {ratio:>8} {cpu:>9} {extra:>8} {relay:>9} {busy:>6}  {spread:<22} {runs}"
                );
            }
        }
    }

    /// Every run that failed or reported failed transactions, grouped by workload and target.
    pub fn print_failures(&self, workloads: &[&str], targets: &[&str]) {
        let mut any = false;
        for (w, workload) in workloads.iter().enumerate() {
            for (t, target) in targets.iter().enumerate() {
                for e in self.errors[w][t].iter().chain(&self.warnings[w][t]) {
                    if !any {
                        println!("[bench] failures (pgbench's words; its output files are in the cluster directory):");
                        any = true;
                    }
                    println!("[bench]   {workload} through {target}: {e}");
                }
            }
        }
    }
}

/// An empty list per workload and target.
pub fn grid<T: Clone>(workloads: usize, targets: usize) -> Vec<Vec<Vec<T>>> {
    vec![vec![Vec::new(); targets]; workloads]
}

/// A bound a paired ratio is held to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    AtMost(f64),
    Below(f64),
    AtLeast(f64),
    Above(f64),
}

impl Bound {
    fn holds(self, x: f64) -> bool {
        match self {
            Bound::AtMost(b) => x <= b,
            Bound::Below(b) => x < b,
            Bound::AtLeast(b) => x >= b,
            Bound::Above(b) => x > b,
        }
    }
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bound::AtMost(b) => write!(f, "<= {b}"),
            Bound::Below(b) => write!(f, "< {b}"),
            Bound::AtLeast(b) => write!(f, ">= {b}"),
            Bound::Above(b) => write!(f, "> {b}"),
        }
    }
}

/// One ratio per round between two targets' figures ([`Runs::paired_cpu`], [`Runs::paired_tps`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Paired {
    pub ratios: Vec<f64>,
}

/// What a paired ratio says about a bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The bound holds in every round.
    Met,
    /// The bound fails in every round (or there is no round to judge).
    Missed,
    /// It holds in some rounds and fails in others: within the machine's spread.
    Undecided,
}

impl Paired {
    pub fn verdict(&self, bound: Bound) -> Verdict {
        let held = self.ratios.iter().filter(|&&r| bound.holds(r)).count();
        match held {
            _ if self.ratios.is_empty() => Verdict::Missed,
            n if n == self.ratios.len() => Verdict::Met,
            0 => Verdict::Missed,
            _ => Verdict::Undecided,
        }
    }

    /// `0.97 (0.94 .. 1.02, 4 rounds)`, or `no round with both figures`.
    pub fn describe(&self) -> String {
        match spread(&self.ratios) {
            Some((lo, m, hi)) if self.ratios.len() > 1 => {
                format!("{m:.3} ({lo:.3} .. {hi:.3}, {} rounds)", self.ratios.len())
            }
            Some((_, m, _)) => format!("{m:.3} (1 round)"),
            None => "no round with both figures".into(),
        }
    }
}

/// Tallies verdict parts.
#[derive(Default)]
pub struct Judge {
    pub ok: usize,
    pub missed: usize,
    pub undecided: usize,
}

impl Judge {
    pub fn verdict(&mut self, met: bool) -> &'static str {
        if met {
            self.ok += 1;
            "OK"
        } else {
            self.missed += 1;
            "MISSED"
        }
    }

    /// `what` per round: `rampart/pgbouncer machine CPU per round 0.97 (0.94 .. 1.02, 4 rounds)
    /// (target <= 1): WITHIN THE SPREAD`, tallied.
    pub fn paired(&mut self, what: &str, p: &Paired, bound: Bound) -> String {
        let word = match p.verdict(bound) {
            Verdict::Met => self.verdict(true),
            Verdict::Missed => self.verdict(false),
            Verdict::Undecided => {
                self.undecided += 1;
                "WITHIN THE SPREAD"
            }
        };
        format!("{what} per round {} (target {bound}): {word}", p.describe())
    }

    /// `[bench] verdicts: N OK, M MISSED, K within the spread`.
    pub fn print_tally(&self) {
        println!(
            "[bench] verdicts: {} OK, {} MISSED, {} within the spread (met in some rounds, missed in others)",
            self.ok, self.missed, self.undecided
        );
    }
}
