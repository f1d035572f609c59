//! What bench/rw_split.rs prints at the end besides the table of medians ([`crate::runs`]): where
//! the reads ran, what each rampart's splitter did, the classifier's cost per statement measured
//! in-process ([`crate::classifier`]) beside the live hit rates, each relay's CPU and memory, Pgpool-II's
//! `SHOW POOL_NODES`, and a verdict line per rampart and workload against issue 17's target (less
//! machine CPU per transaction than Pgpool-II). Verdicts compare medians measured in the same
//! run; a comparison without a Pgpool-II figure is reported as such and misses only if rampart
//! has no figure either.

use crate::classifier::Cost;
use crate::common::procfs::{self, kb_to_mb};
use crate::pgpool::PoolNode;
use crate::relays::{Kind, Target};
use crate::runs::{Bound, Judge};
use crate::split_metrics::Figures;
use crate::{Results, Workload};

/// The workloads' and targets' names, for the tables.
pub struct Names {
    pub workloads: Vec<&'static str>,
    pub targets: Vec<&'static str>,
}

impl Names {
    pub fn new(workloads: &[Workload], targets: &[Target]) -> Names {
        Names {
            workloads: workloads.iter().map(|w| w.name).collect(),
            targets: targets.iter().map(|t| t.name).collect(),
        }
    }
}

/// `12.3 %` of `part` in `whole`, or `-`.
fn pct(part: f64, whole: f64) -> String {
    if whole > 0.0 {
        format!("{:.1} %", part / whole * 100.0)
    } else {
        "-".into()
    }
}

/// Per workload and target, the share of the reads each member served, the writes, how many of
/// pgbench's transactions the members' counts account for, and the WAL the primary wrote per
/// second of run (`secs_per_run`).
pub fn print_spread(res: &Results, names: &Names, members: &[u16], secs_per_run: u64) {
    let mut header = format!("\n{:<24} {:<20} {:>10}", "reads served", "target", "reads");
    for (m, port) in members.iter().enumerate() {
        let who = if m == 0 { "primary".to_string() } else { format!("replica {m}") };
        header.push_str(&format!(" {:>16}", format!("{who} :{port}")));
    }
    println!("{header} {:>9} {:>9} {:>9}", "writes", "counted", "WAL MB/s");
    for (w, workload) in names.workloads.iter().enumerate() {
        for (t, target) in names.targets.iter().enumerate() {
            let served = &res.served[w][t];
            let reads: u64 = served.iter().map(|s| s.reads).sum();
            let writes: u64 = served.iter().map(|s| s.writes).sum();
            let mut line = format!("{workload:<24} {target:<20} {reads:>10}");
            for s in served {
                line.push_str(&format!(" {:>16}", pct(s.reads as f64, reads as f64)));
            }
            let counted = pct((reads + writes) as f64, res.transactions[w][t] as f64);
            let secs = res.counted_runs[w][t] as f64 * secs_per_run as f64;
            let wal = if secs > 0.0 { format!("{:.1}", res.wal_bytes[w][t] as f64 / 1e6 / secs) } else { "-".into() };
            println!("{line} {writes:>9} {counted:>9} {wal:>9}");
        }
    }
}

/// Per rampart and workload: what its splitter did and what its classifier cost; then each
/// rampart's figures since it started (`lifetime`, the warm-up and the probes included).
pub fn print_classifier(
    res: &Results,
    names: &Names,
    targets: &[Target],
    lifetime: &[(&str, Result<Figures, String>)],
) {
    println!(
        "\n{:<24} {:<20} {:>10} {:>11} {:>15} {:>9} {:>7} {:>8} {:>8} {:>7} {:>13}",
        "classifier",
        "target",
        "statements",
        "to replicas",
        "kept on primary",
        "hit rate",
        "misses",
        "us/stmt",
        "us/miss",
        "entries",
        "route changes"
    );
    let row = |workload: &str, target: &str, f: &Figures, changes: Option<u64>| {
        let statements = f.statements();
        let per = |n: f64| if n > 0.0 { format!("{:.2}", f.parse_secs * 1e6 / n) } else { "-".into() };
        println!(
            "{workload:<24} {target:<20} {statements:>10.0} {:>11} {:>15.0} {:>9} {:>7.0} {:>8} {:>8} {:>7.0} {:>13}",
            pct(f.to_replica, statements),
            f.kept_on_primary,
            pct(f.hits, f.hits + f.misses),
            f.misses,
            per(statements),
            per(f.misses),
            f.entries,
            changes.map_or_else(|| "-".to_string(), |n| n.to_string())
        );
    };
    for (w, workload) in names.workloads.iter().enumerate() {
        for (t, target) in targets.iter().enumerate().filter(|(_, t)| t.kind == Kind::Rampart) {
            match &res.split[w][t] {
                Some(f) => row(workload, target.name, f, Some(res.route_changes[w][t])),
                None => println!("{workload:<24} {:<20} no figures", target.name),
            }
        }
    }
    for (name, figures) in lifetime {
        match figures {
            Ok(f) => row("since its start", name, f, None),
            Err(e) => println!("{:<24} {name:<20} {e}", "since its start"),
        }
    }
    println!(
        "(kept on primary: reads read-your-writes kept there, no replica having replayed the session's last write; \
         us/stmt and us/miss: the time the proxy spent parsing and classifying the misses, over all statements and over \
         the misses; a hit's cache look-up is not timed, see the in-process figures below. Route changes: the read-only route changes it logged during its \
         runs, each a replica dropped, for lagging more than max_lag bytes by the members' DCS keys, or taken back)"
    );
}

