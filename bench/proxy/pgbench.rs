//! `pgbench`, the load generator of bench/proxy.rs and bench/rw_split.rs: the former's workloads,
//! one run against one port, and the TPS it reports.
//!
//! pgbench is PostgreSQL's own (`<RAMPART_PG_BIN_DIR>/pgbench`, the harness' binary directory). It
//! runs as a child process whose output goes to files in the cluster directory, so that no pipe
//! can fill up and block it; it is always waited for, and killed by its PID if it overruns.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support;

/// `pgbench -i -s`: 1.6 million accounts, about 250 MB. At least the 16 clients, as pgbench's
/// documentation asks: with fewer branches than clients the TPC-B-like runs mostly measure
/// contention for the branch rows, where every extra microsecond a proxy adds to a statement
/// lengthens the time a row lock is held.
pub const SCALE: u32 = 16;
/// Not counted: each target is loaded this long first ([`warm_up`]), which also shows pgbench
/// works through it.
pub const WARM_UP_SECS: u64 = 2;

/// The PostgreSQL parameters of the pgbench benches, `max_connections` given: tuned so that
/// writing runs are bound by CPU and the wire rather than by fsync, which would hide what a relay
/// costs (`synchronous_commit = off`), the scale-16 database fits in `shared_buffers`, and no
/// checkpoint is forced by WAL volume during a run.
pub fn pg_parameters(max_connections: &'static str) -> [(&'static str, &'static str); 4] {
    [
        ("synchronous_commit", "'off'"),
        ("shared_buffers", "'512MB'"),
        ("max_wal_size", "'2GB'"),
        ("max_connections", max_connections),
    ]
}

/// One pgbench workload, run the same way against every target.
pub struct Workload {
    pub name: &'static str,
    /// pgbench options besides connection, duration and database.
    pub args: &'static [&'static str],
    /// Whether rampart in session mode is expected to keep at least
    /// [`crate::DIRECT_RATIO_TARGET`] of the direct TPS: true for workloads whose connections
    /// live for the whole run, where a session-mode proxy only relays bytes. With `-C` every
    /// transaction pays for a new connection, which costs a proxy a second TCP connection and a
    /// DCS-informed routing decision on top of PostgreSQL's own fork and authentication, so only
    /// the comparisons with HAProxy and PgBouncer apply there.
    pub ratio_target: bool,
    /// Whether each rampart is expected to keep at least the ratio to direct that PgBouncer in the
    /// same pool mode keeps: the workloads where pooling is the point (connection churn, more
    /// clients than server connections), as issue 16 asks.
    pub pooler_ratio_target: bool,
    /// Seconds added to the run for the clients to log in: pgbench's `-T` counts from before
    /// its clients connect, and 200 logins (each a backend fork, and SCRAM) can take seconds on
    /// a busy small machine; its TPS leaves that time out.
    pub login_secs: u64,
}

/// The workloads, in the order they run within a round. All of them go to the primary.
pub const WORKLOADS: [Workload; 5] = [
    Workload {
        name: "select-only",
        args: &["-S", "-c", "16", "-j", "2"],
        ratio_target: true,
        pooler_ratio_target: false,
        login_secs: 0,
    },
    Workload {
        name: "select-only -M prepared",
        args: &["-S", "-M", "prepared", "-c", "16", "-j", "2"],
        ratio_target: true,
        pooler_ratio_target: false,
        login_secs: 0,
    },
    Workload {
        name: "TPC-B-like",
        args: &["-c", "16", "-j", "2"],
        ratio_target: true,
        pooler_ratio_target: false,
        login_secs: 0,
    },
    Workload {
        name: "churn (-S -C) c8",
        args: &["-S", "-C", "-c", "8", "-j", "2"],
        ratio_target: false,
        pooler_ratio_target: true,
        login_secs: 0,
    },
    Workload {
        name: "select-only c200",
        args: &["-S", "-c", "200", "-j", "2"],
        ratio_target: true,
        pooler_ratio_target: true,
        login_secs: 6,
    },
];

