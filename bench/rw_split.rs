//! The read/write splitting benchmark: `cargo bench --bench rw_split`, part of `make bench`.
//!
//! It PRINTS numbers and asserts nothing. Through the e2e harness in `tests/support/` it starts a
//! three-node cluster (etcd, PostgreSQL 15, agents at ttl/loop_wait/retry_timeout 10/1/3), then
//! the relays that spread reads over its members ([`relays`]): three `rampart proxy`s with
//! `load_balance: on` on their read-write port (node 0's configuration plus a `proxy` section;
//! pools of 20 server connections per member, SCRAM against an `auth_file` holding the harness
//! superuser's password): `rampart-txn` in transaction mode with the default `read_your_writes:
//! session`, `rampart-txn-ryw-none` the same with `read_your_writes: none`, and `rampart-session`
//! in session mode (each client keeps its primary server connection for its session, its reads
//! split as in transaction mode); and Debian's Pgpool-II in streaming-replication mode with
//! `load_balance_mode = on` ([`pgpool`], which says how it is set up and why; every member of
//! weight 1, the load-balance node chosen per session, no query cache, SCRAM against
//! `pool_passwd`). The `rampart` binary is the one Cargo built for this bench (bench profile =
//! release).
//!
//! The tables are created once, `pgbench -i -s 16` on the primary, followed by a CHECKPOINT and
//! a wait until the replicas have replayed them. Each relay must then show that it sends reads to
//! the replicas (six sessions of five `SELECT inet_server_port()` each), and is loaded for 2 s
//! (not counted). Then, in each round, every workload runs directly against the primary, through
//! each rampart and through Pgpool-II in turn (interleaved, so that a slow spell of the machine
//! hits all of them rather than one):
//! * `select-only`: `pgbench -S -c 16 -j 2`;
//! * `mixed 90/10`: `pgbench -f rw-read.sql@9 -f rw-write.sql@1 -c 16 -j 2 -s 16` (`-s` sets
//!   the scripts' `:scale`), scripts written into the cluster directory: 90 % of the transactions
//!   read one account
//!   (`SELECT abalance FROM pgbench_accounts WHERE aid = :aid`), 10 % update one
//!   (`UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid`), each statement
//!   a transaction of its own.
//!
//! How to read the output:
//! * the first table is bench/proxy.rs's: per workload and target the median TPS (pgbench's
//!   `tps = ...` line, without the initial connection time) over the rounds with min and max, its
//!   ratio to the direct median, and the whole machine's busy CPU time per transaction (from
//!   `/proc/stat` and pgbench's transaction count; median), which shows what each hop costs in a
//!   way that a slow spell of a shared machine hardly moves;
//! * `reads served`: where the statements ran, summed over the rounds, from each member's own
//!   statistics ([`members`]: the `idx_scan` and `n_tup_upd` deltas of `pgbench_accounts` in
//!   `pg_stat_user_tables`; each statement of both workloads scans its primary key once). Per
//!   target the share of the reads each member served (primary, replica 1, replica 2), the writes
//!   (all on the primary), how many of pgbench's transactions those counts account for (about
//!   100 %; the bench waits 10.5 s after each run for idle server connections to hand in their
//!   counts, see [`members::FLUSH_WAIT`]), and the WAL the primary wrote per second of run;
//! * `classifier`: per rampart and workload, from its `/metrics` ([`split_metrics`]) around its
//!   runs: statements split, the share sent to replicas, the reads read-your-writes kept on the
//!   primary (`kept on primary`: no replica had replayed the session's last write yet), the
//!   classifier cache's hit rate, and the parse-and-classify time of the misses (the only time
//!   the proxy measures) per statement and per miss, in microseconds; then how often the rampart
//!   changed its read-only routes during those runs (counted in its log; expected 0: replica lag
//!   is measured against the leader position reported a loop earlier, so the WAL a write load
//!   produces meanwhile does not count as lag). The same figures since the rampart started follow
//!   (its warm-up included, where the cache fills);
//! * `classifier, in-process`: what classifying costs per statement, which `/metrics` cannot show
//!   when every statement hits the cache ([`classifier`]): measured before the cluster starts,
//!   through the library the proxy uses, in ns per statement on cache hits (the workload's texts
//!   with varying constants: masking and look-up, what every statement pays) and on misses
//!   (distinct texts: a full parse), per workload (and for pgbench's TPC-B-like script, not run
//!   live), beside each rampart's live hit rate;
//! * why two transaction-mode ramparts: with `read_your_writes: session` (`rampart-txn`) a
//!   session's reads go to a replica only once one has replayed a primary position read after its
//!   last write (positions are read every 20 ms), and each pgbench session of the mixed workload
//!   writes every tenth transaction, i.e. every few milliseconds: nearly all its reads are kept on
//!   the primary. Pgpool-II gives no such guarantee across transactions; `rampart-txn-ryw-none`
//!   neither, so the mixed workload compares like with like there (`rampart-session` keeps the
//!   default, as `rampart-txn`);
//! * each relay's CPU time during its runs as a share of one core and per transaction (Pgpool-II's
//!   summed over its processes) and its memory after the rounds (`Pss` summed over its processes);
//! * `SHOW POOL_NODES` through Pgpool-II (its own count of the SELECTs it sent each member);
//! * a verdict line per rampart (each of the three) and workload against issue 17's target: less
//!   machine CPU per transaction than Pgpool-II, judged round by round as bench/proxy.rs does
//!   (met when rampart's figure is below Pgpool-II's of the same round in every round).
//!
//! PostgreSQL is tuned as for bench/proxy.rs (`synchronous_commit = off`, `shared_buffers =
//! 512MB`, `max_wal_size = 2GB`); `max_connections = 200` is ample (16 clients directly, a pool
//! of at most 20 per member for each rampart, a connection per member for each of Pgpool-II's 32
//! processes: at most 108 on the primary, 92 on a replica, besides replication and the agents).
//! Every pgbench connects as the harness' superuser with `PGPASSWORD` and `sslmode=disable`.
//!
//! Environment: `RAMPART_BENCH_SECS` (seconds per run, default 6), `RAMPART_BENCH_ROUNDS`
//! (default 4); `RAMPART_BENCH_QUICK=1` makes them 5 s and 1 round. With the defaults a run takes
//! about 12 minutes (2 workloads x 5 targets x 4 rounds x (6 s + pgbench's vacuum + the 10.5 s
//! wait), plus the set-up), quick about 3. The harness variables apply
//! (`RAMPART_KEEP_TEST_DIRS=1` keeps pgbench's output files and the relays' logs, ...). On a small
//! machine pgbench, PostgreSQL and the relays share the cores, so the figures are noisy.
//!
//! Under `cargo test --benches` (no `--bench` argument) it prints a note and does nothing.

