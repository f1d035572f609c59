//! The second part of bench/proxy_failover.rs: pgbench through a transaction-mode `rampart proxy`
//! (`pool_mode: transaction`, [`POOL_SIZE`] server connections) while the leader is switched over
//! or crashes.
//!
//! Per run: `pgbench -n -M prepared -c 16 -j 2 -T <secs> --max-tries=1` with the TPC-B script
//! (tables from `pgbench -i -s 1`, made once on the leader directly; for the crash, the same
//! transaction followed by a [`THINK_MS`] pause outside it, [`THINK_SCRIPT`], so that at any moment
//! some clients are between transactions, as an application's are) and per-transaction logs
//! (`-l --log-prefix <cluster dir>/pgbench-log-<run>`); [`FAULT_AFTER`] after its first
//! transactions are logged, the fault:
//! * **switchover**: `POST /switchover` to the leader's REST API naming the next node;
//! * **crash**: the leader's agent and postmaster SIGKILLed together ([`common::crash`]); once the
//!   DCS names another leader, the old node's agent is restarted and rejoins, pgbench still running.
//!
//! What pgbench said: transactions processed, failed transactions (its summary), aborted clients
//! (its `client N aborted` lines), and from its logs the longest transaction (the latency column,
//! in µs: for a transaction that waited for the new primary, the wait is in it) and how many
//! transactions finished after the fault. Targets: a switchover fails no transaction and aborts no
//! client; a crash aborts only clients that had a transaction in flight on the old primary (at
//! most all [`CLIENTS`]), the others carry on on the new one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::runtime::Runtime;

use crate::common::{self, Row, Unit, FAST};
use crate::pgbench;
use crate::support;
use crate::support::cluster::Cluster;
use crate::support::proxy::Proxy;

/// pgbench clients (`-c`); `-j 2`.
pub const CLIENTS: usize = 16;
/// `default_pool_size` of the transaction-mode proxy: more than [`CLIENTS`], so no client waits
/// for a server connection in the steady state.
pub const POOL_SIZE: usize = 20;
/// From pgbench's first logged transactions to the fault.
pub const FAULT_AFTER: Duration = Duration::from_secs(4);
/// `pgbench -i -s` for the TPC-B tables.
const SCALE: u32 = 1;
/// The pause after each transaction of the crash runs, in milliseconds.
const THINK_MS: u32 = 20;
/// pgbench's TPC-B-like transaction (its built-in `tpcb-like` script), then [`THINK_MS`] outside
/// the transaction block. pgbench counts the pause in the transaction's latency.
const THINK_SCRIPT: &str = "\\set aid random(1, 100000 * :scale)
\\set bid random(1, 1 * :scale)
\\set tid random(1, 10 * :scale)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
\\sleep THINK ms
";

/// Read timeout of the switchover call.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LoadFault {
    Switchover,
    Crash,
}

impl LoadFault {
    pub fn label(self) -> &'static str {
        match self {
            LoadFault::Switchover => "switchover",
            LoadFault::Crash => "crash failover",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            LoadFault::Switchover => "switchover",
            LoadFault::Crash => "crash",
        }
    }

    /// pgbench's `-T`: the fault, the new primary and (crash) the old node's rejoin fit in it.
    fn secs(self) -> u64 {
        match self {
            LoadFault::Switchover => 30,
            LoadFault::Crash => 45,
        }
    }

    /// The most clients that may abort.
    fn max_aborted(self) -> usize {
        match self {
            LoadFault::Switchover => 0,
            LoadFault::Crash => CLIENTS,
        }
    }
}

/// One pgbench run across one fault.
pub struct LoadSample {
    fault: LoadFault,
    processed: Option<u64>,
    failed: Option<u64>,
    /// Distinct clients with a `client N aborted` line.
    aborted: usize,
    /// The longest latency in the per-transaction logs.
    longest: Option<Duration>,
    /// Transactions logged as finished after the fault.
    after_fault: usize,
}