pub fn bin() -> PathBuf {
    support::pg_bin_dir().join("pgbench")
}

/// A pgbench command reaching `127.0.0.1:port` as the harness' superuser on database `postgres`.
/// The password goes through `PGPASSWORD`, never onto a command line or into the bench's output.
/// `sslmode` and `gssencmode` are off so that every target sees the same startup exchange:
/// libpq's default `prefer` would add an SSLRequest round trip to each connection.
pub fn command(port: u16) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", support::SUPERUSER])
        .env("PGPASSWORD", support::SUPERUSER_PASSWORD)
        .env("PGSSLMODE", "disable")
        .env("PGGSSENCMODE", "disable")
        .env_remove("PGSERVICE")
        .stdin(Stdio::null());
    cmd
}

/// What a finished pgbench printed.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with its output in `<dir>/pgbench-<tag>.{out,err}`, waiting at most `limit`; on
/// overrun it is killed by its PID and reaped.
fn run_logged(mut cmd: Command, dir: &Path, tag: &str, limit: Duration) -> Result<Output, String> {
    let out_path = dir.join(format!("pgbench-{tag}.out"));
    let err_path = dir.join(format!("pgbench-{tag}.err"));
    let open = |p: &Path| std::fs::File::create(p).map_err(|e| format!("creating {}: {e}", p.display()));
    cmd.stdout(open(&out_path)?).stderr(open(&err_path)?);
    let mut child = cmd.spawn().map_err(|e| format!("starting {}: {e}", bin().display()))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {limit:?} (killed); see {}", err_path.display()));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("waiting for pgbench: {e}"));
            }
        }
    };
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Ok(Output { status, stdout: read(&out_path), stderr: read(&err_path) })
}

/// The last `n` lines of `text`, `; `-joined, for one-line error reports.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("; ")
}

/// `pgbench -i -s <scale>` against the server on `port`; returns how long it took.
pub fn init(port: u16, scale: u32, dir: &Path) -> Result<Duration, String> {
    let mut cmd = command(port);
    cmd.args(["-i", "-s", &scale.to_string(), "postgres"]);
    let t0 = Instant::now();
    let out = run_logged(cmd, dir, "init", Duration::from_secs(600))?;
    if !out.status.success() {
        return Err(format!("pgbench -i: {}: {}", out.status, last_lines(&out.stderr, 3)));
    }
    Ok(t0.elapsed())
}

/// `pgbench -i -s <scale>` on the primary on `primary_port`, then [`crate::common::settle`]; prints
/// how long each took. False (said) when the tables could not be made.
pub fn prepare(rt: &tokio::runtime::Runtime, primary_port: u16, scale: u32, dir: &Path) -> bool {
    match init(primary_port, scale, dir) {
        Ok(d) => println!("[bench] pgbench -i -s {scale} on the primary: {:.1} s", d.as_secs_f64()),
        Err(e) => {
            println!("[bench] {e}; stopping");
            return false;
        }
    }
    match crate::common::settle(rt, primary_port, Duration::from_secs(120)) {
        Ok(d) => println!("[bench] CHECKPOINT, replicas caught up: {:.1} s", d.as_secs_f64()),
        Err(e) => println!("[bench] settling: {e} (measuring anyway)"),
    }
    true
}

/// Loads target `name` on `port` for `secs` seconds (`-S -c 4 -j 2`, not counted), which also
/// shows that pgbench works through it; prints its TPS or its failure.
pub fn warm_up(name: &str, port: u16, secs: u64, dir: &Path) {
    let args = ["-S", "-c", "4", "-j", "2"].map(String::from).to_vec();
    match run_for(port, args, secs, dir, &format!("warm-{name}")) {
        Ok(o) => println!("[bench] warm-up {secs} s through {name}: {:.0} tps (not counted)", o.tps),
        Err(e) => println!("[bench] warm-up through {name} FAILED: {e}"),
    }
}