#[path = "rw_split/classifier.rs"]
mod classifier;
#[path = "common/mod.rs"]
mod common;
#[path = "rw_split/members.rs"]
mod members;
#[path = "proxy/pgbench.rs"]
#[allow(dead_code)]
mod pgbench;
#[path = "rw_split/pgpool.rs"]
mod pgpool;
#[path = "rw_split/relays.rs"]
mod relays;
#[path = "rw_split/report.rs"]
mod report;
#[path = "proxy/runs.rs"]
mod runs;
#[path = "rw_split/split_metrics.rs"]
mod split_metrics;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use common::FAST;
use members::Served;
use pgbench::{SCALE, WARM_UP_SECS};
use relays::{Kind, Relays, Target};
use split_metrics::Figures;

/// PostgreSQL's `max_connections`: 16 clients directly, a pool of 20 per member for each of the
/// three ramparts, a connection per member for each of Pgpool-II's processes, and room to spare.
const MAX_CONNECTIONS: &str = "200";
/// The mixed workload's scripts: `<file name>`, weight, text.
const MIXED_SCRIPTS: [(&str, u32, &str); 2] = [
    (
        "rw-read.sql",
        9,
        "\\set aid random(1, 100000 * :scale)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n",
    ),
    (
        "rw-write.sql",
        1,
        "\\set aid random(1, 100000 * :scale)\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n",
    ),
];

