//! What rampart's statement classifier costs per statement, measured in this process (no
//! cluster): the proxy's `/metrics` time only the cache misses, so a workload whose statements
//! all hit the cache shows no cost there, although every statement pays for masking its
//! constants and looking the key up.
//!
//! Through the library the proxy uses ([`rampart_proxy::split::state::Splitting::class_of`],
//! with the default `load_balance` settings), on one thread, the texts pgbench sends with the
//! simple protocol (its variables substituted), generated beforehand so that formatting is not
//! timed:
//! * `hit`: the workload's statements with varying constants, after each shape was classified
//!   once: the constants masked, the key looked up, the cached facts returned;
//! * `miss`: the same statements made distinct where the key cannot mask them (a table name with
//!   a number appended; `BEGIN` and `END` behind a numbered comment), on a fresh cache: each a
//!   full parse by PostgreSQL's grammar (`pg_query`) and its classification, and an insertion.
//!
//! The workloads: pgbench's select-only, the bench's mixed 90/10, and pgbench's TPC-B-like script
//! (not run live here; its seven statements are what a transaction-mode application typically
//! sends).

use std::hint::black_box;
use std::time::{Duration, Instant};

use rampart_config::proxy_split::LoadBalance;
use rampart_proxy::split::classify::{Class, Why};
use rampart_proxy::split::state::Splitting;

/// Statements timed per workload on cache hits, and on misses.
const HIT_STATEMENTS: usize = 300_000;
const MISS_STATEMENTS: usize = 3_000;

/// The default `load_balance` settings (as with `load_balance: on` alone).
fn settings() -> LoadBalance {
    LoadBalance {
        on_write: Default::default(),
        read_your_writes: Default::default(),
        read_your_writes_timeout: Duration::ZERO,
        position_interval: rampart_config::proxy_split::DEFAULT_POSITION_INTERVAL,
        max_lag_time: None,
        write_functions: vec![],
        read_only_functions: vec![],
    }
}

/// A small deterministic generator of pgbench's random values.
struct Draw(u64);

impl Draw {
    fn next(&mut self, lo: i64, hi: i64) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + (self.0 % (hi - lo + 1) as u64) as i64
    }
}

/// One workload's statements: `n` statements in the order pgbench sends them, each table name
/// followed by `suffix(i)` (empty for hits) and `BEGIN`/`END` behind `prefix(i)`.
fn statements(workload: &str, n: usize, distinct: bool) -> Vec<(String, Class)> {
    let scale = i64::from(crate::pgbench::SCALE);
    let mut d = Draw(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while out.len() < n {
        i += 1;
        let (sfx, pfx) =
            if distinct { (format!("_{i}"), format!("/* {i} */ ")) } else { (String::new(), String::new()) };
        let aid = d.next(1, 100_000 * scale);
        let read = (format!("SELECT abalance FROM pgbench_accounts{sfx} WHERE aid = {aid};"), Class::Read);
        match workload {
            "select-only" => out.push(read),
            "mixed 90/10" => {
                if d.next(1, 10) <= 9 {
                    out.push(read)
                } else {
                    let text = format!("UPDATE pgbench_accounts{sfx} SET abalance = abalance + 1 WHERE aid = {aid};");
                    out.push((text, Class::Write(Why::Modifies)))
                }
            }
            _ => {
                let (bid, tid, delta) = (d.next(1, scale), d.next(1, 10 * scale), d.next(-5000, 5000));
                let write = Class::Write(Why::Modifies);
                out.extend([
                    (format!("{pfx}BEGIN;"), Class::Begin(Default::default())),
                    (format!("UPDATE pgbench_accounts{sfx} SET abalance = abalance + {delta} WHERE aid = {aid};"), write),
                    read,
                    (format!("UPDATE pgbench_tellers{sfx} SET tbalance = tbalance + {delta} WHERE tid = {tid};"), write),
                    (format!("UPDATE pgbench_branches{sfx} SET bbalance = bbalance + {delta} WHERE bid = {bid};"), write),
                    (
                        format!(
                            "INSERT INTO pgbench_history{sfx} (tid, bid, aid, delta, mtime) VALUES ({tid}, {bid}, {aid}, \
                             {delta}, CURRENT_TIMESTAMP);"
                        ),
                        write,
                    ),
                    (format!("{pfx}END;"), Class::End),
                ]);
            }
        }
    }
    out.truncate(n);
    out
}

/// One workload's cost: nanoseconds per statement on hits and on misses, and what went wrong
/// (a class other than expected, a hit that missed or a miss that hit).
pub struct Cost {
    pub workload: &'static str,
    pub hit_ns: f64,
    pub miss_ns: f64,
    pub problems: Vec<String>,
}

/// Classifies `texts` through `s`, checking each class; returns ns per statement and the
/// mismatches.
fn time(s: &Splitting, texts: &[(String, Class)], problems: &mut Vec<String>) -> f64 {
    let now = Instant::now();
    let t0 = Instant::now();
    for (text, _) in texts {
        black_box(s.class_of("postgres", black_box(text), now));
    }
    let ns = t0.elapsed().as_nanos() as f64 / texts.len().max(1) as f64;
    for (text, want) in texts.iter().take(50) {
        let got = s.class_of("postgres", text, now).1;
        if got != *want && problems.len() < 3 {
            problems.push(format!("{text:?} classified {got:?}, expected {want:?}"));
        }
    }
    ns
}

/// Measures the three workloads.
pub fn measure() -> Result<Vec<Cost>, String> {
    let mut out = Vec::new();
    for workload in ["select-only", "mixed 90/10", "TPC-B-like"] {
        let mut problems = Vec::new();
        // Hits: every shape classified once first, then timed.
        let s = Splitting::new(settings()).map_err(|e| format!("load_balance settings: {e:?}"))?;
        let hits = statements(workload, HIT_STATEMENTS, false);
        for (text, _) in hits.iter().take(100) {
            s.class_of("postgres", text, Instant::now());
        }
        let before = s.cache.figures();
        let hit_ns = time(&s, &hits, &mut problems);
        let after = s.cache.figures();
        if after.misses != before.misses {
            problems.push(format!("{} misses among the hits", after.misses - before.misses));
        }
        // Misses: a fresh cache, every text distinct.
        let s = Splitting::new(settings()).map_err(|e| format!("load_balance settings: {e:?}"))?;
        let misses = statements(workload, MISS_STATEMENTS, true);
        let miss_ns = time(&s, &misses, &mut problems);
        let f = s.cache.figures();
        if f.misses < MISS_STATEMENTS as u64 {
            problems.push(format!("only {} of {MISS_STATEMENTS} distinct statements missed", f.misses));
        }
        out.push(Cost { workload, hit_ns, miss_ns, problems });
    }
    Ok(out)
}