/// The classifier's cost per statement measured in-process (`costs`), per workload, beside each
/// rampart's cache hit rate in the live runs of that workload.
pub fn print_classifier_cost(costs: &Result<Vec<Cost>, String>, res: &Results, names: &Names, targets: &[Target]) {
    let ramparts: Vec<(usize, &Target)> = targets.iter().enumerate().filter(|(_, t)| t.kind == Kind::Rampart).collect();
    let costs = match costs {
        Ok(c) => c,
        Err(e) => {
            println!("\n[bench] classifier cost not measured: {e}");
            return;
        }
    };
    let who: Vec<&str> = ramparts.iter().map(|(_, t)| t.name).collect();
    println!(
        "\n{:<24} {:>12} {:>13}  live hit rate ({})",
        "classifier, in-process",
        "ns/stmt hit",
        "ns/stmt miss",
        who.join(", ")
    );
    for c in costs {
        let live = match names.workloads.iter().position(|w| *w == c.workload) {
            Some(w) => ramparts
                .iter()
                .map(|(t, _)| res.split[w][*t].map_or_else(|| "-".to_string(), |f| pct(f.hits, f.hits + f.misses)))
                .collect::<Vec<_>>()
                .join(", "),
            None => "not run live".into(),
        };
        println!("{:<24} {:>12.0} {:>13.0}  {live}", c.workload, c.hit_ns, c.miss_ns);
        for p in &c.problems {
            println!("[bench]   {}: {p}", c.workload);
        }
    }
    println!(
        "(rampart_proxy::split's Splitting::class_of on one thread over pgbench's texts: hit = constants masked and the \
         cache looked up, what every statement pays; miss = distinct texts the cache cannot mask (numbered table names), \
         each parsed by pg_query and classified)"
    );
}

/// A line per relay: its CPU during its runs (as a share of one core and per transaction) and its
/// memory now; read right after the rounds, printed with the results.
pub fn relay_costs(res: &Results, targets: &[Target]) -> Vec<String> {
    let mut lines = Vec::new();
    for (t, target) in targets.iter().enumerate() {
        let Some(pid) = target.pid else { continue };
        let load = res.runs.load[t];
        let memory = match procfs::tree_pss_kb(pid) {
            Some((kb, 1)) => format!("Pss {:.1} MB", kb_to_mb(kb)),
            Some((kb, n)) => format!("Pss {:.1} MB over {n} processes", kb_to_mb(kb)),
            None => "Pss ?".into(),
        };
        let transactions: u64 = res.transactions.iter().map(|per_target| per_target[t]).sum();
        let per_tx = if transactions > 0 {
            format!(" = {:.1} us per transaction", load.cpu_secs * 1e6 / transactions as f64)
        } else {
            String::new()
        };
        lines.push(format!(
            "[bench] {} (pid {pid}): CPU {:.1} s during its {:.0} s of runs = {} of one core{per_tx}; {:.1} s CPU \
             since start; after the rounds {memory}",
            target.name,
            load.cpu_secs,
            load.wall_secs,
            load.share(),
            procfs::tree_cpu_secs(pid).unwrap_or(0.0),
        ));
    }
    lines
}

/// Pgpool-II's own count of what it sent each member.
pub fn print_pool_nodes(nodes: Result<Vec<PoolNode>, String>, primary_port: u16) {
    match nodes {
        Ok(nodes) => {
            let total: u64 = nodes.iter().map(|n| n.select_cnt).sum();
            let parts: Vec<String> = nodes
                .iter()
                .map(|n| {
                    let own = if n.port == primary_port.to_string() { ", the primary" } else { "" };
                    format!(
                        ":{} ({} {}, weight {}{own}) {} = {}",
                        n.port,
                        n.role,
                        n.status,
                        n.lb_weight,
                        n.select_cnt,
                        pct(n.select_cnt as f64, total as f64)
                    )
                })
                .collect();
            println!("[bench] pgpool SHOW POOL_NODES select_cnt since its start: {}", parts.join("; "));
        }
        Err(e) => println!("[bench] pgpool SHOW POOL_NODES: {e}"),
    }
}

/// One line per rampart and workload: its machine CPU per transaction against Pgpool-II's.
pub fn print_verdicts(res: &Results, names: &Names, targets: &[Target]) {
    let mut judge = Judge::default();
    let Some(p) = targets.iter().position(|t| t.kind == Kind::Pgpool) else { return };
    for (o, ours) in targets.iter().enumerate().filter(|(_, t)| t.kind == Kind::Rampart) {
        for (w, workload) in names.workloads.iter().enumerate() {
            let ratios = match (res.runs.ratio(w, o), res.runs.ratio(w, p)) {
                (Some(a), Some(b)) => format!("; /direct {a:.2} vs pgpool {b:.2}"),
                _ => String::new(),
            };
            let cpu = match (res.runs.us_per_tx(w, o), res.runs.us_per_tx(w, p)) {
                (Some(a), Some(b)) => format!(
                    "machine CPU {a:.1} us/tx vs pgpool {b:.1} (medians); {}",
                    judge.paired(&format!("{}/pgpool", ours.name), &res.runs.paired_cpu(w, o, p), Bound::Below(1.0))
                ),
                (Some(a), None) => format!("machine CPU {a:.1} us/tx; no pgpool figure to compare"),
                _ => format!("no machine CPU figure: {}", judge.verdict(false)),
            };
            println!("[bench] verdict {} / {workload}: {cpu}{ratios}", ours.name);
        }
    }
    judge.print_tally();
}