struct Plan {
    quick: bool,
    secs: u64,
    rounds: usize,
}

impl Plan {
    fn from_env() -> Plan {
        let quick = common::quick();
        let secs = common::env_number("RAMPART_BENCH_SECS", if quick { 5 } else { 6 });
        let rounds = common::env_number("RAMPART_BENCH_ROUNDS", if quick { 1 } else { 4 }) as usize;
        Plan { quick, secs, rounds }
    }
}

/// One workload: its name and its pgbench options besides connection, duration and database.
pub struct Workload {
    pub name: &'static str,
    pub args: Vec<String>,
}

/// The workloads, in the order they run within a round; the mixed one's scripts are written into
/// `dir`.
fn workloads(dir: &Path) -> Result<Vec<Workload>, String> {
    let strings = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let mut mixed = Vec::new();
    for (file, weight, text) in MIXED_SCRIPTS {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        mixed.extend(["-f".to_string(), format!("{}@{weight}", path.display())]);
    }
    // Custom scripts see `:scale` as -s says (1 without it); the built-in ones count branches.
    mixed.extend(strings(&["-c", "16", "-j", "2", "-s", &SCALE.to_string()]));
    Ok(vec![
        Workload { name: "select-only", args: strings(&["-S", "-c", "16", "-j", "2"]) },
        Workload { name: "mixed 90/10", args: mixed },
    ])
}

/// Everything measured: [`runs::Runs`], and per workload and target the statements each member
/// served (summed over the successful runs, `[w][t][member]`), the transactions of those runs,
/// and a rampart's splitter figures (summed).
pub struct Results {
    pub runs: runs::Runs,
    pub served: Vec<Vec<Vec<Served>>>,
    pub transactions: Vec<Vec<u64>>,
    pub split: Vec<Vec<Option<Figures>>>,
    /// The WAL the primary wrote during those runs, and how many runs that is.
    pub wal_bytes: Vec<Vec<u64>>,
    pub counted_runs: Vec<Vec<u64>>,
    /// How often a rampart changed its read-only routes during its runs.
    pub route_changes: Vec<Vec<u64>>,
    /// What could not be read (statistics, `/metrics`), once per run.
    pub notes: Vec<String>,
}

impl Results {
    fn new(workloads: usize, targets: usize, members: usize) -> Results {
        Results {
            runs: runs::Runs::new(workloads, targets),
            served: vec![vec![vec![Served::default(); members]; targets]; workloads],
            transactions: vec![vec![0; targets]; workloads],
            split: vec![vec![None; targets]; workloads],
            wal_bytes: vec![vec![0; targets]; workloads],
            counted_runs: vec![vec![0; targets]; workloads],
            route_changes: vec![vec![0; targets]; workloads],
            notes: Vec::new(),
        }
    }
}

/// What every run needs.
struct Bench<'a> {
    rt: &'a tokio::runtime::Runtime,
    dir: &'a Path,
    plan: &'a Plan,
    workloads: &'a [Workload],
    /// PostgreSQL ports, the primary first.
    members: &'a [u16],
}