/// pgbench with `args` (options and database) against `port`, its output in
/// `<dir>/pgbench-<tag>.{out,err}`, killed by its PID after `limit`: what it printed, whatever its
/// exit status (2 when a client aborted).
pub fn run_args(port: u16, args: &[String], dir: &Path, tag: &str, limit: Duration) -> Result<Output, String> {
    let mut cmd = command(port);
    cmd.args(args);
    run_logged(cmd, dir, tag, limit)
}

/// What one timed run reported.
pub struct Outcome {
    pub tps: f64,
    /// pgbench's note on the figure, e.g. `without initial connection time`.
    pub note: String,
    /// `number of transactions actually processed`, when printed.
    pub transactions: Option<u64>,
    /// `number of failed transactions`, when printed (PostgreSQL 15 does).
    pub failed: Option<u64>,
}

/// Runs `workload` for `secs` seconds against `port`. A run pgbench ends with an error (a client
/// aborted, say) is an error here, with what pgbench said about it.
pub fn run(port: u16, workload: &Workload, secs: u64, dir: &Path, tag: &str) -> Result<Outcome, String> {
    let args: Vec<String> = workload.args.iter().map(|a| a.to_string()).collect();
    run_for(port, args, secs + workload.login_secs, dir, tag)
}

/// pgbench with the options `args` for `secs` seconds (`-T`) on database `postgres` through
/// `port`, as [`run`] runs a [`Workload`].
pub fn run_for(port: u16, mut args: Vec<String>, secs: u64, dir: &Path, tag: &str) -> Result<Outcome, String> {
    args.extend(["-T".into(), secs.to_string(), "postgres".into()]);
    // pgbench first vacuums and truncates its history table, then runs for `secs`: a minute more
    // is plenty unless something hangs.
    let out = run_args(port, &args, dir, tag, Duration::from_secs(secs + 60))?;
    if !out.status.success() {
        return Err(format!("{}: {}", out.status, failure(&out.stderr)));
    }
    parse_tps(&out.stdout)
        .ok_or_else(|| format!("no `tps = ` line in pgbench's output: {}", last_lines(&out.stdout, 3)))
}

/// What pgbench's `stderr` says went wrong: its first error line (`pgbench: error: client 3
/// script 0 aborted in command 4 query 0: ERROR: ...`), how many there were, and its last line.
fn failure(stderr: &str) -> String {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error:") || l.contains("ERROR:")).collect();
    let last = last_lines(stderr, 1);
    match errors.first() {
        Some(first) if *first != last => format!("{} (1 of {} error lines); {last}", first.trim(), errors.len()),
        _ => last,
    }
}

/// Reads `tps = 1234.567890 (without initial connection time)` (PostgreSQL 15; with `-C` the note
/// says `including reconnection times`), `number of transactions actually processed: 12345` and
/// `number of failed transactions: 0 (0.000%)`.
pub fn parse_tps(stdout: &str) -> Option<Outcome> {
    let line = stdout.lines().find_map(|l| l.trim().strip_prefix("tps = "))?;
    let (number, rest) = line.split_once(' ').unwrap_or((line, ""));
    let note = rest.trim().trim_start_matches('(').trim_end_matches(')').to_owned();
    Some(Outcome {
        tps: number.parse().ok()?,
        note,
        transactions: report_count(stdout, "number of transactions actually processed"),
        failed: report_count(stdout, "number of failed transactions"),
    })
}

/// The count after `<label>: ` in pgbench's report, e.g. `number of failed transactions: 0
/// (0.000%)`. With -t the processed count reads `N/M`; -T prints N alone.
pub fn report_count(stdout: &str, label: &str) -> Option<u64> {
    stdout.lines().find_map(|l| {
        let count = l.trim().strip_prefix(label)?.strip_prefix(':')?;
        count.split_whitespace().next()?.split('/').next()?.parse().ok()
    })
}