impl LoadSample {
    /// Whether the run meets its fault's target (see the module documentation).
    fn met(&self) -> bool {
        // With the pause between transactions some clients are always between two: they carry on.
        let carried_on = self.after_fault > 0;
        let failed_ok = self.fault == LoadFault::Crash || self.failed == Some(0);
        self.processed.is_some() && failed_ok && self.aborted <= self.fault.max_aborted() && carried_on
    }
}

/// Starts the transaction-mode proxy: pool size [`POOL_SIZE`], the superuser's password in an
/// `auth_file` (PgBouncer's userlist format) and the superuser as `auth_user`, `hold_timeout` as
/// the first part's proxy.
pub fn start_pool_proxy(c: &Cluster, hold_timeout: Duration) -> Proxy {
    let auth_file = c.dir().join("userlist.txt");
    std::fs::write(&auth_file, format!("\"{}\" \"{}\"\n", support::SUPERUSER, support::SUPERUSER_PASSWORD))
        .unwrap_or_else(|e| panic!("writing {}: {e}", auth_file.display()));
    Proxy::start(
        c,
        &format!(
            "  hold_timeout: {}\n  pool_mode: transaction\n  default_pool_size: {POOL_SIZE}\n  auth_file: {}\n  \
             auth_user: {}\n",
            hold_timeout.as_secs(),
            auth_file.display(),
            support::SUPERUSER
        ),
    )
}

/// `pgbench -i -s 1` on the leader `leader` directly.
pub fn init(c: &Cluster, leader: usize) -> Result<Duration, String> {
    pgbench::init(c.pg_port(leader), SCALE, c.dir())
}

/// What the per-transaction logs of one run say.
#[derive(Default)]
struct Logged {
    transactions: usize,
    /// `failed` in the latency column.
    failed: usize,
    /// The longest latency and when (Unix µs) that transaction finished.
    longest: Option<(Duration, u64)>,
    after_fault: usize,
}

/// The log files pgbench wrote for `-l --log-prefix <prefix>`: `<prefix>.<pid>` and, for the
/// second thread, `<prefix>.<pid>.1`.
fn log_files(prefix: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (prefix.parent(), prefix.file_name()) else { return Vec::new() };
    let start = format!("{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&start))
        .map(|e| e.path())
        .collect()
}

fn logged_bytes(prefix: &Path) -> u64 {
    log_files(prefix).iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
}

/// Reads pgbench's per-transaction lines (`client_id transaction_no time script_no time_epoch
/// time_us`, `time` being the latency in µs or `failed`); `fault_us` is the fault's Unix time in µs.
fn read_logs(prefix: &Path, fault_us: u64) -> Logged {
    let mut logged = Logged::default();
    for path in log_files(prefix) {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(latency), Some(epoch), Some(us)) = (fields.get(2), fields.get(4), fields.get(5)) else {
                continue;
            };
            let (Ok(epoch), Ok(us)) = (epoch.parse::<u64>(), us.parse::<u64>()) else { continue };
            let finished = epoch * 1_000_000 + us;
            let Ok(latency) = latency.parse::<u64>() else {
                logged.failed += 1;
                continue;
            };
            logged.transactions += 1;
            if finished > fault_us {
                logged.after_fault += 1;
            }
            let latency = Duration::from_micros(latency);
            if logged.longest.is_none_or(|(l, _)| latency > l) {
                logged.longest = Some((latency, finished));
            }
        }
    }
    logged
}

/// The distinct clients pgbench reported as aborted, and its abort messages (client number
/// dropped, the first 110 characters) with their counts.
fn aborted_clients(stderr: &str) -> (usize, BTreeMap<String, usize>) {
    let mut clients = BTreeSet::new();
    let mut messages = BTreeMap::new();
    for line in stderr.lines() {
        let Some(at) = line.find("client ") else { continue };
        let rest = &line[at + "client ".len()..];
        let Some((id, what)) = rest.split_once(' ') else { continue };
        // `client 3 aborted in command 4 (SQL) of script 0; ...`, `client 3 script 0 aborted in ...`
        let aborted = what.starts_with("aborted") || (what.starts_with("script ") && what.contains(" aborted "));
        if !aborted {
            continue;
        }
        if let Ok(id) = id.parse::<u32>() {
            clients.insert(id);
        }
        *messages.entry(what.chars().take(110).collect()).or_insert(0) += 1;
    }
    (clients.len(), messages)
}

fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// One pgbench run through the proxy on `port` across `fault` on the leader `old`; then waits for
/// the cluster to be healthy again. Returns the sample (if pgbench ran) and the leader (`None`
/// when the cluster did not recover).
pub fn run_fault(
    rt: &Runtime,
    c: &mut Cluster,
    port: u16,
    old: usize,
    fault: LoadFault,
    run: &str,
    k: usize,
) -> (Option<LoadSample>, Option<usize>) {
    let old_name = c.name(old).to_owned();
    let tag = format!("{}-{k}", fault.tag());
    let dir = c.dir().to_path_buf();
    let prefix = dir.join(format!("pgbench-log-{tag}"));
    let mut args: Vec<String> =
        ["-n", "-M", "prepared", "-j", "2", "--max-tries=1", "-l"].iter().map(|a| a.to_string()).collect();
    if fault == LoadFault::Crash {
        let script = dir.join("tpcb-think.sql");
        let text = THINK_SCRIPT.replace("THINK", &THINK_MS.to_string());
        if let Err(e) = std::fs::write(&script, text) {
            println!("[bench] {run}: writing {}: {e}", script.display());
            return (None, Some(old));
        }
        args.extend(["-f".into(), script.display().to_string()]);
    }
    args.extend([
        "-c".into(),
        CLIENTS.to_string(),
        "-T".into(),
        fault.secs().to_string(),
        "--log-prefix".into(),
        prefix.display().to_string(),
        "postgres".into(),
    ]);
    let limit = Duration::from_secs(fault.secs() + 90);
    let load = {
        let (dir, tag) = (dir.clone(), tag.clone());
        std::thread::spawn(move || pgbench::run_args(port, &args, &dir, &tag, limit))
    };
    if !support::wait_until(Duration::from_secs(30), Duration::from_millis(100), || logged_bytes(&prefix) > 0) {
        println!("[bench] {run}: pgbench logged no transaction within 30 s; injecting the fault anyway");
    }
    std::thread::sleep(FAULT_AFTER);

    let fault_at = SystemTime::now();
    let t0 = Instant::now();
    let mut notes = String::new();
    let call = match fault {
        LoadFault::Switchover => {
            let body = format!(r#"{{"leader": "{old_name}", "candidate": "{}"}}"#, c.name((old + 1) % c.len()));
            let api_port = c.api_port(old);
            Some(std::thread::spawn(move || {
                support::client::http_request_with_timeout(api_port, "POST", "/switchover", Some(&body), ANSWER_TIMEOUT)
            }))
        }
        LoadFault::Crash => {
            common::crash(c, old);
            let limit = Duration::from_secs(FAST.ttl + 60);
            let moved =
                support::wait_until(limit, common::POLL, || common::dcs_leader_index(c).is_some_and(|l| l != old));
            notes = if moved {
                format!("; new leader in the DCS after {:.2} s", t0.elapsed().as_secs_f64())
            } else {
                format!("; no new leader in the DCS within {limit:?}")
            };
            c.start_agent(old);
            None
        }
    };
    if let Some(h) = call {
        notes = match h.join() {
            Ok(Ok(r)) => format!("; POST /switchover: {} {:?}", r.status, r.body.trim()),
            Ok(Err(e)) => format!("; POST /switchover: no answer ({e})"),
            Err(_) => "; POST /switchover: the call's thread panicked".into(),
        };
    }
    let out = load.join().unwrap_or_else(|_| Err("the pgbench thread panicked".into()));
    let sample = match out {
        Err(e) => {
            println!("[bench] {run}: pgbench: {e}{notes}");
            None
        }
        Ok(out) => {
            let logged = read_logs(&prefix, unix_us(fault_at));
            let (aborted, messages) = aborted_clients(&out.stderr);
            let s = LoadSample {
                fault,
                processed: pgbench::report_count(&out.stdout, "number of transactions actually processed"),
                failed: pgbench::report_count(&out.stdout, "number of failed transactions"),
                aborted,
                longest: logged.longest.map(|(l, _)| l),
                after_fault: logged.after_fault,
            };
            let count = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
            let longest = match logged.longest {
                Some((l, finished)) => {
                    let since_fault = (finished as f64 - unix_us(fault_at) as f64) / 1e6;
                    format!("{:.2} s (finished {since_fault:+.2} s from the fault)", l.as_secs_f64())
                }
                None => "-".into(),
            };
            println!(
                "[bench] {run}: from {old_name}: {} transactions processed, {} failed, {aborted} of {CLIENTS} \
                 clients aborted; longest transaction {longest}; {} finished after the fault ({}){notes}",
                count(s.processed),
                count(s.failed),
                s.after_fault,
                out.status,
            );
            if !messages.is_empty() {
                println!("[bench]   pgbench's abort messages:");
                common::print_errors(&messages);
            }
            Some(s)
        }
    };
    (sample, crate::healthy_again(rt, c))
}

/// The table of the second part: min / median / max over the runs of each fault.
pub fn rows(samples: &[LoadSample], planned: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    for fault in [LoadFault::Switchover, LoadFault::Crash] {
        let s: Vec<&LoadSample> = samples.iter().filter(|x| x.fault == fault).collect();
        let name = format!("{} ({}) pgbench via pool", fault.label(), FAST.label());
        let missing = planned - s.len();
        let counts = |f: fn(&LoadSample) -> Option<f64>| {
            let values: Vec<f64> = s.iter().filter_map(|&x| f(x)).collect();
            let missing = missing + s.len() - values.len();
            (values, missing)
        };
        let row = |what: &str,
                   (values, missing): (Vec<f64>, usize),
                   unit: Unit,
                   target: Option<(f64, bool, String)>| {
            Row { what: format!("{name}: {what}"), values, missing, unit, target }
        };
        let most = fault.max_aborted();
        rows.push(row("transactions processed", counts(|x| x.processed.map(|n| n as f64)), Unit::Count, None));
        let failed_target = (fault == LoadFault::Switchover).then(|| (0.0, true, "0".to_string()));
        rows.push(row("failed transactions", counts(|x| x.failed.map(|n| n as f64)), Unit::Count, failed_target));
        let aborted_target = Some((most as f64, true, if most == 0 { "0".into() } else { format!("<= {most}") }));
        rows.push(row("clients aborted", counts(|x| Some(x.aborted as f64)), Unit::Count, aborted_target));
        rows.push(row("longest transaction", counts(|x| x.longest.map(|d| d.as_secs_f64())), Unit::Secs, None));
        rows.push(row("transactions after the fault", counts(|x| Some(x.after_fault as f64)), Unit::Count, None));
    }
    rows
}

/// The verdict lines, one per fault.
pub fn print_verdicts(samples: &[LoadSample], planned: usize) {
    for fault in [LoadFault::Switchover, LoadFault::Crash] {
        let s: Vec<&LoadSample> = samples.iter().filter(|x| x.fault == fault).collect();
        let ok = s.len() == planned && s.iter().all(|x| x.met());
        let worst_aborted = s.iter().map(|x| x.aborted).max().unwrap_or(0);
        let worst_failed = s.iter().filter_map(|x| x.failed).max().unwrap_or(0);
        let target = match fault {
            LoadFault::Switchover => "0 failed transactions, 0 aborted clients".to_string(),
            LoadFault::Crash => format!(
                "only clients with a transaction in flight abort (<= {CLIENTS}), the others carry on on the new primary"
            ),
        };
        println!(
            "[bench] verdict, {} under pgbench via the transaction pool: {}/{planned} runs, at most {worst_failed} \
             failed, {worst_aborted} aborted; target: {target}: {}",
            fault.label(),
            s.len(),
            if ok { "OK" } else { "MISSED" }
        );
    }
}