impl Bench<'_> {
    /// Runs workload `w` against `target`, adding to `res`; prints the outcome.
    fn measure(&self, w: usize, t: usize, target: &Target, round: usize, res: &mut Results) {
        let workload = &self.workloads[w];
        let tag = format!("r{round}-w{w}-{}", target.name);
        let note = |res: &mut Results, what: String| {
            println!("[bench]     {what}");
            res.notes.push(format!("round {round}, {} through {}: {what}", workload.name, target.name));
        };
        let before = members::read(self.rt, self.members);
        let split_before = target.admin_port.map(split_metrics::scrape);
        let log_mark = target.log.as_deref().map(relays::log_len);
        let slot = runs::Slot { w, t, workload: workload.name, target: target.name, pid: target.pid, round, tag: &tag };
        let transactions = res
            .runs
            .measure(&slot, || pgbench::run_for(target.port, workload.args.clone(), self.plan.secs, self.dir, &tag));
        let split_after = target.admin_port.map(split_metrics::scrape);
        let route_changes =
            target.log.as_deref().zip(log_mark).map(|(log, mark)| relays::route_changes_since(log, mark));
        std::thread::sleep(members::FLUSH_WAIT);
        let after = members::read(self.rt, self.members);
        let Some(transactions) = transactions else { return };
        match (before, after) {
            (Ok(b), Ok(a)) => {
                let served = members::served(&b, &a);
                for (sum, s) in res.served[w][t].iter_mut().zip(&served) {
                    sum.add(*s);
                }
                res.transactions[w][t] += transactions;
                let wal = members::wal_bytes(&b, &a);
                res.wal_bytes[w][t] += wal;
                res.counted_runs[w][t] += 1;
                let shares: Vec<String> = served.iter().map(|s| s.reads.to_string()).collect();
                let writes: u64 = served.iter().map(|s| s.writes).sum();
                println!(
                    "[bench]     reads served (primary, replicas): {}; writes {writes}; WAL {:.1} MB",
                    shares.join(" / "),
                    wal as f64 / 1e6
                );
            }
            (Err(e), _) | (_, Err(e)) => note(res, format!("statistics not read: {e}")),
        }
        match (split_before, split_after) {
            (Some(Ok(b)), Some(Ok(a))) => {
                let d = a.since(&b);
                println!(
                    "[bench]     split: {:.0} to replicas, {:.0} to the primary ({:.0} reads kept there); cache {:.0} hits, \
                     {:.0} misses; {:.2} us parsing per statement",
                    d.to_replica,
                    d.to_primary,
                    d.kept_on_primary,
                    d.hits,
                    d.misses,
                    d.parse_secs * 1e6 / d.statements().max(1.0)
                );
                res.split[w][t].get_or_insert_with(Figures::default).add(&d);
                let changes = route_changes.unwrap_or(0);
                res.route_changes[w][t] += changes;
                if changes > 0 {
                    println!("[bench]     its read-only routes changed {changes} times (see its log)");
                }
            }
            (Some(Err(e)), _) | (_, Some(Err(e))) => note(res, format!("/metrics not read: {e}")),
            _ => {}
        }
    }
}

fn main() {
    if !common::bench_requested("rw_split") {
        return;
    }
    let plan = Plan::from_env();
    let started = Instant::now();
    common::print_preamble("read/write splitting", plan.quick);
    // Before the cluster starts, so that only the machine's other users disturb it.
    let classifier_costs = classifier::measure();
    match &classifier_costs {
        Ok(costs) => {
            let parts: Vec<String> = costs
                .iter()
                .map(|c| format!("{} {:.0} ns per hit, {:.0} ns per miss", c.workload, c.hit_ns, c.miss_ns))
                .collect();
            println!("[bench] classifier in-process: {}", parts.join("; "));
        }
        Err(e) => println!("[bench] classifier in-process: {e}"),
    }
    let pgpool_version = match pgpool::version() {
        Ok(v) => v,
        Err(e) => {
            println!("[bench] {e}; stopping");
            return;
        }
    };
    let rt = common::runtime();
    let Some((c, healthy)) = common::healthy_cluster(&rt, FAST, &pgbench::pg_parameters(MAX_CONNECTIONS)) else {
        return;
    };
    let leader = healthy.leader;
    let primary_port = c.pg_port(leader);
    // The primary first, then the replicas in node order.
    let members: Vec<u16> =
        std::iter::once(primary_port).chain((0..c.len()).filter(|&i| i != leader).map(|i| c.pg_port(i))).collect();
    println!(
        "[bench] cluster {} healthy; primary {} on port {primary_port}, replicas on {:?}",
        FAST.label(),
        c.name(leader),
        &members[1..]
    );
    common::print_settings(
        &rt,
        primary_port,
        &["max_connections", "shared_buffers", "synchronous_commit", "max_wal_size"],
    );
    let workloads = match workloads(c.dir()) {
        Ok(w) => w,
        Err(e) => {
            println!("[bench] {e}; stopping");
            return;
        }
    };
    if !pgbench::prepare(&rt, primary_port, SCALE, c.dir()) {
        return;
    }
    // Declared after the cluster: stopped (by PID) before it.
    let relays = match Relays::start(&c, &members) {
        Ok(r) => r,
        Err(e) => {
            println!("[bench] starting the relays: {e}; stopping");
            return;
        }
    };
    let targets = relays.targets(primary_port);
    println!(
        "[bench] {} CPUs; {} round(s) of {} workloads x ({}), {} s each; pgbench {}; {pgpool_version}",
        common::cpus(),
        plan.rounds,
        workloads.len(),
        targets.iter().map(|t| t.name).collect::<Vec<_>>().join(", "),
        plan.secs,
        pgbench::bin().display()
    );
    for t in targets.iter().filter(|t| t.kind != Kind::Direct) {
        match relays::wait_reads_on_replicas(&rt, t.port, primary_port, Duration::from_secs(60)) {
            Ok(took) => println!(
                "[bench] {} on port {}: reads reach the replicas (after {:.1} s)",
                t.name,
                t.port,
                took.as_secs_f64()
            ),
            Err(e) => {
                println!("[bench] {} on port {}: {e}; stopping", t.name, t.port);
                return;
            }
        }
    }
    for t in &targets {
        pgbench::warm_up(t.name, t.port, WARM_UP_SECS, c.dir());
    }
    for t in targets.iter().filter(|t| t.kind != Kind::Direct) {
        match relays::where_reads_land(&rt, t.port) {
            Ok(seen) => {
                let spread: Vec<String> = seen.iter().map(|(p, n)| format!(":{p} x{n}")).collect();
                println!(
                    "[bench] {}: {} reads in {} sessions landed on {}",
                    t.name,
                    relays::PROBE_SESSIONS * relays::PROBE_READS,
                    relays::PROBE_SESSIONS,
                    spread.join(", ")
                );
            }
            Err(e) => println!("[bench] {}: reads not probed: {e}", t.name),
        }
    }
    // The relays' server connections hand in their statistics within 10 s of going idle.
    std::thread::sleep(members::FLUSH_WAIT);

    let bench = Bench { rt: &rt, dir: c.dir(), plan: &plan, workloads: &workloads, members: &members };
    let mut res = Results::new(workloads.len(), targets.len(), members.len());
    'rounds: for round in 1..=plan.rounds {
        println!("\n[bench] ===== round {round}/{} =====", plan.rounds);
        for w in 0..workloads.len() {
            for (t, target) in targets.iter().enumerate() {
                let failures = res.runs.failures;
                bench.measure(w, t, target, round, &mut res);
                // A failed run may mean the primary itself is gone; then every further run would
                // fail too.
                if res.runs.failures > failures && members::read(&rt, &members[..1]).is_err() {
                    println!("[bench] the primary does not answer; remaining runs skipped");
                    break 'rounds;
                }
            }
        }
    }
    let costs = report::relay_costs(&res, &targets);
    let pool_nodes = pgpool::pool_nodes(&rt, relays.pgpool.port);
    let lifetime: Vec<(&str, Result<Figures, String>)> =
        targets.iter().filter_map(|t| Some((t.name, split_metrics::scrape(t.admin_port?)))).collect();

    println!("\n[bench] ===== results ({:.0} s in all) =====", started.elapsed().as_secs_f64());
    common::warn_if_leader_moved(&c, leader, "the primary may have moved during the runs");
    res.runs.print_summary(plan.rounds, plan.secs);
    let names = report::Names::new(&workloads, &targets);
    res.runs.print_table(&names.workloads, &names.targets);
    res.runs.print_failures(&names.workloads, &names.targets);
    report::print_spread(&res, &names, &members, plan.secs);
    report::print_classifier(&res, &names, &targets, &lifetime);
    report::print_classifier_cost(&classifier_costs, &res, &names, &targets);
    println!();
    for line in &costs {
        println!("{line}");
    }
    report::print_pool_nodes(pool_nodes, primary_port);
    for n in &res.notes {
        println!("[bench] note: {n}");
    }
    report::print_verdicts(&res, &names, &targets);
    drop(relays);
}
